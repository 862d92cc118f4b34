"""SyncTalk_2D's networks and checkpoint I/O."""

from models.audio_encoder import AudioEncoder
from models.checkpoint import (
    encoder_state_for_saving,
    inspect_checkpoint,
    load_audio_encoder,
    load_generator,
    read_state_dict,
    sha256_file,
)
from models.errors import CheckpointError, FramegenError
from models.init import calibrate_generator, init_audio_encoder, init_generator
from models.unet import AUDIO_SHAPES, MODES, Model

__all__ = [
    "AUDIO_SHAPES",
    "MODES",
    "AudioEncoder",
    "CheckpointError",
    "FramegenError",
    "Model",
    "calibrate_generator",
    "encoder_state_for_saving",
    "init_audio_encoder",
    "init_generator",
    "inspect_checkpoint",
    "load_audio_encoder",
    "load_generator",
    "read_state_dict",
    "sha256_file",
]
