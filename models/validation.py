"""The manifest's ``validation`` record: one typed shape for every kind of artifact.

Every artifact of a bundle records how export checked it: what ran it, each judged figure with its limit (an upper
bound, or a lower one for a PSNR floor) and where that limit came from, whether it passed, and the kind's own details
(batches, per-signal errors, the fp16 emulation, ...). Readers (the export table, JUnit XML, parity) read the checks
and never guess at kind-specific keys. Records written before the schema existed load as kind ``legacy`` with their
keys kept in ``details`` and no checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from framegen.models.errors import FramegenError

SCHEMA = "framegen-validation/1"
#: ``tensor``: float outputs against PyTorch; ``image``: uint8 outputs against the reference pipeline, in levels;
#: ``frontend``: audio front-end outputs against framegen's mel / features; ``quality-floor``: a compressed artifact's
#: final frames against its quality floor; ``legacy``: a record written before this schema
KINDS = ("tensor", "image", "frontend", "quality-floor", "legacy")
BOUNDS = ("max", "min")


class ValidationRecordError(FramegenError):
    """A manifest's validation record that does not have the documented shape."""


@dataclass(frozen=True)
class Check:
    """One judged figure: ``value`` must stay at or below ``limit`` (``bound='max'``) or at or above it (``'min'``)."""

    name: str
    value: float | None
    limit: float
    bound: str = "max"
    source: str = ""

    @property
    def passed(self) -> bool:
        """Within its limit (a missing or non-finite value never passes)."""
        if self.value is None or not math.isfinite(self.value):
            return False
        return self.value <= self.limit if self.bound == "max" else self.value >= self.limit

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"name": self.name, "value": self.value, "limit": self.limit, "bound": self.bound,
                "source": self.source}

    def describe(self) -> str:
        """``max_abs 1.1e-05 <= 0.0001``."""
        shown = "-" if self.value is None else f"{self.value:.3g}"
        return f"{self.name} {shown} {'<=' if self.bound == 'max' else '>='} {self.limit:g}"


@dataclass(frozen=True)
class ValidationRecord:
    """How export checked one artifact."""

    kind: str
    passed: bool
    runtime: str | None
    checks: tuple[Check, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None

    def check(self, name: str) -> Check | None:
        """The check called ``name``, if the record has one."""
        return next((c for c in self.checks if c.name == name), None)

    def failures(self) -> list[str]:
        """The reason when export refused it, and every check outside its limit."""
        out = [self.reason] if self.reason else []
        return out + [c.describe() for c in self.checks if not c.passed]

    def as_dict(self) -> dict[str, Any]:
        """The JSON form written into the manifest."""
        return {"schema": SCHEMA, "kind": self.kind, "passed": self.passed, "runtime": self.runtime,
                "checks": [c.as_dict() for c in self.checks], "reason": self.reason, "details": self.details}

    @classmethod
    def from_dict(cls, data: Any, where: str = "validation") -> ValidationRecord:
        """Read a record (raises :class:`ValidationRecordError` naming ``where`` when its shape is wrong)."""
        if not isinstance(data, dict):
            raise ValidationRecordError(f"{where}: is {type(data).__name__}, not an object")
        if "schema" not in data:
            return cls("legacy", bool(data.get("passed", True)), _str_or_none(data.get("runtime")),
                       details=dict(data))
        if data["schema"] != SCHEMA:
            raise ValidationRecordError(f"{where}: schema {data['schema']!r}, this framegen reads {SCHEMA!r}")
        kind, checks = data.get("kind"), data.get("checks")
        if kind not in KINDS:
            raise ValidationRecordError(f"{where}: kind {kind!r}, expected one of {', '.join(KINDS)}")
        if not isinstance(checks, list) or not isinstance(data.get("passed"), bool):
            raise ValidationRecordError(f"{where}: needs 'passed' (true/false) and 'checks' (a list)")
        parsed = []
        for i, c in enumerate(checks):
            try:
                value = c["value"]
                parsed.append(Check(str(c["name"]), None if value is None else float(value), float(c["limit"]),
                                    str(c.get("bound", "max")), str(c.get("source", ""))))
            except (TypeError, KeyError, ValueError):
                raise ValidationRecordError(f"{where}: check {i} needs name, value and a numeric limit") from None
            if parsed[-1].bound not in BOUNDS:
                raise ValidationRecordError(f"{where}: check {parsed[-1].name!r} has bound {parsed[-1].bound!r}")
        details = data.get("details") or {}
        if not isinstance(details, dict):
            raise ValidationRecordError(f"{where}: 'details' must be an object")
        return cls(kind, data["passed"], _str_or_none(data.get("runtime")), tuple(parsed), details,
                   _str_or_none(data.get("reason")))


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def entry_records(entry: dict[str, Any]) -> list[tuple[str, ValidationRecord]]:
    """A manifest entry's records, each with the name a table or JUnit case shows: its own validation
    (``generator.fp32.onnx``), then how export judged it computed in another precision
    (``generator.fp32.onnx (bf16 compute)``)."""
    path = str(entry.get("path"))
    out = [(path, ValidationRecord.from_dict(entry.get("validation") or {}, f"{path}: validation"))]
    for precision, record in (entry.get("compute") or {}).items():
        out.append((f"{path} ({precision} compute)", ValidationRecord.from_dict(record, f"{path}: compute."
                                                                                         f"{precision}")))
    return out
