"""The measurement protocol shared by every adapter (devices/base.py)."""

from __future__ import annotations

from edgenas.devices.base import Measurement, spread, stable_samples, timed_best


def test_spread_is_p90_over_median() -> None:
    assert spread([1.0] * 9 + [2.0]) == 1.0
    assert spread([1.0] * 5 + [3.0] * 5) == 3.0 / 2.0  # median 2, p90 3


def test_stable_samples_keeps_the_lowest_tight_round() -> None:
    rounds = iter([[2.0] * 10, [1.0] * 10, [5.0] * 10])
    assert stable_samples(lambda: next(rounds), max_repeats=2, rounds=2) == [1.0] * 10


def test_stable_samples_repeats_while_every_round_is_noisy() -> None:
    noisy = [1.0] * 5 + [3.0] * 5
    calls = []

    def take() -> list[float]:
        calls.append(1)
        return noisy if len(calls) < 3 else [1.5] * 10

    assert stable_samples(take, max_repeats=2, rounds=1, spread_limit=1.2) == [1.5] * 10
    assert len(calls) == 3


def test_timed_best_and_measurement_from_samples() -> None:
    samples = timed_best(lambda: sum(range(100)), runs=25)
    assert len(samples) == 25 and all(s > 0 for s in samples)
    m = Measurement.from_samples(samples, warmup=0, runs=25, threads=1, runtime="python", runtime_version="3",
                                 device="here")
    assert m.p90_ms >= m.median_ms > 0
    assert Measurement.from_dict(m.to_dict()) == m


def test_measurement_statistics() -> None:
    from edgenas.devices.base import Measurement

    m = Measurement.from_samples([float(v) for v in range(1, 101)], warmup=0, runs=100, threads=1, runtime="x",
                                 runtime_version="1", device="d")
    assert m.stat() == m.median_ms == 50.5
    assert m.stat("p10") == 11.0 and m.stat("p25") == 26.0
    import pytest

    with pytest.raises(ValueError, match="unknown latency statistic"):
        m.stat("p50")
