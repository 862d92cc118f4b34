"""framegen's pytest plugin: parity of your own checkpoint and bundle as ordinary tests, one per candidate backend.

Registered through the ``pytest11`` entry point (``framegen``), so installing framegen makes it available. Say what to
check in ``pytest.ini`` / ``[tool.pytest.ini_options]`` (or with the matching ``--framegen-...`` options)::

    [tool.pytest.ini_options]
    framegen_bundle = "exported/bundle"          # framegen export's output
    framegen_checkpoint = "checkpoints/gen.pth"  # the PyTorch reference
    framegen_template = "data/template"          # optional: default a synthetic template
    framegen_audio = "data/speech.wav"           # optional: default synthetic speech (needs the bundle's encoder)
    framegen_backends = "ort-cpu,ort-cpu:fp16"   # optional: default every backend available here
    framegen_frames = "4"                        # optional
    framegen_locate = "false"                    # optional: skip the layers stage (default true)

and write one test::

    from framegen.testing import assert_parity_passed

    def test_parity(framegen_candidate):
        assert_parity_passed(framegen_candidate.report, framegen_candidate.label)

``pytest`` then shows ``test_parity[ort-cpu:fp32]``, ``test_parity[ort-cpu:fp16]``, … Parity runs once per session
(``framegen_parity``, the :class:`ParityReport`); tests using these fixtures carry the ``framegen_parity`` marker
(``-m framegen_parity`` selects them) and are skipped, with the reason, when no bundle is configured. Derived
tolerances are cached per checkpoint digest in ``$XDG_CACHE_HOME/framegen/parity`` (docs/PARITY.md), which a CI
cache can keep across runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from framegen.toolkit.demo import write_wav
from framegen.toolkit.inputs.speech import speech_like
from framegen.toolkit.parity.inputs import parity_candidates, parse_backends
from framegen.toolkit.testing.asserts import assert_parity_passed

MARKER = "framegen_parity"
_SETTINGS = {
    "bundle": "bundle folder written by framegen export",
    "checkpoint": "the PyTorch checkpoint the bundle was exported from (the reference)",
    "template": "template folder (default: a synthetic one)",
    "audio": "speech file (default: synthetic speech through the bundle's audio encoder)",
    "features": "features .npy instead of audio",
    "backends": "candidates, NAME[:precision][:image],... (default: every backend available here)",
    "frames": "speech frames to compare (default 4)",
    "tolerances": "derived (default, from the checkpoint) or fixed",
    "tolerance": "STAGE.METRIC=VALUE overrides, separated by spaces",
    "locate": "the layers stage, every layer against PyTorch: true (default) or false (a third of the time saved)",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--framegen-NAME`` options and ``framegen_NAME`` ini keys for every setting."""
    group = parser.getgroup("framegen", "framegen parity of a checkpoint and its bundle")
    for name, text in _SETTINGS.items():
        group.addoption(f"--framegen-{name}", dest=f"framegen_{name}", default=None, help=text)
        parser.addini(f"framegen_{name}", text, default=None)


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; refuse a malformed setting before any test runs."""
    config.addinivalue_line("markers", f"{MARKER}: a test that runs framegen parity (framegen's pytest plugin)")
    _locate(config)


def _locate(config: pytest.Config) -> bool:
    given = _setting(config, "locate") or "true"
    value = given.strip().lower()
    if value not in ("true", "false"):
        raise pytest.UsageError(f"framegen_locate must be true or false, not {given!r}")
    return value == "true"


def _setting(config: pytest.Config, name: str) -> str | None:
    value = config.getoption(f"framegen_{name}") or config.getini(f"framegen_{name}")
    return str(value) if value not in (None, "", []) else None


def _path(config: pytest.Config, name: str) -> Path | None:
    """A setting that is a path, relative to the rootdir (the ini file's folder) when not absolute."""
    value = _setting(config, name)
    if value is None:
        return None
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else Path(config.rootpath) / p


def _labels(config: pytest.Config) -> list[str] | str:
    """The candidates' labels as the planner picks them, or why there are none."""
    bundle, checkpoint = _path(config, "bundle"), _path(config, "checkpoint")
    if bundle is None or checkpoint is None:
        return "framegen: set framegen_bundle and framegen_checkpoint (pytest.ini) or --framegen-bundle/-checkpoint"
    try:
        cands, _ = parity_candidates(bundle, parse_backends(_setting(config, "backends")), checkpoint=checkpoint)
    except Exception as exc:  # shown as the skip reason: the user's configuration, not a crash of the suite
        return f"framegen: {exc}"
    return [c.label for c in cands]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per candidate for tests that take ``framegen_candidate``."""
    if "framegen_candidate" not in metafunc.fixturenames:
        return
    labels = _labels(metafunc.config)
    if isinstance(labels, str):
        metafunc.parametrize("framegen_candidate", [pytest.param(None, marks=pytest.mark.skip(reason=labels))],
                             indirect=True, ids=["not-configured"])
    else:
        metafunc.parametrize("framegen_candidate", labels, indirect=True, ids=labels)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses framegen's fixtures."""
    for item in items:
        if {"framegen_parity", "framegen_candidate"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(MARKER)


@pytest.fixture(scope="session")
def framegen_parity(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The parity report of the configured bundle against its checkpoint (run once per session)."""
    config = request.config
    bundle, checkpoint = _path(config, "bundle"), _path(config, "checkpoint")
    if bundle is None or checkpoint is None:
        pytest.skip("framegen: set framegen_bundle and framegen_checkpoint (pytest.ini) or --framegen-bundle")
    import framegen

    template = _path(config, "template")
    work = tmp_path_factory.mktemp("framegen")
    if template is None:
        template = framegen.template_synth(work / "template", frames=8, width=640, height=360, seed=0)
    features, audio = _path(config, "features"), _path(config, "audio")
    if features is None and audio is None:
        audio = write_wav(work / "speech.wav", speech_like(2.0, seed=11))
    overrides = (_setting(config, "tolerance") or "").split()
    locate = _locate(config)
    return framegen.parity(bundle=bundle, checkpoint=checkpoint, template=template, features=features, audio=audio,
                           backends=_setting(config, "backends"), frames=int(_setting(config, "frames") or 4),
                           tolerances=_setting(config, "tolerances") or "derived", tolerance=overrides,
                           locate=None if locate else False)


@dataclass
class CandidateCheck:
    """One candidate of the session's parity report (what ``framegen_candidate`` gives a test)."""

    label: str
    report: Any

    @property
    def result(self) -> Any:
        """The :class:`framegen.toolkit.compare.results.CandidateResult`."""
        return next(c for c in self.report.candidates if c.label == self.label)

    def assert_passed(self) -> None:
        """``framegen.testing.assert_parity_passed`` for this candidate."""
        assert_parity_passed(self.report, self.label)


@pytest.fixture
def framegen_candidate(request: pytest.FixtureRequest, framegen_parity: Any) -> CandidateCheck:
    """One candidate backend of the configured bundle (tests taking it run once per candidate)."""
    return CandidateCheck(request.param, framegen_parity)
