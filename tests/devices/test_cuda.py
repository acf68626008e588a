from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from edgenas.devices.base import Device, Measurement
from edgenas.devices.cuda import NO_GPU, CudaDevice, load_torchscript, save_torchscript
from edgenas.devices.registry import get_device
from edgenas.errors import DeviceError

HAS_GPU = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="no CUDA GPU: torch.cuda.is_available() is False")


def tiny() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(16, 12))
    return net.eval(), torch.randn(1, 1, 49, 10)


def test_registry() -> None:
    dev = get_device("cuda")
    assert isinstance(dev, CudaDevice) and isinstance(dev, Device)
    assert dev.artifact_format == "pt" and dev.runtime == "torch"
    assert dev.runtime_version().startswith(f"torch {torch.__version__}")
    assert CudaDevice(runtime="onnxruntime").artifact_format == "onnx"
    with pytest.raises(DeviceError, match="runs 'torch' or 'onnxruntime'"):
        CudaDevice(runtime="litert")


def test_torchscript_records_input(tmp_path: Path) -> None:
    net, x = tiny()
    path = save_torchscript(net, x, tmp_path / "net.pt")
    module, meta = load_torchscript(path, device="cpu")
    assert meta == {"shape": [1, 1, 49, 10], "dtype": "float32"}
    assert torch.allclose(module(x), net(x), atol=1e-6)
    plain = tmp_path / "plain.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.trace(net, x), str(plain))
    with pytest.raises(DeviceError, match="does not record its input shape"):
        load_torchscript(plain, device="cpu")
    with pytest.raises(DeviceError, match="not found"):
        load_torchscript(tmp_path / "nope.pt", device="cpu")


def test_wrong_artifact_kind(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match=r"runs TorchScript \(.pt\).*runtime = \"onnxruntime\""):
        CudaDevice().measure(tmp_path / "m.onnx")
    with pytest.raises(DeviceError, match="runs .onnx models"):
        CudaDevice(runtime="onnxruntime").measure(tmp_path / "m.pt")


@pytest.mark.skipif(HAS_GPU, reason="checks the no-GPU error; this machine has a GPU")
def test_no_gpu_is_a_clear_error(tmp_path: Path) -> None:
    dev = CudaDevice()
    with pytest.raises(DeviceError, match="no CUDA GPU: torch.cuda.is_available\\(\\) is False"):
        dev.check()
    net, x = tiny()
    with pytest.raises(DeviceError, match=NO_GPU.replace("(", r"\(").replace(")", r"\)")):
        dev.measure(save_torchscript(net, x, tmp_path / "n.pt"))
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        dev.measure_module(net, x)
    assert dev.info()["cuda_available"] is False


@needs_gpu
@pytest.mark.gpu
def test_measure_torchscript_and_module(tmp_path: Path) -> None:
    dev = CudaDevice()
    dev.check()
    net, x = tiny()
    m = dev.measure(save_torchscript(net, x, tmp_path / "n.pt"), runs=30, warmup=5)
    assert isinstance(m, Measurement) and len(m.samples_ms) == 30 and 0 < m.median_ms < 50
    assert m.runtime == "torch" and m.runtime_version == dev.runtime_version() and m.device_identity["gpu"]
    m2 = dev.measure_module(net, x, runs=10, warmup=2)
    assert 0 < m2.median_ms < 50


@needs_gpu
@pytest.mark.gpu
def test_measure_onnx_cuda_ep(tmp_path: Path) -> None:
    import onnx
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime has no CUDAExecutionProvider (needs onnxruntime-gpu)")
    from edgenas.export.micro import micro_model
    from edgenas.spec import LayerDesc

    conv = LayerDesc("c", "conv2d", (16, 12, 5), (16, 12, 5), (3, 3), (1, 1), (1, 1, 1, 1), 16, "relu")
    path = tmp_path / "conv.onnx"
    onnx.save(micro_model(conv, "onnx-fp32"), str(path))
    m = CudaDevice(runtime="onnxruntime").measure(path, runs=20, warmup=5)
    assert 0 < m.median_ms < 50 and m.runtime_version.endswith("CUDAExecutionProvider")
