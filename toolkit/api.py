"""framegen's public Python API: the main jobs as plain functions with typed parameters and result objects.

``import framegen`` re-exports every name in :data:`__all__` (lazily). The CLI is a thin layer over these functions:
each command parses its options, calls one of them with the same defaults, and prints the result. Examples for
every function: docs/API.md (the test suite runs them).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from framegen.models.atomic import check_writable
from framegen.models.bundle import load_bundle
from framegen.models.errors import FramegenError
from framegen.models.version import __version__
from framegen.runtimes.registry import list_backends
from framegen.runtimes.spec import OpenRequest
from framegen.runtimes.triton_backend import parse_url
from framegen.toolkit.bench.core import DEFAULT_E2E_FRAMES, parse_batches, run_bench
from framegen.toolkit.bench.stream import run_bench_stream
from framegen.toolkit.bench.triton import DEFAULT_STREAMS, parse_streams, run_triton_bench
from framegen.toolkit.common.files import write_json
from framegen.toolkit.compare import reports
from framegen.toolkit.compare.html import bench_html, parity_html
from framegen.toolkit.compare.reports import write_text_atomic
from framegen.toolkit.demo import DEFAULT_SECONDS, DemoContext, quick_context, run_demo
from framegen.toolkit.export.bundle import export_bundle
from framegen.toolkit.frames.plan import PRECISIONS, Request, open_candidate, plan_candidates
from framegen.toolkit.frames.video import DEFAULT_PRESET, check_frames_dir, container_format
from framegen.toolkit.inputs.audio import audio_to_features, decode_audio, melspectrogram, torch_encoder_fn
from framegen.toolkit.inputs.encoders import resolve_encoder
from framegen.toolkit.inputs.features import FeatureError, load_features, save_npy, validate_features
from framegen.toolkit.inputs.template import LANDMARK_SUFFIX, numbered_files, open_template
from framegen.toolkit.parity.engine import parity_job
from framegen.toolkit.parity.golden import AudioSource, write_golden
from framegen.toolkit.parity.golden_check import check_golden
from framegen.toolkit.parity.inputs import resolve_audio_input
from framegen.toolkit.serve import ServeOptions
from framegen.toolkit.serve import serve as run_serve

PathLike = str | os.PathLike[str]

__all__ = [
    "BackendRow",
    "FramegenError",
    "__version__",
    "audio_features",
    "audio_mel",
    "backends",
    "bench",
    "bench_stream",
    "bench_triton",
    "checkpoint_init",
    "demo",
    "export",
    "export_audio_frontend",
    "golden_check",
    "golden_write",
    "parity",
    "render",
    "render_frames",
    "serve",
    "stream",
    "stream_session",
    "template_inspect",
    "template_synth",
]


class UsageError(FramegenError):
    """Arguments of an API call (or CLI command) that do not fit together or name missing files."""


def _split(value: str | Sequence[str]) -> list[str]:
    if isinstance(value, str):
        return [v for v in (p.strip() for p in value.split(",")) if v]
    return [str(v) for v in value]


def _loaded(checkpoint: PathLike | None, bundle: PathLike | None) -> tuple[Any, Any]:
    """The checkpoint and the bundle's manifest, each read (and hashed) once for the whole job; both stay path-like,
    so everything below takes them where it takes a path."""
    from framegen.models.checkpoint import load_checkpoint

    return (load_checkpoint(checkpoint) if checkpoint is not None else None,
            load_bundle(bundle) if bundle is not None else None)


def _exists(**paths: PathLike | None) -> None:
    for label, path in paths.items():
        if path is not None and not Path(path).exists():
            raise UsageError(f"--{label.replace('_', '-')} {path}: no such file or folder")


# ----------------------------------------------------------------------------------------------------- inputs

def checkpoint_init(out: PathLike, *, kind: str = "generator", mode: str = "ave", seed: int = 0,
                    calibrate: bool = False, demo_trained: bool = False) -> Path:
    """Write a seeded, reproducible stand-in checkpoint in SyncTalk_2D's own format (``torch.save`` of the
    state_dict): ``kind`` generator (``mode`` ave / hubert / wenet; ``calibrate`` estimates BatchNorm statistics so
    outputs span [0, 1], as trained weights do) or audio-encoder (always calibrated). ``demo_trained`` writes the
    trained demo generator instead ('ave'; its features come from the audio encoder of seed 0). Returns the path."""
    from framegen.models.demo import load_demo_generator
    from framegen.models.init import init_audio_encoder, init_generator
    from framegen.models.io import save_audio_encoder, save_generator

    if demo_trained:
        if kind != "generator" or mode != "ave" or calibrate:
            raise UsageError("checkpoint init --demo-trained: the trained demo generator is an 'ave' generator; "
                             "--kind, --mode and --calibrate do not apply")
        return save_generator(load_demo_generator(), out)
    if kind == "generator":
        return save_generator(init_generator(mode, seed, calibrate), out)
    if kind in ("audio-encoder", "audio_encoder"):
        return save_audio_encoder(init_audio_encoder(seed, calibrate=True), out)
    raise UsageError(f"--kind {kind!r}: expected generator or audio-encoder")


def template_inspect(directory: PathLike, *, skip_bad_boxes: bool = False,
                     preview: PathLike | None = None) -> dict[str, Any]:
    """Pair a template's images with its landmark files, decode every image and report each frame's crop box:
    ``{root, count, usable_frames, width, height, numbering, usable, errors, warnings, frames: [{index, image,
    landmarks, box[, error]}]}``. ``preview``: also write a contact sheet of crops with their boxes drawn (PNG).
    A template that cannot be opened at all raises ``TemplateError``; one with bad frames reports them."""
    from framegen.toolkit.inputs.template_check import inspect_template, write_preview

    report = inspect_template(directory, skip_bad_boxes=skip_bad_boxes)
    if preview is not None:
        report["preview"] = write_preview(directory, report, preview)
    return report


def template_synth(out: PathLike, *, frames: int | None = None, width: int = 1280, height: int = 720,
                   landmarks: PathLike | None = None, seed: int = 0) -> Path:
    """Write a deterministic synthetic template (face-like frames drawn from a landmark track, or following the real
    track in ``landmarks``) to ``out``; ``frames`` defaults to 50, or every file of ``landmarks``. Returns ``out``."""
    from framegen.toolkit.inputs.synth import synth_template

    if frames is None:
        frames = 50
        if landmarks is not None and Path(landmarks).is_dir():
            frames = len(numbered_files(Path(landmarks), (LANDMARK_SUFFIX,))[0]) or 50
    synth_template(Path(out), frames=frames, width=width, height=height,
                   landmarks_dir=Path(landmarks) if landmarks is not None else None, seed=seed)
    return Path(out)


def audio_features(audio: PathLike, encoder: PathLike, *, out: PathLike | None = None, batch: int = 64,
                   progress: bool = False) -> np.ndarray:
    """SyncTalk_2D's 'ave' features of a speech file (any format PyAV reads): (N, 512) float32, one row per 25 fps
    video frame, computed with the audio encoder checkpoint exactly as SyncTalk_2D's inference does. ``out``: also
    save them as ``.npy`` there."""
    from framegen.models.checkpoint import load_audio_encoder

    feats = audio_to_features(audio, torch_encoder_fn(load_audio_encoder(encoder)), batch=batch, progress=progress)
    if out is not None:
        save_npy(out, feats)
    return feats


def audio_mel(audio: PathLike, *, out: PathLike | None = None) -> np.ndarray:
    """SyncTalk_2D's normalised log-mel spectrogram of a speech file (any format PyAV reads): (T, 80) float32, 80
    frames per second, ``T = 1 + samples // 200`` (docs/CONTRACT.md §4). ``out``: also save it as ``.npy`` there."""
    spec = melspectrogram(decode_audio(audio))
    if out is not None:
        save_npy(out, spec)
    return spec


