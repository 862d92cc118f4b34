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

import functools
import hashlib
import io
import logging
import os
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
from framegen.models.contract import GEN_AUDIO, GEN_IMAGE, GEN_OUTPUT, INNER_SIZE
from framegen.models.errors import first_line
from framegen.runtimes.artifacts import ResolvedArtifact, mode_from_audio_shape, resolve_artifact, settle_mode
from framegen.runtimes.base import Backend, BackendError, BackendInfo, TensorMeta
from framegen.runtimes.image_io_backend import OrtImageBackend
from framegen.runtimes.native import missing_dependency, missing_libraries, needed_libraries, nvidia_gpu
from framegen.runtimes.spec import Availability, BackendSpec, OpenRequest

log = logging.getLogger("framegen.runtimes")

CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
TRT_EP = "TensorrtExecutionProvider"
_PROVIDER_LIB = {CUDA_EP: "libonnxruntime_providers_cuda.so", TRT_EP: "libonnxruntime_providers_tensorrt.so"}
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}
_CUDNN = "libcudnn.so.9"  # what onnxruntime-gpu 1.19+ builds need, when the TensorRT provider is not shipped
GPU_DEFAULT_BATCH = 16
TRT_MAX_BATCH = 32


def _ort() -> Any:
    import onnxruntime

    return onnxruntime


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads slow convolution-heavy ORT sessions down)."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except ImportError:
        n = None
    n = n or os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        n = min(n, len(os.sched_getaffinity(0)))
    return max(1, n)


# --------------------------------------------------------------------------------------------------- availability

def _tiny_model() -> bytes:
    """A 1x1 convolution as ONNX bytes: enough to make an execution provider create itself and run a kernel."""
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 1, 1], [2.0])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _provider_lib_path(provider: str) -> Path:
    return Path(_ort().__file__).parent / "capi" / _PROVIDER_LIB[provider]


@functools.lru_cache(maxsize=1)
def _preload_cuda_libraries() -> None:
    """Let ONNX Runtime load CUDA / cuDNN from the nvidia-* pip packages when those are how they were installed."""
    ort = _ort()
    if hasattr(ort, "preload_dlls"):
        try:
            with redirect_stdout(io.StringIO()):  # it prints its misses; the probe reports them itself
                ort.preload_dlls()
        except Exception as exc:  # a failed preload only means the default loader path is all there is
            log.debug("onnxruntime.preload_dlls failed: %s", exc)


@functools.cache
def probe_provider(provider: str) -> Availability:
    """Whether ONNX Runtime can really create and run ``provider`` here, and in one sentence why not. Cached."""
    try:
        ort = _ort()
    except ImportError as exc:
        return Availability(False, f"onnxruntime not installed ({exc})")
    version = ort.__version__
    if provider not in ort.get_available_providers():
        pkg = "onnxruntime-gpu" if provider in (CUDA_EP, TRT_EP) else "onnxruntime"
        return Availability(False, f"onnxruntime {version} has no {provider} (install {pkg})")
    if provider == CPU_EP:
        return Availability(True, f"onnxruntime {version}, {physical_cores()} intra-op threads")
    gpu = nvidia_gpu()
    problems = []
    if gpu.count == 0:
        problems.append(gpu.reason)
    if provider == TRT_EP and sys.platform.startswith("linux"):
        # Checked even without a GPU so that a machine missing both learns about both.
        needed = needed_libraries(_provider_lib_path(TRT_EP))
        trt_libs = [n for n in needed if n.startswith(("libnvinfer", "libnvonnx"))]
        absent = missing_libraries(trt_libs)
        if absent:
            problems.append(f"TensorRT libraries ({', '.join(absent)}) not found")
    if problems:
        return Availability(False, "; ".join(problems))
    cuda_major = str(getattr(ort, "cuda_version", "") or "").split(".")[0]
    if gpu.driver_cuda and cuda_major.isdigit() and gpu.driver_cuda[0] < int(cuda_major):
        return Availability(False, f"NVIDIA driver supports CUDA {gpu.driver_cuda[0]}.{gpu.driver_cuda[1]}, "
                                   f"onnxruntime {version} needs CUDA {cuda_major}")
    if sys.platform.startswith("linux"):
        _preload_cuda_libraries()
        missing = missing_dependency(_provider_lib_path(provider))
        if missing:
            kind = "TensorRT" if missing.startswith(("libnvinfer", "libnvonnx")) else f"CUDA {cuda_major}"
            return Availability(False, f"{kind} libraries for onnxruntime {version} not found ({missing})")
        # The CUDA provider dlopens cuDNN at run time, so it loads without it; the TensorRT provider links the same
        # cuDNN, which names the soname this build wants.
        cudnn = next((n for n in needed_libraries(_provider_lib_path(TRT_EP)) if n.startswith("libcudnn")), _CUDNN)
        if missing_libraries([cudnn]):
            return Availability(False, f"cuDNN ({cudnn}) not found")
    # The real test: create the provider and run one convolution (loads cuDNN, checks the GPU architecture).
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(_tiny_model(), opts, providers=[provider, CPU_EP])
        if sess.get_providers()[0] != provider:
            return Availability(False, f"onnxruntime {version} could not create {provider} (it fell back to CPU; "
                                       "its log says why)")
        sess.run(None, {"x": np.ones((1, 1, 4, 4), np.float32)})
    except Exception as exc:
        return Availability(False, f"{provider} failed a test session: {first_line(exc)}")
    return Availability(True, f"onnxruntime {version} on {gpu.name or 'GPU 0'}")


