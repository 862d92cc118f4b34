"""Streaming comparison: each candidate's frames judged against the reference's as both are rendered (nothing
is held but the worst frame, for the heat maps)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from framegen.models.errors import FramegenError
from framegen.toolkit.common.console import err
from framegen.toolkit.compare.metrics import ErrorStats, outside_box_diffs
from framegen.toolkit.compare.profiles import FINAL_FRAME, MODEL_OUTPUT, Profile
from framegen.toolkit.compare.results import (
    REFERENCE,
    CandidateResult,
    judge_stages,
)
from framegen.toolkit.parity.inputs import (
    Segment,
)


@dataclass
class Tracker:
    """Streaming comparison state of one candidate."""

    result: CandidateResult
    profile: Profile
    output: ErrorStats = field(default_factory=lambda: ErrorStats("float"))
    final: ErrorStats = field(default_factory=lambda: ErrorStats("uint8"))
    worst_key: tuple[float, float] = (-1.0, -1.0)
    worst: tuple[int, np.ndarray, np.ndarray, tuple[int, int, int, int]] | None = None
    worst_output_key: float = -1.0
    worst_output: tuple[int, np.ndarray, np.ndarray] | None = None
    saved: dict[str, np.ndarray] | None = None

    def add(self, i: int, box: tuple[int, int, int, int], ref_pred: np.ndarray, pred: np.ndarray,
            ref_frame: np.ndarray, frame: np.ndarray, keep_worst: bool, digest: str | None = None) -> None:
        self.output.update(ref_pred[None], np.asarray(pred, dtype=np.float32)[None], [i])
        x0, y0, x1, y1 = box
        r, c = ref_frame[y0:y1, x0:x1], frame[y0:y1, x0:x1]
        self.final.update(r[None], c[None], [i], offset=(y0, x0, 0))
        self.result.outside_box_diffs += outside_box_diffs(ref_frame, frame, box)
        self.result.frames += 1
        if self.saved is not None and digest is not None:
            self.saved[digest] = np.array(pred, dtype=np.float32, copy=True)
        if keep_worst:
            d = np.abs(r.astype(np.int16) - c.astype(np.int16))
            key = (float(d.max()), float(d.sum()))
            if key > self.worst_key:
                self.worst_key = key
                self.worst = (i, ref_frame.copy(), frame.copy(), box)
            out_key = float(np.abs(np.asarray(pred, dtype=np.float32) - ref_pred).max())
            if out_key > self.worst_output_key:
                self.worst_output_key = out_key
                self.worst_output = (i, np.array(ref_pred, dtype=np.float32), np.array(pred, dtype=np.float32))

    def finish(self) -> None:
        judge_stages(self.result, self.profile, ((MODEL_OUTPUT, self.output), (FINAL_FRAME, self.final)))


def compare_segments(template: Any, segments: list[Segment], plan: list[dict[str, Any]], reference: Any,
                      trackers: list[Tracker], backends: dict[int, Any], *, batch: int | None, keep_worst: bool,
                      progress: bool) -> float:
    """Stream every segment through the reference and every open candidate, comparing frame by frame; returns the
    standard deviation of the reference output (a nearly constant one proves little)."""
    from framegen.toolkit.frames.render import iter_frames

    digests = {f["frame"]: f["sha256"] for f in plan}
    ref_n, ref_sum, ref_sq = 0, 0.0, 0.0
    total = sum(s.count for s in segments)
    with ProgressBar(total * (1 + len(backends)), progress) as bar:
        for seg in segments:
            streams = {k: iter_frames(template, seg.features, be, batch=batch, start_frame=seg.start_frame,
                                      max_frames=seg.count) for k, be in backends.items()}
            ref_stream = iter_frames(template, seg.features, reference, batch=batch, start_frame=seg.start_frame,
                                     max_frames=seg.count)
            try:
                for j, _tindex, prepared, ref_pred, ref_frame in ref_stream:
                    bar.advance()
                    i = seg.offset + int(j)
                    ref_n += ref_pred.size
                    ref_sum += float(ref_pred.sum(dtype=np.float64))
                    ref_sq += float(np.square(ref_pred, dtype=np.float64).sum())
                    for k in list(streams):
                        tr = trackers[k]
                        try:
                            cj, _, _, pred, frame = next(streams[k])
                        except StopIteration:
                            tr.result.error = f"stopped after {tr.result.frames} frames"
                        except FramegenError as exc:
                            tr.result.error = f"failed at frame {i}: {exc}"
                        else:
                            bar.advance()
                            if cj == j:
                                tr.add(i, prepared.box, ref_pred, pred, ref_frame, frame, keep_worst, digests.get(i))
                                continue
                            tr.result.error = f"yielded frame {seg.offset + cj} where the reference has frame {i}"
                        close_stream(streams.pop(k))
                        backends.pop(k).close()
            finally:
                for stream in streams.values():
                    close_stream(stream)
                close_stream(ref_stream)
    mean = ref_sum / ref_n if ref_n else 0.0
    return math.sqrt(max(ref_sq / ref_n - mean * mean, 0.0)) if ref_n else 0.0


def close_stream(stream: Any) -> None:
    """Close a frame iterator (its pipeline threads stop)."""
    if hasattr(stream, "close"):
        stream.close()


def write_heatmaps(trackers: list[Tracker], heatmaps: str | os.PathLike[str]) -> None:
    """One heat map PNG per candidate (its worst frame, and its worst model output) into ``heatmaps``."""
    from framegen.toolkit.compare.heatmap import write_heatmap, write_output_heatmap

    out_dir = Path(heatmaps)
    out_dir.mkdir(parents=True, exist_ok=True)
    for tr in trackers:
        if tr.worst is None:
            continue
        i, ref_frame, frame, box = tr.worst
        name = tr.result.label.replace("/", "_").replace(":", "_").replace("@", "_") + ".png"
        path = write_heatmap(out_dir / name, ref_frame, frame, box, f"{tr.result.label} vs {REFERENCE}:fp32, frame {i}")
        tr.result.heatmap = os.fspath(path)
        if tr.worst_output is not None:
            j, ref_pred, pred = tr.worst_output
            out = write_output_heatmap(out_dir / name.replace(".png", ".model_output.png"), ref_pred, pred,
                                       f"{tr.result.label} model output vs {REFERENCE}:fp32, frame {j}")
            tr.result.heatmap_output = os.fspath(out)


class ProgressBar:
    """A transient rich progress bar on stderr over backend-frames, or nothing."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self.bar, self.task = total, enabled, None, None

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("parity"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                console=err, transient=True)
            self.bar.__enter__()
            self.task = self.bar.add_task("parity", total=self.total)
        return self

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, 1)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
