"""Export-time validation of the image-I/O generator variants (see :mod:`framegen.exporters.image_io`): their uint8
output against the reference float pipeline, run through the same backends that render with them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from framegen.exporters.errors import ExportError, ExportValidationError
from framegen.exporters.image_io import IO, image_metadata, manifest_io
from framegen.models.bundle import sha256_path
from framegen.models.contract import GEN_AUDIO, GEN_IMAGE, GEN_OUTPUT, INNER_SIZE, audio_shape
from framegen.models.errors import FramegenError
from framegen.models.imports import mlprogram_spec
from framegen.models.validation import Check, ValidationRecord
from framegen.runtimes.registry import open_backend
from framegen.runtimes.spec import OpenRequest
from framegen.toolkit.compare.tolerance import K
from framegen.toolkit.export.validate import (
    EMULATION,
    TOLERANCES,
    check_metadata,
    check_weights,
    coreml_convs,
    derived_limit,
    emulated_fp16,
    onnx_convs,
)

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
#: artifact bit for bit), so the limits are the tensor artifacts' tolerances (toolkit.validate) carried through
#: ``x * 255`` and the truncation. fp32: errors below one level can only flip a truncation boundary: one level,
#: measured on 0.03-0.05 % of the values (ONNX Runtime and coreml-mil alike). fp16: the tensor fp16 tolerance (max
#: 0.1, mean 0.01) in levels plus the level a truncation adds; measured max 6-14, mean 0.56-1.14 levels. The fp16
#: limits are floors: validation raises them to follow the checkpoint (:func:`image_limits_for`).
LIMITS: dict[str, ImageLimits] = {
    "fp32": ImageLimits(max_abs=1, max_share_diff=0.01),
    "fp16": ImageLimits(max_abs=27, mean_abs=3.6),
}
FIXED = "fixed (toolkit/export/validate_image.py LIMITS)"


def image_limits_for(model: Any, precision: str, crops: np.ndarray, audio: np.ndarray, expected: np.ndarray,
                     batches: tuple[int, ...], cache: dict[str, Any] | None = None
                     ) -> tuple[ImageLimits, dict[str, str], dict[str, Any] | None]:
    """The limits an image-I/O artifact of ``precision`` checked at ``batches`` on ``crops``/``audio`` is held to,
    where each came from, and the fp16 emulation's figures (``None`` for fp32).

    fp16 follows the checkpoint, by the rule of :func:`framegen.toolkit.export.validate.tolerance_for`: the reference
    pipeline (:func:`reference_uint8`) run with the fp16 emulation of ``model`` instead of the module on all the
    cases, its uint8 output compared with ``expected`` like the artifact's (worst over ``batches``), and
    ``max_abs`` / ``mean_abs`` set to ``max(fixed, K["fp16"] x its levels)``. ``cache``: a
    :attr:`Reference.emulations`, so that one export emulates once for all its image-I/O artifacts.
    """
    base = LIMITS[precision]
    sources = dict.fromkeys(base.as_dict(), FIXED)
    if precision != "fp16":
        return base, sources, None
    # All the cases, whatever the batches: every format's artifact then reuses the one emulation.
    got, seconds = emulated_fp16(model, (crops, audio), lambda emu: reference_uint8(emu, crops, audio), cache,
                                 tag="image-uint8")
    stats = [compare_uint8(expected[:b], got[:b]) for b in batches]
    mx, mean = max(st["max_abs"] for st in stats), max(st["mean_abs"] for st in stats)
    max_abs, sources["max_abs"] = derived_limit(base.max_abs, mx, " levels")
    mean_abs, sources["mean_abs"] = derived_limit(float(base.mean_abs or 0.0), mean, " levels")
    limits = ImageLimits(max_abs=int(max_abs), mean_abs=mean_abs, max_share_diff=base.max_share_diff)
    emu = {"method": EMULATION + ", then pred_to_uint8", "K": K["fp16"], "batches": list(batches), "max_abs": mx,
           "mean_abs": mean, "share_diff": max(st["share_diff"] for st in stats), "seconds": seconds}
    return limits, sources, emu


def reference_uint8(model: Any, reference: np.ndarray, audio: np.ndarray) -> np.ndarray:
    """The reference float pipeline on uint8 crops: ``model_input`` (/255, mask, concat), the PyTorch module in
    fp32, ``pred_to_uint8``. ``reference`` uint8 [B, 320, 320, 3] BGR -> uint8 [B, 320, 320, 3] BGR."""
    import torch
    from framegen.models.pixels import model_input, pred_to_uint8

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
    :func:`framegen.models.init.image_like_batch`) and non-trivial audio windows of ``mode``."""
    import torch
    from framegen.models.init import audio_like_batch, image_like_batch

    gen = torch.Generator().manual_seed(seed)
    planes = image_like_batch(batch, gen)[:, :3].numpy()  # exact k/255 values
    crops = np.rint(planes * 255.0).astype(np.uint8).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(crops), np.ascontiguousarray(audio_like_batch(mode, batch, gen).numpy())


