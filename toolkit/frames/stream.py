"""Live streaming: speech in chunks of any size, rendered frames out as soon as their audio context is complete, equal
to the offline render of the same whole audio.

Where the offline path depends on the end of the audio (every rule is :mod:`framegen.toolkit.inputs.audio`'s and
:mod:`framegen.toolkit.inputs.features`'s, restated incrementally here):

- **mel**: frame ``t`` is the centred STFT frame over samples ``200 t - 400 .. 200 t + 399`` (zero padding past the
  end; pre-emphasis reaches one sample further back). It is final once ``n >= 200 t + 400`` samples arrived; the
  last two or three frames (and the frame count ``T = 1 + n // 200``) wait for :meth:`StreamSession.finish`.
- **encoder windows**: window ``k`` covers mel frames ``s_k .. s_k + 15`` with ``s_k = int(80 * (k / 25))``; there
  are ``int((T - 16) / 80 * 25) + 2`` of them and the last ones are pulled back to ``T - 16``. A window whose 16
  frames are final is never pulled back, so it is final too; the pulled-back ones wait for ``finish``.
- **features**: rows are ``e_0, e_0, e_1, .., e_{N-1}, e_{N-1}`` (first and last embedding repeated); frame ``i``
  takes rows ``i-8 .. i+7`` with zeros outside ``[0, N+2)``. Frame ``i`` is therefore ready once window ``i + 6``
  is encoded; the last seven frames see the repeated row and the zero padding and wait for ``finish``.
- **ping-pong**: ``PreparedTemplate.template_index(i, start)`` is a closed form of ``i``: nothing to hold.

Two numerical details make "the same numbers" stronger than "the same formulas", and both are handled:

- The offline mel multiplies 2048-frame blocks by the filter bank in float64 through BLAS, whose rounding depends on
  the block's row count. The stream keeps the samples of the current block (1.6 MB), recomputes each block exactly
  as the offline code does once it is complete (and the last one in ``finish``), uses the exact rows for every
  window not yet encoded, and counts rows that differed (``StreamStats.mel_mismatch_rows``; in float32 a
  difference needs a 1-ulp float64 change to cross a rounding boundary: 0 of 287 280 values on the 45 s clip).
- Audio encoders are not batch-size invariant (PyTorch on 2 threads: batch 1 differs from batch >= 2; on 1 thread
  batches below 16 differ). The offline path encodes batches of 64 windows and a shorter last batch.
  :func:`encoder_batching` measures, once per encoder, which batch sizes give batch-64 results; the stream only
  calls those sizes (padding a call by repeating its last window), holds the windows of a 64-window batch back
  until enough of it exists that the offline call will be one of those sizes, and in ``finish`` runs the last batch
  exactly as the offline path does. Full batches are recomputed and compared when ``verify`` is on
  (``StreamStats.encoder_mismatch_windows``).

Memory is bounded for any length: the session keeps one mel block of samples, a few dozen mel rows, a few dozen
embeddings and at most ``2 * workers`` frames in flight.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np
from framegen.models.contract import (
    ENC_MEL_WINDOW,
    ENCODER_FPS,
    FEATURE_WIDTH,
    FPS,
    HOP,
    INNER_SIZE,
    MEL_FRAMES_PER_SECOND,
    MIN_SAMPLES,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    WINDOW,
    WINDOW_LEFT,
    audio_shape,
)
from framegen.models.errors import FramegenError
from framegen.models.pixels import pred_to_uint8
from framegen.runtimes.base import Backend
from framegen.toolkit.frames.video import DEFAULT_PRESET, FramesDirWriter, VideoWriter, check_video_size
from framegen.toolkit.inputs.audio import AudioError, decoded_blocks, mel_frame_count, mel_frames, window_count
from framegen.toolkit.inputs.preprocess import PreparedTemplate, cv2_single_thread, paste_back

Encoder = Callable[[np.ndarray], np.ndarray]

_HALF = N_FFT // 2
_MEL_BLOCK = 2048  # frames per block of toolkit.audio.melspectrogram (its _BLOCK_FRAMES)
ENCODER_BATCH = 64  # windows per encoder call of toolkit.audio.ave_features (audio_to_features' default)
#: Batch sizes :func:`encoder_batching` tries: every size up to 17 (where implementations switch algorithms) and a
#: spread above; the stream only ever calls sizes that passed.
PROBE_SIZES = (*range(1, 18), 24, 32, 40, 48, 56, 63, 64)


class StreamError(FramegenError):
    """A streaming session used out of order, fed bad samples, or given arguments that do not fit."""


# --------------------------------------------------------------------------------------------------- lookahead


def window_start(k: int) -> int:
    """First mel frame of encoder window ``k`` before the end pull-back: ``int(80 * (k / 25))`` (float ops as the
    reference, so truncation lands on the same frame)."""
    return int(float(MEL_FRAMES_PER_SECOND) * (k / float(ENCODER_FPS)))


def context_samples(i: int) -> int:
    """Samples that must have arrived before output frame ``i`` can be rendered mid-stream (the algorithmic
    lookahead, before any encoder batch hold-back): window ``i + 6``'s last mel frame must be final."""
    last_mel = window_start(i + WINDOW - WINDOW_LEFT - 2) + ENC_MEL_WINDOW - 1
    return last_mel * HOP + _HALF


