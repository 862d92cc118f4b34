"""Deterministic synthetic templates in SyncTalk_2D's layout, for tests and demos without real footage.

Each frame is drawn from its 110 landmarks (a real track copied from ``landmarks_dir``, or a generated one): a
shaded head with hair, brows, eyes, nose and lips over a gradient background, so the crop region has edges, colour
gradients and texture, and moves with the track (the mouth opens and closes). Same arguments, same bytes.
"""

from __future__ import annotations

import math
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from framegen.models.atomic import atomic_output
from framegen.models.contract import LMS_POINTS
from framegen.toolkit.inputs.preprocess import check_box, crop_box
from framegen.toolkit.inputs.template import (
    IMAGE_DIR,
    LANDMARK_DIR,
    LANDMARK_SUFFIX,
    TemplateError,
    numbered_files,
    read_landmarks,
)

JPEG_QUALITY = 95
MAX_WIDTH, MAX_HEIGHT = 7680, 4320
MAX_FRAMES = 100_000

# Landmark groups of SyncTalk_2D's 110-point layout (as in real tracks).
CONTOUR = slice(0, 33)
BROW_L, BROW_R = slice(33, 42), slice(42, 51)
NOSE_BRIDGE, NOSE_LOWER = slice(51, 55), slice(55, 66)
EYE_L, EYE_R = slice(66, 74), slice(78, 86)
IRIS_L, IRIS_R = slice(74, 78), slice(86, 90)
LIPS_OUTER, LIPS_INNER = slice(90, 102), slice(102, 110)


def _canonical_shape() -> np.ndarray:
    """A neutral 110-point face in face-width units, origin at the crop box corner (lms[1].x, lms[52].y).

    Proportions follow a real SyncTalk_2D track; left-side groups are mirrored about x = 0.5.
    """
    def mirror(points: np.ndarray) -> np.ndarray:
        return np.column_stack([1.0 - points[:, 0], points[:, 1]])

    t = np.linspace(0.0, math.pi, 33)
    contour = np.column_stack([0.5 - 0.5 * np.cos(t) / math.cos(math.pi / 32), -0.15 + 0.88 * np.sin(t)])
    u = np.linspace(0.0, 1.0, 5)
    brow_top = np.column_stack([0.08 + 0.26 * u, -0.22 - 0.07 * np.sin(math.pi * u) - 0.03 * u])
    brow_bottom = np.column_stack([0.33 - 0.19 * u[1:], -0.23 + 0.01 * np.sin(math.pi * u[1:])])
    brow_l = np.vstack([brow_top, brow_bottom[:4]])
    bridge = np.array([[0.47, 0.08], [0.465, 0.0], [0.46, -0.09], [0.46, -0.17]])
    nose_lower = np.array([[0.38, -0.14], [0.37, 0.05], [0.32, 0.13], [0.36, 0.18], [0.40, 0.15], [0.47, 0.19],
                           [0.54, 0.15], [0.58, 0.18], [0.63, 0.13], [0.57, 0.05], [0.54, -0.14]])
    a = np.linspace(math.pi, -math.pi, 9)[:8]
    eye_l = np.column_stack([0.24 + 0.075 * np.cos(a), -0.125 - 0.03 * np.sin(a)])
    iris_l = np.array([[0.24, -0.13], [0.235, -0.13], [0.21, -0.13], [0.27, -0.13]])
    b = np.linspace(math.pi, -math.pi, 13)[:12]
    lips_outer = np.column_stack([0.48 + 0.17 * np.cos(b), 0.385 - np.where(np.sin(b) > 0, 0.07, 0.12) * np.sin(b)])
    c = np.linspace(math.pi, -math.pi, 9)[:8]
    lips_inner = np.column_stack([0.48 + 0.13 * np.cos(c), 0.37 - 0.01 * np.sin(c)])
    shape = np.vstack([contour, brow_l, mirror(brow_l), bridge, nose_lower, eye_l, iris_l, mirror(eye_l),
                       mirror(iris_l), lips_outer, lips_inner])
    assert shape.shape == (LMS_POINTS, 2)
    return shape


