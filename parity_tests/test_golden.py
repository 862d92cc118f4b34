"""Golden vectors for ports: `framegen golden write|check`, and proof that the check locates the drift real ports had
(nearest-neighbour paste-back, ignored audio, precision lost in the outputs, RGB for BGR, rounding for truncation)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT
from framegen.toolkit.cli import app
from framegen.toolkit.parity.golden import STAGE_NAMES, load_index, read_stage
from framegen.toolkit.parity.golden_check import check_golden, copy_candidate
from typer.testing import CliRunner


def _framegen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "toolkit.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)


def _golden(golden: Path, case: dict, stage: str) -> np.ndarray:
    spec = next(s for s in load_index(golden)["stages"] if s["name"] == stage)
    return read_stage(golden / case["files"][stage], spec["dtype"], spec["shape"])


def _failed(report) -> list[str]:
    return [s.name for s in report.stages if s.status == "FAIL"]


def _mantissa(arr: np.ndarray, bits: int, toward_zero: bool = False) -> np.ndarray:
    """float32 values with ``bits`` explicit mantissa bits (fp16 keeps 10, bfloat16 7), rounded to nearest or cut
    toward zero (the cheap float-to-half conversion some ports write): a port that loses output precision."""
    u = np.ascontiguousarray(arr, dtype=np.float32).view(np.uint32).astype(np.uint64)
    drop = 23 - bits
    if not toward_zero:
        u = u + (1 << (drop - 1))
    return (u & ~np.uint64((1 << drop) - 1)).astype(np.uint32).view(np.float32)


# ------------------------------------------------------------------------------------------- writing


def test_layout_index_and_readme(golden_dir, bundle_dir):
    from framegen.models.contract import contract_dict

    index = load_index(golden_dir)
    assert [c["frame"] for c in index["cases"]] == [0, index["feature_frames"] - 1]
    assert [s["name"] for s in index["stages"]] == [n for n in STAGE_NAMES if n not in ("mel_window", "embedding")]
    assert index["contract"] == json.loads(json.dumps(contract_dict(index["mode"])))
    assert index["model_output_from"]["backend"] == "ort-cpu"
    assert set(index["tolerances"]) == {"fp32", "fp16", "image-fp32", "image-fp16"}
    assert index["tolerances"]["fp32"]["landmarks"] == {"max_abs": 0}
    first, last = index["cases"]
    assert first["template_index"] == 1  # SyncTalk_2D's ping-pong starts at template frame 1
    assert first["padding_rows"] == list(range(-8, 0))
    assert last["padding_rows"] == list(range(index["feature_frames"], index["feature_frames"] + 7))
    for case in index["cases"]:
        for s in index["stages"]:
            path = golden_dir / case["files"][s["name"]]
            assert path.stat().st_size == np.prod(s["shape"]) * np.dtype(s["dtype"]).itemsize
        window = _golden(golden_dir, case, "audio_window").reshape(16, -1)
        assert not window[[r + 8 - case["frame"] for r in case["padding_rows"]]].any()
        assert window.any()
        box = _golden(golden_dir, case, "crop_box")
        assert list(box) == case["crop_box"]
    readme = (golden_dir / "README.md").read_text()
    assert "golden check" in readme and "little-endian" in readme and "model_output" in readme


def test_golden_is_what_the_render_pipeline_produces(golden_dir, bundle_dir, prepared_template, parity_features):
    from framegen.runtimes.registry import open_backend
    from framegen.runtimes.spec import OpenRequest
    from framegen.toolkit.frames.render import iter_frames

    case = load_index(golden_dir)["cases"][0]
    with open_backend("ort-cpu", OpenRequest(bundle=bundle_dir, precision="fp32")) as backend:
        (frame,) = list(iter_frames(prepared_template, parity_features, backend, max_frames=1))
    assert frame.i == case["frame"] == 0 and frame.template_index == case["template_index"]
    np.testing.assert_array_equal(frame.frame, _golden(golden_dir, case, "final_frame"))
    np.testing.assert_array_equal(frame.pred, _golden(golden_dir, case, "model_output"))
    np.testing.assert_array_equal(frame.prepared.crop328, _golden(golden_dir, case, "crop_328"))
    np.testing.assert_array_equal(frame.prepared.image_input(), _golden(golden_dir, case, "model_input"))
    masked = _golden(golden_dir, case, "masked_320")
    assert not masked[5:310, 5:315].any() and masked[:5].any()


def test_write_refuses_existing_output_and_bad_inputs(golden_dir, bundle_dir, synth_template_dir, tmp_path,
                                                     parity_features_path):
    proc = _framegen("golden", "write", "--bundle", str(bundle_dir), "--template", str(synth_template_dir),
                     "--features", str(tmp_path / "missing.npy"), "--out", str(tmp_path / "G"))
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "missing.npy" in proc.stderr
    assert not (tmp_path / "G").exists()
    proc = _framegen("golden", "write", "--bundle", str(bundle_dir), "--template", str(synth_template_dir),
                     "--features", str(parity_features_path), "--out", str(golden_dir))
    assert proc.returncode == 2 and "already exists" in proc.stderr


def test_write_from_audio_records_mel_windows_and_embeddings(tmp_path, bundle_dir, synth_template_dir, encoder_ckpt,
                                                             speech_wav, audio_encoder):
    import torch
    from framegen.toolkit.inputs.audio import decode_audio, mel_windows, melspectrogram
    from fx_audio import write_audio

    clip = write_audio(tmp_path / "clip.wav", speech_wav[16000:16000 * 3][None], 16000)
    out = tmp_path / "G"
    result = CliRunner().invoke(app, ["golden", "write", "--bundle", str(bundle_dir), "--template",
                                      str(synth_template_dir), "--audio", str(clip), "--encoder", str(encoder_ckpt),
                                      "--out", str(out), "--cases", "2"])
    assert result.exit_code == 0, result.output
    index = load_index(out)
    assert index["input"] == "audio"
    assert {"mel_window", "embedding"} <= {s["name"] for s in index["stages"]}
    windows = mel_windows(melspectrogram(decode_audio(clip)))
    assert index["feature_frames"] == windows.shape[0] + 2
    for case in index["cases"]:
        mel = _golden(out, case, "mel_window")
        emb = _golden(out, case, "embedding")
        np.testing.assert_array_equal(mel, windows[case["mel_window_index"]])
        with torch.inference_mode():
            again = audio_encoder(torch.from_numpy(mel[None])).numpy()[0]
        np.testing.assert_allclose(again, emb, atol=1e-5)
        # Feature row i sits in the middle of frame i's window (rows i-8 .. i+7).
        np.testing.assert_array_equal(_golden(out, case, "audio_window").reshape(16, 512)[8], emb)
    assert index["cases"][0]["row_mel_windows"][8:10] == [0, 0]  # row 0 repeats window 0, row 1 is window 0
    assert check_golden(out, copy_candidate(out, tmp_path / "C")).passed


# ------------------------------------------------------------------------------------------- checking


def test_golden_accepts_its_own_outputs(golden_dir, tmp_path):
    cand = copy_candidate(golden_dir, tmp_path / "C")
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["golden", "check", str(golden_dir), "--candidate", str(cand), "--json",
                                      str(report_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["passed"] and report["first_departure"] is None
    assert all(s["status"] == "pass" and s["cases"] == 2 for s in report["stages"])


def test_nearest_neighbour_paste_back_departs_at_the_final_frame(golden_dir, tmp_path):
    def paste_nearest(stage, arr, case):
        if stage != "final_frame":
            return arr
        x0, y0, x1, y1 = case["crop_box"]
        out = _golden(golden_dir, case, "frame").copy()
        out[y0:y1, x0:x1] = cv2.resize(_golden(golden_dir, case, "pasted_328"), (x1 - x0, y1 - y0),
                                       interpolation=cv2.INTER_NEAREST)
        return out

    cand = copy_candidate(golden_dir, tmp_path / "C", transform=paste_nearest)
    report = check_golden(golden_dir, cand)
    assert report.first_departure == "final_frame" and _failed(report) == ["final_frame"]
    result = CliRunner().invoke(app, ["golden", "check", str(golden_dir), "--candidate", str(cand)])
    assert result.exit_code == 1
    assert "first departure" in result.output


@pytest.mark.parametrize("window", ["zeros", "constant"])
def test_ignoring_the_audio_departs_at_the_audio_window(golden_dir, bundle_dir, tmp_path, window):
    from framegen.runtimes.registry import open_backend
    from framegen.runtimes.spec import OpenRequest

    index = load_index(golden_dir)
    with open_backend("ort-cpu", OpenRequest(bundle=bundle_dir, precision="fp32")) as backend:
        def port(stage, arr, case):
            audio = np.zeros_like(_golden(golden_dir, case, "audio_window"))
            if window == "constant":
                audio += np.float32(0.4)
            if stage == "audio_window":
                return audio
            if stage == "model_output":
                return backend.infer(_golden(golden_dir, case, "model_input")[None], audio[None])[0]
            return None

        cand = copy_candidate(golden_dir, tmp_path / "C", stages=["audio_window", "model_output"], transform=port)
    report = check_golden(golden_dir, cand)
    assert report.first_departure == "audio_window"
    assert _failed(report) == ["audio_window"]
    # The generator really listens to the audio: its output departs too, blamed on the audio window.
    model = next(s for s in report.stages if s.name == "model_output")
    assert model.status == "inherited" and model.inherited_from == "audio_window"
    assert len(index["cases"]) == 2


def test_precision_lost_in_the_outputs_is_caught(golden_dir, tmp_path):
    def candidate(name, fn):
        return copy_candidate(golden_dir, tmp_path / name, stages=["model_output"], transform=lambda s, a, c: fn(a))

    # Outputs rounded to fp16 pass the fp16 profile; rounded to 7 mantissa bits they are not fp32-grade.
    fp16 = candidate("fp16", lambda a: a.astype(np.float16).astype(np.float32))
    assert check_golden(golden_dir, fp16, profile="fp16").passed
    assert np.array_equal(_mantissa(np.float32([0.1, 0.7]), 10), np.float16([0.1, 0.7]).astype(np.float32))
    bf16 = candidate("bf16", lambda a: _mantissa(a, 7))
    assert check_golden(golden_dir, bf16, profile="fp32").first_departure == "model_output"
    # Cut (not rounded) to 5 bits: inside the fp16 profile's absolute limits (set by fp16 rounding noise), but
    # biased, which rounding noise is not.
    cut = candidate("cut", lambda a: _mantissa(a, 5, toward_zero=True))
    report = check_golden(golden_dir, cut, profile="fp16")
    assert report.first_departure == "model_output"
    (stage,) = [s for s in report.stages if s.name == "model_output"]
    assert any(f.startswith("|bias|") for f in stage.failures), stage.failures


def test_rgb_instead_of_bgr_departs_at_the_crop(golden_dir, tmp_path):
    def rgb(stage, arr, case):
        if stage in ("crop_328", "reference_320", "masked_320", "pred_320", "pasted_328"):
            return arr[..., ::-1]
        if stage == "model_input":
            return arr[[2, 1, 0, 5, 4, 3]]
        return arr

    cand = copy_candidate(golden_dir, tmp_path / "C", stages=["frame", "landmarks", "crop_box", "crop_328",
                                                               "reference_320", "masked_320", "model_input"],
                          transform=rgb)
    report = check_golden(golden_dir, cand)
    assert report.first_departure == "crop_328"
    # Later stages are consistent with the port's own crop: only the stage that is wrong fails, but the table shows
    # how far the swap carried them from the golden values.
    assert _failed(report) == ["crop_328"]
    later = {s.name: s for s in report.stages}
    assert later["model_input"].status == "pass" and later["model_input"].vs_golden["max_abs"] > 0.1


def test_rounding_instead_of_truncation_departs_at_the_prediction(golden_dir, tmp_path):
    def rounded(stage, arr, case):
        out = _golden(golden_dir, case, "model_output")
        return np.clip(np.rint(out.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)

    cand = copy_candidate(golden_dir, tmp_path / "C", stages=["model_output", "pred_320"],
                          transform=lambda s, a, c: a if s == "model_output" else rounded(s, a, c))
    for profile in ("fp32", "fp16"):
        report = check_golden(golden_dir, cand, profile=profile)
        assert report.first_departure == "pred_320", profile


def test_a_one_level_resampling_difference_is_tolerated_but_a_shifted_box_is_not(golden_dir, tmp_path):
    rng = np.random.default_rng(0)

    def jitter(stage, arr, case):
        noise = (rng.random(arr.shape) < 0.002).astype(np.int16)
        return np.clip(arr.astype(np.int16) + noise, 0, 255).astype(np.uint8)

    cand = copy_candidate(golden_dir, tmp_path / "jitter", stages=["crop_328"], transform=jitter)
    assert check_golden(golden_dir, cand).passed
    shifted = copy_candidate(golden_dir, tmp_path / "shift", stages=["crop_box"], transform=lambda s, a, c: a + 1)
    report = check_golden(golden_dir, shifted)
    assert report.first_departure == "crop_box"


def test_bad_candidates(golden_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _framegen("golden", "check", str(golden_dir), "--candidate", str(empty))
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "no golden stage" in proc.stderr
    assert "Traceback" not in proc.stderr
    short = copy_candidate(golden_dir, tmp_path / "short", stages=["model_output"])
    case0 = load_index(golden_dir)["cases"][0]
    path = short / case0["files"]["model_output"]
    path.write_bytes(path.read_bytes()[:-4])
    report = check_golden(golden_dir, short)
    assert report.first_departure == "model_output"
    stage = next(s for s in report.stages if s.name == "model_output")
    assert any("bytes, expected" in f for f in stage.failures)
    proc = _framegen("golden", "check", str(tmp_path), "--candidate", str(short))
    assert proc.returncode == 2 and "not a golden directory" in proc.stderr
    shutil.rmtree(short)


def _port_with_own_crops(golden_dir: Path, bundle_dir: Path, out: Path, *, share: float,
                         model_gain: float = 1.0) -> Path:
    """A port that decodes and crops like the golden except that its cubic resize is one level off on ``share`` of
    the crop's values, and that computes every later stage correctly from its own values (the model: the bundle's
    fp32 ONNX on its own model input, scaled by ``model_gain`` to plant a wrong model)."""
    from framegen.models.contract import audio_shape
    from framegen.runtimes.registry import open_backend
    from framegen.runtimes.spec import OpenRequest
    from framegen.toolkit.parity.golden import write_bin
    from framegen.toolkit.parity.golden_check import recompute

    index = load_index(golden_dir)
    specs = {s["name"]: s for s in index["stages"]}
    rng = np.random.default_rng(11)
    with open_backend("ort-cpu", OpenRequest(bundle=bundle_dir, precision="fp32", mode=index["mode"])) as model:
        for case in index["cases"]:
            vals: dict[str, np.ndarray] = {}

            def get(name: str, case=case, vals=vals) -> np.ndarray:
                return vals[name] if name in vals else _golden(golden_dir, case, name)

            for name in STAGE_NAMES:
                if name not in case["files"]:
                    continue
                if name == "crop_328":
                    crop = get(name).astype(np.int16)
                    off = rng.random(crop.shape) < share
                    vals[name] = np.clip(crop + off, 0, 255).astype(np.uint8)
                elif name == "model_output":
                    audio = get("audio_window").reshape(1, *audio_shape(index["mode"]))
                    vals[name] = np.clip(model.infer(get("model_input")[None], audio)[0] * model_gain, 0, 1)
                else:
                    value = recompute(name, get)
                    vals[name] = get(name) if value is None else value
                (out / case["files"][name]).parent.mkdir(parents=True, exist_ok=True)
                write_bin(out / case["files"][name], vals[name], specs[name]["dtype"])
    return out


def test_the_model_is_judged_on_the_ports_own_input(golden_dir, bundle_dir, tmp_path):
    """A port whose resize is one level off on 1 % of values: with --bundle every stage passes (each judged on the
    port's own input) while the distance to the golden values is still reported; without it the check blames the
    model, and says how to avoid that. A wrong model (x1.02) fails at model_output either way."""
    port = _port_with_own_crops(golden_dir, bundle_dir, tmp_path / "port", share=0.01)
    local = check_golden(golden_dir, port, bundle=bundle_dir)
    assert local.passed, [(s.name, s.failures) for s in local.stages if s.failures]
    model_stage = next(s for s in local.stages if s.name == "model_output")
    assert model_stage.metrics["max_abs"] < 1e-4 < model_stage.vs_golden["max_abs"]
    old = check_golden(golden_dir, port)
    assert old.first_departure == "model_output" and any("--bundle" in n for n in old.notes)
    wrong = _port_with_own_crops(golden_dir, bundle_dir, tmp_path / "wrong", share=0.01, model_gain=1.02)
    assert check_golden(golden_dir, wrong, bundle=bundle_dir).first_departure == "model_output"
    result = CliRunner().invoke(app, ["golden", "check", str(golden_dir), "--candidate", str(port), "--bundle",
                                      str(bundle_dir)])
    assert result.exit_code == 0, result.output
