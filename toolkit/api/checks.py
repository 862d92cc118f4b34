"""The API's checks: parity against PyTorch, and golden vectors for ports."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from framegen.toolkit.api.common import (
    PathLike,
    check_exists,
    check_outputs,
    loaded_sources,
    prepared_template,
    triton_options,
    write_ci_reports,
    write_html,
)
from framegen.toolkit.common.files import write_json
from framegen.toolkit.parity.engine import parity_job
from framegen.toolkit.parity.golden import AudioSource, write_golden
from framegen.toolkit.parity.golden_check import check_golden
from framegen.toolkit.parity.inputs import resolve_audio_input


def parity(*, bundle: PathLike, checkpoint: PathLike, template: PathLike | Any,
           features: PathLike | None = None, audio: PathLike | None = None, encoder: PathLike | None = None,
           backends: str | None = None, frames: int = 8, silence_frames: int = 1, start_frame: int = 0,
           batch: int | None = None, heatmaps: PathLike | None = None, skip_bad_boxes: bool = False,
           progress: bool = False, tolerances: str = "derived", tolerance: Sequence[str] = (),
           profile: PathLike | None = None, locate: bool | None = None, save_outputs: PathLike | None = None,
           load_outputs: Sequence[PathLike] = (), json: PathLike | None = None, triton_url: str | None = None,
           junit_xml: PathLike | None = None, markdown: PathLike | None = None, html: PathLike | None = None) -> Any:
    """Render the same frames (speech, then ``silence_frames`` silent ones) through PyTorch fp32 (the reference)
    and every candidate backend x artifact, and compare model outputs and final frames. Returns a
    :class:`framegen.toolkit.parity.engine.ParityReport`; ``report.passed`` is the verdict.

    ``backends``: ``NAME[:precision][:image],...`` (default: the planner's choice). ``tolerances``: ``derived``
    (measured on this checkpoint, cached) or ``fixed``; ``tolerance``: ``STAGE.METRIC=VALUE`` overrides, ``profile``
    a TOML/JSON file of them. ``locate``: the ``layers`` stage (every layer of each ONNX / Core ML artifact against
    PyTorch) runs unless ``False``; ``True`` prints every per-layer table, not only failed candidates'.
    ``save_outputs`` / ``load_outputs``: judge one machine's outputs on another.
    ``json``: also write the report there; ``junit_xml`` (one test case per candidate x stage) and ``markdown``
    (a summary, also appended to ``$GITHUB_STEP_SUMMARY`` when set) for CI; ``html``: one self-contained page
    (verdict, tolerances and their sources, per candidate the metrics, the worst frame's heat map and the per-layer
    error plot). ``triton_url``: the server the
    ``triton`` backend runs on. See docs/PARITY.md.
    """
    check_exists(bundle=bundle, checkpoint=checkpoint)
    check_outputs(None, None, json, junit_xml, markdown, html)
    options = triton_options(triton_url)
    import tempfile

    scratch = tempfile.TemporaryDirectory(prefix="framegen-heatmaps-") if html is not None and heatmaps is None \
        else None
    prepared = prepared_template(template, skip_bad_boxes)
    try:
        report = parity_job(bundle=bundle, checkpoint=checkpoint, template=prepared, features=features, audio=audio,
                            encoder=encoder, backends=backends, frames=frames, silence_frames=silence_frames,
                            start_frame=start_frame, batch=batch,
                            heatmaps=scratch.name if scratch is not None else heatmaps, progress=progress,
                            tolerances=tolerances, tolerance=list(tolerance), profile=profile, locate=locate,
                            save_outputs=save_outputs, load_outputs=list(load_outputs),
                            json=json if scratch is None else None, options=options)
        if html is not None:
            write_html(report, html)
    finally:
        if scratch is not None:
            scratch.cleanup()
    if scratch is not None:  # the heat maps live in the HTML page only
        for cand in report.candidates:
            cand.heatmap = cand.heatmap_output = None
        if json is not None:
            write_json(json, report.as_dict())
    write_ci_reports(report, "parity", junit_xml, markdown)
    return report


def golden_write(*, bundle: PathLike, template: PathLike | Any, out: PathLike, features: PathLike | None = None,
                 audio: PathLike | None = None, encoder: PathLike | None = None, cases: int = 3,
                 checkpoint: PathLike | None = None, start_frame: int = 0, force: bool = False) -> Path:
    """Write golden vectors for ports: every pipeline stage of ``cases`` frames as raw little-endian files plus
    ``index.json`` and a README. The model output comes from ``checkpoint`` (PyTorch) or, by default, the bundle's
    fp32 ONNX generator on ort-cpu. Returns the golden directory."""
    checkpoint, b = loaded_sources(checkpoint, bundle)
    audio_input = resolve_audio_input(b.mode, features, audio, encoder)
    source = None if audio_input.mel_windows is None else AudioSource(audio_input.mel_windows, audio_input.source)
    prepared = prepared_template(template)
    return Path(write_golden(b, prepared, audio_input.features, out, cases=cases, start_frame=start_frame,
                             checkpoint=checkpoint, audio=source, force=force,
                             source={"template": os.fspath(prepared.template.root), **audio_input.source}))


def golden_check(golden: PathLike, candidate: PathLike, *, profile: str = "fp32", bundle: PathLike | None = None,
                 json: PathLike | None = None, junit_xml: PathLike | None = None,
                 markdown: PathLike | None = None) -> Any:
    """Compare a port's stage files (in the golden layout) with the golden ones, stage by stage, each judged on the
    candidate's own inputs to it; with ``bundle`` the model too (its artifact run on the candidate's model input).
    Returns a :class:`framegen.toolkit.parity.golden.GoldenReport`: ``.passed``, and the first stage that departs."""
    check_outputs(None, None, json, junit_xml, markdown)
    report = check_golden(golden, candidate, profile=profile, bundle=bundle)
    write_ci_reports(report, "golden", junit_xml, markdown)
    if json is not None:
        write_json(json, report.as_dict())
    return report