# ----------------------------------------------------------------------------------------------------- export

def export(checkpoint: PathLike, out: PathLike, *, audio_encoder: PathLike | None = None,
           formats: str | Sequence[str] = ("onnx", "coreml"), precisions: str | Sequence[str] = ("fp32", "fp16"),
           io: str | Sequence[str] = ("tensor",), opset: int | None = None, mode: str | None = None,
           force: bool = False, progress: Callable[[str], None] | None = None,
           triton: PathLike | None = None, triton_options: Any = None, audio_frontend: bool = False,
           compression: Any = None, junit_xml: PathLike | None = None) -> Any:
    """Export a SyncTalk_2D generator checkpoint (and optionally its audio encoder) to a validated bundle.

    Every artifact is validated against the PyTorch module; one that fails makes the export fail and leaves nothing
    at ``out``. ``formats``: onnx, coreml; ``precisions``: fp32, fp16; ``io``: tensor (the contract's float tensors),
    image (uint8 BGR image I/O variants for ports). ``triton``: also write a Triton model repository there
    (``triton_options``: a :class:`framegen.exporters.triton.TritonOptions`). ``precisions`` int8 / pal6 / pal4
    add compressed generators, calibrated and judged as ``compression`` (a
    :class:`framegen.toolkit.export.compress.CompressOptions`) says. ``junit_xml``: also write the validation as
    JUnit XML there (one test case per artifact with its figures and limits; a refused export is one failing case).
    Returns the written :class:`framegen.models.bundle.Bundle`.
    """
    _check_outputs(None, None, junit_xml)
    try:
        dest = export_bundle(checkpoint, out, audio_encoder=audio_encoder, formats=_split(formats),
                             precisions=_split(precisions), opset=opset, io=_split(io), mode=mode, force=force,
                             progress=progress, triton=triton, triton_options=triton_options,
                             audio_frontend=audio_frontend, compression=compression)
    except FramegenError as exc:
        if junit_xml is not None:  # a refused export is a failing test case in CI, with the reason
            _export_junit([], junit_xml, error=str(exc))
        raise
    bundle = load_bundle(dest)
    if junit_xml is not None:
        _export_junit([a.entry for a in bundle.artifacts], junit_xml)
    return bundle


