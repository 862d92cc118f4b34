"""Golden vectors for ports: every stage of the pipeline for a few frames, as raw little-endian files, and a check
that compares a port's outputs with them stage by stage and names the first stage that departs.

Layout of a golden directory ``G`` (and of a candidate ``C``, which may hold any subset of the stage files)::

    G/index.json            format, contract, stages (dtype, shape, meaning), tolerances per profile, cases
    G/README.md             how to read the cases and write a candidate
    G/case_000/<stage>.bin  raw C-order little-endian values, one file per stage (see STAGES)

Stage values come from the functions ``framegen render`` runs (:mod:`toolkit.preprocess`, :mod:`toolkit.features`,
:mod:`framegen.toolkit.inputs.audio`) and the bundle's fp32 generator (or the PyTorch reference when a checkpoint is
given).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from framegen.models.atomic import atomic_output
from framegen.models.bundle import BundleError, contained_path, load_bundle, sha256_path
from framegen.models.contract import CROP_SIZE, INNER_OFFSET, INNER_SIZE, LMS_POINTS, audio_shape, contract_dict
from framegen.models.errors import FramegenError
from framegen.runtimes.registry import open_backend
from framegen.runtimes.spec import OpenRequest
from framegen.toolkit.compare.profiles import FINAL_FRAME, MODEL_OUTPUT, StageLimits, golden_limits
from framegen.toolkit.inputs.encoders import onnx_encoder
from framegen.toolkit.inputs.features import audio_window, validate_features
from framegen.toolkit.parity.golden_readme import readme_text

FORMAT = "framegen-golden"
VERSION = 1
INDEX = "index.json"
README = "README.md"
GOLDEN_PROFILES = ("fp32", "fp16", "image-fp32", "image-fp16")


class GoldenError(FramegenError):
    """A golden directory or candidate that cannot be read or written as asked."""


@dataclass(frozen=True)
class StageSpec:
    """One stage a port implements: file stem, dtype, shape (``H``/``W``/``A`` filled per golden) and meaning."""

    name: str
    dtype: str
    shape: tuple[str | int, ...]
    meaning: str
    audio_only: bool = False


# Pipeline order: a check reports the first of these that departs.
STAGES: tuple[StageSpec, ...] = (
    StageSpec("frame", "uint8", ("H", "W", 3),
              "template frame k (see the case's template_index) as decoded: BGR, HWC; the pipeline's image input"),
    StageSpec("landmarks", "int32", (LMS_POINTS, 2),
              "the frame's .lms landmarks, each 'x y' parsed as float32 then cast to int32 (truncation)"),
    StageSpec("crop_box", "int32", (4,),
              "x0, y0, x1, y1 = lms[1].x, lms[52].y, lms[31].x, y0 + (x1 - x0); crop = frame[y0:y1, x0:x1]"),
    StageSpec("crop_328", "uint8", (CROP_SIZE, CROP_SIZE, 3),
              "the crop resized to 328x328 with cv2.INTER_CUBIC, BGR HWC"),
    StageSpec("reference_320", "uint8", (INNER_SIZE, INNER_SIZE, 3), "crop_328[4:324, 4:324], BGR HWC"),
    StageSpec("masked_320", "uint8", (INNER_SIZE, INNER_SIZE, 3),
              "reference_320 with rows 5..309, columns 5..314 set to 0 (cv2.rectangle (5, 5, 310, 305)), BGR HWC"),
    StageSpec("model_input", "float32", (6, INNER_SIZE, INNER_SIZE),
              "generator input 'image' without the batch axis: reference_320 then masked_320, CHW planes, "
              "float32(value) / 255"),
    StageSpec("mel_window", "float32", (1, 80, 16),
              "the encoder input for this frame's own feature row (see the case's mel_window_index): 80 mel bins "
              "(rows) x 16 mel frames", audio_only=True),
    StageSpec("embedding", "float32", (512,),
              "the audio encoder's output for mel_window: feature row i of the 'ave' features", audio_only=True),
    StageSpec("audio_window", "float32", ("A",),
              "generator input 'audio' without the batch axis: feature rows i-8 .. i+7 (zero rows outside the "
              "features, see the case's padding_rows) reshaped C-order to the mode's shape"),
    StageSpec(MODEL_OUTPUT, "float32", (3, INNER_SIZE, INNER_SIZE),
              "generator output 'output' without the batch axis: BGR CHW in [0, 1] (after the sigmoid)"),
    StageSpec("pred_320", "uint8", (INNER_SIZE, INNER_SIZE, 3),
              "model_output transposed to HWC, times 255 in float32, truncated to uint8 (not rounded)"),
    StageSpec("pasted_328", "uint8", (CROP_SIZE, CROP_SIZE, 3), "crop_328 with [4:324, 4:324] replaced by pred_320"),
    StageSpec(FINAL_FRAME, "uint8", ("H", "W", 3),
              "frame with frame[y0:y1, x0:x1] = pasted_328 resized to (x1-x0, y1-y0) with cv2.INTER_CUBIC; "
              "the pipeline's output. Compared inside the crop box; outside it must equal frame exactly"),
)
STAGE_NAMES = tuple(s.name for s in STAGES)

# Stages recomputed from the port's own inputs (see :func:`recompute`), so that a stage fails where the error is made
# and not where it shows; the others are compared with the golden values.
DERIVED_FROM: dict[str, tuple[str, ...]] = {
    "crop_box": ("landmarks",),
    "crop_328": ("frame", "crop_box"),
    "reference_320": ("crop_328",),
    "masked_320": ("reference_320",),
    "model_input": ("reference_320", "masked_320"),
    "pred_320": (MODEL_OUTPUT,),
    "pasted_328": ("crop_328", "pred_320"),
    FINAL_FRAME: ("frame", "crop_box", "pasted_328"),
}
INNER = slice(INNER_OFFSET, INNER_OFFSET + INNER_SIZE)


def _le(dtype: str) -> np.dtype:
    return np.dtype(dtype).newbyteorder("<")


def write_bin(path: Path, arr: np.ndarray, dtype: str) -> None:
    """Write ``arr`` as raw little-endian ``dtype`` values (C order), the golden stage file format."""
    path.write_bytes(np.ascontiguousarray(arr, dtype=_le(dtype)).tobytes())


def case_indices(total: int, cases: int) -> list[int]:
    """``cases`` output frames spread over ``0..total-1``, always the first (zero-padded audio at the start) and the
    last (zero-padded at the end)."""
    if total < 1:
        raise GoldenError("the features hold no frame")
    if cases < 1:
        raise GoldenError(f"--cases must be at least 1, got {cases}")
    picks = np.linspace(0, total - 1, min(cases, total)).round().astype(int)
    return sorted({int(v) for v in picks})


@dataclass
class AudioSource:
    """With ``--audio``: the encoder windows that made the features (row j comes from window clip(j-1, 0, W-1))."""

    windows: np.ndarray  # (W, 1, 80, 16)
    description: dict[str, Any] = field(default_factory=dict)

    def window_of_row(self, j: int) -> int:
        """The mel window behind feature row ``j`` (SyncTalk_2D repeats the first and last embedding once)."""
        return min(max(j - 1, 0), self.windows.shape[0] - 1)


def write_golden(bundle: str | os.PathLike[str], template: Any, features: np.ndarray,
                 out: str | os.PathLike[str], *, cases: int = 3, start_frame: int = 0,
                 checkpoint: str | os.PathLike[str] | None = None, audio: AudioSource | None = None,
                 source: dict[str, Any] | None = None, force: bool = False) -> Path:
    """Write golden vectors for ``cases`` frames to ``out`` (built in a temporary sibling, then renamed).

    ``template`` is a :class:`toolkit.preprocess.PreparedTemplate`, ``features`` the (N, F) rows of the bundle's
    mode. The model output comes from the bundle's fp32 ONNX generator on ``ort-cpu``, or from the PyTorch
    reference (``torch-cpu``) when ``checkpoint`` is given. ``audio`` adds the mel-window and embedding stages.
    """
    dest = Path(out)
    _check_destination(dest, force)
    b = load_bundle(bundle)
    feats = validate_features(features, b.mode, "features")
    if audio is not None and audio.windows.shape[0] + 2 != feats.shape[0]:
        raise GoldenError(f"{audio.windows.shape[0]} mel windows do not make {feats.shape[0]} feature rows")
    frames = case_indices(int(feats.shape[0]), cases)
    kinds = {frames[-1]: "last: zero rows past the features", frames[0]: "first: zero rows before the features"}
    if audio is not None:  # the quietest frame: a port's silence (the mel floor, -4) is a case of its own
        quiet = int(np.argmin([audio.windows[audio.window_of_row(i)].mean() for i in range(feats.shape[0])]))
        frames = sorted({*frames, quiet})
        label = "quietest mel window (silence when the audio has any)"
        kinds[quiet] = f"{kinds[quiet]}; {label}" if quiet in kinds else label
    backend, producer = _model_output_source(b, checkpoint)
    stages = _stage_entries(b.mode, template, audio is not None)
    index = _new_index(b, feats, producer, stages, audio is not None, source, start_frame)
    with atomic_output(dest, directory=True) as tmp, backend:
        for n, i in enumerate(frames):
            values, case = _case_values(template, backend, feats, b.mode, n, i, start_frame, audio)
            case["kind"] = kinds.get(i, "spread")
            case["files"] = _write_case(tmp / case["dir"], case["dir"], values, stages)
            index["cases"].append(case)
        (tmp / INDEX).write_text(json.dumps(index, indent=2) + "\n")
        (tmp / README).write_text(readme_text(index))
    return dest


@dataclass
class _Models:
    """The bundle's models a golden check runs on the candidate's own inputs: the generator, and the audio encoder
    when the golden was written from audio and the bundle holds one."""

    generator: Any
    encoder: Callable[[np.ndarray], np.ndarray] | None = None

    def close(self) -> None:
        """Release the generator's session."""
        self.generator.close()


