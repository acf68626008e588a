"""Time-series classification: one case [dims, length] → fill, pad/resample, normalise → [dims, L, 1] → class.

Data configuration: :class:`TSConfig` — the dataset's dimensions and fixed length (the longest
training case), and the three searched choices: the resampled length (native, ½, ¼), the
normalisation (per-series z, per-dimension dataset statistics, none) and, for variable-length
data, the padding policy (zero, edge, resample to the fixed length). Datasets: the sktime/UEA
``.ts`` and UCR ``.tsv`` formats (:mod:`edgenas.datasets.timeseries`). Without a TEST file a
test split is held out of TRAIN (seeded, stratified) and never read during the search; the
search's validation split is held out of the rest the same way. Front end on the board: the
resample/normalise model of :mod:`edgenas.export.ts_frontend` before the int8 classifier (the
board script fills missing values and pads a case to the fixed length first, as training does).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from edgenas.errors import ConfigError
from edgenas.datasets.ts_prep import raw_cases, transform
from edgenas.tasks.base import TASKS, Classification, Split

if TYPE_CHECKING:
    import torch

NORMS = ("series", "dataset", "none")
PADDINGS = ("zero", "edge", "resample")
FACTORS = {"1": 1.0, "1/2": 0.5, "1/4": 0.25}  # the "length" choice: native, ½, ¼ of the fixed length


@dataclass(frozen=True)
class TSConfig:
    """Cases of ``dims`` dimensions brought to ``length`` samples by ``padding`` (missing values
    filled first), resampled by ``factor`` (a label of :data:`FACTORS`) and normalised by ``norm``:
    the model input is [dims, input_length, 1] (time on the height axis, as kws-tcn)."""

    dims: int = 1
    length: int = 128
    factor: str = "1"
    norm: str = "series"
    padding: str = "zero"

    def __post_init__(self) -> None:
        for name in ("dims", "length"):
            object.__setattr__(self, name, int(getattr(self, name)))
        object.__setattr__(self, "factor", str(self.factor))
        if self.factor not in FACTORS:
            raise ConfigError(f"length factor must be one of {', '.join(FACTORS)}, got {self.factor!r}")
        if self.norm not in NORMS:
            raise ConfigError(f"normalisation must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.padding not in PADDINGS:
            raise ConfigError(f"padding must be one of {', '.join(PADDINGS)}, got {self.padding!r}")
        if min(self.dims, self.length) <= 0:
            raise ConfigError(f"invalid time-series data config {self}")

    @property
    def input_length(self) -> int:
        """The model's time steps: ``length · factor`` rounded half up, at least 8 (or ``length``)."""
        from edgenas.datasets.ts_prep import resampled_length

        return resampled_length(self.length, FACTORS[self.factor])

    @property
    def feature_shape(self) -> tuple[int, int]:
        return (self.input_length, 1)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.dims, self.input_length, 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TSConfig":
        return cls(**d)

    def key(self) -> str:
        f = self.factor.replace("/", "_")
        return f"ts{self.dims}x{self.length}_f{f}_{self.norm}_{self.padding}"


# ---- the run's dataset: TRAIN (and TEST) cases split into train / val / test -----------------


@dataclass(frozen=True)
class TSCase:
    """One case of a run split: ``index`` into the source file's cases (``source`` "train"/"test")."""

    source: str
    index: int
    label: int
    path: str = ""  # no file of its own (the board sample is written from the arrays)


@dataclass
class TSRunDataset:
    """A time-series dataset as a run sees it: the read files and the three splits."""

    name: str
    root: str
    data: Any  # edgenas.datasets.timeseries.TimeSeriesDataset
    splits: dict[str, list[TSCase]]
    notes: list[str]

    @property
    def classes(self) -> list[str]:
        return list(self.data.classes)

    def cases(self, split: str) -> list[Any]:
        """float32 [dims, length_i] arrays of ``split`` (NaN = missing)."""
        src = {"train": self.data.train, "test": self.data.test}
        return [src[c.source].cases[c.index] for c in self.splits[split]]

    def fingerprint(self) -> str:
        from edgenas.datasets.base import split_fingerprint

        return split_fingerprint(f"{self.data.fingerprint()}\0", self.classes, self.splits,
                                 lambda c: f"{c.source}:{c.index}\n")


