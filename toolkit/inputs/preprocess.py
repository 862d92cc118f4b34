"""SyncTalk_2D's per-frame pre- and post-processing, bit-exact with its ``inference_328.py``.

Crop box from the landmarks, crop + INTER_CUBIC resize to 328x328, the 320x320 reference and its masked copy as the
6-channel model input, paste-back of the prediction, and the ping-pong order over template frames. All geometry comes
from :mod:`models.contract`. :class:`PreparedTemplate` does the audio-independent work once per template frame and
caches it, because renders loop over the template many times.
"""

from __future__ import annotations

import contextlib
import threading
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
from framegen.models.contract import (
    BOX_X0_POINT,
    BOX_X1_POINT,
    BOX_Y0_POINT,
    CROP_SIZE,
    INNER_OFFSET,
    INNER_SIZE,
    MASK_COLS,
    MASK_ROWS,
)
from framegen.models.errors import FramegenError
from framegen.models.pixels import model_input, pred_to_uint8
from framegen.toolkit.inputs.template import Template

Box = tuple[int, int, int, int]  # x0, y0, x1, y1

_INNER = slice(INNER_OFFSET, INNER_OFFSET + INNER_SIZE)


class PreprocessError(FramegenError):
    """A frame that cannot be preprocessed (crop box empty or outside the frame), or a bad start frame."""


def crop_box(lms: np.ndarray) -> Box:
    """SyncTalk_2D's crop box: ``x0 = lms[1].x, y0 = lms[52].y, x1 = lms[31].x, y1 = y0 + (x1 - x0)``."""
    x0 = int(lms[BOX_X0_POINT][0])
    y0 = int(lms[BOX_Y0_POINT][1])
    x1 = int(lms[BOX_X1_POINT][0])
    return x0, y0, x1, y0 + (x1 - x0)


def check_box(box: Box, width: int, height: int, where: str) -> None:
    """Raise PreprocessError naming ``where`` if ``box`` is empty or not inside a ``width`` x ``height`` frame.

    SyncTalk_2D would slice such a box with Python's negative-index wrap-around and paste garbage (or crash).
    """
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        raise PreprocessError(f"{where}: empty crop box {list(box)} (lms[31].x <= lms[1].x)")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise PreprocessError(f"{where}: crop box {list(box)} leaves the {width}x{height} frame")


def crop_328(frame: np.ndarray, box: Box) -> np.ndarray:
    """``frame[y0:y1, x0:x1]`` resized to 328x328 with INTER_CUBIC (uint8 BGR)."""
    check_box(box, frame.shape[1], frame.shape[0], "crop_328")
    x0, y0, x1, y1 = box
    return cv2.resize(frame[y0:y1, x0:x1], (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_CUBIC)


def to_i420(frame_bgr: np.ndarray) -> np.ndarray:
    """A BGR uint8 frame (even height and width) as I420: Y rows, then U and V at half resolution, in one
    (H * 3 / 2, W) uint8 array; BT.601 limited range (OpenCV's conversion, what the H.264 writer encodes)."""
    return cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2YUV_I420)


