"""Search quality (KWS): edgenas vs hand-designed baselines vs random search, at equal latency budgets.

Methods, all trained with the same recipe (``TrainConfig``: epochs, optimiser, augmentation) and
evaluated on the same never-seen test split, exported in the device's format, int8, and measured
on the device:

* ``edgenas`` — the joint data + architecture search (``edgenas search``, as a user runs it) in the
  default ``kws-dscnn`` space;
* ``edgenas-tcn`` — the same search in the ``kws-tcn`` space (temporal convolutions over MFCC
  channels, the TC-ResNet family without residual adds);
* ``edgenas-fixed-data`` — the same search with the data configuration fixed to the standard one
  (10 MFCC, 40 ms window, 20 ms hop; in an end-to-end cell with ``--budget-from`` also the sample rate,
  the budget network's, since it sets the front end's cost) — what searching the data configuration buys;
* ``ds-cnn-s`` / ``ds-cnn-m`` — Hello Edge DS-CNN-S (64 ch) and -M (172 ch): 10×4 stride-2 stem and 4
  depthwise-separable blocks, at the standard data configuration;
* ``tc-resnet8`` — TC-ResNet8 (temporal 1-D convolutions over MFCC channels: 16 → 24/32/48 with
  stride-2 residual blocks, kernel 9), standard data configuration;
* ``random`` — ArchSpecs (data configuration included) drawn uniformly among those the device's
  latency model and the RAM model say meet the budgets, each trained on the train split and scored
  on the validation split, until the edgenas search's wall-clock is spent; the best on validation
  is retrained with the final recipe and tested.

Datasets by path: FSDD (one speaker held out as test, one as validation) and the Arabic speech
commands (its train/val split; val is this benchmark's test set, a speaker-disjoint part of
train is the search's validation). Baselines do not get tuned down: they use the same epochs.

    python bench/search_quality.py --quick      # FSDD, litert-cpu, one budget, one seed, fewer epochs
    python bench/search_quality.py              # full: both datasets (FSDD: all 4 folds), both devices, 3 budgets, 3 seeds
    python bench/search_quality.py --report-only   # the table from every row measured so far
    python bench/search_quality.py --datasets arabic --devices litert-cpu --budgets 0.15 --remeasure
                                                   # that grid's int8 models measured again, quietly
    python bench/search_quality.py ... --methods edgenas edgenas-fixed-data --latency-target
    python bench/search_quality.py ... --methods edgenas edgenas-fixed-data --data-first
    python bench/search_quality.py ... --calibrated   # priced by a calibrated predictor (made on first use)
    python bench/search_quality.py ... --methods edgenas --long-window   # data space + a 64/32 ms window
                                                   # (the default data space has had it since; kept for old rows)
                                                   # search variants: their own rows and run directories

Rows accumulate in ``results/search_quality.rows.jsonl`` across sittings (a cell already measured in
the same mode is not run again; an interrupted edgenas run resumes). The hand-designed baselines are
trained once per dataset, fold, seed and mode and exported and measured per device and budget.

Budget scope. ``--budgets`` are model-only figures by default (``--budget-scope model``: the grid
above, every row before end-to-end budgets existed; those rows have no ``scope`` field). A budget is
end to end (front end + int8 classifier, DESIGN.md "Budgets are end to end") with
``--budget-scope end-to-end`` or ``--budget-from``:

    python bench/search_quality.py --datasets arabic --devices litert-cpu --budget-from ds-cnn-s \
        --seeds 0 1 2 --methods edgenas edgenas-fixed-data ds-cnn-s tc-resnet8 random
                                                   # the end-to-end cell: ~40 min per seed, 2-2.5 h
                                                   # alone on 2 cores (estimated from the grid's Arabic
                                                   # rows and the smoke test below)
    python bench/search_quality.py --quick --budget-from ds-cnn-s --methods edgenas edgenas-fixed-data \
        ds-cnn-s tc-resnet8 random --out /tmp/sq   # its smoke test on FSDD (16.5 min on 2 shared cores)

The bench passes ``--budget-scope`` to every run explicitly: ``edgenas search`` budgets end to end by
default, and a model-sized ``--budgets 0.15`` applied end to end would be another experiment.

``--budget-from ds-cnn-s``: the cell's latency budget is DS-CNN-S's measured end-to-end latency at
the standard data configuration, measured at the start of the cell in this sitting: the first
seed's DS-CNN-S is trained (with no budget of its own) and its int8 model measured afresh on the
device, plus its front end (``edgenas.devices.frontend_cost``). Every row of the cell records that
``budget_ms``, ``budget_source`` and ``budget_parts``; a later sitting measures the budget again
(rows made earlier keep theirs, a resumed edgenas run its own), so run a cell in one sitting. The
network the budget comes from is always one of the cell's methods (run first); its runs have no
budget of their own. Run directories are named ``…-e2e-ds-cnn-s-s<seed>-…`` (``…-e2e<ms>-…`` for
``--budget-scope end-to-end --budgets ms``).

Every end-to-end row carries ``"scope": "end-to-end"`` and, besides ``latency_ms`` (the int8 model,
as before), ``frontend_ms`` (its data configuration's front end on the same device, the profile's
statistic: from the run's metrics for edgenas rows — the shipped front end the run judged its budget
on —, measured in this sitting for the others, ``frontend_table_ms`` for every row), ``e2e_ms``,
``e2e_ram_kb`` / ``e2e_flash_kb`` (front end included), ``budget_share`` = e2e_ms / budget_ms, and
``holds`` judged on the end-to-end figures. Random search's feasibility filter adds each data
configuration's front-end latency and RAM to the model's. End-to-end rows have their own section,
"End-to-end cell", in ``search_quality.md``; model-only rows keep the old tables. ``--max-ram-kb``
defaults to 64 KiB in model scope and to no RAM budget end to end (a front end alone holds
~100–200 KiB of float buffers, so 64 KiB would rule out every network); pass it to set one.
``--remeasure`` of end-to-end rows measures the int8 model again and recomputes ``e2e_ms``,
``budget_share`` and ``holds`` with the row's front-end figure.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

STANDARD = {"space.n_mfcc": "10", "space.windows": "40/20"}
RUN_DIR = {"edgenas": "joint", "edgenas-tcn": "joint-tcn", "edgenas-fixed-data": "fixed"}  # method → run name part
# options the bench varies for the edgenas methods (each off by default, and off in rows from
# before it existed): row field → (config key, run-directory suffix when on, table label when on)
VARIANTS = {
    "latency_target": ("search.latency_target", "-target", " (latency budget as target)"),
    "data_first": ("search.data_first", "-df", " (data first)"),
    "share_stem": ("space.share_stem", "-ss", " (shared stem)"),  # kws-dscnn only
    # priced by the device's calibrated predictor (results/calibration/predictors, made on first use)
    # rather than the fallback table + line the other rows get: calibrate, then search, as README says
    "calibrated": ("measure.predictors", "-cal", " (calibrated predictor)"),
    # the default data space plus a window/hop cheaper than the standard one (fewer frames)
    "long_window": ("space.windows", "-w64", " (+64/32 ms window)"),
}
LONG_WINDOWS = "30/10,40/20,64/32"
CALIBRATION_SAMPLES = {"kws-dscnn": 500, "kws-tcn": 300}
TRAINED_ONCE = ("ds-cnn-s", "ds-cnn-m")  # and tc-resnet8: hand-designed, so neither device nor budget shapes them


def _edgenas_exe() -> str:
    """The ``edgenas`` command of this interpreter's environment."""
    return str(Path(sys.executable).with_name("edgenas"))


