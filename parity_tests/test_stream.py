"""Streaming: frames from chunked audio equal the offline render bit for bit (torch-cpu, ort-cpu; chunks of 1 sample,
10 ms, 37 ms, 1 s), the encoders of a bundle, stdin PCM, the mp4's sync, atomic outputs, bounded memory.

Cost control (2 cores): 0.6 s of speech (14 frames, of which the first and last seven depend on the start / end
rules). Per backend one chunk size runs every inference for real; the others go through :class:`MemoBackend`, which
returns a remembered output only for bit-identical inputs, so a stream that differs from the offline render in any
input still runs the model and fails the frame comparison.
"""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from fx_audio import write_audio
from fx_stream import MemoBackend, light_session, per_row_encoder, stream_peak_rss, synthetic_chunks

CHUNKS = {"1-sample": 1, "10ms": 160, "37ms": 592, "1s": 16000}


def offline_frames(template, wav, encode, backend):
    from framegen.toolkit.frames.render import iter_frames
    from framegen.toolkit.inputs.audio import ave_features, melspectrogram

    feats = ave_features(melspectrogram(wav), encode)
    return [f.frame for f in iter_frames(template, feats, backend)], feats


def stream_frames(template, wav, encode, backend, chunk, batching, **kw):
    from framegen.toolkit.frames.stream import StreamSession

    got = []
    with StreamSession(template, backend, encode, batching=batching, **kw) as s:
        for a in range(0, wav.shape[0], chunk):
            got += s.feed(wav[a:a + chunk])
        got += s.finish()
        return got, s.stats


def assert_same_frames(got, ref, fps=25):
    assert [f.i for f in got] == list(range(len(ref)))
    assert [f.time for f in got] == [i / fps for i in range(len(ref))]
    bad = [f.i for f, r in zip(got, ref, strict=True) if not np.array_equal(f.frame, r)]
    assert not bad, f"frames {bad} differ from the offline render"


@pytest.fixture(scope="module")
def torch_offline(prepared_template, stream_speech, stream_torch_encoder, torch_memo):
    encode, _ = stream_torch_encoder
    return offline_frames(prepared_template, stream_speech, encode, torch_memo)


@pytest.fixture(scope="module")
def ort_encoder(bundle_dir):
    from framegen.toolkit.frames.stream import encoder_batching
    from framegen.toolkit.inputs.encoders import bundle_encoder_fn

    encode, label = bundle_encoder_fn(bundle_dir)
    assert label.endswith("(onnx fp32)")
    return encode, encoder_batching(encode)


@pytest.fixture(scope="module")
def ort_offline(prepared_template, stream_speech, ort_encoder, ort_memo):
    return offline_frames(prepared_template, stream_speech, ort_encoder[0], ort_memo)


@pytest.fixture(scope="module")
def torch_memo(render_backend):
    return MemoBackend(render_backend)


@pytest.fixture(scope="module")
def ort_memo(stream_ort_backend):
    return MemoBackend(stream_ort_backend)


# ------------------------------------------------------------------------------------------------ exactness


@pytest.mark.parametrize("chunk", list(CHUNKS.values()), ids=list(CHUNKS))
def test_stream_equals_offline_torch_cpu(chunk, prepared_template, stream_speech, stream_torch_encoder,
                                         render_backend, torch_memo, torch_offline):
    encode, batching = stream_torch_encoder
    ref, _ = torch_offline
    assert len(ref) == 14
    backend = render_backend if chunk == CHUNKS["37ms"] else torch_memo
    got, stats = stream_frames(prepared_template, stream_speech, encode, backend, chunk, batching)
    assert_same_frames(got, ref)
    assert stats.exact and stats.finished and stats.frames == len(ref)
    # The probe found PyTorch's batch-1 path different (2 threads): the stream never calls it.
    assert 1 not in stats.encoder_call_sizes or 1 in batching.canonical


@pytest.mark.parametrize("chunk", list(CHUNKS.values()), ids=list(CHUNKS))
def test_stream_equals_offline_ort_cpu(chunk, prepared_template, stream_speech, ort_encoder, stream_ort_backend,
                                       ort_memo, ort_offline):
    encode, batching = ort_encoder
    ref, _ = ort_offline
    backend = stream_ort_backend if chunk == CHUNKS["10ms"] else ort_memo
    got, stats = stream_frames(prepared_template, stream_speech, encode, backend, chunk, batching)
    assert_same_frames(got, ref)
    assert stats.exact


def test_memoized_streams_fed_the_offline_inputs(torch_memo, ort_memo, torch_offline, ort_offline):
    """The memo only ran the model for the offline render: every memoized stream's inference inputs were
    bit-identical to an offline frame's (a stronger statement than equal frames)."""
    for memo, ref in ((torch_memo, torch_offline), (ort_memo, ort_offline)):
        assert memo.calls - memo.hits == len(ref[0])


