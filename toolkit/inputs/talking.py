"""Synthetic talking clips with known ground truth: the demo face speaking a synthesised utterance.

A clip is the demo's face (``synth.Painter``) following a seeded head track whose mouth follows the articulation of
the speech (:func:`framegen.toolkit.inputs.speech.articulation`), cropped exactly as SyncTalk_2D crops (landmark box,
cubic
resize to 328, inner 320), with the utterance's 'ave' features. It is what the demo generator is trained on, and,
for utterances the training never saw, the ground truth its lip sync is measured against.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
from framegen.models.contract import CROP_SIZE, INNER_SIZE, SAMPLE_RATE
from framegen.toolkit.inputs.audio import ave_features, melspectrogram
from framegen.toolkit.inputs.preprocess import crop_328, crop_box
from framegen.toolkit.inputs.speech import Speech, articulation
from framegen.toolkit.inputs.synth import JPEG_QUALITY, LIPS_OUTER, Painter, generate_track

WIDTH, HEIGHT = 1280, 720
_BORDER = (CROP_SIZE - INNER_SIZE) // 2


@dataclass
class Clip:
    """One talking clip: per video frame the inner 320x320 BGR crop, the mouth box in it, opening and spread."""

    crops: np.ndarray  # (N, 320, 320, 3) uint8
    mouth_boxes: np.ndarray  # (N, 4) int32: x0, y0, x1, y1 in crop pixels
    opening: np.ndarray  # (N,) float32
    spread: np.ndarray  # (N,) float32
    features: np.ndarray  # (N, 512) float32
    wav: np.ndarray  # int16-exact float32 samples


def quantize_pcm(wav: np.ndarray) -> np.ndarray:
    """The float samples a 16-bit PCM WAV of ``wav`` decodes to (what the demo's features are computed from)."""
    pcm = np.clip(np.round(wav * 32767.0), -32768, 32767)
    return (pcm / 32768.0).astype(np.float32)


def frame_crop(painter: Painter, lms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The inner 320 crop of one drawn frame (through JPEG, as a template stores it) and its mouth box."""
    ok, jpeg = cv2.imencode(".jpg", painter.draw(lms), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    img = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    crop = crop_328(img, crop_box(lms))[_BORDER:_BORDER + INNER_SIZE, _BORDER:_BORDER + INNER_SIZE]
    return crop, mouth_box(lms)


def mouth_box(lms: np.ndarray, margin: int = 6) -> np.ndarray:
    """The outer lips' bounding box in the frame's inner 320 crop, widened by ``margin``: x0, y0, x1, y1."""
    x0, y0, x1, _ = crop_box(lms)
    scale = CROP_SIZE / (x1 - x0)
    lips = (lms[LIPS_OUTER].astype(np.float64) - np.array([x0, y0])) * scale - _BORDER
    lo = np.floor(lips.min(axis=0)).astype(np.int32) - margin
    hi = np.ceil(lips.max(axis=0)).astype(np.int32) + margin
    return np.clip(np.r_[lo, hi], 0, INNER_SIZE).astype(np.int32)


def mouth_boxes_open(track_seed: int, frames: int) -> np.ndarray:
    """Per frame of head track ``track_seed``, the mouth box with the mouth wide open: where any rendered mouth of
    that pose lies, whatever drew it."""
    track = generate_track(frames, WIDTH, HEIGHT, track_seed, mouth=np.ones(frames), spread=np.ones(frames))
    rounded = generate_track(frames, WIDTH, HEIGHT, track_seed, mouth=np.ones(frames), spread=-np.ones(frames))
    a = np.stack([mouth_box(lms) for lms in track])
    b = np.stack([mouth_box(lms) for lms in rounded])
    return np.concatenate([np.minimum(a[:, :2], b[:, :2]), np.maximum(a[:, 2:], b[:, 2:])], axis=1)


def talking_clip(speech: Speech, encode, track_seed: int, face_seed: int = 0) -> Clip:
    """Render ``speech`` as a talking clip of the demo face ``face_seed`` on head track ``track_seed``."""
    opening, spread = articulation(speech)
    return talking_clip_for(speech.wav, opening, spread, encode, track_seed, face_seed)


def talking_clip_for(wav: np.ndarray, opening: np.ndarray, spread: np.ndarray, encode, track_seed: int,
                     face_seed: int = 0) -> Clip:
    """Render 16 kHz speech ``wav`` whose mouth per 25 fps frame is ``opening`` / ``spread`` (any source of speech
    with a known mouth, such as a text-to-speech engine's phonemes) as a talking clip."""
    wav = quantize_pcm(wav)
    feats = ave_features(melspectrogram(wav), encode)
    n = min(len(feats), len(opening))
    opening = np.pad(opening, (0, max(0, n - len(opening))))[:n]
    spread = np.pad(spread, (0, max(0, n - len(spread))))[:n]
    track = generate_track(n, WIDTH, HEIGHT, track_seed, mouth=opening, spread=spread)
    painter = Painter(WIDTH, HEIGHT, face_seed)
    with ThreadPoolExecutor(max_workers=2) as pool:  # drawing and JPEG coding release the GIL
        results = list(pool.map(lambda k: frame_crop(painter, track[k]), range(n)))
    crops = np.stack([c for c, _ in results])
    boxes = np.stack([b for _, b in results])
    return Clip(crops, boxes, opening, spread, np.asarray(feats[:n], dtype=np.float32), wav)


def same_pose_other_mouth(speech_track_seed: int, opening: np.ndarray, spread: np.ndarray, face_seed: int = 0,
                          seed: int = 0) -> np.ndarray:
    """Crops of the clip's head poses with the mouth of another, random frame: references that differ from the
    target only in the mouth, which is what a template frame is at inference (its own mouth, not the speech's)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(opening))
    track = generate_track(len(opening), WIDTH, HEIGHT, speech_track_seed, mouth=opening[perm], spread=spread[perm])
    painter = Painter(WIDTH, HEIGHT, face_seed)
    with ThreadPoolExecutor(max_workers=2) as pool:
        return np.stack(list(pool.map(lambda k: frame_crop(painter, track[k])[0], range(len(opening)))))


def mouth_opening_pixels(crops: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """A pixel measure of how open each crop's mouth is: the mouth's height, as a share of its box.

    In the central strip of the mouth box (the middle 30 % of its width) a row belongs to the mouth when most of its
    pixels are lips or mouth interior (darker than skin: luma < 120) or teeth (bright and grey). Opening the jaw
    drops the lower lip, so the mouth grows taller whoever drew it (a renderer that shows teeth where the truth shows
    a dark interior reads the same). On the ground-truth frames it follows the true opening at r = 0.81-0.89.
    """
    out = np.empty(len(crops), dtype=np.float64)
    for k, (crop, (x0, y0, x1, y1)) in enumerate(zip(crops, boxes, strict=True)):
        roi = crop[y0:y1, x0:x1].astype(np.float32)
        if roi.shape[0] == 0 or roi.shape[1] < 4:
            out[k] = 0.0
            continue
        w = roi.shape[1]
        strip = roi[:, int(w * 0.35):max(int(w * 0.65), int(w * 0.35) + 1)]
        luma = strip[..., 0] * 0.114 + strip[..., 1] * 0.587 + strip[..., 2] * 0.299
        grey = strip.max(axis=-1) - strip.min(axis=-1) < 40
        mouth = (luma < 120) | ((luma > 200) & grey)
        out[k] = float((mouth.mean(axis=1) > 0.5).sum()) / roi.shape[0]
    return out


__all__ = ["HEIGHT", "SAMPLE_RATE", "WIDTH", "Clip", "frame_crop", "mouth_box", "mouth_boxes_open",
           "mouth_opening_pixels", "quantize_pcm", "same_pose_other_mouth", "talking_clip"]
