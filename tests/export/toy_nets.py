"""Test-sized networks for the TFLite route beside the DS-CNN: a dilated TCN and a tiny SISR net."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dscnn_toy import randomize_bn  # noqa: F401  (shared by the export tests)


class TCNBlock(nn.Module):
    """Causal dilated conv (left zero padding) → BN → ReLU, plus a residual connection."""

    def __init__(self, channels: int, kernel: int, dilation: int, pad_style: str, depthwise: bool = False) -> None:
        super().__init__()
        left = (kernel - 1) * dilation
        self.pad_style = pad_style
        self.left = left
        self.pad: nn.Module = nn.Identity()
        if pad_style == "constant":
            self.pad = nn.ConstantPad1d((left, 0), 0.0)
        elif pad_style == "zero":
            self.pad = nn.ZeroPad1d((left, 0))
        self.conv = nn.Conv1d(channels, channels, kernel, dilation=dilation, groups=channels if depthwise else 1,
                              bias=False)
        self.bn = nn.BatchNorm1d(channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.pad(x, (self.left, 0)) if self.pad_style == "functional" else self.pad(x)
        return x + self.relu(self.bn(self.conv(h)))


class ToyTCN(nn.Module):
    """[N, C_in, T] → 1x1 conv stem → dilated causal residual blocks → mean over time → linear."""

    def __init__(self, in_channels: int = 8, channels: int = 16, length: int = 64, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv1d(in_channels, channels, 1)
        self.stem_bn = nn.BatchNorm1d(channels)
        self.blocks = nn.Sequential(
            TCNBlock(channels, 3, 1, "functional"),
            TCNBlock(channels, 3, 2, "constant"),
            TCNBlock(channels, 3, 4, "zero", depthwise=True),
            TCNBlock(channels, 5, 2, "functional"),
        )
        self.fc = nn.Linear(channels, classes)
        self.in_channels, self.length = in_channels, length

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem(x)))
        x = self.blocks(x)
        return self.fc(x.mean(dim=2))


class ToySISR(nn.Module):
    """[N, 1, H, W] → conv → ReLU → conv → BN → ReLU → conv to 4 channels → PixelShuffle(2): [N, 1, 2H, 2W]."""

    def __init__(self, channels: int = 16, scale: int = 2, out_channels: int = 1) -> None:
        super().__init__()
        self.head = nn.Conv2d(1, channels, 3, padding=1)
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, padding="same", bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU())
        self.tail = nn.Conv2d(channels, out_channels * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.tail(self.body(self.head(x))))


