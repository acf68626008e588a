"""The ts-tcn space by hand (the generic contract tests in test_spaces.py run on it too, being
parametrized over every registered space): shapes and the residual graph, data choice points,
causality, exact expected costs, cheapest candidates, supernet ↔ plain network, config plumbing
and int8 exports (TFLite without TRANSPOSE or SPACE_TO_BATCH_ND, ONNX; peak RAM against the file)."""

from __future__ import annotations

import importlib.util
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgenas import config as C
from edgenas import cost
from edgenas.errors import ConfigError
from edgenas.layers import GraphNet
from edgenas.spaces import SPACES, build, get_space
from edgenas.spaces.ts_tcn import TSTCNSpace, TSTCNSpaceConfig, TSTCNSupernet
from edgenas.spec import ArchSpec, LayerDesc, with_liveness
from edgenas.tasks.timeseries import TSConfig

from dscnn_toy import randomize_bn
from edgenas_toys import all_specs, random_specs

NUM_CLASSES = 5
# 2 data options (24 and 8 steps), both paddings, 2 blocks of every kind of choice: 16384 specs
SMALL = TSTCNSpaceConfig(factors=("1", "1/4"), norms=("series",), stem_kernels=(3,), stem_strides=(1, 2),
                         widths=(8, 16), n_blocks=2, kernels=(3, 5), dilations=(1, 2), causal=("no", "yes"))
# for the supernet: every option kind at least twice, causal searched
NET = TSTCNSpaceConfig(factors=("1", "1/2"), norms=("series", "none"), stem_kernels=(3, 5), stem_strides=(1, 2),
                       widths=(8, 16, 24), n_blocks=3, kernels=(3, 5), dilations=(1, 4), causal=("no", "yes"))


def small(**overrides: object) -> TSTCNSpace:
    return TSTCNSpace(NUM_CLASSES, replace(SMALL, **overrides), dims=2, length=24)


def net_space() -> TSTCNSpace:
    return TSTCNSpace(NUM_CLASSES, NET, dims=3, length=40)


def _input(spec: ArchSpec, n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, *spec.data.input_shape, generator=torch.Generator().manual_seed(seed))


def _spec(space: TSTCNSpace, seed: int = 11, **choices: str) -> ArchSpec:
    sel = space.selection(random_specs(space, 1, seed=seed)[0])
    sel.update(choices)
    return space.spec(sel)


def _block(i: int, depth: str = "run", kernel: str = "3", dilation: str = "1", width: str = "8",
           residual: str = "no") -> dict[str, str]:
    return {f"block{i}.depth": depth, f"block{i}.kernel": kernel, f"block{i}.dilation": dilation,
            f"block{i}.width": width, f"block{i}.residual": residual}


def test_registered_with_defaults() -> None:
    assert "ts-tcn" in SPACES
    space = get_space("ts-tcn", num_classes=3)
    assert isinstance(space, TSTCNSpace) and space.task == "timeseries" and space.version == 1
    assert [p.name for p in space.data_points] == ["data.length", "data.norm"]
    assert space.point("data.length").options == ("1", "1/2", "1/4")
    assert space.point("causal").options == ("no",)  # one option: fixed, but every spec says so
    assert space.point("stem.stride").sampled and not space.point("stem.kernel").sampled
    assert [p.name for p in space.arch_points if p.name.startswith("block0.")] == [
        "block0.depth", "block0.kernel", "block0.dilation", "block0.width", "block0.residual"]
    assert sum(1 for p in space.arch_points if p.name.endswith(".depth")) == 4
    assert {d.input_length for d in space.data_configs()} == {128, 64, 32}
    assert len(space.data_configs()) == 9