def golden_model(bundle: str | os.PathLike[str], index: dict[str, Any], profile: str) -> _Models:
    """The bundle's tensor generator (and audio encoder) for ``profile`` on ONNX Runtime's CPU provider (fp16
    profiles: the fp16 artifacts)."""
    b = load_bundle(bundle)
    if b.mode != index.get("mode"):
        raise GoldenError(f"--bundle {bundle}: a {b.mode!r} bundle, the golden is {index.get('mode')!r}")
    precision = "fp16" if profile.endswith("fp16") else "fp32"
    encoder = None
    if index.get("input") == "audio" and b.has("audio_encoder", "onnx", precision):
        encoder = onnx_encoder(b.find("audio_encoder", "onnx", precision).path, threads=1)
    generator = open_backend("ort-cpu", OpenRequest(bundle=b, precision=precision, mode=b.mode,
                                                    options={"threads": 1}))
    return _Models(generator, encoder)


def _check_destination(dest: Path, force: bool) -> None:
    if dest.exists() and not force:
        raise GoldenError(f"{dest}: already exists (use --force to replace it)")
    if dest.exists() and not (dest / INDEX).is_file() and (not dest.is_dir() or any(dest.iterdir())):
        raise GoldenError(f"{dest}: exists and is not a golden directory; refusing to replace it")


