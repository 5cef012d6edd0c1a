"""Look-up-table kernels behind one dispatch point.

``QCNN_LITE_BACKEND=numpy|pythran|auto`` (default ``auto``) picks the
implementation when this module is imported; :func:`set_backend` changes it at
run time. ``auto`` uses the compiled Pythran kernels when they were built and
the pure-numpy path otherwise.

The Pythran kernels are built for several CPU targets (``baseline``, ``v3``,
``v4`` on x86-64; ``baseline``, ``dotprod`` on aarch64; see ``_cpu``). The best
built target this CPU runs is used, or the one ``QCNN_LITE_TARGET`` names (an
error when it is not built or cannot run here); :func:`set_target` changes it,
:func:`describe` says which one runs and why.

Every array is checked here, before any kernel sees it: a compiled kernel
indexes tables with the codes, so a code out of range would read out of bounds.
"""
from __future__ import annotations

import os
from types import ModuleType

import numpy as np

from . import _numpy, _shuffle, _targets

__all__ = ["CONV_TABLE_DTYPES", "linear_lut", "linear_lut_u8", "pack_linear_codes", "unpack_linear_codes", "conv2d_lut", "lrn", "backend",
           "set_backend", "available_backends", "target", "set_target", "built_targets", "runnable_targets", "describe",
           "direct_available", "conv2d_direct", "linear_direct", "conv_epilogue"]

_BACKENDS = ("numpy", "pythran", "auto")
# Table precisions of conv2d_lut, fastest first.
CONV_TABLE_DTYPES = ("int8", "int16", "float32")


def _load_pythran() -> ModuleType | None:
    """The compiled backend, or None when no ``_pythran_<target>`` extension was built.

    A ValueError (``QCNN_LITE_TARGET`` names a target not built or not runnable here) propagates.
    """
    try:
        from . import _compiled  # numpy tables + the compiled extension of the selected target
    except ImportError:
        return None
    return _compiled


_impl: ModuleType = _numpy
_name = "numpy"


def available_backends() -> list[str]:
    return ["numpy"] + (["pythran"] if _load_pythran() is not None else [])


def set_backend(name: str) -> str:
    """Select ``numpy``, ``pythran`` or ``auto``; returns the backend now in use."""
    global _impl, _name
    if name not in _BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(_BACKENDS)}")
    if name == "numpy":
        _impl, _name = _numpy, "numpy"
        return _name
    mod = _load_pythran()
    if mod is None:
        if name == "pythran":
            raise ImportError(
                "the Pythran kernels are not built: reinstall qcnn-lite with a C++ compiler "
                "and pythran available, or use QCNN_LITE_BACKEND=numpy"
            )
        _impl, _name = _numpy, "numpy"
    else:
        _impl, _name = mod, "pythran"
    return _name


def backend() -> str:
    """Name of the backend in use: ``numpy`` or ``pythran``."""
    return _name


def built_targets() -> list[str]:
    """CPU targets the Pythran kernels were built for (empty when they were not built)."""
    return _targets.built()


def runnable_targets() -> list[str]:
    """Built targets this CPU can run."""
    return _targets.runnable()


def target() -> str | None:
    """The CPU target of the Pythran kernels in use (None when they are not built)."""
    if _load_pythran() is None:
        return None
    return _targets.target()


def set_target(name: str) -> str:
    """Run the Pythran kernels built for ``name`` (baseline|v3|v4|dotprod|native, or ``auto``: the best).

    Returns the target now in use. ValueError when that target is not built or this
    CPU cannot run it; ImportError when no Pythran kernels are built.
    """
    mod = _load_pythran()
    if mod is None:
        raise ImportError("the Pythran kernels are not built: no CPU target to choose")
    mod.use(_targets.select(name))
    return _targets.target()


def describe() -> dict:
    """The backend and CPU target in use and why: CPU model and features seen, every built target.

    Keys: backend, target, reason, requested (QCNN_LITE_TARGET), cpu {arch, model, source,
    features}, built {target: {flags, runnable, missing, path}}, summary (one line).
    """
    target()  # select one if none is yet
    d = {"backend": _name, **_targets.describe()}
    c = d["cpu"]
    d["summary"] = (f"{d['target']}: {d['reason']}" if d["target"] else f"no compiled kernels built ({c['model']})") + \
        f"; features seen: {' '.join(c['features']) or 'none'} ({c['source']})"
    return d


