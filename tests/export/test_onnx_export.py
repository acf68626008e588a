from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import edgenas
from edgenas.errors import ExportError
from edgenas.export.onnx_export import (
    QUANT_INT8,
    check_parity,
    evaluate_onnx,
    export_onnx_fp32,
    model_metadata,
    quantize_int8,
    read_metadata,
    KERNEL_DRIFT_TOLERANCE,
    kernel_drift,
    run_onnx,
    runtime_float_kernels,
)
from edgenas.spec import ArchSpec, DataConfig
from export_toys import ToyDSCNN, train_toy

SPEC = ArchSpec("kws", "toy", 1, 4, DataConfig(), {"width": "16"})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("export")
    model, x, y = train_toy()
    fp32 = export_onnx_fp32(model, (1, 1, 49, 10), d / "model.fp32.onnx", model_metadata(SPEC))
    int8 = quantize_int8(fp32, d / "model.int8.onnx", x[:200], model_metadata(SPEC))
    return {"model": model, "x": x, "y": y, "fp32": fp32, "int8": int8, "dir": d}


def test_fp32_parity_and_metadata(trained: dict) -> None:
    path: Path = trained["fp32"]
    assert path.is_file() and not [p for p in path.parent.iterdir() if p.suffix == ".tmp"]
    diff = check_parity(trained["model"], path, trained["x"][:300])
    assert diff <= 1e-4
    md = read_metadata(path)
    assert md["edgenas_version"] == edgenas.__version__ and md["quant_scheme"] == "fp32"
    assert md["arch_hash"] == SPEC.hash() and json.loads(md["data_config"]) == SPEC.data.to_dict()
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 18
    assert all(len(n.metadata_props) == 0 for n in model.graph.node)  # exporter debug info stripped
    # dynamic batch: any batch size runs, in batches or not
    x = trained["x"][:37]
    assert run_onnx(path, x).shape == (37, 4)
    np.testing.assert_allclose(run_onnx(path, x, batch=5), run_onnx(path, x), atol=1e-5)


def test_int8_model(trained: dict) -> None:
    path: Path = trained["int8"]
    model = onnx.load(str(path))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_inits = [i for i in model.graph.initializer if numpy_helper.to_array(i).dtype == np.int8 and i.dims]
    assert len(int8_inits) >= 6  # stem, 2×(dw, pw) conv weights and fc weight
    # per-channel weight scales
    w_scales = [i for i in model.graph.initializer if i.name.endswith("weight_scale")]
    assert w_scales and all(len(i.dims) == 1 and i.dims[0] > 1 for i in w_scales)
    md = read_metadata(path)
    assert md["quant_scheme"] == QUANT_INT8 and md["arch_hash"] == SPEC.hash()
    acc32 = evaluate_onnx(trained["fp32"], trained["x"], trained["y"])
    acc8 = evaluate_onnx(path, trained["x"], trained["y"])
    print(f"toy accuracy fp32 {acc32:.3f} int8 {acc8:.3f}")
    assert acc32 >= 0.85
    assert acc8 >= acc32 - 0.03
    # int8 is smaller on disk than fp32 once weights dominate; here just check it is a real int8 graph
    logits8, logits32 = run_onnx(path, trained["x"][:64]), run_onnx(trained["fp32"], trained["x"][:64])
    assert np.max(np.abs(logits8 - logits32)) < 0.5 * np.max(np.abs(logits32))


def test_classifier_logits_are_not_requantized(trained: dict, tmp_path: Path) -> None:
    """The final Gemm keeps a float output (no QuantizeLinear after it) and ONNX Runtime still
    runs it as an integer kernel: the optimised graph has a QGemm and no float Gemm."""
    import onnxruntime as ort

    model = onnx.load(str(trained["int8"]))
    out = model.graph.output[0].name
    last = next(n for n in model.graph.node if out in n.output)
    assert last.op_type == "Gemm"
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    assert all(producers.get(i) == "DequantizeLinear" for i in last.input[:2])
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(trained["int8"]), opts, providers=["CPUExecutionProvider"])
    fused = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert "QGemm" in fused and "Gemm" not in fused, fused
    # and the global average pool (a ReduceMean in the export) runs as QLinearGlobalAveragePool:
    # no op of the DS-CNN stays float in ONNX Runtime
    assert "QLinearGlobalAveragePool" in fused and runtime_float_kernels(trained["int8"]) == []


