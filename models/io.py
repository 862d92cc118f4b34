"""Writing checkpoints in SyncTalk_2D's own on-disk format, atomically."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from framegen.models.atomic import atomic_output
from framegen.models.audio_encoder import AudioEncoder
from framegen.models.checkpoint import encoder_state_for_saving
from framegen.models.errors import CheckpointError, FramegenError
from framegen.models.unet import Model


def atomic_torch_save(obj: object, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to a temporary sibling, then rename, so no half-written checkpoint is ever visible.

    The same object always gives the same bytes: saved through a file object, the zip archive inside is named
    ``archive`` rather than after the (unique) temporary file, so a checkpoint's sha256 follows its weights alone
    (and caches keyed by it, such as parity's tolerance measurements, hit again after a re-save).
    """
    dest = Path(path)
    if dest.is_dir():
        raise CheckpointError(f"{dest}: is a directory; give a file name to write the checkpoint to")
    try:
        with atomic_output(dest) as tmp, open(tmp, "wb") as fh:
            torch.save(obj, fh)
    except FramegenError as exc:
        raise CheckpointError(str(exc).replace("cannot write", "cannot write the checkpoint", 1)) from None
    except (RuntimeError, OSError) as exc:  # torch.save reports a failed write as RuntimeError
        raise CheckpointError(f"{dest}: cannot write the checkpoint ({(str(exc).splitlines() or [''])[0]})") \
            from None
    return dest


def save_generator(model: Model, path: str | os.PathLike[str]) -> Path:
    """Save as ``torch.save(model.state_dict())``, exactly like SyncTalk_2D's training script."""
    return atomic_torch_save(model.state_dict(), path)


def save_audio_encoder(model: AudioEncoder, path: str | os.PathLike[str]) -> Path:
    """Save like SyncTalk_2D's ``audio_visual_encoder.pth``: keys without the ``audio_encoder.`` prefix."""
    return atomic_torch_save(encoder_state_for_saving(model), path)
