#!/usr/bin/env python
"""Issue 28's benchmark table, in one run on one machine: per runtime x precision, model-only fps, end-to-end render
fps and an unpaced stream's fps (their ratios to model-only), and a live stream (``framegen stream --realtime`` as
``bench --stream`` runs it): RTF, frames held, p99 latency after each frame's own time and beyond its lookahead,
RSS at 10 s and at the end; beside each, the quality the bundle's export measured for that precision against its
floor.

    python scripts/realtime_table.py [--workdir DIR] [--seconds 60] [--e2e-frames 300] [--json out.json]
        [--checkpoint GEN.pth] [--template-seed 11] [--speech-seed 2812] [--landmarks DIR]

Inputs (built once in ``--workdir``, default ``$TMPDIR/framegen-realtime``): framegen's trained demo generator and its
seeded audio encoder; a 1280x720 synthetic template drawn along the real landmark track in ``../shared/fixtures``
(100 frames, seed 11); ``--seconds`` of synthetic speech (seed 2812, not a training voice) for the stream and its
features for the render. Bundles: ONNX fp32 with the bf16 compute judged at export, and int8 for OpenVINO (U8S8) and
for ONNX Runtime (U8S8); int8 is exported with its floor lowered to 1 dB so that its speed can be measured even where
its quality fails the default 30 dB floor (the quality column says so, and ``--precision auto`` never uses it then).
Rows run one after another in one process, so compare them as ratios; the machine's CPU and load are printed with
them (``--rows R`` runs one row, for a process per row). The live streams keep ``framegen stream --realtime``'s
default 80 ms latency budget; the held column says how many of the frames held were held for it.

Other inputs, for a run on inputs these figures never saw: ``--checkpoint`` (any SyncTalk_2D 'ave' generator; the
quality column is then that checkpoint's), ``--template-seed``, ``--speech-seed`` (voice drawn from the seed) and
``--landmarks`` (a landmark folder for the template's track). The work folder records the inputs it was built from
(``inputs.json``) and refuses to be reused for others: give each set its own ``--workdir``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

ROWS = [("ort-cpu", "fp32"), ("ort-cpu", "int8"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8")]
#: Rows that cannot run, and why (printed under the table).
NOT_RUN = [("ort-cpu", "bf16", "ONNX Runtime's CPU provider has no bf16 kernels on x86")]
#: Published CPU figures of peer projects, as issue 28 quotes them (not re-measured here).
PEERS = [("LiveTalking", "CPU", "2-5 fps"), ("LiveTalking", "Apple M4", "about 8 fps"),
         ("Ultralight-Digital-Human", "CPU", "2-5 fps")]


def prepare(work: Path, seconds: float, checkpoint: Path | None = None, template_seed: int = 11,
            speech_seed: int = 2812, landmarks: Path | None = None) -> dict[str, Any]:
    """Checkpoints, bundles, template, speech and features in ``work`` (built on first use)."""
    import numpy as np
    import torch
    from framegen.models.demo import load_demo_generator
    from framegen.models.init import init_audio_encoder
    from framegen.models.io import save_generator
    from framegen.toolkit.export.bundle import export_bundle
    from framegen.toolkit.export.compress import CompressOptions
    from framegen.toolkit.inputs.audio import ave_features, melspectrogram
    from framegen.toolkit.inputs.encoders import resolve_encoder
    from framegen.toolkit.inputs.speech import synthesize_speech
    from framegen.toolkit.inputs.synth import synth_template

    work.mkdir(parents=True, exist_ok=True)
    lms = landmarks if landmarks is not None else ROOT.parent / "shared" / "fixtures" / "landmarks_1280x720"
    wanted = {"checkpoint": str(checkpoint.resolve()) if checkpoint is not None else "trained demo generator",
              "template_seed": template_seed, "speech_seed": speech_seed,
              "landmarks": str(lms.resolve()) if lms.is_dir() else None}
    record = work / "inputs.json"
    if record.exists() and json.loads(record.read_text()) != wanted:
        raise SystemExit(f"{work}: built from other inputs ({record.read_text().strip()}); give another --workdir")
    # A folder from before inputs.json holds the default inputs; any other non-empty folder is not this script's.
    legacy = (work / "bundle").exists() and wanted["checkpoint"] == "trained demo generator" and \
        (template_seed, speech_seed) == (11, 2812)
    if not record.exists() and any(work.iterdir()) and not legacy:
        raise SystemExit(f"{work}: not empty and not built by this script for these inputs; give another --workdir")
    record.write_text(json.dumps(wanted))
    ckpt, enc = work / "demo_generator.pth", work / "audio_encoder.pth"
    if not ckpt.exists():
        if checkpoint is not None:
            import shutil

            shutil.copyfile(checkpoint, ckpt)
        else:
            save_generator(load_demo_generator(), ckpt)
    if not enc.exists():
        torch.save(init_audio_encoder(0).state_dict(), enc)
    bundles = {"fp32": work / "bundle", "int8-openvino": work / "bundle_int8_ov", "int8-ort": work / "bundle_int8_ort"}
    if not (bundles["fp32"] / "manifest.json").exists():
        print("exporting ONNX fp32 (+ the bf16 verdict) with the audio encoder", file=sys.stderr)
        export_bundle(ckpt, bundles["fp32"], audio_encoder=enc, formats=("onnx",), precisions=("fp32", "bf16"),
                      force=True, compression=CompressOptions(min_psnr_db=1.0, max_level_error=255.0))
    for target in ("openvino", "ort"):
        out = bundles[f"int8-{target}"]
        if not (out / "manifest.json").exists():
            print(f"exporting int8 for {target} (floor lowered to measure its speed)", file=sys.stderr)
            export_bundle(ckpt, out, audio_encoder=enc, formats=("onnx",), precisions=("fp32", "int8"), force=True,
                          compression=CompressOptions(int8_target=target, min_psnr_db=1.0, max_level_error=255.0))
    template = work / "template"
    if not template.exists():
        synth_template(template, frames=100, width=1280, height=720, seed=template_seed,
                       landmarks_dir=lms if lms.is_dir() else None)
    speech = work / f"speech_{seconds:g}s.wav"
    features = work / f"features_{seconds:g}s.npy"
    if not speech.exists():
        from framegen.toolkit.demo import write_wav

        if speech_seed == 2812:  # the default row's voice, as the README's table was measured
            voice = {"f0": 140.0, "tempo": 0.95, "level": 0.55}
        else:
            rng = np.random.default_rng(speech_seed)
            voice = {"f0": float(rng.uniform(90, 230)), "tempo": float(rng.uniform(0.8, 1.25)),
                     "level": float(rng.uniform(0.3, 0.9))}
        wav = synthesize_speech(seconds, seed=speech_seed, **voice).wav
        write_wav(speech, wav)
        encode, _ = resolve_encoder(bundle=bundles["fp32"])
        np.save(features, ave_features(melspectrogram(wav), encode))
    return {"checkpoint": ckpt, "bundles": bundles, "template": template, "speech": speech, "features": features}


def quality(bundle: Path, precision: str) -> dict[str, Any]:
    """What export measured for this precision: the final frame's PSNR and worst level error, and its floor."""
    from framegen.models.bundle import load_bundle

    b = load_bundle(bundle)
    art = b.find("generator", "onnx", "fp32" if precision == "bf16" else precision)
    record = art.compute_validation("bf16") if precision == "bf16" else art.validation
    if record is None:
        return {}
    checks = {c.name: c for c in record.checks}
    psnr = checks.get("psnr_db")
    level = checks.get("max_level_error")
    if psnr is None:  # fp32: the tensor record (errors against PyTorch, not a floor)
        return {"kind": record.kind, "max_abs": checks["max_abs"].value if "max_abs" in checks else None,
                "passed": record.passed}
    return {"kind": record.kind, "psnr_db": round(float(psnr.value), 1), "max_level": level.value if level else None,
            "floor_db": 30.0, "passes_default_floor": bool(psnr.value >= 30.0 and (level is None or
                                                                                    level.value <= 96.0))}


