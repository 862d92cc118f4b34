"""What a parity run compares: its candidates (chosen by the one planner), its frames (speech, then silence, in
the template's ping-pong order) and its audio input."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from framegen.models.bundle import sha256_path
from framegen.models.errors import FramegenError
from framegen.toolkit.compare.results import (
    REFERENCE,
    Candidate,
    ChecksumResult,
)
from framegen.toolkit.frames.plan import parse_candidates
from framegen.toolkit.frames.plan import plan_candidates as plan_backends
from framegen.toolkit.inputs.audio import AudioError, ave_features, decode_audio, mel_windows, melspectrogram
from framegen.toolkit.inputs.encoders import resolve_encoder
from framegen.toolkit.inputs.features import audio_windows, load_features, validate_features
from framegen.toolkit.parity.replay import (
    frame_digest,
)


class ParityError(FramegenError):
    """Parity cannot run as asked (unknown backend, nothing to compare, inputs that cannot be used)."""


def parse_backends(text: str | None) -> list[Any] | None:
    """``"ort-cpu,coreml-mil:fp16,ort-cpu:fp32:image"`` -> the planner's requests
    (:func:`framegen.toolkit.frames.plan.parse_candidates`); ``None`` for the default plan."""
    return parse_candidates(text)


def parity_candidates(bundle: Any, requested: list[Any] | None = None,
                    checkpoint: str | os.PathLike[str] | None = None,
                    options: dict[str, Any] | None = None) -> tuple[list[Candidate], list[str]]:
    """The candidates to compare, chosen by the one planner (:func:`framegen.toolkit.frames.plan.plan_candidates`,
    purpose
    ``parity``), and notes on the backends left out.

    ``requested`` ``None``: every available backend x every precision and I/O variant the bundle (and checkpoint)
    feeds it, verifiers included, the fp32 reference itself excepted. Otherwise exactly the named ones; anything
    that cannot run is a :class:`framegen.toolkit.frames.plan.PlanError` naming it. ``options``: the backends'
    ``OpenRequest.options`` (e.g. ``triton_url``), which remote backends' probes read.
    """
    root = bundle.root if hasattr(bundle, "artifacts") else bundle
    result = plan_backends("parity", bundle=bundle, checkpoint=checkpoint, requested=requested, options=options)
    cands = result.candidates
    if requested is None:
        cands = [c for c in cands if (c.backend, c.precision, c.io) != (REFERENCE, "fp32", "tensor")]
        if not cands:
            raise ParityError(f"{root}: no available backend can run any of its generators; "
                              f"{'; '.join(result.notes)}")
    return cands, list(result.notes)


def verify_checksums(bundle: Any) -> list[ChecksumResult]:
    """Every artifact's sha256 against the manifest (all of them, not just the first mismatch)."""
    results = []
    for a in bundle.artifacts:
        expected = a.entry.get("sha256")
        results.append(ChecksumResult(a.path.relative_to(bundle.root).as_posix(), a.model, a.format, a.precision,
                                      expected if isinstance(expected, str) else None, sha256_path(a.path)))
    return results


@dataclass(frozen=True)
class Segment:
    """Consecutive output frames with one kind of audio: the speech features, or silence."""

    audio: str  # "speech" | "silence"
    features: np.ndarray
    count: int
    start_frame: int  # the template frame its ping-pong walk starts at
    offset: int  # the run-wide index of its first frame


def plan_segments(template: Any, features: np.ndarray, frames: int, silence_frames: int = 1,
                  start_frame: int = 0) -> list[Segment]:
    """The speech frames ``0..frames-1`` (fewer when the features are shorter), then ``silence_frames`` frames whose
    audio windows are all zero rows, on the template frames that follow."""
    count = min(frames, int(features.shape[0]))
    segments = [Segment("speech", features, count, start_frame, 0)]
    if silence_frames > 0:
        width = int(np.asarray(features).reshape(features.shape[0], -1).shape[1])
        after = template.template_index(count, start_frame)
        segments.append(Segment("silence", np.zeros((silence_frames, width), np.float32), silence_frames, after,
                                count))
    return segments


