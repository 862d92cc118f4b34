"""Locate the first layer of an ONNX or Core ML artifact that departs from the PyTorch module.

Parity says *that* a candidate's output is wrong; this says *where*. One frame (the candidate's worst) runs through
the PyTorch fp32 module with forward hooks on every layer, and through the artifact with every matching intermediate
value exposed: for ONNX a copy of the graph with those tensors added as outputs, run in ONNX Runtime; for Core ML the
``coreml-mil`` verifier, which runs the ML program op by op and hands out each op's value. Layers are the
convolutions (with the BatchNorm folded into them, as both exporters do) and the bilinear upsamples; each is named by
its module path in the checkpoint's state_dict (``up2.conv.double_conv.1.conv.3``).

Artifact ops are matched to modules by execution order and checked by weight shape: the i-th convolution of the
graph is the i-th ``Conv2d`` PyTorch runs, and must have its weight's shape (a mismatch is reported, never guessed
around). Both exporters emit ops in trace order, and neither adds, drops or reorders convolutions.

Every layer's error is ``rel_rms = ||artifact - torch|| / ||torch||``. Its expected value comes from the same
independent executions that set parity's tolerances (:mod:`framegen.toolkit.tolerance`): fp16 emulation and float64,
each measured at that layer, so the error accumulated by earlier layers is part of what is expected. A layer is
outside when ``rel_rms > K[p] x independent_p + K[fp32] x fp64-noise``; the first such layer in execution order is
the divergence (an error propagates forward, so every later layer usually departs too).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from framegen.models.errors import FramegenError
from framegen.toolkit.tolerance import K, fp16_emulation

CONV, UPSAMPLE = "conv", "upsample"


class LocateError(FramegenError):
    """An artifact whose layers cannot be matched to the PyTorch module's."""


@dataclass
class LayerRow:
    """One layer: its module path, kind, error against PyTorch, the limit and where the limit came from."""

    layer: str
    kind: str
    artifact: str  # the artifact's tensor / op output compared
    rel_rms: float
    max_abs: float
    limit: float
    expected: float
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"layer": self.layer, "kind": self.kind, "artifact": self.artifact, "rel_rms": self.rel_rms,
                "max_abs": self.max_abs, "limit": self.limit, "expected": self.expected, "passed": self.passed}


@dataclass
class LocateResult:
    """The per-layer comparison of one artifact on one frame."""

    artifact: str
    format: str
    precision: str
    frame: int
    layers: list[LayerRow] = field(default_factory=list)
    error: str | None = None

    @property
    def first_divergence(self) -> dict[str, Any] | None:
        """``{layer, kind, metric, value, limit}`` of the first layer outside its expected error, or ``None``."""
        for row in self.layers:
            if not row.passed:
                return {"layer": row.layer, "kind": row.kind, "metric": "rel_rms", "value": row.rel_rms,
                        "limit": row.limit}
        return None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"artifact": self.artifact, "format": self.format, "precision": self.precision, "frame": self.frame,
                "error": self.error, "first_divergence": self.first_divergence,
                "layers": [r.as_dict() for r in self.layers]}


# ----------------------------------------------------------------------------------------------- torch side

@dataclass
class TorchLayer:
    name: str
    kind: str
    weight_shape: tuple[int, ...] | None


def torch_layers(model: Any, image: np.ndarray, audio: np.ndarray, dtype: Any = None
                  ) -> tuple[list[TorchLayer], list[np.ndarray]]:
    """Run ``model`` once with hooks: every Conv2d / Upsample call in execution order and its output (a conv's
    output after the BatchNorm it feeds, which the exporters fold into it)."""
    import torch
    from torch import nn

    names = {m: n for n, m in model.named_modules()}
    layers: list[TorchLayer] = []
    values: list[np.ndarray] = []
    last_conv: dict[str, Any] = {}

    def conv_hook(mod: Any, _inp: Any, out: Any) -> None:
        layers.append(TorchLayer(names[mod], CONV, tuple(mod.weight.shape)))
        values.append(out.detach().double().numpy().copy())
        last_conv["out"], last_conv["k"] = out, len(values) - 1

    def bn_hook(_mod: Any, inp: Any, out: Any) -> None:
        if last_conv.get("out") is inp[0]:  # this BatchNorm normalises that conv's output: folded into it
            values[last_conv["k"]] = out.detach().double().numpy().copy()
        last_conv.clear()

    def up_hook(mod: Any, _inp: Any, out: Any) -> None:
        layers.append(TorchLayer(names[mod], UPSAMPLE, None))
        values.append(out.detach().double().numpy().copy())

    handles = []
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
    finally:
        for h in handles:
            h.remove()
    return layers, values


# ----------------------------------------------------------------------------------------------- ONNX side

