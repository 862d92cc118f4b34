"""Shared rich consoles: results to stdout, notes and progress to stderr."""

from __future__ import annotations

from rich.console import Console

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def note(message: str) -> None:
    """Print an informational line to stderr (never mixed into machine-readable stdout)."""
    err.print(f"[dim]note:[/dim] {message}", markup=True, soft_wrap=True)


def warn(message: str) -> None:
    """Print a warning line to stderr."""
    err.print(f"[yellow]warning:[/yellow] {message}", markup=True, soft_wrap=True)
