"""``framegen.testing``: assertions for your own test suite, in the manner of ``numpy.testing``.

    from framegen.testing import assert_frames_close, assert_parity_passed

    assert_frames_close(port_frames, reference_frames, profile="fp32")   # uint8 frames or float model outputs
    assert_parity_passed(framegen.parity(...))

The pytest plugin (fixtures ``framegen_parity`` and ``framegen_candidate``, marker ``framegen_parity``) comes with
the package: see ``framegen.toolkit.testing.plugin`` and docs/PARITY.md ("Parity in your CI").
"""

from framegen.toolkit.testing import assert_frames_close, assert_parity_passed

__all__ = ["assert_frames_close", "assert_parity_passed"]
