"""The I/O contract: every number a port needs to reproduce SyncTalk_2D's pipeline, in one place.

The preprocessing, the audio code, the exporters (which embed :func:`contract_dict` in every artifact) and the docs
all read these constants; nothing else restates them.
"""

from __future__ import annotations

from typing import Any

MODES: tuple[str, ...] = ("ave", "hubert", "wenet")
# Per-frame audio input of the generator, by mode (a 16-frame window reshaped C-order).
AUDIO_SHAPES: dict[str, tuple[int, int, int]] = {
    "ave": (32, 16, 16),
    "hubert": (32, 32, 32),
    "wenet": (256, 16, 32),
}

CONTRACT_VERSION = "1"

# Tensor names, identical in ONNX and Core ML artifacts.
GEN_IMAGE = "image"
GEN_AUDIO = "audio"
GEN_OUTPUT = "output"
ENC_INPUT = "mel"
ENC_OUTPUT = "embedding"

# Geometry.
CROP_SIZE = 328
INNER_OFFSET = 4
INNER_SIZE = 320
LMS_POINTS = 110
BOX_X0_POINT = 1  # x0 = lms[1].x
BOX_Y0_POINT = 52  # y0 = lms[52].y
BOX_X1_POINT = 31  # x1 = lms[31].x ; y1 = y0 + (x1 - x0)
# cv2.rectangle(img, (x, y, w, h), 0, -1) fills columns x..x+w-1 and rows y..y+h-1.
MASK_RECT_XYWH = (5, 5, 310, 305)
MASK_ROWS = slice(MASK_RECT_XYWH[1], MASK_RECT_XYWH[1] + MASK_RECT_XYWH[3])
MASK_COLS = slice(MASK_RECT_XYWH[0], MASK_RECT_XYWH[0] + MASK_RECT_XYWH[2])

# Audio.
WINDOW = 16
WINDOW_LEFT = 8  # rows i-8 .. i+7
FEATURE_WIDTH = 512  # 'ave' features per frame
FPS: dict[str, int] = {"ave": 25, "hubert": 25, "wenet": 20}
#: A live stream's default latency budget past a frame's own audio lookahead: two frame-times (issue 28's bound).
LATENCY_BUDGET_MS = 2000.0 / FPS["ave"]
SAMPLE_RATE = 16000
MEL = {
    "preemphasis": 0.97,
    "n_fft": 800,
    "hop_length": 200,
    "win_length": 800,
    "window": "hann",
    "center": True,
    "pad_mode": "constant",
    "n_mels": 80,
    "fmin": 55.0,
    "fmax": 7600.0,
    "mel_norm": "slaney",
    "mel_htk": False,
    "magnitude": "abs (power 1)",
    "db": "20*log10(max(1e-5, mel)) - 20",
    "normalize": "clip(8 * (S + 100) / 100 - 4, -4, 4)",
}
ENC_MEL_WINDOW = 16  # mel frames per encoder window
MEL_FRAMES_PER_SECOND = 80
HOP = int(MEL["hop_length"])  # samples per mel frame: T = 1 + samples // HOP
N_FFT = int(MEL["n_fft"])
N_MELS = int(MEL["n_mels"])
#: SyncTalk_2D's AudDataset converts mel frames to video frames at 25 fps whatever the generator mode.
ENCODER_FPS = 25
#: Shortest audio with one encoder window: 16 mel frames.
MIN_SAMPLES = (ENC_MEL_WINDOW - 1) * HOP


def audio_shape(mode: str) -> tuple[int, int, int]:
    """The generator's per-frame audio input shape for a mode."""
    return AUDIO_SHAPES[mode]


def contract_dict(mode: str | None = None) -> dict[str, Any]:
    """The contract as plain JSON-able data (embedded in manifests and artifact metadata)."""
    modes = [mode] if mode else list(MODES)
    return {
        "version": CONTRACT_VERSION,
        "generator": {
            "inputs": {
                GEN_IMAGE: {"shape": ["batch", 6, INNER_SIZE, INNER_SIZE], "dtype": "float32",
                            "meaning": "channels 0-2: 320x320 reference crop, BGR, /255; channels 3-5: the same "
                                       "crop with the mask rectangle set to 0, BGR, /255; planar (CHW)"},
                GEN_AUDIO: {"shape": {m: ["batch", *AUDIO_SHAPES[m]] for m in modes}, "dtype": "float32",
                            "meaning": "16-frame feature window reshaped C-order to the mode's shape"},
            },
            "outputs": {GEN_OUTPUT: {"shape": ["batch", 3, INNER_SIZE, INNER_SIZE], "dtype": "float32",
                                     "meaning": "predicted 320x320 crop, BGR, in [0, 1] (after sigmoid)"}},
        },
        "audio_encoder": {
            "inputs": {ENC_INPUT: {"shape": ["batch", 1, MEL["n_mels"], ENC_MEL_WINDOW], "dtype": "float32",
                                   "meaning": "80 mel bins x 16 mel frames (bins are rows)"}},
            "outputs": {ENC_OUTPUT: {"shape": ["batch", FEATURE_WIDTH], "dtype": "float32"}},
        },
        "preprocess": {
            "landmarks": f"{LMS_POINTS} lines 'x y' per frame, parsed as float32 then cast to int32 (truncation)",
            "crop_box": {"x0": "lms[1].x", "y0": "lms[52].y", "x1": "lms[31].x", "y1": "y0 + (x1 - x0)",
                         "slice": "frame[y0:y1, x0:x1]"},
            "resize": {"size": [CROP_SIZE, CROP_SIZE], "interpolation": "cv2.INTER_CUBIC"},
            "inner": {"offset": INNER_OFFSET, "size": INNER_SIZE, "slice": "crop328[4:324, 4:324]"},
            "mask": {"cv2_rectangle_xywh": list(MASK_RECT_XYWH), "rows": [MASK_ROWS.start, MASK_ROWS.stop],
                     "cols": [MASK_COLS.start, MASK_COLS.stop], "value": 0,
                     "meaning": "masked[rows[0]:rows[1], cols[0]:cols[1]] = 0 on the 320x320 reference"},
            "normalize": "float32(uint8) / 255, channel order BGR, image = concat(reference, masked)",
        },
        "postprocess": {
            "scale": "uint8(trunc(output * 255)) in HWC BGR (numpy astype truncation, not rounding)",
            "paste": "crop328[4:324, 4:324] = pred; resize crop328 to (x1-x0, y1-y0) with cv2.INTER_CUBIC; "
                     "frame[y0:y1, x0:x1] = result",
        },
        "frame_order": "ping-pong over template frames 0..L: output i uses k_i with k_0 = 1, then 2..L, L-1..0, 1..",
        "audio": {
            "fps": {m: FPS[m] for m in modes},
            "window": {"rows": "features[i-8 : i+8]", "padding": "zero rows outside [0, N)", "length": WINDOW},
            "reshape": {m: list(AUDIO_SHAPES[m]) for m in modes},
            "sample_rate": SAMPLE_RATE,
            "mel": MEL,
            "ave_features": {
                "encoder_window": "mel[s:s+16] with s = int(80 * k / 25), shifted back to end at T when it "
                                  "overruns",
                "count": "int((T - 16) / 80 * 25) + 2 windows, then the first and last embedding repeated once",
            },
        },
    }

#: Triton model-config parameters a framegen repository records (read back by the `triton` backend)
TRITON_PARAM_MODE = "framegen_mode"
TRITON_PARAM_PRECISION = "framegen_precision"
