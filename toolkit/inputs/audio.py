"""Any audio file -> 16 kHz mono samples -> SyncTalk_2D's mel spectrogram -> 'ave' features.

Every number follows SyncTalk_2D's ``utils.py`` / ``inference_328.py`` (librosa >= 0.10 based), restated in numpy so
that the runtime needs neither librosa nor scipy; ``parity_tests/test_audio.py`` proves the equality against librosa.
The parameters live in :mod:`framegen.models.contract`.

Decoding uses PyAV (FFmpeg) for any container it can read (wav, mp3, m4a/AAC, flac, ogg, the audio track of a
video). Channels are averaged in numpy, as ``librosa.load(mono=True)`` does: FFmpeg's own stereo -> mono downmix
scales by 1/sqrt(2) instead of 1/2, which would shift every mel value by 3 dB.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from framegen.models.contract import (
    ENC_MEL_WINDOW,
    ENCODER_FPS,
    FEATURE_WIDTH,
    HOP,
    MEL,
    MEL_FRAMES_PER_SECOND,
    MIN_SAMPLES,
    N_FFT,
    SAMPLE_RATE,
)
from framegen.models.errors import FramegenError, first_line
from framegen.toolkit.common.console import err

if TYPE_CHECKING:
    from torch import nn

_BLOCK_FRAMES = 2048  # STFT frames per block: bounds memory on long files (~30 MB per block)


class AudioError(FramegenError):
    """An audio file that cannot be read, has no audio, or is too short."""


# --------------------------------------------------------------------------------------------------------- decoding


class _Growable:
    """A float32 buffer filled in order; grows geometrically so decoding never holds a list of chunks."""

    def __init__(self, capacity: int) -> None:
        self.data = np.empty(max(capacity, 1 << 18), dtype=np.float32)
        self.size = 0

    def append(self, chunk: np.ndarray) -> None:
        end = self.size + chunk.shape[0]
        if end > self.data.shape[0]:
            grown = np.empty(max(end, int(self.data.shape[0] * 1.5)), dtype=np.float32)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size:end] = chunk
        self.size = end

    def result(self) -> np.ndarray:
        if self.data.shape[0] - self.size > max(self.size // 8, 1 << 16):
            return self.data[: self.size].copy()  # release a badly over-estimated allocation
        return self.data[: self.size]


def decode_audio(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode the first audio stream of any file FFmpeg reads to float32 mono at 16 kHz.

    Samples are resampled per channel by FFmpeg (no resampling at all when the file is already 16 kHz, so a 16 kHz
    PCM file gives exactly ``librosa.load(path, sr=16000)``), then averaged over channels. Raises
    :class:`AudioError` (one line naming the file) for a missing file, a file that is not audio or video, a file
    without an audio stream, undecodable data or an empty stream.
    """
    buf = _Growable(0)
    for block in decoded_blocks(path):
        buf.append(block)
    if buf.size == 0:
        raise AudioError(f"{Path(path)}: audio stream holds no samples")
    return buf.result()


def decoded_blocks(path: str | os.PathLike[str]) -> Iterator[np.ndarray]:
    """The first audio stream of ``path`` as it decodes: float32 mono 16 kHz blocks of whatever length FFmpeg's
    resampler hands out, never the whole file at once (:func:`decode_audio` joins them; the live stream re-chunks
    them). Same errors as :func:`decode_audio`; an empty stream yields nothing."""
    import av

    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such audio file")
    if not p.is_file():
        raise AudioError(f"{p}: not a file")
    try:
        container = av.open(str(p), mode="r")
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise AudioError(f"{p}: not an audio or video file FFmpeg can read ({first_line(exc)})") from None
    with container:
        if not container.streams.audio:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            raise AudioError(f"{p}: has no audio stream (found: {', '.join(kinds)})")
        stream = container.streams.audio[0]
        resampler = None
        setup = None

        def mono(frames: list) -> Iterator[np.ndarray]:
            for out in frames:
                planes = out.to_ndarray()  # (channels, samples) float32 planar
                yield planes[0] if planes.shape[0] == 1 else planes.mean(axis=0, dtype=np.float32)

        try:
            for frame in container.decode(stream):
                # A new resampler when the input changes mid-stream (rare: some broadcast AAC switches layout).
                key = (frame.layout.name, frame.format.name, frame.sample_rate)
                if resampler is None or key != setup:
                    if resampler is not None:
                        yield from mono(resampler.resample(None))
                    setup = key
                    resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=SAMPLE_RATE)
                yield from mono(resampler.resample(frame))
            if resampler is not None:
                yield from mono(resampler.resample(None))
        except (av.FFmpegError, ValueError) as exc:
            raise AudioError(f"{p}: audio stream cannot be decoded ({first_line(exc)})") from None


# --------------------------------------------------------------------------------------------------------- mel


