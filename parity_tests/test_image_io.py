"""Image-I/O generator variants (issue 10): uint8 BGR crop in, uint8 BGR prediction out, for ONNX and Core ML.

The variants are exported once per session from conftest's calibrated generator; every comparison uses crops of the
synthetic template (on the real landmark track when ../shared is there) and real-looking audio windows, against the
reference float pipeline ``pred_to_uint8(torch fp32 module(model_input(crop)))``.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from framegen.exporters.errors import ExportValidationError
from framegen.exporters.image_io import METADATA_KEY, wrap_onnx_generator
from framegen.models.contract import GEN_AUDIO, GEN_IMAGE, GEN_OUTPUT, INNER_SIZE
from framegen.models.validation import ValidationRecord
from framegen.runtimes.base import BackendError
from framegen.toolkit.compare.profiles import FINAL_FRAME, MODEL_OUTPUT, get_profile
from framegen.toolkit.export.validate_image import LIMITS, compare_uint8, reference_uint8, validate_image_artifact

ct = pytest.importorskip("coremltools")


def _image_model(path):
    """An image-I/O artifact file opened like any backend: through the registry, with io='image'."""
    from framegen.runtimes.registry import open_backend
    from framegen.runtimes.spec import OpenRequest

    name = "coreml-mil" if str(path).endswith(".mlpackage") else "ort-cpu"
    return open_backend(name, OpenRequest(artifact=path, io="image"))

FRAMES = (0, 1, 2)  # output frames: template frames 1-3 (ping-pong), audio windows from zero-padded to nearly full


@pytest.fixture(scope="session")
def crops(prepared_template, parity_features):
    """Three real-looking 320x320 reference crops (uint8 BGR) with their audio windows and the reference
    pipeline's uint8 predictions."""
    from framegen.toolkit.inputs.features import audio_windows

    ref = np.stack([prepared_template.prepared(prepared_template.template_index(i)).crop328[4:324, 4:324]
                    for i in FRAMES])
    audio = audio_windows(parity_features, list(FRAMES), "ave")
    return SimpleNamespace(ref=np.ascontiguousarray(ref), audio=audio)


@pytest.fixture(scope="session")
def expected(calibrated_generator, crops):
    """``pred_to_uint8`` of the PyTorch fp32 module on ``model_input`` of each crop."""
    return reference_uint8(calibrated_generator, crops.ref, crops.audio)


def _ort(blob_or_path):
    import onnxruntime as ort

    src = blob_or_path if isinstance(blob_or_path, bytes) else str(blob_or_path)
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------------------------------- ONNX

def test_onnx_variant_takes_and_returns_uint8_nhwc_bgr_with_the_contract_metadata(image_bundle):
    import onnx
    from framegen.models.metadata import contract_json

    for prec in ("fp32", "fp16"):
        s = _ort(image_bundle.path("onnx", prec))
        assert [(i.name, i.type, i.shape) for i in s.get_inputs()] == [
            (GEN_IMAGE, "tensor(uint8)", ["batch", INNER_SIZE, INNER_SIZE, 3]),
            (GEN_AUDIO, "tensor(float)", ["batch", 32, 16, 16])]
        assert [(o.name, o.type, o.shape) for o in s.get_outputs()] == [
            (GEN_OUTPUT, "tensor(uint8)", ["batch", INNER_SIZE, INNER_SIZE, 3])]
        meta = {p.key: p.value for p in onnx.load(str(image_bundle.path("onnx", prec))).metadata_props}
        assert meta["io"] == "image" and meta["precision"] == prec and meta["mode"] == "ave"
        assert meta["contract"] == contract_json("ave")  # the tensor artifacts' contract, unchanged
        semantics = json.loads(meta[METADATA_KEY])
        image = semantics["inputs"][GEN_IMAGE]
        assert (image["dtype"], image["layout"], image["channels"]) == ("uint8", "NHWC", "BGR")
        assert len(meta["source_sha256"]) == 64


