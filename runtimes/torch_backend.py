"""PyTorch backends: ``torch-cpu`` (the fp32 reference; bf16 under CPU autocast, the twin of OpenVINO's bf16 hint) and
``torch-cuda`` (fp32 / fp16, channels_last)."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np
from framegen.runtimes.base import Backend, BackendError, BackendInfo, generator_io
from framegen.runtimes.native import nvidia_gpu
from framegen.runtimes.spec import Availability, BackendSpec, OpenRequest


class TorchBackend(Backend):
    """Runs a PyTorch generator module; with ``precision='fp16'`` on CUDA the module is cast to half; with ``bf16``
    (CPU) it stays fp32 and runs under ``torch.autocast`` in bfloat16 (convolutions in bf16, the rest as autocast
    decides), output cast back to float32."""

    def __init__(self, model: Any, name: str, device: str, precision: str, source: str,
                 channels_last: bool = False, compile_model: bool = False) -> None:
        import torch

        inputs, outputs = generator_io(model.mode)
        super().__init__(BackendInfo(name, device, precision, model.mode, source, inputs, outputs,
                                     {"channels_last": channels_last, "compiled": compile_model,
                                      "torch": torch.__version__}))
        choice = getattr(model, "mode_choice", None)
        if choice is not None and choice.note:
            # Said by whoever presents the backend (the CLI): a checkpoint alone cannot tell ave from hubert.
            self.info.extra["mode_note"] = choice.note
        self._torch = torch
        self._device = torch.device(device)
        if self._device.type == "cuda":
            # PyTorch lets cuDNN use TF32 for fp32 convolutions by default; fp32 parity needs real fp32.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        self._autocast = torch.bfloat16 if precision == "bf16" else None
        model = model.to(self._device, dtype=self._dtype).eval()
        self._memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self._model = torch.compile(model) if compile_model else model
        self.default_batch = 1 if self._device.type == "cpu" else 16

    def _infer(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        if self._model is None:
            raise BackendError(f"{self.name}: used after close()")
        torch = self._torch
        autocast = (torch.autocast(self._device.type, dtype=self._autocast) if self._autocast is not None
                    else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            img = torch.from_numpy(image).to(self._device, dtype=self._dtype, non_blocking=True)
            img = img.contiguous(memory_format=self._memory_format)
            aud = torch.from_numpy(audio).to(self._device, dtype=self._dtype, non_blocking=True)
            out = self._model(img, aud)
            return out.float().cpu().numpy()

    def close(self) -> None:
        """Drop the module (and its device memory)."""
        self._model = None


def _probe_cpu() -> Availability:
    try:
        import torch
    except ImportError as exc:
        return Availability(False, f"PyTorch not installed ({exc})")
    return Availability(True, f"torch {torch.__version__}, {torch.get_num_threads()} threads")


def _probe_cuda() -> Availability:
    try:
        import torch
    except ImportError as exc:
        return Availability(False, f"PyTorch not installed ({exc})")
    if torch.version.cuda is None:
        return Availability(False, f"torch {torch.__version__} is a CPU-only build")
    if not torch.cuda.is_available():
        return Availability(False, nvidia_gpu().reason or "torch sees no CUDA GPU")
    return Availability(True, torch.cuda.get_device_name(0))


def _load_model(req: OpenRequest) -> tuple[Any, str]:
    from framegen.models.checkpoint import load_generator

    if req.model is not None:
        return req.model, req.source or "module"
    if req.checkpoint is None:
        raise BackendError("torch backends need a checkpoint (--checkpoint)")
    return load_generator(req.checkpoint, req.mode), os.fspath(req.checkpoint)


def _open_cpu(req: OpenRequest) -> Backend:
    if req.precision not in ("fp32", "bf16"):
        raise BackendError(f"torch-cpu runs fp32 or bf16, not {req.precision}")
    model, source = _load_model(req)
    return TorchBackend(model, "torch-cpu", "cpu", req.precision, source,
                        compile_model=bool(req.options.get("compile")))


def _open_cuda(req: OpenRequest) -> Backend:
    if req.precision not in ("fp32", "fp16"):
        raise BackendError(f"torch-cuda runs fp32 or fp16, not {req.precision}")
    model, source = _load_model(req)
    return TorchBackend(model, "torch-cuda", "cuda", req.precision, source,
                        channels_last=bool(req.options.get("channels_last", True)),
                        compile_model=bool(req.options.get("compile")))


SPECS = [
    BackendSpec("torch-cpu", "torch", "cpu", "checkpoint", ("fp32", "bf16"), _probe_cpu, _open_cpu,
                "PyTorch eager on the CPU: the fp32 reference; bf16 under CPU autocast", auto_rank=60),
    BackendSpec("torch-cuda", "torch", "cuda", "checkpoint", ("fp32", "fp16"), _probe_cuda, _open_cuda,
                "PyTorch on CUDA, channels_last, optional torch.compile", auto_rank=30),
]
