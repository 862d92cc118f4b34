"""The ``coreml-mil`` backend: a Core ML VERIFIER (not Core ML) that runs an .mlpackage's ML program with
:class:`framegen.runtimes.mil.program.MilProgram`, for tensor and image-I/O generators."""

from __future__ import annotations

import os

import numpy as np
from framegen.models.bundle import sha256_path
from framegen.models.contract import GEN_AUDIO, GEN_IMAGE, GEN_OUTPUT, INNER_SIZE
from framegen.runtimes.artifacts import mode_from_audio_shape, resolve_artifact, settle_mode
from framegen.runtimes.base import Backend, BackendError, BackendInfo, TensorMeta, generator_io
from framegen.runtimes.image_io_backend import checked_artifact, color_layouts, pixels_to_planes, planes_to_pixels
from framegen.runtimes.mil.program import NAME, WHAT, MilProgram, quiet_coremltools, run_batched
from framegen.runtimes.spec import Availability, BackendSpec, OpenRequest


class CoreMLMilBackend(Backend):
    """A generator ML program run by the verifier (see the module docstring for what it can and cannot show).

    With ``check_finite`` an op that overflows (inf/NaN from finite inputs) raises :class:`MilNonFiniteError`
    naming it, instead of the output silently carrying inf/NaN.
    """

    def __init__(self, program: MilProgram, mode: str, source: str, check_finite: bool = False) -> None:
        for name in (GEN_IMAGE, GEN_AUDIO):
            if name not in program.inputs:
                raise BackendError(f"{program.path}: not a framegen generator (inputs {list(program.inputs)})")
        if GEN_OUTPUT not in program.outputs:
            raise BackendError(f"{program.path}: not a framegen generator (outputs {list(program.outputs)})")
        if program.image_inputs:
            raise BackendError(f"{program.path}: image-typed inputs {program.image_inputs} are not supported by "
                               f"{NAME}")
        inputs, outputs = generator_io(mode)
        # The program's own declared inputs (a flexible batch reads as an unknown first dimension); the contract's
        # only where the program leaves a shape unknown.
        declared = {name: program.inputs[name].shape for name in (GEN_IMAGE, GEN_AUDIO)}
        inputs = [TensorMeta(t.name, (None, *declared[t.name][1:]) if declared[t.name] else t.shape, "float32")
                  for t in inputs]
        super().__init__(BackendInfo(NAME, "cpu", program.precision, mode, source, inputs, outputs, {
            "verifier": True, "note": WHAT, "opset": program.opset, "ops": dict(program.op_counts),
            "conv_accumulation": "fp32 (fp16 operands and outputs)" if program.precision == "fp16" else "fp32",
            "check_finite": check_finite,
        }))
        self.program = program
        self.check_finite = check_finite

    def _infer(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        out = run_batched(self.program, {GEN_IMAGE: image, GEN_AUDIO: audio}, GEN_OUTPUT, self.check_finite)
        if out.shape[1:] != (3, INNER_SIZE, INNER_SIZE):
            raise BackendError(f"{self.program.path}: output has shape {list(out.shape)}, expected "
                               f"[batch, 3, {INNER_SIZE}, {INNER_SIZE}]")
        return out

    def close(self) -> None:
        """Drop the program's weights."""
        self.program = None  # type: ignore[assignment]


def _probe() -> Availability:
    try:
        import torch

        quiet_coremltools()
    except Exception as exc:
        return Availability(False, f"needs coremltools' protobuf schema and torch ({type(exc).__name__}: {exc})")
    return Availability(True, f"{WHAT} (torch {torch.__version__}, {torch.get_num_threads()} threads)")


def _open(req: OpenRequest) -> Backend:
    if req.io == "image":
        return MilImageBackend(req)

    art = resolve_artifact(req, "coreml", NAME)
    if not art.path.is_dir():
        raise BackendError(f"{art.path}: {NAME} runs ML programs (.mlpackage), not a neural-network .mlmodel")
    if art.sha256 is not None and sha256_path(art.path) != art.sha256:
        raise BackendError(f"{art.path}: contents differ from the bundle manifest's sha256 (altered artifact)")
    program = MilProgram(art.path)
    # A compressed package (int8 / pal6 / pal4 weights, toolkit.compress) computes in fp16.
    if art.precision is not None and program.precision != _COMPRESSED_COMPUTE.get(art.precision, art.precision):
        raise BackendError(f"{art.path}: listed as {art.precision} but the program computes in "
                           f"{program.precision}")
    audio = program.inputs.get(GEN_AUDIO)
    detected = mode_from_audio_shape(audio.shape) if audio is not None and audio.shape else None
    mode = settle_mode(detected, art.mode, req.mode, os.fspath(art.path))
    backend = CoreMLMilBackend(program, mode, art.source, check_finite=bool(req.options.get("check_finite")))
    if art.precision in _COMPRESSED_COMPUTE:  # compressed weights: listed (and judged) as the artifact they are
        backend.info.precision = art.precision
        backend.info.extra["compute_precision"] = program.precision
    return backend


#: compressed-weight precisions (constexpr_* weights) and the compute precision of their programs
_COMPRESSED_COMPUTE = {"int8": "fp16", "pal6": "fp16", "pal4": "fp16"}

SPECS = [
    BackendSpec(NAME, "coremltools-mil", "cpu", "coreml", ("fp32", "fp16", *_COMPRESSED_COMPUTE), _probe, _open,
                "Core ML VERIFIER (not Core ML): runs the .mlpackage's ML program op by op with its stored "
                "weights on the CPU in the program's fp16/fp32; blind to Apple's CPU/GPU/Neural Engine kernels",
                verifier=True, ios=("tensor", "image")),
]


class MilImageBackend(Backend):
    """The Core ML image-I/O variant in the ``coreml-mil`` VERIFIER (not Core ML: no CVPixelBuffer conversion,
    no Apple kernels; see :mod:`framegen.runtimes.mil.program`). The image holds one picture: a batch runs one by
    one."""

    def __init__(self, req: OpenRequest) -> None:
        art = checked_artifact(req, "coreml", NAME)
        self.program = MilProgram(art.path)
        if GEN_IMAGE not in self.program.image_inputs:
            raise BackendError(f"{art.path}: input {GEN_IMAGE!r} is not an image: not an image-I/O generator")
        self.layouts = color_layouts(art.path)
        self.path = art.path
        audio = self.program.inputs.get(GEN_AUDIO)
        detected = mode_from_audio_shape(audio.shape) if audio is not None and audio.shape else None
        mode = settle_mode(detected, art.mode, req.mode, os.fspath(art.path))
        precision = art.precision or self.program.precision
        if self.program.precision != precision:
            raise BackendError(f"{art.path}: listed as {precision} but the program computes in "
                               f"{self.program.precision}")
        inputs, outputs = generator_io(mode, "image")
        super().__init__(BackendInfo(NAME, "cpu", precision, mode, art.source, inputs, outputs,
                                     {"io": "image", "verifier": True, "color_layouts": list(self.layouts),
                                      "ops": dict(self.program.op_counts)}))

    def _infer(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        if self.program is None:
            raise BackendError(f"{self.name}: used after close()")
        outs = []
        for bgr, aud in zip(image, audio, strict=True):
            res = self.program.run({GEN_IMAGE: pixels_to_planes(bgr, self.layouts[0]), GEN_AUDIO: aud[None]})
            outs.append(planes_to_pixels(res[GEN_OUTPUT], self.layouts[1], os.fspath(self.path)))
        return np.stack(outs)

    def close(self) -> None:
        """Drop the program's weights."""
        self.program = None  # type: ignore[assignment]


