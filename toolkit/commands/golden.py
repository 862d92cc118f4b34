"""`framegen golden write|check`: golden vectors for ports, and the check that locates a port's first wrong stage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

_PROFILE_HELP = ("fp32; fp16 for a port that runs the generator in half precision; image-fp32 / image-fp16 for "
                 "the uint8 image-I/O models.")


def register(app: typer.Typer) -> None:
    """Add the `golden` group."""
    group = typer.Typer(help="Golden vectors for ports (Go, Swift): every pipeline stage, and a stage-by-stage check.",
                        no_args_is_help=True)
    group.command("write")(write)
    group.command("check")(check)
    app.add_typer(group, name="golden")


def write(
    bundle: Annotated[Path, typer.Option("--bundle", "-b", help="Bundle directory written by `framegen export`.")],
    template: Annotated[Path, typer.Option("--template", "-t", help="Template directory (frames + landmarks).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Golden directory to create.")],
    features: Annotated[Path | None, typer.Option("--features", "-f", help="Audio features (.npy or raw .bin).")]
    = None,
    audio: Annotated[Path | None, typer.Option("--audio", "-a", help="Audio file (with --encoder): adds the mel "
                                                                     "window and embedding stages.")] = None,
    encoder: Annotated[Path | None, typer.Option("--encoder", "-e", help="Audio encoder checkpoint (with --audio).")]
    = None,
    cases: Annotated[int, typer.Option("--cases", "-n", min=1,
                                       help="Frames to record, spread from the first to the last "
                                            "(about 10 MB each at 1280x720).")] = 3,
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", "-c", help="Compute the model output with the PyTorch reference from this checkpoint "
                                   "(default: the bundle's fp32 ONNX generator on ort-cpu).")] = None,
    start_frame: Annotated[int, typer.Option("--start-frame", min=0,
                                             help="Template frame the ping-pong walk starts at.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
) -> None:
    """Write every stage of the pipeline for a few frames as raw little-endian files plus index.json and README."""
    from framegen.toolkit.api import golden_write
    from framegen.toolkit.common.console import out as console
    from framegen.toolkit.parity.golden import load_index

    dest = golden_write(bundle=bundle, template=template, out=out, features=features, audio=audio, encoder=encoder,
                        cases=cases, checkpoint=checkpoint, start_frame=start_frame, force=force)
    index = load_index(dest)
    console.print(f"wrote {dest}: {len(index['cases'])} case(s) (frames "
                  f"{', '.join(str(c['frame']) for c in index['cases'])}), {len(index['stages'])} stages, model output "
                  f"from {index['model_output_from']['backend']}")


def check(
    golden: Annotated[Path, typer.Argument(help="Golden directory written by `framegen golden write`.")],
    candidate: Annotated[Path, typer.Option("--candidate", "-c", help="A port's outputs in the golden layout.")],
    profile: Annotated[str, typer.Option("--profile", "-p", help=_PROFILE_HELP)] = "fp32",
    bundle: Annotated[Path | None, typer.Option(
        "--bundle", "-b", help="The bundle the golden was written from: judges the model on the candidate's own "
                               "model_input and audio_window (recommended).")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the JSON report here.")] = None,
    junit_xml: Annotated[Path | None, typer.Option(
        "--junit-xml", help="Write a JUnit XML report (one test case per candidate x stage) for CI.")] = None,
    markdown: Annotated[Path | None, typer.Option(
        "--markdown", help="Write a Markdown summary (also appended to $GITHUB_STEP_SUMMARY when it is set).")]
    = None,
) -> None:
    """Compare a port's stage files with the golden ones; the table marks the first stage that departs."""
    from framegen.toolkit.api import golden_check
    from framegen.toolkit.parity.golden_check import print_golden_report

    report = golden_check(golden, candidate, profile=profile, bundle=bundle, json=json_path, junit_xml=junit_xml,
                          markdown=markdown)
    print_golden_report(report)
    if not report.passed:
        raise typer.Exit(1)
