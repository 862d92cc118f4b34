"""Testing helpers for users' test suites (``framegen.testing``) and framegen's pytest plugin
(:mod:`framegen.toolkit.testing.plugin`, registered through the ``pytest11`` entry point)."""

from framegen.toolkit.testing.asserts import assert_frames_close, assert_parity_passed

__all__ = ["assert_frames_close", "assert_parity_passed"]
