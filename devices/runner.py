#!/usr/bin/env python3
"""edgenas board-side runner: time one model on this machine and print ONE JSON line.

Copied to the board by the SSH adapter (``edgenas.devices.ssh_board``) and run there as
``python3 runner.py MODEL --runs N --warmup W --threads T --format tflite|onnx``, or
``python3 runner.py --probe`` to describe the board. Dependencies: the standard library, numpy,
and whichever runtime exists: ``ai_edge_litert``, ``tflite_runtime`` or ``tensorflow.lite`` for
``.tflite``; ``onnxruntime`` for ``.onnx``. Python >= 3.7. It must not import edgenas.

Output (stdout, one line): ``{"ok": true, ...}`` or ``{"ok": false, "error": KIND, "message": …}``.
Exit codes: 0 ok · 2 bad arguments · 3 no runtime for this format (or numpy missing) ·
4 model cannot be loaded · 5 inference failed.

``EDGENAS_RUNNER_TEST_HANG=1`` in the environment makes a measurement hang after loading the
model (used by the tests to check the adapter's timeout; never set it otherwise).
"""

import argparse
import json
import os
import platform
import socket
import sys
import time

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_NO_RUNTIME = 3
EXIT_BAD_MODEL = 4
EXIT_RUN_FAILED = 5

# (module to import, distribution names for the version, family)
TFLITE_RUNTIMES = (
    ("ai_edge_litert", ("ai-edge-litert",), "litert"),
    ("tflite_runtime", ("tflite-runtime", "tflite_runtime"), "litert"),
    ("tensorflow", ("tensorflow", "tensorflow-cpu", "tensorflow-aarch64", "tf-nightly"), "litert"),
)
ONNX_RUNTIMES = (
    ("onnxruntime", ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"), "onnxruntime"),
)
FORMATS = {"tflite": TFLITE_RUNTIMES, "onnx": ONNX_RUNTIMES}


def emit(obj, code=EXIT_OK):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()
    sys.exit(code)


def fail(kind, message, code):
    emit({"ok": False, "error": kind, "message": message}, code)


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def identity():
    ident = {
        "hostname": socket.gethostname(),
        "machine": platform.machine(),
        "system": platform.system(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    cpu = platform.processor() or ""
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            cpu = value.strip()
            break
    ident["cpu"] = cpu
    base = "/sys/devices/system/cpu/cpu0/cpufreq/"
    governor = _read(base + "scaling_governor")
    if governor:
        ident["governor"] = governor
    for name, key in (("scaling_cur_freq", "cur_freq_khz"), ("scaling_max_freq", "max_freq_khz")):
        value = _read(base + name)
        if value and value.isdigit():
            ident[key] = int(value)
    temp = _read("/sys/class/thermal/thermal_zone0/temp")
    if temp and temp.lstrip("-").isdigit():
        ident["temp_c"] = int(temp) / 1000.0
    return ident


def _module_available(module):
    try:
        import importlib.util

        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _dist_version(names):
    try:
        from importlib import metadata
    except ImportError:  # Python 3.7
        return None
    for name in names:
        try:
            return metadata.version(name)
        except Exception:
            continue
    return None


def available_runtimes():
    """Runtime module → version, without importing the (slow) runtimes themselves."""
    out = {}
    for fmt, options in FORMATS.items():
        for module, dists, _ in options:
            if _module_available(module):
                out[module] = _dist_version(dists) or "unknown"
    return out


def pick_runtime(fmt):
    """(module name, version, family) of the first runtime for ``fmt`` that is installed."""
    for module, dists, family in FORMATS[fmt]:
        if _module_available(module):
            return module, _dist_version(dists) or "unknown", family
    return None


def probe():
    numpy_version = None
    if _module_available("numpy"):
        numpy_version = _dist_version(("numpy",)) or "unknown"
    runtimes = available_runtimes()
    formats = {}
    for fmt in FORMATS:
        picked = pick_runtime(fmt)
        if picked is not None and numpy_version:
            formats[fmt] = {"module": picked[0], "version": picked[1], "family": picked[2]}
    emit({"ok": True, "probe": True, "runtimes": runtimes, "numpy": numpy_version, "formats": formats,
          "identity": identity(), "executable": sys.executable})


def random_tensor(np, shape, dtype, rng):
    dt = np.dtype(dtype)
    if np.issubdtype(dt, np.floating):
        return rng.standard_normal(shape).astype(dt)
    if dt == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if dt in (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16)):
        info = np.iinfo(dt)
        return rng.integers(int(info.min), int(info.max) + 1, shape).astype(dt)
    return rng.integers(0, 8, shape).astype(dt)


def load_tflite(module, path, threads):
    if module == "ai_edge_litert":
        from ai_edge_litert.interpreter import Interpreter
    elif module == "tflite_runtime":
        from tflite_runtime.interpreter import Interpreter
    else:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    interp = Interpreter(model_path=path, num_threads=threads)
    for d in interp.get_input_details():
        sig = list(d.get("shape_signature", d["shape"]))
        if any(int(s) < 0 for s in sig):
            interp.resize_tensor_input(d["index"], [int(s) if s > 0 else 1 for s in sig])
    interp.allocate_tensors()
    return interp


def tflite_call(np, interp):
    rng = np.random.default_rng(0)
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], random_tensor(np, [int(s) for s in d["shape"]], d["dtype"], rng))
    return interp.invoke


ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16", "tensor(int32)": "int32",
    "tensor(int64)": "int64", "tensor(bool)": "bool",
}


