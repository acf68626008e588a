"""Time-series data configuration: missing values and fixed length (exact values per policy),
the resampling matrix (np.interp when upsampling, triangle-filtered and antialiased when
downsampling), normalisation modes (dataset statistics from the training split only), stratified
folds and hold-out splits, and the real JapaneseVowels (variable length) and GunPoint files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from edgenas.datasets.timeseries import open_timeseries
from edgenas.datasets.ts_prep import (
    LENGTH_POLICIES,
    MIN_LENGTH,
    NORM_MODES,
    NormStats,
    fill_missing,
    fixed_length,
    holdout_split,
    norm_stats,
    normalise,
    resample_matrix,
    resampled_length,
    stratified_folds,
)
from edgenas.errors import ConfigError, DataError

from datasets_helpers import SHARED_DATA

UCR = SHARED_DATA / "ucr_uea_timeseries"
NAN = np.nan


@pytest.fixture
def ucr() -> Path:
    if not UCR.is_dir():
        pytest.skip(f"real time-series files not found at {UCR}")
    return UCR


def _case(*rows: list[float]) -> np.ndarray:
    return np.array(rows, dtype=np.float32)


def _one_line(exc: pytest.ExceptionInfo[Exception], *parts: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    for part in parts:
        assert part in msg, msg
    return msg


# ---- missing values ------------------------------------------------------------------------


def test_fill_missing_interpolates_inside_extends_ends_and_zeros_empty_series() -> None:
    case = _case([NAN, 1, NAN, NAN, 4, NAN], [NAN] * 6, [1, 2, 3, 4, 5, 6])
    before = case.copy()
    (out,) = fill_missing([case])
    np.testing.assert_array_equal(out, _case([1, 1, 2, 3, 4, 4], [0] * 6, [1, 2, 3, 4, 5, 6]))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(case, before)  # the input is not modified …
    clean = _case([1, 2])
    (same,) = fill_missing([clean])
    assert same is not clean  # … and a case without NaN is copied too
    np.testing.assert_array_equal(same, clean)


def test_fill_missing_rejects_infinite_values_and_bad_shapes() -> None:
    with pytest.raises(DataError) as e:
        fill_missing([_case([1, 2]), _case([1, np.inf])])
    _one_line(e, "cases[1]", "infinite", "time 1")
    with pytest.raises(DataError) as e:
        fill_missing([np.zeros(5, dtype=np.float32)])
    _one_line(e, "cases[0]", "[dims, length]")
    with pytest.raises(DataError) as e:
        fill_missing([_case([1, 2]), _case([1, 2], [3, 4])])
    _one_line(e, "cases[1] has 2 dimensions, cases[0] has 1")
    with pytest.raises(DataError, match="no cases"):
        fill_missing([])


# ---- fixed length --------------------------------------------------------------------------


CASES = [_case([1, 2, 3], [-1, -2, -3]), _case([4, 5, 6, 7, 8], [0, 0, 0, 0, 1])]


def test_fixed_length_zero_pads_and_truncates_at_the_end() -> None:
    out = fixed_length(CASES, "zero", 4)
    assert out.shape == (2, 2, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], _case([1, 2, 3, 0], [-1, -2, -3, 0]))
    np.testing.assert_array_equal(out[1], _case([4, 5, 6, 7], [0, 0, 0, 0]))


def test_fixed_length_edge_repeats_the_last_value() -> None:
    out = fixed_length(CASES, "edge", 6)
    np.testing.assert_array_equal(out[0], _case([1, 2, 3, 3, 3, 3], [-1, -2, -3, -3, -3, -3]))
    np.testing.assert_array_equal(out[1], _case([4, 5, 6, 7, 8, 8], [0, 0, 0, 0, 1, 1]))
    np.testing.assert_array_equal(fixed_length(CASES, "edge", 2)[1], _case([4, 5], [0, 0]))


def test_fixed_length_resample_interpolates_each_case() -> None:
    out = fixed_length(CASES, "resample", 4)
    # 3 → 4: positions 0, 2/3, 4/3, 2 (linear); 5 → 4: positions 0, 4/3, 8/3, 4, step 4/3 > 1, so
    # the inner outputs are triangle means: (.75·5 + .5·6)/1.25 and (.5·6 + .75·7)/1.25
    np.testing.assert_allclose(out[0], [[1, 5 / 3, 7 / 3, 3], [-1, -5 / 3, -7 / 3, -3]], atol=1e-6)
    np.testing.assert_allclose(out[1], [[4, 5.4, 6.6, 8], [0, 0, 0, 1]], atol=1e-6)


def test_fixed_length_fills_missing_values_first() -> None:
    case = _case([1, NAN, 3], [NAN, NAN, NAN])
    np.testing.assert_array_equal(fixed_length([case], "zero", 5)[0], _case([1, 2, 3, 0, 0], [0] * 5))
    np.testing.assert_array_equal(fixed_length([case], "edge", 4)[0], _case([1, 2, 3, 3], [0] * 4))
    np.testing.assert_allclose(fixed_length([case], "resample", 5)[0], [[1, 1.5, 2, 2.5, 3], [0] * 5])
    assert not np.isnan(case[0, 0])  # (the input keeps its NaN: untouched)
    assert np.isnan(case[0, 1])


def test_fixed_length_errors_name_the_choices() -> None:
    with pytest.raises(ConfigError) as e:
        fixed_length(CASES, "pad", 4)
    _one_line(e, "'pad'", ", ".join(LENGTH_POLICIES))
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="length must be a positive integer"):
            fixed_length(CASES, "zero", bad)  # type: ignore[arg-type]
    assert fixed_length(CASES, "zero", np.int64(3)).shape == (2, 2, 3)


# ---- resampling matrix ---------------------------------------------------------------------


PAIRS = [(2, 7), (5, 9), (7, 20), (24, 26), (150, 301), (9, 5), (26, 7), (150, 75), (150, 38), (1460, 365), (29, 8)]


@pytest.mark.parametrize("src,dst", PAIRS)
def test_resample_matrix_keeps_constants_and_corners(src: int, dst: int) -> None:
    r = resample_matrix(src, dst)
    assert r.shape == (src, dst) and r.dtype == np.float32
    assert (r >= 0).all()
    np.testing.assert_allclose(np.full((3, src), 2.5, dtype=np.float32) @ r, 2.5, rtol=1e-6)
    np.testing.assert_allclose(r.sum(axis=0), 1.0, atol=1e-6)  # every output a weighted mean
    x = np.random.default_rng(src * 1000 + dst).normal(size=(4, src)).astype(np.float32)
    y = x @ r
    np.testing.assert_allclose(y[:, 0], x[:, 0], atol=1e-6)
    np.testing.assert_allclose(y[:, -1], x[:, -1], atol=1e-6)


@pytest.mark.parametrize("src,dst", [(2, 7), (5, 9), (7, 20), (24, 26), (150, 301), (12, 12)])
def test_resample_matrix_upsampling_is_np_interp(src: int, dst: int) -> None:
    x = np.random.default_rng(dst).normal(size=src).astype(np.float64)
    t = np.linspace(0, src - 1, dst)
    np.testing.assert_allclose(x @ resample_matrix(src, dst).astype(np.float64), np.interp(t, np.arange(src), x),
                               atol=1e-6)


def test_resample_matrix_downsampling_is_a_triangle_filter() -> None:
    r = resample_matrix(9, 5)  # step 2: interior outputs are .25, .5, .25 of their neighbourhood
    expected = np.zeros((9, 5))
    expected[0, 0] = expected[8, 4] = 1.0
    for j in (1, 2, 3):
        expected[2 * j - 1:2 * j + 2, j] = [0.25, 0.5, 0.25]
    np.testing.assert_array_equal(r, expected.astype(np.float32))
    np.testing.assert_allclose(r.sum(axis=1), [1, .25, .5, .5, .5, .5, .5, .25, 1])
    for src, dst in [(150, 75), (150, 38), (1460, 365)]:
        r = resample_matrix(src, dst)
        assert r.sum() == pytest.approx(dst, rel=1e-5)
        inner = r.sum(axis=1)[10:-10]  # away from the corners, each sample weighs ≈ the scale
        np.testing.assert_allclose(inner, (dst - 1) / (src - 1), rtol=0.02)
        width = (r[:, dst // 2] > 0).sum()
        assert width >= 2 * int((src - 1) / (dst - 1))  # wider than linear interpolation's 2 taps


def test_resample_matrix_antialiases_where_linear_interpolation_aliases() -> None:
    nyquist = np.array([1, -1] * 75, dtype=np.float32)  # the fastest series there is
    for src, dst in [(150, 75), (150, 38)]:
        y = nyquist @ resample_matrix(src, dst)
        np.testing.assert_allclose(y[1:-1], 0.0, atol=1e-5)
    y9 = nyquist[:9] @ resample_matrix(9, 5)
    np.testing.assert_allclose(y9, [1, 0, 0, 0, 1], atol=1e-7)
    plain = np.interp(np.linspace(0, 8, 5), np.arange(9), nyquist[:9])
    np.testing.assert_array_equal(plain, [1, 1, 1, 1, 1])  # plain decimation: aliased to a constant


def test_resample_matrix_special_sizes_and_errors() -> None:
    np.testing.assert_array_equal(resample_matrix(26, 26), np.eye(26, dtype=np.float32))
    np.testing.assert_allclose(resample_matrix(4, 1), [[.25], [.25], [.25], [.25]])
    np.testing.assert_array_equal(resample_matrix(1, 3), [[1, 1, 1]])
    with pytest.raises(ConfigError, match="target length must be a positive integer, got 0"):
        resample_matrix(5, 0)
    with pytest.raises(ConfigError, match="source length"):
        resample_matrix(-1, 5)


def test_resampling_round_trips() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 2, 6)).astype(np.float32)
    up = x @ resample_matrix(6, 16)  # step exactly 1/3: every third output is a sample
    np.testing.assert_allclose(up[..., ::3], x, atol=1e-6)
    down = up @ resample_matrix(16, 6)  # smoothed (white noise is not band-limited), but:
    np.testing.assert_allclose(down[..., [0, -1]], x[..., [0, -1]], atol=1e-6)  # the corners kept
    assert (np.abs(down).max(axis=-1) <= np.abs(x).max(axis=-1) + 1e-6).all()  # means: no overshoot
    ramp = np.arange(9, dtype=np.float32) * 0.5 - 1
    np.testing.assert_allclose(ramp @ resample_matrix(9, 5), ramp[::2], atol=1e-6)  # linear trends kept
    np.testing.assert_allclose(ramp[::2] @ resample_matrix(5, 9) @ resample_matrix(9, 5), ramp[::2], atol=1e-6)
    t = np.linspace(0, 1, 200)
    smooth = np.sin(2 * np.pi * 3 * t).astype(np.float32)
    back = smooth @ resample_matrix(200, 50) @ resample_matrix(50, 200)
    assert np.abs(back - smooth).max() < 0.05
    # one matrix for a batch: the same as row by row
    batch = rng.normal(size=(4, 3, 30)).astype(np.float32)
    r = resample_matrix(30, 11)
    np.testing.assert_allclose(batch @ r, np.stack([[row @ r for row in case] for case in batch]), atol=1e-6)


def test_resampled_length_rounds_half_up_with_a_floor() -> None:
    assert [resampled_length(150, f) for f in (1.0, 0.5, 0.25)] == [150, 75, 38]  # 37.5 → 38
    assert [resampled_length(26, f) for f in (1.0, 0.5, 0.25)] == [26, 13, 8]  # 6.5 → 7 → floor 8
    assert [resampled_length(24, f) for f in (1.0, 0.5, 0.25)] == [24, 12, MIN_LENGTH]
    assert resampled_length(1460, 0.25) == 365
    assert resampled_length(90, 0.25) == 23 and resampled_length(13, 0.5, minimum=1) == 7  # half up, not to even
    assert resampled_length(5, 0.5) == 5  # shorter than the floor: never longer than native
    assert resampled_length(100, 0.25, minimum=30) == 30
    for bad in (0, 0.0, -0.5, 1.5, "half"):
        with pytest.raises(ConfigError, match=r"factor must be in \(0, 1\]"):
            resampled_length(100, bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="length must be a positive integer"):
        resampled_length(0, 0.5)


# ---- normalisation -------------------------------------------------------------------------


def test_series_normalisation_is_per_case_per_dimension() -> None:
    x = np.array([[[1, 2, 3], [5, 5, 5]], [[10, 20, 30], [0, 0, 6]]], dtype=np.float32)
    assert norm_stats(x, "series") is None and norm_stats(x, "none") is None
    y = normalise(x, "series")
    a = np.sqrt(1.5)
    np.testing.assert_allclose(y[0], [[-a, 0, a], [0, 0, 0]], atol=1e-6)  # a constant series → 0
    np.testing.assert_allclose(y[1], [[-a, 0, a], [-1 / np.sqrt(2), -1 / np.sqrt(2), np.sqrt(2)]], atol=1e-6)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(normalise(x, "none"), x)


def test_dataset_normalisation_uses_training_statistics_only() -> None:
    train = np.array([[[0, 2], [1, 1]], [[4, 6], [1, 1]]], dtype=np.float32)
    stats = norm_stats(train, "dataset")
    assert isinstance(stats, NormStats) and stats.dims == 2
    np.testing.assert_allclose(stats.mean, [3, 1])
    np.testing.assert_allclose(stats.std, [np.sqrt(5), 1e-8])  # a constant dimension: the floor
    np.testing.assert_allclose(normalise(train, "dataset", stats)[:, 0], [[-3, -1], [1, 3]] / np.sqrt(5), atol=1e-6)
    test = np.array([[[13, 13], [2, 1]]], dtype=np.float32)
    y = normalise(test, "dataset", stats)
    np.testing.assert_allclose(y[0, 0], [10 / np.sqrt(5)] * 2, rtol=1e-6)  # not its own mean 13 → 0
    np.testing.assert_allclose(y[0, 1], [1e8, 0], rtol=1e-6)
    np.testing.assert_allclose(stats.mean, [3, 1])  # the statistics did not change


def test_normalisation_errors() -> None:
    x = np.zeros((2, 1, 3), dtype=np.float32)
    with pytest.raises(ConfigError) as e:
        normalise(x, "minmax")
    _one_line(e, "'minmax'", ", ".join(NORM_MODES))
    with pytest.raises(ConfigError, match="unknown normalisation mode"):
        norm_stats(x, "global")
    with pytest.raises(ConfigError, match="needs the training statistics"):
        normalise(x, "dataset")
    stats = norm_stats(x, "dataset")
    with pytest.raises(ConfigError, match="takes no statistics"):
        normalise(x, "series", stats)
    with pytest.raises(DataError, match="for 1 dimensions, the array has 2"):
        normalise(np.zeros((1, 2, 3), dtype=np.float32), "dataset", stats)
    with pytest.raises(DataError, match="NaN"):
        normalise(np.array([[[1, NAN]]], dtype=np.float32), "series")
    with pytest.raises(DataError, match=r"\[N, dims, length\]"):
        norm_stats(np.zeros((3, 4), dtype=np.float32), "dataset")


# ---- folds and hold-out splits -------------------------------------------------------------


LABELS = np.random.default_rng(7).permutation([0] * 13 + [1] * 7 + [2] * 3 + [3] * 1)


def _check_folds(folds: list[tuple[np.ndarray, np.ndarray]], labels: np.ndarray, k: int, repeats: int) -> None:
    n = len(labels)
    assert len(folds) == k * repeats
    for r in range(repeats):
        block = folds[r * k:(r + 1) * k]
        seen = np.concatenate([val for _, val in block])
        np.testing.assert_array_equal(np.sort(seen), np.arange(n))  # every case once per repeat
        sizes = [len(val) for _, val in block]
        assert max(sizes) - min(sizes) <= 1
        for c in np.unique(labels):
            per_fold = [int((labels[val] == c).sum()) for _, val in block]
            assert max(per_fold) - min(per_fold) <= 1, (c, per_fold)
        for train, val in block:
            assert train.dtype == np.int64 and val.dtype == np.int64
            assert (np.diff(train) > 0).all() and (np.diff(val) > 0).all()
            assert not set(train.tolist()) & set(val.tolist())
            assert len(train) + len(val) == n


@pytest.mark.parametrize("k,repeats", [(2, 1), (5, 1), (5, 3), (24, 1)])
def test_stratified_folds_cover_every_case_once_and_are_stratified(k: int, repeats: int) -> None:
    folds = stratified_folds(LABELS, k=k, seed=3, repeats=repeats)
    _check_folds(folds, LABELS, k, repeats)


def test_stratified_folds_small_classes() -> None:
    folds = stratified_folds(LABELS, k=5, seed=0)
    with_class_2 = [i for i, (_, val) in enumerate(folds) if (LABELS[val] == 2).any()]
    assert len(with_class_2) == 3  # 3 cases: one in each of 3 val folds
    (only,) = [i for i, (_, val) in enumerate(folds) if (LABELS[val] == 3).any()]
    assert not (LABELS[folds[only][0]] == 3).any()  # a class of one case: not trained on there


def test_stratified_folds_are_seeded_and_deterministic() -> None:
    def vals(seed: int, repeats: int = 1) -> list[list[int]]:
        return [val.tolist() for _, val in stratified_folds(LABELS, k=5, seed=seed, repeats=repeats)]

    assert vals(0) == vals(0)
    assert vals(0) != vals(1)
    assert vals(0, repeats=2)[:5] == vals(0)  # the first repeat does not depend on the number of repeats
    assert vals(0, repeats=2)[:5] != vals(0, repeats=2)[5:]  # a new shuffle per repeat
    names = np.array(["cat", "dog", "eel"])[LABELS % 3]
    _check_folds(stratified_folds(names, k=4, seed=0), names, 4, 1)  # any label values


def test_stratified_folds_errors() -> None:
    with pytest.raises(ConfigError, match="at least 2, got 1"):
        stratified_folds(LABELS, k=1)
    with pytest.raises(ConfigError) as e:
        stratified_folds([0, 1, 0], k=4)
    _one_line(e, "4 folds need at least 4 cases, got 3")
    with pytest.raises(ConfigError, match="repeats must be a positive integer"):
        stratified_folds(LABELS, k=2, repeats=0)
    with pytest.raises(DataError, match="non-empty"):
        stratified_folds([], k=2)


def test_holdout_split_is_stratified_with_one_case_each_side() -> None:
    labels = np.random.default_rng(1).permutation([0] * 13 + [1] * 7 + [2] * 3 + [3] * 2 + [4])
    train, val = holdout_split(labels, 0.2, seed=0)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
    held = Counter(labels[val].tolist())
    assert dict(held) == {0: 3, 1: 1, 2: 1, 3: 1}  # 2.6 → 3, 1.4 → 1, 0.6 → 1, 0.4 → 1; a single case stays
    kept = Counter(labels[train].tolist())
    assert all(kept[c] >= 1 for c in range(5))
    _, val9 = holdout_split(labels, 0.9, seed=0)
    assert Counter(labels[val9].tolist())[3] == 1  # n − 1 at most
    assert holdout_split(labels, 0.2, seed=0)[1].tolist() == val.tolist()
    assert holdout_split(labels, 0.2, seed=1)[1].tolist() != val.tolist()
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(ConfigError, match=r"fraction must be in \(0, 1\)"):
            holdout_split(labels, bad)
    with pytest.raises(DataError, match="nothing can be held out"):
        holdout_split([0, 1, 2], 0.5)


# ---- the real files ------------------------------------------------------------------------


@pytest.mark.parametrize("length", [26, 29])
def test_japanese_vowels_to_a_fixed_length(ucr: Path, length: int) -> None:
    split = open_timeseries(ucr / "JapaneseVowels").train
    lengths = split.lengths
    assert lengths.min() == 7 and lengths.max() == 26
    out = {policy: fixed_length(split.cases, policy, length) for policy in LENGTH_POLICIES}
    for policy, x in out.items():
        assert x.shape == (270, 12, length) and x.dtype == np.float32, policy
        assert np.isfinite(x).all()
    for i, (case, n) in enumerate(zip(split.cases, lengths)):
        np.testing.assert_array_equal(out["zero"][i, :, :n], case)
        assert (out["zero"][i, :, n:] == 0).all()
        np.testing.assert_array_equal(out["edge"][i, :, :n], case)
        np.testing.assert_array_equal(out["edge"][i, :, n:], np.repeat(case[:, -1:], length - n, axis=1))
        np.testing.assert_allclose(out["resample"][i, :, [0, -1]], case[:, [0, -1]].T, atol=1e-6)
        if n == length:
            np.testing.assert_array_equal(out["resample"][i], case)
    short = int(np.argmin(lengths))
    assert (out["edge"][short, :, -1] != 0).any() and (out["zero"][short, :, -1] == 0).all()
    x = out["edge"]
    stats = norm_stats(x, "dataset")
    assert stats is not None and stats.dims == 12
    y = normalise(x, "dataset", stats)
    np.testing.assert_allclose(y.mean(axis=(0, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(y.std(axis=(0, 2)), 1, atol=1e-4)
    _check_folds(stratified_folds(split.labels, k=5, seed=0), split.labels, 5, 1)


def test_gunpoint_resampled_to_half_and_quarter_keeps_its_shape(ucr: Path) -> None:
    split = open_timeseries(ucr / "GunPoint").train
    x = fixed_length(split.cases, "resample", 150)
    np.testing.assert_array_equal(x, np.stack(split.cases))  # native length: untouched
    for factor, expected in [(0.5, 75), (0.25, 38)]:
        m = resampled_length(150, factor)
        assert m == expected
        small = x @ resample_matrix(150, m)
        assert small.shape == (50, 1, m)
        back = small @ resample_matrix(m, 150)
        corr = [np.corrcoef(a[0], b[0])[0, 1] for a, b in zip(x, back)]
        assert min(corr) > 0.95, (factor, min(corr))
    folds = stratified_folds(split.labels, k=5, seed=0)
    for _, val in folds:  # 24 and 26 cases: 4-5 and 5-6 per fold
        counts = np.bincount(split.labels[val], minlength=2)
        assert 4 <= counts[0] <= 5 and 5 <= counts[1] <= 6
