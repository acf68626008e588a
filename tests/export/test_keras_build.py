"""The generic torch.fx → Keras converter: parity with PyTorch on the networks our spaces build."""

from __future__ import annotations

import importlib.util
import random
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgenas.errors import ExportError

# TensorFlow is only looked up here: edgenas imports it (after triton, see keras_build.import_tf)
if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("ai_edge_litert") is None:
    pytest.skip("needs the tflite extra", allow_module_level=True)

from edgenas.export.keras_build import (  # noqa: E402
    keras_input_shape,
    tf_same_pad,
    to_channels_first,
    to_channels_last,
    to_keras,
)
from export_toys import ToyDSCNN  # noqa: E402
from toy_nets import ToySISR, ToyTCN, randomize_bn  # noqa: E402

TOL = 1e-4


def keras_out(km: Any, x: np.ndarray) -> np.ndarray:
    """Keras outputs (batch-1 model) for a torch-layout batch, back in torch layout."""
    ys = [np.asarray(km(to_channels_last(x[i:i + 1]), training=False)) for i in range(len(x))]
    y = np.concatenate(ys)
    return to_channels_first(y) if y.ndim >= 3 else y


def torch_out(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def check_parity(model: nn.Module, shape: tuple[int, ...], n: int = 3, seed: int = 0) -> Any:
    km = to_keras(model, shape)
    x = np.random.default_rng(seed).standard_normal((n, *shape[1:])).astype(np.float32)
    ref = torch_out(model, x)
    got = keras_out(km, x)
    assert got.shape == ref.shape
    err = float(np.abs(got - ref).max())
    assert err <= TOL, f"max abs error {err}"
    assert np.abs(ref).max() > 1e-3  # the comparison is not trivially between zeros
    return km


def kws_specs(count: int) -> list[tuple[nn.Module, tuple[int, ...], Any]]:
    """``count`` sampled kws-dscnn networks (with trained-like BN stats), at least one whose
    stem needs an asymmetric pad (an explicit nn.ZeroPad2d before a strided conv)."""
    from edgenas.spaces import get_space

    space = get_space("kws-dscnn", num_classes=12)
    out: list[tuple[nn.Module, tuple[int, ...], Any]] = []
    have_pad = False
    for seed in range(200):
        spec = space.sample(random.Random(seed))
        model = randomize_bn(space.build(spec), seed)
        padded = any(isinstance(m, nn.ZeroPad2d) for m in model.modules())
        if len(out) == count - 1 and not have_pad and not padded:
            continue
        have_pad |= padded
        out.append((model, (1, 1, *spec.data.feature_shape), spec))
        if len(out) == count:
            break
    assert have_pad and len(out) == count
    return out


def test_toy_dscnn_matches_torch_with_folded_bn() -> None:
    torch.manual_seed(0)
    model = randomize_bn(ToyDSCNN())
    km = check_parity(model, (1, 1, 49, 10))
    kinds = [type(layer).__name__ for layer in km.layers]
    assert "BatchNormalization" not in kinds  # every BN folded into its conv
    # the stem's ZeroPad2d((1,1,4,5)) + stride-2 conv is TensorFlow SAME: no separate pad
    assert "ZeroPadding2D" not in kinds
    assert tuple(km.inputs[0].shape) == (1, 49, 10, 1)


@pytest.mark.parametrize("index", range(4))
def test_kws_space_networks_match_torch(index: int) -> None:
    model, shape, spec = kws_specs(4)[index]
    km = check_parity(model, shape)
    assert tuple(km.inputs[0].shape) == (1, *spec.data.feature_shape, 1)


def test_tcn_matches_torch() -> None:
    torch.manual_seed(1)
    model = randomize_bn(ToyTCN())
    km = check_parity(model, (1, 8, 64))
    assert tuple(km.inputs[0].shape) == (1, 64, 8)  # NCL → NLC


def test_pixel_shuffle_matches_torch() -> None:
    torch.manual_seed(2)
    model = randomize_bn(ToySISR(out_channels=3))  # several output channels: the CRD/DCR order matters
    km = check_parity(model, (1, 1, 8, 12))
    assert tuple(km.outputs[0].shape) == (1, 16, 24, 3)


class Mixed(nn.Module):
    """Padding, pooling, flatten-into-linear, standalone BN, cat and ReLU6 corner cases."""

    def __init__(self) -> None:
        super().__init__()
        self.pad = nn.ZeroPad2d((0, 2, 1, 0))  # asymmetric, not TF SAME
        self.c1 = nn.Conv2d(3, 8, 3, stride=2)
        self.c2 = nn.Conv2d(8, 8, 3, padding="same", dilation=2, groups=8)
        self.c3 = nn.Conv2d(8, 16, 3, stride=2, padding=(1, 2), groups=2)
        self.bn = nn.BatchNorm2d(16)
        self.c4 = nn.Conv2d(16, 32, 3, padding=1, groups=16)  # depthwise, multiplier 2
        self.pool = nn.MaxPool2d(2)
        self.act = nn.ReLU6()
        self.fc = nn.Linear(32 * 2 * 2 + 8, 5)
        self.fc_bn = nn.BatchNorm1d(5)  # folded into the Linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.c1(self.pad(x)))
        h = h + self.c2(h)
        side = h.mean(dim=(2, 3))
        h = self.bn(self.c3(h) + 0.5)  # BN not after a conv: an affine layer
        h = self.pool(self.act(self.c4(h)))
        # flatten of a 2x2 map (HWC order in Keras) through cat into a Linear with permuted columns
        return self.fc_bn(self.fc(torch.cat([torch.flatten(h, 1), side], dim=1)))


def test_padding_pooling_flatten_cat_corner_cases() -> None:
    torch.manual_seed(3)
    model = randomize_bn(Mixed())
    km = check_parity(model, (1, 3, 17, 14))
    kinds = [type(layer).__name__ for layer in km.layers]
    assert "ZeroPadding2D" in kinds and kinds.count("BatchNormalization") == 1


def test_tf_same_pad() -> None:
    assert tf_same_pad(49, 10, 2) == (4, 5)
    assert tf_same_pad(12, 3, 2) == (0, 1)
    assert tf_same_pad(10, 3, 1, 2) == (2, 2)
    assert keras_input_shape((8, 1, 98, 40)) == (1, 98, 40, 1)
    assert keras_input_shape((1, 8, 64)) == (1, 64, 8)


def test_unsupported_module_is_one_line_error() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GELU(), nn.Flatten(), nn.LazyLinear(2) if False else nn.Identity())
    with pytest.raises(ExportError) as e:
        to_keras(model, (1, 1, 8, 8))
    msg = str(e.value)
    assert "\n" not in msg and "GELU" in msg and "'1'" in msg


def test_unsupported_function_and_untraceable_are_one_line_errors() -> None:
    class Sig(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(x)

    class Branchy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x if x.sum() > 0 else -x

    with pytest.raises(ExportError, match="sigmoid") as e1:
        to_keras(Sig(), (1, 2, 4, 4))
    with pytest.raises(ExportError, match="cannot trace") as e2:
        to_keras(Branchy(), (1, 2, 4, 4))
    assert "\n" not in str(e1.value) and "\n" not in str(e2.value)


def test_training_mode_and_statistics_untouched() -> None:
    torch.manual_seed(4)
    model = ToyDSCNN().train()
    before = [b.clone() for b in model.buffers()]
    to_keras(model, (1, 1, 49, 10))
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(a, b) for a, b in zip(before, model.buffers()))
