"""framegen: ONNX / Core ML export, cross-runtime rendering, parity and benchmarks for SyncTalk_2D lip-sync models.

The public API (see docs/API.md)::

    import framegen

    bundle = framegen.export("generator.pth", "bundle/", audio_encoder="encoder.pth")
    stats = framegen.render(template="template/", audio="speech.wav", bundle=bundle, out="out.mp4")
    report = framegen.parity(bundle=bundle, checkpoint="generator.pth", template="template/", audio="speech.wav")
    assert report.passed

Names resolve lazily, so ``import framegen`` stays fast and loads torch, ONNX Runtime or coremltools only when a
function that needs them runs.
"""

from __future__ import annotations

import importlib
from typing import Any

from framegen.models.version import __version__

_API = "framegen.toolkit.api"

__all__ = ["__version__"]


def __getattr__(name: str) -> Any:
    api = importlib.import_module(_API)
    if name in api.__all__:
        return getattr(api, name)
    raise AttributeError(f"module 'framegen' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *importlib.import_module(_API).__all__})
