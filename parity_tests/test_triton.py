"""Serving on NVIDIA Triton: the exported model repository, `framegen serve` (a real tritonserver from
nvidia-pytriton, on ort-cpu), and the `triton` backend that renders through it."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc")  # the server tests also need pytriton (their fixture skips without it)

from framegen.exporters.errors import ExportError
from framegen.models.bundle import load_bundle, sha256_path
from framegen.toolkit.compare.profiles import FINAL_FRAME, MODEL_OUTPUT, profile_for
from fx_triton import start_server

FP32 = profile_for("fp32")


def _triton(url: str, **options):
    from framegen.runtimes.spec import OpenRequest
    from framegen.runtimes.triton_backend import TritonBackend

    return TritonBackend(OpenRequest(options={"triton_url": url, **options}))


def _local(bundle: Path):
    from framegen.runtimes.registry import open_backend
    from framegen.runtimes.spec import OpenRequest

    return open_backend("ort-cpu", OpenRequest(bundle=bundle, options={"threads": 1}))


def _inputs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from framegen.toolkit.bench.core import bench_inputs

    return bench_inputs("ave", n, seed=seed)


def _check(stage: str, ref: np.ndarray, cand: np.ndarray) -> None:
    from framegen.toolkit.compare.metrics import ErrorStats

    stats = ErrorStats("float" if stage == MODEL_OUTPUT else "uint8")
    stats.update(ref, cand)
    failures = FP32.limits(stage).check(stats.summary())
    assert not failures, f"{stage}: {failures}"


def _stats(url: str) -> dict[str, int]:
    """The server's counters once they stop moving (Triton counts an inference just after its response is sent)."""
    with _triton(url) as be:
        last, deadline = be.statistics(), time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.3)
            now = be.statistics()
            if now == last:
                break
            last = now
        return last


def _metric(server, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name) and 'model="generator"' in line:
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in the metrics")


# ----------------------------------------------------------------------------------------------- repository

def test_exported_repository_configs_parse_into_triton_model_config(triton_bundle):
    from framegen.exporters.triton import validate_repository

    repo = triton_bundle.repository
    configs = validate_repository(repo)
    assert sorted(configs) == ["audio_encoder", "generator"]
    gen, enc = configs["generator"], configs["audio_encoder"]
    assert (gen.platform, enc.platform) == ("onnxruntime_onnx", "onnxruntime_onnx")
    assert [(t.name, list(t.dims)) for t in gen.input] == [("image", [6, 320, 320]), ("audio", [32, 16, 16])]
    assert [(t.name, list(t.dims)) for t in gen.output] == [("output", [3, 320, 320])]
    assert [(t.name, list(t.dims)) for t in enc.input] == [("mel", [1, 80, 16])]
    assert [(t.name, list(t.dims)) for t in enc.output] == [("embedding", [512])]
    assert gen.max_batch_size == 16 and list(gen.dynamic_batching.preferred_batch_size) == [4, 8, 16]
    assert gen.dynamic_batching.max_queue_delay_microseconds > 0
    assert gen.instance_group[0].count == 1 and gen.parameters["framegen_mode"].string_value == "ave"
    assert not gen.optimization.execution_accelerators.gpu_execution_accelerator  # TensorRT only when asked
    bundle = load_bundle(triton_bundle.bundle)
    for kind in ("generator", "audio_encoder"):
        assert sha256_path(repo / kind / "1" / "model.onnx") == bundle.find(kind, "onnx", "fp32").entry["sha256"]


def test_tensorrt_fp16_and_cpu_instances_parse(triton_bundle, tmp_path):
    from framegen.exporters.triton import TritonOptions, validate_repository, write_repository

    trt = write_repository(triton_bundle.bundle, tmp_path / "trt", options=TritonOptions(tensorrt_fp16=True))
    accel = validate_repository(trt)["generator"].optimization.execution_accelerators.gpu_execution_accelerator
    assert accel[0].name == "tensorrt" and accel[0].parameters["precision_mode"] == "FP16"
    cpu = write_repository(triton_bundle.bundle, tmp_path / "cpu",
                           options=TritonOptions(instance_kind="KIND_CPU", instance_count=2, max_batch_size=8,
                                                 preferred_batch_sizes=(8,)))
    from tritonclient.grpc import model_config_pb2

    group = validate_repository(cpu)["generator"].instance_group[0]
    assert (group.kind, group.count) == (model_config_pb2.ModelInstanceGroup.KIND_CPU, 2)
    with pytest.raises(ExportError, match="preferred batch sizes"):
        TritonOptions(max_batch_size=4, preferred_batch_sizes=(8,)).check()


