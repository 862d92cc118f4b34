"""SyncTalk_2D's audio front-end as torch modules that export to ONNX and Core ML: PCM -> mel, PCM -> 'ave' features.

:class:`AudioFrontend` restates :func:`framegen.toolkit.inputs.audio.melspectrogram` with graph-friendly ops, in
float32:
the 800-point STFT as strided ``conv1d`` whose 802 filters are the Hann-windowed cosine and sine rows of the DFT
(401 real, 401 imaginary) with the pre-emphasis folded in, computed exactly split (see :func:`split_kernel`), the
magnitude, the mel filter bank as a matmul, dB and the +-4 normalisation. :class:`AudioFeatures` chains it with the
audio encoder and applies SyncTalk_2D's framing in the graph (window count, starts, the end-of-audio shift, the
repeated first and last embedding).

The filter bank and the window are constructor arguments, not recomputed here: the toolkit passes the very arrays
its numpy mel uses (``framegen.toolkit.inputs.audio.mel_basis`` and its Hann window), so there is one definition of
each.

The window count is SyncTalk_2D's ``int((T - 16) / 80 * 25) + 2``, evaluated in float64 by the reference. For
``T - 16`` a multiple of 16 the exact quotient is an integer and float64 sometimes lands just below it, so the count
is one less than the integer ``(T - 16) * 5 // 16 + 2`` (T = 384, 672, 752, ...: about 7 % of such T). Core ML has
no float64, so the graph uses the integer count minus one for every T in :func:`short_counts` (a constant table up
to :data:`MAX_MEL_FRAMES`). The window that goes missing is always end-shifted to ``T - 16``, like the one before it,
so the difference is only one repeated row at the end.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from framegen.models.contract import (
    ENC_MEL_WINDOW,
    ENCODER_FPS,
    HOP,
    MEL,
    MEL_FRAMES_PER_SECOND,
    MIN_SAMPLES,
    N_FFT,
    SAMPLE_RATE,
)
from torch import nn

#: Tensor names, identical in ONNX and Core ML artifacts.
FRONTEND_INPUT = "pcm"
FRONTEND_OUTPUT = "mel"
FEATURES_INPUT = "pcm"
FEATURES_OUTPUT = "features"

_GCD = math.gcd(ENCODER_FPS, MEL_FRAMES_PER_SECOND)
_FPS_NUM, _MEL_NUM = ENCODER_FPS // _GCD, MEL_FRAMES_PER_SECOND // _GCD  # 25/80 = 5/16: small exact products
#: Longest audio one ``audio_features`` call computes with SyncTalk_2D's exact window count: one hour.
MAX_SECONDS = 3600
MAX_SAMPLES = MAX_SECONDS * SAMPLE_RATE
MAX_MEL_FRAMES = 1 + MAX_SAMPLES // HOP


def reference_window_count(mel_frames: int) -> int:
    """SyncTalk_2D's window count, float64 as in the reference: ``int((T - 16) / 80 * 25) + 2``."""
    return int((mel_frames - ENC_MEL_WINDOW) / float(MEL_FRAMES_PER_SECOND) * float(ENCODER_FPS)) + 2


def integer_window_count(mel_frames: int) -> int:
    """The same count in exact integer arithmetic: ``(T - 16) * 5 // 16 + 2`` (what the graph computes)."""
    return (mel_frames - ENC_MEL_WINDOW) * ENCODER_FPS // MEL_FRAMES_PER_SECOND + 2


def short_counts(max_mel_frames: int = MAX_MEL_FRAMES) -> np.ndarray:
    """Every T (16 <= T <= ``max_mel_frames``) where the float64 count is one below the integer count, int32."""
    t = np.arange(ENC_MEL_WINDOW, max_mel_frames + 1, ENC_MEL_WINDOW, dtype=np.int64)  # only T - 16 = 16 j
    ref = ((t - ENC_MEL_WINDOW) / float(MEL_FRAMES_PER_SECOND) * float(ENCODER_FPS)).astype(np.int64) + 2
    exact = (t - ENC_MEL_WINDOW) * ENCODER_FPS // MEL_FRAMES_PER_SECOND + 2
    if np.any((exact - ref) > 1) or np.any(ref > exact):
        raise AssertionError("float64 window count departs from the integer one by more than one")
    return t[ref < exact].astype(np.int32)


