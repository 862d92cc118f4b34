"""Kernels of the MIL operations the audio front-end programs use (framegen export --audio-frontend), written from
the MIL op reference like the generator's (:mod:`framegen.runtimes.mil.ops`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from framegen.runtimes.mil.attrs import (
    FLOATS,
    INTS,
    MilOpError,
    as_bool,
    as_float,
    as_int,
    as_ints,
    as_str,
    mask_attr,
    need_float,
    rank_axis,
    same_dtype,
    to_f32,
)

# --- audio front-end ops (framegen export --audio-frontend) ------------------------------------------------------


def op_expand_dims(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``expand_dims``: insert size-1 axes at ``axes`` (positions in the output; negative from its end)."""
    x = a["x"]
    axes = as_ints(a.get("axes"), what="axes")
    rank = x.dim() + len(axes)
    norm = sorted(rank_axis(ax, rank, "axes entry") for ax in axes)
    if len(set(norm)) != len(norm):
        raise MilOpError(f"axes {axes} repeat an axis")
    shape = list(x.shape)
    for ax in norm:
        shape.insert(ax, 1)
    return x.reshape(shape)


def op_transpose(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``transpose``: permute axes by ``perm`` (a permutation of 0..rank-1; negative entries allowed)."""
    x = a["x"]
    perm = [rank_axis(p, x.dim(), "perm entry") for p in as_ints(a.get("perm"), what="perm")]
    if sorted(perm) != list(range(x.dim())):
        raise MilOpError(f"perm {perm} is not a permutation of rank {x.dim()}")
    return x.permute(perm).contiguous()


def op_pad(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``pad``: ``pad`` holds ``[before, after]`` pairs for the last ``len(pad) / 2`` axes (the first pair for
    the outermost of them); ``mode`` constant (``constant_val``), reflect or replicate; pads are non-negative."""
    x = a["x"]
    pads = as_ints(a.get("pad"), what="pad")
    mode = as_str(a.get("mode"), "constant")
    if len(pads) % 2 or len(pads) > 2 * x.dim():
        raise MilOpError(f"pad {pads} does not fit rank {x.dim()}")
    if any(p < 0 for p in pads):
        raise MilOpError(f"negative pad {pads}")
    # F.pad lists the last axis first.
    torch_pads = [p for i in reversed(range(len(pads) // 2)) for p in (pads[2 * i], pads[2 * i + 1])]
    if mode == "constant":
        value = as_float(a.get("constant_val"), 0.0)
        if x.dtype in FLOATS:
            return F.pad(to_f32(x), torch_pads, value=value).to(x.dtype)
        return F.pad(x, torch_pads, value=value)
    if mode not in ("reflect", "replicate"):
        raise MilOpError(f"unknown pad mode {mode!r}")
    need_float(x, "x")
    n = len(pads) // 2
    lead = x.shape[: x.dim() - n]
    flat = to_f32(x).reshape(1, -1, *x.shape[x.dim() - n:])  # F.pad's reflect/replicate want (N, C, *spatial)
    return F.pad(flat, torch_pads, mode=mode).reshape(*lead, *[
        s + pads[2 * i] + pads[2 * i + 1] for i, s in enumerate(x.shape[x.dim() - n:])]).to(x.dtype)


def op_slice_by_index(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``slice_by_index``: per axis ``x[begin:end:stride]`` with Python semantics for negative indices;
    ``begin_mask`` / ``end_mask`` ignore begin / end (the whole extent in the stride's direction); ``squeeze_mask``
    drops the axis (its slice must hold one element)."""
    x = a["x"]
    rank = x.dim()
    begin = as_ints(a.get("begin"), what="begin")
    end = as_ints(a.get("end"), what="end")
    stride = as_ints(a.get("stride"), [1] * rank)
    if not len(begin) == len(end) == len(stride) == rank:
        raise MilOpError(f"begin {begin} / end {end} / stride {stride} do not fit rank {rank}")
    bmask, emask, smask = (mask_attr(a.get(k), rank) for k in ("begin_mask", "end_mask", "squeeze_mask"))
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
    need_float(x, "x")
    return torch.sqrt(to_f32(x)).to(x.dtype)


def op_log(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``log``: natural logarithm of ``x + epsilon`` (epsilon default 1e-45)."""
    x = a["x"]
    need_float(x, "x")
    eps = as_float(a.get("epsilon"), 1e-45)
    return torch.log(to_f32(x) + eps).to(x.dtype)


def op_matmul(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``matmul`` with ``transpose_x`` / ``transpose_y`` (last two axes) and numpy broadcasting of the batch
    axes; rank-1 operands as in numpy. Summed in fp32."""
    x, y = a["x"], a["y"]
    need_float(x, "x")
    same_dtype(x, y, "x/y")
    xf, yf = to_f32(x), to_f32(y)
    if as_bool(a.get("transpose_x"), False):
        if xf.dim() < 2:
            raise MilOpError("transpose_x needs rank >= 2")
        xf = xf.transpose(-1, -2)
    if as_bool(a.get("transpose_y"), False):
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
    if as_int(a.get("batch_dims"), 0) != 0:
        raise MilOpError("batch_dims other than 0 are not supported")
    axis = rank_axis(as_int(a.get("axis"), 0), x.dim())
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
    same_dtype(x, y, "x/y")
    return torch.eq(x, y)


def op_reduce_sum(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``reduce_sum`` over ``axes`` (default: all) with ``keep_dims``; floats summed in fp32."""
    x = a["x"]
    keep = as_bool(a.get("keep_dims"), False)
    axes = None if a.get("axes") is None else sorted({rank_axis(ax, x.dim()) for ax in as_ints(a["axes"])})
    if x.dtype in FLOATS:
        xf, dtype = to_f32(x), x.dtype
    elif x.dtype in INTS:
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
    same_dtype(x, y, "x/y")
    if x.dtype in FLOATS:
        return torch.floor(to_f32(x) / to_f32(y)).to(x.dtype)
    if x.dtype not in INTS:
        raise MilOpError(f"unsupported dtype {x.dtype}")
    return torch.div(x, y, rounding_mode="floor").to(x.dtype)


def op_range_1d(a: dict[str, Any]) -> torch.Tensor:
    """MIL ``range_1d``: start, start + step, ... up to (excluding) end; scalar operands of one dtype."""
    start, end, step = a["start"], a["end"], a["step"]
    same_dtype(start, end, "start/end")
    same_dtype(start, step, "start/step")
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
    need_float(x, "x")
    return torch.round(to_f32(x)).to(x.dtype)


#: the audio front-end's kernels (registered into KERNELS unless a generator kernel of the same name exists)
AUDIO_KERNELS: dict[str, Callable[[dict[str, Any]], torch.Tensor]] = {
    "round": op_round, "expand_dims": op_expand_dims, "transpose": op_transpose, "pad": op_pad,
    "slice_by_index": op_slice_by_index,
    "sqrt": op_sqrt, "log": op_log, "matmul": op_matmul, "shape": op_shape, "gather": op_gather, "equal": op_equal,
    "reduce_sum": op_reduce_sum, "floor_div": op_floor_div, "range_1d": op_range_1d,
}
