"""The task contract and the registry of tasks.

A task owns everything that depends on the kind of data (DESIGN.md "Tasks"): its data
configuration type, its dataset layouts and loaders, the training transform (raw input →
the tensor a model eats), augmentation, loss and metric, an example input, and what the
pipeline records about a dataset. The pipeline, search, training, export, calibration, report
and CLI ask the task; they never branch on its name.

Adding a task is one module (or folder) plus ``@TASKS.register(name)``; the contract tests in
``tests/edgenas/test_tasks.py`` are parametrised over :data:`TASKS` and pick it up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

from edgenas.registry import Registry

if TYPE_CHECKING:  # torch is imported where it is used: `edgenas tasks` and `--help` stay fast
    import torch


@dataclass(frozen=True)
class Metric:
    """How a task scores a model: ``name`` (``accuracy``, ``psnr``), whether higher is better, and
    how int8 fidelity is judged against fp32 (``fidelity``: ``argmax agreement`` for classifiers)."""

    name: str
    higher_is_better: bool = True
    fidelity: str = "argmax agreement"
    unit: str = ""  # "" = a fraction shown as a percentage; else a unit such as "dB"
    # how far the raw input → front end → int8 pipeline may score below the PyTorch pipeline (in
    # the metric's own terms: a fraction, or dB)
    raw_input_tolerance: float = 0.005


@dataclass(frozen=True)
class Split:
    """One split as the model sees it: inputs ``x`` [N, C, H, W] float32 and targets ``y``;
    ``groups`` (optional, [N] int) says which source item each example is a part of, where the
    task scores items rather than examples (the tiles of a super-resolution test image)."""

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray | None = None


class FrontEnd:
    """A task's front end as a model of its own for the board (raw input → the model input): what
    the front-end table prices, the exporter verifies and the bundle ships. Every method takes the
    data configuration it is for; ``norm`` = per-channel (mean, std) folded into the output."""

    kind: ClassVar[str] = ""
    raw_input: ClassVar[str] = ""  # what the board script reads: "audio" (a WAV) or "image" (PNG/JPEG…)

    def raw_shape(self, data: Any) -> tuple[int, ...]:
        """The shape of one raw input as the front-end model takes it (batch of 1 included)."""
        raise NotImplementedError

    def describe(self, data: Any) -> str:
        """One line for the bundle's README: raw input → model input."""
        raise NotImplementedError

    def impls(self, data: Any, fmt: str, lowmem: bool = False) -> list[str]:
        """The implementations to price for ``data`` in ``fmt``, fastest-believed first (with
        ``lowmem``, a low-memory one too where the task has one)."""
        return [self.resolve_impl(data, fmt)]

    def resolve_impl(self, data: Any, fmt: str, impl: str | None = None) -> str:
        raise NotImplementedError

    def export(self, data: Any, fmt: str, path: Any, norm: Any = None, impl: str | None = None) -> Any:
        """Write the front end of ``data`` in ``fmt`` (onnx | tflite) to ``path``; returns the path."""
        raise NotImplementedError

    def run(self, path: Any, raw: np.ndarray) -> np.ndarray:
        """Model inputs [N, C, H, W] float32 of raw inputs through a front-end file of either format."""
        raise NotImplementedError

    def reference(self, raw: np.ndarray, data: Any) -> np.ndarray:
        """The training transform of raw inputs (what the front end must reproduce), not standardised."""
        raise NotImplementedError

    def sources(self) -> list[str]:
        """Files whose content defines the exported front ends (a change exports them anew)."""
        raise NotImplementedError


