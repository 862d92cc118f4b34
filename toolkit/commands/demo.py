"""`framegen demo`: the embedded default, end to end from nothing but code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from framegen.toolkit.common.console import out


def register(app: typer.Typer) -> None:
    """Add the `demo` command."""
    app.command("demo")(demo)


def demo(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for everything the demo makes "
                                          "(replaced when a previous demo made it).")] = Path("framegen-demo"),
    seconds: Annotated[float | None, typer.Option("--seconds", min=0.5, max=60.0, help="Length of the synthetic "
                                                  "speech, hence of the videos (default 3; 1 with --quick).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the template, speech (and random weights).")] = 0,
    quick: Annotated[bool, typer.Option("--quick", help="A small template, an ONNX-only bundle (no Core ML "
                                        "conversion, the slow part) and a 2-frame parity table without its "
                                        "per-layer stage.")] = False,
    weights: Annotated[str, typer.Option("--weights", help="trained: framegen's trained demo generator (the mouth "
                                         "follows the speech); random: a calibrated seeded stand-in.")] = "trained",
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars on stderr.")] = True,
) -> None:
    """Everything framegen does, from nothing but code: synthesise a template and speech, take the trained demo
    generator, compute features, render, export a bundle (ONNX + Core ML, fp32 + fp16; int8 when it clears its floor
    on the demo's own frames, else named and left out), render on every available backend and at the precision
    auto picks, and print the parity table.

    Needs no input and no network. Exits 1 when a backend fails parity.
    """
    import time

    from framegen.toolkit.api import demo as run
    from framegen.toolkit.demo import exit_code, summary_lines

    def log(line: str) -> None:
        out.print(line, markup=False, soft_wrap=True)

    t0 = time.perf_counter()
    ctx = run(out_dir, seconds=seconds, seed=seed, quick=quick, weights=weights, progress=progress, log=log)
    log(f"demo finished in {time.perf_counter() - t0:.0f} s")
    for line in summary_lines(ctx):
        log(line)
    code = exit_code(ctx)
    if code:
        raise typer.Exit(code)