def test_onnx_preprocessing_and_truncation_inside_the_graph_are_bit_exact(image_bundle, crops):
    """The graph's own 6-plane generator input equals ``model_input`` bit for bit (float32 /255, mask, concat), and
    its uint8 output equals ``pred_to_uint8`` of its own float generator output: the wrapper adds no error."""
    import onnx
    from framegen.models.pixels import model_input, pred_to_uint8
    from onnx import TensorProto, helper

    model = onnx.load(str(image_bundle.path("onnx", "fp32")))
    model.graph.output.extend([
        helper.make_tensor_value_info("model_image", TensorProto.FLOAT, ["batch", 6, INNER_SIZE, INNER_SIZE]),
        helper.make_tensor_value_info("model_output", TensorProto.FLOAT, ["batch", 3, INNER_SIZE, INNER_SIZE])])
    out, image, pred = _ort(model.SerializeToString()).run(None, {GEN_IMAGE: crops.ref, GEN_AUDIO: crops.audio})
    for j in range(len(FRAMES)):
        crop328 = np.zeros((328, 328, 3), np.uint8)
        crop328[4:324, 4:324] = crops.ref[j]
        np.testing.assert_array_equal(image[j], model_input(crop328))
        np.testing.assert_array_equal(out[j], pred_to_uint8(pred[j]))


@pytest.mark.parametrize("prec", ["fp32", "fp16"])
def test_onnx_variant_equals_pred_to_uint8_of_the_tensor_artifact(image_bundle, crops, prec):
    from framegen.models.pixels import model_input, pred_to_uint8

    c328 = np.zeros((len(FRAMES), 328, 328, 3), np.uint8)
    c328[:, 4:324, 4:324] = crops.ref
    floats = _ort(image_bundle.tensor[prec]).run(None, {GEN_IMAGE: np.stack([model_input(c) for c in c328]),
                                                        GEN_AUDIO: crops.audio})[0]
    got = _ort(image_bundle.path("onnx", prec)).run(None, {GEN_IMAGE: crops.ref, GEN_AUDIO: crops.audio})[0]
    np.testing.assert_array_equal(got, np.stack([pred_to_uint8(p) for p in floats]))


def test_onnx_variant_matches_the_reference_pipeline_at_batch_1_and_3(image_bundle, crops, expected):

    with _image_model(image_bundle.path("onnx", "fp32")) as m:
        batch3 = m.infer(crops.ref, crops.audio)
        batch1 = np.concatenate([m.infer(crops.ref[j:j + 1], crops.audio[j:j + 1]) for j in range(3)])
    for got in (batch3, batch1):
        stats = compare_uint8(expected, got)
        # fp32 noise only flips truncation boundaries: one level, on a fraction of a percent of the values.
        assert stats["max_abs"] <= LIMITS["fp32"].max_abs == 1, stats
        assert stats["share_diff"] <= LIMITS["fp32"].max_share_diff, stats
    with _image_model(image_bundle.path("onnx", "fp16")) as m:
        stats = compare_uint8(expected, m.infer(crops.ref, crops.audio))
    assert not LIMITS["fp16"].check(stats), stats
    assert stats["share_diff"] > 0.2, stats  # really computed in fp16


def test_swapped_channels_or_a_broken_generator_fail_the_fp32_limit(image_bundle, crops, expected, tmp_path):
    """The limits can fail: RGB fed for BGR, or the output convolution scaled by 1 %."""
    from faults import scale_onnx_output_conv

    rgb = _ort(image_bundle.path("onnx", "fp32")).run(None, {GEN_IMAGE: np.ascontiguousarray(crops.ref[..., ::-1]),
                                                             GEN_AUDIO: crops.audio})[0]
    assert LIMITS["fp32"].check(compare_uint8(expected, rgb[..., ::-1]))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(image_bundle.path("onnx", "fp32").read_bytes())
    scale_onnx_output_conv(broken, 1.01)
    got = _ort(broken).run(None, {GEN_IMAGE: crops.ref, GEN_AUDIO: crops.audio})[0]
    assert LIMITS["fp32"].check(compare_uint8(expected, got))


