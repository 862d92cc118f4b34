"""`framegen bench`: how fast each backend runs the generator, and how fast a whole render is, on this machine.

Model-only: for every backend x precision x batch, a few warm-up calls, then timed ``backend.infer`` calls
(``time.perf_counter`` around each call; GPU backends return host arrays, so each call is complete when timed) on
real-looking inputs (image-like crops with edges and texture, non-negative audio windows of the spread of real 'ave'
features; never zeros, which some kernels shortcut). Reported: latency p50/p90/p99 per batch call, frames per
second, achieved GFLOP/s (frames per second x the generator's arithmetic, counted from its convolutions by
:func:`generator_flops`) and its share of the machine's estimated peak (:mod:`toolkit.machine`), peak host RSS during
the measurement, device memory where the runtime tells, and process CPU time per frame (with the average number of
cores kept busy), which moves less than wall time when other work shares the machine.

End to end (``--e2e``): :func:`toolkit.render.render` of a template + features to an H.264 file (decode, preprocess,
infer, paste, encode, overlapped), with each stage's busy time and its share of the wall time.

Numbers from a shared machine move with its load (recorded in the report); compare ratios from one run.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from framegen.models.contract import INNER_SIZE
from framegen.models.errors import FramegenError
from framegen.runtimes.registry import get_spec, open_backend
from framegen.runtimes.spec import OpenRequest
from framegen.toolkit.bench.machine import describe_machine, peak_gflops
from framegen.toolkit.bench.precision import choose_precision
from framegen.toolkit.frames.plan import (
    PRECISIONS,
    Candidate,
    PlanError,
    Request,
    open_candidate,
    plan_candidates,
)
from framegen.toolkit.inputs.features import load_features
from framegen.toolkit.inputs.template import open_template

SCHEMA_VERSION = 1
DEFAULT_WARMUP = 3
DEFAULT_SECONDS = 8.0  # auto iterations: about this long per measurement
AUTO_MIN_ITERATIONS = 5
AUTO_MAX_ITERATIONS = 200
DEFAULT_E2E_FRAMES = 100


class BenchError(FramegenError):
    """Bench options that do not fit together, or nothing that could be measured."""


# --------------------------------------------------------------------------------------------- arithmetic

@lru_cache(maxsize=8)
def generator_flops(mode: str = "ave", size: int = INNER_SIZE) -> int:
    """FLOP of one generator forward pass on a ``size`` x ``size`` frame, multiply-add counted as 2.

    Counted from the model itself: every ``Conv2d`` contributes 2 x output elements x (input channels / groups) x
    kernel area, with shapes taken from a forward pass on PyTorch's ``meta`` device (shapes only, no arithmetic,
    no weights). Convolution biases, BatchNorm, activations, upsampling and padding are left out, as in the usual
    convention (BatchNorm folds into the convolutions at export; the rest is under 2 % and memory-bound).
    For 'ave' at 320x320 this is 9.77 GFLOP.
    """
    import torch
    from framegen.models.unet import AUDIO_SHAPES, Model
    from torch import nn

    total = 0

    def count(module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1] * (module.in_channels // module.groups)
        total += 2 * output.numel() * kernel

    with torch.device("meta"):
        model = Model(6, mode).eval()
    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(torch.empty(1, 6, size, size, device="meta"),
                  torch.empty(1, *AUDIO_SHAPES[mode], device="meta"))
    finally:
        for h in hooks:
            h.remove()
    return total


def bench_inputs(mode: str, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Real-looking generator inputs: image (B, 6, 320, 320) float32 image-like crops + masked copies, and audio
    (B, *mode shape) non-negative windows with the spread of real 'ave' features."""
    import torch
    from framegen.models.init import audio_like_batch, image_like_batch

    gen = torch.Generator().manual_seed(seed)
    image = image_like_batch(batch, gen).numpy().astype(np.float32, copy=False)
    audio = audio_like_batch(mode, batch, gen).numpy().astype(np.float32, copy=False)
    return np.ascontiguousarray(image), np.ascontiguousarray(audio)


# --------------------------------------------------------------------------------------------- memory

