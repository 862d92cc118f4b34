"""The ``framegen`` command line: a thin layer that parses options and calls the pipeline."""

from __future__ import annotations

import importlib
import sys

import typer
from framegen.models.version import __version__

app = typer.Typer(
    name="framegen",
    help="Export, render, parity-check and benchmark SyncTalk_2D lip-sync models across runtimes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Each module registers its own commands; order is the order of `framegen --help`.
_COMMAND_MODULES = (
    "demo",
    "render",
    "export",
    "parity",
    "golden",
    "bench",
    "backends",
    "checkpoint",
    "template",
    "audio",
    "serve",
    "stream",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"framegen {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """framegen: one contract, many runtimes, provably the same frames."""


for _name in _COMMAND_MODULES:
    importlib.import_module(f"framegen.toolkit.commands.{_name}").register(app)


def main() -> None:
    """Console-script entry point: user errors become one line on stderr and exit code 2."""
    from framegen.models.errors import FramegenError

    try:
        app()
    except FramegenError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
