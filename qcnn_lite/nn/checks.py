"""Argument validation shared by the layers and the quantizer: arrays in, clean float32 arrays out.

Each check raises ValueError with the argument's name, before any kernel sees the value.
"""
from __future__ import annotations

import numpy as np

from qcnn_lite.kernels.checks import check_ints

__all__ = ["as_f32", "as_bias", "positive_int", "check_input"]


def as_f32(name: str, a, ndim: int | None = None) -> np.ndarray:
    a = np.asarray(a)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return np.ascontiguousarray(a, dtype=np.float32)


def as_bias(bias, n_out: int) -> np.ndarray:
    if bias is None:
        return np.zeros(n_out, dtype=np.float32)
    b = as_f32("bias", bias, 1)
    if b.shape[0] != n_out:
        raise ValueError(f"bias has {b.shape[0]} entries for {n_out} outputs")
    return b


def positive_int(name: str, v, lo: int = 1) -> int:
    """v as an int: ValueError unless it is an integer >= lo (the kernels' own check)."""
    check_ints(**{name: (v, lo)})
    return int(v)


def check_input(x, ndim: int, channels: int, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != ndim or x.shape[1] != channels:
        want = "(n, %d)" % channels if ndim == 2 else "(n, %d, H, W)" % channels
        raise ValueError(f"{what} expects input of shape {want}, got {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)