def frame_plan(template: Any, segments: list[Segment], mode: str) -> list[dict[str, Any]]:
    """Every frame a run compares: run-wide index, template frame, audio kind and the sha256 of its model inputs."""
    plan = []
    for seg in segments:
        for j in range(seg.count):
            k = template.template_index(j, seg.start_frame)
            digest = frame_digest(template.prepared(k).image_input(), audio_windows(seg.features, [j], mode)[0])
            plan.append({"frame": seg.offset + j, "template_index": int(k), "audio": seg.audio, "sha256": digest})
    return plan


def frame_inputs(template: Any, segments: list[Segment], mode: str, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """The model inputs (image (6, 320, 320), audio window) of run-wide frame ``frame``."""
    for seg in segments:
        if seg.offset <= frame < seg.offset + seg.count:
            j = frame - seg.offset
            k = template.template_index(j, seg.start_frame)
            return template.prepared(k).image_input(), audio_windows(seg.features, [j], mode)[0]
    raise ParityError(f"frame {frame} is not part of this run")


@dataclass
class AudioInput:
    """The feature rows a run uses, where they came from, and (from audio) the encoder windows that made them."""

    features: np.ndarray
    source: dict[str, str]
    mel_windows: np.ndarray | None = None


def resolve_audio_input(mode: str, features: str | os.PathLike[str] | np.ndarray | None,
                        audio: str | os.PathLike[str] | None, encoder: str | os.PathLike[str] | None,
                        progress: bool = False, bundle: str | os.PathLike[str] | None = None) -> AudioInput:
    """Feature rows from ``--features F`` (a file or an array) or from ``--audio A`` (exactly one; ParityError
    otherwise).

    Audio goes through framegen's mel (:mod:`framegen.toolkit.inputs.audio`) and the PyTorch audio encoder checkpoint
    ``encoder`` (the reference encoder; 'ave' features only) or, without one, the ``bundle``'s own exported encoder
    (a self-contained bundle; its artifacts are then what parity's features rest on, and the encoder check against
    PyTorch needs the checkpoint).
    """
    if (features is None) == (audio is None):
        raise ParityError("give either --features F or --audio A (with --encoder ENC, or a bundle with an encoder)")
    if features is not None:
        if encoder is not None:
            raise ParityError("--encoder goes with --audio, not --features")

        if isinstance(features, np.ndarray):
            return AudioInput(validate_features(features, mode, "features"), {"features": "array"})
        return AudioInput(load_features(features, mode), {"features": os.fspath(features)})
    if mode != "ave":
        raise ParityError(f"--audio makes 'ave' features; the bundle's generator is {mode!r} mode (use --features)")
    if encoder is None and bundle is None:
        raise ParityError("--audio needs --encoder ENC (the audio encoder checkpoint, audio_visual_encoder.pth)")
    from framegen.models.checkpoint import sha256_file

    wav = decode_audio(audio)
    try:
        mel = melspectrogram(wav)
        windows = mel_windows(mel)
    except ValueError as exc:
        raise AudioError(f"{audio}: {exc}") from None
    encode, label = resolve_encoder(encoder=encoder, bundle=bundle)
    feats = ave_features(mel, encode, progress=progress)
    if encoder is None or Path(encoder).suffix in (".onnx", ".mlpackage"):
        return AudioInput(feats, {"audio": os.fspath(audio), "embedding_from": label, "encoder_kind": "artifact"},
                          windows)
    return AudioInput(feats, {"audio": os.fspath(audio), "encoder": os.fspath(encoder),
                              "encoder_sha256": sha256_file(encoder), "encoder_kind": "checkpoint",
                              "embedding_from": "PyTorch audio encoder checkpoint (fp32, CPU)"}, windows)
