"""Facts about the machine a benchmark runs on: CPU, memory, OS, load (Linux and Android).

The CPU is read once, by :mod:`qcnn_lite.kernels.cpu`; this adds what a result file records.
"""
from __future__ import annotations

import os
import shutil
import time
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from qcnn_lite import kernels

__all__ = ["machine", "device_facts", "uptime", "environment"]


def machine() -> dict[str, Any]:
    """CPU, load and library versions, recorded with every result."""
    cpu = kernels.cpu_info().model
    torch = sys.modules.get("torch")
    target = kernels.describe()
    fc_isa = kernels.simd_isas()["fc"]  # the byte-shuffle ISA the 8-bit fc layers pack for
    return {
        "cpu": cpu, "cores": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "numpy": np.__version__, "torch": getattr(torch, "__version__", None),
        "onnxruntime": getattr(sys.modules.get("onnxruntime"), "__version__", None),
        "kernel_backends": kernels.available_backends(),
        # the CPU target of the compiled kernels (None: not built) and why it was picked
        "kernel_target": target["target"], "kernel_target_reason": target["reason"],
        "kernel_targets_built": kernels.built_targets(), "cpu_features": target["cpu"]["features"],
        "fc_shuffle_isa": fc_isa,
        "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


# --------------------------------------------------------------------------- device facts
def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip()
    except OSError:
        return None


def _getprop(key: str) -> str | None:
    """An Android system property, or None off Android (no ``getprop``) or when it is empty."""
    exe = shutil.which("getprop")
    if exe is None:
        return None
    try:
        r = subprocess.run([exe, key], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None


def _max_freqs_khz(n: int) -> list[int | None]:
    """cpuinfo_max_freq of every core in kHz (None where cpufreq is not exposed, e.g. most VMs)."""
    out: list[int | None] = []
    for i in range(n):
        v = _read(f"/sys/devices/system/cpu/cpu{i}/cpufreq/cpuinfo_max_freq")
        out.append(int(v) if v and v.isdigit() else None)
    return out


def _dmi_model() -> str | None:
    vendor, product = _read("/sys/devices/virtual/dmi/id/sys_vendor"), _read("/sys/devices/virtual/dmi/id/product_name")
    return " ".join(s for s in (vendor, product) if s) or None


def device_facts() -> dict[str, Any]:
    """What the result file records about the device (``device`` section of the schema)."""
    android = _getprop("ro.build.version.release")
    info = kernels.cpu_info()
    cpu = {"model_name": info.model if "unknown" != info.model else None, "hardware": info.hardware,
           "cpu_parts": list(info.parts)}
    cores = os.cpu_count() or 1
    model = _getprop("ro.product.model") if android else None
    maker = _getprop("ro.product.manufacturer") if android else None
    if model is None:
        model = _dmi_model() or cpu["hardware"] or cpu["model_name"] or platform.machine()
    cpu_desc = cpu["model_name"] or ", ".join(filter(None, [cpu["hardware"], _getprop("ro.soc.model"),
                                                           _getprop("ro.board.platform")])) or platform.processor()
    mem = re.search(r"MemTotal:\s+(\d+) kB", _read("/proc/meminfo") or "")
    return {
        "model": model,
        "manufacturer": maker,
        "android_version": android,
        "android_sdk": _getprop("ro.build.version.sdk") if android else None,
        "os": f"Android {android}" if android else platform.system(),
        "kernel": f"{platform.system()} {platform.release()} {platform.version()}",
        "arch": platform.machine(),
        "cpu": cpu_desc or "unknown",
        "cpu_parts": cpu["cpu_parts"],
        "cores": cores,
        "max_freq_khz": _max_freqs_khz(cores),
        "mem_total_mib": int(mem.group(1)) / 1024 if mem else None,
    }


def uptime() -> str | None:
    exe = shutil.which("uptime")
    if exe is None:
        return None
    try:
        return subprocess.run([exe], capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict[str, Any]:
    aff = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "uptime": uptime(),
        "cpu_affinity": aff,
        "termux": bool(os.environ.get("TERMUX_VERSION")) or "com.termux" in os.environ.get("PREFIX", ""),
    }
