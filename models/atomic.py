"""Write-then-rename: no output is ever visible under its final name before it is complete.

One protocol for every writer of framegen, files and folders alike (a checkpoint, a JSON report, an mp4, a PNG
folder, a bundle, a golden directory, a template): write under a hidden temporary sibling, then rename it into
place when the work succeeded, or remove it when it failed. A folder that already exists under the final name is
replaced only on :meth:`AtomicOutput.commit` (moved aside, the new one renamed in, the old one removed), so a failed
run leaves the old one untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from framegen.models.errors import FramegenError


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


class AtomicOutput:
    """A temporary sibling of ``path`` (:attr:`tmp`) that becomes ``path`` on :meth:`commit`.

    ``directory``: the temporary path is created as an empty folder (unique name, permissions as a plain
    ``mkdir`` would give). ``suffix``: an ending the temporary name must keep (coremltools insists on
    ``.mlpackage``). Long-lived writers (a video encoder) hold one of these; everything else uses
    :func:`atomic_output`.
    """

    def __init__(self, path: str | os.PathLike[str], *, directory: bool = False, suffix: str = "") -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if directory:
                self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=f".partial{suffix}",
                                                 dir=self.path.parent))
                umask = os.umask(0)
                os.umask(umask)
                self.tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; outputs are meant to be shared
            else:
                self.tmp = self.path.with_name(f".{self.path.name}.partial{suffix}")
                _remove(self.tmp)
        except OSError as exc:
            raise FramegenError(f"{self.path}: cannot write ({exc.strerror or exc})") from None
        self.done = False

    def commit(self) -> Path:
        """Rename the finished temporary output to its final name (replacing what was there); returns the path."""
        old = None
        try:
            if self.path.is_dir() and not self.path.is_symlink():
                old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
                _remove(old)
                os.replace(self.path, old)
            try:
                os.replace(self.tmp, self.path)
            except BaseException:
                if old is not None:
                    os.replace(old, self.path)
                raise
        except OSError as exc:
            raise FramegenError(f"{self.path}: cannot write ({exc.strerror or exc})") from None
        finally:
            if old is not None:
                _remove(old)
        self.done = True
        return self.path

    def abort(self) -> None:
        """Remove the temporary output (a no-op after :meth:`commit`)."""
        if not self.done:
            _remove(self.tmp)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, directory: bool = False, suffix: str = "") -> Iterator[Path]:
    """Yield a hidden temporary sibling of ``path`` to write (a folder, created, when ``directory``); it is renamed
    to ``path`` when the block succeeds and removed when it fails. An OS error becomes a one-line
    :class:`FramegenError` naming ``path``."""
    out = AtomicOutput(path, directory=directory, suffix=suffix)
    try:
        yield out.tmp
        out.commit()
    except OSError as exc:
        raise FramegenError(f"{out.path}: cannot write ({exc.strerror or exc})") from None
    finally:
        out.abort()
