"""The dense baseline without BLAS: numpy lays the input out, the compiled ``_noblas_kernels`` loops do the rest.

Arguments are validated by :mod:`qcnn_lite.kernels`. Importing this module
raises ImportError when the extension was not built.
"""
from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np

from . import _targets
from .geometry import phase_split

_MODULES: dict[str, ModuleType] = {}


def _kernels() -> ModuleType:
    """``_noblas_kernels_<target>``: built for each CPU target, run at the table kernels' target."""
    t = _targets.target()
    if t is None:  # no table kernel has run yet: select the target they will use
        _targets.current()
        t = _targets.target()
    if t not in _MODULES:
        _MODULES[t] = importlib.import_module(f"{__package__}._noblas_kernels_{t}")
    return _MODULES[t]


_kernels()  # ImportError now when the extension was not built

__all__ = ["conv2d_direct", "linear_direct", "conv_epilogue"]


def conv2d_direct(x: np.ndarray, w_flat: np.ndarray, bias: np.ndarray, kh: int, kw: int,
                  stride: int, padding: int, groups: int) -> np.ndarray:
    """x (n, C, H, W) f32, w_flat (Ct, C/groups*kh*kw) in (c, i, j) order, bias (Ct,) -> (n, Ct, OH, OW) f32."""
    n, C = x.shape[:2]
    xq, OH, OW, Hq, Wq = phase_split(x.reshape(n * C, *x.shape[2:]), kh, kw, stride, padding)
    xq = xq.reshape(n, C, *xq.shape[1:])
    return np.stack([_kernels().conv2d_direct(xq[i], w_flat, bias, kh, kw, stride, groups, OH, OW, Hq, Wq)
                     for i in range(n)])


def linear_direct(x: np.ndarray, wt: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """x (n, in) f32, wt (in, out) f32 (the weight transposed), bias (out,) -> (n, out) f32."""
    return _kernels().linear_direct(x, wt, bias)


def conv_epilogue(acc: np.ndarray, bias: np.ndarray, out: np.ndarray, r0: int, Wq: int, relu: bool) -> None:
    """Rows r0.. of out (Ct, OH, OW) f32 from acc (Ct, rows*Wq) f32 at row pitch Wq: + bias, ReLU; in place."""
    _kernels().conv_epilogue(acc, bias, out, int(r0), int(Wq), bool(relu))