def one_row(inputs: dict[str, Any], backend: str, precision: str, seconds: float, e2e_frames: int) -> dict[str, Any]:
    """Model-only and end-to-end (``framegen.bench``), then the live stream (``framegen.bench_stream``)."""
    import framegen

    bundle = inputs["bundles"]["fp32" if precision in ("fp32", "bf16") else
                               f"int8-{'openvino' if backend == 'openvino' else 'ort'}"]
    bench = framegen.bench(bundle=bundle, backends=[backend], precisions=[precision], batches=[1], seconds=8.0,
                           template=inputs["template"], features=inputs["features"], e2e_frames=e2e_frames)
    model = bench["results"][0]
    e2e = bench["e2e"]["runs"][0]
    # The stream as fast as it goes (unpaced, H.264 encoded, self-checked): the stream's end-to-end rate.
    unpaced = framegen.bench_stream(template=inputs["template"], bundle=bundle, backends=[backend],
                                    precision=precision, audio=inputs["speech"], seconds=e2e_frames / 25.0,
                                    chunk_ms=20.0, realtime=False)["results"][0]
    live = framegen.bench_stream(template=inputs["template"], bundle=bundle, backends=[backend], precision=precision,
                                 audio=inputs["speech"], seconds=seconds, chunk_ms=20.0)
    s = live["results"][0]
    stream_fps = unpaced["frames"] / unpaced["seconds"]
    return {"backend": backend, "precision": precision, "machine": bench.get("machine"),
            "model_fps": model["fps"], "e2e_fps": e2e["fps"], "e2e_ratio": round(e2e["fps"] / model["fps"], 3),
            "model_inflight_fps": (e2e.get("model_inflight") or {}).get("fps"),
            "e2e_ratio_inflight": e2e.get("e2e_over_model_inflight"),
            "stream_fps": round(stream_fps, 2), "stream_ratio": round(stream_fps / model["fps"], 3),
            "e2e_stages": e2e.get("stages"), "stream": s, "unpaced": unpaced, "quality": quality(bundle, precision)}


