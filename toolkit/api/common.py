"""Helpers every API function shares: argument checks, loading a job's sources once, opening a backend through the
planner, and writing reports."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from framegen.models.atomic import check_writable
from framegen.models.bundle import load_bundle
from framegen.models.errors import FramegenError
from framegen.runtimes.triton_backend import parse_url
from framegen.toolkit.bench.precision import AUTO_PRECISION, choose_precision
from framegen.toolkit.compare import reports
from framegen.toolkit.compare.html import parity_html
from framegen.toolkit.compare.reports import write_text_atomic
from framegen.toolkit.frames.plan import Request, open_candidate, plan_candidates
from framegen.toolkit.frames.video import check_frames_dir, container_format
from framegen.toolkit.inputs.audio import audio_to_features
from framegen.toolkit.inputs.encoders import resolve_encoder
from framegen.toolkit.inputs.features import FeatureError, load_features, validate_features
from framegen.toolkit.inputs.template import open_template

PathLike = str | os.PathLike[str]


class UsageError(FramegenError):
    """Arguments of an API call (or CLI command) that do not fit together or name missing files."""


def split_list(value: str | Sequence[str]) -> list[str]:
    """``"a, b"`` or a sequence -> a list of non-empty strings."""
    if isinstance(value, str):
        return [v for v in (p.strip() for p in value.split(",")) if v]
    return [str(v) for v in value]


def loaded_sources(checkpoint: PathLike | None, bundle: PathLike | None) -> tuple[Any, Any]:
    """The checkpoint and the bundle's manifest, each read (and hashed) once for the whole job; both stay path-like,
    so everything below takes them where it takes a path."""
    from framegen.models.checkpoint import load_checkpoint

    return (load_checkpoint(checkpoint) if checkpoint is not None else None,
            load_bundle(bundle) if bundle is not None else None)


def check_exists(**paths: PathLike | None) -> None:
    """A usage error naming the first path given that does not exist (``--label PATH``)."""
    for label, path in paths.items():
        if path is not None and not Path(path).exists():
            raise UsageError(f"--{label.replace('_', '-')} {path}: no such file or folder")


def prepared_template(template: PathLike | Any, skip_bad_boxes: bool = False,
                      warn: Callable[[str], None] | None = None) -> Any:
    """A template folder opened and prepared (or a prepared one as it is); its warnings go to ``warn``."""
    from framegen.toolkit.inputs.preprocess import PreparedTemplate

    if isinstance(template, PreparedTemplate):
        return template
    prepared = PreparedTemplate(open_template(template), skip_bad_boxes=skip_bad_boxes)
    for message in [*prepared.template.warnings, *prepared.warnings]:
        if warn is not None:
            warn(message)
    return prepared


def features_for(mode: str, features: PathLike | np.ndarray | None, audio: PathLike | None,
                 encoder: PathLike | None, note: Callable[[str], None] | None = None,
                 bundle: PathLike | None = None) -> np.ndarray:
    """Feature rows from an array, a file, or computed from speech ('ave' only) with ``encoder`` (a .pth checkpoint,
    or an exported .onnx / .mlpackage) or, without one, the bundle's own exported audio encoder."""
    if features is not None:
        if isinstance(features, np.ndarray):
            return validate_features(features, mode, "features")
        return load_features(features, mode)
    if audio is None:
        raise UsageError("give features, or audio to compute them from")
    if mode != "ave":
        raise FeatureError(f"audio makes 'ave' features; the generator is {mode!r}: give --features")

    encode, label = resolve_encoder(encoder=encoder, bundle=bundle)
    if note is not None:
        note(f"computing 'ave' features from {audio} with {label}")
    return audio_to_features(audio, encode, progress=False)


def check_outputs(out: PathLike | None, frames_dir: PathLike | None, *reports: PathLike | None) -> None:
    """Refuse an output video, frames folder or report file that cannot be written, before any work."""
    if out is not None:
        container_format(out)
        if not Path(out).parent.is_dir():
            raise UsageError(f"--out {out}: folder {Path(out).parent} does not exist")
        check_writable(out)
    if frames_dir is not None:
        check_frames_dir(frames_dir)
        check_writable(frames_dir, "folder")
    for report in reports:
        if report is not None:
            check_writable(report)


