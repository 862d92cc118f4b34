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
import heapq
import math
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np
from framegen.models.contract import (
    FPS,
    INNER_SIZE,
    LATENCY_BUDGET_MS,
    MIN_SAMPLES,
    SAMPLE_RATE,
    WINDOW,
    WINDOW_LEFT,
    audio_shape,
)
from framegen.models.errors import first_line
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

#: Renders a latency budget's estimate looks back over (about 0.6 s at 25 fps: recent enough to follow the machine's
#: load, long enough that one slow frame does not hold the next ones).
DURATION_WINDOW = 16
#: Renders timed before a latency budget holds anything (until then every frame is inferred).
MIN_DURATIONS = 3
#: The percentile of those renders a latency budget expects the next one to take: a frame predicted in time still
#: comes late when its render is slower than this, so the budget's p99 rests on it.
LATE_QUANTILE = 90


class StreamFrame(NamedTuple):
    """One streamed frame: index ``i``, presentation time ``i / fps`` s, the template frame used, the pasted BGR
    uint8 frame, the number of input samples (16 kHz) that had arrived when its context was complete, and whether
    it is ``held`` (a degrading session had no free worker for it: the previous frame again)."""

    i: int
    time: float
    template_index: int
    frame: np.ndarray | None
    context_samples: int
    held: bool = False


