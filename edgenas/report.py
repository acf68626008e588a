"""metrics.json and report.md of a finished run, rendered from a record of the run.

A :class:`RunRecord` is what the report reads: the run directory (its stage results and files),
the resolved config, the task, the search space and the latency table the run priced with. The
pipeline hands one over (``Pipeline.record()``); the report never sees the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgenas import cost
from edgenas.constraints import BUDGETS
from edgenas.spec import ArchSpec


@dataclass(frozen=True)
class RunRecord:
    run: Any  # RunDir: stage results (state.json) and files of the run
    cfg: Any  # RunConfig, resolved
    task: Any  # the run's Task
    space: Any  # the run's SearchSpace
    latency_table: Any = None  # the LatencyTable the run's budgets priced with (None: no latency budget)


def build_metrics(p: RunRecord, spec: ArchSpec) -> dict[str, Any]:
    run, cfg = p.run, p.cfg
    data, derive = run.result("data"), run.result("derive")
    train, export, meas = run.result("train"), run.result("export"), run.result("measure")
    shipped = cfg.measure.latency_quant  # the model the budgets apply to
    fmt = meas["format"]
    scope = run.result("budgets").get("scope", "model")
    est, fe = derive["estimates"], meas.get("frontend") or {}
    # budget → (model measured, model estimated, front end measured, front end estimated)
    parts = {
        "latency": (meas[shipped].get("latency_stat_ms", meas[shipped]["latency"]["median_ms"]), est.get("latency_ms"),
                    fe.get("latency_stat_ms"), est.get("frontend_latency_ms")),
        "ram": (meas[shipped]["peak_activation_bytes"], est["ram_bytes"], fe.get("peak_activation_bytes"),
                est.get("frontend_ram_bytes")),
        "flash": (meas[shipped]["flash_bytes"], est["flash_bytes"], fe.get("flash_bytes"), est.get("frontend_flash_bytes")),
    }
    limits = {"latency": cfg.max_latency_ms, "ram": cfg.max_ram_kb * 1024, "flash": cfg.max_flash_kb * 1024}
    budgets = {}
    for name, limit in limits.items():
        if limit <= 0:
            continue
        mo_m, mo_e, fe_m, fe_e = parts[name]
        if scope == "end-to-end":
            total_m = mo_m + fe_m
            total_e = None if mo_e is None or fe_e is None else mo_e + fe_e
        else:
            total_m, total_e = mo_m, mo_e
        budgets[name] = {"limit": limit, "scope": scope, "measured": total_m, "estimated": total_e,
                         "unit": "ms" if name == "latency" else "bytes", "holds": total_m <= limit,
                         "model": {"measured": mo_m, "estimated": mo_e, "artifact": meas[shipped]["file"]},
                         "frontend": {"measured": fe_m, "estimated": fe_e, "artifact": fe.get("file")},
                         "artifact": meas[shipped]["file"] + (f" + {fe['file']}" if scope == "end-to-end" else "")}
    measured = {name: parts[name][0] for name in parts}
    estimated = {name: parts[name][1] for name in parts}
    stage_s = {k: v["seconds"] for k, v in run.state["stages"].items()}
    return {
        "run_dir": str(run.path),
        "task": cfg.task,
        "device": cfg.device,
        "dataset": {"name": data["name"], "root": data["root"], "synthetic": bool(data.get("synthetic")),
                    "splits": data["splits"], "classes": len(data["classes"])},
        "arch_hash": spec.hash(),
        "data_config": spec.data.to_dict(),
        "data_description": p.task.describe_data(spec.data),
        "metric": {"name": p.task.metric.name, "unit": p.task.metric.unit, "fidelity": p.task.metric.fidelity},
        "calls_per_input": meas.get("calls_per_input", 1),
        "choices": spec.choices,
        "accuracy": {"test_fp32_torch": train["test_acc_fp32_torch"],
                     "test_fp32_torch_before_qat": train.get("test_acc_fp32_torch_before_qat"),
                     **{f"test_{k.replace('-', '_')}": v["test_acc"] for k, v in export["models"].items()},
                     **{f"argmax_agreement_{k.replace('-', '_')}": v["argmax_agreement"]
                        for k, v in export["models"].items() if k.endswith("int8")},
                     "test_int8": export["models"][f"{fmt}-int8"]["test_acc"],
                     "argmax_agreement_int8": export["models"][f"{fmt}-int8"]["argmax_agreement"],
                     "raw_input_int8": {f: r.get("raw_input_int8_acc") for f, r in (export["frontend"] or {}).items()
                                        if isinstance(r, dict)}},
        "exports": {k: v["status"] for k, v in export["models"].items()},
        "bundle": (export.get("bundle") or {}).get("tarball"),
        "latency_ms": {"fp32_median": meas["fp32"]["latency"]["median_ms"], "fp32_p90": meas["fp32"]["latency"]["p90_ms"],
                       "int8_median": meas["int8"]["latency"]["median_ms"], "int8_p90": meas["int8"]["latency"]["p90_ms"],
                       "frontend_median": (fe.get("latency") or {}).get("median_ms"),
                       "frontend_budgeted": fe.get("latency_stat_ms"),
                       "statistic": meas[shipped].get("latency_stat", "median"), "budgeted": measured["latency"],
                       "predicted": estimated["latency"], "passes": meas[shipped].get("latency_passes_ms"),
                       "predicted_by": (run.result("budgets").get("latency_model") or {}).get("kind")},
        "budget_scope": scope,
        "frontend_impl": ((export.get("frontend") or {}).get(fmt) or {}).get("impl"),
        "ram_bytes": {"int8_graph": meas["int8"]["peak_activation_bytes"], "estimated": estimated["ram"],
                      "frontend": fe.get("peak_activation_bytes"),
                      "artifact": meas["int8"]["file"]},
        "flash_bytes": {"int8_file": meas["int8"]["flash_bytes"], "fp32_file": meas["fp32"]["flash_bytes"],
                        "frontend_file": fe.get("flash_bytes"),
                        "estimated": estimated["flash"]},
        "macs": derive["estimates"]["macs"],
        "params": derive["estimates"]["params"],
        "budgets": budgets,
        "all_budgets_hold": all(b["holds"] for b in budgets.values()),
        "search_seconds": run.result("search")["seconds"],
        "stage_seconds": stage_s,
        "total_seconds": round(sum(stage_s.values()), 2),
    }


def confirm_passes(lat: dict[str, Any]) -> str:
    """The passes that confirmed the budgeted latency ("a, b, c ms"), or "" when one pass sufficed."""
    passes = lat.get("passes") or []
    return f"{', '.join(f'{x:.4g}' for x in passes)} ms" if len(passes) > 1 else ""


def _passes_note(lat: dict[str, Any]) -> str:
    """How the budgeted latency was confirmed, when its first pass was over the budget."""
    if not (passes := confirm_passes(lat)):
        return ""
    return (f": the first pass measured {lat['passes'][0]:.4g} ms, over the budget, so it was measured again "
            f"(measure.confirm); {len(lat['passes'])} passes ({passes}), the lowest is the figure")


def _latency_source(lm: dict[str, Any] | None) -> str:
    if lm and lm.get("kind") == "learned":
        return "the device's calibrated latency predictor"
    return "lookup table corrected by whole networks measured on the device"


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}{unit}"
    return f"{v}{unit}"


def _budget_value(name: str, v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.4g} ms" if name == "latency" else f"{v / 1024:.2f} KiB"


def _file_list(root: Any) -> str:
    """What the run directory holds (only files that exist), and what an extra would add."""
    import importlib.util

    export = sorted(f.name for f in (root / "export").glob("*") if f.is_file() and f.name != "report.json")
    have = [n for n in ("config.json", "arch.json", "model.pt", "metrics.json", "search.json", "events.jsonl")
            if (root / n).exists()]
    text = ", ".join(f"`{n}`" for n in have)
    text += f", `export/` ({', '.join(export)})" if export else ""
    text += ", `bundle/` and `bundle.tar.gz` (for `edgenas deploy`)" if (root / "bundle.tar.gz").exists() else ""
    text += ", `checkpoints/`" if (root / "checkpoints").is_dir() else ""
    plots = sorted(f.name for f in (root / "plots").glob("*.png")) if (root / "plots").is_dir() else []
    text += f", `plots/` ({', '.join(plots)})" if plots else ""
    if not any(n.endswith(".tflite") for n in export) and importlib.util.find_spec("tensorflow") is None:
        text += (". No TFLite files: TensorFlow is not installed; `pip install 'edgenas[tflite]'` and "
                 "`edgenas export RUN --format tflite` add `model.{fp32,int8}.tflite` and `frontend.fp32.tflite`")
    return text + "."


def render_report(p: RunRecord, spec: ArchSpec, m: dict[str, Any]) -> str:
    run, cfg, space = p.run, p.cfg, p.space
    data, derive, search = run.result("data"), run.result("derive"), run.read_json("search.json")
    lines = [f"# edgenas run `{run.path.name}` — {cfg.task} on {cfg.device}", ""]
    if m["dataset"]["synthetic"]:
        lines += ["> **SYNTHETIC DEMO DATA.** This run used the generated espeak-ng keyword set, not real "
                  "recordings. Its accuracy says nothing about real speech; pass `--data` for that.", ""]
    acc, metric = m["accuracy"], p.task.metric
    val = (lambda v: f"{v:.2f} {metric.unit}") if metric.unit else (lambda v: f"{v:.4f}")  # noqa: E731
    calls = m.get("calls_per_input", 1)
    lines += [
        "## Summary", "",
        f"- dataset: `{data['name']}` at `{data['root']}` — {p.task.describe_dataset(data)}",
        f"- data configuration: {m['data_description']}",
        f"- test {metric.name}: PyTorch fp32 {val(acc['test_fp32_torch'])}"
        + (f" (before the {cfg.train.qat_epochs} quantization-aware epochs {val(acc['test_fp32_torch_before_qat'])})"
           if acc.get("test_fp32_torch_before_qat") is not None else "") + " · "
        + " · ".join(f"{k.replace('-', ' ')} {val(v['test_acc'])}" for k, v in run.result("export")["models"].items()
                     if v["status"] == "ok")
        + f" ({metric.fidelity}, int8 on the device's format: {val(acc['argmax_agreement_int8'])}); "
        "details in `export/report.md`",
        f"- measured latency on {cfg.device} ({cfg.measure.threads} thread, median of the samples"
        + (f", per call: {calls} calls per input, the budgets are per input" if calls > 1 else "") + "): "
        + (f"front end {m['latency_ms']['frontend_median']:.4f} ms + " if m['latency_ms'].get('frontend_median') is not None else "")
        + f"int8 model {m['latency_ms']['int8_median']:.4f} ms (p90 {m['latency_ms']['int8_p90']:.4f}), fp32 model "
        f"{m['latency_ms']['fp32_median']:.4f} ms (p90 {m['latency_ms']['fp32_p90']:.4f}); the budget is on the "
        f"{m['latency_ms']['statistic']}; the model was predicted at {_fmt(m['latency_ms']['predicted'], ' ms')} before "
        f"training ({_latency_source(run.result('budgets').get('latency_model'))})",
        f"- MACs {m['macs']:,.0f} · parameters {m['params']:,.0f} · arch hash `{m['arch_hash']}`",
        f"- search {m['search_seconds']:.0f} s, whole run {m['total_seconds']:.0f} s", "",
        "## Budgets (as measured)", "",
    ]
    if m["budgets"]:
        scope = m.get("budget_scope", "model")
        lines += [f"Scope: **{scope}**" + (" (front end + model, as the bundle runs them on the device; "
                                           "`--budget-scope model` budgets the model alone)." if scope == "end-to-end"
                                           else " (the classifier alone; the front end is listed, not budgeted)."), "",
                  "| budget | limit | front end est. / meas. | model est. / meas. | total est. / meas. | verdict |",
                  "|---|---|---|---|---|---|"]
        for name, b in m["budgets"].items():
            fe, mo = b.get("frontend") or {}, b.get("model") or {}
            lines.append(f"| {BUDGETS[name][0]} | {_budget_value(name, b['limit'])} "
                         f"| {_budget_value(name, fe.get('estimated'))} / {_budget_value(name, fe.get('measured'))} "
                         f"| {_budget_value(name, mo.get('estimated'))} / {_budget_value(name, mo.get('measured'))} "
                         f"| {_budget_value(name, b['estimated'])} / **{_budget_value(name, b['measured'])}** | "
                         f"{'holds' if b['holds'] else '**VIOLATED**'} |")
        lines += ["", f"Latency: the {m['latency_ms']['statistic']} of the device measurement of each file "
                  f"({m['budgets'][next(iter(m['budgets']))].get('artifact', '')}){_passes_note(m['latency_ms'])}. "
                  "RAM: peak activation memory from tensor lifetimes in each exported graph's execution order "
                  f"({p.task.memory_note}). Flash: "
                  "file sizes. Front-end estimates are the front end of this data configuration measured on the device "
                  f"before the search (implementation `{m.get('frontend_impl') or 'default'}`); model estimates come "
                  "from the cost models.", ""]
    else:
        lines += ["No budgets were given.", ""]
    lines += ["## Architecture", "", "| choice point | selected |", "|---|---|"]
    for k, v in space.selection(spec).items():
        lines.append(f"| {k} | {v} |")
    if derive.get("fills"):
        lines += ["", f"Grown into the budget left unused (`search.fill_budget`; derived spec "
                  f"`{derive['derived_hash']}`): " + "; ".join(f"{s['point']}: {s['old']} → {s['new']}"
                                                             for s in derive["fills"])]
    if derive["repairs"]:
        lines += ["", f"Repaired after derivation (derived spec `{derive['derived_hash']}` violated a budget by the "
                  "cost model): " + "; ".join(f"{s['point']}: {s['old']} → {s['new']}" for s in derive["repairs"])]
    lines += ["", "## Per-layer cost", "",
              "| layer | kind | in | out | kernel | stride | groups | MACs | params | flash B | RAM B | table ms |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lut = p.latency_table
    for desc in space.layers(spec):
        lat = f"{lut.layer_ms(desc):.4f}" if lut is not None and desc in lut else "–"
        lines.append(
            f"| {desc.name} | {desc.kind} | {'×'.join(map(str, desc.in_shape))} | {'×'.join(map(str, desc.out_shape))} "
            f"| {desc.kernel[0]}×{desc.kernel[1]} | {desc.stride[0]}×{desc.stride[1]} | {desc.groups} | {desc.macs:,} "
            f"| {desc.params:,} | {cost.flash_bytes(desc):,.0f} | {cost.ram_bytes(desc):,.0f} | {lat} |")
    lm = run.result("budgets").get("latency_model") or {}
    fit = run.result("budgets").get("latency_fit")
    if lm.get("kind") == "learned":
        ho = lm.get("holdout") or {}
        lines += ["", f"Latency model: the device's calibrated predictor `{lm['path']}` ({lm.get('samples')} measured "
                  f"networks, calibrated {lm.get('created')}; on its {lm.get('holdout_samples')} held-out networks MAPE "
                  f"{ho.get('mape', float('nan')):.1%}, {ho.get('within_10pct', float('nan')):.0%} within ±10%) is the "
                  f"search's differentiable latency cost and prices derived specs, raised by a safety margin of "
                  f"{100 * lm.get('margin', 0.0):.1f}% (the hold-out's 90th percentile of measured over predicted)."]
    elif fit:
        lines += ["", f"Latency model: the search's differentiable latency is a + b·Σ(table), a = {fit['a_ms']:.4f} ms, "
                  f"b = {fit['b']:.3f}, fitted on {fit['samples']} whole networks measured on the device: MAPE "
                  f"{fit['mape_corrected']:.1%} ({fit['within_10pct']:.0%} within ±10%) vs {fit['mape_table_only']:.1%} for "
                  "the raw table sum. Budgets on derived specs use the measured whole network."]
    if lut is not None:
        lines += ["", f"Latency table: {len(lut.entries)} layer micro-models measured on {lut.device} "
                  f"({lut.fmt}, onnxruntime {lut.runtime_version}, {lut.threads} thread), per-call overhead "
                  f"{lut.overhead_ms:.4f} ms counted once."]
    lines += ["", "## Search", "",
              f"Strategy `{cfg.search.strategy}`, {cfg.search.epochs} epochs (first {cfg.search.warmup_frac:.0%} warm-up), "
              f"{search['seconds']:.0f} s. Weights trained on the train split, choice logits on the "
              f"{p.task.val_split}; the test split was first read after final training.", "",
              *(["![search history: choice entropy, metric, expected and derived cost against each budget]"
                 "(plots/search.png)", ""] if (run.path / "plots" / "search.png").is_file() else []),
              f"| epoch | phase | train {metric.name} | val {metric.name} "
              "| entropy | data | " +
              " | ".join(f"E[{c['name']}] / derived" for c in run.result("budgets")["constraints"]) + " |",
              "|---|---|---|---|---|---|" + "---|" * len(run.result("budgets")["constraints"])]
    for h in search["history"]:
        cols = [f"{h.get('expected_' + c['name'], 0):.4g} / {h.get('derived_' + c['name'], 0):.4g}"
                for c in run.result("budgets")["constraints"]]
        lines.append(f"| {h['epoch']} | {h['phase']} | {h['train_acc']:.3f} | {_fmt(h['val_acc'])} | "
                     f"{h['entropy']:.3f} | {h['data']} | " + " | ".join(cols) + " |")
    if search.get("data_scores"):
        lines += ["", "Data first: after the warm-up every data configuration was scored on the val split "
                  "(cross-entropy under the warm-up's architecture mixture + budget terms; lowest wins) and the "
                  "best frozen before the architecture search:", "",
                  "| data configuration | val loss | val acc | budget term | score |", "|---|---|---|---|---|"]
        for r in search["data_scores"]:
            lines.append(f"| {r['data']} | {r['val_loss']:.3f} | {r['val_acc']:.3f} | {r['penalty']:.3f} | {r['score']:.3f} |")
    lines += ["", "Final choice probabilities:", ""]
    for k, v in search["probs"].items():
        opts = space.point(k).options
        lines.append(f"- {k}: " + ", ".join(f"{o} {pr:.2f}" for o, pr in zip(opts, v)))
    lines += ["", "## Stage times", "", "| stage | seconds |", "|---|---|"]
    for k, v in m["stage_seconds"].items():
        lines.append(f"| {k} | {v:.1f} |")
    lines += ["", "Files: " + _file_list(run.path), ""]
    return "\n".join(lines)
