"""Time-series quality: edgenas' own methods by 5-fold stratified CV on the UCR/UEA TRAIN sets.

The question: on the five UCR/UEA TRAIN sets, 5-fold stratified CV, same folds as the peers
(``bench/ts_peers.py``), how does the joint data+architecture search compare with the search at a
fixed data configuration, a hand-designed TCN of the same family, and random search at equal
wall-clock — accuracy fp32 and int8, parameters, MACs, int8 latency on litert-cpu?

* Data: ``<data-root>/ucr_uea_timeseries/<Name>`` (GunPoint, ItalyPowerDemand, ACSF1,
  BasicMotions, JapaneseVowels; TRAIN files only). Every run gets ``--set test_fold=<i>/5``: its
  test split is fold i of ``ts_prep.stratified_folds(labels, k=5, seed=0)`` of TRAIN (the run
  seed is 0), the rest is split into train/val (seeded, stratified) for the search. Before any
  run the script asserts, per dataset and fold, that the test cases of the opened run dataset
  (:func:`edgenas.tasks.timeseries.open_run_dataset`) are exactly ``ts_peers.fold_indices``'s
  held-out fold — the folds MiniRocket and DTW were scored on.
* Methods (device ``litert-cpu``, seed 0, the timeseries task's defaults: 300 train epochs, 60
  search epochs, batch 16). With ``--budget hand`` (the default) the hand TCN runs first on each fold
  and its measured end-to-end int8 latency (model + front end, the profile's p10) is the
  ``--max-latency-ms`` of that fold's three searches, so "beats the hand TCN at equal or lower
  latency" is what the rows test; ``--budget none`` runs without budgets (``ts_quality.nobudget.*``):

  - ``joint`` — ``edgenas search --task timeseries`` (data configuration and architecture searched);
  - ``fixed-data`` — the same search with the data configuration fixed to per-series
    z-normalisation, native length, edge padding (``space.factors=1``, ``space.norms=series``,
    ``space.paddings=edge``; the padding matters for the variable-length JapaneseVowels only);
  - ``hand-tcn`` — one fixed spec of the ts-tcn space (priced, trained, exported and measured by
    the pipeline's own stages like any spec): series z, native length, edge padding; stem kernel 7,
    stride 1 (4 if the length exceeds 300), width 16; 4 running blocks of kernel 5, dilations
    1, 2, 4, 8, width 16, residual, non-causal;
  - ``random`` — specs sampled uniformly from the space (within the budgets, if any), each trained
    ``--random-epochs`` on the train split and scored on val until the ``joint`` run's search
    seconds of the same fold are spent; the best retrained with the full recipe and tested;
  - ``joint-kfold`` (only with ``--methods``) — ``joint`` with ``search.val_folds=3``: the
    architecture step validated 3-fold on train + val (:mod:`edgenas.search`), paired with
    ``joint`` on the same folds.

Per row: test accuracy fp32 (torch) and int8 (the device's format, TFLite; the ONNX int8 accuracy
too), parameters, MACs, int8 model latency on litert-cpu (the profile's statistic, p10, and the
median) and, measured here on the exported ONNX int8 file, on onnxruntime-cpu; the data
configuration; search seconds; the run directory.

Summary: per dataset and method mean ± std over folds; paired differences (joint − hand-tcn,
joint − fixed-data, joint − random) over folds with 95% t intervals; MiniRocket and 1-NN DTW from
``results/ts_peers.json`` (not rerun) side by side; whether the goal "int8 within 1 point of
MiniRocket with ≤ 20 k parameters" holds per dataset.

    python bench/ts_quality.py                      # everything: 5 datasets × 4 methods × 5 folds
    python bench/ts_quality.py --quick              # GunPoint + ItalyPowerDemand, folds 1-2, joint + hand-tcn
    python bench/ts_quality.py --report-only        # tables and plot from the rows so far

Rows go to ``results/ts_quality.jsonl`` (a row already there is not run again; an interrupted
edgenas run resumes). Runs live in ``results/runs/timeseries/``.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from ts_peers import fold_indices  # noqa: E402

DATASETS = ("GunPoint", "ItalyPowerDemand", "ACSF1", "BasicMotions", "JapaneseVowels")
METHODS = ("joint", "fixed-data", "hand-tcn", "random", "joint-kfold")
DEFAULT_METHODS = METHODS[:4]  # joint-kfold: on request (--methods), the val_folds question
PAIRS = (("joint", "hand-tcn"), ("joint", "fixed-data"), ("joint", "random"), ("fixed-data", "hand-tcn"),
         ("joint-kfold", "joint"))
KFOLD = ["search.val_folds=3"]
K = 5  # folds
FOLD_SEED = 0  # = the run seed: open_run_dataset folds with seed=cfg.seed
FIXED_DATA = ["space.factors=1", "space.norms=series", "space.paddings=edge"]
GOAL_POINTS, GOAL_PARAMS = 1.0, 20_000
DEVICE = "litert-cpu"


def log(msg: str) -> None:
    print(f"[ts_quality {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _edgenas(args: list[str]) -> dict[str, Any]:
    return common.edgenas_search(args, "ts_quality")


def data_dir(root: Path, name: str) -> Path:
    return root / "ucr_uea_timeseries" / name


def check_folds(name: str, root: Path) -> list[int]:
    """Assert that ``test_fold=i/5`` of the run dataset is ``ts_peers.fold_indices``'s fold i, for
    every i; returns the fold sizes."""
    from edgenas.tasks.timeseries import open_run_dataset

    folds = fold_indices(name, root, k=K, seed=FOLD_SEED)
    sizes = []
    for i in range(1, K + 1):
        ds = open_run_dataset(str(data_dir(root, name)), seed=FOLD_SEED, test_fold=f"{i}/{K}")
        test = sorted(c.index for c in ds.splits["test"])
        assert all(c.source == "train" for c in ds.splits["test"])
        peer = sorted(int(j) for j in folds[i - 1][1])
        if test != peer:
            raise SystemExit(f"ts_quality: {name} fold {i}: the run's test split is not ts_peers' fold "
                             f"({len(test)} vs {len(peer)} cases, {len(set(test) ^ set(peer))} differ)")
        seen = {c.index for s in ("train", "val", "test") for c in ds.splits[s]}
        assert len(seen) == sum(len(ds.splits[s]) for s in ("train", "val", "test")), "splits overlap"
        sizes.append(len(test))
    return sizes


class Cell:
    """One dataset and fold."""

    def __init__(self, a: Any, name: str, fold: int, hand: dict[str, Any] | None = None) -> None:
        """``hand``: this fold's hand-tcn row; with ``--budget hand`` the searches get its measured
        end-to-end latency (model + front end, the profile's statistic) as their latency budget."""
        self.a, self.dataset, self.fold = a, name, fold
        self.runs = a.out / ("runs" if a.budget == "none" else f"runs-{a.budget}")
        self.data = str(data_dir(a.data_root, name))
        self.max_ram_kb = a.max_ram_kb
        self.max_latency_ms = a.max_latency_ms
        if a.budget == "hand" and hand is not None:
            self.max_latency_ms = hand_budget_ms(hand)

    def name(self, method: str) -> str:
        return f"{self.dataset}-f{self.fold}of{K}-s0-{method}"

    def budgets(self) -> list[str]:
        out = []
        if self.max_ram_kb:
            out += ["--max-ram-kb", str(self.max_ram_kb)]
        if self.max_latency_ms:
            out += ["--max-latency-ms", f"{self.max_latency_ms:.6g}"]
        return out

    def base(self) -> list[str]:
        return ["--task", "timeseries", "--data", self.data, "--device", DEVICE, "--seed", "0",
                "--set", f"test_fold={self.fold}/{K}", "--runs-dir", str(self.runs), *self.budgets()]

    def row(self, method: str, m: dict[str, Any], search_s: float, **extra: Any) -> dict[str, Any]:
        lat = m["latency_ms"]
        row = {"dataset": self.dataset, "fold": self.fold, "method": method, "device": DEVICE,
               "cpu": common.cpu_model(), "test_fp32": m["accuracy"]["test_fp32_torch"],
               "test_int8": m["accuracy"]["test_int8"], "test_onnx_int8": m["accuracy"].get("test_onnx_int8"),
               "params": m["params"], "macs": m["macs"], "int8_ms": lat["budgeted"],
               "int8_ms_median": lat.get("int8_median"), "latency_stat": lat.get("statistic"),
               "frontend_ms": lat.get("frontend_budgeted"),
               "ram_kb": m["ram_bytes"]["int8_graph"] / 1024, "flash_kb": m["flash_bytes"]["int8_file"] / 1024,
               "budgets": {k: v.get("holds") for k, v in m["budgets"].items()},
               "data_config": m["data_config"], "data_description": m.get("data_description"),
               "choices": m.get("choices"), "search_s": search_s, "run": m["run_dir"],
               "splits": m["dataset"].get("splits"), "stage_seconds": m.get("stage_seconds"), **extra}
        if self.a.onnx:
            row.update(onnx_latency(Path(m["run_dir"])))
        return row

    def edgenas(self, method: str) -> dict[str, Any]:
        name = self.name(method)
        if (self.runs / "timeseries" / name / "state.json").exists():
            m = _edgenas(["--runs-dir", str(self.runs), "--name", name, "--resume"])
        else:
            sets = {"joint": [], "joint-kfold": KFOLD, "fixed-data": FIXED_DATA}[method]
            sets = [x for s in sets for x in ("--set", s)]
            m = _edgenas(self.base() + ["--name", name] + sets)
        state = json.loads((Path(m["run_dir"]) / "state.json").read_text())
        return self.row(method, m, state["stages"]["search"]["seconds"])

    def pipeline(self, name: str, sets: list[str]) -> Any:
        from edgenas import config as C
        from edgenas.pipeline import Pipeline
        from edgenas.runs import RunDir

        flags = {"task": "timeseries", "data": self.data, "device": DEVICE, "seed": 0,
                 "test_fold": f"{self.fold}/{K}", "max_latency_ms": self.max_latency_ms or 0.0,
                 "max_ram_kb": self.max_ram_kb or 0.0}
        cfg = C.resolve(sets=sets, flags=flags)
        path = self.runs / "timeseries" / name
        run = RunDir(path, resume=(path / "state.json").exists())
        return Pipeline(cfg, run), run

    def hand_spec(self, space: Any) -> Any:
        """The hand-designed TCN as a spec of ``space`` (nearest options where one is missing)."""
        def near(point: str, want: int) -> str:
            opts = space.point(point).options
            return min(opts, key=lambda o: (abs(int(o) - want), int(o)))

        sel = {"data.length": "1", "data.norm": "series", "causal": "no", "stem.kernel": near("stem.kernel", 7),
               "stem.stride": near("stem.stride", 1 if space.length <= 300 else 4),
               "stem.width": near("stem.width", 16)}
        if not space.equal_length:
            sel["data.padding"] = "edge"
        for i, d in enumerate((1, 2, 4, 8)[:space.cfg.n_blocks]):
            sel.update({f"block{i}.depth": "run", f"block{i}.kernel": near(f"block{i}.kernel", 5),
                        f"block{i}.dilation": near(f"block{i}.dilation", d), f"block{i}.width": near(f"block{i}.width", 16),
                        f"block{i}.residual": "yes"})
        return space.spec(sel)

    def hand_tcn(self) -> dict[str, Any]:
        return self.fixed_spec("hand-tcn", self.hand_spec, 0.0, FIXED_DATA)

    def random_search(self, seconds: float) -> dict[str, Any]:
        import dataclasses

        import torch

        from edgenas.train import evaluate, train_model

        p, run = self.pipeline(self.name("random") + "-probe", [])
        with run:
            if not run.done("config"):
                run.mark("config", {}, 0.0)
            constraints = p.constraints()  # the search's own cost models, end to end (front end priced)

            def feasible(spec: Any) -> bool:
                return all(c.ratio(spec) <= 1.0 for c in constraints)

            short = dataclasses.replace(p.cfg.train, epochs=self.a.random_epochs)
            rng = random.Random(0)
            t0, tried = time.perf_counter(), []
            while time.perf_counter() - t0 < seconds or not tried:
                spec = next(s for s in (p.space.sample(rng) for _ in range(100000)) if feasible(s))
                va = p.features("val", spec.data)
                torch.manual_seed(0)
                model = p.space.build(spec)
                train_model(model, *p.training_set(spec.data), short, p.task, seed=0)
                tried.append({"spec": spec, "val": evaluate(model, va.x, va.y, p.task)})
            best = max(tried, key=lambda t: t["val"])
            spent = time.perf_counter() - t0
        return self.fixed_spec("random", best["spec"], spent, [], candidates=len(tried), best_val=best["val"],
                               random_epochs=self.a.random_epochs)

    def fixed_spec(self, method: str, spec: Any, search_s: float, sets: list[str], **extra: Any) -> dict[str, Any]:
        """``spec`` (or ``spec(space)``) through the pipeline's own train → export → measure → report stages."""
        p, run = self.pipeline(self.name(method), sets)
        with run:
            if callable(spec):
                spec = spec(p.space)
            m = common.run_fixed_spec(p, run, spec, search_s)
            extra["description"] = p.space.describe(spec)
        return self.row(method, m, search_s, **extra)


def hand_budget_ms(hand: dict[str, Any]) -> float:
    """The hand TCN's measured end-to-end latency (model + front end), ms: the searches' budget."""
    return hand["int8_ms"] + (hand.get("frontend_ms") or 0.0)


_ORT: Any = None


def onnx_latency(run_dir: Path) -> dict[str, Any]:
    """The run's exported ONNX int8 model measured on onnxruntime-cpu (stored, so a rerun reads it)."""
    global _ORT
    path = run_dir / "export" / "model.int8.onnx"
    if not path.is_file():
        return {"onnx_int8_ms": None}
    try:
        from edgenas.config import MeasureConfig
        from edgenas.devices.measure import measure_cached
        from edgenas.devices.profiles import measure_defaults
        from edgenas.devices.registry import get_device
        from edgenas.store import Store

        if _ORT is None:
            dev = get_device("onnxruntime-cpu")
            dev.check()
            _ORT = (dev, Store(None), measure_defaults(dev), MeasureConfig())
        dev, store, md, mc = _ORT
        meas = measure_cached(dev, store, path, kind="model", fmt="onnx-int8", runs=mc.runs, warmup=mc.warmup,
                              loads=md.loads)
        return {"onnx_int8_ms": meas.stat(md.latency_stat), "onnx_stat": md.latency_stat}
    except Exception as e:  # optional: a missing runtime is a note, not a failed row
        return {"onnx_int8_ms": None, "onnx_error": f"{type(e).__name__}: {e}"}


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["dataset"], r["fold"], r["method"])


