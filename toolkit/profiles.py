"""Tolerance profiles: how far a backend (or a port) may be from the PyTorch fp32 reference, per stage.

Every limit here was chosen by measurement (``scripts/measure_tolerances.py``; the numbers and the reasoning are in
docs/PARITY.md, "Tolerance profiles"): the error of correct backends (ONNX Runtime fp32 / fp16, the ``coreml-mil``
verifier) against PyTorch on real-looking frames, and the error of deliberately broken generators (the output
convolution ``outc.conv`` scaled by 0.5 %, 1 %, 2 %, 5 %, 10 %). A profile sits between the two, with headroom on
both sides: the fp32 profile fails a 1 % scale of the output convolution, the fp16 profile a 5 % one.

Stages:

- ``model_output``: the generator's float output (3, 320, 320) in [0, 1].
- ``final_frame``: the uint8 frame after paste-back, compared inside the crop box (outside it the frame must be
  bit-identical: both sides paste into the same template frame).

:func:`golden_limits` gives the per-stage limits of golden vectors (``toolkit.golden``), where the stages a port
implements before the model are held exact (integers) or to rounding noise (floats).
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from models.errors import FramegenError

MODEL_OUTPUT = "model_output"
FINAL_FRAME = "final_frame"


class ProfileError(FramegenError):
    """An unknown tolerance profile or precision."""


@dataclass(frozen=True)
class StageLimits:
    """Limits on one stage's :class:`toolkit.metrics.ErrorStats` summary; ``None`` leaves a metric unchecked.

    Absolute errors are in the stage's units (fractions of 1 for float outputs, levels for uint8). Non-finite
    candidate values always fail.
    """

    max_abs: float | None = None
    mean_abs: float | None = None
    p99_abs: float | None = None
    min_cosine: float | None = None
    min_psnr_db: float | None = None
    max_share_diff: float | None = None
    max_share_diff_gt1: float | None = None

    def check(self, summary: dict[str, Any]) -> list[str]:
        """Each broken limit as one line (``mean_abs 1.2e-03 > 1.0e-04``); empty when all hold."""
        failures = []
        if summary.get("nonfinite"):
            failures.append(f"{summary['nonfinite']} non-finite value(s)")
        for f in fields(self):
            limit = getattr(self, f.name)
            if limit is None:
                continue
            upper = not f.name.startswith("min_")
            key = f.name[4:] if f.name.startswith(("max_share", "min_")) else f.name
            value = float(summary[key])
            ok = value <= limit if upper else value >= limit
            if not ok:  # NaN fails too: every comparison with it is False
                failures.append(f"{key} {_fmt(value)} {'>' if upper else '<'} {_fmt(limit)}")
        return failures

    def as_dict(self) -> dict[str, float]:
        """The limits that are set, JSON-able."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def exact(self) -> bool:
        """Whether the stage must match bit for bit."""
        return self.max_abs == 0


def _fmt(v: float) -> str:
    if math.isnan(v) or math.isinf(v):
        return str(v)
    if v == 0 or 1e-2 <= abs(v) < 1e4:
        return f"{v:.4g}"
    return f"{v:.2e}"


EXACT = StageLimits(max_abs=0)


