"""Fixed tolerance profiles: how far a backend (or a port) may be from the PyTorch fp32 reference, per stage.

``framegen parity`` derives its limits from the checkpoint under test by default
(:mod:`framegen.toolkit.compare.tolerance`);
these fixed profiles are what ``--tolerances fixed`` uses, what golden-vector checks use, and what precisions the
derivation does not cover keep.

Every limit here was chosen by measurement (``scripts/measure_tolerances.py``; the numbers and the reasoning are in
docs/PARITY.md, "Tolerance profiles"): the error of correct backends (ONNX Runtime fp32 / fp16, the ``coreml-mil``
verifier) against PyTorch on real-looking frames, and the error of deliberately broken generators (the output
convolution ``outc.conv`` scaled by 0.5 % .. 20 %). A profile sits between the two, with headroom on both sides: the
fp32 and fp16 profiles both fail a 1 % scale of the output convolution. Absolute errors separate fp32 noise from
breakage; for fp16, whose rounding noise is as large as a 1 % breakage in absolute terms, the distribution metrics do
it: rounding noise is unbiased and keeps the output's spread (``bias``, ``spread_change`` of
:class:`framegen.toolkit.compare.metrics.ErrorStats`), a wrong weight or scale does not.

Stages:

- ``model_output``: the generator's float output (3, 320, 320) in [0, 1].
- ``final_frame``: the uint8 frame after paste-back, compared inside the crop box (outside it the frame must be
  bit-identical: both sides paste into the same template frame).

:func:`golden_limits` gives the per-stage limits of golden vectors (``toolkit.golden``), where the stages a port
implements before the model are held exact (integers) or to rounding noise (floats).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from framegen.models.errors import FramegenError
from framegen.toolkit.compare.floors import DEFAULT_FLOORS, DESCRIPTIONS

MODEL_OUTPUT = "model_output"
FINAL_FRAME = "final_frame"
#: Every convolution and upsample of an ONNX / Core ML artifact, each against its own derived limit
#: (:mod:`framegen.toolkit.parity.layers`); ``max_excess`` 1 means every layer within its limit.
LAYERS = "layers"


class ProfileError(FramegenError):
    """An unknown tolerance profile or precision."""


@dataclass(frozen=True)
class StageLimits:
    """Limits on one stage's :class:`framegen.toolkit.compare.metrics.ErrorStats` summary; ``None`` leaves a metric
    unchecked.

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
    max_bias: float | None = None  # on |bias|
    max_spread_change: float | None = None  # on |spread_change|
    #: stage ``layers``: the worst layer's local error as a multiple of its own derived limit (toolkit.locate)
    max_excess: float | None = None

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
            key = _KEYS.get(f.name, f.name)
            value = float(summary[key])
            if f.name in ("max_bias", "max_spread_change"):
                value = abs(value)
            ok = value <= limit if upper else value >= limit
            if not ok:  # NaN fails too: every comparison with it is False
                shown = f"|{key}|" if f.name in ("max_bias", "max_spread_change") else key
                failures.append(f"{shown} {_fmt(value)} {'>' if upper else '<'} {_fmt(limit)}")
        return failures

    def as_dict(self) -> dict[str, float]:
        """The limits that are set, JSON-able."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def exact(self) -> bool:
        """Whether the stage must match bit for bit."""
        return self.max_abs == 0


# Limit field -> summary key, where they differ.
_KEYS = {"min_cosine": "cosine", "min_psnr_db": "psnr_db", "max_share_diff": "share_diff",
         "max_share_diff_gt1": "share_diff_gt1", "max_bias": "bias", "max_spread_change": "spread_change",
         "max_excess": "excess"}


def _fmt(v: float) -> str:
    if math.isnan(v) or math.isinf(v):
        return str(v)
    if v == 0 or 1e-2 <= abs(v) < 1e4:
        return f"{v:.4g}"
    return f"{v:.2e}"


EXACT = StageLimits(max_abs=0)
#: The ``layers`` stage of every fp32 / fp16 profile: each layer within the limit derived for it.
LAYER_LIMITS = StageLimits(max_excess=1.0)


@dataclass(frozen=True)
class Profile:
    """A named set of stage limits for one artifact precision (and I/O variant)."""

    name: str
    description: str
    stages: dict[str, StageLimits]
    #: stage -> metric -> where the limit came from (derived profiles and overrides; empty for the fixed ones)
    sources: dict[str, dict[str, str]] = field(default_factory=dict)

    def limits(self, stage: str) -> StageLimits:
        """The limits of ``stage`` (ProfileError naming the profile when it has none)."""
        if stage not in self.stages:
            raise ProfileError(f"profile {self.name!r} has no limits for stage {stage!r}")
        return self.stages[stage]

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form, as written into parity reports and golden indexes."""
        d: dict[str, Any] = {"name": self.name, "description": self.description,
                             "stages": {k: v.as_dict() for k, v in self.stages.items()}}
        if self.sources:
            d["sources"] = self.sources
        return d


