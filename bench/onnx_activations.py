"""ONNX int8 activations, s8 or u8: ONNX Runtime CPU latency and outputs of the same networks.

The question: on the networks edgenas exports (time-series TCNs with residual adds, KWS DS-CNNs,
image cells), does quantizing the ONNX int8 file with u8 instead of s8 activations change what
onnxruntime-cpu computes, and how fast it runs?

* Models: the exported fp32 ONNX file of every run under ``--runs`` (``<runs>/<task>/<run>/export/
  model.fp32.onnx``; at most ``--per-task`` per task, in name order).
* Each is quantized twice by :func:`edgenas.export.onnx_export.quantize_int8` — the pipeline's own
  quantizer (per-channel s8 weights, MinMax, the same 64 calibration inputs drawn N(0, 1) with
  seed 0) — once with ``activations="s8"``, once with ``"u8"``. Both files get the same weight
  bits (the kernel-drift check decides for each; the table shows them).
* Outputs: both files on 64 other N(0, 1) inputs, max |difference| of the outputs and argmax
  agreement. Random inputs say whether the two files compute the same function, not accuracy.
* Latency: one process, one thread each, the two sessions interleaved run by run (20 warm-up,
  ``--runs-per`` timed each), p10 and median; ratio s8 / u8 per model. Which ops ONNX Runtime left
  unfused (float ``Conv`` / ``Add`` between DequantizeLinear and QuantizeLinear) is read from its
  optimized graph.

    python bench/onnx_activations.py            # every run under bench/results/runs*
    python bench/onnx_activations.py --quick    # 2 per task
"""

from __future__ import annotations

import collections
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

FLOAT_OPS = ("Conv", "Add", "Gemm", "MatMul")


def models(roots: list[Path], per_task: int) -> list[tuple[str, Path]]:
    out = []
    for root in roots:
        for task in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
            found = sorted(task.glob("*/export/model.fp32.onnx"))[:per_task]
            out += [(task.name, f) for f in found]
    return out


def session(path: Path, optimized: Path | None = None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    if optimized is not None:
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def one(task: str, fp32: Path, runs: int, tmp: Path) -> dict[str, Any]:
    import numpy as np
    import onnx

    from edgenas.export.onnx_export import quantize_int8, read_metadata

    inp = onnx.load(str(fp32)).graph.input[0]
    shape = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((64, *shape[1:])).astype(np.float32)
    xs = rng.standard_normal((64, 1, *shape[1:])).astype(np.float32)
    files, sess, unfused, bits = {}, {}, {}, {}
    for act in ("s8", "u8"):
        files[act] = quantize_int8(fp32, tmp / f"{act}.onnx", calib, activations=act)
        bits[act] = read_metadata(files[act]).get("weight_bits")
        opt = tmp / f"{act}.opt.onnx"
        sess[act] = session(files[act], opt)
        ops = collections.Counter(n.op_type for n in onnx.load(str(opt)).graph.node)
        unfused[act] = {k: ops[k] for k in FLOAT_OPS if ops.get(k)}
    name = inp.name
    outs = {a: np.concatenate([s.run(None, {name: x})[0] for x in xs]) for a, s in sess.items()}
    diff = float(np.abs(outs["s8"] - outs["u8"]).max())
    agree = float((outs["s8"].argmax(-1) == outs["u8"].argmax(-1)).mean())
    x = xs[0]
    times: dict[str, list[float]] = {"s8": [], "u8": []}
    for i in range(20 + runs):
        for a in ("s8", "u8") if i % 2 else ("u8", "s8"):
            t0 = time.perf_counter()
            sess[a].run(None, {name: x})
            if i >= 20:
                times[a].append((time.perf_counter() - t0) * 1e3)
    stat = {a: {"p10": float(np.percentile(t, 10)), "median": statistics.median(t)} for a, t in times.items()}
    return {"task": task, "run": fp32.parent.parent.name, "weight_bits": bits, "unfused": unfused,
            "max_abs_diff": diff, "output_range": float(np.ptp(outs["s8"])), "argmax_agreement": agree,
            "ms": stat, "ratio_p10": stat["s8"]["p10"] / stat["u8"]["p10"],
            "ratio_median": stat["s8"]["median"] / stat["u8"]["median"]}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, action="append",
                   help="runs folder(s) (default: bench/results/runs and bench/results/runs-*)")
    p.add_argument("--per-task", type=int, default=8, help="models per task")
    p.add_argument("--runs-per", type=int, default=300, help="timed runs per file")
    a = p.parse_args()
    common.use_bench_dirs(a.out)
    roots = a.runs or sorted(common.DEFAULT_OUT.glob("runs*"))
    found = models(roots, 2 if a.quick else a.per_task)
    if not found:
        raise SystemExit(f"onnx_activations: no exported fp32 ONNX model under {', '.join(map(str, roots))}")
    rows = []
    for task, path in found:
        with tempfile.TemporaryDirectory() as td:
            r = one(task, path, a.runs_per, Path(td))
        rows.append(r)
        print(f"[onnx_activations] {task}/{r['run']}: s8/u8 p10 {r['ratio_p10']:.2f}×, max |diff| "
              f"{r['max_abs_diff']:.3g}", file=sys.stderr, flush=True)
    table = common.table(
        ["task", "run", "s8 ms p10", "u8 ms p10", "s8 ÷ u8 p10", "s8 ÷ u8 median", "unfused ops s8", "unfused u8",
         "weight bits s8/u8", "max |Δ out|", "argmax agree"],
        [[r["task"], r["run"], f"{r['ms']['s8']['p10']:.4f}", f"{r['ms']['u8']['p10']:.4f}", f"{r['ratio_p10']:.2f}×",
          f"{r['ratio_median']:.2f}×", ", ".join(f"{k} {v}" for k, v in r["unfused"]["s8"].items()) or "none",
          ", ".join(f"{k} {v}" for k, v in r["unfused"]["u8"].items()) or "none",
          f"{r['weight_bits']['s8']}/{r['weight_bits']['u8']}", f"{r['max_abs_diff']:.3g}",
          f"{100 * r['argmax_agreement']:.0f}%"] for r in rows])
    by_task = {t: [r["ratio_p10"] for r in rows if r["task"] == t] for t in dict.fromkeys(r["task"] for r in rows)}
    summary = "; ".join(f"{t}: {statistics.geometric_mean(v):.2f}× (n={len(v)}, {min(v):.2f}–{max(v):.2f})"
                        for t, v in by_task.items())
    md = ("# ONNX int8 activations, s8 or u8, on onnxruntime-cpu\n\n"
          "**Question:** on the networks edgenas exports, does quantizing the ONNX int8 file with u8 instead of s8 "
          "activations change what onnxruntime-cpu computes, and how fast it runs?\n\n"
          f"{common.cpu_model()}, {time.strftime('%Y-%m-%d %H:%M')}; one process, one thread, the two files "
          f"interleaved run by run, {a.runs_per} timed runs each. Calibration and test inputs N(0, 1), seed 0 (the "
          "same for both files). Unfused ops: float ops left in ONNX Runtime's optimized graph.\n\n"
          f"s8 ÷ u8 at p10, geometric mean per task: {summary}.\n\n" + table + "\n")
    common.write(a.out, "onnx_activations", {"question": md.split("**Question:** ")[1].split("\n")[0],
                                             "rows": rows}, md)


if __name__ == "__main__":
    main()
