"""The embedded demo: everything framegen does, end to end, from nothing but code.

It synthesises a template, a calibrated seeded generator checkpoint and a seeded audio encoder, speaks a
speech-like signal (formant synthesis: vowels with a pitch contour, consonant noise, pauses), computes 'ave'
features from it like SyncTalk_2D, and renders a short video with sound. The weights are random stand-ins, so the
mouth does not follow the speech; the demo shows the pipeline, not a trained model.

The demo is a list of :class:`Step` objects run in order over one :class:`DemoContext`; later features (export,
every backend, the parity table) add steps without touching the others.
"""

from __future__ import annotations

import math
import os
import shutil
import time
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.contract import SAMPLE_RATE
from models.errors import FramegenError

MARKER = ".framegen-demo"  # marks a folder the demo made, so a rerun may replace it
DEFAULT_SECONDS = 3.0
DEFAULT_TEMPLATE_FRAMES = 25
RANDOM_WEIGHTS_NOTE = ("the weights are random (seeded, calibrated stand-ins for SyncTalk_2D's trained ones), so the "
                       "mouth will not look like speech: the demo shows the pipeline, not a trained model. Render "
                       "with a real checkpoint: framegen render --checkpoint CKPT ...")


class DemoError(FramegenError):
    """The demo cannot run with the given folder or options."""


@dataclass
class DemoContext:
    """What the steps share: options, the output folder, artifacts by name and results by step."""

    out: Path
    seconds: float = DEFAULT_SECONDS
    width: int = 1280
    height: int = 720
    template_frames: int = DEFAULT_TEMPLATE_FRAMES
    seed: int = 0
    batch: int | None = None
    progress: bool = True
    artifacts: dict[str, Path] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One demo step: ``run(ctx)`` does the work and returns a one-line summary."""

    name: str
    run: Callable[[DemoContext], str]


# ---------------------------------------------------------------------------------------------- the speech


# Formant frequencies (F1, F2, F3 in Hz) of a few vowels of an adult voice.
_VOWELS = {"a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (270, 2290, 3010), "o": (570, 840, 2410),
           "u": (300, 870, 2240)}
_BANDWIDTHS = (80.0, 100.0, 140.0)


def speech_like(seconds: float = DEFAULT_SECONDS, rate: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """A seeded speech-like float32 signal: words of 2-4 syllables (vowel formants gliding between syllables, a
    falling pitch contour with intonation, fricative noise at some onsets) separated by short pauses."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    # Syllable plan: (start, end, vowel) in samples; words separated by pauses.
    plan: list[tuple[int, int, str]] = []
    t = int(0.15 * rate)
    while t < n - int(0.2 * rate):
        for _ in range(int(rng.integers(2, 5))):
            length = int(rng.uniform(0.12, 0.24) * rate)
            if t + length > n - int(0.05 * rate):
                break
            plan.append((t, t + length, str(rng.choice(list(_VOWELS)))))
            t += length
        t += int(rng.uniform(0.12, 0.3) * rate)
    time_s = np.arange(n) / rate
    f0 = 150.0 - 40.0 * time_s / max(seconds, 1e-6) + 12.0 * np.sin(2 * math.pi * 0.9 * time_s + rng.uniform(0, 6))
    f0 *= 1.0 + 0.01 * rng.standard_normal(n).cumsum() / np.sqrt(np.arange(1, n + 1))  # slow jitter
    phase = np.cumsum(f0 / rate) % 1.0
    source = (2.0 * phase - 1.0) - 0.5 * np.sin(2 * math.pi * phase)  # a bright, sawtooth-like glottal wave
    envelope = np.zeros(n)
    formants = np.tile(np.array(_VOWELS["a"], dtype=np.float64), (n, 1))
    noise_env = np.zeros(n)
    for s0, s1, vowel in plan:
        length = s1 - s0
        ramp = np.minimum(1.0, np.minimum(np.arange(length) / (0.03 * rate), (length - np.arange(length)) /
                                          (0.05 * rate)))
        envelope[s0:s1] = np.maximum(envelope[s0:s1], ramp)
        target = np.array(_VOWELS[vowel], dtype=np.float64)
        glide = np.minimum(1.0, np.arange(length) / (0.04 * rate))[:, None]
        formants[s0:s1] = formants[s0 - 1] * (1 - glide) + target * glide if s0 else target
        formants[s1:] = target
        if rng.random() < 0.4:  # a fricative onset ('s', 'f', 'sh'-like noise) before the vowel
            k = int(0.06 * rate)
            lo = max(0, s0 - k)
            noise_env[lo:s0] = np.hanning(2 * k)[k - (s0 - lo):k]
    voiced = _formant_filter(source * envelope, formants, rate)
    noise = rng.standard_normal(n)
    hiss = np.diff(noise, prepend=0.0) * noise_env * 0.25  # differenced noise: energy up high, like fricatives
    room = 0.004 * rng.standard_normal(n)  # a quiet room: pauses are not digital silence
    wav = voiced + hiss + room
    peak = float(np.abs(wav).max()) or 1.0
    return (0.6 * wav / peak).astype(np.float32)


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