class StreamSession:
    """Incremental render of a live speech stream (see the module docstring for what is held back and why).

    ``feed(samples)`` takes 16 kHz mono float32 or int16 chunks of any size (``input_rate`` other than 16 kHz is
    resampled with PyAV; 2-D ``(n, channels)`` input is averaged over channels) and returns the frames finished so
    far, in order; ``poll(timeout)`` waits for more; ``finish()`` flushes the end and returns the rest. Inference
    runs on ``backend.concurrent_workers`` threads with at most ``2 * workers`` groups in flight: when the backend
    is slower than the audio, ``feed`` blocks instead of queueing, so memory stays flat.

    Frames equal ``render(template, ave_features(melspectrogram(all samples), encode), backend, batch=batch)``
    frame for frame, bit for bit (``stats.exact`` reports the two numerical risks described in the module).

    ``degrade``: a live source cannot wait. Instead of blocking ``feed`` when every worker is busy (the stream would
    drift behind the speech without bound), a frame whose turn comes then is *held*: it is not inferred, and the
    previous frame is shown again (``StreamFrame.held``, ``stats.held_frames``). At most one group per worker is
    computed and one more waits, so the next frame to be inferred is always one of the newest whose audio is complete.
    Frames that are not held still equal the offline render's.

    ``latency_budget`` (seconds; with ``degrade``): a frame that would have to wait for a worker is also held when it
    would then leave the session later than this after its audio context was complete (that moment is mapped from
    the feed's arrival, ``feed(at=...)``, and the samples past the context, as a source paced at real time delivers
    them). A render is expected to take the :data:`LATE_QUANTILE` th percentile of the last :data:`DURATION_WINDOW`,
    counted from when a worker will be free. Until :data:`MIN_DURATIONS` renders are timed, ``render_seconds`` (the
    start-up measurement's time per frame) stands in; without it, nothing is held for lateness until then.
    """

    def __init__(self, template: PreparedTemplate, backend: Backend, encode: Encoder, *, start_frame: int = 0,
                 batch: int = 1, input_rate: int = SAMPLE_RATE, batching: EncoderBatching | None = None,
                 verify: bool = True, max_inflight: int | None = None, degrade: bool = False,
                 latency_budget: float | None = None, render_seconds: float | None = None) -> None:
        if backend.mode != "ave":
            raise StreamError(f"{backend.name}: streaming computes 'ave' features; the generator is {backend.mode!r}")
        if batch < 1:
            raise StreamError(f"--batch {batch}: must be at least 1")
        if input_rate <= 0:
            raise StreamError(f"input sample rate {input_rate}: must be positive")
        if latency_budget is not None and not latency_budget > 0:
            raise StreamError(f"latency budget {latency_budget} s: must be positive (None: no budget)")
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
        self.degrade = bool(degrade)
        self.latency_budget = latency_budget if degrade else None
        self._workers = workers
        self._limit = max_inflight or (workers + 1 if degrade else 2 * workers)
        self._durations: deque[float] = deque(maxlen=DURATION_WINDOW)  # wall seconds of the last renders
        self._prior = render_seconds
        self._fed_at = 0.0  # when the last feed's samples arrived (perf_counter)
        self._last_frame: np.ndarray | None = None  # what a held frame shows
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="framegen-stream")
        # each group: its future and, once a worker has taken it, [start time]
        self._inflight: deque[tuple[Future[list[StreamFrame]], list[float]]] = deque()
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

    def feed(self, samples: np.ndarray, *, at: float | None = None) -> list[StreamFrame]:
        """Add a chunk of samples; returns the frames completed so far (possibly none), in order. ``at``: when the
        chunk's last sample arrived (``time.perf_counter()``; default now), what a latency budget counts from."""
        if self._total is not None or self._closed:
            raise StreamError("feed() after finish() or close()")
        self._fed_at = time.perf_counter() if at is None else float(at)
        self.last_samples = self.audio.push(samples)
        self._advance(final=False)
        return self._collect(block=False)

    def poll(self, timeout: float | None = 0.0) -> list[StreamFrame]:
        """Frames completed so far; waits up to ``timeout`` seconds (``None``: until one group is done)."""
        if self._inflight and timeout != 0.0:
            with contextlib.suppress(TimeoutError):
                self._inflight[0][0].exception(timeout=timeout)
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
        for f, _ in self._inflight:
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

    def _timed_render(self, idx: list[int], audio: np.ndarray, ctx: int, clock: list[float]) -> list[StreamFrame]:
        clock.append(time.perf_counter())
        out = self._render(idx, audio, ctx)
        self._durations.append(time.perf_counter() - clock[0])
        return out

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
            busy = self._busy() >= self._limit if self.degrade and not final and self._i > 0 else None
            if busy is not None and (busy or self._late(idx[0])):
                if not busy:
                    self.stats.held_late_frames += len(idx)
                self._inflight.append((self._held(idx), []))
                self._i = g1
                continue
            audio = self.audio.audio_for(idx, self._total, self.backend.mode)
            while len(self._inflight) >= self._limit:
                # Backpressure: wait for the oldest group instead of queueing more (its frames wait in _done).
                self._done.extend(self._inflight.popleft()[0].result())
            clock: list[float] = []
            self._inflight.append((self._pool.submit(self._timed_render, idx, audio, self.audio.n, clock), clock))
            self._i = g1
        self.audio.drop_embeddings_before(self._i - WINDOW_LEFT - 1)

    def _advance(self, final: bool) -> None:
        self.stats.samples = self.audio.n
        self.audio.advance(final)
        self._advance_frames(final)

    def _busy(self) -> int:
        """Groups a worker is still computing (finished and held ones wait only to be handed out in order)."""
        return sum(1 for f, _ in self._inflight if not f.done())

    def _late(self, first: int) -> bool:
        """Would a group starting with frame ``first``, submitted now, leave after its latency budget?"""
        if self.latency_budget is None:
            return False
        if len(self._durations) >= MIN_DURATIONS:
            took = float(np.percentile(self._durations, LATE_QUANTILE))
        elif self._prior is not None:
            took = max(self._prior, *self._durations) if self._durations else self._prior
        else:
            return False
        now = time.perf_counter()
        free: list[float] = []  # when each worker is free again
        queued = 0
        for f, clock in self._inflight:
            if f.done():
                continue
            if clock:
                free.append(max(clock[0] + took, now))
            else:
                queued += 1
        free += [now] * max(0, self._workers - len(free))
        heapq.heapify(free)
        for _ in range(queued):
            heapq.heapreplace(free, free[0] + took)
        if free[0] <= now:
            # A worker is free: holding the frame would make nothing else earlier, and the renders it times keep the
            # estimate current (were idle workers' frames held too, one slow stretch could hold every frame after).
            return False
        context_at = self._fed_at - (self.audio.n - context_samples(first)) / SAMPLE_RATE
        return free[0] + took > context_at + self.latency_budget

    def _held(self, idx: list[int]) -> Future[list[StreamFrame]]:
        """A finished group for frames no worker was free for: filled with the previous frame when collected."""
        t = self.template
        done: Future[list[StreamFrame]] = Future()
        done.set_result([StreamFrame(i, i / self.fps, t.template_index(i, self.start_frame), None, self.audio.n,
                                     held=True) for i in idx])
        self.stats.held_frames += len(idx)
        return done

    def _collect(self, block: bool) -> list[StreamFrame]:
        out, self._done = self._done, []
        while self._inflight and (block or self._inflight[0][0].done()):
            out.extend(self._inflight.popleft()[0].result())
        for k, f in enumerate(out):
            if f.held:
                out[k] = f._replace(frame=self._last_frame)
            else:
                self._last_frame = f.frame
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
    writer takes them as soon as the video reaches them). Pushed from the feeding thread, taken by the writer's."""

    layout = "mono"
    rate = SAMPLE_RATE

    def __init__(self) -> None:
        self._pending: deque[np.ndarray] = deque()
        self._held = 0
        self._lock = threading.Lock()
        self.exhausted = False

    @property
    def done(self) -> bool:
        with self._lock:
            return self.exhausted and self._held == 0

    def push(self, x: np.ndarray) -> None:
        if x.size:
            with self._lock:
                self._pending.append(np.ascontiguousarray(x, dtype=np.float32))
                self._held += x.size

    def take(self, count: int) -> np.ndarray:
        with self._lock:
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
        with self._lock:
            self._pending.clear()
            self._held = 0


