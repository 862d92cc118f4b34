#!/usr/bin/env python
"""SyncTalk_2D's own inference loop, restated for speed comparison (issue 9's "3x the reference loop" target).

What ``inference_328.py`` does per output frame, and what this loop therefore does too (written from its behaviour,
not copied): walk the template in ping-pong order; read that frame's JPEG with ``cv2.imread`` and parse its ``.lms``
landmark file line by line (float32 then int32); crop the box, resize it to 328x328 (cubic), cut the 320x320 inner
crop and a copy with the mask rectangle drawn black, transpose both to CHW float32 / 255, concatenate them into a
1x6x320x320 tensor; take the 16-row audio window (zero rows outside the features) as a tensor and reshape it to the
mode's shape; run the PyTorch model eagerly on one frame under ``no_grad``; scale the output by 255 to uint8, put it
into the 328 crop, resize back (cubic), paste it into the frame and hand the frame to ``cv2.VideoWriter`` (MJPG),
which is what SyncTalk_2D writes before its separate ffmpeg pass (that pass is not part of this loop, nor timed).

Differences, all in the reference's favour or neutral for speed: the model runs on this machine's CPU with PyTorch's
default threads (the original moves tensors to CUDA; there is no GPU here), the features are loaded from a file
instead of being computed by the audio encoder first (framegen's render is also timed from features), and model
loading is outside the timed loop. ``--no-write`` skips the writer (and says so in the result).

Usage::

    python scripts/reference_loop.py --checkpoint gen.pth --template T --features F.npy [--max-frames N]
        [--out ref.avi | --no-write] [--json result.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from framegen.models.checkpoint import load_generator
from framegen.models.contract import FPS, audio_shape
from framegen.toolkit.inputs.preprocess import pingpong_index


def parse_lms(path: str) -> np.ndarray:
    """A landmark file the way SyncTalk_2D reads it: each line split on spaces into a float32 array, then int32."""
    with open(path) as fh:
        rows = [np.array(line.split(" "), dtype=np.float32) for line in fh.read().splitlines()]
    return np.array(rows, dtype=np.int32)


def audio_window(feats: np.ndarray, i: int) -> torch.Tensor:
    """Feature rows i-8 .. i+7 as a tensor, with zero rows where they fall outside the features."""
    n = feats.shape[0]
    lo, hi = i - 8, i + 8
    rows = torch.from_numpy(feats[max(lo, 0):min(hi, n)])
    pad_top, pad_bottom = max(0, -lo), max(0, hi - n)
    if pad_top or pad_bottom:
        rows = torch.cat([rows.new_zeros((pad_top, *rows.shape[1:])), rows,
                          rows.new_zeros((pad_bottom, *rows.shape[1:]))], dim=0)
    return rows


def run(checkpoint: Path, template: Path, features: Path, *, mode: str | None = None, max_frames: int | None = None,
        out: Path | None = None, write: bool = True) -> dict[str, object]:
    """Run the loop; returns ``{frames, seconds, fps, infer_seconds, ...}`` (seconds of the loop alone)."""
    net = load_generator(checkpoint, mode).eval()
    mode = net.mode
    feats = np.load(features).astype(np.float32)
    feats = feats.reshape(feats.shape[0], -1)
    img_dir = os.path.join(template, "full_body_img") + os.sep
    lms_dir = os.path.join(template, "landmarks") + os.sep
    last = len(os.listdir(img_dir)) - 1  # SyncTalk_2D's len_img: the walk turns at frame `last`
    first = cv2.imread(img_dir + "0.jpg")
    if first is None:
        raise SystemExit(f"error: {img_dir}0.jpg: cannot read (SyncTalk_2D templates are N.jpg from 0)")
    height, width = first.shape[:2]
    count = feats.shape[0] if max_frames is None else min(max_frames, feats.shape[0])

    tmpdir = None
    writer = None
    if write:
        if out is None:
            tmpdir = tempfile.TemporaryDirectory(prefix="reference-loop-")
            out = Path(tmpdir.name) / "reference.avi"
        writer = cv2.VideoWriter(os.fspath(out), cv2.VideoWriter_fourcc(*"MJPG"), FPS[mode], (width, height))
        if not writer.isOpened():
            raise SystemExit(f"error: {out}: cv2.VideoWriter (MJPG) cannot open it")
    shape = audio_shape(mode)
    infer_s = 0.0
    cpu0 = os.times()
    t0 = time.perf_counter()
    for i in range(count):
        k = pingpong_index(i, last + 1)
        img = cv2.imread(f"{img_dir}{k}.jpg")
        lms = parse_lms(f"{lms_dir}{k}.lms")
        x0, y0, x1 = int(lms[1][0]), int(lms[52][1]), int(lms[31][0])
        y1 = y0 + (x1 - x0)
        crop = img[y0:y1, x0:x1]
        box_h, box_w = crop.shape[:2]
        crop = cv2.resize(crop, (328, 328), interpolation=cv2.INTER_CUBIC)
        crop_out = crop.copy()
        inner = crop[4:324, 4:324].copy()
        masked = cv2.rectangle(inner.copy(), (5, 5, 310, 305), (0, 0, 0), -1)
        ref_t = torch.from_numpy(inner.transpose(2, 0, 1).astype(np.float32) / 255.0)
        masked_t = torch.from_numpy(masked.transpose(2, 0, 1).astype(np.float32) / 255.0)
        image = torch.cat([ref_t, masked_t], dim=0)[None]
        audio = audio_window(feats, i).reshape(*shape)[None]
        t_inf = time.perf_counter()
        with torch.no_grad():
            pred = net(image, audio)[0]
        infer_s += time.perf_counter() - t_inf
        pred = np.array(pred.cpu().numpy().transpose(1, 2, 0) * 255, dtype=np.uint8)
        crop_out[4:324, 4:324] = pred
        img[y0:y1, x0:x1] = cv2.resize(crop_out, (box_w, box_h), interpolation=cv2.INTER_CUBIC)
        if writer is not None:
            writer.write(img)
    if writer is not None:
        writer.release()
    seconds = time.perf_counter() - t0
    cpu1 = os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    out_bytes = out.stat().st_size if write and out is not None and out.exists() else None
    if tmpdir is not None:
        tmpdir.cleanup()
    return {
        "frames": count, "seconds": round(seconds, 4), "fps": round(count / seconds, 4),
        "infer_seconds": round(infer_s, 4), "infer_share": round(infer_s / seconds, 4),
        "cpu_ms_per_frame": round(1000.0 * cpu / max(1, count), 2), "cores_busy": round(cpu / seconds, 2),
        "torch_threads": torch.get_num_threads(), "mode": mode, "width": width, "height": height,
        "writer": "cv2.VideoWriter MJPG" if write else "none (--no-write)", "out_bytes": out_bytes,
    }


def main() -> None:
    """Command line: run the loop and print (and optionally save) its timing as JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="SyncTalk_2D generator .pth")
    p.add_argument("--template", type=Path, required=True, help="template folder (full_body_img/N.jpg, landmarks/)")
    p.add_argument("--features", type=Path, required=True, help="features .npy (one row per output frame)")
    p.add_argument("--mode", default=None, help="ave | hubert | wenet (default: detected, ave when ambiguous)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    p.add_argument("--out", type=Path, default=None, help="keep the MJPG video here (.avi); default: discarded")
    p.add_argument("--no-write", action="store_true", help="skip cv2.VideoWriter entirely")
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = p.parse_args()
    result = run(args.checkpoint, args.template, args.features, mode=args.mode, max_frames=args.max_frames,
                 out=args.out, write=not args.no_write)
    text = json.dumps(result, indent=2)
    if args.json is not None:
        tmp = args.json.with_name(f".{args.json.name}.partial")
        tmp.write_text(text + "\n")
        os.replace(tmp, args.json)
    print(text)


if __name__ == "__main__":
    main()
