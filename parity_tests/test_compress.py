"""Compressed generators (issue 18): int8 ONNX (QDQ), Core ML 8-bit and palettized weights, the coreml-mil kernels
that expand them, the quality gate that refuses an artifact below its floor, and parity under their own profiles."""

from __future__ import annotations

import json

import numpy as np
import pytest
from framegen.models.bundle import load_bundle
from framegen.models.validation import ValidationRecord


def _entry(bundle, fmt, precision):
    return load_bundle(bundle).find("generator", fmt, precision).entry


# ------------------------------------------------------------------------------------------------ kernels (no I/O)

def test_unpack_bits_inverts_lsb_first_packing():
    from framegen.runtimes.mil.constexpr import unpack_bits

    rng = np.random.default_rng(0)
    for nbits in (1, 2, 4, 6, 8):
        values = rng.integers(0, 2 ** nbits, size=37)
        bits = ((values[:, None] >> np.arange(nbits)) & 1).astype(np.uint8).reshape(-1)
        packed = np.packbits(bits, bitorder="little")
        assert np.array_equal(unpack_bits(packed, nbits, values.size), values)


def test_affine_dequantize_per_channel_rounds_once_to_fp16():
    import torch
    from framegen.runtimes.mil.constexpr import op_constexpr_affine_dequantize

    q = torch.tensor([[-128, 0, 127], [5, -5, 1]], dtype=torch.int8)
    scale = torch.tensor([0.01, 3.0], dtype=torch.float16)
    zp = torch.tensor([0, 1], dtype=torch.int8)
    out = op_constexpr_affine_dequantize({"quantized_data": q, "zero_point": zp, "scale": scale,
                                          "axis": torch.tensor(0, dtype=torch.int32)})
    assert out.dtype == torch.float16
    want = ((q.numpy().astype(np.float32) - np.array([[0], [1]], np.float32))
            * scale.numpy().astype(np.float32)[:, None]).astype(np.float16)
    assert np.array_equal(out.numpy(), want)


def test_lut_to_dense_refuses_a_short_index_stream():
    import torch
    from framegen.runtimes.mil.attrs import MilOpError
    from framegen.runtimes.mil.constexpr import op_constexpr_lut_to_dense

    with pytest.raises(MilOpError, match="index bytes"):
        op_constexpr_lut_to_dense({"lut": torch.zeros(16, dtype=torch.float16),
                                   "indices": torch.zeros(3, dtype=torch.uint8),
                                   "shape": torch.tensor([2, 4], dtype=torch.int32)})


# ------------------------------------------------------------------------------------------------ int8 ONNX

def test_int8_onnx_is_under_30_percent_of_fp32_and_is_qdq(int8_onnx_bundle):
    import onnx
    from onnx import TensorProto

    b = load_bundle(int8_onnx_bundle)
    fp32, int8 = b.find("generator", "onnx", "fp32"), b.find("generator", "onnx", "int8")
    assert int8.entry["bytes"] < 0.30 * fp32.entry["bytes"], (int8.entry["bytes"], fp32.entry["bytes"])
    model = onnx.load(str(int8.path))
    ops = [n.op_type for n in model.graph.node]
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    inits = {i.name: i for i in model.graph.initializer}
    # every convolution reads its weight through a DequantizeLinear of an int8 initializer (per-channel scales)
    for c in convs:
        node = dq[c.input[1]]
        assert inits[node.input[0]].data_type == TensorProto.INT8
        assert len(inits[node.input[1]].dims) == 1 and inits[node.input[1]].dims[0] > 1
    assert ops.count("QuantizeLinear") > len(convs) // 2  # activations quantized too
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["precision"] == "int8"
    assert json.loads(meta["quantization"])["target"] == "openvino"
    q = int8.entry["quantization"]
    assert q["format"] == "QDQ" and q["target"] == "openvino" and q["activations"].startswith("uint8")
    assert q["calibration_inputs"] == 4 and "template" in q["calibration_source"]
    # percentile ranges by default: min / max let rare extreme activations stretch every range (docs/PARITY.md)
    assert q["calibration"] == "Percentile" and q["CalibPercentile"] == 99.999
    # OpenVINO's target: the output convolution reads int8 and writes float, the Sigmoid runs in float
    producer = {o: n for n in model.graph.node for o in n.output}
    sigmoid = next(n for n in model.graph.node if n.op_type == "Sigmoid")
    assert producer[sigmoid.input[0]].op_type == "Conv" and dq.keys() & set(producer[sigmoid.input[0]].input)
    assert sigmoid.output[0] == model.graph.output[0].name
    assert q["float_output"] is True and "Sigmoid" not in q["quantized_ops"] and "Conv" in q["quantized_ops"]


