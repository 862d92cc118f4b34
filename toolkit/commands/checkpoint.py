"""`framegen checkpoint inspect|init`."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from framegen.toolkit.common.console import note, out


class Kind(str, Enum):
    generator = "generator"
    audio_encoder = "audio-encoder"


class ModeOpt(str, Enum):
    ave = "ave"
    hubert = "hubert"
    wenet = "wenet"


def register(app: typer.Typer) -> None:
    """Add the `checkpoint` group."""
    group = typer.Typer(help="Inspect and create SyncTalk_2D checkpoints.", no_args_is_help=True)
    group.command("inspect")(inspect)
    group.command("init")(init)
    app.add_typer(group, name="checkpoint")


def inspect(
    checkpoint: Annotated[Path, typer.Argument(help="A generator or audio-encoder .pth file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Say what a checkpoint is: kind, mode (as detected), parameter count, dtype, size, sha256."""
    from framegen.toolkit.api import checkpoint_inspect

    info = checkpoint_inspect(checkpoint)
    if info.get("note"):
        note(str(info["note"]))  # stderr, so --json output stays machine-readable
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    for key in ("path", "kind", "mode", "possible_modes", "parameters", "tensors", "dtype", "file_size", "sha256"):
        value = info[key]
        if isinstance(value, list):
            value = ", ".join(value)
        out.print(f"{key:15} {value}", soft_wrap=True)  # a long path must stay on its line


def init(
    out_path: Annotated[Path, typer.Argument(metavar="OUT", help="Where to write the .pth file.")],
    kind: Annotated[Kind, typer.Option("--kind", help="generator or audio-encoder.")] = Kind.generator,
    mode: Annotated[ModeOpt, typer.Option("--mode", help="Generator audio branch.")] = ModeOpt.ave,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same weights.")] = 0,
    calibrate: Annotated[bool, typer.Option("--calibrate",
                                            help="Estimate BatchNorm statistics so outputs span [0, 1].")] = False,
    demo_trained: Annotated[bool, typer.Option(
        "--demo-trained", help="Write framegen's trained demo generator ('ave'; trained on the features of the "
                               "seed-0 audio encoder) instead of seeded weights.")] = False,
) -> None:
    """Write a seeded, reproducible checkpoint in SyncTalk_2D's own format (a stand-in for real weights)."""
    from framegen.toolkit.api import checkpoint_init

    if kind is Kind.generator and calibrate:
        note("calibrating BatchNorm statistics on image-like inputs (a few seconds)")
    checkpoint_init(out_path, kind=kind.value, mode=mode.value, seed=seed, calibrate=calibrate,
                    demo_trained=demo_trained)
    what = (f"generator, {mode.value}, seed {seed}{', calibrated' if calibrate else ''}" if kind is Kind.generator
            else f"audio encoder, seed {seed}, calibrated")
    if demo_trained:
        what = "the trained demo generator, ave"
    out.print(f"wrote {out_path} ({what})", soft_wrap=True)