# ------------------------------------------------------------------------------------------------------ sessions

def session_options(options: dict[str, Any]) -> Any:
    """The ``SessionOptions`` every framegen ORT session uses (see the module docstring)."""
    ort = _ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    workers = max(1, int(options.get("workers") or 1))
    so.intra_op_num_threads = int(options.get("threads") or max(1, physical_cores() // workers))
    so.inter_op_num_threads = 1
    so.enable_mem_pattern = bool(options.get("mem_pattern", True))
    so.enable_cpu_mem_arena = bool(options.get("cpu_arena", True))
    # Spinning intra-op threads steal the cores that the render pipeline's decode/paste/encode threads need;
    # measured under load: 205 -> 143 ms CPU per frame with spinning off.
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.get("spin") else "0")
    so.log_severity_level = int(options.get("log_level", 3))
    return so


def cuda_provider_options(options: dict[str, Any], cuda_graph: bool) -> dict[str, str]:
    """CUDA execution provider options (strings, as ONNX Runtime parses them)."""
    search = str(options.get("cudnn_conv_algo_search", "EXHAUSTIVE")).upper()
    if search not in ("EXHAUSTIVE", "HEURISTIC", "DEFAULT"):
        raise BackendError(f"cudnn_conv_algo_search must be EXHAUSTIVE, HEURISTIC or DEFAULT, not {search!r}")
    return {
        "device_id": str(int(options.get("device_id", 0))),
        "cudnn_conv_algo_search": search,
        "cudnn_conv_use_max_workspace": "1",
        "do_copy_in_default_stream": "1",
        "enable_cuda_graph": "1" if cuda_graph else "0",
        # ORT's CUDA EP defaults to TF32 convolutions on Ampere+, whose 10-bit mantissa breaks the fp32 contract.
        "use_tf32": "1" if options.get("tf32") else "0",
    }


def trt_cache_dir(artifact: ResolvedArtifact, options: dict[str, Any]) -> Path:
    """Where TensorRT engines for this model are cached (created if needed)."""
    if options.get("trt_cache"):
        path = Path(options["trt_cache"])
    else:
        sha = artifact.sha256
        if not sha:
            digest = hashlib.sha256()
            with open(artifact.path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            sha = digest.hexdigest()
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        path = base / "framegen" / "trt" / f"{artifact.path.stem}-{sha[:16]}"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackendError(f"{path}: cannot create the TensorRT cache directory ({exc.strerror})") from None
    return path


def _profile(inputs: list[TensorMeta], batch: int) -> str:
    return ",".join(f"{t.name}:{'x'.join(str(d) for d in (batch, *t.shape[1:]))}" for t in inputs)


def trt_provider_options(inputs: list[TensorMeta], cache: Path, fp16: bool, max_batch: int, opt_batch: int,
                         device_id: int = 0) -> dict[str, Any]:
    """TensorRT execution provider options: engine + timing cache, fp16, and one optimisation profile covering
    batch 1..max_batch when the model's batch axis is dynamic (without it TensorRT rebuilds per new shape)."""
    opts: dict[str, Any] = {
        "device_id": device_id,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": os.fspath(cache),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": os.fspath(cache),
        "trt_fp16_enable": fp16,
        "trt_max_workspace_size": 4 << 30,
    }
    if inputs and inputs[0].shape[0] is None:
        opts["trt_profile_min_shapes"] = _profile(inputs, 1)
        opts["trt_profile_opt_shapes"] = _profile(inputs, min(opt_batch, max_batch))
        opts["trt_profile_max_shapes"] = _profile(inputs, max_batch)
    return opts


def read_onnx_io(path: Path) -> tuple[list[TensorMeta], list[TensorMeta], str, dict[str, str]]:
    """Inputs, outputs, precision (fp16 when most float weights are half) and metadata of an ONNX file, read without
    a session (the TensorRT profile needs the shapes before the session exists)."""
    import onnx
    from onnx import TensorProto

    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as exc:
        raise BackendError(f"{path}: not a readable ONNX model ({first_line(exc)})") from None
    names = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16", TensorProto.DOUBLE: "float64"}

    def metas(values: Any) -> list[TensorMeta]:
        init = {t.name for t in model.graph.initializer}
        out = []
        for v in values:
            if v.name in init:
                continue
            tt = v.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
            out.append(TensorMeta(v.name, dims, names.get(tt.elem_type, TensorProto.DataType.Name(tt.elem_type))))
        return out

    half = sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == TensorProto.FLOAT16)
    single = sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == TensorProto.FLOAT)
    meta = {p.key: p.value for p in model.metadata_props}
    precision = meta.get("precision") or ("fp16" if half > single else "fp32")
    return metas(model.graph.input), metas(model.graph.output), precision, meta


