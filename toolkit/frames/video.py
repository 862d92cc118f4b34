"""Writing rendered frames: H.264 + AAC in one pass with PyAV, and lossless PNG frame folders, both atomically.

The mp4 is written to a hidden sibling and renamed only when the last packet is muxed, so a failed or interrupted
render never leaves a file that looks finished. The speech is decoded, resampled to the AAC encoder's format and
interleaved with the video as frames arrive, cut at the video's duration (frames / fps).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from framegen.models.atomic import AtomicOutput
from framegen.models.errors import FramegenError, first_line
from framegen.toolkit.inputs.preprocess import to_i420

# Muxer per output suffix; the temporary name hides the suffix, so the format is given explicitly.
_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
# Measured at 1280x720 (one x264 thread, CRF 20, 100 frames of a synthetic template; 2-core AMX Xeon, 2026-12-05):
# ultrafast 3.5, superfast 6.6, veryfast 9.3, faster 13.5 CPU-ms per frame, PSNR 42.8 / 42.9 / 41.5 / 41.8 dB, files
# 22.7 / 14.2 / 4.0 / 4.0 KiB per frame. With the model at 2.2-2.3x the fp32 speed (OpenVINO bf16 / int8), one
# frame's inference costs about 43 CPU-ms, and every CPU-ms of encoding is about 2 % of it. Renders of 300 frames
# side by side in one process (OpenVINO bf16): 0.83x model-only with superfast, 0.89-0.90x with ultrafast
# (2026-12-05); 0.80x and 0.85x (scripts/e2e_split.py, 2026-12-06; another run of the same steps: 0.86x and 0.88x).
# ultrafast halves the encoder's CPU for the same PSNR at CRF 20 and 1.6x superfast's file size; ``--preset`` trades
# CPU for smaller files.
DEFAULT_PRESET = "ultrafast"
DEFAULT_CRF = 20  # SyncTalk_2D's own final ffmpeg pass uses -crf 20
DEFAULT_THREADS = 1  # x264's frame threads would compete with inference for the 2 cores
PNG_NAME = re.compile(r"^\d{6}\.png$")


class VideoError(FramegenError):
    """An output or audio file that cannot be written or read."""


def container_format(path: str | os.PathLike[str]) -> str:
    """The muxer for an output path's suffix (mp4, mov, mkv), or a one-line error naming the path."""
    suffix = Path(path).suffix.lower()
    if suffix not in _CONTAINERS:
        raise VideoError(f"{path}: unsupported video suffix {suffix or '(none)'!r}; use one of "
                         f"{', '.join(sorted(_CONTAINERS))}")
    return _CONTAINERS[suffix]


def check_video_size(width: int, height: int, where: str = "video") -> None:
    """H.264 in yuv420p needs even dimensions; refuse odd ones with one line."""
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise VideoError(f"{where}: {width}x{height} cannot be encoded as H.264 yuv420p (width and height must be "
                         f"even); write PNGs with --frames-dir instead")


