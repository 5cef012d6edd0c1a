"""The dense baseline without BLAS (the paper's condition): direct convolution and fc by compiled loops.

The loops are compiled per CPU target like the look-up-table kernels (``_noblas_kernels``);
:func:`direct_available` says whether they were built.
"""
from __future__ import annotations

from types import ModuleType

import numpy as np

from . import dispatch
from .checks import check_array, check_ints
from .geometry import conv_output_size

__all__ = ["direct_available", "conv2d_direct", "linear_direct", "conv_epilogue"]


def _load_direct() -> ModuleType | None:
    try:
        from . import _direct  # the compiled extension _noblas_kernels
    except ImportError:
        return None
    return _direct


def direct_available() -> bool:
    """Whether the compiled no-BLAS dense kernels (``_noblas_kernels``) were built."""
    return _load_direct() is not None


def _direct_or_raise() -> ModuleType:
    mod = _load_direct()
    if mod is None:
        raise ImportError("the no-BLAS dense kernels (_noblas_kernels) are not built: reinstall qcnn-lite "
                          "with a C++ compiler and pythran available")
    return mod


def conv2d_direct(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int = 1, padding: int = 0,
                  groups: int = 1) -> np.ndarray:
    """Dense convolution by compiled loops, no BLAS (the paper's baseline).

    x (n, C, H, W) float32, weight (Ct, C/groups, kh, kw) float32, bias (Ct,) float32
    -> (n, Ct, OH, OW) float32, as torch's conv2d.
    """
    check_array("x", x, 4, (np.float32,))
    check_array("weight", weight, 4, (np.float32,))
    check_array("bias", bias, 1, (np.float32,))
    check_ints(stride=(stride, 1), padding=(padding, 0), groups=(groups, 1))
    n, C, H, W = x.shape
    Ct, cg, kh, kw = weight.shape
    if C != groups * cg:
        raise ValueError(f"x has {C} channels, the weight expects groups*{cg} = {groups * cg}")
    if Ct % groups:
        raise ValueError(f"{Ct} output channels are not divisible by groups={groups}")
    if bias.shape[0] != Ct:
        raise ValueError(f"bias has {bias.shape[0]} entries for {Ct} outputs")
    if conv_output_size(H, kh, stride, padding) < 1 or conv_output_size(W, kw, stride, padding) < 1:
        raise ValueError(f"a {kh}x{kw} kernel does not fit a {H}x{W} input with padding {padding}")
    return _direct_or_raise().conv2d_direct(x, weight.reshape(Ct, -1), bias, kh, kw, int(stride), int(padding),
                                            int(groups))


def linear_direct(x: np.ndarray, wt: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Dense fc layer by compiled loops, no BLAS: x (n, in), wt (in, out) = the weight TRANSPOSED
    (contiguous), bias (out,) -> (n, out) float32."""
    check_array("x", x, 2, (np.float32,))
    check_array("wt", wt, 2, (np.float32,))
    check_array("bias", bias, 1, (np.float32,))
    if x.shape[1] != wt.shape[0]:
        raise ValueError(f"x has {x.shape[1]} features, the weight takes {wt.shape[0]}")
    if bias.shape[0] != wt.shape[1]:
        raise ValueError(f"bias has {bias.shape[0]} entries for {wt.shape[1]} outputs")
    return _direct_or_raise().linear_direct(x, wt, bias)


def conv_epilogue(acc: np.ndarray, bias: np.ndarray, out: np.ndarray, r0: int, Wq: int, relu: bool = False) -> None:
    """The end of a dense conv in the run layout, IN PLACE: acc (Ct, rows*Wq) float32 holds output
    rows r0 .. r0+rows-1 at row pitch Wq; they are written to out (Ct, OH, OW) float32 as acc's first
    OW columns of each row + bias (Ct,), ReLU'd if ``relu`` (rows past OH are ignored).

    Compiled (one pass) unless the numpy backend is selected or ``_noblas_kernels`` is not built.
    """
    check_array("acc", acc, 2, (np.float32,))
    check_array("bias", bias, 1, (np.float32,))
    check_array("out", out, 3, (np.float32,))
    Ct, OH, OW = out.shape
    check_ints(r0=(r0, 0), Wq=(Wq, 1))
    if OW > Wq or r0 >= OH or acc.shape[0] != Ct or bias.shape[0] != Ct:
        raise ValueError(f"acc {acc.shape} (pitch {Wq}) and bias {bias.shape} do not fit rows {r0}.. of out {out.shape}")
    mod = _load_direct() if dispatch.backend() != "numpy" else None
    if mod is not None:
        mod.conv_epilogue(acc, bias, out, int(r0), int(Wq), bool(relu))
        return
    rows = min(acc.shape[1] // Wq, OH - r0)
    dst = out[:, r0:r0 + rows]
    np.add(acc[:, :rows * Wq].reshape(Ct, rows, Wq)[:, :, :OW], bias[:, None, None], out=dst)
    if relu:
        np.maximum(dst, 0, out=dst)