def _export_junit(artifacts: list[dict[str, Any]], path: PathLike, error: str | None = None) -> None:
    reports.write_reports(reports.export_junit(artifacts, error), None, junit_path=path, markdown_path=None)


# ----------------------------------------------------------------------------------------------------- backends

@dataclass(frozen=True)
class BackendRow:
    """One backend as ``framegen backends`` lists it."""

    name: str
    available: bool
    reason: str
    runtime: str
    device: str
    needs: str
    precisions: tuple[str, ...]
    ios: tuple[str, ...]
    verifier: bool
    description: str
    #: with a bundle / checkpoint: ``None`` when the backend can be opened from it, else why not
    artifact: str | None = None
    #: with a bundle / checkpoint: whether ``auto`` picks this one
    auto: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


def backends(*, bundle: PathLike | None = None, checkpoint: PathLike | None = None,
             precision: str = "fp32") -> list[BackendRow]:
    """Every backend framegen knows, whether it runs here and why not; with a bundle and/or checkpoint also whether
    each can be opened from it and which one ``auto`` picks."""
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    request = None
    if bundle is not None or checkpoint is not None:
        if bundle is not None:
            load_bundle(bundle)  # a bad bundle is the user's error, not every backend's "reason"
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise UsageError(f"{checkpoint}: no such checkpoint file")
        request = OpenRequest(checkpoint=checkpoint, bundle=bundle, precision=precision)
    return [BackendRow(name=r["name"], available=r["available"], reason=r["reason"], runtime=r["runtime"],
                       device=r["device"], needs=r["needs"], precisions=tuple(r["precisions"]),
                       ios=tuple(r["ios"]), verifier=r["verifier"], description=r["description"],
                       artifact=r.get("artifact"), auto=bool(r.get("auto")))
            for r in list_backends(request)]


# ----------------------------------------------------------------------------------------------------- render

def _template(template: PathLike | Any, skip_bad_boxes: bool = False,
              warn: Callable[[str], None] | None = None) -> Any:
    from framegen.toolkit.inputs.preprocess import PreparedTemplate

    if isinstance(template, PreparedTemplate):
        return template
    prepared = PreparedTemplate(open_template(template), skip_bad_boxes=skip_bad_boxes)
    for message in [*prepared.template.warnings, *prepared.warnings]:
        if warn is not None:
            warn(message)
    return prepared


def _features(mode: str, features: PathLike | np.ndarray | None, audio: PathLike | None,
              encoder: PathLike | None, note: Callable[[str], None] | None = None,
              bundle: PathLike | None = None) -> np.ndarray:
    """Feature rows from an array, a file, or computed from speech ('ave' only) with ``encoder`` (a .pth checkpoint,
    or an exported .onnx / .mlpackage) or, without one, the bundle's own exported audio encoder."""
    if features is not None:
        if isinstance(features, np.ndarray):
            return validate_features(features, mode, "features")
        return load_features(features, mode)
    if audio is None:
        raise UsageError("give features, or audio to compute them from")
    if mode != "ave":
        raise FeatureError(f"audio makes 'ave' features; the generator is {mode!r}: give --features")

    encode, label = resolve_encoder(encoder=encoder, bundle=bundle)
    if note is not None:
        note(f"computing 'ave' features from {audio} with {label}")
    return audio_to_features(audio, encode, progress=False)


def _check_outputs(out: PathLike | None, frames_dir: PathLike | None, *reports: PathLike | None) -> None:
    """Refuse an output video, frames folder or report file that cannot be written, before any work."""
    if out is not None:
        container_format(out)
        if not Path(out).parent.is_dir():
            raise UsageError(f"--out {out}: folder {Path(out).parent} does not exist")
        check_writable(out)
    if frames_dir is not None:
        check_frames_dir(frames_dir)
        check_writable(frames_dir, "folder")
    for report in reports:
        if report is not None:
            check_writable(report)


def _check_sources(checkpoint: PathLike | None, bundle: PathLike | None, features: Any, audio: PathLike | None,
                   encoder: PathLike | None) -> None:
    if (checkpoint is None) == (bundle is None):
        raise UsageError("render: give exactly one of --checkpoint CKPT or --bundle DIR")
    if features is not None and encoder is not None:
        raise UsageError("render: give --features F, or --audio A with --encoder ENC to compute them, not both")
    if encoder is not None and audio is None:
        raise UsageError("render: --encoder computes features from --audio; --audio is missing")
    if features is None and audio is None:
        raise UsageError("render: give --features F, or --audio A (features from --encoder ENC or the bundle's "
                         "own audio encoder)")
    if features is None and encoder is None and bundle is None:
        raise UsageError("render: computing features from --audio needs --encoder ENC (or a --bundle with an "
                         "audio encoder)")
    _exists(checkpoint=checkpoint, bundle=bundle, audio=audio, encoder=encoder,
            features=None if isinstance(features, np.ndarray) else features)


