"""Hardening: bundles stay inside their folder, malformed files get one line, signals and full disks leave nothing.

Each probe here failed on the code before the fix (a bundle that read /etc/passwd, tracebacks for `artifacts: 5`,
`.out.mp4.partial` after SIGTERM, two renders mixing their outputs, `--stats` failing after the mp4 was in place,
`--chunk-ms nan`, a 100000x100000 template). The property-based tests feed the three readers of outside files
(manifest, ``.lms``, golden index) arbitrary input: each gives a result or one FramegenError, never another exception.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from framegen.models.bundle import BundleError, load_bundle
from framegen.models.errors import FramegenError
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

# ------------------------------------------------------------------------------------------- bundle containment


def _bundle(tmp: Path, artifacts: object, *, model: bytes = b"not really onnx") -> Path:
    root = tmp / "bundle"
    root.mkdir()
    (root / "generator.fp32.onnx").write_bytes(model)
    (root / "manifest.json").write_text(json.dumps({"source": {"mode": "ave"}, "artifacts": artifacts}))
    return root


def _entry(path: object, **extra: object) -> dict[str, object]:
    return {"model": "generator", "format": "onnx", "precision": "fp32", "io": "tensor", "path": path, **extra}


def test_a_plain_bundle_loads(tmp_path):
    b = load_bundle(_bundle(tmp_path, [_entry("generator.fp32.onnx")]))
    assert b.find().path == tmp_path / "bundle" / "generator.fp32.onnx"


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside/gen.onnx", "sub/../../outside/gen.onnx",
                                  "//etc/passwd"])
def test_a_manifest_path_outside_the_bundle_is_refused(tmp_path, path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "gen.onnx").write_bytes(b"x")
    with pytest.raises(BundleError, match=r"artifacts\[0\].*leaves the bundle folder"):
        load_bundle(_bundle(tmp_path, [_entry(path)]))


def test_an_absolute_path_to_a_real_model_is_refused(tmp_path):
    target = tmp_path / "elsewhere.onnx"
    target.write_bytes(b"x")
    with pytest.raises(BundleError, match="leaves the bundle folder"):
        load_bundle(_bundle(tmp_path, [_entry(str(target))]))


def test_a_symlink_inside_the_bundle_pointing_outside_is_refused(tmp_path):
    root = _bundle(tmp_path, [_entry("generator.fp32.onnx")])
    outside = tmp_path / "secret.onnx"
    outside.write_bytes(b"x")
    (root / "generator.fp32.onnx").unlink()
    (root / "generator.fp32.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match="leads outside the bundle folder"):
        load_bundle(root)


def test_a_symlink_inside_a_package_folder_pointing_outside_is_refused(tmp_path):
    root = _bundle(tmp_path, [_entry("g.mlpackage", format="coreml")])
    pkg = root / "g.mlpackage" / "Data"
    pkg.mkdir(parents=True)
    (pkg / "weights.bin").symlink_to("/etc/passwd")
    with pytest.raises(BundleError, match="links outside the bundle folder"):
        load_bundle(root)


def test_a_symlinked_manifest_is_refused(tmp_path):
    root = _bundle(tmp_path, [_entry("generator.fp32.onnx")])
    real = tmp_path / "manifest.json"
    shutil.move(root / "manifest.json", real)
    (root / "manifest.json").symlink_to(real)
    with pytest.raises(BundleError, match="outside the bundle folder"):
        load_bundle(root)


@pytest.mark.parametrize(("artifacts", "message"), [
    ([{}], r"artifacts\[0\] needs a non-empty string 'model'"),
    (5, "'artifacts' must be a list, not int"),
    ([_entry(None)], r"artifacts\[0\] needs a non-empty string 'path'"),
    ([_entry("generator.fp32.onnx", io="video")], "io 'video' is not one of"),
    ([_entry("generator.fp32.onnx", sha256=7)], "sha256 7 is not 64 lowercase hex digits"),
    ([_entry("generator.fp32.onnx", format="tflite")], "format 'tflite' is not one of"),
    (["generator.fp32.onnx"], r"artifacts\[0\] is str, expected an object"),
])
def test_a_malformed_manifest_gets_one_line(tmp_path, artifacts, message):
    with pytest.raises(BundleError, match=message) as info:
        load_bundle(_bundle(tmp_path, artifacts))
    assert "\n" not in str(info.value)


def _cli(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "framegen.toolkit.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_render_and_backends_refuse_an_escaping_bundle_without_a_traceback(tmp_path, bundle_dir,
                                                                           synth_template_dir, fake_features):
    """The real ONNX model, moved outside, with the manifest pointing at it by an absolute path: exit 2, one line,
    no video (before the fix: exit 0 and a rendered video)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(bundle_dir / "generator.fp32.onnx", outside / "gen.onnx")
    root = tmp_path / "evil"
    root.mkdir()
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    entry = next(e for e in manifest["artifacts"] if e["model"] == "generator" and e["format"] == "onnx"
                 and e["precision"] == "fp32" and e.get("io", "tensor") == "tensor")
    manifest["artifacts"] = [{**entry, "path": str(outside / "gen.onnx")}]
    (root / "manifest.json").write_text(json.dumps(manifest))
    np.save(tmp_path / "f.npy", fake_features[:4])
    proc = _cli(["render", "-t", str(synth_template_dir), "-f", str(tmp_path / "f.npy"), "-b", str(root),
                 "--backend", "ort-cpu", "-o", str(tmp_path / "o.mp4")], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "leaves the bundle folder" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.mp4").exists()
    proc = _cli(["backends", "--bundle", str(root)], tmp_path)
    assert "Traceback" not in proc.stderr and "leaves the bundle folder" in proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------ property-based readers

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
                     lambda children: st.lists(children, max_size=4)
                     | st.dictionaries(st.text(max_size=10), children, max_size=5), max_leaves=20)
