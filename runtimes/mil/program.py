"""``coreml-mil``: a VERIFIER for Core ML ML programs that runs anywhere, Linux CI included.

It is not Core ML. It reads an ``.mlpackage`` itself (the protobuf program and the weights in
``weights/weight.bin``) and interprets the program op by op on the CPU, each op in the dtype the program declares:
an fp16 program's every op input and output is an fp16 value (see :mod:`framegen.runtimes.mil.ops` for the precision
model), an fp32 program runs in fp32. A wrong weight, a mis-converted op, a shape or dtype the program contradicts,
or an fp16 overflow in a program's values shows up here without a Mac. What it cannot see: Apple's own
CPU/GPU/Neural Engine kernels, their accumulation order and precision inside an op (the Neural Engine's fp16
arithmetic in particular), op fusions and layout changes Core ML makes when compiling, and image (CVPixelBuffer)
conversion. On macOS the ``coreml`` backend is the real thing.

Public API: :class:`MilProgram` (load once, run many), :func:`run_mlpackage`, :func:`encoder_fn`, backend SPECS.
"""

from __future__ import annotations

import functools
import json
import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from framegen.models.bundle import BundleError, contained_path
from framegen.models.contract import ENC_INPUT, ENC_OUTPUT
from framegen.models.errors import FramegenError
from framegen.models.imports import coremltools
from framegen.runtimes.base import BackendError

NAME = "coreml-mil"
WHAT = ("VERIFIER, not Core ML: reference interpreter of the .mlpackage's ML program (its MIL ops and stored "
         "weights), op by op on the CPU in the program's fp16/fp32; cannot see Apple's CPU/GPU/Neural Engine "
         "kernels or their own fp16 behaviour")

_BLOB_SENTINEL = 0xDEADBEEF
# MIL storage blob dtype codes (coremltools libmilstoragepython writer) for the byte-aligned types.
_BLOB_CODES = {"FLOAT16": 1, "FLOAT32": 2, "UINT8": 3, "INT8": 4, "INT16": 6, "UINT16": 7, "INT32": 14, "UINT32": 15}
_NP_DTYPES = {"FLOAT16": np.float16, "FLOAT32": np.float32, "FLOAT64": np.float64, "INT8": np.int8,
              "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8, "UINT16": np.uint16,
              "UINT32": np.uint32, "BOOL": np.bool_}
_SHORT = {"FLOAT16": "fp16", "FLOAT32": "fp32", "FLOAT64": "fp64", "INT32": "int32", "BOOL": "bool"}


class MilError(FramegenError):
    """An .mlpackage the verifier cannot read or run, or a program that contradicts itself or the MIL spec."""


class MilUnsupportedOpError(MilError):
    """The program uses an op the verifier does not implement."""


class MilNonFiniteError(MilError):
    """With ``check_finite``: an op turned finite inputs into inf/NaN (fp16 overflow, typically)."""


def _shape_fits(declared: tuple[int | None, ...] | None, actual: tuple[int, ...]) -> bool:
    """Whether ``actual`` matches a declared shape (``None`` dims and an unknown rank match anything)."""
    if declared is None:
        return True
    return len(declared) == len(actual) and all(d is None or d == a for d, a in zip(declared, actual, strict=True))


@functools.cache
def _mil_dtype(torch_dtype: Any) -> str:
    """MIL dtype name of a torch dtype (``torch.float16`` -> ``FLOAT16``)."""
    import torch

    for name, np_dtype in _NP_DTYPES.items():
        if torch.from_numpy(np.empty(0, np_dtype)).dtype == torch_dtype:
            return name
    return str(torch_dtype)


def quiet_coremltools() -> Any:
    """coremltools' protobuf modules, imported without its warnings about the macOS-only native runtime."""
    coremltools()
    from coremltools.proto import MIL_pb2, Model_pb2

    return MIL_pb2, Model_pb2


