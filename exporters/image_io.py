"""Port-friendly image-I/O generator variants (``framegen export --io image``): uint8 BGR image in, uint8 BGR out.

Ports lose time and fidelity around the model (image <-> tensor conversion, /255, the mask rectangle, channel
order, the x255 truncation). These variants move that work into the graph, so that a caller hands over the 320x320
reference crop (``crop328[4:324, 4:324]``, the pixels SyncTalk_2D feeds) and receives the 320x320 prediction to
paste back, both as 8-bit BGR images:

- ONNX: ``image`` uint8 ``[batch, 320, 320, 3]`` (NHWC, BGR) and ``audio`` float32 as in the tensor contract ->
  ``output`` uint8 ``[batch, 320, 320, 3]`` (NHWC, BGR).
- Core ML: ``image`` an image (320x320, BGR colour layout, scale 1) and ``audio`` float32 ``[1, *mode shape]`` ->
  ``output`` an image (320x320, BGR): a Swift app passes a CVPixelBuffer and gets one back. Batch 1.

Inside, both compute the operations of the reference float pipeline (``toolkit.preprocess.model_input`` then
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

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exporters.errors import ExportError, ExportValidationError
from models.contract import GEN_AUDIO, GEN_IMAGE, GEN_OUTPUT, INNER_SIZE, MASK_COLS, MASK_ROWS, audio_shape

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
    from exporters.metadata import artifact_metadata

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
    from exporters.onnx_export import generator_onnx_model

    return wrap_onnx_generator(generator_onnx_model(model, precision, opset, exporter))


def export_generator_onnx_image(model: Any, path: str | os.PathLike[str], precision: str = "fp32",
                                opset: int | None = None, *, metadata: dict[str, str] | None = None,
                                exporter: str | None = None) -> Path:
    """Export the image-I/O ONNX variant of a generator module to ``path`` (written through a temporary sibling).

    ``metadata`` defaults to :func:`image_metadata` without a source sha256. Not validated here (see
    :func:`validate_image_artifact`).
    """
    from exporters.onnx_export import save_onnx, set_metadata

    proto = generator_onnx_image_model(model, precision, opset, exporter)
    set_metadata(proto, metadata if metadata is not None else image_metadata("generator", model.mode, precision,
                                                                             "onnx"))
    return save_onnx(proto, path)


# ---------------------------------------------------------------------------------------------------- Core ML

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


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide coremltools' and torch.export's progress bars and warnings during a conversion."""
    loggers = [logging.getLogger(n) for n in ("coremltools", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def coreml_image_model(model: Any, precision: str = "fp16") -> Any:
    """Convert the image-I/O variant to an in-memory ``coremltools.models.MLModel`` (ML program, not loaded)."""
    import torch

    from exporters.coreml_export import coremltools

    if precision not in ("fp32", "fp16"):
        raise ExportError(f"unknown precision {precision!r}; expected fp32 or fp16")
    ct = coremltools()
    wrapper = _coreml_wrapper(model)
    example = (torch.zeros(1, 3, INNER_SIZE, INNER_SIZE), torch.zeros(1, *audio_shape(model.mode)))
    # Keep the /255 a division: coremltools' default pipeline would turn it into a multiply by 1/255, which is
    # not what the reference computes (see the module docstring).
    pipeline = ct.PassPipeline.DEFAULT
    pipeline.remove_passes(["common::divide_to_multiply"])
    with _quiet(), torch.no_grad():
        program = torch.export.export(wrapper, example).run_decompositions({})
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
                                  metadata: dict[str, str] | None = None) -> Path:
    """Export the Core ML image-I/O variant (.mlpackage) of a generator module to ``path`` (temporary sibling,
    then renamed). ``metadata`` defaults to :func:`image_metadata` without a source sha256."""
    from exporters.coreml_export import save_package
    from toolkit import __version__

    ml = coreml_image_model(model, precision)
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


# ------------------------------------------------------------------------------------------------- validation

@dataclass(frozen=True)
class ImageLimits:
    """How far an image-I/O variant's uint8 output may be from the reference pipeline's, in levels: ``max_abs``
    anywhere, ``mean_abs`` on average, ``max_share_diff`` the share of values that differ at all (``None``:
    unchecked)."""

    max_abs: int
    mean_abs: float | None = None
    max_share_diff: float | None = None

    def check(self, stats: dict[str, Any]) -> list[str]:
        """Each broken limit as one line."""
        bad = []
        if stats["max_abs"] > self.max_abs:
            bad.append(f"max |Δ| {stats['max_abs']} levels > {self.max_abs}")
        if self.mean_abs is not None and stats["mean_abs"] > self.mean_abs:
            bad.append(f"mean |Δ| {stats['mean_abs']:.3g} levels > {self.mean_abs:g}")
        if self.max_share_diff is not None and stats["share_diff"] > self.max_share_diff:
            bad.append(f"{100 * stats['share_diff']:.3g}% of values differ > {100 * self.max_share_diff:.3g}%")
        return bad

    def as_dict(self) -> dict[str, float]:
        """The limits that are set, JSON-able."""
        return {k: v for k, v in (("max_abs", self.max_abs), ("mean_abs", self.mean_abs),
                                  ("max_share_diff", self.max_share_diff)) if v is not None}


#: Export-validation limits by precision, in levels (measured on the calibrated seeded 'ave' generator; figures in
#: docs/PORTS.md). The graph adds no error of its own (the ONNX variant equals ``pred_to_uint8`` of the tensor
#: artifact bit for bit), so the limits are the tensor artifacts' tolerances (exporters.validate) carried through
#: ``x * 255`` and the truncation. fp32: errors below one level can only flip a truncation boundary: one level,
#: measured on 0.03-0.05 % of the values (ONNX Runtime and coreml-mil alike). fp16: the tensor fp16 tolerance (max
#: 0.1, mean 0.01) in levels plus the level a truncation adds; measured max 6-14, mean 0.56-1.14 levels.
LIMITS: dict[str, ImageLimits] = {
    "fp32": ImageLimits(max_abs=1, max_share_diff=0.01),
    "fp16": ImageLimits(max_abs=27, mean_abs=3.6),
}


def reference_uint8(model: Any, reference: np.ndarray, audio: np.ndarray) -> np.ndarray:
    """The reference float pipeline on uint8 crops: ``model_input`` (/255, mask, concat), the PyTorch module in
    fp32, ``pred_to_uint8``. ``reference`` uint8 [B, 320, 320, 3] BGR -> uint8 [B, 320, 320, 3] BGR."""
    import torch

    from toolkit.preprocess import model_input, pred_to_uint8

    crops = np.zeros((reference.shape[0], INNER_SIZE + 8, INNER_SIZE + 8, 3), dtype=np.uint8)
    crops[:, 4:-4, 4:-4] = reference
    image = np.stack([model_input(c) for c in crops])
    with torch.inference_mode():
        pred = model.eval()(torch.from_numpy(image), torch.from_numpy(np.ascontiguousarray(audio, np.float32)))
    return np.stack([pred_to_uint8(p) for p in pred.numpy()])


def compare_uint8(reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    """``{max_abs, mean_abs, share_diff, share_diff_gt1, values}`` of two uint8 arrays of one shape (levels)."""
    if reference.shape != candidate.shape:
        raise ValueError(f"shape mismatch: reference {reference.shape}, candidate {candidate.shape}")
    d = np.abs(reference.astype(np.int16) - candidate.astype(np.int16))
    return {"max_abs": int(d.max()), "mean_abs": float(d.mean()), "share_diff": float(np.count_nonzero(d) / d.size),
            "share_diff_gt1": float(np.count_nonzero(d > 1) / d.size), "values": int(d.size)}


def validation_crops(mode: str, batch: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Real-looking inputs for validation: uint8 BGR 320x320 crops (smooth colour fields with edges and noise,
    :func:`models.init.image_like_batch`) and non-trivial audio windows of ``mode``."""
    import torch

    from models.init import audio_like_batch, image_like_batch

    gen = torch.Generator().manual_seed(seed)
    planes = image_like_batch(batch, gen)[:, :3].numpy()  # exact k/255 values
    crops = np.rint(planes * 255.0).astype(np.uint8).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(crops), np.ascontiguousarray(audio_like_batch(mode, batch, gen).numpy())


def validation_cases(model: Any, batch: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(crops, audio, expected)``: :func:`validation_crops` and the reference pipeline's uint8 output on them."""
    crops, audio = validation_crops(model.mode, batch)
    return crops, audio, reference_uint8(model, crops, audio)


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


def build_image_artifact(fmt: str, model: Any, precision: str, path: str | os.PathLike[str],
                         metadata: dict[str, str], *, base: Any = None, opset: int | None = None) -> dict[str, Any]:
    """Write one image-I/O artifact (``fmt`` onnx / coreml) for ``export_bundle``; returns the manifest entry's
    format-specific fields. ``base``: the fp32 tensor ONNX graph already exported (saves a trace)."""
    if fmt == "onnx":
        from exporters.onnx_export import DEFAULT_OPSET, EXPORT_CHOICE, save_onnx, set_metadata, to_float16

        if base is None:
            proto = generator_onnx_image_model(model, precision, opset)
        else:
            proto = wrap_onnx_generator(to_float16(base) if precision == "fp16" else base)
        set_metadata(proto, metadata)
        save_onnx(proto, path)
        return {"opset": opset or DEFAULT_OPSET, "exporter": EXPORT_CHOICE["exporter"],
                METADATA_KEY: image_semantics("onnx")}
    if fmt == "coreml":
        export_generator_coreml_image(model, path, precision, metadata=metadata)
        return {"minimum_deployment_target": COREML_MINIMUM_DEPLOYMENT_TARGET, "compute_precision": precision,
                "batch_range": [1, 1], METADATA_KEY: image_semantics("coreml")}
    raise ExportError(f"unknown format {fmt!r}; expected onnx or coreml")


def _fail(path: Any, message: str) -> ExportValidationError:
    return ExportValidationError(f"{path}: validation failed: {message}")


def _check_onnx_structure(path: Path, mode: str, name: str) -> tuple[Any, dict[str, str]]:
    """The ONNX model and its metadata, after checking the image-I/O names, dtypes and shapes."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(os.fspath(path))

    def sig(v: Any) -> tuple[str, int, list[Any]]:
        t = v.type.tensor_type
        return v.name, t.elem_type, [d.dim_param or d.dim_value for d in t.shape.dim]

    side = INNER_SIZE
    got = ([sig(v) for v in model.graph.input], [sig(v) for v in model.graph.output])
    want = ([(GEN_IMAGE, TensorProto.UINT8, ["batch", side, side, 3]),
             (GEN_AUDIO, TensorProto.FLOAT, ["batch", *audio_shape(mode)])],
            [(GEN_OUTPUT, TensorProto.UINT8, ["batch", side, side, 3])])
    if got != want:
        raise _fail(name, f"inputs/outputs (name, ONNX dtype, shape) {got}, expected {want}")
    return model, {e.key: e.value for e in model.metadata_props}


def _check_coreml_structure(path: Path, mode: str, name: str) -> dict[str, str]:
    """The package's metadata, after checking its image input / output (320x320 BGR), audio input and ML program
    specification version (image outputs need iOS 16)."""
    from exporters.coreml_export import coremltools

    coremltools()
    from coremltools.models.utils import load_spec
    from coremltools.proto import FeatureTypes_pb2

    try:
        spec = load_spec(os.fspath(path))
    except Exception as exc:
        raise _fail(name, f"not a readable .mlpackage ({str(exc).splitlines()[0][:200]})") from None
    if spec.WhichOneof("Type") != "mlProgram":
        raise _fail(name, f"holds a {spec.WhichOneof('Type')}, expected an ML program")
    if spec.specificationVersion < 7:
        raise _fail(name, f"specification version {spec.specificationVersion}: image outputs need 7 (iOS 16)")
    space = FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name

    def describe(f: Any) -> tuple[Any, ...]:
        kind = f.type.WhichOneof("Type")
        if kind == "imageType":
            it = f.type.imageType
            return f.name, "image", it.width, it.height, space(it.colorSpace)
        if kind == "multiArrayType":
            return f.name, "array", list(f.type.multiArrayType.shape), f.type.multiArrayType.dataType
        return f.name, kind

    fp32 = FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    got = ([describe(f) for f in spec.description.input], [describe(f) for f in spec.description.output])
    want = ([(GEN_IMAGE, "image", INNER_SIZE, INNER_SIZE, "BGR"), (GEN_AUDIO, "array", [1, *audio_shape(mode)], fp32)],
            [(GEN_OUTPUT, "image", INNER_SIZE, INNER_SIZE, "BGR")])
    if got != want:
        raise _fail(name, f"inputs/outputs {got}, expected {want}")
    return dict(spec.description.metadata.userDefined)


def validate_image_artifact(path: str | os.PathLike[str], model: Any, fmt: str, precision: str,
                            metadata: dict[str, str] | None = None, ref: Any = None,
                            batches: tuple[int, ...] | None = None, label: str | None = None,
                            cases: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Validate an image-I/O artifact; raise :class:`ExportValidationError` naming it, else return the record for the
    manifest entry's ``validation``.

    Checks its names, dtypes and shapes (image layouts for Core ML), its ``metadata`` when given, its convolution
    weights against the module's (``ref``: an :func:`exporters.validate.reference` of the module, when given), and
    its numbers: real-looking uint8 crops through the artifact against the reference float pipeline
    (:func:`reference_uint8`) under :data:`LIMITS`. ONNX runs in a fresh ONNX Runtime CPU session at ``batches``
    (default 1 and 3); Core ML in the ``coreml-mil`` verifier (default batch 1: one image per call). ``label``
    names the artifact in errors (default: ``path``; the bundle writer passes the final path, not the temporary one).
    ``cases``: ``(crops, audio, expected)`` from :func:`validation_cases`, to share the reference run between
    artifacts.
    """
    from exporters.validate import TOLERANCES, check_metadata, check_weights, coreml_convs, onnx_convs
    from models.errors import FramegenError
    from runtimes.image_io_backend import open_image_model

    p = Path(path)
    name = label or os.fspath(p)
    if precision not in LIMITS:
        raise ExportError(f"unknown precision {precision!r}; expected fp32 or fp16")
    limits = LIMITS[precision]
    result: dict[str, Any] = {"limits": limits.as_dict(), "levels": "uint8 levels against pred_to_uint8 of the "
                              "PyTorch fp32 module on model_input(crop)"}
    if fmt == "onnx":
        onnx_model, meta = _check_onnx_structure(p, model.mode, name)
        convs = onnx_convs(onnx_model)
        del onnx_model
        batches = batches or (1, 3)
    elif fmt == "coreml":
        meta = _check_coreml_structure(p, model.mode, name)
        convs = coreml_convs(p)
        batches = batches or (1,)
    else:
        raise ExportError(f"unknown format {fmt!r}; expected onnx or coreml")
    if metadata is not None:
        check_metadata(Path(name), meta, metadata)
    if ref is not None:
        result.update(check_weights(Path(name), convs, ref, TOLERANCES[("generator", precision)]))
    crops, audio, want = cases if cases is not None else validation_cases(model, max(batches))
    if crops.shape[0] < max(batches):
        raise ValueError(f"{crops.shape[0]} validation cases for batch {max(batches)}")
    runs = []
    try:
        with open_image_model(p, fmt) as runner:
            result["runtime"] = ("onnxruntime CPUExecutionProvider" if fmt == "onnx"
                                 else "coreml-mil verifier (op by op, program precision)")
            for b in batches:
                got = runner.infer_uint8(crops[:b], audio[:b])
                stats = compare_uint8(want[:b], got)
                bad = limits.check(stats)
                if bad:
                    raise _fail(name, f"batch {b}: uint8 output departs from the reference pipeline: {'; '.join(bad)}")
                runs.append({"batch": b, **{k: v for k, v in stats.items() if k != "values"}})
    except ExportValidationError:
        raise
    except FramegenError as exc:
        raise _fail(name, str(exc)) from None
    result["runs"] = runs
    result.update({k: max(r[k] for r in runs) for k in ("max_abs", "mean_abs", "share_diff")})
    # The same figures in the tensor artifacts' units (fractions of 1) and places, for the export summary.
    errs = {"max_abs_err": result["max_abs"] / 255.0, "mean_abs_err": result["mean_abs"] / 255.0}
    if fmt == "onnx":
        result.update(errs)
    else:
        result["numeric"] = {"runtime": result["runtime"], "batches": list(batches), **errs}
    result["passed"] = True
    return result


def export_image_entries(fmt: str, model: Any, mode: str, precisions: list[str], opset: int | None, ref: Any,
                         source_sha256: str, work: Path, dest: Path, say: Any = None, *, base: Any = None
                         ) -> list[dict[str, Any]]:
    """For ``exporters.export.export_bundle``: build and validate the image-I/O generator variants of one format in
    every precision inside the bundle's work directory ``work`` (``dest``: the bundle's final path, for messages);
    returns their manifest entries. ``base``: the fp32 tensor ONNX graph already exported."""
    import time

    from exporters.bundle import sha256_path

    ins, outs = manifest_io(fmt, mode)
    cases = validation_cases(model)
    entries = []
    for prec in precisions:
        name = f"generator.{prec}.{IO}{'.onnx' if fmt == 'onnx' else '.mlpackage'}"
        path = work / name
        meta = image_metadata("generator", mode, prec, fmt, source_sha256)
        t0 = time.perf_counter()
        extra = build_image_artifact(fmt, model, prec, path, meta, base=base, opset=opset)
        t1 = time.perf_counter()
        validation = validate_image_artifact(path, model, fmt, prec, meta, ref, label=f"{dest}/{name}",
                                             cases=cases)
        if say is not None:
            say(f"{name}: built in {t1 - t0:.1f} s, validated in {time.perf_counter() - t1:.1f} s (max "
                f"{validation['max_abs']} levels, {100 * validation['share_diff']:.2g}% of values differ from the "
                f"reference pipeline; weights rel err {validation['weights_max_rel_err']:.2g})")
        size = path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        entries.append({"model": "generator", "format": fmt, "precision": prec, "io": IO, "path": name,
                        "sha256": sha256_path(path), "bytes": size, "inputs": ins, "outputs": outs, **extra,
                        "validation": validation})
    return entries
