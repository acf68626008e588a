"""Time-series search space: residual temporal convolutional networks (PIT-style TCN).

Input: a case [N, dims, L, 1] — the ``dims`` dimensions of the series are channels, time is the
height axis (as kws-tcn's, so no TFLite TRANSPOSE), L = ``data.input_length``. Everything is a 1-D
convolution over time written as a Conv2d with a (k × 1) kernel:

* stem: conv2d (k × 1), stride s, ``dims`` → width channels, BatchNorm (folded) and ReLU; kernel,
  stride and width searched;
* ``n_blocks`` residual TCN blocks, each with a searched depth (``run`` / ``skip``: a skipped block
  is the identity, no layer), kernel, dilation, width and residual connection. A running block is
  a dilated conv (k × 1, dilation (d, 1), stride 1, ReLU) ``block{i}.conv``; with ``residual=yes``
  its output is added (``block{i}.add``, no activation: a linear residual as in MobileNetV2) to the
  block input — through a 1×1 projection ``block{i}.proj`` (no activation) when the widths differ;
* global average pooling → linear.

Every block conv has stride 1 (TFLite cannot take a stride together with a dilation), so the
temporal length after the stem is a function of the data option and the stem stride only.
Padding is TensorFlow's SAME over the dilated extent ((k-1)·d + 1; symmetric for odd kernels, so
the exporters fold it into the convolution) or, with ``causal=yes``, causal: (k-1)·d zeros before
the series and none after (an explicit PAD op), so the output at step t reads inputs ≤ t only. A
causal stem at stride s pads k-1 before: output j reads inputs ≤ j·s, and has ceil(L/s) steps, as
SAME. ``causal`` is always a choice point (one option by default, ``--set space.causal=no,yes`` to
search it), so every spec says which padding it has.

Data choice points: the resampled length (``data.length``: the factor labels ``1``, ``1/2``,
``1/4`` of :data:`edgenas.tasks.timeseries.FACTORS`), the normalisation (``data.norm``) and, for a
variable-length dataset only (``equal_length=False``), the padding policy (``data.padding``).
Several length factors can give the same input length for short series (the front end never goes
below 8 steps); the data configurations stay distinct by key.

The supernet shares weights at the maximum width and kernel: one stem for every data option (every
option has ``dims`` input channels; BatchNorm per data option and stem kernel), per block one conv
at the largest kernel (smaller kernels are centred slices, dilation applied at run time) and one
1×1 projection, widths as channel masks.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from edgenas.errors import ConfigError
from edgenas.layers import GraphNet
from edgenas.spaces.base import (SPACES, ChoicePoint, Gates, LayerCostFn, Probs, SearchSpace, option_labels,
                                 width_masks)
from edgenas.spaces.kws_dscnn import _mix, data_input
from edgenas.spec import ArchSpec, LayerDesc, same_pad, with_liveness
from edgenas.tasks.timeseries import FACTORS, NORMS, PADDINGS, TSConfig

DEPTHS = ("run", "skip")
RESIDUALS = ("yes", "no")
CAUSAL = ("no", "yes")


@dataclass(frozen=True)
class TSTCNSpaceConfig:
    """The option sets of the space; every set is configurable (``--set space.widths=8,16``)."""

    factors: tuple[str, ...] = ("1", "1/2", "1/4")  # resampled length: native, ½, ¼ (data choice)
    norms: tuple[str, ...] = ("series", "dataset", "none")  # data choice
    paddings: tuple[str, ...] = ("zero", "edge", "resample")  # data choice, variable-length datasets only
    stem_kernels: tuple[int, ...] = (3, 5, 7)
    stem_strides: tuple[int, ...] = (1, 2, 4)  # shape-changing, so always sampled
    widths: tuple[int, ...] = (8, 16, 24, 32)  # the stem's and every block's
    n_blocks: int = 4
    kernels: tuple[int, ...] = (3, 5, 9)
    dilations: tuple[int, ...] = (1, 2, 4, 8)
    residuals: tuple[str, ...] = ("yes", "no")
    causal: tuple[str, ...] = ("no",)  # "no,yes" searches it; "yes" makes every network causal


def _conv_pad(length: int, k: int, d: int, s: int, causal: bool) -> tuple[int, int, int]:
    """(before, after, output length) of a temporal conv: TensorFlow SAME over the dilated extent,
    or causal (everything before; stride s: output j reads inputs ≤ j·s, ceil(L/s) outputs)."""
    extent = (k - 1) * d + 1
    if causal:
        return extent - 1, 0, math.ceil(length / s)
    return same_pad(length, extent, s)


@SPACES.register("ts-tcn")
class TSTCNSpace(SearchSpace):
    name = "ts-tcn"
    config_class = TSTCNSpaceConfig  # the dataclass of its ``space.*`` options
    version = 1
    task = "timeseries"

    def __init__(self, num_classes: int, config: TSTCNSpaceConfig | None = None, dims: int = 1, length: int = 128,
                 equal_length: bool = True) -> None:
        cfg = config or TSTCNSpaceConfig()
        if not isinstance(cfg, TSTCNSpaceConfig):
            raise ConfigError(f"space ts-tcn takes a TSTCNSpaceConfig, not {type(cfg).__name__}")
        if isinstance(dims, bool) or isinstance(length, bool) or int(dims) <= 0 or int(length) <= 0:
            raise ConfigError(f"space ts-tcn needs positive dims and length, got {dims!r} and {length!r}")
        if cfg.n_blocks < 0:
            raise ConfigError(f"space.n_blocks must be ≥ 0, got {cfg.n_blocks}")
        self.cfg = cfg
        self.dims, self.length, self.equal_length = int(dims), int(length), bool(equal_length)
        data_points = [
            ChoicePoint("data.length", option_labels("factors", cfg.factors, tuple(FACTORS)), "data", sampled=True),
            ChoicePoint("data.norm", option_labels("norms", cfg.norms, NORMS), "data", sampled=True),
        ]
        if not self.equal_length:
            data_points.append(ChoicePoint("data.padding", option_labels("paddings", cfg.paddings, PADDINGS), "data",
                                           sampled=True))
        widths = option_labels("widths", cfg.widths)
        arch_points = [
            ChoicePoint("causal", option_labels("causal", cfg.causal, CAUSAL)),
            ChoicePoint("stem.kernel", option_labels("stem_kernels", cfg.stem_kernels)),
            ChoicePoint("stem.stride", option_labels("stem_strides", cfg.stem_strides), sampled=True),
            ChoicePoint("stem.width", widths),
        ]
        kernels, dilations = option_labels("kernels", cfg.kernels), option_labels("dilations", cfg.dilations)
        residuals = option_labels("residuals", cfg.residuals, RESIDUALS)
        for i in range(cfg.n_blocks):
            arch_points += [ChoicePoint(f"block{i}.depth", DEPTHS),
                            ChoicePoint(f"block{i}.kernel", kernels),
                            ChoicePoint(f"block{i}.dilation", dilations),
                            ChoicePoint(f"block{i}.width", widths),
                            ChoicePoint(f"block{i}.residual", residuals)]
        super().__init__(num_classes, data_points, arch_points)
        self._enumerate_lengths()

    # ---- data ------------------------------------------------------------------------------
    def data_config(self, labels: Mapping[str, str]) -> TSConfig:
        return TSConfig(dims=self.dims, length=self.length, factor=labels["data.length"], norm=labels["data.norm"],
                        padding=labels.get("data.padding", "zero"))

    def data_labels(self, cfg: TSConfig) -> dict[str, str]:
        if not isinstance(cfg, TSConfig):
            raise ConfigError(f"space ts-tcn takes time-series data configurations, not {type(cfg).__name__}")
        if (cfg.dims, cfg.length) != (self.dims, self.length):
            raise ConfigError(f"data configuration {cfg.key()} is for {cfg.dims}-dimensional series of length "
                              f"{cfg.length}, this space for {self.dims} × {self.length}")
        labels = {"data.length": cfg.factor, "data.norm": cfg.norm}
        if self.equal_length:
            if cfg.padding != "zero":
                raise ConfigError(f"data configuration {cfg.key()} pads with {cfg.padding!r}, but this space's "
                                  "dataset has equal lengths (no padding choice: 'zero')")
        else:
            labels["data.padding"] = cfg.padding
        return labels

    # ---- layer descriptors (the one place shapes are computed) -----------------------------
    @staticmethod
    def _stem_desc(data: TSConfig, kernel: int, stride: int, width: int, causal: bool) -> LayerDesc:
        length = data.input_length
        pt, pb, lo = _conv_pad(length, kernel, 1, stride, causal)
        return LayerDesc("stem", "conv2d", (data.dims, length, 1), (width, lo, 1), (kernel, 1), (stride, 1),
                         (pt, pb, 0, 0), activation="relu")

    @staticmethod
    def _block_descs(i: int, length: int, c_in: int, kernel: int, dilation: int, width: int, residual: bool,
                     causal: bool, prev: str) -> list[LayerDesc]:
        """A running block reading the output of layer ``prev``: conv [→ proj] [→ add]. ``held`` is
        set as :func:`with_liveness` sets it (the conv output waits for the add while proj runs)."""
        pt, pb, _ = _conv_pad(length, kernel, dilation, 1, causal)
        conv = LayerDesc(f"block{i}.conv", "conv2d", (c_in, length, 1), (width, length, 1), (kernel, 1), (1, 1),
                         (pt, pb, 0, 0), activation="relu", dilation=(dilation, 1))
        if not residual:
            return [conv]
        out, skip = [conv], prev
        if c_in != width:
            out.append(LayerDesc(f"block{i}.proj", "conv2d", (c_in, length, 1), (width, length, 1), inputs=(prev,),
                                 held=width * length))
            skip = f"block{i}.proj"
        out.append(LayerDesc(f"block{i}.add", "add", (width, length, 1), (width, length, 1), bias=False,
                             inputs=(conv.name, skip)))
        return out

    def _head_descs(self, length: int, c: int) -> list[LayerDesc]:
        return [
            LayerDesc("pool", "global_avgpool", (c, length, 1), (c, 1, 1), bias=False),
            LayerDesc("fc", "linear", (c, 1, 1), (self.num_classes, 1, 1)),
        ]

    def layers(self, spec: ArchSpec) -> list[LayerDesc]:
        """The graph of ``spec`` in execution order (``held`` set). It reads the data configuration
        and the choices only, so the module-level ``build(spec)`` works for any TSConfig."""
        ch = spec.choices
        causal = ch["causal"] == "yes"
        c = int(ch["stem.width"])
        out = [self._stem_desc(spec.data, int(ch["stem.kernel"]), int(ch["stem.stride"]), c, causal)]
        length = out[0].out_shape[1]
        for i in range(self._n_blocks(spec)):
            if ch[f"block{i}.depth"] == "skip":
                continue
            w = int(ch[f"block{i}.width"])
            out += self._block_descs(i, length, c, int(ch[f"block{i}.kernel"]), int(ch[f"block{i}.dilation"]), w,
                                     ch[f"block{i}.residual"] == "yes", causal, out[-1].name)
            c = w
        return out + self._head_descs(length, c)

    @staticmethod
    def _n_blocks(spec: ArchSpec) -> int:
        return sum(1 for k in spec.choices if k.endswith(".depth"))

    # ---- every temporal length the body and the head can see -------------------------------
    def _enumerate_lengths(self) -> None:
        """``_stem_len[d][s]``: the stem's output length for data option d and stem stride s (the
        body's and the head's length); ``_lengths``: all of them, sorted."""
        strides = [int(s) for s in self.point("stem.stride").options]
        self._stem_len = [[math.ceil(d.input_length / s) for s in strides] for d in self.data_configs()]
        self._lengths = sorted({x for row in self._stem_len for x in row})

    def _causal_flags(self) -> list[bool]:
        return [a == "yes" for a in self.point("causal").options]

    def all_layers(self) -> Iterator[LayerDesc]:
        seen: set[str] = set()
        cfg = self.cfg
        widths = [int(w) for w in cfg.widths]
        flags = self._causal_flags()

        def new(descs: Iterable[LayerDesc]) -> Iterator[LayerDesc]:
            for d in descs:
                if d.key() not in seen:
                    seen.add(d.key())
                    yield d

        for data in self.data_configs():
            for k, s, w, a in itertools.product(cfg.stem_kernels, cfg.stem_strides, widths, flags):
                yield from new([self._stem_desc(data, int(k), int(s), w, a)])
        if cfg.n_blocks:
            residuals = [r == "yes" for r in cfg.residuals]
            for length, a, c, k, d, w, r in itertools.product(self._lengths, flags, widths, cfg.kernels, cfg.dilations,
                                                              widths, residuals):
                yield from new(self._block_descs(0, length, c, int(k), int(d), w, r, a, "stem"))
        for length, c in itertools.product(self._lengths, widths):
            yield from new(self._head_descs(length, c))

    def cheapest_candidates(self) -> Iterable[ArchSpec]:
        """Every block skipped, over every data option, stem kernel, stem stride, stem width and
        causal option. A skipped block adds no layer, and a running block only adds layers; the
        head then sees the last running block's width w instead of the stem's c0, but whichever of
        the all-skip specs with stem width c0 (when c0 ≤ w) or w (when w < c0: a narrower stem)
        costs no more than the spec, for every sum or max of non-negative layer costs that do not
        fall as channels grow (MACs, parameters, flash, RAM, a latency table as it measures). The
        skipped blocks' other choices are their smallest options (they change nothing)."""
        cfg = self.cfg
        small = {}
        for i in range(cfg.n_blocks):
            small.update({f"block{i}.depth": "skip", f"block{i}.kernel": str(min(cfg.kernels)),
                          f"block{i}.dilation": str(min(cfg.dilations)), f"block{i}.width": str(min(cfg.widths)),
                          f"block{i}.residual": "no" if "no" in cfg.residuals else cfg.residuals[0]})
        pts = [*self.data_points, *(self.point(n) for n in ("causal", "stem.kernel", "stem.stride", "stem.width"))]
        for combo in itertools.product(*[p.options for p in pts]):
            yield self.spec({**small, **dict(zip([p.name for p in pts], combo))})

    # ---- expected cost under independent choice probabilities ------------------------------
    def slot_names(self) -> list[str]:
        """The layer each slot of :meth:`expected_layer_costs` prices (0 where a spec lacks it)."""
        names = ["stem"]
        for i in range(self.cfg.n_blocks):
            names += [f"block{i}.conv", f"block{i}.proj", f"block{i}.add"]
        return names + ["pool", "fc"]

    def expected_layer_costs(self, probs: Probs, layer_cost: LayerCostFn) -> torch.Tensor:
        """Exact expectation of every slot's cost (:meth:`slot_names`: stem; per block conv, proj,
        add; pool, fc), differentiable in ``probs``.

        The state entering block i is (length, channels). The length is set by the data option and
        the stem stride alone (every block has stride 1), the channels by the stem width and the
        earlier blocks' depth and width choices alone, so the joint distribution is the product
        of the two marginals; the channel marginal is propagated as a Markov chain (a skipped
        block keeps it, a running one sets it to its width). Each slot is then a small contraction
        of a precomputed cost table; proj is priced only where the residual is on and the widths
        differ, add only where the residual is on.
        """
        t = self.cost_tables(layer_cost)
        p_data = self.data_probs(probs)  # [D]
        pa, pk, ps, pc = probs["causal"], probs["stem.kernel"], probs["stem.stride"], probs["stem.width"]
        slots = [torch.einsum("dksca,d,k,s,c,a->", t["stem"], p_data, pk, ps, pc, pa)]
        p_len = torch.einsum("dsl,d,s->l", t["stem_len"], p_data, ps)  # [L]
        res_opts = self.cfg.residuals
        for i in range(self.cfg.n_blocks):
            p_depth = probs[f"block{i}.depth"]
            p_run, p_skip = p_depth[DEPTHS.index("run")], p_depth[DEPTHS.index("skip")]
            p_res = probs[f"block{i}.residual"]
            p_yes = p_res[res_opts.index("yes")] if "yes" in res_opts else p_res.new_zeros(())
            pw = probs[f"block{i}.width"]
            slots.append(p_run * torch.einsum("lacxyw,l,a,c,x,y,w->", t["conv"], p_len, pa, pc,
                                              probs[f"block{i}.kernel"], probs[f"block{i}.dilation"], pw))
            slots.append(p_run * p_yes * torch.einsum("lcw,l,c,w->", t["proj"], p_len, pc, pw))
            slots.append(p_run * p_yes * torch.einsum("lw,l,w->", t["add"], p_len, pw))
            pc = p_skip * pc + p_run * pw
        slots.append(torch.einsum("lc,l,c->", t["pool"], p_len, pc))
        slots.append(torch.einsum("lc,l,c->", t["fc"], p_len, pc))
        return torch.stack(slots)

    def build_cost_tables(self, layer_cost: LayerCostFn) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        datas, lengths, flags = self.data_configs(), self._lengths, self._causal_flags()
        stem_k, stem_s = [int(k) for k in cfg.stem_kernels], [int(s) for s in cfg.stem_strides]
        widths, kernels, dils = [int(w) for w in cfg.widths], [int(k) for k in cfg.kernels], [int(d) for d in cfg.dilations]
        li = {x: j for j, x in enumerate(lengths)}
        D, L, A, C = len(datas), len(lengths), len(flags), len(widths)
        stem, stem_len = torch.zeros(D, len(stem_k), len(stem_s), C, A), torch.zeros(D, len(stem_s), L)
        conv = torch.zeros(L, A, C, len(kernels), len(dils), C)
        proj, add = torch.zeros(L, C, C), torch.zeros(L, C)
        pool, fc = torch.zeros(L, C), torch.zeros(L, C)
        for d, data in enumerate(datas):
            for s, ss in enumerate(stem_s):
                stem_len[d, s, li[self._stem_len[d][s]]] = 1.0
                for (k, kk), (c, cw), (a, fa) in itertools.product(enumerate(stem_k), enumerate(widths),
                                                                   enumerate(flags)):
                    stem[d, k, s, c, a] = layer_cost(self._stem_desc(data, kk, ss, cw, fa))
        if cfg.n_blocks:
            residual = "yes" in cfg.residuals
            for (j, length), (c, cw), (w, ww) in itertools.product(enumerate(lengths), enumerate(widths),
                                                                   enumerate(widths)):
                for (a, fa), (x, kx), (y, dy) in itertools.product(enumerate(flags), enumerate(kernels),
                                                                   enumerate(dils)):
                    conv[j, a, c, x, y, w] = layer_cost(self._block_descs(0, length, cw, kx, dy, ww, False, fa,
                                                                          "stem")[0])
                if residual:
                    blk = {b.name: b for b in self._block_descs(0, length, cw, kernels[0], dils[0], ww, True,
                                                                flags[0], "stem")}
                    if "block0.proj" in blk:
                        proj[j, c, w] = layer_cost(blk["block0.proj"])
                    if c == w:  # the add's cost depends on its width only
                        add[j, w] = layer_cost(blk["block0.add"])
        for (j, length), (c, cw) in itertools.product(enumerate(lengths), enumerate(widths)):
            pool_d, fc_d = self._head_descs(length, cw)
            pool[j, c], fc[j, c] = layer_cost(pool_d), layer_cost(fc_d)
        tables = {"stem": stem, "stem_len": stem_len, "conv": conv, "proj": proj, "add": add, "pool": pool,
                  "fc": fc}
        return tables

    # ---- networks --------------------------------------------------------------------------
    def build(self, spec: ArchSpec) -> nn.Module:
        layers = self.layers(spec)
        if layers[-1].out_shape[0] != spec.num_classes:
            raise ValueError(f"classifier has {layers[-1].out_shape[0]} outputs, spec has {spec.num_classes} classes")
        return GraphNet(with_liveness(layers))

    def supernet(self) -> "TSTCNSupernet":
        return TSTCNSupernet(self)

    def describe(self, spec: ArchSpec) -> str:
        ch, d = spec.choices, spec.data
        head = f"L={d.input_length} ({d.factor}), {d.norm} norm"
        if not self.equal_length:
            head += f", {d.padding} padding"
        stem = f"stem k{ch['stem.kernel']}/s{ch['stem.stride']}→{ch['stem.width']}"
        parts = [head, stem + (" causal" if ch["causal"] == "yes" else "")]
        for i in range(self._n_blocks(spec)):
            if ch[f"block{i}.depth"] == "skip":
                parts.append("skip")
            else:
                res = "+res" if ch[f"block{i}.residual"] == "yes" else ""
                parts.append(f"k{ch[f'block{i}.kernel']}d{ch[f'block{i}.dilation']}→{ch[f'block{i}.width']}{res}")
        return " | ".join(parts)


