"""``openvino``: the generator's ONNX artifacts (fp32, fp16, int8 QDQ) on OpenVINO's CPU plugin.

The model is read from the ONNX file by OpenVINO's own frontend and compiled for ``CPU`` with settings chosen on
purpose: for one worker a latency hint (one stream: frames arrive one batch at a time), for several (the render and
stream pipelines) one execution stream per worker, ``INFERENCE_NUM_THREADS`` = the physical cores this process may
use, and an explicit ``INFERENCE_PRECISION_HINT`` of f32 so that fp32 artifacts compute in
fp32 on CPUs with bf16 / AMX units too (OpenVINO's default there is bf16, which would break the fp32 contract).
fp16 artifacts run as OpenVINO compresses them (fp16 weights, fp32 compute on the CPU); int8 QDQ artifacts run on
its int8 kernels (the QDQ pairs are fused into quantized convolutions).

``OpenRequest.options`` understood here:

==========================  =======================================================================================
``threads``                 inference threads per worker (default: physical cores available to this process /
                            ``workers``)
``workers``                 concurrent ``infer`` calls the render pipeline may make (default 1); each gets its own
                            infer request of one compiled model, and the model one execution stream per worker
``inference_precision``     ``f32`` (default) or ``bf16`` (set by precision ``bf16``: the fp32 artifact computed in
                            bfloat16, offered only where the CPU has bf16 units; judged by its own profile)
``hint``                    ``LATENCY`` (default) or ``THROUGHPUT``
==========================  =======================================================================================

The batch axis stays dynamic: OpenVINO's CPU plugin compiles one model for every batch size.
"""

from __future__ import annotations

import functools
import os
import threading
from typing import Any

import numpy as np
from framegen.models.contract import GEN_AUDIO, GEN_IMAGE, GEN_OUTPUT, INNER_SIZE
from framegen.models.errors import first_line
from framegen.runtimes.artifacts import mode_from_audio_shape, resolve_artifact, settle_mode
from framegen.runtimes.base import Backend, BackendError, BackendInfo, TensorMeta
from framegen.runtimes.ort_session import physical_cores, read_onnx_io
from framegen.runtimes.spec import Availability, BackendSpec, OpenRequest

NAME = "openvino"
OPENVINO_PRECISIONS = ("fp32", "fp16", "bf16", "int8")
#: Artifact precisions it reads (``bf16`` is the fp32 artifact computed with ``INFERENCE_PRECISION_HINT=bf16``).
_ARTIFACT_PRECISIONS = ("fp32", "fp16", "int8")
_OV_DTYPES = {"f32": "float32", "f16": "float16", "f64": "float64"}


def _ov() -> Any:
    import openvino

    return openvino


def _cores() -> int:
    return physical_cores()


@functools.cache
def _core() -> Any:
    return _ov().Core()


@functools.cache
def probe() -> Availability:
    """Whether OpenVINO is installed and its CPU plugin loads here, and in one sentence why not. Cached."""
    try:
        ov = _ov()
    except ImportError as exc:
        return Availability(False, f"openvino not installed (pip install openvino; {exc})")
    try:
        core = _core()
        devices = core.available_devices
    except Exception as exc:  # a broken plugin install must say so, not crash `framegen backends`
        return Availability(False, f"OpenVINO {ov.__version__} cannot start its runtime ({first_line(exc)})")
    if "CPU" not in devices:
        return Availability(False, f"OpenVINO {ov.__version__} has no CPU plugin here (devices: "
                                   f"{', '.join(devices) or 'none'})")
    try:
        name = core.get_property("CPU", "FULL_DEVICE_NAME")
    except Exception:
        name = "CPU"
    return Availability(True, f"OpenVINO {ov.__version__} CPU plugin ({name}), {_cores()} threads")


def _meta(port: Any) -> TensorMeta:
    shape = tuple(int(d.get_length()) if d.is_static else None for d in port.get_partial_shape())
    return TensorMeta(port.get_any_name(), shape, _OV_DTYPES.get(port.get_element_type().get_type_name(),
                                                                  port.get_element_type().get_type_name()))


