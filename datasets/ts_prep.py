"""Time-series classification: the data-configuration transforms (searched as data choice points,
exported as the model's front end) and the stratified splits of a training set.

Cases are float32 arrays [dims, length_i], as :class:`~edgenas.datasets.timeseries.TimeSeriesSplit`
holds them; NaN is a missing value.

* :func:`fill_missing` — NaNs of each series (one dimension of one case) are linearly interpolated
  between the nearest present values on either side; leading and trailing NaNs take the nearest
  present value (constant extrapolation); a series with no present value becomes all 0. ±inf is
  a DataError (not a missing value). Inputs are never modified; every array returned is new.
* :func:`fixed_length` — fills missing values (above), then brings every case to one length:
  ``"zero"`` pads with zeros at the end, ``"edge"`` repeats the last value, both keep the first
  ``length`` values of a longer case; ``"resample"`` maps each case onto ``length`` samples with
  :func:`resample_matrix` (so a longer case is antialiased, not cut). The result has no NaN.
* :func:`resample_matrix` — R [src, dst] with ``x @ R`` resampling the last axis, corners aligned:
  output 0 is sample 0 and output dst-1 is sample src-1 (step ``s = (src-1)/(dst-1)``).
  Upsampling (s ≤ 1) is linear interpolation, equal to ``np.interp``. Downsampling by linear
  interpolation alone would alias: each output reads only its two nearest samples, so content
  above the new Nyquist rate folds back into the band (at s = 2 exactly it is plain decimation,
  and a ±1 alternating series stays ±1). A box pre-filter (mean of s samples) attenuates it, but
  its sinc response leaks (first sidelobe −13 dB); a triangle (box ∗ box, sinc², −26 dB, the
  filter of Pillow's bilinear reduce) is better, and being linear it folds into the same matrix.
  So for s > 1 each interior output is the triangle-weighted mean of the samples within ±s of its
  position (weights ``1 − |i − t|/s``, normalised to sum 1); the two corner outputs stay the end
  samples (the triangle with the series point-reflected about its end, which keeps linear trends,
  reduces to exactly that). Every column sums to 1, so constants stay constant. One matrix per
  (src, dst): a single MatMul in ONNX and TFLite, reproduced exactly.
* :func:`resampled_length` — the "resampled length" choice (:data:`RESAMPLE_FACTORS`: native, ½,
  ¼ of the fixed length): ``length · factor`` rounded half up, at least :data:`MIN_LENGTH` (or
  ``length`` itself when that is shorter: never longer than the native length).
* :func:`norm_stats` / :func:`normalise` — ``"series"``: each dimension of each case to mean 0,
  std 1 over time (ONNX: ReduceMean, Sub, Mul, ReduceMean, Sqrt, Max, Div); ``"dataset"``: per
  dimension mean/std over all training cases and time steps (zero padding counts), computed once
  by :func:`norm_stats` on the training array and applied unchanged to any split (ONNX: Sub, Div by
  constants); ``"none"``. Population std (ddof 0), floored at :data:`STD_FLOOR`; statistics are
  computed in float64, results are float32.
* :func:`stratified_folds` / :func:`holdout_split` — index splits, stratified by class and fixed
  by the seed: each class's cases are ordered by a SHA-1 hash of (seed, repeat, index), the same on
  every machine and numpy version.

Bad arguments (an unknown policy or mode, named with the choices; ``length`` < 1; ``k`` < 2 or
more folds than cases; a fraction or factor out of range) are one-line :class:`ConfigError`\\ s;
bad data (a case that is not [dims, length], dimensions that differ, infinite values, NaN given
to :func:`normalise`) are one-line :class:`DataError`\\ s.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from edgenas.datasets.base import hash_rank, held_out_count
from edgenas.errors import ConfigError, DataError

LENGTH_POLICIES = ("zero", "edge", "resample")
NORM_MODES = ("series", "dataset", "none")
RESAMPLE_FACTORS = (1.0, 0.5, 0.25)  # native, ½, ¼ of the fixed length
MIN_LENGTH = 8  # resampled_length never goes below this (unless the native length is shorter)
STD_FLOOR = 1e-8


def _choice(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r} (choices: {', '.join(choices)})")
    return value


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    try:
        n = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}") from None
    if n < 1:
        raise ConfigError(f"{what} must be a positive integer, got {n}")
    return n


# ---- missing values and fixed length -------------------------------------------------------


def _cases(cases: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The cases as float32 [dims, length] arrays of one number of dimensions (DataError if not)."""
    out = [np.asarray(c, dtype=np.float32) for c in cases]
    if not out:
        raise DataError("no cases")
    dims = None
    for i, c in enumerate(out):
        if c.ndim != 2 or c.shape[0] < 1 or c.shape[1] < 1:
            raise DataError(f"cases[{i}] has shape {c.shape}; expected [dims, length] with dims, length ≥ 1")
        if dims is None:
            dims = c.shape[0]
        elif c.shape[0] != dims:
            raise DataError(f"cases[{i}] has {c.shape[0]} dimensions, cases[0] has {dims}")
    return out


