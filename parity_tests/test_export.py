"""`framegen export`: the bundle's artifacts, manifest and metadata, their numbers against PyTorch, and every way
an export is refused (bad checkpoint, bad options, an artifact that fails validation) without leaving a bundle."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from framegen.exporters.errors import ExportError, ExportValidationError
from framegen.models.bundle import MANIFEST, load_bundle, sha256_path
from framegen.models.checkpoint import sha256_file
from framegen.models.contract import contract_dict
from framegen.models.errors import CheckpointError
from framegen.models.validation import ValidationRecord

ORT = pytest.importorskip("onnxruntime")

ALL = [(m, f, p) for m in ("generator", "audio_encoder") for f in ("onnx", "coreml") for p in ("fp32", "fp16")]
SHAPES = {"image": [6, 320, 320], "audio": [32, 16, 16], "output": [3, 320, 320], "mel": [1, 80, 16],
          "embedding": [512]}


def _session(path: Path):
    return ORT.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _fresh_inputs(batch: int, seed: int = 77) -> tuple[np.ndarray, np.ndarray]:
    """Image-like crops with the exact mask and non-negative audio windows, not the ones validation used."""
    from framegen.models.init import audio_like_batch, image_like_batch

    gen = torch.Generator().manual_seed(seed)
    return image_like_batch(batch, gen).numpy(), audio_like_batch("ave", batch, gen).numpy()


def _leftovers(parent: Path, name: str) -> list[Path]:
    return [p for p in parent.iterdir() if p.name == name or p.name.startswith(f".{name}.")]


@pytest.fixture(scope="module")
def bundle(bundle_dir):
    return load_bundle(bundle_dir)


@pytest.fixture(scope="module")
def gen_reference(calibrated_generator):
    """PyTorch's output on the validation inputs and its folded convolutions (one forward pass)."""
    from framegen.toolkit.export.validate import reference

    return reference(calibrated_generator, "generator", "ave")


# ------------------------------------------------------------------------------------------- bundle and manifest

def test_bundle_holds_every_format_and_precision_and_every_sha256_holds(bundle):
    for model, fmt, prec in ALL:
        art = bundle.find(model, fmt, prec)
        assert art.io == "tensor"
        assert art.path.name == f"{model}.{prec}.{'onnx' if fmt == 'onnx' else 'mlpackage'}"
        assert (art.path.is_dir()) == (fmt == "coreml")
    assert len(bundle.artifacts) == len(ALL)
    bundle.verify()
    for a in bundle.artifacts:
        assert sha256_path(a.path) == a.entry["sha256"]


def test_manifest_schema(bundle, generator_ckpt, encoder_ckpt):
    import coremltools
    import onnx

    m = bundle.manifest
    assert {"manifest_version", "contract", "source", "tools", "hashing", "artifacts"} <= set(m)
    assert m["contract"] == json.loads(json.dumps(contract_dict("ave")))
    assert m["source"]["sha256"] == sha256_file(generator_ckpt)
    assert m["source"]["checkpoint"] == generator_ckpt.name
    assert m["source"]["mode"] == bundle.mode == "ave"
    assert m["source"]["audio_encoder"]["sha256"] == sha256_file(encoder_ckpt)
    tools = m["tools"]
    assert tools["torch"] == torch.__version__ and tools["onnx"] == onnx.__version__
    assert tools["onnxruntime"] == ORT.__version__ and tools["coremltools"] == coremltools.__version__
    assert tools["export"]["onnx"]["exporter"] in ("torchscript", "dynamo")
    assert 13 <= tools["export"]["onnx"]["opset"] <= 23
    assert tools["export"]["coreml"]["minimum_deployment_target"] == "iOS16"
    for a in m["artifacts"]:
        assert {"model", "format", "precision", "io", "path", "sha256", "bytes", "inputs", "outputs",
                "validation"} <= set(a)
        assert len(a["sha256"]) == 64 and a["bytes"] > 1_000_000
        names = ["image", "audio"] if a["model"] == "generator" else ["mel"]
        assert [t["name"] for t in a["inputs"]] == names
        assert [t["name"] for t in a["outputs"]] == ["output" if a["model"] == "generator" else "embedding"]
        for t in a["inputs"] + a["outputs"]:
            assert t["shape"] == ["batch", *SHAPES[t["name"]]] and t["dtype"] == "float32"
        record = ValidationRecord.from_dict(a["validation"])
        assert record.kind == "tensor" and record.passed is True
        # Core ML numbers too: the coreml-mil verifier is installed, and it ran them.
        assert [c.name for c in record.checks] == ["max_abs", "mean_abs", "weights_max_rel"]
        assert all(c.passed and c.bound == "max" for c in record.checks)
        assert record.check("max_abs").value > 0 and record.check("mean_abs").value > 0
        assert record.check("weights_max_rel").value >= 0
        assert record.details["convolutions"] == (93 if a["model"] == "generator" else 13)
        assert record.runtime.startswith("onnxruntime" if a["format"] == "onnx" else "coreml-mil")
        if a["format"] == "onnx":
            assert record.details["batches"] == [1, 3] and a["opset"] == tools["export"]["onnx"]["opset"]


