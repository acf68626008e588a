"""Helpers for device tests: a small DS-CNN and its LayerDesc list."""

from __future__ import annotations

import torch
from torch import nn

from edgenas.spec import LayerDesc


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

    def layers(self) -> list[LayerDesc]:
        """The model as the cost models see it (BatchNorm folded into conv bias, ReLU fused)."""
        h, w = self.in_hw
        c = self.channels
        ho, wo = (h + 9 - 10) // 2 + 1, (w + 2 - 4) // 2 + 1
        out = [LayerDesc("stem", "conv2d", (1, h, w), (c, ho, wo), (10, 4), (2, 2), (4, 5, 1, 1), 1, "relu")]
        for i in range(self.blocks):
            out.append(LayerDesc(f"dw{i}", "conv2d", (c, ho, wo), (c, ho, wo), (3, 3), (1, 1), (1, 1, 1, 1), c, "relu"))
            out.append(LayerDesc(f"pw{i}", "conv2d", (c, ho, wo), (c, ho, wo), (1, 1), (1, 1), (0, 0, 0, 0), 1, "relu"))
        out.append(LayerDesc("pool", "global_avgpool", (c, ho, wo), (c, 1, 1)))
        out.append(LayerDesc("fc", "linear", (c, 1, 1), (self.classes, 1, 1)))
        return out


def make_dscnn(channels: int = 64, blocks: int = 4, seed: int = 0) -> TinyDSCNN:
    torch.manual_seed(seed)
    m = TinyDSCNN(channels=channels, blocks=blocks)
    m.train()
    with torch.no_grad():  # realistic BatchNorm statistics
        for _ in range(3):
            m(torch.randn(32, 1, 49, 10))
    return m.eval()
