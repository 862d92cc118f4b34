"""ONNX and Core ML conversion of the audio front-end (:mod:`framegen.models.audio_frontend`), fp32 only.

Two models, with the contract's tensor names in both formats:

- ``audio_frontend``: ``pcm`` float32 ``[batch, samples]`` -> ``mel`` float32 ``[batch, frames, 80]``,
  frames = 1 + samples // 200;
- ``audio_features``: ``pcm`` float32 ``[samples]`` (>= 3000) -> ``features`` float32 ``[N + 2, 512]``.

fp32 only: the mel's dB of an fp16 magnitude cannot meet the 1e-4 contract. Both formats start from one TorchScript
trace: the feature model's output length depends on a table lookup of the mel length (the window count), which
``torch.export`` cannot express for a symbolic length, while a trace records it as ordinary ops (ONNX ``Range`` /
``Equal``; MIL ``range_1d`` / ``equal``). Core ML inputs are flexible (``RangeDim``) up to
:data:`framegen.models.audio_frontend.MAX_SAMPLES`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from framegen.exporters.coreml_export import MINIMUM_DEPLOYMENT_TARGET, save_package
from framegen.exporters.errors import ExportError
from framegen.exporters.onnx_export import DEFAULT_OPSET, save_onnx, set_metadata
from framegen.models.audio_frontend import (
    FEATURES_INPUT,
    FEATURES_OUTPUT,
    FRONTEND_INPUT,
    FRONTEND_OUTPUT,
    MAX_SAMPLES,
    MIN_SAMPLES,
)
from framegen.models.contract import FEATURE_WIDTH, MEL
from framegen.models.errors import first_line
from framegen.models.imports import coremltools, quiet
from framegen.models.version import __version__

KINDS = ("audio_frontend", "audio_features")
MAX_BATCH = 64  # Core ML batch range of audio_frontend, as for the encoder
_EXAMPLE_SAMPLES = 8000


def io_spec(kind: str) -> dict[str, Any]:
    """Inputs and outputs of ``kind``: ``{"inputs": [{name, shape, dtype}], "outputs": [...]}``, symbolic dims as
    names (the ONNX dim names)."""
    n_mels = int(MEL["n_mels"])
    if kind == "audio_frontend":
        return {"inputs": [{"name": FRONTEND_INPUT, "shape": ["batch", "samples"], "dtype": "float32"}],
                "outputs": [{"name": FRONTEND_OUTPUT, "shape": ["batch", "frames", n_mels], "dtype": "float32"}]}
    if kind == "audio_features":
        return {"inputs": [{"name": FEATURES_INPUT, "shape": ["samples"], "dtype": "float32"}],
                "outputs": [{"name": FEATURES_OUTPUT, "shape": ["rows", FEATURE_WIDTH], "dtype": "float32"}]}
    raise ExportError(f"unknown front-end model {kind!r}; expected {', '.join(KINDS)}")


def _example(kind: str) -> tuple[Any, ...]:
    import torch

    if kind == "audio_frontend":
        return (torch.zeros(2, _EXAMPLE_SAMPLES),)
    return (torch.zeros(_EXAMPLE_SAMPLES),)


def trace(module: Any, kind: str) -> Any:
    """The TorchScript trace both formats convert (on zero PCM; the ops do not depend on the values)."""
    import torch

    io_spec(kind)
    with quiet("torch.onnx", "torch.jit", "coremltools", stdout=True), torch.no_grad():
        return torch.jit.trace(module.eval(), _example(kind), check_trace=False)


# ---------------------------------------------------------------------------------------------------------- ONNX

def onnx_model(module: Any, kind: str, opset: int | None = None) -> Any:
    """``kind``'s fp32 graph as an ``onnx.ModelProto`` with the contract's names and symbolic dims."""
    import onnx
    import torch

    spec = io_spec(kind)
    names = [t["name"] for t in (*spec["inputs"], *spec["outputs"])]
    dims = [t["shape"] for t in (*spec["inputs"], *spec["outputs"])]
    axes = {n: {i: d for i, d in enumerate(shape) if isinstance(d, str)} for n, shape in zip(names, dims, strict=True)}
    buf = io.BytesIO()
    with quiet("torch.onnx", "torch.jit", "coremltools", stdout=True), torch.no_grad():
        torch.onnx.export(module.eval(), _example(kind), buf, dynamo=False,
                          input_names=[t["name"] for t in spec["inputs"]],
                          output_names=[t["name"] for t in spec["outputs"]], dynamic_axes=axes,
                          opset_version=opset or DEFAULT_OPSET, do_constant_folding=True)
    model = onnx.load_from_string(buf.getvalue())
    for node in model.graph.node:  # debug strings would make the bytes depend on the checkout's path
        node.doc_string = ""
    model.doc_string = ""
    # The exporter loses static sizes behind the Concat of the features; restate the contract's shapes.
    for vi, t in zip((*model.graph.input, *model.graph.output), (*spec["inputs"], *spec["outputs"]), strict=True):
        shape = vi.type.tensor_type.shape
        for dim, want in zip(shape.dim, t["shape"], strict=True):
            if isinstance(want, str):
                dim.Clear()
                dim.dim_param = want
            else:
                dim.Clear()
                dim.dim_value = int(want)
    onnx.checker.check_model(model)
    return model


def export_onnx(module: Any, kind: str, path: str | os.PathLike[str], metadata: dict[str, str],
                opset: int | None = None) -> Path:
    """Write ``kind`` (.onnx) with ``metadata``; not validated here (toolkit.validate_frontend does that)."""
    model = onnx_model(module, kind, opset)
    set_metadata(model, metadata)
    return save_onnx(model, path)


# ------------------------------------------------------------------------------------------------------- Core ML

_DESCRIPTIONS = {
    "audio_frontend": ("SyncTalk_2D audio front-end (16 kHz mono PCM -> normalised mel)",
                       "16 kHz mono float32 PCM in [-1, 1], one clip per row",
                       "normalised mel, frames x 80 in [-4, 4]"),
    "audio_features": ("SyncTalk_2D audio front-end + 'ave' encoder (16 kHz mono PCM -> per-video-frame features)",
                       "16 kHz mono float32 PCM in [-1, 1], at least 3000 samples",
                       "'ave' features, one 512-d row per 25 fps video frame"),
}


def export_coreml(module: Any, kind: str, path: str | os.PathLike[str], metadata: dict[str, str],
                  traced: Any = None) -> Path:
    """Write ``kind`` as an fp32 ML program (.mlpackage) with ``metadata``; flexible batch / sample count."""
    import numpy as np

    ct = coremltools()
    spec = io_spec(kind)
    program = traced if traced is not None else trace(module, kind)
    samples = ct.RangeDim(lower_bound=1 if kind == "audio_frontend" else MIN_SAMPLES, upper_bound=MAX_SAMPLES,
                          default=_EXAMPLE_SAMPLES, symbol="samples")
    shape = (ct.RangeDim(lower_bound=1, upper_bound=MAX_BATCH, default=1, symbol="batch"), samples) \
        if kind == "audio_frontend" else (samples,)
    in_name, out_name = spec["inputs"][0]["name"], spec["outputs"][0]["name"]
    try:
        with quiet("torch.onnx", "torch.jit", "coremltools", stdout=True):
            ml = ct.convert(program, inputs=[ct.TensorType(name=in_name, shape=shape, dtype=np.float32)],
                            outputs=[ct.TensorType(name=out_name, dtype=np.float32)], convert_to="mlprogram",
                            compute_precision=ct.precision.FLOAT32,
                            minimum_deployment_target=getattr(ct.target, MINIMUM_DEPLOYMENT_TARGET),
                            skip_model_load=True)
    except Exception as exc:  # coremltools raises bare exceptions of many kinds
        raise ExportError(f"{path}: Core ML conversion of {kind} failed ({first_line(exc, 200)})") from None
    got = ([i.name for i in ml.get_spec().description.input], [o.name for o in ml.get_spec().description.output])
    if got != ([in_name], [out_name]):
        raise ExportError(f"{path}: Core ML conversion named the tensors {got[0]} -> {got[1]}, not the contract's")
    for key in list(ml.user_defined_metadata):
        if key.startswith("com.github.apple.coremltools.conversion_date"):
            del ml.user_defined_metadata[key]
    for key in sorted(metadata):
        ml.user_defined_metadata[key] = metadata[key]
    ml.author = "framegen"
    ml.version = __version__
    ml.short_description, ml.input_description[in_name], ml.output_description[out_name] = _DESCRIPTIONS[kind]
    return save_package(ml, path)
