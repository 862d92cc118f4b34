"""ONNX Runtime backends: ``ort-cpu``, ``ort-cuda`` and ``ort-trt`` (the TensorRT execution provider).

Each opens a generator ONNX model from a bundle (``OpenRequest(bundle=..., precision=...)``) or an explicit ``.onnx``
file (``OpenRequest(artifact=...)``). fp16 models are fed and read in whatever dtype their inputs declare; ``infer``
always takes and returns float32.

Session options are set on purpose rather than left to defaults that change between releases: graph optimisation
ALL, sequential execution, intra-op threads = physical cores this process may use, inter-op threads 1 (the graph
is one chain, there is nothing to run in parallel at the operator level).

``OpenRequest.options`` understood here:

===========================  ==========================================================================================
``threads``                  intra-op threads (default: physical cores available to this process)
``mem_pattern``, ``cpu_arena``  ORT memory-pattern planning / CPU arena, default on. Measured on ort-cpu (2 busy
                             cores): memory pattern off made no difference; arena off was 1.7-2x slower per frame
``workers``                  concurrent ``infer`` calls the render pipeline may make (default 1); intra-op threads
                             then default to cores / workers. On 2 cores, two single-threaded calls in flight keep
                             both cores busy while decode / paste / encode threads come and go, where one two-thread
                             call stalls at every operator whenever either thread is pre-empted
``spin``                     let idle intra-op threads spin (default off: spinning threads steal the cores that the
                             render pipeline's decode, paste and encode threads need)
``io_binding``               bind inputs and output explicitly (default on for CUDA / TensorRT, off on CPU, where
                             ``session.run`` already reads numpy memory in place; on CPU it exercises the same code)
``fixed_batch``              run every call at this batch from preallocated, bound buffers; smaller chunks are padded,
                             larger calls split (the CPU twin of the CUDA-graph path)
``cuda_graph``               ort-cuda: capture a CUDA graph (default on). A graph replays fixed shapes at fixed
                             addresses, so the first call's batch becomes the fixed batch (above); if ONNX Runtime
                             cannot capture (a node outside the CUDA EP), the session is rebuilt without and
                             ``info.extra['cuda_graph']`` says why
``device_id``                GPU ordinal (default 0)
``tf32``                     ort-cuda: allow TF32 convolutions (default off: fp32 artifacts must compute in fp32)
``cudnn_conv_algo_search``   ``EXHAUSTIVE`` (default: the model's shapes are fixed, so the one-off search pays),
                             ``HEURISTIC`` or ``DEFAULT``
``trt_cache``                TensorRT engine + timing cache directory (default ``$XDG_CACHE_HOME/framegen/trt/<model
                             sha256 prefix>``: bundles are content-addressed and may be read-only, so nothing is
                             written into them)
``trt_max_batch``            largest batch of the TensorRT optimisation profile (default 32); larger calls are split
``trt_fp16``                 build fp16 TensorRT kernels (default: on for fp16 requests)
``log_level``                ORT log severity for the session (default 3: errors only)
===========================  ==========================================================================================

The CUDA, CUDA-graph and TensorRT paths have not been run on a GPU by their author (no GPU was available); their CPU
twins (``io_binding``, ``fixed_batch``) are under test. A backend object serves one caller at a time (the fixed-shape
runner reuses its buffers).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
from framegen.models.contract import GEN_AUDIO, GEN_IMAGE, GEN_OUTPUT, INNER_SIZE
from framegen.models.errors import first_line
from framegen.runtimes.artifacts import mode_from_audio_shape, resolve_artifact, settle_mode
from framegen.runtimes.base import Backend, BackendError, BackendInfo, TensorMeta
from framegen.runtimes.image_io_backend import OrtImageBackend
from framegen.runtimes.ort_session import (
    CPU_EP,
    CUDA_EP,
    GPU_DEFAULT_BATCH,
    TRT_EP,
    TRT_MAX_BATCH,
    BindingRunner,
    FixedRunner,
    PlainRunner,
    cuda_provider_options,
    meta_from_node,
    ort_module,
    physical_cores,
    probe_provider,
    read_onnx_io,
    session_options,
    trt_cache_dir,
    trt_provider_options,
)
from framegen.runtimes.spec import Availability, BackendSpec, OpenRequest

log = logging.getLogger("framegen.runtimes")


# --------------------------------------------------------------------------------------------------- availability


# ------------------------------------------------------------------------------------------------------ sessions


# ------------------------------------------------------------------------------------------------------- runners


# ------------------------------------------------------------------------------------------------------- backend

def _check_contract(path: Any, inputs: list[TensorMeta], outputs: list[TensorMeta]) -> dict[str, TensorMeta]:
    """The model's own inputs, checked against the contract before a session is made; returns them by name."""
    by_name = {t.name: t for t in inputs}
    out_by_name = {t.name: t for t in outputs}
    if set(by_name) != {GEN_IMAGE, GEN_AUDIO} or GEN_OUTPUT not in out_by_name:
        raise BackendError(f"{path}: inputs {sorted(by_name)} -> outputs {sorted(out_by_name)} do not follow "
                           f"the contract ({GEN_IMAGE}, {GEN_AUDIO} -> {GEN_OUTPUT})")
    if by_name[GEN_IMAGE].shape[1:] != (6, INNER_SIZE, INNER_SIZE):
        raise BackendError(f"{path}: image input has shape {list(by_name[GEN_IMAGE].shape)}, expected "
                           f"[batch, 6, {INNER_SIZE}, {INNER_SIZE}]")
    return by_name


