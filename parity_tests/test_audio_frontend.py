"""The exported audio front-end (``audio_frontend``: PCM -> mel, ``audio_features``: PCM -> 'ave' features) against
framegen's own numpy mel and features, through ONNX Runtime and the coreml-mil verifier, on audio that export
validation and the rest of the suite never use; and export refusing a front-end whose mel filter bank was altered."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from conftest import fixtures_dir
from framegen.models.audio_frontend import (
    MAX_MEL_FRAMES,
    integer_window_count,
    reference_window_count,
    short_counts,
)
from framegen.toolkit.export.validate_frontend import (
    FEATURES_MAX_REL,
    MEL_MAX_ABS,
    compare,
    hann_window,
    open_runner,
    run_features,
    run_frontend,
    stream_features,
)
from framegen.toolkit.inputs.audio import ave_features, melspectrogram, torch_encoder_fn
from framegen.toolkit.inputs.speech import harmonic_speech

FORMATS = ("onnx", "coreml")
SUFFIX = {"onnx": ".onnx", "coreml": ".mlpackage"}


def _artifact(bundle, kind, fmt):
    return bundle / f"{kind}.fp32{SUFFIX[fmt]}"


def _speech_or_synthetic(start_s: float, samples: int, seed: int) -> np.ndarray:
    """A stretch of the real speech clip the validation signals do not use (it takes the first 9.4 s and 1.0-1.3 s),
    or synthetic speech with a seed validation does not use."""
    base = fixtures_dir()
    if base is not None and (base / "speech_16k_mono.wav").is_file():
        from framegen.toolkit.inputs.audio import decode_audio

        x = decode_audio(base / "speech_16k_mono.wav")
        a = int(start_s * 16000)
        if x.shape[0] >= a + samples:
            return np.ascontiguousarray(x[a:a + samples])
    return harmonic_speech(samples, seed=seed)


def _chirp(samples: int, amp: float = 0.7) -> np.ndarray:
    t = np.arange(samples) / 16000
    f = 40 + (7900 - 40) * t / t[-1]
    return (amp * np.sin(2 * np.pi * np.cumsum(f) / 16000)).astype(np.float32)


# Unseen audio: lengths off the 200-sample grid, a chirp through the whole band, quiet and clipped speech, a tone
# beating against DC, and lengths whose mel frame count T hits the float64 window-count quirk (T = 672, 1328).
MEL_CASES = {
    "speech_20s": lambda: _speech_or_synthetic(20.0, 27_345, seed=101),
    "chirp": lambda: _chirp(31_999),
    "quiet_speech": lambda: _speech_or_synthetic(31.5, 8_123, seed=102) * np.float32(0.01),
    "clipped_speech": lambda: np.clip(_speech_or_synthetic(12.0, 12_001, seed=103) * 6, -1, 1).astype(np.float32),
    "tone_dc": lambda: (0.4 + 0.5 * np.sin(2 * np.pi * 97 * np.arange(9_999) / 16000)).astype(np.float32),
    "min_length": lambda: _speech_or_synthetic(40.0, 3_000, seed=104),
}
FEATURE_CASES = {
    "speech_T672": lambda: _speech_or_synthetic(15.0, 134_321, seed=105),  # T = 672: count rounds down
    "speech_T385": lambda: _speech_or_synthetic(25.0, 76_800, seed=106),
    "chirp_T1328": lambda: _chirp(265_400, amp=0.9),
    "min_length": lambda: _speech_or_synthetic(40.0, 3_000, seed=104),
}


@pytest.fixture(scope="module")
def mel_cases():
    return {k: f() for k, f in MEL_CASES.items()}


@pytest.fixture(scope="module")
def feature_cases(audio_encoder):
    encode = torch_encoder_fn(audio_encoder)
    out = {}
    for k, f in FEATURE_CASES.items():
        x = f()
        out[k] = (x, ave_features(melspectrogram(x), encode))
    return out


# ------------------------------------------------------------------------------------------------ framing rules

def test_window_count_rule_matches_the_float64_reference_up_to_the_limit():
    table = set(short_counts().tolist())
    t = np.arange(16, 60_001)
    graph = np.array([integer_window_count(int(v)) - (int(v) in table) for v in t])
    ref = np.array([reference_window_count(int(v)) for v in t])
    assert np.array_equal(graph, ref)
    assert {384, 672, 752, 1328} <= table and 385 not in table
    assert max(table) <= MAX_MEL_FRAMES and all((v - 16) % 16 == 0 for v in table)


def test_the_stft_window_is_the_numpy_mels():
    from framegen.toolkit.inputs.audio import _hann

    assert np.abs(hann_window() - _hann()).max() < 1e-15


# ------------------------------------------------------------------------------------------------------- bundle

def test_bundle_lists_validated_fp32_artifacts_with_contract_metadata(frontend_bundle):
    from framegen.models.bundle import load_bundle

    b = load_bundle(frontend_bundle)
    b.verify()
    got = sorted((a.model, a.format, a.precision) for a in b.artifacts)
    assert got == sorted((k, f, "fp32") for k in ("audio_frontend", "audio_features") for f in FORMATS)
    for a in b.artifacts:
        record = a.validation
        assert record.kind == "frontend" and record.passed and all(c.passed for c in record.checks)
        v = record.details
        assert set(v["signals"]) == {"speech", "silence", "square", "white_noise", "clip_0.3s", "clip_60s"}
        assert v["signals"]["clip_60s"]["samples"] == 960_000
        for s in v["signals"].values():
            assert s["max_abs_err" if a.model == "audio_frontend" else "max_rel_err"] <= 1e-4
    import onnx

    meta = {e.key: e.value for e in onnx.load(str(_artifact(frontend_bundle, "audio_features", "onnx"))).metadata_props}
    assert meta["model"] == "audio_features" and meta["precision"] == "fp32"
    assert json.loads(meta["audio_frontend"])["audio_features"]["inputs"]["pcm"]["shape"] == ["samples"]


# -------------------------------------------------------------------------------------------------- numbers

@pytest.mark.parametrize("fmt", FORMATS)
def test_mel_equals_framegens_on_unseen_audio(frontend_bundle, mel_cases, fmt):
    run = open_runner(_artifact(frontend_bundle, "audio_frontend", fmt), fmt)
    for name, x in mel_cases.items():
        want = melspectrogram(x)
        got = run_frontend(run, x)
        assert got.shape == (1 + x.shape[0] // 200, 80), name
        errs = compare("audio_frontend", got, want)
        assert errs["max_abs_err"] <= MEL_MAX_ABS, (name, errs)
        assert float(np.std(want)) > 0.1, name  # the case exercises the mel (not a constant)
    # One batch of three equal-length clips: every row is its own clip's mel.
    xs = np.stack([mel_cases["chirp"][:9_999], mel_cases["tone_dc"], mel_cases["speech_20s"][:9_999]])
    got = np.asarray(run({"pcm": xs})["mel"])
    for i in range(3):
        assert compare("audio_frontend", got[i], melspectrogram(xs[i]))["max_abs_err"] <= MEL_MAX_ABS


@pytest.mark.parametrize("fmt", FORMATS)
def test_features_equal_framegens_on_unseen_audio(frontend_bundle, feature_cases, fmt):
    run = open_runner(_artifact(frontend_bundle, "audio_features", fmt), fmt)
    for name, (x, want) in feature_cases.items():
        got = run_features(run, x)
        t = 1 + x.shape[0] // 200
        assert got.shape == want.shape == (reference_window_count(t) + 2, 512), name
        errs = compare("audio_features", got, want)
        assert errs["max_rel_err"] <= FEATURES_MAX_REL, (name, errs)
        np.testing.assert_array_equal(got[0], got[1])  # repeated first and last embedding
        np.testing.assert_array_equal(got[-1], got[-2])


def test_live_chunks_with_the_documented_overlap_equal_one_call(frontend_bundle, feature_cases):
    """docs/PORTS.md's streaming rule (toolkit.validate_frontend.stream_features) against one call on the clip."""
    run = open_runner(_artifact(frontend_bundle, "audio_features", "onnx"), "onnx")

    def call(x):
        return run_features(run, x)

    for name in ("speech_T672", "min_length"):
        x, want = feature_cases[name]
        for blocks in (1, 4):
            got = stream_features(call, x, blocks)
            assert got.shape == want.shape, (name, blocks)
            assert compare("audio_features", got, want)["max_rel_err"] <= FEATURES_MAX_REL, (name, blocks)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_features_on_a_long_unseen_clip(frontend_bundle, audio_encoder, fmt):
    """75 s (not the 60 s of export validation): ~1870 windows, the end-of-audio shift far from the start."""
    x = np.concatenate([_chirp(400_000, amp=0.5), _speech_or_synthetic(2.0, 800_000, seed=107)])
    want = ave_features(melspectrogram(x), torch_encoder_fn(audio_encoder))
    got = run_features(open_runner(_artifact(frontend_bundle, "audio_features", fmt), fmt), x)
    assert got.shape == want.shape
    assert compare("audio_features", got, want)["max_rel_err"] <= FEATURES_MAX_REL


