"""The one exception type that framegen turns into a one-line message and a non-zero exit."""

from __future__ import annotations

import re


class FramegenError(Exception):
    """A problem with the user's input or environment, stated in one line that names the file or value."""


class CheckpointError(FramegenError):
    """A checkpoint that cannot be read or is not a SyncTalk_2D generator / audio encoder."""


_SOURCE_LOCATION = re.compile(r"^(Exception from |Check '.*' failed at ).*:\d+:$")


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message cut to its first line (at most ``limit`` characters), or its type's name.

    Library errors (ONNX Runtime, coremltools, FFmpeg, Triton) carry stack traces and build-machine paths after the
    first line; a user is shown only this. FFmpeg's ``strerror`` is preferred: it holds the message without the errno
    and the file name the caller already names.
    """
    strerror = getattr(exc, "strerror", None)
    if isinstance(strerror, str) and strerror:
        return strerror[:limit]
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    # OpenVINO puts lines naming its own source locations ("Exception from src/...:117:", "Check '...' failed at
    # src/...:117:") before the message.
    told = [ln for ln in lines if not _SOURCE_LOCATION.match(ln)]
    lines = told or lines
    return lines[0][:limit] if lines else type(exc).__name__
