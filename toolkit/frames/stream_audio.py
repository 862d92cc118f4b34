"""The audio half of a live stream: speech samples in chunks of any size, mel rows and encoder embeddings out as soon
as each is final, equal to the offline path's (:mod:`framegen.toolkit.inputs.audio`,
:mod:`framegen.toolkit.inputs.features`).

Where the offline path depends on the end of the audio:

- **mel**: frame ``t`` is the centred STFT frame over samples ``200 t - 400 .. 200 t + 399`` (zero padding past the
  end; pre-emphasis reaches one sample further back). It is final once ``n >= 200 t + 400`` samples arrived; the
  last two or three frames (and the frame count ``T = 1 + n // 200``) wait for the end.
- **encoder windows**: window ``k`` covers mel frames ``s_k .. s_k + 15`` with ``s_k = int(80 * (k / 25))``; there
  are ``int((T - 16) / 80 * 25) + 2`` of them and the last ones are pulled back to ``T - 16``. A window whose 16
  frames are final is never pulled back, so it is final too; the pulled-back ones wait for the end.
- **features**: rows are ``e_0, e_0, e_1, .., e_{N-1}, e_{N-1}`` (first and last embedding repeated); frame ``i``
  takes rows ``i-8 .. i+7`` with zeros outside ``[0, N+2)``. Frame ``i`` is therefore ready once window ``i + 6``
  is encoded; the last seven frames see the repeated row and the zero padding and wait for the end.

Two numerical details make "the same numbers" stronger than "the same formulas", and both are handled:

- The offline mel multiplies 2048-frame blocks by the filter bank in float64 through BLAS, whose rounding depends on
  the block's row count. The stream keeps the samples of the current block (1.6 MB), recomputes each block exactly
  as the offline code does once it is complete (and the last one at the end), uses the exact rows for every
  window not yet encoded, and counts rows that differed (``StreamStats.mel_mismatch_rows``; in float32 a
  difference needs a 1-ulp float64 change to cross a rounding boundary: 0 of 287 280 values on the 45 s clip).
- Audio encoders are not batch-size invariant (PyTorch on 2 threads: batch 1 differs from batch >= 2; on 1 thread
  batches below 16 differ). The offline path encodes batches of 64 windows and a shorter last batch.
  :func:`encoder_batching` measures, once per encoder, which batch sizes give batch-64 results; the stream only
  calls those sizes (padding a call by repeating its last window), holds the windows of a 64-window batch back
  until enough of it exists that the offline call will be one of those sizes, and at the end runs the last batch
  exactly as the offline path does. Full batches are recomputed and compared when ``verify`` is on
  (``StreamStats.encoder_mismatch_windows``).

Memory is bounded for any length: one mel block of samples, a few dozen mel rows and a few dozen embeddings.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from framegen.models.contract import (
    ENC_MEL_WINDOW,
    ENCODER_FPS,
    FEATURE_WIDTH,
    HOP,
    MEL_FRAMES_PER_SECOND,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    WINDOW,
    WINDOW_LEFT,
    audio_shape,
)
from framegen.models.errors import FramegenError
from framegen.toolkit.inputs.audio import mel_frame_count, mel_frames, window_count
from framegen.toolkit.inputs.encoders import Encoder

_HALF = N_FFT // 2
_MEL_BLOCK = 2048  # frames per block of toolkit.audio.melspectrogram (its _BLOCK_FRAMES)
ENCODER_BATCH = 64  # windows per encoder call of toolkit.audio.ave_features (audio_to_features' default)
#: Batch sizes :func:`encoder_batching` tries: every size up to 17 (where implementations switch algorithms) and a
#: spread above; the stream only ever calls sizes that passed.
PROBE_SIZES = (*range(1, 18), 24, 32, 40, 48, 56, 63, 64)
#: More channels than any audio interface delivers: a (channels, n) array mistaken for (n, channels) is refused.
MAX_CHANNELS = 32


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


class Ring:
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


# --------------------------------------------------------------------------------------------------- features


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
    #: frames a degrading session did not infer because every worker was busy when their turn came (the previous
    #: frame was shown again): not part of the offline render's frames
    held_frames: int = 0
    #: of those, frames held because they would have left after the session's latency budget
    held_late_frames: int = 0

    @property
    def exact(self) -> bool:
        """No mel row and no embedding the stream used differed from the offline path's."""
        return self.mel_mismatch_rows == 0 and self.encoder_mismatch_windows == 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {**asdict(self), "exact": self.exact, "audio_seconds": round(self.samples / SAMPLE_RATE, 4)}


