"""Cost models: layer descriptors → MACs, parameters, flash, peak RAM, latency.

Every cost model has two faces: ``cost(spec) → float`` for a derived spec, and
``expected_cost(probs) → tensor`` differentiable in the choice probabilities, which the space
computes from the same per-layer cost function. Cost models are pure: a latency table or a
learned predictor is handed in, never measured here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from edgenas.spaces.base import Probs, SearchSpace
from edgenas.spec import ArchSpec, LayerDesc

INT8_BYTES = 1
INT32_BYTES = 4


class CostModel(Protocol):
    name: str
    unit: str

    def cost(self, spec: ArchSpec) -> float: ...

    def expected_cost(self, probs: Probs) -> torch.Tensor: ...


def flash_bytes(d: LayerDesc) -> float:
    """int8 weights, int32 biases and one float32 scale per output channel (per-channel quant)."""
    if d.kind not in ("conv2d", "linear"):
        return 0.0
    return float(d.weights * INT8_BYTES + d.biases * INT32_BYTES + d.out_shape[0] * 4)


def _numel(shape: tuple[int, int, int]) -> int:
    return shape[0] * shape[1] * shape[2]


def ram_bytes(d: LayerDesc) -> float:
    """Activation bytes live while this layer runs (int8): its inputs and output, plus the
    tensors it does not read that stay live across it (``d.held``: a skip tensor waiting for its
    add). A layer padded other than TensorFlow's SAME first materialises the padded input (an
    explicit PAD op), so it holds the larger of (in + padded) and (padded + out); SAME padding is
    folded into the convolution by both exporters and costs nothing (measured against the exported
    int8 files: tests/edgenas/test_graph_layers.py); an add holds every input; a concat's inputs
    add up to its output."""
    size_in, size_out = _numel(d.in_shape) * INT8_BYTES, _numel(d.out_shape) * INT8_BYTES
    if d.kind == "add":
        size_in *= d.n_inputs
    elif d.kind == "concat":
        size_in = size_out
    pt, pb, pl, pr = d.pad
    if not d.pad_is_same:
        c, h, w = d.in_shape
        padded = c * (h + pt + pb) * (w + pl + pr) * INT8_BYTES
        return float(max(size_in + padded, padded + size_out) + d.held)
    return float(size_in + size_out + d.held)


@dataclass
class LayerCost:
    """A cost that aggregates one number per layer: ``sum`` (+ a constant) or ``max``."""

    space: SearchSpace
    name: str
    unit: str
    layer_fn: Callable[[LayerDesc], float]
    aggregate: str = "sum"
    constant: float = 0.0

    def cost(self, spec: ArchSpec) -> float:
        vals = [self.layer_fn(d) for d in self.space.layers(spec)]
        return (max(vals) if self.aggregate == "max" else sum(vals)) + self.constant

    def expected_cost(self, probs: Probs) -> torch.Tensor:
        slots = self.space.expected_layer_costs(probs, self.layer_fn)
        # E[max] is not max E: the max of the expected slots is a lower bound that becomes exact
        # as the distribution turns one-hot (which the search drives it to before deriving).
        agg = slots.max() if self.aggregate == "max" else slots.sum()
        return agg + self.constant

    def per_layer(self, spec: ArchSpec) -> list[tuple[str, float]]:
        return [(d.name, self.layer_fn(d)) for d in self.space.layers(spec)]


def macs(space: SearchSpace) -> LayerCost:
    return LayerCost(space, "macs", "MACs", lambda d: float(d.macs * d.calls))


def params(space: SearchSpace) -> LayerCost:
    return LayerCost(space, "params", "params", lambda d: float(d.params))


def flash(space: SearchSpace) -> LayerCost:
    return LayerCost(space, "flash", "bytes", flash_bytes)


def peak_ram(space: SearchSpace) -> LayerCost:
    return LayerCost(space, "ram", "bytes", ram_bytes, aggregate="max")


class LatencyLookup(Protocol):
    overhead_ms: float

    def layer_ms(self, desc: LayerDesc) -> float: ...


def latency_lut(space: SearchSpace, table: LatencyLookup) -> LayerCost:
    """Latency as the sum of per-layer micro-benchmark times plus the per-call overhead."""
    return LayerCost(space, "latency", "ms", table.layer_ms, constant=table.overhead_ms)


@dataclass
class EndToEnd:
    """A budget's cost from raw input to output: the front end of the spec's data configuration
    plus the model (``frontend`` maps ``DataConfig.key()`` → the front end's cost in the model's unit).

    The bundle runs the front end and then the classifier, each with buffers allocated at load, so
    latency, RAM and flash all add. Differentiably, the front-end part is its expectation under the
    joint data-configuration probabilities, so the data logits pay for what they buy."""

    space: SearchSpace
    model: CostModel
    frontend: dict[str, float]

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def unit(self) -> str:
        return self.model.unit

    def frontend_cost(self, spec: ArchSpec) -> float:
        try:
            return float(self.frontend[spec.data.key()])
        except KeyError:
            raise KeyError(f"no front-end {self.name} for data configuration {spec.data.key()}") from None

    def model_cost(self, spec: ArchSpec) -> float:
        return float(self.model.cost(spec))

    def cost(self, spec: ArchSpec) -> float:
        return self.model_cost(spec) + self.frontend_cost(spec)

    def __post_init__(self) -> None:
        # front-end cost of every data configuration, in the space's data-option order (built once:
        # expected_cost runs every search step)
        missing = [d.key() for d in self.space.data_configs() if d.key() not in self.frontend]
        if missing:
            raise KeyError(f"no front-end {self.name} for data configuration {missing[0]}")
        self._vector = torch.tensor([self.frontend[d.key()] for d in self.space.data_configs()], dtype=torch.float32)

    def expected_cost(self, probs: Probs) -> torch.Tensor:
        return self.model.expected_cost(probs) + (self.space.data_probs(probs) * self._vector).sum()
