"""Which implementation runs the kernels: the backend (numpy or compiled) and its CPU target.

``QCNN_LITE_BACKEND=numpy|pythran|auto`` (default ``auto``) picks the backend when
the package is imported; :func:`set_backend` changes it at run time. ``auto`` uses
the compiled Pythran kernels when they were built and the pure-numpy path otherwise.

The compiled kernels are built for several CPU targets (``baseline``, ``v3``, ``v4``
on x86-64; ``baseline``, ``dotprod`` on aarch64; see :mod:`.cpu`). The best built
target this CPU runs is used, or the one ``QCNN_LITE_TARGET`` names; :func:`set_target`
changes it, :func:`describe` says which one runs and why.
"""
from __future__ import annotations

import os
from types import ModuleType

from . import _numpy, _targets, cpu

__all__ = ["BACKENDS", "ENV_BACKEND", "available_backends", "set_backend", "backend", "impl", "built_targets",
           "runnable_targets", "target", "set_target", "describe", "cpu_info", "simd_isas", "init_from_environment"]

ENV_BACKEND = "QCNN_LITE_BACKEND"


BACKENDS = ("numpy", "pythran", "auto")


def _load_pythran() -> ModuleType | None:
    """The compiled backend, or None when no ``_pythran_<target>`` extension was built.

    A ValueError (``QCNN_LITE_TARGET`` names a target not built or not runnable here) propagates.
    """
    try:
        from . import _compiled  # numpy tables + the compiled extension of the selected target
    except ImportError:
        return None
    return _compiled


_impl: ModuleType = _numpy
_name = "numpy"


def available_backends() -> list[str]:
    return ["numpy"] + (["pythran"] if _load_pythran() is not None else [])


def set_backend(name: str) -> str:
    """Select ``numpy``, ``pythran`` or ``auto``; returns the backend now in use."""
    global _impl, _name
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    if name == "numpy":
        _impl, _name = _numpy, "numpy"
        return _name
    mod = _load_pythran()
    if mod is None:
        if name == "pythran":
            raise ImportError(
                "the Pythran kernels are not built: reinstall qcnn-lite with a C++ compiler "
                "and pythran available, or use QCNN_LITE_BACKEND=numpy"
            )
        _impl, _name = _numpy, "numpy"
    else:
        _impl, _name = mod, "pythran"
    return _name


def backend() -> str:
    """Name of the backend in use: ``numpy`` or ``pythran``."""
    return _name


def cpu_info() -> "cpu.CpuInfo":
    """This machine's CPU, read once from /proc/cpuinfo: the one place that reads it."""
    return _targets.cpu()


def simd_isas() -> dict[str, str | None]:
    """The instruction sets of the C++ SIMD kernels in use: ``conv`` (integer conv tables) and ``fc``
    (byte-shuffle fc layers); None where the extension is not built (Pythran's portable kernels run)."""
    from . import _convq, _shuffle

    fc = _shuffle.default_isa() if _shuffle.available_isas() else None
    return {"conv": _convq.default_conv_isa() if _convq.conv_isas() else None, "fc": fc}


def built_targets() -> list[str]:
    """CPU targets the Pythran kernels were built for (empty when they were not built)."""
    return _targets.built()


def runnable_targets() -> list[str]:
    """Built targets this CPU can run."""
    return _targets.runnable()


def target() -> str | None:
    """The CPU target of the Pythran kernels in use (None when they are not built)."""
    if _load_pythran() is None:
        return None
    return _targets.target()


def set_target(name: str) -> str:
    """Run the Pythran kernels built for ``name`` (baseline|v3|v4|dotprod|native, or ``auto``: the best).

    Returns the target now in use. ValueError when that target is not built or this
    CPU cannot run it; ImportError when no Pythran kernels are built.
    """
    mod = _load_pythran()
    if mod is None:
        raise ImportError("the Pythran kernels are not built: no CPU target to choose")
    mod.use(_targets.select(name))
    return _targets.target()


def describe() -> dict:
    """The backend and CPU target in use and why: CPU model and features seen, every built target.

    Keys: backend, target, reason, requested (QCNN_LITE_TARGET), cpu {arch, model, source,
    features}, built {target: {flags, runnable, missing, path}}, summary (one line).
    """
    target()  # select one if none is yet
    d = {"backend": _name, **_targets.describe()}
    c = d["cpu"]
    d["summary"] = (f"{d['target']}: {d['reason']}" if d["target"] else f"no compiled kernels built ({c['model']})") + \
        f"; features seen: {' '.join(c['features']) or 'none'} ({c['source']})"
    return d


def impl() -> ModuleType:
    """The module that runs the kernels now (``_numpy`` or ``_compiled``)."""
    if ENV_ERROR is not None:
        _warn_env_error()
    return _impl


def _warn_env_error() -> None:
    """Once, at the first kernel call: the environment asked for kernels that cannot run."""
    global _env_warned
    if not _env_warned:
        _env_warned = True
        import warnings

        warnings.warn(f"{ENV_ERROR}; running the numpy kernels", RuntimeWarning, stacklevel=3)


def init_from_environment() -> None:
    """Apply ``QCNN_LITE_BACKEND`` and ``QCNN_LITE_TARGET``: ValueError naming the variable when either is wrong."""
    name = os.environ.get(ENV_BACKEND, "auto").strip().lower() or "auto"
    if name not in BACKENDS:
        raise ValueError(f"{ENV_BACKEND}={name!r} is not a backend: use one of {', '.join(BACKENDS)}")
    set_backend(name)
    if os.environ.get(_targets.ENV_TARGET, "").strip():
        _load_pythran()  # a forced target is checked now, whatever the backend: ValueError if it cannot be used


# A bad variable must not stop `import qcnn_lite` (nor `--help`): it is recorded (``ENV_ERROR``),
# the command line refuses to work with it, and a library caller is warned at its first kernel call.
ENV_ERROR: str | None = None
_env_warned = False
try:
    init_from_environment()
except (ValueError, ImportError) as e:
    ENV_ERROR = str(e)
    set_backend("numpy")