def generate_track(frames: int, width: int, height: int, seed: int = 0, *, mouth: np.ndarray | None = None,
                   spread: np.ndarray | None = None) -> np.ndarray:
    """A plausible talking-head track, (frames, 110, 2) int32, whose crop boxes lie inside the frame.

    The head drifts, sways and scales slightly, all smooth and seeded. The mouth opens and closes on its own, or
    follows ``mouth`` (opening per frame, 0 closed .. 1 wide open) and ``spread`` (-1 rounded .. 1 spread lips),
    e.g. the :func:`framegen.toolkit.inputs.speech.articulation` of an utterance.
    """
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0.0, 2 * math.pi, size=8)
    shape = _canonical_shape()
    face = min(0.25 * height, 0.3 * width)
    t = np.arange(frames, dtype=np.float64)
    cx = 0.5 * width + 0.03 * width * np.sin(2 * math.pi * t / 97 + phase[0])
    top = 0.36 * height + 0.02 * height * np.sin(2 * math.pi * t / 71 + phase[1])
    scale = face * (1.0 + 0.03 * np.sin(2 * math.pi * t / 53 + phase[2]))
    roll = math.radians(3.0) * np.sin(2 * math.pi * t / 89 + phase[3])
    if mouth is None:
        mouth = np.clip(0.3 + 0.7 * np.sin(2 * math.pi * t / 6.3 + phase[4]) * np.sin(2 * math.pi * t / 29 + phase[5]),
                        0.0, 1.0)
    elif len(mouth) != frames:
        raise TemplateError(f"mouth track has {len(mouth)} values for {frames} frames")
    spread = np.zeros(frames) if spread is None else np.asarray(spread, dtype=np.float64)
    lips = np.r_[90:110]
    track = np.empty((frames, LMS_POINTS, 2), dtype=np.int32)
    lower_lip = np.r_[97:102, 107:110]
    chin = np.arange(8, 25)
    for k in range(frames):
        pts = shape.copy()
        pts[lower_lip, 1] += 0.07 * mouth[k]
        pts[[103, 104, 105], 1] -= 0.01 * mouth[k]
        pts[chin, 1] += 0.04 * mouth[k] * np.sin(np.linspace(0.0, math.pi, chin.size))
        if spread[k]:  # spread lips widen and thin, rounded ones narrow and purse
            pts[lips, 0] = 0.48 + (pts[lips, 0] - 0.48) * (1.0 + 0.18 * spread[k])
            pts[lips, 1] = 0.38 + (pts[lips, 1] - 0.38) * (1.0 - 0.12 * spread[k])
        centred = pts - np.array([0.5, 0.3])
        cos, sin = math.cos(roll[k]), math.sin(roll[k])
        rotated = centred @ np.array([[cos, sin], [-sin, cos]])
        xy = rotated * scale[k] + np.array([cx[k], top[k] + 0.3 * scale[k]])
        track[k] = np.floor(xy).astype(np.int32)
    return track


