"""Layer descriptors as a graph: inputs, residual adds, dilation; liveness-based peak RAM; the
generic graph network; micro-models and whole-network models of a residual graph."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgenas.cost import ram_bytes
from edgenas.layers import GraphNet, micro_module
from edgenas.spec import LayerDesc, with_liveness


def _residual() -> list[LayerDesc]:
    """stem → expand → depthwise → project → add(stem, project) → pool → fc."""
    return [
        LayerDesc("stem", "conv2d", (3, 8, 8), (8, 8, 8), (3, 3), pad=(1, 1, 1, 1), activation="relu6",
                  inputs=("",)),
        LayerDesc("b0.expand", "conv2d", (8, 8, 8), (24, 8, 8), activation="relu6"),
        LayerDesc("b0.dw", "conv2d", (24, 8, 8), (24, 8, 8), (3, 3), pad=(1, 1, 1, 1), groups=24, activation="relu6"),
        LayerDesc("b0.project", "conv2d", (24, 8, 8), (8, 8, 8)),
        LayerDesc("b0.add", "add", (8, 8, 8), (8, 8, 8), inputs=("stem", "b0.project"), bias=False),
        LayerDesc("pool", "global_avgpool", (8, 8, 8), (8, 1, 1), bias=False),
        LayerDesc("fc", "linear", (8, 1, 1), (4, 1, 1)),
    ]


def test_key_of_a_plain_layer_is_unchanged() -> None:
    d = LayerDesc("x", "conv2d", (16, 10, 5), (32, 10, 5), (3, 3), (1, 1), (1, 1, 1, 1), 16, "relu")
    # the key every stored latency table holds (written before graph layers existed)
    assert d.key() == json.dumps(["conv2d", [16, 10, 5], [32, 10, 5], [3, 3], [1, 1], [1, 1, 1, 1], 16, "relu",
                                  True, "int8"], separators=(",", ":"))
    assert LayerDesc("x", "conv2d", (16, 10, 5), (32, 10, 5), dilation=(2, 2)).key() != \
        LayerDesc("x", "conv2d", (16, 10, 5), (32, 10, 5)).key()
    # names, inputs and liveness do not change what a layer computes
    assert LayerDesc("a", "add", (8, 4, 4), (8, 4, 4), inputs=("p", "q"), held=99).key() == \
        LayerDesc("b", "add", (8, 4, 4), (8, 4, 4), inputs=("r", "s")).key()


def test_liveness_holds_the_skip_tensor_until_its_add() -> None:
    g = with_liveness(_residual())
    held = {d.name: d.held for d in g}
    skip = 8 * 8 * 8  # the stem's output, read again by the add
    assert held == {"stem": 0, "b0.expand": 0, "b0.dw": skip, "b0.project": skip, "b0.add": 0, "pool": 0, "fc": 0}
    # b0.expand reads the stem output itself (not held extra); the add holds both inputs
    assert ram_bytes(g[2]) == 24 * 8 * 8 + 24 * 8 * 8 + skip  # input + output (SAME padding folded) + the skip
    assert ram_bytes(g[4]) == 2 * skip + skip
    assert max(ram_bytes(d) for d in g) == ram_bytes(g[2])
    # a chain holds nothing extra
    chain = [LayerDesc("a", "conv2d", (1, 4, 4), (2, 4, 4)), LayerDesc("b", "conv2d", (2, 4, 4), (2, 4, 4))]
    assert [d.held for d in with_liveness(chain)] == [0, 0]
    with pytest.raises(ValueError, match="not an earlier layer"):
        with_liveness([LayerDesc("a", "add", (2, 4, 4), (2, 4, 4), inputs=("b", ""))])


def test_graph_net_computes_the_residual_network() -> None:
    torch.manual_seed(0)
    layers = _residual()
    net = GraphNet(layers).eval()
    x = torch.randn(2, 3, 8, 8)
    m = net.layers
    with torch.no_grad():
        s = m[0](x)
        expect = m[6]((s + m[3](m[2](m[1](s)))).mean(dim=(2, 3)))
        assert torch.allclose(net(x), expect, atol=1e-6)
        assert torch.fx.symbolic_trace(net)(x).shape == (2, 4)  # the TFLite route traces it


def test_add_and_dilated_micro_models_run_in_onnxruntime(tmp_path) -> None:
    import onnxruntime as ort

    from edgenas.export.micro import save_chain_model, save_layer_model

    add = LayerDesc("a", "add", (8, 6, 6), (8, 6, 6), inputs=("p", "q"), bias=False)
    dil = LayerDesc("d", "conv2d", (4, 9, 9), (4, 9, 9), (3, 3), pad=(2, 2, 2, 2), groups=4, dilation=(2, 2),
                    activation="relu6")
    x = np.random.default_rng(0).standard_normal((1, 8, 6, 6)).astype(np.float32)
    for fmt in ("onnx-fp32", "onnx-int8"):
        x9 = np.random.default_rng(1).standard_normal((1, 4, 9, 9)).astype(np.float32)
        for desc, inp in ((add, x), (dil, x9)):
            path = save_layer_model(desc, fmt, tmp_path / f"{desc.name}.{fmt}.onnx")
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            y = sess.run(None, {"x": np.ascontiguousarray(inp)})[0]
            assert y.shape == (1, *desc.out_shape)
    # the fp32 add micro-model is x + relu(x), as micro_module
    ref = micro_module(add)(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(save_layer_model(add, "onnx-fp32", tmp_path / "a.onnx")),
                                providers=["CPUExecutionProvider"])
    assert np.allclose(sess.run(None, {"x": x})[0], ref, atol=1e-6)
    # the whole residual network as one ONNX model: Add nodes, the fc's outputs
    for fmt in ("onnx-fp32", "onnx-int8"):
        path = save_chain_model(_residual(), fmt, tmp_path / f"net.{fmt}.onnx")
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        ops = [n.op_type for n in __import__("onnx").load(str(path)).graph.node]
        assert ops.count("Add") == 1 and ops.count("Conv") == 4
        assert sess.run(None, {"x": np.zeros((1, 3, 8, 8), np.float32)})[0].shape == (1, 4)


def _mb_block(c: int, e: int, hw: int, name: str, prev: str) -> list[LayerDesc]:
    m = c * e
    return [LayerDesc(f"{name}.expand", "conv2d", (c, hw, hw), (m, hw, hw), activation="relu6", inputs=(prev,)),
            LayerDesc(f"{name}.dw", "conv2d", (m, hw, hw), (m, hw, hw), (3, 3), pad=(1, 1, 1, 1), groups=m,
                      activation="relu6"),
            LayerDesc(f"{name}.project", "conv2d", (m, hw, hw), (c, hw, hw)),
            LayerDesc(f"{name}.add", "add", (c, hw, hw), (c, hw, hw), inputs=(prev, f"{name}.project"), bias=False)]


def test_residual_ram_model_against_the_exported_int8_tflite(tmp_path) -> None:
    """An inverted-residual image network (32 px RGB, MobileNetV2 blocks with residual adds): the
    liveness model's peak against the peak of the exported int8 TFLite file's tensors in
    execution order. Both hold the skip tensor across the block; SAME padding (folded into the
    convolution, no PAD op) costs nothing in either."""
    pytest.importorskip("tensorflow")
    from edgenas.cost import ram_bytes
    from edgenas.export.tflite_export import tflite_int8_random, verify_tflite

    layers = [LayerDesc("stem", "conv2d", (3, 32, 32), (16, 16, 16), (3, 3), (2, 2), (0, 1, 0, 1),
                        activation="relu6", inputs=("",))]
    layers += _mb_block(16, 4, 16, "b0", "stem") + _mb_block(16, 3, 16, "b1", "b0.add")
    layers += [LayerDesc("down", "conv2d", (16, 16, 16), (32, 8, 8), stride=(2, 2), activation="relu6")]
    layers += _mb_block(32, 4, 8, "b2", "down")
    layers += [LayerDesc("pool", "global_avgpool", (32, 8, 8), (32, 1, 1), bias=False),
               LayerDesc("fc", "linear", (32, 1, 1), (10, 1, 1))]
    graph = with_liveness(layers)
    peak = max(graph, key=ram_bytes)
    torch.manual_seed(0)
    ver = verify_tflite(tflite_int8_random(GraphNet(graph).eval(), (1, 3, 32, 32), tmp_path / "res.tflite"))
    assert peak.name == "b0.dw" and ver["peak_op"].startswith("DEPTHWISE_CONV_2D")
    skip, act = 16 * 16 * 16, 64 * 16 * 16
    assert peak.held == skip
    assert ram_bytes(peak) == 36864 == act + act + skip  # input + output + skip
    assert ver["peak_activation_bytes"] == ram_bytes(peak)
    # padding other than SAME is an explicit PAD op in the file and materialises the padded input
    odd = LayerDesc("odd", "conv2d", (8, 8, 8), (8, 8, 8), (3, 3), pad=(2, 0, 2, 0), groups=8)
    assert not odd.pad_is_same and ram_bytes(odd) == 8 * 10 * 10 + 8 * 8 * 8
    assert graph[0].pad_is_same and ram_bytes(graph[0]) == 3 * 32 * 32 + 16 * 16 * 16


def test_image_space_ram_model_agrees_with_the_exported_int8_tflite(tmp_path) -> None:
    """Networks of the image space (inverted residuals, strided stems and stages, 5x5 depthwise
    convs on small maps) against their exported int8 TFLite files: the same peak, in bytes."""
    pytest.importorskip("tensorflow")
    import random

    from edgenas import cost
    from edgenas.export.tflite_export import tflite_int8_random, verify_tflite
    from edgenas.spaces import get_space

    space = get_space("image-mbv2", num_classes=10)
    rng = random.Random(3)
    for i in range(3):
        spec = space.sample(rng)
        torch.manual_seed(0)
        path = tflite_int8_random(space.build(spec).eval(), (1, *spec.data.input_shape), tmp_path / f"{i}.tflite")
        assert verify_tflite(path)["peak_activation_bytes"] == cost.peak_ram(space).cost(spec), space.describe(spec)
