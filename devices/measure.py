"""Measure an artifact on a device through the store: never measure the same file twice."""

from __future__ import annotations

from pathlib import Path

from edgenas.devices.base import Device, Measurement, pooled
from edgenas.store import Store, file_hash


def measure_cached(
    device: Device,
    store: Store,
    artifact: str | Path,
    *,
    kind: str = "model",
    fmt: str,
    spec_hash: str | None = None,
    runs: int = 100,
    warmup: int = 10,
    threads: int | None = None,
    layer_key: str | None = None,
    loads: int = 1,
) -> Measurement:
    """The stored measurement of ``artifact`` on (device, runtime version, threads), else measure
    and store it: ``loads`` separate measurements (each loads the model afresh), samples pooled."""
    threads = int(threads or device.threads)
    key = file_hash(artifact)
    found = store.get_measurement(device.name, device.runtime_version(), threads, key)
    if found is not None:
        return found
    m = pooled([device.measure(Path(artifact), runs=runs, warmup=warmup, threads=threads)
                for _ in range(max(1, loads))])
    store.put_measurement(key, m, kind=kind, fmt=fmt, spec_hash=spec_hash, layer_key=layer_key)
    return m
