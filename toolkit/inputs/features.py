"""Per-frame audio features for every generator mode: loading, validation and the U-Net's 16-frame windows.

For output frame ``i`` SyncTalk_2D's ``get_audio_features`` takes feature rows ``i-8 .. i+7``, with zero rows where
they fall outside ``[0, N)``, and ``inference_328.py`` reshapes them C-order to the mode's audio input (ave 32x16x16,
hubert 32x32x32, wenet 256x16x32). So a mode fixes the per-frame width (the window size / 16), not the per-frame
shape: hubert features stored as (N, 2, 1024) or (N, 32, 64) are the same numbers.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from framegen.models.atomic import atomic_output
from framegen.models.contract import FPS, MODES, WINDOW, WINDOW_LEFT, audio_shape
from framegen.models.errors import FramegenError

_RAW_SUFFIXES = (".bin", ".raw", ".f32")
_CHECK_ROWS = 4096  # rows per finiteness check: bounds the temporary boolean array


class FeatureError(FramegenError):
    """Features that cannot be read or do not fit the generator mode."""


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise FeatureError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")


def feature_width(mode: str) -> int:
    """Floats per frame for a mode: the 16-frame window's size / 16 (ave 512, hubert 2048, wenet 8192)."""
    _check_mode(mode)
    return int(np.prod(audio_shape(mode))) // WINDOW


def fps(mode: str) -> int:
    """Video frames per second the mode's features are sampled at (ave, hubert 25; wenet 20)."""
    _check_mode(mode)
    return FPS[mode]


def validate_features(feats: np.ndarray, mode: str, source: str) -> np.ndarray:
    """Check and flatten features to float32 (N, F): at least one frame, F = ``feature_width(mode)``, all finite.

    Errors name ``source`` and, for NaN/Inf, the first bad row (0-based), so nothing is rendered from bad input.
    """
    width = feature_width(mode)
    arr = np.asarray(feats)
    if arr.dtype.kind not in "fiu":
        raise FeatureError(f"{source}: features must be real numbers, got dtype {arr.dtype}")
    if arr.ndim < 2:
        raise FeatureError(f"{source}: expected (frames, ...) features, got shape {arr.shape}")
    per_frame = int(np.prod(arr.shape[1:]))
    if per_frame != width:
        raise FeatureError(f"{source}: {per_frame} values per frame (shape {arr.shape}), mode {mode!r} needs "
                           f"{width} (window {WINDOW} x {width} -> {'x'.join(map(str, audio_shape(mode)))})")
    if arr.shape[0] == 0:
        raise FeatureError(f"{source}: no frames")
    flat = np.ascontiguousarray(arr.reshape(arr.shape[0], width), dtype=np.float32)
    for r0 in range(0, flat.shape[0], _CHECK_ROWS):
        block = flat[r0:r0 + _CHECK_ROWS]
        ok = np.isfinite(block).all(axis=1)
        if not ok.all():
            row = r0 + int(np.argmin(ok))
            vals = block[row - r0]
            what = "NaN" if np.isnan(vals).any() else "Inf"
            origin = " (overflows float32)" if arr.dtype.itemsize > 4 and np.isfinite(arr[row]).all() else ""
            raise FeatureError(f"{source}: row {row} contains {what}{origin}; features must be finite")
    return flat


def load_features(path: str | os.PathLike[str], mode: str, width: int | None = None) -> np.ndarray:
    """Read features for ``mode`` as validated float32 (N, F).

    ``.npy``: any array (N, ...) whose per-frame size is the mode's width. ``.bin`` / ``.raw`` / ``.f32``: raw
    little-endian float32, ``width`` floats per frame (default: the mode's width). ``width`` given for a ``.npy``
    must agree with the array. Every failure is a :class:`FeatureError` naming the file.
    """
    p = Path(path)
    expected = feature_width(mode)
    if width is not None and width != expected:
        raise FeatureError(f"{p}: per-frame width {width} does not fit mode {mode!r} (needs {expected})")
    if not p.is_file():
        raise FeatureError(f"{p}: no such features file")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise FeatureError(f"{p}: not a readable .npy array ({msg})") from None
        return validate_features(arr, mode, str(p))
    if suffix in _RAW_SUFFIXES:
        row_bytes = expected * 4
        size = p.stat().st_size
        if size == 0:
            raise FeatureError(f"{p}: empty file")
        if size % row_bytes:
            rows = size // row_bytes
            raise FeatureError(f"{p}: {size} bytes is not a whole number of {expected}-float rows; row {rows} is "
                               f"truncated ({size - rows * row_bytes} of {row_bytes} bytes)")
        arr = np.fromfile(p, dtype="<f4").reshape(-1, expected)
        return validate_features(arr, mode, str(p))
    raise FeatureError(f"{p}: unknown features format {p.suffix or '(no suffix)'!r}; expected .npy or raw "
                       f"float32 {'/'.join(_RAW_SUFFIXES)}")


def audio_window(feats: np.ndarray, i: int, mode: str) -> np.ndarray:
    """The generator's audio input for output frame ``i``: rows i-8..i+7 (zeros outside), float32 ``audio_shape``."""
    return audio_windows(feats, [i], mode)[0]


def audio_windows(feats: np.ndarray, indices: np.ndarray | list[int], mode: str) -> np.ndarray:
    """:func:`audio_window` for several frames at once: float32 (B, *audio_shape(mode)).

    ``feats`` is (N, F) or (N, ...) with F floats per frame; every index must lie in ``[0, N)`` (the frames
    SyncTalk_2D renders).
    """
    arr = np.asarray(feats)
    n = arr.shape[0]
    flat = arr.reshape(n, -1)
    width = feature_width(mode)
    if flat.shape[1] != width:
        raise ValueError(f"features have {flat.shape[1]} values per frame, mode {mode!r} needs {width}")
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        bad = int(idx[(idx < 0) | (idx >= n)][0])
        raise IndexError(f"frame {bad} outside the {n} feature frames")
    rows = idx[:, None] + np.arange(-WINDOW_LEFT, WINDOW - WINDOW_LEFT)[None, :]  # (B, 16)
    inside = (rows >= 0) & (rows < n)
    out = np.zeros((idx.size, WINDOW, width), dtype=np.float32)
    out[inside] = flat[rows[inside]]
    return out.reshape(idx.size, *audio_shape(mode))


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` as .npy to a temporary sibling and rename it, so a partial file is never visible."""
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:  # a file object: np.save would append ".npy"
        np.save(fh, array)
    return Path(path)