def _edgenas_cmd(args: list[str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    res = subprocess.run([_edgenas_exe(), "search", *args, "--json", "--quiet"], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"edgenas search failed: {res.stderr.strip().splitlines()[-1:]}")
    m = json.loads(res.stdout)
    m["wall_s"] = time.perf_counter() - t0
    return m


def _tc_resnet8(n_mfcc: int, classes: int) -> Any:
    """TC-ResNet8 (Choi et al. 2019): MFCC bins as channels, temporal convolutions. Written with
    Conv2d on the [N, 1, T, F] input — the first conv spans all F bins (kernel 3×F), the rest are
    (9×1) — which is exactly the Conv1d network and needs no transpose in any export."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(c_in, c_out, (9, 1), (stride, 1), padding=(4, 0), bias=False)
            self.b1 = nn.BatchNorm2d(c_out)
            self.c2 = nn.Conv2d(c_out, c_out, (9, 1), 1, padding=(4, 0), bias=False)
            self.b2 = nn.BatchNorm2d(c_out)
            self.short = nn.Sequential(nn.Conv2d(c_in, c_out, 1, (stride, 1), bias=False), nn.BatchNorm2d(c_out))
            self.relu = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.relu(self.b1(self.c1(x)))
            return self.relu(self.b2(self.c2(h)) + self.short(x))

    class TCResNet8(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(1, 16, (3, n_mfcc), padding=(1, 0), bias=False)
            self.blocks = nn.Sequential(Block(16, 24, 2), Block(24, 32, 2), Block(32, 48, 2))
            self.fc = nn.Linear(48, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3)))

    return TCResNet8()


class Sitting:
    """What this invocation measures once for all its cells: the front end of each (device, data
    configuration), in a measurement store of its own (a temporary file, gone at exit), so every
    front-end figure of this sitting's rows was measured now, on this machine — never looked up from
    an earlier sitting's store, which is keyed by device name and runtime, not by host. Measured as
    the runs measure a shipped model: ``MeasureConfig`` runs and warm-up, the device profile's
    statistic and loads; the exported files are shared with the searches (``<cache>/frontends/``)."""

    def __init__(self) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._store: Any = None
        self._devices: dict[str, Any] = {}
        self._costs: dict[tuple[str, str], Any] = {}

    def device(self, name: str) -> Any:
        from edgenas.devices.registry import get_device

        if name not in self._devices:
            self._devices[name] = get_device(name)
        return self._devices[name]

    def frontend(self, device: str, data_config: dict[str, Any]) -> Any:
        """The :class:`FrontendCost` of ``data_config`` (a ``DataConfig.to_dict()``) on ``device``."""
        from edgenas.config import MeasureConfig
        from edgenas.devices.frontend_cost import build_frontend_table
        from edgenas.devices.profiles import measure_defaults
        from edgenas.spec import DataConfig
        from edgenas.store import Store, default_cache_dir

        cfg = DataConfig(**data_config)
        key = (device, cfg.key())
        if key not in self._costs:
            if self._store is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="search_quality-sitting-")
                self._store = Store(Path(self._tmp.name) / "frontends.sqlite")
            dev, mc = self.device(device), MeasureConfig()
            d = measure_defaults(dev)
            table = build_frontend_table(dev, self._store, [cfg], default_cache_dir(), stat=d.latency_stat,
                                         runs=mc.runs, warmup=mc.warmup, loads=d.loads)
            self._costs[key] = table.get(cfg)
            print(f"  front end {cfg.key()} on {device}: {self._costs[key].latency_ms:.4g} ms ({d.latency_stat}, "
                  f"{d.loads} loads), {self._costs[key].ram_bytes / 1024:.1f} KiB", file=sys.stderr, flush=True)
        return self._costs[key]


SITTING = Sitting()


def _budget_tag(scope: str, source: str, budget_ms: float) -> str:
    """The budget's part of a run directory's name: the figure (model-only budgets, as run names
    always had), ``e2e<figure>`` for a fixed end-to-end budget, ``e2e-<method>`` for a budget
    measured from a method (its figure changes between sittings, its runs must not)."""
    if scope == "model":
        return str(budget_ms)
    return f"e2e{budget_ms}" if source == "fixed" else f"e2e-{source}"


class Bench:
    """One (dataset, device, budget, seed) cell: every method, same recipe."""

    def __init__(self, a: Any, data: dict[str, Any], device: str, budget_ms: float, seed: int, out: Path,
                 budget_parts: dict[str, Any] | None = None) -> None:
        self.a, self.data, self.device, self.budget, self.seed, self.out = a, data, device, budget_ms, seed, out
        self.mode = "quick" if a.quick else "full"
        self.epochs = 20 if a.quick else 40
        self.search_epochs = 12 if a.quick else 30
        self.scope: str = a.budget_scope
        self.e2e = self.scope == "end-to-end"
        self.budget_source: str = a.budget_from or "fixed"
        self.budget_parts = budget_parts  # how a measured budget was made (--budget-from)
        self.ram_kb: float = a.max_ram_kb  # 0: no RAM budget
        self.budget_tag = _budget_tag(self.scope, self.budget_source, budget_ms)

    def edgenas_run_name(self, method: str, variant: dict[str, bool]) -> str:
        """An edgenas variant's run directory: one suffix per option on (``VARIANTS``; directories
        from before an option existed have no suffix)."""
        return self.run_name(RUN_DIR[method]) + "".join(VARIANTS[k][1] for k, on in variant.items() if on)

    def run_name(self, method: str) -> str:
        """One run directory per cell, method and mode (a quick run is never resumed as a full one)."""
        return f"{self.dataset_tag}-{self.device}-{self.budget_tag}-s{self.seed}-{method}" \
            + ("-quick" if self.mode == "quick" else "")

    @property
    def dataset_tag(self) -> str:
        """``fsdd`` for the nicolas fold (the name earlier sittings used), ``fsdd_<speaker>`` for the others."""
        fold = self.data["fold"]
        return self.data["name"] + (f"_{fold}" if fold and fold != "nicolas" else "")

    def base_args(self, name: str) -> list[str]:
        ram = ["--max-ram-kb", str(self.ram_kb)] if self.ram_kb > 0 else []
        return ["--data", self.data["path"], *self.data["args"], "--device", self.device, "--max-latency-ms",
                str(self.budget), *ram, "--budget-scope", self.scope, "--seed", str(self.seed), "--epochs",
                str(self.epochs), "--search-epochs", str(self.search_epochs), "--runs-dir", str(self.out / "runs"),
                "--name", name]

    def cell(self, method: str) -> dict[str, Any]:
        """The fields that identify a row (and which mode, hence which epochs, produced it)."""
        return {"method": method, "dataset": self.data["name"], "fold": self.data["fold"], "device": self.device,
                "budget_ms": self.budget, "seed": self.seed, "mode": self.mode, "epochs": self.epochs,
                "search_epochs": self.search_epochs,
                # latencies of rows measured in different sittings are comparable only on the same
                # machine (session 3's VM timed TC-ResNet8 at 0.030 ms, session 4's at 0.008 ms)
                "host": platform.node(), "cpu": common.cpu_model(), "scope": self.scope,
                **({"budget_source": self.budget_source, "max_ram_kb": self.ram_kb} if self.e2e else {}),
                **({"budget_parts": self.budget_parts} if self.budget_parts else {})}

    def row(self, method: str, m: dict[str, Any], search_s: float) -> dict[str, Any]:
        acc = m["accuracy"]
        row = {**self.cell(method), "test_fp32": acc["test_fp32_torch"], "test_int8": acc["test_int8"],
               "latency_ms": m["latency_ms"]["budgeted"], "ram_kb": m["ram_bytes"]["int8_graph"] / 1024,
               "flash_kb": m["flash_bytes"]["int8_file"] / 1024, "search_s": search_s,
               "holds": m["all_budgets_hold"], "data_config": m["data_config"], "macs": m["macs"]}
        if self.e2e:
            row["latency_stat"] = m["latency_ms"].get("statistic")
            if m["latency_ms"].get("frontend_budgeted") is not None:  # the shipped front end, as the run measured it
                row["frontend_shipped_ms"] = m["latency_ms"]["frontend_budgeted"]
            if method.startswith("edgenas"):  # the run judged its own budgets end to end: its figures
                if m.get("budget_scope") != "end-to-end" or row.get("frontend_shipped_ms") is None:
                    raise SystemExit(f"search_quality: {m['run_dir']} was not searched with end-to-end budgets "
                                     f"(scope {m.get('budget_scope')}); move it away to search it again")
                row["budget_ms"] = m["budgets"]["latency"]["limit"]  # a resumed run keeps the budget it began with
                row["holds_reported"] = m["all_budgets_hold"]
                self.end_to_end(row, frontend=(row["frontend_shipped_ms"], m["ram_bytes"]["frontend"],
                                               m["flash_bytes"]["frontend_file"]), source="run metrics")
            else:
                self.end_to_end(row)
        return row

    def end_to_end(self, row: dict[str, Any], frontend: tuple[float, int, int] | None = None,
                   source: str = "this sitting") -> dict[str, Any]:
        """Add the end-to-end figures to ``row``: its front end (``frontend`` = latency ms, RAM and
        flash bytes as the run measured them, else measured in this sitting), front end + model,
        the share of the budget, and whether the budgets hold end to end. Every row also gets the
        sitting's own front-end figure (``frontend_table_ms``), so that rows can be compared."""
        fe = SITTING.frontend(self.device, row["data_config"])
        row["frontend_table_ms"] = fe.latency_ms
        ms, ram, flash = frontend or (fe.latency_ms, fe.ram_bytes, fe.flash_bytes)
        row.update(frontend_ms=ms, frontend_source=source, frontend_ram_kb=ram / 1024, frontend_flash_kb=flash / 1024,
                   e2e_ms=row["latency_ms"] + ms, e2e_ram_kb=row["ram_kb"] + ram / 1024,
                   e2e_flash_kb=row["flash_kb"] + flash / 1024)
        _judge(row)
        return row

    def edgenas(self, fixed: bool, space: str = "kws-dscnn") -> dict[str, Any]:
        tcn = space == "kws-tcn"
        method = "edgenas-fixed-data" if fixed else "edgenas-tcn" if tcn else "edgenas"
        variant = _variant_of(self.a)
        name = self.edgenas_run_name(method, variant)
        sets = [x for k, v in STANDARD.items() for x in ("--set", f"{k}={v}")] if fixed else []
        rate = ((self.budget_parts or {}).get("data_config") or {}).get("sample_rate")
        if fixed and self.e2e and rate:  # end to end the sample rate is a front-end cost: fixed too,
            sets += ["--set", f"space.sample_rates={rate}"]  # at the budget network's (the standard) one
        sets += [x for k, on in variant.items() if on
                 for x in ("--set", f"{VARIANTS[k][0]}={self.variant_value(k, space)}")]
        if (self.out / "runs" / "kws" / name / "state.json").exists():  # an interrupted sitting: its saved config
            m = _edgenas_cmd(["--runs-dir", str(self.out / "runs"), "--name", name, "--resume"])
        else:
            m = _edgenas_cmd(self.base_args(name) + sets + ["--space", space])
        row = self.row(method, m, m["search_seconds"])
        saved = json.loads((self.out / "runs" / "kws" / name / "config.json").read_text())
        for k, (key, _, _) in VARIANTS.items():  # what the run searched with
            section, field = key.split(".")
            value = saved[section].get(field, False)
            # the default windows include 64/32 since the data space gained it, so a run's windows no
            # longer tell the variant: the run directory (this invocation's variant) does
            row[k] = variant[k] if k == "long_window" else bool(value)
        return row

    def variant_value(self, k: str, space: str) -> str:
        """The ``--set`` value of search variant ``k``."""
        return str(self.calibrated(space)) if k == "calibrated" else LONG_WINDOWS if k == "long_window" else "true"

    def calibrated(self, space: str) -> Path:
        """The predictors directory of the calibrated variant, after calibrating ``space`` on this
        device there if it has not been (in a store and cache of its own, one invocation at a time;
        run the first such grid alone: a calibration measured next to another grid is a noisy one)."""
        from edgenas.devices.profiles import measure_defaults
        from edgenas.devices.registry import get_device
        from edgenas.devices.predictor import predictor_path
        from edgenas.spaces.base import SPACES

        root = self.out / "calibration"
        root.mkdir(parents=True, exist_ok=True)
        dev = get_device(self.device)
        path = predictor_path(root / "predictors", self.device, space, SPACES.get(space).version,
                              f"{dev.artifact_format}-int8", measure_defaults(dev).latency_stat)
        with (root / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.exists():
                print(f"  calibrating {space} on {self.device} ({CALIBRATION_SAMPLES[space]} networks) into {root}",
                      file=sys.stderr, flush=True)
                env = {**os.environ, "EDGENAS_CACHE": str(root), "EDGENAS_STORE": str(root / "store.sqlite")}
                res = subprocess.run([_edgenas_exe(), "calibrate", "--device",
                                      self.device, "--task", "kws", "--space", space, "--samples",
                                      str(CALIBRATION_SAMPLES[space]), "--quiet"], env=env, text=True,
                                     capture_output=True)
                if res.returncode != 0 or not path.exists():
                    raise SystemExit(f"search_quality: calibrating {space} on {self.device} failed: "
                                     + (res.stderr.strip().splitlines() or ["no predictor written"])[-1])
        return root / "predictors"

    def pipeline(self, name: str, sets: list[str], budgeted: bool = True) -> Any:
        """The pipeline of run ``name``, with this cell's budgets (none when not ``budgeted``)."""
        from edgenas import config as C
        from edgenas.pipeline import Pipeline
        from edgenas.runs import RunDir

        flags = {"data": self.data["path"], "device": self.device, "max_latency_ms": self.budget if budgeted else 0.0,
                 "max_ram_kb": self.ram_kb if budgeted else 0.0, "budget_scope": self.scope, "seed": self.seed,
                 "train.epochs": self.epochs, **self.data["flags"]}
        cfg = C.resolve(sets=sets, flags=flags)
        path = self.out / "runs" / "kws" / name
        run = RunDir(path, resume=(path / "state.json").exists())
        return Pipeline(cfg, run), run

    def fixed_spec(self, method: str, spec: Any, sets: list[str], budgeted: bool = True) -> dict[str, Any]:
        """A hand-designed spec (or ``spec(space)``) through the pipeline's own train → export →
        measure stages."""
        name = self.run_name(method)
        p, run = self.pipeline(name, sets, budgeted)
        with run:
            if callable(spec):
                spec = spec(p.space)
            run.write_json("config.json", __import__("edgenas.config", fromlist=["to_dict"]).to_dict(p.cfg))
            for stage, res in (("config", {}), ("data", p._stage_data()), ("budgets", {"constraints": []}),
                               ("search", {"seconds": 0.0}), ("derive", {"spec": spec.to_dict(), "hash": spec.hash(),
                                                                         "derived_hash": spec.hash(), "repairs": [],
                                                                         "estimates": p.estimates(spec, latency=False)})):
                if not run.done(stage):
                    run.mark(stage, res, 0.0)
            run.write_json("search.json", {"spec": spec.to_dict(), "probs": {}, "history": [], "multipliers": {},
                                           "seconds": 0.0})
            run.write_text("arch.json", spec.to_json() + "\n")
            if method in TRAINED_ONCE:
                self.reuse_training(run, method, spec)
            m = p.run_all()
        return self.row(method, m, 0.0)

    def sibling(self, method: str, need: str) -> Path | None:
        """A finished run of the same hand-designed network, dataset, seed and mode for another
        device or budget (its trained weights do not depend on either), holding file ``need``."""
        mine = self.run_name(method)
        pattern = f"{self.dataset_tag}-*-s{self.seed}-{method}" + ("-quick" if self.mode == "quick" else "")
        for d in sorted((self.out / "runs" / "kws").glob(pattern)):
            if d.name != mine and (d / need).is_file():
                return d
        return None

    def trained_sibling(self, run: Any, method: str) -> Path | None:
        """A sibling run (:meth:`sibling`) whose ``model.pt`` was trained with this run's recipe
        and seed, or None."""
        sib = self.sibling(method, "model.pt")
        if sib is None:
            return None
        sib_cfg, mine_cfg = json.loads((sib / "config.json").read_text()), run.read_json("config.json")
        return sib if sib_cfg["train"] == mine_cfg["train"] and sib_cfg["seed"] == mine_cfg["seed"] else None

    def reuse_training(self, run: Any, method: str, spec: Any) -> None:
        """Train a baseline once per (dataset, seed, mode): a run for another device or budget
        takes the weights a sibling run trained with the same recipe, and is exported and measured
        afresh. Saves ~40% of a grid cell's time; the shared model also makes the devices'
        figures a like-for-like comparison."""
        import shutil

        if run.done("train"):
            return
        sib = self.trained_sibling(run, method)
        if sib is None:
            return
        sib_state = json.loads((sib / "state.json").read_text())["stages"]
        if "train" not in sib_state or sib_state["derive"]["result"]["hash"] != spec.hash():
            return
        shutil.copyfile(sib / "model.pt", run.file("model.pt.tmp"))
        run.file("model.pt.tmp").replace(run.file("model.pt"))
        run.mark("train", {**sib_state["train"]["result"], "reused_from": sib.name}, 0.0)
        print(f"  {method}: weights trained by {sib.name}", file=sys.stderr, flush=True)

    def ds_cnn(self, width: int, method: str) -> dict[str, Any]:

        sets = [f"space.widths={width}", "space.stem_kernels=10x4", "space.n_blocks=4", "space.block_ops=dw3x3",
                "space.n_mfcc=10", "space.windows=40/20"]
        def spec(space: Any) -> Any:  # the highest sample rate the dataset has, the only option elsewhere
            return space.spec({pt.name: pt.options[-1] if pt.name == "data.sample_rate" else pt.options[0]
                               for pt in space.choice_points()})

        # the network a budget is measured from is run without one: its run does not depend on the
        # figure it is about to set, and every seed's is measured alike (no confirming passes)
        return self.fixed_spec(method, spec, sets, budgeted=method != self.budget_source)

    def tc_resnet8(self) -> dict[str, Any]:
        """Not a point of the kws-dscnn space: trained, exported and measured with the same pieces."""
        import torch

        from edgenas.config import to_dict

        name = self.run_name("tc-resnet8")
        p, run = self.pipeline(name, ["space.n_mfcc=10", "space.windows=40/20"])
        with run:
            run.write_json("config.json", to_dict(p.cfg))
            data_cfg = p.space.data_configs()[-1]
            torch.manual_seed(self.seed)
            model = _tc_resnet8(data_cfg.n_mfcc, len(p.dataset.classes))
            sib = self.trained_sibling(run, "tc-resnet8")
            if sib is not None:
                model.load_state_dict(torch.load(sib / "model.pt", weights_only=True))  # see reuse_training
                print(f"  tc-resnet8: weights trained by {sib.name}", file=sys.stderr, flush=True)
            rep, r8, meas = common.train_export_measure(p, run, model, data_cfg, self.seed, "tc-resnet8",
                                                        trained=sib is not None)
            lat = meas.stat(p.latency_stat)
        ram = r8["verification"]["peak_activation_bytes"] / 1024
        row = {**self.cell("tc-resnet8"), "test_fp32": rep["test_acc_fp32_torch"], "test_int8": r8["test_acc"],
               "latency_ms": lat, "ram_kb": ram, "flash_kb": r8["flash_bytes"] / 1024, "search_s": 0.0,
               "holds": lat <= self.budget and ram <= self.ram_kb,
               "data_config": data_cfg.to_dict(), "macs": float("nan")}
        if self.e2e:
            row["latency_stat"] = p.latency_stat
            self.end_to_end(row)
        return row

    def random_search(self, seconds: float) -> dict[str, Any]:
        import torch

        from edgenas import cost
        from edgenas.train import evaluate, train_model

        name = self.run_name("random")
        p, run = self.pipeline(name + "-probe", [])
        with run:
            p.run.mark("config", {}, 0.0)
            lat = p.latency_model()
            ram = cost.peak_ram(p.space)
            # end to end: each data configuration's front end (the table the edgenas search prices
            # with) is added to the model's latency and RAM
            fe = p.frontend_table() if self.e2e else None

            def feasible(spec: Any) -> bool:
                f = fe.get(spec.data) if fe is not None else None
                ms = lat.cost(spec) + (f.latency_ms if f else 0.0)
                kb = (ram.cost(spec) + (f.ram_bytes if f else 0)) / 1024
                return ms <= self.budget and (kb <= self.ram_kb or (self.e2e and self.ram_kb <= 0))

            rng = random.Random(self.seed)
            t0 = time.perf_counter()
            tried: list[dict[str, Any]] = []
            while time.perf_counter() - t0 < seconds or not tried:
                for _ in range(10000):
                    spec = p.space.sample(rng)
                    if feasible(spec):
                        break
                va = p.features("val", spec.data)
                torch.manual_seed(self.seed)
                model = p.space.build(spec)
                train_model(model, *p.training_set(spec.data), p.cfg.train, p.task, seed=self.seed)
                tried.append({"spec": spec, "val": evaluate(model, va.x, va.y, p.task)})
            best = max(tried, key=lambda t: t["val"])
            spent = time.perf_counter() - t0
        row = self.fixed_spec("random", best["spec"], [])
        row.update({"search_s": spent, "candidates": len(tried), "best_val": best["val"]})
        return row


FSDD_SPEAKERS = ("nicolas", "george", "jackson", "lucas")  # the four speakers in ../shared/data/fsdd


def fsdd(root: Path, fold: str) -> dict[str, Any]:
    """FSDD leaving speaker ``fold`` out as the test set (the loader takes the last remaining speaker
    in sorted order as validation, the other two as train)."""
    return {"name": "fsdd", "fold": fold, "path": str(root / "fsdd"), "args": ["--test-speakers", fold],
            "flags": {"test_speakers": [fold]}}


DATASETS = {
    "fsdd": fsdd,
    "arabic": lambda root, fold: {"name": "arabic", "fold": "", "path": str(root / "arabic_speech_commands"),
                                  "args": [], "flags": {}},
}


BUDGET_FROM = ("ds-cnn-s",)  # --budget-from: the networks a cell's budget can be measured from


def measure_budget(a: Any, data: dict[str, Any], device: str, seed: int, done: dict[tuple[Any, ...], dict[str, Any]],
                   results: Path) -> tuple[float, dict[str, Any]]:
    """``--budget-from``: the end-to-end latency budget of the cell (``data``, ``device``), measured
    now — the named network at the first seed, trained and exported by the pipeline without a budget
    (or its finished run reused), its int8 model measured afresh on the device (the profile's
    statistic and loads, ``MeasureConfig`` runs), plus its front end measured in this sitting. A row
    made now for that network carries the fresh figure as ``latency_ms`` (the run's own as
    ``latency_ms_at_run``), so its budget share is the budget's own."""
    from edgenas.config import MeasureConfig
    from edgenas.devices.measure import measure_fresh
    from edgenas.devices.profiles import measure_defaults

    method = a.budget_from
    b = Bench(a, data, device, 0.0, seed, a.out)
    key = _key({**b.cell(method), **_variant_of(a)})
    new = key not in done
    if new:
        print(f"[{time.strftime('%H:%M:%S')}] {method} {b.dataset_tag} {device} seed {seed}: the network the "
              "budget is measured from", file=sys.stderr, flush=True)
        row = b.ds_cnn(64, method)
    else:
        row = done[key]
    run = a.out / "runs" / "kws" / b.run_name(method)
    rep = run / "export" / "report.json"
    dev = SITTING.device(device)
    if not rep.is_file():
        raise SystemExit(f"search_quality: {run} has no export report, so the budget cannot be measured from "
                         f"{method}; move its row out of {results} to run it again")
    model = run / "export" / json.loads(rep.read_text())["models"][f"{dev.artifact_format}-int8"]["file"]
    d, mc = measure_defaults(dev), MeasureConfig()
    model_ms = measure_fresh(dev, model, runs=mc.runs, warmup=mc.warmup, loads=d.loads).stat(d.latency_stat)
    fe = SITTING.frontend(device, row["data_config"])
    budget = model_ms + fe.latency_ms  # unrounded: the budget's own row has exactly this e2e_ms
    parts = {"method": method, "seed": seed, "run": run.name, "data_config": row["data_config"],
             "model_ms": model_ms, "frontend_ms": fe.latency_ms,
             "stat": d.latency_stat, "loads": d.loads, "runs": mc.runs, "measured_at": time.strftime("%Y-%m-%d %H:%M"),
             "host": platform.node()}
    print(f"  budget: {method} end to end {budget:.4g} ms = int8 model {model_ms:.4g} + front end "
          f"{fe.latency_ms:.4g} ({d.latency_stat}, {d.loads} loads), measured now", file=sys.stderr, flush=True)
    if new:
        row["latency_ms_at_run"], row["latency_ms"], row["latency_stat"] = row["latency_ms"], model_ms, d.latency_stat
        row.update(budget_ms=budget, budget_parts=parts)
        b.end_to_end(row)
        done[_key(row)] = row
        with results.open("a") as f:
            f.write(json.dumps(row, default=str) + "\n")
    return budget, parts


def run_method(b: Bench, method: str, search_s: float | None) -> dict[str, Any]:
    if method == "edgenas-tcn":
        return b.edgenas(fixed=False, space="kws-tcn")
    if method in ("edgenas", "edgenas-fixed-data"):
        return b.edgenas(fixed=method != "edgenas")
    if method == "ds-cnn-s":
        return b.ds_cnn(64, method)
    if method == "ds-cnn-m":
        return b.ds_cnn(172, method)
    if method == "tc-resnet8":
        return b.tc_resnet8()
    if method == "random":
        return b.random_search(search_s or 300.0)
    raise SystemExit(f"unknown method {method}")


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=None, choices=sorted(DATASETS))
    p.add_argument("--devices", nargs="+", default=None)
    p.add_argument("--budgets", nargs="+", type=float, default=None, help="latency budgets, ms")
    p.add_argument("--budget-scope", choices=["model", "end-to-end"], default=None,
                   help="what --budgets apply to: the int8 model alone (default, the grid's figures) or front end "
                        "+ model (end-to-end, the default with --budget-from)")
    p.add_argument("--budget-from", choices=BUDGET_FROM, default=None,
                   help="the latency budget of each (dataset, device) cell is this network's end-to-end latency, "
                        "measured at the start of the cell in this sitting (instead of --budgets)")
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    p.add_argument("--folds", nargs="+", default=None, choices=FSDD_SPEAKERS,
                   help="FSDD test speakers (default: nicolas in quick mode, all four in full mode)")
    p.add_argument("--methods", nargs="+", default=["edgenas", "edgenas-tcn", "edgenas-fixed-data", "ds-cnn-s",
                                                    "ds-cnn-m", "tc-resnet8", "random"])
    p.add_argument("--max-ram-kb", type=float, default=None,
                   help="RAM budget, KiB (default: 64 in model scope; none end to end, where a front end alone "
                        "holds ~100-200 KiB)")
    p.add_argument("--latency-target", action="store_true",
                   help="search the edgenas methods with search.latency_target=true (the budget as a target); "
                        "their own rows and run directories (-target)")
    p.add_argument("--data-first", action="store_true",
                   help="search the edgenas methods with search.data_first=true (data configuration scored "
                        "and frozen before the architecture search); their own rows and run directories (-df)")
    p.add_argument("--share-stem", action="store_true",
                   help="search the edgenas kws-dscnn methods with space.share_stem=true (one supernet stem for "
                        "every data option); their own rows and run directories (-ss)")
    p.add_argument("--calibrated", action="store_true",
                   help="search the edgenas methods with the device's calibrated latency predictor, calibrating "
                        "it first into results/calibration if needed; their own rows and run directories (-cal)")
    p.add_argument("--long-window", action="store_true",
                   help=f"search the joint edgenas methods with space.windows={LONG_WINDOWS} (a window cheaper "
                        "than the standard one); their own rows and run directories (-w64)")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the table and JSON from the rows measured so far; run nothing")
    p.add_argument("--remeasure", action="store_true",
                   help="measure the int8 model of every row of this grid (its datasets, devices, budgets, "
                        "seeds, mode) again now, one after another, and keep each row's lowest quiet pass; train nothing")
    a = p.parse_args()
    if a.share_stem and "edgenas-tcn" in a.methods:
        p.error("--share-stem applies to the kws-dscnn space: pass --methods edgenas edgenas-fixed-data")
    if a.long_window and "edgenas-fixed-data" in a.methods:
        p.error("--long-window widens the searched data space; edgenas-fixed-data does not search it")
    if a.budget_from:
        if a.budgets:
            p.error("--budget-from measures the cell's budget: drop --budgets")
        if a.budget_scope == "model":
            p.error("--budget-from measures an end-to-end budget: drop --budget-scope model")
        a.budget_scope = "end-to-end"
        # the network the budget comes from is a row of the cell, first (it is trained for the budget anyway)
        a.methods = [a.budget_from] + [m for m in a.methods if m != a.budget_from]
    a.budget_scope = a.budget_scope or "model"
    if a.max_ram_kb is None:
        a.max_ram_kb = 64.0 if a.budget_scope == "model" else 0.0
    elif a.max_ram_kb <= 0:
        p.error("--max-ram-kb must be positive (leave it out for no RAM budget end to end)")
    common.use_bench_dirs(a.out)
    datasets = a.datasets or (["fsdd"] if a.quick else ["fsdd", "arabic"])
    devices = a.devices or (["litert-cpu"] if a.quick else ["onnxruntime-cpu", "litert-cpu"])
    budgets = a.budgets or ([0.15] if a.quick else [0.08, 0.15, 0.3])
    seeds = a.seeds or ([0] if a.quick else [0, 1, 2])
    rows: list[dict[str, Any]] = []
    results = a.out / "search_quality.rows.jsonl"
    lock = (a.out / ".search_quality.lock").open("w")
    if not a.report_only:  # grids of different cells may run side by side (each appends whole rows);
        try:               # --remeasure rewrites the rows file and times models, so it runs alone
            fcntl.flock(lock, (fcntl.LOCK_EX if a.remeasure else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"search_quality: other runs of this benchmark are using {a.out}; run --remeasure after "
                             "they finish" if a.remeasure else f"search_quality: --remeasure is running on {a.out}; wait for it")
    # rows accumulate across invocations (a full grid takes several sittings); a row is reused only
    # for the same cell in the same mode
    done = _read_rows(results)
    mode = "quick" if a.quick else "full"
    folds = a.folds or (["nicolas"] if a.quick else list(FSDD_SPEAKERS))
    groups = [(DATASETS[ds](a.data_root, fold), dev) for ds in ([] if a.report_only else datasets)
              for fold in (folds if ds == "fsdd" else [""]) for dev in devices]
    budget_ids = [("from", a.budget_from)] if a.budget_from else budgets
    if a.remeasure:
        groups, grid = [], {(ds, dev, a.budget_scope, bid, seed) for ds in datasets for dev in devices
                            for bid in budget_ids for seed in seeds}
        mine = [r for r in done.values() if r.get("mode", "quick") == mode
                and (r["dataset"], r["device"], r.get("scope", "model"), _budget_id(r), r["seed"]) in grid
                and (r["dataset"] != "fsdd" or _fold(r) in folds)]
        remeasure(mine, a, a.out)
        tmp = results.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r, default=str) + "\n" for r in done.values()))
        tmp.replace(results)
        rows = mine
    for data, dev in groups:
        if a.budget_from:  # measured now, at the start of the cell, for all its seeds
            cell_budgets: list[tuple[float, dict[str, Any] | None]] = [measure_budget(a, data, dev, seeds[0], done,
                                                                                      results)]
        else:
            cell_budgets = [(budget, None) for budget in budgets]
        for budget, parts in cell_budgets:
            for seed in seeds:
                b = Bench(a, data, dev, budget, seed, a.out, parts)
                search_s = None
                for method in a.methods:
                    key = _key({**b.cell(method), **_variant_of(a)})
                    if key in done:
                        rows.append(done[key])
                        if method == "edgenas":
                            search_s = done[key]["search_s"]
                        continue
                    print(f"[{time.strftime('%H:%M:%S')}] {method} {b.dataset_tag} {dev} {budget:.4g} ms "
                          f"({b.scope}) seed {seed}", file=sys.stderr, flush=True)
                    row = run_method(b, method, search_s)
                    if method == "edgenas":
                        search_s = row["search_s"]
                    rows.append(row)
                    done[_key(row)] = row
                    with results.open("a") as f:
                        f.write(json.dumps(row, default=str) + "\n")
    done = {**_read_rows(results), **done}  # with the rows a side-by-side grid appended meanwhile
    every = list(done.values())
    old = [r for r in every if r.get("scope", "model") == "model"]  # model-only budgets: the old tables
    e2e = [r for r in every if r.get("scope", "model") == "end-to-end"]
    summary = summarize(old)  # every cell measured so far, in either mode
    md = "" if e2e and not old else "## Search quality (KWS)\n\n" + common.table(
        ["mode", "dataset", "device", "budget ms", "method", "runs (seeds × folds)", "test fp32", "test int8", "latency ms", "budget holds",
         "RAM KiB", "flash KiB", "search s"], summary)
    pairs = paired(old)
    if pairs:
        md += ("\n\n### Paired by seed (and fold): edgenas minus the other method, test int8, points\n\n"
               + common.table(["mode", "dataset", "device", "budget ms", "edgenas", "minus", "pairs",
                               "difference mean ± std", "95% interval", "edgenas ahead", "other holds budget"],
                              pairs))
    cell_table = e2e_summary(e2e)
    if cell_table:
        md += ("\n\n" if md else "") + e2e_markdown(e2e, cell_table)
    common.write(a.out, "search_quality", {"rows": every, "paired": pairs, "end_to_end": cell_table}, md)
    plot([r for r in old if r.get("mode", "quick") == mode], a.out)  # every row of this grid's mode, as the table
    plot([r for r in e2e if r.get("mode", "quick") == mode], a.out, e2e=True)


