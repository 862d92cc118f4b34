"""Lip sync of the demo generator on speech its training never saw; the figures of docs/DEMO.md.

    python scripts/eval_demo.py [--weights W.npz|state.pt] [--seconds 8] [--tts 2] [--speech SPEECH.wav]

Held-out utterances: formant-synthesised speech with seeds and voices far from the training ones (the training uses
seeds 1000+), with ``--tts`` eSpeak NG utterances with seeds far from the training's (5000+), speech of another kind
(the harmonic synthesiser of the export checks, which the training never heard), and, when given, a real recording
(all of it, or ``--speech-seconds``). Per utterance: the mouth-region PSNR against the synthetic ground truth,
Pearson's r between the rendered mouth opening (read from the pixels) and the true opening and the loudness
envelope, the same with the audio zeroed (which must collapse), and the template's own mouth against the truth (the
floor: what a generator that ignored the audio would score), and the face outside the mouth: per frame, the pixels
outside the open mouth's box more than 100 levels from the template (0 for a generator that leaves it unchanged).
Real and harmonic speech have no true opening: only the loudness correlation is measured there.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from framegen.models.demo import load_demo_generator
from framegen.models.init import init_audio_encoder
from framegen.models.unet import Model
from framegen.toolkit.compare.lipsync import measure
from framegen.toolkit.inputs.audio import decode_audio, torch_encoder_fn
from framegen.toolkit.inputs.speech import harmonic_speech, synthesize_speech
from framegen.toolkit.inputs.talking import quantize_pcm, talking_clip, talking_clip_for

EVAL_SEED0 = 90_000  # far from the training seeds (1000 + clip)
TTS_EVAL_SEED0 = 95_000  # far from the eSpeak training seeds (5000 + clip)


def load(weights: Path | None) -> Model:
    """The generator to judge: the shipped demo weights, a compact .npz, or a training state.pt."""
    if weights is None or weights.suffix == ".npz":
        return load_demo_generator(weights)
    model = Model(6, "ave")
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=False)["model"])
    return model.eval()


def main() -> None:
    """Measure and print the table; ``--json`` keeps the figures."""
    from framegen.models.allocator import keep_freed_memory

    keep_freed_memory()  # PyTorch's activations reused, not page-faulted anew (models/allocator.py)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, default=None)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--utterances", type=int, default=3)
    p.add_argument("--speech", type=Path, default=None, help="a real recording (any format PyAV reads)")
    p.add_argument("--speech-seconds", type=float, default=0.0, help="seconds of the recording (0: all of it)")
    p.add_argument("--tts", type=int, default=0,
                   help="held-out eSpeak NG utterances (scripts/espeak_speech.py; needs espeakng-loader)")
    p.add_argument("--ort", action="store_true",
                   help="render through the weights' fp32 ONNX export on ONNX Runtime (about 2x PyTorch eager here)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    model = load(args.weights)

    def generator(image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(image), torch.from_numpy(audio)).numpy()

    if args.ort:  # the export is validated against this very module, so the figures are the fp32 model's
        import atexit
        import shutil
        import tempfile

        from framegen.models.io import save_generator
        from framegen.runtimes.registry import open_backend
        from framegen.runtimes.spec import OpenRequest
        from framegen.toolkit.export.bundle import export_bundle

        work = Path(tempfile.mkdtemp(prefix="framegen-eval-"))
        atexit.register(shutil.rmtree, work, ignore_errors=True)  # the bundle is read until the last render
        bundle = export_bundle(save_generator(model, work / "g.pth"), work / "b", formats=("onnx",),
                               precisions=("fp32",))
        generator = open_backend("ort-cpu", OpenRequest(bundle=bundle, precision="fp32")).infer

    encode = torch_encoder_fn(init_audio_encoder(0))
    rng = np.random.default_rng(EVAL_SEED0)
    rows = []
    t0 = time.time()
    for u in range(args.utterances):
        voice = {"f0": float(rng.uniform(85, 240)), "tempo": float(rng.uniform(0.7, 1.4)),
                 "level": float(rng.uniform(0.2, 0.95)), "room": float(rng.uniform(0.0005, 0.012))}
        speech = synthesize_speech(args.seconds, seed=EVAL_SEED0 + u, **voice)
        clip = talking_clip(speech, encode, track_seed=EVAL_SEED0 + u)
        rows.append(measure(f"held-out formant speech #{u} (f0 {voice['f0']:.0f} Hz)", generator, encode, clip.wav,
                            EVAL_SEED0 + u, clip))
    for u in range(args.tts):
        from espeak_speech import tts_speech  # optional: needs espeakng-loader

        tts = tts_speech(args.seconds, seed=TTS_EVAL_SEED0 + u, level=0.5)
        clip = talking_clip_for(tts.wav, tts.opening, tts.spread, encode, track_seed=EVAL_SEED0 + 30 + u)
        rows.append(measure(f"held-out eSpeak NG speech #{u} (voice {tts.voice})", generator, encode, clip.wav,
                            EVAL_SEED0 + 30 + u, clip))
    other = quantize_pcm(harmonic_speech(int(args.seconds * 16000), seed=7))
    rows.append(measure("other kind: harmonic synthesis", generator, encode, other, EVAL_SEED0 + 50))
    if args.speech is not None and args.speech.is_file():
        real = decode_audio(args.speech)
        if args.speech_seconds > 0:
            real = real[: int(args.speech_seconds * 16000)]
        name = f"real speech: {args.speech.name} ({real.size / 16000:.1f} s)"
        rows.append(measure(name, generator, encode, real, EVAL_SEED0 + 60))

    def f(v: float | None, fmt: str = "{:+.2f}") -> str:
        return "n/a" if v is None else fmt.format(v)

    print(f"{platform.processor() or platform.machine()}; {time.time() - t0:.0f} s")
    print("| utterance | frames | mouth PSNR dB | r(open, truth) | r(open, loudness) | zeroed: r truth | "
          "zeroed: r loudness | template mouth: r truth | true frames: r loudness | follows template: r | "
          "far-off pixels outside the mouth: median / max |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.name} | {r.frames} | {f(r.mouth_psnr_db, '{:.1f}')} | {f(r.r_truth)} | {f(r.r_loudness)} | "
              f"{f(r.r_truth_zeroed)} | {f(r.r_loudness_zeroed)} | {f(r.r_truth_template)} | "
              f"{f(r.r_loudness_truth_frames)} | {f(r.r_follows_template)} | "
              f"{f(r.far_off_outside_median, '{:.0f}')} / {r.far_off_outside_max} |")
    if args.json is not None:
        args.json.write_text(json.dumps([r.as_dict() for r in rows], indent=1))


if __name__ == "__main__":
    main()
