"""A reference port of SyncTalk_2D's per-frame pipeline in plain numpy: the file a Go or Swift author translates.

It is written from docs/CONTRACT.md alone and uses nothing beyond numpy, Python's standard library (``wave``,
``zlib``, ``json``) and onnxruntime for the two models; no OpenCV, no PyTorch, no framegen. Every function is one
numbered step of the contract, in pipeline order. It writes its values for the cases of a golden directory in the
candidate layout, so ``framegen golden check`` judges every stage it computes:

    python examples/numpy_port/port.py --golden G --bundle B --template T --audio speech.wav --out C
    framegen golden check G --candidate C --bundle B

``--features F.npy`` replaces ``--audio`` for goldens written from features. Templates with PNG frames are decoded
here (PNG is lossless: any decoder gives the same pixels); for JPEG frames the port reads the golden's decoded
``frame`` instead and writes no ``frame`` stage (JPEG decoders differ: CONTRACT.md §2.0). ``--plant STEP`` makes one
step wrong on purpose (the suite proves that ``golden check`` then names that step's stage).
"""

from __future__ import annotations

import argparse
import json
import math
import wave
import zlib
from pathlib import Path

import numpy as np
import onnxruntime as ort

# §2.3 crop geometry
CROP = 328
INNER = 4
SIZE = 320
MASK_ROWS = (5, 310)  # half-open: rows 5..309
MASK_COLS = (5, 315)  # half-open: columns 5..314
CUBIC_A = -0.75
# §4 audio front-end
SAMPLE_RATE = 16000
N_FFT = 800
HOP = 200
N_MELS = 80
FMIN, FMAX = 55.0, 7600.0
PREEMPHASIS = 0.97
MEL_FPS = 80.0
VIDEO_FPS = 25.0
ENC_WINDOW = 16
# §1 the generator's audio input per mode
AUDIO_SHAPES = {"ave": (32, 16, 16), "hubert": (32, 32, 32), "wenet": (256, 16, 32)}
PLANTS = ("swap-channels", "mask-off-by-one", "zero-audio", "round-pred", "nearest-resize", "htk-mel",
          "no-window-shift")


# ------------------------------------------------------------------------------------------------ template