def _ms(vals: list[float]) -> str:
    vals = [v for v in vals if v == v]
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.4g}"
    return f"{statistics.mean(vals):.4g} ± {statistics.stdev(vals):.2g}"


def remeasure(rows: list[dict[str, Any]], a: Any, out: Path) -> None:
    """Measure every row's shipped int8 model again, one after another in this sitting (run with
    nothing else on the machine): rows measured while other work shared the 2 cores carry that
    interference, and rows from different sittings are not comparable (RESULTS.md). The figure
    measured during the run is kept as ``latency_ms_at_run``. Every quiet pass is kept in
    ``latency_passes_ms`` and the row's figure is the lowest of them: on this VM quiet passes a
    minute apart differ by up to 1.9× (an occasional high reading), and interference only adds time.
    ``holds`` follows the row's figure (end to end for end-to-end rows: ``e2e_ms``, ``budget_share``
    and ``holds`` are recomputed with the row's front-end figure)."""
    from edgenas.config import MeasureConfig
    from edgenas.devices.measure import measure_fresh
    from edgenas.devices.profiles import measure_defaults
    from edgenas.devices.registry import get_device

    mc = MeasureConfig()

    devices: dict[str, Any] = {}
    for i, r in enumerate(rows):
        data = DATASETS[r["dataset"]](a.data_root, _fold(r))
        b = Bench(a, data, r["device"], r["budget_ms"], r["seed"], out)
        b.mode = r.get("mode", "quick")
        b.budget_tag = _budget_tag(r.get("scope", "model"), r.get("budget_source", "fixed"), r["budget_ms"])
        run = out / "runs" / "kws" / (b.edgenas_run_name(r["method"], _variant(r))
                                      if r["method"] in RUN_DIR else b.run_name(r["method"]))
        dev = devices.setdefault(r["device"], get_device(r["device"]))
        fmt = dev.artifact_format
        rep = run / "export" / "report.json"
        if not rep.is_file():
            print(f"  {run.name}: no export report; row kept as measured", file=sys.stderr)
            continue
        model = run / "export" / json.loads(rep.read_text())["models"][f"{fmt}-int8"]["file"]
        d = measure_defaults(dev)
        m = measure_fresh(dev, model, runs=mc.runs, warmup=mc.warmup, loads=d.loads)  # as the runs did
        r.setdefault("latency_ms_at_run", r["latency_ms"])
        # a row remeasured before passes were kept has its one quiet pass as its figure
        passes = r.setdefault("latency_passes_ms", [r["latency_ms"]] if "remeasured_at" in r else [])
        passes.append(m.stat(d.latency_stat))
        r["latency_ms"], r["latency_stat"] = min(passes), d.latency_stat
        r["remeasured_at"] = time.strftime("%Y-%m-%d %H:%M")
        if r.get("scope", "model") == "end-to-end":  # the row's front end as it was, the model measured now
            _judge(r)
        else:
            r["holds"] = r["latency_ms"] <= r["budget_ms"] and r["ram_kb"] <= a.max_ram_kb
        print(f"  [{i + 1}/{len(rows)}] {run.name}: at run {r['latency_ms_at_run']:.4g} ms, quiet passes "
              + ", ".join(f"{v:.4g}" for v in passes) + f" → {r['latency_ms']:.4g} ms "
              f"({d.latency_stat}, {d.loads} loads)", file=sys.stderr, flush=True)


