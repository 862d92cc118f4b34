"""Measure what the tolerance profiles (toolkit/compare/profiles.py) are chosen from; the results are in docs/PARITY.md.

1. Correct backends against the PyTorch fp32 reference, through the parity engine, on real-looking frames: a
   calibrated seeded 'ave' generator, a synthetic 1280x720 template on the real landmark track, SyncTalk_2D's real
   'ave' features (from ../shared when present).
2. Deliberately broken generators: the ONNX output convolution (outc.conv weight and bias) scaled by 0.5 % .. 20 %,
   checksums updated, fp32 and fp16.
3. What a faithful port's re-implementation of the deterministic stages differs by: a float32 re-implementation of
   cv2's INTER_CUBIC, float64 instead of float32 ``x * 255`` before truncation, a float32 mel spectrogram, and the
   bundle's audio encoders against PyTorch.

    python scripts/measure_tolerances.py [--frames 24] [--broken-frames 8] [--json out.json]

Takes about ten minutes on two busy cores (mostly the Core ML export and the PyTorch reference); --work DIR
keeps the bundle for a re-run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "parity_tests"))  # faults.py: the deliberately broken generators

FACTORS = (1.005, 1.01, 1.02, 1.05, 1.1, 1.2)


def _shared(name: str) -> Path | None:
    path = ROOT.parent / "shared" / "fixtures" / name
    return path if path.exists() else None


def _row(label: str, summary: dict) -> dict:
    keys = ("max_abs", "mean_abs", "p99_abs", "psnr_db", "bias", "spread_change", "share_diff", "share_diff_gt1")
    return {"case": label, **{k: summary[k] for k in keys}}


def _print(rows: list[dict], title: str) -> None:
    print(f"\n## {title}\n")
    if not rows:
        return
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        cells = []
        for c in cols:
            v = r[c]
            cells.append(f"{v:.3g}" if isinstance(v, float) else str(v))
        print("| " + " | ".join(cells) + " |")


def parity_rows(report, suffix: str = "") -> list[dict]:
    """One row per candidate x stage of a parity report."""
    rows = []
    for cand in report.candidates:
        if cand.error:
            rows.append({"case": cand.candidate.label + suffix, "error": cand.error})
            continue
        for s in cand.stages:
            rows.append({"stage": s.stage, **_row(cand.candidate.label + suffix, s.metrics)})
    return rows


def float_cubic_resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """cv2.INTER_CUBIC restated in float64 (a = -0.75, half-pixel centres, replicated border), rounded to uint8:
    what a careful port writes without cv2's 11-bit fixed-point coefficients."""
    def weights(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray]:
        scale = in_size / out_size
        x = (np.arange(out_size) + 0.5) * scale - 0.5
        x0 = np.floor(x).astype(int)
        t = x - x0
        a = -0.75
        def k(d: np.ndarray) -> np.ndarray:
            d = np.abs(d)
            return np.where(d <= 1, ((a + 2) * d - (a + 3)) * d * d + 1,
                            np.where(d < 2, ((a * d - 5 * a) * d + 8 * a) * d - 4 * a, 0.0))
        idx = np.stack([x0 - 1, x0, x0 + 1, x0 + 2], axis=1)
        w = np.stack([k(t + 1), k(t), k(1 - t), k(2 - t)], axis=1)
        return np.clip(idx, 0, in_size - 1), w

    iy, wy = weights(height, img.shape[0])
    ix, wx = weights(width, img.shape[1])
    src = img.astype(np.float64)
    rows = np.einsum("ok,okwc->owc", wy, src[iy])
    out = np.einsum("pk,opkc->opc", wx, rows[:, ix])
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def mel_float32(wav: np.ndarray) -> np.ndarray:
    """The mel spectrogram computed in float32 throughout (float32 FFT, filterbank and log), as a port might."""
    from framegen.toolkit.inputs.audio import mel_basis
    from scipy import fft

    x = wav.astype(np.float32)
    y = np.empty_like(x)
    y[0] = x[0]
    y[1:] = x[1:] - np.float32(0.97) * x[:-1]
    pad = np.pad(y, (400, 400))
    n = 1 + len(y) // 200
    frames = np.lib.stride_tricks.sliding_window_view(pad, 800)[::200][:n]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(800) / 800)).astype(np.float32)
    mag = np.abs(fft.rfft(frames * window, axis=-1)).astype(np.float32)
    mel = mag @ mel_basis().astype(np.float32).T
    db = np.float32(20) * np.log10(np.maximum(np.float32(1e-5), mel)) - np.float32(20)
    return np.clip(np.float32(8) * ((db + np.float32(100)) / np.float32(100)) - np.float32(4), -4, 4)


