"""``framegen serve``: a bundle's generator and audio encoder behind a real NVIDIA Triton Inference Server.

The server is the ``tritonserver`` that ``nvidia-pytriton`` carries; its Python backend hands each batch the dynamic
batcher formed to this process, which runs it through a framegen backend (``ort-cpu`` here; ``ort-cuda`` /
``ort-trt`` on a GPU). Clients speak KServe v2 over HTTP or gRPC, with the contract's tensor names: ``generator``
takes ``image`` [B, 6, 320, 320] and ``audio`` [B, *mode shape] and returns ``output`` [B, 3, 320, 320];
``audio_encoder`` takes ``mel`` [B, 1, 80, 16] and returns ``embedding`` [B, 512]. Health and readiness are
Triton's own endpoints (``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/<name>/ready``); Prometheus metrics
are on the metrics port; per-model statistics (``/v2/models/<name>/stats``) are open, the repository, shared-memory,
trace and logging endpoints need the server's access token.

Bad requests: Triton itself refuses a wrong shape, dtype or tensor name before the request reaches a batch; this
module refuses NaN / Inf with an error naming the input. The Python backend reports errors per execution, so
requests the batcher put in the same execution as a NaN request get that error too; the server keeps serving.

SIGTERM (or SIGINT) drains: Triton stops taking new requests, finishes those in flight (up to ``exit_timeout_s``),
then the process exits 0.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sysconfig
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from framegen.exporters.triton import AUDIO_ENCODER, GENERATOR, model_tensors
from framegen.models.bundle import load_bundle
from framegen.models.contract import ENC_INPUT, ENC_OUTPUT, GEN_AUDIO, GEN_IMAGE, GEN_OUTPUT
from framegen.models.errors import FramegenError, first_line
from framegen.runtimes.ort_session import session_options
from framegen.runtimes.registry import open_backend, resolve_auto
from framegen.runtimes.spec import OpenRequest

log = logging.getLogger("framegen.serve")

#: Triton endpoints that need the server's access token (statistics stay open: the suite and dashboards read them)
RESTRICTED = ["shared-memory", "model-repository", "trace", "logging"]


class ServeError(FramegenError):
    """A server that cannot be started with these options."""


@dataclass(frozen=True)
class ServeOptions:
    """Batching and shutdown settings of ``framegen serve``."""

    max_batch_size: int = 16
    preferred_batch_sizes: tuple[int, ...] = (4, 8, 16)
    #: how long the dynamic batcher holds a request for company: short next to a 40 ms frame at 25 fps
    max_queue_delay_us: int = 2000
    #: seconds SIGTERM waits for in-flight requests (and for idle keep-alive connections, which Triton also waits
    #: for): short, so that `docker stop` and systemd see the process go well within their 10 s grace period
    exit_timeout_s: int = 5

    def check(self) -> None:
        """One-line :class:`ServeError` for settings Triton would refuse."""
        if self.max_batch_size < 1:
            raise ServeError(f"serve: max batch size {self.max_batch_size} must be at least 1")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise ServeError(f"serve: preferred batch sizes {bad} outside 1..{self.max_batch_size}")
        if self.max_queue_delay_us < 0 or self.exit_timeout_s < 0:
            raise ServeError("serve: queue delay and exit timeout must be 0 or more")


def python_backend_env() -> dict[str, str]:
    """Environment the Triton Python backend's stub needs to run under this interpreter.

    The stub links ``libpython3.X.so``; the dynamic loader finds the system's copy first, and under another build of
    the same Python (pyenv, conda) the stub then runs this interpreter's standard library on a foreign libpython
    and fails to load the model (``'_thread.RLock' object has no attribute '_recursion_count'``). Putting this
    interpreter's own library folder first on ``LD_LIBRARY_PATH`` makes the stub load the matching libpython.
    """
    env: dict[str, str] = {}
    libdir = sysconfig.get_config_var("LIBDIR")
    soname = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY")
    if not libdir or not soname or not (Path(libdir) / soname).exists():
        return env
    current = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    if not current or current[0] != libdir:
        env["LD_LIBRARY_PATH"] = ":".join([libdir, *[p for p in current if p != libdir]])
    return env


def _pick_ports(host: str, ports: tuple[int, int, int]) -> tuple[int, int, int]:
    """Ports as given, each 0 replaced by a free one on ``host`` (held together while chosen, so they differ); a
    port already taken is a one-line error now rather than tritonserver's startup timeout minutes later."""
    import socket

    socks = []
    try:
        chosen = []
        for port in ports:
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as tritonserver binds: TIME_WAIT is no clash
            socks.append(s)
            try:
                s.bind((host, int(port)))
            except OSError as exc:
                raise ServeError(f"serve: cannot listen on {host}:{port} ({exc.strerror or exc})") from None
            chosen.append(s.getsockname()[1])
        return chosen[0], chosen[1], chosen[2]
    finally:
        for s in socks:
            s.close()


