"""Reading a bundle directory (``manifest.json`` + artifacts) written by ``framegen export``.

The manifest is the only index of a bundle: backends, parity and golden vectors find artifacts through it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framegen.models.errors import FramegenError
from framegen.models.validation import ValidationRecord

MANIFEST = "manifest.json"


class BundleError(FramegenError):
    """A bundle that is missing, incomplete or does not hold what was asked for."""


def sha256_path(path: str | os.PathLike[str]) -> str:
    """sha256 of a file; for a directory (an .mlpackage), of its files in sorted relative-path order, each fed as
    ``relpath (POSIX) + NUL + sha256(file content) + LF``."""
    p = Path(path)
    if p.is_file():
        digest = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    if p.is_dir():
        digest = hashlib.sha256()
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            rel = f.relative_to(p).as_posix()
            digest.update(rel.encode() + b"\0" + sha256_path(f).encode() + b"\n")
        return digest.hexdigest()
    raise BundleError(f"{p}: no such artifact")


@dataclass(frozen=True)
class Artifact:
    """One manifest entry, with its path resolved against the bundle directory."""

    model: str  # generator | audio_encoder
    format: str  # onnx | coreml
    precision: str  # fp32 | fp16
    path: Path
    io: str  # tensor (contract float I/O) | image (uint8 image I/O variant)
    entry: dict[str, Any]

    @property
    def validation(self) -> ValidationRecord | None:
        """How export checked it (``None`` when the manifest records nothing)."""
        record = self.entry.get("validation")
        return None if record is None else ValidationRecord.from_dict(record, f"{self.path.name}: validation")

    def compute_validation(self, precision: str) -> ValidationRecord | None:
        """How export judged this (fp32) artifact computed in ``precision`` (``bf16``), or ``None`` if it did not."""
        record = (self.entry.get("compute") or {}).get(precision)
        return None if record is None else ValidationRecord.from_dict(record, f"{self.path.name}: compute."
                                                                              f"{precision}")


@dataclass
class Bundle:
    """A loaded bundle: its directory, manifest, and artifacts."""

    root: Path
    manifest: dict[str, Any]
    artifacts: list[Artifact]

    def __fspath__(self) -> str:
        # Path-like, so that a job loads its bundle once and passes the loaded one wherever a path is taken.
        return os.fspath(self.root)

    def __str__(self) -> str:
        return os.fspath(self.root)

    @property
    def mode(self) -> str:
        """Generator mode recorded at export."""
        return str(self.manifest["source"]["mode"])

    def find(self, model: str = "generator", format: str = "onnx", precision: str = "fp32",
             io: str = "tensor") -> Artifact:
        """The artifact with these properties, or a one-line error saying what the bundle holds."""
        for a in self.artifacts:
            if (a.model, a.format, a.precision, a.io) == (model, format, precision, io):
                return a
        held = ", ".join(f"{a.model}/{a.format}/{a.precision}" + ("" if a.io == "tensor" else f"/{a.io}")
                         for a in self.artifacts) or "nothing"
        raise BundleError(f"{self.root}: no {model} {format} {precision}"
                          f"{'' if io == 'tensor' else ' ' + io + '-io'} artifact (it holds {held})")

    def has(self, model: str = "generator", format: str = "onnx", precision: str = "fp32",
            io: str = "tensor") -> bool:
        """Whether :meth:`find` would succeed."""
        return any((a.model, a.format, a.precision, a.io) == (model, format, precision, io) for a in self.artifacts)

    def verify(self) -> None:
        """Check every artifact's sha256 against the manifest; raise naming the first that differs."""
        for a in self.artifacts:
            got = sha256_path(a.path)
            if got != a.entry.get("sha256"):
                raise BundleError(f"{a.path}: sha256 {got[:12]}… does not match the manifest's "
                                  f"{str(a.entry.get('sha256'))[:12]}…")


_MODELS = ("generator", "audio_encoder", "audio_frontend", "audio_features")
_FORMATS = ("onnx", "coreml")
_IOS = ("tensor", "image")
_REQUIRED = ("model", "format", "precision", "path")


def _entry_error(manifest_path: Path, k: int, what: str) -> BundleError:
    return BundleError(f"{manifest_path}: artifacts[{k}] {what}")


