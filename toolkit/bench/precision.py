"""``--precision auto``: the fastest precision this CPU computes natively whose quality the bundle's export proved.

The order is measured per CPU class (:func:`precision_order`); the proof is in the manifest: an int8 artifact exists
only above its quality floor, and bf16 compute of the fp32 artifact is judged at export and recorded as its
``compute.bf16`` (``framegen export --precision fp32,bf16``). A checkpoint alone proves nothing, so without a bundle
auto means fp32.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from framegen.models.bundle import load_bundle
from framegen.models.errors import FramegenError
from framegen.runtimes.native import cpu_flags, cpu_units
from framegen.runtimes.registry import resolve_auto
from framegen.runtimes.spec import OpenRequest
from framegen.toolkit.compare.floors import DEFAULT_FLOORS

#: ``--precision auto``: the fastest precision this CPU computes natively whose quality this bundle has proven.
AUTO_PRECISION = "auto"


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``--precision auto`` means for one bundle on this machine: the precision, why, and each one considered
    (``precision: verdict``) in the order tried."""

    precision: str
    reason: str
    considered: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line: the choice and why, then what else was weighed."""
        return f"{self.precision}: {self.reason}" + (f" ({'; '.join(self.considered)})" if self.considered else "")


def precision_order(flags: frozenset[str] | None = None) -> tuple[list[str], str]:
    """The precisions worth trying on this CPU, fastest first, and the measurement behind the order.

    On AMX (bf16 and int8 tiles) OpenVINO ran the generator in int8 between 5 % slower and 27 % faster than in bf16
    over four runs (bf16 / int8 fps: 40.7 / 41.4 and 46.8 / 44.6 on 2026-12-05, 40.2 / 51.1 and 46.5 / 50.8 on
    2026-12-06, ``framegen bench`` and ``scripts/realtime_table.py``; ONNX Runtime fp32 18-19), while bf16 keeps far
    more of the picture (55 vs 20 dB on the trained demo checkpoint; the one int8 model that passed the floor there,
    NNCF's accuracy-aware one at 40 dB, kept its full-resolution layers in fp32 and ran at fp32's speed), so bf16
    comes first there. Elsewhere int8 comes first: on AVX2 CPUs
    without VNNI OpenVINO's int8 was 2.0-2.6x ONNX Runtime fp32, and on a Zen 4 EPYC (AVX-512 bf16 and VNNI, no AMX)
    1.2-1.45x OpenVINO bf16 (``scripts/realtime_table.py``, ``scripts/measure_int8.py``, 2026-12-07).
    """
    have = cpu_flags() if flags is None else flags
    if "amx_bf16" in have:
        return ["bf16", "int8", "fp32"], "AMX: bf16 within 0.8-1.05x of int8's speed and far closer to fp32"
    bf16 = cpu_units("bf16", have)
    int8 = cpu_units("int8", have)
    order = ["int8", *(["bf16"] if bf16.native else []), "fp32"]
    return order, (f"int8 first ({int8.reason if int8.native else 'int8 on fp32 SIMD units'}); "
                   f"{'bf16 next' if bf16.native else 'no bf16 units'}")


def _proven(bundle: Any, precision: str) -> str | None:
    """Why ``bundle`` cannot back ``precision`` (``None`` when its export proved it above the default floor)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        art = next((a for a in bundle.artifacts if (a.model, a.format, a.precision, a.io) ==
                    ("generator", "onnx", "fp32", "tensor")), None)
        record = art.compute_validation("bf16") if art is not None else None
        if record is None:
            return "not judged at export (framegen export --precision fp32,bf16)"
    else:
        art = next((a for a in bundle.artifacts if (a.model, a.format, a.precision, a.io) ==
                    ("generator", "onnx", precision, "tensor")), None)
        if art is None:
            return f"no {precision} ONNX generator in the bundle"
        record = art.validation
        if record is None:
            return "no quality verdict in the manifest"
    if not record.passed:
        return f"below its floor ({record.reason})"
    floor = record.check("psnr_db")
    if floor is None or floor.limit is None or floor.limit < DEFAULT_FLOORS[precision][0]:
        return f"judged by a floor lowered below the default {DEFAULT_FLOORS[precision][0]:g} dB"
    return None


def choose_precision(bundle: str | os.PathLike[str] | None, *, options: dict[str, Any] | None = None,
                     flags: frozenset[str] | None = None) -> PrecisionChoice:
    """``--precision auto``: the first of :func:`precision_order` that this CPU computes natively, that a backend
    available here runs, and whose quality the bundle's export proved against the default floor (int8: its
    artifact's gate; bf16: the fp32 artifact's ``compute.bf16`` record). fp32 otherwise, and always without a
    bundle (a checkpoint alone proves nothing about compressed compute)."""
    order, why = precision_order(flags)
    if bundle is None:
        return PrecisionChoice("fp32", "no bundle: only a bundle's export proves bf16 / int8 quality")
    b = load_bundle(bundle)
    considered = []
    for p in order:
        units = cpu_units(p, cpu_flags() if flags is None else flags)
        problem = (None if p == "fp32" or units.native or p == "int8" else units.reason) or _proven(b, p)
        if problem is None and p != "fp32":
            req = OpenRequest(bundle=b, precision=p, options=dict(options or {}))
            try:
                resolve_auto(req)
            except FramegenError as exc:
                problem = f"no backend here runs it ({exc})"
        if problem is None:
            verdict = "the fp32 contract" if p == "fp32" else f"proven at export; {units.reason}"
            return PrecisionChoice(p, f"{verdict}; order on this CPU: {' > '.join(order)} ({why})",
                                   tuple(considered))
        considered.append(f"{p}: {problem}")
    return PrecisionChoice("fp32", "the fp32 contract", tuple(considered))
