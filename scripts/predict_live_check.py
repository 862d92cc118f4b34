#!/usr/bin/env python
"""How well the live start-up's prediction matched the stream that followed, and what it would have needed.

    python scripts/predict_live_check.py --template T --bundle B --audio A [--backend openvino] [--precision int8]
        [--seconds 30]

Runs one live stream as ``framegen bench --stream`` does (paced at real time, the default latency budget), then
replays the start-up's own render times through :func:`framegen.toolkit.frames.stream.predict_live` with each render
scaled by several factors (the start-up uses 1.15) and with a fixed time added to each render instead, and prints
the frames each replay holds next to what the stream held. Where the stream's own work (audio features, H.264,
pasting) costs about the same time per frame whatever the model, a fixed addition matches streams of fast and slow
models alike, and a factor matches only one of them.
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
    """Run the stream, replay, print one markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--template", required=True)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--audio", required=True)
    ap.add_argument("--backend", default="openvino")
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    import framegen
    import numpy as np
    from framegen.models.contract import LATENCY_BUDGET_MS
    from framegen.toolkit.bench.machine import describe_machine
    from framegen.toolkit.frames.stream import KEEP_UP_HEADROOM, predict_live

    framegen.keep_freed_memory()
    report = framegen.bench_stream(template=args.template, bundle=args.bundle, backends=args.backend,
                                   precision=args.precision, audio=args.audio, seconds=args.seconds)
    row = report["results"][0]
    layout, startup = row["layout"], row["startup"]
    took = [ms / 1000.0 for ms in layout["render_ms"]]
    frames = int(row["frames"])
    cpu = describe_machine(load=False).get("cpu", {})
    print(f"CPU: {cpu.get('model')}; {', '.join(cpu.get('vector_extensions', []))}")
    print(f"{args.backend} {args.precision}, {layout['workers']} worker(s); start-up render p50 "
          f"{np.percentile(layout['render_ms'], 50):.1f} ms over {len(took)} frames; the stream held "
          f"{row['held_frames']} of {frames} ({row['held_frames'] / frames:.1%}), p99 "
          f"{row['beyond_lookahead_ms']['p99']:.0f} ms beyond the lookahead; the start-up predicted "
          f"{startup['predicted']['held_share']:.1%}")
    print("| replayed renders | held | p99 ms beyond the lookahead |")
    print("|---|---:|---:|")
    replays = [(f"x {f:.2f}" + (" (the start-up's)" if f == KEEP_UP_HEADROOM else ""), took, f)
               for f in (1.0, KEEP_UP_HEADROOM, 1.3, 1.45, 1.6)]
    replays += [(f"+ {ms} ms", [t + ms / 1000.0 for t in took], 1.0) for ms in (5, 8, 11, 14, 17)]
    for label, renders, factor in replays:
        p = predict_live(renders, fps=25, workers=int(layout["workers"]), chunk_s=0.02,
                         budget_s=LATENCY_BUDGET_MS / 1000.0, load=factor, frames=frames)
        print(f"| {label} | {p['held_share']:.1%} | {p['beyond_p99_ms']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
