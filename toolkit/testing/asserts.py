"""Assertions in the manner of ``numpy.testing``: frames and parity reports judged by framegen's tolerance profiles,
with failure messages that name the stage, the metric, the limit and the worst pixel."""

from __future__ import annotations

from typing import Any

import numpy as np
from framegen.toolkit.compare.metrics import ErrorStats
from framegen.toolkit.compare.profiles import FINAL_FRAME, MODEL_OUTPUT, get_profile


def _stage_for(actual: np.ndarray, stage: str | None) -> str:
    if stage is not None:
        return stage
    return FINAL_FRAME if actual.dtype == np.uint8 else MODEL_OUTPUT


def assert_frames_close(actual: Any, expected: Any, *, profile: str = "fp32", stage: str | None = None,
                        msg: str | None = None) -> None:
    """Assert that ``actual`` is within ``profile``'s limits of ``expected`` (the reference).

    Arrays of the same shape, one frame or a batch (the first axis counts frames when there are 4 axes): uint8
    frames are judged as ``final_frame`` (levels), float outputs as ``model_output`` (fractions of 1), unless
    ``stage`` names another of the profile's stages. ``profile``: ``fp32``, ``fp16``, ``image-fp32``,
    ``image-fp16`` (toolkit/compare/profiles.py, docs/PARITY.md). Raises ``AssertionError`` with one line per broken
    limit, e.g. ``model_output (fp32 profile): mean_abs 1.20e-03 > 1.00e-04; worst: frame 0 at [1, 12, 300],
    actual 0.53, expected 0.51``.
    """
    a, e = np.asarray(actual), np.asarray(expected)
    if a.shape != e.shape:
        raise AssertionError(f"{msg + ': ' if msg else ''}shapes differ: actual {a.shape}, expected {e.shape}")
    name = _stage_for(a, stage)
    limits = get_profile(profile).limits(name)
    batched = a.ndim == 4
    stats = ErrorStats("uint8" if a.dtype == np.uint8 else "float")
    stats.update(e if batched else e[None], a if batched else a[None])
    summary = stats.summary()
    failures = limits.check(summary)
    if not failures:
        return
    frame, index = summary["worst_frame"], tuple(summary["worst_index"] or ())
    at = (frame, *index) if batched else index
    where = (f"worst: frame {frame} at {list(index)}, actual {a[at]!r}, expected {e[at]!r}" if index
             else "no worst pixel (non-finite values)")
    head = f"{msg}: " if msg else ""
    raise AssertionError(f"{head}{name} ({profile} profile): {'; '.join(failures)}; {where}")


def assert_parity_passed(report: Any, candidate: str | None = None) -> None:
    """Assert that a parity report (``framegen.parity(...)``) passed: every candidate, or the one labelled
    ``candidate`` (``ort-cpu:fp16``). The message lists each failing candidate's stages with the metric, value,
    limit and worst frame and pixel, and the first diverging layer when the layer search found one."""
    cands = [c for c in report.candidates if candidate is None or c.label == candidate]
    if candidate is not None and not cands:
        raise AssertionError(f"parity report has no candidate {candidate!r} "
                             f"(it has {', '.join(c.label for c in report.candidates)})")
    lines = []
    for c in cands:
        if c.passed:
            continue
        if c.error:
            lines.append(f"{c.label}: {c.error}")
        for s in c.stages:
            if s.failures:
                m = s.metrics or {}
                worst = (f" (worst: frame {m['worst_frame']} at {m['worst_index']})"
                         if m.get("worst_index") is not None else "")
                lines.append(f"{c.label} {s.stage}: {'; '.join(s.failures)}{worst}")
        if c.outside_box_diffs:
            lines.append(f"{c.label} final_frame: {c.outside_box_diffs} value(s) outside the crop box differ")
        first = getattr(c.locate, "first_divergence", None)
        if first:
            lines.append(f"{c.label}: first diverging layer {first['layer']} ({first['metric']} {first['value']:.3g} "
                         f"> {first['limit']:.3g})")
    if candidate is None:
        lines += [f"{k.path}: sha256 differs from the manifest" for k in report.checksums if not k.ok]
    if lines:
        raise AssertionError("parity failed:\n" + "\n".join(lines))
