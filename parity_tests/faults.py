"""Deliberately broken generators for the parity tests and the measurement scripts (not shipped in framegen).

Every drift edits one convolution's weight (and bias) inside the exported artifacts themselves, ONNX initializers or
the Core ML package's weight blob, with the manifest's sha256 updated so that only the numbers can tell. Layers are
named by their module path in the checkpoint and found in an artifact by execution order (the i-th convolution of a
graph is the i-th ``Conv2d`` PyTorch runs: :mod:`framegen.toolkit.parity.layers`'s matching), so the same drift
applies to
ONNX fp32/fp16, Core ML fp32/fp16 and the image-I/O variants alike.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Edit = Callable[[np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray | None]]


def scale(factor: float) -> Edit:
    """Weight and bias times ``factor``."""
    return lambda w, b: (w * factor, None if b is None else b * factor)


def zero_weight(w: np.ndarray, b: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """A convolution that sees nothing: on the audio branch's first (bias-free) conv, the same as feeding zeros."""
    return np.zeros_like(w), b


def swap_channels(w: np.ndarray, b: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Output channels 0 and 2 exchanged (on the output conv: RGB for BGR)."""
    return w[[2, 1, 0, *range(3, w.shape[0])]], None if b is None else b[[2, 1, 0, *range(3, b.shape[0])]]


# The drifts every artifact kind must be caught with (issue 14): layer, edit.
MID_LAYER = "up1.conv.double_conv.0.conv.6"
DRIFTS: dict[str, tuple[str, Edit]] = {
    "outc x1.01": ("outc.conv", scale(1.01)),
    "mid conv x1.02": (MID_LAYER, scale(1.02)),
    "audio ignored": ("audio_model.conv1.conv.0", zero_weight),
    "colour swap": ("outc.conv", swap_channels),
}


def conv_index(checkpoint_or_model: Any, layer: str, mode: str | None = None) -> int:
    """Position of the ``Conv2d`` at module path ``layer`` in PyTorch's execution order."""
    from framegen.models.checkpoint import load_generator
    from framegen.models.contract import audio_shape
    from framegen.toolkit.parity.layers import CONV, torch_layers

    model = checkpoint_or_model if hasattr(checkpoint_or_model, "forward") else \
        load_generator(checkpoint_or_model, mode)
    image = np.zeros((6, 320, 320), np.float32)
    audio = np.zeros(audio_shape(model.mode), np.float32)
    layers, _ = torch_layers(model, image, audio)
    convs = [t.name for t in layers if t.kind == CONV]
    if layer not in convs:
        raise KeyError(f"{layer!r} is not a Conv2d of the generator")
    return convs.index(layer)


# --------------------------------------------------------------------------------------------------- ONNX

def edit_onnx_conv(path: str | os.PathLike[str], index: int, edit: Edit) -> str:
    """Apply ``edit`` to the ``index``-th Conv's weight and bias initializers, in place; returns the node name."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(os.fspath(path))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    node = [n for n in g.node if n.op_type == "Conv"][index]

    def init(name: str) -> Any:
        while name not in inits and name in producers and producers[name].op_type in ("Cast", "Identity"):
            name = producers[name].input[0]
        return inits[name]

    w_init = init(node.input[1])
    b_init = init(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    w = numpy_helper.to_array(w_init)
    b = numpy_helper.to_array(b_init) if b_init is not None else None
    nw, nb = edit(w.astype(np.float64), None if b is None else b.astype(np.float64))
    w_init.CopyFrom(numpy_helper.from_array(np.asarray(nw).astype(w.dtype), w_init.name))
    if b_init is not None and nb is not None:
        b_init.CopyFrom(numpy_helper.from_array(np.asarray(nb).astype(b.dtype), b_init.name))
    tmp = Path(f"{path}.tmp")
    onnx.save(model, os.fspath(tmp))
    os.replace(tmp, path)
    return node.name


# --------------------------------------------------------------------------------------------------- Core ML

_BLOB_DTYPES = {1: np.float16, 2: np.float32}


def edit_mil_conv(package: str | os.PathLike[str], index: int, edit: Edit) -> str:
    """Apply ``edit`` to the ``index``-th conv op's weight and bias constants of an .mlpackage, in place (weights in
    the blob file rewritten at their offsets; inline constants in the program itself); returns the op's name."""
    from framegen.models.imports import coremltools

    coremltools()
    from coremltools.proto import Model_pb2

    spec_path = Path(package) / "Data" / "com.apple.CoreML" / "model.mlmodel"
    manifest = Path(package) / "Manifest.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        spec_path = Path(package) / "Data" / data["itemInfoEntries"][data["rootModelIdentifier"]]["path"]
    spec = Model_pb2.Model()
    spec.ParseFromString(spec_path.read_bytes())
    fn = spec.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    consts = {op.outputs[0].name: op for op in block.operations if op.type == "const"}
    convs = [op for op in block.operations if op.type == "conv"]
    op = convs[index]

    def const_of(param: str) -> Any:
        if param not in op.inputs or not op.inputs[param].arguments:
            return None
        arg = op.inputs[param].arguments[0]
        return consts.get(arg.name) if arg.WhichOneof("binding") == "name" else None

    weights = spec_path.parent / "weights" / "weight.bin"
    buf = bytearray(weights.read_bytes())
    proto_changed = False

    def read(c: Any) -> tuple[np.ndarray, Callable[[np.ndarray], None]]:
        nonlocal proto_changed
        val = c.attributes["val"]
        shape = tuple(d.constant.size for d in val.type.tensorType.dimensions)
        if val.WhichOneof("value") == "blobFileValue":
            offset = int(val.blobFileValue.offset)
            _sentinel, code, size, data = struct.unpack_from("<IIQQ", buf, offset)
            dtype = _BLOB_DTYPES[code]
            arr = np.frombuffer(bytes(buf[data:data + size]), dtype=dtype).reshape(shape)

            def write(new: np.ndarray) -> None:
                buf[data:data + size] = np.ascontiguousarray(new, dtype=dtype).tobytes()
            return arr, write
        tv = val.immediateValue.tensor
        field = tv.WhichOneof("value")
        if field == "bytes":
            dtype = np.float16 if val.type.tensorType.dataType == 10 else np.float32
            arr = np.frombuffer(tv.bytes.values, dtype=dtype).reshape(shape)

            def write(new: np.ndarray) -> None:
                nonlocal proto_changed
                tv.bytes.values = np.ascontiguousarray(new, dtype=dtype).tobytes()
                proto_changed = True
            return arr, write
        arr = np.asarray(list(tv.floats.values), dtype=np.float32).reshape(shape)

        def write(new: np.ndarray) -> None:
            nonlocal proto_changed
            del tv.floats.values[:]
            tv.floats.values.extend(np.asarray(new, dtype=np.float32).ravel().tolist())
            proto_changed = True
        return arr, write

    wc, bc = const_of("weight"), const_of("bias")
    w, write_w = read(wc)
    b, write_b = read(bc) if bc is not None else (None, None)
    nw, nb = edit(w.astype(np.float64), None if b is None else b.astype(np.float64))
    write_w(np.asarray(nw))
    if write_b is not None and nb is not None:
        write_b(np.asarray(nb))
    weights.write_bytes(bytes(buf))
    if proto_changed:
        spec_path.write_bytes(spec.SerializeToString())
    name = op.attributes["name"].immediateValue.tensor.strings.values[0] if "name" in op.attributes else "?"
    return name


