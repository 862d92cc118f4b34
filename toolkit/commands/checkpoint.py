"""`framegen checkpoint inspect|init`."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from toolkit.console import note, out


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
    checkpoint: Path = typer.Argument(..., help="A generator or audio-encoder .pth file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Say what a checkpoint is: kind, mode (as detected), parameter count, dtype, size, sha256."""
    from models.checkpoint import inspect_checkpoint

    info = inspect_checkpoint(checkpoint)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    if info.get("note"):
        note(str(info["note"]))
    for key in ("path", "kind", "mode", "possible_modes", "parameters", "tensors", "dtype", "file_size", "sha256"):
        value = info[key]
        if isinstance(value, list):
            value = ", ".join(value)
        out.print(f"{key:15} {value}")


def init(
    out_path: Path = typer.Argument(..., metavar="OUT", help="Where to write the .pth file."),
    kind: Kind = typer.Option(Kind.generator, "--kind", help="generator or audio-encoder."),
    mode: ModeOpt = typer.Option(ModeOpt.ave, "--mode", help="Generator audio branch."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same weights."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Estimate BatchNorm statistics so outputs span [0, 1]."),
) -> None:
    """Write a seeded, reproducible checkpoint in SyncTalk_2D's own format (a stand-in for real weights)."""
    from models.io import save_audio_encoder, save_generator
    from models.init import init_audio_encoder, init_generator

    if kind is Kind.generator:
        model = init_generator(mode.value, seed, calibrate)
        save_generator(model, out_path)
    else:
        save_audio_encoder(init_audio_encoder(seed, calibrate=True), out_path)
    out.print(f"wrote {out_path} ({kind.value}{'' if kind is Kind.audio_encoder else ', ' + mode.value}, "
              f"seed {seed}{', calibrated' if calibrate and kind is Kind.generator else ''})")
