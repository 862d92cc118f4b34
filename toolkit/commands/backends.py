"""`framegen backends`: what can run here, and why the rest cannot."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from framegen.toolkit.common.console import out


def register(app: typer.Typer) -> None:
    """Add the `backends` command."""
    app.command("backends")(backends)


def backends(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    bundle: Path | None = typer.Option(None, "--bundle", help="Also say which backends this bundle can feed."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="A checkpoint for the torch backends."),
    precision: str = typer.Option("fp32", "--precision",
                                  help="fp32, fp16, bf16, int8 or auto (with --bundle / --checkpoint)."),
) -> None:
    """List every backend with its availability on this machine and the reason; with --bundle / --checkpoint, also
    whether each can be opened from them and which one `--backend auto` would pick."""
    from framegen.toolkit.api import backends as api_backends
    from rich.table import Table

    listed = api_backends(bundle=bundle, checkpoint=checkpoint, precision=precision)
    request = bundle is not None or checkpoint is not None
    rows = [r.as_dict() for r in listed]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="framegen backends")
    cols = ["name", "available", "needs", "precisions", "reason"] + (["artifact"] if request else [])
    for col in cols:
        table.add_column(col)
    for r in rows:
        cells = [r["name"] + (" (auto)" if r.get("auto") else ""),
                 "[green]yes[/green]" if r["available"] else "[red]no[/red]", r["needs"], ",".join(r["precisions"]),
                 r["reason"]]
        if request:
            cells.append("[green]yes[/green]" if r["artifact"] is None else r["artifact"])
        table.add_row(*cells)
    out.print(table)
    cpu = listed.cpu
    out.print(f"CPU: {cpu.get('model', '?')}, {cpu.get('logical_cores', '?')} logical cores; "
              f"{', '.join(cpu.get('vector_extensions', [])) or 'no vector extensions found'}", soft_wrap=True)
    if listed.auto_reason is not None:
        out.print(f"auto -> {listed.auto_reason}", soft_wrap=True)
    if listed.precision_choice is not None:
        out.print(f"precision auto -> {listed.precision_choice}", soft_wrap=True)