def _open(backend: str, precision: str, io: str, checkpoint: PathLike | None, bundle: PathLike | None,
          mode: str | None, options: dict[str, Any] | None) -> Any:
    plan = plan_candidates("render", bundle=bundle, checkpoint=checkpoint,
                           requested=[Request(backend, precision, io)], options=options)
    return open_candidate(plan.candidates[0], bundle=bundle, checkpoint=checkpoint, mode=mode, options=options)


def render_frames(template: PathLike | Any, *, features: PathLike | np.ndarray | None = None,
                  audio: PathLike | None = None, encoder: PathLike | None = None,
                  checkpoint: PathLike | None = None, bundle: PathLike | None = None, backend: str = "auto",
                  precision: str = "fp32", io: str = "tensor", mode: str | None = None, batch: int | None = None,
                  start_frame: int = 0, max_frames: int | None = None, skip_bad_boxes: bool = False,
                  options: dict[str, Any] | None = None) -> Iterator[Any]:
    """Yield every rendered frame in order, as arrays (no file written): each a
    :class:`framegen.toolkit.frames.render.RenderedFrame` with ``i``, ``template_index``, ``pred`` (the backend's
    output)
    and ``frame`` (uint8 BGR, H x W x 3). The backend stays open while the iterator runs and closes when it ends
    or is closed. Arguments as :func:`render`."""
    from framegen.toolkit.frames.render import iter_frames

    _check_sources(checkpoint, bundle, features, audio, encoder)
    prepared = _template(template, skip_bad_boxes)
    checkpoint, bundle = _loaded(checkpoint, bundle)
    with _open(backend, precision, io, checkpoint, bundle, mode, options) as be:
        feats = _features(be.mode, features, audio, encoder, bundle=bundle)
        yield from iter_frames(prepared, feats, be, batch=batch, start_frame=start_frame, max_frames=max_frames)


def render(template: PathLike | Any, *, out: PathLike | None = None, frames_dir: PathLike | None = None,
           features: PathLike | np.ndarray | None = None, audio: PathLike | None = None,
           encoder: PathLike | None = None, checkpoint: PathLike | None = None, bundle: PathLike | None = None,
           backend: str = "auto", precision: str = "fp32", io: str = "tensor", mode: str | None = None,
           batch: int | None = None, start_frame: int = 0, max_frames: int | None = None, crf: int = 20,
           preset: str | None = None, skip_bad_boxes: bool = False, progress: bool = False,
           stats: PathLike | None = None, options: dict[str, Any] | None = None,
           note: Callable[[str], None] | None = None, warn: Callable[[str], None] | None = None) -> Any:
    """Render a lip-synced video: template frames in ping-pong order, one per feature row, through a backend, to an
    mp4 (H.264 + AAC of ``audio``) and/or a folder of PNGs. Returns :class:`framegen.toolkit.frames.render.RenderStats`.

    ``template``: a template folder (``full_body_img/`` + ``landmarks/``) or a ``PreparedTemplate``. Features come
    from ``features`` (a ``.npy`` / ``.bin`` file or an array, one row per video frame) or are computed from
    ``audio`` with the ``encoder`` (a .pth checkpoint or an exported encoder) or, without one, the bundle's own
    exported audio encoder. The model comes from ``checkpoint`` or ``bundle``; ``backend`` is a
    registry name or ``auto``, ``io`` ``tensor`` or ``image`` (the bundle's image-I/O variant). Everything is
    checked before the first frame; outputs appear (renamed from temporary names) only when complete.
    ``stats``: also write the timing stats as JSON there. ``note`` / ``warn`` receive progress lines.
    """
    from framegen.toolkit.frames.render import render as run_render

    if out is None and frames_dir is None:
        raise UsageError("render: give --out OUT.mp4 and/or --frames-dir DIR")
    if audio is not None and out is None:
        raise UsageError("render: --audio is muxed into the video, which needs --out")
    _check_sources(checkpoint, bundle, features, audio, encoder)
    _exists(template=template if not hasattr(template, "template") else None)
    _check_outputs(out, frames_dir, stats)
    prepared = _template(template, skip_bad_boxes, warn)
    checkpoint, bundle = _loaded(checkpoint, bundle)
    with _open(backend, precision, io, checkpoint, bundle, mode, options) as be:
        if be.info.extra.get("mode_note") and note is not None:
            note(str(be.info.extra["mode_note"]))
        feats = _features(be.mode, features, audio, encoder, note, bundle=bundle)
        if note is not None:
            note(f"{be.name} ({be.info.device}, {be.info.precision}, mode {be.mode}, {be.io} I/O); {len(prepared)} "
                 f"template frames {prepared.template.width}x{prepared.template.height}; {feats.shape[0]} feature "
                 f"rows")
        result = run_render(prepared, feats, be, out=out, frames_dir=frames_dir, batch=batch,
                            start_frame=start_frame, max_frames=max_frames, audio_path=audio, progress=progress,
                            crf=crf, preset=preset or DEFAULT_PRESET)
    audio_s = result.encoder.get("audio_seconds")
    video_s = result.frames / result.encoder["fps"] if result.encoder.get("fps") else None
    if warn is not None and audio_s is not None and video_s is not None and audio_s + 0.5 < video_s:
        warn(f"{audio}: {audio_s:.2f} s of audio for {video_s:.2f} s of video; the end is silent")
    if stats is not None:
        write_json(stats, result.as_dict())
    return result


