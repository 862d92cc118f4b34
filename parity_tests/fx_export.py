"""Session-scoped export artifacts: one full bundle (every format and precision) built once for the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest

__all__ = ["bundle_dir"]


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory, generator_ckpt, encoder_ckpt) -> Path:
    """A validated bundle from the calibrated seeded 'ave' generator and the seeded audio encoder: ONNX fp32 + fp16
    and Core ML fp32 + fp16 of both. The slowest fixture of the suite (Core ML conversion); built once."""
    from framegen.toolkit.export import export_bundle

    return export_bundle(generator_ckpt, tmp_path_factory.mktemp("bundle") / "bundle", audio_encoder=encoder_ckpt,
                         formats=("onnx", "coreml"), precisions=("fp32", "fp16"))
