"""The ``edgenas`` command line. Only this module prints and draws progress."""

from __future__ import annotations

import contextlib
import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from edgenas.devices.base import STATS
from edgenas.errors import EdgenasError

SEARCH_EXAMPLES = """\
examples:
  edgenas search --task kws --device onnxruntime-cpu --max-latency-ms 0.3 --max-ram-kb 256
      search the generated demo dataset (synthetic espeak-ng keywords); budgets end to end
  edgenas search --device rpi4 --max-latency-ms 5 --max-ram-kb 64 --budget-scope model
      an MCU-sized RAM budget for the classifier alone (a float front end holds ~100-400 KiB)
  edgenas search --data ../shared/data/fsdd --test-speakers nicolas --max-latency-ms 0.1
      Free Spoken Digit Dataset, speaker 'nicolas' held out for the test split
  edgenas search --data ~/speech_commands_v0.02 --name sc12 --search-epochs 20 --epochs 40
  edgenas search --name sc12 --resume                     continue an interrupted run
  edgenas search --data DIR --set search.strategy=darts --set space.widths=16,32,64
  edgenas search --space kws-tcn --data ../shared/data/fsdd --test-speakers nicolas --device litert-cpu
      temporal-convolution space (TC-ResNet-like); e.g. --set space.block_ops=conv9,dw9,skip
  edgenas search --task image --data ../shared/data/cifar10_images --device litert-cpu
      --max-latency-ms 0.08 --max-ram-kb 64 --max-flash-kb 256
      image folders (train/ val/ [test/]); input resolution and colour searched with the network
  edgenas search --task image --data cifar10 --set 'space.resolutions=[24,32]'
      the CIFAR-10 archive (downloaded once), two resolutions
  edgenas search --task sr --scale 2 --data ../shared/data/sisr --device litert-cpu --frame 320x240
      --max-latency-ms 60 --max-ram-kb 512
      super-resolution (train BSD68, val Set14, test Set5): colour (Y/RGB) and tile searched with a
      DLSR-style cell + network; latency per frame as tiled, RAM per tile
"""


