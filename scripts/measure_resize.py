"""How close re-implementations of OpenCV's uint8 INTER_CUBIC resize come to OpenCV itself; the figures of
docs/CONTRACT.md §2.3.

    python scripts/measure_resize.py [--crops 40] [--seed 0]

Candidates, each written out in numpy:
- ``float64``: the numpy reference port's resize (examples/numpy_port/port.py): weights and both passes in float64,
  one round-half-to-even at the end;
- ``float32``: the same in float32 (weights and sums), as a GPU shader or a SIMD port would;
- ``fixed11``: OpenCV's integer scheme for uint8 without Intel IPP: weights rounded to 11-bit fixed point (x 2048),
  the horizontal pass summed in int32, the vertical pass in int32 again, then ``(sum + 2^21) >> 22``;
- ``cv2-noipp``: OpenCV itself with IPP switched off (``cv2.ipp.setUseIPP(False)``), the path its wheels take on
  machines without IPP (ARM: Apple silicon, aarch64 Linux).

OpenCV's x86-64 wheels resize uint8 images with Intel IPP, which computes in floating point; elsewhere OpenCV uses
its own fixed-point code. Golden vectors record which one made them (``index.json`` -> ``opencv``).

Inputs: face-like crops of the synthetic templates (smooth shading, hard edges, JPEG noise) and uniform noise (the
worst case for rounding ties), cropped at sizes from 96 (upscaled x3.4) to 900 (downscaled x0.36) pixels, resized
to 328x328, and the 328 crop resized back to the box (the paste-back).
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _port():
    spec = importlib.util.spec_from_file_location("numpy_port", ROOT / "examples" / "numpy_port" / "port.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def resize_float32(port, image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The port's separable cubic with float32 weights and sums."""
    xi, xw = port._taps(image.shape[1], width)
    yi, yw = port._taps(image.shape[0], height)
    src = image.astype(np.float32)
    horizontal = np.einsum("hwkc,wk->hwc", src[:, xi], xw.astype(np.float32))
    both = np.einsum("hkwc,hk->hwc", horizontal[yi], yw.astype(np.float32))
    return np.clip(np.rint(both), 0, 255).astype(np.uint8)


def resize_fixed11(port, image: np.ndarray, width: int, height: int) -> np.ndarray:
    """11-bit fixed-point weights, integer passes, one shift by 22 bits with rounding."""
    xi, xw = port._taps(image.shape[1], width)
    yi, yw = port._taps(image.shape[0], height)
    xq = np.rint(xw.astype(np.float32) * 2048).astype(np.int64)
    yq = np.rint(yw.astype(np.float32) * 2048).astype(np.int64)
    horizontal = np.einsum("hwkc,wk->hwc", image.astype(np.int64)[:, xi], xq)
    both = np.einsum("hkwc,hk->hwc", horizontal[yi], yq)
    return np.clip((both + (1 << 21)) >> 22, 0, 255).astype(np.uint8)


def crops(seed: int, count: int) -> list[np.ndarray]:
    """Face crops of several sizes from a synthetic template, and uniform noise."""
    import tempfile

    from framegen.toolkit.inputs.synth import synth_template

    rng = np.random.default_rng(seed)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        root = synth_template(Path(tmp) / "t", frames=2, width=2560, height=1440, seed=seed)
        frame = cv2.imread(str(root / "full_body_img" / "0.jpg"))
    for _ in range(count // 2):
        size = int(rng.integers(96, 900))
        y = int(rng.integers(0, frame.shape[0] - size))
        x = int(rng.integers(0, frame.shape[1] - size))
        out.append(frame[y:y + size, x:x + size])
        out.append(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return out


def main() -> None:
    """Print, per candidate, the share of values off by one level and by more, for the crop and the paste-back."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--crops", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    port = _port()
    cv2.setNumThreads(1)
    def no_ipp(im: np.ndarray, w: int, h: int) -> np.ndarray:
        cv2.ipp.setUseIPP(False)
        try:
            return cv2.resize(im, (w, h), interpolation=cv2.INTER_CUBIC)
        finally:
            cv2.ipp.setUseIPP(ipp)

    ipp = cv2.ipp.useIPP()
    candidates = {"float64": lambda im, w, h: port.resize_cubic(im, w, h),
                  "float32": lambda im, w, h: resize_float32(port, im, w, h),
                  "fixed11": lambda im, w, h: resize_fixed11(port, im, w, h)}
    if ipp:  # OpenCV's other code path: the one its wheels take where Intel IPP is absent (ARM)
        candidates["cv2-noipp"] = no_ipp
    totals = {name: [0, 0, 0, 0] for name in candidates}  # values, off by 1, off by more, worst
    for crop in crops(args.seed, args.crops):
        size = crop.shape[0]
        big = cv2.resize(crop, (328, 328), interpolation=cv2.INTER_CUBIC)
        back = cv2.resize(big, (size, size), interpolation=cv2.INTER_CUBIC)
        for name, fn in candidates.items():
            for src, want, w in ((crop, big, 328), (big, back, size)):
                diff = np.abs(fn(src, w, w).astype(np.int16) - want.astype(np.int16))
                t = totals[name]
                t[0] += diff.size
                t[1] += int((diff == 1).sum())
                t[2] += int((diff > 1).sum())
                t[3] = max(t[3], int(diff.max()))
    print(f"OpenCV {cv2.__version__} (IPP {'on' if ipp else 'off'}), numpy {np.__version__}, {platform.machine()}; "
          f"{args.crops} crops (seed "
          f"{args.seed}), each resized to 328 and back")
    print(f"{'candidate':<10} {'values':>12} {'off by 1':>12} {'off by >1':>10} {'max':>4}")
    for name, (n, one, more, worst) in totals.items():
        print(f"{name:<10} {n:>12,} {100 * one / n:>11.4f}% {100 * more / n:>9.4f}% {worst:>4}")


if __name__ == "__main__":
    main()
