"""Parity and golden verdicts in the formats CI systems read: JUnit XML (one test case per candidate x stage) and a
short Markdown summary (for ``$GITHUB_STEP_SUMMARY``). Both are made from a report's JSON form, so the verdict in
every format is the one in ``--json``.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from framegen.models.atomic import atomic_output
from framegen.models.validation import ValidationRecord, entry_records

#: The environment variable GitHub Actions points at the job's summary file.
STEP_SUMMARY = "GITHUB_STEP_SUMMARY"


def _figures(metrics: Mapping[str, Any] | None, limits: Mapping[str, Any] | None) -> str:
    """``metric value (limit L)`` for every limit in force; a limit ``max_bias`` reads the metric ``bias``."""
    m = metrics or {}
    shown = []
    for name, limit in (limits or {}).items():
        key = name if name in m else name.removeprefix("max_").removeprefix("min_")
        shown.append(f"{key} {m.get(key, '?')} (limit {limit})")
    return "; ".join(shown)


def _case(suite: ET.Element, classname: str, name: str, failures: list[str], detail: str,
          error: str | None = None, skipped: str | None = None) -> None:
    case = ET.SubElement(suite, "testcase", classname=classname, name=name, time="0")
    if error:
        ET.SubElement(case, "error", message=error[:500], type="error").text = error
    elif skipped:
        ET.SubElement(case, "skipped", message=skipped[:500])
    elif failures:
        ET.SubElement(case, "failure", message="; ".join(failures)[:500], type="parity").text = \
            "\n".join([*failures, detail])
    if detail:
        ET.SubElement(case, "system-out").text = detail


def parity_junit(report: Mapping[str, Any], suite_name: str = "framegen parity") -> str:
    """JUnit XML of a parity report's ``as_dict()``: per candidate one test case per stage (``model_output``,
    ``final_frame``, ``layers``), the failure message holding the broken limits and the figures; the artifact
    checksums as one more case."""
    suites = ET.Element("testsuites", name=suite_name)
    suite = ET.SubElement(suites, "testsuite", name=suite_name)
    for cand in report.get("candidates", []):
        label = str(cand.get("label"))
        if cand.get("error"):
            _case(suite, label, "run", [], "", error=str(cand["error"]))
            continue
        for stage in cand.get("stages", []):
            detail = _figures(stage.get("metrics"), stage.get("limits"))
            if stage.get("stage") == "layers" and cand.get("first_divergence"):
                detail += f"; first diverging layer: {cand['first_divergence']}"
            _case(suite, label, str(stage.get("stage")), list(stage.get("failures") or []), detail)
    bad = [c for c in report.get("checksums", []) if not c.get("ok")]
    _case(suite, "bundle", "checksums", [f"{c['path']}: sha256 differs from the manifest" for c in bad], "")
    return _finish(suites)


def golden_junit(report: Mapping[str, Any], suite_name: str = "framegen golden check") -> str:
    """JUnit XML of a golden report's ``as_dict()``: one test case per stage the candidate holds."""
    suites = ET.Element("testsuites", name=suite_name)
    suite = ET.SubElement(suites, "testsuite", name=suite_name)
    for stage in report.get("stages", []):
        if not stage.get("cases"):
            continue
        detail = f"judged on {stage.get('judged_on', 'golden values')}: " + _figures(stage.get("metrics"),
                                                                                   stage.get("limits"))
        e2e = stage.get("end_to_end") or {}
        if e2e.get("vs_golden"):
            detail += (f"; end to end max_abs {e2e['vs_golden'].get('max_abs')} (composed limit "
                       f"{e2e.get('composed_max_abs')})")
        failures = list(stage.get("failures") or [])
        if stage.get("inherited_from"):
            failures = [f"inherited from {stage['inherited_from']}: {f}" for f in failures]
        _case(suite, "golden", str(stage.get("stage")), failures, detail)
    return _finish(suites)