# ------------------------------------------------------------------------------------------------------- runners

class _PlainRunner:
    """``session.run`` with numpy feeds: on the CPU, ORT reads the arrays in place."""

    batch: int | None = None

    def __init__(self, session: Any, out_name: str) -> None:
        self._session = session
        self._out = out_name

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self._session.run([self._out], feeds)[0]


class _BindingRunner:
    """I/O binding: each input copied once onto the device, the output allocated there and copied back once."""

    batch: int | None = None

    def __init__(self, session: Any, out_name: str, device: str, device_id: int) -> None:
        self._ort = _ort()
        self._session = session
        self._out = out_name
        self._device = device
        self._device_id = device_id

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        binding = self._session.io_binding()
        values = {}  # keeps the OrtValues (and on the CPU the numpy memory they wrap) alive through the run
        for name, arr in feeds.items():
            values[name] = self._ort.OrtValue.ortvalue_from_numpy(arr, self._device, self._device_id)
            binding.bind_ortvalue_input(name, values[name])
        binding.bind_output(self._out, self._device, self._device_id)
        binding.synchronize_inputs()
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


class _FixedRunner:
    """Fixed shapes at fixed addresses: inputs and output are preallocated on the device once and bound once; each
    call copies into them in place (``OrtValue.update_inplace``) and reads the output back. A CUDA graph needs exactly
    this; on the CPU it is the same code path, under test. The batch is fixed at the first call unless given."""

    def __init__(self, session: Any, inputs: list[TensorMeta], output: TensorMeta, device: str, device_id: int,
                 batch: int | None) -> None:
        self._ort = _ort()
        self._session = session
        self._inputs = inputs
        self._output = output
        self._device = device
        self._device_id = device_id
        self.batch = batch
        self._binding: Any = None

    def _allocate(self, batch: int) -> None:
        ort = self._ort
        self.batch = batch
        self._host = {t.name: np.zeros((batch, *t.shape[1:]), np.dtype(t.dtype)) for t in self._inputs}
        self._dev = {name: ort.OrtValue.ortvalue_from_shape_and_type(h.shape, h.dtype.type, self._device,
                                                                     self._device_id)
                     for name, h in self._host.items()}
        out_shape = (batch, *self._output.shape[1:])
        self._out = ort.OrtValue.ortvalue_from_shape_and_type(out_shape, np.dtype(self._output.dtype).type,
                                                              self._device, self._device_id)
        binding = self._session.io_binding()
        for name, value in self._dev.items():
            binding.bind_ortvalue_input(name, value)
        binding.bind_ortvalue_output(self._output.name, self._out)
        self._binding = binding

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        n = len(next(iter(feeds.values())))
        if self._binding is None:
            self._allocate(self.batch or n)
        for name, arr in feeds.items():
            host = self._host[name]
            host[:n] = arr
            host[n:] = 0  # padding rows: each sample is computed independently, zeros keep runs reproducible
            self._dev[name].update_inplace(host)
        self._session.run_with_iobinding(self._binding)
        # .numpy() of a CPU OrtValue may share its buffer, which the next call overwrites.
        return np.array(self._out.numpy()[:n], copy=True)


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
        extra: dict[str, Any] = {"onnxruntime": _ort().__version__, "artifact": os.fspath(art.path)}

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
        info_in = [_meta_from_node(sess_in[n]) for n in (GEN_IMAGE, GEN_AUDIO)]
        info_out = [_meta_from_node(sess_out[GEN_OUTPUT])]
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
            self._runner: Any = _FixedRunner(self._session, info_in, info_out, device, device_id, batch)
            return "fixed"
        if bool(options.get("io_binding", self._provider != CPU_EP)):
            self._runner = _BindingRunner(self._session, GEN_OUTPUT, device, device_id)
            return "io_binding"
        self._runner = _PlainRunner(self._session, GEN_OUTPUT)
        # One session serves concurrent run() calls; fixed/bound runners own shared buffers, so they stay single.
        self.concurrent_workers = max(1, int(options.get("workers") or 1))
        return "run"

    def _create_session(self, providers: list[Any]) -> Any:
        ort = _ort()
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
        self._runner = _BindingRunner(self._session, GEN_OUTPUT, "cuda", device_id)
        self.info.extra.update(runner="io_binding", cuda_graph=f"off ({reason})")

    def close(self) -> None:
        """Drop the session (and its device memory)."""
        self._runner = None
        self._session = None


