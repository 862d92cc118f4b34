"""The C allocator's thresholds, which decide whether PyTorch's CPU activations are reused or page-faulted anew.

PyTorch's CPU kernels allocate and free their activations (megabytes to tens of megabytes each) on every forward and
backward pass. glibc returns blocks that large to the kernel when they are freed, so the next pass page-faults fresh
zeroed pages. Measured on a 2-core AMD EPYC (Zen 4): an fp32 forward pass of the generator spent almost as much time
in the kernel as in its convolutions (about 115,000 page faults per frame) and ran 2.0x faster with freed blocks
kept; a training step (batch 4, backward, AdamW) 2.3x (``scripts/measure_allocator.py``). ONNX Runtime and OpenVINO
keep arenas of their own and do not change.

Imports nothing heavy, so the CLI can apply it before any command loads a runtime.
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Freed blocks up to this size stay in the heap for reuse (and up to twice that may sit free at its top).
KEEP_FREED_BYTES = 1 << 30


@dataclass(frozen=True)
class MallocTuning:
    """Whether :func:`keep_freed_memory` changed the process's allocator, and why (not)."""

    applied: bool
    reason: str


_done: MallocTuning | None = None


def keep_freed_memory(threshold: int = KEEP_FREED_BYTES) -> MallocTuning:
    """Keep freed blocks up to ``threshold`` bytes in glibc's heap instead of returning them to the kernel.

    The price is memory that a pass freed stays with the process (about the pass's peak) until it exits, which is
    what an inference or training process holds anyway. Applies once per process, on Linux with glibc only; where
    ``GLIBC_TUNABLES`` sets ``glibc.malloc.*``, that is the user's choice and is left alone. The framegen CLI, its
    scripts and its test suite call it; a program that uses framegen as a library may call it too. Returns what
    happened; later calls return the first call's result.
    """
    global _done
    if _done is None:
        _done = _apply(int(threshold))
    return _done


def _apply(threshold: int) -> MallocTuning:
    if not sys.platform.startswith("linux"):
        return MallocTuning(False, f"{sys.platform}: the system allocator is left as it is")
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return MallocTuning(False, "GLIBC_TUNABLES sets glibc.malloc.*: left to it")
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        version = libc.gnu_get_libc_version().decode()
    except (OSError, AttributeError) as exc:  # musl and other C libraries have no gnu_get_libc_version
        return MallocTuning(False, f"not glibc ({exc})")
    ok = libc.mallopt(_M_MMAP_THRESHOLD, threshold) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2 * threshold) == 1
    if not ok:
        return MallocTuning(False, f"glibc {version} refused mallopt({threshold})")
    return MallocTuning(True, f"glibc {version}: freed blocks up to {threshold >> 20} MiB kept for reuse")
