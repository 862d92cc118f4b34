"""The parity engine: the same frames through the PyTorch fp32 reference and every candidate backend, compared.

Each backend renders through :func:`toolkit.render.iter_frames`, the pipeline ``framegen render`` runs (template
crops in ping-pong order, the real audio windows, the backend's own batch size, paste-back), so parity checks what
users get. The frames are the first ``frames`` output frames of the speech features and ``silence_frames`` more with
silent audio (all-zero feature rows, what SyncTalk_2D feeds at a clip's edges). They are compared as they stream
(nothing is held but the worst frame for the heat map) at two stages: the model output (float, 3x320x320) and the
final frame (uint8, inside the crop box; outside it the frame must be bit-identical).

Limits are derived from the checkpoint under test (:mod:`framegen.toolkit.compare.tolerance`: independent fp16 and fp64
PyTorch executions, cached per checkpoint digest), or are the fixed profiles of :mod:`framegen.toolkit.compare.profiles`
(``tolerances='fixed'``); ``--tolerance`` / ``--profile`` overrides apply on top, and the report records every limit
in force and where it came from. The bundle's sha256 checksums are verified too. A third stage, ``layers``, compares
every convolution and upsample of each ONNX or Core ML artifact with PyTorch on the first frame
(:mod:`framegen.toolkit.parity.layers`), each against its own derived limit: it sees a wrong weight that fp16's rounding
noise hides at the output, and names the first layer that departs. Outputs can be saved and judged on another
machine (:mod:`framegen.toolkit.parity.replay`); the layers of their artifact are still compared here.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from framegen.models.bundle import load_bundle
from framegen.models.errors import FramegenError
from framegen.runtimes.registry import get_spec, open_backend
from framegen.runtimes.spec import OpenRequest, artifact_precision
from framegen.toolkit.common.files import jsonable, write_json
from framegen.toolkit.compare.overrides import Overrides, load_profile_file, parse_tolerance
from framegen.toolkit.compare.profiles import FINAL_FRAME, LAYERS, MODEL_OUTPUT, Profile
from framegen.toolkit.compare.results import (
    REFERENCE,
    Candidate,
    CandidateResult,
    ChecksumResult,
    ParityReport,
    StageResult,
    judge_stages,
)
from framegen.toolkit.compare.tolerance import Tolerances, fixed_profile, resolve_tolerances
from framegen.toolkit.frames.plan import open_candidate
from framegen.toolkit.inputs.template import open_template
from framegen.toolkit.parity.encoder import encoder_parity
from framegen.toolkit.parity.image import run_image_parity
from framegen.toolkit.parity.inputs import (
    AudioInput,
    ParityError,
    Segment,
    frame_inputs,
    frame_plan,
    parity_candidates,
    parse_backends,
    plan_segments,
    resolve_audio_input,
    verify_checksums,
)
from framegen.toolkit.parity.layers import locate_artifact, torch_reference
from framegen.toolkit.parity.replay import (
    ReplayBackend,
    check_saved,
    inputs_digest,
    load_outputs,
    runtime_versions,
    save_outputs,
)
from framegen.toolkit.parity.report import print_report
from framegen.toolkit.parity.tracking import Tracker, compare_segments, write_heatmaps

__all__ = [
    "FRAME_STAGES",
    "REFERENCE",
    "AudioInput",
    "Candidate",
    "CandidateResult",
    "ChecksumResult",
    "ParityError",
    "ParityReport",
    "Segment",
    "StageResult",
    "judge_stages",
    "parity_candidates",
    "parity_job",
    "parse_backends",
    "plan_segments",
    "print_report",
    "resolve_audio_input",
    "run_parity",
    "verify_checksums",
]

FRAME_STAGES = (MODEL_OUTPUT, FINAL_FRAME)
# Below this output spread the generator is nearly constant (an uncalibrated checkpoint) and parity proves little.
_MIN_REFERENCE_STD = 0.05


# ----------------------------------------------------------------------------------------------- planning


# ----------------------------------------------------------------------------------------------- running


def _check_source(b: Any, checkpoint: str | os.PathLike[str]) -> list[str]:
    """A note when ``checkpoint`` is not the one the bundle's manifest says it was exported from."""
    expected = (b.manifest.get("source") or {}).get("sha256")
    if isinstance(expected, str):
        from framegen.models.checkpoint import sha256_file

        if sha256_file(checkpoint) != expected:
            return [f"{checkpoint}: not the checkpoint the bundle was exported from (sha256 differs from the "
                    f"manifest's source); expect every candidate to fail"]
    return []


