"""`keep_freed_memory`: freed large blocks are reused instead of page-faulted anew, and a user's own glibc tunables
win. Each case runs in a fresh process, since the setting is per process (and this one already has it)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                                reason="the allocator setting applies to Linux with glibc only")

_CHILD = r"""
import json, resource, sys
import numpy as np
from framegen.models.allocator import keep_freed_memory
tuning = keep_freed_memory() if sys.argv[1] == "keep" else None
again = keep_freed_memory() if tuning else None
def one_pass():  # as a forward pass does: twelve 5 MB activations allocated, written, then all freed
    blocks = [np.ones(5 << 17) for _ in range(12)]
    del blocks
one_pass()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(6):
    one_pass()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
print(json.dumps({"faults": faults, "applied": tuning.applied if tuning else None,
                  "reason": tuning.reason if tuning else None, "same": again == tuning}))
"""


def _child(mode: str, env: dict[str, str] | None = None) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_freed_blocks_are_reused_instead_of_page_faulted_again():
    env = {"GLIBC_TUNABLES": ""}
    default, kept = _child("default", env), _child("keep", env)
    assert kept["applied"] and kept["same"] and "kept for reuse" in kept["reason"]
    # six passes of 60 MB: up to 92,160 fresh 4 KiB pages (fewer where numpy gets transparent huge pages)
    assert default["faults"] > 10_000, default
    assert kept["faults"] < 1_000, kept


def test_a_users_own_glibc_malloc_tunables_win():
    got = _child("keep", {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"})
    assert got["applied"] is False and "GLIBC_TUNABLES" in got["reason"]
