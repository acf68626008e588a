"""The Device contract: measure an exported artifact on a runtime, say what the device is."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from edgenas.errors import DeviceError


STATS = ("median", "p25", "p10")


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

    def stat(self, name: str = "median") -> float:
        """The latency statistic ``name`` (:data:`STATS`): the median (the default everywhere), or a
        low percentile — on a shared host, interference only ever adds time, so p10/p25 are far more
        repeatable than the median (see the calibration notes in README)."""
        if name == "median":
            return self.median_ms
        if name not in STATS:
            raise ValueError(f"unknown latency statistic {name!r} (known: {', '.join(STATS)})")
        s = sorted(self.samples_ms)
        return s[min(len(s) - 1, int(round(int(name[1:]) / 100 * (len(s) - 1))))]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["samples_ms"] = list(self.samples_ms)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Measurement":
        d = dict(d)
        d["samples_ms"] = tuple(d["samples_ms"])
        return cls(**d)


def pooled(ms: Sequence[Measurement]) -> Measurement:
    """One measurement from several loads of the same file: samples pooled, runs summed.

    On a shared VM a model's steady-state latency depends on the load (the runtime session): the
    medians of three loads of one file differed by more than 10% for 63% of 821 LiteRT and 85% of
    945 ONNX Runtime networks here, so one load is a draw from that spread, not the model's figure."""
    from dataclasses import replace

    if not ms:
        raise ValueError("no measurements to pool")
    first = ms[0]
    out = Measurement.from_samples([x for m in ms for x in m.samples_ms], warmup=first.warmup,
                                   runs=sum(m.runs for m in ms), threads=first.threads, runtime=first.runtime,
                                   runtime_version=first.runtime_version, device=first.device,
                                   device_identity=first.device_identity)
    return replace(out, device_identity={**first.device_identity, "passes": len(ms)})


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


def spread(samples: list[float]) -> float:
    """p90 / median of a sample list (same percentile rule as Measurement.from_samples)."""
    s = sorted(samples)
    median = statistics.median(s)
    p90 = s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]
    return p90 / median if median > 0 else 1.0


def stable_samples(take: Callable[[], list[float]], max_repeats: int = 2, spread_limit: float = 1.2,
                   rounds: int = 2) -> list[float]:
    """The measurement protocol every adapter shares: ``take()`` times one set of runs. At least
    ``rounds`` sets are taken, plus up to ``max_repeats`` more while the best set's p90 exceeds
    ``spread_limit`` × its median; the set with the lowest median among the acceptably tight ones
    (else the tightest) is kept. On this shared 2-core VM a model's median swung 0.13 ↔ 0.24 ms
    between back-to-back measurements; the lower round is the steady-state figure."""
    sets = [take() for _ in range(max(1, rounds))]
    for _ in range(max_repeats):
        if any(spread(s) <= spread_limit for s in sets):
            break
        sets.append(take())
    tight = [s for s in sets if spread(s) <= spread_limit]
    if tight:
        return min(tight, key=statistics.median)
    return min(sets, key=spread)


def timed_best(call: Callable[[], Any], runs: int, max_repeats: int = 2, spread_limit: float = 1.2) -> list[float]:
    """Wall-clock milliseconds of ``runs`` calls of ``call``, under :func:`stable_samples`."""

    def once() -> list[float]:
        samples: list[float] = []
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            call()
            samples.append((time.perf_counter_ns() - t0) / 1e6)
        return samples

    return stable_samples(once, max_repeats, spread_limit)


class LocalDevice:
    """What the adapters that measure on this machine share: settings, identity and ``info()``."""

    artifact_format = ""
    runtime = ""
    adapter = ""

    def __init__(self, name: str, threads: int = 1, max_repeats: int = 2, spread_limit: float = 1.2) -> None:
        from edgenas.errors import DeviceError

        if threads < 1:
            raise DeviceError(f"threads must be >= 1, got {threads}")
        self.name = name
        self.threads = int(threads)
        self.max_repeats = max_repeats
        self.spread_limit = spread_limit
        self._identity: dict[str, Any] | None = None

    def runtime_version(self) -> str:
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            from edgenas.devices.onnxruntime_cpu import cpu_identity

            self._identity = cpu_identity()
        return dict(self._identity)

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "adapter": self.adapter,
            "runtime": self.runtime,
            "runtime_version": self.runtime_version(),
            "threads": self.threads,
            "artifact_format": self.artifact_format,
            "identity": self.identity(),
        }


class MeasureManyError(DeviceError):
    """:func:`measure_many` could not measure every artifact.

    The message is one line (the first failure, or the one that stopped the batch). ``partial``
    maps input index → Measurement for the artifacts that were measured (``on_result`` has already
    been called for them), ``errors`` maps input index → one-line reason for the ones that failed;
    indexes in neither were not attempted. Store ``partial`` and call again with the rest to resume."""

    def __init__(self, message: str, partial: dict[int, Measurement] | None = None,
                 errors: dict[int, str] | None = None) -> None:
        super().__init__(message)
        self.partial: dict[int, Measurement] = dict(partial or {})
        self.errors: dict[int, str] = dict(errors or {})


def measure_many(device: Device, artifacts: Sequence[str | Path], runs: int = 100, warmup: int = 10,
                 threads: int | None = None,
                 on_result: Callable[[int, Measurement], None] | None = None) -> list[Measurement]:
    """Measure ``artifacts`` on ``device`` in order; the Measurements in input order.

    Uses ``device.measure_many`` when the adapter has one (SSH boards: one runner call per chunk
    of models instead of one per model), else calls ``device.measure`` for each artifact.
    ``on_result(index, measurement)`` is called as each one finishes, so a caller can store
    results before the whole batch is done. A model that fails does not stop the loop; if any
    failed, :class:`MeasureManyError` (a DeviceError) is raised at the end with the finished ones
    in ``.partial`` (the SSH adapter also raises it, early, when the board dies midway)."""
    many = getattr(device, "measure_many", None)
    if callable(many):
        return list(many(artifacts, runs=runs, warmup=warmup, threads=threads, on_result=on_result))
    done: dict[int, Measurement] = {}
    errors: dict[int, str] = {}
    for i, artifact in enumerate(artifacts):
        try:
            m = device.measure(Path(artifact), runs=runs, warmup=warmup, threads=threads)
        except DeviceError as e:
            errors[i] = str(e)
            continue
        done[i] = m
        if on_result is not None:
            on_result(i, m)
    if errors:
        first = min(errors)
        more = f" (and {len(errors) - 1} more of {len(artifacts)})" if len(errors) > 1 else ""
        raise MeasureManyError(f"{Path(artifacts[first]).name}: {errors[first]}{more}", done, errors)
    return [done[i] for i in range(len(artifacts))]
