"""Strategies: gates (hard / relaxed), sampled points, temperature schedule, entropy, sharpening.

The registry: "gumbel" (default) is a relaxed Gumbel-softmax sample, "gumbel-hard" the straight-through
single path, "darts" the plain softmax mixture; sampled (shape-changing) points are one-hot in all."""

from __future__ import annotations

import math

import pytest
import torch

from edgenas.spaces.base import ChoicePoint
from edgenas.strategies import STRATEGIES, DartsMixture, GumbelRelaxed, GumbelSinglePath, Strategy

POINTS = [
    ChoicePoint("data.rate", ("8000", "16000"), "data", sampled=True),
    ChoicePoint("stem.stride", ("2x1", "2x2"), sampled=True),
    ChoicePoint("stem.kernel", ("3x3", "5x3", "10x4")),
    ChoicePoint("block0.op", ("dw3x3", "dw5x5", "skip")),
    ChoicePoint("block0.width", ("16", "32", "48", "64")),
    ChoicePoint("fixed", ("only",)),
]


def _is_one_hot(v: torch.Tensor) -> bool:
    v = v.detach()
    return bool(((v.abs() < 1e-6) | ((v - 1).abs() < 1e-6)).all()) and abs(float(v.sum()) - 1) < 1e-6 \
        and int((v > 0.5).sum()) == 1


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_gives_valid_gates_and_probs(name: str) -> None:
    torch.manual_seed(0)
    s: Strategy = STRATEGIES.get(name)(POINTS)
    gates = {k: v.detach() for k, v in s.gates().items()}
    probs = {k: v.detach() for k, v in s.probs().items()}
    assert set(gates) == set(probs) == {p.name for p in POINTS}
    for p in POINTS:
        assert gates[p.name].shape == (len(p.options),)
        assert float(probs[p.name].sum()) == pytest.approx(1.0)
        assert float(gates[p.name].sum()) == pytest.approx(1.0, abs=1e-5)
        if p.sampled:  # shape-changing choices are one-hot under every strategy
            assert _is_one_hot(gates[p.name]), (name, p.name)


def test_registry_names_each_strategy() -> None:
    assert {"gumbel", "gumbel-hard", "darts"} <= set(STRATEGIES.names())
    assert STRATEGIES.get("gumbel") is GumbelRelaxed and GumbelRelaxed.hard is False
    assert STRATEGIES.get("gumbel-hard") is GumbelSinglePath and GumbelSinglePath.hard is True
    assert STRATEGIES.get("darts") is DartsMixture and DartsMixture.hard is False


def test_gumbel_hard_gates_are_one_hot_straight_through() -> None:
    torch.manual_seed(0)
    s = GumbelSinglePath(POINTS)
    assert s.hard
    counts = torch.zeros(3)
    for _ in range(300):
        g = s.gates()
        assert all(_is_one_hot(v) for v in g.values())
        counts += g["stem.kernel"].detach()
    assert (counts > 50).all()  # uniform logits: every option gets sampled
    # straight-through: the one-hot gate carries a gradient to the logits
    g = s.gates()
    (g["block0.width"] * torch.arange(4.0)).sum().backward()
    assert s.logits["block0__width"].grad is not None
    assert float(s.logits["block0__width"].grad.abs().sum()) > 0


def test_gumbel_hard_sampling_follows_logits() -> None:
    torch.manual_seed(0)
    s = GumbelSinglePath(POINTS, tau_start=1.0, tau_end=1.0)
    with torch.no_grad():
        s.logits["stem__kernel"].copy_(torch.tensor([0.0, 3.0, 0.0]))
    picks = torch.stack([s.gates()["stem.kernel"].detach() for _ in range(400)]).sum(0)
    assert int(picks.argmax()) == 1 and picks[1] > 300


