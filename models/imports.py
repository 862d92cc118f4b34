"""Imports of optional heavy libraries shared by every layer (so that no layer imports a sibling for them)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any

from framegen.models.errors import FramegenError, first_line


def coremltools() -> Any:
    """Import coremltools without its import-time warnings (untested torch version, no native runtime on Linux)."""
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import coremltools as ct
    finally:
        logger.setLevel(level)
    return ct


@contextlib.contextmanager
def quiet(*loggers: str, stdout: bool = False) -> Iterator[None]:
    """Hide the progress bars (tqdm writes to stderr), warnings and log records below ERROR of the named loggers
    (and, with ``stdout``, prints) while a converter or tracer runs: the CLI's own lines stay readable."""
    found = [logging.getLogger(n) for n in loggers]
    levels = [lg.level for lg in found]
    for lg in found:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
            stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
            if stdout:
                stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
            yield
    finally:
        for lg, level in zip(found, levels, strict=True):
            lg.setLevel(level)


def mlprogram_spec(path: str | os.PathLike[str], label: str | None = None) -> Any:
    """The protobuf spec of an .mlpackage holding an ML program; one-line :class:`FramegenError` otherwise."""
    coremltools()
    from coremltools.models.utils import load_spec

    name = label or os.fspath(path)
    try:
        spec = load_spec(os.fspath(path))
    except Exception as exc:
        raise FramegenError(f"{name}: not a readable .mlpackage ({first_line(exc, 200)})") from None
    if spec.WhichOneof("Type") != "mlProgram":
        raise FramegenError(f"{name}: holds a {spec.WhichOneof('Type')}, expected an ML program")
    return spec
