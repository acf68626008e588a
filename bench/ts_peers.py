"""Time-series peers: MiniRocket and 1-NN DTW (aeon) by 5-fold CV on the TRAIN files, on edgenas' folds.

The question: what 5-fold CV accuracy on TRAIN do the practitioner's peers reach on these five sets,
on the exact folds edgenas methods use?

* Data: ``<data-root>/ucr_uea_timeseries/<Name>/<Name>_TRAIN.ts`` (GunPoint, ItalyPowerDemand,
  ACSF1, BasicMotions, JapaneseVowels), read with edgenas' own reader
  (:func:`edgenas.datasets.timeseries.open_timeseries`). Only TRAIN files are staged, so nothing
  here is a test-set accuracy: the published default-split test accuracies in the Markdown are
  context only, not comparable.
* Folds: :func:`fold_indices` — ``edgenas.datasets.ts_prep.stratified_folds(labels, k=5, seed=0)``;
  the one code path other benchmarks import to get the same folds for every method.
* Values: as in the files (no normalisation added; aeon's defaults). Missing values and unequal
  lengths go through ``edgenas.datasets.ts_prep.fixed_length(cases, policy, max_length)``
  (``zero``/``edge``/``resample``). JapaneseVowels is the only unequal-length set (7–26 steps in
  TRAIN): aeon's MiniRocketClassifier does not accept unequal-length input (tried, its error is
  recorded), so it runs on all three policies; the headline row is ``edge`` (declared before the
  run). aeon's 1-NN DTW does accept unequal lengths: the headline is the native (unpadded) input,
  the three padded variants are listed too.
* Methods (aeon ``<1.7``, in a virtualenv of their own: aeon's numpy/numba caps must never pin
  edgenas): ``MiniRocketClassifier`` (10 000 kernels, StandardScaler + RidgeClassifierCV, its
  defaults), ``random_state`` 0..seeds-1 per fold; ``KNeighborsTimeSeriesClassifier(distance="dtw",
  n_neighbors=1)`` with the full warping window (deterministic: one run per fold). ``--dtw-window
  auto`` (default) keeps the full window unless the first fold projects the dataset past 10 min,
  then switches to a 10% window (recorded). ``n_jobs=1`` everywhere.
* Timing: fit + predict seconds per fold (and seed), wall clock, after an untimed warm-up on a tiny
  slice so numba's compilation is not counted (its time is recorded as ``warmup_s``).
* Accuracy: per fold (MiniRocket: the mean over seeds), then mean and sample std (ddof 1) over the
  folds; per (fold, seed) accuracies are kept in the JSON.

The main process (edgenas' venv) reads the data, computes the folds, writes the arrays to a
temporary ``.npz`` and runs this same file with ``--worker`` in the benchmark venv
(``bench/results/cache/venv-ts-peers``, created on first use with ``python3 -m venv`` and
``pip install 'aeon>=1.6,<1.7'``; isolated, no system site packages). The worker imports numpy and
aeon only, never edgenas.

    python bench/ts_peers.py [--datasets GunPoint,...] [--data-root ../shared/data] [--out bench/results]
                             [--seeds 3] [--folds 5] [--dtw-window auto|full|0.1] [--venv PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
DEFAULT_OUT = ROOT / "bench" / "results"
DEFAULT_VENV = ROOT / "bench" / "results" / "cache" / "venv-ts-peers"
AEON_PIN = "aeon>=1.6,<1.7"
DATASETS = ("GunPoint", "ItalyPowerDemand", "ACSF1", "BasicMotions", "JapaneseVowels")
QUICK = ("GunPoint", "ItalyPowerDemand", "BasicMotions")
POLICIES = ("zero", "edge", "resample")
HEADLINE_POLICY = "edge"  # MiniRocket's row for unequal-length data (declared before any run)
DTW_BUDGET_S = 600.0  # --dtw-window auto: a projected full-window dataset past this → window 0.1
# published default-split TEST accuracies (%), as given in the issue: context only, NOT comparable to CV on TRAIN
PUBLISHED = {"GunPoint": 99.3, "ItalyPowerDemand": 96.3, "ACSF1": 91.0, "BasicMotions": 100.0, "JapaneseVowels": 98.4}


def log(msg: str) -> None:
    print(f"[ts_peers {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- the folds (edgenas side; imports edgenas lazily so the worker never does) -------------


def dataset_path(name: str, data_root: str | Path = DEFAULT_DATA) -> Path:
    """``<data_root>/ucr_uea_timeseries/<name>/<name>_TRAIN.ts``."""
    return Path(data_root) / "ucr_uea_timeseries" / name / f"{name}_TRAIN.ts"


def fold_indices(name: str, data_root: str | Path = DEFAULT_DATA, k: int = 5, seed: int = 0) -> list[tuple[Any, Any]]:
    """The (train_idx, val_idx) folds of ``name``'s TRAIN file — the folds every method of the
    time-series benchmarks uses (edgenas' reader, then ``ts_prep.stratified_folds(labels, k, seed)``)."""
    from edgenas.datasets.timeseries import open_timeseries
    from edgenas.datasets.ts_prep import stratified_folds

    ds = open_timeseries(dataset_path(name, data_root))
    return stratified_folds(ds.train.labels, k=k, seed=seed)


def _pack(name: str, data_root: Path, k: int, seed: int, path: Path) -> dict[str, Any]:
    """Write the dataset's arrays and folds to ``path`` (.npz); returns its description."""
    import numpy as np

    from edgenas.datasets.timeseries import open_timeseries
    from edgenas.datasets.ts_prep import fixed_length

    ds = open_timeseries(dataset_path(name, data_root))
    cases, labels = ds.train.cases, np.asarray(ds.train.labels, dtype=np.int64)
    folds = fold_indices(name, data_root, k=k, seed=seed)
    lengths = np.array([c.shape[1] for c in cases], dtype=np.int64)
    missing = int(sum(int(np.isnan(c).sum()) for c in cases))
    arrays: dict[str, Any] = {"labels": labels}
    for f, (tr, va) in enumerate(folds):
        arrays[f"fold{f}_train"], arrays[f"fold{f}_val"] = tr, va
    equal = bool(lengths.min() == lengths.max())
    if equal and not missing:
        variants = ["native"]
        arrays["x_native"] = np.stack(cases).astype(np.float32)
    else:
        variants = list(POLICIES)
        for pol in POLICIES:
            arrays[f"x_{pol}"] = fixed_length(cases, pol, int(lengths.max()))
        if not missing:  # unequal length, no NaN: the raw cases, concatenated in time (offsets)
            variants.insert(0, "native")
            arrays["x_native_flat"] = np.concatenate(cases, axis=1).astype(np.float32)
            arrays["x_native_lengths"] = lengths
    np.savez(path, **arrays)
    return {"dataset": name, "file": str(dataset_path(name, data_root)), "cases": len(cases), "dims": int(ds.dims),
            "classes": len(ds.classes), "min_length": int(lengths.min()), "max_length": int(lengths.max()),
            "equal_length": equal, "missing_values": missing, "variants": variants,
            "fold_sizes": [int(len(va)) for _, va in folds],
            "class_counts": [int(c) for c in np.bincount(labels, minlength=len(ds.classes))]}


# ---- the benchmark venv ---------------------------------------------------------------------


def ensure_venv(venv: Path) -> Path:
    """The benchmark venv's python, with ``aeon<1.7`` (created / installed when missing)."""
    py = venv / "bin" / "python"
    check = [str(py), "-c", "import aeon, sys; v = tuple(int(p) for p in aeon.__version__.split('.')[:2]); "
             "sys.exit(0 if (1, 6) <= v < (1, 7) else 1)"]
    if py.is_file() and subprocess.run(check, capture_output=True).returncode == 0:
        return py
    if not py.is_file():
        log(f"creating the benchmark venv {venv}")
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    log(f"installing {AEON_PIN} into {venv}")
    subprocess.run([str(py), "-m", "pip", "install", "-q", AEON_PIN], check=True)
    subprocess.run(check, check=True)
    return py


# ---- the worker (benchmark venv: numpy + aeon only) -----------------------------------------


def _worker(npz: str, spec_path: str, out_path: str) -> None:
    import warnings

    import numpy as np

    warnings.filterwarnings("ignore", category=FutureWarning)
    import aeon
    from aeon.classification.convolution_based import MiniRocketClassifier
    from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier

    spec = json.loads(Path(spec_path).read_text())
    z = np.load(npz)
    y = z["labels"]
    k = spec["folds"]
    folds = [(z[f"fold{f}_train"], z[f"fold{f}_val"]) for f in range(k)]
    name = spec["dataset"]

    def data(variant: str) -> Any:
        if variant == "native" and "x_native_flat" in z:
            flat, lengths = z["x_native_flat"], z["x_native_lengths"]
            edges = np.concatenate([[0], np.cumsum(lengths)])
            return [np.ascontiguousarray(flat[:, a:b]) for a, b in zip(edges[:-1], edges[1:])]
        return z[f"x_{variant}"]

    def take(x: Any, idx: np.ndarray) -> Any:
        return [x[i] for i in idx] if isinstance(x, list) else x[idx]

    def make(method: str, seed: int | None, window: float | None) -> Any:
        if method == "minirocket":
            return MiniRocketClassifier(random_state=seed, n_jobs=1)
        return KNeighborsTimeSeriesClassifier(distance="dtw", n_neighbors=1, n_jobs=1,
                                              distance_params=None if window is None else {"window": window})

    def warm(method: str, x: Any, window: float | None) -> float:
        """Untimed-for-accuracy fit/predict on a tiny slice (2 cases of 2 classes, ≤ 32 steps) so
        numba's compilation is not in the fold timings."""
        cls = np.unique(y)[:2]
        idx = np.concatenate([np.flatnonzero(y == c)[:2] for c in cls])
        sl = [c[:, :32] for c in take(x, idx)] if isinstance(x, list) else x[idx][:, :, :32]
        t = time.perf_counter()
        make(method, 0, window).fit(sl, y[idx]).predict(sl)
        return time.perf_counter() - t

    def run_one(method: str, x: Any, f: int, seed: int | None, window: float | None) -> dict[str, Any]:
        tr, va = folds[f]
        clf = make(method, seed, window)
        t0 = time.perf_counter()
        clf.fit(take(x, tr), y[tr])
        t1 = time.perf_counter()
        pred = clf.predict(take(x, va))
        t2 = time.perf_counter()
        acc = float(np.mean(np.asarray(pred) == y[va]))
        log(f"{name} {method} {variant_now} fold {f}{'' if seed is None else f' seed {seed}'}: acc {acc:.4f}, "
            f"fit {t1 - t0:.2f}s + predict {t2 - t1:.2f}s")
        return {"fold": f, "seed": seed, "acc": acc, "fit_s": t1 - t0, "predict_s": t2 - t1, "val_cases": int(len(va))}

    results = []
    for job in spec["jobs"]:
        method, variant_now = job["method"], job["variant"]
        x = data(variant_now)
        seeds = list(range(spec["seeds"])) if method == "minirocket" else [None]
        window = spec["dtw_window"] if method == "dtw" else None
        window = None if window in ("auto", "full") else window
        rec: dict[str, Any] = {"method": method, "variant": variant_now, "runs": [], "window": window,
                               "seeds": seeds}
        try:
            rec["warmup_s"] = warm(method, x, window)
        except Exception as e:  # an input aeon does not accept (e.g. unequal length for MiniRocket)
            rec["error"] = f"{type(e).__name__}: {str(e).strip()}"
            log(f"{name} {method} {variant_now}: not supported by aeon — {rec['error']}")
            results.append(rec)
            continue
        for f in range(k):
            for s in seeds:
                r = run_one(method, x, f, s, window)
                rec["runs"].append(r)
                if (method == "dtw" and spec["dtw_window"] == "auto" and window is None and f == 0
                        and (r["fit_s"] + r["predict_s"]) * k > DTW_BUDGET_S):
                    window = 0.1
                    rec["window"], rec["window_switched"] = window, (
                        f"full-window fold 0 took {r['fit_s'] + r['predict_s']:.1f}s → projected > "
                        f"{DTW_BUDGET_S:.0f}s for {k} folds; rerun with a 10% window")
                    log(f"{name} dtw: {rec['window_switched']}")
                    rec["full_window_fold0"] = r
                    rec["runs"] = [run_one(method, x, 0, s, window)]
        results.append(rec)
    Path(out_path).write_text(json.dumps({"aeon": aeon.__version__, "numpy": np.__version__,
                                          "python": sys.version.split()[0], "results": results}))


# ---- aggregation and report (main process) --------------------------------------------------


def _summary(rec: dict[str, Any], k: int) -> dict[str, Any]:
    import numpy as np

    if "error" in rec:
        return {"supported": False, "error": rec["error"]}
    per_fold = [float(np.mean([r["acc"] for r in rec["runs"] if r["fold"] == f])) for f in range(k)]
    secs = [r["fit_s"] + r["predict_s"] for r in rec["runs"]]
    by_seed = {}
    for s in rec["seeds"]:
        if s is not None:
            by_seed[str(s)] = float(np.mean([r["acc"] for r in rec["runs"] if r["seed"] == s]))
    out = {"supported": True, "fold_acc": per_fold, "mean": float(np.mean(per_fold)),
           "std": float(np.std(per_fold, ddof=1)) if k > 1 else float("nan"),
           "seconds_total": float(np.sum(secs)), "seconds_per_fit_predict": float(np.mean(secs)),
           "fit_s_total": float(sum(r["fit_s"] for r in rec["runs"])),
           "predict_s_total": float(sum(r["predict_s"] for r in rec["runs"])),
           "warmup_s": rec.get("warmup_s"), "runs": rec["runs"]}
    if by_seed:
        out["mean_by_seed"] = by_seed
    if rec.get("window_switched"):
        out["window_switched"] = rec["window_switched"]
        out["full_window_fold0"] = rec["full_window_fold0"]
    return out


def _pm(s: dict[str, Any] | None) -> str:
    if not s:
        return "–"
    if not s.get("supported"):
        return "not supported"
    return f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"


def _secs(s: dict[str, Any] | None) -> str:
    return f"{s['seconds_total']:.1f}" if s and s.get("supported") else "–"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"the short subset ({', '.join(QUICK)}; 1 seed)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA, help="shared sample data folder")
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated dataset names")
    p.add_argument("--seeds", type=int, default=3, help="MiniRocket random_state 0..seeds-1 per fold")
    p.add_argument("--folds", type=int, default=5, help="k of the stratified folds (seed 0)")
    p.add_argument("--fold-seed", type=int, default=0, help="the folds' seed (edgenas' default 0)")
    p.add_argument("--dtw-window", default="auto",
                   help="auto (full unless a dataset projects past 10 min, then 0.1), full, or a fraction")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the benchmark venv (created if missing)")
    p.add_argument("--worker", nargs=3, metavar=("NPZ", "SPEC", "OUT"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        _worker(*a.worker)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import common

    window: Any = a.dtw_window if a.dtw_window in ("auto", "full") else float(a.dtw_window)
    names = list(QUICK) if a.quick else [n.strip() for n in a.datasets.split(",") if n.strip()]
    seeds = 1 if a.quick else a.seeds
    for n in names:
        if not dataset_path(n, a.data_root).is_file():
            raise SystemExit(f"no {dataset_path(n, a.data_root)}")
    py = ensure_venv(a.venv)
    started = time.time()
    datasets: list[dict[str, Any]] = []
    worker_env: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ts_peers-") as tmp:
        for n in names:
            npz, spec_p, res_p = Path(tmp) / f"{n}.npz", Path(tmp) / f"{n}.json", Path(tmp) / f"{n}.out.json"
            info = _pack(n, a.data_root, a.folds, a.fold_seed, npz)
            log(f"{n}: {info['cases']} cases, {info['dims']} dims, length {info['min_length']}–{info['max_length']}, "
                f"{info['classes']} classes, folds of {info['fold_sizes']}; variants {info['variants']}")
            mr_variants = info["variants"]  # native first (recorded as unsupported if aeon refuses it)
            jobs = [{"method": "minirocket", "variant": v} for v in mr_variants]
            jobs += [{"method": "dtw", "variant": v} for v in info["variants"]]
            spec_p.write_text(json.dumps({"dataset": n, "folds": a.folds, "seeds": seeds, "dtw_window": window,
                                          "jobs": jobs}))
            t = time.perf_counter()
            env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
            subprocess.run([str(py), str(Path(__file__).resolve()), "--worker", str(npz), str(spec_p), str(res_p)],
                           check=True, env=env, cwd=tmp)
            res = json.loads(res_p.read_text())
            worker_env = {"aeon": res["aeon"], "numpy": res["numpy"], "python": res["python"]}
            methods: dict[str, dict[str, Any]] = {"minirocket": {}, "dtw": {}}
            for rec in res["results"]:
                s = _summary(rec, a.folds)
                s["variant"] = rec["variant"]
                s["policy"] = ("none (equal length)" if rec["variant"] == "native" and info["equal_length"]
                               else "native unequal length" if rec["variant"] == "native" else rec["variant"])
                if rec["method"] == "minirocket":
                    s.update(seeds=list(range(seeds)), n_kernels=10000, estimator="StandardScaler + RidgeClassifierCV")
                else:
                    s.update(window=rec["window"] if rec["window"] is not None else "full", n_neighbors=1)
                methods[rec["method"]][rec["variant"]] = s
            head = {"minirocket": "native" if info["equal_length"] else HEADLINE_POLICY,
                    "dtw": "native" if "native" in info["variants"] else HEADLINE_POLICY}
            datasets.append({**info, "headline_variant": head, "methods": methods,
                             "wall_s": time.perf_counter() - t})
            log(f"{n}: done in {time.perf_counter() - t:.1f}s")
    cpu = common.cpu_model()
    date = time.strftime("%Y-%m-%d %H:%M")
    rows, extra = [], []
    for d in datasets:
        mr = d["methods"]["minirocket"].get(d["headline_variant"]["minirocket"])
        dt = d["methods"]["dtw"].get(d["headline_variant"]["dtw"])
        length = str(d["max_length"]) if d["equal_length"] else f"{d['min_length']}–{d['max_length']}"
        mr_note = "" if d["equal_length"] else f" ({d['headline_variant']['minirocket']})"
        dt_note = "" if d["equal_length"] else f" ({d['headline_variant']['dtw'].replace('native', 'unpadded')})"
        win = dt.get("window", "full") if dt and dt.get("supported") else "full"
        dt_note += "" if win == "full" else f" (window {win})"
        rows.append([d["dataset"], d["cases"], d["dims"], length, _pm(mr) + mr_note, _secs(mr),
                     _pm(dt) + dt_note, _secs(dt), f"{PUBLISHED.get(d['dataset'], float('nan')):.1f}"])
        if not d["equal_length"] or d["missing_values"]:
            for m, label in (("minirocket", "MiniRocket"), ("dtw", "1-NN DTW")):
                for v, s in d["methods"][m].items():
                    pol = "unpadded (aeon's unequal-length input)" if v == "native" else f"fixed_length '{v}' to {d['max_length']}"
                    extra.append([d["dataset"], label, pol,
                                  _pm(s) if s.get("supported") else f"not supported by aeon ({s['error']})",
                                  _secs(s)])
    md = ("# Time-series peers: MiniRocket and 1-NN DTW (aeon), 5-fold CV on TRAIN\n\n"
          "**Question:** what 5-fold CV accuracy on TRAIN do the practitioner's peers reach on these five sets, "
          "on the exact folds edgenas methods use?\n\n"
          f"aeon {worker_env.get('aeon')} (own venv, numpy {worker_env.get('numpy')}), {cpu}, n_jobs=1, {date}. "
          f"Folds: `ts_prep.stratified_folds(labels, k={a.folds}, seed={a.fold_seed})` on the TRAIN file "
          "(`fold_indices` in `bench/ts_peers.py`). Accuracy: mean ± sample std over the folds, in %; MiniRocket's "
          f"fold accuracy is the mean over random_state 0..{seeds - 1}. Seconds: fit + predict summed over all folds "
          "(and seeds), numba compilation excluded. Values as in the files (no normalisation added). "
          "DTW: full warping window unless marked.\n\n"
          + common.table(["dataset", "cases", "dims", "length", "MiniRocket acc %", "MiniRocket s",
                          "1-NN DTW acc %", "DTW s", "published test acc % (not comparable)"], rows)
          + "\n\nThe last column is the published default train/test split TEST accuracy (figures as given in "
          "the issue) for context only: it is a different protocol (full TRAIN fit, held-out TEST file, which is "
          "not staged here) and is NOT comparable to CV on TRAIN.\n")
    if extra:
        md += ("\n## Unequal length: input variants\n\n"
               "MiniRocket's headline row uses `edge` (declared before the run), DTW's the unpadded input. "
               "The padding policy is a known lever on JapaneseVowels (ROCKET 85.6 vs MiniRocket 98.4 in the "
               "literature).\n\n"
               + common.table(["dataset", "method", "input", "acc %", "seconds"], extra) + "\n")
    md += f"\nCommand: `python bench/{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}`; total {time.time() - started:.0f} s.\n"
    data = {"question": "What 5-fold CV accuracy on TRAIN do the practitioner's peers reach on these five sets, "
                        "on the exact folds edgenas methods use?",
            "aeon": worker_env.get("aeon"), "worker": worker_env, "cpu": cpu, "date": date, "folds": a.folds,
            "fold_seed": a.fold_seed, "seeds": seeds, "dtw_window_option": window, "n_jobs": 1,
            "normalisation": "none (values as in the files)", "headline_policy_unequal_length": HEADLINE_POLICY,
            "std": "sample std (ddof 1) over folds", "published_test_acc_not_comparable": PUBLISHED,
            "total_s": time.time() - started, "datasets": datasets}
    common.write(a.out, "ts_peers", data, md)


if __name__ == "__main__":
    main()
