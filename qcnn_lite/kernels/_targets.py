"""The compiled Pythran kernels, one extension per CPU target: which are built, which runs here, which is in use.

meson compiles ``_pythran.py`` once per target into ``qcnn_lite.kernels._pythran_<target>``
(see ``kernels/meson.build``; the names and the CPU checks are in :mod:`.cpu`).
:func:`select` loads one: ``QCNN_LITE_TARGET`` when it is set (an error if that
target is not built or this CPU cannot run it), else the best built target this
CPU runs. ``QCNN_LITE_KERNELS_SO=path/to/_pythran_<target>*.so`` replaces the
built set by that one file (the ASan build, other builds under test).

The module in use is also ``sys.modules["qcnn_lite.kernels._pythran"]``, so
``from qcnn_lite.kernels import _pythran`` reaches the kernels of the target in use.
"""
from __future__ import annotations

import importlib.machinery
import json
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from . import cpu as _cpu

__all__ = ["built", "runnable", "select", "current", "target", "describe", "cpu", "ENV_TARGET", "ENV_SO"]

ENV_TARGET = "QCNN_LITE_TARGET"
ENV_SO = "QCNN_LITE_KERNELS_SO"
_PKG = __name__.rpartition(".")[0]
_ALIAS = f"{_PKG}._pythran"

_cpu_info: _cpu.CpuInfo | None = None
_paths: dict[str, str] | None = None
_loaded: dict[str, ModuleType] = {}
_state: dict[str, Any] = {"target": None, "reason": "no compiled kernels loaded yet"}


def cpu() -> _cpu.CpuInfo:
    """This machine's CPU (read once)."""
    global _cpu_info
    if _cpu_info is None:
        _cpu_info = _cpu.detect()
    return _cpu_info


def _is_extension(path: str | None) -> bool:
    return bool(path) and str(path).endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def _override_target(path: str) -> str:
    """The target of a file named ``_pythran_<target>.<ext suffix>``."""
    stem = Path(path).name.split(".", 1)[0]
    name = stem.removeprefix("_pythran_")
    if name == stem or name not in _cpu.TARGETS:
        raise ImportError(f"{ENV_SO}={path}: not a kernels extension named _pythran_<target> "
                          f"(<target> one of {', '.join(_cpu.TARGETS)})")
    return name


def _built_paths() -> dict[str, str]:
    global _paths
    if _paths is None:
        so = os.environ.get(ENV_SO, "").strip()
        if so:
            if not Path(so).is_file():
                raise ImportError(f"{ENV_SO}={so}: no such file")
            _paths = {_override_target(so): os.path.abspath(so)}
        else:
            _paths = {}
            for t in _cpu.TARGETS:
                try:
                    spec = importlib.util.find_spec(f"{_PKG}._pythran_{t}")
                except (ImportError, ValueError):
                    spec = None
                if spec is not None and _is_extension(spec.origin):
                    _paths[t] = spec.origin
    return _paths


def built() -> list[str]:
    """Targets whose extension was built, in the order of ``_cpu.TARGETS`` (empty: numpy only)."""
    return list(_built_paths())


def runnable() -> list[str]:
    """Built targets that this CPU runs."""
    return [t for t in built() if _cpu.runnable(t, cpu())]


def _load(target: str) -> ModuleType:
    if target not in _loaded:
        path = _built_paths()[target]
        name = f"{_PKG}._pythran_{target}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load the {target} kernels from {path}")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules[name] = mod
        _loaded[target] = mod
    return _loaded[target]


