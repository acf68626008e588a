"""The audio front end (MFCC of a DataConfig) as its own float model, for deployment.

An FFT cannot live inside a fully-integer model, so on a board the pipeline is::

    raw audio [1, clip_samples] float32 ──► front-end model (float) ──► int8 classifier

and the front end must reproduce :func:`edgenas.datasets.features.mfcc` (the training
features). Both exports compute the module-doc formula of :mod:`edgenas.datasets.features`
with the matrices of :func:`~edgenas.datasets.features.mfcc_matrices`::

    frame_t = wave[t*hop : t*hop + win_length] * hann_window     (no centring)
    power_t = |rfft(frame_t, n=n_fft)|**2
    mfcc_t  = log(power_t @ mel_fb + LOG_OFFSET) @ dct

* :func:`export_frontend_onnx` — an ``nn.Module`` around ``torch.stft`` (the wave zero-padded
  by ``(n_fft - win_length)`` split as torch centres the window, the Hann window of
  ``win_length`` padded to ``n_fft`` — exactly what torchaudio's transform does), exported by
  :func:`edgenas.export.onnx_export.export_onnx_fp32` (``torch.onnx.export(dynamo=True)``,
  opset 18, static batch 1). Graph: ``Pad → STFT → power → MatMul(mel) → Add → Log →
  MatMul(dct)``; input ``audio`` [1, clip_samples], output ``features`` [1, 1, n_frames, n_mfcc]
  (NCHW, what the ONNX classifier eats).
* :func:`export_frontend_tflite` — ``tf.signal.stft(frame_length=win_length, fft_length=n_fft)``
  with the same window, mel and DCT matrices, converted from a concrete function with
  ``TFLITE_BUILTINS`` only (RFFT2D is a builtin op; the FFT size is a power of two by
  construction of DataConfig); input ``audio`` [1, clip_samples], output [1, n_frames, n_mfcc, 1]
  (NHWC, what the TFLite classifier eats). ``tf.signal.stft`` frames ``win_length`` samples and
  zero-pads each frame at its end to ``n_fft``; torch puts the window in the middle of the
  ``n_fft`` frame. The two differ by a phase only, so the power spectra are identical.
* :func:`run_frontend` — features of a batch of clips through either file (one clip per call).

Both carry metadata: ONNX in ``metadata_props``, TFLite as a model metadata entry named
``edgenas`` (a JSON object), read back with :func:`read_frontend_metadata`.

NCHW [1, 1, T, M] and NHWC [1, T, M, 1] hold the same numbers in the same memory order, so a
front end of one format feeds a classifier of the other by a plain reshape.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgenas.errors import ExportError
from edgenas.fileio import atomic_write_bytes
from edgenas.export.tflite_export import embed_metadata, read_tflite_metadata
from edgenas.spec import DataConfig


AUDIO_NAME = "audio"
FEATURES_NAME = "features"
FRONTEND_KIND = "mfcc"
TFLITE_INSTALL_HINT = "pip install 'edgenas[tflite]'"


def frontend_metadata(cfg: DataConfig, layout: str, norm: "Norm" = None) -> dict[str, str]:
    """The metadata a front-end artifact carries (edgenas version, data config, I/O contract)."""
    from edgenas.export.onnx_export import QUANT_FP32, model_metadata

    return model_metadata(
        None, QUANT_FP32,
        artifact="frontend",
        frontend=FRONTEND_KIND,
        data_config=json.dumps(cfg.to_dict(), sort_keys=True),
        data_key=cfg.key(),
        input=f"{AUDIO_NAME} float32 [1, {cfg.clip_samples}] at {cfg.sample_rate} Hz in [-1, 1]",
        output_layout=layout,
        normalization=json.dumps(None if norm is None else {"mean": [float(v) for v in np.ravel(norm[0])],
                                                            "std": [float(v) for v in np.ravel(norm[1])]}),
    )


Norm = tuple[np.ndarray, np.ndarray] | None  # per-coefficient (mean, std) the classifier's inputs are standardised by


def _dct_and_bias(cfg: DataConfig, norm: Norm) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(window, mel_fb, dct, bias): standardisation ``(mfcc − mean) / std`` folded into the DCT."""
    from edgenas.datasets.features import mfcc_matrices

    window, mel_fb, dct = mfcc_matrices(cfg)
    bias = np.zeros(cfg.n_mfcc, np.float32)
    if norm is not None:
        mean, std = (np.asarray(v, np.float32).reshape(-1) for v in norm)
        dct = (dct / std[None, :]).astype(np.float32)
        bias = (-mean / std).astype(np.float32)
    return window, mel_fb, dct, bias