# Measured with scripts/measure_tolerances.py (16 real-looking frames: calibrated seed-0 'ave' generator, synthetic
# 1280x720 template on the real landmark track, real 'ave' features); the tables are in docs/PARITY.md. Float limits
# are fractions of 1, uint8 limits levels; the final frame is compared inside the crop box.
_FP32 = Profile(
    "fp32",
    "fp32 artifacts against the PyTorch fp32 reference: summation-order noise only",
    {
        # ORT / coreml-mil fp32: max 2.6e-5, mean 1.7e-6, p99 7.0e-6, |bias| 3.5e-8, |spread| 1.9e-8.
        # outc x1.01: max 2.2e-3, mean 1.2e-3, p99 2.2e-3, bias 2.1e-4, spread +0.70 % (x1.005 fails too).
        # The absolute limits leave room (38x on max) for GPU kernels' summation orders.
        MODEL_OUTPUT: StageLimits(max_abs=1e-3, mean_abs=1e-4, p99_abs=4e-4, max_bias=1e-4, max_spread_change=1e-3),
        # fp32 noise only flips truncation boundaries (one level, 0.06 % of values); cubic resampling of one-level
        # flips cannot exceed two levels (the kernel's absolute weights sum to 1.89 in 2-D).
        # outc x1.01: 31 % of values differ, mean 0.32, bias 0.048, spread +0.66 %.
        FINAL_FRAME: StageLimits(max_abs=2, mean_abs=0.03, max_share_diff=0.03, max_share_diff_gt1=0.001,
                                 max_bias=0.02, max_spread_change=1e-3),
        LAYERS: LAYER_LIMITS,
    },
)

_FP16 = Profile(
    "fp16",
    "fp16 artifacts (weights and activations in half precision) against the PyTorch fp32 reference",
    {
        # coreml-mil fp16 (every op's output rounded to fp16): max 0.055, mean 0.0044, p99 0.018, PSNR 44.6 dB; ORT
        # fp16 about half that. Rounding noise is unbiased and keeps the spread: |bias| <= 1e-4, |spread| <= 0.042 %.
        # outc x1.01 on ORT fp16: mean 0.0028 (inside the noise) but spread +0.71 %; x1.005: +0.36 %.
        MODEL_OUTPUT: StageLimits(max_abs=0.1, mean_abs=0.008, p99_abs=0.03, min_psnr_db=40.0, max_bias=1e-3,
                                  max_spread_change=2e-3),
        # coreml-mil fp16: max 14, mean 1.07, p99 4.1, PSNR 44.5 dB, 27 % differ by > 1 level, bias -0.022, spread
        # 0.039 %. outc x1.01 on ORT fp16: spread +0.67 %.
        FINAL_FRAME: StageLimits(max_abs=32, mean_abs=2.0, p99_abs=8, min_psnr_db=40.0, max_share_diff_gt1=0.5,
                                 max_bias=0.15, max_spread_change=2e-3),
        LAYERS: LAYER_LIMITS,
    },
)


def _image_profile(base: Profile, output: StageLimits) -> Profile:
    """An image-I/O variant (uint8 in, uint8 out: the /255, the mask and the truncation inside the graph): its output
    is already the truncated uint8 prediction, compared in levels with the reference pipeline's ``pred_to_uint8``.
    Until such variants are measured (issue 10) the limits are the float profile's carried through ``x * 255`` and
    the truncation, like the final frame's; the final frame keeps the float profile's limits."""
    return Profile(f"image-{base.name}",
                   f"image-I/O {base.name} variants (uint8 in/out) against the reference pipeline's uint8 prediction",
                   {MODEL_OUTPUT: output, FINAL_FRAME: base.stages[FINAL_FRAME], LAYERS: LAYER_LIMITS})


