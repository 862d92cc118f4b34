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
from faults import broken_bundle
from framegen.toolkit.cli import app
from framegen.toolkit.compare.metrics import ErrorStats
from framegen.toolkit.compare.profiles import FINAL_FRAME, LAYERS, MODEL_OUTPUT, StageLimits, get_profile
from framegen.toolkit.frames.plan import Candidate, Request
from framegen.toolkit.parity.engine import run_parity
from framegen.toolkit.parity.inputs import parity_candidates, parse_backends, verify_checksums
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
    assert {"ort-cpu:fp32", "ort-cpu:fp16"} <= labels, labels
    assert report.passed, report.failures()
    assert all(c.ok for c in report.checksums) and report.checksums
    for cand in report.candidates:
        assert cand.frames == len(report.frames) >= 2
        # Every bundle artifact's layers are judged too, each against its own derived limit.
        assert [s.stage for s in cand.stages] == [MODEL_OUTPUT, FINAL_FRAME, LAYERS]
        layers = _stage(cand, LAYERS).metrics
        assert layers["layers"] > 90 and layers["outside"] == 0 and 0 < layers["excess"] <= 1, layers
        assert cand.outside_box_diffs == 0
        assert cand.profile == f"derived-{cand.candidate.precision}"
    # Real-looking inputs: ping-pong from template frame 1, speech then silence, a reference output spread over [0, 1].
    assert [f["template_index"] for f in report.frames][:3] == [1, 2, 3]
    assert [f["audio"] for f in report.frames] == ["speech"] * (len(report.frames) - 1) + ["silence"]
    assert not any("nearly constant" in n for n in report.notes)


def test_fp16_is_really_computed_in_half_precision(clean_parity):
    by = {c.candidate.label: c for c in clean_parity.candidates}
    for backend in sorted({c.candidate.backend for c in clean_parity.candidates}):
        fp32, fp16 = by.get(f"{backend}:fp32"), by.get(f"{backend}:fp16")
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
    want = {f"coreml-mil:{p}" for p in ("fp32", "fp16") if bundle.has("generator", "coreml", p)}
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
    from faults import output_conv_initializers
    from framegen.models.bundle import load_bundle
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
    assert "FAIL ort-cpu:fp32 model_output" in result.output
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
    layers = _stage(cand, "layers")
    # fp16 rounding noise of the stand-in generator is as large as the breakage at the output; the layers stage
    # sees it at the output convolution (the output stages' spread share follows trained checkpoints, whose correct
    # fp16 output is as biased as this drift: docs/PARITY.md).
    assert not layers.passed or any(f.startswith("|spread_change|") for f in out.failures), \
        (out.failures, layers.failures)


def _count_opens(monkeypatch, *paths):
    """Count every open of ``paths`` (builtins.open and io.open: torch.load, hashing and pathlib use them)."""
    import builtins
    import io
    import os

    watched = {os.path.realpath(p): 0 for p in paths}
    real_open = io.open

    def counting(file, *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)):
            key = os.path.realpath(os.fsdecode(file))
            if key in watched:
                watched[key] += 1
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting)
    monkeypatch.setattr(io, "open", counting)
    return watched