def fill_missing(cases: Sequence[np.ndarray]) -> list[np.ndarray]:
    """New float32 copies of ``cases`` ([dims, length_i] each) without NaN (module doc: linear
    interpolation inside a series, nearest value at its ends, 0 for an all-NaN series)."""
    out = []
    for i, c in enumerate(_cases(cases)):
        c = c.copy()
        if not np.isfinite(c).all():
            inf = np.argwhere(np.isinf(c))
            if len(inf):
                d, t = inf[0]
                raise DataError(f"cases[{i}] has an infinite value (dimension {d}, time {t}); only NaN is a missing value")
            t_all = np.arange(c.shape[1])
            for row in c:
                gap = np.isnan(row)
                if gap.all():
                    row[:] = 0.0
                elif gap.any():
                    row[gap] = np.interp(t_all[gap], t_all[~gap], row[~gap])
        out.append(c)
    return out


def fixed_length(cases: Sequence[np.ndarray], policy: str, length: int) -> np.ndarray:
    """float32 [N, dims, length]: the cases with missing values filled, each brought to ``length``
    by ``policy`` — ``"zero"``, ``"edge"`` or ``"resample"`` (module doc)."""
    _choice(policy, LENGTH_POLICIES, "length policy")
    length = _positive_int(length, "length")
    filled = fill_missing(cases)
    out = np.zeros((len(filled), filled[0].shape[0], length), dtype=np.float32)
    if policy == "resample":
        by_length: dict[int, list[int]] = {}
        for i, c in enumerate(filled):
            by_length.setdefault(c.shape[1], []).append(i)
        for n, idx in by_length.items():
            out[idx] = np.stack([filled[i] for i in idx]) @ resample_matrix(n, length)
        return out
    for i, c in enumerate(filled):
        n = min(c.shape[1], length)
        out[i, :, :n] = c[:, :n]
        if policy == "edge" and n < length:
            out[i, :, n:] = c[:, n - 1:n]
    return out


# ---- resampling ----------------------------------------------------------------------------


def resample_matrix(src_len: int, dst_len: int) -> np.ndarray:
    """float32 [src_len, dst_len] R: ``x @ R`` resamples the last axis of ``x`` from ``src_len`` to
    ``dst_len`` samples (module doc: corners aligned, linear when upsampling, triangle-filtered when
    downsampling). ``src_len == dst_len`` is the identity; ``dst_len == 1`` is the mean;
    ``src_len == 1`` repeats the sample."""
    src = _positive_int(src_len, "source length")
    dst = _positive_int(dst_len, "target length")
    if dst == 1:
        return np.full((src, 1), 1.0 / src, dtype=np.float32)
    if src == 1:
        return np.ones((1, dst), dtype=np.float32)
    step = (src - 1) / (dst - 1)
    t = np.arange(dst) * (src - 1) / (dst - 1)  # source position of each output, t[-1] == src - 1
    t[-1] = src - 1
    i = np.arange(src, dtype=np.float64)[:, None]
    if step <= 1.0:
        return np.clip(1.0 - np.abs(i - t[None, :]), 0.0, None).astype(np.float32)
    w = np.clip(1.0 - np.abs(i - t[None, :]) / step, 0.0, None)
    w[:, 0] = 0.0
    w[0, 0] = 1.0
    w[:, -1] = 0.0
    w[-1, -1] = 1.0
    return (w / w.sum(axis=0, keepdims=True)).astype(np.float32)


