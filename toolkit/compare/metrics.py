"""Streaming error metrics between a reference and a candidate, for float model outputs and uint8 frames.

Accumulates over batches so parity never holds all frames: max / mean / p99 absolute error (p99 from a fixed
histogram, exact to the bin width), max relative error, cosine similarity, PSNR, the share of values that differ at
all and by more than one level, and where the worst error is. Two distribution metrics separate systematic errors from
rounding noise: ``bias`` (mean signed error) and ``spread_change`` (relative change of the standard deviation).
Rounding noise, however large a deep network makes it, is unbiased and leaves the output's spread alone; a wrong
weight, scale or normalisation moves one or both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from framegen.toolkit.common.console import out

# Histogram of |error| for the p99: log-spaced bins from 1e-9 to 256 cover float outputs and uint8 levels alike.
_EDGES = np.concatenate([[0.0], np.logspace(-9, math.log10(256.0), 1200)])


@dataclass
class ErrorStats:
    """Running comparison of candidate against reference arrays of one stage (``float`` or ``uint8``)."""

    kind: str  # "float" (model output in [0, 1]) or "uint8" (final frames, 0..255)
    count: int = 0
    sum_abs: float = 0.0
    sum_sq: float = 0.0
    max_abs: float = 0.0
    max_rel: float = 0.0
    dot: float = 0.0
    ref_sum: float = 0.0
    cand_sum: float = 0.0
    ref_sq: float = 0.0
    cand_sq: float = 0.0
    n_diff: int = 0
    n_diff_gt1: int = 0
    n_nonfinite: int = 0
    worst_frame: int | None = None
    worst_index: tuple[int, ...] | None = None
    hist: np.ndarray = field(default_factory=lambda: np.zeros(len(_EDGES) - 1, dtype=np.int64))

    def __post_init__(self) -> None:
        if self.kind not in ("float", "uint8"):
            raise ValueError(f"ErrorStats kind must be 'float' or 'uint8', not {self.kind!r}")

    def update(self, ref: np.ndarray, cand: np.ndarray, frame_ids: list[int] | None = None,
               offset: tuple[int, ...] | None = None) -> None:
        """Add a batch ``[B, ...]`` of reference and candidate values (same shape).

        ``frame_ids`` name the batch's frames (default: their positions); ``offset`` is added to the worst
        element's index, so a comparison of a region (e.g. the crop box ``(y0, x0, 0)``) reports the worst pixel
        in whole-frame coordinates.
        """
        if ref.shape != cand.shape:
            raise ValueError(f"shape mismatch: reference {ref.shape}, candidate {cand.shape}")
        if ref.size == 0:
            return
        r = ref.astype(np.float64)
        c = cand.astype(np.float64)
        bad = ~np.isfinite(c)
        if bad.any():
            # NaN/Inf must fail every limit: count them and make their error infinite (NaN compares false).
            self.n_nonfinite += int(bad.sum())
            c = np.where(bad, 0.0, c)
        diff = np.abs(c - r)
        if bad.any():
            diff[bad] = np.inf
        self.count += diff.size
        self.sum_abs += float(diff.sum())
        self.sum_sq += float(np.square(diff).sum())
        flat_arg = int(np.argmax(diff))
        batch_max = float(diff.flat[flat_arg])
        if batch_max > self.max_abs or self.worst_frame is None:
            self.max_abs = max(self.max_abs, batch_max)
            idx = np.unravel_index(flat_arg, diff.shape)
            self.worst_index = tuple(int(v) + (offset[k] if offset else 0) for k, v in enumerate(idx[1:]))
            self.worst_frame = int(frame_ids[idx[0]]) if frame_ids is not None else int(idx[0])
        floor = 1e-3 if self.kind == "float" else 1.0  # relative error is meaningless near zero
        self.max_rel = max(self.max_rel, float((diff / np.maximum(np.abs(r), floor)).max()))
        self.dot += float((r * c).sum())
        self.ref_sum += float(r.sum())
        self.cand_sum += float(c.sum())
        self.ref_sq += float((r * r).sum())
        self.cand_sq += float((c * c).sum())
        self.n_diff += int(np.count_nonzero(diff))
        self.n_diff_gt1 += int(np.count_nonzero(diff > 1.0)) if self.kind == "uint8" else 0
        self.hist += np.histogram(np.clip(diff, 0, _EDGES[-1]), bins=_EDGES)[0]

    def percentile(self, q: float) -> float:
        """Upper bin edge below which ``q`` percent of absolute errors lie (exact zero when they are zero)."""
        if self.count == 0 or self.max_abs == 0:
            return 0.0
        target = self.count * q / 100.0
        cum = np.cumsum(self.hist)
        i = int(np.searchsorted(cum, target, side="left"))
        if i == 0:
            return 0.0  # the first bin holds exact zeros (and errors below 1e-9)
        return float(_EDGES[min(i + 1, len(_EDGES) - 1)])

    def _spread_change(self) -> float:
        """Relative change of the standard deviation, ``std(candidate) / std(reference) - 1``."""
        n = max(self.count, 1)
        var_r = max(self.ref_sq / n - (self.ref_sum / n) ** 2, 0.0)
        var_c = max(self.cand_sq / n - (self.cand_sum / n) ** 2, 0.0)
        if var_r == 0:
            return 0.0 if var_c == 0 else float("inf")
        return math.sqrt(var_c / var_r) - 1.0

    def summary(self) -> dict[str, Any]:
        """The metrics as a JSON-able dict."""
        n = max(self.count, 1)
        mse = self.sum_sq / n
        peak = 1.0 if self.kind == "float" else 255.0
        if mse == 0:
            psnr = float("inf")
        elif math.isinf(mse):
            psnr = float("-inf")
        else:
            psnr = 10 * math.log10(peak * peak / mse)
        denom = math.sqrt(self.ref_sq * self.cand_sq)
        return {
            "max_abs": self.max_abs,
            "mean_abs": self.sum_abs / n,
            "p99_abs": min(self.percentile(99.0), self.max_abs),
            "max_rel": self.max_rel,
            "cosine": self.dot / denom if denom > 0 else (1.0 if self.ref_sq == self.cand_sq else 0.0),
            "psnr_db": psnr,
            "bias": (self.cand_sum - self.ref_sum) / n,
            "spread_change": self._spread_change(),
            "share_diff": self.n_diff / n,
            "share_diff_gt1": self.n_diff_gt1 / n,
            "worst_frame": self.worst_frame,
            "worst_index": list(self.worst_index) if self.worst_index is not None else None,
            "nonfinite": self.n_nonfinite,
            "values": self.count,
        }


def outside_box_diffs(a: np.ndarray, b: np.ndarray, box: tuple[int, int, int, int]) -> int:
    """Values that differ between two frames outside ``box`` (x0, y0, x1, y1), where both must be identical."""
    x0, y0, x1, y1 = box
    n = int(np.count_nonzero(a[:y0] != b[:y0])) + int(np.count_nonzero(a[y1:] != b[y1:]))
    n += int(np.count_nonzero(a[y0:y1, :x0] != b[y0:y1, :x0]))
    n += int(np.count_nonzero(a[y0:y1, x1:] != b[y0:y1, x1:]))
    return n


def cell(v: Any, kind: str = "g") -> str:
    """A metric as a table cell: ``-`` for none; ``kind`` ``pct`` / ``signed_pct`` / ``db`` / ``cos`` / general."""
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, float) and (math.isinf(v) or math.isnan(v)):
        return str(v)
    if kind == "signed_pct":
        return f"{100 * v:+.2f}%"
    if kind == "pct":
        return f"{100 * v:.3g}%"
    if kind == "db":
        return f"{v:.1f}"
    if kind == "cos":
        return f"{v:.6f}"
    if isinstance(v, float) and v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4):
        return f"{v:.2e}"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def wide_console() -> Any:
    """The stdout console, or, when stdout is not a terminal (CI logs, pipes), one 150 columns wide so that result
    tables are not cut to rich's default of 80."""
    from rich.console import Console

    return out if out.is_terminal else Console(width=max(out.width, 150), highlight=False)