def test_clean_run_json_and_heatmaps(bundle_dir, generator_ckpt, synth_template_dir, parity_features_path, tmp_path,
                                     monkeypatch):
    heat = tmp_path / "heat"
    report_path = tmp_path / "report.json"
    opens = _count_opens(monkeypatch, generator_ckpt, bundle_dir / "manifest.json")
    result = CliRunner().invoke(app, ["parity", "--bundle", str(bundle_dir), "--checkpoint", str(generator_ckpt),
                                      "--template", str(synth_template_dir), "--features", str(parity_features_path),
                                      "--backends", "ort-cpu:fp32", "--frames", "2", "--no-progress",
                                      "--json", str(report_path), "--heatmaps", str(heat)])
    monkeypatch.undo()
    assert result.exit_code == 0, result.output
    # One load per run: the reference, the derived limits and the layers stage share one read of the checkpoint (its
    # digest taken from the same bytes), and the planner, the backends and the checksums one read of the manifest.
    assert list(opens.values()) == [1, 1], opens
    assert "ort-cpu:fp32" in result.output and "pass" in result.output
    report = json.loads(report_path.read_text())
    assert report["passed"] is True and report["failures"] == []
    (cand,) = report["candidates"]
    # The limits in force are recorded with where each came from: this checkpoint's measured fp32 noise.
    derived = report["tolerances"]["derived-fp32"]
    assert derived["stages"][MODEL_OUTPUT] == cand["stages"][0]["limits"]
    assert "fp32 noise" in derived["sources"][MODEL_OUTPUT]["max_abs"]
    assert report["tolerance_rule"]["kind"] == "derived"
    assert report["tolerance_rule"]["measurement"]["checkpoint_sha256"]
    assert "limits in force" in result.output and "30 x fp32 noise" in result.output
    assert [s["stage"] for s in cand["stages"]] == [MODEL_OUTPUT, FINAL_FRAME, LAYERS]
    for s in cand["stages"][:2]:
        assert {"max_abs", "mean_abs", "p99_abs", "max_rel", "cosine", "psnr_db", "share_diff", "share_diff_gt1",
                "worst_frame", "worst_index"} <= set(s["metrics"])
    png = cv2.imread(cand["heatmap"])
    assert png is not None and png.shape[1] > 3 * png.shape[0] / 2  # three panels side by side
    assert sorted(p.name for p in heat.iterdir()) == ["ort-cpu_fp32.model_output.png", "ort-cpu_fp32.png"]
    out_png = cv2.imread(cand["heatmap_output"])  # the model output's: two 320x320 predictions and their difference
    assert out_png is not None and out_png.shape[1] >= 3 * 320
    # It passed: every layer inside its limit, and the per-layer table printed only when asked (--locate).
    assert cand["first_divergence"] is None and len(cand["locate"]["layers"]) > 90
    assert "layers ort-cpu:fp32: " in result.output and "first divergence" not in result.output
    assert "every layer of" not in result.output


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
    assert [(f["frame"], f["audio"]) for f in report["frames"]] == [(0, "speech"), (1, "silence")]


def test_heatmap_marks_where_frames_differ():
    from framegen.toolkit.compare.heatmap import difference_panel, heatmap_image

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


