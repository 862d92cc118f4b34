"""Session-scoped artifacts shared by the suite (checkpoints, templates, features, bundles), built once."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from framegen.models.allocator import keep_freed_memory

# The suite's PyTorch references (validation, derived tolerances, torch-cpu renders) run in this process, as the
# CLI's do in its own: freed activations kept for reuse (models/allocator.py).
keep_freed_memory()
# librosa (SyncTalk_2D's audio library, the reference for the audio tests) compiles about ten numba kernels when it
# is first imported, which none of those tests calls: 14 s on a fresh install at numba's default optimisation, 9 s
# without it. Set before numba is imported; a user's own setting wins.
os.environ.setdefault("NUMBA_OPT", "0")

ROOT = Path(__file__).resolve().parents[1]


def fixtures_dir() -> Path | None:
    """``../shared/fixtures`` relative to the project root, or ``$FRAMEGEN_FIXTURES``; ``None`` when absent."""
    env = os.environ.get("FRAMEGEN_FIXTURES")
    path = Path(env) if env else ROOT.parent / "shared" / "fixtures"
    return path if path.is_dir() else None


def require_fixture(name: str) -> Path:
    """Path of a shared fixture, or skip the test with a reason a user's clone understands."""
    base = fixtures_dir()
    if base is None:
        pytest.skip("shared fixtures not found (../shared/fixtures or $FRAMEGEN_FIXTURES)")
    path = base / name
    if not path.exists():
        pytest.skip(f"shared fixture {name} missing in {base}")
    return path


def calibrated(seed: int, mode: str = "ave"):
    """A calibrated seeded generator module, in eval mode."""
    from framegen.models.init import init_generator

    return init_generator(mode, seed=seed, calibrate=True)


def saved_checkpoint(tmp_path_factory, module, name: str) -> Path:
    """``module`` saved in SyncTalk_2D's checkpoint format, in a fresh session folder."""
    from framegen.models.io import save_generator

    return save_generator(module, tmp_path_factory.mktemp("ckpt") / name)


@pytest.fixture(scope="session")
def calibrated_generator():
    """The calibrated seeded 'ave' generator module (seed 0), in eval mode."""
    return calibrated(0)


@pytest.fixture(scope="session")
def generator_ckpt(tmp_path_factory, calibrated_generator) -> Path:
    """A calibrated seeded 'ave' checkpoint in SyncTalk_2D's format."""
    return saved_checkpoint(tmp_path_factory, calibrated_generator, "generator_ave.pth")


@pytest.fixture(scope="session")
def audio_encoder():
    """The seeded, calibrated audio encoder module."""
    from framegen.models.init import init_audio_encoder

    return init_audio_encoder(seed=0)


@pytest.fixture(scope="session")
def encoder_ckpt(tmp_path_factory, audio_encoder) -> Path:
    """The seeded audio encoder saved like SyncTalk_2D's audio_visual_encoder.pth (no prefix)."""
    from framegen.models.io import save_audio_encoder

    return save_audio_encoder(audio_encoder, tmp_path_factory.mktemp("enc") / "audio_visual_encoder.pth")


@pytest.fixture(scope="session")
def real_ave_features() -> np.ndarray:
    """SyncTalk_2D's real 'ave' features for a 25 fps video (522 x 512), from ../shared."""
    return np.load(require_fixture("ave_features_522x512.npy"))

from fx_audio import *  # noqa: E402, F403
from fx_compress import *  # noqa: E402, F403
from fx_export import *  # noqa: E402, F403
from fx_frontend import *  # noqa: E402, F403
from fx_parity import *  # noqa: E402, F403
from fx_render import *  # noqa: E402, F403
from fx_runtimes import *  # noqa: E402, F403
from fx_stream import *  # noqa: E402, F403
from fx_templates import *  # noqa: E402, F403
from fx_triton import *  # noqa: E402, F403
from fx_validate import *  # noqa: E402, F403