def test_stream_int16_and_batch_grid(prepared_template, stream_speech, stream_torch_encoder):
    """int16 input equals its float32 value / 32768; batch 3 follows the render's batch grid (last group partial)."""
    from framegen.toolkit.frames.render import iter_frames
    from framegen.toolkit.inputs.audio import ave_features, melspectrogram
    from fx_render import make_fake_backend

    encode, batching = stream_torch_encoder
    pcm = np.round(stream_speech * 20000).astype(np.int16)
    wav = pcm.astype(np.float32) / 32768.0
    feats = ave_features(melspectrogram(wav), encode)
    backend = make_fake_backend()
    ref = [f.frame for f in iter_frames(prepared_template, feats, backend, batch=3)]
    calls = len(backend.calls)
    got, stats = stream_frames(prepared_template, pcm, encode, backend, 592, batching, batch=3)
    assert_same_frames(got, ref)
    assert stats.exact
    assert backend.calls[calls:] == backend.calls[:calls] == [3, 3, 3, 3, 2]


@pytest.mark.parametrize("min_batch", [1, 2])
def test_stream_lookahead_and_readiness(prepared_template, stream_speech, min_batch):
    """A frame leaves as soon as its context is complete: frame i is out once context_samples(i) arrived, never
    before; an encoder that must not run batch 1 (PyTorch on 2 threads) costs no extra wait."""
    from framegen.toolkit.frames.stream import EncoderBatching, context_samples, lookahead_ms

    batching = EncoderBatching(tuple(range(min_batch, 65)), min_batch, True)
    with light_session(prepared_template, batching=batching) as s:
        seen = {}
        for n in range(0, stream_speech.shape[0], 40):
            for f in s.feed(stream_speech[n:n + 40]):
                seen[f.i] = f.context_samples
        for f in s.finish():
            seen[f.i] = None
    mid = {i: c for i, c in seen.items() if c is not None}
    assert mid, "no frame left before finish()"
    for i, c in mid.items():
        assert c >= context_samples(i)  # never before its context
        assert c < context_samples(i) + 40 + 1  # and within one 40-sample chunk of it (batching is invariant)
    assert [i for i, c in seen.items() if c is None] == list(range(max(mid) + 1, 14))
    la = lookahead_ms()
    assert 430 < la["min"] <= la["mean"] <= la["max"] < 470


def test_stream_other_rate_is_resampled(prepared_template, stream_speech):
    """48 kHz input: resampled to 16 kHz by PyAV; the mel is that of the resampled signal (close to the 16 kHz one)."""
    import av
    from framegen.toolkit.frames.stream import StreamSession

    up = av.AudioResampler(format="flt", layout="mono", rate=48000)
    frame = av.AudioFrame.from_ndarray(stream_speech[None].copy(), format="flt", layout="mono")
    frame.sample_rate = 16000
    wav48 = np.concatenate([f.to_ndarray().reshape(-1) for f in up.resample(frame) + up.resample(None)])
    from framegen.toolkit.frames.stream import EncoderBatching
    from fx_render import make_fake_backend

    with StreamSession(prepared_template, make_fake_backend(), per_row_encoder(), input_rate=48000,
                       batching=EncoderBatching(tuple(range(1, 65)), 1, True)) as s:
        for a in range(0, wav48.shape[0], 1234):
            s.feed(wav48[a:a + 1234])
        frames = s.finish()
        assert abs(s.samples - stream_speech.shape[0]) <= 64
    assert frames


def test_encoder_batching_probe_detects_batch_dependence():
    from framegen.toolkit.frames.stream import encoder_batching

    rows = per_row_encoder(1)

    def odd_one_out(windows):
        return rows(windows) + (1e-3 if windows.shape[0] < 5 else 0.0)  # an 'algorithm switch' below batch 5

    bt = encoder_batching(odd_one_out)
    assert bt.min_batch == 5 and bt.shift_invariant and bt.call_size(1) == 5 and bt.call_size(64) == 64
    assert encoder_batching(per_row_encoder()).min_batch == 1
    w = np.random.default_rng(1).normal(size=(80 * 16, 512)).astype(np.float32)
    blas = encoder_batching(lambda x: x.reshape(x.shape[0], -1) @ w)  # one matmul: BLAS rounds by batch shape
    assert blas.min_batch > 1 and 64 in blas.canonical


def test_session_errors(prepared_template):
    from framegen.models.errors import FramegenError
    from framegen.toolkit.frames.stream import EncoderBatching, StreamSession
    from fx_render import make_fake_backend

    bt = EncoderBatching((1, 64), 1, True)
    with StreamSession(prepared_template, make_fake_backend(), per_row_encoder(), batching=bt) as s:
        with pytest.raises(FramegenError, match="float32 or int16"):
            s.feed(np.zeros(10, np.int32))
        with pytest.raises(FramegenError, match="not finite"):
            s.feed(np.array([0.0, np.nan], np.float32))
        s.feed(np.zeros(100, np.float32))
        with pytest.raises(FramegenError, match="too short"):
            s.finish()
    with pytest.raises(FramegenError, match="'ave'"):
        StreamSession(prepared_template, make_fake_backend("hubert"), per_row_encoder(), batching=bt)


# ------------------------------------------------------------------------------------------------ sources


def test_iter_audio_file_equals_decode_audio(tmp_path, stream_speech):
    from framegen.toolkit.frames.stream import iter_audio_file
    from framegen.toolkit.inputs.audio import decode_audio

    for name, rate, codec in (("a.wav", 16000, "pcm_s16le"), ("b.m4a", 44100, "aac")):
        src = write_audio(tmp_path / name, np.stack([stream_speech, 0.5 * stream_speech]), rate, codec)
        parts = list(iter_audio_file(src, 777))
        assert all(p.shape[0] == 777 for p in parts[:-1]) and 0 < parts[-1].shape[0] <= 777
        assert np.array_equal(np.concatenate(parts), decode_audio(src))


