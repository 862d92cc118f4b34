"""The bundle's audio front-end artifacts (PCM -> mel, PCM -> features) in parity and in golden vectors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from framegen.models.bundle import Bundle, load_bundle
from framegen.models.contract import SAMPLE_RATE
from framegen.models.errors import FramegenError
from framegen.toolkit.compare.metrics import ErrorStats
from framegen.toolkit.compare.profiles import StageLimits
from framegen.toolkit.compare.results import CandidateResult, StageResult
from framegen.toolkit.export.validate_frontend import (
    FEATURES_MAX_REL,
    FORMATS,
    KINDS,
    MEL_MAX_ABS,
    compare,
    limit_broken,
    open_runner,
    run_features,
    run_frontend,
)
from framegen.toolkit.frames.plan import Candidate
from framegen.toolkit.inputs.audio import (
    ave_features,
    decode_audio,
    melspectrogram,
    torch_encoder_fn,
)

#: parity stage names of the front-end artifacts
PARITY_STAGES = ("mel", "features")


_PARITY_BACKEND = {"onnx": "ort-cpu", "coreml": "coreml-mil"}


def frontend_parity(bundle: Any, audio: str | os.PathLike[str] | np.ndarray,
                    encoder: str | os.PathLike[str] | None = None) -> list[Any]:
    """Parity of a bundle's front-end artifacts on ``audio`` (a file, or float32 16 kHz mono PCM): stage ``mel``
    (``audio_frontend`` against framegen's mel, limit 1e-4) and stage ``features`` (``audio_features`` against
    framegen's features with the PyTorch ``encoder`` checkpoint, limit 1e-4 of their largest value; skipped
    without ``encoder``), one :class:`framegen.toolkit.compare.results.CandidateResult` per format, labelled
    ``ort-cpu:fp32:audio`` / ``coreml-mil:fp32:audio``. A bundle without front-end artifacts gives ``[]``."""
    from framegen.models.checkpoint import load_audio_encoder

    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    arts = [a for a in b.artifacts if a.model in KINDS and a.format in FORMATS]
    if not arts:
        return []
    pcm = np.asarray(audio, dtype=np.float32) if isinstance(audio, np.ndarray) else decode_audio(audio)
    want = {"mel": melspectrogram(pcm)}
    if encoder is not None:
        want["features"] = ave_features(want["mel"], torch_encoder_fn(load_audio_encoder(encoder)))
    results = []
    for fmt in (f for f in FORMATS if any(a.format == f for a in arts)):
        res = CandidateResult(Candidate(_PARITY_BACKEND[fmt], "fp32", "audio"), "audio-frontend",
                              info={"artifacts": [a.path.name for a in arts if a.format == fmt]})
        for stage, kind in zip(PARITY_STAGES, KINDS, strict=True):
            art = next((a for a in arts if a.format == fmt and a.model == kind), None)
            if art is None or stage not in want:
                continue
            try:
                run = open_runner(art.path, fmt)
                got = run_frontend(run, pcm) if kind == "audio_frontend" else run_features(run, pcm)
                errs = compare(kind, got, want[stage])
            except (FramegenError, ValueError) as exc:
                res.error = f"{stage}: {exc}"
                break
            stats = ErrorStats("float")
            stats.update(want[stage][None], got[None])
            metrics = {**stats.summary(), "max_rel": errs["max_rel_err"], "scale": errs["scale"]}
            bad = limit_broken(kind, errs)
            limits = {"max_abs": MEL_MAX_ABS} if kind == "audio_frontend" else {"max_rel": FEATURES_MAX_REL}
            res.stages.append(StageResult(stage, "float", metrics, limits, [bad] if bad else []))
        res.frames = int(want["mel"].shape[0])
        results.append(res)
    return results


#: golden stage of the front-end: a port's mel of ``audio_frontend/pcm.bin`` (its own code or audio_frontend)
GOLDEN_STAGE = "pcm_mel"


GOLDEN_DIR = "audio_frontend"


GOLDEN_SECONDS = 2.0


def write_frontend_golden(golden: str | os.PathLike[str], audio: str | os.PathLike[str] | np.ndarray,
                          seconds: float = GOLDEN_SECONDS) -> dict[str, Any]:
    """Write the PCM -> mel golden stage into a golden directory (``toolkit.golden.write_golden`` calls it with the
    run's audio): ``audio_frontend/pcm.bin`` (the first ``seconds`` of the audio, float32 16 kHz mono) and
    ``audio_frontend/mel.bin`` (framegen's mel of it, float32 [T, 80]), raw little-endian like every golden stage;
    returns the entry for ``index.json``."""
    root = Path(golden) / GOLDEN_DIR
    root.mkdir(parents=True, exist_ok=True)
    pcm = np.asarray(audio, dtype=np.float32) if isinstance(audio, np.ndarray) else decode_audio(audio)
    pcm = np.ascontiguousarray(pcm[: int(seconds * SAMPLE_RATE)])
    mel = melspectrogram(pcm)
    pcm.astype("<f4").tofile(root / "pcm.bin")
    mel.astype("<f4").tofile(root / "mel.bin")
    return {
        "stage": GOLDEN_STAGE,
        "pcm": {"file": f"{GOLDEN_DIR}/pcm.bin", "dtype": "float32", "shape": list(pcm.shape),
                "meaning": "16 kHz mono PCM in [-1, 1]: the input of audio_frontend / of a port's own mel"},
        "mel": {"file": f"{GOLDEN_DIR}/mel.bin", "dtype": "float32", "shape": list(mel.shape),
                "meaning": "SyncTalk_2D's normalised mel of pcm (docs/CONTRACT.md §4), frames x 80 bins"},
        "limits": {"max_abs": MEL_MAX_ABS},
        "candidate": f"write your mel of {GOLDEN_DIR}/pcm.bin to {GOLDEN_DIR}/mel.bin in the candidate directory",
    }


def check_frontend_golden(index: dict[str, Any], golden: str | os.PathLike[str],
                          candidate: str | os.PathLike[str], known: set[str] | None = None, *,
                          stage_check: Any) -> Any:
    """The ``pcm_mel`` stage of a golden check, or ``None`` when the golden has no front-end stage: the candidate's
    ``audio_frontend/mel.bin`` against the golden mel within 1e-4 (absent when the candidate has no such file).
    ``stage_check``: the class to return (``toolkit.golden.StageCheck``; passed in, so that this module does not
    import the golden module, which imports this one). Adds the file to ``known`` (the candidate files the check
    used)."""
    entry = index.get(GOLDEN_DIR)
    if not entry:
        return None
    check = stage_check(GOLDEN_STAGE, StageLimits(**entry["limits"]), total_cases=1)
    rel = entry["mel"]["file"]
    path = Path(candidate) / rel
    if not path.is_file():
        return check
    if known is not None:
        known.add(rel)
    check.cases = 1
    shape = tuple(entry["mel"]["shape"])
    want = np.fromfile(Path(golden) / rel, dtype="<f4").reshape(shape)
    got = np.fromfile(path, dtype="<f4")
    if got.size != want.size:
        check.failures.append(f"{path}: {got.size} float32 values, expected {want.size} ({list(shape)})")
        return check
    stats = ErrorStats("float")
    stats.update(want[None], got.reshape(shape)[None])
    check.metrics = stats.summary()
    check.vs_golden = check.metrics
    check.failures += check.limits.check(check.metrics)
    return check
