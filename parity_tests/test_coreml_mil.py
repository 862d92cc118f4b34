"""The ``coreml-mil`` verifier: Core ML ML programs executed op by op on Linux, checked against PyTorch and the MIL
spec, in fp32 and fp16, and shown to catch altered weights, unknown ops and fp16 overflow."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from framegen.models.contract import ENC_INPUT, GEN_AUDIO, GEN_IMAGE, GEN_OUTPUT
from framegen.models.errors import FramegenError

ct = pytest.importorskip("coremltools")

from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402
from framegen.runtimes.mil.ops import bilinear_grid  # noqa: E402
from framegen.runtimes.mil.program import (  # noqa: E402
    NAME,
    MilError,
    MilNonFiniteError,
    MilProgram,
    MilUnsupportedOpError,
    encoder_fn,
    run_mlpackage,
)

# Measured on the calibrated seed-0 'ave' generator, exporter's packages, image-like frames: fp32 program vs PyTorch
# max 1.3e-4..1.5e-4, mean 1.1e-5 -- as PyTorch vs PyTorch with BatchNorm folded into the convolutions (max 1.9e-4,
# mean 1.1e-5), which is what the converter does. fp16 program: mean 0.033..0.035, p99 0.15, max 0.37; PyTorch's own
# CPU half gives mean 0.039, max 0.43 on a similar frame: this seeded network amplifies fp16 rounding.
GEN_FP32_MAX, GEN_FP32_MEAN = 1e-3, 5e-5
GEN_FP16_MEAN_MIN, GEN_FP16_MEAN_MAX, GEN_FP16_MAX = 1e-3, 0.08, 0.8
# Audio encoder (embeddings up to ~3.7): fp32 max 8e-6..1.1e-5; fp16 max 0.013..0.017.
ENC_FP32_MAX, ENC_FP16_MIN, ENC_FP16_MAX = 1e-4, 1e-4, 0.1


def _convert(exported, names_in, name_out, path):
    """An fp32 ML program of a small exported module (for op-level checks)."""
    example = exported.example_inputs[0]
    model = ct.convert(exported, convert_to="mlprogram", compute_precision=ct.precision.FLOAT32,
                       inputs=[ct.TensorType(name=n, shape=tuple(t.shape)) for n, t in zip(names_in, example,
                                                                                          strict=True)],
                       outputs=[ct.TensorType(name=name_out)], minimum_deployment_target=ct.target.iOS16,
                       skip_model_load=True)
    model.save(str(path))
    return path


@pytest.fixture(scope="module")
def packages(tmp_path_factory, calibrated_generator, audio_encoder) -> dict[str, Path]:
    """The seeded generator and encoder as Core ML ML programs, fp32 and fp16, exported once by the exporter."""
    from framegen.exporters.coreml_export import export_encoder_coreml, export_generator_coreml, exported_program

    out = tmp_path_factory.mktemp("coreml_mil")
    gen_program = exported_program(calibrated_generator, "generator")
    enc_program = exported_program(audio_encoder, "audio_encoder")
    paths = {}
    for p in ("fp32", "fp16"):
        paths[f"generator_{p}"] = export_generator_coreml(calibrated_generator, out / f"generator_{p}.mlpackage", p,
                                                          program=gen_program)
        paths[f"encoder_{p}"] = export_encoder_coreml(audio_encoder, out / f"encoder_{p}.mlpackage", p,
                                                      program=enc_program)
    return paths


@pytest.fixture(scope="module")
def frame(calibrated_generator):
    """One image-like frame, its audio window, and PyTorch's output for it."""
    from framegen.models.init import audio_like_batch, image_like_batch

    gen = torch.Generator().manual_seed(123)
    image, audio = image_like_batch(1, gen), audio_like_batch("ave", 1, gen)
    with torch.no_grad():
        ref = calibrated_generator(image, audio).numpy()
    return image.numpy(), audio.numpy(), ref


@pytest.fixture(scope="module")
def fp32_result(packages, frame):
    """The fp32 generator program's output for ``frame``, through the registry's coreml-mil backend."""
    from framegen.runtimes.registry import open_backend
    from framegen.runtimes.spec import OpenRequest

    image, audio, _ = frame
    with open_backend(NAME, OpenRequest(artifact=packages["generator_fp32"])) as backend:
        info = backend.info
        out = backend.infer(image, audio)
    return info, out


