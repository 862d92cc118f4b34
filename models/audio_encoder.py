"""SyncTalk_2D's 'ave' audio encoder: a 1x80x16 mel window -> a 512-d embedding."""

from __future__ import annotations

import torch
from torch import nn


class ConvBlock(nn.Module):
    """Conv2d (with bias) + BatchNorm, optional identity shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int | tuple[int, int], padding: int,
                 residual: bool = False) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


# (cin, cout, kernel, stride, padding, residual), in SyncTalk_2D's order.
_LAYERS: tuple[tuple[int, int, int, int | tuple[int, int], int, bool], ...] = (
    (1, 32, 3, 1, 1, False),
    (32, 32, 3, 1, 1, True),
    (32, 32, 3, 1, 1, True),
    (32, 64, 3, (3, 1), 1, False),
    (64, 64, 3, 1, 1, True),
    (64, 64, 3, 1, 1, True),
    (64, 128, 3, 3, 1, False),
    (128, 128, 3, 1, 1, True),
    (128, 128, 3, 1, 1, True),
    (128, 256, 3, (3, 2), 1, False),
    (256, 256, 3, 1, 1, True),
    (256, 512, 3, 1, 0, False),
    (512, 512, 1, 1, 0, False),
)


class AudioEncoder(nn.Module):
    """Mel window [N, 1, 80, 16] -> embedding [N, 512]."""

    def __init__(self) -> None:
        super().__init__()
        self.audio_encoder = nn.Sequential(*(ConvBlock(*spec) for spec in _LAYERS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode a batch of mel windows."""
        return self.audio_encoder(x).flatten(1)