# ----------------------------------------------------------------------------------------------------- demo

def demo(out: PathLike = "framegen-demo", *, seconds: float | None = None, seed: int = 0, quick: bool = False,
         weights: str = "trained", progress: bool = False, log: Callable[[str], None] | None = None) -> Any:
    """The embedded default, end to end from nothing but code: a synthetic template, the trained demo generator
    (``weights="random"``: a calibrated seeded stand-in), speech, features, a render, a bundle, a video per
    available backend and the parity table. ``quick``: a small template, ONNX only, 2 parity frames. ``log`` gets
    one line per step. Returns the :class:`framegen.toolkit.demo.DemoContext` (artifacts, results, ``exit_code``)."""
    if quick:
        ctx = quick_context(Path(out), seconds=seconds or 1.0, seed=seed, progress=progress, weights=weights)
    else:
        ctx = DemoContext(out=Path(out), seconds=seconds or DEFAULT_SECONDS, seed=seed, progress=progress,
                          weights=weights)
    return run_demo(ctx, log=log)


# ----------------------------------------------------------------------------------------------------- parity

def parity(*, bundle: PathLike, checkpoint: PathLike, template: PathLike | Any,
           features: PathLike | None = None, audio: PathLike | None = None, encoder: PathLike | None = None,
           backends: str | None = None, frames: int = 8, silence_frames: int = 1, start_frame: int = 0,
           batch: int | None = None, heatmaps: PathLike | None = None, skip_bad_boxes: bool = False,
           progress: bool = False, tolerances: str = "derived", tolerance: Sequence[str] = (),
           profile: PathLike | None = None, locate: bool | None = None, save_outputs: PathLike | None = None,
           load_outputs: Sequence[PathLike] = (), json: PathLike | None = None, triton_url: str | None = None,
           junit_xml: PathLike | None = None, markdown: PathLike | None = None, html: PathLike | None = None) -> Any:
    """Render the same frames (speech, then ``silence_frames`` silent ones) through PyTorch fp32 (the reference)
    and every candidate backend x artifact, and compare model outputs and final frames. Returns a
    :class:`framegen.toolkit.parity.engine.ParityReport`; ``report.passed`` is the verdict.

    ``backends``: ``NAME[:precision][:image],...`` (default: the planner's choice). ``tolerances``: ``derived``
    (measured on this checkpoint, cached) or ``fixed``; ``tolerance``: ``STAGE.METRIC=VALUE`` overrides, ``profile``
    a TOML/JSON file of them. ``locate``: the ``layers`` stage (every layer of each ONNX / Core ML artifact against
    PyTorch) runs unless ``False``; ``True`` prints every per-layer table, not only failed candidates'.
    ``save_outputs`` / ``load_outputs``: judge one machine's outputs on another.
    ``json``: also write the report there; ``junit_xml`` (one test case per candidate x stage) and ``markdown``
    (a summary, also appended to ``$GITHUB_STEP_SUMMARY`` when set) for CI; ``html``: one self-contained page
    (verdict, tolerances and their sources, per candidate the metrics, the worst frame's heat map and the per-layer
    error plot). ``triton_url``: the server the
    ``triton`` backend runs on. See docs/PARITY.md.
    """
    _exists(bundle=bundle, checkpoint=checkpoint)
    _check_outputs(None, None, json, junit_xml, markdown, html)
    options = _triton_options(triton_url)
    import tempfile

    scratch = tempfile.TemporaryDirectory(prefix="framegen-heatmaps-") if html is not None and heatmaps is None \
        else None
    prepared = _template(template, skip_bad_boxes)
    try:
        report = parity_job(bundle=bundle, checkpoint=checkpoint, template=prepared, features=features, audio=audio,
                            encoder=encoder, backends=backends, frames=frames, silence_frames=silence_frames,
                            start_frame=start_frame, batch=batch,
                            heatmaps=scratch.name if scratch is not None else heatmaps, progress=progress,
                            tolerances=tolerances, tolerance=list(tolerance), profile=profile, locate=locate,
                            save_outputs=save_outputs, load_outputs=list(load_outputs),
                            json=json if scratch is None else None, options=options)
        if html is not None:
            _write_html(report, html)
    finally:
        if scratch is not None:
            scratch.cleanup()
    if scratch is not None:  # the heat maps live in the HTML page only
        for cand in report.candidates:
            cand.heatmap = cand.heatmap_output = None
        if json is not None:
            write_json(json, report.as_dict())
    _ci_reports(report, "parity", junit_xml, markdown)
    return report