_entry_like = st.fixed_dictionaries(
    {}, optional={"model": st.sampled_from(["generator", "audio_encoder", "x"]) | _json,
                  "format": st.sampled_from(["onnx", "coreml"]) | _json,
                  "precision": st.sampled_from(["fp32", "fp16"]) | _json,
                  "io": st.sampled_from(["tensor", "image"]) | _json,
                  "path": st.sampled_from(["generator.fp32.onnx", "../x", "/etc/passwd", "", "a/../b", "nope"])
                  | _json,
                  "sha256": _json})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(manifest=st.one_of(_json, st.fixed_dictionaries({"source": st.just({"mode": "ave"}) | _json,
                                                        "artifacts": st.lists(_entry_like, max_size=3) | _json})))
def test_any_manifest_loads_or_gets_one_framegen_error(tmp_path_factory, manifest):
    root = tmp_path_factory.mktemp("b")
    (root / "generator.fp32.onnx").write_bytes(b"x")
    (root / "manifest.json").write_text(json.dumps(manifest))
    try:
        b = load_bundle(root)
    except FramegenError as exc:
        assert "\n" not in str(exc)
        return
    for a in b.artifacts:
        assert a.path.resolve().is_relative_to(root.resolve())


_lms_line = st.one_of(
    st.tuples(st.integers(-5000, 5000), st.integers(-5000, 5000)).map(lambda p: f"{p[0]} {p[1]}"),
    st.tuples(st.floats(allow_nan=True, allow_infinity=True), st.floats()).map(lambda p: f"{p[0]} {p[1]}"),
    st.text(max_size=20))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_lms_line, min_size=0, max_size=115), crlf=st.booleans(),
       raw=st.one_of(st.none(), st.binary(max_size=200)))
def test_any_lms_file_parses_or_gets_one_framegen_error(tmp_path_factory, lines, crlf, raw):
    from framegen.toolkit.inputs.template import read_landmarks

    path = tmp_path_factory.mktemp("lms") / "0.lms"
    path.write_bytes(raw if raw is not None else ("\r\n" if crlf else "\n").join(lines).encode("utf-8", "replace"))
    try:
        lms = read_landmarks(path)
    except FramegenError as exc:
        assert "\n" not in str(exc)
        return
    assert lms.shape == (110, 2) and lms.dtype == np.int32