class StreamFeatures:
    """The audio half of a stream: samples in (any rate, resampled to 16 kHz), mel rows and encoder embeddings out,
    each computed as soon as it is final and equal to the offline path's (see the module docstring)."""

    def __init__(self, encode: Encoder, batching: EncoderBatching, stats: StreamStats, *, verify: bool = True,
                 input_rate: int = SAMPLE_RATE) -> None:
        self.encode, self.batching, self.stats, self.verify = encode, batching, stats, verify
        self.input_rate = int(input_rate)
        self._resampler: Any = None
        if self.input_rate != SAMPLE_RATE:
            import av

            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        self.n = 0  # 16 kHz samples received
        self.k = 0  # windows encoded
        self._final = False
        self._samples = Ring((), np.float32, 1 << 16)
        self._mel = Ring((N_MELS,), np.float32, 512)
        self._t = 0  # mel frames computed
        self._block = 0  # mel block not yet verified
        self._block_rows = np.empty((_MEL_BLOCK, N_MELS), np.float32)
        self._emb = Ring((FEATURE_WIDTH,), np.float32, 128)
        self._vq = 0  # encoder batch being collected for verification
        self._vwin = np.empty((ENCODER_BATCH, 1, N_MELS, ENC_MEL_WINDOW), np.float32)
        self._vemb = np.empty((ENCODER_BATCH, FEATURE_WIDTH), np.float32)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add a chunk (checked, converted, resampled); returns its 16 kHz samples."""
        x = self._to_16k(samples)
        if x.size:
            self._samples.append(x)
            self.n += x.size
        return x

    def flush(self) -> np.ndarray:
        """The end of the audio: the resampler's last samples (none at 16 kHz), added and returned."""
        if self._resampler is None:
            return np.zeros(0, np.float32)
        tail = self._resampled(None)
        if tail.size:
            self._samples.append(tail)
            self.n += tail.size
        return tail

    def advance(self, final: bool) -> None:
        """Compute every mel row and embedding that is final (``final``: the audio ended, compute the rest)."""
        self._final = self._final or final
        self._advance_mel(final)
        self._advance_encoder(final)

    def drop_embeddings_before(self, k: int) -> None:
        """Embeddings before ``k`` are never read again."""
        self._emb.drop_before(k)

    def buffer_sizes(self) -> dict[str, int]:
        """Rows held and allocated by each buffer."""
        return {"samples": len(self._samples), "samples_capacity": self._samples.capacity,
                "mel_rows": len(self._mel), "mel_capacity": self._mel.capacity,
                "embeddings": len(self._emb), "embeddings_capacity": self._emb.capacity}

    def audio_for(self, idx: list[int], total: int | None, mode: str) -> np.ndarray:
        """The model's audio windows of output frames ``idx`` (``total``: the frame count, once the audio ended)."""
        out = np.zeros((len(idx), WINDOW, FEATURE_WIDTH), np.float32)
        n_emb = self.k
        for slot, i in enumerate(idx):
            for r in range(WINDOW):
                row = i - WINDOW_LEFT + r
                if row < 0 or (total is not None and row >= total):
                    continue
                k = min(max(row - 1, 0), n_emb - 1)
                out[slot, r] = self._emb.view(k, k + 1)[0]
        return out.reshape(len(idx), *audio_shape(mode))

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
            raise StreamError(f"samples {self.n + int(np.argmin(np.isfinite(x)))}: not finite")
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
        exact = mel_frames(x, b0, t1, self.n, x0)  # complete frames never reach n: same as the final length
        done = self._t - b0
        if done > 0:
            if self.verify or self._final:
                self.stats.mel_mismatch_rows += int((exact[:done] != self._block_rows[:done]).any(axis=1).sum())
            lo = max(self._mel.start, b0)
            if lo < self._t:
                self._mel.view(lo, self._t)[:] = exact[lo - b0:done]
        if t1 > self._t:
            self._store_rows(self._t, exact[done:])
            self._t = t1
        self.stats.mel_blocks_verified += 1

    def _advance_mel(self, final: bool) -> None:
        n = self.n
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
        done = self.k - q0
        emb = np.asarray(self.encode(np.ascontiguousarray(self._vwin[:count])), dtype=np.float32)
        self.stats.encoder_mismatch_windows += int((emb[:done] != self._vemb[:done]).any(axis=1).sum())
        self.stats.encoder_batches_verified += 1
        lo = max(self._emb.start, q0)
        if lo < self.k:
            self._emb.view(lo, self.k)[:] = emb[lo - q0:done]
        if count > done:
            self._emb.append(emb[done:count])
            self.k = q0 + count

    def _advance_encoder(self, final: bool) -> None:
        bt = self.batching
        if final:
            total_mel = self._t
            n_windows = window_count(total_mel)
            ready = exists = n_windows
        else:
            total_mel = None
            t_exist = mel_frame_count(self.n)
            exists = window_count(t_exist) if t_exist >= ENC_MEL_WINDOW else 0
            ready = self.k
            while ready < exists and window_start(ready) + ENC_MEL_WINDOW <= self._t:
                ready += 1
        while self.k < ready:
            q = self.k // ENCODER_BATCH
            q0, q1 = q * ENCODER_BATCH, (q + 1) * ENCODER_BATCH
            self._vq = q
            last = final and q1 >= ready
            if last:
                # The offline path's last call: windows q0..N-1 in one batch; encode what is missing first.
                for j in range(self.k, ready):
                    self._vwin[j - q0] = self._window_rows(j, total_mel)
                self._exact_batch(ready - q0)
                break
            if not final and (exists < q0 + bt.min_batch or (not bt.shift_invariant and ready < q1)):
                break  # the offline call for this batch might not be a canonical size (or not this alignment)
            k1 = min(ready, q1)
            if not bt.shift_invariant:
                k1 = q1
                if self.k > q0:
                    raise StreamError("internal: partial batch with a slot-dependent encoder")
            emb = self._encode_range(self.k, k1, total_mel)
            self._emb.append(emb)
            self.k = k1
            if self.k == q1:
                if self.verify:
                    self._exact_batch(ENCODER_BATCH)
                self._vq = q + 1
        self.stats.windows = self.k
        # Rows before the next window's start (less a window, for the end pull-back) are never read again.
        self._mel.drop_before(max(0, window_start(self.k) - ENC_MEL_WINDOW))
