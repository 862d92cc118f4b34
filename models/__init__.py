"""SyncTalk_2D's networks and checkpoint I/O.

Names are resolved lazily so that torch-free modules (``models.contract``, ``models.errors``) import without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AUDIO_SHAPES": "models.contract",
    "MODES": "models.contract",
    "AudioEncoder": "models.audio_encoder",
    "CheckpointError": "models.errors",
    "FramegenError": "models.errors",
    "Model": "models.unet",
    "calibrate_generator": "models.init",
    "encoder_state_for_saving": "models.checkpoint",
    "init_audio_encoder": "models.init",
    "init_generator": "models.init",
    "inspect_checkpoint": "models.checkpoint",
    "load_audio_encoder": "models.checkpoint",
    "load_generator": "models.checkpoint",
    "read_state_dict": "models.checkpoint",
    "save_audio_encoder": "models.io",
    "save_generator": "models.io",
    "sha256_file": "models.checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
