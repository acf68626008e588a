"""export_network on the two other net families the tool must ship: a dilated-Conv1d TCN and a
PixelShuffle super-resolution net. Every check of the KWS export applies: fp32 parity in ONNX
and TFLite, int8 files verified integer-only and TRANSPOSE-free, failures not shipped."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from edgenas.export.exporter import ExportJob, export_network, select
from edgenas.errors import ExportError
from edgenas.spaces import get_space
from toy_nets import ToySISR, ToyTCN, randomize_bn

pytest.importorskip("tensorflow", reason="tensorflow-cpu not installed (pip install 'edgenas[tflite]')")


def _tcn_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """[n, 8, 64]: noise plus a burst in one of 5 channels (at a random time): the channel is the class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, n)
    x = rng.standard_normal((n, 8, 64)).astype(np.float32) * 0.3
    for i in range(n):
        t = rng.integers(0, 48)
        x[i, y[i], t:t + 16] += 1.5
    return x, y


@pytest.fixture(scope="module")
def tcn_report(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    model = ToyTCN()
    x, y = _tcn_data(768, 0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(400):
        idx = torch.randint(0, len(y), (64,))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
        opt.step()
    model.eval()
    xs, ys = _tcn_data(300, 1)
    spec = get_space("kws-dscnn", num_classes=5).sample(random.Random(0))  # any ArchSpec for metadata
    out = tmp_path_factory.mktemp("tcn")
    job = ExportJob(model=model, spec=spec, out_dir=out, calibration=x, test_x=xs, test_y=ys, frontend=False)
    return export_network(job), out


def test_tcn_exports_verify(tcn_report) -> None:
    rep, out = tcn_report
    assert rep["failed"] == [] and len(rep["shipped"]) == 4
    m = rep["models"]
    assert m["onnx-fp32"]["max_abs_diff_vs_torch"] <= 1e-4 and m["tflite-fp32"]["max_abs_diff_vs_torch"] <= 1e-4
    t8 = m["tflite-int8"]
    assert t8["verification"]["fully_int8"] and t8["transpose_ops"] == 0
    assert "ADD" in t8["verification"]["op_counts"]  # residual adds stay integer
    assert m["onnx-int8"]["verification"]["weights_int8"]
    # with uint8 activations ONNX Runtime 1.32 fuses the residual blocks' Conv and Add too (with
    # int8 ones it left them float kernels, test_onnx_export); the mean over time is an integer pool
    assert m["onnx-int8"]["verification"]["runtime_float_kernels"] == []
    assert "ONNX Runtime float kernels: none" in (out / "report.md").read_text()
    bits = m["onnx-int8"]["verification"]["weight_bits"]  # 8 unless this host's kernels saturate
    assert bits in (7, 8) and f"{bits}-bit weights (" in (out / "report.md").read_text()
    assert rep["test_acc_fp32_torch"] > 0.9  # learned (chance is 0.2)
    for k in ("onnx-int8", "tflite-int8"):
        assert m[k]["argmax_agreement"] >= 0.99, (k, m[k]["argmax_agreement"])
        assert abs(m[k]["test_acc"] - rep["test_acc_fp32_torch"]) <= 0.01
    assert json.loads((out / "report.json").read_text())["shipped"] == rep["shipped"]
    assert "TFLM-compatible" in (out / "report.md").read_text()


def test_pixelshuffle_exports_verify(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = randomize_bn(ToySISR()).eval()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (64, 1, 12, 12)).astype(np.float32)
    xs = rng.uniform(0, 1, (16, 1, 12, 12)).astype(np.float32)
    spec = get_space("kws-dscnn", num_classes=2).sample(random.Random(0))
    job = ExportJob(model=model, spec=spec, out_dir=tmp_path, calibration=x, test_x=xs,
                    test_y=np.zeros((16, 24, 24), np.int64), frontend=False)
    rep = export_network(job)
    assert rep["failed"] == [], rep
    m = rep["models"]
    assert m["onnx-fp32"]["max_abs_diff_vs_torch"] <= 1e-4 and m["tflite-fp32"]["max_abs_diff_vs_torch"] <= 1e-4
    ver = m["tflite-int8"]["verification"]
    assert ver["fully_int8"] and m["tflite-int8"]["transpose_ops"] == 0 and "DEPTH_TO_SPACE" in ver["op_counts"]
    from edgenas.export.onnx_export import run_onnx
    from edgenas.export.tflite_export import run_tflite

    with torch.no_grad():
        ref = model(torch.from_numpy(xs)).numpy()
    span = float(ref.max() - ref.min())
    for path, run in ((tmp_path / "model.int8.tflite", run_tflite), (tmp_path / "model.int8.onnx", run_onnx)):
        err = np.abs(run(path, xs) - ref).mean() / span
        assert err < 0.02, (path.name, err)  # int8 image within 2% of the output range on average


def test_failed_verification_is_not_shipped(tmp_path: Path) -> None:
    class Odd(torch.nn.Module):  # a model whose TFLite export cannot be built: sorted() does not convert
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.sort(x, dim=1).values)

    x = np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32)
    spec = get_space("kws-dscnn", num_classes=3).sample(random.Random(0))
    job = ExportJob(model=Odd().eval(), spec=spec, out_dir=tmp_path, calibration=x, test_x=x,
                    test_y=np.zeros(32, np.int64), formats=["tflite"], quants=["int8"], frontend=False)
    rep = export_network(job)
    assert rep["shipped"] == [] and rep["failed"] == ["model.int8.tflite"]
    assert "unsupported" in rep["models"]["tflite-int8"]["failures"][0]
    assert not (tmp_path / "model.int8.tflite").exists()


def test_select_formats() -> None:
    assert select("all", "int8") == (["onnx", "tflite"], ["int8"])
    with pytest.raises(ExportError, match="unknown --format"):
        select("coreml", "all")