def resampled_length(length: int, factor: float, minimum: int = MIN_LENGTH) -> int:
    """``length · factor`` (``factor`` in (0, 1]) rounded half up, but at least ``minimum`` — or
    ``length`` when it is shorter than ``minimum`` (a resampled series is never longer than the
    native one)."""
    length = _positive_int(length, "length")
    minimum = _positive_int(minimum, "minimum length")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0.0 < factor <= 1.0:
        raise ConfigError(f"the resampling factor must be in (0, 1], got {factor!r}")
    return max(min(minimum, length), math.floor(length * factor + 0.5))


# ---- normalisation -------------------------------------------------------------------------


@dataclass(frozen=True)
class NormStats:
    """Per-dimension statistics of the training cases for ``"dataset"`` normalisation: ``mean`` and
    ``std`` (floored at :data:`STD_FLOOR`), float32 [dims] each."""

    mean: np.ndarray
    std: np.ndarray

    @property
    def dims(self) -> int:
        return int(self.mean.shape[0])


def _batch(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[0] < 1 or x.shape[2] < 1:
        raise DataError(f"{what} has shape {x.shape}; expected [N, dims, length] with N, length ≥ 1 "
                        "(use fixed_length first)")
    if not np.isfinite(x).all():
        raise DataError(f"{what} has missing (NaN) or infinite values; fill them first (fixed_length does)")
    return x


def norm_stats(x_train: np.ndarray, mode: str) -> NormStats | None:
    """For ``mode == "dataset"``, the per-dimension mean and std of ``x_train`` [N, dims, length]
    over cases and time; None for the other modes (they need no statistics)."""
    _choice(mode, NORM_MODES, "normalisation mode")
    if mode != "dataset":
        return None
    x = _batch(x_train, "the training array").astype(np.float64)
    mean = x.mean(axis=(0, 2))
    std = np.maximum(x.std(axis=(0, 2)), STD_FLOOR)
    return NormStats(mean=mean.astype(np.float32), std=std.astype(np.float32))


def normalise(x: np.ndarray, mode: str, stats: NormStats | None = None) -> np.ndarray:
    """float32 [N, dims, length]: ``x`` normalised by ``mode`` (module doc). ``"dataset"`` needs the
    training set's ``stats`` (from :func:`norm_stats`) and never recomputes them; the other modes
    take no ``stats``. ``"none"`` returns ``x`` as float32 (not copied when it already is)."""
    _choice(mode, NORM_MODES, "normalisation mode")
    if mode != "dataset" and stats is not None:
        raise ConfigError(f"normalisation mode {mode!r} takes no statistics (only 'dataset' does)")
    x = _batch(x, "the array to normalise")
    if mode == "none":
        return x.astype(np.float32, copy=False)
    if mode == "series":
        x64 = x.astype(np.float64)
        mean = x64.mean(axis=2, keepdims=True)
        std = np.maximum(x64.std(axis=2, keepdims=True), STD_FLOOR)
        return ((x64 - mean) / std).astype(np.float32)
    if stats is None:
        raise ConfigError("normalisation mode 'dataset' needs the training statistics (norm_stats(x_train, 'dataset'))")
    if stats.dims != x.shape[1]:
        raise DataError(f"the statistics are for {stats.dims} dimensions, the array has {x.shape[1]}")
    mean = stats.mean.astype(np.float64)[None, :, None]
    std = stats.std.astype(np.float64)[None, :, None]
    return ((x.astype(np.float64) - mean) / std).astype(np.float32)


# ---- the time-series task's transform (a TSConfig's training inputs) ----------------------


def raw_cases(cases: Sequence[np.ndarray], data: Any) -> np.ndarray:
    """What the board's front end reads: float32 [N, length, dims] (time-major), missing values
    filled and every case brought to ``data.length`` by ``data.padding``."""
    return np.ascontiguousarray(fixed_length(cases, data.padding, data.length).transpose(0, 2, 1))


def transform(raw: np.ndarray, data: Any) -> np.ndarray:
    """The training transform of raw cases [N, length, dims] → model inputs [N, dims, L, 1]:
    resampled to ``input_length`` (one matrix product) and, for ``norm == "series"``, each series
    z-normalised. ``"dataset"`` standardisation is the pipeline's (per dimension, folded into the
    exported front end); ``"none"`` leaves the values as they are."""
    x = np.asarray(raw, dtype=np.float32).transpose(0, 2, 1)  # [N, dims, length]
    if data.input_length != data.length:
        x = x @ resample_matrix(data.length, data.input_length)
    if data.norm == "series":
        x = normalise(x, "series")
    return np.ascontiguousarray(x[..., None], dtype=np.float32)


# ---- stratified splits ---------------------------------------------------------------------


def _classes(labels: Sequence[object] | np.ndarray) -> np.ndarray:
    """Class index of every case (any label values), after checking ``labels`` is a non-empty list."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or len(arr) == 0:
        raise DataError(f"labels must be a non-empty 1-D sequence, got shape {arr.shape}")
    return np.unique(arr, return_inverse=True)[1].reshape(-1)


def _shuffled(members: np.ndarray, seed: int, repeat: int) -> np.ndarray:
    return members[hash_rank([f"{repeat}:{i}" for i in members.tolist()], seed)]


def stratified_folds(labels: Sequence[object] | np.ndarray, k: int = 5, seed: int = 0,
                     repeats: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k · repeats`` (train_idx, val_idx) pairs of sorted int64 indices into ``labels``, repeat by
    repeat. Within a repeat every case is in exactly one val fold and the train indices of a fold
    are all the others. Each class's cases (in seeded hash order, new per repeat) are dealt to the
    folds in turn, each class starting at the fold after the one where the previous class ended,
    so a class's count differs by at most 1 between folds, and so do the fold sizes. A class with
    fewer than ``k`` cases is in the val folds of only that many folds (one case each); the other
    folds validate without it, and a class of one case is missing from training in its val fold."""
    cls = _classes(labels)
    k = _positive_int(k, "the number of folds k")
    if k < 2:
        raise ConfigError(f"the number of folds k must be at least 2, got {k}")
    if k > len(cls):
        raise ConfigError(f"{k} folds need at least {k} cases, got {len(cls)}")
    repeats = _positive_int(repeats, "the number of repeats")
    seed = operator.index(seed)
    everything = np.arange(len(cls), dtype=np.int64)
    out = []
    for r in range(repeats):
        fold = np.empty(len(cls), dtype=np.int64)
        start = 0
        for c in range(int(cls.max()) + 1):
            members = _shuffled(np.flatnonzero(cls == c), seed, r)
            fold[members] = (start + np.arange(len(members))) % k
            start = (start + len(members)) % k
        for f in range(k):
            val = everything[fold == f]
            out.append((everything[fold != f], val))
    return out


def holdout_split(labels: Sequence[object] | np.ndarray, frac: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx), sorted int64: about ``frac`` (in (0, 1)) of every class held out —
    ``frac · n`` rounded (``base.held_out_count``), but at least one case and at most n − 1 of a class with n ≥ 2
    cases; a class of one case stays in train. Chosen by seeded hash order (module doc)."""
    cls = _classes(labels)
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.0 < frac < 1.0:
        raise ConfigError(f"the held-out fraction must be in (0, 1), got {frac!r}")
    seed = operator.index(seed)
    held = np.zeros(len(cls), dtype=bool)
    for c in range(int(cls.max()) + 1):
        members = _shuffled(np.flatnonzero(cls == c), seed, 0)
        held[members[:held_out_count(len(members), frac)]] = True
    if not held.any():
        raise DataError("no class has two or more cases; nothing can be held out")
    everything = np.arange(len(cls), dtype=np.int64)
    return everything[~held], everything[held]


__all__ = ["LENGTH_POLICIES", "MIN_LENGTH", "NORM_MODES", "NormStats", "RESAMPLE_FACTORS", "STD_FLOOR",
           "fill_missing", "fixed_length", "holdout_split", "norm_stats", "normalise", "raw_cases", "resample_matrix",
           "resampled_length", "stratified_folds", "transform"]
