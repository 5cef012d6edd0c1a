"""Direct float convolution for few input channels (``simd/direct_conv.h``): the decoded-weight
path of conv layers whose look-up tables cannot pay off (conv1 of AlexNet and CNN-S).

Vectorized over output pixels of the phase-split input, output channels broadcast from a weight
packed once (:func:`pack_weight`), FMA sums in registers: AlexNet's conv1 ran in about the time
of torch fp32 (oneDNN) where im2col + OpenBLAS took 1.6x it (see ``docs/``). Float32 with FMA:
within float tolerance of im2col + BLAS, not bit-identical. Arguments are validated by the
caller (:class:`qcnn_lite.nn.layers.QConv2d`); the extension checks every length again.
"""
from __future__ import annotations

import numpy as np

from ._convq import _lut_simd, conv_isas, default_conv_isa
from .geometry import conv_output_size

__all__ = ["MAX_CHANNELS", "available", "usable", "packed", "pack_weight", "direct_conv2d"]

# Input channels per group up to which a decoded-weight conv runs here rather than im2col + BLAS:
# past a few channels the patch matrix is no longer the cost, and BLAS's blocking wins.
MAX_CHANNELS = 4


def available() -> bool:
    """Whether the compiled direct conv kernels are built (and this CPU runs one of them)."""
    return bool(conv_isas()) and hasattr(_lut_simd, "direct_conv2d")


def usable(channels_per_group: int) -> bool:
    """Whether a decoded-weight conv with this many input channels per group runs here: few channels,
    the compiled backend selected (the numpy backend keeps im2col + BLAS), the kernels built."""
    from . import dispatch

    return channels_per_group <= MAX_CHANNELS and dispatch.backend() != "numpy" and available()


def packed(key, w: np.ndarray, groups: int) -> tuple[tuple, np.ndarray]:
    """((key, isa), :func:`pack_weight` of w for the current ISA): a layer's cache entry."""
    isa = default_conv_isa()
    return (key, isa), pack_weight(w, groups, isa)


def pack_weight(w: np.ndarray, groups: int, isa: str | None = None) -> np.ndarray:
    """w (out, C, kh, kw) float32 -> (groups, ceil(Ct/B), C*kh*kw, B): per group and block of B output
    channels (B = the kernel's block for ``isa``), the block's weights item by item, (c, i, j) order,
    zero past the last channel."""
    isa = default_conv_isa() if isa is None else isa
    B = int(_lut_simd.direct_block(isa))
    out, C, kh, kw = w.shape
    ct = out // groups
    nb = -(-ct // B)
    wp = np.zeros((groups, nb * B, C * kh * kw), np.float32)
    wp[:, :ct] = w.reshape(groups, ct, C * kh * kw)
    return np.ascontiguousarray(wp.reshape(groups, nb, B, -1).transpose(0, 1, 3, 2))


def direct_conv2d(x: np.ndarray, wp: np.ndarray, bias: np.ndarray, out_channels: int, kh: int, kw: int, stride: int,
                  padding: int, groups: int, relu: bool = False, isa: str | None = None) -> np.ndarray:
    """x (n, C, H, W) float32, wp from :func:`pack_weight` with the same ``isa`` -> (n, out, OH, OW)."""
    isa = default_conv_isa() if isa is None else isa
    n, C, H, W = x.shape
    out = np.empty((n, out_channels, conv_output_size(H, kh, stride, padding),
                    conv_output_size(W, kw, stride, padding)), np.float32)
    _lut_simd.direct_conv2d(isa, np.ascontiguousarray(x, np.float32), n, groups, C // groups, H, W, wp,
                            out_channels // groups, kh, kw, bias, stride, padding, int(bool(relu)), out)
    return out
