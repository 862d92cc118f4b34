"""``framegen bench --backends triton --streams 1,4,8``: throughput and latency of a Triton server at several
numbers of concurrent client streams, and the gain dynamic batching gives over one stream.

Each stream is one client with its own connection sending one request after another, each carrying
``frames_per_request`` frames (1: a live stream sends each frame as it is due). For every concurrency the streams run
together for about ``seconds`` (or ``requests`` requests each; bounded either way) after one untimed warm-up request
each. Reported per concurrency: frames per second over the wall time of the run, request latency p50 / p90 / p99, and
from the server's own statistics the inferences and executions in the run (inferences / executions = the average
batch the dynamic batcher formed). The batching gain is the throughput over that of one stream, from the same run.

A shared machine moves the figures with its load (recorded in the report); compare the ratios.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from framegen.models.errors import FramegenError
from framegen.runtimes.spec import OpenRequest
from framegen.runtimes.triton_backend import TritonBackend, request_url
from framegen.toolkit.bench.core import bench_inputs, latency_summary
from framegen.toolkit.bench.machine import describe_machine
from framegen.toolkit.common.console import out

SCHEMA_VERSION = 1
DEFAULT_STREAMS = (1, 4, 8)
DEFAULT_SECONDS = 8.0
MAX_REQUESTS_PER_STREAM = 500


class TritonBenchError(FramegenError):
    """Options of the Triton bench that do not fit, or a server that cannot be measured."""


def parse_streams(text: str | Sequence[int] | None) -> list[int]:
    """``"1,4,8"`` -> ``[1, 4, 8]`` (sorted, unique, each at least 1); ``None`` -> the default."""
    if text is None:
        return list(DEFAULT_STREAMS)
    if isinstance(text, str):
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise TritonBenchError(f"--streams {text!r}: expected comma-separated integers, e.g. 1,4,8") from None
    else:
        values = [int(v) for v in text]
    if not values or min(values) < 1:
        raise TritonBenchError(f"--streams {text!r}: each must be at least 1")
    return sorted(set(values))


def _open(url: str, mode: str | None) -> Any:
    return TritonBackend(OpenRequest(mode=mode, options={"triton_url": url, "workers": 1}))


def _settled(client: Any, inferences: int, timeout: float = 2.0) -> dict[str, int]:
    """The server's counters once they reach ``inferences`` (Triton counts an inference a moment after its response
    has gone out), or as they are after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    stats = client.statistics()
    while stats["inference_count"] < inferences and time.monotonic() < deadline:
        time.sleep(0.02)
        stats = client.statistics()
    return stats


def measure_streams(url: str, streams: int, *, seconds: float = DEFAULT_SECONDS, requests: int | None = None,
                    frames_per_request: int = 1, mode: str | None = None) -> dict[str, Any]:
    """Run ``streams`` concurrent client streams against the server at ``url``; one ``results`` row."""
    clients = [_open(url, mode) for _ in range(streams)]
    try:
        inputs = [bench_inputs(clients[0].mode, frames_per_request, seed=k) for k in range(streams)]
        latencies: list[list[float]] = [[] for _ in range(streams)]
        errors: list[str] = []
        # every stream warms up, then the server's counters are read, then all streams start together
        ready = threading.Barrier(streams + 1)
        start = threading.Barrier(streams + 1)
        limit = requests if requests is not None else MAX_REQUESTS_PER_STREAM

        def stream(k: int) -> None:
            try:
                clients[k].infer(*inputs[k])  # warm-up: connection set up, server-side buffers allocated
                ready.wait()
                start.wait()
                deadline = time.perf_counter() + seconds
                for _ in range(limit):
                    t0 = time.perf_counter()
                    clients[k].infer(*inputs[k])
                    latencies[k].append(time.perf_counter() - t0)
                    if requests is None and time.perf_counter() >= deadline:
                        break
            except threading.BrokenBarrierError:
                return
            except Exception as exc:  # reported after the run; the other streams finish
                errors.append(f"stream {k}: {exc}")
                ready.abort()
                start.abort()

        base = clients[0].statistics()
        threads = [threading.Thread(target=stream, args=(k,), daemon=True) for k in range(streams)]
        for t in threads:
            t.start()
        before = None
        with contextlib.suppress(threading.BrokenBarrierError):  # a stream failed; its error is raised below
            ready.wait()
            before = _settled(clients[0], base["inference_count"] + streams * frames_per_request)
            start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        done_frames = sum(len(x) for x in latencies) * frames_per_request
        after = _settled(clients[0], (before or base)["inference_count"] + done_frames)
        if errors or before is None:
            raise TritonBenchError(f"triton bench at {streams} stream(s): {errors[0] if errors else 'aborted'}")
    finally:
        for c in clients:
            c.close()
    done = [x for per in latencies for x in per]
    frames = len(done) * frames_per_request
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    return {
        "streams": streams, "frames_per_request": frames_per_request, "requests": len(done), "frames": frames,
        "seconds": round(wall, 4), "fps": round(frames / wall, 3) if wall > 0 else None,
        "latency_ms": latency_summary(done),
        "server_inferences": inferences, "server_executions": executions,
        "avg_server_batch": round(inferences / executions, 3) if executions else None,
    }


