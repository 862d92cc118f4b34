"""The embedded demo: everything framegen does, end to end, from nothing but code.

It synthesises a template, writes the trained demo generator (``framegen.models.demo``; ``weights="random"``: a
calibrated seeded stand-in) and a seeded audio encoder, speaks a speech-like signal (formant synthesis: vowels with a
pitch contour, consonant noise, pauses), computes 'ave' features from it like SyncTalk_2D, renders a short video with
sound on torch-cpu, exports a bundle (ONNX + Core ML, fp32 + fp16, generator and audio encoder, plus the int8
generator when it clears its quality floor), renders the same video on every other backend available here that the
bundle feeds and at the precision ``--precision auto`` picks, and prints the parity table of every available backend
and precision against PyTorch fp32.

The demo is a list of :class:`Step` objects run in order over one :class:`DemoContext`; a step reads the artifacts
earlier steps (or the caller) put in ``ctx.artifacts``, so a subset of steps runs on artifacts made elsewhere.
"""

from __future__ import annotations

import os
import shutil
import time
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from framegen.models.atomic import atomic_output
from framegen.models.bundle import load_bundle
from framegen.models.contract import SAMPLE_RATE
from framegen.models.errors import FramegenError
from framegen.runtimes.registry import resolve_auto
from framegen.runtimes.spec import OpenRequest
from framegen.toolkit.bench.precision import choose_precision
from framegen.toolkit.common.files import write_json
from framegen.toolkit.export.bundle import export_bundle
from framegen.toolkit.export.compress import CompressOptions
from framegen.toolkit.frames.plan import Candidate, open_candidate, plan_candidates
from framegen.toolkit.inputs.audio import audio_to_features, torch_encoder_fn
from framegen.toolkit.inputs.features import save_npy
from framegen.toolkit.inputs.speech import speech_like
from framegen.toolkit.inputs.template import open_template
from framegen.toolkit.parity.engine import run_parity
from framegen.toolkit.parity.inputs import parity_candidates, parse_backends
from framegen.toolkit.parity.report import print_report

MARKER = ".framegen-demo"  # marks a folder the demo made, so a rerun may replace it
DEFAULT_SECONDS = 3.0
DEFAULT_TEMPLATE_FRAMES = 25
DEFAULT_PARITY_FRAMES = 4
RANDOM_WEIGHTS_NOTE = ("the weights are random (seeded, calibrated stand-ins for SyncTalk_2D's trained ones), so the "
                       "mouth will not look like speech: the demo shows the pipeline, not a trained model. Render "
                       "with a real checkpoint: framegen render --checkpoint CKPT ...")
TRAINED_WEIGHTS_NOTE = ("the generator is framegen's trained demo generator (SyncTalk_2D's own 'ave' U-Net, trained by "
                        "scripts/train_demo.py on synthetic talking clips of this face): the mouth follows the speech. "
                        "It knows only the demo's face; render your own model with --checkpoint CKPT")
