"""`framegen demo`: the embedded default, end to end from nothing but code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolkit.console import err, out


def register(app: typer.Typer) -> None:
    """Add the `demo` command."""
    app.command("demo")(demo)


def demo(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for everything the demo makes "
                                          "(replaced when a previous demo made it).")] = Path("framegen-demo"),
    seconds: Annotated[float, typer.Option("--seconds", min=0.5, max=60.0, help="Length of the synthetic "
                                           "speech, hence of the video.")] = 3.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the template, weights and speech.")] = 0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")] = True,
) -> None:
    """Synthesise a template, seeded weights and speech, compute features and render a video with sound.

    Needs no input and no network. The weights are random: the mouth moves, but not with the speech.
    """
    from toolkit.demo import RANDOM_WEIGHTS_NOTE, DemoContext, run_demo

    def log(line: str) -> None:
        out.print(line, markup=False, soft_wrap=True)

    err.print(f"[yellow]note:[/yellow] {RANDOM_WEIGHTS_NOTE}", markup=True, soft_wrap=True)
    ctx = run_demo(DemoContext(out=out_dir, seconds=seconds, seed=seed, progress=progress), log=log)
    log(f"demo video: {ctx.artifacts['video']} (open it in any player; it has sound)")
    log(f"note: {RANDOM_WEIGHTS_NOTE}")
