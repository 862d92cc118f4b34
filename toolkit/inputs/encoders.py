"""Audio encoders as ``encode`` functions (float32 mel windows [B, 1, 80, 16] -> embeddings [B, 512]): the PyTorch
checkpoint, or a bundle's exported encoder (ONNX through ONNX Runtime on the CPU, Core ML through the coreml-mil
verifier), so that a bundle alone turns speech into 'ave' features.

Measured on the seeded calibrated encoder and 3 s of real speech (``test_bundle_encoders_match_pytorch``, printed
with ``pytest -s``): 'ave' features through the exported encoders differ from PyTorch's by at most 2.7e-5 (ONNX
fp32, ONNX Runtime CPU), 3.1e-5 (Core ML fp32, coreml-mil), 0.029 (ONNX fp16) and 0.035 (Core ML fp16); the test
holds fp32 to 1e-4 and fp16 to 0.1.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from framegen.models.bundle import Bundle, load_bundle
from framegen.models.contract import ENC_INPUT, ENC_OUTPUT, FEATURE_WIDTH
from framegen.models.errors import FramegenError, first_line
from framegen.runtimes.mil.program import encoder_fn
from framegen.toolkit.inputs.audio import torch_encoder_fn

Encoder = Callable[[np.ndarray], np.ndarray]
#: The order in which :func:`bundle_encoder_fn` looks for an audio encoder in a bundle.
PREFERENCE = (("onnx", "fp32"), ("coreml", "fp32"), ("onnx", "fp16"), ("coreml", "fp16"))


class EncoderError(FramegenError):
    """No usable audio encoder, or one that does not take / give the contract's tensors."""


def torch_encoder(checkpoint: str | os.PathLike[str]) -> Encoder:
    """The SyncTalk_2D ``audio_visual_encoder.pth`` checkpoint on PyTorch (CPU)."""
    from framegen.models.checkpoint import load_audio_encoder

    return torch_encoder_fn(load_audio_encoder(checkpoint))


def onnx_encoder(path: str | os.PathLike[str], threads: int | None = None) -> Encoder:
    """An exported audio-encoder ``.onnx`` on ONNX Runtime's CPU provider (fp16 artifacts take and give float32
    here too: inputs are cast to what the model declares)."""
    import onnxruntime as ort

    p = Path(path)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    # One thread that does not spin: the encoder runs a few windows per 40 ms beside the generator, and ORT's default
    # (a thread per core, spinning between calls) took cores from it (a live stream held 402 of 1,121 frames).
    so.intra_op_num_threads = int(threads or 1)
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(os.fspath(p), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
        raise EncoderError(f"{p}: cannot be loaded by ONNX Runtime ({first_line(exc, 200)})") from None
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    if ENC_INPUT not in inputs or ENC_OUTPUT not in outputs:
        raise EncoderError(f"{p}: not an audio encoder (inputs {list(inputs)}, outputs {outputs}; expected "
                           f"{ENC_INPUT!r} -> {ENC_OUTPUT!r})")
    dtype = np.float16 if inputs[ENC_INPUT].type == "tensor(float16)" else np.float32

    def encode(windows: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(windows, dtype=dtype)
        out = session.run([ENC_OUTPUT], {ENC_INPUT: x})[0]
        return np.asarray(out, dtype=np.float32).reshape(x.shape[0], FEATURE_WIDTH)

    return encode


def coreml_mil_encoder(path: str | os.PathLike[str]) -> Encoder:
    """An exported audio-encoder ``.mlpackage`` run by the coreml-mil verifier (its ML program op by op on the CPU;
    not Apple's Core ML runtime)."""
    return encoder_fn(path)


def bundle_encoder_fn(bundle: str | os.PathLike[str] | Any, format: str | None = None,
                      precision: str | None = None) -> tuple[Encoder, str]:
    """The bundle's exported audio encoder as an ``encode`` function, and a label naming the artifact.

    Without ``format`` / ``precision`` the first of :data:`PREFERENCE` the bundle holds; an EncoderError (one line
    naming the bundle and what it holds) when it has none.
    """
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    wanted = [(f, p) for f, p in PREFERENCE
              if (format is None or f == format) and (precision is None or p == precision)]
    for fmt, prec in wanted:
        if b.has("audio_encoder", fmt, prec):
            art = b.find("audio_encoder", fmt, prec)
            fn = onnx_encoder(art.path) if fmt == "onnx" else coreml_mil_encoder(art.path)
            return fn, f"{art.path.relative_to(b.root).as_posix()} ({fmt} {prec})"
    held = sorted({f"{a.format} {a.precision}" for a in b.artifacts if a.model == "audio_encoder"})
    what = f"{format or 'any format'} {precision or 'any precision'}"
    raise EncoderError(f"{b.root}: no audio encoder ({what}) in the bundle (it holds: {', '.join(held) or 'none'}); "
                       f"export with --audio-encoder, or give --encoder ENC.pth")


def resolve_encoder(*, encoder: str | os.PathLike[str] | None = None,
                    bundle: str | os.PathLike[str] | None = None) -> tuple[Encoder, str]:
    """The encoder a job uses: ``encoder`` (a .pth checkpoint, or an exported .onnx / .mlpackage) when given, else
    the bundle's own; returns ``(encode, label)``. The same unchanged file gives the same function within a process
    (so its measured batching, :func:`framegen.toolkit.frames.stream.encoder_batching`, is measured once)."""
    if encoder is not None:
        p = Path(encoder)
        if not p.exists():
            raise EncoderError(f"--encoder {p}: no such file or folder")
        return _file_encoder(str(p.resolve()), p.stat().st_mtime_ns)
    if bundle is None:
        raise EncoderError("computing 'ave' features needs --encoder ENC.pth or a --bundle with an audio encoder")

    b = load_bundle(bundle)
    return _bundle_encoder(str(b.root.resolve()), (b.root / "manifest.json").stat().st_mtime_ns)


@lru_cache(maxsize=8)
def _file_encoder(path: str, mtime_ns: int) -> tuple[Encoder, str]:
    p = Path(path)
    if p.suffix == ".onnx":
        return onnx_encoder(p), f"{p} (onnx)"
    if p.suffix == ".mlpackage":
        return coreml_mil_encoder(p), f"{p} (coreml-mil)"
    return torch_encoder(p), f"{p} (torch)"


@lru_cache(maxsize=8)
def _bundle_encoder(root: str, mtime_ns: int) -> tuple[Encoder, str]:
    return bundle_encoder_fn(root)