def parse_fold(text: str) -> tuple[int, int] | None:
    """``"i/k"`` → (i, k) with 1 ≤ i ≤ k, k ≥ 2; "" → None."""
    if not text:
        return None
    try:
        i, k = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"test_fold must look like 2/5 (fold 2 of 5), got {text!r}") from None
    if k < 2 or not 1 <= i <= k:
        raise ConfigError(f"test_fold {text!r}: need 1 ≤ fold ≤ k and k ≥ 2")
    return i, k


def open_run_dataset(path: str, *, seed: int = 0, test_fold: str = "", test_fraction: float = 0.2,
                     val_fraction: float = 0.25) -> TSRunDataset:
    """Read ``path`` (a folder or ``<Name>_TRAIN.ts/.tsv``) and split it. The test split is the
    TEST file when there is one; else fold ``i`` of ``k`` stratified folds of TRAIN
    (``test_fold="i/k"``, the cross-validation benchmark's folds) or, by default, ``test_fraction``
    of TRAIN held out (seeded, stratified). The search's val split is ``val_fraction`` of the rest."""
    from edgenas.datasets.timeseries import open_timeseries
    from edgenas.datasets.ts_prep import holdout_split, stratified_folds

    ds = open_timeseries(path)
    labels = ds.train.labels
    notes = []
    fold = parse_fold(test_fold)
    if fold is not None:
        if ds.test is not None:
            raise ConfigError(f"{ds.name} has a TEST file: test_fold applies only to a TRAIN-only dataset")
        i, k = fold
        rest, test_idx = stratified_folds(labels, k=k, seed=seed)[i - 1]
        notes.append(f"test split = fold {i}/{k} of TRAIN (stratified, seed {seed})")
    elif ds.test is None:
        rest, test_idx = holdout_split(labels, test_fraction, seed=seed)
        notes.append(f"no TEST file: {len(test_idx)} TRAIN cases ({test_fraction:.0%} per class) held out as the "
                     "test split, never read during the search")
    else:
        rest, test_idx = None, None
    rest_idx = list(range(len(labels))) if rest is None else [int(v) for v in rest]
    sub_train, sub_val = holdout_split(labels[rest_idx], val_fraction, seed=seed + 1)
    tr = [TSCase("train", rest_idx[j], int(labels[rest_idx[j]])) for j in sub_train]
    va = [TSCase("train", rest_idx[j], int(labels[rest_idx[j]])) for j in sub_val]
    if test_idx is None:
        te = [TSCase("test", j, int(v)) for j, v in enumerate(ds.test.labels)]
    else:
        te = [TSCase("train", int(j), int(labels[j])) for j in test_idx]
    if not ds.equal_length:
        notes.append(f"variable length {ds.min_length}-{ds.max_length}: cases are brought to {ds.max_length} "
                     "by the searched padding policy")
    return TSRunDataset(name=ds.name, root=str(Path(ds.train.path).parent), data=ds,
                        splits={"train": tr, "val": va, "test": te}, notes=notes)