class ProgressPrinter:
    """Turns library events into tqdm bars and short status lines on stderr."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bars: dict[int, Any] = {}

    def __call__(self, event: str, **f: Any) -> None:
        if self.quiet:
            return
        if event == "progress.start":
            from tqdm import tqdm

            self.bars[f["id"]] = tqdm(total=f["total"], desc=f["desc"], file=sys.stderr, leave=False,
                                      dynamic_ncols=True, mininterval=0.5)
        elif event == "progress.update":
            bar = self.bars.get(f["id"])
            if bar is not None:
                bar.update(f["n"])
                if f.get("postfix"):
                    bar.set_postfix(f["postfix"], refresh=False)
        elif event == "progress.end":
            bar = self.bars.pop(f["id"], None)
            if bar is not None:
                bar.close()
        elif event == "stage.start":
            self._line(f"[{time.strftime('%H:%M:%S')}] {f['stage']} …")
        elif event == "stage.end":
            self._line(f"[{time.strftime('%H:%M:%S')}] {f['stage']} done in {f['seconds']:.1f} s")
        elif event == "stage.skip":
            self._line(f"{f['stage']}: already done, skipped")
        elif event == "calibration.round":
            self._line(f"  adaptive round: +{f['added']} networks where the k-fold error is largest "
                       f"({', '.join(f['worst_cells'])})")
        elif event == "latency.model":
            self._line(f"latency model: {'calibrated predictor ' + f['path'] if f['kind'] == 'learned' else 'lookup table'}"
                       + (f" ({f['reason']})" if f.get("reason") else "")
                       + (f", safety margin {100 * f['margin']:.1f}%" if f.get("margin") else ""))
        elif event == "frontend_table.end":
            ms = sorted(f["latency_ms"].values())
            self._line(f"front ends on {f['device']} ({f['fmt']}): {f['entries']} data configurations, "
                       f"{f['measured']} measured now, {ms[0]:.4f}–{ms[-1]:.4f} ms")
        elif event == "data.synthetic":
            self._line("NOTE: " + f["message"])
        elif event == "search.epoch":
            parts = [f"epoch {f['epoch']} ({f['phase']})", f"train acc {f['train_acc']:.3f}"]
            if f.get("val_acc") is not None:
                parts.append(f"val acc {f['val_acc']:.3f}")
            parts.append(f"data {f['data']}")
            for k, v in f.items():
                if k.startswith("derived_"):
                    parts.append(f"{k[8:]} {v:.4g}")
            self._line("  search " + ", ".join(parts))

    def _line(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _search_parser(sub: Any) -> None:
    p = sub.add_parser("search", help="search a network and its data configuration for a device",
                       description="Joint data-configuration + architecture search under device budgets, then final "
                                   "training, ONNX fp32/int8 export and measurement on the device.",
                       epilog=SEARCH_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=_task_names(), help="task (default: kws; see `edgenas tasks`)")
    p.add_argument("--space", help="search space (default: the task's; kws: kws-dscnn, a 2-D depthwise-separable "
                                   "CNN, or kws-tcn, temporal convolutions over MFCC channels); its options are "
                                   "space.* keys")
    p.add_argument("--device", help="device profile name (see `edgenas devices`; default onnxruntime-cpu)")
    p.add_argument("--data", help="dataset folder: kws: FSDD, Speech Commands or a CSV manifest (default: the "
                                  "generated synthetic demo dataset); image: train/ val/ [test/] class folders, or "
                                  "'cifar10' to download it")
    p.add_argument("--layout", help="dataset layout: auto (default), fsdd, speech_commands, csv (a CSV manifest), synthetic")
    p.add_argument("--test-speakers", type=_csv, help="comma-separated speakers held out as the test split (FSDD)")
    p.add_argument("--val-speakers", type=_csv, help="comma-separated speakers used as the validation split")
    p.add_argument("--scale", type=int, help="sr: the upscaling factor, 2, 3 or 4 (default 2; space.scale)")
    p.add_argument("--frame", help="sr: the LR frame the budgets are for, WxH pixels (default 320x240; space.frame): "
                                   "latency per frame as tiled, peak RAM of one tile")
    p.add_argument("--max-latency-ms", type=float, help="latency budget on the device, ms (front end + int8 model; see --budget-scope)")
    p.add_argument("--max-ram-kb", type=float, help="peak RAM budget, KiB (front end's float buffers + the int8 model's activations)")
    p.add_argument("--max-flash-kb", type=float, help="flash budget, KiB (front-end file + int8 model file)")
    p.add_argument("--budget-scope", choices=["end-to-end", "model"],
                   help="what the budgets apply to (default end-to-end: the task's front end (MFCC, image resize) + the int8 classifier, "
                        "as the bundle runs them on the device; model: the classifier alone)")
    p.add_argument("--latency-stat", choices=["auto", *STATS],
                   help="latency figure the budget applies to (default auto: the device profile's [measure] "
                        "latency_stat; median for boards, p10 for the shared-host CPU profiles)")
    p.add_argument("--epochs", type=int, help="final training epochs")
    p.add_argument("--search-epochs", type=int, help="search epochs")
    p.add_argument("--strategy", help="search strategy: gumbel (relaxed Gumbel-softmax; the default but where the task sets its own, see `edgenas tasks`), gumbel-hard (single path) or darts")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--name", help="run name (default: a timestamp)")
    p.add_argument("--runs-dir", default="runs", help="where run directories live (default ./runs)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run (with --name)")
    p.add_argument("--config", type=Path, help="TOML or JSON config file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. search.arch_lr=0.05 (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object (run dir and figures) on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _flags(a: argparse.Namespace) -> dict[str, Any]:
    flags: dict[str, Any] = {}
    pairs = {"task": "task", "space": "space_name", "device": "device", "data": "data", "layout": "layout",
             "test_speakers": "test_speakers", "val_speakers": "val_speakers", "max_latency_ms": "max_latency_ms",
             "max_ram_kb": "max_ram_kb", "max_flash_kb": "max_flash_kb", "epochs": "train.epochs",
             "search_epochs": "search.epochs", "strategy": "search.strategy", "seed": "seed", "latency_stat": "measure.latency_stat",
             "budget_scope": "budget_scope", "scale": "space.scale", "frame": "space.frame"}
    for attr, key in pairs.items():
        v = getattr(a, attr)
        if v is not None:
            flags[key] = v
    if "data" in flags:
        flags["data"] = str(Path(flags["data"]).expanduser().resolve())
    for k in ("max_latency_ms", "max_ram_kb", "max_flash_kb"):
        if k in flags and flags[k] <= 0:
            raise EdgenasError(f"--{k.replace('_', '-')} must be positive, got {flags[k]}")
    return flags


def cmd_search(a: argparse.Namespace) -> int:
    from edgenas import config as C
    from edgenas.pipeline import Pipeline
    from edgenas.runs import RunDir

    flags = _flags(a)
    run_root = Path(a.runs_dir)
    if a.resume:
        if not a.name:
            raise EdgenasError("--resume needs --name of the run to continue")
        path = _run_to_resume(run_root, flags.get("task"), a.name)
        if not (path / "config.json").exists():
            raise EdgenasError(f"cannot resume: no run at {path}")
        saved = json.loads((path / "config.json").read_text())
        cfg = C.from_dict(saved)
        if flags or a.set or a.config:
            raise EdgenasError("--resume continues a run with its saved config; drop the other options")
    else:
        cfg = C.resolve(a.config, a.set, flags)
        name = a.name or time.strftime("%Y%m%d-%H%M%S")
        path = run_root / cfg.task / name
    from edgenas.strategies import STRATEGIES

    STRATEGIES.get(cfg.search.strategy)  # unknown names fail before any work
    if cfg.data and not Path(cfg.data).exists():
        raise EdgenasError(f"dataset path {cfg.data} does not exist")
    from edgenas.devices.calibrate import predictor_root

    if cfg.measure.predictors and not predictor_root(cfg.measure.predictors).is_dir():
        raise EdgenasError(f"measure.predictors: {cfg.measure.predictors} is not a directory (give a predictors "
                           "directory written by `edgenas calibrate`, e.g. <cache>/predictors)")
    printer = ProgressPrinter(a.quiet)
    with RunDir(path, resume=a.resume) as run:
        if not a.quiet:
            printer._line(f"run directory: {run.path}")
        metrics = Pipeline(cfg, run, sink=printer).run_all()
    if a.json:
        print(json.dumps(metrics, default=str))
    else:
        _print_summary(metrics)
    return 0


def _print_summary(m: dict[str, Any]) -> None:
    from edgenas.report import confirm_passes

    if m["dataset"]["synthetic"]:
        print("NOTE: trained and tested on the SYNTHETIC demo dataset (espeak-ng voices), not real speech.")
    print(f"run: {m['run_dir']}")
    print(f"data config: {m['data_description']}")
    acc, metric = m["accuracy"], m.get("metric") or {"name": "accuracy", "unit": ""}
    unit = f" {metric['unit']}" if metric["unit"] else ""
    fmt = ".2f" if unit else ".4f"
    print(f"test {metric['name']}: fp32 {acc['test_fp32_torch']:{fmt}}{unit}, int8 on the device's format "
          f"{acc['test_int8']:{fmt}}{unit}"
          + "".join(f", {k[5:].replace('_', ' ')} {v:{fmt}}{unit}" for k, v in acc.items()
                    if k.startswith("test_") and k[5:] not in ("fp32_torch", "int8") and v is not None))
    lat = m["latency_ms"]
    calls = m.get("calls_per_input", 1)
    per = f" per call, {calls} calls per input" if calls > 1 else ""
    fe = f"front end {lat['frontend_median']:.4f} ms, " if lat.get("frontend_median") is not None else ""
    print(f"latency on {m['device']} (median of the samples{per}): {fe}int8 model {lat['int8_median']:.4f} ms, "
          f"fp32 model {lat['fp32_median']:.4f} ms")
    for name, b in m["budgets"].items():
        unit = "ms" if name == "latency" else "KiB"
        f = 1 if name == "latency" else 1 / 1024
        what = f"{lat['statistic']}, " if name == "latency" else ""
        parts = ""
        if b.get("scope") == "end-to-end":
            parts = f" = front end {b['frontend']['measured'] * f:.4g} + model {b['model']['measured'] * f:.4g} {unit}"
        passes = confirm_passes(lat) if name == "latency" else ""
        print(f"budget {name} ({what}{b.get('scope', 'model')}): measured {b['measured'] * f:.4g} {unit}{parts} vs "
              f"{b['limit'] * f:.4g} {unit}: {'holds' if b['holds'] else 'VIOLATED'}"
              + (f" (model: lowest of {len(lat['passes'])} passes: {passes})" if passes else ""))
    if m.get("bundle"):
        print(f"bundle: {m['bundle']}")
    print(f"report: {m['run_dir']}/report.md")


def _task_names() -> list[str]:
    from edgenas.tasks import TASKS

    return TASKS.names()


def _run_to_resume(run_root: Path, task: str | None, name: str) -> Path:
    """``runs/<task>/<name>``; without ``--task``, the one task folder that holds a run ``name``."""
    if task:
        return run_root / task / name
    found = sorted(p.parent for p in run_root.glob(f"*/{name}/config.json"))
    if len(found) > 1:
        raise EdgenasError(f"runs named {name} exist for several tasks ({', '.join(p.parent.name for p in found)}); "
                           "add --task")
    return found[0] if found else run_root / "kws" / name


def cmd_tasks(a: argparse.Namespace) -> int:
    from edgenas.spaces import SPACES
    from edgenas.tasks import TASKS, get_task

    rows = []
    for name in TASKS.names():
        t = get_task(name)
        spaces = [s for s in SPACES.names() if SPACES.get(s).task == name]
        rows.append({"name": name, "summary": t.summary, "input": t.input_kind, "default_space": t.default_space,
                     "spaces": spaces, "metric": t.metric.name, "higher_is_better": t.metric.higher_is_better,
                     "int8_fidelity": t.metric.fidelity, "config_defaults": dict(t.config_defaults)})
    if a.json:
        print(json.dumps(rows))
        return 0
    for r in rows:
        print(f"{r['name']:<8} {r['summary']}")
        print(f"{'':<8} input: {r['input']}; spaces: {', '.join(r['spaces'])} (default {r['default_space']}); "
              f"metric: {r['metric']}")
        if r["config_defaults"]:
            sets = " ".join(f"{k}={json.dumps(v)}" for k, v in r["config_defaults"].items())
            print(f"{'':<8} defaults of this task (override with --set): {sets}")
    return 0


def cmd_devices(a: argparse.Namespace) -> int:
    from edgenas.devices.profiles import list_profiles
    from edgenas.devices.registry import check_device

    if a.action == "check":
        if not a.name:
            raise EdgenasError("usage: edgenas devices check NAME (a profile name or a .toml file)")
        row = check_device(a.name)
        if a.json:
            print(json.dumps(row, default=str))
        elif row["ok"]:
            print(f"{row['name']}: ok — {row['runtime_version']}, {row['threads']} thread(s), {row['artifact_format']}")
            for k, v in (row["info"] or {}).items():
                print(f"  {k}: {v}")
        if not row["ok"]:
            raise EdgenasError(f"device {row['name']} is not usable: {row['error']}")
        return 0
    rows = [p.to_dict() for p in list_profiles()]
    if a.json:
        print(json.dumps(rows, default=str))
    else:
        for r in rows:
            where = r["ssh"]["host"] if r.get("ssh") else "local"
            lat = f"{r['measure']['latency_stat']}/{r['measure']['loads']} loads"
            print(f"{r['name']:<18} {r['adapter']:<16} {r['runtime']:<12} threads={r['threads']:<3} {where:<14} "
                  f"{lat:<15} {'built-in' if r['builtin'] else r['source']}")
    return 0


CALIBRATE_EXAMPLES = """\
examples:
  edgenas calibrate --device onnxruntime-cpu --task kws --samples 500
  edgenas calibrate --device litert-cpu --samples 500
  edgenas calibrate --device rpi4 --samples 400          an SSH board (see `edgenas devices`)
  edgenas calibrate --device ./myboard.toml --samples 30  a profile file
