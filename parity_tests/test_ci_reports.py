"""CI-native reports: JUnit XML (read by a JUnit parser, as CI systems do) and Markdown, made from the same report
as ``--json``, so a failing and a passing run say the same thing in every format."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
from framegen.toolkit.api import golden_check
from framegen.toolkit.compare import reports
from framegen.toolkit.parity.golden import copy_candidate, load_index, read_stage


def _junit_cases(path) -> dict[tuple[str, str], str]:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    out = {}
    for suite in root.iter("testsuite"):
        cases = list(suite.iter("testcase"))
        assert int(suite.get("tests")) == len(cases)
        assert int(suite.get("failures")) == sum(c.find("failure") is not None for c in cases)
        for c in cases:
            out[(c.get("classname"), c.get("name"))] = ("failure" if c.find("failure") is not None else
                                                       "error" if c.find("error") is not None else "pass")
    return out


def _rounding_port(golden_dir, out):
    index = load_index(golden_dir)
    spec = next(s for s in index["stages"] if s["name"] == "model_output")

    def rounded(stage, arr, case):
        if stage == "model_output":
            return arr
        mo = read_stage(golden_dir / case["files"]["model_output"], spec["dtype"], spec["shape"])
        return np.clip(np.rint(mo.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)

    return copy_candidate(golden_dir, out, stages=["model_output", "pred_320"], transform=rounded)


def test_golden_reports_agree_for_a_failing_and_a_passing_port(golden_dir, tmp_path, monkeypatch):
    summary = tmp_path / "step_summary.md"
    monkeypatch.setenv(reports.STEP_SUMMARY, str(summary))
    for name, cand in (("fail", _rounding_port(golden_dir, tmp_path / "bad")),
                       ("pass", copy_candidate(golden_dir, tmp_path / "good"))):
        paths = {k: tmp_path / f"{name}.{k}" for k in ("json", "xml", "md")}
        report = golden_check(golden_dir, cand, json=paths["json"], junit_xml=paths["xml"], markdown=paths["md"])
        data = json.loads(paths["json"].read_text())
        cases = _junit_cases(paths["xml"])
        failing_json = {s["stage"] for s in data["stages"] if s["status"] == "FAIL"}
        failing_xml = {stage for (_, stage), status in cases.items() if status == "failure"}
        assert failing_json == failing_xml
        assert (name == "pass") == report.passed == data["passed"] == (not failing_xml)
        md = paths["md"].read_text()
        assert (f"FAIL at {data['first_departure']}" in md) if name == "fail" else ("PASS" in md)
        if name == "fail":
            assert failing_xml == {"pred_320"}
            msg = ET.parse(paths["xml"]).getroot().find(".//testcase[@name='pred_320']/failure").get("message")
            assert "max_abs" in msg or "share" in msg
    assert summary.read_text().count("### framegen golden check") == 2  # appended, not replaced


def test_parity_reports_agree_with_the_json(clean_parity, tmp_path):
    data = clean_parity.as_dict()
    # a failed candidate, as a broken artifact would produce: the same report with one stage's limit broken
    broken = json.loads(json.dumps(data))
    victim = broken["candidates"][0]
    victim["passed"] = False
    victim["stages"][0]["passed"] = False
    victim["stages"][0]["failures"] = ["max_abs 0.5 > 0.01"]
    broken["passed"] = False
    for report in (data, broken):
        xml = tmp_path / "r.xml"
        md = tmp_path / "r.md"
        reports.write_reports(reports.parity_junit(report), reports.parity_markdown(report), junit_path=xml,
                              markdown_path=md)
        cases = _junit_cases(xml)
        for cand in report["candidates"]:
            for stage in cand["stages"]:
                want = "pass" if stage["passed"] else "failure"
                assert cases[(cand["label"], stage["stage"])] == want
        assert cases[("bundle", "checksums")] == "pass"
        text = md.read_text()
        assert text.startswith(f"### framegen parity: {'PASS' if report['passed'] else 'FAIL'}")
        assert text.count("\n| ") - 1 == len(report["candidates"])


def test_export_validation_as_junit_for_a_clean_and_a_refused_export(generator_ckpt, tmp_path, monkeypatch):
    """`framegen export --junit-xml`: read back by junitparser (the parser CI plugins use), one passing case per
    artifact with its figures; a refused export is one failing case holding the reason, and no bundle."""
    from framegen.toolkit.cli import app
    from framegen.toolkit.export import validate
    from junitparser import Failure, JUnitXml
    from typer.testing import CliRunner

    ok = tmp_path / "ok.xml"
    result = CliRunner().invoke(app, ["export", str(generator_ckpt), "--out", str(tmp_path / "b"), "--formats",
                                      "onnx", "--precision", "fp32,fp16", "--junit-xml", str(ok)])
    assert result.exit_code == 0, result.output
    cases = {c.name: c for suite in JUnitXml.fromfile(str(ok)) for c in suite}
    assert set(cases) == {"generator.fp32.onnx", "generator.fp16.onnx"}
    assert all(c.is_passed for c in cases.values())
    assert "max_abs_err" in cases["generator.fp16.onnx"].system_out

    tight = dict(validate.TOLERANCES)
    tight[("generator", "fp32")] = validate.Tolerance(max_abs=1e-12, mean_abs=1e-13, weight_rel=1e-5)
    monkeypatch.setattr(validate, "TOLERANCES", tight)
    bad = tmp_path / "bad.xml"
    result = CliRunner().invoke(app, ["export", str(generator_ckpt), "--out", str(tmp_path / "refused"),
                                      "--formats", "onnx", "--precision", "fp32,fp16", "--junit-xml", str(bad)])
    assert result.exit_code != 0 and not (tmp_path / "refused").exists()
    suites = list(JUnitXml.fromfile(str(bad)))
    (case,) = [c for s in suites for c in s]
    assert isinstance(case.result[0], Failure) and "validation failed" in case.result[0].message
    assert suites[0].failures == 1 and suites[0].tests == 1
