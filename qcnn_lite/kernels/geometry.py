"""Convolution geometry: output sizes and the phase-split input layout that every conv path shares.

With the input zero-padded and split into its stride*stride phases, and the
output kept at the phase planes' row pitch Wq, one tap (i, j) of one input
channel covers the whole output plane with ONE contiguous run of OH*Wq values
(the columns ow >= OW are scratch, dropped at the end). That turns im2col into
a copy of whole runs, and the direct convolution into a sum of runs.
"""
from __future__ import annotations

import functools

import numpy as np

__all__ = ["conv_output_size", "conv_geometry", "phase_planes", "phase_split", "run_starts"]


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


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


def phase_planes(x: np.ndarray, stride: int, padding: int, Hq: int, Wq: int) -> np.ndarray:
    """x (C, H, W) zero-padded and split into its stride*stride phases -> (C, stride*stride, Hq*Wq) float32.

    Phase a*stride + b holds padded pixel (y*stride + a, x*stride + b) at y*Wq + x; every
    other value is 0, so a tap that lands in the padding adds exactly 0.
    """
    C, H, W = x.shape
    s = stride
    xq = np.zeros((C, s, s, Hq, Wq), np.float32)
    # One strided copy per phase, straight from x: cheaper than padding, then transposing a padded copy.
    for a in range(s):
        y0 = max(0, -(-(padding - a) // s))  # first phase row holding a real pixel
        r0 = y0 * s + a - padding
        for b in range(s):
            x0 = max(0, -(-(padding - b) // s))
            c0 = x0 * s + b - padding
            if r0 < H and c0 < W:
                src = x[:, r0::s, c0::s][:, :Hq - y0, :Wq - x0]
                xq[:, a, b, y0:y0 + src.shape[1], x0:x0 + src.shape[2]] = src
    return xq.reshape(C, s * s, Hq * Wq)


def phase_split(x: np.ndarray, kh: int, kw: int, stride: int, padding: int) -> tuple[np.ndarray, int, int, int, int]:
    """x (C, H, W) -> (xq, OH, OW, Hq, Wq): :func:`phase_planes` at the size :func:`conv_geometry` gives.

    Hq and Wq leave room for every run of OH*Wq values a tap reads (one spare row:
    the scratch columns of the last output row read past the last real row).
    """
    OH, OW, Hq, Wq = conv_geometry(x.shape[1], x.shape[2], kh, kw, stride, padding)
    return phase_planes(x, stride, padding, Hq, Wq), OH, OW, Hq, Wq


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
