"""ONNX export of the generator and the audio encoder: contract names, dynamic batch, fp32 or fp16 weights.

The exporter (TorchScript ``dynamo=False`` or ``torch.export``-based ``dynamo=True``) and the opset were chosen by
measurement with ``python scripts/measure_exporters.py`` (figures in :data:`EXPORT_CHOICE`, copied into every manifest).
An fp16 artifact is the fp32 graph with its float weights stored as float16 and casts at the edges, so callers feed
and read float32 exactly as with fp32 (see :func:`to_float16`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from framegen.exporters.errors import ExportError
from framegen.models.atomic import atomic_output
from framegen.models.contract import (
    ENC_INPUT,
    ENC_MEL_WINDOW,
    ENC_OUTPUT,
    GEN_AUDIO,
    GEN_IMAGE,
    GEN_OUTPUT,
    INNER_SIZE,
    MEL,
    audio_shape,
)
from framegen.models.metadata import artifact_metadata

EXPORTERS = ("torchscript", "dynamo")
DEFAULT_EXPORTER = "torchscript"
DEFAULT_OPSET = 13
BATCH_DIM = "batch"

# What `python scripts/measure_exporters.py` printed when the choice was made (calibrated seeded ave generator,
# batch 3;
# ORT CPU batch-1 median of 7 interleaved rounds on 2 shared CPU cores under load 6-11; CUDA not available on that
# machine, so GPU speed was not measured). Every candidate is equally correct (the two exporters emit the same ops;
# the differences are fp32 rounding) and reproducible; all but torchscript/20 are within the 5 % noise floor of the
# fastest (torchscript at opsets 13/17/20 emits the same graph, so their spread is pure noise); the lowest opset
# wins the tie because more runtimes load it.
EXPORT_CHOICE: dict[str, Any] = {
    "exporter": DEFAULT_EXPORTER,
    "opset": DEFAULT_OPSET,
    "chosen_by": "python scripts/measure_exporters.py",
    "rule": "fp32 error within tolerance and byte-reproducible; ORT CPU batch-1 median within the noise floor of the "
            "fastest; then lowest opset; then fastest export",
    "cuda": "not measured (no GPU on the measuring machine)",
    "noise_floor": 0.05,
    "measured": [
        # exporter, opset, generator fp32 max/mean abs err, fp16 max/mean, encoder fp32 max, CPU ms fp32/fp16, export s
        {"exporter": e, "opset": o, "max_err_fp32": a, "mean_err_fp32": b, "max_err_fp16": c, "mean_err_fp16": d,
         "max_err_encoder_fp32": f, "ms_b1_cpu_fp32": g, "ms_b1_cpu_fp16": h, "export_s": x, "reproducible": True}
        for e, o, a, b, c, d, f, g, h, x in (
            ("torchscript", 13, 2.84e-05, 1.1e-06, 0.0185, 0.00181, 8.1e-06, 734.9, 749.5, 13.5),
            ("torchscript", 17, 2.84e-05, 1.1e-06, 0.0185, 0.00181, 8.1e-06, 735.2, 767.4, 11.9),
            ("torchscript", 20, 2.84e-05, 1.1e-06, 0.0185, 0.00181, 8.1e-06, 761.7, 708.0, 11.9),
            ("dynamo", 18, 2.99e-05, 1.1e-06, 0.0185, 0.00181, 9.1e-06, 723.7, 1149.5, 25.1),
            ("dynamo", 20, 2.99e-05, 1.1e-06, 0.0185, 0.00181, 9.1e-06, 731.5, 729.0, 25.6),
            ("dynamo", 23, 2.99e-05, 1.1e-06, 0.0185, 0.00181, 9.1e-06, 711.2, 716.8, 23.6),
        )
    ],
}


@contextlib.contextmanager
def _quiet_torch_onnx() -> Iterator[None]:
    """Silence the exporters' deprecation warnings, progress prints and torchvision notices."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def torch_to_onnx(module: Any, args: tuple[Any, ...], input_names: Sequence[str], output_names: Sequence[str],
                  exporter: str = DEFAULT_EXPORTER, opset: int = DEFAULT_OPSET) -> Any:
    """Export ``module(*args)`` to an in-memory ``onnx.ModelProto`` with a dynamic first (batch) axis named
    ``batch`` on every input and output. ``args`` must have a batch of at least 2 (torch.export specialises 1)."""
    import onnx
    import torch

    if exporter not in EXPORTERS:
        raise ExportError(f"unknown ONNX exporter {exporter!r}; expected one of {', '.join(EXPORTERS)}")
    module = module.eval()
    with _quiet_torch_onnx(), torch.no_grad():
        if exporter == "torchscript":
            buf = io.BytesIO()
            axes = {n: {0: BATCH_DIM} for n in (*input_names, *output_names)}
            torch.onnx.export(module, args, buf, dynamo=False, input_names=list(input_names),
                              output_names=list(output_names), dynamic_axes=axes, opset_version=opset,
                              do_constant_folding=True)
            model = onnx.load_from_string(buf.getvalue())
        else:
            batch = torch.export.Dim(BATCH_DIM, min=1, max=4096)
            program = torch.onnx.export(module, args, dynamo=True, input_names=list(input_names),
                                        output_names=list(output_names),
                                        dynamic_shapes=tuple({0: batch} for _ in args), opset_version=opset,
                                        optimize=True, verbose=False)
            model = program.model_proto
    _strip_exporter_noise(model)
    return model


