"""The trained demo generator that ships with framegen, stored compactly and loaded as an ordinary checkpoint.

``scripts/train_demo.py`` trains SyncTalk_2D's own 'ave' generator on synthetic talking clips (the demo face, speech
made by formant synthesis, features from the seeded audio encoder ``init_audio_encoder(0)``). Its weights are stored
as fp16 in an ``.npz`` (no pickle, ~24 MB) and come back as the fp32 state dict SyncTalk_2D would save, so
everything downstream sees a normal checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from framegen.models.atomic import atomic_output
from framegen.models.errors import FramegenError, first_line
from framegen.models.unet import Model

DEMO_WEIGHTS = "demo_generator_ave.npz"
DEMO_MODE = "ave"


def save_compact_state(state: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> Path:
    """Store a state dict as an fp16 ``.npz`` (integer buffers keep their dtype), atomically."""
    arrays = {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()).numpy()
              for k, v in state.items()}
    with atomic_output(Path(path)) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return Path(path)


def demo_weights_path() -> Path:
    """Where the shipped demo weights lie inside the installed package."""
    return Path(str(resources.files("framegen.models") / "data" / DEMO_WEIGHTS))


def load_compact_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read :func:`save_compact_state`'s file back as an fp32 state dict, in the file's key order."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: torch.from_numpy(z[k].astype(np.float32) if z[k].dtype == np.float16 else z[k].copy())
                    for k in z.files}
    except (OSError, ValueError) as exc:
        raise FramegenError(f"{path}: not a framegen compact state ({first_line(exc, 200)})") from exc


def load_demo_generator(path: str | os.PathLike[str] | None = None) -> Model:
    """The trained demo generator, fp32, in eval mode; ``path``: another compact state of it instead (for example
    ``scripts/train_demo.py``'s output)."""
    path = Path(path) if path is not None else demo_weights_path()
    if not path.is_file():
        raise FramegenError(f"{path}: the trained demo weights are missing from this installation")
    model = Model(6, DEMO_MODE)
    model.load_state_dict(load_compact_state(path), strict=True)
    return model.eval()
