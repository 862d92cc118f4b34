"""What a parity run found: candidates, per-stage results, checksums, the report (shared by the parity engine and
the image-I/O runner, so that neither imports the other)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framegen.toolkit.common.files import jsonable
from framegen.toolkit.compare.profiles import FINAL_FRAME, Profile
from framegen.toolkit.compare.tolerance import Tolerances
from framegen.toolkit.frames.plan import Candidate

REFERENCE = "torch-cpu"


@dataclass
class StageResult:
    """One stage of one candidate: its metrics, the limits applied and the limits it broke."""

    stage: str
    kind: str
    metrics: dict[str, Any]
    limits: dict[str, float]
    failures: list[str]

    @property
    def passed(self) -> bool:
        """No limit broken."""
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"stage": self.stage, "kind": self.kind, "passed": self.passed, "metrics": jsonable(self.metrics),
                "limits": self.limits, "failures": self.failures}


@dataclass
class CandidateResult:
    """Everything parity found about one candidate."""

    candidate: Candidate
    profile: str
    frames: int = 0
    info: dict[str, Any] | None = None
    stages: list[StageResult] = field(default_factory=list)
    outside_box_diffs: int = 0
    error: str | None = None
    heatmap: str | None = None
    #: the model output's heat map (the frame whose output departs most): prediction images and their difference
    heatmap_output: str | None = None
    locate: Any = None  # a framegen.toolkit.parity.layers.LocateResult when a layer search ran
    limits_profile: Profile | None = None
    #: the saved-outputs file (``--load-outputs``) the outputs came from, instead of running the backend here
    loaded_from: str | None = None
    #: with ``--save-outputs``: this live candidate's outputs by frame digest, until they are written
    recorded: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """The candidate's label (``ort-cpu:fp16``), ``@file`` appended for loaded outputs."""
        base = self.candidate.label
        return base if self.loaded_from is None else f"{base}@{Path(self.loaded_from).name}"

    @property
    def passed(self) -> bool:
        """Ran, compared every frame, broke no limit, left the frame outside the box untouched."""
        return self.error is None and self.outside_box_diffs == 0 and all(s.passed for s in self.stages)

    def failures(self) -> list[str]:
        """One line per problem."""
        lines = [f"{self.label}: {self.error}"] if self.error else []
        if self.outside_box_diffs:
            lines.append(f"{self.label} {FINAL_FRAME}: {self.outside_box_diffs} value(s) outside the crop "
                         f"box differ")
        lines += [f"{self.label} {s.stage}: {'; '.join(s.failures)}" for s in self.stages if s.failures]
        return lines

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"backend": self.candidate.backend, "precision": self.candidate.precision, "io": self.candidate.io,
                "label": self.label, "loaded_from": self.loaded_from, "profile": self.profile, "passed": self.passed,
                "frames": self.frames,
                "error": self.error, "outside_box_diffs": self.outside_box_diffs, "heatmap": self.heatmap,
                "heatmap_output": self.heatmap_output,
                "info": jsonable(self.info), "stages": [s.as_dict() for s in self.stages],
                "locate": self.locate.as_dict() if self.locate is not None else None,
                "first_divergence": self.locate.first_divergence if self.locate is not None else None}


@dataclass(frozen=True)
class ChecksumResult:
    """One bundle artifact's sha256 against its manifest entry."""

    path: str
    model: str
    format: str
    precision: str
    expected: str | None
    actual: str

    @property
    def ok(self) -> bool:
        """The artifact is what the manifest says."""
        return self.expected == self.actual

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"path": self.path, "model": self.model, "format": self.format, "precision": self.precision,
                "expected": self.expected, "actual": self.actual, "ok": self.ok}


@dataclass
class ParityReport:
    """The outcome of a parity run."""

    reference: dict[str, Any]
    inputs: dict[str, Any]
    frames: list[dict[str, int]]
    checksums: list[ChecksumResult]
    candidates: list[CandidateResult]
    notes: list[str] = field(default_factory=list)
    tolerances: Tolerances | None = None
    saved_outputs: str | None = None
    #: print every candidate's per-layer table, not only failed ones' (``--locate``)
    show_layers: bool = False

    @property
    def passed(self) -> bool:
        """Every checksum matches and every candidate passes (and there was at least one)."""
        return bool(self.candidates) and all(c.ok for c in self.checksums) and all(c.passed for c in self.candidates)

    def failures(self) -> list[str]:
        """One line per problem, checksums first."""
        lines = [f"checksum {c.path}: sha256 {c.actual[:12]}… does not match the manifest's "
                 f"{str(c.expected)[:12]}…" for c in self.checksums if not c.ok]
        for cand in self.candidates:
            lines += cand.failures()
        return lines

    def as_dict(self) -> dict[str, Any]:
        """The JSON report: inputs, frames, tolerances used, per backend and stage metrics, failures."""
        profiles = {c.profile: c.limits_profile.as_dict() for c in self.candidates if c.limits_profile is not None}
        return {"passed": self.passed, "failures": self.failures(), "reference": jsonable(self.reference),
                "inputs": self.inputs, "frames": self.frames, "checksums": [c.as_dict() for c in self.checksums],
                "tolerances": profiles,
                "tolerance_rule": self.tolerances.as_dict() if self.tolerances is not None else None,
                "candidates": [c.as_dict() for c in self.candidates], "notes": self.notes,
                "saved_outputs": self.saved_outputs}



def judge_stages(result: CandidateResult, profile: Profile, stats: Any) -> None:
    """Append one judged :class:`StageResult` per ``(stage, ErrorStats)`` that saw values, under ``profile``."""
    result.limits_profile = profile
    result.profile = profile.name
    for stage, st in stats:
        if st.count == 0:
            continue
        limits = profile.limits(stage)
        summary = st.summary()
        result.stages.append(StageResult(stage, st.kind, summary, limits.as_dict(), limits.check(summary)))
