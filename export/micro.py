"""Micro-models: one layer (a :class:`LayerDesc`) as a standalone ONNX model, for latency tables.

Built directly with ``onnx.helper`` (milliseconds, no torch export). Weights are random but
seeded from the layer key, so the same layer always gives the same bytes (and the same artifact
hash in the store).

* ``onnx-fp32``: float input → [Pad] → Conv/Gemm/GlobalAveragePool(+Flatten) → [Relu] → output.
* ``onnx-int8``: the QDQ pattern ``quantize_static`` writes for the same layer — float input →
  QuantizeLinear → DequantizeLinear → op (weights int8 with per-channel DequantizeLinear on
  axis 0, bias int32 with DequantizeLinear of scale in_scale·w_scale) → QuantizeLinear →
  DequantizeLinear → float output. ONNX Runtime fuses the middle into its integer kernels
  (QLinearConv, QGemm, QLinearGlobalAveragePool, QLinearAdd), as in a whole quantized model.
  Activations have the integer type of :data:`export.onnx_export.ACTIVATIONS` (u8: ORT 1.32 on x86
  leaves an s8 residual Add unfused), so zero points are :func:`act_zero_point`'s. As in the
  quantizer's output, a ReLU is not a node: the output zero point at the type's minimum clamps it.
  The graph's input and output are float on purpose: with int8 graph inputs/outputs ONNX Runtime
  1.32 leaves DQ → Conv → Q unfused (float Conv), which would time the wrong kernel. The
  boundary Q/DQ (and, for conv, the NCHW↔NHWC transposes ORT adds around QLinearConv) are
  per-layer costs a whole model pays once; :func:`empty_model` measures the Q → DQ part.

Padding: the dynamo exporter folds ``nn.ZeroPad2d`` into the Conv's ``pads`` attribute (its
``FuseConvPad`` rule), and ONNX Runtime fuses a constant zero Pad into Conv too, so by default the
padding goes into ``pads`` — the graph a real exported model has. ``explicit_pad=True`` writes a
separate ``Pad`` node instead (only when the layer pads).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgenas.spec import LayerDesc, stable_hash

FORMATS = ("onnx-fp32", "onnx-int8")
OPSET = 18
IR_VERSION = 9
ACT_SCALE = 0.05


def act_zero_point(relu: bool = False) -> np.ndarray:
    """The zero point ``quantize_static`` gives an activation of scale :data:`ACT_SCALE` in the
    export's activation type: a ReLU output sits at the type's minimum, a signed one mid-range."""
    from edgenas.export.onnx_export import ACTIVATIONS

    if ACTIVATIONS == "u8":
        return np.array(0 if relu else 128, np.uint8)
    return np.array(-128 if relu else 0, np.int8)


def _check_fmt(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown micro-model format {fmt!r} (known: {', '.join(FORMATS)})")


def _seed(desc: LayerDesc, fmt: str) -> int:
    return int(stable_hash([desc.key(), fmt], n=8), 16)


def _conv_out(desc: LayerDesc) -> tuple[int, int]:
    _, h, w = desc.in_shape
    top, bottom, left, right = desc.pad
    kh, kw = ((k - 1) * d + 1 for k, d in zip(desc.kernel, desc.dilation))
    sh, sw = desc.stride
    return (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1


def _validate(desc: LayerDesc) -> None:
    if desc.kind == "conv2d":
        c_in, c_out = desc.in_shape[0], desc.out_shape[0]
        if desc.groups < 1 or c_in % desc.groups or c_out % desc.groups:
            raise ValueError(f"layer {desc.name}: groups {desc.groups} must divide {c_in} and {c_out}")
        ho, wo = _conv_out(desc)
        if (ho, wo) != tuple(desc.out_shape[1:]):
            raise ValueError(
                f"layer {desc.name}: in {desc.in_shape}, kernel {desc.kernel}, stride {desc.stride}, pad {desc.pad}"
                f" gives {c_out}x{ho}x{wo}, not out_shape {desc.out_shape}"
            )
    elif desc.kind == "global_avgpool":
        if desc.out_shape[0] != desc.in_shape[0]:
            raise ValueError(f"layer {desc.name}: global_avgpool keeps channels, got {desc.in_shape} → {desc.out_shape}")
    elif desc.kind == "add":
        if desc.in_shape != desc.out_shape:
            raise ValueError(f"layer {desc.name}: an add keeps its shape, got {desc.in_shape} → {desc.out_shape}")
    elif desc.kind == "pixel_shuffle":
        (c, h, w), r = desc.in_shape, desc.stride[0]
        if tuple(desc.out_shape) != (c // (r * r), h * r, w * r) or c % (r * r):
            raise ValueError(f"layer {desc.name}: a pixel shuffle by {r} maps {desc.in_shape} to "
                             f"{(c // (r * r), h * r, w * r)}, not {desc.out_shape}")
    elif desc.kind != "linear":
        raise ValueError(f"layer {desc.name}: unknown layer kind {desc.kind!r} for a micro-model")
    if desc.activation not in (None, "relu", "relu6"):
        raise ValueError(f"layer {desc.name}: unsupported activation {desc.activation!r}")


def _model(nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: list[Any], name: str) -> Any:
    from onnx import helper

    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgenas.micro")
    model.ir_version = IR_VERSION
    return model


def _out_dims(desc: LayerDesc) -> list[int]:
    """The batch-1 output shape of a layer's ONNX graph: [1, C, H, W] for a spatial layer, [1, C]
    for a pool or linear layer (its ``out_shape`` is (C, 1, 1))."""
    if desc.kind in ("conv2d", "add", "pixel_shuffle"):
        return [1, *desc.out_shape]
    return [1, desc.out_shape[0]]


def micro_model(desc: LayerDesc, fmt: str = "onnx-fp32", *, explicit_pad: bool = False) -> Any:
    """One layer as an ONNX model whose graph input is the layer's input (batch 1)."""
    from onnx import TensorProto, helper, numpy_helper

    _check_fmt(fmt)
    _validate(desc)
    int8 = fmt == "onnx-int8"
    rng = np.random.default_rng(_seed(desc, fmt))
    c_in, h, w = desc.in_shape
    c_out = desc.out_shape[0]
    nodes: list[Any] = []
    inits: list[Any] = []

    def init(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(arr, name))
        return name

    if desc.kind in ("conv2d", "global_avgpool", "add", "pixel_shuffle"):
        in_dims = [1, c_in, h, w]
    else:
        in_dims = [1, c_in]
    out_dims = _out_dims(desc)
    x_in = helper.make_tensor_value_info("x", TensorProto.FLOAT, in_dims)
    y_out = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_dims)

    x_scale = x_zp = y_scale = y_zp = ""
    if int8:
        x_scale = init("x_scale", np.array(ACT_SCALE, np.float32))
        x_zp = init("x_zero_point", act_zero_point())
        y_scale = init("y_scale", np.array(ACT_SCALE, np.float32))
        y_zp = init("y_zero_point", act_zero_point(desc.activation in ("relu", "relu6")))

    x = "x"
    if int8:
        nodes.append(helper.make_node("QuantizeLinear", [x, x_scale, x_zp], ["x_q"]))
        x = "x_q"
    top, bottom, left, right = desc.pad
    pad_in_conv = [top, left, bottom, right]
    if desc.kind == "conv2d" and explicit_pad and any(desc.pad):
        pads = init("pads", np.array([0, 0, top, left, 0, 0, bottom, right], np.int64))
        value = x_zp if int8 else init("pad_value", np.array(0.0, np.float32))
        nodes.append(helper.make_node("Pad", [x, pads, value], ["x_padded"], mode="constant"))
        x = "x_padded"
        pad_in_conv = [0, 0, 0, 0]
    if int8:
        nodes.append(helper.make_node("DequantizeLinear", [x, x_scale, x_zp], ["x_dq"]))
        x = "x_dq"

    if desc.kind == "add":  # x + relu(x), as micro_module (one graph input); int8: both QDQ'd
        r = "x_relu"
        nodes.append(helper.make_node("Relu", [x], [r]))
        if int8:
            nodes.append(helper.make_node("QuantizeLinear", [r, x_scale, x_zp], ["r_q"]))
            nodes.append(helper.make_node("DequantizeLinear", ["r_q", x_scale, x_zp], ["r_dq"]))
            r = "r_dq"
        acc = x
        for i in range(desc.n_inputs - 1):
            out = "y" if (i == desc.n_inputs - 2 and not int8) else f"sum{i}"
            nodes.append(helper.make_node("Add", [acc, r], [out]))
            acc = out
        if int8:
            nodes.append(helper.make_node("QuantizeLinear", [acc, y_scale, y_zp], ["y_q"]))
            nodes.append(helper.make_node("DequantizeLinear", ["y_q", y_scale, y_zp], ["y"]))
        return _model(nodes, [x_in], [y_out], inits, "micro_add")

    if desc.kind == "pixel_shuffle":  # DepthToSpace in PyTorch's channel order (CRD); int8: the output QDQ'd
        out = "y" if not int8 else "shuffled"
        nodes.append(helper.make_node("DepthToSpace", [x], [out], blocksize=desc.stride[0], mode="CRD"))
        if int8:
            nodes.append(helper.make_node("QuantizeLinear", [out, y_scale, y_zp], ["y_q"]))
            nodes.append(helper.make_node("DequantizeLinear", ["y_q", y_scale, y_zp], ["y"]))
        return _model(nodes, [x_in], [y_out], inits, "micro_pixel_shuffle")

    if desc.kind == "global_avgpool":
        nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
        if int8:
            nodes.append(helper.make_node("QuantizeLinear", ["pooled", y_scale, y_zp], ["pooled_q"]))
            nodes.append(helper.make_node("DequantizeLinear", ["pooled_q", y_scale, y_zp], ["pooled_dq"]))
            nodes.append(helper.make_node("Flatten", ["pooled_dq"], ["y"], axis=1))
        else:
            nodes.append(helper.make_node("Flatten", ["pooled"], ["y"], axis=1))
        return _model(nodes, [x_in], [y_out], inits, f"micro_{desc.kind}")

    # conv2d / linear: weights [c_out, c_in/groups, kh, kw] or [c_out, c_in]
    if desc.kind == "conv2d":
        w_shape = (c_out, c_in // desc.groups, desc.kernel[0], desc.kernel[1])
    else:
        w_shape = (c_out, c_in)
    fan_in = int(np.prod(w_shape[1:]))
    if int8:
        w_scale = (rng.uniform(0.5, 1.5, c_out) / (127.0 * np.sqrt(fan_in))).astype(np.float32)
        init("w_q", rng.integers(-127, 128, w_shape).astype(np.int8))
        init("w_scale", w_scale)
        init("w_zero_point", np.zeros(c_out, np.int8))
        nodes.append(helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero_point"], ["w"], axis=0))
        inputs = [x, "w"]
        if desc.bias:
            init("b_q", rng.integers(-1000, 1000, c_out).astype(np.int32))
            init("b_scale", (ACT_SCALE * w_scale).astype(np.float32))
            init("b_zero_point", np.zeros(c_out, np.int32))
            nodes.append(helper.make_node("DequantizeLinear", ["b_q", "b_scale", "b_zero_point"], ["b"], axis=0))
            inputs.append("b")
    else:
        init("w", (rng.standard_normal(w_shape) / np.sqrt(fan_in)).astype(np.float32))
        inputs = [x, "w"]
        if desc.bias:
            init("b", (0.01 * rng.standard_normal(c_out)).astype(np.float32))
            inputs.append("b")

    out = "y_float" if (int8 or desc.activation is not None) else "y"
    if desc.kind == "conv2d":
        nodes.append(helper.make_node(
            "Conv", inputs, [out], kernel_shape=list(desc.kernel), strides=list(desc.stride),
            pads=pad_in_conv, group=desc.groups, dilations=list(desc.dilation),
        ))
    else:
        nodes.append(helper.make_node("Gemm", inputs, [out], transB=1))
    if int8:
        nodes.append(helper.make_node("QuantizeLinear", [out, y_scale, y_zp], ["y_q"]))
        nodes.append(helper.make_node("DequantizeLinear", ["y_q", y_scale, y_zp], ["y"]))
    elif desc.activation == "relu":
        nodes.append(helper.make_node("Relu", [out], ["y"]))
    elif desc.activation == "relu6":
        lo, hi = init("clip_lo", np.array(0.0, np.float32)), init("clip_hi", np.array(6.0, np.float32))
        nodes.append(helper.make_node("Clip", [out, lo, hi], ["y"]))
    return _model(nodes, [x_in], [y_out], inits, f"micro_{desc.kind}")


def empty_model(shape: Sequence[int], fmt: str = "onnx-fp32") -> Any:
    """The runtime's per-call overhead: fp32 copies its input (``Identity``); int8 is the
    boundary every int8 micro-model has, QuantizeLinear → DequantizeLinear."""
    from onnx import TensorProto, helper, numpy_helper

    _check_fmt(fmt)
    dims = [int(d) for d in shape]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)
    if fmt == "onnx-fp32":
        return _model([helper.make_node("Identity", ["x"], ["y"])], [x], [y], [], "empty")
    inits = [numpy_helper.from_array(np.array(ACT_SCALE, np.float32), "s"),
             numpy_helper.from_array(act_zero_point(), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["x_q"]),
             helper.make_node("DequantizeLinear", ["x_q", "s", "z"], ["y"])]
    return _model(nodes, [x], [y], inits, "empty")


def chain_model(layers: Sequence[LayerDesc], fmt: str = "onnx-fp32", seed: int = 0) -> Any:
    """A whole network (conv2d… → global_avgpool → linear; a graph when layers name their
    ``inputs``: residual adds) as one ONNX model with random weights, in the graph form the real
    export produces: fp32 Conv/Relu, or for int8 the QDQ form of ``quantize_static`` (one
    Quantize/Dequantize pair per activation tensor). Its latency is what a per-layer table must
    add up to, so tables are corrected against it."""
    from onnx import TensorProto, helper, numpy_helper

    _check_fmt(fmt)
    int8 = fmt == "onnx-int8"
    rng = np.random.default_rng(seed)
    nodes: list[Any] = []
    inits: list[Any] = []
    first = layers[0]
    x_in = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *first.in_shape])
    cur, relu_zp = "x", False

    def init(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(arr, name))
        return name

    def qdq(t: str, relu: bool) -> str:
        s = init(f"{t}_s", np.array(ACT_SCALE, np.float32))
        z = init(f"{t}_z", act_zero_point(relu))
        nodes.append(helper.make_node("QuantizeLinear", [t, s, z], [f"{t}_q"]))
        nodes.append(helper.make_node("DequantizeLinear", [f"{t}_q", s, z], [f"{t}_dq"]))
        return f"{t}_dq"

    if int8:
        cur = qdq(cur, False)
    index = {d.name: i for i, d in enumerate(layers)}
    outs: list[tuple[str, bool]] = []  # every layer's output tensor and whether it is ReLU-clamped
    net_in = (cur, False)
    for i, d in enumerate(layers):
        _validate(d)
        name = f"l{i}"
        srcs = [outs[i - 1] if i else net_in] if not d.inputs else \
            [net_in if n == "" else outs[index[n]] for n in d.inputs]
        cur, relu_zp = srcs[0]
        if d.kind == "add":
            acc = cur
            for k, (t, _) in enumerate(srcs[1:]):
                nodes.append(helper.make_node("Add", [acc, t], [f"{name}_s{k}"]))
                acc = f"{name}_s{k}"
            cur = qdq(acc, False) if int8 else acc
            outs.append((cur, False))
            continue
        if d.kind == "pixel_shuffle":
            nodes.append(helper.make_node("DepthToSpace", [cur], [f"{name}_d"], blocksize=d.stride[0], mode="CRD"))
            cur = qdq(f"{name}_d", relu_zp) if int8 else f"{name}_d"
            outs.append((cur, relu_zp))
            continue
        if d.kind == "global_avgpool":  # as torch.onnx exports x.mean((2, 3)): ReduceMean, no keepdims
            axes = init(f"{name}_axes", np.array([2, 3], np.int64))
            nodes.append(helper.make_node("ReduceMean", [cur, axes], [f"{name}_p"], keepdims=0))
            cur = qdq(f"{name}_p", relu_zp) if int8 else f"{name}_p"
            outs.append((cur, relu_zp))
            continue
        c_in, c_out = d.in_shape[0], d.out_shape[0]
        w_shape = (c_out, c_in // d.groups, *d.kernel) if d.kind == "conv2d" else (c_out, c_in)
        fan_in = int(np.prod(w_shape[1:]))
        if int8:
            w_scale = (rng.uniform(0.5, 1.5, c_out) / (127.0 * np.sqrt(fan_in))).astype(np.float32)
            init(f"{name}_wq", rng.integers(-127, 128, w_shape).astype(np.int8))
            init(f"{name}_ws", w_scale)
            init(f"{name}_wz", np.zeros(c_out, np.int8))
            nodes.append(helper.make_node("DequantizeLinear", [f"{name}_wq", f"{name}_ws", f"{name}_wz"],
                                          [f"{name}_w"], axis=0))
            init(f"{name}_bq", rng.integers(-1000, 1000, c_out).astype(np.int32))
            init(f"{name}_bs", (ACT_SCALE * w_scale).astype(np.float32))
            init(f"{name}_bz", np.zeros(c_out, np.int32))
            nodes.append(helper.make_node("DequantizeLinear", [f"{name}_bq", f"{name}_bs", f"{name}_bz"],
                                          [f"{name}_b"], axis=0))
        else:
            init(f"{name}_w", (rng.standard_normal(w_shape) / np.sqrt(fan_in)).astype(np.float32))
            init(f"{name}_b", (0.01 * rng.standard_normal(c_out)).astype(np.float32))
        ins = [cur, f"{name}_w", f"{name}_b"]
        if d.kind == "conv2d":
            top, bottom, left, right = d.pad
            nodes.append(helper.make_node("Conv", ins, [f"{name}_y"], kernel_shape=list(d.kernel),
                                          strides=list(d.stride), pads=[top, left, bottom, right], group=d.groups,
                                          dilations=list(d.dilation)))
        else:
            nodes.append(helper.make_node("Gemm", ins, [f"{name}_y"], transB=1))
        out, relu_zp = f"{name}_y", d.activation in ("relu", "relu6")
        if d.activation == "relu" and not int8:
            nodes.append(helper.make_node("Relu", [out], [f"{name}_r"]))
            out = f"{name}_r"
        elif d.activation == "relu6" and not int8:
            lo, hi = init(f"{name}_lo", np.array(0.0, np.float32)), init(f"{name}_hi", np.array(6.0, np.float32))
            nodes.append(helper.make_node("Clip", [out, lo, hi], [f"{name}_r"]))
            out = f"{name}_r"
        cur = qdq(out, relu_zp) if int8 else out
        outs.append((cur, relu_zp))
    last = layers[-1]
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
    y_out = helper.make_tensor_value_info("y", TensorProto.FLOAT, _out_dims(last))
    return _model(nodes, [x_in], [y_out], inits, "chain")


# ---- any format: the files a latency table and a latency model measure --------------------------
LATENCY_FORMATS = FORMATS + ("tflite-int8", "tflite-fp32")


def _save_onnx(model: Any, path: Path) -> Path:
    import onnx

    onnx.save(model, str(path))
    return path


def _save_tflite(module: Any, in_shape: Sequence[int], fmt: str, path: Path) -> Path:
    """A torch module with random weights as TFLite (int8 calibrated on a few random inputs:
    latency does not depend on weight or activation values, only on the graph)."""
    import torch

    from edgenas.export.tflite_export import export_tflite, tflite_int8_random

    module = torch.nn.Sequential(module).eval()  # fx traces a bare root module's parameters as attributes
    with torch.no_grad():
        if fmt == "tflite-int8":
            return tflite_int8_random(module, (1, *in_shape), path)
        return export_tflite(module, (1, *in_shape), path, quant="fp32")


def _check_latency_fmt(fmt: str) -> None:
    if fmt not in LATENCY_FORMATS:
        raise ValueError(f"unknown latency format {fmt!r} (known: {', '.join(LATENCY_FORMATS)})")


def save_layer_model(desc: LayerDesc, fmt: str, path: str | Path) -> Path:
    """One layer's micro-model in ``fmt`` (``onnx-int8``, ``tflite-int8`` …) at ``path``."""
    _check_latency_fmt(fmt)
    if fmt.startswith("onnx-"):
        return _save_onnx(micro_model(desc, fmt), Path(path))
    import torch

    from edgenas.layers import micro_module

    torch.manual_seed(_seed(desc, fmt) % (2 ** 31))
    module = micro_module(desc)
    shape = desc.in_shape if desc.kind != "linear" else (desc.in_shape[0],)
    return _save_tflite(module, shape, fmt, Path(path))


def save_empty_model(shape: Sequence[int], fmt: str, path: str | Path) -> Path:
    """The runtime's per-call overhead model in ``fmt`` (for TFLite: a tiny dense layer on [1, 8])."""
    _check_latency_fmt(fmt)
    if fmt.startswith("onnx-"):
        return _save_onnx(empty_model(shape, fmt), Path(path))
    import torch

    torch.manual_seed(0)
    n = int(shape[-1])
    return _save_tflite(torch.nn.Linear(n, n), (n,), fmt, Path(path))


def save_chain_model(layers: Sequence[LayerDesc], fmt: str, path: str | Path) -> Path:
    """A whole sequential network in ``fmt`` with random weights, in the form the real export has."""
    _check_latency_fmt(fmt)
    if fmt.startswith("onnx-"):
        return _save_onnx(chain_model(layers, fmt), Path(path))
    import torch

    from edgenas.layers import GraphNet, chain_module

    torch.manual_seed(0)
    graph = any(d.inputs for d in layers)
    return _save_tflite(GraphNet(layers) if graph else chain_module(layers), layers[0].in_shape, fmt, Path(path))
