"""`framegen serve`: a bundle's generator and audio encoder on NVIDIA Triton Inference Server (dynamic batching)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the `serve` command."""
    app.command("serve")(serve)


def serve(
    bundle: Annotated[Path, typer.Option("--bundle", "-b", help="Bundle folder written by `framegen export`.")],
    backend: Annotated[str, typer.Option("--backend", help="framegen backend that runs the models (ort-cpu, "
                                         "ort-cuda, ort-trt, ...; auto picks as render does).")] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="fp32 or fp16 artifact of the bundle.")] = "fp32",
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0 for every interface).")]
    = "127.0.0.1",
    http_port: Annotated[int, typer.Option("--http-port", help="KServe v2 HTTP port.")] = 8000,
    grpc_port: Annotated[int, typer.Option("--grpc-port", help="KServe v2 gRPC port.")] = 8001,
    metrics_port: Annotated[int, typer.Option("--metrics-port", help="Prometheus metrics port.")] = 8002,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Largest batch the batcher forms.")] = 16,
    preferred_batch: Annotated[str | None, typer.Option(
        "--preferred-batch", help="Preferred batch sizes (default: those of 4,8,16 up to --max-batch).")] = None,
    queue_delay_us: Annotated[int, typer.Option(
        "--queue-delay-us", min=0, help="Longest wait (microseconds) for a request's batch to fill.")] = 2000,
    exit_timeout: Annotated[int, typer.Option(
        "--exit-timeout", min=0, help="Seconds SIGTERM waits for in-flight requests (and idle connections).")] = 5,
    log_file: Annotated[Path | None, typer.Option("--log-file", help="Keep tritonserver's log here (default: a "
                                                   "private temporary file, removed when the server stops).")]
    = None,
) -> None:
    """Serve until SIGTERM / Ctrl-C, which drain in-flight requests and exit 0 (1 when the exit timeout expired
    with requests still open)."""
    from framegen.toolkit.api import serve as run_serve
    from framegen.toolkit.common.console import note
    from framegen.toolkit.serve import ready_line

    code = run_serve(bundle, backend=backend, precision=precision, host=host, http_port=http_port,
                     grpc_port=grpc_port, metrics_port=metrics_port, max_batch=max_batch,
                     preferred_batch=preferred_batch, queue_delay_us=queue_delay_us, exit_timeout=exit_timeout,
                     log_file=log_file, on_ready=lambda info: note(ready_line(info)))
    note("server stopped" if code == 0 else "server stopped; the exit timeout expired with requests still open")
    if code:
        raise typer.Exit(code)
