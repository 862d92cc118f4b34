#!/usr/bin/env python
"""Where a fast precision's end-to-end rate goes: one backend, one process, side by side.

    python scripts/e2e_split.py [--workdir DIR] [--backend openvino] [--precision bf16] [--frames 300]

Uses the inputs ``scripts/realtime_table.py`` builds in ``--workdir`` (run it once first): the trained demo
generator's bundles and the 1280x720 template. Prints, in this order: the model-only rate (``bench``'s measurement,
batch 1); frames only (``render_frames``: decode, preprocess, infer, paste, no encoding); a render to H.264 with
x264 ``ultrafast`` and with ``superfast``; each of these twice, with the template opened afresh (its JPEG decoding
inside the time) and then with its frames already decoded; frames only again; the model-only rate again (the VM's
speed drifts). Read the rates as ratios to the model-only ones around them. Each line also gives the process's CPU
time per frame (both cores): with the cores saturated, what a stage adds to the model's CPU-ms is what it costs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    """Run the comparison and print one line per measurement."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "framegen-realtime")
    ap.add_argument("--backend", default="openvino")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--frames", type=int, default=300)
    args = ap.parse_args()
    import numpy as np
    from framegen.toolkit.bench.core import measure
    from framegen.toolkit.frames.plan import Request, open_candidate, plan_candidates
    from framegen.toolkit.frames.render import iter_frames, render
    from framegen.toolkit.inputs.preprocess import PreparedTemplate
    from framegen.toolkit.inputs.template import open_template

    work = args.workdir
    features = np.load(next(work.glob("features_*.npy")))
    bundle = work / ("bundle" if args.precision in ("fp32", "bf16") else
                     f"bundle_int8_{'ov' if args.backend == 'openvino' else 'ort'}")
    cand = plan_candidates("render", bundle=bundle, requested=[Request(args.backend, args.precision, "tensor")],
                           precisions=[args.precision], ios=["tensor"]).candidates[0]

    def model_only() -> str:
        with open_candidate(cand, bundle=bundle, for_render=False) as be:
            measure(be, 1, iterations=10)
            c0 = time.process_time()
            fps = float(measure(be, 1, iterations=200)["fps"])
            return f"{fps:.1f} fps, {(time.process_time() - c0) / 200 * 1e3:.1f} CPU-ms/frame"

    print(f"model only: {model_only()}")
    with open_candidate(cand, bundle=bundle) as be, tempfile.TemporaryDirectory() as tmp:
        for label, preset in (("frames only", None), ("H.264 ultrafast", "ultrafast"),
                              ("H.264 superfast", "superfast"), ("frames only", None)):
            template = PreparedTemplate(open_template(work / "template"))
            for when in ("template opened afresh", "template already decoded"):
                t0, c0 = time.perf_counter(), time.process_time()
                if preset is None:
                    n = sum(1 for _ in iter_frames(template, features, be, max_frames=args.frames))
                    fps = n / (time.perf_counter() - t0)
                else:
                    stats = render(template, features, be, out=Path(tmp) / "e2e.mp4", max_frames=args.frames,
                                   progress=False, preset=preset)
                    n, fps = stats.frames, stats.fps
                cpu_ms = (time.process_time() - c0) / n * 1e3
                print(f"{label}, {when}: {fps:.1f} fps, {cpu_ms:.1f} CPU-ms/frame")
    print(f"model only: {model_only()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
