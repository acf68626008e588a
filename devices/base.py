"""The Device contract: measure an exported artifact on a runtime, say what the device is."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Measurement:
    """Latency of one artifact on one device, in milliseconds."""

    median_ms: float
    p90_ms: float
    samples_ms: tuple[float, ...]
    warmup: int
    runs: int
    threads: int
    runtime: str  # e.g. "onnxruntime"
    runtime_version: str
    device: str  # device profile name
    device_identity: dict[str, Any] = field(default_factory=dict)  # cpu model, host, governor …

    @classmethod
    def from_samples(cls, samples_ms: list[float], **kw: Any) -> "Measurement":
        s = sorted(samples_ms)
        p90 = s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]
        return cls(median_ms=statistics.median(s), p90_ms=p90, samples_ms=tuple(samples_ms), **kw)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["samples_ms"] = list(self.samples_ms)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Measurement":
        d = dict(d)
        d["samples_ms"] = tuple(d["samples_ms"])
        return cls(**d)


@runtime_checkable
class Device(Protocol):
    """What every adapter provides. ``artifact_format`` is the file format it runs ("onnx", "tflite")."""

    name: str
    artifact_format: str
    threads: int

    def measure(self, artifact: Path, runs: int = 100, warmup: int = 10, threads: int | None = None) -> Measurement: ...

    def info(self) -> dict[str, Any]: ...

    def runtime_version(self) -> str: ...

    def check(self) -> None:
        """Return if usable; raise ``DeviceError`` with a one-line reason otherwise."""
        ...
