"""Super-resolution search space: DLSR-style two-level (cell and network) search (the ``sr`` task).

After Huang et al., "DLSR: lightweight super-resolution with differentiable NAS". The model maps an
LR tile [N, C, H, W] (values in [0, 1], C = 1 for ``y``, 3 for ``rgb``) to [N, C, H·s, W·s]; on the
board H = W = ``data.tile_in`` (the tile and its overlap on both sides). Every layer keeps H × W
(stride 1, TensorFlow SAME padding, symmetric, so the exporters fold it into the convolution):

* head: conv 3×3, C → ``width`` channels, ReLU (``head``). The width is one global choice point
  ``width``: every body tensor has it (so residual adds and fusions need no projection).
* body: ``max_blocks`` blocks numbered 1…max_blocks; ``blocks`` (1…max_blocks) says how many run.
  Blocks after ``blocks`` do not run, and their choices (and edges) change nothing.
  - cell level: block b is a chain of ``layers_per_block`` searched ops ``b{b}.op{l}`` (l from 0)
    among ``conv1x1, conv3x3, conv5x5`` (conv + ReLU), ``sep3x3, sep5x5`` (depthwise k×k without
    activation ``….dw``, then pointwise 1×1 + ReLU ``….pw``), ``dil3x3`` (3×3, dilation 2, + ReLU)
    and ``skip`` (identity, no layer). The block adds its input to the chain's output (a local
    residual, ``b{b}.add``, no activation). A block whose every op is ``skip`` is the identity: no
    layer at all (no add: its output *is* its input, not twice it).
  - network level: outputs are numbered 0 (the head) and b (block b). The input of block b is the
    previous output b-1, plus, for every earlier output j ≤ b-2, the binary choice ``b{b}.in{j}``
    (``no``/``yes``) to fuse it in: an elementwise add of all of them (one ``add`` LayerDesc
    ``b{b}.fuse`` with n inputs; none when no edge is on). The edges change the graph and its cost:
    a fused output stays live (``held``: peak RAM) until its fuse, and the add has n-1 MACs per
    element. An identity block's output is its input tensor, so later fusions can read one tensor
    under two output numbers (an add may list an input twice).
* tail: conv 3×3, width → C·s² (``tail``, no activation), plus a global residual, the bicubic
  upscaling of the input computed *inside* the network as a fixed conv (``bicubic``: dense but
  block-diagonal, each input channel → its s² phase channels, 5×5, zero SAME padding, no bias; its weights are
  fixed, never trained: ``requires_grad=False``), the two added (``tail.add``) and depth-to-space
  (``shuffle``, PixelShuffle(s)). So the graph ends conv + conv + add + DEPTH_TO_SPACE, no TRANSPOSE.

The bicubic residual. ``F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False)``
(Keys' cubic; here A = -0.5, MATLAB's and Pillow's, which ``edgenas.datasets.sisr.bicubic_up`` uses for the
bicubic baseline, where PyTorch's plain bicubic has -0.75) gives output row s·i + r from the source coordinate
u = (s·i + r + ½)/s - ½ = i + δ_r, δ_r = (r + ½)/s - ½, with taps at ⌊u⌋-1 … ⌊u⌋+2 and weights
W(t+1), W(t), W(1-t), W(2-t), t = u - ⌊u⌋. For s = 2: δ = -¼, ¼ (taps i-2…i+1 and i-1…i+2); s = 3:
δ = -⅓, 0, ⅓ (δ = 0 is the identity tap); s = 4: δ = -⅜, -⅛, ⅛, ⅜. So every phase reads offsets
-2…+2: a 5-tap filter per phase and axis, and the 2-D weight of phase (r, q) is the outer product
of its row and column filters. PixelShuffle(s) reads channel c·s² + r·s + q into output pixel
(s·i + r, s·j + q) of channel c (CRD), which is exactly the output order of a block-diagonal conv
with s² outputs per input channel. ``interpolate`` clamps indices at the border (replicate); the zero-padded
conv agrees with it everywhere except within 2 LR pixels of the border, which lie in the tile's
overlap (see :meth:`SRDLSRSpace.receptive_radius`).

Data choice points: ``data.colour`` (``space.colours``) and ``data.tile`` (``space.tiles``, in LR
pixels); both sampled. The scale, the overlap and the frame are fixed per run (``space.scale``,
``space.overlap``, ``space.frame``). The tile changes no weight: it sets the board input shape
(so one call's RAM) and the number of calls per frame (``SRConfig.tiles_per_frame``).

The supernet shares weights: one weight per (block, layer, op) at the maximum width (each op its
own weights), widths as channel masks, the ops of a layer mixed by their gates (``_mix``: a DARTS
mixture under relaxed gates, the chosen op under hard ones), the block count as a gate-weighted sum
of the block outputs (the tail reads Σ_n g_n · out_n), every edge as its gate-weighted term, and a
block as chain + (1 - π)·input with π = Π_l g(skip) (π = 1 is the identity). One head and one tail
per colour option; the tile is ignored. No BatchNorm anywhere (SR nets rarely use it): every conv
has a bias.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgenas.errors import ConfigError
from edgenas.layers import GraphNet
from edgenas.spaces.base import (SPACES, ChoicePoint, Gates, LayerCostFn, Probs, SearchSpace, option_labels,
                                 width_masks)
from edgenas.spaces.kws_dscnn import _mix
from edgenas.spec import ArchSpec, LayerDesc, with_liveness
from edgenas.tasks.sr_config import COLOURS, SCALES, SRConfig

# op → (kernel, dilation, separable); skip is the identity (no layer)
OPS: dict[str, tuple[int, int, bool] | None] = {
    "conv1x1": (1, 1, False), "conv3x3": (3, 1, False), "conv5x5": (5, 1, False),
    "sep3x3": (3, 1, True), "sep5x5": (5, 1, True), "dil3x3": (3, 2, False), "skip": None,
}
EDGES = ("no", "yes")
MAX_BLOCKS = 5  # the exact expected cost enumerates the network-level graphs: 2^(b(b-1)/2) edge sets
BICUBIC_TAPS = 5  # offsets -2…+2 for every scale in SCALES
BICUBIC_A = -0.5  # MATLAB imresize's (and Pillow's) cubic coefficient: the bicubic baseline of edgenas.datasets.sisr


@dataclass(frozen=True)
class SRDLSRSpaceConfig:
    """The options of the space (``--set space.widths=16,32``); lists are comma-separated labels."""

    scale: int = 2  # fixed per run
    colours: str = "y,rgb"  # data choice data.colour
    tiles: str = "32,64,128"  # data choice data.tile (LR pixels, without the overlap)
    overlap: int = 8  # LR pixels of context on every side of a tile (≥ receptive_radius for seamless tiles)
    frame: str = "320x240"  # the LR frame the tiles cover, WxH
    max_blocks: int = 4
    layers_per_block: int = 2
    widths: str = "16,24,32"
    ops: str = "conv1x1,conv3x3,conv5x5,sep3x3,sep5x5,dil3x3,skip"


def _frame(value: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in str(value).lower().split("x"))
    except ValueError:
        raise ConfigError(f"space.frame must be WxH (LR pixels), got {value!r}") from None
    if w <= 0 or h <= 0:
        raise ConfigError(f"space.frame must be positive, got {value!r}")
    return w, h


# ---- the fixed bicubic residual -------------------------------------------------------------

def _cubic_weights(t: float) -> list[float]:
    """Keys' cubic convolution weights of taps ⌊u⌋-1 … ⌊u⌋+2 for fraction t (PyTorch's formulas)."""
    a = BICUBIC_A

    def near(x: float) -> float:  # |x| ≤ 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: float) -> float:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def bicubic_taps(scale: int) -> np.ndarray:
    """[scale, 5]: row r is the 1-D filter of output phase r over input offsets -2…+2
    (:func:`edgenas.datasets.sisr.bicubic_up`, the bicubic baseline, away from the border)."""
    taps = np.zeros((scale, BICUBIC_TAPS))
    for r in range(scale):
        u = (r + 0.5) / scale - 0.5  # source coordinate of output s·i + r, relative to i
        f = math.floor(u)
        for k, w in enumerate(_cubic_weights(u - f)):
            off = f - 1 + k
            taps[r, off + BICUBIC_TAPS // 2] += w
    return taps


def bicubic_weight(channels: int, scale: int) -> torch.Tensor:
    """[C·s², C, 5, 5]: the weight of the dense conv whose output, PixelShuffle(s)-ed, is the
    bicubic upscaling (channel c·s² + r·s + q holds phase (r, q) of channel c: PyTorch's CRD). It
    is block-diagonal (output channel c·s² + … reads input channel c only): a dense conv rather
    than groups = C, so the TFLite route can permute its output channels for DEPTH_TO_SPACE as it
    permutes the tail's (for Y, C = 1, the two are the same conv)."""
    taps = bicubic_taps(scale)
    phase = np.einsum("ry,qx->rqyx", taps, taps).reshape(scale * scale, BICUBIC_TAPS, BICUBIC_TAPS)
    w = np.zeros((channels * scale * scale, channels, BICUBIC_TAPS, BICUBIC_TAPS))
    for c in range(channels):
        w[c * scale * scale:(c + 1) * scale * scale, c] = phase
    return torch.from_numpy(w).float()


# ---- layer descriptors ------------------------------------------------------------------------

def _desc(data: SRConfig, **kw: Any) -> LayerDesc:
    """Every LayerDesc of this space is made here: each runs once per tile, ``calls`` = the tiles
    per frame, so per-frame costs (latency, Mult-Adds) multiply and per-tile ones (RAM) do not."""
    return LayerDesc(calls=data.tiles_per_frame, **kw)


def _conv(data: SRConfig, name: str, c_in: int, c_out: int, k: int, src: str, *, dilation: int = 1, groups: int = 1,
          activation: str | None = "relu", bias: bool = True) -> LayerDesc:
    t = data.tile_in
    p = (k - 1) * dilation // 2
    return _desc(data, name=name, kind="conv2d", in_shape=(c_in, t, t), out_shape=(c_out, t, t), kernel=(k, k),
                 pad=(p, p, p, p), groups=groups, activation=activation, bias=bias, dilation=(dilation, dilation),
                 inputs=(src,))


def _add(data: SRConfig, name: str, channels: int, inputs: Sequence[str]) -> LayerDesc:
    t = data.tile_in
    return _desc(data, name=name, kind="add", in_shape=(channels, t, t), out_shape=(channels, t, t), bias=False,
                 inputs=tuple(inputs))


def _head_desc(data: SRConfig, width: int) -> LayerDesc:
    return _conv(data, "head", data.channels, width, 3, "")


def _op_descs(data: SRConfig, width: int, b: int, l: int, op: str, src: str) -> list[LayerDesc]:
    """The layers of op ``op`` at block b, layer l, reading layer ``src`` (none for skip)."""
    spec = OPS[op]
    if spec is None:
        return []
    k, d, sep = spec
    name = f"b{b}.op{l}"
    if not sep:
        return [_conv(data, name, width, width, k, src, dilation=d)]
    return [_conv(data, f"{name}.dw", width, width, k, src, dilation=d, groups=width, activation=None),
            _conv(data, f"{name}.pw", width, width, 1, f"{name}.dw")]


def _tail_descs(data: SRConfig, width: int, src: str) -> list[LayerDesc]:
    c, s, t = data.channels, data.scale, data.tile_in
    cs = c * s * s
    return [
        _conv(data, "tail", width, cs, 3, src, activation=None),
        _conv(data, "bicubic", c, cs, BICUBIC_TAPS, "", activation=None, bias=False),
        _add(data, "tail.add", cs, ("tail", "bicubic")),
        _desc(data, name="shuffle", kind="pixel_shuffle", in_shape=(cs, t, t), out_shape=(c, t * s, t * s),
              stride=(s, s), bias=False, inputs=("tail.add",)),
    ]


def _shape_of(spec: ArchSpec) -> tuple[int, int]:
    """(max_blocks, layers_per_block) of a spec, from its choices alone."""
    ch = spec.choices
    n_blocks = sum(1 for k in ch if k.endswith(".op0"))
    per_block = sum(1 for k in ch if k.startswith("b1.op"))
    return n_blocks, per_block


# ---- network-level structures (for the exact expectation) -------------------------------------

@dataclass
class _Structures:
    """Every network-level graph: the block count, the identity flags of the running blocks but the
    last (an identity block aliases its input) and the edges of the running blocks. ``index`` [S, V]
    picks each structure's factors from the probability vector of :meth:`SRDLSRSpace._factor_vector`;
    ``ext`` and ``fuse`` list (flat row, structure) pairs of the per-block distributions."""

    index: torch.Tensor
    ext_rows: torch.Tensor
    ext_cols: torch.Tensor
    fuse_rows: torch.Tensor
    fuse_cols: torch.Tensor


def _block_live(nb: int, ident: Mapping[int, bool], edge_on: Mapping[tuple[int, int], bool]
                ) -> dict[int, tuple[int, int | None, int]]:
    """Per running block b: (k_ext, n_fuse or None, k_fuse) as :func:`with_liveness` sees it.

    k_ext: the distinct body tensors produced before block b that a later block's fuse still reads,
    other than block b's input (the block input itself is held by every layer of the block but the
    ones reading it: +1 there). k_fuse: those the fuse of block b holds (not among its inputs)."""
    names = ["head"]
    info: dict[int, tuple[int, int | None, int]] = {}
    block_in: dict[int, str] = {}
    fuse_inputs: dict[int, list[str]] = {}
    for b in range(1, nb + 1):
        yes = [j for j in range(b - 1) if edge_on[(b, j)]]
        if yes:
            fuse_inputs[b] = [names[b - 1]] + [names[j] for j in yes]
            block_in[b] = f"b{b}.fuse"
        else:
            block_in[b] = names[b - 1]
        names.append(block_in[b] if ident.get(b, False) else f"b{b}.add")
    for b in range(1, nb + 1):
        later = {names[j] for bb in range(b + 1, nb + 1) for j in range(bb - 1) if edge_on[(bb, j)] and j <= b - 1}
        k_ext = len(later - {block_in[b]})
        if b in fuse_inputs:
            info[b] = (k_ext, len(fuse_inputs[b]), len(later - set(fuse_inputs[b])))
        else:
            info[b] = (k_ext, None, 0)
    return info


@SPACES.register("sr-dlsr")
class SRDLSRSpace(SearchSpace):
    name = "sr-dlsr"
    config_class = SRDLSRSpaceConfig  # the dataclass of its ``space.*`` options
    version = 1
    task = "sr"

    def __init__(self, num_classes: int = 0, config: SRDLSRSpaceConfig | None = None) -> None:
        cfg = config or SRDLSRSpaceConfig()
        if not isinstance(cfg, SRDLSRSpaceConfig):
            raise ConfigError(f"space sr-dlsr takes an SRDLSRSpaceConfig, not {type(cfg).__name__}")
        if int(cfg.scale) not in SCALES:
            raise ConfigError(f"space.scale must be one of {', '.join(map(str, SCALES))}, got {cfg.scale}")
        if not 1 <= int(cfg.max_blocks) <= MAX_BLOCKS:
            raise ConfigError(f"space.max_blocks must be 1…{MAX_BLOCKS} (the exact expected cost enumerates every "
                              f"network-level graph), got {cfg.max_blocks}")
        if int(cfg.layers_per_block) < 1:
            raise ConfigError(f"space.layers_per_block must be ≥ 1, got {cfg.layers_per_block}")
        if int(cfg.overlap) < 0:
            raise ConfigError(f"space.overlap must be ≥ 0, got {cfg.overlap}")
        self.cfg = cfg
        self.scale, self.overlap = int(cfg.scale), int(cfg.overlap)
        self.frame_w, self.frame_h = _frame(cfg.frame)
        self.n_blocks, self.per_block = int(cfg.max_blocks), int(cfg.layers_per_block)
        self.colours = option_labels("colours", cfg.colours, COLOURS)
        tiles = option_labels("tiles", cfg.tiles)
        if min(int(t) for t in tiles) < 8:
            raise ConfigError(f"space.tiles must be ≥ 8 LR pixels, got {cfg.tiles!r}")
        self.widths = [int(w) for w in option_labels("widths", cfg.widths)]
        self.ops = option_labels("ops", cfg.ops, tuple(OPS))
        data_points = [ChoicePoint("data.colour", self.colours, "data", sampled=True),
                       ChoicePoint("data.tile", tiles, "data", sampled=True)]
        arch_points = [ChoicePoint("width", tuple(str(w) for w in self.widths)),
                       ChoicePoint("blocks", tuple(str(n) for n in range(1, self.n_blocks + 1)))]
        for b in range(1, self.n_blocks + 1):
            arch_points += [ChoicePoint(f"b{b}.op{l}", self.ops) for l in range(self.per_block)]
            arch_points += [ChoicePoint(f"b{b}.in{j}", EDGES) for j in range(b - 1)]
        super().__init__(0, data_points, arch_points)  # SR has no classes: num_classes is always 0
        self._structures = self._enumerate_structures()

    # ---- data ------------------------------------------------------------------------------
    def data_config(self, labels: Mapping[str, str]) -> SRConfig:
        return SRConfig(scale=self.scale, colour=labels["data.colour"], tile=int(labels["data.tile"]),
                        overlap=self.overlap, frame_w=self.frame_w, frame_h=self.frame_h)

    def data_labels(self, cfg: SRConfig) -> dict[str, str]:
        if not isinstance(cfg, SRConfig):
            raise ConfigError(f"space sr-dlsr takes SR data configurations, not {type(cfg).__name__}")
        mine = (self.scale, self.overlap, self.frame_w, self.frame_h)
        if (cfg.scale, cfg.overlap, cfg.frame_w, cfg.frame_h) != mine:
            raise ConfigError(f"data configuration {cfg.key()} is not of this space (x{self.scale}, overlap "
                              f"{self.overlap}, frame {self.frame_w}x{self.frame_h})")
        return {"data.colour": cfg.colour, "data.tile": str(cfg.tile)}

    # ---- layer descriptors -----------------------------------------------------------------
    def layers(self, spec: ArchSpec) -> list[LayerDesc]:
        """The graph of ``spec`` in execution order (``held`` set). It reads the data configuration
        and the choices only, so the module-level ``build(spec)`` works from the default space."""
        data, ch = spec.data, spec.choices
        _, per_block = _shape_of(spec)
        w, nb = int(ch["width"]), int(ch["blocks"])
        out = [_head_desc(data, w)]
        names = ["head"]  # the layer holding output j (an identity block repeats its input's)
        for b in range(1, nb + 1):
            yes = [j for j in range(b - 1) if ch[f"b{b}.in{j}"] == "yes"]
            block_in = names[b - 1]
            if yes:
                out.append(_add(data, f"b{b}.fuse", w, [block_in] + [names[j] for j in yes]))
                block_in = out[-1].name
            cur = block_in
            for l in range(per_block):
                descs = _op_descs(data, w, b, l, ch[f"b{b}.op{l}"], cur)
                if descs:
                    out += descs
                    cur = descs[-1].name
            if cur != block_in:
                out.append(_add(data, f"b{b}.add", w, (cur, block_in)))
                cur = out[-1].name
            names.append(cur)
        out += _tail_descs(data, w, names[nb])
        return with_liveness(out)

    def receptive_radius(self, spec: ArchSpec) -> int:
        """How far (LR pixels) an output pixel's inputs reach: head and tail 1 each, every op its
        (k-1)·d/2, the bicubic residual 2; fusions add nothing (an earlier output has reached less
        far than the previous one). A tile overlap ≥ this gives seamless tiles."""
        ch = spec.choices
        body = 0
        for b in range(1, int(ch["blocks"]) + 1):
            for l in range(_shape_of(spec)[1]):
                o = OPS[ch[f"b{b}.op{l}"]]
                if o is not None:
                    body += (o[0] - 1) * o[1] // 2
        return max(2 + body, BICUBIC_TAPS // 2)

    def all_layers(self) -> Iterator[LayerDesc]:
        seen: set[str] = set()
        for data, w in itertools.product(self.data_configs(), self.widths):
            descs = [_head_desc(data, w)]
            for op in self.ops:
                descs += _op_descs(data, w, 1, 0, op, "head")
            descs.append(_add(data, "b1.add", w, ("b1.op0", "head")))
            descs += [_add(data, f"b{n}.fuse", w, ["head"] * n) for n in range(2, self.n_blocks + 1)]
            descs += _tail_descs(data, w, "head")
            for d in descs:
                if d.key() not in seen:
                    seen.add(d.key())
                    yield d

    def cheapest_candidates(self) -> Iterable[ArchSpec]:
        """One block, every op ``skip`` (so no body layer), every edge ``no``, for every data option
        and width. Every spec of a data option and width holds these layers (head, tail, bicubic,
        add, shuffle, with the same ``held``) and maybe more, so one of these costs no more than any
        spec for every sum or max of non-negative layer costs; every width is listed because a
        measured latency need not grow with the channels (a monotone cost picks the smallest)."""
        fill = {p.name: ("skip" if "skip" in self.ops else self.ops[0]) if ".op" in p.name else "no"
                for p in self.arch_points if p.name.startswith("b")}
        # without a skip op block 1 cannot vanish: then every op combination of its layers
        first = [[fill[f"b1.op{l}"]] if "skip" in self.ops else list(self.ops) for l in range(self.per_block)]
        for d, w, ops in itertools.product(self.data_configs(), self.widths, itertools.product(*first)):
            block1 = {f"b1.op{l}": op for l, op in enumerate(ops)}
            yield self.spec({**fill, **block1, **self.data_labels(d), "width": str(w), "blocks": "1"})

    def describe(self, spec: ArchSpec) -> str:
        d, ch = spec.data, spec.choices
        parts = [f"x{d.scale} {d.colour} tile {d.tile}+2·{d.overlap} ({d.tiles_per_frame}/frame)", f"w{ch['width']}"]
        for b in range(1, int(ch["blocks"]) + 1):
            ops = [ch[f"b{b}.op{l}"] for l in range(_shape_of(spec)[1])]
            fused = [str(j) for j in range(b - 1) if ch[f"b{b}.in{j}"] == "yes"]
            head = f"B{b}" + (f"[+{','.join(fused)}]" if fused else "")
            parts.append(f"{head} " + ("id" if all(o == "skip" for o in ops) else ",".join(ops)))
        return " | ".join(parts)

    # ---- exact expectation -----------------------------------------------------------------
    def slot_names(self) -> list[str]:
        """The layer each slot of :meth:`expected_layer_costs` prices (0 where a spec lacks it)."""
        names = ["head"]
        for b in range(1, self.n_blocks + 1):
            if b >= 2:
                names.append(f"b{b}.fuse")
            for l in range(self.per_block):
                names += [f"b{b}.op{l}", f"b{b}.op{l}.dw", f"b{b}.op{l}.pw"]
            names.append(f"b{b}.add")
        return names + ["tail", "bicubic", "tail.add", "shuffle"]

    def _edges(self) -> list[tuple[int, int]]:
        return [(b, j) for b in range(2, self.n_blocks + 1) for j in range(b - 1)]

    def _enumerate_structures(self) -> _Structures:
        B = self.n_blocks
        edges = self._edges()
        e_at = {e: i for i, e in enumerate(edges)}
        one = B + 2 * B + 2 * len(edges)  # index of the constant 1 in the factor vector
        K = B + 2
        rows: list[list[int]] = []
        ext: list[tuple[int, int]] = []
        fuse: list[tuple[int, int]] = []
        for nb in range(1, B + 1):
            flag_blocks = list(range(1, nb))  # the last running block's identity aliases nothing read later
            my_edges = [e for e in edges if e[0] <= nb]
            for flags in itertools.product((True, False), repeat=len(flag_blocks)):
                ident = dict(zip(flag_blocks, flags))
                for on in itertools.product((False, True), repeat=len(my_edges)):
                    edge_on = dict(zip(my_edges, on))
                    s = len(rows)
                    row = [nb - 1]
                    row += [B + 2 * (b - 1) + (0 if ident[b] else 1) for b in flag_blocks]
                    row += [3 * B + 2 * e_at[e] + int(v) for e, v in edge_on.items()]
                    rows.append(row)
                    for b, (k_ext, n, k_fuse) in _block_live(nb, ident, edge_on).items():
                        ext.append(((b - 1) * K + k_ext, s))
                        if n is not None:
                            fuse.append((((b - 1) * (B + 1) + n) * K + k_fuse, s))
        width = max(len(r) for r in rows)
        index = torch.tensor([r + [one] * (width - len(r)) for r in rows], dtype=torch.long)
        er, ec = zip(*ext)
        fr, fc = zip(*fuse) if fuse else ((), ())
        return _Structures(index, torch.tensor(er, dtype=torch.long), torch.tensor(ec, dtype=torch.long),
                           torch.tensor(fr, dtype=torch.long), torch.tensor(fc, dtype=torch.long))

    def _skip_prob(self, probs: Probs, b: int, l: int) -> torch.Tensor:
        p = probs[f"b{b}.op{l}"]
        return p[self.ops.index("skip")] if "skip" in self.ops else p.new_zeros(())

    def _factor_vector(self, probs: Probs) -> torch.Tensor:
        """[p(blocks) | per block (P(identity), P(not)) | per edge (P(no), P(yes)) | 1]."""
        parts = [probs["blocks"]]
        for b in range(1, self.n_blocks + 1):
            pi = torch.stack([self._skip_prob(probs, b, l) for l in range(self.per_block)]).prod()
            parts.append(torch.stack([pi, 1 - pi]))
        parts += [probs[f"b{b}.in{j}"] for b, j in self._edges()]
        parts.append(probs["blocks"].new_ones(1))
        return torch.cat(parts)

    def network_distributions(self, probs: Probs) -> tuple[torch.Tensor, torch.Tensor]:
        """``ext`` [B, K]: P(block b runs and k_ext = k); ``fuse`` [B, B+1, K]: P(block b runs, fuses
        n inputs and its fuse holds k other body tensors) — exact, by enumeration of the network
        level (every structure's probability is the product of its independent factors)."""
        st, B, K = self._structures, self.n_blocks, self.n_blocks + 2
        vec = self._factor_vector(probs)
        p_s = vec[st.index].prod(dim=1)
        ext = vec.new_zeros(B * K).index_add(0, st.ext_rows, p_s[st.ext_cols]).reshape(B, K)
        fuse = vec.new_zeros(B * (B + 1) * K)
        if len(st.fuse_rows):
            fuse = fuse.index_add(0, st.fuse_rows, p_s[st.fuse_cols])
        return ext, fuse.reshape(B, B + 1, K)

    def expected_layer_costs(self, probs: Probs, layer_cost: LayerCostFn) -> torch.Tensor:
        """Exact expectation of every slot's cost (:meth:`slot_names`), differentiable in ``probs``.

        A body layer's descriptor is fixed by the data option, the width, its op and its ``held``:
        the network input (live until the bicubic conv) plus h body tensors of width × tile². h is
        k_ext for a layer that reads its block's input and k_ext + 1 for the others (the block input
        waits for the add), where k_ext (the earlier outputs a later fuse still reads) depends on the
        network level only; :meth:`network_distributions` gives its exact distribution jointly with
        "block b runs", independent of block b's own ops. A layer is the first of its block to read
        the block input when every earlier op of the block is ``skip``; the add exists when not all
        are. The fuse is priced from the joint distribution of (inputs, held)."""
        t = self.cost_tables(layer_cost)
        p_d = self.data_probs(probs)
        p_w = probs["width"]
        ext, fuse = self.network_distributions(probs)
        zero = ext.new_zeros(ext.shape[0], 1)
        ext_shift = torch.cat([zero, ext[:, :-1]], dim=1)  # the distribution of k_ext + 1

        def dw(table: torch.Tensor) -> torch.Tensor:
            return torch.einsum("dw...,d,w->...", table, p_d, p_w)

        slots = [dw(t["head"])]
        op_conv, op_dw, op_pw, add = dw(t["conv"]), dw(t["dw"]), dw(t["pw"]), dw(t["add"])  # [O, K], [K]
        fuse_t = dw(t["fuse"])  # [N, K]
        for b in range(1, self.n_blocks + 1):
            if b >= 2:
                slots.append((fuse[b - 1] * fuse_t).sum())
            first = torch.ones(())
            for l in range(self.per_block):
                p_op = probs[f"b{b}.op{l}"]
                q = first * ext[b - 1] + (1 - first) * ext_shift[b - 1]  # over h
                slots.append(torch.einsum("oh,o,h->", op_conv, p_op, q))
                slots.append(torch.einsum("oh,o,h->", op_dw, p_op, q))
                slots.append(torch.einsum("oh,o,h->", op_pw, p_op, ext_shift[b - 1]))
                first = first * self._skip_prob(probs, b, l)
            slots.append((1 - first) * (add * ext[b - 1]).sum())
        slots += [dw(t["tail"]), torch.einsum("d,d->", t["bicubic"], p_d), torch.einsum("d,d->", t["tail.add"], p_d),
                  torch.einsum("d,d->", t["shuffle"], p_d)]
        return torch.stack(slots)

    def build_cost_tables(self, layer_cost: LayerCostFn) -> dict[str, torch.Tensor]:
        datas, widths, B = self.data_configs(), self.widths, self.n_blocks
        D, W, O, K = len(datas), len(widths), len(self.ops), B + 2
        t = {"head": torch.zeros(D, W), "conv": torch.zeros(D, W, O, K), "dw": torch.zeros(D, W, O, K),
             "pw": torch.zeros(D, W, O, K), "add": torch.zeros(D, W, K), "fuse": torch.zeros(D, W, B + 1, K),
             "tail": torch.zeros(D, W), "bicubic": torch.zeros(D), "tail.add": torch.zeros(D),
             "shuffle": torch.zeros(D)}
        for (d, data), (w, width) in itertools.product(enumerate(datas), enumerate(widths)):
            x_bytes, body = data.channels * data.tile_in ** 2, width * data.tile_in ** 2

            def held(desc: LayerDesc, h: int) -> float:
                return layer_cost(replace(desc, held=x_bytes + body * h))

            t["head"][d, w] = layer_cost(_head_desc(data, width))
            for (o, op), h in itertools.product(enumerate(self.ops), range(K)):
                for desc in _op_descs(data, width, 1, 0, op, "b1.in"):
                    part = "conv" if not desc.name.endswith((".dw", ".pw")) else desc.name[-2:]
                    t[part][d, w, o, h] = held(desc, h)
            for h in range(K):
                t["add"][d, w, h] = held(_add(data, "b1.add", width, ("b1.op0", "b1.in")), h)
                for n in range(2, B + 1):
                    t["fuse"][d, w, n, h] = held(_add(data, f"b{n}.fuse", width, ["head"] * n), h)
            tail, bicubic, tail_add, shuffle = with_liveness([_head_desc(data, width), *_tail_descs(data, width,
                                                                                                   "head")])[1:]
            t["tail"][d, w] = layer_cost(tail)
            if w == 0:  # the rest do not depend on the width
                t["bicubic"][d], t["tail.add"][d], t["shuffle"][d] = (layer_cost(x) for x in (bicubic, tail_add, shuffle))
        return t

    # ---- networks --------------------------------------------------------------------------
    def build(self, spec: ArchSpec) -> "SRNet":
        return SRNet(self.layers(spec), spec.data)

    def supernet(self) -> "SRDLSRSupernet":
        return SRDLSRSupernet(self)


def _layer_module(desc: LayerDesc) -> nn.Module:
    if desc.kind == "conv2d":
        pt, pb, pl, pr = desc.pad
        if (pt, pl) != (pb, pr):
            raise ValueError(f"layer {desc.name}: asymmetric padding {desc.pad}")
        mods: list[nn.Module] = [nn.Conv2d(desc.in_shape[0], desc.out_shape[0], desc.kernel, desc.stride,
                                           padding=(pt, pl), dilation=desc.dilation, groups=desc.groups,
                                           bias=desc.bias)]
        if desc.activation == "relu":
            mods.append(nn.ReLU())
        elif desc.activation is not None:
            raise ValueError(f"layer {desc.name}: unsupported activation {desc.activation!r}")
        return nn.Sequential(*mods)
    if desc.kind == "pixel_shuffle":
        return nn.PixelShuffle(desc.stride[0])
    raise ValueError(f"layer {desc.name}: unknown layer kind {desc.kind!r}")


class SRNet(GraphNet):
    """The plain network of one spec: a :class:`edgenas.layers.GraphNet` of its layer descriptors
    with biased convs and no BatchNorm. The ``bicubic`` conv carries the fixed bicubic weights and
    does not train (``requires_grad=False``; a plain ``nn.Conv2d`` so that ``torch.fx`` and the Keras
    rebuild see an ordinary layer). Traces with ``torch.fx``."""

    def __init__(self, layers: Sequence[LayerDesc], data: SRConfig) -> None:
        super().__init__(layers, _layer_module)
        fixed = self.layers[self.names.index("bicubic")][0]
        with torch.no_grad():
            fixed.weight.copy_(bicubic_weight(data.channels, data.scale))
        fixed.weight.requires_grad_(False)


class SRDLSRSupernet(nn.Module):
    """All specs of an :class:`SRDLSRSpace` in one network (weights shared at the maximum width).

    Per colour option one head and one tail conv (and its fixed bicubic weight, a buffer); per
    (block, layer, op) one conv (a depthwise and a pointwise one for ``sep``) at the maximum width;
    the width as channel masks after every conv. ``forward(x, data_index, gates, hard)`` as the other
    supernets: one-hot straight-through gates when ``hard`` (only the chosen ops, edges and blocks
    run), probability vectors otherwise (a mixture of every option)."""

    def __init__(self, space: SRDLSRSpace) -> None:
        super().__init__()
        self.space = space
        s = space.scale
        cmax = self.cmax = max(space.widths)
        self.datas = space.data_configs()
        chans = [1 if c == "y" else 3 for c in space.colours]
        self.heads = nn.ModuleList(nn.Conv2d(c, cmax, 3, padding=1) for c in chans)
        self.tails = nn.ModuleList(nn.Conv2d(cmax, c * s * s, 3, padding=1) for c in chans)
        for i, c in enumerate(chans):
            self.register_buffer(f"bicubic{i}", bicubic_weight(c, s))
        self.ops = nn.ModuleList()
        for _ in range(space.n_blocks):
            for _ in range(space.per_block):
                per = nn.ModuleDict()
                for op in space.ops:
                    o = OPS[op]
                    if o is None:
                        continue
                    k, d, sep = o
                    p = (k - 1) * d // 2
                    if sep:
                        per[op] = nn.ModuleDict({"dw": nn.Conv2d(cmax, cmax, k, padding=p, dilation=d, groups=cmax),
                                                 "pw": nn.Conv2d(cmax, cmax, 1)})
                    else:
                        per[op] = nn.Conv2d(cmax, cmax, k, padding=p, dilation=d)
                self.ops.append(per)
        self.register_buffer("width_masks", width_masks(space.widths, cmax))

    def _slot(self, b: int, l: int) -> nn.ModuleDict:
        return self.ops[(b - 1) * self.space.per_block + l]  # type: ignore[return-value]

    def _mask(self, gate: torch.Tensor) -> torch.Tensor:
        return (gate[:, None] * self.width_masks).sum(0)[None, :, None, None]

    def forward(self, x: torch.Tensor, data_index: int, gates: Gates, hard: bool) -> torch.Tensor:
        space = self.space
        data = self.datas[data_index]
        ci = space.colours.index(data.colour)
        if x.dim() != 4 or x.shape[1] != data.channels:
            raise ValueError(f"input {tuple(x.shape)} does not have the {data.channels} channels of data option "
                             f"{data.key()}")
        labels = space.data_labels(data)
        data_gate = torch.ones((), device=x.device)
        for p in space.data_points:  # one-hot: multiplies by 1, gives the data logits a gradient path
            data_gate = data_gate * gates[p.name][p.index(labels[p.name])]
        mask = self._mask(gates["width"])
        outs = [F.relu(self.heads[ci](x)) * mask * data_gate]
        g_blocks = gates["blocks"]
        n_run = int(torch.argmax(g_blocks.detach())) + 1 if hard else space.n_blocks
        skip = space.ops.index("skip") if "skip" in space.ops else None
        yes = EDGES.index("yes")
        for b in range(1, n_run + 1):
            inp = outs[b - 1]
            for j in range(b - 1):
                g = gates[f"b{b}.in{j}"]
                if not hard or int(torch.argmax(g.detach())) == yes:
                    inp = inp + g[yes] * outs[j]
            h, pi = inp, torch.ones((), device=x.device)
            for l in range(space.per_block):
                g = gates[f"b{b}.op{l}"]
                h = _mix(g, hard, [self._op_fn(b, l, op, h, mask) for op in space.ops])
                pi = pi * (g[skip] if skip is not None else 0.0)
            outs.append(h + (1 - pi) * inp)  # all skip (π = 1): the identity
        if hard:
            body = g_blocks[n_run - 1] * outs[n_run]
        else:
            body = sum(g_blocks[n - 1] * outs[n] for n in range(1, space.n_blocks + 1))
        y = self.tails[ci](body) + F.conv2d(x, getattr(self, f"bicubic{ci}"), padding=BICUBIC_TAPS // 2)
        return F.pixel_shuffle(y, space.scale)

    def _op_fn(self, b: int, l: int, op: str, h: torch.Tensor, mask: torch.Tensor) -> Callable[[], torch.Tensor]:
        o = OPS[op]
        if o is None:
            return lambda: h
        mod = self._slot(b, l)[op]

        def run() -> torch.Tensor:
            if o[2]:
                y = mod["dw"](h) * mask  # the bias of a masked-off channel must not reach the pointwise conv
                return F.relu(mod["pw"](y)) * mask
            return F.relu(mod(h)) * mask

        return run

    @torch.no_grad()
    def extract(self, spec: ArchSpec) -> SRNet:
        """The plain network of ``spec`` (``space.build``) carrying this supernet's weights: it computes
        what the supernet computes at the one-hot selection of ``spec``."""
        space = self.space
        net = space.build(spec)
        ci = space.colours.index(spec.data.colour)

        def copy(dst: nn.Conv2d, src: nn.Conv2d) -> None:
            o, i = dst.weight.shape[:2]
            dst.weight.copy_(src.weight[:o, :i])
            if dst.bias is not None:
                dst.bias.copy_(src.bias[:o])

        for desc, mod in zip(net.descs, net.layers):
            if desc.kind != "conv2d" or desc.name == "bicubic":
                continue
            conv = mod[0]
            if desc.name == "head":
                copy(conv, self.heads[ci])
            elif desc.name == "tail":
                copy(conv, self.tails[ci])
            else:
                block, layer, *part = desc.name.split(".")
                src = self._slot(int(block[1:]), int(layer[2:]))[spec.choices[f"{block}.{layer}"]]
                copy(conv, src[part[0]] if part else src)
        return net
