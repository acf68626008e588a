"""The learned latency predictor: ArchSpec encoding → latency on one device, fitted on measurements.

Encoding of a spec (:class:`SpecEncoder`, feature names in :attr:`SpecEncoder.names`):

* ``table_ms`` — the per-layer lookup-table sum (per-call overhead included): the table's own
  whole-network guess;
* per layer group (``conv``, ``dw`` depthwise, ``pw`` pointwise, ``global_avgpool``, ``linear``):
  the sums over the spec's layers of that group of its table time, MACs (M), activation elements
  in + out (×10⁴) and the layer count — what a whole network pays that single-layer micro-models
  do not show (format conversions, memory traffic, per-op dispatch);
* one slot per (choice point, option), data choices included, 1 for the chosen option.

Model: ridge regression of latency on that encoding, weighted by 1/latency so that the squared
*relative* error is minimised; the ridge strength is picked by k-fold cross-validation among a few
values. Why linear: latency on these runtimes is a sum over layers, and a model linear in sums of
per-layer features is itself a per-layer cost ``ψ(layer)`` plus per-choice offsets, so its
expectation under independent choice probabilities is *exact* and comes from the space's
``expected_layer_costs(probs, ψ)`` — the same differentiable machinery every cost model uses.
Fitting is closed form (milliseconds), so calibration can afford cross-validation for its adaptive
sampling. (A small MLP on the same encoding was tried first: slower to fit by three orders of
magnitude and no better on this data.)

Saved as JSON: weights plus metadata (device, runtime version, threads, governor, space and
version, artifact format, sample count, hold-out errors, the lookup-table entries it was fitted
with). No pickles.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import torch

import edgenas
from edgenas.errors import ConfigError
from edgenas.fileio import atomic_write_text
from edgenas.spaces.base import Probs, SearchSpace
from edgenas.spec import ArchSpec, LayerDesc

FORMAT = "edgenas-latency-predictor"
FORMAT_VERSION = 1
GROUPS = ("conv", "dw", "pw", "global_avgpool", "linear")  # every encoder has these (and stored files)
EXTRA_GROUPS = ("add", "concat", "pixel_shuffle")  # graph layers: in an encoder when its space has them
LAYER_FEATURES = ("table_ms", "macs_m", "act_1e4", "count")
RIDGE_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)  # large: falls back to a fitted table line


class Table(Protocol):
    overhead_ms: float

    def layer_ms(self, desc: LayerDesc) -> float: ...


def layer_group(d: LayerDesc) -> str:
    if d.kind != "conv2d":
        return d.kind
    if d.groups > 1:
        return "dw"
    return "pw" if tuple(d.kernel) == (1, 1) else "conv"


def layer_features(d: LayerDesc, table: Table) -> np.ndarray:
    c_in, h_in, w_in = d.in_shape
    c_out, h_out, w_out = d.out_shape
    # per input, as the table's time (LayerDesc.calls: a layer run once per tile counts each run)
    per_call = np.array([d.macs / 1e6, (c_in * h_in * w_in + c_out * h_out * w_out) / 1e4, 1.0])
    return np.concatenate([[table.layer_ms(d)], d.calls * per_call])


@dataclass(frozen=True)
class SpecEncoder:
    """Feature layout: ``table_ms``, group × layer features, then one slot per ``(point, option)``."""

    slots: tuple[tuple[str, str], ...]
    groups: tuple[str, ...] = GROUPS

    @classmethod
    def for_space(cls, space: SearchSpace) -> "SpecEncoder":
        kinds = {d.kind for d in space.all_layers()}
        return cls(tuple((p.name, o) for p in space.choice_points() for o in p.options),
                   GROUPS + tuple(g for g in EXTRA_GROUPS if g in kinds))

    @property
    def n_numeric(self) -> int:
        return 1 + len(self.groups) * len(LAYER_FEATURES)

    def group(self, d: LayerDesc) -> int:
        g = layer_group(d)
        if g not in self.groups:
            raise ConfigError(f"the latency predictor has no features for {g} layers; recalibrate")
        return self.groups.index(g)

    @property
    def names(self) -> list[str]:
        return (["table_ms"] + [f"{g}.{f}" for g in self.groups for f in LAYER_FEATURES]
                + [f"{p}={o}" for p, o in self.slots])

    def missing(self, space: SearchSpace) -> list[str]:
        """Options of ``space`` this encoding has no slot for (the predictor cannot price them)."""
        have = set(self.slots)
        return [f"{p.name}={o}" for p in space.choice_points() for o in p.options if (p.name, o) not in have]

    def encode(self, space: SearchSpace, spec: ArchSpec, table: Table) -> np.ndarray:
        row = np.zeros(len(self.names), np.float64)
        row[0] = table.overhead_ms
        nf = len(LAYER_FEATURES)
        for d in space.layers(spec):
            g = self.group(d)
            f = layer_features(d, table)
            row[0] += f[0]
            row[1 + g * nf:1 + (g + 1) * nf] += f
        sel = space.selection(spec)
        for i, (p, o) in enumerate(self.slots):
            row[self.n_numeric + i] = 1.0 if sel.get(p) == o else 0.0
        return row


@dataclass
class LatencyPredictor:
    """``latency ≈ encoding · weights`` (see the module docstring); weights in ms per feature unit."""

    encoder: SpecEncoder
    weights: np.ndarray  # [features + 1], the last one is the intercept
    ridge: float
    floor_ms: float  # predictions are clamped here (a fraction of the fastest measured network)
    metadata: dict[str, Any] = field(default_factory=dict)

    # ---- fitting ---------------------------------------------------------------------------
    @staticmethod
    def _solve(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
        x1 = np.hstack([x, np.ones((len(x), 1))])
        w = 1.0 / y
        xw, yw = x1 * w[:, None], y * w
        scale = x1.std(0)
        scale[scale < 1e-12] = 1.0
        scale[-1] = 1.0
        xs = xw / scale
        reg = lam * len(y) * np.eye(x1.shape[1])
        reg[-1, -1] = 0.0  # the intercept is not shrunk,
        reg[0, 0] = 0.0  # nor the table sum: with strong shrinkage the model falls back to a fitted table line
        return np.linalg.lstsq(xs.T @ xs + reg, xs.T @ yw, rcond=None)[0] / scale

    @classmethod
    def fit(cls, encoder: SpecEncoder, x: np.ndarray, y_ms: np.ndarray, *, ridge: float | None = None,
            folds: int = 5, seed: int = 0) -> "LatencyPredictor":
        x = np.asarray(x, np.float64)
        y = np.asarray(y_ms, np.float64)
        if ridge is None:
            ridge = cls.pick_ridge(x, y, folds, seed)
        weights = cls._solve(x, y, ridge)
        return cls(encoder, weights, float(ridge), float(0.5 * y.min()))

    @classmethod
    def pick_ridge(cls, x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> float:
        """The ridge strength of :data:`RIDGE_GRID` with the lowest k-fold mean relative error."""
        if len(y) < 2 * folds:
            return 1e-2
        fold = np.arange(len(y)) % folds
        np.random.default_rng(seed).shuffle(fold)
        best, best_err = RIDGE_GRID[0], np.inf
        for lam in RIDGE_GRID:
            err = 0.0
            for k in range(folds):
                te = fold == k
                w = cls._solve(x[~te], y[~te], lam)
                pred = np.maximum(np.hstack([x[te], np.ones((te.sum(), 1))]) @ w, 0.5 * y[~te].min())
                err += float(np.sum(np.abs(pred - y[te]) / y[te]))
            if err < best_err:
                best, best_err = lam, err
        return best

    # ---- predicting ------------------------------------------------------------------------
    def predict_ms(self, x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(x, np.float64))
        return np.maximum(np.hstack([x, np.ones((len(x), 1))]) @ self.weights, self.floor_ms)

    def layer_cost(self, table: Table) -> Callable[[LayerDesc], float]:
        """ψ(layer): the model's per-layer part (table term + its group's feature terms)."""
        w_table = float(self.weights[0])
        nf = len(LAYER_FEATURES)

        def psi(d: LayerDesc) -> float:
            g = self.encoder.group(d)
            f = layer_features(d, table)
            return float(w_table * f[0] + f @ self.weights[1 + g * nf:1 + (g + 1) * nf])

        return psi

    def constant_ms(self, table: Table) -> float:
        return float(self.weights[0] * table.overhead_ms + self.weights[-1])

    def slot_weights(self, space: SearchSpace) -> dict[str, torch.Tensor]:
        """Per choice point, the weight of each of its options (ms)."""
        index = {s: i for i, s in enumerate(self.encoder.slots)}
        out = {}
        for p in space.choice_points():
            vals = []
            for o in p.options:
                i = index.get((p.name, o))
                if i is None:
                    raise ConfigError(f"the latency predictor has no slot for {p.name}={o}; recalibrate")
                vals.append(float(self.weights[self.encoder.n_numeric + i]))
            out[p.name] = torch.tensor(vals)
        return out

    # ---- files -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "edgenas_version": edgenas.__version__,
            "model": "ridge regression on the spec encoding, 1/latency weighted",
            "metadata": self.metadata, "features": self.encoder.names + ["intercept"],
            "slots": [list(s) for s in self.encoder.slots], "groups": list(self.encoder.groups),
            "weights": self.weights.tolist(),
            "ridge": self.ridge, "floor_ms": self.floor_ms,
        }

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LatencyPredictor":
        if d.get("format") != FORMAT:
            raise ConfigError("not an edgenas latency predictor file")
        if int(d.get("format_version", -1)) != FORMAT_VERSION:
            raise ConfigError(f"latency predictor format version {d.get('format_version')} is not "
                              f"{FORMAT_VERSION}; recalibrate with `edgenas calibrate`")
        enc = SpecEncoder(tuple((str(p), str(o)) for p, o in d["slots"]),
                          tuple(str(g) for g in d.get("groups", GROUPS)))  # files before graph layers: GROUPS
        weights = np.array(d["weights"], np.float64)
        if weights.shape != (len(enc.names) + 1,):
            raise ValueError(f"{len(weights)} weights for {len(enc.names) + 1} features")
        return cls(enc, weights, float(d["ridge"]), float(d["floor_ms"]), dict(d.get("metadata", {})))

    @classmethod
    def load(cls, path: str | Path) -> "LatencyPredictor":
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read latency predictor {path}: {e}") from None
        try:
            return cls.from_dict(d)
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"latency predictor {path} is damaged: {e}") from None


@dataclass
class PredictedLatency:
    """The learned predictor as a cost model: ``cost(spec)`` and differentiable ``expected_cost``."""

    space: SearchSpace
    table: Any  # LatencyTable the predictor's features read
    predictor: LatencyPredictor
    path: Path | None = None
    name: str = "latency"
    unit: str = "ms"
    margin: float = 0.0  # prices are raised by this fraction: budgets are hard, the predictor is not exact

    def __post_init__(self) -> None:
        missing = self.predictor.encoder.missing(self.space)
        if missing:
            raise ConfigError(f"the latency predictor has no slot for {', '.join(missing[:3])}; recalibrate")
        self._psi = self.predictor.layer_cost(self.table)  # one object: the space caches tables per function
        self._slots = self.predictor.slot_weights(self.space)
        self._const = self.predictor.constant_ms(self.table)

    def predict(self, spec: ArchSpec) -> float:
        """The predictor's own figure (no margin)."""
        return float(self.predictor.predict_ms(self.predictor.encoder.encode(self.space, spec, self.table))[0])

    def cost(self, spec: ArchSpec) -> float:
        return self.predict(spec) * (1.0 + self.margin)

    def table_ms(self, spec: ArchSpec) -> float:
        return float(self.table.model_ms(self.space.layers(spec)))

    def expected_cost(self, probs: Probs) -> torch.Tensor:
        total = self.space.expected_layer_costs(probs, self._psi).sum() + self._const
        for name, w in self._slots.items():
            total = total + (probs[name].to(w.dtype) * w).sum()
        return total.clamp(min=self.predictor.floor_ms) * (1.0 + self.margin)


def errors(pred: Sequence[float], true: Sequence[float]) -> dict[str, float]:
    """MAPE and the shares within ±10% and ±5% (relative to the measured value)."""
    p, t = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    rel = np.abs(p - t) / t
    under = np.clip(t / p - 1.0, 0.0, None)  # how far the measurement exceeds the prediction
    return {"mape": float(rel.mean()), "within_10pct": float(np.mean(rel <= 0.10)),
            "within_5pct": float(np.mean(rel <= 0.05)), "max_rel_err": float(rel.max()),
            "underprediction_p90": float(np.percentile(under, 90)), "n": int(len(t))}


def predictor_path(root: Path, device: str, space: str, space_version: int, fmt: str, statistic: str = "median") -> Path:
    suffix = "" if statistic == "median" else f".{statistic}"
    return root / device / f"{space}-v{space_version}.{fmt}{suffix}.json"


def stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")
