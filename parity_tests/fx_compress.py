"""Session-scoped compressed artifacts (issue 18), built once: an ONNX bundle with fp32, fp16 and int8 generators,
and a Core ML bundle with 8-bit and 6-bit palettized generators, both from the calibrated seeded 'ave' checkpoint,
calibrated on a handful of synthetic-template crops and judged on two held-out frames (to keep CPU time low)."""

from __future__ import annotations

from pathlib import Path

import pytest

__all__ = ["compress_options", "compressed_coreml_bundle", "int8_onnx_bundle"]

#: the int8 ONNX artifact of a random-but-calibrated checkpoint is far below the default floor (docs/PARITY.md);
#: the fixture is exported under a floor it clears, the default-floor refusal is tested on its own
FIXTURE_FLOOR = {"min_psnr_db": 12.0, "max_level_error": 255.0}


@pytest.fixture(scope="session")
def compress_options(synth_template_dir, parity_features_path, calibrated_generator):
    """Calibration on 4 template crops with real(-looking) feature windows, gate on 2 held-out frames. Its gate
    data is built here, once, for every export that uses these options (an export keeps gate data its caller
    built; it releases only what it built itself)."""
    from framegen.toolkit.export.compress import CompressOptions, gate_data, release

    opts = CompressOptions(template=synth_template_dir, features=parity_features_path, calibration_frames=4,
                           gate_frames=2, **FIXTURE_FLOOR)
    gate_data(calibrated_generator, "ave", opts)  # the checkpoints' own module (generator_ckpt is its state dict)
    yield opts
    release(opts)


@pytest.fixture(scope="session")
def int8_onnx_bundle(tmp_path_factory, generator_ckpt, compress_options) -> Path:
    """ONNX fp32 + fp16 + int8 (QDQ for OpenVINO) generators."""
    from framegen.toolkit.export.bundle import export_bundle

    return export_bundle(generator_ckpt, tmp_path_factory.mktemp("int8") / "bundle", formats=("onnx",),
                         precisions=("fp32", "fp16", "int8"), compression=compress_options)


@pytest.fixture(scope="session")
def compressed_coreml_bundle(tmp_path_factory, generator_ckpt, compress_options) -> Path:
    """Core ML generators with 8-bit linear and 6-bit palettized weights (fp16 compute)."""
    from framegen.toolkit.export.bundle import export_bundle

    return export_bundle(generator_ckpt, tmp_path_factory.mktemp("cmlc") / "bundle", formats=("coreml",),
                         precisions=("int8", "pal6"), compression=compress_options)
