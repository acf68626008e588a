from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgenas.errors import ExportError
from edgenas.export.graph_memory import onnx_memory_report


def _save(nodes: list, inits: list, in_shape: list, out_shape: list, path: Path, batch_param: bool = False) -> Path:
    ishape = ["batch"] + in_shape[1:] if batch_param else in_shape
    oshape = ["batch"] + out_shape[1:] if batch_param else out_shape
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ishape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, oshape)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def _w(name: str, shape: tuple, dtype: type = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ones(shape, dtype), name)


def test_fp32_chain(tmp_path: Path) -> None:
    # x[1,4,8,8] → Conv 3x3 (4→8) → Relu → Conv 1x1 (8→2) → y[1,2,8,8]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], kernel_shape=[1, 1]),
    ]
    inits = [_w("w1", (8, 4, 3, 3)), _w("b1", (8,)), _w("w2", (2, 8, 1, 1)), _w("b2", (2,))]
    path = _save(nodes, inits, [1, 4, 8, 8], [1, 2, 8, 8], tmp_path / "m.onnx", batch_param=True)
    r = onnx_memory_report(path)
    assert r["flash_bytes"] == path.stat().st_size
    assert r["weight_bytes"] == 4 * (8 * 4 * 9 + 8 + 2 * 8 + 2)
    # step 0: x 1024 + c1 2048; step 1: c1 2048 + r1 2048 (x freed); step 2: r1 2048 + y 512
    assert r["peak_activation_bytes"] == 4096
    assert set(r["live_at_peak"]) == {"c1", "r1"}
    assert onnx_memory_report(path, mode="ort")["peak_activation_bytes"] == 4096


def test_residual_keeps_input_alive(tmp_path: Path) -> None:
    # x[1,4,8,8] → Relu a → Relu b → Add(x, b): x (1024) lives until the Add
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Add", ["x", "b"], ["y"])]
    path = _save(nodes, [], [1, 4, 8, 8], [1, 4, 8, 8], tmp_path / "m.onnx")
    r = onnx_memory_report(path)
    assert r["weight_bytes"] == 0
    assert r["peak_activation_bytes"] == 3 * 1024  # x + a + b at step 1, x + b + y at step 2


def _qdq_chain(tmp_path: Path, float_tail: bool) -> Path:
    """float x[1,4,8,8] → Q → DQ → Conv(8) → Q → DQ → Conv(2) → Q → DQ → y (optionally via a float ReduceMean)."""
    s, z = "s", "z"
    nodes = [
        helper.make_node("QuantizeLinear", ["x", s, z], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", s, z], ["xf"]),
        helper.make_node("DequantizeLinear", ["w1q", "w1s", "w1z"], ["w1"], axis=0),
        helper.make_node("Conv", ["xf", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["c1", s, z], ["c1q"]),
        helper.make_node("DequantizeLinear", ["c1q", s, z], ["c1f"]),
        helper.make_node("DequantizeLinear", ["w2q", "w2s", "w2z"], ["w2"], axis=0),
        helper.make_node("Conv", ["c1f", "w2"], ["c2"], kernel_shape=[1, 1]),
        helper.make_node("QuantizeLinear", ["c2", s, z], ["c2q"]),
    ]
    if float_tail:  # DQ → ReduceMean (float, not fused by ORT) → Q → DQ → y [1,2,1,1]
        nodes += [
            helper.make_node("DequantizeLinear", ["c2q", s, z], ["c2f"]),
            helper.make_node("ReduceMean", ["c2f", "axes"], ["m"], keepdims=1),
            helper.make_node("QuantizeLinear", ["m", s, z], ["mq"]),
            helper.make_node("DequantizeLinear", ["mq", s, z], ["y"]),
        ]
    else:
        nodes.append(helper.make_node("DequantizeLinear", ["c2q", s, z], ["y"]))
    inits = [
        numpy_helper.from_array(np.array(0.1, np.float32), s), numpy_helper.from_array(np.array(0, np.int8), z),
        _w("w1q", (8, 4, 3, 3), np.int8), _w("w1s", (8,)), _w("w1z", (8,), np.int8),
        _w("w2q", (2, 8, 1, 1), np.int8), _w("w2s", (2,)), _w("w2z", (2,), np.int8),
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
    ]
    out = [1, 2, 1, 1] if float_tail else [1, 2, 8, 8]
    return _save(nodes, inits, [1, 4, 8, 8], out, tmp_path / "q.onnx")


def test_qdq_chain_counts_int8_in_and_out(tmp_path: Path) -> None:
    path = _qdq_chain(tmp_path, float_tail=False)
    for mode in ("integer", "ort"):
        r = onnx_memory_report(path, mode=mode)
        # conv1: int8 in 256 B + int8 out 512 B; conv2: 512 + 128. Float tensors around Q/DQ are virtual.
        assert r["peak_activation_bytes"] == 256 + 512, mode
        assert set(r["live_at_peak"]) == {"xq", "c1q"}
        assert {"x", "xf", "c1", "c1f", "c2", "y"} <= set(r["virtual_tensors"])
    assert onnx_memory_report(path)["weight_bytes"] == 8 * 36 + 8 * 4 + 8 + 16 + 2 * 4 + 2 + 4 + 1 + 16


def test_unfused_float_op(tmp_path: Path) -> None:
    path = _qdq_chain(tmp_path, float_tail=True)
    # ORT runs ReduceMean in float: c2q 128 B int8 + c2f 512 B float live at the DQ/ReduceMean steps,
    # but the conv1 step (256 + 512) is still the peak.
    ort_r = onnx_memory_report(path, mode="ort")
    assert ort_r["peak_activation_bytes"] == 768
    assert "c2f" not in ort_r["virtual_tensors"]
    integer = onnx_memory_report(path, mode="integer")
    assert integer["peak_activation_bytes"] == 768
    assert "c2f" in integer["virtual_tensors"]


def test_exported_dscnn_int8(tmp_path: Path) -> None:
    from export_toys import ToyDSCNN

    from edgenas.export.onnx_export import export_onnx_fp32, quantize_int8

    model = ToyDSCNN(channels=16, blocks=1)
    fp32 = export_onnx_fp32(model, (1, 1, 49, 10), tmp_path / "m.onnx")
    calib = np.random.default_rng(0).standard_normal((32, 1, 49, 10)).astype(np.float32)
    int8 = quantize_int8(fp32, tmp_path / "m8.onnx", calib)
    r32, r8 = onnx_memory_report(fp32), onnx_memory_report(int8)
    act = 16 * 25 * 5  # biggest activation [16, 25, 5]
    # fp32: Conv output and Relu output both float (no fusion assumed): 2 × 4 B
    assert r32["peak_activation_bytes"] == 2 * act * 4
    # int8: biggest layer's int8 input + int8 output (depthwise / pointwise conv)
    assert r8["peak_activation_bytes"] == 2 * act
    assert r8["weight_bytes"] < r32["weight_bytes"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="not found"):
        onnx_memory_report(tmp_path / "nope.onnx")
    with pytest.raises(ValueError):
        onnx_memory_report(tmp_path / "nope.onnx", mode="bogus")
