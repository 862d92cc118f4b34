"""Render fixtures: a cheap deterministic stand-in backend, the calibrated torch-cpu backend, small features, and a
peak-memory probe that renders in a fresh subprocess."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

__all__ = ["fake_features", "render_backend"]


def fake_prediction(image: np.ndarray, audio: np.ndarray) -> np.ndarray:
    """What :class:`FakeBackend` returns: per sample, the inverted reference crop shifted by its audio's mean.

    Each output depends only on its own sample's image and audio, so a frame that went to the wrong slot, got the
    wrong template frame or the wrong audio window comes out different.
    """
    shift = np.tanh(audio.reshape(audio.shape[0], -1).mean(axis=1, dtype=np.float64)).astype(np.float32)
    pred = 0.9 - 0.8 * image[:, :3] + 0.1 * shift[:, None, None, None]
    return np.clip(pred, 0.0, 1.0).astype(np.float32)


def make_fake_backend(mode: str = "ave", fail_at_call: int | None = None,
                      exc: type[BaseException] = RuntimeError, delay: float = 0.0):
    """A :class:`runtimes.base.Backend` computing :func:`fake_prediction`; call ``fail_at_call`` raises ``exc``."""
    from framegen.runtimes.base import Backend, BackendInfo, generator_io

    class FakeBackend(Backend):
        def __init__(self) -> None:
            inputs, outputs = generator_io(mode)
            super().__init__(BackendInfo("fake", "cpu", "fp32", mode, "test", inputs, outputs))
            self.calls: list[int] = []  # batch size of every call
            self._lock = threading.Lock()
            self.default_batch = 3

        def _infer(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
            with self._lock:
                self.calls.append(image.shape[0])
                call = len(self.calls)
            if fail_at_call is not None and call == fail_at_call:
                raise exc(f"fake backend fails at call {call}")
            if delay:
                threading.Event().wait(delay)
            return fake_prediction(image, audio)

    return FakeBackend()


@pytest.fixture(scope="session")
def render_backend(calibrated_generator):
    """The calibrated seeded 'ave' generator on torch-cpu (the real model, shared by the render tests)."""
    from framegen.runtimes.registry import open_backend
    from framegen.runtimes.spec import OpenRequest

    backend = open_backend("torch-cpu", OpenRequest(model=calibrated_generator, source="calibrated seed 0"))
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def fake_features() -> np.ndarray:
    """40 rows of seeded, non-negative 'ave'-like features (mean ~0.4, like the real ones)."""
    return (np.abs(np.random.default_rng(5).normal(size=(40, 512))) * 0.5).astype(np.float32)


# ---------------------------------------------------------------------------------------------- memory probe

def memory_probe(template_dir: str, frames: int, out_dir: str) -> dict[str, float]:
    """Render ``frames`` frames (fake backend, mp4 with no audio) in this process; report peak RSS in MB.

    Runs in a fresh subprocess (see :func:`peak_rss_mb`), so the peak belongs to this render alone.
    """
    from framegen.toolkit.frames.render import render
    from framegen.toolkit.inputs.preprocess import PreparedTemplate
    from framegen.toolkit.inputs.template import open_template

    backend = make_fake_backend()
    feats = (np.abs(np.random.default_rng(0).normal(size=(frames, 512))) * 0.5).astype(np.float32)
    template = PreparedTemplate(open_template(template_dir))
    stats = render(template, feats, backend, out=Path(out_dir) / f"mem{frames}.mp4", batch=4, progress=False)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return {"frames": stats.frames, "peak_rss_mb": peak_kb / 1024, "seconds": stats.seconds}


def peak_rss_mb(template_dir: Path, frames: int, out_dir: Path) -> dict[str, float]:
    """:func:`memory_probe` in a fresh Python process; returns its report."""
    code = ("import json, sys; from fx_render import memory_probe; "
            "print(json.dumps(memory_probe(sys.argv[1], int(sys.argv[2]), sys.argv[3])))")
    proc = subprocess.run([sys.executable, "-c", code, str(template_dir), str(frames), str(out_dir)],
                          cwd=ROOT / "parity_tests",
                          capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"memory probe failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    # By hand, in parity_tests/: python fx_render.py TEMPLATE_DIR OUT_DIR 60 600
    tdir, odir, *counts = sys.argv[1:]
    for n in counts:
        print(peak_rss_mb(Path(tdir), int(n), Path(odir)))
