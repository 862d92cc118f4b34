"""Runtime fixtures: generator ONNX files of conftest's calibrated generator, a bundle holding them, and
real-looking inputs with their torch-cpu reference outputs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

__all__ = ["onnx_fp16_io", "runtime_bundle", "runtime_inputs", "torch_reference"]


def _export_onnx(model, path: Path, precision: str) -> Path:
    """The export engineer's exporter when it is there; else torch.onnx.export (+ :func:`half_onnx` for fp16)."""
    try:
        from framegen.exporters.onnx_export import export_generator_onnx
    except ImportError:
        export_generator_onnx = None
    if export_generator_onnx is not None:
        # TorchScript: 3x faster than the dynamo exporter, and the same graph for this model
        return export_generator_onnx(model, path, precision=precision, exporter="torchscript")
    import torch

    if precision == "fp16":
        return half_onnx(_export_onnx(model, path.with_name("tmp_fp32.onnx"), "fp32"), path)
    image = torch.zeros(1, 6, 320, 320)
    audio = torch.zeros(1, 32, 16, 16)
    axes = {"image": {0: "batch"}, "audio": {0: "batch"}, "output": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (image, audio), str(path), input_names=["image", "audio"], output_names=["output"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    return path


def half_onnx(src: Path, dst: Path) -> Path:
    """The fp32 generator graph with float16 weights and float16 inputs/outputs (Resize scales stay float32, which
    ONNX requires). Exercises the backends' dtype handling for models whose I/O is not float32."""
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(src))
    for i, t in enumerate(model.graph.initializer):
        if t.data_type == TensorProto.FLOAT:
            arr = numpy_helper.to_array(t).astype(np.float16)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(arr, t.name))
    for v in (*model.graph.input, *model.graph.output):
        v.type.tensor_type.elem_type = TensorProto.FLOAT16
    del model.graph.value_info[:]
    keep = [p for p in model.metadata_props if p.key != "precision"]  # the weights must tell, as for any file
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


@pytest.fixture(scope="session")
def runtime_bundle(request, tmp_path_factory, calibrated_generator) -> Path:
    """A bundle holding generator ONNX fp32 + fp16 of the calibrated generator: ``bundle_dir`` from
    ``parity_tests/fx_export.py`` when that exists, else a minimal one written here."""
    try:
        return Path(request.getfixturevalue("bundle_dir"))
    except pytest.FixtureLookupError:
        pass
    from framegen.models.bundle import MANIFEST, sha256_path

    root = tmp_path_factory.mktemp("rt_bundle")
    entries = []
    for precision in ("fp32", "fp16"):
        path = _export_onnx(calibrated_generator, root / f"generator_{precision}.onnx", precision)
        entries.append({"model": "generator", "format": "onnx", "precision": precision, "io": "tensor",
                        "path": path.name, "sha256": sha256_path(path)})
    (root / "tmp_fp32.onnx").unlink(missing_ok=True)
    (root / MANIFEST).write_text(json.dumps({"source": {"mode": "ave"}, "artifacts": entries}, indent=2))
    return root


@pytest.fixture(scope="session")
def onnx_fp16_io(runtime_bundle, tmp_path_factory) -> Path:
    """An fp16 generator whose inputs and output are float16 (the bundle's fp16 artifact has float32 I/O)."""
    from framegen.models.bundle import load_bundle

    fp32 = load_bundle(runtime_bundle).find("generator", "onnx", "fp32").path
    return half_onnx(fp32, tmp_path_factory.mktemp("rt_fp16io") / "generator_fp16io.onnx")


@pytest.fixture(scope="session")
def runtime_inputs() -> tuple[np.ndarray, np.ndarray]:
    """Three real-looking frames: image-like crops and, when ../shared is there, real 'ave' feature windows."""
    import torch
    from conftest import fixtures_dir
    from framegen.models.init import audio_like_batch, image_like_batch

    gen = torch.Generator().manual_seed(11)
    image = image_like_batch(3, gen).numpy()
    base = fixtures_dir()
    feats = base / "ave_features_522x512.npy" if base is not None else None
    if feats is not None and feats.is_file():
        f = np.load(feats).astype(np.float32)
        audio = np.stack([f[i - 8:i + 8].reshape(32, 16, 16) for i in (40, 260, 400)])
    else:
        audio = audio_like_batch("ave", 3, gen).numpy()
    return np.ascontiguousarray(image), np.ascontiguousarray(audio)


@pytest.fixture(scope="session")
def torch_reference(calibrated_generator, runtime_inputs) -> np.ndarray:
    """torch-cpu fp32 outputs for :func:`runtime_inputs` as one batch of 3 (the reference every runtime is compared
    with), through the torch-cpu backend."""
    from framegen.runtimes.registry import open_backend
    from framegen.runtimes.spec import OpenRequest

    with open_backend("torch-cpu", OpenRequest(model=calibrated_generator)) as backend:
        return backend.infer(*runtime_inputs)