def lookahead_ms() -> dict[str, float]:
    """The algorithmic lookahead of a frame beyond its own presentation time, in ms: max, min and mean over a
    cycle of the 16/5 mel-per-video-frame pattern (frames 20..44)."""
    per = [context_samples(i) / SAMPLE_RATE - i / ENCODER_FPS for i in range(20, 45)]
    return {"max": round(1000 * max(per), 3), "min": round(1000 * min(per), 3),
            "mean": round(1000 * sum(per) / len(per), 3)}


# --------------------------------------------------------------------------------------------------- buffers


class _Ring:
    """Rows indexed by an absolute, ever-growing position; old rows are dropped, storage is reused (bounded)."""

    def __init__(self, shape: tuple[int, ...], dtype: Any, capacity: int = 256) -> None:
        self.buf = np.empty((capacity, *shape), dtype=dtype)
        self.start = 0  # absolute index of the first row held
        self.end = 0  # absolute index one past the last row held
        self._lo = 0  # position of `start` in buf

    def __len__(self) -> int:
        return self.end - self.start

    def append(self, rows: np.ndarray) -> None:
        k = rows.shape[0]
        held = self.end - self.start
        if self._lo + held + k > self.buf.shape[0]:
            if held + k > self.buf.shape[0] // 2:
                grown = np.empty((max(2 * (held + k), self.buf.shape[0]), *self.buf.shape[1:]), self.buf.dtype)
                grown[:held] = self.buf[self._lo:self._lo + held]
                self.buf = grown
            else:
                self.buf[:held] = self.buf[self._lo:self._lo + held]
            self._lo = 0
        self.buf[self._lo + held:self._lo + held + k] = rows
        self.end += k

    def view(self, a: int, b: int) -> np.ndarray:
        if a < self.start or b > self.end:
            raise IndexError(f"rows {a}..{b} not held (holding {self.start}..{self.end})")
        return self.buf[self._lo + a - self.start:self._lo + b - self.start]

    def drop_before(self, a: int) -> None:
        a = min(max(a, self.start), self.end)
        self._lo += a - self.start
        self.start = a

    @property
    def capacity(self) -> int:
        return self.buf.shape[0]


# --------------------------------------------------------------------------------------------------- encoder


@dataclass(frozen=True)
class EncoderBatching:
    """Which encoder batch sizes reproduce batch-64 embeddings (measured by :func:`encoder_batching`)."""

    canonical: tuple[int, ...]  # sizes that gave exactly the batch-64 embeddings
    min_batch: int  # smallest size from which every tried size is canonical
    shift_invariant: bool  # a window's embedding does not depend on its slot in the batch

    def call_size(self, count: int) -> int:
        """The smallest canonical size >= max(count, min_batch) (``count`` <= 64)."""
        want = max(count, self.min_batch)
        return min(s for s in self.canonical if s >= want)


_BATCHING_CACHE: weakref.WeakKeyDictionary[Any, EncoderBatching] = weakref.WeakKeyDictionary()


def encoder_batching(encode: Encoder, batch: int = ENCODER_BATCH, sizes: Iterable[int] = PROBE_SIZES,
                     seed: int = 0) -> EncoderBatching:
    """Measure how ``encode``'s results depend on the batch size: seeded random mel windows through one call of
    ``batch`` and through prefixes of each size in ``sizes``, and a one-slot shift. Cached per function (the
    PyTorch encoder needs ~5 s on 2 busy cores; ONNX Runtime far less)."""
    try:
        return _BATCHING_CACHE[encode]
    except (KeyError, TypeError):
        pass
    rng = np.random.default_rng(seed)
    probe = rng.uniform(-4.0, 4.0, size=(batch + 1, 1, N_MELS, ENC_MEL_WINDOW)).astype(np.float32)
    ref = np.asarray(encode(probe[:batch]))
    tried = sorted({int(s) for s in sizes if 1 <= int(s) <= batch} | {batch})
    ok = {s: bool(np.array_equal(np.asarray(encode(probe[:s])), ref[:s])) for s in tried if s != batch}
    ok[batch] = True
    min_batch = batch
    for s in reversed(tried):
        if not ok[s]:
            break
        min_batch = s
    shifted = np.asarray(encode(probe[1:batch + 1]))
    result = EncoderBatching(tuple(s for s in tried if ok[s] and s >= min_batch), min_batch,
                             bool(np.array_equal(shifted[:batch - 1], ref[1:])))
    with contextlib.suppress(TypeError):
        _BATCHING_CACHE[encode] = result
    return result