def _choose(want: str | None, via: str = ENV_TARGET) -> tuple[str, str]:
    """(target, why) for a requested name (None: the best); ValueError/ImportError with the reason otherwise.

    ``via`` names where the request came from, for the messages (the variable, or ``set_target``).
    """
    have, info = built(), cpu()
    feats = f"{info.arch} CPU {info.model!r}"
    if want is None or want.strip().lower() in ("", "auto"):
        if not have:
            raise ImportError("the Pythran kernels are not built")
        best = _cpu.best(have, info)
        if best is None:  # only targets this CPU cannot run (a build for another machine)
            raise ImportError(f"none of the built kernel targets ({', '.join(have)}) runs on this {feats}: "
                              + "; ".join(f"{t} needs {', '.join(_cpu.missing(t, info))}" for t in have))
        skipped = [t for t in have if _cpu.missing(t, info)]
        why = f"best built target this {feats} runs"
        if skipped:
            why += "; not runnable: " + "; ".join(f"{t} (lacks {', '.join(_cpu.missing(t, info))})" for t in skipped)
        return best, why
    t = _cpu.canonical(want)  # ValueError for an unknown name
    asked = f"{via}({want!r})" if via == "set_target" else f"{via}={want!r}"
    if t not in have and t not in ("native", *_cpu.arch_targets(info.arch)):
        raise ValueError(f"{asked}: the {t} kernels are for {_cpu.missing(t, info)[0]}; "
                         f"built here: {', '.join(have) or 'none'}")
    if t not in have:
        how = "-Dnative=true" if t == "native" else f"-Dkernel_targets including {t} (or the default, auto)"
        raise ValueError(f"{asked}: the {t} kernels are not built (built: {', '.join(have) or 'none'}); "
                         f"rebuild with {how}")
    lack = _cpu.missing(t, info)
    if lack:
        raise ValueError(f"{asked}: this {feats} cannot run the {t} kernels "
                         f"(lacks {', '.join(lack)}); runnable here: {', '.join(runnable()) or 'none'}")
    return t, f"forced ({via}={want})" if via != "set_target" else f"forced (set_target({want!r}))"


def select(want: str | None = None, via: str = "set_target") -> ModuleType:
    """Load and use the kernels of ``want`` (a target name; None or "auto": the best built target this CPU runs).

    Raises ValueError (unknown, unbuilt or unrunnable target) or ImportError (nothing built);
    ``via`` names the request in those messages.
    """
    t, why = _choose(want, via)
    mod = _load(t)
    _state.update(target=t, reason=why)
    sys.modules[_ALIAS] = mod
    return mod


def current() -> ModuleType:
    """The extension in use, selecting one from ``QCNN_LITE_TARGET`` first if none is yet."""
    if _state["target"] is None:
        env = os.environ.get(ENV_TARGET)
        return select(env.strip() if env and env.strip() else None, ENV_TARGET)
    return _loaded[_state["target"]]


def target() -> str | None:
    """Name of the target in use (None before one is selected or when none is built)."""
    return _state["target"]


def _build_flags() -> dict[str, str]:
    """The compiler flags of each target, from the _buildinfo.json meson wrote beside the extensions."""
    so = os.environ.get(ENV_SO, "").strip()
    try:
        if so:
            text = (Path(so).parent / "_buildinfo.json").read_text()
        else:
            from importlib import resources

            text = resources.files(_PKG).joinpath("_buildinfo.json").read_text()
        return dict(json.loads(text).get("kernel_target_flags") or {})
    except (OSError, ValueError):
        return {}


def describe() -> dict[str, Any]:
    """Which target is in use and why: the CPU seen, and every built target with its flags and whether it runs here."""
    info = cpu()
    flags = _build_flags()
    wanted = sorted({f for t in _cpu.TARGETS for f in _cpu.REQUIRES[t]})
    return {
        "target": _state["target"],
        "reason": _state["reason"],
        "requested": os.environ.get(ENV_TARGET) or None,
        "cpu": {"arch": info.arch, "model": info.model, "source": info.source,
                "features": [f for f in wanted if f in info.flags]},
        "built": {t: {"flags": flags.get(t), "runnable": _cpu.runnable(t, info),
                      "missing": _cpu.missing(t, info), "path": _built_paths()[t]} for t in built()},
    }
