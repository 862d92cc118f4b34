"""Every layer of an ONNX or Core ML artifact against the PyTorch module: parity's ``layers`` stage, and the first
layer that departs.

The output stages say *that* a candidate is wrong, and for fp16 they see only what rises above the rounding noise
the whole network accumulates (a 2 % error in one mid-network convolution can stay inside it). This compares the
artifact layer by layer, on one frame, and names *where*: the frame runs through the PyTorch fp32 module with
forward hooks on every layer, and through the artifact with every layer's input and output exposed (for ONNX a copy
of the graph with those tensors added as outputs, run in ONNX Runtime's CPU provider; for Core ML the
``coreml-mil`` verifier, which runs the ML program op by op). Layers are the convolutions (with the BatchNorm folded
into them, as both exporters do) and the bilinear upsamples, named by their module path in the checkpoint's
state_dict (``up2.conv.double_conv.1.conv.3``). Artifact ops are matched to modules by execution order and checked
by weight and input shape: the i-th convolution of the graph is the i-th ``Conv2d`` PyTorch runs (a mismatch is
reported, never guessed around). Both exporters emit ops in trace order and neither adds, drops or reorders one.

Two errors per layer, both ``rel_rms = ||artifact - reference|| / ||reference||``:

- **local** (the verdict): the layer's output against the PyTorch layer in float64 applied to *the artifact's own
  input* of that layer. It is the layer's own rounding only, whatever the layers before it did: about 2e-4 for an
  fp16 convolution, 1e-7 in fp32, so a weight that is 1 % off stands out by 30x even in fp16. Expected: the same
  local error of the independent executions that set parity's tolerances (:mod:`framegen.toolkit.compare.tolerance`), at
  that layer: fp16 emulation for fp16, PyTorch fp32 for fp32. A layer is outside when
  ``local > max(K_LOCAL[p] x expected_p, K_LOCAL[fp32] x expected_fp32, 1e-6)``.
- **accumulated** (for reading the table): the layer's output against PyTorch fp32 on the frame's inputs, expected
  ``K[p] x independent_p + K[fp32] x fp64-noise`` there. It names the first layer after a fault *between* layers
  (an activation, a concat) that the local error cannot see; it is not a verdict, since fp16 rounding alone moves
  the deep layers by 1-2 %.

The first divergence is the first layer outside its local limit, or, when none is, the first outside its
accumulated one.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from framegen.models.contract import GEN_AUDIO, GEN_IMAGE
from framegen.models.errors import FramegenError, first_line
from framegen.runtimes.image_io_backend import color_layouts, pixels_to_planes
from framegen.runtimes.mil.program import MilProgram
from framegen.toolkit.compare.tolerance import K, fp16_emulation

CONV, UPSAMPLE = "conv", "upsample"
#: Multiplier on the independent execution's local error of a layer. Measured (docs/PARITY.md, scripts/
#: measure_parity.py): correct fp16 artifacts reach up to ~2x the fp16 emulation's local error (ORT's fp16 kernels,
#: the folded BatchNorm rounded once instead of twice), a 1 % weight error is 30-60x it.
K_LOCAL: dict[str, float] = {"fp32": 30.0, "fp16": 8.0}
#: Below this a local error is float32 resolution, whatever the layer: both sides round every value.
LOCAL_FLOOR = 1e-6
#: The parity stage this module judges.
LAYERS = "layers"


class LocateError(FramegenError):
    """An artifact whose layers cannot be matched to the PyTorch module's."""


