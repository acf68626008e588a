"""Calibration on the real ONNX Runtime: sampling coverage, hold-out report, files, resume."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from edgenas.devices.calibrate import Calibration, CalibrationSettings, calibrate
from edgenas.devices.onnxruntime_cpu import OnnxRuntimeCPU
from edgenas.devices.predictor import LatencyPredictor
from edgenas.errors import ConfigError, DeviceError
from edgenas.spaces import get_space
from edgenas.spaces.kws_dscnn import KWSSpaceConfig
from edgenas.store import Store

SMALL = KWSSpaceConfig(windows=("30/10", "40/20"), widths=(16, 32), n_blocks=2)


CACHE = Path(tempfile.mkdtemp(prefix="edgenas-test-frontends-"))  # exported front ends, never ~/.cache


class CountingORT(OnnxRuntimeCPU):
    """The real adapter, counting the models it is asked to time."""

    def __init__(self) -> None:
        super().__init__(sessions=1)
        self.measured = 0

    def measure(self, artifact, runs=100, warmup=10, threads=None):  # type: ignore[no-untyped-def]
        self.measured += 1
        return super().measure(artifact, runs=runs, warmup=warmup, threads=threads)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("calib")
    space = get_space("kws-dscnn", num_classes=12, config=SMALL)
    dev = CountingORT()
    store = Store(base / "store.sqlite")
    settings = CalibrationSettings(samples=40, runs=5, warmup=2, lut_runs=5, batch=10, pool=2000)
    events: list[tuple[str, dict]] = []
    report = calibrate(space, dev, store, "onnx-int8", settings, sink=lambda e, **f: events.append((e, f)),
                       root=base / "predictors", cache_dir=CACHE)
    return base, space, dev, store, settings, report, events


def test_report_and_files(calibrated) -> None:
    base, space, dev, store, settings, report, events = calibrated
    assert report["samples"] == 40 and report["holdout"] == 8 and report["train"] == 32
    assert set(report["holdout_errors"]) == {"learned", "lookup_table", "lookup_table_fitted_line", "macs_proportional"}
    for e in report["holdout_errors"].values():
        assert 0 <= e["within_5pct"] <= e["within_10pct"] <= 1 and e["mape"] >= 0 and e["n"] == 8
    path = Path(report["predictor"])
    assert path.parent == base / "predictors" / dev.name and path.name == "kws-dscnn-v1.onnx-int8.json"
    model = LatencyPredictor.load(path)
    md = model.metadata
    for key in ("device", "runtime_version", "threads", "governor", "space", "space_version", "fmt", "samples",
                "holdout", "table_entries"):
        assert key in md
    assert md["samples"] == 32 and md["runtime_version"] == dev.runtime_version()
    assert "pickle" not in path.read_text()
    assert path.with_suffix(".report.md").read_text().count("|") > 20
    assert json.loads(path.with_suffix(".report.json").read_text())["samples"] == 40
    assert any(e == "calibration.round" for e, _ in events)  # adaptive sampling happened
    # the front ends: every data configuration measured, the error reported for the total
    fe = report["frontends"]
    assert set(fe["table_ms"]) == {d.key() for d in space.data_configs()} and fe["fmt"] == "onnx"
    assert fe["measured_now"] == len(space.data_configs()) and 0 < fe["share_of_total"] < 1
    e2e = report["holdout_errors_end_to_end"]
    assert set(e2e) == set(report["holdout_errors"]) and e2e["learned"]["n"] == 8
    assert "End to end (front end + classifier" in path.with_suffix(".report.md").read_text()
    md = LatencyPredictor.load(path).metadata
    assert md["frontend_ms"] == fe["table_ms"] and md["holdout_end_to_end"] == e2e
    assert any(e == "progress.start" and "calibration" in f["desc"] for e, f in events)


def test_samples_cover_every_data_config_and_the_cost_range(calibrated) -> None:
    _, space, dev, store, _, report, _ = calibrated
    assert report["data_configs"] == len(space.data_configs())
    rows = store.spec_measurements(dev.name, dev.runtime_version(), dev.threads, "onnx-int8")
    assert len(rows) == 40
    macs = report["macs_range"]
    cheapest = min(sum(d.macs for d in space.layers(s)) for s in space.cheapest_candidates())
    assert macs[0] <= 1.5 * cheapest  # the cheap end of the space is sampled
    assert macs[1] / macs[0] > 20


def test_rerun_reuses_every_measurement(calibrated) -> None:
    base, space, _, store, settings, report, _ = calibrated
    dev = CountingORT()
    again = calibrate(space, dev, store, "onnx-int8", settings, root=base / "predictors", cache_dir=CACHE)
    # the table, the front ends and all 40 networks came from the store; only the hold-out's front
    # ends are measured again (the end-to-end error includes their repeatability)
    assert dev.measured == len(report["frontends"]["repeat_ms"])
    assert again["holdout_errors"] == report["holdout_errors"]
    assert again["frontends"]["table_ms"] == report["frontends"]["table_ms"]


def test_interrupted_calibration_resumes(tmp_path: Path) -> None:
    space = get_space("kws-dscnn", num_classes=12, config=SMALL)
    store = Store(tmp_path / "s.sqlite")
    settings = CalibrationSettings(samples=20, runs=3, warmup=1, lut_runs=3, batch=5, pool=1000)

    n_table = len({d.key() for d in space.all_layers()}) + 1 + len(space.data_configs()) * settings.passes

    class Dying(CountingORT):
        def measure(self, artifact, runs=100, warmup=10, threads=None):  # type: ignore[no-untyped-def]
            if self.measured >= n_table + settings.passes * 5 + 4:  # inside the 2nd batch of networks
                raise KeyboardInterrupt
            return super().measure(artifact, runs=runs, warmup=warmup, threads=threads)

    with pytest.raises(KeyboardInterrupt):
        calibrate(space, Dying(), store, "onnx-int8", settings, root=tmp_path / "p", cache_dir=CACHE)
    dev = CountingORT()
    have = len(store.spec_measurements(dev.name, dev.runtime_version(), 1, "onnx-int8"))
    assert 0 < have < 20
    assert not (tmp_path / "p").exists() or not list((tmp_path / "p").rglob("*.json"))
    report = calibrate(space, dev, store, "onnx-int8", settings, root=tmp_path / "p", cache_dir=CACHE)
    assert have == 5  # the first batch, stored after its passes
    assert dev.measured == (20 - have) * settings.passes + len(report["frontends"]["repeat_ms"])
    assert report["samples"] == 20


def test_bad_settings_are_one_line_errors(tmp_path: Path) -> None:
    space = get_space("kws-dscnn", num_classes=12, config=SMALL)
    with pytest.raises(ConfigError, match="at least 10"):
        Calibration(space, CountingORT(), Store(tmp_path / "s.sqlite"), "onnx-int8", CalibrationSettings(samples=3))
    with pytest.raises(DeviceError, match="runs onnx models"):
        calibrate(space, CountingORT(), Store(tmp_path / "s.sqlite"), "tflite-int8")


def test_low_percentile_statistic(calibrated, tmp_path: Path) -> None:
    base, space, dev, store, settings, report, _ = calibrated
    from dataclasses import replace

    p10 = calibrate(space, CountingORT(), store, "onnx-int8", replace(settings, statistic="p10"), root=tmp_path, cache_dir=CACHE)
    assert p10["statistic"] == "p10" and Path(p10["predictor"]).name == "kws-dscnn-v1.onnx-int8.p10.json"
    assert LatencyPredictor.load(p10["predictor"]).metadata["statistic"] == "p10"
    for pt, med in zip(p10["holdout_points"], report["holdout_points"]):
        assert pt["spec_hash"] == med["spec_hash"] and pt["measured_ms"] <= med["measured_ms"]
    with pytest.raises(ConfigError, match="unknown latency statistic"):
        Calibration(space, CountingORT(), store, "onnx-int8", replace(settings, statistic="p99"))


def test_networks_the_device_cannot_run_are_skipped_and_reported(tmp_path: Path) -> None:
    """A sampled network the runtime refuses (injected: the real runtime loads every network of
    this space) is left out, another is drawn in its place, and the report names it; more than
    the allowed few stop the calibration with a one-line error."""
    space = get_space("kws-dscnn", num_classes=12, config=SMALL)
    settings = CalibrationSettings(samples=20, runs=3, warmup=1, lut_runs=3, batch=5, pool=1000)
    n_table = len({d.key() for d in space.all_layers()}) + 1 + len(space.data_configs()) * settings.passes

    class Refusing(CountingORT):
        def __init__(self, refuse: set[int]) -> None:
            super().__init__()
            self.refuse, self.refused = refuse, set()

        def measure(self, artifact, runs=100, warmup=10, threads=None):  # type: ignore[no-untyped-def]
            if self.measured - n_table in self.refuse or Path(artifact).name in self.refused:
                self.measured += 1
                self.refused.add(Path(artifact).name)
                raise DeviceError(f"cannot load {Path(artifact).name}: injected")
            return super().measure(artifact, runs=runs, warmup=warmup, threads=threads)

    events: list[tuple[str, dict]] = []
    dev = Refusing({1, 7})  # the 2nd network of the first pass, and one in a later pass or batch
    report = calibrate(space, dev, Store(tmp_path / "s.sqlite"), "onnx-int8", settings,
                       sink=lambda e, **f: events.append((e, f)), root=tmp_path / "p", cache_dir=CACHE)
    skipped = report["skipped"]
    assert len(skipped) == 2 and all("injected" in s["reason"] for s in skipped)
    assert report["samples"] == 20  # replacements drawn
    used = {p["spec_hash"] for p in report["holdout_points"]}
    assert not used & {s["spec_hash"] for s in skipped}
    assert [f["spec_hash"] for e, f in events if e == "calibration.skipped"] == [s["spec_hash"] for s in skipped]
    md = Path(report["predictor"]).with_suffix(".report.md").read_text()
    assert "Skipped 2 sampled network(s)" in md
    with pytest.raises(DeviceError, match=r"could not run 4 of the sampled networks \(more than 3\); first: cannot load"):
        calibrate(space, Refusing(set(range(0, 200, 2))), Store(tmp_path / "s2.sqlite"), "onnx-int8", settings,
                  root=tmp_path / "p2", cache_dir=CACHE)
