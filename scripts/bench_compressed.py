"""Size on disk, model-only fps and end-to-end fps of ort-cpu and openvino at fp32 and int8, all in one run.

    python scripts/bench_compressed.py --bundle B [--template T] [--features F] [--json out.json]

The bundle needs ONNX fp32 and int8 generators (``framegen export -f onnx -p fp32,int8``). Model-only timings are
interleaved over rounds (the median kept) so that load from other work falls on every row alike; compare the ratios,
not the absolute figures, and read the load average printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Run the bench and print a markdown table (and JSON when asked)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--template")
    ap.add_argument("--features")
    ap.add_argument("--e2e-frames", type=int, default=48)
    ap.add_argument("--seconds", type=float, default=6.0, help="model-only timing per cell, over all rounds")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    from framegen.toolkit.export.compress import bench_compressed

    load0 = os.getloadavg()
    report = bench_compressed(args.bundle, template=args.template, features=args.features,
                              e2e_frames=args.e2e_frames, seconds=args.seconds, rounds=args.rounds)
    report["load_avg_before"], report["load_avg_after"] = list(load0), list(os.getloadavg())
    cpu = report["machine"].get("cpu", {})
    print(f"machine: {cpu.get('model', '?')}, load average {load0[0]:.1f} before / {os.getloadavg()[0]:.1f} after")
    print("| backend | precision | MB on disk | size vs fp32 | model-only fps | x ort-cpu fp32 | e2e fps | "
          "x ort-cpu fp32 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in report["rows"]:
        print(f"| {r['backend']} | {r['precision']} | {r['bytes'] / 1e6:.1f} | {r['size_ratio']:.2f} | "
              f"{r['model_fps']:.2f} | {r['model_speedup']:.2f} | {r['e2e_fps']:.2f} | {r['e2e_speedup']:.2f} |")
    for note in report["notes"]:
        print(f"note: {note}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2, default=str)
    return 0 if report["rows"] else 1


if __name__ == "__main__":
    sys.exit(main())
