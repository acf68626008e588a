"""Cost models: flash and RAM per layer by hand, sum/max aggregation, latency tables, expectations."""

from __future__ import annotations

import pytest
import torch

from edgenas import cost
from edgenas.spec import LayerDesc

from edgenas_toys import random_specs, tiny_space

CONV = LayerDesc("c", "conv2d", (2, 4, 4), (3, 4, 4), (3, 3), (1, 1), (1, 1, 1, 1))
PW = LayerDesc("pw", "conv2d", (2, 4, 4), (3, 4, 4))
FC = LayerDesc("fc", "linear", (3, 1, 1), (2, 1, 1))
POOL = LayerDesc("pool", "global_avgpool", (3, 4, 4), (3, 1, 1), bias=False)


def test_flash_by_hand() -> None:
    # int8 weights + int32 biases + one float32 scale per output channel
    assert cost.flash_bytes(CONV) == 3 * 2 * 9 + 3 * 4 + 3 * 4 == 78
    assert cost.flash_bytes(PW) == 6 + 12 + 12
    assert cost.flash_bytes(FC) == 6 + 8 + 8
    assert cost.flash_bytes(POOL) == 0
    nobias = LayerDesc("c", "conv2d", (2, 4, 4), (3, 4, 4), (3, 3), bias=False)
    assert cost.flash_bytes(nobias) == 54 + 12


def test_ram_by_hand() -> None:
    # SAME padding is folded into the conv (no PAD op): input (32) + output (48)
    assert CONV.pad_is_same and cost.ram_bytes(CONV) == 32 + 48
    # other padding is an explicit PAD: the padded input (2×7×7 = 98) lives with the input, then the output
    odd = LayerDesc("o", "conv2d", (2, 4, 4), (3, 4, 4), (3, 3), pad=(2, 1, 2, 1))
    assert not odd.pad_is_same and cost.ram_bytes(odd) == max(32 + 98, 98 + 48) == 146
    assert cost.ram_bytes(PW) == 32 + 48
    assert cost.ram_bytes(FC) == 3 + 2
    assert cost.ram_bytes(POOL) == 48 + 3
    asym = LayerDesc("a", "conv2d", (1, 49, 10), (8, 25, 5), (3, 3), (2, 2), (1, 1, 0, 1))
    assert asym.pad_is_same and cost.ram_bytes(asym) == 490 + 8 * 25 * 5 == 1490  # TF SAME at stride 2


class ToyTable:
    """A latency table as the cost model sees it (the LatencyLookup protocol)."""

    overhead_ms = 0.5

    def layer_ms(self, desc: LayerDesc) -> float:
        return 0.01 + 1e-6 * desc.macs


def test_layer_cost_sum_max_and_constant() -> None:
    space = tiny_space()
    spec = random_specs(space, 1, seed=3)[0]
    layers = space.layers(spec)
    assert cost.macs(space).cost(spec) == sum(d.macs for d in layers)
    assert cost.params(space).cost(spec) == sum(d.params for d in layers)
    assert cost.flash(space).cost(spec) == sum(cost.flash_bytes(d) for d in layers)
    assert cost.peak_ram(space).cost(spec) == max(cost.ram_bytes(d) for d in layers)
    lat = cost.latency_lut(space, ToyTable())
    assert lat.cost(spec) == pytest.approx(0.5 + sum(0.01 + 1e-6 * d.macs for d in layers))
    assert (lat.name, lat.unit) == ("latency", "ms")
    per = cost.peak_ram(space).per_layer(spec)
    assert [n for n, _ in per] == [d.name for d in layers]
    assert max(v for _, v in per) == cost.peak_ram(space).cost(spec)


def test_ram_of_a_spec_by_hand() -> None:
    space = tiny_space()
    sel = {"data.sample_rate": "8000", "data.n_mfcc": "10", "data.window": "40/20", "stem.kernel": "3x3",
           "stem.stride": "2x2", "stem.width": "8", "block0.op": "skip", "block0.width": "16",
           "block1.op": "skip", "block1.width": "8"}
    spec = space.spec(sel)
    # stem 1×49×10 → 8×25×5 (SAME padding, folded) is the largest layer
    assert cost.peak_ram(space).cost(spec) == 490 + 1000
    assert cost.flash(space).cost(spec) == (8 * 9 + 8 * 4 + 8 * 4) + (8 * 3 + 3 * 4 + 3 * 4)


def test_latency_expected_cost_counts_overhead_once() -> None:
    space = tiny_space()
    lat = cost.latency_lut(space, ToyTable())
    for spec in random_specs(space, 5, seed=4):
        assert float(lat.expected_cost(space.one_hot(spec))) == pytest.approx(lat.cost(spec), rel=1e-5)


def test_expected_cost_between_cheapest_and_dearest() -> None:
    space = tiny_space()
    uniform = {p.name: torch.full((len(p.options),), 1 / len(p.options)) for p in space.choice_points()}
    for m in (cost.macs(space), cost.flash(space), cost.latency_lut(space, ToyTable())):
        vals = [m.cost(s) for s in random_specs(space, 100, seed=5)]
        e = float(m.expected_cost(uniform))
        assert min(vals) < e < max(vals)


def test_end_to_end_adds_the_front_end_of_the_spec_data_configuration() -> None:
    space = tiny_space(n_mfcc=(10, 20), windows=("30/10", "40/20"))
    fe = {d.key(): 0.1 * (i + 1) for i, d in enumerate(space.data_configs())}
    assert len(fe) == 4
    model = cost.latency_lut(space, ToyTable())
    e2e = cost.EndToEnd(space, model, fe)
    assert (e2e.name, e2e.unit) == ("latency", "ms")
    for spec in random_specs(space, 20, seed=6):
        assert e2e.frontend_cost(spec) == fe[spec.data.key()]
        assert e2e.cost(spec) == pytest.approx(model.cost(spec) + fe[spec.data.key()])
        # one-hot probabilities: the expectation is the spec's own cost
        assert float(e2e.expected_cost(space.one_hot(spec))) == pytest.approx(e2e.cost(spec), rel=1e-5)


def test_end_to_end_expectation_prices_the_data_choice() -> None:
    """The data logits get a gradient from the front end: the dearer front end is pushed down."""
    space = tiny_space(n_mfcc=(10, 20))
    cheap, dear = (d.key() for d in space.data_configs())
    zero = cost.LayerCost(space, "latency", "ms", lambda d: 0.0)  # isolates the front-end term
    e2e = cost.EndToEnd(space, zero, {cheap: 0.1, dear: 0.5})
    logits = {p.name: torch.zeros(len(p.options), requires_grad=True) for p in space.choice_points()}
    probs = {k: torch.softmax(v, 0) for k, v in logits.items()}
    e = e2e.expected_cost(probs)
    assert float(e.detach()) == pytest.approx(0.3, rel=1e-5)  # uniform over the two front ends
    e.backward()
    g = logits["data.n_mfcc"].grad
    assert g is not None and g[1] > 0 > g[0]
    missing = next(s for s in random_specs(space, 50) if s.data.key() == dear)
    with pytest.raises(KeyError, match="no front-end latency"):
        cost.EndToEnd(space, zero, {cheap: 0.1}).cost(missing)
