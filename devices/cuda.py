"""The local CUDA GPU: PyTorch (TorchScript or an ``nn.Module``) or ONNX Runtime's CUDA provider.

The runtime is fixed per device (from its profile) so that ``runtime_version()`` — part of the
store key — always names what actually ran:

* ``runtime = "torch"`` (built-in ``cuda`` profile): artifacts are TorchScript files (``.pt``)
  written by :func:`save_torchscript`, which records the example input's shape and dtype inside
  the archive (TorchScript itself does not keep input shapes). :meth:`CudaDevice.measure_module`
  times a live ``(module, example_input)`` pair the same way. Each run is bracketed by CUDA
  events; all events are read after one ``torch.cuda.synchronize()``, so host-side timing noise
  and launch queueing do not enter the samples.
* ``runtime = "onnxruntime"``: ``.onnx`` artifacts through ``CUDAExecutionProvider``; needs the
  ``onnxruntime-gpu`` package (the pinned ``onnxruntime`` wheel is CPU-only). Samples are
  host wall time of ``session.run`` (synchronous), host↔device copies of the inputs included.

TorchScript is deprecated from torch 2.14 on (``torch.export`` / ``.pt2`` is its successor); it is
used here because a traced module is a self-contained file that loads without the model's Python
code. Moving to ``.pt2`` (``torch.export.save``/``load``) is the follow-up.

Why not ONNX on torch: there is no ONNX → PyTorch importer in the toolchain, and converting would
time a different graph than the one ONNX Runtime runs.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edgenas.devices.base import Measurement
from edgenas.devices.base import stable_samples, timed_best
from edgenas.devices.onnxruntime_cpu import cpu_identity, random_inputs
from edgenas.errors import DeviceError

INPUT_META = "edgenas_input.json"  # extra file in TorchScript archives written by save_torchscript
NO_GPU = "no CUDA GPU: torch.cuda.is_available() is False"


def _torch() -> Any:
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a core dependency
        raise DeviceError(f"torch is not installed ({e})") from None
    return torch


def save_torchscript(module: Any, example_input: Any, path: str | Path) -> Path:
    """Trace ``module`` on ``example_input`` and save it with the input's shape/dtype recorded."""
    torch = _torch()
    path = Path(path)
    module = module.eval()
    meta = {"shape": list(example_input.shape), "dtype": str(example_input.dtype).replace("torch.", "")}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 deprecates TorchScript (see module doc)
        traced = torch.jit.trace(module, example_input)
        torch.jit.save(traced, str(path), _extra_files={INPUT_META: json.dumps(meta)})
    return path


