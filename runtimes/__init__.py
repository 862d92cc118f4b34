"""Interchangeable inference backends behind one interface, and the registry that knows them."""

from framegen.runtimes.base import Backend, BackendError, BackendInfo, TensorMeta
from framegen.runtimes.registry import all_specs, list_backends, open_backend, resolve_auto
from framegen.runtimes.spec import Availability, BackendSpec, OpenRequest

__all__ = [
    "Availability",
    "Backend",
    "BackendError",
    "BackendInfo",
    "BackendSpec",
    "OpenRequest",
    "TensorMeta",
    "all_specs",
    "list_backends",
    "open_backend",
    "resolve_auto",
]