def test_iter_pcm_reads_s16le_and_refuses_half_samples():
    from framegen.models.errors import FramegenError
    from framegen.toolkit.frames.stream import iter_pcm

    pcm = np.arange(-500, 500, dtype="<i2")
    parts = list(iter_pcm(io.BytesIO(pcm.tobytes()), 300))
    assert np.array_equal(np.concatenate(parts), pcm) and [p.shape[0] for p in parts] == [300, 300, 300, 100]
    with pytest.raises(FramegenError, match="odd number of bytes"):
        list(iter_pcm(io.BytesIO(pcm.tobytes() + b"\x01"), 300))


# ------------------------------------------------------------------------------------------------ CLI, mp4


def run_cli(monkeypatch, capsys, *args, stdin: bytes | None = None):
    from framegen.toolkit import cli

    monkeypatch.setattr(sys, "argv", ["framegen", *args])
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    with pytest.raises(SystemExit) as exc:
        cli.main()
    cap = capsys.readouterr()
    code = exc.value.code if isinstance(exc.value.code, int) else (0 if exc.value.code is None else 1)
    return code, cap.out, cap.err


def test_cli_stream_of_too_little_audio_names_its_source_in_one_line(tmp_path, monkeypatch, capsys,
                                                                    synth_template_dir, generator_ckpt, encoder_ckpt,
                                                                    stream_speech):
    """0.1 s of speech (SyncTalk_2D needs 0.1875 s), from a file and from stdin: exit 2, one line that names the
    file or says stdin, and no output written."""
    clip = stream_speech[:1600]
    src = write_audio(tmp_path / "blip.wav", clip[None], 16000)
    pcm = np.round(clip * 32767).astype("<i2").tobytes()
    for audio, stdin, source in ((str(src), None, str(src)), ("-", pcm, "stdin")):
        out = tmp_path / "out" / "live.mp4"
        out.parent.mkdir(exist_ok=True)
        code, _, err = run_cli(monkeypatch, capsys, "stream", "--template", str(synth_template_dir), "--audio",
                               audio, "--checkpoint", str(generator_ckpt), "--encoder", str(encoder_ckpt),
                               "--backend", "torch-cpu", "--out", str(out), stdin=stdin)
        assert code == 2, err
        assert err.strip().splitlines()[-1].startswith(f"error: {source}: audio too short (0.100 s)"), err
        assert "Traceback" not in err and list(out.parent.iterdir()) == []


def test_cli_stream_stdin_pcm_mp4_in_sync(tmp_path, monkeypatch, capsys, synth_template_dir, generator_ckpt,
                                         encoder_ckpt, stream_speech, stream_torch_encoder, prepared_template,
                                         torch_memo):
    """`--audio -` (s16le on stdin) -> mp4 + PNGs: PNG frames equal the offline render of the same samples, the mp4
    has N+2 frames at 25 fps starting at t=0 and the fed audio, in sync (cross-correlation peak at lag 0)."""
    import av
    import cv2
    from framegen.toolkit.frames.stream import seed_batching
    from framegen.toolkit.frames.video import probe_video
    from framegen.toolkit.inputs.encoders import resolve_encoder

    pcm = np.round(stream_speech * 32767).astype("<i2")
    out, pngs = tmp_path / "live.mp4", tmp_path / "frames"
    # The CLI loads the encoder .pth (the fixture's weights) anew: seed its batching probe with the fixture's.
    seed_batching(resolve_encoder(encoder=encoder_ckpt)[0], stream_torch_encoder[1])
    code, stdout, err = run_cli(monkeypatch, capsys, "stream", "--template", str(synth_template_dir), "--audio", "-",
                                "--checkpoint", str(generator_ckpt), "--encoder", str(encoder_ckpt),
                                "--backend", "torch-cpu", "--chunk-ms", "37", "--out", str(out), "--frames-dir",
                                str(pngs), stdin=pcm.tobytes())
    assert code == 0, err
    assert "14 frames" in stdout and "latency after the context p50" in stdout
    wav = pcm.astype(np.float32) / 32768.0
    ref, _ = offline_frames(prepared_template, wav, stream_torch_encoder[0], torch_memo)
    files = sorted(pngs.iterdir())
    assert len(files) == len(ref) == 14
    for f, r in zip(files, ref, strict=True):
        assert np.array_equal(cv2.imread(str(f)), r), f.name
    info = probe_video(out)
    assert info["frames"] == 14 and info["fps"] == 25.0 and info["audio_codec"] == "aac"
    assert abs(info["audio_seconds"] - 14 / 25) < 0.07
    with av.open(str(out)) as c:
        vs, aus = c.streams.video[0], c.streams.audio[0]
        assert float(vs.start_time * vs.time_base) == 0.0
        assert abs(float(aus.start_time * aus.time_base)) < 1 / 25
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        decoded = np.concatenate([f.to_ndarray().reshape(-1) for fr in c.decode(aus)
                                  for f in resampler.resample(fr)])
    n = min(decoded.shape[0], wav.shape[0])
    lags = range(-400, 401, 8)
    score = [float(np.dot(decoded[max(0, k):n + min(0, k)], wav[max(0, -k):n - max(0, k)])) for k in lags]
    assert abs(list(lags)[int(np.argmax(score))]) <= 80  # within 5 ms: sound and picture start together
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "live.mp4"]


