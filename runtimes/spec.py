"""What the registry knows about a backend without opening it."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


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
