"""Budgets: constraint terms and dual updates, feasibility before training, repair after search."""

from __future__ import annotations

import re

import pytest
import torch

from edgenas import cost
from edgenas.constraints import BUDGETS, Constraint, check_feasible, repair, violation
from edgenas.errors import EdgenasError, InfeasibleBudget
from edgenas.spec import LayerDesc

from edgenas_toys import all_specs, random_specs, tiny_space


class ToyTable:
    overhead_ms = 0.02

    def layer_ms(self, desc: LayerDesc) -> float:
        return 0.001 + 1e-7 * desc.macs


@pytest.fixture(scope="module")
def space():
    return tiny_space()


@pytest.fixture(scope="module")
def specs(space):
    return list(all_specs(space))


def _dearest(space):
    return space.spec({"data.sample_rate": "8000", "data.n_mfcc": "10", "data.window": "40/20",
                       "stem.kernel": "10x4", "stem.stride": "2x1", "stem.width": "16",
                       "block0.op": "dw5x5", "block0.width": "16", "block1.op": "dw5x5", "block1.width": "16"})


def test_budget_table_and_units(space) -> None:
    ram = Constraint("ram", 64 * 1024, cost.peak_ram(space))
    assert ram.flag == "--max-ram-kb" and ram.user_factor == 1024
    assert ram.show(2048) == "2 KiB"
    lat = Constraint("latency", 5.0, cost.latency_lut(space, ToyTable()))
    assert lat.flag == "--max-latency-ms" and lat.show(0.123456) == "0.1235 ms"
    assert set(BUDGETS) == {"latency", "ram", "flash"}


def test_holds_ratio_violation(space) -> None:
    spec = _dearest(space)
    ram_cost = cost.peak_ram(space).cost(spec)
    c = Constraint("ram", ram_cost, cost.peak_ram(space))
    assert c.holds(spec) and c.ratio(spec) == 1.0 and violation(spec, [c]) == 0
    c2 = Constraint("ram", ram_cost / 2, cost.peak_ram(space))
    assert not c2.holds(spec) and c2.ratio(spec) == pytest.approx(2.0)
    c3 = Constraint("flash", cost.flash(space).cost(spec) / 4, cost.flash(space))
    assert violation(spec, [c, c2, c3]) == pytest.approx(1.0 + 3.0)


def test_hinge_term_and_its_gradient(space) -> None:
    spec = _dearest(space)
    m = cost.flash(space)
    logits = {p.name: torch.zeros(len(p.options), requires_grad=True) for p in space.choice_points()}
    probs = {k: torch.softmax(v, 0) for k, v in logits.items()}
    e = float(m.expected_cost(probs).detach())
    loose = Constraint("flash", 10 * e, m, multiplier=2.0)
    term, ex = loose.term(probs, margin=0.05)
    assert float(term.detach()) == 0.0 and ex == pytest.approx(0.1 - 1 + 0.05)
    tight = Constraint("flash", e / 2, m, multiplier=2.0)
    term, ex = tight.term(probs, margin=0.05)
    assert ex == pytest.approx(2 - 1 + 0.05, rel=1e-5)
    assert float(term.detach()) == pytest.approx(2.0 * ex, rel=1e-5)
    term.backward()
    g = logits["stem.width"].grad
    assert g is not None and float(g[1]) > 0 > float(g[0])  # pushes towards the narrower stem
    assert cost.flash(space).cost(spec) > 0


def test_two_sided_term_pulls_towards_the_budget(space) -> None:
    m = cost.flash(space)
    logits = {p.name: torch.zeros(len(p.options), requires_grad=True) for p in space.choice_points()}
    probs = {k: torch.softmax(v, 0) for k, v in logits.items()}
    e = float(m.expected_cost(probs).detach())
    loose = Constraint("flash", 10 * e, m, multiplier=2.0)  # expected cost at a tenth of the budget
    term, ex = loose.term(probs, margin=0.05, two_sided=True)
    assert ex == pytest.approx(0.1 - 1 + 0.05) and float(term.detach()) == pytest.approx(2.0 * -ex)
    term.backward()
    g = logits["stem.width"].grad
    assert g is not None and float(g[1]) < 0 < float(g[0])  # pushes towards the wider stem


