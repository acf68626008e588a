"""Latency repeatability: how far apart two measurements of the same file are, per statistic.

The latency predictor cannot be more accurate than the figure it predicts is repeatable. For
``--networks`` random specs of the KWS space, built in the device's format (as calibration builds
them), this measures every file twice (repetitions A and B, minutes apart), each repetition being
``--loads`` separate loads of ``--runs`` timed runs, and reports for each statistic the share of
networks whose A and B figures are within ±10% / ±5% of each other:

* ``median`` / ``p25`` / ``p10`` of the samples pooled over all loads (what calibration and the
  final measurement store, with ``--loads`` 3),
* ``median, one load`` (the first load only: what a single measurement gives),
* ``mean of load medians``.

    python bench/latency_repeatability.py --devices litert-cpu onnxruntime-cpu
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def _stats(loads: list[list[float]]) -> dict[str, float]:
    import numpy as np

    pooled = np.concatenate([np.asarray(s) for s in loads])
    medians = [float(np.median(s)) for s in loads]
    return {"median": float(np.median(pooled)), "p25": float(np.percentile(pooled, 25)),
            "p10": float(np.percentile(pooled, 10)), "median, one load": medians[0],
            "mean of load medians": statistics.mean(medians)}


def run_device(name: str, networks: int, loads: int, runs: int, seed: int) -> dict[str, Any]:
    from edgenas.devices.base import measure_many
    from edgenas.devices.registry import get_device
    from edgenas.export.micro import save_chain_model
    from edgenas.spaces import get_space

    dev = get_device(name)
    fmt = f"{dev.artifact_format}-int8"
    space = get_space("kws-dscnn", num_classes=12)
    rng = random.Random(seed)
    specs = [space.sample(rng) for _ in range(networks)]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgenas-repeat-") as td:
        paths = [save_chain_model(space.layers(s), fmt, Path(td) / f"m{i}.{dev.artifact_format}")
                 for i, s in enumerate(specs)]
        reps: dict[str, list[list[list[float]]]] = {}
        for rep in "AB":
            got: list[list[list[float]]] = [[] for _ in paths]
            for _ in range(loads):  # interleaved: every file once per pass, as calibration measures
                measure_many(dev, paths, runs=runs, warmup=10, threads=dev.threads,
                             on_result=lambda i, m, got=got: got[i].append(list(m.samples_ms)))
            reps[rep] = got
    a = [_stats(x) for x in reps["A"]]
    b = [_stats(x) for x in reps["B"]]
    out = {}
    for k in a[0]:
        ratio = [x[k] / y[k] for x, y in zip(a, b)]
        out[k] = {"within_10": statistics.mean(abs(r - 1) <= 0.10 for r in ratio),
                  "within_5": statistics.mean(abs(r - 1) <= 0.05 for r in ratio),
                  "mean_abs_diff": statistics.mean(abs(r - 1) for r in ratio)}
    load_spread = [max(statistics.median(s) for s in x) / min(statistics.median(s) for s in x)
                   for x in reps["A"] + reps["B"]]
    return {"device": name, "networks": networks, "loads": loads, "runs": runs, "seconds": time.perf_counter() - t0,
            "stats": out, "share_loads_differ_10": statistics.mean(r > 1.10 for r in load_spread),
            "median_load_spread": statistics.median(load_spread), "raw": reps}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--devices", nargs="+", default=["litert-cpu", "onnxruntime-cpu"])
    p.add_argument("--networks", type=int, default=None)
    p.add_argument("--loads", type=int, default=3)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    common.use_bench_dirs(a.out)
    networks = a.networks or (20 if a.quick else 60)
    results = []
    for d in a.devices:
        print(f"{d}: {networks} networks × 2 repetitions × {a.loads} loads × {a.runs} runs …", file=sys.stderr, flush=True)
        results.append(run_device(d, networks, a.loads, a.runs, a.seed))
    rows = []
    for r in results:
        for k, v in r["stats"].items():
            rows.append([r["device"], k, f"{100 * v['within_10']:.0f}%", f"{100 * v['within_5']:.0f}%",
                         f"{100 * v['mean_abs_diff']:.1f}%"])
    md = ("## Latency repeatability (two repetitions of the same files)\n\n"
          + common.table(["device", "statistic", "A/B within ±10%", "within ±5%", "mean |A/B − 1|"], rows)
          + "\n\n" + common.table(["device", "networks", "loads × runs", "loads of one file differing > 10%",
                                   "median max/min over loads", "seconds"],
                                  [[r["device"], r["networks"], f"{r['loads']} × {r['runs']}",
                                    f"{100 * r['share_loads_differ_10']:.0f}%", f"{r['median_load_spread']:.2f}",
                                    f"{r['seconds']:.0f}"] for r in results]))
    common.write(a.out, "latency_repeatability", {"results": results}, md)
    plt = common.pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        keys = list(results[0]["stats"])
        w = 0.8 / len(results)
        for j, r in enumerate(results):
            ax.bar([i + j * w for i in range(len(keys))], [100 * r["stats"][k]["within_10"] for k in keys], w,
                   label=r["device"])
        ax.set_xticks([i + w * (len(results) - 1) / 2 for i in range(len(keys))], keys, fontsize=7)
        ax.set_ylabel("networks with A/B within ±10% (%)")
        ax.axhline(90, color="k", ls="--", lw=0.8)
        ax.legend()
        fig.tight_layout()
        fig.savefig(a.out / "latency_repeatability.png", dpi=120)


if __name__ == "__main__":
    main()
