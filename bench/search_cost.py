"""Search cost: wall-clock and peak memory (RSS) of the search per strategy and per number of
data options, on FSDD (speaker nicolas held out), measured around `edgenas search` processes.

Strategies: gumbel (relaxed Gumbel-softmax, one data option sampled per step), gumbel-hard
(single path), darts (softmax mixture of every op), each with the single-stage schedule (the
default), and gumbel with the data-first one (``search.data_first=true``). Data options: 1, 2,
3 and 6 (FSDD's full space: it is 8 kHz, so one sample rate), the strategy fixed to gumbel.
Search epochs are fixed (``--search-epochs``); the final training is one epoch and not counted
(the search stage's own seconds are reported).

    python bench/search_cost.py --quick       # 4 search epochs
    python bench/search_cost.py               # 12 search epochs (the default of a real search)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

DATA_OPTIONS = {  # number of data configurations → space settings (FSDD is 8 kHz: one sample rate)
    1: ["space.n_mfcc=10", "space.windows=40/20"],
    2: ["space.n_mfcc=10"],
    3: ["space.windows=40/20"],
    6: [],
}


def run(a, name: str, sets: list[str]) -> dict:  # type: ignore[no-untyped-def]
    exe = Path(sys.executable).with_name("edgenas")
    with tempfile.TemporaryDirectory() as td:
        timef = Path(td) / "time.txt"
        args = ["/usr/bin/time", "-f", "%M %e", "-o", str(timef), str(exe), "search", "--data",
                str(a.data_root / "fsdd"), "--test-speakers", "nicolas", "--search-epochs", str(a.epochs),
                "--epochs", "1", "--max-ram-kb", "64", "--runs-dir", td, "--name", name, "--json", "--quiet"]
        for s in sets:
            args += ["--set", s]
        res = subprocess.run(args, capture_output=True, text=True, env=os.environ)
        if res.returncode != 0:
            raise SystemExit(f"{name}: {res.stderr.strip().splitlines()[-1:]}")
        rss_kb, wall = timef.read_text().split()[-2:]
        m = json.loads(res.stdout)
    return {"search_s": m["search_seconds"], "process_wall_s": float(wall), "peak_rss_mb": int(rss_kb) / 1024}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=None)
    a = p.parse_args()
    a.epochs = a.epochs or (4 if a.quick else 12)
    common.use_bench_dirs(a.out)
    results, rows = [], []
    # (strategy, data options, search.data_first): every strategy on the full space, the
    # data-first schedule against the single-stage default, then fewer data options
    configs = [(st, 6, False) for st in ("gumbel", "gumbel-hard", "darts")] + [("gumbel", 6, True)] \
        + [("gumbel", n, False) for n in DATA_OPTIONS if n != 6]
    for strategy, n, data_first in configs:
        schedule = "data first" if data_first else "single stage"
        name = f"cost-{strategy}-data{n}" + ("-first" if data_first else "")
        sets = [f"search.strategy={strategy}", f"search.data_first={str(data_first).lower()}", *DATA_OPTIONS[n]]
        r = {"strategy": strategy, "data_options": n, "schedule": schedule, **run(a, name, sets)}
        results.append(r)
        rows.append([strategy, n, schedule, f"{r['search_s']:.0f}", f"{r['search_s'] / a.epochs:.1f}",
                     f"{r['peak_rss_mb']:.0f}"])
    md = (f"## Search cost (FSDD, {a.epochs} search epochs)\n\n"
          + common.table(["strategy", "data options", "schedule", "search s", "s / epoch", "peak RSS MB (whole process)"], rows))
    common.write(a.out, "search_cost", {"results": results, "search_epochs": a.epochs}, md)
    plt = common.pyplot()
    if plt is not None:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
        st = [r for r in results if r["data_options"] == 6]
        ax1.bar([r["strategy"] + ("\n(data first)" if r["schedule"] == "data first" else "") for r in st],
                [r["search_s"] for r in st])
        ax1.set_ylabel("search seconds")
        dn = sorted([r for r in results if r["strategy"] == "gumbel" and r["schedule"] == "single stage"],
                    key=lambda r: r["data_options"])
        ax2.plot([r["data_options"] for r in dn], [r["search_s"] for r in dn], marker="o", label="search s")
        ax2b = ax2.twinx()
        ax2b.plot([r["data_options"] for r in dn], [r["peak_rss_mb"] for r in dn], marker="s", color="C1")
        ax2.set_xlabel("data options")
        ax2.set_ylabel("search seconds")
        ax2b.set_ylabel("peak RSS MB")
        fig.tight_layout()
        fig.savefig(a.out / "search_cost.png", dpi=120)


if __name__ == "__main__":
    main()
