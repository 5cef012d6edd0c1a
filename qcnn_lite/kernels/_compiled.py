"""The compiled backend: numpy builds the look-up tables, Pythran kernels sum them.

Building a table is a small dense product (inputs x codewords), which BLAS does
best; summing table entries picked by the codes is what the compiled kernels in
``_pythran`` do. Arguments are validated by :mod:`qcnn_lite.kernels`.
``_pythran`` is the extension of the CPU target in use (``_targets`` picks it;
:func:`use` swaps it). Importing this module raises ImportError when no target
was built, ValueError when ``QCNN_LITE_TARGET`` names one that cannot be used.
"""
from __future__ import annotations

from types import ModuleType

import numpy as np

from . import _targets
from ._numpy import conv_output_size, linear_tables

_pythran: ModuleType = _targets.current()

__all__ = ["linear_lut", "conv2d_lut", "conv_tables", "conv_geometry", "use"]


def use(module: ModuleType) -> None:
    """Run the kernels of ``module`` (an extension from ``_targets.select``) from now on."""
    global _pythran
    _pythran = module


def linear_lut(x: np.ndarray, codebooks: np.ndarray, codes: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """x (n, M*d) f32, codebooks (M, K, d), codes (out, M), bias (out,) -> (n, out) f32."""
    M, K, _ = codebooks.shape
    lut = linear_tables(x, codebooks).reshape(x.shape[0], M, K)
    return _pythran.linear_accumulate(lut, codes, bias)


def conv_geometry(H: int, W: int, kh: int, kw: int, stride: int, padding: int) -> tuple[int, int, int, int]:
    """(OH, OW, Hq, Wq): output size and the size of one phase plane of the table.

    A phase plane covers the zero-padded input with step ``stride``; it is at
    least as wide as OW plus the largest column shift, so a valid output never
    reads across a row end, and one row taller than the last row read, so the
    scratch columns never run past the plane.
    """
    OH, OW = conv_output_size(H, kh, stride, padding), conv_output_size(W, kw, stride, padding)
    s = stride
    Hq = max(-(-(H + 2 * padding) // s), OH + (kh - 1) // s) + 1
    Wq = max(-(-(W + 2 * padding) // s), OW + (kw - 1) // s)
    return OH, OW, Hq, Wq


def conv_tables(x: np.ndarray, codebooks: np.ndarray, stride: int, padding: int, Hq: int, Wq: int) -> np.ndarray:
    """The table of one image and one group, in the layout of ``_pythran.conv_accumulate``.

    x (C, H, W) with C = M*d (one group's channels), codebooks (M, K, d) ->
    (1, M*K, stride*stride, Hq*Wq) float32 with entry
    [0, m*K + k, a*stride + b, y*Wq + x] = <xp[m, :, y*stride + a, x*stride + b], codebooks[m, k]>,
    xp being x with ``padding`` zeros around it (and zeros past its end).
    Zero pixels give zero entries: a tap in the padding adds exactly 0.
    """
    C, H, W = x.shape
    M, K, d = codebooks.shape
    s = stride
    xp = np.zeros((C, Hq * s, Wq * s), np.float32)
    xp[:, padding:padding + H, padding:padding + W] = x
    if s > 1:
        # (C, Hq, a, Wq, b) -> (C, a, b, Hq, Wq): each phase one contiguous plane
        xp = np.ascontiguousarray(xp.reshape(C, Hq, s, Wq, s).transpose(0, 2, 4, 1, 3))
    xs = xp.reshape(M, d, s * s * Hq * Wq)
    lut = np.matmul(codebooks, xs)  # (M, K, P): one (K x d) @ (d x P) product per sub-space
    return lut.reshape(1, M * K, s * s, Hq * Wq)


def conv2d_lut(
    x: np.ndarray,
    codebooks: np.ndarray,
    codes: np.ndarray,
    bias: np.ndarray,
    stride: int,
    padding: int,
    groups: int,
) -> np.ndarray:
    """x (n, C, H, W) f32; codebooks (M, K, d); codes (Ct, kh, kw, M); bias (Ct,) -> (n, Ct, OH, OW) f32."""
    n, C, H, W = x.shape
    Ct, kh, kw, M = codes.shape
    OH, OW, Hq, Wq = conv_geometry(H, W, kh, kw, stride, padding)
    out = np.empty((n, Ct, OH, OW), np.float32)
    cg, ctg = C // groups, Ct // groups
    # One table per image and group: it is the size of the group's input times K/d, so building
    # them one at a time keeps the peak memory (and the cache working set) down.
    for i in range(n):
        for g in range(groups):
            lut = conv_tables(x[i, g * cg : (g + 1) * cg], codebooks, stride, padding, Hq, Wq)
            o = slice(g * ctg, (g + 1) * ctg)
            out[i, o] = _pythran.conv_accumulate(lut, codes[o], bias[o], stride, OH, OW, Wq)
    return out


def lrn(x: np.ndarray, size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    """Cross-channel LRN, x (n, C, H, W) f32 -> same shape (see ``_pythran.lrn``)."""
    return _pythran.lrn(x, int(size), float(alpha), float(beta), float(k))
