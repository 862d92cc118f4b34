"""Live streaming: speech in chunks of any size, rendered frames out as soon as their audio context is complete, equal
to the offline render of the same whole audio.

The audio half (mel rows and encoder embeddings, each computed once final, and the two numerical details that keep
them bit-equal to the offline path's) is :mod:`framegen.toolkit.frames.stream_audio`. Here: the session that turns
embeddings into frames (ping-pong order is a closed form of the frame index, :meth:`PreparedTemplate.template_index`:
nothing to hold; inference on the backend's worker threads with at most ``2 * workers`` groups in flight), the audio
sources (files, raw PCM on stdin), and the runner that plays a source through a session into an mp4 and/or PNGs.

Memory is bounded for any length: the audio half's buffers, and at most ``2 * workers`` frames in flight.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np
from framegen.models.contract import (
    FPS,
    INNER_SIZE,
    MIN_SAMPLES,
    SAMPLE_RATE,
    WINDOW,
    WINDOW_LEFT,
)
from framegen.models.pixels import pred_to_uint8
from framegen.runtimes.base import Backend
from framegen.toolkit.frames.stream_audio import (
    MAX_CHANNELS,
    Encoder,
    EncoderBatching,
    StreamError,
    StreamFeatures,
    StreamStats,
    context_samples,
    encoder_batching,
    lookahead_ms,
    seed_batching,
    window_start,
)
from framegen.toolkit.frames.video import DEFAULT_PRESET, FramesDirWriter, VideoWriter, check_video_size
from framegen.toolkit.inputs.audio import AudioError, decoded_blocks
from framegen.toolkit.inputs.preprocess import PreparedTemplate, cv2_single_thread, paste_back

__all__ = ["MAX_CHANNELS", "MAX_CHUNK_MS", "EncoderBatching", "PlayResult", "StreamError", "StreamFrame",
           "StreamRunStats", "StreamSession", "StreamStats", "chunk_samples", "context_samples", "encoder_batching",
           "iter_audio_file", "iter_pcm", "lookahead_ms", "percentiles", "play", "seed_batching", "stdin_chunks",
           "stream_to_files", "window_start"]


# --------------------------------------------------------------------------------------------------- session


class StreamFrame(NamedTuple):
    """One streamed frame: index ``i``, presentation time ``i / fps`` s, the template frame used, the pasted BGR
    uint8 frame, and the number of input samples (16 kHz) that had arrived when its context was complete."""

    i: int
    time: float
    template_index: int
    frame: np.ndarray
    context_samples: int


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
        self.audio = StreamFeatures(encode, self.batching, self.stats, verify=verify, input_rate=input_rate)
        self.last_samples = np.zeros(0, np.float32)  # the last feed's samples at 16 kHz (what a muxer needs)
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
    def input_rate(self) -> int:
        """The sample rate ``feed`` takes (resampled to 16 kHz)."""
        return self.audio.input_rate

    @property
    def samples(self) -> int:
        """16 kHz samples received so far."""
        return self.audio.n

    def feed(self, samples: np.ndarray) -> list[StreamFrame]:
        """Add a chunk of samples; returns the frames completed so far (possibly none), in order."""
        if self._total is not None or self._closed:
            raise StreamError("feed() after finish() or close()")
        self.last_samples = self.audio.push(samples)
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
        self.last_samples = self.audio.flush()
        if self.audio.n < MIN_SAMPLES:
            raise AudioError(f"audio too short ({self.audio.n / SAMPLE_RATE:.3f} s); SyncTalk_2D needs at least "
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
        return {**self.audio.buffer_sizes(), "inflight": len(self._inflight)}

    # ------------------------------------------------------------------------------------------- frames

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
            self._total = self.audio.k + 2
            ready = self._total
        else:
            ready = max(0, self.audio.k - (WINDOW - WINDOW_LEFT - 2))  # frame i needs windows 0..i+6
        while self._i < ready:
            g1 = min(self._i + self.batch - self._i % self.batch, ready)
            if g1 - self._i < self.batch - self._i % self.batch and not final:
                break  # the render's batch grid: a group is inferred whole
            idx = list(range(self._i, g1))
            audio = self.audio.audio_for(idx, self._total, self.backend.mode)
            while len(self._inflight) >= self._limit:
                # Backpressure: wait for the oldest group instead of queueing more (its frames wait in _done).
                self._done.extend(self._inflight.popleft().result())
            self._inflight.append(self._pool.submit(self._render, idx, audio, self.audio.n))
            self._i = g1
        self.audio.drop_embeddings_before(self._i - WINDOW_LEFT - 1)

    def _advance(self, final: bool) -> None:
        self.stats.samples = self.audio.n
        self.audio.advance(final)
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
