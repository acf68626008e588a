"""The contracts every stage shares: DataConfig, ArchSpec and LayerDesc.

* ``DataConfig`` — how raw audio becomes the feature tensor a model eats (the ``kws`` task's data
  configuration; every task has its own type, ``Task.data_config_class``, with the same faces:
  ``to_dict``/``from_dict``, ``key()`` and ``input_shape``).
* ``ArchSpec`` — one point of the joint (data × architecture) space; JSON-serialisable, with a
  stable hash. ``edgenas.spaces.build(spec)`` gives the same ``nn.Module`` every time.
* ``LayerDesc`` — one layer as the cost models and the latency micro-benchmarks see it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from edgenas.errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    """Audio front end: 1-channel waveform of ``clip_ms`` at ``sample_rate`` → MFCC [T, n_mfcc].

    Frames are computed without centring: ``T = 1 + (clip_samples - win_length) // hop_length``.
    The FFT size is the smallest power of two ≥ the window length (TFLite's FFT needs it).
    """

    sample_rate: int = 16000
    n_mfcc: int = 10
    n_mels: int = 40
    win_ms: float = 40.0
    hop_ms: float = 20.0
    clip_ms: float = 1000.0

    def __post_init__(self) -> None:
        # normalise types so equal configs serialise (and hash) identically: 40 and 40.0 alike
        for name, tp in (("sample_rate", int), ("n_mfcc", int), ("n_mels", int), ("win_ms", float),
                         ("hop_ms", float), ("clip_ms", float)):
            object.__setattr__(self, name, tp(getattr(self, name)))
        if self.sample_rate <= 0 or self.n_mfcc <= 0 or self.n_mels <= 0:
            raise ConfigError(f"invalid data config {self}")
        if self.n_mfcc > self.n_mels:
            raise ConfigError(f"n_mfcc ({self.n_mfcc}) must not exceed n_mels ({self.n_mels})")
        if not 0 < self.hop_ms <= self.win_ms < self.clip_ms:
            raise ConfigError(f"need 0 < hop_ms <= win_ms < clip_ms, got {self.hop_ms}/{self.win_ms}/{self.clip_ms}")

    @property
    def win_length(self) -> int:
        return int(round(self.sample_rate * self.win_ms / 1000.0))

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000.0))

    @property
    def clip_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_ms / 1000.0))

    @property
    def n_fft(self) -> int:
        return 1 << math.ceil(math.log2(self.win_length))

    @property
    def n_frames(self) -> int:
        return 1 + (self.clip_samples - self.win_length) // self.hop_length

    @property
    def feature_shape(self) -> tuple[int, int]:
        """(frames, coefficients): the model input is [N, 1, frames, n_mfcc]."""
        return (self.n_frames, self.n_mfcc)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The model input without batch, (C, H, W)."""
        return (1, self.n_frames, self.n_mfcc)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataConfig":
        return cls(**d)

    def key(self) -> str:
        """Short stable identifier, used in cache file names."""
        return (
            f"sr{self.sample_rate}_mfcc{self.n_mfcc}_mel{self.n_mels}_"
            f"w{self.win_ms:g}_h{self.hop_ms:g}_c{self.clip_ms:g}"
        )


def same_pad(size: int, k: int, s: int) -> tuple[int, int, int]:
    """TensorFlow 'SAME' padding: (before, after, output size)."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2, out


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def stable_hash(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:n]


def _data_class(task: str) -> Any:
    """The data configuration type of ``task`` (an unknown task is a one-line ConfigError)."""
    from edgenas.tasks import get_task  # tasks import this module

    return get_task(task).data_config_class


@dataclass(frozen=True)
class ArchSpec:
    """One point of a joint search space.

    ``choices`` maps every architecture choice point of the space to the label of its selected
    option; ``data`` is the selected data configuration (the data choice points resolved), of the
    task's data configuration type.
    """

    task: str
    space: str
    space_version: int
    num_classes: int
    data: Any
    choices: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "space": self.space,
            "space_version": self.space_version,
            "num_classes": self.num_classes,
            "data": self.data.to_dict(),
            "choices": dict(sorted(self.choices.items())),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ArchSpec":
        try:
            return cls(
                task=str(d["task"]),
                space=str(d["space"]),
                space_version=int(d["space_version"]),
                num_classes=int(d["num_classes"]),
                data=_data_class(str(d["task"])).from_dict(d["data"]),
                choices={str(k): str(v) for k, v in d["choices"].items()},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"not a valid ArchSpec: {e}") from None

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ArchSpec":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ConfigError(f"ArchSpec is not valid JSON: {e}") from None

    def hash(self) -> str:
        return stable_hash(self.to_dict())

    def __hash__(self) -> int:  # dict field makes the default unhashable
        return hash(self.hash())


@dataclass(frozen=True)
class LayerDesc:
    """One layer (a node of the network's graph) as the cost models see it (BatchNorm folded,
    activation fused).

    ``kind``: ``conv2d`` (``groups`` = in channels makes it depthwise; ``dilation``), ``linear``,
    ``global_avgpool``, ``add`` (elementwise sum of its inputs, e.g. a residual add), ``concat``
    (along channels), ``pixel_shuffle`` (depth to space by ``stride[0]``), ``upsample`` (nearest,
    by ``stride``). Shapes are (C, H, W) without batch; ``linear`` uses (C, 1, 1); ``in_shape`` of
    an ``add`` is one input's shape, of a ``concat`` the first input's. ``pad`` is (top, bottom,
    left, right) zero padding applied before the op.

    ``inputs`` names the layers whose outputs this one reads ("" = the network input); empty means
    the previous layer of the list (a chain). ``held`` is the int8 bytes of *other* tensors that stay
    live while this layer runs (a skip tensor waiting for its add): :func:`with_liveness` computes it
    from ``inputs``, and peak RAM adds it to the layer's own input and output.

    ``calls`` is how often the layer runs per input (the tiles of a super-resolution frame): the
    per-input costs (latency, Mult-Adds) multiply by it; per-call ones (RAM, flash, params) do not,
    nor does :meth:`key`, so a latency table times one call.
    """

    name: str
    kind: str
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    groups: int = 1
    activation: str | None = None
    bias: bool = True
    dtype: str = "int8"
    dilation: tuple[int, int] = (1, 1)
    inputs: tuple[str, ...] = ()
    held: int = 0
    calls: int = 1

    @property
    def pad_is_same(self) -> bool:
        """Whether ``pad`` is TensorFlow's SAME padding (or none): the exporters fold it into the
        convolution then; any other padding is an explicit PAD op that materialises the padded input."""
        _, h, w = self.in_shape
        kh, kw = ((k - 1) * d + 1 for k, d in zip(self.kernel, self.dilation))
        pt, pb, pl, pr = self.pad
        return (not any(self.pad) or ((pt, pb) == same_pad(h, kh, self.stride[0])[:2]
                                      and (pl, pr) == same_pad(w, kw, self.stride[1])[:2]))

    @property
    def n_inputs(self) -> int:
        return max(1, len(self.inputs))

    @property
    def macs(self) -> int:
        c_out, h, w = self.out_shape
        if self.kind == "conv2d":
            c_in = self.in_shape[0]
            return c_out * h * w * (c_in // self.groups) * self.kernel[0] * self.kernel[1]
        if self.kind == "linear":
            return self.in_shape[0] * c_out
        if self.kind == "global_avgpool":
            c, hi, wi = self.in_shape
            return c * hi * wi
        if self.kind == "add":  # one addition per output element and extra input
            return c_out * h * w * (self.n_inputs - 1)
        if self.kind in ("concat", "pixel_shuffle", "upsample"):
            return 0  # data movement only
        raise ValueError(f"unknown layer kind {self.kind}")

    @property
    def weights(self) -> int:
        if self.kind == "conv2d":
            return self.out_shape[0] * (self.in_shape[0] // self.groups) * self.kernel[0] * self.kernel[1]
        if self.kind == "linear":
            return self.in_shape[0] * self.out_shape[0]
        return 0

    @property
    def biases(self) -> int:
        return self.out_shape[0] if (self.bias and self.kind in ("conv2d", "linear")) else 0

    @property
    def params(self) -> int:
        return self.weights + self.biases

    def key(self) -> str:
        """Identity of the layer's computation (name, inputs and liveness excluded): the latency
        table's key. Fields added since the first table (dilation; the number of inputs of an
        add or concat) enter only when they differ from a plain layer, so stored keys stay valid."""
        base = [self.kind, self.in_shape, self.out_shape, self.kernel, self.stride, self.pad,
                self.groups, self.activation, self.bias, self.dtype]
        if self.dilation != (1, 1):
            base.append({"dilation": self.dilation})
        if self.kind in ("add", "concat"):
            base.append({"inputs": self.n_inputs})
        return canonical_json(base)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def with_liveness(layers: list[LayerDesc], bytes_per_element: int = 1) -> list[LayerDesc]:
    """``layers`` (in execution order) with ``held`` set from the graph: while layer *i* runs,
    every tensor produced before it and read by a layer after it, other than *i*'s own inputs,
    stays live (a residual block's input until its add). For a chain every ``held`` is 0."""
    names = [d.name for d in layers]
    if len(set(names)) != len(names):
        raise ValueError("layer names must be unique in a graph")
    index = {n: i for i, n in enumerate(names)}
    srcs: list[list[int]] = []  # producer indices (-1: the network input)
    for i, d in enumerate(layers):
        if not d.inputs:
            srcs.append([i - 1])
            continue
        got = []
        for n in d.inputs:
            if n == "":
                got.append(-1)
            elif n not in index or index[n] >= i:
                raise ValueError(f"layer {d.name} reads {n!r}, which is not an earlier layer")
            else:
                got.append(index[n])
        srcs.append(got)
    last_use = {-1: 0}
    for i, ss in enumerate(srcs):
        for j in ss:
            last_use[j] = max(last_use.get(j, -1), i)
    size = {-1: _numel(layers[0].in_shape)} if layers else {}
    size.update({i: _numel(d.out_shape) for i, d in enumerate(layers)})
    out = []
    for i, d in enumerate(layers):
        own = set(srcs[i])
        held = sum(size[j] for j in range(-1, i) if j not in own and last_use.get(j, -1) > i)
        out.append(replace(d, held=held * bytes_per_element))
    return out