def _mel_windows(n: int) -> np.ndarray:
    gen = torch.Generator().manual_seed(7)
    return (torch.randn(n, 1, 80, 16, generator=gen) * 1.5 - 1.0).clamp(-4, 4).numpy()


def _blob_of_first(package: Path, op_type: str, param: str = "weight") -> tuple[Path, int, int, str]:
    """(weight file, data offset, byte size, dtype) of the const feeding ``param`` of the first ``op_type`` op."""
    from coremltools.models.utils import load_spec

    fn = load_spec(str(package)).mlProgram.functions["main"]
    ops = list(fn.block_specializations[fn.opset].operations)
    target = next(op for op in ops if op.type == op_type).inputs[param].arguments[0].name
    const = next(op for op in ops if op.type == "const" and op.outputs[0].name == target)
    blob = const.attributes["val"].blobFileValue
    weights = package / "Data" / "com.apple.CoreML" / blob.fileName.removeprefix("@model_path/")
    _, code, size, offset = struct.unpack_from("<IIQQ", weights.read_bytes(), blob.offset)
    return weights, offset, size, {1: "float16", 2: "float32"}[code]


def _scale_blob(package: Path, op_type: str, factor: float) -> None:
    weights, offset, size, dtype = _blob_of_first(package, op_type)
    data = bytearray(weights.read_bytes())
    vals = np.frombuffer(bytes(data[offset:offset + size]), dtype=dtype) * factor
    data[offset:offset + size] = vals.astype(dtype).tobytes()
    weights.write_bytes(bytes(data))


def _save(prog, path: Path) -> Path:
    model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
                       compute_precision=ct.precision.FLOAT32, pass_pipeline=ct.PassPipeline.EMPTY,
                       skip_model_load=True)
    model.save(str(path))
    return path


# --- whole models against PyTorch --------------------------------------------------------------------------------

def test_generator_program_ops_match_the_module(packages, calibrated_generator):
    prog = MilProgram(packages["generator_fp16"])
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in calibrated_generator.modules())
    ups = sum(isinstance(m, torch.nn.Upsample) for m in calibrated_generator.modules())
    assert prog.op_counts["conv"] == convs == 93
    assert prog.op_counts["upsample_bilinear"] == ups == 5
    assert {"conv", "relu", "add", "concat", "upsample_bilinear", "sigmoid"} <= set(prog.op_types)
    assert prog.precision == "fp16" and MilProgram(packages["generator_fp32"]).precision == "fp32"


def test_generator_fp32_program_matches_pytorch(fp32_result, frame):
    info, out = fp32_result
    err = np.abs(out - frame[2])
    assert info.name == NAME and info.precision == "fp32" and info.mode == "ave" and info.extra["verifier"]
    assert out.dtype == np.float32 and out.shape == (1, 3, 320, 320)
    assert err.max() <= GEN_FP32_MAX and err.mean() <= GEN_FP32_MEAN, (err.max(), err.mean())
    assert out.std() > 0.1  # a calibrated generator's output spreads over [0, 1]; parity on it means something


def test_generator_fp16_program_really_computes_in_fp16(packages, frame, fp32_result):
    image, audio, ref = frame
    program = MilProgram(packages["generator_fp16"])
    out = program.run({GEN_IMAGE: image, GEN_AUDIO: audio})[GEN_OUTPUT]
    # The exporter keeps float32 I/O, so the program casts in and out; every value it returns is an fp16 value.
    assert program.op_counts.get("cast", 0) == 3 and out.dtype == np.float32
    np.testing.assert_array_equal(out, out.astype(np.float16).astype(np.float32))
    err = np.abs(out - ref)
    fp32_mean = np.abs(fp32_result[1] - ref).mean()
    assert err.mean() > max(GEN_FP16_MEAN_MIN, 20 * fp32_mean), (err.mean(), fp32_mean)
    assert err.mean() <= GEN_FP16_MEAN_MAX and err.max() <= GEN_FP16_MAX, (err.mean(), err.max())


