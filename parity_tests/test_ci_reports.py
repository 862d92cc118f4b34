"""CI-native reports: JUnit XML (read by a JUnit parser, as CI systems do) and Markdown, made from the same report
as ``--json``, so a failing and a passing run say the same thing in every format."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from framegen.toolkit.api import golden_check
from framegen.toolkit.compare import reports
from framegen.toolkit.parity.golden import load_index, read_stage
from framegen.toolkit.parity.golden_check import copy_candidate


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
                                      "onnx", "--precision", "fp32", "--junit-xml", str(ok)])
    assert result.exit_code == 0, result.output
    cases = {c.name: c for suite in JUnitXml.fromfile(str(ok)) for c in suite}
    assert set(cases) == {"generator.fp32.onnx"}
    assert all(c.is_passed for c in cases.values())
    # Every check of the validation record, each with its limit and where the limit came from.
    out = cases["generator.fp32.onnx"].system_out
    assert "max_abs " in out and "<= 0.0001 (fixed" in out and "weights_max_rel" in out and "run by onnxruntime" in out

    tight = dict(validate.TOLERANCES)
    tight[("generator", "fp32")] = validate.Tolerance(max_abs=1e-12, mean_abs=1e-13, weight_rel=1e-5)
    monkeypatch.setattr(validate, "TOLERANCES", tight)
    monkeypatch.setitem(validate.K, "fp32", 1e-6)  # nor does the checkpoint's own fp32 rounding open the limit
    bad = tmp_path / "bad.xml"
    result = CliRunner().invoke(app, ["export", str(generator_ckpt), "--out", str(tmp_path / "refused"),
                                      "--formats", "onnx", "--precision", "fp32", "--junit-xml", str(bad)])
    assert result.exit_code != 0 and not (tmp_path / "refused").exists()
    suites = list(JUnitXml.fromfile(str(bad)))
    (case,) = [c for s in suites for c in s]
    assert isinstance(case.result[0], Failure) and "validation failed" in case.result[0].message
    assert suites[0].failures == 1 and suites[0].tests == 1


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def _chromium() -> str:
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    return path


@pytest.mark.slow
def test_a_failing_parity_run_agrees_in_json_junit_markdown_and_html_and_the_page_renders_in_chromium(
        bundle_dir, generator_ckpt, synth_template_dir, parity_features_path, tmp_path):
    """One failing run (an impossible model-output limit on two fp32 candidates) written in every format: the same
    verdict and the same failing candidates everywhere; the HTML page, opened in headless Chromium, shows the verdict
    and decodes every embedded picture (heat maps), and has the per-layer plot."""
    import subprocess

    import cv2
    import framegen
    from junitparser import JUnitXml

    paths = {k: tmp_path / f"parity.{k}" for k in ("json", "xml", "md", "html")}
    report = framegen.parity(bundle=bundle_dir, checkpoint=generator_ckpt, template=synth_template_dir,
                             features=parity_features_path, backends="ort-cpu:fp32,ort-cpu:fp16", frames=2,
                             tolerances="fixed", tolerance=["model_output.max_abs=1e-9"], json=paths["json"],
                             junit_xml=paths["xml"], markdown=paths["md"], html=paths["html"])
    data = json.loads(paths["json"].read_text())
    assert not report.passed and not data["passed"]
    failing = {c["label"] for c in data["candidates"] if not c["passed"]}
    assert failing == {"ort-cpu:fp32", "ort-cpu:fp16"}
    junit_failing = {case.classname for suite in JUnitXml.fromfile(str(paths["xml"])) for case in suite
                     if case.result and case.name == "model_output"}
    assert junit_failing == failing
    md = paths["md"].read_text()
    assert "FAIL" in md and all(label in md for label in failing)
    page = paths["html"].read_text()
    assert "http://" not in page and "https://" not in page and 'src="data:image/png;base64,' in page
    assert "layers in execution order" in page  # the per-layer plot of the layers stage
    assert page.count('src="data:image/png') == 4  # per candidate: the final frame's and the model output's maps

    chromium = _chromium()
    profile = tmp_path / "chromium-profile"
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=3000",
                          "--dump-dom", paths["html"].as_uri()], capture_output=True, text=True, timeout=120)
    assert 'id="verdict"' in dom.stdout and ">FAIL<" in dom.stdout, dom.stderr[-2000:]
    images = int(page.count('src="data:image/png'))
    assert f'data-images="{images}/{images}"' in dom.stdout, "Chromium did not decode every embedded picture"
    shot = tmp_path / "report.png"
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                    "--window-size=1100,1400", paths["html"].as_uri()], capture_output=True, timeout=120)
    pixels = cv2.imread(str(shot))
    assert pixels is not None and pixels.shape[:2] == (1400, 1100)
    top = pixels[:160]
    red = (np.abs(top.astype(int) - np.array([0x2e, 0x22, 0xcf])).sum(axis=2) < 30).sum()  # the FAIL badge, BGR
    assert red > 500, "no red FAIL badge at the top of the rendered page"
    assert pixels.std() > 20  # text, tables and pictures, not a blank page


def test_bench_html_plots_latency_percentiles_and_the_batch_sweep(bundle_dir, tmp_path):
    import framegen

    page = tmp_path / "bench.html"
    report = framegen.bench(bundle=bundle_dir, backends="ort-cpu", precisions="fp32", batches=[1, 2], iterations=2,
                            warmup=1, html=page)
    text = page.read_text()
    assert text.count("<svg") == 2 and "http" not in text
    for r in report["results"]:
        assert f"ort-cpu fp32 batch {r['batch']}" in text
        assert f"{r['fps']:.4g} fps" in text and f"{r['latency_ms']['p99']:.4g} ms" in text
