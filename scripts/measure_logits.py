"""How large the decoder's values get: the largest |value| of ``up4``, ``up5`` and the output convolution's logits
(before SyncTalk_2D's sigmoid), and the L1 error, on training frames of ``train_demo.py``'s cached data (docs/DEMO.md,
"Training": why ``--logit-penalty`` holds the logits within +-8).

    python scripts/measure_logits.py DATA.npz [WEIGHTS.npz ...]   # no weights: the packaged demo generator

DATA is a phase's data cache in its ``--work`` folder (``data-...-v2.npz``). 16 frames drawn with seed 0, whole
crops, references and masked images as ``--masked-from other`` makes them, fp32 on the CPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from framegen.models.demo import load_demo_generator
from train_demo import batch_tensors


def main() -> None:
    """Print one line per weights file."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path)
    p.add_argument("weights", type=Path, nargs="*")
    args = p.parse_args()
    with np.load(args.data) as z:
        data = {k: z[k] for k in ("target", "other", "clip", "box", "window")}
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(data["target"]), 16)
    x, audio, tgt, _ = batch_tensors(data, idx, rng, torch.device("cpu"), 4.0, "other")
    for w in args.weights or [None]:
        model = load_demo_generator(w).eval()
        peaks: dict[str, float] = {}
        for name in ("up4", "up5", "outc"):
            getattr(model, name).register_forward_hook(
                lambda _m, _i, out, n=name, p=peaks: p.__setitem__(n, max(p.get(n, 0.0), float(out.abs().max()))))
        with torch.inference_mode():
            out = torch.cat([model(x[i:i + 4], audio[i:i + 4]) for i in range(0, len(idx), 4)])
        l1 = float((out - tgt).abs().mean())
        print(f"{w or 'packaged demo weights'}: largest |up4| {peaks['up4']:.1f}, |up5| {peaks['up5']:.1f}, "
              f"|logit| {peaks['outc']:.1f}; L1 {l1:.4f}")


if __name__ == "__main__":
    main()
