"""`framegen render`: a template + speech (or features) through a backend to an mp4 with sound and/or PNG frames."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from framegen.models.errors import FramegenError
from framegen.toolkit.console import note, out, warn


class RenderUsageError(FramegenError):
    """Options of `framegen render` that do not fit together or name missing files."""


def register(app: typer.Typer) -> None:
    """Add the `render` command."""
    app.command("render")(render)


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}" if n < 10 else f"{n:.0f} {unit}"
        n /= 1000
    return f"{n} B"


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def summary_line(stats: Any) -> str:
    """``1497 frames in 2:30 (9.95 fps) -> out.mp4 (45 MB)`` (and the PNG folder when written)."""
    targets = []
    if stats.out is not None:
        targets.append(f"{stats.out} ({_human_bytes(stats.out_bytes or 0)})")
    if stats.frames_dir is not None:
        targets.append(f"{stats.frames_dir}/ ({stats.frames} PNGs)")
    return f"{stats.frames} frames in {_clock(stats.seconds)} ({stats.fps:.2f} fps) -> {', '.join(targets)}"


def render(
    template: Annotated[Path, typer.Option("--template", "-t", help="Template folder (full_body_img/ + landmarks/).")],
    features: Annotated[Path | None, typer.Option(
        "--features", "-f", help="Audio features (.npy, or raw float32 .bin), one row per video frame.")] = None,
    audio: Annotated[Path | None, typer.Option(
        "--audio", "-a", help="Speech to mux into the video (and, with --encoder, to compute 'ave' features from).")]
    = None,
    encoder: Annotated[Path | None, typer.Option(
        "--encoder", help="SyncTalk_2D audio_visual_encoder.pth: compute 'ave' features from --audio.")] = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", "-c", help="SyncTalk_2D generator .pth.")] = None,
    bundle: Annotated[Path | None, typer.Option("--bundle", "-b", help="An exported framegen bundle folder.")] = None,
    backend: Annotated[str, typer.Option("--backend", help="Backend name (see `framegen backends`) or auto.")]
    = "auto",
    precision: Annotated[str, typer.Option("--precision", help="fp32 or fp16 (backends that offer it).")] = "fp32",
    mode: Annotated[str | None, typer.Option(
        "--mode", help="Generator mode ave|hubert|wenet when the checkpoint cannot tell (default: detected).")] = None,
    out_path: Annotated[Path | None, typer.Option("--out", "-o", help="Output video (.mp4, .mov, .mkv).")] = None,
    frames_dir: Annotated[Path | None, typer.Option(
        "--frames-dir", help="Also (or instead) write lossless PNG frames 000000.png, ... here.")] = None,
    batch: Annotated[int | None, typer.Option("--batch", min=1, help="Frames per inference call "
                                              "(default: the backend's).")] = None,
    start_frame: Annotated[int, typer.Option("--start-frame", min=0, help="First template frame of the "
                                             "ping-pong walk.")] = 0,
    max_frames: Annotated[int | None, typer.Option("--max-frames", min=1, help="Render at most N frames.")] = None,
    stats_path: Annotated[Path | None, typer.Option("--stats", help="Write timing stats as JSON here.")] = None,
    crf: Annotated[int, typer.Option("--crf", min=0, max=51, help="x264 constant rate factor (lower = better).")]
    = 20,
    preset: Annotated[str | None, typer.Option("--preset", help="x264 preset (default: chosen for 2 cores).")]
    = None,
    skip_bad_boxes: Annotated[bool, typer.Option(
        "--skip-bad-boxes", help="Leave out template frames whose crop box leaves the frame instead of failing.")]
    = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")] = True,
) -> None:
    """Render a lip-synced video: template frames in ping-pong order, one per feature row, through a backend.

    Everything (options, template, model, features, audio, output paths) is checked before the first frame.
    """
    from framegen.toolkit.video import DEFAULT_PRESET, check_frames_dir, container_format

    if out_path is None and frames_dir is None:
        raise RenderUsageError("render: give --out OUT.mp4 and/or --frames-dir DIR")
    if (checkpoint is None) == (bundle is None):
        raise RenderUsageError("render: give exactly one of --checkpoint CKPT or --bundle DIR")
    if (features is None) == (encoder is None):
        raise RenderUsageError("render: give --features F, or --audio A with --encoder ENC to compute them")
    if encoder is not None and audio is None:
        raise RenderUsageError("render: --encoder computes features from --audio; --audio is missing")
    if audio is not None and out_path is None:
        raise RenderUsageError("render: --audio is muxed into the video, which needs --out")
    for label, path in (("--template", template), ("--features", features), ("--audio", audio),
                        ("--encoder", encoder), ("--checkpoint", checkpoint), ("--bundle", bundle)):
        if path is not None and not path.exists():
            raise RenderUsageError(f"{label} {path}: no such file or folder")
    if out_path is not None:
        container_format(out_path)
        if not out_path.parent.is_dir():
            raise RenderUsageError(f"--out {out_path}: folder {out_path.parent} does not exist")
    if frames_dir is not None:
        check_frames_dir(frames_dir)

    from framegen.runtimes.registry import open_backend, pipeline_options, resolve_auto
    from framegen.runtimes.spec import OpenRequest
    from framegen.toolkit.files import write_json
    from framegen.toolkit.preprocess import PreparedTemplate
    from framegen.toolkit.render import check_render
    from framegen.toolkit.render import render as run_render
    from framegen.toolkit.template import open_template

    prepared = PreparedTemplate(open_template(template), skip_bad_boxes=skip_bad_boxes)
    for message in [*prepared.template.warnings, *prepared.warnings]:
        warn(message)
    request = OpenRequest(checkpoint=checkpoint, bundle=bundle, precision=precision, mode=mode)
    name = resolve_auto(request) if backend == "auto" else backend
    request.options.update(pipeline_options(name))
    with open_backend(name, request) as be:
        if be.info.extra.get("mode_note"):
            note(str(be.info.extra["mode_note"]))
        feats = _features(features, audio, encoder, be.mode)
        check_render(prepared, feats, be, batch=batch, start_frame=start_frame, max_frames=max_frames)
        note(f"{name} ({be.info.device}, {be.info.precision}, mode {be.mode}); {len(prepared)} template frames "
             f"{prepared.template.width}x{prepared.template.height}; {feats.shape[0]} feature rows")
        stats = run_render(prepared, feats, be, out=out_path, frames_dir=frames_dir, batch=batch,
                           start_frame=start_frame, max_frames=max_frames, audio_path=audio, progress=progress,
                           crf=crf, preset=preset or DEFAULT_PRESET)
    audio_s = stats.encoder.get("audio_seconds")
    video_s = stats.frames / stats.encoder["fps"] if stats.encoder.get("fps") else None
    if audio_s is not None and video_s is not None and audio_s + 0.5 < video_s:
        warn(f"{audio}: {audio_s:.2f} s of audio for {video_s:.2f} s of video; the end is silent")
    if stats_path is not None:
        write_json(stats_path, stats.as_dict())
    out.print(summary_line(stats), markup=False, soft_wrap=True)


def _features(features: Path | None, audio: Path | None, encoder: Path | None, mode: str) -> Any:
    """Features from a file, or computed from the speech with the audio encoder ('ave' only)."""
    from framegen.toolkit.features import FeatureError, load_features

    if features is not None:
        return load_features(features, mode)
    if mode != "ave":
        raise FeatureError(f"--encoder computes 'ave' features; the generator is {mode!r}: give --features")
    from framegen.models.checkpoint import load_audio_encoder
    from framegen.toolkit.audio import audio_to_features, torch_encoder_fn

    note(f"computing 'ave' features from {audio} with {encoder}")
    return audio_to_features(audio, torch_encoder_fn(load_audio_encoder(encoder)), progress=False)
