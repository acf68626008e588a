#!/usr/bin/env python3
"""edgenas deployment bundle: classify one WAV file or image on this machine (shipped as ``infer.py``).

    python3 infer.py CLIP.wav|IMAGE.png [--json] [--bench N] [--warmup W] [--runtime onnx|tflite]
                              [--threads T] [--bundle DIR]

Pipeline: WAV → mono float32 → resample to the bundle's rate → centre-crop / zero-pad to the
clip length → front-end model (float MFCC) → int8 classifier → softmax. Prints ``LABEL SCORE``
(one line), or one JSON object with ``--json``. ``--bench N`` also times the end-to-end
inference (front end + classifier, incl. input quantization and output dequantization; not
the WAV decoding nor the softmax) N times after W warm-up runs, each stage timed apart, and prints
``latency_ms median M p90 P ...; front end median F, model median C`` (in ``--json``: a ``bench``
object). Errors are one line on stderr, exit code 2.

Dependencies: Python >= 3.7, numpy, and ONE runtime, tried in this order:
``ai_edge_litert.interpreter`` → ``tflite_runtime.interpreter`` → ``tensorflow.lite`` (for
``.tflite`` files), then ``onnxruntime`` (``.onnx``). ``--runtime`` restricts both stages to one
format. Each stage (front end, classifier) picks independently the first runtime that is
importable and for which the bundle has a file, so a bundle may mix formats. This file must
not import edgenas or torch.

bundle.json (next to this file, or ``--bundle DIR``), schema version 1::

    {
      "schema_version": 1,                          # optional, default 1
      "labels": ["yes", "no", ...],                 # class index → name (len = classifier outputs)
      "data_config": {"sample_rate": 16000, "n_mfcc": 10, "n_mels": 40,
                      "win_ms": 40.0, "hop_ms": 20.0, "clip_ms": 1000.0},   # edgenas DataConfig
      "frontend": {"tflite": "frontend.tflite", "onnx": "frontend.onnx"},  # >= 1 entry
      "model": {"tflite": "model.int8.tflite", "onnx": "model.int8.onnx"}, # >= 1 entry
      "output": "logits"                            # optional: "logits" (default) | "probabilities"
    }

File names are relative to bundle.json. Other keys (arch_hash, metrics, ...) are ignored.
Front end: input [1, clip_samples] float32 (clip_samples = round(sample_rate * clip_ms / 1000)),
output [1, 1, T, n_mfcc] (ONNX, NCHW) or [1, T, n_mfcc, 1] (TFLite, NHWC). Both layouts hold the
numbers in the same memory order, so the features are simply reshaped to the classifier's input
shape, whatever its format. An integer classifier input is quantized with the input tensor's
scale / zero point (``q = clip(round(x / scale) + zero_point)``); an integer output is
dequantized (``(q - zero_point) * scale``). ONNX QDQ models take and give float32.

Images (bundle.json ``"input": "image"``; ``data_config`` then holds ``source_h``/``source_w``):
Pillow decodes the file (PNG, JPEG, …), converts it to RGB and, at another size than the
source size, resizes it with Pillow's bilinear filter (as edgenas's training data); the front
end takes it as uint8 [1, source_h, source_w, 3] and does the model's resize, grey and
standardisation. Needs ``pillow`` on the board. A front end of one format feeds a classifier of
the other: an NCHW output is transposed to an NHWC input and back.

Time series (``"input": "series"``; ``data_config`` holds ``dims``, ``length``, ``padding``): one
case, the first data line of a ``.ts`` file or a CSV file (one row of dims × n values,
dimension-major, or one row per dimension); ``?``/empty values are missing. Missing values are
linearly interpolated, the case is brought to ``length`` by the padding policy (zero / edge at
the end, or resample), exactly as edgenas's ``ts_prep.fixed_length``; the front end takes it
time-major, float32 [1, length, dims], and resamples and normalises it.

Super-resolution (``"input": "sr"``; ``data_config`` holds ``scale``, ``colour``, ``tile``,
``overlap``; ``labels`` is empty): ``python3 infer.py LR.png --out SR.png``. Pillow decodes the
image to RGB; it is cut into tiles of ``tile`` px on a stride of ``tile`` from the top-left, each
with ``overlap`` px of context on every side (the image edge-padded), as edgenas's
``datasets.sisr.tile_inputs``; every tile goes through the front end (uint8 [1, t, t, 3] → Y or
RGB) and the int8 model, the central ``tile·scale`` px of each output are stitched, and the
result is cropped to ``scale`` × the input size. With colour ``y`` the model upscales the BT.601
luma and the chroma (Cb, Cr) is upscaled by Pillow's bicubic; the Y/Cb/Cr planes are converted
back to RGB (BT.601 studio swing) and the PNG written. ``--bench N`` times a whole frame: every
tile through front end and model (the budgets' figure), timed apart, and the stitching + chroma
(``post``). Prints ``wrote SR.png (W×H → W'×H', N tiles)``.

Audio (``"input": "audio"``, the default): the stdlib ``wave`` module reads PCM 8 (unsigned), 16, 24 and 32-bit integer WAVs,
scaled to [-1, 1) as libsndfile does (divide by 2**(bits-1)); several channels are averaged
to mono (as edgenas does for training). A rate that differs from the bundle's is resampled
with a windowed-sinc polyphase filter that is a NumPy port of torchaudio's default
``Resample`` (Hann window, 6 zero crossings, roll-off 0.99), the resampler edgenas trains with.
The clip is then centre-cropped, or zero-padded on both sides (left = missing // 2), to
``clip_samples``, as edgenas's ``fit_length`` does.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import time
import wave
from typing import Any, Callable, Dict, List, Optional, Tuple

EXIT_ERROR = 2
SCHEMA_VERSION = 1

# (module to import, format)
RUNTIMES = (
    ("ai_edge_litert.interpreter", "tflite"),
    ("tflite_runtime.interpreter", "tflite"),
    ("tensorflow", "tflite"),
    ("onnxruntime", "onnx"),
)


# the data_config values each kind of input needs (all positive numbers)
INPUT_KEYS = {"audio": ("sample_rate", "clip_ms"), "image": ("source_h", "source_w"), "series": ("dims", "length"),
              "sr": ("scale", "tile")}
# BT.601 studio swing on [0, 1] RGB (MATLAB rgb2ycbcr), as edgenas.datasets.sisr
YCBCR = ((65.481, 128.553, 24.966), (-37.797, -74.203, 112.0), (112.0, -93.786, -18.214))
YCBCR_OFFSET = (16.0, 128.0, 128.0)


class BundleError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


# ---------------------------------------------------------------------------------- audio


def read_wav(path: str, np: Any) -> Tuple[Any, int]:
    """(mono float32 samples in [-1, 1), sample rate) of a PCM WAV file."""
    if not os.path.isfile(path):
        raise BundleError("WAV file not found: %s" % path)
    try:
        with wave.open(path, "rb") as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError, OSError) as e:
        raise BundleError("cannot read WAV %s: %s (PCM 8/16/24/32-bit only)" % (path, _one_line(e)))
    if channels < 1 or rate <= 0:
        raise BundleError("cannot read WAV %s: %d channels at %d Hz" % (path, channels, rate))
    frames = len(raw) // (width * channels)
    if frames == 0:
        raise BundleError("WAV file %s has no samples" % path)
    raw = raw[: frames * width * channels]
    if width == 1:
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        x = v.astype(np.float32) / float(1 << 23)
    elif width == 4:
        x = (np.frombuffer(raw, dtype="<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    else:
        raise BundleError("cannot read WAV %s: %d-byte samples are not supported" % (path, width))
    x = x.reshape(frames, channels)
    mono = x[:, 0] if channels == 1 else x.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32), int(rate)


def read_image(path: str, size: Tuple[int, int], np: Any) -> Any:
    """uint8 RGB [1, H, W, 3] of an image file at ``size`` (H, W), as edgenas decodes training images."""
    if not os.path.isfile(path):
        raise BundleError("image file not found: %s" % path)
    try:
        from PIL import Image
    except ImportError:
        raise BundleError("reading images needs pillow (pip install pillow)")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode != "RGB":
                im = im.convert("RGBA").convert("RGB") if im.mode in ("P", "PA", "LA") else im.convert("RGB")
            if size is not None and (im.height, im.width) != tuple(size):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)[None].copy()
    except (OSError, ValueError, SyntaxError) as e:
        raise BundleError("cannot read image %s: %s" % (path, _one_line(e)))


def _sinc_kernel(orig: int, new: int, np: Any, width_zeros: int = 6, rolloff: float = 0.99) -> Tuple[Any, int]:
    """torchaudio's ``_get_sinc_resample_kernel`` (sinc_interp_hann) for gcd-reduced rates."""
    base = min(orig, new) * rolloff
    width = int(math.ceil(width_zeros * orig / base))
    idx = np.arange(-width, width + orig, dtype=np.float64)[None, :] / orig
    t = (np.arange(0, -new, -1, dtype=np.float64)[:, None] / new + idx) * base
    t = np.clip(t, -width_zeros, width_zeros)
    window = np.cos(t * math.pi / width_zeros / 2) ** 2
    t = t * math.pi
    safe = np.where(t == 0, 1.0, t)
    kernel = np.where(t == 0, 1.0, np.sin(safe) / safe) * window * (base / orig)
    return kernel.astype(np.float32), width  # [new, 2*width + orig]


