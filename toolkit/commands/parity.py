"""`framegen parity`: prove that a bundle's backends produce the PyTorch reference's frames."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the `parity` command."""
    app.command("parity")(parity)


def parity(
    bundle: Annotated[Path, typer.Option("--bundle", "-b", help="Bundle directory written by `framegen export`.")],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-c",
                                             help="The generator checkpoint the bundle was exported from.")],
    template: Annotated[Path, typer.Option("--template", "-t", help="Template directory (frames + landmarks).")],
    features: Annotated[Path | None, typer.Option("--features", "-f", help="Audio features (.npy or raw .bin).")]
    = None,
    audio: Annotated[Path | None, typer.Option("--audio", "-a", help="Audio file (with --encoder).")] = None,
    encoder: Annotated[Path | None, typer.Option("--encoder", "-e", help="Audio encoder checkpoint (with --audio).")]
    = None,
    backends: Annotated[str | None, typer.Option(
        "--backends", help="Comma-separated backends, each NAME[:fp32|fp16][:image] (image: the uint8 image-I/O "
                           "variant; default: every available backend x every generator artifact the bundle holds "
                           "that it runs).")] = None,
    frames: Annotated[int, typer.Option("--frames", "-n", min=1, help="Output frames to compare.")] = 8,
    start_frame: Annotated[int, typer.Option("--start-frame", min=0,
                                             help="Template frame the ping-pong walk starts at.")] = 0,
    batch: Annotated[int | None, typer.Option("--batch", min=1, help="Batch size (default: each backend's).")]
    = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the JSON report here.")] = None,
    heatmaps: Annotated[Path | None, typer.Option(
        "--heatmaps", help="Directory for one PNG per backend: reference | candidate | amplified difference.")]
    = None,
    skip_bad_boxes: Annotated[bool, typer.Option(
        "--skip-bad-boxes", help="Leave out template frames whose crop box leaves the frame.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")] = True,
    triton_url: Annotated[str | None, typer.Option(
        "--triton-url", help="The server the triton backend runs on: grpc://HOST:PORT or http://HOST:PORT.")] = None,
    silence_frames: Annotated[int, typer.Option(
        "--silence-frames", min=0, help="Frames with silent audio (all-zero feature rows) compared after the "
                                        "speech frames.")] = 1,
    tolerances: Annotated[str, typer.Option(
        "--tolerances", help="derived: limits measured on this checkpoint (independent fp16/fp64 PyTorch runs, "
                             "cached per checkpoint digest); fixed: the profiles of docs/PARITY.md.")] = "derived",
    tolerance: Annotated[list[str] | None, typer.Option(
        "--tolerance", help="Override one limit: STAGE.METRIC=VALUE (e.g. model_output.max_abs=0.2); repeatable.")]
    = None,
    profile: Annotated[Path | None, typer.Option(
        "--profile", help="A TOML or JSON file of limits ({stage: {metric: value}}), applied before --tolerance.")]
    = None,
    locate: Annotated[bool | None, typer.Option(
        "--locate/--no-locate", help="The layers stage compares every layer of each ONNX / Core ML artifact with "
                                     "PyTorch and names the first that departs; --locate prints every per-layer "
                                     "table (default: failed candidates'), --no-locate skips the stage.")] = None,
    save_outputs: Annotated[Path | None, typer.Option(
        "--save-outputs", help="Save each backend's outputs (with input and artifact digests, runtime versions) "
                               "to judge them on another machine.")] = None,
    load_outputs: Annotated[list[Path] | None, typer.Option(
        "--load-outputs", help="Judge outputs saved by --save-outputs (refused when made from other inputs); "
                               "repeatable.")] = None,
    junit_xml: Annotated[Path | None, typer.Option(
        "--junit-xml", help="Write a JUnit XML report (one test case per candidate x stage) for CI.")] = None,
    markdown: Annotated[Path | None, typer.Option(
        "--markdown", help="Write a Markdown summary (also appended to $GITHUB_STEP_SUMMARY when it is set).")]
    = None,
    html: Annotated[Path | None, typer.Option(
        "--html", help="Write one self-contained HTML report (verdict, tolerances, heat maps, layer plot).")] = None,
) -> None:
    """Run the same frames through PyTorch fp32 and every backend; exit 0 when all pass, 1 when any fails."""
    from framegen.toolkit.api import parity as run_parity
    from framegen.toolkit.parity.report import print_report

    report = run_parity(bundle=bundle, checkpoint=checkpoint, template=template, features=features, audio=audio,
                        encoder=encoder, backends=backends, frames=frames, silence_frames=silence_frames,
                        start_frame=start_frame, batch=batch, heatmaps=heatmaps, skip_bad_boxes=skip_bad_boxes,
                        progress=progress, tolerances=tolerances, tolerance=tolerance or [], profile=profile,
                        locate=locate, save_outputs=save_outputs, load_outputs=load_outputs or [], json=json_path,
                        triton_url=triton_url, junit_xml=junit_xml, markdown=markdown, html=html)
    print_report(report)
    if not report.passed:
        raise typer.Exit(1)
