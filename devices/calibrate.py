"""Calibration: measure sampled networks of a space on a device and fit its latency models.

    edgenas calibrate --device D --task kws --samples N

1. **Lookup table** — every layer the space can contain, as a micro-model in the device's format,
   measured once (:func:`~edgenas.devices.latency_table.build_latency_table`; reused from the store).
2. **Samples** — a pool of random ArchSpecs (plus the space's cheapest candidates) is binned by
   (data configuration, log-MACs bin over the pool's whole MACs range). The first
   ``initial_frac`` of the samples are drawn round-robin over those cells, so every data
   configuration and the whole cost range are covered; 20% of *those* (a stratified, hence
   representative, set) are held out. The rest come in adaptive rounds: a k-fold fit of the
   predictor on the training samples so far gives each cell its mean error, and new samples are
   drawn from cells in proportion to it (more where the predictor errs most).
3. **Measure** — each spec's whole network with random weights in the device's format
   (:func:`~edgenas.export.micro.save_chain_model`), in batches through
   :func:`~edgenas.devices.base.measure_many` (one runner call per batch on SSH boards), every
   result stored at once in SQLite (kind ``chain``, with the spec hash). A rerun reuses every stored
   measurement without rebuilding anything, so an interrupted calibration resumes where it stopped.
4. **Front ends** — every data configuration's front end (the float MFCC model the bundle runs
   before the classifier) is exported and measured on the device too
   (:func:`~edgenas.devices.frontend_cost.build_frontend_table`, reused from the store): the
   per-data-configuration table the search adds to the predicted classifier latency. Before the
   fit, the hold-out's front ends are measured once more in this sitting, so the end-to-end error
   reported (table front end + predicted classifier vs. both measured now) includes the front
   end's own repeatability.
5. **Fit and report** — the learned predictor (:mod:`edgenas.devices.predictor`) on the training
   samples; on the hold-out: MAPE, share within ±10% and ±5%, next to the lookup table alone, the
   lookup table with a fitted line, and MACs-proportional. Saved as JSON (weights + metadata) with a
   Markdown report beside it.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgenas.devices.base import STATS, Device, MeasureManyError, Measurement, measure_many, pooled
from edgenas.devices.frontend_cost import FrontendTable, build_frontend_table, frontend_format
from edgenas.devices.latency_table import LatencyTable, build_latency_table
from edgenas.devices.predictor import LatencyPredictor, SpecEncoder, errors, predictor_path, stamp
from edgenas.errors import ConfigError, DeviceError
from edgenas.fileio import atomic_write_text
from edgenas.events import EventSink, null_sink, progress
from edgenas.spaces.base import SearchSpace
from edgenas.spec import ArchSpec
from edgenas.store import Store, default_cache_dir, file_hash


@dataclass(frozen=True)
class CalibrationSettings:
    samples: int = 500
    holdout: float = 0.2
    initial_frac: float = 0.6
    seed: int = 0
    runs: int = 100
    warmup: int = 10
    lut_runs: int = 30
    bins: int = 8
    pool: int = 20000
    batch: int = 25  # specs built and measured per device call
    passes: int = 3  # interleaved measurement passes over each batch, samples pooled
    statistic: str = "median"  # the latency statistic the predictor predicts (Measurement.stat)
    folds: int = 5


Cell = tuple[str, int]


@dataclass
class _Sample:
    spec: ArchSpec
    cell: Cell
    macs: float
    table_ms: float
    measured: Measurement | None = None
    failed: str | None = None  # why the device could not run this network (skipped, reported)


# networks the device may fail to load or run before calibration stops: a few odd ones are
# skipped and reported; more says the device or the space is broken
MAX_SKIPPED_FRACTION = 0.05
MAX_SKIPPED_MIN = 3


def default_predictor_root() -> Path:
    return default_cache_dir() / "predictors"


def predictor_root(configured: str = "") -> Path:
    """Where a search looks its calibrated predictor up: ``measure.predictors`` when set, else the
    cache's, where `edgenas calibrate` writes."""
    return Path(configured).expanduser() if configured else default_predictor_root()


