"""The search-space contract and the registry of spaces.

A space is one builder: it lists its named choice points (data and architecture), builds a
supernet that runs under a sampled or relaxed selection, derives an ArchSpec from choice
probabilities, builds the plain ``nn.Module`` of any ArchSpec, and describes any ArchSpec as a
list of :class:`~edgenas.spec.LayerDesc` for the cost models. It also gives the *expected*
per-layer cost under independent choice probabilities, differentiably, for any layer cost
function — that is how every cost model gets its ``expected_cost`` without knowing the space.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

from edgenas.errors import ConfigError
from edgenas.registry import Registry
from edgenas.spec import ArchSpec, DataConfig, LayerDesc


@dataclass(frozen=True)
class ChoicePoint:
    """A named categorical choice; ``kind`` is ``"data"`` or ``"arch"``.

    ``sampled`` marks a choice whose options give tensors of different shapes (every data
    choice, strides): it is always sampled one at a time, never mixed, whatever the strategy.
    """

    name: str
    options: tuple[str, ...]
    kind: str = "arch"
    sampled: bool = False

    def index(self, label: str) -> int:
        try:
            return self.options.index(label)
        except ValueError:
            raise ConfigError(f"{label!r} is not an option of {self.name} ({', '.join(self.options)})") from None


Probs = Mapping[str, torch.Tensor]  # choice-point name → probability vector (sums to 1)
Gates = Mapping[str, torch.Tensor]  # choice-point name → weights used in the forward pass
LayerCostFn = Callable[[LayerDesc], float]


class SearchSpace:
    """Base class of every registered space. Subclasses fill in the abstract methods."""

    name: str = ""
    config_class: type = type(None)  # the frozen dataclass of the space's options (``space.*`` keys)
    version: int = 1
    task: str = ""

    def __init__(self, num_classes: int, data_points: list[ChoicePoint], arch_points: list[ChoicePoint]) -> None:
        self.num_classes = num_classes
        self.data_points = data_points
        self.arch_points = arch_points

    # ---- choice points -------------------------------------------------------------------
    def choice_points(self) -> list[ChoicePoint]:
        return self.data_points + self.arch_points

    def point(self, name: str) -> ChoicePoint:
        for p in self.choice_points():
            if p.name == name:
                return p
        raise ConfigError(f"space {self.name} has no choice point {name!r}")

    def data_configs(self) -> list[DataConfig]:
        """Every data configuration, in data-option index order (row-major over data points)."""
        return [self.data_config(dict(zip([p.name for p in self.data_points], combo)))
                for combo in itertools.product(*[p.options for p in self.data_points])]

    def data_index(self, labels: Mapping[str, str]) -> int:
        idx = 0
        for p in self.data_points:
            idx = idx * len(p.options) + p.index(labels[p.name])
        return idx

    def data_probs(self, probs: Probs) -> torch.Tensor:
        """Joint probability of every data configuration (independent data points)."""
        joint = torch.ones(1)
        for p in self.data_points:
            joint = (joint[:, None] * probs[p.name][None, :]).reshape(-1)
        return joint

    # ---- specs ---------------------------------------------------------------------------
    def spec(self, selection: Mapping[str, str]) -> ArchSpec:
        """ArchSpec from one label per choice point (data and architecture)."""
        missing = [p.name for p in self.choice_points() if p.name not in selection]
        if missing:
            raise ConfigError(f"selection lacks choice points: {', '.join(missing)}")
        for p in self.choice_points():
            p.index(selection[p.name])
        data = self.data_config({p.name: selection[p.name] for p in self.data_points})
        return ArchSpec(task=self.task, space=self.name, space_version=self.version,
                        num_classes=self.num_classes, data=data,
                        choices={p.name: selection[p.name] for p in self.arch_points})

    def selection(self, spec: ArchSpec) -> dict[str, str]:
        """Inverse of :meth:`spec`: the label of every choice point."""
        self.check(spec)
        sel = dict(self.data_labels(spec.data))
        sel.update(spec.choices)
        return sel

    def check(self, spec: ArchSpec) -> None:
        if spec.space != self.name or spec.space_version != self.version:
            raise ConfigError(f"spec is for space {spec.space} v{spec.space_version}, not {self.name} v{self.version}")
        for p in self.arch_points:
            if p.name not in spec.choices:
                raise ConfigError(f"spec lacks choice point {p.name}")
            p.index(spec.choices[p.name])
        labels = self.data_labels(spec.data)  # the data configuration must be one of the options
        for p in self.data_points:
            p.index(labels[p.name])

    def derive(self, probs: Probs) -> ArchSpec:
        """The most probable option of every choice point."""
        return self.spec({p.name: p.options[int(torch.argmax(probs[p.name]))] for p in self.choice_points()})

    def sample(self, rng: random.Random) -> ArchSpec:
        return self.spec({p.name: rng.choice(p.options) for p in self.choice_points()})

    def one_hot(self, spec: ArchSpec) -> dict[str, torch.Tensor]:
        sel = self.selection(spec)
        out = {}
        for p in self.choice_points():
            v = torch.zeros(len(p.options))
            v[p.index(sel[p.name])] = 1.0
            out[p.name] = v
        return out

    # ---- to be provided by each space ----------------------------------------------------
    def data_config(self, labels: Mapping[str, str]) -> DataConfig:
        raise NotImplementedError

    def data_labels(self, cfg: DataConfig) -> dict[str, str]:
        raise NotImplementedError

    def supernet(self) -> nn.Module:
        raise NotImplementedError

    def build(self, spec: ArchSpec) -> nn.Module:
        raise NotImplementedError

    def layers(self, spec: ArchSpec) -> list[LayerDesc]:
        raise NotImplementedError

    def expected_layer_costs(self, probs: Probs, layer_cost: LayerCostFn) -> torch.Tensor:
        """Expected cost of every layer slot under ``probs`` (differentiable), shape [slots]."""
        raise NotImplementedError

    def cost_tables(self, layer_cost: LayerCostFn) -> dict[str, torch.Tensor]:
        """:meth:`build_cost_tables` of ``layer_cost``, built once per cost function (kept by identity)."""
        cache = self.__dict__.setdefault("_table_cache", {})
        hit = cache.get(id(layer_cost))
        if hit is None or hit[0] is not layer_cost:
            hit = cache[id(layer_cost)] = (layer_cost, self.build_cost_tables(layer_cost))
        return hit[1]

    def build_cost_tables(self, layer_cost: LayerCostFn) -> dict[str, torch.Tensor]:
        """The cost of every layer a slot can hold, as tensors :meth:`expected_layer_costs` contracts."""
        raise NotImplementedError

    def all_layers(self) -> Iterator[LayerDesc]:
        """Every distinct layer any spec of the space can contain (for latency tables)."""
        raise NotImplementedError

    def cheapest_candidates(self) -> Iterable[ArchSpec]:
        """A set of specs that contains the cheapest spec for every monotone layer cost."""
        raise NotImplementedError

    def describe(self, spec: ArchSpec) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.selection(spec).items())


def option_labels(name: str, values: Any, allowed: Sequence[str] | None = None) -> tuple[str, ...]:
    """The labels of a ``space.*`` option set (a sequence, or a comma-separated string as ``--set``
    gives it): non-empty, no duplicates, and among ``allowed`` or positive integers (``allowed``
    None); anything else is a one-line ConfigError."""
    items = values.split(",") if isinstance(values, str) else [str(v) for v in values]
    labels = tuple(t.strip().strip("[]'\" ") for t in items if t.strip().strip("[]'\" "))
    if not labels:
        raise ConfigError(f"space.{name} needs at least one option")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"space.{name} has duplicate options: {values!r}")
    if allowed is not None:
        bad = [v for v in labels if v not in allowed]
        if bad:
            raise ConfigError(f"space.{name} options must be among {', '.join(allowed)}, got {bad}")
    elif not all(v.isdigit() and int(v) > 0 and str(int(v)) == v for v in labels):
        raise ConfigError(f"space.{name} options must be positive integers, got {values!r}")
    return labels


def width_masks(widths: list[int], cmax: int) -> torch.Tensor:
    """[len(widths), cmax]: row j is 1 on the first ``widths[j]`` channels (a supernet's width
    options as channel prefixes of its widest layer)."""
    return (torch.arange(cmax)[None, :] < torch.tensor(widths)[:, None]).float()


SPACES: Registry[Callable[..., SearchSpace]] = Registry("search space")


def get_space(name: str, **kwargs: Any) -> SearchSpace:
    return SPACES.get(name)(**kwargs)


def build(spec: ArchSpec, **space_kwargs: Any) -> nn.Module:
    """The plain network of ``spec``; the same module (and init, under a fixed seed) every time."""
    space = get_space(spec.space, num_classes=spec.num_classes, **space_kwargs)
    return space.build(spec)
