"""Running image-I/O generator artifacts (``io: image`` in a bundle): uint8 BGR crops in, uint8 BGR predictions out.

These variants (see :mod:`exporters.image_io`) do not fit the float :class:`runtimes.base.Backend` interface, so
they get their own small one, :class:`ImageModel`::

    with open_image_backend("ort-cpu", bundle, "fp32") as m:
        pred_u8 = m.infer_uint8(reference_u8, audio)   # [B, 320, 320, 3] uint8 BGR, [B, *mode] float32

``reference_u8`` is ``crop328[4:324, 4:324]`` of each frame, ``pred_u8`` goes into ``crop328[4:324, 4:324]`` before the
paste-back (``toolkit.preprocess.paste_back`` takes it as is). Runtimes: ONNX Runtime (``ort-cpu``, ``ort-cuda``) for
the ONNX variant; the ``coreml-mil`` VERIFIER (not Core ML) and, on macOS only, Core ML itself (``coreml``) for the
Core ML variant.

Core ML hands an image-typed input to the program as float planes in the input's colour layout, and turns the
program's float output planes back into pixels. The verifier does the same here: BGR HWC uint8 -> float32
[1, 3, 320, 320] in the declared layout's channel order, and back, refusing an output value that is not an integer
in 0..255 (the program floors and clips, so Core ML's own float-to-pixel conversion has nothing to round).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
from framegen.models.contract import GEN_AUDIO, GEN_IMAGE, GEN_OUTPUT, INNER_SIZE, audio_shape
from framegen.runtimes.base import BackendError

#: backend name -> artifact format it runs for image-I/O variants
IMAGE_BACKENDS: dict[str, str] = {"ort-cpu": "onnx", "ort-cuda": "onnx", "coreml-mil": "coreml", "coreml": "coreml"}
_ORT_PROVIDERS = {"ort-cpu": ["CPUExecutionProvider"], "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


class ImageModel(ABC):
    """An image-I/O generator on one runtime. Use as a context manager or call :meth:`close`."""

    def __init__(self, name: str, path: Path, precision: str, mode: str, extra: dict[str, Any] | None = None
                 ) -> None:
        self.name = name
        self.path = path
        self.precision = precision
        self.mode = mode
        self.extra = dict(extra or {})

    @property
    def info(self) -> dict[str, Any]:
        """What this model is, JSON-able (for parity reports)."""
        return {"name": self.name, "io": "image", "precision": self.precision, "mode": self.mode,
                "source": os.fspath(self.path), **self.extra}

    def check_inputs(self, reference: np.ndarray, audio: np.ndarray) -> None:
        """Refuse inputs that do not fit the image-I/O contract with one line."""
        want = (INNER_SIZE, INNER_SIZE, 3)
        if not isinstance(reference, np.ndarray) or reference.dtype != np.uint8 or reference.ndim != 4 \
                or tuple(reference.shape[1:]) != want:
            got = f"{reference.dtype} {list(reference.shape)}" if isinstance(reference, np.ndarray) else \
                type(reference).__name__
            raise BackendError(f"{self.name}: input {GEN_IMAGE!r} must be uint8 [batch, 320, 320, 3] BGR, got {got}")
        shape = audio_shape(self.mode)
        if not isinstance(audio, np.ndarray) or audio.dtype != np.float32 or tuple(audio.shape[1:]) != shape:
            got = f"{audio.dtype} {list(audio.shape)}" if isinstance(audio, np.ndarray) else type(audio).__name__
            raise BackendError(f"{self.name}: input {GEN_AUDIO!r} must be float32 [batch, "
                               f"{', '.join(map(str, shape))}], got {got}")
        if reference.shape[0] != audio.shape[0] or reference.shape[0] == 0:
            raise BackendError(f"{self.name}: batch sizes image {reference.shape[0]}, audio {audio.shape[0]}")

    def infer_uint8(self, reference: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """``reference`` uint8 [B, 320, 320, 3] BGR crops, ``audio`` float32 [B, *mode shape] -> uint8
        [B, 320, 320, 3] BGR predictions."""
        self.check_inputs(reference, audio)
        out = self._infer(np.ascontiguousarray(reference), np.ascontiguousarray(audio))
        if out.dtype != np.uint8 or out.shape != reference.shape:
            raise BackendError(f"{self.name}: {self.path} returned {out.dtype} {list(out.shape)}, expected uint8 "
                               f"{list(reference.shape)}")
        return out

    @abstractmethod
    def _infer(self, reference: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """Runtime-specific inference on validated, contiguous inputs."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release runtime resources."""

    def __enter__(self) -> ImageModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OrtImageModel(ImageModel):
    """The ONNX image-I/O variant in ONNX Runtime (dynamic batch: one run per call)."""

    def __init__(self, path: Path, name: str = "ort-cpu", precision: str | None = None, mode: str | None = None
                 ) -> None:
        import onnxruntime as ort

        providers = _ORT_PROVIDERS[name]
        if providers[0] not in ort.get_available_providers():
            raise BackendError(f"{name}: ONNX Runtime here has no {providers[0]}")
        try:
            self.session = ort.InferenceSession(os.fspath(path), providers=providers)
        except Exception as exc:
            raise BackendError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:200]})") from None
        if self.session.get_providers()[0] != providers[0]:  # ORT falls back to the CPU silently
            raise BackendError(f"{name}: ONNX Runtime could not start {providers[0]} here")
        ins = {i.name: i for i in self.session.get_inputs()}
        outs = [o.name for o in self.session.get_outputs()]
        if GEN_IMAGE not in ins or ins[GEN_IMAGE].type != "tensor(uint8)" or outs != [GEN_OUTPUT]:
            raise BackendError(f"{path}: not an image-I/O generator (inputs "
                               f"{[(n, i.type) for n, i in ins.items()]}, outputs {outs})")
        meta = self.session.get_modelmeta().custom_metadata_map
        detected = _mode_of(ins[GEN_AUDIO].shape if GEN_AUDIO in ins else None)
        super().__init__(name, path, precision or meta.get("precision", "fp32"),
                         mode or detected or meta.get("mode", "ave"),
                         {"device": "cuda" if name == "ort-cuda" else "cpu",
                          "providers": self.session.get_providers()})

    def _infer(self, reference: np.ndarray, audio: np.ndarray) -> np.ndarray:
        return self.session.run([GEN_OUTPUT], {GEN_IMAGE: reference, GEN_AUDIO: audio})[0]

    def close(self) -> None:
        """Drop the session."""
        self.session = None  # type: ignore[assignment]


