"""The audio front-end artifacts (``framegen export --audio-frontend``): build, validate, describe.

Export validation runs every artifact on six signals (:func:`validation_signals`: speech, silence, a full-scale
square wave, full-scale white noise, a 0.3 s clip and a 60 s clip) through the runtime that would run it (ONNX
Runtime CPU for ONNX, the ``coreml-mil`` verifier for Core ML) and compares it with framegen's own numpy mel
(:func:`framegen.toolkit.inputs.audio.melspectrogram`) and 'ave' features
(:func:`framegen.toolkit.inputs.audio.ave_features`
with the PyTorch encoder). Limits (:data:`MEL_MAX_ABS`, :data:`FEATURES_MAX_REL`) are the contract's: the mel within
1e-4 on its +-4 scale, the features within 1e-4 of the clip's largest feature value. One departure fails the whole
export and nothing is written.

Measured (``export_audio_frontend``, seeded encoder, ONNX Runtime and coreml-mil alike): mel max error
7e-7..1.2e-6 (with the exactly split STFT of :mod:`framegen.models.audio_frontend`; a plain float32 STFT reached
5.1e-5 on these signals and 2.9e-4 on a chirp), features 1.3e-6..3.4e-6 relative.

The artifacts also take part in parity (:func:`frontend_parity`: stages ``mel`` and ``features``, hooked into
``toolkit.parity.run_parity`` when it runs from audio) and golden vectors (:func:`write_frontend_golden` /
:func:`check_frontend_golden`: the ``pcm_mel`` stage), and :func:`stream_features` is the live-chunking rule of
docs/PORTS.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from framegen.exporters.coreml_export import MINIMUM_DEPLOYMENT_TARGET
from framegen.exporters.errors import ExportError, ExportValidationError
from framegen.exporters.onnx_export import DEFAULT_OPSET
from framegen.models.audio_frontend import (
    FEATURES_INPUT,
    FEATURES_OUTPUT,
    FRONTEND_INPUT,
    FRONTEND_OUTPUT,
    AudioFeatures,
    AudioFrontend,
    frontend_contract,
)
from framegen.models.bundle import sha256_path
from framegen.models.contract import MEL, SAMPLE_RATE
from framegen.models.errors import FramegenError, first_line
from framegen.models.imports import mlprogram_spec
from framegen.models.metadata import KEY_MODEL, artifact_metadata
from framegen.models.validation import Check, ValidationRecord
from framegen.runtimes.mil.program import MilProgram
from framegen.toolkit.export.validate import check_metadata
from framegen.toolkit.inputs.audio import (
    ave_features,
    decode_audio,
    mel_basis,
    mel_frame_count,
    melspectrogram,
    torch_encoder_fn,
)
from framegen.toolkit.inputs.speech import harmonic_speech

KINDS = ("audio_frontend", "audio_features")
FORMATS = ("onnx", "coreml")
MEL_MAX_ABS = 1e-4
FEATURES_MAX_REL = 1e-4
METADATA_KEY = "audio_frontend"
SPEECH_FIXTURE = "speech_16k_mono.wav"
# 150,200 samples: T = 752 mel frames, one of the lengths where SyncTalk_2D's float64 window count rounds down.
SPEECH_SAMPLES = 150_200


def hann_window() -> np.ndarray:
    """The periodic 800-point Hann window of the STFT (scipy's ``get_window('hann', 800)``), float64."""
    n = int(MEL["n_fft"])
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def frontend_module() -> AudioFrontend:
    """The front-end module built from the numpy mel's own filter bank (``toolkit.audio.mel_basis``) and the STFT
    window."""
    return AudioFrontend(mel_basis(), hann_window()).eval()


# ---------------------------------------------------------------------------------------------------- signals

def _speech(path: str | os.PathLike[str] | None) -> np.ndarray | None:
    if path is None:
        return None
    p = Path(path)
    return decode_audio(p) if p.is_file() else None


def default_speech_path() -> Path | None:
    """``../shared/fixtures/speech_16k_mono.wav`` next to the repository (or under ``$FRAMEGEN_FIXTURES``)."""
    env = os.environ.get("FRAMEGEN_FIXTURES")
    base = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "fixtures"
    path = base / SPEECH_FIXTURE
    return path if path.is_file() else None


def validation_signals(speech: str | os.PathLike[str] | None = None, seed: int = 19) -> dict[str, np.ndarray]:
    """The export-validation signals (float32 mono 16 kHz): ``speech`` (the first 9.39 s of the speech file, when
    given and present, else :func:`framegen.toolkit.inputs.speech.harmonic_speech`), ``silence`` (1 s of zeros),
    ``square`` (2 s, 233 Hz, exactly +-1),
    ``white_noise`` (3 s, uniform in [-1, 1)), ``clip_0.3s`` (4800 samples of speech) and ``clip_60s``
    (960,000 samples: the speech file repeated, or synthetic speech)."""
    rng = np.random.default_rng(seed)
    real = _speech(speech)
    if real is not None and real.shape[0] >= SPEECH_SAMPLES:
        voice, long = real[:SPEECH_SAMPLES], np.resize(real, 60 * SAMPLE_RATE)
        short = real[SAMPLE_RATE: SAMPLE_RATE + 4800]
    else:
        voice, long = harmonic_speech(SPEECH_SAMPLES, seed), harmonic_speech(60 * SAMPLE_RATE, seed + 1)
        short = voice[SAMPLE_RATE: SAMPLE_RATE + 4800]
    n = np.arange(2 * SAMPLE_RATE)
    square = np.where((n * 233 * 2 // SAMPLE_RATE) % 2 == 0, 1.0, -1.0).astype(np.float32)
    return {
        "speech": np.ascontiguousarray(voice, dtype=np.float32),
        "silence": np.zeros(SAMPLE_RATE, dtype=np.float32),
        "square": square,
        "white_noise": rng.uniform(-1.0, 1.0, 3 * SAMPLE_RATE).astype(np.float32),
        "clip_0.3s": np.ascontiguousarray(short, dtype=np.float32),
        "clip_60s": np.ascontiguousarray(long, dtype=np.float32),
    }


class FrontendReference:
    """framegen's mel of each signal and, with an encoder, its 'ave' features (computed on first use, so that a
    front-end refused on its mel never pays for the encoder): what every artifact must reproduce."""

    def __init__(self, signals: dict[str, np.ndarray], encoder: Any = None) -> None:
        self.signals = signals
        self.encoder = encoder
        self.mel = {k: melspectrogram(x) for k, x in signals.items()}
        self._features: dict[str, np.ndarray] = {}

    def features(self, name: str) -> np.ndarray:
        """framegen's features of signal ``name`` (``ave_features`` of its mel with the PyTorch encoder)."""
        if self.encoder is None:
            raise ValueError("validating audio_features needs a reference made with the encoder")
        if name not in self._features:
            self._features[name] = ave_features(self.mel[name], torch_encoder_fn(self.encoder))
        return self._features[name]


def frontend_reference(signals: dict[str, np.ndarray], encoder: Any = None) -> FrontendReference:
    """framegen's numpy mel of every signal and, with ``encoder``, its 'ave' features (PyTorch encoder, lazily)."""
    return FrontendReference(signals, encoder)


# ---------------------------------------------------------------------------------------------------- runners

def open_runner(path: str | os.PathLike[str], fmt: str) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """``feeds -> outputs`` for a front-end artifact: a fresh ONNX Runtime CPU session, or the coreml-mil verifier."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return lambda feeds: dict(zip(names, session.run(names, feeds), strict=True))
    if fmt == "coreml":
        program = MilProgram(path)
        return program.run
    raise ExportError(f"unknown format {fmt!r}; expected {', '.join(FORMATS)}")


def run_frontend(runner: Callable[..., dict[str, np.ndarray]], pcm: np.ndarray) -> np.ndarray:
    """The mel ``[frames, 80]`` of one clip through an ``audio_frontend`` runner."""
    return np.asarray(runner({FRONTEND_INPUT: np.asarray(pcm, np.float32)[None]})[FRONTEND_OUTPUT])[0]


def run_features(runner: Callable[..., dict[str, np.ndarray]], pcm: np.ndarray) -> np.ndarray:
    """The features ``[rows, 512]`` of one clip through an ``audio_features`` runner."""
    return np.asarray(runner({FEATURES_INPUT: np.asarray(pcm, np.float32)})[FEATURES_OUTPUT])


# -------------------------------------------------------------------------------------------------- streaming

#: Samples per block of 5 encoder windows (16 mel frames, 0.2 s): chunks that start on this grid see the same
#: window starts as the whole clip, shifted by whole blocks.
BLOCK_SAMPLES = 16 * 200
#: Samples past a block's start that its last window needs (mel frames up to 12 + 15, each reaching 400 samples
#: past its centre): 200 * 27 + 400.
BLOCK_REACH = 5800


def stream_features(run: Callable[[np.ndarray], np.ndarray], pcm: np.ndarray, blocks_per_call: int = 5,
                    ) -> np.ndarray:
    """'ave' features of ``pcm`` computed the way a live port does, from overlapping ``audio_features`` calls
    (``run``: PCM ``[samples]`` -> rows ``[R, 512]``), equal to one call on the whole clip.

    Blocks b0 .. b0+B-1 (windows 5 b0 .. 5 (b0+B) - 1, video frames 5 b0 + 1 ..) come from one call on
    ``pcm[3200 (b0 - 1) : 3200 (b0 + B - 1) + 5800]`` (from 0 for b0 = 0): one block of history (the call's own
    first window sees the zero padding of its start) and 5800 samples past the last block's start; the wanted
    windows are rows 6 .. 5 + 5 B of its output (rows 1 .. 5 B for b0 = 0). When the audio ends, one call on
    ``pcm[3200 (b0 - 1):]`` gives the remaining windows up to SyncTalk_2D's count N of the whole clip; a window
    past that call's own count is its last row (both are the window shifted to end at the clip's end).
    """
    from framegen.models.audio_frontend import reference_window_count

    x = np.asarray(pcm, dtype=np.float32)
    total = reference_window_count(mel_frame_count(x.shape[0]))  # N: known once the stream has ended
    windows: list[np.ndarray] = []
    b0 = 0
    while True:
        start = 0 if b0 == 0 else BLOCK_SAMPLES * (b0 - 1)
        skip = 0 if b0 == 0 else 5  # local windows before the wanted ones
        end = BLOCK_SAMPLES * (b0 + blocks_per_call - 1) + BLOCK_REACH
        if end <= x.shape[0]:  # a live port makes this call as soon as the samples up to `end` have arrived
            rows = run(x[start:end])
            windows += list(rows[1 + skip: 1 + skip + 5 * blocks_per_call])
            b0 += blocks_per_call
            continue
        rows = run(x[start:])  # end of stream
        body = rows[1:-1]
        for k in range(5 * b0, total):
            windows.append(body[min(k - 5 * b0 + skip, body.shape[0] - 1)])
        break
    windows = windows[:total]
    return np.stack([windows[0], *windows, windows[-1]])


# ------------------------------------------------------------------------------------------------- validation

def _fail(label: str, message: str) -> ExportValidationError:
    return ExportValidationError(f"{label}: validation failed: {message}")


def compare(kind: str, got: np.ndarray, want: np.ndarray) -> dict[str, float]:
    """``{max_abs_err, mean_abs_err, max_rel_err, scale}``: errors of ``got`` against ``want``; ``max_rel_err`` is
    the max error over the reference's largest magnitude (features) or over 1 (mel: its scale is fixed)."""
    if got.shape != want.shape:
        raise ValueError(f"shape {list(got.shape)}, expected {list(want.shape)}")
    if not np.all(np.isfinite(got)):
        raise ValueError("output holds NaN or inf")
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    scale = 1.0 if kind == "audio_frontend" else max(float(np.abs(want).max()), 1e-12)
    return {"max_abs_err": float(err.max()), "mean_abs_err": float(err.mean()),
            "max_rel_err": float(err.max()) / scale, "scale": scale}


def limit_broken(kind: str, errs: dict[str, float]) -> str | None:
    """The first limit ``errs`` break, as one line; ``None`` when within them all."""
    if kind == "audio_frontend" and errs["max_abs_err"] > MEL_MAX_ABS:
        return f"mel differs from framegen's by {errs['max_abs_err']:.3g} (limit {MEL_MAX_ABS:g})"
    if kind == "audio_features" and errs["max_rel_err"] > FEATURES_MAX_REL:
        return (f"features differ from framegen's by {errs['max_abs_err']:.3g}, {errs['max_rel_err']:.3g} of their "
                f"largest value {errs['scale']:.3g} (limit {FEATURES_MAX_REL:g})")
    return None


def _check_onnx_structure(path: Path, kind: str, label: str) -> dict[str, str]:
    import onnx
    from framegen.exporters.audio_frontend import io_spec
    from onnx import TensorProto

    model = onnx.load(os.fspath(path), load_external_data=False)

    def sig(v: Any) -> tuple[str, int, list[Any]]:
        t = v.type.tensor_type
        return v.name, t.elem_type, [d.dim_param or d.dim_value for d in t.shape.dim]

    spec = io_spec(kind)
    got = ([sig(v) for v in model.graph.input], [sig(v) for v in model.graph.output])
    want = ([(t["name"], TensorProto.FLOAT, t["shape"]) for t in spec["inputs"]],
            [(t["name"], TensorProto.FLOAT, t["shape"]) for t in spec["outputs"]])
    if got != want:
        raise _fail(label, f"inputs/outputs (name, ONNX dtype, shape) {got}, expected {want}")
    return {e.key: e.value for e in model.metadata_props}


def _check_coreml_structure(path: Path, kind: str, label: str) -> dict[str, str]:
    from framegen.exporters.audio_frontend import io_spec

    try:
        spec = mlprogram_spec(path)
    except FramegenError as exc:
        raise _fail(label, str(exc).split(": ", 1)[1]) from None
    io = io_spec(kind)
    got = ([i.name for i in spec.description.input], [o.name for o in spec.description.output])
    want = ([t["name"] for t in io["inputs"]], [t["name"] for t in io["outputs"]])
    if got != want:
        raise _fail(label, f"tensors {got[0]} -> {got[1]}, expected {want[0]} -> {want[1]}")
    fp32 = 65568  # ArrayFeatureType.FLOAT32
    for f in (*spec.description.input, *spec.description.output):
        if f.type.multiArrayType.dataType != fp32:
            raise _fail(label, f"{f.name!r} is not float32")
    rank = len(io["inputs"][0]["shape"])
    ranges = spec.description.input[0].type.multiArrayType.shapeRange.sizeRanges
    if len(ranges) != rank or any(r.lowerBound == r.upperBound for r in ranges):
        raise _fail(label, f"input {want[0][0]!r} has no flexible {io['inputs'][0]['shape']} shape")
    return dict(spec.description.metadata.userDefined)


def validate_frontend_artifact(path: str | os.PathLike[str], fmt: str, kind: str, ref: FrontendReference,
                               metadata: dict[str, str] | None = None, label: str | None = None) -> dict[str, Any]:
    """Check a front-end artifact's names, dtypes, flexible shapes and ``metadata``, then run every signal of ``ref``
    through it (ONNX Runtime CPU or coreml-mil) against framegen's mel / features; raises
    :class:`ExportValidationError` naming ``label`` (default: the path) on the first departure, else returns the
    record for the manifest entry's ``validation``."""
    p = Path(path)
    name = label or os.fspath(p)
    if kind not in KINDS:
        raise ExportError(f"unknown front-end model {kind!r}; expected {', '.join(KINDS)}")
    if kind == "audio_features" and ref.encoder is None:
        raise ValueError("validating audio_features needs a reference made with the encoder")
    meta = _check_onnx_structure(p, kind, name) if fmt == "onnx" else _check_coreml_structure(p, kind, name)
    if metadata is not None:
        check_metadata(Path(name), meta, metadata)
    runtime = ("onnxruntime CPUExecutionProvider" if fmt == "onnx"
               else "coreml-mil verifier (op by op, program precision)")
    try:
        runner = open_runner(p, fmt)
    except FramegenError as exc:
        raise _fail(name, str(exc)) from None
    except Exception as exc:  # ONNX Runtime's load errors
        raise _fail(name, f"cannot be loaded ({first_line(exc, 200)})") from None
    per_signal: dict[str, dict[str, Any]] = {}
    for sig, pcm in ref.signals.items():
        want = ref.mel[sig] if kind == "audio_frontend" else ref.features(sig)
        try:
            got = run_frontend(runner, pcm) if kind == "audio_frontend" else run_features(runner, pcm)
            errs = compare(kind, got, want)
        except FramegenError as exc:
            raise _fail(name, f"{sig}: {exc}") from None
        except ValueError as exc:
            raise _fail(name, f"{sig} ({pcm.shape[0]} samples): {exc}") from None
        bad = limit_broken(kind, errs)
        if bad:
            raise _fail(name, f"{sig} ({pcm.shape[0]} samples): {bad}")
        per_signal[sig] = {"samples": int(pcm.shape[0]), "rows": int(want.shape[0]), **errs}
    if kind == "audio_frontend":
        # Two clips in one batch: each row must be its own clip's mel.
        a, b = ref.signals["white_noise"][:4800], ref.signals["clip_0.3s"]
        got = np.asarray(runner({FRONTEND_INPUT: np.stack([a, b])})[FRONTEND_OUTPUT])
        for i, (sig, x) in enumerate((("white_noise[:4800]", a), ("clip_0.3s", b))):
            errs = compare(kind, got[i], ref.mel["clip_0.3s"] if i else _mel(x))
            bad = limit_broken(kind, errs)
            if bad:
                raise _fail(name, f"batch of 2, row {i} ({sig}): {bad}")
    worst = {k: max(r[k] for r in per_signal.values()) for k in ("max_abs_err", "mean_abs_err", "max_rel_err")}
    limits = {"mel_max_abs": MEL_MAX_ABS} if kind == "audio_frontend" else {"features_max_rel": FEATURES_MAX_REL}
    result: dict[str, Any] = {"runtime": runtime,
                              "against": "framegen.toolkit.inputs.audio (numpy mel, PyTorch encoder)",
                              "limits": limits, "signals": per_signal}
    if fmt == "onnx":
        result.update(worst)
    else:
        result["numeric"] = {"runtime": runtime, **worst}
    result["passed"] = True
    return result


def _mel(x: np.ndarray) -> np.ndarray:
    return melspectrogram(x)


# ------------------------------------------------------------------------------------------------------ export

def frontend_metadata(kind: str, source_sha256: str | None) -> dict[str, str]:
    """The metadata a front-end artifact embeds: the artifact metadata of the encoder it chains ('ave' contract,
    source sha256 of the encoder checkpoint), ``model`` = ``kind``, and the front-end's own contract under
    ``audio_frontend``."""
    meta = artifact_metadata("audio_encoder", "ave", "fp32", source_sha256,
                             extra={METADATA_KEY: frontend_contract()})
    meta[KEY_MODEL] = kind
    return meta


def export_frontend_entries(formats: Sequence[str], encoder: Any, source_sha256: str | None, work: Path, dest: Path,
                            say: Callable[[str], None] | None = None, *, opset: int | None = None,
                            speech: str | os.PathLike[str] | None = None,
                            frontend: AudioFrontend | None = None) -> list[dict[str, Any]]:
    """For ``toolkit.export.export_bundle``: build and validate ``audio_frontend`` and ``audio_features`` in each of
    ``formats`` (onnx, coreml; others are skipped) inside the bundle's work directory ``work`` (``dest``: its final
    path, for messages); returns their manifest entries. ``encoder``: the loaded audio encoder module. ``speech``:
    the speech file for validation (default: the shared fixture when present, else synthetic speech). ``frontend``:
    a front-end module to export instead of :func:`frontend_module` (tests use it to prove a bad one is refused)."""
    from framegen.exporters import audio_frontend as fx

    say = say or (lambda _m: None)
    fe = frontend if frontend is not None else frontend_module()
    modules = {"audio_frontend": fe, "audio_features": AudioFeatures(fe, encoder.eval()).eval()}
    t0 = time.perf_counter()
    ref = frontend_reference(validation_signals(speech if speech is not None else default_speech_path()), encoder)
    say(f"audio front-end: framegen reference on {len(ref.signals)} signals in {time.perf_counter() - t0:.1f} s")
    entries = []
    traces = {k: fx.trace(m, k) for k, m in modules.items() if "coreml" in formats}
    for fmt in (f for f in formats if f in FORMATS):
        for kind in KINDS:
            name = f"{kind}.fp32{'.onnx' if fmt == 'onnx' else '.mlpackage'}"
            path = work / name
            meta = frontend_metadata(kind, source_sha256)
            t1 = time.perf_counter()
            if fmt == "onnx":
                fx.export_onnx(modules[kind], kind, path, meta, opset)
                extra: dict[str, Any] = {"opset": opset or _default_opset(), "exporter": "torchscript"}
            else:
                fx.export_coreml(modules[kind], kind, path, meta, traced=traces[kind])
                extra = {"minimum_deployment_target": _coreml_target(), "compute_precision": "fp32"}
            t2 = time.perf_counter()
            validation = validate_frontend_artifact(path, fmt, kind, ref, meta, label=f"{dest}/{name}")
            numeric = validation if fmt == "onnx" else validation["numeric"]
            say(f"{name}: built in {t2 - t1:.1f} s, validated on {len(ref.signals)} signals in "
                f"{time.perf_counter() - t2:.1f} s (max err {numeric['max_abs_err']:.2g}, "
                f"{numeric['max_rel_err']:.2g} relative)")
            io = fx.io_spec(kind)
            size = path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*")
                                                                    if f.is_file())
            entries.append({"model": kind, "format": fmt, "precision": "fp32", "io": "tensor", "path": name,
                            "sha256": sha256_path(path), "bytes": size, "inputs": io["inputs"],
                            "outputs": io["outputs"], **extra,
                            "validation": frontend_record(validation, kind).as_dict()})
    return entries


def _default_opset() -> int:
    return DEFAULT_OPSET


def _coreml_target() -> str:
    return MINIMUM_DEPLOYMENT_TARGET


# ------------------------------------------------------------------------------------------------------ parity


# ------------------------------------------------------------------------------------------------------ golden


def frontend_record(result: dict[str, Any], kind: str) -> ValidationRecord:
    """The manifest's record of an audio front-end artifact's validation (:func:`validate_frontend_artifact`'s
    result): its worst error over every signal against framegen's mel (absolute) or features (relative)."""
    numeric = result if "max_abs_err" in result else (result.get("numeric") or {})
    source = "fixed (toolkit/export/validate_frontend.py)"
    check = (Check("max_abs", numeric.get("max_abs_err"), MEL_MAX_ABS, "max", source) if kind == "audio_frontend"
             else Check("max_rel", numeric.get("max_rel_err"), FEATURES_MAX_REL, "max", source))
    lifted = {"runtime", "limits", "passed", "numeric", "max_abs_err", "mean_abs_err", "max_rel_err"}
    details = {k: v for k, v in result.items() if k not in lifted}
    details.update({k: numeric[k] for k in ("max_abs_err", "mean_abs_err", "max_rel_err") if k in numeric})
    return ValidationRecord("frontend", bool(result.get("passed", True)), result.get("runtime"), (check,), details)
