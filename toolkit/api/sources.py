"""The API's inputs: checkpoints, templates and audio features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from framegen.toolkit.api.common import (
    PathLike,
    UsageError,
)
from framegen.toolkit.inputs.audio import audio_to_features, decode_audio, melspectrogram, torch_encoder_fn
from framegen.toolkit.inputs.features import save_npy
from framegen.toolkit.inputs.template import LANDMARK_SUFFIX, numbered_files


def checkpoint_init(out: PathLike, *, kind: str = "generator", mode: str = "ave", seed: int = 0,
                    calibrate: bool = False, demo_trained: bool = False) -> Path:
    """Write a seeded, reproducible stand-in checkpoint in SyncTalk_2D's own format (``torch.save`` of the
    state_dict): ``kind`` generator (``mode`` ave / hubert / wenet; ``calibrate`` estimates BatchNorm statistics so
    outputs span [0, 1], as trained weights do) or audio-encoder (always calibrated). ``demo_trained`` writes the
    trained demo generator instead ('ave'; its features come from the audio encoder of seed 0). Returns the path."""
    from framegen.models.demo import load_demo_generator
    from framegen.models.init import init_audio_encoder, init_generator
    from framegen.models.io import save_audio_encoder, save_generator

    if demo_trained:
        if kind != "generator" or mode != "ave" or calibrate:
            raise UsageError("checkpoint init --demo-trained: the trained demo generator is an 'ave' generator; "
                             "--kind, --mode and --calibrate do not apply")
        return save_generator(load_demo_generator(), out)
    if kind == "generator":
        return save_generator(init_generator(mode, seed, calibrate), out)
    if kind in ("audio-encoder", "audio_encoder"):
        return save_audio_encoder(init_audio_encoder(seed, calibrate=True), out)
    raise UsageError(f"--kind {kind!r}: expected generator or audio-encoder")


def checkpoint_inspect(checkpoint: PathLike) -> dict[str, Any]:
    """What a checkpoint is: ``kind`` (generator / audio_encoder), ``mode`` as detected, ``possible_modes``,
    ``mode_assumed`` (and a ``note`` when ave was assumed), ``parameters``, ``tensors``, ``dtype``, ``file_size``
    and ``sha256`` (the file read once)."""
    from framegen.models.checkpoint import inspect_checkpoint

    return inspect_checkpoint(checkpoint)


def template_inspect(directory: PathLike, *, skip_bad_boxes: bool = False,
                     preview: PathLike | None = None) -> dict[str, Any]:
    """Pair a template's images with its landmark files, decode every image and report each frame's crop box:
    ``{root, count, usable_frames, width, height, numbering, usable, errors, warnings, frames: [{index, image,
    landmarks, box[, error]}]}``. ``preview``: also write a contact sheet of crops with their boxes drawn (PNG).
    A template that cannot be opened at all raises ``TemplateError``; one with bad frames reports them."""
    from framegen.toolkit.inputs.template_check import inspect_template, write_preview

    report = inspect_template(directory, skip_bad_boxes=skip_bad_boxes)
    if preview is not None:
        report["preview"] = write_preview(directory, report, preview)
    return report


def template_synth(out: PathLike, *, frames: int | None = None, width: int = 1280, height: int = 720,
                   landmarks: PathLike | None = None, seed: int = 0) -> Path:
    """Write a deterministic synthetic template (face-like frames drawn from a landmark track, or following the real
    track in ``landmarks``) to ``out``; ``frames`` defaults to 50, or every file of ``landmarks``. Returns ``out``."""
    from framegen.toolkit.inputs.synth import synth_template

    if frames is None:
        frames = 50
        if landmarks is not None and Path(landmarks).is_dir():
            frames = len(numbered_files(Path(landmarks), (LANDMARK_SUFFIX,))[0]) or 50
    synth_template(Path(out), frames=frames, width=width, height=height,
                   landmarks_dir=Path(landmarks) if landmarks is not None else None, seed=seed)
    return Path(out)


def audio_features(audio: PathLike, encoder: PathLike, *, out: PathLike | None = None, batch: int = 64,
                   progress: bool = False) -> np.ndarray:
    """SyncTalk_2D's 'ave' features of a speech file (any format PyAV reads): (N, 512) float32, one row per 25 fps
    video frame, computed with the audio encoder checkpoint exactly as SyncTalk_2D's inference does. ``out``: also
    save them as ``.npy`` there."""
    from framegen.models.checkpoint import load_audio_encoder

    feats = audio_to_features(audio, torch_encoder_fn(load_audio_encoder(encoder)), batch=batch, progress=progress)
    if out is not None:
        save_npy(out, feats)
    return feats


def audio_mel(audio: PathLike, *, out: PathLike | None = None) -> np.ndarray:
    """SyncTalk_2D's normalised log-mel spectrogram of a speech file (any format PyAV reads): (T, 80) float32, 80
    frames per second, ``T = 1 + samples // 200`` (docs/CONTRACT.md §4). ``out``: also save it as ``.npy`` there."""
    spec = melspectrogram(decode_audio(audio))
    if out is not None:
        save_npy(out, spec)
    return spec
