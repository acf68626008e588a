"""KWS search space: temporal convolutions (TC-ResNet style, sequential) with the audio front end.

Input: MFCC features [N, 1, frames, n_mfcc], the same layout as kws-dscnn (no permute, so no
TFLite TRANSPOSE). The MFCC coefficients become channels through the stem, and everything after
it is a 1-D convolution over time written as a Conv2d with a (k × 1) kernel:

* stem: conv2d with kernel (k_t × n_mfcc), SAME in time and VALID in frequency (the frequency
  axis collapses to width 1); temporal kernel, temporal stride and width searched;
* ``n_blocks`` blocks, each one op — ``convK`` (a full K×1 temporal conv), ``dwK`` (depthwise
  K×1 then pointwise 1×1) or ``skip`` — with a searched width and a searched temporal stride;
* global average pooling → linear.

Strides are searched per block (``block{i}.stride``), marked ``sampled`` because they change
tensor shapes (as kws-dscnn's ``stem.stride``). A block's stride always applies, whatever its op:
``skip`` at stride 1 is the identity (no layer), ``skip`` at stride s > 1 is a strided 1×1
depthwise conv with as many taps as the stride (``block{i}.down``, a learned per-channel
subsample; XNNPACK cannot prepare a depthwise conv whose stride exceeds its kernel), so every op of a block gives
the same output length and ops can be mixed under a relaxed strategy. The temporal length is then
a function of the data option and the strides only. To fix a stride schedule instead, give
``block_strides`` one option (``--set space.block_strides=2``).

No residual adds: the latency lookup table, the learned predictor, the micro-model exporter and
the TFLite converter all take a chain of LayerDescs (conv2d with groups, global_avgpool, linear).

Data choice points (sample rate, n_mfcc, window/hop) are exactly kws-dscnn's (built and decoded by
a kws-dscnn space held inside, so options, labels and validation agree). Every data option has
its own stem into the shared body; the supernet shares body weights at the maximum width and
kernel (smaller kernels are centred slices, narrower widths channel masks).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from edgenas.errors import ConfigError
from edgenas.spaces.base import SPACES, ChoicePoint, Gates, LayerCostFn, Probs, SearchSpace, width_masks
from edgenas.spaces.kws_dscnn import KWSDSCNNSpace, KWSNet, KWSSpaceConfig, _mix, data_input, same_pad
from edgenas.spec import ArchSpec, DataConfig, LayerDesc


@dataclass(frozen=True)
class KWSTCNSpaceConfig:
    """The option sets of the space; every set is configurable (``--set space.widths=16,32``)."""

    sample_rates: tuple[int, ...] = (8000, 16000)
    n_mfcc: tuple[int, ...] = (10, 20, 40)
    windows: tuple[str, ...] = ("30/10", "40/20")  # window/hop in ms
    n_mels: tuple[int, ...] = (40,)  # several: a data choice point (as in kws-dscnn)
    stem_kernels: tuple[int, ...] = (3, 5, 9)  # temporal; the stem spans every MFCC coefficient
    stem_strides: tuple[int, ...] = (1,)  # temporal; shape-changing, so always sampled
    widths: tuple[int, ...] = (16, 24, 32, 48)
    n_blocks: int = 4
    block_ops: tuple[str, ...] = ("conv9", "dw9", "dw5", "skip")
    block_strides: tuple[int, ...] = (1, 2)  # temporal, per block; shape-changing, so always sampled


def parse_op(op: str) -> tuple[str, int] | None:
    """``"conv9"`` → ("conv", 9), ``"dw5"`` → ("dw", 5), ``"skip"`` → None."""
    if op == "skip":
        return None
    for kind in ("conv", "dw"):
        if op.startswith(kind) and op[len(kind):].isdigit() and int(op[len(kind):]) > 0:
            return kind, int(op[len(kind):])
    raise ConfigError(f"unknown block op {op!r} (expected convK, dwK or skip, e.g. conv9, dw5)")


def _options(name: str, values: tuple[Any, ...], positive: bool = True) -> tuple[str, ...]:
    labels = tuple(str(v) for v in values)
    if not labels:
        raise ConfigError(f"space.{name} needs at least one option")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"space.{name} has duplicate options: {list(values)}")
    if positive and any(int(v) <= 0 for v in values):
        raise ConfigError(f"space.{name} options must be positive, got {list(values)}")
    return labels


@SPACES.register("kws-tcn")
class KWSTCNSpace(SearchSpace):
    name = "kws-tcn"
    config_class = KWSTCNSpaceConfig  # the dataclass of its ``space.*`` options
    version = 2  # v2: a strided skip's depthwise conv has stride taps (v1: one tap)
    task = "kws"

    def __init__(self, num_classes: int, config: KWSTCNSpaceConfig | None = None,
                 max_sample_rate: int | None = None) -> None:
        cfg = config or KWSTCNSpaceConfig()
        if not isinstance(cfg, KWSTCNSpaceConfig):
            raise ConfigError(f"space kws-tcn takes a KWSTCNSpaceConfig, not {type(cfg).__name__}")
        # the data choice points are kws-dscnn's: same options, labels and checks
        self._data = KWSDSCNNSpace(num_classes, KWSSpaceConfig(
            sample_rates=cfg.sample_rates, n_mfcc=cfg.n_mfcc, windows=cfg.windows, n_mels=cfg.n_mels,
            n_blocks=0), max_sample_rate)
        if cfg.n_blocks < 0:
            raise ConfigError(f"space.n_blocks must be ≥ 0, got {cfg.n_blocks}")
        _options("block_ops", cfg.block_ops, positive=False)
        for op in cfg.block_ops:
            parse_op(op)
        self.cfg = cfg
        arch_points = [
            ChoicePoint("stem.kernel", _options("stem_kernels", cfg.stem_kernels)),
            ChoicePoint("stem.stride", _options("stem_strides", cfg.stem_strides), sampled=True),
            ChoicePoint("stem.width", _options("widths", cfg.widths)),
        ]
        strides = _options("block_strides", cfg.block_strides)
        for i in range(cfg.n_blocks):
            arch_points.append(ChoicePoint(f"block{i}.op", tuple(cfg.block_ops)))
            arch_points.append(ChoicePoint(f"block{i}.stride", strides, sampled=True))
            arch_points.append(ChoicePoint(f"block{i}.width", _options("widths", cfg.widths)))
        super().__init__(num_classes, list(self._data.data_points), arch_points)
        self._enumerate_lengths()

    # ---- data (delegated to kws-dscnn) -------------------------------------------------------
    def data_config(self, labels: Mapping[str, str]) -> DataConfig:
        return self._data.data_config(labels)

    def data_labels(self, cfg: DataConfig) -> dict[str, str]:
        return self._data.data_labels(cfg)

    # ---- layer descriptors (the one place shapes are computed) -----------------------------
    @staticmethod
    def _stem_desc(data: DataConfig, kernel: int, stride: int, width: int) -> LayerDesc:
        t, f = data.feature_shape
        pt, pb, lo = same_pad(t, kernel, stride)
        return LayerDesc("stem", "conv2d", (1, t, f), (width, lo, 1), (kernel, f), (stride, 1), (pt, pb, 0, 0),
                         activation="relu")

    @staticmethod
    def _block_descs(i: int, length: int, c_in: int, op: str, stride: int, width: int) -> list[LayerDesc]:
        parsed = parse_op(op)
        # a strided skip is a depthwise conv with as many taps as its stride (XNNPACK cannot prepare
        # a depthwise conv whose stride exceeds its kernel: 1-tap stride-2 chains failed to load)
        pt, pb, lo = same_pad(length, stride if parsed is None else parsed[1], stride)
        if parsed is None:
            if stride == 1:
                return []
            return [LayerDesc(f"block{i}.down", "conv2d", (c_in, length, 1), (c_in, lo, 1), (stride, 1), (stride, 1),
                              (pt, pb, 0, 0), groups=c_in, activation="relu")]
        kind, k = parsed
        if kind == "conv":
            return [LayerDesc(f"block{i}.conv", "conv2d", (c_in, length, 1), (width, lo, 1), (k, 1), (stride, 1),
                              (pt, pb, 0, 0), activation="relu")]
        return [
            LayerDesc(f"block{i}.dw", "conv2d", (c_in, length, 1), (c_in, lo, 1), (k, 1), (stride, 1),
                      (pt, pb, 0, 0), groups=c_in, activation="relu"),
            LayerDesc(f"block{i}.pw", "conv2d", (c_in, lo, 1), (width, lo, 1), (1, 1), activation="relu"),
        ]

    def _head_descs(self, length: int, c: int) -> list[LayerDesc]:
        return [
            LayerDesc("pool", "global_avgpool", (c, length, 1), (c, 1, 1), bias=False),
            LayerDesc("fc", "linear", (c, 1, 1), (self.num_classes, 1, 1)),
        ]

    def layers(self, spec: ArchSpec) -> list[LayerDesc]:
        ch = spec.choices
        c = int(ch["stem.width"])
        out = [self._stem_desc(spec.data, int(ch["stem.kernel"]), int(ch["stem.stride"]), c)]
        length = out[0].out_shape[1]
        for i in range(self._n_blocks(spec)):
            blk = self._block_descs(i, length, c, ch[f"block{i}.op"], int(ch[f"block{i}.stride"]),
                                    int(ch[f"block{i}.width"]))
            out += blk
            if blk:
                c, length = blk[-1].out_shape[0], blk[-1].out_shape[1]
        return out + self._head_descs(length, c)

    @staticmethod
    def _n_blocks(spec: ArchSpec) -> int:
        return sum(1 for k in spec.choices if k.endswith(".op"))

    # ---- every temporal length a block or the head can see --------------------------------
    def _enumerate_lengths(self) -> None:
        """``_stem_len[d][s]``: the stem's output length; ``_body_lengths``: every length entering
        some block; ``_lengths``: every length anywhere in the body or head (sorted)."""
        stem_strides = [int(s) for s in self.point("stem.stride").options]
        strides = [int(s) for s in self.cfg.block_strides]
        self._stem_len = [[math.ceil(d.feature_shape[0] / s) for s in stem_strides] for d in self.data_configs()]
        level = {x for row in self._stem_len for x in row}
        body: set[int] = set()
        seen = set(level)
        for _ in range(self.cfg.n_blocks):
            body |= level
            level = {math.ceil(x / s) for x in level for s in strides}
            seen |= level
        self._body_lengths = sorted(body)
        self._lengths = sorted(seen)

    def all_layers(self) -> Iterator[LayerDesc]:
        seen: set[str] = set()
        widths = [int(w) for w in self.point("stem.width").options]

        def new(descs: Iterable[LayerDesc]) -> Iterator[LayerDesc]:
            for d in descs:
                if d.key() not in seen:
                    seen.add(d.key())
                    yield d

        for data in self.data_configs():
            for k, s, c in itertools.product(self.point("stem.kernel").options, self.point("stem.stride").options,
                                             widths):
                yield from new([self._stem_desc(data, int(k), int(s), c)])
        for length, c in itertools.product(self._body_lengths, widths):
            for op, s, w in itertools.product(self.cfg.block_ops, self.cfg.block_strides, widths):
                yield from new(self._block_descs(0, length, c, op, int(s), w))
        for length, c in itertools.product(self._lengths, widths):
            yield from new(self._head_descs(length, c))

    def cheapest_candidates(self) -> Iterable[ArchSpec]:
        """All-skip bodies at the smallest block stride over every data config and stem: a skip
        block at stride 1 adds no layer, so adding a block or a downsampling layer never lowers a
        cost that sums or maxes non-negative layer costs (the pooled head shrinks by at most what
        the downsampling layer adds). Without ``skip``, every op (all blocks alike) at the smallest
        width, at the smallest and at the largest stride everywhere."""
        names = [p.name for p in self.data_points] + ["stem.kernel", "stem.stride", "stem.width"]
        strides = sorted(self.cfg.block_strides)
        if "skip" in self.cfg.block_ops:
            bodies = [("skip", strides[0])]
        else:
            bodies = [(op, s) for op in self.cfg.block_ops for s in dict.fromkeys((strides[0], strides[-1]))]
        small = str(min(self.cfg.widths))
        for combo in itertools.product(*[p.options for p in self.data_points], self.point("stem.kernel").options,
                                       self.point("stem.stride").options, self.point("stem.width").options):
            sel = dict(zip(names, combo))
            for op, s in bodies:
                for i in range(self.cfg.n_blocks):
                    sel[f"block{i}.op"], sel[f"block{i}.stride"], sel[f"block{i}.width"] = op, str(s), small
                yield self.spec(sel)

    # ---- expected cost under independent choice probabilities ------------------------------
    def expected_layer_costs(self, probs: Probs, layer_cost: LayerCostFn) -> torch.Tensor:
        """Exact expectation of every slot's cost (stem, first layer_i, pw_i, pool, fc).

        The state entering block i is (temporal length, channels). Lengths follow the data option,
        the stem stride and the block strides only; channels follow the skip/width choices. The
        joint distribution of the state is propagated as a Markov chain, so each slot's
        expectation is a small tensor contraction of a precomputed cost table. ``first layer_i``
        is the block's conv, depthwise or (skip at stride > 1) downsampling layer.
        """
        t = self.cost_tables(layer_cost)
        p_data = self.data_probs(probs)  # [D]
        pk, ps, pw0 = probs["stem.kernel"], probs["stem.stride"], probs["stem.width"]
        slots = [torch.einsum("dksc,d,k,s,c->", t["stem"], p_data, pk, ps, pw0)]
        p_len = torch.einsum("dsl,d,s->l", t["stem_len"], p_data, ps)  # [L] length leaving the stem
        state = p_len[:, None] * pw0[None, :]  # [L, C] joint (length, channels) entering block 0
        ops = self.cfg.block_ops
        for i in range(self.cfg.n_blocks):
            p_op, p_s, p_w = probs[f"block{i}.op"], probs[f"block{i}.stride"], probs[f"block{i}.width"]
            slots.append(torch.einsum("lcmsw,lc,m,s,w->", t["first"], state, p_op, p_s, p_w))
            slots.append(torch.einsum("lcmsw,lc,m,s,w->", t["pw"], state, p_op, p_s, p_w))
            p_skip = sum(p_op[j] for j, op in enumerate(ops) if op == "skip") if "skip" in ops else p_op.new_zeros(())
            chan = p_skip * state + (1 - p_skip) * state.sum(1, keepdim=True) * p_w[None, :]
            state = torch.einsum("sab,s,ac->bc", t["down"], p_s, chan)  # every op applies the stride
        slots.append(torch.einsum("lc,lc->", t["pool"], state))
        slots.append(torch.einsum("lc,lc->", t["fc"], state))
        return torch.stack(slots)

    def build_cost_tables(self, layer_cost: LayerCostFn) -> dict[str, torch.Tensor]:
        datas = self.data_configs()
        kernels = [int(k) for k in self.point("stem.kernel").options]
        stem_strides = [int(s) for s in self.point("stem.stride").options]
        widths = [int(w) for w in self.point("stem.width").options]
        ops, strides, lengths = self.cfg.block_ops, [int(s) for s in self.cfg.block_strides], self._lengths
        li = {x: j for j, x in enumerate(lengths)}
        D, K, S, C = len(datas), len(kernels), len(stem_strides), len(widths)
        M, B, L = len(ops), len(strides), len(lengths)
        stem, stem_len = torch.zeros(D, K, S, C), torch.zeros(D, S, L)
        first, pw = torch.zeros(L, C, M, B, C), torch.zeros(L, C, M, B, C)
        pool, fc, down = torch.zeros(L, C), torch.zeros(L, C), torch.zeros(B, L, L)
        for (d, data), (s, ss) in itertools.product(enumerate(datas), enumerate(stem_strides)):
            stem_len[d, s, li[self._stem_len[d][s]]] = 1.0
            for (k, kk), (c, cw) in itertools.product(enumerate(kernels), enumerate(widths)):
                stem[d, k, s, c] = layer_cost(self._stem_desc(data, kk, ss, cw))
        for (j, length), (b, sb) in itertools.product(enumerate(lengths), enumerate(strides)):
            if math.ceil(length / sb) in li:  # else: a length no block sees (the deepest ones)
                down[b, j, li[math.ceil(length / sb)]] = 1.0
        for length in self._body_lengths:
            j = li[length]
            for (c, cw), (m, op), (b, sb), (w, ww) in itertools.product(enumerate(widths), enumerate(ops),
                                                                        enumerate(strides), enumerate(widths)):
                blk = self._block_descs(0, length, cw, op, sb, ww)
                if blk:
                    first[j, c, m, b, w] = layer_cost(blk[0])
                if len(blk) > 1:
                    pw[j, c, m, b, w] = layer_cost(blk[1])
        for (j, length), (c, cw) in itertools.product(enumerate(lengths), enumerate(widths)):
            pool_d, fc_d = self._head_descs(length, cw)
            pool[j, c], fc[j, c] = layer_cost(pool_d), layer_cost(fc_d)
        tables = {"stem": stem, "stem_len": stem_len, "first": first, "pw": pw, "pool": pool, "fc": fc,
                  "down": down}
        return tables

    # ---- networks --------------------------------------------------------------------------
    def build(self, spec: ArchSpec) -> nn.Module:
        return KWSNet(self.layers(spec), spec.num_classes)

    def supernet(self) -> "KWSTCNSupernet":
        return KWSTCNSupernet(self)

    def describe(self, spec: ArchSpec) -> str:
        ch, d = spec.choices, spec.data
        parts = [f"{d.sample_rate} Hz, {d.n_mfcc} MFCC, {d.win_ms:g}/{d.hop_ms:g} ms",
                 f"stem k{ch['stem.kernel']}/s{ch['stem.stride']}→{ch['stem.width']}"]
        for i in range(self._n_blocks(spec)):
            op, s = ch[f"block{i}.op"], ch[f"block{i}.stride"]
            w = ch[f"block{i}.width"]
            parts.append(("skip" if s == "1" else f"skip/s{s}") if op == "skip" else f"{op}/s{s}→{w}")
        return " | ".join(parts)


def _centre(w: torch.Tensor, k: int) -> torch.Tensor:
    """The centred k-tap slice (along time, dim 2) of a kernel with more taps."""
    off = (w.shape[2] - k) // 2
    return w[:, :, off:off + k]


class KWSTCNSupernet(nn.Module):
    """All specs of a :class:`KWSTCNSpace` in one network (weights shared at max width and kernel).

    Per block one full temporal conv (largest ``convK``), one depthwise conv (largest ``dwK``),
    one pointwise conv and one strided depthwise (skip at stride > 1, taps = stride); smaller kernels are
    centred slices (as in Once-for-All), widths channel prefixes. Under a hard (single-path)
    selection skipped blocks are compacted as in kws-dscnn: the k-th block that runs a conv uses
    weight slot k; the downsampling layer of a strided skip belongs to its block.
    """

    def __init__(self, space: KWSTCNSpace) -> None:
        super().__init__()
        self.space = space
        cfg = space.cfg
        self.widths = [int(w) for w in space.point("stem.width").options]
        cmax = self.cmax = max(self.widths)
        self.kernels = [int(k) for k in space.point("stem.kernel").options]
        self.stem_strides = [int(s) for s in space.point("stem.stride").options]
        self.strides = [int(s) for s in cfg.block_strides]
        self.ops = list(cfg.block_ops)
        self.datas = space.data_configs()
        n = cfg.n_blocks
        kmax = max(self.kernels)
        self.stems = nn.ModuleList(nn.Conv2d(1, cmax, (kmax, d.n_mfcc), bias=False) for d in self.datas)
        self.stem_bns = nn.ModuleList(nn.ModuleList(nn.BatchNorm2d(cmax) for _ in self.kernels) for _ in self.datas)
        parsed = [parse_op(op) for op in self.ops]
        conv_k = [p[1] for p in parsed if p is not None and p[0] == "conv"]
        dw_k = [p[1] for p in parsed if p is not None and p[0] == "dw"]
        n_conv, n_dw = (n if conv_k else 0), (n if dw_k else 0)
        n_down = n if ("skip" in self.ops and max(self.strides) > 1) else 0
        self.conv = nn.ModuleList(nn.Conv2d(cmax, cmax, (max(conv_k or [1]), 1), bias=False) for _ in range(n_conv))
        self.conv_bn = nn.ModuleList(nn.BatchNorm2d(cmax) for _ in range(n_conv))
        self.dw = nn.ModuleList(nn.Conv2d(cmax, cmax, (max(dw_k or [1]), 1), groups=cmax, bias=False)
                                for _ in range(n_dw))
        self.dw_bn = nn.ModuleList(nn.BatchNorm2d(cmax) for _ in range(n_dw))
        self.pw = nn.ModuleList(nn.Conv2d(cmax, cmax, 1, bias=False) for _ in range(n_dw))
        self.pw_bn = nn.ModuleList(nn.BatchNorm2d(cmax) for _ in range(n_dw))
        smax = max(self.strides)
        self.down = nn.ModuleList(nn.Conv2d(cmax, cmax, (smax, 1), groups=cmax, bias=False) for _ in range(n_down))
        self.down_bn = nn.ModuleList(nn.BatchNorm2d(cmax) for _ in range(n_down))
        self.classifier = nn.Linear(cmax, space.num_classes)
        self.register_buffer("width_masks", width_masks(self.widths, cmax))
        self.to(memory_format=torch.channels_last)

    def _mask(self, gate: torch.Tensor) -> torch.Tensor:
        return (gate[:, None] * self.width_masks).sum(0)[None, :, None, None]

    def forward(self, x: torch.Tensor, data_index: int, gates: Gates, hard: bool) -> torch.Tensor:
        """Run the data option ``data_index`` under architecture ``gates`` (see kws-dscnn's supernet:
        one-hot straight-through gates when ``hard``, probability vectors otherwise; strides and
        data options are always one-hot)."""
        data = self.datas[data_index]
        x, data_gate, (t, f) = data_input(self.space, data, x, gates)

        def stem(k: int, s: int) -> torch.Tensor:
            kk, ss = self.kernels[k], self.stem_strides[s]
            pt, pb, _ = same_pad(t, kk, ss)
            return F.conv2d(F.pad(x, (0, 0, pt, pb)), _centre(self.stems[data_index].weight, kk), stride=(ss, 1))

        def stem_k(k: int) -> torch.Tensor:
            y = _mix(gates["stem.stride"], True, [lambda s=s: stem(k, s) for s in range(len(self.stem_strides))])
            return F.relu(self.stem_bns[data_index][k](y))

        h = _mix(gates["stem.kernel"], hard, [lambda k=k: stem_k(k) for k in range(len(self.kernels))])
        mask = self._mask(gates["stem.width"])
        h = h * mask * data_gate
        slot = 0  # weight slot of the next block that runs a conv
        for i in range(self.space.cfg.n_blocks):
            g = gates[f"block{i}.op"]
            wmask = self._mask(gates[f"block{i}.width"])

            def block(op: str, stride: int, i: int = i, j: int = slot, h: torch.Tensor = h,
                      mask: torch.Tensor = mask, wmask: torch.Tensor = wmask) -> torch.Tensor:
                parsed = parse_op(op)
                if parsed is None:
                    if stride == 1:
                        return h
                    pt, pb, _ = same_pad(h.shape[2], stride, stride)
                    y = F.conv2d(F.pad(h, (0, 0, pt, pb)), _centre(self.down[i].weight, stride), stride=(stride, 1),
                                 groups=self.cmax)
                    return F.relu(self.down_bn[i](y)) * mask
                kind, k = parsed
                pt, pb, _ = same_pad(h.shape[2], k, stride)
                hp = F.pad(h, (0, 0, pt, pb))
                if kind == "conv":
                    y = F.conv2d(hp, _centre(self.conv[j].weight, k), stride=(stride, 1))
                    return F.relu(self.conv_bn[j](y)) * wmask
                y = F.conv2d(hp, _centre(self.dw[j].weight, k), stride=(stride, 1), groups=self.cmax)
                y = F.relu(self.dw_bn[j](y)) * mask
                return F.relu(self.pw_bn[j](self.pw[j](y))) * wmask

            def at_stride(s: int, block: Any = block, g: torch.Tensor = g) -> torch.Tensor:
                return _mix(g, hard, [lambda op=op: block(op, s) for op in self.ops])

            h = _mix(gates[f"block{i}.stride"], True,  # shape-changing: always sampled
                     [lambda s=s: at_stride(s) for s in self.strides])
            skip_w = sum(g[m] for m, op in enumerate(self.ops) if op == "skip") if "skip" in self.ops else 0.0
            mask = skip_w * mask + (1 - skip_w) * wmask
            if not hard or self.ops[int(torch.argmax(g.detach()))] != "skip":
                slot += 1  # single path: skipped blocks are compacted away (see kws-dscnn)
        return self.classifier(h.mean(dim=(2, 3)))

    # ---- weight inheritance ----------------------------------------------------------------
    @torch.no_grad()
    def extract(self, spec: ArchSpec, compact: bool = True) -> nn.Module:
        """The plain network of ``spec`` (``space.build``) carrying this supernet's weights, so that
        in eval mode it computes what the supernet computes at the one-hot selection of ``spec``.
        ``compact`` follows the hard (single-path) slot assignment, otherwise block i uses slot i."""
        space = self.space
        model = space.build(spec)
        convs = [d for d in space.layers(spec) if d.kind == "conv2d"]
        ch = spec.choices
        d_idx = self.datas.index(spec.data)
        slot, slots = 0, {}
        for i in range(space.cfg.n_blocks):
            slots[i] = slot
            if not compact or ch[f"block{i}.op"] != "skip":
                slot += 1

        def copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, n: int) -> None:
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(dst, name).copy_(getattr(src, name)[:n])
            dst.num_batches_tracked.copy_(src.num_batches_tracked)

        for desc, seq in zip(convs, model.features):
            conv = next(m for m in seq if isinstance(m, nn.Conv2d))
            bn = next(m for m in seq if isinstance(m, nn.BatchNorm2d))
            c_in, c_out, k = desc.in_shape[0], desc.out_shape[0], desc.kernel[0]
            if desc.name == "stem":
                kk = self.kernels.index(k)
                conv.weight.copy_(_centre(self.stems[d_idx].weight, k)[:c_out])
                copy_bn(bn, self.stem_bns[d_idx][kk], c_out)
                continue
            block, layer = desc.name.split(".")
            i = int(block[len("block"):])
            j = slots[i]
            src_conv, src_bn = {
                "conv": (self.conv[j] if self.conv else None, self.conv_bn[j] if self.conv_bn else None),
                "dw": (self.dw[j] if self.dw else None, self.dw_bn[j] if self.dw_bn else None),
                "pw": (self.pw[j] if self.pw else None, self.pw_bn[j] if self.pw_bn else None),
                "down": (self.down[i] if self.down else None, self.down_bn[i] if self.down_bn else None),
            }[layer]
            assert src_conv is not None and src_bn is not None
            w = _centre(src_conv.weight, k)
            conv.weight.copy_(w[:c_out] if desc.groups > 1 else w[:c_out, :c_in])
            copy_bn(bn, src_bn, c_out)
        fc = model.classifier
        c = fc.in_features
        fc.weight.copy_(self.classifier.weight[:, :c])
        fc.bias.copy_(self.classifier.bias)
        return model
