"""Export-time validation: an artifact that does not compute what the PyTorch module computes is refused.

Every artifact is checked for its tensor names, shapes and dtypes, its embedded metadata, and the fidelity of its
weights: each convolution's weights and bias in the artifact are compared, in execution order, with the PyTorch
module's (BatchNorm folded in, as both exporters do). ONNX artifacts are also run in a fresh ONNX Runtime session
(CPUExecutionProvider) at batch 1 and 3 on image-like inputs with the exact mask and non-negative audio windows,
and compared with the module. Core ML artifacts are run by the ``coreml-mil`` verifier (op by op, in the program's
precision) when it is installed; Core ML itself only exists on macOS.

Tolerances (:data:`TOLERANCES`) were set from measurements on the calibrated seeded generators (ave and wenet) and
encoder (``python scripts/measure_exporters.py``, ``framegen export``): generator fp32 artifacts differ from PyTorch by
2.8e-5..4.4e-5 (max) and 1.1e-6..1.8e-6 (mean), fp16 ones by 0.018..0.035 (ORT) and 0.034..0.062 (coreml-mil) max
and 0.002..0.0045 mean; the encoder's fp32 embeddings (values up to ~4) by 1.1e-5 at most. The fp32 generator
limit is the contract's 1e-4, a floor. Output limits alone are blunt for fp16 (a 1 % error in the output
convolution moves the output less than fp16 rounding does); the weight check (relative error per tensor; fp16
rounding is <= 4.9e-4) is what catches a wrong weight there.

The fp16 and fp32 output limits follow the checkpoint (:func:`tolerance_for`), by the rule parity uses
(:mod:`framegen.toolkit.compare.tolerance`): the same PyTorch module is run once more on the same validation inputs as
an independent execution of that precision (fp16: :func:`framegen.toolkit.compare.tolerance.fp16_emulation`; fp32:
the module in float64), and each checked statistic's limit is ``max(fixed, K[precision] x that execution's error
against PyTorch fp32)``. The fixed limits stay as floors, so nothing gets stricter, and a checkpoint that amplifies
rounding more than the stand-ins the floors were measured on is no longer refused for it. The weight check stays
fixed. The record names every limit in force and where it came from.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from framegen.exporters.coreml_export import MAX_BATCH
from framegen.exporters.errors import ExportValidationError
from framegen.models.contract import ENC_INPUT, ENC_OUTPUT, GEN_AUDIO, GEN_IMAGE, GEN_OUTPUT
from framegen.models.errors import FramegenError, first_line
from framegen.models.imports import mlprogram_spec
from framegen.models.validation import Check, ValidationRecord
from framegen.runtimes.mil.program import run_mlpackage
from framegen.toolkit.compare.tolerance import K, fp16_emulation

VALIDATION_SEED = 6
VALIDATION_BATCH = 3


@dataclass(frozen=True)
class Tolerance:
    """Limits for one model and precision: output abs error (max, mean) and per-tensor relative weight error."""

    max_abs: float
    mean_abs: float
    weight_rel: float

    def as_dict(self) -> dict[str, float]:
        """JSON-able form."""
        return {"max_abs": self.max_abs, "mean_abs": self.mean_abs, "weight_rel": self.weight_rel}


TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("generator", "fp32"): Tolerance(max_abs=1e-4, mean_abs=1e-5, weight_rel=1e-5),
    # fp16: wenet's Core ML program reaches 0.062 / 0.0045 on the verifier; a real defect (wrong op, layout or
    # channel order) moves the mean by far more, and the weight check catches small weight errors. The fp16 output
    # limits are floors, raised to follow the checkpoint (tolerance_for).
    ("generator", "fp16"): Tolerance(max_abs=0.2, mean_abs=0.02, weight_rel=1e-3),
    ("audio_encoder", "fp32"): Tolerance(max_abs=1e-4, mean_abs=1e-5, weight_rel=1e-5),
    ("audio_encoder", "fp16"): Tolerance(max_abs=0.1, mean_abs=0.01, weight_rel=1e-3),
}


def validation_inputs(kind: str, mode: str, batch: int = VALIDATION_BATCH,
                      seed: int = VALIDATION_SEED) -> tuple[np.ndarray, ...]:
    """Seeded, real-looking inputs (float32): for the generator an image-like 320x320 crop pair with the contract's
    mask and non-negative audio windows with the spread of real 'ave' features; for the encoder mel windows in
    [-4, 4] with the spread of normalised speech mels."""
    import torch
    from framegen.models.init import audio_like_batch, image_like_batch

    gen = torch.Generator().manual_seed(seed)
    if kind == "generator":
        return image_like_batch(batch, gen).numpy(), audio_like_batch(mode, batch, gen).numpy()
    mel = (torch.randn(batch, 1, 80, 16, generator=gen) * 1.5 - 1.0).clamp(-4, 4)
    return (mel.numpy(),)


@dataclass
class Reference:
    """What the PyTorch module computes on the validation inputs, and its BatchNorm-folded convolutions."""

    kind: str
    mode: str
    input_names: list[str]
    output_name: str
    inputs: tuple[np.ndarray, ...]
    output: np.ndarray
    convs: list[tuple[str, np.ndarray, np.ndarray]] = field(default_factory=list)  # (name, weight, bias), float64
    #: the PyTorch module itself, for the fp16 emulation that sets the fp16 limits (:func:`tolerance_for`)
    module: Any = field(default=None, repr=False, compare=False)
    #: fp16 emulations already run on this module, by inputs: one per export, shared by its artifacts
    emulations: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def input_shapes(self) -> list[tuple[int, ...]]:
        """Per-sample (batch-less) shapes of the inputs."""
        return [tuple(a.shape[1:]) for a in self.inputs]

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Per-sample shape of the output."""
        return tuple(self.output.shape[1:])


