"""Helpers for device tests: a small DS-CNN and its LayerDesc list."""

from __future__ import annotations

import torch

from dscnn_toy import TinyDSCNN as _DSCNN
from edgenas.spec import LayerDesc


class TinyDSCNN(_DSCNN):
    """The shared toy DS-CNN plus its LayerDesc list."""

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
