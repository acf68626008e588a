"""A plain PyTorch network as an equivalent channels-last ``tf.keras`` model (for TFLite export).

The TFLite full-int8 route (DESIGN.md, "Toolchain") builds the *same* network in Keras from the
trained weights and lets ``tf.lite.TFLiteConverter`` quantize it: that gives fully-integer models
with zero TRANSPOSE ops, native DEPTH_TO_SPACE and integer residual adds and means, where generic
ONNX/PyTorch → TFLite converters leave float islands or insert transposes. So that one builder per
search space serves both PyTorch and Keras, :func:`to_keras` is generic: it traces any
``nn.Module`` made of the supported primitives with ``torch.fx.symbolic_trace``, runs
``ShapeProp`` once for the static shapes (batch 1) and emits a Keras functional model node by node.

Layout: every tensor of rank ≥ 3 lives channels-last in Keras (NCHW → NHWC, NCL → NLC, i.e. the
torch tensor permuted by ``(0, 2, …, r-1, 1)``); rank-2 tensors are unchanged. The Keras model's
input is the channels-last version of the torch input shape with batch 1 (a KWS input
``[1, 1, T, F]`` becomes ``[1, T, F, 1]``); its outputs are channels-last too.

What the conversion does on the way:

* **BatchNorm folding** — a ``BatchNorm1d/2d`` (eval statistics) whose input is a conv or linear
  used only by it is folded into that layer's weights and bias; any other BatchNorm becomes a Keras
  ``BatchNormalization`` (an affine MUL/ADD after conversion).
* **Weight layouts** — Conv2d OIHW → HWIO, depthwise (``groups == in_channels``) C·M,1,H,W →
  HWCM, grouped convs keep HWIO with ``groups``, Conv1d OIK → KIO, Linear W → Wᵀ.
* **Padding** — the zero padding of a conv (its own ``padding``, int/tuple/"same", plus a
  ``ZeroPad2d`` / ``ZeroPad1d`` / ``ConstantPad*d(0)`` / ``F.pad`` feeding only that conv) is
  summed per side; equal to TensorFlow's SAME padding for that input size it becomes
  ``padding="same"`` (one CONV_2D), zero becomes ``"valid"``, anything else (asymmetric, strided,
  causal) an explicit ``ZeroPadding1D/2D`` (a PAD op) before a valid conv.
* **PixelShuffle** — PyTorch's ``pixel_shuffle`` reads channels in CRD order, TF's
  ``depth_to_space`` in DCR order, so the output channels of the conv producing the shuffle's
  input (through ReLUs, Dropout, Identity, a folded BatchNorm, or each conv of a residual ``+``) are
  permuted and the shuffle
  becomes ``tf.nn.depth_to_space`` (DEPTH_TO_SPACE in TFLite); with no such conv (a shuffle of the
  network input, or of a shared tensor) an explicit channel GATHER reorders CRD to DCR first.
* **Flatten** — ``flatten(1)`` of a tensor whose spatial dims are all 1 is a plain reshape; of a
  larger tensor it flattens in HWC order, which a following ``nn.Linear`` absorbs by permuting its
  input columns (through ReLU, BatchNorm1d, ``+`` and ``torch.cat``; any other consumer, or a
  network output, is rejected).

Supported nodes: ``nn.Conv1d/2d`` (any groups, stride, dilation, zero padding), ``nn.Linear``,
``nn.BatchNorm1d/2d``, ``nn.ReLU``/``ReLU6``/``F.relu``/``torch.relu``/``.relu()``, ``nn.Identity``,
``nn.Dropout`` (eval), zero pads, ``nn.AdaptiveAvgPool1d/2d(1)``, ``mean`` over spatial dims,
``nn.MaxPool2d``/``nn.AvgPool2d`` without padding, ``flatten``, residual ``+``, ``torch.cat``
(no layout changes across it), ``nn.PixelShuffle``/``F.pixel_shuffle``. Anything else raises
:class:`~edgenas.errors.ExportError` with one line naming the node.

TensorFlow is imported inside the functions (the ``tflite`` extra); Keras must run on the
TensorFlow backend. :func:`quiet_native` silences TensorFlow's C++ and Python log spam.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import operator
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from edgenas.errors import ExportError

TFLITE_EXTRA = "pip install 'edgenas[tflite]'"

_TF_LOGGERS = ("tensorflow", "absl", "keras", "h5py", "jax")


@contextlib.contextmanager
def quiet_native() -> Iterator[list[str]]:
    """Silence TensorFlow/LiteRT: C++ logs on fds 1 and 2, Python warnings and log records.

    The captured native output is appended to the yielded list when the block exits, so that a
    failing conversion can put its tail into an error message. File-descriptor redirection is
    process wide: output other threads write during the block is captured too.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    captured: list[str] = []
    loggers = [logging.getLogger(n) for n in _TF_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved: list[tuple[int, int]] = []
    sink = tempfile.TemporaryFile(mode="w+b")
    try:
        for fd in (1, 2):
            try:
                saved.append((fd, os.dup(fd)))
                os.dup2(sink.fileno(), fd)
            except OSError:  # no such descriptor (embedded interpreters): nothing to silence
                pass
        with warnings.catch_warnings(), contextlib.redirect_stdout(_NullText()), \
                contextlib.redirect_stderr(_NullText()):
            warnings.simplefilter("ignore")
            yield captured
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for fd, dup in saved:
            os.dup2(dup, fd)
            os.close(dup)
        with contextlib.suppress(Exception):
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))
        sink.close()
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