@dataclass
class LayerRow:
    """One layer: its module path, kind, the artifact tensor compared, its local and accumulated errors with their
    expected values and limits."""

    layer: str
    kind: str
    artifact: str
    local_rel_rms: float
    local_expected: float
    local_limit: float
    rel_rms: float
    expected: float
    limit: float
    max_abs: float

    @property
    def local_passed(self) -> bool:
        """The layer's own error is within its limit (the verdict)."""
        return self.local_rel_rms <= self.local_limit

    @property
    def passed(self) -> bool:
        """Both errors within their limits."""
        return self.local_passed and self.rel_rms <= self.limit

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"layer": self.layer, "kind": self.kind, "artifact": self.artifact,
                "local_rel_rms": self.local_rel_rms, "local_expected": self.local_expected,
                "local_limit": self.local_limit, "local_passed": self.local_passed, "rel_rms": self.rel_rms,
                "expected": self.expected, "limit": self.limit, "max_abs": self.max_abs, "passed": self.passed}


@dataclass
class LocateResult:
    """The per-layer comparison of one artifact on one frame."""

    artifact: str
    format: str
    precision: str
    io: str
    frame: int
    layers: list[LayerRow] = field(default_factory=list)
    error: str | None = None

    @property
    def outside(self) -> list[LayerRow]:
        """The layers outside their local limit, in execution order."""
        return [r for r in self.layers if not r.local_passed]

    @property
    def first_divergence(self) -> dict[str, Any] | None:
        """``{layer, kind, metric, value, limit}`` of the first layer outside its local limit (else outside its
        accumulated one), or ``None``."""
        for row in self.layers:
            if not row.local_passed:
                return {"layer": row.layer, "kind": row.kind, "metric": "local_rel_rms", "value": row.local_rel_rms,
                        "limit": row.local_limit}
        for row in self.layers:
            if row.rel_rms > row.limit:
                return {"layer": row.layer, "kind": row.kind, "metric": "rel_rms", "value": row.rel_rms,
                        "limit": row.limit}
        return None

    def stage_metrics(self) -> dict[str, Any]:
        """The ``layers`` stage's summary: how many layers, the one closest to (or furthest past) its limit."""
        worst = max(self.layers, key=lambda r: r.local_rel_rms / r.local_limit, default=None)
        fd = self.first_divergence
        return {"layers": len(self.layers), "frame": self.frame, "outside": len(self.outside),
                "excess": worst.local_rel_rms / worst.local_limit if worst is not None else math.nan,
                "worst_layer": worst.layer if worst is not None else None,
                "worst_local_rel_rms": worst.local_rel_rms if worst is not None else None,
                "worst_local_limit": worst.local_limit if worst is not None else None,
                "first_divergence": fd["layer"] if fd is not None and fd["metric"] == "local_rel_rms" else None,
                "error": self.error}

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"artifact": self.artifact, "format": self.format, "precision": self.precision, "io": self.io,
                "frame": self.frame, "error": self.error, "first_divergence": self.first_divergence,
                "layers": [r.as_dict() for r in self.layers]}


# ----------------------------------------------------------------------------------------------- torch side

@dataclass
class TorchLayer:
    """One Conv2d (with the BatchNorm folded into it, if any) or Upsample call, in execution order."""

    name: str
    kind: str
    weight_shape: tuple[int, ...] | None
    input_shape: tuple[int, ...]
    batchnorm: str | None = None


_CHUNK = 1 << 16


def _diff_stats(value: Any, ref: Any) -> tuple[float, float]:
    """(rel rms of ``value - ref`` against ``ref``, max |value - ref|), both in float64."""
    v = np.asarray(value).reshape(-1)
    r = np.asarray(ref).reshape(-1)
    if v.size != r.size:
        raise ValueError(f"rel rms of {v.size} values against {r.size}")
    # float64 in chunks through one small buffer: whole-layer float64 temporaries (tens of MB, fresh pages each
    # time) cost more than the arithmetic, and the layer traces call this ~600 times a job.
    buf = np.empty(min(max(r.size, 1), _CHUNK), dtype=np.float64)
    rr = dd = 0.0
    top = 0.0
    for s in range(0, r.size, _CHUNK):
        e = min(s + _CHUNK, r.size)
        b = buf[: e - s]
        b[...] = r[s:e]
        rr += float(np.dot(b, b))
        np.subtract(v[s:e], b, out=b, dtype=np.float64)
        dd += float(np.dot(b, b))
        top = max(top, float(np.max(b)), -float(np.min(b)))
    n = max(r.size, 1)
    denom, err = math.sqrt(rr / n), math.sqrt(dd / n)
    if not math.isfinite(err):
        return math.inf, (math.nan if math.isnan(dd) else math.inf)
    return (err / denom if denom > 0 else (0.0 if err == 0 else math.inf)), top


