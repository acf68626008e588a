"""What each data configuration's front end costs on a device: latency, peak RAM, flash.

A budget is end to end (raw input → front end → classifier), so every data configuration of a
space carries the cost of its front end. :func:`build_frontend_table` exports the front end of
each configuration in the device's format (once per machine: the files are kept under
``<cache>/frontends/``, keyed by the front-end exporter's source so that a new implementation is
exported anew), measures the files the store does not hold yet for (device, runtime version,
threads) — all of them in one batch, so an SSH board runs one runner invocation per chunk, not one
per file — and reads peak activation memory and flash from each exported file:

* latency: the ``stat`` of the front end's measurement (the budget's statistic);
* RAM: peak activation bytes over the exported graph's execution order (float32 buffers: audio,
  frames/spectrum, mel, MFCC), :func:`edgenas.export.graph_memory.onnx_memory_report` or
  :func:`edgenas.export.tflite_export.verify_tflite`;
* flash: the file's size.

The bundle runs the two models one after the other in one process, each with its own buffers
allocated at load, so end to end latency, RAM and flash are front end **plus** classifier
(:class:`edgenas.cost.EndToEnd`).

With ``lowmem=True`` every configuration is priced twice: the fastest implementation
(:data:`edgenas.export.frontend.DEFAULT_IMPL`) and ``fft2-lowmem`` (the same features from chunks of
frames: under half the peak memory, ~40% slower). :meth:`FrontendTable.choose` then keeps, per
configuration, the fastest implementation that fits a RAM budget next to that configuration's
smallest classifier, and the export ships the one chosen.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from edgenas.devices.base import Device, Measurement, MeasureManyError, measure_many, pooled
from edgenas.errors import ConfigError, DeviceError
from edgenas.events import EventSink, null_sink, progress
from edgenas.spec import DataConfig
from edgenas.tasks import task_of
from edgenas.store import Store, file_hash

FRONTEND_FORMATS = ("onnx", "tflite")


@dataclass(frozen=True)
class FrontendCost:
    """One data configuration's front end on one device."""

    data_key: str
    latency_ms: float
    ram_bytes: int
    flash_bytes: int
    file: str  # the measured file (in the cache)
    impl: str = ""  # the front-end implementation (edgenas.export.frontend.IMPLS)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FrontendTable:
    device: str
    runtime_version: str
    threads: int
    fmt: str
    stat: str
    entries: dict[str, FrontendCost]  # DataConfig.key() → the cost of the implementation chosen
    measured: int = field(default=0, compare=False)  # files measured by the build that made this table
    options: dict[str, list[FrontendCost]] = field(default_factory=dict)  # every implementation priced, fastest first

    def get(self, cfg: DataConfig) -> FrontendCost:
        try:
            return self.entries[cfg.key()]
        except KeyError:
            raise KeyError(f"data configuration {cfg.key()} has no front-end cost on {self.device} "
                           f"({self.fmt}); build the front-end table for it") from None

    def values(self, what: str) -> dict[str, float]:
        """``what`` (latency_ms, ram_bytes, flash_bytes) of every data configuration."""
        return {k: float(getattr(v, what)) for k, v in self.entries.items()}

    def choose(self, ram_limit_bytes: float, model_ram_min: dict[str, float]) -> "FrontendTable":
        """Per configuration, the fastest implementation whose RAM plus the configuration's
        smallest classifier (``model_ram_min``, bytes) fits ``ram_limit_bytes``; the lowest-RAM one
        when none fits (that configuration is infeasible either way)."""
        chosen = {}
        for k, opts in self.options.items():
            fits = [o for o in opts if o.ram_bytes + model_ram_min.get(k, 0.0) <= ram_limit_bytes]
            chosen[k] = min(fits, key=lambda o: o.latency_ms) if fits else min(opts, key=lambda o: o.ram_bytes)
        return FrontendTable(self.device, self.runtime_version, self.threads, self.fmt, self.stat, chosen,
                             self.measured, self.options)

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "runtime_version": self.runtime_version, "threads": self.threads,
                "fmt": self.fmt, "stat": self.stat, "measured_now": self.measured,
                "entries": {k: v.to_dict() for k, v in self.entries.items()},
                "options": {k: [o.to_dict() for o in v] for k, v in self.options.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FrontendTable":
        return cls(d["device"], d["runtime_version"], int(d["threads"]), d["fmt"], d["stat"],
                   {k: FrontendCost(**v) for k, v in d["entries"].items()}, int(d.get("measured_now", 0)),
                   {k: [FrontendCost(**o) for o in v] for k, v in (d.get("options") or {}).items()})


def frontend_format(device: Device) -> str:
    fmt = device.artifact_format
    if fmt not in FRONTEND_FORMATS:
        raise ConfigError(f"device {device.name} runs {fmt or 'no'} models, so its front end cannot be measured "
                          f"(front ends ship as {' or '.join(FRONTEND_FORMATS)}); use --budget-scope model")
    return fmt


def _exporter_version(cfg: Any) -> str:
    """Hash of the front-end exporter's source: a changed implementation exports (and is measured) anew."""
    h = hashlib.sha1()
    for f in task_of(cfg).frontend().sources():
        h.update(Path(f).read_bytes())
    return h.hexdigest()[:10]


def frontend_impls(cfg: Any, fmt: str, lowmem: bool = False) -> list[str]:
    """The implementations to price for ``cfg``: the fastest, and the low-memory one too with
    ``lowmem`` (where its task has one: ``fft2-lowmem`` for audio)."""
    return task_of(cfg).frontend().impls(cfg, fmt, lowmem)


def frontend_file(cfg: Any, fmt: str, cache_dir: Path, impl: str | None = None) -> Path:
    """The cached front-end file of ``cfg`` in ``fmt`` by ``impl`` (None: the fastest; exported now if
    missing); no standardisation folded in: a folded mean/std changes the constants, not the cost."""
    fe = task_of(cfg).frontend()
    impl = fe.resolve_impl(cfg, fmt, impl)
    path = Path(cache_dir) / "frontends" / _exporter_version(cfg) / f"{cfg.key()}.{impl}.{fmt}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fe.export(cfg, fmt, path, impl=impl)
    return path


def file_memory(path: Path) -> tuple[int, int]:
    """(peak activation bytes, flash bytes) of a model file of either format."""
    if path.suffix == ".tflite":
        from edgenas.export.tflite_export import verify_tflite

        r = verify_tflite(path)
    else:
        from edgenas.export.graph_memory import onnx_memory_report

        r = onnx_memory_report(path)
    return int(r["peak_activation_bytes"]), int(path.stat().st_size)


def build_frontend_table(device: Device, store: Store, configs: Iterable[DataConfig], cache_dir: Path, *,
                         stat: str = "median", runs: int = 100, warmup: int = 10, loads: int = 1,
                         lowmem: bool = False, sink: EventSink | None = None) -> FrontendTable:
    """Export, measure (what the store lacks) and price the front end of every configuration (with
    ``lowmem``, the low-memory implementation too; ``entries`` hold the fastest until :meth:`choose`)."""
    sink = sink or null_sink
    fmt = frontend_format(device)
    version, threads = device.runtime_version(), device.threads
    configs = list(dict.fromkeys(configs))
    files: dict[str, Path] = {}  # "<data key>|<impl>" → file
    impls = {cfg.key(): frontend_impls(cfg, fmt, lowmem) for cfg in configs}
    with progress(sink, f"front ends ({fmt}) exported", sum(map(len, impls.values()))) as tick:
        for cfg in configs:
            for impl in impls[cfg.key()]:
                files[f"{cfg.key()}|{impl}"] = frontend_file(cfg, fmt, cache_dir, impl)
                tick(1)
    hashes = {k: file_hash(p) for k, p in files.items()}
    found: dict[str, Measurement] = {}
    for k, h in hashes.items():
        if (m := store.get_measurement(device.name, version, threads, h)) is not None:
            found[k] = m
    todo = [k for k in files if k not in found]
    sink("frontend_table.start", device=device.name, fmt=fmt, known=len(found), todo=len(todo))
    if todo:
        passes: list[list[Measurement]] = []
        with progress(sink, f"front ends measured on {device.name}", len(todo) * max(1, loads)) as tick:
            for _ in range(max(1, loads)):  # separate loads of every file, samples pooled
                try:
                    passes.append(measure_many(device, [files[k] for k in todo], runs=runs, warmup=warmup,
                                               threads=threads, on_result=lambda i, m: tick(1)))
                except MeasureManyError as e:
                    first = min(e.errors) if e.errors else 0
                    raise DeviceError(f"front end {files[todo[first]].name} cannot run on {device.name}: {e}") from None
        for i, k in enumerate(todo):
            m = pooled([p[i] for p in passes])
            store.put_measurement(hashes[k], m, kind="frontend", fmt=f"{fmt}-fp32", layer_key=f"frontend:{k}")
            found[k] = m
    options: dict[str, list[FrontendCost]] = {}
    for cfg in configs:
        k = cfg.key()
        for impl in impls[k]:
            f = f"{k}|{impl}"
            ram, flash = file_memory(files[f])
            options.setdefault(k, []).append(FrontendCost(k, round(found[f].stat(stat), 6), ram, flash, str(files[f]), impl))
        options[k].sort(key=lambda o: o.latency_ms)
    entries = {k: v[0] for k, v in options.items()}
    table = FrontendTable(device.name, version, threads, fmt, stat, entries, len(todo), options)
    sink("frontend_table.end", device=device.name, fmt=fmt, entries=len(entries), measured=len(todo),
         latency_ms={k: v.latency_ms for k, v in entries.items()})
    return table