def onnx_layers(path: str | os.PathLike[str]) -> tuple[Any, list[tuple[str, str, tuple[int, ...] | None]]]:
    """The model and its layers in graph order: ``(kind, tensor compared, weight shape)``."""
    import onnx

    model = onnx.load(os.fspath(path))
    g = model.graph
    inits = {i.name: tuple(i.dims) for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out = []
    for n in g.node:
        if n.op_type == "Conv":
            src = n.input[1]
            while src not in inits and src in producers and producers[src].op_type in ("Cast", "Identity"):
                src = producers[src].input[0]
            tensor = n.output[0]
            nxt = consumers.get(tensor, [])
            if len(nxt) == 1 and nxt[0].op_type == "BatchNormalization":  # not folded by the exporter
                tensor = nxt[0].output[0]
            out.append((CONV, tensor, inits.get(src)))
        elif n.op_type == "Resize":
            out.append((UPSAMPLE, n.output[0], None))
    return model, out


def _run_onnx(model: Any, tensors: list[str], image: np.ndarray, audio: np.ndarray) -> dict[str, np.ndarray]:
    import onnx
    import onnxruntime as ort
    from framegen.models.contract import GEN_AUDIO, GEN_IMAGE

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inferred = onnx.shape_inference.infer_shapes(m)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}
    have = {o.name for o in m.graph.output}
    float16 = any(i.data_type == onnx.TensorProto.FLOAT16 for i in m.graph.initializer)
    for t in tensors:
        if t not in have:
            elem = types.get(t, onnx.TensorProto.FLOAT16 if float16 else onnx.TensorProto.FLOAT)
            m.graph.output.append(onnx.helper.make_tensor_value_info(t, elem, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = {}
    for inp in sess.get_inputs():
        arr = image if inp.name == GEN_IMAGE else audio if inp.name == GEN_AUDIO else None
        if arr is None:
            raise LocateError(f"ONNX input {inp.name!r} is neither {GEN_IMAGE!r} nor {GEN_AUDIO!r}")
        feeds[inp.name] = np.ascontiguousarray(arr[None])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds), strict=True))


# ----------------------------------------------------------------------------------------------- Core ML side

def mil_layers(program: Any) -> list[tuple[str, str, tuple[int, ...] | None]]:
    ops = program.ops
    consumers: dict[str, list[tuple[str, list[str]]]] = {}
    for op_type, _name, inputs, outputs in ops:
        for refs in inputs.values():
            for kind, ref in refs:
                if kind == "var":
                    consumers.setdefault(ref, []).append((op_type, outputs))
    out = []
    for op_type, _name, inputs, outputs in ops:
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
            out.append((CONV, tensor, weight))
        elif op_type in ("upsample_bilinear", "resize_bilinear"):
            out.append((UPSAMPLE, outputs[0], None))
    return out


def _run_mil(program: Any, tensors: list[str], image: np.ndarray, audio: np.ndarray) -> dict[str, np.ndarray]:
    from framegen.models.contract import GEN_AUDIO, GEN_IMAGE

    wanted = set(tensors)
    got: dict[str, np.ndarray] = {}

    def observe(name: str, value: Any) -> None:
        if name in wanted:
            got[name] = value.float().numpy().copy()

    program.run({GEN_IMAGE: image[None], GEN_AUDIO: audio[None]}, observe=observe)
    return got


# ----------------------------------------------------------------------------------------------- comparing

def _rel_rms(value: np.ndarray, ref: np.ndarray) -> float:
    denom = float(np.sqrt(np.mean(np.square(ref))))
    err = float(np.sqrt(np.mean(np.square(value.astype(np.float64) - ref))))
    if not math.isfinite(err):
        return math.inf
    return err / denom if denom > 0 else (0.0 if err == 0 else math.inf)


_REFERENCES: dict[tuple[str, str, str], tuple[Any, ...]] = {}


def torch_reference(checkpoint: str | os.PathLike[str], image: np.ndarray, audio: np.ndarray, precision: str,
                    mode: str | None = None) -> tuple[list[TorchLayer], list[np.ndarray], list[float], list[float]]:
    """PyTorch's side of a layer comparison: the layers, their fp32 values, the fp32 noise (float64 vs fp32) and
    the expected error of ``precision`` at every layer. Kept for the last few (checkpoint, inputs, precision), so
    locating several artifacts of one checkpoint on one frame runs PyTorch once."""
    import torch
    from framegen.models.checkpoint import load_generator, sha256_file
    from framegen.toolkit.parity_io import frame_digest

    key = (sha256_file(checkpoint), frame_digest(image, audio), precision)
    if key in _REFERENCES:
        return _REFERENCES[key]  # type: ignore[return-value]
    model = load_generator(checkpoint, mode).float().eval()
    layers, ref = torch_layers(model, image, audio)
    _, fp64 = torch_layers(model.double(), image, audio, dtype=torch.float64)
    model = model.float()
    noise32 = [_rel_rms(v, r) for v, r in zip(fp64, ref, strict=True)]
    if precision == "fp16":
        _, emu = torch_layers(fp16_emulation(model), image.astype(np.float16).astype(np.float32),
                              audio.astype(np.float16).astype(np.float32))
        expected = [_rel_rms(v, r) for v, r in zip(emu, ref, strict=True)]
    else:
        expected = noise32
    if len(_REFERENCES) >= 4:
        _REFERENCES.pop(next(iter(_REFERENCES)))
    _REFERENCES[key] = (layers, ref, noise32, expected)
    return layers, ref, noise32, expected