def resample(x: Any, orig_rate: int, new_rate: int, np: Any) -> Any:
    """Band-limited polyphase resampling, the NumPy twin of torchaudio's default Resample."""
    if orig_rate == new_rate:
        return x
    g = math.gcd(int(orig_rate), int(new_rate))
    orig, new = int(orig_rate) // g, int(new_rate) // g
    kernel, width = _sinc_kernel(orig, new, np)
    padded = np.concatenate([np.zeros(width, np.float32), x.astype(np.float32), np.zeros(width + orig, np.float32)])
    k = kernel.shape[1]
    blocks = (len(padded) - k) // orig + 1
    frames = np.lib.stride_tricks.as_strided(padded, shape=(blocks, k),
                                             strides=(padded.strides[0] * orig, padded.strides[0]))
    out = (frames @ kernel.T).reshape(-1)  # [blocks, new] → phase-interleaved samples
    return np.ascontiguousarray(out[: int(math.ceil(new * len(x) / orig))], dtype=np.float32)


def fit_length(x: Any, n: int, np: Any) -> Any:
    """Centre-crop or symmetrically zero-pad to exactly ``n`` samples (as edgenas trains)."""
    m = len(x)
    if m == n:
        return x
    if m > n:
        start = (m - n) // 2
        return x[start: start + n]
    left = (n - m) // 2
    return np.pad(x, (left, n - m - left))