Rerunning continues an interrupted calibration: stored measurements are reused.
"""

def _calibrate_parser(sub: Any) -> None:
    p = sub.add_parser("calibrate", help="measure sampled networks on a device and fit its latency predictor",
                       description="Measure a device: the per-layer lookup table and whole networks sampled over the "
                                   "search space (stratified by MACs and data configuration, then adaptive), fit the "
                                   "learned latency predictor that `edgenas search --device D` then uses, and report "
                                   "its hold-out error next to the lookup table and MACs-proportional.",
                       epilog=CALIBRATE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", required=True, help="device profile name or .toml file")
    p.add_argument("--task", choices=_task_names(), default="kws", help="task (default: kws; see `edgenas tasks`)")
    p.add_argument("--space", help="search space (default: the task's space)")
    p.add_argument("--samples", type=int, default=500, help="networks to measure (default 500)")
    p.add_argument("--format", dest="fmt", help="artifact format measured (default: the device's int8 format, "
                                                 "e.g. onnx-int8 or tflite-int8)")
    p.add_argument("--threads", type=int, help="threads (default: the profile's)")
    p.add_argument("--runs", type=int, help="timed runs per network and load (default 300 / the profile's loads)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--stat", choices=STATS,
                   help="latency statistic the predictor predicts (default: the device profile's [measure] "
                        "latency_stat; a search budgeting the same statistic uses it)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="space options as in `edgenas search`, e.g. space.widths=16,32 (calibrate the space you search)")
    p.add_argument("--json", action="store_true", help="print the calibration report as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def cmd_calibrate(a: argparse.Namespace) -> int:
    from edgenas.devices.calibrate import CalibrationSettings, calibrate
    from edgenas.devices.profiles import measure_defaults
    from edgenas.devices.registry import get_device
    from edgenas.spaces import get_space
    from edgenas.store import Store

    if a.samples < 10:
        raise EdgenasError(f"--samples must be at least 10, got {a.samples}")
    if a.runs is not None and a.runs < 1:
        raise EdgenasError(f"--runs must be >= 1, got {a.runs}")
    from edgenas import config as C

    bad = [kv for kv in a.set if not kv.startswith("space.")]
    if bad:
        raise EdgenasError(f"calibrate takes only space.* settings, got {bad[0]!r}")
    cfg = C.resolve(sets=a.set, flags={"task": a.task, **({"space_name": a.space} if a.space else {})})
    device = get_device(a.device, **({"threads": a.threads} if a.threads else {}))
    from edgenas.tasks import get_task

    space = get_space(cfg.space_name, config=cfg.space, **get_task(cfg.task).calibration_options)
    fmt = a.fmt or f"{device.artifact_format}-int8"
    printer = ProgressPrinter(a.quiet)
    md = measure_defaults(device)
    settings = CalibrationSettings(samples=a.samples, runs=a.runs or max(20, 300 // md.loads), seed=a.seed,
                                   statistic=a.stat or md.latency_stat, passes=md.loads)
    report = calibrate(space, device, Store(), fmt, settings, sink=printer)
    if a.json:
        print(json.dumps({k: v for k, v in report.items() if k != "holdout_points"}, default=str))
        return 0
    from edgenas.devices.calibrate import render_report

    print(render_report(report).strip())
    return 0


def _open_run(path_text: str) -> Any:
    """A finished run directory given as a path (runs/kws/NAME) → (config, RunDir)."""
    from edgenas import config as C
    from edgenas.runs import RunDir

    path = Path(path_text)
    if not (path / "config.json").is_file() or not (path / "state.json").is_file():
        raise EdgenasError(f"{path} is not an edgenas run directory (no config.json/state.json)")
    try:
        cfg = C.from_dict(json.loads((path / "config.json").read_text()))
    except (json.JSONDecodeError, OSError) as e:
        raise EdgenasError(f"cannot read {path / 'config.json'}: {e}") from None
    return cfg, RunDir(path, resume=True)


def cmd_export(a: argparse.Namespace) -> int:
    from edgenas.export.exporter import select
    from edgenas.pipeline import Pipeline
    from edgenas.spec import ArchSpec

    fmts, quants = select(a.format, a.quant)
    cfg, run = _open_run(a.run)
    printer = ProgressPrinter(a.quiet)
    with run:
        if not run.file("arch.json").is_file():
            raise EdgenasError(f"run {run.path} has no derived architecture (arch.json) yet")
        spec = ArchSpec.from_dict(json.loads(run.file("arch.json").read_text()))
        report = Pipeline(cfg, run, sink=printer).export(spec, fmts, quants)
    if a.json:
        print(json.dumps(report, default=float))
        return 0 if not report["failed"] else 1
    for key, r in report["models"].items():
        if r["status"] == "ok":
            extra = f", test acc {r['test_acc']:.4f}, agreement with fp32 {r['argmax_agreement']:.4f}"
            if r["format"] == "tflite":
                extra += f", {r['tflm']}"
            print(f"{run.path / 'export' / r['file']}: ok{extra}")
        else:
            print(f"{run.path / 'export' / r['file']}: FAILED verification: {'; '.join(r['failures'])}")
    for fmt, r in (report["frontend"] or {}).items():
        if isinstance(r, dict) and r.get("status") == "ok":
            raw = f", raw input → int8 model {r['raw_input_int8_acc']:.4f}" if "raw_input_int8_acc" in r else ""
            print(f"{run.path / 'export' / r['file']}: ok, max abs diff vs training features "
                  f"{r['max_abs_diff_vs_training_features']:.1e}{raw}")
    if report.get("bundle"):
        print(f"bundle: {report['bundle']['dir']} ({report['bundle']['tarball']})")
    print(f"report: {run.path / 'export' / 'report.md'}")
    if report["failed"]:
        raise EdgenasError(f"{len(report['failed'])} export(s) failed verification: {', '.join(report['failed'])}")
    return 0


def cmd_deploy(a: argparse.Namespace) -> int:
    from edgenas.devices.deploy import deploy_bundle

    run = Path(a.run)
    bundle = run / "bundle" if (run / "bundle").is_dir() else run
    if not (bundle / "bundle.json").is_file():
        raise EdgenasError(f"no deployment bundle in {run}; run `edgenas export {run} --format all` first")
    if a.wav and not Path(a.wav).is_file():
        raise EdgenasError(f"wav file not found: {a.wav}")
    printer = ProgressPrinter(a.quiet)
    res = deploy_bundle(a.device, bundle, wav=Path(a.wav) if a.wav else None, bench_runs=a.bench_runs, sink=printer)
    if a.json:
        print(json.dumps(res, default=str))
        return 0
    rt = res.get("runtime") or {}
    runtime = rt.get("model", rt) if isinstance(rt, dict) else rt
    print(f"{res['device']}: {res['label']} (score {res['score']:.3f}) on {res['clip_source']} "
          f"[{runtime}; bundle in {res['remote_dir']}]")
    lat = res.get("end_to_end_ms")
    if lat:
        parts = (f": front end {lat['frontend_median']:.3f} ms + model {lat['model_median']:.3f} ms (medians)"
                 if "frontend_median" in lat else "")
        print(f"latency on {res['device']} over {lat['runs']} runs{parts}; total (front end + model) median "
              f"{lat['median']:.3f} ms, p90 {lat['p90']:.3f} ms")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from edgenas import __version__

    parser = argparse.ArgumentParser(
        prog="edgenas", description="Search a small network and its input data configuration for an edge device, "
                                    "under measured latency and memory budgets, and ship it as an int8 model.",
        epilog="Run `edgenas COMMAND --help` for a command's options and examples.")
    parser.add_argument("--version", action="version", version=f"edgenas {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _search_parser(sub)
    _calibrate_parser(sub)
    e = sub.add_parser("export", help="export a trained run: ONNX / TFLite, fp32 / int8, verified, plus the bundle",
                       description="Export a finished run's model in the requested formats, verify every file "
                                   "(parity, integer-only, TRANSPOSE-free, TFLM ops, accuracy), export the audio front "
                                   "end, and build the deployment bundle (bundle/ and bundle.tar.gz).",
                       epilog="examples:\n  edgenas export runs/kws/myrun --format tflite --quant int8\n"
                              "  edgenas export runs/kws/myrun --format all",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("run", help="run directory, e.g. runs/kws/NAME")
    e.add_argument("--format", default="all", help="onnx, tflite or all (default all)")
    e.add_argument("--quant", default="all", help="int8, fp32 or all (default all)")
    e.add_argument("--json", action="store_true", help="print the export report as JSON")
    e.add_argument("--quiet", action="store_true", help="no progress output")
    dp = sub.add_parser("deploy", help="copy a run's bundle to an SSH board, run it on a clip and time it",
                        description="Copy the run's deployment bundle to an SSH board, check the board has a runtime, "
                                    "run infer.py on a clip (the bundle's sample or --wav) with --bench, and print the "
                                    "prediction and the end-to-end latency (front end + model).",
                        epilog="examples:\n  edgenas deploy runs/kws/myrun --device rpi4\n"
                               "  edgenas deploy runs/kws/myrun --device ./board.toml --input yes.wav\n"
                               "  edgenas deploy runs/image/myrun --device rpi4 --input cat.jpg",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    dp.add_argument("run", help="run directory (with bundle/) or a bundle directory")
    dp.add_argument("--device", required=True, help="SSH board profile name or .toml file")
    dp.add_argument("--input", "--wav", dest="wav", metavar="FILE",
                    help="WAV clip, image or time-series case (.ts line, CSV row) to classify (default: the bundle's sample)")
    dp.add_argument("--bench-runs", type=int, default=50, help="timed end-to-end runs (default 50)")
    dp.add_argument("--json", action="store_true", help="machine-readable output")
    dp.add_argument("--quiet", action="store_true", help="no progress output")
    t = sub.add_parser("tasks", help="list the tasks (kinds of data) edgenas searches for",
                       description="The registered tasks: what each reads, its data configuration's choice points, "
                                   "its search spaces and its metric.")
    t.add_argument("--json", action="store_true", help="machine-readable output")
    d = sub.add_parser("devices", help="list device profiles or check one",
                       description="`edgenas devices [list]` lists the device profiles (built-in and user TOML files); "
                                   "`edgenas devices check NAME` connects to the device and reports its runtime.")
    d.add_argument("action", nargs="?", default="list", choices=["list", "check"])
    d.add_argument("name", nargs="?", help="device profile name or .toml path (for check)")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.WARNING, format="%(name)s: %(message)s")
    if a.command is None:
        parser.print_help()
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Training and device measurement share this process: OpenMP threads that spin after each
    # torch op would steal the cores a latency measurement runs on. Must be set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        return {"search": cmd_search, "calibrate": cmd_calibrate, "export": cmd_export, "deploy": cmd_deploy,
                "devices": cmd_devices, "tasks": cmd_tasks}[a.command](a)
    except EdgenasError as e:
        print(f"edgenas: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("edgenas: interrupted; continue with --resume --name <run>", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `edgenas tasks | head`: the reader left; say nothing more
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")
        return 141


if __name__ == "__main__":
    sys.exit(main())
