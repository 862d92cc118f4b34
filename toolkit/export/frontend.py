"""``export_audio_frontend``: the audio front-end alone (``audio_frontend`` and ``audio_features`` for an audio
encoder checkpoint) as a validated front-end bundle; ``framegen export --audio-frontend`` adds the same artifacts
to a full bundle (:func:`framegen.toolkit.export.validate_frontend.export_frontend_entries`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from framegen.exporters.errors import ExportError, ExportValidationError
from framegen.models.atomic import atomic_output
from framegen.models.bundle import MANIFEST
from framegen.models.metadata import contract_json
from framegen.toolkit.export.bundle import HASHING, MANIFEST_VERSION, tool_versions
from framegen.toolkit.export.validate_frontend import FORMATS, METADATA_KEY, export_frontend_entries


def export_audio_frontend(audio_encoder: str | os.PathLike[str], out: str | os.PathLike[str], *,
                          formats: Sequence[str] = FORMATS, opset: int | None = None, force: bool = False,
                          speech: str | os.PathLike[str] | None = None,
                          progress: Callable[[str], None] | None = None,
                          frontend: Any = None) -> Path:
    """Export the audio front-end alone (``audio_frontend`` and ``audio_features`` for an encoder checkpoint) to a
    validated front-end bundle at ``out`` (artifacts + ``manifest.json``, readable by ``load_bundle``).

    Each artifact is validated as in :func:`export_frontend_entries`; one that departs fails the export with
    ``ExportValidationError`` and nothing is left at ``out``. ``force`` replaces an existing bundle.
    """
    from framegen.models.audio_frontend import frontend_contract
    from framegen.models.checkpoint import load_audio_encoder, sha256_file

    fmts = []
    for f in formats:
        f = f.strip().lower()
        if f not in FORMATS:
            raise ExportError(f"unknown format {f!r} for the audio front-end; expected {', '.join(FORMATS)}")
        if f not in fmts:
            fmts.append(f)
    if not fmts:
        raise ExportError(f"no format given; expected some of {', '.join(FORMATS)}")
    dest = Path(out)
    if dest.exists() and not force:
        raise ExportError(f"{dest}: already exists (use --force to replace it)")
    if dest.exists() and not (dest / MANIFEST).is_file() and any(dest.iterdir()):
        raise ExportError(f"{dest}: exists and is not a framegen bundle; refusing to replace it")
    encoder = load_audio_encoder(audio_encoder)
    sha = sha256_file(audio_encoder)
    say = progress or (lambda _m: None)
    try:
        with atomic_output(dest, directory=True) as work:
            artifacts = export_frontend_entries(fmts, encoder, sha, work, dest, say, opset=opset, speech=speech,
                                                frontend=frontend)
            manifest = {
                "manifest_version": MANIFEST_VERSION,
                "contract": {**json.loads(contract_json("ave")), METADATA_KEY: frontend_contract()},
                "source": {"checkpoint": Path(audio_encoder).name, "sha256": sha, "mode": "ave",
                           "mode_assumed": False,
                           "audio_encoder": {"checkpoint": Path(audio_encoder).name, "sha256": sha}},
                "tools": {**tool_versions(), "export": {
                    "route": "torch.jit.trace -> torch.onnx.export (dynamo=False) / coremltools.convert (mlprogram, "
                             "fp32)",
                    "why": "the window count is a table lookup of the mel length: a trace records it as ops, "
                           "torch.export cannot for a symbolic length"}},
                "hashing": HASHING,
                "artifacts": artifacts,
            }
            (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    except ExportValidationError as exc:
        raise ExportValidationError(f"{exc}; export refused, nothing written") from None
    say(f"wrote {dest}")
    return dest
