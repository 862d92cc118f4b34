"""Write-then-rename: no output is ever visible under its final name before it is complete.

One protocol for every writer of framegen, files and folders alike (a checkpoint, a JSON report, an mp4, a PNG
folder, a bundle, a golden directory, a template): write under a hidden temporary sibling, then rename it into
place when the work succeeded, or remove it when it failed. A folder that already exists under the final name is
replaced only on :meth:`AtomicOutput.commit` (moved aside, the new one renamed in, the old one removed), so a failed
run leaves the old one untouched.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from framegen.models.errors import FramegenError

_PARTIAL = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.partial")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_partials(path: Path) -> list[Path]:
    """Remove temporary siblings of ``path`` left by runs that were killed (their process is gone); returns them.

    A run that is still going keeps its own: the name carries its pid.
    """
    removed = []
    with contextlib.suppress(OSError):
        for sibling in path.parent.iterdir():
            m = _PARTIAL.match(sibling.name)
            if m and m["name"] == path.name and int(m["pid"]) != os.getpid() and not _alive(int(m["pid"])):
                _remove(sibling)
                removed.append(sibling)
    return removed


class OutputBusyError(FramegenError):
    """Another run is writing the same output right now."""


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
        self._lock_fd: int | None = None
        self.done = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock()
            clean_stale_partials(self.path)
            # unique per run (pid + random): two runs never share a temporary, and a killed run's is recognisable
            self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial{suffix}")
            if directory:
                self.tmp.mkdir()  # permissions as a plain mkdir gives: outputs are meant to be shared
        except OSError as exc:
            self._unlock()
            raise FramegenError(f"{self.path}: cannot write ({exc.strerror or exc})") from None
        except BaseException:
            self._unlock()
            raise
        self.done = False

    def _lock(self) -> None:
        """Hold an advisory lock on ``.NAME.lock`` beside the output while writing it: a second run to the same
        destination is refused at once instead of mixing its output with the first one's."""
        lock = self.path.with_name(f".{self.path.name}.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputBusyError(f"{self.path}: another framegen run is writing it now; wait for it or choose "
                                  f"another output") from None
        self._lock_fd = fd

    def __del__(self) -> None:
        # an output dropped without commit or abort (a writer whose constructor failed) must not keep its
        # destination locked for the rest of the process
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                self.path.with_name(f".{self.path.name}.lock").unlink()
            os.close(self._lock_fd)
            self._lock_fd = None

    def commit(self) -> Path:
        """Rename the finished temporary output to its final name (replacing what was there); returns the path."""
        old = None
        try:
            if self.path.is_dir() and not self.path.is_symlink():
                old = self.path.with_name(f".{self.path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial-old")
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
        self._unlock()
        return self.path

    def abort(self) -> None:
        """Remove the temporary output (a no-op after :meth:`commit`) and release the destination."""
        try:
            if not self.done:
                _remove(self.tmp)
        finally:
            self._unlock()


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


def check_writable(path: str | os.PathLike[str], what: str = "output") -> Path:
    """Refuse, before any work, an output whose folder cannot take a file: creates and removes a unique probe file
    beside ``path`` (the only test that sees read-only mounts, full disks with no inode left, and ACLs alike)."""
    p = Path(path)
    if p.exists() and p.is_dir() and what != "folder":
        raise FramegenError(f"{p}: is a folder, expected a file {what}")
    probe = p.with_name(f".{p.name}.{os.getpid()}-{secrets.token_hex(4)}.partial-probe")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise FramegenError(f"{p}: cannot write ({exc.strerror or exc})") from None
    return p