def markdown(rows: list[dict[str, Any]], cpu: str, weights: str = "trained demo") -> str:
    """The README's table (``weights``: whose quality the quality column gives)."""
    head = (f"| runtime | precision | quality ({weights}, final frame) | model-only fps: one call at a time / "
            "render's layout | render fps (ratio to each) | "
            "stream unpaced fps (ratio) | live RTF | held (for the latency budget) | start-up predicted: held, p99 "
            "ms | p99 ms after frame time | p50 / p99 ms beyond lookahead (bound 80) | RSS MB 10 s / end |")
    lines = [f"CPU: {cpu}", "", head, "|" + " --- |" * 12]
    for r in rows:
        q, s = r["quality"], r["stream"]
        qual = (f"{q['psnr_db']:.1f} dB, {q['max_level']:.0f} levels: "
                f"{'passes' if q['passes_default_floor'] else 'FAILS'} the 30 dB floor" if "psnr_db" in q else
                "the fp32 contract")
        rss = s["rss_mb"]
        inflight = r.get("model_inflight_fps")
        pred = (s.get("startup") or {}).get("predicted")
        said = f"{pred['held_share'] * s['frames']:.0f}, {pred['beyond_p99_ms']:.0f}" if pred else "-"
        both = (f"{r['model_fps']:.1f} / {inflight:.1f}", f"{r['e2e_ratio']:.2f}x / {r['e2e_ratio_inflight']:.2f}x") \
            if inflight else (f"{r['model_fps']:.1f}", f"{r['e2e_ratio']:.2f}x")
        lines.append(f"| {r['backend']} | {r['precision']} | {qual} | {both[0]} | {r['e2e_fps']:.1f} "
                     f"({both[1]}) | {r['stream_fps']:.1f} ({r['stream_ratio']:.2f}x) | "
                     f"{s['rtf']:.2f} | {s['held_frames']} ({s.get('held_late_frames', 0)}) | {said} | "
                     f"{s['frame_latency_ms']['p99']:.0f} | {s['beyond_lookahead_ms']['p50']:.0f} / "
                     f"{s['beyond_lookahead_ms']['p99']:.0f} | "
                     f"{rss.get('10s', 0):.0f} / {rss['end']:.0f} |")
    lines += [f"| {b} | {p} | not run: {why} | | | | | | | | | |" for b, p, why in NOT_RUN]
    lines += ["", "| peer | hardware | published fps |", "| --- | --- | --- |"]
    lines += [f"| {n} | {h} | {f} |" for n, h, f in PEERS]
    return "\n".join(lines)


def main() -> int:
    """Build the inputs, run every row, print the markdown table (and write JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "framegen-realtime")
    ap.add_argument("--seconds", type=float, default=60.0, help="seconds of live stream per row")
    ap.add_argument("--e2e-frames", type=int, default=300)
    ap.add_argument("--rows", default=",".join(f"{b}:{p}" for b, p in ROWS))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--checkpoint", type=Path, help="an 'ave' generator (default: the trained demo generator)")
    ap.add_argument("--template-seed", type=int, default=11)
    ap.add_argument("--speech-seed", type=int, default=2812)
    ap.add_argument("--landmarks", type=Path, help="landmark folder for the template's track (default: the "
                    "fixtures' real track when present)")
    args = ap.parse_args()
    from framegen.toolkit.bench.machine import describe_machine

    inputs = prepare(args.workdir, args.seconds, args.checkpoint, args.template_seed, args.speech_seed,
                     args.landmarks)
    machine = describe_machine()
    cpu = machine.get("cpu", {})
    units = ", ".join(cpu.get("vector_extensions", []))
    cpu_line = f"{cpu.get('model')}, {cpu.get('logical_cores')} logical cores; {units}"
    rows = []
    for spec in args.rows.split(","):
        backend, precision = spec.split(":")
        print(f"== {backend} {precision}", file=sys.stderr)
        rows.append(one_row(inputs, backend, precision, args.seconds, args.e2e_frames))
        r = rows[-1]
        print(f"   model {r['model_fps']:.1f} fps (render layout {r['model_inflight_fps']}), e2e {r['e2e_fps']:.1f} "
              f"({r['e2e_ratio']:.2f}x; {r['e2e_ratio_inflight']}x the render layout's), unpaced stream "
              f"{r['stream_fps']:.1f} ({r['stream_ratio']:.2f}x), stream RTF "
              f"{r['stream']['rtf']:.2f}, held {r['stream']['held_frames']}, p99 beyond lookahead "
              f"{r['stream']['beyond_lookahead_ms']['p99']:.0f} ms", file=sys.stderr)
    text = markdown(rows, cpu_line, "trained demo" if args.checkpoint is None else args.checkpoint.name)
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows, "markdown": text}, indent=1,
                                        default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