set_backend(os.environ.get("QCNN_LITE_BACKEND", "auto").strip().lower() or "auto")
if os.environ.get(_targets.ENV_TARGET, "").strip():
    _load_pythran()  # a forced target is checked now, whatever the backend: ValueError if it cannot be used


# -- validation ------------------------------------------------------------
def _check_array(name: str, a: np.ndarray, ndim: int, kinds: tuple[type, ...]) -> None:
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if a.dtype.type not in kinds:
        allowed = ", ".join(np.dtype(k).name for k in kinds)
        raise ValueError(f"{name} must have dtype {allowed}, got {a.dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")


def _check_codes(codes: np.ndarray, K: int) -> None:
    _check_array("codes", codes, codes.ndim, (np.uint8, np.uint16))
    if K > np.iinfo(codes.dtype).max + 1:
        raise ValueError(f"codes of dtype {codes.dtype} cannot address K={K} codewords")
    if codes.size and int(codes.max()) >= K:
        raise ValueError(f"codes must be < K={K}, found {int(codes.max())}")


def _check_common(x, codebooks, codes, bias, x_ndim: int, codes_ndim: int) -> None:
    _check_array("x", x, x_ndim, (np.float32,))
    _check_array("codebooks", codebooks, 3, (np.float32,))
    _check_array("bias", bias, 1, (np.float32,))
    if not isinstance(codes, np.ndarray) or codes.ndim != codes_ndim:
        raise ValueError(f"codes must be a {codes_ndim}-D numpy array")
    _check_codes(codes, codebooks.shape[1])
    if codes.shape[-1] != codebooks.shape[0]:
        raise ValueError(f"codes have {codes.shape[-1]} sub-spaces, codebooks {codebooks.shape[0]}")
    if bias.shape[0] != codes.shape[0]:
        raise ValueError(f"bias has {bias.shape[0]} entries for {codes.shape[0]} outputs")