def seed_batching(encode: Encoder, batching: EncoderBatching) -> None:
    """Record ``batching`` for ``encode`` without probing (an encoder known to have the same weights and runtime
    settings as one already measured)."""
    _BATCHING_CACHE[encode] = batching


# --------------------------------------------------------------------------------------------------- session


class StreamFrame(NamedTuple):
    """One streamed frame: index ``i``, presentation time ``i / fps`` s, the template frame used, the pasted BGR
    uint8 frame, and the number of input samples (16 kHz) that had arrived when its context was complete."""

    i: int
    time: float
    template_index: int
    frame: np.ndarray
    context_samples: int


@dataclass
class StreamStats:
    """What a session did and how well the incremental path matched the offline one."""

    samples: int = 0
    frames: int = 0
    mel_frames: int = 0
    windows: int = 0
    mel_blocks_verified: int = 0
    mel_mismatch_rows: int = 0
    encoder_batches_verified: int = 0
    encoder_mismatch_windows: int = 0
    encoder_min_batch: int = 1
    encoder_call_sizes: dict[int, int] = field(default_factory=dict)
    finished: bool = False

    @property
    def exact(self) -> bool:
        """No mel row and no embedding the stream used differed from the offline path's."""
        return self.mel_mismatch_rows == 0 and self.encoder_mismatch_windows == 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {**asdict(self), "exact": self.exact, "audio_seconds": round(self.samples / SAMPLE_RATE, 4)}


