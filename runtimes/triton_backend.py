"""The ``triton`` backend: the generator on any Triton Inference Server hosting the contract's ``generator`` model
(``framegen serve``, or an NGC container loading the repository ``framegen export --triton`` writes), over KServe v2
gRPC (``grpc://HOST:PORT``) or HTTP (``http://HOST:PORT``).

The server is named by ``OpenRequest.options["triton_url"]`` (what ``--triton-url`` and the API's ``triton_url=`` /
``options=`` set; the planner hands the same options to the probe), else by the user's ``$FRAMEGEN_TRITON_URL``.
Without a named server the backend is unavailable, so default plans (parity, bench) never pick a server nobody
asked for.

The mode comes from the server's model metadata (the audio input's shape; the three modes' shapes differ), checked
against ``OpenRequest.mode`` when given. Calls larger than the model's ``max_batch_size`` are split. A refused request
(wrong shape, NaN) becomes a one-line :class:`BackendError` with the server's reason.

``OpenRequest.options``: ``triton_url``; ``triton_model`` (default ``generator``); ``triton_timeout`` (seconds per
call, default 120); ``workers`` (calls the render pipeline keeps in flight, default 2: the server batches frames of
concurrent calls, and one call's transfer overlaps another's compute).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any
from urllib.parse import urlparse

import numpy as np
from framegen.models.contract import GEN_AUDIO, GEN_IMAGE, GEN_OUTPUT, TRITON_PARAM_MODE, TRITON_PARAM_PRECISION
from framegen.runtimes.artifacts import mode_from_audio_shape, settle_mode
from framegen.runtimes.base import Backend, BackendError, BackendInfo, generator_io
from framegen.runtimes.spec import Availability, BackendSpec, OpenRequest

URL_ENV = "FRAMEGEN_TRITON_URL"
MODEL = "generator"
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_WORKERS = 2
PROBE_TIMEOUT_S = 3.0
#: config ``parameters`` the exported repository sets (exporters.triton.PARAM_MODE / PARAM_PRECISION)
PARAM_MODE = TRITON_PARAM_MODE
PARAM_PRECISION = TRITON_PARAM_PRECISION


def parse_url(url: str) -> tuple[str, str]:
    """``(scheme, "host:port")`` of ``grpc://HOST:PORT``, ``http://HOST:PORT`` or ``HOST:PORT`` (gRPC)."""
    text = str(url).strip()
    parsed = urlparse(text if "://" in text else f"grpc://{text}")
    if parsed.scheme not in ("grpc", "http") or not parsed.hostname or parsed.port is None:
        raise BackendError(f"--triton-url {url!r}: expected grpc://HOST:PORT or http://HOST:PORT")
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return parsed.scheme, f"{host}:{parsed.port}"


def request_url(req: OpenRequest | None = None) -> str | None:
    """The server a request names: ``options["triton_url"]``, else ``$FRAMEGEN_TRITON_URL``."""
    if req is not None and req.options.get("triton_url"):
        return str(req.options["triton_url"])
    return os.environ.get(URL_ENV) or None


def server_message(exc: BaseException) -> str:
    """The reason in a Triton error, on one line: a framegen server's refusal (``InvalidRequest: ...``), else the
    first line of what the server said."""
    text = exc.message() if hasattr(exc, "message") and callable(exc.message) else str(exc)
    text = str(text or exc)
    marker = "InvalidRequest: "
    if marker in text:
        return text.split(marker, 1)[1].splitlines()[0].strip()[:300]
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[0][:300] if lines else type(exc).__name__


def _client(scheme: str, address: str, timeout: float) -> Any:
    if scheme == "grpc":
        import tritonclient.grpc as grpcclient

        return grpcclient.InferenceServerClient(address)
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(address, connection_timeout=timeout, network_timeout=timeout)


def _module(scheme: str) -> Any:
    if scheme == "grpc":
        import tritonclient.grpc as mod
    else:
        import tritonclient.http as mod
    return mod


def _dims(shape: list[Any]) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)