def load_onnx(path, threads):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def onnx_call(np, sess):
    rng = np.random.default_rng(0)
    feeds = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        if inp.type not in ORT_TYPES:
            raise ValueError("unsupported input type %s for input %r" % (inp.type, inp.name))
        feeds[inp.name] = random_tensor(np, shape, ORT_TYPES[inp.type], rng)
    run = sess.run
    return lambda: run(None, feeds)


def spread(np, samples):
    s = sorted(samples)
    median = float(np.median(s))
    p90 = s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]
    return p90 / median if median > 0 else 1.0


def timed(call, runs):
    samples = []
    clock = time.perf_counter_ns
    for _ in range(runs):
        t0 = clock()
        call()
        samples.append((clock() - t0) / 1e6)
    return samples


def first_line(e):
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def measure(a):
    fmt = a.format or ("onnx" if a.model.endswith(".onnx") else "tflite")
    if fmt not in FORMATS:
        fail("bad_args", "unknown format %r (tflite or onnx)" % fmt, EXIT_USAGE)
    try:
        import numpy as np
    except ImportError:
        fail("no_runtime", "numpy is not installed for %s (pip install numpy)" % sys.executable, EXIT_NO_RUNTIME)
    picked = pick_runtime(fmt)
    if picked is None:
        wanted = " or ".join(m for m, _, _ in FORMATS[fmt])
        fail("no_runtime", "no runtime for %s models in %s (install %s)" % (fmt, sys.executable, wanted),
             EXIT_NO_RUNTIME)
    module, version, family = picked
    if not os.path.isfile(a.model):
        fail("bad_model", "model file not found: %s" % a.model, EXIT_BAD_MODEL)
    t_load = time.perf_counter()
    try:
        if fmt == "tflite":
            call = tflite_call(np, load_tflite(module, a.model, a.threads))
        else:
            call = onnx_call(np, load_onnx(a.model, a.threads))
    except ImportError as e:
        fail("no_runtime", "%s cannot be imported: %s" % (module, first_line(e)), EXIT_NO_RUNTIME)
    except Exception as e:
        fail("bad_model", "cannot load %s with %s: %s" % (a.model, module, first_line(e)), EXIT_BAD_MODEL)
    load_s = time.perf_counter() - t_load
    if os.environ.get("EDGENAS_RUNNER_TEST_HANG") == "1":
        time.sleep(3600)
    try:
        for _ in range(max(0, a.warmup)):
            call()
        best = timed(call, a.runs)
        for _ in range(a.max_repeats):
            if spread(np, best) <= a.spread_limit:
                break
            again = timed(call, a.runs)
            if spread(np, again) < spread(np, best):
                best = again
    except Exception as e:
        fail("run_failed", "inference failed with %s: %s" % (module, first_line(e)), EXIT_RUN_FAILED)
    emit({"ok": True, "samples_ms": best, "runtime": family, "runtime_module": module,
          "runtime_version": version, "threads": a.threads, "warmup": a.warmup, "runs": a.runs,
          "format": fmt, "load_s": load_s, "identity": identity()})


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        fail("bad_args", message, EXIT_USAGE)


def main(argv=None):
    p = _Parser(description="edgenas board-side runner")
    p.add_argument("model", nargs="?")
    p.add_argument("--probe", action="store_true", help="describe this board and its runtimes")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--format", choices=sorted(FORMATS))
    p.add_argument("--max-repeats", type=int, default=2)
    p.add_argument("--spread-limit", type=float, default=1.2)
    a = p.parse_args(argv)
    if a.probe:
        probe()
    if not a.model:
        fail("bad_args", "a model path is required (or --probe)", EXIT_USAGE)
    if a.runs < 1 or a.threads < 1:
        fail("bad_args", "runs and threads must be >= 1", EXIT_USAGE)
    measure(a)


if __name__ == "__main__":
    main()
