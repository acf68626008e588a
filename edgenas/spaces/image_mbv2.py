"""Image search space: MobileNetV2-style inverted-residual networks with their input front end.

Input: [N, C, r, r] (C = 3 for RGB, 1 for grey). Network: a 3×3 stem convolution (stride and width
searched) → stages of inverted-residual blocks → global average pooling → linear. A stage has a
fixed stride (config ``strides``) and a searched width; its first block changes shape (stride,
width) and always runs; every later block is a residual block that may be skipped (depth is
searched). Every block searches its expansion (``e1`` has no expand convolution) and depthwise
kernel. A block: 1×1 expand (ReLU6) → k×k depthwise (ReLU6) → 1×1 project (linear) [→ add].

Width is per stage, not per block: a residual add needs the block's input and output widths to
match, and MobileNetV2 (and every MCU variant of it) keeps one width per stage.

Data choice points (resolution, colour) select the input tensor; every data option has its own
stem (3 or 1 input channels, and its own statistics) into one body shared across resolutions (the
body is fully convolutional, as Once-for-All's; the derived network is trained from scratch).
The supernet shares weights at the maximum width, expansion and kernel (narrower channel
prefixes, centred kernel slices) and selects them with masks, as the KWS space does.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from edgenas.errors import ConfigError
from edgenas.layers import GraphNet
from edgenas.spaces.base import SPACES, ChoicePoint, Gates, LayerCostFn, Probs, SearchSpace
from edgenas.spaces.kws_dscnn import _mix, data_input, same_pad
from edgenas.spec import ArchSpec, LayerDesc, with_liveness
from edgenas.tasks.image import COLOURS, ImageConfig


@dataclass(frozen=True)
class ImageSpaceConfig:
    """The option sets of the space (``--set space.resolutions=[24,32]`` …)."""

    resolutions: tuple[int, ...] = (16, 24, 32, 40, 48)
    colours: tuple[str, ...] = ("rgb", "grey")
    stem_strides: tuple[int, ...] = (1, 2)
    stem_widths: tuple[int, ...] = (8, 16)
    strides: tuple[int, ...] = (1, 2, 2)  # per stage
    blocks: tuple[int, ...] = (2, 2, 2)  # blocks per stage (all but the first skippable)
    widths: tuple[tuple[int, ...], ...] = ((8, 16), (16, 32), (32, 64))  # per stage
    expansions: tuple[int, ...] = (1, 3, 6)
    kernels: tuple[int, ...] = (3, 5)


def _pad(size: int, k: int, s: int) -> tuple[int, int, int]:
    return same_pad(size, k, s)


@SPACES.register("image-mbv2")
class ImageMBv2Space(SearchSpace):
    name = "image-mbv2"
    config_class = ImageSpaceConfig
    version = 1
    task = "image"

    def __init__(self, num_classes: int, config: ImageSpaceConfig | None = None,
                 source_size: tuple[int, int] = (32, 32)) -> None:
        cfg = config or ImageSpaceConfig()
        if not (len(cfg.strides) == len(cfg.blocks) == len(cfg.widths)) or not cfg.blocks:
            raise ConfigError("space.strides, space.blocks and space.widths need one entry per stage "
                              f"(got {len(cfg.strides)}, {len(cfg.blocks)}, {len(cfg.widths)})")
        if any(b < 1 for b in cfg.blocks) or any(s not in (1, 2) for s in (*cfg.strides, *cfg.stem_strides)):
            raise ConfigError("every stage needs ≥ 1 block, and strides are 1 or 2")
        if any(c not in COLOURS for c in cfg.colours) or not cfg.colours:
            raise ConfigError(f"space.colours must be among {', '.join(COLOURS)}, got {list(cfg.colours)}")
        if not cfg.resolutions or min(cfg.resolutions) < 8:
            raise ConfigError(f"space.resolutions must be ≥ 8 px, got {list(cfg.resolutions)}")
        if any(not ws for ws in cfg.widths) or not cfg.stem_widths or not cfg.expansions or not cfg.kernels:
            raise ConfigError("every width, expansion and kernel option set needs at least one option")
        if any(k % 2 == 0 for k in cfg.kernels):
            raise ConfigError(f"depthwise kernels must be odd, got {list(cfg.kernels)}")
        self.cfg = cfg
        self.source_size = (int(source_size[0]), int(source_size[1]))
        data_points = [ChoicePoint("data.resolution", tuple(str(r) for r in cfg.resolutions), "data", sampled=True),
                       ChoicePoint("data.colour", tuple(cfg.colours), "data", sampled=True)]
        arch = [ChoicePoint("stem.stride", tuple(str(s) for s in cfg.stem_strides), sampled=True),
                ChoicePoint("stem.width", tuple(str(w) for w in cfg.stem_widths))]
        ops = tuple(f"e{e}" for e in cfg.expansions)
        self.blocks: list[tuple[int, int, bool]] = []  # (block index, stage, first of its stage)
        for s, n in enumerate(cfg.blocks):
            arch.append(ChoicePoint(f"s{s}.width", tuple(str(w) for w in cfg.widths[s])))
            for j in range(n):
                i = len(self.blocks)
                self.blocks.append((i, s, j == 0))
                arch.append(ChoicePoint(f"b{i}.op", ops if j == 0 else ops + ("skip",)))
                arch.append(ChoicePoint(f"b{i}.kernel", tuple(str(k) for k in cfg.kernels)))
        super().__init__(num_classes, data_points, arch)

    # ---- data ------------------------------------------------------------------------------
    def data_config(self, labels: Mapping[str, str]) -> ImageConfig:
        return ImageConfig(resolution=int(labels["data.resolution"]), colour=labels["data.colour"],
                           source_h=self.source_size[0], source_w=self.source_size[1])

    def data_labels(self, cfg: ImageConfig) -> dict[str, str]:
        if (cfg.source_h, cfg.source_w) != self.source_size:
            raise ConfigError(f"data configuration {cfg.key()} is for {cfg.source_h}x{cfg.source_w} px sources, "
                              f"this space for {self.source_size[0]}x{self.source_size[1]}")
        return {"data.resolution": str(cfg.resolution), "data.colour": cfg.colour}

    # ---- layer descriptors (the one place shapes are computed) -----------------------------
    def _stem(self, data: ImageConfig, stride: int, width: int) -> LayerDesc:
        r = data.resolution
        pt, pb, o = _pad(r, 3, stride)
        return LayerDesc("stem", "conv2d", (data.channels, r, r), (width, o, o), (3, 3), (stride, stride),
                         (pt, pb, pt, pb), activation="relu6")

    def _stage_hw(self, data: ImageConfig, stem_stride: int) -> list[int]:
        """Spatial side entering every stage, and after the last one."""
        hw = [_pad(data.resolution, 3, stem_stride)[2]]
        for s in self.cfg.strides:
            hw.append(_pad(hw[-1], 3, s)[2])
        return hw

    @staticmethod
    def _block(i: int, hw: int, c_in: int, c_out: int, e: int, k: int, stride: int, residual: bool,
               prev: str = "") -> list[LayerDesc]:
        """One inverted-residual block; ``held`` set as :func:`with_liveness` does (the block input
        stays live until its add, except while a layer reads it)."""
        skip = c_in * hw * hw if residual else 0
        m = c_in * e
        pt, pb, o = _pad(hw, k, stride)
        out: list[LayerDesc] = []
        if e > 1:
            out.append(LayerDesc(f"b{i}.expand", "conv2d", (c_in, hw, hw), (m, hw, hw), activation="relu6"))
        out.append(LayerDesc(f"b{i}.dw", "conv2d", (m, hw, hw), (m, o, o), (k, k), (stride, stride), (pt, pb, pt, pb),
                             groups=m, activation="relu6", held=skip if e > 1 else 0))
        out.append(LayerDesc(f"b{i}.project", "conv2d", (m, o, o), (c_out, o, o), held=skip))
        if residual:
            out.append(LayerDesc(f"b{i}.add", "add", (c_out, o, o), (c_out, o, o), bias=False,
                                 inputs=(prev, f"b{i}.project")))
        return out

    def _head(self, hw: int, c: int) -> list[LayerDesc]:
        return [LayerDesc("pool", "global_avgpool", (c, hw, hw), (c, 1, 1), bias=False),
                LayerDesc("fc", "linear", (c, 1, 1), (self.num_classes, 1, 1))]

    def layers(self, spec: ArchSpec) -> list[LayerDesc]:
        ch = spec.choices
        stem_stride = int(ch["stem.stride"])
        hws = self._stage_hw(spec.data, stem_stride)
        c = int(ch["stem.width"])
        out = [self._stem(spec.data, stem_stride, c)]
        for i, s, first in self.blocks:
            op = ch[f"b{i}.op"]
            if op == "skip":
                continue
            w = int(ch[f"s{s}.width"])
            blk = self._block(i, hws[s] if first else hws[s + 1], c, w, int(op[1:]), int(ch[f"b{i}.kernel"]),
                              self.cfg.strides[s] if first else 1, not first, prev=out[-1].name)
            out += blk
            c = w
        return out + self._head(hws[-1], c)

    def all_layers(self) -> Iterator[LayerDesc]:
        seen: set[str] = set()
        for d in self._every_desc():
            if d.key() not in seen:
                seen.add(d.key())
                yield d

    def _every_desc(self) -> Iterator[LayerDesc]:
        cfg = self.cfg
        for data, ss in itertools.product(self.data_configs(), cfg.stem_strides):
            hws = self._stage_hw(data, ss)
            for c in cfg.stem_widths:
                yield self._stem(data, ss, c)
            for s, (stride, ws) in enumerate(zip(cfg.strides, cfg.widths)):
                ins = cfg.stem_widths if s == 0 else cfg.widths[s - 1]
                for e, k in itertools.product(cfg.expansions, cfg.kernels):
                    for ci, co in itertools.product(ins, ws):
                        yield from self._block(0, hws[s], ci, co, e, k, stride, False)
                    if cfg.blocks[s] > 1:
                        for w in ws:
                            yield from self._block(1, hws[s + 1], w, w, e, k, 1, True)
            for c in cfg.widths[-1]:
                yield from self._head(hws[-1], c)

    def cheapest_candidates(self) -> Iterable[ArchSpec]:
        """Every data option and stem stride with everything else at its smallest: every later
        block skipped, the smallest widths, expansion and kernel. Each of these only adds
        channels, layers or taps, so for a layer cost that grows with them (MACs, bytes, measured
        latency as the table has it) the cheapest spec is among these (20 by default: the
        feasibility check measures each as a whole network)."""
        cfg = self.cfg
        small = {"stem.width": str(min(cfg.stem_widths)),
                 **{f"s{s}.width": str(min(ws)) for s, ws in enumerate(cfg.widths)}}
        for i, _, first in self.blocks:
            small[f"b{i}.op"] = f"e{min(cfg.expansions)}" if first else "skip"
            small[f"b{i}.kernel"] = str(min(cfg.kernels))
        pts = [*self.data_points, self.point("stem.stride")]
        for combo in itertools.product(*[p.options for p in pts]):
            yield self.spec({**small, **dict(zip([p.name for p in pts], combo))})

    # ---- expected cost under independent choice probabilities ------------------------------
    def expected_layer_costs(self, probs: Probs, layer_cost: LayerCostFn) -> torch.Tensor:
        """Exact expectation of every slot: stem; per block expand, dw, project (and add); pool, fc.
        Widths are per stage, so the channels entering a block are the previous stage's width (the
        stem's for stage 0), independent of skips: each slot is a small contraction of a table."""
        t = self.cost_tables(layer_cost)
        p_ctx = torch.einsum("d,s->ds", self.data_probs(probs), probs["stem.stride"])
        p_stem = probs["stem.width"]
        slots = [torch.einsum("dsc,ds,c->", t["stem"], p_ctx, p_stem)]
        ne = len(self.cfg.expansions)
        for i, s, first in self.blocks:
            p_op, p_k, p_out = probs[f"b{i}.op"], probs[f"b{i}.kernel"], probs[f"s{s}.width"]
            p_e = p_op[:ne]  # later blocks: the skip option carries the rest of the mass (cost 0)
            if first:
                p_in = p_stem if s == 0 else probs[f"s{s - 1}.width"]
                for part in ("expand", "dw", "project"):
                    slots.append(torch.einsum("dsiwek,ds,i,w,e,k->", t[f"first{s}.{part}"], p_ctx, p_in, p_out,
                                              p_e, p_k))
            else:
                for part in ("expand", "dw", "project", "add"):
                    slots.append(torch.einsum("dswek,ds,w,e,k->", t[f"later{s}.{part}"], p_ctx, p_out, p_e, p_k))
        p_last = probs[f"s{len(self.cfg.blocks) - 1}.width"]
        for part in ("pool", "fc"):
            slots.append(torch.einsum("dsc,ds,c->", t[part], p_ctx, p_last))
        return torch.stack(slots)

    def build_cost_tables(self, layer_cost: LayerCostFn) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        datas, sss = self.data_configs(), cfg.stem_strides
        D, S, E, K = len(datas), len(sss), len(cfg.expansions), len(cfg.kernels)
        t: dict[str, torch.Tensor] = {"stem": torch.zeros(D, S, len(cfg.stem_widths)),
                                      "pool": torch.zeros(D, S, len(cfg.widths[-1])),
                                      "fc": torch.zeros(D, S, len(cfg.widths[-1]))}
        for s in range(len(cfg.blocks)):
            ins = cfg.stem_widths if s == 0 else cfg.widths[s - 1]
            for part in ("expand", "dw", "project"):
                t[f"first{s}.{part}"] = torch.zeros(D, S, len(ins), len(cfg.widths[s]), E, K)
            for part in ("expand", "dw", "project", "add"):
                t[f"later{s}.{part}"] = torch.zeros(D, S, len(cfg.widths[s]), E, K)

        def put(prefix: str, idx: tuple[int, ...], descs: list[LayerDesc]) -> None:
            for d in descs:
                t[f"{prefix}.{d.name.split('.')[1]}"][idx] = layer_cost(d)

        for (d, data), (si, ss) in itertools.product(enumerate(datas), enumerate(sss)):
            hws = self._stage_hw(data, ss)
            for c, w in enumerate(cfg.stem_widths):
                t["stem"][d, si, c] = layer_cost(self._stem(data, ss, w))
            for s, (stride, ws) in enumerate(zip(cfg.strides, cfg.widths)):
                ins = cfg.stem_widths if s == 0 else cfg.widths[s - 1]
                for (e, ev), (k, kv) in itertools.product(enumerate(cfg.expansions), enumerate(cfg.kernels)):
                    for (a, ci), (b, co) in itertools.product(enumerate(ins), enumerate(ws)):
                        put(f"first{s}", (d, si, a, b, e, k), self._block(0, hws[s], ci, co, ev, kv, stride, False))
                    for b, w in enumerate(ws):  # a stage of one block has no later block (its table stays 0)
                        if cfg.blocks[s] > 1:
                            put(f"later{s}", (d, si, b, e, k), self._block(1, hws[s + 1], w, w, ev, kv, 1, True))
            for c, w in enumerate(cfg.widths[-1]):
                pool, fc = self._head(hws[-1], w)
                t["pool"][d, si, c], t["fc"][d, si, c] = layer_cost(pool), layer_cost(fc)
        return t

    # ---- networks --------------------------------------------------------------------------
    def build(self, spec: ArchSpec) -> nn.Module:
        layers = self.layers(spec)
        if layers[-1].out_shape[0] != spec.num_classes:
            raise ValueError(f"classifier has {layers[-1].out_shape[0]} outputs, spec has {spec.num_classes} classes")
        return GraphNet(with_liveness(layers))

    def supernet(self) -> "ImageSupernet":
        return ImageSupernet(self)