def test_encoder_programs_match_pytorch(packages, audio_encoder):
    mel = _mel_windows(3)
    with torch.no_grad():
        ref = audio_encoder(torch.from_numpy(mel)).numpy()
    fp32 = encoder_fn(packages["encoder_fp32"])(mel)
    fp16 = encoder_fn(packages["encoder_fp16"])(mel)
    assert fp32.shape == fp16.shape == (3, 512) and fp16.dtype == np.float32
    assert np.abs(fp32 - ref).max() <= ENC_FP32_MAX
    assert ENC_FP16_MIN < np.abs(fp16 - ref).max() <= ENC_FP16_MAX
    assert np.abs(ref).max() > 1.0  # embeddings are not trivially small


@pytest.mark.parametrize("model", ["generator", "encoder"])
def test_altered_weights_are_caught(packages, frame, audio_encoder, tmp_path, model):
    bad = tmp_path / f"{model}.mlpackage"
    shutil.copytree(packages[f"{model}_fp32"], bad)
    _scale_blob(bad, "conv", 1.25)
    if model == "generator":
        image, audio, ref = frame
        out = run_mlpackage(bad, {GEN_IMAGE: image, GEN_AUDIO: audio})[GEN_OUTPUT]
    else:
        mel = _mel_windows(2)
        with torch.no_grad():
            ref = audio_encoder(torch.from_numpy(mel)).numpy()
        out = encoder_fn(bad)(mel)
    err = np.abs(out - ref)
    assert err.max() > 100 * (GEN_FP32_MAX if model == "generator" else ENC_FP32_MAX), err.max()


# --- the backend ------------------------------------------------------------------------------------------------

def test_backend_is_listed_as_an_available_verifier():
    from framegen.runtimes.registry import list_backends

    row = next(r for r in list_backends() if r["name"] == NAME)
    assert row["available"], row["reason"]
    assert "VERIFIER" in row["reason"] and "not Core ML" in row["reason"]
    assert "VERIFIER" in row["description"] and row["needs"] == "coreml"


def _bundle(root: Path, packages: dict[str, Path], precisions: dict[str, str]) -> Path:
    from framegen.models.bundle import sha256_path

    root.mkdir()
    arts = []
    for listed, actual in precisions.items():
        dest = root / f"generator_{listed}.mlpackage"
        shutil.copytree(packages[f"generator_{actual}"], dest)
        arts.append({"model": "generator", "format": "coreml", "precision": listed, "path": dest.name,
                     "sha256": sha256_path(dest)})
    (root / "manifest.json").write_text(json.dumps({"source": {"mode": "ave"}, "artifacts": arts}))
    return root


def test_backend_opens_a_bundles_artifact_and_refuses_bad_ones(packages, tmp_path):
    from framegen.runtimes.base import BackendError
    from framegen.runtimes.registry import open_backend
    from framegen.runtimes.spec import OpenRequest

    good = _bundle(tmp_path / "good", packages, {"fp16": "fp16"})
    with open_backend(NAME, OpenRequest(bundle=good, precision="fp16")) as backend:
        assert (backend.info.precision, backend.mode) == ("fp16", "ave")
        assert backend.info.extra["ops"]["conv"] == 93
    with pytest.raises(FramegenError, match="no generator coreml fp32"):
        open_backend(NAME, OpenRequest(bundle=good, precision="fp32"))
    mislabelled = _bundle(tmp_path / "mislabelled", packages, {"fp32": "fp16"})
    with pytest.raises(BackendError, match="computes in fp16"):
        open_backend(NAME, OpenRequest(bundle=mislabelled, precision="fp32"))
    _scale_blob(good / "generator_fp16.mlpackage", "conv", 1.25)
    with pytest.raises(BackendError, match="sha256"):
        open_backend(NAME, OpenRequest(bundle=good, precision="fp16"))
    with pytest.raises(BackendError, match="ave"):
        open_backend(NAME, OpenRequest(artifact=packages["generator_fp32"], mode="hubert"))


def test_backend_refuses_a_program_that_is_not_a_generator(packages):
    from framegen.runtimes.base import BackendError
    from framegen.runtimes.registry import open_backend
    from framegen.runtimes.spec import OpenRequest

    with pytest.raises(BackendError, match="not a framegen generator"):
        open_backend(NAME, OpenRequest(artifact=packages["encoder_fp32"], mode="ave"))


