"""The audio front end (MFCC of a DataConfig) as its own float model, for deployment.

An FFT cannot live inside a fully-integer model, so on a board the pipeline is::

    raw audio [1, clip_samples] float32 ──► front-end model (float) ──► int8 classifier

and the front end must reproduce :func:`edgenas.datasets.features.mfcc` (the training
features). Every implementation computes the module-doc formula of
:mod:`edgenas.datasets.features` with the matrices of
:func:`~edgenas.datasets.features.mfcc_matrices`::

    frame_t = wave[t*hop : t*hop + win_length] * hann_window     (no centring)
    power_t = |rfft(frame_t, n=n_fft)|**2
    mfcc_t  = log(power_t @ mel_fb + LOG_OFFSET) @ dct

Input ``audio`` [1, clip_samples]; output ``features`` [1, 1, n_frames, n_mfcc] (ONNX, NCHW, what
the ONNX classifier eats) or [1, n_frames, n_mfcc, 1] (TFLite, NHWC). The two layouts hold the
same numbers in the same memory order, so a front end of one format feeds a classifier of the
other by a plain reshape.

Implementations (``impl=``; :data:`IMPLS` per format, :data:`DEFAULT_IMPL` when ``impl`` is None)
---------------------------------------------------------------------------------------------

The FFT of a 320-sample frame costs ~10 kFLOP, but ONNX Runtime's ``STFT`` kernel and TFLite's
``RFFT2D`` (not delegated to XNNPACK) run it slowly: the front end took 5× the time of the int8
classifier behind it. A DFT is a matrix product, and matrix products are what both runtimes do
fast, so the other implementations are matrix products:

* ``"stft"`` — the baseline. ONNX: an ``nn.Module`` around ``torch.stft`` (wave zero-padded by
  ``n_fft - win_length`` split as torch centres the window — what torchaudio's transform does),
  exported by :func:`edgenas.export.onnx_export.export_onnx_fp32` (dynamo, opset 18): ``Pad →
  STFT → power → MatMul(mel) → Log → MatMul(dct)``. TFLite: ``tf.signal.stft(frame_length=
  win_length, fft_length=n_fft)`` → ``RFFT2D`` (a builtin; n_fft is a power of two by construction
  of DataConfig). ``tf.signal.stft`` zero-pads each frame at its end and torch centres it: a phase
  difference only, the power spectra are identical.
* ``"dft"`` — framing (hop-sized blocks of the wave, sliced and concatenated: no gather) and the
  windowed real DFT as one matrix product ``frames [T, win_length] @ [win·cos | −win·sin]
  [win_length, 2K]``. The DFT of a frame zero-padded to n_fft is exactly this product with a
  win_length-row matrix, so there is no padding; only the K bins the mel filterbank uses (rows of
  ``mel_fb`` that are not all zero) are computed. Then ``re² + im²`` (one Mul, one Split, one Add),
  mel and DCT as matrix products. ONNX ``MatMul``; TFLite ``FULLY_CONNECTED``. Dense: O(win·n_fft)
  FLOPs and a big matrix in the file.
* ``"dft-conv"`` — the same matrix as a strided 1-D convolution over the raw wave (kernel
  win_length, stride hop, 2K output channels): ONNX ``Conv``, TFLite ``CONV_2D``.
* ``"fft2"`` — one Cooley–Tukey step, so both stages are small matrix products (see
  :func:`_fft2_plan`). With a power of two ``B`` dividing hop and n_fft, ``Q = n_fft / B`` and
  sample ``n = B·a + b`` of a frame: stage 1 is, for each phase ``b``, a Q-point DFT over ``a`` of
  the windowed samples with the twiddle factor ``W_N^{(Ba+b)·j}`` folded in (only ``j = 0..Q/2``:
  the input is real, the other half is the conjugate) — a *grouped* convolution over the
  polyphase wave (``B`` groups, kernel ``win_length / B``, stride ``hop / B``; ONNX ``Conv
  group=B``, TFLite ``DEPTHWISE_CONV_2D``), which also does the framing and the window. Stage 2 is
  one shared B-point complex DFT over ``b`` (a ``[2B, 2B]`` matrix) that yields every needed bin
  ``k = j + Q·m`` (or its mirror ``n_fft − k``, same power). ~40 k multiply-adds per frame at
  8 kHz including mel (``"dft"``: ~170 k), with ~7× smaller matrices. ONNX: ``Transpose`` of the
  wave into polyphase channels, ``Conv``, ``MatMul`` (stage 2 as the left factor, so no transpose
  between stages), power, ``Gemm(mel)`` (LOG_OFFSET as its C), ``Log``, ``Gemm(dct)``. TFLite: ``DEPTHWISE_CONV_2D``, one
  ``TRANSPOSE``, ``FULLY_CONNECTED`` for stage 2, power, ``FULLY_CONNECTED`` for mel and DCT.
* ``"fft2-bmm"`` (TFLite only) — ``"fft2"`` with stage 2 as a ``BATCH_MATMUL`` of the constant
  ``[2B, 2B]`` matrix against each frame's stage-1 block (no TRANSPOSE).
* ``"fft2-lowmem"`` — ``"fft2"`` over :data:`LOWMEM_CHUNKS` consecutive chunks of frames that share
  the constants, each chunk's spectrum dead before the next one's is made: less than half the peak
  activation memory of ``"fft2"`` (and of ``"stft"``) for ~15–40% more time than ``"fft2"``. For a
  tight RAM budget. (The TFLite converter schedules all chunk convolutions first; the operators are
  re-sequenced depth first after conversion, :func:`_depth_first`.)

``"fft2"`` needs a power of two B ≥ 4 dividing hop (B = 16 at the standard configurations); for
a DataConfig without one (e.g. 11025 Hz with a 10 ms hop: 110 samples) the default falls back to
:data:`FALLBACK_IMPL` and an explicit ``"fft2"`` is an ExportError. Every artifact names its
implementation in its metadata (``frontend_impl``).

:data:`DEFAULT_IMPL` is the fastest implementation per format as measured by
``bench/frontend_speed.py`` (``bench/results/frontend_speed.md``: all files interleaved in one
process, 1 thread, 500 rounds; a 2-core VM shared with other work, so absolute times drift by
±30% between runs while the interleaved ratios hold). Standard configuration, medians:

    runtime           rate    stft      fft2      stft/fft2  fft2-lowmem  DS-CNN-S int8  fft2/classifier
    ONNX Runtime       8 kHz  0.52 ms   0.143 ms  3.7×       0.210 ms     0.138 ms       1.0×
    ONNX Runtime      16 kHz  1.04 ms   0.250 ms  4.2×       0.319 ms     0.138 ms       1.8×
    LiteRT (XNNPACK)   8 kHz  0.28 ms   0.100 ms  2.8×       0.126 ms     0.061 ms       1.6×
    LiteRT (XNNPACK)  16 kHz  0.56 ms   0.196 ms  2.8×       0.266 ms     0.061 ms       3.2×

``"dft"`` is 2.0× / 1.3× (ONNX) and 1.4× / 0.8× (TFLite) faster than ``"stft"``: its dense
matrix (0.7 MB at 8 kHz, 2.6 MB at 16 kHz) makes it compute- and flash-bound; ``"dft-conv"`` is
slower than ``"dft"`` on both runtimes, ``"fft2-bmm"`` slower than ``"fft2"`` (BATCH_MATMUL vs
TRANSPOSE + FULLY_CONNECTED). Also measured on the way (prototypes, 8 kHz): fusing the power into
the mel product (``[re², im²] @ [mel; mel]``) was no faster than ``re² + im²`` then mel and doubles
the mel matrix; a frame ``Gather`` cost ~0.1 ms more than block slicing; ``ReduceSumSquare`` (or
Mul + ReduceSum) for the power was slower than Mul + Split + Add in ONNX Runtime; B = 8 or 32 was
slower than 16.

Memory (what the RAM and flash budgets count; ``onnx_memory_report`` / ``verify_tflite``, which
count a reshape as a new tensor): every implementation holds the whole clip's spectrum
(≈ n_frames × n_fft floats) and one more tensor of that size at its widest step, so the peaks are
level: stft 197 / 393 KB, dft 195 / 391 KB, fft2 208 / 404 KB (8 / 16 kHz, both formats) — of
which the float input alone is 31 / 63 KB. ``"fft2-lowmem"`` holds one chunk's: 90 / 174 KB.
Files: stft 46–48 / 88–89 KB, fft2 92–97 / 255–261 KB, dft 678 / 2633 KB.

Other functions: :func:`run_frontend` — features of a batch of clips through either file (one
clip per call); :func:`read_frontend_metadata` — ONNX ``metadata_props`` or the TFLite metadata
entry ``edgenas`` (a JSON object); :func:`resolve_impl` — the implementation a call would use.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from edgenas.datasets.features import LOG_OFFSET, mfcc_matrices
from edgenas.errors import ExportError
from edgenas.export.onnx_export import OPSET, QUANT_FP32, model_metadata
from edgenas.export.tflite_export import embed_metadata, read_tflite_metadata
from edgenas.fileio import atomic_write_bytes
from edgenas.spec import DataConfig
from edgenas.tasks.base import FrontEnd


AUDIO_NAME = "audio"
FEATURES_NAME = "features"
FRONTEND_KIND = "mfcc"
TFLITE_INSTALL_HINT = "pip install 'edgenas[tflite]'"

IMPLS: dict[str, tuple[str, ...]] = {
    "onnx": ("stft", "dft", "dft-conv", "fft2", "fft2-lowmem"),
    "tflite": ("stft", "dft", "dft-conv", "fft2", "fft2-bmm", "fft2-lowmem"),
}
# the fastest correct implementation per format, measured by bench/frontend_speed.py
DEFAULT_IMPL: dict[str, str] = {"onnx": "fft2", "tflite": "fft2"}
# what the default becomes for a DataConfig that the factored implementations do not apply to
FALLBACK_IMPL = "dft"
FFT2_RADICES = (4, 8, 16, 32)  # candidate B of "fft2"; the valid one with the fewest multiply-adds is used
MAX_FRAME_SLICES = 16  # framing by block slices up to this many blocks per frame, else a Gather
LOWMEM_CHUNKS = 4  # "fft2-lowmem" runs the frames in this many consecutive chunks

Norm = tuple[np.ndarray, np.ndarray] | None  # per-coefficient (mean, std) the classifier's inputs are standardised by


def frontend_metadata(cfg: DataConfig, layout: str, norm: Norm = None, impl: str = "stft") -> dict[str, str]:
    """The metadata a front-end artifact carries (edgenas version, data config, I/O contract, impl)."""
    return model_metadata(
        None, QUANT_FP32,
        artifact="frontend",
        frontend=FRONTEND_KIND,
        frontend_impl=impl,
        data_config=json.dumps(cfg.to_dict(), sort_keys=True),
        data_key=cfg.key(),
        input=f"{AUDIO_NAME} float32 [1, {cfg.clip_samples}] at {cfg.sample_rate} Hz in [-1, 1]",
        output_layout=layout,
        normalization=json.dumps(None if norm is None else {"mean": [float(v) for v in np.ravel(norm[0])],
                                                            "std": [float(v) for v in np.ravel(norm[1])]}),
    )


# ---- choosing the implementation -------------------------------------------------------------

def _fft2_radix(cfg: DataConfig) -> int | None:
    """B of ``"fft2"`` for ``cfg``: the candidate with the fewest multiply-adds, or None."""
    best: tuple[float, int] | None = None
    n, m, frames = cfg.n_fft, cfg.n_mels, cfg.n_frames
    for b in FFT2_RADICES:
        if cfg.hop_length % b or n % b or n // b < 2:
            continue
        qp = n // b // 2 + 1
        taps = -(-cfg.win_length // b)
        macs = frames * (2 * qp * taps * b + 4 * b * b * qp + b * qp * m)
        if best is None or macs < best[0]:
            best = (macs, b)
    return None if best is None else best[1]


def resolve_impl(cfg: DataConfig, fmt: str, impl: str | None = None) -> str:
    """The implementation ``export_frontend_<fmt>(cfg, impl=impl)`` uses (one-line ExportError if
    ``impl`` is unknown for ``fmt`` or does not apply to ``cfg``)."""
    if fmt not in IMPLS:
        raise ExportError(f"unknown front-end format {fmt!r}; choose one of {', '.join(IMPLS)}")
    choices = IMPLS[fmt]
    if impl is None:
        impl = DEFAULT_IMPL[fmt]
        return impl if _applies(cfg, impl) else FALLBACK_IMPL
    if impl not in choices:
        close = difflib.get_close_matches(str(impl), choices, n=2)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise ExportError(f"unknown {fmt} front-end implementation {impl!r}{hint}; choose one of {', '.join(choices)}")
    if not _applies(cfg, impl):
        raise ExportError(f"front-end implementation {impl!r} needs a hop length divisible by one of "
                          f"{', '.join(map(str, FFT2_RADICES))}; {cfg.key()} has {cfg.hop_length} samples "
                          f"(use impl={FALLBACK_IMPL!r})")
    return impl


def _applies(cfg: DataConfig, impl: str) -> bool:
    return not impl.startswith("fft2") or _fft2_radix(cfg) is not None


# ---- the matrices ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Mfcc:
    """The MFCC constants of one DataConfig (standardisation folded into ``dct`` and ``bias``)."""

    window: np.ndarray  # [win_length] float64
    mel: np.ndarray     # [n_fft//2 + 1, n_mels] float64
    dct: np.ndarray     # [n_mels, n_mfcc] float32, divided by std when normalised
    bias: np.ndarray    # [n_mfcc] float32, −mean/std (zeros without norm)
    bins: np.ndarray    # the DFT bins the mel filterbank uses (int)
    normalised: bool


def _mfcc_constants(cfg: DataConfig, norm: Norm) -> _Mfcc:
    window, mel_fb, dct = mfcc_matrices(cfg)
    bias = np.zeros(cfg.n_mfcc, np.float32)
    if norm is not None:
        mean, std = (np.asarray(v, np.float32).reshape(-1) for v in norm)
        if mean.shape != (cfg.n_mfcc,) or std.shape != (cfg.n_mfcc,):
            raise ExportError(f"normalisation needs {cfg.n_mfcc} means and stds, got {mean.size} and {std.size}")
        dct = (dct / std[None, :]).astype(np.float32)
        bias = (-mean / std).astype(np.float32)
    bins = np.nonzero(np.any(mel_fb != 0, axis=1))[0]
    return _Mfcc(window.astype(np.float64), mel_fb.astype(np.float64), dct.astype(np.float32), bias,
                 bins, norm is not None)


def _dense_dft(cfg: DataConfig, c: _Mfcc) -> np.ndarray:
    """``[win_length, 2K]`` float32: window·cos | −window·sin of the used bins (frame not padded)."""
    n = np.arange(cfg.win_length, dtype=np.float64)
    ang = 2.0 * np.pi * np.outer(n, c.bins) / cfg.n_fft
    w = c.window[:, None]
    return np.concatenate([w * np.cos(ang), -w * np.sin(ang)], axis=1).astype(np.float32)


@dataclass(frozen=True)
class _Fft2:
    """The constants of ``"fft2"`` (see :func:`_fft2_plan`)."""

    b: int            # B: phases (stage-2 DFT size)
    q: int            # Q = n_fft / B (stage-1 DFT size)
    qp: int           # Q/2 + 1 stage-1 outputs kept
    taps: int         # A = ceil(win_length / B): stage-1 kernel length
    rows: int         # polyphase rows of the wave the graph reads (rows·B samples)
    w1: np.ndarray    # [B, 2, Qp, A] float32: stage 1 (window and twiddles folded in)
    d: np.ndarray     # [2B, 2B] float32: stage 2, rows (re/im, m), columns (b, re/im)
    mel: np.ndarray   # [B, Qp, n_mels] float32: mel weight of the power at (m, j); 0 for unused/duplicate bins


def _fft2_plan(cfg: DataConfig, c: _Mfcc) -> _Fft2:
    """One decimation-in-time step of the zero-padded n_fft-point DFT of each frame.

    With ``N = n_fft = B·Q``, frame sample ``n = B·a + b`` (``a < A = ceil(win/B)``, window zero
    beyond win_length) and bin ``k = j + Q·m``::

        X[k] = Σ_b W_B^{b·m} · Y[b, j],     Y[b, j] = Σ_a x[Ba+b]·w[Ba+b] · W_N^{(Ba+b)·j}

    since ``W_N^{(Ba+b)(j+Qm)} = W_N^{(Ba+b)j} · W_B^{bm}``. ``Y`` is computed for ``j ≤ Q/2``
    only; for real input the bins with residue ``Q − j`` are the conjugate mirror
    ``X[N − k]``, which the same B-point DFT over ``b`` yields at ``m' = B − 1 − m`` (same power).
    So the power of every bin ``0..N/2`` is among ``|X[j + Q·m]|²`` for ``j ≤ Q/2, m < B``; each
    used bin gets its mel row once (``j = 0`` and ``j = Q/2`` see some bins twice).
    """
    b = _fft2_radix(cfg)
    assert b is not None
    n_fft, win = cfg.n_fft, cfg.win_length
    q = n_fft // b
    qp = q // 2 + 1
    taps = -(-win // b)
    n = b * np.arange(taps)[None, :] + np.arange(b)[:, None]            # [B, A] sample index
    w = np.where(n < win, c.window[np.minimum(n, win - 1)], 0.0)
    theta = 2.0 * np.pi * n[:, None, :] * np.arange(qp)[None, :, None] / n_fft   # [B, Qp, A]
    w1 = np.stack([w[:, None, :] * np.cos(theta), -w[:, None, :] * np.sin(theta)], axis=1)   # [B, 2, Qp, A]
    phi = 2.0 * np.pi * np.outer(np.arange(b), np.arange(b)) / b          # [m, b]
    cos, sin = np.cos(phi), np.sin(phi)
    d = np.zeros((2, b, b, 2))                                            # (re/im out, m, b, re/im in)
    d[0, :, :, 0], d[0, :, :, 1] = cos, sin                               # Re: c·Yr + s·Yi
    d[1, :, :, 0], d[1, :, :, 1] = -sin, cos                              # Im: c·Yi − s·Yr
    used = set(int(k) for k in c.bins)
    mel = np.zeros((b, qp, c.mel.shape[1]))
    seen: set[int] = set()
    for m in range(b):
        for j in range(qp):
            k = (j + q * m) % n_fft
            k = min(k, n_fft - k)
            if k in used and k not in seen:
                seen.add(k)
                mel[m, j] = c.mel[k]
    assert seen == used, "fft2 plan misses mel bins"
    rows = (cfg.n_frames - 1) * (cfg.hop_length // b) + taps
    return _Fft2(b, q, qp, taps, rows, w1.astype(np.float32), d.reshape(2 * b, 2 * b).astype(np.float32),
                 mel.astype(np.float32))


def _frame_blocks(cfg: DataConfig) -> tuple[int, int, int] | None:
    """Framing by slicing: (block, blocks per frame, block step per frame) or None (use a gather).

    Frames are made of ``gcd(win, hop)``-sample blocks of the wave: frame ``t`` is blocks
    ``t·step … t·step + parts − 1``, so ``parts`` strided slices of the block view, concatenated,
    are the frames."""
    g = math.gcd(cfg.win_length, cfg.hop_length)
    parts, step = cfg.win_length // g, cfg.hop_length // g
    return (g, parts, step) if parts <= MAX_FRAME_SLICES else None


# ---- ONNX ------------------------------------------------------------------------------------

class _OnnxGraph:
    """A small builder of an ONNX graph (opset 18) from constants and nodes."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def _name(self, kind: str) -> str:
        self._n += 1
        return f"{kind}_{self._n}"

    def const(self, value: Any, dtype: Any = np.float32) -> str:
        from onnx import numpy_helper

        name = self._name("c")
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(np.asarray(value, dtype=dtype)), name))
        return name

    def ints(self, *values: int) -> str:
        return self.const(list(values), np.int64)

    def op(self, op_type: str, inputs: list[str], outputs: int = 1, **attrs: Any) -> Any:
        from onnx import helper

        outs = [self._name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self._name(op_type), **attrs))
        return outs[0] if outputs == 1 else outs

    def model(self, cfg: DataConfig, out: str, out_shape: list[int]) -> Any:
        from onnx import TensorProto, helper

        for node in self.nodes:  # the last node writes the graph output
            node.output[:] = [FEATURES_NAME if o == out else o for o in node.output]
        graph = helper.make_graph(
            self.nodes, "edgenas_frontend",
            [helper.make_tensor_value_info(AUDIO_NAME, TensorProto.FLOAT, [1, cfg.clip_samples])],
            [helper.make_tensor_value_info(FEATURES_NAME, TensorProto.FLOAT, out_shape)], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgenas")
        model.ir_version = 10
        return model

    def take(self, x: str, start: int, stop: int, axis: int, step: int = 1) -> str:
        return self.op("Slice", [x, self.ints(start), self.ints(stop), self.ints(axis), self.ints(step)])


def _onnx_samples(g: _OnnxGraph, cfg: DataConfig, n: int) -> str:
    """The first ``n`` samples of the wave, [1, n] (zero-padded at the end if the clip is shorter)."""
    s = cfg.clip_samples
    if n == s:
        return AUDIO_NAME
    if n < s:
        return g.take(AUDIO_NAME, 0, n, 1)
    return g.op("Pad", [AUDIO_NAME, g.ints(0, 0, 0, n - s)])


def _onnx_frames(g: _OnnxGraph, cfg: DataConfig) -> str:
    """Frames [T, win_length] of the wave."""
    t, win, hop = cfg.n_frames, cfg.win_length, cfg.hop_length
    blocks = _frame_blocks(cfg)
    if blocks is None:
        idx = np.arange(win)[None, :] + hop * np.arange(t)[:, None]
        flat = g.op("Reshape", [AUDIO_NAME, g.ints(-1)])
        return g.op("Gather", [flat, g.const(idx, np.int64)], axis=0)
    size, parts, step = blocks
    n_blocks = (t - 1) * step + parts
    x = g.op("Reshape", [_onnx_samples(g, cfg, n_blocks * size), g.ints(n_blocks, size)])
    cols = [g.take(x, i, i + (t - 1) * step + 1, 0, step) for i in range(parts)]
    return cols[0] if parts == 1 else g.op("Concat", cols, axis=1)


def _onnx_power(g: _OnnxGraph, z: str, k: int, axis: int, halves: str | None = None) -> str:
    """re² + im² of ``z`` whose ``axis`` holds [re (k) ; im (k)] (``halves``: a shared [k, k] constant)."""
    sq = g.op("Mul", [z, z])
    re2, im2 = g.op("Split", [sq, halves or g.ints(k, k)], outputs=2, axis=axis)
    return g.op("Add", [re2, im2])


def _onnx_logmel(g: _OnnxGraph, a: str, b: str, offset: str | None = None) -> str:
    """``log(a @ b + LOG_OFFSET)``: one Gemm (the offset as its C) and a Log."""
    return g.op("Log", [g.op("Gemm", [a, b, offset or g.const([LOG_OFFSET])])])


def _onnx_dct(g: _OnnxGraph, cfg: DataConfig, c: _Mfcc, logmel: str, trans: bool) -> str:
    """``logmel`` [T, M] (or [M, T] with ``trans``) → features [1, 1, T, n_mfcc]."""
    ins = [logmel, g.const(c.dct)] + ([g.const(c.bias)] if c.normalised else [])
    out = g.op("Gemm", ins, transA=int(trans))
    return g.op("Reshape", [out, g.ints(1, 1, cfg.n_frames, cfg.n_mfcc)])


def _onnx_dft(cfg: DataConfig, c: _Mfcc) -> Any:
    g = _OnnxGraph()
    k = len(c.bins)
    z = g.op("MatMul", [_onnx_frames(g, cfg), g.const(_dense_dft(cfg, c))])          # [T, 2K]
    logmel = _onnx_logmel(g, _onnx_power(g, z, k, axis=1), g.const(c.mel[c.bins]))  # [T, M]
    return g.model(cfg, _onnx_dct(g, cfg, c, logmel, trans=False), [1, 1, cfg.n_frames, cfg.n_mfcc])


def _onnx_dft_conv(cfg: DataConfig, c: _Mfcc) -> Any:
    g = _OnnxGraph()
    k, t = len(c.bins), cfg.n_frames
    need = (t - 1) * cfg.hop_length + cfg.win_length
    x = g.op("Reshape", [_onnx_samples(g, cfg, need), g.ints(1, 1, need)])
    kernel = _dense_dft(cfg, c).T[:, None, :]                                          # [2K, 1, win]
    z = g.op("Conv", [x, g.const(kernel)], kernel_shape=[cfg.win_length], strides=[cfg.hop_length])  # [1, 2K, T]
    z = g.op("Reshape", [z, g.ints(2 * k, t)])
    logmel = _onnx_logmel(g, g.const(c.mel[c.bins].T), _onnx_power(g, z, k, axis=0))  # [M, T]
    return g.model(cfg, _onnx_dct(g, cfg, c, logmel, trans=True), [1, 1, t, cfg.n_mfcc])


def _chunks(frames: int, chunks: int) -> list[tuple[int, int]]:
    """``chunks`` consecutive frame ranges [t0, t1) covering ``frames`` frames, sizes within one."""
    edges = np.linspace(0, frames, min(chunks, frames) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _onnx_fft2(cfg: DataConfig, c: _Mfcc, chunks: int = 1) -> Any:
    """``"fft2"``; with ``chunks`` > 1 (``"fft2-lowmem"``) the frames run in consecutive chunks that
    share the constants, so only one chunk's spectrum is live at a time."""
    p = _fft2_plan(cfg, c)
    g = _OnnxGraph()
    b, qp, t, hb = p.b, p.qp, cfg.n_frames, cfg.hop_length // p.b
    x = g.op("Reshape", [_onnx_samples(g, cfg, p.rows * b), g.ints(1, p.rows, b)])
    x = g.op("Transpose", [x], perm=[0, 2, 1])                                         # [1, B, rows]: phase b
    w1, d, mel = g.const(p.w1.reshape(b * 2 * qp, 1, p.taps)), g.const(p.d), g.const(p.mel.reshape(b * qp, -1).T)
    halves, offset = g.ints(b, b), g.const([LOG_OFFSET])
    parts = []
    for t0, t1 in _chunks(t, chunks):
        f = t1 - t0
        xc = x if f == t else g.take(x, t0 * hb, (t1 - 1) * hb + p.taps, 2)
        y = g.op("Conv", [xc, w1], group=b, kernel_shape=[p.taps], strides=[hb])     # [1, (b, re/im, j), f]
        y = g.op("Reshape", [y, g.ints(2 * b, qp * f)])
        z = g.op("MatMul", [d, y])                                                     # [(re/im, m), (j, f)]
        power = g.op("Reshape", [_onnx_power(g, z, b, 0, halves), g.ints(b * qp, f)])  # [(m, j), f]
        parts.append(_onnx_logmel(g, mel, power, offset))                              # [M, f]
    logmel = parts[0] if len(parts) == 1 else g.op("Concat", parts, axis=1)
    return g.model(cfg, _onnx_dct(g, cfg, c, logmel, trans=True), [1, 1, t, cfg.n_mfcc])


def _mfcc_module(cfg: DataConfig, norm: Norm = None) -> Any:
    """The ``"stft"`` front end as an ``nn.Module``: audio [1, clip_samples] → [1, 1, n_frames, n_mfcc]."""
    import torch
    import torch.nn.functional as F

    c = _mfcc_constants(cfg, norm)

    class MfccFrontend(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("window", torch.from_numpy(c.window.astype(np.float32)))
            self.register_buffer("mel_fb", torch.from_numpy(c.mel.astype(np.float32)))
            self.register_buffer("dct", torch.from_numpy(c.dct))
            self.register_buffer("bias", torch.from_numpy(c.bias))
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


_ONNX_BUILDERS: dict[str, Callable[[DataConfig, _Mfcc], Any]] = {
    "dft": _onnx_dft, "dft-conv": _onnx_dft_conv, "fft2": _onnx_fft2,
    "fft2-lowmem": lambda cfg, c: _onnx_fft2(cfg, c, LOWMEM_CHUNKS),
}


def export_frontend_onnx(cfg: DataConfig, path: str | Path, norm: Norm = None, impl: str | None = None) -> Path:
    """Float ONNX front end: ``audio`` [1, clip_samples] → ``features`` [1, 1, n_frames, n_mfcc]
    (standardised per coefficient when ``norm`` = (mean, std) is given), computed by ``impl``
    (one of ``IMPLS["onnx"]``; None: ``DEFAULT_IMPL["onnx"]``)."""
    from edgenas.export.onnx_export import _atomic_save, _set_metadata, check_model, export_onnx_fp32

    impl = resolve_impl(cfg, "onnx", impl)
    path = Path(path)
    md = frontend_metadata(cfg, "NCHW", norm, impl)
    if impl == "stft":
        return export_onnx_fp32(_mfcc_module(cfg, norm), (1, cfg.clip_samples), path, md,
                                dynamic_batch=False, input_name=AUDIO_NAME, output_name=FEATURES_NAME)

    model = _ONNX_BUILDERS[impl](cfg, _mfcc_constants(cfg, norm))
    _set_metadata(model, md)
    check_model(model, f"front end {path} ({impl})")
    _check_onnx(model.SerializeToString(), cfg, path)
    _atomic_save(model, path)
    return path


def _check_onnx(data: bytes, cfg: DataConfig, path: Path) -> None:
    """The built model loads in ONNX Runtime and gives the promised output shape."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
        out = sess.run(None, {AUDIO_NAME: np.zeros((1, cfg.clip_samples), np.float32)})[0]
    except Exception as e:
        raise ExportError(f"front end {path} does not run in ONNX Runtime: {str(e).splitlines()[0]}") from None
    want = (1, 1, cfg.n_frames, cfg.n_mfcc)
    if out.shape != want:
        raise ExportError(f"ONNX front end {path}: output shape {list(out.shape)} != {list(want)}")


# ---- TFLite ----------------------------------------------------------------------------------

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


def _tf_samples(tf: Any, cfg: DataConfig, audio: Any, n: int) -> Any:
    s = cfg.clip_samples
    if n == s:
        return audio
    return audio[:, :n] if n < s else tf.pad(audio, [[0, 0], [0, n - s]])


def _tf_frames(tf: Any, cfg: DataConfig, audio: Any) -> Any:
    t, win, hop = cfg.n_frames, cfg.win_length, cfg.hop_length
    blocks = _frame_blocks(cfg)
    if blocks is None:
        idx = np.arange(win)[None, :] + hop * np.arange(t)[:, None]
        return tf.gather(tf.reshape(audio, [-1]), tf.constant(idx.astype(np.int32)))
    size, parts, step = blocks
    n_blocks = (t - 1) * step + parts
    x = tf.reshape(_tf_samples(tf, cfg, audio, n_blocks * size), [n_blocks, size])
    cols = [x[i:i + (t - 1) * step + 1:step] for i in range(parts)]
    return cols[0] if parts == 1 else tf.concat(cols, axis=1)


def _tf_logmel(tf: Any, z: Any, frames: int, mel: Any) -> Any:
    """``z`` [rows, 2k] = [re | im] → power, reshaped to [frames, k'] → log(power @ ``mel`` [k', M] + offset)."""
    re2, im2 = tf.split(z * z, 2, axis=1)                                          # SPLIT
    power = tf.reshape(re2 + im2, [frames, -1])
    return tf.math.log(tf.matmul(power, mel) + LOG_OFFSET)


def _tf_mfcc(tf: Any, cfg: DataConfig, c: _Mfcc, logmel: Any) -> Any:
    out = tf.matmul(logmel, tf.constant(c.dct)) + tf.constant(c.bias)                  # [T, n_mfcc]
    return tf.reshape(out, [1, cfg.n_frames, cfg.n_mfcc, 1])


def _tf_tail(tf: Any, cfg: DataConfig, c: _Mfcc, z: Any, mel: np.ndarray) -> Any:
    """``z`` [rows, 2k] = [re | im] → power → ``mel`` [k', M] after a reshape to [T, k'] → MFCC NHWC."""
    return _tf_mfcc(tf, cfg, c, _tf_logmel(tf, z, cfg.n_frames, tf.constant(mel.astype(np.float32))))


def _tf_stft(tf: Any, cfg: DataConfig, c: _Mfcc) -> Callable[[Any], Any]:
    window = c.window.astype(np.float32)
    mel = c.mel.astype(np.float32)

    def frontend(audio: Any) -> Any:
        spec = tf.signal.stft(audio, frame_length=cfg.win_length, frame_step=cfg.hop_length,
                              fft_length=cfg.n_fft, window_fn=lambda n, dtype: tf.constant(window),
                              pad_end=False)                                  # [1, T, bins] complex64
        re, im = tf.math.real(spec), tf.math.imag(spec)
        power = re * re + im * im          # not |z|²: avoids a sqrt-then-square on near-silence
        logmel = tf.math.log(tf.matmul(power, tf.constant(mel)) + LOG_OFFSET)
        out = tf.matmul(logmel, tf.constant(c.dct)) + tf.constant(c.bias)        # [1, T, n_mfcc]
        return tf.reshape(out, [1, cfg.n_frames, cfg.n_mfcc, 1])

    return frontend


def _tf_dft(tf: Any, cfg: DataConfig, c: _Mfcc) -> Callable[[Any], Any]:
    w = _dense_dft(cfg, c)
    k = len(c.bins)

    def frontend(audio: Any) -> Any:
        z = tf.matmul(_tf_frames(tf, cfg, audio), tf.constant(w))                 # FULLY_CONNECTED [T, 2K]
        return _tf_tail(tf, cfg, c, z, c.mel[c.bins])

    return frontend


def _tf_dft_conv(tf: Any, cfg: DataConfig, c: _Mfcc) -> Callable[[Any], Any]:
    kernel = _dense_dft(cfg, c)[:, None, None, :]                                 # [win, 1, 1, 2K] HWIO
    k = len(c.bins)
    need = (cfg.n_frames - 1) * cfg.hop_length + cfg.win_length

    def frontend(audio: Any) -> Any:
        x = tf.reshape(_tf_samples(tf, cfg, audio, need), [1, need, 1, 1])
        z = tf.nn.conv2d(x, tf.constant(kernel), strides=[1, cfg.hop_length, 1, 1], padding="VALID")
        return _tf_tail(tf, cfg, c, tf.reshape(z, [cfg.n_frames, 2 * k]), c.mel[c.bins])

    return frontend


def _tf_fft2(tf: Any, cfg: DataConfig, c: _Mfcc, bmm: bool = False, chunks: int = 1) -> Callable[[Any], Any]:
    """``"fft2"``; ``bmm``: stage 2 as BATCH_MATMUL; ``chunks`` > 1: ``"fft2-lowmem"`` (see ONNX)."""
    p = _fft2_plan(cfg, c)
    b, qp, t, hb = p.b, p.qp, cfg.n_frames, cfg.hop_length // p.b
    # depthwise filter [A, 1, B, 2Qp]: input channel b, multiplier (re/im, j)
    dw = np.ascontiguousarray(np.transpose(p.w1.reshape(b, 2 * qp, p.taps), (2, 0, 1))[:, None])

    def frontend(audio: Any) -> Any:
        x = tf.reshape(_tf_samples(tf, cfg, audio, p.rows * b), [1, p.rows, 1, b])
        if bmm:
            y = tf.nn.depthwise_conv2d(x, tf.constant(dw), strides=[1, hb, 1, 1], padding="VALID")
            z = tf.matmul(tf.constant(p.d), tf.reshape(y, [t, 2 * b, qp]))       # BATCH_MATMUL [T, (re/im, m), j]
            return _tf_tail(tf, cfg, c, tf.reshape(z, [t, 2 * b * qp]), p.mel.reshape(b * qp, -1))
        w1, dt = tf.constant(dw), tf.constant(np.ascontiguousarray(p.d.T))
        mel = tf.constant(np.transpose(p.mel, (1, 0, 2)).reshape(qp * b, -1))         # rows (j, m)
        parts = []
        for t0, t1 in _chunks(t, chunks):
            f = t1 - t0
            xc = x if f == t else x[:, t0 * hb:(t1 - 1) * hb + p.taps]
            y = tf.nn.depthwise_conv2d(xc, w1, strides=[1, hb, 1, 1], padding="VALID")   # [1, f, 1, (b, re/im, j)]
            y = tf.transpose(tf.reshape(y, [f, b, 2, qp]), [0, 3, 1, 2])                # [f, j, b, re/im]
            z = tf.matmul(tf.reshape(y, [f * qp, 2 * b]), dt)                           # [f·j, (re/im, m)]
            parts.append(_tf_logmel(tf, z, f, mel))
        return _tf_mfcc(tf, cfg, c, parts[0] if len(parts) == 1 else tf.concat(parts, axis=0))

    return frontend


_TF_BUILDERS: dict[str, Callable[[Any, DataConfig, _Mfcc], Callable[[Any], Any]]] = {
    "stft": _tf_stft, "dft": _tf_dft, "dft-conv": _tf_dft_conv, "fft2": _tf_fft2,
    "fft2-bmm": lambda tf, cfg, c: _tf_fft2(tf, cfg, c, bmm=True),
    "fft2-lowmem": lambda tf, cfg, c: _tf_fft2(tf, cfg, c, chunks=LOWMEM_CHUNKS),
}


def export_frontend_tflite(cfg: DataConfig, path: str | Path, norm: Norm = None, impl: str | None = None) -> Path:
    """Float TFLite front end: ``audio`` [1, clip_samples] → [1, n_frames, n_mfcc, 1] (NHWC),
    computed by ``impl`` (one of ``IMPLS["tflite"]``; None: ``DEFAULT_IMPL["tflite"]``).

    TensorFlow is needed at export time only (``pip install 'edgenas[tflite]'``); the model uses
    ``TFLITE_BUILTINS`` only.
    """
    impl = resolve_impl(cfg, "tflite", impl)
    tf = _import_tf()
    path = Path(path)
    c = _mfcc_constants(cfg, norm)
    body = _TF_BUILDERS[impl](tf, cfg, c)

    @tf.function(input_signature=[tf.TensorSpec([1, cfg.clip_samples], tf.float32, name=AUDIO_NAME)])
    def frontend(audio: Any) -> Any:
        return {FEATURES_NAME: body(audio)}

    flat = convert_builtins(frontend, "front-end", path, post=_depth_first if impl == "fft2-lowmem" else None)
    flat = embed_metadata(flat, frontend_metadata(cfg, "NHWC", norm, impl))
    _check_tflite(flat, cfg, path)
    atomic_write_bytes(path, flat)
    return path


def _depth_first(flat: bytes) -> bytes:
    """The model with its operators re-sequenced depth first, so that independent chains run one
    after another (the converter schedules all of ``"fft2-lowmem"``'s chunk convolutions first,
    which keeps every chunk's spectrum live at once).

    List scheduling over the main subgraph: among the operators whose inputs all exist, run the
    one whose newest input was made last (ties: converter order). Any such order is a valid
    topological order, and the interpreter runs operators in stored order."""
    import flatbuffers

    from edgenas.export.tflite_export import _load_model

    model = _load_model(flat)
    sg = model.subgraphs[0]
    ops = list(sg.operators or [])
    made: dict[int, int] = {int(i): -1 for i in (sg.inputs if sg.inputs is not None else [])}
    for i, t in enumerate(sg.tensors or []):
        buf = model.buffers[t.buffer] if 0 < t.buffer < len(model.buffers) else None
        if buf is not None and buf.data is not None and len(buf.data):
            made[i] = -1

    def inputs(op: Any) -> list[int]:
        return [int(i) for i in (op.inputs if op.inputs is not None else []) if int(i) >= 0]

    order: list[int] = []
    left = set(range(len(ops)))
    while left:
        ready = [k for k in left if all(i in made for i in inputs(ops[k]))]
        if not ready:
            return flat  # not a DAG over known tensors (variables, subgraphs): keep the converter's order
        k = max(ready, key=lambda k: (max((made[i] for i in inputs(ops[k])), default=-1), -k))
        for o in ops[k].outputs if ops[k].outputs is not None else []:
            made[int(o)] = len(order)
        order.append(k)
        left.remove(k)
    sg.operators = [ops[k] for k in order]
    builder = flatbuffers.Builder(len(flat) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())  # embed_metadata re-packs it with aligned buffers


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


# ---- reading and running ---------------------------------------------------------------------

def read_frontend_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a front end of either format (ONNX ``metadata_props``, TFLite ``edgenas``)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"front-end model not found: {path}")
    if _is_tflite(path):
        return read_tflite_metadata(path)
    from edgenas.export.onnx_export import read_metadata

    return read_metadata(path)


def convert_builtins(fn: Any, what: str, path: Any, post: Any = None) -> bytes:
    """The TFLite flatbuffer of the ``tf.function`` ``fn`` (TFLite builtins only, TensorFlow's logs
    quiet), passed through ``post`` if given; a failure is a one-line ExportError naming ``what``."""
    tf = _import_tf()
    try:
        with _quiet_tf():
            converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            flat = converter.convert()
            return post(flat) if post is not None else flat
    except Exception as e:
        text = str(e).strip().splitlines()
        raise ExportError(f"TFLite {what} export to {path} failed: {text[0] if text else type(e).__name__}") from None


def _is_tflite(path: Path) -> bool:
    """TFLite flatbuffers carry the file identifier ``TFL3`` at bytes 4–8."""
    with path.open("rb") as f:
        head = f.read(8)
    return head[4:8] == b"TFL3"


def run_each(path: Path, x: np.ndarray, what: str) -> np.ndarray:
    """Every ``x[i]`` (batch of 1) through the front-end file ``path`` of either format, outputs
    concatenated; a TFLite NHWC output [1, H, W, C] is transposed to NCHW. ``x.shape[1:]`` must be
    the file's input shape (a one-line ExportError naming ``what`` otherwise)."""
    if _is_tflite(path):
        interp = _tflite_interpreter(model_path=str(path))
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        want = [int(v) for v in inp["shape"][1:]]

        def one(item: np.ndarray) -> np.ndarray:
            interp.set_tensor(inp["index"], np.ascontiguousarray(item[None]))
            interp.invoke()
            return interp.get_tensor(out["index"]).transpose(0, 3, 1, 2).copy()
    else:
        from edgenas.export.onnx_export import _session

        sess = _session(path)
        want, name = list(sess.get_inputs()[0].shape[1:]), sess.get_inputs()[0].name

        def one(item: np.ndarray) -> np.ndarray:
            return sess.run(None, {name: np.ascontiguousarray(item[None])})[0]
    if list(x.shape[1:]) != want:
        raise ExportError(f"{path} takes {what} of shape {want}, got {list(x.shape[1:])}")
    if not len(x):
        raise ExportError(f"a front end needs at least one of the {what}")
    return np.concatenate([one(item) for item in x]).astype(np.float32, copy=False)


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


class AudioFrontEnd(FrontEnd):
    """The kws task's front end (:class:`edgenas.tasks.FrontEnd`): the MFCC models of this module."""

    kind = FRONTEND_KIND
    raw_input = "audio"

    def raw_shape(self, data: Any) -> tuple[int, ...]:
        return (1, data.clip_samples)

    def describe(self, data: Any) -> str:
        return f"audio → {data.n_mfcc} MFCCs × {data.n_frames} frames"

    def impls(self, data: Any, fmt: str, lowmem: bool = False) -> list[str]:
        impls = [resolve_impl(data, fmt)]
        if lowmem:
            try:
                impls.append(resolve_impl(data, fmt, "fft2-lowmem"))
            except ExportError:
                pass  # no fft2 radix divides this hop: the fastest one only
        return list(dict.fromkeys(impls))

    def resolve_impl(self, data: Any, fmt: str, impl: str | None = None) -> str:
        return resolve_impl(data, fmt, impl)

    def export(self, data: Any, fmt: str, path: Any, norm: Any = None, impl: str | None = None) -> Path:
        return (export_frontend_onnx if fmt == "onnx" else export_frontend_tflite)(data, path, norm, impl=impl)

    def run(self, path: Any, raw: np.ndarray) -> np.ndarray:
        return run_frontend(path, raw)

    def reference(self, raw: np.ndarray, data: Any) -> np.ndarray:
        import torch

        from edgenas.datasets.features import mfcc

        return mfcc(torch.from_numpy(np.asarray(raw, np.float32)), data).numpy()[:, None]

    def sources(self) -> list[str]:
        return [__file__]
