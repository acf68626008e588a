"""The search pipeline, stage by stage, in a resumable run directory.

    data → budgets (latency table, feasibility) → search → derive + repair → final training
         → export (ONNX fp32, int8) → measure on the device → report

Each stage's result is recorded in ``state.json`` only after its files are in place; a resumed
run skips finished stages and continues search and training from their last epoch checkpoint.
The test split is loaded only after the final model is trained.
"""

from __future__ import annotations

import logging
import pickle
import platform
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import edgenas
from edgenas import cost
from edgenas.config import RunConfig, to_dict
from edgenas.constraints import Constraint, check_feasible, fit_to_budgets
from edgenas.errors import ConfigError, EdgenasError
from edgenas.events import EventSink, null_sink
from edgenas.qat import qat_finetune
from edgenas.runs import RunDir
from edgenas.search import SearchResult, SplitTensors, run_search
from edgenas.spaces import get_space
from edgenas.spaces.base import SearchSpace
from edgenas.spec import ArchSpec
from edgenas.tasks import Task, calls_per_input, get_task
from edgenas.train import evaluate, train_model

log = logging.getLogger("edgenas.pipeline")


class Pipeline:
    def __init__(self, cfg: RunConfig, run: RunDir, sink: EventSink | None = None,
                 store_path: Path | None = None, cache_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.run = run
        self._outer = sink or null_sink
        self.store_path = store_path
        self.cache_dir = cache_dir
        self._ds: Any = None
        self._space: SearchSpace | None = None
        self._device: Any = None
        self._store: Any = None
        self._lut: Any = None
        self._latency: Any = None
        self._frontends: Any = None

    # ---- plumbing -------------------------------------------------------------------------
    def sink(self, event: str, **fields: Any) -> None:
        if not event.startswith("progress."):
            self.run.log_event(event, fields)
        self._outer(event, **fields)

    def stage(self, name: str, fn: Callable[[], Any]) -> Any:
        if self.run.done(name):
            self.sink("stage.skip", stage=name)
            return self.run.result(name)
        self.sink("stage.start", stage=name)
        t0 = time.perf_counter()
        result = fn()
        self.run.mark(name, result, time.perf_counter() - t0)
        self.sink("stage.end", stage=name, seconds=round(time.perf_counter() - t0, 2))
        return result

    @property
    def task(self) -> Task:
        return get_task(self.cfg.task)

    @property
    def dataset(self) -> Any:
        if self._ds is None:
            self._ds = self.task.open_dataset(self.cfg, sink=self.sink, cache_dir=self.cache_dir)
        return self._ds

    @property
    def space(self) -> SearchSpace:
        if self._space is None:
            self._space = get_space(self.cfg.space_name, config=self.cfg.space,
                                    **self.task.space_options(self.dataset))
        return self._space

    @property
    def device(self) -> Any:
        if self._device is None:
            from edgenas.devices.registry import get_device

            dev = get_device(self.cfg.device, threads=self.cfg.measure.threads)
            dev.check()
            self._device = dev
        return self._device

    @property
    def store(self) -> Any:
        if self._store is None:
            from edgenas.store import Store

            self._store = Store(self.store_path)
        return self._store

    def _split(self, split: str, data_cfg: Any, variant: Any = None) -> Any:
        return self.task.load_split(self.dataset, split, data_cfg, cache_dir=self.cache_dir, sink=self.sink,
                                    variant=variant)

    def norm_stats(self, data_cfg: Any) -> tuple[np.ndarray, np.ndarray] | None:
        """The task's standardisation statistics of the train split's model inputs (per MFCC
        coefficient, per colour channel, …), or None (``train.normalize`` off)."""
        if not self.cfg.train.normalize:
            return None
        cache = self.__dict__.setdefault("_norm", {})
        if data_cfg.key() not in cache:
            cache[data_cfg.key()] = self.task.norm_stats(self._split("train", data_cfg).x, data_cfg)
        return cache[data_cfg.key()]

    def features(self, split: str, data_cfg: Any, variant: Any = None) -> SplitTensors:
        """A split's model inputs for one data configuration, standardised as the model sees them
        (``variant``: one of the task's extra training copies, e.g. speed-perturbed clips,
        standardised by the plain train statistics)."""
        sp = self._split(split, data_cfg, variant)
        x = sp.x
        norm = self.norm_stats(data_cfg)
        if norm is not None:
            x = self.task.normalize(x, norm)
        y = torch.from_numpy(np.ascontiguousarray(sp.y))
        return SplitTensors(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                            y.long() if not y.is_floating_point() else y.float(), sp.groups)

    @property
    def latency_fmt(self) -> str:
        """The artifact the latency budget applies to: the device's format at ``measure.latency_quant``."""
        q = self.cfg.measure.latency_quant
        if q not in ("int8", "fp32"):
            raise ConfigError(f"measure.latency_quant must be int8 or fp32, got {q!r}")
        return f"{self.device.artifact_format}-{q}"

    def latency_table(self) -> Any:
        if self._lut is None:
            from edgenas.devices.latency_table import build_latency_table

            self._lut = build_latency_table(self.device, self.space.all_layers(), self.store, self.latency_fmt,
                                            sink=self.sink, runs=self.cfg.measure.lut_runs, warmup=5,
                                            stat=self.latency_stat)
        return self._lut

    def latency_model(self) -> Any:
        """The device's calibrated predictor when there is one for this runtime, else the lookup
        table corrected by whole networks measured now (fitted once per run)."""
        if self._latency is None:
            self._latency = self._predicted_latency() or self._measured_latency()
        return self._latency

    @property
    def latency_stat(self) -> str:
        """The latency statistic budgets apply to: the run's, else the device profile's."""
        from edgenas.devices.base import STATS
        from edgenas.devices.profiles import measure_defaults

        stat = self.cfg.measure.latency_stat
        if stat == "auto":
            stat = measure_defaults(self.device).latency_stat
        if stat not in STATS:
            raise ConfigError(f"measure.latency_stat must be auto or one of {', '.join(STATS)}, got {stat!r}")
        return stat

    @property
    def loads(self) -> int:
        """Separate loads per latency measurement: the run's, else the device profile's."""
        from edgenas.devices.profiles import measure_defaults

        return self.cfg.measure.loads or measure_defaults(self.device).loads

    def _predicted_latency(self) -> Any:
        from edgenas.devices.calibrate import predictor_root
        from edgenas.devices.latency_table import LatencyTable
        from edgenas.devices.predictor import LatencyPredictor, PredictedLatency, predictor_path

        fmt, dev, space = self.latency_fmt, self.device, self.space
        stat = self.latency_stat
        path = predictor_path(predictor_root(self.cfg.measure.predictors), dev.name, space.name, space.version, fmt, stat)
        if not path.exists():
            self.sink("latency.model", kind="table", reason=f"no calibrated predictor at {path}")
            return None
        pred = LatencyPredictor.load(path)
        md = pred.metadata
        why = None
        if md.get("statistic", "median") != stat:
            why = f"predictor {path} predicts the {md.get('statistic')} latency, the run budgets the {stat}"
        elif md.get("runtime_version") != dev.runtime_version() or int(md.get("threads", -1)) != dev.threads:
            why = (f"predictor {path} was calibrated for runtime {md.get('runtime_version')} with {md.get('threads')} "
                   f"thread(s), the device has {dev.runtime_version()} with {dev.threads}")
        elif pred.encoder.missing(space):
            why = f"predictor {path} has no slot for {', '.join(pred.encoder.missing(space)[:3])}"
        if why:
            self.sink("latency.model", kind="table", reason=why + "; recalibrate with `edgenas calibrate`")
            return None
        lut = self.latency_table()
        entries = dict(lut.entries)
        entries.update(md.get("table_entries", {}))  # the table the predictor was fitted with wins
        table = LatencyTable(lut.device, lut.runtime_version, lut.threads, lut.fmt, entries,
                             float(md.get("table_overhead_ms", lut.overhead_ms)), stat=lut.stat)
        ho = (md.get("holdout") or {}).get("learned") or {}
        margin = self.cfg.measure.latency_margin
        if margin < 0:  # auto: the hold-out's 90th percentile of measured-over-predicted
            margin = float(ho.get("underprediction_p90", ho.get("mape", 0.0)))
        self.sink("latency.model", kind="learned", path=str(path), margin=round(margin, 4))
        return PredictedLatency(space, table, pred, path, margin=margin)

    def _measured_latency(self) -> Any:
        from edgenas.devices.latency_model import MeasuredLatency

        m = self.cfg.measure
        model = MeasuredLatency(self.space, self.device, self.store, self.latency_table(), self.latency_fmt,
                                runs=m.chain_runs, warmup=10, sink=self.sink, statistic=self.latency_stat,
                                loads=self.loads)
        if self.run.done("budgets") and self.run.result("budgets").get("latency_fit"):
            fit = self.run.result("budgets")["latency_fit"]
            model.a, model.b, model.fit_info = fit["a_ms"], fit["b"], fit
        else:
            model.fit(m.chain_samples, seed=self.cfg.seed)
        return model

    def latency_model_info(self) -> dict[str, Any] | None:
        """What the search's latency cost was (for budgets.json and the report)."""
        lat = self._latency
        if lat is None:
            return None
        from edgenas.devices.predictor import PredictedLatency

        if isinstance(lat, PredictedLatency):
            md = lat.predictor.metadata
            return {"kind": "learned", "path": str(lat.path), "samples": md.get("samples"), "margin": lat.margin,
                    "holdout_samples": md.get("holdout_samples"), "created": md.get("created"),
                    "holdout": (md.get("holdout") or {}).get("learned")}
        return {"kind": "table+fit", **lat.fit_info}

    @property
    def end_to_end(self) -> bool:
        """Budgets apply to front end + model (``budget_scope``), priced when any budget is set."""
        c = self.cfg
        return c.budget_scope == "end-to-end" and (c.max_latency_ms > 0 or c.max_ram_kb > 0 or c.max_flash_kb > 0)

    def frontend_table(self) -> Any:
        """Every data configuration's front end, exported, measured on the device and priced
        (once: the budgets stage keeps the table, the store keeps the measurements)."""
        if self._frontends is None:
            from edgenas.devices.frontend_cost import FrontendTable, build_frontend_table

            if self.run.done("budgets") and self.run.result("budgets").get("frontends"):
                self._frontends = FrontendTable.from_dict(self.run.result("budgets")["frontends"])
            else:
                from edgenas.datasets.base import default_cache_dir

                m, ram = self.cfg.measure, self.cfg.max_ram_kb * 1024
                table = build_frontend_table(
                    self.device, self.store, self.space.data_configs(), Path(self.cache_dir or default_cache_dir()),
                    stat=self.latency_stat, runs=m.chain_runs, warmup=10, loads=self.loads, lowmem=ram > 0,
                    sink=self.sink)
                if ram > 0:  # per data configuration, the fastest front end that fits beside its smallest model
                    peak, smallest = cost.peak_ram(self.space), {}
                    for s in self.space.cheapest_candidates():
                        k = s.data.key()
                        smallest[k] = min(smallest.get(k, float("inf")), peak.cost(s))
                    table = table.choose(ram, smallest)
                self._frontends = table
        return self._frontends

    def frontend_impl(self, data: Any) -> str | None:
        """The front-end implementation to ship for ``data`` (the one the budgets priced; None: the
        exporter's default, when budgets leave the front end out)."""
        return self.frontend_table().get(data).impl or None if self.end_to_end else None

    def _scoped(self, name: str, model: Any) -> Any:
        """The model's cost model, or front end + model when budgets are end to end."""
        if not self.end_to_end:
            return model
        what = {"latency": "latency_ms", "ram": "ram_bytes", "flash": "flash_bytes"}[name]
        values = self.frontend_table().values(what)
        if name == "latency":  # per input: the front end runs once per model call (an SR frame's tiles)
            values = {d.key(): values[d.key()] * calls_per_input(d) for d in self.space.data_configs()
                      if d.key() in values}
        return cost.EndToEnd(self.space, model, values)

    def constraints(self) -> list[Constraint]:
        cfg, space = self.cfg, self.space
        out = []
        if cfg.max_latency_ms > 0:
            out.append(Constraint("latency", cfg.max_latency_ms, self._scoped("latency", self.latency_model())))
        if cfg.max_ram_kb > 0:
            out.append(Constraint("ram", cfg.max_ram_kb * 1024, self._scoped("ram", cost.peak_ram(space))))
        if cfg.max_flash_kb > 0:
            out.append(Constraint("flash", cfg.max_flash_kb * 1024, self._scoped("flash", cost.flash(space))))
        return out

    # ---- stages ---------------------------------------------------------------------------
    def run_all(self) -> dict[str, Any]:
        cfg = self.cfg
        if not self.run.done("config"):
            self.run.write_json("config.json", to_dict(cfg))
        self.stage("config", lambda: {"edgenas": edgenas.__version__, "python": platform.python_version(),
                                      "torch": torch.__version__})
        self.device  # an unreachable device fails now, before any data work
        self.stage("data", self._stage_data)
        self.stage("budgets", self._stage_budgets)
        self.stage("search", self._stage_search)
        spec = ArchSpec.from_dict(self.stage("derive", self._stage_derive)["spec"])
        self.stage("train", lambda: self._stage_train(spec))
        self.stage("export", lambda: self._stage_export(spec))
        self.stage("measure", lambda: self._stage_measure(spec))
        return self.stage("report", lambda: self._stage_report(spec))

    def _stage_data(self) -> dict[str, Any]:
        ds = self.dataset
        info = {**self.task.dataset_info(ds), "data_options": [d.key() for d in self.space.data_configs()]}
        if getattr(ds, "synthetic", False):
            self.sink("data.synthetic", message="using the generated SYNTHETIC demo dataset (espeak-ng voices); "
                                                "pass --data for real recordings")
        for split in ("train", "val", "test"):
            if not ds.splits.get(split):
                raise EdgenasError(f"dataset {ds.name} has an empty {split} split")
        # the train/val features below decode every other file (a corrupt, empty or NaN/inf file is
        # a one-line DataError there); the test split's are computed only after training, so its
        # files are decoded now
        self.task.check_split(ds, "test", self.sink)
        for d in self.space.data_configs():  # compute and cache every data option's features now
            for split in ("train", "val"):
                self.features(split, d)
        return info

    def _stage_budgets(self) -> dict[str, Any]:
        cons = self.constraints()
        cheapest = check_feasible(self.space, cons)
        return {"constraints": [{"name": c.name, "limit": c.limit} for c in cons],
                "scope": "end-to-end" if self.end_to_end else "model",
                "frontends": self._frontends.to_dict() if self.end_to_end else None,
                "cheapest_feasible": cheapest.to_dict() if cheapest else None,
                "latency_table": self._lut_info(),
                "latency_model": self.latency_model_info(),
                "latency_fit": getattr(self._latency, "fit_info", None) or None}

    def _lut_info(self) -> dict[str, Any] | None:
        if self._lut is None:
            return None
        t = self._lut
        return {"device": t.device, "runtime_version": t.runtime_version, "threads": t.threads, "fmt": t.fmt,
                "entries": len(t.entries), "overhead_ms": t.overhead_ms, "measured_now": t.measured}

    def _stage_search(self) -> dict[str, Any]:
        space = self.space
        datas = space.data_configs()
        train = [self.features("train", d) for d in datas]
        val = [self.features("val", d) for d in datas]
        res: SearchResult = run_search(space, train, val, self.constraints(), self.cfg.search, seed=self.cfg.seed,
                                       checkpoint=self.run.file("checkpoints/search.pt"), sink=self.sink,
                                       objective=self.task)
        out = {"spec": res.spec.to_dict(), "probs": res.probs, "history": res.history,
               "multipliers": res.multipliers, "seconds": res.seconds, "data_scores": res.data_scores}
        self.run.write_json("search.json", out)
        return {"seconds": res.seconds, "derived": res.spec.hash()}

    def _stage_derive(self) -> dict[str, Any]:
        search = self.run.read_json("search.json")
        spec = ArchSpec.from_dict(search["spec"])
        probs = {k: torch.tensor(v) for k, v in search["probs"].items()}
        derived = spec
        repaired, switches, fills = fit_to_budgets(self.space, spec, probs, self.constraints(), self.cfg.search.margin,
                                                   grow=self.cfg.search.fill_budget)
        est = self.estimates(repaired)
        self.run.write_text("arch.json", repaired.to_json() + "\n")
        return {"spec": repaired.to_dict(), "hash": repaired.hash(), "derived_hash": derived.hash(),
                "fills": [s.__dict__ for s in fills],
                "repairs": [s.__dict__ for s in switches], "estimates": est}

    def estimates(self, spec: ArchSpec, latency: bool = True) -> dict[str, float]:
        """The model's estimated costs (``*_bytes``, ``latency_ms``) and, when budgets are end to
        end, its front end's (``frontend_*``, measured on the device)."""
        space = self.space
        est = {"macs": cost.macs(space).cost(spec), "params": cost.params(space).cost(spec),
               "flash_bytes": cost.flash(space).cost(spec), "ram_bytes": cost.peak_ram(space).cost(spec)}
        if latency and self.cfg.max_latency_ms > 0:
            lat = self.latency_model()
            est["latency_ms"] = lat.predict(spec) if hasattr(lat, "predict") else lat.cost(spec)
            est["latency_priced_ms"] = lat.cost(spec)
            est["latency_table_ms"] = self.latency_model().table_ms(spec)
        if self.end_to_end:
            fe = self.frontend_table().get(spec.data)
            est.update(frontend_latency_ms=fe.latency_ms * calls_per_input(spec.data), frontend_ram_bytes=fe.ram_bytes,
                       frontend_flash_bytes=fe.flash_bytes)
        return est

    def training_set(self, data_cfg: Any, splits: tuple[str, ...] = ("train",)) -> tuple[torch.Tensor, torch.Tensor]:
        """What a network of ``data_cfg`` is trained on: the splits' model inputs, plus one copy of
        them per extra training variant of the task (e.g. ``train.speed_perturb`` for audio). Every
        trained network (the searched one, baselines, random-search candidates) gets its data here."""
        variants = (None, *self.task.train_variants(self.cfg.train))
        sets = [self.features(s, data_cfg, v) for v in variants for s in splits]
        return torch.cat([t.x for t in sets]), torch.cat([t.y for t in sets])

    def _stage_train(self, spec: ArchSpec) -> dict[str, Any]:
        cfg = self.cfg
        if cfg.train.train_on == "train+val":
            (x, y), eval_set = self.training_set(spec.data, ("train", "val")), None
        elif cfg.train.train_on == "train":
            va = self.features("val", spec.data)  # reported per epoch, never used to select
            (x, y), eval_set = self.training_set(spec.data), (va.x, va.y)
        else:
            raise ConfigError(f"train.train_on must be 'train' or 'train+val', got {cfg.train.train_on!r}")
        torch.manual_seed(cfg.seed)
        model = self.space.build(spec)
        info = train_model(model, x, y, cfg.train, self.task, seed=cfg.seed,
                           checkpoint=self.run.file("checkpoints/final.pt"), sink=self.sink, eval_set=eval_set)
        te = self.features("test", spec.data)  # the test split: measured, never used to select
        out: dict[str, Any] = {"train_examples": len(y), "test_examples": len(te.y), "seconds": info["seconds"],
                               "final_train_acc": info["history"][-1]["train_acc"] if info["history"] else None}
        if cfg.train.qat_epochs > 0:
            out["test_acc_fp32_torch_before_qat"] = evaluate(model, te.x, te.y, self.task, te.groups)
            qinfo = qat_finetune(model, x, y, cfg.train, self.task, seed=cfg.seed,
                                 checkpoint=self.run.file("checkpoints/qat.pt"), sink=self.sink, eval_set=eval_set)
            out["qat_seconds"] = qinfo["seconds"]
        torch.save(model.state_dict(), self.run.file("model.pt.tmp"))
        self.run.file("model.pt.tmp").replace(self.run.file("model.pt"))
        out["test_acc_fp32_torch"] = evaluate(model, te.x, te.y, self.task, te.groups)
        return out

    def load_model(self, spec: ArchSpec) -> torch.nn.Module:
        model = self.space.build(spec)
        model.load_state_dict(torch.load(self.run.file("model.pt"), weights_only=True))
        return model.eval()

    def calibration(self, data_cfg: Any) -> np.ndarray:
        """The int8 calibration inputs of ``data_cfg``, standardised as the model sees them."""
        x = self.task.calibration_inputs(self.dataset, data_cfg, cache_dir=self.cache_dir, sink=self.sink)
        norm = self.norm_stats(data_cfg)
        return np.ascontiguousarray(self.task.normalize(x, norm) if norm is not None else x, dtype=np.float32)

    def export_formats(self) -> list[str]:
        """ONNX always; TFLite when TensorFlow is installed (or the device runs TFLite, then it must be)."""
        import importlib.util

        fmts = ["onnx"]
        if importlib.util.find_spec("tensorflow") is not None:
            fmts.append("tflite")
        elif self.device.artifact_format == "tflite":
            raise ConfigError(f"device {self.cfg.device} runs TFLite models; pip install 'edgenas[tflite]'")
        return fmts

    def export(self, spec: ArchSpec, formats: list[str] | None = None, quants: list[str] | None = None) -> dict[str, Any]:
        """Export the trained model (every format, verified) into ``export/`` and build ``bundle/``."""
        from edgenas.export.bundle import make_bundle
        from edgenas.export.exporter import QUANTS, ExportJob, export_network

        if not self.run.file("model.pt").exists():
            raise EdgenasError(f"run {self.run.path} has no trained model (model.pt); finish it with "
                               "`edgenas search --resume --name …` first")
        try:
            model = self.load_model(spec)
        except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as e:
            raise EdgenasError(f"cannot load {self.run.file('model.pt')}: "
                               f"{(str(e).strip().splitlines() or [type(e).__name__])[0]}") from None
        te = self.features("test", spec.data)
        job = ExportJob(model=model, spec=spec, out_dir=self.run.file("export"), calibration=self.calibration(spec.data),
                        test_x=te.x.numpy(), test_y=te.y.numpy(), test_groups=te.groups,
                        test_raw=self.task.raw_split(self.dataset, "test", spec.data, cache_dir=self.cache_dir,
                                                     sink=self.sink),
                        estimates=self.estimates(spec, latency=False), formats=formats or self.export_formats(),
                        norm=self.norm_stats(spec.data), frontend_impl=self.frontend_impl(spec.data),
                        quants=quants or list(QUANTS), seed=self.cfg.seed)
        report = export_network(job, sink=self.sink)
        models = {f: self.run.file("export") / r["file"] for f in job.formats
                  if (r := report["models"].get(f"{f}-int8")) and r["status"] == "ok"}
        fronts = {f: self.run.file("export") / r["file"] for f in job.formats
                  if (r := (report["frontend"] or {}).get(f)) and r["status"] == "ok"}
        if models and fronts:
            sample = self.task.bundle_sample(self.dataset, self.run.file("export"), spec.data)
            b = make_bundle(self.run.path, models=models, frontends=fronts, labels=list(self.dataset.classes),
                            spec=spec, metadata={"run": self.run.path.name, "test_acc_fp32_torch":
                                                 report["test_acc_fp32_torch"]},
                            sample=sample)
            report["bundle"] = {"dir": b["bundle_dir"], "tarball": b["tarball"], "hash": b["bundle_hash"]}
        return report

    def _stage_export(self, spec: ArchSpec) -> dict[str, Any]:
        report = self.export(spec)
        return {"models": {k: {kk: v.get(kk) for kk in ("file", "status", "test_acc", "argmax_agreement",
                                                            "max_abs_diff_vs_torch", "failures")}
                           for k, v in report["models"].items()},
                "frontend": report["frontend"], "bundle": report.get("bundle"),
                "test_acc_fp32_torch": report["test_acc_fp32_torch"]}

    def _stage_measure(self, spec: ArchSpec) -> dict[str, Any]:
        from edgenas.devices.measure import measure_cached, measure_confirmed

        m = self.cfg.measure
        fmt = self.device.artifact_format
        models = self.run.result("export")["models"]
        calls = calls_per_input(spec.data)  # latencies are per input: per call × the calls (an SR frame's tiles)
        out: dict[str, Any] = {"device": self.cfg.device, "device_info": self.device.info(), "format": fmt,
                               "calls_per_input": calls}
        report = self.run.read_json("export/report.json")
        front_ms = 0.0
        fe = (self.run.result("export").get("frontend") or {}).get(fmt)
        if fe and fe.get("status") == "ok":  # the shipped front end, measured as the bundle runs it
            from edgenas.devices.frontend_cost import file_memory

            path = self.run.file("export") / fe["file"]
            meas = measure_cached(self.device, self.store, path, kind="frontend", fmt=f"{fmt}-fp32", runs=m.runs,
                                  warmup=m.warmup, loads=self.loads)
            ram, flash = file_memory(path)
            out["frontend"] = {"file": fe["file"], "latency": meas.to_dict(),
                               "latency_stat_ms": meas.stat(self.latency_stat) * calls, "latency_stat": self.latency_stat,
                               "loads": self.loads, "flash_bytes": flash, "peak_activation_bytes": ram}
            front_ms = out["frontend"]["latency_stat_ms"] if self.end_to_end else 0.0
        elif self.end_to_end:
            raise EdgenasError(f"the {fmt} front end failed verification and is not shipped, so the end-to-end budgets "
                               "cannot be measured: " + "; ".join((fe or {}).get("failures") or ["not exported"]))
        for key in ("fp32", "int8"):
            rec = models.get(f"{fmt}-{key}")
            if not rec or rec["status"] != "ok":
                raise EdgenasError(f"the {fmt} {key} model failed verification and is not shipped: "
                                   f"{'; '.join((rec or {}).get('failures') or ['not exported'])}")
            path = self.run.file("export") / rec["file"]
            kw = {"fmt": f"{fmt}-{key}", "spec_hash": spec.hash(), "runs": m.runs, "warmup": m.warmup, "loads": self.loads}
            if key == m.latency_quant:  # the model the latency budget is checked on
                # the model's share of the budget (0: no budget; when the front end alone is over
                # it, any model is over its share and is confirmed like any over-budget figure)
                limit = max(self.cfg.max_latency_ms - front_ms, 1e-9) / calls if self.cfg.max_latency_ms > 0 else 0.0
                meas, passes = measure_confirmed(self.device, self.store, path, limit_ms=limit,
                                                 stat=self.latency_stat, confirm=m.confirm, **kw)
            else:
                meas, passes = measure_cached(self.device, self.store, path, **kw), []
            ver = report["models"][f"{fmt}-{key}"]["verification"]
            out[key] = {"file": rec["file"], "latency": meas.to_dict(), "latency_stat_ms": meas.stat(self.latency_stat) * calls,
                        "latency_stat": self.latency_stat, "loads": self.loads, "flash_bytes": ver["flash_bytes"],
                        "peak_activation_bytes": ver["peak_activation_bytes"], "weight_bytes": ver["weight_bytes"]}
            if len(passes) > 1:
                out[key]["latency_passes_ms"] = passes
        budget, model_ms = self.cfg.max_latency_ms, out[m.latency_quant]["latency_stat_ms"]
        if self.end_to_end and budget > 0 and front_ms + model_ms > budget:
            # over end to end: the front end's figure is confirmed like the model's (its lowest pass)
            path = self.run.file("export") / out["frontend"]["file"]
            meas, passes = measure_confirmed(self.device, self.store, path, limit_ms=max(budget - model_ms, 1e-9) / calls,
                                             stat=self.latency_stat, confirm=m.confirm, fmt=f"{fmt}-fp32",
                                             runs=m.runs, warmup=m.warmup, loads=self.loads, kind="frontend")
            out["frontend"].update(latency=meas.to_dict(), latency_stat_ms=meas.stat(self.latency_stat) * calls)
            if len(passes) > 1:
                out["frontend"]["latency_passes_ms"] = passes
        return out

    def record(self) -> Any:
        """What the report reads about this run (:class:`~edgenas.report.RunRecord`)."""
        from edgenas.report import RunRecord

        return RunRecord(run=self.run, cfg=self.cfg, task=self.task, space=self.space, latency_table=self._lut)

    def _stage_report(self, spec: ArchSpec) -> dict[str, Any]:
        from edgenas.plots import search_history
        from edgenas.report import build_metrics, render_report

        limits = {c["name"]: c["limit"] for c in self.run.result("budgets")["constraints"]}  # the searched budgets
        search_history(self.run.read_json("search.json")["history"], limits, self.run.file("plots/search.png"),
                       metric=self.task.metric.name)
        record = self.record()
        metrics = build_metrics(record, spec)
        self.run.write_json("metrics.json", metrics)
        self.run.write_text("report.md", render_report(record, spec, metrics))
        return metrics
