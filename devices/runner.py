#!/usr/bin/env python3
"""edgenas board-side runner: time models on this machine, print JSON lines.

Copied to the board by the SSH adapter (``edgenas.devices.ssh_board``) and run there in one of
three modes. Dependencies: the standard library, numpy, and whichever runtime exists:
``ai_edge_litert``, ``tflite_runtime`` or ``tensorflow.lite`` for ``.tflite``; ``onnxruntime`` for
``.onnx``. Python >= 3.7. It must not import edgenas.

Single model: ``python3 runner.py MODEL --runs N --warmup W --threads T --format tflite|onnx``
prints ONE line, ``{"ok": true, "samples_ms": [...], "runtime": ..., "identity": {...}, ...}`` or
``{"ok": false, "error": KIND, "message": ...}``.

Probe: ``python3 runner.py --probe`` describes the board (python, numpy, runtimes, identity).

Batch: ``python3 runner.py --batch MANIFEST`` (``-`` reads the manifest from stdin) loads the
runtime once and measures many models in order. The manifest is one JSON object::

    {"format": "onnx", "models": ["/path/a.onnx", "/path/b.onnx"], "runs": 100, "warmup": 10,
     "threads": 1, "max_repeats": 2, "spread_limit": 1.2, "model_timeout_s": 300}

(only ``format`` and ``models`` are required; ``model_timeout_s`` arms a watchdog per model).
Output, one JSON line per event, flushed as it happens so that a batch killed midway still
delivered the models it finished:

* per model, in manifest order: the single-mode result plus ``"index"`` and ``"model"``, or
  ``{"index": I, "model": PATH, "ok": false, "error": "bad_model"|"run_failed", "message": ...}``;
  a model that fails does not stop the batch;
* at the end: ``{"summary": true, "ok": true, "count": N, "done": K, "failed": F, "elapsed_s": S}``
  (exit 0, also when some models failed: their lines say why);
* or a batch-level failure, which ends the batch: ``{"ok": false, "error": KIND, "message": ...}``
  with the exit codes below, and for the watchdog ``{"ok": false, "error": "timeout", "at": I,
  "model": PATH, "message": ...}`` with exit 124 (the exit status of coreutils ``timeout``).

Exit codes: 0 ok · 2 bad arguments or manifest · 3 no runtime for this format (or numpy missing) ·
4 model cannot be loaded · 5 inference failed · 124 a batch model ran over ``model_timeout_s``.

Test hooks (used by the tests to check the adapter; never set them otherwise), each taking effect
after a model is loaded: ``EDGENAS_RUNNER_TEST_HANG=1`` hangs on every model;
``EDGENAS_RUNNER_TEST_HANG_AT=I`` hangs on the model at batch index I;
``EDGENAS_RUNNER_TEST_CRASH_AT=I`` kills the runner with SIGSEGV at batch index I.
"""

import argparse
import json
import os
import platform
import signal
import socket
import sys
import threading
import time

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_NO_RUNTIME = 3
EXIT_BAD_MODEL = 4
EXIT_RUN_FAILED = 5
EXIT_TIMEOUT = 124

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


_write_lock = threading.Lock()


def write_line(obj, wait_s=None):
    """Print ``obj`` as one JSON line and flush it (thread-safe: the watchdog writes too)."""
    text = json.dumps(obj, sort_keys=True) + "\n"
    locked = _write_lock.acquire() if wait_s is None else _write_lock.acquire(True, wait_s)
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    finally:
        if locked:
            _write_lock.release()


def emit(obj, code=EXIT_OK):
    write_line(obj)
    sys.exit(code)


class RunnerError(Exception):
    """A failure with its JSON ``error`` kind and the exit code single mode ends with."""

    def __init__(self, kind, message, code):
        Exception.__init__(self, message)
        self.kind = kind
        self.message = message
        self.code = code


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


def stable_samples(np, take, max_repeats, spread_limit, rounds=2):
    """The protocol of edgenas.devices.base.stable_samples (this script stays standalone): at least
    ``rounds`` sets, up to ``max_repeats`` more while no set has p90 <= ``spread_limit`` x median;
    keep the lowest-median tight set, else the tightest."""
    sets = [take() for _ in range(max(1, rounds))]
    for _ in range(max_repeats):
        if any(spread(np, s) <= spread_limit for s in sets):
            break
        sets.append(take())
    tight = [s for s in sets if spread(np, s) <= spread_limit]
    if tight:
        return min(tight, key=lambda s: float(np.median(s)))
    return min(sets, key=lambda s: spread(np, s))


