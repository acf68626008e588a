"""Quantization-aware fine-tuning vs post-training quantization, on trained runs.

For every run under ``--runs`` that has a trained ``model.pt`` from an edgenas space, exports the
model twice into a scratch folder with the same exporter the pipeline uses: as trained (post-training
quantization only) and after ``--qat-epochs`` quantization-aware epochs (``edgenas/qat.py``, the
run's own training recipe and data, ``train.qat_lr``). Reports fp32 and int8 test accuracy and
int8/fp32 argmax agreement per route.

    python bench/qat_effect.py --runs bench/results/runs --qat-epochs 5
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def _one(run_path: Path, qat_epochs: int, scratch: Path) -> list[dict[str, Any]]:
    import torch

    from edgenas.cli import _open_run
    from edgenas.export.exporter import ExportJob, export_network
    from edgenas.pipeline import Pipeline
    from edgenas.qat import qat_finetune
    from edgenas.spec import ArchSpec

    cfg, run = _open_run(str(run_path))
    rows = []
    with run:
        spec = ArchSpec.from_dict(json.loads(run.file("arch.json").read_text()))
        p = Pipeline(cfg, run)
        te, tr, va = (p.features(s, spec.data) for s in ("test", "train", "val"))
        x, y = torch.cat([tr.x, va.x]), torch.cat([tr.y, va.y])
        for epochs in (0, qat_epochs):
            model = p.load_model(spec)
            if epochs:
                qat_finetune(model, x, y, replace(cfg.train, qat_epochs=epochs), p.task, seed=cfg.seed)
                model.eval()
            rep = export_network(ExportJob(model=model, spec=spec, out_dir=scratch / f"{run_path.name}-{epochs}",
                                           calibration=tr.x.numpy(), test_x=te.x.numpy(), test_y=te.y.numpy(),
                                           frontend=False, formats=p.export_formats(), seed=cfg.seed))
            for key, m in rep["models"].items():
                if key.endswith("int8") and m["status"] == "ok":
                    rows.append({"run": run_path.name, "qat_epochs": epochs, "route": key,
                                 "fp32": rep["test_acc_fp32_torch"], "int8": m["test_acc"],
                                 "agreement": m["argmax_agreement"]})
    return rows


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=None, help="folder of run directories (searched recursively)")
    p.add_argument("--qat-epochs", type=int, default=5)
    a = p.parse_args()
    common.use_bench_dirs(a.out)
    runs = sorted(r.parent for r in (a.runs or a.out / "runs").rglob("model.pt")
                  if (r.parent / "arch.json").is_file() and json.loads((r.parent / "config.json").read_text())
                  .get("space_name"))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgenas-qat-") as td:
        for r in runs:
            print(f"{r.name} …", file=sys.stderr, flush=True)
            try:
                rows += _one(r, a.qat_epochs, Path(td))
            except Exception as e:  # noqa: BLE001 - a run outside every space (a hand-built baseline)
                print(f"  skipped: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
    table = []
    for route in sorted({r["route"] for r in rows}):
        for epochs in (0, a.qat_epochs):
            xs = [r for r in rows if r["route"] == route and r["qat_epochs"] == epochs]
            if xs:
                table.append([route, "post-training only" if not epochs else f"+{epochs} QAT epochs", len(xs),
                              f"{100 * statistics.mean(x['fp32'] for x in xs):.2f}%",
                              f"{100 * statistics.mean(x['int8'] for x in xs):.2f}%",
                              f"{100 * statistics.mean(x['agreement'] for x in xs):.2f}%",
                              f"{100 * min(x['agreement'] for x in xs):.2f}%"])
    per_run = [[r["run"], r["route"], r["qat_epochs"], f"{100 * r['fp32']:.1f}%", f"{100 * r['int8']:.1f}%",
                f"{100 * r['agreement']:.1f}%"] for r in rows]
    md = ("## Quantization-aware fine-tuning vs post-training quantization\n\n"
          + common.table(["route", "model", "runs", "fp32 acc", "int8 acc", "agreement (mean)", "agreement (worst)"],
                         table)
          + "\n\n" + common.table(["run", "route", "QAT epochs", "fp32", "int8", "agreement"], per_run))
    common.write(a.out, "qat_effect", {"rows": rows, "qat_epochs": a.qat_epochs}, md)
    plt = common.pyplot()
    if plt is not None and rows:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for route, marker in (("onnx-int8", "o"), ("tflite-int8", "s")):
            ptq = {r["run"]: r["agreement"] for r in rows if r["route"] == route and not r["qat_epochs"]}
            qat = {r["run"]: r["agreement"] for r in rows if r["route"] == route and r["qat_epochs"]}
            keys = sorted(set(ptq) & set(qat))
            ax.scatter([100 * ptq[k] for k in keys], [100 * qat[k] for k in keys], marker=marker, label=route)
        lo = min(100 * r["agreement"] for r in rows)
        ax.plot([lo, 100], [lo, 100], "k--", lw=0.8)
        ax.set_xlabel("argmax agreement, post-training quantization (%)")
        ax.set_ylabel(f"after {a.qat_epochs} QAT epochs (%)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(a.out / "qat_effect.png", dpi=120)


if __name__ == "__main__":
    main()
