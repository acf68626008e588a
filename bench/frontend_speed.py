"""How fast is each MFCC front-end implementation vs today's ("stft") and vs the int8 DS-CNN-S classifier behind it, at the standard configuration?

The standard data configuration is the default :class:`edgenas.spec.DataConfig` at 8 kHz and at
16 kHz (n_mfcc 10, n_mels 40, 40 ms window / 20 ms hop, 1 s clips: the kws space's
``space.n_mfcc=10 space.windows=40/20``, as in ``bench/search_quality.py``). For each rate it
exports every front-end implementation of :mod:`edgenas.export.frontend` (ONNX and TFLite) and the
DS-CNN-S classifier (Hello Edge: 64 channels, 10×4 stride-2 stem, four dw3x3 blocks; random
weights, calibrated on MFCC features of real clips) as ONNX int8 QDQ and TFLite full int8 with the
project's exporters, then times all files **in one process, interleaved**: every round calls each
loaded model once, in a shuffled order, each call timed on its own (``perf_counter``); several
sessions / interpreters per file (``--sessions``) are pooled (medians and p90 are over all calls),
because on a shared VM one session of a model can sit at another speed than the next. ONNX Runtime: ``InferenceSession``
(``intra_op_num_threads=1``, sequential, all graph optimisations), timed ``run``; LiteRT:
``ai_edge_litert`` ``Interpreter(num_threads=1)`` (XNNPACK by default), timed ``invoke`` (the
input is set before, as the device adapters do). The input is a real clip (FSDD at 8 kHz,
Speech Commands at 16 kHz).

Reported per file: median and p90 (ms), ``stft / impl`` (speed-up over today's front end) and
``impl / classifier`` (front-end cost in classifier units), each a ratio of medians with a 95%
interval from a bootstrap over rounds (rounds resampled with replacement, so the pairing of calls
in one round is kept), peak activation bytes (``onnx_memory_report`` / ``verify_tflite``, the
number that enters the RAM budget), file size (flash) and the features' max |diff| against
``edgenas.datasets.features.mfcc``. Interleaving makes a load burst hit every file alike, so the
ratios are sturdier than the absolute times on a busy machine. It also means every call finds the
caches full of the other models' data, as a front end does on a board between audio windows:
small, overhead-bound models (the classifier) pay relatively more for that than big ones.

    python bench/frontend_speed.py [--quick] [--rounds 500] [--sessions 3]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

RATES = (8000, 16000)
CLIPS = {8000: ("fsdd", "recordings/*.wav"), 16000: ("speech_commands_v0.01_subset", "*/*.wav")}
RUNTIMES = {"onnx": "onnxruntime-cpu", "tflite": "litert-cpu"}
CLASSIFIER = "DS-CNN-S int8"
BOOT = 2000


def _clips(data_root: Path, rate: int, cfg: Any, n: int) -> np.ndarray:
    """``n`` real clips at ``rate`` as [n, clip_samples] (noise if the shared data is missing)."""
    from edgenas.datasets.audio import fit_length, load_audio

    folder, pattern = CLIPS[rate]
    files = sorted((data_root / folder).glob(pattern))
    if not files:
        print(f"no clips under {data_root / folder}; timing on noise", file=sys.stderr)
        return (np.random.default_rng(0).standard_normal((n, cfg.clip_samples)) * 0.1).astype(np.float32)
    pick = files[:: max(1, len(files) // n)][:n]
    return np.stack([fit_length(load_audio(f, rate), cfg.clip_samples) for f in pick]).astype(np.float32)


def _classifier(rate: int, calib: np.ndarray, out: Path, formats: list[str]) -> dict[str, Path]:
    """DS-CNN-S of the kws space at ``rate`` (random weights), as ONNX int8 QDQ and TFLite full int8."""
    import torch

    from edgenas.export.onnx_export import QUANT_INT8, export_onnx_fp32, model_metadata, quantize_int8
    from edgenas.export.tflite_export import export_tflite
    from edgenas.spaces.kws_dscnn import KWSDSCNNSpace, KWSSpaceConfig

    space = KWSDSCNNSpace(12, KWSSpaceConfig(sample_rates=(rate,), n_mfcc=(10,), windows=("40/20",), widths=(64,),
                                             stem_kernels=("10x4",), n_blocks=4, block_ops=("dw3x3",)))
    spec = space.spec({p.name: p.options[0] for p in space.choice_points()})
    torch.manual_seed(0)
    model = space.build(spec).eval()
    shape = (1, 1, *spec.data.feature_shape)
    files = {}
    if "onnx" in formats:
        fp32 = export_onnx_fp32(model, shape, out / "dscnn_s.fp32.onnx", model_metadata(spec), dynamic_batch=False)
        files["onnx"] = quantize_int8(fp32, out / "dscnn_s.int8.onnx", calib, model_metadata(spec, QUANT_INT8))
    if "tflite" in formats:
        files["tflite"] = export_tflite(model, shape, out / "dscnn_s.int8.tflite", quant="int8", calibration=calib,
                                        metadata=model_metadata(spec, "tflite-int8-full-integer"))
    return files


def _memory(path: Path) -> int:
    if path.suffix == ".tflite":
        from edgenas.export.tflite_export import verify_tflite

        return int(verify_tflite(path)["peak_activation_bytes"])
    from edgenas.export.graph_memory import onnx_memory_report

    return int(onnx_memory_report(path)["peak_activation_bytes"])


def _callers(path: Path, fmt: str, x: np.ndarray, sessions: int) -> list[Callable[[], float]]:
    """``sessions`` loaded copies of ``path``, each a function that runs one call and returns its ms."""
    calls: list[Callable[[], float]] = []
    for _ in range(sessions):
        if fmt == "onnx":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.log_severity_level = 3
            sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
            inp = sess.get_inputs()[0]
            feed = {inp.name: _input_like(x, inp.shape, inp.type)}

            def call(sess: Any = sess, feed: dict = feed) -> float:
                t = time.perf_counter()
                sess.run(None, feed)
                return (time.perf_counter() - t) * 1e3
        else:
            from ai_edge_litert.interpreter import Interpreter

            interp = Interpreter(model_path=str(path), num_threads=1)
            interp.allocate_tensors()
            d = interp.get_input_details()[0]
            interp.set_tensor(d["index"], _input_like(x, list(d["shape"]), str(d["dtype"])))
            invoke = interp.invoke

            def call(invoke: Callable[[], None] = invoke) -> float:
                t = time.perf_counter()
                invoke()
                return (time.perf_counter() - t) * 1e3
        calls.append(call)
    return calls


def _input_like(x: np.ndarray, shape: Any, dtype: str) -> np.ndarray:
    """The clip for a front end; for a classifier an input of its shape and type (values are irrelevant)."""
    shape = [int(s) for s in shape]
    if int(np.prod(shape)) == x.size and "uint8" in dtype:  # an image front end (bench/image_frontend_speed.py)
        return x.reshape(shape).astype(np.uint8)
    if int(np.prod(shape)) == x.size and "int" not in dtype:
        return x.reshape(shape).astype(np.float32)
    rng = np.random.default_rng(0)
    if "int8" in dtype:
        return rng.integers(-128, 128, shape).astype(np.int8)
    return rng.standard_normal(shape).astype(np.float32)


def _ratio_ci(num: np.ndarray, den: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float]:
    """median(num) / median(den) of two [rounds, calls] sample arrays and its 95% bootstrap interval:
    rounds are resampled with replacement, the same rounds for both (paired)."""
    n = min(len(num), len(den))
    num, den = num[:n], den[:n]
    idx = rng.integers(0, n, (BOOT, n))
    r = (np.median(num[idx].reshape(BOOT, -1), axis=1) / np.median(den[idx].reshape(BOOT, -1), axis=1))
    lo, hi = np.percentile(r, [2.5, 97.5])
    return float(np.median(num) / np.median(den)), float(lo), float(hi)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 500, --quick 100)")
    p.add_argument("--sessions", type=int, default=3, help="sessions / interpreters per file, pooled (default 3)")
    p.add_argument("--warmup", type=int, default=30, help="untimed calls per session first (default 30)")
    p.add_argument("--rates", type=int, nargs="+", default=list(RATES), help="sample rates (default 8000 16000)")
    p.add_argument("--formats", nargs="+", default=list(RUNTIMES), choices=list(RUNTIMES),
                   help="front-end formats to time (default onnx tflite: both runtimes interleaved together)")
    a = p.parse_args()
    rounds = a.rounds or (100 if a.quick else 500)
    # a subset or a quick run writes frontend_speed.<tag>.*, so the full run's files stay
    tags = ([] if sorted(a.formats) == sorted(RUNTIMES) else a.formats) + \
        ([] if sorted(a.rates) == sorted(RATES) else [f"{r // 1000}k" for r in a.rates]) + (["quick"] if a.quick else [])
    out_name = ".".join(["frontend_speed", *tags])
    common.use_bench_dirs(a.out)

    import torch

    from edgenas.datasets.features import mfcc
    from edgenas.export.frontend import (DEFAULT_IMPL, IMPLS, export_frontend_onnx, export_frontend_tflite,
                                         read_frontend_metadata, run_frontend)
    from edgenas.spec import DataConfig

    work = a.out / "cache" / "frontend_speed"
    entries: list[dict[str, Any]] = []  # one per file
    load_before = os.getloadavg()
    for rate in a.rates:
        cfg = DataConfig(sample_rate=rate)
        d = work / cfg.key()
        d.mkdir(parents=True, exist_ok=True)
        clips = _clips(a.data_root, rate, cfg, 32)
        with torch.no_grad():
            feats = mfcc(torch.from_numpy(clips), cfg).numpy()[:, None]
        span = float(feats.max() - feats.min())
        for fmt, export in (("onnx", export_frontend_onnx), ("tflite", export_frontend_tflite)):
            if fmt not in a.formats:
                continue
            for impl in IMPLS[fmt]:
                path = export(cfg, d / f"frontend.{impl}.{fmt}", impl=impl)
                assert read_frontend_metadata(path)["frontend_impl"] == impl
                diff = float(np.abs(run_frontend(path, clips) - feats).max())
                entries.append({"rate": rate, "fmt": fmt, "runtime": RUNTIMES[fmt], "name": impl, "kind": "frontend",
                                "default": impl == DEFAULT_IMPL[fmt], "path": path, "max_abs_diff": diff,
                                "feature_range": span})
        for fmt, path in _classifier(rate, feats, d, a.formats).items():
            entries.append({"rate": rate, "fmt": fmt, "runtime": RUNTIMES[fmt], "name": CLASSIFIER,
                            "kind": "classifier", "default": False, "path": path})
        for e in entries:
            if e["rate"] == rate:
                e["clip"] = clips[0:1]
        print(f"{cfg.key()}: exported {sum(e['rate'] == rate for e in entries)} files", file=sys.stderr, flush=True)

    callers: list[tuple[int, Callable[[], float]]] = []
    for i, e in enumerate(entries):
        e["peak_activation_bytes"] = _memory(e["path"])
        e["file_bytes"] = e["path"].stat().st_size
        for c in _callers(e["path"], e["fmt"], e.pop("clip"), a.sessions):
            for _ in range(a.warmup):
                c()
            callers.append((i, c))
    samples: list[list[list[float]]] = [[] for _ in entries]  # [file][round][call of a session]
    rng = np.random.default_rng(0)
    t0 = time.time()
    for r in range(rounds):
        for s in samples:
            s.append([])
        for k in rng.permutation(len(callers)):
            i, c = callers[k]
            samples[i][-1].append(c())
        if r and r % 100 == 0:
            print(f"  round {r}/{rounds} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    load_after = os.getloadavg()

    arrays = [np.asarray(s) for s in samples]
    results, rows = [], []
    for i, e in enumerate(entries):
        same = [j for j, o in enumerate(entries) if o["rate"] == e["rate"] and o["fmt"] == e["fmt"]]
        base = next(j for j in same if entries[j]["name"] == "stft")
        cls = next(j for j in same if entries[j]["kind"] == "classifier")
        x = arrays[i]
        res = {k: v for k, v in e.items() if k != "path"}
        res.update(file=str(e["path"].relative_to(a.out)) if e["path"].is_relative_to(a.out) else str(e["path"]),
                   median_ms=float(np.median(x)), p90_ms=float(np.percentile(x, 90)), rounds=len(x),
                   calls=int(x.size), samples_ms=np.round(x, 5).tolist())
        if e["kind"] == "frontend":
            res["stft_over_impl"] = _ratio_ci(arrays[base], x, rng)
            res["impl_over_classifier"] = _ratio_ci(x, arrays[cls], rng)
        results.append(res)

    def ci(t: tuple[float, float, float] | None) -> str:
        return "–" if t is None else f"{t[0]:.2f} [{t[1]:.2f}, {t[2]:.2f}]"

    for r in results:
        label = f"**{r['name']}** (default)" if r["default"] else r["name"]
        rows.append([r["runtime"], f"{r['rate'] // 1000} kHz", label, f"{r['median_ms']:.4f}", f"{r['p90_ms']:.4f}",
                     ci(r.get("stft_over_impl")), ci(r.get("impl_over_classifier")),
                     f"{r['peak_activation_bytes'] / 1024:.1f}", f"{r['file_bytes'] / 1024:.1f}",
                     "–" if "max_abs_diff" not in r else f"{r['max_abs_diff']:.1e} / {r['feature_range']:.0f}"])
    fastest = {}
    for r in results:
        if r["kind"] == "frontend":
            key = (r["runtime"], r["rate"])
            if key not in fastest or r["median_ms"] < fastest[key][1]:
                fastest[key] = (r["name"], r["median_ms"])
    md = [f"## MFCC front end: implementations vs today's (stft) and vs the int8 DS-CNN-S classifier\n",
          f"{rounds} interleaved rounds × {a.sessions} sessions per file, 1 thread, one process; "
          f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} CPUs, "
          f"{common.cpu_model()}). Ratios are ratios of medians with 95% bootstrap intervals over rounds. "
          f"Peak = peak activation memory as the RAM budget counts it; file = flash. "
          f"max |diff| = features vs `datasets.features.mfcc` on 32 real clips / feature range.\n",
          common.table(["runtime", "rate", "file", "median ms", "p90 ms", "stft / impl", "impl / classifier",
                        "peak KB", "file KB", "max abs diff / range"], rows), "",
          "Fastest front end per runtime and rate: " + "; ".join(
              f"{rt} {rate // 1000} kHz: {n} ({ms:.4f} ms)" for (rt, rate), (n, ms) in sorted(fastest.items()))
          + f". DEFAULT_IMPL = {DEFAULT_IMPL}."]
    common.write(a.out, out_name, {"formats": a.formats, "rounds": rounds, "sessions": a.sessions, "warmup": a.warmup,
                                           "load_average_before": load_before, "load_average_after": load_after,
                                           "default_impl": DEFAULT_IMPL, "results": results}, "\n".join(md))
    plt = common.pyplot()
    if plt is not None:
        groups = sorted({(r["runtime"], r["rate"]) for r in results})
        fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3.6), squeeze=False)
        for ax, (rt, rate) in zip(axes[0], groups):
            rs = [r for r in results if r["runtime"] == rt and r["rate"] == rate]
            colours = ["tab:grey" if r["kind"] == "classifier" else "tab:green" if r["default"] else
                       "tab:red" if r["name"] == "stft" else "tab:blue" for r in rs]
            ax.bar(range(len(rs)), [r["median_ms"] for r in rs], color=colours,
                   yerr=[[0] * len(rs), [r["p90_ms"] - r["median_ms"] for r in rs]], capsize=2)
            ax.set_xticks(range(len(rs)), [r["name"].replace(" int8", "\nint8") for r in rs], rotation=60, fontsize=7)
            ax.set_title(f"{rt}, {rate // 1000} kHz", fontsize=8)
            ax.set_ylabel("median ms (bar to p90)", fontsize=7)
        fig.tight_layout()
        fig.savefig(a.out / f"{out_name}.png", dpi=120)


if __name__ == "__main__":
    main()
