"""Finding the model file an artifact-based backend runs: a bundle's manifest entry or an explicit path."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from framegen.models.bundle import load_bundle
from framegen.models.contract import AUDIO_SHAPES
from framegen.models.errors import FramegenError
from framegen.runtimes.base import BackendError
from framegen.runtimes.native import cpu_units
from framegen.runtimes.spec import BackendSpec, OpenRequest, artifact_precision

#: file name endings of each artifact format
SUFFIXES: dict[str, tuple[str, ...]] = {"onnx": (".onnx",), "coreml": (".mlpackage", ".mlmodel")}
_LABEL = {"onnx": "ONNX", "coreml": "Core ML"}


@dataclass(frozen=True)
class ResolvedArtifact:
    """The generator file a backend opens, and what the bundle (if any) says about it."""

    path: Path
    format: str
    precision: str | None  # None for an explicit file: the backend reads it from the model
    mode: str | None  # the bundle's mode; None for an explicit file
    source: str
    sha256: str | None


def resolve_artifact(req: OpenRequest, fmt: str, backend: str) -> ResolvedArtifact:
    """The generator artifact of format ``fmt`` that ``req`` names; a one-line error naming what is missing.

    An explicit ``req.artifact`` wins over ``req.bundle``; from a bundle the entry matching ``req.precision`` is
    taken (``bf16`` takes the fp32 one; ``framegen.models.bundle.Bundle.find`` says what the bundle holds when there
    is none).
    """
    label = _LABEL[fmt]
    if req.artifact is not None:
        path = Path(req.artifact)
        if not path.exists():
            raise BackendError(f"{path}: no such {label} model")
        if not path.name.lower().endswith(SUFFIXES[fmt]):
            raise BackendError(f"{path}: {backend} needs a {label} model ({' or '.join(SUFFIXES[fmt])})")
        return ResolvedArtifact(path, fmt, None, None, os.fspath(path), None)
    if req.bundle is not None:
        bundle = load_bundle(req.bundle)
        precision = artifact_precision(req.precision)
        art = bundle.find("generator", fmt, precision, req.io)
        sha = art.entry.get("sha256")
        return ResolvedArtifact(art.path, fmt, precision, bundle.mode, os.fspath(art.path),
                                sha if isinstance(sha, str) else None)
    raise BackendError(f"{backend} runs a {label} model: open it from a bundle or name the "
                       f"{' / '.join(SUFFIXES[fmt])} file")


def artifact_problem(spec: BackendSpec, req: OpenRequest) -> str | None:
    """Why backend ``spec`` cannot be opened from ``req`` (``None`` when it can): precision, I/O variant and the
    artifact it needs, as the spec declares them; never raises."""
    needs, precisions = spec.needs, spec.precisions
    if req.precision not in precisions:
        return f"runs {'/'.join(precisions)}, not {req.precision}"
    if req.io not in spec.ios:
        return f"runs {'/'.join(spec.ios)} I/O models, not {req.io}"
    if req.precision == "bf16" and spec.device == "cpu":
        units = cpu_units("bf16")
        if not units.native:  # emulated bf16 on fp32 units is slower than fp32 and no more exact: never offered
            return units.reason
    if needs == "checkpoint":
        if req.checkpoint is None and req.model is None:
            return "needs a checkpoint"
        return None
    label = _LABEL.get(needs, needs)
    if req.artifact is not None:
        if Path(req.artifact).name.lower().endswith(SUFFIXES.get(needs, ())):
            return None
        return f"needs a {label} model, {Path(req.artifact).name} is not one"
    if req.bundle is not None:
        try:
            bundle = load_bundle(req.bundle)
        except FramegenError as exc:
            return str(exc)
        if bundle.has("generator", needs, artifact_precision(req.precision), req.io):
            return None
        variant = "" if req.io == "tensor" else f" {req.io}-I/O"
        return f"bundle has no generator {label} {artifact_precision(req.precision)}{variant} artifact"
    return f"needs a {label} model (a bundle or the file)"


def mode_from_audio_shape(shape: tuple[int | None, ...]) -> str | None:
    """The generator mode whose per-frame audio shape is ``shape[1:]`` (the three modes' shapes all differ)."""
    tail = tuple(shape[1:])
    for mode, want in AUDIO_SHAPES.items():
        if tail == want:
            return mode
    return None


def settle_mode(detected: str | None, bundle_mode: str | None, requested: str | None, where: str) -> str:
    """One mode from what the model's shapes say, what the bundle says and what the user asked for."""
    if detected and requested and detected != requested:
        raise BackendError(f"{where}: the model's audio input is {detected!r} mode, not the requested {requested!r}")
    if detected and bundle_mode and detected != bundle_mode:
        raise BackendError(f"{where}: the model's audio input is {detected!r} mode but its bundle says "
                           f"{bundle_mode!r}")
    mode = detected or bundle_mode or requested
    if mode is None:
        raise BackendError(f"{where}: cannot tell the generator mode from the model; name it (ave, hubert, wenet)")
    return mode