class StreamSession:
    """Incremental render of a live speech stream (see the module docstring for what is held back and why).

    ``feed(samples)`` takes 16 kHz mono float32 or int16 chunks of any size (``input_rate`` other than 16 kHz is
    resampled with PyAV; 2-D ``(n, channels)`` input is averaged over channels) and returns the frames finished so
    far, in order; ``poll(timeout)`` waits for more; ``finish()`` flushes the end and returns the rest. Inference
    runs on ``backend.concurrent_workers`` threads with at most ``2 * workers`` groups in flight: when the backend
    is slower than the audio, ``feed`` blocks instead of queueing, so memory stays flat.

    Frames equal ``render(template, ave_features(melspectrogram(all samples), encode), backend, batch=batch)``
    frame for frame, bit for bit (``stats.exact`` reports the two numerical risks described in the module).
    """

    def __init__(self, template: PreparedTemplate, backend: Backend, encode: Encoder, *, start_frame: int = 0,
                 batch: int = 1, input_rate: int = SAMPLE_RATE, batching: EncoderBatching | None = None,
                 verify: bool = True, max_inflight: int | None = None) -> None:
        if backend.mode != "ave":
            raise StreamError(f"{backend.name}: streaming computes 'ave' features; the generator is {backend.mode!r}")
        if batch < 1:
            raise StreamError(f"--batch {batch}: must be at least 1")
        if input_rate <= 0:
            raise StreamError(f"input sample rate {input_rate}: must be positive")
        template.template_index(0, start_frame)  # PreprocessError naming the start frame when it is not usable
        self.template, self.backend, self.encode = template, backend, encode
        self.start_frame, self.batch, self.verify = start_frame, int(batch), verify
        self.fps = FPS[backend.mode]
        self.batching = batching if batching is not None else encoder_batching(encode)
        self.stats = StreamStats(encoder_min_batch=self.batching.min_batch)
        self._resampler: Any = None
        self.input_rate = int(input_rate)
        if self.input_rate != SAMPLE_RATE:
            import av

            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        self._n = 0
        self.last_samples = np.zeros(0, np.float32)  # the last feed's samples at 16 kHz (what a muxer needs)
        self._samples = _Ring((), np.float32, 1 << 16)
        self._mel = _Ring((N_MELS,), np.float32, 512)
        self._t = 0  # mel frames computed
        self._block = 0  # mel block not yet verified
        self._block_rows = np.empty((_MEL_BLOCK, N_MELS), np.float32)
        self._emb = _Ring((FEATURE_WIDTH,), np.float32, 128)
        self._k = 0  # windows encoded
        self._vq = 0  # encoder batch being collected for verification
        self._vwin = np.empty((ENCODER_BATCH, 1, N_MELS, ENC_MEL_WINDOW), np.float32)
        self._vemb = np.empty((ENCODER_BATCH, FEATURE_WIDTH), np.float32)
        self._i = 0  # frames submitted
        self._total: int | None = None  # frames in all, once finished
        self._closed = False
        workers = max(1, int(getattr(backend, "concurrent_workers", 1)))
        self._limit = max_inflight or 2 * workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="framegen-stream")
        self._inflight: deque[Future[list[StreamFrame]]] = deque()
        self._done: list[StreamFrame] = []  # finished frames not handed out yet (at most one group per slot)
        self.owned_backend: Backend | None = None  # closed with the session (the API's stream_session sets it)
        self._cv2 = cv2_single_thread()
        self._cv2.__enter__()

    # ------------------------------------------------------------------------------------------- public

    @property
    def samples(self) -> int:
        """16 kHz samples received so far."""
        return self._n

    def feed(self, samples: np.ndarray) -> list[StreamFrame]:
        """Add a chunk of samples; returns the frames completed so far (possibly none), in order."""
        if self._total is not None or self._closed:
            raise StreamError("feed() after finish() or close()")
        x = self._to_16k(samples)
        self.last_samples = x
        if x.size:
            self._samples.append(x)
            self._n += x.size
        self._advance(final=False)
        return self._collect(block=False)

    def poll(self, timeout: float | None = 0.0) -> list[StreamFrame]:
        """Frames completed so far; waits up to ``timeout`` seconds (``None``: until one group is done)."""
        if self._inflight and timeout != 0.0:
            with contextlib.suppress(TimeoutError):
                self._inflight[0].exception(timeout=timeout)
        elif timeout:
            time.sleep(timeout)  # nothing in flight: no frame can finish before more audio
        return self._collect(block=False)

    def finish(self) -> list[StreamFrame]:
        """The end of the audio: compute what depended on it, render the remaining frames, return them in order."""
        if self._closed:
            raise StreamError("finish() after close()")
        if self._total is not None:
            return self._collect(block=True)
        self.last_samples = np.zeros(0, np.float32)
        if self._resampler is not None:
            tail = self._resampled(None)
            self.last_samples = tail
            if tail.size:
                self._samples.append(tail)
                self._n += tail.size
        if self._n < MIN_SAMPLES:
            raise AudioError(f"audio too short ({self._n / SAMPLE_RATE:.3f} s); SyncTalk_2D needs at least "
                             f"{MIN_SAMPLES / SAMPLE_RATE:.4f} s")
        self._advance(final=True)
        self.stats.finished = True
        return self._collect(block=True)

    def close(self) -> None:
        """Stop the inference threads (pending frames are dropped) and restore OpenCV's thread count."""
        if self._closed:
            return
        self._closed = True
        for f in self._inflight:
            f.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._inflight.clear()
        self._cv2.__exit__(None, None, None)
        if self.owned_backend is not None:
            self.owned_backend.close()

    def __enter__(self) -> StreamSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def buffer_sizes(self) -> dict[str, int]:
        """Rows held and allocated by each buffer (what a long stream must keep flat)."""
        return {"samples": len(self._samples), "samples_capacity": self._samples.capacity,
                "mel_rows": len(self._mel), "mel_capacity": self._mel.capacity,
                "embeddings": len(self._emb), "embeddings_capacity": self._emb.capacity,
                "inflight": len(self._inflight)}

    # ------------------------------------------------------------------------------------------- input

    def _to_16k(self, samples: np.ndarray) -> np.ndarray:
        x = np.asarray(samples)
        if x.ndim == 2 and x.shape[1] > MAX_CHANNELS:
            raise StreamError(f"samples of shape {x.shape}: (n, channels) expected with at most {MAX_CHANNELS} "
                              f"channels; a channels-first array needs .T")
        if x.ndim == 2:
            x = x.astype(np.float32, copy=False).mean(axis=1, dtype=np.float32) if x.dtype != np.int16 else \
                (x.astype(np.float32) / 32768.0).mean(axis=1, dtype=np.float32)
        elif x.ndim != 1:
            raise StreamError(f"samples must be 1-D mono or (n, channels), got shape {x.shape}")
        elif x.dtype == np.int16:
            x = x.astype(np.float32) / np.float32(32768.0)  # FFmpeg's s16 -> float: exact, x / 2^15
        elif x.dtype.kind == "f":
            x = x.astype(np.float32, copy=False)
        else:
            raise StreamError(f"samples must be float32 or int16, got {x.dtype}")
        if x.size and not np.isfinite(x).all():
            raise StreamError(f"samples {self._n + int(np.argmin(np.isfinite(x)))}: not finite")
        return self._resampled(x) if self._resampler is not None else x

    def _resampled(self, x: np.ndarray | None) -> np.ndarray:
        import av

        if x is None:
            frames = self._resampler.resample(None)
        else:
            if not x.size:
                return x
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[None]), format="flt", layout="mono")
            frame.sample_rate = self.input_rate
            frames = self._resampler.resample(frame)
        parts = [f.to_ndarray().reshape(-1) for f in frames]
        return np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)

    # ------------------------------------------------------------------------------------------- mel

    def _samples_x0(self) -> tuple[np.ndarray, int]:
        return self._samples.view(self._samples.start, self._samples.end), self._samples.start

    def _store_rows(self, t0: int, rows: np.ndarray) -> None:
        b0 = self._block * _MEL_BLOCK
        self._block_rows[t0 - b0:t0 - b0 + rows.shape[0]] = rows
        self._mel.append(rows)

    def _exact_block(self, t1: int) -> None:
        """Recompute block ``self._block`` (frames up to ``t1``) as melspectrogram does; compare, replace, move on."""
        b0 = self._block * _MEL_BLOCK
        x, x0 = self._samples_x0()
        exact = mel_frames(x, b0, t1, self._n, x0)  # complete frames never reach n: same as the final length
        done = self._t - b0
        if done > 0:
            if self.verify or self._total is not None:
                self.stats.mel_mismatch_rows += int((exact[:done] != self._block_rows[:done]).any(axis=1).sum())
            lo = max(self._mel.start, b0)
            if lo < self._t:
                self._mel.view(lo, self._t)[:] = exact[lo - b0:done]
        if t1 > self._t:
            self._store_rows(self._t, exact[done:])
            self._t = t1
        self.stats.mel_blocks_verified += 1

    def _advance_mel(self, final: bool) -> None:
        n = self._n
        target = mel_frame_count(n) if final else (max(0, (n - _HALF) // HOP + 1) if n >= _HALF else 0)
        while self._t < target or final:
            b1 = (self._block + 1) * _MEL_BLOCK
            t1 = min(target, b1)
            if final and target <= b1:
                if target > self._block * _MEL_BLOCK:
                    self._exact_block(target)  # the last block, exactly as the offline call
                break
            if t1 == b1:
                if self.verify:
                    self._exact_block(b1)
                else:
                    x, x0 = self._samples_x0()
                    self._store_rows(self._t, mel_frames(x, self._t, b1, n, x0))
                    self._t = b1
                self._block += 1
                self._samples.drop_before(self._block * _MEL_BLOCK * HOP - _HALF - 1)
                continue
            x, x0 = self._samples_x0()
            self._store_rows(self._t, mel_frames(x, self._t, t1, n, x0))
            self._t = t1
        self.stats.mel_frames = self._t

    # ------------------------------------------------------------------------------------------- encoder

    def _window_rows(self, k: int, total_mel: int | None) -> np.ndarray:
        s = window_start(k)
        if total_mel is not None:
            s = min(s, total_mel - ENC_MEL_WINDOW)
        return self._mel.view(s, s + ENC_MEL_WINDOW).T[None]  # (1, 80, 16): mel bins as rows

    def _encode_range(self, k0: int, k1: int, total_mel: int | None) -> np.ndarray:
        """Embeddings of windows k0..k1-1 (inside one 64-window batch) in one call of a canonical size."""
        count = k1 - k0
        size = self.batching.call_size(count)
        wins = np.empty((size, 1, N_MELS, ENC_MEL_WINDOW), np.float32)
        for j in range(count):
            wins[j] = self._window_rows(k0 + j, total_mel)
        wins[count:] = wins[count - 1]
        emb = np.asarray(self.encode(wins), dtype=np.float32)
        if emb.shape != (size, FEATURE_WIDTH):
            raise StreamError(f"encoder returned shape {emb.shape}, expected ({size}, {FEATURE_WIDTH})")
        self.stats.encoder_call_sizes[size] = self.stats.encoder_call_sizes.get(size, 0) + 1
        q0 = k0 - self._vq * ENCODER_BATCH
        self._vwin[q0:q0 + count] = wins[:count]
        self._vemb[q0:q0 + count] = emb[:count]
        return emb[:count]

    def _exact_batch(self, count: int) -> None:
        """Run batch ``self._vq``'s first ``count`` windows as ave_features does (one call); compare, replace."""
        q0 = self._vq * ENCODER_BATCH
        done = self._k - q0
        emb = np.asarray(self.encode(np.ascontiguousarray(self._vwin[:count])), dtype=np.float32)
        self.stats.encoder_mismatch_windows += int((emb[:done] != self._vemb[:done]).any(axis=1).sum())
        self.stats.encoder_batches_verified += 1
        lo = max(self._emb.start, q0)
        if lo < self._k:
            self._emb.view(lo, self._k)[:] = emb[lo - q0:done]
        if count > done:
            self._emb.append(emb[done:count])
            self._k = q0 + count

    def _advance_encoder(self, final: bool) -> None:
        bt = self.batching
        if final:
            total_mel = self._t
            n_windows = window_count(total_mel)
            ready = exists = n_windows
        else:
            total_mel = None
            t_exist = mel_frame_count(self._n)
            exists = window_count(t_exist) if t_exist >= ENC_MEL_WINDOW else 0
            ready = self._k
            while ready < exists and window_start(ready) + ENC_MEL_WINDOW <= self._t:
                ready += 1
        while self._k < ready:
            q = self._k // ENCODER_BATCH
            q0, q1 = q * ENCODER_BATCH, (q + 1) * ENCODER_BATCH
            self._vq = q
            last = final and q1 >= ready
            if last:
                # The offline path's last call: windows q0..N-1 in one batch; encode what is missing first.
                for j in range(self._k, ready):
                    self._vwin[j - q0] = self._window_rows(j, total_mel)
                self._exact_batch(ready - q0)
                break
            if not final and (exists < q0 + bt.min_batch or (not bt.shift_invariant and ready < q1)):
                break  # the offline call for this batch might not be a canonical size (or not this alignment)
            k1 = min(ready, q1)
            if not bt.shift_invariant:
                k1 = q1
                if self._k > q0:
                    raise StreamError("internal: partial batch with a slot-dependent encoder")
            emb = self._encode_range(self._k, k1, total_mel)
            self._emb.append(emb)
            self._k = k1
            if self._k == q1:
                if self.verify:
                    self._exact_batch(ENCODER_BATCH)
                self._vq = q + 1
        self.stats.windows = self._k
        # Rows before the next window's start (less a window, for the end pull-back) are never read again.
        self._mel.drop_before(max(0, window_start(self._k) - ENC_MEL_WINDOW))

    # ------------------------------------------------------------------------------------------- frames

    def _audio_for(self, idx: list[int], total: int | None) -> np.ndarray:
        out = np.zeros((len(idx), WINDOW, FEATURE_WIDTH), np.float32)
        n_emb = self._k
        for slot, i in enumerate(idx):
            for r in range(WINDOW):
                row = i - WINDOW_LEFT + r
                if row < 0 or (total is not None and row >= total):
                    continue
                k = min(max(row - 1, 0), n_emb - 1)
                out[slot, r] = self._emb.view(k, k + 1)[0]
        return out.reshape(len(idx), *audio_shape(self.backend.mode))

    def _render(self, idx: list[int], audio: np.ndarray, ctx: int) -> list[StreamFrame]:
        t = self.template
        prepared = [t.prepared(t.template_index(i, self.start_frame)) for i in idx]
        image = np.empty((len(idx), 6, INNER_SIZE, INNER_SIZE), dtype=np.float32)
        for slot, p in enumerate(prepared):
            p.image_input(out=image[slot])
        pred = self.backend.infer(image, audio)
        if pred.shape != (len(idx), 3, INNER_SIZE, INNER_SIZE):
            raise StreamError(f"{self.backend.name}: output shape {list(pred.shape)}, expected "
                              f"[{len(idx)}, 3, {INNER_SIZE}, {INNER_SIZE}]")
        return [StreamFrame(i, i / self.fps, p.index,
                            paste_back(t.frame(p.index), p.box, p.crop328, pred_to_uint8(pred[slot])), ctx)
                for slot, (i, p) in enumerate(zip(idx, prepared, strict=True))]

    def _advance_frames(self, final: bool) -> None:
        if final:
            self._total = self._k + 2
            ready = self._total
        else:
            ready = max(0, self._k - (WINDOW - WINDOW_LEFT - 2))  # frame i needs windows 0..i+6
        while self._i < ready:
            g1 = min(self._i + self.batch - self._i % self.batch, ready)
            if g1 - self._i < self.batch - self._i % self.batch and not final:
                break  # the render's batch grid: a group is inferred whole
            idx = list(range(self._i, g1))
            audio = self._audio_for(idx, self._total)
            while len(self._inflight) >= self._limit:
                # Backpressure: wait for the oldest group instead of queueing more (its frames wait in _done).
                self._done.extend(self._inflight.popleft().result())
            self._inflight.append(self._pool.submit(self._render, idx, audio, self._n))
            self._i = g1
        self._emb.drop_before(self._i - WINDOW_LEFT - 1)

    def _advance(self, final: bool) -> None:
        self.stats.samples = self._n
        self._advance_mel(final)
        self._advance_encoder(final)
        self._advance_frames(final)

    def _collect(self, block: bool) -> list[StreamFrame]:
        out, self._done = self._done, []
        while self._inflight and (block or self._inflight[0].done()):
            out.extend(self._inflight.popleft().result())
        self.stats.frames += len(out)
        return out




# --------------------------------------------------------------------------------------------------- sources


def iter_audio_file(path: str | os.PathLike[str], chunk: int) -> Iterator[np.ndarray]:
    """Decode any audio file PyAV reads to 16 kHz mono float32 chunks of ``chunk`` samples (the last shorter),
    sample for sample what :func:`framegen.toolkit.inputs.audio.decode_audio` returns, without holding the file."""
    if chunk < 1:
        raise StreamError(f"chunk of {chunk} samples: must be at least 1")
    pending: list[np.ndarray] = []
    held = got = 0
    for block in decoded_blocks(path):
        pending.append(block)
        held += block.shape[0]
        got += block.shape[0]
        while held >= chunk:
            joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
            yield joined[:chunk]
            rest = joined[chunk:]
            pending, held = ([rest] if rest.size else []), rest.size
    if got == 0:
        raise AudioError(f"{Path(path)}: audio stream holds no samples")
    if held:
        yield np.concatenate(pending)


def iter_pcm(stream: BinaryIO, chunk: int, name: str = "stdin") -> Iterator[np.ndarray]:
    """Raw little-endian s16 16 kHz mono PCM from a binary stream, as int16 chunks of ``chunk`` samples (the last
    may be shorter); a stream that ends inside a sample is an error naming it."""
    if chunk < 1:
        raise StreamError(f"chunk of {chunk} samples: must be at least 1")
    carry = b""
    while True:
        data = stream.read(2 * chunk)
        if not data:
            break
        data = carry + data
        whole = len(data) // 2 * 2
        carry = data[whole:]
        if whole:
            yield np.frombuffer(data[:whole], dtype="<i2").astype(np.int16)
    if carry:
        raise StreamError(f"{name}: ends in the middle of a sample (odd number of bytes); expected s16le PCM")


#: More channels than any audio interface delivers: a (channels, n) array mistaken for (n, channels) is refused.
MAX_CHANNELS = 32
#: The longest chunk a live session takes at once (a minute of audio): beyond it a chunk is a file, not a stream.
MAX_CHUNK_MS = 60_000.0


def chunk_samples(chunk_ms: float) -> int:
    """Samples per chunk of ``chunk_ms`` milliseconds at 16 kHz (at least 1)."""
    if not math.isfinite(chunk_ms) or chunk_ms <= 0 or chunk_ms > MAX_CHUNK_MS:
        raise StreamError(f"--chunk-ms {chunk_ms}: must be a finite number of milliseconds in (0, {MAX_CHUNK_MS}]")
    return max(1, round(chunk_ms * SAMPLE_RATE / 1000))


# --------------------------------------------------------------------------------------------------- writers


class _PushedAudio:
    """The audio source of a streamed mp4: the session's 16 kHz samples, pushed as they arrive (bounded: the
    writer takes them as soon as the video reaches them)."""

    layout = "mono"
    rate = SAMPLE_RATE

    def __init__(self) -> None:
        self._pending: deque[np.ndarray] = deque()
        self._held = 0
        self.exhausted = False

    @property
    def done(self) -> bool:
        return self.exhausted and self._held == 0

    def push(self, x: np.ndarray) -> None:
        if x.size:
            self._pending.append(np.ascontiguousarray(x, dtype=np.float32))
            self._held += x.size

    def take(self, count: int) -> np.ndarray:
        if self._held < count and not self.exhausted:
            return np.zeros((1, 0), np.float32)  # not here yet: the writer retries after the next frame
        parts, got = [], 0
        while self._pending and got < count:
            head = self._pending.popleft()
            need = count - got
            if head.size > need:
                self._pending.appendleft(head[need:])
                head = head[:need]
            parts.append(head)
            got += head.size
        self._held -= got
        return (np.concatenate(parts) if parts else np.zeros(0, np.float32))[None]

    def close(self) -> None:
        self._pending.clear()
        self._held = 0


def _stream_writer(out: str | os.PathLike[str], width: int, height: int, fps: int, crf: int, preset: str) -> Any:
    """A :class:`framegen.toolkit.frames.video.VideoWriter` whose AAC track is fed from pushed samples."""
    class StreamVideoWriter(VideoWriter):
        def __init__(self) -> None:
            self.pushed = _PushedAudio()
            super().__init__(out, width, height, fps, audio_path=None, crf=crf, preset=preset)

        def _open(self) -> None:
            self._audio = self.pushed  # type: ignore[assignment]
            self.audio_rate = self.pushed.rate
            super()._open()

        def push_audio(self, x: np.ndarray) -> None:
            self.pushed.push(x)

        def close(self) -> Path:
            self.pushed.exhausted = True
            return super().close()

    return StreamVideoWriter()


# --------------------------------------------------------------------------------------------------- runner


@dataclass
class StreamRunStats:
    """What :func:`stream_to_files` did: frames, audio seconds, wall seconds, latency per frame, session stats."""

    frames: int
    audio_seconds: float
    seconds: float
    realtime: bool
    chunk_samples: int
    backend: str
    out: str | None
    frames_dir: str | None
    latency_ms: dict[str, float]
    session: dict[str, Any]

    @property
    def rtf(self) -> float:
        """Wall seconds per second of audio (<= 1 keeps up with real time; paced runs are >= 1 by design)."""
        return self.seconds / self.audio_seconds if self.audio_seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {**asdict(self), "rtf": round(self.rtf, 4)}


def percentiles(values: list[float]) -> dict[str, float]:
    """p50 / p90 / p99 / max of ``values`` (ms), rounded; zeros when empty."""
    if not values:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "count": 0}
    a = np.asarray(values, dtype=np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 2), "p90": round(float(np.percentile(a, 90)), 2),
            "p99": round(float(np.percentile(a, 99)), 2), "max": round(float(a.max()), 2), "count": int(a.size)}


