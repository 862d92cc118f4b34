"""The metadata every exported artifact carries (ONNX ``metadata_props``, Core ML ``user_defined_metadata``).

Keys are the same in both formats and all values are strings (both formats store string maps). ``contract`` is the
JSON of :func:`framegen.models.contract.contract_dict` for the artifact's mode, so a port can read every number it needs
from the model file itself.
"""

from __future__ import annotations

import json
from typing import Any

from framegen.models.contract import CONTRACT_VERSION, contract_dict
from framegen.models.version import __version__

MODELS = ("generator", "audio_encoder")
PRECISIONS = ("fp32", "fp16")

# metadata keys, identical in ONNX and Core ML artifacts
KEY_CONTRACT = "contract"
KEY_CONTRACT_VERSION = "contract_version"
KEY_MODEL = "model"
KEY_MODE = "mode"
KEY_PRECISION = "precision"
KEY_IO = "io"
KEY_SOURCE_SHA256 = "source_sha256"
KEY_VERSION = "framegen_version"


def contract_json(mode: str) -> str:
    """The contract for ``mode`` as compact, key-sorted JSON (the same bytes every time)."""
    return json.dumps(contract_dict(mode), sort_keys=True, separators=(",", ":"))


def artifact_metadata(model: str, mode: str, precision: str, source_sha256: str | None = None,
                      io: str = "tensor", extra: dict[str, Any] | None = None) -> dict[str, str]:
    """The string map embedded in an artifact: contract, model kind, mode, precision, I/O kind, source sha256."""
    if model not in MODELS:
        raise ValueError(f"unknown model kind {model!r}")
    meta = {
        KEY_MODEL: model,
        KEY_MODE: mode,
        KEY_PRECISION: precision,
        KEY_IO: io,
        KEY_CONTRACT_VERSION: CONTRACT_VERSION,
        KEY_CONTRACT: contract_json(mode),
        KEY_VERSION: __version__,
    }
    if source_sha256:
        meta[KEY_SOURCE_SHA256] = source_sha256
    for key, value in (extra or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return meta