def test_stream_outputs_are_atomic_on_error(tmp_path, prepared_template, stream_speech):
    """A backend that fails (or a Ctrl-C) mid-stream leaves no mp4, no PNG folder and no temporary file."""
    from framegen.toolkit.frames.stream import EncoderBatching, stream_to_files
    from fx_render import make_fake_backend

    bt = EncoderBatching(tuple(range(1, 65)), 1, True)
    for exc in (RuntimeError, KeyboardInterrupt):
        backend = make_fake_backend(fail_at_call=4, exc=exc)
        chunks = (stream_speech[a:a + 1600] for a in range(0, stream_speech.shape[0], 1600))
        with pytest.raises(exc, match="fails at call 4"):
            stream_to_files(prepared_template, backend, per_row_encoder(), chunks, out=tmp_path / "x.mp4",
                            frames_dir=tmp_path / "f", batching=bt)
        assert list(tmp_path.iterdir()) == []


def test_cli_stream_bad_input_is_one_line(tmp_path, monkeypatch, capsys, synth_template_dir, generator_ckpt):
    code, _, err = run_cli(monkeypatch, capsys, "stream", "--template", str(synth_template_dir), "--audio",
                           str(tmp_path / "missing.wav"), "--checkpoint", str(generator_ckpt), "--out",
                           str(tmp_path / "o.mp4"))
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(monkeypatch, capsys, "stream", "--template", str(synth_template_dir), "--audio", "-",
                           "--checkpoint", str(generator_ckpt), "--out", str(tmp_path / "o.mp4"))
    assert code == 2 and "--encoder" in err  # a checkpoint alone has no audio encoder
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ encoders


def test_bundle_encoders_match_pytorch(bundle_dir, speech_wav, audio_encoder):
    """'ave' features of 3 s of speech through the bundle's ONNX (ORT CPU) and Core ML (coreml-mil) encoders vs
    PyTorch: fp32 within 1e-4 (the export validation's bound; measured ~1e-6), fp16 within 0.1."""
    from framegen.toolkit.inputs.audio import ave_features, melspectrogram, torch_encoder_fn
    from framegen.toolkit.inputs.encoders import bundle_encoder_fn

    mel = melspectrogram(speech_wav[16000 * 5:16000 * 8])
    ref = ave_features(mel, torch_encoder_fn(audio_encoder))
    diffs = {}
    for fmt in ("onnx", "coreml"):
        for prec in ("fp32", "fp16"):
            encode, _ = bundle_encoder_fn(bundle_dir, fmt, prec)
            got = ave_features(mel, encode)
            assert got.shape == ref.shape and got.dtype == np.float32
            diffs[(fmt, prec)] = float(np.abs(got - ref).max())
    print("features max |diff| vs PyTorch:", diffs)  # shown with pytest -s (the figures in toolkit/inputs/encoders.py)
    assert diffs[("onnx", "fp32")] <= 1e-4 and diffs[("coreml", "fp32")] <= 1e-4, diffs
    assert diffs[("onnx", "fp16")] <= 0.1 and diffs[("coreml", "fp16")] <= 0.1, diffs
    assert max(diffs.values()) > 0  # a real second implementation, not PyTorch again


def test_resolve_encoder_needs_one(tmp_path, bundle_dir):
    from framegen.models.errors import FramegenError
    from framegen.toolkit.inputs.encoders import resolve_encoder

    with pytest.raises(FramegenError, match="needs --encoder"):
        resolve_encoder()
    _, label = resolve_encoder(bundle=bundle_dir)
    assert label.endswith("(onnx fp32)")


# ------------------------------------------------------------------------------------------------ memory


def test_buffers_stay_flat_on_a_long_stream(prepared_template):
    """3 minutes vs 1 minute of audio: every buffer's allocation is the same and what it holds is bounded by the
    lookahead (the session keeps no history); verification on, 1 s chunks."""
    sizes = {}
    for minutes in (1, 3):
        biggest: dict[str, int] = {}
        with light_session(prepared_template) as s:
            for chunk in synthetic_chunks(60 * minutes, 16000, seed=minutes):
                s.feed(chunk)
                for k, v in s.buffer_sizes().items():
                    biggest[k] = max(biggest.get(k, 0), v)
            s.finish()
            assert s.stats.mel_blocks_verified >= 2 * minutes and s.stats.exact
        sizes[minutes] = biggest
    capacity = {m: {k: v for k, v in d.items() if k.endswith("capacity")} for m, d in sizes.items()}
    assert capacity[3] == capacity[1], sizes
    # Groups in flight depend on thread timing, not on the stream's length: bounded by the session's limit.
    assert all(d["inflight"] <= 2 for d in sizes.values()), sizes
    for d in sizes.values():
        assert d["samples"] <= 2048 * 200 + 401 + 16000  # one mel block of samples (plus a chunk): 1.7 MB
        assert d["mel_rows"] <= 48 and d["embeddings"] <= 16


@pytest.mark.slow
def test_peak_rss_20_minutes_vs_1_minute(synth_template_dir):
    from framegen.toolkit.inputs.audio import mel_frame_count, window_count

    one = stream_peak_rss(60, synth_template_dir)
    twenty = stream_peak_rss(1200, synth_template_dir)
    for got, seconds in ((one, 60), (twenty, 1200)):
        assert got["frames"] == window_count(mel_frame_count(seconds * 16000)) + 2  # 1499 and 29999
    assert twenty["peak_rss_mb"] <= 1.3 * one["peak_rss_mb"], (one, twenty)


