"""The one planner: which backends (x precision x I/O variant) a job runs, and how each is opened.

render, parity, bench, demo and golden all choose their candidates here and open them with :func:`open_candidate`,
so parity checks exactly what a user renders with (same backend, same artifact, same render options). What a
backend can do comes from its registry spec (``verifier``, ``ios``, ``precisions``, ``render_options``,
``auto_rank``); nothing here tests a backend by name.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any

from framegen.models.bundle import load_bundle
from framegen.models.errors import FramegenError
from framegen.runtimes.artifacts import artifact_problem
from framegen.runtimes.base import Backend
from framegen.runtimes.registry import (
    AUTO,
    all_specs,
    availability,
    get_spec,
    open_backend,
    render_options,
    resolve_auto,
)
from framegen.runtimes.spec import OpenRequest

PURPOSES = ("render", "parity", "bench", "demo", "golden")
#: purposes whose default plan includes verifiers (they check artifacts; rendering or timing one proves nothing)
_CHECKS = ("parity", "golden")
#: purposes whose default plan includes image-I/O variants (a render or a benchmark runs the tensor contract)
_ALL_IOS = ("parity", "golden")
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "pal6", "pal4")
#: What a default plan (no precision named) runs: bf16 is asked for by name. It needs no artifact of its own (every
#: fp32 bundle would offer it), and what it is worth belongs to the checkpoint (docs/PARITY.md), so it is never
#: slipped into a job that did not ask for it.
DEFAULT_PRECISIONS = tuple(p for p in PRECISIONS if p != "bf16")
IOS = ("tensor", "image")


class PlanError(FramegenError):
    """A requested backend that does not exist, is unavailable here, or has nothing to run from the given source."""


@dataclass(frozen=True)
class Candidate:
    """One thing to run: a registry backend at a precision, on the tensor or the image-I/O generator."""

    backend: str
    precision: str = "fp32"
    io: str = "tensor"

    @property
    def label(self) -> str:
        """``ort-cpu:fp16``, ``ort-cpu:fp32:image``."""
        return f"{self.backend}:{self.precision}" + ("" if self.io == "tensor" else f":{self.io}")


@dataclass(frozen=True)
class Request:
    """A candidate as the user named it: precision and I/O ``None`` mean every one the source can feed."""

    backend: str
    precision: str | None = None
    io: str | None = None


@dataclass
class Plan:
    """The candidates of a job, and a note for each backend left out (unavailable here, nothing to run)."""

    candidates: list[Candidate]
    notes: list[str] = field(default_factory=list)


def parse_candidates(text: str | None) -> list[Request] | None:
    """``"ort-cpu,coreml-mil:fp16,ort-cpu:fp32:image"`` -> requests; ``None`` (or empty) for the default plan."""
    if text is None or not text.strip():
        return None
    out: list[Request] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, *tags = (t.strip() for t in part.split(":"))
        precision: str | None = None
        io: str | None = None
        for tag in tags:
            if tag in PRECISIONS:
                precision = tag
            elif tag in IOS:
                io = tag
            else:
                raise PlanError(f"--backends {part!r}: {tag!r} is neither a precision ({', '.join(PRECISIONS)}) "
                                f"nor an I/O variant ({', '.join(IOS)})")
        out.append(Request(name, precision, io))
    if not out:
        raise PlanError(f"--backends {text!r} names no backend")
    return out


def _source(bundle: str | os.PathLike[str] | None, checkpoint: str | os.PathLike[str] | None, precision: str,
            io: str, model: Any = None, options: dict[str, Any] | None = None) -> Any:
    return OpenRequest(checkpoint=checkpoint, bundle=bundle, precision=precision, io=io, model=model,
                       options=dict(options or {}))


def plan_candidates(purpose: str, *, bundle: str | os.PathLike[str] | None = None,
                    checkpoint: str | os.PathLike[str] | None = None, requested: list[Request] | None = None,
                    precisions: list[str] | None = None, ios: list[str] | None = None, model: Any = None,
                    options: dict[str, Any] | None = None) -> Plan:
    """The candidates ``purpose`` runs from a bundle and/or checkpoint.

    Without ``requested``: every backend available here x every precision (of ``precisions``, default all but
    bf16) and I/O variant (of ``ios``, default: tensor, plus image for parity and golden) the source can feed it;
    verifiers only
    for parity and golden. With ``requested``: exactly those (``auto`` resolves to one backend), and anything that
    cannot run is a :class:`PlanError` naming it.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r}")
    if bundle is None and checkpoint is None and model is None:
        raise PlanError(f"{purpose}: give a checkpoint and/or a bundle")
    if bundle is not None:
        # Once for every backend probed below; a bad bundle is left to each candidate's problem, which names it.
        with contextlib.suppress(FramegenError):
            bundle = load_bundle(bundle)
    want_precisions = list(precisions or DEFAULT_PRECISIONS)
    want_ios = list(ios or (IOS if purpose in _ALL_IOS else ("tensor",)))
    plan = Plan([])
    if requested is None:
        for spec in all_specs():
            if spec.verifier and purpose not in _CHECKS:
                plan.notes.append(f"{spec.name}: a verifier ({purpose} runs it only when named)")
                continue
            avail = availability(spec, options)
            if not avail.available:
                plan.notes.append(f"{spec.name}: not available here ({avail.reason})")
                continue
            found = [Candidate(spec.name, p, io) for io in want_ios for p in want_precisions
                     if artifact_problem(spec, _source(bundle, checkpoint, p, io, model, options)) is None]
            if not found:
                plan.notes.append(f"{spec.name}: nothing it runs in this source")
            plan.candidates += found
        if not plan.candidates:
            raise PlanError(f"{purpose}: no available backend can run anything here ({'; '.join(plan.notes)})")
        return plan
    for req in requested:
        name = req.backend
        if name == AUTO:
            name = resolve_auto(_source(bundle, checkpoint, req.precision or "fp32", req.io or "tensor", model,
                                        options))
        spec = get_spec(name)
        avail = availability(spec, options)
        if not avail.available:
            raise PlanError(f"backend {name!r} is not available here: {avail.reason}")
        combos = [(p, io) for io in ([req.io] if req.io else want_ios)
                  for p in ([req.precision] if req.precision else want_precisions)]
        problems = {}
        found = []
        for p, io in combos:
            problem = artifact_problem(spec, _source(bundle, checkpoint, p, io, model, options))
            if problem is None:
                found.append(Candidate(name, p, io))
            else:
                problems[(p, io)] = problem
        if not found:
            why = "; ".join(dict.fromkeys(problems.values()))
            raise PlanError(f"backend {name!r} has nothing to run here ({why})")
        plan.candidates += [c for c in found if c not in plan.candidates]
    return plan


def open_candidate(candidate: Candidate, *, bundle: str | os.PathLike[str] | None = None,
                   checkpoint: str | os.PathLike[str] | None = None, mode: str | None = None,
                   options: dict[str, Any] | None = None, for_render: bool = True, model: Any = None) -> Backend:
    """Open ``candidate`` as every job does: from the bundle / checkpoint, with the spec's render options when it
    feeds the render pipeline (``for_render``; bench's model-only timing turns them off), plus ``options``."""
    opts = {**(render_options(candidate.backend) if for_render else {}), **(options or {})}
    request = OpenRequest(checkpoint=checkpoint, bundle=bundle, precision=candidate.precision, io=candidate.io,
                          mode=mode, model=model, options=opts)
    return open_backend(candidate.backend, request)


def render_workers(backend: str) -> int:
    """How many inferences at once ``backend`` runs in the render's layout (its spec's render options): 1 where the
    render runs one at a time anyway (torch-cpu), so a live stream has no wider layout to try."""
    return max(1, int(render_options(backend).get("workers") or 1))
