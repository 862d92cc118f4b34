"""The quality of compressed generators on calibrated seeded checkpoints: what docs/PARITY.md ("Compressed
artifacts") reports.

    python scripts/measure_compressed.py --seeds 0,1 [--template T] [--features F] [--json out.json]

For each seed: a calibrated seeded 'ave' checkpoint, exported as int8 ONNX for both int8 targets (openvino: U8S8,
ort: U8S8 with reduce_range) and as Core ML int8 / pal6 / pal4, each judged by the export's own quality gate
(:func:`framegen.toolkit.export.compress.judge`) on held-out template frames, with the floor lowered to nothing so
that every
verdict is measured rather than refused. The int8 ONNX artifact is also judged on the other CPU runtime. Prints one
markdown row per artifact: size, runtime, final-frame PSNR and largest level error, and the verdict at the default
floor.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Measure and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0", help="calibrated seeded checkpoints; 'demo' is the trained demo generator")
    ap.add_argument("--template")
    ap.add_argument("--features")
    ap.add_argument("--gate-frames", type=int, default=4)
    ap.add_argument("--precisions", default="int8,pal6,pal4", help="Core ML compressions to measure")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    from framegen.models.bundle import load_bundle
    from framegen.models.demo import load_demo_generator
    from framegen.models.init import init_generator
    from framegen.models.io import save_generator
    from framegen.toolkit.export.bundle import export_bundle
    from framegen.toolkit.export.compress import DEFAULT_FLOORS, CompressOptions, gate_data, judge, release

    rows = []
    with tempfile.TemporaryDirectory(prefix="framegen-mc-") as tmp:
        for seed in args.seeds.split(","):
            model = load_demo_generator() if seed == "demo" else init_generator("ave", seed=int(seed), calibrate=True)
            ckpt = save_generator(model, Path(tmp) / f"g{seed}.pth")
            opts = {"template": args.template, "features": args.features, "gate_frames": args.gate_frames,
                    "min_psnr_db": 0.01, "max_level_error": 255}
            jobs = [("onnx", ("fp32", "int8"), "openvino"), ("onnx", ("int8",), "ort"),
                    ("coreml", tuple(args.precisions.split(",")), "openvino")]
            for k, (fmt, precs, target) in enumerate(jobs):
                co = CompressOptions(int8_target=target, **opts)
                out = export_bundle(ckpt, Path(tmp) / f"b{seed}_{k}", formats=(fmt,), precisions=precs,
                                    compression=co, progress=lambda m: print(m, file=sys.stderr))
                b = load_bundle(out)
                fp32_bytes = 48_674_048
                for a in b.artifacts:
                    if a.precision == "fp32":
                        fp32_bytes = a.entry["bytes"]
                        continue
                    record = a.validation
                    verdicts = [{**record.details, "backend": record.runtime, "passed": record.passed}]
                    if fmt == "onnx":
                        other = "ort-cpu" if record.runtime == "openvino" else "openvino"
                        verdicts.append(judge(a.path, fmt, a.precision, gate_data(model, "ave", co),
                                              co.floor(a.precision), backend=other, mode="ave"))
                    for v in verdicts:
                        fl = DEFAULT_FLOORS[a.precision]
                        ff = v["final_frame"]
                        rows.append({"seed": seed, "artifact": a.path.name, "target": target if fmt == "onnx" else "",
                                     "mb": round(a.entry["bytes"] / 1e6, 1),
                                     "size_vs_fp32": round(a.entry["bytes"] / fp32_bytes, 3),
                                     "backend": v["backend"], "psnr_db": round(ff["psnr_db"], 1),
                                     "max_level": ff["max_abs"], "mean_level": round(ff["mean_abs"], 2),
                                     "default_floor": "pass" if ff["psnr_db"] >= fl.min_psnr_db
                                     and ff["max_abs"] <= fl.max_level_error else "refused"})
                release(co)
    print("| seed | artifact | int8 target | MB | vs fp32 | judged on | final-frame PSNR dB | max level | mean level "
          "| default floor (30 dB, 96) |")
    print("|---|---|---|---:|---:|---|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['artifact']} | {r['target']} | {r['mb']} | {r['size_vs_fp32']:.2f} | "
              f"{r['backend']} | {r['psnr_db']} | {r['max_level']:.0f} | {r['mean_level']} | {r['default_floor']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