def _rel_rms(value: Any, ref: Any) -> float:
    return _diff_stats(value, ref)[0]


class LocalReference:
    """Each layer of a generator in float64, applied to any input: the reference of a layer's local error."""

    def __init__(self, model: Any) -> None:
        self.modules = dict(copy.deepcopy(model).double().eval().named_modules())

    def __call__(self, layer: TorchLayer, x: Any) -> np.ndarray:
        """``layer`` (and its folded BatchNorm) on ``x`` (numpy or torch), in float64."""
        import torch

        t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
        with torch.inference_mode():
            y = self.modules[layer.name](t.double())
            if layer.batchnorm is not None:
                y = self.modules[layer.batchnorm](y)
        return y.numpy()


def _snapshot(out: Any) -> np.ndarray:
    """A hooked output as a numpy view in its own dtype (float32 or float64: exact; the comparisons widen to float64
    as they go). :func:`torch_trace` switches the generator's in-place ReLUs (its only in-place ops) off while it
    runs, so no later op changes an output, and the view needs no copy."""
    return out.detach().numpy()


def torch_trace(model: Any, image: np.ndarray, audio: np.ndarray, dtype: Any = None,
                local: LocalReference | None = None) -> tuple[list[TorchLayer], list[np.ndarray], list[float]]:
    """Run ``model`` once with hooks: every Conv2d / Upsample call in execution order, its output as computed (a
    conv's output after the BatchNorm it feeds, which the exporters fold into it) and, with ``local``, its local
    error (its output against ``local`` on its own input)."""
    import torch
    from torch import nn

    names = {m: n for n, m in model.named_modules()}
    layers: list[TorchLayer] = []
    values: list[np.ndarray] = []
    local_errors: list[float] = []
    pending: dict[str, Any] = {}

    def settle() -> None:
        if pending and local is not None:
            k = pending["k"]
            local_errors[k] = _rel_rms(pending["out"].detach().numpy(), local(layers[k], pending["in"]))
        pending.clear()

    def record(mod: Any, kind: str, inp: Any, out: Any) -> None:
        settle()
        layers.append(TorchLayer(names[mod], kind, tuple(mod.weight.shape) if kind == CONV else None,
                                 tuple(inp[0].shape)))
        values.append(_snapshot(out))
        local_errors.append(math.nan)
        pending.update(k=len(values) - 1, out=out, **{"in": inp[0].detach()})

    def conv_hook(mod: Any, inp: Any, out: Any) -> None:
        record(mod, CONV, inp, out)

    def bn_hook(mod: Any, inp: Any, out: Any) -> None:
        if pending and pending["out"] is inp[0] and layers[pending["k"]].kind == CONV:
            k = pending["k"]  # this BatchNorm normalises that conv's output: folded into it
            layers[k].batchnorm = names[mod]
            values[k] = _snapshot(out)
            pending["out"] = out
        settle()

    def up_hook(mod: Any, inp: Any, out: Any) -> None:
        record(mod, UPSAMPLE, inp, out)

    handles = []
    inplace = [m for m in model.modules() if isinstance(m, nn.ReLU) and m.inplace]
    for mod in inplace:
        mod.inplace = False
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            handles.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.BatchNorm2d):
            handles.append(mod.register_forward_hook(bn_hook))
        elif isinstance(mod, nn.Upsample):
            handles.append(mod.register_forward_hook(up_hook))
    try:
        x = torch.from_numpy(np.ascontiguousarray(image)[None])
        a = torch.from_numpy(np.ascontiguousarray(audio)[None])
        if dtype is not None:
            x, a = x.to(dtype), a.to(dtype)
        with torch.inference_mode():
            model(x, a)
        settle()
    finally:
        for h in handles:
            h.remove()
        for mod in inplace:
            mod.inplace = True
    return layers, values, local_errors


