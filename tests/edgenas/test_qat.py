"""Quantization-aware fine-tuning: BN folding is exact, the fine-tuned model is a plain float model
whose weights sit on the int8 grid, and the fake-quantized forward pass simulates the int8 runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dscnn_toy import TinyDSCNN, randomize_bn
from torch import nn

from edgenas.qat import fake_quantized, fold_batchnorm, qat_finetune
from edgenas.tasks import get_task
from edgenas.train import TrainConfig


def _data(n: int = 96, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(n, 1, 49, 10, generator=g) * 0.5
    for c in range(classes):  # a class-dependent band makes the task learnable
        x[y == c, :, :, 2 * c:2 * c + 2] += 1.5
    return x, y


def test_fold_batchnorm_keeps_outputs_and_keys() -> None:
    torch.manual_seed(0)
    model = TinyDSCNN(channels=16, blocks=2, classes=4).eval()
    randomize_bn(model)
    model.eval()
    x = torch.randn(8, 1, 49, 10)
    before, keys = model(x), list(model.state_dict())
    assert fold_batchnorm(model) == 5  # stem + 2 × (depthwise, pointwise)
    after = model(x)
    assert list(model.state_dict()) == keys
    assert torch.allclose(before, after, atol=1e-5), float((before - after).abs().max())
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.running_mean == 0)


def test_qat_leaves_a_plain_model_with_int8_grid_weights() -> None:
    torch.manual_seed(0)
    model = TinyDSCNN(channels=16, blocks=2, classes=4)
    x, y = _data()
    keys = list(model.state_dict())
    info = qat_finetune(model, x, y, TrainConfig(qat_epochs=2, batch_size=32), get_task("kws"), seed=0)
    assert len(info["history"]) == 2
    assert sorted(model.state_dict()) == sorted(keys)  # loads into a freshly built model
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert not any(hasattr(m, "parametrizations") for m in model.modules())
    assert all(type(m) is nn.BatchNorm2d for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach().flatten(1)
            q = w / (w.abs().amax(1, keepdim=True) / 127)
            assert torch.allclose(q, q.round(), atol=1e-3), type(m).__name__
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1), "γ must stay 1 so the fold stays in the conv weights"


def test_fake_quantized_forward_simulates_the_int8_tflite_model(tmp_path) -> None:
    pytest.importorskip("tensorflow")
    from edgenas.export.tflite_export import export_tflite, run_tflite

    torch.manual_seed(0)
    model = TinyDSCNN(channels=16, blocks=2, classes=4)
    x, y = _data(160)
    qat_finetune(model, x, y, TrainConfig(qat_epochs=3, batch_size=32), get_task("kws"), seed=0)
    model.eval()
    path = export_tflite(model, (1, 1, 49, 10), tmp_path / "m.int8.tflite", quant="int8", calibration=x.numpy())
    x_test, _ = _data(64, seed=1)
    int8 = run_tflite(path, x_test.numpy())
    with torch.no_grad():
        flt = model(x_test).numpy()
        with fake_quantized(model):
            model(x)  # ranges from the calibration inputs, as the converter's
            sim = model.eval()(x_test).numpy()
    err_sim, err_float = np.abs(int8 - sim).mean(), np.abs(int8 - flt).mean()
    assert err_sim < 0.75 * err_float, (err_sim, err_float)
