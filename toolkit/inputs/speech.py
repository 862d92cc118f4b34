"""Seeded speech-like audio by formant synthesis, with the articulation that produced it.

The demo speaks with it, the benchmarks stream it, and the demo generator is trained on it: because the signal is
synthesised from a plan (syllables, vowels, loudness), the mouth shape that belongs to every 25 fps video frame is
known exactly (:func:`articulation`), which gives the training targets and the lip-sync ground truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from framegen.models.contract import SAMPLE_RATE

#: Formant frequencies (F1, F2, F3 in Hz) of a few vowels of an adult voice.
VOWELS = {"a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (270, 2290, 3010), "o": (570, 840, 2410),
          "u": (300, 870, 2240)}
_BANDWIDTHS = (80.0, 100.0, 140.0)
VIDEO_FPS = 25


@dataclass(frozen=True)
class Speech:
    """A synthesised utterance: the float32 signal and, per sample, the voicing envelope and the formants."""

    wav: np.ndarray
    envelope: np.ndarray
    formants: np.ndarray
    rate: int


def synthesize_speech(seconds: float, rate: int = SAMPLE_RATE, seed: int = 0, *, f0: float = 150.0,
                      tempo: float = 1.0, level: float = 0.6, room: float = 0.004, tract: float = 1.0,
                      breath: float = 0.0, tilt: float = 0.0) -> Speech:
    """Words of 2-4 syllables (vowel formants gliding between syllables, a falling pitch contour with intonation,
    fricative noise at some onsets) separated by short pauses; ``f0`` (Hz), ``tempo`` (syllable-length factor),
    ``level`` (peak) and ``room`` (noise floor) vary the voice. The defaults give the demo's own speech.

    Voices further from the demo's (the training's augmentation): ``tract`` scales every formant (a shorter or
    longer vocal tract), ``breath`` in [0, 1] mixes noise into the glottal source (breathy to whispered), ``tilt``
    in (-1, 1) tilts the spectrum (a first-order filter: > 0 brighter, < 0 duller, like another microphone). The
    articulation (the mouth) depends on the plan only, not on these."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    plan: list[tuple[int, int, str]] = []  # (start, end, vowel) in samples
    t = int(0.15 * rate)
    while t < n - int(0.2 * rate):
        for _ in range(int(rng.integers(2, 5))):
            length = int(rng.uniform(0.12, 0.24) * tempo * rate)
            if t + length > n - int(0.05 * rate):
                break
            plan.append((t, t + length, str(rng.choice(list(VOWELS)))))
            t += length
        t += int(rng.uniform(0.12, 0.3) * tempo * rate)
    time_s = np.arange(n) / rate
    swing = f0 / 150.0
    contour = f0 - 40.0 * swing * time_s / max(seconds, 1e-6)
    pitch = contour + 12.0 * swing * np.sin(2 * math.pi * 0.9 * time_s + rng.uniform(0, 6))
    pitch *= 1.0 + 0.01 * rng.standard_normal(n).cumsum() / np.sqrt(np.arange(1, n + 1))  # slow jitter
    phase = np.cumsum(pitch / rate) % 1.0
    source = (2.0 * phase - 1.0) - 0.5 * np.sin(2 * math.pi * phase)  # a bright, sawtooth-like glottal wave
    if breath > 0:  # its own stream, so the default voice keeps its samples
        aspiration = np.random.default_rng([seed, 1]).standard_normal(n) * float(np.std(source))
        source = (1.0 - breath) * source + breath * aspiration
    envelope = np.zeros(n)
    formants = np.tile(np.array(VOWELS["a"], dtype=np.float64), (n, 1))
    noise_env = np.zeros(n)
    for s0, s1, vowel in plan:
        length = s1 - s0
        ramp = np.minimum(1.0, np.minimum(np.arange(length) / (0.03 * rate), (length - np.arange(length)) /
                                          (0.05 * rate)))
        envelope[s0:s1] = np.maximum(envelope[s0:s1], ramp)
        target = np.array(VOWELS[vowel], dtype=np.float64)
        glide = np.minimum(1.0, np.arange(length) / (0.04 * rate))[:, None]
        formants[s0:s1] = formants[s0 - 1] * (1 - glide) + target * glide if s0 else target
        formants[s1:] = target
        if rng.random() < 0.4:  # a fricative onset ('s', 'f', 'sh'-like noise) before the vowel
            k = int(0.06 * rate)
            lo = max(0, s0 - k)
            noise_env[lo:s0] = np.hanning(2 * k)[k - (s0 - lo):k]
    voiced = _formant_filter(source * envelope, formants * tract, rate)
    noise = rng.standard_normal(n)
    hiss = np.diff(noise, prepend=0.0) * noise_env * 0.25  # differenced noise: energy up high, like fricatives
    wav = voiced + hiss + room * rng.standard_normal(n)  # a quiet room: pauses are not digital silence
    if tilt:
        wav = wav - tilt * np.concatenate([[0.0], wav[:-1]])
    peak = float(np.abs(wav).max()) or 1.0
    return Speech((level * wav / peak).astype(np.float32), envelope, formants, rate)