class _WriterThread:
    """Writes streamed frames on a thread of its own, so that encoding never delays handing out the next frame; at
    most ``depth`` frames wait (a writer that falls behind slows the stream instead of growing a queue). An error in
    the writer is raised in the feeding thread at the next frame or at ``close``."""

    def __init__(self, write: Callable[[StreamFrame], None], depth: int = 8) -> None:
        self._write = write
        self._queue: queue.Queue[StreamFrame | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="framegen-stream-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            f = self._queue.get()
            if f is None:
                return
            if self._error is None:
                try:
                    self._write(f)
                except BaseException as exc:  # handed to the feeding thread, which raises it
                    self._error = exc

    def __call__(self, f: StreamFrame) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(f)

    def close(self) -> None:
        """Write what is queued, stop the thread, raise the writer's error if it had one."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


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


#: How a live stream opens its backend: one inference at a time on every core, since a frame's latency is one
#: inference (OpenVINO bf16, 2-core AMX Xeon: p99 513 ms after the frame's own time, against 536 ms with one
#: single-thread inference per core).
LIVE_OPTIONS: dict[str, Any] = {"workers": 1}

#: A live stream keeps up when the start-up measurement renders this much faster than the frame rate: the rest of
#: the live loop (mel rows, encoder windows, H.264 of each frame) runs on the same cores.
KEEP_UP_HEADROOM = 1.15


def measure_render(template: PreparedTemplate, backend: Backend, *, frames: int | None = None,
                   start_frame: int = 0) -> tuple[float, list[float]]:
    """Frames per second this backend sustains on this template as a stream renders them (prepare, infer, paste;
    one frame per worker in parallel), measured after one warm-up frame per worker, with silent audio; and each
    frame's render time (seconds, from its start to its paste), which :func:`predict_live` replays."""
    workers = max(1, int(getattr(backend, "concurrent_workers", 1)))
    count = frames or max(12, 6 * workers)
    audio = np.zeros((1, *audio_shape(backend.mode)), np.float32)
    took: list[float] = []

    def one(i: int) -> None:
        t = time.perf_counter()
        p = template.prepared(template.template_index(i, start_frame))
        pred = backend.infer(p.image_input()[None], audio)
        paste_back(template.frame(p.index), p.box, p.crop328, pred_to_uint8(pred[0]))
        took.append(time.perf_counter() - t)

    with cv2_single_thread(), ThreadPoolExecutor(max_workers=workers, thread_name_prefix="framegen-rate") as pool:
        list(pool.map(one, range(workers)))
        took.clear()
        t0 = time.perf_counter()
        list(pool.map(one, range(count)))
        return count / (time.perf_counter() - t0), list(took)


def measure_rate(template: PreparedTemplate, backend: Backend, *, frames: int | None = None,
                 start_frame: int = 0) -> float:
    """The frames per second of :func:`measure_render`."""
    return measure_render(template, backend, frames=frames, start_frame=start_frame)[0]


#: Where one inference at a time does not keep up, the render's layout replaces it when it renders at least this
#: fast relative to it. Parity is enough: single-thread inferences lose less to the stream's own threads (audio
#: features, H.264) than one inference spread over every core. AMD EPYC Zen 4, OpenVINO bf16, 20 s live: one at a
#: time measured 27.6 fps against 28.6 and then held 119 of 500 frames; three single-thread inferences held 0.
LAYOUT_GAIN = 1.0
#: Frames each layout renders while it is measured: about 1 s at real time (over 12 frames, as the start-up check
#: measures, one layout's rate moved by up to 20 % between runs).
LAYOUT_FRAMES = 24


#: A layout can keep a latency budget when one frame's render takes at most this share of it: the rest is the
#: chunk the context completed in and the wait for a worker.
BUDGET_SHARE = 0.75


@dataclass(frozen=True)
class LiveLayout:
    """How a live stream runs its model, chosen at start-up by :func:`choose_live_layout`."""

    workers: int
    measured_fps: dict[int, float]  # workers -> frames/s measured at start-up
    note: str
    #: workers -> ms one frame's render takes in that layout (workers / rate): the least latency it can give
    frame_ms: dict[int, float] = field(default_factory=dict)
    #: the budget the stream holds frames to (``None``: none asked)
    latency_budget_ms: float | None = None
    #: the chosen layout's render time per frame as measured, ms (what :func:`predict_live` replays)
    render_ms: list[float] = field(default_factory=list)


def choose_live_layout(template: PreparedTemplate, live: Backend, open_wider: Callable[[], Backend] | None, *,
                       start_frame: int = 0, latency_budget_ms: float | None = LATENCY_BUDGET_MS,
                       ) -> tuple[Backend, LiveLayout]:
    """The backend a live stream runs on, chosen by measurement (:func:`_choose_live_layout`); the chosen one's
    ``info.extra["live_layout"]`` records the choice."""
    chosen, layout = _choose_live_layout(template, live, open_wider, start_frame=start_frame,
                                         budget_ms=latency_budget_ms)
    chosen.info.extra["live_layout"] = asdict(layout)
    return chosen, layout


def _choose_live_layout(template: PreparedTemplate, live: Backend, open_wider: Callable[[], Backend] | None, *,
                        start_frame: int = 0, budget_ms: float | None = None) -> tuple[Backend, LiveLayout]:
    """The backend a live stream runs on, chosen by measurement.

    ``live`` runs one inference at a time on every core: the lowest latency per frame. When it keeps up
    (:data:`KEEP_UP_HEADROOM`) it is kept without trying anything else. When it does not, ``open_wider()`` opens
    the render's layout (one single-thread inference per core, and one more), which feeds a CPU better (AMD EPYC
    Zen 4, OpenVINO bf16: 0-18 frames held where one at a time held 119-422) but takes longer per frame.

    With a latency budget (``budget_ms``), a layout qualifies when one frame's render fits :data:`BUDGET_SHARE` of it;
    of those that qualify, the one that renders faster runs (ties to the wider one). Where none qualifies, the one
    with the least latency per frame runs, and the budget is kept: a frame an idle worker can start is always
    rendered (:class:`StreamSession`), so the stream shows fewer frames, each as early as this CPU can, rather than
    every frame later (Zen 4 EPYC, ONNX Runtime fp32: the wide layout's p99 was 562 ms beyond the lookahead).
    Without a budget the faster layout runs (at least :data:`LAYOUT_GAIN` x for the wider one). The backend not
    chosen is closed. ``open_wider=None``: the backend renders one inference at a time anyway (its registry spec asks
    for no more workers).
    """
    fps = FPS[live.mode]
    need = fps * KEEP_UP_HEADROOM
    template.warm(start=start_frame)  # both measurements see prepared frames, not the first one alone
    one = max(1, int(getattr(live, "concurrent_workers", 1)))
    measure_rate(template, live, frames=4, start_frame=start_frame)  # warm: OpenVINO's first calls run slow
    rate, took = measure_render(template, live, frames=LAYOUT_FRAMES, start_frame=start_frame)
    timed = {one: took}

    def fits(workers: int, r: float) -> bool:
        return budget_ms is None or 1000.0 * workers / r <= budget_ms * BUDGET_SHARE

    def layout(workers: int, measured: dict[int, float], note: str) -> LiveLayout:
        frame_ms = {w: round(1000.0 * w / r, 1) for w, r in measured.items()}
        if budget_ms is not None:
            note += f"; frames that would leave more than {budget_ms:.0f} ms after their audio lookahead are held"
            if not fits(workers, measured[workers]):
                note += (f"; one frame takes {frame_ms[workers]:.0f} ms here, over {BUDGET_SHARE:.0%} of the budget, "
                         f"so the frames shown come late too")
        return LiveLayout(workers, {w: round(r, 2) for w, r in measured.items()}, note, frame_ms, budget_ms,
                          [round(1000.0 * t, 2) for t in timed[workers]])

    if rate >= need:
        return live, layout(one, {one: rate}, f"{one} inference at a time: {rate:.1f} fps, keeps up")
    if open_wider is None:
        return live, layout(one, {one: rate}, f"{one} inference at a time: {rate:.1f} fps (the render's layout is "
                            "the same here)")
    try:
        wider = open_wider()
    except Exception as exc:  # a second session may not fit (device memory, a server's limits)
        return live, layout(one, {one: rate}, f"{one} inference at a time: {rate:.1f} fps (the render's layout "
                            f"could not be opened: {first_line(exc)})")
    many = max(1, int(getattr(wider, "concurrent_workers", 1)))
    if many <= one:
        wider.close()
        return live, layout(one, {one: rate}, f"{one} inference at a time: {rate:.1f} fps")
    try:
        measure_rate(template, wider, frames=2 * many, start_frame=start_frame)
        rate_wide, timed[many] = measure_render(template, wider, frames=LAYOUT_FRAMES, start_frame=start_frame)
    except BaseException:  # the caller holds only ``live``: the backend opened here is closed here
        wider.close()
        raise
    measured = {one: rate, many: rate_wide}
    said = f"{one} inference at a time {rate:.1f} fps, {many} single-thread inferences {rate_wide:.1f} fps"
    faster_wide = rate_wide >= rate * LAYOUT_GAIN
    fit_one, fit_wide = fits(one, rate), fits(many, rate_wide)
    if fit_one != fit_wide:
        take_wide, why = fit_wide, "the only one within the budget"
    elif fit_one or budget_ms is None:
        take_wide = faster_wide
        why = "higher throughput, more latency per frame" if faster_wide else "the lower latency"
    else:  # neither fits: the least latency per frame (one at a time, unless the wide layout is faster per frame)
        take_wide, why = many / rate_wide < one / rate, "the least latency per frame; neither fits the budget"
    if take_wide:
        live.close()
        return wider, layout(many, measured, f"{said}: the stream runs {many} ({why})")
    wider.close()
    return live, layout(one, measured, f"{said}: the stream runs {one} ({why})")


#: Frames :func:`predict_live` plays (a minute at 25 fps: the bench's live stream).
PREDICT_FRAMES = 1500


def predict_live(render_s: Iterable[float], *, fps: int, workers: int, chunk_s: float,
                 budget_s: float | None, load: float = KEEP_UP_HEADROOM, frames: int = PREDICT_FRAMES,
                 seed: int = 0) -> dict[str, float]:
    """What a live stream will do with renders like ``render_s`` (seconds each, as :func:`measure_render` timed them
    with the cores to themselves): a paced source of ``chunk_s`` chunks replayed through the session's own rules,
    each render drawn from ``render_s`` x ``load`` (the stream's own work shares the cores: an OpenVINO int8 render
    took 37 ms at start-up and 44 ms in the stream).

    The rules are :class:`StreamSession`'s with ``degrade``: a frame is submitted when the chunk that completes its
    audio context arrives; a free worker takes it at once; with every worker busy it is held when one more waits
    already, or (``budget_s``) when the estimate (the earliest worker's start plus the :data:`LATE_QUANTILE` th
    percentile of the last :data:`DURATION_WINDOW` finished renders, then one more) passes its context time plus the
    budget; otherwise it waits. Frames leave in order. Returns ``held_share`` and the p50 / p99 ms from each frame's
    lookahead to its leaving (``beyond_p50_ms``, ``beyond_p99_ms``), as ``bench --stream`` measures them."""
    draws = np.random.default_rng(seed).choice(np.asarray(list(render_s), np.float64) * load, size=frames)
    prior = float(np.mean(draws))
    running: list[tuple[float, float]] = []  # (start, end) of submitted renders
    window: deque[float] = deque(maxlen=DURATION_WINDOW)
    finished: list[tuple[float, float]] = []  # (end, duration), a heap
    held, left, beyond = 0, 0.0, []
    for k in range(frames):
        ctx = context_samples(k) / SAMPLE_RATE
        at = math.ceil(ctx / chunk_s - 1e-9) * chunk_s  # the arrival of the chunk that completes it
        while finished and finished[0][0] <= at:
            window.append(heapq.heappop(finished)[1])
        running = [r for r in running if r[1] > at]
        hold = False
        if k and len(running) > workers:
            hold = True
        elif k and len(running) == workers and budget_s is not None:
            took = (float(np.percentile(window, LATE_QUANTILE)) if len(window) >= MIN_DURATIONS
                    else max(prior, *window) if window else prior)
            hold = max(min(r[0] for r in running) + took, at) + took > ctx + budget_s
        if hold:
            held += 1
            left = max(left, at)
        else:
            ends = sorted(r[1] for r in running)
            start = max(at, ends[0]) if len(ends) >= workers else at
            end = start + float(draws[k])
            running.append((start, end))
            heapq.heappush(finished, (end, float(draws[k])))
            left = max(left, end)
        beyond.append(1000.0 * (left - ctx))
    return {"held_share": round(held / frames, 4), "beyond_p50_ms": round(float(np.percentile(beyond, 50)), 1),
            "beyond_p99_ms": round(float(np.percentile(beyond, 99)), 1)}


#: A live stream is said to keep up when :func:`predict_live` holds fewer than this share of its frames.
HELD_SHARE_NOTICED = 0.01


def keep_up_note(what: str, rate: float, fps: int, predicted: dict[str, float],
                 budget_ms: float | None = None) -> str:
    """The start-up verdict for a backend that renders ``rate`` frames/s where a live stream needs ``fps``.

    The stream's own work (mel rows, encoder windows, H.264) takes the headroom's share of the cores (``fps`` x
    :data:`KEEP_UP_HEADROOM`). ``predicted`` (:func:`predict_live`) gives the share of frames the stream will hold and
    its latency beyond the lookahead.
    """
    need = fps * KEEP_UP_HEADROOM
    head = f"{what} renders {rate:.1f} fps here (measured at start-up; a live stream needs {fps} and {need:.1f} with " \
        "headroom): "
    share = predicted["held_share"]
    tail = (f" (predicted from the start-up's render times: p50 / p99 {predicted['beyond_p50_ms']:.0f} / "
            f"{predicted['beyond_p99_ms']:.0f} ms beyond the audio lookahead)")
    if rate >= need and share < HELD_SHARE_NOTICED:
        return head + "keeps up" + tail
    if rate < fps:
        verdict = "cannot keep up"
    elif rate < need:
        verdict = "keeps up without headroom for the stream's own work"
    elif budget_ms:
        verdict = f"keeps up, but not every frame within the {budget_ms:.0f} ms latency budget"
    else:
        verdict = "keeps up on average, but its slowest renders leave some frames no free worker"
    why = (f"whose turn comes while every worker is busy, or that would leave more than {budget_ms:.0f} ms after "
           "their audio lookahead," if budget_ms else "whose turn comes while every worker is busy")
    return (head + f"{verdict}; frames {why} are held (the previous frame shows again, about {share:.0%} of them) so "
            f"that the video stays in step with the speech" + tail)


def startup_check(template: PreparedTemplate, backend: Backend, encode: Encoder, batching: EncoderBatching, *,
                  start_frame: int = 0, video: bool = False, latency_budget_ms: float | None = None,
                  chunk_s: float = 0.02) -> dict[str, Any]:
    """Before a live stream starts: prepare the template frames (so neither time nor memory grows later), run one
    half a second of silence through a throwaway session (every code path warm: the first frames of the real stream
    were 50-120 ms late without it), and measure whether this backend keeps up (:func:`measure_render` against the
    frame rate x :data:`KEEP_UP_HEADROOM`, or what :func:`choose_live_layout` measured when it chose this backend).
    Those render times, replayed by :func:`predict_live` with ``chunk_s`` chunks and the latency budget, give
    ``predicted`` (the share of frames held, the latency beyond the lookahead); ``keeps_up`` when the rate has its
    headroom and under :data:`HELD_SHARE_NOTICED` are predicted held. ``note`` says what the stream will do.
    ``video``: the stream encodes video, so the template frames' I420 forms are made now too."""
    t0 = time.perf_counter()
    prepared = template.warm(start=start_frame, i420=video)
    with StreamSession(template, backend, encode, start_frame=start_frame, batching=batching, verify=False) as dry:
        dry.feed(np.zeros(SAMPLE_RATE // 2, np.float32))
        dry.finish()
    layout = backend.info.extra.get("live_layout")
    workers = max(1, int(getattr(backend, "concurrent_workers", 1)))
    # the layout chooser has just measured this backend over more frames; a second measurement only delays the start
    if layout:
        rate = float(layout["measured_fps"][layout["workers"]])
        took = [t / 1000.0 for t in layout.get("render_ms") or []] or [workers / rate]
    else:
        rate, took = measure_render(template, backend, start_frame=start_frame)
    fps = FPS[backend.mode]
    need = fps * KEEP_UP_HEADROOM
    predicted = predict_live(took, fps=fps, workers=workers, chunk_s=chunk_s,
                             budget_s=latency_budget_ms / 1000.0 if latency_budget_ms else None)
    keeps_up = rate >= need and predicted["held_share"] < HELD_SHARE_NOTICED
    note = keep_up_note(f"{backend.name} {backend.info.precision}", rate, fps, predicted, latency_budget_ms)
    return {"fps": round(rate, 2), "needed_fps": round(need, 2), "keeps_up": keeps_up, "predicted": predicted,
            "template_frames_prepared": prepared, "seconds": round(time.perf_counter() - t0, 2), "note": note}


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
    frame_latency_ms: dict[str, float] = field(default_factory=dict)
    beyond_lookahead_ms: dict[str, float] = field(default_factory=dict)
    held_frames: int = 0
    startup: dict[str, Any] | None = None
    end_frames: int = 0
    end_flush_ms: float = 0.0
    layout: dict[str, Any] | None = None  # a live stream's :class:`LiveLayout`, when it chose one
    #: a live stream's latency budget past each frame's lookahead (frames that would be later are held)
    latency_budget_ms: float | None = None

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
    """What :func:`play` measured: frames, wall seconds, latency per frame (ms) from the arrival of its context and
    from its own time in the stream, largest in-flight count, frames held."""

    frames: int
    seconds: float
    latencies_ms: list[float]
    max_inflight: int
    frame_latencies_ms: list[float] = field(default_factory=list)
    held: int = 0
    #: frame latency less the frame's own algorithmic lookahead (:func:`context_samples`): what chunking, queueing
    #: and computing added (paced runs only; frames finished mid-stream)
    beyond_lookahead_ms: list[float] = field(default_factory=list)
    #: the end: frames whose context only the end of the audio completed, and the time from the end to the last one
    end_frames: int = 0
    end_flush_ms: float = 0.0


def play(session: StreamSession, chunks: Iterable[np.ndarray], *, realtime: bool = False,
         sink: Callable[[StreamFrame], None] | None = None,
         on_samples: Callable[[np.ndarray], None] | None = None) -> PlayResult:
    """Feed ``chunks`` to ``session`` as a live source, hand every frame to ``sink`` in order, finish; time it.

    ``realtime`` paces the chunks at the speed of sound: chunk ``c`` is fed when its last sample would have been
    captured, and frames that finish meanwhile leave at once. A frame's latency runs from the arrival of the chunk
    that completed its context (its scheduled arrival when paced: a backend that falls behind is charged for the
    backlog) to the frame leaving the session; its *frame latency* from its own time in the stream (``i / fps`` s
    after the first sample; paced runs only: the algorithmic lookahead plus everything after it). Nothing queues: a
    session that is behind blocks ``feed``, or holds frames when it degrades. ``on_samples`` receives each chunk's
    16 kHz samples (a muxer's audio track).
    """
    latencies: list[float] = []
    frame_latencies: list[float] = []
    beyond: list[float] = []
    held = 0
    ended = False
    arrivals: deque[tuple[int, float]] = deque()  # (samples after chunk, arrival time), bounded by the lookahead
    count = 0
    most = 0

    def emit(frames: list[StreamFrame]) -> None:
        nonlocal count, held
        now = time.perf_counter()
        for f in frames:
            if f.i != count:
                raise StreamError(f"internal: frame {f.i} out of order (expected {count})")
            while arrivals and arrivals[0][0] < f.context_samples:
                arrivals.popleft()  # frames come in order: the first chunk left is the one that completed it
            latencies.append(1000.0 * (now - (arrivals[0][1] if arrivals else now)))
            if realtime:
                frame_latencies.append(1000.0 * (now - t0 - f.time))
                if not ended:  # the frames whose context the end completes are the end's flush, timed apart
                    beyond.append(frame_latencies[-1] - 1000.0 * (context_samples(f.i) / SAMPLE_RATE - f.time))
            held += f.held
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
        frames = session.feed(chunk, at=arrived_at)
        arrivals.append((session.samples, arrived_at))
        most = max(most, session.buffer_sizes()["inflight"])
        if on_samples is not None:
            on_samples(session.last_samples)
        emit(frames)
    end_at = time.perf_counter()
    ended = True
    tail = session.finish()
    if on_samples is not None:
        on_samples(session.last_samples)
    arrivals.append((session.samples, end_at))
    emit(tail)
    flush_ms = 1000.0 * (time.perf_counter() - end_at)
    return PlayResult(count, time.perf_counter() - t0, latencies, most, frame_latencies, held, beyond, len(tail),
                      flush_ms)


def stream_to_files(template: PreparedTemplate, backend: Backend, encode: Encoder, chunks: Iterable[np.ndarray], *,
                    out: str | os.PathLike[str] | None = None, frames_dir: str | os.PathLike[str] | None = None,
                    realtime: bool = False, start_frame: int = 0, batch: int = 1, crf: int = 20,
                    preset: str | None = None, on_frame: Callable[[StreamFrame], None] | None = None,
                    batching: EncoderBatching | None = None, chunk_samples: int = 0,
                    on_start: Callable[[dict[str, Any]], None] | None = None,
                    latency_budget_ms: float | None = None) -> StreamRunStats:
    """Play ``chunks`` (16 kHz mono float32 / int16 arrays) through a :class:`StreamSession` as a live source (see
    :func:`play`) and write the frames to an mp4 (H.264 + the streamed audio as AAC, frame k at k/fps s) and/or
    PNGs. Outputs appear only when complete (temporary names, renamed); an error or Ctrl-C leaves none.

    ``realtime``: a live stream. Before the first chunk, :func:`startup_check` prepares the template and measures
    whether the backend keeps up (``on_start`` gets its verdict); then the session degrades instead of drifting
    (:class:`StreamSession` ``degrade``, holding frames that would leave more than ``latency_budget_ms`` after their
    audio lookahead) and skips its self-check against the offline path (``verify``).
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
        batching = batching or encoder_batching(encode)
        startup = (startup_check(template, backend, encode, batching, start_frame=start_frame, video=video is not None,
                                 latency_budget_ms=latency_budget_ms,
                                 chunk_s=(chunk_samples or SAMPLE_RATE // 50) / SAMPLE_RATE)
                   if realtime else None)
        if startup is not None and on_start is not None:
            on_start(startup)
        # Live, the self-check of the incremental mel and encoder against the offline path is off: recomputing a
        # 25.6 s mel block stalled the feeding thread for ~100 ms every block (p99 frame latency 611 ms -> 522 ms
        # without it). The equality itself is what parity_tests/test_stream.py proves.
        session = stack.enter_context(StreamSession(template, backend, encode, start_frame=start_frame,
                                                    batch=batch, batching=batching, degrade=realtime,
                                                    verify=not realtime, latency_budget=(
                                                        latency_budget_ms / 1000.0 if latency_budget_ms else None),
                                                    render_seconds=_render_seconds(backend, startup)))

        def sink(f: StreamFrame) -> None:
            if video is not None:
                if f.held:  # the previous frame again: its I420 planes again, not a conversion of the whole frame
                    video.repeat()
                else:  # only the pasted box is converted to I420; the template frame's form is made once
                    video.write(f.frame, base_i420=template.frame_i420(f.template_index),
                                box=template.prepared(f.template_index).box)
            if pngs is not None:
                pngs.write(f.frame)
            if on_frame is not None:
                on_frame(f)

        # Encoding runs on its own thread: handing out frame k+1 never waits for frame k's H.264 (live, that is
        # latency; unpaced, it overlaps encoding with the next frames: ONNX Runtime int8 0.92x -> 0.97x model-only in
        # two table runs; OpenVINO's unpaced stream stayed at 0.70-0.73x, cause not found).
        writer = _WriterThread(sink)
        try:
            result = play(session, chunks, realtime=realtime, sink=writer,
                          on_samples=video.push_audio if video is not None else None)
        finally:
            writer.close()
        stats = session.stats
    return StreamRunStats(frames=result.frames, audio_seconds=round(stats.samples / SAMPLE_RATE, 4),
                          seconds=round(result.seconds, 4), realtime=realtime, chunk_samples=chunk_samples,
                          backend=backend.name, out=os.fspath(out) if out is not None else None,
                          frames_dir=os.fspath(frames_dir) if frames_dir is not None else None,
                          latency_ms=percentiles(result.latencies_ms), session=stats.as_dict(),
                          frame_latency_ms=percentiles(result.frame_latencies_ms),
                          beyond_lookahead_ms=percentiles(result.beyond_lookahead_ms), held_frames=result.held,
                          end_frames=result.end_frames, end_flush_ms=round(result.end_flush_ms, 1),
                          startup=startup, latency_budget_ms=latency_budget_ms if realtime else None)


def _render_seconds(backend: Backend, startup: dict[str, Any] | None) -> float | None:
    """One frame's render time as the start-up check measured it (workers / frames per second), if it ran."""
    if not startup or not startup.get("fps"):
        return None
    return max(1, int(getattr(backend, "concurrent_workers", 1))) / float(startup["fps"])


def stdin_chunks(chunk: int) -> Iterator[np.ndarray]:
    """``iter_pcm`` over the process's binary stdin."""
    return iter_pcm(sys.stdin.buffer, chunk)
