"""Feature files for every mode and the U-Net's 16-frame audio windows, against SyncTalk_2D's get_audio_features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from framegen.models.contract import audio_shape
from framegen.toolkit.inputs.features import (
    FeatureError,
    audio_window,
    audio_windows,
    feature_width,
    fps,
    load_features,
    save_npy,
    validate_features,
)


def get_audio_features_restated(features: np.ndarray, index: int) -> torch.Tensor:
    """SyncTalk_2D's utils.get_audio_features, restated literally (including its zeros_like padding)."""
    left, right = index - 8, index + 8
    pad_left = pad_right = 0
    if left < 0:
        pad_left, left = -left, 0
    if right > features.shape[0]:
        pad_right, right = right - features.shape[0], features.shape[0]
    auds = torch.from_numpy(features[left:right])
    if pad_left > 0:
        auds = torch.cat([torch.zeros_like(auds[:pad_left]), auds], dim=0)
    if pad_right > 0:
        auds = torch.cat([auds, torch.zeros_like(auds[:pad_right])], dim=0)
    return auds


def reference_window(features: np.ndarray, index: int, mode: str) -> np.ndarray:
    """inference_328.py: get_audio_features then reshape to the mode's audio input."""
    return get_audio_features_restated(features, index).reshape(*audio_shape(mode)).numpy()


def test_widths_and_fps():
    assert {m: feature_width(m) for m in ("ave", "hubert", "wenet")} == {"ave": 512, "hubert": 2048, "wenet": 8192}
    assert {m: fps(m) for m in ("ave", "hubert", "wenet")} == {"ave": 25, "hubert": 25, "wenet": 20}
    with pytest.raises(FeatureError, match="unknown mode 'deepspeech'"):
        feature_width("deepspeech")


def test_ave_windows_equal_get_audio_features(real_ave_features):
    feats = real_ave_features
    assert feats.shape == (522, 512)
    ours = audio_windows(feats, np.arange(522), "ave")
    assert ours.shape == (522, 32, 16, 16) and ours.dtype == np.float32
    for i in range(522):
        assert np.array_equal(ours[i], reference_window(feats, i, "ave")), f"frame {i}"
    assert np.array_equal(audio_window(feats, 300, "ave"), ours[300])
    # Frame 0 has 8 zero rows first; the last frame has 7 zero rows last (rows i-8 .. i+7).
    flat = ours.reshape(522, 16, 512)
    assert not flat[0, :8].any() and np.array_equal(flat[0, 8:], feats[:8])
    assert not flat[-1, 9:].any() and np.array_equal(flat[-1, :9], feats[-9:])


@pytest.mark.parametrize(("mode", "per_frame"), [("hubert", (2, 1024)), ("hubert", (32, 64)), ("hubert", (2048,)),
                                                 ("wenet", (256, 32)), ("wenet", (8192,))])
def test_other_modes_any_per_frame_shape(tmp_path, mode, per_frame):
    n = 40
    raw = np.random.default_rng(3).standard_normal((n, *per_frame)).astype(np.float32)
    path = tmp_path / "feats.npy"
    np.save(path, raw)
    feats = load_features(path, mode)
    assert feats.shape == (n, feature_width(mode)) and feats.dtype == np.float32
    picked = [0, 1, 7, 8, 20, n - 9, n - 8, n - 1]
    ours = audio_windows(feats, picked, mode)
    assert ours.shape == (len(picked), *audio_shape(mode))
    for row, i in zip(ours, picked, strict=True):
        assert np.array_equal(row, reference_window(raw, i, mode))  # the reference sees the array as stored


def test_short_features_pad_both_sides():
    # Fewer than 8 frames: SyncTalk_2D's zeros_like(auds[:pad]) under-pads here (its window would not reshape);
    # framegen pads to the full 16 rows as the window definition says.
    feats = np.arange(5 * 512, dtype=np.float32).reshape(5, 512) + 1
    win = audio_window(feats, 2, "ave").reshape(16, 512)
    expected = np.zeros((16, 512), np.float32)
    expected[6:11] = feats
    assert np.array_equal(win, expected)


def test_index_out_of_range(real_ave_features):
    with pytest.raises(IndexError, match="frame 522"):
        audio_windows(real_ave_features, [0, 522], "ave")
    with pytest.raises(IndexError, match="frame -1"):
        audio_window(real_ave_features, -1, "ave")


def test_bin_equals_npy(tmp_path, real_ave_features):
    path = tmp_path / "feats.bin"
    real_ave_features.astype("<f4").tofile(path)
    assert np.array_equal(load_features(path, "ave", width=512), real_ave_features)
    assert np.array_equal(load_features(path, "ave"), real_ave_features)  # width defaults to the mode's


def test_npy_float64_and_float16_are_converted(tmp_path, real_ave_features):
    for dtype in (np.float64, np.float16):
        path = tmp_path / f"f_{np.dtype(dtype).name}.npy"
        np.save(path, real_ave_features.astype(dtype))
        got = load_features(path, "ave")
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, real_ave_features.astype(dtype).astype(np.float32))