def _model_output_source(b: Any, checkpoint: str | os.PathLike[str] | None) -> tuple[Any, dict[str, Any]]:
    """The backend that computes the golden model output, and how the index describes it."""
    if checkpoint is not None:
        backend = open_backend("torch-cpu", OpenRequest(checkpoint=checkpoint, mode=b.mode))
        return backend, {"backend": "torch-cpu", "precision": "fp32", "checkpoint": os.fspath(checkpoint)}
    art = b.find("generator", "onnx", "fp32")
    backend = open_backend("ort-cpu", OpenRequest(bundle=b, precision="fp32", mode=b.mode))
    return backend, {"backend": "ort-cpu", "precision": "fp32", "artifact": art.path.relative_to(b.root).as_posix(),
                     "sha256": sha256_path(art.path)}


def _stage_entries(mode: str, template: Any, audio: bool) -> list[dict[str, Any]]:
    """The index's stage list: every stage of :data:`STAGES` this golden holds, shapes filled in."""
    shapes = {"H": template.template.height, "W": template.template.width}
    stages = []
    for s in STAGES:
        if s.audio_only and not audio:
            continue
        shape = list(audio_shape(mode)) if s.shape == ("A",) else [shapes.get(d, d) for d in s.shape]
        stages.append({"name": s.name, "dtype": s.dtype, "shape": shape, "meaning": s.meaning,
                       "file": f"<case dir>/{s.name}.bin",
                       "checked_against": list(DERIVED_FROM.get(s.name, ("golden",)))})
    return stages


