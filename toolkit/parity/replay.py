"""Parity across machines: a backend's outputs saved on one machine (``--save-outputs``), judged on another
(``--load-outputs``), for example a Mac's ``coreml`` run judged by Linux CI.

The file is an ``.npz``: the model output of every compared frame (float32 3x320x320; for an image-I/O variant the
uint8 320x320x3 prediction) keyed by the sha256 of that frame's exact model inputs (image and audio window bytes),
plus a JSON header with the digest of all inputs, the artifact's sha256, the checkpoint the bundle came from, the
backend's info and the versions of the runtimes. Loading
refuses, with one line, a file made from other inputs or another artifact; a loaded run then goes through the same
pipeline as a live backend (:class:`ReplayBackend` answers each batch from the file), so its final frames are pasted
and compared exactly as the live ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from framegen.models.atomic import atomic_output
from framegen.models.contract import INNER_OFFSET, INNER_SIZE
from framegen.models.errors import FramegenError
from framegen.models.imports import coremltools
from framegen.runtimes.base import Backend, BackendError, BackendInfo, generator_io

FORMAT = "framegen-parity-outputs"
VERSION = 1


class OutputsFileError(FramegenError):
    """A saved-outputs file that cannot be read, or that was made from other inputs or another artifact."""


def frame_digest(image: np.ndarray, audio: np.ndarray) -> str:
    """sha256 of one frame's model inputs: the float32 image (6, 320, 320) and audio window bytes."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(image, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(audio, dtype=np.float32).tobytes())
    return h.hexdigest()


def inputs_digest(digests: list[str]) -> str:
    """sha256 over the ordered frame digests: one value naming every input of a run."""
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def runtime_versions() -> dict[str, str]:
    """Versions of what a backend's numbers depend on, as imported here (``onnxruntime`` whichever wheel carries it),
    and the platform."""
    import importlib
    import platform
    from importlib import metadata

    out = {}
    with contextlib.suppress(metadata.PackageNotFoundError):
        out["framegen"] = metadata.version("framegen")

    for name in ("numpy", "torch", "onnxruntime", "coremltools", "openvino"):
        try:
            module = coremltools() if name == "coremltools" else importlib.import_module(name)
            out[name] = str(module.__version__)
        except Exception:  # not installed, or a broken install: the file just says less
            continue
    out["platform"] = platform.platform()
    return out


@dataclass
class SavedRun:
    """One backend's outputs as read from a file."""

    path: Path
    header: dict[str, Any]
    outputs: dict[str, np.ndarray]  # frame digest -> float32 (3, 320, 320), or uint8 (320, 320, 3) for image I/O

    @property
    def label(self) -> str:
        """The candidate's label when it was saved."""
        return str(self.header.get("label"))


