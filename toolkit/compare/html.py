"""One self-contained HTML page per parity or bench report: no network, no external file. Images are embedded as
``data:`` URIs and plots are inline SVG, so the file can be attached to a CI run and opened anywhere.

Made from a report's JSON form, like the JUnit and Markdown reports, so every format states the same verdict.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#1b1b1b;max-width:1200px}
h1{font-size:22px;margin:0 0 6px} h2{font-size:18px;margin:28px 0 8px} h3{font-size:15px;margin:18px 0 6px}
.verdict{display:inline-block;padding:6px 14px;border-radius:6px;font-weight:700;font-size:20px;color:#fff}
.pass{background:#1a7f37} .fail{background:#cf222e} .muted{color:#666}
table{border-collapse:collapse;margin:6px 0 12px} td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:right}
th{background:#f6f8fa} td:first-child,th:first-child{text-align:left} td.bad{color:#cf222e;font-weight:600}
.stages{display:flex;gap:28px;flex-wrap:wrap}
.card{border:1px solid #d0d7de;border-radius:8px;padding:12px 16px;margin:14px 0}
img{max-width:100%;border:1px solid #d0d7de}
code{background:#f6f8fa;padding:1px 4px;border-radius:3px}
"""
# Marks the body once every image has decoded, so a headless browser's DOM dump shows it (the suite reads it).
_SCRIPT = """
window.addEventListener('load',function(){var im=[].slice.call(document.images);
var ok=im.filter(function(i){return i.complete&&i.naturalWidth>0}).length;
document.body.setAttribute('data-images',ok+'/'+im.length);});
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return _e(value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
            return _e(value)
        return f"{value:.4g}"
    return _e(value)


def _page(title: str, passed: bool, body: str, verdict: str | None = None) -> str:
    verdict = verdict or ("PASS" if passed else "FAIL")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}: {verdict}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_CSS}</style>'
            f'<script>{_SCRIPT}</script></head><body>\n<h1>{_e(title)}</h1>\n'
            f'<p><span id="verdict" class="verdict {"pass" if passed else "fail"}">{verdict}</span></p>\n'
            f'{body}\n</body></html>\n')


def _png_uri(path: str | None) -> str | None:
    if not path or not Path(path).is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell if cell.startswith("<td") else f"<td>{cell}</td>" for cell in row)
                   + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _stage_rows(stage: Mapping[str, Any]) -> list[list[str]]:
    """metric, value, limit, verdict for every limit in force."""
    metrics, rows = stage.get("metrics") or {}, []
    failures = " ".join(stage.get("failures") or [])
    for name, limit in (stage.get("limits") or {}).items():
        key = name if name in metrics else name.removeprefix("max_").removeprefix("min_")
        bad = key in failures
        value = metrics.get(key)
        rows.append([_e(key), f'<td class="{"bad" if bad else ""}">{_num(value)}</td>', _num(limit),
                     "over" if bad else "ok"])
    return rows


def layer_plot(rows: Sequence[Mapping[str, Any]], first: str | None, width: int = 1000, height: int = 260) -> str:
    """Inline SVG: each layer's local error as a multiple of its own limit (log scale), in execution order; the
    limit is the line at 1, the first diverging layer is marked."""
    if not rows:
        return '<p class="muted">no layers compared</p>'
    ratios = [max(1e-4, float(r["local_rel_rms"]) / float(r["local_limit"])) if r.get("local_limit") else 1e-4
              for r in rows]
    lo, hi = math.log10(min(min(ratios), 0.01)), math.log10(max(max(ratios), 10.0))
    left, right, top, bottom = 56, 12, 12, 28
    w, h = width - left - right, height - top - bottom

    def x(i: int) -> float:
        return left + (w * i / max(1, len(rows) - 1))

    def y(v: float) -> float:
        return top + h * (hi - math.log10(v)) / (hi - lo)

    parts = [f'<svg width="{width}" height="{height}" role="img" '
             f'aria-label="per-layer error against its limit">',
             f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="#fafbfc" stroke="#d0d7de"/>']
    for p in range(math.ceil(lo), math.floor(hi) + 1):
        parts.append(f'<text x="{left - 6}" y="{y(10 ** p) + 4:.1f}" font-size="11" text-anchor="end">1e{p}</text>')
    parts.append(f'<line x1="{left}" x2="{left + w}" y1="{y(1):.1f}" y2="{y(1):.1f}" stroke="#cf222e" '
                 f'stroke-dasharray="5,4"/><text x="{left + w - 4}" y="{y(1) - 4:.1f}" font-size="11" '
                 f'text-anchor="end" fill="#cf222e">limit</text>')
    points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(ratios))
    parts.append(f'<polyline points="{points}" fill="none" stroke="#0969da" stroke-width="1.5"/>')
    for i, (r, v) in enumerate(zip(rows, ratios, strict=True)):
        colour = "#cf222e" if v > 1 else "#0969da"
        parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}"><title>{_e(r["layer"])}: '
                     f'{v:.3g} x its limit</title></circle>')
        if first is not None and r["layer"] == first:
            parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="8" fill="none" stroke="#cf222e" '
                         f'stroke-width="2"/><text x="{x(i) + 10:.1f}" y="{y(v) - 8:.1f}" font-size="12" '
                         f'fill="#cf222e">first divergence: {_e(first)}</text>')
    parts.append(f'<text x="{left + w / 2}" y="{height - 6}" font-size="11" text-anchor="middle">layers in '
                 f'execution order ({len(rows)}); y: local error / its derived limit</text></svg>')
    return "".join(parts)


def parity_html(report: Mapping[str, Any], title: str = "framegen parity") -> str:
    """The parity report as one page: the verdict, the tolerances in force and their sources, then per candidate
    its stage metrics against their limits, its heat map (the worst frame: reference | candidate | difference) and
    the per-layer error plot with the first divergence marked."""
    body = []
    inputs = report.get("inputs") or {}
    body.append(f'<p class="muted">inputs: {_e(", ".join(f"{k} {v}" for k, v in inputs.items()))}; '
                f'{len(report.get("frames") or [])} frame(s) compared</p>')
    for line in report.get("failures") or []:
        body.append(f'<p class="bad" style="color:#cf222e">{_e(line)}</p>')
    body.append("<h2>Candidates</h2>")
    for cand in report.get("candidates") or []:
        ok = bool(cand.get("passed"))
        body.append(f'<div class="card"><h3>{_e(cand.get("label"))} <span class="verdict {"pass" if ok else "fail"}" '
                    f'style="font-size:13px;padding:2px 8px">{"PASS" if ok else "FAIL"}</span></h3>')
        if cand.get("error"):
            body.append(f"<p>{_e(cand['error'])}</p>")
        body.append('<div class="stages">')
        for stage in cand.get("stages") or []:
            if stage.get("stage") == "layers":
                continue
            body.append(f"<div><p><b>{_e(stage.get('stage'))}</b></p>"
                        f"{_table(['metric', 'value', 'limit', ''], _stage_rows(stage))}</div>")
        body.append("</div>")
        uri = _png_uri(cand.get("heatmap"))
        if uri:
            body.append(f'<p><b>worst frame</b>: reference | candidate | difference (amplified)</p>'
                        f'<img alt="heat map of {_e(cand.get("label"))}" src="{uri}">')
        uri = _png_uri(cand.get("heatmap_output"))
        if uri:
            body.append(f'<p><b>model output</b> of the frame where it departs most: reference | candidate | '
                        f'difference (amplified)</p><img alt="model output heat map of {_e(cand.get("label"))}" '
                        f'src="{uri}">')
        locate = cand.get("locate") or {}
        if locate.get("layers"):
            first = (cand.get("first_divergence") or {}).get("layer")
            body.append(f"<p><b>layers</b> ({_e(locate.get('artifact'))}, frame {_e(locate.get('frame'))})</p>")
            body.append(layer_plot(locate["layers"], first))
        body.append("</div>")
    rule = report.get("tolerance_rule") or {}
    body.append("<h2>Tolerances in force</h2>")
    if rule:
        body.append(f'<p>{_e(rule.get("kind", ""))}: {_e(rule.get("description", rule.get("rule", "")))}</p>')
    rows = []
    for prof, data in (report.get("tolerances") or {}).items():
        sources = data.get("sources") or {}
        for stage, limits in (data.get("stages") or {}).items():
            for metric, value in limits.items():
                rows.append([_e(prof), _e(stage), _e(metric), _num(value),
                             _e((sources.get(stage) or {}).get(metric, "fixed profile"))])
    body.append(_table(["profile", "stage", "limit", "value", "source"], rows))
    for note in report.get("notes") or []:
        body.append(f'<p class="muted">note: {_e(note)}</p>')
    return _page(title, bool(report.get("passed")), "\n".join(body))


def _bar_plot(groups: Sequence[tuple[str, Sequence[tuple[str, float]]]], unit: str, width: int = 1000,
              row: int = 18) -> str:
    """Inline SVG of horizontal bars: one group per label, one bar per (name, value)."""
    values = [v for _, bars in groups for _, v in bars if v is not None and math.isfinite(v)]
    if not values:
        return '<p class="muted">nothing measured</p>'
    top = max(values)
    left, label_w = 220, 70
    height = sum(len(b) * row + 10 for _, b in groups) + 10
    parts = [f'<svg width="{width}" height="{height}" role="img">']
    yy = 6
    palette = ("#0969da", "#8250df", "#bf3989", "#1a7f37")
    for label, bars in groups:
        parts.append(f'<text x="0" y="{yy + 13}" font-size="12">{_e(label)}</text>')
        for k, (name, v) in enumerate(bars):
            length = 0 if v is None else (width - left - label_w) * v / top
            parts.append(f'<text x="{left - 6}" y="{yy + 13}" font-size="11" text-anchor="end">{_e(name)}</text>'
                         f'<rect x="{left}" y="{yy + 3}" width="{length:.1f}" height="{row - 6}" '
                         f'fill="{palette[k % len(palette)]}"/><text x="{left + length + 4:.1f}" y="{yy + 13}" '
                         f'font-size="11">{_num(v)} {unit}</text>')
            yy += row
        yy += 10
    parts.append("</svg>")
    return "".join(parts)


def bench_html(report: Mapping[str, Any], title: str = "framegen bench") -> str:
    """A bench report as one page: the machine, then plots of the latency percentiles (per backend, precision and
    batch) and of the batch sweep (frames per second per batch size)."""
    machine = report.get("machine") or {}
    results = [r for r in report.get("results") or [] if r.get("kind", "model") == "model"]
    body = [f'<p class="muted">{_e(machine.get("cpu", ""))} {_e(machine.get("features", ""))}</p>',
            "<h2>Latency percentiles (ms per call)</h2>"]
    groups = []
    for r in results:
        lat = r.get("latency_ms") or {}
        groups.append((f"{r.get('backend')} {r.get('precision')} batch {r.get('batch')}",
                       [(p, lat.get(p)) for p in ("p50", "p90", "p99") if lat.get(p) is not None]))
    body.append(_bar_plot(groups, "ms"))
    body.append("<h2>Batch sweep (frames per second)</h2>")
    sweep: dict[str, list[tuple[str, float]]] = {}
    for r in results:
        sweep.setdefault(f"{r.get('backend')} {r.get('precision')}", []).append((f"batch {r.get('batch')}",
                                                                                  r.get("fps")))
    body.append(_bar_plot(list(sweep.items()), "fps"))
    rows = [[_e(r.get("backend")), _e(r.get("precision")), _e(r.get("batch")), _num(r.get("fps")),
             _num((r.get("latency_ms") or {}).get("p50")), _num((r.get("latency_ms") or {}).get("p99"))]
            for r in results]
    body.append(_table(["backend", "precision", "batch", "fps", "p50 ms", "p99 ms"], rows))
    return _page(title, bool(results), "\n".join(body), verdict=f"{len(results)} run(s) measured")