# -- public kernels --------------------------------------------------------
def linear_lut(x: np.ndarray, codebooks: np.ndarray, codes: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Quantized fully-connected layer.

    x (n, M*d) float32, codebooks (M, K, d) float32, codes (out, M) uint8/uint16,
    bias (out,) float32 -> (n, out) float32.
    """
    _check_common(x, codebooks, codes, bias, 2, 2)
    M, K, d = codebooks.shape
    if x.shape[1] != M * d:
        raise ValueError(f"x has {x.shape[1]} features, the codebooks cover {M}x{d}={M * d}")
    return _impl.linear_lut(x, codebooks, codes, bias)


def pack_linear_codes(codes: np.ndarray, K: int):
    """fc codes (out, M) re-ordered once for the byte-shuffle kernels (validated: codes < K <= 256).

    Returns a :class:`~qcnn_lite.kernels._shuffle.PackedCodes`, or None when the
    shuffle extension is not built or the numpy backend is in use (which needs no packing).
    """
    _check_codes(codes, K)
    if _name == "numpy" or not _shuffle.available_isas():
        return None
    return _shuffle.pack_codes(codes, K)


def unpack_linear_codes(packed) -> np.ndarray:
    """The fc codes (out, M) that :func:`pack_linear_codes` packed (read-only)."""
    return _shuffle.unpack_codes(packed)


def linear_lut_u8(x: np.ndarray, codebooks: np.ndarray, codes: np.ndarray, bias: np.ndarray, packed=None) -> np.ndarray:
    """Quantized fc layer with 8-bit tables (one scale, an offset per sub-space; see ``_shuffle``).

    Same arguments as :func:`linear_lut`, plus ``packed`` from :func:`pack_linear_codes`
    for the compiled byte-shuffle kernels. Without it (numpy backend, or no
    extension) the exact numpy emulation of the integer scheme runs.
    """
    if packed is not None and _name != "numpy":
        # the codes were validated when they were packed; the wrapper checks every shape and dtype
        return _shuffle.linear_lut_u8(x, codebooks, packed, bias)
    _check_common(x, codebooks, codes, bias, 2, 2)
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
    scale_mode: str = "exact",
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
    if scale_mode not in ("bound", "exact"):
        raise ValueError(f"scale_mode must be 'bound' or 'exact', got {scale_mode!r}")
    _check_common(x, codebooks, codes, bias, 4, 4)
    M, K, d = codebooks.shape
    n, C, H, W = x.shape
    Ct, kh, kw, _ = codes.shape
    for name, v, lo in (("stride", stride, 1), ("padding", padding, 0), ("groups", groups, 1)):
        if int(v) != v or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    if C != groups * M * d:
        raise ValueError(f"x has {C} channels, expected groups*M*d = {groups}*{M}*{d}")
    if Ct % groups:
        raise ValueError(f"{Ct} output channels are not divisible by groups={groups}")
    if _numpy.conv_output_size(H, kh, stride, padding) < 1 or _numpy.conv_output_size(W, kw, stride, padding) < 1:
        raise ValueError(f"a {kh}x{kw} kernel does not fit a {H}x{W} input with padding {padding}")
    if table_dtype != "float32" and kh * kw * M > 32767:
        raise ValueError(f"integer tables take kh*kw*M <= 32767 (an int16 sum could overflow), got {kh * kw * M}")
    return _impl.conv2d_lut(x, codebooks, codes, bias, int(stride), int(padding), int(groups),
                            table_dtype, scale_mode, bool(relu))


def lrn(x: np.ndarray, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> np.ndarray:
    """Caffe's cross-channel local response normalization (a dense helper of the engine).

    x (n, C, H, W) float32 -> same shape: x / (k + alpha/size * sum of x^2 over
    ``size`` neighbouring channels)^beta. Matches torch.nn.LocalResponseNorm.
    """
    _check_array("x", x, 4, (np.float32,))
    if isinstance(size, bool) or int(size) != size or size < 1:
        raise ValueError(f"size must be an integer >= 1, got {size!r}")
    for name, v in (("alpha", alpha), ("beta", beta), ("k", k)):
        if not np.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v!r}")
    return _impl.lrn(x, int(size), float(alpha), float(beta), float(k))


# -- the dense baseline without BLAS (the paper's condition) -----------------
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
    _check_array("x", x, 4, (np.float32,))
    _check_array("weight", weight, 4, (np.float32,))
    _check_array("bias", bias, 1, (np.float32,))
    for name, v, lo in (("stride", stride, 1), ("padding", padding, 0), ("groups", groups, 1)):
        if isinstance(v, bool) or int(v) != v or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    n, C, H, W = x.shape
    Ct, cg, kh, kw = weight.shape
    if C != groups * cg:
        raise ValueError(f"x has {C} channels, the weight expects groups*{cg} = {groups * cg}")
    if Ct % groups:
        raise ValueError(f"{Ct} output channels are not divisible by groups={groups}")
    if bias.shape[0] != Ct:
        raise ValueError(f"bias has {bias.shape[0]} entries for {Ct} outputs")
    if _numpy.conv_output_size(H, kh, stride, padding) < 1 or _numpy.conv_output_size(W, kw, stride, padding) < 1:
        raise ValueError(f"a {kh}x{kw} kernel does not fit a {H}x{W} input with padding {padding}")
    return _direct_or_raise().conv2d_direct(x, weight.reshape(Ct, -1), bias, kh, kw, int(stride), int(padding),
                                            int(groups))


def linear_direct(x: np.ndarray, wt: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Dense fc layer by compiled loops, no BLAS: x (n, in), wt (in, out) = the weight TRANSPOSED
    (contiguous), bias (out,) -> (n, out) float32."""
    _check_array("x", x, 2, (np.float32,))
    _check_array("wt", wt, 2, (np.float32,))
    _check_array("bias", bias, 1, (np.float32,))
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
    _check_array("acc", acc, 2, (np.float32,))
    _check_array("bias", bias, 1, (np.float32,))
    _check_array("out", out, 3, (np.float32,))
    Ct, OH, OW = out.shape
    for name, v, lo in (("r0", r0, 0), ("Wq", Wq, 1)):
        if isinstance(v, bool) or int(v) != v or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    if OW > Wq or r0 >= OH or acc.shape[0] != Ct or bias.shape[0] != Ct:
        raise ValueError(f"acc {acc.shape} (pitch {Wq}) and bias {bias.shape} do not fit rows {r0}.. of out {out.shape}")
    mod = _load_direct() if _name != "numpy" else None
    if mod is not None:
        mod.conv_epilogue(acc, bias, out, int(r0), int(Wq), bool(relu))
        return
    rows = min(acc.shape[1] // Wq, OH - r0)
    dst = out[:, r0:r0 + rows]
    np.add(acc[:, :rows * Wq].reshape(Ct, rows, Wq)[:, :, :OW], bias[:, None, None], out=dst)
    if relu:
        np.maximum(dst, 0, out=dst)