def test_dual_update_rises_while_violated_and_has_a_floor(space) -> None:
    c = Constraint("ram", 1.0, cost.peak_ram(space))
    c.update(0.5, lr=0.2)
    assert c.multiplier == pytest.approx(1.1)
    c.update(-100.0, lr=1.0)
    assert c.multiplier == 0.1


def test_check_feasible_without_budgets(space) -> None:
    assert check_feasible(space, []) is None


@pytest.mark.parametrize("name, model_fn, unit", [
    ("ram", cost.peak_ram, "KiB"),
    ("flash", cost.flash, "KiB"),
    ("latency", lambda s: cost.latency_lut(s, ToyTable()), "ms"),
])
def test_infeasible_budget_names_cheapest_value_and_flag(space, specs, name, model_fn, unit) -> None:
    m = model_fn(space)
    cheapest = min(m.cost(s) for s in specs)  # brute force over all 432 specs
    factor = BUDGETS[name][2]
    limit = cheapest * 0.9
    with pytest.raises(InfeasibleBudget) as ei:
        check_feasible(space, [Constraint(name, limit, m)])
    msg = str(ei.value)
    assert BUDGETS[name][0] in msg
    assert f"the cheapest spec reaches {cheapest / factor:.4g} {unit}" in msg
    assert f"{limit / factor:g}" in msg
    assert "\n" not in msg
    assert isinstance(ei.value, EdgenasError) and ei.value.exit_code == 3
    # at exactly the cheapest value the budget is feasible
    best = check_feasible(space, [Constraint(name, cheapest, m)])
    assert best is not None and m.cost(best) == pytest.approx(cheapest)


def test_feasible_returns_a_spec_meeting_every_budget(space, specs) -> None:
    ram, flash = cost.peak_ram(space), cost.flash(space)
    cons = [Constraint("ram", 3000, ram), Constraint("flash", 800, flash)]
    best = check_feasible(space, cons)
    assert best is not None and all(c.holds(best) for c in cons)
    space.check(best)


def test_check_feasible_without_skip_op() -> None:
    space = tiny_space(block_ops=("dw5x5", "dw3x3"), widths=(16, 8))
    m = cost.flash(space)
    cheapest = min(m.cost(s) for s in all_specs(space))
    assert check_feasible(space, [Constraint("flash", cheapest, m)]) is not None


def test_repair_makes_a_violating_spec_hold(space) -> None:
    spec = _dearest(space)
    probs = space.one_hot(spec)
    ram, flash = cost.peak_ram(space), cost.flash(space)
    cons = [Constraint("ram", 0.5 * ram.cost(spec), ram), Constraint("flash", 0.5 * flash.cost(spec), flash)]
    assert violation(spec, cons) > 0
    fixed, switches = repair(space, spec, probs, cons)
    assert all(c.holds(fixed) for c in cons)
    assert switches and all(s.point != "*" for s in switches)
    # replaying the recorded switches on the derived selection gives the repaired spec
    sel = space.selection(spec)
    for s in switches:
        assert sel[s.point] == s.old != s.new
        assert s.new in space.point(s.point).options
        sel[s.point] = s.new
    assert space.spec(sel) == fixed
    changed = {k for k, v in space.selection(fixed).items() if v != space.selection(spec)[k]}
    assert changed <= {s.point for s in switches}


def test_repair_prefers_improbable_switches(space) -> None:
    spec = _dearest(space)
    flash = cost.flash(space)
    # the search is sure about the stem width but undecided about block0's width
    probs = space.one_hot(spec)
    probs["block0.width"] = torch.tensor([0.45, 0.55])
    probs["stem.width"] = torch.tensor([0.001, 0.999])
    cons = [Constraint("flash", flash.cost(spec) - 1, flash)]
    fixed, switches = repair(space, spec, probs, cons)
    assert cons[0].holds(fixed)
    assert switches[0].point == "block0.width" and switches[0].new == "8"
    assert space.selection(fixed)["stem.width"] == "16"


def test_repair_keeps_a_spec_that_holds(space) -> None:
    spec = random_specs(space, 1, seed=1)[0]
    cons = [Constraint("ram", 1e9, cost.peak_ram(space))]
    fixed, switches = repair(space, spec, space.one_hot(spec), cons)
    assert fixed == spec and switches == []


