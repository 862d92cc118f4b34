"""Writing checkpoints in SyncTalk_2D's own on-disk format, atomically."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from models.audio_encoder import AudioEncoder
from models.checkpoint import encoder_state_for_saving
from models.unet import Model


def atomic_torch_save(obj: object, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to a temporary sibling, then rename, so no half-written checkpoint is ever visible."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def save_generator(model: Model, path: str | os.PathLike[str]) -> Path:
    """Save as ``torch.save(model.state_dict())``, exactly like SyncTalk_2D's training script."""
    return atomic_torch_save(model.state_dict(), path)


def save_audio_encoder(model: AudioEncoder, path: str | os.PathLike[str]) -> Path:
    """Save like SyncTalk_2D's ``audio_visual_encoder.pth``: keys without the ``audio_encoder.`` prefix."""
    return atomic_torch_save(encoder_state_for_saving(model), path)