def first_line(e):
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def resolve_runtime(fmt):
    """(numpy module, (runtime module, version, family)) for ``fmt``; RunnerError if unusable."""
    if fmt not in FORMATS:
        raise RunnerError("bad_args", "unknown format %r (tflite or onnx)" % (fmt,), EXIT_USAGE)
    try:
        import numpy as np
    except ImportError:
        raise RunnerError("no_runtime", "numpy is not installed for %s (pip install numpy)" % sys.executable,
                          EXIT_NO_RUNTIME)
    picked = pick_runtime(fmt)
    if picked is None:
        wanted = " or ".join(m for m, _, _ in FORMATS[fmt])
        raise RunnerError("no_runtime", "no runtime for %s models in %s (install %s)" % (fmt, sys.executable, wanted),
                          EXIT_NO_RUNTIME)
    return np, picked


def _test_hooks(index):
    """The tests' fault injection (see the module docstring); a no-op unless those variables are set."""
    env = os.environ
    if env.get("EDGENAS_RUNNER_TEST_CRASH_AT") == str(index):
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGSEGV)
    if env.get("EDGENAS_RUNNER_TEST_HANG") == "1" or env.get("EDGENAS_RUNNER_TEST_HANG_AT") == str(index):
        time.sleep(3600)


def measure_model(np, picked, fmt, path, runs, warmup, threads, max_repeats, spread_limit, index=0):
    """Load ``path`` with the picked runtime and time it: the result dict (single-mode output).

    Raises RunnerError: ``bad_model`` (missing or unloadable file), ``no_runtime`` (the runtime
    fails to import), ``run_failed`` (inference raised). Shared by single and batch mode."""
    module, version, family = picked
    if not os.path.isfile(path):
        raise RunnerError("bad_model", "model file not found: %s" % path, EXIT_BAD_MODEL)
    t_load = time.perf_counter()
    try:
        if fmt == "tflite":
            call = tflite_call(np, load_tflite(module, path, threads))
        else:
            call = onnx_call(np, load_onnx(path, threads))
    except ImportError as e:
        raise RunnerError("no_runtime", "%s cannot be imported: %s" % (module, first_line(e)), EXIT_NO_RUNTIME)
    except Exception as e:
        raise RunnerError("bad_model", "cannot load %s with %s: %s" % (path, module, first_line(e)), EXIT_BAD_MODEL)
    load_s = time.perf_counter() - t_load
    _test_hooks(index)
    try:
        for _ in range(max(0, warmup)):
            call()
        best = stable_samples(np, lambda: timed(call, runs), max_repeats, spread_limit)
    except Exception as e:
        raise RunnerError("run_failed", "inference failed with %s: %s" % (module, first_line(e)), EXIT_RUN_FAILED)
    return {"ok": True, "samples_ms": best, "runtime": family, "runtime_module": module,
            "runtime_version": version, "threads": threads, "warmup": warmup, "runs": runs,
            "format": fmt, "load_s": load_s, "identity": identity()}


def measure(a):
    """Single mode: one model, one line, exit code by outcome."""
    fmt = a.format or ("onnx" if a.model.endswith(".onnx") else "tflite")
    try:
        np, picked = resolve_runtime(fmt)
        result = measure_model(np, picked, fmt, a.model, a.runs, a.warmup, a.threads, a.max_repeats,
                               a.spread_limit)
    except RunnerError as e:
        fail(e.kind, e.message, e.code)
    emit(result)


class Watchdog(object):
    """Ends the process (exit 124, after a ``timeout`` line) when one armed model runs too long.

    A thread, so it also fires while the main thread is blocked in a runtime call that releases
    the GIL (ONNX Runtime and the TFLite interpreter do); the adapter's ``timeout`` wraps the whole
    batch for anything else."""

    def __init__(self, limit_s):
        self.limit_s = float(limit_s)
        self._cond = threading.Condition()
        self._deadline = None
        self._what = (None, None)
        thread = threading.Thread(target=self._watch, name="edgenas-watchdog")
        thread.daemon = True
        thread.start()

    def arm(self, index, path):
        with self._cond:
            self._deadline = time.monotonic() + self.limit_s
            self._what = (index, path)
            self._cond.notify()

    def disarm(self):
        with self._cond:
            self._deadline = None
            self._cond.notify()

    def _watch(self):
        with self._cond:
            while True:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            index, path = self._what
        write_line({"ok": False, "error": "timeout", "at": index, "model": path,
                    "message": "model %d (%s) did not finish within %g s" % (index, path, self.limit_s)}, wait_s=1.0)
        os._exit(EXIT_TIMEOUT)


