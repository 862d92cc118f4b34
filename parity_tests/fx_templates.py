"""Session-scoped templates for the suite: a small synthetic 1280x720 template and its PreparedTemplate."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import fixtures_dir

SYNTH_FRAMES = 12

__all__ = ["prepared_template", "synth_template_dir"]


def real_landmarks_dir() -> Path | None:
    """``../shared/fixtures/landmarks_1280x720`` when present, else ``None``."""
    base = fixtures_dir()
    path = base / "landmarks_1280x720" if base else None
    return path if path is not None and path.is_dir() else None


@pytest.fixture(scope="session")
def synth_template_dir(tmp_path_factory) -> Path:
    """A 12-frame 1280x720 synthetic template (following the real landmark track when ../shared is present)."""
    from framegen.toolkit.inputs.synth import synth_template

    out = tmp_path_factory.mktemp("templates") / "synth12"
    return synth_template(out, frames=SYNTH_FRAMES, width=1280, height=720, landmarks_dir=real_landmarks_dir())


@pytest.fixture(scope="session")
def prepared_template(synth_template_dir):
    """``PreparedTemplate`` over ``synth_template_dir`` (shared; its caches fill as tests use it)."""
    from framegen.toolkit.inputs.preprocess import PreparedTemplate
    from framegen.toolkit.inputs.template import open_template

    return PreparedTemplate(open_template(synth_template_dir))