@dataclass(frozen=True)
class VarType:
    """Declared type of a program variable: MIL dtype name (``FLOAT16``...) and shape (``None`` = unknown dim)."""

    dtype: str
    shape: tuple[int | None, ...] | None  # None: rank unknown

    def describe(self) -> str:
        """``fp16[1, 3, 320, 320]``."""
        dims = "?" if self.shape is None else ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{_SHORT.get(self.dtype, self.dtype.lower())}[{dims}]"


@dataclass
class _Op:
    type: str
    name: str
    inputs: dict[str, list[tuple[str, Any]]]  # param -> [("var", name) | ("val", value)]
    outputs: list[tuple[str, VarType]]


def _mlmodel_path(package: Path) -> Path:
    manifest = package / "Manifest.json"
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text())
            root = data["rootModelIdentifier"]
            rel = data["itemInfoEntries"][root]["path"]
        except (ValueError, KeyError, TypeError) as exc:
            raise MilError(f"{manifest}: not a valid .mlpackage manifest ({exc})") from None
        if not isinstance(rel, str):
            raise MilError(f"{manifest}: not a valid .mlpackage manifest (path {rel!r:.60})")
        try:
            path = contained_path(package / "Data", rel, str(manifest))
        except BundleError as exc:
            raise MilError(str(exc)) from None
    else:
        path = package / "Data" / "com.apple.CoreML" / "model.mlmodel"
    if not path.is_file():
        raise MilError(f"{package}: model specification {path.relative_to(package)} is missing")
    return path


