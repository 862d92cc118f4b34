"""Tolerance overrides from the command line (`STAGE.METRIC=VALUE`) and from TOML / JSON profile files."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from framegen.models.errors import FramegenError
from framegen.toolkit.compare.profiles import (
    Profile,
    StageLimits,
    known_stages,
)


class ToleranceError(FramegenError):
    """Tolerances that cannot be measured, derived or overridden as asked."""


_LIMIT_FIELDS = {f for f in StageLimits.__dataclass_fields__}


@dataclass
class Overrides:
    """Limits set by hand (``--tolerance STAGE.METRIC=VALUE``, ``--profile FILE``), applied over every profile."""

    limits: dict[str, dict[str, float]] = field(default_factory=dict)
    origin: dict[str, dict[str, str]] = field(default_factory=dict)

    def set(self, stage: str, metric: str, value: float, origin: str) -> None:
        """Record one limit (stage and metric checked; a ToleranceError names an unknown one)."""
        stages = known_stages()
        if stage not in stages:
            raise ToleranceError(f"{origin}: unknown stage {stage!r} (stages: {', '.join(stages)})")
        if metric not in _LIMIT_FIELDS:
            raise ToleranceError(f"{origin}: unknown metric {metric!r} (metrics: {', '.join(sorted(_LIMIT_FIELDS))})")
        if not math.isfinite(value):
            raise ToleranceError(f"{origin}: limit {value!r} is not a finite number")
        self.limits.setdefault(stage, {})[metric] = float(value)
        self.origin.setdefault(stage, {})[metric] = origin

    def apply(self, profile: Profile) -> Profile:
        """``profile`` with these limits replacing its own (and sources saying so)."""
        if not self.limits:
            return profile
        from dataclasses import replace

        stages = dict(profile.stages)
        sources = {k: dict(v) for k, v in profile.sources.items()}
        for stage, metrics in self.limits.items():
            stages[stage] = replace(stages.get(stage, StageLimits()), **metrics)
            for metric in metrics:
                sources.setdefault(stage, {})[metric] = self.origin[stage][metric]
        return Profile(profile.name + "+overrides", profile.description, stages, sources)


def parse_tolerance(text: str, overrides: Overrides | None = None) -> Overrides:
    """``model_output.max_abs=0.2`` into ``overrides`` (a new one by default); ToleranceError on bad syntax."""
    out = overrides if overrides is not None else Overrides()
    origin = f"--tolerance {text}"
    key, sep, value = text.partition("=")
    stage, dot, metric = key.strip().partition(".")
    if not sep or not dot:
        raise ToleranceError(f"{origin}: expected STAGE.METRIC=VALUE (e.g. model_output.max_abs=0.2)")
    try:
        number = float(value)
    except ValueError:
        raise ToleranceError(f"{origin}: {value.strip()!r} is not a number") from None
    out.set(stage.strip(), metric.strip(), number, origin)
    return out


def load_profile_file(path: str | os.PathLike[str], overrides: Overrides | None = None) -> Overrides:
    """A TOML or JSON file of limits (``{stage: {metric: value}}``, optionally under ``stages``) into overrides."""
    p = Path(path)
    out = overrides if overrides is not None else Overrides()
    try:
        text = p.read_text()
    except OSError as exc:
        raise ToleranceError(f"{p}: cannot read ({exc.strerror or exc})") from None
    try:
        if p.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ToleranceError(f"{p}: not valid {'TOML' if p.suffix.lower() == '.toml' else 'JSON'} ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("stages"), dict):
        data = data["stages"]
    if not isinstance(data, dict):
        raise ToleranceError(f"{p}: expected a table of stages, each a table of metric = limit")
    for stage, metrics in data.items():
        if not isinstance(metrics, dict):
            raise ToleranceError(f"{p}: stage {stage!r} must be a table of metric = limit")
        for metric, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ToleranceError(f"{p}: {stage}.{metric} = {value!r} is not a number")
            out.set(stage, metric, float(value), f"{p}")
    return out
