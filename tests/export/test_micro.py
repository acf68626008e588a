from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from edgenas.export.micro import FORMATS, empty_model, micro_model
from edgenas.spec import LayerDesc

STEM = LayerDesc("stem", "conv2d", (1, 49, 10), (16, 25, 5), (10, 4), (2, 2), (4, 5, 1, 1), 1, "relu")
DW = LayerDesc("dw", "conv2d", (16, 25, 5), (16, 25, 5), (3, 3), (1, 1), (1, 1, 1, 1), 16, "relu")
PW = LayerDesc("pw", "conv2d", (16, 25, 5), (24, 25, 5), (1, 1), bias=False)
POOL = LayerDesc("pool", "global_avgpool", (24, 25, 5), (24, 1, 1))
FC = LayerDesc("fc", "linear", (24, 1, 1), (12, 1, 1))
ALL = [STEM, DW, PW, POOL, FC]


def _session(model: onnx.ModelProto, optimized: Path | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if optimized is not None:
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("desc", ALL, ids=lambda d: d.name)
def test_runs_with_layer_shapes(desc: LayerDesc, fmt: str) -> None:
    model = micro_model(desc, fmt)
    onnx.checker.check_model(model, full_check=True)
    sess = _session(model)
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal(inp.shape).astype(np.float32)
    y = sess.run(None, {inp.name: x})[0]
    c, h, w = desc.out_shape
    assert y.shape == ((1, c, h, w) if desc.kind == "conv2d" else (1, c))
    # same layer, same bytes (the store keys artifacts by content)
    assert micro_model(desc, fmt).SerializeToString() == model.SerializeToString()


def test_fp32_conv_matches_torch() -> None:
    model = micro_model(STEM, "onnx-fp32")
    w = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    x = np.random.default_rng(1).standard_normal((1, 1, 49, 10)).astype(np.float32)
    got = _session(model).run(None, {"x": x})[0]
    top, bottom, left, right = STEM.pad
    ref = torch.relu(torch.nn.functional.conv2d(
        torch.nn.functional.pad(torch.from_numpy(x), (left, right, top, bottom)),
        torch.tensor(w["w"]), torch.tensor(w["b"]), stride=STEM.stride)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4)


@pytest.mark.parametrize("desc,fused", [(STEM, "QLinearConv"), (DW, "QLinearConv"), (PW, "QLinearConv"),
                                        (FC, "QGemm"), (POOL, "QLinearGlobalAveragePool")], ids=lambda v: str(getattr(v, "name", v)))
def test_int8_pattern_is_fused_by_ort(tmp_path: Path, desc: LayerDesc, fused: str) -> None:
    model = micro_model(desc, "onnx-int8")
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops and "Relu" not in ops
    if desc.kind in ("conv2d", "linear"):
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        assert inits["w_q"].dtype == np.int8 and inits["w_scale"].shape == (desc.out_shape[0],)
        w_dq = next(n for n in model.graph.node if n.input[0] == "w_q")
        assert [a.i for a in w_dq.attribute if a.name == "axis"] == [0]
        if desc.bias:
            assert inits["b_q"].dtype == np.int32
            np.testing.assert_array_equal(inits["b_scale"], inits["x_scale"] * inits["w_scale"])
    opt = tmp_path / "opt.onnx"
    _session(model, opt)
    assert fused in [n.op_type for n in onnx.load(str(opt)).graph.node]


def test_explicit_pad() -> None:
    ops = [n.op_type for n in micro_model(DW, "onnx-fp32", explicit_pad=True).graph.node]
    assert ops[0] == "Pad" and "Conv" in ops
    assert "Pad" not in [n.op_type for n in micro_model(DW, "onnx-fp32").graph.node]
    assert "Pad" not in [n.op_type for n in micro_model(PW, "onnx-fp32", explicit_pad=True).graph.node]
    for fmt in FORMATS:
        m = micro_model(DW, fmt, explicit_pad=True)
        onnx.checker.check_model(m)
        x = np.ones((1, 16, 25, 5), np.float32)
        a = _session(m).run(None, {"x": x})[0]
        b = _session(micro_model(DW, fmt)).run(None, {"x": x})[0]
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_invalid_layers() -> None:
    with pytest.raises(ValueError, match="not out_shape"):
        micro_model(LayerDesc("bad", "conv2d", (4, 8, 8), (4, 9, 8), (3, 3), (1, 1), (1, 1, 1, 1)), "onnx-fp32")
    with pytest.raises(ValueError, match="groups"):
        micro_model(LayerDesc("bad", "conv2d", (4, 8, 8), (6, 8, 8), (1, 1), groups=4), "onnx-fp32")
    with pytest.raises(ValueError, match="unknown layer kind"):
        micro_model(LayerDesc("bad", "lstm", (4, 1, 1), (4, 1, 1)), "onnx-fp32")
    with pytest.raises(ValueError, match="format"):
        micro_model(DW, "tflite")


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_model(fmt: str) -> None:
    m = empty_model((1, 8), fmt)
    onnx.checker.check_model(m)
    x = np.arange(8, dtype=np.float32).reshape(1, 8) * 0.05
    np.testing.assert_allclose(_session(m).run(None, {"x": x})[0], x, atol=0.03)


def test_int8_add_is_fused_by_ort(tmp_path: Path) -> None:
    """The residual add's micro-model runs as QLinearAdd: with the export's uint8 activations ONNX
    Runtime 1.32 fuses it (with int8 ones it ran a float Add), so the table times the kernel a
    quantized residual network runs."""
    add = LayerDesc("add", "add", (16, 25, 5), (16, 25, 5), inputs=("", ""))
    model = micro_model(add, "onnx-int8")
    zps = [numpy_helper.to_array(i) for i in model.graph.initializer if i.name.endswith("zero_point")]
    assert zps and all(z.dtype == np.uint8 for z in zps)
    opt = tmp_path / "opt.onnx"
    _session(model, opt)
    ops = [n.op_type for n in onnx.load(str(opt)).graph.node]
    assert "QLinearAdd" in ops and "Add" not in ops, ops
