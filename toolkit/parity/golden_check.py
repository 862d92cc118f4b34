"""`golden check`: a candidate port's values judged stage by stage against golden vectors, each stage on the
candidate's own inputs to it, and the report."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from framegen.models.contract import CROP_SIZE, audio_shape
from framegen.models.errors import FramegenError
from framegen.toolkit.common.console import note, out
from framegen.toolkit.common.files import jsonable
from framegen.toolkit.compare.metrics import ErrorStats, outside_box_diffs
from framegen.toolkit.compare.profiles import EXACT, FINAL_FRAME, MODEL_OUTPUT, StageLimits
from framegen.toolkit.parity.golden import (
    DERIVED_FROM,
    GOLDEN_PROFILES,
    INDEX,
    INNER,
    GoldenError,
    contained,
    golden_model,
    load_index,
    read_stage,
    write_bin,
)


@dataclass
class StageCheck:
    """One stage of a golden check: how many cases the candidate holds, the metrics, the verdict."""

    name: str
    limits: StageLimits
    cases: int = 0
    total_cases: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    vs_golden: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    #: judged on the candidate's own inputs (recomputed, or the bundle's model run on them), not the golden values
    local: bool = False
    #: the failing upstream stage a failure of a stage compared with the golden values is blamed on
    inherited_from: str | None = None
    #: end to end: the largest |candidate - golden| the upstream stages' own limits allow (None: not composable)
    e2e_max: float | None = None

    @property
    def present(self) -> bool:
        """The candidate holds this stage for at least one case."""
        return self.cases > 0

    @property
    def status(self) -> str:
        """``pass``, ``FAIL`` (its own computation departs), ``inherited`` (it departs only because an earlier stage
        did) or ``absent``."""
        if not self.present:
            return "absent"
        if not self.failures:
            return "pass"
        return "inherited" if self.inherited_from else "FAIL"

    @property
    def e2e_within(self) -> bool | None:
        """Whether the end-to-end difference stays inside the composed limit (None when there is none)."""
        if self.e2e_max is None or not self.vs_golden:
            return None
        return bool(self.vs_golden["max_abs"] <= self.e2e_max * (1 + 1e-9))

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"stage": self.name, "status": self.status, "cases": self.cases, "of": self.total_cases,
                "judged_on": "own inputs" if self.local else "golden values",
                "checked_against": list(DERIVED_FROM.get(self.name, ("golden",))),
                "inherited_from": self.inherited_from,
                "limits": self.limits.as_dict(), "metrics": jsonable(self.metrics),
                "end_to_end": {"vs_golden": jsonable(self.vs_golden), "composed_max_abs": self.e2e_max,
                               "within": self.e2e_within},
                "failures": self.failures}


@dataclass
class GoldenReport:
    """The outcome of ``golden check``."""

    golden: str
    candidate: str
    profile: str
    stages: list[StageCheck]
    notes: list[str] = field(default_factory=list)

    @property
    def first_departure(self) -> str | None:
        """The first stage, in pipeline order, that fails."""
        return next((s.name for s in self.stages if s.status == "FAIL"), None)

    @property
    def passed(self) -> bool:
        """At least one stage present and none failing (on its own or inherited)."""
        return any(s.present for s in self.stages) and all(not s.failures for s in self.stages)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"golden": self.golden, "candidate": self.candidate, "profile": self.profile, "passed": self.passed,
                "first_departure": self.first_departure, "stages": [s.as_dict() for s in self.stages],
                "notes": self.notes}


def _planes(image: np.ndarray) -> np.ndarray:
    """``framegen.toolkit.inputs.preprocess.model_input`` of a 328 crop holding ``image`` (320x320x3 uint8) at its
    centre."""
    from framegen.models.pixels import model_input

    crop = np.zeros((CROP_SIZE, CROP_SIZE, 3), dtype=np.uint8)
    crop[INNER, INNER] = image
    return model_input(crop)


def recompute(stage: str, get: Callable[[str], np.ndarray]) -> np.ndarray | None:
    """The reference pipeline's value of ``stage`` computed from its input stages (``get(name)``), or ``None`` for
    the stages that are checked against the golden values themselves (inputs, the model, the audio encoder)."""
    from framegen.models.pixels import pred_to_uint8
    from framegen.toolkit.inputs.preprocess import crop_328, crop_box, paste_back

    if stage == "crop_box":
        return np.asarray(crop_box(get("landmarks")), dtype=np.int32)
    if stage == "crop_328":
        return crop_328(get("frame"), tuple(int(v) for v in get("crop_box")))
    if stage == "reference_320":
        return get("crop_328")[INNER, INNER]
    if stage == "masked_320":
        return np.rint(_planes(get("reference_320"))[3:] * np.float32(255.0)).astype(np.uint8).transpose(1, 2, 0)
    if stage == "model_input":
        return np.concatenate([_planes(get("reference_320"))[:3], _planes(get("masked_320"))[:3]])
    if stage == "pred_320":
        return pred_to_uint8(get(MODEL_OUTPUT))
    if stage == "pasted_328":
        pasted = np.array(get("crop_328"), copy=True)
        pasted[INNER, INNER] = get("pred_320")
        return pasted
    if stage == FINAL_FRAME:
        pasted = get("pasted_328")
        return paste_back(get("frame"), tuple(int(v) for v in get("crop_box")), pasted, pasted[INNER, INNER])
    return None




# Every stage's inputs, the ones compared with the golden values included: a failure of a stage that is judged on
# the golden values is blamed on a failing stage upstream of it, when there is one.
UPSTREAM: dict[str, tuple[str, ...]] = {
    **DERIVED_FROM, "frame": (), "landmarks": (), "mel_window": (), "embedding": ("mel_window",),
    "audio_window": ("embedding",), MODEL_OUTPUT: ("model_input", "audio_window"),
}


# How far a difference of one unit in a stage's input can move it: the cubic kernel's absolute weights sum to
# 1.375 per axis (a = -0.75, at offset 0.5), 1.89 in 2-D; /255 and x 255 change units; copies pass it on.
_GAIN = {("frame", "crop_328"): 1.375 ** 2, ("pasted_328", FINAL_FRAME): 1.375 ** 2,
         ("reference_320", "model_input"): 1 / 255, ("masked_320", "model_input"): 1 / 255,
         (MODEL_OUTPUT, "pred_320"): 255.0}


def check_golden(golden: str | os.PathLike[str], candidate: str | os.PathLike[str], *,
                 profile: str = "fp32", bundle: str | os.PathLike[str] | None = None) -> GoldenReport:
    """Compare every stage file the candidate holds under ``profile``'s limits; GoldenError when it holds none.

    Inputs, the model output and the audio stages are compared with the golden values. Every other stage is a
    deterministic function of earlier ones (:data:`DERIVED_FROM`): it is compared with that function applied to the
    candidate's own earlier stages (the golden's where the candidate has none), so a stage fails only where the port
    computes it wrongly, not because an earlier stage (or the model's precision) moved its inputs. Its distance to
    the golden value is reported too (``vs golden``). The final frame is compared inside the crop box and must be
    identical to the frame outside it.

    With ``bundle`` (the bundle the golden was written from) the model is judged the same way: its artifact for the
    profile (fp32 / fp16 ONNX, on ONNX Runtime's CPU provider) runs on the candidate's own ``model_input`` and
    ``audio_window``, so a port whose crop differs by a level here and there is not told its model is wrong.
    Without it the model output is compared with the golden values, and a note says so.
    """
    if profile not in GOLDEN_PROFILES:
        raise GoldenError(f"--profile {profile!r}: golden checks know {', '.join(GOLDEN_PROFILES)}")
    index = load_index(golden)
    groot, croot = Path(golden), Path(candidate)
    if not croot.is_dir():
        raise GoldenError(f"{croot}: no such candidate directory")
    if profile not in index["tolerances"]:
        raise GoldenError(f"{Path(golden) / INDEX}: holds no tolerances for profile {profile!r}")
    tolerances = index["tolerances"][profile]
    model = golden_model(bundle, index, profile) if bundle is not None else None
    comparison = _Comparison(groot, croot, index, [
        StageCheck(s["name"], StageLimits(**tolerances[s["name"]]), total_cases=len(index["cases"]))
        for s in index["stages"]], model=model)
    try:
        for case in index["cases"]:
            comparison.compare_case(case)
    finally:
        if model is not None:
            model.close()
    comparison.finish()
    if not any(c.present for c in comparison.checks):
        first = index["cases"][0]["files"].get(MODEL_OUTPUT, "case_000/model_output.bin") if index["cases"] else ""
        raise GoldenError(f"{croot}: holds no golden stage file (expected e.g. {croot / first})")
    notes = []
    if model is None and any(c.present for c in comparison.checks if c.name == MODEL_OUTPUT):
        notes.append("model_output compared with the golden values (give --bundle to judge the model on the "
                     "candidate's own model_input and audio_window)")
    extra = sorted(p.relative_to(croot).as_posix() for p in croot.rglob("*.bin")
                   if p.relative_to(croot).as_posix() not in comparison.known)
    if extra:
        notes.append(f"ignored {len(extra)} file(s) that are no golden stage: {', '.join(extra[:5])}"
                     f"{' ...' if len(extra) > 5 else ''}")
    return GoldenReport(os.fspath(golden), os.fspath(candidate), profile, comparison.checks, notes)


class _Comparison:
    """The streaming state of one golden check: per stage, the candidate against its expected value (recomputed
    from its own earlier stages) and against the golden value."""

    def __init__(self, groot: Path, croot: Path, index: dict[str, Any], checks: list[StageCheck],
                 model: Any = None) -> None:
        self.groot, self.croot, self.checks = groot, croot, checks
        self.model = model
        self.mode = str(index.get("mode", "ave"))
        self.specs = {s["name"]: s for s in index["stages"]}
        self.stats = {c.name: ErrorStats(self._kind(c.name)) for c in checks}
        self.drift = {c.name: ErrorStats(self._kind(c.name)) for c in checks}
        self.outside = dict.fromkeys(self.specs, 0)
        self.known: set[str] = set()
        self.local: set[str] = set(DERIVED_FROM)  # stages judged on the candidate's own inputs
        self.limits = {c.name: c.limits for c in checks}
        self.response: dict[str, float] = {}  # model stage -> largest response to input differences at the limits

    def _kind(self, name: str) -> str:
        return "float" if self.specs[name]["dtype"].startswith("float") else "uint8"

    def _read(self, root: Path, case: dict[str, Any], name: str) -> np.ndarray:
        # A stage's check can need another stage of the golden set (crop_box needs its landmarks): an index that
        # lacks it is the golden set's fault, named as such rather than a KeyError.
        spec = self.specs.get(name)
        rel = case.get("files", {}).get(name)
        if spec is None or rel is None:
            raise GoldenError(f"{root}: case {case.get('case')} has no {name!r} stage "
                              f"({'not in the index' if spec is None else 'no file for it'}), which checking needs")
        path = contained(root, rel, f"{root}: case {case.get('case')} {name}")
        return read_stage(path, spec["dtype"], spec["shape"])

    def compare_case(self, case: dict[str, Any]) -> None:
        """Compare every stage file the candidate holds for ``case``."""
        golden_vals: dict[str, np.ndarray] = {}
        cand_vals: dict[str, np.ndarray] = {}

        def gold(name: str) -> np.ndarray:
            if name not in golden_vals:
                golden_vals[name] = self._read(self.groot, case, name)
            return golden_vals[name]

        def own(name: str) -> np.ndarray:
            return cand_vals[name] if name in cand_vals else gold(name)

        for c in self.checks:
            rel = case["files"].get(c.name)
            if rel is None:
                continue
            self.known.add(rel)
            if not contained(self.croot, rel, f"{self.croot}: case {case.get('case')} {c.name}").is_file():
                continue
            c.cases += 1
            try:
                got = self._read(self.croot, case, c.name)
            except GoldenError as exc:
                c.failures.append(f"case {case['case']}: {exc}")
                continue
            cand_vals[c.name] = got
            self._compare_stage(c.name, case, got, gold, own)
        if self.model is not None:
            self._measure_response(case, gold)

    def _measure_response(self, case: dict[str, Any], gold: Callable[[str], np.ndarray]) -> None:
        """How far the bundle's models move when their golden inputs move as far as the upstream limits allow: the
        crop by one level on its allowed share of values, the audio window and the mel window by their limits'
        largest difference on the share their mean limit allows (signs and places seeded by the case)."""
        rng = np.random.default_rng([7, int(case["case"])])

        def nudge(x: np.ndarray, lim: StageLimits, step: float) -> np.ndarray:
            share = lim.max_share_diff if lim.max_share_diff is not None else (
                min(1.0, (lim.mean_abs or 0.0) / lim.max_abs) if lim.max_abs else 0.0)
            hit = rng.random(x.shape) < share
            return x + hit * rng.choice([-step, step], x.shape)

        if MODEL_OUTPUT in self.specs and "crop_328" in self.limits:
            crop = self.limits["crop_328"]
            ref = np.clip(nudge(gold("reference_320").astype(np.float64), crop, 1.0), 0, 255).astype(np.uint8)
            planes = _planes(ref)
            masked = recompute("masked_320", lambda n: ref)
            image = np.concatenate([planes[:3], _planes(masked)[:3]])[None]
            audio_lim = self.limits.get("audio_window", EXACT)
            audio = gold("audio_window").astype(np.float64)
            if audio_lim.max_abs:
                audio = nudge(audio, audio_lim, audio_lim.max_abs)
            audio = audio.astype(np.float32).reshape(1, *audio_shape(self.mode))
            moved = self.model.generator.infer(image, audio)[0]
            here = float(np.abs(moved - gold(MODEL_OUTPUT)).max())
            self.response[MODEL_OUTPUT] = max(self.response.get(MODEL_OUTPUT, 0.0), here)
        if self.model.encoder is not None and "mel_window" in self.limits:
            mel_lim = self.limits["mel_window"]
            mel = nudge(gold("mel_window").astype(np.float64), mel_lim, mel_lim.max_abs or 0.0).astype(np.float32)
            here = float(np.abs(self.model.encoder(mel[None])[0] - gold("embedding")).max())
            self.response["embedding"] = max(self.response.get("embedding", 0.0), here)

    def _compare_stage(self, name: str, case: dict[str, Any], got: np.ndarray, gold: Callable,
                       own: Callable) -> None:
        from framegen.toolkit.inputs.preprocess import check_box

        want = gold(name)
        try:
            expected = recompute(name, own)
            if name in (MODEL_OUTPUT, "embedding"):
                expected = self._run_model(name, own)
                if expected is not None:
                    self.local.add(name)
        except (FramegenError, ValueError):
            expected = recompute(name, gold)  # the port's own inputs are unusable (e.g. a box off the frame)
        if name == FINAL_FRAME:
            box = [int(v) for v in own("crop_box")]
            try:
                check_box((box[0], box[1], box[2], box[3]), got.shape[1], got.shape[0], "crop_box")
            except FramegenError:
                box = case["crop_box"]
            x0, y0, x1, y1 = box
            self.stats[name].update(expected[y0:y1, x0:x1][None], got[y0:y1, x0:x1][None], [case["case"]],
                                    offset=(y0, x0, 0))
            self.outside[name] += outside_box_diffs(own("frame"), got, (box[0], box[1], box[2], box[3]))
        else:
            self.stats[name].update((want if expected is None else expected)[None], got[None], [case["case"]])
        self.drift[name].update(want[None], got[None], [case["case"]])

    def _run_model(self, name: str, own: Callable[[str], np.ndarray]) -> np.ndarray | None:
        """The bundle's generator (or audio encoder) on the candidate's own inputs (the golden's where it has none);
        ``None`` when there is no such model to run."""
        if self.model is None:
            return None
        if name == "embedding":
            if self.model.encoder is None:
                return None
            return self.model.encoder(np.asarray(own("mel_window"), dtype=np.float32)[None])[0]
        image = np.asarray(own("model_input"), dtype=np.float32)[None]
        audio = np.asarray(own("audio_window"), dtype=np.float32).reshape(1, *audio_shape(self.mode))
        return self.model.generator.infer(image, audio)[0]

    def finish(self) -> None:
        """Judge every present stage."""
        for c in self.checks:
            if not c.present:
                continue
            if self.stats[c.name].count:
                c.metrics = self.stats[c.name].summary()
                c.vs_golden = self.drift[c.name].summary()
                c.failures += c.limits.check(c.metrics)
            if self.outside[c.name]:
                c.failures.append(f"{self.outside[c.name]} value(s) outside the crop box differ from frame")
        self._blame()
        self._compose()

    def _blame(self) -> None:
        """A stage compared with the golden values that fails after a failing stage upstream inherits the failure."""
        by_name = {c.name: c for c in self.checks}
        for c in self.checks:
            c.local = c.name in self.local
            if not c.failures or c.local:
                continue
            todo, seen = list(UPSTREAM.get(c.name, ())), set()
            while todo:
                u = todo.pop(0)
                if u in seen or u not in by_name:
                    continue
                seen.add(u)
                if by_name[u].failures:
                    c.inherited_from = by_name[u].inherited_from or u
                    break
                todo.extend(UPSTREAM.get(u, ()))

    def _compose(self) -> None:
        """Each stage's end-to-end limit: its own max limit plus the largest difference its inputs may carry in
        (their composed limits times the gain of the step; for a model, its measured response)."""
        composed: dict[str, float | None] = {}
        for c in self.checks:
            own = c.limits.max_abs
            ups = [u for u in UPSTREAM.get(c.name, ()) if u in composed]
            if own is None or any(composed[u] is None for u in ups):
                composed[c.name] = None
            elif c.name in (MODEL_OUTPUT, "embedding") and any(composed[u] for u in ups):
                response = self.response.get(c.name)
                composed[c.name] = None if response is None else own + response
            else:
                carried = [_GAIN.get((u, c.name), 1.0) * composed[u] for u in ups]  # type: ignore[operator]
                composed[c.name] = own + max(carried, default=0.0)
            c.e2e_max = composed[c.name]


_LIMIT_SHORT = {"max_abs": "max", "mean_abs": "mean", "p99_abs": "p99", "min_cosine": "cos>=", "min_psnr_db": "PSNR>=",
                "max_share_diff": "≠", "max_share_diff_gt1": ">1", "max_bias": "|bias|",
                "max_spread_change": "|spread|"}


def _short(v: float | None) -> str:
    """Three significant digits: the golden table fits 80 columns."""
    return "-" if v is None else f"{v:.3g}"


def print_golden_report(report: GoldenReport) -> None:
    """The stage table in pipeline order, 80 columns wide: the verdict and the first departing stage first."""
    from rich import box
    from rich.table import Table

    first = report.first_departure
    present = sum(s.present for s in report.stages)
    inherited = [s.name for s in report.stages if s.status == "inherited"]
    if report.passed:
        verdict = f"[green]golden: PASS, all {present} stage(s) present pass[/green]"
    elif first is not None:
        verdict = f"[red]golden: FAIL, first departure at stage {first!r}[/red]"
    else:
        verdict = f"[red]golden: FAIL, at {', '.join(inherited)} (inherited)[/red]"
    out.print(verdict, soft_wrap=True)
    table = Table(title=f"{report.profile} profile. on: judged on the candidate's own inputs or on the golden "
                        "values. e2e: max |Δ| to the golden value (yellow: over e2e ≤, its composed limit)",
                  title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    for col in ("stage", "result", "on", "max |Δ|", "≠", "e2e", "e2e ≤"):
        table.add_column(col, justify="left" if col in ("stage", "result", "on") else "right", no_wrap=True)
    for s in report.stages:
        m, g = s.metrics, s.vs_golden
        status = {"pass": "[green]pass[/green]", "FAIL": "[red]FAIL[/red]", "absent": "[dim]absent[/dim]",
                  "inherited": "[yellow]inherited[/yellow]"}[s.status]
        if s.name == first:
            status += " [red bold]<- 1st[/red bold]"
        e2e = _short(g.get("max_abs")) if g else "-"
        if s.e2e_within is False:
            e2e = f"[yellow]{e2e}[/yellow]"
        table.add_row(s.name, status, ("own" if s.local else "gold") if s.present else "",
                      _short(m.get("max_abs")) if m else "-",
                      f"{100 * m['share_diff']:.2g}%" if m and m.get("share_diff") is not None else "-",
                      e2e, _short(s.e2e_max))
    out.print(table)
    for n in report.notes:
        note(n)
    for s in report.stages:
        where = (f" (worst: case {s.metrics['worst_frame']} at {s.metrics['worst_index']})"
                 if s.metrics and s.metrics["max_abs"] else "")
        if s.failures:
            tag = f"[yellow]inherited from {s.inherited_from}:[/yellow]" if s.inherited_from else "[red]FAIL[/red]"
            out.print(f"{tag} {s.name}: {'; '.join(s.failures)}{where}", soft_wrap=True)
    over = [s.name for s in report.stages if s.e2e_within is False]
    if over:
        note(f"end to end over the composed limit at {', '.join(over)} (the stages' own verdicts above decide)")
    out.print(verdict, soft_wrap=True)


def copy_candidate(golden: str | os.PathLike[str], out: str | os.PathLike[str],
                   stages: list[str] | None = None,
                   transform: Callable[[str, np.ndarray, dict[str, Any]], np.ndarray | None] | None = None) -> Path:
    """A candidate made from the golden's own files (``stages`` only; all by default), each optionally passed
    through ``transform(stage, array, case) -> array`` (``None`` drops the file). For tests and for port authors
    who want a starting point."""
    index = load_index(golden)
    specs = {s["name"]: s for s in index["stages"]}
    dest = Path(out)
    for case in index["cases"]:
        (dest / case["dir"]).mkdir(parents=True, exist_ok=True)
        for name, rel in case["files"].items():
            if stages is not None and name not in stages:
                continue
            spec = specs[name]
            arr = read_stage(Path(golden) / rel, spec["dtype"], spec["shape"])
            if transform is not None:
                arr = transform(name, arr, case)
                if arr is None:
                    continue
            write_bin(dest / rel, arr, spec["dtype"])
    return dest
