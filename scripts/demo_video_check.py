"""The demo's video, frame by frame, against its template: is the face outside the mouth unchanged?

    framegen demo --out framegen-demo && python scripts/demo_video_check.py framegen-demo [--video demo-ort-cpu.mp4]

Every frame is decoded with PyAV and compared with the template frame it was rendered on (SyncTalk_2D's ping-pong
order). A pixel is *far off* when a channel differs by more than 100 levels: above what H.264 at the demo's CRF and
the jaw line that moves with the opening reach (under 50 levels), and what a speck the generator paints does. The
mouth region (the template's outer lips, widened by 30 % of their width at the sides and above, and by their width
below for a jaw that drops) is left out. Prints, per video, the far-off pixels per frame inside the crop box
(median, largest, frames with any) and outside it (where the paste-back must leave the template as it is).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import numpy as np
from framegen.toolkit.compare.lipsync import FAR_OFF
from framegen.toolkit.inputs.preprocess import crop_box, pingpong_index
from framegen.toolkit.inputs.synth import LIPS_OUTER
from framegen.toolkit.inputs.template import open_template


def far_off_counts(video: Path, template_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Far-off pixels per frame of ``video``, outside the mouth region: inside the crop box, and outside it."""
    template = open_template(template_dir)
    inside, outside = [], []
    with av.open(str(video)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            img = frame.to_ndarray(format="bgr24")
            t = pingpong_index(i, len(template), 0)
            ref = template.read_image(t)
            lms = template.read_landmarks(t).astype(np.float64)
            far = (np.abs(img.astype(np.int16) - ref.astype(np.int16)) > FAR_OFF).any(axis=-1)
            (lx0, ly0), (lx1, ly1) = lms[LIPS_OUTER].min(axis=0), lms[LIPS_OUTER].max(axis=0)
            w = lx1 - lx0
            far[max(int(ly0 - 0.3 * w), 0):int(ly1 + w), max(int(lx0 - 0.3 * w), 0):int(lx1 + 0.3 * w)] = False
            x0, y0, x1, y1 = crop_box(lms)
            box = np.zeros_like(far)
            box[y0:y1, x0:x1] = True
            inside.append(int((far & box).sum()))
            outside.append(int((far & ~box).sum()))
    return np.asarray(inside), np.asarray(outside)


def main() -> None:
    """Check each video of a demo folder and print one line per video."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("demo", type=Path)
    p.add_argument("--video", action="append", help="video file names in the folder (default: every demo-*.mp4)")
    args = p.parse_args()
    names = args.video or sorted(v.name for v in args.demo.glob("demo-*.mp4"))
    for name in names:
        inside, outside = far_off_counts(args.demo / name, args.demo / "template")
        print(f"{name}: {len(inside)} frames; far-off pixels outside the mouth, in the crop box: median "
              f"{np.median(inside):.0f}, largest {inside.max()}, frames with any {int((inside > 0).sum())}; "
              f"outside the crop box: largest {outside.max()}")


if __name__ == "__main__":
    main()
