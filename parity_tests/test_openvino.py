"""The ``openvino`` backend (issue 18): its registry entry and probe, its checks against the model's own metadata,
fp32 / fp16 parity with PyTorch, int8 through ``auto``, and the compressed bench table from one run."""

from __future__ import annotations

import numpy as np
import pytest
from framegen.models.bundle import load_bundle
from framegen.models.contract import audio_shape
from framegen.runtimes.base import BackendError
from framegen.runtimes.registry import list_backends, open_backend, resolve_auto
from framegen.runtimes.spec import OpenRequest

AUDIO = audio_shape("ave")


def _onnx(bundle, precision):
    return load_bundle(bundle).find("generator", "onnx", precision).path


def test_listed_with_its_reason_and_precisions():
    row = next(r for r in list_backends() if r["name"] == "openvino")
    assert row["available"], row["reason"]
    assert "OpenVINO" in row["reason"] and "CPU" in row["reason"]
    assert row["precisions"] == ["fp32", "fp16", "bf16", "int8"] and row["needs"] == "onnx"


def test_probe_says_why_when_openvino_is_missing(monkeypatch):
    from framegen.runtimes import openvino_backend as ovb

    def missing():
        raise ImportError("No module named 'openvino'")

    monkeypatch.setattr(ovb, "_ov", missing)
    avail = ovb.probe.__wrapped__()
    assert not avail.available and avail.reason.startswith("openvino not installed (pip install openvino")


def test_inputs_are_checked_against_the_models_metadata(int8_onnx_bundle):
    with open_backend("openvino", OpenRequest(artifact=_onnx(int8_onnx_bundle, "fp32"))) as be:
        assert be.info.precision == "fp32" and be.mode == "ave"
        assert [t.name for t in be.info.inputs] == ["image", "audio"]
        assert be.info.inputs[0].shape == (None, 6, 320, 320) and be.info.extra["inference_precision"] == "f32"
        assert be.info.inputs[1].shape == (None, *AUDIO)
        audio = np.zeros((1, *AUDIO), np.float32)
        with pytest.raises(BackendError, match=r"input 'image' has shape \[1, 6, 320, 32\]"):
            be.infer(np.zeros((1, 6, 320, 32), np.float32), audio)
        with pytest.raises(BackendError, match="must be float32"):
            be.infer(np.zeros((1, 6, 320, 320)), audio)


def test_refuses_a_model_off_the_contract(tmp_path, int8_onnx_bundle):
    import onnx

    model = onnx.load(str(_onnx(int8_onnx_bundle, "int8")))
    old = model.graph.input[0].name
    model.graph.input[0].name = "pixels"
    for n in model.graph.node:
        n.input[:] = ["pixels" if i == old else i for i in n.input]
    onnx.save(model, str(tmp_path / "renamed.onnx"))
    with pytest.raises(BackendError, match=r"do not follow the contract"):
        open_backend("openvino", OpenRequest(artifact=tmp_path / "renamed.onnx"))


def test_runs_int8_and_auto_picks_it_only_for_int8(int8_onnx_bundle):
    with open_backend("openvino", OpenRequest(bundle=int8_onnx_bundle, precision="int8")) as be:
        assert be.info.precision == "int8" and "quantization" in be.info.extra
        rng = np.random.default_rng(0)
        out = be.infer(rng.random((2, 6, 320, 320), dtype=np.float32),
                       np.abs(rng.standard_normal((2, *AUDIO))).astype(np.float32) * 0.5)
        assert out.shape == (2, 3, 320, 320) and out.dtype == np.float32 and 0 <= out.min() <= out.max() <= 1
    assert resolve_auto(OpenRequest(bundle=int8_onnx_bundle, precision="int8")) == "openvino"
    assert resolve_auto(OpenRequest(bundle=int8_onnx_bundle, precision="fp32")) == "ort-cpu"
    # ort-cpu runs the bundle's int8 artifact when named, and computes what OpenVINO's int8 kernels compute, give
    # or take the rounding of their requantization
    with open_backend("ort-cpu", OpenRequest(bundle=int8_onnx_bundle, precision="int8")) as ort, \
            open_backend("openvino", OpenRequest(bundle=int8_onnx_bundle, precision="int8")) as ov:
        assert ort.info.precision == "int8"
        image = rng.random((1, 6, 320, 320), dtype=np.float32)
        audio = np.abs(rng.standard_normal((1, *AUDIO))).astype(np.float32) * 0.5
        a, b = ort.infer(image, audio), ov.infer(image, audio)
        assert a.shape == b.shape and float(np.abs(a - b).mean()) < 0.02