def torch_layers(model: Any, image: np.ndarray, audio: np.ndarray, dtype: Any = None
                 ) -> tuple[list[TorchLayer], list[np.ndarray]]:
    """Every Conv2d / Upsample call of ``model`` in execution order and its output (:func:`torch_trace`)."""
    layers, values, _ = torch_trace(model, image, audio, dtype)
    return layers, values


@dataclass
class LayerReference:
    """PyTorch's side of a layer comparison on one frame: the layers, their fp32 outputs, and per layer the
    expected accumulated and local errors of each precision."""

    layers: list[TorchLayer]
    values: list[np.ndarray]
    accumulated: dict[str, list[float]]  # precision -> per layer (fp32: float64 vs fp32 noise)
    local: dict[str, list[float]]  # precision -> per layer
    local_ref: LocalReference


def torch_reference(checkpoint: str | os.PathLike[str], image: np.ndarray, audio: np.ndarray,
                    mode: str | None = None, precisions: tuple[str, ...] = ("fp32", "fp16")) -> LayerReference:
    """The :class:`LayerReference` of ``checkpoint`` (a path or a loaded one) on one frame, with the expected errors
    of ``precisions`` (fp32's are always made: every limit uses them); a job that compares several artifacts makes it
    once and passes it to :func:`locate_artifact`."""
    import torch
    from framegen.models.checkpoint import load_generator

    unknown = sorted(set(precisions) - set(K_LOCAL))
    if unknown:
        raise LocateError(f"no layer limits for precision(s) {unknown} (fp32 or fp16)")
    model = load_generator(checkpoint, mode).float().eval()
    local = LocalReference(model)
    layers, ref, local32 = torch_trace(model, image, audio, local=local)
    _, fp64, _ = torch_trace(copy.deepcopy(model).double(), image, audio, dtype=torch.float64)
    accumulated = {"fp32": [_rel_rms(v, r) for v, r in zip(fp64, ref, strict=True)]}
    local_errors = {"fp32": local32}
    if "fp16" in precisions:  # the fp16 emulation trace costs as much as the other two: only when judged
        _, emu, local16 = torch_trace(fp16_emulation(model), image.astype(np.float16).astype(np.float32),
                                      audio.astype(np.float16).astype(np.float32), local=local)
        accumulated["fp16"] = [_rel_rms(v, r) for v, r in zip(emu, ref, strict=True)]
        local_errors["fp16"] = local16
    return LayerReference(layers, ref, accumulated, local_errors, local)


def local_limit(precision: str, expected: float, expected32: float) -> float:
    """A layer's local limit: ``max(K_LOCAL[p] x expected_p, K_LOCAL[fp32] x expected_fp32, LOCAL_FLOOR)``."""
    return max(K_LOCAL[precision] * expected, K_LOCAL["fp32"] * expected32, LOCAL_FLOOR)


# ----------------------------------------------------------------------------------------------- ONNX side

# (kind, output tensor compared, input tensor, weight shape)
ArtifactLayer = tuple[str, str, str, "tuple[int, ...] | None"]


