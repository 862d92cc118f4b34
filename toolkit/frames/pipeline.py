"""Ordered concurrent stages: a source and a chain of functions, each on its own thread(s), joined by bounded queues.

Rendering overlaps template reading/preprocessing, inference, paste-back and encoding. cv2, numpy, PyAV, ONNX
Runtime and PyTorch release the GIL in their heavy calls, so threads are enough and nothing is copied between
processes. Every item carries its sequence number; a stage with several workers hands its results on in sequence
order, so the consumer always sees the source's order, each item exactly once. Queues are bounded, so memory stays
flat however many items flow. The first exception in any stage stops everything and is re-raised to the consumer;
a consumer that stops early (``break``, an exception, KeyboardInterrupt) stops the threads too.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

_POLL = 0.05  # seconds between checks of the stop flag while blocked on a queue
_END = object()


@dataclass
class Stage:
    """One step of a pipeline: ``fn(item) -> result`` run by ``workers`` threads."""

    name: str
    fn: Callable[[Any], Any]
    workers: int = 1
    queue_size: int = 2  # items waiting in front of this stage


@dataclass
class StageTiming:
    """Busy wall seconds of one stage (summed over its workers), the CPU seconds of its own threads in that time
    (work a runtime hands to its own thread pool is not included), and how many items it handled."""

    seconds: float = 0.0
    cpu_seconds: float = 0.0
    items: int = 0


@dataclass
class PipelineTimings:
    """Per-stage busy time; the source's time (pulling the input iterable) is under ``source_name``."""

    stages: dict[str, StageTiming] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, seconds: float, cpu_seconds: float = 0.0) -> None:
        """Account ``seconds`` (and ``cpu_seconds``) of work on one item to stage ``name`` (thread-safe)."""
        with self._lock:
            t = self.stages.setdefault(name, StageTiming())
            t.seconds += seconds
            t.cpu_seconds += cpu_seconds
            t.items += 1

    def as_dict(self) -> dict[str, dict[str, float]]:
        """``{stage: {seconds, cpu_seconds, items}}``, JSON-able."""
        with self._lock:
            return {k: {"seconds": round(v.seconds, 4), "cpu_seconds": round(v.cpu_seconds, 4), "items": v.items}
                    for k, v in self.stages.items()}


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.thread_time()


class _Stop(Exception):
    """Raised inside a worker when the pipeline is shutting down."""


class _Ordered:
    """Lets results leave a multi-worker stage in sequence order."""

    def __init__(self) -> None:
        self.next = 0
        self.cond = threading.Condition()


class Pipeline:
    """Runs ``source`` through ``stages``; iterate it to get the final results in source order.

    >>> with Pipeline(range(5), [Stage("double", lambda x: 2 * x)]) as p:
    ...     list(p)
    [0, 2, 4, 6, 8]
    """

    def __init__(self, source: Iterable[Any], stages: Sequence[Stage], *, source_name: str = "source",
                 timings: PipelineTimings | None = None, out_queue: int = 2) -> None:
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        self.timings = timings if timings is not None else PipelineTimings()
        self._source = source
        self._source_name = source_name
        self._stages = list(stages)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._error_lock = threading.Lock()
        self._queues = [queue.Queue(maxsize=max(1, s.queue_size)) for s in self._stages]
        self._queues.append(queue.Queue(maxsize=max(1, out_queue)))
        self._threads: list[threading.Thread] = []
        self._started = False
        self._finished = False

    # -- plumbing -------------------------------------------------------------------------------------------
    def _put(self, q: queue.Queue, item: Any) -> None:
        while True:
            if self._stop.is_set():
                raise _Stop
            try:
                q.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def _get(self, q: queue.Queue) -> Any:
        while True:
            if self._stop.is_set():
                raise _Stop
            try:
                return q.get(timeout=_POLL)
            except queue.Empty:
                continue

    def _fail(self, exc: BaseException) -> None:
        with self._error_lock:
            if self._error is None:
                self._error = exc
        self._stop.set()

    def _run_source(self) -> None:
        seq = 0
        it: Any = None
        try:
            it = iter(self._source)
            while True:
                t0, c0 = _clock()
                try:
                    item = next(it)
                except StopIteration:
                    break
                t1, c1 = _clock()
                self.timings.add(self._source_name, t1 - t0, c1 - c0)
                self._put(self._queues[0], (seq, item))
                seq += 1
            self._put(self._queues[0], (seq, _END))
        except _Stop:
            pass
        except BaseException as exc:  # handed to the consumer
            self._fail(exc)
        finally:
            # A generator source (e.g. another pipeline) must stop now, not whenever it is garbage-collected.
            close = getattr(it, "close", None)
            if close is not None:
                try:
                    close()
                except BaseException as exc:
                    self._fail(exc)

    def _run_worker(self, index: int, ordered: _Ordered | None, alive: list[int], lock: threading.Lock) -> None:
        stage = self._stages[index]
        q_in, q_out = self._queues[index], self._queues[index + 1]
        try:
            while True:
                seq, item = self._get(q_in)
                if item is _END:
                    # Let sibling workers see the end too; the last one to leave passes it on.
                    self._put(q_in, (seq, _END))
                    with lock:
                        alive[0] -= 1
                        last = alive[0] == 0
                    if last:
                        self._put(q_out, (seq, _END))
                    return
                t0, c0 = _clock()
                result = stage.fn(item)
                t1, c1 = _clock()
                self.timings.add(stage.name, t1 - t0, c1 - c0)
                if ordered is None:
                    self._put(q_out, (seq, result))
                    continue
                with ordered.cond:
                    while ordered.next != seq:
                        if self._stop.is_set():
                            raise _Stop
                        ordered.cond.wait(_POLL)
                self._put(q_out, (seq, result))
                with ordered.cond:
                    ordered.next += 1
                    ordered.cond.notify_all()
        except _Stop:
            pass
        except BaseException as exc:  # handed to the consumer
            self._fail(exc)

    def start(self) -> Pipeline:
        """Start the threads (iterating starts them too)."""
        if self._started:
            return self
        self._started = True
        self._threads.append(threading.Thread(target=self._run_source, name=f"pipe-{self._source_name}",
                                              daemon=True))
        for index, stage in enumerate(self._stages):
            workers = max(1, stage.workers)
            ordered = _Ordered() if workers > 1 else None
            alive, lock = [workers], threading.Lock()
            for w in range(workers):
                self._threads.append(threading.Thread(target=self._run_worker, args=(index, ordered, alive, lock),
                                                      name=f"pipe-{stage.name}-{w}", daemon=True))
        for t in self._threads:
            t.start()
        return self

    def __iter__(self) -> Iterator[Any]:
        self.start()
        q_out = self._queues[-1]
        try:
            while True:
                try:
                    _seq, item = q_out.get(timeout=_POLL)
                except queue.Empty:
                    if self._stop.is_set():
                        break
                    continue
                if item is _END:
                    self._finished = True
                    break
                yield item
        finally:
            self.close()
        if self._error is not None:
            raise self._error

    def close(self, timeout: float = 10.0) -> None:
        """Stop every thread and wait for them (a stage busy in a long call finishes that call first)."""
        if not self._finished:
            self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