_F_SP = 200.0 / 3  # Hz per mel on the linear part of Slaney's scale
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's auditory scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    above = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, above, hz / _F_SP)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    above = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, above, _F_SP * mel)


@lru_cache(maxsize=1)
def mel_basis() -> np.ndarray:
    """The (80, 401) slaney-normalised triangular filterbank, 55..7600 Hz, float32 (as librosa builds it)."""
    n_mels, fmin, fmax = int(MEL["n_mels"]), float(MEL["fmin"]), float(MEL["fmax"])
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    bins = np.fft.rfftfreq(N_FFT, d=1.0 / SAMPLE_RATE)
    widths = np.diff(edges)
    dist = edges[:, None] - bins[None, :]  # (n_mels + 2, bins)
    rising = -dist[:-2] / widths[:-1, None]
    falling = dist[2:] / widths[1:, None]
    basis = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    # Constant energy per band; the product is rounded to float32 like librosa's in-place scaling.
    basis *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    basis.flags.writeable = False
    return basis


@lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    """Periodic Hann window of n_fft samples, evaluated like scipy.signal.get_window('hann', n, fftbins=True)."""
    phase = np.linspace(-np.pi, np.pi, N_FFT + 1)[:-1]
    window = 0.5 + 0.5 * np.cos(phase)
    window.flags.writeable = False
    return window


def mel_frame_count(samples: int) -> int:
    """Mel frames for a signal of ``samples`` samples (centred STFT): ``1 + samples // 200``."""
    return 1 + samples // HOP


def melspectrogram(wav: np.ndarray) -> np.ndarray:
    """SyncTalk_2D's normalised log-mel spectrogram of 16 kHz mono samples, as float32 (T, 80).

    Pre-emphasis 0.97, centred zero-padded STFT (n_fft 800, hop 200, periodic Hann), magnitude, slaney mel basis,
    ``20*log10(max(1e-5, x)) - 20``, ``clip(8 * (S + 100) / 100 - 4, -4, 4)``; computed in float64 like the reference
    (the float32 samples are promoted by the pre-emphasis filter) and cast once at the end. Works block by block, so
    memory stays bounded on long files.
    """
    x = np.asarray(wav)
    if x.ndim != 1:
        raise ValueError(f"expected 1-D mono samples, got shape {x.shape}")
    x = x.astype(np.float32, copy=False)
    n = x.shape[0]
    frames = mel_frame_count(n)
    out = np.empty((frames, int(MEL["n_mels"])), dtype=np.float32)
    for t0 in range(0, frames, _BLOCK_FRAMES):
        t1 = min(t0 + _BLOCK_FRAMES, frames)
        out[t0:t1] = mel_frames(x, t0, t1, n)
    return out


@lru_cache(maxsize=1)
def _basis64() -> np.ndarray:
    basis = mel_basis().astype(np.float64)
    basis.flags.writeable = False
    return basis


def mel_frames(x: np.ndarray, t0: int, t1: int, n: int, x0: int = 0) -> np.ndarray:
    """Mel frames ``t0 .. t1-1`` of a signal of ``n`` samples, float32 (t1 - t0, 80): one block of
    :func:`melspectrogram`, computed by the very same operations (the streaming session calls it on a sliding
    buffer). ``x[j - x0]`` is sample ``j``; it must hold samples ``max(0, 200 t0 - 401) .. min(n, 200 (t1-1) + 400)``.
    Samples at or past ``n`` count as the centred STFT's zero padding, whatever ``x`` holds there.
    """
    k = float(MEL["preemphasis"])
    half = N_FFT // 2
    a, b = t0 * HOP - half, (t1 - 1) * HOP + half  # padded-signal span of these frames
    seg = np.zeros(b - a, dtype=np.float64)
    lo, hi = max(a, 0), min(b, n)
    if hi > lo:
        cur = x[lo - x0:hi - x0].astype(np.float64)
        prev = np.empty_like(cur)
        prev[1:] = cur[:-1]
        prev[0] = x[lo - 1 - x0] if lo > 0 else 0.0
        seg[lo - a:hi - a] = cur - k * prev  # y[n] = x[n] - 0.97 x[n-1], y[0] = x[0]
    framed = np.lib.stride_tricks.sliding_window_view(seg, N_FFT)[::HOP]
    mag = np.abs(np.fft.rfft(framed * _hann(), axis=-1))
    mel = mag @ _basis64().T
    db = 20.0 * np.log10(np.maximum(1e-5, mel)) - 20.0
    return np.clip(8.0 * ((db + 100.0) / 100.0) - 4.0, -4.0, 4.0).astype(np.float32)


# --------------------------------------------------------------------------------------------------------- windows


def window_count(mel_frames: int) -> int:
    """Encoder windows SyncTalk_2D takes from T mel frames: ``int((T - 16) / 80 * 25) + 2``."""
    return int((mel_frames - ENC_MEL_WINDOW) / float(MEL_FRAMES_PER_SECOND) * float(ENCODER_FPS)) + 2