def test_repair_falls_back_to_cheapest_feasible(space, specs) -> None:
    spec = _dearest(space)
    ram = cost.peak_ram(space)
    limit = min(ram.cost(s) for s in specs)
    fixed, switches = repair(space, spec, space.one_hot(spec), [Constraint("ram", limit, ram)], max_steps=0)
    assert ram.cost(fixed) <= limit
    assert switches[-1].point == "*" and "fallback" in switches[-1].new


def test_repair_raises_when_nothing_fits(space, specs) -> None:
    ram = cost.peak_ram(space)
    limit = 0.5 * min(ram.cost(s) for s in specs)
    spec = _dearest(space)
    with pytest.raises(InfeasibleBudget, match=re.escape("--max-ram-kb")):
        repair(space, spec, space.one_hot(spec), [Constraint("ram", limit, ram)])


def test_fill_grows_the_spec_into_the_unused_budget() -> None:
    """The derived spec far under its budgets grows (more MACs) until one more switch would pass
    (1 - margin) of a budget; the data configuration is untouched; a spec already at the budget
    stays as it is."""
    from edgenas import cost
    from edgenas.constraints import Constraint, fill
    from edgenas.spaces import get_space

    space = get_space("image-mbv2", num_classes=10)
    small = next(iter(space.cheapest_candidates()))
    cons = [Constraint("ram", 40_000.0, cost.peak_ram(space)), Constraint("flash", 60_000.0, cost.flash(space))]
    probs = {p.name: torch.full((len(p.options),), 1 / len(p.options)) for p in space.choice_points()}
    grown, switches = fill(space, small, probs, cons, margin=0.05)
    assert switches and cost.macs(space).cost(grown) > cost.macs(space).cost(small)
    assert grown.data == small.data
    assert all(c.model.cost(grown) <= 0.95 * c.limit for c in cons)
    again, more = fill(space, grown, probs, cons, margin=0.05)
    assert again == grown and more == []


def test_fit_to_budgets_repairs_first_then_grows_into_what_repair_freed() -> None:
    """A derived spec over a budget is repaired, then grown back towards (1 - margin) of it: more
    MACs than repair alone gives, every budget still met. Without ``grow`` it is repair alone."""
    from edgenas import cost
    from edgenas.constraints import Constraint, fit_to_budgets
    from edgenas.spaces import get_space

    space = get_space("image-mbv2", num_classes=10)
    macs, ram = cost.macs(space), cost.peak_ram(space)
    dear = space.spec({**space.selection(next(iter(space.cheapest_candidates()))),
                       **{p.name: p.options[-1] for p in space.arch_points}})
    cons = [Constraint("ram", 0.6 * ram.cost(dear), ram)]
    probs = space.one_hot(dear)  # the search committed to the dearest architecture
    repaired, repairs = repair(space, dear, probs, cons)
    assert repairs and cons[0].holds(repaired)
    same, repairs2, fills = fit_to_budgets(space, dear, probs, cons, margin=0.05, grow=False)
    assert same == repaired and repairs2 == repairs and fills == []
    grown, _, fills = fit_to_budgets(space, dear, probs, cons, margin=0.05, grow=True)
    assert fills and macs.cost(grown) > macs.cost(repaired) and cons[0].holds(grown)
    assert grown.data == dear.data


def test_fill_grows_a_spec_already_close_to_one_budget_without_raising_that_one() -> None:
    """A budget used beyond (1 - margin) (but held) caps at its current use: the spec still grows
    by switches that do not raise it, and that budget's cost does not rise."""
    from edgenas.constraints import fill
    from edgenas.spaces import get_space

    space = get_space("image-mbv2", num_classes=10)
    small = next(iter(space.cheapest_candidates()))
    ram, flash = cost.peak_ram(space), cost.flash(space)
    cons = [Constraint("ram", ram.cost(small) / 0.98, ram), Constraint("flash", 60_000.0, flash)]
    probs = {p.name: torch.full((len(p.options),), 1 / len(p.options)) for p in space.choice_points()}
    grown, switches = fill(space, small, probs, cons, margin=0.05)
    assert switches and cost.macs(space).cost(grown) > cost.macs(space).cost(small)
    assert ram.cost(grown) <= ram.cost(small) and flash.cost(grown) <= 0.95 * 60_000.0
