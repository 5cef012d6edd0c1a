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

from . import _convq, _targets
from .geometry import conv_geometry, phase_planes
from ._numpy import linear_tables

_pythran: ModuleType = _targets.current()

__all__ = ["linear_lut", "conv2d_lut", "conv2d_int_pythran", "conv_tables", "conv_geometry", "use"]


def use(module: ModuleType) -> None:
    """Run the kernels of ``module`` (an extension from ``_targets.select``) from now on."""
    global _pythran
    _pythran = module


def linear_lut(x: np.ndarray, codebooks: np.ndarray, codes: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """x (n, M*d) f32, codebooks (M, K, d), codes (out, M), bias (out,) -> (n, out) f32."""
    M, K, _ = codebooks.shape
    lut = linear_tables(x, codebooks).reshape(x.shape[0], M, K)
    return _pythran.linear_accumulate(lut, codes, bias)


def conv_tables(x: np.ndarray, codebooks: np.ndarray, stride: int, padding: int, Hq: int, Wq: int) -> np.ndarray:
    """The table of one image and one group, in the layout of ``_pythran.conv_accumulate``.

    x (C, H, W) with C = M*d (one group's channels), codebooks (M, K, d) ->
    (1, M*K, stride*stride, Hq*Wq) float32 with entry
    [0, m*K + k, a*stride + b, y*Wq + x] = <xp[m, :, y*stride + a, x*stride + b], codebooks[m, k]>,
    xp being x with ``padding`` zeros around it (and zeros past its end).
    Zero pixels give zero entries: a tap in the padding adds exactly 0.
    """
    M, K, d = codebooks.shape
    s = stride
    xs = phase_planes(x, s, padding, Hq, Wq).reshape(M, d, s * s * Hq * Wq)
    lut = np.matmul(codebooks, xs)  # (M, K, P): one (K x d) @ (d x P) product per sub-space
    return lut.reshape(1, M * K, s * s, Hq * Wq)


def conv2d_lut(x: np.ndarray, codebooks: np.ndarray, codes: np.ndarray, bias: np.ndarray, stride: int, padding: int,
               groups: int, table_dtype: str = "float32", scale_mode: str = _convq.DEFAULT_SCALE_MODE,
               relu: bool = False) -> np.ndarray:
    """x (n, C, H, W) f32; codebooks (M, K, d); codes (Ct, kh, kw, M); bias (Ct,) -> (n, Ct, OH, OW) f32.

    Integer tables run in the C++ extension (``simd/conv_kernels.h``) when it is built,
    else in the portable Pythran kernels; float tables in the Pythran float kernel.
    """
    if table_dtype != "float32":
        bits = _convq.TABLE_BITS[table_dtype]
        if _convq.conv_isas():
            return _convq.conv2d_compiled(x, codebooks, codes, bias, stride, padding, groups, bits, scale_mode, relu)
        return conv2d_int_pythran(x, codebooks, codes, bias, stride, padding, groups, bits, scale_mode, relu)
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
    return np.maximum(out, 0, out=out) if relu else out


def conv2d_int_pythran(x: np.ndarray, codebooks: np.ndarray, codes: np.ndarray, bias: np.ndarray, stride: int,
                       padding: int, groups: int, bits: int = 8, scale_mode: str = _convq.DEFAULT_SCALE_MODE,
                       relu: bool = False) -> np.ndarray:
    """The portable integer-table conv: Pythran ``conv_table_int`` + ``conv_int_accumulate``."""
    n, C, H, W = x.shape
    M, K, d = codebooks.shape
    Ct, kh, kw, _ = codes.shape
    OH, OW, Hq, Wq = conv_geometry(H, W, kh, kw, stride, padding)
    cg, ctg = C // groups, Ct // groups
    qmax = _convq.qmax_of(bits, kh * kw * M)
    q = np.empty((M * K, stride * stride * Hq * Wq), np.int8 if bits == 8 else np.int16)
    acc = np.empty(OH * Wq, np.int16 if bits == 8 else np.int32)
    out = np.empty((n, Ct, OH, OW), np.float32)
    for i in range(n):
        for g in range(groups):
            xp = phase_planes(x[i, g * cg:(g + 1) * cg], stride, padding, Hq, Wq).reshape(cg, -1)
            s = _pythran.conv_table_int(xp, codebooks, qmax, scale_mode == "exact", q)
            o = slice(g * ctg, (g + 1) * ctg)
            _pythran.conv_int_accumulate(q, codes[o], bias[o], np.float32(s), stride, OH, OW, Wq, acc, out[i, o])
    return np.maximum(out, 0, out=out) if relu else out


def lrn(x: np.ndarray, size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    """Cross-channel LRN, x (n, C, H, W) f32 -> same shape (see ``_pythran.lrn``)."""
    return _pythran.lrn(x, int(size), float(alpha), float(beta), float(k))
