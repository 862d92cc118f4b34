"""What machine a benchmark ran on: CPU, cores, memory, load, GPU, and an estimate of peak FLOP/s where known.

Peak figures are estimates, stated as such in the report: for a CPU, cores x clock x fp32 FLOP per cycle (read from
the vector extensions the CPU reports, see :data:`CPU_FLOP_PER_CYCLE`); for an NVIDIA GPU, the vendor's dense
datasheet number (:data:`GPU_PEAK_TFLOPS`). Turbo clocks, thermal limits and the share of the vector units a
kernel can keep busy all move the real ceiling, so "share of peak" is an order of magnitude, not a grade.
"""

from __future__ import annotations

import os
import platform
import sys
from functools import lru_cache
from typing import Any

from framegen.runtimes.native import cpu_info, nvidia_gpu
from framegen.runtimes.ort_session import physical_cores

#: fp32 FLOP per cycle per core (FMA counted as 2) by what the cores can issue. Two FMA pipes of the given width are
#: assumed where FMA exists (Haswell and later, Zen 2 and later); AMD Zen 4 executes 512-bit instructions on
#: 256-bit pipes, so AVX-512 does not double its peak; Zen 5 (family 0x1A) has full-width pipes.
CPU_FLOP_PER_CYCLE: dict[str, int] = {
    "avx512-fma-2x512 (Intel Xeon Gold/Platinum, AMD Zen 5)": 64,
    "avx512-fma-2x256 (AMD Zen 4: 512-bit ops split in two)": 32,
    "avx2-fma-2x256": 32,
    "avx-no-fma": 16,
    "sse2": 8,
    "neon-fma-4x128 (Apple M)": 32,
    "neon-fma-2x128": 16,
}

#: NVIDIA datasheet peaks in TFLOP/s (dense, no sparsity): fp32 on CUDA cores, fp16 on tensor cores with fp32
#: accumulate. First matching substring of the device name wins, so specific names come first.
GPU_PEAK_TFLOPS: list[tuple[str, float, float]] = [
    ("H200 NVL", 60.0, 835.0),
    ("H200", 67.0, 989.0),
    ("H100 PCIe", 51.0, 756.0),
    ("H100 NVL", 60.0, 835.0),
    ("H100", 67.0, 989.0),  # SXM5 (e.g. "NVIDIA H100 80GB HBM3")
    ("A100", 19.5, 312.0),
    ("L40S", 91.6, 362.0),
    ("L4", 30.3, 121.0),
    ("A10", 31.2, 125.0),
    ("T4", 8.1, 65.0),
]


def _sysctl(name: str) -> str | None:
    """``sysctl -n name`` on macOS (CPU brand, core counts, clock)."""
    import subprocess

    try:
        res = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return (res.stdout.strip() or None) if res.returncode == 0 else None


def usable_cores() -> tuple[int, int]:
    """(physical, logical) cores this process may run on (physical as ONNX Runtime's backend counts them)."""
    logical = os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        logical = min(logical, len(os.sched_getaffinity(0)))
    return physical_cores(), max(1, logical)


def cpu_flop_per_cycle(flags: set[str], vendor: str, family: int | None, arch: str, model: str) -> tuple[int, str]:
    """fp32 FLOP per cycle per core and the row of :data:`CPU_FLOP_PER_CYCLE` it came from."""
    if arch in ("arm64", "aarch64"):
        key = "neon-fma-4x128 (Apple M)" if "Apple" in model else "neon-fma-2x128"
    elif "avx512f" in flags and "fma" in flags:
        zen4 = "AMD" in vendor and family == 0x19
        key = ("avx512-fma-2x256 (AMD Zen 4: 512-bit ops split in two)" if zen4
               else "avx512-fma-2x512 (Intel Xeon Gold/Platinum, AMD Zen 5)")
    elif "avx2" in flags and "fma" in flags:
        key = "avx2-fma-2x256"
    elif "avx" in flags:
        key = "avx-no-fma"
    else:
        key = "sse2"
    return CPU_FLOP_PER_CYCLE[key], key