# --- the interpreter against the MIL spec, op by op --------------------------------------------------------------

def test_unknown_op_fails_naming_type_and_name(tmp_path):
    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4))], opset_version=ct.target.iOS16)
    def prog(x):
        return mb.tanh(x=mb.relu(x=x), name="my_tanh")

    path = _save(prog, tmp_path / "tanh.mlpackage")
    with pytest.raises(MilUnsupportedOpError, match=r"op tanh 'my_tanh'.*does not implement MIL op 'tanh'"):
        MilProgram(path)


def _np_conv(x, w, b, pads, strides, dilations, groups):
    """Direct float64 convolution: x [1, C, H, W], pads [top, bottom, left, right]."""
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pads[0], pads[1]), (pads[2], pads[3])))
    cout, cpg, kh, kw = w.shape
    oh = (x.shape[2] - (kh - 1) * dilations[0] - 1) // strides[0] + 1
    ow = (x.shape[3] - (kw - 1) * dilations[1] - 1) // strides[1] + 1
    out = np.zeros((1, cout, oh, ow))
    opg = cout // groups
    for o in range(cout):
        g = o // opg
        for c in range(cpg):
            for i in range(kh):
                for j in range(kw):
                    r0, c0 = i * dilations[0], j * dilations[1]
                    patch = x[0, g * cpg + c, r0:r0 + strides[0] * oh:strides[0], c0:c0 + strides[1] * ow:strides[1]]
                    out[0, o] += w[o, c, i, j] * patch
        out[0, o] += b[o]
    return out


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
@pytest.mark.parametrize(("pad_type", "pads", "strides", "dilations", "groups"), [
    ("custom", [1, 0, 2, 1], [2, 1], [1, 2], 2),
    ("same", None, [2, 3], [1, 1], 1),
    ("same_lower", None, [2, 2], [1, 1], 4),
    ("valid", None, [1, 1], [2, 1], 1),
])
def test_conv_follows_the_spec(tmp_path, dtype, pad_type, pads, strides, dilations, groups):
    rng = np.random.default_rng(3)
    npt = np.float16 if dtype == "fp16" else np.float32
    x = rng.normal(size=(1, 4, 9, 10)).astype(npt)
    w = rng.normal(size=(8, 4 // groups, 4, 3)).astype(npt)
    b = rng.normal(size=8).astype(npt)
    kw = {"pad": pads} if pads else {}

    @mb.program(input_specs=[mb.TensorSpec(shape=x.shape, dtype=types.fp16 if dtype == "fp16" else types.fp32)],
                opset_version=ct.target.iOS16)
    def prog(inp):
        return mb.conv(x=inp, weight=w, bias=b, pad_type=pad_type, strides=strides, dilations=dilations,
                       groups=groups, name="c", **kw)

    got = MilProgram(_save(prog, tmp_path / "conv.mlpackage")).run({"inp": x})
    got = next(iter(got.values()))
    # The spec's padding: "same" puts the odd pixel after, "same_lower" before; out = ceil(in / stride).
    if pad_type in ("same", "same_lower"):
        full = []
        for size, k, s in zip((9, 10), (4, 3), strides, strict=True):
            total = max(0, (-(-size // s) - 1) * s + k - size)
            lo, hi = total // 2, total - total // 2
            full += [lo, hi] if pad_type == "same" else [hi, lo]
        assert got.shape[2:] == (-(-9 // strides[0]), -(-10 // strides[1]))
    else:
        full = pads or [0, 0, 0, 0]
    ref = _np_conv(x, w, b, full, strides, dilations, groups)
    assert got.dtype == npt and got.shape == ref.shape
    if dtype == "fp32":
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    else:
        # fp16 operands, fp32 accumulation, one rounding: within one fp16 step of the exact result rounded to fp16.
        exact16 = ref.astype(np.float16)
        assert np.all(np.abs(got.astype(np.float64) - exact16) <= np.spacing(np.abs(exact16)))
        assert np.mean(got == exact16) > 0.95


def test_same_padding_is_pytorchs_padding_same(tmp_path):
    # PyTorch pads an even dilated kernel's odd pixel after (right/bottom) and coremltools maps it to pad_type
    # "same": an independent check of which side "same" pads.
    conv = torch.nn.Conv2d(3, 4, (4, 2), padding="same", dilation=(1, 3)).eval()
    x = torch.randn(1, 3, 9, 10, generator=torch.Generator().manual_seed(8))
    exported = torch.export.export(conv, (x,)).run_decompositions({})
    path = _convert(exported, ("x",), "y", tmp_path / "same.mlpackage")
    from coremltools.models.utils import load_spec

    fn = load_spec(str(path)).mlProgram.functions["main"]
    strings = [s for op in fn.block_specializations[fn.opset].operations if op.type == "const"
               for s in op.attributes["val"].immediateValue.tensor.strings.values]
    assert "same" in strings
    with torch.no_grad():
        np.testing.assert_allclose(run_mlpackage(path, {"x": x.numpy()})["y"], conv(x).numpy(), rtol=0, atol=1e-5)


def test_bilinear_grid_reproduces_the_spec_examples():
    np.testing.assert_allclose(bilinear_grid(2, 5, False, True), [0, 0.1, 0.5, 0.9, 1], atol=1e-12)
    np.testing.assert_allclose(bilinear_grid(2, 5, True, False), [0, 0.25, 0.5, 0.75, 1], atol=1e-12)
    np.testing.assert_allclose(bilinear_grid(2, 6, False, True), [0, 0, 1 / 3, 2 / 3, 1, 1], atol=1e-12)
    np.testing.assert_allclose(bilinear_grid(2, 6, True, False), [0, 0.2, 0.4, 0.6, 0.8, 1], atol=1e-12)
    np.testing.assert_allclose(bilinear_grid(2, 4, False, False), [0, 0.5, 1, 1], atol=1e-12)


@pytest.mark.parametrize(("align", "scale"), [(True, 2.0), (False, 2.0), (True, 1.5), (False, 2.5)])
def test_upsample_bilinear_matches_pytorch(tmp_path, align, scale):
    x = np.random.default_rng(4).normal(size=(1, 3, 5, 6)).astype(np.float32)

    @mb.program(input_specs=[mb.TensorSpec(shape=x.shape)], opset_version=ct.target.iOS16)
    def prog(inp):
        return mb.upsample_bilinear(x=inp, scale_factor_height=scale, scale_factor_width=scale, align_corners=align,
                                    name="up")

    got = next(iter(MilProgram(_save(prog, tmp_path / "up.mlpackage")).run({"inp": x}).values()))
    size = (int(5 * scale), int(6 * scale))
    # PyTorch with an explicit size spaces samples by in/out, as MIL does; half-pixel centres when not aligned.
    ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode="bilinear", align_corners=align)
    np.testing.assert_allclose(got, ref.numpy(), rtol=0, atol=2e-6)


def test_small_ops_follow_the_spec(tmp_path):
    rng = np.random.default_rng(5)
    a = rng.normal(size=(2, 3, 4)).astype(np.float32)
    b = (rng.normal(size=(1, 3, 1)) + 3).astype(np.float32)

    @mb.program(input_specs=[mb.TensorSpec(shape=a.shape), mb.TensorSpec(shape=b.shape)],
                opset_version=ct.target.iOS16)
    def prog(x, y):
        return (mb.sub(x=x, y=y, name="sub"), mb.mul(x=x, y=y, name="mul"), mb.real_div(x=x, y=y, name="div"),
                mb.maximum(x=x, y=y, name="max"), mb.minimum(x=x, y=y, name="min"),
                mb.clip(x=x, alpha=-0.5, beta=0.25, name="clip"), mb.sigmoid(x=x, name="sig"),
                mb.reshape(x=x, shape=[0, -1, 2], name="reshape"), mb.squeeze(x=y, axes=[0, 1, 2], name="squeeze"),
                mb.concat(values=[x, mb.mul(x=x, y=2.0)], axis=1, interleave=True, name="interleave"),
                mb.cast(x=x, dtype="fp16", name="to16"), mb.cast(x=mb.mul(x=x, y=3.0), dtype="int32", name="toint"),
                mb.identity(x=x, name="ident"))

    out = MilProgram(_save(prog, tmp_path / "small.mlpackage")).run({"x": a, "y": b})
    want = {"sub": a - b, "mul": a * b, "div": a / b, "max": np.maximum(a, b), "min": np.minimum(a, b),
            "clip": np.clip(a, -0.5, 0.25), "sig": (1 / (1 + np.exp(-a.astype(np.float64)))).astype(np.float32),
            "reshape": a.reshape(2, 6, 2), "squeeze": b.reshape(3),  # axis 1 (size 3) is ignored, PyTorch style
            "interleave": np.stack([a, a * 2], axis=2).reshape(2, 6, 4),
            "to16": a.astype(np.float16), "toint": (a * 3).astype(np.int32), "ident": a}
    assert set(out) == set(want)
    for name, ref in want.items():
        assert out[name].dtype == np.asarray(ref).dtype, name
        np.testing.assert_allclose(out[name], ref, rtol=1e-6, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(out["interleave"][:, 0::2], a)


def test_fp16_arithmetic_is_ieee_fp16_and_overflow_is_reported(tmp_path):
    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 1000), dtype=types.fp16),
                             mb.TensorSpec(shape=(1, 1000), dtype=types.fp16)], opset_version=ct.target.iOS16)
    def prog(x, y):
        s = mb.add(x=x, y=y, name="sum")
        big = mb.mul(x=mb.mul(x=x, y=np.float16(300), name="m1"), y=np.float16(300), name="boom")
        return s, big

    program = MilProgram(_save(prog, tmp_path / "fp16.mlpackage"))
    rng = np.random.default_rng(6)
    x = (rng.normal(size=(1, 1000)) * 0.5).astype(np.float16)
    y = (rng.normal(size=(1, 1000)) * 1e-3).astype(np.float16)
    out = program.run({"x": x, "y": y})
    np.testing.assert_array_equal(out["sum"], x + y)  # numpy's float16 add is correctly rounded IEEE fp16
    assert not np.array_equal(out["sum"].astype(np.float32), x.astype(np.float32) + y.astype(np.float32))
    ones = np.ones((1, 1000), np.float16)
    assert np.isinf(program.run({"x": ones, "y": ones})["boom"]).all()  # 90000 > fp16 max 65504
    with pytest.raises(MilNonFiniteError, match="op mul 'boom'"):
        program.run({"x": ones, "y": ones}, check_finite=True)


def test_inputs_are_checked_against_the_program(packages):
    prog = MilProgram(packages["encoder_fp32"])
    with pytest.raises(MilError, match=r"input 'mel' has shape \[1, 1, 80, 15\]"):
        prog.run({ENC_INPUT: np.zeros((1, 1, 80, 15), np.float32)})
    with pytest.raises(MilError, match="missing"):
        prog.run({"melody": np.zeros((1, 1, 80, 16), np.float32)})


def test_a_program_contradicting_its_declared_types_is_refused(packages, tmp_path):
    from coremltools.proto import Model_pb2

    bad = tmp_path / "enc.mlpackage"
    shutil.copytree(packages["encoder_fp32"], bad)
    spec_path = bad / "Data" / "com.apple.CoreML" / "model.mlmodel"
    spec = Model_pb2.Model()
    spec.ParseFromString(spec_path.read_bytes())
    fn = spec.mlProgram.functions["main"]
    conv = next(op for op in fn.block_specializations[fn.opset].operations if op.type == "conv")
    conv.outputs[0].type.tensorType.dimensions[1].constant.size += 1
    spec_path.write_bytes(spec.SerializeToString())
    with pytest.raises(MilError, match=r"op conv .* computes shape \[1, 32, 80, 16\].*declares fp32\[\?, 33, 80, 16\]"):
        MilProgram(bad).run({ENC_INPUT: _mel_windows(1)})


def test_missing_weight_file_is_a_clear_error(packages, tmp_path):
    bad = tmp_path / "enc.mlpackage"
    shutil.copytree(packages["encoder_fp16"], bad)
    (bad / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").unlink()
    with pytest.raises(MilError, match=r"weight\.bin is missing"):
        MilProgram(bad)
