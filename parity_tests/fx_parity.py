"""Session-scoped artifacts for the parity and golden tests: real-looking features, the parity run over every
available backend (CI's parity gate), deliberately broken bundles and a golden directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import fixtures_dir

__all__ = ["clean_parity", "golden_dir", "parity_features", "parity_features_path"]

PARITY_FRAMES = 3  # frames 0-2: template frames 1-3, audio windows half zero-padded (frame 0) to nearly full


@pytest.fixture(scope="session")
def parity_features() -> np.ndarray:
    """SyncTalk_2D's real 'ave' features from ../shared, or (without it) seeded rows with their spread.

    Never zeros: parity on silent windows would prove little about the audio branch.
    """
    base = fixtures_dir()
    path = base / "ave_features_522x512.npy" if base else None
    if path is not None and path.is_file():
        return np.load(path)
    rng = np.random.default_rng(0)
    return (np.abs(rng.standard_normal((64, 512))) * 0.5).astype(np.float32)


@pytest.fixture(scope="session")
def parity_features_path(tmp_path_factory, parity_features) -> Path:
    """``parity_features`` as an .npy file for CLI runs."""
    path = tmp_path_factory.mktemp("parity_features") / "features.npy"
    np.save(path, parity_features)
    return path


@pytest.fixture(scope="session")
def clean_parity(bundle_dir, generator_ckpt, prepared_template, parity_features):
    """The parity report of every backend available here x every precision the bundle holds, on a clean bundle."""
    from framegen.toolkit.parity.engine import run_parity

    return run_parity(bundle_dir, generator_ckpt, prepared_template, parity_features, frames=PARITY_FRAMES)


@pytest.fixture(scope="session")
def golden_dir(tmp_path_factory, bundle_dir, prepared_template, parity_features) -> Path:
    """Golden vectors from the clean bundle: two cases, frame 0 and the last frame (both zero-padded windows)."""
    from framegen.toolkit.parity.golden import write_golden

    return write_golden(bundle_dir, prepared_template, parity_features,
                        tmp_path_factory.mktemp("golden") / "G", cases=2)
