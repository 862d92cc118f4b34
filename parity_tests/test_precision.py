"""Precision by CPU (issue 28): the CPU's bf16 / int8 units, the order ``--precision auto`` tries per CPU, the bf16
verdict export records on the fp32 artifact (judged on the trained demo checkpoint), and what auto reads from it."""

from __future__ import annotations

import json
import shutil

import pytest
from framegen.runtimes.native import cpu_units
from framegen.toolkit.bench.precision import choose_precision, precision_order

AMX = frozenset({"avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8"})
ZEN4 = frozenset({"avx512f", "avx512_bf16", "avx512_vnni"})
AVX2 = frozenset({"avx2", "fma"})


def test_units_and_order_follow_the_cpu_flags():
    assert cpu_units("bf16", AMX).units == ("amx_bf16", "avx512_bf16")
    assert cpu_units("int8", ZEN4).units == ("avx512_vnni",)
    none = cpu_units("bf16", AVX2)
    assert not none.native
    assert none.reason == "bf16: this CPU has no bf16 units (none of amx_bf16, avx512_bf16 in its flags)"
    assert cpu_units("fp32", frozenset()).native
    assert precision_order(AMX)[0] == ["bf16", "int8", "fp32"]
    assert precision_order(ZEN4)[0] == ["int8", "bf16", "fp32"]
    order, why = precision_order(AVX2)
    assert order == ["int8", "fp32"] and "no bf16 units" in why


def test_auto_needs_what_the_bundle_proved(bundle_dir, tmp_path):
    """A bundle with only fp32 / fp16 proves nothing about bf16 or int8: auto stays at fp32 and says why each other
    precision was passed over; without a bundle it is fp32 too."""
    choice = choose_precision(bundle_dir, flags=AMX)
    assert choice.precision == "fp32"
    assert any(c.startswith("bf16: not judged at export") for c in choice.considered)
    assert any(c.startswith("int8: no int8 ONNX generator") for c in choice.considered)
    assert choose_precision(None).precision == "fp32"
    import framegen

    listed = framegen.backends(bundle=bundle_dir, precision="auto")
    assert listed.precision_choice.startswith("fp32: the fp32 contract")
    assert "at precision fp32" in listed.auto_reason and listed.cpu["vector_extensions"] is not None


def test_a_malformed_compute_record_is_refused_in_one_line(tmp_path):
    from framegen.models.bundle import load_bundle
    from framegen.models.errors import FramegenError

    (tmp_path / "g.onnx").write_bytes(b"x")
    entry = {"model": "generator", "format": "onnx", "precision": "fp32", "path": "g.onnx",
             "compute": {"bf16": {"schema": "framegen-validation/1", "kind": "quality-floor"}}}
    (tmp_path / "manifest.json").write_text(json.dumps({"source": {"mode": "ave"}, "artifacts": [entry]}))
    with pytest.raises(FramegenError) as info:
        load_bundle(tmp_path)
    assert "artifacts[0].compute.bf16" in str(info.value) and "\n" not in str(info.value)


@pytest.fixture(scope="module")
def demo_bf16_bundle(tmp_path_factory):
    """The trained demo generator exported to ONNX fp32 with its bf16 compute judged (where the CPU has bf16)."""
    from framegen.models.demo import load_demo_generator
    from framegen.models.io import save_generator
    from framegen.toolkit.export.bundle import export_bundle

    if not cpu_units("bf16").native:
        pytest.skip("this CPU has no bf16 units: export cannot judge bf16 here")
    root = tmp_path_factory.mktemp("demo_bf16")
    ckpt = save_generator(load_demo_generator(), root / "demo.pth")
    return export_bundle(ckpt, root / "bundle", formats=("onnx",), precisions=("fp32", "bf16"))


@pytest.mark.slow
def test_export_judges_bf16_on_the_trained_checkpoint_and_auto_uses_it(demo_bf16_bundle, tmp_path):
    """On the trained demo generator, bf16 compute clears its floor by a wide margin (measure_bf16.py, against the
    30 dB / 96-level floor: the shipped hour-wc weights 53.7 dB and 4 levels; phase 4 53.7 dB, 19 levels; phase 3
    52.1 dB, 55 levels; phase 2 54.7 dB, 17 levels); auto takes it on an AMX CPU, and no longer once the record is
    gone or failed."""
    from framegen.models.bundle import load_bundle

    art = load_bundle(demo_bf16_bundle).find("generator", "onnx", "fp32")
    record = art.compute_validation("bf16")
    assert record is not None and record.passed and record.runtime == "openvino"
    assert record.check("psnr_db").value > 45 and record.check("max_level_error").value < 72
    if "amx_bf16" in cpu_units("bf16").units:
        choice = choose_precision(demo_bf16_bundle)
        assert choice.precision == "bf16" and "proven at export" in choice.reason
    failed = tmp_path / "failed"
    shutil.copytree(demo_bf16_bundle, failed)
    manifest = json.loads((failed / "manifest.json").read_text())
    manifest["artifacts"][0]["compute"]["bf16"]["passed"] = False
    manifest["artifacts"][0]["compute"]["bf16"]["reason"] = "below the floor"
    (failed / "manifest.json").write_text(json.dumps(manifest))
    choice = choose_precision(failed, flags=AMX)
    assert choice.precision == "fp32" and "bf16: below its floor (below the floor)" in choice.considered


def test_export_refuses_bf16_where_it_cannot_be_judged(generator_ckpt, tmp_path, monkeypatch):
    """No bf16 units: `framegen export --precision fp32,bf16` fails in one line and writes nothing."""
    from framegen.models.errors import FramegenError
    from framegen.runtimes.native import PrecisionUnits
    from framegen.toolkit.export import compress
    from framegen.toolkit.export.bundle import export_bundle

    monkeypatch.setattr(compress, "cpu_units", lambda p: PrecisionUnits(p, False, (), f"{p}: this CPU has no {p} "
                                                                                     "units (none of x)"))
    with pytest.raises(FramegenError) as info:
        export_bundle(generator_ckpt, tmp_path / "b", formats=("onnx",), precisions=("fp32", "bf16"))
    assert "cannot be judged here" in str(info.value) and not (tmp_path / "b").exists()