def main() -> int:
    """Run every measurement and print Markdown tables (and optionally write them as JSON)."""
    from framegen.models.allocator import keep_freed_memory

    keep_freed_memory()  # PyTorch's activations reused, not page-faulted anew (models/allocator.py)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=24, help="frames for the correct backends")
    ap.add_argument("--broken-frames", type=int, default=8, help="frames for each broken generator")
    ap.add_argument("--json", type=Path, help="write all rows here")
    ap.add_argument("--work", type=Path, help="keep the bundle and template here (default: a temporary dir)")
    args = ap.parse_args()

    import cv2
    from faults import broken_bundle
    from framegen.models.bundle import load_bundle
    from framegen.models.init import init_audio_encoder, init_generator
    from framegen.models.io import save_audio_encoder, save_generator
    from framegen.models.pixels import pred_to_uint8
    from framegen.toolkit.export.bundle import export_bundle
    from framegen.toolkit.inputs.preprocess import PreparedTemplate
    from framegen.toolkit.inputs.synth import synth_template
    from framegen.toolkit.inputs.template import open_template
    from framegen.toolkit.parity.engine import Candidate, run_parity
    from framegen.toolkit.parity.inputs import parity_candidates

    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        work = args.work or Path(tmpdir)
        work.mkdir(parents=True, exist_ok=True)
        ckpt = save_generator(init_generator("ave", seed=0, calibrate=True), work / "generator.pth")
        enc_ckpt = save_audio_encoder(init_audio_encoder(seed=0), work / "encoder.pth")
        bundle = work / "bundle"
        if not (bundle / "manifest.json").exists():
            export_bundle(ckpt, bundle, audio_encoder=enc_ckpt, formats=("onnx", "coreml"),
                          precisions=("fp32", "fp16"))
        tdir = work / "template"
        if not tdir.exists():
            synth_template(tdir, frames=max(args.frames, 12), landmarks_dir=_shared("landmarks_1280x720"))
        prepared = PreparedTemplate(open_template(tdir))
        feats_path = _shared("ave_features_522x512.npy")
        feats = np.load(feats_path) if feats_path else \
            (np.abs(np.random.default_rng(0).standard_normal((200, 512))) * 0.5).astype(np.float32)

        # 1. correct backends
        cands, notes = parity_candidates(load_bundle(bundle))
        report = run_parity(bundle, ckpt, prepared, feats, candidates=cands, frames=args.frames, silence_frames=0,
                            tolerances="fixed", locate=False)
        results["correct"] = parity_rows(report)
        _print(results["correct"], f"correct backends vs PyTorch fp32 ({args.frames} frames)")
        for n in notes:
            print(f"note: {n}")

        # 2. broken generators
        rows = []
        for precision in ("fp32", "fp16"):
            for factor in FACTORS:
                broken = broken_bundle(bundle, work / f"broken_{precision}_{factor}", factor, precision)
                rep = run_parity(broken, ckpt, prepared, feats, candidates=[Candidate("ort-cpu", precision)],
                                 frames=args.broken_frames, silence_frames=0, tolerances="fixed", locate=False)
                rows += parity_rows(rep, f" outc x{factor}")
        results["broken"] = rows
        _print(rows, f"ONNX generators with outc.conv scaled ({args.broken_frames} frames)")

        # 3a. cubic resampling: cv2 fixed point vs a float re-implementation, on the template's real crop boxes
        rows = []
        for i in range(min(len(prepared), 12)):
            frame = prepared.frame(i)
            x0, y0, x1, y1 = prepared.boxes[i]
            crop = frame[y0:y1, x0:x1]
            for label, (src, w, h) in {"crop box -> 328": (crop, 328, 328),
                                       "328 -> crop box": (prepared.prepared(i).crop328, x1 - x0, y1 - y0)}.items():
                a = cv2.resize(src, (w, h), interpolation=cv2.INTER_CUBIC).astype(int)
                b = float_cubic_resize(src, w, h).astype(int)
                d = np.abs(a - b)
                rows.append({"case": f"frame {i} {label}", "max_abs": float(d.max()),
                             "share_diff": float((d > 0).mean())})
        results["cubic"] = rows
        worst = max(r["max_abs"] for r in rows), max(r["share_diff"] for r in rows)
        print(f"\n## cv2 INTER_CUBIC vs float re-implementation: max {worst[0]:.0f} level(s), up to "
              f"{100 * worst[1]:.3f}% of values differ ({len(rows)} resizes)")

        # 3b. float32 vs float64 product before truncation, on the reference's real outputs
        from framegen.runtimes.registry import open_backend
        from framegen.runtimes.spec import OpenRequest
        from framegen.toolkit.inputs.features import audio_windows

        with open_backend("torch-cpu", OpenRequest(checkpoint=ckpt, mode="ave")) as ref:
            imgs = np.stack([prepared.prepared(prepared.template_index(i)).image_input() for i in range(4)])
            preds = ref.infer(imgs, audio_windows(feats, list(range(4)), "ave"))
        share = []
        for p in preds:
            a = pred_to_uint8(p).astype(int)
            b = np.clip(np.trunc(p.astype(np.float64) * 255), 0, 255).transpose(1, 2, 0).astype(int)
            r = np.clip(np.rint(p.astype(np.float64) * 255), 0, 255).transpose(1, 2, 0).astype(int)
            share.append(((a != b).mean(), (a != r).mean()))
        results["truncation"] = [{"case": "float64 product", "share_diff": max(s[0] for s in share)},
                                 {"case": "rounding instead", "share_diff": min(s[1] for s in share)}]
        print(f"\n## x*255 truncation: float64 product differs on {100 * results['truncation'][0]['share_diff']:.4f}% "
              f"of values; rounding instead of truncating on {100 * results['truncation'][1]['share_diff']:.1f}%")

        # 3c. mel in float32 and the audio encoders against PyTorch
        speech = _shared("speech_16k_mono.wav")
        if speech is not None:
            import torch
            from framegen.models.checkpoint import load_audio_encoder
            from framegen.toolkit.inputs.audio import decode_audio, mel_windows, melspectrogram

            wav = decode_audio(speech)
            m64, m32 = melspectrogram(wav), mel_float32(wav)
            d = np.abs(m64.astype(np.float64) - m32[: len(m64)])
            results["mel"] = [{"case": "float32 mel", "max_abs": float(d.max()), "mean_abs": float(d.mean())}]
            print(f"\n## mel in float32 vs framegen's float64: max {d.max():.2e}, mean {d.mean():.2e}")
            windows = mel_windows(m64)[:256]
            with torch.inference_mode():
                ref_emb = load_audio_encoder(enc_ckpt)(torch.from_numpy(windows)).numpy()
            rows = []
            b = load_bundle(bundle)
            for precision in ("fp32", "fp16"):
                if b.has("audio_encoder", "onnx", precision):
                    import onnxruntime as ort

                    sess = ort.InferenceSession(str(b.find("audio_encoder", "onnx", precision).path),
                                                providers=["CPUExecutionProvider"])
                    inp = sess.get_inputs()[0]
                    x = windows.astype(np.float16 if "float16" in inp.type else np.float32)
                    emb = sess.run(None, {inp.name: x})[0].astype(np.float32)
                    d = np.abs(emb - ref_emb)
                    rows.append({"case": f"encoder onnx {precision}", "max_abs": float(d.max()),
                                 "mean_abs": float(d.mean())})
                if b.has("audio_encoder", "coreml", precision):
                    try:
                        from framegen.runtimes.mil.program import encoder_fn
                    except ImportError:
                        continue
                    emb = encoder_fn(b.find("audio_encoder", "coreml", precision).path)(windows)
                    d = np.abs(emb - ref_emb)
                    rows.append({"case": f"encoder coreml-mil {precision}", "max_abs": float(d.max()),
                                 "mean_abs": float(d.mean())})
            results["encoder"] = rows
            _print(rows, f"audio encoder vs PyTorch ({len(windows)} real speech windows; embeddings "
                         f"0..{ref_emb.max():.1f})")

    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