def _strip_exporter_noise(model: Any) -> None:
    """Drop per-node debug metadata (the dynamo exporter stores stack traces with absolute source paths there),
    which would make the file depend on where the repository is checked out."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for vi in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        del vi.metadata_props[:]
    del model.graph.metadata_props[:]
    model.doc_string = ""


# Float inputs that ONNX requires to stay float32 whatever the model's precision: Resize's roi and scales.
_KEEP_FP32_INPUTS = {"Resize": (1, 2)}
# Ops this converter knows to be precision-agnostic (their float inputs and outputs share one type T).
_FP16_SAFE_OPS = {"Conv", "Relu", "Add", "Sub", "Mul", "Div", "Concat", "Resize", "Sigmoid", "Constant", "Flatten",
                  "Reshape", "Identity", "Squeeze", "Unsqueeze", "Shape", "Gather", "Slice", "Pad", "Transpose",
                  "Max", "Min", "Clip", "Cast"}
_FP16_MAX = 65504.0


def to_float16(model: Any) -> Any:
    """The same graph computing in float16, with float32 inputs and outputs (a Cast after each input and before
    each output), every float32 weight stored as float16 and internal float32 Casts retargeted to float16.

    Refuses (``ExportError``) a graph with an op it does not know to be precision-agnostic or a weight beyond
    float16's range, rather than produce a model that silently computes something else.
    """
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    unknown = sorted({n.op_type for n in g.node if n.op_type not in _FP16_SAFE_OPS})
    if unknown:
        raise ExportError(f"fp16 conversion does not know op(s) {', '.join(unknown)}; export fp32 only")
    keep32 = {n.input[i] for n in g.node for i in _KEEP_FP32_INPUTS.get(n.op_type, ())
              if i < len(n.input) and n.input[i]}
    _halve_weights(g, keep32)
    head = _cast_inputs(g)
    tail = _cast_outputs(g)
    nodes = [*head, *g.node, *tail]
    del g.node[:]
    g.node.extend(nodes)
    # Intermediate type annotations described the float32 graph; ORT and onnx re-infer them.
    del g.value_info[:]
    onnx.checker.check_model(m)
    return m


def _half(arr: Any, name: str) -> Any:
    import numpy as np

    big = float(np.abs(arr).max()) if arr.size else 0.0
    if big > _FP16_MAX:
        raise ExportError(f"weight {name!r} reaches {big:.4g}, beyond float16's ±65504; export fp32 only")
    return arr.astype(np.float16)


def _halve_weights(g: Any, keep32: set[str]) -> None:
    """Initializers and Constants to float16, and float32 Casts retargeted, except what must stay float32."""
    from onnx import TensorProto, numpy_helper

    for i, init in enumerate(g.initializer):
        if init.data_type == TensorProto.FLOAT and init.name not in keep32:
            g.initializer[i].CopyFrom(numpy_helper.from_array(_half(numpy_helper.to_array(init), init.name),
                                                               init.name))
    for n in g.node:
        if n.op_type == "Constant" and n.output[0] not in keep32:
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(_half(numpy_helper.to_array(a.t), n.output[0]), a.t.name))
        if n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and a.i == TensorProto.FLOAT and n.output[0] not in keep32:
                    a.i = TensorProto.FLOAT16


def _cast_inputs(g: Any) -> list[Any]:
    """A Cast to float16 after each float32 input, every consumer rewired to it; returns the Casts."""
    from onnx import TensorProto, helper

    renames: dict[str, str] = {}
    head = []
    for vi in g.input:
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            renames[vi.name] = f"{vi.name}_fp16"
            head.append(helper.make_node("Cast", [vi.name], [renames[vi.name]], name=f"cast_{vi.name}_to_fp16",
                                         to=TensorProto.FLOAT16))
    for n in g.node:
        for i, name in enumerate(n.input):
            if name in renames:
                n.input[i] = renames[name]
    return head


def _cast_outputs(g: Any) -> list[Any]:
    """Each float32 output computed under an inner name and Cast back to float32; returns the Casts."""
    from onnx import TensorProto, helper

    tail = []
    for vo in g.output:
        if vo.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        inner = f"{vo.name}_fp16"
        for n in g.node:
            for i, name in enumerate(n.output):
                if name == vo.name:
                    n.output[i] = inner
            for i, name in enumerate(n.input):
                if name == vo.name:
                    n.input[i] = inner
        tail.append(helper.make_node("Cast", [inner], [vo.name], name=f"cast_{vo.name}_to_fp32",
                                     to=TensorProto.FLOAT))
    return tail


def set_metadata(model: Any, metadata: dict[str, str]) -> None:
    """Replace the model's ``metadata_props`` with ``metadata`` (in key order, so the bytes are reproducible)."""
    del model.metadata_props[:]
    for key in sorted(metadata):
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = metadata[key]


