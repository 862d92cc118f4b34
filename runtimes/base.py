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


def generator_io(mode: str, io: str = "tensor") -> tuple[list[TensorMeta], list[TensorMeta]]:
    """The contract's generator inputs and outputs for a mode, for the tensor or the image-I/O variant."""
    if io == "image":
        pixels = (None, INNER_SIZE, INNER_SIZE, 3)
        return ([TensorMeta(GEN_IMAGE, pixels, "uint8"), TensorMeta(GEN_AUDIO, (None, *audio_shape(mode)))],
                [TensorMeta(GEN_OUTPUT, pixels, "uint8")])
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

    @property
    def io(self) -> str:
        """``tensor`` (the contract's float tensors) or ``image`` (uint8 BGR image I/O variant), from the metadata the
        backend read from its own artifact."""
        return "image" if self._meta(GEN_IMAGE).dtype == "uint8" else "tensor"

    def _meta(self, name: str) -> TensorMeta:
        for t in self.info.inputs:
            if t.name == name:
                return t
        raise BackendError(f"{self.name}: its model has no input {name!r} (inputs "
                           f"{[t.name for t in self.info.inputs]})")

    @staticmethod
    def _caller_dtype(meta: TensorMeta) -> np.dtype:
        # Float inputs are always handed over as float32: a backend whose model stores float16 casts them itself.
        return np.dtype(np.float32) if meta.dtype in ("float32", "float16", "float64") else np.dtype(meta.dtype)

    @staticmethod
    def _describe(meta: TensorMeta) -> str:
        return "[" + ", ".join("batch" if d is None else str(d) for d in meta.shape) + "]"

    def check_inputs(self, image: np.ndarray, audio: np.ndarray) -> None:
        """Refuse inputs that do not fit the model with one clear line (never a runtime's stack trace): names,
        dtypes and shapes come from the metadata the backend read from its own artifact (``info.inputs``)."""
        for name, arr in ((GEN_IMAGE, image), (GEN_AUDIO, audio)):
            meta = self._meta(name)
            if not isinstance(arr, np.ndarray):
                raise BackendError(f"{self.name}: input {name!r} must be a numpy array, got {type(arr).__name__}")
            want_dtype = self._caller_dtype(meta)
            if arr.dtype != want_dtype:
                raise BackendError(f"{self.name}: input {name!r} must be {want_dtype}, got {arr.dtype}")
            tail = meta.shape[1:]
            if arr.ndim != len(meta.shape) or any(w is not None and w != g for w, g in zip(tail, arr.shape[1:],
                                                                                           strict=True)):
                raise BackendError(f"{self.name}: input {name!r} has shape {list(arr.shape)}, expected "
                                   f"{self._describe(meta)} ({self.mode} mode, {self.io} I/O)")
        if image.shape[0] != audio.shape[0]:
            raise BackendError(f"{self.name}: batch sizes differ: image {image.shape[0]}, audio {audio.shape[0]}")
        if image.shape[0] == 0:
            raise BackendError(f"{self.name}: empty batch")

    def check_output(self, out: np.ndarray, batch: int) -> np.ndarray:
        """Refuse an output that does not fit the model's declared output (dtype and shape) with one line."""
        meta = next((t for t in self.info.outputs if t.name == GEN_OUTPUT), None)
        if meta is None:
            return out
        want_dtype = self._caller_dtype(meta)
        want_shape = (batch, *meta.shape[1:])
        if not isinstance(out, np.ndarray) or out.dtype != want_dtype or tuple(out.shape) != want_shape:
            got = f"{out.dtype} {list(out.shape)}" if isinstance(out, np.ndarray) else type(out).__name__
            raise BackendError(f"{self.name}: {self.info.source} returned {got}, expected {want_dtype} "
                               f"{list(want_shape)}")
        return out

    def infer(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """Run the generator on a batch.

        tensor I/O: image float32 [B, 6, 320, 320], audio float32 [B, *mode shape] -> output float32 [B, 3, 320, 320].
        image I/O: image uint8 [B, 320, 320, 3] (the BGR reference crop ``crop328[4:324, 4:324]``), audio as above
        -> output uint8 [B, 320, 320, 3] BGR, truncated like SyncTalk_2D.
        """
        self.check_inputs(image, audio)
        out = self._infer(np.ascontiguousarray(image), np.ascontiguousarray(audio))
        return self.check_output(out, image.shape[0])

    @abstractmethod
    def _infer(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """Runtime-specific inference on validated, contiguous inputs."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release runtime resources."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
