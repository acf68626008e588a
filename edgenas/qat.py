"""Quantization-aware fine-tuning: make a trained float model robust to int8 export.

After the final training, :func:`qat_finetune` trains a few more epochs with the int8 rounding in
the forward pass (straight-through gradients), the way the exported int8 model will compute:

* every BatchNorm is folded into the convolution before it (the exporters fold it too), so the
  weights that are fake-quantized are the weights that are exported; the folded BN stays in the
  module as a frozen per-channel bias, which keeps the state dict and the builders unchanged;
* weights: symmetric per-output-channel int8 (TFLite's and the ONNX exporter's scheme);
* activations: asymmetric per-tensor int8 with ranges tracked as a moving average, on the input,
  after every activation / pooling / linear layer (where the int8 runtimes requantize).

On return the weights are left on their int8 grid (so post-training quantization reproduces
them) and the model is an ordinary float model again: no hooks, no parametrizations.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from edgenas.events import EventSink
from edgenas.train import TrainConfig, train_model

_CONVS = (nn.Conv1d, nn.Conv2d)
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d)


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every BatchNorm that directly follows a conv (in a Sequential) into that conv.

    The BN becomes the identity plus the folded bias (γ=1, mean=0, var=1−ε), so the module tree
    and state-dict keys stay as they were. Returns how many were folded.
    """
    n = 0
    with torch.no_grad():
        for seq in model.modules():
            if not isinstance(seq, nn.Sequential):
                continue
            kids = list(seq.children())
            for conv, bn in zip(kids, kids[1:]):
                if not (isinstance(conv, _CONVS) and isinstance(bn, _BNS)) or not bn.track_running_stats:
                    continue
                inv = torch.rsqrt(bn.running_var + bn.eps)
                gamma = bn.weight if bn.affine else torch.ones_like(inv)
                beta = bn.bias if bn.affine else torch.zeros_like(inv)
                scale = gamma * inv
                conv.weight.mul_(scale.view(-1, *([1] * (conv.weight.dim() - 1))))
                bias = beta - bn.running_mean * scale
                if conv.bias is not None:
                    bias = bias + conv.bias * scale
                    conv.bias.zero_()
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                if bn.affine:
                    bn.weight.fill_(1.0)
                    bn.bias.copy_(bias)
                else:  # no affine slot for the bias: keep it in the conv
                    if conv.bias is None:
                        raise ValueError("cannot fold a non-affine BatchNorm after a bias-free conv")
                    conv.bias.copy_(bias)
                n += 1
    return n


class _WeightFakeQuant(nn.Module):
    """Symmetric per-output-channel fake quantization of a weight tensor to ±``qmax``."""

    def __init__(self, qmax: int) -> None:
        super().__init__()
        self.qmax = qmax

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        amax = w.detach().abs().flatten(1).amax(1).clamp_min(1e-8)
        scale = (amax / self.qmax).float()
        zero = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -self.qmax, self.qmax)


class _ActFakeQuant:
    """Asymmetric per-tensor int8 fake quantization with moving-average min/max ranges."""

    def __init__(self, momentum: float = 0.05) -> None:
        self.momentum, self.lo, self.hi = momentum, None, None

    def __call__(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        if training or self.lo is None:
            lo, hi = float(x.detach().min()), float(x.detach().max())
            if self.lo is None:
                self.lo, self.hi = lo, hi
            else:
                self.lo += self.momentum * (lo - self.lo)
                self.hi += self.momentum * (hi - self.hi)
        lo, hi = min(self.lo, 0.0), max(self.hi, 0.0)
        scale = max((hi - lo) / 255.0, 1e-8)
        zero = int(round(-128 - lo / scale))
        return torch.fake_quantize_per_tensor_affine(x, scale, max(-128, min(127, zero)), -128, 127)


def _frozen_bn_forward(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def _requant_points(model: nn.Module) -> list[nn.Module]:
    """Modules whose output an int8 runtime requantizes: activations, pools, linears, and convs /
    BNs not followed by an activation that the runtime fuses into them."""
    points: list[nn.Module] = []
    for seq in model.modules():
        kids = list(seq.children())
        for i, m in enumerate(kids):
            nxt = kids[i + 1] if i + 1 < len(kids) else None
            if isinstance(m, (nn.ReLU, nn.ReLU6, nn.Linear)) or (not list(m.children()) and "Pool" in type(m).__name__):
                points.append(m)
            elif isinstance(m, _CONVS + _BNS) and isinstance(seq, nn.Sequential) \
                    and not isinstance(nxt, _BNS + (nn.ReLU, nn.ReLU6)):
                points.append(m)
    return points


@contextlib.contextmanager
def fake_quantized(model: nn.Module, weight_bits: int = 8) -> Iterator[None]:
    """Within the block ``model`` computes as its int8 export will (BN must already be folded).

    On exit the weights are left quantized and every hook/parametrization is removed.
    """
    handles = []
    acts: list[_ActFakeQuant] = []

    def hook_for(fq: _ActFakeQuant):  # noqa: ANN202
        return lambda mod, _inp, out: fq(out, mod.training)

    inp = _ActFakeQuant()
    handles.append(model.register_forward_pre_hook(lambda mod, args: (inp(args[0], mod.training), *args[1:])))
    for m in _requant_points(model):
        acts.append(_ActFakeQuant())
        handles.append(m.register_forward_hook(hook_for(acts[-1])))
    weighted = [m for m in model.modules() if isinstance(m, _CONVS + (nn.Linear,))]
    for m in weighted:
        parametrize.register_parametrization(m, "weight", _WeightFakeQuant(2 ** (weight_bits - 1) - 1))
    bns = [m for m in model.modules() if isinstance(m, _BNS)]
    classes = [type(b) for b in bns]
    for b, cls in zip(bns, classes):
        b.__class__ = type(f"Frozen{cls.__name__}", (cls,), {"forward": _frozen_bn_forward})
        if b.affine:
            b.weight.requires_grad_(False)  # γ stays 1: the fold lives in the conv weights
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for m in weighted:
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
        for b, cls in zip(bns, classes):
            b.__class__ = cls
            if b.affine:
                b.weight.requires_grad_(True)


def qat_finetune(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, task: Any, seed: int = 0,
                 checkpoint: Path | None = None, sink: EventSink | None = None,
                 eval_set: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, Any]:
    """Fold BN, then ``cfg.qat_epochs`` epochs at ``cfg.qat_lr`` with int8 fake quantization.

    Resumable like :func:`~edgenas.train.train_model` (folding is deterministic, the checkpoint
    then replaces the folded weights). Leaves ``model`` a plain float model, weights on the grid.
    """
    fold_batchnorm(model)
    with fake_quantized(model):
        return train_model(model, x, y, replace(cfg, epochs=cfg.qat_epochs, lr=cfg.qat_lr), task, seed=seed,
                           checkpoint=checkpoint, sink=sink, eval_set=eval_set, label="quantization-aware fine-tuning")