@dataclass(frozen=True)
class Profile:
    """A named set of stage limits for one artifact precision (and I/O variant)."""

    name: str
    description: str
    stages: dict[str, StageLimits]

    def limits(self, stage: str) -> StageLimits:
        """The limits of ``stage`` (ProfileError naming the profile when it has none)."""
        if stage not in self.stages:
            raise ProfileError(f"profile {self.name!r} has no limits for stage {stage!r}")
        return self.stages[stage]

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form, as written into parity reports and golden indexes."""
        return {"name": self.name, "description": self.description,
                "stages": {k: v.as_dict() for k, v in self.stages.items()}}


# Measured on 24 real-looking frames (calibrated seed-0 'ave' generator, synthetic 1280x720 template on the real
# landmark track, real 'ave' features), see docs/PARITY.md for the table. Float limits: fractions of 1.
_FP32 = Profile(
    "fp32",
    "fp32 artifacts against the PyTorch fp32 reference: summation-order noise only",
    {
        # ORT fp32: max 1.8e-4, mean 7.7e-6, p99 4.7e-5.  outc x1.01: max 2.2e-3, mean 1.25e-3, p99 2.2e-3.
        MODEL_OUTPUT: StageLimits(max_abs=1e-3, mean_abs=1e-4, p99_abs=4e-4),
        # ORT fp32 flips a truncation boundary on ~0.2 % of pixels; outc x1.01 on ~30 %.
        FINAL_FRAME: StageLimits(max_abs=3, max_share_diff=0.02, max_share_diff_gt1=0.002),
    },
)

_FP16 = Profile(
    "fp16",
    "fp16 artifacts (weights and activations in half precision) against the PyTorch fp32 reference",
    {
        MODEL_OUTPUT: StageLimits(max_abs=0.25, mean_abs=4e-3, p99_abs=3e-2),
        FINAL_FRAME: StageLimits(max_abs=64, max_share_diff=0.85, max_share_diff_gt1=0.45, min_psnr_db=30.0),
    },
)


def _image_profile(base: Profile) -> Profile:
    """An image-I/O variant (uint8 in, uint8 out: the /255, mask and truncation inside the graph): its output is
    already the truncated uint8 prediction, so ``model_output`` is compared in levels against the reference's
    ``pred_to_uint8``. The limits follow from the float profile's (one level is 1/255), plus the one level a
    truncation boundary adds; the final frame is unchanged."""
    float_limits = base.stages[MODEL_OUTPUT]
    final = base.stages[FINAL_FRAME]
    return Profile(
        f"image-{base.name}",
        f"image-I/O {base.name} variants (uint8 in/out) against the reference pipeline's uint8 prediction",
        {
            MODEL_OUTPUT: StageLimits(max_abs=math.ceil(float_limits.max_abs * 255) + 1,
                                      mean_abs=float_limits.mean_abs * 255 + 0.5,
                                      max_share_diff=final.max_share_diff),
            FINAL_FRAME: final,
        },
    )


PROFILES: dict[str, Profile] = {p.name: p for p in (_FP32, _FP16, _image_profile(_FP32), _image_profile(_FP16))}


def get_profile(name: str) -> Profile:
    """A profile by name (``fp32``, ``fp16``, ``image-fp32``, ``image-fp16``)."""
    if name not in PROFILES:
        raise ProfileError(f"unknown tolerance profile {name!r}; known: {', '.join(PROFILES)}")
    return PROFILES[name]


def profile_for(precision: str, io: str = "tensor") -> Profile:
    """The profile for an artifact of ``precision`` (``fp32``/``fp16``) and I/O variant (``tensor``/``image``)."""
    if precision not in ("fp32", "fp16"):
        raise ProfileError(f"no tolerance profile for precision {precision!r} (fp32 or fp16)")
    if io not in ("tensor", "image"):
        raise ProfileError(f"no tolerance profile for I/O variant {io!r} (tensor or image)")
    return get_profile(precision if io == "tensor" else f"image-{precision}")


# ------------------------------------------------------------------------------------------- golden vectors

# Ports reimplement cv2's INTER_CUBIC; cv2 computes uint8 resizes in 11-bit fixed point, a float reimplementation
# lands one level away on some pixels (measured: see docs/PARITY.md). Anything beyond one level is a real bug
# (nearest-neighbour or bilinear resampling, a different cubic kernel, swapped channels).
RESAMPLED_U8 = StageLimits(max_abs=1, max_share_diff=0.02)
# float32(k) / 255 against k * (1/255) or a float64 division: at most a few ulps of values in [0, 1].
NORMALIZED = StageLimits(max_abs=1e-6)
# Mel windows (values in [-4, 4]) from float32 FFTs / filterbanks against the float64 reference.
MEL = StageLimits(max_abs=2e-2, mean_abs=5e-4)


def golden_limits(profile: str | Profile, audio: bool) -> dict[str, StageLimits]:
    """Per-stage limits of a golden check under ``profile`` (the precision the port runs its models in).

    Only the model output and the audio encoder's embedding depend on the precision. The other stages are either
    inputs (exact) or deterministic functions that ``golden check`` recomputes from the port's own earlier stages
    (``toolkit.golden.DERIVED_FROM``), so their limits are those of a faithful re-implementation: exact for copies
    and integer arithmetic, one level for cv2's cubic resampling and for the float32 ``x * 255`` truncation.
    ``audio``: the golden was made from audio (its embeddings carry the encoder's error into the audio window)
    rather than from precomputed features (then the audio window is a pure gather: exact).
    """
    prof = get_profile(profile) if isinstance(profile, str) else profile
    base = prof.name.removeprefix("image-")
    embedding = EMBEDDING[base]
    return {
        "frame": EXACT,
        "landmarks": EXACT,
        "crop_box": EXACT,
        "crop_328": RESAMPLED_U8,
        "reference_320": EXACT,
        "masked_320": EXACT,
        "model_input": NORMALIZED,
        "mel_window": MEL,
        "embedding": embedding,
        "audio_window": embedding if audio else EXACT,
        MODEL_OUTPUT: get_profile(base).stages[MODEL_OUTPUT],
        "pred_320": TRUNCATED_U8,
        "pasted_328": EXACT,
        FINAL_FRAME: RESAMPLED_U8,
    }


# The audio encoder's embedding (values 0..~10) in fp32 / fp16 against the PyTorch encoder.
EMBEDDING: dict[str, StageLimits] = {
    "fp32": StageLimits(max_abs=1e-3, mean_abs=1e-4),
    "fp16": StageLimits(max_abs=0.1, mean_abs=1e-2),
}
# uint8(trunc(x * 255)) of the port's own model output: a product taken in float64 instead of float32 crosses an
# integer on a handful of values; rounding instead of truncating moves about half of them.
TRUNCATED_U8 = StageLimits(max_abs=1, max_share_diff=0.005)


# ------------------------------------------------------------------------- deliberately broken generators

def output_conv_initializers(model: Any) -> list[Any]:
    """The ONNX initializers of the generator's output convolution (``outc.conv`` weight and bias).

    Found through the graph, not by name alone: the last Conv node before the final Sigmoid, whose weight and bias
    inputs are initializers (exporters may rename them).
    """
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    sig = next((n for n in reversed(graph.node) if n.op_type == "Sigmoid"), None)
    node = producers.get(sig.input[0]) if sig is not None else None
    # fp16 exports may put a Cast between the Conv and the Sigmoid.
    while node is not None and node.op_type == "Cast":
        node = producers.get(node.input[0])
    if node is None or node.op_type != "Conv":
        raise ProfileError("no Conv feeding the final Sigmoid: not a SyncTalk_2D generator graph")
    found = []
    for name in node.input[1:]:
        src = name
        # fp16 graphs may keep fp32 initializers behind a Cast (or DequantizeLinear-like) node.
        while src not in inits and src in producers and producers[src].op_type in ("Cast", "Identity"):
            src = producers[src].input[0]
        if src not in inits:
            raise ProfileError(f"output convolution input {name!r} is not an initializer")
        found.append(inits[src])
    return found


def scale_onnx_output_conv(path: str | os.PathLike[str], factor: float) -> list[str]:
    """Multiply the output convolution's weight and bias of an ONNX generator by ``factor``, in place.

    Used by the tolerance measurement and the sensitivity tests: a generator broken so slightly that only the
    numbers can tell. Returns the initializer names changed.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(os.fspath(path))
    names = []
    for init in output_conv_initializers(model):
        arr = numpy_helper.to_array(init)
        scaled = (arr.astype(np.float64) * factor).astype(arr.dtype)
        init.CopyFrom(numpy_helper.from_array(scaled, init.name))
        names.append(init.name)
    tmp = Path(path).with_name(f".{Path(path).name}.partial")
    onnx.save(model, os.fspath(tmp))
    os.replace(tmp, path)
    return names


def broken_bundle(bundle: str | os.PathLike[str], out: str | os.PathLike[str], factor: float,
                  precision: str = "fp32") -> Path:
    """A copy of ``bundle`` at ``out`` whose ONNX ``precision`` generator has its output convolution scaled by
    ``factor``, with the manifest's sha256 updated so that only the numbers reveal the change."""
    import json

    from exporters.bundle import MANIFEST, load_bundle, sha256_path

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
