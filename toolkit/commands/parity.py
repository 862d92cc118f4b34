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
) -> None:
    """Run the same frames through PyTorch fp32 and every backend; exit 0 when all pass, 1 when any fails."""
    from framegen.models.bundle import load_bundle
    from framegen.toolkit.parity import parse_backends, plan_candidates, print_report, resolve_audio_input, run_parity
    from framegen.toolkit.preprocess import PreparedTemplate
    from framegen.toolkit.template import open_template

    if triton_url is not None:
        from framegen.runtimes.triton_backend import use_server

        use_server(triton_url)
    b = load_bundle(bundle)
    requested = parse_backends(backends)
    audio_input = resolve_audio_input(b.mode, features, audio, encoder, progress)
    candidates, notes = plan_candidates(b, requested)
    prepared = PreparedTemplate(open_template(template), skip_bad_boxes=skip_bad_boxes)
    report = run_parity(b.root, checkpoint, prepared, audio_input.features, candidates=candidates, frames=frames,
                        start_frame=start_frame, batch=batch, heatmaps=heatmaps, progress=progress,
                        inputs={"template": str(template), **audio_input.source})
    report.notes[:0] = notes + prepared.warnings
    print_report(report)
    if json_path is not None:
        from framegen.toolkit.files import write_json

        write_json(json_path, report.as_dict())
    if not report.passed:
        raise typer.Exit(1)