def test_directory_sha256_follows_the_documented_rule(bundle):
    """docs/CONTRACT.md's rule for .mlpackage hashes, restated independently of models.bundle."""
    art = bundle.find("generator", "coreml", "fp16")
    files = sorted((f for f in art.path.rglob("*") if f.is_file()), key=lambda f: f.relative_to(art.path).as_posix())
    digest = hashlib.sha256()
    for f in files:
        rel = f.relative_to(art.path).as_posix()
        digest.update(rel.encode() + b"\0" + hashlib.sha256(f.read_bytes()).hexdigest().encode() + b"\n")
    assert digest.hexdigest() == art.entry["sha256"]
    assert (art.path / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").is_file()


# ------------------------------------------------------------------------------------------------------ metadata

def _expected_meta(model: str, prec: str, sha: str) -> dict[str, str]:
    return {"model": model, "precision": prec, "mode": "ave", "io": "tensor", "source_sha256": sha,
            "contract_version": "1"}


def test_onnx_metadata_carries_the_contract_and_source(bundle, generator_ckpt, encoder_ckpt):
    import onnx

    for model, ckpt in (("generator", generator_ckpt), ("audio_encoder", encoder_ckpt)):
        for prec in ("fp32", "fp16"):
            proto = onnx.load(str(bundle.find(model, "onnx", prec).path), load_external_data=False)
            meta = {p.key: p.value for p in proto.metadata_props}
            assert _expected_meta(model, prec, sha256_file(ckpt)).items() <= meta.items()
            assert json.loads(meta["contract"]) == json.loads(json.dumps(contract_dict("ave")))
            assert not any("/work/" in p.value or "stack_trace" in p.key for n in proto.graph.node
                           for p in n.metadata_props)


def test_coreml_names_shapes_and_metadata(bundle, generator_ckpt, encoder_ckpt):
    from coremltools.models.utils import load_spec

    for model, ckpt in (("generator", generator_ckpt), ("audio_encoder", encoder_ckpt)):
        for prec in ("fp32", "fp16"):
            spec = load_spec(str(bundle.find(model, "coreml", prec).path))
            assert spec.WhichOneof("Type") == "mlProgram" and spec.specificationVersion >= 7  # iOS16
            d = spec.description
            ins = [i.name for i in d.input]
            assert ins == (["image", "audio"] if model == "generator" else ["mel"])
            assert [o.name for o in d.output] == (["output"] if model == "generator" else ["embedding"])
            for feature in d.input:
                ranges = [(r.lowerBound, r.upperBound) for r in feature.type.multiArrayType.shapeRange.sizeRanges]
                assert ranges == [(1, 64)] + [(n, n) for n in SHAPES[feature.name]]
            meta = dict(d.metadata.userDefined)
            assert _expected_meta(model, prec, sha256_file(ckpt)).items() <= meta.items()
            assert json.loads(meta["contract"])["generator"]["inputs"]["audio"]["shape"] == {
                "ave": ["batch", 32, 16, 16]}
            assert "com.github.apple.coremltools.conversion_date" not in meta


# ------------------------------------------------------------------------------------------------------- numbers

def test_fp32_onnx_generator_at_batch_3_matches_pytorch(bundle, calibrated_generator):
    """Contract names, batch 3, inputs the export's validation did not use: within 1e-4 of PyTorch."""
    image, audio = _fresh_inputs(3)
    session = _session(bundle.find("generator", "onnx", "fp32").path)
    assert [i.name for i in session.get_inputs()] == ["image", "audio"]
    assert [o.name for o in session.get_outputs()] == ["output"]
    got = session.run(["output"], {"image": image, "audio": audio})[0]
    with torch.no_grad():
        want = calibrated_generator(torch.from_numpy(image), torch.from_numpy(audio)).numpy()
    assert got.shape == want.shape == (3, 3, 320, 320) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-4
    assert want.std() > 0.1  # the comparison is over a spread-out output, not a constant
    rows = session.run(["output"], {"image": image[1:2], "audio": audio[1:2]})[0]
    assert np.abs(rows[0] - want[1]).max() <= 1e-4  # batch 1 agrees with the batch-3 row


def test_encoder_onnx_matches_pytorch_within_1e4(bundle, audio_encoder):
    from framegen.toolkit.export.validate import validation_inputs

    (mel,) = validation_inputs("audio_encoder", "ave", 3, seed=99)
    with torch.no_grad():
        want = audio_encoder(torch.from_numpy(mel)).numpy()
    got = _session(bundle.find("audio_encoder", "onnx", "fp32").path).run(["embedding"], {"mel": mel})[0]
    assert got.shape == (3, 512)
    assert np.abs(got - want).max() <= 1e-4
    half = _session(bundle.find("audio_encoder", "onnx", "fp16").path).run(["embedding"], {"mel": mel})[0]
    assert half.dtype == np.float32 and 1e-4 < np.abs(half - want).max() <= 0.1


def test_fp16_artifacts_hold_half_weights_and_take_float32(bundle):
    import onnx
    from framegen.toolkit.export.validate import coreml_convs
    from onnx import TensorProto

    for model in ("generator", "audio_encoder"):
        proto = onnx.load(str(bundle.find(model, "onnx", "fp16").path))
        kinds = {t.data_type for t in proto.graph.initializer if len(t.dims) == 4}
        assert kinds == {TensorProto.FLOAT16}
        session = _session(bundle.find(model, "onnx", "fp16").path)
        assert {x.type for x in (*session.get_inputs(), *session.get_outputs())} == {"tensor(float)"}
        assert {str(w.dtype) for _, w, _ in coreml_convs(bundle.find(model, "coreml", "fp16").path)} == {"float16"}
        assert {str(w.dtype) for _, w, _ in coreml_convs(bundle.find(model, "coreml", "fp32").path)} == {"float32"}


def test_reexport_is_byte_identical(bundle, audio_encoder, encoder_ckpt, tmp_path):
    """The same module and metadata give the same bytes: ONNX and Core ML (package identifiers included)."""
    from framegen.exporters.coreml_export import export_encoder_coreml
    from framegen.exporters.onnx_export import export_encoder_onnx
    from framegen.models.metadata import artifact_metadata

    sha = sha256_file(encoder_ckpt)
    onnx_path = export_encoder_onnx(audio_encoder, tmp_path / "e.onnx", "fp32",
                                    metadata=artifact_metadata("audio_encoder", "ave", "fp32", sha))
    assert sha256_path(onnx_path) == bundle.find("audio_encoder", "onnx", "fp32").entry["sha256"]
    ml_path = export_encoder_coreml(audio_encoder, tmp_path / "e.mlpackage", "fp16",
                                    metadata=artifact_metadata("audio_encoder", "ave", "fp16", sha))
    assert sha256_path(ml_path) == bundle.find("audio_encoder", "coreml", "fp16").entry["sha256"]


# ------------------------------------------------------------------------------------ validation catches defects

def _scale_onnx_conv(src: Path, dst: Path, factor: float, which: int = 0) -> None:
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(src))
    conv = [n for n in proto.graph.node if n.op_type == "Conv"][which]
    init = next(t for t in proto.graph.initializer if t.name == conv.input[1])
    arr = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array((arr.astype(np.float64) * factor).astype(arr.dtype), init.name))
    onnx.save(proto, str(dst))


