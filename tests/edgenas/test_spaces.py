"""Search spaces. The first half is parametrized over every registered space (so a new space is
tested as soon as it is registered); the second half checks the KWS DS-CNN space by hand."""

from __future__ import annotations


import pytest
import torch
from torch import nn

from edgenas import cost
from edgenas.errors import ConfigError
from edgenas.spaces import SPACES, build, get_space
from edgenas.spaces.base import SearchSpace
from edgenas.spaces.kws_dscnn import KWSDSCNNSpace, KWSSpaceConfig, same_pad
from edgenas.spec import ArchSpec, DataConfig
from edgenas.tasks import TASKS, get_task

from edgenas_toys import all_specs, random_specs, tiny_space, tiny_tcn_space

NUM_CLASSES = 5
# every registered space whose task is registered: the contract takes the example input and the
# output shape from the task (sr-dlsr, registered when its own test module is imported, joins
# once the sr task exists; until then tests/edgenas/test_space_sr_dlsr.py covers it)
ALL_SPACES = [n for n in SPACES.names() if SPACES.get(n).task in TASKS.names()]


@pytest.fixture(params=ALL_SPACES, scope="module")
def space(request: pytest.FixtureRequest) -> SearchSpace:
    return get_space(request.param, num_classes=NUM_CLASSES)


def _with_data(space: SearchSpace, spec: ArchSpec, data: DataConfig) -> ArchSpec:
    sel = space.selection(spec)
    sel.update(space.data_labels(data))
    return space.spec(sel)


def _specs_for_every_data_option(space: SearchSpace, seed: int = 0) -> list[ArchSpec]:
    specs = random_specs(space, len(space.data_configs()), seed)
    return [_with_data(space, s, d) for s, d in zip(specs, space.data_configs())]


def _input(spec: ArchSpec, n: int = 2) -> torch.Tensor:
    """``n`` real model inputs of the spec's task (its front end of random raw inputs)."""
    return torch.from_numpy(get_task(spec.task).example_input(spec.data, n=n, seed=1))


def _target(spec: ArchSpec, n: int = 2) -> torch.Tensor:
    """``n`` targets of the spec's task (class labels, or HR images for super-resolution)."""
    return torch.from_numpy(get_task(spec.task).example_target(spec.data, n=n, seed=1))


def _out_shape(spec: ArchSpec, n: int) -> tuple[int, ...]:
    """The model output shape the task expects: logits, or an image of its targets' shape."""
    y = _target(spec, n)
    return tuple(y.shape) if y.ndim > 1 else (n, NUM_CLASSES)


def test_registry_is_not_empty() -> None:
    assert "kws-dscnn" in ALL_SPACES


# ---- the contract, for every registered space ------------------------------------------------

def test_choice_points_are_named_and_typed(space: SearchSpace) -> None:
    names = [p.name for p in space.choice_points()]
    assert len(names) == len(set(names))
    assert space.data_points and space.arch_points
    assert all(p.kind == "data" and p.sampled for p in space.data_points)
    assert all(p.kind == "arch" for p in space.arch_points)
    assert all(len(p.options) >= 1 and len(set(p.options)) == len(p.options) for p in space.choice_points())
    assert len(space.data_configs()) == len({d.key() for d in space.data_configs()})
    for i, d in enumerate(space.data_configs()):
        assert space.data_index(space.data_labels(d)) == i


def test_build_is_deterministic_under_a_seed(space: SearchSpace) -> None:
    for spec in random_specs(space, 3, seed=1):
        torch.manual_seed(123)
        a = space.build(spec).state_dict()
        torch.manual_seed(123)
        b = build(spec).state_dict()  # the module-level builder, from the spec alone
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
        torch.manual_seed(124)
        c = space.build(spec).state_dict()
        assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point() and a[k].numel() > 1)


def test_output_shape_for_every_data_option(space: SearchSpace) -> None:
    specs = _specs_for_every_data_option(space) + random_specs(space, 4, seed=2)
    seen = set()
    for spec in specs:
        model = space.build(spec).eval()
        with torch.no_grad():
            out = model(_input(spec, 3))
        assert out.shape == _out_shape(spec, 3)
        assert torch.isfinite(out).all()
        seen.add(spec.data.key())
    assert seen == {d.key() for d in space.data_configs()}


