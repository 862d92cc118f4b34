"""`framegen bench`: model-only latency / throughput per backend, precision and batch, and end-to-end render speed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from framegen.models.contract import LATENCY_BUDGET_MS
from framegen.toolkit.common.console import note, out, warn


def register(app: typer.Typer) -> None:
    """Add the `bench` command."""
    app.command("bench")(bench)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _mb(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def machine_line(machine: dict[str, Any]) -> str:
    """``AMD EPYC, 2 cores @ 2.60 GHz, avx512f+fma: ~166 GFLOP/s fp32 (estimate); 25 GB; load 9.2 (1 min)``."""
    cpu = machine["cpu"]
    parts = [f"{cpu['model']}, {cpu['physical_cores']} cores"]
    if cpu.get("clock_mhz"):
        parts[-1] += f" @ {cpu['clock_mhz'] / 1000:.2f} GHz"
    if cpu.get("peak_gflops_fp32"):
        parts.append(f"~{cpu['peak_gflops_fp32']:.0f} GFLOP/s fp32 peak (estimate: {cpu['flop_per_cycle_fp32']} "
                     f"FLOP/cycle/core, {cpu['flop_per_cycle_basis']})")
    parts.append(f"{machine['memory_gb']} GB RAM")
    for g in machine.get("gpus", []):
        peak = (f" (datasheet {g['peak_tflops_fp32']} TFLOP/s fp32, {g['peak_tflops_fp16_tensor']} fp16 tensor)"
                if g.get("peak_tflops_fp32") else "")
        parts.append(f"GPU {g['index']}: {g['name']}{peak}")
    load = machine.get("load", {})
    if load:
        parts.append(f"load {load['loadavg_1_5_15'][0]} (1 min avg), CPU busy {load['cpu_busy_percent']:.0f}%")
    return "; ".join(parts)


def print_bench_report(report: dict[str, Any]) -> None:
    """The report as rich tables on stdout: model-only results, then end-to-end runs."""
    from rich.console import Console
    from rich.table import Table

    # Piped output (logs, README tables) would be cut to 80 columns, truncating every cell: give it room.
    console = out if out.is_terminal else Console(width=200, highlight=False)

    out.print(f"machine: {machine_line(report['machine'])}", markup=False, soft_wrap=True)
    units = report["machine"].get("cpu", {}).get("vector_extensions") or []
    out.print(f"CPU units: {', '.join(units) or 'none reported'}", markup=False, soft_wrap=True)
    if report.get("auto_precision"):
        out.print(f"precision auto -> {report['auto_precision']}", markup=False, soft_wrap=True)
    gflop = report["model"]["gflop_per_frame"]
    out.print("generator: " + ", ".join(f"{m} {g:.2f} GFLOP/frame" for m, g in gflop.items())
              + " (convolutions, multiply-add = 2)", markup=False)
    table = Table(title="framegen bench: model only")
    for col in ("backend", "precision", "batch", "iters", "p50 ms", "p90 ms", "p99 ms", "fps", "GFLOP/s",
                "of peak", "CPU ms/frame", "peak RSS MB", "device MB"):
        table.add_column(col, justify="left" if col in ("backend", "precision") else "right")
    for r in report["results"]:
        lat = r["latency_ms"]
        table.add_row(r["backend"], r["precision"], str(r["batch"]), str(r["iterations"]), f"{lat['p50']:.1f}",
                      f"{lat['p90']:.1f}", f"{lat['p99']:.1f}", f"{r['fps']:.2f}", f"{r['gflops']:.1f}",
                      _pct(r["peak_share"]), f"{r['cpu_ms_per_frame']:.0f}", _mb(r["peak_rss_mb"]),
                      _mb(r["device_memory_mb"]))
    console.print(table)
    for s in report.get("skipped", []):
        note(f"skipped {s['backend']} {s['precision']}: {s['reason']}")
    e2e = report.get("e2e")
    if e2e and e2e.get("runs"):
        stage_names: list[str] = []
        for run in e2e["runs"]:
            stage_names += [k for k in run["stages"] if k not in stage_names]
        t = Table(title=f"end to end: {e2e['template']} ({e2e['runs'][0]['width']}x{e2e['runs'][0]['height']})")
        for col in ("backend", "precision", "batch", "frames", "fps", "model-only fps", "e2e / model",
                    "model in render layout", "e2e / that", "CPU ms/frame", *[f"{s} busy" for s in stage_names]):
            t.add_column(col, justify="left" if col in ("backend", "precision") else "right")
        for run in e2e["runs"]:
            ratio, inflight = run.get("e2e_over_model_only"), run.get("model_inflight")
            t.add_row(run["backend"], run["precision"], str(run["batch"]), str(run["frames"]), f"{run['fps']:.2f}",
                      "-" if run.get("model_only_fps") is None else f"{run['model_only_fps']:.2f}",
                      "-" if ratio is None else f"{ratio:.2f}x",
                      "-" if not inflight else f"{inflight['fps']:.2f} ({inflight['workers']} in flight)",
                      "-" if not inflight else f"{run['e2e_over_model_inflight']:.2f}x",
                      f"{run['cpu_ms_per_frame']:.0f}",
                      *[_pct(run["stages"].get(s, {}).get("share")) for s in stage_names])
        console.print(t)
        note("stage busy = that stage's working seconds / wall seconds; stages overlap on separate threads, so the "
             "shares add up to more than 100% when the pipeline keeps several cores busy")
        note("model in render layout = the model alone with one request in flight per render worker (a render "
             "overlaps its requests; on a CPU that can run the model faster than one call at a time)")


def bench(
    bundle: Annotated[Path | None, typer.Option("--bundle", "-b", help="An exported framegen bundle folder.")]
    = None,
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", "-c", help="SyncTalk_2D generator .pth (PyTorch backends).")] = None,
    backends: Annotated[str | None, typer.Option(
        "--backends", help="Comma-separated backend names (default: every available backend the model feeds).")]
    = None,
    precisions: Annotated[str | None, typer.Option(
        "--precisions", help="Comma-separated fp32,fp16 (default: every precision the backend and model offer).")]
    = None,
    batch: Annotated[str | None, typer.Option(
        "--batch", help="Comma-separated batch sizes, e.g. 1,4,16 (default: 1 on CPU; 1,16 on GPU).")] = None,
    iterations: Annotated[int | None, typer.Option(
        "--iterations", min=1, help="Timed calls per measurement (default: enough for about --seconds).")] = None,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed calls before each measurement.")] = 3,
    seconds: Annotated[float, typer.Option(
        "--seconds", min=0.1, help="Without --iterations: timed seconds per measurement (5..200 calls).")] = 8.0,
    mode: Annotated[str | None, typer.Option(
        "--mode", help="Generator mode ave|hubert|wenet when the checkpoint cannot tell.")] = None,
    e2e: Annotated[bool, typer.Option("--e2e", help="Also time a whole render (needs --template, --features).")]
    = False,
    template: Annotated[Path | None, typer.Option("--template", "-t", help="Template folder for --e2e.")] = None,
    features: Annotated[Path | None, typer.Option("--features", "-f", help="Features (.npy / .bin) for --e2e.")]
    = None,
    e2e_frames: Annotated[int, typer.Option("--e2e-frames", min=1, help="Frames rendered by --e2e.")] = 100,
    e2e_batch: Annotated[int | None, typer.Option(
        "--e2e-batch", min=1, help="Batch of the --e2e render (default: the backend's).")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON here.")] = None,
    html: Annotated[Path | None, typer.Option(
        "--html", help="Write a self-contained HTML page plotting latency percentiles and the batch sweep.")] = None,
    streams: Annotated[str | None, typer.Option(
        "--streams", help="With --backends triton: concurrent client streams, e.g. 1,4,8 (the default).")] = None,
    triton_url: Annotated[str | None, typer.Option(
        "--triton-url", help="With --backends triton: the server, grpc://HOST:PORT or http://HOST:PORT.")] = None,
    stream: Annotated[bool, typer.Option(
        "--stream", help="A live stream per backend, as `framegen stream --realtime` runs it: real-time factor, "
        "frames held, latency p50/p99 (after the context, after the frame's time, beyond its lookahead) and RSS; "
        "--seconds of --audio (default synthetic) in --chunk-ms chunks through --template; --precisions auto picks "
        "as stream does.")] = False,
    audio: Annotated[Path | None, typer.Option("--audio", help="Speech for --stream.")] = None,
    encoder: Annotated[Path | None, typer.Option(
        "--encoder", help="Audio encoder for --stream (default: the bundle's).")] = None,
    chunk_ms: Annotated[float, typer.Option("--chunk-ms", help="Chunk size of --stream, ms.")] = 20.0,
    unpaced: Annotated[bool, typer.Option(
        "--unpaced", help="With --stream: the same stream as fast as it goes instead of paced at real time; its "
        "frames / seconds is the stream's end-to-end rate, to set beside the model-only fps.")] = False,
    latency_budget_ms: Annotated[float, typer.Option("--latency-budget-ms", min=0.0, help=(
        "With --stream (live): as `framegen stream --latency-budget-ms`; 0: no budget."))] = LATENCY_BUDGET_MS,
) -> None:
    """Time each backend x precision x batch on the generator (and, with --e2e, a whole render); print a table."""
    from framegen.toolkit.api import bench as api_bench
    from framegen.toolkit.bench.core import BenchError, parse_batches, parse_list

    if unpaced and not stream:
        raise BenchError("bench: --unpaced applies to --stream only")
    if stream:
        _stream_bench(bundle, checkpoint, backends, precisions, template, audio, encoder, seconds, chunk_ms,
                      json_path, realtime=not unpaced, latency_budget_ms=latency_budget_ms)
        return

    if e2e and (template is None or features is None):
        raise BenchError("bench: --e2e needs --template T and --features F")
    if not e2e and (template is not None or features is not None):
        warn("--template / --features are only used with --e2e; ignoring them")
        template = features = None
    if json_path is not None and not json_path.parent.is_dir():
        raise BenchError(f"--json {json_path}: folder {json_path.parent} does not exist")
    if (backends or "").strip() == "triton" or streams is not None:
        _triton_bench(triton_url, streams, seconds, iterations, mode, json_path, batch)
        return

    def progress(kind: str, row: dict[str, Any]) -> None:
        if kind == "model":
            note(f"{row['backend']} {row['precision']} batch {row['batch']}: {row['fps']:.2f} fps, p50 "
                 f"{row['latency_ms']['p50']:.1f} ms ({row['iterations']} calls)")
        else:
            note(f"{row['backend']} {row['precision']} batch {row['batch']} end to end: {row['fps']:.2f} fps "
                 f"({row['frames']} frames)")

    report = api_bench(checkpoint=checkpoint, bundle=bundle, backends=parse_list(backends, "--backends"),
                       precisions=parse_list(precisions, "--precisions"), batches=parse_batches(batch),
                       iterations=iterations, warmup=warmup, seconds=seconds, mode=mode,
                       template=template if e2e else None, features=features if e2e else None,
                       e2e_frames=e2e_frames, e2e_batch=e2e_batch, on_result=progress, json=json_path, html=html)
    if json_path is not None:
        note(f"report written to {json_path}")
    print_bench_report(report)


def _triton_bench(url: str | None, streams: str | None, seconds: float, iterations: int | None, mode: str | None,
                  json_path: Path | None, batch: str | None) -> None:
    """`bench --backends triton`: see :mod:`framegen.toolkit.bench.triton`."""
    import os

    from framegen.runtimes.triton_backend import URL_ENV
    from framegen.toolkit.api import bench_triton
    from framegen.toolkit.bench.triton import TritonBenchError, print_triton_report

    url = url or os.environ.get(URL_ENV)
    if not url:
        raise TritonBenchError("bench --backends triton: name the server with --triton-url grpc://HOST:PORT")
    frames = 1
    if batch:
        sizes = [int(v) for v in str(batch).split(",") if v.strip().isdigit()]
        if len(sizes) != 1 or sizes[0] < 1:
            raise TritonBenchError(f"--batch {batch!r}: the Triton bench takes one batch (frames per request)")
        frames = sizes[0]
    report = bench_triton(url, streams=streams, seconds=seconds, requests=iterations, frames_per_request=frames,
                          mode=mode, json=json_path,
                          on_result=lambda r: note(f"triton {r['streams']} stream(s): {r['fps']:.2f} fps, p50 "
                                                   f"{r['latency_ms']['p50']:.0f} ms, avg server batch "
                                                   f"{r['avg_server_batch']}"))
    if json_path is not None:
        note(f"report written to {json_path}")
    print_triton_report(report)


def _stream_line(row: dict[str, Any], realtime: bool) -> str:
    """One stream-bench row as a progress note: paced, how it kept up; unpaced, how fast it went."""
    head = f"{row['backend']} {row['precision']} stream: RTF {row['rtf']:.2f}"
    if not realtime:
        return f"{head}, {row['fps']:.1f} fps unpaced ({row['frames']} frames)"
    said = (row.get("startup") or {}).get("predicted")
    return (f"{head}, {row['held_frames']} held, p99 {row['beyond_lookahead_ms'].get('p99', 0):.0f} ms beyond the "
            f"lookahead" + (f" (start-up predicted {said['held_share']:.0%} held, p99 {said['beyond_p99_ms']:.0f} ms)"
                            if said else ""))


def _stream_bench(bundle: Path | None, checkpoint: Path | None, backends: str | None, precisions: str | None,
                  template: Path | None, audio: Path | None, encoder: Path | None, seconds: float, chunk_ms: float,
                  json_path: Path | None, realtime: bool = True, latency_budget_ms: float = LATENCY_BUDGET_MS) -> None:
    """`bench --stream`: see :mod:`framegen.toolkit.bench.stream`."""
    from framegen.toolkit.api import bench_stream
    from framegen.toolkit.bench.core import parse_list
    from framegen.toolkit.bench.stream import print_stream_report
    from rich.console import Console

    names = parse_list(backends, "--backends")
    precs = parse_list(precisions, "--precisions") or ["fp32"]
    report = bench_stream(template=template, bundle=bundle, checkpoint=checkpoint, backends=names,
                          precision=precs[0], audio=audio, encoder=encoder, seconds=seconds, chunk_ms=chunk_ms,
                          realtime=realtime, json=json_path, latency_budget_ms=latency_budget_ms,
                          on_result=lambda r: note(_stream_line(r, realtime)))
    if report.get("precision_choice"):
        note(f"precision auto -> {report['precision_choice']}")
    print_stream_report(report, out if out.is_terminal else Console(width=200, highlight=False))