def _artifact_of(b: Any, cand: Candidate) -> Any:
    """The bundle artifact a candidate runs (``None`` for checkpoint backends and unknown names)."""
    try:
        fmt = get_spec(cand.backend).needs
    except FramegenError:
        return None
    precision = artifact_precision(cand.precision)  # bf16 runs the fp32 artifact
    if fmt not in ("onnx", "coreml") or not b.has("generator", fmt, precision, cand.io):
        return None
    return b.find("generator", fmt, precision, cand.io)


def _load_saved(b: Any, paths: list[str | os.PathLike[str]], plan: list[dict[str, Any]]
                ) -> list[tuple[Candidate, Any]]:
    """Candidates for saved runs, each checked against this run's inputs and this bundle's artifact."""
    digests = [f["sha256"] for f in plan]
    out = []
    for path in paths:
        for run in load_outputs(path):
            h = run.header
            cand = Candidate(str(h.get("backend")), str(h.get("precision", "fp32")), str(h.get("io", "tensor")))
            art = _artifact_of(b, cand)
            check_saved(run, digests, art.entry.get("sha256") if art is not None else None)
            out.append((cand, run))
    return out


def _open_candidates(b: Any, checkpoint: str | os.PathLike[str], cands: list[tuple[Candidate, Any]],
                     tolerances: Tolerances, record: bool, options: dict[str, Any] | None = None
                     ) -> tuple[list[Tracker], dict[int, Any]]:
    """One tracker per tensor candidate (with its saved run, or ``None`` to run it here) and the backends that
    opened, by tracker index. Live candidates open exactly as ``framegen render`` opens them
    (:func:`framegen.toolkit.frames.plan.open_candidate`); one that cannot open is a failed result, not an exception."""
    trackers: list[Tracker] = []
    backends: dict[int, Any] = {}
    for k, (cand, run) in enumerate(cands):
        result = CandidateResult(cand, "", loaded_from=os.fspath(run.path) if run is not None else None)
        try:
            be = ReplayBackend(run) if run is not None else open_candidate(cand, bundle=b, checkpoint=checkpoint,
                                                                          mode=b.mode, for_render=True,
                                                                          options=options)
        except FramegenError as exc:
            result.error = f"cannot open: {exc}"
            trackers.append(Tracker(result, _profile_or_fixed(tolerances, cand.precision, cand.io)))
            continue
        result.info = be.info.as_dict()
        try:
            # The limits follow what the backend really runs (e.g. TensorRT may build fp16 from an fp32 model).
            prof = tolerances.profile(be.info.precision, cand.io)
        except FramegenError as exc:
            result.error = f"no tolerances: {exc}"
            be.close()
            trackers.append(Tracker(result, _profile_or_fixed(tolerances, "fp32", cand.io)))
            continue
        trackers.append(Tracker(result, prof, saved={} if record and run is None else None))
        backends[k] = be
    return trackers, backends


def _profile_or_fixed(tolerances: Tolerances, precision: str, io: str) -> Profile:
    """Limits for a candidate that never ran (its result is a failure either way; the report still names them)."""
    try:
        return tolerances.profile(precision, io)
    except FramegenError:
        return fixed_profile("fp32", io)


def _save_runs(path: str | os.PathLike[str], b: Any, checkpoint: str | os.PathLike[str],
               recorded: list[tuple[CandidateResult, dict[str, np.ndarray] | None]], plan: list[dict[str, Any]]
               ) -> str | None:
    """Write every live candidate's recorded outputs (tensor: float model outputs; image-I/O: uint8 predictions)
    with the header that lets another machine's run be checked against this one's inputs and artifact."""
    from framegen.models.checkpoint import sha256_file

    runs = []
    versions = runtime_versions()
    for result, saved in recorded:
        if saved is None or result.error is not None:
            continue
        cand = result.candidate
        art = _artifact_of(b, cand)
        artifact = ({"path": art.path.relative_to(b.root).as_posix(), "format": art.format,
                     "sha256": art.entry.get("sha256")} if art is not None
                    else {"checkpoint": os.fspath(checkpoint), "sha256": None})
        header = {"label": result.label, "backend": cand.backend, "precision": cand.precision, "io": cand.io,
                  "mode": b.mode, "info": jsonable(result.info), "artifact": artifact,
                  "bundle_source_sha256": (b.manifest.get("source") or {}).get("sha256"),
                  "checkpoint_sha256": sha256_file(checkpoint), "inputs_sha256": inputs_digest(
                      [f["sha256"] for f in plan]), "frames": plan, "runtime_versions": versions}
        runs.append({"header": header, "outputs": saved})
    if not runs:
        return None
    return os.fspath(save_outputs(path, runs))