def test_validation_accepts_the_variant_and_refuses_a_broken_one(image_bundle, calibrated_generator, tmp_path):
    from faults import scale_onnx_output_conv
    from framegen.toolkit.export.validate import reference

    path = image_bundle.path("onnx", "fp32")
    meta = json.loads((image_bundle.root / "manifest.json").read_text())["artifacts"][0]["metadata"]
    ref = reference(calibrated_generator, "generator", "ave")
    record = validate_image_artifact(path, calibrated_generator, "onnx", "fp32", meta, ref)
    assert record["passed"] and [r["batch"] for r in record["runs"]] == [1, 3]
    assert record["max_abs"] <= 1 and record["weights_max_rel_err"] < 1e-5
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(path.read_bytes())
    scale_onnx_output_conv(broken, 1.05)
    with pytest.raises(ExportValidationError, match=r"broken\.onnx: validation failed: .*differs from the checkpoint"):
        validate_image_artifact(broken, calibrated_generator, "onnx", "fp32", meta, ref)
    with pytest.raises(ExportValidationError, match=r"broken\.onnx: validation failed: batch 1: uint8 output departs"):
        validate_image_artifact(broken, calibrated_generator, "onnx", "fp32", batches=(1,))  # numbers alone
    with pytest.raises(ExportValidationError, match=r"metadata 'io' is 'image', expected 'tensor'"):
        validate_image_artifact(path, calibrated_generator, "onnx", "fp32", {**meta, "io": "tensor"})


def test_wrapping_refuses_a_graph_that_is_not_a_generator(image_bundle):
    from framegen.exporters.errors import ExportError

    with pytest.raises(ExportError, match="not a tensor-I/O generator graph"):
        wrap_onnx_generator(wrap_onnx_generator(image_bundle.base))


# ---------------------------------------------------------------------------------------------------- Core ML

def test_coreml_variant_has_bgr_image_input_and_output_and_the_contract_metadata(image_bundle):
    from coremltools.models.utils import load_spec
    from coremltools.proto import FeatureTypes_pb2
    from framegen.models.metadata import contract_json

    space = FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name
    for prec in ("fp32", "fp16"):
        spec = load_spec(str(image_bundle.path("coreml", prec)))
        assert spec.WhichOneof("Type") == "mlProgram" and spec.specificationVersion >= 7  # iOS 16
        ins = {f.name: f.type for f in spec.description.input}
        assert list(ins) == [GEN_IMAGE, GEN_AUDIO] and [o.name for o in spec.description.output] == [GEN_OUTPUT]
        for t in (ins[GEN_IMAGE], spec.description.output[0].type):
            assert t.WhichOneof("Type") == "imageType"
            assert (t.imageType.width, t.imageType.height, space(t.imageType.colorSpace)) == (320, 320, "BGR")
        assert list(ins[GEN_AUDIO].multiArrayType.shape) == [1, 32, 16, 16]
        meta = dict(spec.description.metadata.userDefined)
        assert meta["io"] == "image" and meta["precision"] == prec and meta["contract"] == contract_json("ave")
        assert json.loads(meta[METADATA_KEY])["outputs"][GEN_OUTPUT]["color_layout"] == "BGR"


def test_coreml_program_divides_by_255_and_floors_in_its_own_precision(image_bundle):
    from framegen.runtimes.mil.program import MilProgram

    for prec in ("fp32", "fp16"):
        prog = MilProgram(image_bundle.path("coreml", prec))
        assert prog.precision == prec and prog.image_inputs == [GEN_IMAGE]
        # a real division (not a multiply by 1/255), the mask multiply and the x255, the clip and the floor
        assert prog.op_counts["real_div"] == 1 and prog.op_counts["floor"] == 1 and prog.op_counts["clip"] == 1
        assert prog.op_counts["mul"] == 2


