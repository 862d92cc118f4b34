"""Errors of the exporters: one line naming the artifact or value, turned into exit code 2 by the CLI."""

from __future__ import annotations

from framegen.models.errors import FramegenError


class ExportError(FramegenError):
    """An export that cannot be done (bad options, an existing output, a model the format cannot hold)."""


class ExportValidationError(ExportError):
    """An exported artifact that does not compute what the PyTorch module computes (the export is refused)."""
