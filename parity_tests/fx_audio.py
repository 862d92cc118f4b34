"""Session-scoped audio artifacts (the real speech clip decoded, its mel and features) and audio-file writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import require_fixture

SPEECH = "speech_16k_mono.wav"

__all__ = ["speech_features", "speech_mel", "speech_path", "speech_reference_mel", "speech_wav"]


def write_audio(path: Path, samples: np.ndarray | None, rate: int, codec: str = "pcm_s16le", *,
                video: tuple[int, int] | None = None, fmt: str | None = None) -> Path:
    """Encode float32 samples ``(channels, n)`` with PyAV (``n`` may be 0: an empty stream).

    ``video=(w, h)`` adds an mpeg4 video stream, 25 grey frames per second of audio (a phone 'recording');
    ``samples=None`` writes the video alone (one second).
    """
    import av

    layout = None
    with av.open(str(path), mode="w", format=fmt) as out:
        vstream = None
        if video is not None:
            vstream = out.add_stream("mpeg4", rate=25)
            vstream.width, vstream.height = video
            vstream.pix_fmt = "yuv420p"
        astream = None
        if samples is not None:
            layout = {1: "mono", 2: "stereo"}[samples.shape[0]]
            astream = out.add_stream(codec, rate=rate, layout=layout)
        if vstream is not None:
            seconds = samples.shape[1] / rate if samples is not None else 1.0
            for i in range(max(1, int(seconds * 25))):
                img = np.full((video[1], video[0], 3), (i * 7) % 255, dtype=np.uint8)
                for pkt in vstream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(pkt)
            for pkt in vstream.encode(None):
                out.mux(pkt)
        if astream is not None:
            if samples.shape[1]:
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, dtype=np.float32), format="fltp",
                                                   layout=layout)
                frame.sample_rate = rate
                for pkt in astream.encode(frame):
                    out.mux(pkt)
            for pkt in astream.encode(None):
                out.mux(pkt)
    return path


def tone(freq: float, seconds: float, rate: int = 16000, amp: float = 0.5) -> np.ndarray:
    """A float32 sine."""
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def librosa_reference_mel(wav: np.ndarray) -> np.ndarray:
    """SyncTalk_2D's ``melspectrogram(wav).T`` restated with librosa + scipy (test-only), float64 (T, 80)."""
    librosa = pytest.importorskip("librosa")
    from scipy import signal

    emphasised = signal.lfilter([1, -0.97], [1], wav)
    spec = np.abs(librosa.stft(y=emphasised, n_fft=800, hop_length=200, win_length=800))
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    db = 20 * np.log10(np.maximum(np.exp(-5 * np.log(10)), np.dot(basis, spec))) - 20
    return np.clip(8.0 * ((db + 100.0) / 100.0) - 4.0, -4.0, 4.0).T


@pytest.fixture(scope="session")
def speech_path() -> Path:
    """The real 44.9 s, 16 kHz mono speech clip from ../shared."""
    return require_fixture(SPEECH)


@pytest.fixture(scope="session")
def speech_wav(speech_path) -> np.ndarray:
    """The speech clip decoded by framegen (PyAV)."""
    from framegen.toolkit.inputs.audio import decode_audio

    return decode_audio(speech_path)


@pytest.fixture(scope="session")
def speech_mel(speech_wav) -> np.ndarray:
    """framegen's numpy mel of the speech clip, float32 (T, 80)."""
    from framegen.toolkit.inputs.audio import melspectrogram

    return melspectrogram(speech_wav)


@pytest.fixture(scope="session")
def speech_reference_mel(speech_path) -> np.ndarray:
    """SyncTalk_2D's mel of the speech clip: librosa.load + the librosa restatement (skips without librosa)."""
    librosa = pytest.importorskip("librosa")
    return librosa_reference_mel(librosa.load(str(speech_path), sr=16000)[0])


@pytest.fixture(scope="session")
def speech_features(speech_mel, audio_encoder) -> np.ndarray:
    """framegen's 'ave' features of the whole speech clip through the seeded encoder, float32 (N, 512)."""
    from framegen.toolkit.inputs.audio import ave_features, torch_encoder_fn

    return ave_features(speech_mel, torch_encoder_fn(audio_encoder))
