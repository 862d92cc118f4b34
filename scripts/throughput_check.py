#!/usr/bin/env python
"""Issue 9's throughput targets, measured in one run on one machine.

1. ``framegen bench`` model-only: ort-cpu, fp32, batch 1 (and torch-cpu, to tell how much of the reference ratio
   is ONNX Runtime against eager PyTorch).
2. ``framegen render --stats``: ort-cpu, batch 1, the same bundle, template and features, to an H.264 mp4.
3. ``scripts/reference_loop.py``: SyncTalk_2D's own per-frame loop (PyTorch eager, JPEG + landmark file read per
   frame, MJPG writer), same checkpoint, template and features.

Prints e2e / model-only (target >= 0.8) and e2e / reference (target >= 3), each stage's cost in the render (busy
ms per frame, share of wall time), and the machine's load before and after each step: on a shared machine only
ratios from one run mean anything. With ``--rounds R`` the three steps run R times in turn and the medians are
reported (load drifts; interleaving spreads the drift over all three).

Inputs are built once in ``--workdir`` (default ``$TMPDIR/framegen-throughput``) and reused: a calibrated seeded
'ave' checkpoint, its ONNX fp32 bundle (``toolkit.export.export_bundle``), a 1280x720 synthetic template drawn
from the real landmark track in ``../shared/fixtures`` (or a generated one), and the real 'ave' features there (or
seeded features of the same spread).

    python scripts/throughput_check.py [--frames 100] [--reference-frames 30] [--rounds 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

E2E_TARGET = 0.8
REFERENCE_TARGET = 3.0


def _load() -> dict[str, Any]:
    from framegen.toolkit.bench.machine import load_now

    return load_now()


def prepare_inputs(workdir: Path, template_frames: int, bundle: Path | None = None) -> dict[str, Path]:
    """Checkpoint, bundle, template and features in ``workdir`` (built on first use)."""
    import numpy as np

    workdir.mkdir(parents=True, exist_ok=True)
    ckpt = workdir / "generator_ave.pth"
    if not ckpt.exists():
        from framegen.models.init import init_generator
        from framegen.models.io import save_generator

        print("building the calibrated seeded checkpoint", file=sys.stderr)
        save_generator(init_generator("ave", seed=0, calibrate=True), ckpt)
    if bundle is None:
        bundle = workdir / "bundle"
        if not (bundle / "manifest.json").exists():
            from framegen.toolkit.export.bundle import export_bundle

            print("exporting the ONNX fp32 bundle", file=sys.stderr)
            export_bundle(ckpt, bundle, formats=("onnx",), precisions=("fp32",))
    shared = ROOT.parent / "shared" / "fixtures"
    template = workdir / f"template_{template_frames}"
    if not template.exists():
        from framegen.toolkit.inputs.synth import synth_template

        lms = shared / "landmarks_1280x720"
        print(f"drawing a {template_frames}-frame 1280x720 template", file=sys.stderr)
        synth_template(template, frames=template_frames, width=1280, height=720,
                       landmarks_dir=lms if lms.is_dir() else None)
    features = shared / "ave_features_522x512.npy"
    if not features.exists():
        features = workdir / "features_seeded.npy"
        if not features.exists():
            rng = np.random.default_rng(0)
            np.save(features, (np.abs(rng.standard_normal((522, 512))) * 0.5).astype(np.float32))
    return {"checkpoint": ckpt, "bundle": bundle, "template": template, "features": features}


def _run(cmd: list[str], what: str) -> float:
    """Run a step; its output goes to our stderr; a failure stops the check with the step's name."""
    print(f"$ {' '.join(cmd)}", file=sys.stderr)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, stdout=sys.stderr, stderr=sys.stderr, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"error: {what} failed (exit {proc.returncode})")
    return time.perf_counter() - t0


