"""The look-up-table kernels: quantized fc and conv layers, and the LRN helper of the engine.

Every argument is checked (:mod:`.checks`) before the implementation chosen by
:mod:`.dispatch` runs.
"""
from __future__ import annotations

import numpy as np

from . import _shuffle, dispatch
from ._convq import DEFAULT_SCALE_MODE, SCALE_MODES
from .checks import check_array, check_codes, check_common, check_ints
from .geometry import conv_output_size

__all__ = ["CONV_TABLE_DTYPES", "linear_lut", "linear_lut_u8", "pack_linear_codes", "linear_codes_packer",
           "unpack_linear_codes", "conv2d_lut", "lrn"]

# Table precisions of conv2d_lut, fastest first.
CONV_TABLE_DTYPES = ("int8", "int16", "float32")


def linear_lut(x: np.ndarray, codebooks: np.ndarray, codes: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Quantized fully-connected layer.

    x (n, M*d) float32, codebooks (M, K, d) float32, codes (out, M) uint8/uint16,
    bias (out,) float32 -> (n, out) float32.
    """
    check_common(x, codebooks, codes, bias, 2, 2)
    M, K, d = codebooks.shape
    if x.shape[1] != M * d:
        raise ValueError(f"x has {x.shape[1]} features, the codebooks cover {M}x{d}={M * d}")
    return dispatch.impl().linear_lut(x, codebooks, codes, bias)


def pack_linear_codes(codes: np.ndarray, K: int):
    """fc codes (out, M) re-ordered once for the byte-shuffle kernels (validated: codes < K <= 256).

    Returns a :class:`~qcnn_lite.kernels._shuffle.PackedCodes`, or None when the
    shuffle extension is not built or the numpy backend is in use (which needs no packing).
    """
    check_codes(codes, K)
    if dispatch.backend() == "numpy" or not _shuffle.available_isas():
        return None
    return _shuffle.pack_codes(codes, K)


def linear_codes_packer(n_out: int, n_subspaces: int, K: int):
    """A :class:`~qcnn_lite.kernels._shuffle.CodePacker` that builds what :func:`pack_linear_codes`
    returns for codes (n_out, n_subspaces) from slices of rows (each validated: codes < K <= 256),
    or None where :func:`pack_linear_codes` returns None."""
    if dispatch.backend() == "numpy" or not _shuffle.available_isas():
        return None
    return _shuffle.CodePacker(n_out, n_subspaces, K)


def unpack_linear_codes(packed) -> np.ndarray:
    """The fc codes (out, M) that :func:`pack_linear_codes` packed (read-only)."""
    return _shuffle.unpack_codes(packed)


def linear_lut_u8(x: np.ndarray, codebooks: np.ndarray, codes: np.ndarray, bias: np.ndarray, packed=None) -> np.ndarray:
    """Quantized fc layer with 8-bit tables (one scale, an offset per sub-space; see ``_shuffle``).

    Same arguments as :func:`linear_lut`, plus ``packed`` from :func:`pack_linear_codes`
    for the compiled byte-shuffle kernels. Without it (numpy backend, or no
    extension) the exact numpy emulation of the integer scheme runs.
    """
    if packed is not None and dispatch.backend() != "numpy":
        # the codes were validated when they were packed; the wrapper checks every shape and dtype
        return _shuffle.linear_lut_u8(x, codebooks, packed, bias)
    check_common(x, codebooks, codes, bias, 2, 2)
    M, K, d = codebooks.shape
    if x.shape[1] != M * d:
        raise ValueError(f"x has {x.shape[1]} features, the codebooks cover {M}x{d}={M * d}")
    if K > 256:
        raise ValueError(f"8-bit tables take K <= 256, got K={K}")
    return _shuffle.emulate_linear(x, codebooks, codes, bias)


def conv2d_lut(
    x: np.ndarray,
    codebooks: np.ndarray,
    codes: np.ndarray,
    bias: np.ndarray,
    stride: int = 1,
    padding: int = 0,
    groups: int = 1,
    table_dtype: str = "float32",
    scale_mode: str = DEFAULT_SCALE_MODE,
    relu: bool = False,
) -> np.ndarray:
    """Quantized convolution, the sum of shifted look-up-table planes.

    x (n, C, H, W) float32; codebooks (M, K, d) float32 with C = groups*M*d;
    codes (Ct, kh, kw, M) uint8/uint16; bias (Ct,) float32 -> (n, Ct, OH, OW) float32.
    ``table_dtype``: ``"float32"`` tables, or ``"int8"`` (16-bit sums) / ``"int16"``
    (32-bit sums) tables with one scale per image and group, chosen by ``scale_mode``
    (``"exact"``: max |entry|, the default; ``"bound"``: Cauchy-Schwarz, one pass) -- see
    :mod:`qcnn_lite.kernels._convq`. ``relu`` applies max(y, 0) to the output.
    """
    if table_dtype not in CONV_TABLE_DTYPES:
        raise ValueError(f"table_dtype must be one of {', '.join(CONV_TABLE_DTYPES)}, got {table_dtype!r}")
    if scale_mode not in SCALE_MODES:
        raise ValueError(f"scale_mode must be one of {', '.join(SCALE_MODES)}, got {scale_mode!r}")
    check_common(x, codebooks, codes, bias, 4, 4)
    M, K, d = codebooks.shape
    n, C, H, W = x.shape
    Ct, kh, kw, _ = codes.shape
    check_ints(stride=(stride, 1), padding=(padding, 0), groups=(groups, 1))
    if C != groups * M * d:
        raise ValueError(f"x has {C} channels, expected groups*M*d = {groups}*{M}*{d}")
    if Ct % groups:
        raise ValueError(f"{Ct} output channels are not divisible by groups={groups}")
    if conv_output_size(H, kh, stride, padding) < 1 or conv_output_size(W, kw, stride, padding) < 1:
        raise ValueError(f"a {kh}x{kw} kernel does not fit a {H}x{W} input with padding {padding}")
    if table_dtype != "float32" and kh * kw * M > 32767:
        raise ValueError(f"integer tables take kh*kw*M <= 32767 (an int16 sum could overflow), got {kh * kw * M}")
    return dispatch.impl().conv2d_lut(x, codebooks, codes, bias, int(stride), int(padding), int(groups),
                            table_dtype, scale_mode, bool(relu))


def lrn(x: np.ndarray, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> np.ndarray:
    """Caffe's cross-channel local response normalization (a dense helper of the engine).

    x (n, C, H, W) float32 -> same shape: x / (k + alpha/size * sum of x^2 over
    ``size`` neighbouring channels)^beta. Matches torch.nn.LocalResponseNorm.
    """
    check_array("x", x, 4, (np.float32,))
    if isinstance(size, bool) or int(size) != size or size < 1:
        raise ValueError(f"size must be an integer >= 1, got {size!r}")
    for name, v in (("alpha", alpha), ("beta", beta), ("k", k)):
        if not np.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v!r}")
    return dispatch.impl().lrn(x, int(size), float(alpha), float(beta), float(k))