@pytest.mark.slow
def test_invalid_config_fails_the_export_and_leaves_nothing(triton_bundle, generator_ckpt, tmp_path, monkeypatch):
    import framegen.exporters.triton as triton_export
    from framegen.toolkit.export.bundle import export_bundle

    good = triton_export.config_text
    monkeypatch.setattr(triton_export, "config_text", lambda *a, **k: good(*a, **k).replace("dims:", "dimz:"))
    with pytest.raises(ExportError, match="not a valid Triton ModelConfig"):
        triton_export.write_repository(triton_bundle.bundle, tmp_path / "repo")
    # parses, but breaks the contract
    monkeypatch.setattr(triton_export, "config_text",
                        lambda *a, **k: good(*a, **k).replace('name: "audio"', 'name: "audio_in"'))
    with pytest.raises(ExportError, match="contract"):
        triton_export.write_repository(triton_bundle.bundle, tmp_path / "repo")
    with pytest.raises(ExportError, match="contract"):
        export_bundle(generator_ckpt, tmp_path / "bundle", formats=("onnx",), precisions=("fp32",),
                      triton=tmp_path / "repo")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no bundle, no repository, no partial folders


# ----------------------------------------------------------------------------------------------- serving

def test_render_through_triton_gives_the_local_frames(triton_server, triton_bundle, synth_template_dir, tmp_path,
                                                      monkeypatch):
    """`framegen render --backend triton --triton-url ...` on features and frames the suite uses nowhere else."""
    from framegen.runtimes.triton_backend import URL_ENV
    from framegen.toolkit.api import render_frames
    from framegen.toolkit.cli import app
    from typer.testing import CliRunner

    feats = (np.abs(np.random.default_rng(1616).normal(size=(24, 512))) * 0.45).astype(np.float32)
    np.save(tmp_path / "feats.npy", feats)
    monkeypatch.delenv(URL_ENV, raising=False)
    result = CliRunner().invoke(app, ["render", "-t", str(synth_template_dir), "-f", str(tmp_path / "feats.npy"),
                                      "-b", str(triton_bundle.bundle), "--backend", "triton", "--triton-url",
                                      triton_server.grpc_url, "--frames-dir", str(tmp_path / "triton"),
                                      "--start-frame", "5", "--max-frames", "5", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert URL_ENV not in os.environ  # the URL travels in the request's options, not through the environment
    local = list(render_frames(synth_template_dir, features=feats, bundle=triton_bundle.bundle, backend="ort-cpu",
                               start_frame=5, max_frames=5))
    pngs = sorted((tmp_path / "triton").glob("*.png"))
    assert len(pngs) == len(local) == 5
    for png, frame in zip(pngs, local, strict=True):
        _check(FINAL_FRAME, frame.frame[None], cv2.imread(str(png))[None])
    remote = list(render_frames(synth_template_dir, features=feats, bundle=triton_bundle.bundle, backend="triton",
                                start_frame=5, max_frames=5, options={"triton_url": triton_server.grpc_url}))
    _check(MODEL_OUTPUT, np.stack([f.pred for f in local]), np.stack([f.pred for f in remote]))
    assert remote[0].pred.std() > 0.05  # a calibrated model: frames differ, so equality means something


def test_mode_comes_from_the_server_and_a_wrong_mode_is_refused(triton_server, triton_bundle):
    from framegen.runtimes.base import BackendError

    with _triton(triton_server.grpc_url) as be:
        assert be.mode == "ave" and be.info.extra["max_batch_size"] == 16
    image, audio = _inputs(1, seed=50)
    with _triton(f"http://{triton_server.http_address}") as be, _local(triton_bundle.bundle) as local:
        assert be.mode == "ave"  # KServe v2 over HTTP as well
        _check(MODEL_OUTPUT, local.infer(image, audio), be.infer(image, audio))
        assert be.statistics()["inference_count"] >= 1
    with pytest.raises(BackendError, match="'ave' mode, not the requested 'wenet'"):
        from framegen.runtimes.spec import OpenRequest
        from framegen.runtimes.triton_backend import TritonBackend

        TritonBackend(OpenRequest(mode="wenet", options={"triton_url": triton_server.grpc_url}))


def test_eight_concurrent_streams_are_batched_and_each_gets_its_own_frames(triton_server, triton_bundle):
    streams, frames = 8, 2
    inputs = [_inputs(frames, seed=100 + k) for k in range(streams)]
    outputs: dict[int, np.ndarray] = {}
    errors: list[str] = []
    clients = [_triton(triton_server.grpc_url) for _ in range(streams)]
    go = threading.Barrier(streams)

    def stream(k: int) -> None:
        try:
            go.wait(timeout=60)
            image, audio = inputs[k]
            outputs[k] = np.concatenate([clients[k].infer(image[i:i + 1], audio[i:i + 1]) for i in range(frames)])
        except Exception as exc:
            errors.append(f"stream {k}: {exc}")

    before = _stats(triton_server.grpc_url)
    threads = [threading.Thread(target=stream, args=(k,)) for k in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for c in clients:
        c.close()
    after = _stats(triton_server.grpc_url)
    assert not errors, errors
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == streams * frames
    assert executions < inferences, f"{executions} executions for {inferences} inferences: nothing was batched"
    with _local(triton_bundle.bundle) as local:
        for k in range(streams):
            _check(MODEL_OUTPUT, local.infer(*inputs[k]), outputs[k])


def test_a_client_that_disconnects_mid_request_does_not_disturb_the_others(triton_server, triton_bundle):
    import tritonclient.grpc as grpcclient

    streams = 3
    inputs = [_inputs(2, seed=300 + k) for k in range(streams)]
    outputs: dict[int, np.ndarray] = {}
    errors: list[str] = []
    dropped: list[str] = []

    def stream(k: int) -> None:
        try:
            with _triton(triton_server.grpc_url) as be:
                outputs[k] = be.infer(*inputs[k])
        except Exception as exc:
            errors.append(f"stream {k}: {exc}")

    def impatient() -> None:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{triton_server.grpc_port}")
        image, audio = _inputs(8, seed=399)
        ins = [grpcclient.InferInput("image", list(image.shape), "FP32"),
               grpcclient.InferInput("audio", list(audio.shape), "FP32")]
        ins[0].set_data_from_numpy(image)
        ins[1].set_data_from_numpy(audio)
        try:
            client.infer("generator", ins, client_timeout=0.05)  # gives up (and hangs up) long before the answer
        except Exception as exc:
            dropped.append(str(exc))
        finally:
            client.close()

    def half_request() -> None:
        """An HTTP client that announces a 20 MB body, sends 1 MB of it and closes the connection."""
        body = b'{"inputs":[{"name":"image","shape":[1,6,320,320],"datatype":"FP32","data":[' + b"0.5," * 250_000
        with socket.create_connection(("127.0.0.1", triton_server.http_port), timeout=10) as s:
            s.sendall(b"POST /v2/models/generator/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                      b"application/json\r\nContent-Length: 20000000\r\n\r\n" + body)

    threads = [threading.Thread(target=f) for f in (impatient, half_request)]
    threads += [threading.Thread(target=stream, args=(k,)) for k in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert dropped and "deadline" in dropped[0].lower(), dropped
    assert not errors, errors
    with _local(triton_bundle.bundle) as local:
        for k in range(streams):
            _check(MODEL_OUTPUT, local.infer(*inputs[k]), outputs[k])
        image, audio = _inputs(1, seed=398)
        with _triton(triton_server.grpc_url) as be:  # and the server still answers afterwards
            _check(MODEL_OUTPUT, local.infer(image, audio), be.infer(image, audio))


def test_malformed_requests_get_a_clear_error_and_the_server_keeps_serving(triton_server, triton_bundle):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from framegen.runtimes.base import BackendError
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{triton_server.grpc_port}")
    image, audio = _inputs(1, seed=500)

    def send(img: np.ndarray, aud: np.ndarray, dtype: str = "FP32", name: str = "image") -> str:
        ins = [grpcclient.InferInput(name, list(img.shape), dtype), grpcclient.InferInput("audio", list(aud.shape),
                                                                                          "FP32")]
        ins[0].set_data_from_numpy(img)
        ins[1].set_data_from_numpy(aud)
        with pytest.raises(InferenceServerException) as info:
            client.infer("generator", ins, client_timeout=60)
        return str(info.value)

    assert "unexpected shape for input 'image'" in send(image[:, :3], audio)
    assert "expects 'FP32'" in send(image.astype(np.float64), audio, "FP64")
    assert "unexpected inference input 'picture'" in send(image, audio, name="picture")
    nan = image.copy()
    nan[0, 4, 100, 100] = np.nan
    assert "input 'image' holds 1 NaN/Inf value(s)" in send(nan, audio)
    client.close()
    with _triton(triton_server.grpc_url) as be:  # the backend turns the server's reason into one line
        inf = audio.copy()
        inf[0, 0, 0, 0] = np.inf
        with pytest.raises(BackendError) as info:
            be.infer(image, inf)
        assert str(info.value).endswith("input 'audio' holds 1 NaN/Inf value(s); the contract's inputs are finite")
        assert "\n" not in str(info.value) and "Traceback" not in str(info.value)
        http = httpclient.InferenceServerClient(triton_server.http_address)
        health = (http.is_server_live(), http.is_server_ready(), http.is_model_ready("generator"),
                  http.is_model_ready("audio_encoder"))
        http.close()  # an open HTTP connection holds Triton's shutdown for the whole exit timeout
        assert health == (True, True, True, True), health
        with _local(triton_bundle.bundle) as local:
            _check(MODEL_OUTPUT, local.infer(image, audio), be.infer(image, audio))


def test_audio_encoder_is_served_with_the_contract_names(triton_server, triton_bundle, audio_encoder):
    import torch
    import tritonclient.grpc as grpcclient

    mel = np.random.default_rng(7).uniform(-4, 4, size=(3, 1, 80, 16)).astype(np.float32)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{triton_server.grpc_port}")
    ins = [grpcclient.InferInput("mel", list(mel.shape), "FP32")]
    ins[0].set_data_from_numpy(mel)
    got = client.infer("audio_encoder", ins, client_timeout=60).as_numpy("embedding")
    client.close()
    with torch.no_grad():
        want = audio_encoder(torch.from_numpy(mel)).numpy()
    assert got.shape == (3, 512)
    assert np.abs(got - want).max() < 1e-4


@pytest.mark.slow
def test_sigterm_drains_in_flight_requests_and_exits_0(triton_bundle, tmp_path):
    """A second server (the session's keeps serving the other tests): it never says ready before its models are
    loaded. SIGTERM while one request executes and another waits in the queue behind it: both complete, a request
    sent after the SIGTERM is refused, and the process exits 0."""
    pytest.importorskip("pytriton")
    readiness: list[tuple[bool, bool]] = []
    server = start_server(triton_bundle.bundle, tmp_path, "--max-batch", "8", readiness=readiness)
    assert readiness, "the server never answered a readiness probe while starting"
    assert (True, False) not in readiness, f"/v2/health/ready said ready before the generator was: {readiness}"
    results: dict[str, object] = {}

    def request(tag: str, n: int) -> None:
        try:
            with _triton(server.grpc_url) as be:
                results[tag] = be.infer(*_inputs(n, seed=700 + n)).shape
        except Exception as exc:
            results[tag] = exc

    try:
        # 8 + 2 frames exceed the max batch of 8, so the second request waits in the queue behind the first
        first = threading.Thread(target=request, args=("executing", 8))
        first.start()
        time.sleep(0.3)
        second = threading.Thread(target=request, args=("queued", 2))
        second.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and second.is_alive():
            if _metric(server, "nv_inference_pending_request_count") >= 1:
                break
            time.sleep(0.02)
        assert first.is_alive() and second.is_alive(), "both requests finished before SIGTERM; nothing to drain"
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        late = threading.Thread(target=request, args=("after SIGTERM", 1))  # a new request while draining
        late.start()
        code = server.stop()
        for t in (first, second, late):
            t.join(60)
    finally:
        server.stop(10)
    late_result = results.pop("after SIGTERM")
    assert isinstance(late_result, Exception), f"a request sent after SIGTERM was served: {late_result}"
    assert results == {"executing": (8, 3, 320, 320), "queued": (2, 3, 320, 320)}, results
    assert code == 0, server.output()[-2000:]
    assert "server stopped" in server.output()


def test_bench_reports_throughput_latency_and_batching_per_concurrency(triton_server, tmp_path, monkeypatch):
    import json

    from framegen.runtimes.triton_backend import URL_ENV
    from framegen.toolkit.cli import app
    from typer.testing import CliRunner

    monkeypatch.setenv(URL_ENV, "")
    result = CliRunner().invoke(app, ["bench", "--backends", "triton", "--streams", "1,3", "--iterations", "2",
                                      "--triton-url", triton_server.grpc_url, "--json", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "b.json").read_text())
    rows = {r["streams"]: r for r in report["results"]}
    assert sorted(rows) == [1, 3] and report["model"]["mode"] == "ave"
    for n, r in rows.items():
        assert r["requests"] == r["frames"] == r["server_inferences"] == 2 * n
        assert r["fps"] > 0 and r["latency_ms"]["p50"] > 0
    assert rows[1]["server_executions"] == 2 and rows[1]["gain_over_1_stream"] == 1.0
    assert rows[3]["gain_over_1_stream"] == round(rows[3]["fps"] / rows[1]["fps"], 3)
    assert "gain" in result.output and "avg batch" in result.output


def test_bad_serve_and_client_options_are_one_line_errors(triton_bundle):
    pytest.importorskip("pytriton")
    from framegen.runtimes.base import BackendError
    from framegen.toolkit.serve import ServeError, serve

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServeError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve(triton_bundle.bundle, backend="ort-cpu", http_port=0, grpc_port=port, metrics_port=0)
    with pytest.raises(ServeError, match="must differ"):
        serve(triton_bundle.bundle, http_port=9000, grpc_port=9000, metrics_port=9002)
    with pytest.raises(BackendError, match="expected grpc://HOST:PORT"):
        _triton("ftp://127.0.0.1:1")
    with pytest.raises(BackendError, match="cannot reach the server"):
        _triton(f"grpc://127.0.0.1:{port}", triton_timeout=2)


def test_sigterm_with_an_idle_keepalive_connection_exits_promptly_and_leaves_no_temporary_files(triton_bundle,
                                                                                               tmp_path):
    """An idle keep-alive HTTP client used to hold the server for the whole 30 s exit timeout, and pytriton's
    workspace, python_env_* and the default log stayed in /tmp. Now: exit 0 within 10 s, and the temporary folder
    the server was given is empty again."""
    import socket

    pytest.importorskip("pytriton")
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    server = start_server(triton_bundle.bundle, tmp_path, env_extra={"TMPDIR": str(private_tmp)}, log_file=False)
    idle = socket.create_connection(("127.0.0.1", server.http_port), timeout=5)
    try:
        idle.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        assert b"200" in idle.recv(4096).split(b"\r\n", 1)[0]
        t0 = time.monotonic()
        code = server.stop(30)
        took = time.monotonic() - t0
    finally:
        idle.close()
        server.stop(10)
    assert code == 0, server.output()[-2000:]
    assert took < 10.0, (took, server.output()[-2000:])
    # onnxruntime-gpu writes one fixed-name file, $TMPDIR/.ses, when it is imported (any ORT user does): not ours,
    # not per run, so not counted
    assert sorted(p.name for p in private_tmp.iterdir() if p.name != ".ses") == [], server.output()[-1000:]