def _judge_layers(b: Any, checkpoint: str | os.PathLike[str], template: Any, segments: list[Segment],
                  plan: list[dict[str, Any]], results: list[CandidateResult]) -> None:
    """The ``layers`` stage of every fp32 / fp16 candidate that runs a bundle's ONNX or Core ML artifact (loaded
    outputs included): each of the artifact's layers against PyTorch on the run's first frame
    (:mod:`framegen.toolkit.parity.layers`). An artifact shared by several candidates is compared once."""
    image, audio = frame_inputs(template, segments, b.mode, 0)
    reference = None
    crop = np.ascontiguousarray(template.prepared(plan[0]["template_index"]).crop328[4:-4, 4:-4])
    done: dict[tuple[str, str, str], Any] = {}
    judged = []
    for res in results:
        cand = res.candidate
        profile = res.limits_profile
        if res.error or profile is None or LAYERS not in profile.stages or cand.precision not in ("fp32", "fp16"):
            continue
        art = _artifact_of(b, cand)
        if art is not None:
            judged.append((res, art))
    precisions = tuple(sorted({res.candidate.precision for res, _ in judged}))
    for res, art in judged:
        cand = res.candidate
        profile = res.limits_profile
        key = (os.fspath(art.path), cand.precision, cand.io)
        if key not in done:
            reference = reference or torch_reference(checkpoint, image, audio, b.mode, precisions)
            done[key] = locate_artifact(checkpoint, art.path, art.format, cand.precision, image, audio, mode=b.mode,
                                        frame=0, io=cand.io, crop=crop, reference=reference)
        loc = res.locate = done[key]
        limits = profile.limits(LAYERS)
        metrics = loc.stage_metrics()
        scale = limits.max_excess if limits.max_excess is not None else 1.0
        outside = [r for r in loc.layers if r.local_rel_rms > scale * r.local_limit]
        if loc.error:
            failures = [f"cannot compare the layers: {loc.error}"]
        elif outside:
            r = outside[0]
            failures = [f"{len(outside)} of {len(loc.layers)} layers outside their limit; first {r.layer} "
                        f"({r.kind}): local rel_rms {r.local_rel_rms:.3g} > {scale * r.local_limit:.3g}"]
        else:
            failures = []
        res.stages.append(StageResult(LAYERS, "layers", metrics, limits.as_dict(), failures))


def _run_tensor(b: Any, checkpoint: str | os.PathLike[str], template: Any, segments: list[Segment],
                plan: list[dict[str, Any]], cands: list[tuple[Candidate, Any]], tolerances: Tolerances,
                notes: list[str], *, batch: int | None, heatmaps: str | os.PathLike[str] | None, progress: bool,
                record: bool, options: dict[str, Any] | None = None) -> tuple[list[CandidateResult], dict[str, Any],
                                       list[tuple[CandidateResult, dict[str, np.ndarray] | None]]]:
    """Open, stream and judge the tensor candidates (live or loaded); returns their results, the reference's info
    and, with ``record``, each live candidate's outputs by frame digest."""
    reference = open_backend(REFERENCE, OpenRequest(checkpoint=checkpoint, mode=b.mode, precision="fp32"))
    trackers, backends = _open_candidates(b, checkpoint, cands, tolerances, record, options)
    try:
        std = compare_segments(template, segments, plan, reference, trackers, backends, batch=batch,
                                keep_worst=heatmaps is not None, progress=progress)
    finally:
        for be in backends.values():
            be.close()
        reference.close()
    if std < _MIN_REFERENCE_STD:
        notes.append(f"the reference output is nearly constant (std {std:.3f}): parity proves little; use a "
                     f"trained or calibrated checkpoint")
    for tr in trackers:
        tr.finish()
        if tr.result.error is None and tr.result.frames < len(plan):
            tr.result.error = f"compared {tr.result.frames} of {len(plan)} frames"
    if heatmaps is not None:
        write_heatmaps(trackers, heatmaps)
    return [t.result for t in trackers], reference.info.as_dict(), [(t.result, t.saved) for t in trackers]


