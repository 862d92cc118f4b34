"""SyncTalk_2D's 328-crop U-Net (``unet_328.Model``), restated module for module.

Module and parameter names follow SyncTalk_2D exactly so that ``torch.save(model.state_dict())`` files from the
original project load with ``strict=True``. See ``../shared/reference/ARCHITECTURE.md`` for the layer list.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from framegen.models.contract import AUDIO_SHAPES, MODES
from torch import nn

__all__ = ["AUDIO_SHAPES", "MODES", "Model"]


class InvertedResidual(nn.Module):
    """MobileNet-v2 block: 1x1 expand, 3x3 depthwise, 1x1 project, optional identity shortcut."""

    def __init__(self, inp: int, oup: int, stride: int | tuple[int, int], use_res_connect: bool,
                 expand_ratio: int = 2) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = use_res_connect
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class DoubleConvDW(nn.Module):
    """Two inverted residuals; the first may downsample."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2) -> None:
        super().__init__()
        self.double_conv = nn.Sequential(
            InvertedResidual(in_channels, out_channels, stride=stride, use_res_connect=False, expand_ratio=2),
            InvertedResidual(out_channels, out_channels, stride=1, use_res_connect=True, expand_ratio=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply both blocks."""
        return self.double_conv(x)


class InConvDw(nn.Module):
    """Input stem: one inverted residual without shortcut."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.inconv = nn.Sequential(
            InvertedResidual(in_channels, out_channels, stride=1, use_res_connect=False, expand_ratio=2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the stem."""
        return self.inconv(x)


class Down(nn.Module):
    """Stride-2 DoubleConvDW (SyncTalk_2D calls it maxpool_conv, but there is no pooling)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(DoubleConvDW(in_channels, out_channels, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Downsample by two."""
        return self.maxpool_conv(x)


class Up(nn.Module):
    """Bilinear x2 (align_corners=True), pad to the skip's size, concat [upsampled, skip], DoubleConvDW."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = DoubleConvDW(in_channels, out_channels, stride=1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Upsample ``x1`` and fuse it with the skip connection ``x2``."""
        x1 = self.up(x1)
        diff_y = x2.shape[2] - x1.shape[2]
        diff_x = x2.shape[3] - x1.shape[3]
        # Always zero at 320x320; kept because SyncTalk_2D pads and other crop sizes rely on it.
        if diff_x or diff_y:
            x1 = F.pad(x1, [diff_x // 2, diff_x - diff_x // 2, diff_y // 2, diff_y - diff_y // 2])
        return self.conv(torch.cat([x1, x2], dim=1))


class OutConv(nn.Module):
    """1x1 convolution with bias to the three BGR channels."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project to output channels."""
        return self.conv(x)


class AudioConvWenet(nn.Module):
    """Audio branch for 'wenet' features (256x16x32 -> 512x10x10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = InvertedResidual(256, 256, 1, use_res_connect=True, expand_ratio=2)
        self.conv2 = InvertedResidual(256, 256, 1, use_res_connect=True, expand_ratio=2)
        self.conv3 = nn.Conv2d(256, 256, kernel_size=3, padding=1, stride=(1, 2))
        self.bn3 = nn.BatchNorm2d(256)
        _add_tail(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode the audio window."""
        return _tail_forward(self, x)


class AudioConvHubert(nn.Module):
    """Audio branch for 'hubert' features (32x32x32 -> 512x10x10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = InvertedResidual(32, 64, 1, use_res_connect=False, expand_ratio=2)
        self.conv2 = InvertedResidual(64, 128, 1, use_res_connect=False, expand_ratio=2)
        self.conv3 = nn.Conv2d(128, 256, kernel_size=3, padding=1, stride=(2, 2))
        self.bn3 = nn.BatchNorm2d(256)
        _add_tail(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode the audio window."""
        return _tail_forward(self, x)


class AudioConvAve(nn.Module):
    """Audio branch for 'ave' features (32x16x16 -> 512x10x10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = InvertedResidual(32, 64, 1, use_res_connect=False, expand_ratio=2)
        self.conv2 = InvertedResidual(64, 128, 1, use_res_connect=False, expand_ratio=2)
        self.conv3 = nn.Conv2d(128, 256, kernel_size=3, padding=1, stride=1)
        self.bn3 = nn.BatchNorm2d(256)
        _add_tail(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode the audio window."""
        return _tail_forward(self, x)


def _add_tail(branch: nn.Module) -> None:
    # Registration order matters: it fixes the state_dict order SyncTalk_2D checkpoints use.
    branch.conv4 = InvertedResidual(256, 256, 1, use_res_connect=True, expand_ratio=2)
    branch.conv5 = nn.Conv2d(256, 512, kernel_size=3, padding=3, stride=(2, 2))
    branch.bn5 = nn.BatchNorm2d(512)
    branch.relu = nn.ReLU()
    branch.conv6 = InvertedResidual(512, 512, 1, use_res_connect=True, expand_ratio=2)
    branch.conv7 = InvertedResidual(512, 512, 1, use_res_connect=True, expand_ratio=2)


def _tail_forward(b: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = b.conv1(x)
    x = b.conv2(x)
    x = b.relu(b.bn3(b.conv3(x)))
    x = b.conv4(x)
    x = b.relu(b.bn5(b.conv5(x)))
    x = b.conv6(x)
    return b.conv7(x)


_AUDIO_BRANCHES: dict[str, type[nn.Module]] = {
    "ave": AudioConvAve,
    "hubert": AudioConvHubert,
    "wenet": AudioConvWenet,
}


class Model(nn.Module):
    """The generator: 6x320x320 image (reference + masked, BGR /255) and an audio window -> 3x320x320 in [0, 1]."""

    def __init__(self, n_channels: int = 6, mode: str = "ave") -> None:
        super().__init__()
        if mode not in _AUDIO_BRANCHES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        self.n_channels = n_channels
        self.mode = mode
        ch = [32, 64, 128, 256, 512]
        self.audio_model = _AUDIO_BRANCHES[mode]()
        self.fuse_conv = nn.Sequential(
            DoubleConvDW(ch[4] * 2, ch[4], stride=1),
            DoubleConvDW(ch[4], ch[3], stride=1),
        )
        self.inc = InConvDw(n_channels, ch[0])
        self.down1 = Down(ch[0], ch[0])
        self.down2 = Down(ch[0], ch[1])
        self.down3 = Down(ch[1], ch[2])
        self.down4 = Down(ch[2], ch[3])
        self.down5 = Down(ch[3], ch[4])
        self.up1 = Up(ch[4], ch[3] // 2)
        self.up2 = Up(ch[3], ch[2] // 2)
        self.up3 = Up(ch[2], ch[1] // 2)
        self.up4 = Up(ch[1], ch[0])
        self.up5 = Up(ch[1], ch[0] // 2)
        self.outc = OutConv(ch[0] // 2, 3)

    def forward(self, x: torch.Tensor, audio_feat: torch.Tensor) -> torch.Tensor:
        """Predict the 320x320 mouth crop for a batch of images and audio windows."""
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        x6 = self.down5(x5)
        audio = self.audio_model(audio_feat)
        x6 = self.fuse_conv(torch.cat([x6, audio], dim=1))
        x = self.up1(x6, x5)
        x = self.up2(x, x4)
        x = self.up3(x, x3)
        x = self.up4(x, x2)
        x = self.up5(x, x1)
        return torch.sigmoid(self.outc(x))
