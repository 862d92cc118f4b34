"""ONNX Runtime underneath the backend: the module, execution providers (probed past the driver), session options,
provider options for CUDA and TensorRT, the model's own I/O, and the three ways a call feeds a session."""

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
from framegen.models.errors import first_line
from framegen.runtimes.artifacts import ResolvedArtifact
from framegen.runtimes.base import BackendError, TensorMeta
from framegen.runtimes.native import missing_dependency, missing_libraries, needed_libraries, nvidia_gpu
from framegen.runtimes.spec import Availability

log = logging.getLogger("framegen.runtimes")

CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
TRT_EP = "TensorrtExecutionProvider"
_PROVIDER_LIB = {CUDA_EP: "libonnxruntime_providers_cuda.so", TRT_EP: "libonnxruntime_providers_tensorrt.so"}
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}
_CUDNN = "libcudnn.so.9"  # what onnxruntime-gpu 1.19+ builds need, when the TensorRT provider is not shipped
GPU_DEFAULT_BATCH = 16
TRT_MAX_BATCH = 32


def ort_module() -> Any:
    """The onnxruntime module (imported on first use: it is heavy, and optional)."""
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


def provider_lib_path(provider: str) -> Path:
    """Where onnxruntime keeps the shared library of an execution provider."""
    return Path(ort_module().__file__).parent / "capi" / _PROVIDER_LIB[provider]


@functools.lru_cache(maxsize=1)
def _preload_cuda_libraries() -> None:
    """Let ONNX Runtime load CUDA / cuDNN from the nvidia-* pip packages when those are how they were installed."""
    ort = ort_module()
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
        ort = ort_module()
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
        needed = needed_libraries(provider_lib_path(TRT_EP))
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
        missing = missing_dependency(provider_lib_path(provider))
        if missing:
            kind = "TensorRT" if missing.startswith(("libnvinfer", "libnvonnx")) else f"CUDA {cuda_major}"
            return Availability(False, f"{kind} libraries for onnxruntime {version} not found ({missing})")
        # The CUDA provider dlopens cuDNN at run time, so it loads without it; the TensorRT provider links the same
        # cuDNN, which names the soname this build wants.
        cudnn = next((n for n in needed_libraries(provider_lib_path(TRT_EP)) if n.startswith("libcudnn")), _CUDNN)
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


def session_options(options: dict[str, Any]) -> Any:
    """The ``SessionOptions`` every framegen ORT session uses (see the module docstring)."""
    ort = ort_module()
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


class PlainRunner:
    """``session.run`` with numpy feeds: on the CPU, ORT reads the arrays in place."""

    batch: int | None = None

    def __init__(self, session: Any, out_name: str) -> None:
        self._session = session
        self._out = out_name

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self._session.run([self._out], feeds)[0]


class BindingRunner:
    """I/O binding: each input copied once onto the device, the output allocated there and copied back once."""

    batch: int | None = None

    def __init__(self, session: Any, out_name: str, device: str, device_id: int) -> None:
        self.ort_module = ort_module()
        self._session = session
        self._out = out_name
        self._device = device
        self._device_id = device_id

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        binding = self._session.io_binding()
        values = {}  # keeps the OrtValues (and on the CPU the numpy memory they wrap) alive through the run
        for name, arr in feeds.items():
            values[name] = self.ort_module.OrtValue.ortvalue_from_numpy(arr, self._device, self._device_id)
            binding.bind_ortvalue_input(name, values[name])
        binding.bind_output(self._out, self._device, self._device_id)
        binding.synchronize_inputs()
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


class FixedRunner:
    """Fixed shapes at fixed addresses: inputs and output are preallocated on the device once and bound once; each
    call copies into them in place (``OrtValue.update_inplace``) and reads the output back. A CUDA graph needs exactly
    this; on the CPU it is the same code path, under test. The batch is fixed at the first call unless given."""

    def __init__(self, session: Any, inputs: list[TensorMeta], output: TensorMeta, device: str, device_id: int,
                 batch: int | None) -> None:
        self.ort_module = ort_module()
        self._session = session
        self._inputs = inputs
        self._output = output
        self._device = device
        self._device_id = device_id
        self.batch = batch
        self._binding: Any = None

    def _allocate(self, batch: int) -> None:
        ort = self.ort_module
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


def meta_from_node(node: Any) -> TensorMeta:
    """TensorMeta from an ORT NodeArg: symbolic and unknown dimensions become ``None``."""
    shape = tuple(d if isinstance(d, int) else None for d in node.shape)
    return TensorMeta(node.name, shape, _ORT_DTYPES.get(node.type, node.type))
