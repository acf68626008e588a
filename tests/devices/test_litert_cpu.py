from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert not installed (pip install 'edgenas[tflite]')")

from edgenas.devices.base import Device, Measurement  # noqa: E402
from edgenas.devices.litert_cpu import LiteRTCPU, random_tensor  # noqa: E402
from edgenas.devices.measure import measure_cached  # noqa: E402
from edgenas.devices.registry import get_device  # noqa: E402
from edgenas.errors import DeviceError  # noqa: E402
from edgenas.store import Store  # noqa: E402


def test_registry_and_protocol() -> None:
    dev = get_device("litert-cpu", threads=2)
    assert isinstance(dev, LiteRTCPU) and isinstance(dev, Device)
    assert dev.artifact_format == "tflite" and dev.threads == 2
    dev.check()
    import ai_edge_litert

    assert dev.runtime_version() == ai_edge_litert.__version__
    info = dev.info()
    assert info["runtime"] == "litert" and "XNNPACK" in info["delegate"] and info["identity"]["cpu"] is not None


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_measure(tflite_models: dict[str, Path], kind: str) -> None:
    dev = LiteRTCPU(name="local-tflite")
    m = dev.measure(tflite_models[kind], runs=30, warmup=5)
    assert isinstance(m, Measurement)
    assert len(m.samples_ms) == 30 and m.runs == 30 and m.warmup == 5 and m.threads == 1
    assert 0 < m.median_ms <= m.p90_ms and m.median_ms < 50
    assert m.runtime == "litert" and m.device == "local-tflite" and m.runtime_version == dev.runtime_version()
    assert "hostname" in m.device_identity
    assert dev.measure(tflite_models[kind], runs=3, warmup=1, threads=2).threads == 2


def test_int8_model_gets_int8_input(tflite_models: dict[str, Path]) -> None:
    interp = LiteRTCPU().interpreter(tflite_models["int8"])
    assert interp.get_input_details()[0]["dtype"] == np.int8
    x = random_tensor((1000,), np.int8, np.random.default_rng(0))
    assert x.dtype == np.int8 and x.min() < -100 and x.max() > 100


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    dev = LiteRTCPU()
    with pytest.raises(DeviceError, match="not found: .*nope.tflite"):
        dev.measure(tmp_path / "nope.tflite")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"definitely not a flatbuffer" * 10)
    with pytest.raises(DeviceError, match="cannot load model .*bad.tflite") as e:
        dev.measure(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(DeviceError, match="runs must be"):
        dev.measure(bad, runs=0)


def test_measure_cached(tmp_path: Path, tflite_models: dict[str, Path]) -> None:
    dev = LiteRTCPU()
    with Store(tmp_path / "s.sqlite") as st:
        m1 = measure_cached(dev, st, tflite_models["int8"], fmt="tflite-int8", runs=10, warmup=2)
        m2 = measure_cached(dev, st, tflite_models["int8"], fmt="tflite-int8", runs=10, warmup=2)
        assert m1 == m2 and st.count() == 1