def _max_weight_level(path: Path) -> int:
    """Largest |int8 level| over the Conv/Gemm weights (127 for 8-bit symmetric, 63 for 7-bit)."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return max(int(np.abs(a.astype(np.int32)).max()) for a in inits.values() if a.dtype == np.int8 and a.ndim >= 2)


def test_weight_bits_follow_the_host_kernels(trained: dict, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """8-bit weights when ONNX Runtime's fused kernels compute the QDQ arithmetic here; 7-bit
    (reduce_range) when they drift, which a CPU without VNNI does and this test injects."""
    import edgenas.export.onnx_export as ox

    path: Path = trained["int8"]
    md = read_metadata(path)
    drift = kernel_drift(path, trained["x"][:64])
    if md["weight_bits"] == "8":  # this host: the file's fused run matches its unfused arithmetic
        assert drift["rel_max_abs"] <= KERNEL_DRIFT_TOLERANCE and _max_weight_level(path) == 127
    else:  # a host whose kernels saturate with 8-bit weights
        assert md["weight_bits"] == "7" and "drifted" in md["weight_bits_reason"] and _max_weight_level(path) <= 64
    forced7 = quantize_int8(trained["fp32"], tmp_path / "w7.onnx", trained["x"][:200], weight_bits=7)
    assert read_metadata(forced7)["weight_bits"] == "7" and _max_weight_level(forced7) <= 64
    assert kernel_drift(forced7, trained["x"][:64])["rel_max_abs"] <= KERNEL_DRIFT_TOLERANCE
    # injected: the host's kernels disagree with the QDQ graph → quantized again with 7-bit weights
    calls: list[Path] = []

    def saturating(p: Path, x: np.ndarray) -> dict[str, float]:
        calls.append(Path(p))
        return {"rel_max_abs": 0.9, "agreement": 0.1}

    monkeypatch.setattr(ox, "kernel_drift", saturating)
    auto = quantize_int8(trained["fp32"], tmp_path / "auto.onnx", trained["x"][:200])
    md = read_metadata(auto)
    assert len(calls) == 1 and md["weight_bits"] == "7" and _max_weight_level(auto) <= 64
    assert "90.0% of the output range" in md["weight_bits_reason"] and "10.0%" in md["weight_bits_reason"]
    with pytest.raises(ExportError, match="weight_bits must be 7 or 8"):
        quantize_int8(trained["fp32"], tmp_path / "x.onnx", trained["x"][:8], weight_bits=4)


def test_quantization_is_quiet(trained: dict, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The quantizer's own ONNX Runtime sessions log C++ warnings (unused initializers of the
    exported graph) straight to stderr, in the middle of the CLI's progress output: silenced."""
    capfd.readouterr()
    quantize_int8(trained["fp32"], tmp_path / "q.onnx", trained["x"][:50])
    out, err = capfd.readouterr()
    assert "onnxruntime" not in out + err and "Removing initializer" not in err


def test_parity_failure_is_export_error(trained: dict, tmp_path: Path) -> None:
    other = ToyDSCNN()
    other.eval()
    with pytest.raises(ExportError, match="parity check .* failed"):
        check_parity(other, trained["fp32"], trained["x"][:8])
    assert not other.training


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="not found"):
        quantize_int8(tmp_path / "missing.onnx", tmp_path / "q.onnx", np.zeros((4, 1, 49, 10), np.float32))
    with pytest.raises(ExportError, match="not found"):
        run_onnx(tmp_path / "missing.onnx", np.zeros((1, 1, 49, 10), np.float32))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(ExportError, match="bad.onnx"):
        run_onnx(bad, np.zeros((1, 1, 49, 10), np.float32))


def test_export_keeps_training_mode(tmp_path: Path) -> None:
    model = ToyDSCNN(channels=8, blocks=1)
    model.train()
    path = export_onnx_fp32(model, (1, 1, 49, 10), tmp_path / "m.onnx")
    assert model.training
    model.eval()
    assert check_parity(model, path, np.random.default_rng(0).standard_normal((3, 1, 49, 10)).astype(np.float32)) < 1e-4
    assert torch.is_grad_enabled()


def test_residual_net_runs_integer_kernels_with_u8_activations(tmp_path: Path) -> None:
    """The reason activations are uint8 (module docstring): ONNX Runtime 1.32 on x86 leaves the
    Conv and Add of an int8-activation residual network in float, and fuses them with uint8
    activations; the two files compute the same outputs."""
    from toy_nets import ToyTCN, randomize_bn

    torch.manual_seed(0)
    net = randomize_bn(ToyTCN(in_channels=4, channels=8, length=32, classes=3)).eval()
    x = np.random.default_rng(0).standard_normal((64, 4, 32)).astype(np.float32)
    fp32 = export_onnx_fp32(net, (1, 4, 32), tmp_path / "tcn.fp32.onnx", model_metadata())
    files = {a: quantize_int8(fp32, tmp_path / f"tcn.{a}.onnx", x, activations=a) for a in ("s8", "u8")}
    assert read_metadata(files["u8"])["activations"] == "u8"
    assert set(runtime_float_kernels(files["s8"])) >= {"Add", "Conv"}
    assert runtime_float_kernels(files["u8"]) == []
    s8, u8, ref = run_onnx(files["s8"], x), run_onnx(files["u8"], x), run_onnx(fp32, x)
    scale = float(np.abs(ref).max())
    assert np.abs(u8 - s8).max() <= 0.05 * scale and (u8.argmax(1) == s8.argmax(1)).mean() >= 0.95
    with pytest.raises(ExportError, match="s8 or u8"):
        quantize_int8(fp32, tmp_path / "bad.onnx", x, activations="int4")