def write_wav(path: Path, wav: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """16-bit PCM mono WAV, written to a temporary sibling and renamed."""
    tmp = path.with_name(f".{path.name}.partial")
    pcm = np.clip(np.round(wav * 32767.0), -32768, 32767).astype("<i2")
    try:
        with wave.open(os.fspath(tmp), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(pcm.tobytes())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# ---------------------------------------------------------------------------------------------- the steps


def step_template(ctx: DemoContext) -> str:
    """A synthetic talking-head template."""
    from toolkit.synth import synth_template

    path = synth_template(ctx.out / "template", frames=ctx.template_frames, width=ctx.width, height=ctx.height,
                          seed=ctx.seed)
    ctx.artifacts["template"] = path
    return f"{ctx.template_frames} frames {ctx.width}x{ctx.height} -> {path}"


def step_checkpoints(ctx: DemoContext) -> str:
    """A calibrated seeded generator and a seeded audio encoder, saved in SyncTalk_2D's formats."""
    from models.init import init_audio_encoder, init_generator
    from models.io import save_audio_encoder, save_generator

    gen = save_generator(init_generator("ave", ctx.seed, calibrate=True), ctx.out / "generator_ave.pth")
    enc = save_audio_encoder(init_audio_encoder(ctx.seed), ctx.out / "audio_visual_encoder.pth")
    ctx.artifacts.update(checkpoint=gen, encoder=enc)
    return f"seed {ctx.seed}, BatchNorm calibrated -> {gen.name}, {enc.name}"


def step_speech(ctx: DemoContext) -> str:
    """A speech-like signal made in code, as a 16 kHz WAV."""
    wav = speech_like(ctx.seconds, SAMPLE_RATE, ctx.seed)
    path = write_wav(ctx.out / "speech.wav", wav)
    ctx.artifacts["speech"] = path
    return f"{ctx.seconds:.1f} s formant-synthesised vowels with pitch contour and pauses -> {path.name}"


def step_features(ctx: DemoContext) -> str:
    """'ave' features of the speech through the audio encoder, as SyncTalk_2D computes them."""
    from models.checkpoint import load_audio_encoder
    from toolkit.audio import audio_to_features, torch_encoder_fn
    from toolkit.features import save_npy

    feats = audio_to_features(ctx.artifacts["speech"], torch_encoder_fn(load_audio_encoder(ctx.artifacts["encoder"])))
    path = save_npy(ctx.out / "features.npy", feats)
    ctx.artifacts["features"] = path
    ctx.results["features"] = feats
    return f"{feats.shape[0]} x {feats.shape[1]} (one row per 25 fps frame) -> {path.name}"


def step_render(ctx: DemoContext) -> str:
    """The video: template + features through torch-cpu, H.264 with the speech as AAC."""
    import json

    from runtimes.registry import open_backend
    from runtimes.spec import OpenRequest
    from toolkit.preprocess import PreparedTemplate
    from toolkit.render import render
    from toolkit.template import open_template

    prepared = PreparedTemplate(open_template(ctx.artifacts["template"]))
    out = ctx.out / "demo.mp4"
    with open_backend("torch-cpu", OpenRequest(checkpoint=ctx.artifacts["checkpoint"])) as backend:
        stats = render(prepared, ctx.results["features"], backend, out=out, batch=ctx.batch,
                       audio_path=ctx.artifacts["speech"], progress=ctx.progress)
    (ctx.out / "stats.json").write_text(json.dumps(stats.as_dict(), indent=2) + "\n")
    ctx.artifacts["video"] = out
    ctx.results["render"] = stats
    size = (stats.out_bytes or 0) / 1e6
    return f"{stats.frames} frames, {stats.fps:.2f} fps on {stats.backend} -> {out} ({size:.1f} MB)"


DEFAULT_STEPS: tuple[Step, ...] = (
    Step("template", step_template),
    Step("checkpoints", step_checkpoints),
    Step("speech", step_speech),
    Step("features", step_features),
    Step("render", step_render),
)


def prepare_out(out: Path) -> None:
    """Create the demo folder; a previous demo's folder (it holds the marker) is replaced, anything else refused."""
    if out.exists():
        if not out.is_dir():
            raise DemoError(f"{out}: exists and is not a folder")
        if any(out.iterdir()):
            if not (out / MARKER).exists():
                raise DemoError(f"{out}: folder is not empty and was not made by `framegen demo`; choose another "
                                f"--out")
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by framegen demo; a rerun replaces this folder\n")


def run_demo(ctx: DemoContext, steps: Sequence[Step] = DEFAULT_STEPS,
             log: Callable[[str], None] | None = None) -> DemoContext:
    """Run ``steps`` in order over ``ctx`` (after preparing its folder); ``log`` gets one line per step."""
    if ctx.seconds < 0.5:
        raise DemoError(f"--seconds {ctx.seconds}: the demo needs at least 0.5 s of speech")
    prepare_out(ctx.out)
    for number, step in enumerate(steps, 1):
        t0 = time.perf_counter()
        summary = step.run(ctx)
        if log is not None:
            log(f"[{number}/{len(steps)}] {step.name}: {summary} ({time.perf_counter() - t0:.1f} s)")
    return ctx