def test_image_conversion_of_the_verifier_refuses_values_core_ml_would_have_to_round():
    from framegen.runtimes.image_io_backend import pixels_to_planes, planes_to_pixels

    bgr = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    planes = pixels_to_planes(bgr, "BGR")
    assert planes.shape == (1, 3, 4, 5) and planes.dtype == np.float32
    np.testing.assert_array_equal(planes[0, 2], bgr[..., 2])
    np.testing.assert_array_equal(pixels_to_planes(bgr, "RGB")[0, 0], bgr[..., 2])
    np.testing.assert_array_equal(planes_to_pixels(planes, "BGR", "x"), bgr)
    np.testing.assert_array_equal(planes_to_pixels(pixels_to_planes(bgr, "RGB"), "RGB", "x"), bgr)
    for value in (7.5, -1.0, 256.0, np.nan):
        bad = planes.copy()
        bad[0, 1, 2, 3] = value
        with pytest.raises(BackendError, match=r"not integers in 0\.\.255"):
            planes_to_pixels(bad, "BGR", "x")


def test_floor_op_follows_the_spec(tmp_path):
    from coremltools.converters.mil import Builder as mb
    from framegen.runtimes.mil.program import MilProgram

    x = np.array([[-1.5, -0.0, 0.25, 0.999, 1.0, 254.999, 255.0, 3e4]], dtype=np.float32)

    @mb.program(input_specs=[mb.TensorSpec(shape=x.shape)], opset_version=ct.target.iOS16)
    def prog(x):
        return mb.floor(x=x, name="fl"), mb.floor(x=mb.cast(x=x, dtype="fp16"), name="fl16")

    model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
                       compute_precision=ct.precision.FLOAT32, pass_pipeline=ct.PassPipeline.EMPTY,
                       skip_model_load=True)
    model.save(str(tmp_path / "floor.mlpackage"))
    out = MilProgram(tmp_path / "floor.mlpackage").run({"x": x})
    np.testing.assert_array_equal(out["fl"], np.floor(x))
    assert out["fl16"].dtype == np.float16
    np.testing.assert_array_equal(out["fl16"], np.floor(x.astype(np.float16)))


# ------------------------------------------------------------------------------------------- parity and golden

@pytest.fixture(scope="session")
def image_parity(image_bundle, generator_ckpt, prepared_template, parity_features):
    """Parity of the four variants (ort-cpu and coreml-mil, fp32 and fp16) on the first two output frames."""
    from framegen.models.bundle import load_bundle
    from framegen.toolkit.parity.image import plan_image_candidates, run_image_parity

    cands, _ = plan_image_candidates(load_bundle(image_bundle.root))
    return run_image_parity(image_bundle.root, generator_ckpt, prepared_template, parity_features, cands, frames=2)


def test_parity_plans_every_image_variant_on_the_backends_here(image_parity):
    labels = {r.candidate.label for r in image_parity}
    assert {"ort-cpu:fp32:image", "ort-cpu:fp16:image", "coreml-mil:fp32:image", "coreml-mil:fp16:image"} <= labels


def test_fp32_variants_and_onnx_fp16_pass_parity_on_the_uint8_stages(image_parity):
    by = {r.candidate.label: r for r in image_parity}
    for label in ("ort-cpu:fp32:image", "coreml-mil:fp32:image", "ort-cpu:fp16:image"):
        r = by[label]
        assert r.passed, r.failures()
        assert r.frames == 2 and r.outside_box_diffs == 0
        assert [s.stage for s in r.stages] == [MODEL_OUTPUT, FINAL_FRAME] and r.profile.startswith("image-")
    for label in ("ort-cpu:fp32:image", "coreml-mil:fp32:image"):
        out = next(s for s in by[label].stages if s.stage == MODEL_OUTPUT).metrics
        assert out["max_abs"] <= 1 and out["share_diff"] < 0.01, out


def test_coreml_fp16_variant_computes_in_fp16_within_the_export_limits(image_parity):
    r = next(r for r in image_parity if r.candidate.label == "coreml-mil:fp16:image")
    assert r.error is None and r.frames == 2 and r.outside_box_diffs == 0
    out = next(s for s in r.stages if s.stage == MODEL_OUTPUT).metrics
    assert out["share_diff"] > 0.2, out  # fp16 really computed
    assert out["max_abs"] <= LIMITS["fp16"].max_abs and out["mean_abs"] <= LIMITS["fp16"].mean_abs, out


