"""Kernels for the MIL operations the ``coreml-mil`` verifier executes, each written from the MIL op reference
(coremltools ``converters/mil/mil/ops/defs``, the iOS15 and iOS16 definitions; the exporter targets iOS16).

Precision model: a value keeps the dtype the program declares (``torch.float16`` for fp16). A kernel upcasts fp16
operands to fp32 (exact), computes in fp32 and rounds its result once to the operand dtype (IEEE round-to-nearest-
even; magnitudes beyond 65504 become ``inf``, tiny ones go subnormal or zero). So every op's inputs and outputs are
genuine fp16 values, as in Core ML's fp16 path; only the inside of one op (a convolution's accumulation, the
lerp of a bilinear sample) is carried at fp32. For add/sub/mul/div, fp32 then fp16 rounding equals direct fp16
rounding (24 >= 2*11 + 2 bits), so those are exactly the IEEE fp16 results.

``torch`` (and ``torch.nn.functional`` for convolution) is only the arithmetic engine here: it is fed the program's
own weights and attributes; nothing from a PyTorch model is involved.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from framegen.runtimes.mil.attrs import (
    FLOATS,
    MilOpError,
    as_bool,
    as_float,
    as_int,
    as_ints,
    as_str,
    need_float,
    same_dtype,
    to_f32,
)
from framegen.runtimes.mil.ops_audio import AUDIO_KERNELS

# --- convolution -------------------------------------------------------------------------------------------------

def conv_pads(pad_type: str, in_sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
              dilations: Sequence[int], custom: Sequence[int] | None) -> list[int]:
    """``[before_0, after_0, before_1, after_1, ...]`` for MIL conv's ``pad_type`` (valid / custom / same /
    same_lower). ``same`` pads so that ``out = ceil(in / stride)``, the odd pixel at the end (TF/ONNX SAME_UPPER);
    ``same_lower`` puts it at the beginning."""
    n = len(kernel)
    if pad_type == "valid":
        return [0] * (2 * n)
    if pad_type == "custom":
        pads = list(custom or [])
        if len(pads) != 2 * n:
            raise MilOpError(f"pad_type 'custom' needs {2 * n} pad values, got {len(pads)}")
        if any(p < 0 for p in pads):
            raise MilOpError(f"negative pad {pads}")
        return pads
    if pad_type in ("same", "same_lower"):
        pads = []
        for size, k, s, d in zip(in_sizes, kernel, strides, dilations, strict=True):
            eff = (k - 1) * d + 1
            total = max(0, (math.ceil(size / s) - 1) * s + eff - size)
            small, big = total // 2, total - total // 2
            pads += [small, big] if pad_type == "same" else [big, small]
        return pads
    raise MilOpError(f"unknown pad_type {pad_type!r}")


def op_conv(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``conv``: x [n, C_in, *d], weight [C_out, C_in/groups, *K], optional bias [C_out]; pad_type, pad,
    strides, dilations, groups. Products of fp16 values are exact in fp32 and are summed in fp32 (the torch kernel's
    order), plus the bias, then rounded once to the operand dtype."""
    x, w, bias = a["x"], a["weight"], a.get("bias")
    need_float(x, "x")
    same_dtype(x, w, "x/weight")
    nsp = x.dim() - 2
    if nsp not in (1, 2, 3) or w.dim() != x.dim():
        raise MilOpError(f"x has rank {x.dim()} and weight rank {w.dim()}; conv needs matching rank 3-5")
    strides = as_ints(a.get("strides"), [1] * nsp)
    dilations = as_ints(a.get("dilations"), [1] * nsp)
    groups = as_int(a.get("groups"), 1)
    pad_type = as_str(a.get("pad_type"), "valid")
    if len(strides) != nsp or len(dilations) != nsp:
        raise MilOpError(f"strides {strides} / dilations {dilations} do not fit {nsp} spatial dims")
    if groups < 1 or x.shape[1] % groups or x.shape[1] // groups != w.shape[1] or w.shape[0] % groups:
        raise MilOpError(f"C_in {x.shape[1]}, groups {groups} and weight {list(w.shape)} are inconsistent")
    if bias is not None:
        same_dtype(x, bias, "x/bias")
        if bias.dim() != 1 or bias.shape[0] != w.shape[0]:
            raise MilOpError(f"bias shape {list(bias.shape)} does not fit C_out {w.shape[0]}")
    custom = as_ints(a.get("pad"), []) if pad_type == "custom" else None
    pads = conv_pads(pad_type, x.shape[2:], w.shape[2:], strides, dilations, custom)
    xf = to_f32(x)
    if any(pads):
        # F.pad lists the last dimension first.
        torch_pads = [p for i in reversed(range(nsp)) for p in (pads[2 * i], pads[2 * i + 1])]
        xf = F.pad(xf, torch_pads)
    fn = (F.conv1d, F.conv2d, F.conv3d)[nsp - 1]
    out = fn(xf, to_f32(w), None if bias is None else to_f32(bias), stride=strides, padding=0, dilation=dilations,
             groups=groups)
    return out.to(x.dtype)


