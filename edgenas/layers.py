"""Plain PyTorch modules for layer descriptors: one mapping shared by every consumer.

A space whose networks are a sequence of :class:`~edgenas.spec.LayerDesc` builds them with
:func:`chain_module`, one whose networks are a graph (``inputs``: residual adds, concatenation)
with :class:`GraphNet`; latency micro-models for formats that go through PyTorch (TFLite) use
:func:`micro_module` for one layer. ``conv2d`` is Conv → BatchNorm → activation (BatchNorm is
folded at export); symmetric padding goes into the conv, asymmetric padding is an explicit
``ZeroPad2d`` (as DESIGN's TFLite route needs).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from edgenas.spec import LayerDesc


class GlobalAvgPool(nn.Module):
    """Mean over H and W: [N, C, H, W] → [N, C] (exports as ReduceMean / MEAN)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6}


def layer_module(desc: LayerDesc) -> nn.Module:
    """The module of one single-input layer descriptor (random init)."""
    if desc.kind == "conv2d":
        mods: list[nn.Module] = []
        pt, pb, pl, pr = desc.pad
        symmetric = pt == pb and pl == pr
        if not symmetric:
            mods.append(nn.ZeroPad2d((pl, pr, pt, pb)))
        mods += [nn.Conv2d(desc.in_shape[0], desc.out_shape[0], desc.kernel, desc.stride,
                           padding=(pt, pl) if symmetric else 0, dilation=desc.dilation, groups=desc.groups,
                           bias=False),
                 nn.BatchNorm2d(desc.out_shape[0])]
        if desc.activation in ACTIVATIONS:
            mods.append(ACTIVATIONS[desc.activation]())
        elif desc.activation is not None:
            raise ValueError(f"layer {desc.name}: unsupported activation {desc.activation!r}")
        return nn.Sequential(*mods)
    if desc.kind == "global_avgpool":
        return GlobalAvgPool()
    if desc.kind == "linear":
        return nn.Linear(desc.in_shape[0], desc.out_shape[0], bias=desc.bias)
    if desc.kind == "pixel_shuffle":
        return nn.PixelShuffle(desc.stride[0])
    raise ValueError(f"layer {desc.name}: unknown single-input layer kind {desc.kind!r}")


def chain_module(layers: Sequence[LayerDesc]) -> nn.Sequential:
    """A whole sequential network (conv2d… → global_avgpool → linear) as one module."""
    return nn.Sequential(*[layer_module(d) for d in layers])


class GraphNet(nn.Module):
    """A network given as layer descriptors in execution order, each reading the outputs named by
    its ``inputs`` (the previous layer's when empty; "" is the network input): ``add`` sums them,
    ``concat`` joins them along channels, every other kind is :func:`layer_module`. The output is
    the last layer's (``make_layer`` builds the others: a space whose convs differ, e.g. biased and
    without BatchNorm, passes its own). Traces with ``torch.fx`` (the TFLite route) like a
    hand-written network."""

    def __init__(self, layers: Sequence[LayerDesc],
                 make_layer: Callable[[LayerDesc], nn.Module] | None = None) -> None:
        super().__init__()
        make_layer = make_layer or layer_module
        self.descs = list(layers)
        self.names = [d.name for d in self.descs]
        self.layers = nn.ModuleList(nn.Identity() if d.kind in ("add", "concat") else make_layer(d)
                                    for d in self.descs)
        index = {n: i for i, n in enumerate(self.names)}
        self.sources = [[i - 1] if not d.inputs else [-1 if n == "" else index[n] for n in d.inputs]
                        for i, d in enumerate(self.descs)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs: list[torch.Tensor] = []
        for i, (d, layer) in enumerate(zip(self.descs, self.layers)):
            args = [x if j < 0 else outs[j] for j in self.sources[i]]
            if d.kind == "add":
                y = args[0]
                for a in args[1:]:
                    y = y + a
            elif d.kind == "concat":
                y = torch.cat(args, dim=1)
            else:
                y = layer(args[0])
            outs.append(y)
        return outs[-1]


class _AddMicro(nn.Module):
    """An add of ``n`` inputs made from one input (micro-models have one): x + relu(x) + …"""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for _ in range(self.n - 1):
            y = y + torch.relu(x)
        return y


def micro_module(desc: LayerDesc) -> nn.Module:
    """One layer as a standalone single-input module (latency micro-models)."""
    if desc.kind == "add":
        return _AddMicro(desc.n_inputs)
    if desc.kind == "concat":
        raise ValueError(f"layer {desc.name}: a concat has no single-input micro-model")
    return layer_module(desc)