def run_parity(bundle: str | os.PathLike[str], checkpoint: str | os.PathLike[str], template: Any,
               features: np.ndarray, *, candidates: list[Candidate] | None = None, frames: int = 8,
               silence_frames: int = 1, start_frame: int = 0, batch: int | None = None,
               heatmaps: str | os.PathLike[str] | None = None, progress: bool = False,
               inputs: dict[str, Any] | None = None, tolerances: str | Tolerances = "derived",
               overrides: Overrides | None = None, measure_frames: int = 2, locate: bool | None = None,
               save_outputs: str | os.PathLike[str] | None = None,
               load_outputs: list[str | os.PathLike[str]] | None = None,
               mel_windows: np.ndarray | None = None, options: dict[str, Any] | None = None) -> ParityReport:
    """Compare every candidate with the PyTorch fp32 reference on ``frames`` speech and ``silence_frames`` silent
    output frames.

    ``template`` is a :class:`framegen.toolkit.inputs.preprocess.PreparedTemplate`, ``features`` the (N, F) feature
    rows of
    the bundle's mode; ``candidates`` default to :func:`parity_candidates`'s choice (none when ``load_outputs`` is
    given). ``start_frame``: the template frame the ping-pong walk starts at; ``batch`` overrides each backend's.
    ``tolerances``: ``derived`` (from ``measure_frames`` speech frames and one silent frame of this checkpoint,
    :mod:`framegen.toolkit.compare.tolerance`, cached), ``fixed``, or a ready :class:`Tolerances`; ``overrides`` apply
    on
    top. ``locate``: the ``layers`` stage of ONNX / Core ML candidates runs unless ``False``; ``True`` also prints
    every per-layer table (by default only failed candidates').
    ``save_outputs``: write each live candidate's outputs there; ``load_outputs``: judge
    saved runs (refused, ParityError, when made from other inputs or another artifact). ``heatmaps``: a directory
    for one PNG per candidate. Candidates that cannot be opened or fail while running are failures in the report;
    bad usage raises.
    """
    from framegen.models.checkpoint import load_checkpoint

    if frames < 1:
        raise ParityError(f"--frames must be at least 1, got {frames}")
    if silence_frames < 0:
        raise ParityError(f"--silence-frames must be at least 0, got {silence_frames}")
    b = load_bundle(bundle)
    checkpoint = load_checkpoint(checkpoint)
    notes: list[str] = []
    segments = plan_segments(template, features, frames, silence_frames, start_frame)
    if segments[0].count < frames:
        notes.append(f"features hold {features.shape[0]} frames; comparing {segments[0].count}, not {frames}")
    plan = frame_plan(template, segments, b.mode)
    saved = _load_saved(b, list(load_outputs or []), plan)
    candidates = _checked_candidates(b, checkpoint, candidates, saved, notes, options)
    checksums = verify_checksums(b)
    notes += _check_source(b, checkpoint)
    if isinstance(tolerances, str):
        tolerances = resolve_tolerances(tolerances, checkpoint, template, features, b.mode, start_frame=start_frame,
                                        speech=min(measure_frames, segments[0].count),
                                        silence=1 if silence_frames else 0, overrides=overrides)
    elif overrides is not None:
        tolerances = Tolerances(tolerances.kind, tolerances.measurement, overrides)
    tensor = [(c, None) for c in candidates if c.io == "tensor"] + [(c, r) for c, r in saved if c.io == "tensor"]
    image = [(c, None) for c in candidates if c.io == "image"] + [(c, r) for c, r in saved if c.io == "image"]
    results, reference, recorded = _run_tensor(b, checkpoint, template, segments, plan, tensor, tolerances, notes,
                                               batch=batch, heatmaps=heatmaps, progress=progress,
                                               record=save_outputs is not None, options=options)
    if image:
        # Image-I/O variants take uint8 crops, not the float Backend interface: their own runner, same frames.

        image_results = run_image_parity(b, checkpoint, template, features, [c for c, _ in image],
                                         segments=segments, profile=lambda p: tolerances.profile(p, "image"),
                                         loaded=[r for _, r in image], record=save_outputs is not None)
        results += image_results
        recorded += [(r, r.recorded) for r in image_results]
    saved_path = _save_runs(save_outputs, b, checkpoint, recorded, plan) if save_outputs is not None else None
    if locate is not False:
        _judge_layers(b, checkpoint, template, segments, plan, results)
    else:
        notes.append("layers stage skipped (locate=False, --no-locate, or a quick demo): a wrong weight inside fp16 "
                     "rounding noise goes unseen")
    results += _audio_candidates(b, inputs or {}, mel_windows)
    return ParityReport(reference=reference, inputs=dict(inputs or {}, bundle=os.fspath(b.root),
                                                                      checkpoint=os.fspath(checkpoint)),
                        frames=[{k: v for k, v in f.items()} for f in plan], checksums=checksums,
                        candidates=results, notes=notes, tolerances=tolerances, saved_outputs=saved_path,
                        show_layers=bool(locate))