class InvalidRequest(ValueError):
    """A request the contract refuses; its message is what the client reads.

    pytriton sends a failed execution's error to the client as ``traceback.format_exception(None, e,
    e.__traceback__)``; hiding the traceback from that attribute leaves the client one line (``InvalidRequest:
    input 'image' holds 1 NaN/Inf value(s)...``) instead of this server's stack frames.
    """

    @property  # type: ignore[override]
    def __traceback__(self) -> None:
        return None

    @__traceback__.setter
    def __traceback__(self, _value: object) -> None:
        pass


def _check_finite(name: str, arr: np.ndarray) -> None:
    if not np.isfinite(arr).all():
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise InvalidRequest(f"input {name!r} holds {bad} NaN/Inf value(s); the contract's inputs are finite")


class _Encoder:
    """The bundle's audio encoder ONNX on ONNX Runtime's CPU provider (a 16x80 mel window per call is tiny next to
    the generator, so it never earns a GPU of its own)."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(os.fspath(path), session_options({"threads": 1}),
                                            providers=["CPUExecutionProvider"])

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        return self.session.run([ENC_OUTPUT], {ENC_INPUT: mel})[0].astype(np.float32, copy=False)


@dataclass
class ServerInfo:
    """What a started server listens on and hosts (handed to ``on_ready``)."""

    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    backend: str
    mode: str
    precision: str
    models: list[str]
    log_file: Path

    @property
    def grpc_url(self) -> str:
        """``grpc://HOST:PORT`` for ``--triton-url``."""
        return f"grpc://{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """``http://HOST:PORT``."""
        return f"http://{self.host}:{self.http_port}"