def test_a_broken_variant_fails_parity(image_bundle, generator_ckpt, prepared_template, parity_features, tmp_path):
    import shutil

    from faults import scale_onnx_output_conv
    from framegen.models.bundle import MANIFEST, sha256_path
    from framegen.toolkit.parity.engine import Candidate
    from framegen.toolkit.parity.image import run_image_parity

    root = tmp_path / "broken"
    root.mkdir()
    manifest = json.loads((image_bundle.root / MANIFEST).read_text())
    entry = next(e for e in manifest["artifacts"] if e["format"] == "onnx" and e["precision"] == "fp32")
    shutil.copy(image_bundle.root / entry["path"], root / entry["path"])
    scale_onnx_output_conv(root / entry["path"], 1.01)
    entry["sha256"] = sha256_path(root / entry["path"])
    manifest["artifacts"] = [entry]
    (root / MANIFEST).write_text(json.dumps(manifest))
    (result,) = run_image_parity(root, generator_ckpt, prepared_template, parity_features,
                                 [Candidate("ort-cpu", "fp32", "image")], frames=1)
    assert not result.passed and any(MODEL_OUTPUT in line for line in result.failures()), result.failures()
    (root / entry["path"]).write_bytes(b"tampered")
    (result,) = run_image_parity(root, generator_ckpt, prepared_template, parity_features,
                                 [Candidate("ort-cpu", "fp32", "image")], frames=1)
    assert "sha256" in result.error


@pytest.fixture(scope="session")
def image_golden(tmp_path_factory, image_bundle, generator_ckpt, prepared_template, parity_features):
    """Golden vectors of the plain float pipeline (PyTorch fp32 model output), two cases."""
    from framegen.toolkit.parity.golden import write_golden

    return write_golden(image_bundle.root, prepared_template, parity_features,
                        tmp_path_factory.mktemp("image_golden") / "G", cases=2, checkpoint=generator_ckpt)


def test_onnx_variants_against_golden_vectors(image_golden, image_bundle, tmp_path):
    from framegen.toolkit.parity.golden_check import check_golden
    from framegen.toolkit.parity.image import write_image_candidate

    with _image_model(image_bundle.path("onnx", "fp32")) as m:
        fp32 = write_image_candidate(image_golden, m, tmp_path / "fp32")
    report = check_golden(image_golden, fp32, profile="fp32")
    assert report.passed, [(s.name, s.failures) for s in report.stages]
    present = [s.name for s in report.stages if s.present]
    assert present == ["pred_320", "pasted_328", FINAL_FRAME]
    with _image_model(image_bundle.path("onnx", "fp16")) as m:
        fp16 = write_image_candidate(image_golden, m, tmp_path / "fp16")
    report = check_golden(image_golden, fp16, profile="image-fp16")
    by = {s.name: s for s in report.stages}
    # pasted_328 and final_frame follow exactly from the variant's own prediction; the prediction itself is the
    # fp16 model's, held to the image-fp16 profile.
    assert by["pasted_328"].status == by[FINAL_FRAME].status == "pass"
    assert by["pred_320"].status == "pass", by["pred_320"].metrics
    assert not get_profile("image-fp16").limits(MODEL_OUTPUT).check(by["pred_320"].metrics), by["pred_320"].metrics


# ------------------------------------------------------------------------------------------------------ export CLI