# --- elementwise -------------------------------------------------------------------------------------------------

def _binary(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], floats_only: bool = False
            ) -> Callable[[dict[str, Any]], torch.Tensor]:
    def kernel(a: dict[str, Any]) -> torch.Tensor:
        x, y = a["x"], a["y"]
        same_dtype(x, y, "x/y")
        if floats_only:
            need_float(x, "x")
        if x.dtype in FLOATS:
            return fn(to_f32(x), to_f32(y)).to(x.dtype)
        if x.dtype != torch.int32:
            raise MilOpError(f"unsupported operand dtype {x.dtype}")
        return fn(x, y).to(torch.int32)

    kernel.__doc__ = f"MIL elementwise ``{fn.__name__}`` with numpy broadcasting, computed in fp32 for floats."
    return kernel


def op_relu(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``relu``: max(x, 0) (exact in any float dtype; NaN stays NaN)."""
    x = a["x"]
    need_float(x, "x")
    return torch.relu(x)


def op_sigmoid(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``sigmoid``: 1 / (1 + exp(-x)), evaluated in fp32 and rounded to x's dtype."""
    x = a["x"]
    need_float(x, "x")
    return torch.sigmoid(to_f32(x)).to(x.dtype)


def op_clip(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``clip``: min(max(x, alpha), beta)."""
    x = a["x"]
    need_float(x, "x")
    alpha, beta = as_float(a.get("alpha"), math.nan), as_float(a.get("beta"), math.nan)
    if math.isnan(alpha) or math.isnan(beta):
        raise MilOpError("clip needs alpha and beta")
    return torch.clamp(to_f32(x), min=alpha, max=beta).to(x.dtype)


def op_identity(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``identity``: x unchanged."""
    return a["x"]


def op_floor(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``floor``: the largest integer <= x, elementwise (exact in any float dtype)."""
    x = a["x"]
    need_float(x, "x")
    return torch.floor(to_f32(x)).to(x.dtype)


_CAST = {"fp16": torch.float16, "fp32": torch.float32, "int32": torch.int32, "bool": torch.bool,
         "int8": torch.int8, "uint8": torch.uint8, "int16": torch.int16}


def op_cast(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``cast`` to ``dtype``; float to integer truncates toward zero (numpy ``astype``, as coremltools'
    value inference does); to fp16 rounds to nearest even."""
    x = a["x"]
    name = as_str(a.get("dtype"))
    if name not in _CAST:
        raise MilOpError(f"cast to {name!r} is not supported (knows {', '.join(_CAST)})")
    return x.to(_CAST[name])


# --- shape ---------------------------------------------------------------------------------------------------------

def op_reshape(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``reshape``: ``shape`` of positive sizes, at most one ``-1`` (inferred) and ``0`` (copy x's dim, only
    when len(shape) == rank(x))."""
    x = a["x"]
    shape = as_ints(a.get("shape"), what="shape")
    if shape.count(-1) > 1:
        raise MilOpError(f"shape {shape} has more than one -1")
    if 0 in shape:
        if len(shape) != x.dim():
            raise MilOpError(f"shape {shape} uses 0 but its length differs from rank {x.dim()}")
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    try:
        return x.reshape(shape)
    except RuntimeError:
        raise MilOpError(f"cannot reshape {list(x.shape)} to {shape}") from None


def op_squeeze(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``squeeze``: drop the listed size-1 axes (non-size-1 axes are ignored, PyTorch style) or, without
    ``axes``, every size-1 axis."""
    x = a["x"]
    if a.get("axes") is None:
        keep = [s for s in x.shape if s != 1]
    else:
        axes = {ax % x.dim() for ax in as_ints(a["axes"])}
        keep = [s for i, s in enumerate(x.shape) if not (i in axes and s == 1)]
    return x.reshape(keep)


def op_concat(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``concat`` along ``axis``; with ``interleave`` the inputs (same shape) alternate slice by slice."""
    values = a["values"]
    if not values:
        raise MilOpError("concat of nothing")
    for v in values[1:]:
        same_dtype(values[0], v, "values")
    rank = values[0].dim()
    axis = as_int(a.get("axis"), 0)
    if not -rank <= axis < rank:
        raise MilOpError(f"axis {axis} out of range for rank {rank}")
    axis %= rank
    if as_bool(a.get("interleave"), False):
        if any(v.shape != values[0].shape for v in values):
            raise MilOpError("interleave needs inputs of one shape")
        shape = list(values[0].shape)
        shape[axis] *= len(values)
        return torch.stack(values, dim=axis + 1).reshape(shape)
    try:
        return torch.cat(values, dim=axis)
    except RuntimeError as exc:
        raise MilOpError(f"cannot concat shapes {[list(v.shape) for v in values]} on axis {axis}: {exc}") from None


# --- resampling ----------------------------------------------------------------------------------------------------

def bilinear_grid(size_in: int, size_out: int, align_corners: bool, half_pixel_centers: bool) -> np.ndarray:
    """MIL upsample_bilinear source coordinates for each output index (float64), clamped to [0, size_in - 1].

    align_corners: ``i * (in - 1) / (out - 1)``; otherwise with half-pixel centres
    ``(i + 0.5) * in / out - 0.5``, without them ``i * in / out``. The spacing uses the actual output size
    (MIL's "recompute_scale_factor" behaviour), not the scale attribute.
    """
    i = np.arange(size_out, dtype=np.float64)
    if align_corners:
        grid = i * ((size_in - 1) / (size_out - 1)) if size_out > 1 else np.zeros(size_out)
    else:
        spacing = size_in / size_out
        grid = i * spacing + 0.5 * spacing - 0.5 if half_pixel_centers else i * spacing
    return np.clip(grid, 0.0, size_in - 1)


def _lerp_axis(x: torch.Tensor, grid: np.ndarray, dim: int) -> torch.Tensor:
    i0 = np.floor(grid).astype(np.int64)
    i1 = np.minimum(i0 + 1, x.shape[dim] - 1)
    frac = torch.from_numpy((grid - i0).astype(np.float32))
    view = [1] * x.dim()
    view[dim] = -1
    frac = frac.reshape(view)
    a = x.index_select(dim, torch.from_numpy(i0))
    b = x.index_select(dim, torch.from_numpy(i1))
    return a * (1 - frac) + b * frac


def op_upsample_bilinear(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``upsample_bilinear`` on the last two axes: output size ``floor(in * scale)``; ``align_corners``
    (default True) and, from iOS16, ``half_pixel_centers`` (default ``not align_corners``). Both passes run in fp32
    on the operand's values and the result is rounded once."""
    x = a["x"]
    need_float(x, "x")
    if x.dim() < 3:
        raise MilOpError(f"x has rank {x.dim()}; upsample_bilinear needs rank >= 3")
    sh, sw = as_float(a.get("scale_factor_height"), 1.0), as_float(a.get("scale_factor_width"), 1.0)
    align = as_bool(a.get("align_corners"), True)
    half = as_bool(a.get("half_pixel_centers"), not align)
    if align and half:
        raise MilOpError("align_corners and half_pixel_centers cannot both be true")
    h_in, w_in = x.shape[-2], x.shape[-1]
    # coremltools' type inference multiplies the fp32 scale by the size and floors.
    h_out = int(np.floor(np.float32(sh) * h_in))
    w_out = int(np.floor(np.float32(sw) * w_in))
    if h_out < 1 or w_out < 1:
        raise MilOpError(f"scale factors ({sh}, {sw}) give an empty output from {h_in}x{w_in}")
    y = _lerp_axis(to_f32(x), bilinear_grid(h_in, h_out, align, half), x.dim() - 2)
    y = _lerp_axis(y, bilinear_grid(w_in, w_out, align, half), x.dim() - 1)
    return y.to(x.dtype)


#: op type -> kernel(args) -> output tensor; args maps each input name to a tensor (a list for tuple inputs), a
#: string or a list of strings. Anything not listed here is refused by the interpreter.
KERNELS: dict[str, Callable[[dict[str, Any]], torch.Tensor]] = {
    "conv": op_conv,
    "relu": op_relu,
    "sigmoid": op_sigmoid,
    "clip": op_clip,
    "add": _binary(torch.add),
    "sub": _binary(torch.sub),
    "mul": _binary(torch.mul),
    "real_div": _binary(torch.div, floats_only=True),
    "maximum": _binary(torch.maximum),
    "minimum": _binary(torch.minimum),
    "concat": op_concat,
    "upsample_bilinear": op_upsample_bilinear,
    "reshape": op_reshape,
    "squeeze": op_squeeze,
    "cast": op_cast,
    "identity": op_identity,
    "floor": op_floor,
}

#: inputs that are tuples (several bindings) rather than one value
TUPLE_INPUTS: dict[str, set[str]] = {"concat": {"values"}}


for _name, _kernel in AUDIO_KERNELS.items():
    KERNELS.setdefault(_name, _kernel)  # a generator kernel of the same name takes precedence