def _meta_from_node(node: Any) -> TensorMeta:
    """TensorMeta from an ORT NodeArg: symbolic and unknown dimensions become ``None``."""
    shape = tuple(d if isinstance(d, int) else None for d in node.shape)
    return TensorMeta(node.name, shape, _ORT_DTYPES.get(node.type, node.type))


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
    """ort-cpu renders with one single-threaded inference per physical core in flight: measured on 2 cores, a render
    with one two-thread session ran at 0.47x the model-only rate, because every operator waits for whichever of its
    threads the decode / paste / encode threads pre-empted."""
    return {"workers": physical_cores()}


def _open_trt(req: OpenRequest) -> Backend:
    return OrtBackend("ort-trt", TRT_EP, req)


# auto ranks: TensorRT's fused engines, then cuDNN through ONNX Runtime (I/O binding, CUDA graphs) ahead of eager
# PyTorch on CUDA; on the CPU ONNX Runtime's fused, pre-packed convolutions beat eager PyTorch 5-6x (README figures).
SPECS = [
    BackendSpec("ort-cpu", "onnxruntime", "cpu", "onnx", ("fp32", "fp16"), _probe_cpu, _open_cpu,
                "ONNX Runtime CPU execution provider", ios=("tensor", "image"),
                render_options=_render_options_cpu, auto_rank=50),
    BackendSpec("ort-cuda", "onnxruntime", "cuda", "onnx", ("fp32", "fp16"), _probe_cuda, _open_cuda,
                "ONNX Runtime CUDA EP: I/O binding, CUDA graphs for fixed batches", ios=("tensor", "image"),
                auto_rank=20),
    BackendSpec("ort-trt", "onnxruntime", "cuda", "onnx", ("fp32", "fp16"), _probe_trt, _open_trt,
                "ONNX Runtime TensorRT EP (engine cache, fp16), CUDA EP fallback", auto_rank=10),
]
