"""LiteRT (TFLite) on the local CPU: ``ai_edge_litert.interpreter.Interpreter`` with XNNPACK.

The interpreter applies the XNNPACK delegate by default; the first ``invoke()`` pays for
delegate preparation and packing, so :meth:`LiteRTCPU.measure` always warms up before timing.
Inputs are random tensors of the input tensor's dtype (int8 models with int8 inputs get random
int8 values over the whole range). Like the ONNX Runtime adapter, a sample set whose p90 is more
than ``spread_limit`` × its median is measured again (at most ``max_repeats`` times) and the
tighter set is kept.

Needs the ``tflite`` extra (``pip install 'edgenas[tflite]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgenas.devices.base import Measurement
from edgenas.devices.base import LocalDevice, timed_best
from edgenas.errors import DeviceError


def _import_litert() -> Any:
    try:
        from ai_edge_litert import interpreter
    except ImportError as e:
        raise DeviceError(f"LiteRT is not installed ({e}); pip install 'edgenas[tflite]'") from None
    return interpreter


def litert_version() -> str:
    try:
        import ai_edge_litert
    except ImportError as e:
        raise DeviceError(f"LiteRT is not installed ({e}); pip install 'edgenas[tflite]'") from None
    version = getattr(ai_edge_litert, "__version__", None)
    if not version:
        from importlib.metadata import version as dist_version

        version = dist_version("ai-edge-litert")
    return str(version)


def random_tensor(shape: list[int] | tuple[int, ...], dtype: Any, rng: np.random.Generator) -> np.ndarray:
    """A random array of ``dtype``: normal floats, full-range small integers, random bools."""
    dt = np.dtype(dtype)
    if np.issubdtype(dt, np.floating):
        return rng.standard_normal(shape).astype(dt)
    if dt == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if dt in (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16)):
        info = np.iinfo(dt)
        return rng.integers(info.min, int(info.max) + 1, shape).astype(dt)
    return rng.integers(0, 8, shape).astype(dt)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class LiteRTCPU(LocalDevice):
    """Measures ``.tflite`` models with the LiteRT interpreter on the local CPU (XNNPACK)."""

    artifact_format = "tflite"
    runtime = "litert"
    adapter = "litert-cpu"

    def __init__(self, name: str = "litert-cpu", threads: int = 1, max_repeats: int = 2,
                 spread_limit: float = 1.2) -> None:
        super().__init__(name, threads, max_repeats, spread_limit)

    # -- Device protocol -------------------------------------------------------------------

    def check(self) -> None:
        _import_litert()

    def runtime_version(self) -> str:
        return litert_version()

    def info(self) -> dict[str, Any]:
        return {**super().info(), "delegate": "XNNPACK (default)"}

    def interpreter(self, artifact: str | Path, threads: int | None = None) -> Any:
        """An allocated interpreter for ``artifact`` (dynamic dims resized to 1)."""
        interp_mod = _import_litert()
        path = Path(artifact)
        if not path.is_file():
            raise DeviceError(f"model file not found: {path}")
        try:
            interp = interp_mod.Interpreter(model_path=str(path), num_threads=int(threads or self.threads))
            for d in interp.get_input_details():
                sig = list(d.get("shape_signature", d["shape"]))
                if any(int(s) < 0 for s in sig):
                    interp.resize_tensor_input(d["index"], [int(s) if s > 0 else 1 for s in sig])
            interp.allocate_tensors()
        except Exception as e:  # the interpreter raises ValueError/RuntimeError with long texts
            raise DeviceError(f"cannot load model {path}: {_first_line(e)}") from None
        return interp

    def measure(self, artifact: str | Path, runs: int = 100, warmup: int = 10,
                threads: int | None = None) -> Measurement:
        if runs < 1:
            raise DeviceError(f"runs must be >= 1, got {runs}")
        threads = int(threads or self.threads)
        interp = self.interpreter(artifact, threads)
        rng = np.random.default_rng(0)
        try:
            for d in interp.get_input_details():
                interp.set_tensor(d["index"], random_tensor([int(s) for s in d["shape"]], d["dtype"], rng))
            invoke = interp.invoke
            for _ in range(max(0, warmup)):
                invoke()
            samples = timed_best(invoke, runs, self.max_repeats, self.spread_limit)
        except DeviceError:
            raise
        except Exception as e:
            raise DeviceError(f"running model {artifact} failed: {_first_line(e)}") from None
        return Measurement.from_samples(
            samples, warmup=warmup, runs=runs, threads=threads, runtime=self.runtime,
            runtime_version=self.runtime_version(), device=self.name, device_identity=self.identity(),
        )

    def __repr__(self) -> str:
        return f"LiteRTCPU(name={self.name!r}, threads={self.threads})"
