"""int8 fidelity: fp32 vs int8 test accuracy and argmax agreement per export route, per dataset.

Reads the export reports (``export/report.json``) of every run under ``--runs`` (by default the
search-quality benchmark's runs, which export ONNX QDQ and full-int8 TFLite for every method) and
aggregates per dataset and route (ONNX QDQ int8, TFLite full int8, and the raw-audio pipeline
through the exported front end).

    python bench/int8_fidelity.py [--runs bench/results/runs]
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=None, help="folder of run directories (searched recursively)")
    a = p.parse_args()
    runs = a.runs or a.out / "runs"
    per: dict[tuple[str, str], list[dict[str, float]]] = {}
    for rep_path in sorted(runs.rglob("export/report.json")):
        run = rep_path.parent.parent
        cfg = json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else {}
        dataset = Path(cfg["data"]).name if cfg.get("data") else run.name.split("-")[0]
        rep = json.loads(rep_path.read_text())
        fp32 = rep["test_acc_fp32_torch"]
        for key, m in rep["models"].items():
            if m.get("status") != "ok" or not key.endswith("int8"):
                continue
            route = {"onnx-int8": "ONNX QDQ int8", "tflite-int8": "TFLite full int8"}[key]
            per.setdefault((dataset, route), []).append(
                {"fp32": fp32, "int8": m["test_acc"], "agreement": m["argmax_agreement"]})
        for fmt, fe in (rep.get("frontend") or {}).items():
            raw = fe.get("raw_input_int8_acc", fe.get("raw_audio_int8_acc")) if isinstance(fe, dict) else None
            if raw is not None:  # (runs exported before the task layer name it raw_audio_*)
                per.setdefault((dataset, f"raw audio → {fmt} front end → int8"), []).append(
                    {"fp32": (rep["frontend"] or {})["torch_pipeline_acc"], "int8": raw,
                     "agreement": float("nan")})
    rows, results = [], []
    for (ds, route), xs in sorted(per.items()):
        def mean(k: str) -> float:
            vals = [x[k] for x in xs if x[k] == x[k]]
            return statistics.mean(vals) if vals else float("nan")

        delta = [100 * (x["int8"] - x["fp32"]) for x in xs]
        worst = min(delta)
        results.append({"dataset": ds, "route": route, "models": len(xs), "fp32": mean("fp32"), "int8": mean("int8"),
                        "agreement": mean("agreement"), "worst_delta_points": worst})
        rows.append([ds, route, len(xs), f"{100 * mean('fp32'):.2f}%", f"{100 * mean('int8'):.2f}%",
                     f"{statistics.mean(delta):+.2f}", f"{worst:+.2f}",
                     "–" if mean("agreement") != mean("agreement") else f"{100 * mean('agreement'):.2f}%"])
    md = ("## int8 fidelity per export route (mean over models)\n\n"
          + common.table(["dataset", "route", "models", "fp32 acc", "int8 acc", "Δ points (mean)",
                          "Δ points (worst)", "argmax agreement"], rows))
    common.write(a.out, "int8_fidelity", {"results": results, "runs": str(runs)}, md)
    plt = common.pyplot()
    if plt is not None and results:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        labels = [f"{r['dataset']}\n{r['route']}" for r in results]
        ax.bar(range(len(results)), [100 * (r["int8"] - r["fp32"]) for r in results])
        ax.set_xticks(range(len(results)), labels, fontsize=6)
        ax.set_ylabel("int8 − fp32 accuracy (points)")
        fig.tight_layout()
        fig.savefig(a.out / "int8_fidelity.png", dpi=120)


if __name__ == "__main__":
    main()