def _qdq_tail(two_consumers: bool = False):
    """Conv -> Q/DQ -> Sigmoid -> Q/DQ -> output, as quantize_static writes a generator's end (a 2-channel toy)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.standard_normal((2, 2, 1, 1)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array(0.05, np.float32), "s"),  # logits within +-6.4
             numpy_helper.from_array(np.array(128, np.uint8), "z"),
             numpy_helper.from_array(np.array(1 / 255, np.float32), "so"),
             numpy_helper.from_array(np.array(0, np.uint8), "zo")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "s", "z"], ["cd"]),
             helper.make_node("Sigmoid", ["cd"], ["y0"]),
             helper.make_node("QuantizeLinear", ["y0", "so", "zo"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "so", "zo"], ["output"])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)]
    if two_consumers:  # the logits' quantized form is read elsewhere too: it must stay
        nodes.append(helper.make_node("Relu", ["cd"], ["other"]))
        outputs.append(helper.make_tensor_value_info("other", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "tail", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_float_output_removes_only_the_pairs_around_the_sigmoid():
    import numpy as np
    import onnxruntime as ort
    from framegen.exporters.quantize import float_output

    model = _qdq_tail()
    x = {"x": np.random.default_rng(6).standard_normal((1, 2, 4, 4)).astype(np.float32)}
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    assert float_output(model) == 2
    assert [n.op_type for n in model.graph.node] == ["Conv", "Sigmoid"]
    assert model.graph.node[1].output[0] == "output" and {i.name for i in model.graph.initializer} == {"w"}
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    conv = x["x"][0].transpose(1, 2, 0) @ np.random.default_rng(5).standard_normal((2, 2, 1, 1)).astype(
        np.float32)[:, :, 0, 0].T
    assert np.allclose(after[0].transpose(1, 2, 0), 1 / (1 + np.exp(-conv)), atol=1e-6)  # float all the way
    assert np.abs(conv).max() < 6.3  # no logit was clipped by its range: the graphs differ by rounding alone
    # the quantized graph rounded twice: half an output step, and half a logit step through the Sigmoid (slope <= 1/4)
    assert 0 < np.abs(after - before).max() <= 0.5 / 255 + 0.25 * 0.05 / 2 + 1e-6

    shared = _qdq_tail(two_consumers=True)
    assert float_output(shared) == 1  # only the pair after the Sigmoid: the logits' pair has another reader
    assert [n.op_type for n in shared.graph.node].count("QuantizeLinear") == 1


def test_each_int8_target_quantizes_a_conv_sigmoid_tail_its_own_way():
    """The openvino target's output convolution writes float; the ort target keeps the Q/DQ pairs (no gain there,
    docs/PARITY.md). Both stay within their quantization error of the float graph."""
    import numpy as np
    import onnxruntime as ort
    from framegen.exporters.quantize import quantize_onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(8)
    w = numpy_helper.from_array(rng.standard_normal((3, 4, 3, 3)).astype(np.float32) * 0.3, "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Sigmoid", ["c"], ["y"])],
        "tail", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    feeds = [{"x": rng.random((1, 4, 8, 8), dtype=np.float32)} for _ in range(4)]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds[0])[0]
    for target, float_tail in (("openvino", True), ("ort", False)):
        q, record = quantize_onnx(model, feeds, target=target)
        producer = {o: n for n in q.graph.node for o in n.output}
        sigmoid = next(n for n in q.graph.node if n.op_type == "Sigmoid")
        assert (producer[sigmoid.input[0]].op_type == "Conv") is float_tail, target
        assert (sigmoid.output[0] == "y") is float_tail, target  # else a Q/DQ pair writes the output
        assert record["float_output"] is float_tail and record["reduce_range"] is (target == "ort")
        assert ("Sigmoid" in record["quantized_ops"]) is not float_tail and "Conv" in record["quantized_ops"]
        got = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds[0])[0]
        assert np.abs(got - want).max() < 0.03, target


def test_int8_verdict_is_recorded_with_its_floor(int8_onnx_bundle):
    record = ValidationRecord.from_dict(_entry(int8_onnx_bundle, "onnx", "int8")["validation"])
    assert record.kind == "quality-floor" and record.passed and record.runtime == "openvino"
    psnr, level = record.check("psnr_db"), record.check("max_level_error")
    assert (psnr.bound, psnr.limit, level.bound, level.limit) == ("min", 12.0, "max", 255.0)
    assert psnr.passed and level.passed and 12.0 <= psnr.value < 60
    v = record.details
    assert v["profile"] == "int8" and v["frames"] == 2 and v["final_frame"]["psnr_db"] == psnr.value
    assert v["size_vs_fp32"] < 0.30


def test_gate_refuses_below_the_default_floor_and_says_by_how_much(int8_onnx_bundle, generator_ckpt,
                                                                     compress_options, calibrated_generator):
    from framegen.toolkit.export.compress import DEFAULT_FLOORS, QualityFloor, gate_data, judge, refusal

    art = load_bundle(int8_onnx_bundle).find("generator", "onnx", "int8")
    assert compress_options.has_gate_data()  # the caller's gate data outlives the exports that used it
    data = gate_data(calibrated_generator, "ave", compress_options)
    lenient = judge(art.path, "onnx", "int8", data, QualityFloor(12.0, 255), backend="openvino", mode="ave")
    assert lenient["passed"]
    strict = judge(art.path, "onnx", "int8", data, QualityFloor(lenient["final_frame"]["psnr_db"] + 5.0, 255),
                   backend="openvino", mode="ave")
    assert not strict["passed"] and strict["shortfall"]["psnr_db"] == pytest.approx(5.0, abs=0.01)
    line = refusal("b/generator.int8.onnx", strict)
    assert "5.0 dB below the floor" in line and "--min-psnr" in line and "\n" not in line
    default = judge(art.path, "onnx", "int8", data, DEFAULT_FLOORS["int8"], backend="openvino", mode="ave")
    assert not default["passed"]  # a random-weight checkpoint's int8 ONNX: far below 30 dB (docs/PARITY.md)


@pytest.mark.slow
def test_skip_refused_leaves_the_artifact_out_and_records_why(tmp_path, generator_ckpt, synth_template_dir, capsys):
    """`--skip-refused`: the bundle is written without the refused artifact, whose figures the manifest keeps and
    whose JUnit case is skipped, not failed."""
    import xml.etree.ElementTree as ET

    from framegen.models.validation import ValidationRecord
    from framegen.toolkit.api import export
    from framegen.toolkit.commands.export import _print_summary
    from framegen.toolkit.export.compress import CompressOptions

    out, junit = tmp_path / "b", tmp_path / "export.xml"
    opts = CompressOptions(template=synth_template_dir, calibration_frames=2, gate_frames=1, min_psnr_db=99.0,
                           skip_refused=True)
    bundle = export(generator_ckpt, out, formats="onnx", precisions="fp32,int8", compression=opts, junit_xml=junit)
    assert [(a.precision, a.path.name) for a in bundle.artifacts] == [("fp32", "generator.fp32.onnx")]
    assert sorted(p.name for p in out.iterdir()) == ["generator.fp32.onnx", "manifest.json"]
    (refused,) = bundle.manifest["refused"]
    assert (refused["format"], refused["precision"]) == ("onnx", "int8")
    assert "generator.int8.onnx: below the int8 quality floor" in refused["reason"] and "99 dB" in refused["reason"]
    assert [r.as_dict() for r in opts.refused] == [refused]
    record = ValidationRecord.from_dict(refused["validation"], "refused")
    assert not record.passed and record.checks[0].name == "psnr_db" and record.checks[0].value < 99.0
    _print_summary(bundle.manifest, out)
    assert "left out: generator.int8.onnx: below the int8 quality floor" in " ".join(capsys.readouterr().out.split())
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("2", "0", "1")
    skipped = [c for c in suite.iter("testcase") if c.find("skipped") is not None]
    assert [c.get("name") for c in skipped] == ["generator.int8 (onnx)"]


@pytest.mark.slow
def test_an_export_refused_by_its_floor_writes_nothing_and_removes_its_synthetic_template(tmp_path, generator_ckpt,
                                                                                          monkeypatch):
    """An artifact below its floor refuses the export with one line saying by how much, and nothing is written; the
    gate's synthetic template (no template given) was written to a temporary folder, and is removed too."""
    import tempfile

    from framegen.exporters.errors import ExportValidationError
    from framegen.toolkit.export.bundle import export_bundle
    from framegen.toolkit.export.compress import CompressOptions

    scratch, work = tmp_path / "scratch", tmp_path / "work"
    scratch.mkdir()
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    opts = CompressOptions(calibration_frames=2, gate_frames=1, min_psnr_db=99.0)
    with pytest.raises(ExportValidationError, match=r"generator\.int8\.onnx: below the int8 quality floor.*"
                                                    r"dB below the floor 99 dB.*nothing written") as exc:
        export_bundle(generator_ckpt, work / "refused", formats=("onnx",), precisions=("int8",), compression=opts)
    assert "\n" not in str(exc.value)
    assert not list(work.iterdir()) and not list(scratch.iterdir()) and not opts.has_gate_data()


