"""The phase-split input layout shared by the dense convolution paths (BLAS and no-BLAS).

With the input zero-padded and split into its stride*stride phases, and the
output kept at the phase planes' row pitch Wq, one tap (i, j) of one input
channel covers the whole output plane with ONE contiguous run of OH*Wq values
(the columns ow >= OW are scratch, dropped at the end). That turns im2col into
a copy of whole runs, and the direct convolution into a sum of runs.
"""
from __future__ import annotations

import functools

import numpy as np

from ._numpy import conv_output_size

__all__ = ["phase_split", "run_starts"]


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
    xq = np.zeros((C, s, s, Hq, Wq), np.float32)
    # One strided copy per phase, straight from x: padding then transposing a padded copy took
    # 0.35 ms on AlexNet's conv1 input, this 0.1 ms.
    for a in range(s):
        y0 = max(0, -(-(padding - a) // s))  # first phase row holding a real pixel
        r0 = y0 * s + a - padding
        for b in range(s):
            x0 = max(0, -(-(padding - b) // s))
            c0 = x0 * s + b - padding
            if r0 < H and c0 < W:
                src = x[:, r0::s, c0::s]
                xq[:, a, b, y0:y0 + src.shape[1], x0:x0 + src.shape[2]] = src
    return xq.reshape(C, s * s, Hq * Wq), OH, OW, Hq, Wq


@functools.lru_cache(maxsize=256)
def run_starts(cg: int, kh: int, kw: int, stride: int, plane: int, Wq: int) -> np.ndarray:
    """(cg*kh*kw,) int64, read-only: where the run of item (c, i, j) starts in one image's flattened
    phase-split input (``plane`` = Hq*Wq values per phase), in (c, i, j) order -- torch's weight order.

    Cached: it costs ~30 us to compute, as much as a whole 3x3 conv on a 3x3 map of the mini networks.
    """
    s = stride
    c = np.arange(cg)[:, None, None]
    i = np.arange(kh)[None, :, None]
    j = np.arange(kw)[None, None, :]
    out = (c * s * s * plane + ((i % s) * s + j % s) * plane + (i // s) * Wq + j // s).reshape(-1).astype(np.int64)
    out.flags.writeable = False
    return out