def window_starts(mel_frames: int) -> np.ndarray:
    """First mel frame of each encoder window: ``int(80 * (k / 25))``, pulled back to ``T - 16`` at the end."""
    if mel_frames < ENC_MEL_WINDOW:
        # ValueError: in-memory data has no file to name; callers holding the path wrap it (audio_to_features).
        raise ValueError(f"audio too short: {mel_frames} mel frames, at least {ENC_MEL_WINDOW} needed "
                         f"({MIN_SAMPLES / SAMPLE_RATE:.4f} s)")
    n = window_count(mel_frames)
    # Same float operations as the reference so that truncation lands on the same frame.
    starts = [int(float(MEL_FRAMES_PER_SECOND) * (k / float(ENCODER_FPS))) for k in range(n)]
    return np.minimum(np.asarray(starts, dtype=np.int64), mel_frames - ENC_MEL_WINDOW)


def _gather(mel: np.ndarray, starts: np.ndarray) -> np.ndarray:
    idx = starts[:, None] + np.arange(ENC_MEL_WINDOW)[None, :]
    return np.ascontiguousarray(mel[idx].transpose(0, 2, 1)[:, None], dtype=np.float32)  # (B, 1, 80, 16)


def _check_mel(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel)
    if mel.ndim != 2 or mel.shape[1] != MEL["n_mels"]:
        raise ValueError(f"expected a (T, {MEL['n_mels']}) mel spectrogram, got shape {mel.shape}")
    return mel


def mel_windows(mel: np.ndarray) -> np.ndarray:
    """All encoder inputs at once: float32 (N, 1, 80, 16), mel bins as rows (``AudDataset.__getitem__``)."""
    mel = _check_mel(mel)
    return _gather(mel, window_starts(mel.shape[0]))


def iter_mel_windows(mel: np.ndarray, batch: int = 64) -> Iterator[np.ndarray]:
    """The windows of :func:`mel_windows` in batches of ``batch`` (bounded memory on long files)."""
    mel = _check_mel(mel)
    starts = window_starts(mel.shape[0])
    for i in range(0, starts.shape[0], batch):
        yield _gather(mel, starts[i:i + batch])


def ave_features(mel: np.ndarray, encode: Callable[[np.ndarray], np.ndarray], batch: int = 64,
                 progress: bool = False) -> np.ndarray:
    """SyncTalk_2D 'ave' features: every window through ``encode``, first and last repeated once, float32 (N+2, 512).

    ``encode`` maps float32 (B, 1, 80, 16) to (B, 512) (see :func:`torch_encoder_fn`; an ONNX or Core ML encoder
    works the same). ``progress`` shows a bar on stderr.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    mel = _check_mel(mel)
    total = window_count(mel.shape[0]) if mel.shape[0] >= ENC_MEL_WINDOW else 0
    feats = np.empty((total + 2, FEATURE_WIDTH), dtype=np.float32)
    done = 0
    with _progress(total, enabled=progress) as advance:
        for windows in iter_mel_windows(mel, batch):
            emb = np.asarray(encode(windows))
            if emb.shape != (windows.shape[0], FEATURE_WIDTH):
                raise ValueError(f"encoder returned shape {emb.shape}, expected ({windows.shape[0]}, {FEATURE_WIDTH})")
            feats[1 + done:1 + done + emb.shape[0]] = emb
            done += emb.shape[0]
            advance(emb.shape[0])
    feats[0] = feats[1]
    feats[-1] = feats[-2]
    return feats


class _progress:
    """A rich progress bar on stderr, or nothing; yields an ``advance(n)`` function."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self.bar = total, enabled, None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("audio windows"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            console=err, transient=True)
        self.bar.__enter__()
        task = self.bar.add_task("encode", total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def torch_encoder_fn(encoder_module: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap a ``models.AudioEncoder`` as an ``encode`` callable (no grad, module's device; switches it to eval)."""
    import torch

    module = encoder_module
    module.eval()
    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")

    def encode(windows: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)).to(device)
            return module(x).reshape(x.shape[0], -1).float().cpu().numpy()

    return encode


def audio_to_features(path: str | os.PathLike[str], encode: Callable[[np.ndarray], np.ndarray], batch: int = 64,
                      progress: bool = False) -> np.ndarray:
    """Decode, mel, encode: any audio file to float32 (N, 512) 'ave' features (AudioError if shorter than 0.19 s)."""
    wav = decode_audio(path)
    if wav.shape[0] < MIN_SAMPLES:
        raise AudioError(f"{path}: audio too short ({wav.shape[0] / SAMPLE_RATE:.3f} s); SyncTalk_2D needs at "
                         f"least {MIN_SAMPLES / SAMPLE_RATE:.4f} s")
    return ave_features(melspectrogram(wav), encode, batch=batch, progress=progress)
