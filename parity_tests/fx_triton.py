"""Triton fixtures: an ONNX-only bundle exported together with its Triton model repository (``--triton``), and a
``framegen serve`` process on free loopback ports for the session, stopped with SIGTERM at the end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT

__all__ = ["triton_bundle", "triton_server"]

START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class TritonExport:
    """The bundle and the repository one ``export_bundle(..., triton=...)`` call wrote."""

    bundle: Path
    repository: Path


@dataclass
class ServerProcess:
    """A ``framegen serve`` child process and where it listens."""

    proc: subprocess.Popen
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    log: Path

    @property
    def grpc_url(self) -> str:
        """``grpc://127.0.0.1:PORT``."""
        return f"grpc://{self.host}:{self.grpc_port}"

    @property
    def http_address(self) -> str:
        """``127.0.0.1:PORT`` (tritonclient.http's form)."""
        return f"{self.host}:{self.http_port}"

    def output(self) -> str:
        """What the process wrote to stdout / stderr so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then wait; SIGKILL to the process group if it does not exit. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(30)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held open together while chosen, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def start_server(bundle: Path, workdir: Path, *extra: str, env_extra: dict[str, str] | None = None,
                 log_file: bool = True, readiness: list[tuple[bool, bool]] | None = None) -> ServerProcess:
    """Start ``framegen serve`` (ort-cpu) on free loopback ports and wait until its models are ready.
    ``readiness`` collects (server ready, generator ready) from every answer while waiting, polled every 50 ms."""
    import tritonclient.http as httpclient

    http_port, grpc_port, metrics_port = free_ports(3)
    log = workdir / f"serve-{grpc_port}.log"
    env = {k: v for k, v in os.environ.items() if k != "FRAMEGEN_TRITON_URL"}
    env.update(env_extra or {})
    log_opt = ["--log-file", str(workdir / f"triton-{grpc_port}.log")] if log_file else []
    cmd = [sys.executable, "-m", "framegen.toolkit.cli", "serve", "--bundle", str(bundle), "--backend", "ort-cpu",
           "--host", "127.0.0.1", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
           "--metrics-port", str(metrics_port), *log_opt, *extra]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    server = ServerProcess(proc, "127.0.0.1", http_port, grpc_port, metrics_port, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    client = httpclient.InferenceServerClient(server.http_address, connection_timeout=2.0, network_timeout=5.0)
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"framegen serve exited with {proc.returncode}: {server.output()[-3000:]}")
            try:
                if readiness is not None:
                    readiness.append((client.is_server_ready(), client.is_model_ready("generator")))
                if "serving generator" in server.output() and all(
                        client.is_model_ready(m) for m in ("generator", "audio_encoder")):
                    return server
            except Exception:  # not listening yet
                pass
            time.sleep(0.05 if readiness is not None else 0.5)
    finally:
        client.close()
    server.stop(10)
    raise AssertionError(f"framegen serve not ready after {START_TIMEOUT_S:.0f} s: {server.output()[-3000:]}")


@pytest.fixture(scope="session")
def triton_bundle(tmp_path_factory, generator_ckpt, encoder_ckpt) -> TritonExport:
    """ONNX fp32 generator + audio encoder of the calibrated seeded checkpoints, exported with ``triton=`` (the
    path ``framegen export --triton`` takes): the bundle and its Triton model repository."""
    pytest.importorskip("tritonclient.grpc")
    from framegen.toolkit.export.bundle import export_bundle

    base = tmp_path_factory.mktemp("triton")
    bundle = export_bundle(generator_ckpt, base / "bundle", audio_encoder=encoder_ckpt, formats=("onnx",),
                           precisions=("fp32",), triton=base / "repository")
    return TritonExport(Path(bundle), base / "repository")


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory, triton_bundle):
    """``framegen serve`` of :func:`triton_bundle` for the session (default batching settings)."""
    pytest.importorskip("pytriton")
    pytest.importorskip("tritonclient.grpc")
    server = start_server(triton_bundle.bundle, tmp_path_factory.mktemp("triton_serve"))
    yield server
    server.stop()