def _golden_index(files: object, stages: object = None, tolerances: object = None) -> dict[str, object]:
    from framegen.toolkit.parity.golden import FORMAT, VERSION

    stage = {"name": "crop_box", "dtype": "int32", "shape": [4]}
    return {"format": FORMAT, "version": VERSION, "stages": [stage] if stages is None else stages,
            "cases": [{"case": 0, "files": files, "crop_box": [0, 0, 4, 4]}],
            "tolerances": {"fp32": {"crop_box": {"max_abs": 0}}} if tolerances is None else tolerances}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.one_of(st.just({"crop_box": "case_000/crop_box.bin"}), _json,
                       st.dictionaries(st.sampled_from(["crop_box", "frame"]),
                                       st.sampled_from(["case_000/crop_box.bin", "../x.bin", "/etc/passwd"]) | _json,
                                       max_size=2)),
       stages=st.none() | _json, tolerances=st.none() | _json, payload=st.binary(max_size=24))
# A well-formed crop box whose check needs the golden set's landmarks, which this index does not list (found by CI).
@example(files={"crop_box": "case_000/crop_box.bin"}, stages=None, tolerances=None, payload=bytes(16))
def test_any_golden_index_checks_or_gets_one_framegen_error(tmp_path_factory, files, stages, tolerances, payload):
    from framegen.toolkit.parity.golden_check import check_golden

    golden = tmp_path_factory.mktemp("g")
    cand = tmp_path_factory.mktemp("c")
    for root in (golden, cand):
        (root / "case_000").mkdir()
        (root / "case_000" / "crop_box.bin").write_bytes(payload)
    (golden / "index.json").write_text(json.dumps(_golden_index(files, stages, tolerances)))
    try:
        report = check_golden(golden, cand)
    except FramegenError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(report.passed, bool)


def test_a_golden_index_pointing_outside_is_refused(tmp_path):
    from framegen.toolkit.parity.golden import GoldenError
    from framegen.toolkit.parity.golden_check import check_golden

    golden, cand = tmp_path / "g", tmp_path / "c"
    golden.mkdir()
    cand.mkdir()
    (golden / "index.json").write_text(json.dumps(_golden_index({"crop_box": "../secret.bin"})))
    with pytest.raises(GoldenError, match=r"leaves the bundle folder|outside"):
        check_golden(golden, cand)


# ---------------------------------------------------------------------------------------- signals and outputs


def _start_render(tmp_path: Path, template: Path, ckpt: Path, feats: Path, out: Path, *extra: str
                  ) -> subprocess.Popen[str]:
    # Started with SIGINT ignored, as a script's background job inherits it: SIGINT must interrupt it all the same.
    return subprocess.Popen([sys.executable, "-m", "framegen.toolkit.cli", "render", "-t", str(template), "-f",
                             str(feats), "-c", str(ckpt), "--backend", "torch-cpu", "-o", str(out), *extra],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))


