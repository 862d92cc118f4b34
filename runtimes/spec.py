"""What the registry knows about a backend without opening it."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Compute precisions that run an artifact of another precision: ``bf16`` is an fp32 artifact computed in bfloat16
#: (OpenVINO's inference-precision hint; PyTorch CPU autocast), so a bundle needs nothing new for it.
COMPUTE_ARTIFACT = {"bf16": "fp32"}


def artifact_precision(precision: str) -> str:
    """The precision of the artifact that a candidate of compute ``precision`` runs (``bf16`` -> ``fp32``)."""
    return COMPUTE_ARTIFACT.get(precision, precision)


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run here, and why (not)."""

    available: bool
    reason: str


@dataclass
class OpenRequest:
    """Everything a backend may be opened from: a checkpoint, a bundle (with its manifest), or a live module."""

    checkpoint: str | os.PathLike[str] | None = None
    bundle: str | os.PathLike[str] | None = None
    artifact: str | os.PathLike[str] | None = None
    precision: str = "fp32"
    #: generator I/O variant to open: "tensor" (the contract's float tensors) or "image" (uint8 image I/O)
    io: str = "tensor"
    mode: str | None = None
    model: Any = None
    source: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BackendSpec:
    """A registry entry: name, runtime, device, which artifact it needs, its probe and its opener."""

    name: str
    runtime: str
    device: str
    needs: str  # "checkpoint", "onnx" or "coreml"
    precisions: tuple[str, ...]
    probe: Callable[[], Availability]
    opener: Callable[[OpenRequest], Any]
    description: str = ""
    #: a verifier checks an artifact on a machine its real runtime cannot run on (never picked by ``auto``, never
    #: renders by default); parity and export validation use it
    verifier: bool = False
    #: generator I/O kinds it runs: "tensor" (the contract's float tensors) and/or "image" (uint8 image I/O variants)
    ios: tuple[str, ...] = ("tensor",)
    #: ``OpenRequest.options`` a backend gets when it feeds the render pipeline (several frames in flight) rather
    #: than one call at a time (``bench``'s model-only timing)
    render_options: Callable[[], dict[str, Any]] | None = None
    #: place in ``auto``'s order (lower is preferred: the expected speed for this model); ``None``: never ``auto``
    auto_rank: int | None = None
    #: the precisions ``auto`` may pick this backend for (``None``: all of ``precisions``); the others run by name
    auto_precisions: tuple[str, ...] | None = None
    #: a probe that depends on the request (a remote backend's server, named in ``OpenRequest.options``); used
    #: instead of ``probe`` when a job has a request's options to give
    probe_options: Callable[[dict[str, Any]], Availability] | None = None
