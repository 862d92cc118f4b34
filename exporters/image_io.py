"""Port-friendly image-I/O generator variants (``framegen export --io image``): uint8 BGR image in, uint8 BGR out.

Ports lose time and fidelity around the model (image <-> tensor conversion, /255, the mask rectangle, channel
order, the x255 truncation). These variants move that work into the graph, so that a caller hands over the 320x320
reference crop (``crop328[4:324, 4:324]``, the pixels SyncTalk_2D feeds) and receives the 320x320 prediction to
paste back, both as 8-bit BGR images:

- ONNX: ``image`` uint8 ``[batch, 320, 320, 3]`` (NHWC, BGR) and ``audio`` float32 as in the tensor contract ->
  ``output`` uint8 ``[batch, 320, 320, 3]`` (NHWC, BGR).
- Core ML: ``image`` an image (320x320, BGR colour layout, scale 1) and ``audio`` float32 ``[1, *mode shape]`` ->
  ``output`` an image (320x320, BGR): a Swift app passes a CVPixelBuffer and gets one back. Batch 1.

Inside, both compute the operations of the reference float pipeline
(``framegen.toolkit.inputs.preprocess.model_input`` then
``pred_to_uint8``), in the artifact's precision: ``float32(pixel) / 255`` (a true division: a multiply by 1/255
differs in the last bit for 126 of the 256 levels), the reference and its copy with rows 5..309 / columns 5..314 set
to 0, concatenated as 6 planes, the generator, then ``floor(clip(output * 255, 0, 255))``. The floor makes the
values exact integers before the cast to uint8 (ONNX leaves the Cast of a fractional or out-of-range float to the
runtime) and before Core ML turns the float output into pixels (so its rounding, whatever it is, changes nothing). A
NaN output (only from a broken model) has no defined pixel here, where ``pred_to_uint8`` makes it 0.

Only the generator's float error can make the output differ from the reference: near a truncation boundary a tiny
error flips a value by one level. :data:`LIMITS` holds the measured bounds export validation enforces.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from framegen.exporters.coreml_export import save_package
from framegen.exporters.errors import ExportError
from framegen.exporters.onnx_export import (
    DEFAULT_OPSET,
    EXPORT_CHOICE,
    generator_onnx_model,
    save_onnx,
    set_metadata,
    to_float16,
)
from framegen.models.contract import GEN_AUDIO, GEN_IMAGE, GEN_OUTPUT, INNER_SIZE, MASK_COLS, MASK_ROWS, audio_shape
from framegen.models.imports import coremltools, quiet
from framegen.models.metadata import artifact_metadata
from framegen.models.version import __version__

IO = "image"
# Core ML image outputs of ML programs need iOS 16 / macOS 13 (coremltools refuses them for older targets).
COREML_MINIMUM_DEPLOYMENT_TARGET = "iOS16"
METADATA_KEY = "image_io"
_MIN_ONNX_OPSET = 11  # Clip with tensor bounds


def image_semantics(fmt: str) -> dict[str, Any]:
    """What an image-I/O artifact of format ``fmt`` (``onnx`` / ``coreml``) takes and returns (embedded in its
    metadata under ``image_io`` and in the manifest entry), next to the tensor contract the graph wraps."""
    if fmt not in ("onnx", "coreml"):
        raise ValueError(f"unknown format {fmt!r}")
    side = INNER_SIZE
    if fmt == "onnx":
        image_in = {"dtype": "uint8", "shape": ["batch", side, side, 3], "layout": "NHWC", "channels": "BGR"}
        out = {"dtype": "uint8", "shape": ["batch", side, side, 3], "layout": "NHWC", "channels": "BGR"}
    else:
        image_in = {"type": "image", "width": side, "height": side, "color_layout": "BGR", "scale": 1.0,
                    "bias": 0.0, "batch": 1}
        out = {"type": "image", "width": side, "height": side, "color_layout": "BGR", "batch": 1,
               "values": "exact integers 0..255 (the program floors them), so Core ML's float-to-pixel "
                         "conversion is exact",
               "minimum_deployment_target": COREML_MINIMUM_DEPLOYMENT_TARGET}
    return {
        "inputs": {
            GEN_IMAGE: {**image_in, "meaning": "the 320x320 reference crop crop328[4:324, 4:324] as decoded "
                                               "(8-bit BGR), no scaling or masking by the caller"},
            GEN_AUDIO: {"dtype": "float32", "meaning": "as in the tensor contract: the 16-frame feature window "
                                                       "reshaped to the mode's shape"},
        },
        "outputs": {GEN_OUTPUT: {**out, "meaning": "the 320x320 prediction to write into crop328[4:324, 4:324] "
                                                   "before the paste-back resize"}},
        "inside": [
            "x = float32(image) / 255 (IEEE division, as numpy's float32 array / 255.0)",
            f"masked = x with rows {MASK_ROWS.start}..{MASK_ROWS.stop - 1} and columns "
            f"{MASK_COLS.start}..{MASK_COLS.stop - 1} set to 0",
            "generator input = concat(x, masked) as 6 planes (B, G, R, B, G, R)",
            "output = floor(clip(generator_output * 255, 0, 255)) as uint8 (truncation, like "
            "np.array(pred * 255, dtype=np.uint8))",
        ],
        "equals": "toolkit.preprocess.pred_to_uint8(generator(model_input(crop))) up to the generator's own float "
                  "error, which can move a value across a truncation boundary (one level)",
    }


def image_metadata(model_kind: str, mode: str, precision: str, fmt: str,
                   source_sha256: str | None = None) -> dict[str, str]:
    """The artifact metadata of an image-I/O variant: the tensor artifacts' map (contract, mode, precision, source
    sha256) with ``io = image`` and the image semantics under ``image_io``."""
    return artifact_metadata(model_kind, mode, precision, source_sha256, io=IO,
                             extra={METADATA_KEY: image_semantics(fmt)})


def mask_keep(dtype: Any = np.float32) -> np.ndarray:
    """``[1, 1, 320, 320]``: 0 inside the mask rectangle, 1 elsewhere (``reference * keep`` is the masked copy)."""
    keep = np.ones((1, 1, INNER_SIZE, INNER_SIZE), dtype=dtype)
    keep[..., MASK_ROWS, MASK_COLS] = 0
    return keep


# ------------------------------------------------------------------------------------------------------- ONNX

def wrap_onnx_generator(proto: Any) -> Any:
    """The image-I/O ONNX graph around a tensor-I/O generator graph (float32 ``image``/``audio`` -> ``output``,
    any precision inside): uint8 NHWC BGR ``image`` -> ... -> uint8 NHWC BGR ``output``, same dynamic batch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(proto)
    g = m.graph
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < _MIN_ONNX_OPSET:
        raise ExportError(f"image-I/O ONNX variants need opset {_MIN_ONNX_OPSET} or later, not {opset}")
    names = [i.name for i in g.input]
    outs = [o.name for o in g.output]
    floats = {v.name: v.type.tensor_type.elem_type == TensorProto.FLOAT for v in (*g.input, *g.output)}
    if GEN_IMAGE not in names or GEN_AUDIO not in names or outs != [GEN_OUTPUT] or not all(floats.values()):
        raise ExportError(f"not a tensor-I/O generator graph (inputs {names}, outputs {outs}, all float32: "
                          f"{all(floats.values())})")
    inner_in, inner_out = "model_image", "model_output"
    for n in g.node:
        n.input[:] = [inner_in if x == GEN_IMAGE else inner_out if x == GEN_OUTPUT else x for x in n.input]
        n.output[:] = [inner_out if x == GEN_OUTPUT else x for x in n.output]

    def const(name: str, arr: np.ndarray) -> Any:
        return numpy_helper.from_array(arr, name)

    g.initializer.extend([
        const("image_io_255", np.array(255.0, dtype=np.float32)),
        const("image_io_0", np.array(0.0, dtype=np.float32)),
        const("image_io_mask", mask_keep(np.float32) == 0),  # bool: True inside the rectangle
    ])
    head = [
        helper.make_node("Cast", [GEN_IMAGE], ["image_f32"], name="image_io_cast_in", to=TensorProto.FLOAT),
        helper.make_node("Div", ["image_f32", "image_io_255"], ["image_01"], name="image_io_div255"),
        helper.make_node("Transpose", ["image_01"], ["reference"], name="image_io_nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Where", ["image_io_mask", "image_io_0", "reference"], ["masked"], name="image_io_mask"),
        helper.make_node("Concat", ["reference", "masked"], [inner_in], name="image_io_concat", axis=1),
    ]
    tail = [
        helper.make_node("Mul", [inner_out, "image_io_255"], ["scaled"], name="image_io_mul255"),
        helper.make_node("Clip", ["scaled", "image_io_0", "image_io_255"], ["clipped"], name="image_io_clip"),
        helper.make_node("Floor", ["clipped"], ["floored"], name="image_io_floor"),
        helper.make_node("Cast", ["floored"], ["pred_u8"], name="image_io_cast_out", to=TensorProto.UINT8),
        helper.make_node("Transpose", ["pred_u8"], [GEN_OUTPUT], name="image_io_nhwc", perm=[0, 2, 3, 1]),
    ]
    nodes = [*head, *g.node, *tail]
    del g.node[:]
    g.node.extend(nodes)
    batch = g.input[names.index(GEN_IMAGE)].type.tensor_type.shape.dim[0].dim_param or "batch"
    new_image = helper.make_tensor_value_info(GEN_IMAGE, TensorProto.UINT8, [batch, INNER_SIZE, INNER_SIZE, 3])
    g.input[names.index(GEN_IMAGE)].CopyFrom(new_image)
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(GEN_OUTPUT, TensorProto.UINT8,
                                                  [batch, INNER_SIZE, INNER_SIZE, 3]))
    del g.value_info[:]
    onnx.checker.check_model(m, full_check=True)
    return m