def _write_html(report: Any, path: PathLike) -> None:
    """The parity report as one self-contained HTML page (its heat maps embedded)."""
    write_text_atomic(path, parity_html(report.as_dict()))


def _triton_options(url: str | None) -> dict[str, Any] | None:
    """The backends' options that name a Triton server (checked), or ``None``."""
    if url is None:
        return None

    parse_url(url)
    return {"triton_url": str(url)}


def _ci_reports(report: Any, kind: str, junit_xml: PathLike | None, markdown: PathLike | None) -> None:
    """JUnit XML and Markdown of a parity or golden report (from its JSON form: one verdict in every format)."""
    want_md = markdown is not None or bool(os.environ.get(reports.STEP_SUMMARY))
    if junit_xml is None and not want_md:
        return
    data = report.as_dict()
    if kind == "parity":
        junit = reports.parity_junit(data) if junit_xml is not None else None
        md = reports.parity_markdown(data) if want_md else None
    else:
        junit = reports.golden_junit(data) if junit_xml is not None else None
        md = reports.golden_markdown(data) if want_md else None
    reports.write_reports(junit, md, junit_path=junit_xml, markdown_path=markdown)


# ----------------------------------------------------------------------------------------------------- golden

def golden_write(*, bundle: PathLike, template: PathLike | Any, out: PathLike, features: PathLike | None = None,
                 audio: PathLike | None = None, encoder: PathLike | None = None, cases: int = 3,
                 checkpoint: PathLike | None = None, start_frame: int = 0, force: bool = False) -> Path:
    """Write golden vectors for ports: every pipeline stage of ``cases`` frames as raw little-endian files plus
    ``index.json`` and a README. The model output comes from ``checkpoint`` (PyTorch) or, by default, the bundle's
    fp32 ONNX generator on ort-cpu. Returns the golden directory."""
    checkpoint, b = _loaded(checkpoint, bundle)
    audio_input = resolve_audio_input(b.mode, features, audio, encoder)
    source = None if audio_input.mel_windows is None else AudioSource(audio_input.mel_windows, audio_input.source)
    prepared = _template(template)
    return Path(write_golden(b, prepared, audio_input.features, out, cases=cases, start_frame=start_frame,
                             checkpoint=checkpoint, audio=source, force=force,
                             source={"template": os.fspath(prepared.template.root), **audio_input.source}))


def golden_check(golden: PathLike, candidate: PathLike, *, profile: str = "fp32", bundle: PathLike | None = None,
                 json: PathLike | None = None, junit_xml: PathLike | None = None,
                 markdown: PathLike | None = None) -> Any:
    """Compare a port's stage files (in the golden layout) with the golden ones, stage by stage, each judged on the
    candidate's own inputs to it; with ``bundle`` the model too (its artifact run on the candidate's model input).
    Returns a :class:`framegen.toolkit.parity.golden.GoldenReport`: ``.passed``, and the first stage that departs."""
    _check_outputs(None, None, json, junit_xml, markdown)
    report = check_golden(golden, candidate, profile=profile, bundle=bundle)
    _ci_reports(report, "golden", junit_xml, markdown)
    if json is not None:
        write_json(json, report.as_dict())
    return report


# ----------------------------------------------------------------------------------------------------- bench

def bench_stream(*, template: PathLike, bundle: PathLike | None = None, checkpoint: PathLike | None = None,
                 backends: str | Sequence[str] | None = None, precision: str = "fp32", audio: PathLike | None = None,
                 encoder: PathLike | None = None, seconds: float = 4.0, chunk_ms: float = 40.0,
                 json: PathLike | None = None, on_result: Callable[[dict[str, Any]], None] | None = None
                 ) -> dict[str, Any]:
    """Live-stream latency (p50/p99 from a frame's last audio sample to its frame) and real-time factor per backend,
    paced at real time: ``seconds`` of ``audio`` (default: synthetic speech) in ``chunk_ms`` chunks through
    ``template``. Returns the report dict (the schema of ``framegen bench --stream --json``)."""
    _check_outputs(None, None, json)

    checkpoint, bundle = _loaded(checkpoint, bundle)
    report = run_bench_stream(template=template, bundle=bundle, checkpoint=checkpoint,
                              backends=_split(backends) if backends is not None else None, precision=precision,
                              audio=audio, encoder=encoder, seconds=seconds, chunk_ms=chunk_ms, on_result=on_result)
    if json is not None:
        write_json(json, report)
    return report


