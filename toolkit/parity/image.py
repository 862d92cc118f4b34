"""Parity and golden checks of image-I/O generator variants (``io: image`` artifacts) against the float pipeline.

An image-I/O variant takes the uint8 reference crop and returns the uint8 prediction, so it is compared on the uint8
stages: ``model_output`` here is the prediction in levels against ``pred_to_uint8`` of the PyTorch fp32 output, and
``final_frame`` the pasted frame, both under the ``image-fp32`` / ``image-fp16`` profiles of
:mod:`framegen.toolkit.compare.profiles`. The frames, crops and audio windows are those ``framegen render`` uses
(:func:`toolkit.render.iter_frames` of the reference), so this checks what a port calling the variant would get.

Used by the parity engine (``framegen.toolkit.parity.engine.run_parity``): :func:`plan_image_candidates` lists the image
candidates a bundle offers, :func:`run_image_parity` compares them and returns ``CandidateResult`` objects like the
tensor candidates'. For golden vectors, :func:`write_image_candidate` runs the variant on each golden case's
``reference_320`` and ``audio_window`` and writes the port-side stages (``pred_320``, ``pasted_328``,
``final_frame``) for ``framegen golden check``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from framegen.models.bundle import load_bundle
from framegen.models.contract import INNER_OFFSET, INNER_SIZE
from framegen.models.errors import FramegenError
from framegen.runtimes.registry import open_backend
from framegen.runtimes.spec import OpenRequest
from framegen.toolkit.compare.metrics import ErrorStats, outside_box_diffs
from framegen.toolkit.compare.profiles import FINAL_FRAME, MODEL_OUTPUT, Profile, profile_for
from framegen.toolkit.compare.results import REFERENCE, Candidate, CandidateResult, judge_stages
from framegen.toolkit.frames.plan import PlanError, open_candidate, plan_candidates
from framegen.toolkit.inputs.features import audio_windows
from framegen.toolkit.parity.golden import load_index, read_stage, write_bin
from framegen.toolkit.parity.replay import ReplayBackend, frame_digest

_INNER = slice(INNER_OFFSET, INNER_OFFSET + INNER_SIZE)


def plan_image_candidates(bundle: Any) -> tuple[list[Candidate], list[str]]:
    """Image candidates for a loaded bundle (every available backend x every image-I/O generator artifact it runs,
    as the planner finds them), plus notes on those left out."""
    try:
        plan = plan_candidates("parity", bundle=bundle.root, ios=["image"])
    except PlanError as exc:
        return [], [str(exc)]
    return list(plan.candidates), plan.notes


def run_image_parity(bundle: str | os.PathLike[str], checkpoint: str | os.PathLike[str], template: Any,
                     features: np.ndarray, candidates: list[Any], *, frames: int = 8, start_frame: int = 0,
                     segments: list[Any] | None = None, profile: Callable[[str], Profile] | None = None,
                     loaded: list[Any] | None = None, record: bool = False) -> list[CandidateResult]:
    """Compare image-I/O candidates (:class:`framegen.toolkit.compare.results.Candidate` with ``io='image'``) with
    the PyTorch fp32 reference pipeline; one :class:`CandidateResult` each.

    ``segments`` (:class:`framegen.toolkit.parity.engine.Segment`, speech and silence) are the frames parity compares;
    by
    default the first ``frames`` output frames of ``features`` from ``start_frame``. ``profile(precision)`` gives the
    limits (default: the fixed ``image-*`` profiles). ``loaded``: per candidate a
    :class:`framegen.toolkit.parity.replay.SavedRun` to replay instead of running it here (or ``None``); ``record``:
    keep each live candidate's predictions by frame digest in its ``recorded``, for ``--save-outputs``. A candidate
    that cannot be opened or fails while running is a failed result (its error says why).
    """
    b = load_bundle(bundle)
    if segments is None:
        segments = [_Segment(features, min(frames, int(features.shape[0])), start_frame, 0)]
    limits = profile or (lambda p: profile_for(p, "image"))
    results: list[CandidateResult] = []
    models: dict[int, Any] = {}
    stats: dict[int, tuple[ErrorStats, ErrorStats]] = {}
    runs = list(loaded or []) + [None] * (len(candidates) - len(loaded or []))
    for k, (cand, run) in enumerate(zip(candidates, runs, strict=True)):
        results.append(CandidateResult(cand, limits(cand.precision).name,
                                       loaded_from=os.fspath(run.path) if run is not None else None,
                                       recorded={} if record and run is None else None))
        try:
            models[k] = ReplayBackend(run) if run is not None else open_candidate(
                cand, bundle=b, checkpoint=checkpoint, mode=b.mode, for_render=True)
        except FramegenError as exc:
            results[k].error = f"cannot open: {exc}"
            continue
        results[k].info = models[k].info.as_dict()
        stats[k] = (ErrorStats("uint8"), ErrorStats("uint8"))
    if not models:
        return results
    try:
        total = _compare(b, checkpoint, template, segments, models, results, stats)
    finally:
        for m in models.values():
            m.close()
    for k, (out_stats, final_stats) in stats.items():
        judge_stages(results[k], limits(candidates[k].precision), ((MODEL_OUTPUT, out_stats),
                                                                   (FINAL_FRAME, final_stats)))
        if results[k].error is None and results[k].frames < total:
            results[k].error = f"compared {results[k].frames} of {total} frames"
    return results


@dataclass(frozen=True)
class _Segment:
    features: np.ndarray
    count: int
    start_frame: int
    offset: int


def _compare(b: Any, checkpoint: str | os.PathLike[str], template: Any, segments: list[Any], models: dict[int, Any],
             results: list[CandidateResult], stats: dict[int, tuple[ErrorStats, ErrorStats]]) -> int:
    """Stream the reference over every segment and compare each open image model's frames; returns the frames."""
    from framegen.models.pixels import pred_to_uint8
    from framegen.toolkit.frames.render import iter_frames
    from framegen.toolkit.inputs.preprocess import paste_back

    total = 0
    reference = open_backend(REFERENCE, OpenRequest(checkpoint=checkpoint, mode=b.mode, precision="fp32"))
    try:
        for seg in segments:
            total += seg.count
            for j, tindex, prepared, ref_pred, ref_frame in iter_frames(template, seg.features, reference, batch=1,
                                                                        start_frame=seg.start_frame,
                                                                        max_frames=seg.count):
                i = seg.offset + int(j)
                ref_u8 = pred_to_uint8(ref_pred)
                crop = np.ascontiguousarray(prepared.crop328[_INNER, _INNER])[None]
                audio = audio_windows(seg.features, [j], b.mode)
                digest = frame_digest(prepared.image_input(), audio[0])
                x0, y0, x1, y1 = box = prepared.box
                for k in list(models):
                    try:
                        got = models[k].infer(crop, audio)[0]
                    except FramegenError as exc:
                        results[k].error = f"failed at frame {i}: {exc}"
                        models.pop(k).close()
                        continue
                    frame = paste_back(template.frame(tindex), box, prepared.crop328, got)
                    out_stats, final_stats = stats[k]
                    out_stats.update(ref_u8[None], got[None], [i])
                    final_stats.update(ref_frame[y0:y1, x0:x1][None], frame[y0:y1, x0:x1][None], [i],
                                       offset=(y0, x0, 0))
                    results[k].outside_box_diffs += outside_box_diffs(ref_frame, frame, box)
                    results[k].frames += 1
                    if results[k].recorded is not None:
                        results[k].recorded[digest] = np.array(got, copy=True)
    finally:
        reference.close()
    return total


