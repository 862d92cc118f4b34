"""``export_bundle``: checkpoint(s) -> a validated bundle directory (artifacts + ``manifest.json``).

Order of work, so that a failure never leaves something that looks like a bundle:
1. read and check the checkpoint(s) and options (nothing is written before they pass);
2. build every artifact in a temporary sibling directory, validating each one as soon as it exists;
3. write ``manifest.json`` last and rename the directory to its final name.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from framegen.exporters import onnx_export
from framegen.exporters.errors import ExportError, ExportValidationError
from framegen.exporters.registry import EXPORTERS, get_exporter
from framegen.exporters.triton import precheck, write_repository
from framegen.models.atomic import AtomicOutput
from framegen.models.bundle import MANIFEST, sha256_path
from framegen.models.metadata import artifact_metadata, contract_json
from framegen.models.version import __version__
from framegen.toolkit.export.compress import (
    COMPRESSED,
    COMPUTED,
    CompressOptions,
    check_computable,
    export_compressed,
    judge_compute,
    release,
    split_precisions,
)
from framegen.toolkit.export.validate import Reference, reference, tensor_record, validate_artifact
from framegen.toolkit.export.validate_image import export_image_entries

FORMATS = tuple(EXPORTERS)
PRECISIONS = ("fp32", "fp16", *COMPRESSED, *COMPUTED)  # compressed and computed ones: toolkit.compress
IOS = ("tensor", "image")  # image: port-friendly uint8 image I/O generator variants (exporters.image_io)
MANIFEST_VERSION = 1
SUFFIX = {name: exporter.suffix for name, exporter in EXPORTERS.items()}

HASHING = ("sha256 of a file artifact is the file's. A directory artifact (.mlpackage) is hashed over its files in "
           "sorted order of their POSIX paths relative to the directory: sha256 of the concatenation, for each "
           "file, of relpath + NUL + hex sha256(file bytes) + LF.")


def _choose(values: Sequence[str], allowed: Sequence[str], what: str) -> list[str]:
    chosen = []
    for v in values:
        v = v.strip().lower()
        if v not in allowed:
            raise ExportError(f"unknown {what} {v!r}; expected {', '.join(allowed)}")
        if v not in chosen:
            chosen.append(v)
    if not chosen:
        raise ExportError(f"no {what} given; expected some of {', '.join(allowed)}")
    return chosen


def artifact_name(model: str, fmt: str, precision: str, io: str = "tensor") -> str:
    """File name of an artifact inside a bundle, e.g. ``generator.fp16.onnx``."""
    tag = "" if io == "tensor" else f".{io}"
    return f"{model}.{precision}{tag}{SUFFIX[fmt]}"


def tool_versions() -> dict[str, str]:
    """Versions of the libraries an export depends on."""
    import platform
    from importlib import metadata


    versions = {"framegen": __version__, "python": platform.python_version()}
    for dist, key in (("torch", "torch"), ("onnx", "onnx"), ("onnxscript", "onnxscript"),
                      ("onnxruntime-gpu", "onnxruntime"), ("onnxruntime", "onnxruntime"),
                      ("coremltools", "coremltools"), ("numpy", "numpy")):
        if key in versions:
            continue
        try:
            versions[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _tensor_entries(ref: Reference) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    ins = [{"name": n, "shape": ["batch", *s], "dtype": "float32"} for n, s in zip(ref.input_names,
                                                                                  ref.input_shapes, strict=True)]
    outs = [{"name": ref.output_name, "shape": ["batch", *ref.output_shape], "dtype": "float32"}]
    return ins, outs


def export_bundle(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], *,
                  audio_encoder: str | os.PathLike[str] | None = None,
                  formats: Sequence[str] = ("onnx", "coreml"), precisions: Sequence[str] = ("fp32", "fp16"),
                  opset: int | None = None, io: Sequence[str] = ("tensor",), mode: str | None = None,
                  force: bool = False, progress: Callable[[str], None] | None = None,
                  triton: str | os.PathLike[str] | None = None, triton_options: Any = None,
                  audio_frontend: bool = False, compression: Any = None) -> Path:
    """Export a SyncTalk_2D generator checkpoint (and optionally the audio encoder) to a validated bundle at ``out``.

    ``triton``: also write a Triton model repository there (:func:`framegen.exporters.triton.write_repository`,
    with ``triton_options``, a ``TritonOptions``); an invalid config fails the whole export. ``audio_frontend``: also
    export the audio front-end (PCM -> mel, PCM -> features; needs ``audio_encoder``, see toolkit.validate_frontend).

    Every artifact is validated against the PyTorch module (see :mod:`toolkit.validate`); one that fails makes the
    whole export fail with ``ExportValidationError`` and nothing is left at ``out``. ``mode`` picks ave / hubert /
    wenet when the checkpoint cannot tell (ave and hubert have the same shapes). ``force`` replaces an existing
    ``out``. ``progress`` receives one line per step. ``compression``: a
    :class:`framegen.toolkit.export.compress.CompressOptions` for the int8 / pal6 / pal4 generators (calibration inputs,
    int8 target, quality floor; with its ``skip_refused``, one below its floor is left out and listed in the
    manifest's ``refused`` instead of failing the export).
    """
    from framegen.models.checkpoint import load_checkpoint, load_generator

    say = progress or (lambda _msg: None)
    fmts = _choose(formats, FORMATS, "format")
    precs = _choose(precisions, PRECISIONS, "precision")
    ios = _choose(io, IOS, "I/O variant")
    for p in precs:
        if p in COMPUTED and "onnx" in fmts:
            check_computable(p)  # before the slow work: a machine that cannot judge bf16 says so at once
    if opset is not None and not 13 <= int(opset) <= 23:
        raise ExportError(f"opset {opset} not supported; use 13..23 (default {onnx_export.DEFAULT_OPSET})")
    dest = Path(out)
    _check_destination(dest, force)
    source = load_checkpoint(checkpoint)  # read and hashed once
    generator = load_generator(source, mode)
    if triton is not None:  # refuse a bad repository target or config before the slow work
        precheck(triton, generator.mode, triton_options, force)
    if generator.mode_choice.note:
        say(generator.mode_choice.note)
    models, shas = _models(source, generator, audio_encoder, audio_frontend)
    # One options object for the whole export: its gate data (calibration feeds, a synthetic template on disk) is
    # built once for every format that needs it, and removed when the export ends, whatever its outcome, unless the
    # caller built it beforehand to share it.
    compression = compression if compression is not None else CompressOptions()
    shared_gate = compression.has_gate_data()
    refused_before = len(compression.refused)
    output = AtomicOutput(dest, directory=True)
    work = output.tmp
    try:
        artifacts = []
        for kind, module in models:
            mode_k = generator.mode if kind == "generator" else "ave"
            say(f"{kind}: PyTorch reference")
            ref = reference(module, kind, mode_k)
            for fmt in fmts:
                artifacts.extend(_export_format(fmt, kind, module, mode_k, precs, ios, opset, ref, shas[kind],
                                                work, dest, say, compression))
        if audio_frontend:
            from framegen.toolkit.export.validate_frontend import export_frontend_entries

            artifacts += export_frontend_entries(fmts, models[-1][1], shas["audio_encoder"], work, dest, say,
                                                 opset=opset)
        manifest = _manifest(generator, Path(checkpoint).name, audio_encoder, shas, opset, artifacts)
        if compression.refused[refused_before:]:  # skip_refused: what the floor kept out, and why
            manifest["refused"] = [r.as_dict() for r in compression.refused[refused_before:]]
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if triton is not None:
            write_repository(work, triton, options=triton_options, force=force, progress=say)
        output.commit()
    except ExportValidationError as exc:
        raise ExportValidationError(f"{exc}; export refused, nothing written") from None
    finally:
        if not shared_gate:
            release(compression)
        output.abort()
    say(f"wrote {dest}")
    return dest


def _check_destination(dest: Path, force: bool) -> None:
    if dest.exists() and not force:
        raise ExportError(f"{dest}: already exists (use --force to replace it)")
    if dest.exists() and not (dest / MANIFEST).is_file() and any(dest.iterdir()):
        raise ExportError(f"{dest}: exists and is not a framegen bundle; refusing to replace it")


def _models(source: Any, generator: Any, audio_encoder: str | os.PathLike[str] | None,
            audio_frontend: bool) -> tuple[list[tuple[str, Any]], dict[str, str]]:
    """The modules to export (the generator, and the audio encoder when given) and each checkpoint's sha256."""
    from framegen.models.checkpoint import load_audio_encoder, load_checkpoint

    models: list[tuple[str, Any]] = [("generator", generator)]
    shas = {"generator": source.sha256}
    if audio_encoder is not None:
        if generator.mode != "ave":
            raise ExportError(f"{audio_encoder}: the audio encoder makes 'ave' features; a {generator.mode} "
                              f"generator needs {generator.mode} features")
        encoder_source = load_checkpoint(audio_encoder)
        models.append(("audio_encoder", load_audio_encoder(encoder_source)))
        shas["audio_encoder"] = encoder_source.sha256
    if audio_frontend and audio_encoder is None:  # audio_features chains the encoder (toolkit.validate_frontend)
        raise ExportError("--audio-frontend needs --audio-encoder (audio_features runs the encoder)")
    return models, shas


def _manifest(generator: Any, checkpoint_name: str, audio_encoder: str | os.PathLike[str] | None,
              shas: dict[str, str], opset: int | None, artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "manifest_version": MANIFEST_VERSION,
        "contract": json.loads(contract_json(generator.mode)),
        "source": {
            "checkpoint": checkpoint_name, "sha256": shas["generator"], "mode": generator.mode,
            "mode_assumed": generator.mode_choice.assumed,
            **({"audio_encoder": {"checkpoint": Path(audio_encoder).name, "sha256": shas["audio_encoder"]}}
               if audio_encoder is not None else {}),
        },
        "tools": {
            **tool_versions(),
            "export": {name: exporter.tools(opset) for name, exporter in EXPORTERS.items()},
        },
        "hashing": HASHING,
        "artifacts": artifacts,
    }


def _export_format(fmt: str, kind: str, module: Any, mode: str, precs: list[str], ios: list[str],
                   opset: int | None, ref: Reference, sha: str, work: Path, dest: Path,
                   say: Callable[[str], None], compression: Any = None) -> list[dict[str, Any]]:
    """Export, validate and describe one model in one format, for every precision (the slow tracing is shared)."""
    computed = [p for p in precs if p in COMPUTED]
    precs, packed = split_precisions(precs)
    exporter = get_exporter(fmt)
    ins, outs = _tensor_entries(ref)
    entries = []
    t0 = time.perf_counter()
    base = exporter.trace(module, kind, opset)
    say(f"{kind}: traced for {fmt} in {time.perf_counter() - t0:.1f} s")
    for io in ios:
        if io == "image":
            if kind == "generator":
                entries += export_image_entries(exporter, module, mode, precs, opset, ref, sha, work, dest, say,
                                                base=base)
            continue
        for prec in precs:
            t1 = time.perf_counter()
            name = artifact_name(kind, fmt, prec, io)
            path = work / name
            meta = artifact_metadata(kind, mode, prec, sha, io)
            extra = exporter.build(base, kind, mode, prec, path, meta, opset)
            built = time.perf_counter() - t1
            t2 = time.perf_counter()
            validation = validate_artifact(fmt, path, ref, prec, meta, label=f"{dest}/{name}")
            say(f"{name}: built in {built:.1f} s, validated in {time.perf_counter() - t2:.1f} s "
                f"({_summary(validation)})")
            entries.append({
                "model": kind, "format": fmt, "precision": prec, "io": io, "path": name,
                "sha256": sha256_path(path), "bytes": _size(path),
                "inputs": ins, "outputs": outs, **extra, "validation": tensor_record(validation).as_dict(),
            })
    if packed:  # int8 / pal6 / pal4: built from the same trace, judged by their quality floor (toolkit.compress)
        entries += export_compressed(fmt, kind, module, mode, packed, base, ref, sha, work, dest, say, compression)
    for prec in computed:  # bf16: no file of its own; the fp32 artifact's record says whether it may compute so
        if kind != "generator" or fmt not in COMPUTED[prec]:
            continue
        fp32 = next((e for e in entries if e["precision"] == "fp32" and e["io"] == "tensor"), None)
        if fp32 is None:
            raise ExportError(f"--precision {prec}: judges the fp32 {fmt} generator; add fp32 to --precision")
        fp32.setdefault("compute", {})[prec] = judge_compute(prec, work / fp32["path"], module, mode,
                                                              f"{dest}/{fp32['path']}", say, compression)
    return entries


def _summary(v: dict[str, Any]) -> str:
    numeric = v.get("numeric") if "max_abs_err" not in v else v
    parts = []
    if isinstance(numeric, dict):
        parts.append(f"max err {numeric['max_abs_err']:.2g}, mean {numeric['mean_abs_err']:.2g}")
        if isinstance(v.get("tolerance_sources"), dict):  # limits in force and where they came from (validate.py)
            parts.append("limits " + ", ".join(f"{k} {v['tolerance'][k]:.3g} ({v['tolerance_sources'][k]})"
                                               for k in ("max_abs", "mean_abs")))
    parts.append(f"weights rel err {v['weights_max_rel_err']:.2g}")
    return "; ".join(parts)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
