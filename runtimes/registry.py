"""Every backend framegen knows, which are available here, and why the others are not."""

from __future__ import annotations

import importlib
from typing import Any

from framegen.runtimes.artifacts import artifact_problem
from framegen.runtimes.base import Backend, BackendError
from framegen.runtimes.spec import Availability, BackendSpec, OpenRequest

# One module per runtime; each exports SPECS.
_RUNTIME_MODULES = (
    "framegen.runtimes.torch_backend",
    "framegen.runtimes.ort_backend",
    "framegen.runtimes.coreml_backend",
    "framegen.runtimes.mil.backend",
    "framegen.runtimes.triton_backend",
    "framegen.runtimes.openvino_backend",
)

AUTO = "auto"


def all_specs() -> list[BackendSpec]:
    """Registry entries in a stable order."""
    specs: list[BackendSpec] = []
    for name in _RUNTIME_MODULES:
        specs.extend(importlib.import_module(name).SPECS)
    return specs


def auto_order() -> list[str]:
    """The backends ``auto`` tries, in order: every spec with an ``auto_rank``, lowest first (the expected speed for
    this model; verifiers have none and are never picked)."""
    ranked = [s for s in all_specs() if s.auto_rank is not None]
    return [s.name for s in sorted(ranked, key=lambda s: s.auto_rank)]


def render_options(name: str) -> dict[str, Any]:
    """``OpenRequest.options`` for a backend that feeds the render pipeline (several frames in flight), as its spec
    declares them; bench's model-only timing opens backends without them."""
    spec = get_spec(name)
    return dict(spec.render_options()) if spec.render_options is not None else {}


def get_spec(name: str) -> BackendSpec:
    """The entry for a backend name, or a one-line error listing the known names."""
    specs = {s.name: s for s in all_specs()}
    if name not in specs:
        raise BackendError(f"unknown backend {name!r}; known: {', '.join([AUTO, *specs])}")
    return specs[name]


def availability(spec: BackendSpec, options: dict[str, Any] | None = None) -> Availability:
    """Run a spec's probe (with a request's ``options`` when the backend depends on them, e.g. the Triton server's
    URL); a probe that crashes makes the backend unavailable, with the reason."""
    try:
        if spec.probe_options is not None and options is not None:
            return spec.probe_options(options)
        return spec.probe()
    except Exception as exc:  # a broken runtime install must not break `framegen backends`
        return Availability(False, f"probe failed: {type(exc).__name__}: {exc}")


def list_backends(request: OpenRequest | None = None) -> list[dict[str, Any]]:
    """``[{name, available, reason, runtime, device, needs, precisions, description}]`` for every backend.

    With a ``request`` (a bundle and/or checkpoint and a precision) each row also says whether that backend can be
    opened from it (``artifact``: ``None`` when it can, else why not) and which one ``auto`` would pick (``auto``).
    """
    rows = []
    for spec in all_specs():
        avail = availability(spec, request.options if request is not None else None)
        row: dict[str, Any] = {"name": spec.name, "available": avail.available, "reason": avail.reason,
                               "runtime": spec.runtime, "device": spec.device, "needs": spec.needs,
                               "verifier": spec.verifier, "ios": list(spec.ios), "auto_rank": spec.auto_rank,
                               "precisions": list(spec.precisions), "description": spec.description}
        if request is not None:
            row["artifact"] = artifact_problem(spec, request)
        rows.append(row)
    if request is not None:
        usable = {r["name"] for r in rows if r["available"] and r["artifact"] is None}
        choice = next((n for n in auto_order() if n in usable), None)
        for r in rows:
            r["auto"] = r["name"] == choice
    return rows


def resolve_auto(request: OpenRequest) -> str:
    """The backend ``auto`` means for this request: the first of :func:`auto_order` that is available here and
    whose artifact the request holds; a one-line error saying why each was passed over when none fits."""
    specs = {s.name: s for s in all_specs()}
    passed: list[str] = []
    for name in auto_order():
        spec = specs.get(name)
        if spec is None:
            continue
        if spec.auto_precisions is not None and request.precision not in spec.auto_precisions:
            passed.append(f"{name}: runs {request.precision} only when named")
            continue
        avail = availability(spec, request.options)
        if not avail.available:
            passed.append(f"{name}: {avail.reason}")
            continue
        problem = artifact_problem(spec, request)
        if problem is None:
            return name
        passed.append(f"{name}: {problem}")
    raise BackendError(f"auto: no backend can run this ({'; '.join(passed)})")


def open_backend(name: str, request: OpenRequest) -> Backend:
    """Open a backend by name (``auto`` resolves first); refuses with the probe's reason when it is unavailable."""
    if name == AUTO:
        name = resolve_auto(request)
    spec = get_spec(name)
    avail = availability(spec, request.options)
    if not avail.available:
        raise BackendError(f"backend {name!r} is not available here: {avail.reason}")
    return spec.opener(request)