WEIGHTS = ("trained", "random")


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
    #: Export formats of the bundle; the quick variant leaves Core ML out (its conversion is the slow part).
    formats: tuple[str, ...] = ("onnx", "coreml")
    parity_frames: int = DEFAULT_PARITY_FRAMES
    #: ``None``: every available backend x every precision the bundle feeds (see
    #: ``toolkit.parity.engine.parity_candidates``); else a ``framegen parity --backends`` list.
    parity_backends: str | None = None
    #: Parity's ``layers`` stage (a per-layer trace of every ONNX / Core ML candidate against PyTorch); the quick
    #: variant leaves it out (about 10 s of its 30 on a 2-core CPU) and says so in the report's notes.
    layers: bool = True
    #: ``trained``: the shipped demo generator (framegen.models.demo); ``random``: a calibrated seeded stand-in
    weights: str = "trained"
    #: Compressed generator precisions the export also tries; one its quality gate refuses is left out and named
    #: (the quick variant tries none: quantizing and judging takes about 20 s).
    compressed: tuple[str, ...] = ("int8",)
    artifacts: dict[str, Path] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One demo step: ``run(ctx)`` does the work and returns a one-line summary."""

    name: str
    run: Callable[[DemoContext], str]


# ---------------------------------------------------------------------------------------------- the speech


def write_wav(path: Path, wav: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """16-bit PCM mono WAV, written to a temporary sibling and renamed."""
    pcm = np.clip(np.round(wav * 32767.0), -32768, 32767).astype("<i2")
    with atomic_output(path) as tmp, wave.open(os.fspath(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


# ---------------------------------------------------------------------------------------------- the steps


def step_template(ctx: DemoContext) -> str:
    """A synthetic talking-head template."""
    from framegen.toolkit.inputs.synth import synth_template

    path = synth_template(ctx.out / "template", frames=ctx.template_frames, width=ctx.width, height=ctx.height,
                          seed=ctx.seed)
    ctx.artifacts["template"] = path
    return f"{ctx.template_frames} frames {ctx.width}x{ctx.height} -> {path}"


def step_checkpoints(ctx: DemoContext) -> str:
    """The generator (the trained demo generator, or a calibrated seeded stand-in) and the seeded audio encoder,
    saved in SyncTalk_2D's formats. The trained generator was trained on the features of encoder seed 0."""
    from framegen.models.demo import load_demo_generator
    from framegen.models.init import init_audio_encoder, init_generator
    from framegen.models.io import save_audio_encoder, save_generator

    trained = ctx.weights == "trained"
    module = load_demo_generator() if trained else init_generator("ave", ctx.seed, calibrate=True)
    gen = save_generator(module, ctx.out / "generator_ave.pth")
    enc = save_audio_encoder(init_audio_encoder(0 if trained else ctx.seed), ctx.out / "audio_visual_encoder.pth")
    ctx.artifacts.update(checkpoint=gen, encoder=enc)
    what = "trained demo generator" if trained else f"seed {ctx.seed}, BatchNorm calibrated"
    return f"{what} -> {gen.name}, {enc.name}"


def step_speech(ctx: DemoContext) -> str:
    """A speech-like signal made in code, as a 16 kHz WAV."""
    wav = speech_like(ctx.seconds, SAMPLE_RATE, ctx.seed)
    path = write_wav(ctx.out / "speech.wav", wav)
    ctx.artifacts["speech"] = path
    return f"{ctx.seconds:.1f} s formant-synthesised vowels with pitch contour and pauses -> {path.name}"


def step_features(ctx: DemoContext) -> str:
    """'ave' features of the speech through the audio encoder, as SyncTalk_2D computes them."""
    from framegen.models.checkpoint import load_audio_encoder

    feats = audio_to_features(ctx.artifacts["speech"], torch_encoder_fn(load_audio_encoder(ctx.artifacts["encoder"])))
    path = save_npy(ctx.out / "features.npy", feats)
    ctx.artifacts["features"] = path
    ctx.results["features"] = feats
    return f"{feats.shape[0]} x {feats.shape[1]} (one row per 25 fps frame) -> {path.name}"


def render_on(ctx: DemoContext, backend_name: str, *, bundle: Any = None, precision: str = "fp32") -> Any:
    """Render the demo video on one backend (opened by the planner as ``framegen render`` opens it) to
    ``demo-<backend>.mp4`` (``demo-<backend>-<precision>.mp4`` below fp32); records the stats in ``ctx.results``."""
    from framegen.toolkit.frames.render import render
    from framegen.toolkit.inputs.preprocess import PreparedTemplate

    prepared = PreparedTemplate(open_template(ctx.artifacts["template"]))
    name = backend_name if precision == "fp32" else f"{backend_name}-{precision}"
    out = ctx.out / f"demo-{name}.mp4"
    with open_candidate(Candidate(backend_name, precision), checkpoint=ctx.artifacts["checkpoint"], bundle=bundle,
                        mode="ave") as backend:
        stats = render(prepared, ctx.results["features"], backend, out=out, batch=ctx.batch,
                       audio_path=ctx.artifacts["speech"], progress=ctx.progress)
    renders = ctx.results.setdefault("renders", {})
    renders[name] = stats
    ctx.artifacts.setdefault("video", out)
    write_json(ctx.out / "stats.json", {k: v.as_dict() for k, v in renders.items()})
    return stats


def _render_line(stats: Any) -> str:
    size = (stats.out_bytes or 0) / 1e6
    return f"{stats.backend} {stats.precision}: {stats.frames} frames, {stats.fps:.2f} fps -> {Path(stats.out).name} " \
           f"({size:.1f} MB)"


