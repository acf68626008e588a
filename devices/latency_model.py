"""The search's latency cost model on one device: measured whole networks + a corrected table.

Two faces, as every cost model (see ``edgenas.cost``):

* ``cost(spec)`` — the *measured* median latency of the spec's whole network on the device,
  built as a chain model with random weights in the exported graph form (``chain_model``:
  latency does not depend on weight values; on ONNX Runtime it ran within 3% of the real
  exported model). Cached in the SQLite store by file hash, so each spec is measured once.
* ``expected_cost(probs)`` — differentiable: ``a + b · E[Σ table layer latencies]``, where the
  per-layer micro-benchmark table is corrected by a line fitted to measured whole networks of
  sampled specs. Single-layer models pay per-layer format conversions a whole network does not
  (the raw int8 table over-predicted whole networks up to 3x here), hence the fit.

A learned predictor (calibration) can replace the correction behind the same two faces.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgenas.devices.base import Device
from edgenas.devices.latency_table import LatencyTable
from edgenas.devices.measure import measure_cached
from edgenas.events import EventSink, null_sink, progress
from edgenas.spaces.base import Probs, SearchSpace
from edgenas.spec import ArchSpec
from edgenas.store import Store
from edgenas.tasks import calls_per_input


@dataclass
class MeasuredLatency:
    space: SearchSpace
    device: Device
    store: Store
    table: LatencyTable
    fmt: str
    runs: int = 50
    warmup: int = 10
    sink: EventSink | None = None
    name: str = "latency"
    unit: str = "ms"
    statistic: str = "median"
    loads: int = 1  # separate loads per network, samples pooled
    a: float = 0.0
    b: float = 1.0
    fit_info: dict[str, Any] = field(default_factory=dict)
    _cache: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="edgenas-chain-")
        self._layer_ms = self.table.layer_ms  # one object: the space caches cost tables per function
        self._calls = torch.tensor([float(calls_per_input(d)) for d in self.space.data_configs()])

    def table_ms(self, spec: ArchSpec) -> float:
        return self.table.model_ms(self.space.layers(spec))

    def cost(self, spec: ArchSpec) -> float:
        """Per input: one measured call × the calls per input (a super-resolution frame's tiles)."""
        return self.call_cost(spec) * calls_per_input(spec.data)

    def call_cost(self, spec: ArchSpec) -> float:
        """The measured latency of one call of the spec's network."""
        key = spec.hash()
        if key not in self._cache:
            from edgenas.export.micro import save_chain_model

            path = save_chain_model(self.space.layers(spec), self.fmt,
                                    Path(self._tmp.name) / f"{key}.{self.fmt.split('-')[0]}")
            m = measure_cached(self.device, self.store, path, kind="chain", fmt=self.fmt, spec_hash=key,
                               runs=self.runs, warmup=self.warmup, loads=self.loads)
            self._cache[key] = m.stat(self.statistic)
            path.unlink(missing_ok=True)
        return self._cache[key]

    def expected_cost(self, probs: Probs) -> torch.Tensor:
        slots = self.space.expected_layer_costs(probs, self._layer_ms)
        calls = (self.space.data_probs(probs) * self._calls).sum()  # expected calls per input
        return self.a * calls + self.b * (slots.sum() + self.table.overhead_ms * calls)

    def fit(self, n_samples: int = 40, seed: int = 0) -> dict[str, Any]:
        """Fit ``measured ≈ a + b · table`` per call on sampled specs (plus the cheapest ones): per
        input, ``calls · a + b · table`` (the table's time is per input, :class:`LatencyTable`)."""
        rng = random.Random(seed)
        cheap = list(self.space.cheapest_candidates())
        specs = rng.sample(cheap, min(len(cheap), max(2, n_samples // 5)))
        specs += [self.space.sample(rng) for _ in range(n_samples - len(specs))]
        xs, ys = [], []
        with progress(self.sink or null_sink, f"latency model: whole networks on {self.device.name}", len(specs)) as tick:
            for s in specs:
                xs.append(self.table_ms(s) / calls_per_input(s.data))
                ys.append(self.call_cost(s))
                tick(1)
        x, y = np.array(xs), np.array(ys)
        b, a = np.polyfit(x, y, 1)
        if b <= 0:  # degenerate fit: fall back to a pure scale
            a, b = 0.0, float(np.sum(x * y) / np.sum(x * x))
        self.a, self.b = float(a), float(b)
        pred = self.a + self.b * x
        mape = float(np.mean(np.abs(pred - y) / y))
        raw_mape = float(np.mean(np.abs(x - y) / y))
        rmse = float(np.sqrt(np.mean((pred - y) ** 2)))
        raw_rmse = float(np.sqrt(np.mean((x - y) ** 2)))
        self.fit_info = {"samples": len(specs), "a_ms": self.a, "b": self.b, "mape_corrected": mape,
                         "rmse_corrected_ms": rmse, "rmse_table_only_ms": raw_rmse,
                         "mape_table_only": raw_mape, "within_10pct": float(np.mean(np.abs(pred - y) / y <= 0.10))}
        return self.fit_info