class Painter:
    """Draws frames of one synthetic template; holds the static background and grain."""

    def __init__(self, width: int, height: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.width, self.height = width, height
        hue = rng.uniform(0.0, 1.0, size=3)
        ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
        xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
        top = np.array([60 + 80 * hue[0], 70 + 60 * hue[1], 90 + 50 * hue[2]], dtype=np.float32)
        bottom = np.array([30 + 40 * hue[2], 40 + 30 * hue[0], 50 + 40 * hue[1]], dtype=np.float32)
        bg = top * (1 - ys) + bottom * ys + 35.0 * xs * np.array([1.0, -0.5, 0.3], dtype=np.float32)
        self.background = np.clip(bg, 0, 255).astype(np.uint8)
        for _ in range(12):  # out-of-focus shapes behind the subject
            centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            radius = int(rng.integers(max(2, min(width, height) // 30), max(3, min(width, height) // 6)))
            colour = tuple(int(v) for v in rng.integers(20, 200, size=3))
            cv2.circle(self.background, centre, radius, colour, -1, cv2.LINE_AA)
        self.background = cv2.GaussianBlur(self.background, (0, 0), 3)
        grain = rng.normal(0.0, 4.0, size=(height, width, 1)).astype(np.float32)
        self.grain_up = np.clip(grain, 0, 255).astype(np.uint8).repeat(3, axis=2)
        self.grain_down = np.clip(-grain, 0, 255).astype(np.uint8).repeat(3, axis=2)
        self.skin = tuple(int(v) for v in rng.integers([120, 140, 170], [160, 180, 230]))
        self.hair = tuple(int(v) for v in rng.integers([10, 15, 20], [60, 60, 90]))
        self.shirt = tuple(int(v) for v in rng.integers(40, 220, size=3))

    def draw(self, lms: np.ndarray) -> np.ndarray:
        """One BGR frame for landmarks ``lms`` (110, 2)."""
        img = self.background.copy()
        pts = lms.astype(np.int32)
        x0, _, x1, _ = crop_box(pts)
        fw = max(4, x1 - x0)
        contour = pts[CONTOUR]
        cx = int(contour[:, 0].mean())
        chin_y = int(pts[16, 1])
        brow_y = int(min(pts[BROW_L, 1].min(), pts[BROW_R, 1].min()))
        aa = cv2.LINE_AA
        # Shoulders and neck, then hair behind the head.
        cv2.ellipse(img, (cx, chin_y + fw), (int(1.3 * fw), int(0.6 * fw)), 0, 180, 360, self.shirt, -1, aa)
        neck = np.array([[cx - fw // 4, chin_y - fw // 4], [cx + fw // 4, chin_y - fw // 4],
                         [cx + fw // 3, chin_y + fw // 2], [cx - fw // 3, chin_y + fw // 2]], np.int32)
        cv2.fillPoly(img, [neck], _shade(self.skin, 0.8), aa)
        head_top = brow_y - int(0.45 * fw)
        head_axes = (int(0.62 * fw), (chin_y - head_top) // 2 + fw // 8)
        cv2.ellipse(img, (cx, (head_top + chin_y) // 2 - fw // 10), head_axes, 0, 0, 360, self.hair, -1, aa)
        # The forehead closes the contour (which ends at the temples) over the top, from point 32 back to point 0.
        temple_y = int(pts[0, 1])
        forehead_axes = (max(1, int(pts[32, 0] - pts[0, 0]) // 2), max(1, temple_y - head_top))
        forehead = cv2.ellipse2Poly((cx, temple_y), forehead_axes, 0, 180, 360, 10)  # left, over the top, right
        face = np.vstack([contour, forehead[::-1]])
        # Layers of lighter skin toward the nose, blurred into a gradient; crisp features on top.
        nose = pts[52].astype(np.float64)
        for level, shrink in enumerate((1.0, 0.8, 0.6, 0.4)):
            layer = (nose + (face - nose) * shrink).astype(np.int32)
            cv2.fillPoly(img, [layer], _shade(self.skin, 0.85 + 0.1 * level), aa)
        rx0, ry0 = max(0, cx - fw), max(0, head_top - fw // 4)
        rx1, ry1 = min(self.width, cx + fw + 1), min(self.height, chin_y + fw // 2)
        if rx1 > rx0 and ry1 > ry0:
            roi = img[ry0:ry1, rx0:rx1]
            roi[...] = cv2.GaussianBlur(roi, (0, 0), max(1.0, fw / 40))
        thick = max(1, fw // 30)
        dark = _shade(self.hair, 0.9)
        cv2.polylines(img, [pts[BROW_L][:5], pts[BROW_R][:5]], False, dark, 2 * thick, aa)
        for eye, iris in ((EYE_L, IRIS_L), (EYE_R, IRIS_R)):
            cv2.fillPoly(img, [pts[eye]], (235, 240, 245), aa)
            centre = tuple(int(v) for v in pts[iris].mean(axis=0))
            cv2.circle(img, centre, max(1, fw // 28), (60, 50, 40), -1, aa)
            cv2.polylines(img, [pts[eye]], True, dark, thick, aa)
        cv2.polylines(img, [pts[NOSE_BRIDGE]], False, _shade(self.skin, 0.7), thick, aa)
        cv2.polylines(img, [pts[56:65]], False, _shade(self.skin, 0.6), thick, aa)
        cv2.fillPoly(img, [pts[LIPS_OUTER]], (70, 60, 170), aa)
        cv2.fillPoly(img, [pts[LIPS_INNER]], (40, 20, 60), aa)
        inner = pts[LIPS_INNER]
        if inner[5:, 1].max() - inner[1:4, 1].min() > max(3, fw // 40):  # open mouth: upper teeth
            teeth = np.vstack([inner[1:4], inner[3:0:-1] + np.array([0, max(2, fw // 40)])])
            cv2.fillPoly(img, [teeth], (225, 230, 235), aa)
        cv2.polylines(img, [pts[LIPS_OUTER]], True, (50, 40, 120), 1, aa)
        if rx1 > rx0 and ry1 > ry0:
            roi = img[ry0:ry1, rx0:rx1]
            cv2.add(roi, self.grain_up[ry0:ry1, rx0:rx1], dst=roi)
            cv2.subtract(roi, self.grain_down[ry0:ry1, rx0:rx1], dst=roi)
        return img


def _shade(colour: tuple[int, ...], factor: float) -> tuple[int, ...]:
    return tuple(min(255, int(c * factor)) for c in colour)


def synth_template(out: Path, frames: int = 50, width: int = 1280, height: int = 720,
                   landmarks_dir: Path | None = None, seed: int = 0) -> Path:
    """Write a deterministic synthetic template (``full_body_img/N.jpg`` + ``landmarks/N.lms``, N = 0..frames-1).

    With ``landmarks_dir`` the first ``frames`` landmark files (numeric order) are copied byte for byte and drawn;
    their crop boxes must fit the ``width`` x ``height`` frame. Without it a seeded track is generated. ``out`` must
    not exist or be an empty directory; the template is built beside it and renamed into place when complete.
    """
    out = Path(out)
    if frames < 1:
        raise TemplateError(f"--frames {frames}: a template needs at least one frame")
    if width < 32 or height < 32:
        raise TemplateError(f"{width}x{height}: synthetic frames must be at least 32x32")
    if width > MAX_WIDTH or height > MAX_HEIGHT:
        raise TemplateError(f"{width}x{height}: synthetic frames are at most {MAX_WIDTH}x{MAX_HEIGHT} (8K UHD; "
                            f"one frame's drawing needs ~15 bytes per pixel)")
    if frames > MAX_FRAMES:
        raise TemplateError(f"--frames {frames}: at most {MAX_FRAMES} (SyncTalk_2D templates hold seconds to minutes)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TemplateError(f"{out}: already exists and is not an empty directory")

    sources: list[Path] = []
    if landmarks_dir is not None:
        landmarks_dir = Path(landmarks_dir)
        if not landmarks_dir.is_dir():
            raise TemplateError(f"{landmarks_dir}: not a directory of N.lms files")
        found, _ = numbered_files(landmarks_dir, (LANDMARK_SUFFIX,))
        if len(found) < frames:
            raise TemplateError(f"{landmarks_dir}: {len(found)} landmark files, {frames} frames asked")
        sources = [found[n] for n in sorted(found)[:frames]]
        track = np.stack([read_landmarks(p) for p in sources])
        for src, lms in zip(sources, track, strict=True):
            check_box(crop_box(lms), width, height, f"{src} in a {width}x{height} frame")
    else:
        track = generate_track(frames, width, height, seed)

    painter = Painter(width, height, seed)
    with atomic_output(out, directory=True) as tmp:
        (tmp / IMAGE_DIR).mkdir()
        (tmp / LANDMARK_DIR).mkdir()

        def write(k: int) -> None:
            ok, jpeg = cv2.imencode(".jpg", painter.draw(track[k]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise TemplateError(f"{out}: JPEG encoding failed for frame {k}")
            (tmp / IMAGE_DIR / f"{k}.jpg").write_bytes(jpeg.tobytes())
            lms_path = tmp / LANDMARK_DIR / f"{k}{LANDMARK_SUFFIX}"
            if sources:
                shutil.copyfile(sources[k], lms_path)
            else:
                lms_path.write_text("".join(f"{x} {y}\n" for x, y in track[k].tolist()))

        # Drawing and JPEG encoding release the GIL: two threads keep both cores busy.
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(write, range(frames)))
    return out