PROFILES: dict[str, Profile] = {p.name: p for p in (
    _FP32,
    _FP16,
    # fp32 noise (2.2e-4 * 255 < 1 level) only flips truncation boundaries: one level on a few values.
    _image_profile(_FP32, StageLimits(max_abs=1, mean_abs=0.03, max_share_diff=0.03, max_bias=0.02,
                                      max_spread_change=1e-3)),
    # fp16: the float limits x 255 (mean 0.008 -> 2.0 levels, max 0.1 -> 26) plus a truncation level.
    _image_profile(_FP16, StageLimits(max_abs=27, mean_abs=2.5, min_psnr_db=40.0, max_share_diff_gt1=0.5,
                                      max_bias=0.3, max_spread_change=2e-3)),
)}


def get_profile(name: str) -> Profile:
    """A profile by name (``fp32``, ``fp16``, ``image-fp32``, ``image-fp16``)."""
    if name not in PROFILES:
        raise ProfileError(f"unknown tolerance profile {name!r}; known: {', '.join(PROFILES)}")
    return PROFILES[name]


def known_stages() -> list[str]:
    """Every stage some parity profile has limits for (what ``--tolerance STAGE.METRIC=...`` may name)."""
    seen: dict[str, None] = {}
    for p in PROFILES.values():
        seen.update(dict.fromkeys(p.stages))
    return list(seen)


def profile_for(precision: str, io: str = "tensor") -> Profile:
    """The profile for an artifact of ``precision`` (``fp32``/``fp16``) and I/O variant (``tensor``/``image``)."""
    if io == "tensor" and precision not in ("fp32", "fp16") and precision in DEFAULT_FLOORS:
        # the final frame's quality floor; the model output is reported only
        psnr, level = DEFAULT_FLOORS[precision]
        return Profile(precision, DESCRIPTIONS[precision], {
            MODEL_OUTPUT: StageLimits(), FINAL_FRAME: StageLimits(max_abs=level, min_psnr_db=psnr)})
    if precision not in ("fp32", "fp16"):
        raise ProfileError(f"no tolerance profile for precision {precision!r} (fp32 or fp16)")
    if io not in ("tensor", "image"):
        raise ProfileError(f"no tolerance profile for I/O variant {io!r} (tensor or image)")
    return get_profile(precision if io == "tensor" else f"image-{precision}")


# ------------------------------------------------------------------------------------------- golden vectors

# Ports reimplement cv2's INTER_CUBIC, and OpenCV itself has two uint8 code paths: its x86-64 wheels call Intel IPP
# (floating point), its ARM wheels use 11-bit fixed point. A float64 re-implementation (a = -0.75, half-pixel centres,
# replicated border) is one level off IPP on 0.0007 % of values, and the two OpenCV paths are one level apart on
# 2.5-2.8 % (noise crops up to 4.3 %): python scripts/measure_resize.py, docs/CONTRACT.md §2.3. One level on up to 5 %
# lets a port follow either; anything beyond one level is a real bug (nearest-neighbour or bilinear resampling,
# another cubic kernel, a shifted box, swapped channels).
RESAMPLED_U8 = StageLimits(max_abs=1, max_share_diff=0.05)
# float32(k) / 255 against k * (1/255) or a float64 division: at most a few ulps of values in [0, 1].
NORMALIZED = StageLimits(max_abs=1e-6)
# Mel windows (values in [-4, 4]) computed in float32 throughout against framegen's float64: max 3.7e-5, mean 3.6e-7.
MEL = StageLimits(max_abs=1e-3, mean_abs=2e-5)


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
        # An image-I/O port emits the uint8 prediction straight from its graph: it carries the model's own error.
        "pred_320": prof.stages[MODEL_OUTPUT] if prof.name.startswith("image-") else TRUNCATED_U8,
        "pasted_328": EXACT,
        FINAL_FRAME: RESAMPLED_U8,
    }


# The audio encoder's embedding (values 0..~16) against the PyTorch encoder on 256 real speech windows: ONNX /
# coreml-mil fp32 max 3.4e-5, mean 1.3e-6; fp16 max 0.034, mean 0.0020.
EMBEDDING: dict[str, StageLimits] = {
    "fp32": StageLimits(max_abs=5e-4, mean_abs=2e-5),
    "fp16": StageLimits(max_abs=0.1, mean_abs=0.006),
}
# uint8(trunc(x * 255)) of the port's own model output: a product taken in float64 instead of float32 crosses an
# integer on a handful of values; rounding instead of truncating moves about half of them.
TRUNCATED_U8 = StageLimits(max_abs=1, max_share_diff=0.005)