class TritonBackend(Backend):
    """The contract's generator on a Triton server."""

    default_batch = 4

    def __init__(self, req: OpenRequest) -> None:
        url = request_url(req)
        if url is None:
            raise BackendError(f"triton: name the server with --triton-url grpc://HOST:PORT (or ${URL_ENV})")
        self._scheme, self._address = parse_url(url)
        self._model = str(req.options.get("triton_model") or MODEL)
        self._timeout = float(req.options.get("triton_timeout") or DEFAULT_TIMEOUT_S)
        self._mod = _module(self._scheme)
        where = f"triton {self._scheme}://{self._address}"
        # gRPC calls take their deadline per call (the HTTP client has it from its constructor)
        tmo = {"client_timeout": min(self._timeout, 30.0)} if self._scheme == "grpc" else {}
        try:
            self._client = _client(self._scheme, self._address, self._timeout)
            ready = self._client.is_model_ready(self._model, **tmo)
        except Exception as exc:
            raise BackendError(f"{where}: cannot reach the server ({server_message(exc)})") from None
        if not ready:
            self.close()
            raise BackendError(f"{where}: model {self._model!r} is not ready there")
        try:
            as_json = {"as_json": True, **tmo} if self._scheme == "grpc" else {}
            meta = self._client.get_model_metadata(self._model, **as_json)
            config = self._client.get_model_config(self._model, **as_json)
        except Exception as exc:
            self.close()
            raise BackendError(f"{where}: cannot read model {self._model!r} ({server_message(exc)})") from None
        config = config.get("config", config)
        shapes = {t["name"]: _dims(t["shape"]) for t in meta.get("inputs", [])}
        outputs = {t["name"] for t in meta.get("outputs", [])}
        if set(shapes) != {GEN_IMAGE, GEN_AUDIO} or GEN_OUTPUT not in outputs:
            self.close()
            raise BackendError(f"{where}: model {self._model!r} takes {sorted(shapes)} -> {sorted(outputs)}, not the "
                               f"contract's {[GEN_AUDIO, GEN_IMAGE]} -> [{GEN_OUTPUT!r}]")
        params = {k: v.get("string_value") for k, v in (config.get("parameters") or {}).items()}
        detected = mode_from_audio_shape(shapes[GEN_AUDIO])
        mode = settle_mode(detected, params.get(PARAM_MODE), req.mode, where)
        self._max_batch = int(config.get("max_batch_size") or 0)
        precision = params.get(PARAM_PRECISION) or req.precision
        inputs, outs = generator_io(mode)
        super().__init__(BackendInfo("triton", f"remote:{self._address}", precision, mode, where, inputs, outs,
                                     {"server_url": f"{self._scheme}://{self._address}", "model": self._model,
                                      "max_batch_size": self._max_batch, "platform": meta.get("platform")}))
        self.concurrent_workers = max(1, int(req.options.get("workers") or DEFAULT_WORKERS))

    def _infer(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        if self._client is None:
            raise BackendError("triton: used after close()")
        n = image.shape[0]
        step = self._max_batch if self._max_batch > 0 else n
        outs = [self._call(image[s:s + step], audio[s:s + step]) for s in range(0, n, step)]
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def _call(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        mod = self._mod
        inputs = []
        for name, arr in ((GEN_IMAGE, image), (GEN_AUDIO, audio)):
            t = mod.InferInput(name, list(arr.shape), "FP32")
            t.set_data_from_numpy(np.ascontiguousarray(arr))
            inputs.append(t)
        kwargs: dict[str, Any] = {"outputs": [mod.InferRequestedOutput(GEN_OUTPUT)]}
        if self._scheme == "grpc":
            kwargs["client_timeout"] = self._timeout
        try:
            result = self._client.infer(self._model, inputs, **kwargs)
        except Exception as exc:
            raise BackendError(f"triton {self._scheme}://{self._address}: {server_message(exc)}") from None
        out = result.as_numpy(GEN_OUTPUT)
        if out is None or out.shape != (image.shape[0], *self.info.outputs[0].shape[1:]):
            raise BackendError(f"triton {self._scheme}://{self._address}: output of shape "
                               f"{None if out is None else list(out.shape)} for a batch of {image.shape[0]}")
        return out.astype(np.float32, copy=False)

    def statistics(self) -> dict[str, int]:
        """The server's ``inference_count`` and ``execution_count`` for the model (fewer executions than inferences
        means the server batched requests together)."""
        stats = self._client.get_inference_statistics(self._model, as_json=True) if self._scheme == "grpc" else \
            self._client.get_inference_statistics(self._model)
        row = stats["model_stats"][0]
        return {"inference_count": int(row.get("inference_count", 0)),
                "execution_count": int(row.get("execution_count", 0))}

    def close(self) -> None:
        """Close the connection."""
        client, self._client = getattr(self, "_client", None), None
        if client is not None:
            with contextlib.suppress(Exception):  # closing a channel to a server that went away
                client.close()


def _probe(options: dict[str, Any] | None = None) -> Availability:
    """tritonclient installed and the named server live (``options["triton_url"]``, else ``$FRAMEGEN_TRITON_URL``)."""
    try:
        from importlib.metadata import version as dist_version

        import tritonclient.grpc  # noqa: F401 - the client the backend uses
    except ImportError as exc:
        return Availability(False, f"tritonclient not installed (pip install 'framegen[serve]'): {exc}")
    version = dist_version("tritonclient")
    url = request_url(OpenRequest(options=dict(options or {})))
    if url is None:
        return Availability(False, f"tritonclient {version}; no server named (--triton-url grpc://HOST:PORT or "
                                   f"${URL_ENV})")
    try:
        scheme, address = parse_url(url)
    except BackendError as exc:
        return Availability(False, str(exc))
    try:
        client = _client(scheme, address, PROBE_TIMEOUT_S)
        try:
            live = (client.is_server_live(client_timeout=PROBE_TIMEOUT_S) if scheme == "grpc"
                    else client.is_server_live())
        finally:
            client.close()
    except Exception as exc:
        return Availability(False, f"Triton server {url} not reachable ({server_message(exc)})")
    if not live:
        return Availability(False, f"Triton server {url} is not live")
    return Availability(True, f"tritonclient {version}, server {url}")


def _open(req: OpenRequest) -> Backend:
    return TritonBackend(req)


SPECS = [
    BackendSpec(name="triton", runtime="tritonclient", device="remote", needs="onnx", precisions=("fp32",),
                probe=_probe, probe_options=_probe, opener=_open,
                description="a Triton Inference Server hosting the contract's generator (framegen serve, or the "
                            "repository framegen export --triton writes); --triton-url grpc://HOST:PORT",
                render_options=lambda: {"workers": DEFAULT_WORKERS}),
]
