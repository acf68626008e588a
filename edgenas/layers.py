"""Plain PyTorch modules for layer descriptors: one mapping shared by every consumer.

A space whose networks are a sequence of :class:`~edgenas.spec.LayerDesc` builds them with
:func:`chain_module`; latency micro-models for formats that go through PyTorch (TFLite) use
:func:`layer_module` for one layer. ``conv2d`` is Conv → BatchNorm → activation (BatchNorm is
folded at export); symmetric padding goes into the conv, asymmetric padding is an explicit
``ZeroPad2d`` (as DESIGN's TFLite route needs).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from edgenas.spec import LayerDesc


class GlobalAvgPool(nn.Module):
    """Mean over H and W: [N, C, H, W] → [N, C] (exports as ReduceMean / MEAN)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def layer_module(desc: LayerDesc) -> nn.Module:
    """The module of one layer descriptor (random init)."""
    if desc.kind == "conv2d":
        mods: list[nn.Module] = []
        pt, pb, pl, pr = desc.pad
        symmetric = pt == pb and pl == pr
        if not symmetric:
            mods.append(nn.ZeroPad2d((pl, pr, pt, pb)))
        mods += [nn.Conv2d(desc.in_shape[0], desc.out_shape[0], desc.kernel, desc.stride,
                           padding=(pt, pl) if symmetric else 0, groups=desc.groups, bias=False),
                 nn.BatchNorm2d(desc.out_shape[0])]
        if desc.activation == "relu":
            mods.append(nn.ReLU())
        elif desc.activation is not None:
            raise ValueError(f"layer {desc.name}: unsupported activation {desc.activation!r}")
        return nn.Sequential(*mods)
    if desc.kind == "global_avgpool":
        return GlobalAvgPool()
    if desc.kind == "linear":
        return nn.Linear(desc.in_shape[0], desc.out_shape[0], bias=desc.bias)
    raise ValueError(f"layer {desc.name}: unknown layer kind {desc.kind!r}")


def chain_module(layers: Sequence[LayerDesc]) -> nn.Sequential:
    """A whole sequential network (conv2d… → global_avgpool → linear) as one module."""
    return nn.Sequential(*[layer_module(d) for d in layers])
