"""`framegen backends`: what can run here, and why the rest cannot."""

from __future__ import annotations

import json

import typer

from toolkit.console import out


def register(app: typer.Typer) -> None:
    """Add the `backends` command."""
    app.command("backends")(backends)


def backends(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List every backend with its availability on this machine and the reason."""
    from rich.table import Table

    from runtimes.registry import list_backends

    rows = list_backends()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="framegen backends")
    for col in ("name", "available", "needs", "precisions", "reason"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], "[green]yes[/green]" if r["available"] else "[red]no[/red]", r["needs"],
                      ",".join(r["precisions"]), r["reason"])
    out.print(table)