def onnx_layers(path: str | os.PathLike[str]) -> tuple[Any, list[ArtifactLayer]]:
    """The model and its layers in graph order."""
    import onnx

    model = onnx.load(os.fspath(path))
    g = model.graph
    inits = {i.name: tuple(i.dims) for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out: list[ArtifactLayer] = []
    for n in g.node:
        if n.op_type == "Conv":
            src = n.input[1]
            while src not in inits and src in producers and producers[src].op_type in ("Cast", "Identity"):
                src = producers[src].input[0]
            tensor = n.output[0]
            nxt = consumers.get(tensor, [])
            if len(nxt) == 1 and nxt[0].op_type == "BatchNormalization":  # not folded by the exporter
                tensor = nxt[0].output[0]
            out.append((CONV, tensor, n.input[0], inits.get(src)))
        elif n.op_type == "Resize":
            out.append((UPSAMPLE, n.output[0], n.input[0], None))
    return model, out


def _run_onnx(model: Any, tensors: list[str], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inferred = onnx.shape_inference.infer_shapes(m)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}
    have = {o.name for o in m.graph.output}
    float16 = any(i.data_type == onnx.TensorProto.FLOAT16 for i in m.graph.initializer)
    for t in tensors:
        if t not in have and t not in feeds:
            elem = types.get(t, onnx.TensorProto.FLOAT16 if float16 else onnx.TensorProto.FLOAT)
            m.graph.output.append(onnx.helper.make_tensor_value_info(t, elem, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    missing = [i.name for i in sess.get_inputs() if i.name not in feeds]
    if missing:
        raise LocateError(f"ONNX input(s) {missing} are not the generator's ({sorted(feeds)})")
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()}), strict=True))
    return {**{k: v for k, v in feeds.items() if k in tensors}, **got}


# ----------------------------------------------------------------------------------------------- Core ML side

def mil_layers(program: Any) -> list[ArtifactLayer]:
    """The ML program's layers in op order."""
    ops = program.ops
    consumers: dict[str, list[tuple[str, list[str]]]] = {}
    for op_type, _name, inputs, outputs in ops:
        for refs in inputs.values():
            for kind, ref in refs:
                if kind == "var":
                    consumers.setdefault(ref, []).append((op_type, outputs))
    out: list[ArtifactLayer] = []
    for op_type, _name, inputs, outputs in ops:
        x = next((ref for kind, ref in inputs.get("x", []) if kind == "var"), "")
        if op_type == "conv":
            weight = None
            for kind, ref in inputs.get("weight", []):
                if kind == "var":
                    value = program.constant(ref)
                    weight = tuple(value.shape) if value is not None else None
            tensor = outputs[0]
            nxt = consumers.get(tensor, [])
            if len(nxt) == 1 and nxt[0][0] == "batch_norm":
                tensor = nxt[0][1][0]
            out.append((CONV, tensor, x, weight))
        elif op_type in ("upsample_bilinear", "resize_bilinear"):
            out.append((UPSAMPLE, outputs[0], x, None))
    return out


