"""Image-I/O generator artifacts (``io: image`` in a bundle) as ordinary :class:`~framegen.runtimes.base.Backend`s:
uint8 BGR crops in, uint8 BGR predictions out::

    with open_backend("ort-cpu", OpenRequest(bundle=b, precision="fp32", io="image")) as be:
        pred_u8 = be.infer(reference_u8, audio)   # [B, 320, 320, 3] uint8 BGR, [B, *mode] float32

``reference_u8`` is ``crop328[4:324, 4:324]`` of each frame; ``pred_u8`` goes into ``crop328[4:324, 4:324]`` before
the paste-back. The registry opens them through the same specs as the tensor models (``ort-cpu``, ``ort-cuda``,
``coreml-mil``, ``coreml`` declare ``ios=("tensor", "image")``); their ``info.inputs`` carry the uint8 dtype read
from the artifact, so :meth:`Backend.check_inputs` checks them like any other.

Core ML hands an image-typed input to the program as float planes in the input's colour layout, and turns the
program's float output planes back into pixels. The verifier does the same here: BGR HWC uint8 -> float32
[1, 3, 320, 320] in the declared layout's channel order, and back, refusing an output value that is not an integer
in 0..255 (the program floors and clips, so Core ML's own float-to-pixel conversion has nothing to round).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from framegen.models.bundle import sha256_path
from framegen.models.contract import GEN_AUDIO, GEN_IMAGE, GEN_OUTPUT, INNER_SIZE
from framegen.models.errors import first_line
from framegen.models.imports import coremltools, mlprogram_spec
from framegen.runtimes.artifacts import mode_from_audio_shape, resolve_artifact, settle_mode
from framegen.runtimes.base import Backend, BackendError, BackendInfo, generator_io
from framegen.runtimes.spec import OpenRequest

_ORT_PROVIDERS = {"ort-cpu": ["CPUExecutionProvider"], "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def checked_artifact(req: OpenRequest, fmt: str, name: str) -> Any:
    """The image-I/O artifact ``req`` names, its sha256 checked against the bundle manifest (when from a bundle)."""
    art = resolve_artifact(req, fmt, name)
    if art.sha256 is not None and sha256_path(art.path) != art.sha256:
        raise BackendError(f"{art.path}: contents differ from the bundle manifest's sha256 (altered artifact)")
    return art


class OrtImageBackend(Backend):
    """The ONNX image-I/O variant in ONNX Runtime (dynamic batch: one run per call)."""

    def __init__(self, name: str, req: OpenRequest) -> None:
        import onnxruntime as ort

        art = checked_artifact(req, "onnx", name)
        providers = _ORT_PROVIDERS[name]
        if providers[0] not in ort.get_available_providers():
            raise BackendError(f"{name}: ONNX Runtime here has no {providers[0]}")
        try:
            self.session = ort.InferenceSession(os.fspath(art.path), providers=providers)
        except Exception as exc:
            raise BackendError(f"{art.path}: ONNX Runtime cannot load it ({first_line(exc, 200)})") \
                from None
        if self.session.get_providers()[0] != providers[0]:  # ORT falls back to the CPU silently
            raise BackendError(f"{name}: ONNX Runtime could not start {providers[0]} here")
        ins = {i.name: i for i in self.session.get_inputs()}
        outs = [o.name for o in self.session.get_outputs()]
        if GEN_IMAGE not in ins or ins[GEN_IMAGE].type != "tensor(uint8)" or outs != [GEN_OUTPUT]:
            raise BackendError(f"{art.path}: not an image-I/O generator (inputs "
                               f"{[(n, i.type) for n, i in ins.items()]}, outputs {outs})")
        meta = self.session.get_modelmeta().custom_metadata_map
        detected = mode_from_audio_shape(tuple(ins[GEN_AUDIO].shape)) if GEN_AUDIO in ins else None
        mode = settle_mode(detected, art.mode, req.mode, os.fspath(art.path))
        inputs, outputs = generator_io(mode, "image")
        super().__init__(BackendInfo(name, "cpu" if providers[0] == "CPUExecutionProvider" else "cuda",
                                     art.precision or meta.get("precision", "fp32"), mode, art.source, inputs,
                                     outputs, {"io": "image", "providers": self.session.get_providers()}))

    def _infer(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        if self.session is None:
            raise BackendError(f"{self.name}: used after close()")
        return self.session.run([GEN_OUTPUT], {GEN_IMAGE: image, GEN_AUDIO: audio})[0]

    def close(self) -> None:
        """Drop the session."""
        self.session = None  # type: ignore[assignment]


def color_layouts(path: Path | str | os.PathLike[str]) -> tuple[str, str]:
    """Colour layouts (``BGR``/``RGB``) of the package's image input ``image`` and image output ``output``."""
    spec = mlprogram_spec(path)

    from coremltools.proto import FeatureTypes_pb2
    layouts = []
    for features, name in ((spec.description.input, GEN_IMAGE), (spec.description.output, GEN_OUTPUT)):
        feature = next((f for f in features if f.name == name), None)
        if feature is None or feature.type.WhichOneof("Type") != "imageType":
            raise BackendError(f"{path}: {name!r} is not an image feature: not an image-I/O generator")
        it = feature.type.imageType
        space = FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(it.colorSpace)
        if space not in ("BGR", "RGB") or (it.width, it.height) != (INNER_SIZE, INNER_SIZE):
            raise BackendError(f"{path}: {name!r} is a {it.width}x{it.height} {space} image, expected "
                               f"{INNER_SIZE}x{INNER_SIZE} BGR or RGB")
        layouts.append(space)
    return layouts[0], layouts[1]