def generator_onnx_image_model(model: Any, precision: str = "fp32", opset: int | None = None,
                               exporter: str | None = None) -> Any:
    """The image-I/O generator as an in-memory ``onnx.ModelProto`` (the exporter's tensor graph, wrapped)."""
    return wrap_onnx_generator(generator_onnx_model(model, precision, opset, exporter))


def _coreml_wrapper(model: Any) -> Any:
    """The generator with the image pre- and post-processing around it, for Core ML conversion: ``image`` float
    [1, 3, 320, 320] holding pixel values 0..255 (what an image input with scale 1 gives the program)."""
    import torch

    class ImageIOGenerator(torch.nn.Module):
        def __init__(self, generator: Any) -> None:
            super().__init__()
            self.generator = generator
            self.register_buffer("keep", torch.from_numpy(mask_keep(np.float32)))

        def forward(self, image: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
            ref = image / 255.0
            x = torch.cat([ref, ref * self.keep], dim=1)  # x * 1 and x * 0 are exact: the masked copy
            return torch.floor(torch.clamp(self.generator(x, audio) * 255.0, 0.0, 255.0))

    return ImageIOGenerator(model).eval()


def coreml_image_program(model: Any) -> Any:
    """The ``torch.export`` program (decompositions run) of the generator's Core ML image-I/O wrapper: the input of
    :func:`coreml_image_model`, shared by both precisions, since exporting is the slow part."""
    import torch

    example = (torch.zeros(1, 3, INNER_SIZE, INNER_SIZE), torch.zeros(1, *audio_shape(model.mode)))
    with quiet("coremltools", "torch.export", "torch._dynamo"), torch.no_grad():
        return torch.export.export(_coreml_wrapper(model), example).run_decompositions({})


def coreml_image_model(model: Any, precision: str = "fp16", program: Any = None) -> Any:
    """Convert the image-I/O variant to an in-memory ``coremltools.models.MLModel`` (ML program, not loaded), from
    ``program`` (:func:`coreml_image_program` of ``model``) or a fresh export."""
    import torch

    if precision not in ("fp32", "fp16"):
        raise ExportError(f"unknown precision {precision!r}; expected fp32 or fp16")
    ct = coremltools()
    if program is None:
        program = coreml_image_program(model)
    # Keep the /255 a division: coremltools' default pipeline would turn it into a multiply by 1/255, which is
    # not what the reference computes (see the module docstring).
    pipeline = ct.PassPipeline.DEFAULT
    pipeline.remove_passes(["common::divide_to_multiply"])
    with quiet("coremltools", "torch.export", "torch._dynamo"), torch.no_grad():
        ml = ct.convert(
            program,
            inputs=[ct.ImageType(name=GEN_IMAGE, shape=(1, 3, INNER_SIZE, INNER_SIZE),
                                 color_layout=ct.colorlayout.BGR, scale=1.0),
                    ct.TensorType(name=GEN_AUDIO, shape=(1, *audio_shape(model.mode)), dtype=np.float32)],
            outputs=[ct.ImageType(name=GEN_OUTPUT, color_layout=ct.colorlayout.BGR)],
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
            minimum_deployment_target=getattr(ct.target, COREML_MINIMUM_DEPLOYMENT_TARGET),
            pass_pipeline=pipeline,
            skip_model_load=True,
        )
    spec = ml.get_spec()
    got = ([(i.name, i.type.WhichOneof("Type")) for i in spec.description.input],
           [(o.name, o.type.WhichOneof("Type")) for o in spec.description.output])
    want = ([(GEN_IMAGE, "imageType"), (GEN_AUDIO, "multiArrayType")], [(GEN_OUTPUT, "imageType")])
    if got != want:
        raise ExportError(f"Core ML image-I/O conversion gave inputs/outputs {got}, expected {want}")
    return ml


def export_generator_coreml_image(model: Any, path: str | os.PathLike[str], precision: str = "fp16", *,
                                  metadata: dict[str, str] | None = None, program: Any = None) -> Path:
    """Export the Core ML image-I/O variant (.mlpackage) of a generator module to ``path`` (temporary sibling,
    then renamed). ``metadata`` defaults to :func:`image_metadata` without a source sha256; ``program``: its
    :func:`coreml_image_program`, when already made."""
    ml = coreml_image_model(model, precision, program)
    meta = metadata if metadata is not None else image_metadata("generator", model.mode, precision, "coreml")
    ml.user_defined_metadata.pop("com.github.apple.coremltools.conversion_date", None)
    for key in sorted(meta):
        ml.user_defined_metadata[key] = meta[key]
    ml.author = "framegen"
    ml.version = __version__
    ml.short_description = ("SyncTalk_2D generator, image I/O: 320x320 BGR reference crop + audio window -> "
                            "320x320 BGR prediction")
    ml.input_description[GEN_IMAGE] = "320x320 reference crop (crop328[4:324, 4:324]), BGR; no scaling or masking"
    ml.input_description[GEN_AUDIO] = "16-frame feature window reshaped to the mode's shape, float32"
    ml.output_description[GEN_OUTPUT] = "320x320 predicted crop, BGR (truncated like np.uint8(pred * 255))"
    return save_package(ml, path)


def manifest_io(fmt: str, mode: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The manifest entry's ``inputs`` and ``outputs`` of an image-I/O artifact."""
    side = INNER_SIZE
    if fmt == "onnx":
        image = {"name": GEN_IMAGE, "shape": ["batch", side, side, 3], "dtype": "uint8", "layout": "NHWC BGR"}
        audio = {"name": GEN_AUDIO, "shape": ["batch", *audio_shape(mode)], "dtype": "float32"}
        out = {"name": GEN_OUTPUT, "shape": ["batch", side, side, 3], "dtype": "uint8", "layout": "NHWC BGR"}
    else:
        image = {"name": GEN_IMAGE, "type": "image", "width": side, "height": side, "color_layout": "BGR"}
        audio = {"name": GEN_AUDIO, "shape": [1, *audio_shape(mode)], "dtype": "float32"}
        out = {"name": GEN_OUTPUT, "type": "image", "width": side, "height": side, "color_layout": "BGR"}
    return [image, audio], [out]


def build_onnx_image_artifact(model: Any, precision: str, path: str | os.PathLike[str], metadata: dict[str, str],
                              *, base: Any = None, opset: int | None = None) -> dict[str, Any]:
    """Write the ONNX image-I/O variant; returns the manifest entry's format-specific fields. ``base``: the fp32
    tensor ONNX graph already exported (saves a trace)."""
    if base is None:
        proto = generator_onnx_image_model(model, precision, opset)
    else:
        proto = wrap_onnx_generator(to_float16(base) if precision == "fp16" else base)
    set_metadata(proto, metadata)
    save_onnx(proto, path)
    return {"opset": opset or DEFAULT_OPSET, "exporter": EXPORT_CHOICE["exporter"],
            METADATA_KEY: image_semantics("onnx")}


def build_coreml_image_artifact(model: Any, precision: str, path: str | os.PathLike[str],
                                metadata: dict[str, str], *, program: Any = None) -> dict[str, Any]:
    """Write the Core ML image-I/O variant (batch 1); returns the manifest entry's format-specific fields.
    ``program``: :func:`coreml_image_program` of ``model``, when already made (saves an export)."""
    export_generator_coreml_image(model, path, precision, metadata=metadata, program=program)
    return {"minimum_deployment_target": COREML_MINIMUM_DEPLOYMENT_TARGET, "compute_precision": precision,
            "batch_range": [1, 1], METADATA_KEY: image_semantics("coreml")}