def _check_entry(manifest_path: Path, k: int, entry: Any) -> None:
    """One manifest entry's shape: a JSON object with string fields of known values."""
    if not isinstance(entry, dict):
        raise _entry_error(manifest_path, k, f"is {type(entry).__name__}, expected an object")
    for key in _REQUIRED:
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise _entry_error(manifest_path, k, f"needs a non-empty string {key!r} (has {entry.get(key)!r:.60})")
    for key, allowed in (("model", _MODELS), ("format", _FORMATS)):
        if entry[key] not in allowed:
            raise _entry_error(manifest_path, k, f"{key} {entry[key]!r:.60} is not one of {', '.join(allowed)}")
    if entry.get("io", "tensor") not in _IOS:
        raise _entry_error(manifest_path, k, f"io {entry.get('io')!r:.60} is not one of {', '.join(_IOS)}")
    sha = entry.get("sha256")
    if sha is not None and not (isinstance(sha, str) and len(sha) == 64
                                and all(c in "0123456789abcdef" for c in sha)):
        raise _entry_error(manifest_path, k, f"sha256 {sha!r:.70} is not 64 lowercase hex digits")


def contained_path(root: Path, relative: str, where: str) -> Path:
    """``root / relative`` when it stays inside ``root`` after resolving symlinks (and, for a folder, every file and
    link below it does too); else a one-line :class:`BundleError` naming ``where``. Nothing outside is opened."""
    base = root.resolve()
    rel = Path(relative)
    if "\0" in relative or rel.is_absolute() or rel.drive or ".." in rel.parts:
        raise BundleError(f"{where}: path {relative!r:.200} leaves the bundle folder (absolute or '..')")
    target = root / rel
    resolved = target.resolve()
    if not resolved.is_relative_to(base):
        raise BundleError(f"{where}: path {relative!r:.200} leads outside the bundle folder (a symlink)")
    if resolved.is_dir():
        for dirpath, dirnames, filenames in os.walk(resolved):
            for name in (*dirnames, *filenames):
                inner = Path(dirpath) / name
                if inner.is_symlink() and not inner.resolve().is_relative_to(base):
                    raise BundleError(f"{where}: {inner.relative_to(resolved)} inside {relative} links outside "
                                      f"the bundle folder")
    return target


def load_bundle(path: str | os.PathLike[str] | Bundle) -> Bundle:
    """Read ``manifest.json`` of a bundle directory, check its shape, and resolve its artifacts, which must exist
    inside the bundle folder (symlinks resolved): a bundle is shared and downloaded, and must never make framegen
    read a file outside it. Given a loaded :class:`Bundle`, return it (a job reads its manifest once)."""
    if isinstance(path, Bundle):
        return path
    root = Path(path)
    manifest_path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"{root}: no such bundle directory")
    if not manifest_path.is_file():
        raise BundleError(f"{root}: not a framegen bundle (no {MANIFEST}); create one with `framegen export`")
    contained_path(root, MANIFEST, str(manifest_path))
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise BundleError(f"{manifest_path}: cannot be read ({exc.strerror})") from None
    if not isinstance(manifest, dict) or "artifacts" not in manifest or "source" not in manifest:
        raise BundleError(f"{manifest_path}: not a framegen manifest (needs 'source' and 'artifacts')")
    source = manifest["source"]
    if not isinstance(source, dict) or not isinstance(source.get("mode"), str):
        raise BundleError(f"{manifest_path}: 'source' must be an object with a string 'mode'")
    if not isinstance(manifest["artifacts"], list):
        raise BundleError(f"{manifest_path}: 'artifacts' must be a list, not {type(manifest['artifacts']).__name__}")
    artifacts = []
    for k, entry in enumerate(manifest["artifacts"]):
        _check_entry(manifest_path, k, entry)
        if "validation" in entry:
            ValidationRecord.from_dict(entry["validation"], f"{manifest_path}: artifacts[{k}].validation")
        compute = entry.get("compute", {})
        if not isinstance(compute, dict):
            raise BundleError(f"{manifest_path}: artifacts[{k}].compute must be an object (precision -> record)")
        for precision, record in compute.items():
            ValidationRecord.from_dict(record, f"{manifest_path}: artifacts[{k}].compute.{precision}")
        p = contained_path(root, entry["path"], f"{manifest_path}: artifacts[{k}]")
        if not p.exists():
            raise BundleError(f"{root}: manifest lists {entry['path']}, which is missing")
        artifacts.append(Artifact(entry["model"], entry["format"], entry["precision"], p,
                                  entry.get("io", "tensor"), entry))
    return Bundle(root, manifest, artifacts)
