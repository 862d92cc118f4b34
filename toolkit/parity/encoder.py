"""Parity of a bundle's exported audio encoders (``audio_encoder`` ONNX / Core ML, fp32 / fp16): their embeddings
of the run's mel windows against the PyTorch encoder checkpoint's, stage ``embedding``.

A self-contained bundle computes 'ave' features with its own exported encoder (``render``, ``parity`` and
``stream`` with ``--bundle B --audio A`` and no ``--encoder``), so parity checks those artifacts too. Limits, as
for the generator's artifacts: fp32 within 1e-4 of the embeddings' largest value (float32 reordering noise, measured
2.7e-5 absolute on values up to ~4 for ONNX and 3.1e-5 for coreml-mil); fp16 within 0.1 absolute (measured 0.029
and 0.035), the export-time encoder tolerance.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from framegen.models.errors import FramegenError
from framegen.toolkit.compare.metrics import ErrorStats
from framegen.toolkit.compare.results import CandidateResult, StageResult
from framegen.toolkit.frames.plan import Candidate
from framegen.toolkit.inputs.encoders import coreml_mil_encoder, onnx_encoder, torch_encoder

#: windows compared (the first ones of the audio): enough for the frames parity renders, cheap in the verifier
MAX_WINDOWS = 64
LIMITS = {"fp32": {"max_rel": 1e-4}, "fp16": {"max_abs": 0.1}}
_RUNNERS = {"onnx": "ort-cpu", "coreml": "coreml-mil"}


def encoder_parity(bundle: Any, mel_windows: np.ndarray, encoder: str | os.PathLike[str]) -> list[Any]:
    """One :class:`framegen.toolkit.compare.results.CandidateResult` per exported audio encoder of ``bundle``
    (labelled ``ort-cpu:fp32:encoder``, ``coreml-mil:fp16:encoder``, ...), on the first :data:`MAX_WINDOWS` of
    ``mel_windows`` ([N, 1, 80, 16]) against the PyTorch ``encoder`` checkpoint. ``[]`` when it has none."""
    arts = [a for a in bundle.artifacts if a.model == "audio_encoder" and a.format in _RUNNERS]
    if not arts:
        return []
    windows = np.ascontiguousarray(mel_windows[:MAX_WINDOWS], dtype=np.float32)
    want = np.asarray(torch_encoder(encoder)(windows), dtype=np.float32)
    scale = float(np.abs(want).max()) or 1.0
    results = []
    for art in arts:
        limits = LIMITS.get(art.precision, LIMITS["fp16"])
        res = CandidateResult(Candidate(_RUNNERS[art.format], art.precision, "encoder"), f"encoder-{art.precision}",
                              info={"artifact": art.path.name})
        try:
            run = onnx_encoder(art.path) if art.format == "onnx" else coreml_mil_encoder(art.path)
            got = np.asarray(run(windows), dtype=np.float32)
        except FramegenError as exc:
            res.error = f"cannot run {art.path.name}: {exc}"
            results.append(res)
            continue
        if got.shape != want.shape:
            res.error = f"{art.path.name}: embeddings {list(got.shape)}, expected {list(want.shape)}"
            results.append(res)
            continue
        stats = ErrorStats("float")
        stats.update(want[None], got[None])
        err = float(np.abs(got - want).max())
        metrics = {**stats.summary(), "max_rel": err / scale, "scale": scale}  # max_rel: of the largest value
        bad = []
        if "max_rel" in limits and err / scale > limits["max_rel"]:
            bad.append(f"max |d| {err:.3g} is {err / scale:.3g} of the largest embedding value > {limits['max_rel']}")
        if "max_abs" in limits and err > limits["max_abs"]:
            bad.append(f"max |d| {err:.3g} > {limits['max_abs']}")
        res.stages.append(StageResult("embedding", "float", metrics, dict(limits), bad))
        res.frames = int(windows.shape[0])
        results.append(res)
    return results