def device_governor(device: Device) -> str | None:
    info = device.info()
    return info.get("governor") or (info.get("identity") or {}).get("governor")


class Calibration:
    """One calibration of ``space`` on ``device`` in latency format ``fmt`` (e.g. ``onnx-int8``)."""

    def __init__(self, space: SearchSpace, device: Device, store: Store, fmt: str,
                 settings: CalibrationSettings | None = None, sink: EventSink | None = None,
                 root: Path | None = None, cache_dir: Path | None = None) -> None:
        self.space, self.device, self.store, self.fmt = space, device, store, fmt
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()  # exported front ends
        self.s = settings or CalibrationSettings()
        self.sink = sink or null_sink
        self.root = Path(root) if root is not None else default_predictor_root()
        if self.s.statistic not in STATS:
            raise ConfigError(f"unknown latency statistic {self.s.statistic!r} (known: {', '.join(STATS)})")
        if self.s.samples < 10:
            raise ConfigError(f"--samples must be at least 10, got {self.s.samples}")
        if not 0.05 <= self.s.holdout <= 0.5:
            raise ConfigError(f"hold-out fraction must be in [0.05, 0.5], got {self.s.holdout}")
        self.encoder = SpecEncoder.for_space(space)
        self.table: LatencyTable | None = None
        self.frontends: FrontendTable | None = None  # None: the device's format has no front end
        self.timings: dict[str, float] = {}
        self.skipped: list[dict[str, str]] = []  # networks the device could not run

    @property
    def path(self) -> Path:
        return predictor_path(self.root, self.device.name, self.space.name, self.space.version, self.fmt,
                              self.s.statistic)

    # ---- sampling --------------------------------------------------------------------------
    def _pool(self, rng: random.Random) -> list[_Sample]:
        assert self.table is not None
        seen: set[str] = set()
        rows = []
        for spec in list(self.space.cheapest_candidates()) + [self.space.sample(rng) for _ in range(self.s.pool)]:
            layers = self.space.layers(spec)
            network = "|".join(d.key() for d in layers)  # specs differing only in dead choices are one sample
            if network not in seen:
                seen.add(network)
                rows.append((spec, float(sum(d.macs for d in layers)), self.table.model_ms(layers)))
        logm = np.log([m for _, m, _ in rows])
        lo, hi = float(logm.min()), float(logm.max())
        width = (hi - lo) / self.s.bins or 1.0
        return [_Sample(spec, (spec.data.key(), min(self.s.bins - 1, int((lm - lo) / width))), m, t)
                for (spec, m, t), lm in zip(rows, logm)]

    @staticmethod
    def _by_cell(pool: list[_Sample]) -> dict[Cell, list[int]]:
        cells: dict[Cell, list[int]] = defaultdict(list)
        for i, s in enumerate(pool):
            cells[s.cell].append(i)
        return cells

    @staticmethod
    def _coverage_order(cells: dict[Cell, list[int]], rng: random.Random) -> list[Cell]:
        """Cells round-robin over data configurations (each one's MACs bins shuffled), so the first
        D draws cover every data configuration and the next ones spread over the MACs range."""
        per_data: dict[str, list[Cell]] = defaultdict(list)
        for c in sorted(cells):
            per_data[c[0]].append(c)
        datas = sorted(per_data)
        rng.shuffle(datas)
        for d in datas:
            rng.shuffle(per_data[d])
        depth = max(len(v) for v in per_data.values())
        return [per_data[d][k] for k in range(depth) for d in datas if k < len(per_data[d])]

    @staticmethod
    def _draw(cells: dict[Cell, list[int]], order: list[Cell], n: int, taken: set[int], rng: random.Random) -> list[int]:
        """Round-robin over ``order`` (cells may repeat), one unused pool member per visit."""
        out: list[int] = []
        while len(out) < n:
            progressed = False
            for c in order:
                free = [i for i in cells[c] if i not in taken]
                if free:
                    i = rng.choice(free)
                    taken.add(i)
                    out.append(i)
                    progressed = True
                    if len(out) == n:
                        break
            if not progressed:
                break
        return out

    # ---- measuring -------------------------------------------------------------------------
    def _measure(self, samples: list[_Sample], tick: Callable[..., None]) -> None:
        """Measure the samples the store lacks, in batches; store each result as it arrives."""
        version = self.device.runtime_version()
        known = self.store.spec_measurements(self.device.name, version, self.device.threads, self.fmt)
        todo = []
        for s in samples:
            if s.measured is None:
                s.measured = known.get(s.spec.hash())
            if s.measured is None:
                todo.append(s)
            else:
                tick(1)
        from edgenas.export.micro import save_chain_model

        ext = self.fmt.split("-")[0]
        for start in range(0, len(todo), self.s.batch):
            batch = todo[start:start + self.s.batch]
            with tempfile.TemporaryDirectory(prefix="edgenas-calib-") as td:
                t0 = time.perf_counter()
                paths = [save_chain_model(self.space.layers(s.spec), self.fmt, Path(td) / f"{s.spec.hash()}.{ext}")
                         for s in batch]
                hashes = [file_hash(p) for p in paths]
                t1 = time.perf_counter()

                # ``passes`` interleaved passes over the batch: on a shared machine a model's median
                # swings with the machine's state over seconds; samples pooled over passes spread
                # in time are what one network's latency is, not one pass's luck.
                got: list[list[Measurement]] = [[] for _ in batch]
                for _ in range(self.s.passes):
                    live = [i for i, smp in enumerate(batch) if smp.failed is None]
                    try:
                        measure_many(self.device, [paths[i] for i in live], runs=self.s.runs, warmup=self.s.warmup,
                                     threads=self.device.threads,
                                     on_result=lambda j, m, got=got, live=live: got[live[j]].append(m))
                    except MeasureManyError as e:
                        if len(e.partial) + len(e.errors) < len(live):  # stopped midway: the device, not a model
                            raise
                        for j, why in e.errors.items():
                            self._skip(batch[live[j]], why)
                for i, (smp, ms) in enumerate(zip(batch, got)):
                    if smp.failed is not None:  # another sample is drawn in its place
                        continue
                    m = pooled(ms)
                    self.store.put_measurement(hashes[i], m, kind="chain", fmt=self.fmt, spec_hash=smp.spec.hash())
                    smp.measured = m
                    tick(1, ms=round(m.median_ms, 4))
                self.timings["build_s"] = self.timings.get("build_s", 0.0) + t1 - t0
                self.timings["measure_s"] = self.timings.get("measure_s", 0.0) + time.perf_counter() - t1

    def _skip(self, smp: _Sample, why: str) -> None:
        """Leave out a network the device cannot run; too many of them stop the calibration."""
        smp.failed = why
        self.skipped.append({"spec_hash": smp.spec.hash(), "reason": why})
        self.sink("calibration.skipped", spec_hash=smp.spec.hash(), reason=why)
        limit = max(MAX_SKIPPED_MIN, int(MAX_SKIPPED_FRACTION * self.s.samples))
        if len(self.skipped) > limit:
            raise DeviceError(f"{self.device.name} could not run {len(self.skipped)} of the sampled networks "
                              f"(more than {limit}); first: {self.skipped[0]['reason']}")

    # ---- fitting ---------------------------------------------------------------------------
    def _xy(self, samples: list[_Sample]) -> tuple[np.ndarray, np.ndarray]:
        assert self.table is not None
        x = np.stack([self.encoder.encode(self.space, s.spec, self.table) for s in samples])
        y = np.array([s.measured.stat(self.s.statistic) for s in samples if s.measured is not None])
        return x, y

    def _cv_errors(self, samples: list[_Sample], seed: int) -> np.ndarray:
        """|log(pred / measured)| of every sample when left out of a k-fold fit."""
        x, y = self._xy(samples)
        folds = np.arange(len(y)) % self.s.folds
        np.random.default_rng(seed).shuffle(folds)
        err = np.zeros(len(y))
        for k in range(self.s.folds):
            test = folds == k
            if test.all() or not test.any():
                continue
            model = LatencyPredictor.fit(self.encoder, x[~test], y[~test], folds=self.s.folds, seed=seed)
            err[test] = np.abs(np.log(model.predict_ms(x[test]) / y[test]))
        return err

    # ---- the whole thing -------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        s, rng = self.s, random.Random(self.s.seed)
        t_start = time.perf_counter()
        self.device.check()
        self.table = build_latency_table(self.device, self.space.all_layers(), self.store, self.fmt, sink=self.sink,
                                         runs=s.lut_runs, warmup=5, stat=s.statistic)
        self.timings["table_s"] = time.perf_counter() - t_start
        t_fe = time.perf_counter()
        try:
            frontend_format(self.device)
        except ConfigError:
            self.frontends = None  # e.g. a PyTorch-only CUDA device: classifier only
        else:
            self.frontends = build_frontend_table(self.device, self.store, self.space.data_configs(),
                                                  self.cache_dir, stat=s.statistic, runs=s.runs,
                                                  warmup=s.warmup, loads=s.passes, sink=self.sink)
        self.timings["frontend_s"] = time.perf_counter() - t_fe
        pool = self._pool(rng)
        cells = self._by_cell(pool)
        order = self._coverage_order(cells, rng)
        taken: set[int] = set()
        n_initial = max(2 * s.folds, int(round(s.samples * s.initial_frac)))
        initial = [pool[i] for i in self._draw(cells, order, min(n_initial, s.samples), taken, rng)]
        n_hold = max(2, int(round(s.samples * s.holdout)))
        hold_idx = set(rng.sample(range(len(initial)), min(n_hold, len(initial) - s.folds)))
        holdout = [x for i, x in enumerate(initial) if i in hold_idx]
        train = [x for i, x in enumerate(initial) if i not in hold_idx]
        total = min(s.samples, len(pool))
        rounds: list[dict[str, Any]] = []
        with progress(self.sink, f"calibration: {self.space.name} on {self.device.name} ({self.fmt})", total) as tick:
            self._measure(initial, tick)
            train, holdout = [x for x in train if x.failed is None], [x for x in holdout if x.failed is None]
            while len(train) + len(holdout) < total:
                want = total - len(train) - len(holdout)
                n = want if want <= s.batch * 2 else max(s.batch, want // 2)
                err = self._cv_errors(train, seed=s.seed + len(rounds))
                cell_err: dict[Cell, list[float]] = defaultdict(list)
                for smp, e in zip(train, err):
                    cell_err[smp.cell].append(float(e))
                worst = max(err) if len(err) else 1.0
                free = [c for c in order if any(i not in taken for i in cells[c])]
                if not free:
                    break
                weights = [float(np.mean(cell_err[c])) if cell_err.get(c) else worst for c in free]
                picks = rng.choices(free, weights=[w + 1e-6 for w in weights], k=n)
                new = [pool[i] for i in self._draw(cells, picks, n, taken, rng)]
                if not new:
                    break
                rounds.append({"cv_mape_log": float(np.mean(err)), "added": len(new),
                               "worst_cells": [f"{c[0]}|bin{c[1]}" for c, _ in
                                               sorted(zip(free, weights), key=lambda t: -t[1])[:3]]})
                self.sink("calibration.round", **rounds[-1])
                self._measure(new, tick)
                train += [x for x in new if x.failed is None]
        self.timings["samples_s"] = (time.perf_counter() - t_start - self.timings["table_s"]
                                     - self.timings["frontend_s"])
        return self._finish(train, holdout, rounds, time.perf_counter() - t_start)

    def _end_to_end(self, holdout: list[_Sample], y_ho: np.ndarray,
                    preds: dict[str, np.ndarray]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Hold-out errors of front end + classifier: each model's classifier prediction plus the
        front-end table's entry, against the classifier measured plus its front end measured again
        now (one more load of each hold-out data configuration's front end)."""
        if self.frontends is None or not holdout:
            return None, None
        keys = sorted({smp.spec.data.key() for smp in holdout})
        files = [Path(self.frontends.entries[k].file) for k in keys]
        try:
            again = measure_many(self.device, files, runs=self.s.runs, warmup=self.s.warmup, threads=self.device.threads)
        except MeasureManyError as e:
            raise DeviceError(f"front end cannot run on {self.device.name}: {e}") from None
        now = {k: m.stat(self.s.statistic) for k, m in zip(keys, again)}
        table = self.frontends.values("latency_ms")
        fe_table = np.array([table[smp.spec.data.key()] for smp in holdout])
        fe_now = np.array([now[smp.spec.data.key()] for smp in holdout])
        truth = y_ho + fe_now
        errs = {name: errors(np.asarray(p) + fe_table, truth) for name, p in preds.items()}
        share = float(np.mean(fe_now / truth))
        report = {"fmt": self.frontends.fmt, "measured_now": self.frontends.measured, "table_ms": table,
                  "repeat_ms": now, "repeat_rel_diff": {k: abs(now[k] - table[k]) / now[k] for k in keys},
                  "share_of_total": share}
        self.sink("calibration.frontends", entries=len(table), share_of_total=share,
                  mape_end_to_end=errs["learned"]["mape"])
        return errs, report

    def _finish(self, train: list[_Sample], holdout: list[_Sample], rounds: list[dict[str, Any]],
                seconds: float) -> dict[str, Any]:
        assert self.table is not None
        x_tr, y_tr = self._xy(train)
        x_ho, y_ho = self._xy(holdout)
        model = LatencyPredictor.fit(self.encoder, x_tr, y_tr, folds=self.s.folds, seed=self.s.seed)
        t_tr = np.array([s.table_ms for s in train])
        t_ho = np.array([s.table_ms for s in holdout])
        m_tr = np.array([s.macs for s in train])
        m_ho = np.array([s.macs for s in holdout])
        b, a = np.polyfit(t_tr, y_tr, 1)
        k = float(np.exp(np.mean(np.log(y_tr) - np.log(m_tr))))
        ho = {
            "learned": errors(model.predict_ms(x_ho), y_ho),
            "lookup_table": errors(t_ho, y_ho),
            "lookup_table_fitted_line": errors(a + b * t_ho, y_ho),
            "macs_proportional": errors(k * m_ho, y_ho),
        }
        tr = errors(model.predict_ms(x_tr), y_tr)
        e2e, fe_report = self._end_to_end(holdout, y_ho, {"learned": model.predict_ms(x_ho), "lookup_table": t_ho,
                                                          "lookup_table_fitted_line": a + b * t_ho,
                                                          "macs_proportional": k * m_ho})
        info = self.device.info()
        model.metadata = {
            "device": self.device.name, "runtime": info.get("runtime"),
            "runtime_version": self.device.runtime_version(), "threads": self.device.threads,
            "governor": device_governor(self.device), "device_identity": info.get("identity"),
            "space": self.space.name, "space_version": self.space.version, "fmt": self.fmt,
            "samples": len(train), "holdout_samples": len(holdout), "created": stamp(),
            "statistic": self.s.statistic,
            "holdout": ho, "train": tr, "table_overhead_ms": self.table.overhead_ms, "table_stat": self.table.stat,
            "table_entries": self.table.entries, "holdout_end_to_end": e2e,
            "frontend_ms": None if self.frontends is None else self.frontends.values("latency_ms"),
        }
        path = model.save(self.path)
        report = {
            "predictor": str(path), "device": self.device.name, "fmt": self.fmt, "space": self.space.name,
            "runtime_version": self.device.runtime_version(), "threads": self.device.threads,
            "governor": device_governor(self.device), "statistic": self.s.statistic,
            "samples": len(train) + len(holdout), "train": len(train), "holdout": len(holdout),
            "holdout_errors": ho, "train_errors": tr, "adaptive_rounds": rounds,
            "holdout_errors_end_to_end": e2e, "frontends": fe_report,
            "data_configs": len({s.cell[0] for s in train + holdout}),
            "macs_range": [float(min(s.macs for s in train + holdout)), float(max(s.macs for s in train + holdout))],
            "latency_range_ms": [float(min(y_tr.min(), y_ho.min())), float(max(y_tr.max(), y_ho.max()))],
            "table_entries": len(self.table.entries), "table_measured_now": self.table.measured,
            "skipped": self.skipped, "seconds": seconds, "timings": self.timings, "settings": asdict(self.s),
            "holdout_points": [{"spec_hash": s.spec.hash(), "measured_ms": float(yv), "predicted_ms": float(pv),
                                "table_ms": s.table_ms, "macs": s.macs}
                               for s, yv, pv in zip(holdout, y_ho, model.predict_ms(x_ho))],
        }
        atomic_write_text(path.with_suffix(".report.json"), json.dumps(report, indent=1) + "\n")
        atomic_write_text(path.with_suffix(".report.md"), render_report(report))
        return report


def _error_rows(errs: dict[str, dict[str, float]], names: dict[str, str]) -> list[str]:
    """One Markdown row per latency model: MAPE, within ±10% / ±5%, max error."""
    return [f"| {names.get(k, k)} | {100 * e['mape']:.1f}% | {100 * e['within_10pct']:.0f}% | "
            f"{100 * e['within_5pct']:.0f}% | {100 * e['max_rel_err']:.0f}% |" for k, e in errs.items()]


def render_report(r: dict[str, Any]) -> str:
    lines = [f"# Latency calibration: {r['space']} on {r['device']} ({r['fmt']})", "",
             f"runtime {r['runtime_version']}, {r['threads']} thread(s), governor {r['governor'] or 'unknown'}; "
             f"latency statistic: {r.get('statistic', 'median')} of the pooled samples; "
             f"{r['samples']} sampled networks over {r['data_configs']} data configurations, "
             f"{r['macs_range'][0] / 1e6:.3g}–{r['macs_range'][1] / 1e6:.3g} M MACs, "
             f"{r['latency_range_ms'][0]:.4g}–{r['latency_range_ms'][1]:.4g} ms measured; "
             f"{r['train']} for fitting, {r['holdout']} held out; {r['seconds'] / 60:.1f} min.", "",
             "| model (hold-out) | MAPE | within ±10% | within ±5% | max error |", "|---|---|---|---|---|"]
    names = {"learned": "learned predictor", "lookup_table": "lookup table alone",
             "lookup_table_fitted_line": "lookup table + fitted line", "macs_proportional": "MACs-proportional"}
    lines += _error_rows(r["holdout_errors"], names)
    e2e, fe = r.get("holdout_errors_end_to_end"), r.get("frontends")
    if e2e and fe:
        lines += ["", f"End to end (front end + classifier, as the bundle runs them): the {len(fe['table_ms'])} data "
                      f"configurations' front ends ({fe['fmt']}, float) were measured on the device; on the hold-out "
                      f"they are {100 * fe['share_of_total']:.0f}% of the total, and were measured again now "
                      f"(largest change {100 * max(fe['repeat_rel_diff'].values()):.1f}%).", "",
                  "| model + front-end table (hold-out, total) | MAPE | within ±10% | within ±5% | max error |",
                  "|---|---|---|---|---|"]
        lines += _error_rows(e2e, names)
    elif "frontends" in r:
        lines += ["", "Front ends: not measured (the device's format runs no front-end model); errors are for the "
                      "classifier alone."]
    skipped = r.get("skipped") or []
    if skipped:
        lines += ["", f"Skipped {len(skipped)} sampled network(s) the device could not run (others drawn in their"
                      f" place); first: {skipped[0]['spec_hash']}: {skipped[0]['reason']}"]
    lines += ["", f"Predictor: `{r['predictor']}`", ""]
    return "\n".join(lines)


def calibrate(space: SearchSpace, device: Device, store: Store, fmt: str,
              settings: CalibrationSettings | None = None, sink: EventSink | None = None,
              root: Path | None = None, cache_dir: Path | None = None) -> dict[str, Any]:
    """Run one calibration; see the module docstring."""
    if not fmt.startswith(device.artifact_format + "-"):
        raise DeviceError(f"device {device.name} runs {device.artifact_format} models; cannot calibrate {fmt}")
    return Calibration(space, device, store, fmt, settings, sink, root, cache_dir).run()