def load_torchscript(path: str | Path, device: str = "cuda") -> tuple[Any, dict[str, Any]]:
    """(scripted module on ``device``, input metadata) of a file written by :func:`save_torchscript`."""
    torch = _torch()
    path = Path(path)
    if not path.is_file():
        raise DeviceError(f"model file not found: {path}")
    extra = {INPUT_META: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DeviceError(f"cannot load TorchScript model {path}: {first}") from None
    if not extra[INPUT_META]:
        raise DeviceError(f"{path} does not record its input shape; save it with"
                          " edgenas.devices.cuda.save_torchscript(module, example_input, path)")
    meta = json.loads(extra[INPUT_META])
    return module.eval(), meta


class CudaDevice:
    """Latency on the local CUDA GPU (see the module docstring for the two runtimes)."""

    def __init__(self, name: str = "cuda", runtime: str = "torch", threads: int = 1, device_index: int = 0,
                 max_repeats: int = 2, spread_limit: float = 1.2) -> None:
        if runtime not in ("torch", "onnxruntime"):
            raise DeviceError(f"the cuda adapter runs 'torch' or 'onnxruntime', got {runtime!r}")
        if threads < 1:
            raise DeviceError(f"threads must be >= 1, got {threads}")
        self.name = name
        self.runtime = runtime
        self.artifact_format = "pt" if runtime == "torch" else "onnx"
        self.threads = int(threads)  # host threads (torch intra-op / ORT); kernels run on the GPU
        self.device_index = device_index
        self.max_repeats = max_repeats
        self.spread_limit = spread_limit

    # -- Device protocol -------------------------------------------------------------------

    def check(self) -> None:
        torch = _torch()
        if not torch.cuda.is_available():
            raise DeviceError(NO_GPU)
        if self.device_index >= torch.cuda.device_count():
            raise DeviceError(f"no CUDA GPU {self.device_index}: only {torch.cuda.device_count()} visible")
        if self.runtime == "onnxruntime":
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise DeviceError("onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu"
                                  " matching your CUDA), or use the torch runtime")

    def runtime_version(self) -> str:
        torch = _torch()
        if self.runtime == "torch":
            return f"torch {torch.__version__} cuda {torch.version.cuda}"
        import onnxruntime as ort

        return f"onnxruntime {ort.__version__} CUDAExecutionProvider"

    def info(self) -> dict[str, Any]:
        torch = _torch()
        out: dict[str, Any] = {
            "name": self.name, "adapter": "cuda", "runtime": self.runtime,
            "runtime_version": self.runtime_version(), "threads": self.threads,
            "artifact_format": self.artifact_format, "cuda_available": bool(torch.cuda.is_available()),
        }
        if out["cuda_available"]:
            out["identity"] = self.identity()
        return out

    def identity(self) -> dict[str, Any]:
        torch = _torch()
        ident = cpu_identity()
        props = torch.cuda.get_device_properties(self.device_index)
        ident.update({"gpu": props.name, "gpu_index": self.device_index,
                      "gpu_capability": f"{props.major}.{props.minor}",
                      "gpu_memory_mb": int(props.total_memory // (1 << 20)),
                      "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()})
        return ident

    def measure(self, artifact: str | Path, runs: int = 100, warmup: int = 10,
                threads: int | None = None) -> Measurement:
        if runs < 1:
            raise DeviceError(f"runs must be >= 1, got {runs}")
        path = Path(artifact)
        suffix = path.suffix.lower()
        if self.runtime == "torch" and suffix == ".onnx":
            raise DeviceError(f"device {self.name} runs TorchScript (.pt) on torch; for {path.name} use a cuda"
                              ' profile with runtime = "onnxruntime" (needs onnxruntime-gpu)')
        if self.runtime == "onnxruntime" and suffix != ".onnx":
            raise DeviceError(f"device {self.name} runs .onnx models via onnxruntime, got {path.name}")
        self.check()
        threads = int(threads or self.threads)
        if self.runtime == "torch":
            torch = _torch()
            module, meta = load_torchscript(path, f"cuda:{self.device_index}")
            dtype = getattr(torch, meta.get("dtype", "float32"))
            x = torch.randn(meta["shape"], device=f"cuda:{self.device_index}").to(dtype)
            return self._measure_torch(module, x, runs, warmup, threads)
        return self._measure_ort(path, runs, warmup, threads)

    def measure_module(self, module: Any, example_input: Any, runs: int = 100, warmup: int = 10,
                       threads: int | None = None) -> Measurement:
        """Time a live ``nn.Module`` on ``example_input`` (both moved to the GPU) with CUDA events."""
        self.check()
        dev = f"cuda:{self.device_index}"
        return self._measure_torch(module.eval().to(dev), example_input.to(dev), runs, warmup,
                                   int(threads or self.threads))

    # -- timing ----------------------------------------------------------------------------

    def _measure_torch(self, module: Any, x: Any, runs: int, warmup: int, threads: int) -> Measurement:
        torch = _torch()
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.inference_mode(), torch.cuda.device(self.device_index):
                try:
                    for _ in range(max(1, warmup)):
                        module(x)
                    torch.cuda.synchronize()
                    best = stable_samples(lambda: self._cuda_events(module, x, runs), self.max_repeats,
                                          self.spread_limit)
                except DeviceError:
                    raise
                except Exception as e:
                    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    raise DeviceError(f"running the model on {self.name} failed: {first}") from None
        finally:
            torch.set_num_threads(previous)
        return Measurement.from_samples(
            best, warmup=warmup, runs=runs, threads=threads, runtime=self.runtime,
            runtime_version=self.runtime_version(), device=self.name, device_identity=self.identity(),
        )

    @staticmethod
    def _cuda_events(module: Any, x: Any, runs: int) -> list[float]:
        torch = _torch()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
        for s, e in zip(starts, ends):
            s.record()
            module(x)
            e.record()
        torch.cuda.synchronize()
        return [float(s.elapsed_time(e)) for s, e in zip(starts, ends)]

    def _measure_ort(self, path: Path, runs: int, warmup: int, threads: int) -> Measurement:
        import onnxruntime as ort

        if not path.is_file():
            raise DeviceError(f"model file not found: {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            sess = ort.InferenceSession(str(path), sess_options=opts, providers=[
                ("CUDAExecutionProvider", {"device_id": self.device_index})])
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DeviceError(f"cannot load model {path}: {first}") from None
        if "CUDAExecutionProvider" not in sess.get_providers():
            raise DeviceError(f"onnxruntime did not place {path.name} on the GPU (providers {sess.get_providers()})")
        feeds: dict[str, np.ndarray] = random_inputs(sess)
        try:
            for _ in range(max(1, warmup)):
                sess.run(None, feeds)
            samples = timed_best(lambda: sess.run(None, feeds), runs, self.max_repeats, self.spread_limit)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DeviceError(f"running model {path} failed: {first}") from None
        return Measurement.from_samples(
            samples, warmup=warmup, runs=runs, threads=threads, runtime=self.runtime,
            runtime_version=self.runtime_version(), device=self.name, device_identity=self.identity(),
        )

    def __repr__(self) -> str:
        return f"CudaDevice(name={self.name!r}, runtime={self.runtime!r}, index={self.device_index})"