class MilProgram:
    """An .mlpackage's ML program, parsed once (ops, constants and weights) and runnable many times.

    ``run`` takes numpy arrays by input name and returns numpy arrays by output name in the program's declared
    dtypes (fp16 programs return float16). Inputs are converted to the declared dtype (fp16 rounding, as Core ML does
    for an fp16 input) and their shapes checked against the declared ones (unknown dims accept any size).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise MilError(f"{self.path}: no such .mlpackage")
        if not self.path.is_dir():
            raise MilError(f"{self.path}: not an .mlpackage directory (ML programs keep weights in a package)")
        self._mil, model_pb2 = quiet_coremltools()
        spec_path = _mlmodel_path(self.path)
        self._model_dir = spec_path.parent
        spec = model_pb2.Model()
        try:
            spec.ParseFromString(spec_path.read_bytes())
        except Exception as exc:  # protobuf raises its own DecodeError
            raise MilError(f"{spec_path}: not a Core ML model specification ({exc})") from None
        kind = spec.WhichOneof("Type")
        if kind != "mlProgram":
            raise MilError(f"{self.path}: a Core ML {kind or 'empty'} model, not an ML program")
        self.spec_version = spec.specificationVersion
        prog = spec.mlProgram
        if "main" not in prog.functions:
            raise MilError(f"{self.path}: the ML program has no 'main' function")
        fn = prog.functions["main"]
        self.opset = fn.opset
        if fn.opset not in fn.block_specializations:
            raise MilError(f"{self.path}: function 'main' has no block for its opset {fn.opset}")
        block = fn.block_specializations[fn.opset]
        self.image_inputs = [d.name for d in spec.description.input if d.type.WhichOneof("Type") == "imageType"]
        self._blobs: dict[Path, bytes] = {}
        self.inputs: dict[str, VarType] = {i.name: self._var_type(i.type, f"input {i.name!r}") for i in fn.inputs}
        self._consts: dict[str, Any] = {}
        self._ops: list[_Op] = []
        self.op_counts: dict[str, int] = {}
        self._types: dict[str, VarType] = dict(self.inputs)
        for op in block.operations:
            self._add_op(op)
        self._blobs.clear()
        self.outputs: dict[str, VarType] = {}
        for name in block.outputs:
            if name not in self._types:
                raise MilError(f"{self.path}: program output {name!r} is never computed")
            self.outputs[name] = self._types[name]
        self._last_use = self._last_uses(set(block.outputs))

    # --- loading ---------------------------------------------------------------------------------------------------

    def _var_type(self, value_type: Any, what: str) -> VarType:
        kind = value_type.WhichOneof("type")
        if kind != "tensorType":
            raise MilError(f"{self.path}: {what} is a {kind}, the verifier handles tensors only")
        tt = value_type.tensorType
        dtype = self._mil.DataType.Name(tt.dataType)
        if tt.rank < 0:
            return VarType(dtype, None)
        dims = tuple(d.constant.size if d.WhichOneof("dimension") == "constant" else None for d in tt.dimensions)
        return VarType(dtype, dims)

    def _add_op(self, op: Any) -> None:
        name_attr = op.attributes.get("name")
        name = (name_attr.immediateValue.tensor.strings.values[0] if name_attr is not None
                else (op.outputs[0].name if op.outputs else "?"))
        where = f"{self.path}: op {op.type} {name!r}"
        self.op_counts[op.type] = self.op_counts.get(op.type, 0) + 1
        if op.type == "const":
            if len(op.outputs) != 1 or "val" not in op.attributes:
                raise MilError(f"{where}: a const needs one output and a 'val'")
            out = op.outputs[0]
            vtype = self._var_type(out.type, f"const {out.name!r}") if out.type.WhichOneof("type") == "tensorType" \
                else None
            self._consts[out.name] = self._value(op.attributes["val"], where)
            if vtype is not None:
                self._types[out.name] = vtype
            return
        if op.type.startswith("constexpr_"):
            self._add_constexpr(op, where)
            return
        from framegen.runtimes.mil.ops import KERNELS

        if op.type not in KERNELS:
            raise MilUnsupportedOpError(
                f"{where}: the coreml-mil verifier does not implement MIL op {op.type!r} "
                f"(it knows const, {', '.join(sorted(KERNELS))})")
        if len(op.blocks):
            raise MilUnsupportedOpError(f"{where}: ops with nested blocks are not supported")
        inputs: dict[str, list[tuple[str, Any]]] = {}
        for param, arg in op.inputs.items():
            refs = []
            for binding in arg.arguments:
                if binding.WhichOneof("binding") == "name":
                    if binding.name not in self._types and binding.name not in self._consts:
                        raise MilError(f"{where}: input {param!r} uses {binding.name!r} before it is defined")
                    refs.append(("var", binding.name))
                else:
                    refs.append(("val", self._value(binding.value, where)))
            inputs[param] = refs
        outputs = [(o.name, self._var_type(o.type, f"output {o.name!r} of {op.type} {name!r}")) for o in op.outputs]
        for oname, vtype in outputs:
            self._types[oname] = vtype
        self._ops.append(_Op(op.type, name, inputs, outputs))

    def _add_constexpr(self, op: Any, where: str) -> None:
        """A compressed weight (``constexpr_*``: its stored constants are its attributes): expanded once, here, by
        its kernel from :data:`framegen.runtimes.mil.constexpr.CONSTEXPR_KERNELS`, and checked against its declared
        type."""
        from framegen.runtimes.mil.attrs import MilOpError
        from framegen.runtimes.mil.constexpr import CONSTEXPR_KERNELS

        kernel = CONSTEXPR_KERNELS.get(op.type)
        if kernel is None:
            raise MilUnsupportedOpError(f"{where}: the coreml-mil verifier does not implement MIL op {op.type!r} "
                                        f"(constexpr ops it knows: {', '.join(sorted(CONSTEXPR_KERNELS))})")
        if len(op.inputs) or len(op.outputs) != 1:
            raise MilError(f"{where}: a {op.type} takes its constants as attributes and has one output")
        args = {k: self._value(v, where) for k, v in op.attributes.items() if k != "name"}
        try:
            val = kernel(args)
        except MilOpError as exc:
            raise MilError(f"{where}: {exc}") from None
        out = op.outputs[0]
        vtype = self._var_type(out.type, f"output {out.name!r}")
        self._check_result(where, out.name, vtype, val)
        self._consts[out.name] = val
        self._types[out.name] = vtype

    def _value(self, value: Any, where: str) -> Any:
        import torch

        kind = value.WhichOneof("value")
        vtype = self._var_type(value.type, "a constant")
        if vtype.dtype == "STRING":
            strings = list(value.immediateValue.tensor.strings.values)
            return strings[0] if vtype.shape == () and len(strings) == 1 else strings
        if vtype.dtype not in _NP_DTYPES or vtype.shape is None or None in vtype.shape:
            raise MilError(f"{where}: constant of type {vtype.describe()} is not supported")
        np_dtype = np.dtype(_NP_DTYPES[vtype.dtype])
        count = math.prod(vtype.shape)
        if kind == "blobFileValue":
            arr = self._blob(value.blobFileValue, vtype, np_dtype, count, where)
        elif kind == "immediateValue":
            arr = self._immediate(value.immediateValue.tensor, np_dtype, count, where)
        else:
            raise MilError(f"{where}: constant stored as {kind} is not supported")
        return torch.from_numpy(np.array(arr.reshape(vtype.shape), copy=True))

    def _immediate(self, tv: Any, np_dtype: np.dtype, count: int, where: str) -> np.ndarray:
        field = tv.WhichOneof("value")
        if field == "bytes":
            raw = tv.bytes.values
            if len(raw) != count * np_dtype.itemsize:
                raise MilError(f"{where}: immediate value holds {len(raw)} bytes, expected {count * np_dtype.itemsize}")
            return np.frombuffer(raw, dtype=np_dtype)
        if field in ("floats", "ints", "bools", "longInts", "doubles"):
            arr = np.asarray(list(getattr(tv, field).values)).astype(np_dtype)
        else:
            raise MilError(f"{where}: immediate value of kind {field} is not supported")
        if arr.size != count:
            raise MilError(f"{where}: immediate value has {arr.size} elements, its type says {count}")
        return arr

    def _blob(self, bfv: Any, vtype: VarType, np_dtype: np.dtype, count: int, where: str) -> np.ndarray:
        name = bfv.fileName
        prefix = "@model_path/"
        if not name.startswith(prefix):
            raise MilError(f"{where}: weight file {name!r} is not inside the package (@model_path/...)")
        path = (self._model_dir / name[len(prefix):]).resolve()
        if self._model_dir.resolve() not in path.parents:
            raise MilError(f"{where}: weight file {name!r} points outside the package")
        if path not in self._blobs:
            if not path.is_file():
                raise MilError(f"{where}: weight file {path} is missing")
            self._blobs[path] = path.read_bytes()
        buf = self._blobs[path]
        offset = int(bfv.offset)
        if offset + 32 > len(buf):
            raise MilError(f"{path}: blob header at offset {offset} lies past the end ({len(buf)} bytes)")
        sentinel, code, size, data_offset = struct.unpack_from("<IIQQ", buf, offset)
        if sentinel != _BLOB_SENTINEL:
            raise MilError(f"{path}: no blob at offset {offset} (bad sentinel {sentinel:#x}) for {where}")
        want_code = _BLOB_CODES.get(vtype.dtype)
        if want_code is None or code != want_code:
            raise MilError(f"{path}: blob at offset {offset} has dtype code {code}, the program declares "
                           f"{vtype.describe()} ({where})")
        if size != count * np_dtype.itemsize or data_offset + size > len(buf):
            raise MilError(f"{path}: blob at offset {offset} holds {size} bytes at {data_offset}, the program "
                           f"declares {vtype.describe()} ({where})")
        return np.frombuffer(buf, dtype=np_dtype, count=count, offset=data_offset)

    def _last_uses(self, keep: set[str]) -> dict[int, list[str]]:
        last: dict[str, int] = {}
        for i, op in enumerate(self._ops):
            for refs in op.inputs.values():
                for kind, ref in refs:
                    if kind == "var" and ref not in self._consts:
                        last[ref] = i
        freed: dict[int, list[str]] = {}
        for name, i in last.items():
            if name not in keep:
                freed.setdefault(i, []).append(name)
        return freed

    # --- facts -------------------------------------------------------------------------------------------------

    @property
    def precision(self) -> str:
        """``fp16`` when any computing op produces fp16 values, else ``fp32``."""
        return "fp16" if any(t.dtype == "FLOAT16" for op in self._ops for _, t in op.outputs) else "fp32"

    @property
    def op_types(self) -> list[str]:
        """The distinct op types of the program, in first-use order (``const`` included)."""
        return list(self.op_counts)

    # --- running -------------------------------------------------------------------------------------------------

    def _prepare_inputs(self, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        import torch

        missing = [n for n in self.inputs if n not in inputs]
        extra = [n for n in inputs if n not in self.inputs]
        if missing or extra:
            raise MilError(f"{self.path}: program inputs are {', '.join(self.inputs)}; "
                           f"missing {missing or 'none'}, unexpected {extra or 'none'}")
        env: dict[str, Any] = {}
        for name, vtype in self.inputs.items():
            arr = np.asarray(inputs[name])
            shape = vtype.shape
            if not _shape_fits(shape, arr.shape):
                raise MilError(f"{self.path}: input {name!r} has shape {list(arr.shape)}, the program takes "
                               f"{vtype.describe()}")
            np_dtype = _NP_DTYPES.get(vtype.dtype)
            if np_dtype is None:
                raise MilError(f"{self.path}: input {name!r} of type {vtype.describe()} is not supported")
            try:
                arr = np.ascontiguousarray(arr.astype(np_dtype, copy=False))
            except (TypeError, ValueError):
                raise MilError(f"{self.path}: input {name!r} of dtype {arr.dtype} cannot become "
                               f"{vtype.describe()}") from None
            env[name] = torch.from_numpy(arr)
        return env

    @property
    def ops(self) -> list[tuple[str, str, dict[str, list[tuple[str, Any]]], list[str]]]:
        """The computing ops in execution order: ``(type, name, inputs, output names)``, each input a list of
        ``("var", name)`` or ``("val", value)`` (constants are not ops; see :meth:`constant`)."""
        return [(op.type, op.name, op.inputs, [o for o, _ in op.outputs]) for op in self._ops]

    def constant(self, name: str) -> np.ndarray | None:
        """A constant's value (e.g. a convolution's weight) by variable name, or ``None`` if it is not one."""
        value = self._consts.get(name)
        return None if value is None or isinstance(value, (str, list)) else value.numpy()

    def run(self, inputs: dict[str, np.ndarray], check_finite: bool = False,
            observe: Callable[[str, Any], None] | None = None) -> dict[str, np.ndarray]:
        """Execute the program on ``inputs`` (numpy, by input name); outputs by name in their declared dtypes.

        With ``check_finite`` every float op output is checked: the first op that turns finite inputs into inf/NaN
        raises :class:`MilNonFiniteError` naming it (in an fp16 program that is an fp16 overflow). ``observe`` is
        called with every op output's name and value (a torch tensor) as it is computed: intermediate values for
        locating a layer that departs (``framegen.toolkit.parity.layers``).
        """
        import torch
        from framegen.runtimes.mil.attrs import MilOpError
        from framegen.runtimes.mil.ops import KERNELS, TUPLE_INPUTS

        env = self._prepare_inputs(inputs)
        consts = self._consts
        with torch.inference_mode():
            for i, op in enumerate(self._ops):
                where = f"{self.path}: op {op.type} {op.name!r}"
                tuples = TUPLE_INPUTS.get(op.type, set())
                args: dict[str, Any] = {}
                for param, refs in op.inputs.items():
                    vals = [(env[r] if r in env else consts[r]) if k == "var" else r for k, r in refs]
                    args[param] = vals if param in tuples else (vals[0] if len(vals) == 1 else vals)
                try:
                    result = KERNELS[op.type](args)
                except MilOpError as exc:
                    raise MilError(f"{where}: {exc}") from None
                except (RuntimeError, KeyError, IndexError, TypeError) as exc:
                    raise MilError(f"{where}: cannot execute ({type(exc).__name__}: {exc})") from None
                results = list(result) if isinstance(result, (list, tuple)) else [result]
                if len(results) != len(op.outputs):
                    raise MilError(f"{where}: produced {len(results)} outputs, the program declares "
                                   f"{len(op.outputs)}")
                for (oname, vtype), val in zip(op.outputs, results, strict=True):
                    self._check_result(where, oname, vtype, val)
                    if check_finite and val.is_floating_point() and not bool(torch.isfinite(val).all()):
                        self._report_nonfinite(where, oname, vtype, args)
                    env[oname] = val
                    if observe is not None:
                        observe(oname, val)
                for name in self._last_use.get(i, ()):
                    env.pop(name, None)
        return {name: (env[name] if name in env else consts[name]).numpy() for name in self.outputs}

    def _check_result(self, where: str, oname: str, vtype: VarType, val: Any) -> None:
        got = _mil_dtype(val.dtype)
        if got != vtype.dtype:
            raise MilError(f"{where}: computes {_SHORT.get(got, got)} for {oname!r}, the program declares "
                           f"{vtype.describe()}")
        shape = vtype.shape
        if not _shape_fits(shape, tuple(val.shape)):
            raise MilError(f"{where}: computes shape {list(val.shape)} for {oname!r}, the program declares "
                           f"{vtype.describe()}")

    def _report_nonfinite(self, where: str, oname: str, vtype: VarType, args: dict[str, Any]) -> None:
        import torch

        def finite(v: Any) -> bool:
            if isinstance(v, list):
                return all(finite(x) for x in v)
            return not isinstance(v, torch.Tensor) or not v.is_floating_point() or bool(torch.isfinite(v).all())

        if all(finite(v) for v in args.values()):
            hint = " (beyond fp16's ±65504)" if vtype.dtype == "FLOAT16" else ""
            raise MilNonFiniteError(f"{where}: finite inputs gave inf/NaN in {oname!r} {vtype.describe()}{hint}")


def run_mlpackage(path: str | os.PathLike[str], inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Load the .mlpackage at ``path`` and run its ML program once on ``inputs`` (see :class:`MilProgram`)."""
    return MilProgram(path).run(inputs)