def test_gumbel_relaxes_non_sampled_points_with_soft_samples() -> None:
    torch.manual_seed(0)
    s = GumbelRelaxed(POINTS, tau_start=1.0, tau_end=1.0)
    assert not s.hard
    draws = []
    for _ in range(50):
        g = s.gates()
        for p in POINTS:
            v = g[p.name].detach()
            assert float(v.sum()) == pytest.approx(1.0, abs=1e-5), p.name
            if p.sampled:  # shape-changing: one-hot (straight-through) as in every strategy
                assert _is_one_hot(v), p.name
            elif len(p.options) > 1:
                assert (v > 0).all() and (v < 1).all(), p.name  # soft, every option weighted
            else:
                assert torch.equal(v, torch.ones(1))
        draws.append(g["stem.kernel"].detach())
    # a random sample, not the softmax itself (that is DARTS): draws differ from each other and
    # from the (uniform) probabilities
    assert not torch.allclose(draws[0], draws[1])
    assert all(not torch.allclose(d, torch.full((3,), 1 / 3), atol=1e-3) for d in draws)
    # the relaxed sample is differentiable in the logits
    g = s.gates()
    (g["block0.width"] * torch.arange(4.0)).sum().backward()
    assert float(s.logits["block0__width"].grad.abs().sum()) > 0


def test_gumbel_relaxed_gates_sharpen_as_tau_anneals() -> None:
    torch.manual_seed(0)
    s = GumbelRelaxed(POINTS, tau_start=5.0, tau_end=0.05)
    peaks = []
    for progress in (0.0, 0.25, 0.5, 0.75, 1.0):
        s.anneal(progress)
        g = [s.gates() for _ in range(200)]
        assert all(_is_one_hot(x["stem.stride"]) for x in g)  # sampled: one-hot at every τ
        peaks.append(float(torch.stack([x["block0.width"].detach().max() for x in g]).mean()))
    assert peaks == sorted(peaks)  # mean largest gate grows as τ falls
    assert peaks[0] < 0.4 and peaks[-1] > 0.9  # near uniform (1/4) at τ = 5, near one-hot at τ = 0.05


def test_gumbel_relaxed_sampling_follows_logits() -> None:
    torch.manual_seed(0)
    s = GumbelRelaxed(POINTS, tau_start=0.5, tau_end=0.5)
    with torch.no_grad():
        s.logits["stem__kernel"].copy_(torch.tensor([0.0, 3.0, 0.0]))
    mean = torch.stack([s.gates()["stem.kernel"].detach() for _ in range(400)]).mean(0)
    assert int(mean.argmax()) == 1 and mean[1] > 0.75


