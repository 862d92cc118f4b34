"""``coreml``: the bundle's Core ML generator run by Core ML itself (``coremltools`` ``MLModel.predict``), macOS only.

``OpenRequest.options['compute_units']`` picks where Core ML may run it: ``all`` (default), ``cpu-only``,
``cpu-and-gpu`` or ``cpu-and-ne`` (CPU + Neural Engine). A model whose batch axis is flexible gets the whole batch in
one prediction; a fixed-batch-1 model gets Core ML's batch prediction (a list of single frames).

Written and unit-tested on Linux, where Core ML cannot run: the spec reading is tested, ``predict`` is not (nobody
has run this module on a Mac yet).
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import numpy as np
from framegen.models.contract import GEN_AUDIO, GEN_IMAGE, GEN_OUTPUT
from framegen.runtimes.artifacts import mode_from_audio_shape, resolve_artifact, settle_mode
from framegen.runtimes.base import Backend, BackendError, BackendInfo, TensorMeta
from framegen.runtimes.image_io_backend import CoreMLImageBackend
from framegen.runtimes.spec import Availability, BackendSpec, OpenRequest

#: ``--compute-units`` values -> ``coremltools.ComputeUnit`` member names
COMPUTE_UNITS = {"all": "ALL", "cpu-only": "CPU_ONLY", "cpu-and-gpu": "CPU_AND_GPU", "cpu-and-ne": "CPU_AND_NE"}
# ArrayFeatureType.ArrayDataType values (Core ML's FeatureTypes.proto).
_ARRAY_DTYPES = {65568: "float32", 65552: "float16", 65600: "float64", 131104: "int32"}


def coreml_io(spec: Any) -> tuple[list[TensorMeta], list[TensorMeta], tuple[int, int | None]]:
    """Inputs and outputs of a Core ML model spec, and the batch sizes its first input accepts as ``(low, high)``
    (``high`` None when unbounded); a flexible batch axis is reported as ``None`` in the shapes."""

    def one(feature: Any) -> tuple[TensorMeta, tuple[int, int | None]]:
        kind = feature.type.WhichOneof("Type")
        if kind != "multiArrayType":
            raise BackendError(f"Core ML feature {feature.name!r} is a {kind}, not a multi-array (tensor I/O only)")
        arr = feature.type.multiArrayType
        shape: list[int | None] = [int(d) for d in arr.shape]
        flex = arr.WhichOneof("ShapeFlexibility")
        batch: tuple[int, int | None] = (shape[0], shape[0]) if shape else (1, 1)
        if flex == "shapeRange" and arr.shapeRange.sizeRanges:
            first = arr.shapeRange.sizeRanges[0]
            high = None if first.upperBound < 0 else int(first.upperBound)
            batch = (int(first.lowerBound), high)
            shape = [int(r.lowerBound) if r.lowerBound == r.upperBound else None for r in arr.shapeRange.sizeRanges]
        elif flex == "enumeratedShapes" and arr.enumeratedShapes.shapes:
            firsts = sorted({int(s.shape[0]) for s in arr.enumeratedShapes.shapes})
            batch = (firsts[0], firsts[-1])
            if len(firsts) > 1:
                shape[0] = None
        if batch[0] != batch[1] and shape:
            shape[0] = None
        dtype = _ARRAY_DTYPES.get(arr.dataType, str(arr.dataType))
        return TensorMeta(feature.name, tuple(shape), dtype), batch

    inputs = [one(f) for f in spec.description.input]
    outputs = [one(f)[0] for f in spec.description.output]
    batch = inputs[0][1] if inputs else (1, 1)
    return [m for m, _ in inputs], outputs, batch


def _probe() -> Availability:
    if sys.platform != "darwin":
        return Availability(False, f"Core ML runs only on macOS (this is {platform.system() or sys.platform})")
    try:
        import coremltools
    except ImportError as exc:
        return Availability(False, f"coremltools not installed ({exc})")
    try:
        from coremltools import libcoremlpython  # noqa: F401 - the native half that predict() needs
    except ImportError as exc:
        return Availability(False, f"coremltools {coremltools.__version__} has no prediction library for this "
                                   f"Python ({exc})")
    return Availability(True, f"coremltools {coremltools.__version__}, macOS {platform.mac_ver()[0]}")


class CoreMLBackend(Backend):
    """A Core ML generator (.mlpackage) loaded with the requested compute units."""

    def __init__(self, req: OpenRequest) -> None:
        units = str(req.options.get("compute_units", "all"))
        if units not in COMPUTE_UNITS:
            raise BackendError(f"compute units {units!r}: expected one of {', '.join(COMPUTE_UNITS)}")
        art = resolve_artifact(req, "coreml", "coreml")
        import coremltools as ct
        try:
            self._model = ct.models.MLModel(os.fspath(art.path), compute_units=getattr(ct.ComputeUnit,
                                                                                       COMPUTE_UNITS[units]))
        except Exception as exc:
            msg = str(exc).strip().splitlines()
            raise BackendError(f"{art.path}: Core ML cannot load it ({msg[0] if msg else type(exc).__name__})") \
                from None
        inputs, outputs, self._batch = coreml_io(self._model.get_spec())
        by_name = {t.name: t for t in inputs}
        if set(by_name) != {GEN_IMAGE, GEN_AUDIO} or GEN_OUTPUT not in {t.name for t in outputs}:
            raise BackendError(f"{art.path}: inputs {sorted(by_name)} do not follow the contract "
                               f"({GEN_IMAGE}, {GEN_AUDIO} -> {GEN_OUTPUT})")
        mode = settle_mode(mode_from_audio_shape(by_name[GEN_AUDIO].shape), art.mode, req.mode, os.fspath(art.path))
        self._dtypes = {t.name: np.dtype(t.dtype) for t in inputs}
        spec_meta = dict(self._model.get_spec().description.metadata.userDefined)
        precision = art.precision or spec_meta.get("precision") or (
            "fp16" if self._dtypes[GEN_IMAGE] == np.float16 else str(req.precision))
        super().__init__(BackendInfo("coreml", f"coreml:{units}", precision, mode, art.source, inputs, outputs,
                                     {"compute_units": units, "coremltools": ct.__version__,
                                      "batch_range": list(self._batch)}))
        # One frame per prediction unless the model takes batches: the Neural Engine gains little from batching.
        self.default_batch = 1 if self._batch[1] == 1 else 4

    def _fits(self, n: int) -> bool:
        low, high = self._batch
        return low <= n and (high is None or n <= high)

    def _feed(self, image: np.ndarray, audio: np.ndarray) -> dict[str, np.ndarray]:
        return {GEN_IMAGE: image.astype(self._dtypes[GEN_IMAGE], copy=False),
                GEN_AUDIO: audio.astype(self._dtypes[GEN_AUDIO], copy=False)}

    def _infer(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        if self._model is None:
            raise BackendError("coreml: used after close()")
        n = image.shape[0]
        try:
            if self._fits(n):
                out = np.asarray(self._model.predict(self._feed(image, audio))[GEN_OUTPUT], dtype=np.float32)
            else:
                batch = [self._feed(image[i:i + 1], audio[i:i + 1]) for i in range(n)]
                out = np.concatenate([np.asarray(r[GEN_OUTPUT], dtype=np.float32)
                                      for r in self._model.predict(batch)])
        except Exception as exc:
            msg = str(exc).strip().splitlines()
            raise BackendError(f"coreml: prediction failed ({msg[0] if msg else type(exc).__name__})") from None
        if out.shape[0] != n:
            raise BackendError(f"coreml: model returned {out.shape[0]} frames for a batch of {n}")
        return out

    def close(self) -> None:
        """Drop the model."""
        self._model = None


def _open(req: OpenRequest) -> Backend:
    if req.io == "image":
        return CoreMLImageBackend(req)
    return CoreMLBackend(req)


SPECS = [
    BackendSpec("coreml", "coremltools", "apple", "coreml", ("fp32", "fp16"), _probe, _open,
                "Core ML on macOS (compute units: all, cpu-only, cpu-and-gpu, cpu-and-ne)", ios=("tensor", "image"),
                auto_rank=40),
]
