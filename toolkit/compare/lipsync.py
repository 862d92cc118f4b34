"""Lip-sync figures of a generator on talking clips: mouth-region PSNR and mouth-opening correlations.

The render follows SyncTalk_2D's inference: the generator sees a template frame (the clip's head pose, with a
mouth unrelated to the speech) as reference and masked image, plus the audio window. The rendered mouth opening is
read from the pixels (:func:`framegen.toolkit.inputs.talking.mouth_opening_pixels`) and correlated with the
ground-truth opening of the synthetic clip and with the audio's loudness envelope; the same render with the audio
zeroed must lose that correlation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from framegen.models.contract import MASK_COLS, MASK_ROWS
from framegen.toolkit.inputs.audio import ave_features, melspectrogram
from framegen.toolkit.inputs.features import audio_windows
from framegen.toolkit.inputs.talking import Clip, mouth_boxes_open, mouth_opening_pixels, same_pose_other_mouth

Generator = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (B,6,320,320), (B,32,16,16) -> (B,3,320,320)


@dataclass
class LipSync:
    """Figures of one utterance; correlations are Pearson's r (0 where the rendered opening is constant)."""

    name: str
    frames: int
    mouth_psnr_db: float | None
    r_truth: float | None
    r_loudness: float
    r_truth_zeroed: float | None
    r_loudness_zeroed: float
    r_truth_template: float | None
    #: The same measure on the ground-truth frames against loudness: what a generator that drew the true mouth
    #: exactly would score in ``r_loudness`` (the ceiling of that figure for this utterance).
    r_loudness_truth_frames: float | None = None
    #: The rendered opening against the template's own mouth (the frame given as reference and masked image): how
    #: much the generator copies the template's mouth instead of following the speech. Near 0 for a generator that
    #: reads the mouth from the audio alone.
    r_follows_template: float | None = None
    #: Per frame, the pixels of the crop outside the open mouth's box (widened by ``OUTSIDE_MARGIN``) that differ
    #: from the template by more than ``FAR_OFF`` levels in a channel: median and largest count over the frames.
    #: The face there should be the template's; the jaw line that moves with the opening stays under 50 levels, a
    #: speck the generator paints does not.
    far_off_outside_median: float | None = None
    far_off_outside_max: int | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return asdict(self)


FAR_OFF = 100  # levels: well above the moving jaw line's largest change (48) and fp16's rounding (27)
OUTSIDE_MARGIN = 12  # pixels around the open mouth's box that the lips' shading and the chin may reach


def far_off_outside_mouth(pred: np.ndarray, templates: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Per frame, the count of pixels outside the widened mouth box more than ``FAR_OFF`` levels (any channel)
    from the template: the face outside the mouth that the generator did not leave unchanged."""
    far = (np.abs(pred.astype(np.int16) - templates.astype(np.int16)) > FAR_OFF).any(axis=-1)
    for f, (x0, y0, x1, y1) in enumerate(boxes):
        far[f, max(y0 - OUTSIDE_MARGIN, 0):y1 + OUTSIDE_MARGIN, max(x0 - OUTSIDE_MARGIN, 0):x1 + OUTSIDE_MARGIN] = False
    return far.reshape(len(far), -1).sum(axis=1)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r; 0 when either side is constant (a mouth that never moves follows nothing)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.std() < 1e-12 or b.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def loudness(wav: np.ndarray, frames: int, per_frame: int = 640) -> np.ndarray:
    """RMS of each 25 fps video frame's 40 ms of samples."""
    padded = np.zeros(frames * per_frame, np.float64)
    n = min(wav.size, padded.size)
    padded[:n] = wav[:n]
    return np.sqrt((padded.reshape(frames, per_frame) ** 2).mean(axis=1))


def render_crops(generator: Generator, references: np.ndarray, features: np.ndarray, batch: int = 8) -> np.ndarray:
    """Predicted uint8 crops (N, 320, 320, 3) for template crops ``references`` and 'ave' ``features``."""
    out = np.empty_like(references)
    for a in range(0, len(references), batch):
        ref = references[a:a + batch].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        masked = ref.copy()
        masked[:, :, MASK_ROWS, MASK_COLS] = 0.0
        audio = audio_windows(features, np.arange(a, a + len(ref)), "ave")
        pred = generator(np.concatenate([ref, masked], axis=1), audio)
        out[a:a + batch] = (pred.transpose(0, 2, 3, 1) * 255.0).astype(np.uint8)  # SyncTalk_2D truncates
    return out


def mouth_psnr(pred: np.ndarray, truth: np.ndarray, boxes: np.ndarray) -> float:
    """PSNR (dB) over the mouth boxes of all frames together."""
    se, count = 0.0, 0
    for p, t, (x0, y0, x1, y1) in zip(pred, truth, boxes, strict=True):
        d = p[y0:y1, x0:x1].astype(np.float64) - t[y0:y1, x0:x1]
        se += float((d * d).sum())
        count += d.size
    mse = se / max(count, 1)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def measure(name: str, generator: Generator, encode: Callable[[np.ndarray], np.ndarray], wav: np.ndarray,
            track_seed: int, clip: Clip | None = None) -> LipSync:
    """The figures of one utterance ``wav`` (int16-exact float32) on head track ``track_seed``; ``clip`` (the
    synthetic ground truth of the same utterance) adds the PSNR and the correlations with the true opening."""
    feats = clip.features if clip is not None else ave_features(melspectrogram(wav), encode)
    n = len(feats) if clip is None else len(clip.crops)
    rng_mouth = np.random.default_rng(track_seed)
    idle_open = np.clip(rng_mouth.uniform(0.0, 1.0, n), 0.0, 1.0).astype(np.float32)  # the template's own mouth
    idle_spread = rng_mouth.uniform(-0.5, 0.5, n).astype(np.float32)
    templates = same_pose_other_mouth(track_seed, idle_open, idle_spread, seed=track_seed)
    boxes = mouth_boxes_open(track_seed, n)
    pred = render_crops(generator, templates, feats)
    zero_feats = ave_features(melspectrogram(np.zeros_like(wav)), encode)[:n]
    pred_zero = render_crops(generator, templates, zero_feats)
    opening = mouth_opening_pixels(pred, boxes)
    template_opening = mouth_opening_pixels(templates, boxes)
    opening_zero = mouth_opening_pixels(pred_zero, boxes)
    loud = loudness(wav, n)
    truth = clip.opening if clip is not None else None
    far = far_off_outside_mouth(pred, templates, boxes)
    return LipSync(
        name, n,
        mouth_psnr(pred, clip.crops, clip.mouth_boxes) if clip is not None else None,
        pearson(opening, truth) if truth is not None else None,
        pearson(opening, loud),
        pearson(opening_zero, truth) if truth is not None else None,
        pearson(opening_zero, loud),
        pearson(template_opening, truth) if truth is not None else None,
        pearson(mouth_opening_pixels(clip.crops, boxes), loud) if clip is not None else None,
        pearson(opening, template_opening),
        float(np.median(far)), int(far.max()))
