"""Placeholder: this command group lands with its issue."""

import typer


def register(app: typer.Typer) -> None:
    """Add nothing yet."""