def test_a_slightly_wrong_weight_fails_fp16_validation(bundle, gen_reference, tmp_path):
    """A 1 % error in the output convolution stays within fp16's output limits; the weight check refuses it."""
    from framegen.toolkit.export.validate import TOLERANCES, check_numbers, validate_onnx

    bad = tmp_path / "generator.fp16.onnx"
    _scale_onnx_conv(bundle.find("generator", "onnx", "fp16").path, bad, 1.01, which=-1)
    image, audio = gen_reference.inputs
    out = _session(bad).run(["output"], {"image": image, "audio": audio})[0]
    check_numbers(bad, out, gen_reference.output, TOLERANCES[("generator", "fp16")], "numbers alone pass")
    with pytest.raises(ExportValidationError,
                       match=r"weight of convolution 92 \(outc\.conv\) differs from the checkpoint by 0\.0099"):
        validate_onnx(bad, gen_reference, "fp16")


def test_a_wrong_coreml_weight_fails_validation(bundle, gen_reference, tmp_path):
    from coremltools.models.utils import load_spec
    from framegen.toolkit.export.validate import validate_coreml

    src = bundle.find("generator", "coreml", "fp32").path
    bad = tmp_path / src.name
    shutil.copytree(src, bad)
    fn = load_spec(str(bad)).mlProgram.functions["main"]
    ops = list(fn.block_specializations[fn.opset].operations)
    target = next(op for op in ops if op.type == "conv").inputs["weight"].arguments[0].name
    const = next(op for op in ops if op.type == "const" and op.outputs[0].name == target)
    offset = const.attributes["val"].blobFileValue.offset
    weights = bad / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    blob = bytearray(weights.read_bytes())
    sentinel, _, _, data = struct.unpack_from("<IIQQ", blob, offset)  # MIL blob metadata: data offset at +16
    assert sentinel == 0xDEADBEEF
    blob[data:data + 4] = np.float32(np.frombuffer(bytes(blob[data:data + 4]), np.float32)[0] * 1.5 + 0.1).tobytes()
    weights.write_bytes(bytes(blob))
    with pytest.raises(ExportValidationError, match="validation failed"):
        validate_coreml(bad, gen_reference, "fp32")


