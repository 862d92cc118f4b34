"""Imports of optional heavy libraries shared by every layer (so that no layer imports a sibling for them)."""

from __future__ import annotations

import logging
from typing import Any


def coremltools() -> Any:
    """Import coremltools without its import-time warnings (untested torch version, no native runtime on Linux)."""
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import coremltools as ct
    finally:
        logger.setLevel(level)
    return ct