def test_cli_refuses_bad_compression_options_before_any_work(tmp_path, generator_ckpt, monkeypatch, capsys):
    import sys

    from framegen.toolkit import cli

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["framegen", "export", str(generator_ckpt), "-o", str(tmp_path / "b"),
                                          "-f", "onnx", "-p", "int8", *args])
        with pytest.raises(SystemExit) as exc:
            cli.main()
        return exc.value.code, capsys.readouterr().err

    code, err = run("--int8-target", "tflite")
    assert code == 2 and "error: --int8-target 'tflite': expected openvino, ort" in err and "Traceback" not in err
    code, err = run("--int8-calibration", "entropy")
    assert code == 2 and "error: --int8-calibration 'entropy': expected percentile, minmax" in err
    code, err = run("--min-psnr", "-3")
    assert code == 2 and "error: --min-psnr -3" in err
    code, err = run("--template", str(tmp_path / "nowhere"))
    assert code == 2 and "nowhere: no such template directory" in err
    assert not (tmp_path / "b").exists()


# ------------------------------------------------------------------------------------------------ Core ML

def test_coreml_mil_expands_compressed_weights_exactly_as_coremltools(compressed_coreml_bundle):
    from coremltools.converters.mil.frontend.milproto.load import load as load_mil
    from coremltools.models.utils import load_spec
    from framegen.runtimes.mil.program import MilProgram

    b = load_bundle(compressed_coreml_bundle)
    for precision, op_type in (("int8", "constexpr_affine_dequantize"), ("pal6", "constexpr_lut_to_dense")):
        art = b.find("generator", "coreml", precision)
        program = MilProgram(art.path)
        assert program.op_counts.get(op_type, 0) > 40 and program.precision == "fp16"
        spec = load_spec(str(art.path))
        mil = load_mil(spec, specification_version=spec.specificationVersion,
                       file_weights_dir=str(art.path / "Data" / "com.apple.CoreML" / "weights"))
        checked = 0
        for op in mil.functions["main"].operations:
            if op.op_type != op_type:
                continue
            if op_type == "constexpr_affine_dequantize":
                want = op.decompress(op.quantized_data.val, op.zero_point.val, op.scale.val, op.axis.val)
            else:
                want = op.decompress(op.lut.val, op.indices.val, op.shape.val)
                assert len(np.unique(want)) <= 64
            got = program._consts[op.outputs[0].name].numpy()
            assert got.dtype == want.dtype and np.array_equal(got, want)
            checked += 1
        assert checked == program.op_counts[op_type]
        assert art.entry["compute_precision"] == "fp16" and art.validation.runtime == "coreml-mil"