# ------------------------------------------------------------------------------------------------ bench --stream


def _closable(be, workers: int, serial: bool = False):
    """``be`` with ``workers`` concurrent requests, remembering whether it was closed; ``serial``: one at a time."""
    import threading

    be.concurrent_workers, be.closed = workers, False
    be.close = lambda: setattr(be, "closed", True)
    if serial:
        lock, infer = threading.Lock(), be._infer

        def one_at_a_time(image, audio):
            with lock:
                return infer(image, audio)
        be._infer = one_at_a_time
    return be


def test_live_layout_is_chosen_by_measurement(prepared_template, monkeypatch):
    """Without a latency budget, a live stream keeps one inference at a time when it keeps up, takes the render's
    layout where that renders faster, and keeps the low-latency layout where it does not; the one not chosen is
    closed."""
    import framegen.toolkit.frames.stream as stream_mod
    from framegen.toolkit.frames.stream import choose_live_layout
    from fx_render import make_fake_backend

    monkeypatch.setattr(stream_mod, "LAYOUT_FRAMES", 12)  # the fakes' rates are steady: fewer frames tell them apart

    def choose(*args, **kw):  # throughput alone (a latency budget's choice is the next test's)
        return choose_live_layout(*args, latency_budget_ms=None, **kw)

    def never():
        raise AssertionError("a layout that keeps up needs no other")

    fast = _closable(make_fake_backend(), 1)
    chosen, layout = choose(prepared_template, fast, never)
    assert chosen is fast and layout.workers == 1 and "keeps up" in layout.note and not fast.closed
    assert chosen.info.extra["live_layout"]["workers"] == 1

    # 0.1 s per inference: ~10 fps one at a time; three at once overlap (~30 fps); 0.15 s queued on a lock: ~7 fps
    slow, wide = _closable(make_fake_backend(delay=0.1), 1), _closable(make_fake_backend(delay=0.1), 3)
    chosen, layout = choose(prepared_template, slow, lambda: wide)
    assert chosen is wide and slow.closed and not wide.closed and layout.workers == 3
    assert layout.measured_fps[3] > 2 * layout.measured_fps[1] and "the stream runs 3" in layout.note

    slow, queued = _closable(make_fake_backend(delay=0.1), 1), _closable(make_fake_backend(delay=0.15), 3, True)
    chosen, layout = choose(prepared_template, slow, lambda: queued)
    assert chosen is slow and queued.closed and not slow.closed and layout.workers == 1
    assert set(layout.measured_fps) == {1, 3} and "the lower latency" in layout.note

    def refused():
        raise RuntimeError("out of device memory\n  at a long native stack")

    slow = _closable(make_fake_backend(delay=0.1), 1)
    chosen, layout = choose(prepared_template, slow, refused)  # the stream still runs, one at a time
    assert chosen is slow and not slow.closed and layout.workers == 1
    assert layout.note.endswith("(the render's layout could not be opened: out of device memory)")

    slow, failing = _closable(make_fake_backend(delay=0.1), 1), _closable(make_fake_backend(fail_at_call=2), 3)
    with pytest.raises(RuntimeError, match="fails at call 2"):  # the caller holds only `slow`
        choose(prepared_template, slow, lambda: failing)
    assert failing.closed and not slow.closed

    slow = _closable(make_fake_backend(delay=0.1), 1)  # a backend whose render runs one at a time: nothing opened
    chosen, layout = choose(prepared_template, slow, None)
    assert chosen is slow and not slow.closed and set(layout.measured_fps) == {1}
    assert layout.note.endswith("(the render's layout is the same here)")


def test_a_latency_budget_picks_the_layout_that_can_keep_it(prepared_template, monkeypatch):
    """With a budget, a layout qualifies when one frame's render fits 75 % of it: the faster wide layout (100 ms a
    frame) loses to one at a time (50 ms) where it would win without one; where no layout fits, the one with the
    least latency per frame runs and the budget is kept (said so), rather than the faster one showing every frame
    late."""
    import framegen.toolkit.frames.stream as stream_mod
    from framegen.toolkit.frames.stream import choose_live_layout
    from fx_render import make_fake_backend

    monkeypatch.setattr(stream_mod, "LAYOUT_FRAMES", 12)
    for budget, want in ((80.0, 1), (None, 3)):
        one, wide = _closable(make_fake_backend(delay=0.05), 1), _closable(make_fake_backend(delay=0.1), 3)
        chosen, layout = choose_live_layout(prepared_template, one, lambda wide=wide: wide, latency_budget_ms=budget)
        assert layout.workers == want and layout.measured_fps[3] > layout.measured_fps[1]
        assert 45 <= layout.frame_ms[1] <= 70 and 90 <= layout.frame_ms[3] <= 140
        assert layout.latency_budget_ms == budget and (chosen is one) == (want == 1)
    assert "the only one within the budget" in layout.note or budget is None

    one, wide = _closable(make_fake_backend(delay=0.1), 1), _closable(make_fake_backend(delay=0.15), 3)
    chosen, layout = choose_live_layout(prepared_template, one, lambda: wide, latency_budget_ms=80.0)
    assert layout.measured_fps[3] > layout.measured_fps[1]  # the wide one is faster, but 150 ms a frame
    assert chosen is one and wide.closed and layout.latency_budget_ms == 80.0
    assert "the least latency per frame; neither fits the budget" in layout.note and "come late too" in layout.note