def numbered(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Files named ``N.ext`` in numeric order (the template's frame order)."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in suffixes and p.stem.isdigit()]
    return sorted(files, key=lambda p: int(p.stem))


def template_index(i: int, n: int, start: int = 0) -> int:
    """§2.1: the template frame of output frame ``i``: ping-pong over ``start..n-1``, beginning at ``start + 1``."""
    span = n - 1 - start
    if span <= 0:
        return start
    r = i % (2 * span)
    return start + (r + 1 if r < span else 2 * span - 1 - r)


def read_lms(path: Path) -> np.ndarray:
    """§2.2: 110 ``x y`` lines (CRLF allowed), each number parsed as float32, then truncated toward zero to int32."""
    rows = [line.split() for line in path.read_text(encoding="latin-1").splitlines() if line.strip()]
    values = np.array(rows, dtype=np.float32)
    if values.shape != (110, 2):
        raise ValueError(f"{path}: expected 110 'x y' lines, got shape {values.shape}")
    return values.astype(np.int32)  # float -> int conversion truncates toward zero


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def read_png(path: Path) -> np.ndarray:
    """An 8-bit, non-interlaced grey, RGB or RGBA PNG as BGR uint8 HxWx3 (PNG spec, filters 0-4)."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG file")
    pos, idat = 8, []
    width = height = channels = 0
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height = int.from_bytes(body[0:4], "big"), int.from_bytes(body[4:8], "big")
            depth, colour, interlace = body[8], body[9], body[12]
            if depth != 8 or interlace != 0 or colour not in (0, 2, 6):
                raise ValueError(f"{path}: only 8-bit non-interlaced grey/RGB/RGBA PNGs are read here")
            channels = {0: 1, 2: 3, 6: 4}[colour]
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int64)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int64)
        if kind == 0:
            cur = line
        elif kind == 1:  # Sub: a running sum per channel, modulo 256
            cur = np.cumsum(line.reshape(width, channels), axis=0).reshape(-1) % 256
        elif kind == 2:  # Up
            cur = (line + prev) % 256
        else:  # Average and Paeth depend on the byte just decoded: one byte at a time
            cur_list = [0] * stride
            up = prev.tolist()
            raw_line = line.tolist()
            for x in range(stride):
                left = cur_list[x - channels] if x >= channels else 0
                if kind == 3:
                    pred = (left + up[x]) // 2
                else:
                    pred = _paeth(left, up[x], up[x - channels] if x >= channels else 0)
                cur_list[x] = (raw_line[x] + pred) % 256
            cur = np.array(cur_list, dtype=np.int64)
        out[y] = cur
        prev = cur
    image = out.reshape(height, width, channels)
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[:, :, 2::-1])  # RGB(A) -> BGR


def crop_box(lms: np.ndarray) -> tuple[int, int, int, int]:
    """§2.2: ``x0 = lms[1].x, y0 = lms[52].y, x1 = lms[31].x, y1 = y0 + (x1 - x0)``."""
    x0, y0, x1 = int(lms[1, 0]), int(lms[52, 1]), int(lms[31, 0])
    return x0, y0, x1, y0 + (x1 - x0)


# ------------------------------------------------------------------------------------------------ cubic resize


def cubic_weights(t: np.ndarray) -> np.ndarray:
    """§2.3: the four bicubic weights (A = -0.75) for fractional offsets ``t`` in [0, 1), float64, shape (n, 4)."""
    a = CUBIC_A
    w0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    w1 = ((a + 2) * t - (a + 3)) * t * t + 1
    w2 = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1
    return np.stack([w0, w1, w2, 1.0 - w0 - w1 - w2], axis=1)


def _taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices (clamped to the edge) and weights of each destination pixel along one axis."""
    scale = src / dst
    pos = (np.arange(dst) + 0.5) * scale - 0.5  # pixel-centre mapping
    left = np.floor(pos).astype(np.int64)
    idx = np.clip(left[:, None] + np.arange(-1, 3)[None, :], 0, src - 1)
    return idx, cubic_weights(pos - left)


def resize_cubic(image: np.ndarray, width: int, height: int, plant: str | None = None) -> np.ndarray:
    """§2.3: OpenCV's INTER_CUBIC on uint8, in float64: rows first, then columns, rounded half to even once at the
    end and saturated to 0..255 (CONTRACT.md gives how close this comes to OpenCV's own integer arithmetic)."""
    src = image.astype(np.float64)
    if plant == "nearest-resize":
        ys = np.minimum((np.arange(height) * image.shape[0] / height).astype(np.int64), image.shape[0] - 1)
        xs = np.minimum((np.arange(width) * image.shape[1] / width).astype(np.int64), image.shape[1] - 1)
        return image[ys][:, xs]
    xi, xw = _taps(image.shape[1], width)
    yi, yw = _taps(image.shape[0], height)
    horizontal = np.einsum("hwkc,wk->hwc", src[:, xi], xw)  # (H_src, width, 3)
    both = np.einsum("hkwc,hk->hwc", horizontal[yi], yw)  # (height, width, 3)
    return np.clip(np.rint(both), 0, 255).astype(np.uint8)


def crop_328(frame: np.ndarray, box: tuple[int, int, int, int], plant: str | None = None) -> np.ndarray:
    """§2.3 step 1: ``frame[y0:y1, x0:x1]`` resized to 328x328."""
    x0, y0, x1, y1 = box
    return resize_cubic(frame[y0:y1, x0:x1], CROP, CROP, plant)


def mask(reference: np.ndarray, plant: str | None = None) -> np.ndarray:
    """§2.3 step 3: rows 5..309 and columns 5..314 set to 0."""
    out = reference.copy()
    r0, r1 = MASK_ROWS
    if plant == "mask-off-by-one":
        r1 += 1
    out[r0:r1, MASK_COLS[0]:MASK_COLS[1]] = 0
    return out


def model_input(reference: np.ndarray, masked: np.ndarray, plant: str | None = None) -> np.ndarray:
    """§2.4: float32(value) / 255 (a division), BGR planes, reference then masked: (6, 320, 320)."""
    planes = []
    for image in (reference, masked):
        if plant == "swap-channels":
            image = image[:, :, ::-1]
        planes.append(image.astype(np.float32).transpose(2, 0, 1) / np.float32(255.0))
    return np.concatenate(planes)


# ------------------------------------------------------------------------------------------------ audio


def read_wav(path: Path) -> np.ndarray:
    """§4: a 16 kHz 16-bit PCM WAV as float32 in [-1, 1): ``int16 / 32768``, channels averaged."""
    with wave.open(str(path), "rb") as w:
        if w.getframerate() != SAMPLE_RATE or w.getsampwidth() != 2:
            raise ValueError(f"{path}: need 16 kHz 16-bit PCM (got {w.getframerate()} Hz, {8 * w.getsampwidth()} bit)")
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, w.getnchannels())
    return (pcm.astype(np.float32) / np.float32(32768.0)).mean(axis=1, dtype=np.float32)


def hz_to_mel(hz: np.ndarray, htk: bool = False) -> np.ndarray:
    """§4.3: Slaney's scale: ``hz / (200/3)`` below 1 kHz, ``15 + ln(hz / 1000) / (ln(6.4) / 27)`` above."""
    hz = np.asarray(hz, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    log_part = 15.0 + np.log(np.maximum(hz, 1000.0) / 1000.0) / (math.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_part, hz / (200.0 / 3.0))


def mel_to_hz(mel: np.ndarray, htk: bool = False) -> np.ndarray:
    """The inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    return np.where(mel >= 15.0, 1000.0 * np.exp(math.log(6.4) / 27.0 * (mel - 15.0)), mel * (200.0 / 3.0))


def mel_filterbank(htk: bool = False) -> np.ndarray:
    """§4.3: 80 triangles between 82 edges equally spaced in mel from 55 to 7600 Hz, over the 401 FFT bin
    frequencies ``k * 16000 / 800``; float64 triangles rounded to float32, then each row times
    ``2 / (edge[m + 2] - edge[m])`` (Slaney's area normalisation, float64 scale, float32 result). (80, 401)."""
    edges = mel_to_hz(np.linspace(hz_to_mel(FMIN, htk), hz_to_mel(FMAX, htk), N_MELS + 2), htk)
    bins = np.arange(N_FFT // 2 + 1) * (SAMPLE_RATE / N_FFT)
    lower = (bins[None, :] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    upper = (edges[2:, None] - bins[None, :]) / (edges[2:] - edges[1:-1])[:, None]
    tri = np.maximum(0.0, np.minimum(lower, upper)).astype(np.float32)
    return (tri * (2.0 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32)


def melspectrogram(x: np.ndarray, plant: str | None = None) -> np.ndarray:
    """§4: pre-emphasis, centred STFT (periodic Hann 800, hop 200), magnitude, mel, dB, normalise; float64 all the
    way, float32 at the end. ``T = 1 + samples // 200`` frames of 80 bins: (T, 80)."""
    x64 = x.astype(np.float64)
    y = x64 - PREEMPHASIS * np.concatenate([[0.0], x64[:-1]])
    padded = np.concatenate([np.zeros(N_FFT // 2), y, np.zeros(N_FFT // 2)])
    frames = 1 + x.size // HOP
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic
    idx = np.arange(frames)[:, None] * HOP + np.arange(N_FFT)[None, :]
    magnitude = np.abs(np.fft.rfft(padded[idx] * hann, axis=1))
    mel = magnitude @ mel_filterbank(htk=plant == "htk-mel").astype(np.float64).T
    db = 20.0 * np.log10(np.maximum(1e-5, mel)) - 20.0
    return np.clip(8.0 * ((db + 100.0) / 100.0) - 4.0, -4.0, 4.0).astype(np.float32)


def window_starts(frames: int, plant: str | None = None) -> np.ndarray:
    """§4: ``int((T - 16) / 80 * 25) + 2`` windows; window k starts at ``int(80 * k / 25)``, at most ``T - 16``."""
    count = int((frames - ENC_WINDOW) / MEL_FPS * VIDEO_FPS) + 2
    starts = np.array([int(MEL_FPS * k / VIDEO_FPS) for k in range(count)], dtype=np.int64)
    return starts if plant == "no-window-shift" else np.minimum(starts, frames - ENC_WINDOW)


def mel_window(mel: np.ndarray, start: int) -> np.ndarray:
    """§4: the encoder input ``mel[start:start+16]`` transposed to (1, 80, 16): bins are rows."""
    window = mel[start:start + ENC_WINDOW]
    if window.shape[0] < ENC_WINDOW:  # only a planted fault reaches past the end
        window = np.concatenate([window, np.full((ENC_WINDOW - window.shape[0], N_MELS), -4.0, np.float32)])
    return np.ascontiguousarray(window.T[None])


def audio_window(features: np.ndarray, i: int, mode: str) -> np.ndarray:
    """§3: feature rows ``i-8 .. i+7``, zero rows outside the features, reshaped (C order) to the mode's shape."""
    rows = np.zeros((16, features.shape[1]), dtype=np.float32)
    for j in range(16):
        r = i - 8 + j
        if 0 <= r < features.shape[0]:
            rows[j] = features[r]
    return rows.reshape(AUDIO_SHAPES[mode])


# ------------------------------------------------------------------------------------------------ output


def pred_to_uint8(output: np.ndarray, plant: str | None = None) -> np.ndarray:
    """§2.5 step 1: ``output * 255`` in float32, truncated (not rounded) to uint8, CHW -> HWC."""
    scaled = np.clip(np.nan_to_num(output, nan=0.0) * np.float32(255.0), 0, 255)
    scaled = np.rint(scaled) if plant == "round-pred" else scaled
    return scaled.astype(np.uint8).transpose(1, 2, 0)


def paste_back(frame: np.ndarray, box: tuple[int, int, int, int], pasted: np.ndarray) -> np.ndarray:
    """§2.5 steps 3-4: the pasted 328 crop resized to the box with the same cubic and written into the frame."""
    x0, y0, x1, y1 = box
    out = frame.copy()
    out[y0:y1, x0:x1] = resize_cubic(pasted, x1 - x0, y1 - y0)
    return out


# ------------------------------------------------------------------------------------------------ models


def bundle_model(bundle: Path, model: str) -> ort.InferenceSession:
    """The bundle's fp32 tensor ONNX artifact of ``model`` (manifest.json lists it), on the CPU."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    for art in manifest["artifacts"]:
        if (art["model"], art["format"], art["precision"], art.get("io", "tensor")) == (model, "onnx", "fp32",
                                                                                       "tensor"):
            path = (bundle / art["path"]).resolve()
            if bundle.resolve() not in path.parents:
                raise ValueError(f"{bundle}/manifest.json: {art['path']} lies outside the bundle")
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    raise ValueError(f"{bundle}: no fp32 ONNX {model} artifact")


def ave_features(mel: np.ndarray, encoder: ort.InferenceSession, plant: str | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """§4: every mel window through the encoder; the first and last embedding repeated once: (N_w + 2, 512).
    Returns the features and the windows."""
    windows = np.stack([mel_window(mel, int(s)) for s in window_starts(mel.shape[0], plant)])
    embeddings = np.concatenate([encoder.run(["embedding"], {"mel": windows[b:b + 64]})[0]
                                 for b in range(0, len(windows), 64)])
    return np.concatenate([embeddings[:1], embeddings, embeddings[-1:]]).astype(np.float32), windows


# ------------------------------------------------------------------------------------------------ driver


def write(path: Path, array: np.ndarray, dtype: str) -> None:
    """A stage file: raw little-endian values in C order, no header."""
    path.write_bytes(np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes())


def run(golden: Path, bundle: Path, template: Path, out: Path, audio: Path | None = None,
        features_path: Path | None = None, plant: str | None = None) -> None:
    """Compute every stage for the golden's cases (its ``index.json`` says which output frames) into ``out``."""
    index = json.loads((golden / "index.json").read_text())
    mode, start = index["mode"], int(index["source"].get("start_frame", 0))
    lms_files = numbered(template / "landmarks", (".lms",))
    images = numbered(template / "full_body_img", (".png", ".jpg", ".jpeg"))
    generator = bundle_model(bundle, "generator")
    windows = None
    if audio is not None:
        mel = melspectrogram(read_wav(audio), plant)
        features, windows = ave_features(mel, bundle_model(bundle, "audio_encoder"), plant)
    elif features_path is not None:
        features = np.load(features_path).astype(np.float32)
    else:
        raise ValueError("give --audio or --features")
    for case in index["cases"]:
        i = int(case["frame"])
        k = template_index(i, len(lms_files), start)
        stages: dict[str, tuple[np.ndarray, str]] = {}
        if images[k].suffix.lower() == ".png":
            frame = read_png(images[k])
            stages["frame"] = (frame, "uint8")
        else:  # JPEG: decoders differ (CONTRACT.md §2.0); take the golden's decoded frame
            shape = next(s["shape"] for s in index["stages"] if s["name"] == "frame")
            frame = np.fromfile(golden / case["files"]["frame"], np.uint8).reshape(shape)
        lms = read_lms(lms_files[k])
        box = crop_box(lms)
        crop = crop_328(frame, box, plant)
        reference = crop[INNER:INNER + SIZE, INNER:INNER + SIZE]
        masked = mask(reference, plant)
        image = model_input(reference, masked, plant)
        window = audio_window(features, i, mode)
        if plant == "zero-audio":
            window = np.zeros_like(window)
        output = generator.run(["output"], {"image": image[None], "audio": window[None]})[0][0]
        pred = pred_to_uint8(output, plant)
        pasted = crop.copy()
        pasted[INNER:INNER + SIZE, INNER:INNER + SIZE] = pred
        stages.update({
            "landmarks": (lms, "int32"), "crop_box": (np.array(box), "int32"), "crop_328": (crop, "uint8"),
            "reference_320": (reference, "uint8"), "masked_320": (masked, "uint8"),
            "model_input": (image, "float32"), "audio_window": (window, "float32"),
            "model_output": (output, "float32"), "pred_320": (pred, "uint8"), "pasted_328": (pasted, "uint8"),
            "final_frame": (paste_back(frame, box, pasted), "uint8"),
        })
        if windows is not None:
            w = min(max(i - 1, 0), len(windows) - 1)  # feature row i is embedding i - 1, clamped (§4)
            stages["mel_window"] = (windows[w], "float32")
            stages["embedding"] = (features[i], "float32")
        case_dir = out / f"case_{int(case['case']):03d}"
        case_dir.mkdir(parents=True, exist_ok=True)
        for name, (array, dtype) in stages.items():
            write(case_dir / f"{name}.bin", array, dtype)


def main() -> None:
    """Parse the command line and write the candidate."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--golden", type=Path, required=True, help="golden directory (its index.json names the cases)")
    p.add_argument("--bundle", type=Path, required=True, help="bundle with fp32 ONNX generator (and audio encoder)")
    p.add_argument("--template", type=Path, required=True, help="full_body_img/N.png|jpg + landmarks/N.lms")
    p.add_argument("--audio", type=Path, help="16 kHz 16-bit PCM WAV (golden written with --audio)")
    p.add_argument("--features", type=Path, help="features .npy (golden written with --features)")
    p.add_argument("--out", type=Path, required=True, help="candidate directory to write")
    p.add_argument("--plant", choices=PLANTS, help="make one step wrong on purpose")
    args = p.parse_args()
    run(args.golden, args.bundle, args.template, args.out, args.audio, args.features, args.plant)


if __name__ == "__main__":
    main()