def export_junit(artifacts: list[Mapping[str, Any]], error: str | None = None,
                 suite_name: str = "framegen export", refused: Sequence[Mapping[str, Any]] = ()) -> str:
    """JUnit XML of an export's validation: one test case per artifact (``generator.fp16.onnx``) with its figures
    against PyTorch and their limits; a refused export is one failing case holding the reason (nothing else was
    written). ``refused``: the manifest's ``refused`` entries (``--skip-refused``), each a skipped case with its
    reason."""
    suites = ET.Element("testsuites", name=suite_name)
    suite = ET.SubElement(suites, "testsuite", name=suite_name)
    for art in artifacts:
        for name, record in entry_records(dict(art)):
            detail = "; ".join(c.describe() + (f" ({c.source})" if c.source else "") for c in record.checks)
            if record.runtime:
                detail += f"; run by {record.runtime}"
            failures = ([] if record.passed else [record.reason or "validation failed"]) + [
                f"{c.describe()}: outside its limit" for c in record.checks if not c.passed]
            _case(suite, "export", name, failures, detail)
    for r in refused:
        record = ValidationRecord.from_dict(r["validation"], "refused")
        detail = "; ".join(c.describe() for c in record.checks)
        _case(suite, "export", f"generator.{r['precision']} ({r['format']})", [], detail,
              skipped=f"left out of the bundle: {r['reason']}")
    if error is not None:
        _case(suite, "export", "validation", [error], "")
    return _finish(suites)


def _finish(suites: ET.Element) -> str:
    total = failures = errors = 0
    for suite in suites.iter("testsuite"):
        cases = list(suite.iter("testcase"))
        f = sum(1 for c in cases if c.find("failure") is not None)
        e = sum(1 for c in cases if c.find("error") is not None)
        k = sum(1 for c in cases if c.find("skipped") is not None)
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(f))
        suite.set("errors", str(e))
        suite.set("skipped", str(k))
        suite.set("time", "0")
        total, failures, errors = total + len(cases), failures + f, errors + e
    suites.set("tests", str(total))
    suites.set("failures", str(failures))
    suites.set("errors", str(errors))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def parity_markdown(report: Mapping[str, Any], heatmaps: Mapping[str, str] | None = None) -> str:
    """A short Markdown summary: the verdict, one row per candidate (stages, worst figures, the first diverging
    layer) and links to the heatmaps."""
    verdict = "PASS" if report.get("passed") else "FAIL"
    lines = [f"### framegen parity: {verdict}", "",
             "| candidate | verdict | failing stages | model output max | final frame max | first diverging layer "
             "| heatmap |", "|---|---|---|---:|---:|---|---|"]
    for cand in report.get("candidates", []):
        stages = {s["stage"]: s for s in cand.get("stages", [])}
        failing = [s for s, v in stages.items() if not v.get("passed")]
        if cand.get("error"):
            failing = ["error: " + str(cand["error"])[:80]]

        def worst(stage: str, stages: dict = stages) -> str:
            value = (stages.get(stage, {}).get("metrics") or {}).get("max_abs")
            return "" if value is None else f"{value:.3g}"

        heat = cand.get("heatmap") or (heatmaps or {}).get(str(cand.get("label")))
        first = cand.get("first_divergence")
        first = first.get("layer") if isinstance(first, Mapping) else first
        lines.append(f"| {cand.get('label')} | {'pass' if cand.get('passed') else '**FAIL**'} | "
                     f"{', '.join(failing) or '-'} | {worst('model_output')} | {worst('final_frame')} | "
                     f"{first or '-'} | {f'[png]({heat})' if heat else '-'} |")
    return "\n".join(lines) + "\n"


def golden_markdown(report: Mapping[str, Any]) -> str:
    """A short Markdown summary of a golden check: the verdict and the first stage that departs."""
    verdict = "PASS" if report.get("passed") else f"FAIL at {report.get('first_departure')}"
    lines = [f"### framegen golden check: {verdict}", "", "| stage | status | max (own inputs) | end to end max |",
             "|---|---|---:|---:|"]
    for s in report.get("stages", []):
        if s.get("cases"):
            e2e = (s.get("end_to_end") or {}).get("vs_golden") or {}
            lines.append(f"| {s['stage']} | {s.get('status')} | {(s.get('metrics') or {}).get('max_abs', '')} | "
                         f"{e2e.get('max_abs', '')} |")
    return "\n".join(lines) + "\n"


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """``text`` to ``path`` through a unique temporary sibling, renamed when complete."""
    with atomic_output(Path(path)) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_reports(junit: str | None, markdown: str | None, *, junit_path: str | os.PathLike[str] | None,
                  markdown_path: str | os.PathLike[str] | None) -> None:
    """Write the formats asked for, each atomically; Markdown is also appended to ``$GITHUB_STEP_SUMMARY`` when
    that is set (GitHub Actions shows it on the run's page)."""
    for text, path in ((junit, junit_path), (markdown, markdown_path)):
        if text is not None and path is not None:
            with atomic_output(Path(path)) as tmp:
                tmp.write_text(text)
    summary = os.environ.get(STEP_SUMMARY)
    if markdown is not None and summary:
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(markdown + "\n")