@pytest.mark.parametrize(("bad", "row"), [(np.nan, 17), (np.inf, 0), (-np.inf, 521)])
def test_non_finite_npy_names_file_and_row(tmp_path, real_ave_features, bad, row):
    feats = real_ave_features.copy()
    feats[row, 100] = bad
    feats[row + 1 if row < 521 else 0, 5] = np.nan  # a later (or earlier) bad row must not be the one named
    path = tmp_path / "bad_feats.npy"
    np.save(path, feats)
    first = min(row, row + 1 if row < 521 else 0)
    with pytest.raises(FeatureError) as exc:
        load_features(path, "ave")
    msg = str(exc.value)
    assert "bad_feats.npy" in msg and f"row {first} " in msg and "\n" not in msg
    assert ("NaN" if np.isnan(feats[first]).any() else "Inf") in msg


def test_non_finite_bin(tmp_path, real_ave_features):
    feats = real_ave_features.copy()
    feats[300, 0] = np.inf
    path = tmp_path / "bad.bin"
    feats.tofile(path)
    with pytest.raises(FeatureError, match=r"bad\.bin: row 300 contains Inf"):
        load_features(path, "ave", width=512)


def test_float64_overflow_is_reported(tmp_path, real_ave_features):
    feats = real_ave_features.astype(np.float64)
    feats[9, 1] = 1e300
    path = tmp_path / "huge.npy"
    np.save(path, feats)
    with pytest.raises(FeatureError, match=r"huge\.npy: row 9 contains Inf \(overflows float32\)"):
        load_features(path, "ave")


@pytest.mark.parametrize(("shape", "mode"), [((100, 384), "ave"), ((100, 512), "hubert"), ((100, 2, 512), "wenet"),
                                             ((100, 1024), "ave")])
def test_wrong_width_npy(tmp_path, shape, mode):
    path = tmp_path / "wrong.npy"
    np.save(path, np.zeros(shape, np.float32))
    with pytest.raises(FeatureError, match=rf"wrong\.npy: {int(np.prod(shape[1:]))} values per frame .* mode "
                                           rf"'{mode}' needs {feature_width(mode)}"):
        load_features(path, mode)


def test_wrong_width_argument(tmp_path, real_ave_features):
    path = tmp_path / "f.bin"
    real_ave_features.tofile(path)
    with pytest.raises(FeatureError, match=r"f\.bin: per-frame width 384 does not fit mode 'ave' \(needs 512\)"):
        load_features(path, "ave", width=384)


def test_truncated_bin(tmp_path, real_ave_features):
    path = tmp_path / "cut.bin"
    path.write_bytes(real_ave_features[:10].tobytes()[:-100])
    with pytest.raises(FeatureError, match=r"cut\.bin: 20380 bytes .* row 9 is truncated \(1948 of 2048 bytes\)"):
        load_features(path, "ave")


@pytest.mark.parametrize("case", ["missing", "suffix", "not_npy", "one_dim", "empty", "empty_bin", "strings"])
def test_unreadable_inputs(tmp_path, case):
    path = tmp_path / {"suffix": "feats.csv", "empty_bin": "feats.bin"}.get(case, "feats.npy")
    if case == "suffix":
        path.write_text("1,2,3\n")
    elif case == "not_npy":
        path.write_text("not numpy\n")
    elif case == "one_dim":
        np.save(path, np.zeros(512, np.float32))
    elif case == "empty":
        np.save(path, np.zeros((0, 512), np.float32))
    elif case == "empty_bin":
        path.write_bytes(b"")
    elif case == "strings":
        np.save(path, np.array([["a"] * 512]))
    expected = {"missing": "no such features file", "suffix": "unknown features format '.csv'",
                "not_npy": "not a readable .npy array", "one_dim": r"expected \(frames, ...\) features",
                "empty": "no frames", "empty_bin": "empty file", "strings": "must be real numbers"}[case]
    with pytest.raises(FeatureError, match=expected) as exc:
        load_features(path, "ave")
    assert path.name in str(exc.value) and "\n" not in str(exc.value)


def test_validate_features_in_memory(real_ave_features):
    flat = validate_features(real_ave_features.reshape(522, 2, 256), "ave", "memory")
    assert flat.shape == (522, 512) and np.array_equal(flat, real_ave_features)
    with pytest.raises(FeatureError, match=r"features\.npy: 512 values per frame"):
        validate_features(real_ave_features, "hubert", "features.npy")


def test_save_npy_is_atomic_and_keeps_the_name(tmp_path, real_ave_features):
    dest = tmp_path / "sub" / "feats.features"  # np.save alone would append .npy
    assert save_npy(dest, real_ave_features) == dest
    assert np.array_equal(np.load(dest), real_ave_features)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["feats.features"]