def _mode_of(shape: Any) -> str | None:
    from framegen.runtimes.artifacts import mode_from_audio_shape

    return mode_from_audio_shape(tuple(shape)) if shape else None


def _color_layouts(path: Path) -> tuple[str, str]:
    """Colour layouts (``BGR``/``RGB``) of the package's image input ``image`` and image output ``output``."""
    from framegen.models.imports import coremltools

    coremltools()
    from coremltools.models.utils import load_spec
    from coremltools.proto import FeatureTypes_pb2

    spec = load_spec(os.fspath(path))
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


class MilImageModel(ImageModel):
    """The Core ML image-I/O variant in the ``coreml-mil`` VERIFIER (not Core ML: no CVPixelBuffer conversion,
    no Apple kernels; see :mod:`framegen.runtimes.coreml_mil`). The image holds one picture: a batch runs one by one."""

    def __init__(self, path: Path, precision: str | None = None, mode: str | None = None) -> None:
        from framegen.runtimes.coreml_mil import MilProgram

        self.program = MilProgram(path)
        if GEN_IMAGE not in self.program.image_inputs:
            raise BackendError(f"{path}: input {GEN_IMAGE!r} is not an image: not an image-I/O generator")
        self.layouts = _color_layouts(path)
        audio = self.program.inputs.get(GEN_AUDIO)
        super().__init__("coreml-mil", path, precision or self.program.precision,
                         mode or _mode_of(audio.shape if audio else None) or "ave",
                         {"device": "cpu", "verifier": True, "color_layouts": list(self.layouts),
                          "ops": dict(self.program.op_counts)})
        if self.program.precision != self.precision:
            raise BackendError(f"{path}: listed as {self.precision} but the program computes in "
                               f"{self.program.precision}")

    def _infer(self, reference: np.ndarray, audio: np.ndarray) -> np.ndarray:
        outs = []
        for bgr, aud in zip(reference, audio, strict=True):
            res = self.program.run({GEN_IMAGE: pixels_to_planes(bgr, self.layouts[0]), GEN_AUDIO: aud[None]})
            outs.append(planes_to_pixels(res[GEN_OUTPUT], self.layouts[1], os.fspath(self.path)))
        return np.stack(outs)

    def close(self) -> None:
        """Drop the program's weights."""
        self.program = None  # type: ignore[assignment]


