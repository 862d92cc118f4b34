"""`framegen bench --stream`: per backend, a live stream paced at real time: latency p50/p99 from the arrival of the
chunk that completes a frame's context to the frame's output, the real-time factor, and whether it keeps up.

A backend slower than real time falls behind: the stream keeps its order and its bounded queues (``feed`` blocks
instead of queueing, at most ``2 * workers`` groups in flight), so its latency grows with the stream while its memory
does not; the report says so (``realtime: false``) and records the largest in-flight count and the RSS growth.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from framegen.models.contract import SAMPLE_RATE
from framegen.models.errors import FramegenError
from framegen.toolkit.frames.plan import Request, open_candidate, plan_candidates
from framegen.toolkit.inputs.audio import decode_audio
from framegen.toolkit.inputs.encoders import resolve_encoder
from framegen.toolkit.inputs.speech import harmonic_speech
from framegen.toolkit.inputs.template import open_template


class StreamBenchError(FramegenError):
    """Options of `framegen bench --stream` that do not fit."""


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _chunks(wav: np.ndarray, chunk: int) -> Iterator[np.ndarray]:
    for a in range(0, wav.shape[0], chunk):
        yield wav[a:a + chunk]


def bench_stream(template: Any, backends: Sequence[Any], encode: Callable[[np.ndarray], np.ndarray],
                 wav: np.ndarray, *, chunk_ms: float = 40.0, realtime: bool = True,
                 on_result: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Stream ``wav`` (16 kHz float32) through each opened backend in chunks of ``chunk_ms``; one row per backend.

    Row: frames, audio and wall seconds, ``rtf`` (wall / audio seconds; paced runs cannot go below 1.0, so
    ``realtime`` is ``rtf <= 1.05``; unpaced runs show the headroom), latency p50/p90/p99/max (ms), the largest
    number of groups in flight, RSS before and after (MB), and the session's exactness counters.
    """
    from framegen.toolkit.frames.stream import (
        StreamSession,
        chunk_samples,
        encoder_batching,
        lookahead_ms,
        percentiles,
        play,
    )

    if wav.ndim != 1 or wav.shape[0] < SAMPLE_RATE // 2:
        raise StreamBenchError("bench --stream: needs at least 0.5 s of mono audio")
    chunk = chunk_samples(chunk_ms)
    batching = encoder_batching(encode)
    rows = []
    for be in backends:
        rss0 = _rss_mb()
        with StreamSession(template, be, encode, batching=batching) as session:
            result = play(session, _chunks(wav, chunk), realtime=realtime)
            stats = session.stats.as_dict()
        audio_s = wav.shape[0] / SAMPLE_RATE
        rtf = result.seconds / audio_s
        row = {"backend": be.name, "precision": be.info.precision, "device": be.info.device,
               "workers": int(getattr(be, "concurrent_workers", 1)), "frames": result.frames,
               "audio_seconds": round(audio_s, 3), "seconds": round(result.seconds, 3), "rtf": round(rtf, 3),
               "realtime": bool(rtf <= 1.05), "latency_ms": percentiles(result.latencies_ms),
               "max_inflight": result.max_inflight, "rss_mb_before": round(rss0, 1),
               "rss_mb_after": round(_rss_mb(), 1), "exact": stats["exact"],
               "encoder_min_batch": stats["encoder_min_batch"]}
        rows.append(row)
        if on_result is not None:
            on_result(row)
    return {"chunk_ms": chunk_ms, "chunk_samples": chunk, "paced": realtime,
            "audio_seconds": round(wav.shape[0] / SAMPLE_RATE, 3), "lookahead_ms": lookahead_ms(),
            "encoder_batching": {"min_batch": batching.min_batch, "shift_invariant": batching.shift_invariant},
            "results": rows}


def print_stream_report(report: dict[str, Any], console: Any) -> None:
    """The stream bench as a rich table."""
    from rich.table import Table

    la = report["lookahead_ms"]
    t = Table(title=f"framegen bench --stream: {report['audio_seconds']} s of audio in {report['chunk_ms']} ms chunks"
                    f"{', paced at real time' if report['paced'] else ''}; algorithmic lookahead "
                    f"{la['min']:.0f}-{la['max']:.0f} ms")
    for col in ("backend", "precision", "workers", "frames", "RTF", "keeps up", "p50 ms", "p90 ms", "p99 ms",
                "max ms", "in flight", "RSS MB before/after", "exact"):
        t.add_column(col, justify="left" if col in ("backend", "precision", "keeps up") else "right")
    for r in report["results"]:
        lat = r["latency_ms"]
        t.add_row(r["backend"], r["precision"], str(r["workers"]), str(r["frames"]), f"{r['rtf']:.2f}",
                  "yes" if r["realtime"] else "NO: slower than real time", f"{lat['p50']:.0f}", f"{lat['p90']:.0f}",
                  f"{lat['p99']:.0f}", f"{lat['max']:.0f}", str(r["max_inflight"]),
                  f"{r['rss_mb_before']:.0f}/{r['rss_mb_after']:.0f}", "yes" if r["exact"] else "NO")
    console.print(t)


def run_bench_stream(*, template: Any, bundle: Any = None, checkpoint: Any = None, backends: Sequence[str] | None,
                     precision: str = "fp32", audio: Any = None, encoder: Any = None, seconds: float = 4.0,
                     chunk_ms: float = 40.0, realtime: bool = True,
                     on_result: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Open the template, the encoder (``encoder`` or the bundle's) and each backend (render options, as `framegen
    stream` opens them), and run :func:`bench_stream` on ``seconds`` of ``audio`` (default: synthetic speech)."""
    from framegen.toolkit.inputs.preprocess import PreparedTemplate

    if template is None:
        raise StreamBenchError("bench --stream needs --template T")
    encode, label = resolve_encoder(encoder=encoder, bundle=bundle)
    samples = int(seconds * SAMPLE_RATE)
    wav = decode_audio(audio)[:samples] if audio is not None else harmonic_speech(samples)
    prepared = template if isinstance(template, PreparedTemplate) else PreparedTemplate(open_template(template))
    requested = [Request(b, precision, "tensor") for b in backends] if backends else None
    plan = plan_candidates("render", bundle=bundle, checkpoint=checkpoint, requested=requested,
                           precisions=[precision], ios=["tensor"])
    opened = []
    try:
        for cand in plan.candidates:
            opened.append(open_candidate(cand, bundle=bundle, checkpoint=checkpoint))
        report = bench_stream(prepared, opened, encode, wav, chunk_ms=chunk_ms, realtime=realtime,
                              on_result=on_result)
    finally:
        for be in opened:
            be.close()
    report["encoder"] = label
    report["audio"] = os.fspath(audio) if audio is not None else "synthetic"
    return report
