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

FLOATS = (torch.float16, torch.float32)


class MilOpError(ValueError):
    """An op's operands or attributes break the MIL spec (the interpreter adds the op's type, name and file)."""


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype == torch.float16 else x


def _need_float(x: torch.Tensor, what: str) -> None:
    if x.dtype not in FLOATS:
        raise MilOpError(f"{what} must be fp16 or fp32, got {x.dtype}")


def _ints(v: Any, default: Sequence[int] | None = None, what: str = "attribute") -> list[int]:
    if v is None:
        if default is None:
            raise MilOpError(f"missing required {what}")
        return list(default)
    if isinstance(v, torch.Tensor):
        return [int(i) for i in v.reshape(-1).tolist()]
    if isinstance(v, (list, tuple)):
        return [int(i) for i in v]
    return [int(v)]


def _int(v: Any, default: int) -> int:
    if v is None:
        return default
    vals = _ints(v)
    if len(vals) != 1:
        raise MilOpError(f"expected a scalar, got {len(vals)} values")
    return vals[0]


def _bool(v: Any, default: bool) -> bool:
    if v is None:
        return default
    return bool(v.reshape(-1)[0].item()) if isinstance(v, torch.Tensor) else bool(v)


def _float(v: Any, default: float) -> float:
    if v is None:
        return default
    return float(v.reshape(-1)[0].item()) if isinstance(v, torch.Tensor) else float(v)


def _str(v: Any, default: str | None = None) -> str:
    if v is None:
        if default is None:
            raise MilOpError("missing required string attribute")
        return default
    if isinstance(v, (list, tuple)):
        if len(v) != 1:
            raise MilOpError(f"expected one string, got {len(v)}")
        v = v[0]
    return str(v)


def _same_dtype(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.dtype != b.dtype:
        raise MilOpError(f"{what}: operand dtypes differ ({a.dtype} vs {b.dtype}); MIL requires one type T")


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
    _need_float(x, "x")
    _same_dtype(x, w, "x/weight")
    nsp = x.dim() - 2
    if nsp not in (1, 2, 3) or w.dim() != x.dim():
        raise MilOpError(f"x has rank {x.dim()} and weight rank {w.dim()}; conv needs matching rank 3-5")
    strides = _ints(a.get("strides"), [1] * nsp)
    dilations = _ints(a.get("dilations"), [1] * nsp)
    groups = _int(a.get("groups"), 1)
    pad_type = _str(a.get("pad_type"), "valid")
    if len(strides) != nsp or len(dilations) != nsp:
        raise MilOpError(f"strides {strides} / dilations {dilations} do not fit {nsp} spatial dims")
    if groups < 1 or x.shape[1] % groups or x.shape[1] // groups != w.shape[1] or w.shape[0] % groups:
        raise MilOpError(f"C_in {x.shape[1]}, groups {groups} and weight {list(w.shape)} are inconsistent")
    if bias is not None:
        _same_dtype(x, bias, "x/bias")
        if bias.dim() != 1 or bias.shape[0] != w.shape[0]:
            raise MilOpError(f"bias shape {list(bias.shape)} does not fit C_out {w.shape[0]}")
    custom = _ints(a.get("pad"), []) if pad_type == "custom" else None
    pads = conv_pads(pad_type, x.shape[2:], w.shape[2:], strides, dilations, custom)
    xf = _f32(x)
    if any(pads):
        # F.pad lists the last dimension first.
        torch_pads = [p for i in reversed(range(nsp)) for p in (pads[2 * i], pads[2 * i + 1])]
        xf = F.pad(xf, torch_pads)
    fn = (F.conv1d, F.conv2d, F.conv3d)[nsp - 1]
    out = fn(xf, _f32(w), None if bias is None else _f32(bias), stride=strides, padding=0, dilation=dilations,
             groups=groups)
    return out.to(x.dtype)


# --- elementwise -------------------------------------------------------------------------------------------------

def _binary(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], floats_only: bool = False
            ) -> Callable[[dict[str, Any]], torch.Tensor]:
    def kernel(a: dict[str, Any]) -> torch.Tensor:
        x, y = a["x"], a["y"]
        _same_dtype(x, y, "x/y")
        if floats_only:
            _need_float(x, "x")
        if x.dtype in FLOATS:
            return fn(_f32(x), _f32(y)).to(x.dtype)
        if x.dtype != torch.int32:
            raise MilOpError(f"unsupported operand dtype {x.dtype}")
        return fn(x, y).to(torch.int32)

    kernel.__doc__ = f"MIL elementwise ``{fn.__name__}`` with numpy broadcasting, computed in fp32 for floats."
    return kernel


