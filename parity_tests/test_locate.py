"""Parity's ``layers`` stage and `framegen parity --locate`: every layer of an ONNX or Core ML artifact against the
PyTorch module, and the first one outside its expected error named by its state_dict module path.

One weight tensor is scaled by 2 % in an early, a middle and a late convolution of ONNX fp32, ONNX fp16 and Core ML
fp32 artifacts (through the coreml-mil verifier), and in a middle one of the fp16 image-I/O variants; each time
exactly that layer must be named, and the clean artifact must have none outside.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from faults import conv_index, drifted_bundle, edit_mil_conv, edit_onnx_conv, scale, zero_weight
from framegen.toolkit.cli import app
from typer.testing import CliRunner

LAYERS = {
    "early": "inc.inconv.0.conv.3",  # the stem's depthwise conv (BatchNorm folded into it)
    "middle": "fuse_conv.1.double_conv.0.conv.3",  # after the audio branch joins
    "late": "up5.conv.double_conv.0.conv.6",  # the last up block's projection, next to the output
}
KINDS = [("onnx", "fp32"), ("onnx", "fp16"), ("coreml", "fp32")]
# fp16 rounding alone moves the deep 10x10 layers by 1-2 % (accumulated rel. rms), but a layer's own (local) error
# is about 2e-4 in fp16: a 2 % weight error stands out in every kind.
FACTOR = 1.02


@pytest.fixture(scope="module")
def frame_inputs(prepared_template, parity_features):
    from framegen.toolkit.inputs.features import audio_windows

    return prepared_template.prepared(1).image_input(), audio_windows(parity_features, [0], "ave")[0]


@pytest.fixture(scope="module")
def layer_reference(generator_ckpt, frame_inputs):
    """PyTorch's side of every comparison below (the same checkpoint and frame), made once and passed in, as a
    parity run does for all of its artifacts."""
    from framegen.toolkit.parity.layers import torch_reference

    return torch_reference(generator_ckpt, *frame_inputs, "ave")


@pytest.mark.parametrize(("fmt", "precision"), KINDS, ids=[f"{f}-{p}" for f, p in KINDS])
def test_each_scaled_layer_is_named(fmt, precision, bundle_dir, generator_ckpt, frame_inputs, layer_reference,
                                    tmp_path):
    from framegen.models.bundle import load_bundle
    from framegen.toolkit.parity.layers import locate_artifact

    if fmt == "coreml":
        pytest.importorskip("coremltools")
    art = load_bundle(bundle_dir).find("generator", fmt, precision)
    image, audio = frame_inputs
    clean = locate_artifact(generator_ckpt, art.path, fmt, precision, image, audio, mode="ave",
                            reference=layer_reference)
    _assert_clean(clean)
    for where, layer in LAYERS.items():
        copy = tmp_path / f"{where}{art.path.suffix}"
        (shutil.copytree if art.path.is_dir() else shutil.copy)(art.path, copy)
        edit = edit_onnx_conv if fmt == "onnx" else edit_mil_conv
        edit(copy, conv_index(generator_ckpt, layer, "ave"), scale(FACTOR))
        _assert_named(locate_artifact(generator_ckpt, copy, fmt, precision, image, audio, mode="ave",
                                      reference=layer_reference), layer)


def _assert_clean(clean):
    assert clean.error is None and len(clean.layers) > 90, clean.error
    assert clean.first_divergence is None, clean.first_divergence
    # Every layer's error is below its limit, and real (not a comparison of a thing with itself).
    assert all(r.passed for r in clean.layers)
    assert sum(r.local_rel_rms > 0 for r in clean.layers) > 0.9 * len(clean.layers)
    assert {r.kind for r in clean.layers} == {"conv", "upsample"}
    # The limits are derived per layer: the largest is not the smallest times a constant.
    limits = [r.local_limit for r in clean.layers]
    assert max(limits) > 2 * min(limits)


def _assert_named(result, layer):
    fd = result.first_divergence
    assert fd is not None and fd["layer"] == layer, (layer, fd, result.error)
    assert fd["metric"] == "local_rel_rms" and fd["value"] > 2 * fd["limit"]
    row = next(r for r in result.layers if r.layer == layer)
    assert row.local_rel_rms == pytest.approx(FACTOR - 1, rel=0.1)
    # Nothing before it departs, and only it: the comparison is layer by layer, not a replay of the output's error.
    assert [r.layer for r in result.outside] == [layer]


@pytest.mark.parametrize("fmt", ["onnx", "coreml"])
def test_image_io_fp16_variant_names_a_scaled_middle_layer(fmt, image_bundle, generator_ckpt, prepared_template,
                                                           frame_inputs, layer_reference, tmp_path):
    from framegen.toolkit.parity.layers import locate_artifact

    if fmt == "coreml":
        pytest.importorskip("coremltools")
    path = image_bundle.path(fmt, "fp16")
    image, audio = frame_inputs
    crop = np.ascontiguousarray(prepared_template.prepared(1).crop328[4:324, 4:324])
    kw = {"mode": "ave", "io": "image", "crop": crop, "reference": layer_reference}
    _assert_clean(locate_artifact(generator_ckpt, path, fmt, "fp16", image, audio, **kw))
    copy = tmp_path / path.name
    (shutil.copytree if path.is_dir() else shutil.copy)(path, copy)
    layer = LAYERS["middle"]
    (edit_onnx_conv if fmt == "onnx" else edit_mil_conv)(copy, conv_index(generator_ckpt, layer, "ave"),
                                                          scale(FACTOR))
    _assert_named(locate_artifact(generator_ckpt, copy, fmt, "fp16", image, audio, **kw), layer)


def test_cli_locates_automatically_when_an_artifact_fails(bundle_dir, generator_ckpt, synth_template_dir,
                                                         parity_features_path, tmp_path):
    layer = "audio_model.conv1.conv.0"  # the audio branch's first conv, zeroed: the audio input ignored
    broken = drifted_bundle(bundle_dir, tmp_path / "deaf", layer, zero_weight, generator_ckpt, formats=("onnx",),
                            select=lambda a: a.precision == "fp32")
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["parity", "--bundle", str(broken), "--checkpoint", str(generator_ckpt),
                                      "--template", str(synth_template_dir), "--features", str(parity_features_path),
                                      "--backends", "ort-cpu:fp32", "--frames", "1", "--no-progress",
                                      "--json", str(report_path)])
    assert result.exit_code == 1, result.output
    assert "first divergence" in result.output and layer in result.output
    report = json.loads(report_path.read_text())
    (cand,) = report["candidates"]
    fd = cand["first_divergence"]
    assert fd["layer"] == layer and fd["metric"] == "local_rel_rms" and fd["value"] > fd["limit"]
    assert len(cand["locate"]["layers"]) > 90
    stage = next(s for s in cand["stages"] if s["stage"] == "layers")
    assert not stage["passed"] and stage["metrics"]["first_divergence"] == layer, stage
    # The audio branch runs after the whole image encoder: every image layer before it is still exact.
    names = [r["layer"] for r in cand["locate"]["layers"]]
    assert all(r["passed"] for r in cand["locate"]["layers"][:names.index(layer)])
    assert names.index(layer) > names.index("down5.maxpool_conv.0.double_conv.1.conv.6")


def test_locate_refuses_an_artifact_it_cannot_match(generator_ckpt, frame_inputs, tmp_path):
    import onnx
    from framegen.toolkit.parity.layers import locate_artifact
    from onnx import helper

    x = helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1, 6, 320, 320])
    y = helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [1, 6, 320, 320])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["image"], ["output"])], "g", [x], [y]))
    path = tmp_path / "tiny.onnx"
    onnx.save(model, str(path))
    image, audio = frame_inputs
    result = locate_artifact(generator_ckpt, path, "onnx", "fp32", image, np.zeros_like(audio), mode="ave")
    assert result.first_divergence is None and not result.layers
    assert "0 convolution/upsample layers in the artifact" in result.error


def test_an_fp32_only_reference_judges_fp32_alike_and_refuses_fp16(bundle_dir, generator_ckpt, frame_inputs,
                                                                   layer_reference):
    """A parity run with no fp16 candidate skips the fp16 emulation trace: the fp32 verdict is the same, layer for
    layer, and such a reference cannot be used to judge fp16."""
    from framegen.models.bundle import load_bundle
    from framegen.toolkit.parity.layers import locate_artifact, torch_reference

    lean = torch_reference(generator_ckpt, *frame_inputs, "ave", ("fp32",))
    assert set(lean.local) == {"fp32"} and set(layer_reference.local) == {"fp32", "fp16"}
    image, audio = frame_inputs
    fp32 = load_bundle(bundle_dir).find("generator", "onnx", "fp32").path
    a, b = (locate_artifact(generator_ckpt, fp32, "onnx", "fp32", image, audio, mode="ave", reference=r)
            for r in (lean, layer_reference))
    assert a.error is None and [r.as_dict() for r in a.layers] == [r.as_dict() for r in b.layers]
    fp16 = load_bundle(bundle_dir).find("generator", "onnx", "fp16").path
    refused = locate_artifact(generator_ckpt, fp16, "onnx", "fp16", image, audio, mode="ave", reference=lean)
    assert refused.error and "fp16" in refused.error and not refused.layers
