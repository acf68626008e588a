"""Export a trained network in every format, verify each file, and say which ones ship.

    export_network(job) → export/report.json + export/report.md

For each format (``onnx``, ``tflite``) and quantization (``fp32``, ``int8``) the file is written,
then verified; what fails verification is renamed ``*.failed`` and reported, never shipped:

* fp32: logits match PyTorch within ``FP32_ATOL`` (max abs over the test inputs);
* int8 TFLite: every tensor int8/int32 (no float kernels), int8 input and output, zero TRANSPOSE;
* int8 ONNX (QDQ): every Conv/Gemm weight stored int8 and bias int32 (the float tensors between
  Q/DQ pairs are the QDQ format's own: ONNX Runtime fuses them into integer kernels, listed as
  allowed in the report);
* every file: argmax agreement with fp32 PyTorch and test accuracy, flash = file size, peak
  activation memory estimated by edgenas (from the ArchSpec) next to what the file's tensors need;
  for TFLite the op list against TensorFlow Lite Micro's builtin ops.

The audio front end (the DataConfig's MFCC) ships as its own float model in each format and is
checked against the training features (max abs difference) and end to end: raw test audio →
front end → int8 classifier must score the PyTorch pipeline's accuracy (within 0.5 points).
File names tell the truth: ``model.fp32.onnx``, ``model.int8.onnx``, ``model.fp32.tflite``,
``model.int8.tflite``, ``frontend.fp32.onnx``, ``frontend.fp32.tflite``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgenas.errors import ExportError
from edgenas.fileio import atomic_write_text
from edgenas.events import EventSink, null_sink, progress

log = logging.getLogger("edgenas.export")

FORMATS = ("onnx", "tflite")
QUANTS = ("fp32", "int8")
FP32_ATOL = 1e-4
ONNX_QDQ_ALLOWED = ("float activations between QuantizeLinear/DequantizeLinear pairs (QDQ format, fused by the runtime); "
                    "float logits out of a final QGemm (its int32 accumulator dequantized, not requantized)")


@dataclass
class ExportJob:
    """What an export needs. Arrays are in PyTorch layout ([N, 1, frames, n_mfcc] for KWS)."""

    model: Any  # torch.nn.Module, eval mode, trained weights
    spec: Any  # ArchSpec (None for a network outside every space: no arch metadata)
    out_dir: Path
    calibration: np.ndarray  # train-split inputs for int8 calibration
    test_x: np.ndarray
    test_y: np.ndarray
    test_groups: np.ndarray | None = None  # the item each test example is part of (Split.groups)
    test_raw: np.ndarray | None = None  # raw test inputs the front end eats (waveforms, uint8 images)
    estimates: dict[str, float] = field(default_factory=dict)  # edgenas's own ram/flash estimates
    formats: Sequence[str] = FORMATS
    quants: Sequence[str] = QUANTS
    frontend: bool = True
    norm: tuple[np.ndarray, np.ndarray] | None = None  # per-coefficient (mean, std) the inputs were standardised by
    frontend_impl: str | None = None  # the front end's implementation (None: the fastest, DEFAULT_IMPL)
    seed: int = 0
    task: Any = None  # the Task that scores the outputs (None: the spec's, a classifier without a spec)


def _task(job: ExportJob) -> Any:
    """The task that scores the job's outputs: its own, the spec's, else a classifier."""
    from edgenas.tasks import Classification, task_of

    if job.task is not None:
        return job.task
    return task_of(job.spec.data) if job.spec is not None else Classification()


def _torch_logits(model: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[i:i + 256])).numpy() for i in range(0, len(x), 256)])


def verify_onnx(path: Path, quant: str) -> dict[str, Any]:
    """Op list, weight dtypes (int8 model: every Conv/Gemm weight int8, bias int32), memory."""
    import onnx
    from onnx import TensorProto

    from edgenas.export.graph_memory import onnx_memory_report

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    ops = [n.op_type for n in model.graph.node]
    report: dict[str, Any] = {"ops": ops, "op_counts": {o: ops.count(o) for o in sorted(set(ops))}}
    if quant == "int8":
        producers = {o: n for n in model.graph.node for o in n.output}
        bad = []
        for node in model.graph.node:
            if node.op_type not in ("Conv", "Gemm", "MatMul"):
                continue
            for role, name in zip(("input", "weight", "bias"), node.input):
                if role == "input" or not name:
                    continue
                src = producers.get(name)
                stored = inits.get(src.input[0]) if src is not None and src.op_type == "DequantizeLinear" else inits.get(name)
                want = TensorProto.INT8 if role == "weight" else TensorProto.INT32
                if stored is None or stored.data_type != want:
                    bad.append(f"{node.name or node.op_type}.{role}")
        report["non_integer_weights"] = bad
        report["weights_int8"] = not bad
        from edgenas.export.onnx_export import runtime_float_kernels

        report["runtime_float_kernels"] = runtime_float_kernels(path)
        md = {p.key: p.value for p in model.metadata_props}
        report["weight_bits"] = int(md.get("weight_bits", 8))
        report["weight_bits_reason"] = md.get("weight_bits_reason", "")
        report["allowed_float"] = ONNX_QDQ_ALLOWED
    mem = onnx_memory_report(path)
    report.update({"flash_bytes": mem["flash_bytes"], "weight_bytes": mem["weight_bytes"],
                   "peak_activation_bytes": mem["peak_activation_bytes"]})
    return report


class _Exporter:
    def __init__(self, job: ExportJob, sink: EventSink) -> None:
        self.job, self.sink = job, sink
        self.out = Path(job.out_dir)
        self.input_shape = (1, *job.test_x.shape[1:])
        self.task = _task(job)
        self.ref = _torch_logits(job.model, job.test_x)
        self.metadata: dict[str, str] = {}

    def _md(self, quant_scheme: str) -> dict[str, str]:
        from edgenas.export.onnx_export import model_metadata

        return model_metadata(self.job.spec, quant_scheme)

    def _write(self, fmt: str, quant: str, path: Path) -> Path:
        from edgenas.export import onnx_export as ox

        job = self.job
        if fmt == "onnx":
            fp32 = self.out / "model.fp32.onnx"
            if quant == "fp32":
                return ox.export_onnx_fp32(job.model, self.input_shape, path, self._md(ox.QUANT_FP32),
                                           dynamic_batch=False)
            if not fp32.exists():
                self._write("onnx", "fp32", fp32)
            return ox.quantize_int8(fp32, path, self._calibration(), self._md(ox.QUANT_INT8))
        from edgenas.export.tflite_export import export_tflite

        return export_tflite(job.model, self.input_shape, path, quant=quant,
                             calibration=self._calibration() if quant == "int8" else None,
                             metadata=self._md("tflite-int8-full-integer" if quant == "int8" else "fp32"))

    def _calibration(self) -> np.ndarray:
        rng = np.random.default_rng(self.job.seed)
        cal = self.job.calibration
        return cal[rng.permutation(len(cal))[:300]]

    def _run(self, fmt: str, path: Path, x: np.ndarray) -> np.ndarray:
        if fmt == "onnx":
            from edgenas.export.onnx_export import run_onnx

            return run_onnx(path, x)
        from edgenas.export.tflite_export import run_tflite

        return run_tflite(path, x)

    def one(self, fmt: str, quant: str) -> dict[str, Any]:
        job = self.job
        path = self.out / f"model.{quant}.{fmt}"
        rec: dict[str, Any] = {"format": fmt, "quant": quant, "file": path.name}
        try:
            self._write(fmt, quant, path)
            if fmt == "onnx":
                ver = verify_onnx(path, quant)
            else:
                from edgenas.export.tflite_export import verify_tflite

                ver = verify_tflite(path)
                ver.pop("metadata", None)
            logits = self._run(fmt, path, job.test_x)
        except ExportError as e:
            return {**rec, "status": "failed", "failures": [str(e)]}
        rec.update({"verification": ver, "test_acc": self.score(logits),
                    "argmax_agreement": self.task.fidelity(logits, self.ref, job.test_y, job.test_groups),
                    "flash_bytes": path.stat().st_size,
                    "peak_activation_bytes": ver["peak_activation_bytes"],
                    "estimated_peak_activation_bytes": job.estimates.get("ram_bytes"),
                    "estimated_flash_bytes": job.estimates.get("flash_bytes")})
        failures = []
        if quant == "fp32":
            diff = float(np.abs(logits - self.ref).max()) if len(logits) else 0.0
            rec["max_abs_diff_vs_torch"] = diff
            if diff > FP32_ATOL:
                failures.append(f"fp32 logits differ from PyTorch by {diff:.2e} > {FP32_ATOL:g}")
        if fmt == "tflite":
            rec["tflm"] = ver["tflm"]
            rec["transpose_ops"] = ver["transpose_ops"]
            if ver["transpose_ops"]:
                failures.append(f"{ver['transpose_ops']} TRANSPOSE op(s)")
            if quant == "int8" and not ver["fully_int8"]:
                failures.append("not fully int8: " + ", ".join(
                    [t["name"] for t in ver.get("non_integer_tensors", [])][:3] + ver.get("float_ops", [])[:3]))
        elif quant == "int8" and not ver["weights_int8"]:
            failures.append("weights not stored as int8: " + ", ".join(ver["non_integer_weights"][:3]))
        if failures:
            failed = path.with_name(path.name + ".failed")
            os.replace(path, failed)
            rec.update({"status": "failed", "failures": failures, "file": failed.name})
        else:
            rec["status"] = "ok"
        return rec

    def score(self, out: np.ndarray) -> float:
        """The task's metric of outputs on the test split (accuracy; PSNR in dB for SR)."""
        return self.task.score(out, self.job.test_y, self.job.test_groups)

    def frontends(self, classifiers: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Front-end models per format (the task's :class:`~edgenas.tasks.FrontEnd`), their error
        against the training transform and the accuracy of the raw-input pipeline."""
        job = self.job
        cfg = job.spec.data
        task = self.task
        fe = task.frontend()
        raw = job.test_raw
        assert raw is not None
        ref_feats = fe.reference(raw, cfg)
        if job.norm is not None:
            ref_feats = task.normalize(ref_feats, job.norm)
        torch_acc = self.score(_torch_logits(job.model, ref_feats))
        out: dict[str, Any] = {"torch_pipeline_acc": torch_acc, "inputs": int(len(raw)), "kind": fe.kind}
        for fmt in job.formats:
            path = self.out / f"frontend.fp32.{fmt}"
            rec: dict[str, Any] = {"file": path.name}
            try:
                fe.export(cfg, fmt, path, job.norm, impl=job.frontend_impl)
                feats = fe.run(path, raw)
            except ExportError as e:
                out[fmt] = {**rec, "status": "failed", "failures": [str(e)]}
                continue
            rec["impl"] = fe.resolve_impl(cfg, fmt, job.frontend_impl)  # which implementation shipped
            rec["max_abs_diff_vs_training_features"] = float(np.abs(feats - ref_feats).max())
            rec["feature_range"] = float(ref_feats.max() - ref_feats.min())
            rec["flash_bytes"] = path.stat().st_size
            int8 = classifiers.get(f"{fmt}-int8")
            if int8 and int8["status"] == "ok":
                rec["raw_input_int8_acc"] = self.score(self._run(fmt, self.out / int8["file"], feats))
                gap = rec["raw_input_int8_acc"] - torch_acc
                rec["raw_input_vs_torch_points"] = gap if task.metric.unit else 100 * gap
                rec["raw_input_within_tolerance"] = gap >= -task.metric.raw_input_tolerance
            rec["status"] = "ok"
            out[fmt] = rec
        return out


def export_network(job: ExportJob, sink: EventSink | None = None) -> dict[str, Any]:
    """Export, verify and evaluate every requested format; write ``report.json`` and ``report.md``."""
    sink = sink or null_sink
    for f in job.formats:
        if f not in FORMATS:
            raise ExportError(f"unknown export format {f!r} (known: {', '.join(FORMATS)}, all)")
    for q in job.quants:
        if q not in QUANTS:
            raise ExportError(f"unknown quantization {q!r} (known: {', '.join(QUANTS)})")
    job.out_dir.mkdir(parents=True, exist_ok=True)
    ex = _Exporter(job, sink)
    torch_acc = ex.score(ex.ref)
    results: dict[str, dict[str, Any]] = {}
    todo = [(f, q) for f in job.formats for q in job.quants]
    with progress(sink, "export + verify", len(todo) + (len(job.formats) if job.frontend else 0)) as tick:
        for f, q in todo:
            results[f"{f}-{q}"] = ex.one(f, q)
            tick(1, file=results[f"{f}-{q}"]["file"])
        fe: dict[str, Any] | None = None
        if job.frontend and job.test_raw is not None:
            fe = ex.frontends(results)
            tick(len(job.formats))
    m = ex.task.metric
    report = {"arch_hash": job.spec.hash() if job.spec is not None else None, "test_examples": int(len(job.test_y)),
              "metric": {"name": m.name, "unit": m.unit, "fidelity": m.fidelity,
                         "raw_input_tolerance": m.raw_input_tolerance},
              "test_acc_fp32_torch": torch_acc,
              "models": results, "frontend": fe, "shipped": sorted(r["file"] for r in results.values() if r["status"] == "ok"),
              "failed": sorted(r["file"] for r in results.values() if r["status"] != "ok")}
    atomic_write_text(job.out_dir / "report.json", json.dumps(report, indent=1, default=float) + "\n")
    atomic_write_text(job.out_dir / "report.md", render(report))
    return report


def _value(v: Any, unit: str, points: bool = False) -> str:
    """A metric value: a fraction as a percentage, else in its unit (``points``: a signed difference)."""
    if not isinstance(v, (int, float)):
        return "–"
    if not unit:
        return f"{100 * v:+.2f} points" if points else f"{100 * v:.2f}%"
    return f"{v:+.2f} {unit}" if points else f"{v:.2f} {unit}"


def render(r: dict[str, Any]) -> str:
    m = r.get("metric") or {"name": "accuracy", "unit": "", "fidelity": "argmax agreement"}
    unit = m["unit"]
    lines = ["# Export report", "",
             f"ArchSpec `{r['arch_hash']}`; {r['test_examples']} test examples; PyTorch fp32 test {m['name']} "
             f"{_value(r['test_acc_fp32_torch'], unit)}.", "",
             f"| file | status | test {m['name']} | {m['fidelity']} | flash | peak act. RAM (file / edgenas est.) | ops / checks |",
             "|---|---|---|---|---|---|---|"]
    for rec in r["models"].values():
        if rec["status"] != "ok" and "verification" not in rec:
            lines.append(f"| {rec['file']} | **failed** | – | – | – | – | {'; '.join(rec['failures'])} |")
            continue
        ver = rec["verification"]
        checks = []
        if "max_abs_diff_vs_torch" in rec:
            checks.append(f"max |Δlogit| vs PyTorch {rec['max_abs_diff_vs_torch']:.1e}")
        if rec["format"] == "tflite":
            checks.append(f"TRANSPOSE ×{rec['transpose_ops']}")
            if rec["quant"] == "int8":
                checks.append("fully int8" if ver["fully_int8"] else "NOT fully int8")
            checks.append(rec["tflm"])
        elif rec["quant"] == "int8":
            checks.append("int8 weights / int32 biases" if ver["weights_int8"] else "float weights")
            if "runtime_float_kernels" in ver:
                checks.append("ONNX Runtime float kernels: " + (", ".join(ver["runtime_float_kernels"]) or "none"))
            if "weight_bits" in ver:
                checks.append(f"{ver['weight_bits']}-bit weights ({ver['weight_bits_reason']})")
        checks.append(", ".join(f"{k}×{v}" for k, v in ver["op_counts"].items()))
        if rec["status"] != "ok":
            checks.insert(0, "FAILED: " + "; ".join(rec["failures"]))
        est = rec.get("estimated_peak_activation_bytes")
        lines.append(f"| {rec['file']} | {rec['status']} | {_value(rec['test_acc'], unit)} | "
                     f"{_value(rec['argmax_agreement'], unit)} | "
                     f"{rec['flash_bytes'] / 1024:.1f} KiB | {rec['peak_activation_bytes'] / 1024:.1f} / "
                     f"{(est or 0) / 1024:.1f} KiB | {'; '.join(checks)} |")
    fe = r.get("frontend")
    if fe:
        lines += ["", "## Front end (float) and the raw-input pipeline", "",
                  f"PyTorch pipeline (training transform → fp32 model) on {fe['inputs']} raw test inputs: "
                  f"{_value(fe['torch_pipeline_acc'], unit)}.", "",
                  "| file | max abs diff vs training features (feature range) | raw input → front end → int8 model |",
                  "|---|---|---|"]
        for fmt in ("onnx", "tflite"):
            rec = fe.get(fmt)
            if not rec:
                continue
            if rec["status"] != "ok":
                lines.append(f"| {rec['file']} | **failed**: {'; '.join(rec['failures'])} | – |")
                continue
            raw = (f"{_value(rec['raw_input_int8_acc'], unit)} ({rec['raw_input_vs_torch_points']:+.2f} "
                   f"{unit or 'points'})"
                   if "raw_input_int8_acc" in rec else "–")
            lines.append(f"| {rec['file']} ({rec.get('impl') or 'stft'}) | {rec['max_abs_diff_vs_training_features']:.2e} "
                         f"({rec['feature_range']:.1f}) | {raw} |")
    lines += ["", "Peak activation RAM of a file: tensor lifetimes over its execution order (int8 tensors 1 byte). "
              "Flash: file size. The ONNX int8 model keeps float tensors between Q/DQ pairs by design (QDQ format); "
              "ONNX Runtime fuses them into integer kernels.", ""]
    if r["failed"]:
        lines += [f"Failed verification, not shipped: {', '.join(r['failed'])}", ""]
    return "\n".join(lines)


def select(fmt: str, quant: str) -> tuple[list[str], list[str]]:
    """CLI ``--format onnx|tflite|all`` and ``--quant fp32|int8|all`` → formats, quants."""
    fmts = list(FORMATS) if fmt == "all" else [fmt]
    quants = list(QUANTS) if quant == "all" else [quant]
    for f in fmts:
        if f not in FORMATS:
            raise ExportError(f"unknown --format {fmt!r} (onnx, tflite or all)")
    for q in quants:
        if q not in QUANTS:
            raise ExportError(f"unknown --quant {quant!r} (fp32, int8 or all)")
    return fmts, quants


