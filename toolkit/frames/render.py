"""The streamed render: template frames in ping-pong order + audio windows -> backend -> paste-back -> writers.

Output frame ``i`` uses template frame ``template.template_index(i, start_frame)`` and audio window ``i`` (feature
rows i-8..i+7), exactly like SyncTalk_2D's ``inference_328.py``. Frames flow through bounded queues between
threads (prepare batch -> infer -> paste -> encode -> PNG), so memory stays flat however long the video, the stages
overlap, and frames leave in order. Per-frame work outside inference is kept small: crops are computed once per
template frame (:class:`~toolkit.preprocess.PreparedTemplate`), and OpenCV runs single-threaded so it does not
fight the backend for the cores.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from framegen.models.contract import INNER_OFFSET, INNER_SIZE
from framegen.models.errors import FramegenError
from framegen.models.pixels import pred_to_uint8
from framegen.runtimes.base import Backend
from framegen.toolkit.common.console import err
from framegen.toolkit.frames.pipeline import Pipeline, PipelineTimings, Stage
from framegen.toolkit.frames.video import (
    DEFAULT_CRF,
    DEFAULT_PRESET,
    DEFAULT_THREADS,
    FramesDirWriter,
    VideoWriter,
    check_video_size,
)
from framegen.toolkit.inputs.features import audio_windows, fps, validate_features
from framegen.toolkit.inputs.preprocess import PreparedFrame, PreparedTemplate, cv2_single_thread, paste_back

# Stage names, also the keys of RenderStats.stages.
PREPARE, INFER, PASTE, ENCODE, PNG = "prepare", "infer", "paste", "encode", "png"


class RenderError(FramegenError):
    """Render arguments that do not fit the template, features or backend."""


class RenderedFrame(NamedTuple):
    """One output frame: its index, the template frame it used, that frame's crop, the raw prediction, the frame."""

    i: int
    template_index: int
    prepared: PreparedFrame
    pred: np.ndarray  # the backend's output: float32 (3, 320, 320), or uint8 (320, 320, 3) from an image-I/O model
    frame: np.ndarray  # uint8 (H, W, 3) BGR, the pasted result