class _AudioSource:
    """Decodes an audio file lazily and hands out AAC-ready planar float32 blocks with running sample counts."""

    def __init__(self, path: Path) -> None:
        import av

        self.path = path
        try:
            self._container = av.open(os.fspath(path))
        except (av.FFmpegError, OSError) as exc:
            raise VideoError(f"{path}: cannot open audio ({first_line(exc)})") from exc
        if not self._container.streams.audio:
            self._container.close()
            raise VideoError(f"{path}: no audio stream")
        stream = self._container.streams.audio[0]
        channels = stream.codec_context.channels or 1
        self.layout = "mono" if channels == 1 else "stereo"
        rates = av.codec.Codec("aac", "w").audio_rates or ()
        rate = stream.codec_context.sample_rate or 48000
        self.rate = rate if not rates or rate in rates else 48000
        self._resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
        self._frames = self._decode(stream)
        self._pending: list[np.ndarray] = []
        self._pending_len = 0
        self.exhausted = False

    @property
    def done(self) -> bool:
        """True once the file has ended and every decoded sample was taken."""
        return self.exhausted and self._pending_len == 0

    def _decode(self, stream: Any) -> Iterator[np.ndarray]:
        import av

        try:
            for frame in self._container.decode(stream):
                for out in self._resampler.resample(frame):
                    yield out.to_ndarray()
            for out in self._resampler.resample(None):
                yield out.to_ndarray()
        except av.FFmpegError as exc:
            raise VideoError(f"{self.path}: cannot decode audio ({first_line(exc)})") from exc

    def take(self, count: int) -> np.ndarray:
        """Up to ``count`` samples, shape (channels, n); fewer only when the file has ended."""
        while self._pending_len < count and not self.exhausted:
            block = next(self._frames, None)
            if block is None:
                self.exhausted = True
                break
            self._pending.append(np.ascontiguousarray(block, dtype=np.float32))
            self._pending_len += block.shape[1]
        if not self._pending:
            return np.zeros((1 if self.layout == "mono" else 2, 0), np.float32)
        joined = np.concatenate(self._pending, axis=1) if len(self._pending) > 1 else self._pending[0]
        head, tail = joined[:, :count], joined[:, count:]
        self._pending = [tail] if tail.shape[1] else []
        self._pending_len = tail.shape[1]
        return head

    def close(self) -> None:
        """Close the input file."""
        self._container.close()


def _io_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """A writer method whose OS / FFmpeg errors (disk full, read-only, permission) become one VideoError line naming
    the output; the caller's abort then removes the temporary."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        import av

        try:
            return method(self, *args, **kwargs)
        except (av.FFmpegError, OSError) as exc:
            raise VideoError(f"{self.path}: cannot write ({first_line(exc)})") from None

    return wrapper



class _CommitOnSuccess:
    """Context-manager protocol of an output that is completed by ``close()`` and discarded by ``_abort()``."""

    def close(self) -> Path:  # pragma: no cover - overridden
        raise NotImplementedError

    def _abort(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            try:
                self.close()
            except BaseException:
                self._abort()
                raise
        else:
            self._abort()


def _planes(i420: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    flat = i420.reshape(-1)
    y = flat[: height * width].reshape(height, width)
    q = (height // 2) * (width // 2)
    u = flat[height * width: height * width + q].reshape(height // 2, width // 2)
    v = flat[height * width + q: height * width + 2 * q].reshape(height // 2, width // 2)
    return y, u, v


def even_region(box: tuple[int, int, int, int], height: int, width: int) -> tuple[int, int, int, int]:
    """``box`` (x0, y0, x1, y1) widened to even edges inside the frame: whole 2x2 chroma blocks."""
    x0, y0, x1, y1 = (int(v) for v in box)
    return max(0, x0 & ~1), max(0, y0 & ~1), min(width, (x1 + 1) & ~1), min(height, (y1 + 1) & ~1)


def i420_pasted(base_i420: np.ndarray, frame_bgr: np.ndarray, box: tuple[int, int, int, int],
                out: np.ndarray | None = None) -> np.ndarray:
    """The I420 form of ``frame_bgr``, which equals the frame ``base_i420`` was converted from everywhere outside
    ``box``: the base's planes with only the box (widened to whole 2x2 chroma blocks) converted. Equal, byte for
    byte, to :func:`to_i420` of the whole frame (each chroma sample depends only on its own 2x2 block), for a
    fraction of the work when the box is a small part of the frame. ``out``: where to write it (a
    ``(H * 3 / 2, W)`` uint8 array; may be ``base_i420`` itself)."""
    height, width = frame_bgr.shape[:2]
    if out is None:
        out = base_i420.copy()
    elif out is not base_i420:
        np.copyto(out, base_i420)
    _convert_box(_planes(out, height, width), frame_bgr, box)
    return out


def _convert_box(dst: tuple[np.ndarray, np.ndarray, np.ndarray], frame_bgr: np.ndarray,
                 box: tuple[int, int, int, int]) -> None:
    """Overwrite the Y, U, V planes ``dst`` inside ``box`` (widened to whole 2x2 chroma blocks) with the I420 form
    of ``frame_bgr`` there."""
    height, width = frame_bgr.shape[:2]
    x0, y0, x1, y1 = even_region(box, height, width)
    if x1 <= x0 or y1 <= y0:
        return
    src = _planes(to_i420(np.ascontiguousarray(frame_bgr[y0:y1, x0:x1])), y1 - y0, x1 - x0)
    dst[0][y0:y1, x0:x1] = src[0]
    for d, s in zip(dst[1:], src[1:], strict=True):
        d[y0 // 2:y1 // 2, x0 // 2:x1 // 2] = s


def _frame_planes(frame: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Writable numpy views of a yuv420p ``av.VideoFrame``'s Y, U, V planes (rows may be padded to ``line_size``)."""
    views = []
    for plane in frame.planes:
        rows = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
        views.append(rows[:, :plane.width])
    return views[0], views[1], views[2]