@TASKS.register("timeseries")
class TimeSeriesTask(Classification):
    name = "timeseries"
    summary = ("time-series classification: UEA .ts / UCR .tsv files, resample/normalise front end "
               "(length, normalisation and padding searched)")
    data_config_class = TSConfig
    default_space = "ts-tcn"
    input_kind = "one case (a .ts line or a CSV row)"
    memory_note = "the front end's float32 series buffers; the int8 classifier's activations"
    norm_axes = (0, 2, 3)  # "dataset" normalisation: one mean/std per dimension
    calibration_options = {"num_classes": 4, "dims": 1, "length": 128, "equal_length": True}
    # 40–270 cases: with the global defaults (batch 64, 30 epochs) a run took one optimiser step per
    # epoch and GunPoint's test split stayed at chance (50%); batches of 16 and 10× the epochs
    # reached 100% (still about half a minute a run)
    config_defaults = {"train.epochs": 300, "train.batch_size": 16, "search.epochs": 60, "search.batch_size": 16}

    def open_dataset(self, cfg: Any, *, sink: Callable[..., None], cache_dir: Any) -> Any:
        if not cfg.data:
            raise ConfigError("--task timeseries needs --data: a folder with <Name>_TRAIN.ts (or .tsv), or that file, "
                              "e.g. ../shared/data/ucr_uea_timeseries/GunPoint")
        ds = open_run_dataset(cfg.data, seed=cfg.seed, test_fold=cfg.test_fold)
        for note in ds.notes:
            sink("data.timeseries", message=f"{ds.name}: {note}")
        return ds

    def dataset_info(self, ds: Any) -> dict[str, Any]:
        d = ds.data
        return {"name": ds.name, "root": ds.root, "classes": ds.classes, "dims": d.dims,
                "min_length": d.min_length, "max_length": d.max_length, "equal_length": d.equal_length,
                "test_file": d.test is not None, "fingerprint": ds.fingerprint(),
                "splits": {k: len(v) for k, v in ds.splits.items()}, "notes": list(ds.notes)}

    def describe_dataset(self, info: dict[str, Any]) -> str:
        length = (str(info["max_length"]) if info["equal_length"]
                  else f"{info['min_length']}-{info['max_length']} (variable)")
        notes = f"; {'; '.join(info['notes'])}" if info.get("notes") else ""
        return (f"{info['splits']} cases of {info['dims']} dimension(s) × length {length}, "
                f"{len(info['classes'])} classes (val held out of train, seeded and stratified){notes}")

    def check_split(self, ds: Any, split: str, sink: Callable[..., None]) -> None:
        """Nothing to do: the files were parsed whole when the dataset was opened (a bad value is a
        one-line DataError there), and the pipeline checks that no split is empty."""

    def space_options(self, ds: Any) -> dict[str, Any]:
        d = ds.data
        return {"num_classes": len(ds.classes), "dims": d.dims, "length": d.max_length,
                "equal_length": d.equal_length}

    def load_split(self, ds: Any, split: str, data: Any, *, cache_dir: Any, sink: Callable[..., None],
                   variant: Any = None) -> Split:
        y = np.array([c.label for c in ds.splits[split]], dtype=np.int64)
        return Split(transform(self.raw_split(ds, split, data, cache_dir=cache_dir), data), y)

    def raw_split(self, ds: Any, split: str, data: Any, *, cache_dir: Any,
                  sink: Callable[..., None] | None = None) -> np.ndarray:
        return raw_cases(ds.cases(split), data)

    def norm_stats(self, x: np.ndarray, data: Any = None) -> tuple[np.ndarray, np.ndarray] | None:
        """Per-dimension statistics for ``"dataset"`` normalisation; None (no standardisation) for
        ``"series"`` (already z-normalised per series) and ``"none"``."""
        if data is not None and data.norm != "dataset":
            return None
        return super().norm_stats(x, data)

    def frontend(self) -> Any:
        from edgenas.export.ts_frontend import TSFrontEnd

        return TSFrontEnd()

    def bundle_sample(self, ds: Any, dest: Any, data: Any = None) -> Any:
        """The first test case as one CSV row (dims × length values, dimension-major) in ``dest``."""
        case = ds.cases("test")[0]
        path = Path(dest) / "sample.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(",".join("?" if v != v else repr(float(v)) for v in case.reshape(-1)) + "\n")
        return path

    def augment(self, x: torch.Tensor, train_cfg: Any, gen: torch.Generator) -> torch.Tensor:
        """None: the shifts and flips of images or audio are not label-preserving for every series."""
        return x

    def example_input(self, data: Any, n: int = 2, seed: int = 0) -> np.ndarray:
        """The transform of ``n`` random-walk cases (real model inputs, not random numbers)."""
        rng = np.random.default_rng(seed)
        cases = list(np.cumsum(rng.standard_normal((n, data.dims, data.length)), axis=2).astype(np.float32))
        return transform(raw_cases(cases, data), data)

    def describe_data(self, data: Any) -> str:
        norm = {"series": "z-normalised per series", "dataset": "standardised by dataset statistics",
                "none": "not normalised"}[data.norm]
        scale = "native" if data.factor == "1" else f"{data.factor} resampled"
        return (f"{data.dims}×{data.input_length} ({scale} from {data.length}, {data.padding} padding), {norm}")