def test_layers_by_hand() -> None:
    space = TSTCNSpace(4, TSTCNSpaceConfig(n_blocks=4, causal=("no", "yes")), dims=3, length=150)
    sel = {"data.length": "1/2", "data.norm": "series", "causal": "no", "stem.kernel": "5", "stem.stride": "2",
           "stem.width": "16", **_block(0, kernel="3", dilation="2", width="16", residual="yes"),
           **_block(1, depth="skip", width="32", residual="yes"),
           **_block(2, kernel="9", dilation="8", width="32", residual="yes"),
           **_block(3, kernel="5", dilation="1", width="8", residual="no")}
    spec = space.spec(sel)
    layers = space.layers(spec)
    assert [d.name for d in layers] == ["stem", "block0.conv", "block0.add", "block2.conv", "block2.proj",
                                        "block2.add", "block3.conv", "pool", "fc"]
    stem, c0, a0, c2, p2, a2, c3, pool, fc = layers
    assert spec.data.input_length == 75
    assert stem.in_shape == (3, 75, 1) and stem.out_shape == (16, 38, 1)
    assert stem.kernel == (5, 1) and stem.stride == (2, 1) and stem.pad == (2, 2, 0, 0)  # TF SAME: total 4
    assert c0.in_shape == (16, 38, 1) and c0.out_shape == (16, 38, 1) and c0.dilation == (2, 1)
    assert c0.pad == (2, 2, 0, 0) and c0.pad_is_same and c0.activation == "relu"
    assert a0.kind == "add" and a0.inputs == ("block0.conv", "stem") and a0.activation is None
    assert c2.in_shape == (16, 38, 1) and c2.out_shape == (32, 38, 1) and c2.pad == (32, 32, 0, 0)
    assert p2.kernel == (1, 1) and p2.inputs == ("block0.add",) and p2.activation is None
    assert p2.in_shape == (16, 38, 1) and p2.out_shape == (32, 38, 1) and p2.held == 32 * 38
    assert a2.inputs == ("block2.conv", "block2.proj") and a2.out_shape == (32, 38, 1)
    assert c3.inputs == () and c3.in_shape == (32, 38, 1) and c3.out_shape == (8, 38, 1)  # reads block2.add
    assert pool.in_shape == (8, 38, 1) and fc.in_shape == (8, 1, 1) and fc.out_shape == (4, 1, 1)
    assert layers == with_liveness(layers)  # held as the liveness analysis computes it
    assert c2.macs == 32 * 38 * 16 * 9 and a2.macs == 32 * 38
    assert cost.params(space).cost(spec) == sum(d.params for d in layers)
    assert space.describe(spec) == "L=75 (1/2), series norm | stem k5/s2→16 | k3d2→16+res | skip | k9d8→32+res | k5d1→8"
    # causal: everything before (the stem at stride 2 too), the same lengths
    causal = space.spec(dict(sel, causal="yes"))
    cl = {d.name: d for d in space.layers(causal)}
    assert cl["stem"].pad == (4, 0, 0, 0) and cl["stem"].out_shape == (16, 38, 1)
    assert cl["block0.conv"].pad == (4, 0, 0, 0) and cl["block2.conv"].pad == (64, 0, 0, 0)
    assert not cl["block0.conv"].pad_is_same and cl["block3.conv"].pad == (4, 0, 0, 0)
    assert space.describe(causal).split(" | ")[1] == "stem k5/s2→16 causal"


def _producers(layers: list[LayerDesc]) -> list[list[tuple[int, ...]]]:
    """The shapes each layer reads (the network input as "")."""
    shapes = {"": layers[0].in_shape}
    out = []
    for i, d in enumerate(layers):
        srcs = d.inputs or ((layers[i - 1].name,) if i else ("",))
        out.append([shapes[n] for n in srcs])
        shapes[d.name] = d.out_shape
    return out


