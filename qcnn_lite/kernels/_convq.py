"""Integer look-up tables for convolution: 8-bit tables with 16-bit sums, 16-bit with 32-bit.

The float conv kernel streams a float table from L3 (AlexNet conv2: 3 MB per
group). Quantized to int8 the same table is 0.76 MB and stays in L2, and the
run-adds become 16-bit integer adds, 32 a vector instruction on AVX-512.

The scheme, per image and group (``g``) of a layer with ``n_items = kh*kw*M``
runs per output value:

* ``qmax = min(127, 32767 // n_items)`` for int8 tables (``min(32767,
  (2**31 - 1) // n_items)`` for int16): a sum of ``n_items`` entries with
  ``|q| <= qmax`` cannot overflow the accumulator.
* one scale ``s = bound / qmax``: ``scale_mode="bound"`` takes the
  Cauchy-Schwarz bound ``max_m (max_k ||codeword_mk||) * (max_p ||x_m(p)||)``,
  known before the table exists, so the compiled kernels build and quantize in
  one pass; ``"exact"`` takes ``max |entry|`` (one more pass over the products).
* ``q = clip(rint(t / s), -qmax, qmax)`` -- round half to even -- and the
  output ``y = s * sum(q) + bias`` in float32. An entry is off by at most
  ``s/2``, an output by at most ``n_items * s / 2``.

This module is the numpy emulation (:func:`conv2d_int`): the same float32
operations in the same order as the C++ kernels (products summed left to right
over the sub-vector), plus the wrapper of those kernels (:func:`conv2d_compiled`).
Their generic build multiplies and adds as the emulation does: integer tables,
sums and outputs bit-identical. Their AVX2/AVX-512 builds sum the products with
FMA (``simd/conv_build.h``): the stated tolerance is an entry off by at most one
where t/s lies within float rounding of a half-integer (about 1 entry in 10^5 on
AlexNet's tables; the tests allow 1e-3), the exact scale within float rounding,
an output within a few scales; the integer sums of given tables stay exact. The table layout is the float kernel's (see
:mod:`qcnn_lite.kernels._pythran`): zero-padded input split into stride phases.

Three implementations, one result: this emulation (numpy backend); the C++
kernels of the simd extension (``simd/conv_kernels.h``, ``simd/conv_driver.h``:
generic, AVX2 and AVX-512BW functions picked at run time, ``QCNN_LITE_TARGET``
forces one; tables over 1 MiB run in L2-sized tiles of sub-spaces); and the
portable Pythran kernels ``conv_table_int`` / ``conv_int_accumulate`` where
the extension is not built. ``bench-layers --profile`` (:func:`profile_conv`) shows where each
layer's time goes; the measured figures are in ``docs/conv-kernels.md``.
"""
from __future__ import annotations

import os

import numpy as np

from .geometry import conv_geometry, phase_planes

try:
    from .simd import _lut_simd
except ImportError:  # built without a C++ compiler
    _lut_simd = None

__all__ = ["TABLE_BITS", "SCALE_MODES", "qmax_of", "table_bound", "scale_of", "quantized_table",
           "table_sums", "conv2d_int", "conv_isas", "default_conv_isa", "conv2d_compiled", "compiled_table",
           "compiled_sums", "PHASES", "profile_conv"]

TABLE_BITS = {"int8": 8, "int16": 16}
SCALE_MODES = ("exact", "bound")  # the first is the default everywhere
DEFAULT_SCALE_MODE = SCALE_MODES[0]
_Q = {8: np.int8, 16: np.int16}
_TINY = np.float32(np.finfo(np.float32).tiny)


