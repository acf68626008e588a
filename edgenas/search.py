"""Bilevel search: weights on the train split, architecture and data logits on the val split.

One step samples a data configuration (and, for single-path strategies, one op per choice
point), updates the supernet weights on a train batch, then — after the warm-up epochs —
updates the choice logits on a val batch with ``task loss + Σ_k λ_k·hinge(E[cost_k]/B_k − 1)
+ entropy pressure``, raising each λ_k while its budget is violated. The test split never
reaches this module.

With ``val_folds`` = k > 1 (off by default) the architecture step is validated k-fold, for
datasets so small that one val split's architecture signal is noise (a UCR set of 40–270 cases
leaves 10–55 val cases): train + val are pooled into k stratified folds, k supernets share the
choice logits, supernet j's weights train on the folds other than j, and every logits step takes
the mean val loss of the k supernets, each on a batch of its own held-out fold. Every case is
validation data for one supernet and never for one whose weights saw it; the weight steps cost
k× the single split's.

With ``data_first`` (off by default; it acts when the space has more than one data
configuration) the data configuration is chosen before the architecture (see :func:`phases`):
after the warm-up, every data option is scored on the whole val split with the objective the
logits follow (val cross-entropy under the warm-up's architecture mixture + the constraint
terms at that option), the best is frozen, the weights re-warm on it alone, and the
architecture logits are searched for it. Why it was tried (bench/RESULTS.md §2, Arabic speech
commands): searched all at once, the architecture committed while the weights, shared by twelve
data options, were still undertrained on the one chosen, and it derived narrower networks than
the same search with the data fixed. Gradient steps on the data logits alone (three epochs)
left them near uniform, so their argmax was close to a coin flip; the options are few enough to
score exactly. Data first derived networks as wide as the fixed-data search's and searched in
43% less time, but was not more accurate over three seeds (−0.2 points joint, −0.6 with the
data fixed; within one standard deviation), so the single stage stays the default. With the
kws-dscnn space's ``share_stem`` (one supernet stem for all data options) it scored 97.1 ± 0.9
against the default's 96.4 ± 0.7, one seed of three going the other way; both stay opt-in.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from edgenas.constraints import Constraint
from edgenas.events import EventSink, null_sink, progress
from edgenas.spaces.base import SearchSpace
from edgenas.spec import ArchSpec
from edgenas.strategies import STRATEGIES, Strategy
from edgenas.tasks.base import Classification

CLASSIFICATION = Classification()  # the objective of every classification task (kws, image, …)


@dataclass(frozen=True)
class SearchConfig:
    strategy: str = "gumbel"
    epochs: int = 12
    warmup_frac: float = 0.3  # share of the epochs that train weights only (uniform sampling)
    batch_size: int = 64
    weight_lr: float = 3e-3
    weight_decay: float = 1e-4
    arch_lr: float = 0.05
    tau_start: float = 4.0
    tau_end: float = 0.3
    entropy_weight: float = 1.5  # ramps from 0 to this over the arch epochs: commit before deriving
    dual_lr: float = 0.5
    margin: float = 0.05
    latency_target: bool = False  # the latency budget as a target (two-sided term), not only a limit
    data_first: bool = False  # score and freeze the data configuration, then search the architecture
    # after deriving, switch architecture choices to larger ones while the predicted costs stay
    # within (1 - margin) of every budget (edgenas.constraints.fill); then repair as usual
    fill_budget: bool = False
    max_steps_per_epoch: int = 0  # 0 = one pass over the train split
    # k > 1: k-fold validation for the architecture step. train + val are pooled and cut into k
    # stratified folds; k supernets share the choice logits, supernet j trains its weights on the
    # other folds and the logits step on the mean loss of every supernet on its own held-out fold,
    # so every case is validation data once and never for weights that saw it (k× the weight steps)
    val_folds: int = 0


@dataclass
class SplitTensors:
    x: torch.Tensor  # [N, C, H, W]
    y: torch.Tensor  # [N] class labels, or [N, C', H', W'] targets (super-resolution)
    groups: Any = None  # [N] int (numpy): the item each example is part of (Split.groups), or None


@dataclass
class _Member:
    """One supernet of the search: its weights, optimiser and schedule, and the splits it trains
    its weights on and validates the choice logits on (one member unless ``val_folds`` > 1)."""

    net: torch.nn.Module
    w_opt: torch.optim.Optimizer
    sched: Any
    train: list[SplitTensors]
    val: list[SplitTensors]


def cross_splits(train: list[SplitTensors], val: list[SplitTensors], k: int,
                 seed: int) -> list[tuple[list[SplitTensors], list[SplitTensors]]]:
    """``[(train, val)]`` for ``k`` ≤ 1; else train + val pooled (per data option, the same cases
    in the same order) and cut into ``k`` stratified folds: the (other folds, fold j) pairs."""
    if k <= 1:
        return [(train, val)]
    from edgenas.datasets.ts_prep import stratified_folds

    pooled = [SplitTensors(torch.cat([t.x, v.x]), torch.cat([t.y, v.y])) for t, v in zip(train, val)]
    folds = stratified_folds(pooled[0].y.numpy(), k=k, seed=seed)
    return [([SplitTensors(p.x[torch.from_numpy(tr)], p.y[torch.from_numpy(tr)]) for p in pooled],
             [SplitTensors(p.x[torch.from_numpy(va)], p.y[torch.from_numpy(va)]) for p in pooled])
            for tr, va in folds]


@dataclass
class SearchResult:
    spec: ArchSpec
    probs: dict[str, list[float]]
    history: list[dict[str, Any]] = field(default_factory=list)
    multipliers: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    data_scores: list[dict[str, Any]] = field(default_factory=list)  # data_first: every option's score, best first


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _data_index(space: SearchSpace, gates: dict[str, torch.Tensor]) -> int:
    labels = {p.name: p.options[int(torch.argmax(gates[p.name].detach()))] for p in space.data_points}
    return space.data_index(labels)


def phases(cfg: SearchConfig, n_data: int) -> list[str]:
    """The phase of every epoch. ``warmup``/``rewarm``: weights only, under uniformly sampled
    choices; ``arch``: weights and every unfrozen logit.

    Single stage: warm-up (``warmup_frac``) then arch. With ``data_first`` and several data
    configurations, the data option is scored and frozen after the warm-up and the rest is split
    as a single-stage search at that option: re-warm (``warmup_frac`` of it), then arch."""
    e = cfg.epochs
    warmup = min(int(round(cfg.warmup_frac * e)), max(e - 1, 0))
    rest = e - warmup
    if not (cfg.data_first and n_data > 1) or rest < 2 or warmup < 1:
        return ["warmup"] * warmup + ["arch"] * rest
    rewarm = min(max(1, int(round(cfg.warmup_frac * rest))), rest - 1)
    return ["warmup"] * warmup + ["rewarm"] * rewarm + ["arch"] * (rest - rewarm)


def _phase_progress(plan: list[str], epoch: int) -> float:
    """Position of ``epoch`` within its phase's epochs, 0 … 1 (anneals τ and entropy)."""
    first = plan.index(plan[epoch])
    n = plan.count(plan[epoch])
    return (epoch - first) / max(1, n - 1)


