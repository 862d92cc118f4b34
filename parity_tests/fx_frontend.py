"""Session-scoped audio front-end export: ``audio_frontend`` and ``audio_features`` in ONNX and Core ML, validated."""

from __future__ import annotations

from pathlib import Path

import pytest

__all__ = ["frontend_bundle"]


@pytest.fixture(scope="session")
def frontend_bundle(tmp_path_factory, encoder_ckpt) -> Path:
    """A front-end bundle for the seeded audio encoder (ONNX + Core ML fp32), built once; export validation runs
    the six contract signals through ONNX Runtime and coreml-mil (about a minute and a half of CPU)."""
    from framegen.toolkit.export.frontend import export_audio_frontend

    return export_audio_frontend(encoder_ckpt, tmp_path_factory.mktemp("frontend") / "frontend",
                                 formats=("onnx", "coreml"))