def _checked_candidates(b: Any, checkpoint: Any, candidates: list[Candidate] | None,
                        saved: list[tuple[Candidate, Any]], notes: list[str],
                        options: dict[str, Any] | None) -> list[Candidate]:
    """The live candidates: as given, or the planner's choice (none when saved runs are judged); ParityError when
    there is nothing to compare or an I/O variant is unknown."""
    if candidates is None:
        candidates, notes_plan = ([], []) if saved else parity_candidates(b, checkpoint=checkpoint, options=options)
        notes += notes_plan
    if not candidates and not saved:
        raise ParityError("no candidate backend to compare")
    unknown = [c.label for c in candidates if c.io not in ("tensor", "image")]
    if unknown:
        raise ParityError(f"unknown I/O variant in {', '.join(unknown)}")
    return candidates


def _audio_candidates(b: Any, inputs: dict[str, Any], mel_windows: np.ndarray | None) -> list[CandidateResult]:
    """With audio input: the bundle's audio front-end artifacts on the run's audio (stages mel and features), and
    its exported audio encoders against the PyTorch checkpoint on the run's mel windows."""
    if not inputs.get("audio"):
        return []
    from framegen.toolkit.parity.frontend import frontend_parity

    results = frontend_parity(b, inputs["audio"], inputs.get("encoder"))
    if inputs.get("encoder_kind") == "checkpoint" and mel_windows is not None:
        results += encoder_parity(b, mel_windows, inputs["encoder"])
    return results


def parity_job(*, bundle: str | os.PathLike[str], checkpoint: str | os.PathLike[str], template: Any,
               features: str | os.PathLike[str] | None = None, audio: str | os.PathLike[str] | None = None,
               encoder: str | os.PathLike[str] | None = None, backends: str | None = None, frames: int = 8,
               silence_frames: int = 1, start_frame: int = 0, batch: int | None = None,
               heatmaps: str | os.PathLike[str] | None = None, skip_bad_boxes: bool = False,
               progress: bool = False, tolerances: str = "derived", tolerance: list[str] | tuple[str, ...] = (),
               profile: str | os.PathLike[str] | None = None, locate: bool | None = None,
               save_outputs: str | os.PathLike[str] | None = None,
               load_outputs: list[str | os.PathLike[str]] | tuple[str | os.PathLike[str], ...] = (),
               json: str | os.PathLike[str] | None = None, options: dict[str, Any] | None = None) -> ParityReport:
    """``framegen parity`` as one call, from paths: the bundle, the checkpoint, a template directory (or a ready
    ``PreparedTemplate``), ``features`` or ``audio`` + ``encoder``; ``backends`` as ``NAME[:precision][:image],...``
    (default: the planner's choice; none but the loaded runs when ``load_outputs`` is given). ``tolerance``:
    ``STAGE.METRIC=VALUE`` overrides, ``profile``: a TOML/JSON file of them (applied first). ``json``: also write the
    report there. ``options``: every backend's ``OpenRequest.options`` (e.g. ``triton_url``). See :func:`run_parity`
    for the rest."""
    from framegen.models.checkpoint import load_checkpoint
    from framegen.toolkit.inputs.preprocess import PreparedTemplate

    overrides = Overrides()
    if profile is not None:
        load_profile_file(profile, overrides)
    for text in tolerance:
        parse_tolerance(text, overrides)
    b = load_bundle(bundle)
    checkpoint = load_checkpoint(checkpoint)
    requested = parse_backends(backends)
    audio_input = resolve_audio_input(b.mode, features, audio, encoder, progress, bundle=b)
    if requested is None and load_outputs:
        candidates, notes = [], []
    else:
        candidates, notes = parity_candidates(b, requested, checkpoint=checkpoint, options=options)
    if isinstance(template, PreparedTemplate):
        prepared, where = template, os.fspath(template.template.root)
    else:
        prepared, where = PreparedTemplate(open_template(template), skip_bad_boxes=skip_bad_boxes), os.fspath(template)
    report = run_parity(b, checkpoint, prepared, audio_input.features, candidates=candidates, frames=frames,
                        silence_frames=silence_frames, start_frame=start_frame, batch=batch, heatmaps=heatmaps,
                        progress=progress, inputs={"template": where, **audio_input.source}, tolerances=tolerances,
                        overrides=overrides, locate=locate, save_outputs=save_outputs,
                        load_outputs=list(load_outputs), mel_windows=audio_input.mel_windows, options=options)
    report.notes[:0] = notes + prepared.warnings
    if json is not None:
        write_json(json, report.as_dict())
    return report


# ----------------------------------------------------------------------------------------------- output


