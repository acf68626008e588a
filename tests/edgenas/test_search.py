"""Bilevel search on small learnable tensors: result, history, determinism, resume, constraints."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from edgenas import cost
from edgenas.constraints import Constraint, repair
from edgenas.search import SearchConfig, SearchResult, SplitTensors, phases, run_search

from edgenas_toys import tiny_space, toy_split

CFG = SearchConfig(epochs=3, batch_size=32, warmup_frac=0.34, weight_lr=0.01)


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def space():
    return tiny_space()


@pytest.fixture(scope="module")
def splits(space) -> tuple[list[SplitTensors], list[SplitTensors]]:
    shape = space.data_configs()[0].feature_shape
    return [toy_split(64, shape, seed=1)], [toy_split(32, shape, seed=2)]


@pytest.fixture(scope="module")
def result(space, splits) -> tuple[SearchResult, list[tuple[str, dict[str, Any]]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    res = run_search(space, *splits, [], CFG, seed=0, sink=lambda e, **f: events.append((e, f)))
    return res, events


def test_search_returns_a_valid_spec(space, result) -> None:
    res, _ = result
    space.check(res.spec)
    assert res.spec.space == space.name and res.spec.num_classes == 3
    assert set(res.probs) == {p.name for p in space.choice_points()}
    for name, pr in res.probs.items():
        assert len(pr) == len(space.point(name).options)
        assert sum(pr) == pytest.approx(1.0, abs=1e-5)
    # the derived spec is the argmax of the final probabilities
    assert res.spec == space.derive({k: torch.tensor(v) for k, v in res.probs.items()})
    assert res.seconds > 0 and res.multipliers == {}


def test_search_history_per_epoch(space, result) -> None:
    res, events = result
    h = res.history
    assert [r["epoch"] for r in h] == [1, 2, 3]
    assert [r["phase"] for r in h] == ["warmup", "arch", "arch"]
    assert h[0]["val_acc"] is None and all(0 <= r["val_acc"] <= 1 for r in h[1:])
    assert h[0]["tau"] == pytest.approx(CFG.tau_start) and h[-1]["tau"] == pytest.approx(CFG.tau_end)
    assert all(0 <= r["entropy"] <= 1 for r in h)
    assert h[-1]["derived"] == res.spec.hash() and h[-1]["data"] == res.spec.data.key()
    assert all(r["train_loss"] > 0 and 0 <= r["train_acc"] <= 1 for r in h)
    assert [f["epoch"] for e, f in events if e == "search.epoch"] == [1, 2, 3]
    starts = [f for e, f in events if e == "progress.start"]
    assert starts and starts[0]["total"] == 3 and "gumbel" in starts[0]["desc"]
    assert sum(f["n"] for e, f in events if e == "progress.update") == 3


def test_arch_step_moves_the_logits_only_after_warmup(space, splits) -> None:
    res = run_search(space, *splits, [], replace(CFG, epochs=1, warmup_frac=1.0), seed=0)
    assert res.history[0]["phase"] == "arch"  # at least one epoch always updates the architecture
    assert any(abs(x - 1 / len(v)) > 1e-4 for v in res.probs.values() for x in v)


def test_search_is_deterministic_under_a_seed(space, splits, result) -> None:
    again = run_search(space, *splits, [], CFG, seed=0)
    first, _ = result
    assert again.probs == first.probs
    assert [r["train_loss"] for r in again.history] == [r["train_loss"] for r in first.history]


def test_checkpoint_resume_continues_from_the_saved_epoch(space, splits, tmp_path: Path) -> None:
    ck = tmp_path / "search.pt"

    def stop_at_3(rec: dict[str, Any]) -> None:
        if rec["epoch"] == 3:
            raise Stop

    with pytest.raises(Stop):
        run_search(space, *splits, [], CFG, seed=0, checkpoint=ck, epoch_hook=stop_at_3)
    saved = torch.load(ck, weights_only=False)
    assert saved["epoch"] == 2 and len(saved["history"]) == 2
    assert not list(tmp_path.glob("*.tmp"))
    events: list[tuple[str, dict[str, Any]]] = []
    res = run_search(space, *splits, [], CFG, seed=0, checkpoint=ck, sink=lambda e, **f: events.append((e, f)))
    assert ("search.resumed", {"epoch": 2}) in events
    assert [f["epoch"] for e, f in events if e == "search.epoch"] == [3]  # only the missing epoch ran
    assert [r["epoch"] for r in res.history] == [1, 2, 3]
    assert res.history[:2] == saved["history"]
    assert torch.load(ck, weights_only=False)["epoch"] == 3
    space.check(res.spec)
    # a finished checkpoint resumes to the same result without running an epoch
    events.clear()
    res2 = run_search(space, *splits, [], CFG, seed=0, checkpoint=ck, sink=lambda e, **f: events.append((e, f)))
    assert not [e for e, _ in events if e == "search.epoch"]
    assert res2.probs == res.probs and res2.history == res.history


def test_resumed_search_matches_uninterrupted(space, splits, result, tmp_path: Path) -> None:
    ck = tmp_path / "search.pt"

    def stop_at_2(rec: dict[str, Any]) -> None:
        if rec["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        run_search(space, *splits, [], CFG, seed=0, checkpoint=ck, epoch_hook=stop_at_2)
    resumed = run_search(space, *splits, [], CFG, seed=0, checkpoint=ck)
    first, _ = result
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in first.history]
    assert resumed.probs == first.probs


def test_tight_ram_budget_raises_its_multiplier(space, splits) -> None:
    ram = cost.peak_ram(space)
    cheapest = min(ram.cost(s) for s in space.cheapest_candidates())
    c = Constraint("ram", 1.2 * cheapest, ram)
    uniform = {p.name: torch.full((len(p.options),), 1 / len(p.options)) for p in space.choice_points()}
    assert float(ram.expected_cost(uniform)) > c.limit  # violated at the start
    res = run_search(space, *splits, [c], replace(CFG, epochs=2, warmup_frac=0.0), seed=0)
    lambdas = [r["lambda_ram"] for r in res.history]
    assert 1.0 < lambdas[0] < lambdas[1]  # dual ascent while the expected cost exceeds the budget
    assert res.multipliers["ram"] == lambdas[-1] == c.multiplier
    assert res.history[-1]["expected_ram"] < float(ram.expected_cost(uniform))
    assert res.history[-1]["derived_ram"] == ram.cost(res.spec)
    fixed, _ = repair(space, res.spec, {k: torch.tensor(v) for k, v in res.probs.items()}, [c])
    assert c.holds(fixed)


def test_loose_budget_multiplier_falls(space, splits) -> None:
    ram = cost.peak_ram(space)
    c = Constraint("ram", 1e9, ram)
    res = run_search(space, *splits, [c], replace(CFG, epochs=1, warmup_frac=0.0), seed=0)
    assert res.history[0]["phase"] == "arch"
    assert res.multipliers["ram"] < 1.0


def test_darts_and_data_choices(splits) -> None:
    space = tiny_space(n_mfcc=(10, 20))
    datas = space.data_configs()
    assert len(datas) == 2
    train = [toy_split(32, d.feature_shape, seed=3) for d in datas]
    val = [toy_split(16, d.feature_shape, seed=4) for d in datas]
    res = run_search(space, train, val, [], replace(CFG, strategy="darts", epochs=1, warmup_frac=0.0, batch_size=16),
                     seed=0)
    space.check(res.spec)
    assert res.history[-1]["data"] in {d.key() for d in datas}
    assert res.probs["data.n_mfcc"] != [0.5, 0.5]  # the data logits receive gradients too
    assert sum(res.probs["data.n_mfcc"]) == pytest.approx(1.0, abs=1e-5)


def test_gumbel_hard_single_path_search(space, splits) -> None:
    """The straight-through single path (no longer the default) still searches end to end."""
    events: list[tuple[str, dict[str, Any]]] = []
    res = run_search(space, *splits, [], replace(CFG, strategy="gumbel-hard", epochs=1, warmup_frac=0.0), seed=0,
                     sink=lambda e, **f: events.append((e, f)))
    space.check(res.spec)
    assert res.history[0]["phase"] == "arch" and 0 <= res.history[0]["val_acc"] <= 1
    assert any("gumbel-hard" in f["desc"] for e, f in events if e == "progress.start")
    moved = [p.name for p in space.arch_points if len(p.options) > 1
             and res.probs[p.name] != pytest.approx([1 / len(p.options)] * len(p.options), abs=1e-6)]
    assert moved  # the arch logits receive straight-through gradients


def test_phase_plan() -> None:
    cfg = SearchConfig(epochs=30, data_first=True)
    assert phases(cfg, 12) == ["warmup"] * 9 + ["rewarm"] * 6 + ["arch"] * 15
    assert phases(cfg, 1) == ["warmup"] * 9 + ["arch"] * 21  # one data configuration: nothing to choose first
    assert phases(SearchConfig(epochs=30), 12) == ["warmup"] * 9 + ["arch"] * 21  # the default: one stage
    # too few epochs for three stages: the single-stage plan, still ending in an arch epoch
    assert phases(replace(cfg, epochs=2, warmup_frac=0.5), 4) == ["warmup", "arch"]
    assert phases(replace(cfg, epochs=1, warmup_frac=1.0), 4) == ["arch"]
    assert phases(replace(cfg, epochs=3, warmup_frac=0.34), 4) == ["warmup", "rewarm", "arch"]


def test_data_first_scores_and_freezes_the_data_then_searches_the_architecture(tmp_path: Path) -> None:
    space = tiny_space(n_mfcc=(10, 20))
    datas = space.data_configs()
    train = [toy_split(32, d.feature_shape, seed=3) for d in datas]
    val = [toy_split(16, d.feature_shape, seed=4) for d in datas]
    # a RAM budget only the 10-coefficient option can meet under the warm-up's uniform mixture
    ram = cost.peak_ram(space)
    uniform = {p.name: torch.full((len(p.options),), 1 / len(p.options)) for p in space.choice_points()}

    def at(d: int) -> float:
        return float(ram.expected_cost({**uniform, "data.n_mfcc": torch.eye(2)[d]}))

    assert at(0) < at(1)
    budget = Constraint("ram", (at(0) + at(1)) / 2, ram)
    cfg = replace(CFG, epochs=4, warmup_frac=0.25, batch_size=16, data_first=True)
    assert phases(cfg, 2) == ["warmup", "rewarm", "arch", "arch"]
    ck = tmp_path / "search.pt"

    def stop_after_warmup(rec: dict[str, Any]) -> None:
        if rec["epoch"] == 2:  # the checkpoint holds epoch 1, the warm-up
            raise Stop

    events: list[tuple[str, dict[str, Any]]] = []
    with pytest.raises(Stop):
        run_search(space, train, val, [budget], cfg, seed=0, checkpoint=ck, epoch_hook=stop_after_warmup,
                   sink=lambda e, **f: events.append((e, f)))
    frozen = [f for e, f in events if e == "search.data_frozen"]
    assert len(frozen) == 1
    scores = frozen[0]["scores"]
    assert [r["data"] for r in scores] == [datas[0].key(), datas[1].key()]  # the over-budget option scores worse
    assert scores[0]["penalty"] == 0.0 and scores[1]["penalty"] > 0.0
    assert all(r["score"] == pytest.approx(r["val_loss"] + r["penalty"]) and 0 <= r["val_acc"] <= 1 for r in scores)
    assert torch.load(ck, weights_only=False)["frozen"] == {}

    events.clear()
    res = run_search(space, train, val, [budget], cfg, seed=0, checkpoint=ck, sink=lambda e, **f: events.append((e, f)))
    # resumed before the freeze, the search scores the options again and freezes the same one
    assert [f["data"] for e, f in events if e == "search.data_frozen"] == [datas[0].key()]
    assert [r["phase"] for r in res.history] == ["warmup", "rewarm", "arch", "arch"]
    assert {r["data"] for r in res.history[1:]} == {datas[0].key()} and res.spec.data == datas[0]
    assert res.probs["data.n_mfcc"] == [1.0, 0.0]  # frozen: a one-hot constant
    assert [r["data"] for r in res.data_scores] == [r["data"] for r in scores]  # kept for the report
    assert res.history[1]["val_acc"] is None  # the re-warm trains weights only
    assert any(res.probs[p.name] != pytest.approx([1 / len(p.options)] * len(p.options), abs=1e-6)
               for p in space.arch_points if len(p.options) > 1)
    assert torch.load(ck, weights_only=False)["frozen"] == {"data.sample_rate": 0, "data.n_mfcc": 0, "data.window": 0}
    # resumed after the freeze, the search keeps the frozen data (the checkpoint carries it)
    events.clear()
    again = run_search(space, train, val, [budget], replace(cfg, epochs=5), seed=0, checkpoint=ck,
                       sink=lambda e, **f: events.append((e, f)))
    assert not [e for e, _ in events if e == "search.data_frozen"]
    assert again.history[-1]["data"] == datas[0].key() and again.probs["data.n_mfcc"] == [1.0, 0.0]
    assert again.data_scores == res.data_scores


def test_cross_splits_pool_train_and_val_into_disjoint_stratified_folds(splits) -> None:
    from edgenas.search import cross_splits

    train, val = splits
    assert cross_splits(train, val, 0, seed=0) == [(train, val)]
    parts = cross_splits(train, val, 3, seed=0)
    assert len(parts) == 3
    n = len(train[0].y) + len(val[0].y)
    pooled = torch.cat([train[0].x, val[0].x]).flatten(1)
    seen = []
    for tr, va in parts:
        assert len(tr[0].y) + len(va[0].y) == n
        # every val case is a pooled case, none of them also in that member's train part
        rows = {tuple(r.tolist()) for r in va[0].x.flatten(1)}
        assert not rows & {tuple(r.tolist()) for r in tr[0].x.flatten(1)}
        seen += sorted(rows)
        # stratified: each class's count differs by at most one between the folds
    counts = [torch.bincount(va[0].y, minlength=3) for _, va in parts]
    assert int((torch.stack(counts).max(0).values - torch.stack(counts).min(0).values).max()) <= 1
    assert len(seen) == len(set(seen)) == n and set(seen) == {tuple(r.tolist()) for r in pooled}


def test_k_fold_validation_search_trains_k_supernets_and_resumes(space, splits, tmp_path: Path) -> None:
    cfg = replace(CFG, val_folds=3)
    ck = tmp_path / "search.pt"

    def stop_at_3(rec: dict[str, Any]) -> None:
        if rec["epoch"] == 3:
            raise Stop

    with pytest.raises(Stop):
        run_search(space, *splits, [], cfg, seed=0, checkpoint=ck, epoch_hook=stop_at_3)
    saved = torch.load(ck, weights_only=False)
    assert len(saved["net"]) == len(saved["w_opt"]) == len(saved["sched"]) == 3
    # three different supernets: each trained on its own folds
    flat = [torch.cat([v.flatten().float() for v in n.values()]) for n in saved["net"]]
    assert not torch.equal(flat[0], flat[1]) and not torch.equal(flat[1], flat[2])
    resumed = run_search(space, *splits, [], cfg, seed=0, checkpoint=ck)
    whole = run_search(space, *splits, [], cfg, seed=0)
    space.check(whole.spec)
    assert resumed.probs == whole.probs
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in whole.history]
    # the logits moved on the held-out folds (not the single-split search's result)
    single = run_search(space, *splits, [], CFG, seed=0)
    assert whole.probs != single.probs
    assert all(r["val_acc"] is not None for r in whole.history if r["phase"] == "arch")
    # a checkpoint of another fold count is refused, not silently mixed
    with pytest.raises(ValueError, match="3 supernets"):
        run_search(space, *splits, [], CFG, seed=0, checkpoint=ck)
