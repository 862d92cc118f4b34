"""Streaming fixtures: a short speech excerpt, the encoders with their measured batching, offline reference frames per
backend, a memoizing backend wrapper, and a peak-memory probe that streams in a fresh subprocess."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import ROOT

__all__ = ["stream_ort_backend", "stream_speech", "stream_torch_encoder"]

#: 0.6 s: 49 mel frames, 12 encoder windows, 14 output frames; the first and last seven frames are end-dependent.
STREAM_SAMPLES = 9600
STREAM_OFFSET = 16000 * 7  # an excerpt from the middle of the clip: speech, not the leading silence


@pytest.fixture(scope="session")
def stream_speech(speech_wav) -> np.ndarray:
    """0.6 s of the real speech clip (16 kHz float32)."""
    return np.ascontiguousarray(speech_wav[STREAM_OFFSET:STREAM_OFFSET + STREAM_SAMPLES])


@pytest.fixture(scope="session")
def stream_torch_encoder(audio_encoder):
    """(encode, batching): the seeded PyTorch encoder and its measured batch-size behaviour (probed once)."""
    from framegen.toolkit.frames.stream import encoder_batching
    from framegen.toolkit.inputs.audio import torch_encoder_fn

    encode = torch_encoder_fn(audio_encoder)
    return encode, encoder_batching(encode)


@pytest.fixture(scope="session")
def stream_ort_backend(bundle_dir):
    """The bundle's fp32 ONNX generator on ort-cpu."""
    from framegen.runtimes.registry import open_backend
    from framegen.runtimes.spec import OpenRequest

    backend = open_backend("ort-cpu", OpenRequest(bundle=bundle_dir, precision="fp32"))
    yield backend
    backend.close()


class MemoBackend:
    """A real backend whose results are remembered by the exact bytes of their inputs: a second call with
    bit-identical inputs returns the first call's output without running the model again; any other input runs the
    model. Used so that several chunk sizes can be checked against one offline render without re-running the same
    inferences (one chunk size per backend runs unmemoized)."""

    def __init__(self, backend) -> None:
        self._backend = backend
        self._memo: dict[tuple[bytes, bytes], np.ndarray] = {}
        self._lock = threading.Lock()
        self.calls = 0
        self.hits = 0

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def infer(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        import hashlib

        key = (hashlib.sha256(image.tobytes()).digest(), hashlib.sha256(audio.tobytes()).digest())
        with self._lock:
            self.calls += 1
            hit = self._memo.get(key)
            if hit is not None:
                self.hits += 1
                return hit.copy()
        out = self._backend.infer(image, audio)
        with self._lock:
            self._memo[key] = out.copy()
        return out


def per_row_encoder(seed: int = 0):
    """A cheap deterministic stand-in encoder, batch-size invariant by construction (one row at a time)."""
    w = (np.random.default_rng(seed).normal(size=(80 * 16, 512)) / 30).astype(np.float32)

    def encode(windows: np.ndarray) -> np.ndarray:
        flat = windows.reshape(windows.shape[0], -1)
        return np.stack([np.maximum(row @ w, 0.0) for row in flat]).astype(np.float32)

    return encode


def synthetic_chunks(seconds: float, chunk: int, seed: int = 0):
    """Speech-like synthetic audio generated chunk by chunk (never held whole): noise bursts over a tone."""
    rng = np.random.default_rng(seed)
    total = int(seconds * 16000)
    for a in range(0, total, chunk):
        n = min(chunk, total - a)
        t = (a + np.arange(n)) / 16000.0
        env = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)
        yield (env * (0.2 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(n))).astype(np.float32)


def light_session(template, **kw):
    """A StreamSession whose frames skip the image work (crop, model, paste): what grows with the stream's length is
    the audio and feature path and the queues, and this measures exactly those (the per-frame image work is the
    render's, whose memory is flat per frame: ``test_render``'s peak-RSS test)."""
    from framegen.toolkit.frames.stream import EncoderBatching, StreamFrame, StreamSession
    from fx_render import make_fake_backend

    class LightSession(StreamSession):
        def _render(self, idx, audio, ctx):
            assert audio.shape == (len(idx), 32, 16, 16)
            return [StreamFrame(i, i / self.fps, 0, np.zeros((1, 1, 3), np.uint8), ctx) for i in idx]

    kw.setdefault("batching", EncoderBatching(tuple(range(1, 65)), 1, True))
    return LightSession(template, make_fake_backend(), per_row_encoder(), **kw)


def stream_memory_probe(seconds: float, template_dir: str) -> dict[str, float]:
    """Stream ``seconds`` of synthetic audio through a :func:`light_session` (1 s chunks) in this process; report
    peak RSS (MB) and the largest size of each buffer. Run in a fresh subprocess by :func:`stream_peak_rss`."""
    from framegen.toolkit.inputs.preprocess import PreparedTemplate
    from framegen.toolkit.inputs.template import open_template

    frames = 0
    biggest: dict[str, int] = {}
    with light_session(PreparedTemplate(open_template(template_dir))) as s:
        for chunk in synthetic_chunks(seconds, 16000):
            frames += len(s.feed(chunk))
            for k, v in s.buffer_sizes().items():
                biggest[k] = max(biggest.get(k, 0), v)
        frames += len(s.finish())
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"frames": frames, "peak_rss_mb": peak_kb / 1024, **{f"max_{k}": v for k, v in biggest.items()}}


def stream_peak_rss(seconds: float, template_dir) -> dict[str, float]:
    """:func:`stream_memory_probe` in a fresh Python process."""
    code = ("import json, sys; sys.path.insert(0, 'parity_tests'); from fx_stream import stream_memory_probe; "
            "print(json.dumps(stream_memory_probe(float(sys.argv[1]), sys.argv[2])))")
    proc = subprocess.run([sys.executable, "-c", code, str(seconds), str(template_dir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"stream memory probe failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