def _fold(r: dict[str, Any]) -> str:
    """The FSDD test speaker of a row (rows before folds existed are the nicolas fold)."""
    return r.get("fold", "nicolas" if r["dataset"] == "fsdd" else "")


def _read_rows(path: Path) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The rows measured so far, by cell."""
    return {_key(r): r for r in (json.loads(line) for line in path.read_text().splitlines())} \
        if path.exists() else {}


def _variant(r: dict[str, Any]) -> dict[str, bool]:
    """The search options an edgenas row was searched with (a row without a field predates it)."""
    return {k: bool(r.get(k, False)) for k in VARIANTS}


def _variant_of(a: Any) -> dict[str, bool]:
    """The search options this invocation searches the edgenas methods with."""
    return {k: bool(getattr(a, k)) for k in VARIANTS}


def _budget_id(r: dict[str, Any]) -> Any:
    """What identifies a row's latency budget: its figure, or the network it was measured from
    (``--budget-from``: the figure is measured anew in each sitting)."""
    source = r.get("budget_source", "fixed")
    return r["budget_ms"] if source == "fixed" else ("from", source)


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    """A row's cell; edgenas rows of different search variants are separate cells, and so are rows
    of different budget scopes (rows without a scope are model-only)."""
    variant = tuple(_variant(r).values()) if r["method"].startswith("edgenas") else None
    return (r["method"], r["dataset"], _fold(r), r["device"], r.get("scope", "model"), _budget_id(r), r["seed"],
            r.get("mode", "quick"), variant)


def _judge(r: dict[str, Any]) -> None:
    """An end-to-end row's total latency, budget share and whether its budgets hold, end to end
    (latency; RAM when the row had a RAM budget)."""
    r["e2e_ms"] = r["latency_ms"] + r["frontend_ms"]
    r["budget_share"] = r["e2e_ms"] / r["budget_ms"] if r["budget_ms"] > 0 else float("nan")
    ram = r.get("max_ram_kb", 0.0)
    r["holds"] = r["budget_ms"] > 0 and r["e2e_ms"] <= r["budget_ms"] and (ram <= 0 or r["e2e_ram_kb"] <= ram)


def _label(r: dict[str, Any]) -> str:
    """A row's method as the tables name it (edgenas rows carry their search variant)."""
    method = r["method"]
    if method.startswith("edgenas"):
        method += "".join(VARIANTS[k][2] for k, on in _variant(r).items() if on)
    return method