def step_render(ctx: DemoContext) -> str:
    """The first video straight from the checkpoint: template + features through torch-cpu, H.264 + AAC speech."""
    stats = render_on(ctx, "torch-cpu")
    return _render_line(stats)


def step_export(ctx: DemoContext) -> str:
    """The bundle: generator and audio encoder as ONNX and Core ML, fp32 and fp16, each validated on export, and the
    compressed generators of ``ctx.compressed`` that clear their quality floor (a refused one is named and left
    out: the floor, not the demo, decides what a bundle offers)."""

    # Time between progress lines belongs to the work the later line reports, so Core ML's share can be told apart.
    spent = {"coreml": 0.0, "other": 0.0}
    last = [time.perf_counter()]

    def progress(msg: str) -> None:
        now = time.perf_counter()
        spent["coreml" if ("coreml" in msg or ".mlpackage" in msg) else "other"] += now - last[0]
        last[0] = now

    # compressed artifacts are calibrated and judged on the demo's own template and speech features (on synthetic
    # inputs the int8 gate passed what the demo's frames then failed: docs/PARITY.md); one below its floor is left
    # out of the bundle and named, as `framegen export --skip-refused` does
    compression = CompressOptions(template=ctx.artifacts["template"], features=ctx.artifacts["features"],
                                  skip_refused=True)
    path = export_bundle(ctx.artifacts["checkpoint"], ctx.out / "bundle", audio_encoder=ctx.artifacts["encoder"],
                         formats=ctx.formats, precisions=("fp32", "fp16", *ctx.compressed), progress=progress,
                         compression=compression)
    refused = "".join(f"; left out: {r.reason}" for r in compression.refused)
    ctx.artifacts["bundle"] = path
    ctx.results["export_seconds"] = dict(spent)
    names = [Path(a.path).name for a in load_bundle(path).artifacts]
    line = f"{len(names)} validated artifacts ({', '.join(names)}) -> {path}"
    if "coreml" in ctx.formats:
        line += f"; Core ML conversion + validation took {spent['coreml']:.0f} s of it (--quick leaves Core ML out)"
    return line + refused


def renderable_backends(ctx: DemoContext) -> tuple[list[str], list[str]]:
    """Backends the planner renders with from the bundle and checkpoint (fp32), and ``name (why)`` for each one
    left out (verifiers, backends the bundle does not feed, those not available here)."""
    plan = plan_candidates("demo", checkpoint=ctx.artifacts["checkpoint"], bundle=ctx.artifacts.get("bundle"),
                           precisions=["fp32"])
    names = list(dict.fromkeys(c.backend for c in plan.candidates))
    return names, plan.notes


def step_render_backends(ctx: DemoContext) -> str:
    """The same video on every other backend available here that the bundle or checkpoint feeds."""

    names, left_out = renderable_backends(ctx)
    done = ctx.results.get("renders", {})
    lines = [_render_line(render_on(ctx, name, bundle=ctx.artifacts["bundle"])) for name in names if name not in done]
    choice = choose_precision(ctx.artifacts["bundle"])
    ctx.results["auto_precision"] = choice
    if choice.precision != "fp32":  # what `--precision auto` renders on this CPU, as a video of its own
        backend = resolve_auto(OpenRequest(bundle=load_bundle(ctx.artifacts["bundle"]), precision=choice.precision))
        stats = render_on(ctx, backend, bundle=ctx.artifacts["bundle"], precision=choice.precision)
        lines.append(f"{_render_line(stats)} (--precision auto here: {choice.precision})")
    return "; ".join(lines or ["no other backend is available here"]) + (
        f"; not rendered: {'; '.join(left_out)}" if left_out else "")