def reference(module: Any, kind: str, mode: str) -> Reference:
    """Run ``module`` once on the validation inputs, recording its convolutions in execution order with each one's
    following BatchNorm folded in (``w * g / sqrt(v + eps)``, ``(b - m) * g / sqrt(v + eps) + beta``)."""
    import torch
    from torch import nn

    inputs = validation_inputs(kind, mode)
    names = {m: n for n, m in module.named_modules()}
    calls: list[dict[str, Any]] = []

    def on_conv(mod: nn.Module, args: Any, out: torch.Tensor) -> None:
        calls.append({"name": names[mod], "conv": mod, "out": out, "bn": None})

    def on_bn(mod: nn.Module, args: Any, out: torch.Tensor) -> None:
        if calls and calls[-1]["out"] is args[0] and calls[-1]["bn"] is None:
            calls[-1]["bn"] = mod

    hooks = [m.register_forward_hook(on_conv) for m in module.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(on_bn) for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            out = module.eval()(*(torch.from_numpy(a) for a in inputs)).numpy()
    finally:
        for h in hooks:
            h.remove()
    convs = []
    for c in calls:
        conv, bn = c["conv"], c["bn"]
        w = conv.weight.detach().double().numpy()
        b = conv.bias.detach().double().numpy() if conv.bias is not None else np.zeros(w.shape[0])
        if bn is not None:
            scale = bn.weight.detach().double().numpy() / np.sqrt(bn.running_var.detach().double().numpy() + bn.eps)
            w = w * scale[:, None, None, None]
            b = (b - bn.running_mean.detach().double().numpy()) * scale + bn.bias.detach().double().numpy()
        convs.append((c["name"], w, b))
    in_names, out_name = ([GEN_IMAGE, GEN_AUDIO], GEN_OUTPUT) if kind == "generator" else ([ENC_INPUT], ENC_OUTPUT)
    return Reference(kind, mode, in_names, out_name, inputs, out, convs, module=module)


# ------------------------------------------------------------------------------------------- limits in force

#: What the fp16 emulation is, for the records.
EMULATION = ("framegen.toolkit.compare.tolerance.fp16_emulation: the PyTorch module in fp32 with every weight, "
             "BatchNorm constant, input and layer output rounded to float16")
FIXED = "fixed (toolkit/export/validate.py TOLERANCES)"
#: What the fp32 limits' independent execution is, for the records.
FLOAT64 = "the PyTorch module in float64 (parity's fp32 rule, framegen.toolkit.compare.tolerance)"
#: Where a validation record keeps the independent execution that set an artifact's limits, by precision.
INDEPENDENT_KEY = {"fp16": "fp16_emulation", "fp32": "fp64_reference"}


def _cached_run(cache: dict[str, Any] | None, tag: str, inputs: Sequence[np.ndarray],
                compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    """``compute()`` and the seconds it took, run at most once per ``tag`` and ``inputs`` when ``cache`` (a
    :attr:`Reference.emulations`) is given: a second artifact of the same export reuses it."""
    h = hashlib.sha256(tag.encode())
    for a in inputs:
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    key = h.hexdigest()
    if cache is not None and key in cache:
        return cache[key]
    t0 = time.perf_counter()
    out = np.asarray(compute())
    entry = (out, round(time.perf_counter() - t0, 2))
    if cache is not None:
        cache[key] = entry
    return entry


def emulated_fp16(module: Any, inputs: Sequence[np.ndarray], run: Callable[[Any], np.ndarray],
                  cache: dict[str, Any] | None = None, tag: str = "") -> tuple[np.ndarray, float]:
    """``run(emulation)`` for the fp16 emulation of ``module``, and the seconds it took; with ``cache``
    (a :attr:`Reference.emulations`), run at most once per ``tag`` and ``inputs``: a second artifact of the same
    export reuses it."""
    return _cached_run(cache, tag, inputs, lambda: run(fp16_emulation(module)))


def derived_limit(fixed: float, measured: float, unit: str = "", precision: str = "fp16") -> tuple[float, str]:
    """``max(fixed, K[precision] x measured)`` and where it came from (``measured``: the independent execution's
    error; for fp32 that execution is the module in float64)."""
    k = K[precision]
    what = "fp16" if precision == "fp16" else "fp32 (float64 against fp32)"
    if not np.isfinite(measured):  # an emulation that overflowed measures nothing: it must not open the limit
        return fixed, f"fixed (the independent {what} execution gave {measured})"
    derived = k * measured
    if derived > fixed:
        return derived, f"{k:g} x independent {what} {measured:.3g}{unit}"
    return fixed, f"fixed floor ({k:g} x independent {what} {measured:.3g}{unit} = {derived:.3g} is below it)"


def float64_output(module: Any, inputs: Sequence[np.ndarray], cache: dict[str, Any] | None = None,
                   tag: str = "") -> tuple[np.ndarray, float]:
    """``module`` run in float64 on ``inputs`` (a copy: the module is left as it was), and the seconds it took;
    cached like :func:`emulated_fp16`."""
    import copy

    import torch

    def compute() -> np.ndarray:
        with torch.no_grad():
            return copy.deepcopy(module).double().eval()(*(torch.from_numpy(a).double() for a in inputs)).numpy()

    return _cached_run(cache, "float64:" + tag, inputs, compute)


def tolerance_for(ref: Reference, precision: str, batches: Sequence[int], *, derive_fp32: bool = False
                  ) -> tuple[Tolerance, dict[str, str], dict[str, Any] | None]:
    """The limits an artifact of ``precision`` checked at ``batches`` is held to, where each came from, and the fp16
    emulation's figures (``None`` when nothing was measured).

    fp16: ``max_abs`` and ``mean_abs`` are ``max(fixed, K["fp16"] x error)`` of the fp16 emulation of ``ref.module``
    on ``ref.inputs`` against ``ref.output``, the error taken like the artifact's (the worst over ``batches``, each
    the batch's first samples). fp32: ``max(fixed, K["fp32"] x error)`` of the module run in float64, parity's fp32
    rule: a trained checkpoint can amplify fp32's own rounding past the fixed 1e-4 (one measured at 1.8e-4 between
    PyTorch fp32 and float64, where a correct ONNX Runtime export differed from PyTorch by 2.9e-4). fp32 is
    measured only with ``derive_fp32`` (:func:`check_output` asks for it when an output exceeds the fixed floor:
    the verdict is the same, and an export within the floor pays nothing). ``weight_rel`` stays fixed. The figures
    returned go to the record as :data:`INDEPENDENT_KEY` ``[precision]``.
    """
    base = TOLERANCES[(ref.kind, precision)]
    sources = dict.fromkeys(base.as_dict(), FIXED)
    if precision not in INDEPENDENT_KEY or not batches or ref.module is None or (
            precision == "fp32" and not derive_fp32):
        return base, sources, None
    import torch

    def run(emu: Any) -> np.ndarray:
        with torch.no_grad():
            return emu(*(torch.from_numpy(a) for a in ref.inputs)).numpy()

    if precision == "fp16":
        out, seconds = emulated_fp16(ref.module, ref.inputs, run, ref.emulations, tag=f"tensor:{ref.kind}")
        method = EMULATION
    else:
        out, seconds = float64_output(ref.module, ref.inputs, ref.emulations, tag=f"tensor:{ref.kind}")
        method = FLOAT64
    errs = [_errors(out[:b], ref.output[:b]) for b in batches]
    mx, mean = max(e[0] for e in errs), max(e[1] for e in errs)
    max_abs, sources["max_abs"] = derived_limit(base.max_abs, mx, precision=precision)
    mean_abs, sources["mean_abs"] = derived_limit(base.mean_abs, mean, precision=precision)
    emu = {"method": method, "K": K[precision], "batches": list(batches), "max_abs_err": mx, "mean_abs_err": mean,
           "seconds": seconds}
    return Tolerance(max_abs=max_abs, mean_abs=mean_abs, weight_rel=base.weight_rel), sources, emu


def check_output(path: Path, got: np.ndarray, want: np.ndarray, ref: Reference, precision: str,
                 batches: Sequence[int], where: str, result: dict[str, Any]) -> dict[str, float]:
    """:func:`check_numbers` under the limits in ``result["tolerance"]``; an fp32 output over the fixed floor is
    judged again under the checkpoint's own fp32 limits (:func:`tolerance_for` with ``derive_fp32``), which then
    replace the fixed ones in ``result``."""
    try:
        return check_numbers(path, got, want, Tolerance(**result["tolerance"]), where)
    except ExportValidationError:
        if precision != "fp32" or ref.module is None or INDEPENDENT_KEY["fp32"] in result:
            raise
    tol, sources, measured = tolerance_for(ref, precision, batches, derive_fp32=True)
    result.update({"tolerance": tol.as_dict(), "tolerance_sources": sources, INDEPENDENT_KEY["fp32"]: measured})
    return check_numbers(path, got, want, tol, where)


def _errors(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    return float(err.max()), float(err.mean())


def _fail(path: Path, message: str) -> ExportValidationError:
    return ExportValidationError(f"{path}: validation failed: {message}")


def check_numbers(path: Path, got: np.ndarray, want: np.ndarray, tol: Tolerance, where: str) -> dict[str, float]:
    """Max / mean abs error of ``got`` against ``want``; refuses non-finite values and errors over ``tol``."""
    if got.shape != want.shape:
        raise _fail(path, f"{where}: output shape {list(got.shape)}, expected {list(want.shape)}")
    if not np.all(np.isfinite(got)):
        raise _fail(path, f"{where}: output holds NaN or inf")
    mx, mean = _errors(got, want)
    if mx > tol.max_abs or mean > tol.mean_abs:
        raise _fail(path, f"{where}: differs from PyTorch by max {mx:.3g} / mean {mean:.3g} "
                          f"(limits {tol.max_abs:g} / {tol.mean_abs:g})")
    return {"max_abs_err": mx, "mean_abs_err": mean}


def check_weights(path: Path, got: list[tuple[str, np.ndarray, np.ndarray | None]],
                  ref: Reference, tol: Tolerance) -> dict[str, Any]:
    """Compare the artifact's convolutions (in graph order) with the module's folded ones (in execution order)."""
    if len(got) != len(ref.convs):
        raise _fail(path, f"{len(got)} convolutions, the PyTorch module runs {len(ref.convs)}")
    worst, worst_at = 0.0, ""
    for i, ((gname, gw, gb), (rname, rw, rb)) in enumerate(zip(got, ref.convs, strict=True)):
        if tuple(gw.shape) != tuple(rw.shape):
            raise _fail(path, f"convolution {i} ({gname}) has weights {list(gw.shape)}, the module's {rname} has "
                              f"{list(rw.shape)}")
        gb = np.zeros(rw.shape[0]) if gb is None else gb
        for what, g, r in (("weight", gw, rw), ("bias", gb, rb)):
            scale = max(float(np.abs(r).max()), 1e-6)
            rel = float(np.abs(g.astype(np.float64) - r).max()) / scale
            if rel > worst:
                worst, worst_at = rel, f"{rname}.{what}"
            if rel > tol.weight_rel:
                raise _fail(path, f"{what} of convolution {i} ({rname}) differs from the checkpoint by {rel:.3g} "
                                  f"(relative to its largest value; limit {tol.weight_rel:g})")
    return {"convolutions": len(got), "weights_max_rel_err": worst, "weights_worst": worst_at}


def check_metadata(path: Path, got: dict[str, str], want: dict[str, str]) -> None:
    """Every expected metadata entry is present with the expected value."""
    for key, value in want.items():
        if got.get(key) != value:
            shown = got.get(key)
            shown = "missing" if shown is None else repr(shown[:60])
            raise _fail(path, f"metadata {key!r} is {shown}, expected {value[:60]!r}")


# ---------------------------------------------------------------------------------------------------------- ONNX

def onnx_convs(model: Any) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """``(node name, weight, bias)`` of every Conv node of an ONNX model, in graph order."""
    from onnx import numpy_helper

    consts = {t.name: t for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = a.t
    out = []
    for n in model.graph.node:
        if n.op_type != "Conv":
            continue
        if n.input[1] not in consts:
            raise ExportValidationError(f"Conv {n.name}: weight {n.input[1]!r} is not a constant")
        w = numpy_helper.to_array(consts[n.input[1]])
        b = numpy_helper.to_array(consts[n.input[2]]) if len(n.input) > 2 and n.input[2] in consts else None
        out.append((n.name, w, b))
    return out


def validate_onnx(path: str | os.PathLike[str], ref: Reference, precision: str,
                  metadata: dict[str, str] | None = None, label: str | None = None) -> dict[str, Any]:
    """Load ``path`` in a fresh ONNX Runtime CPU session, check names, shapes, dtypes and metadata, run it at batch 1
    and 3 against ``ref`` and compare its weights; returns the figures, raises ``ExportValidationError`` (naming
    ``label``, default the path)."""
    import onnx
    import onnxruntime as ort

    p = Path(label or path)
    tol, sources, emulation = tolerance_for(ref, precision, (1, VALIDATION_BATCH))
    try:
        session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise _fail(p, f"ONNX Runtime cannot load it ({first_line(exc, 200)})") from None
    ins, outs = session.get_inputs(), session.get_outputs()
    if [i.name for i in ins] != ref.input_names or [o.name for o in outs] != [ref.output_name]:
        raise _fail(p, f"tensors {[i.name for i in ins]} -> {[o.name for o in outs]}, expected "
                       f"{ref.input_names} -> {[ref.output_name]}")
    for meta, want in (*zip(ins, ref.input_shapes, strict=True), (outs[0], ref.output_shape)):
        if meta.type != "tensor(float)":
            raise _fail(p, f"{meta.name!r} is {meta.type}, expected tensor(float)")
        if isinstance(meta.shape[0], int) or tuple(meta.shape[1:]) != want:
            raise _fail(p, f"{meta.name!r} has shape {meta.shape}, expected [batch, {', '.join(map(str, want))}]")
    result: dict[str, Any] = {"runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider", "batches": [],
                              "tolerance": tol.as_dict(), "tolerance_sources": sources}
    if emulation is not None:
        result[INDEPENDENT_KEY[precision]] = emulation
    if precision == "fp16":
        result["note"] = ("the CPU provider has no float16 kernels for these ops: it runs each one in float32 "
                          "between float16 casts (GPU providers compute in float16)")
    worst = {"max_abs_err": 0.0, "mean_abs_err": 0.0}
    for batch in (1, VALIDATION_BATCH):
        feeds = {n: a[:batch] for n, a in zip(ref.input_names, ref.inputs, strict=True)}
        got = session.run([ref.output_name], feeds)[0]
        if got.dtype != np.float32:
            raise _fail(p, f"output is {got.dtype}, expected float32")
        errs = check_output(p, got, ref.output[:batch], ref, precision, (1, VALIDATION_BATCH), f"batch {batch}",
                            result)
        result["batches"].append(batch)
        worst = {k: max(worst[k], errs[k]) for k in worst}
        if ref.kind == "generator" and (got.min() < 0 or got.max() > 1):
            raise _fail(p, f"batch {batch}: output leaves [0, 1] ({got.min():.3g}..{got.max():.3g})")
    del session
    model = onnx.load(os.fspath(path))
    if metadata is not None:
        check_metadata(p, {e.key: e.value for e in model.metadata_props}, metadata)
    result.update(worst)
    result.update(check_weights(p, onnx_convs(model), ref, tol))
    result["passed"] = True
    return result


# ------------------------------------------------------------------------------------------------------- Core ML

def coreml_convs(path: str | os.PathLike[str]) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """``(op name, weight, bias)`` of every conv op of an .mlpackage's ML program, in program order (weights read
    from the package's weight file by coremltools' own MIL loader)."""
    from coremltools.converters.mil.frontend.milproto.load import load as load_mil

    spec = mlprogram_spec(path)
    weights = Path(path) / "Data" / "com.apple.CoreML" / "weights"
    program = load_mil(spec, specification_version=spec.specificationVersion, file_weights_dir=os.fspath(weights))

    def value(var: Any) -> np.ndarray | None:
        if var is None:
            return None
        while var.val is None and var.op is not None and var.op.op_type == "cast":
            var = var.op.x
        if var.val is None:
            raise ExportValidationError(f"{path}: conv input {var.name!r} is not a constant")
        return np.asarray(var.val)

    out = []
    for op in program.functions["main"].operations:
        if op.op_type == "conv":
            out.append((op.name, value(op.weight), value(op.bias)))
    return out


def validate_coreml(path: str | os.PathLike[str], ref: Reference, precision: str,
                    metadata: dict[str, str] | None = None, max_batch: int | None = None,
                    numeric_batches: tuple[int, ...] = (1,), label: str | None = None) -> dict[str, Any]:
    """Check an .mlpackage on any OS: ML program, tensor names / shapes / dtypes (flexible batch 1..``max_batch``),
    metadata, compute precision and weights; with the ``coreml-mil`` verifier, also its numbers at
    ``numeric_batches``. Returns the figures, raises ``ExportValidationError``."""
    p = Path(label or path)
    tol = TOLERANCES[(ref.kind, precision)]  # the weight check's: fixed; the numbers' limits below
    try:
        spec = mlprogram_spec(path)
    except FramegenError as exc:
        raise _fail(p, str(exc).split(": ", 1)[1]) from None
    desc = spec.description
    got_in, got_out = [i.name for i in desc.input], [o.name for o in desc.output]
    if got_in != ref.input_names or got_out != [ref.output_name]:
        raise _fail(p, f"tensors {got_in} -> {got_out}, expected {ref.input_names} -> {[ref.output_name]}")
    fp32 = 65568  # ArrayFeatureType.FLOAT32
    for feature, want in zip(desc.input, ref.input_shapes, strict=True):
        arr = feature.type.multiArrayType
        if arr.dataType != fp32:
            raise _fail(p, f"input {feature.name!r} is not float32")
        ranges = [(r.lowerBound, r.upperBound) for r in arr.shapeRange.sizeRanges]
        if ranges:
            dims = [lo if lo == hi else None for lo, hi in ranges]
            batch = ranges[0]
        else:
            dims, batch = list(arr.shape), (arr.shape[0], arr.shape[0])
        if tuple(dims[1:]) != want:
            raise _fail(p, f"input {feature.name!r} has shape {dims}, expected [batch, {', '.join(map(str, want))}]")
        if max_batch is not None and batch != (1, max_batch):
            raise _fail(p, f"input {feature.name!r} takes batch {batch[0]}..{batch[1]}, expected 1..{max_batch}")
    if desc.output[0].type.multiArrayType.dataType != fp32:
        raise _fail(p, f"output {ref.output_name!r} is not float32")
    if metadata is not None:
        check_metadata(p, dict(desc.metadata.userDefined), metadata)
    convs = coreml_convs(path)
    dtypes = {str(w.dtype) for _, w, _ in convs}
    want_dtype = "float16" if precision == "fp16" else "float32"
    if dtypes != {want_dtype}:
        raise _fail(p, f"convolution weights are {', '.join(sorted(dtypes))}, expected {want_dtype} for {precision}")
    result: dict[str, Any] = {"runtime": "coremltools spec + MIL weights (Linux)",
                              "deployment_target_spec_version": spec.specificationVersion}
    result.update(check_weights(p, convs, ref, tol))

    tol, sources, emulation = tolerance_for(ref, precision, numeric_batches)
    result.update({"tolerance": tol.as_dict(), "tolerance_sources": sources})
    if emulation is not None:
        result[INDEPENDENT_KEY[precision]] = emulation

    worst = {"max_abs_err": 0.0, "mean_abs_err": 0.0}
    for batch in numeric_batches:
        feeds = {n: a[:batch] for n, a in zip(ref.input_names, ref.inputs, strict=True)}
        try:
            outputs = run_mlpackage(path, feeds)
        except FramegenError as exc:
            raise _fail(p, f"the coreml-mil verifier cannot run it ({exc})") from None
        if ref.output_name not in outputs:
            raise _fail(p, f"the program returned {list(outputs)}, not {ref.output_name!r}")
        got = np.asarray(outputs[ref.output_name], dtype=np.float32)
        errs = check_output(p, got, ref.output[:batch], ref, precision, numeric_batches, f"coreml-mil batch {batch}",
                            result)
        worst = {k: max(worst[k], errs[k]) for k in worst}
    result["numeric"] = {"runtime": "coreml-mil verifier (op by op, program precision)",
                         "batches": list(numeric_batches), **worst}
    result["passed"] = True
    return result


def validate_artifact(fmt: str, path: str | os.PathLike[str], ref: Reference, precision: str,
                      metadata: dict[str, str] | None = None, label: str | None = None) -> dict[str, Any]:
    """Validate a tensor artifact of format ``fmt`` with that format's validator (:data:`VALIDATORS`)."""
    if fmt not in VALIDATORS:
        raise ExportValidationError(f"{label or path}: no validator for format {fmt!r}")
    return VALIDATORS[fmt](path, ref, precision, metadata, label)


def _validate_coreml_export(path: str | os.PathLike[str], ref: Reference, precision: str,
                            metadata: dict[str, str] | None, label: str | None) -> dict[str, Any]:
    # The generator's verifier run is slow (op by op): batch 1; the small encoder also at batch 3.
    return validate_coreml(path, ref, precision, metadata, max_batch=MAX_BATCH,
                           numeric_batches=(1,) if ref.kind == "generator" else (1, VALIDATION_BATCH), label=label)


#: format -> ``(path, reference, precision, metadata, label) -> validation record``
VALIDATORS: dict[str, Any] = {"onnx": validate_onnx, "coreml": _validate_coreml_export}


def tensor_record(result: dict[str, Any]) -> ValidationRecord:
    """The manifest's record of a tensor artifact's validation (:func:`validate_artifact`'s result): its output
    errors and its worst weight error against PyTorch, each with the limit in force and where that came from."""
    numeric = result if "max_abs_err" in result else (result.get("numeric") or {})
    tol, sources = result["tolerance"], result.get("tolerance_sources") or {}
    checks = []
    if "max_abs_err" in numeric:
        checks += [Check("max_abs", numeric["max_abs_err"], tol["max_abs"], "max", sources.get("max_abs", "")),
                   Check("mean_abs", numeric["mean_abs_err"], tol["mean_abs"], "max", sources.get("mean_abs", ""))]
    checks.append(Check("weights_max_rel", result["weights_max_rel_err"], tol["weight_rel"], "max",
                        sources.get("weight_rel", "")))
    lifted = {"runtime", "tolerance", "tolerance_sources", "max_abs_err", "mean_abs_err", "weights_max_rel_err",
              "passed", "numeric"}
    details = {k: v for k, v in result.items() if k not in lifted}
    if numeric is not result:
        details["structure_checked_by"] = result.get("runtime")
        if "batches" in numeric:
            details["batches"] = numeric["batches"]
    return ValidationRecord("tensor", bool(result.get("passed", True)), numeric.get("runtime", result.get("runtime")),
                            tuple(checks), details)
