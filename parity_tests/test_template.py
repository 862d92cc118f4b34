"""Reading real-world (messy) templates, synthesising templates, and `framegen template inspect|synth`."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import require_fixture
from framegen.toolkit.inputs.preprocess import crop_328, crop_box
from framegen.toolkit.inputs.synth import generate_track, synth_template
from framegen.toolkit.inputs.template import TemplateError, open_template, read_landmarks
from framegen.toolkit.inputs.template_check import inspect_template


def build(src: Path, dst: Path, count: int, image_base: int = 0, lms_base: int = 0, ext: str = ".jpg") -> Path:
    """A template of ``src``'s first ``count`` frames, images numbered from ``image_base``, landmarks from
    ``lms_base`` (how ffmpeg-extracted datasets arrive)."""
    (dst / "full_body_img").mkdir(parents=True)
    (dst / "landmarks").mkdir()
    for k in range(count):
        image = src / "full_body_img" / f"{k}.jpg"
        if ext == ".jpg":
            shutil.copyfile(image, dst / "full_body_img" / f"{k + image_base}.jpg")
        else:
            cv2.imwrite(str(dst / "full_body_img" / f"{k + image_base}{ext}"), cv2.imread(str(image)))
        shutil.copyfile(src / "landmarks" / f"{k}.lms", dst / "landmarks" / f"{k + lms_base}.lms")
    return dst


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run ``framegen ARGS`` in-process through the console-script entry point; (exit code, stdout, stderr)."""
    from framegen.toolkit.cli import main

    monkeypatch.setattr(sys, "argv", ["framegen", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out, captured.err


def ref_box_from_file(path: Path) -> list[int]:
    lms = np.array([np.array(line.split(" "), dtype=np.float32) for line in path.read_text().splitlines()],
                   dtype=np.int32)
    return [int(lms[1][0]), int(lms[52][1]), int(lms[31][0]), int(lms[52][1] + lms[31][0] - lms[1][0])]


# ---- reading ----


def test_open_synthetic_template(synth_template_dir: Path) -> None:
    template = open_template(synth_template_dir)
    assert len(template) == 12 and (template.width, template.height) == (1280, 720)
    assert template.warnings == []
    assert [f.image.name for f in template.frames] == [f"{k}.jpg" for k in range(12)]  # numeric, not 0,1,10,11,2
    assert [f.landmarks.name for f in template.frames] == [f"{k}.lms" for k in range(12)]
    for f in template.frames:
        assert np.array_equal(template.read_landmarks(f.index), read_landmarks(f.landmarks))
    image = template.read_image(11)
    assert image.shape == (720, 1280, 3) and image.dtype == np.uint8
    assert np.array_equal(image, cv2.imread(str(template.frames[11].image)))


def test_images_from_1_and_landmarks_from_0_pair_in_order(synth_template_dir: Path, tmp_path: Path) -> None:
    root = build(synth_template_dir, tmp_path / "t", 6, image_base=1)
    template = open_template(root)
    assert [(f.image.name, f.landmarks.name) for f in template.frames] == [
        (f"{k + 1}.jpg", f"{k}.lms") for k in range(6)]
    assert len(template.warnings) == 1 and "1..6" in template.warnings[0] and "0..5" in template.warnings[0]
    assert template.numbering == {"images": "1..6", "landmarks": "0..5"}
    source = open_template(synth_template_dir)
    assert np.array_equal(template.read_image(0), source.read_image(0))


def test_png_images_are_accepted(synth_template_dir: Path, tmp_path: Path) -> None:
    root = build(synth_template_dir, tmp_path / "t", 3, ext=".png")
    template = open_template(root)
    assert [f.image.name for f in template.frames] == ["0.png", "1.png", "2.png"]
    assert np.array_equal(template.read_image(2), open_template(synth_template_dir).read_image(2))  # lossless


def test_stray_files_are_ignored_with_a_warning(synth_template_dir: Path, tmp_path: Path) -> None:
    root = build(synth_template_dir, tmp_path / "t", 3)
    (root / "full_body_img" / "notes.txt").write_text("x")
    (root / "landmarks" / ".DS_Store").write_text("x")
    template = open_template(root)
    assert len(template) == 3 and len(template.warnings) == 1 and "notes.txt" in template.warnings[0]


@pytest.mark.parametrize(("breakage", "message"), [
    ("drop_lms", r"3 images but 2 landmark files \(no landmark file for full_body_img/1\.jpg\)"),
    ("drop_image", r"2 images but 3 landmark files \(no image for landmarks/2\.lms\)"),
    ("no_lms_dir", r"landmarks: missing"),
    ("no_images", r"full_body_img: no numbered images"),
    ("duplicate", r"both 1\.jpg and 1\.png claim frame 1"),
])
def test_structural_problems(synth_template_dir: Path, tmp_path: Path, breakage: str, message: str) -> None:
    root = build(synth_template_dir, tmp_path / "t", 3)
    if breakage == "drop_lms":
        (root / "landmarks" / "1.lms").unlink()
    elif breakage == "drop_image":
        (root / "full_body_img" / "2.jpg").unlink()
    elif breakage == "no_lms_dir":
        shutil.rmtree(root / "landmarks")
    elif breakage == "no_images":
        for p in (root / "full_body_img").iterdir():
            p.unlink()
    elif breakage == "duplicate":
        shutil.copyfile(root / "full_body_img" / "1.jpg", root / "full_body_img" / "1.png")
    with pytest.raises(TemplateError, match=message):
        open_template(root)


@pytest.mark.parametrize(("content", "message"), [
    ("".join(f"{k} {k}\n" for k in range(109)), "109 landmark lines, expected 110"),
    ("".join(f"{k} {k}\n" for k in range(111)), "111 landmark lines, expected 110"),
    ("".join(f"{k} {k}\n" for k in range(60)) + "12 abc\n" + "".join(f"{k} {k}\n" for k in range(49)),
     "line 61: 'abc' is not a number"),
    ("".join(f"{k} {k}\n" for k in range(30)) + "1 2 3\n" + "".join(f"{k} {k}\n" for k in range(79)),
     "line 31 has 3 values"),
    ("".join(f"{k} {k}\n" for k in range(109)) + "nan 4\n", "line 110: landmark coordinate is not a finite"),
    ("", "0 landmark lines"),
])
def test_malformed_landmark_file_is_named(synth_template_dir: Path, tmp_path: Path, content: str,
                                          message: str) -> None:
    root = build(synth_template_dir, tmp_path / "t", 4)
    (root / "landmarks" / "2.lms").write_text(content)
    with pytest.raises(TemplateError, match=rf"landmarks/2\.lms: {message}"):
        open_template(root)


def test_several_malformed_files_are_counted(synth_template_dir: Path, tmp_path: Path) -> None:
    root = build(synth_template_dir, tmp_path / "t", 4)
    for k in (1, 3):
        (root / "landmarks" / f"{k}.lms").write_text("1 2\n")
    with pytest.raises(TemplateError, match=r"landmarks/1\.lms: 1 landmark lines.*and 1 more malformed"):
        open_template(root)


@pytest.mark.parametrize(("breakage", "message"), [
    ("truncate", r"2\.jpg: truncated JPEG"),
    ("garbage", r"2\.jpg: cannot be decoded as an image"),
    ("empty", r"2\.jpg: empty image file"),
    ("resize", r"2\.jpg: 640x360 but the template's frames are 1280x720"),
])
def test_bad_image_is_named(synth_template_dir: Path, tmp_path: Path, breakage: str, message: str) -> None:
    root = build(synth_template_dir, tmp_path / "t", 4)
    path = root / "full_body_img" / "2.jpg"
    data = path.read_bytes()
    if breakage == "truncate":
        path.write_bytes(data[: len(data) * 2 // 3])
    elif breakage == "garbage":
        path.write_bytes(b"not an image at all" * 100)
    elif breakage == "empty":
        path.write_bytes(b"")
    elif breakage == "resize":
        cv2.imwrite(str(path), cv2.resize(cv2.imread(str(path)), (640, 360)))
    template = open_template(root)  # landmarks and the first image are fine
    assert template.read_image(1).shape == (720, 1280, 3)
    with pytest.raises(TemplateError, match=message):
        template.read_image(2)
    assert list(template.check_images()) == [2]
    report = inspect_template(root)
    assert not report["usable"] and report["usable_frames"] == 3
    assert "error" in report["frames"][2] and len(report["errors"]) == 1


def test_undecodable_first_image_fails_open(synth_template_dir: Path, tmp_path: Path) -> None:
    root = build(synth_template_dir, tmp_path / "t", 3)
    (root / "full_body_img" / "0.jpg").write_bytes(b"\xff\xd8garbage\xff\xd9")
    with pytest.raises(TemplateError, match=r"full_body_img/0\.jpg: cannot be decoded"):
        open_template(root)


# ---- synthesis ----


def test_synth_follows_the_real_track(synth_template_dir: Path) -> None:
    real = require_fixture("landmarks_1280x720")
    template = open_template(synth_template_dir)
    previous = None
    for f in template.frames:
        assert f.landmarks.read_bytes() == (real / f"{f.index}.lms").read_bytes()  # copied byte for byte
        crop = crop_328(template.read_image(f.index), crop_box(template.read_landmarks(f.index)))
        gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
        assert crop.std() > 20 and cv2.Laplacian(gray, cv2.CV_64F).var() > 5  # structure, not flat colour
        packed = crop.astype(np.int32) @ np.array([1, 256, 65536], np.int32)
        assert len(np.unique(packed)) > 1000  # gradients, not a few flat fills
        if previous is not None:
            assert np.abs(crop.astype(int) - previous).mean() > 1.0  # it moves
        previous = crop.astype(int)


def test_synth_is_deterministic_and_seeded(tmp_path: Path) -> None:
    a = synth_template(tmp_path / "a", frames=3, width=320, height=240, seed=5)
    b = synth_template(tmp_path / "b", frames=3, width=320, height=240, seed=5)
    c = synth_template(tmp_path / "c", frames=3, width=320, height=240, seed=6)
    files = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "full_body_img/0.jpg").read_bytes() != (c / "full_body_img/0.jpg").read_bytes()
    template = open_template(a)
    assert (template.width, template.height) == (320, 240) and template.warnings == []
    lines = (a / "landmarks/1.lms").read_text().splitlines()
    assert len(lines) == 110 and all(len(line.split(" ")) == 2 and line.replace(" ", "").lstrip("-").isdigit()
                                     for line in lines)
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize(("width", "height"), [(1280, 720), (640, 360), (360, 640), (96, 64)])
def test_generated_track_boxes_lie_inside_the_frame(width: int, height: int) -> None:
    track = generate_track(300, width, height, seed=1)
    assert track.shape == (300, 110, 2) and track.dtype == np.int32
    boxes = np.array([crop_box(lms) for lms in track])
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    sides = boxes[:, 2] - boxes[:, 0]
    assert sides.min() >= 0.15 * min(width, height)
    assert len({tuple(b) for b in boxes.tolist()}) > 20  # the head moves
    mouth = track[:, 108, 1] - track[:, 104, 1]
    assert mouth.max() - mouth.min() >= 0.04 * sides.mean()  # the mouth opens and closes


def test_synth_refuses_bad_requests(tmp_path: Path, synth_template_dir: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(TemplateError, match="already exists and is not an empty directory"):
        synth_template(tmp_path / "full", frames=2)
    with pytest.raises(TemplateError, match="12 landmark files, 13 frames asked"):
        synth_template(tmp_path / "n", frames=13, landmarks_dir=synth_template_dir / "landmarks")
    with pytest.raises(Exception, match=r"0\.lms in a 640x360 frame: crop box .* leaves the 640x360 frame"):
        synth_template(tmp_path / "small", frames=2, width=640, height=360,
                       landmarks_dir=synth_template_dir / "landmarks")
    assert not (tmp_path / "n").exists() and not (tmp_path / "small").exists()


# ---- CLI ----


def test_cli_inspect_json_on_renumbered_template(synth_template_dir: Path, tmp_path: Path, monkeypatch,
                                                   capsys) -> None:
    root = build(synth_template_dir, tmp_path / "t", 12, image_base=1)
    preview = tmp_path / "preview.png"
    code, out, err = run_cli(monkeypatch, capsys, "template", "inspect", str(root), "--json", "--preview",
                             str(preview))
    assert code == 0, err
    report = json.loads(out)
    assert report["count"] == 12 and report["usable"] and report["usable_frames"] == 12
    assert (report["width"], report["height"]) == (1280, 720)
    assert len(report["warnings"]) == 1 and "1..12" in report["warnings"][0] and "0..11" in report["warnings"][0]
    assert report["errors"] == []
    for k, frame in enumerate(report["frames"]):
        assert frame["index"] == k
        assert frame["image"] == f"full_body_img/{k + 1}.jpg" and frame["landmarks"] == f"landmarks/{k}.lms"
        assert frame["box"] == ref_box_from_file(root / "landmarks" / f"{k}.lms")  # the real track's, with ../shared
    sheet = cv2.imread(str(preview))
    assert sheet is not None and sheet.shape[1] == 4 * 192 and sheet.std() > 10


def test_cli_inspect_text_and_failure(synth_template_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    root = build(synth_template_dir, tmp_path / "t", 3)
    code, out, _ = run_cli(monkeypatch, capsys, "template", "inspect", str(root))
    assert code == 0 and "1280x720" in out and "full_body_img/2.jpg" in out and "usable" in out
    path = root / "full_body_img" / "1.jpg"
    path.write_bytes(path.read_bytes()[:1000])
    code, out, err = run_cli(monkeypatch, capsys, "template", "inspect", str(root), "--json")
    assert code == 2 and "Traceback" not in err
    assert "error:" in err and "full_body_img/1.jpg: truncated JPEG" in err
    assert json.loads(out)["usable"] is False
    (root / "landmarks" / "2.lms").unlink()
    code, out, err = run_cli(monkeypatch, capsys, "template", "inspect", str(root))
    assert code == 2 and "no landmark file for full_body_img/2.jpg" in err and out == ""


def test_cli_inspect_bad_box(synth_template_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    root = build(synth_template_dir, tmp_path / "t", 3)
    lms = read_landmarks(root / "landmarks" / "1.lms")
    lms[:, 1] -= int(lms[52, 1]) + 3
    (root / "landmarks" / "1.lms").write_text("".join(f"{x} {y}\n" for x, y in lms.tolist()))
    code, _, err = run_cli(monkeypatch, capsys, "template", "inspect", str(root))
    assert code == 2 and "frame 1 (full_body_img/1.jpg)" in err and "leaves the 1280x720 frame" in err
    code, out, _ = run_cli(monkeypatch, capsys, "template", "inspect", str(root), "--json", "--skip-bad-boxes")
    report = json.loads(out)
    assert code == 0 and report["usable"] and report["usable_frames"] == 2 and "error" in report["frames"][1]


def test_cli_synth(tmp_path: Path, monkeypatch, capsys) -> None:
    out_dir = tmp_path / "s"
    code, out, err = run_cli(monkeypatch, capsys, "template", "synth", str(out_dir), "--frames", "2", "--width",
                             "320", "--height", "240", "--seed", "3")
    assert code == 0, err
    assert "2 frames, 320x240" in out
    assert len(open_template(out_dir)) == 2
    code, _, err = run_cli(monkeypatch, capsys, "template", "synth", str(out_dir))
    assert code == 2 and "already exists" in err
