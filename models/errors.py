"""The one exception type that framegen turns into a one-line message and a non-zero exit."""

from __future__ import annotations


class FramegenError(Exception):
    """A problem with the user's input or environment, stated in one line that names the file or value."""


class CheckpointError(FramegenError):
    """A checkpoint that cannot be read or is not a SyncTalk_2D generator / audio encoder."""
