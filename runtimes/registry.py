"""Every backend framegen knows, which are available here, and why the others are not."""

from __future__ import annotations

import importlib
from typing import Any

from runtimes.base import Backend, BackendError
from runtimes.spec import Availability, BackendSpec, OpenRequest

# One module per runtime; each exports SPECS.
_RUNTIME_MODULES = ("runtimes.torch_backend", "runtimes.coreml_mil")


def all_specs() -> list[BackendSpec]:
    """Registry entries in a stable order."""
    specs: list[BackendSpec] = []
    for name in _RUNTIME_MODULES:
        specs.extend(importlib.import_module(name).SPECS)
    return specs


def get_spec(name: str) -> BackendSpec:
    """The entry for a backend name, or a one-line error listing the known names."""
    specs = {s.name: s for s in all_specs()}
    if name not in specs:
        raise BackendError(f"unknown backend {name!r}; known: {', '.join(specs)}")
    return specs[name]


def availability(spec: BackendSpec) -> Availability:
    """Run a spec's probe; a probe that crashes makes the backend unavailable, with the reason."""
    try:
        return spec.probe()
    except Exception as exc:  # a broken runtime install must not break `framegen backends`
        return Availability(False, f"probe failed: {type(exc).__name__}: {exc}")


def list_backends() -> list[dict[str, Any]]:
    """``[{name, available, reason, runtime, device, needs, precisions, description}]`` for every backend."""
    rows = []
    for spec in all_specs():
        avail = availability(spec)
        rows.append({"name": spec.name, "available": avail.available, "reason": avail.reason,
                     "runtime": spec.runtime, "device": spec.device, "needs": spec.needs,
                     "precisions": list(spec.precisions), "description": spec.description})
    return rows


def open_backend(name: str, request: OpenRequest) -> Backend:
    """Open a backend by name; refuses with the probe's reason when it is unavailable here."""
    spec = get_spec(name)
    avail = availability(spec)
    if not avail.available:
        raise BackendError(f"backend {name!r} is not available here: {avail.reason}")
    return spec.opener(request)