def paste_back(frame: np.ndarray, box: Box, crop328: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """A copy of ``frame`` with the prediction pasted into ``box``, as SyncTalk_2D does it.

    The uint8 prediction replaces ``crop328[4:324, 4:324]``; the whole 328x328 crop (its 4-pixel border of the
    original included) is resized back to the box size with INTER_CUBIC and written into the box. ``pred`` is the
    float (3, 320, 320) model output or an already converted uint8 (320, 320, 3). Pixels outside the box are copied
    unchanged; ``frame`` and ``crop328`` are not modified.
    """
    x0, y0, x1, y1 = box
    is_u8 = pred.dtype == np.uint8 and pred.shape == (INNER_SIZE, INNER_SIZE, 3)
    pred_u8 = pred if is_u8 else pred_to_uint8(pred)
    crop = crop328.copy()
    crop[_INNER, _INNER] = pred_u8
    out = frame.copy()
    out[y0:y1, x0:x1] = cv2.resize(crop, (x1 - x0, y1 - y0), interpolation=cv2.INTER_CUBIC)
    return out


def pingpong_index(i: int, n: int, start: int = 0) -> int:
    """Template frame used for output frame ``i`` of a template with ``n`` frames, starting at ``start``.

    SyncTalk_2D walks its index as ``1, 2, ..., L, L-1, ..., 0, 1, ...`` (L = n - 1) and adds ``start``; here the
    walk runs over frames ``start..n-1``, which is identical for as long as SyncTalk_2D stays inside the template
    (it reads past the last frame when ``start > 0``). A one-frame template (or ``start = n - 1``) always gives
    its single frame, where SyncTalk_2D would read a frame that does not exist.
    """
    if n < 1:
        raise PreprocessError(f"template has {n} frames")
    if not 0 <= start < n:
        raise PreprocessError(f"start frame {start} is outside the template's frames 0..{n - 1}")
    if i < 0:
        raise ValueError(f"output frame index {i} is negative")
    last = n - 1 - start
    if last == 0:
        return start
    r = i % (2 * last)
    return start + (r + 1 if r < last else 2 * last - 1 - r)


def frame_order(n: int, count: int, start: int = 0) -> list[int]:
    """Template frames used by output frames ``0..count-1`` (see :func:`pingpong_index`); ``n`` template frames."""
    if count > 0:
        pingpong_index(0, n, start)  # validates n and start once
    return [pingpong_index(i, n, start) for i in range(count)]


@dataclass
class PreparedFrame:
    """The audio-independent part of one template frame: its crop box and its 328x328 uint8 crop (read-only)."""

    index: int
    box: Box
    crop328: np.ndarray

    def image_input(self, out: np.ndarray | None = None) -> np.ndarray:
        """The 6-channel float32 (6, 320, 320) model input (computed on each call; see :func:`model_input`)."""
        return model_input(self.crop328, out)


class PreparedTemplate:
    """A template whose frames are decoded, cropped and resized once each, shared by several threads.

    Crop boxes are checked for every frame at construction: a bad box raises PreprocessError naming the frame,
    unless ``skip_bad_boxes`` (then the frame is left out of :attr:`usable_indices` with a warning). Crops are
    cached for every frame used; decoded full frames are cached (read-only) while they fit in ``cache_bytes``.
    Once the budget is full no frame is evicted: renders walk the template cyclically, where keeping a fixed
    subset beats any recency-based eviction.
    """

    def __init__(self, template: Template, skip_bad_boxes: bool = False, cache_bytes: int = 1 << 30) -> None:
        self.template = template
        self.cache_bytes = cache_bytes
        self.boxes: list[Box] = [crop_box(lms) for lms in template.landmarks]
        self.warnings: list[str] = []
        self.bad_boxes: dict[int, str] = {}
        for i, box in enumerate(self.boxes):
            try:
                check_box(box, template.width, template.height, self.describe(i))
            except PreprocessError as exc:
                if not skip_bad_boxes:
                    raise
                self.bad_boxes[i] = str(exc)
        if self.bad_boxes:
            first = next(iter(self.bad_boxes.values()))
            self.warnings.append(f"skipping {len(self.bad_boxes)} frame(s) whose crop box leaves the frame "
                                 f"(first: {first})")
        self.usable_indices: list[int] = [i for i in range(len(template)) if i not in self.bad_boxes]
        if not self.usable_indices:
            raise PreprocessError(f"{template.root}: no frame has a crop box inside the frame")
        self._lock = threading.Lock()
        self._index_locks: dict[int, threading.Lock] = {}
        self._prepared: dict[int, PreparedFrame] = {}
        self._frames: dict[int, np.ndarray] = {}
        self._i420: dict[int, np.ndarray] = {}
        self._frame_bytes = 0

    def __len__(self) -> int:
        return len(self.usable_indices)

    def describe(self, i: int) -> str:
        """How messages name template frame ``i``: its index and image file."""
        return f"frame {i} ({self.template.relative(self.template.frames[i].image)})"

    @property
    def cached_frame_bytes(self) -> int:
        """Bytes of decoded full frames (and their I420 forms) currently held (never more than ``cache_bytes``)."""
        return self._frame_bytes

    def _index_lock(self, i: int) -> threading.Lock:
        with self._lock:
            return self._index_locks.setdefault(i, threading.Lock())

    def _decode(self, i: int) -> np.ndarray:
        """Decode frame ``i`` and keep it if the budget allows; the caller holds ``i``'s lock."""
        image = self.template.read_image(i)
        image.flags.writeable = False
        with self._lock:
            if self._frame_bytes + image.nbytes <= self.cache_bytes:
                self._frames[i] = image
                self._frame_bytes += image.nbytes
        return image

    def frame(self, i: int) -> np.ndarray:
        """Template frame ``i`` as BGR uint8 (H, W, 3), read-only; decoded once while the cache has room."""
        image = self._frames.get(i)
        if image is not None:
            return image
        if not 0 <= i < len(self.template):
            raise IndexError(f"template frame {i} out of range 0..{len(self.template) - 1}")
        with self._index_lock(i):
            image = self._frames.get(i)
            return image if image is not None else self._decode(i)

    def frame_i420(self, i: int) -> np.ndarray:
        """Template frame ``i`` in I420 (:func:`to_i420`), read-only: what an encoder's frames start from (only the
        pasted box is converted per output frame); converted once while the cache has room."""
        image = self._i420.get(i)
        if image is not None:
            return image
        image = to_i420(self.frame(i))
        image.flags.writeable = False
        with self._lock:
            if i not in self._i420 and self._frame_bytes + image.nbytes <= self.cache_bytes:
                self._i420[i] = image
                self._frame_bytes += image.nbytes
            return self._i420.get(i, image)

    def prepared(self, i: int) -> PreparedFrame:
        """Template frame ``i``'s box and 328x328 crop, computed on first use and cached."""
        prepared = self._prepared.get(i)
        if prepared is not None:
            return prepared
        if i in self.bad_boxes:
            raise PreprocessError(self.bad_boxes[i])
        if not 0 <= i < len(self.template):
            raise IndexError(f"template frame {i} out of range 0..{len(self.template) - 1}")
        with self._index_lock(i):
            prepared = self._prepared.get(i)
            if prepared is None:
                image = self._frames.get(i)
                if image is None:
                    image = self._decode(i)
                crop = crop_328(image, self.boxes[i])
                crop.flags.writeable = False
                prepared = PreparedFrame(i, self.boxes[i], crop)
                self._prepared[i] = prepared
        return prepared

    def warm(self, count: int | None = None, start: int = 0, i420: bool = False) -> int:
        """Decode and prepare, now, the template frames the first ``count`` output frames use (default: every usable
        frame), so that a live stream pays neither the time nor the memory growth later (``i420``: their I420
        forms too, for a stream that encodes video); returns how many frames are prepared. Full frames stay cached
        only while they fit in ``cache_bytes``."""
        wanted = self.usable_indices if count is None else sorted(set(self.order(count, start)))
        for i in wanted:
            self.prepared(i)
            self.frame(i)
            if i420:
                self.frame_i420(i)
        return len(wanted)

    def template_index(self, i: int, start: int = 0) -> int:
        """Template frame for output frame ``i``: the ping-pong walk over the usable frames from ``start`` on.

        ``start`` is a template index; when it is a skipped frame the walk starts at the next usable one.
        """
        pos = bisect_left(self.usable_indices, start)
        if start < 0 or pos == len(self.usable_indices):
            raise PreprocessError(f"start frame {start} is outside the template's usable frames "
                                  f"{self.usable_indices[0]}..{self.usable_indices[-1]}")
        return self.usable_indices[pingpong_index(i, len(self.usable_indices), pos)]

    def order(self, count: int, start: int = 0) -> list[int]:
        """Template frames for output frames ``0..count-1`` (see :meth:`template_index`)."""
        return [self.template_index(i, start) for i in range(count)]


def contact_sheet(template: Template, indices: list[int], tile: int = 192, columns: int = 4) -> np.ndarray:
    """A BGR image of tiles, one per template frame: the area around the crop box, with the box (green), the
    mask rectangle as it falls on the frame (red) and the landmarks (yellow) drawn, labelled with the frame."""
    rows = max(1, -(-len(indices) // columns))
    sheet = np.full((rows * (tile + 18), columns * tile, 3), 32, dtype=np.uint8)
    mask_x = (INNER_OFFSET + MASK_COLS.start, INNER_OFFSET + MASK_COLS.stop)
    mask_y = (INNER_OFFSET + MASK_ROWS.start, INNER_OFFSET + MASK_ROWS.stop)
    for n, i in enumerate(indices):
        image = template.read_image(i).copy()
        lms = template.read_landmarks(i)
        x0, y0, x1, y1 = box = crop_box(lms)
        side = max(x1 - x0, 1)
        sx = side / CROP_SIZE
        for x, y in lms.tolist():
            cv2.circle(image, (x, y), max(1, side // 90), (0, 220, 255), -1)
        cv2.rectangle(image, (x0 + int(mask_x[0] * sx), y0 + int(mask_y[0] * sx)),
                      (x0 + int(mask_x[1] * sx) - 1, y0 + int(mask_y[1] * sx) - 1), (40, 40, 230), max(1, side // 120))
        cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), (60, 220, 60), max(1, side // 90))
        margin = side // 3
        cx0, cy0 = max(0, x0 - margin), max(0, y0 - margin)
        cx1, cy1 = min(template.width, x1 + margin), min(template.height, y1 + margin)
        view = image[cy0:cy1, cx0:cx1] if cx1 > cx0 and cy1 > cy0 else image
        scale = tile / max(view.shape[:2])
        thumb = cv2.resize(view, (max(1, int(view.shape[1] * scale)), max(1, int(view.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA)
        top, left = (n // columns) * (tile + 18), (n % columns) * tile
        sheet[top:top + thumb.shape[0], left:left + thumb.shape[1]] = thumb
        label = f"{i}: {template.frames[i].image.name} {list(box)}"
        cv2.putText(sheet, label, (left + 3, top + tile + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (230, 230, 230), 1,
                    cv2.LINE_AA)
    return sheet


_cv2_guard = threading.Lock()
_cv2_state = {"users": 0, "before": 0}  # sections running, OpenCV's thread count before the first of them


@contextlib.contextmanager
def cv2_single_thread() -> Iterator[None]:
    """Run OpenCV single-threaded while any render or stream runs: its resizes here are small and its thread pool
    would compete with inference (per-pixel results do not depend on it). The setting is process-wide, so
    overlapping sections (parity) are counted and the first one's setting is restored by the last."""
    with _cv2_guard:
        if _cv2_state["users"] == 0:
            _cv2_state["before"] = cv2.getNumThreads()
            cv2.setNumThreads(1)
        _cv2_state["users"] += 1
    try:
        yield
    finally:
        with _cv2_guard:
            _cv2_state["users"] -= 1
            if _cv2_state["users"] == 0:
                cv2.setNumThreads(_cv2_state["before"])
