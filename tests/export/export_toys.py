"""Helpers for export tests: a small DS-CNN and a learnable toy keyword-spotting problem."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dscnn_toy import TinyDSCNN


class ToyDSCNN(TinyDSCNN):
    """The shared toy DS-CNN at export-test size."""

    def __init__(self, channels: int = 16, blocks: int = 2, classes: int = 4) -> None:
        super().__init__((49, 10), channels, blocks, classes)


def toy_data(n: int, seed: int = 0, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """[n, 1, 49, 10] noise with a bump in one of ``classes`` time/frequency regions: the label."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.standard_normal((n, 1, 49, 10)).astype(np.float32) * 0.5
    t = np.arange(49)[:, None]
    f = np.arange(10)[None, :]
    for i in range(n):
        tc = 12 + 24 * (y[i] % 2) + rng.integers(-4, 5)
        fc = 2 + 5 * (y[i] // 2 % 2) + rng.integers(-1, 2)
        x[i, 0] += 2.5 * np.exp(-((t - tc) ** 2) / 18.0 - ((f - fc) ** 2) / 3.0)
    return x, y


def train_toy(seed: int = 0, steps: int = 200) -> tuple[ToyDSCNN, np.ndarray, np.ndarray]:
    """A ToyDSCNN trained on toy_data; returns (model in eval mode, test x, test y)."""
    torch.manual_seed(seed)
    model = ToyDSCNN()
    x, y = toy_data(1024, seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=g)
        loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x_test, y_test = toy_data(512, seed + 1)
    return model, x_test, y_test


def tflite_int8_linear(w: np.ndarray, b: np.ndarray, calib: np.ndarray, feature_shape: tuple[int, int]) -> bytes:
    """A full-int8 TFLite linear classifier on NHWC [1, *feature_shape, 1] (int8 in, int8 out)."""
    import os
    import warnings
    from typing import Any

    from edgenas.export.keras_build import import_tf

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf, _ = import_tf()
    shape = [1, *feature_shape, 1]

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)])
    def classify(x: Any) -> Any:
        return tf.matmul(tf.reshape(x, [1, -1]), tf.constant(w)) + tf.constant(b)

    def representative() -> Any:
        for x in calib:
            yield [x.reshape(shape)]

    conv = tf.lite.TFLiteConverter.from_concrete_functions([classify.get_concrete_function()], classify)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return conv.convert()