def test_bad_usage_exits_2_without_traceback(bundle_dir, generator_ckpt, synth_template_dir, parity_features_path,
                                             monkeypatch, capsys):
    """Each usage error: exit 2 and one ``error:`` line naming the value. The first and the last case run as a real
    process (no traceback on its stderr); the others through the same entry point in this process."""
    from framegen.toolkit.cli import main

    def in_process(*args: str) -> subprocess.CompletedProcess[str]:
        monkeypatch.setattr(sys, "argv", ["framegen", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        cap = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, cap.out, cap.err)

    base = ["parity", "--bundle", str(bundle_dir), "--checkpoint", str(generator_ckpt), "--template",
            str(synth_template_dir)]
    cases = (([], "--features"),
             (["--features", str(parity_features_path), "--audio", str(parity_features_path)],
              "either --features"),
             (["--features", str(parity_features_path), "--backends", "no-such"], "no-such"),
             (["--features", str(parity_features_path), "--backends", "ort-cpu:fp8"], "fp8"),
             (["--features", str(parity_features_path), "--backends", "torch-cpu:image"],
              "not image"),
             (["--features", str(parity_features_path), "--tolerance", "nosuch.max_abs=1"],
              "unknown stage 'nosuch'"),
             (["--features", str(parity_features_path), "--tolerance", "model_output.maxx=1"],
              "unknown metric 'maxx'"),
             (["--features", str(parity_features_path), "--tolerance", "model_output.max_abs"],
              "STAGE.METRIC=VALUE"),
             (["--features", str(parity_features_path), "--load-outputs",
               str(parity_features_path)], "parity outputs file"))
    for k, (extra, needle) in enumerate(cases):
        proc = (_framegen if k in (0, len(cases) - 1) else in_process)(*base, *extra)
        assert proc.returncode == 2, (extra, proc.stdout, proc.stderr)
        assert proc.stderr.startswith("error:") and needle in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------- planning and metrics


def test_plan_and_parse(bundle_dir):
    from framegen.models.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    assert parse_backends(None) is None
    assert parse_backends("ort-cpu, coreml-mil:fp16,ort-cpu:image:fp32") == [
        Request("ort-cpu"), Request("coreml-mil", "fp16"), Request("ort-cpu", "fp32", "image")]
    cands, _ = parity_candidates(bundle, [Request("ort-cpu", None, "tensor")])
    assert cands == [Candidate("ort-cpu", "fp32"), Candidate("ort-cpu", "fp16")]
    default, notes = parity_candidates(bundle)
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


# ------------------------------------------------------------------------------------------- derived tolerances


def _measurement(scale: float = 1.0):
    """A synthetic measurement: fp16 errors ``scale`` x a baseline, fp32 noise fixed."""
    from framegen.toolkit.compare.tolerance import FINAL_FRAME_IMAGE, PRED_U8, PRED_U8_IMAGE, NoiseMeasurement

    def summary(max_abs, mean, p99, psnr, bias, spread, share, gt1):
        return {"max_abs": max_abs, "mean_abs": mean, "p99_abs": p99, "psnr_db": psnr, "bias": bias,
                "spread_change": spread, "share_diff": share, "share_diff_gt1": gt1, "cosine": 1.0}

    fp16 = {MODEL_OUTPUT: summary(0.1 * scale, 0.005 * scale, 0.03 * scale, 40 - 20 * math.log10(scale), 1e-4,
                                  -5e-4, 1.0, 0.0),
            PRED_U8: summary(30 * scale, 1.5 * scale, 8 * scale, 40.0, 0.1, 4e-4, 0.7, 0.4 * scale),
            FINAL_FRAME: summary(30 * scale, 1.5 * scale, 8 * scale, 40.0, 0.1, 4e-4, 0.7, 0.1 * scale),
            # scaled by 255 in fp16, as an fp16 image-I/O variant does: biased upwards
            PRED_U8_IMAGE: summary(30 * scale, 1.5 * scale, 8 * scale, 40.0, 2.0, 4e-4, 0.7, 0.4 * scale),
            FINAL_FRAME_IMAGE: summary(30 * scale, 1.5 * scale, 8 * scale, 40.0, 1.5, 4e-4, 0.7, 0.1 * scale)}
    fp32 = {MODEL_OUTPUT: summary(2e-5, 1.2e-6, 6e-6, 115.0, 1e-7, 1e-7, 0.97, 0.0),
            PRED_U8: summary(1, 3e-4, 0, 83.0, 4e-5, 1e-7, 3e-4, 0.0),
            FINAL_FRAME: summary(1, 4e-4, 0, 82.0, 4e-5, 1e-7, 4e-4, 0.0)}
    fp32[PRED_U8_IMAGE], fp32[FINAL_FRAME_IMAGE] = fp32[PRED_U8], fp32[FINAL_FRAME]
    return NoiseMeasurement("ab" * 32, "cd" * 32, "emulated", [{"frame": 0, "template_index": 1, "audio": "speech"}],
                            {"fp16": fp16, "fp32": fp32}, 0.25, 1.0)


def test_derived_limits_scale_with_the_checkpoint_and_say_where_they_come_from():
    from framegen.toolkit.compare.tolerance import K, derive_profile

    calm, noisy = derive_profile(_measurement(1.0), "fp16"), derive_profile(_measurement(2.0), "fp16")
    a, b = calm.limits(MODEL_OUTPUT), noisy.limits(MODEL_OUTPUT)
    assert a.max_abs == pytest.approx(K["fp16"] * 0.1) and b.max_abs == pytest.approx(2 * a.max_abs)
    assert b.mean_abs == pytest.approx(2 * a.mean_abs) and b.p99_abs == pytest.approx(2 * a.p99_abs)
    assert b.min_psnr_db == pytest.approx(a.min_psnr_db - 20 * math.log10(2))
    assert calm.sources[MODEL_OUTPUT]["max_abs"] == f"{K['fp16']:g} x independent fp16 max 0.1"
    # Spread and bias cannot shrink below a share of the measured noise, however unbiased it looked.
    assert a.max_spread_change >= K["fp16"] * 5e-4
    # fp32: the final frame's limits are structural bounds, not K x a one-level maximum.
    fp32 = derive_profile(_measurement(), "fp32")
    frame = fp32.limits(FINAL_FRAME)
    assert frame.max_abs == 2 and frame.max_share_diff_gt1 == pytest.approx(1e-3)
    assert fp32.limits(MODEL_OUTPUT).max_abs == pytest.approx(K["fp32"] * 2e-5)
    # Frames where fp32 noise flipped no truncation still leave room for a flip: mean, bias and spread never 0.
    flat = _measurement()
    flat.stats["fp32"][FINAL_FRAME] = {**flat.stats["fp32"][FINAL_FRAME], "mean_abs": 0.0, "bias": 0.0,
                                       "spread_change": 0.0, "share_diff": 0.0}
    quiet = derive_profile(flat, "fp32").limits(FINAL_FRAME)
    flips = 255 * K["fp32"] * 1.2e-6 * 2
    assert quiet.mean_abs == pytest.approx(flips) and quiet.max_bias == pytest.approx(flips)
    assert quiet.max_spread_change == pytest.approx(flips / (0.25 * 255))
    assert frame.mean_abs == pytest.approx(max(K["fp32"] * 4e-4, flips))
    image = derive_profile(_measurement(), "fp16", "image")
    assert image.name == "derived-image-fp16" and image.limits(MODEL_OUTPUT).max_abs == pytest.approx(90)
    # Image-I/O limits come from the prediction scaled in the candidate's precision, not in fp32.
    assert image.limits(MODEL_OUTPUT).max_bias == pytest.approx(K["fp16"] * 2.0)
    assert image.limits(FINAL_FRAME).max_bias == pytest.approx(K["fp16"] * 1.5)
    assert derive_profile(_measurement(), "fp16").limits(FINAL_FRAME).max_bias < K["fp16"] * 1.5


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_scaling_by_255_in_half_precision_rounds_up_across_truncations(precision):
    """An fp16 / bf16 image-I/O model multiplies by 255 in its precision before the floor: a product just below an
    integer rounds up to it. The measurement reproduces that bias; scaling in fp32 does not have it."""
    from framegen.models.pixels import pred_to_uint8
    from framegen.toolkit.compare.tolerance import scaled_to_uint8

    out = np.random.default_rng(3).uniform(0.5, 1.0, (3, 320, 320)).astype(np.float32)
    exact = pred_to_uint8(out).astype(np.int32)
    assert np.array_equal(scaled_to_uint8(out, "fp32"), exact.astype(np.uint8))
    half = scaled_to_uint8(out.astype(np.float16).astype(np.float32) if precision == "fp16" else out, precision)
    diff = half.astype(np.int32) - pred_to_uint8(out).astype(np.int32)
    # values of 128..255 are spaced 0.125 in fp16 and 1 in bf16: rounding moves up at least as often as down
    assert diff.mean() > 0.01 and np.abs(diff).max() <= (1 if precision == "fp16" else 2)


def test_measurement_is_cached_per_checkpoint_digest(tmp_path, generator_ckpt, prepared_template, parity_features):
    from framegen.models.checkpoint import sha256_file
    from framegen.toolkit.compare.tolerance import measure_noise, measurement_frames

    frames = measurement_frames(prepared_template, parity_features, "ave", speech=1, silence=1)
    assert [f.audio for f in frames] == ["speech", "silence"] and not frames[1].window.any()
    first = measure_noise(generator_ckpt, frames, prepared_template, mode="ave", cache=tmp_path)
    again = measure_noise(generator_ckpt, frames, prepared_template, mode="ave", cache=tmp_path)
    assert not first.cached and again.cached and again.stats == first.stats
    assert [p.name for p in tmp_path.iterdir()] == [f"{sha256_file(generator_ckpt)}.json"]
    # fp16 rounding of this network is thousands of times fp32's, and both are real (non-zero) measurements.
    e16, e32 = (first.stats[p][MODEL_OUTPUT]["mean_abs"] for p in ("fp16", "fp32"))
    assert e32 > 0 and 300 * e32 < e16 < 0.05
    other = measurement_frames(prepared_template, parity_features, "ave", speech=1, silence=0)
    assert not measure_noise(generator_ckpt, other, prepared_template, mode="ave", cache=tmp_path).cached


def test_overrides_from_the_command_line_and_profile_files(tmp_path):
    from framegen.toolkit.compare.overrides import Overrides, load_profile_file, parse_tolerance
    from framegen.toolkit.compare.tolerance import ToleranceError, Tolerances

    toml = tmp_path / "limits.toml"
    toml.write_text("[model_output]\nmax_abs = 0.5\n[final_frame]\nmean_abs = 3\n")
    js = tmp_path / "limits.json"
    js.write_text(json.dumps({"stages": {"model_output": {"p99_abs": 0.2}}}))
    ov = load_profile_file(toml)
    load_profile_file(js, ov)
    parse_tolerance("model_output.max_abs=0.25", ov)  # the command line wins over the file
    prof = Tolerances("derived", _measurement(), ov).profile("fp16")
    assert prof.limits(MODEL_OUTPUT).max_abs == 0.25 and prof.limits(MODEL_OUTPUT).p99_abs == 0.2
    assert prof.limits(FINAL_FRAME).mean_abs == 3
    assert prof.sources[MODEL_OUTPUT]["max_abs"] == "--tolerance model_output.max_abs=0.25"
    assert prof.sources[FINAL_FRAME]["mean_abs"] == str(toml)
    assert "independent fp16" in prof.sources[MODEL_OUTPUT]["mean_abs"]  # the rest stays derived
    for bad, needle in (("[nosuch]\nmax_abs = 1\n", "unknown stage 'nosuch'"),
                        ("[model_output]\nmaxx = 1\n", "unknown metric 'maxx'"),
                        ("[model_output]\nmax_abs = 'big'\n", "is not a number"), ("[[", "not valid TOML")):
        toml.write_text(bad)
        with pytest.raises(ToleranceError, match=needle) as exc:
            load_profile_file(toml, Overrides())
        assert "\n" not in str(exc.value)


def test_a_tolerance_override_changes_the_verdict_and_is_recorded(bundle_dir, generator_ckpt, synth_template_dir,
                                                                  parity_features_path, tmp_path):
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["parity", "--bundle", str(bundle_dir), "--checkpoint", str(generator_ckpt),
                                      "--template", str(synth_template_dir), "--features", str(parity_features_path),
                                      "--backends", "ort-cpu:fp32", "--frames", "1", "--no-progress", "--no-locate",
                                      "--tolerance", "model_output.max_abs=1e-9", "--json", str(report_path)])
    assert result.exit_code == 1, result.output
    report = json.loads(report_path.read_text())
    (cand,) = report["candidates"]
    assert cand["stages"][0]["limits"]["max_abs"] == 1e-9
    assert report["tolerances"][cand["profile"]]["sources"][MODEL_OUTPUT]["max_abs"] == \
        "--tolerance model_output.max_abs=1e-9"
    assert report["tolerance_rule"]["overrides"] == {MODEL_OUTPUT: {"max_abs": 1e-9}}


