from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime
import pytest

from edgenas.devices.base import Device, Measurement
from edgenas.devices.measure import measure_cached, measure_confirmed
from edgenas.devices.onnxruntime_cpu import OnnxRuntimeCPU
from edgenas.devices.registry import DEVICES, get_device
from edgenas.errors import ConfigError, DeviceError
from edgenas.export.micro import micro_model
from edgenas.spec import LayerDesc
from edgenas.store import Store, file_hash

CONV = LayerDesc("c", "conv2d", (16, 12, 5), (16, 12, 5), (3, 3), (1, 1), (1, 1, 1, 1), 16, "relu")


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "conv.onnx"
    onnx.save(micro_model(CONV, "onnx-fp32"), str(path))
    return path


def test_registry() -> None:
    assert "onnxruntime-cpu" in DEVICES
    dev = get_device("onnxruntime-cpu")
    assert isinstance(dev, Device) and isinstance(dev, OnnxRuntimeCPU)
    assert dev.name == "onnxruntime-cpu" and dev.threads == 1 and dev.artifact_format == "onnx"
    assert get_device("onnxruntime-cpu", threads=2).threads == 2
    with pytest.raises(ConfigError, match="did you mean onnxruntime-cpu"):
        get_device("onnxruntime-cpux")
    with pytest.raises(ConfigError, match="bad settings"):
        get_device("onnxruntime-cpu", bogus=1)


def test_check_info_version() -> None:
    dev = OnnxRuntimeCPU()
    dev.check()
    assert dev.runtime_version() == onnxruntime.__version__
    info = dev.info()
    assert info["threads"] == 1 and info["runtime"] == "onnxruntime"
    assert info["identity"]["hostname"] and "machine" in info["identity"] and "cpu" in info["identity"]


def test_measure(model_path: Path) -> None:
    dev = OnnxRuntimeCPU(name="laptop", threads=1)
    m = dev.measure(model_path, runs=20, warmup=3)
    assert isinstance(m, Measurement)
    assert len(m.samples_ms) == 20 and m.runs == 20 and m.warmup == 3 and m.threads == 1
    assert 0 < m.median_ms <= m.p90_ms and m.median_ms < 50
    assert m.runtime == "onnxruntime" and m.runtime_version == onnxruntime.__version__ and m.device == "laptop"
    assert "cpu" in m.device_identity and "hostname" in m.device_identity
    m2 = dev.measure(model_path, runs=5, warmup=0, threads=2)
    assert m2.threads == 2 and len(m2.samples_ms) == 5


def test_symbolic_batch_input(tmp_path: Path, model_path: Path) -> None:
    model = onnx.load(str(model_path))
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    dim.Clear()
    dim.dim_param = "batch"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    path = tmp_path / "dyn.onnx"
    onnx.save(model, str(path))
    assert OnnxRuntimeCPU().measure(path, runs=3, warmup=1).median_ms > 0


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    dev = OnnxRuntimeCPU()
    with pytest.raises(DeviceError, match="not found: .*nope.onnx"):
        dev.measure(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a model")
    with pytest.raises(DeviceError, match="bad.onnx") as e:
        dev.measure(bad)
    assert "\n" not in str(e.value)


def test_measure_cached(tmp_path: Path, model_path: Path) -> None:
    dev = OnnxRuntimeCPU()
    with Store(tmp_path / "s.sqlite") as st:
        m1 = measure_cached(dev, st, model_path, kind="model", fmt="onnx-fp32", spec_hash="s1", runs=10, warmup=1)
        m2 = measure_cached(dev, st, model_path, kind="model", fmt="onnx-fp32", spec_hash="s1", runs=10, warmup=1)
        assert m1 == m2  # identical samples: the second came from the store
        assert st.count() == 1
        assert st.get_measurement(dev.name, dev.runtime_version(), 1, file_hash(model_path)) == m1
        m3 = measure_cached(dev, st, model_path, kind="model", fmt="onnx-fp32", runs=10, warmup=1, threads=2)
        assert m3.threads == 2 and st.count() == 2


class FirstPassInterfered:
    """The real device, with interference injected into its first measurement (every sample ×factor):
    a fault that cannot be made to happen on demand."""

    def __init__(self, dev: OnnxRuntimeCPU, factor: float) -> None:
        self.dev, self.factor, self.calls = dev, factor, 0

    def __getattr__(self, name: str):
        return getattr(self.dev, name)

    def measure(self, path: Path, **kw) -> Measurement:
        m = self.dev.measure(path, **kw)
        self.calls += 1
        if self.calls > 1:
            return m
        return Measurement.from_samples([x * self.factor for x in m.samples_ms], warmup=m.warmup, runs=m.runs,
                                        threads=m.threads, runtime=m.runtime, runtime_version=m.runtime_version,
                                        device=m.device, device_identity=m.device_identity)


def test_measure_confirmed_remeasures_a_high_first_pass(tmp_path: Path, model_path: Path) -> None:
    real = OnnxRuntimeCPU()
    quiet = real.measure(model_path, runs=30, warmup=3).stat("p10")
    limit = 10 * quiet
    dev = FirstPassInterfered(real, factor=100)
    with Store(tmp_path / "s.sqlite") as st:
        best, passes = measure_confirmed(dev, st, model_path, limit_ms=limit, stat="p10", confirm=2,
                                         fmt="onnx-fp32", runs=30, warmup=3)
        assert dev.calls == 2 and len(passes) == 2  # stopped at the first pass that holds
        assert passes[0] > limit >= passes[1] and best.stat("p10") == passes[1]
        assert st.count() == 1 and st.get_measurement(real.name, real.runtime_version(), 1,
                                                      file_hash(model_path)) == best  # the store keeps the figure
        again, passes2 = measure_confirmed(dev, st, model_path, limit_ms=limit, stat="p10", confirm=2,
                                           fmt="onnx-fp32", runs=30, warmup=3)
        assert again == best and passes2 == [passes[1]] and dev.calls == 2  # from the store, holds: no pass


def test_measure_confirmed_off_and_really_over(tmp_path: Path, model_path: Path) -> None:
    dev = FirstPassInterfered(OnnxRuntimeCPU(), factor=100)
    with Store(tmp_path / "a.sqlite") as st:
        first, passes = measure_confirmed(dev, st, model_path, limit_ms=1e-9, stat="p10", confirm=0,
                                          fmt="onnx-fp32", runs=10, warmup=1)
        assert dev.calls == 1 and passes == [first.stat("p10")]  # confirm = 0: the one pass is the figure
    with Store(tmp_path / "b.sqlite") as st:
        best, passes = measure_confirmed(OnnxRuntimeCPU(), st, model_path, limit_ms=1e-9, stat="median", confirm=2,
                                         fmt="onnx-fp32", runs=10, warmup=1)
        assert len(passes) == 3 and best.median_ms == min(passes) > 1e-9  # over on every pass: still over
        best0, passes0 = measure_confirmed(OnnxRuntimeCPU(), st, model_path, limit_ms=0, stat="median", confirm=2,
                                           fmt="onnx-fp32", runs=10, warmup=1)
        assert passes0 == [best.median_ms] and best0 == best  # no budget: nothing to confirm