def speech_like(seconds: float = 3.0, rate: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """The demo's seeded speech-like float32 signal (see :func:`synthesize_speech`)."""
    return synthesize_speech(seconds, rate, seed).wav


def articulation(speech: Speech, fps: int = VIDEO_FPS) -> tuple[np.ndarray, np.ndarray]:
    """The mouth of every video frame: ``opening`` in [0, 1] and ``spread`` in [-1, 1], float32 each.

    Loudness opens the mouth (the voicing envelope, averaged over the frame's samples) and the vowel shapes it: the
    first formant follows jaw opening (/a/ open, /i/ and /u/ nearly closed), the second formant lip spreading
    (/i/ and /e/ wide, /o/ and /u/ rounded).
    """
    per_frame = speech.rate // fps
    frames = speech.envelope.size // per_frame
    env = speech.envelope[: frames * per_frame].reshape(frames, per_frame).mean(axis=1)
    f1, f2 = (speech.formants[: frames * per_frame, j].reshape(frames, per_frame).mean(axis=1) for j in (0, 1))
    jaw = np.clip((f1 - 250.0) / (730.0 - 250.0), 0.0, 1.0)
    opening = env * (0.35 + 0.65 * jaw)
    spread = np.clip((f2 - 1300.0) / 1000.0, -1.0, 1.0) * np.minimum(1.0, 2.0 * env)
    return opening.astype(np.float32), spread.astype(np.float32)


def _formant_filter(x: np.ndarray, formants: np.ndarray, rate: int) -> np.ndarray:
    """Cascade of three time-varying two-pole resonators (coefficients updated every 5 ms)."""
    y = x.astype(np.float64)
    hop = max(1, rate // 200)
    for j, bw in enumerate(_BANDWIDTHS):
        r = math.exp(-math.pi * bw / rate)
        out = np.empty_like(y)
        y1 = y2 = 0.0
        for s0 in range(0, y.size, hop):
            theta = 2 * math.pi * formants[s0, j] / rate
            a1, a2 = 2 * r * math.cos(theta), -r * r
            gain = 1 - a1 - a2  # unit gain at DC keeps the level steady as the formant moves
            for s in range(s0, min(s0 + hop, y.size)):
                v = gain * y[s] + a1 * y1 + a2 * y2
                out[s] = v
                y2, y1 = y1, v
        y = out
    return y


def harmonic_speech(samples: int, seed: int = 0) -> np.ndarray:
    """Fast speech-like float32 PCM (vectorised; for long signals and front-end checks): a gliding 95..230 Hz
    voice with 30 harmonics under three moving formants, about 4 syllables per second, fricative noise bursts and
    pauses, peak 0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / SAMPLE_RATE
    f0 = 150 + 55 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)) + 20 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    formants = [(700 + 250 * np.sin(2 * np.pi * 1.3 * t), 110), (1500 + 500 * np.sin(2 * np.pi * 0.9 * t + 1), 160),
                (2600 + 200 * np.sin(2 * np.pi * 0.5 * t + 2), 250)]
    voice = np.zeros(samples)
    for h in range(1, 31):
        gain = sum(np.exp(-0.5 * ((h * f0 - fc) / bw) ** 2) for fc, bw in formants) + 0.02
        voice += gain * np.sin(h * phase) / h ** 0.5
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)), 0, None) ** 1.5
    pauses = (np.sin(2 * np.pi * 0.31 * t + rng.uniform(0, 6)) > -0.6).astype(np.float64)
    noise = rng.standard_normal(samples) * np.clip(np.sin(2 * np.pi * 1.7 * t + 0.5), 0, None) ** 8
    x = (voice * syllables + 0.6 * noise) * pauses
    return (x / max(float(np.abs(x).max()), 1e-9) * 0.5).astype(np.float32)