def one_round(inputs: dict[str, Path], tmp: Path, frames: int, reference_frames: int,
              iterations: int | None, bench_e2e: bool = True) -> dict[str, Any]:
    """The three steps once; returns their figures and the load around each."""
    fg = [sys.executable, "-m", "framegen.toolkit.cli"]
    bench_json, torch_json = tmp / "bench_ort.json", tmp / "bench_torch.json"
    stats_json, ref_json = tmp / "render_stats.json", tmp / "reference.json"
    out: dict[str, Any] = {"load": {"start": _load()}}

    cmd = [*fg, "bench", "--bundle", str(inputs["bundle"]), "--backends", "ort-cpu", "--precisions", "fp32",
           "--batch", "1", "--json", str(bench_json)]
    if iterations:
        cmd += ["--iterations", str(iterations)]
    if bench_e2e:
        # bench's own end-to-end run measures the render's process CPU time, which moves less with load than wall time
        cmd += ["--e2e", "--template", str(inputs["template"]), "--features", str(inputs["features"]),
                "--e2e-frames", str(frames)]
    _run(cmd, "framegen bench (ort-cpu)")
    bench = json.loads(bench_json.read_text())
    row = bench["results"][0]
    out["model_only"] = {"fps": row["fps"], "latency_ms": row["latency_ms"], "iterations": row["iterations"],
                         "cpu_ms_per_frame": row["cpu_ms_per_frame"], "cores_busy": row["cores_busy"],
                         "threads": row.get("backend_info", {}).get("threads")}
    if bench_e2e:
        run = bench["e2e"]["runs"][0]
        out["bench_e2e"] = {k: run[k] for k in ("fps", "cpu_ms_per_frame", "cores_busy", "stages", "frames")}
    # torch-cpu model-only splits the reference ratio into "ONNX Runtime vs eager PyTorch" and the rest.
    _run([*fg, "bench", "--checkpoint", str(inputs["checkpoint"]), "--backends", "torch-cpu", "--batch", "1",
          "--warmup", "1", "--iterations", "3", "--json", str(torch_json)], "framegen bench (torch-cpu)")
    row = json.loads(torch_json.read_text())["results"][0]
    out["torch_model_only"] = {"fps": row["fps"], "latency_ms": row["latency_ms"], "iterations": row["iterations"],
                               "cpu_ms_per_frame": row["cpu_ms_per_frame"], "cores_busy": row["cores_busy"]}
    out["load"]["after_bench"] = _load()

    _run([*fg, "render", "--bundle", str(inputs["bundle"]), "--backend", "ort-cpu", "--batch", "1",
          "--template", str(inputs["template"]), "--features", str(inputs["features"]),
          "--out", str(tmp / "render.mp4"), "--max-frames", str(frames), "--stats", str(stats_json),
          "--no-progress"], "framegen render")
    out["e2e"] = json.loads(stats_json.read_text())
    out["load"]["after_render"] = _load()

    _run([sys.executable, str(ROOT / "scripts" / "reference_loop.py"), "--checkpoint", str(inputs["checkpoint"]),
          "--template", str(inputs["template"]), "--features", str(inputs["features"]),
          "--max-frames", str(reference_frames), "--json", str(ref_json)], "reference loop")
    out["reference"] = json.loads(ref_json.read_text())
    out["load"]["after_reference"] = _load()

    out["e2e_over_model_only"] = out["e2e"]["fps"] / out["model_only"]["fps"]
    out["e2e_over_reference"] = out["e2e"]["fps"] / out["reference"]["fps"]
    return out


def stage_breakdown(e2e: dict[str, Any], model_latency_ms: float) -> list[dict[str, Any]]:
    """Each render stage: busy seconds, ms per output frame, share of the wall time; inference also against its
    model-only latency (how much the other stages slowed it by competing for the cores)."""
    frames = max(1, int(e2e["frames"]))
    rows = []
    for name, st in e2e.get("stages", {}).items():
        ms = 1000.0 * st["seconds"] / frames
        row = {"stage": name, "busy_s": st["seconds"], "ms_per_frame": round(ms, 2),
               "share_of_wall": st.get("share")}
        if name == "infer":
            row["vs_model_only"] = round(ms / model_latency_ms, 3) if model_latency_ms else None
        rows.append(row)
    return rows