def check_sources(checkpoint: PathLike | None, bundle: PathLike | None, features: Any, audio: PathLike | None,
                   encoder: PathLike | None) -> None:
    """``render``'s sources: exactly one of checkpoint and bundle, and features or audio that can be used."""
    if (checkpoint is None) == (bundle is None):
        raise UsageError("render: give exactly one of --checkpoint CKPT or --bundle DIR")
    if features is not None and encoder is not None:
        raise UsageError("render: give --features F, or --audio A with --encoder ENC to compute them, not both")
    if encoder is not None and audio is None:
        raise UsageError("render: --encoder computes features from --audio; --audio is missing")
    if features is None and audio is None:
        raise UsageError("render: give --features F, or --audio A (features from --encoder ENC or the bundle's "
                         "own audio encoder)")
    if features is None and encoder is None and bundle is None:
        raise UsageError("render: computing features from --audio needs --encoder ENC (or a --bundle with an "
                         "audio encoder)")
    check_exists(checkpoint=checkpoint, bundle=bundle, audio=audio, encoder=encoder,
            features=None if isinstance(features, np.ndarray) else features)


def open_backend_for(backend: str, precision: str, io: str, checkpoint: PathLike | None, bundle: PathLike | None,
                     mode: str | None, options: dict[str, Any] | None) -> Any:
    """The backend a job asked for, chosen by the planner (``auto`` included) and opened as ``render`` opens it.
    ``precision`` ``auto``: :func:`framegen.toolkit.bench.precision.choose_precision` picks it; the backend's
    ``info.extra["precision_choice"]`` says what it chose and why."""
    choice = None
    if precision == AUTO_PRECISION:
        choice = choose_precision(bundle, options=options)
        precision = choice.precision
    plan = plan_candidates("render", bundle=bundle, checkpoint=checkpoint,
                           requested=[Request(backend, precision, io)], options=options)
    be = open_candidate(plan.candidates[0], bundle=bundle, checkpoint=checkpoint, mode=mode, options=options)
    if choice is not None:
        be.info.extra["precision_choice"] = choice.describe()
    return be


def latency_budget(ms: float | None) -> float | None:
    """A live stream's ``latency_budget_ms`` checked: ``None`` for none (0 or ``None``), else the positive ms."""
    if ms is not None and (not math.isfinite(ms) or ms < 0):
        raise UsageError(f"--latency-budget-ms {ms}: must be a positive number of ms (0: none)")
    return ms or None


def triton_options(url: str | None) -> dict[str, Any] | None:
    """The backends' options that name a Triton server (checked), or ``None``."""
    if url is None:
        return None

    parse_url(url)
    return {"triton_url": str(url)}


def write_ci_reports(report: Any, kind: str, junit_xml: PathLike | None, markdown: PathLike | None) -> None:
    """JUnit XML and Markdown of a parity or golden report (from its JSON form: one verdict in every format)."""
    want_md = markdown is not None or bool(os.environ.get(reports.STEP_SUMMARY))
    if junit_xml is None and not want_md:
        return
    data = report.as_dict()
    if kind == "parity":
        junit = reports.parity_junit(data) if junit_xml is not None else None
        md = reports.parity_markdown(data) if want_md else None
    else:
        junit = reports.golden_junit(data) if junit_xml is not None else None
        md = reports.golden_markdown(data) if want_md else None
    reports.write_reports(junit, md, junit_path=junit_xml, markdown_path=markdown)


def write_html(report: Any, path: PathLike) -> None:
    """The parity report as one self-contained HTML page (its heat maps embedded)."""
    write_text_atomic(path, parity_html(report.as_dict()))


def write_export_junit(artifacts: list[dict[str, Any]], path: PathLike, error: str | None = None,
                       refused: Sequence[dict[str, Any]] = ()) -> None:
    """The export's validation as JUnit XML at ``path`` (a refused export: one failing case; an artifact left out
    by ``skip_refused``: a skipped case)."""
    reports.write_reports(reports.export_junit(artifacts, error, refused=refused), None, junit_path=path,
                          markdown_path=None)
