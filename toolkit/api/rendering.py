"""The API's renders: offline (file or frames), live (a session or a played source), and the demo."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from framegen.models.contract import LATENCY_BUDGET_MS
from framegen.toolkit.api.common import (
    PathLike,
    UsageError,
    check_exists,
    check_outputs,
    check_sources,
    features_for,
    latency_budget,
    loaded_sources,
    open_backend_for,
    prepared_template,
)
from framegen.toolkit.common.files import write_json
from framegen.toolkit.demo import DEFAULT_SECONDS, DemoContext, quick_context, run_demo
from framegen.toolkit.frames.plan import render_workers
from framegen.toolkit.frames.stream import LIVE_OPTIONS, choose_live_layout
from framegen.toolkit.frames.video import DEFAULT_PRESET
from framegen.toolkit.inputs.audio import AudioError
from framegen.toolkit.inputs.encoders import resolve_encoder


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

    check_sources(checkpoint, bundle, features, audio, encoder)
    prepared = prepared_template(template, skip_bad_boxes)
    checkpoint, bundle = loaded_sources(checkpoint, bundle)
    with open_backend_for(backend, precision, io, checkpoint, bundle, mode, options) as be:
        feats = features_for(be.mode, features, audio, encoder, bundle=bundle)
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
    check_sources(checkpoint, bundle, features, audio, encoder)
    check_exists(template=template if not hasattr(template, "template") else None)
    check_outputs(out, frames_dir, stats)
    prepared = prepared_template(template, skip_bad_boxes, warn)
    checkpoint, bundle = loaded_sources(checkpoint, bundle)
    with open_backend_for(backend, precision, io, checkpoint, bundle, mode, options) as be:
        if be.info.extra.get("mode_note") and note is not None:
            note(str(be.info.extra["mode_note"]))
        if be.info.extra.get("precision_choice") and note is not None:
            note(f"precision auto -> {be.info.extra['precision_choice']}")
        feats = features_for(be.mode, features, audio, encoder, note, bundle=bundle)
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
    check_exists(checkpoint=checkpoint, bundle=bundle, encoder=encoder)
    encode, _ = resolve_encoder(encoder=encoder, bundle=bundle)
    prepared = prepared_template(template, skip_bad_boxes)
    be = open_backend_for(backend, precision, "tensor", checkpoint, bundle, None, options)
    try:
        session = StreamSession(prepared, be, encode, start_frame=start_frame, batch=batch, input_rate=input_rate)
    except BaseException:
        be.close()
        raise
    session.owned_backend = be
    return session


def stream(template: PathLike | Any, *, audio: PathLike | str, out: PathLike | None = None,
           frames_dir: PathLike | None = None, checkpoint: PathLike | None = None, bundle: PathLike | None = None,
           encoder: PathLike | None = None, backend: str = "auto", precision: str = "fp32", chunk_ms: float = 20.0,
           realtime: bool = False, batch: int = 1, start_frame: int = 0, crf: int = 20, preset: str | None = None,
           skip_bad_boxes: bool = False, stats: PathLike | None = None, options: dict[str, Any] | None = None,
           latency_budget_ms: float | None = LATENCY_BUDGET_MS, note: Callable[[str], None] | None = None,
           warn: Callable[[str], None] | None = None) -> Any:
    """Play ``audio`` (a file, or ``"-"``: raw s16le 16 kHz mono PCM on stdin) as a live source in chunks of
    ``chunk_ms`` (paced at real time with ``realtime``) through a streaming session, writing an mp4 with the audio
    in sync (frame k at k/25 s) and/or PNGs, atomically. Returns :class:`framegen.toolkit.frames.stream.StreamRunStats`
    (frames, RTF, latency p50/p99 from the arrival of the chunk that completed each frame's context and, when
    ``realtime``, from each frame's own time, the start-up measurement and the frames held). ``realtime`` is a
    live stream: measured at start-up, and degrading (held frames) rather than drifting when the backend is too
    slow; ``latency_budget_ms`` (default two frame-times, 80 ms; ``None`` or 0: none) holds the frames that would
    leave later than that past their own audio lookahead, and picks the model's layout that can keep it.
    ``precision`` ``auto`` picks the fastest precision the bundle proved (``framegen.toolkit.bench.
    precision.choose_precision``)."""
    from framegen.toolkit.frames.stream import chunk_samples, iter_audio_file, stdin_chunks, stream_to_files

    if out is None and frames_dir is None:
        raise UsageError("stream: give --out OUT.mp4 and/or --frames-dir DIR")
    if (checkpoint is None) == (bundle is None):
        raise UsageError("stream: give exactly one of --checkpoint CKPT or --bundle DIR")
    from_stdin = os.fspath(audio) == "-"
    check_exists(checkpoint=checkpoint, bundle=bundle, encoder=encoder, audio=None if from_stdin else audio,
            template=template if not hasattr(template, "template") else None)
    check_outputs(out, frames_dir)
    budget = latency_budget(latency_budget_ms)
    chunk = chunk_samples(chunk_ms)
    encode, label = resolve_encoder(encoder=encoder, bundle=bundle)
    prepared = prepared_template(template, skip_bad_boxes, warn)
    wider_options = options
    choose_layout = realtime and "workers" not in (options or {})  # a user's own workers are kept as given
    if realtime:
        options = {**LIVE_OPTIONS, **(options or {})}
    layout = None
    with contextlib.ExitStack() as stack:
        be = stack.enter_context(open_backend_for(backend, precision, "tensor", checkpoint, bundle, None, options))
        if choose_layout:
            # a backend whose render layout is one inference at a time (torch-cpu) has nothing wider to try
            wider = render_workers(be.name) > 1
            be, layout = choose_live_layout(prepared, be, (lambda: stack.enter_context(open_backend_for(
                backend, precision, "tensor", checkpoint, bundle, None, wider_options))) if wider else None,
                start_frame=start_frame, latency_budget_ms=budget)
            budget = layout.latency_budget_ms
            if note is not None:
                note(f"live layout: {layout.note}")
        if note is not None:
            if be.info.extra.get("precision_choice"):
                note(f"precision auto -> {be.info.extra['precision_choice']}")
            note(f"{be.name} ({be.info.device}, {be.info.precision}); audio encoder {label}; chunks of {chunk} "
                 f"samples ({chunk / 16:.1f} ms){', live: paced at real time' if realtime else ''}")
        chunks = stdin_chunks(chunk) if from_stdin else iter_audio_file(audio, chunk)

        def start(s: dict[str, Any]) -> None:
            say = note if s["keeps_up"] else (warn or note)
            if say is not None:
                say(s["note"])
        try:
            result = stream_to_files(prepared, be, encode, chunks, out=out, frames_dir=frames_dir,
                                     realtime=realtime, start_frame=start_frame, batch=batch, crf=crf,
                                     preset=preset, chunk_samples=chunk, on_start=start, latency_budget_ms=budget)
        except AudioError as exc:  # the session sees samples, not their source: name it here
            source = "stdin" if from_stdin else os.fspath(audio)
            if str(exc).startswith(source):
                raise
            raise AudioError(f"{source}: {exc}") from None
    if layout is not None:
        result.layout = asdict(layout)
    if stats is not None:
        write_json(stats, result.as_dict())
    return result


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