def test_a_latency_budget_holds_the_frames_that_would_be_late(prepared_template, stream_speech):
    """Live, a backend slower than real time (60 ms a frame, one at a time): with the 80 ms budget every frame shown
    leaves within about the budget past its own lookahead, and the ones that could not are held (counted apart);
    without a budget frames queue behind one another and come later. Both stay in step with the speech, and
    :func:`predict_live` (the start-up's prediction) replays what each did."""
    from framegen.toolkit.bench.stream import bench_stream
    from framegen.toolkit.frames.stream import predict_live
    from fx_render import make_fake_backend

    wav = np.concatenate([stream_speech] * 4)  # 2.4 s: 59 frames
    rows = {}
    for budget in (80.0, None):
        report = bench_stream(prepared_template, [make_fake_backend(delay=0.06)], per_row_encoder(), wav,
                              chunk_ms=20, latency_budget_ms=budget)
        rows[budget] = report["results"][0]
    kept, free = rows[80.0], rows[None]
    assert kept["latency_budget_ms"] == 80.0 and free["latency_budget_ms"] is None
    assert kept["frames"] == free["frames"] == 59
    for row in (kept, free):  # in step: the only lag is the end's flush, whose frames are all inferred
        assert row["seconds"] - row["audio_seconds"] < row["end_frames"] * 0.06 + 0.5, row
    assert kept["held_late_frames"] > 0 and kept["held_frames"] >= kept["held_late_frames"]
    assert free["held_late_frames"] == 0
    # Timing on a shared CI machine: the fake's 60 ms are a sleep, so its renders are steady; 20 ms of margin.
    assert kept["beyond_lookahead_ms"]["max"] <= 100.0
    assert free["beyond_lookahead_ms"]["max"] > kept["beyond_lookahead_ms"]["max"] + 20.0
    # The start-up's prediction replays the session's own rules: given this backend's render time it agrees with
    # what the stream did (59 frames, so a few frames either way).
    for budget, row in rows.items():
        assert row["startup"]["predicted"]["held_share"] > 0 and not row["startup"]["keeps_up"]
        replay = predict_live([0.062], fps=25, workers=1, chunk_s=0.02, budget_s=budget and budget / 1000.0,
                              load=1.0, frames=row["frames"])
        assert abs(replay["held_share"] - row["held_frames"] / row["frames"]) <= 0.15, (replay, row)
        assert abs(replay["beyond_p50_ms"] - row["beyond_lookahead_ms"]["p50"]) <= 25.0, (replay, row)
        if budget is not None:  # without one the tail is a queue's, which 59 frames do not pin down
            assert abs(replay["beyond_p99_ms"] - row["beyond_lookahead_ms"]["p99"]) <= 20.0, (replay, row)


def test_a_latency_budget_never_holds_a_frame_an_idle_worker_could_start(prepared_template, stream_speech):
    """A frame that would start at once is rendered whatever the estimate says: a start-up measurement far too slow
    (1 s a frame) must not hold every frame of a fast backend, as it would if renders that never run were the only
    way to correct it."""
    from framegen.toolkit.frames.stream import StreamSession, encoder_batching, play
    from fx_render import make_fake_backend

    wav = np.concatenate([stream_speech, stream_speech])  # 1.2 s: 29 frames
    encode = per_row_encoder()
    with StreamSession(prepared_template, make_fake_backend(), encode, batching=encoder_batching(encode),
                       degrade=True, verify=False, latency_budget=0.08, render_seconds=1.0) as session:
        result = play(session, (wav[a:a + 320] for a in range(0, wav.shape[0], 320)), realtime=True)
        assert result.frames == 29 and session.stats.held_late_frames == 0 and result.held == 0


def test_only_backends_with_a_wider_render_layout_open_a_second_one_for_a_live_stream():
    """torch-cpu renders one inference at a time, so a live torch-cpu stream opens no throwaway second backend;
    ONNX Runtime and OpenVINO render with one single-thread inference per core and one more."""
    from framegen.runtimes.ort_session import physical_cores
    from framegen.toolkit.frames.plan import render_workers

    assert render_workers("torch-cpu") == 1
    assert render_workers("ort-cpu") == physical_cores() + 1


@pytest.mark.parametrize(("rate", "share", "verdict"), [
    (40.0, 0.0, "keeps up"),
    (27.0, 0.06, "keeps up without headroom for the stream's own work"),   # 25 <= rate < 25 x 1.15
    (12.5, 0.57, "cannot keep up"),
])
def test_start_up_note_names_the_verdict_and_the_share_held(rate, share, verdict):
    from framegen.toolkit.frames.stream import KEEP_UP_HEADROOM, keep_up_note

    predicted = {"held_share": share, "beyond_p50_ms": 50.0, "beyond_p99_ms": 70.0}
    note = keep_up_note("openvino bf16", rate, 25, predicted)
    assert note.startswith(f"openvino bf16 renders {rate:.1f} fps here") and f"{25 * KEEP_UP_HEADROOM:.1f}" in note
    assert note.split("): ", 1)[1].startswith(verdict)
    assert (share == 0) == ("held" not in note)
    if share:
        assert f"about {share:.0%} of them" in note