@pytest.mark.parametrize("equal_length", [True, False])
def test_layer_shapes_are_consistent(equal_length: bool) -> None:
    space = TSTCNSpace(NUM_CLASSES, TSTCNSpaceConfig(causal=("no", "yes")), dims=2, length=50,
                       equal_length=equal_length)
    rng = random.Random(0)
    for data in space.data_configs():
        sel = space.selection(space.sample(rng))
        sel.update(space.data_labels(data))
        spec = space.spec(sel)
        layers = space.layers(spec)
        assert layers[0].in_shape == (2, data.input_length, 1)
        body_len = layers[0].out_shape[1]
        assert body_len == -(-data.input_length // int(spec.choices["stem.stride"]))
        for d, ins in zip(layers, _producers(layers)):
            if d.kind == "add":
                assert ins == [d.in_shape, d.in_shape] and d.out_shape == d.in_shape, d.name
            else:
                assert ins == [d.in_shape], d.name
            if d.kind in ("conv2d", "add"):
                assert d.out_shape[1:] == (body_len, 1) or d.name == "stem"
        assert layers[-2].in_shape[1:] == (body_len, 1)
        assert layers == with_liveness(layers)
        model = space.build(spec).eval()
        assert isinstance(model, GraphNet)
        with torch.no_grad():
            out = model(_input(spec, 3))
        assert out.shape == (3, NUM_CLASSES) and torch.isfinite(out).all()


def test_module_level_build_follows_the_spec_alone() -> None:
    """``edgenas.spaces.build(spec)`` builds the default space: the network still follows the
    spec's data configuration (dims, length) and its own block count."""
    space = TSTCNSpace(NUM_CLASSES, replace(NET, n_blocks=2), dims=3, length=40)
    spec = random_specs(space, 1, seed=3)[0]
    torch.manual_seed(0)
    a = space.build(spec).state_dict()
    torch.manual_seed(0)
    b = build(spec).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert ArchSpec.from_json(spec.to_json()) == spec
    assert space.selection(ArchSpec.from_json(spec.to_json())) == space.selection(spec)


# ---- data choice points ----------------------------------------------------------------------

def test_padding_is_a_choice_point_only_for_variable_length_data() -> None:
    fixed = TSTCNSpace(NUM_CLASSES, dims=2, length=60, equal_length=True)
    assert "data.padding" not in [p.name for p in fixed.data_points]
    assert {d.padding for d in fixed.data_configs()} == {"zero"}
    var = TSTCNSpace(NUM_CLASSES, dims=2, length=60, equal_length=False)
    assert var.point("data.padding").options == ("zero", "edge", "resample") and var.point("data.padding").sampled
    assert len(var.data_configs()) == 27 and {d.padding for d in var.data_configs()} == {"zero", "edge", "resample"}
    for i, d in enumerate(var.data_configs()):
        assert var.data_index(var.data_labels(d)) == i and var.data_config(var.data_labels(d)) == d
    edge = TSConfig(dims=2, length=60, factor="1/2", norm="none", padding="edge")
    assert var.data_labels(edge) == {"data.length": "1/2", "data.norm": "none", "data.padding": "edge"}
    with pytest.raises(ConfigError, match="equal lengths"):
        fixed.data_labels(edge)
    with pytest.raises(ConfigError, match="this space for 2 × 60"):
        fixed.data_labels(TSConfig(dims=2, length=61))
    with pytest.raises(ConfigError, match="this space for 2 × 60"):
        fixed.data_labels(TSConfig(dims=1, length=60))
    restricted = TSTCNSpace(NUM_CLASSES, TSTCNSpaceConfig(paddings=("edge",)), length=60, equal_length=False)
    assert {d.padding for d in restricted.data_configs()} == {"edge"}


def test_short_series_share_input_lengths_but_not_data_configurations() -> None:
    """ItalyPowerDemand (24 steps): ½ → 12, ¼ → 8 (the front end's minimum); an 8-step series
    stays 8 under every factor. The data configurations stay distinct, the space works."""
    italy = TSTCNSpace(NUM_CLASSES, dims=1, length=24)
    assert [d.input_length for d in italy.data_configs()[::3]] == [24, 12, 8]
    tiny = TSTCNSpace(NUM_CLASSES, TSTCNSpaceConfig(norms=("series",)), dims=1, length=8)
    datas = tiny.data_configs()
    assert {d.input_length for d in datas} == {8} and len({d.key() for d in datas}) == 3
    probs = {p.name: torch.full((len(p.options),), 1 / len(p.options)) for p in tiny.choice_points()}
    assert float(cost.macs(tiny).expected_cost(probs)) > 0
    for spec in random_specs(tiny, 5, seed=1):
        assert float(cost.macs(tiny).expected_cost(tiny.one_hot(spec))) == pytest.approx(cost.macs(tiny).cost(spec))
        with torch.no_grad():
            assert tiny.build(spec).eval()(_input(spec)).shape == (2, NUM_CLASSES)


# ---- causality ------------------------------------------------------------------------------

def _graph_outputs(net: GraphNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every layer's output of a GraphNet (as its forward computes them)."""
    outs: list[torch.Tensor] = []
    for i, (d, layer) in enumerate(zip(net.descs, net.layers)):
        args = [x if j < 0 else outs[j] for j in net.sources[i]]
        outs.append(sum(args[1:], args[0]) if d.kind == "add" else layer(args[0]))
    return dict(zip(net.names, outs))


@pytest.mark.parametrize("stride", ["1", "2"])
def test_causal_networks_do_not_look_ahead(stride: str) -> None:
    space = TSTCNSpace(NUM_CLASSES, TSTCNSpaceConfig(n_blocks=3, causal=("no", "yes")), dims=2, length=48)
    sel = {"data.length": "1", "data.norm": "series", "causal": "yes", "stem.kernel": "5", "stem.stride": stride,
           "stem.width": "8", **_block(0, kernel="3", dilation="4", width="16", residual="yes"),
           **_block(1, kernel="9", dilation="2", width="16", residual="yes"),
           **_block(2, kernel="5", dilation="8", width="8", residual="no")}
    t0, s = 29, int(stride)  # inputs after t0 change; output j reads inputs ≤ j·s
    x = _input(space.spec(sel), 2)
    y = x.clone()
    y[:, :, t0 + 1:] += torch.randn_like(y[:, :, t0 + 1:])
    for causal in ("yes", "no"):
        spec = space.spec(dict(sel, causal=causal))
        torch.manual_seed(0)
        net = randomize_bn(space.build(spec))
        with torch.no_grad():
            a, b = _graph_outputs(net, x), _graph_outputs(net, y)
        names = [d.name for d in net.descs if d.kind in ("conv2d", "add")]
        assert "block0.add" in names and "block1.add" in names
        for n in names:
            past = slice(0, t0 // s + 1)
            same = torch.allclose(a[n][:, :, past], b[n][:, :, past], atol=1e-6)
            assert same == (causal == "yes"), (causal, n)  # a SAME network does look ahead
            assert not torch.allclose(a[n], b[n], atol=1e-4)  # the future does reach the later outputs


# ---- expected costs -------------------------------------------------------------------------

def _weights(space: TSTCNSpace, specs: list[ArchSpec], probs: dict[str, torch.Tensor]) -> list[float]:
    idx = {p.name: {o: j for j, o in enumerate(p.options)} for p in space.choice_points()}
    out = []
    for s in specs:
        w = 1.0
        for k, v in space.selection(s).items():
            w *= float(probs[k][idx[k][v]])
        out.append(w)
    return out


def test_expected_cost_equals_brute_force_under_random_probs() -> None:
    """Every slot's expectation (the Markov-chain contraction) equals the probability-weighted
    average over all 16384 specs of the small space, for sum costs and the per-slot RAM."""
    space = small()
    g = torch.Generator().manual_seed(0)
    probs = {p.name: torch.softmax(torch.randn(len(p.options), generator=g) * 2, 0) for p in space.choice_points()}
    specs = list(all_specs(space))
    assert len(specs) == 16384
    weights = _weights(space, specs, probs)
    assert sum(weights) == pytest.approx(1.0, rel=1e-5)
    layer_lists = [space.layers(s) for s in specs]
    names = space.slot_names()
    for model_fn in (cost.macs, cost.params, cost.flash, cost.peak_ram):
        m = model_fn(space)
        brute = np.zeros(len(names))
        for w, layers in zip(weights, layer_lists):
            for d in layers:
                brute[names.index(d.name)] += w * m.layer_fn(d)
        slots = space.expected_layer_costs(probs, m.layer_fn)
        assert slots.shape == (len(names),)
        assert np.allclose(slots.numpy(), brute, rtol=1e-4), (m.name, slots, brute)
        if m.aggregate == "sum":
            assert float(m.expected_cost(probs)) == pytest.approx(float(brute.sum()), rel=1e-4)
    ram = cost.peak_ram(space)  # max-aggregated: the max of the expected slots is a lower bound of E[max]
    e_max = sum(w * max(ram.layer_fn(d) for d in layers) for w, layers in zip(weights, layer_lists))
    assert float(ram.expected_cost(probs)) <= e_max * (1 + 1e-5)


@pytest.mark.parametrize("model_fn", [cost.macs, cost.params, cost.flash, cost.peak_ram])
def test_expected_cost_at_one_hot_equals_cost(model_fn) -> None:
    space = TSTCNSpace(NUM_CLASSES, TSTCNSpaceConfig(causal=("no", "yes")), dims=3, length=90, equal_length=False)
    m = model_fn(space)
    for spec in random_specs(space, 12, seed=5) + list(space.cheapest_candidates())[:2]:
        assert float(m.expected_cost(space.one_hot(spec))) == pytest.approx(m.cost(spec), rel=1e-5), \
            space.describe(spec)


def test_expected_cost_gradients_reach_the_choices_that_change_it() -> None:
    space = small(norms=("series", "none"))
    logits = {p.name: torch.zeros(len(p.options), requires_grad=True) for p in space.choice_points()}
    probs = {k: torch.softmax(v, 0) for k, v in logits.items()}
    cost.macs(space).expected_cost(probs).backward()
    grads = {k: float(v.grad.abs().sum()) for k, v in logits.items() if len(v) > 1}
    # the normalisation and the dilation (SAME or causal, the taps are the same) do not change MACs
    zero = {"data.norm", "block0.dilation", "block1.dilation", "causal"}
    assert all(grads[k] > 0 for k in grads if k not in zero), grads
    assert all(grads[k] < 1e-3 for k in zero), grads


def test_no_residual_option_prices_no_projection() -> None:
    space = small(residuals=("no",))
    seen = []

    def record(d: LayerDesc) -> float:
        seen.append(d.name)
        return float(d.macs)

    probs = {p.name: torch.full((len(p.options),), 1 / len(p.options)) for p in space.choice_points()}
    slots = space.expected_layer_costs(probs, record)
    assert not any(n.endswith((".proj", ".add")) for n in seen)
    names = space.slot_names()
    assert float(slots[names.index("block0.proj")]) == 0 and float(slots[names.index("block1.add")]) == 0
    assert not any(d.kind == "add" for d in space.all_layers())


# ---- latency tables and feasibility -----------------------------------------------------------

def test_all_layers_cover_every_spec_of_the_small_space() -> None:
    space = small()
    listed = list(space.all_layers())
    keys = {d.key() for d in listed}
    assert len(listed) == len(keys)
    missing = {d.name for s in all_specs(space) for d in space.layers(s) if d.key() not in keys}
    assert not missing
    assert any(d.dilation == (2, 1) for d in listed) and any(d.kind == "add" for d in listed)


def test_all_layers_cover_random_specs_of_the_default_variable_length_space() -> None:
    space = TSTCNSpace(NUM_CLASSES, TSTCNSpaceConfig(causal=("no", "yes")), dims=2, length=70, equal_length=False)
    keys = {d.key() for d in space.all_layers()}
    for spec in random_specs(space, 200, seed=7):
        assert all(d.key() in keys for d in space.layers(spec)), space.describe(spec)


def test_cheapest_candidates_are_the_cheapest_specs() -> None:
    space = small()
    cands = list(space.cheapest_candidates())
    assert len(cands) == 2 * 2 * 2 * 2  # data × causal × stem stride × stem width (one stem kernel)
    assert all(all(s.choices[f"block{i}.depth"] == "skip" for i in range(2)) for s in cands)
    assert {s.data.key() for s in cands} == {d.key() for d in space.data_configs()}
    specs = list(all_specs(space))
    for model_fn in (cost.macs, cost.params, cost.flash, cost.peak_ram):
        m = model_fn(space)
        assert min(m.cost(s) for s in cands) <= min(m.cost(s) for s in specs), m.name
        for data in space.data_configs():  # per data configuration too (the pipeline asks that)
            best = min(m.cost(s) for s in cands if s.data == data)
            assert best <= min(m.cost(s) for s in specs if s.data == data), (m.name, data.key())


# ---- the supernet -----------------------------------------------------------------------------

def _supernet_specs(space: TSTCNSpace) -> list[ArchSpec]:
    picked = [
        # residual without (16→16) and with (16→24) projection, dilation 4, causal
        _spec(space, causal="yes", **{"stem.width": "16"}, **_block(0, kernel="5", dilation="4", width="16",
                                                                      residual="yes"),
              **_block(1, kernel="3", dilation="1", width="24", residual="yes"), **_block(2, depth="skip")),
        # skipped first block, then a residual block with a projection from the stem's width
        _spec(space, causal="no", **{"stem.width": "8", "stem.kernel": "5"}, **_block(0, depth="skip", width="24"),
              **_block(1, kernel="5", dilation="4", width="16", residual="yes"),
              **_block(2, kernel="3", dilation="4", width="16", residual="yes")),
        # a skip between running blocks, no residual
        _spec(space, causal="yes", **_block(0, kernel="3", dilation="4", width="24"), **_block(1, depth="skip"),
              **_block(2, kernel="5", dilation="1", width="8", residual="yes")),
        # every block skipped
        _spec(space, **_block(0, depth="skip"), **_block(1, depth="skip"), **_block(2, depth="skip")),
    ]
    return picked + random_specs(space, 6, seed=12)


@pytest.mark.parametrize("hard", [True, False], ids=["sampled", "relaxed"])
def test_supernet_at_one_hot_equals_extracted_network(hard: bool) -> None:
    """Under a one-hot selection, sampled (single path) or relaxed (mixture with zero weights), the
    supernet computes exactly the plain network of the spec carrying the supernet's weights."""
    space = net_space()
    torch.manual_seed(0)
    net = randomize_bn(space.supernet(), seed=1)
    assert isinstance(net, TSTCNSupernet)
    specs = _supernet_specs(space)
    assert {s.choices["causal"] for s in specs} == {"no", "yes"}
    for spec in specs:
        d = space.data_configs().index(spec.data)
        x = _input(spec, 3)
        with torch.no_grad():
            got = net(x, d, space.one_hot(spec), hard)
            plain = net.extract(spec, compact=hard).eval()
            ref = plain(x)
        assert isinstance(plain, GraphNet)
        assert got.shape == (3, NUM_CLASSES)
        assert torch.allclose(got, ref, atol=1e-4), (space.describe(spec), (got - ref).abs().max())


def test_supernet_compacts_skipped_blocks_in_hard_mode() -> None:
    space = net_space()
    net = randomize_bn(space.supernet())
    block = _block(0, kernel="5", dilation="4", width="16", residual="yes")
    late = _spec(space, **_block(0, depth="skip"), **{k.replace("block0", "block1"): v for k, v in block.items()},
                 **_block(2, depth="skip"))
    early = _spec(space, **block, **_block(1, depth="skip"), **_block(2, depth="skip"))
    d = space.data_configs().index(late.data)
    x = _input(late)
    with torch.no_grad():
        y_late, y_early = (net(x, d, space.one_hot(s), True) for s in (late, early))
        z_late = net(x, d, space.one_hot(late), False)
    assert torch.allclose(y_late, y_early, atol=1e-6)  # both run one block, on slot 0
    assert not torch.allclose(z_late, y_late, atol=1e-4)  # relaxed: block1 runs on slot 1


def test_supernet_shares_one_kernel_per_slot() -> None:
    """Smaller kernels are centred slices of the slot's largest; dilation reuses the same taps."""
    space = net_space()
    net = randomize_bn(space.supernet())
    base = dict(**_block(0, kernel="3", dilation="1", width="8"), **_block(1, depth="skip"), **_block(2, depth="skip"))
    s3 = _spec(space, **base)
    s5 = _spec(space, **dict(base, **{"block0.kernel": "5"}))
    d = space.data_configs().index(s3.data)
    x = _input(s3, 3)

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return net(x, d, space.one_hot(s3), True), net(x, d, space.one_hot(s5), True)

    w = net.conv[0].weight
    assert tuple(w.shape) == (24, 24, 5, 1) and len(net.conv) == 3 and len(net.proj) == 3
    y3, y5 = run()
    with torch.no_grad():
        w[:, :, 0] += 0.5  # outside the centred 3 taps: only the 5-tap kernel sees it
    r3, r5 = run()
    assert torch.allclose(r3, y3, atol=1e-6) and not torch.allclose(r5, y5, atol=1e-4)


def test_supernet_relaxed_gates_train_every_relaxed_choice() -> None:
    space = net_space()
    net = space.supernet()
    spec = random_specs(space, 1, seed=4)[0]
    d = space.data_configs().index(spec.data)
    one_hot = space.one_hot(spec)
    gates = {p.name: (one_hot[p.name].clone() if p.sampled else torch.full((len(p.options),), 1 / len(p.options)))
             .requires_grad_() for p in space.choice_points()}
    out = net(_input(spec, 4), d, gates, False)
    torch.nn.functional.cross_entropy(out, torch.arange(4) % NUM_CLASSES).backward()
    for p in space.choice_points():
        if len(p.options) > 1:
            assert gates[p.name].grad is not None and float(gates[p.name].grad.abs().sum()) > 0, p.name
    with pytest.raises(ValueError, match="do not match data option"):
        net(torch.randn(1, 3, 17, 1), d, one_hot, True)
    with pytest.raises(ValueError, match="channels"):
        net(torch.randn(1, 2, *spec.data.feature_shape), d, one_hot, True)


# ---- config ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "cfg, fragment",
    [
        (replace(SMALL, factors=("1", "1/3")), "space.factors options must be among"),
        (replace(SMALL, norms=("zscore",)), "space.norms options must be among"),
        (replace(SMALL, paddings=("mirror",)), "space.paddings options must be among"),
        (replace(SMALL, causal=("maybe",)), "space.causal options must be among"),
        (replace(SMALL, residuals=()), "at least one option"),
        (replace(SMALL, widths=(8, 8)), "duplicate options"),
        (replace(SMALL, dilations=(0, 2)), "must be positive"),
        (replace(SMALL, n_blocks=-1), "n_blocks must be ≥ 0"),
    ],
)
def test_config_errors(cfg: TSTCNSpaceConfig, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        TSTCNSpace(NUM_CLASSES, cfg, length=24, equal_length=False)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ConfigError, match="positive dims and length"):
        TSTCNSpace(NUM_CLASSES, dims=0)
    with pytest.raises(ConfigError, match="takes a TSTCNSpaceConfig"):
        TSTCNSpace(NUM_CLASSES, C.RunConfig().space)


def test_config_space_section_for_the_timeseries_task() -> None:
    cfg = C.resolve(sets=["space.widths=8,16", "task=timeseries", "space.causal=no,yes", "space.factors=1,1/2",
                          "space.n_blocks=2", "space.dilations=[1, 4]"])
    assert cfg.space_name == "ts-tcn" and isinstance(cfg.space, TSTCNSpaceConfig)
    assert cfg.space.widths == (8, 16) and cfg.space.causal == ("no", "yes") and cfg.space.factors == ("1", "1/2")
    assert cfg.space.dilations == (1, 4) and cfg.space.kernels == TSTCNSpaceConfig().kernels
    assert C.from_dict(C.to_dict(cfg)) == cfg
    space = get_space(cfg.space_name, num_classes=3, config=cfg.space, dims=2, length=30, equal_length=False)
    assert space.point("causal").options == ("no", "yes") and space.point("block1.dilation").options == ("1", "4")
    with pytest.raises(ConfigError, match="did you mean dilations"):
        C.resolve(sets=["task=timeseries", "space.dilation=2"])


# ---- exports --------------------------------------------------------------------------------

def _export_spec(causal: str) -> tuple[TSTCNSpace, ArchSpec]:
    space = TSTCNSpace(4, TSTCNSpaceConfig(causal=("no", "yes")), dims=3, length=64)
    spec = space.spec({"data.length": "1", "data.norm": "series", "causal": causal, "stem.kernel": "5",
                       "stem.stride": "2", "stem.width": "16",
                       **_block(0, kernel="3", dilation="2", width="16", residual="yes"),  # add, no projection
                       **_block(1, kernel="5", dilation="4", width="24", residual="yes"),  # projection and add
                       **_block(2, depth="skip"),
                       **_block(3, kernel="9", dilation="8", width="8", residual="no")})
    return space, spec


def _has_tflite() -> bool:
    return importlib.util.find_spec("tensorflow") is not None and importlib.util.find_spec("ai_edge_litert") is not None


@pytest.mark.parametrize("causal", ["no", "yes"])
def test_int8_tflite_export_is_dilated_conv_without_transpose_and_its_peak_ram_is_modelled(
        causal: str, tmp_path: Path) -> None:
    """Dilated convs stay single CONV_2Ds (no SPACE_TO_BATCH_ND/BATCH_TO_SPACE_ND around them, no
    TRANSPOSE), residual adds are integer ADDs, causal padding is an explicit PAD; the liveness RAM
    model gives the peak of the exported file's tensors, in bytes."""
    if not _has_tflite():
        pytest.skip("needs the tflite extra")
    from edgenas.export.tflite_export import export_tflite, run_tflite, verify_tflite

    space, spec = _export_spec(causal)
    torch.manual_seed(0)
    model = randomize_bn(space.build(spec))
    shape = (1, *spec.data.input_shape)
    x = np.random.default_rng(0).standard_normal((32, *shape[1:])).astype(np.float32)
    path = export_tflite(model, shape, tmp_path / "m.int8.tflite", quant="int8", calibration=x)
    r = verify_tflite(path)
    assert r["transpose_ops"] == 0 and "TRANSPOSE" not in r["ops"]
    assert not {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"} & set(r["ops"]), r["ops"]
    assert r["fully_int8"] and r["int8_io"], r
    assert r["op_counts"]["CONV_2D"] == 5 and r["op_counts"]["ADD"] == 2 and r["op_counts"]["MEAN"] == 1
    assert r["op_counts"].get("PAD", 0) == (4 if causal == "yes" else 0)  # stem and the three block convs
    assert r["inputs"][0]["shape"] == [1, 64, 1, 3]
    assert r["peak_activation_bytes"] == cost.peak_ram(space).cost(spec), space.describe(spec)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    q = run_tflite(path, x)
    assert q.shape == ref.shape and np.abs(q - ref).max() < 0.1 * np.abs(ref).max()


def test_int8_onnx_export(tmp_path: Path) -> None:
    import onnx

    from edgenas.export.onnx_export import check_parity, export_onnx_fp32, quantize_int8, run_onnx

    space, spec = _export_spec("no")
    torch.manual_seed(0)
    model = randomize_bn(space.build(spec))
    shape = (1, *spec.data.input_shape)
    x = np.random.default_rng(0).standard_normal((32, *shape[1:])).astype(np.float32)
    fp32 = export_onnx_fp32(model, shape, tmp_path / "m.fp32.onnx")
    assert check_parity(model, fp32, x) <= 1e-4
    int8 = quantize_int8(fp32, tmp_path / "m.int8.onnx", x)
    nodes = onnx.load(str(int8)).graph.node
    ops = [n.op_type for n in nodes]
    assert "Transpose" not in ops and ops.count("Add") >= 2 and ops.count("Conv") == 5
    dilations = sorted(next((list(a.ints) for a in n.attribute if a.name == "dilations"), [1, 1])[0]
                       for n in nodes if n.op_type == "Conv")
    assert dilations == [1, 1, 2, 4, 8]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    q = run_onnx(int8, x)
    assert q.shape == ref.shape and np.abs(q - ref).max() < 0.1 * np.abs(ref).max()


def test_extracted_network_traces_for_export() -> None:
    """The extracted network is the plain GraphNet (BatchNorm inside each conv's Sequential), so it
    traces with torch.fx as the TFLite route needs."""
    space = net_space()
    net = randomize_bn(space.supernet())
    spec = _supernet_specs(space)[0]
    plain = net.extract(spec).eval()
    assert sum(isinstance(m, nn.BatchNorm2d) for m in plain.modules()) == \
        sum(1 for d in space.layers(spec) if d.kind == "conv2d")
    x = _input(spec)
    with torch.no_grad():
        assert torch.allclose(torch.fx.symbolic_trace(plain)(x), plain(x), atol=1e-6)