def validation_cases(model: Any, batch: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(crops, audio, expected)``: :func:`validation_crops` and the reference pipeline's uint8 output on them."""
    crops, audio = validation_crops(model.mode, batch)
    return crops, audio, reference_uint8(model, crops, audio)


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
    try:
        spec = mlprogram_spec(path)
    except FramegenError as exc:
        raise _fail(name, str(exc).split(": ", 1)[1]) from None
    from coremltools.proto import FeatureTypes_pb2

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
    weights against the module's (``ref``: an :func:`toolkit.validate.reference` of the module, when given), and
    its numbers: real-looking uint8 crops through the artifact against the reference float pipeline
    (:func:`reference_uint8`) under :data:`LIMITS` (fp16: raised to follow the checkpoint, :func:`image_limits_for`).
    ONNX runs in a fresh ONNX Runtime CPU session at ``batches``
    (default 1 and 3); Core ML in the ``coreml-mil`` verifier (default batch 1: one image per call). ``label``
    names the artifact in errors (default: ``path``; the bundle writer passes the final path, not the temporary one).
    ``cases``: ``(crops, audio, expected)`` from :func:`validation_cases`, to share the reference run between
    artifacts.
    """
    p = Path(path)
    name = label or os.fspath(p)
    if precision not in LIMITS:
        raise ExportError(f"unknown precision {precision!r}; expected fp32 or fp16")
    result: dict[str, Any] = {"levels": "uint8 levels against pred_to_uint8 of the PyTorch fp32 module on "
                              "model_input(crop)"}
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
    limits, sources, emulation = image_limits_for(model, precision, crops, audio, want, batches,
                                                  ref.emulations if ref is not None else None)
    result.update({"limits": limits.as_dict(), "limit_sources": sources})
    if emulation is not None:
        result["fp16_emulation"] = emulation
    runs = []
    try:
        runner_name = "ort-cpu" if fmt == "onnx" else "coreml-mil"
        request = OpenRequest(artifact=p, precision=precision, io="image", mode=model.mode)
        with open_backend(runner_name, request) as runner:
            result["runtime"] = ("onnxruntime CPUExecutionProvider" if fmt == "onnx"
                                 else "coreml-mil verifier (op by op, program precision)")
            for b in batches:
                got = runner.infer(crops[:b], audio[:b])
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


def export_image_entries(exporter: Any, model: Any, mode: str, precisions: list[str], opset: int | None, ref: Any,
                         source_sha256: str, work: Path, dest: Path, say: Any = None, *, base: Any = None
                         ) -> list[dict[str, Any]]:
    """For ``toolkit.export.export_bundle``: build and validate the image-I/O generator variants of one format in
    every precision inside the bundle's work directory ``work`` (``dest``: the bundle's final path, for messages);
    returns their manifest entries. ``exporter``: the format's :class:`framegen.exporters.registry.FormatExporter`;
    ``base``: its trace of the module, already made for the tensor artifacts."""
    import time


    fmt = exporter.name
    ins, outs = manifest_io(fmt, mode)
    cases = validation_cases(model)
    entries = []
    image_base = exporter.trace_image(model, base, opset) if precisions else None
    for prec in precisions:
        name = f"generator.{prec}.{IO}{exporter.suffix}"
        path = work / name
        meta = image_metadata("generator", mode, prec, fmt, source_sha256)
        t0 = time.perf_counter()
        extra = exporter.build_image(model, prec, path, meta, image_base, opset)
        t1 = time.perf_counter()
        validation = validate_image_artifact(path, model, fmt, prec, meta, ref, label=f"{dest}/{name}",
                                             cases=cases)
        if say is not None:
            say(f"{name}: built in {t1 - t0:.1f} s, validated in {time.perf_counter() - t1:.1f} s (max "
                f"{validation['max_abs']} levels, limit {validation['limits']['max_abs']} "
                f"({validation['limit_sources']['max_abs']}), {100 * validation['share_diff']:.2g}% of values "
                f"differ from the reference pipeline; weights rel err {validation['weights_max_rel_err']:.2g})")
        size = path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        entries.append({"model": "generator", "format": fmt, "precision": prec, "io": IO, "path": name,
                        "sha256": sha256_path(path), "bytes": size, "inputs": ins, "outputs": outs, **extra,
                        "validation": image_record(validation, prec).as_dict()})
    return entries


def image_record(result: dict[str, Any], precision: str) -> ValidationRecord:
    """The manifest's record of an image-I/O artifact's validation (:func:`validate_image_artifact`'s result): its
    uint8 output against the reference pipeline in levels, and its weights against the checkpoint's."""
    limits, sources = result["limits"], result.get("limit_sources") or {}
    figure = {"max_abs": "max_abs", "mean_abs": "mean_abs", "max_share_diff": "share_diff"}
    checks = [Check(figure.get(k, k), result.get(figure.get(k, k)), float(v), "max", str(sources.get(k, "")))
              for k, v in limits.items()]
    if "weights_max_rel_err" in result:
        checks.append(Check("weights_max_rel", result["weights_max_rel_err"],
                            TOLERANCES[("generator", precision)].weight_rel, "max",
                            "fixed (toolkit/export/validate.py TOLERANCES)"))
    lifted = {"runtime", "limits", "limit_sources", "max_abs", "mean_abs", "share_diff", "weights_max_rel_err",
              "passed", "numeric", "max_abs_err", "mean_abs_err"}
    return ValidationRecord("image", bool(result.get("passed", True)), result.get("runtime"), tuple(checks),
                            {k: v for k, v in result.items() if k not in lifted})