@pytest.mark.slow
def test_fp32_and_fp16_parity(int8_onnx_bundle, generator_ckpt, prepared_template, parity_features):
    from framegen.toolkit.parity.engine import Candidate, run_parity

    report = run_parity(int8_onnx_bundle, generator_ckpt, prepared_template, parity_features,
                        candidates=[Candidate("openvino", "fp32"), Candidate("openvino", "fp16")], frames=3,
                        silence_frames=1, tolerances="fixed", locate=False)
    assert report.passed, report.failures()
    assert [c.profile for c in report.candidates] == ["fp32", "fp16"]
    assert all(c.frames == 4 for c in report.candidates)
    out32 = next(s for s in report.candidates[0].stages if s.stage == "model_output")
    assert out32.metrics["max_abs"] < 1e-4  # fp32 compute, not bf16: OpenVINO's precision hint is pinned


def test_bf16_is_offered_only_where_the_cpu_has_bf16_units(int8_onnx_bundle, monkeypatch):
    """bf16 runs the bundle's fp32 artifact with OpenVINO's bf16 hint; a CPU without bf16 units is told why not."""
    from framegen.runtimes import artifacts
    from framegen.runtimes.native import PrecisionUnits, cpu_units
    from framegen.runtimes.registry import get_spec

    spec = get_spec("openvino")
    req = OpenRequest(bundle=int8_onnx_bundle, precision="bf16")
    if not cpu_units("bf16").native:
        assert "no bf16 units" in artifacts.artifact_problem(spec, req)
        pytest.skip("this CPU has no bf16 units")
    assert artifacts.artifact_problem(spec, req) is None
    with open_backend("openvino", req) as be:
        assert be.info.precision == "bf16" and be.info.extra["inference_precision"] == "bf16"
        assert be.info.extra["artifact"] == str(_onnx(int8_onnx_bundle, "fp32"))
    monkeypatch.setattr(artifacts, "cpu_units",
                        lambda p: PrecisionUnits(p, False, (), f"{p}: this CPU has no {p} units (none of x)"))
    assert artifacts.artifact_problem(spec, req) == "bf16: this CPU has no bf16 units (none of x)"


@pytest.mark.slow
def test_bf16_judged_by_limits_derived_from_the_checkpoint(int8_onnx_bundle, generator_ckpt, prepared_template,
                                                          parity_features, tmp_path):
    """OpenVINO's bf16 and its PyTorch twin (CPU autocast) pass limits derived from an emulated bf16 execution of the
    checkpoint; the same bf16 compute of a bundle that ignores the audio fails them. (A 1-2 % scale of the output
    convolution hides inside bf16's own rounding noise: docs/PARITY.md.)"""
    from faults import DRIFTS, drifted_bundle
    from framegen.runtimes.native import cpu_units
    from framegen.toolkit.parity.engine import Candidate, run_parity

    if not cpu_units("bf16").native:
        pytest.skip("this CPU has no bf16 units")
    cands = [Candidate("openvino", "bf16"), Candidate("torch-cpu", "bf16")]
    report = run_parity(int8_onnx_bundle, generator_ckpt, prepared_template, parity_features, candidates=cands,
                        frames=3, silence_frames=1, locate=False)
    assert report.passed, report.failures()
    assert [c.profile for c in report.candidates] == ["derived-bf16", "derived-bf16"]
    out = next(s for s in report.candidates[0].stages if s.stage == "model_output")
    assert 1e-3 < out.metrics["max_abs"] < out.limits["max_abs"]  # bf16 compute, judged as such
    layer, edit = DRIFTS["audio ignored"]
    bad = drifted_bundle(int8_onnx_bundle, tmp_path / "audio_ignored", layer, edit, generator_ckpt,
                         formats=("onnx",), select=lambda a: a.precision == "fp32")
    broken = run_parity(bad, generator_ckpt, prepared_template, parity_features, candidates=cands[:1], frames=2,
                        silence_frames=0, locate=False)
    assert not broken.passed


@pytest.mark.slow
def test_bench_table_from_one_run(int8_onnx_bundle, synth_template_dir):
    from framegen.toolkit.export.compress import bench_compressed

    report = bench_compressed(int8_onnx_bundle, template=synth_template_dir, e2e_frames=3, seconds=0.5, rounds=1)
    cells = {(r["backend"], r["precision"]): r for r in report["rows"]}
    assert set(cells) == {("ort-cpu", "fp32"), ("ort-cpu", "int8"), ("openvino", "fp32"), ("openvino", "int8")}
    base = cells[("ort-cpu", "fp32")]
    assert base["model_speedup"] == 1.0 and base["size_ratio"] == 1.0
    for r in cells.values():
        assert r["model_fps"] > 0 and r["e2e_fps"] > 0 and r["e2e_frames"] == 3
        assert r["model_speedup"] == pytest.approx(r["model_fps"] / base["model_fps"], rel=0.01)
    assert cells[("openvino", "int8")]["size_ratio"] < 0.30