def _run_mil(program: Any, tensors: list[str], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    wanted = set(tensors)
    got: dict[str, np.ndarray] = {k: v for k, v in feeds.items() if k in wanted}

    def observe(name: str, value: Any) -> None:
        if name in wanted:
            got[name] = value.float().numpy().copy()

    program.run(feeds, observe=observe)
    return got


# ----------------------------------------------------------------------------------------------- comparing

def _artifact_runner(artifact: str | os.PathLike[str], fmt: str, io: str, image: np.ndarray, audio: np.ndarray,
                     crop: np.ndarray | None) -> tuple[list[ArtifactLayer], Callable[[list[str]], dict]]:
    """The artifact's layers and a function returning the values of named tensors on this frame's feeds."""
    if io == "image" and crop is None:
        raise LocateError("an image-I/O artifact needs the frame's uint8 crop")
    a = np.ascontiguousarray(audio[None], dtype=np.float32)
    if fmt == "onnx":
        model, layers = onnx_layers(artifact)
        x = np.ascontiguousarray(crop[None]) if io == "image" else np.ascontiguousarray(image[None], np.float32)
        feeds = {GEN_IMAGE: x, GEN_AUDIO: a}
        return layers, lambda names: _run_onnx(model, names, feeds)
    if fmt == "coreml":
        program = MilProgram(artifact)
        if io == "image":
            x = pixels_to_planes(crop, color_layouts(artifact)[0])
        else:
            x = np.ascontiguousarray(image[None], np.float32)
        feeds = {GEN_IMAGE: x, GEN_AUDIO: a}
        return mil_layers(program), lambda names: _run_mil(program, names, feeds)
    raise LocateError(f"layers are compared in ONNX and Core ML artifacts, not {fmt!r}")


def locate_artifact(checkpoint: str | os.PathLike[str], artifact: str | os.PathLike[str], fmt: str, precision: str,
                    image: np.ndarray, audio: np.ndarray, *, mode: str | None = None, frame: int = 0,
                    io: str = "tensor", crop: np.ndarray | None = None,
                    reference: LayerReference | None = None) -> LocateResult:
    """Compare every layer of the generator ``artifact`` (``fmt`` ``onnx`` or ``coreml``; ``precision`` ``fp32``
    or ``fp16``) with the PyTorch module of ``checkpoint`` on one frame: ``image`` float32 (6, 320, 320) and
    ``audio`` the window, and for an image-I/O artifact (``io='image'``) ``crop``, the uint8 (320, 320, 3) BGR crop
    that ``image`` was made from. ``reference``: :func:`torch_reference` of the same checkpoint and frame, when the
    caller compares several artifacts (made here otherwise).

    Never raises for an artifact that cannot be matched or run: the result's ``error`` says why.
    """
    result = LocateResult(os.fspath(artifact), fmt, precision, io, frame)
    if precision not in K_LOCAL:
        result.error = f"no layer limits for precision {precision!r} (fp32 or fp16)"
        return result
    ref = reference if reference is not None else torch_reference(checkpoint, image, audio, mode, (precision,))
    if precision not in ref.local:
        result.error = f"the layer reference was made without {precision}'s expected errors"
        return result
    layers = ref.layers
    try:
        art_layers, runner = _artifact_runner(artifact, fmt, io, image, audio, crop)
        if [k for k, _, _, _ in art_layers] != [t.kind for t in layers]:
            raise LocateError(f"{artifact}: {len(art_layers)} convolution/upsample layers in the artifact, "
                              f"{len(layers)} in the PyTorch module (or in another order)")
        for t, (_, tensor, _, shape) in zip(layers, art_layers, strict=True):
            if t.kind == CONV and shape is not None and tuple(shape) != t.weight_shape:
                raise LocateError(f"{artifact}: convolution {tensor!r} has weight shape {list(shape)} where "
                                  f"{t.name} has {list(t.weight_shape or ())}")
        values = runner(sorted({n for _, out, inp, _ in art_layers for n in (out, inp)}))
        rows = []
        for i, (t, (_, tensor, inp, _)) in enumerate(zip(layers, art_layers, strict=True)):
            v, x, r = values.get(tensor), values.get(inp), ref.values[i]
            if v is None or v.shape != r.shape or x is None or tuple(x.shape) != t.input_shape:
                raise LocateError(f"{artifact}: no values of shapes {list(t.input_shape)} -> {list(r.shape)} for "
                                  f"{inp!r} -> {tensor!r} ({t.name})")
            loc = _rel_rms(v, ref.local_ref(t, np.asarray(x, dtype=np.float32)))
            exp32, exp = ref.local["fp32"][i], ref.local[precision][i]
            acc, max_abs = _diff_stats(v, r)
            acc_exp = ref.accumulated[precision][i]
            acc_limit = (K[precision] * acc_exp + K["fp32"] * ref.accumulated["fp32"][i] if precision == "fp16"
                         else K["fp32"] * acc_exp)
            rows.append(LayerRow(t.name, t.kind, tensor, loc, exp, local_limit(precision, exp, exp32), acc, acc_exp,
                                 max(acc_limit, LOCAL_FLOOR), max_abs))
    except FramegenError as exc:
        result.error = str(exc)
        return result
    except Exception as exc:  # a runtime's own exception: the report says it, parity goes on
        result.error = f"{type(exc).__name__}: {first_line(exc, 200)}"
        return result
    result.layers = rows
    return result