@dataclass
class PlayResult:
    """What :func:`play` measured: frames, wall seconds, latency per frame (ms), largest in-flight count."""

    frames: int
    seconds: float
    latencies_ms: list[float]
    max_inflight: int


def play(session: StreamSession, chunks: Iterable[np.ndarray], *, realtime: bool = False,
         sink: Callable[[StreamFrame], None] | None = None,
         on_samples: Callable[[np.ndarray], None] | None = None) -> PlayResult:
    """Feed ``chunks`` to ``session`` as a live source, hand every frame to ``sink`` in order, finish; time it.

    ``realtime`` paces the chunks at the speed of sound: chunk ``c`` is fed when its last sample would have been
    captured, and frames that finish meanwhile leave at once. A frame's latency runs from the arrival of the chunk
    that completed its context (its scheduled arrival when paced: a backend that falls behind is charged for the
    backlog) to the frame leaving the session. Nothing queues: a session that is behind blocks ``feed``.
    ``on_samples`` receives each chunk's 16 kHz samples (a muxer's audio track).
    """
    latencies: list[float] = []
    arrivals: deque[tuple[int, float]] = deque()  # (samples after chunk, arrival time), bounded by the lookahead
    count = 0
    most = 0

    def emit(frames: list[StreamFrame]) -> None:
        nonlocal count
        now = time.perf_counter()
        for f in frames:
            if f.i != count:
                raise StreamError(f"internal: frame {f.i} out of order (expected {count})")
            while arrivals and arrivals[0][0] < f.context_samples:
                arrivals.popleft()  # frames come in order: the first chunk left is the one that completed it
            latencies.append(1000.0 * (now - (arrivals[0][1] if arrivals else now)))
            if sink is not None:
                sink(f)
            count += 1

    t0 = time.perf_counter()
    fed = 0  # input samples, at the input rate
    for chunk in chunks:
        fed += np.asarray(chunk).shape[0]
        if realtime:
            due = t0 + fed / session.input_rate
            while True:
                wait = due - time.perf_counter()
                if wait <= 0:
                    break
                emit(session.poll(timeout=wait))
            arrived_at = due
        else:
            arrived_at = time.perf_counter()
        frames = session.feed(chunk)
        arrivals.append((session.samples, arrived_at))
        most = max(most, session.buffer_sizes()["inflight"])
        if on_samples is not None:
            on_samples(session.last_samples)
        emit(frames)
    end_at = time.perf_counter()
    tail = session.finish()
    if on_samples is not None:
        on_samples(session.last_samples)
    arrivals.append((session.samples, end_at))
    emit(tail)
    return PlayResult(count, time.perf_counter() - t0, latencies, most)


