"""The one backend interface every runtime implements.

A backend is opened from a checkpoint or a bundle artifact, reports what it is and what it takes, runs
``infer(image, audio)`` on batched float32 numpy arrays, and is closed. Inspired by Polygraphy's runners
(activate / infer / deactivate with input metadata), without one class that knows every runtime.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
from framegen.models.contract import GEN_AUDIO, GEN_IMAGE, GEN_OUTPUT, INNER_SIZE, audio_shape
from framegen.models.errors import FramegenError


class BackendError(FramegenError):
    """A backend cannot be opened or was handed inputs it cannot take."""


@dataclass(frozen=True)
class TensorMeta:
    """Name, shape (``None`` for a dynamic axis) and dtype of one model input or output."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"

    def as_dict(self) -> dict[str, object]:
        """JSON-able form."""
        return {"name": self.name, "shape": ["batch" if d is None else d for d in self.shape], "dtype": self.dtype}


@dataclass
class BackendInfo:
    """What a backend reports about itself."""

    name: str
    device: str
    precision: str
    mode: str
    source: str
    inputs: list[TensorMeta] = field(default_factory=list)
    outputs: list[TensorMeta] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """JSON-able form."""
        return {
            "name": self.name, "device": self.device, "precision": self.precision, "mode": self.mode,
            "source": self.source, "inputs": [t.as_dict() for t in self.inputs],
            "outputs": [t.as_dict() for t in self.outputs], **self.extra,
        }


def generator_io(mode: str) -> tuple[list[TensorMeta], list[TensorMeta]]:
    """The contract's generator inputs and outputs for a mode."""
    inputs = [TensorMeta(GEN_IMAGE, (None, 6, INNER_SIZE, INNER_SIZE)),
              TensorMeta(GEN_AUDIO, (None, *audio_shape(mode)))]
    outputs = [TensorMeta(GEN_OUTPUT, (None, 3, INNER_SIZE, INNER_SIZE))]
    return inputs, outputs


class Backend(ABC):
    """A generator running on one runtime. Use as a context manager or call :meth:`close`."""

    #: batch size the render pipeline uses when the user does not choose one
    default_batch: int = 1
    #: how many ``infer`` calls the render pipeline may run at once on this object
    concurrent_workers: int = 1

    def __init__(self, info: BackendInfo) -> None:
        self.info = info

    @property
    def name(self) -> str:
        """Registry name, e.g. ``ort-cpu``."""
        return self.info.name

    @property
    def mode(self) -> str:
        """Audio branch of the generator: ave, hubert or wenet."""
        return self.info.mode

    def check_inputs(self, image: np.ndarray, audio: np.ndarray) -> None:
        """Refuse inputs that do not fit the contract with one clear line (never a runtime's stack trace)."""
        want_img = (6, INNER_SIZE, INNER_SIZE)
        want_aud = audio_shape(self.mode)
        for name, arr, want in ((GEN_IMAGE, image, want_img), (GEN_AUDIO, audio, want_aud)):
            if not isinstance(arr, np.ndarray):
                raise BackendError(f"{self.name}: input {name!r} must be a numpy array, got {type(arr).__name__}")
            if arr.dtype != np.float32:
                raise BackendError(f"{self.name}: input {name!r} must be float32, got {arr.dtype}")
            if arr.ndim != 1 + len(want) or tuple(arr.shape[1:]) != want:
                raise BackendError(f"{self.name}: input {name!r} has shape {list(arr.shape)}, expected "
                                   f"[batch, {', '.join(map(str, want))}] ({self.mode} mode)")
        if image.shape[0] != audio.shape[0]:
            raise BackendError(f"{self.name}: batch sizes differ: image {image.shape[0]}, audio {audio.shape[0]}")
        if image.shape[0] == 0:
            raise BackendError(f"{self.name}: empty batch")

    def infer(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """Run the generator: image [B, 6, 320, 320], audio [B, *mode shape] -> output [B, 3, 320, 320]."""
        self.check_inputs(image, audio)
        return self._infer(np.ascontiguousarray(image), np.ascontiguousarray(audio))

    @abstractmethod
    def _infer(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """Runtime-specific inference on validated, contiguous inputs."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release runtime resources."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