def summarize(rows: list[dict[str, Any]]) -> list[list[Any]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r.get("mode", "quick"), r["dataset"], r["device"], r["budget_ms"], _label(r)), []).append(r)
    out = []
    for (mode, ds, dev, budget, method), rs in groups.items():
        out.append([mode, ds, dev, budget, method, len(rs), _ms([r["test_fp32"] for r in rs]),
                    _ms([r["test_int8"] for r in rs]), _ms([r["latency_ms"] for r in rs]),
                    f"{sum(bool(r['holds']) for r in rs)}/{len(rs)}", _ms([r["ram_kb"] for r in rs]),
                    _ms([r["flash_kb"] for r in rs]), _ms([r["search_s"] for r in rs])])
    return out


T95 = common.T95


def paired(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """Each edgenas variant minus each other method on test int8 accuracy, in points, paired by
    seed and FSDD fold within one (mode, dataset, device, budget): the baselines and random search
    share the edgenas run's data split and training seed, so the paired difference removes the
    split-to-split spread the unpaired means carry. Mean, std, 95% t interval, and on how many
    pairs edgenas was ahead; whether the other method held the budget is its own column."""
    groups: dict[tuple[Any, ...], dict[str, dict[tuple[Any, ...], dict[str, Any]]]] = {}
    for r in rows:
        g = groups.setdefault((r.get("mode", "quick"), r["dataset"], r["device"], r["budget_ms"]), {})
        g.setdefault(_label(r), {})[(r["seed"], _fold(r))] = r
    out = []
    for (mode, ds, dev, budget), by_label in groups.items():
        for mine in (m for m in by_label if m.startswith("edgenas")):
            # the joint search is also compared with its fixed-data twin: what searching the data buys
            variant = mine.removeprefix("edgenas")  # "" or " (…)" for the joint search, "-tcn…" / "-fixed-data…"
            twin = None if variant.startswith("-") else "edgenas-fixed-data" + variant
            for other in (o for o in by_label if not o.startswith("edgenas") or o == twin):
                keys = sorted(set(by_label[mine]) & set(by_label[other]))
                if len(keys) < 2:
                    continue
                d = [100 * (by_label[mine][k]["test_int8"] - by_label[other][k]["test_int8"]) for k in keys]
                mean, sd = round(statistics.mean(d), 2) + 0.0, statistics.stdev(d)  # + 0.0: no "-0.00"
                half = T95.get(len(d) - 1, 1.96) * sd / len(d) ** 0.5
                out.append([mode, ds, dev, budget, mine, other, len(d), f"{mean:+.2f} ± {sd:.2f}",
                            f"[{mean - half:+.2f}, {mean + half:+.2f}]", f"{sum(x > 0 for x in d)}/{len(d)}",
                            f"{sum(bool(by_label[other][k]['holds']) for k in keys)}/{len(d)}"])
    return out


METHOD_ORDER = ("edgenas", "edgenas-tcn", "edgenas-fixed-data", "ds-cnn-s", "ds-cnn-m", "tc-resnet8", "random")
E2E_HEADERS = ["mode", "dataset", "device", "budget (end to end)", "method", "runs", "test int8 %", "joint − this, points",
               "95% interval", "joint ahead", "model ms", "front end ms", "e2e ms", "budget share", "holds",
               "e2e RAM KiB", "data configurations"]


def _pct(vals: list[float]) -> str:
    vals = [100 * v for v in vals if v == v]
    if not vals:
        return "–"
    return f"{vals[0]:.2f}" if len(vals) == 1 else f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"


def _data_label(d: dict[str, Any]) -> str:
    """A data configuration in a table cell: sample rate, MFCC/mel bins, window/hop."""
    return f"{d['sample_rate'] / 1000:g} kHz {d['n_mfcc']}/{d['n_mels']} {d['win_ms']:g}/{d['hop_ms']:g} ms"


def _budget_label(rs: list[dict[str, Any]]) -> str:
    figures = sorted({r["budget_ms"] for r in rs})
    text = f"{figures[0]:.4g} ms" if len(figures) == 1 else f"{figures[0]:.4g}–{figures[-1]:.4g} ms"
    source = rs[0].get("budget_source", "fixed")
    return text if source == "fixed" else f"{source}: {text}"


def _method_order(label: str) -> tuple[int, str]:
    base = label.split(" (")[0]
    return (METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER), label)