def pixels_to_planes(bgr: np.ndarray, layout: str) -> np.ndarray:
    """What an image input hands the program: uint8 BGR HWC -> float32 [1, 3, H, W] in ``layout``'s channel order
    (pixel values 0..255; the exporter sets scale 1, bias 0)."""
    planes = bgr.transpose(2, 0, 1) if layout == "BGR" else bgr[..., ::-1].transpose(2, 0, 1)
    return np.ascontiguousarray(planes, dtype=np.float32)[None]


def planes_to_pixels(planes: np.ndarray, layout: str, where: str) -> np.ndarray:
    """What an image output becomes: float [1, 3, H, W] planes in ``layout`` -> uint8 BGR HWC. Refuses values that
    are not integers in 0..255: for those Core ML's own conversion (rounding or truncating) would decide."""
    p = np.asarray(planes, dtype=np.float32)[0]
    if not np.isfinite(p).all() or p.min() < 0 or p.max() > 255 or not np.array_equal(p, np.floor(p)):
        raise BackendError(f"{where}: image output holds values that are not integers in 0..255 "
                           f"(min {np.nanmin(p):.4g}, max {np.nanmax(p):.4g})")
    hwc = p.astype(np.uint8).transpose(1, 2, 0)
    return np.ascontiguousarray(hwc if layout == "BGR" else hwc[..., ::-1])


class CoreMLImageBackend(Backend):
    """The Core ML image-I/O variant in Core ML itself (macOS only; images go in and out as PIL images, which
    coremltools turns into CVPixelBuffers). Not exercised on Linux."""

    def __init__(self, req: OpenRequest) -> None:
        import sys

        art = checked_artifact(req, "coreml", "coreml")
        if sys.platform != "darwin":
            raise BackendError(f"coreml: Core ML runs only on macOS; use coreml-mil to verify {art.path} here")

        ct = coremltools()
        self.model = ct.models.MLModel(os.fspath(art.path), compute_units=ct.ComputeUnit.ALL)
        meta = self.model.user_defined_metadata
        mode = settle_mode(None, art.mode, req.mode or meta.get("mode"), os.fspath(art.path))
        inputs, outputs = generator_io(mode, "image")
        super().__init__(BackendInfo("coreml", "all compute units", art.precision or meta.get("precision", "fp16"),
                                     mode, art.source, inputs, outputs, {"io": "image"}))

    def _infer(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        from PIL import Image

        outs = []
        for bgr, aud in zip(image, audio, strict=True):
            res = self.model.predict({GEN_IMAGE: Image.fromarray(np.ascontiguousarray(bgr[..., ::-1]), "RGB"),
                                      GEN_AUDIO: aud[None]})
            rgb = np.asarray(res[GEN_OUTPUT].convert("RGB"), dtype=np.uint8)
            outs.append(np.ascontiguousarray(rgb[..., ::-1]))
        return np.stack(outs)

    def close(self) -> None:
        """Drop the model."""
        self.model = None
