"""The API's server: a bundle on Triton."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from framegen.toolkit.api.common import (
    PathLike,
    UsageError,
)
from framegen.toolkit.serve import ServeOptions
from framegen.toolkit.serve import serve as run_serve


def serve(bundle: PathLike, *, backend: str = "auto", precision: str = "fp32", host: str = "127.0.0.1",
          http_port: int = 8000, grpc_port: int = 8001, metrics_port: int = 8002, max_batch: int = 16,
          preferred_batch: str | Sequence[int] | None = None, queue_delay_us: int = 2000, exit_timeout: int = 5,
          log_file: PathLike | None = None, on_ready: Callable[[Any], None] | None = None, stop: Any = None) -> int:
    """Serve a bundle's generator and audio encoder on NVIDIA Triton Inference Server (dynamic batching, KServe v2
    HTTP / gRPC, metrics) through a framegen backend, until SIGTERM / SIGINT, which drain in-flight requests;
    returns 0, or 1 when requests were still open at the ``exit_timeout``. A port of 0 picks a free one;
    ``on_ready`` receives a :class:`framegen.toolkit.serve.ServerInfo`
    (ports, ``grpc_url``) once the models answer; ``stop`` (a ``threading.Event``) stops a server run in a thread.
    Needs ``pip install 'framegen[serve]'``. See :func:`framegen.toolkit.serve.serve`."""
    if preferred_batch is None:
        sizes = tuple(b for b in (4, 8, 16) if b <= max_batch)
    elif isinstance(preferred_batch, str):
        try:
            sizes = tuple(int(v) for v in preferred_batch.split(",") if v.strip())
        except ValueError:
            raise UsageError(f"--preferred-batch {preferred_batch!r}: expected comma-separated integers, "
                             f"e.g. 4,8,16") from None
    else:
        sizes = tuple(int(v) for v in preferred_batch)
    options = ServeOptions(max_batch_size=max_batch, preferred_batch_sizes=sizes, max_queue_delay_us=queue_delay_us,
                           exit_timeout_s=exit_timeout)
    return run_serve(bundle, backend=backend, precision=precision, host=host, http_port=http_port,
                     grpc_port=grpc_port, metrics_port=metrics_port, options=options, log_file=log_file,
                     on_ready=on_ready, stop=stop)