def stream_to_files(template: PreparedTemplate, backend: Backend, encode: Encoder, chunks: Iterable[np.ndarray], *,
                    out: str | os.PathLike[str] | None = None, frames_dir: str | os.PathLike[str] | None = None,
                    realtime: bool = False, start_frame: int = 0, batch: int = 1, crf: int = 20,
                    preset: str | None = None, on_frame: Callable[[StreamFrame], None] | None = None,
                    batching: EncoderBatching | None = None, chunk_samples: int = 0) -> StreamRunStats:
    """Play ``chunks`` (16 kHz mono float32 / int16 arrays) through a :class:`StreamSession` as a live source (see
    :func:`play`) and write the frames to an mp4 (H.264 + the streamed audio as AAC, frame k at k/fps s) and/or
    PNGs. Outputs appear only when complete (temporary names, renamed); an error or Ctrl-C leaves none.
    """
    if out is None and frames_dir is None:
        raise StreamError("nothing to write: give an output video (--out) and/or --frames-dir")
    width, height = template.template.width, template.template.height
    if out is not None:
        check_video_size(width, height, f"template {template.template.root}")
    with contextlib.ExitStack() as stack:
        video = stack.enter_context(_stream_writer(out, width, height, FPS[backend.mode], crf,
                                                   preset or DEFAULT_PRESET)) if out is not None else None
        pngs = stack.enter_context(FramesDirWriter(frames_dir)) if frames_dir is not None else None
        session = stack.enter_context(StreamSession(template, backend, encode, start_frame=start_frame,
                                                    batch=batch, batching=batching))

        def sink(f: StreamFrame) -> None:
            if video is not None:
                video.write(f.frame)
            if pngs is not None:
                pngs.write(f.frame)
            if on_frame is not None:
                on_frame(f)

        result = play(session, chunks, realtime=realtime, sink=sink,
                      on_samples=video.push_audio if video is not None else None)
        stats = session.stats
    return StreamRunStats(frames=result.frames, audio_seconds=round(stats.samples / SAMPLE_RATE, 4),
                          seconds=round(result.seconds, 4), realtime=realtime, chunk_samples=chunk_samples,
                          backend=backend.name, out=os.fspath(out) if out is not None else None,
                          frames_dir=os.fspath(frames_dir) if frames_dir is not None else None,
                          latency_ms=percentiles(result.latencies_ms), session=stats.as_dict())


def stdin_chunks(chunk: int) -> Iterator[np.ndarray]:
    """``iter_pcm`` over the process's binary stdin."""
    return iter_pcm(sys.stdin.buffer, chunk)