def cpu_description() -> dict[str, Any]:
    """CPU model, vendor, cores, clock, vector extensions and the estimated fp32 peak in GFLOP/s."""
    import psutil

    arch = platform.machine().lower()
    info = cpu_info()
    model = info.get("model name") or _sysctl("machdep.cpu.brand_string") or platform.processor() or arch
    vendor = info.get("vendor_id", "Apple" if sys.platform == "darwin" and arch == "arm64" else "")
    try:
        family: int | None = int(info["cpu family"])
    except (KeyError, ValueError):
        family = None
    flags = set(info.get("flags", "").split())
    physical, logical = usable_cores()
    mhz, clock_source = None, None
    freq = None
    try:
        freq = psutil.cpu_freq()
    except (NotImplementedError, OSError, RuntimeError):
        freq = None
    if freq is not None and freq.max:
        mhz, clock_source = float(freq.max), "psutil.cpu_freq max"
    elif freq is not None and freq.current:
        mhz, clock_source = float(freq.current), "current clock (psutil.cpu_freq; turbo may be higher)"
    elif info.get("cpu MHz"):
        mhz, clock_source = float(info["cpu MHz"]), "/proc/cpuinfo cpu MHz (current clock; turbo may be higher)"
    elif sys.platform == "darwin" and _sysctl("hw.cpufrequency_max"):
        mhz, clock_source = float(_sysctl("hw.cpufrequency_max") or 0) / 1e6, "sysctl hw.cpufrequency_max"
    per_cycle, basis = cpu_flop_per_cycle(flags, vendor, family, arch, model)
    # A current clock is no ceiling (turbo runs above it, and a measured rate then reads as more than 100 % of
    # "peak"): only a maximum clock gives a peak; otherwise the peak is unknown, and said to be.
    turbo_known = clock_source is not None and "current" not in clock_source
    peak = physical * (mhz / 1000.0) * per_cycle if mhz and turbo_known else None
    vector = sorted(f for f in flags if f in ("sse2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16",
                                              "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "f16c"))
    return {
        "model": model, "vendor": vendor, "arch": arch, "family": family,
        "physical_cores": physical, "logical_cores": logical, "clock_mhz": round(mhz, 1) if mhz else None,
        "clock_source": clock_source, "vector_extensions": vector,
        "flop_per_cycle_fp32": per_cycle, "flop_per_cycle_basis": basis,
        "peak_gflops_fp32": round(peak, 1) if peak else None,
        "peak_note": "estimate: physical cores x maximum clock x fp32 FLOP/cycle (FMA = 2)" if peak else
        "unknown (no maximum clock reported)" if mhz else "unknown (no clock reported)",
    }


def gpu_peak_tflops(name: str) -> tuple[float, float] | None:
    """(fp32, fp16 tensor-core dense) datasheet TFLOP/s for an NVIDIA GPU name, or ``None`` when not in the table."""
    for key, fp32, fp16 in GPU_PEAK_TFLOPS:
        if key.lower() in name.lower():
            return fp32, fp16
    return None


def gpu_description() -> list[dict[str, Any]]:
    """Visible NVIDIA GPUs (name, memory, compute capability, datasheet peaks); empty without one."""
    gpus: list[dict[str, Any]] = []
    try:
        import torch

        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                gpus.append({"index": i, "name": p.name, "memory_gb": round(p.total_memory / 1e9, 1),
                             "capability": f"{p.major}.{p.minor}", "source": "torch.cuda"})
    except ImportError:
        pass
    if not gpus:
        probe = nvidia_gpu()
        for i in range(probe.count):
            gpus.append({"index": i, "name": probe.name if i == 0 else "", "memory_gb": None, "capability": None,
                         "source": "libcuda"})
    for g in gpus:
        peaks = gpu_peak_tflops(g["name"])
        g["peak_tflops_fp32"], g["peak_tflops_fp16_tensor"] = peaks if peaks else (None, None)
        g["peak_note"] = "NVIDIA datasheet, dense" if peaks else "not in framegen's table"
    return gpus


def load_now() -> dict[str, Any]:
    """Load average and CPU busy share right now: benchmarks on a shared machine are only comparable within a run."""
    import psutil

    try:
        one, five, fifteen = os.getloadavg()
    except (AttributeError, OSError):
        one = five = fifteen = float("nan")
    return {"loadavg_1_5_15": [round(one, 2), round(five, 2), round(fifteen, 2)],
            "cpu_busy_percent": psutil.cpu_percent(interval=0.5)}


@lru_cache(maxsize=1)
def _static_description() -> dict[str, Any]:
    from importlib import metadata

    import psutil

    versions: dict[str, str] = {"python": platform.python_version()}
    # Distribution metadata, not imports: importing coremltools alone takes seconds and prints warnings.
    for label, dists in (("numpy", ("numpy",)), ("torch", ("torch",)),
                         ("onnxruntime", ("onnxruntime-gpu", "onnxruntime")),
                         ("opencv", ("opencv-python-headless", "opencv-python")), ("av", ("av",)),
                         ("coremltools", ("coremltools",))):
        for dist in dists:
            try:
                versions[label] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return {
        "hostname": platform.node(), "os": f"{platform.system()} {platform.release()}",
        "cpu": cpu_description(),
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "gpus": gpu_description(),
        "versions": versions,
    }


def describe_machine(load: bool = True) -> dict[str, Any]:
    """The machine as JSON-able data: ``{hostname, os, cpu: {...}, memory_gb, gpus: [...], versions, load}``."""
    desc = dict(_static_description())
    if load:
        desc["load"] = load_now()
    return desc


def peak_gflops(machine: dict[str, Any], device: str, precision: str) -> float | None:
    """The estimated peak GFLOP/s a backend on ``device`` (``cpu``, ``cuda:N``) at ``precision`` can reach.

    fp16 on the CPU is compared with the fp32 peak (CPU kernels compute fp16 models in fp32 or emulate it); fp32 on
    a GPU with the CUDA-core fp32 peak (TF32 tensor cores can exceed it); unknown devices give ``None``.
    """
    if device == "cpu":
        return machine.get("cpu", {}).get("peak_gflops_fp32")
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        for g in machine.get("gpus", []):
            if g["index"] == index:
                tf = g["peak_tflops_fp16_tensor"] if precision == "fp16" else g["peak_tflops_fp32"]
                return tf * 1000.0 if tf else None
    return None