def op_relu(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``relu``: max(x, 0) (exact in any float dtype; NaN stays NaN)."""
    x = a["x"]
    _need_float(x, "x")
    return torch.relu(x)


def op_sigmoid(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``sigmoid``: 1 / (1 + exp(-x)), evaluated in fp32 and rounded to x's dtype."""
    x = a["x"]
    _need_float(x, "x")
    return torch.sigmoid(_f32(x)).to(x.dtype)


def op_clip(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``clip``: min(max(x, alpha), beta)."""
    x = a["x"]
    _need_float(x, "x")
    alpha, beta = _float(a.get("alpha"), math.nan), _float(a.get("beta"), math.nan)
    if math.isnan(alpha) or math.isnan(beta):
        raise MilOpError("clip needs alpha and beta")
    return torch.clamp(_f32(x), min=alpha, max=beta).to(x.dtype)


def op_identity(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``identity``: x unchanged."""
    return a["x"]


def op_floor(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``floor``: the largest integer <= x, elementwise (exact in any float dtype)."""
    x = a["x"]
    _need_float(x, "x")
    return torch.floor(_f32(x)).to(x.dtype)


_CAST = {"fp16": torch.float16, "fp32": torch.float32, "int32": torch.int32, "bool": torch.bool,
         "int8": torch.int8, "uint8": torch.uint8, "int16": torch.int16}


def op_cast(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``cast`` to ``dtype``; float to integer truncates toward zero (numpy ``astype``, as coremltools'
    value inference does); to fp16 rounds to nearest even."""
    x = a["x"]
    name = _str(a.get("dtype"))
    if name not in _CAST:
        raise MilOpError(f"cast to {name!r} is not supported (knows {', '.join(_CAST)})")
    return x.to(_CAST[name])


# --- shape ---------------------------------------------------------------------------------------------------------

def op_reshape(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``reshape``: ``shape`` of positive sizes, at most one ``-1`` (inferred) and ``0`` (copy x's dim, only
    when len(shape) == rank(x))."""
    x = a["x"]
    shape = _ints(a.get("shape"), what="shape")
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
        axes = {ax % x.dim() for ax in _ints(a["axes"])}
        keep = [s for i, s in enumerate(x.shape) if not (i in axes and s == 1)]
    return x.reshape(keep)


def op_concat(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``concat`` along ``axis``; with ``interleave`` the inputs (same shape) alternate slice by slice."""
    values = a["values"]
    if not values:
        raise MilOpError("concat of nothing")
    for v in values[1:]:
        _same_dtype(values[0], v, "values")
    rank = values[0].dim()
    axis = _int(a.get("axis"), 0)
    if not -rank <= axis < rank:
        raise MilOpError(f"axis {axis} out of range for rank {rank}")
    axis %= rank
    if _bool(a.get("interleave"), False):
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
    _need_float(x, "x")
    if x.dim() < 3:
        raise MilOpError(f"x has rank {x.dim()}; upsample_bilinear needs rank >= 3")
    sh, sw = _float(a.get("scale_factor_height"), 1.0), _float(a.get("scale_factor_width"), 1.0)
    align = _bool(a.get("align_corners"), True)
    half = _bool(a.get("half_pixel_centers"), not align)
    if align and half:
        raise MilOpError("align_corners and half_pixel_centers cannot both be true")
    h_in, w_in = x.shape[-2], x.shape[-1]
    # coremltools' type inference multiplies the fp32 scale by the size and floors.
    h_out = int(np.floor(np.float32(sh) * h_in))
    w_out = int(np.floor(np.float32(sw) * w_in))
    if h_out < 1 or w_out < 1:
        raise MilOpError(f"scale factors ({sh}, {sw}) give an empty output from {h_in}x{w_in}")
    y = _lerp_axis(_f32(x), bilinear_grid(h_in, h_out, align, half), x.dim() - 2)
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


# --- audio front-end ops (framegen export --audio-frontend) ------------------------------------------------------
# Registered with setdefault below, so a kernel of the same name written into KERNELS above takes precedence.

_INTS = (torch.int32,)


def _rank_axis(axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < rank:
        raise MilOpError(f"{what} {axis} out of range for rank {rank}")
    return axis % rank


def op_expand_dims(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``expand_dims``: insert size-1 axes at ``axes`` (positions in the output; negative from its end)."""
    x = a["x"]
    axes = _ints(a.get("axes"), what="axes")
    rank = x.dim() + len(axes)
    norm = sorted(_rank_axis(ax, rank, "axes entry") for ax in axes)
    if len(set(norm)) != len(norm):
        raise MilOpError(f"axes {axes} repeat an axis")
    shape = list(x.shape)
    for ax in norm:
        shape.insert(ax, 1)
    return x.reshape(shape)


def op_transpose(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``transpose``: permute axes by ``perm`` (a permutation of 0..rank-1; negative entries allowed)."""
    x = a["x"]
    perm = [_rank_axis(p, x.dim(), "perm entry") for p in _ints(a.get("perm"), what="perm")]
    if sorted(perm) != list(range(x.dim())):
        raise MilOpError(f"perm {perm} is not a permutation of rank {x.dim()}")
    return x.permute(perm).contiguous()


def op_pad(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``pad``: ``pad`` holds ``[before, after]`` pairs for the last ``len(pad) / 2`` axes (the first pair for
    the outermost of them); ``mode`` constant (``constant_val``), reflect or replicate; pads are non-negative."""
    x = a["x"]
    pads = _ints(a.get("pad"), what="pad")
    mode = _str(a.get("mode"), "constant")
    if len(pads) % 2 or len(pads) > 2 * x.dim():
        raise MilOpError(f"pad {pads} does not fit rank {x.dim()}")
    if any(p < 0 for p in pads):
        raise MilOpError(f"negative pad {pads}")
    # F.pad lists the last axis first.
    torch_pads = [p for i in reversed(range(len(pads) // 2)) for p in (pads[2 * i], pads[2 * i + 1])]
    if mode == "constant":
        value = _float(a.get("constant_val"), 0.0)
        if x.dtype in FLOATS:
            return F.pad(_f32(x), torch_pads, value=value).to(x.dtype)
        return F.pad(x, torch_pads, value=value)
    if mode not in ("reflect", "replicate"):
        raise MilOpError(f"unknown pad mode {mode!r}")
    _need_float(x, "x")
    n = len(pads) // 2
    lead = x.shape[: x.dim() - n]
    flat = _f32(x).reshape(1, -1, *x.shape[x.dim() - n:])  # F.pad's reflect/replicate want (N, C, *spatial)
    return F.pad(flat, torch_pads, mode=mode).reshape(*lead, *[
        s + pads[2 * i] + pads[2 * i + 1] for i, s in enumerate(x.shape[x.dim() - n:])]).to(x.dtype)


def _mask(v: Any, rank: int) -> list[bool]:
    if v is None:
        return [False] * rank
    vals = [bool(b) for b in (v.reshape(-1).tolist() if isinstance(v, torch.Tensor) else list(v))]
    if len(vals) != rank:
        raise MilOpError(f"mask of {len(vals)} entries for rank {rank}")
    return vals


def op_slice_by_index(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``slice_by_index``: per axis ``x[begin:end:stride]`` with Python semantics for negative indices;
    ``begin_mask`` / ``end_mask`` ignore begin / end (the whole extent in the stride's direction); ``squeeze_mask``
    drops the axis (its slice must hold one element)."""
    x = a["x"]
    rank = x.dim()
    begin = _ints(a.get("begin"), what="begin")
    end = _ints(a.get("end"), what="end")
    stride = _ints(a.get("stride"), [1] * rank)
    if not len(begin) == len(end) == len(stride) == rank:
        raise MilOpError(f"begin {begin} / end {end} / stride {stride} do not fit rank {rank}")
    bmask, emask, smask = (_mask(a.get(k), rank) for k in ("begin_mask", "end_mask", "squeeze_mask"))
    index = []
    for i in range(rank):
        if stride[i] == 0:
            raise MilOpError("stride 0")
        b = None if bmask[i] else begin[i]
        e = None if emask[i] else end[i]
        if smask[i]:
            start = b if b is not None else 0
            if not -x.shape[i] <= start < x.shape[i]:
                raise MilOpError(f"squeezed index {start} out of range for size {x.shape[i]}")
            index.append(start % x.shape[i])
        elif stride[i] > 0:
            index.append(slice(b, e, stride[i]))
        else:
            index.append(torch.arange(x.shape[i]).numpy()[slice(b, e, stride[i])].tolist())
    out = x
    # One axis at a time (lists of indices cannot be combined with slices in one torch index).
    for i in reversed(range(rank)):
        sel = index[i]
        if isinstance(sel, slice):
            out = out[(slice(None),) * i + (sel,)]
        elif isinstance(sel, list):
            out = out.index_select(i, torch.tensor(sel, dtype=torch.int64))
        else:
            out = out.select(i, sel)
    return out.contiguous()


def op_sqrt(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``sqrt`` (IEEE: correctly rounded in fp32)."""
    x = a["x"]
    _need_float(x, "x")
    return torch.sqrt(_f32(x)).to(x.dtype)


def op_log(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``log``: natural logarithm of ``x + epsilon`` (epsilon default 1e-45)."""
    x = a["x"]
    _need_float(x, "x")
    eps = _float(a.get("epsilon"), 1e-45)
    return torch.log(_f32(x) + eps).to(x.dtype)


def op_matmul(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``matmul`` with ``transpose_x`` / ``transpose_y`` (last two axes) and numpy broadcasting of the batch
    axes; rank-1 operands as in numpy. Summed in fp32."""
    x, y = a["x"], a["y"]
    _need_float(x, "x")
    _same_dtype(x, y, "x/y")
    xf, yf = _f32(x), _f32(y)
    if _bool(a.get("transpose_x"), False):
        if xf.dim() < 2:
            raise MilOpError("transpose_x needs rank >= 2")
        xf = xf.transpose(-1, -2)
    if _bool(a.get("transpose_y"), False):
        if yf.dim() < 2:
            raise MilOpError("transpose_y needs rank >= 2")
        yf = yf.transpose(-1, -2)
    if xf.shape[-1] != yf.shape[-2 if yf.dim() > 1 else 0]:
        raise MilOpError(f"cannot multiply {list(xf.shape)} by {list(yf.shape)}")
    return torch.matmul(xf, yf).to(x.dtype)


def op_shape(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``shape``: the sizes of x as int32 [rank]."""
    return torch.tensor(list(a["x"].shape), dtype=torch.int32)


def op_gather(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``gather`` along ``axis`` (batch_dims 0): the output is x's shape with that axis replaced by indices'
    shape; negative indices count from the end; an index out of range is an error."""
    x, idx = a["x"], a["indices"]
    if idx.dtype not in (torch.int32, torch.int16, torch.int8, torch.uint8):
        raise MilOpError(f"indices must be integers, got {idx.dtype}")
    if _int(a.get("batch_dims"), 0) != 0:
        raise MilOpError("batch_dims other than 0 are not supported")
    axis = _rank_axis(_int(a.get("axis"), 0), x.dim())
    size = x.shape[axis]
    flat = idx.reshape(-1).to(torch.int64)
    if flat.numel() and (int(flat.min()) < -size or int(flat.max()) >= size):
        raise MilOpError(f"index {int(flat.min())}..{int(flat.max())} out of range for size {size} on axis {axis}")
    flat = torch.where(flat < 0, flat + size, flat)
    out = x.index_select(axis, flat)
    return out.reshape((*x.shape[:axis], *idx.shape, *x.shape[axis + 1:]))


def op_equal(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``equal``: elementwise x == y with broadcasting, bool."""
    x, y = a["x"], a["y"]
    _same_dtype(x, y, "x/y")
    return torch.eq(x, y)


def op_reduce_sum(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``reduce_sum`` over ``axes`` (default: all) with ``keep_dims``; floats summed in fp32."""
    x = a["x"]
    keep = _bool(a.get("keep_dims"), False)
    axes = None if a.get("axes") is None else sorted({_rank_axis(ax, x.dim()) for ax in _ints(a["axes"])})
    if x.dtype in FLOATS:
        xf, dtype = _f32(x), x.dtype
    elif x.dtype in _INTS:
        xf, dtype = x.to(torch.int64), x.dtype
    else:
        raise MilOpError(f"unsupported dtype {x.dtype}")
    if axes is None:
        out = xf.sum()
        if keep:
            out = out.reshape([1] * x.dim())
    else:
        out = xf.sum(dim=axes, keepdim=keep)
    return out.to(dtype)


def op_floor_div(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``floor_div``: floor(x / y) elementwise with broadcasting (the float quotient rounded once, then
    floored; integers divided exactly)."""
    x, y = a["x"], a["y"]
    _same_dtype(x, y, "x/y")
    if x.dtype in FLOATS:
        return torch.floor(_f32(x) / _f32(y)).to(x.dtype)
    if x.dtype not in _INTS:
        raise MilOpError(f"unsupported dtype {x.dtype}")
    return torch.div(x, y, rounding_mode="floor").to(x.dtype)


def op_range_1d(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``range_1d``: start, start + step, ... up to (excluding) end; scalar operands of one dtype."""
    start, end, step = a["start"], a["end"], a["step"]
    _same_dtype(start, end, "start/end")
    _same_dtype(start, step, "start/step")
    s, e, d = (float(v.reshape(-1)[0]) if v.dtype in FLOATS else int(v.reshape(-1)[0]) for v in (start, end, step))
    if d == 0:
        raise MilOpError("step 0")
    if start.dtype in FLOATS:
        return torch.arange(s, e, d, dtype=torch.float32).to(start.dtype)
    return torch.arange(s, e, d, dtype=torch.int64).to(start.dtype)


def op_round(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``round``: to the nearest integer, halves to even (numpy's rule, which coremltools' value inference
    uses); exact in any float dtype."""
    x = a["x"]
    _need_float(x, "x")
    return torch.round(_f32(x)).to(x.dtype)


for _name, _kernel in {
    "round": op_round, "expand_dims": op_expand_dims, "transpose": op_transpose, "pad": op_pad,
    "slice_by_index": op_slice_by_index,
    "sqrt": op_sqrt, "log": op_log, "matmul": op_matmul, "shape": op_shape, "gather": op_gather, "equal": op_equal,
    "reduce_sum": op_reduce_sum, "floor_div": op_floor_div, "range_1d": op_range_1d,
}.items():
    KERNELS.setdefault(_name, _kernel)


# --- compressed weights (constexpr ops, iOS16) ---------------------------------------------------------------------
# Weight compression (coremltools.optimize: 8-bit linear quantization, n-bit palettization) stores a conv weight as a
# constexpr op over stored constants. Core ML expands them at load time; the verifier does the same, once, from the
# stored bytes: these kernels are run when the program is loaded and their outputs become constants.

def _per_axis(v: torch.Tensor, rank: int, axis: int, size: int, what: str) -> torch.Tensor:
    """A scalar or a vector along ``axis`` reshaped to broadcast against a tensor of ``rank`` dims."""
    if v.dim() == 0 or v.numel() == 1:
        return v.reshape([1] * rank)
    if v.dim() != 1 or v.shape[0] != size:
        raise MilOpError(f"{what} has shape {list(v.shape)}; expected a scalar or a vector of {size} along axis {axis}")
    shape = [1] * rank
    shape[axis] = size
    return v.reshape(shape)


def op_constexpr_affine_dequantize(a: dict[str, Any]) -> torch.Tensor:
    """MIL iOS16 ``constexpr_affine_dequantize``: ``scale * (quantized_data - zero_point)`` with scale / zero point a
    scalar or a vector along ``axis``; computed in fp32 and rounded once to the scale's dtype (fp16 or fp32)."""
    q, zp, scale = a["quantized_data"], a["zero_point"], a["scale"]
    if q.dtype not in (torch.int8, torch.uint8):
        raise MilOpError(f"quantized_data must be int8 or uint8, got {q.dtype}")
    if zp.dtype not in (torch.int8, torch.uint8, torch.float32):
        raise MilOpError(f"zero_point must be int8, uint8 or fp32, got {zp.dtype}")
    _need_float(scale, "scale")
    rank = q.dim()
    axis = _int(a.get("axis"), 0)
    if not -rank <= axis < rank:
        raise MilOpError(f"axis {axis} out of range for rank {rank}")
    axis %= rank
    size = q.shape[axis]
    zp_b = _per_axis(zp.float(), rank, axis, size, "zero_point")
    scale_b = _per_axis(scale.float(), rank, axis, size, "scale")
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
    shape = _ints(a.get("shape"), what="shape")
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