def run_triton_bench(url: str | None = None, *, streams: Sequence[int] = DEFAULT_STREAMS,
                     seconds: float = DEFAULT_SECONDS, requests: int | None = None, frames_per_request: int = 1,
                     mode: str | None = None, on_result: Callable[[dict[str, Any]], None] | None = None
                     ) -> dict[str, Any]:
    """Measure the server at ``url`` (default ``$FRAMEGEN_TRITON_URL``) at each number of concurrent streams; returns
    the report: ``{schema, server, model, machine, settings, results: [{streams, fps, latency_ms: {p50, p90, p99,
    ...}, server_inferences, server_executions, avg_server_batch, gain_over_1_stream}], load_after}``."""
    url = url or request_url()
    if url is None:
        raise TritonBenchError("bench --backends triton: name the server with --triton-url grpc://HOST:PORT")
    if seconds <= 0 or frames_per_request < 1 or (requests is not None and requests < 1):
        raise TritonBenchError("bench: seconds, frames per request and requests must be positive")
    counts = parse_streams(streams)
    probe = _open(url, mode)
    info = probe.info
    probe.close()
    machine = describe_machine()
    results = []
    for n in counts:
        row = measure_streams(url, n, seconds=seconds, requests=requests, frames_per_request=frames_per_request,
                              mode=mode)
        results.append(row)
        if on_result is not None:
            on_result(row)
    base = results[0]["fps"] if results and results[0]["fps"] else None
    for row in results:
        row["gain_over_1_stream" if counts[0] == 1 else f"gain_over_{counts[0]}_streams"] = (
            round(row["fps"] / base, 3) if base and row["fps"] else None)
    return {
        "schema": SCHEMA_VERSION, "server": url,
        "model": {"name": info.extra.get("model"), "mode": info.mode, "precision": info.precision,
                  "max_batch_size": info.extra.get("max_batch_size"), "platform": info.extra.get("platform")},
        "machine": machine,
        "settings": {"streams": counts, "seconds_per_concurrency": seconds if requests is None else None,
                     "requests_per_stream": requests, "frames_per_request": frames_per_request,
                     "timer": "time.perf_counter around each request",
                     "inputs": "image-like crops + non-negative audio windows (toolkit.bench.bench_inputs)"},
        "results": results,
        "load_after": describe_machine()["load"],
    }


def print_triton_report(report: dict[str, Any], console: Any = None) -> None:
    """The report as one table on stdout."""
    from rich.console import Console
    from rich.table import Table

    con = console or (out if out.is_terminal else Console(width=200, highlight=False))
    m = report["model"]
    table = Table(title=f"framegen bench: Triton {report['server']} ({m['name']}, mode {m['mode']}, "
                        f"max batch {m['max_batch_size']})")
    gain_key = next((k for k in (report["results"][0] if report["results"] else {}) if k.startswith("gain_")),
                    "gain_over_1_stream")
    for col in ("streams", "requests", "frames", "fps", "p50 ms", "p90 ms", "p99 ms", "inferences", "executions",
                "avg batch", "gain"):
        table.add_column(col, justify="right")
    for r in report["results"]:
        lat = r["latency_ms"]
        table.add_row(str(r["streams"]), str(r["requests"]), str(r["frames"]), f"{r['fps']:.2f}",
                      f"{lat['p50']:.0f}", f"{lat['p90']:.0f}", f"{lat['p99']:.0f}", str(r["server_inferences"]),
                      str(r["server_executions"]),
                      "-" if r["avg_server_batch"] is None else f"{r['avg_server_batch']:.2f}",
                      "-" if r.get(gain_key) is None else f"{r[gain_key]:.2f}x")
    con.print(table)
    load = report.get("load_after") or {}
    if load:
        con.print(f"machine load after: {load.get('loadavg_1_5_15')} (1/5/15 min), CPU busy "
                  f"{load.get('cpu_busy_percent')}%", markup=False)