def serve(bundle: str | os.PathLike[str], *, backend: str = "auto", precision: str = "fp32",
          host: str = "127.0.0.1", http_port: int = 8000, grpc_port: int = 8001, metrics_port: int = 8002,
          options: ServeOptions | None = None, backend_options: dict[str, Any] | None = None,
          log_file: str | os.PathLike[str] | None = None, on_ready: Callable[[ServerInfo], None] | None = None,
          stop: threading.Event | None = None, handle_signals: bool = True) -> int:
    """Serve a bundle's generator (and audio encoder, when it holds one) on Triton until SIGTERM / SIGINT (or
    ``stop`` is set); returns 0 after draining in-flight requests, 1 when the exit timeout expired first.

    ``backend`` is any framegen backend that opens from the bundle (``auto`` picks as ``render`` does);
    ``log_file`` receives tritonserver's log (default: a private temporary folder, removed with everything else
    the server put there when it stops);
    ``on_ready`` is called once the models are loaded and the endpoints answer. A port of 0 picks a free one
    (``on_ready``'s :class:`ServerInfo` tells which). ``handle_signals`` installs the SIGTERM / SIGINT handlers (on
    the main thread only; a server run in another thread stops when ``stop`` is set).
    """
    opts = options or ServeOptions()
    opts.check()
    ports = _checked_ports(host, (http_port, grpc_port, metrics_port))
    try:
        from pytriton.triton import Triton, TritonConfig, TritonLifecyclePolicy, TritonSecurityConfig
    except ImportError as exc:
        raise ServeError(f"serve needs nvidia-pytriton (pip install 'framegen[serve]'): {exc}") from None
    name, generator, encoder = _open_models(bundle, backend, precision, backend_options)
    inflight = _Inflight()
    # Everything pytriton and tritonserver put in the temporary folder (workspace, python_env_*, the default log)
    # goes into one private folder, removed when the server stops.
    private = Path(tempfile.mkdtemp(prefix="framegen-serve-"))
    log_path = Path(log_file) if log_file is not None else private / "tritonserver.log"
    config = TritonConfig(http_address=host, http_port=ports[0], grpc_address=host, grpc_port=ports[1],
                          metrics_address=host, metrics_port=ports[2], exit_timeout_secs=opts.exit_timeout_s,
                          strict_readiness=True, log_verbose=0, log_file=Path(log_path))
    stop_event = stop or threading.Event()
    previous = _stop_on_signals(stop_event) if handle_signals else {}
    for noisy in ("pytriton", "sh"):  # a refused request is logged by pytriton with its traceback, as a warning
        logging.getLogger(noisy).setLevel(logging.ERROR)
    saved_tempdir = tempfile.tempdir
    tempfile.tempdir = os.fspath(private)
    # The models go into a local model store before tritonserver starts, and tritonserver loads them before its
    # endpoints open: /v2/health/ready never says ready while a model is still loading (pytriton's default loads
    # them through the API after the server is up, and the server says ready in between).
    triton = Triton(config=config, security_config=TritonSecurityConfig(restricted_endpoints=RESTRICTED),
                    triton_lifecycle_policy=TritonLifecyclePolicy(launch_triton_on_startup=False,
                                                                  local_model_store=True))
    try:
        models = _bind_models(triton, generator, encoder, inflight, opts)
        _start(triton, private, host, ports)
        if on_ready is not None:
            on_ready(ServerInfo(host, *ports, name, generator.mode, generator.info.precision, models, log_path))
        while not stop_event.wait(0.5):
            if not triton.is_alive():
                raise ServeError("serve: the Triton server exited unexpectedly")
    finally:
        triton.stop()  # SIGINT to tritonserver: it drains in-flight requests (exit_timeout_s), then exits
        generator.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        tempfile.tempdir = saved_tempdir
        # Triton also waits out idle keep-alive connections and then says its exit timeout expired; the drain
        # failed only if an inference was still running when the server went.
        drained = inflight.count == 0 or not _log_says(log_path, "Exit timeout expired")
        shutil.rmtree(private, ignore_errors=True)
    if not drained:
        log.warning("serve: requests were still open when the exit timeout (%d s) expired", opts.exit_timeout_s)
    return 0 if drained else 1


def _checked_ports(host: str, ports: tuple[int, int, int]) -> tuple[int, int, int]:
    """HTTP, gRPC and metrics ports: valid, free ones picked for 0, all different."""
    for label, port in zip(("--http-port", "--grpc-port", "--metrics-port"), ports, strict=True):
        if not 0 <= int(port) <= 65535:
            raise ServeError(f"{label} {port}: not a TCP port")
    picked = _pick_ports(host, ports)
    if len(set(picked)) != 3:
        raise ServeError(f"serve: HTTP, gRPC and metrics ports must differ ({', '.join(map(str, picked))})")
    return picked


def _open_models(bundle: str | os.PathLike[str], backend: str, precision: str,
                 backend_options: dict[str, Any] | None) -> tuple[str, Any, _Encoder | None]:
    """The backend that serves the generator (``auto`` as ``render`` picks), and the bundle's audio encoder."""
    b = load_bundle(bundle)
    request = OpenRequest(bundle=b, precision=precision, mode=b.mode, options=dict(backend_options or {}))
    name = resolve_auto(request) if backend == "auto" else backend
    if name == "triton":
        raise ServeError("serve: --backend triton would serve a server through itself; pick a local backend")
    generator = open_backend(name, request)
    encoder = _Encoder(b.find(AUDIO_ENCODER, "onnx", "fp32").path) if b.has(AUDIO_ENCODER, "onnx", "fp32") else None
    return name, generator, encoder


