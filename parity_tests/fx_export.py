"""Session-scoped export artifacts: one full bundle (every format and precision) built once for the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest

__all__ = ["bundle_dir", "image_bundle"]


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory, generator_ckpt, encoder_ckpt) -> Path:
    """A validated bundle from the calibrated seeded 'ave' generator and the seeded audio encoder: ONNX fp32 + fp16
    and Core ML fp32 + fp16 of both. The slowest fixture of the suite (Core ML conversion); built once."""
    from framegen.toolkit.export.bundle import export_bundle

    return export_bundle(generator_ckpt, tmp_path_factory.mktemp("bundle") / "bundle", audio_encoder=encoder_ckpt,
                         formats=("onnx", "coreml"), precisions=("fp32", "fp16"))


@pytest.fixture(scope="session")
def image_bundle(tmp_path_factory, calibrated_generator, generator_ckpt):
    """A bundle holding the four image-I/O generator variants (ONNX / Core ML x fp32 / fp16), and the tensor ONNX
    graphs they wrap (serialized), exported once."""
    import json
    from types import SimpleNamespace

    from framegen.exporters.image_io import image_metadata
    from framegen.exporters.onnx_export import generator_onnx_model, to_float16
    from framegen.exporters.registry import get_exporter
    from framegen.models.bundle import MANIFEST, sha256_path
    from framegen.models.checkpoint import sha256_file

    root = tmp_path_factory.mktemp("image_bundle")
    sha = sha256_file(generator_ckpt)
    base = generator_onnx_model(calibrated_generator, "fp32")
    tensor = {"fp32": base.SerializeToString(), "fp16": to_float16(base).SerializeToString()}
    entries = []
    for fmt, suffix in (("onnx", ".onnx"), ("coreml", ".mlpackage")):
        exporter = get_exporter(fmt)
        image_base = exporter.trace_image(calibrated_generator, base if fmt == "onnx" else None, None)
        for prec in ("fp32", "fp16"):
            path = root / f"generator.{prec}.image{suffix}"
            meta = image_metadata("generator", "ave", prec, fmt, sha)
            exporter.build_image(calibrated_generator, prec, path, meta, image_base, None)
            entries.append({"model": "generator", "format": fmt, "precision": prec, "io": "image",
                            "path": path.name, "sha256": sha256_path(path), "metadata": meta})
    (root / MANIFEST).write_text(json.dumps({"source": {"mode": "ave", "sha256": sha}, "artifacts": entries}))
    suffix = {"onnx": ".onnx", "coreml": ".mlpackage"}
    return SimpleNamespace(root=root, tensor=tensor, base=base,
                           path=lambda fmt, prec: root / f"generator.{prec}.image{suffix[fmt]}")