def write_image_candidate(golden: str | os.PathLike[str], model: Any, out: str | os.PathLike[str]) -> Path:
    """Run an image-I/O backend (io ``image``: uint8 crops in, uint8 predictions out) on every golden case,
    as a port would: its ``reference_320`` and ``audio_window`` in, ``pred_320`` out, pasted into its ``crop_328``
    and the frame. Writes ``pred_320``, ``pasted_328`` and ``final_frame`` per case under ``out`` (the candidate
    layout ``framegen golden check`` reads)."""
    from framegen.toolkit.inputs.preprocess import paste_back

    root, dest = Path(golden), Path(out)
    index = load_index(root)
    specs = {s["name"]: s for s in index["stages"]}

    def stage(case: dict[str, Any], name: str) -> np.ndarray:
        return read_stage(root / case["files"][name], specs[name]["dtype"], specs[name]["shape"])

    for case in index["cases"]:
        window = stage(case, "audio_window").astype(np.float32)
        pred = model.infer(np.ascontiguousarray(stage(case, "reference_320"))[None], window[None])[0]
        crop = stage(case, "crop_328")
        pasted = np.array(crop, copy=True)
        pasted[_INNER, _INNER] = pred
        box = tuple(int(v) for v in stage(case, "crop_box"))
        final = paste_back(stage(case, "frame"), box, crop, pred)
        case_dir = dest / case["dir"]
        case_dir.mkdir(parents=True, exist_ok=True)
        for name, arr in (("pred_320", pred), ("pasted_328", pasted), (FINAL_FRAME, final)):
            write_bin(case_dir / f"{name}.bin", arr, specs[name]["dtype"])
    return dest