# ---------------------------------------------------------------------------------- series


def read_case(path: str, dims: int, np: Any) -> Any:
    """float64 [dims, n] of one time-series case: the first data line of a ``.ts`` file
    (dimensions separated by ``:``, values by ``,``, a trailing class label ignored), or a CSV
    file of one row of ``dims × n`` values (dimension-major) or of ``dims`` rows. ``?``, ``NaN``
    and empty values are missing (filled as in training)."""
    if not os.path.isfile(path):
        raise BundleError("case file not found: %s" % path)
    try:
        with open(path) as f:
            lines = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    except (OSError, UnicodeDecodeError) as e:
        raise BundleError("cannot read %s: %s" % (path, _one_line(e)))
    if path.lower().endswith(".ts"):
        data = [ln for ln in lines if not ln.startswith("@")]
        if not data:
            raise BundleError("%s has no case line (after @data)" % path)
        rows = data[0].split(":")
        rows = rows[:dims] if len(rows) > dims else rows
    else:
        rows = lines
    def values(text: str, where: str) -> List[float]:
        out = []
        for j, v in enumerate(text.replace("\t", ",").replace(";", ",").split(",")):
            v = v.strip()
            if v in ("", "?") or v.lower() == "nan":
                out.append(float("nan"))
                continue
            try:
                out.append(float(v))
            except ValueError:
                raise BundleError("%s: %s value %d is not a number: %r" % (path, where, j + 1, v[:24]))
        return out
    vals = [values(r, "line %d" % (i + 1)) for i, r in enumerate(rows)]
    if len(vals) == 1 and dims > 1:
        flat = vals[0]
        if len(flat) % dims:
            raise BundleError("%s: %d values are not %d dimensions of equal length" % (path, len(flat), dims))
        n = len(flat) // dims
        vals = [flat[d * n:(d + 1) * n] for d in range(dims)]
    if len(vals) != dims:
        raise BundleError("%s has %d dimension(s); the model takes %d" % (path, len(vals), dims))
    if len({len(v) for v in vals}) != 1 or not vals[0]:
        raise BundleError("%s: the dimensions have unequal lengths (%s)" % (path, [len(v) for v in vals]))
    x = np.array(vals, dtype=np.float64)
    if np.isinf(x).any():
        raise BundleError("%s has an infinite value" % path)
    return x


def fill_missing(x: Any, np: Any) -> Any:
    """NaNs of each dimension linearly interpolated, ends held, an all-missing row 0 (as edgenas)."""
    x = x.copy()
    t = np.arange(x.shape[1])
    for row in x:
        gap = np.isnan(row)
        if gap.all():
            row[:] = 0.0
        elif gap.any():
            row[gap] = np.interp(t[gap], t[~gap], row[~gap])
    return x


def resample_matrix(src: int, dst: int, np: Any) -> Any:
    """edgenas.datasets.ts_prep.resample_matrix: corners aligned, linear up, triangle-filtered down."""
    if dst == 1:
        return np.full((src, 1), 1.0 / src)
    if src == 1:
        return np.ones((1, dst))
    step = (src - 1) / (dst - 1)
    t = np.arange(dst) * (src - 1) / (dst - 1)
    t[-1] = src - 1
    i = np.arange(src, dtype=np.float64)[:, None]
    if step <= 1.0:
        return np.clip(1.0 - np.abs(i - t[None, :]), 0.0, None)
    w = np.clip(1.0 - np.abs(i - t[None, :]) / step, 0.0, None)
    w[:, 0] = 0.0
    w[0, 0] = 1.0
    w[:, -1] = 0.0
    w[-1, -1] = 1.0
    return w / w.sum(axis=0, keepdims=True)