def _batch_dim(program: MilProgram, name: str) -> int | None:
    shape = program.inputs[name].shape
    return None if shape is None or not shape else shape[0]


def run_batched(program: MilProgram, feeds: dict[str, np.ndarray], out_name: str,
                 check_finite: bool = False) -> np.ndarray:
    """Run a whole batch when the program's batch axis is free, else in pieces of the program's fixed batch."""
    first = next(iter(feeds))
    total = feeds[first].shape[0]
    fixed = _batch_dim(program, first)
    step = total if fixed is None else fixed
    if total % step:
        raise BackendError(f"{program.path}: takes batches of exactly {fixed}, got {total}")
    parts = [program.run({k: v[s:s + step] for k, v in feeds.items()}, check_finite)[out_name]
             for s in range(0, total, step)]
    return np.concatenate(parts).astype(np.float32, copy=False)


def encoder_fn(program: MilProgram | str | os.PathLike[str]) -> Callable[[np.ndarray], np.ndarray]:
    """An audio-encoder ML program as ``mel windows float32 [N, 1, 80, 16] -> embeddings float32 [N, 512]`` (the
    ``encode`` argument of ``framegen.toolkit.inputs.audio.ave_features``)."""
    prog = program if isinstance(program, MilProgram) else MilProgram(program)
    if ENC_INPUT not in prog.inputs or ENC_OUTPUT not in prog.outputs:
        raise MilError(f"{prog.path}: not an audio encoder (inputs {list(prog.inputs)}, outputs "
                       f"{list(prog.outputs)}; expected {ENC_INPUT!r} -> {ENC_OUTPUT!r})")

    def encode(mel: np.ndarray) -> np.ndarray:
        return run_batched(prog, {ENC_INPUT: np.asarray(mel, dtype=np.float32)}, ENC_OUTPUT)

    return encode


