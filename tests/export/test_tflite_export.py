"""TFLite export: fp32 parity, full-integer int8 models, verification report, metadata, quietness."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from edgenas.errors import ExportError

# TensorFlow is only looked up here: edgenas imports it (after triton, see keras_build.import_tf)
if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("ai_edge_litert") is None:
    pytest.skip("needs the tflite extra", allow_module_level=True)

from edgenas.export.tflite_export import (  # noqa: E402
    QUANT_TFLITE_INT8,
    embed_metadata,
    export_tflite,
    read_tflite_metadata,
    run_tflite,
    tflite_int8_random,
    verify_tflite,
)
from export_toys import toy_data, train_toy  # noqa: E402
from toy_nets import ToySISR, ToyTCN, randomize_bn  # noqa: E402

TOL = 1e-4
KWS_SHAPE = (1, 1, 49, 10)


def torch_out(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def assert_fully_int8(report: dict[str, Any]) -> None:
    assert report["fully_int8"], report
    assert report["int8_io"]
    assert report["non_integer_tensors"] == [] and report["float_ops"] == []
    assert report["transpose_ops"] == 0
    assert "DEQUANTIZE" not in report["ops"] and "QUANTIZE" not in report["ops"]
    assert [t["dtype"] for t in report["inputs"] + report["outputs"]] == ["int8", "int8"]
    assert report["tflm_compatible"] and report["tflm"].startswith("TFLM-compatible: yes, because")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("tflite")
    model, x, y = train_toy()
    calib, _ = toy_data(300, seed=7)
    md = {"arch_hash": "abc123", "quant_scheme": "not what the export says"}
    fp32 = export_tflite(model, KWS_SHAPE, d / "model.fp32.tflite", quant="fp32", metadata=md)
    int8 = export_tflite(model, KWS_SHAPE, d / "model.int8.tflite", quant="int8", calibration=calib, metadata=md)
    return {"model": model, "x": x, "y": y, "fp32": fp32, "int8": int8, "dir": d}


def test_fp32_matches_torch(trained: dict[str, Any]) -> None:
    x = trained["x"][:128]
    err = np.abs(run_tflite(trained["fp32"], x) - torch_out(trained["model"], x)).max()
    assert err <= TOL


def test_int8_is_fully_integer(trained: dict[str, Any]) -> None:
    r = verify_tflite(trained["int8"])
    assert_fully_int8(r)
    assert r["ops"] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "MEAN",
                        "FULLY_CONNECTED"]  # BN folded, SAME padding fused, no PAD, no transposes
    assert r["inputs"][0]["shape"] == [1, 49, 10, 1]
    assert r["flash_bytes"] == Path(trained["int8"]).stat().st_size
    # stem output 16x25x5 int8 + first depthwise output (same size) are live together
    assert r["peak_activation_bytes"] == 2 * 16 * 25 * 5
    assert 0 < r["weight_bytes"] < r["flash_bytes"]


def test_int8_accuracy_close_to_fp32(trained: dict[str, Any]) -> None:
    x, y = trained["x"], trained["y"]
    ref = torch_out(trained["model"], x)
    q = run_tflite(trained["int8"], x)
    agree = float((q.argmax(1) == ref.argmax(1)).mean())
    acc_fp32, acc_int8 = float((ref.argmax(1) == y).mean()), float((q.argmax(1) == y).mean())
    assert acc_fp32 > 0.9  # the toy is learnt, so the comparison means something
    assert agree >= 0.99
    assert abs(acc_int8 - acc_fp32) <= 0.01  # ≤ 5 of 512 test samples
    assert np.abs(q - ref).max() < 0.1 * np.abs(ref).max()


def test_float_model_is_flagged(trained: dict[str, Any]) -> None:
    r = verify_tflite(trained["fp32"])
    assert not r["fully_int8"] and not r["int8_io"]
    assert r["non_integer_tensors"] and all(t["dtype"] == "float32" for t in r["non_integer_tensors"])
    assert r["float_ops"]
    allowed = [t["name"] for t in r["non_integer_tensors"]]
    r2 = verify_tflite(trained["fp32"], allowed_float_tensors=allowed)
    assert r2["non_integer_tensors"] == [] and not r2["fully_int8"]  # float input/output still fail


def test_metadata_embedded_and_harmless(trained: dict[str, Any], tmp_path: Path) -> None:
    md = read_tflite_metadata(trained["int8"])
    assert md["arch_hash"] == "abc123"
    assert md["quant_scheme"] == QUANT_TFLITE_INT8  # the export's own facts win
    assert md["input_layout"] == "NHWC" and md["input_shape"] == "[1, 49, 10, 1]"
    assert md["calibration_samples"] == "300"
    assert read_tflite_metadata(trained["fp32"])["quant_scheme"] == "fp32"
    assert verify_tflite(trained["int8"])["metadata"] == md
    # re-embedding replaces the entry and leaves the model's numbers bit-identical
    other = tmp_path / "other.tflite"
    other.write_bytes(embed_metadata(Path(trained["int8"]).read_bytes(), {"k": "v"}))
    assert read_tflite_metadata(other) == {"k": "v"}
    x = trained["x"][:16]
    assert np.array_equal(run_tflite(other, x), run_tflite(trained["int8"], x))


def test_atomic_write_leaves_no_temporaries(trained: dict[str, Any]) -> None:
    assert sorted(p.name for p in trained["dir"].iterdir()) == ["model.fp32.tflite", "model.int8.tflite"]


def test_kws_space_networks(tmp_path: Path) -> None:
    from edgenas.spaces import get_space

    space = get_space("kws-dscnn", num_classes=12)
    picked = []
    for seed in range(200):  # one stem needing an explicit asymmetric pad, one other
        spec = space.sample(random.Random(seed))
        model = randomize_bn(space.build(spec), seed)
        padded = any(isinstance(m, nn.ZeroPad2d) for m in model.modules())
        if padded != bool(picked):
            continue
        picked.append((model, (1, 1, *spec.data.feature_shape)))
        if len(picked) == 2:
            break
    for i, (model, shape) in enumerate(picked):
        x = np.random.default_rng(i).standard_normal((4, *shape[1:])).astype(np.float32)
        fp32 = export_tflite(model, shape, tmp_path / f"kws{i}.fp32.tflite", quant="fp32")
        assert np.abs(run_tflite(fp32, x) - torch_out(model, x)).max() <= TOL
        fast = tflite_int8_random(model, shape, tmp_path / f"kws{i}.rand.tflite")
        r = verify_tflite(fast)
        assert_fully_int8(r)
        assert r["inputs"][0]["shape"] == [1, shape[2], shape[3], 1]
        assert read_tflite_metadata(fast)["calibration"] == "random-normal"


def test_tcn_fp32_and_int8(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = randomize_bn(ToyTCN())
    shape = (1, 8, 64)
    x = np.random.default_rng(0).standard_normal((64, 8, 64)).astype(np.float32)
    ref = torch_out(model, x)
    fp32 = export_tflite(model, shape, tmp_path / "tcn.fp32.tflite", quant="fp32")
    assert np.abs(run_tflite(fp32, x) - ref).max() <= TOL
    int8 = export_tflite(model, shape, tmp_path / "tcn.int8.tflite", quant="int8", calibration=x)
    r = verify_tflite(int8)
    assert_fully_int8(r)  # residual ADDs and the MEAN are integer too
    assert r["op_counts"]["ADD"] == 4 and r["op_counts"]["MEAN"] == 1 and r["op_counts"]["PAD"] == 4
    assert r["inputs"][0]["shape"] == [1, 64, 8]
    q = run_tflite(int8, x)
    assert np.abs(q - ref).max() < 0.05 * np.abs(ref).max()


def test_pixel_shuffle_becomes_depth_to_space(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = randomize_bn(ToySISR(out_channels=3))
    shape = (1, 1, 16, 16)
    x = np.random.default_rng(0).standard_normal((32, *shape[1:])).astype(np.float32)
    ref = torch_out(model, x)
    fp32 = export_tflite(model, shape, tmp_path / "sr.fp32.tflite", quant="fp32")
    out = run_tflite(fp32, x)
    assert out.shape == (32, 3, 32, 32)
    assert np.abs(out - ref).max() <= TOL
    int8 = export_tflite(model, shape, tmp_path / "sr.int8.tflite", quant="int8", calibration=x)
    r = verify_tflite(int8)
    assert_fully_int8(r)
    assert r["ops"] == ["CONV_2D", "CONV_2D", "CONV_2D", "DEPTH_TO_SPACE"]
    assert r["outputs"][0]["shape"] == [1, 32, 32, 3]
    assert np.abs(run_tflite(int8, x) - ref).max() < 0.05 * (ref.max() - ref.min())


def test_errors_are_one_line(tmp_path: Path) -> None:
    model = randomize_bn(ToySISR())
    cases = [
        lambda: export_tflite(model, (1, 1, 8, 8), tmp_path / "a.tflite", quant="int8"),
        lambda: export_tflite(model, (1, 1, 8, 8), tmp_path / "a.tflite", quant="int8",
                              calibration=np.zeros((4, 1, 9, 8), np.float32)),
        lambda: export_tflite(model, (1, 1, 8, 8), tmp_path / "a.tflite", quant="int4"),
        lambda: export_tflite(nn.Sequential(nn.Conv2d(1, 2, 3), nn.SiLU()), (1, 1, 8, 8), tmp_path / "a.tflite",
                              quant="fp32"),
        lambda: verify_tflite(tmp_path / "missing.tflite"),
    ]
    for case in cases:
        with pytest.raises(ExportError) as e:
            case()
        assert "\n" not in str(e.value)
    assert not list(tmp_path.iterdir())


def test_export_is_quiet(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    model = randomize_bn(ToySISR())
    capfd.readouterr()
    path = tflite_int8_random(model, (1, 1, 8, 8), tmp_path / "q.tflite")
    run_tflite(path, np.zeros((1, 1, 8, 8), np.float32))
    verify_tflite(path)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
