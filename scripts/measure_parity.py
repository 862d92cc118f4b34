"""Measure the derived-tolerance rule (toolkit/compare/tolerance.py) over many seeded checkpoints; table in
docs/PARITY.md.

For every seeded calibrated checkpoint (``--seeds ave:100-111,hubert:100-103,wenet:100-103``, seeds the suite never
uses; ``demo:N`` is the trained demo generator, judged on features of its own encoder): export a bundle with every
artifact kind (ONNX and Core ML, fp32 and fp16, tensor and image-I/O), run
``framegen parity`` (derived tolerances, the checkpoint measured on the parity frames) on every kind through ort-cpu
and the coreml-mil verifier, and count false failures; then break every artifact in four ways (``parity_tests/
faults.py``: the output convolution x1.01, one mid-network convolution x1.02, the audio input ignored, the colour
channels swapped; checksums updated) and count the drifts each kind lets through (one speech frame per drifted run).
Features: SyncTalk_2D's real 'ave' features (../shared) for 'ave', seeded stand-ins with their spread for
'hubert' / 'wenet'.

    python scripts/measure_parity.py [--seeds ...] [--frames 1] [--silence-frames 1] [--work DIR] [--json out.json]

One line per checkpoint and kind as it goes (flushed, so a background run can be followed), then the summary table.
Every run judges all three stages, ``layers`` included (every layer of each artifact against its own derived limit);
each line also says how many drifts the output stages alone caught. About 8 minutes per checkpoint on two free cores,
12-15 when two such processes share them (the coreml-mil verifier and the layer comparisons dominate).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "parity_tests"))


def parse_seeds(text: str) -> list[tuple[str, int]]:
    """``ave:100-103,hubert:100`` -> ``[("ave", 100), ..., ("hubert", 100)]``, interleaved across modes."""
    per_mode: dict[str, list[int]] = {}
    for part in text.split(","):
        mode, _, seeds = part.strip().partition(":")
        lo, _, hi = seeds.partition("-")
        per_mode.setdefault(mode, []).extend(range(int(lo), int(hi or lo) + 1))
    out = []
    while any(per_mode.values()):
        for mode in list(per_mode):
            if per_mode[mode]:
                out.append((mode, per_mode[mode].pop(0)))
    return out


def generator_for(mode: str, seed: int):
    """``demo``: the trained demo generator (an 'ave' generator); any other mode: a calibrated seeded one."""
    from framegen.models.demo import load_demo_generator
    from framegen.models.init import init_generator

    return load_demo_generator() if mode == "demo" else init_generator(mode, seed=seed, calibrate=True)


def features_for(mode: str, seed: int) -> np.ndarray:
    """Real 'ave' features when ../shared has them; otherwise seeded rows with their spread."""
    from framegen.models.contract import audio_shape

    if mode == "demo":  # what the demo generator was trained on: its seed-0 encoder's features of speech
        from framegen.models.init import init_audio_encoder
        from framegen.toolkit.inputs.audio import ave_features, melspectrogram, torch_encoder_fn
        from framegen.toolkit.inputs.speech import speech_like

        return ave_features(melspectrogram(speech_like(4.0, seed=seed + 77)), torch_encoder_fn(init_audio_encoder(0)))
    real = ROOT.parent / "shared" / "fixtures" / "ave_features_522x512.npy"
    if mode == "ave" and real.is_file():
        return np.load(real)
    width = int(np.prod(audio_shape(mode))) // 16
    return (np.abs(np.random.default_rng(seed).standard_normal((64, width))) * 0.5).astype(np.float32)


def margin(result, skip: str | None = None) -> float:
    """The largest value / limit over every limit of a candidate (> 1: a limit broken; PSNR as limit / value),
    leaving out stage ``skip``."""
    return margin_at(result, skip)[0]


def margin_at(result, skip: str | None = None) -> tuple[float, str]:
    """:func:`margin` and the ``stage.limit`` that sets it."""
    ratios = limit_ratios(result, skip)
    where = max(ratios, key=ratios.get, default="")
    return (ratios[where] if where else 0.0), where


def limit_ratios(result, skip: str | None = None) -> dict[str, float]:
    """Value / limit of every limit of a candidate, by ``stage.limit`` (PSNR as limit / value)."""
    ratios: dict[str, float] = {}
    for s in result.stages:
        if s.stage == skip:
            continue
        m = s.metrics
        for name, limit in s.limits.items():
            key = {"min_cosine": "cosine", "min_psnr_db": "psnr_db", "max_share_diff": "share_diff",
                   "max_share_diff_gt1": "share_diff_gt1", "max_bias": "bias",
                   "max_spread_change": "spread_change", "max_excess": "excess"}.get(name, name)
            value = abs(float(m[key]))
            if name.startswith("min_"):
                ratio = limit / value if value > 0 else float("inf")
            else:
                ratio = value / limit if limit > 0 else (float("inf") if value > 0 else 0.0)
            ratios[f"{s.stage}.{name}"] = ratio
    return ratios


def _skip_export_validation() -> None:
    """Export without validation: it runs every artifact against PyTorch on several batches (the coreml-mil ones
    dominate); this script judges every artifact with parity instead."""
    import framegen.toolkit.export.bundle as export
    import framegen.toolkit.export.validate_image as vi

    # What the manifest's validation records read (toolkit/export/validate*.py), marked as skipped.
    skipped = {"skipped": "scripts/measure_parity.py", "runtime": "skipped", "weights_max_rel_err": 0.0, "max_abs": 0,
               "share_diff": 0.0, "tolerance": {"max_abs": 0.0, "mean_abs": 0.0, "weight_rel": 0.0},
               "limits": {"max_abs": 0, "mean_abs": 0}, "limit_sources": {"max_abs": "skipped", "mean_abs": "skipped"}}
    export.validate_artifact = lambda *a, **k: dict(skipped)
    vi.validate_image_artifact = lambda *a, **k: dict(skipped)


def main() -> int:
    """Run the measurement and print the per-kind table (and optionally write every row as JSON)."""
    from framegen.models.allocator import keep_freed_memory

    keep_freed_memory()  # PyTorch's activations reused, not page-faulted anew (models/allocator.py)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="ave:100-111,hubert:100-103,wenet:100-103")
    ap.add_argument("--frames", type=int, default=1, help="speech frames per parity run")
    ap.add_argument("--silence-frames", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("/tmp/framegen_measure_parity"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep each checkpoint's bundles")
    ap.add_argument("--summarize", type=Path, nargs="+", help="only print the table of these --json files")
    args = ap.parse_args()
    if args.summarize:
        rows = [r for f in args.summarize for r in json.loads(f.read_text())]
        print(f"# {len({(r['mode'], r['seed']) for r in rows})} checkpoints: "
              + ", ".join(sorted({f"{r['mode']}:{r['seed']}" for r in rows})))
        print_table(rows)
        return 0

    from faults import DRIFTS, drifted_bundle
    from framegen.models.io import save_generator
    from framegen.toolkit.compare.tolerance import resolve_tolerances
    from framegen.toolkit.export.bundle import export_bundle
    from framegen.toolkit.inputs.preprocess import PreparedTemplate
    from framegen.toolkit.inputs.synth import synth_template
    from framegen.toolkit.inputs.template import open_template
    from framegen.toolkit.parity.engine import run_parity
    from framegen.toolkit.parity.inputs import parity_candidates

    _skip_export_validation()
    args.work.mkdir(parents=True, exist_ok=True)
    tdir = args.work / "template"
    if not tdir.exists():
        lms = ROOT.parent / "shared" / "fixtures" / "landmarks_1280x720"
        synth_template(tdir, frames=12, width=1280, height=720, landmarks_dir=lms if lms.is_dir() else None)
    template = PreparedTemplate(open_template(tdir))
    rows: list[dict] = []
    print(f"# measure_parity: seeds {args.seeds}; {args.frames} speech + {args.silence_frames} silence frame(s) per "
          f"run", flush=True)
    for mode, seed in parse_seeds(args.seeds):
        t0 = time.perf_counter()
        work = args.work / f"{mode}_{seed}"
        work.mkdir(exist_ok=True)
        ckpt = save_generator(generator_for(mode, seed), work / "generator.pth")
        model_mode = "ave" if mode == "demo" else mode
        bundle = work / "bundle"
        if not (bundle / "manifest.json").exists():
            export_bundle(ckpt, bundle, formats=("onnx", "coreml"), precisions=("fp32", "fp16"),
                          io=("tensor", "image"), mode=model_mode, force=True)  # ave and hubert weights look alike
        feats = features_for(mode, seed)
        cands, _ = parity_candidates(bundle, checkpoint=ckpt)
        cands = [c for c in cands if c.backend in ("ort-cpu", "coreml-mil")]
        tol = resolve_tolerances("derived", ckpt, template, feats, model_mode, speech=args.frames,
                                 silence=1 if args.silence_frames else 0)
        runs = {"clean": run_parity(bundle, ckpt, template, feats, candidates=cands, frames=args.frames,
                                    silence_frames=args.silence_frames, tolerances=tol)}
        for name, (layer, edit) in DRIFTS.items():
            broken = drifted_bundle(bundle, work / "drift", layer, edit, ckpt)
            # One speech frame is enough to show a drift caught (the clean run shows nothing false on them all).
            runs[name] = run_parity(broken, ckpt, template, feats, candidates=cands, frames=1, silence_frames=0,
                                    tolerances=tol)
            shutil.rmtree(broken, ignore_errors=True)
        for cand in cands:
            row = {"mode": mode, "seed": seed, "kind": cand.label}
            for name, report in runs.items():
                res = next(r for r in report.candidates if r.candidate == cand)
                layers = next((s for s in res.stages if s.stage == "layers"), None)
                row[name] = {"passed": res.passed, "margin": margin(res), "at": margin_at(res)[1],
                             "ratios": limit_ratios(res), "error": res.error,
                             "failures": res.failures()[:2],
                             "layers_excess": layers.metrics["excess"] if layers is not None else None,
                             "output_margin": margin(res, skip="layers")}
            rows.append(row)
            clean = row["clean"]
            caught = [name for name in DRIFTS if not row[name]["passed"]]
            print(f"{mode} {seed} {cand.label}: clean {'pass' if clean['passed'] else 'FALSE FAIL'} (margin "
                  f"{clean['margin']:.2f} at {clean['at']}, layers {clean['layers_excess']:.3f}); drifts caught "
                  f"{len(caught)}/{len(DRIFTS)} (min margin {min(row[n]['margin'] for n in DRIFTS):.2f}, by the "
                  f"output stages alone {sum(row[n]['output_margin'] > 1 for n in DRIFTS)}/{len(DRIFTS)})"
                  + ("" if clean["passed"] else f"; {clean['failures']}")
                  + "".join(f"; MISSED {n}" for n in DRIFTS if n not in caught), flush=True)
        print(f"# {mode} {seed} done in {time.perf_counter() - t0:.0f} s "
              f"(measurement {tol.measurement.seconds:.0f} s{' cached' if tol.measurement.cached else ''})",
              flush=True)
        if not args.keep:
            shutil.rmtree(bundle, ignore_errors=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print_table(rows)
    return 0


def print_table(rows: list[dict]) -> None:
    """The per-kind summary table (Markdown) of measurement rows."""
    from faults import DRIFTS

    kinds = sorted({r["kind"] for r in rows})
    print("\n| kind | checkpoints (ave/hubert/wenet) | false failures | worst clean margin | worst clean layers | "
          + " | ".join(f"{n} caught (weakest margin; by the output stages alone)" for n in DRIFTS)
          + " | weakest drift margin |")
    print("|" + "---|" * (6 + len(DRIFTS)))
    for kind in kinds:
        rs = [r for r in rows if r["kind"] == kind]
        counts = "/".join(str(sum(r["mode"] == m for r in rs)) for m in ("ave", "hubert", "wenet"))
        false = sum(not r["clean"]["passed"] for r in rs)
        layers = max(r["clean"]["layers_excess"] for r in rs)
        caught = [f"{sum(not r[n]['passed'] for r in rs)}/{len(rs)} ({min(r[n]['margin'] for r in rs):.3g}; "
                  f"{sum(r[n]['output_margin'] > 1 for r in rs)})" for n in DRIFTS]
        print(f"| {kind} | {counts} | {false} | {max(r['clean']['margin'] for r in rs):.2f} | {layers:.3f} | "
              + " | ".join(caught) + f" | {min(r[n]['margin'] for r in rs for n in DRIFTS):.2f} |")


if __name__ == "__main__":
    raise SystemExit(main())
