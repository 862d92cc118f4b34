"""Session-scoped artifacts for the export-validation tests (issue 14): a checkpoint that amplifies fp16 rounding
more than the stand-in the fixed limits were measured on (calibrated seeded 'ave', seed 2), and its ONNX fp16
export with the image-I/O variant, the export counting how often it ran the fp16 emulation (ONNX only: Core ML
conversion would add about 25 s here)."""

from __future__ import annotations

from pathlib import Path

import pytest

__all__ = ["seed2_export", "seed2_generator", "seed2_generator_ckpt"]


@pytest.fixture(scope="session")
def seed2_generator():
    """The calibrated seeded 'ave' generator, seed 2: its correct image-I/O fp16 ONNX export reaches 28 levels."""
    from conftest import calibrated

    return calibrated(2)


@pytest.fixture(scope="session")
def seed2_generator_ckpt(tmp_path_factory, seed2_generator) -> Path:
    """``seed2_generator`` in SyncTalk_2D's checkpoint format."""
    from conftest import saved_checkpoint

    return saved_checkpoint(tmp_path_factory, seed2_generator, "generator_ave_s2.pth")


@pytest.fixture(scope="session")
def seed2_export(tmp_path_factory, seed2_generator_ckpt) -> tuple[Path, int]:
    """``(bundle, emulations)``: ONNX fp16 generators, tensor and image I/O, from ``seed2_generator_ckpt``, and how
    many times the export ran :func:`framegen.toolkit.compare.tolerance.fp16_emulation`."""
    import framegen.toolkit.export.validate as validate
    from framegen.toolkit.export.bundle import export_bundle

    calls = []
    real = validate.fp16_emulation  # export validation's own reference to it (imported at its top)

    def counted(model):
        calls.append(type(model).__name__)
        return real(model)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(validate, "fp16_emulation", counted)
        bundle = export_bundle(seed2_generator_ckpt, tmp_path_factory.mktemp("bundle_s2") / "bundle",
                               formats=("onnx",), precisions=("fp16",), io=("tensor", "image"), mode="ave")
    return bundle, len(calls)