def choose_data(space: SearchSpace, net: torch.nn.Module, strategy: Strategy, val: list[SplitTensors],
                constraints: list[Constraint], cfg: SearchConfig,
                objective: Any = CLASSIFICATION) -> list[dict[str, Any]]:
    """Score every data option on its whole val split: mean loss (``objective``'s, cross-entropy
    by default) of the supernet under
    the current (warm-up) architecture gates + each constraint's term with the data fixed to that
    option. Freezes the data choice points at the best and returns the scores, best first."""
    scores = []
    # batches in a fixed random order, the same clips for every option: the supernet runs in
    # train mode (batch statistics, as in every search step), and a split stored class by class
    # would normalise each batch by one class (scored in storage order: 30% val accuracy, 75% in
    # random batches)
    order = torch.randperm(len(val[0].y), generator=torch.Generator().manual_seed(0))
    for d, data in enumerate(space.data_configs()):
        labels = space.data_labels(data)
        # the option's one-hot over the sampled gates (which still draw their Gumbel noise, so a
        # seed's random stream, and the measured runs in bench/RESULTS.md, stay reproducible)
        onehot = {p.name: F.one_hot(torch.tensor(p.index(labels[p.name])), len(p.options)).float()
                  for p in space.data_points}
        loss = correct = 0.0
        with torch.no_grad():
            for i in range(0, len(order), cfg.batch_size):
                idx = order[i:i + cfg.batch_size]
                x, y = val[d].x[idx], val[d].y[idx]
                logits = net(x, d, {**strategy.gates(), **onehot}, strategy.hard)
                loss += float(objective.loss(logits, y)) * len(y)
                correct += float(objective.hits(logits, y))
            penalty = sum(float(_term(c, {**strategy.probs(sharpen=True), **onehot}, cfg)[0]) for c in constraints)
        n = max(len(val[d].y), 1)
        scores.append({"data": data.key(), "val_loss": loss / n, "val_acc": correct / n, "penalty": penalty,
                       "score": loss / n + penalty, "labels": labels})
    scores.sort(key=lambda r: r["score"])
    for p in space.data_points:
        strategy.freeze(p.name, p.index(scores[0]["labels"][p.name]))
    return scores