def _wait_for_partial(folder: Path, proc: subprocess.Popen[str], limit: float = 240.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        if any(".partial" in p.name or p.name.endswith(".lock") for p in folder.iterdir()):
            time.sleep(1.0)  # a few frames into the work
            return
        time.sleep(0.2)
    pytest.fail(f"render never started writing (rc {proc.poll()})")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_render_leaves_nothing_and_exits_128_plus_the_signal(tmp_path, synth_template_dir,
                                                                             generator_ckpt, fake_features, sig):
    feats = tmp_path / "f.npy"
    np.save(feats, np.tile(fake_features, (20, 1))[:400])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = _start_render(tmp_path, synth_template_dir, generator_ckpt, feats, out_dir / "o.mp4", "--frames-dir",
                         str(out_dir / "frames"))
    _wait_for_partial(out_dir, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("terminated" if sig == signal.SIGTERM else "interrupted"), err
    assert sorted(p.name for p in out_dir.iterdir()) == []


def test_two_runs_to_one_output_end_with_one_complete_output_or_a_refusal(tmp_path, synth_template_dir,
                                                                          generator_ckpt, fake_features):
    feats = tmp_path / "f.npy"
    np.save(feats, np.tile(fake_features, (4, 1))[:40])
    out = tmp_path / "o.mp4"
    first = _start_render(tmp_path, synth_template_dir, generator_ckpt, feats, out, "--max-frames", "12")
    _wait_for_partial(tmp_path, first)
    second = _cli(["render", "-t", str(synth_template_dir), "-f", str(feats), "-c", str(generator_ckpt),
                   "--backend", "torch-cpu", "-o", str(out), "--max-frames", "3"], tmp_path)
    assert second.returncode == 2 and "another framegen run is writing it now" in second.stderr
    first.communicate(timeout=600)
    assert first.returncode == 0
    from framegen.toolkit.frames.video import probe_video

    assert probe_video(out)["frames"] == 12
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name or p.name.endswith(".lock")]


def test_a_stale_partial_of_a_killed_run_is_cleaned_by_the_next(tmp_path):
    from framegen.models.atomic import atomic_output

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    pid = int(dead.stdout)
    stale = tmp_path / f".out.json.{pid}-0123abcd.partial"
    stale.write_text("half")
    stale_dir = tmp_path / f".out.json.{pid}-89abcdef.partial"
    stale_dir.mkdir()
    live = tmp_path / f".out.json.{os.getppid()}-00000000.partial"  # a process that exists: kept
    live.write_text("busy")
    with atomic_output(tmp_path / "out.json") as tmp:
        tmp.write_text("{}")
    assert not stale.exists() and not stale_dir.exists() and live.exists()


def _mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                          check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here ({proc.stderr.decode().strip()})")


@pytest.fixture
def tiny_disks(tmp_path):
    """A 1 MB tmpfs (fills at once) and a read-only one."""
    full, ro = tmp_path / "full", tmp_path / "ro"
    _mount_tmpfs(full, "size=1m")
    _mount_tmpfs(ro, "ro,size=1m")
    yield full, ro
    for p in (full, ro):
        subprocess.run(["umount", "-l", str(p)], check=False)


@pytest.mark.parametrize("where", ["out-ro", "frames-full", "mp4-full", "stats-ro"])
def test_read_only_and_full_disks_get_one_line_and_leave_nothing(tmp_path, tiny_disks, synth_template_dir,
                                                                generator_ckpt, fake_features, where):
    full, ro = tiny_disks
    feats = tmp_path / "f.npy"
    np.save(feats, np.tile(fake_features, (4, 1))[:30])
    out = tmp_path / "o.mp4"
    args = {"out-ro": ["-o", str(ro / "o.mp4")],
            "frames-full": ["-o", str(out), "--frames-dir", str(full / "frames")],
            "mp4-full": ["-o", str(full / "o.mp4"), "--crf", "0"],
            "stats-ro": ["-o", str(out), "--stats", str(ro / "s.json")]}[where]
    proc = _cli(["render", "-t", str(synth_template_dir), "-f", str(feats), "-c", str(generator_ckpt),
                 "--backend", "torch-cpu", "--max-frames", "30", *args], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "cannot write" in last and "Traceback" not in proc.stderr
    assert not out.exists()  # --stats is checked before the video is made
    assert list(full.iterdir()) == []


# --------------------------------------------------------------------------------- absurd and non-finite input


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, 0.0, 1e12])
def test_a_non_finite_or_absurd_chunk_is_refused(value):
    from framegen.toolkit.frames.stream import StreamError, chunk_samples

    with pytest.raises(StreamError, match="--chunk-ms"):
        chunk_samples(value)


def test_stream_cli_refuses_nan_chunks_in_one_line(tmp_path):
    proc = _cli(["stream", "-c", "x.pth", "-t", "t", "--audio", "a.wav", "--chunk-ms", "nan", "-o", "o.mp4"],
                tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_a_channels_first_array_is_refused_not_read_as_thousands_of_channels(prepared_template):
    from framegen.toolkit.frames.stream import StreamError
    from fx_stream import light_session

    session = light_session(prepared_template)
    with pytest.raises(StreamError, match="channels-first"):
        session.feed(np.zeros((2, 16000), dtype=np.float32))
    assert session.feed(np.zeros((1600, 2), dtype=np.float32)) == []  # (n, channels) still works


def test_an_unallocatable_template_is_refused_up_front(tmp_path):
    proc = _cli(["template", "synth", str(tmp_path / "t"), "--width", "100000", "--height", "100000"], tmp_path)
    assert proc.returncode == 2 and "at most 7680x4320" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "t").exists()


def test_a_hostile_pickle_is_refused_as_not_a_state_dict(tmp_path):
    import torch

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo PWNED",))

    path = tmp_path / "evil.pth"
    torch.save({"a": Evil()}, path)
    proc = _cli(["checkpoint", "inspect", str(path)], tmp_path)
    assert proc.returncode == 2 and "PWNED" not in proc.stdout
    assert "refused: not a plain state dict" in proc.stderr and "weights_only=False" not in proc.stderr
    assert "corrupt" not in proc.stderr
