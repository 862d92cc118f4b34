"""The ``framegen`` command line: a thin layer that parses options and calls the pipeline."""

from __future__ import annotations

import importlib
import signal
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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that every writer's abort runs (a KeyboardInterrupt
    subclass: code that stops its workers on Ctrl-C stops them on SIGTERM too)."""


_terminated: list[bool] = []  # set by the handler: click turns the exception into its own exit on the way up


def _on_sigterm(signum: int, frame: object) -> None:
    _terminated.append(True)
    raise Terminated()


def _usage_line(exc: typer.TyperException) -> str:
    """A usage error (an unknown option, a value out of range) as one line naming the option and the command."""
    ctx = getattr(exc, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return f"error: {' '.join(exc.format_message().split())}{where}"


def main() -> None:
    """Console-script entry point: user errors, usage errors included, become one line on stderr and exit code 2;
    SIGINT and SIGTERM remove what was half-written and exit 130 and 143 (128 + the signal). `serve` installs its
    own SIGTERM handler, which drains the server instead."""
    from framegen.models.allocator import keep_freed_memory
    from framegen.models.errors import FramegenError

    keep_freed_memory()  # PyTorch's CPU activations reused instead of page-faulted anew (models/allocator.py)
    signal.signal(signal.SIGTERM, _on_sigterm)
    # A command started in the background of a script inherits SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: `kill -INT` would be lost and the work run to its end (seen when the test suite
    # itself ran in the background).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        # Not standalone: typer would print its usage errors as a multi-line box; here they become one line.
        code = app(standalone_mode=False, prog_name="framegen")
    except typer.TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `framegen` alone: the help, as a user asked for it
            typer.echo(exc.format_message(), err=True)
        else:
            typer.echo(_usage_line(exc), err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except SystemExit:
        if _terminated:
            typer.echo("terminated", err=True)
            sys.exit(128 + signal.SIGTERM)
        raise
    except FramegenError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except Terminated:
        typer.echo("terminated", err=True)
        sys.exit(128 + signal.SIGTERM)
    except KeyboardInterrupt:
        if _terminated:
            typer.echo("terminated", err=True)
            sys.exit(128 + signal.SIGTERM)
        typer.echo("interrupted", err=True)
        sys.exit(128 + signal.SIGINT)
    if _terminated:
        typer.echo("terminated", err=True)
        sys.exit(128 + signal.SIGTERM)
    if code == 128 + signal.SIGINT:  # typer turns Ctrl-C into a silent exit 130: say why, in one line
        typer.echo("interrupted", err=True)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