class OrtBackend(Backend):
    """A generator ONNX model in an ONNX Runtime session on one execution provider."""

    def __init__(self, name: str, provider: str, req: OpenRequest) -> None:
        art = resolve_artifact(req, "onnx", name)
        inputs, outputs, model_precision, _meta = read_onnx_io(art.path)
        by_name = _check_contract(art.path, inputs, outputs)
        mode = settle_mode(mode_from_audio_shape(by_name[GEN_AUDIO].shape), art.mode, req.mode, os.fspath(art.path))
        precision = art.precision or model_precision
        if req.precision == "fp16" and precision == "fp32" and provider != TRT_EP:
            # (an fp16 file opened with the default fp32 request runs as what it is: fp16)
            raise BackendError(f"{art.path}: is an fp32 model; fp16 needs an fp16 artifact")
        options = dict(req.options)
        device = "cpu" if provider == CPU_EP else "cuda"
        device_id = int(options.get("device_id", 0))
        static_batch = by_name[GEN_IMAGE].shape[0]
        extra: dict[str, Any] = {"onnxruntime": ort_module().__version__, "artifact": os.fspath(art.path)}

        self._provider = provider
        self._path = art.path
        self._options = options
        self._cuda_graph = provider == CUDA_EP and bool(options.get("cuda_graph", True))
        self._graph_checked = not self._cuda_graph
        self._max_batch: int | None = None
        providers, precision = self._providers_for(art, inputs, precision, req.precision, static_batch, extra)
        self._providers = providers
        self._session = self._create_session(providers)

        sess_in = {i.name: i for i in self._session.get_inputs()}
        sess_out = {o.name: o for o in self._session.get_outputs()}
        info_in = [meta_from_node(sess_in[n]) for n in (GEN_IMAGE, GEN_AUDIO)]
        info_out = [meta_from_node(sess_out[GEN_OUTPUT])]
        self._in_meta = {t.name: t for t in info_in}
        self._out_meta = info_out[0]
        extra.update(providers=self._session.get_providers(),
                     threads=self._session.get_session_options().intra_op_num_threads)
        super().__init__(BackendInfo(name, device if device == "cpu" else f"cuda:{device_id}", precision, mode,
                                     art.source, info_in, info_out, extra))
        self.default_batch = static_batch or (1 if provider == CPU_EP else GPU_DEFAULT_BATCH)
        runner = self._choose_runner(info_in, info_out[0], device, device_id, static_batch)
        graph_off = getattr(self, "_graph_off_reason", None)
        self.info.extra.update(workers=self.concurrent_workers, runner=runner,
                               cuda_graph=f"off ({graph_off})" if graph_off else self._cuda_graph)

    def _providers_for(self, art: Any, inputs: list[TensorMeta], precision: str, requested: str,
                       static_batch: int | None, extra: dict[str, Any]) -> tuple[list[Any], str]:
        """The session's execution providers, in order of preference, and the precision it will compute in
        (TensorRT may build fp16 from an fp32 model); TensorRT's settings go into ``extra``."""
        options, provider = self._options, self._provider
        if provider == CPU_EP:
            return [CPU_EP], precision
        if provider == CUDA_EP:
            return [(CUDA_EP, cuda_provider_options(options, self._cuda_graph)), CPU_EP], precision
        trt_fp16 = bool(options.get("trt_fp16", precision == "fp16" or requested == "fp16"))
        max_batch = int(options.get("trt_max_batch", TRT_MAX_BATCH))
        cache = trt_cache_dir(art, options)
        trt_opts = trt_provider_options(inputs, cache, trt_fp16, max_batch, GPU_DEFAULT_BATCH,
                                        int(options.get("device_id", 0)))
        self._max_batch = max_batch if static_batch is None else None
        extra.update(trt_cache=os.fspath(cache), trt_fp16=trt_fp16, trt_max_batch=max_batch)
        return ([(TRT_EP, trt_opts), (CUDA_EP, cuda_provider_options(options, False)), CPU_EP],
                "fp16" if trt_fp16 else precision)

    def _choose_runner(self, info_in: list[TensorMeta], info_out: TensorMeta, device: str, device_id: int,
                       static_batch: int | None) -> str:
        """How each call feeds the session: fixed buffers (static batch, ``fixed_batch``, CUDA graphs), I/O
        binding (off the CPU by default), or plain ``run``; returns its name."""
        options = self._options
        fixed = options.get("fixed_batch")
        if static_batch is not None or fixed or self._cuda_graph:
            batch = static_batch or (int(fixed) if fixed else None)
            self._runner: Any = FixedRunner(self._session, info_in, info_out, device, device_id, batch)
            return "fixed"
        if bool(options.get("io_binding", self._provider != CPU_EP)):
            self._runner = BindingRunner(self._session, GEN_OUTPUT, device, device_id)
            return "io_binding"
        self._runner = PlainRunner(self._session, GEN_OUTPUT)
        # One session serves concurrent run() calls; fixed/bound runners own shared buffers, so they stay single.
        self.concurrent_workers = max(1, int(options.get("workers") or 1))
        return "run"

    def _create_session(self, providers: list[Any]) -> Any:
        ort = ort_module()
        so = session_options(self._options)
        want = self._provider
        try:
            session = ort.InferenceSession(os.fspath(self._path), so, providers=providers)
        except Exception as exc:
            if self._cuda_graph and "graph" in str(exc).lower():
                # ORT refuses CUDA graphs at creation when a node is placed outside the CUDA EP.
                log.warning("%s: CUDA graph refused (%s); running without", self._path, first_line(exc))
                self._cuda_graph = False
                self._graph_off_reason = first_line(exc)
                return self._create_session([(CUDA_EP, cuda_provider_options(self._options, False)), CPU_EP])
            raise BackendError(f"{self._path}: ONNX Runtime cannot open it on {want} ({first_line(exc)})") from None
        got = session.get_providers()
        if not got or got[0] != want:
            raise BackendError(f"{self._path}: ONNX Runtime could not create {want} (session providers: "
                               f"{', '.join(got)})")
        return session

    def _infer(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        if self._session is None:
            raise BackendError(f"{self.name}: used after close()")
        n = image.shape[0]
        step = self._runner.batch or n  # a fixed runner without a batch yet takes the first call's
        if self._max_batch:
            step = min(step, self._max_batch)
        outs = []
        for start in range(0, n, step):
            feeds = {GEN_IMAGE: self._cast(GEN_IMAGE, image[start:start + step]),
                     GEN_AUDIO: self._cast(GEN_AUDIO, audio[start:start + step])}
            outs.append(self._run(feeds))
        out = outs[0] if len(outs) == 1 else np.concatenate(outs)
        return out.astype(np.float32, copy=False)

    def _cast(self, name: str, arr: np.ndarray) -> np.ndarray:
        dtype = np.dtype(self._in_meta[name].dtype)
        return arr if arr.dtype == dtype else arr.astype(dtype)

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        try:
            out = self._runner.run(feeds)
        except Exception as exc:
            if not self._graph_checked:
                # Capture happens on the first runs; if it fails, fall back to plain I/O binding (same numbers).
                log.warning("%s: CUDA graph failed (%s); running without", self._path, first_line(exc))
                self._disable_cuda_graph(first_line(exc))
                return self._run(feeds)
            raise BackendError(f"{self.name}: ONNX Runtime failed on {self._path.name}: {first_line(exc)}") from None
        self._graph_checked = True
        return out

    def _disable_cuda_graph(self, reason: str) -> None:
        self._cuda_graph = False
        self._graph_checked = True
        self._session = self._create_session([(CUDA_EP, cuda_provider_options(self._options, False)), CPU_EP])
        device_id = int(self._options.get("device_id", 0))
        self._runner = BindingRunner(self._session, GEN_OUTPUT, "cuda", device_id)
        self.info.extra.update(runner="io_binding", cuda_graph=f"off ({reason})")

    def close(self) -> None:
        """Drop the session (and its device memory)."""
        self._runner = None
        self._session = None


# --------------------------------------------------------------------------------------------------------- specs

def _probe_cpu() -> Availability:
    return probe_provider(CPU_EP)


def _probe_cuda() -> Availability:
    return probe_provider(CUDA_EP)


def _probe_trt() -> Availability:
    return probe_provider(TRT_EP)


def _open_cpu(req: OpenRequest) -> Backend:
    if req.io == "image":
        return OrtImageBackend("ort-cpu", req)
    return OrtBackend("ort-cpu", CPU_EP, req)


def _open_cuda(req: OpenRequest) -> Backend:
    if req.io == "image":
        return OrtImageBackend("ort-cuda", req)
    return OrtBackend("ort-cuda", CUDA_EP, req)


def _render_options_cpu() -> dict[str, Any]:
    """ort-cpu renders with single-threaded inferences in flight, one per physical core and one more: measured on 2
    cores, a render with one two-thread session ran at 0.47x the model-only rate, because every operator waits for
    whichever of its threads the decode / paste / encode threads pre-empted; the extra one keeps the cores busy while
    a pipeline thread has one of them (300 frames, 2-core AMX Xeon: 17.1 fps with 2, 17.4 with 3, 17.6 with 4)."""
    return {"workers": physical_cores() + 1}


def _open_trt(req: OpenRequest) -> Backend:
    return OrtBackend("ort-trt", TRT_EP, req)


# auto ranks: TensorRT's fused engines, then cuDNN through ONNX Runtime (I/O binding, CUDA graphs) ahead of eager
# PyTorch on CUDA; on the CPU ONNX Runtime's fused, pre-packed convolutions beat eager PyTorch 5-6x (README figures).
SPECS = [
    # int8 (QDQ) runs when named: OpenVINO's int8 kernels were faster on every CPU measured (openvino SPECS).
    BackendSpec("ort-cpu", "onnxruntime", "cpu", "onnx", ("fp32", "fp16", "int8"), _probe_cpu, _open_cpu,
                "ONNX Runtime CPU execution provider; int8 (QDQ) artifacts when named", ios=("tensor", "image"),
                render_options=_render_options_cpu, auto_rank=50, auto_precisions=("fp32", "fp16")),
    BackendSpec("ort-cuda", "onnxruntime", "cuda", "onnx", ("fp32", "fp16"), _probe_cuda, _open_cuda,
                "ONNX Runtime CUDA EP: I/O binding, CUDA graphs for fixed batches", ios=("tensor", "image"),
                auto_rank=20),
    BackendSpec("ort-trt", "onnxruntime", "cuda", "onnx", ("fp32", "fp16"), _probe_trt, _open_trt,
                "ONNX Runtime TensorRT EP (engine cache, fp16), CUDA EP fallback", auto_rank=10),
]
