"""`framegen audio mel|features`: any audio file to SyncTalk_2D's mel spectrogram or 'ave' features."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from framegen.toolkit.common.console import out

_AUDIO_HELP = "Any audio file FFmpeg reads (wav, mp3, m4a, flac, ogg) or a video with an audio track."


def register(app: typer.Typer) -> None:
    """Add the `audio` group."""
    group = typer.Typer(help="Audio to SyncTalk_2D mel spectrograms and 'ave' features.", no_args_is_help=True)
    group.command("mel")(mel)
    group.command("features")(features)
    app.add_typer(group, name="audio")


def mel(
    audio: Annotated[Path, typer.Argument(help=_AUDIO_HELP)],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Where to write the (T, 80) float32 .npy.")],
) -> None:
    """Write SyncTalk_2D's normalised log-mel spectrogram (16 kHz, 80 bins, 80 frames/s) as (T, 80) float32."""
    from framegen.models.contract import HOP, SAMPLE_RATE
    from framegen.toolkit.api import audio_mel

    spec = audio_mel(audio, out=out_path)
    out.print(f"wrote {out_path} {spec.shape[0]}x{spec.shape[1]} float32 (about "
              f"{(spec.shape[0] - 1) * HOP / SAMPLE_RATE:.2f} s)")


def features(
    audio: Annotated[Path, typer.Argument(help=_AUDIO_HELP)],
    encoder: Annotated[Path, typer.Option("--encoder", "-e", help="SyncTalk_2D audio_visual_encoder.pth.")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Where to write the (N, 512) float32 .npy.")],
    batch: Annotated[int, typer.Option("--batch", min=1, help="Windows per encoder call.")] = 64,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")] = True,
) -> None:
    """Write 'ave' features (N, 512) float32, one row per 25 fps video frame, as SyncTalk_2D's inference makes them."""
    from framegen.toolkit.api import audio_features
    from framegen.toolkit.inputs.features import fps

    feats = audio_features(audio, encoder, out=out_path, batch=batch, progress=progress)
    out.print(f"wrote {out_path} {feats.shape[0]}x{feats.shape[1]} float32 "
              f"({feats.shape[0]} video frames, {feats.shape[0] / fps('ave'):.2f} s at {fps('ave')} fps)")
