"""The API's benchmarks: model-only and end-to-end, live streams, and a Triton server."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from framegen.models.contract import LATENCY_BUDGET_MS
from framegen.toolkit.api.common import (
    PathLike,
    check_outputs,
    latency_budget,
    loaded_sources,
    split_list,
    triton_options,
)
from framegen.toolkit.bench.core import DEFAULT_E2E_FRAMES, parse_batches, run_bench
from framegen.toolkit.bench.stream import run_bench_stream
from framegen.toolkit.bench.triton import DEFAULT_STREAMS, parse_streams, run_triton_bench
from framegen.toolkit.common.files import write_json
from framegen.toolkit.compare.html import bench_html
from framegen.toolkit.compare.reports import write_text_atomic


def bench(*, checkpoint: PathLike | None = None, bundle: PathLike | None = None,
          backends: str | Sequence[str] | None = None, precisions: str | Sequence[str] | None = None,
          batches: str | Sequence[int] | None = None, iterations: int | None = None, warmup: int = 3,
          seconds: float = 8.0, mode: str | None = None, template: PathLike | None = None,
          features: PathLike | None = None, e2e_frames: int | None = 100, e2e_batch: int | None = None,
          json: PathLike | None = None, on_result: Callable[[str, dict[str, Any]], None] | None = None,
          html: PathLike | None = None) -> dict[str, Any]:
    """Benchmark every planned backend x precision x batch (latency p50/p90/p99, fps, GFLOP/s against the machine's
    peak, memory); with ``template`` + ``features`` also one end-to-end render each. Returns the report dict (the
    schema of ``framegen bench --json``). ``html``: also a self-contained page plotting the latency percentiles and
    the batch sweep."""
    check_outputs(None, None, json, html)

    batch_list = parse_batches(batches) if isinstance(batches, str) else (list(batches) if batches else None)
    checkpoint, bundle = loaded_sources(checkpoint, bundle)
    report = run_bench(checkpoint=checkpoint, bundle=bundle,
                       backends=split_list(backends) if backends is not None else None,
                       precisions=split_list(precisions) if precisions is not None else None, batches=batch_list,
                       iterations=iterations, warmup=warmup, seconds=seconds, mode=mode, template=template,
                       features=features, e2e_frames=e2e_frames if e2e_frames is not None else DEFAULT_E2E_FRAMES,
                       e2e_batch=e2e_batch, on_result=on_result)
    if json is not None:
        write_json(json, report)
    if html is not None:
        write_text_atomic(html, bench_html(report))
    return report


def bench_stream(*, template: PathLike, bundle: PathLike | None = None, checkpoint: PathLike | None = None,
                 backends: str | Sequence[str] | None = None, precision: str = "fp32", audio: PathLike | None = None,
                 encoder: PathLike | None = None, seconds: float = 4.0, chunk_ms: float = 20.0,
                 realtime: bool = True, json: PathLike | None = None,
                 latency_budget_ms: float | None = LATENCY_BUDGET_MS,
                 on_result: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Live-stream latency (p50/p99 from a frame's last audio sample to its frame) and real-time factor per backend,
    paced at real time: ``seconds`` of ``audio`` (default: synthetic speech) in ``chunk_ms`` chunks through
    ``template``. ``realtime=False``: the same stream unpaced, as fast as it goes (its frames / seconds is the
    stream's end-to-end rate; the session checks itself against the offline path). ``latency_budget_ms``: as
    :func:`stream`'s (live only). Returns the report dict (the schema of ``framegen bench --stream --json``)."""
    check_outputs(None, None, json)

    checkpoint, bundle = loaded_sources(checkpoint, bundle)
    report = run_bench_stream(template=template, bundle=bundle, checkpoint=checkpoint,
                              backends=split_list(backends) if backends is not None else None, precision=precision,
                              audio=audio, encoder=encoder, seconds=seconds, chunk_ms=chunk_ms, realtime=realtime,
                              latency_budget_ms=latency_budget(latency_budget_ms), on_result=on_result)
    if json is not None:
        write_json(json, report)
    return report


def bench_triton(triton_url: str, *, streams: str | Sequence[int] | None = None, seconds: float = 8.0,
                 requests: int | None = None, frames_per_request: int = 1, mode: str | None = None,
                 json: PathLike | None = None, on_result: Callable[[dict[str, Any]], None] | None = None
                 ) -> dict[str, Any]:
    """Throughput, latency and server-side batching of a Triton server hosting the generator, at each number of
    concurrent client streams (default 1, 4, 8). Returns the report dict (``framegen bench --backends triton``)."""
    triton_options(triton_url)
    check_outputs(None, None, json)
    counts = DEFAULT_STREAMS if streams is None else parse_streams(streams)
    report = run_triton_bench(triton_url, streams=counts, seconds=seconds, requests=requests,
                              frames_per_request=frames_per_request, mode=mode, on_result=on_result)
    if json is not None:
        write_json(json, report)
    return report