class Task:
    """Base class of every registered task. Subclasses set the class attributes and fill in the
    data methods; classification tasks inherit the loss and metric of :class:`Classification`."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line for `edgenas tasks`
    data_config_class: ClassVar[type] = type(None)  # the frozen dataclass of one data configuration
    default_space: ClassVar[str] = ""
    metric: ClassVar[Metric] = Metric("accuracy")
    input_kind: ClassVar[str] = ""  # what the board reads: "audio clip", "image", …
    # the report's words for the split the choice logits learn on and for what each graph's RAM holds
    val_split: ClassVar[str] = "val split"
    memory_note: ClassVar[str] = "the front end's float32 buffers; the int8 model's activations"
    # axes of a model-input batch [N, C, H, W] the standardisation statistics reduce over (the
    # others get one mean/std each, folded into the exported front end): channels by default
    norm_axes: ClassVar[tuple[int, ...]] = (0, 2, 3)
    # space options of a typical dataset, for building a space with no dataset at hand (calibration)
    calibration_options: ClassVar[dict[str, Any]] = {}
    # run settings (dotted keys, as ``--set``) this task's runs start from: the defaults measured
    # best for it, below the config file, flags and ``--set``
    config_defaults: ClassVar[dict[str, Any]] = {}

    # ---- data ----------------------------------------------------------------------------
    def open_dataset(self, cfg: Any, *, sink: Callable[..., None], cache_dir: Any) -> Any:
        """The dataset of a run config (``cfg.data``, ``cfg.layout``, ``cfg.seed``…)."""
        raise NotImplementedError

    def dataset_info(self, ds: Any) -> dict[str, Any]:
        """What the data stage records about ``ds`` (name, classes, split sizes, …)."""
        raise NotImplementedError

    def describe_dataset(self, info: dict[str, Any]) -> str:
        """One line for the report from :meth:`dataset_info`'s record."""
        return f"{info['splits']} examples, {len(info['classes'])} classes"

    def check_split(self, ds: Any, split: str, sink: Callable[..., None]) -> None:
        """Decode every raw file of ``split`` now (a one-line DataError naming a bad file): the
        data stage checks the test split, whose features are computed only after training."""
        raise NotImplementedError

    def space_options(self, ds: Any) -> dict[str, Any]:
        """Keyword arguments a space of this task takes from the dataset (e.g. ``num_classes``)."""
        raise NotImplementedError

    def load_split(self, ds: Any, split: str, data: Any, *, cache_dir: Any, sink: Callable[..., None],
                   variant: Any = None) -> Split:
        """The model inputs of ``split`` under data configuration ``data`` (cached by the task);
        ``variant`` is one of :meth:`train_variants` (an extra copy of the training set)."""
        raise NotImplementedError

    def raw_split(self, ds: Any, split: str, data: Any, *, cache_dir: Any,
                  sink: Callable[..., None] | None = None) -> np.ndarray:
        """The raw inputs of ``split`` as the board reads them (what the front end eats)."""
        raise NotImplementedError

    def calibration_inputs(self, ds: Any, data: Any, *, cache_dir: Any, sink: Callable[..., None]) -> np.ndarray:
        """Model inputs of the board's shape for int8 calibration (not standardised): the train split's."""
        return self.load_split(ds, "train", data, cache_dir=cache_dir, sink=sink).x

    def frontend(self) -> FrontEnd:
        """The board-side front end of this task's data configurations."""
        raise NotImplementedError

    def bundle_sample(self, ds: Any, dest: Any, data: Any = None) -> Any:
        """A raw input file the bundle ships as its sample (the first test item's file), or None;
        ``dest`` is a folder the task may write one into, ``data`` the shipped data configuration."""
        from pathlib import Path

        path = next((c.path for c in ds.splits["test"] if getattr(c, "path", "")), None)
        return Path(path) if path else None

    def train_variants(self, train_cfg: Any) -> tuple[Any, ...]:
        """Extra copies of the training set the final training gets (e.g. speed-perturbed audio)."""
        return ()

    def augment(self, x: torch.Tensor, train_cfg: Any, gen: torch.Generator) -> torch.Tensor:
        """Random training augmentation of a batch of model inputs (none by default)."""
        return x

    def norm_stats(self, x: np.ndarray, data: Any = None) -> tuple[np.ndarray, np.ndarray] | None:
        """(mean, std) over :attr:`norm_axes` of a training set's model inputs of data configuration
        ``data``, float32 — or None where that configuration is not standardised."""
        return (x.mean(axis=self.norm_axes).astype(np.float32),
                (x.std(axis=self.norm_axes) + 1e-6).astype(np.float32))

    def normalize(self, x: np.ndarray, stats: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """``x`` standardised by :meth:`norm_stats` (broadcast over :attr:`norm_axes`)."""
        shape = [1 if a in self.norm_axes else x.shape[a] for a in range(x.ndim)]
        return (x - stats[0].reshape(shape)) / stats[1].reshape(shape)

    def example_input(self, data: Any, n: int = 2, seed: int = 0) -> np.ndarray:
        """``n`` random model inputs of data configuration ``data`` (tests, micro-benchmarks)."""
        shape = data.input_shape
        return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)

    def example_target(self, data: Any, n: int = 2, seed: int = 0) -> np.ndarray:
        """``n`` random targets of data configuration ``data`` (tests): what ``load_split`` gives as ``y``."""
        raise NotImplementedError

    def describe_data(self, data: Any) -> str:
        """One line for the report: the data configuration in the user's words."""
        return ", ".join(f"{k} {v}" for k, v in data.to_dict().items())

    # ---- objective -----------------------------------------------------------------------
    def loss(self, out: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        raise NotImplementedError

    def hits(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Sum over the batch of the per-example metric (the metric is ``hits / N``)."""
        raise NotImplementedError

    def score(self, out: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> float:
        """The metric of a whole split's outputs (NaN when empty): ``hits / N`` unless the task
        scores ``groups`` of examples as one item (super-resolution: a test image's tiles)."""
        import torch

        if len(y) == 0:
            return float("nan")
        return float(self.hits(torch.as_tensor(np.asarray(out)), torch.as_tensor(np.asarray(y)))) / len(y)

    def fidelity(self, out: np.ndarray, ref: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> float:
        """How closely a deployed file's outputs ``out`` follow the fp32 PyTorch outputs ``ref``
        (:attr:`Metric.fidelity` says what the number is)."""
        raise NotImplementedError


class Classification(Task):
    """Cross-entropy loss, accuracy (argmax = label), int8 fidelity as argmax agreement."""

    metric = Metric("accuracy", higher_is_better=True, fidelity="argmax agreement")

    def loss(self, out: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(out, y, label_smoothing=label_smoothing)

    def hits(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (out.argmax(1) == y).sum()

    def example_target(self, data: Any, n: int = 2, seed: int = 0) -> np.ndarray:
        return np.zeros(n, dtype=np.int64)

    def fidelity(self, out: np.ndarray, ref: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> float:
        """The fraction of examples whose argmax equals fp32 PyTorch's."""
        return float((np.asarray(out).argmax(1) == np.asarray(ref).argmax(1)).mean()) if len(ref) else float("nan")


def calls_per_input(data: Any) -> int:
    """How often the model runs per raw input of data configuration ``data`` (a super-resolution
    frame's tiles; 1 for every other task): per-input latency is per-call latency × this."""
    return int(getattr(data, "calls_per_input", 1))


TASKS: Registry[type[Task]] = Registry("task")

_instances: dict[str, Task] = {}


def task_of(data: Any) -> Task:
    """The task whose data configuration type ``data`` is."""
    for name in TASKS.names():
        if isinstance(data, TASKS.get(name).data_config_class):
            return get_task(name)
    raise TypeError(f"{type(data).__name__} is no registered task's data configuration")


def get_task(name: str) -> Task:
    """The (stateless, shared) instance of task ``name``; unknown names are one-line ConfigErrors."""
    if name not in _instances:
        _instances[name] = TASKS.get(name)()
    return _instances[name]
