"""The pixel contract of the generator: crop -> model input and model output -> uint8, bit-exact with SyncTalk_2D.

It sits in the lowest layer because the exporters (image-I/O graphs, validation references), the runtimes and the
pipeline all compute these two functions and must compute them the same way.
"""

from __future__ import annotations

import cv2
import numpy as np
from framegen.models.contract import INNER_OFFSET, INNER_SIZE, MASK_COLS, MASK_ROWS

_INNER = slice(INNER_OFFSET, INNER_OFFSET + INNER_SIZE)


def model_input(crop328: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The generator's image input for one crop: float32 (6, 320, 320), BGR planes / 255.

    Channels 0-2 are ``crop328[4:324, 4:324]``; channels 3-5 the same with the mask rectangle set to 0 (what
    ``cv2.rectangle(img, (5, 5, 310, 305), (0, 0, 0), -1)`` draws). ``out`` may be a preallocated float32
    (6, 320, 320) array (e.g. one slot of a batch); it is filled and returned.
    """
    if out is None:
        out = np.empty((6, INNER_SIZE, INNER_SIZE), dtype=np.float32)
    ref, masked = out[:3], out[3:]
    for channel, plane in enumerate(cv2.split(crop328[_INNER, _INNER])):  # HWC -> CHW without a strided copy
        ref[channel] = plane
    # float32 / 255 rounds exactly like SyncTalk_2D's float32 array / 255.0 (a multiply by 1/255 would not).
    np.divide(ref, np.float32(255.0), out=ref)
    masked[...] = ref
    masked[:, MASK_ROWS, MASK_COLS] = 0.0
    return out


def pred_to_uint8(pred: np.ndarray) -> np.ndarray:
    """Model output (3, 320, 320) in [0, 1] -> uint8 (320, 320, 3), truncating like ``np.array(x*255, uint8)``.

    The product is taken in float32 as SyncTalk_2D does; values outside [0, 255] are clamped and NaN becomes 0
    first, which changes nothing for in-range outputs and keeps the cast defined for the rest.
    """
    x = np.asarray(pred, dtype=np.float32)
    if x.shape != (3, INNER_SIZE, INNER_SIZE):
        raise ValueError(f"prediction shape {x.shape}, expected (3, {INNER_SIZE}, {INNER_SIZE})")
    scaled = x * np.float32(255.0)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    if np.isnan(scaled.max()):  # max propagates NaN: one cheap pass instead of a per-element test
        np.nan_to_num(scaled, copy=False, nan=0.0)
    planes = scaled.astype(np.uint8)
    return cv2.merge([planes[0], planes[1], planes[2]])  # CHW -> HWC, far faster than a numpy transpose copy
