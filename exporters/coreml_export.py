"""Core ML export: ML programs (.mlpackage) of the generator and the audio encoder, converted on Linux.

The route is ``torch.export.export(...).run_decompositions({})`` -> ``coremltools.convert`` (the TorchScript trace
route fails on the U-Net). Inputs and outputs keep the contract's names and float32 type in both compute
precisions; the batch axis is flexible (``RangeDim(1, MAX_BATCH)``). The package is made reproducible: the
conversion date is dropped from the metadata and the package manifest's random item identifiers are replaced by
identifiers derived from the item paths.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from framegen.exporters.errors import ExportError
from framegen.exporters.onnx_export import encoder_example, generator_example
from framegen.models.atomic import atomic_output
from framegen.models.contract import contract_dict
from framegen.models.imports import coremltools, quiet
from framegen.models.metadata import artifact_metadata
from framegen.models.version import __version__

MINIMUM_DEPLOYMENT_TARGET = "iOS16"  # macOS 13; the ML program opset the coreml-mil verifier implements
MAX_BATCH = 64
_DROPPED_METADATA = ("com.github.apple.coremltools.conversion_date",)
_PRECISIONS = ("fp32", "fp16")


def exported_program(model: Any, kind: str) -> Any:
    """``torch.export`` of a generator (``kind='generator'``) or audio encoder with a dynamic batch axis, decomposed
    to core ATen ops: the input of :func:`convert`. Reuse it for both precisions; exporting is the slow part."""
    import torch

    args = generator_example(model.mode) if kind == "generator" else encoder_example()
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with quiet("coremltools"), torch.no_grad():
        ep = torch.export.export(model.eval(), args, dynamic_shapes=tuple({0: batch} for _ in args))
        return ep.run_decompositions({})


def _io_spec(kind: str, mode: str) -> tuple[list[tuple[str, tuple[int, ...], str]], list[tuple[str, str]]]:
    c = contract_dict(mode)[kind]
    ins = []
    for name, info in c["inputs"].items():
        shape = info["shape"][mode] if isinstance(info["shape"], dict) else info["shape"]
        ins.append((name, tuple(int(d) for d in shape[1:]), info.get("meaning", "")))
    outs = [(name, info.get("meaning", "")) for name, info in c["outputs"].items()]
    return ins, outs


def convert(program: Any, kind: str, mode: str, path: str | os.PathLike[str], precision: str = "fp16",
            metadata: dict[str, str] | None = None) -> Path:
    """Convert an exported program (:func:`exported_program`) to an ML program package at ``path``.

    ``precision`` is the compute precision (fp16: Core ML's default; fp32). Written to a temporary sibling and
    renamed, so ``path`` never holds a half-written package.
    """
    import numpy as np

    if precision not in _PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; expected fp32 or fp16")
    ct = coremltools()
    ins, outs = _io_spec(kind, mode)
    batch = ct.RangeDim(lower_bound=1, upper_bound=MAX_BATCH, default=1, symbol="batch")
    with quiet("coremltools"):
        ml = ct.convert(
            program,
            inputs=[ct.TensorType(name=n, shape=(batch, *tail), dtype=np.float32) for n, tail, _ in ins],
            outputs=[ct.TensorType(name=n, dtype=np.float32) for n, _ in outs],
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
            minimum_deployment_target=getattr(ct.target, MINIMUM_DEPLOYMENT_TARGET),
            skip_model_load=True,
        )
    got_in = [i.name for i in ml.get_spec().description.input]
    got_out = [o.name for o in ml.get_spec().description.output]
    if got_in != [n for n, _, _ in ins] or got_out != [n for n, _ in outs]:
        raise ExportError(f"{path}: Core ML conversion named the tensors {got_in} -> {got_out}, not the contract's")
    meta = metadata if metadata is not None else artifact_metadata(kind, mode, precision)
    for key in _DROPPED_METADATA:
        if key in ml.user_defined_metadata:
            del ml.user_defined_metadata[key]
    for key in sorted(meta):
        ml.user_defined_metadata[key] = meta[key]
    ml.author = "framegen"
    ml.version = __version__
    ml.short_description = ("SyncTalk_2D generator (image + audio window -> mouth crop)" if kind == "generator"
                            else "SyncTalk_2D 'ave' audio encoder (mel window -> 512-d embedding)")
    for name, _, meaning in ins:
        ml.input_description[name] = meaning
    for name, meaning in outs:
        ml.output_description[name] = meaning

    return save_package(ml, path)


def save_package(ml: Any, path: str | os.PathLike[str]) -> Path:
    """Save an MLModel as a reproducible .mlpackage: under a temporary name, normalised, then renamed into place."""
    with atomic_output(path, suffix=".mlpackage") as tmp:  # coremltools insists on the suffix
        with quiet("coremltools"):
            ml.save(os.fspath(tmp))
        normalise_package(tmp)
    return Path(path)


def normalise_package(package: str | os.PathLike[str]) -> None:
    """Make an .mlpackage's bytes a function of its content: replace the random item identifiers of its
    ``Manifest.json`` by ones derived from the item paths (uuid5), and re-serialise the model specification with
    protobuf's deterministic serialisation (map entries are otherwise written in an order that depends on the
    process's string hashing)."""
    manifest_path = Path(package) / "Manifest.json"
    data = json.loads(manifest_path.read_text())
    entries = data.get("itemInfoEntries", {})
    ids = {old: str(uuid.uuid5(uuid.NAMESPACE_URL, "framegen:" + entry["path"])).upper()
           for old, entry in entries.items()}
    root_entry = entries[data["rootModelIdentifier"]]
    data["itemInfoEntries"] = {ids[old]: entry for old, entry in sorted(entries.items(), key=lambda kv: ids[kv[0]])}
    data["rootModelIdentifier"] = ids[data["rootModelIdentifier"]]
    manifest_path.write_text(json.dumps(data, indent=4) + "\n")

    coremltools()
    from coremltools.proto import Model_pb2

    spec_path = Path(package) / "Data" / root_entry["path"]
    spec = Model_pb2.Model()
    spec.ParseFromString(spec_path.read_bytes())
    spec_path.write_bytes(spec.SerializeToString(deterministic=True))


def export_generator_coreml(model: Any, path: str | os.PathLike[str], precision: str = "fp16", *,
                            metadata: dict[str, str] | None = None, program: Any = None) -> Path:
    """Export a generator to an .mlpackage (``image``, ``audio`` -> ``output``) at ``path``.

    ``program``: a ready :func:`exported_program` of the same module (saves the slow export when converting both
    precisions). Not validated here; :func:`framegen.toolkit.export.bundle.export_bundle` validates what it writes.
    """
    prog = program if program is not None else exported_program(model, "generator")
    return convert(prog, "generator", model.mode, path, precision, metadata)


def export_encoder_coreml(model: Any, path: str | os.PathLike[str], precision: str = "fp16", *,
                          metadata: dict[str, str] | None = None, program: Any = None) -> Path:
    """Export the audio encoder to an .mlpackage (``mel`` -> ``embedding``) at ``path``."""
    prog = program if program is not None else exported_program(model, "audio_encoder")
    return convert(prog, "audio_encoder", "ave", path, precision, metadata)