def qmax_of(bits: int, n_items: int) -> int:
    """Largest |entry| for which a sum of n_items entries fits the accumulator (int16 for 8 bits, else int32)."""
    return min(127, 32767 // n_items) if bits == 8 else min(32767, (2**31 - 1) // n_items)


def _fold_products(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sum_j a[..., j] * b[..., j] summed left to right in float32 (the kernels' order), over the last axis."""
    t = a[..., 0] * b[..., 0]
    for j in range(1, a.shape[-1]):
        t = t + a[..., j] * b[..., j]
    return t


def table_floats(xp: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """The float table the kernels compute: xp (M*d, SP), codebooks (M, K, d) -> (M, K, SP) float32."""
    M, K, d = codebooks.shape
    xs = xp.reshape(M, d, -1)
    t = codebooks[:, :, 0, None] * xs[:, None, 0]
    for j in range(1, d):
        t = t + codebooks[:, :, j, None] * xs[:, None, j]
    return t


def table_bound(xp: np.ndarray, codebooks: np.ndarray) -> np.float32:
    """Cauchy-Schwarz bound on |entry|: max_m max_k ||codebooks[m, k]|| * max_p ||xp[m-th block, p]||."""
    M, K, d = codebooks.shape
    cn = np.sqrt(_fold_products(codebooks, codebooks)).max(axis=1)  # (M,)
    xs = xp.reshape(M, d, -1).transpose(0, 2, 1)  # (M, SP, d)
    xn = np.sqrt(_fold_products(xs, xs).max(axis=1))  # (M,) sqrt of the max, as the kernel
    return np.float32((cn * xn).max())


def scale_of(bound, qmax: int) -> np.float32:
    s = np.float32(np.float32(bound) / np.float32(qmax))
    return s if s >= _TINY else np.float32(1)


def quantized_table(x: np.ndarray, codebooks: np.ndarray, kh: int, kw: int, stride: int, padding: int,
                    bits: int = 8, scale_mode: str = DEFAULT_SCALE_MODE) -> tuple[np.ndarray, np.float32]:
    """One image and group: x (M*d, H, W), codebooks (M, K, d) -> (q (M*K, SP) int8/int16, scale).

    The extension's ``conv_table`` (same float32 operations, round half to even; FMA on AVX2/AVX-512: see above).
    """
    C, H, W = x.shape
    M, K, d = codebooks.shape
    _, _, Hq, Wq = conv_geometry(H, W, kh, kw, stride, padding)
    xp = phase_planes(x, stride, padding, Hq, Wq).reshape(x.shape[0], -1)
    t = table_floats(xp, codebooks)
    bound = np.abs(t).max() if scale_mode == "exact" else table_bound(xp, codebooks)
    qmax = qmax_of(bits, kh * kw * M)
    s = scale_of(bound, qmax)
    inv = np.float32(1) / s
    v = np.clip(np.rint(t * inv), np.float32(-qmax), np.float32(qmax))
    return v.astype(_Q[bits]).reshape(M * K, -1), s


def table_sums(q: np.ndarray, codes: np.ndarray, H: int, W: int, stride: int, padding: int) -> np.ndarray:
    """Integer sums of one group: q (M*K, SP), codes (Ct, kh, kw, M) -> (Ct, OH*Wq) int64, columns >= OW scratch.

    Exact whatever the order; the kernels' accumulators hold the same values (no sum can overflow).
    """
    Ct, kh, kw, M = codes.shape
    K = q.shape[0] // M
    OH, OW, Hq, Wq = conv_geometry(H, W, kh, kw, stride, padding)
    L, P, s = OH * Wq, Hq * Wq, stride
    acc = np.zeros((Ct, L), np.int64)
    for i in range(kh):
        for j in range(kw):
            start = ((i % s) * s + j % s) * P + (i // s) * Wq + j // s
            for m in range(M):
                rows = q[m * K + codes[:, i, j, m].astype(np.intp), start:start + L]  # (Ct, L)
                acc += rows
    return acc


def conv2d_int(x: np.ndarray, codebooks: np.ndarray, codes: np.ndarray, bias: np.ndarray, stride: int, padding: int,
               groups: int, bits: int = 8, scale_mode: str = DEFAULT_SCALE_MODE, relu: bool = False) -> np.ndarray:
    """The integer-table convolution in numpy: the compiled kernels' result (see the module docstring for the tolerance).

    x (n, C, H, W) f32, codebooks (M, K, d), codes (Ct, kh, kw, M), bias (Ct,) -> (n, Ct, OH, OW) f32.
    """
    n, C, H, W = x.shape
    Ct, kh, kw, M = codes.shape
    OH, OW, Hq, Wq = conv_geometry(H, W, kh, kw, stride, padding)
    cg, ctg = C // groups, Ct // groups
    out = np.empty((n, Ct, OH, OW), np.float32)
    for i in range(n):
        for g in range(groups):
            q, s = quantized_table(x[i, g * cg:(g + 1) * cg], codebooks, kh, kw, stride, padding, bits, scale_mode)
            o = slice(g * ctg, (g + 1) * ctg)
            acc = table_sums(q, codes[o], H, W, stride, padding).reshape(ctg, OH, Wq)[:, :, :OW]
            # int16 sums convert exactly; int32 ones round to float32 as the kernel's cvtsi2ss does
            y = s * acc.astype(np.int32).astype(np.float32) + bias[o, None, None]
            out[i, o] = np.maximum(y, np.float32(0)) if relu else y
    return out


# -- the compiled kernels (simd/conv_kernels.h) -------------------------------------
_PREFERENCE = ("avx512bw", "avx2", "generic")
_TARGETS = {"v1": "generic", "v2": "generic", "x86-64": "generic", "x86-64-v2": "generic", "baseline": "generic",
            "scalar": "generic", "neon": "generic", "v3": "avx2", "x86-64-v3": "avx2", "v4": "avx512bw",
            "x86-64-v4": "avx512bw", "avx512vbmi": "avx512bw"}


def conv_isas() -> list[str]:
    """Instruction sets of the integer conv kernels this CPU and build run (empty when not built)."""
    return list(_lut_simd.conv_isas()) if _lut_simd is not None and hasattr(_lut_simd, "conv_isas") else []


def default_conv_isa() -> str:
    """``QCNN_LITE_TARGET`` mapped to a conv ISA (v3 -> avx2, v4 -> avx512bw, baseline -> generic), else the best."""
    have = conv_isas()
    if not have:
        raise ImportError("qcnn_lite.kernels.simd._lut_simd (integer conv kernels) is not built")
    want = os.environ.get("QCNN_LITE_TARGET", "").strip().lower()
    if want in ("", "native", "auto"):
        return next(i for i in _PREFERENCE if i in have)
    isa = _TARGETS.get(want, want)
    if isa not in _PREFERENCE:
        raise ValueError(f"QCNN_LITE_TARGET={want!r}: not a target (baseline, v3, v4, native) or a conv ISA")
    if isa not in have:
        raise ValueError(f"QCNN_LITE_TARGET={want!r} needs {isa}, which this CPU/build lacks (has {', '.join(have)})")
    return isa


def conv2d_compiled(x: np.ndarray, codebooks: np.ndarray, codes: np.ndarray, bias: np.ndarray, stride: int,
                    padding: int, groups: int, bits: int = 8, scale_mode: str = DEFAULT_SCALE_MODE, relu: bool = False,
                    isa: str | None = None, scales: np.ndarray | None = None,
                    tile_bytes: int | None = None, times: np.ndarray | None = None) -> np.ndarray:
    """The extension's integer conv (arguments validated by :func:`qcnn_lite.kernels.conv2d_lut`).

    Same shapes as :func:`conv2d_int`; ``scales`` (n, groups) float32, if given, receives the table scales.
    ``tile_bytes``: tables larger than this (default 1 MiB) run in tiles of sub-spaces (for tests).
    ``times`` float64 (4,), if given, gets the seconds of each phase (:data:`PHASES`) added to it.
    """
    isa = default_conv_isa() if isa is None else isa
    n, C, H, W = x.shape
    M, K, d = codebooks.shape
    Ct, kh, kw, _ = codes.shape
    OH, OW, _, _ = conv_geometry(H, W, kh, kw, stride, padding)
    out = np.empty((n, Ct, OH, OW), np.float32)
    sc = np.empty((n, groups), np.float32) if scales is None else scales
    _lut_simd.conv2d(isa, x, n, groups, C // groups, H, W, codebooks, M, K, d, codes, codes.itemsize, Ct // groups,
                     kh, kw, bias, stride, padding, bits, int(scale_mode == "exact"), int(relu), out, sc,
                     *(() if tile_bytes is None and times is None else (int(tile_bytes or 0),)),
                     *(() if times is None else (times,)))
    return out


PHASES = ("scale", "build", "adds", "epilogue")


def profile_conv(layer, x: np.ndarray, repeat: int = 20, scale_mode: str = DEFAULT_SCALE_MODE) -> dict[str, float]:
    """Where a :class:`~qcnn_lite.nn.layers.QConv2d` call's time goes, in ms (its tables scaled by ``scale_mode``,
    the one the layer uses).

    For a layer on integer tables and the compiled kernels: ``scale`` (phase split and the table
    scale), ``build`` (quantized table rows), ``adds`` (run-adds), ``epilogue`` (s * sum + bias),
    timed inside the kernel (wall clock, one thread; the run of ``repeat`` with the smallest sum,
    the least disturbed on a shared machine); ``call``: the whole ``layer(x)`` (its least thread time);
    ``other``: call minus the phases (Python, validation, allocation). Any other layer (decoded
    weight, float tables, no compiled kernels): ``call`` only.
    """
    import time

    def thread_ms(fn):
        t0 = time.thread_time()
        fn()
        return (time.thread_time() - t0) * 1e3

    layer(x)
    call = float(min(thread_ms(lambda: layer(x)) for _ in range(repeat)))
    res = {"call": call}
    if layer.table_dtype == "float32" or not conv_isas() or not layer.uses_tables(x.shape[2], x.shape[3]):
        return res
    bits = TABLE_BITS[layer.table_dtype]
    args = (np.ascontiguousarray(x, np.float32), layer.codebooks, layer.codes, layer.bias, layer.stride,
            layer.padding, layer.groups, bits, scale_mode)
    runs = []
    for _ in range(repeat):
        t = np.zeros(len(PHASES))
        conv2d_compiled(*args, times=t)
        runs.append(t * 1e3)
    res.update(zip(PHASES, min(runs, key=sum).tolist()))  # the least disturbed run: the phases are wall time
    res["other"] = call - sum(res[k] for k in PHASES)
    return res


def compiled_table(x: np.ndarray, codebooks: np.ndarray, kh: int, kw: int, stride: int, padding: int,
                   bits: int = 8, scale_mode: str = DEFAULT_SCALE_MODE, isa: str | None = None) -> tuple[np.ndarray, float]:
    """The extension's table of one image and group (as :func:`quantized_table`), for tests."""
    isa = default_conv_isa() if isa is None else isa
    C, H, W = x.shape
    M, K, d = codebooks.shape
    _, _, Hq, Wq = conv_geometry(H, W, kh, kw, stride, padding)
    q = np.empty((M * K, stride * stride * Hq * Wq), _Q[bits])
    s = _lut_simd.conv_table(isa, np.ascontiguousarray(x, np.float32), C, H, W, codebooks, M, K, d, kh, kw, stride,
                             padding, bits, int(scale_mode == "exact"), q)
    return q, s


def compiled_sums(q: np.ndarray, codes: np.ndarray, C: int, H: int, W: int, d: int, stride: int, padding: int,
                  bits: int = 8, isa: str | None = None, tile_subspaces: int | None = None) -> np.ndarray:
    """The extension's integer sums from a given table q (M*K, SP): as :func:`table_sums`, int32, for tests."""
    isa = default_conv_isa() if isa is None else isa
    Ct, kh, kw, M = codes.shape
    K = q.shape[0] // M
    OH, _, _, Wq = conv_geometry(H, W, kh, kw, stride, padding)
    out = np.empty((Ct, OH * Wq), np.int32)
    _lut_simd.conv_sums(isa, np.ascontiguousarray(q, _Q[bits]), C, H, W, M, K, d, codes, codes.itemsize, Ct, kh, kw,
                        stride, padding, bits, out, *(() if tile_subspaces is None else (int(tile_subspaces),)))
    return out
