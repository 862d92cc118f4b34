"""Self-contained bundles: features from the bundle's own exported audio encoder (no ``--encoder``), and parity of
the exported encoders against the PyTorch checkpoint (stage ``embedding``), which catches an altered one."""

from __future__ import annotations

import shutil

import numpy as np
import pytest


@pytest.fixture(scope="session")
def short_speech(tmp_path_factory, speech_wav):
    """3 s of the speech clip (real speech when ../shared is there) as a 16 kHz WAV."""
    from framegen.toolkit.demo import write_wav

    return write_wav(tmp_path_factory.mktemp("speech") / "speech3s.wav", np.asarray(speech_wav[: 3 * 16000]))


def test_exported_encoders_agree_with_pytorch_and_an_altered_one_fails(bundle_dir, encoder_ckpt, short_speech,
                                                                        tmp_path):
    import onnx
    from framegen.models.bundle import load_bundle, sha256_path
    from framegen.toolkit.inputs.audio import decode_audio, mel_windows, melspectrogram
    from framegen.toolkit.parity.encoder import LIMITS, encoder_parity
    from onnx import numpy_helper

    windows = mel_windows(melspectrogram(decode_audio(short_speech)))
    results = encoder_parity(load_bundle(bundle_dir), windows, encoder_ckpt)
    labels = {r.candidate.label for r in results}
    assert {"ort-cpu:fp32:encoder", "ort-cpu:fp16:encoder", "coreml-mil:fp32:encoder",
            "coreml-mil:fp16:encoder"} <= labels
    for r in results:
        assert r.passed, (r.candidate.label, r.error, [s.failures for s in r.stages])
        got = r.stages[0].metrics
        if r.candidate.precision == "fp32":
            assert got["max_rel"] < LIMITS["fp32"]["max_rel"]
        else:
            assert 1e-4 < got["max_abs"] < LIMITS["fp16"]["max_abs"]  # really computed in fp16, within the limit

    # One weight of the ONNX fp32 encoder scaled by 1 %: its embeddings depart and parity names it.
    broken = tmp_path / "broken"
    shutil.copytree(bundle_dir, broken)
    path = broken / "audio_encoder.fp32.onnx"
    model = onnx.load(path)
    init = next(t for t in model.graph.initializer if numpy_helper.to_array(t).ndim == 4)
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(1.01), init.name))
    onnx.save(model, path)
    bundle = load_bundle(broken)
    assert sha256_path(path) != next(a for a in bundle.artifacts if a.path == path).entry["sha256"]
    bad = {r.candidate.label: r for r in encoder_parity(bundle, windows, encoder_ckpt)}
    assert not bad["ort-cpu:fp32:encoder"].passed and bad["coreml-mil:fp32:encoder"].passed


def test_parity_from_audio_with_the_bundles_own_encoder(bundle_dir, encoder_ckpt, generator_ckpt, short_speech,
                                                        prepared_template):
    """--bundle B --audio A with no --encoder: features from the bundle's ONNX fp32 encoder, as render and stream
    compute them; with the checkpoint, parity adds the encoder artifacts' own check."""
    from framegen.toolkit.parity.engine import parity_job
    from framegen.toolkit.parity.inputs import resolve_audio_input

    own = resolve_audio_input("ave", None, short_speech, None, bundle=bundle_dir)
    ref = resolve_audio_input("ave", None, short_speech, encoder_ckpt)
    assert own.source["encoder_kind"] == "artifact" and "audio_encoder.fp32.onnx" in own.source["embedding_from"]
    assert own.features.shape == ref.features.shape
    assert np.abs(own.features - ref.features).max() <= 1e-4 * np.abs(ref.features).max()
    report = parity_job(bundle=bundle_dir, checkpoint=generator_ckpt, template=prepared_template, audio=short_speech,
                        encoder=encoder_ckpt, backends="ort-cpu:fp32", frames=1, silence_frames=0,
                        tolerances="fixed")
    labels = {c.label for c in report.candidates}
    assert "ort-cpu:fp32" in labels and "ort-cpu:fp32:encoder" in labels and report.passed, report.failures()