class _NullText(io.TextIOBase):
    """A text sink for Python-level prints (``redirect_stdout``)."""

    def write(self, s: str) -> int:
        return len(s)

    def writable(self) -> bool:
        return True


def import_tf() -> tuple[Any, Any]:
    """``(tensorflow, keras)``, imported quietly; an :class:`ExportError` naming the extra if missing."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if "tensorflow" not in sys.modules:
        # triton (imported lazily by torch._dynamo, e.g. on the first torch.optim.Adam) segfaults when
        # its native library loads after TensorFlow's (measured: torch 2.14.1 + triton 3.8.0 +
        # tensorflow-cpu 2.21.0); loaded first, both work
        with contextlib.suppress(Exception):
            import triton  # noqa: F401
    try:
        with contextlib.suppress(ImportError):
            # absl's handler binds sys.stderr when first imported: import it outside the redirect
            import absl.logging

            absl.logging.set_verbosity(absl.logging.ERROR)
        with quiet_native():
            import tensorflow as tf
            import keras

            tf.get_logger().setLevel(logging.ERROR)
    except ImportError as e:
        raise ExportError(f"TFLite export needs TensorFlow ({e}); {TFLITE_EXTRA}") from None
    if keras.backend.backend() != "tensorflow":
        raise ExportError(f"TFLite export needs Keras on the TensorFlow backend, not {keras.backend.backend()!r} "
                          "(unset KERAS_BACKEND)")
    return tf, keras


# ---- layout helpers ----------------------------------------------------------------------------

def channels_last_perm(rank: int) -> tuple[int, ...]:
    """The permutation from a torch tensor of ``rank`` to its Keras layout: (0, 2, …, r-1, 1)."""
    if rank <= 2:
        return tuple(range(rank))
    return (0, *range(2, rank), 1)


def to_channels_last(x: np.ndarray) -> np.ndarray:
    """A torch-layout array (NCHW / NCL) in Keras/TFLite layout (NHWC / NLC)."""
    return np.ascontiguousarray(np.transpose(x, channels_last_perm(x.ndim)))


def to_channels_first(x: np.ndarray) -> np.ndarray:
    """The inverse of :func:`to_channels_last`."""
    return np.ascontiguousarray(np.transpose(x, np.argsort(channels_last_perm(x.ndim))))


def keras_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    """The Keras/TFLite input shape (batch 1, channels-last) of a torch input shape."""
    shape = (1, *[int(s) for s in input_shape[1:]])
    return tuple(shape[p] for p in channels_last_perm(len(shape)))


def tf_same_pad(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow's SAME padding (before, after) of one spatial dim."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


# ---- values flowing through the conversion -----------------------------------------------------

@dataclass
class _Val:
    """A converted value: the Keras tensor and how its layout relates to the torch tensor."""

    t: Any  # KerasTensor
    shape: tuple[int, ...]  # the torch shape (batch 1)
    flat_perm: np.ndarray | None = None  # rank 2: Keras column i holds torch column flat_perm[i]
    chan_perm: np.ndarray | None = None  # Keras channel k holds torch channel chan_perm[k]

    @property
    def plain(self) -> bool:
        return self.flat_perm is None and self.chan_perm is None


_RELU_FUNCS = {F.relu, torch.relu, torch.relu_, F.relu6}
_IDENTITY_FUNCS = {F.dropout, torch.dropout}
_ADD_FUNCS = {operator.add, operator.iadd, torch.add}
_PAD_MODULES = (nn.ZeroPad2d, nn.ConstantPad2d, nn.ConstantPad1d, nn.ZeroPad1d)
_BN_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d)
_CONV_MODULES = (nn.Conv1d, nn.Conv2d)


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        m = modules[str(node.target)]
        return f"'{node.target}' ({type(m).__module__}.{type(m).__name__})"
    if node.op == "call_function":
        t = node.target
        return f"'{node.name}' ({getattr(t, '__module__', '') or ''}.{getattr(t, '__name__', repr(t))})".replace("(.", "(")
    if node.op == "call_method":
        return f"'{node.name}' (Tensor.{node.target}())"
    return f"'{node.name}' ({node.op} {node.target})"


def _unsupported(node: fx.Node, modules: dict[str, nn.Module], why: str = "") -> ExportError:
    extra = f": {why}" if why else ""
    return ExportError(f"TFLite export: unsupported node {_describe(node, modules)}{extra}")


def _lname(node: fx.Node) -> str:
    """The Keras layer name of a node (prefixed: Keras names its ``keras.ops`` calls "add", "mean", …)."""
    return f"fx_{node.name}"


def _np(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().double().numpy()


class _Converter:
    """One conversion: the traced graph, its analysis and the Keras tensors made so far."""

    def __init__(self, model: nn.Module, input_shape: Sequence[int]) -> None:
        self.tf, self.keras = import_tf()
        self.model = model
        self.input_shape = (1, *[int(s) for s in input_shape[1:]])
        try:
            self.gm = fx.symbolic_trace(model)
        except Exception as e:  # noqa: BLE001 - tracing errors are many kinds
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ExportError(f"TFLite export: cannot trace {type(model).__name__} with torch.fx: {first}") from None
        self.modules = dict(self.gm.named_modules())
        self._shape_prop()
        self.vals: dict[fx.Node, _Val | float | int] = {}
        self.folded_bn: dict[fx.Node, fx.Node] = {}  # BN node → the conv/linear node it folds into
        self.bn_of: dict[fx.Node, nn.Module] = {}  # conv/linear node → its folded BN module
        self.merged_pad: dict[fx.Node, fx.Node] = {}  # conv node → the pad node merged into it
        self.skipped_pads: set[fx.Node] = set()
        self.out_perm: dict[fx.Node, np.ndarray] = {}  # conv node → its output channel permutation
        self._analyse()

    # ---- preparation ---------------------------------------------------------------------------
    def _shape_prop(self) -> None:
        from torch.fx.passes.shape_prop import ShapeProp

        modes = {m: m.training for m in self.model.modules()}
        try:
            self.model.eval()
            with torch.no_grad():
                ShapeProp(self.gm).propagate(torch.zeros(self.input_shape))
        except ExportError:
            raise
        except Exception as e:  # noqa: BLE001
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ExportError(f"TFLite export: {type(self.model).__name__} does not run on input "
                              f"{list(self.input_shape)}: {first}") from None
        finally:
            for m, mode in modes.items():
                m.train(mode)

    def shape(self, node: fx.Node) -> tuple[int, ...]:
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            raise _unsupported(node, self.modules, "it does not produce a single tensor")
        return tuple(int(s) for s in meta.shape)

    def mod(self, node: fx.Node) -> nn.Module | None:
        return self.modules.get(str(node.target)) if node.op == "call_module" else None

    def _pad_of(self, node: fx.Node) -> list[tuple[int, int]] | None:
        """Per spatial dim (torch order) zero padding of a pad node, None if not a zero pad."""
        m = self.mod(node)
        if isinstance(m, _PAD_MODULES):
            if float(getattr(m, "value", 0.0)) != 0.0:
                return None
            pad = tuple(int(p) for p in m.padding)
        elif node.op == "call_function" and node.target is F.pad:
            args = list(node.args) + [None] * 4
            pad_arg = node.kwargs.get("pad", args[1])
            mode = node.kwargs.get("mode", args[2] if args[2] is not None else "constant")
            value = node.kwargs.get("value", args[3])
            if mode != "constant" or (value not in (None, 0, 0.0)) or not isinstance(pad_arg, (tuple, list)):
                return None
            if not all(isinstance(p, int) for p in pad_arg):
                return None
            pad = tuple(int(p) for p in pad_arg)
        else:
            return None
        rank = len(self.shape(node))
        if rank not in (3, 4) or len(pad) % 2:
            return None
        per_dim = [(pad[i], pad[i + 1]) for i in range(0, len(pad), 2)][::-1]  # first dim first
        per_dim = [(0, 0)] * (rank - len(per_dim)) + per_dim
        if any(p != (0, 0) for p in per_dim[:2]) or any(a < 0 or b < 0 for a, b in per_dim):
            return None  # pads batch/channels, or crops
        return per_dim[2:]

    def _analyse(self) -> None:
        for node in self.gm.graph.nodes:
            m = self.mod(node)
            if isinstance(m, _BN_MODULES):
                src = node.args[0]
                if (isinstance(src, fx.Node) and isinstance(self.mod(src), (*_CONV_MODULES, nn.Linear))
                        and len(src.users) == 1 and m.running_mean is not None and src not in self.bn_of):
                    self.folded_bn[node] = src
                    self.bn_of[src] = m
            if isinstance(m, _CONV_MODULES):
                src = node.args[0]
                if isinstance(src, fx.Node) and len(src.users) == 1 and self._pad_of(src) is not None:
                    self.merged_pad[node] = src
                    self.skipped_pads.add(src)
        for node in self.gm.graph.nodes:
            r = self._shuffle_factor(node)
            if r is None:
                continue
            convs = self._channel_sources(node.args[0])
            if not convs:
                continue
            c_in = self.shape(node.args[0])[1]
            c = c_in // (r * r)
            # Keras channel (i*r + j)*C + c (DCR) must hold torch channel c*r*r + i*r + j (CRD)
            perm = np.array([cc * r * r + i * r + j for i in range(r) for j in range(r) for cc in range(c)])
            for conv in convs:
                self.out_perm[conv] = perm

    def _shuffle_factor(self, node: fx.Node) -> int | None:
        m = self.mod(node)
        if isinstance(m, nn.PixelShuffle):
            return int(m.upscale_factor)
        if node.op == "call_function" and node.target in (F.pixel_shuffle, torch.pixel_shuffle):
            r = node.kwargs.get("upscale_factor", node.args[1] if len(node.args) > 1 else None)
            return int(r) if isinstance(r, int) else None
        return None

    def _channel_sources(self, node: Any) -> list[fx.Node] | None:
        """The (non-grouped) Conv2ds whose output channels reach ``node`` unmixed and unshared:
        one through ReLUs, folded BatchNorms and the like, or every conv feeding a residual ``+``
        of two such tensors (an SR tail plus its bicubic residual). None when any path has none."""
        while isinstance(node, fx.Node) and len(node.users) == 1:
            m = self.mod(node)
            if isinstance(m, nn.Conv2d):
                return [node] if m.groups == 1 and node not in self.out_perm else None
            if node.op == "call_function" and node.target in _ADD_FUNCS and len(node.args) == 2:
                parts = [self._channel_sources(a) for a in node.args]
                return None if any(p is None for p in parts) else [c for p in parts for c in p]  # type: ignore[union-attr]
            if node in self.folded_bn or self._is_elementwise(node):
                node = node.args[0]
                continue
            return None
        return None

    def _is_elementwise(self, node: fx.Node) -> bool:
        m = self.mod(node)
        if isinstance(m, (nn.ReLU, nn.ReLU6, nn.Identity, nn.Dropout)):
            return True
        if isinstance(m, nn.Hardtanh) and m.min_val == 0.0 and m.max_val == 6.0:
            return True
        if node.op == "call_function" and node.target in _RELU_FUNCS | _IDENTITY_FUNCS:
            return True
        return node.op == "call_method" and node.target in ("relu", "relu_", "contiguous")

    # ---- emission ------------------------------------------------------------------------------
    def run(self) -> Any:
        keras = self.keras
        inputs: list[Any] = []
        outputs: list[Any] = []
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                if inputs:
                    raise _unsupported(node, self.modules, "only single-input networks convert")
                shape = self.shape(node)
                t = keras.Input(shape=keras_input_shape(shape)[1:], batch_size=1, name="input")
                inputs.append(t)
                self.vals[node] = _Val(t, shape)
            elif node.op == "output":
                outs = node.args[0]
                outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
                for o in outs:
                    v = self.vals.get(o) if isinstance(o, fx.Node) else None
                    if not isinstance(v, _Val):
                        raise _unsupported(node, self.modules, "outputs must be tensors")
                    if not v.plain:
                        raise _unsupported(o, self.modules, "a network output must not be flattened from a "
                                                            "larger map or channel-permuted")
                    outputs.append(v.t)
            elif node.op == "get_attr":
                raise _unsupported(node, self.modules, "parameters used outside their modules do not convert")
            else:
                if node in self.skipped_pads:
                    continue
                v = self._emit(node)
                if isinstance(v, _Val):
                    self._check_shape(node, v)
                self.vals[node] = v
        return keras.Model(inputs[0], outputs[0] if len(outputs) == 1 else outputs, name="edgenas_keras")

    def _check_shape(self, node: fx.Node, v: _Val) -> None:
        expect = self.shape(node)
        want = tuple(expect[p] for p in channels_last_perm(len(expect)))
        got = tuple(int(s) if s is not None else -1 for s in v.t.shape)
        if got != want:
            raise ExportError(f"TFLite export: node {_describe(node, self.modules)} gives Keras shape {list(got)}, "
                              f"expected {list(want)} (torch {list(expect)})")

    def val(self, node: fx.Node, arg: Any) -> _Val:
        v = self.vals.get(arg) if isinstance(arg, fx.Node) else None
        if not isinstance(v, _Val):
            raise _unsupported(node, self.modules, "expected a tensor argument")
        return v

    def _emit(self, node: fx.Node) -> _Val | float | int:
        m = self.mod(node)
        if node.op == "call_module":
            assert m is not None
            return self._emit_module(node, m)
        if node.op == "call_function":
            return self._emit_function(node)
        if node.op == "call_method":
            return self._emit_method(node)
        raise _unsupported(node, self.modules)

    def _emit_module(self, node: fx.Node, m: nn.Module) -> _Val:
        if isinstance(m, _CONV_MODULES):
            return self._conv(node, m)
        if isinstance(m, nn.Linear):
            return self._linear(node, m)
        if isinstance(m, _BN_MODULES):
            if node in self.folded_bn:
                return self.val(node, self.folded_bn[node])
            return self._batchnorm(node, m)
        if isinstance(m, (nn.Identity, nn.Dropout)):
            return self.val(node, node.args[0])
        if isinstance(m, nn.ReLU):
            return self._relu(node, None)
        if isinstance(m, nn.ReLU6):
            return self._relu(node, 6.0)
        if isinstance(m, nn.Hardtanh) and m.min_val == 0.0 and m.max_val == 6.0:
            return self._relu(node, 6.0)
        if isinstance(m, _PAD_MODULES):
            return self._pad(node)
        if isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
            size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size,)
            if any(s != 1 for s in size):
                raise _unsupported(node, self.modules, "only output size 1 (global pooling) converts")
            x = self.val(node, node.args[0])
            return self._mean(node, x, tuple(range(2, len(x.shape))), keepdim=True)
        if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            return self._pool2d(node, m)
        if isinstance(m, nn.Flatten):
            return self._flatten(node, self.val(node, node.args[0]), m.start_dim, m.end_dim)
        if isinstance(m, nn.PixelShuffle):
            return self._pixel_shuffle(node, int(m.upscale_factor))
        raise _unsupported(node, self.modules)

    def _emit_function(self, node: fx.Node) -> _Val | float | int:
        f = node.target
        if f in _RELU_FUNCS:  # inplace or not: the same value in a graph
            return self._relu(node, 6.0 if f is F.relu6 else None)
        if f in _IDENTITY_FUNCS:
            return self.val(node, node.args[0])
        if f in _ADD_FUNCS:
            if "alpha" in node.kwargs and node.kwargs["alpha"] != 1:
                raise _unsupported(node, self.modules, "add with alpha")
            return self._add(node, node.args[0], node.args[1])
        if f is F.pad:
            return self._pad(node)
        if f is torch.flatten:
            start = node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else 0)
            end = node.kwargs.get("end_dim", node.args[2] if len(node.args) > 2 else -1)
            return self._flatten(node, self.val(node, node.args[0]), start, end)
        if f is torch.mean:
            return self._mean_call(node)
        if f is torch.cat or f is torch.concat:
            tensors = node.kwargs.get("tensors", node.args[0])
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
            return self._cat(node, tensors, int(dim))
        if f in (F.adaptive_avg_pool2d, F.adaptive_avg_pool1d):
            size = node.kwargs.get("output_size", node.args[1] if len(node.args) > 1 else None)
            sizes = size if isinstance(size, (tuple, list)) else (size,)
            if any(s != 1 for s in sizes):
                raise _unsupported(node, self.modules, "only output size 1 (global pooling) converts")
            x = self.val(node, node.args[0])
            return self._mean(node, x, tuple(range(2, len(x.shape))), keepdim=True)
        if self._shuffle_factor(node) is not None:
            return self._pixel_shuffle(node, int(self._shuffle_factor(node) or 0))
        raise _unsupported(node, self.modules)

    def _emit_method(self, node: fx.Node) -> _Val | float | int:
        name = node.target
        if name in ("relu", "relu_"):
            return self._relu(node, None)
        if name in ("contiguous",):
            return self.val(node, node.args[0])
        if name == "mean":
            return self._mean_call(node)
        if name == "flatten":
            start = node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else 0)
            end = node.kwargs.get("end_dim", node.args[2] if len(node.args) > 2 else -1)
            return self._flatten(node, self.val(node, node.args[0]), start, end)
        if name in ("add", "add_"):
            if "alpha" in node.kwargs and node.kwargs["alpha"] != 1:
                raise _unsupported(node, self.modules, "add with alpha")
            return self._add(node, node.args[0], node.args[1])
        raise _unsupported(node, self.modules)

    # ---- primitives ----------------------------------------------------------------------------
    def _conv(self, node: fx.Node, m: nn.Conv1d | nn.Conv2d) -> _Val:
        keras = self.keras
        nd = 1 if isinstance(m, nn.Conv1d) else 2
        if m.padding_mode != "zeros":
            raise _unsupported(node, self.modules, f"padding_mode={m.padding_mode!r}")
        src = node.args[0]
        pre: list[tuple[int, int]] = [(0, 0)] * nd
        if node in self.merged_pad:
            pad_node = self.merged_pad[node]
            pre = self._pad_of(pad_node) or pre
            src = pad_node.args[0]
        x = self.val(node, src)
        if not x.plain:
            raise _unsupported(node, self.modules, "its input is flattened or channel-permuted")
        in_sizes = x.shape[2:]
        k, s, d = tuple(m.kernel_size), tuple(m.stride), tuple(m.dilation)
        if isinstance(m.padding, str):
            if m.padding == "valid":
                own = [(0, 0)] * nd
            else:  # "same" (stride 1 in torch): total d*(k-1), the extra one after
                own = [((d[i] * (k[i] - 1)) // 2, d[i] * (k[i] - 1) - (d[i] * (k[i] - 1)) // 2) for i in range(nd)]
        else:
            own = [(int(p), int(p)) for p in m.padding]
        pads = [(pre[i][0] + own[i][0], pre[i][1] + own[i][1]) for i in range(nd)]
        if max(s) > 1 and max(d) > 1:
            raise _unsupported(node, self.modules, "stride > 1 together with dilation > 1")
        if all(p == (0, 0) for p in pads):
            padding = "valid"
        elif all(pads[i] == tf_same_pad(in_sizes[i], k[i], s[i], d[i]) for i in range(nd)):
            padding = "same"
        else:
            padding = "valid"
            layer = keras.layers.ZeroPadding1D(pads[0]) if nd == 1 else keras.layers.ZeroPadding2D(tuple(pads))
            x = _Val(layer(x.t), x.shape)  # the torch shape is not tracked for this internal value

        w = _np(m.weight)
        b = _np(m.bias)
        assert w is not None
        w, b = self._fold(node, w, b)
        groups, cin, cout = m.groups, m.in_channels, m.out_channels
        perm = self.out_perm.get(node)
        if perm is not None:
            w, b = w[perm], (b[perm] if b is not None else None)
        use_bias = b is not None
        kw: dict[str, Any] = dict(strides=s, padding=padding, dilation_rate=d, use_bias=use_bias,
                                  name=_lname(node))
        if groups == cin and groups > 1:
            mult = cout // cin
            dw = w.reshape(cin, mult, *k)  # [C, M, k...]
            kernel = dw.transpose(*range(2, 2 + nd), 0, 1)  # [k..., C, M]
            cls = keras.layers.DepthwiseConv1D if nd == 1 else keras.layers.DepthwiseConv2D
            layer = cls(kernel_size=k, depth_multiplier=mult, **kw)
        else:
            kernel = w.transpose(*range(2, 2 + nd), 1, 0)  # [k..., I/g, O]
            cls = keras.layers.Conv1D if nd == 1 else keras.layers.Conv2D
            layer = cls(filters=cout, kernel_size=k, groups=groups, **kw)
        y = layer(x.t)
        layer.set_weights([kernel.astype(np.float32)] + ([b.astype(np.float32)] if use_bias else []))
        return _Val(y, self.shape(node), chan_perm=perm)

    def _fold(self, node: fx.Node, w: np.ndarray, b: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        bn = self.bn_of.get(node)
        if bn is None:
            return w, b
        mean, var = _np(bn.running_mean), _np(bn.running_var)
        assert mean is not None and var is not None
        gamma = _np(bn.weight) if bn.weight is not None else np.ones_like(mean)
        beta = _np(bn.bias) if bn.bias is not None else np.zeros_like(mean)
        assert gamma is not None and beta is not None
        scale = gamma / np.sqrt(var + bn.eps)
        w = w * scale.reshape(-1, *([1] * (w.ndim - 1)))
        b = ((b if b is not None else 0.0) - mean) * scale + beta
        return w, b

    def _linear(self, node: fx.Node, m: nn.Linear) -> _Val:
        x = self.val(node, node.args[0])
        if len(x.shape) != 2 or x.chan_perm is not None:
            raise _unsupported(node, self.modules, "nn.Linear converts on [batch, features] inputs only")
        w, b = _np(m.weight), _np(m.bias)
        assert w is not None
        w, b = self._fold(node, w, b)
        if x.flat_perm is not None:
            w = w[:, x.flat_perm]
        layer = self.keras.layers.Dense(m.out_features, use_bias=b is not None, name=_lname(node))
        y = layer(x.t)
        layer.set_weights([w.T.astype(np.float32)] + ([b.astype(np.float32)] if b is not None else []))
        return _Val(y, self.shape(node))

    def _batchnorm(self, node: fx.Node, m: nn.Module) -> _Val:
        x = self.val(node, node.args[0])
        if getattr(m, "running_mean", None) is None:
            raise _unsupported(node, self.modules, "BatchNorm without running statistics")
        mean, var = _np(m.running_mean), _np(m.running_var)  # type: ignore[arg-type]
        assert mean is not None and var is not None
        gamma = _np(m.weight) if m.weight is not None else np.ones_like(mean)  # type: ignore[arg-type]
        beta = _np(m.bias) if m.bias is not None else np.zeros_like(mean)  # type: ignore[arg-type]
        assert gamma is not None and beta is not None
        perm = x.chan_perm if x.chan_perm is not None else x.flat_perm
        if x.flat_perm is not None and len(x.flat_perm) != len(mean):
            raise _unsupported(node, self.modules, "BatchNorm on a flattened map")
        if perm is not None:
            mean, var, gamma, beta = mean[perm], var[perm], gamma[perm], beta[perm]
        layer = self.keras.layers.BatchNormalization(axis=-1, epsilon=float(m.eps), name=_lname(node))  # type: ignore[arg-type]
        y = layer(x.t, training=False)
        layer.set_weights([a.astype(np.float32) for a in (gamma, beta, mean, var)])
        return _Val(y, self.shape(node), x.flat_perm, x.chan_perm)

    def _relu(self, node: fx.Node, max_value: float | None) -> _Val:
        x = self.val(node, node.args[0])
        y = self.keras.layers.ReLU(max_value=max_value, name=_lname(node))(x.t)
        return _Val(y, self.shape(node), x.flat_perm, x.chan_perm)

    def _pad(self, node: fx.Node) -> _Val:
        per_dim = self._pad_of(node)
        if per_dim is None:
            raise _unsupported(node, self.modules, "only zero padding of the spatial dims converts")
        x = self.val(node, node.args[0])
        if not x.plain:
            raise _unsupported(node, self.modules, "its input is flattened or channel-permuted")
        keras = self.keras
        layer = (keras.layers.ZeroPadding1D(per_dim[0], name=_lname(node)) if len(per_dim) == 1
                 else keras.layers.ZeroPadding2D(tuple(per_dim), name=_lname(node)))
        return _Val(layer(x.t), self.shape(node))

    def _pool2d(self, node: fx.Node, m: nn.MaxPool2d | nn.AvgPool2d) -> _Val:
        x = self.val(node, node.args[0])
        pad = m.padding if isinstance(m.padding, tuple) else (m.padding, m.padding)
        dil = getattr(m, "dilation", 1)
        if any(pad) or m.ceil_mode or dil not in (1, (1, 1)) or len(x.shape) != 4 or not x.plain:
            raise _unsupported(node, self.modules, "only unpadded, undilated, floor-mode 2-d pooling converts")
        k = m.kernel_size
        s = m.stride if m.stride is not None else k
        cls = self.keras.layers.MaxPooling2D if isinstance(m, nn.MaxPool2d) else self.keras.layers.AveragePooling2D
        y = cls(pool_size=k, strides=s, padding="valid", name=_lname(node))(x.t)
        return _Val(y, self.shape(node))

    def _mean_call(self, node: fx.Node) -> _Val:
        x = self.val(node, node.args[0])
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        keepdim = bool(node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False))
        if node.kwargs.get("dtype") is not None:
            raise _unsupported(node, self.modules, "mean with dtype")
        rank = len(x.shape)
        if dim is None:
            raise _unsupported(node, self.modules, "mean over all dims")
        dims = tuple(sorted({(int(d) % rank) for d in (dim if isinstance(dim, (tuple, list)) else (dim,))}))
        return self._mean(node, x, dims, keepdim)

    def _mean(self, node: fx.Node, x: _Val, dims: tuple[int, ...], keepdim: bool) -> _Val:
        rank = len(x.shape)
        if not x.plain or 0 in dims:
            raise _unsupported(node, self.modules, "mean over the batch or over a permuted layout")
        perm = channels_last_perm(rank)
        axes = tuple(sorted(perm.index(d) for d in dims))
        if not keepdim:
            rest_keras = [p for p in perm if p not in dims]
            rest = sorted(rest_keras)
            canon = [rest[i] for i in channels_last_perm(len(rest))]
            if rest_keras != canon:
                raise _unsupported(node, self.modules, "this reduction changes the channels-last layout")
        y = self.keras.ops.mean(x.t, axis=axes, keepdims=keepdim)
        return _Val(y, self.shape(node))

    def _flatten(self, node: fx.Node, x: _Val, start: Any, end: Any) -> _Val:
        rank = len(x.shape)
        start, end = int(start) % rank, int(end) % rank
        if rank == 2 and start == 1:
            return x
        if start != 1 or end != rank - 1 or x.chan_perm is not None or x.flat_perm is not None:
            raise _unsupported(node, self.modules, "only flatten(1) of an unpermuted map converts")
        n = int(np.prod(x.shape[1:]))
        y = self.keras.layers.Reshape((n,), name=_lname(node))(x.t)
        flat_perm = None
        if any(s != 1 for s in x.shape[2:]):
            idx = np.arange(n).reshape(x.shape[1:])
            # consumers that cannot absorb the HWC order (anything but Linear, cat, ReLU, BN, add)
            # reject it when they see flat_perm
            flat_perm = np.transpose(idx, [p - 1 for p in channels_last_perm(rank)[1:]]).ravel()
        return _Val(y, self.shape(node), flat_perm=flat_perm)

    def _add(self, node: fx.Node, a: Any, b: Any) -> _Val:
        keras = self.keras
        va = self.vals.get(a) if isinstance(a, fx.Node) else a
        vb = self.vals.get(b) if isinstance(b, fx.Node) else b
        if isinstance(va, _Val) and isinstance(vb, _Val):
            same = all((p is None and q is None) or (p is not None and q is not None and np.array_equal(p, q))
                       for p, q in ((va.flat_perm, vb.flat_perm), (va.chan_perm, vb.chan_perm)))
            if not same or len(va.shape) != len(vb.shape):
                raise _unsupported(node, self.modules, "operands with different layouts")
            if va.shape == vb.shape:
                y = keras.layers.Add(name=_lname(node))([va.t, vb.t])
            else:
                y = keras.ops.add(va.t, vb.t)
            return _Val(y, self.shape(node), va.flat_perm, va.chan_perm)
        if isinstance(va, _Val) and isinstance(vb, (int, float)) or isinstance(vb, _Val) and isinstance(va, (int, float)):
            x = va if isinstance(va, _Val) else vb
            c = vb if isinstance(va, _Val) else va
            assert isinstance(x, _Val)
            return _Val(keras.ops.add(x.t, float(c)), self.shape(node), x.flat_perm, x.chan_perm)  # type: ignore[arg-type]
        raise _unsupported(node, self.modules, "add of these operands")

    def _cat(self, node: fx.Node, tensors: Any, dim: int) -> _Val:
        vals = [self.val(node, t) for t in tensors]
        rank = len(vals[0].shape)
        dim = dim % rank
        if any(v.chan_perm is not None or len(v.shape) != rank for v in vals) or dim == 0:
            raise _unsupported(node, self.modules, "cat of permuted or mixed-rank tensors, or over the batch")
        flat_perm = None
        if any(v.flat_perm is not None for v in vals):
            if rank != 2:
                raise _unsupported(node, self.modules, "cat of flattened maps")
            parts, offset = [], 0
            for v in vals:  # Keras columns of each part, as torch columns of the result
                parts.append(offset + (v.flat_perm if v.flat_perm is not None else np.arange(v.shape[1])))
                offset += v.shape[1]
            flat_perm = np.concatenate(parts)
        axis = channels_last_perm(rank).index(dim)
        y = self.keras.layers.Concatenate(axis=axis, name=_lname(node))([v.t for v in vals])
        return _Val(y, self.shape(node), flat_perm=flat_perm)

    def _pixel_shuffle(self, node: fx.Node, r: int) -> _Val:
        x = self.val(node, node.args[0])
        c = x.shape[1] // (r * r)
        want = np.array([cc * r * r + i * r + j for i in range(r) for j in range(r) for cc in range(c)])
        if x.flat_perm is not None or len(x.shape) != 4:
            raise _unsupported(node, self.modules, "PixelShuffle of a flattened or non-4-D tensor")
        tf = self.tf
        t = x.t
        if x.chan_perm is None or not np.array_equal(x.chan_perm, want):
            # no conv whose output channels could be permuted (the shuffle reads the network input, or
            # a shared tensor): reorder the channels explicitly (one GATHER) so that DCR reads CRD
            have = np.arange(x.shape[1]) if x.chan_perm is None else np.asarray(x.chan_perm)
            index = tf.constant(np.argsort(have)[want].astype(np.int32))
            t = self.keras.layers.Lambda(lambda v: tf.gather(v, index, axis=-1), name=_lname(node) + "_crd")(t)
        y = self.keras.layers.Lambda(lambda v: tf.nn.depth_to_space(v, r), name=_lname(node))(t)
        return _Val(y, self.shape(node))


def to_keras(model: nn.Module, input_shape: tuple[int, ...]) -> Any:
    """The Keras functional model (channels-last, batch 1) computing what ``model`` computes in eval mode.

    ``input_shape`` is the torch input shape (its batch dimension is replaced by 1). Raises
    :class:`ExportError` (one line, naming the node) for anything outside the supported primitives.
    """
    if len(input_shape) < 2:
        raise ExportError(f"TFLite export: input shape {list(input_shape)} needs a batch and a feature dim")
    conv = _Converter(model, input_shape)
    with quiet_native():
        return conv.run()
