"""Kernels of the constexpr MIL operations that hold compressed weights (iOS16): evaluated once when a program is
loaded, their outputs become constants."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from framegen.runtimes.mil.attrs import (
    MilOpError,
    as_int,
    as_ints,
    need_float,
    per_axis,
)

# --- compressed weights (constexpr ops, iOS16) ---------------------------------------------------------------------
# Weight compression (coremltools.optimize: 8-bit linear quantization, n-bit palettization) stores a conv weight as a
# constexpr op over stored constants. Core ML expands them at load time; the verifier does the same, once, from the
# stored bytes: these kernels are run when the program is loaded and their outputs become constants.


def op_constexpr_affine_dequantize(a: dict[str, Any]) -> torch.Tensor:
    """MIL iOS16 ``constexpr_affine_dequantize``: ``scale * (quantized_data - zero_point)`` with scale / zero point a
    scalar or a vector along ``axis``; computed in fp32 and rounded once to the scale's dtype (fp16 or fp32)."""
    q, zp, scale = a["quantized_data"], a["zero_point"], a["scale"]
    if q.dtype not in (torch.int8, torch.uint8):
        raise MilOpError(f"quantized_data must be int8 or uint8, got {q.dtype}")
    if zp.dtype not in (torch.int8, torch.uint8, torch.float32):
        raise MilOpError(f"zero_point must be int8, uint8 or fp32, got {zp.dtype}")
    need_float(scale, "scale")
    rank = q.dim()
    axis = as_int(a.get("axis"), 0)
    if not -rank <= axis < rank:
        raise MilOpError(f"axis {axis} out of range for rank {rank}")
    axis %= rank
    size = q.shape[axis]
    zp_b = per_axis(zp.float(), rank, axis, size, "zero_point")
    scale_b = per_axis(scale.float(), rank, axis, size, "scale")
    return ((q.float() - zp_b) * scale_b).to(scale.dtype)


def unpack_bits(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """``count`` unsigned ``nbits``-bit values packed LSB first into bytes (value k in bits k*nbits.. of the bit
    stream, least significant bit first), as int64."""
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8), bitorder="little")
    if bits.size < count * nbits:
        raise MilOpError(f"{packed.size} bytes hold {bits.size // nbits} {nbits}-bit values, {count} needed")
    fields = bits[:count * nbits].reshape(count, nbits).astype(np.int64)
    return (fields << np.arange(nbits, dtype=np.int64)).sum(axis=1)


def op_constexpr_lut_to_dense(a: dict[str, Any]) -> torch.Tensor:
    """MIL iOS16 ``constexpr_lut_to_dense``: ``lut[indices]`` reshaped to ``shape``; ``lut`` holds 2, 4, 16, 64 or
    256 entries (1, 2, 4, 6 or 8 bits per index) and ``indices`` is the uint8 byte stream of the packed indices."""
    lut, indices = a["lut"], a["indices"]
    shape = as_ints(a.get("shape"), what="shape")
    if lut.dim() != 1:
        raise MilOpError(f"lut must be a vector, got shape {list(lut.shape)}")
    nbits = {2: 1, 4: 2, 16: 4, 64: 6, 256: 8}.get(int(lut.shape[0]))
    if nbits is None:
        raise MilOpError(f"lut has {lut.shape[0]} entries; expected 2, 4, 16, 64 or 256")
    if indices.dtype != torch.uint8 or indices.dim() != 1:
        raise MilOpError(f"indices must be a uint8 vector, got {indices.dtype} {list(indices.shape)}")
    count = math.prod(shape)
    if indices.shape[0] != math.ceil(nbits * count / 8):
        raise MilOpError(f"{indices.shape[0]} index bytes for {count} {nbits}-bit indices (expected "
                         f"{math.ceil(nbits * count / 8)})")
    idx = torch.from_numpy(unpack_bits(indices.numpy(), nbits, count))
    return lut[idx].reshape(shape)


#: constexpr op type -> kernel(args) over its stored constants (evaluated once when the program is loaded)
CONSTEXPR_KERNELS: dict[str, Callable[[dict[str, Any]], torch.Tensor]] = {
    "constexpr_affine_dequantize": op_constexpr_affine_dequantize,
    "constexpr_lut_to_dense": op_constexpr_lut_to_dense,
}
