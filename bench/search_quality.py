"""Search quality (KWS): edgenas vs hand-designed baselines vs random search, at equal latency budgets.

Methods, all trained with the same recipe (``TrainConfig``: epochs, optimiser, augmentation) and
evaluated on the same never-seen test split, exported in the device's format, int8, and measured
on the device:

* ``edgenas`` — the joint data + architecture search (``edgenas search``, as a user runs it) in the
  default ``kws-dscnn`` space;
* ``edgenas-tcn`` — the same search in the ``kws-tcn`` space (temporal convolutions over MFCC
  channels, the TC-ResNet family without residual adds);
* ``edgenas-fixed-data`` — the same search with the data configuration fixed to the standard one
  (10 MFCC, 40 ms window, 20 ms hop) — what searching the data configuration buys;
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
                                                   # search variants: their own rows and run directories

Rows accumulate in ``results/search_quality.rows.jsonl`` across sittings (a cell already measured in
the same mode is not run again; an interrupted edgenas run resumes). The hand-designed baselines are
trained once per dataset, fold, seed and mode and exported and measured per device and budget.
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


class Bench:
    """One (dataset, device, budget, seed) cell: every method, same recipe."""

    def __init__(self, a: Any, data: dict[str, Any], device: str, budget_ms: float, seed: int, out: Path) -> None:
        self.a, self.data, self.device, self.budget, self.seed, self.out = a, data, device, budget_ms, seed, out
        self.mode = "quick" if a.quick else "full"
        self.epochs = 20 if a.quick else 40
        self.search_epochs = 12 if a.quick else 30

    def edgenas_run_name(self, method: str, variant: dict[str, bool]) -> str:
        """An edgenas variant's run directory: one suffix per option on (``VARIANTS``; directories
        from before an option existed have no suffix)."""
        return self.run_name(RUN_DIR[method]) + "".join(VARIANTS[k][1] for k, on in variant.items() if on)

    def run_name(self, method: str) -> str:
        """One run directory per cell, method and mode (a quick run is never resumed as a full one)."""
        return f"{self.dataset_tag}-{self.device}-{self.budget}-s{self.seed}-{method}" \
            + ("-quick" if self.mode == "quick" else "")

    @property
    def dataset_tag(self) -> str:
        """``fsdd`` for the nicolas fold (the name earlier sittings used), ``fsdd_<speaker>`` for the others."""
        fold = self.data["fold"]
        return self.data["name"] + (f"_{fold}" if fold and fold != "nicolas" else "")

    def base_args(self, name: str) -> list[str]:
        return ["--data", self.data["path"], *self.data["args"], "--device", self.device, "--max-latency-ms",
                str(self.budget), "--max-ram-kb", str(self.a.max_ram_kb), "--seed", str(self.seed), "--epochs",
                str(self.epochs), "--search-epochs", str(self.search_epochs), "--runs-dir", str(self.out / "runs"),
                "--name", name]

    def cell(self, method: str) -> dict[str, Any]:
        """The fields that identify a row (and which mode, hence which epochs, produced it)."""
        return {"method": method, "dataset": self.data["name"], "fold": self.data["fold"], "device": self.device,
                "budget_ms": self.budget, "seed": self.seed, "mode": self.mode, "epochs": self.epochs,
                "search_epochs": self.search_epochs,
                # latencies of rows measured in different sittings are comparable only on the same
                # machine (session 3's VM timed TC-ResNet8 at 0.030 ms, session 4's at 0.008 ms)
                "host": platform.node(), "cpu": common.cpu_model()}

    def row(self, method: str, m: dict[str, Any], search_s: float) -> dict[str, Any]:
        acc = m["accuracy"]
        return {**self.cell(method), "test_fp32": acc["test_fp32_torch"], "test_int8": acc["test_int8"],
                "latency_ms": m["latency_ms"]["budgeted"], "ram_kb": m["ram_bytes"]["int8_graph"] / 1024,
                "flash_kb": m["flash_bytes"]["int8_file"] / 1024, "search_s": search_s,
                "holds": m["all_budgets_hold"], "data_config": m["data_config"], "macs": m["macs"]}

    def edgenas(self, fixed: bool, space: str = "kws-dscnn") -> dict[str, Any]:
        tcn = space == "kws-tcn"
        method = "edgenas-fixed-data" if fixed else "edgenas-tcn" if tcn else "edgenas"
        variant = _variant_of(self.a)
        name = self.edgenas_run_name(method, variant)
        sets = [x for k, v in STANDARD.items() for x in ("--set", f"{k}={v}")] if fixed else []
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
            row[k] = "64/32" in value if k == "long_window" else bool(value)
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

    def pipeline(self, name: str, sets: list[str]) -> Any:
        from edgenas import config as C
        from edgenas.pipeline import Pipeline
        from edgenas.runs import RunDir

        flags = {"data": self.data["path"], "device": self.device, "max_latency_ms": self.budget,
                 "max_ram_kb": self.a.max_ram_kb, "seed": self.seed, "train.epochs": self.epochs,
                 **self.data["flags"]}
        cfg = C.resolve(sets=sets, flags=flags)
        path = self.out / "runs" / "kws" / name
        run = RunDir(path, resume=(path / "state.json").exists())
        return Pipeline(cfg, run), run

    def fixed_spec(self, method: str, spec: Any, sets: list[str]) -> dict[str, Any]:
        """A hand-designed spec (or ``spec(space)``) through the pipeline's own train → export →
        measure stages."""
        name = self.run_name(method)
        p, run = self.pipeline(name, sets)
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

        return self.fixed_spec(method, spec, sets)

    def tc_resnet8(self) -> dict[str, Any]:
        """Not a point of the kws-dscnn space: trained, exported and measured with the same pieces."""
        import torch

        from edgenas.devices.measure import measure_cached
        from edgenas.config import to_dict
        from edgenas.export.exporter import ExportJob, export_network
        from edgenas.train import train_model

        name = self.run_name("tc-resnet8")
        p, run = self.pipeline(name, ["space.n_mfcc=10", "space.windows=40/20"])
        with run:
            run.write_json("config.json", to_dict(p.cfg))
            data_cfg = p.space.data_configs()[-1]
            tr, te = p.features("train", data_cfg), p.features("test", data_cfg)
            torch.manual_seed(self.seed)
            model = _tc_resnet8(data_cfg.n_mfcc, len(p.dataset.classes))
            sib = self.trained_sibling(run, "tc-resnet8")
            if sib is not None:
                model.load_state_dict(torch.load(sib / "model.pt", weights_only=True))  # see reuse_training
                print(f"  tc-resnet8: weights trained by {sib.name}", file=sys.stderr, flush=True)
            else:
                train_model(model, *p.training_set(data_cfg, ("train", "val")), p.cfg.train, seed=self.seed)
                torch.save(model.state_dict(), run.file("model.pt.tmp"))
                run.file("model.pt.tmp").replace(run.file("model.pt"))
            model.eval()
            fmt = p.device.artifact_format
            rep = export_network(ExportJob(model=model, spec=None, out_dir=run.file("export"),
                                           calibration=tr.x.numpy(), test_x=te.x.numpy(), test_y=te.y.numpy(),
                                           formats=[fmt], frontend=False, seed=self.seed))
            r8 = rep["models"][f"{fmt}-int8"]
            if r8["status"] != "ok":
                raise SystemExit(f"tc-resnet8 {fmt} int8 export failed: {r8['failures']}")
            meas = measure_cached(p.device, p.store, run.file("export") / r8["file"], kind="model", fmt=f"{fmt}-int8",
                                  runs=p.cfg.measure.runs, warmup=p.cfg.measure.warmup, loads=p.loads)
            lat = meas.stat(p.latency_stat)
        ram = r8["verification"]["peak_activation_bytes"] / 1024
        return {**self.cell("tc-resnet8"), "test_fp32": rep["test_acc_fp32_torch"], "test_int8": r8["test_acc"],
                "latency_ms": lat, "ram_kb": ram, "flash_kb": r8["flash_bytes"] / 1024, "search_s": 0.0,
                "holds": lat <= self.budget and ram <= self.a.max_ram_kb,
                "data_config": data_cfg.to_dict(), "macs": float("nan")}

    def random_search(self, seconds: float) -> dict[str, Any]:
        import torch

        from edgenas import cost
        from edgenas.train import accuracy, train_model

        name = self.run_name("random")
        p, run = self.pipeline(name + "-probe", [])
        with run:
            p.run.mark("config", {}, 0.0)
            lat = p.latency_model()
            ram = cost.peak_ram(p.space)
            rng = random.Random(self.seed)
            t0 = time.perf_counter()
            tried: list[dict[str, Any]] = []
            while time.perf_counter() - t0 < seconds or not tried:
                for _ in range(10000):
                    spec = p.space.sample(rng)
                    if lat.cost(spec) <= self.budget and ram.cost(spec) <= self.a.max_ram_kb * 1024:
                        break
                va = p.features("val", spec.data)
                torch.manual_seed(self.seed)
                model = p.space.build(spec)
                train_model(model, *p.training_set(spec.data), p.cfg.train, seed=self.seed)
                tried.append({"spec": spec, "val": accuracy(model, va.x, va.y)})
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


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=None, choices=sorted(DATASETS))
    p.add_argument("--devices", nargs="+", default=None)
    p.add_argument("--budgets", nargs="+", type=float, default=None, help="latency budgets, ms")
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    p.add_argument("--folds", nargs="+", default=None, choices=FSDD_SPEAKERS,
                   help="FSDD test speakers (default: nicolas in quick mode, all four in full mode)")
    p.add_argument("--methods", nargs="+", default=["edgenas", "edgenas-tcn", "edgenas-fixed-data", "ds-cnn-s",
                                                    "ds-cnn-m", "tc-resnet8", "random"])
    p.add_argument("--max-ram-kb", type=float, default=64.0)
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
    cells = [(DATASETS[ds](a.data_root, fold), dev, budget, seed) for ds in ([] if a.report_only else datasets)
             for fold in (folds if ds == "fsdd" else [""]) for dev in devices for budget in budgets for seed in seeds]
    if a.remeasure:
        cells, grid = [], {(ds, dev, budget, seed) for ds in datasets for dev in devices for budget in budgets
                           for seed in seeds}
        mine = [r for r in done.values() if r.get("mode", "quick") == mode
                and (r["dataset"], r["device"], r["budget_ms"], r["seed"]) in grid
                and (r["dataset"] != "fsdd" or _fold(r) in folds)]
        remeasure(mine, a, a.out)
        tmp = results.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r, default=str) + "\n" for r in done.values()))
        tmp.replace(results)
        rows = mine
    for data, dev, budget, seed in cells:
        b = Bench(a, data, dev, budget, seed, a.out)
        search_s = None
        for method in a.methods:
            key = _key({**b.cell(method), **_variant_of(a)})
            if key in done:
                rows.append(done[key])
                if method == "edgenas":
                    search_s = done[key]["search_s"]
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {method} {b.dataset_tag} {dev} {budget} ms seed {seed}",
                  file=sys.stderr, flush=True)
            if method == "edgenas-tcn":
                row = b.edgenas(fixed=False, space="kws-tcn")
            elif method in ("edgenas", "edgenas-fixed-data"):
                row = b.edgenas(fixed=method != "edgenas")
                if method == "edgenas":
                    search_s = row["search_s"]
            elif method == "ds-cnn-s":
                row = b.ds_cnn(64, method)
            elif method == "ds-cnn-m":
                row = b.ds_cnn(172, method)
            elif method == "tc-resnet8":
                row = b.tc_resnet8()
            elif method == "random":
                row = b.random_search(search_s or 300.0)
            else:
                raise SystemExit(f"unknown method {method}")
            rows.append(row)
            done[_key(row)] = row
            with results.open("a") as f:
                f.write(json.dumps(row, default=str) + "\n")
    done = {**_read_rows(results), **done}  # with the rows a side-by-side grid appended meanwhile
    summary = summarize(list(done.values()))  # every cell measured so far, in either mode
    md = "## Search quality (KWS)\n\n" + common.table(
        ["mode", "dataset", "device", "budget ms", "method", "runs (seeds × folds)", "test fp32", "test int8", "latency ms", "budget holds",
         "RAM KiB", "flash KiB", "search s"], summary)
    pairs = paired(list(done.values()))
    if pairs:
        md += ("\n\n### Paired by seed (and fold): edgenas minus the other method, test int8, points\n\n"
               + common.table(["mode", "dataset", "device", "budget ms", "edgenas", "minus", "pairs",
                               "difference mean ± std", "95% interval", "edgenas ahead", "other holds budget"],
                              pairs))
    common.write(a.out, "search_quality", {"rows": list(done.values()), "paired": pairs}, md)
    plot([r for r in done.values() if r.get("mode", "quick") == mode], a.out)  # every row of this grid's mode, as the table


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
    ``holds`` follows the row's figure."""
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


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    """A row's cell; edgenas rows of different search variants are separate cells."""
    variant = tuple(_variant(r).values()) if r["method"].startswith("edgenas") else None
    return (r["method"], r["dataset"], _fold(r), r["device"], r["budget_ms"], r["seed"], r.get("mode", "quick"),
            variant)


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


# two-sided 95% quantiles of Student's t by degrees of freedom (n - 1 paired differences)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131}


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


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    plt = common.pyplot()
    if plt is None or not rows:
        return
    keys = sorted({(r["dataset"], r["device"]) for r in rows})
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4), squeeze=False)
    for ax, (ds, dev) in zip(axes[0], keys):
        for i, method in enumerate(sorted({_label(r) for r in rows})):
            pts = [(r["latency_ms"], r["test_int8"]) for r in rows
                   if r["dataset"] == ds and r["device"] == dev and _label(r) == method]
            if pts:
                ax.scatter(*zip(*pts), label=method, marker="o^sDv"[i // 10 % 5])  # colours repeat after ten
        for b in sorted({r["budget_ms"] for r in rows if r["dataset"] == ds and r["device"] == dev}):
            ax.axvline(b, color="grey", lw=0.8, ls="--")
        ax.set_title(f"{ds} on {dev}")
        ax.set_xlabel("measured int8 latency (ms)")
        ax.set_ylabel("test accuracy (int8)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "search_quality.png", dpi=120)


if __name__ == "__main__":
    main()
