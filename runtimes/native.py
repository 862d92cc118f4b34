"""Cheap, honest probes of the native pieces GPU runtimes need: the NVIDIA driver, a visible GPU, shared libraries.

A Python package that *lists* a GPU provider proves nothing (onnxruntime-gpu lists CUDA and TensorRT on a laptop
without a GPU), so these probes ask the driver and the dynamic loader directly, and turn what they find into one
sentence a user can act on. Nothing here imports a GPU framework.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import struct
import sys
from dataclasses import dataclass

# CUresult codes worth naming (cuda.h).
_CU_ERRORS = {100: "no CUDA-capable device", 35: "driver older than the CUDA runtime", 999: "unknown error",
              3: "driver not initialized", 34: "driver stub library (libcuda stub, not the real driver)"}

_SYSTEM_LIB = re.compile(r"^(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|ld-linux[\w-]*)\.so")
_MISSING_LIB = re.compile(r"(lib[\w.+-]+?\.so[\d.]*): cannot open shared object file")


@dataclass(frozen=True)
class GpuProbe:
    """What the NVIDIA driver reports: how many GPUs, the first one's name, the CUDA version the driver supports."""

    count: int
    name: str
    driver_cuda: tuple[int, int] | None
    reason: str  # why there is no usable GPU ("" when count > 0)


@functools.lru_cache(maxsize=1)
def nvidia_gpu() -> GpuProbe:
    """Ask the NVIDIA driver (``libcuda``) whether a GPU is visible; cached for the process."""
    if sys.platform == "darwin":
        return GpuProbe(0, "", None, "no CUDA on macOS")
    libname = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        cuda = ctypes.CDLL(libname)
    except OSError:
        return GpuProbe(0, "", None, f"no NVIDIA GPU / driver ({libname} not found)")
    rc = cuda.cuInit(0)
    if rc != 0:
        what = _CU_ERRORS.get(rc, f"CUresult {rc}")
        return GpuProbe(0, "", None, f"NVIDIA driver found but cuInit failed: {what}")
    count = ctypes.c_int(0)
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return GpuProbe(0, "", None, "NVIDIA driver found but no GPU is visible (CUDA_VISIBLE_DEVICES?)")
    version = ctypes.c_int(0)
    driver_cuda = None
    if cuda.cuDriverGetVersion(ctypes.byref(version)) == 0:
        driver_cuda = (version.value // 1000, (version.value % 1000) // 10)
    name = ""
    dev = ctypes.c_int(0)
    buf = ctypes.create_string_buffer(256)
    if cuda.cuDeviceGet(ctypes.byref(dev), 0) == 0 and cuda.cuDeviceGetName(buf, 256, dev) == 0:
        name = buf.value.decode(errors="replace")
    return GpuProbe(count.value, name, driver_cuda, "")


def needed_libraries(path: str | os.PathLike[str]) -> list[str]:
    """The ``DT_NEEDED`` sonames of a 64-bit ELF shared library, read from its section headers ([] if not ELF).

    Reading a few kilobytes of headers is far cheaper than loading a 300 MB provider library to learn what it needs.
    """
    try:
        with open(path, "rb") as fh:
            ident = fh.read(16)
            if len(ident) < 16 or ident[:4] != b"\x7fELF" or ident[4] != 2:
                return []
            end = "<" if ident[5] == 1 else ">"
            header = fh.read(48)
            *_, shoff, _flags, _ehsize, _phentsize, _phnum, shentsize, shnum, _shstrndx = struct.unpack(
                end + "HHIQQQIHHHHHH", header)
            if shoff == 0 or shnum == 0:
                return []
            fh.seek(shoff)
            table = fh.read(shentsize * shnum)
            # Elf64_Shdr: name, type, flags, addr, offset, size, link, info, addralign, entsize
            sections = [struct.unpack_from(end + "IIQQQQIIQQ", table, i * shentsize) for i in range(shnum)]
            for sec in sections:
                if sec[1] != 6:  # SHT_DYNAMIC
                    continue
                strtab = sections[sec[6]]
                fh.seek(sec[4])
                dynamic = fh.read(sec[5])
                fh.seek(strtab[4])
                strings = fh.read(strtab[5])
                names = []
                for off in range(0, len(dynamic) - 15, 16):
                    tag, val = struct.unpack_from(end + "qQ", dynamic, off)
                    if tag == 0:
                        break
                    if tag == 1:  # DT_NEEDED
                        names.append(strings[val:strings.index(b"\0", val)].decode())
                return names
    except (OSError, struct.error, IndexError, ValueError):
        return []
    return []


def missing_libraries(names: list[str]) -> list[str]:
    """Those of ``names`` the dynamic loader cannot load from the default search path (system libraries skipped)."""
    missing = []
    for name in names:
        if _SYSTEM_LIB.match(name):
            continue
        try:
            ctypes.CDLL(name)
        except OSError:
            missing.append(name)
    return missing


def missing_dependency(path: str | os.PathLike[str]) -> str | None:
    """Load a shared library as its runtime would and return the soname the loader could not find, else ``None``.

    The library's own RUNPATH is honoured here, which a per-dependency check from Python would not do. Other load
    failures (an undefined symbol that its host process would provide) are not counted: a later real session
    creation is the judge of those.
    """
    try:
        ctypes.CDLL(os.fspath(path))
    except OSError as exc:
        match = _MISSING_LIB.search(str(exc))
        return match.group(1) if match else None
    return None


# ----------------------------------------------------------------------------------------------- CPU units


def cpu_info() -> dict[str, str]:
    """The first processor block of ``/proc/cpuinfo`` (Linux); empty elsewhere."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if not line.strip():
                    if info:
                        break
                    continue
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as the kernel reports them (``/proc/cpuinfo``); empty where unknown. Cached."""
    return frozenset(cpu_info().get("flags", "").split())


#: Flags that give the CPU native bfloat16 arithmetic (AVX-512 BF16 dot products, AMX bf16 tiles).
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
#: Flags that give it int8 dot products (AMX int8 tiles, AVX-512 VNNI, AVX-VNNI), fastest first.
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")


@dataclass(frozen=True)
class PrecisionUnits:
    """Whether this CPU computes a precision natively, and the flags that say so (or why not)."""

    precision: str
    native: bool
    units: tuple[str, ...]
    reason: str


def cpu_units(precision: str, flags: frozenset[str] | None = None) -> PrecisionUnits:
    """Whether the CPU has native units for ``bf16`` or ``int8`` (other precisions: always, as plain fp32 SIMD)."""
    have = cpu_flags() if flags is None else flags
    wanted = {"bf16": BF16_FLAGS, "int8": INT8_FLAGS}.get(precision)
    if wanted is None:
        return PrecisionUnits(precision, True, (), f"{precision}: computed by the CPU's fp32 units")
    units = tuple(f for f in wanted if f in have)
    if units:
        return PrecisionUnits(precision, True, units, f"{precision}: this CPU has {', '.join(units)}")
    where = "no /proc/cpuinfo flags to read" if not have else f"none of {', '.join(wanted)} in its flags"
    return PrecisionUnits(precision, False, (), f"{precision}: this CPU has no {precision} units ({where})")