class CoreMLImageModel(ImageModel):
    """The Core ML image-I/O variant in Core ML itself (macOS only; images go in and out as PIL images, which
    coremltools turns into CVPixelBuffers). Not exercised on Linux."""

    def __init__(self, path: Path, precision: str | None = None, mode: str | None = None) -> None:
        import sys

        if sys.platform != "darwin":
            raise BackendError(f"coreml: Core ML runs only on macOS; use coreml-mil to verify {path} here")
        from framegen.models.imports import coremltools

        ct = coremltools()
        self.model = ct.models.MLModel(os.fspath(path), compute_units=ct.ComputeUnit.ALL)
        meta = self.model.user_defined_metadata
        super().__init__("coreml", path, precision or meta.get("precision", "fp16"), mode or meta.get("mode", "ave"),
                         {"device": "all compute units"})

    def _infer(self, reference: np.ndarray, audio: np.ndarray) -> np.ndarray:
        from PIL import Image

        outs = []
        for bgr, aud in zip(reference, audio, strict=True):
            res = self.model.predict({GEN_IMAGE: Image.fromarray(np.ascontiguousarray(bgr[..., ::-1]), "RGB"),
                                      GEN_AUDIO: aud[None]})
            rgb = np.asarray(res[GEN_OUTPUT].convert("RGB"), dtype=np.uint8)
            outs.append(np.ascontiguousarray(rgb[..., ::-1]))
        return np.stack(outs)

    def close(self) -> None:
        """Drop the model."""
        self.model = None


def open_image_model(path: str | os.PathLike[str], fmt: str | None = None, *, backend: str | None = None,
                     precision: str | None = None, mode: str | None = None) -> ImageModel:
    """Open an image-I/O artifact file. ``fmt`` (``onnx``/``coreml``) defaults from the suffix, ``backend`` to
    ``ort-cpu`` for ONNX and ``coreml-mil`` for Core ML."""
    p = Path(path)
    if not p.exists():
        raise BackendError(f"{p}: no such model")
    fmt = fmt or ("coreml" if p.suffix == ".mlpackage" else "onnx")
    name = backend or ("ort-cpu" if fmt == "onnx" else "coreml-mil")
    if IMAGE_BACKENDS.get(name) != fmt:
        runs = ", ".join(b for b, f in IMAGE_BACKENDS.items() if f == fmt)
        raise BackendError(f"{name}: cannot run an image-I/O {fmt} artifact (use {runs})")
    if fmt == "onnx":
        return OrtImageModel(p, name, precision, mode)
    if name == "coreml-mil":
        return MilImageModel(p, precision, mode)
    return CoreMLImageModel(p, precision, mode)


def open_image_backend(name: str, bundle: str | os.PathLike[str], precision: str = "fp32") -> ImageModel:
    """Open the bundle's image-I/O generator artifact of ``precision`` that backend ``name`` runs (its sha256 checked
    against the manifest first)."""
    from framegen.models.bundle import load_bundle, sha256_path

    if name not in IMAGE_BACKENDS:
        raise BackendError(f"{name}: no image-I/O runner; image-I/O artifacts run on {', '.join(IMAGE_BACKENDS)}")
    b = load_bundle(bundle)
    art = b.find("generator", IMAGE_BACKENDS[name], precision, io="image")
    if sha256_path(art.path) != art.entry.get("sha256"):
        raise BackendError(f"{art.path}: contents differ from the bundle manifest's sha256 (altered artifact)")
    return open_image_model(art.path, art.format, backend=name, precision=precision, mode=b.mode)
