"""The parity report on the console: the table, the limits in force, per-layer lines and one line per failure."""

from __future__ import annotations

import os

from framegen.toolkit.common.console import note as _note
from framegen.toolkit.common.console import out
from framegen.toolkit.compare.metrics import cell, wide_console
from framegen.toolkit.compare.profiles import FINAL_FRAME, LAYERS, MODEL_OUTPUT, Profile
from framegen.toolkit.compare.results import (
    CandidateResult,
    ParityReport,
)
from framegen.toolkit.parity.layers import LocateResult

_SHORT = {MODEL_OUTPUT: "output", FINAL_FRAME: "frame"}


_LIMIT_SHORT = {"max_abs": "max", "mean_abs": "mean", "p99_abs": "p99", "min_cosine": "cos>=",
                "min_psnr_db": "PSNR>=", "max_share_diff": "≠", "max_share_diff_gt1": ">1", "max_bias": "|bias|",
                "max_spread_change": "|spread|", "max_excess": "x own limit"}


def print_tolerances(report: ParityReport) -> None:
    """Every limit in force, per profile and stage, with where it came from."""
    from rich import box
    from rich.table import Table

    if report.tolerances is not None:
        out.print(report.tolerances.describe(), soft_wrap=True)
    profiles: dict[str, Profile] = {}
    for c in report.candidates:
        if c.limits_profile is not None:
            profiles.setdefault(c.limits_profile.name, c.limits_profile)
    if not profiles:
        return
    table = Table(title="limits in force", title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    for col in ("profile", "stage", "limit", "value", "from"):
        table.add_column(col, justify="right" if col == "value" else "left", no_wrap=col != "from")
    for prof in profiles.values():
        for stage, limits in prof.stages.items():
            for metric, value in limits.as_dict().items():
                table.add_row(prof.name, _SHORT.get(stage, stage), _LIMIT_SHORT.get(metric, metric), cell(value),
                              prof.sources.get(stage, {}).get(metric, ""))
    wide_console().print(table)


def _print_layers(cand: CandidateResult, table: bool) -> None:
    """One line for a candidate's ``layers`` stage, and its per-layer table when it failed (or ``table``)."""
    stage = next((s for s in cand.stages if s.stage == LAYERS), None)
    if stage is None or cand.locate is None:
        return
    m = stage.metrics
    if m.get("worst_layer") is not None:
        out.print(f"layers {cand.label}: {m['layers']} layers on frame {m['frame']}, the closest to its limit "
                  f"{m['worst_layer']} at {m['excess']:.2f} of it (local rel rms {cell(m['worst_local_rel_rms'])}): "
                  + ("[green]pass[/green]" if stage.passed else "[red]FAIL[/red]"), soft_wrap=True)
    if table or not cand.passed:
        print_locate(cand.locate, cand.label)


def print_report(report: ParityReport, limits: bool = True) -> None:
    """The console table (rich, stdout), the limits in force, per-layer tables of located candidates and one line
    per failure."""
    from rich import box
    from rich.table import Table

    ref = report.reference
    speech = sum(1 for f in report.frames if f.get("audio", "speech") == "speech")
    out.print(f"reference: {ref.get('name')} fp32 ({ref.get('source')}); {len(report.frames)} frames ({speech} "
              f"speech, {len(report.frames) - speech} silence), template frames "
              f"{', '.join(str(f['template_index']) for f in report.frames[:12])}"
              f"{' ...' if len(report.frames) > 12 else ''}; output = model output (float, 0..1), frame = final "
              f"frame inside the crop box (uint8 levels)", soft_wrap=True)
    for c in report.checksums:
        if not c.ok:
            out.print(f"[red]checksum mismatch[/red] {c.path}", soft_wrap=True)
    table = Table(title="parity against PyTorch fp32", title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    for col in ("backend", "profile", "stage", "max |Δ|", "mean |Δ|", "p99 |Δ|", "PSNR dB", "bias", "spread", "≠",
                ">1", "worst: frame @ index", "result"):
        # Names and verdicts are never cut: the numbers give way when the table is wider than the console.
        keep = {"backend": max([len(c.label) for c in report.candidates] or [7]), "result": 6,
                "profile": max([len(c.profile or "-") for c in report.candidates] or [7]), "stage": 6}
        table.add_column(col, justify="left" if col in ("backend", "profile", "stage", "result") else "right",
                         no_wrap=True, min_width=keep.get(col))
    for cand in report.candidates:
        if cand.error and not cand.stages:
            table.add_row(cand.label, cand.profile or "-", "-", *["-"] * 9, "[red]FAIL[/red]")
            continue
        for s in cand.stages:
            if s.stage == LAYERS:
                continue  # one line each below the table
            m = s.metrics
            worst = f"{m['worst_frame']} @ {m['worst_index']}" if m["max_abs"] else "-"
            ok = s.passed and not cand.error and not (s.stage == FINAL_FRAME and cand.outside_box_diffs)
            table.add_row(cand.label, cand.profile, _SHORT.get(s.stage, s.stage), cell(m["max_abs"]),
                          cell(m["mean_abs"]), cell(m["p99_abs"]), cell(m["psnr_db"], "db"), cell(m["bias"]),
                          cell(m["spread_change"], "signed_pct"), cell(m["share_diff"], "pct"),
                          cell(m["share_diff_gt1"], "pct") if s.kind == "uint8" else "-", worst,
                          "[green]pass[/green]" if ok else "[red]FAIL[/red]")
    wide_console().print(table)
    if limits:
        print_tolerances(report)
    for cand in report.candidates:
        _print_layers(cand, report.show_layers)
    for n in report.notes:
        _note(n)
    if report.saved_outputs:
        out.print(f"saved outputs: {report.saved_outputs}", soft_wrap=True)
    failures = report.failures()
    for line in failures:
        out.print(f"[red]FAIL[/red] {line}", soft_wrap=True)
    if report.passed:
        out.print(f"[green]parity: all {len(report.candidates)} candidate(s) pass[/green]")
    else:
        out.print(f"[red]parity: {len(failures)} failure(s)[/red]")


def print_locate(result: LocateResult, label: str, context: int = 3) -> None:
    """The per-layer table around the first divergence (all layers are in ``--json``)."""
    from rich import box
    from rich.table import Table

    if result.error:
        out.print(f"[yellow]layers {label}[/yellow]: {result.error}", soft_wrap=True)
        return
    fd = result.first_divergence
    first = next((i for i, r in enumerate(result.layers) if r.layer == fd["layer"]), None) if fd else None
    keep = set(range(min(context, len(result.layers))))
    if first is not None:
        keep |= set(range(max(0, first - context), min(len(result.layers), first + context + 1)))
    else:
        keep |= set(range(max(0, len(result.layers) - context), len(result.layers)))
    table = Table(title=f"layers {label}: every layer of {os.path.basename(result.artifact)} against PyTorch "
                        f"(frame {result.frame}; {len(result.layers)} layers, {len(keep)} shown)",
                  title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    for col in ("#", "layer", "kind", "local", "expected", "limit", "accumulated", "limit ", "max |Δ|", "result"):
        table.add_column(col, justify="left" if col in ("layer", "kind", "result") else "right", no_wrap=True)
    prev = -1
    for i, r in enumerate(result.layers):
        if i not in keep:
            continue
        if i != prev + 1:
            table.add_row("…", "", "", "", "", "", "", "", "", "")
        prev = i
        if r.local_passed:
            mark = "[green]ok[/green]" if r.passed else "[yellow]accumulated[/yellow]"
        else:
            mark = "[red]OUT[/red]"
        if i == first:
            mark += " [red bold]<- first[/red bold]"
        table.add_row(str(i), r.layer, r.kind, cell(r.local_rel_rms), cell(r.local_expected), cell(r.local_limit),
                      cell(r.rel_rms), cell(r.limit), cell(r.max_abs), mark)
    wide_console().print(table)
    if fd is not None:
        what = "local" if fd["metric"] == "local_rel_rms" else "accumulated"
        out.print(f"[red]first divergence[/red] {label}: {fd['layer']} ({fd['kind']}): {what} rel_rms "
                  f"{cell(fd['value'])} > {cell(fd['limit'])}", soft_wrap=True)
    else:
        out.print(f"layers {label}: every layer within its expected error", soft_wrap=True)