def _centre(w: torch.Tensor, k: int) -> torch.Tensor:
    """The centred k-tap slice (along time, dim 2) of a kernel with more taps."""
    off = (w.shape[2] - k) // 2
    return w[:, :, off:off + k]


class TSTCNSupernet(nn.Module):
    """All specs of a :class:`TSTCNSpace` in one network (weights shared at max width and kernel).

    One stem conv for every data option (each data option and stem kernel has its own BatchNorm:
    normalisations and lengths give the stem different statistics); per weight slot one temporal
    conv at the largest kernel (smaller kernels are centred slices, as in Once-for-All; dilation
    applied at run time) with one BatchNorm, and one 1×1 projection with its BatchNorm; widths are
    channel prefixes selected by masks. Under a hard (single-path) selection skipped blocks are
    compacted as in kws-dscnn and kws-tcn (the k-th running block uses weight slot k); under
    relaxed gates block i uses slot i and the outputs of the options are mixed (kernel, dilation
    and causal padding before the BatchNorm, depth and residual after the block).

    The residual under relaxed gates: the block input when the input and output widths agree (a
    probability, from the channel distribution the masks track), else its projection.
    """

    def __init__(self, space: TSTCNSpace) -> None:
        super().__init__()
        self.space = space
        cfg = space.cfg
        self.widths = [int(w) for w in cfg.widths]
        cmax = self.cmax = max(self.widths)
        self.stem_kernels = [int(k) for k in cfg.stem_kernels]
        self.stem_strides = [int(s) for s in cfg.stem_strides]
        self.kernels, self.dilations = [int(k) for k in cfg.kernels], [int(d) for d in cfg.dilations]
        self.residuals = list(cfg.residuals)
        self.flags = space._causal_flags()
        self.datas = space.data_configs()
        n = cfg.n_blocks
        self.stem = nn.Conv2d(space.dims, cmax, (max(self.stem_kernels), 1), bias=False)
        self.stem_bns = nn.ModuleList(nn.ModuleList(nn.BatchNorm2d(cmax) for _ in self.stem_kernels)
                                      for _ in self.datas)
        self.conv = nn.ModuleList(nn.Conv2d(cmax, cmax, (max(self.kernels), 1), bias=False) for _ in range(n))
        self.conv_bn = nn.ModuleList(nn.BatchNorm2d(cmax) for _ in range(n))
        n_proj = n if "yes" in self.residuals else 0
        self.proj = nn.ModuleList(nn.Conv2d(cmax, cmax, 1, bias=False) for _ in range(n_proj))
        self.proj_bn = nn.ModuleList(nn.BatchNorm2d(cmax) for _ in range(n_proj))
        self.classifier = nn.Linear(cmax, space.num_classes)
        self.register_buffer("width_masks", width_masks(self.widths, cmax))
        self.to(memory_format=torch.channels_last)

    def _mask(self, p_chan: torch.Tensor) -> torch.Tensor:
        return (p_chan[:, None] * self.width_masks).sum(0)[None, :, None, None]

    def forward(self, x: torch.Tensor, data_index: int, gates: Gates, hard: bool) -> torch.Tensor:
        """Run the data option ``data_index`` under architecture ``gates`` (as kws-dscnn's supernet:
        one-hot straight-through gates when ``hard``, probability vectors otherwise; the stem stride
        and the data options are always one-hot)."""
        space = self.space
        data = self.datas[data_index]
        x, data_gate, (t, _) = data_input(space, data, x, gates)
        if x.shape[1] != data.dims:
            raise ValueError(f"input has {x.shape[1]} channels, data option {data.key()} {data.dims}")
        g_causal = gates["causal"]

        def stem(k: int, s: int, a: int) -> torch.Tensor:
            kk, ss = self.stem_kernels[k], self.stem_strides[s]
            pt, pb, _ = _conv_pad(t, kk, 1, ss, self.flags[a])
            return F.conv2d(F.pad(x, (0, 0, pt, pb)), _centre(self.stem.weight, kk), stride=(ss, 1))

        def stem_k(k: int) -> torch.Tensor:
            y = _mix(gates["stem.stride"], True, [  # shape-changing: always sampled
                lambda s=s: _mix(g_causal, hard, [lambda a=a: stem(k, s, a) for a in range(len(self.flags))])
                for s in range(len(self.stem_strides))])
            return F.relu(self.stem_bns[data_index][k](y))

        h = _mix(gates["stem.kernel"], hard, [lambda k=k: stem_k(k) for k in range(len(self.stem_kernels))])
        p_chan = gates["stem.width"]  # distribution of the channels entering the next block
        h = h * self._mask(p_chan) * data_gate
        slot = 0  # weight slot of the next running block
        run_i, skip_i = DEPTHS.index("run"), DEPTHS.index("skip")
        for i in range(space.cfg.n_blocks):
            g_depth, g_w = gates[f"block{i}.depth"], gates[f"block{i}.width"]
            wmask = self._mask(g_w)
            run = self._block_fn(i, slot, h, p_chan, g_w, wmask, gates, hard)
            h = _mix(g_depth, hard, [run if DEPTHS[m] == "run" else (lambda h=h: h) for m in range(len(DEPTHS))])
            p_chan = g_depth[skip_i] * p_chan + g_depth[run_i] * g_w
            if not hard or int(torch.argmax(g_depth.detach())) == run_i:
                slot += 1  # single path: skipped blocks are compacted away (see kws-dscnn)
        return self.classifier(h.mean(dim=(2, 3)))

    def _block_fn(self, i: int, j: int, h: torch.Tensor, p_chan: torch.Tensor, g_w: torch.Tensor,
                  wmask: torch.Tensor, gates: Gates, hard: bool) -> Callable[[], torch.Tensor]:
        """Block i running on weight slot j, on input ``h`` whose channels are distributed as ``p_chan``."""

        def conv(k: int, d: int, a: int) -> torch.Tensor:
            kk, dd = self.kernels[k], self.dilations[d]
            pt, pb, _ = _conv_pad(h.shape[2], kk, dd, 1, self.flags[a])
            return F.conv2d(F.pad(h, (0, 0, pt, pb)), _centre(self.conv[j].weight, kk), dilation=(dd, 1))

        def with_dilation(k: int) -> torch.Tensor:
            return _mix(gates[f"block{i}.dilation"], hard, [
                lambda d=d: _mix(gates["causal"], hard, [lambda a=a: conv(k, d, a) for a in range(len(self.flags))])
                for d in range(len(self.dilations))])

        def proj() -> torch.Tensor:
            return self.proj_bn[j](self.proj[j](h)) * wmask

        def run() -> torch.Tensor:
            y = _mix(gates[f"block{i}.kernel"], hard, [lambda k=k: with_dilation(k) for k in range(len(self.kernels))])
            y = F.relu(self.conv_bn[j](y)) * wmask

            def residual() -> torch.Tensor:
                same = (p_chan * g_w).sum()  # probability that the block keeps its width
                if not hard:
                    return y + same * h + (1 - same) * proj()
                keeps = int(torch.argmax(p_chan.detach())) == int(torch.argmax(g_w.detach()))
                return y + (same * h if keeps else (1 - same) * proj())

            return _mix(gates[f"block{i}.residual"], hard, [residual if r == "yes" else (lambda: y)
                                                            for r in self.residuals])

        return run

    # ---- weight inheritance ----------------------------------------------------------------
    @torch.no_grad()
    def extract(self, spec: ArchSpec, compact: bool = True) -> nn.Module:
        """The plain network of ``spec`` (``space.build``) carrying this supernet's weights, so that
        in eval mode it computes what the supernet computes at the one-hot selection of ``spec``.
        ``compact`` follows the hard (single-path) slot assignment, otherwise block i uses slot i."""
        space = self.space
        model = space.build(spec)
        ch = spec.choices
        d_idx = self.datas.index(spec.data)
        slot, slots = 0, {}
        for i in range(space.cfg.n_blocks):
            slots[i] = slot
            if not compact or ch[f"block{i}.depth"] == "run":
                slot += 1

        def copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, n: int) -> None:
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(dst, name).copy_(getattr(src, name)[:n])
            dst.num_batches_tracked.copy_(src.num_batches_tracked)

        for desc, mod in zip(model.descs, model.layers):
            if desc.kind != "conv2d":
                continue
            conv = next(m for m in mod if isinstance(m, nn.Conv2d))
            bn = next(m for m in mod if isinstance(m, nn.BatchNorm2d))
            c_in, c_out, k = desc.in_shape[0], desc.out_shape[0], desc.kernel[0]
            if desc.name == "stem":
                conv.weight.copy_(_centre(self.stem.weight, k)[:c_out])
                copy_bn(bn, self.stem_bns[d_idx][self.stem_kernels.index(k)], c_out)
                continue
            block, layer = desc.name.split(".")
            j = slots[int(block[len("block"):])]
            if layer == "conv":
                conv.weight.copy_(_centre(self.conv[j].weight, k)[:c_out, :c_in])
                copy_bn(bn, self.conv_bn[j], c_out)
            else:
                conv.weight.copy_(self.proj[j].weight[:c_out, :c_in])
                copy_bn(bn, self.proj_bn[j], c_out)
        fc = model.layers[-1]
        assert isinstance(fc, nn.Linear)
        fc.weight.copy_(self.classifier.weight[:, :fc.in_features])
        fc.bias.copy_(self.classifier.bias)
        return model
