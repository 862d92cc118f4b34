"""`framegen stream`: play speech (a file, or s16le PCM on stdin) as a live source through a streaming session."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from framegen.models.contract import LATENCY_BUDGET_MS
from framegen.toolkit.common.console import note, out, warn


def register(app: typer.Typer) -> None:
    """Add the `stream` command."""
    app.command("stream")(stream)


def stream(
    template: Annotated[Path, typer.Option("--template", "-t", help="Template folder (full_body_img/ + landmarks/).")],
    audio: Annotated[str, typer.Option(
        "--audio", "-a", help="Speech file (any format PyAV reads), or - for raw s16le 16 kHz mono PCM on stdin.")],
    out_path: Annotated[Path | None, typer.Option("--out", "-o", help="Output video (.mp4, .mov, .mkv).")] = None,
    frames_dir: Annotated[Path | None, typer.Option(
        "--frames-dir", help="Also (or instead) write lossless PNG frames 000000.png, ... here.")] = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", "-c", help="SyncTalk_2D generator .pth.")] = None,
    bundle: Annotated[Path | None, typer.Option("--bundle", "-b", help="An exported framegen bundle folder.")] = None,
    encoder: Annotated[Path | None, typer.Option(
        "--encoder", help="Audio encoder (.pth, .onnx or .mlpackage); default: the bundle's exported one.")] = None,
    backend: Annotated[str, typer.Option("--backend", help="Backend name (see `framegen backends`) or auto.")]
    = "auto",
    precision: Annotated[str | None, typer.Option("--precision", help=(
        "fp32, fp16, bf16, int8 (backends and bundles that offer it) or auto (the fastest one this CPU computes "
        "natively whose quality the bundle's export proved; the default with --realtime, else fp32)."))] = None,
    chunk_ms: Annotated[float, typer.Option("--chunk-ms", help=(
        "Feed the audio in chunks of this many ms (live sources send 10-20 ms packets; smaller chunks, lower "
        "latency)."))] = 20.0,
    realtime: Annotated[bool, typer.Option("--realtime", help=(
        "Live: pace the chunks at real time, measure at start-up whether the backend keeps up, and hold frames "
        "(repeat the previous one) rather than fall behind the speech."))] = False,
    latency_budget_ms: Annotated[float, typer.Option("--latency-budget-ms", min=0.0, help=(
        "With --realtime: hold (repeat the previous frame) any frame that would leave more than this many ms after "
        "its own audio lookahead, and run the model's layout that can keep it; 0: no budget, every frame that a "
        "worker is free for is shown, however late."))] = LATENCY_BUDGET_MS,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Frames per inference call (the render's grid).")]
    = 1,
    start_frame: Annotated[int, typer.Option("--start-frame", min=0, help="First template frame of the "
                                             "ping-pong walk.")] = 0,
    stats_path: Annotated[Path | None, typer.Option("--stats", help="Write stream stats as JSON here.")] = None,
    crf: Annotated[int, typer.Option("--crf", min=0, max=51, help="x264 constant rate factor.")] = 20,
    skip_bad_boxes: Annotated[bool, typer.Option(
        "--skip-bad-boxes", help="Leave out template frames whose crop box leaves the frame instead of failing.")]
    = False,
) -> None:
    """Stream speech through a model: frames leave as soon as their audio context is complete, identical to
    `framegen render` of the same audio; the mp4 carries the audio in sync (frame k at k/25 s)."""
    from framegen.toolkit.api import stream as api_stream

    stats = api_stream(template, audio=audio, out=out_path, frames_dir=frames_dir, checkpoint=checkpoint,
                       bundle=bundle, encoder=encoder, backend=backend,
                       precision=precision or ("auto" if realtime else "fp32"), chunk_ms=chunk_ms,
                       realtime=realtime, batch=batch, start_frame=start_frame, crf=crf,
                       skip_bad_boxes=skip_bad_boxes, stats=stats_path, latency_budget_ms=latency_budget_ms,
                       note=note, warn=warn)
    lat = stats.latency_ms
    targets = ", ".join(t for t in (stats.out, f"{stats.frames_dir}/" if stats.frames_dir else None) if t)
    head = f"{stats.frames} frames ({stats.audio_seconds:.2f} s of audio) in {stats.seconds:.2f} s"
    if stats.realtime:
        # Paced, the wall time is the audio's plus the end's flush: the RTF says nothing about keeping up, the
        # latency beyond each frame's lookahead (issue 28's bound: two frame-times) and the frames held do.
        fl, beyond = stats.frame_latency_ms, stats.beyond_lookahead_ms
        late = stats.session.get("held_late_frames", 0)
        behind = stats.seconds - stats.audio_seconds - stats.end_flush_ms / 1000.0
        line = (f"{head}, paced at real time (RTF {stats.rtf:.2f} with the end's flush of {stats.end_frames} "
                f"frame(s){f'; fell {behind:.1f} s behind the speech' if behind > 0.5 else ''}); beyond each "
                f"frame's audio lookahead p50 {beyond['p50']:.0f} ms, p99 {beyond['p99']:.0f} ms (bound "
                f"{LATENCY_BUDGET_MS:.0f}); from its own time p50 {fl['p50']:.0f} ms, p99 {fl['p99']:.0f} ms; "
                f"{stats.held_frames} frame(s) held" + (f" ({late} of them would have been late)" if late else ""))
    else:
        line = (f"{head} (RTF {stats.rtf:.2f}{', slower than real time' if stats.rtf > 1.0 else ''}); latency "
                f"after the context p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms")
    out.print(f"{line} -> {targets}", markup=False, soft_wrap=True)
    if not stats.session.get("exact", True):
        warn(f"the incremental mel/encoder differed from the offline path (mel rows "
             f"{stats.session['mel_mismatch_rows']}, windows {stats.session['encoder_mismatch_windows']})")