def _stop_on_signals(stop_event: threading.Event) -> dict[int, Any]:
    """SIGTERM and SIGINT set ``stop_event`` (main thread only); returns the handlers they replaced."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: stop_event.set())
    return previous


def _bind_models(triton: Any, generator: Any, encoder: _Encoder | None, inflight: _Inflight,
                 opts: ServeOptions) -> list[str]:
    """Bind the generator (and the encoder) to Triton with the dynamic batcher; returns the model names."""
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    lock = threading.Lock()  # a framegen backend object serves one caller at a time

    @batch
    def infer_generator(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        image, audio = inputs[GEN_IMAGE], inputs[GEN_AUDIO]
        _check_finite(GEN_IMAGE, image)
        _check_finite(GEN_AUDIO, audio)
        with inflight, lock:
            return {GEN_OUTPUT: generator.infer(image, audio)}

    @batch
    def infer_encoder(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        mel = inputs[ENC_INPUT]
        _check_finite(ENC_INPUT, mel)
        assert encoder is not None
        with inflight:
            return {ENC_OUTPUT: encoder(mel)}

    batcher = DynamicBatcher(max_queue_delay_microseconds=opts.max_queue_delay_us,
                             preferred_batch_size=list(opts.preferred_batch_sizes) or None)
    model_config = ModelConfig(max_batch_size=opts.max_batch_size, batcher=batcher)
    gen_in, gen_out = generator.info.inputs, generator.info.outputs
    triton.bind(model_name=GENERATOR, infer_func=infer_generator,
                inputs=[Tensor(name=t.name, dtype=np.float32, shape=tuple(t.shape[1:])) for t in gen_in],
                outputs=[Tensor(name=t.name, dtype=np.float32, shape=tuple(t.shape[1:])) for t in gen_out],
                config=model_config, strict=True)
    if encoder is None:
        return [GENERATOR]
    enc_in, enc_out = model_tensors(AUDIO_ENCODER, "ave")
    triton.bind(model_name=AUDIO_ENCODER, infer_func=infer_encoder,
                inputs=[Tensor(name=n, dtype=np.float32, shape=d) for n, d in enc_in],
                outputs=[Tensor(name=n, dtype=np.float32, shape=d) for n, d in enc_out],
                config=model_config, strict=True)
    return [GENERATOR, AUDIO_ENCODER]


def _start(triton: Any, private: Path, host: str, ports: tuple[int, int, int]) -> None:
    """Start tritonserver with the Python backend stub's environment (it copies this process's at start)."""
    stub_env = {**python_backend_env(), "TMPDIR": os.fspath(private)}
    saved_env = {k: os.environ.get(k) for k in stub_env}
    os.environ.update(stub_env)
    try:
        triton.run()
    except Exception as exc:
        raise ServeError(f"serve: Triton did not start on {host} ports {'/'.join(map(str, ports))} "
                         f"({first_line(exc)})") from None
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class _Inflight:
    """Inferences running in this process right now (a context manager around each)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __enter__(self) -> _Inflight:
        with self._lock:
            self.count += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.count -= 1


def _log_says(path: Path, text: str) -> bool:
    try:
        return text in path.read_text(errors="replace")
    except OSError:
        return False


def ready_line(info: ServerInfo) -> str:
    """One line for the console when the server is up."""
    return (f"serving {', '.join(info.models)} ({info.backend}, {info.precision}, mode {info.mode}): "
            f"gRPC {info.grpc_url}, HTTP {info.http_url}, metrics http://{info.host}:{info.metrics_port}/metrics; "
            f"server log {info.log_file}")

