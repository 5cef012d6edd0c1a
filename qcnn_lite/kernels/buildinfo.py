"""What this installation runs on: kernel backend, how the kernels were built, numpy and its BLAS.

``python -m qcnn_lite info`` prints :func:`render` of :func:`collect` (``--json``: the dict).
"""
from __future__ import annotations

import json
import platform
import sys
from importlib import resources
from typing import Any

import numpy as np

__all__ = ["collect", "render"]


def _build_file() -> dict[str, Any]:
    """The build record written by meson (qcnn_lite/kernels/_buildinfo.json), or a note why it is missing."""
    try:
        text = resources.files("qcnn_lite.kernels").joinpath("_buildinfo.json").read_text()
    except (FileNotFoundError, OSError):
        return {"pythran_kernels": "unknown (no _buildinfo.json: not installed through meson)"}
    return json.loads(text)


def _blas() -> list[dict[str, Any]]:
    """BLAS libraries numpy uses (threadpoolctl when installed, else numpy's build config)."""
    try:
        from threadpoolctl import threadpool_info

        return [
            {k: d.get(k) for k in ("internal_api", "version", "num_threads", "filepath", "architecture")}
            for d in threadpool_info()
            if d.get("user_api") == "blas"
        ]
    except ImportError:
        cfg = np.show_config(mode="dicts") if np.lib.NumpyVersion(np.__version__) >= "1.26.0" else {}
        blas = cfg.get("Build Dependencies", {}).get("blas", {}) if cfg else {}
        return [{"name": blas.get("name"), "version": blas.get("version")}] if blas else []


def collect() -> dict[str, Any]:
    """Everything :func:`main` prints, as a JSON-able dict."""
    from qcnn_lite import kernels

    info: dict[str, Any] = {
        "backend": kernels.backend(),
        "available_backends": kernels.available_backends(),
        "build": _build_file(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "numpy": np.__version__,
        "blas": _blas(),
    }
    info["kernels_path"] = None
    info["target"] = kernels.describe()  # the CPU target of the Pythran kernels, why, and every built one
    if info["target"]["target"]:
        info["kernels_path"] = info["target"]["built"][info["target"]["target"]]["path"]
    from qcnn_lite.kernels import _convq, _shuffle

    isas = _shuffle.available_isas()
    conv_isas = _convq.conv_isas()
    info["kernels"] = {
        "conv (int tables)": ("numpy emulation" if info["backend"] == "numpy"
                              else _convq.default_conv_isa() if conv_isas else "pythran"),
        "conv (float tables)": "pythran" if "pythran" in info["available_backends"] else "numpy",
        "fc (8-bit tables)": _shuffle.default_isa() if isas and info["backend"] != "numpy" else "numpy emulation",
    }
    info["shuffle_isas"] = isas
    return info


def render(info: dict[str, Any]) -> str:
    """A readable multi-line report of :func:`collect`."""
    b = info["build"]
    lines = [
        f"backend in use      : {info['backend']}   (set QCNN_LITE_BACKEND=numpy|pythran|auto)",
        f"available backends  : {', '.join(info['available_backends'])}",
        f"pythran kernels     : {b.get('pythran_kernels')}",
        f"kernels loaded from : {info['kernels_path'] or '-'}",
    ]
    t = info.get("target") or {}
    if t:
        c = t["cpu"]
        lines += [
            f"kernel target       : {t['target'] or '-'}   (set QCNN_LITE_TARGET=baseline|v3|v4|dotprod|native)",
            f"  why               : {t['reason'] if t['target'] else 'no compiled kernels'}",
            f"  CPU               : {c['model']} ({c['arch']}); features seen: {' '.join(c['features']) or 'none'}"
            f" (from {c['source']})",
        ]
        for name, bt in t["built"].items():
            runs = "runs here" if bt["runnable"] else f"cannot run here (lacks {', '.join(bt['missing'])})"
            lines.append(f"  built {name:<12}: {bt['flags'] or 'no -march'}; {runs}")
    for kernel, isa in info.get("kernels", {}).items():
        lines.append(f"{kernel:<20}: {isa}")
    lines.append(f"fc shuffle ISAs     : {', '.join(info.get('shuffle_isas') or ['not built'])}"
                 "   (set QCNN_LITE_TARGET=baseline|v3|v4)")
    if "cxx" in b:
        lines += [
            f"build options       : -Dpythran={b.get('pythran_option')} -Dnative={b.get('native')} "
            f"-Dopenmp={b.get('openmp')}  buildtype={b.get('buildtype')} -O{b.get('optimization')}",
            f"compiler            : {b.get('cxx')} ({b.get('cxx_version') or '-'}); targets built: "
            f"{', '.join(b.get('kernel_targets') or []) or '-'} (-Dkernel_targets={b.get('kernel_targets_option', '-')})",
            f"compiler flags      : {b.get('cpp_args') or '-'}",
            f"pythran / meson     : {b.get('pythran_version')} / {b.get('meson_version')}",
        ]
    lines += [
        f"python              : {info['python']} on {info['platform']}",
        f"numpy               : {info['numpy']}",
    ]
    for lib in info["blas"] or [{"name": "unknown"}]:
        desc = ", ".join(f"{k}={v}" for k, v in lib.items() if v is not None)
        lines.append(f"numpy BLAS          : {desc}")
    return "\n".join(lines) + "\n"