def step_parity(ctx: DemoContext) -> str:
    """The parity table: a few frames through every available backend and precision against PyTorch fp32."""
    from framegen.toolkit.inputs.preprocess import PreparedTemplate

    bundle = load_bundle(ctx.artifacts["bundle"])
    candidates, notes = parity_candidates(bundle, parse_backends(ctx.parity_backends))
    prepared = PreparedTemplate(open_template(ctx.artifacts["template"]))
    report = run_parity(bundle.root, ctx.artifacts["checkpoint"], prepared, ctx.results["features"],
                        candidates=candidates, frames=ctx.parity_frames, batch=ctx.batch, progress=ctx.progress,
                        locate=None if ctx.layers else False, inputs={"template": str(ctx.artifacts["template"]),
                                "features": str(ctx.artifacts["features"])})
    report.notes[:0] = notes + prepared.warnings
    print_report(report)
    path = write_json(ctx.out / "parity.json", report.as_dict())
    ctx.artifacts["parity"] = path
    ctx.results["parity"] = report
    verdict = "all pass" if report.passed else f"{len(report.failures())} failure(s)"
    labels = ", ".join(c.candidate.label for c in report.candidates)
    return f"{len(report.frames)} frames, {len(report.candidates)} candidates ({labels}): {verdict} -> {path.name}"


DEFAULT_STEPS: tuple[Step, ...] = (
    Step("template", step_template),
    Step("checkpoints", step_checkpoints),
    Step("speech", step_speech),
    Step("features", step_features),
    Step("render", step_render),
    Step("export", step_export),
    Step("render-backends", step_render_backends),
    Step("parity", step_parity),
)


def summary_lines(ctx: DemoContext) -> list[str]:
    """The closing summary: where the files are, fps per backend, the parity verdict, and the random-weights note."""
    lines = [f"demo folder: {ctx.out}"]
    for name, stats in ctx.results.get("renders", {}).items():
        lines.append(f"  video {name:<11} {stats.fps:6.2f} fps  {stats.out}")
    for key, label in (("bundle", "bundle"), ("parity", "parity report"), ("features", "features"),
                       ("speech", "speech")):
        if key in ctx.artifacts:
            lines.append(f"  {label:<17} {ctx.artifacts[key]}")
    report = ctx.results.get("parity")
    if report is not None:
        lines.append(f"parity: {'PASS' if report.passed else 'FAIL'} - {len(report.candidates)} candidate(s) on "
                     f"{len(report.frames)} frames against PyTorch fp32"
                     + ("" if report.passed else f"; failing: {'; '.join(report.failures())}"))
    lines.append(f"note: {weights_note(ctx)}")
    return lines


def weights_note(ctx: DemoContext) -> str:
    """What the demo's weights are, in one sentence."""
    if ctx.weights == "random":
        return RANDOM_WEIGHTS_NOTE
    face = "" if ctx.seed == 0 else f" (--seed {ctx.seed} draws another face, which it never saw)"
    return TRAINED_WEIGHTS_NOTE + face


def exit_code(ctx: DemoContext) -> int:
    """0, or 1 when the parity step ran and a candidate failed."""
    report = ctx.results.get("parity")
    return 1 if report is not None and not report.passed else 0


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


def quick_context(out: Path, seconds: float = 1.0, seed: int = 0, progress: bool = True,
                  weights: str = "trained") -> DemoContext:
    """The quick variant (tests, a first look): a short video from a small template, an ONNX-only bundle (no Core
    ML conversion, no int8), and a 2-frame parity table without its per-layer stage."""
    return DemoContext(out=out, seconds=seconds, seed=seed, progress=progress, width=640, height=360,
                       template_frames=8, formats=("onnx",), parity_frames=2, layers=False, weights=weights,
                       compressed=())


def run_demo(ctx: DemoContext, steps: Sequence[Step] = DEFAULT_STEPS,
             log: Callable[[str], None] | None = None) -> DemoContext:
    """Run ``steps`` in order over ``ctx`` (after preparing its folder); ``log`` gets one line per step."""
    if ctx.seconds < 0.5:
        raise DemoError(f"--seconds {ctx.seconds}: the demo needs at least 0.5 s of speech")
    if ctx.weights not in WEIGHTS:
        raise DemoError(f"--weights {ctx.weights!r}: one of {', '.join(WEIGHTS)}")
    prepare_out(ctx.out)
    for number, step in enumerate(steps, 1):
        t0 = time.perf_counter()
        summary = step.run(ctx)
        if log is not None:
            log(f"[{number}/{len(steps)}] {step.name}: {summary} ({time.perf_counter() - t0:.1f} s)")
    return ctx