def bench_triton(triton_url: str, *, streams: str | Sequence[int] | None = None, seconds: float = 8.0,
                 requests: int | None = None, frames_per_request: int = 1, mode: str | None = None,
                 json: PathLike | None = None, on_result: Callable[[dict[str, Any]], None] | None = None
                 ) -> dict[str, Any]:
    """Throughput, latency and server-side batching of a Triton server hosting the generator, at each number of
    concurrent client streams (default 1, 4, 8). Returns the report dict (``framegen bench --backends triton``)."""
    _triton_options(triton_url)
    _check_outputs(None, None, json)
    counts = DEFAULT_STREAMS if streams is None else parse_streams(streams)
    report = run_triton_bench(triton_url, streams=counts, seconds=seconds, requests=requests,
                              frames_per_request=frames_per_request, mode=mode, on_result=on_result)
    if json is not None:
        write_json(json, report)
    return report


def bench(*, checkpoint: PathLike | None = None, bundle: PathLike | None = None,
          backends: str | Sequence[str] | None = None, precisions: str | Sequence[str] | None = None,
          batches: str | Sequence[int] | None = None, iterations: int | None = None, warmup: int = 3,
          seconds: float = 8.0, mode: str | None = None, template: PathLike | None = None,
          features: PathLike | None = None, e2e_frames: int | None = 100, e2e_batch: int | None = None,
          json: PathLike | None = None, on_result: Callable[[str, dict[str, Any]], None] | None = None,
          html: PathLike | None = None) -> dict[str, Any]:
    """Benchmark every planned backend x precision x batch (latency p50/p90/p99, fps, GFLOP/s against the machine's
    peak, memory); with ``template`` + ``features`` also one end-to-end render each. Returns the report dict (the
    schema of ``framegen bench --json``). ``html``: also a self-contained page plotting the latency percentiles and
    the batch sweep."""
    _check_outputs(None, None, json, html)

    batch_list = parse_batches(batches) if isinstance(batches, str) else (list(batches) if batches else None)
    checkpoint, bundle = _loaded(checkpoint, bundle)
    report = run_bench(checkpoint=checkpoint, bundle=bundle,
                       backends=_split(backends) if backends is not None else None,
                       precisions=_split(precisions) if precisions is not None else None, batches=batch_list,
                       iterations=iterations, warmup=warmup, seconds=seconds, mode=mode, template=template,
                       features=features, e2e_frames=e2e_frames if e2e_frames is not None else DEFAULT_E2E_FRAMES,
                       e2e_batch=e2e_batch, on_result=on_result)
    if json is not None:
        write_json(json, report)
    if html is not None:
        write_text_atomic(html, bench_html(report))
    return report


# ----------------------------------------------------------------------------------------------------- serve

def serve(bundle: PathLike, *, backend: str = "auto", precision: str = "fp32", host: str = "127.0.0.1",
          http_port: int = 8000, grpc_port: int = 8001, metrics_port: int = 8002, max_batch: int = 16,
          preferred_batch: str | Sequence[int] | None = None, queue_delay_us: int = 2000, exit_timeout: int = 5,
          log_file: PathLike | None = None, on_ready: Callable[[Any], None] | None = None, stop: Any = None) -> int:
    """Serve a bundle's generator and audio encoder on NVIDIA Triton Inference Server (dynamic batching, KServe v2
    HTTP / gRPC, metrics) through a framegen backend, until SIGTERM / SIGINT, which drain in-flight requests;
    returns 0, or 1 when requests were still open at the ``exit_timeout``. A port of 0 picks a free one;
    ``on_ready`` receives a :class:`framegen.toolkit.serve.ServerInfo`
    (ports, ``grpc_url``) once the models answer; ``stop`` (a ``threading.Event``) stops a server run in a thread.
    Needs ``pip install 'framegen[serve]'``. See :func:`framegen.toolkit.serve.serve`."""
    if preferred_batch is None:
        sizes = tuple(b for b in (4, 8, 16) if b <= max_batch)
    elif isinstance(preferred_batch, str):
        try:
            sizes = tuple(int(v) for v in preferred_batch.split(",") if v.strip())
        except ValueError:
            raise UsageError(f"--preferred-batch {preferred_batch!r}: expected comma-separated integers, "
                             f"e.g. 4,8,16") from None
    else:
        sizes = tuple(int(v) for v in preferred_batch)
    options = ServeOptions(max_batch_size=max_batch, preferred_batch_sizes=sizes, max_queue_delay_us=queue_delay_us,
                           exit_timeout_s=exit_timeout)
    return run_serve(bundle, backend=backend, precision=precision, host=host, http_port=http_port,
                     grpc_port=grpc_port, metrics_port=metrics_port, options=options, log_file=log_file,
                     on_ready=on_ready, stop=stop)