class PeakRss:
    """Peak resident set size of this process while the ``with`` block runs, in MB.

    On Linux the kernel's high-water mark (``VmHWM``) is reset on entry (``/proc/self/clear_refs``) and read on
    exit: exact, and free. Elsewhere a thread samples RSS every 5 ms (can miss a shorter spike).
    """

    def __init__(self) -> None:
        self.base_mb: float | None = None
        self.peak_mb: float | None = None
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._max = 0

    @staticmethod
    def _status_kb(field: str) -> int | None:
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except (OSError, ValueError, IndexError):
            return None
        return None

    def _sample(self, process: Any) -> None:
        while not self._stop.wait(0.005):
            self._max = max(self._max, process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        import psutil

        process = psutil.Process()
        rss = process.memory_info().rss
        self.base_mb = rss / 2**20
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.method = "VmHWM"
        except OSError:
            self.method = "sampled every 5 ms"
            self._max = rss
            self._thread = threading.Thread(target=self._sample, args=(process,), daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_mb = self._max / 2**20
            return
        hwm = self._status_kb("VmHWM")
        self.peak_mb = hwm / 1024 if hwm is not None else None


def _nvml_process_mb(device_index: int) -> float | None:
    """GPU memory this process holds on a device per NVML (``pynvml``), or ``None`` when NVML is not at hand."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if p.pid == os.getpid() and p.usedGpuMemory is not None:
                return p.usedGpuMemory / 2**20
    except Exception:  # NVML unavailable in containers without the driver's management library
        return None
    return None


@contextmanager
def device_memory(backend: Any) -> Iterator[dict[str, Any]]:
    """Device memory a backend used in the ``with`` block: ``{"mb": ..., "source": ...}`` (``mb`` None if untold).

    PyTorch tells its peak allocation (``torch.cuda.max_memory_allocated``). ONNX Runtime's CUDA arena tells
    nothing through its Python API; NVML's per-process figure stands in (the arena grows and never shrinks, so at
    the end of the block it equals the peak), when ``pynvml`` is installed.
    """
    result: dict[str, Any] = {"mb": None, "source": None}
    device = str(backend.info.device)
    if not device.startswith("cuda"):
        result["source"] = "host (no device memory)"
        yield result
        return
    index = int(device.split(":")[1]) if ":" in device else 0
    torch_backend = backend.name.startswith("torch")
    if torch_backend:
        import torch

        torch.cuda.synchronize(index)
        torch.cuda.reset_peak_memory_stats(index)
    try:
        yield result
    finally:
        if torch_backend:
            import torch

            result["mb"] = torch.cuda.max_memory_allocated(index) / 2**20
            result["source"] = "torch.cuda.max_memory_allocated"
        else:
            result["mb"] = _nvml_process_mb(index)
            result["source"] = ("NVML per-process used memory (whole process)" if result["mb"] is not None
                                else "not reported by the runtime (install pynvml for NVML's figure)")


# --------------------------------------------------------------------------------------------- measurement

def _sig(x: float, digits: int = 5) -> float:
    """``x`` rounded to ``digits`` significant digits (fps spans 0.1 on a busy CPU to thousands on a GPU)."""
    return float(f"{x:.{digits}g}")


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process, all threads: less sensitive to a busy machine than wall time
    (though spinning thread pools count their spin)."""
    t = os.times()
    return t.user + t.system


def latency_summary(seconds: list[float]) -> dict[str, float]:
    """Per-call latency in milliseconds: p50, p90, p99, mean, min, max (linear-interpolated percentiles)."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3),
            "mean": round(float(ms.mean()), 3), "min": round(float(ms.min()), 3), "max": round(float(ms.max()), 3)}


def auto_iterations(latency_s: float, seconds: float = DEFAULT_SECONDS) -> int:
    """Timed calls that fill about ``seconds`` at a warm latency, between 5 and 200."""
    if latency_s <= 0:
        return AUTO_MAX_ITERATIONS
    return int(min(AUTO_MAX_ITERATIONS, max(AUTO_MIN_ITERATIONS, math.ceil(seconds / latency_s))))


def measure(backend: Any, batch: int, *, iterations: int | None = None, warmup: int = DEFAULT_WARMUP,
            seconds: float = DEFAULT_SECONDS, machine: dict[str, Any] | None = None,
            flop_per_frame: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Time ``backend.infer`` at one batch size; returns one ``results`` row of the report.

    ``iterations=None`` chooses the count from the last warm-up call's latency (about ``seconds`` of timed calls,
    at least 5); at least one warm-up call is made in that case. Peak RSS and device memory cover warm-up and the
    timed calls (first calls are where runtimes allocate).
    """
    if batch < 1:
        raise BenchError(f"--batch {batch}: must be at least 1")
    if iterations is not None and iterations < 1:
        raise BenchError(f"--iterations {iterations}: must be at least 1")
    image, audio = bench_inputs(backend.mode, batch, seed)
    flop = flop_per_frame if flop_per_frame is not None else generator_flops(backend.mode)
    warm = max(warmup, 1 if iterations is None else 0)
    with PeakRss() as rss, device_memory(backend) as dev:
        last = 0.0
        for _ in range(warm):
            t0 = time.perf_counter()
            out = backend.infer(image, audio)
            last = time.perf_counter() - t0
        n = iterations if iterations is not None else auto_iterations(last, seconds)
        times = []
        cpu0 = _cpu_seconds()
        for _ in range(n):
            t0 = time.perf_counter()
            out = backend.infer(image, audio)
            times.append(time.perf_counter() - t0)
        cpu = _cpu_seconds() - cpu0
    if out.shape != (batch, 3, INNER_SIZE, INNER_SIZE) or not np.isfinite(out).all():
        raise BenchError(f"{backend.name}: output of shape {list(out.shape)} (finite: {bool(np.isfinite(out).all())})"
                         f", expected [{batch}, 3, {INNER_SIZE}, {INNER_SIZE}] finite")
    total = float(sum(times))
    fps = batch * n / total if total > 0 else float("inf")
    gflops = fps * flop / 1e9
    peak = peak_gflops(machine, backend.info.device, backend.info.precision) if machine else None
    peak_note = None
    if peak and gflops > peak:  # bf16 / int8 units, or a turbo clock above the one the estimate used
        peak, peak_note = None, "unknown: the measured rate exceeds the estimated fp32 peak"
    extra = {k: v for k, v in backend.info.extra.items() if isinstance(v, (str, int, float, bool)) or v is None}
    return {
        "backend": backend.name, "precision": backend.info.precision, "batch": batch,
        "device": backend.info.device, "mode": backend.mode,
        "iterations": n, "warmup": warm, "timed_seconds": round(total, 4),
        "latency_ms": latency_summary(times),
        "fps": _sig(fps), "gflops": _sig(gflops),
        "peak_gflops": peak, "peak_share": _sig(gflops / peak) if peak else None, "peak_note": peak_note,
        "peak_rss_mb": round(rss.peak_mb, 1) if rss.peak_mb is not None else None,
        "rss_before_mb": round(rss.base_mb, 1) if rss.base_mb is not None else None, "rss_method": rss.method,
        "device_memory_mb": round(dev["mb"], 1) if dev["mb"] is not None else None,
        "device_memory_source": dev["source"],
        "cpu_ms_per_frame": round(1000.0 * cpu / (batch * n), 2),
        "cores_busy": round(cpu / total, 2) if total else None,
        "output_mean": round(float(out.mean()), 4),
        "backend_info": extra,
    }


def measure_inflight(backend: Any, *, frames: int | None = None, seconds: float = 3.0, seed: int = 0
                     ) -> dict[str, Any]:
    """The model alone as a render drives it: one batch-1 request in flight per worker of ``backend`` (its
    ``concurrent_workers``, as the render opened it), for ``frames`` frames (default: about ``seconds``; at least
    four per worker).

    ``measure``'s model-only rate makes one call at a time. A render keeps one request per worker in flight, and on
    the CPU that layout can run the model faster (2-core AMX Xeon: 4-13 % faster, ONNX Runtime and OpenVINO alike,
    ``scripts/realtime_table.py``), so an end-to-end rate is also compared with this one: the model's own rate in the
    render's layout. Returns ``{workers, frames, seconds, fps, cpu_ms_per_frame}``.
    """
    workers = max(1, int(getattr(backend, "concurrent_workers", 1)))
    image, audio = bench_inputs(backend.mode, 1, seed)

    def run(n: int) -> tuple[float, float]:
        """``n`` calls over ``workers`` threads; (wall, CPU) seconds."""
        left, lock = [n], threading.Lock()
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                while True:
                    with lock:
                        if left[0] == 0 or errors:
                            return
                        left[0] -= 1
                    backend.infer(image, audio)
            except BaseException as exc:  # re-raised in the caller's thread
                errors.append(exc)

        threads = [threading.Thread(target=worker, name=f"framegen-inflight-{w}", daemon=True)
                   for w in range(workers)]
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return time.perf_counter() - t0, _cpu_seconds() - cpu0

    warm, _ = run(2 * workers)  # concurrently, so that every worker's request is warmed up
    per_frame = warm / (2 * workers)
    frames = max(4 * workers, frames if frames is not None else math.ceil(seconds / max(per_frame, 1e-6)))
    wall, cpu = run(frames)
    return {"workers": workers, "frames": frames, "seconds": round(wall, 4), "fps": _sig(frames / wall),
            "cpu_ms_per_frame": round(1000.0 * cpu / frames, 2)}


def measure_e2e(template: str | os.PathLike[str], features: np.ndarray, backend: Any, *, batch: int | None = None,
                frames: int | None = DEFAULT_E2E_FRAMES, workdir: str | os.PathLike[str] | None = None
                ) -> dict[str, Any]:
    """One whole render (decode, preprocess, infer, paste, encode to H.264) of ``frames`` frames; returns the
    render's stats with each stage's busy seconds and share of the wall time, and the busiest stage.

    The template is opened afresh, so its JPEG decoding is part of the time; the video goes to a temporary file
    that is removed afterwards.
    """
    from framegen.toolkit.frames.render import render
    from framegen.toolkit.inputs.preprocess import PreparedTemplate

    prepared = PreparedTemplate(open_template(template))
    with tempfile.TemporaryDirectory(prefix="framegen-bench-", dir=workdir) as tmp:
        cpu0 = _cpu_seconds()
        stats = render(prepared, features, backend, out=Path(tmp) / "bench.mp4", batch=batch, max_frames=frames,
                       progress=False)
        cpu = _cpu_seconds() - cpu0
    d = stats.as_dict()
    stages = d.get("stages", {})
    busiest = max(stages, key=lambda k: stages[k]["seconds"]) if stages else None
    return {
        "backend": d["backend"], "precision": d["precision"], "batch": d["batch"], "frames": d["frames"],
        "seconds": d["seconds"], "fps": d["fps"], "template_frames": len(prepared),
        "width": prepared.template.width, "height": prepared.template.height,
        "encoder": d.get("encoder", {}), "out_bytes": d.get("out_bytes"), "stages": stages, "busiest_stage": busiest,
        "cpu_ms_per_frame": round(1000.0 * cpu / max(1, d["frames"]), 2),
        "cores_busy": round(cpu / d["seconds"], 2) if d["seconds"] else None,
    }


# --------------------------------------------------------------------------------------------- planning

def parse_list(text: str | None, what: str) -> list[str] | None:
    """``"a, b,c"`` -> ``["a", "b", "c"]``; ``None`` stays ``None``; an empty list is an error naming the option."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise BenchError(f"{what} {text!r}: empty list")
    return items


def parse_batches(text: str | None) -> list[int] | None:
    """``"1,4,16"`` -> ``[1, 4, 16]`` (each a positive integer)."""
    items = parse_list(text, "--batch")
    if items is None:
        return None
    out = []
    for t in items:
        if not t.isdigit() or int(t) < 1:
            raise BenchError(f"--batch {text!r}: {t!r} is not a positive integer")
        out.append(int(t))
    return sorted(set(out))


def plan(checkpoint: str | os.PathLike[str] | None, bundle: str | os.PathLike[str] | None,
         backends: list[str] | None = None, precisions: list[str] | None = None
         ) -> tuple[list[tuple[str, str]], list[dict[str, str]]]:
    """Which (backend, precision) pairs to run from the given model source, and which are skipped and why.

    The planner (:mod:`framegen.toolkit.frames.plan`) decides: without ``backends`` every available backend except the
    verifiers, x every precision the source feeds it; a named backend that is unavailable here or has nothing to
    run is skipped with its reason; unknown names are an error.
    """
    if checkpoint is None and bundle is None:
        raise BenchError("bench: give --checkpoint CKPT and/or --bundle DIR")
    for p in precisions or []:
        if p not in PRECISIONS:
            raise BenchError(f"--precisions: {p!r} is not one of {', '.join(PRECISIONS)}")
    runs: list[tuple[str, str]] = []
    skipped: list[dict[str, str]] = []
    groups: list[list[Request] | None] = [None] if backends is None else [[Request(n)] for n in backends]
    for requested in groups:
        if requested is not None:
            get_spec(requested[0].backend)  # an unknown name is an error, not a skip
        try:
            found = plan_candidates("bench", bundle=bundle, checkpoint=checkpoint, requested=requested,
                                    precisions=precisions)
        except PlanError as exc:
            skipped.append({"backend": requested[0].backend if requested else "*", "precision": "*",
                            "reason": str(exc)})
            continue
        runs += [(c.backend, c.precision) for c in found.candidates if (c.backend, c.precision) not in runs]
        if requested is None:
            for note in found.notes:
                name, _, reason = note.partition(": ")
                skipped.append({"backend": name, "precision": "*", "reason": reason})
    return runs, skipped


def default_batches(device: str) -> list[int]:
    """Batch sizes measured when none are given: 1 on a CPU (where larger batches do not help), 1 and 16 on a GPU."""
    return [1] if device == "cpu" else [1, 16]


def _check_bench_args(checkpoint: Any, bundle: Any, template: Any, features: Any, warmup: int,
                      e2e_frames: int | None) -> None:
    if (template is None) != (features is None):
        raise BenchError("--e2e needs both --template T and --features F")
    for label, path in (("--checkpoint", checkpoint), ("--bundle", bundle), ("--template", template),
                        ("--features", features)):
        if path is not None and not Path(path).exists():
            raise BenchError(f"{label} {path}: no such file or folder")
    if warmup < 0:
        raise BenchError(f"--warmup {warmup}: must be 0 or more")
    if e2e_frames is not None and e2e_frames < 1:
        raise BenchError(f"--e2e-frames {e2e_frames}: must be at least 1")


def _e2e_run(candidate: Candidate, backend_mode: str, template: Any, features: Any, results: list[dict[str, Any]],
             *, checkpoint: Any, bundle: Any, mode: str | None, batch: int | None, frames: int | None
             ) -> dict[str, Any]:
    """One end-to-end render of ``candidate``, with its ratio to the model-only rate at the same batch and to the
    model's rate in the render's own layout (:func:`measure_inflight`, measured just before, on the same backend)."""
    feats = load_features(features, backend_mode)
    # The end-to-end run opens the backend exactly as `framegen render` does (render options included).
    with open_candidate(candidate, bundle=bundle, checkpoint=checkpoint, mode=mode) as render_backend:
        inflight = measure_inflight(render_backend, frames=frames) if batch in (None, 1) else None
        run = measure_e2e(template, feats, render_backend, batch=batch, frames=frames)
    run["model_inflight"] = inflight
    run["e2e_over_model_inflight"] = round(run["fps"] / inflight["fps"], 4) if inflight else None
    same = [r for r in results if (r["backend"], r["precision"], r["batch"]) ==
            (run["backend"], run["precision"], run["batch"])]
    run["model_only_fps"] = same[-1]["fps"] if same else None
    run["e2e_over_model_only"] = round(run["fps"] / same[-1]["fps"], 4) if same else None
    return run


def run_bench(*, checkpoint: str | os.PathLike[str] | None = None, bundle: str | os.PathLike[str] | None = None,
              backends: list[str] | None = None, precisions: list[str] | None = None,
              batches: list[int] | None = None, iterations: int | None = None, warmup: int = DEFAULT_WARMUP,
              seconds: float = DEFAULT_SECONDS, mode: str | None = None,
              template: str | os.PathLike[str] | None = None, features: str | os.PathLike[str] | None = None,
              e2e_frames: int | None = DEFAULT_E2E_FRAMES, e2e_batch: int | None = None,
              on_result: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Measure every planned backend x precision x batch (and, with ``template`` + ``features``, one end-to-end
    render per backend x precision); returns the report.

    Report: ``{schema, machine, model: {mode, gflop_per_frame, ...}, settings, results: [{backend, precision, batch,
    latency_ms: {p50, p90, p99, ...}, fps, gflops, peak_share, peak_rss_mb, device_memory_mb, ...}], skipped,
    e2e: {template, features, frames, runs: [{..., fps, stages, model_only_fps, e2e_over_model_only,
    model_inflight: {workers, fps, cpu_ms_per_frame}, e2e_over_model_inflight}]} | None,
    load_after}``. ``on_result(kind, row)`` is called as each row is measured (``kind`` is ``model`` or ``e2e``).
    """
    _check_bench_args(checkpoint, bundle, template, features, warmup, e2e_frames)
    runs, skipped = plan(checkpoint, bundle, backends, precisions)
    if not runs:
        reasons = "; ".join(f"{s['backend']} {s['precision']}: {s['reason']}" for s in skipped) or "none planned"
        raise BenchError(f"bench: nothing to measure ({reasons})")
    machine = describe_machine()
    results: list[dict[str, Any]] = []
    e2e_runs: list[dict[str, Any]] = []
    modes: set[str] = set()
    for name, precision in runs:
        req = OpenRequest(checkpoint=checkpoint, bundle=bundle, precision=precision, mode=mode)
        with open_backend(name, req) as backend:
            modes.add(backend.mode)
            flop = generator_flops(backend.mode)
            for batch in batches or default_batches(str(backend.info.device).split(":")[0]):
                row = measure(backend, batch, iterations=iterations, warmup=warmup, seconds=seconds,
                              machine=machine, flop_per_frame=flop)
                results.append(row)
                if on_result is not None:
                    on_result("model", row)
            if template is not None and features is not None:
                run = _e2e_run(Candidate(name, precision), backend.mode, template, features, results,
                               checkpoint=checkpoint, bundle=bundle, mode=mode, batch=e2e_batch, frames=e2e_frames)
                e2e_runs.append(run)
                if on_result is not None:
                    on_result("e2e", run)
    model_mode = sorted(modes)[0] if len(modes) == 1 else ",".join(sorted(modes))
    return {
        "schema": SCHEMA_VERSION,
        "machine": machine,
        "model": {
            "mode": model_mode,
            "gflop_per_frame": {m: round(generator_flops(m) / 1e9, 4) for m in sorted(modes)},
            "flop_counting": "Conv2d only, multiply-add = 2, from the model's shapes (toolkit.bench.generator_flops)",
            "checkpoint": os.fspath(checkpoint) if checkpoint is not None else None,
            "bundle": os.fspath(bundle) if bundle is not None else None,
        },
        "settings": {"iterations": iterations if iterations is not None else "auto", "warmup": warmup,
                     "seconds_per_measurement": seconds if iterations is None else None,
                     "batches": batches or "default (1 on CPU; 1,16 on GPU)", "timer": "time.perf_counter",
                     "inputs": "image-like crops (models.init.image_like_batch) + non-negative audio windows"},
        "results": results,
        "skipped": skipped,
        "e2e": ({"template": os.fspath(template), "features": os.fspath(features), "frames": e2e_frames,
                 "runs": e2e_runs} if template is not None else None),
        "load_after": describe_machine()["load"],
        # what --precision auto would run on this CPU for this bundle, and why (bench.precision.choose_precision)
        "auto_precision": choose_precision(bundle).describe() if bundle is not None else None,
    }