class OpenVinoBackend(Backend):
    """A generator ONNX model compiled by OpenVINO for the CPU."""

    def __init__(self, req: OpenRequest) -> None:
        art = resolve_artifact(req, "onnx", NAME)
        _inputs, _outputs, model_precision, meta = read_onnx_io(art.path)
        precision = art.precision or model_precision
        if precision not in _ARTIFACT_PRECISIONS:
            raise BackendError(f"{art.path}: a {precision} model; {NAME} runs {', '.join(_ARTIFACT_PRECISIONS)}")
        if (req.precision not in ("fp32", precision, "bf16") and req.precision in OPENVINO_PRECISIONS
                and art.precision is None):
            raise BackendError(f"{art.path}: is a {precision} model, not {req.precision}")
        options = dict(req.options)
        if req.precision == "bf16":
            if precision != "fp32":
                raise BackendError(f"{art.path}: bf16 computes an fp32 model, this one is {precision}")
            precision = "bf16"
            options["inference_precision"] = "bf16"
        core = _core()
        try:
            model = core.read_model(os.fspath(art.path))
        except Exception as exc:
            raise BackendError(f"{art.path}: OpenVINO cannot read it ({first_line(exc)})") from None
        ins = {_meta(p).name: _meta(p) for p in model.inputs}
        outs = {_meta(p).name: _meta(p) for p in model.outputs}
        # The template's contract: the model's own inputs, checked before anything is compiled.
        if set(ins) != {GEN_IMAGE, GEN_AUDIO} or GEN_OUTPUT not in outs:
            raise BackendError(f"{art.path}: inputs {sorted(ins)} -> outputs {sorted(outs)} do not follow the "
                               f"contract ({GEN_IMAGE}, {GEN_AUDIO} -> {GEN_OUTPUT})")
        if ins[GEN_IMAGE].shape[1:] != (6, INNER_SIZE, INNER_SIZE):
            raise BackendError(f"{art.path}: image input has shape {list(ins[GEN_IMAGE].shape)}, expected "
                               f"[batch, 6, {INNER_SIZE}, {INNER_SIZE}]")
        for t in (*ins.values(), outs[GEN_OUTPUT]):
            if t.dtype != "float32":
                raise BackendError(f"{art.path}: {t.name!r} is {t.dtype}; framegen artifacts take and return "
                                   f"float32")
        mode = settle_mode(mode_from_audio_shape(ins[GEN_AUDIO].shape), art.mode, req.mode, os.fspath(art.path))
        workers = max(1, int(options.get("workers") or 1))
        threads = int(options.get("threads") or max(1, _cores() // workers))
        inference_precision = str(options.get("inference_precision", "f32"))
        hint = str(options.get("hint", "LATENCY")).upper()
        if inference_precision not in ("f32", "bf16"):
            raise BackendError(f"inference_precision must be f32 or bf16, not {inference_precision!r}")
        if inference_precision == "bf16":
            precision = "bf16"  # what it computes, so reports and parity judge it as bf16
        if hint not in ("LATENCY", "THROUGHPUT"):
            raise BackendError(f"hint must be LATENCY or THROUGHPUT, not {hint!r}")
        # One compiled stream runs its infer requests one after another: concurrent workers need a stream each
        # (``threads`` per stream). With one single-thread stream, 2 workers ran 0.55x one worker of 2 threads
        # (bf16 23.2 vs 41.4 fps on the 2-core AMX Xeon); with 2 streams they ran 1.05x it (43.7 fps).
        config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads * workers,
                                  "INFERENCE_PRECISION_HINT": inference_precision}
        config.update({"NUM_STREAMS": workers} if workers > 1 else {"PERFORMANCE_HINT": hint})
        try:
            self._compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise BackendError(f"{art.path}: OpenVINO cannot compile it for the CPU ({first_line(exc)})") from None
        self._requests = [self._compiled.create_infer_request() for _ in range(workers)]
        # OpenVINO's bindings initialise pybind11's numpy API lazily, under a C++ static guard taken while holding the
        # GIL: two threads making their first ``infer`` at once deadlock (seen in parity: 4 pipelines, 0 % CPU).
        # Touching a tensor's numpy view here, in the opening thread, initialises it before any worker exists.
        _ = self._requests[0].get_input_tensor(0).data
        self._free = list(self._requests)
        self._lock = threading.Condition()
        self._path = art.path
        info_in = [ins[GEN_IMAGE], ins[GEN_AUDIO]]
        extra: dict[str, Any] = {"openvino": _ov().__version__, "artifact": os.fspath(art.path), "threads": threads,
                                 "hint": hint if workers == 1 else None, "streams": workers,
                                 "inference_precision": inference_precision, "workers": workers}
        if "quantization" in meta:
            extra["quantization"] = meta["quantization"]
        super().__init__(BackendInfo(NAME, "cpu", precision, mode, art.source, info_in, [outs[GEN_OUTPUT]], extra))
        self.concurrent_workers = workers

    def _infer(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        if not self._requests:
            raise BackendError(f"{NAME}: used after close()")
        with self._lock:
            while not self._free:
                self._lock.wait()
            request = self._free.pop()
        try:
            result = request.infer({GEN_IMAGE: image, GEN_AUDIO: audio})
            out = np.array(result[self._compiled.output(GEN_OUTPUT)], dtype=np.float32, copy=True)
        except Exception as exc:
            raise BackendError(f"{NAME}: OpenVINO failed on {self._path.name}: {first_line(exc)}") from None
        finally:
            with self._lock:
                self._free.append(request)
                self._lock.notify()
        return out

    def close(self) -> None:
        """Drop the compiled model and its requests."""
        self._requests = []
        self._free = []
        self._compiled = None


def _open(req: OpenRequest) -> Backend:
    return OpenVinoBackend(req)


def _render_options() -> dict[str, Any]:
    # As for ort-cpu: single-threaded requests (one stream each), one per core and one more, keep the cores busy
    # while the decode / paste / encode threads come and go (bf16, 300 frames, 2-core AMX Xeon: 30.2 fps with 2,
    # 32.1 with 3, 31.8 with 4).
    return {"workers": _cores() + 1}


SPECS = [
    BackendSpec(name=NAME, runtime="openvino", device="cpu", needs="onnx", precisions=OPENVINO_PRECISIONS, probe=probe,
                opener=_open, render_options=_render_options,
                description="OpenVINO CPU plugin: ONNX fp32 / fp16 / int8 (QDQ) artifacts; bf16 computes fp32 ones",
                # After ort-cpu (50): at fp32 OpenVINO ran 0.84-0.86x ONNX Runtime model-only and 1.14-1.22x end to
                # end in two runs (scripts/bench_compressed.py, README), no clear win, so auto keeps ONNX Runtime; at
                # int8, which ort-cpu runs only when named, OpenVINO was the fastest (2.04-2.20x ORT fp32 model-only,
                # 2.25-2.59x end to end, against ORT int8's 2.01-2.05x / 1.89-2.08x).
                auto_rank=55),
]
