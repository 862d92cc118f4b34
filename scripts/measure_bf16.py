"""bf16 on a CPU with bf16 units: OpenVINO's ``INFERENCE_PRECISION_HINT=bf16`` on the fp32 ONNX generator, judged
on the trained demo checkpoint and on calibrated stand-ins, beside ONNX Runtime and OpenVINO in fp32, in one run.

    python scripts/measure_bf16.py [--seeds demo,0,7] [--frames 8] [--iterations 40] [--json out.json]

Per checkpoint: the fp32 ONNX export, the held-out frames of the compression gate (synthetic template of the demo's
face; for the demo checkpoint its own encoder's features of held-out speech), each runtime's model output against
PyTorch fp32 (max / mean) and its final frames (PSNR, largest level error) against the fp32 profile, the fp16
profile and the compressed precisions' floor (30 dB, 96 levels); then model-only speed at batch 1 (frames per
second, the median of ``--iterations`` timed calls after warm-up, one process, so the speeds are comparable as
ratios).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _features(seed: str, tmp: Path) -> Path | None:
    """Held-out speech through the demo's own encoder, for the demo checkpoint (stand-ins use the gate's)."""
    if seed != "demo":
        return None
    import numpy as np
    from framegen.models.init import init_audio_encoder
    from framegen.toolkit.inputs.audio import ave_features, melspectrogram, torch_encoder_fn
    from framegen.toolkit.inputs.speech import synthesize_speech

    wav = synthesize_speech(8.0, seed=777_001, f0=170.0, tempo=1.1, level=0.6).wav
    path = tmp / "demo_features.npy"
    np.save(path, ave_features(melspectrogram(wav), torch_encoder_fn(init_audio_encoder(0))))
    return path


def main() -> int:
    """Measure and print one markdown row per checkpoint x runtime."""
    from framegen.models.allocator import keep_freed_memory

    keep_freed_memory()  # PyTorch's activations reused, not page-faulted anew (models/allocator.py)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="demo,0,7")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--json")
    args = ap.parse_args()
    import numpy as np
    from framegen.models.demo import load_demo_generator
    from framegen.models.init import init_generator
    from framegen.models.io import save_generator
    from framegen.runtimes.registry import open_backend
    from framegen.runtimes.spec import OpenRequest
    from framegen.toolkit.bench.machine import describe_machine
    from framegen.toolkit.compare.profiles import FINAL_FRAME, get_profile
    from framegen.toolkit.export.bundle import export_bundle
    from framegen.toolkit.export.compress import CompressOptions, _final_frame_stats, floor_for, gate_data

    machine = describe_machine()
    cpu = machine.get("cpu", {})
    features = ", ".join(cpu.get("vector_extensions", [])) or "unknown"
    print(f"CPU: {cpu.get('model')}; features: {features}", file=sys.stderr)
    runs = [("ort-cpu", "fp32", {}), ("openvino", "fp32 (f32 hint)", {"inference_precision": "f32"}),
            ("openvino", "bf16 hint", {"inference_precision": "bf16"})]
    floor = floor_for("int8")
    rows = []
    with tempfile.TemporaryDirectory(prefix="framegen-bf16-") as tmp_name:
        tmp = Path(tmp_name)
        for seed in args.seeds.split(","):
            model = load_demo_generator() if seed == "demo" else init_generator("ave", seed=int(seed), calibrate=True)
            ckpt = save_generator(model, tmp / f"g{seed}.pth")
            bundle = export_bundle(ckpt, tmp / f"b{seed}", formats=("onnx",), precisions=("fp32",))
            onnx = Path(bundle) / "generator.fp32.onnx"
            data = gate_data(model, "ave", CompressOptions(features=_features(seed, tmp), gate_frames=args.frames))
            for backend, label, options in runs:
                try:
                    be = open_backend(backend, OpenRequest(artifact=onnx, mode="ave", options=dict(options)))
                except Exception as exc:  # bf16 where the CPU has no bf16 units: say so, keep measuring
                    rows.append({"checkpoint": seed, "runtime": f"{backend} {label}", "error": str(exc)})
                    continue
                with be:
                    pred = np.concatenate([be.infer(data.image[i:i + 1], data.audio[i:i + 1])
                                           for i in range(len(data.image))])
                    for _ in range(5):
                        be.infer(data.image[:1], data.audio[:1])
                    times = []
                    for k in range(args.iterations):
                        t0 = time.perf_counter()
                        be.infer(data.image[k % len(data.image):][:1], data.audio[k % len(data.audio):][:1])
                        times.append(time.perf_counter() - t0)
                out, final = _final_frame_stats(data, pred)
                verdicts = {name: not prof.limits(FINAL_FRAME).check(final)
                            for name, prof in (("fp32", get_profile("fp32")), ("fp16", get_profile("fp16")))}
                verdicts["floor"] = not floor.limits().check(final)
                rows.append({"checkpoint": seed, "runtime": f"{backend} {label}", "fps": 1.0 / statistics.median(times),
                             "output_max": out["max_abs"], "output_mean": out["mean_abs"],
                             "psnr_db": final["psnr_db"], "max_levels": final["max_abs"], "passes": verdicts})
                r = rows[-1]
                print(f"{seed} {r['runtime']}: {r['fps']:.1f} fps, output max {r['output_max']:.3g} mean "
                      f"{r['output_mean']:.3g}, final PSNR {r['psnr_db']:.1f} dB, max {r['max_levels']:.0f} levels",
                      file=sys.stderr)
    print(f"CPU: {cpu.get('model')} ({cpu.get('logical_cores', '?')} logical cores); features: "
          f"{', '.join(cpu.get('vector_extensions', [])) or 'unknown'}")
    print("| checkpoint | runtime | fps (batch 1) | output max | output mean | final PSNR dB | max levels | "
          "fp32 profile | fp16 profile | 30 dB / 96 floor |")
    print("|---|---|---:|---:|---:|---:|---:|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['checkpoint']} | {r['runtime']} | {r['error']} | | | | | | | |")
            continue
        ok = {k: "pass" if v else "FAIL" for k, v in r["passes"].items()}
        print(f"| {r['checkpoint']} | {r['runtime']} | {r['fps']:.1f} | {r['output_max']:.3g} | "
              f"{r['output_mean']:.3g} | {r['psnr_db']:.1f} | {r['max_levels']:.0f} | {ok['fp32']} | {ok['fp16']} | "
              f"{ok['floor']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "rows": rows}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