def read_manifest(source):
    """The batch manifest from a file, or from stdin for ``-``; RunnerError(bad_args) if malformed."""
    try:
        if source == "-":
            text = sys.stdin.read()
        else:
            with open(source) as f:
                text = f.read()
        m = json.loads(text)
    except (OSError, ValueError) as e:
        raise RunnerError("bad_args", "cannot read manifest %s: %s" % (source, first_line(e)), EXIT_USAGE)
    if not isinstance(m, dict):
        raise RunnerError("bad_args", "manifest must be a JSON object", EXIT_USAGE)
    models = m.get("models")
    if not isinstance(models, list) or not all(isinstance(p, str) for p in models):
        raise RunnerError("bad_args", "manifest needs \"models\": a list of model paths", EXIT_USAGE)
    try:
        out = {
            "format": m.get("format"), "models": models, "runs": int(m.get("runs", 100)),
            "warmup": int(m.get("warmup", 10)), "threads": int(m.get("threads", 1)),
            "max_repeats": int(m.get("max_repeats", 2)), "spread_limit": float(m.get("spread_limit", 1.2)),
            "model_timeout_s": None if m.get("model_timeout_s") is None else float(m["model_timeout_s"]),
        }
    except (TypeError, ValueError) as e:
        raise RunnerError("bad_args", "bad manifest value: %s" % first_line(e), EXIT_USAGE)
    if out["runs"] < 1 or out["threads"] < 1:
        raise RunnerError("bad_args", "runs and threads must be >= 1", EXIT_USAGE)
    if out["model_timeout_s"] is not None and out["model_timeout_s"] <= 0:
        raise RunnerError("bad_args", "model_timeout_s must be > 0", EXIT_USAGE)
    return out


def batch(source):
    """Batch mode: the runtime is imported once; one line per model as it finishes, then a summary."""
    t0 = time.perf_counter()
    try:
        m = read_manifest(source)
        fmt = m["format"]
        np, picked = resolve_runtime(fmt)
    except RunnerError as e:
        fail(e.kind, e.message, e.code)
    watchdog = Watchdog(m["model_timeout_s"]) if m["model_timeout_s"] else None
    done = failed = 0
    for index, path in enumerate(m["models"]):
        if watchdog is not None:
            watchdog.arm(index, path)
        try:
            result = measure_model(np, picked, fmt, path, m["runs"], m["warmup"], m["threads"], m["max_repeats"],
                                   m["spread_limit"], index=index)
        except RunnerError as e:
            if e.code == EXIT_NO_RUNTIME:  # the runtime itself is broken: every model would fail
                fail(e.kind, e.message, e.code)
            result = {"ok": False, "error": e.kind, "message": e.message}
        if watchdog is not None:
            watchdog.disarm()
        result["index"] = index
        result["model"] = path
        write_line(result)
        if result["ok"]:
            done += 1
        else:
            failed += 1
    emit({"summary": True, "ok": True, "count": len(m["models"]), "done": done, "failed": failed,
          "elapsed_s": time.perf_counter() - t0})


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        fail("bad_args", message, EXIT_USAGE)


def main(argv=None):
    try:  # a runtime that crashes the process leaves "Fatal Python error: …" on stderr for the adapter
        import faulthandler

        faulthandler.enable()
    except Exception:
        pass
    p = _Parser(description="edgenas board-side runner")
    p.add_argument("model", nargs="?")
    p.add_argument("--probe", action="store_true", help="describe this board and its runtimes")
    p.add_argument("--batch", metavar="MANIFEST", help="measure the models of a JSON manifest ('-': stdin)")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--format", choices=sorted(FORMATS))
    p.add_argument("--max-repeats", type=int, default=2)
    p.add_argument("--spread-limit", type=float, default=1.2)
    a = p.parse_args(argv)
    if a.probe:
        probe()
    if a.batch:
        batch(a.batch)
    if not a.model:
        fail("bad_args", "a model path is required (or --probe)", EXIT_USAGE)
    if a.runs < 1 or a.threads < 1:
        fail("bad_args", "runs and threads must be >= 1", EXIT_USAGE)
    measure(a)


if __name__ == "__main__":
    main()
