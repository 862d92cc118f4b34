"""`framegen render`: a template + speech (or features) through a backend to an mp4 with sound and/or PNG frames."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from framegen.toolkit.common.console import note, out, warn


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
        "--audio", "-a", help="Speech to mux into the video; without --features, 'ave' features are computed from it "
                              "(with --encoder, or the bundle's own exported audio encoder).")]
    = None,
    encoder: Annotated[Path | None, typer.Option(
        "--encoder", help="Audio encoder for --audio: SyncTalk_2D audio_visual_encoder.pth or an exported .onnx / "
                          ".mlpackage (default with --bundle: the bundle's own).")] = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", "-c", help="SyncTalk_2D generator .pth.")] = None,
    bundle: Annotated[Path | None, typer.Option("--bundle", "-b", help="An exported framegen bundle folder.")] = None,
    backend: Annotated[str, typer.Option("--backend", help="Backend name (see `framegen backends`) or auto.")]
    = "auto",
    precision: Annotated[str, typer.Option("--precision", help="fp32, fp16 or int8 (backends and bundles that "
                                           "offer it).")] = "fp32",
    io: Annotated[str, typer.Option("--io", help="Generator I/O variant: tensor (the contract's float tensors) or "
                                    "image (the bundle's uint8 image-I/O model).")] = "tensor",
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
    triton_url: Annotated[str | None, typer.Option(
        "--triton-url", help="With --backend triton: the server, grpc://HOST:PORT or http://HOST:PORT.")] = None,
) -> None:
    """Render a lip-synced video: template frames in ping-pong order, one per feature row, through a backend.

    Everything (options, template, model, features, audio, output paths) is checked before the first frame.
    """
    from framegen.toolkit.api import render as api_render

    options = None
    if triton_url is not None:
        from framegen.runtimes.triton_backend import parse_url

        parse_url(triton_url)
        options = {"triton_url": triton_url}
    stats = api_render(template, out=out_path, frames_dir=frames_dir, features=features, audio=audio,
                       encoder=encoder, checkpoint=checkpoint, bundle=bundle, backend=backend, precision=precision,
                       io=io, mode=mode, batch=batch, start_frame=start_frame, max_frames=max_frames, crf=crf,
                       preset=preset, skip_bad_boxes=skip_bad_boxes, progress=progress, stats=stats_path,
                       options=options, note=note, warn=warn)
    out.print(summary_line(stats), markup=False, soft_wrap=True)