def test_coreml_compressed_sizes(compressed_coreml_bundle):
    int8 = _entry(compressed_coreml_bundle, "coreml", "int8")
    pal6 = _entry(compressed_coreml_bundle, "coreml", "pal6")
    fp32_bytes = 48.9e6  # the generator's fp32 package (12.2 M parameters)
    assert int8["bytes"] < 0.30 * fp32_bytes and pal6["bytes"] < 0.80 * int8["bytes"]  # 6 of 8 bits + LUTs
    psnr = [ValidationRecord.from_dict(e["validation"]).check("psnr_db").value for e in (int8, pal6)]
    assert psnr[0] > psnr[1]


# ------------------------------------------------------------------------------------------------ parity

@pytest.mark.slow
def test_parity_judges_compressed_artifacts_under_their_profiles(int8_onnx_bundle, compressed_coreml_bundle,
                                                                 generator_ckpt, prepared_template,
                                                                 parity_features):
    from framegen.toolkit.compare.overrides import parse_tolerance
    from framegen.toolkit.parity.engine import Candidate, run_parity

    kw = {"frames": 2, "silence_frames": 0, "tolerances": "fixed", "locate": False}
    cml = run_parity(compressed_coreml_bundle, generator_ckpt, prepared_template, parity_features,
                     candidates=[Candidate("coreml-mil", "int8"), Candidate("coreml-mil", "pal6")], **kw)
    by = {c.candidate.precision: c for c in cml.candidates}
    for precision in ("int8", "pal6"):
        c = by[precision]
        assert c.profile.startswith(precision) and c.frames == 2
        frame = next(s for s in c.stages if s.stage == "final_frame")
        assert frame.limits == {"max_abs": 96, "min_psnr_db": 30.0}
    assert by["int8"].passed, by["int8"].failures()  # 8-bit weights keep ~40 dB on this checkpoint

    onnx = run_parity(int8_onnx_bundle, generator_ckpt, prepared_template, parity_features,
                      candidates=[Candidate("openvino", "int8")], **kw)
    c = onnx.candidates[0]
    assert c.profile == "int8" and not c.passed
    assert any("psnr_db" in line and "< 30" in line for line in c.failures())
    # the user moves the floor: parity's --tolerance overrides apply to compressed profiles too
    lowered = run_parity(int8_onnx_bundle, generator_ckpt, prepared_template, parity_features,
                         candidates=[Candidate("openvino", "int8")],
                         overrides=parse_tolerance("final_frame.max_abs=255",
                                                   parse_tolerance("final_frame.min_psnr_db=10")), **kw)
    assert lowered.candidates[0].passed, lowered.candidates[0].failures()
