"""Shared device-test fixtures: small ONNX/TFLite models and a stand-in SSH board."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from sshd_fixture import StandInBoard, sshd_missing_reason


@pytest.fixture(scope="session")
def small_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A single depthwise-conv layer as an fp32 ONNX model (milliseconds to build)."""
    import onnx

    from edgenas.export.micro import micro_model
    from edgenas.spec import LayerDesc

    conv = LayerDesc("c", "conv2d", (16, 12, 5), (16, 12, 5), (3, 3), (1, 1), (1, 1, 1, 1), 16, "relu")
    path = tmp_path_factory.mktemp("onnx") / "conv.onnx"
    onnx.save(micro_model(conv, "onnx-fp32"), str(path))
    return path


def _tflite_net() -> tuple[object, object]:
    """A tiny KWS-shaped net (conv → depthwise → pointwise → mean → dense) as a concrete function."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    w1 = tf.constant(rng.standard_normal((3, 3, 1, 16)).astype(np.float32) * 0.3)
    dw = tf.constant(rng.standard_normal((3, 3, 16, 1)).astype(np.float32) * 0.3)
    pw = tf.constant(rng.standard_normal((1, 1, 16, 16)).astype(np.float32) * 0.3)
    fc = tf.constant(rng.standard_normal((16, 12)).astype(np.float32) * 0.3)

    @tf.autograph.experimental.do_not_convert
    def net(x: tf.Tensor) -> tf.Tensor:
        x = tf.nn.relu(tf.nn.conv2d(x, w1, 1, "SAME"))
        x = tf.nn.relu(tf.nn.depthwise_conv2d(x, dw, [1, 1, 1, 1], "SAME"))
        x = tf.nn.relu(tf.nn.conv2d(x, pw, 1, "SAME"))
        return tf.matmul(tf.reduce_mean(x, [1, 2]), fc)

    fn = tf.function(net, input_signature=[tf.TensorSpec([1, 49, 10, 1], tf.float32)])
    return tf, fn.get_concrete_function()


@pytest.fixture(scope="session")
def tflite_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"fp32": path, "int8": path}``: the same tiny net as float and full-int8 (int8 in/out) TFLite."""
    pytest.importorskip("tensorflow", reason="tensorflow-cpu not installed (pip install 'edgenas[tflite]')")
    import warnings

    import numpy as np

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf, concrete = _tflite_net()
    out = tmp_path_factory.mktemp("tflite")
    paths = {"fp32": out / "net_fp32.tflite", "int8": out / "net_int8.tflite"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete])  # type: ignore[attr-defined]
        paths["fp32"].write_bytes(conv.convert())

        rng = np.random.default_rng(1)

        def representative() -> Iterator[list[np.ndarray]]:
            for _ in range(16):
                yield [rng.standard_normal((1, 49, 10, 1)).astype(np.float32)]

        conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete])  # type: ignore[attr-defined]
        conv.optimizations = [tf.lite.Optimize.DEFAULT]  # type: ignore[attr-defined]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]  # type: ignore[attr-defined]
        conv.inference_input_type = tf.int8  # type: ignore[attr-defined]
        conv.inference_output_type = tf.int8  # type: ignore[attr-defined]
        paths["int8"].write_bytes(conv.convert())
    return paths


@pytest.fixture(scope="session")
def ssh_board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandInBoard]:
    """A running stand-in board (sshd on 127.0.0.1); skipped when sshd or paramiko is missing."""
    reason = sshd_missing_reason()
    if reason:
        pytest.skip(f"stand-in SSH board unavailable: {reason}")
    board = StandInBoard.start(tmp_path_factory.mktemp("board"))
    try:
        yield board
    finally:
        board.stop()


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No ~/.ssh/config or ~/.ssh/known_hosts of the developer's; no ssh-agent."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setenv("EDGENAS_CONFIG", str(tmp_path / "cfg"))
    return home
