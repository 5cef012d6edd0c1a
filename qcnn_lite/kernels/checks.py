"""Validation of every array and index before a kernel sees it.

A compiled kernel indexes tables with the codes, so a code out of range would read
out of bounds: these checks run first and raise ValueError naming the argument.
"""
from __future__ import annotations

import numpy as np

__all__ = ["check_array", "check_codes", "check_common", "check_ints"]


def check_array(name: str, a: np.ndarray, ndim: int, kinds: tuple[type, ...]) -> None:
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if a.dtype.type not in kinds:
        allowed = ", ".join(np.dtype(k).name for k in kinds)
        raise ValueError(f"{name} must have dtype {allowed}, got {a.dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")


def check_codes(codes: np.ndarray, K: int) -> None:
    check_array("codes", codes, codes.ndim, (np.uint8, np.uint16))
    if K > np.iinfo(codes.dtype).max + 1:
        raise ValueError(f"codes of dtype {codes.dtype} cannot address K={K} codewords")
    if codes.size and int(codes.max()) >= K:
        raise ValueError(f"codes must be < K={K}, found {int(codes.max())}")


def check_common(x, codebooks, codes, bias, x_ndim: int, codes_ndim: int) -> None:
    check_array("x", x, x_ndim, (np.float32,))
    check_array("codebooks", codebooks, 3, (np.float32,))
    check_array("bias", bias, 1, (np.float32,))
    if not isinstance(codes, np.ndarray) or codes.ndim != codes_ndim:
        raise ValueError(f"codes must be a {codes_ndim}-D numpy array")
    check_codes(codes, codebooks.shape[1])
    if codes.shape[-1] != codebooks.shape[0]:
        raise ValueError(f"codes have {codes.shape[-1]} sub-spaces, codebooks {codebooks.shape[0]}")
    if bias.shape[0] != codes.shape[0]:
        raise ValueError(f"bias has {bias.shape[0]} entries for {codes.shape[0]} outputs")


def check_ints(**values: tuple[object, int]) -> None:
    """Each keyword is (value, lowest allowed): ValueError unless value is an integer >= lowest."""
    for name, (v, lo) in values.items():
        if isinstance(v, bool) or int(v) != v or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
