"""The parity engine, its tolerance profiles and `framegen parity`: CI's parity gate.

``clean_parity`` runs every backend available here (ort-cpu fp32/fp16, coreml-mil fp32/fp16, torch-cuda where there is
a GPU, ...) against the PyTorch fp32 reference on real-looking frames; the sensitivity tests break the generator's
output convolution by a few percent, update the manifest's checksum, and require parity to fail on the numbers alone.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import ROOT
from framegen.toolkit.cli import app
from framegen.toolkit.metrics import ErrorStats
from framegen.toolkit.parity import Candidate, parse_backends, plan_candidates, run_parity, verify_checksums
from framegen.toolkit.profiles import FINAL_FRAME, MODEL_OUTPUT, StageLimits, broken_bundle, get_profile, profile_for
from typer.testing import CliRunner

# Sizes of the deliberate breakages (docs/PARITY.md): the smallest each profile must catch.
FP32_SENSITIVITY = 1.01
FP16_SENSITIVITY = 1.01


def _framegen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "toolkit.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)


def _stage(result, name):
    return next(s for s in result.stages if s.stage == name)


# ------------------------------------------------------------------------------------------- clean bundle


def test_clean_bundle_passes_on_every_available_backend(clean_parity):
    report = clean_parity
    labels = {c.candidate.label for c in report.candidates}
    assert {"ort-cpu/fp32", "ort-cpu/fp16"} <= labels, labels
    assert report.passed, report.failures()
    assert all(c.ok for c in report.checksums) and report.checksums
    for cand in report.candidates:
        assert cand.frames == len(report.frames) >= 2
        assert [s.stage for s in cand.stages] == [MODEL_OUTPUT, FINAL_FRAME]
        assert cand.outside_box_diffs == 0
        assert cand.profile == profile_for(cand.candidate.precision).name
    # Real-looking inputs: ping-pong from template frame 1, a reference output spread over [0, 1].
    assert [f["template_index"] for f in report.frames][:3] == [1, 2, 3]
    assert not any("nearly constant" in n for n in report.notes)


def test_fp16_is_really_computed_in_half_precision(clean_parity):
    by = {c.candidate.label: c for c in clean_parity.candidates}
    for backend in sorted({c.candidate.backend for c in clean_parity.candidates}):
        fp32, fp16 = by.get(f"{backend}/fp32"), by.get(f"{backend}/fp16")
        if fp32 is None or fp16 is None:
            continue
        e32 = _stage(fp32, MODEL_OUTPUT).metrics["mean_abs"]
        e16 = _stage(fp16, MODEL_OUTPUT).metrics["mean_abs"]
        assert e16 > 0
        assert e16 > 10 * e32, (backend, e32, e16)


def test_coreml_artifacts_are_checked_by_the_verifier_when_available(clean_parity, bundle_dir):
    from framegen.models.bundle import load_bundle
    from framegen.runtimes.registry import availability, get_spec

    bundle = load_bundle(bundle_dir)
    try:
        spec = get_spec("coreml-mil")
    except Exception:
        pytest.skip("no coreml-mil backend registered")
    if not availability(spec).available or not bundle.has("generator", "coreml", "fp16"):
        pytest.skip("coreml-mil unavailable or the bundle has no Core ML generator")
    labels = {c.candidate.label for c in clean_parity.candidates}
    want = {f"coreml-mil/{p}" for p in ("fp32", "fp16") if bundle.has("generator", "coreml", p)}
    assert want <= labels


def test_reference_against_itself_is_bit_exact(bundle_dir, generator_ckpt, prepared_template, parity_features):
    report = run_parity(bundle_dir, generator_ckpt, prepared_template, parity_features,
                        candidates=[Candidate("torch-cpu", "fp32")], frames=1)
    (cand,) = report.candidates
    assert report.passed
    for s in cand.stages:
        assert s.metrics["max_abs"] == 0 and s.metrics["share_diff"] == 0, s.metrics


# ------------------------------------------------------------------------------------------- sensitivity


@pytest.fixture(scope="module")
def broken_fp32(tmp_path_factory, bundle_dir):
    return broken_bundle(bundle_dir, tmp_path_factory.mktemp("broken") / "fp32_x1.01", FP32_SENSITIVITY, "fp32")


def test_broken_bundle_changes_only_the_numbers(broken_fp32, bundle_dir):
    import onnx
    from framegen.models.bundle import load_bundle
    from framegen.toolkit.profiles import output_conv_initializers
    from onnx import numpy_helper

    clean, broken = load_bundle(bundle_dir), load_bundle(broken_fp32)
    broken.verify()  # checksums updated: only the numbers can tell
    a = onnx.load(str(clean.find("generator", "onnx", "fp32").path))
    b = onnx.load(str(broken.find("generator", "onnx", "fp32").path))
    wa = [numpy_helper.to_array(i) for i in output_conv_initializers(a)]
    wb = [numpy_helper.to_array(i) for i in output_conv_initializers(b)]
    assert [w.shape for w in wa] == [(3, 16, 1, 1), (3,)]
    for x, y in zip(wa, wb, strict=True):
        np.testing.assert_allclose(y, x * FP32_SENSITIVITY, rtol=1e-6)
    same = {i.name for i in a.graph.initializer} - {i.name for i in output_conv_initializers(a)}
    by_b = {i.name: i for i in b.graph.initializer}
    assert all(numpy_helper.to_array(by_b[i.name]).tobytes() == numpy_helper.to_array(i).tobytes()
               for i in a.graph.initializer if i.name in same)


def test_cli_fails_fp32_output_conv_scaled_by_one_percent(broken_fp32, generator_ckpt, synth_template_dir,
                                                          parity_features_path, tmp_path):
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["parity", "--bundle", str(broken_fp32), "--checkpoint", str(generator_ckpt),
                                      "--template", str(synth_template_dir), "--features", str(parity_features_path),
                                      "--backends", "ort-cpu:fp32", "--frames", "2", "--no-progress",
                                      "--json", str(report_path)])
    assert result.exit_code == 1, result.output
    assert "FAIL ort-cpu/fp32 model_output" in result.output
    report = json.loads(report_path.read_text())
    assert report["passed"] is False
    assert all(c["ok"] for c in report["checksums"])
    out = report["candidates"][0]["stages"][0]
    assert out["stage"] == MODEL_OUTPUT and not out["passed"]
    # The fp32 profile's limits are far below what 1% does, and what 1% does is far from noise.
    assert out["metrics"]["mean_abs"] > 3 * out["limits"]["mean_abs"]


def test_fp16_profile_catches_its_sensitivity_case(tmp_path, bundle_dir, generator_ckpt, prepared_template,
                                                   parity_features):
    broken = broken_bundle(bundle_dir, tmp_path / "fp16_broken", FP16_SENSITIVITY, "fp16")
    report = run_parity(broken, generator_ckpt, prepared_template, parity_features,
                        candidates=[Candidate("ort-cpu", "fp16")], frames=2)
    (cand,) = report.candidates
    assert all(c.ok for c in report.checksums)
    assert not cand.passed
    out = _stage(cand, MODEL_OUTPUT)
    # fp16 rounding noise of the stand-in generator is as large as the breakage; its spread change is not.
    assert any(f.startswith("|spread_change|") for f in out.failures), out.failures


def test_clean_run_json_and_heatmaps(bundle_dir, generator_ckpt, synth_template_dir, parity_features_path, tmp_path):
    heat = tmp_path / "heat"
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["parity", "--bundle", str(bundle_dir), "--checkpoint", str(generator_ckpt),
                                      "--template", str(synth_template_dir), "--features", str(parity_features_path),
                                      "--backends", "ort-cpu:fp32", "--frames", "2", "--no-progress",
                                      "--json", str(report_path), "--heatmaps", str(heat)])
    assert result.exit_code == 0, result.output
    assert "ort-cpu/fp32" in result.output and "pass" in result.output
    report = json.loads(report_path.read_text())
    assert report["passed"] is True and report["failures"] == []
    assert report["tolerances"]["fp32"]["stages"][MODEL_OUTPUT] == get_profile("fp32").stages[MODEL_OUTPUT].as_dict()
    (cand,) = report["candidates"]
    assert {s["stage"] for s in cand["stages"]} == {MODEL_OUTPUT, FINAL_FRAME}
    for s in cand["stages"]:
        assert {"max_abs", "mean_abs", "p99_abs", "max_rel", "cosine", "psnr_db", "share_diff", "share_diff_gt1",
                "worst_frame", "worst_index"} <= set(s["metrics"])
    png = cv2.imread(cand["heatmap"])
    assert png is not None and png.shape[1] > 3 * png.shape[0] / 2  # three panels side by side
    assert [p.name for p in heat.iterdir()] == ["ort-cpu_fp32.png"]


def test_audio_input_runs_through_the_reference_encoder(tmp_path, bundle_dir, generator_ckpt, synth_template_dir,
                                                      encoder_ckpt, speech_wav):
    from fx_audio import write_audio

    clip = write_audio(tmp_path / "clip.wav", speech_wav[32000:48000][None], 16000)
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["parity", "--bundle", str(bundle_dir), "--checkpoint", str(generator_ckpt),
                                      "--template", str(synth_template_dir), "--audio", str(clip), "--encoder",
                                      str(encoder_ckpt), "--backends", "ort-cpu:fp32", "--frames", "1",
                                      "--no-progress", "--json", str(report_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["inputs"]["audio"] == str(clip) and report["inputs"]["encoder"] == str(encoder_ckpt)
    assert [f["frame"] for f in report["frames"]] == [0]


def test_heatmap_marks_where_frames_differ():
    from framegen.toolkit.heatmap import difference_panel, heatmap_image

    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    cand = ref.copy()
    cand[120, 150, 1] += 3
    panel, gain, peak = difference_panel(ref, cand)
    assert peak == 3 and gain == 85
    assert panel[120, 150].any() and np.count_nonzero(panel.any(axis=2)) == 1
    same, _, zero = difference_panel(ref, ref)
    assert zero == 0 and not same.any()
    image = heatmap_image(ref, cand, (100, 100, 200, 200), "title")
    assert image.ndim == 3 and image.shape[1] > 3 * 100


def test_checksum_mismatch_is_its_own_failure(tmp_path, bundle_dir, generator_ckpt, prepared_template,
                                              parity_features):
    import shutil

    from framegen.models.bundle import MANIFEST

    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    victim = next(a for a in manifest["artifacts"] if a["model"] == "generator" and a["precision"] == "fp16")
    victim["sha256"] = "0" * 64
    (copy / MANIFEST).write_text(json.dumps(manifest))
    from framegen.models.bundle import load_bundle

    results = verify_checksums(load_bundle(copy))
    assert [r.path for r in results if not r.ok] == [victim["path"]]
    report = run_parity(copy, generator_ckpt, prepared_template, parity_features,
                        candidates=[Candidate("ort-cpu", "fp32")], frames=1)
    assert report.candidates[0].passed and not report.passed
    (line,) = report.failures()
    assert line.startswith(f"checksum {victim['path']}: sha256 ") and "000000000000" in line


def test_bad_usage_exits_2_without_traceback(bundle_dir, generator_ckpt, synth_template_dir, parity_features_path):
    base = ["parity", "--bundle", str(bundle_dir), "--checkpoint", str(generator_ckpt), "--template",
            str(synth_template_dir)]
    for extra, needle in (([], "--features"),
                          (["--features", str(parity_features_path), "--audio", str(parity_features_path)],
                           "either --features"),
                          (["--features", str(parity_features_path), "--backends", "no-such"], "no-such"),
                          (["--features", str(parity_features_path), "--backends", "ort-cpu:fp8"], "fp8"),
                          (["--features", str(parity_features_path), "--backends", "torch-cpu:image"],
                           "image-I/O")):
        proc = _framegen(*base, *extra)
        assert proc.returncode == 2, (extra, proc.stdout, proc.stderr)
        assert proc.stderr.startswith("error:") and needle in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------- planning and metrics


def test_plan_and_parse(bundle_dir):
    from framegen.models.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    assert parse_backends(None) is None
    assert parse_backends("ort-cpu, coreml-mil:fp16,ort-cpu:image:fp32") == [
        ("ort-cpu", None, "tensor"), ("coreml-mil", "fp16", "tensor"), ("ort-cpu", "fp32", "image")]
    cands, _ = plan_candidates(bundle, [("ort-cpu", None, "tensor")])
    assert cands == [Candidate("ort-cpu", "fp32"), Candidate("ort-cpu", "fp16")]
    default, notes = plan_candidates(bundle)
    assert Candidate("torch-cpu", "fp32") not in default  # the reference is not its own candidate by default
    assert all(isinstance(n, str) for n in notes)


def test_error_stats_streams_and_locates():
    rng = np.random.default_rng(1)
    ref = rng.random((4, 3, 8, 8)).astype(np.float32)
    cand = ref + rng.normal(0, 1e-3, ref.shape).astype(np.float32)
    cand[2, 1, 5, 6] += 0.1
    whole, parts = ErrorStats("float"), ErrorStats("float")
    whole.update(ref, cand, [10, 11, 12, 13])
    for k in range(4):
        parts.update(ref[k:k + 1], cand[k:k + 1], [10 + k], offset=(0, 100, 200))
    a, b = whole.summary(), parts.summary()
    assert a["worst_frame"] == b["worst_frame"] == 12
    assert a["worst_index"] == [1, 5, 6] and b["worst_index"] == [1, 105, 206]
    for key in ("max_abs", "mean_abs", "p99_abs", "cosine", "psnr_db", "share_diff"):
        assert math.isclose(a[key], b[key], rel_tol=1e-9), key
    d = np.abs(cand.astype(np.float64) - ref)
    assert math.isclose(a["max_abs"], d.max()) and math.isclose(a["mean_abs"], d.mean())
    assert np.quantile(d, 0.99) <= a["p99_abs"] <= np.quantile(d, 0.99) * 1.03


def test_non_finite_candidate_fails_every_profile():
    ref = np.full((1, 3, 4, 4), 0.5, np.float32)
    cand = ref.copy()
    cand[0, 0, 0, 0] = np.nan
    stats = ErrorStats("float")
    stats.update(ref, cand)
    summary = stats.summary()
    assert summary["nonfinite"] == 1
    for name in ("fp32", "fp16"):
        assert get_profile(name).limits(MODEL_OUTPUT).check(summary)
    assert StageLimits(max_abs=0).check(ErrorStats("uint8").summary()) == []