@dataclass
class RenderStats:
    """What a render did: frames, wall seconds of the render loop, frames per second, and per-stage busy time."""

    frames: int
    seconds: float
    fps: float
    backend: str
    batch: int
    mode: str = ""
    precision: str = ""
    start_frame: int = 0
    out: str | None = None
    out_bytes: int | None = None
    frames_dir: str | None = None
    encoder: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (``--stats``); ``stages`` holds each stage's busy seconds, items and share of the wall
        time (stages overlap, so shares add up to more than 1 when the pipeline keeps several cores busy)."""
        d = asdict(self)
        for v in d["stages"].values():
            v["share"] = round(v["seconds"] / self.seconds, 4) if self.seconds > 0 else None
        return d


def frame_count(features: np.ndarray, max_frames: int | None = None) -> int:
    """Output frames of a render: one per feature row, at most ``max_frames``."""
    n = int(features.shape[0])
    if max_frames is not None:
        if max_frames < 1:
            raise RenderError(f"--max-frames {max_frames}: must be at least 1")
        n = min(n, max_frames)
    return n


def check_render(template: PreparedTemplate, features: np.ndarray, backend: Backend, *, batch: int | None = None,
                 start_frame: int = 0, max_frames: int | None = None) -> tuple[np.ndarray, int, int]:
    """Validate everything a render needs before any output exists; returns (features (N, F), frames, batch).

    Features must fit the backend's mode, the start frame must be a usable template frame, the batch positive.
    """
    feats = validate_features(features, backend.mode, "features")
    count = frame_count(feats, max_frames)
    size = backend.default_batch if batch is None else int(batch)
    if size < 1:
        raise RenderError(f"--batch {batch}: must be at least 1")
    template.template_index(0, start_frame)  # PreprocessError naming the start frame when it is not usable
    return feats, count, size




def iter_frames(template: PreparedTemplate, features: np.ndarray, backend: Backend, *, batch: int | None = None,
                start_frame: int = 0, max_frames: int | None = None,
                timings: PipelineTimings | None = None) -> Iterator[RenderedFrame]:
    """Yield every output frame in order, with batches of ``batch`` frames (the last one partial) inferred at once.

    Preparing batches, inference and paste-back run on three threads joined by bounded queues; closing the
    iterator early stops them. ``timings`` collects each stage's busy time.
    """
    feats, count, size = check_render(template, features, backend, batch=batch, start_frame=start_frame,
                                      max_frames=max_frames)
    mode = backend.mode
    # An image-I/O model takes the uint8 reference crop and does /255, the mask and the truncation itself.
    image_io = backend.io == "image"
    inner = slice(INNER_OFFSET, INNER_OFFSET + INNER_SIZE)

    def batches() -> Iterator[tuple[list[int], list[PreparedFrame], np.ndarray, np.ndarray]]:
        for b0 in range(0, count, size):
            idx = list(range(b0, min(b0 + size, count)))
            prepared = [template.prepared(template.template_index(i, start_frame)) for i in idx]
            if image_io:
                image = np.stack([p.crop328[inner, inner] for p in prepared])
            else:
                image = np.empty((len(idx), 6, INNER_SIZE, INNER_SIZE), dtype=np.float32)
                for slot, p in enumerate(prepared):
                    p.image_input(out=image[slot])
            yield idx, prepared, image, audio_windows(feats, idx, mode)

    def infer(item: tuple[list[int], list[PreparedFrame], np.ndarray, np.ndarray]) -> tuple[Any, ...]:
        idx, prepared, image, audio = item
        return idx, prepared, backend.infer(image, audio)  # the backend checks the output against its model

    def paste(item: tuple[list[int], list[PreparedFrame], np.ndarray]) -> list[RenderedFrame]:
        idx, prepared, pred = item
        out = []
        for slot, (i, p) in enumerate(zip(idx, prepared, strict=True)):
            pred_u8 = pred[slot] if image_io else pred_to_uint8(pred[slot])
            frame = paste_back(template.frame(p.index), p.box, p.crop328, pred_u8)
            out.append(RenderedFrame(i, p.index, p, pred[slot], frame))
        return out

    workers = max(1, int(getattr(backend, "concurrent_workers", 1)))
    stages = [Stage(INFER, infer, workers=workers, queue_size=2 * workers), Stage(PASTE, paste, queue_size=2)]
    with cv2_single_thread(), Pipeline(batches(), stages, source_name=PREPARE, timings=timings) as pipe:
        for group in pipe:
            yield from group


def _progress_bar(total: int) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class _Fps(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.2f} fps" if speed else "-- fps", style="cyan")

    return Progress(TextColumn("render"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"), _Fps(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=err, transient=False)


def render(template: PreparedTemplate, features: np.ndarray, backend: Backend, *,
           out: str | os.PathLike[str] | None = None, frames_dir: str | os.PathLike[str] | None = None,
           batch: int | None = None, start_frame: int = 0, max_frames: int | None = None,
           audio_path: str | os.PathLike[str] | None = None, progress: bool = True, crf: int = DEFAULT_CRF,
           preset: str = DEFAULT_PRESET, encoder_threads: int = DEFAULT_THREADS) -> RenderStats:
    """Render to an mp4 (H.264 + AAC speech, at the mode's fps) and/or a folder of PNGs; returns the stats.

    Everything is checked before the first frame; the outputs appear (renamed from temporary names) only when
    complete, and a failure or KeyboardInterrupt leaves none behind.
    """
    if out is None and frames_dir is None:
        raise RenderError("nothing to write: give an output video (--out) and/or --frames-dir")
    if audio_path is not None and out is None:
        raise RenderError("--audio is muxed into the video: it needs --out")
    _, count, size = check_render(template, features, backend, batch=batch, start_frame=start_frame,
                                  max_frames=max_frames)
    width, height = template.template.width, template.template.height
    rate = fps(backend.mode)
    if out is not None:
        check_video_size(width, height, f"template {template.template.root}")
    timings = PipelineTimings()
    with ExitStack() as stack:
        # Writers open first: a bad output path or audio file fails before any inference.
        video = (stack.enter_context(VideoWriter(out, width, height, rate, audio_path=audio_path, crf=crf,
                                                 preset=preset, threads=encoder_threads))
                 if out is not None else None)
        pngs = stack.enter_context(FramesDirWriter(frames_dir)) if frames_dir is not None else None
        bar = stack.enter_context(_progress_bar(count)) if progress else None
        task = bar.add_task("render", total=count) if bar is not None else None

        def encode(f: RenderedFrame) -> RenderedFrame:
            # The template frame's I420 form is converted once; per output frame only the pasted box is.
            video.write(f.frame, base_i420=template.frame_i420(f.template_index), box=f.prepared.box)
            return f

        def write_png(f: RenderedFrame) -> RenderedFrame:
            pngs.write(f.frame)
            return f

        sinks = ([Stage(ENCODE, encode, queue_size=4)] if video is not None else []) + \
                ([Stage(PNG, write_png, queue_size=4)] if pngs is not None else [])
        t0 = time.perf_counter()
        frames = iter_frames(template, features, backend, batch=size, start_frame=start_frame,
                             max_frames=max_frames, timings=timings)
        done = 0
        with Pipeline(frames, sinks, source_name="render", timings=timings) as pipe:
            for _ in pipe:
                done += 1
                if bar is not None:
                    bar.advance(task)
        if done != count:
            raise RenderError(f"internal: rendered {done} of {count} frames")
    # Leaving the ExitStack finished the writers: their flush belongs to the render's wall time.
    seconds = time.perf_counter() - t0
    stages = timings.as_dict()
    stages.pop("render", None)  # the sinks' source is iter_frames itself: its time is the other stages'
    out_bytes = Path(out).stat().st_size if out is not None else None
    return RenderStats(
        frames=done, seconds=round(seconds, 4), fps=round(done / seconds, 4) if seconds > 0 else 0.0,
        backend=backend.name, batch=size, mode=backend.mode, precision=backend.info.precision,
        start_frame=start_frame, out=os.fspath(out) if out is not None else None, out_bytes=out_bytes,
        frames_dir=os.fspath(frames_dir) if frames_dir is not None else None,
        encoder={"codec": "libx264", "preset": preset, "crf": crf, "threads": encoder_threads, "fps": rate,
                 "audio": os.fspath(audio_path) if audio_path is not None else None,
                 "audio_seconds": round(video.audio_seconds, 4) if video.audio_seconds is not None else None}
        if video is not None else {},
        stages=stages,
    )