def fit_case(x: Any, policy: str, length: int, np: Any) -> Any:
    """float32 [dims, length] of a case (missing values filled first): ``zero`` / ``edge`` pad at
    the end (a longer case keeps its first ``length`` values), ``resample`` maps it onto ``length``."""
    x = fill_missing(x, np)
    if policy == "resample":
        return (x.astype(np.float32) @ resample_matrix(x.shape[1], length, np).astype(np.float32)).astype(np.float32)
    out = np.zeros((x.shape[0], length), dtype=np.float32)
    n = min(x.shape[1], length)
    out[:, :n] = x[:, :n]
    if policy == "edge" and n < length:
        out[:, n:] = x[:, n - 1:n]
    return out


# ---------------------------------------------------------------------------------- bundle


def load_bundle(path: str) -> Tuple[Dict[str, Any], str]:
    """(bundle.json contents, its folder). ``path`` is the folder or the JSON file itself."""
    file = os.path.join(path, "bundle.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise BundleError("bundle.json not found: %s" % file)
    try:
        with open(file) as f:
            b = json.load(f)
    except (OSError, ValueError) as e:
        raise BundleError("cannot read %s: %s" % (file, _one_line(e)))
    if not isinstance(b, dict):
        raise BundleError("%s: not a JSON object" % file)
    if int(b.get("schema_version", 1)) > SCHEMA_VERSION:
        raise BundleError("%s: schema_version %s is newer than this infer.py (%d)"
                          % (file, b.get("schema_version"), SCHEMA_VERSION))
    for key in ("labels", "data_config", "frontend", "model"):
        if key not in b:
            raise BundleError("%s: missing key %r" % (file, key))
    if not isinstance(b["labels"], list) or (not b["labels"] and b.get("input") != "sr"):
        raise BundleError("%s: 'labels' must be a non-empty list" % file)
    for key in ("frontend", "model"):
        if not isinstance(b[key], dict) or not b[key] or set(b[key]) - {"onnx", "tflite"}:
            raise BundleError("%s: %r must map 'tflite' and/or 'onnx' to a file name" % (file, key))
    dc = b["data_config"]
    kind = b.get("input", "audio")
    if kind not in INPUT_KEYS:
        raise BundleError("%s: 'input' must be one of %s" % (file, ", ".join(sorted(INPUT_KEYS))))
    keys = INPUT_KEYS[kind]
    if kind == "sr" and (dc.get("colour") not in ("y", "rgb") or int(dc.get("overlap", -1)) < 0):
        raise BundleError("%s: data_config colour must be y or rgb and overlap >= 0" % file)
    if kind == "series" and dc.get("padding") not in ("zero", "edge", "resample"):
        raise BundleError("%s: data_config padding must be zero, edge or resample" % file)
    try:
        vals = [float(dc[k]) for k in keys]
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError("%s: bad data_config (%s)" % (file, _one_line(e)))
    if min(vals) <= 0:
        raise BundleError("%s: bad data_config %s" % (file, dc))
    if b.get("output", "logits") not in ("logits", "probabilities"):
        raise BundleError("%s: 'output' must be 'logits' or 'probabilities'" % file)
    return b, os.path.dirname(os.path.abspath(file))


def clip_samples(data_config: Dict[str, Any]) -> int:
    """``DataConfig.clip_samples``: round(sample_rate * clip_ms / 1000)."""
    return int(round(int(data_config["sample_rate"]) * float(data_config["clip_ms"]) / 1000.0))


_IMPORTED: Dict[str, Any] = {}


def _try_import(module: str) -> Optional[Any]:
    if module not in _IMPORTED:
        if module == "tensorflow":
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        try:
            _IMPORTED[module] = importlib.import_module(module)
        except Exception:  # ImportError, or a broken install raising anything else
            _IMPORTED[module] = None
    return _IMPORTED[module]


def _version(module: str, mod: Any) -> str:
    top = sys.modules.get(module.split(".")[0], mod)
    return "%s %s" % (module.split(".")[0], getattr(top, "__version__", "?"))


def _without_native_stderr(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` with file descriptor 2 captured: the TFLite runtimes print INFO lines (XNNPACK
    delegate) from C++. On failure the captured text joins the exception's message."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        return fn()
    import tempfile

    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            return fn()
        except Exception as e:
            os.dup2(saved, 2)
            tmp.seek(0)
            native = " ".join(tmp.read().decode(errors="replace").split())
            raise RuntimeError("%s%s" % (_one_line(e), (" [" + native + "]") if native else ""))
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class Stage:
    """One model file on one runtime: float32 array in → float32 array out (quantization handled)."""

    def __init__(self, path: str, fmt: str, module: str, mod: Any, threads: int, np: Any) -> None:
        self.path, self.fmt, self.np = path, fmt, np
        self.runtime = _version(module, mod)
        if not os.path.isfile(path):
            raise BundleError("model file not found: %s" % path)
        try:
            if fmt == "tflite":
                self._load_tflite(module, mod, threads)
            else:
                self._load_onnx(mod, threads)
        except BundleError:
            raise
        except Exception as e:
            raise BundleError("cannot load %s with %s: %s" % (path, self.runtime, _one_line(e)))
        # what every call needs, worked out once: the per-call work is the runtime's alone
        self._shape = tuple(int(d) for d in self.in_shape)
        self._size = int(np.prod(self._shape))
        self._int_in = bool(np.issubdtype(self.in_dtype, np.integer))
        self._int_out = bool(np.issubdtype(self.out_dtype, np.integer))

    def _load_tflite(self, module: str, mod: Any, threads: int) -> None:
        interp_cls = mod.lite.Interpreter if module == "tensorflow" else mod.Interpreter

        def load() -> Any:
            interp = interp_cls(model_path=self.path, num_threads=threads)
            interp.allocate_tensors()
            return interp

        self.interp = _without_native_stderr(load)
        inp, out = self.interp.get_input_details(), self.interp.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise BundleError("%s: expected one input and one output" % self.path)
        self.inp, self.out = inp[0], out[0]
        self.in_shape = [int(s) for s in self.inp["shape"]]
        self.in_dtype = self.np.dtype(self.inp["dtype"])
        self.in_q = self.inp.get("quantization", (0.0, 0))
        self.out_q = self.out.get("quantization", (0.0, 0))
        self.out_dtype = self.np.dtype(self.out["dtype"])
        interp, i_idx, o_idx = self.interp, self.inp["index"], self.out["index"]

        def run(x: Any) -> Any:
            interp.set_tensor(i_idx, x)
            interp.invoke()
            return interp.get_tensor(o_idx)

        self._run: Callable[[Any], Any] = run

    def _load_onnx(self, ort: Any, threads: int) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.sess = ort.InferenceSession(self.path, sess_options=opts, providers=["CPUExecutionProvider"])
        inp = self.sess.get_inputs()
        if len(inp) != 1:
            raise BundleError("%s: expected one input" % self.path)
        if inp[0].type not in ("tensor(float)", "tensor(uint8)"):
            raise BundleError("%s: input type %s is not supported (float32 or QDQ models, uint8 images)"
                              % (self.path, inp[0].type))
        self.in_shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp[0].shape]
        self.in_dtype = self.np.dtype(self.np.uint8 if inp[0].type == "tensor(uint8)" else self.np.float32)
        self.in_q, self.out_q = (0.0, 0), (0.0, 0)
        self.out_dtype = self.np.dtype(self.np.float32)
        sess, name = self.sess, inp[0].name
        self._run = lambda x: sess.run(None, {name: x})[0]

    def __call__(self, x: Any) -> Any:
        np = self.np
        if x.size != self._size:
            raise BundleError("%s takes %s (%d values), got %d values" % (self.path, self.in_shape, self._size, x.size))
        if x.ndim == 4 and len(self._shape) == 4 and tuple(x.shape) != self._shape:
            n, a, b, c = x.shape  # the other format's layout: NCHW <-> NHWC
            if (n, b, c, a) == self._shape:
                x = x.transpose(0, 2, 3, 1)
            elif (n, c, a, b) == self._shape:
                x = x.transpose(0, 3, 1, 2)
        x = x.reshape(self._shape)
        if self._int_in and x.dtype == self.in_dtype and float(self.in_q[0]) <= 0:
            x = np.ascontiguousarray(x)  # raw integer data (a uint8 image into its front end)
        elif self._int_in:
            scale, zero = float(self.in_q[0]), int(self.in_q[1])
            if scale <= 0:
                raise BundleError("%s: integer input without quantization parameters" % self.path)
            info = np.iinfo(self.in_dtype)
            x = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(self.in_dtype)
        elif x.dtype != self.in_dtype or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=self.in_dtype)
        y = self._run(x)
        if self._int_out:
            scale, zero = float(self.out_q[0]), int(self.out_q[1])
            return (y.astype(np.float32) - zero) * (scale if scale > 0 else 1.0)
        return y if y.dtype == np.float32 else y.astype(np.float32)


def pick_stage(bundle: Dict[str, Any], root: str, key: str, force: Optional[str], threads: int, np: Any) -> Stage:
    """The first (runtime, file) pair in RUNTIMES order that is importable and in the bundle."""
    files = bundle[key]
    wanted = [(m, f) for m, f in RUNTIMES if f in files and (force is None or f == force)]
    if not wanted:
        raise BundleError("the bundle has no %s %s model (it has: %s)"
                          % (force or "", "front-end" if key == "frontend" else "classifier",
                             ", ".join(sorted(files))))
    for module, fmt in wanted:
        mod = _try_import(module)
        if mod is not None:
            return Stage(os.path.join(root, str(files[fmt])), fmt, module, mod, threads, np)
    need = sorted({"onnxruntime" if f == "onnx" else "ai-edge-litert (or tflite-runtime)" for _, f in wanted})
    raise BundleError("no runtime for the %s (%s): install %s"
                      % (key, ", ".join(sorted({f for _, f in wanted})), " or ".join(need)))


class Pipeline:
    """Front end → classifier → class scores, for one clip of ``clip_samples`` samples."""

    def __init__(self, bundle: Dict[str, Any], root: str, force: Optional[str], threads: int, np: Any) -> None:
        self.np = np
        self.labels = [str(s) for s in bundle["labels"]]
        dc = bundle["data_config"]
        self.kind = bundle.get("input", "audio")
        self.image = self.kind == "image"
        if self.image:
            self.size = (int(dc["source_h"]), int(dc["source_w"]))
            self.samples = self.size[0] * self.size[1] * 3
        elif self.kind == "sr":
            self.scale, self.tile, self.overlap = int(dc["scale"]), int(dc["tile"]), int(dc["overlap"])
            self.colour = str(dc["colour"])
            self.tile_in = self.tile + 2 * self.overlap
            self.samples = self.tile_in * self.tile_in * 3
        elif self.kind == "series":
            self.dims, self.length, self.padding = int(dc["dims"]), int(dc["length"]), str(dc["padding"])
            self.samples = self.dims * self.length
        else:
            self.samples = clip_samples(dc)
            self.rate = int(dc["sample_rate"])
        self.probabilities = bundle.get("output", "logits") == "probabilities"
        self.frontend = pick_stage(bundle, root, "frontend", force, threads, np)
        self.model = pick_stage(bundle, root, "model", force, threads, np)
        if int(np.prod(self.frontend.in_shape)) != self.samples:
            raise BundleError("front end %s takes %s values but data_config gives %d"
                              % (self.frontend.path, self.frontend.in_shape, self.samples))

    def read(self, path: str) -> Tuple[Any, Dict[str, Any]]:
        """(the front end's input, what was read) of an input file."""
        np = self.np
        if self.image:
            return read_image(path, self.size, np), {"path": path, "size": list(self.size)}
        if self.kind == "sr":
            img = read_image(path, None, np)[0]
            return img, {"path": path, "size": [int(img.shape[0]), int(img.shape[1])]}
        if self.kind == "series":
            case = read_case(path, self.dims, np)
            x = fit_case(case, self.padding, self.length, np)
            return (np.ascontiguousarray(x.T[None]), {"path": path, "length": int(case.shape[1]),
                                                      "missing": int(np.isnan(case).sum()), "padding": self.padding})
        audio, rate = read_wav(path, np)
        clip = fit_length(resample(audio, rate, self.rate, np), self.samples, np).astype(np.float32)
        return clip.reshape(1, -1), {"path": path, "sample_rate": rate, "resampled_to": self.rate}

    def logits(self, x: Any) -> Any:
        return self.classify(self.frontend(x))

    # ---- super-resolution ------------------------------------------------------------------
    def tiles(self, img: Any) -> Tuple[Any, List[Tuple[int, int]]]:
        """The uint8 [n, t, t, 3] tiles of an RGB image [h, w, 3] and their origins (edgenas's tile_inputs)."""
        np, t, o = self.np, self.tile, self.overlap
        h, w = img.shape[:2]
        rows, cols = -(-h // t), -(-w // t)
        padded = np.pad(img, ((o, o + rows * t - h), (o, o + cols * t - w), (0, 0)), mode="edge")
        origins = [(y, x) for y in range(0, h, t) for x in range(0, w, t)]
        ti = self.tile_in
        return np.stack([padded[y:y + ti, x:x + ti] for y, x in origins]), origins

    def upscale_tile(self, tile: Any) -> Any:
        """One tile → the model output [C, t·s, t·s] (NCHW whatever the model's format)."""
        out = self.model(self.frontend(tile[None]))
        side = self.tile_in * self.scale
        if out.ndim == 4 and out.shape[1] == side and out.shape[2] == side:  # NHWC (TFLite)
            out = out.transpose(0, 3, 1, 2)
        return out.reshape(-1, side, side)

    def stitch(self, img: Any, outs: List[Any], origins: List[Tuple[int, int]]) -> Any:
        """uint8 RGB [h·s, w·s, 3] of the tile outputs (chroma bicubic for a Y model)."""
        np, s, t, o = self.np, self.scale, self.tile, self.overlap
        h, w = img.shape[:2]
        c = outs[0].shape[0]
        canvas = np.empty((c, -(-h // t) * t * s, -(-w // t) * t * s), dtype=np.float32)
        for (y, x), out in zip(origins, outs):
            canvas[:, y * s:(y + t) * s, x * s:(x + t) * s] = out[:, o * s:(o + t) * s, o * s:(o + t) * s]
        sr = np.clip(canvas[:, :h * s, :w * s], 0.0, 1.0)
        if self.colour == "y":
            from PIL import Image

            rgb = img.astype(np.float64) / 255.0
            planes = [sr[0].astype(np.float64)]
            for k in (1, 2):
                chroma = (YCBCR_OFFSET[k] + sum(YCBCR[k][j] * rgb[..., j] for j in range(3))) / 255.0
                up = Image.fromarray(chroma.astype(np.float32), mode="F").resize((w * s, h * s), Image.BICUBIC)
                planes.append(np.asarray(up, dtype=np.float64))
            inv = np.linalg.inv(np.array(YCBCR, dtype=np.float64))
            centred = np.stack(planes, axis=-1) * 255.0 - np.array(YCBCR_OFFSET)
            sr_hwc = np.clip(centred @ inv.T, 0.0, 1.0)
        else:
            sr_hwc = sr.transpose(1, 2, 0)
        return np.clip(np.round(sr_hwc * 255.0), 0, 255).astype(np.uint8)

    def classify(self, feats: Any) -> Any:
        out = self.model(feats).reshape(-1)
        if out.size != len(self.labels):
            raise BundleError("classifier gives %d outputs for %d labels" % (out.size, len(self.labels)))
        return out

    def scores(self, logits: Any) -> Any:
        np = self.np
        if self.probabilities:
            return logits.astype(np.float64)
        z = np.exp(logits.astype(np.float64) - float(np.max(logits)))
        return z / z.sum()


def percentile_90(samples: List[float]) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, exit code 2."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        sys.stderr.write("error: %s (see --help)\n" % _one_line(Exception(message)))
        sys.exit(EXIT_ERROR)


def main(argv: Optional[List[str]] = None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = _Parser(description="Classify a WAV file (audio bundles), an image (image bundles) or one time-series "
                                          "case (series bundles) with an edgenas bundle.")
    ap.add_argument("input", help="input WAV file (PCM 8/16/24/32-bit, any rate, mono or multi-channel), "
                                  "or image file (PNG, JPEG, …; needs pillow) for an image bundle, "
                                  "or one time-series case (.ts line or CSV row) for a series bundle")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--bench", type=int, default=0, metavar="N", help="time N end-to-end runs after warm-up")
    ap.add_argument("--warmup", type=int, default=5, metavar="W", help="warm-up runs before --bench (default 5)")
    ap.add_argument("--runtime", choices=("onnx", "tflite"), help="use only this model format")
    ap.add_argument("--threads", type=int, default=1, help="runtime threads (default 1)")
    ap.add_argument("--bundle", default=here, help="bundle folder or bundle.json (default: this file's folder)")
    ap.add_argument("--out", help="super-resolution bundles: the PNG to write (default: INPUT_x<scale>.png)")
    args = ap.parse_args(argv)
    try:
        if args.bench < 0 or args.warmup < 0 or args.threads < 1:
            raise BundleError("--bench and --warmup must be >= 0 and --threads >= 1")
        try:
            import numpy as np
        except ImportError:
            raise BundleError("numpy is not installed (pip install numpy)")
        bundle, root = load_bundle(args.bundle)
        pipe = Pipeline(bundle, root, args.runtime, args.threads, np)
        clip, read = pipe.read(args.input)
        if pipe.kind == "sr":
            return _super_resolve(pipe, clip, read, args, np)
        logits = pipe.logits(clip)
        scores = pipe.scores(logits)
        best = int(np.argmax(scores))
        result: Dict[str, Any] = {
            "label": pipe.labels[best], "index": best, "score": float(scores[best]),
            "scores": {lab: float(s) for lab, s in zip(pipe.labels, scores)},
            "logits": [float(v) for v in logits],
            {"image": "image", "series": "case"}.get(pipe.kind, "wav"): read,
            "runtime": {"frontend": "%s (%s)" % (pipe.frontend.runtime, os.path.basename(pipe.frontend.path)),
                        "model": "%s (%s)" % (pipe.model.runtime, os.path.basename(pipe.model.path)),
                        "threads": args.threads},
        }
        if args.bench:
            for _ in range(args.warmup):
                pipe.scores(pipe.logits(clip))
            samples, front, model = [], [], []
            clock = time.perf_counter
            for _ in range(args.bench):  # each run: front end, then classifier, timed apart (the two
                t0 = clock()             # models a budget covers; the softmax over the scores is not timed)
                feats = pipe.frontend(clip)
                t1 = clock()
                pipe.model(feats)
                t2 = clock()
                samples.append((t2 - t0) * 1e3)
                front.append((t1 - t0) * 1e3)
                model.append((t2 - t1) * 1e3)
            result["bench"] = {"runs": args.bench, "warmup": args.warmup,
                               "median_ms": float(np.median(samples)), "p90_ms": float(percentile_90(samples)),
                               "frontend_median_ms": float(np.median(front)),
                               "frontend_p90_ms": float(percentile_90(front)),
                               "model_median_ms": float(np.median(model)), "model_p90_ms": float(percentile_90(model))}
    except BundleError as e:
        sys.stderr.write("error: %s\n" % _one_line(e))
        return EXIT_ERROR
    except Exception as e:  # a runtime failing mid-inference: still one line
        sys.stderr.write("error: inference failed: %s: %s\n" % (type(e).__name__, _one_line(e)))
        return EXIT_ERROR
    if args.json:
        sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    else:
        sys.stdout.write("%s %.4f\n" % (result["label"], result["score"]))
        if args.bench:
            b = result["bench"]
            sys.stdout.write("latency_ms median %.3f p90 %.3f (%d runs, front end + model); front end median %.3f, "
                             "model median %.3f\n" % (b["median_ms"], b["p90_ms"], b["runs"], b["frontend_median_ms"],
                                                      b["model_median_ms"]))
    return 0


def _super_resolve(pipe: Pipeline, img: Any, read: Dict[str, Any], args: Any, np: Any) -> int:
    """Upscale ``img``, write the PNG, print one line (or JSON); ``--bench`` times whole frames."""
    tiles, origins = pipe.tiles(img)
    outs = [pipe.upscale_tile(t) for t in tiles]
    sr = pipe.stitch(img, outs, origins)
    out_path = args.out or "%s_x%d.png" % (os.path.splitext(args.input)[0], pipe.scale)
    try:
        from PIL import Image

        Image.fromarray(sr, mode="RGB").save(out_path)
    except (OSError, ValueError) as e:
        sys.stderr.write("error: cannot write %s: %s\n" % (out_path, _one_line(e)))
        return EXIT_ERROR
    h, w = img.shape[:2]
    result: Dict[str, Any] = {"output": out_path, "image": read, "out_size": [int(sr.shape[0]), int(sr.shape[1])],
                              "tiles": len(origins), "scale": pipe.scale, "colour": pipe.colour,
                              "runtime": {"frontend": "%s (%s)" % (pipe.frontend.runtime,
                                                                   os.path.basename(pipe.frontend.path)),
                                          "model": "%s (%s)" % (pipe.model.runtime, os.path.basename(pipe.model.path)),
                                          "threads": args.threads}}
    if args.bench:
        clock = time.perf_counter
        for _ in range(args.warmup):
            pipe.upscale_tile(tiles[0])
        front, model = [], []
        for _ in range(args.bench):  # one whole frame per run: every tile, front end and model timed apart
            f = m = 0.0
            for t in tiles:
                t0 = clock()
                feats = pipe.frontend(t[None])
                t1 = clock()
                pipe.model(feats)
                t2 = clock()
                f, m = f + (t1 - t0), m + (t2 - t1)
            front.append(f * 1e3)
            model.append(m * 1e3)
        t0 = clock()
        pipe.stitch(img, outs, origins)
        post_ms = (clock() - t0) * 1e3
        frame = [a + b for a, b in zip(front, model)]
        result["bench"] = {"runs": args.bench, "warmup": args.warmup, "tiles": len(origins),
                           "median_ms": float(np.median(frame)), "p90_ms": float(percentile_90(frame)),
                           "frontend_median_ms": float(np.median(front)), "model_median_ms": float(np.median(model)),
                           "post_ms": post_ms}
    if args.json:
        sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    else:
        sys.stdout.write("wrote %s (%dx%d -> %dx%d, %d tiles)\n" % (out_path, w, h, sr.shape[1], sr.shape[0],
                                                                   len(origins)))
        if args.bench:
            b = result["bench"]
            sys.stdout.write("latency_ms per frame median %.3f p90 %.3f (%d runs, %d tiles, front end + model); "
                             "front end median %.3f, model median %.3f; stitch + chroma %.3f\n"
                             % (b["median_ms"], b["p90_ms"], b["runs"], b["tiles"], b["frontend_median_ms"],
                                b["model_median_ms"], b["post_ms"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
