"""The dense baseline without BLAS: numpy lays the input out, the compiled ``_pythran_dense`` loops do the rest.

Arguments are validated by :mod:`qcnn_lite.kernels`. Importing this module
raises ImportError when the extension was not built.
"""
from __future__ import annotations

import importlib.machinery

import numpy as np

from . import _pythran_dense
from ._numpy import conv_output_size

if not str(getattr(_pythran_dense, "__file__", "")).endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
    raise ImportError("qcnn_lite.kernels._pythran_dense is not compiled")

__all__ = ["phase_split", "conv2d_direct", "linear_direct"]


def phase_split(x: np.ndarray, kh: int, kw: int, stride: int, padding: int) -> tuple[np.ndarray, int, int, int, int]:
    """x (C, H, W) zero-padded and split into its stride*stride phases -> (xq, OH, OW, Hq, Wq).

    xq (C, stride*stride, Hq*Wq): phase a*stride + b holds padded pixel (y*stride + a, x*stride + b)
    at y*Wq + x. Hq and Wq leave room for every run of OH*Wq values a tap reads (one spare row:
    the scratch columns of the last output row read past the last real row).
    """
    C, H, W = x.shape
    s = stride
    OH, OW = conv_output_size(H, kh, s, padding), conv_output_size(W, kw, s, padding)
    Hq = max(-(-(H + 2 * padding) // s), OH + (kh - 1) // s) + 1
    Wq = max(-(-(W + 2 * padding) // s), OW + (kw - 1) // s)
    xp = np.zeros((C, Hq * s, Wq * s), np.float32)
    xp[:, padding:padding + H, padding:padding + W] = x
    if s > 1:
        xp = xp.reshape(C, Hq, s, Wq, s).transpose(0, 2, 4, 1, 3)
    return np.ascontiguousarray(xp).reshape(C, s * s, Hq * Wq), OH, OW, Hq, Wq


def conv2d_direct(x: np.ndarray, w_flat: np.ndarray, bias: np.ndarray, kh: int, kw: int,
                  stride: int, padding: int, groups: int) -> np.ndarray:
    """x (n, C, H, W) f32, w_flat (Ct, C/groups*kh*kw) in (c, i, j) order, bias (Ct,) -> (n, Ct, OH, OW) f32."""
    outs = []
    for img in x:
        xq, OH, OW, Hq, Wq = phase_split(img, kh, kw, stride, padding)
        outs.append(_pythran_dense.conv2d_direct(xq, w_flat, bias, kh, kw, stride, groups, OH, OW, Hq, Wq))
    return np.stack(outs)


def linear_direct(x: np.ndarray, wt: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """x (n, in) f32, wt (in, out) f32 (the weight transposed), bias (out,) -> (n, out) f32."""
    return _pythran_dense.linear_direct(x, wt, bias)