def e2e_summary(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """The end-to-end rows per (mode, dataset, device, budget) and method: test int8 mean ± std over
    seeds (and FSDD folds), the paired difference joint search − this method in points with its 95%
    t interval (paired by seed and fold, as :func:`paired`), the mean measured model, front-end and
    end-to-end latencies, the mean share of the budget, how many held it, end-to-end RAM, and the
    data configurations chosen (how many runs chose each)."""
    groups: dict[tuple[Any, ...], dict[str, dict[tuple[Any, ...], dict[str, Any]]]] = {}
    for r in rows:
        g = groups.setdefault((r.get("mode", "quick"), r["dataset"], r["device"], _budget_id(r)), {})
        g.setdefault(_label(r), {})[(r["seed"], _fold(r))] = r
    out = []
    for (mode, ds, dev, _), by_label in groups.items():
        every = [r for rs in by_label.values() for r in rs.values()]
        joints = sorted(m for m in by_label if m == "edgenas" or m.startswith("edgenas ("))
        joint = joints[0] if joints else None
        for label in sorted(by_label, key=_method_order):
            mine = by_label[label]
            rs = [mine[k] for k in sorted(mine)]
            diff, interval, ahead = "–", "–", "–"
            keys = sorted(set(mine) & set(by_label[joint])) if joint and label != joint else []
            if keys:
                d = [100 * (by_label[joint][k]["test_int8"] - mine[k]["test_int8"]) for k in keys]
                mean = round(statistics.mean(d), 2) + 0.0
                if len(d) >= 2:
                    sd = statistics.stdev(d)
                    half = T95.get(len(d) - 1, 1.96) * sd / len(d) ** 0.5
                    diff, interval = f"{mean:+.2f} ± {sd:.2f}", f"[{mean - half:+.2f}, {mean + half:+.2f}]"
                else:
                    diff = f"{mean:+.2f}"
                ahead = f"{sum(x > 0 for x in d)}/{len(d)}"
            configs: dict[str, int] = {}
            for r in rs:
                configs[_data_label(r["data_config"])] = configs.get(_data_label(r["data_config"]), 0) + 1
            out.append([mode, ds, dev, _budget_label(every), label, len(rs), _pct([r["test_int8"] for r in rs]),
                        diff, interval, ahead, _ms([r["latency_ms"] for r in rs]), _ms([r["frontend_ms"] for r in rs]),
                        _ms([r["e2e_ms"] for r in rs]), _ms([r["budget_share"] for r in rs]),
                        f"{sum(bool(r['holds']) for r in rs)}/{len(rs)}", _ms([r["e2e_ram_kb"] for r in rs]),
                        ", ".join(f"{k} ×{n}" for k, n in configs.items())])
    return out


def e2e_markdown(rows: list[dict[str, Any]], table: list[list[Any]]) -> str:
    """The "End-to-end cell" section: how each budget was measured, then the table."""
    lines = ["## End-to-end cell", "",
             "Budgets are end to end: the float front end of the row's data configuration plus its int8 classifier, "
             "measured on the device (the profile's statistic). `model ms` is the shipped int8 model, `front end ms` its "
             "data configuration's front end (edgenas rows: the shipped front end from the run's metrics; the others: "
             "measured in the sitting that made the row), `e2e ms` their sum, `budget share` = e2e ms / budget. "
             "`joint − this`: the joint search (edgenas) minus the method, test int8 accuracy, points, paired by seed "
             "(and FSDD fold), with a 95% t interval. Data configurations: sample rate, MFCC/mel bins, window/hop "
             "(×runs that chose it).", ""]
    seen = set()
    for r in rows:
        bp = r.get("budget_parts")
        if not bp or (r["dataset"], _fold(r), r["device"], r["budget_ms"]) in seen:
            continue
        seen.add((r["dataset"], _fold(r), r["device"], r["budget_ms"]))
        lines.append(f"- {r['dataset']}{'/' + _fold(r) if _fold(r) else ''} on {r['device']}, "
                     f"{r.get('mode', 'quick')} mode: budget {r['budget_ms']:.4g} ms = {bp['method']} (seed {bp['seed']}) "
                     f"int8 model {bp['model_ms']:.4g} ms + front end {bp['frontend_ms']:.4g} ms ({bp['stat']}, "
                     f"{bp['loads']} loads), measured {bp['measured_at']} on {bp['host']}")
    return "\n".join(lines).rstrip() + "\n\n" + common.table(E2E_HEADERS, table)


def plot(rows: list[dict[str, Any]], out: Path, e2e: bool = False) -> None:
    """Test int8 accuracy against measured latency (the int8 model's, or front end + model's with
    ``e2e``), one panel per (dataset, device), the budgets as dashed lines."""
    plt = common.pyplot()
    if plt is None or not rows:
        return
    keys = sorted({(r["dataset"], r["device"]) for r in rows})
    methods = sorted({_label(r) for r in rows}, key=_method_order if e2e else None)
    x = "e2e_ms" if e2e else "latency_ms"
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4), squeeze=False)
    for ax, (ds, dev) in zip(axes[0], keys):
        mine = [r for r in rows if r["dataset"] == ds and r["device"] == dev]
        for i, method in enumerate(methods):
            pts = [(r[x], r["test_int8"]) for r in mine if _label(r) == method]
            if pts:
                ax.scatter(*zip(*pts), label=method, marker="o^sDv"[i // 10 % 5])  # colours repeat after ten
        for b in sorted({r["budget_ms"] for r in mine}):
            ax.axvline(b, color="grey", lw=0.8, ls="--")
        ax.set_title(f"{ds} on {dev}" + (", end to end" if e2e else ""))
        ax.set_xlabel("measured front end + int8 model latency (ms)" if e2e else "measured int8 latency (ms)")
        ax.set_ylabel("test accuracy (int8)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / ("search_quality.e2e.png" if e2e else "search_quality.png"), dpi=120)


if __name__ == "__main__":
    main()
