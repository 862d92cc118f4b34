"""Heat maps for parity: reference | candidate | amplified absolute difference, side by side, as one PNG."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from framegen.toolkit.common.files import write_png

_HEADER = 34
_MIN_PANEL = 360  # small crop boxes are enlarged (nearest neighbour, so single pixels stay visible)


def difference_panel(ref: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, float, int]:
    """A colour map of ``|cand - ref|`` (max over channels) stretched so the largest difference is full scale.

    Returns the BGR panel, the gain applied and the largest difference in levels. Identical inputs give black.
    """
    diff = np.abs(cand.astype(np.int16) - ref.astype(np.int16)).max(axis=2)
    peak = int(diff.max())
    gain = 255.0 / peak if peak else 1.0
    scaled = np.clip(diff.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    panel = cv2.applyColorMap(scaled, cv2.COLORMAP_INFERNO)
    panel[diff == 0] = 0
    return panel, gain, peak


def heatmap_image(ref_frame: np.ndarray, cand_frame: np.ndarray, box: tuple[int, int, int, int],
                  title: str) -> np.ndarray:
    """The heat map image: the crop box with a margin from both frames and their amplified difference.

    Only the crop box can differ (both sides paste into the same template frame); the margin shows where it sits.
    """
    if ref_frame.shape != cand_frame.shape:
        raise ValueError(f"frame shapes differ: {ref_frame.shape} vs {cand_frame.shape}")
    h, w = ref_frame.shape[:2]
    x0, y0, x1, y1 = box
    margin = max(8, (x1 - x0) // 6)
    cx0, cy0, cx1, cy1 = max(0, x0 - margin), max(0, y0 - margin), min(w, x1 + margin), min(h, y1 + margin)
    ref = ref_frame[cy0:cy1, cx0:cx1]
    cand = cand_frame[cy0:cy1, cx0:cx1]
    diff, gain, peak = difference_panel(ref, cand)
    panels = [ref.copy(), cand.copy(), diff]
    for p in panels[:2]:
        # Drawn just outside the box so that no compared pixel is covered.
        cv2.rectangle(p, (x0 - cx0 - 1, y0 - cy0 - 1), (x1 - cx0, y1 - cy0), (60, 220, 60), 1)
    scale = max(1, -(-_MIN_PANEL // max(ref.shape[0], 1)))
    if scale > 1:
        panels = [cv2.resize(p, (p.shape[1] * scale, p.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
                  for p in panels]
    ph, pw = panels[0].shape[:2]
    gap = 6
    canvas = np.full((ph + 2 * _HEADER, 3 * pw + 2 * gap, 3), 24, dtype=np.uint8)
    labels = ("reference", "candidate", f"|difference| x{gain:.3g} (max {peak} levels)")
    for k, (p, label) in enumerate(zip(panels, labels, strict=True)):
        left = k * (pw + gap)
        canvas[2 * _HEADER:, left:left + pw] = p
        cv2.putText(canvas, label, (left + 4, 2 * _HEADER - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (230, 230, 230), 1,
                    cv2.LINE_AA)
    cv2.putText(canvas, title, (4, _HEADER - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def write_heatmap(path: str | os.PathLike[str], ref_frame: np.ndarray, cand_frame: np.ndarray,
                  box: tuple[int, int, int, int], title: str) -> Path:
    """Write :func:`heatmap_image` as a PNG (temporary sibling, then renamed)."""
    return write_png(path, heatmap_image(ref_frame, cand_frame, box, title))


def write_output_heatmap(path: str | os.PathLike[str], ref_pred: np.ndarray, pred: np.ndarray, title: str) -> Path:
    """The model output's heat map: both (3, 320, 320) predictions as images (``x * 255``, BGR) and their
    amplified difference, side by side, as a PNG (temporary sibling, then renamed)."""
    def image(p: np.ndarray) -> np.ndarray:
        return np.clip(np.nan_to_num(p) * 255.0, 0, 255).astype(np.uint8).transpose(1, 2, 0).copy()

    ref, cand = image(ref_pred), image(pred)
    h, w = ref.shape[:2]
    return write_png(path, heatmap_image(ref, cand, (0, 0, w, h), title))