def test_export_io_image_writes_validated_image_artifacts_into_the_manifest(generator_ckpt, tmp_path):
    from framegen.models.bundle import load_bundle
    from framegen.toolkit.cli import app
    from typer.testing import CliRunner

    out = tmp_path / "bundle"
    result = CliRunner().invoke(app, ["export", str(generator_ckpt), "--out", str(out), "--formats", "onnx",
                                      "--precision", "fp32", "--io", "tensor,image"])
    assert result.exit_code == 0, result.output
    bundle = load_bundle(out)
    bundle.verify()
    assert [(a.format, a.precision, a.io) for a in bundle.artifacts] == [("onnx", "fp32", "tensor"),
                                                                        ("onnx", "fp32", "image")]
    entry = bundle.find("generator", "onnx", "fp32", io="image").entry
    assert entry["path"] == "generator.fp32.image.onnx"
    assert entry["inputs"][0] == {"name": GEN_IMAGE, "shape": ["batch", 320, 320, 3], "dtype": "uint8",
                                  "layout": "NHWC BGR"}
    record = ValidationRecord.from_dict(entry["validation"])
    assert record.kind == "image" and record.passed and all(c.passed for c in record.checks)
    assert [r["batch"] for r in record.details["runs"]] == [1, 3] and record.check("max_abs").value <= 1
    assert record.check("weights_max_rel").value < 1e-5
    assert entry[METADATA_KEY]["inputs"][GEN_IMAGE]["channels"] == "BGR"


def test_export_refuses_an_unknown_io_variant_before_writing(generator_ckpt, tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    out = tmp_path / "bundle"
    proc = subprocess.run([sys.executable, "-m", "toolkit.cli", "export", str(generator_ckpt), "--out", str(out),
                           "--io", "tensor,pixels"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 2 and "unknown I/O variant 'pixels'" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_image_variant_outputs_are_judged_on_another_machine(image_bundle, generator_ckpt, prepared_template,
                                                             parity_features, tmp_path):
    """--save-outputs / --load-outputs for an image-I/O variant: its uint8 predictions travel, are judged like a live
    run's (the layers of its artifact compared here), and a file made from other inputs is refused."""
    from framegen.toolkit.compare.profiles import LAYERS
    from framegen.toolkit.parity.engine import Candidate, run_parity
    from framegen.toolkit.parity.replay import OutputsFileError, load_outputs, save_outputs

    saved = tmp_path / "image.npz"
    kw = {"frames": 1, "silence_frames": 1}
    live = run_parity(image_bundle.root, generator_ckpt, prepared_template, parity_features,
                      candidates=[Candidate("ort-cpu", "fp16", "image")], save_outputs=saved, locate=False, **kw)
    assert live.passed, live.failures()
    (run,) = load_outputs(saved)
    assert run.header["io"] == "image" and run.header["artifact"]["sha256"]
    assert len(run.outputs) == 2 and all(v.dtype == np.uint8 and v.shape == (320, 320, 3)
                                         for v in run.outputs.values())
    loaded = run_parity(image_bundle.root, generator_ckpt, prepared_template, parity_features, candidates=[],
                        load_outputs=[saved], **kw)
    (cand,) = loaded.candidates
    assert cand.label == "ort-cpu:fp16:image@image.npz" and cand.passed, cand.failures()
    assert [s.stage for s in cand.stages] == [MODEL_OUTPUT, FINAL_FRAME, LAYERS]
    for a, b in zip(live.candidates[0].stages, cand.stages, strict=False):
        assert a.metrics == b.metrics
    # The loaded numbers are what is judged: the same file with every prediction 40 levels brighter fails.
    bright = {k: np.clip(v.astype(np.int16) + 40, 0, 255).astype(np.uint8) for k, v in run.outputs.items()}
    header = {k: v for k, v in run.header.items() if k != "keys"}
    save_outputs(tmp_path / "bright.npz", [{"header": header, "outputs": bright}])
    worse = run_parity(image_bundle.root, generator_ckpt, prepared_template, parity_features, candidates=[],
                       load_outputs=[tmp_path / "bright.npz"], locate=False, **kw)
    assert not worse.passed and any(MODEL_OUTPUT in line for line in worse.failures()), worse.failures()
    with pytest.raises(OutputsFileError, match="made from other inputs"):
        run_parity(image_bundle.root, generator_ckpt, prepared_template, parity_features, candidates=[],
                   load_outputs=[saved], start_frame=3, **kw)
