"""The sr-dlsr space by hand: choice points, the in-network bicubic residual, the graph and its
liveness, exact expected costs against brute force, supernet ↔ plain network, the network-level
edges in the graph and the cost, receptive radius and seamless tiles, the spec as JSON."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgenas import cost
from edgenas import spec as spec_module
from edgenas.errors import ConfigError
from edgenas.spaces.base import SPACES, build, get_space
# importing the module registers sr-dlsr (edgenas.spaces does not import it yet)
from edgenas.spaces.sr_dlsr import OPS, SRDLSRSpace, SRDLSRSpaceConfig, SRDLSRSupernet, SRNet, bicubic_taps, bicubic_weight
from edgenas.spec import ArchSpec, LayerDesc, with_liveness
from edgenas.tasks.sr_config import SRConfig

from edgenas_toys import all_specs, random_specs

# for the supernet: every op, two widths and colours, three blocks (every edge kind), small tiles
NET = SRDLSRSpaceConfig(tiles="8,12", overlap=2, frame="24x24", max_blocks=3, widths="8,16")


def net_space(**overrides: object) -> SRDLSRSpace:
    return SRDLSRSpace(0, replace(NET, **overrides))


def _spec(space: SRDLSRSpace, seed: int = 0, **choices: str) -> ArchSpec:
    sel = space.selection(random_specs(space, 1, seed=seed)[0])
    sel.update(choices)
    return space.spec(sel)


def _x(spec: ArchSpec, n: int = 2, hw: tuple[int, int] | None = None, seed: int = 1) -> torch.Tensor:
    h, w = hw or (spec.data.tile_in, spec.data.tile_in)
    return torch.rand(n, spec.data.channels, h, w, generator=torch.Generator().manual_seed(seed))


def _block(b: int, *ops: str, **edges: str) -> dict[str, str]:
    out = {f"b{b}.op{l}": op for l, op in enumerate(ops)}
    out.update({f"b{b}.{k}": v for k, v in edges.items()})
    return out


# ---- choice points ------------------------------------------------------------------------------

def test_registered_choice_points_and_spec_count() -> None:
    assert "sr-dlsr" in SPACES
    space = get_space("sr-dlsr", num_classes=7)
    assert isinstance(space, SRDLSRSpace) and space.task == "sr" and space.num_classes == 0
    names = [p.name for p in space.choice_points()]
    assert names == ["data.colour", "data.tile", "width", "blocks",
                     "b1.op0", "b1.op1",
                     "b2.op0", "b2.op1", "b2.in0",
                     "b3.op0", "b3.op1", "b3.in0", "b3.in1",
                     "b4.op0", "b4.op1", "b4.in0", "b4.in1", "b4.in2"]
    assert all(p.kind == "data" and p.sampled for p in space.data_points)
    assert not any(p.sampled for p in space.arch_points)  # a DARTS mixture may relax every arch choice
    assert space.point("data.colour").options == ("y", "rgb")
    assert space.point("data.tile").options == ("32", "64", "128")
    assert space.point("width").options == ("16", "24", "32") and space.point("blocks").options == ("1", "2", "3", "4")
    assert space.point("b2.op1").options == tuple(OPS) and space.point("b3.in1").options == ("no", "yes")
    datas = space.data_configs()
    assert [(d.colour, d.tile, d.tile_in) for d in datas[:3]] == [("y", 32, 48), ("y", 64, 80), ("y", 128, 144)]
    assert [d.tiles_per_frame for d in datas[:3]] == [10 * 8, 5 * 4, 3 * 2]
    assert {(d.scale, d.overlap, d.frame_w, d.frame_h) for d in datas} == {(2, 8, 320, 240)}
    n_specs = math.prod(len(p.options) for p in space.choice_points())
    assert n_specs == 6 * 3 * 4 * 7 ** 8 * 2 ** 6 == 26_564_203_008


def test_config_errors() -> None:
    for cfg, fragment in [
        (SRDLSRSpaceConfig(scale=5), "space.scale must be one of"),
        (SRDLSRSpaceConfig(colours="y,yuv"), "space.colours options must be among"),
        (SRDLSRSpaceConfig(tiles="4,8"), "must be ≥ 8"),
        (SRDLSRSpaceConfig(tiles="32,32"), "duplicate"),
        (SRDLSRSpaceConfig(widths="16,x"), "positive integers"),
        (SRDLSRSpaceConfig(ops="conv3x3,conv7x7"), "space.ops options must be among"),
        (SRDLSRSpaceConfig(max_blocks=6), "max_blocks must be 1…5"),
        (SRDLSRSpaceConfig(layers_per_block=0), "layers_per_block"),
        (SRDLSRSpaceConfig(frame="320-240"), "WxH"),
    ]:
        with pytest.raises(ConfigError, match=fragment):
            SRDLSRSpace(0, cfg)
    with pytest.raises(ConfigError, match="takes an SRDLSRSpaceConfig"):
        SRDLSRSpace(0, object())  # type: ignore[arg-type]
    space = net_space()
    with pytest.raises(ConfigError, match="not of this space"):
        space.data_labels(SRConfig(scale=3, tile=8, overlap=2, frame_w=24, frame_h=24))


# ---- the bicubic residual -----------------------------------------------------------------------

@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_residual_equals_the_bicubic_baseline_in_the_interior(scale: int) -> None:
    taps = bicubic_taps(scale)
    assert taps.shape == (scale, 5) and np.allclose(taps.sum(1), 1.0)  # every phase keeps constants
    space = net_space(scale=scale)
    for colour in ("y", "rgb"):
        spec = _spec(space, 3, **{"data.colour": colour, "data.tile": "12"})
        net = space.build(spec).eval()
        tail = net.layers[net.names.index("tail")][0]
        with torch.no_grad():  # the network without its learned part: the residual alone
            tail.weight.zero_()
            tail.bias.zero_()
        x = _x(spec, 2, (15, 13))
        with torch.no_grad():
            got = net(x)
        # the bicubic baseline (a = -0.5, as MATLAB's imresize), unclipped
        ref = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False, antialias=True)
        assert got.shape == ref.shape == (2, spec.data.channels, 15 * scale, 13 * scale)
        inner = (slice(None), slice(None), slice(2 * scale, -2 * scale), slice(2 * scale, -2 * scale))
        assert torch.allclose(got[inner], ref[inner], atol=1e-5), (got - ref)[inner].abs().max()
        assert not torch.allclose(got, ref, atol=1e-3)  # zero padding differs at the border only
        fixed = net.layers[net.names.index("bicubic")][0]
        assert not fixed.weight.requires_grad and fixed.bias is None and fixed.groups == 1
        assert torch.equal(fixed.weight, bicubic_weight(spec.data.channels, scale))
        c, ss = spec.data.channels, scale * scale  # block-diagonal: output c·s² + … reads input channel c only
        for i in range(c):
            off = [j for j in range(c) if j != i]
            assert not fixed.weight[i * ss:(i + 1) * ss, off].any() and fixed.weight[i * ss:(i + 1) * ss, i].any()


def test_pixel_shuffle_channel_order_is_crd() -> None:
    """Channel c·s² + r·s + q lands on output pixel (s·i + r, s·j + q) of channel c."""
    s, c = 3, 2
    y = torch.zeros(1, c * s * s, 2, 2)
    y[0, 1 * s * s + 2 * s + 0, 1, 0] = 1.0
    out = F.pixel_shuffle(y, s)
    assert out[0, 1, s * 1 + 2, s * 0 + 0] == 1.0 and float(out.sum()) == 1.0


# ---- the graph ------------------------------------------------------------------------------------

def _hand_space() -> tuple[SRDLSRSpace, ArchSpec]:
    space = SRDLSRSpace(0, SRDLSRSpaceConfig(tiles="16", overlap=4, frame="64x48", max_blocks=3, widths="16,24"))
    sel = {"data.colour": "y", "data.tile": "16", "width": "16", "blocks": "3",
           **_block(1, "conv3x3", "sep5x5"), **_block(2, "skip", "skip", in0="no"),
           **_block(3, "dil3x3", "conv1x1", in0="yes", in1="yes")}
    return space, space.spec(sel)


def test_layers_by_hand() -> None:
    """Block 2 is the identity (no layer), so output 2 is output 1's tensor and block 3's fuse reads
    ``b1.add`` twice; the head stays live until that fuse."""
    space, spec = _hand_space()
    layers = space.layers(spec)
    assert [d.name for d in layers] == ["head", "b1.op0", "b1.op1.dw", "b1.op1.pw", "b1.add", "b3.fuse", "b3.op0",
                                        "b3.op1", "b3.add", "tail", "bicubic", "tail.add", "shuffle"]
    by = {d.name: d for d in layers}
    t, w = 24, 16
    assert spec.data.tile_in == t and by["head"].in_shape == (1, t, t) and by["head"].out_shape == (w, t, t)
    assert by["b1.op1.dw"].groups == w and by["b1.op1.dw"].kernel == (5, 5) and by["b1.op1.dw"].activation is None
    assert by["b1.op1.pw"].activation == "relu" and by["b3.op0"].dilation == (2, 2) and by["b3.op0"].pad == (2,) * 4
    assert all(d.pad_is_same for d in layers if d.kind == "conv2d")
    assert by["b1.add"].inputs == ("b1.op1.pw", "head")
    assert by["b3.fuse"].inputs == ("b1.add", "head", "b1.add") and by["b3.fuse"].n_inputs == 3
    assert by["b3.op0"].inputs == ("b3.fuse",) and by["b3.add"].inputs == ("b3.op1", "b3.fuse")
    assert by["tail"].inputs == ("b3.add",) and by["tail"].out_shape == (4, t, t) and by["tail"].activation is None
    assert by["bicubic"].inputs == ("",) and by["bicubic"].groups == 1 and not by["bicubic"].bias
    assert by["tail.add"].inputs == ("tail", "bicubic")
    assert by["shuffle"].kind == "pixel_shuffle" and by["shuffle"].stride == (2, 2)
    assert by["shuffle"].out_shape == (1, 2 * t, 2 * t)
    assert layers == with_liveness(layers)
    x, body = t * t, w * t * t  # bytes of the input and of one body tensor
    assert [d.held for d in layers] == [0, x, x + body, x + body, x, x, x, x + body, x, x, 4 * t * t, 0, 0]
    n = t * t
    macs = {"head": w * n * 9, "b1.op0": w * n * w * 9, "b1.op1.dw": w * n * 25, "b1.op1.pw": w * n * w,
            "b1.add": w * n, "b3.fuse": 2 * w * n, "b3.op0": w * n * w * 9, "b3.op1": w * n * w, "b3.add": w * n,
            "tail": 4 * n * w * 9, "bicubic": 4 * n * 25, "tail.add": 4 * n, "shuffle": 0}
    assert {d.name: d.macs for d in layers} == macs
    assert sum(macs.values()) == 3_691_008 and all(d.calls == spec.data.tiles_per_frame == 12 for d in layers)
    assert cost.macs(space).cost(spec) == 12 * 3_691_008  # Mult-Adds per frame: every tile runs the net
    # parameters: the LayerDescs count the fixed bicubic weights (4·25, no bias); the module trains the rest
    net = space.build(spec)
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    fixed = sum(p.numel() for p in net.parameters() if not p.requires_grad)
    assert trainable == 160 + 2320 + 416 + 272 + 2320 + 272 + 580 == 6340 and fixed == 100
    assert cost.params(space).cost(spec) == sum(d.params for d in layers) == trainable + fixed
    assert space.receptive_radius(spec) == 2 + 1 + 2 + 2 + 0
    assert space.describe(spec) == "x2 y tile 16+2·4 (12/frame) | w16 | B1 conv3x3,sep5x5 | B2 id | B3[+0,1] dil3x3,conv1x1"


def test_layers_agree_with_the_built_module() -> None:
    space = net_space()
    for spec in random_specs(space, 8, seed=2) + [_hand_space()[1]]:
        sp = space if spec.data.tile in (8, 12) else _hand_space()[0]
        net = sp.build(spec).eval()
        assert isinstance(net, SRNet)
        calls: list[tuple[nn.Conv2d, tuple, tuple]] = []
        hooks = [m.register_forward_hook(lambda m, i, o: calls.append((m, tuple(i[0].shape[1:]), tuple(o.shape[1:]))))
                 for m in net.modules() if isinstance(m, nn.Conv2d)]
        with torch.no_grad():
            out = net(_x(spec, 1))
        for h in hooks:
            h.remove()
        d = spec.data
        assert out.shape == (1, d.channels, d.tile_in * d.scale, d.tile_in * d.scale) == (1, *d.output_shape)
        descs = [x for x in sp.layers(spec) if x.kind == "conv2d"]
        assert len(calls) == len(descs), sp.describe(spec)
        for (mod, i, o), x in zip(calls, descs):
            assert (i, o) == (x.in_shape, x.out_shape), x.name
            assert (mod.kernel_size, mod.dilation, mod.groups) == (x.kernel, x.dilation, x.groups), x.name
            assert mod.weight.numel() == x.weights and (0 if mod.bias is None else mod.bias.numel()) == x.biases
        assert sum(p.numel() for p in net.parameters()) == cost.params(sp).cost(spec)
        with torch.no_grad():  # torch.fx (the TFLite route) traces it like a hand-written network
            x = _x(spec, 1)
            assert torch.allclose(torch.fx.symbolic_trace(net)(x), net(x), atol=1e-6)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shape_any_input_size(scale: int) -> None:
    space = net_space(scale=scale)
    for colour in ("y", "rgb"):
        spec = _spec(space, 5, **{"data.colour": colour})
        net = space.build(spec).eval()
        c = spec.data.channels
        with torch.no_grad():
            assert net(_x(spec, 3, (10, 7))).shape == (3, c, 10 * scale, 7 * scale)
            assert net(_x(spec, 1)).shape == (1, *spec.data.output_shape)


def test_module_level_build_and_json_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    space = net_space()
    spec = random_specs(space, 1, seed=3)[0]
    torch.manual_seed(0)
    a = space.build(spec).state_dict()
    torch.manual_seed(0)
    b = build(spec).state_dict()  # the default space, from the spec alone
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    real = spec_module._data_class
    try:
        real("sr")
    except ConfigError:  # the sr task is not registered yet: its data configuration type is SRConfig
        monkeypatch.setattr(spec_module, "_data_class", lambda task: SRConfig if task == "sr" else real(task))
    for s in random_specs(space, 10, seed=4):
        back = ArchSpec.from_json(s.to_json())
        assert back == s and back.hash() == s.hash() and isinstance(back.data, SRConfig)
        assert space.selection(back) == space.selection(s) and space.spec(space.selection(s)) == s
        assert space.derive(space.one_hot(s)) == s


# ---- exact expected costs ---------------------------------------------------------------------------

def _nonlinear(d: LayerDesc) -> float:
    return float(d.macs) ** 0.5 + float(d.held)


SMALL = {  # (config, number of specs)
    # the brief's tiny set: one edge, two ops without skip, two widths, two tiles
    "tiny": (SRDLSRSpaceConfig(colours="y,rgb", tiles="8,12", overlap=2, frame="24x24", max_blocks=2,
                               layers_per_block=1, widths="8,16", ops="conv3x3,dil3x3"), 2 * 2 * 2 * 2 * 4 * 2),
    # identity blocks, first/later ops, separable halves, held tensors and fuses of 2-3 inputs
    "sep": (SRDLSRSpaceConfig(colours="y,rgb", tiles="8", overlap=1, frame="16x16", max_blocks=3,
                              layers_per_block=2, widths="8,16", ops="sep3x3,skip"), 2 * 2 * 3 * 2 ** 6 * 2 ** 3),
    # four blocks: six edges, fuses of up to 4 inputs, aliasing through chains of identity blocks
    "deep": (SRDLSRSpaceConfig(colours="y", tiles="8", overlap=1, frame="16x16", max_blocks=4,
                               layers_per_block=1, widths="8", ops="conv3x3,skip"), 4 * 2 ** 4 * 2 ** 6),
}


@pytest.mark.parametrize("name", list(SMALL))
def test_expected_cost_equals_brute_force(name: str) -> None:
    """Every slot's expectation equals the probability-weighted sum over every spec of the space,
    for a cost nonlinear in the layer (√MACs + held) and for the cost models (per-slot peak RAM too)."""
    cfg, n = SMALL[name]
    space = SRDLSRSpace(0, cfg)
    g = torch.Generator().manual_seed(0)
    probs = {p.name: torch.softmax(torch.randn(len(p.options), generator=g) * 1.5, 0) for p in space.choice_points()}
    specs = list(all_specs(space))
    assert len(specs) == n
    names = space.slot_names()
    fns = {"nonlinear": _nonlinear, "macs": cost.macs(space).layer_fn, "params": cost.params(space).layer_fn,
           "ram": cost.peak_ram(space).layer_fn, "flash": cost.flash(space).layer_fn}
    brute = {k: np.zeros(len(names)) for k in fns}
    total = 0.0
    for s in specs:
        w = 1.0
        for k, v in space.selection(s).items():
            w *= float(probs[k][space.point(k).index(v)])
        total += w
        for d in space.layers(s):
            for k, fn in fns.items():
                brute[k][names.index(d.name)] += w * fn(d)
    assert total == pytest.approx(1.0, rel=1e-5)
    for k, fn in fns.items():
        slots = space.expected_layer_costs(probs, fn)
        assert slots.shape == (len(names),)
        assert np.allclose(slots.numpy(), brute[k], rtol=2e-5, atol=1e-3), (k, slots, brute[k])


@pytest.mark.parametrize("model_fn", [cost.macs, cost.params, cost.flash, cost.peak_ram])
def test_expected_cost_at_one_hot_equals_cost(model_fn) -> None:
    space = get_space("sr-dlsr", num_classes=0)
    m = model_fn(space)
    hand_space, hand = _hand_space()
    for sp, spec in [(space, s) for s in random_specs(space, 12, seed=5)] + [(hand_space, hand)] + \
            [(space, s) for s in list(space.cheapest_candidates())[:2]]:
        mm = model_fn(sp)
        assert float(mm.expected_cost(sp.one_hot(spec))) == pytest.approx(mm.cost(spec), rel=1e-5), sp.describe(spec)
        assert float(sp.expected_layer_costs(sp.one_hot(spec), _nonlinear).sum()) == pytest.approx(
            sum(_nonlinear(d) for d in sp.layers(spec)), rel=1e-5)
    assert m.name


def test_expected_cost_gradients_reach_every_choice_point() -> None:
    """No detached cost (DLSR's own): data, width, depth, every op and every edge get a gradient."""
    space = get_space("sr-dlsr", num_classes=0)
    g = torch.Generator().manual_seed(1)
    for model_fn in (cost.macs, cost.peak_ram, cost.params):
        logits = {p.name: torch.randn(len(p.options), generator=g).requires_grad_() for p in space.choice_points()}
        probs = {k: torch.softmax(v, 0) for k, v in logits.items()}
        model_fn(space).expected_cost(probs).backward()
        grads = {k: float(v.grad.abs().sum()) for k, v in logits.items()}
        if model_fn is cost.macs:
            assert all(x > 0 for x in grads.values()), grads
        else:
            assert any(x > 0 for x in grads.values())
    # the per-slot sum under a nonlinear cost: every choice point too
    logits = {p.name: torch.randn(len(p.options), generator=g).requires_grad_() for p in space.choice_points()}
    space.expected_layer_costs({k: torch.softmax(v, 0) for k, v in logits.items()}, _nonlinear).sum().backward()
    assert all(float(v.grad.abs().sum()) > 0 for v in logits.values())


def test_all_layers_and_cheapest_candidates() -> None:
    space = SRDLSRSpace(0, SMALL["sep"][0])
    listed = list(space.all_layers())
    keys = {d.key() for d in listed}
    assert len(keys) == len(listed)
    specs = list(all_specs(space))
    layer_lists = [(s.data, space.layers(s)) for s in specs]
    assert not {d.name for _, layers in layer_lists for d in layers if d.key() not in keys}
    default = get_space("sr-dlsr", num_classes=0)
    dkeys = {d.key() for d in default.all_layers()}
    for s in random_specs(default, 100, seed=7):
        assert all(d.key() in dkeys for d in default.layers(s)), default.describe(s)
    cands = list(space.cheapest_candidates())
    assert len(cands) == len(space.data_configs()) * 2  # data × width
    assert all(s.choices["blocks"] == "1" and space.layers(s)[1].name == "tail" for s in cands)
    for model_fn in (cost.macs, cost.params, cost.flash, cost.peak_ram):
        m = model_fn(space)
        agg = max if m.aggregate == "max" else sum
        for data in space.data_configs():
            best = min(agg(m.layer_fn(d) for d in layers) for dd, layers in layer_lists if dd == data)
            assert min(m.cost(s) for s in cands if s.data == data) <= best, (m.name, data.key())
    noskip = SRDLSRSpace(0, SMALL["tiny"][0])
    m = cost.macs(noskip)
    assert min(m.cost(s) for s in noskip.cheapest_candidates()) <= min(m.cost(s) for s in all_specs(noskip))


# ---- the network-level choice -----------------------------------------------------------------------

def test_an_edge_changes_the_graph_and_its_cost() -> None:
    space = net_space()
    base = {"data.colour": "y", "data.tile": "12", "width": "16", "blocks": "3", **_block(1, "conv3x3", "skip"),
            **_block(2, "conv3x3", "conv5x5", in0="no"), **_block(3, "sep3x3", "skip", in1="no")}
    off, on = space.spec({**base, "b3.in0": "no"}), space.spec({**base, "b3.in0": "yes"})
    torch.manual_seed(0)
    net = space.supernet()
    x = _x(off, 2)
    with torch.no_grad():
        y_off, y_on = net.extract(off).eval()(x), net.extract(on).eval()(x)
    assert not torch.allclose(y_off, y_on, atol=1e-4)  # the same weights, another graph
    l_off, l_on = space.layers(off), space.layers(on)
    assert "b3.fuse" not in [d.name for d in l_off]
    fuse = next(d for d in l_on if d.name == "b3.fuse")
    assert fuse.inputs == ("b2.add", "head")
    t = off.data.tile_in
    body = 16 * t * t
    # the fuse's one add per element, in every tile of the frame (cost.macs is per frame)
    assert cost.macs(space).cost(on) - cost.macs(space).cost(off) == body * off.data.tiles_per_frame
    # the head stays live through block 2: its second conv holds input, block input and head
    assert cost.peak_ram(space).cost(off) == 3 * body + t * t
    assert cost.peak_ram(space).cost(on) == 4 * body + t * t
    held = {d.name: d.held for d in l_on}
    assert held["b2.op1"] == t * t + 2 * body and {d.name: d.held for d in l_off}["b2.op1"] == t * t + body


# ---- the supernet ---------------------------------------------------------------------------------

def _supernet_specs(space: SRDLSRSpace) -> list[ArchSpec]:
    picked = [
        _spec(space, 1, **{"data.colour": "rgb", "blocks": "3"}, **_block(2, "skip", "skip", in0="yes"),
              **_block(3, "sep5x5", "dil3x3", in0="yes", in1="yes")),  # identity block aliased into a fuse
        _spec(space, 2, **{"data.colour": "y", "blocks": "3", "width": "8"}, **_block(1, "skip", "skip"),
              **_block(2, "skip", "skip"), **_block(3, "skip", "skip")),  # every block the identity
        _spec(space, 3, **{"data.colour": "y", "blocks": "2", "width": "8"}, **_block(1, "skip", "conv5x5"),
              **_block(2, "sep3x3", "skip", in0="yes")),
    ]
    return picked + random_specs(space, 6, seed=12)


@pytest.mark.parametrize("hard", [True, False], ids=["sampled", "relaxed"])
def test_supernet_at_one_hot_equals_the_extracted_network(hard: bool) -> None:
    space = net_space()
    torch.manual_seed(0)
    net = space.supernet()
    assert isinstance(net, SRDLSRSupernet)
    with torch.no_grad():  # non-zero biases everywhere, so a masked-off channel would show
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    specs = _supernet_specs(space)
    assert {s.data.colour for s in specs} == {"y", "rgb"}
    for spec in specs:
        d = space.data_configs().index(spec.data)
        x = _x(spec, 2)
        with torch.no_grad():
            got = net(x, d, space.one_hot(spec), hard)
            plain = net.extract(spec).eval()
            ref = plain(x)
            fresh = space.build(spec)
        assert [type(m) for m in fresh.modules()] == [type(m) for m in plain.modules()]
        assert got.shape == (2, *spec.data.output_shape)
        assert torch.allclose(got, ref, atol=1e-4), (space.describe(spec), (got - ref).abs().max())


def test_supernet_relaxed_gates_train_every_choice_and_ignore_the_tile() -> None:
    space = net_space()
    net = space.supernet()
    spec = _spec(space, 4, **{"data.tile": "8"})
    d = space.data_configs().index(spec.data)
    one_hot = space.one_hot(spec)
    gates = {p.name: (one_hot[p.name].clone() if p.sampled else torch.full((len(p.options),), 1 / len(p.options)))
             .requires_grad_() for p in space.choice_points()}
    out = net(_x(spec, 2), d, gates, False)
    F.l1_loss(out, torch.rand_like(out)).backward()
    for p in space.arch_points:
        assert gates[p.name].grad is not None and float(gates[p.name].grad.abs().sum()) > 0, p.name
    assert all(gates[p.name].grad is not None for p in space.data_points)
    with torch.no_grad():  # the tile is no weight: any input size runs
        assert net(_x(spec, 1, (17, 9)), d, one_hot, True).shape == (1, spec.data.channels, 34, 18)
    with pytest.raises(ValueError, match="channels"):
        net(torch.rand(1, 3, 8, 8), d, one_hot, True)


# ---- receptive radius and tiles -----------------------------------------------------------------------

def test_receptive_radius_is_exact() -> None:
    """Perturb one LR pixel: the outputs that change reach exactly receptive_radius LR pixels."""
    space = net_space()
    for spec in [_hand_space()[1], *_supernet_specs(space)[:3], *random_specs(space, 3, seed=21)]:
        sp = _hand_space()[0] if spec.data.tile == 16 else space
        torch.manual_seed(1)
        net = sp.build(spec).double().eval()
        s, r = spec.data.scale, sp.receptive_radius(spec)
        x = _x(spec, 1, (40, 40)).double()
        y = x.clone()
        y[0, :, 20, 20] += 1.0
        with torch.no_grad():
            diff = (net(x) - net(y)).abs().amax(dim=(0, 1))
        rows = torch.nonzero(diff.amax(1) > 1e-9).flatten() // s
        cols = torch.nonzero(diff.amax(0) > 1e-9).flatten() // s
        reach = int(max((rows - 20).abs().max(), (cols - 20).abs().max()))
        assert reach == r, (sp.describe(spec), reach, r)


def _tiled(net: nn.Module, frame: torch.Tensor, tile: int, overlap: int, s: int) -> torch.Tensor:
    """The task's tiling: the frame edge-padded by the overlap, every tile run on tile + 2·overlap
    pixels, its central tile·s outputs kept."""
    _, c, h, w = frame.shape
    padded = F.pad(frame, (overlap,) * 4, mode="replicate")
    out = torch.zeros(frame.shape[0], c, h * s, w * s, dtype=frame.dtype)
    for i, j in itertools.product(range(0, h, tile), range(0, w, tile)):
        y = net(padded[:, :, i:i + tile + 2 * overlap, j:j + tile + 2 * overlap])
        out[:, :, i * s:(i + tile) * s, j * s:(j + tile) * s] = \
            y[:, :, overlap * s:(overlap + tile) * s, overlap * s:(overlap + tile) * s]
    return out


def test_tiles_with_overlap_at_least_the_radius_are_seamless() -> None:
    space = net_space()
    spec = _spec(space, 6, **{"data.colour": "rgb", "blocks": "2", "width": "8"}, **_block(1, "conv3x3", "skip"),
                 **_block(2, "dil3x3", "sep3x3", in0="yes"))
    r = space.receptive_radius(spec)
    assert r == 2 + 1 + 2 + 1
    torch.manual_seed(2)
    net = space.build(spec).double().eval()
    s, tile = spec.data.scale, 8
    frame = _x(spec, 1, (16, 24)).double()
    with torch.no_grad():
        for overlap in (r, r + 3, r - 1):
            whole = net(F.pad(frame, (overlap,) * 4, mode="replicate"))[:, :, overlap * s:-overlap * s,
                                                                        overlap * s:-overlap * s]
            tiled = _tiled(net, frame, tile, overlap, s)
            same = torch.allclose(tiled, whole, atol=1e-10)
            assert same == (overlap >= r), (overlap, r, (tiled - whole).abs().max())