def _prefix_masks(widths: list[int], cmax: int) -> torch.Tensor:
    m = torch.zeros(len(widths), cmax)
    for j, w in enumerate(widths):
        m[j, :w] = 1.0
    return m


class ImageSupernet(nn.Module):
    """Every spec of an :class:`ImageMBv2Space` in one network: weights shared at the largest
    width, expansion and kernel; masks select prefixes (mixed under soft gates)."""

    def __init__(self, space: ImageMBv2Space) -> None:
        super().__init__()
        self.space = space
        cfg = space.cfg
        self.datas = space.data_configs()
        self.stem_widths = list(cfg.stem_widths)
        smax = max(cfg.stem_widths)
        self.stems = nn.ModuleList(nn.Conv2d(d.channels, smax, 3, bias=False) for d in self.datas)
        self.stem_bns = nn.ModuleList(nn.BatchNorm2d(smax) for _ in self.datas)
        self.register_buffer("stem_masks", _prefix_masks(self.stem_widths, smax))
        self.kmax, self.emax = max(cfg.kernels), max(cfg.expansions)
        self.expand, self.expand_bn, self.dw, self.dw_bn, self.proj, self.proj_bn = (nn.ModuleList() for _ in range(6))
        self.cin_max: list[int] = []
        for i, s, first in space.blocks:
            cin = (smax if s == 0 else max(cfg.widths[s - 1])) if first else max(cfg.widths[s])
            cout, mid = max(cfg.widths[s]), cin * self.emax
            self.cin_max.append(cin)
            self.expand.append(nn.Conv2d(cin, mid, 1, bias=False))
            self.expand_bn.append(nn.BatchNorm2d(mid))
            self.dw.append(nn.Conv2d(mid, mid, self.kmax, groups=mid, bias=False))
            self.dw_bn.append(nn.BatchNorm2d(mid))
            self.proj.append(nn.Conv2d(mid, cout, 1, bias=False))
            self.proj_bn.append(nn.BatchNorm2d(cout))
        for s, ws in enumerate(cfg.widths):
            self.register_buffer(f"width_masks{s}", _prefix_masks(list(ws), max(ws)))
        self.classifier = nn.Linear(max(cfg.widths[-1]), space.num_classes)
        self.to(memory_format=torch.channels_last)

    @staticmethod
    def _mask(gate: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return (gate[:, None] * masks).sum(0)[None, :, None, None]

    def _mid_mask(self, in_gate: torch.Tensor, in_widths: list[int], e: int, mid: int) -> torch.Tensor:
        """Mixture over input widths w of the prefix e·w of the expanded channels."""
        masks = _prefix_masks([e * w for w in in_widths], mid).to(in_gate.device)
        return self._mask(in_gate, masks)

    def forward(self, x: torch.Tensor, data_index: int, gates: Gates, hard: bool) -> torch.Tensor:
        space, cfg = self.space, self.space.cfg
        data = self.datas[data_index]
        x, data_gate, (r, _) = data_input(space, data, x, gates)
        if x.shape[1] != data.channels:
            raise ValueError(f"input has {x.shape[1]} channels, data option {data.key()} {data.channels}")

        def stem(si: int) -> torch.Tensor:
            ss = int(space.point("stem.stride").options[si])
            pt, pb, _ = _pad(r, 3, ss)
            y = F.conv2d(F.pad(x, (pt, pb, pt, pb)), self.stems[data_index].weight, stride=ss)
            return F.relu6(self.stem_bns[data_index](y))

        h = _mix(gates["stem.stride"], True, [lambda si=si: stem(si)
                                               for si in range(len(cfg.stem_strides))])
        in_gate, in_widths = gates["stem.width"], self.stem_widths
        mask = self._mask(in_gate, self.stem_masks)
        h = h * mask * data_gate
        ops = [f"e{e}" for e in cfg.expansions]
        for i, s, first in space.blocks:
            out_gate, out_masks = gates[f"s{s}.width"], getattr(self, f"width_masks{s}")
            out_mask = self._mask(out_gate, out_masks)
            stride = cfg.strides[s] if first else 1
            cin = self.cin_max[i]

            def block(e: int, k: int, i: int = i, h: torch.Tensor = h, mask: torch.Tensor = mask,
                      in_gate: torch.Tensor = in_gate, in_widths: list[int] = in_widths,
                      out_mask: torch.Tensor = out_mask, stride: int = stride, cin: int = cin,
                      first: bool = first) -> torch.Tensor:
                hin = h[:, :cin]
                if e > 1:
                    mid = cin * e
                    y = F.conv2d(hin, self.expand[i].weight[:mid])
                    y = F.relu6(F.batch_norm(y, self.expand_bn[i].running_mean[:mid], self.expand_bn[i].running_var[:mid],
                                             self.expand_bn[i].weight[:mid], self.expand_bn[i].bias[:mid],
                                             self.training, 0.1, 1e-5))
                    y = y * self._mid_mask(in_gate, in_widths, e, mid)
                else:
                    mid, y = cin, hin
                w = self.dw[i].weight[:mid]
                o = (self.kmax - k) // 2
                pt, pb, _ = _pad(y.shape[-1], k, stride)
                y = F.conv2d(F.pad(y, (pt, pb, pt, pb)), w[:, :, o:o + k, o:o + k], stride=stride, groups=mid)
                bn = self.dw_bn[i]
                y = F.relu6(F.batch_norm(y, bn.running_mean[:mid], bn.running_var[:mid], bn.weight[:mid],
                                         bn.bias[:mid], self.training, 0.1, 1e-5))
                if e > 1:
                    y = y * self._mid_mask(in_gate, in_widths, e, mid)
                else:
                    y = y * mask[:, :mid]
                y = self.proj_bn[i](F.conv2d(y, self.proj[i].weight[:, :mid])) * out_mask
                return y if first else h + y

            g_op, g_k = gates[f"b{i}.op"], gates[f"b{i}.kernel"]

            def with_kernel(e: int, g_k: torch.Tensor = g_k, block=block) -> torch.Tensor:
                return _mix(g_k, hard, [lambda k=k: block(e, k) for k in cfg.kernels])

            cands = [lambda e=e: with_kernel(e) for e in cfg.expansions]
            if len(g_op) > len(ops):
                cands.append(lambda h=h: h)  # skip
            h = _mix(g_op, hard, cands)
            mask, in_gate, in_widths = out_mask, out_gate, list(cfg.widths[s])
        return self.classifier(h.mean(dim=(2, 3)))