def main() -> None:
    """Run the check and print the figures (and write them as JSON with ``--json``)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "framegen-throughput")
    p.add_argument("--bundle", type=Path, default=None, help="use this bundle instead of exporting one")
    p.add_argument("--template-frames", type=int, default=100)
    p.add_argument("--frames", type=int, default=100, help="frames rendered end to end")
    p.add_argument("--reference-frames", type=int, default=30, help="frames of the reference loop")
    p.add_argument("--iterations", type=int, default=None, help="bench iterations (default: bench's auto)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--no-bench-e2e", action="store_true",
                   help="skip bench's own end-to-end run (its CPU-time figures)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    inputs = prepare_inputs(args.workdir, args.template_frames, args.bundle)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="throughput-", dir=args.workdir) as tmp:
        for r in range(args.rounds):
            print(f"--- round {r + 1} of {args.rounds}", file=sys.stderr)
            rounds.append(one_round(inputs, Path(tmp), args.frames, args.reference_frames, args.iterations,
                                    bench_e2e=not args.no_bench_e2e))

    med = statistics.median
    model_fps = med(r["model_only"]["fps"] for r in rounds)
    e2e_fps = med(r["e2e"]["fps"] for r in rounds)
    ref_fps = med(r["reference"]["fps"] for r in rounds)
    ratio_model = med(r["e2e_over_model_only"] for r in rounds)
    ratio_ref = med(r["e2e_over_reference"] for r in rounds)
    last = rounds[-1]
    stages = stage_breakdown(last["e2e"], last["model_only"]["latency_ms"]["mean"])
    summary = {
        "inputs": {k: os.fspath(v) for k, v in inputs.items()},
        "frames": {"e2e": args.frames, "reference": args.reference_frames},
        "model_only_fps": model_fps, "e2e_fps": e2e_fps, "reference_fps": ref_fps,
        "torch_model_only_fps": med(r["torch_model_only"]["fps"] for r in rounds),
        "e2e_over_model_only": round(ratio_model, 3), "e2e_over_reference": round(ratio_ref, 3),
        "targets": {"e2e_over_model_only": E2E_TARGET, "e2e_over_reference": REFERENCE_TARGET},
        "met": {"e2e_over_model_only": ratio_model >= E2E_TARGET, "e2e_over_reference": ratio_ref >= REFERENCE_TARGET},
        "stages_last_round": stages,
        "reference_infer_share": last["reference"].get("infer_share"),
        "rounds": rounds,
    }
    if args.json is not None:
        tmp_json = args.json.with_name(f".{args.json.name}.partial")
        tmp_json.write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(tmp_json, args.json)

    loads = [f"{k} {v['loadavg_1_5_15'][0]} ({v['cpu_busy_percent']:.0f}% busy)" for k, v in last["load"].items()]
    print(f"load (1-min average, last round): {'; '.join(loads)}")
    print(f"ort-cpu fp32 batch 1 model-only: {model_fps:.3f} fps "
          f"(p50 {last['model_only']['latency_ms']['p50']:.1f} ms, {last['model_only']['iterations']} calls, "
          f"{last['model_only']['cpu_ms_per_frame']:.0f} CPU ms/frame, {last['model_only']['cores_busy']} cores busy)")
    print(f"framegen render --stats (ort-cpu batch 1, {args.frames} frames, "
          f"{last['e2e'].get('encoder', {}).get('preset', '?')} crf {last['e2e'].get('encoder', {}).get('crf', '?')})"
          f": {e2e_fps:.3f} fps")
    print(f"torch-cpu fp32 batch 1 model-only (same run): {med(r['torch_model_only']['fps'] for r in rounds):.3f}"
          f" fps")
    print(f"reference loop (torch eager, {args.reference_frames} frames, {last['reference']['writer']}): "
          f"{ref_fps:.3f} fps (model {100 * (last['reference'].get('infer_share') or 0):.0f}% of its time)")
    print(f"e2e / model-only = {ratio_model:.2f} (target >= {E2E_TARGET}: "
          f"{'met' if ratio_model >= E2E_TARGET else 'MISSED'})")
    print(f"e2e / reference  = {ratio_ref:.2f} (target >= {REFERENCE_TARGET}: "
          f"{'met' if ratio_ref >= REFERENCE_TARGET else 'MISSED'})")
    be = last.get("bench_e2e")
    ref_cpu = last["reference"].get("cpu_ms_per_frame")
    if be:
        model_cpu = last["model_only"]["cpu_ms_per_frame"]
        print(f"process CPU ms per frame (moves less with load than wall time): ort-cpu model-only {model_cpu:.0f}; "
              f"bench --e2e render {be['cpu_ms_per_frame']:.0f} ({be['cores_busy']} cores busy, {be['fps']:.3f} fps)"
              + (f"; reference loop {ref_cpu:.0f}" if ref_cpu else ""))
        print(f"  CPU-time ratios: model-only / e2e = {model_cpu / be['cpu_ms_per_frame']:.2f}"
              + (f", reference / e2e = {ref_cpu / be['cpu_ms_per_frame']:.2f}" if ref_cpu else "")
              + " (what the fps ratios would be if every run kept the same number of cores busy)")
    print("render stages (busy time; stages overlap on threads):")
    for s in stages:
        extra = f", {s['vs_model_only']:.2f}x its model-only latency" if s.get("vs_model_only") else ""
        share = f"{100 * s['share_of_wall']:.0f}%" if s["share_of_wall"] is not None else "-"
        print(f"  {s['stage']:<8} {s['busy_s']:8.2f} s  {s['ms_per_frame']:8.1f} ms/frame  {share:>5} of wall{extra}")


if __name__ == "__main__":
    main()
