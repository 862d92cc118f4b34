"""The embedded demo, in a short variant: every step from nothing to an mp4 with sound, and its folder rules."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from toolkit.demo import MARKER, DemoContext, DemoError, Step, prepare_out, run_demo, speech_like
from toolkit.video import probe_video


def test_speech_like_signal():
    a = speech_like(2.0, 16000, seed=3)
    assert a.dtype == np.float32 and a.shape == (32000,)
    assert np.array_equal(a, speech_like(2.0, 16000, seed=3))
    assert not np.array_equal(a, speech_like(2.0, 16000, seed=4))
    assert np.abs(a).max() == pytest.approx(0.6, abs=1e-6)
    rms = np.sqrt(np.mean(a[: 32000 // 160 * 160].reshape(-1, 160) ** 2, axis=1))  # 10 ms frames
    # Syllables and pauses: loud frames and near-silent frames, both plentiful.
    assert (rms > 0.05).mean() > 0.3 and (rms < 0.01).mean() > 0.1


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    from toolkit.cli import main

    monkeypatch.setattr(sys, "argv", ["framegen", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_demo_cli_short(tmp_path, monkeypatch, capsys):
    out = tmp_path / "demo"
    code, stdout, stderr = run_cli(["demo", "--out", str(out), "--seconds", "0.6", "--no-progress"],
                                   monkeypatch, capsys)
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert [ln.split(":")[0] for ln in lines[:5]] == ["[1/5] template", "[2/5] checkpoints", "[3/5] speech",
                                                      "[4/5] features", "[5/5] render"]
    assert "weights are random" in stdout and "will not look like speech" in stdout
    feats = np.load(out / "features.npy")
    assert feats.shape[1] == 512 and np.isfinite(feats).all() and feats.std() > 0
    info = probe_video(out / "demo.mp4")
    assert (info["video_codec"], info["fps"], info["frames"]) == ("h264", 25.0, feats.shape[0])
    assert info["audio_codec"] == "aac" and abs(info["audio_seconds"] - feats.shape[0] / 25) <= 0.07
    stats = json.loads((out / "stats.json").read_text())
    assert stats["frames"] == feats.shape[0] and stats["backend"] == "torch-cpu"
    assert (out / MARKER).exists()


def test_demo_folder_rules(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me")
    with pytest.raises(DemoError, match="was not made by `framegen demo`"):
        prepare_out(mine)
    assert (mine / "thesis.tex").read_text() == "keep me"
    # A previous demo folder is replaced; steps run in order over one context.
    seen = []
    ctx = DemoContext(out=tmp_path / "d", seconds=1.0)
    steps = [Step("one", lambda c: seen.append("one") or "1"), Step("two", lambda c: seen.append("two") or "2")]
    lines: list[str] = []
    run_demo(ctx, steps, log=lines.append)
    (ctx.out / "old.txt").write_text("from the first run")
    run_demo(ctx, steps, log=lines.append)
    assert seen == ["one", "two", "one", "two"] and lines[0].startswith("[1/2] one: 1 (")
    assert sorted(p.name for p in ctx.out.iterdir()) == [MARKER]