def _term(c: Constraint, probs: dict[str, torch.Tensor], cfg: SearchConfig) -> tuple[torch.Tensor, float]:
    """A constraint's term in the choice logits' loss (the latency budget two-sided when it is a target)."""
    return c.term(probs, cfg.margin, two_sided=cfg.latency_target and c.name == "latency")


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def run_search(
    space: SearchSpace,
    train: list[SplitTensors],
    val: list[SplitTensors],
    constraints: list[Constraint],
    cfg: SearchConfig,
    seed: int = 0,
    checkpoint: Path | None = None,
    sink: EventSink | None = None,
    epoch_hook: Callable[[dict[str, Any]], None] | None = None,
    objective: Any = CLASSIFICATION,
) -> SearchResult:
    """``train[d]`` / ``val[d]`` hold the features of data option ``d`` (space.data_configs order).

    ``objective`` (the run's task) gives the loss both steps minimise and the metric reported as
    ``train_acc`` / ``val_acc``: cross-entropy and accuracy unless a task says otherwise."""
    sink = sink or null_sink
    _seed_all(seed)
    splits = cross_splits(train, val, cfg.val_folds, seed)
    nets = [space.supernet() for _ in splits]
    strategy: Strategy = STRATEGIES.get(cfg.strategy)(space.choice_points(), cfg.tau_start, cfg.tau_end)
    a_opt = torch.optim.Adam(strategy.parameters(), lr=cfg.arch_lr, betas=(0.5, 0.999))
    steps = math.ceil(len(splits[0][0][0].y) / cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    members = []
    for net, (tr, va) in zip(nets, splits):
        w_opt = torch.optim.AdamW(net.parameters(), lr=cfg.weight_lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=max(1, cfg.epochs * steps))
        members.append(_Member(net, w_opt, sched, tr, va))
    history: list[dict[str, Any]] = []
    start_epoch, elapsed, gen_state = 0, 0.0, None
    data_scores: list[dict[str, Any]] = []
    if checkpoint is not None and checkpoint.exists():
        st = torch.load(checkpoint, weights_only=False)
        for key in ("net", "w_opt", "sched"):  # one member: the state dicts themselves, else a list
            if not isinstance(st[key], list):
                st[key] = [st[key]]
        if len(st["net"]) != len(members):
            raise ValueError(f"the checkpoint holds {len(st['net'])} supernets, search.val_folds gives {len(members)}")
        for mb, n_st, o_st, s_st in zip(members, st["net"], st["w_opt"], st["sched"]):
            mb.net.load_state_dict(n_st)
            mb.w_opt.load_state_dict(o_st)
            mb.sched.load_state_dict(s_st)
        strategy.load_state_dict(st["strategy"])
        a_opt.load_state_dict(st["a_opt"])
        for c in constraints:
            c.multiplier = st["multipliers"].get(c.name, c.multiplier)
        history, start_epoch, elapsed = st["history"], st["epoch"], st["seconds"]
        for name, index in st.get("frozen", {}).items():
            strategy.freeze(name, index)
        data_scores = st.get("data_scores", [])
        gen_state = st.get("gen")
        torch.set_rng_state(st["torch_rng"])
        random.setstate(st["py_rng"])
        sink("search.resumed", epoch=start_epoch)
    gen = torch.Generator().manual_seed(seed)
    if start_epoch and gen_state is not None:
        gen.set_state(gen_state)
    plan = phases(cfg, len(space.data_configs()))
    t0 = time.perf_counter()
    for mb in members:
        mb.net.train()
    with progress(sink, f"search ({cfg.strategy})", cfg.epochs) as tick:
        if start_epoch:
            tick(start_epoch)
        for epoch in range(start_epoch, cfg.epochs):
            phase = plan[epoch]
            if phase == "rewarm" and not strategy.frozen:
                strategy.anneal(0.0)  # scored under the warm-up's soft architecture mixture
                data_scores = [{k: v for k, v in r.items() if k != "labels"}
                               for r in choose_data(space, members[0].net, strategy, members[0].val, constraints,
                                                    cfg, objective)]
                sink("search.data_frozen", data=data_scores[0]["data"], scores=data_scores)
            arch_phase = phase == "arch"
            frac = _phase_progress(plan, epoch) if arch_phase else 0.0
            strategy.anneal(frac)
            ent_w = cfg.entropy_weight * frac
            tot_loss = tot_acc = n_seen = 0.0
            val_acc = val_n = 0.0
            excess: dict[str, float] = {}
            for _ in range(steps):
                # ---- weight step on train (every supernet, on the cases it trains on) ----
                for mb in members:
                    with torch.no_grad():
                        gates = {k: v.detach() for k, v in strategy.gates().items()}
                    d = _data_index(space, gates)
                    idx = torch.randint(0, len(mb.train[d].y), (cfg.batch_size,), generator=gen)
                    x, y = mb.train[d].x[idx], mb.train[d].y[idx]
                    logits = mb.net(x, d, gates, strategy.hard)
                    loss = objective.loss(logits, y)
                    mb.w_opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(mb.net.parameters(), 5.0)
                    mb.w_opt.step()
                    mb.sched.step()
                    tot_loss += float(loss.detach()) * len(y)
                    tot_acc += float(objective.hits(logits.detach(), y))
                    n_seen += len(y)
                if not arch_phase:
                    continue
                # ---- architecture/data step on val (mean over the supernets, each on its own) ----
                gates = strategy.gates()
                d = _data_index(space, gates)
                a_loss = 0.0
                for mb in members:
                    vidx = torch.randint(0, len(mb.val[d].y), (cfg.batch_size,), generator=gen)
                    vx, vy = mb.val[d].x[vidx], mb.val[d].y[vidx]
                    vlogits = mb.net(vx, d, gates, strategy.hard)
                    a_loss = a_loss + objective.loss(vlogits, vy) / len(members)
                    val_acc += float(objective.hits(vlogits.detach(), vy))
                    val_n += len(vy)
                probs = strategy.probs(sharpen=True)
                for c in constraints:
                    term, ex = _term(c, probs, cfg)
                    a_loss = a_loss + term
                    excess[c.name] = ex
                a_loss = a_loss + ent_w * strategy.entropy()
                a_opt.zero_grad(set_to_none=True)
                for mb in members:
                    mb.w_opt.zero_grad(set_to_none=True)
                a_loss.backward()
                a_opt.step()
                for c in constraints:
                    c.update(excess[c.name], cfg.dual_lr / steps)
            probs = {k: v.detach() for k, v in strategy.probs().items()}
            derived = space.derive(probs)
            rec: dict[str, Any] = {
                "epoch": epoch + 1,
                "phase": phase,
                "train_loss": tot_loss / max(n_seen, 1),
                "train_acc": tot_acc / max(n_seen, 1),
                "val_acc": val_acc / val_n if val_n else None,
                "tau": strategy.tau,
                "entropy": float(strategy.entropy().detach()),
                "derived": derived.hash(),
                "data": derived.data.key(),
            }
            for c in constraints:
                rec[f"expected_{c.name}"] = float(c.model.expected_cost(probs))
                rec[f"derived_{c.name}"] = c.model.cost(derived)
                rec[f"lambda_{c.name}"] = c.multiplier
            history.append(rec)
            sink("search.epoch", **rec)
            tick(1, loss=f"{rec['train_loss']:.3f}", acc=f"{rec['train_acc']:.2f}")
            if epoch_hook:
                epoch_hook(rec)
            if checkpoint is not None:
                one = len(members) == 1  # one member: the state dicts themselves (older checkpoints resume)
                nets_st = [mb.net.state_dict() for mb in members]
                opts_st = [mb.w_opt.state_dict() for mb in members]
                scheds_st = [mb.sched.state_dict() for mb in members]
                _atomic_save({
                    "net": nets_st[0] if one else nets_st, "strategy": strategy.state_dict(),
                    "w_opt": opts_st[0] if one else opts_st, "a_opt": a_opt.state_dict(),
                    "sched": scheds_st[0] if one else scheds_st,
                    "multipliers": {c.name: c.multiplier for c in constraints}, "history": history,
                    "epoch": epoch + 1, "seconds": elapsed + time.perf_counter() - t0,
                    "torch_rng": torch.get_rng_state(), "py_rng": random.getstate(), "gen": gen.get_state(),
                    "frozen": dict(strategy.frozen), "data_scores": data_scores,
                }, checkpoint)
    probs = {k: v.detach() for k, v in strategy.probs().items()}
    return SearchResult(
        spec=space.derive(probs),
        probs={k: [round(float(x), 6) for x in v] for k, v in probs.items()},
        history=history,
        multipliers={c.name: c.multiplier for c in constraints},
        seconds=elapsed + time.perf_counter() - t0,
        data_scores=data_scores,
    )
