"""`framegen bench --stream`: per backend, a live stream exactly as ``framegen stream --realtime`` runs it (paced
at real time, measured at start-up, H.264-encoded): the real-time factor, latency p50/p99 after each frame's context,
after its own time and beyond its own lookahead (against the bound of two frame-times), the frames held, and RSS at
the start, after 10 s and at the end.

A backend slower than real time does not fall behind: the live session holds frames (shows the previous one again)
instead, and the report counts them (``held_frames``; ``realtime: false``). Unpaced (``realtime=False``) the stream
runs as fast as it can, blocking instead of holding, and verifies itself against the offline path (``exact``).
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from framegen.models.contract import FPS, SAMPLE_RATE
from framegen.models.errors import FramegenError
from framegen.toolkit.bench.precision import AUTO_PRECISION, choose_precision
from framegen.toolkit.frames.plan import Request, open_candidate, plan_candidates, render_workers
from framegen.toolkit.frames.stream import (
    LIVE_OPTIONS,
    choose_live_layout,
    chunk_samples,
    encoder_batching,
    lookahead_ms,
    stream_to_files,
)
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
                 wav: np.ndarray, *, chunk_ms: float = 20.0, realtime: bool = True,
                 latency_budget_ms: float | None = None,
                 on_result: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Stream ``wav`` (16 kHz float32) through each opened backend in chunks of ``chunk_ms`` exactly as ``framegen
    stream`` does (``realtime``: live, paced, measured at start-up, degrading; the frames encoded to a temporary
    H.264 mp4 that is then deleted); one row per backend.

    Row: frames, audio and wall seconds, ``fps`` (frames / wall seconds: unpaced, the stream's end-to-end rate),
    ``rtf`` (wall / audio seconds; paced runs cannot go below 1.0), latency
    p50/p90/p99/max (ms) after each frame's context and, paced, after its own time and beyond its own lookahead
    (the bound: ``lookahead + 2 frame-times`` means ``beyond <= 80 ms``), frames held, the end's flush, the start-up
    measurement, RSS when the stream starts, after 10 s and at the end (MB), and the session's exactness counters.
    ``latency_budget_ms``: live, frames that would be later than this past their lookahead are held (a backend whose
    live layout was chosen keeps the budget the chooser kept, ``info.extra["live_layout"]``).
    """
    import tempfile


    if wav.ndim != 1 or wav.shape[0] < SAMPLE_RATE // 2:
        raise StreamBenchError("bench --stream: needs at least 0.5 s of mono audio")
    chunk = chunk_samples(chunk_ms)
    batching = encoder_batching(encode)
    rows = []
    for be in backends:
        fps = FPS[be.mode]
        rss = {"start": _rss_mb()}

        def sample(f: Any, rss: dict[str, float] = rss, at: int = 10 * fps) -> None:
            if f.i == at:
                rss["10s"] = _rss_mb()

        layout = be.info.extra.get("live_layout")
        budget = layout.get("latency_budget_ms") if layout is not None else latency_budget_ms
        with tempfile.TemporaryDirectory(prefix="framegen-bench-stream-") as tmp:
            stats = stream_to_files(template, be, encode, _chunks(wav, chunk), out=os.path.join(tmp, "live.mp4"),
                                    realtime=realtime, batching=batching, chunk_samples=chunk, on_frame=sample,
                                    on_start=lambda _s, rss=rss: rss.update(start=_rss_mb()),
                                    latency_budget_ms=budget)
        rss["end"] = _rss_mb()
        audio_s = wav.shape[0] / SAMPLE_RATE
        beyond = stats.beyond_lookahead_ms
        row = {"backend": be.name, "precision": be.info.precision, "device": be.info.device,
               "workers": int(getattr(be, "concurrent_workers", 1)), "frames": stats.frames,
               "audio_seconds": round(audio_s, 3), "seconds": stats.seconds, "rtf": round(stats.rtf, 3),
               "fps": round(stats.frames / stats.seconds, 2) if stats.seconds > 0 else None,
               "latency_ms": stats.latency_ms, "frame_latency_ms": stats.frame_latency_ms,
               "beyond_lookahead_ms": beyond, "bound_ms": round(2000.0 / fps, 1),
               "held_frames": stats.held_frames, "held_late_frames": stats.session["held_late_frames"],
               "latency_budget_ms": stats.latency_budget_ms, "end_frames": stats.end_frames,
               "end_flush_ms": stats.end_flush_ms,
               "startup": stats.startup, "rss_mb": {k: round(v, 1) for k, v in rss.items()},
               "exact": stats.session["exact"], "verified": not realtime,
               "layout": be.info.extra.get("live_layout"),
               "encoder_min_batch": stats.session["encoder_min_batch"]}
        row["realtime"] = bool(row["rtf"] <= 1.05 and row["held_frames"] == 0 and
                               (not realtime or (beyond.get("p99", 0.0) <= row["bound_ms"])))
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
                    f"{', live (paced at real time)' if report['paced'] else ''}; algorithmic lookahead "
                    f"{la['min']:.0f}-{la['max']:.0f} ms")
    for col in ("backend", "precision", "start-up fps", "frames", "fps", "RTF", "held", "p50 / p99 ms after context",
                "p50 / p99 ms after frame time", "p99 ms beyond lookahead (bound)", "end flush ms",
                "RSS MB start / 10 s / end", "keeps up"):
        t.add_column(col, justify="left" if col in ("backend", "precision", "keeps up") else "right")
    for r in report["results"]:
        lat, fl, beyond, rss = r["latency_ms"], r["frame_latency_ms"], r["beyond_lookahead_ms"], r["rss_mb"]
        paced = bool(report["paced"])
        t.add_row(r["backend"], r["precision"], f"{r['startup']['fps']:.1f}" if r.get("startup") else "-",
                  str(r["frames"]), "-" if r.get("fps") is None else f"{r['fps']:.1f}", f"{r['rtf']:.2f}",
                  str(r["held_frames"]) + (f" ({r['held_late_frames']} late)" if r.get("held_late_frames") else ""),
                  f"{lat['p50']:.0f} / {lat['p99']:.0f}",
                  f"{fl['p50']:.0f} / {fl['p99']:.0f}" if paced else "-",
                  f"{beyond['p99']:.0f} ({r['bound_ms']:.0f})" if paced else "-", f"{r['end_flush_ms']:.0f}",
                  f"{rss['start']:.0f} / {rss['10s']:.0f} / {rss['end']:.0f}" if "10s" in rss else
                  f"{rss['start']:.0f} / - / {rss['end']:.0f}",
                  "yes" if r["realtime"] else "NO")
    console.print(t)
    for r in report["results"]:
        if r.get("layout"):
            console.print(f"live layout, {r['backend']} {r['precision']}: {r['layout']['note']}")