def save_outputs(path: str | os.PathLike[str], runs: list[dict[str, Any]]) -> Path:
    """Write ``runs`` (each: ``header`` dict and ``outputs`` {frame digest: array}) to one ``.npz``, atomically."""
    arrays: dict[str, np.ndarray] = {}
    headers = []
    for n, run in enumerate(runs):
        keys = list(run["outputs"])
        for j, key in enumerate(keys):
            value = np.asarray(run["outputs"][key])  # image-I/O predictions stay uint8
            arrays[f"r{n}_{j}"] = value if value.dtype == np.uint8 else value.astype(np.float32)
        headers.append(dict(run["header"], keys=keys))
    meta = {"format": FORMAT, "version": VERSION, "runs": headers}
    arrays["header"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    dest = Path(path)
    with atomic_output(dest) as tmp, open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz"
        np.savez_compressed(fh, **arrays)
    return dest


def load_outputs(path: str | os.PathLike[str]) -> list[SavedRun]:
    """The runs of a file written by :func:`save_outputs` (OutputsFileError naming the file otherwise)."""
    p = Path(path)
    if not p.is_file():
        raise OutputsFileError(f"{p}: no such file")
    try:
        with np.load(p, allow_pickle=False) as data:
            meta = json.loads(bytes(data["header"]).decode())
            if meta.get("format") != FORMAT:
                raise OutputsFileError(f"{p}: not a framegen parity outputs file")
            if meta.get("version") != VERSION:
                raise OutputsFileError(f"{p}: outputs format version {meta.get('version')}, this framegen reads "
                                       f"{VERSION}")
            runs = []
            for n, header in enumerate(meta["runs"]):
                outputs = {key: np.array(data[f"r{n}_{j}"]) for j, key in enumerate(header["keys"])}
                runs.append(SavedRun(p, header, outputs))
    except OutputsFileError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OutputsFileError(f"{p}: not a readable parity outputs file ({type(exc).__name__}: {exc})") from None
    if not runs:
        raise OutputsFileError(f"{p}: holds no run")
    return runs


def check_saved(run: SavedRun, digests: list[str], artifact_sha256: str | None) -> None:
    """Refuse (one line) a run made from other inputs than ``digests`` or from another artifact."""
    missing = [d for d in digests if d not in run.outputs]
    if missing:
        raise OutputsFileError(
            f"{run.path}: {run.label} was made from other inputs (inputs sha256 "
            f"{str(run.header.get('inputs_sha256'))[:12]}…, this run's {inputs_digest(digests)[:12]}…; "
            f"{len(missing)} of {len(digests)} frames differ): use the same template, features, --frames and "
            f"--start-frame")
    saved = (run.header.get("artifact") or {}).get("sha256")
    if artifact_sha256 is not None and saved is not None and saved != artifact_sha256:
        raise OutputsFileError(f"{run.path}: {run.label} ran artifact sha256 {saved[:12]}…, this bundle's is "
                               f"{artifact_sha256[:12]}…")


def crop_digest(crop: np.ndarray, audio: np.ndarray) -> str:
    """:func:`frame_digest` of the model inputs an image-I/O variant's uint8 (320, 320, 3) ``crop`` stands for."""
    from framegen.models.pixels import model_input

    full = np.zeros((INNER_SIZE + 2 * INNER_OFFSET,) * 2 + (3,), np.uint8)  # model_input reads only the inner part
    full[INNER_OFFSET:INNER_OFFSET + INNER_SIZE, INNER_OFFSET:INNER_OFFSET + INNER_SIZE] = crop
    return frame_digest(model_input(full), audio)


class ReplayBackend(Backend):
    """A saved run as a backend: each batch item's output is looked up by the digest of its inputs (tensor I/O:
    the float image; image I/O: the model inputs its uint8 crop stands for)."""

    def __init__(self, run: SavedRun) -> None:
        h = run.header
        mode = str(h.get("mode", "ave"))
        io = str(h.get("io", "tensor"))
        if io not in ("tensor", "image"):
            raise OutputsFileError(f"{run.path}: {run.label} has unknown I/O variant {io!r}")
        inputs, outputs = generator_io(mode, io)
        info = dict(h.get("info") or {})
        super().__init__(BackendInfo(f"{h.get('backend')} (loaded)", str(info.get("device", "?")),
                                     str(h.get("precision", "fp32")), mode, os.fspath(run.path), inputs, outputs,
                                     {"loaded_from": os.fspath(run.path), "saved_info": info,
                                      "runtime_versions": h.get("runtime_versions")}))
        self.run = run

    def _infer(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        out = []
        for img, aud in zip(image, audio, strict=True):
            key = crop_digest(img, aud) if self.io == "image" else frame_digest(img, aud)
            if key not in self.run.outputs:
                raise BackendError(f"{self.run.path}: no saved output for these inputs (made from other inputs)")
            out.append(self.run.outputs[key])
        return np.stack(out) if self.io == "image" else np.stack(out).astype(np.float32, copy=False)