def test_layers_agree_with_the_real_module(space: SearchSpace) -> None:
    for spec in _specs_for_every_data_option(space, seed=3)[:4] + random_specs(space, 6, seed=4):
        model = space.build(spec).eval()
        calls: list[tuple[nn.Module, tuple, tuple]] = []
        hooks = [m.register_forward_hook(lambda m, i, o: calls.append((m, tuple(i[0].shape[1:]), tuple(o.shape[1:]))))
                 for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        with torch.no_grad():
            model(_input(spec, 1))
        for h in hooks:
            h.remove()
        descs = [d for d in space.layers(spec) if d.kind in ("conv2d", "linear")]
        assert len(calls) == len(descs), space.describe(spec)
        for (mod, in_shape, out_shape), d in zip(calls, descs):
            if d.kind == "conv2d":
                assert isinstance(mod, nn.Conv2d)
                assert out_shape == d.out_shape, d.name
                assert in_shape[0] == d.in_shape[0]
                pt, pb, pl, pr = d.pad
                assert in_shape[1:] in (d.in_shape[1:], (d.in_shape[1] + pt + pb, d.in_shape[2] + pl + pr))
                assert (tuple(mod.kernel_size), tuple(mod.stride), mod.groups) == (d.kernel, d.stride, d.groups)
                assert mod.weight.numel() == d.weights
            else:
                assert isinstance(mod, nn.Linear)
                assert (mod.in_features, mod.out_features) == (d.in_shape[0], d.out_shape[0])
                assert out_shape == (d.out_shape[0],)


@pytest.mark.parametrize("model_fn", [cost.macs, cost.params, cost.flash, cost.peak_ram])
def test_expected_cost_under_one_hot_equals_exact_cost(space: SearchSpace, model_fn) -> None:
    m = model_fn(space)
    specs = random_specs(space, 8, seed=5) + list(space.cheapest_candidates())[:2]
    for spec in specs:
        exact = m.cost(spec)
        expected = float(m.expected_cost(space.one_hot(spec)))
        assert expected == pytest.approx(exact, rel=1e-5), (m.name, space.describe(spec))
    if m.aggregate == "sum":  # the per-slot sum equals the per-layer sum as well
        spec = specs[0]
        slots = space.expected_layer_costs(space.one_hot(spec), m.layer_fn)
        assert float(slots.sum()) == pytest.approx(sum(v for _, v in m.per_layer(spec)), rel=1e-5)


def test_expected_cost_is_differentiable(space: SearchSpace) -> None:
    g = torch.Generator().manual_seed(0)
    logits = {p.name: torch.randn(len(p.options), generator=g).requires_grad_() for p in space.choice_points()}
    for model_fn in (cost.macs, cost.peak_ram):
        for v in logits.values():
            v.grad = None
        probs = {k: torch.softmax(v, 0) for k, v in logits.items()}
        total = model_fn(space).expected_cost(probs)
        assert total.requires_grad
        total.backward()
        grads = [v.grad for v in logits.values() if len(v) > 1]
        assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
        assert sum(float(gr.abs().sum()) for gr in grads) > 0
    # MACs depend on every multi-option choice point of a DS-CNN-like space (width, op, stride, data …)
    for v in logits.values():
        v.grad = None
    probs = {k: torch.softmax(v, 0) for k, v in logits.items()}
    cost.macs(space).expected_cost(probs).backward()
    macs_grads = {k: float(v.grad.abs().sum()) for k, v in logits.items() if len(v) > 1}
    assert sum(1 for x in macs_grads.values() if x > 0) >= len(macs_grads) // 2
    if space.name == "kws-dscnn":
        # every arch point and every data point that changes the input features changes the MACs;
        # the sample rate does not (the MFCC input is frames x n_mfcc whatever the rate), so its
        # gradient is zero up to float32 rounding of the ~1e6-MAC terms
        datas = space.data_configs()  # the feature shape is a function of everything but the rate:
        assert len({(d.n_mfcc, d.win_ms, d.hop_ms, d.clip_ms, d.feature_shape) for d in datas}) \
            == len({(d.n_mfcc, d.win_ms, d.hop_ms, d.clip_ms) for d in datas})
        rate_free = {k: x for k, x in macs_grads.items() if k != "data.sample_rate"}
        assert rate_free and all(x > 0 for x in rate_free.values()), macs_grads
        if "data.sample_rate" in macs_grads:
            assert macs_grads["data.sample_rate"] <= 1e-5 * max(rate_free.values()), macs_grads


def test_spec_selection_round_trip(space: SearchSpace) -> None:
    for spec in random_specs(space, 20, seed=6):
        sel = space.selection(spec)
        assert set(sel) == {p.name for p in space.choice_points()}
        assert space.spec(sel) == spec
        assert space.selection(space.spec(sel)) == sel
        assert space.derive(space.one_hot(spec)) == spec
        assert ArchSpec.from_json(spec.to_json()) == spec
        space.check(spec)


def test_all_layers_cover_random_specs(space: SearchSpace) -> None:
    keys = {d.key() for d in space.all_layers()}
    listed = list(space.all_layers())
    assert len(listed) == len({d.key() for d in listed})  # no duplicates
    for spec in random_specs(space, 40, seed=7) + list(space.cheapest_candidates())[:3]:
        missing = [d.name for d in space.layers(spec) if d.key() not in keys]
        assert not missing, (missing, space.describe(spec))


@pytest.mark.parametrize("model_fn", [cost.macs, cost.params, cost.peak_ram])
def test_cheapest_candidates_are_cheapest(space: SearchSpace, model_fn) -> None:
    m = model_fn(space)
    best = min(m.cost(s) for s in space.cheapest_candidates())
    rnd = min(m.cost(s) for s in random_specs(space, 200, seed=8))
    assert best <= rnd


def _smallest_first(specs: list[ArchSpec]) -> list[ArchSpec]:
    return sorted(specs, key=lambda s: s.data.feature_shape[0] * s.data.feature_shape[1])


def test_supernet_hard_one_hot_forward(space: SearchSpace) -> None:
    net = space.supernet()
    specs = _smallest_first(_specs_for_every_data_option(space, seed=9))
    # the smallest and the largest input (a new input shape costs ~1 s of oneDNN setup on CPU)
    for spec in specs[:2] + specs[-1:]:
        d = space.data_configs().index(spec.data)
        out = net(_input(spec), d, space.one_hot(spec), True)
        assert out.shape == _out_shape(spec, 2) and torch.isfinite(out).all()


def test_supernet_darts_relaxed_forward(space: SearchSpace) -> None:
    net = space.supernet()
    spec = _smallest_first(_specs_for_every_data_option(space, seed=10))[0]
    d = space.data_configs().index(spec.data)
    one_hot = space.one_hot(spec)
    gates = {}
    for p in space.choice_points():
        if p.sampled:  # shape-changing: always one option
            gates[p.name] = one_hot[p.name].clone().requires_grad_()
        else:  # relaxed: a probability mixture of every option
            gates[p.name] = torch.full((len(p.options),), 1.0 / len(p.options), requires_grad=True)
    out = net(_input(spec, 4), d, gates, False)
    assert out.shape == _out_shape(spec, 4) and torch.isfinite(out).all()
    get_task(spec.task).loss(out, _target(spec, 4)).backward()
    relaxed = [p for p in space.choice_points() if not p.sampled and len(p.options) > 1]
    assert relaxed
    for p in relaxed:
        gr = gates[p.name].grad
        assert gr is not None and torch.isfinite(gr).all(), p.name
    # under a mixture every option contributes, so the relaxed gates receive a real gradient
    assert sum(1 for p in relaxed if float(gates[p.name].grad.abs().sum()) > 0) == len(relaxed)


# ---- the KWS DS-CNN space by hand --------------------------------------------------------------

def test_same_pad() -> None:
    assert same_pad(49, 10, 2) == (4, 5, 25)
    assert same_pad(10, 4, 2) == (1, 1, 5)
    assert same_pad(10, 3, 1) == (1, 1, 10)
    assert same_pad(5, 1, 1) == (0, 0, 5)


def test_kws_layers_by_hand() -> None:
    space = KWSDSCNNSpace(12, KWSSpaceConfig(n_blocks=2))
    sel = {"data.sample_rate": "16000", "data.n_mfcc": "10", "data.window": "40/20", "stem.kernel": "10x4",
           "stem.stride": "2x2", "stem.width": "64", "block0.op": "dw3x3", "block0.width": "32",
           "block1.op": "skip", "block1.width": "16"}
    spec = space.spec(sel)
    layers = space.layers(spec)
    assert [d.name for d in layers] == ["stem", "block0.dw", "block0.pw", "pool", "fc"]
    stem, dw, pw, pool, fc = layers
    assert stem.in_shape == (1, 49, 10) and stem.out_shape == (64, 25, 5) and stem.pad == (4, 5, 1, 1)
    assert stem.macs == 64 * 25 * 5 * 10 * 4
    assert dw.in_shape == dw.out_shape == (64, 25, 5) and dw.groups == 64 and dw.pad == (1, 1, 1, 1)
    assert pw.out_shape == (32, 25, 5) and pw.kernel == (1, 1)
    assert pool.in_shape == (32, 25, 5)  # the skipped block keeps 32 channels
    assert fc.in_shape == (32, 1, 1) and fc.out_shape == (12, 1, 1)
    assert cost.macs(space).cost(spec) == sum(d.macs for d in layers)
    assert cost.params(space).cost(spec) == 40 * 64 + 64 + 64 * 9 + 64 + 64 * 32 + 32 + 32 * 12 + 12


@pytest.mark.parametrize("make, n", [(tiny_space, 432), (tiny_tcn_space, 576)], ids=["kws-dscnn", "kws-tcn"])
def test_kws_expectation_is_exact_under_any_probs(make, n: int) -> None:
    """E[cost] of each space's Markov-chain contraction equals brute force over all its specs."""
    space = make()
    g = torch.Generator().manual_seed(0)
    probs = {p.name: torch.softmax(torch.randn(len(p.options), generator=g) * 2, 0) for p in space.choice_points()}
    specs = list(all_specs(space))
    assert len(specs) == n

    def weight(s: ArchSpec) -> float:
        w = 1.0
        for k, v in space.selection(s).items():
            w *= float(probs[k][space.point(k).index(v)])
        return w

    weights = [weight(s) for s in specs]
    assert sum(weights) == pytest.approx(1.0, rel=1e-5)
    for model_fn in (cost.macs, cost.params, cost.flash):
        m = model_fn(space)
        brute = sum(w * m.cost(s) for w, s in zip(weights, specs))
        assert float(m.expected_cost(probs)) == pytest.approx(brute, rel=1e-4), m.name
    ram = cost.peak_ram(space)  # max-aggregated: max of the expected slots is a lower bound of E[max]
    brute_max = sum(w * ram.cost(s) for w, s in zip(weights, specs))
    assert float(ram.expected_cost(probs)) <= brute_max * (1 + 1e-5)


def test_kws_data_options_follow_native_rate() -> None:
    space = KWSDSCNNSpace(10, KWSSpaceConfig(sample_rates=(8000, 16000)), max_sample_rate=8000)
    assert space.point("data.sample_rate").options == ("8000",)
    assert {d.sample_rate for d in space.data_configs()} == {8000}
    with pytest.raises(ConfigError, match="native rate 4000"):
        KWSDSCNNSpace(10, KWSSpaceConfig(sample_rates=(8000, 16000)), max_sample_rate=4000)


@pytest.mark.parametrize(
    "cfg, fragment",
    [
        (KWSSpaceConfig(n_mfcc=(10, 50)), "exceed n_mels=40"),
        (KWSSpaceConfig(n_mfcc=(10, 40), n_mels=(20, 40)), "exceed n_mels=20"),
        (KWSSpaceConfig(n_mels=()), "space.n_mels must be positive"),
        (KWSSpaceConfig(windows=("40-20",)), "window must be 'win_ms/hop_ms'"),
        (KWSSpaceConfig(stem_kernels=("3y3",)), "expected AxB"),
        (KWSSpaceConfig(block_ops=("conv3x3",)), "unknown block op"),
    ],
)
def test_kws_config_errors(cfg: KWSSpaceConfig, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        KWSDSCNNSpace(10, cfg)


def test_kws_spec_errors() -> None:
    space = tiny_space()
    spec = random_specs(space, 1)[0]
    sel = space.selection(spec)
    with pytest.raises(ConfigError, match="selection lacks choice points: block1.op"):
        space.spec({k: v for k, v in sel.items() if k != "block1.op"})
    with pytest.raises(ConfigError, match=r"'32' is not an option of stem.width \(8, 16\)"):
        space.spec(dict(sel, **{"stem.width": "32"}))
    other = ArchSpec(spec.task, spec.space, 2, spec.num_classes, spec.data, spec.choices)
    with pytest.raises(ConfigError, match="v2"):
        space.selection(other)
    wrong_data = ArchSpec(spec.task, spec.space, 1, spec.num_classes,
                          DataConfig(sample_rate=16000, n_mfcc=10, win_ms=40.0, hop_ms=20.0), spec.choices)
    with pytest.raises(ConfigError, match="not an option of data.sample_rate"):
        space.check(wrong_data)


def test_kws_supernet_rejects_wrong_features() -> None:
    space = tiny_space()
    spec = random_specs(space, 1)[0]
    with pytest.raises(ValueError, match="do not match data option"):
        space.supernet()(torch.randn(1, 1, 30, 10), 0, space.one_hot(spec), True)


def test_kws_cheapest_candidates_without_skip() -> None:
    space = tiny_space(block_ops=("dw5x5", "dw3x3"), widths=(16, 8))
    m = cost.macs(space)
    assert min(m.cost(s) for s in space.cheapest_candidates()) <= min(m.cost(s) for s in all_specs(space))


def test_kws_window_labels_round_trip_as_configured() -> None:
    space = tiny_space(windows=("40.0/20.0",))
    spec = random_specs(space, 1)[0]
    assert space.selection(spec)["data.window"] in space.point("data.window").options


def _kws_pair(space: KWSDSCNNSpace, first: dict[str, str], second: dict[str, str]) -> tuple[ArchSpec, ArchSpec]:
    sel = space.selection(random_specs(space, 1, seed=11)[0])
    return space.spec(dict(sel, **first)), space.spec(dict(sel, **second))


def test_kws_supernet_compacts_skipped_blocks_in_hard_mode() -> None:
    """Single path: the k-th block that runs uses weight slot k, wherever the skipped blocks are."""
    space = tiny_space()
    net = space.supernet().eval()
    late, early = _kws_pair(space, {"block0.op": "skip", "block1.op": "dw3x3", "block1.width": "8"},
                            {"block0.op": "dw3x3", "block0.width": "8", "block1.op": "skip"})
    none, _ = _kws_pair(space, {"block0.op": "skip", "block1.op": "skip"}, {})
    d = space.data_configs().index(late.data)
    x = _input(late, 3)
    with torch.no_grad():
        y_late, y_early, y_none = (net(x, d, space.one_hot(s), True) for s in (late, early, none))
        # relaxed mode has no compaction: block i always uses slot i
        z_late, z_early = (net(x, d, space.one_hot(s), False) for s in (late, early))
    assert torch.allclose(y_late, y_early, atol=1e-6)  # both run one dw3x3 block, on slot 0
    assert not torch.allclose(y_late, y_none, atol=1e-4)  # … which does change the output
    assert torch.allclose(z_early, y_early, atol=1e-6)  # block0 on slot 0 in either mode
    assert not torch.allclose(z_late, y_late, atol=1e-4)  # relaxed: block1 runs on slot 1


def test_kws_supernet_shares_one_depthwise_kernel_per_block() -> None:
    """Smaller depthwise kernels are centred slices of the block's one largest kernel."""
    space = tiny_space()
    net = space.supernet().eval()
    s3, s5 = _kws_pair(space, {"block0.op": "dw3x3", "block1.op": "skip"}, {"block0.op": "dw5x5", "block1.op": "skip"})
    d = space.data_configs().index(s3.data)
    x = _input(s3, 3)

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return net(x, d, space.one_hot(s3), True), net(x, d, space.one_hot(s5), True)

    w = net.dw[0].weight
    assert tuple(w.shape[2:]) == (5, 5)
    assert sum(1 for n, _ in net.named_parameters() if n.startswith("dw.")) == space.cfg.n_blocks
    y3, y5 = run()
    ring = torch.ones_like(w, dtype=torch.bool)
    ring[:, :, 1:4, 1:4] = False
    with torch.no_grad():
        w[ring] += 0.5  # outside the centred 3x3: only dw5x5 sees it
    r3, r5 = run()
    assert torch.allclose(r3, y3, atol=1e-6) and not torch.allclose(r5, y5, atol=1e-4)
    with torch.no_grad():
        w[:, :, 2, 2] += 0.5  # the centre tap is shared by both kernels
    c3, c5 = run()
    assert not torch.allclose(c3, r3, atol=1e-4) and not torch.allclose(c5, r5, atol=1e-4)


def test_kws_supernet_shared_stem_trains_on_every_data_option() -> None:
    """``share_stem``: one stem convolution for all data options (each keeps its BatchNorm), so a
    step on any option moves it; without it each option has its own stem."""
    own, shared = (tiny_space(n_mfcc=(10, 20), share_stem=s) for s in (False, True))
    assert len(own.supernet().stems) == 2
    net = shared.supernet()
    assert len(net.stems) == 1 and len(net.stem_bns) == 2
    spec = next(s for s in random_specs(shared, 50, seed=12) if s.data.n_mfcc == 20)
    d = shared.data_configs().index(spec.data)
    assert d == 1
    out = net(_input(spec, 4), d, shared.one_hot(spec), True)
    torch.nn.functional.cross_entropy(out, torch.arange(4) % 3).backward()
    g = net.stems[0].weight.grad
    assert g is not None and float(g.abs().sum()) > 0


def test_default_kws_data_space_trades_frames_and_widths_beyond_dscnn_s() -> None:
    space = KWSDSCNNSpace(12)
    assert space.point("data.window").options == ("30/10", "40/20", "64/32")
    assert {d.n_frames for d in space.data_configs()} == {98, 49, 30}
    assert space.point("stem.width").options[-2:] == ("96", "128")
    assert "data.n_mels" not in [p.name for p in space.data_points]  # one n_mels: not a choice point
    assert {d.n_mels for d in space.data_configs()} == {40}


def test_several_n_mels_are_a_data_choice_point() -> None:
    cfg = KWSSpaceConfig(sample_rates=(8000,), n_mfcc=(10, 20), n_mels=(20, 32, 40), windows=("40/20",),
                         widths=(8,), n_blocks=1)
    space = KWSDSCNNSpace(5, cfg)
    assert space.point("data.n_mels").options == ("20", "32", "40")
    datas = space.data_configs()
    assert len(datas) == 6 and {(d.n_mfcc, d.n_mels) for d in datas} == {(m, b) for m in (10, 20) for b in (20, 32, 40)}
    for i, d in enumerate(datas):  # labels, index and the spec round trip agree
        labels = space.data_labels(d)
        assert labels["data.n_mels"] == str(d.n_mels) and space.data_index(labels) == i
    spec = random_specs(space, 1, seed=1)[0]
    assert space.spec(space.selection(spec)) == spec
    uniform = {p.name: torch.full((len(p.options),), 1 / len(p.options)) for p in space.choice_points()}
    assert space.data_probs(uniform).shape == (6,)
    net = space.supernet()
    for d, data in enumerate(datas):
        x = torch.randn(2, 1, *data.feature_shape)
        gates = {k: v for k, v in uniform.items()}
        assert net(x, d, gates, False).shape == (2, 5)


def _one_block_stage_image_space() -> SearchSpace:
    from edgenas.spaces.image_mbv2 import ImageMBv2Space, ImageSpaceConfig

    return ImageMBv2Space(NUM_CLASSES, ImageSpaceConfig(resolutions=(16,), blocks=(1, 2, 1)))


@pytest.mark.parametrize("make", [*[lambda n=n: get_space(n, num_classes=NUM_CLASSES) for n in ALL_SPACES],
                                  _one_block_stage_image_space], ids=[*ALL_SPACES, "image-mbv2-blocks121"])
def test_expected_cost_asks_only_for_layers_the_table_has(make) -> None:
    """The differentiable cost prices only layers ``all_layers()`` lists (those a latency table
    measures): a stage of one block has no later block to price (it raised KeyError before)."""
    space = make()
    known = {d.key() for d in space.all_layers()}

    def strict(d) -> float:
        assert d.key() in known, f"{d.name} is not in all_layers()"
        return 1.0

    probs = {p.name: torch.full((len(p.options),), 1.0 / len(p.options)) for p in space.choice_points()}
    assert float(space.expected_layer_costs(probs, strict).sum()) > 0