def run_bench_stream(*, template: Any, bundle: Any = None, checkpoint: Any = None, backends: Sequence[str] | None,
                     precision: str = "fp32", audio: Any = None, encoder: Any = None, seconds: float = 4.0,
                     chunk_ms: float = 20.0, realtime: bool = True, latency_budget_ms: float | None = None,
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
    choice = None
    if precision == AUTO_PRECISION:
        choice = choose_precision(bundle)
        precision = choice.precision
    requested = [Request(b, precision, "tensor") for b in backends] if backends else None
    plan = plan_candidates("render", bundle=bundle, checkpoint=checkpoint, requested=requested,
                           precisions=[precision], ios=["tensor"])
    opened = []
    try:
        for cand in plan.candidates:
            opened.append(open_candidate(cand, bundle=bundle, checkpoint=checkpoint,
                                         options=LIVE_OPTIONS if realtime else None))
            if realtime:  # as `framegen stream --realtime` does: the render's layout where it feeds the CPU better
                wider = render_workers(cand.backend) > 1
                opened[-1], _ = choose_live_layout(prepared, opened[-1], (lambda cand=cand: open_candidate(
                    cand, bundle=bundle, checkpoint=checkpoint, options=None)) if wider else None,
                    latency_budget_ms=latency_budget_ms)
        report = bench_stream(prepared, opened, encode, wav, chunk_ms=chunk_ms, realtime=realtime,
                              latency_budget_ms=latency_budget_ms, on_result=on_result)
    finally:
        for be in opened:
            be.close()
    report["encoder"] = label
    report["audio"] = os.fspath(audio) if audio is not None else "synthetic"
    report["precision_choice"] = choice.describe() if choice is not None else None
    return report