def test_start_up_note_with_a_prediction_says_what_the_budget_will_hold():
    """With the replayed prediction, a rate that has its headroom can still hold frames for the budget: the note says
    so, with the share and the latency the replay gave; nothing predicted held reads "keeps up"."""
    from framegen.toolkit.frames.stream import keep_up_note

    predicted = {"held_share": 0.2, "beyond_p50_ms": 61.0, "beyond_p99_ms": 79.4}
    note = keep_up_note("openvino int8", 31.0, 25, predicted, 80.0)
    assert note.split("): ", 1)[1].startswith("keeps up, but not every frame within the 80 ms latency budget")
    assert "about 20% of them" in note and "p50 / p99 61 / 79 ms beyond the audio lookahead" in note
    assert "more than 80 ms after their audio lookahead" in note
    unbudgeted = keep_up_note("openvino int8", 31.0, 25, predicted, None)
    assert unbudgeted.split("): ", 1)[1].startswith("keeps up on average") and "about 20% of them" in unbudgeted
    assert "latency budget" not in unbudgeted
    calm = keep_up_note("openvino int8", 31.0, 25, {**predicted, "held_share": 0.0}, 80.0)
    assert calm.split("): ", 1)[1].startswith("keeps up (predicted") and "held" not in calm


def test_predict_live_follows_the_render_time_the_budget_and_the_workers():
    """The replay of the session's rules: renders well inside a frame time hold nothing and leave about one chunk
    plus one render after the lookahead; slower renders hold more; a budget holds more than none and keeps the
    tail near it; three workers of the same render time hold fewer than one. Deterministic (seeded draws)."""
    from framegen.toolkit.frames.stream import predict_live

    def run(ms: float, budget: float | None = 0.08, workers: int = 1, jitter: float = 0.1) -> dict:
        took = [ms / 1000 * (1 + jitter * k / 10) for k in range(-10, 11)]
        return predict_live(took, fps=25, workers=workers, chunk_s=0.02, budget_s=budget, load=1.0)

    fast = run(10.0)
    assert fast["held_share"] == 0 and 10 <= fast["beyond_p50_ms"] <= 35 and fast["beyond_p99_ms"] <= 40
    shares = [run(ms)["held_share"] for ms in (30.0, 38.0, 45.0, 60.0)]
    assert shares == sorted(shares) and shares[0] == 0 and shares[-1] > 0.3
    kept, free = run(45.0), run(45.0, budget=None)
    assert kept["held_share"] > free["held_share"] and kept["beyond_p99_ms"] <= 85 < free["beyond_p99_ms"]
    assert run(90.0, budget=None, workers=3)["held_share"] < run(90.0, budget=None)["held_share"]


def test_bench_stream_live_keeps_in_step_and_says_when_it_cannot(prepared_template, stream_speech):
    """Live (paced): a fast backend keeps up (nothing held, RTF ~1, p99 beyond the lookahead about one chunk); one
    slower than real time (0.1 s per frame = 10 fps < 25) is told so at start-up, holds frames
    instead of drifting (RTF stays ~1, no backlog: its latency stays near one inference), and delivers every frame in
    order; RSS is sampled at the start and the end."""
    from framegen.toolkit.bench.stream import bench_stream, print_stream_report
    from fx_render import make_fake_backend
    from rich.console import Console

    wav = np.concatenate([stream_speech, stream_speech])  # 1.2 s: 29 frames
    slow_be = make_fake_backend(delay=0.1)
    slow_be.info.extra["live_layout"] = {"workers": 1, "measured_fps": {1: 9.5}, "note": "as measured"}
    report = bench_stream(prepared_template, [make_fake_backend(), slow_be], per_row_encoder(), wav, chunk_ms=20)
    fast, slow = report["results"]
    assert fast["layout"] is None and slow["layout"]["note"] == "as measured"
    console = Console(record=True, width=400)
    print_stream_report(report, console)
    assert "live layout, fake fp32: as measured" in console.export_text()
    assert fast["frames"] == slow["frames"] == 29
    assert fast["startup"]["keeps_up"] and fast["held_frames"] == 0 and fast["bound_ms"] == 80.0
    # Timing on a shared CI machine: generous margins (the fake model takes no time; its p99 is the chunking's 20 ms).
    assert fast["beyond_lookahead_ms"]["p99"] < 4 * fast["bound_ms"] and fast["rtf"] < 1.3
    assert not slow["startup"]["keeps_up"] and "cannot keep up" in slow["startup"]["note"]
    assert 8 <= slow["held_frames"] <= 25 and not slow["realtime"]
    # In step with the speech: no backlog builds up; the only lag is the end's flush (its frames are all inferred).
    assert slow["seconds"] - slow["audio_seconds"] < slow["end_frames"] * 0.1 + 0.5
    assert slow["beyond_lookahead_ms"]["max"] < 600  # held, not queued: about two inferences late at worst
    assert fast["end_frames"] >= 7 and fast["rss_mb"]["end"] > 0 and "start" in fast["rss_mb"]
    assert report["lookahead_ms"]["max"] == 452.5