def save_onnx(model: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` to ``path`` through a temporary sibling (never a half-written file under the final name)."""
    import onnx

    with atomic_output(path) as tmp:
        onnx.save(model, os.fspath(tmp))
    return Path(path)


def _check_precision(precision: str) -> None:
    if precision not in ("fp32", "fp16"):
        raise ExportError(f"unknown precision {precision!r}; expected fp32 or fp16")


def generator_example(mode: str, batch: int = 2) -> tuple[Any, Any]:
    """Zero tensors shaped like the generator's inputs (only their shapes matter to the exporters)."""
    import torch

    return torch.zeros(batch, 6, INNER_SIZE, INNER_SIZE), torch.zeros(batch, *audio_shape(mode))


def encoder_example(batch: int = 2) -> tuple[Any]:
    """A zero tensor shaped like the audio encoder's mel-window input."""
    import torch

    return (torch.zeros(batch, 1, MEL["n_mels"], ENC_MEL_WINDOW),)


def generator_onnx_model(model: Any, precision: str = "fp32", opset: int | None = None,
                         exporter: str | None = None) -> Any:
    """The generator as an in-memory ``onnx.ModelProto`` (inputs ``image``, ``audio``; output ``output``)."""
    _check_precision(precision)
    proto = torch_to_onnx(model, generator_example(model.mode), (GEN_IMAGE, GEN_AUDIO), (GEN_OUTPUT,),
                          exporter or DEFAULT_EXPORTER, opset or DEFAULT_OPSET)
    return to_float16(proto) if precision == "fp16" else proto


def encoder_onnx_model(model: Any, precision: str = "fp32", opset: int | None = None,
                       exporter: str | None = None) -> Any:
    """The audio encoder as an in-memory ``onnx.ModelProto`` (input ``mel``; output ``embedding``)."""
    _check_precision(precision)
    proto = torch_to_onnx(model, encoder_example(), (ENC_INPUT,), (ENC_OUTPUT,), exporter or DEFAULT_EXPORTER,
                          opset or DEFAULT_OPSET)
    return to_float16(proto) if precision == "fp16" else proto


def _default_metadata(kind: str, mode: str, precision: str, metadata: dict[str, str] | None) -> dict[str, str]:
    return metadata if metadata is not None else artifact_metadata(kind, mode, precision)


def export_generator_onnx(model: Any, path: str | os.PathLike[str], precision: str = "fp32",
                          opset: int | None = None, *, metadata: dict[str, str] | None = None,
                          exporter: str | None = None) -> Path:
    """Export a generator module to ``path`` (.onnx) with the contract's names, a dynamic batch axis, float32 I/O
    and ``metadata`` (default: :func:`framegen.models.metadata.artifact_metadata` without a source sha256).

    Not validated here; :func:`framegen.toolkit.export.bundle.export_bundle` validates what it writes.
    """
    proto = generator_onnx_model(model, precision, opset, exporter)
    set_metadata(proto, _default_metadata("generator", model.mode, precision, metadata))
    return save_onnx(proto, path)


def export_encoder_onnx(model: Any, path: str | os.PathLike[str], precision: str = "fp32",
                        opset: int | None = None, *, metadata: dict[str, str] | None = None,
                        exporter: str | None = None) -> Path:
    """Export the audio encoder to ``path`` (.onnx): ``mel`` [batch, 1, 80, 16] -> ``embedding`` [batch, 512]."""
    proto = encoder_onnx_model(model, precision, opset, exporter)
    set_metadata(proto, _default_metadata("audio_encoder", "ave", precision, metadata))
    return save_onnx(proto, path)