def test_a_corrupt_export_leaves_no_bundle(monkeypatch, capsys, tmp_path, generator_ckpt, bundle, gen_reference):
    """The exporter is made to produce a generator with one weight off; `framegen export` exits 2 with one line
    naming the artifact, and neither the bundle nor its temporary directory remains."""
    import framegen.toolkit.export.bundle as ex
    from framegen.toolkit.cli import main

    good = bundle.find("generator", "onnx", "fp32").path
    corrupt = tmp_path / "corrupt.onnx"
    _scale_onnx_conv(good, corrupt, 1.5)

    def fake_build(module, precision="fp32", opset=None, exporter=None):
        import onnx

        return onnx.load(str(corrupt))

    monkeypatch.setattr(ex.onnx_export, "generator_onnx_model", fake_build)
    monkeypatch.setattr(ex, "reference", lambda module, kind, mode: gen_reference)  # saves a forward pass
    out = tmp_path / "out" / "B"
    monkeypatch.setattr(sys, "argv", ["framegen", "export", str(generator_ckpt), "--out", str(out),
                                      "--formats", "onnx", "--precision", "fp32"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = next(ln for ln in err.splitlines() if ln.startswith("error:"))
    assert "generator.fp32.onnx: validation failed" in line and "differs from PyTorch" in line
    assert _leftovers(out.parent, "B") == []


# --------------------------------------------------------------------------------------------- refused up front

def _bad_checkpoints(tmp_path: Path, calibrated_generator) -> dict[str, Path]:
    state = calibrated_generator.state_dict()
    missing = dict(state)
    missing.pop("outc.conv.bias")
    shaped = dict(state)
    shaped["outc.conv.weight"] = torch.zeros(4, 16, 1, 1)
    paths = {"missing": tmp_path / "missing.pth", "shape": tmp_path / "shape.pth", "garbage": tmp_path / "junk.pth"}
    torch.save(missing, paths["missing"])
    torch.save(shaped, paths["shape"])
    paths["garbage"].write_bytes(b"not a checkpoint")
    return paths


def test_bad_checkpoints_fail_before_anything_is_written(tmp_path, calibrated_generator):
    from framegen.toolkit.export.bundle import export_bundle

    expect = {"missing": "missing key", "shape": "shape mismatch for 'outc.conv.weight'", "garbage": "junk.pth"}
    for kind, path in _bad_checkpoints(tmp_path, calibrated_generator).items():
        out = tmp_path / "out" / kind
        with pytest.raises(CheckpointError, match=expect[kind]):
            export_bundle(path, out)
        assert not out.parent.exists() or _leftovers(out.parent, kind) == []


def test_bad_options_and_existing_output_are_refused(tmp_path, generator_ckpt, encoder_ckpt, bundle_dir):
    from framegen.toolkit.export.bundle import export_bundle

    out = tmp_path / "B"
    with pytest.raises(ExportError, match="unknown format 'tflite'"):
        export_bundle(generator_ckpt, out, formats=("onnx", "tflite"))
    with pytest.raises(ExportError, match="unknown precision 'int3'"):
        export_bundle(generator_ckpt, out, precisions=("int3",))
    with pytest.raises(ExportError, match="opset 9"):
        export_bundle(generator_ckpt, out, opset=9)
    with pytest.raises(ExportError, match="'ave' features; a hubert generator"):
        export_bundle(generator_ckpt, out, audio_encoder=encoder_ckpt, mode="hubert")
    with pytest.raises(CheckpointError, match="audio encoder checkpoint, not a generator"):
        export_bundle(encoder_ckpt, out)
    assert not out.exists()
    before = (bundle_dir / MANIFEST).read_bytes()
    with pytest.raises(ExportError, match="already exists"):
        export_bundle(generator_ckpt, bundle_dir)
    assert (bundle_dir / MANIFEST).read_bytes() == before


def test_cli_bad_checkpoint_exits_2_with_one_line(monkeypatch, capsys, tmp_path, calibrated_generator):
    from framegen.toolkit.cli import main

    path = _bad_checkpoints(tmp_path, calibrated_generator)["shape"]
    out = tmp_path / "B"
    monkeypatch.setattr(sys, "argv", ["framegen", "export", str(path), "--out", str(out)])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 1 and "shape.pth" in err
    assert not out.exists()


def test_validation_record_has_one_shape_and_bad_records_are_refused(tmp_path):
    """Every kind reads back as the same typed record; a malformed one is refused at load, naming the artifact."""
    from framegen.models.bundle import load_bundle
    from framegen.models.errors import FramegenError
    from framegen.models.validation import Check, ValidationRecord

    floor = ValidationRecord("quality-floor", False, "openvino",
                             (Check("psnr_db", 19.3, 30.0, "min", "the int8 quality floor"),
                              Check("max_level_error", 80.0, 96.0, "max", "the int8 quality floor")),
                             {"frames": 2}, "final-frame PSNR 19.3 dB is 10.7 dB below the floor")
    again = ValidationRecord.from_dict(json.loads(json.dumps(floor.as_dict())))
    assert again == floor
    # A lower bound is a lower bound: 19.3 dB fails a 30 dB floor, 80 levels pass a 96-level limit.
    assert [c.passed for c in again.checks] == [False, True]
    assert again.failures() == [floor.reason, "psnr_db 19.3 >= 30"]
    assert not Check("max_abs", float("nan"), 1.0).passed and not Check("max_abs", None, 1.0).passed
    legacy = ValidationRecord.from_dict({"runtime": "onnxruntime", "max_abs_err": 1e-5, "passed": True})
    assert legacy.kind == "legacy" and legacy.checks == () and legacy.details["max_abs_err"] == 1e-5

    (tmp_path / "g.onnx").write_bytes(b"x")
    entry = {"model": "generator", "format": "onnx", "precision": "fp32", "path": "g.onnx"}
    for bad, words in (({"schema": "framegen-validation/1", "kind": "tensor", "passed": True,
                         "checks": [{"name": "max_abs", "value": 1e-5}]}, "check 0 needs"),
                       ({"schema": "framegen-validation/9"}, "schema"),
                       ({"schema": "framegen-validation/1", "kind": "magic", "passed": True, "checks": []}, "kind")):
        (tmp_path / "manifest.json").write_text(json.dumps({"source": {"mode": "ave"},
                                                            "artifacts": [{**entry, "validation": bad}]}))
        with pytest.raises(FramegenError) as info:
            load_bundle(tmp_path)
        message = str(info.value)
        assert "artifacts[0].validation" in message and words in message and "\n" not in message