def locate_artifact(checkpoint: str | os.PathLike[str], artifact: str | os.PathLike[str], fmt: str, precision: str,
                    image: np.ndarray, audio: np.ndarray, *, mode: str | None = None, frame: int = 0) -> LocateResult:
    """Compare every layer of the generator ``artifact`` (``fmt`` ``onnx`` or ``coreml``, tensor I/O) with the
    PyTorch module of ``checkpoint`` on one frame's inputs (``image`` float32 (6, 320, 320), ``audio`` the window).

    Never raises for an artifact that cannot be matched: the result's ``error`` says why.
    """
    result = LocateResult(os.fspath(artifact), fmt, precision, frame)
    layers, ref, noise32, expected = torch_reference(checkpoint, image, audio, precision, mode)
    try:
        if fmt == "onnx":
            onnx_model, art_layers = onnx_layers(artifact)
            runner = lambda names: _run_onnx(onnx_model, names, image, audio)  # noqa: E731
        elif fmt == "coreml":
            from framegen.runtimes.coreml_mil import MilProgram

            program = MilProgram(artifact)
            art_layers = mil_layers(program)
            runner = lambda names: _run_mil(program, names, image, audio)  # noqa: E731
        else:
            raise LocateError(f"locate compares ONNX and Core ML artifacts, not {fmt!r}")
        if [k for k, _, _ in art_layers] != [t.kind for t in layers]:
            raise LocateError(f"{artifact}: {len(art_layers)} convolution/upsample layers in the artifact, "
                              f"{len(layers)} in the PyTorch module (or in another order)")
        for t, (_, tensor, shape) in zip(layers, art_layers, strict=True):
            if t.kind == CONV and shape is not None and tuple(shape) != t.weight_shape:
                raise LocateError(f"{artifact}: convolution {tensor!r} has weight shape {list(shape)} where "
                                  f"{t.name} has {list(t.weight_shape or ())}")
        values = runner([tensor for _, tensor, _ in art_layers])
    except FramegenError as exc:
        result.error = str(exc)
        return result
    except Exception as exc:  # a runtime's own exception: the report says it, parity goes on
        result.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        return result
    k, k32 = K[precision], K["fp32"]
    for t, (_, tensor, _), r, exp, n32 in zip(layers, art_layers, ref, expected, noise32, strict=True):
        v = values.get(tensor)
        if v is None or v.shape != r.shape:
            result.error = f"{artifact}: no value of shape {list(r.shape)} for {tensor!r} ({t.name})"
            return result
        rel = _rel_rms(v, r)
        limit = k * exp + k32 * n32 if precision == "fp16" else k32 * n32
        limit = max(limit, 1e-7)  # float32 resolution: layers computed exactly in both still round differently
        result.layers.append(LayerRow(t.name, t.kind, tensor, rel, float(np.max(np.abs(v - r))), limit, exp,
                                      rel <= limit))
    return result


def print_locate(result: LocateResult, label: str, context: int = 3) -> None:
    """The per-layer table around the first divergence (all layers are in ``--json``)."""
    from framegen.toolkit.console import out
    from framegen.toolkit.metrics import cell, wide_console
    from rich import box
    from rich.table import Table

    if result.error:
        out.print(f"[yellow]locate {label}[/yellow]: {result.error}", soft_wrap=True)
        return
    first = next((i for i, r in enumerate(result.layers) if not r.passed), None)
    keep = set(range(min(context, len(result.layers))))
    if first is not None:
        keep |= set(range(max(0, first - context), min(len(result.layers), first + context + 1)))
    else:
        keep |= set(range(max(0, len(result.layers) - context), len(result.layers)))
    table = Table(title=f"locate {label}: every layer of {os.path.basename(result.artifact)} against PyTorch "
                        f"(frame {result.frame}; {len(result.layers)} layers, {len(keep)} shown)",
                  title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    for col in ("#", "layer", "kind", "rel rms", "expected", "limit", "max |Δ|", "result"):
        table.add_column(col, justify="left" if col in ("layer", "kind", "result") else "right", no_wrap=True)
    prev = -1
    for i, r in enumerate(result.layers):
        if i not in keep:
            continue
        if i != prev + 1:
            table.add_row("…", "", "", "", "", "", "", "")
        prev = i
        mark = "[green]ok[/green]" if r.passed else "[red]OUT[/red]" + (" [red bold]<- first[/red bold]"
                                                                         if i == first else "")
        table.add_row(str(i), r.layer, r.kind, cell(r.rel_rms), cell(r.expected), cell(r.limit), cell(r.max_abs),
                      mark)
    wide_console().print(table)
    fd = result.first_divergence
    if fd is not None:
        out.print(f"[red]first divergence[/red] {label}: {fd['layer']} ({fd['kind']}): rel_rms {cell(fd['value'])} "
                  f"> {cell(fd['limit'])}", soft_wrap=True)
    else:
        out.print(f"locate {label}: every layer within its expected error", soft_wrap=True)
