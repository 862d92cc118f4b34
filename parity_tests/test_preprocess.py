"""Preprocessing and paste-back against a literal restatement of SyncTalk_2D's inference_328.py, bit for bit."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import require_fixture
from framegen.models.contract import MASK_COLS, MASK_ROWS
from framegen.toolkit.inputs.preprocess import (
    PreparedTemplate,
    PreprocessError,
    check_box,
    crop_328,
    crop_box,
    frame_order,
    model_input,
    paste_back,
    pingpong_index,
    pred_to_uint8,
    to_i420,
)
from framegen.toolkit.inputs.template import open_template, read_landmarks

# ---- SyncTalk_2D, restated line by line from inference_328.py (the numbers every port must reproduce) ----


def ref_load_lms(path: Path) -> np.ndarray:
    lms_list = []
    with open(path) as f:
        lines = f.read().splitlines()
        for line in lines:
            arr = line.split(" ")
            arr = np.array(arr, dtype=np.float32)
            lms_list.append(arr)
    return np.array(lms_list, dtype=np.int32)


def ref_box(lms: np.ndarray) -> tuple[int, int, int, int]:
    xmin = lms[1][0]
    ymin = lms[52][1]
    xmax = lms[31][0]
    width = xmax - xmin
    ymax = ymin + width
    return xmin, ymin, xmax, ymax


def ref_preprocess(img: np.ndarray, lms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 6-channel input (as numpy) and crop_img_ori, exactly as the reference computes them."""
    xmin, ymin, xmax, ymax = ref_box(lms)
    crop_img = img[ymin:ymax, xmin:xmax]
    crop_img = cv2.resize(crop_img, (328, 328), interpolation=cv2.INTER_CUBIC)
    crop_img_ori = crop_img.copy()
    img_real_ex = crop_img[4:324, 4:324].copy()
    img_real_ex_ori = img_real_ex.copy()
    img_masked = cv2.rectangle(img_real_ex_ori, (5, 5, 310, 305), (0, 0, 0), -1)
    img_masked = img_masked.transpose(2, 0, 1).astype(np.float32)
    img_real_ex = img_real_ex.transpose(2, 0, 1).astype(np.float32)
    img_concat = np.concatenate([img_real_ex / 255.0, img_masked / 255.0], axis=0)
    return img_concat, crop_img_ori


def ref_paste(img: np.ndarray, lms: np.ndarray, crop_img_ori: np.ndarray, pred_chw: np.ndarray) -> np.ndarray:
    img = img.copy()
    crop_img_ori = crop_img_ori.copy()
    xmin, ymin, xmax, ymax = ref_box(lms)
    h, w = img[ymin:ymax, xmin:xmax].shape[:2]
    pred = pred_chw.transpose(1, 2, 0) * 255
    pred = np.array(pred, dtype=np.uint8)
    crop_img_ori[4:324, 4:324] = pred
    crop_img_ori = cv2.resize(crop_img_ori, (w, h), interpolation=cv2.INTER_CUBIC)
    img[ymin:ymax, xmin:xmax] = crop_img_ori
    return img


def ref_order(files: int, outputs: int, start_frame: int = 0) -> list[int]:
    len_img = files - 1
    step_stride = 0
    img_idx = 0
    order = []
    for _ in range(outputs):
        if img_idx > len_img - 1:
            step_stride = -1
        if img_idx < 1:
            step_stride = 1
        img_idx += step_stride
        order.append(img_idx + start_frame)
    return order


# ---- helpers ----


def real_lms_files() -> list[Path]:
    folder = require_fixture("landmarks_1280x720")
    return sorted(folder.glob("*.lms"), key=lambda p: int(p.stem))


def test_real_track_fixture_is_the_named_one() -> None:
    """The real track is the one the issue names (guards the tests below against a silently different fixture)."""
    files = real_lms_files()
    assert [int(p.stem) for p in files] == list(range(523))


