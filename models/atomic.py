"""Write-then-rename: no output is ever visible under its final name before it is complete."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from framegen.models.errors import FramegenError


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a hidden temporary sibling of ``path`` to write; it is renamed to ``path`` when the block succeeds and
    removed when it fails. An OS error becomes a one-line :class:`FramegenError` naming ``path``."""
    dest = Path(path)
    tmp = dest.with_name(f".{dest.name}.partial")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, dest)
    except OSError as exc:
        raise FramegenError(f"{dest}: cannot write ({exc.strerror or exc})") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
