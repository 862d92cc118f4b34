"""How much of the mouth's motion the demo's audio features carry: a linear readout, fit and judged as the generator is.

    python scripts/probe_features.py [--clips 24] [--seconds 6] [--tts 2] [--speech SPEECH.wav] [--json OUT]

The demo generator follows real speech only weakly (docs/DEMO.md). This separates the two suspects: the audio
features (framegen's seeded encoder, not SyncTalk_2D's trained one) and the generator's training. It fits a ridge
regression from the features the generator is given (each 25 fps frame's 512-d row, with its neighbours) to the
true mouth opening, on training-like clips (the training's seeds: wider formant voices and eSpeak NG speech in rooms),
and then reads the opening of the held-out utterances that ``scripts/eval_demo.py`` renders (same seeds, same
voices), printing Pearson's r with the true opening and with the loudness envelope, as eval_demo does for the
rendered mouth. A readout of the log-mel windows the encoder reads (1,280 values per frame) is the comparison: it
is what any encoder could start from.

If a linear readout of the features follows held-out and real speech far better than the generator does, the
features carry the signal and the gap is the generator's training.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

# eval_demo's held-out seeds and train_demo's data recipe, from the scripts beside this one
sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_demo import EVAL_SEED0, TTS_EVAL_SEED0
from framegen.models.init import init_audio_encoder
from framegen.toolkit.compare.lipsync import loudness, pearson
from framegen.toolkit.inputs.audio import (
    ave_features,
    decode_audio,
    mel_windows,
    melspectrogram,
    torch_encoder_fn,
)
from framegen.toolkit.inputs.speech import articulation, harmonic_speech, synthesize_speech
from framegen.toolkit.inputs.talking import quantize_pcm
from train_demo import TRAIN_SEED0, TTS_SEED0, tts_room, voice


def representations(wav: np.ndarray, encode, frames: int | None = None) -> dict[str, np.ndarray]:
    """Per 25 fps frame: the generator's feature row and the encoder's log-mel window, aligned as the training
    aligns them (``talking_clip_for``: the first ``frames`` rows)."""
    mel = melspectrogram(quantize_pcm(wav))
    feats = ave_features(mel, encode)
    windows = mel_windows(mel).reshape(-1, 80 * 16)
    windows = np.concatenate([windows[:1], windows, windows[-1:]])  # padded as ave_features pads its rows
    n = len(feats) if frames is None else min(frames, len(feats))
    return {"features": feats[:n], "mel": windows[:n]}


def with_context(x: np.ndarray, width: int) -> np.ndarray:
    """Each row beside its ``width`` neighbours on either side (edges repeated)."""
    if width == 0:
        return x
    padded = np.pad(x, ((width, width), (0, 0)), mode="edge")
    return np.concatenate([padded[i:i + len(x)] for i in range(2 * width + 1)], axis=1)


class Ridge:
    """Ridge regression on standardised inputs (closed form)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, lam: float) -> None:
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-6
        z = (x - self.mu) / self.sd
        self.bias = float(y.mean())
        self.w = np.linalg.solve(z.T @ z + lam * np.eye(z.shape[1]), z.T @ (y - self.bias))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mu) / self.sd) @ self.w + self.bias


def main() -> None:
    """Fit the readouts, print the table; ``--json`` keeps the figures."""
    from espeak_speech import tts_speech  # needs espeakng-loader, as the training's eSpeak clips do

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=24, help="training-like clips of 10 s (half eSpeak NG)")
    p.add_argument("--seconds", type=float, default=6.0, help="held-out utterance length (as eval_demo)")
    p.add_argument("--utterances", type=int, default=3)
    p.add_argument("--tts", type=int, default=2)
    p.add_argument("--speech", type=Path, default=None, help="a real recording (all of it is read)")
    p.add_argument("--context", type=int, default=2, help="neighbouring frames on either side")
    p.add_argument("--lam", type=float, default=1000.0, help="ridge penalty on standardised inputs")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    t0 = time.time()
    encode = torch_encoder_fn(init_audio_encoder(0))

    rng = np.random.default_rng(0)
    train: dict[str, list[np.ndarray]] = {"features": [], "mel": [], "opening": []}
    for c in range(args.clips):
        if c % 2:
            tts = tts_speech(10.0, seed=TTS_SEED0 + c, **tts_room(rng))
            wav, opening = tts.wav, tts.opening
        else:
            speech = synthesize_speech(10.0, seed=TRAIN_SEED0 + c, **voice(rng, augment=True))
            wav, opening = speech.wav, articulation(speech)[0]
        rep = representations(wav, encode, len(opening))
        for k in ("features", "mel"):
            train[k].append(rep[k])
        train["opening"].append(opening[:len(rep["features"])])
    y = np.concatenate(train["opening"])

    held: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    vrng = np.random.default_rng(EVAL_SEED0)
    for u in range(args.utterances):
        v = {"f0": float(vrng.uniform(85, 240)), "tempo": float(vrng.uniform(0.7, 1.4)),
             "level": float(vrng.uniform(0.2, 0.95)), "room": float(vrng.uniform(0.0005, 0.012))}
        speech = synthesize_speech(args.seconds, seed=EVAL_SEED0 + u, **v)
        held.append((f"held-out formant speech #{u}", speech.wav, articulation(speech)[0]))
    for u in range(args.tts):
        tts = tts_speech(args.seconds, seed=TTS_EVAL_SEED0 + u, level=0.5)
        held.append((f"held-out eSpeak NG speech #{u} (voice {tts.voice})", tts.wav, tts.opening))
    held.append(("other kind: harmonic synthesis", harmonic_speech(int(args.seconds * 16000), seed=7), None))
    if args.speech is not None:
        real = decode_audio(args.speech)
        held.append((f"real speech: {args.speech.name} ({real.size / 16000:.1f} s)", real, None))

    readouts = {k: Ridge(with_context(np.concatenate(train[k]), args.context), y, args.lam)
                for k in ("features", "mel")}
    rows = []
    for name, wav, opening in held:
        rep = representations(wav, encode, None if opening is None else len(opening))
        loud = loudness(quantize_pcm(wav), len(rep["features"]))
        row: dict[str, object] = {"utterance": name, "frames": len(loud)}
        for k, readout in readouts.items():
            pred = readout(with_context(rep[k], args.context))
            row[f"{k}_r_loudness"] = pearson(pred, loud)
            row[f"{k}_r_truth"] = pearson(pred, opening[:len(pred)]) if opening is not None else None
        rows.append(row)

    def f(v: object) -> str:
        return "n/a" if v is None else f"{v:+.2f}"

    print(f"{platform.processor() or platform.machine()}; {args.clips} training clips ({len(y)} frames), "
          f"context +-{args.context}, ridge {args.lam:g}; {time.time() - t0:.0f} s")
    print("| utterance | frames | features: r truth | features: r loudness | log-mel: r truth | log-mel: r loudness |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['utterance']} | {r['frames']} | {f(r['features_r_truth'])} | {f(r['features_r_loudness'])} | "
              f"{f(r['mel_r_truth'])} | {f(r['mel_r_loudness'])} |")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