def _new_index(b: Any, feats: np.ndarray, producer: dict[str, Any], stages: list[dict[str, Any]], audio: bool,
               source: dict[str, Any] | None, start_frame: int) -> dict[str, Any]:
    names = {s["name"] for s in stages}
    return {
        "format": FORMAT, "version": VERSION, "byte_order": "little", "layout": "C order (row-major)",
        "mode": b.mode, "input": "audio" if audio else "features",
        "feature_frames": int(feats.shape[0]),
        "model_output_from": producer,
        "source": dict(source or {}, bundle=os.fspath(b.root), start_frame=start_frame),
        "stages": stages,
        "tolerances": {p: {k: v.as_dict() for k, v in golden_limits(p, audio).items() if k in names}
                       for p in GOLDEN_PROFILES},
        "contract": contract_dict(b.mode),
        "opencv": opencv_arithmetic(),
        "cases": [],
    }


def opencv_arithmetic() -> dict[str, Any]:
    """Which OpenCV made the golden's resizes and decoded its frames, and with which arithmetic: x86-64 wheels resize
    uint8 with Intel IPP (floating point), others in 11-bit fixed point (docs/CONTRACT.md §2.3)."""
    import cv2

    ipp = bool(cv2.ipp.useIPP())
    info = cv2.getBuildInformation()
    jpeg = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.strip().startswith("JPEG:")),
                "unknown")
    return {"version": cv2.__version__, "ipp": ipp,
            "cubic_uint8": "floating point (Intel IPP)" if ipp else "11-bit fixed point",
            "image_decoder": f"cv2.imdecode ({jpeg})"}