# ------------------------------------------------------------------------------------------- across machines


def test_save_and_load_outputs_round_trip(bundle_dir, generator_ckpt, prepared_template, parity_features, tmp_path):
    from framegen.toolkit.parity.replay import OutputsFileError, load_outputs

    saved = tmp_path / "outputs.npz"
    live = run_parity(bundle_dir, generator_ckpt, prepared_template, parity_features,
                      candidates=[Candidate("ort-cpu", "fp16")], frames=1, save_outputs=saved, locate=False)
    (run,) = load_outputs(saved)
    assert run.header["artifact"]["sha256"] and run.header["runtime_versions"]["onnxruntime"]
    assert len(run.outputs) == len(live.frames) == 2  # one speech, one silent frame
    loaded = run_parity(bundle_dir, generator_ckpt, prepared_template, parity_features, candidates=[], frames=1,
                        load_outputs=[saved])
    (cand,) = loaded.candidates
    assert cand.loaded_from == str(saved) and cand.label == "ort-cpu:fp16@outputs.npz"
    assert cand.passed and loaded.passed
    assert [s.stage for s in cand.stages] == [MODEL_OUTPUT, FINAL_FRAME, LAYERS]  # its artifact's layers, here
    for a, b in zip(live.candidates[0].stages[:2], cand.stages[:2], strict=True):
        assert a.metrics["max_abs"] == b.metrics["max_abs"] and a.metrics["mean_abs"] == b.metrics["mean_abs"]
    # Other inputs (another start frame): refused with one line before anything runs.
    with pytest.raises(OutputsFileError, match="made from other inputs") as exc:
        run_parity(bundle_dir, generator_ckpt, prepared_template, parity_features, candidates=[], frames=1,
                   start_frame=4, load_outputs=[saved])
    assert "\n" not in str(exc.value) and str(saved) in str(exc.value)


