"""Seeded, reproducible stand-ins for SyncTalk_2D's weights, which cannot be downloaded here.

Two things make a random U-Net a poor stand-in, and both are corrected here:

- With BatchNorm's default statistics (mean 0, variance 1) the output is degenerate (nearly constant or saturated),
  so parity checks see almost nothing. ``calibrate`` re-estimates every BatchNorm's running statistics from a
  training-mode pass over image-like inputs, which spreads the output over (0, 1).
- Batch-normalised random deep nets amplify small perturbations exponentially with depth (the mean-field result for
  BatchNorm at initialisation), so fp16 rounding alone moved outputs by 0.04 on average (max 0.45): far worse than a
  trained network, and a useless basis for fp16 tolerances. Damping each residual branch's last BatchNorm (the
  "zero-init residual" idea, here x0.2) gives the conditioning of a trained net: fp16 error mean ~0.003.

The output convolution is then scaled so that outputs have the spread the brief measured for real use (std ~0.19).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from framegen.models.audio_encoder import AudioEncoder
from framegen.models.unet import AUDIO_SHAPES, InvertedResidual, Model
from torch import nn

# The mask rectangle as slices (cv2.rectangle((5, 5, 310, 305)) fills x 5..314, y 5..309).
_MASK_ROWS = slice(5, 310)
_MASK_COLS = slice(5, 315)


def _seeded_init(module: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for name, param in sorted(module.named_parameters()):
        with torch.no_grad():
            if param.ndim >= 2:
                fan_in = param[0].numel()
                bound = fan_in ** -0.5  # PyTorch's default conv bound; BatchNorm undoes any other scale
                param.copy_(torch.rand(param.shape, generator=gen) * 2 * bound - bound)
            elif name.endswith("weight"):
                param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=gen))
            else:
                param.copy_(0.05 * torch.randn(param.shape, generator=gen))


def image_like_batch(batch: int, generator: torch.Generator) -> torch.Tensor:
    """Smooth colour fields with edges, shaped like the generator's 6x320x320 input (reference + masked)."""
    low = torch.rand(batch, 3, 6, 6, generator=generator)
    img = F.interpolate(low, size=(320, 320), mode="bicubic", align_corners=False)
    yy = torch.linspace(0, 1, 320).view(1, 1, 320, 1)
    xx = torch.linspace(0, 1, 320).view(1, 1, 1, 320)
    phase = torch.rand(batch, 3, 1, 1, generator=generator) * 6.28
    img = img + 0.15 * torch.sin(18 * xx + 11 * yy + phase)
    img = (img + 0.05 * torch.randn(img.shape, generator=generator)).clamp(0, 1)
    img = torch.floor(img * 255) / 255
    masked = img.clone()
    masked[:, :, _MASK_ROWS, _MASK_COLS] = 0
    return torch.cat([img, masked], dim=1)


def audio_like_batch(mode: str, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Non-negative feature windows with the spread of real 'ave' features (mean ~0.4)."""
    shape = (batch, *AUDIO_SHAPES[mode])
    return torch.randn(shape, generator=generator).abs() * 0.5


@torch.no_grad()
def calibrate_generator(model: Model, seed: int = 0, batches: int = 1, batch_size: int = 4) -> Model:
    """Set every BatchNorm's running statistics from forward passes over image-like inputs; returns eval model.

    One batch of four images gives the same output spread as sixteen (measured std 0.25 either way) at a quarter of
    the cost: even the 10x10 layers see 400 positions per channel.
    """
    gen = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration passes
    model.train()
    for _ in range(batches):
        model(image_like_batch(batch_size, gen), audio_like_batch(model.mode, batch_size, gen))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    return model.eval()


_RESIDUAL_GAMMA = 0.2
_OUTPUT_GAIN = 2.0


@torch.no_grad()
def _damp_residual_branches(model: nn.Module, factor: float) -> None:
    for m in model.modules():
        if isinstance(m, InvertedResidual) and m.use_res_connect:
            last_bn = m.conv[7]
            last_bn.weight.mul_(factor)
            last_bn.bias.mul_(factor)


def init_generator(mode: str = "ave", seed: int = 0, calibrate: bool = False) -> Model:
    """A seeded generator (same seed, same weights); with ``calibrate`` its BatchNorm statistics are estimated."""
    model = Model(6, mode)
    _seeded_init(model, seed)
    _damp_residual_branches(model, _RESIDUAL_GAMMA)
    model.mode = mode
    if calibrate:
        calibrate_generator(model, seed)
        with torch.no_grad():
            model.outc.conv.weight.mul_(_OUTPUT_GAIN)
            model.outc.conv.bias.mul_(_OUTPUT_GAIN)
    return model.eval()


@torch.no_grad()
def init_audio_encoder(seed: int = 0, calibrate: bool = True) -> AudioEncoder:
    """A seeded audio encoder; calibrated on mel-like windows so that embeddings are non-trivial."""
    model = AudioEncoder()
    _seeded_init(model, seed)
    if calibrate:
        gen = torch.Generator().manual_seed(seed + 1)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        model.train()
        for _ in range(4):
            mel = torch.randn(16, 1, 80, 16, generator=gen) * 1.5 - 1.0
            model(mel.clamp(-4, 4))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1
    return model.eval()
