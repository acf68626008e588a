"""The small DS-CNN the device and export tests share (one copy; tests/ is on sys.path via tests/conftest.py)."""

from __future__ import annotations

import torch
from torch import nn


class TinyDSCNN(nn.Module):
    """DS-CNN: padded strided conv stem, depthwise-separable blocks, global average pool, linear."""

    def __init__(self, in_hw: tuple[int, int] = (49, 10), channels: int = 64, blocks: int = 4,
                 classes: int = 12) -> None:
        super().__init__()
        c = channels
        self.stem = nn.Sequential(nn.ZeroPad2d((1, 1, 4, 5)), nn.Conv2d(1, c, (10, 4), stride=2, bias=False),
                                  nn.BatchNorm2d(c), nn.ReLU())
        body: list[nn.Module] = []
        for _ in range(blocks):
            body += [nn.ZeroPad2d(1), nn.Conv2d(c, c, 3, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                     nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        self.body = nn.Sequential(*body)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, classes)
        self.in_hw, self.channels, self.blocks, self.classes = in_hw, c, blocks, classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.body(self.stem(x))), 1))


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so that folding is really tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_((torch.rand(n, generator=g) - 0.5) * 0.4)
    return model.eval()