def _case_values(template: Any, backend: Any, feats: np.ndarray, mode: str, n: int, i: int, start_frame: int,
                 audio: AudioSource | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every stage's value for output frame ``i`` (case ``n``), and the case's index entry (without files)."""
    from framegen.models.pixels import model_input, pred_to_uint8
    from framegen.toolkit.inputs.preprocess import paste_back

    k = template.template_index(i, start_frame)
    prepared = template.prepared(k)
    frame = template.frame(k)
    crop = prepared.crop328
    inp = model_input(crop)
    # The uint8 planes back from the model input: exactly what the model saw (k / 255 round-trips).
    planes = np.rint(inp * np.float32(255.0)).astype(np.uint8).transpose(1, 2, 0)
    window = audio_window(feats, i, mode)
    pred = backend.infer(inp[None], window[None])[0]
    pred_u8 = pred_to_uint8(pred)
    pasted = np.array(crop, copy=True)
    pasted[INNER, INNER] = pred_u8
    values: dict[str, np.ndarray] = {
        "frame": frame, "landmarks": template.template.read_landmarks(k), "crop_box": np.asarray(prepared.box),
        "crop_328": crop, "reference_320": planes[..., :3], "masked_320": planes[..., 3:], "model_input": inp,
        "audio_window": window, MODEL_OUTPUT: pred, "pred_320": pred_u8, "pasted_328": pasted,
        FINAL_FRAME: paste_back(frame, prepared.box, crop, pred_u8),
    }
    rows = list(range(i - 8, i + 8))
    case: dict[str, Any] = {
        "case": n, "dir": f"case_{n:03d}", "frame": i, "template_index": k,
        "template_image": template.template.relative(template.template.frames[k].image),
        "crop_box": list(prepared.box), "audio_rows": rows,
        "padding_rows": [r for r in rows if not 0 <= r < feats.shape[0]],
    }
    if audio is not None:
        w = audio.window_of_row(i)
        values["mel_window"] = audio.windows[w]
        values["embedding"] = feats[i]
        case["mel_window_index"] = w
        case["row_mel_windows"] = [audio.window_of_row(r) if 0 <= r < feats.shape[0] else None for r in rows]
    return values, case


def _write_case(case_dir: Path, rel: str, values: dict[str, np.ndarray], stages: list[dict[str, Any]]
                ) -> dict[str, str]:
    """Write one case's stage files; returns stage -> relative file."""
    case_dir.mkdir()
    files = {}
    for st in stages:
        arr = values[st["name"]]
        if list(arr.shape) != st["shape"]:
            raise GoldenError(f"internal: stage {st['name']} has shape {list(arr.shape)}, expected {st['shape']}")
        write_bin(case_dir / f"{st['name']}.bin", arr, st["dtype"])
        files[st["name"]] = f"{rel}/{st['name']}.bin"
    return files


def load_index(golden: str | os.PathLike[str]) -> dict[str, Any]:
    """A golden directory's ``index.json`` (GoldenError naming the file when it is missing or not ours)."""
    path = Path(golden) / INDEX
    if not path.is_file():
        raise GoldenError(f"{golden}: not a golden directory (no {INDEX}); create one with `framegen golden write`")
    try:
        index = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GoldenError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise GoldenError(f"{path}: not a framegen golden index (format {FORMAT!r})")
    if index.get("version") != VERSION:
        raise GoldenError(f"{path}: golden format version {index.get('version')}, this framegen reads {VERSION}")
    _check_index(index, path)
    return index


_DTYPES = ("uint8", "int32", "float32")
_MAX_ELEMENTS = 1 << 28  # 256 M values: far above an 8K frame; a larger shape is a broken index, not a stage


def _check_index(index: dict[str, Any], path: Path) -> None:
    """The shape of everything :func:`check_golden` reads from ``index.json``: stages, cases, file names (which
    must stay inside the golden and candidate folders) and tolerances; one GoldenError line otherwise."""
    stages = index.get("stages")
    if not isinstance(stages, list) or not stages:
        raise GoldenError(f"{path}: 'stages' must be a non-empty list")
    names = set()
    for k, st in enumerate(stages):
        shape = st.get("shape") if isinstance(st, dict) else None
        if (not isinstance(st, dict) or st.get("name") not in STAGE_NAMES or st.get("dtype") not in _DTYPES
                or not isinstance(shape, list) or not shape
                or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
                or math.prod(shape) > _MAX_ELEMENTS):
            raise GoldenError(f"{path}: stages[{k}] is not a stage (name, dtype {'/'.join(_DTYPES)}, positive shape)")
        names.add(st["name"])
    cases = index.get("cases")
    if not isinstance(cases, list):
        raise GoldenError(f"{path}: 'cases' must be a list")
    for k, case in enumerate(cases):
        files = case.get("files") if isinstance(case, dict) else None
        box = case.get("crop_box") if isinstance(case, dict) else None
        if (not isinstance(files, dict) or not isinstance(box, list) or len(box) != 4
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in box)):
            raise GoldenError(f"{path}: cases[{k}] needs 'files' (stage -> file) and a 4-integer 'crop_box'")
        for stage, rel in files.items():
            if stage not in names or not isinstance(rel, str) or not rel:
                raise GoldenError(f"{path}: cases[{k}].files[{stage!r}] is not a file of a listed stage")
            contained(path.parent, rel, f"{path}: cases[{k}].files[{stage!r}]")
    tolerances = index.get("tolerances")
    if not isinstance(tolerances, dict):
        raise GoldenError(f"{path}: 'tolerances' must be an object")
    known = {f.name for f in fields(StageLimits)}
    for profile, stages_limits in tolerances.items():
        if not isinstance(stages_limits, dict):
            raise GoldenError(f"{path}: tolerances[{profile!r}] must be an object")
        for stage in names:
            limits = stages_limits.get(stage)
            if (not isinstance(limits, dict) or not set(limits) <= known
                    or not all(v is None or (isinstance(v, int | float) and not isinstance(v, bool))
                               for v in limits.values())):
                raise GoldenError(f"{path}: tolerances[{profile!r}][{stage!r}] is not a set of numeric limits")


def contained(root: Path, rel: str, where: str) -> Path:
    """``root / rel`` inside ``root`` after symlinks, else one GoldenError line (index files come from outside)."""
    try:
        return contained_path(root, rel, where)
    except BundleError as exc:
        raise GoldenError(str(exc)) from None


def read_stage(path: str | os.PathLike[str], dtype: str, shape: list[int]) -> np.ndarray:
    """One stage file as an array (GoldenError when its size does not fit ``dtype`` x ``shape``)."""
    p = Path(path)
    want = int(np.prod(shape)) * np.dtype(dtype).itemsize
    size = p.stat().st_size
    if size != want:
        raise GoldenError(f"{p}: {size} bytes, expected {want} ({dtype} {'x'.join(map(str, shape))})")
    return np.fromfile(p, dtype=_le(dtype)).reshape(shape)


# ------------------------------------------------------------------------------------------------- checking


# ------------------------------------------------------------------------------------------------- README