def dft_basis(window: np.ndarray) -> np.ndarray:
    """(802, 800) float64 rows ``w[n] cos(2 pi k n / N)`` for k = 0..400, then ``-w[n] sin(...)`` (the angle
    reduced exactly, ``k n mod N``, before cos / sin)."""
    n = np.arange(N_FFT, dtype=np.int64)
    k = np.arange(N_FFT // 2 + 1, dtype=np.int64)
    angle = 2.0 * np.pi * (np.outer(k, n) % N_FFT) / N_FFT
    w = np.asarray(window, dtype=np.float64)
    if w.shape != (N_FFT,):
        raise ValueError(f"window has shape {w.shape}, expected ({N_FFT},)")
    return np.concatenate([np.cos(angle) * w, -np.sin(angle) * w])


def preemphasis_dft_kernel(window: np.ndarray) -> np.ndarray:
    """(802, 801) float64: the DFT rows with the pre-emphasis folded in, applied to x[j0 - 1 .. j0 + 799] of a frame
    whose y-samples are j0 .. j0 + 799: ``K[q] = B[q - 1] - k B[q]`` (B[-1] = B[800] = 0)."""
    b = dft_basis(window)
    k = float(MEL["preemphasis"])
    out = np.zeros((b.shape[0], N_FFT + 1))
    out[:, 1:] += b
    out[:, :-1] -= k * b
    return out


# Exact splitting (after Ozaki's error-free matrix products): x = x1 + x2 + xr with x1 on a 2^-7 grid and x2 on a
# 2^-14 grid, the kernel K = K1 + K2 + Kr with K1 on a 2^-6 grid and K2 on a 2^-13 grid. Every product of x1 or x2
# with K1, and of x1 with K2, is an integer multiple of one power of two, and for |x| <= 1 the 801-term sums stay
# below 2^24 of those units, so float32 convolutions compute them exactly in any order. The rest is small and
# carries ordinary float32 error. A plain float32 STFT is off by ~1e-6 absolute in every bin, which far from a
# strong tone (a chirp, a whistle) moves the mel by up to 3e-4; split, the STFT is ~1e-8 from float64.
_X1, _X2 = 2.0 ** 7, 2.0 ** 14
_K1, _K2 = 2.0 ** 6, 2.0 ** 13


def split_kernel(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``K1, K2, Kr`` (float32, exactly ``K1 + K2`` plus the float32 rounding of the rest) of a float64 kernel."""
    k1 = np.round(kernel * _K1) / _K1
    k2 = np.round((kernel - k1) * _K2) / _K2
    return k1.astype(np.float32), k2.astype(np.float32), (kernel - k1 - k2).astype(np.float32)


class AudioFrontend(nn.Module):
    """16 kHz mono float32 PCM ``[batch, samples]`` -> SyncTalk_2D's normalised mel ``[batch, 1 + samples // 200,
    80]`` (framegen.toolkit.inputs.audio.melspectrogram, in float32 with an exactly split STFT)."""

    def __init__(self, mel_basis: np.ndarray, window: np.ndarray) -> None:
        super().__init__()
        basis = np.asarray(mel_basis, dtype=np.float32)
        if basis.shape != (int(MEL["n_mels"]), N_FFT // 2 + 1):
            raise ValueError(f"mel basis has shape {basis.shape}, expected ({MEL['n_mels']}, {N_FFT // 2 + 1})")
        k1, k2, kr = split_kernel(preemphasis_dft_kernel(window))
        self.register_buffer("k1", torch.from_numpy(k1[:, None, :]))
        self.register_buffer("k2", torch.from_numpy(k2[:, None, :]))
        self.register_buffer("k_rest", torch.from_numpy(np.stack([kr, k2 + kr, k1 + k2 + kr], axis=1)))
        # The centred STFT pads y (after pre-emphasis) with zeros. With the pre-emphasis folded into the kernel the
        # padding is on x instead: zeros on the left (y[j] = 0 there), and on the right the tail x[S + j] =
        # k^(j+1) x[S-1], for which y[S + j] = x[S + j] - k x[S + j - 1] = 0.
        pre = float(MEL["preemphasis"])
        self.register_buffer("tail", torch.from_numpy(
            (pre ** np.arange(1, N_FFT // 2 + 1, dtype=np.float64)).astype(np.float32)[None, None, :]))
        self.register_buffer("mel_basis", torch.from_numpy(basis.copy()))

    def forward(self, pcm: torch.Tensor) -> torch.Tensor:
        """The normalised mel of each row of ``pcm``."""
        x = pcm.unsqueeze(1)
        x = torch.cat([F.pad(x, (N_FFT // 2 + 1, 0)), x[:, :, -1:] * self.tail], dim=2)
        x1 = torch.round(x * _X1) / _X1
        r = x - x1
        x2 = torch.round(r * _X2) / _X2
        xr = r - x2
        exact = (F.conv1d(x1, self.k1, stride=HOP), F.conv1d(x1, self.k2, stride=HOP),
                 F.conv1d(x2, self.k1, stride=HOP))
        small = F.conv1d(torch.cat([x1, x2, xr], dim=1), self.k_rest, stride=HOP)
        spec = exact[0] + ((exact[1] + exact[2]) + small)  # [batch, 802, frames]
        bins = N_FFT // 2 + 1
        re, im = spec[:, :bins], spec[:, bins:]
        mag = torch.sqrt(re * re + im * im)
        mel = torch.matmul(self.mel_basis, mag)  # [batch, 80, frames]
        db = 20.0 * torch.log10(torch.clamp(mel, min=1e-5)) - 20.0
        s = torch.clamp(8.0 * ((db + 100.0) / 100.0) - 4.0, -4.0, 4.0)
        return s.transpose(1, 2)


class AudioFeatures(nn.Module):
    """PCM ``[samples]`` (16 kHz mono float32, at least 3000 samples) -> SyncTalk_2D 'ave' features ``[N + 2, 512]``:
    the front-end's mel, the encoder on every 16-frame window, the first and last embedding repeated once."""

    def __init__(self, frontend: AudioFrontend, encoder: nn.Module) -> None:
        super().__init__()
        self.frontend = frontend
        self.encoder = encoder
        self.register_buffer("short_counts", torch.from_numpy(short_counts().astype(np.int64)))
        self.register_buffer("offsets", torch.arange(ENC_MEL_WINDOW, dtype=torch.int64))

    def forward(self, pcm: torch.Tensor) -> torch.Tensor:
        """Features for every video frame of ``pcm``."""
        mel = self.frontend(pcm.unsqueeze(0))[0]  # [T, 80]
        t = mel.shape[0]
        short = (self.short_counts == t).to(torch.int64).sum()
        count = torch.div((t - ENC_MEL_WINDOW) * _FPS_NUM, _MEL_NUM, rounding_mode="floor") + 2 - short
        k = torch.arange(count)
        starts = torch.div(k * _MEL_NUM, _FPS_NUM, rounding_mode="floor")  # int(80 * k / 25)
        starts = torch.minimum(starts, torch.zeros_like(starts) + (t - ENC_MEL_WINDOW))  # the end-of-audio shift
        idx = starts.unsqueeze(1) + self.offsets.unsqueeze(0)  # [N, 16]
        windows = mel[idx.reshape(-1)].reshape(-1, ENC_MEL_WINDOW, mel.shape[1])
        emb = self.encoder(windows.transpose(1, 2).unsqueeze(1))  # [N, 512]
        return torch.cat([emb[:1], emb, emb[-1:]], dim=0)


def frontend_contract() -> dict[str, object]:
    """The two front-end models' I/O and rules as JSON-able data (embedded in their metadata under
    ``audio_frontend`` and described in docs/CONTRACT.md)."""
    return {
        "audio_frontend": {
            "inputs": {FRONTEND_INPUT: {"shape": ["batch", "samples"], "dtype": "float32",
                                        "meaning": f"{SAMPLE_RATE} Hz mono PCM in [-1, 1] (as decoded, no scaling)"}},
            "outputs": {FRONTEND_OUTPUT: {"shape": ["batch", "frames", int(MEL["n_mels"])], "dtype": "float32",
                                          "meaning": "SyncTalk_2D's normalised mel, frames = 1 + samples // 200"}},
            "equals": "framegen.toolkit.inputs.audio.melspectrogram within 1e-4 (values in [-4, 4])",
        },
        "audio_features": {
            "inputs": {FEATURES_INPUT: {"shape": ["samples"], "dtype": "float32",
                                        "meaning": f"{SAMPLE_RATE} Hz mono PCM in [-1, 1], {MIN_SAMPLES} to "
                                                   f"{MAX_SAMPLES} samples"}},
            "outputs": {FEATURES_OUTPUT: {"shape": ["rows", 512], "dtype": "float32",
                                          "meaning": "'ave' features, row i for 25 fps video frame i"}},
            "rows": "int((T - 16) / 80 * 25) + 4 with T = 1 + samples // 200 (N windows + first and last repeated)",
            "windows": "window k = mel[s:s+16] with s = min(int(80 * k / 25), T - 16), k = 0..N-1",
            "count_in_graph": "(T - 16) * 5 // 16 + 2, minus 1 for the T listed in short_counts() (where float64 "
                              f"rounds the reference's count down), exact up to T = {MAX_MEL_FRAMES}",
            "equals": "framegen.toolkit.inputs.audio.ave_features(melspectrogram(pcm), encoder) within 1e-4 of its "
                      "largest value",
        },
    }