def _mfcc_module(cfg: DataConfig, norm: Norm = None) -> Any:
    """The front end as an ``nn.Module``: audio [1, clip_samples] → [1, 1, n_frames, n_mfcc]."""
    import torch
    import torch.nn.functional as F

    from edgenas.datasets.features import LOG_OFFSET

    window, mel_fb, dct, bias = _dct_and_bias(cfg, norm)

    class MfccFrontend(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("window", torch.from_numpy(window))
            self.register_buffer("mel_fb", torch.from_numpy(mel_fb))
            self.register_buffer("dct", torch.from_numpy(dct))
            self.register_buffer("bias", torch.from_numpy(bias))
            self.left = (cfg.n_fft - cfg.win_length) // 2
            self.right = cfg.n_fft - cfg.win_length - self.left

        def forward(self, audio: torch.Tensor) -> torch.Tensor:
            x = F.pad(audio, (self.left, self.right))
            spec = torch.stft(x, cfg.n_fft, cfg.hop_length, cfg.win_length, self.window,
                              center=False, return_complex=True)
            ri = torch.view_as_real(spec)                       # [1, bins, T, 2]
            power = (ri * ri).sum(-1).transpose(1, 2)           # [1, T, bins]
            logmel = torch.log(torch.matmul(power, self.mel_fb) + LOG_OFFSET)
            return (torch.matmul(logmel, self.dct) + self.bias).unsqueeze(1)  # [1, 1, T, n_mfcc]

    return MfccFrontend().eval()


def export_frontend_onnx(cfg: DataConfig, path: str | Path, norm: Norm = None) -> Path:
    """Float ONNX front end: ``audio`` [1, clip_samples] → ``features`` [1, 1, n_frames, n_mfcc]
    (standardised per coefficient when ``norm`` = (mean, std) is given)."""
    from edgenas.export.onnx_export import export_onnx_fp32

    return export_onnx_fp32(_mfcc_module(cfg, norm), (1, cfg.clip_samples), path, frontend_metadata(cfg, "NCHW", norm),
                            dynamic_batch=False, input_name=AUDIO_NAME, output_name=FEATURES_NAME)


@contextlib.contextmanager
def _quiet_tf() -> Iterator[None]:
    """Silence TensorFlow's C++ and Python log spam (and the converter's prints) for a block."""
    from edgenas.export.onnx_export import _quiet

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    loggers = [logging.getLogger(n) for n in ("tensorflow", "absl", "h5py")]
    levels = [lg.level for lg in loggers]
    try:
        with _quiet():
            for lg in loggers:
                lg.setLevel(logging.ERROR)
            yield
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


def _import_tf() -> Any:
    """TensorFlow through the one guarded import (triton first, quiet, the extra named if missing)."""
    from edgenas.export.keras_build import import_tf

    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    return import_tf()[0]


def export_frontend_tflite(cfg: DataConfig, path: str | Path, norm: Norm = None) -> Path:
    """Float TFLite front end: ``audio`` [1, clip_samples] → [1, n_frames, n_mfcc, 1] (NHWC).

    TensorFlow is needed at export time only (``pip install 'edgenas[tflite]'``).
    """
    from edgenas.datasets.features import LOG_OFFSET

    tf = _import_tf()
    path = Path(path)
    window, mel_fb, dct, bias = _dct_and_bias(cfg, norm)

    @tf.function(input_signature=[tf.TensorSpec([1, cfg.clip_samples], tf.float32, name=AUDIO_NAME)])
    def frontend(audio: Any) -> Any:
        spec = tf.signal.stft(audio, frame_length=cfg.win_length, frame_step=cfg.hop_length,
                              fft_length=cfg.n_fft, window_fn=lambda n, dtype: tf.constant(window),
                              pad_end=False)                                  # [1, T, bins] complex64
        re, im = tf.math.real(spec), tf.math.imag(spec)
        power = re * re + im * im          # not |z|²: avoids a sqrt-then-square on near-silence
        logmel = tf.math.log(tf.matmul(power, tf.constant(mel_fb)) + LOG_OFFSET)
        out = tf.matmul(logmel, tf.constant(dct)) + tf.constant(bias)        # [1, T, n_mfcc]
        return {FEATURES_NAME: tf.reshape(out, [1, cfg.n_frames, cfg.n_mfcc, 1])}

    try:
        with _quiet_tf():
            concrete = frontend.get_concrete_function()
            converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], frontend)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            flat = converter.convert()
            flat = embed_metadata(flat, frontend_metadata(cfg, "NHWC", norm))
    except Exception as e:
        text = str(e).strip().splitlines()
        raise ExportError(f"TFLite front-end export to {path} failed: {text[0] if text else type(e).__name__}") from None
    _check_tflite(flat, cfg, path)
    atomic_write_bytes(path, flat)
    return path


