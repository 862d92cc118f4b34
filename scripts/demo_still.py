"""The README's still: the loudest frame beside a silent one, cut from `framegen demo`'s own video.

    framegen demo --out framegen-demo && python scripts/demo_still.py framegen-demo docs/img/demo_loud_silent.png

Frames are chosen by the loudness of the demo's speech (RMS of each 40 ms video frame) and decoded from
``demo-torch-cpu.mp4`` with PyAV; each is cropped around the face (from the template's landmarks) and labelled.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import cv2
import numpy as np
from framegen.toolkit.compare.lipsync import loudness
from framegen.toolkit.inputs.audio import decode_audio
from framegen.toolkit.inputs.preprocess import frame_order
from framegen.toolkit.inputs.template import open_template


def main() -> None:
    """Pick, crop, label and write the still."""
    from framegen.models.allocator import keep_freed_memory

    keep_freed_memory()  # PyTorch's activations reused, not page-faulted anew (models/allocator.py)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("demo", type=Path)
    p.add_argument("out", type=Path)
    args = p.parse_args()
    frames = []
    with av.open(str(args.demo / "demo-torch-cpu.mp4")) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    loud = loudness(decode_audio(args.demo / "speech.wav"), len(frames))
    speaking, silent = int(np.argmax(loud)), int(np.argmin(loud[2:-2])) + 2
    template = open_template(args.demo / "template")
    order = frame_order(len(template), len(frames))
    tiles = []
    for k, label in ((speaking, "speech (loudest frame)"), (silent, "silence")):
        lms = template.read_landmarks(order[k])
        x0, x1 = int(lms[:, 0].min()), int(lms[:, 0].max())
        y0, y1 = int(lms[:, 1].min()), int(lms[:, 1].max())
        pad = (x1 - x0) // 3
        crop = frames[k][max(0, y0 - pad):y1 + pad, max(0, x0 - pad):x1 + pad]
        crop = cv2.resize(crop, (360, int(360 * crop.shape[0] / crop.shape[1])), interpolation=cv2.INTER_AREA)
        cv2.putText(crop, f"frame {k}: {label}", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2,
                    cv2.LINE_AA)
        tiles.append(crop)
    h = min(t.shape[0] for t in tiles)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), np.hstack([t[:h] for t in tiles]))
    print(f"{args.out}: frame {speaking} (RMS {loud[speaking]:.3f}) beside frame {silent} (RMS {loud[silent]:.4f})")


if __name__ == "__main__":
    main()
