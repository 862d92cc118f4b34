"""Compressed generator artifacts: calibration inputs, the quality gate, their parity profiles, and their bench.

``framegen export --precision ...,int8`` (and ``pal6`` / ``pal4``) builds, per format:

- ONNX ``int8``: static QDQ int8 (:func:`framegen.exporters.quantize.quantize_onnx`), activation ranges calibrated on
  real inputs: crops of a template (``--template``, or a synthetic one) with audio windows (``--features``, or seeded
  windows with the spread of real 'ave' features). The activation format is chosen for the runtime it is meant for
  (``--int8-target openvino|ort``) and recorded in the manifest and the model's metadata.
- Core ML ``int8`` (8-bit linear weights), ``pal6`` / ``pal4`` (6- / 4-bit palettized weights): fp16 compute, weights
  compressed by ``coremltools.optimize`` (:func:`framegen.exporters.quantize.compress_coreml`).

Every compressed artifact then passes the quality gate (:func:`judge`) or the export is refused: on held-out
template frames (not the calibration ones) the artifact, on the runtime it is for (OpenVINO or ONNX Runtime for
ONNX, the coreml-mil verifier for Core ML), renders final frames that are compared with PyTorch fp32's inside the
crop box under the artifact's named profile (``int8``, ``pal6``, ``pal4``; floors in
:mod:`framegen.toolkit.compare.floors`): a floor on PSNR and a ceiling on the largest level error, which the user can
move (``--min-psnr``, ``--max-level-error``). ``framegen parity`` judges the same artifacts under the same profiles.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from framegen.exporters import coreml_export, onnx_export, quantize
from framegen.exporters.errors import ExportValidationError
from framegen.exporters.quantize import DEFAULT_INT8_CALIBRATION, INT8_CALIBRATIONS, INT8_TARGETS
from framegen.exporters.registry import get_exporter
from framegen.models.bundle import load_bundle, sha256_path
from framegen.models.contract import GEN_AUDIO, GEN_IMAGE
from framegen.models.errors import FramegenError
from framegen.models.metadata import artifact_metadata
from framegen.models.validation import Check, ValidationRecord
from framegen.runtimes.native import cpu_units
from framegen.runtimes.registry import availability, get_spec, open_backend, render_options
from framegen.runtimes.spec import OpenRequest
from framegen.toolkit.bench.core import measure, measure_e2e
from framegen.toolkit.bench.machine import describe_machine
from framegen.toolkit.compare.floors import COMPRESSED, COMPUTED
from framegen.toolkit.compare.floors import DEFAULT_FLOORS as _FLOORS
from framegen.toolkit.compare.metrics import ErrorStats
from framegen.toolkit.compare.profiles import FINAL_FRAME, Profile, StageLimits, profile_for
from framegen.toolkit.inputs.features import audio_windows, feature_width, load_features
from framegen.toolkit.inputs.template import open_template

CALIBRATION_FRAMES = 8
GATE_FRAMES = 4
_SYNTH_FRAMES = CALIBRATION_FRAMES + GATE_FRAMES


class CompressError(FramegenError):
    """Compression options that do not fit (unknown precision for a format, bad floor, bad calibration input)."""


# ------------------------------------------------------------------------------------------------- profiles

@dataclass(frozen=True)
class QualityFloor:
    """The least quality a compressed artifact must keep on the final frame (inside the crop box, uint8 levels)."""

    min_psnr_db: float
    max_level_error: float

    def limits(self) -> StageLimits:
        """As final-frame stage limits."""
        return StageLimits(max_abs=self.max_level_error, min_psnr_db=self.min_psnr_db)

    def as_dict(self) -> dict[str, float]:
        """JSON-able form."""
        return {"min_psnr_db": self.min_psnr_db, "max_level_error": self.max_level_error}


DEFAULT_FLOORS: dict[str, QualityFloor] = {p: QualityFloor(min_psnr_db=v[0], max_level_error=v[1])
                                          for p, v in _FLOORS.items()}


def compressed_profile(precision: str, floor: QualityFloor | None = None) -> Profile:
    """The named parity profile of a compressed precision (:func:`framegen.toolkit.compare.profiles.profile_for`'s),
    with
    ``floor`` in place of its default final-frame floor when given."""
    if precision not in COMPRESSED and precision not in COMPUTED:
        raise CompressError(f"no compressed precision {precision!r}; known: {', '.join([*COMPRESSED, *COMPUTED])}")
    base = profile_for(precision)
    if floor is None:
        return base
    return Profile(base.name, base.description, {**base.stages, FINAL_FRAME: floor.limits()})


def floor_for(precision: str, min_psnr_db: float | None = None, max_level_error: float | None = None
              ) -> QualityFloor:
    """The default floor of ``precision`` with the user's overrides applied (checked)."""
    fl = DEFAULT_FLOORS[precision]
    if min_psnr_db is not None:
        if not 0 < float(min_psnr_db) < 200:
            raise CompressError(f"--min-psnr {min_psnr_db}: expected dB between 0 and 200")
        fl = replace(fl, min_psnr_db=float(min_psnr_db))
    if max_level_error is not None:
        if not 0 <= float(max_level_error) <= 255:
            raise CompressError(f"--max-level-error {max_level_error}: expected 0..255 levels")
        fl = replace(fl, max_level_error=float(max_level_error))
    return fl


# ------------------------------------------------------------------------------------------------- options

@dataclass(frozen=True)
class Refused:
    """A compressed artifact its quality floor kept out of a bundle (``CompressOptions(skip_refused=True)``)."""

    format: str
    precision: str
    reason: str  #: one line: the artifact, the floor and how far below it the artifact fell
    validation: ValidationRecord

    def as_dict(self) -> dict[str, Any]:
        """The manifest's ``refused[]`` entry."""
        return {"model": "generator", "format": self.format, "precision": self.precision, "reason": self.reason,
                "validation": self.validation.as_dict()}


@dataclass
class CompressOptions:
    """How compressed artifacts are calibrated and judged (``export_bundle(..., compression=...)``).

    ``template``: a template directory whose crops calibrate and judge (default: a synthetic 1280x720 one);
    ``features``: a features file of the generator's mode for the audio windows (default: seeded windows with the
    spread of real 'ave' features); ``int8_target``: the runtime the int8 ONNX artifact is quantized for;
    ``int8_calibration``: how its activation ranges are set (``percentile`` or ``minmax``);
    ``min_psnr_db`` / ``max_level_error``: override every compressed precision's floor; ``skip_refused``: an
    artifact below its floor is left out of the bundle and recorded in :attr:`refused` (and the manifest's
    ``refused``) instead of failing the whole export.
    """

    template: str | os.PathLike[str] | None = None
    features: str | os.PathLike[str] | None = None
    int8_target: str = "openvino"
    int8_calibration: str = DEFAULT_INT8_CALIBRATION
    min_psnr_db: float | None = None
    max_level_error: float | None = None
    calibration_frames: int = CALIBRATION_FRAMES
    gate_frames: int = GATE_FRAMES
    skip_refused: bool = False
    #: With ``skip_refused``: one :class:`Refused` per artifact the floor kept out of the bundle, in export order.
    refused: list[Refused] = field(default_factory=list)
    _data: dict[str, Any] = field(default_factory=dict, repr=False)

    def check(self) -> None:
        """Refuse bad options before anything is built."""
        if self.int8_target not in INT8_TARGETS:
            raise CompressError(f"--int8-target {self.int8_target!r}: expected {', '.join(INT8_TARGETS)}")
        if self.int8_calibration not in INT8_CALIBRATIONS:
            raise CompressError(f"--int8-calibration {self.int8_calibration!r}: expected "
                                f"{', '.join(INT8_CALIBRATIONS)}")
        if self.calibration_frames < 1 or self.gate_frames < 1:
            raise CompressError("calibration and gate frames must be at least 1")
        for p in COMPRESSED:
            floor_for(p, self.min_psnr_db, self.max_level_error)
        if self.template is not None and not Path(self.template).is_dir():
            raise CompressError(f"{self.template}: no such template directory")
        if self.features is not None and not Path(self.features).is_file():
            raise CompressError(f"{self.features}: no such features file")

    def floor(self, precision: str) -> QualityFloor:
        """The floor ``precision`` is judged by."""
        return floor_for(precision, self.min_psnr_db, self.max_level_error)

    def has_gate_data(self) -> bool:
        """Whether :func:`gate_data` has already been built for these options (and is theirs to :func:`release`)."""
        return "gate" in self._data


@dataclass
class GateData:
    """Calibration feeds and the held-out frames the gate renders, with PyTorch fp32's output for them."""

    template: Any  # PreparedTemplate
    calibration: list[dict[str, np.ndarray]]
    frames: list[Any]  # PreparedFrame per held-out frame
    image: np.ndarray
    audio: np.ndarray
    reference: np.ndarray
    source: dict[str, Any]
    tmp: Path | None = None


def _spread(n: int, count: int, offset: int = 0) -> list[int]:
    """``count`` indices spread over ``0..n-1`` (repeating when ``n < count``)."""
    return [(offset + (i * n) // count) % n for i in range(count)] if n >= count else \
        [(offset + i) % n for i in range(count)]


def gate_data(module: Any, mode: str, options: CompressOptions) -> GateData:
    """Build (once per export) the calibration feeds and the gate's held-out frames from ``options``.

    Calibration and gate frames are disjoint template frames where the template has enough; audio windows come
    from disjoint feature rows.
    """
    import torch
    from framegen.toolkit.inputs.preprocess import PreparedTemplate

    if "gate" in options._data:
        return options._data["gate"]
    tmp = None
    if options.template is None:
        from framegen.toolkit.inputs.synth import synth_template

        tmp = Path(tempfile.mkdtemp(prefix="framegen-calib-"))
        root = synth_template(tmp / "synth", frames=_SYNTH_FRAMES, width=1280, height=720)
        source: dict[str, Any] = {"template": f"synthetic ({_SYNTH_FRAMES} frames, toolkit.synth)"}
    else:
        root = Path(options.template)
        source = {"template": os.fspath(root)}
    prepared = PreparedTemplate(open_template(root), skip_bad_boxes=True)
    usable = prepared.usable_indices
    n_cal, n_gate = options.calibration_frames, options.gate_frames
    total = n_cal + n_gate
    gate_pos = sorted(set(_spread(total, n_gate, offset=1)))
    cal_pos = [k for k in range(total) if k not in gate_pos]
    picks = [usable[i] for i in _spread(len(usable), total)]
    if len(usable) < total:
        source["note"] = f"template has {len(usable)} usable frames: calibration and gate frames overlap"
    cal_idx, gate_idx = [picks[k] for k in cal_pos], [picks[k] for k in gate_pos]
    if options.features is not None:
        feats = load_features(options.features, mode)
        windows = audio_windows(feats, _spread(int(feats.shape[0]), total), mode)
        source["features"] = os.fspath(options.features)
    else:
        from framegen.models.init import audio_like_batch

        windows = audio_like_batch(mode, total, torch.Generator().manual_seed(18)).numpy()
        source["features"] = "seeded windows with the spread of real 'ave' features (models.init.audio_like_batch)"
    cal_audio, gate_audio = windows[cal_pos], windows[gate_pos]
    calibration = []
    for i, audio in zip(cal_idx, cal_audio, strict=True):
        calibration.append({GEN_IMAGE: prepared.prepared(i).image_input()[None],
                            GEN_AUDIO: np.ascontiguousarray(audio[None], dtype=np.float32)})
    frames = [prepared.prepared(i) for i in gate_idx]
    image = np.stack([f.image_input() for f in frames])
    audio = np.ascontiguousarray(gate_audio, dtype=np.float32)
    with torch.no_grad():
        reference = module.eval()(torch.from_numpy(image), torch.from_numpy(audio)).numpy()
    source.update(calibration_frames=cal_idx, gate_frames=gate_idx)
    data = GateData(prepared, calibration, frames, image, audio, reference, source, tmp)
    options._data["gate"] = data
    return data


def release(options: CompressOptions) -> None:
    """Remove what :func:`gate_data` made on disk (the synthetic template)."""
    data = options._data.pop("gate", None)
    if data is not None and data.tmp is not None:
        shutil.rmtree(data.tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------------- the gate

def gate_backend(fmt: str, precision: str, int8_target: str | None) -> str:
    """The backend the gate runs an artifact on: the runtime it is for (ONNX int8 quantized for OpenVINO on
    ``openvino`` when it is available here, else ``ort-cpu``), Core ML through the ``coreml-mil`` verifier."""
    if fmt == "coreml":
        return "coreml-mil"
    if int8_target == "openvino" and availability(get_spec("openvino")).available:
        return "openvino"
    return "ort-cpu"


def _final_frame_stats(data: GateData, pred: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    from framegen.models.pixels import pred_to_uint8
    from framegen.toolkit.inputs.preprocess import paste_back

    out_stats, frame_stats = ErrorStats("float"), ErrorStats("uint8")
    out_stats.update(data.reference, pred.astype(np.float32), list(range(len(pred))))
    for k, f in enumerate(data.frames):
        full = data.template.frame(f.index)
        ref = paste_back(full, f.box, f.crop328, pred_to_uint8(data.reference[k]))
        cand = paste_back(full, f.box, f.crop328, pred_to_uint8(pred[k]))
        x0, y0, x1, y1 = f.box
        frame_stats.update(ref[None, y0:y1, x0:x1], cand[None, y0:y1, x0:x1], [k], offset=(y0, x0, 0))
    return out_stats.summary(), frame_stats.summary()


def judge(path: str | os.PathLike[str], fmt: str, precision: str, data: GateData, floor: QualityFloor, *,
          backend: str, mode: str, label: str | None = None, options: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    """Run a compressed artifact on ``backend`` over the gate's held-out frames and judge its final frames under
    ``precision``'s profile with ``floor``; returns the verdict (``passed``, figures, and the shortfall per limit).
    ``options``: the backend's open options (for example OpenVINO's ``inference_precision``). Raises
    ``ExportValidationError`` only when the artifact cannot run at all."""
    p = label or os.fspath(path)
    t0 = time.perf_counter()
    try:
        # bf16 is the fp32 artifact computed in bfloat16: the precision asks the backend for that compute
        request = OpenRequest(artifact=path, mode=mode, precision="bf16" if precision in COMPUTED else "fp32",
                              options=dict(options or {}))
        with open_backend(backend, request) as be:
            pred = be.infer(data.image, data.audio)
            info = {"backend": be.name, "device": be.info.device}
    except FramegenError as exc:
        raise ExportValidationError(f"{p}: validation failed: {backend} cannot run it ({exc})") from None
    output, final = _final_frame_stats(data, pred)
    prof = compressed_profile(precision, floor)
    failures = prof.limits(FINAL_FRAME).check(final)
    if output.get("nonfinite"):
        failures.append(f"model output holds {output['nonfinite']} non-finite value(s)")
    shortfall = {}
    if final["psnr_db"] < floor.min_psnr_db:
        shortfall["psnr_db"] = round(floor.min_psnr_db - float(final["psnr_db"]), 2)
    if final["max_abs"] > floor.max_level_error:
        shortfall["max_level_error"] = float(final["max_abs"]) - floor.max_level_error
    return {"profile": prof.name, "floor": floor.as_dict(), **info, "frames": len(pred),
            "seconds": round(time.perf_counter() - t0, 2), "passed": not failures, "failures": failures,
            "shortfall": shortfall,
            "final_frame": {k: final[k] for k in ("max_abs", "mean_abs", "p99_abs", "psnr_db", "share_diff_gt1")},
            "model_output": {k: output[k] for k in ("max_abs", "mean_abs", "psnr_db")},
            "max_abs_err": float(output["max_abs"]), "mean_abs_err": float(output["mean_abs"])}


def refusal(name: str, verdict: dict[str, Any], advice: bool = True) -> str:
    """The one-line reason an artifact is refused, with how far below the floor it is (``advice``: and how to lower
    the floor or drop the precision, for an export that failed on it)."""
    fl, ff, short = verdict["floor"], verdict["final_frame"], verdict["shortfall"]
    parts = []
    if "psnr_db" in short:
        parts.append(f"final-frame PSNR {ff['psnr_db']:.1f} dB is {short['psnr_db']:.1f} dB below the floor "
                     f"{fl['min_psnr_db']:g} dB")
    if "max_level_error" in short:
        parts.append(f"max level error {ff['max_abs']:.0f} exceeds the limit {fl['max_level_error']:g} by "
                     f"{short['max_level_error']:.0f}")
    parts += [f for f in verdict["failures"] if "non-finite" in f]
    line = (f"{name}: below the {verdict['profile']} quality floor on {verdict['backend']} "
            f"({'; '.join(parts) or '; '.join(verdict['failures'])})")
    return line + (f"; lower it with --min-psnr / --max-level-error or drop {verdict['profile']}" if advice else "")


# ------------------------------------------------------------------------------------------------- export hook

def split_precisions(precisions: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(plain, compressed)`` precisions, in the order given (compute precisions such as bf16 are in neither: they
    judge the fp32 artifact, :func:`judge_compute`)."""
    return ([p for p in precisions if p not in COMPRESSED and p not in COMPUTED],
            [p for p in precisions if p in COMPRESSED])


def check_computable(precision: str) -> Any:
    """The CPU units that compute ``precision`` here (``bf16``), or ``CompressError`` in one line saying why it
    cannot be judged on this machine (no such units, no OpenVINO): a verdict from emulation would be a guess."""
    units = cpu_units(precision)
    if not units.native:
        raise CompressError(f"--precision {precision}: cannot be judged here ({units.reason})")
    avail = get_spec("openvino").probe()
    if not avail.available:
        raise CompressError(f"--precision {precision}: judged on OpenVINO, which is not available ({avail.reason})")
    return units


def judge_compute(precision: str, fp32_path: Path, module: Any, mode: str, label: str, say: Callable[[str], None],
                  options: CompressOptions | None) -> dict[str, Any]:
    """Judge the fp32 ONNX generator computed in ``precision`` (``bf16``: OpenVINO's bf16 hint) by that precision's
    quality floor on the gate's held-out frames, as a compressed artifact is judged; returns the manifest record
    (``artifacts[k].compute[precision]``). Raises ``ExportValidationError`` below the floor, and ``CompressError``
    where this machine cannot compute it (no OpenVINO, no bf16 units: the verdict would be a guess)."""
    opts = options or CompressOptions()
    opts.check()
    units = check_computable(precision)
    verdict = judge(fp32_path, "onnx", precision, gate_data(module, mode, opts), opts.floor(precision),
                    backend="openvino", mode=mode, label=f"{label} ({precision} compute)")
    ff = verdict["final_frame"]
    say(f"{fp32_path.name} computed in {precision}: judged on openvino in {verdict['seconds']:.1f} s (final frame "
        f"PSNR {ff['psnr_db']:.1f} dB, max {ff['max_abs']:.0f} levels; floor {verdict['floor']['min_psnr_db']:g} dB "
        f"/ {verdict['floor']['max_level_error']:g}; {units.reason})")
    if not verdict["passed"]:
        raise ExportValidationError(refusal(f"{label} ({precision} compute)", verdict))
    return floor_record(verdict).as_dict()


def _onnx_io_ok(path: Path, ref: Any, label: str) -> None:
    """Names, float32 dtypes and a dynamic batch of a quantized ONNX model (its numbers are the gate's)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    ins, outs = sess.get_inputs(), sess.get_outputs()
    if [i.name for i in ins] != ref.input_names or [o.name for o in outs] != [ref.output_name]:
        raise ExportValidationError(f"{label}: validation failed: tensors {[i.name for i in ins]} -> "
                                    f"{[o.name for o in outs]}, expected {ref.input_names} -> {[ref.output_name]}")
    for meta in (*ins, *outs):
        if meta.type != "tensor(float)" or isinstance(meta.shape[0], int):
            raise ExportValidationError(f"{label}: validation failed: {meta.name!r} is {meta.type} {meta.shape}, "
                                        f"expected float32 with a dynamic batch")
    got = sess.run([ref.output_name], {n: a[:3] for n, a in zip(ref.input_names, ref.inputs, strict=True)})[0]
    if got.shape != ref.output[:3].shape:
        raise ExportValidationError(f"{label}: validation failed: batch 3 gives shape {list(got.shape)}")


def _build_int8_onnx(base: Any, data: Any, opts: CompressOptions, mode: str, prec: str, sha: str, path: Path,
                     ref: Any, label: str) -> tuple[dict[str, Any], int]:
    """Quantize the fp32 ONNX proto, save it with its metadata, check its I/O; returns its manifest fields and the
    fp32 model's size."""
    proto, record = quantize.quantize_onnx(base, data.calibration, opts.int8_target, method=opts.int8_calibration)
    record["calibration_source"] = data.source
    meta = artifact_metadata("generator", mode, prec, sha, extra={"quantization": {
        k: record[k] for k in ("format", "target", "activations", "weights", "reduce_range")}})
    onnx_export.set_metadata(proto, meta)
    onnx_export.save_onnx(proto, path)
    _onnx_io_ok(path, ref, label)
    return {"opset": opset_of(proto), "quantization": record}, len(base.SerializeToString())


def _build_compressed_coreml(fp16_pkg: Path, path: Path, mode: str, prec: str, sha: str) -> dict[str, Any]:
    """Compress the fp16 ML program's weights (int8 / palettes); returns its manifest fields."""
    meta = artifact_metadata("generator", mode, prec, sha, extra={"compute_precision": "fp16"})
    _, record = quantize.compress_coreml(fp16_pkg, path, prec, meta)
    return {"minimum_deployment_target": coreml_export.MINIMUM_DEPLOYMENT_TARGET, "compute_precision": "fp16",
            "batch_range": [1, coreml_export.MAX_BATCH], "compression": record}


def export_compressed(fmt: str, kind: str, module: Any, mode: str, precisions: Sequence[str], base: Any, ref: Any,
                      sha: str, work: Path, dest: Path, say: Callable[[str], None], options: CompressOptions | None
                      ) -> list[dict[str, Any]]:
    """Build, gate and describe the compressed generator artifacts of one format (``toolkit.export`` calls this
    with the format's traced ``base``: the fp32 ONNX proto, or the exported program for Core ML). Returns manifest
    entries; raises ``ExportValidationError`` when one is below its floor."""
    if kind != "generator":
        say(f"{kind}: {', '.join(precisions)} apply to the generator only; {kind} exported at fp32 / fp16 as asked")
        return []
    opts = options or CompressOptions()
    opts.check()
    wanted = [p for p in precisions if fmt in COMPRESSED[p]]
    for p in precisions:
        if fmt not in COMPRESSED[p]:
            say(f"generator: no {p} {fmt} artifact ({p} exists for {', '.join(COMPRESSED[p])} only)")
    if not wanted:
        return []
    data = gate_data(module, mode, opts)
    ins = [{"name": n, "shape": ["batch", *s], "dtype": "float32"}
           for n, s in zip(ref.input_names, ref.input_shapes, strict=True)]
    outs = [{"name": ref.output_name, "shape": ["batch", *ref.output_shape], "dtype": "float32"}]
    entries = []
    fp32_bytes = None
    fp16_pkg: Path | None = None
    try:
        for prec in wanted:
            t1 = time.perf_counter()
            name = f"generator.{prec}{get_exporter(fmt).suffix}"
            path = work / name
            label = f"{dest}/{name}"
            if fmt == "onnx":
                extra, fp32_bytes = _build_int8_onnx(base, data, opts, mode, prec, sha, path, ref, label)
                target = opts.int8_target
            else:
                if fp16_pkg is None:
                    fp16_pkg = work / ".compress-source.fp16.mlpackage"
                    coreml_export.convert(base, "generator", mode, fp16_pkg, "fp16",
                                          artifact_metadata("generator", mode, "fp16", sha))
                extra = _build_compressed_coreml(fp16_pkg, path, mode, prec, sha)
                target = None
            built = time.perf_counter() - t1
            backend = gate_backend(fmt, prec, target)
            verdict = judge(path, fmt, prec, data, opts.floor(prec), backend=backend, mode=mode, label=label)
            ff = verdict["final_frame"]
            say(f"{name}: built in {built:.1f} s, judged on {backend} in {verdict['seconds']:.1f} s "
                f"(final frame PSNR {ff['psnr_db']:.1f} dB, max {ff['max_abs']:.0f} levels; floor "
                f"{verdict['floor']['min_psnr_db']:g} dB / {verdict['floor']['max_level_error']:g})")
            if not verdict["passed"]:
                if not opts.skip_refused:
                    raise ExportValidationError(refusal(label, verdict))
                reason = refusal(name, verdict, advice=False)
                opts.refused.append(Refused(fmt, prec, reason, floor_record(verdict)))
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
                say(f"left out of the bundle: {reason}")
                continue
            size = path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*")
                                                                  if f.is_file())
            if fmt == "onnx" and fp32_bytes:
                verdict["size_vs_fp32"] = round(size / fp32_bytes, 4)
            entries.append({"model": "generator", "format": fmt, "precision": prec, "io": "tensor", "path": name,
                            "sha256": sha256_path(path), "bytes": size, "inputs": ins, "outputs": outs, **extra,
                            "validation": floor_record(verdict).as_dict()})
    finally:
        if fp16_pkg is not None:
            shutil.rmtree(fp16_pkg, ignore_errors=True)
    return entries


def opset_of(proto: Any) -> int:
    """The default-domain opset of an ONNX model."""
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


# ------------------------------------------------------------------------------------------------- bench

def bench_compressed(bundle: str | os.PathLike[str], *, backends: Sequence[str] = ("ort-cpu", "openvino"),
                     precisions: Sequence[str] = ("fp32", "int8"), template: str | os.PathLike[str] | None = None,
                     features: str | os.PathLike[str] | None = None, e2e_frames: int = 48,
                     seconds: float = 6.0, rounds: int = 2) -> dict[str, Any]:
    """Size on disk, model-only fps (batch 1) and end-to-end render fps for every backend x ONNX precision of
    ``bundle``, all in one run; model-only timings are interleaved over ``rounds`` rounds (the median kept) so that
    load from other work falls on every row alike. Ratios are against the first backend's fp32."""
    b = load_bundle(bundle)
    tmp = None
    if template is None:
        from framegen.toolkit.inputs.synth import synth_template

        tmp = Path(tempfile.mkdtemp(prefix="framegen-cbench-"))
        template = synth_template(tmp / "synth", frames=24, width=1280, height=720)
    try:
        if features is not None:
            feats = load_features(features, b.mode)
        else:
            rng = np.random.default_rng(5)  # non-negative rows with the spread of real 'ave' features
            feats = (np.abs(rng.standard_normal((e2e_frames, feature_width(b.mode)))) * 0.5).astype(np.float32)
        rows: list[dict[str, Any]] = []
        notes: list[str] = []
        cells = []
        for name in backends:
            avail = availability(get_spec(name))
            if not avail.available:
                notes.append(f"{name}: not available here ({avail.reason})")
                continue
            for prec in precisions:
                if not b.has("generator", "onnx", prec):
                    notes.append(f"{name}/{prec}: the bundle has no ONNX {prec} generator")
                    continue
                cells.append((name, prec, b.find("generator", "onnx", prec).path))
        samples: dict[tuple[str, str], list[dict[str, Any]]] = {(n, p): [] for n, p, _ in cells}
        for _ in range(max(1, rounds)):
            for name, prec, path in cells:
                with open_backend(name, OpenRequest(artifact=path, mode=b.mode)) as be:
                    samples[(name, prec)].append(measure(be, 1, seconds=seconds / max(1, rounds)))
        for name, prec, path in cells:
            runs = sorted(samples[(name, prec)], key=lambda r: r["fps"])
            model = runs[len(runs) // 2]
            with open_backend(name, OpenRequest(artifact=path, mode=b.mode, options=render_options(name))) as be:
                e2e = measure_e2e(template, feats, be, frames=e2e_frames)
            rows.append({"backend": name, "precision": prec, "path": path.name,
                         "bytes": int(b.find("generator", "onnx", prec).entry.get("bytes") or path.stat().st_size),
                         "model_fps": model["fps"], "model_fps_runs": [r["fps"] for r in samples[(name, prec)]],
                         "latency_ms_p50": model["latency_ms"]["p50"], "e2e_fps": e2e["fps"],
                         "e2e_frames": e2e["frames"], "busiest_stage": e2e["busiest_stage"]})
        if rows:
            base = next((r for r in rows if r["precision"] == "fp32"), rows[0])
            for r in rows:
                r["size_ratio"] = round(r["bytes"] / base["bytes"], 3)
                r["model_speedup"] = round(r["model_fps"] / base["model_fps"], 2)
                r["e2e_speedup"] = round(r["e2e_fps"] / base["e2e_fps"], 2)

        return {"bundle": os.fspath(b.root), "rows": rows, "notes": notes,
                "baseline": f"{rows[0]['backend']}/fp32" if rows else None, "machine": describe_machine()}
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)



def floor_record(verdict: dict[str, Any]) -> ValidationRecord:
    """The manifest's record of a compressed artifact's quality gate (:func:`judge`'s verdict): its final frames'
    PSNR and worst level error against the precision's quality floor."""
    floor, final = verdict["floor"], verdict["final_frame"]
    source = f"the {verdict['profile']} quality floor"
    checks = (Check("psnr_db", final.get("psnr_db"), floor["min_psnr_db"], "min", source),
              Check("max_level_error", final.get("max_abs"), floor["max_level_error"], "max", source))
    details = {k: v for k, v in verdict.items() if k not in ("passed", "backend", "floor")}
    runtime = verdict.get("backend")
    return ValidationRecord("quality-floor", bool(verdict["passed"]), runtime, checks, details,
                            None if verdict["passed"] else "; ".join(verdict.get("failures") or []) or None)