@pytest.mark.slow
def test_a_checkpoint_the_fixed_profile_false_fails_passes_clean_and_fails_drifted(
        tmp_path, prepared_template, parity_features, seed2_generator_ckpt):
    """Seeded checkpoint ave:2 amplifies fp16 rounding more than the stand-in the fixed profiles were measured on:
    its correct ONNX fp16 export broke the fixed limits. Derived from the checkpoint, the limits pass it and still
    fail a 1 % scale of the output convolution in fp32 and fp16. In fp16 the layers stage is what catches it: the
    output stages' bias share is 0.5 of the mean error, because a trained network's correct fp16 output is that
    biased (docs/PARITY.md), and a 1 % output drift of this stand-in is no more."""
    from faults import DRIFTS, drifted_bundle
    from framegen.toolkit.export.bundle import export_bundle

    ckpt = seed2_generator_ckpt
    bundle = export_bundle(ckpt, tmp_path / "bundle", formats=("onnx",), precisions=("fp32", "fp16"))
    cands = [Candidate("ort-cpu", "fp32"), Candidate("ort-cpu", "fp16")]
    kw = {"candidates": cands, "frames": 3, "locate": False}
    fixed = run_parity(bundle, ckpt, prepared_template, parity_features, tolerances="fixed", **kw)
    assert not next(c for c in fixed.candidates if c.candidate.precision == "fp16").passed  # the false failure
    derived = run_parity(bundle, ckpt, prepared_template, parity_features, **kw)
    assert derived.passed, derived.failures()
    layer, edit = DRIFTS["outc x1.01"]
    broken = drifted_bundle(bundle, tmp_path / "broken", layer, edit, ckpt, formats=("onnx",))
    drifted = run_parity(broken, ckpt, prepared_template, parity_features, tolerances=derived.tolerances,
                         **{**kw, "locate": True})
    assert all(not c.passed for c in drifted.candidates), [c.failures() for c in drifted.candidates]