def test_darts_relaxes_only_non_sampled_points() -> None:
    torch.manual_seed(0)
    s = DartsMixture(POINTS)
    assert not s.hard
    with torch.no_grad():
        s.logits["block0__op"].copy_(torch.tensor([1.0, 0.0, -1.0]))
    g = s.gates()
    for p in POINTS:
        v = g[p.name].detach()
        if p.sampled:
            assert _is_one_hot(v)
        elif len(p.options) > 1:
            assert float(v.sum()) == pytest.approx(1.0)
            assert (v > 0).all() and (v < 1).all()  # soft, every option weighted
    assert torch.allclose(g["block0.op"], torch.softmax(torch.tensor([1.0, 0.0, -1.0]), 0))
    assert torch.allclose(g["stem.kernel"], torch.full((3,), 1 / 3))
    # the relaxed gates are differentiable in the logits
    (g["block0.op"] * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert float(s.logits["block0__op"].grad.abs().sum()) > 0


def test_anneal_schedule() -> None:
    s = GumbelSinglePath(POINTS, tau_start=4.0, tau_end=0.3)
    assert s.tau == 4.0
    s.anneal(0.0)
    assert s.tau == pytest.approx(4.0)
    s.anneal(1.0)
    assert s.tau == pytest.approx(0.3)
    s.anneal(0.5)
    assert s.tau == pytest.approx(math.sqrt(4.0 * 0.3))  # exponential: geometric mean halfway
    taus = []
    for p in (0.0, 0.25, 0.5, 0.75, 1.0):
        s.anneal(p)
        taus.append(s.tau)
    assert taus == sorted(taus, reverse=True)
    s.anneal(-1.0)
    assert s.tau == pytest.approx(4.0)
    s.anneal(7.0)
    assert s.tau == pytest.approx(0.3)


def test_entropy_uniform_and_peaked() -> None:
    s = GumbelSinglePath(POINTS)
    assert float(s.entropy().detach()) == pytest.approx(1.0, abs=1e-5)  # zero logits: uniform everywhere
    with torch.no_grad():
        for v in s.logits.values():
            v.zero_()
            v[0] = 40.0
    assert float(s.entropy().detach()) < 1e-6
    with torch.no_grad():
        s.logits["block0__width"].zero_()  # one of 5 multi-option points uniform again
    assert float(s.entropy().detach()) == pytest.approx(1 / 5, abs=1e-4)


def test_entropy_ignores_single_option_points_and_is_differentiable() -> None:
    s = GumbelSinglePath([ChoicePoint("only", ("a",)), ChoicePoint("two", ("a", "b"))])
    assert float(s.entropy().detach()) == pytest.approx(1.0, abs=1e-5)
    with torch.no_grad():
        s.logits["two"].copy_(torch.tensor([1.0, 0.0]))
    e = s.entropy()
    e.backward()
    assert float(s.logits["two"].grad.abs().sum()) > 0
    assert float(GumbelSinglePath([ChoicePoint("only", ("a",))]).entropy().detach()) == 0.0


def test_sharpen_divides_by_temperature_below_one() -> None:
    s = GumbelSinglePath(POINTS, tau_start=4.0, tau_end=0.25)
    with torch.no_grad():
        s.logits["stem__kernel"].copy_(torch.tensor([1.0, 0.0, 0.0]))
    s.anneal(0.0)  # τ = 4 ≥ 1: sharpening is the identity
    assert torch.allclose(s.probs(sharpen=True)["stem.kernel"], s.probs()["stem.kernel"])
    s.anneal(1.0)  # τ = 0.25: logits / 0.25
    sharp = s.probs(sharpen=True)["stem.kernel"]
    assert torch.allclose(sharp, torch.softmax(torch.tensor([4.0, 0.0, 0.0]), 0))
    plain = s.probs()["stem.kernel"].detach()
    assert float(sharp.detach().max()) > float(plain.max())
    assert int(sharp.argmax()) == int(plain.argmax())  # same derived choice


def test_logits_are_parameters_with_dot_free_keys() -> None:
    s = DartsMixture(POINTS)
    names = dict(s.named_parameters())
    assert set(names) == {f"logits.{p.name.replace('.', '__')}" for p in POINTS}
    state = s.state_dict()
    s2 = DartsMixture(POINTS)
    with torch.no_grad():
        s.logits["block0__op"][0] = 2.0
    s2.load_state_dict(s.state_dict())
    assert torch.equal(s2.probs()["block0.op"], s.probs()["block0.op"])
    assert state.keys() == s2.state_dict().keys()


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_a_frozen_point_is_a_constant_one_hot_outside_the_entropy(name: str) -> None:
    torch.manual_seed(0)
    s: Strategy = STRATEGIES.get(name)(POINTS)
    with torch.no_grad():
        s.logits["block0__width"].copy_(torch.tensor([3.0, 0.0, 0.0, 0.0]))
    before = float(s.entropy().detach())
    s.freeze("block0.width", 2)
    for _ in range(5):
        g = s.gates()["block0.width"]
        assert g.tolist() == [0.0, 0.0, 1.0, 0.0] and not g.requires_grad
    assert s.probs(sharpen=True)["block0.width"].tolist() == [0.0, 0.0, 1.0, 0.0]
    # the entropy averages over the unfrozen points only (this one was the least uniform)
    assert float(s.entropy().detach()) > before
    loss = sum((v * torch.arange(len(v))).sum() for v in s.gates().values()) + s.entropy()
    loss.backward()
    assert s.logits["block0__width"].grad is None  # no gradient reaches a frozen point's logits
    assert s.logits["block0__op"].grad is not None