class VideoWriter(_CommitOnSuccess):
    """H.264 (libx264, yuv420p, BT.601 limited range) at ``fps`` with optional AAC speech, written atomically.

    Use as a context manager: frames go in with :meth:`write` (BGR uint8, height x width x 3); leaving the block
    normally finishes the file and renames it into place; leaving it with an exception (KeyboardInterrupt included)
    deletes the temporary file. ``audio_path`` is cut at the video's duration, frames / fps.
    """

    def __init__(self, path: str | os.PathLike[str], width: int, height: int, fps: int,
                 audio_path: str | os.PathLike[str] | None = None, crf: int = DEFAULT_CRF,
                 preset: str = DEFAULT_PRESET, threads: int = DEFAULT_THREADS) -> None:
        self.path = Path(path)
        self.width, self.height, self.fps = int(width), int(height), int(fps)
        self.audio_path = Path(audio_path) if audio_path is not None else None
        self.crf, self.preset, self.threads = int(crf), preset, int(threads)
        self.frames = 0
        self._fmt = container_format(self.path)
        check_video_size(self.width, self.height, str(self.path))
        if self.fps <= 0:
            raise VideoError(f"{self.path}: fps must be positive, got {fps}")
        if not 0 <= self.crf <= 51:
            raise VideoError(f"{self.path}: crf must be 0..51, got {crf}")
        if preset not in PRESETS:
            raise VideoError(f"{self.path}: unknown x264 preset {preset!r}; one of {', '.join(PRESETS)}")
        if not self.path.parent.is_dir():
            raise VideoError(f"{self.path}: output folder {self.path.parent} does not exist")
        self._output = AtomicOutput(self.path)
        self.tmp_path = self._output.tmp
        self._container: Any = None
        self._audio: _AudioSource | None = None
        self._audio_sent = 0
        self.audio_rate: int | None = None
        self._last: Any = None  # the last frame encoded (av.VideoFrame): what :meth:`repeat` sends again
        try:
            self._open()
        except BaseException:
            self._abort()  # releases the destination for the next writer
            raise

    def _open(self) -> None:
        import av

        if self.audio_path is not None:
            self._audio = _AudioSource(self.audio_path)  # fail on a bad audio file before any output exists
            self.audio_rate = self._audio.rate
        try:
            self._container = av.open(os.fspath(self.tmp_path), "w", format=self._fmt)
            vs = self._container.add_stream("libx264", rate=self.fps)
            vs.width, vs.height, vs.pix_fmt = self.width, self.height, "yuv420p"
            vs.options = {"crf": str(self.crf), "preset": self.preset}
            cc = vs.codec_context
            cc.thread_count = self.threads
            # Frames are converted by OpenCV (BT.601, limited range; ~13x cheaper than swscale here). HD players
            # assume BT.709 for untagged video, so the stream says BT.601 (SMPTE 170M) explicitly.
            cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 6, 6, 6, 1
            self._vstream = vs
            if self._audio is not None:
                aus = self._container.add_stream("aac", rate=self._audio.rate)
                aus.layout = self._audio.layout
                aus.bit_rate = 96_000 if self._audio.layout == "mono" else 160_000
                self._astream = aus
        except (av.FFmpegError, OSError) as exc:
            self._abort()
            raise VideoError(f"{self.path}: cannot open for writing ({first_line(exc)})") from exc

    @_io_errors
    def write(self, frame_bgr: np.ndarray, *, base_i420: np.ndarray | None = None,
              box: tuple[int, int, int, int] | None = None) -> None:
        """Encode one BGR uint8 frame of the writer's size (and the audio up to its end).

        ``base_i420`` + ``box``: the frame equals the frame whose I420 form is ``base_i420`` (:func:`to_i420`, such
        as a template frame's, converted once) everywhere outside ``box``; only the box is converted
        (:func:`i420_pasted`, the same bytes as converting the whole frame).
        """
        import av

        if self._container is None:
            raise VideoError(f"{self.path}: writer is closed")
        if frame_bgr.shape != (self.height, self.width, 3) or frame_bgr.dtype != np.uint8:
            raise VideoError(f"{self.path}: frame {self.frames} is {frame_bgr.dtype} {list(frame_bgr.shape)}, "
                             f"expected uint8 [{self.height}, {self.width}, 3]")
        if base_i420 is not None and box is not None:
            if base_i420.shape != (self.height * 3 // 2, self.width) or base_i420.dtype != np.uint8:
                raise VideoError(f"{self.path}: frame {self.frames}: base I420 is {base_i420.dtype} "
                                 f"{list(base_i420.shape)}, expected uint8 [{self.height * 3 // 2}, {self.width}]")
            # Straight into the encoder's frame: the template's planes, then the box; one copy of the frame fewer.
            frame = av.VideoFrame(self.width, self.height, "yuv420p")
            dst = _frame_planes(frame)
            for d, b in zip(dst, _planes(base_i420, self.height, self.width), strict=True):
                d[...] = b
            _convert_box(dst, frame_bgr, box)
        else:
            frame = av.VideoFrame.from_ndarray(to_i420(frame_bgr), format="yuv420p")
        self._encode(frame)

    @_io_errors
    def repeat(self) -> None:
        """Encode the last frame again (a live stream's held frame): its I420 planes are copied, not converted from
        BGR again, and the same bitstream results as :meth:`write` of the same frame."""
        import av

        if self._container is None:
            raise VideoError(f"{self.path}: writer is closed")
        if self._last is None:
            raise VideoError(f"{self.path}: no frame to repeat yet")
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        for d, b in zip(_frame_planes(frame), _frame_planes(self._last), strict=True):
            d[...] = b
        self._encode(frame)

    def _encode(self, frame: Any) -> None:
        frame.pts = self.frames
        for packet in self._vstream.encode(frame):
            self._container.mux(packet)
        self._last = frame
        self.frames += 1
        self._feed_audio(final=False)

    def _audio_target(self) -> int:
        assert self._audio is not None
        return (self.frames * self._audio.rate) // self.fps

    def _feed_audio(self, final: bool) -> None:
        """Encode audio up to the video's current end, in encoder-sized blocks (a short last block when final)."""
        import av

        if self._audio is None:
            return
        block = self._astream.codec_context.frame_size or 1024
        target = self._audio_target()
        while self._audio_sent < target and not self._audio.done:
            want = min(block, target - self._audio_sent)
            if want < block and not final:
                break
            samples = self._audio.take(want)
            if samples.shape[1] == 0:
                break
            aframe = av.AudioFrame.from_ndarray(samples, format="fltp", layout=self._audio.layout)
            aframe.sample_rate = self._audio.rate
            aframe.pts = self._audio_sent
            for packet in self._astream.encode(aframe):
                self._container.mux(packet)
            self._audio_sent += samples.shape[1]

    @_io_errors
    def close(self) -> Path:
        """Flush the encoders, close the file and rename it into place; returns the final path."""
        if self._container is None:
            raise VideoError(f"{self.path}: writer is closed")
        if self.frames == 0:
            raise VideoError(f"{self.path}: no frames were written")
        for packet in self._vstream.encode():
            self._container.mux(packet)
        if self._audio is not None:
            self._feed_audio(final=True)
            for packet in self._astream.encode():
                self._container.mux(packet)
            self._audio.close()
            self._audio = None
        self._container.close()
        self._container = None
        return self._output.commit()

    @property
    def audio_seconds(self) -> float | None:
        """Seconds of audio sent to the encoder so far (``None`` without audio)."""
        return self._audio_sent / self.audio_rate if self.audio_rate else None

    def _abort(self) -> None:
        """Drop everything written so far; never raises."""
        with contextlib.suppress(Exception):  # the file is deleted anyway
            if self._container is not None:
                self._container.close()
        self._container = None
        if self._audio is not None:
            with contextlib.suppress(Exception):
                self._audio.close()
            self._audio = None
        self._output.abort()



class FramesDirWriter(_CommitOnSuccess):
    """Lossless PNG frames ``000000.png``, ... written into a hidden sibling folder that replaces ``path`` on success.

    An existing ``path`` may only hold earlier frame PNGs (or be empty): those are replaced as a whole; anything
    else in it makes the writer refuse, so a typo never deletes a user's files.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import cv2

        self.path = Path(path)
        # zlib level 1 with RLE and the SUB filter: 13 ms per 1280x720 frame instead of 29 ms (level 1 defaults),
        # and smaller files; still lossless.
        self._params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
        if hasattr(cv2, "IMWRITE_PNG_FILTER"):  # OpenCV >= 4.10
            self._params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]
        check_frames_dir(self.path)
        self._output = AtomicOutput(self.path, directory=True)
        self.tmp_path = self._output.tmp
        self.frames = 0

    @_io_errors
    def write(self, frame_bgr: np.ndarray) -> None:
        """Write the next frame as a lossless PNG."""
        import cv2

        ok, data = cv2.imencode(".png", frame_bgr, self._params)
        if not ok:
            raise VideoError(f"{self.path}: PNG encoding failed at frame {self.frames}")
        (self.tmp_path / f"{self.frames:06d}.png").write_bytes(data.tobytes())
        self.frames += 1

    @_io_errors
    def close(self) -> Path:
        """Move the finished folder into place (replacing an existing frames folder); returns the final path."""
        if self.path.exists():
            check_frames_dir(self.path)
        return self._output.commit()

    def _abort(self) -> None:
        self._output.abort()



def check_frames_dir(path: Path) -> None:
    """Refuse a frames folder that exists as a file or holds anything but ``NNNNNN.png`` frames."""
    if not path.exists():
        if not path.parent.is_dir():
            raise VideoError(f"{path}: parent folder {path.parent} does not exist")
        return
    if not path.is_dir():
        raise VideoError(f"{path}: exists and is not a folder")
    other = [c.name for c in path.iterdir() if not (c.is_file() and PNG_NAME.match(c.name))]
    if other:
        raise VideoError(f"{path}: folder holds files other than frame PNGs (e.g. {sorted(other)[0]}); "
                         f"choose an empty or new folder")


def probe_video(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a written file holds, read back with PyAV: codec, size, fps, frame count, audio codec and seconds."""
    import av

    info: dict[str, Any] = {"path": os.fspath(path)}
    with av.open(os.fspath(path)) as container:
        vs = container.streams.video[0]
        info.update(video_codec=vs.codec_context.name, width=vs.codec_context.width,
                    height=vs.codec_context.height, fps=float(vs.average_rate) if vs.average_rate else None,
                    pix_fmt=vs.codec_context.pix_fmt)
        info["frames"] = sum(1 for _ in container.demux(vs) if _.size)
        info["video_seconds"] = info["frames"] / info["fps"] if info["fps"] else None
        if container.streams.audio:
            aus = container.streams.audio[0]
            info["audio_codec"] = aus.codec_context.name
            info["audio_rate"] = aus.codec_context.sample_rate
            samples = 0
            container.seek(0)
            for frame in container.decode(aus):
                samples += frame.samples
            info["audio_seconds"] = samples / aus.codec_context.sample_rate
        else:
            info["audio_codec"] = None
            info["audio_seconds"] = 0.0
    return info
