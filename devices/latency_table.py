"""Per-layer latency lookup table, measured on a device from single-layer micro-models.

``build_latency_table`` measures every layer (by ``LayerDesc.key()``) that the store does not
hold yet for (device, runtime version, threads, fmt), plus the runtime's per-call overhead (an
empty model), and returns a :class:`LatencyTable`::

    layer_ms(desc) = max(entry(desc) − overhead, floor)
    model_ms(layers) = overhead + Σ layer_ms(layer)

Entries and overhead are one latency statistic of each micro-model's samples (``stat``: the
median, or the low percentile a shared-host device profile budgets, so that the table is in the
same statistic as the budget and a load spike during one layer's measurement does not inflate it).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from edgenas.devices.base import Device, Measurement, MeasureManyError, measure_many
from edgenas.devices.measure import measure_cached
from edgenas.errors import DeviceError
from edgenas.events import EventSink, null_sink, progress
from edgenas.spec import LayerDesc
from edgenas.store import Store, file_hash

FLOOR_MS = 0.0005
OVERHEAD_SHAPE = (1, 8)


@dataclass
class LatencyTable:
    device: str
    runtime_version: str
    threads: int
    fmt: str
    entries: dict[str, float]  # LayerDesc key → `stat` ms of its micro-model (overhead included)
    overhead_ms: float  # `stat` ms of the empty model: per-call cost every micro-model pays
    floor_ms: float = FLOOR_MS
    stat: str = "median"
    measured: int = field(default=0, compare=False)  # layers measured by the build that made this table

    def __contains__(self, desc: object) -> bool:
        return isinstance(desc, LayerDesc) and desc.key() in self.entries

    def missing(self, layers: Iterable[LayerDesc]) -> list[LayerDesc]:
        return [d for d in layers if d.key() not in self.entries]

    def layer_ms(self, desc: LayerDesc) -> float:
        try:
            entry = self.entries[desc.key()]
        except KeyError:
            raise KeyError(
                f"layer {desc.name!r} ({desc.kind} {desc.in_shape}→{desc.out_shape}, kernel {desc.kernel},"
                f" stride {desc.stride}, groups {desc.groups}) is not in the {self.fmt} latency table of"
                f" {self.device} (runtime {self.runtime_version}, {self.threads} threads);"
                " run build_latency_table for it"
            ) from None
        return max(entry - self.overhead_ms, self.floor_ms) * desc.calls  # per input (LayerDesc.calls)

    def model_ms(self, layers: Iterable[LayerDesc]) -> float:
        """Per input: the layers' times plus the per-call overhead once per call (LayerDesc.calls)."""
        layers = list(layers)
        return self.overhead_ms * (layers[0].calls if layers else 1) + sum(self.layer_ms(d) for d in layers)


def load_latency_table(device: Device, store: Store, fmt: str, stat: str = "median") -> LatencyTable:
    """The table as the store holds it now (no measuring); overhead 0 if never measured."""
    version = device.runtime_version()
    entries = store.latency_table(device.name, version, device.threads, fmt, stat)
    oh = store.overhead(device.name, version, device.threads, fmt)
    return LatencyTable(device.name, version, device.threads, fmt, entries, oh.stat(stat) if oh else 0.0, stat=stat)


def build_latency_table(
    device: Device,
    layers: Iterable[LayerDesc],
    store: Store,
    fmt: str,
    sink: EventSink | None = None,
    runs: int = 50,
    warmup: int = 5,
    overhead_shape: Sequence[int] = OVERHEAD_SHAPE,
    stat: str = "median",
    batch: int = 64,
) -> LatencyTable:
    """Measure the layers the store lacks and return the table.

    The micro-models go to the device ``batch`` at a time through
    :func:`~edgenas.devices.base.measure_many`: an SSH board runs one runner invocation per chunk
    of its adapter's batch size, not one per layer. Each result is stored as it arrives, so an
    interrupted build keeps what it measured."""
    from edgenas.export.micro import LATENCY_FORMATS, save_empty_model, save_layer_model

    if fmt not in LATENCY_FORMATS:
        raise ValueError(f"unknown latency-table format {fmt!r} (known: {', '.join(LATENCY_FORMATS)})")
    sink = sink or null_sink
    version = device.runtime_version()
    threads = device.threads
    known = store.latency_table(device.name, version, threads, fmt, stat)
    todo: dict[str, LayerDesc] = {}
    for d in layers:
        k = d.key()
        if k not in known and k not in todo:
            todo[k] = d
    sink("latency_table.start", device=device.name, fmt=fmt, known=len(known), todo=len(todo))
    with tempfile.TemporaryDirectory(prefix="edgenas-lut-") as td:
        tmp = Path(td)
        ext = fmt.split("-")[0]
        oh_path = save_empty_model(overhead_shape, fmt, tmp / f"empty.{ext}")
        overhead = measure_cached(device, store, oh_path, kind="overhead", fmt=fmt, runs=runs * 2,
                                  warmup=warmup, layer_key=f"overhead:{list(overhead_shape)}")
        items = list(todo.values())
        with progress(sink, f"latency table {fmt} on {device.name}", len(todo)) as tick:
            for start in range(0, len(items), batch):  # one measure_many per batch: one runner call on a board
                chunk = items[start:start + batch]
                paths = [save_layer_model(d, fmt, tmp / f"layer{start + i}.{ext}") for i, d in enumerate(chunk)]

                def stored(i: int, m: Measurement, chunk: list[LayerDesc] = chunk, paths: list[Path] = paths) -> None:
                    store.put_layer(chunk[i].key(), file_hash(paths[i]), m, fmt)  # kept as it arrives
                    known[chunk[i].key()] = m.stat(stat)
                    tick(1, layer=chunk[i].name, ms=round(m.stat(stat), 4))

                try:
                    measure_many(device, paths, runs=runs, warmup=warmup, threads=threads, on_result=stored)
                except MeasureManyError as e:
                    first = min(e.errors) if e.errors else None
                    what = f"layer {chunk[first].name} ({chunk[first].kind} {chunk[first].in_shape}): " if first is not None else ""
                    raise DeviceError(f"latency table on {device.name}: {what}{e}") from None
                for path in paths:
                    path.unlink()
    table = LatencyTable(device.name, version, threads, fmt, known, overhead.stat(stat), stat=stat,
                         measured=len(todo))
    sink("latency_table.end", device=device.name, fmt=fmt, entries=len(known), measured=len(todo),
         overhead_ms=overhead.stat(stat), stat=stat)
    return table