def predictions(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """Model-like outputs in [0, 1], rich in values whose *255 lands on or just below an integer."""
    preds = []
    for _ in range(count):
        p = rng.random((3, 320, 320), dtype=np.float32)
        levels = rng.integers(0, 256, size=(3, 320, 320)).astype(np.float32) / np.float32(255)
        use_levels = rng.random((3, 320, 320)) < 0.3
        p[use_levels] = levels[use_levels]
        p[0, :4, :4] = 0.0
        p[1, :4, :4] = 1.0
        preds.append(p)
    return preds


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# ---- crop boxes on the real track ----


def test_landmarks_and_boxes_match_reference_on_real_track() -> None:
    files = real_lms_files()
    for path in files:
        ours = read_landmarks(path)
        ref = ref_load_lms(path)
        assert ours.dtype == np.int32 and ours.shape == (110, 2)
        assert np.array_equal(ours, ref), path
        assert crop_box(ours) == tuple(int(v) for v in ref_box(ref)), path
        check_box(crop_box(ours), 1280, 720, path.name)


def test_landmarks_float_values_truncate_like_reference(tmp_path: Path) -> None:
    path = tmp_path / "0.lms"
    rows = [f"{x + 0.9} {-y - 0.7}" for x, y in zip(range(110), range(110), strict=True)]
    path.write_text("\r\n".join(rows) + "\r\n")
    ours = read_landmarks(path)
    assert np.array_equal(ours, ref_load_lms(path))
    assert ours[5].tolist() == [5, -5]  # toward zero, not floor or round


# ---- the 6-channel input ----


def test_mask_constants_are_what_cv2_rectangle_draws() -> None:
    img = np.full((320, 320, 3), 7, np.uint8)
    cv2.rectangle(img, (5, 5, 310, 305), (0, 0, 0), -1)
    expected = np.full((320, 320), True)
    expected[MASK_ROWS, MASK_COLS] = False
    assert np.array_equal(img[:, :, 0] != 0, expected)


def test_model_input_bit_exact_on_synthetic_template(synth_template_dir: Path) -> None:
    template = open_template(synth_template_dir)
    for i in range(len(template)):
        img, lms = template.read_image(i), template.read_landmarks(i)
        ref, _ = ref_preprocess(img, lms)
        ours = model_input(crop_328(img, crop_box(lms)))
        assert bits_equal(ours, ref), f"frame {i}"
        assert ours[:3].std() > 0.05 and ours[3:, MASK_ROWS, MASK_COLS].max() == 0.0


def test_model_input_bit_exact_on_noise_frames_with_real_boxes() -> None:
    """Noise stresses the cubic kernel's overshoot and saturation; boxes from across the real track."""
    rng = np.random.default_rng(1)
    files = real_lms_files()
    for path in files[:: len(files) // 8]:
        lms = ref_load_lms(path)
        img = rng.integers(0, 256, size=(720, 1280, 3), dtype=np.uint8)
        ref, _ = ref_preprocess(img, lms)
        out = np.zeros((6, 320, 320), np.float32)
        ours = model_input(crop_328(img, crop_box(read_landmarks(path))), out=out)
        assert ours is out
        assert bits_equal(ours, ref), path.name


# ---- paste-back ----


def test_pred_to_uint8_truncates_like_numpy_cast() -> None:
    rng = np.random.default_rng(2)
    (pred,) = predictions(rng, 1)
    ours = pred_to_uint8(pred)
    ref = np.array(pred.transpose(1, 2, 0) * 255, dtype=np.uint8)
    assert bits_equal(ours, ref)
    rounded = np.rint(pred.transpose(1, 2, 0) * 255).astype(np.uint8)
    assert (rounded != ref).mean() > 0.2  # the data tells truncation from rounding


def test_pred_to_uint8_clamps_out_of_range_and_nan() -> None:
    pred = np.zeros((3, 320, 320), np.float32)
    pred[0, 0, :4] = [-0.5, 1.5, np.nan, 1.0]
    assert pred_to_uint8(pred)[0, :4, 0].tolist() == [0, 255, 0, 255]


def test_paste_back_bit_exact_on_real_boxes(synth_template_dir: Path) -> None:
    template = open_template(synth_template_dir)
    rng = np.random.default_rng(3)
    for i, pred in zip(range(len(template)), predictions(rng, len(template)), strict=True):
        img, lms = template.read_image(i), template.read_landmarks(i)
        _, crop_img_ori = ref_preprocess(img, lms)
        ref = ref_paste(img, lms, crop_img_ori, pred)
        box = crop_box(lms)
        crop = crop_328(img, box)
        before = img.copy()
        ours = paste_back(img, box, crop, pred)
        assert bits_equal(ours, ref), f"frame {i}"
        assert np.array_equal(img, before) and np.array_equal(crop, crop_img_ori)  # inputs untouched
        assert bits_equal(paste_back(img, box, crop, pred_to_uint8(pred)), ref)
        x0, y0, x1, y1 = box
        outside = np.ones(img.shape[:2], bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(ours[outside], img[outside])
        assert not np.array_equal(ours[y0:y1, x0:x1], img[y0:y1, x0:x1])


def test_paste_back_uses_the_crop_border() -> None:
    """The reference resizes the whole 328 crop back, so its 4-pixel border reaches the box edge."""
    img = np.full((100, 100, 3), 50, np.uint8)
    box = (10, 10, 60, 60)
    crop = crop_328(img, box)
    pred = np.full((3, 320, 320), 200 / 255, np.float32)
    bordered = crop.copy()
    bordered[:4] = 0
    a, b = paste_back(img, box, crop, pred), paste_back(img, box, bordered, pred)
    assert not np.array_equal(a[10, 10:60], b[10, 10:60])


# ---- boxes that do not fit ----


@pytest.mark.parametrize("box", [(-1, 10, 50, 61), (10, -1, 50, 39), (90, 10, 130, 50), (10, 80, 50, 120),
                                 (50, 10, 50, 10), (60, 10, 50, 0)])
def test_check_box_rejects_boxes_outside_or_empty(box: tuple[int, int, int, int]) -> None:
    with pytest.raises(PreprocessError, match="frame 7"):
        check_box(box, 100, 100, "frame 7")


# ---- frame order ----


@pytest.mark.parametrize("files", range(2, 10))
def test_frame_order_is_the_reference_loop(files: int) -> None:
    assert frame_order(files, 70) == ref_order(files, 70)
    assert frame_order(files, 1) == [1]


@pytest.mark.parametrize(("files", "start"), [(5, 1), (9, 3), (12, 7), (12, 10), (523, 100)])
def test_start_frame_matches_reference_while_in_range(files: int, start: int) -> None:
    count = 3 * files
    ours = frame_order(files, count, start)
    ref = ref_order(files, count, start)
    in_range = next(k for k, v in enumerate(ref) if v >= files)  # where the reference reads past the last frame
    assert in_range >= files - start - 1 >= 1
    assert ours[:in_range] == ref[:in_range]
    assert ours == [start + k for k in ref_order(files - start, count)]
    assert min(ours) == start and max(ours) == files - 1


def test_single_frame_and_last_start_repeat_one_frame() -> None:
    assert frame_order(1, 6) == [0] * 6
    assert frame_order(8, 6, start=7) == [7] * 6
    assert pingpong_index(10**9, 4) == ref_order(4, 10**3)[(10**9) % 6]


@pytest.mark.parametrize(("files", "start"), [(5, 5), (5, -1), (0, 0)])
def test_bad_start_frame(files: int, start: int) -> None:
    with pytest.raises(PreprocessError):
        frame_order(files, 3, start)


# ---- PreparedTemplate ----


def copy_template(src: Path, dst: Path, count: int) -> Path:
    for sub in ("full_body_img", "landmarks"):
        (dst / sub).mkdir(parents=True)
    for k in range(count):
        shutil.copyfile(src / "full_body_img" / f"{k}.jpg", dst / "full_body_img" / f"{k}.jpg")
        shutil.copyfile(src / "landmarks" / f"{k}.lms", dst / "landmarks" / f"{k}.lms")
    return dst


def test_prepared_template_matches_direct_computation(prepared_template: PreparedTemplate) -> None:
    template = prepared_template.template
    assert len(prepared_template) == len(template) and prepared_template.usable_indices == list(range(len(template)))
    for i in range(len(template)):
        img, lms = template.read_image(i), template.read_landmarks(i)
        prepared = prepared_template.prepared(i)
        assert prepared.index == i and prepared.box == crop_box(lms)
        assert np.array_equal(prepared.crop328, crop_328(img, prepared.box))
        assert bits_equal(prepared.image_input(), ref_preprocess(img, lms)[0])
        assert prepared_template.prepared(i) is prepared
        assert np.array_equal(prepared_template.frame(i), img)
        assert not prepared.crop328.flags.writeable and not prepared_template.frame(i).flags.writeable


def test_frame_cache_respects_budget(synth_template_dir: Path) -> None:
    template = open_template(synth_template_dir)
    frame_bytes = template.width * template.height * 3
    prepared = PreparedTemplate(template, cache_bytes=int(2.5 * frame_bytes))
    frames = [prepared.frame(i) for i in range(len(template))]
    assert prepared.cached_frame_bytes == 2 * frame_bytes
    assert prepared.frame(0) is frames[0] and prepared.frame(5) is not frames[5]  # kept vs decoded again
    assert all(np.array_equal(prepared.frame(i), template.read_image(i)) for i in (0, 5))
    none = PreparedTemplate(template, cache_bytes=0)
    assert np.array_equal(none.prepared(3).crop328, prepared.prepared(3).crop328)
    assert none.cached_frame_bytes == 0
    # The I420 forms the H.264 writer starts from share the budget: the one that fits is kept, the rest are made
    # again on every call, and each equals the conversion of the decoded frame.
    i420 = [prepared.frame_i420(i) for i in range(len(template))]
    assert prepared.cached_frame_bytes == 2 * frame_bytes + frame_bytes // 2
    assert prepared.frame_i420(0) is i420[0] and prepared.frame_i420(5) is not i420[5]
    assert all(np.array_equal(prepared.frame_i420(i), to_i420(template.read_image(i))) for i in (0, 5))
    assert none.frame_i420(2).shape == (template.height * 3 // 2, template.width) and none.cached_frame_bytes == 0


def test_prepared_template_is_thread_safe(synth_template_dir: Path) -> None:
    template = open_template(synth_template_dir)
    prepared = PreparedTemplate(template)
    n = len(template)
    results: list[list] = [[] for _ in range(4)]
    barrier = threading.Barrier(4)

    def worker(k: int) -> None:
        barrier.wait()
        order = list(range(n)) if k % 2 == 0 else list(reversed(range(n)))
        results[k] = [(prepared.prepared(i), prepared.frame(i)) for i in order for _ in range(2)]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(n):
        seen = {id(p) for res in results for p, _ in res if p.index == i}
        assert len(seen) == 1  # computed once, shared by every thread
        assert np.array_equal(prepared.prepared(i).crop328, crop_328(template.read_image(i), prepared.boxes[i]))
    assert prepared.cached_frame_bytes == n * template.width * template.height * 3


def test_bad_box_names_the_frame_unless_skipped(synth_template_dir: Path, tmp_path: Path) -> None:
    root = copy_template(synth_template_dir, tmp_path / "t", 6)
    lms_path = root / "landmarks" / "3.lms"
    lms = read_landmarks(lms_path)
    lms[:, 0] += 1280 - int(lms[31, 0]) + 5  # push the box past the right edge
    lms_path.write_text("".join(f"{x} {y}\n" for x, y in lms.tolist()))
    template = open_template(root)
    with pytest.raises(PreprocessError, match=r"frame 3 \(full_body_img/3\.jpg\).*leaves the 1280x720 frame"):
        PreparedTemplate(template)
    skipping = PreparedTemplate(template, skip_bad_boxes=True)
    assert skipping.usable_indices == [0, 1, 2, 4, 5] and len(skipping) == 5
    assert "full_body_img/3.jpg" in skipping.warnings[0]
    with pytest.raises(PreprocessError, match="frame 3"):
        skipping.prepared(3)
    usable = skipping.usable_indices
    assert skipping.order(12) == [usable[k] for k in frame_order(5, 12)]
    assert skipping.order(4, start=3) == [5, 4, 5, 4]  # a skipped start frame moves to the next usable one
    with pytest.raises(PreprocessError, match="start frame 6"):
        skipping.template_index(0, start=6)
