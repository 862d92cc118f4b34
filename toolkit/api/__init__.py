"""framegen's public Python API: the main jobs as plain functions with typed parameters and result objects.

``import framegen`` re-exports every name in :data:`__all__` (lazily). The CLI is a thin layer over these functions:
each command parses its options, calls one of them with the same defaults, and prints the result. Examples for
every function: docs/API.md (the test suite runs them).

The functions live in sub-modules by job (``sources``, ``artifacts``, ``rendering``, ``checks``, ``benchmarks``,
``serving``; shared helpers in ``common``); this package is the one place to import them from.
"""

from __future__ import annotations

from framegen.models.allocator import MallocTuning, keep_freed_memory
from framegen.models.errors import FramegenError
from framegen.models.version import __version__
from framegen.toolkit.api.artifacts import BackendList, BackendRow, backends, export, export_audio_frontend
from framegen.toolkit.api.benchmarks import bench, bench_stream, bench_triton
from framegen.toolkit.api.checks import golden_check, golden_write, parity
from framegen.toolkit.api.common import UsageError
from framegen.toolkit.api.rendering import demo, render, render_frames, stream, stream_session
from framegen.toolkit.api.serving import serve
from framegen.toolkit.api.sources import (
    audio_features,
    audio_mel,
    checkpoint_init,
    checkpoint_inspect,
    template_inspect,
    template_synth,
)

__all__ = [
    "BackendList",
    "BackendRow",
    "FramegenError",
    "MallocTuning",
    "UsageError",
    "__version__",
    "audio_features",
    "audio_mel",
    "backends",
    "bench",
    "bench_stream",
    "bench_triton",
    "checkpoint_init",
    "checkpoint_inspect",
    "demo",
    "export",
    "export_audio_frontend",
    "golden_check",
    "golden_write",
    "keep_freed_memory",
    "parity",
    "render",
    "render_frames",
    "serve",
    "stream",
    "stream_session",
    "template_inspect",
    "template_synth",
]