# --------------------------------------------------------------------------------------------------- bundles

def drifted_bundle(bundle: str | os.PathLike[str], out: str | os.PathLike[str], layer: str, edit: Edit,
                   checkpoint: str | os.PathLike[str], *, formats: tuple[str, ...] = ("onnx", "coreml"),
                   select: Callable[[Any], bool] | None = None) -> Path:
    """A copy of ``bundle`` at ``out`` whose generator artifacts (of ``formats``, those ``select(artifact)`` keeps)
    have ``edit`` applied to the convolution ``layer``, manifest sha256 updated."""
    from framegen.models.bundle import MANIFEST, load_bundle, sha256_path

    src = load_bundle(bundle)
    dst = Path(out)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src.root, dst)
    index = conv_index(checkpoint, layer, src.mode)
    manifest = json.loads((dst / MANIFEST).read_text())
    for art in load_bundle(dst).artifacts:
        if art.model != "generator" or art.format not in formats or (select is not None and not select(art)):
            continue
        (edit_onnx_conv if art.format == "onnx" else edit_mil_conv)(art.path, index, edit)
        rel = art.path.relative_to(dst).as_posix()
        for entry in manifest["artifacts"]:
            if entry["path"] == rel:
                entry["sha256"] = sha256_path(art.path)
    (dst / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return dst


def broken_bundle(bundle: str | os.PathLike[str], out: str | os.PathLike[str], factor: float,
                  precision: str = "fp32") -> Path:
    """A copy of ``bundle`` whose ONNX ``precision`` generator has its output convolution scaled by ``factor``."""
    from framegen.models.bundle import MANIFEST, load_bundle, sha256_path

    src = load_bundle(bundle)
    dst = Path(out)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src.root, dst)
    art = load_bundle(dst).find("generator", "onnx", precision)
    scale_onnx_output_conv(art.path, factor)
    manifest = json.loads((dst / MANIFEST).read_text())
    rel = art.path.relative_to(dst).as_posix()
    for entry in manifest["artifacts"]:
        if entry["path"] == rel:
            entry["sha256"] = sha256_path(art.path)
    (dst / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return dst


def output_conv_initializers(model: Any) -> list[Any]:
    """The ONNX initializers of the generator's output convolution (the Conv feeding the final Sigmoid)."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    sig = next((n for n in reversed(graph.node) if n.op_type == "Sigmoid"), None)
    node = producers.get(sig.input[0]) if sig is not None else None
    while node is not None and node.op_type == "Cast":
        node = producers.get(node.input[0])
    if node is None or node.op_type != "Conv":
        raise ValueError("no Conv feeding the final Sigmoid: not a SyncTalk_2D generator graph")
    found = []
    for name in node.input[1:]:
        src = name
        while src not in inits and src in producers and producers[src].op_type in ("Cast", "Identity"):
            src = producers[src].input[0]
        found.append(inits[src])
    return found


def scale_onnx_output_conv(path: str | os.PathLike[str], factor: float) -> list[str]:
    """Multiply the output convolution's weight and bias of an ONNX generator by ``factor``, in place."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(os.fspath(path))
    names = []
    for init in output_conv_initializers(model):
        arr = numpy_helper.to_array(init)
        init.CopyFrom(numpy_helper.from_array((arr.astype(np.float64) * factor).astype(arr.dtype), init.name))
        names.append(init.name)
    tmp = Path(f"{path}.tmp")
    onnx.save(model, os.fspath(tmp))
    os.replace(tmp, path)
    return names
