"""The writers: H.264 + AAC in one pass (frame count, fps, audio cut to the video), atomic output, PNG folders."""

from __future__ import annotations

import numpy as np
import pytest
from framegen.toolkit.frames.video import FramesDirWriter, VideoError, VideoWriter, probe_video
from fx_audio import tone, write_audio
from hypothesis import given, settings
from hypothesis import strategies as st

W, H = 320, 240


def frames(count: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth, moving BGR frames (what H.264 compresses well, so the round trip can be checked closely)."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    out = []
    for k in range(count):
        b = 128 + 100 * np.sin((xx + 4 * k) / 37.0 + seed)
        g = 128 + 100 * np.cos((yy - 3 * k) / 29.0)
        r = 128 + 60 * np.sin((xx + yy) / 51.0 + k / 5)
        out.append(np.clip(np.stack([b, g, r], axis=2), 0, 255).astype(np.uint8))
    return out


def decode_bgr(path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return 10 * np.log10(255.0 ** 2 / mse) if mse else float("inf")


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_video_with_speech_cut_to_video(tmp_path, speech_path):
    src = frames(30)
    out = tmp_path / "a.mp4"
    with VideoWriter(out, W, H, 25, audio_path=speech_path) as w:
        for f in src:
            w.write(f)
    info = probe_video(out)
    assert (info["video_codec"], info["frames"], info["fps"], info["pix_fmt"]) == ("h264", 30, 25.0, "yuv420p")
    assert (info["width"], info["height"]) == (W, H)
    # The 44.9 s clip is cut to the video's 1.2 s (AAC rounds up to whole 1024-sample frames).
    assert info["audio_codec"] == "aac" and info["audio_rate"] == 16000
    assert abs(info["audio_seconds"] - 1.2) <= 1024 / 16000 + 1e-6
    assert w.audio_seconds == pytest.approx(1.2)
    decoded = decode_bgr(out)
    assert len(decoded) == 30
    assert min(psnr(a, b) for a, b in zip(src, decoded, strict=True)) > 35
    assert leftovers(tmp_path) == ["a.mp4"]


def test_video_without_audio_at_20_fps(tmp_path):
    out = tmp_path / "w.mkv"
    with VideoWriter(out, W, H, 20) as w:
        for f in frames(7):
            w.write(f)
    info = probe_video(out)
    assert (info["frames"], info["fps"], info["audio_codec"]) == (7, 20.0, None)


def test_short_stereo_audio_is_resampled_and_not_padded(tmp_path):
    wav = tmp_path / "s.wav"
    left, right = tone(440, 0.5, rate=44100), tone(660, 0.5, rate=44100)
    write_audio(wav, np.stack([left, right]), 44100)
    out = tmp_path / "s.mp4"
    with VideoWriter(out, W, H, 25, audio_path=wav) as w:
        for f in frames(25):  # 1 s of video, 0.5 s of audio
            w.write(f)
    info = probe_video(out)
    assert info["frames"] == 25 and info["audio_rate"] == 44100
    assert abs(info["audio_seconds"] - 0.5) <= 1024 / 44100 + 1e-6


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_failure_leaves_no_file_and_keeps_the_old_one(tmp_path, speech_path, exc):
    out = tmp_path / "x.mp4"
    out.write_bytes(b"previous render")
    src = frames(60)
    with pytest.raises(exc), VideoWriter(out, W, H, 25, audio_path=speech_path) as w:
        for f in src:
            w.write(f)
            if w.tmp_path.exists():  # the muxer has started writing (after x264's lookahead)
                raise exc("stop")
        pytest.fail("the temporary file never appeared")
    assert out.read_bytes() == b"previous render"
    assert leftovers(tmp_path) == ["x.mp4"]


def test_wrong_frame_and_bad_inputs_fail_cleanly(tmp_path):
    out = tmp_path / "y.mp4"
    with pytest.raises(VideoError, match=r"frame 1 is uint8 \[240, 321, 3\]"), VideoWriter(out, W, H, 25) as w:
        w.write(frames(1)[0])
        w.write(np.zeros((H, W + 1, 3), np.uint8))
    bad_audio = tmp_path / "noise.wav"
    bad_audio.write_bytes(b"RIFF not really")
    with pytest.raises(VideoError, match=r"noise\.wav"):
        VideoWriter(out, W, H, 25, audio_path=bad_audio)
    with pytest.raises(VideoError, match="must be even"):
        VideoWriter(out, W + 1, H, 25)
    with pytest.raises(VideoError, match=r"unsupported video suffix '\.avi'"):
        VideoWriter(tmp_path / "z.avi", W, H, 25)
    with pytest.raises(VideoError, match="no frames"), VideoWriter(out, W, H, 25):
        pass
    assert leftovers(tmp_path) == ["noise.wav"]


def test_frames_dir_is_lossless_and_atomic(tmp_path):
    import cv2

    src = frames(4, seed=1)
    d = tmp_path / "frames"
    with FramesDirWriter(d) as w:
        for f in src:
            w.write(f)
    assert leftovers(d) == ["000000.png", "000001.png", "000002.png", "000003.png"]
    for k, f in enumerate(src):
        assert np.array_equal(cv2.imread(str(d / f"{k:06d}.png")), f)
    # A second, shorter render replaces the folder as a whole: no stale frames survive.
    with FramesDirWriter(d) as w:
        w.write(src[0])
    assert leftovers(d) == ["000000.png"]
    # A failed render leaves the previous frames and no partial folder.
    with pytest.raises(RuntimeError), FramesDirWriter(d) as w:
        w.write(src[1])
        raise RuntimeError("stop")
    assert leftovers(tmp_path) == ["frames"] and leftovers(d) == ["000000.png"]
    # A folder holding anything else is refused before anything is written.
    (d / "notes.txt").write_text("mine")
    with pytest.raises(VideoError, match=r"notes\.txt"):
        FramesDirWriter(d)
    assert leftovers(tmp_path) == ["frames"]


@settings(max_examples=300, deadline=None)
@given(data=st.data(), height=st.integers(2, 40).map(lambda v: 2 * v), width=st.integers(2, 40).map(lambda v: 2 * v))
def test_converting_only_the_pasted_box_gives_the_whole_frames_i420(data, height, width):
    """The writer converts a template frame to I420 once and, per output frame, only the box that paste-back
    changed (widened to whole 2x2 chroma blocks): byte for byte what converting the whole frame gives, for any box,
    odd edges and edges on the frame's border included."""
    from framegen.toolkit.frames.video import i420_pasted
    from framegen.toolkit.inputs.preprocess import to_i420

    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    x0 = data.draw(st.integers(0, width - 1))
    y0 = data.draw(st.integers(0, height - 1))
    x1 = data.draw(st.integers(x0 + 1, width))
    y1 = data.draw(st.integers(y0 + 1, height))
    frame = base.copy()
    frame[y0:y1, x0:x1] = rng.integers(0, 256, (y1 - y0, x1 - x0, 3), dtype=np.uint8)
    base_i420 = to_i420(base)
    got = i420_pasted(base_i420, frame, (x0, y0, x1, y1))
    assert np.array_equal(got, to_i420(frame))
    assert np.array_equal(base_i420, to_i420(base))  # the base itself is untouched
    in_place = base_i420.copy()
    assert i420_pasted(in_place, frame, (x0, y0, x1, y1), out=in_place) is in_place
    assert np.array_equal(in_place, got)


@pytest.mark.parametrize(("width", "height"), [(W, H), (338, 250)])
def test_a_video_written_from_template_planes_equals_one_written_from_whole_frames(tmp_path, width, height):
    """The render's path (the template frame's I420 + the pasted box, written into the encoder's frame) encodes the
    same bitstream as converting each whole frame; 338 x 250 gives chroma rows of 169 bytes, which FFmpeg pads."""
    import av
    from framegen.toolkit.inputs.preprocess import to_i420

    assert av.VideoFrame(width, height, "yuv420p").planes[1].line_size > width // 2 or width == W

    def sized(count: int, seed: int) -> list[np.ndarray]:
        return [np.ascontiguousarray(np.resize(f, (height, width, 3))) if (width, height) != (W, H) else f
                for f in frames(count, seed)]

    base = sized(1, 3)[0]
    box = (101, 37, 233, 169)
    outs = []
    for name, planes in (("whole", False), ("box", True)):
        path = tmp_path / f"{name}.mp4"
        with VideoWriter(path, width, height, 25) as vw:
            for f in sized(6, 1):
                pasted = base.copy()
                pasted[box[1]:box[3], box[0]:box[2]] = f[box[1]:box[3], box[0]:box[2]]
                if planes:
                    vw.write(pasted, base_i420=to_i420(base), box=box)
                else:
                    vw.write(pasted)
        outs.append(path)
    a, b = (decode_bgr(p) for p in outs)
    assert len(a) == 6 and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_repeat_encodes_the_last_frame_again_as_writing_it_would(tmp_path):
    """A live stream's held frame: ``repeat()`` sends the last frame's I420 planes again and gives the same video as
    writing that frame again (after a frame written whole and after one written from template planes); before any
    frame, and once closed, it is an error naming the file."""
    from framegen.toolkit.inputs.preprocess import to_i420

    def again(vw: VideoWriter, frame: np.ndarray, repeat: bool) -> None:
        if repeat:
            vw.repeat()
        else:
            vw.write(frame)

    a, b, c = frames(3, 5)
    box = (101, 37, 233, 169)
    outs = []
    for name, repeat in (("written", False), ("repeated", True)):
        path = tmp_path / f"{name}.mp4"
        with VideoWriter(path, W, H, 25) as vw:
            if repeat:
                with pytest.raises(VideoError, match=f"{name}.mp4.*no frame to repeat"):
                    vw.repeat()
            vw.write(a)
            again(vw, a, repeat)
            pasted = a.copy()
            pasted[box[1]:box[3], box[0]:box[2]] = b[box[1]:box[3], box[0]:box[2]]
            vw.write(pasted, base_i420=to_i420(a), box=box)
            for _ in range(2):
                again(vw, pasted, repeat)
            vw.write(c)
            assert vw.frames == 6
        outs.append(path)
        if repeat:
            with pytest.raises(VideoError, match="closed"):
                vw.repeat()
    x, y = (decode_bgr(p) for p in outs)
    assert len(x) == 6 and all(np.array_equal(p, q) for p, q in zip(x, y, strict=True))
