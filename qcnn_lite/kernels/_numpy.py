"""Pure-numpy look-up-table kernels: the reference path and the fallback where nothing compiles.

Arguments are validated by :mod:`qcnn_lite.kernels`; these functions trust them.
"""
from __future__ import annotations

import numpy as np

from . import _convq
from .geometry import conv_output_size


def linear_tables(x: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """LUT[n, m*K + k] = <x[n, m-th block], codebooks[m, k]>: x (n, M*d), codebooks (M, K, d) -> (n, M*K).

    M*K inner products per input, rebuilt for every input; shared by both backends.
    """
    M, K, d = codebooks.shape
    n = x.shape[0]
    return np.matmul(x.reshape(n, M, 1, d), codebooks.transpose(0, 2, 1)[None]).reshape(n, M * K)


def linear_lut(x: np.ndarray, codebooks: np.ndarray, codes: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """y[n, o] = bias[o] + sum_m <x[n, m-th block], codebooks[m, codes[o, m]]>.

    x (n, M*d) f32, codebooks (M, K, d) f32, codes (out, M) uint, bias (out,) f32 -> (n, out) f32.
    """
    M, K, d = codebooks.shape
    lut = linear_tables(x, codebooks)
    flat = codes.astype(np.intp) + (np.arange(M, dtype=np.intp) * K)[None, :]  # (out, M)
    return lut[:, flat].sum(-1, dtype=np.float32) + bias


def conv_lut_tables(x: np.ndarray, codebooks: np.ndarray, groups: int) -> np.ndarray:
    """The conv look-up table over the unpadded input map.

    x (n, C, H, W), codebooks (M, K, d) with C = groups*M*d -> (n, groups, M*K, H, W) f32.
    """
    n, C, H, W = x.shape
    M, K, d = codebooks.shape
    xs = x.reshape(n, groups, M, d, H * W)
    lut = np.matmul(codebooks[None, None], xs)  # (n, g, M, K, H*W)
    return lut.reshape(n, groups, M * K, H, W)


def conv2d_lut(x: np.ndarray, codebooks: np.ndarray, codes: np.ndarray, bias: np.ndarray, stride: int, padding: int,
               groups: int, table_dtype: str = "float32", scale_mode: str = _convq.DEFAULT_SCALE_MODE,
               relu: bool = False) -> np.ndarray:
    """Look-up-table convolution (``table_dtype`` int8/int16: the exact emulation in :mod:`._convq`).

    x (n, C, H, W) f32; codebooks (M, K, d) f32 shared by all taps and groups,
    C = groups * M * d; codes (Ct, kh, kw, M) uint; bias (Ct,) -> (n, Ct, OH, OW) f32.
    Taps that fall into the zero padding are skipped: they would add <0, codeword> = 0.
    """
    if table_dtype != "float32":
        bits = _convq.TABLE_BITS[table_dtype]
        return _convq.conv2d_int(x, codebooks, codes, bias, stride, padding, groups, bits, scale_mode, relu)
    n, C, H, W = x.shape
    M, K, d = codebooks.shape
    Ct, kh, kw, _ = codes.shape
    OH = conv_output_size(H, kh, stride, padding)
    OW = conv_output_size(W, kw, stride, padding)
    ctg = Ct // groups
    lut = conv_lut_tables(x, codebooks, groups)
    out = np.empty((n, Ct, OH, OW), dtype=np.float32)
    out[...] = bias[None, :, None, None]
    flat = codes.astype(np.intp) + (np.arange(M, dtype=np.intp) * K)  # (Ct, kh, kw, M)
    for i in range(kh):
        oh0, oh1 = _tap_range(H, OH, i, stride, padding)
        if oh0 == oh1:
            continue
        rows = slice(oh0 * stride + i - padding, (oh1 - 1) * stride + i - padding + 1, stride)
        for j in range(kw):
            ow0, ow1 = _tap_range(W, OW, j, stride, padding)
            if ow0 == ow1:
                continue
            cols = slice(ow0 * stride + j - padding, (ow1 - 1) * stride + j - padding + 1, stride)
            for g in range(groups):
                plane = lut[:, g, :, rows, cols]  # (n, M*K, oh, ow): the shifted table planes
                sel = plane[:, flat[g * ctg : (g + 1) * ctg, i, j]]  # (n, ctg, M, oh, ow)
                out[:, g * ctg : (g + 1) * ctg, oh0:oh1, ow0:ow1] += sel.sum(2)
    return np.maximum(out, 0, out=out) if relu else out


def lrn(x: np.ndarray, size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    """Caffe's cross-channel LRN: x / (k + alpha/size * sum of x^2 over `size` channels)^beta.

    x (n, C, H, W) f32 -> same shape; matches torch.nn.LocalResponseNorm.
    """
    n, C, H, W = x.shape
    sq = np.square(x, dtype=np.float32)
    pad = np.zeros((n, C + size - 1, H, W), dtype=np.float32)
    pad[:, size // 2 : size // 2 + C] = sq
    csum = np.cumsum(pad, axis=1, dtype=np.float32)
    csum = np.concatenate([np.zeros((n, 1, H, W), np.float32), csum], 1)
    win = csum[:, size:] - csum[:, :-size]  # sum over the window of each channel
    return (x / np.power(k + (alpha / size) * win, beta)).astype(np.float32)


def _tap_range(size_in: int, size_out: int, tap: int, stride: int, padding: int) -> tuple[int, int]:
    """Output positions o in [lo, hi) whose input position o*stride + tap - padding is inside the map."""
    lo = max(0, -((tap - padding) // stride))  # ceil((padding - tap) / stride)
    hi = min(size_out, (size_in - 1 + padding - tap) // stride + 1)
    return lo, max(lo, hi)