def peers(out: Path) -> dict[str, dict[str, Any]]:
    """MiniRocket and DTW headline results per dataset from ``ts_peers.json`` (not rerun)."""
    path = out / "ts_peers.json"
    if not path.is_file():
        return {}
    res = {}
    for d in json.loads(path.read_text())["datasets"]:
        e = {}
        for m in ("minirocket", "dtw"):
            s = d["methods"][m].get(d["headline_variant"][m]) or {}
            if s.get("supported"):
                e[m] = {"mean": s["mean"], "std": s["std"], "fold_acc": s["fold_acc"],
                        "variant": d["headline_variant"][m]}
        res[d["dataset"]] = e
    return res


def _ms(vals: list[float], f: str = ".1f") -> str:
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    return f"{statistics.mean(vals):{f}} ± {statistics.stdev(vals):{f}}" if len(vals) > 1 else f"{vals[0]:{f}}"


def summarize(rows: list[dict[str, Any]], peer: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    out, pairs, goals, data = [], [], [], {"pairs": [], "goal": {}}
    names = [d for d in DATASETS if any(r["dataset"] == d for r in rows)]
    for d in names:
        pr = peer.get(d, {})
        for m in METHODS:
            rs = sorted((r for r in rows if r["dataset"] == d and r["method"] == m), key=lambda r: r["fold"])
            if not rs:
                continue
            cfgs = sorted({f"{r['data_config']['factor']}/{r['data_config']['norm']}"
                           + ("" if r["data_config"].get("padding") == "zero" else f"/{r['data_config']['padding']}")
                           for r in rs})
            out.append([d, m, ",".join(str(r["fold"]) for r in rs), _ms([100 * r["test_fp32"] for r in rs]),
                        _ms([100 * r["test_int8"] for r in rs]), _ms([r["params"] / 1e3 for r in rs], ".2f"),
                        _ms([r["macs"] / 1e3 for r in rs], ".0f"), _ms([1e3 * r["int8_ms"] for r in rs], ".1f"),
                        _ms([1e3 * r["onnx_int8_ms"] if r.get("onnx_int8_ms") else None for r in rs], ".1f"),
                        _ms([r["search_s"] for r in rs], ".0f"), " ".join(cfgs)])
        for pm, label in (("minirocket", "MiniRocket (ts_peers)"), ("dtw", "1-NN DTW (ts_peers)")):
            if pm in pr:
                out.append([d, label, "1-5", "", f"{100 * pr[pm]['mean']:.1f} ± {100 * pr[pm]['std']:.1f}",
                            "", "", "", "", "", pr[pm]["variant"]])
        by = {(r["method"], r["fold"]): r for r in rows if r["dataset"] == d}
        for mine, other in PAIRS:
            folds = sorted(f for (m, f) in by if m == other and (mine, f) in by)
            if len(folds) < 2:
                continue
            for what in ("test_int8", "test_fp32"):
                dd = [100 * (by[(mine, f)][what] - by[(other, f)][what]) for f in folds]
                mean, sd, lo, hi = common.paired_interval(dd)
                pairs.append([d, f"{mine} − {other}", what.removeprefix("test_"), len(dd), f"{mean:+.2f} ± {sd:.2f}",
                              f"[{lo:+.2f}, {hi:+.2f}]", f"{sum(x > 0 for x in dd)}/{sum(x < 0 for x in dd)}"])
                data["pairs"].append({"dataset": d, "method": mine, "other": other, "metric": what, "folds": folds,
                                      "diffs": dd, "mean": mean, "std": sd, "lo": lo, "hi": hi})
        if "minirocket" in pr:
            mr = 100 * pr["minirocket"]["mean"]
            for m in METHODS:
                rs = [r for r in rows if r["dataset"] == d and r["method"] == m]
                if not rs:
                    continue
                acc = statistics.mean(100 * r["test_int8"] for r in rs)
                params = max(r["params"] for r in rs)
                # MiniRocket over the same folds as the method, so a partial row compares like with like
                mr_same = 100 * statistics.mean(pr["minirocket"]["fold_acc"][r["fold"] - 1] for r in rs)
                holds = acc >= mr_same - GOAL_POINTS and params <= GOAL_PARAMS
                goals.append([d, m, len(rs), f"{acc:.1f}", f"{mr_same:.1f}", f"{acc - mr_same:+.1f}",
                              f"{params / 1e3:.1f}", "yes" if holds else "no"])
                data["goal"].setdefault(d, {})[m] = {"int8": acc, "minirocket_same_folds": mr_same,
                                                     "minirocket_all_folds": mr, "max_params": params,
                                                     "folds": len(rs), "holds": holds}
    versus = versus_hand(rows, data)
    text = common.table(["dataset", "method", "folds", "test fp32 %", "test int8 %", "k params", "k MACs",
                         "int8 µs litert-cpu", "int8 µs onnxruntime-cpu", "search s", "data config(s)"], out)
    if pairs:
        text += ("\n\nPaired by fold (same test cases), method − other, accuracy points; 95% t interval over "
                 "folds; ahead = folds ahead/behind:\n\n")
        text += common.table(["dataset", "pair", "metric", "folds", "difference", "95% t interval", "ahead/behind"],
                             pairs)
    if versus:
        text += ("\n\nAgainst the hand TCN, fold by fold (same test cases): e2e µs = measured end-to-end int8 "
                 "latency (model + front end, litert-cpu p10, each run's own measure stage); ≤ hand = folds whose "
                 "e2e latency is at most the hand TCN's of that fold; Δ int8 = mean paired difference, points; "
                 "params ÷ = hand TCN parameters / method parameters (geometric mean over folds, PIT's yardstick); "
                 "beats = ahead in int8 accuracy on average with every fold at ≤ the hand TCN's latency; "
                 "level = inside the fold spread (95% t interval includes 0):\n\n")
        text += common.table(["dataset", "method", "folds", "e2e µs", "hand e2e µs", "≤ hand", "Δ int8",
                              "95% t interval", "params ÷", "verdict"], versus)
    if goals:
        text += (f"\n\nGoal: int8 accuracy within {GOAL_POINTS:g} point of MiniRocket (on the same folds) with "
                 f"≤ {GOAL_PARAMS / 1e3:g} k parameters (the largest over folds):\n\n")
        text += common.table(["dataset", "method", "folds", "int8 %", "MiniRocket %", "Δ", "max k params",
                              "goal holds"], goals)
    return text, data


def e2e_ms(r: dict[str, Any]) -> float:
    """A row's measured end-to-end int8 latency (model + front end), ms."""
    return r["int8_ms"] + (r.get("frontend_ms") or 0.0)


def versus_hand(rows: list[dict[str, Any]], data: dict[str, Any]) -> list[list[Any]]:
    """Per dataset and searched method, against the hand TCN on the same folds: latency, accuracy
    difference, parameter reduction, and whether the method beats it at equal or lower latency."""
    import math

    out = []
    data["versus_hand"] = {}
    for d in DATASETS:
        by = {(r["method"], r["fold"]): r for r in rows if r["dataset"] == d}
        for m in ("joint", "fixed-data", "random", "joint-kfold"):
            folds = sorted(f for (mm, f) in by if mm == m and ("hand-tcn", f) in by)
            if not folds:
                continue
            me, hand = [by[(m, f)] for f in folds], [by[("hand-tcn", f)] for f in folds]
            dd = [100 * (a["test_int8"] - b["test_int8"]) for a, b in zip(me, hand)]
            mean, _, lo, hi = common.paired_interval(dd) if len(dd) > 1 else (dd[0], 0.0, float("nan"), float("nan"))
            within = sum(e2e_ms(a) <= e2e_ms(b) for a, b in zip(me, hand))
            ratio = math.exp(statistics.mean(math.log(b["params"] / a["params"]) for a, b in zip(me, hand)))
            if len(dd) > 1 and lo <= 0 <= hi or mean == 0:
                verdict = "level"
            else:
                verdict = "ahead" if mean > 0 else "behind"
            beats = mean > 0 and within == len(folds)
            if beats:
                verdict = "beats" if verdict == "ahead" else "ahead (level)"
            out.append([d, m, len(folds), _ms([1e3 * e2e_ms(a) for a in me], ".1f"),
                        _ms([1e3 * e2e_ms(b) for b in hand], ".1f"), f"{within}/{len(folds)}", f"{mean:+.1f}",
                        f"[{lo:+.1f}, {hi:+.1f}]" if len(dd) > 1 else "–", f"{ratio:.2f}×", verdict])
            data["versus_hand"].setdefault(d, {})[m] = {
                "folds": folds, "diffs": dd, "mean": mean, "lo": lo, "hi": hi, "within_latency": within,
                "params_ratio": ratio, "verdict": verdict, "beats_at_equal_latency": beats}
    return out


def plot(rows: list[dict[str, Any]], peer: dict[str, Any], out: Path, stem: str) -> None:
    plt = common.pyplot()
    names = [d for d in DATASETS if any(r["dataset"] == d for r in rows)]
    if plt is None or not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.8), squeeze=False)
    colours = dict(zip(METHODS, ("C0", "C1", "C3", "C2", "C4")))
    for ax, d in zip(axes[0], names):
        for m in METHODS:
            rs = [r for r in rows if r["dataset"] == d and r["method"] == m]
            if rs:
                ax.scatter([r["params"] / 1e3 for r in rs], [100 * r["test_int8"] for r in rs], c=colours[m],
                           label=m, s=30, alpha=0.8)
        if "minirocket" in peer.get(d, {}):
            ax.axhline(100 * peer[d]["minirocket"]["mean"], color="k", ls="--", lw=1, label="MiniRocket")
        if "dtw" in peer.get(d, {}):
            ax.axhline(100 * peer[d]["dtw"]["mean"], color="grey", ls=":", lw=1, label="1-NN DTW")
        ax.axvline(GOAL_PARAMS / 1e3, color="r", ls="-", lw=0.5)
        ax.set_xscale("log")
        ax.set_title(d, fontsize=10)
        ax.set_xlabel("parameters, k (log)")
    axes[0][0].set_ylabel("test int8 accuracy, % (per fold)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("5-fold CV on TRAIN, litert-cpu int8: accuracy vs parameters (red: 20 k)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / f"{stem}.png", dpi=110)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated dataset names")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"comma-separated, among {', '.join(METHODS)}")
    p.add_argument("--folds", default="1,2,3,4,5", help="comma-separated folds (1-based, of 5)")
    p.add_argument("--budget", choices=("hand", "none"), default="hand",
                   help="hand: every search's latency budget is the hand TCN's measured end-to-end latency on the "
                        "same fold (rows in ts_quality.jsonl); none: no latency budget unless --max-latency-ms "
                        "(rows in ts_quality.nobudget.jsonl)")
    p.add_argument("--max-ram-kb", type=float, default=0.0, help="model RAM budget for the searches (0 = none)")
    p.add_argument("--max-latency-ms", type=float, default=0.0,
                   help="latency budget for the searches with --budget none (0 = none)")
    p.add_argument("--random-epochs", type=int, default=60, help="epochs per random-search candidate")
    p.add_argument("--no-onnx", dest="onnx", action="store_false",
                   help="skip measuring the ONNX int8 file on onnxruntime-cpu")
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args()
    if a.quick:
        a.datasets, a.folds, a.methods = "GunPoint,ItalyPowerDemand", "1,2", "joint,hand-tcn"
    names = [n.strip() for n in a.datasets.split(",") if n.strip()]
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    folds = [int(f) for f in a.folds.split(",") if f.strip()]
    bad = [m for m in methods if m not in METHODS] + [n for n in names if n not in DATASETS]
    if bad or any(not 1 <= f <= K for f in folds):
        raise SystemExit(f"ts_quality: unknown {bad or folds}")
    common.use_bench_dirs(a.out)
    stem = "ts_quality" if a.budget == "hand" else "ts_quality.nobudget"
    rows_path = a.out / f"{stem}.jsonl"
    rows = _rows(rows_path)
    done = {_key(r) for r in rows}
    started = time.time()
    fold_sizes = {}
    if not a.report_only:
        for n in names:
            fold_sizes[n] = check_folds(n, a.data_root)
            log(f"{n}: test_fold i/5 == ts_peers.fold_indices fold i for all 5 folds (sizes {fold_sizes[n]})")
        # fold-major, so a run stopped early leaves every dataset with the same folds
        for fold in folds:
            for n in names:
                need = set(methods) | ({"joint"} if "random" in methods else set())
                if a.budget == "hand":
                    need.add("hand-tcn")  # the budget of the others: run first
                order = list(dict.fromkeys(m for m in ("hand-tcn", *METHODS) if m in need))
                hand = next((r for r in rows if _key(r) == (n, fold, "hand-tcn")), None)
                cell = Cell(a, n, fold, hand)
                for method in order:
                    key = (n, fold, method)
                    if key in done:
                        continue
                    t0 = time.perf_counter()
                    log(f"{n} fold {fold} {method} …")
                    if method in ("joint", "fixed-data", "joint-kfold"):
                        row = cell.edgenas(method)
                    elif method == "hand-tcn":
                        row = cell.hand_tcn()
                        cell = Cell(a, n, fold, row)
                    else:
                        joint = next(r for r in rows if _key(r) == (n, fold, "joint"))
                        row = cell.random_search(joint["search_s"])
                    row["wall_s"] = time.perf_counter() - t0
                    row["latency_budget_ms"] = cell.max_latency_ms if method != "hand-tcn" else None
                    with rows_path.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    rows.append(row)
                    done.add(key)
                    log(f"  {n} f{fold} {method}: fp32 {100 * row['test_fp32']:.1f}%, int8 {100 * row['test_int8']:.1f}%, "
                        f"{row['params']:.0f} params, {row['macs'] / 1e3:.0f} k MACs, int8 {1e3 * row['int8_ms']:.1f} µs "
                        f"({row['wall_s']:.0f} s)")
    peer = peers(a.out)
    text, summary = summarize(rows, peer)
    wall = sum(r.get("wall_s", 0.0) for r in rows)
    md = ("# Time-series quality: edgenas methods by 5-fold CV on TRAIN (litert-cpu, int8)\n\n"
          "**Question:** on the five UCR/UEA TRAIN sets, 5-fold stratified CV, same folds as the peers "
          "(`bench/ts_peers.py`), how does the joint data+architecture search compare with the search at a fixed "
          "data configuration, a hand-designed TCN of the same family, and random search at equal wall-clock — "
          "accuracy fp32 and int8, parameters, MACs, int8 latency on litert-cpu?\n\n"
          f"{common.cpu_model()}, {time.strftime('%Y-%m-%d %H:%M')}. Folds: `--set test_fold=i/5` = fold i of "
          "`ts_prep.stratified_folds(TRAIN labels, k=5, seed=0)`, asserted equal to `ts_peers.fold_indices` (the "
          "folds MiniRocket and DTW were scored on) for every dataset before the runs; the rest of TRAIN is split "
          "75/25 into train/val for the search; the final network is trained on train + val and tested once on "
          "the fold. Task defaults: 300 train epochs, 60 search epochs, batch 16, seed 0. "
          + ("Budget: every search's `--max-latency-ms` is the hand TCN's measured end-to-end int8 latency (model "
             "+ front end, litert-cpu p10) on the same fold, measured first in the same sitting"
             if a.budget == "hand" else "No latency budget"
             + (f" (budgets: RAM {a.max_ram_kb:g} KiB, latency {a.max_latency_ms:g} ms)"
                if a.max_ram_kb or a.max_latency_ms else "")) + ".\n\n"
          "Methods: **joint** `edgenas search --task timeseries` (data configuration + architecture searched); "
          "**fixed-data** the same with `space.factors=1 space.norms=series space.paddings=edge`; **hand-tcn** one "
          "fixed ts-tcn spec through the pipeline's train/export/measure stages — per-series z, native length, edge "
          "padding, stem k7 stride 1 (4 above 300 steps) → 16, 4 residual blocks k5 with dilations 1/2/4/8 → 16, "
          "non-causal; **random** uniform specs of the space, each trained "
          f"{a.random_epochs} epochs and scored on val until the joint run's search seconds of the same fold are "
          "spent, the best retrained with the full recipe.\n\n"
          "Accuracy: mean ± sample std over folds, %; int8 = TFLite int8 (the device's format). Latency: int8 model "
          "only (no front end), litert-cpu at the profile's statistic (p10), µs; onnxruntime-cpu: the exported ONNX "
          "int8 file measured on that device. Data config: length factor/normalisation[/padding]. MiniRocket and "
          "DTW rows: `results/ts_peers.json` (aeon, all 5 folds, not rerun here).\n\n" + text + "\n")
    plan = [(n, f, m) for f in range(1, K + 1) for n in DATASETS for m in DEFAULT_METHODS]
    missing = [x for x in plan if x not in {_key(r) for r in rows}]
    if missing:
        by: dict[tuple[str, str], list[int]] = {}
        for n, f, m in missing:
            by.setdefault((n, m), []).append(f)
        md += ("\nNot yet run (dataset, method: folds): "
               + "; ".join(f"{n} {m}: {','.join(map(str, fs))}" for (n, m), fs in sorted(by.items())) + ".\n")
    md += (f"\nCommand: `python bench/{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}`; "
           f"{len(rows)} rows, {wall / 60:.0f} min of runs in all (this invocation {time.time() - started:.0f} s).\n")
    common.write(a.out, stem, {"question": md.split("**Question:** ")[1].split("\n")[0], "rows": rows,
                                       "peers": peer, "fold_sizes": fold_sizes, **summary}, md)
    plot(rows, peer, a.out, stem)


if __name__ == "__main__":
    main()
