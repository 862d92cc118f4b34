"""Reports and images written atomically (see :func:`framegen.models.atomic.atomic_output`)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from framegen.models.atomic import atomic_output
from framegen.models.errors import FramegenError


def jsonable(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become strings ("inf", "-inf", "nan"), numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, os.PathLike):  # paths, and loaded bundles / checkpoints, which stand for their files
        return os.fspath(value)
    return value


def write_json(path: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """Write a JSON report atomically; non-finite floats become strings."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n")
    return Path(path)


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Encode a BGR image as PNG and write it atomically."""
    import cv2

    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise FramegenError(f"{path}: PNG encoding failed")
    with atomic_output(path) as tmp:
        tmp.write_bytes(data.tobytes())
    return Path(path)
