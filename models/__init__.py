"""SyncTalk_2D's networks and checkpoint I/O.

Names are resolved lazily so that torch-free modules (``models.contract``, ``models.errors``) import without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AUDIO_SHAPES": "framegen.models.contract",
    "MODES": "framegen.models.contract",
    "AudioEncoder": "framegen.models.audio_encoder",
    "CheckpointError": "framegen.models.errors",
    "FramegenError": "framegen.models.errors",
    "Model": "framegen.models.unet",
    "calibrate_generator": "framegen.models.init",
    "encoder_state_for_saving": "framegen.models.checkpoint",
    "init_audio_encoder": "framegen.models.init",
    "init_generator": "framegen.models.init",
    "inspect_checkpoint": "framegen.models.checkpoint",
    "load_audio_encoder": "framegen.models.checkpoint",
    "load_generator": "framegen.models.checkpoint",
    "read_state_dict": "framegen.models.checkpoint",
    "save_audio_encoder": "framegen.models.io",
    "save_generator": "framegen.models.io",
    "sha256_file": "framegen.models.checkpoint",
    "LoadedCheckpoint": "framegen.models.checkpoint",
    "load_checkpoint": "framegen.models.checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