def _tflite_interpreter(model_path: str | None = None, model_content: bytes | None = None) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            tf = _import_tf()
        except ExportError:
            raise ExportError(f"running a TFLite model needs ai-edge-litert; install it with {TFLITE_INSTALL_HINT}") from None
        Interpreter = tf.lite.Interpreter
    try:
        interp = Interpreter(model_path=model_path, model_content=model_content, num_threads=1)
        interp.allocate_tensors()
    except Exception as e:
        raise ExportError(f"cannot load TFLite model {model_path or '(in memory)'}: {e}") from None
    return interp


def _check_tflite(flat: bytes, cfg: DataConfig, path: Path) -> None:
    """The converted model loads and has the promised input/output shapes."""
    interp = _tflite_interpreter(model_content=flat)
    inp, out = interp.get_input_details(), interp.get_output_details()
    if len(inp) != 1 or list(inp[0]["shape"]) != [1, cfg.clip_samples] or inp[0]["dtype"] != np.float32:
        raise ExportError(f"TFLite front end {path}: unexpected input {[(d['shape'], d['dtype']) for d in inp]}")
    want = [1, cfg.n_frames, cfg.n_mfcc, 1]
    if len(out) != 1 or list(out[0]["shape"]) != want:
        raise ExportError(f"TFLite front end {path}: output shape {[list(d['shape']) for d in out]} != {want}")


def tflite_op_names(path: str | Path) -> list[str]:
    """The builtin op of every operator of a TFLite model, in execution order (no delegates)."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        raise ExportError(f"listing TFLite ops needs ai-edge-litert; install it with {TFLITE_INSTALL_HINT}") from None
    interp = Interpreter(model_path=str(path),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    return [d["op_name"] for d in interp._get_ops_details()]


def read_frontend_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a front end of either format (ONNX ``metadata_props``, TFLite ``edgenas``)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"front-end model not found: {path}")
    if _is_tflite(path):
        return read_tflite_metadata(path)
    from edgenas.export.onnx_export import read_metadata

    return read_metadata(path)


def _is_tflite(path: Path) -> bool:
    """TFLite flatbuffers carry the file identifier ``TFL3`` at bytes 4–8."""
    with path.open("rb") as f:
        head = f.read(8)
    return head[4:8] == b"TFL3"


def run_frontend(path: str | Path, audio: np.ndarray) -> np.ndarray:
    """Features of ``audio`` [N, clip_samples] through a front-end file of either format.

    Returns [N, 1, n_frames, n_mfcc] float32 (the TFLite NHWC output is reshaped; same memory order).
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"front-end model not found: {path}")
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ExportError(f"audio must be [N, samples], got shape {x.shape}")
    outs: list[np.ndarray] = []
    if _is_tflite(path):
        interp = _tflite_interpreter(model_path=str(path))
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        if x.shape[1] != int(inp["shape"][1]):
            raise ExportError(f"{path} takes {int(inp['shape'][1])} samples per clip, got {x.shape[1]}")
        t, m = int(out["shape"][1]), int(out["shape"][2])
        for row in x:
            interp.set_tensor(inp["index"], np.ascontiguousarray(row[None]))
            interp.invoke()
            outs.append(interp.get_tensor(out["index"]).reshape(1, 1, t, m).copy())
    else:
        from edgenas.export.onnx_export import _session

        sess = _session(path)
        inp = sess.get_inputs()[0]
        if x.shape[1] != inp.shape[1]:
            raise ExportError(f"{path} takes {inp.shape[1]} samples per clip, got {x.shape[1]}")
        for row in x:
            outs.append(sess.run(None, {inp.name: np.ascontiguousarray(row[None])})[0])
    if not outs:
        raise ExportError("run_frontend needs at least one clip")
    return np.concatenate(outs, axis=0).astype(np.float32, copy=False)
