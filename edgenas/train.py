"""Final training of a derived spec from scratch, and evaluation."""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgenas.events import EventSink, null_sink, progress


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-3
    label_smoothing: float = 0.05
    time_shift: float = 0.1  # max fraction of frames a training example is shifted by
    spec_mask: int = 2  # max coefficients/frames zeroed (SpecAugment-style), 0 = off
    # extra copies of the training clips played at these speeds (speed perturbation: pitch, formants
    # and rate scaled together), e.g. (0.9, 1.1); () = off
    speed_perturb: tuple[float, ...] = ()
    train_on: str = "train+val"  # or "train"
    # standardise every feature coefficient by its train-split mean/std (folded into the exported
    # front end): MFCC c0 spans ~10x the range of the others, and one int8 input scale for all of
    # them left the higher coefficients a handful of levels (2% argmax flips from the input alone)
    normalize: bool = True
    # quantization-aware fine-tuning after the float training (edgenas/qat.py): BN folded, int8
    # rounding of weights and activations in the forward pass. Off by default: on six FSDD models it
    # did not raise int8/fp32 argmax agreement beyond noise and cost 0-3 points of fp32 accuracy
    # (bench/RESULTS.md, int8 fidelity)
    qat_epochs: int = 0
    qat_lr: float = 5e-4


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)]) if len(x) else torch.zeros(0)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Any, groups: Any = None) -> float:
    """The task's metric of ``model`` on (``x``, ``y``) (:meth:`Task.score`: accuracy for
    classifiers, mean PSNR of the ``groups`` for super-resolution); NaN when empty."""
    if len(y) == 0:
        return float("nan")
    return task.score(predict(model, x).numpy(), y.numpy(), groups)


def train_model(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    task: Any,
    seed: int = 0,
    checkpoint: Path | None = None,
    sink: EventSink | None = None,
    eval_set: tuple[torch.Tensor, torch.Tensor] | None = None,
    label: str = "final training",
) -> dict[str, Any]:
    """Train ``model`` in place with ``task``'s augmentation, loss and metric (``train_acc`` /
    ``eval_acc`` are that metric); resumable from ``checkpoint`` (saved atomically every epoch).

    ``eval_set`` (never the test split) is only reported per epoch, never used to select.
    """
    sink = sink or null_sink
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = max(1, (len(y) + cfg.batch_size - 1) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps, pct_start=0.15)
    start, history, elapsed = 0, [], 0.0
    if checkpoint is not None and checkpoint.exists():
        st = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        gen.set_state(st["gen"])
        torch.set_rng_state(st["torch_rng"])
        start, history, elapsed = st["epoch"], st["history"], st["seconds"]
        sink("train.resumed", epoch=start, label=label)
    t0 = time.perf_counter()
    with progress(sink, label, cfg.epochs) as tick:
        if start:
            tick(start)
        for epoch in range(start, cfg.epochs):
            model.train()
            perm = torch.randperm(len(y), generator=gen)
            tot = correct = 0.0
            for b in range(steps):
                idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                if len(idx) < 2:
                    continue
                xb = task.augment(x[idx], cfg, gen)
                logits = model(xb)
                loss = task.loss(logits, y[idx], label_smoothing=cfg.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                tot += float(loss.detach()) * len(idx)
                correct += float(task.hits(logits.detach(), y[idx]))
            rec: dict[str, Any] = {"epoch": epoch + 1, "loss": tot / len(y), "train_acc": correct / len(y)}
            if eval_set is not None:
                rec["eval_acc"] = evaluate(model, *eval_set, task)
            history.append(rec)
            sink("train.epoch", label=label, **rec)
            tick(1, loss=f"{rec['loss']:.3f}", acc=f"{rec['train_acc']:.2f}")
            if checkpoint is not None:
                tmp = checkpoint.with_suffix(".tmp")
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                            "gen": gen.get_state(), "torch_rng": torch.get_rng_state(), "epoch": epoch + 1,
                            "history": history, "seconds": elapsed + time.perf_counter() - t0}, tmp)
                os.replace(tmp, checkpoint)
    model.eval()
    return {"history": history, "seconds": elapsed + time.perf_counter() - t0}