def export_audio_frontend(audio_encoder: PathLike, out: PathLike, *, formats: str | Sequence[str] = ("onnx", "coreml"),
                          opset: int | None = None, force: bool = False, speech: PathLike | None = None,
                          progress: Callable[[str], None] | None = None) -> Any:
    """Export SyncTalk_2D's audio front-end for an audio encoder checkpoint: ``audio_frontend`` (16 kHz PCM -> mel)
    and ``audio_features`` (PCM -> 'ave' features), ONNX and / or Core ML fp32, validated against framegen's mel and
    features (``speech``: the speech file validation uses; default the shared fixture, else synthetic). Returns the
    written :class:`framegen.models.bundle.Bundle`. ``framegen export --audio-frontend`` adds the same artifacts to a
    full bundle."""
    from framegen.toolkit.export.frontend import export_audio_frontend as _export

    return load_bundle(_export(audio_encoder, out, formats=_split(formats), opset=opset, force=force, speech=speech,
                               progress=progress))


# ----------------------------------------------------------------------------------------------------- stream

def stream_session(template: PathLike | Any, *, checkpoint: PathLike | None = None, bundle: PathLike | None = None,
                   encoder: PathLike | None = None, backend: str = "auto", precision: str = "fp32",
                   batch: int = 1, start_frame: int = 0, input_rate: int = 16000, skip_bad_boxes: bool = False,
                   options: dict[str, Any] | None = None) -> Any:
    """Open a live :class:`framegen.toolkit.frames.stream.StreamSession`: ``feed(samples)`` 16 kHz mono float32 / int16
    chunks of any size (``input_rate`` others are resampled), get rendered frames back as soon as their audio
    context is complete (``StreamFrame``: ``i``, ``time`` = i/25 s, ``frame`` BGR uint8); ``finish()`` flushes the
    end. Frames equal :func:`render`'s of the same whole audio bit for bit. The audio encoder is ``encoder`` (.pth,
    .onnx, .mlpackage) or the bundle's exported one. Closing the session closes its backend."""
    from framegen.toolkit.frames.stream import StreamSession

    if (checkpoint is None) == (bundle is None):
        raise UsageError("stream: give exactly one of --checkpoint CKPT or --bundle DIR")
    _exists(checkpoint=checkpoint, bundle=bundle, encoder=encoder)
    encode, _ = resolve_encoder(encoder=encoder, bundle=bundle)
    prepared = _template(template, skip_bad_boxes)
    be = _open(backend, precision, "tensor", checkpoint, bundle, None, options)
    try:
        session = StreamSession(prepared, be, encode, start_frame=start_frame, batch=batch, input_rate=input_rate)
    except BaseException:
        be.close()
        raise
    session.owned_backend = be
    return session


def stream(template: PathLike | Any, *, audio: PathLike | str, out: PathLike | None = None,
           frames_dir: PathLike | None = None, checkpoint: PathLike | None = None, bundle: PathLike | None = None,
           encoder: PathLike | None = None, backend: str = "auto", precision: str = "fp32", chunk_ms: float = 40.0,
           realtime: bool = False, batch: int = 1, start_frame: int = 0, crf: int = 20, preset: str | None = None,
           skip_bad_boxes: bool = False, stats: PathLike | None = None, options: dict[str, Any] | None = None,
           note: Callable[[str], None] | None = None, warn: Callable[[str], None] | None = None) -> Any:
    """Play ``audio`` (a file, or ``"-"``: raw s16le 16 kHz mono PCM on stdin) as a live source in chunks of
    ``chunk_ms`` (paced at real time with ``realtime``) through a streaming session, writing an mp4 with the audio
    in sync (frame k at k/25 s) and/or PNGs, atomically. Returns :class:`framegen.toolkit.frames.stream.StreamRunStats`
    (frames, RTF, latency p50/p99 from the arrival of the chunk that completed each frame's context)."""
    from framegen.toolkit.frames.stream import chunk_samples, iter_audio_file, stdin_chunks, stream_to_files

    if out is None and frames_dir is None:
        raise UsageError("stream: give --out OUT.mp4 and/or --frames-dir DIR")
    if (checkpoint is None) == (bundle is None):
        raise UsageError("stream: give exactly one of --checkpoint CKPT or --bundle DIR")
    from_stdin = os.fspath(audio) == "-"
    _exists(checkpoint=checkpoint, bundle=bundle, encoder=encoder, audio=None if from_stdin else audio,
            template=template if not hasattr(template, "template") else None)
    _check_outputs(out, frames_dir)
    chunk = chunk_samples(chunk_ms)
    encode, label = resolve_encoder(encoder=encoder, bundle=bundle)
    prepared = _template(template, skip_bad_boxes, warn)
    with _open(backend, precision, "tensor", checkpoint, bundle, None, options) as be:
        if note is not None:
            note(f"{be.name} ({be.info.device}, {be.info.precision}); audio encoder {label}; chunks of {chunk} "
                 f"samples ({chunk / 16:.1f} ms){', paced at real time' if realtime else ''}")
        chunks = stdin_chunks(chunk) if from_stdin else iter_audio_file(audio, chunk)
        result = stream_to_files(prepared, be, encode, chunks, out=out, frames_dir=frames_dir, realtime=realtime,
                                 start_frame=start_frame, batch=batch, crf=crf, preset=preset,
                                 chunk_samples=chunk)
    if stats is not None:
        write_json(stats, result.as_dict())
    return result