def test_degrading_session_holds_frames_and_keeps_the_rest_exact(prepared_template, stream_speech):
    """``degrade``: fed faster than a slow backend can infer, the session never blocks; every frame a worker was free
    for equals the offline render's, every held frame repeats the frame before it, the first and the end's frames are
    never held, and the count is in the stats."""
    from framegen.toolkit.frames.stream import encoder_batching
    from fx_render import make_fake_backend

    wav = np.concatenate([stream_speech, stream_speech])
    encode = per_row_encoder()
    ref, _ = offline_frames(prepared_template, wav, encode, make_fake_backend())
    slow = make_fake_backend(delay=0.05)
    got, stats = stream_frames(prepared_template, wav, encode, slow, 320, encoder_batching(encode), degrade=True)
    held = [f.i for f in got if f.held]
    assert [f.i for f in got] == list(range(len(ref))) and held and stats.held_frames == len(held)
    assert 0 not in held and not any(f.held for f in got[-7:])
    for f in got:
        want = got[f.i - 1].frame if f.held else ref[f.i]
        assert np.array_equal(f.frame, want), f.i
    assert len(slow.calls) == len(ref) - len(held)


def test_live_stream_cli_picks_the_proven_precision_and_reports_latency(tmp_path, monkeypatch, capsys,
                                                                        synth_template_dir, bundle_dir):
    """`framegen stream --realtime` on a bundle: precision auto (fp32 where the bundle proves nothing else), the
    start-up verdict, and the latency after each frame's own time in the summary and the stats."""
    import json

    src = write_audio(tmp_path / "speech.wav", np.zeros((1, 16000), np.float32), 16000)
    code, out, err = run_cli(monkeypatch, capsys, "stream", "--bundle", str(bundle_dir), "--template",
                             str(synth_template_dir), "--audio", str(src), "--realtime", "--out",
                             str(tmp_path / "live.mp4"), "--stats", str(tmp_path / "s.json"))
    text = out + err
    assert code == 0, text
    assert "precision auto -> fp32" in text and "measured at start-up" in text
    # paced: the summary judges the latency beyond the lookahead against its bound, not the RTF (which includes
    # the end's flush: a 1 s stream's RTF is well over 1 without falling behind)
    assert "paced at real time (RTF" in text and "beyond each frame's audio lookahead p50" in text
    assert "(bound 80)" in text and "slower than real time" not in text and "fell" not in text
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["realtime"] and stats["startup"]["fps"] > 0 and stats["frame_latency_ms"]["count"] == stats["frames"]
    assert (tmp_path / "live.mp4").is_file()
    layout = stats["layout"]  # chosen by measurement: the stream runs the layout it measured
    assert f"live layout: {layout['note']}" in text and str(layout["workers"]) in layout["measured_fps"]


def test_bench_stream_unpaced_cli_reports_the_streams_end_to_end_rate(tmp_path, monkeypatch, capsys,
                                                                     synth_template_dir, bundle_dir):
    """`framegen bench --stream --unpaced`: the stream as fast as it goes, checked against the offline path; its fps
    is frames / wall seconds; `--unpaced` without `--stream` is a usage error naming the flag."""
    import json

    src = write_audio(tmp_path / "speech.wav", np.zeros((1, 16000), np.float32), 16000)
    code, out, err = run_cli(monkeypatch, capsys, "bench", "--stream", "--unpaced", "--bundle", str(bundle_dir),
                             "--template", str(synth_template_dir), "--audio", str(src), "--backends", "ort-cpu",
                             "--seconds", "1", "--json", str(tmp_path / "b.json"))
    assert code == 0, out + err
    report = json.loads((tmp_path / "b.json").read_text())
    row = report["results"][0]
    assert report["paced"] is False and row["verified"] and row["exact"]
    assert row["frames"] == 24 and row["fps"] == pytest.approx(row["frames"] / row["seconds"], rel=0.01)
    assert "fps" in out and "framegen bench --stream" in out and "live (paced" not in out
    assert "fps unpaced (24 frames)" in err and "beyond the lookahead" not in err
    code, out, err = run_cli(monkeypatch, capsys, "bench", "--unpaced", "--bundle", str(bundle_dir))
    assert code != 0 and "--unpaced" in out + err and "Traceback" not in out + err


def test_api_stream_with_a_bundle_alone_equals_render_frames(tmp_path, bundle_dir, prepared_template, stream_speech):
    """`framegen.stream(bundle=B, audio=A)` with no encoder: the bundle's ONNX encoder and ort-cpu opened as `render`
    opens it; PNG frames equal `render_frames` of the same audio through the same encoder, bit for bit."""
    import cv2
    import framegen
    from framegen.toolkit.inputs.audio import audio_to_features
    from framegen.toolkit.inputs.encoders import resolve_encoder

    src = write_audio(tmp_path / "speech.wav", stream_speech[None], 16000)
    stats = framegen.stream(prepared_template, audio=src, bundle=bundle_dir, backend="ort-cpu",
                            frames_dir=tmp_path / "frames", chunk_ms=25)
    assert stats.frames == 14 and stats.session["exact"] and stats.backend == "ort-cpu"
    feats = audio_to_features(src, resolve_encoder(bundle=bundle_dir)[0])
    ref = [f.frame for f in framegen.render_frames(prepared_template, features=feats, bundle=bundle_dir,
                                                   backend="ort-cpu")]
    files = sorted((tmp_path / "frames").iterdir())
    assert len(files) == len(ref) == 14
    for f, r in zip(files, ref, strict=True):
        assert np.array_equal(cv2.imread(str(f)), r), f.name
