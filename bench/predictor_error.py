"""Latency predictor error against the number of calibration samples, per device.

For each device and each sample count N, ``edgenas calibrate`` (the library call) runs with N
samples (measurements already in the store are reused) and its predictors are scored on one common
hold-out: the 20% held out by the largest calibration, minus any network a smaller one trained on.
Rows: MACs-proportional, lookup table alone, lookup table + fitted line, learned predictor.

    python bench/predictor_error.py                  # onnxruntime-cpu, litert-cpu; N = 50 100 200 500
    python bench/predictor_error.py --quick          # litert-cpu; N = 50 100 200
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--devices", nargs="+", default=None)
    p.add_argument("--samples", nargs="+", type=int, default=None)
    p.add_argument("--stats", nargs="+", default=["median", "p10"], help="latency statistics to predict")
    a = p.parse_args()
    common.use_bench_dirs(a.out)
    import numpy as np

    from edgenas.devices.calibrate import Calibration, CalibrationSettings
    from edgenas.devices.predictor import LatencyPredictor, errors
    from edgenas.devices.registry import get_device
    from edgenas.spaces import get_space
    from edgenas.store import Store

    devices = a.devices or (["litert-cpu"] if a.quick else ["onnxruntime-cpu", "litert-cpu"])
    counts = sorted(a.samples or ([50, 100, 200] if a.quick else [50, 100, 200, 500]))
    space = get_space("kws-dscnn", num_classes=12)
    store = Store()
    rows, results = [], []
    for name, stat in [(d, s) for d in devices for s in a.stats]:
        dev = get_device(name)
        fmt = f"{dev.artifact_format}-int8"
        runs = {}
        for n in sorted(counts, reverse=True):
            cal = Calibration(space, dev, store, fmt, CalibrationSettings(samples=n, statistic=stat),
                              root=a.out / "predictors" / str(n))
            captured = {}

            def finish(train, holdout, rounds, seconds, cal=cal, captured=captured):  # type: ignore[no-untyped-def]
                captured.update(train=train, holdout=holdout, seconds=seconds)
                return {}

            cal._finish = finish  # score on the common hold-out below instead of the run's own
            cal.run()
            runs[n] = (cal, captured)
        big = max(counts)
        common_hold = runs[big][1]["holdout"]
        for n in counts:
            cal, cap = runs[n]
            trained = {s.spec.hash() for s in cap["train"]}
            hold = [s for s in common_hold if s.spec.hash() not in trained]
            x_tr, y_tr = cal._xy(cap["train"])
            x_ho, y_ho = cal._xy(hold)
            model = LatencyPredictor.fit(cal.encoder, x_tr, y_tr, folds=5)
            t_tr, t_ho = x_tr[:, 0], x_ho[:, 0]
            m_tr = np.array([s.macs for s in cap["train"]])
            m_ho = np.array([s.macs for s in hold])
            b, a0 = np.polyfit(t_tr, y_tr, 1)
            k = float(np.exp(np.mean(np.log(y_tr) - np.log(m_tr))))
            for label, pred in (("MACs-proportional", k * m_ho), ("lookup table", t_ho),
                                ("lookup table + line", a0 + b * t_ho), ("learned predictor", model.predict_ms(x_ho))):
                e = errors(pred, y_ho)
                results.append({"device": name, "statistic": stat, "samples": n, "train": len(y_tr),
                                "holdout": len(y_ho), "model": label, **e})
                rows.append([name, stat, n, len(y_tr), len(y_ho), label, f"{100 * e['mape']:.1f}%",
                             f"{100 * e['within_10pct']:.0f}%", f"{100 * e['within_5pct']:.0f}%"])
    md = ("## Latency predictor error vs calibration samples (common hold-out)\n\n"
          + common.table(["device", "statistic", "samples", "fit on", "hold-out", "model", "MAPE", "±10%", "±5%"], rows))
    common.write(a.out, "predictor_error", {"results": results}, md)
    plt = common.pyplot()
    if plt is not None:
        panels = [(d, s) for d in devices for s in a.stats]
        fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
        for ax, (name, stat) in zip(axes[0], panels):
            for label in ("MACs-proportional", "lookup table", "lookup table + line", "learned predictor"):
                pts = [(r["samples"], 100 * r["within_10pct"]) for r in results
                       if r["device"] == name and r["statistic"] == stat and r["model"] == label]
                ax.plot(*zip(*pts), marker="o", label=label)
            ax.set_title(f"{name} ({stat})")
            ax.set_xlabel("calibration samples")
            ax.set_ylabel("hold-out within ±10% (%)")
            ax.set_xscale("log")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(a.out / "predictor_error.png", dpi=120)


if __name__ == "__main__":
    main()
