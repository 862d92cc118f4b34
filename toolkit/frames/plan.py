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
from framegen.runtimes.native import cpu_flags, cpu_units
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


# ------------------------------------------------------------------------------------------- auto precision

#: ``--precision auto``: the fastest precision this CPU computes natively whose quality this bundle has proven.
AUTO_PRECISION = "auto"


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``--precision auto`` means for one bundle on this machine: the precision, why, and each one considered
    (``precision: verdict``) in the order tried."""

    precision: str
    reason: str
    considered: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line: the choice and why, then what else was weighed."""
        return f"{self.precision}: {self.reason}" + (f" ({'; '.join(self.considered)})" if self.considered else "")


def precision_order(flags: frozenset[str] | None = None) -> tuple[list[str], str]:
    """The precisions worth trying on this CPU, fastest first, and the measurement behind the order.

    On AMX (bf16 and int8 tiles) OpenVINO ran the generator at the same speed in bf16 and int8 (40.7 and 41.4 fps
    against ONNX Runtime fp32's 18.9, ``framegen bench``, 2026-12-06), and bf16 keeps far more of the picture (55 vs
    20 dB on the trained demo checkpoint), so bf16 comes first there. Elsewhere int8 comes first: on AVX2 CPUs
    without VNNI OpenVINO's int8 was 2.0-2.6x ONNX Runtime fp32, and bf16 without AMX is unmeasured here.
    """
    have = cpu_flags() if flags is None else flags
    if "amx_bf16" in have:
        return ["bf16", "int8", "fp32"], "AMX: bf16 as fast as int8 and closer to fp32"
    bf16 = cpu_units("bf16", have)
    int8 = cpu_units("int8", have)
    order = ["int8", *(["bf16"] if bf16.native else []), "fp32"]
    return order, (f"int8 first ({int8.reason if int8.native else 'int8 on fp32 SIMD units'}); "
                   f"{'bf16 next' if bf16.native else 'no bf16 units'}")


def _proven(bundle: Any, precision: str) -> str | None:
    """Why ``bundle`` cannot back ``precision`` (``None`` when its export proved it above the default floor)."""
    from framegen.toolkit.compare.floors import DEFAULT_FLOORS

    if precision == "fp32":
        return None
    if precision == "bf16":
        art = next((a for a in bundle.artifacts if (a.model, a.format, a.precision, a.io) ==
                    ("generator", "onnx", "fp32", "tensor")), None)
        record = art.compute_validation("bf16") if art is not None else None
        if record is None:
            return "not judged at export (framegen export --precision fp32,bf16)"
    else:
        art = next((a for a in bundle.artifacts if (a.model, a.format, a.precision, a.io) ==
                    ("generator", "onnx", precision, "tensor")), None)
        if art is None:
            return f"no {precision} ONNX generator in the bundle"
        record = art.validation
        if record is None:
            return "no quality verdict in the manifest"
    if not record.passed:
        return f"below its floor ({record.reason})"
    floor = record.check("psnr_db")
    if floor is None or floor.limit is None or floor.limit < DEFAULT_FLOORS[precision][0]:
        return f"judged by a floor lowered below the default {DEFAULT_FLOORS[precision][0]:g} dB"
    return None


def choose_precision(bundle: str | os.PathLike[str] | None, *, options: dict[str, Any] | None = None,
                     flags: frozenset[str] | None = None) -> PrecisionChoice:
    """``--precision auto``: the first of :func:`precision_order` that this CPU computes natively, that a backend
    available here runs, and whose quality the bundle's export proved against the default floor (int8: its
    artifact's gate; bf16: the fp32 artifact's ``compute.bf16`` record). fp32 otherwise, and always without a
    bundle (a checkpoint alone proves nothing about compressed compute)."""
    order, why = precision_order(flags)
    if bundle is None:
        return PrecisionChoice("fp32", "no bundle: only a bundle's export proves bf16 / int8 quality")
    b = load_bundle(bundle)
    considered = []
    for p in order:
        units = cpu_units(p, cpu_flags() if flags is None else flags)
        problem = (None if p == "fp32" or units.native or p == "int8" else units.reason) or _proven(b, p)
        if problem is None and p != "fp32":
            req = _source(b, None, p, "tensor", None, options)
            try:
                resolve_auto(req)
            except FramegenError as exc:
                problem = f"no backend here runs it ({exc})"
        if problem is None:
            verdict = "the fp32 contract" if p == "fp32" else f"proven at export; {units.reason}"
            return PrecisionChoice(p, f"{verdict}; order on this CPU: {' > '.join(order)} ({why})",
                                   tuple(considered))
        considered.append(f"{p}: {problem}")
    return PrecisionChoice("fp32", "the fp32 contract", tuple(considered))
