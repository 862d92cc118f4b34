"""What every MIL kernel shares: the float dtypes, the spec error, and readers of an op's attributes that refuse
what the spec does not allow."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

FLOATS = (torch.float16, torch.float32)


class MilOpError(ValueError):
    """An op's operands or attributes break the MIL spec (the interpreter adds the op's type, name and file)."""


def to_f32(x: torch.Tensor) -> torch.Tensor:
    """A float operand as fp32 (fp16 upcasts exactly)."""
    return x.float() if x.dtype == torch.float16 else x


def need_float(x: torch.Tensor, what: str) -> None:
    """Refuse a non-float operand, naming it."""
    if x.dtype not in FLOATS:
        raise MilOpError(f"{what} must be fp16 or fp32, got {x.dtype}")


def as_ints(v: Any, default: Sequence[int] | None = None, what: str = "attribute") -> list[int]:
    """An attribute as a list of ints (``default`` when absent)."""
    if v is None:
        if default is None:
            raise MilOpError(f"missing required {what}")
        return list(default)
    if isinstance(v, torch.Tensor):
        return [int(i) for i in v.reshape(-1).tolist()]
    if isinstance(v, (list, tuple)):
        return [int(i) for i in v]
    return [int(v)]


def as_int(v: Any, default: int) -> int:
    """An attribute as one int (``default`` when absent)."""
    if v is None:
        return default
    vals = as_ints(v)
    if len(vals) != 1:
        raise MilOpError(f"expected a scalar, got {len(vals)} values")
    return vals[0]


def as_bool(v: Any, default: bool) -> bool:
    """An attribute as a bool (``default`` when absent)."""
    if v is None:
        return default
    return bool(v.reshape(-1)[0].item()) if isinstance(v, torch.Tensor) else bool(v)


def as_float(v: Any, default: float) -> float:
    """An attribute as a float (``default`` when absent)."""
    if v is None:
        return default
    return float(v.reshape(-1)[0].item()) if isinstance(v, torch.Tensor) else float(v)


def as_str(v: Any, default: str | None = None) -> str:
    """An attribute as a string (``default`` when absent; an error when required)."""
    if v is None:
        if default is None:
            raise MilOpError("missing required string attribute")
        return default
    if isinstance(v, (list, tuple)):
        if len(v) != 1:
            raise MilOpError(f"expected one string, got {len(v)}")
        v = v[0]
    return str(v)


def same_dtype(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    """Refuse operands whose dtypes differ, as MIL does."""
    if a.dtype != b.dtype:
        raise MilOpError(f"{what}: operand dtypes differ ({a.dtype} vs {b.dtype}); MIL requires one type T")


INTS = (torch.int32,)


def rank_axis(axis: int, rank: int, what: str = "axis") -> int:
    """An axis in ``[-rank, rank)`` as a non-negative index."""
    if not -rank <= axis < rank:
        raise MilOpError(f"{what} {axis} out of range for rank {rank}")
    return axis % rank


def mask_attr(v: Any, rank: int) -> list[bool]:
    """A per-axis boolean mask attribute (``begin_mask`` and the like), one entry per axis."""
    if v is None:
        return [False] * rank
    vals = [bool(b) for b in (v.reshape(-1).tolist() if isinstance(v, torch.Tensor) else list(v))]
    if len(vals) != rank:
        raise MilOpError(f"mask of {len(vals)} entries for rank {rank}")
    return vals


def per_axis(v: torch.Tensor, rank: int, axis: int, size: int, what: str) -> torch.Tensor:
    """A scalar or a vector along ``axis`` reshaped to broadcast against a tensor of ``rank`` dims."""
    if v.dim() == 0 or v.numel() == 1:
        return v.reshape([1] * rank)
    if v.dim() != 1 or v.shape[0] != size:
        raise MilOpError(f"{what} has shape {list(v.shape)}; expected a scalar or a vector of {size} along axis {axis}")
    shape = [1] * rank
    shape[axis] = size
    return v.reshape(shape)
