"""`framegen --version`, `framegen checkpoint inspect|init` and `framegen backends`.

Error paths run the real entry point in a subprocess (``python -m toolkit.cli``), so that ``toolkit.cli.main``'s
handling is what is tested: exit code 2, one ``error:`` line on stderr, no traceback. Successful commands run in
process through Typer's runner to keep the suite fast.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from framegen.models import AudioEncoder
from framegen.models.checkpoint import encoder_state_for_saving, load_audio_encoder, load_generator, sha256_file
from framegen.models.init import audio_like_batch, image_like_batch
from framegen.models.version import __version__
from framegen.toolkit.cli import app
from typer.testing import CliRunner


def _framegen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "toolkit.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)


def _invoke(*args: str):
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.stdout + result.stderr
    return result


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_version():
    assert _invoke("--version").stdout.strip() == f"framegen {__version__}"
    assert __version__ == importlib.metadata.version("framegen")


def test_backends_json():
    proc = _framegen("backends", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert all({"name", "available", "reason"} <= set(r) for r in rows)
    assert all(isinstance(r["available"], bool) and isinstance(r["reason"], str) and r["reason"] for r in rows)
    names = [r["name"] for r in rows]
    assert len(names) == len(set(names))
    cpu = next(r for r in rows if r["name"] == "torch-cpu")
    assert cpu["available"] is True


def test_inspect_json(generator_ckpt):
    result = _invoke("checkpoint", "inspect", str(generator_ckpt), "--json")
    info = json.loads(result.stdout)
    assert info["kind"] == "generator"
    assert (info["mode"], info["possible_modes"], info["mode_assumed"]) == ("ave", ["ave", "hubert"], True)
    assert info["parameters"] == 12_186_935
    assert info["tensors"] == 556 and info["dtype"] == "float32"
    assert info["file_size"] == generator_ckpt.stat().st_size
    assert len(info["sha256"]) == 64
    assert "assumed" in result.stderr  # the assumption is said where a person reads it, not only in the JSON


def test_inspect_table(encoder_ckpt):
    result = _invoke("checkpoint", "inspect", str(encoder_ckpt))
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines() if line.strip())
    assert lines["kind"] == "audio_encoder"
    assert lines["parameters"] == "2812672"


def test_init_is_seeded(tmp_path):
    a, b, c = tmp_path / "a.pth", tmp_path / "b.pth", tmp_path / "c.pth"
    _invoke("checkpoint", "init", str(a), "--seed", "5")
    _invoke("checkpoint", "init", str(b), "--seed", "5")
    _invoke("checkpoint", "init", str(c), "--seed", "6")
    ta, tb, tc = _tensors(a), _tensors(b), _tensors(c)
    assert _equal(ta, tb)
    # Same weights, same bytes (the archive is not named after a unique temporary file): caches keyed by the file's
    # sha256, such as parity's tolerance measurements, hit again after a re-save.
    assert sha256_file(a) == sha256_file(b) != sha256_file(c)
    assert list(ta) == list(tc)
    assert all(not torch.equal(ta[k], tc[k]) for k in ta if k.endswith("conv.0.weight"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pth", "b.pth", "c.pth"]  # no temporary left over


def test_init_calibrate_spreads_the_output(tmp_path, calibrated_generator):
    """Measured on image-like inputs (seed 0, 'ave'): calibrated std ~0.19 spanning 0.00..0.99; uncalibrated the
    output is nearly constant (std 0.01, all values within 0.48..0.50)."""
    cal, raw = tmp_path / "cal.pth", tmp_path / "raw.pth"
    _invoke("checkpoint", "init", str(cal), "--calibrate")
    _invoke("checkpoint", "init", str(raw))
    # Same seed, same tensors, calibration included: the file equals the suite's calibrated generator.
    assert _equal(_tensors(cal), calibrated_generator.state_dict())
    gen = torch.Generator().manual_seed(1234)
    image, audio = image_like_batch(2, gen), audio_like_batch("ave", 2, gen)
    with torch.no_grad():
        y_cal = load_generator(cal)(image, audio)
        y_raw = load_generator(raw)(image, audio)
    mid_cal = float(((y_cal > 0.05) & (y_cal < 0.95)).float().mean())
    assert float(y_cal.std()) > 0.15
    assert float(y_cal.min()) < 0.05 and float(y_cal.max()) > 0.95
    assert mid_cal > 0.8
    assert float(y_raw.std()) < 0.05  # what calibration fixes: a nearly constant picture
    # Different inputs give different pictures (the output is not one image regardless of input).
    assert float((y_cal[0] - y_cal[1]).abs().mean()) > 0.05


def test_init_audio_encoder_is_prefixless(tmp_path, audio_encoder):
    path = tmp_path / "audio_visual_encoder.pth"
    result = _invoke("checkpoint", "init", str(path), "--kind", "audio-encoder")
    assert "audio encoder" in result.stdout
    stored = _tensors(path)
    assert not any(k.startswith("audio_encoder.") for k in stored)
    assert next(iter(stored)) == "0.conv_block.0.weight"
    loaded = load_audio_encoder(path)
    assert _equal(loaded.state_dict(), audio_encoder.state_dict())  # seed 0, like the suite's encoder
    # test_models ties this layout to SyncTalk_2D's audio_visual_encoder.pth.
    expected = encoder_state_for_saving(AudioEncoder())
    assert [(k, v.shape) for k, v in stored.items()] == [(k, v.shape) for k, v in expected.items()]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, generator_ckpt) -> dict[str, Path]:
    """A text file, a truncated checkpoint and a directory, for the error paths."""
    base = tmp_path_factory.mktemp("bad_cli")
    text = base / "notes.pth"
    text.write_text("this is not a checkpoint\n")
    half = base / "half.pth"
    data = generator_ckpt.read_bytes()
    half.write_bytes(data[: len(data) // 2])
    folder = base / "folder.pth"
    folder.mkdir()
    return {"text": text, "truncated": half, "missing": base / "nope.pth", "directory": folder}


@pytest.mark.parametrize(("args", "file", "fragment"), [
    (("checkpoint", "inspect"), "missing", "no such checkpoint file"),
    (("checkpoint", "inspect", "--json"), "text", "a text file, not a PyTorch checkpoint"),
    (("checkpoint", "inspect"), "truncated", "truncated or corrupt PyTorch checkpoint"),
    (("checkpoint", "init"), "directory", "is a directory"),
])
def test_cli_errors_are_one_line(bad_files, args, file, fragment):
    path = bad_files[file]
    proc = _framegen(*args, str(path))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert str(path) in lines[0] and fragment in lines[0]
    assert proc.stdout == ""


@pytest.mark.parametrize(("args", "names"), [
    (("stream", "--latency-budget-ms", "-5"), ("--latency-budget-ms", "greater than or equal to 0",
                                               "framegen stream --help")),
    (("render", "--bogus"), ("--bogus", "framegen render --help")),
    (("render",), ("--template", "framegen render --help")),
    (("bench", "--batch"), ("--batch", "requires an argument")),
    (("nosuch",), ("nosuch", "framegen --help")),
])
def test_usage_errors_are_one_line_too(args, names):
    """An unknown option or command, a value out of range, a missing option: the same one line and exit 2 as
    framegen's own errors (typer prints these as a multi-line box unless its entry point says otherwise)."""
    proc = _framegen(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert all(n in lines[0] for n in names), lines[0]
    assert "Traceback" not in proc.stderr and "╭" not in proc.stderr and proc.stdout == ""
