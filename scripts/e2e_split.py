#!/usr/bin/env python
"""Where a fast precision's end-to-end rate goes: one backend, one process, side by side.

    python scripts/e2e_split.py [--workdir DIR] [--backend openvino] [--precision bf16] [--frames 300]

Uses the inputs ``scripts/realtime_table.py`` builds in ``--workdir`` (run it once first): the trained demo
generator's bundles and the 1280x720 template. Prints, in this order:

- the model-only rate (``bench``'s measurement: batch 1, one request at a time), then the model alone as the render
  drives it (its backend options, one request in flight per worker; for OpenVINO one single-threaded stream per
  worker, which runs the model faster than one two-thread stream);
- frames only (``render_frames``: decode, preprocess, infer, paste, no encoding), a render to H.264 with x264
  ``ultrafast`` and with ``superfast``, each twice: with the template opened afresh (its JPEG decoding inside the
  time), then with its frames already decoded; frames only again;
- both model-only rates again (the VM's speed drifts);
- the pipeline alone: frames only and H.264 with a backend that returns a fixed prediction at once (the render's
  own threads, preprocessing, paste-back and encoder, no model), and the ratio that its CPU cost allows at best
  against the render-layout model-only rate: model CPU-ms / (model CPU-ms + pipeline CPU-ms), reached only if the
  two shared the cores without slowing each other.

Read the rates as ratios to the model-only ones around them. Each line also gives the process's CPU time per frame
(both cores): with the cores saturated, what a stage adds to the model's CPU-ms is what it costs.
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
    from framegen.toolkit.bench.core import measure, measure_inflight
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

    def model_only_render_layout(frames: int) -> tuple[float, float]:
        """The model alone as the render drives it (``bench --e2e``'s measurement): fps and CPU-ms per frame."""
        with open_candidate(cand, bundle=bundle) as be:
            row = measure_inflight(be, frames=frames)
            return float(row["fps"]), float(row["cpu_ms_per_frame"])

    print(f"model only: {model_only()}")
    fps, cpu_ms = model_only_render_layout(args.frames)
    print(f"model only, the render's layout (its workers, one request each in flight): {fps:.1f} fps, "
          f"{cpu_ms:.1f} CPU-ms/frame")
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
    fps, model_ms = model_only_render_layout(args.frames)
    print(f"model only, the render's layout: {fps:.1f} fps, {model_ms:.1f} CPU-ms/frame")
    null = fixed_prediction_backend(workers=3)  # as many as the render's OpenVINO backend uses
    template = PreparedTemplate(open_template(work / "template"))
    list(iter_frames(template, features, null, max_frames=args.frames))  # decode the template once
    with tempfile.TemporaryDirectory() as tmp:
        for label, preset in (("pipeline alone, frames only", None), ("pipeline alone, H.264 ultrafast", "ultrafast")):
            t0, c0 = time.perf_counter(), time.process_time()
            if preset is None:
                n = sum(1 for _ in iter_frames(template, features, null, max_frames=args.frames))
            else:
                n = render(template, features, null, out=Path(tmp) / "null.mp4", max_frames=args.frames,
                           progress=False, preset=preset).frames
            cpu_ms = (time.process_time() - c0) / n * 1e3
            print(f"{label}: {n / (time.perf_counter() - t0):.1f} fps, {cpu_ms:.2f} CPU-ms/frame; at best "
                  f"{model_ms / (model_ms + cpu_ms):.2f}x the render-layout model-only rate ({model_ms:.1f} "
                  f"model CPU-ms)")
    return 0


def fixed_prediction_backend(workers: int) -> object:
    """A backend that returns one fixed prediction at once: the render's pipeline then does all of its own work
    (threads, preprocessing, paste-back, encoding) and none of the model's."""
    import numpy as np
    from framegen.runtimes.base import Backend, BackendInfo, generator_io

    class FixedPrediction(Backend):
        def __init__(self) -> None:
            ins, outs = generator_io("ave")
            super().__init__(BackendInfo("fixed-prediction", "cpu", "fp32", "ave", "none", ins, outs, {}))
            self.concurrent_workers = workers
            self._out = np.random.default_rng(0).random((1, 3, 320, 320), dtype=np.float32)

        def _infer(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
            return np.repeat(self._out, image.shape[0], axis=0)

    return FixedPrediction()


if __name__ == "__main__":
    sys.exit(main())
