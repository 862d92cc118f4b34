"""`framegen template inspect|synth`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from framegen.toolkit.common.console import note, out, warn


def register(app: typer.Typer) -> None:
    """Add the `template` group."""
    group = typer.Typer(help="Check and synthesise SyncTalk_2D template datasets (full_body_img/ + landmarks/).",
                        no_args_is_help=True)
    group.command("inspect")(inspect)
    group.command("synth")(synth)
    app.add_typer(group, name="template")


def inspect(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Template directory (full_body_img/, landmarks/).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (paths relative to DIR), not text.")] = False,
    preview: Annotated[Path | None, typer.Option(
        "--preview", metavar="PNG", help="Also write a contact sheet of crops with their boxes drawn.")] = None,
    skip_bad_boxes: Annotated[bool, typer.Option(
        "--skip-bad-boxes", help="Report crop boxes that leave the frame as warnings, not errors.")] = False,
) -> None:
    """Pair images with landmark files, decode every image and report each frame's crop box.

    Exits non-zero when the template is unusable: files missing or malformed, an image that cannot be decoded,
    a crop box outside the frame.
    """
    from framegen.toolkit.api import template_inspect
    from framegen.toolkit.inputs.template import TemplateError

    try:
        report = template_inspect(directory, skip_bad_boxes=skip_bad_boxes, preview=preview)
    except TemplateError as exc:
        if as_json:
            typer.echo(json.dumps({"root": str(directory), "usable": False, "errors": [str(exc)], "warnings": [],
                                   "frames": []}, indent=2))
        raise
    if preview is not None:
        shown = report.pop("preview")
        if shown["frames"]:
            note(f"wrote preview {preview} ({len(shown['frames'])} frames)")
        else:
            warn("no usable frame to preview")
    if as_json:
        typer.echo(_json(report))
    else:
        _print_report(report)
    if not report["usable"]:
        errors = report["errors"]
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise TemplateError(f"{directory}: template unusable: {errors[0]}{more}")


def _json(report: dict) -> str:
    """Indented JSON with one line per frame (a 500-frame report stays readable)."""
    head = json.dumps({k: v for k, v in report.items() if k != "frames"}, indent=2)
    frames = ",\n".join(f"    {json.dumps(f)}" for f in report["frames"])
    return f"{head[:-2]},\n  \"frames\": [\n{frames}\n  ]\n}}" if frames else json.dumps(report, indent=2)


def _print_report(report: dict) -> None:
    def line(text: str) -> None:
        out.print(text, markup=False, soft_wrap=True)

    for warning in report["warnings"]:
        warn(warning)
    widths = [f["box"][2] - f["box"][0] for f in report["frames"]]
    line(f"template   {report['root']}")
    line(f"frames     {report['count']} ({report['usable_frames']} usable)")
    line(f"size       {report['width']}x{report['height']}")
    line(f"numbering  images {report['numbering']['images']}, landmarks {report['numbering']['landmarks']}")
    line(f"crop sizes {min(widths)}..{max(widths)} px")
    line(f"{'index':>6}  {'image':28} {'landmarks':24} box [x0, y0, x1, y1]")
    for f in report["frames"]:
        text = f"{f['index']:6d}  {f['image']:28} {f['landmarks']:24} {f['box']}"
        line(text + (f"  ERROR: {f['error']}" if "error" in f else ""))
    line(f"status     {'usable' if report['usable'] else 'UNUSABLE'}")


def synth(
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", help="New template directory (absent or empty).")],
    frames: Annotated[int | None, typer.Option(
        "--frames", min=1, help="Frame count (default 50, or every file of --landmarks).")] = None,
    width: Annotated[int, typer.Option("--width", min=32, help="Frame width.")] = 1280,
    height: Annotated[int, typer.Option("--height", min=32, help="Frame height.")] = 720,
    landmarks: Annotated[Path | None, typer.Option(
        "--landmarks", metavar="DIR", help="Follow this real landmark track (N.lms files, copied as is).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same template.")] = 0,
) -> None:
    """Write a deterministic synthetic template (face-like frames drawn from a landmark track)."""
    import time

    from framegen.toolkit.api import template_synth
    from framegen.toolkit.inputs.template import open_template

    start = time.perf_counter()
    template_synth(out_dir, frames=frames, width=width, height=height, landmarks=landmarks, seed=seed)
    frames = len(open_template(out_dir))
    track = f"following {landmarks}" if landmarks else f"generated track, seed {seed}"
    out.print(f"wrote {out_dir} ({frames} frames, {width}x{height}, {track}) in {time.perf_counter() - start:.1f} s",
              soft_wrap=True)
