"""Shared plumbing of the benchmarks: arguments, output files (JSON, Markdown table, plot).

Every benchmark is one command that writes ``<out>/<name>.json``, ``<out>/<name>.md`` and
``<out>/<name>.png`` (default ``bench/results``), prints the Markdown table, and has a
``--quick`` mode. Benchmarks read data by path (``../shared/data`` by default) and use their own
measurement store and cache unless ``EDGENAS_STORE`` / ``EDGENAS_CACHE`` are set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
DEFAULT_OUT = ROOT / "bench" / "results"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="the ≤ 20-minute subset")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA, help="shared sample data folder")
    return p


def use_bench_dirs(out: Path) -> None:
    """A store and cache of the benchmarks' own unless the caller set them, under ``out`` (made here,
    so a new ``--out`` folder works)."""
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("EDGENAS_CACHE", str(out / "cache"))
    os.environ.setdefault("EDGENAS_STORE", str(out / "cache" / "bench.sqlite"))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), so figures from different machines are told apart."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    import torch

    import edgenas

    return {"edgenas": edgenas.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "machine": platform.machine(), "cpu": cpu_model(), "cpus": os.cpu_count(), "host": platform.node(),
            "date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def write(out: Path, name: str, data: dict[str, Any], markdown: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = {"environment": environment(), **data}
    (out / f"{name}.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    (out / f"{name}.md").write_text(markdown + "\n")
    print(markdown)


# two-sided 95% quantiles of Student's t by degrees of freedom (n - 1 paired differences)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131}


def paired_interval(d: Sequence[float]) -> tuple[float, float, float, float]:
    """(mean, std, low, high) of paired differences ``d``, the 95% t interval of the mean."""
    import statistics

    mean, sd = statistics.mean(d), statistics.stdev(d) if len(d) > 1 else float("nan")
    half = T95.get(len(d) - 1, 1.96) * sd / len(d) ** 0.5
    return mean, sd, mean - half, mean + half


def train_export_measure(p: Any, run: Any, model: Any, data: Any, seed: int, what: str,
                         trained: bool = False) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """A network outside every space (a hand-designed baseline) through the pipeline's pieces:
    trained with the run's recipe on train + val (unless ``trained``), exported in the device's
    format and verified, its int8 file measured on the device. Returns (export report, the int8
    file's record, the measurement)."""
    import torch

    from edgenas.devices.measure import measure_cached
    from edgenas.export.exporter import ExportJob, export_network
    from edgenas.train import train_model

    te = p.features("test", data)
    if not trained:
        train_model(model, *p.training_set(data, ("train", "val")), p.cfg.train, p.task, seed=seed)
        torch.save(model.state_dict(), run.file("model.pt.tmp"))
        run.file("model.pt.tmp").replace(run.file("model.pt"))
    model.eval()
    fmt = p.device.artifact_format
    rep = export_network(ExportJob(model=model, spec=None, out_dir=run.file("export"), calibration=p.calibration(data),
                                   test_x=te.x.numpy(), test_y=te.y.numpy(), test_groups=te.groups, formats=[fmt],
                                   frontend=False, seed=seed, task=p.task))
    r8 = rep["models"][f"{fmt}-int8"]
    if r8["status"] != "ok":
        raise SystemExit(f"{what} {fmt} int8 export failed: {r8['failures']}")
    meas = measure_cached(p.device, p.store, run.file("export") / r8["file"], kind="model", fmt=f"{fmt}-int8",
                          runs=p.cfg.measure.runs, warmup=p.cfg.measure.warmup, loads=p.loads)
    return rep, r8, meas


def run_fixed_spec(p: Any, run: Any, spec: Any, search_s: float) -> dict[str, Any]:
    """``spec`` through pipeline ``p``'s own train → export → measure → report stages in ``run``
    (open): the earlier stages are marked done with ``spec`` as the derived network. Returns the
    run's metrics."""
    from edgenas import config as C

    run.write_json("config.json", C.to_dict(p.cfg))
    for stage, res in (("config", {}), ("data", p._stage_data()), ("budgets", {"constraints": []}),
                       ("search", {"seconds": search_s}),
                       ("derive", {"spec": spec.to_dict(), "hash": spec.hash(), "derived_hash": spec.hash(),
                                   "repairs": [], "estimates": p.estimates(spec, latency=False)})):
        if not run.done(stage):
            run.mark(stage, res, 0.0)
    run.write_json("search.json", {"spec": spec.to_dict(), "probs": {}, "history": [], "multipliers": {},
                                   "seconds": search_s})
    run.write_text("arch.json", spec.to_json() + "\n")
    return p.run_all()


def edgenas_search(args: list[str], who: str) -> dict[str, Any]:
    """``edgenas search ARGS --json --quiet`` as a user runs it (this venv's CLI); its metrics.
    A failed run stops the benchmark with the CLI's last error line, named by ``who``."""
    import subprocess

    exe = str(Path(sys.executable).with_name("edgenas"))
    res = subprocess.run([exe, "search", *args, "--json", "--quiet"], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{who}: edgenas search failed: {(res.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(res.stdout)


def pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'edgenas[bench]'); no plot written", file=sys.stderr)
        return None
    return plt