# --------------------------------------------------------------------------------------------------- refusal

def test_export_refuses_a_frontend_with_an_altered_mel_filter_bank(tmp_path, encoder_ckpt):
    """One of the 80 filters 0.1 % too strong: the mel moves by ~7e-4 in that band, the export fails, nothing is
    left (neither the bundle nor a temporary directory)."""
    from framegen.exporters.errors import ExportValidationError
    from framegen.models.audio_frontend import AudioFrontend
    from framegen.toolkit.export.frontend import export_audio_frontend
    from framegen.toolkit.inputs.audio import mel_basis

    basis = mel_basis().copy()
    basis[40] *= np.float32(1.001)
    bad = AudioFrontend(basis, hann_window())
    out = tmp_path / "fe"
    with pytest.raises(ExportValidationError, match=r"audio_frontend\.fp32\.onnx: validation failed: .*mel differs"):
        export_audio_frontend(encoder_ckpt, out, formats=("onnx",), frontend=bad)
    assert list(tmp_path.iterdir()) == []


def _cli(monkeypatch, *args: str) -> int:
    from framegen.toolkit.cli import main

    monkeypatch.setattr(sys, "argv", ["framegen", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return int(exc.value.code or 0)


def test_cli_audio_frontend_needs_the_encoder(monkeypatch, capsys, tmp_path, generator_ckpt):
    out = tmp_path / "bundle"
    code = _cli(monkeypatch, "export", str(generator_ckpt), "-o", str(out), "-f", "onnx", "-p", "fp32",
                "--audio-frontend")
    err = capsys.readouterr().err
    assert code == 2 and "needs --audio-encoder" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cli_export_adds_the_frontend_to_a_bundle(monkeypatch, capsys, tmp_path, generator_ckpt, encoder_ckpt):
    from framegen.models.bundle import load_bundle

    out = tmp_path / "bundle"
    code = _cli(monkeypatch, "export", str(generator_ckpt), "-o", str(out), "-e", str(encoder_ckpt), "-f", "onnx",
                "-p", "fp32", "--audio-frontend")
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    b = load_bundle(out)
    assert b.has("audio_frontend", "onnx", "fp32") and b.has("audio_features", "onnx", "fp32")
    assert b.has("generator", "onnx", "fp32") and "audio_features.fp32.onnx" in captured.out


# ------------------------------------------------------------------------------------------- parity and golden

def test_parity_stages_mel_and_features_pass_and_catch_an_altered_filter_bank(frontend_bundle, encoder_ckpt,
                                                                              tmp_path):
    import shutil

    import onnx
    from framegen.toolkit.parity.frontend import frontend_parity
    from onnx import numpy_helper

    x = _speech_or_synthetic(33.0, 20_123, seed=108)
    results = frontend_parity(frontend_bundle, x, encoder_ckpt)
    assert [r.label for r in results] == ["ort-cpu:fp32:audio", "coreml-mil:fp32:audio"]
    for r in results:
        assert r.passed, r.failures()
        assert [s.stage for s in r.stages] == ["mel", "features"]
        assert r.stages[0].metrics["max_abs"] <= MEL_MAX_ABS

    # The same bundle with one mel filter of the ONNX front-end 0.1 % too strong: parity names the mel stage.
    bad = tmp_path / "bad"
    shutil.copytree(frontend_bundle, bad)
    path = bad / "audio_frontend.fp32.onnx"
    model = onnx.load(str(path))
    init = next(t for t in model.graph.initializer if numpy_helper.to_array(t).shape == (80, 401))
    arr = numpy_helper.to_array(init).copy()
    arr[40] *= np.float32(1.001)
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(path))
    onnx_result = frontend_parity(bad, x)[0]  # without an encoder: the mel stage only
    assert [s.stage for s in onnx_result.stages] == ["mel"]
    assert not onnx_result.passed and "mel" in onnx_result.failures()[0]


def test_golden_pcm_to_mel_stage(frontend_bundle, tmp_path):
    from framegen.toolkit.parity.frontend import check_frontend_golden, write_frontend_golden
    from framegen.toolkit.parity.golden import write_bin
    from framegen.toolkit.parity.golden_check import StageCheck

    golden = tmp_path / "golden"
    entry = write_frontend_golden(golden, _chirp(40_000, amp=0.8))
    index = {"audio_frontend": entry}
    pcm = np.fromfile(golden / entry["pcm"]["file"], dtype="<f4")
    assert pcm.shape == (32_000,)

    # A port that runs the exported front-end passes; one with a filter 0.1 % off fails; none: absent.
    port = tmp_path / "port" / "audio_frontend"
    port.mkdir(parents=True)
    run = open_runner(_artifact(frontend_bundle, "audio_frontend", "onnx"), "onnx")
    write_bin(port / "mel.bin", run_frontend(run, pcm), "float32")
    known: set[str] = set()
    ok = check_frontend_golden(index, golden, port.parent, known, stage_check=StageCheck)
    assert ok.status == "pass" and known == {"audio_frontend/mel.bin"}

    from framegen.models.audio_frontend import AudioFrontend
    from framegen.toolkit.inputs.audio import mel_basis

    basis = mel_basis().copy()
    basis[10] *= np.float32(1.001)
    import torch

    with torch.no_grad():
        wrong = AudioFrontend(basis, hann_window())(torch.from_numpy(pcm)[None])[0].numpy()
    write_bin(port / "mel.bin", wrong, "float32")
    assert check_frontend_golden(index, golden, port.parent, stage_check=StageCheck).status == "FAIL"
    assert check_frontend_golden(index, golden, tmp_path, stage_check=StageCheck).status == "absent"
    assert check_frontend_golden({}, golden, port.parent, stage_check=StageCheck) is None
