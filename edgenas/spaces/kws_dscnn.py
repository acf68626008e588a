"""KWS search space: the DS-CNN family (Hello Edge) with its audio front end.

Input: MFCC features [N, 1, frames, n_mfcc]. Network: a stem convolution (kernel, stride and
width searched) → ``n_blocks`` blocks, each a depthwise-separable conv of a searched kernel or
``skip`` (so depth is searched), with a searched width → global average pooling → linear.

Data choice points (sample rate, n_mfcc, window/hop) select the feature tensor; every data
configuration has its own stem into the shared body. The supernet shares body weights at the
maximum width and selects narrower widths with channel masks.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from edgenas.errors import ConfigError
from edgenas.layers import chain_module, layer_module
from edgenas.spaces.base import SPACES, ChoicePoint, Gates, LayerCostFn, Probs, SearchSpace, width_masks
from edgenas.spec import ArchSpec, DataConfig, LayerDesc, same_pad


@dataclass(frozen=True)
class KWSSpaceConfig:
    """The option sets of the space; every set is configurable (``--set space.widths=[16,32]``)."""

    sample_rates: tuple[int, ...] = (8000, 16000)
    n_mfcc: tuple[int, ...] = (10, 20, 40)
    # window/hop in ms: 64/32 halves the frames (front end and classifier) of 30/10's third
    windows: tuple[str, ...] = ("30/10", "40/20", "64/32")
    # mel bands: one value is fixed, several are a data choice point (every n_mfcc must fit the smallest)
    n_mels: tuple[int, ...] = (40,)
    stem_kernels: tuple[str, ...] = ("3x3", "5x3", "10x4")  # time x frequency
    # temporal resolution is already searched by the window/hop data choice; "1x1" and "2x1" are
    # allowed (they multiply search time by 2-4x and, being shape-changing, are always sampled)
    stem_strides: tuple[str, ...] = ("2x2",)
    widths: tuple[int, ...] = (16, 32, 48, 64, 96, 128)  # beyond DS-CNN-S's 64: a loose budget buys more
    n_blocks: int = 5
    block_ops: tuple[str, ...] = ("dw3x3", "dw5x5", "skip")
    # supernet only: one stem convolution for every data option (each keeps its own BatchNorm),
    # so the stem trains on every step instead of on a data option's share of them
    share_stem: bool = False


def _pair(label: str) -> tuple[int, int]:
    try:
        a, b = label.lower().split("x")
        return int(a), int(b)
    except ValueError:
        raise ConfigError(f"expected AxB, got {label!r}") from None


def _op_kernel(op: str) -> tuple[int, int] | None:
    if op == "skip":
        return None
    if not op.startswith("dw"):
        raise ConfigError(f"unknown block op {op!r}")
    return _pair(op[2:])


def _window(label: str) -> tuple[float, float]:
    try:
        w, h = label.split("/")
        return float(w), float(h)
    except ValueError:
        raise ConfigError(f"window must be 'win_ms/hop_ms', got {label!r}") from None


def _num(x: float) -> str:
    return f"{x:g}"


@SPACES.register("kws-dscnn")
class KWSDSCNNSpace(SearchSpace):
    name = "kws-dscnn"
    config_class = KWSSpaceConfig  # the dataclass of its ``space.*`` options
    version = 1
    task = "kws"

    def __init__(self, num_classes: int, config: KWSSpaceConfig | None = None, max_sample_rate: int | None = None) -> None:
        cfg = config or KWSSpaceConfig()
        rates = tuple(r for r in cfg.sample_rates if max_sample_rate is None or r <= max_sample_rate)
        if not rates:
            raise ConfigError(f"no sample rate of {list(cfg.sample_rates)} is ≤ the dataset's native rate {max_sample_rate}")
        mels = (cfg.n_mels,) if isinstance(cfg.n_mels, int) else tuple(int(m) for m in cfg.n_mels)
        if not mels or min(mels) <= 0:
            raise ConfigError(f"space.n_mels must be positive integers, got {cfg.n_mels!r}")
        if any(n > min(mels) for n in cfg.n_mfcc):
            raise ConfigError(f"n_mfcc options {list(cfg.n_mfcc)} exceed n_mels={min(mels)} "
                              "(every n_mfcc option must fit every n_mels option)")
        self._mels = mels
        for w in cfg.windows:
            _window(w)
        for k in cfg.stem_kernels + cfg.stem_strides:
            _pair(k)
        for op in cfg.block_ops:
            _op_kernel(op)
        self.cfg = cfg
        data_points = [
            ChoicePoint("data.sample_rate", tuple(str(r) for r in rates), "data", sampled=True),
            ChoicePoint("data.n_mfcc", tuple(str(n) for n in cfg.n_mfcc), "data", sampled=True),
            *([ChoicePoint("data.n_mels", tuple(str(m) for m in mels), "data", sampled=True)] if len(mels) > 1 else []),
            ChoicePoint("data.window", tuple(f"{_num(_window(w)[0])}/{_num(_window(w)[1])}" for w in cfg.windows),
                        "data", sampled=True),
        ]
        widths = tuple(str(w) for w in cfg.widths)
        arch_points = [
            ChoicePoint("stem.kernel", tuple(cfg.stem_kernels)),
            ChoicePoint("stem.stride", tuple(cfg.stem_strides), sampled=True),
            ChoicePoint("stem.width", widths),
        ]
        for i in range(cfg.n_blocks):
            arch_points.append(ChoicePoint(f"block{i}.op", tuple(cfg.block_ops)))
            arch_points.append(ChoicePoint(f"block{i}.width", widths))
        super().__init__(num_classes, data_points, arch_points)

    # ---- data ------------------------------------------------------------------------------
    def data_config(self, labels: Mapping[str, str]) -> DataConfig:
        win, hop = _window(labels["data.window"])
        return DataConfig(sample_rate=int(labels["data.sample_rate"]), n_mfcc=int(labels["data.n_mfcc"]),
                          n_mels=int(labels.get("data.n_mels", self._mels[0])), win_ms=win, hop_ms=hop)

    def data_labels(self, cfg: DataConfig) -> dict[str, str]:
        labels = {"data.sample_rate": str(cfg.sample_rate), "data.n_mfcc": str(cfg.n_mfcc),
                  "data.window": f"{_num(cfg.win_ms)}/{_num(cfg.hop_ms)}"}
        if len(self._mels) > 1:
            labels["data.n_mels"] = str(cfg.n_mels)
        return labels

    # ---- layer descriptors (the one place shapes are computed) -----------------------------
    @staticmethod
    def _stem_desc(data: DataConfig, kernel: str, stride: str, width: int) -> LayerDesc:
        (t, f), (kh, kw), (sh, sw) = data.feature_shape, _pair(kernel), _pair(stride)
        pt, pb, ho = same_pad(t, kh, sh)
        pl, pr, wo = same_pad(f, kw, sw)
        return LayerDesc("stem", "conv2d", (1, t, f), (width, ho, wo), (kh, kw), (sh, sw), (pt, pb, pl, pr),
                         activation="relu")

    @staticmethod
    def _body_hw(data: DataConfig, kernel: str, stride: str) -> tuple[int, int]:
        d = KWSDSCNNSpace._stem_desc(data, kernel, stride, 1)
        return d.out_shape[1], d.out_shape[2]

    @staticmethod
    def _block_descs(i: int, hw: tuple[int, int], c_in: int, op: str, width: int) -> list[LayerDesc]:
        k = _op_kernel(op)
        if k is None:
            return []
        h, w = hw
        pad = ((k[0] - 1) // 2, k[0] // 2, (k[1] - 1) // 2, k[1] // 2)
        return [
            LayerDesc(f"block{i}.dw", "conv2d", (c_in, h, w), (c_in, h, w), k, (1, 1), pad, groups=c_in,
                      activation="relu"),
            LayerDesc(f"block{i}.pw", "conv2d", (c_in, h, w), (width, h, w), (1, 1), activation="relu"),
        ]

    def _head_descs(self, hw: tuple[int, int], c: int) -> list[LayerDesc]:
        return [
            LayerDesc("pool", "global_avgpool", (c, hw[0], hw[1]), (c, 1, 1), bias=False),
            LayerDesc("fc", "linear", (c, 1, 1), (self.num_classes, 1, 1)),
        ]

    def layers(self, spec: ArchSpec) -> list[LayerDesc]:
        ch = spec.choices
        c = int(ch["stem.width"])
        out = [self._stem_desc(spec.data, ch["stem.kernel"], ch["stem.stride"], c)]
        hw = out[0].out_shape[1:]
        for i in range(self._n_blocks(spec)):
            blk = self._block_descs(i, hw, c, ch[f"block{i}.op"], int(ch[f"block{i}.width"]))
            out += blk
            if blk:
                c = blk[-1].out_shape[0]
        return out + self._head_descs(hw, c)

    @staticmethod
    def _n_blocks(spec: ArchSpec) -> int:
        return sum(1 for k in spec.choices if k.endswith(".op"))

    def all_layers(self) -> Iterator[LayerDesc]:
        seen: set[str] = set()
        widths = [int(w) for w in self.point("stem.width").options]
        for data in self.data_configs():
            for kernel, stride in itertools.product(self.point("stem.kernel").options, self.point("stem.stride").options):
                hw = self._body_hw(data, kernel, stride)
                descs: list[LayerDesc] = []
                for c in widths:
                    descs.append(self._stem_desc(data, kernel, stride, c))
                    descs += self._head_descs(hw, c)
                    for op, w in itertools.product(self.cfg.block_ops, widths):
                        descs += self._block_descs(0, hw, c, op, w)
                for d in descs:
                    if d.key() not in seen:
                        seen.add(d.key())
                        yield d

    def cheapest_candidates(self) -> Iterable[ArchSpec]:
        """All-skip bodies over every data config and stem: adding a block never lowers a cost
        that sums or maxes non-negative layer costs, so the cheapest spec is among these."""
        for combo in itertools.product(*[p.options for p in self.data_points],
                                       self.point("stem.kernel").options, self.point("stem.stride").options,
                                       self.point("stem.width").options):
            sel = dict(zip([p.name for p in self.data_points] + ["stem.kernel", "stem.stride", "stem.width"], combo))
            # without skip, every body op is tried (all blocks alike) at the smallest width
            body_ops = ["skip"] if "skip" in self.cfg.block_ops else list(self.cfg.block_ops)
            small = min(self.point("block0.width").options, key=int)
            for op in body_ops:
                for i in range(self.cfg.n_blocks):
                    sel[f"block{i}.op"] = op
                    sel[f"block{i}.width"] = small
                yield self.spec(sel)

    # ---- expected cost under independent choice probabilities ------------------------------
    def expected_layer_costs(self, probs: Probs, layer_cost: LayerCostFn) -> torch.Tensor:
        """Exact expectation of every slot's cost (stem, dw_i, pw_i, pool, fc).

        The channels entering block i form a Markov chain over the skip/width choices, which is
        independent of the spatial size (data config × stem), so each slot's expectation is a
        small tensor contraction of a precomputed cost table.
        """
        t = self.cost_tables(layer_cost)
        p_data = self.data_probs(probs)  # [D]
        pk, ps, pw0 = probs["stem.kernel"], probs["stem.stride"], probs["stem.width"]
        p_hw = torch.einsum("d,k,s->dks", p_data, pk, ps)  # spatial context distribution
        slots = [torch.einsum("dksc,dks,c->", t["stem"], p_hw, pw0)]
        p_c = pw0  # distribution of the channels entering block i
        ops = self.cfg.block_ops
        for i in range(self.cfg.n_blocks):
            p_op, p_w = probs[f"block{i}.op"], probs[f"block{i}.width"]
            slots.append(torch.einsum("dkscm,dks,c,m->", t["dw"], p_hw, p_c, p_op))
            slots.append(torch.einsum("dkscmw,dks,c,m,w->", t["pw"], p_hw, p_c, p_op, p_w))
            p_skip = sum(p_op[j] for j, op in enumerate(ops) if op == "skip") if "skip" in ops else p_op.new_zeros(())
            p_c = p_skip * p_c + (1 - p_skip) * p_w
        slots.append(torch.einsum("dksc,dks,c->", t["pool"], p_hw, p_c))
        slots.append(torch.einsum("dksc,dks,c->", t["fc"], p_hw, p_c))
        return torch.stack(slots)

    def build_cost_tables(self, layer_cost: LayerCostFn) -> dict[str, torch.Tensor]:
        datas = self.data_configs()
        kernels, strides = self.point("stem.kernel").options, self.point("stem.stride").options
        widths = [int(w) for w in self.point("stem.width").options]
        ops = self.cfg.block_ops
        D, K, S, C, M = len(datas), len(kernels), len(strides), len(widths), len(ops)
        stem, pool, fc = torch.zeros(D, K, S, C), torch.zeros(D, K, S, C), torch.zeros(D, K, S, C)
        dw, pw = torch.zeros(D, K, S, C, M), torch.zeros(D, K, S, C, M, C)
        for (d, data), (k, kern), (s, strd) in itertools.product(enumerate(datas), enumerate(kernels), enumerate(strides)):
            hw = self._body_hw(data, kern, strd)
            for c, cw in enumerate(widths):
                stem[d, k, s, c] = layer_cost(self._stem_desc(data, kern, strd, cw))
                pool_d, fc_d = self._head_descs(hw, cw)
                pool[d, k, s, c], fc[d, k, s, c] = layer_cost(pool_d), layer_cost(fc_d)
                for m, op in enumerate(ops):
                    for w, ww in enumerate(widths):
                        blk = self._block_descs(0, hw, cw, op, ww)
                        if blk:
                            dw[d, k, s, c, m] = layer_cost(blk[0])
                            pw[d, k, s, c, m, w] = layer_cost(blk[1])
        tables = {"stem": stem, "dw": dw, "pw": pw, "pool": pool, "fc": fc}
        return tables

    # ---- networks --------------------------------------------------------------------------
    def build(self, spec: ArchSpec) -> nn.Module:
        return KWSNet(self.layers(spec), spec.num_classes)

    def supernet(self) -> "KWSSupernet":
        return KWSSupernet(self)


class KWSNet(nn.Module):
    """The plain network of one spec, built from its layer descriptors (see ``edgenas.layers``)."""

    def __init__(self, layers: list[LayerDesc], num_classes: int) -> None:
        super().__init__()
        self.features = chain_module([d for d in layers if d.kind == "conv2d"])
        fc = next(d for d in layers if d.kind == "linear")
        self.classifier = layer_module(fc)
        if fc.out_shape[0] != num_classes:
            raise ValueError(f"classifier has {fc.out_shape[0]} outputs, spec has {num_classes} classes")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(x.mean(dim=(2, 3)))


def _mix(weights: torch.Tensor, hard: bool, candidates: list[Any]) -> torch.Tensor:
    """Σ_k w_k · f_k(); under a hard (one-hot, straight-through) selection only the chosen f runs."""
    if hard:
        k = int(torch.argmax(weights.detach()))
        return weights[k] * candidates[k]()
    out = None
    for k, f in enumerate(candidates):
        term = weights[k] * f()
        out = term if out is None else out + term
    assert out is not None
    return out


def data_input(space: SearchSpace, data: DataConfig, x: torch.Tensor, gates: Gates
               ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """A supernet's input for data option ``data``: features checked against its shape and made
    channels-last, the product of the data choice points' gates at that option (it multiplies the
    stem output so the data logits get gradients), and the (frames, coefficients) shape."""
    t, f = data.feature_shape
    x = x.contiguous(memory_format=torch.channels_last)
    if x.shape[-2:] != (t, f):
        raise ValueError(f"features {tuple(x.shape[-2:])} do not match data option {data.key()} {(t, f)}")
    gate = torch.ones((), device=x.device)
    labels = space.data_labels(data)
    for p in space.data_points:
        gate = gate * gates[p.name][p.index(labels[p.name])]
    return x, gate, (t, f)


class KWSSupernet(nn.Module):
    """All specs of a :class:`KWSDSCNNSpace` in one network (weights shared at max width)."""

    def __init__(self, space: KWSDSCNNSpace) -> None:
        super().__init__()
        self.space = space
        cfg = space.cfg
        self.widths = [int(w) for w in space.point("stem.width").options]
        cmax = max(self.widths)
        self.cmax = cmax
        kernels = space.point("stem.kernel").options
        self.kernels, self.strides = kernels, space.point("stem.stride").options
        self.datas = space.data_configs()
        # one stem per data option (or one for all, ``share_stem``) at the largest kernel; smaller
        # kernels are its centred slices (so every step on a data option trains its stem), stride
        # and width applied at run time
        kmax = (max(_pair(k)[0] for k in kernels), max(_pair(k)[1] for k in kernels))
        self.stems = nn.ModuleList(nn.Conv2d(1, cmax, kmax, bias=False)
                                   for _ in range(1 if cfg.share_stem else len(self.datas)))
        self.stem_bns = nn.ModuleList(nn.ModuleList(nn.BatchNorm2d(cmax) for _ in kernels) for _ in self.datas)
        self.ops = [op for op in cfg.block_ops]
        # weight sharing inside a block: one depthwise conv at the largest kernel (smaller kernels
        # are its centred slices, as in Once-for-All) and one pointwise conv for every op, so a
        # block's weights train whenever it is not skipped; width is a channel prefix.
        dw_kernels = [_op_kernel(op) for op in self.ops if op != "skip"]
        kb = (max(k[0] for k in dw_kernels), max(k[1] for k in dw_kernels)) if dw_kernels else (1, 1)
        self.dw = nn.ModuleList(nn.Conv2d(cmax, cmax, kb, groups=cmax, bias=False) for _ in range(cfg.n_blocks))
        self.dw_bn = nn.ModuleList(nn.BatchNorm2d(cmax) for _ in range(cfg.n_blocks))
        self.pw = nn.ModuleList(nn.Conv2d(cmax, cmax, 1, bias=False) for _ in range(cfg.n_blocks))
        self.pw_bn = nn.ModuleList(nn.BatchNorm2d(cmax) for _ in range(cfg.n_blocks))
        self.classifier = nn.Linear(cmax, space.num_classes)
        self.register_buffer("width_masks", width_masks(self.widths, cmax))
        self.to(memory_format=torch.channels_last)  # 1.5-3x faster depthwise convs on CPU

    def _mask(self, gate: torch.Tensor) -> torch.Tensor:
        return (gate[:, None] * self.width_masks).sum(0)[None, :, None, None]

    def forward(self, x: torch.Tensor, data_index: int, gates: Gates, hard: bool) -> torch.Tensor:
        """Run the data option ``data_index`` under architecture ``gates``.

        ``gates`` holds, per choice point, a weight vector: one-hot with straight-through
        gradients when ``hard`` (single path), a probability vector otherwise (mixture). The data
        gates multiply the stem output so the data logits receive gradients too.
        """
        x, data_gate, (t, f) = data_input(self.space, self.datas[data_index], x, gates)

        def stem(k: int, s: int) -> torch.Tensor:
            (kh, kw), (sh, sw) = _pair(self.kernels[k]), _pair(self.strides[s])
            pt, pb, _ = same_pad(t, kh, sh)
            pl, pr, _ = same_pad(f, kw, sw)
            w = self.stems[0 if len(self.stems) == 1 else data_index].weight
            oh, ow = (w.shape[2] - kh) // 2, (w.shape[3] - kw) // 2
            return F.conv2d(F.pad(x, (pl, pr, pt, pb)), w[:, :, oh:oh + kh, ow:ow + kw], stride=(sh, sw))

        def stem_k(k: int) -> torch.Tensor:
            y = _mix(gates["stem.stride"], True, [  # shape-changing: always sampled
               lambda s=s: stem(k, s) for s in range(len(self.strides))])
            return F.relu(self.stem_bns[data_index][k](y))

        h = _mix(gates["stem.kernel"], hard, [lambda k=k: stem_k(k) for k in range(len(self.kernels))])
        mask = self._mask(gates["stem.width"])
        h = h * mask * data_gate
        slot = 0  # weight slot of the next block that runs
        for i in range(len(self.dw)):
            g = gates[f"block{i}.op"]

            def block(op: str, i: int = i, j: int = slot, h: torch.Tensor = h, mask: torch.Tensor = mask) -> torch.Tensor:
                k = _op_kernel(op)
                if k is None:
                    return h
                w = self.dw[j].weight
                oh, ow = (w.shape[2] - k[0]) // 2, (w.shape[3] - k[1]) // 2
                y = F.conv2d(h, w[:, :, oh:oh + k[0], ow:ow + k[1]], padding="same", groups=self.cmax)
                y = F.relu(self.dw_bn[j](y)) * mask
                y = F.relu(self.pw_bn[j](self.pw[j](y)))
                return y * self._mask(gates[f"block{i}.width"])

            h = _mix(g, hard, [lambda op=op: block(op) for op in self.ops])
            wmask = self._mask(gates[f"block{i}.width"])
            skip_w = sum(g[j] for j, op in enumerate(self.ops) if op == "skip") if "skip" in self.ops else 0.0
            mask = skip_w * mask + (1 - skip_w) * wmask
            if not hard:
                slot += 1
            elif self.ops[int(torch.argmax(g.detach()))] != "skip":
                # single path: skipped blocks are compacted away, so the k-th block that runs
                # always uses weight slot k (elastic depth as in Once-for-All). A middle skip in a
                # plain (non-residual) DS-CNN otherwise feeds the next block features of another
                # depth every step, and the supernet did not learn at all (measured on FSDD:
                # chance accuracy after 300 steps vs. 65% with compaction; see the report).
                slot += 1
        return self.classifier(h.mean(dim=(2, 3)))
