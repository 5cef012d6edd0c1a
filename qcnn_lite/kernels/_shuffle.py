"""Byte-shuffle fc kernels: 8-bit look-up tables summed with SIMD shuffles.

The float kernel (:func:`qcnn_lite.kernels.linear_lut`) reads one float table
entry per code. Here the table of each input is quantized to 8 bits and the
compiled extension :mod:`qcnn_lite.kernels.simd._lut_simd` reads 32 (AVX2
``vpshufb``), 64 (AVX-512 VBMI ``vpermb``/``vpermi2b``) or 16 (NEON ``tbl``)
entries per instruction, summing them in 16 bits (see ``simd/lut_kernels.h``).

The 8-bit table, for one input (``quantize_tables``): with ``lut`` (M, K) float32,
``mn[m] = min_k lut[m, k]``, one ``scale = max(lut - mn) / 255`` for the whole
table (so that integer sums over sub-spaces stay comparable) and
``q = rint((lut - mn) * (1/scale))`` in [0, 255]. The layer output is
``y[o] = scale * sum_m q[m, codes[o, m]] + sum_m mn[m] + bias[o]``: the offsets
are added back exactly (summed in float64), and each entry is off by at most
scale/2, so an output by at most ``M * scale / 2``.

Layout: ``pack_codes`` re-orders the (out, M) codes once, when the layer is
built, into blocks of outputs sized for an instruction set (32 AVX2, 64
AVX-512, 16 NEON; the scalar path runs any): two 4-bit codes a byte for
K <= 16, one byte for K <= 256. It validates the codes (< K); the kernels are
memory safe whatever the bytes, but only valid codes give the right sums.

``QCNN_LITE_TARGET`` (the target names of :mod:`.cpu`, shared with the Pythran
kernels) forces an instruction set: ``baseline`` (and its aliases ``v1``, ``v2``,
``generic``) -> scalar on x86-64, neon on aarch64 (NEON is part of armv8-a);
``v3`` -> avx2; ``v4`` -> avx512vbmi when the CPU has VBMI (x86-64-v4 does not
include it), else avx2; ``dotprod`` -> neon; ``native``, ``auto`` or unset -> the
best this CPU runs. ISA names work too. The extension checks the CPU itself
(``__builtin_cpu_supports``, which also asks the OS), so it never runs an ISA
the CPU lacks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from . import cpu as _cpu
from ._numpy import linear_tables

try:
    from .simd import _lut_simd
except ImportError:  # built without a C++ compiler
    _lut_simd = None

__all__ = [
    "ISAS", "BLOCK", "PackedCodes", "CodePacker", "available_isas", "default_isa", "pack_codes", "unpack_codes", "quantize_tables",
    "emulate_sums", "emulate_linear", "quantize_compiled", "accumulate", "linear_lut_u8",
]

ISAS = ("scalar", "avx2", "avx512vbmi", "neon")
BLOCK = {"scalar": 32, "avx2": 32, "avx512vbmi": 64, "neon": 16}
_PREFERENCE = ("avx512vbmi", "avx2", "neon", "scalar")
# the targets of cpu.py -> the ISA each may use here (native: the best available, below)
_TARGET_ISA = {"baseline": "scalar", "v3": "avx2", "v4": "avx512vbmi", "dotprod": "neon"}


def available_isas() -> list[str]:
    """Instruction sets this CPU and this build run (empty when the extension is not built)."""
    return list(_lut_simd.isas()) if _lut_simd is not None else []


def default_isa() -> str:
    """The instruction set in use: ``QCNN_LITE_TARGET`` if set, else the best available."""
    have = available_isas()
    if not have:
        raise ImportError("qcnn_lite.kernels.simd._lut_simd is not built (no C++ compiler at install time)")
    want = os.environ.get("QCNN_LITE_TARGET", "").strip().lower()
    if want in ("", "auto"):
        return next(i for i in _PREFERENCE if i in have)
    if want in ISAS:
        isa = want
    else:
        try:
            target = _cpu.canonical(want)
        except ValueError:
            raise ValueError(f"QCNN_LITE_TARGET={want!r}: not a target ({', '.join(_cpu.TARGETS)}) "
                             f"or an ISA ({', '.join(ISAS)})") from None
        if target == "native":
            return next(i for i in _PREFERENCE if i in have)
        isa = _TARGET_ISA[target]
        if target == "baseline" and "neon" in have:
            isa = "neon"  # NEON is part of the aarch64 baseline
        if target == "v4" and isa not in have:
            isa = "avx2"  # x86-64-v4 does not include VBMI (Skylake-X has AVX-512 without it)
    if isa not in have:
        raise ValueError(f"QCNN_LITE_TARGET={want!r} needs {isa}, which this CPU/build lacks (has {', '.join(have)})")
    return isa


@dataclass(frozen=True)
class PackedCodes:
    """Codes of an fc layer in the shuffle layout of one instruction set.

    data uint8 1-D: blocks of ``block`` outputs; per block, K <= 16: Mp/2 rows
    (sub-space pairs, Mp = M rounded up to even) of ``block`` bytes, byte i =
    code[o_i, 2p] | code[o_i, 2p+1] << 4; K > 16: M rows of ``block`` bytes.
    """

    data: np.ndarray
    n_out: int
    n_subspaces: int
    K: int
    isa: str
    block: int

    @property
    def nibble(self) -> bool:
        return self.K <= 16


def pack_codes(codes: np.ndarray, K: int, isa: str | None = None) -> PackedCodes:
    """codes (out, M) uint8/uint16 with values < K (2 <= K <= 256) -> PackedCodes for ``isa``.

    Run once per layer (it copies the codes). Raises ValueError for codes >= K.
    """
    if not isinstance(codes, np.ndarray) or codes.ndim != 2 or codes.dtype.type not in (np.uint8, np.uint16):
        raise ValueError("codes must be a 2-D uint8/uint16 numpy array (out, M)")
    packer = CodePacker(codes.shape[0], codes.shape[1], K, isa)
    packer.add(codes)
    return packer.finish()


class CodePacker:
    """Builds the :class:`PackedCodes` of an fc layer from its code rows, given a slice at a time.

    ``add`` takes the next rows (r, M) in order, any r; ``finish`` returns the packed codes once all
    ``n_out`` rows came. Only the packed array is full-size: a model file can be unpacked a slice at a
    time straight into it, so the unpacked codes (fc6: 9.4 MB) never exist whole.
    """

    def __init__(self, n_out: int, n_subspaces: int, K: int, isa: str | None = None) -> None:
        isa = default_isa() if isa is None else isa
        if isa not in BLOCK:
            raise ValueError(f"unknown instruction set {isa!r}: choose one of {', '.join(ISAS)}")
        if isinstance(K, bool) or int(K) != K or not 1 <= K <= 256:
            raise ValueError(f"K must be an integer in 1..256 for the shuffle kernels, got {K!r}")
        if n_out < 1 or n_subspaces < 1:
            raise ValueError(f"codes must have at least one output and one sub-space, got shape {(n_out, n_subspaces)}")
        self.n_out, self.M, self.K, self.isa, self.B = int(n_out), int(n_subspaces), int(K), isa, BLOCK[isa]
        Mp = self.M + (self.M & 1) if self.K <= 16 else self.M
        P = Mp // 2 if self.K <= 16 else self.M
        # zeros: the outputs past n_out in the last block stay zero (calloc'd pages cost nothing until written)
        self.data = np.zeros((-(-self.n_out // self.B), P, self.B), np.uint8)
        self.blk = np.zeros((self.B, Mp), np.uint8)  # one block's rows; a padding column (odd M) stays zero
        self.filled = 0

    def add(self, rows: np.ndarray) -> None:
        """Pack the next rows (r, M) uint8/uint16, each code < K (ValueError otherwise), block by block."""
        if not isinstance(rows, np.ndarray) or rows.ndim != 2 or rows.dtype.type not in (np.uint8, np.uint16):
            raise ValueError("codes must be a 2-D uint8/uint16 numpy array (out, M)")
        if rows.shape[1] != self.M:
            raise ValueError(f"codes have {rows.shape[1]} sub-spaces, the packer {self.M}")
        if self.filled + len(rows) > self.n_out:
            raise ValueError(f"{self.filled + len(rows)} code rows for {self.n_out} outputs")
        if rows.size and int(rows.max()) >= self.K:
            raise ValueError(f"codes must be < K={self.K}, found {int(rows.max())}")
        i = 0
        while i < len(rows):
            j, off = divmod(self.filled, self.B)
            n = min(self.B - off, len(rows) - i)
            self.blk[:n, : self.M] = rows[i : i + n]
            b = self.blk[:n]
            c = b[:, 0::2] | (b[:, 1::2] << 4) if self.K <= 16 else b  # (n, P)
            self.data[j, :, off : off + n] = c.T
            i += n
            self.filled += n

    def finish(self) -> PackedCodes:
        """The packed codes of all ``n_out`` rows (read-only)."""
        if self.filled != self.n_out:
            raise ValueError(f"{self.filled} code rows packed of {self.n_out}")
        data = self.data.reshape(-1)
        data.flags.writeable = False
        return PackedCodes(data, self.n_out, self.M, self.K, self.isa, self.B)


def unpack_codes(packed: PackedCodes) -> np.ndarray:
    """The codes (out, M) uint8 that :func:`pack_codes` packed, read-only: its exact inverse."""
    data = packed.data.reshape(-1, packed.data.size // (packed.block * -(-packed.n_out // packed.block)), packed.block)
    c = data.transpose(0, 2, 1)  # (nb, B, P)
    if packed.nibble:
        c = np.stack([c & 0xF, c >> 4], axis=-1).reshape(c.shape[0], c.shape[1], -1)
    codes = np.ascontiguousarray(c.reshape(-1, c.shape[2])[: packed.n_out, : packed.n_subspaces])
    codes.flags.writeable = False
    return codes


# -- the numpy emulation: the reference of the integer scheme ---------------------
def quantize_tables(lut: np.ndarray) -> tuple[np.ndarray, float, float]:
    """lut (M, K) float32 -> (q uint8 (M, K), scale, offset_sum), the arithmetic of the kernels.

    Same float32 operations as ``quantize_table`` in ``simd/lut_kernels.h``
    (round half to even), so the extension's ``quantize`` gives the same q.
    """
    lut = np.asarray(lut, np.float32)
    if lut.ndim != 2 or lut.size == 0:
        raise ValueError(f"lut must be a non-empty (M, K) array, got shape {lut.shape}")
    mn = lut.min(axis=1)
    dif = lut - mn[:, None]
    rng = np.float32(dif.max())
    scale = np.float32(rng / np.float32(255)) if rng > 0 else np.float32(1)
    inv = np.float32(1) / scale
    v = np.clip(dif * inv, np.float32(0), np.float32(255))
    q = np.rint(v).astype(np.uint8)
    return q, float(scale), float(mn.astype(np.float64).sum())


def emulate_sums(q: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Exact integer sums: q (M, K) uint8, codes (out, M) -> (out,) int64."""
    M = q.shape[0]
    return q[np.arange(M), codes].sum(axis=1, dtype=np.int64)  # no int64 copy of the gathered entries


def emulate_linear(x: np.ndarray, codebooks: np.ndarray, codes: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The 8-bit layer in numpy: x (n, M*d), codebooks (M, K, d), codes (out, M), bias (out,) -> (n, out) f32.

    Tables from numpy's product (the extension builds its own in C++, whose
    float rounding may move an entry across a rounding boundary).
    """
    M, K, _ = codebooks.shape
    luts = linear_tables(x, codebooks).reshape(x.shape[0], M, K)
    y = np.empty((x.shape[0], codes.shape[0]), np.float32)
    for r, lut in enumerate(luts):
        q, scale, off = quantize_tables(lut)
        isum = emulate_sums(q, codes).astype(np.float32)
        y[r] = np.float32(scale) * isum + (np.float32(off) + bias)
    return y


# -- the compiled kernels ----------------------------------------------------------
def _run_isa(packed: PackedCodes, isa: str | None) -> str:
    if _lut_simd is None:
        raise ImportError("qcnn_lite.kernels.simd._lut_simd is not built (no C++ compiler at install time)")
    if not isinstance(packed, PackedCodes):
        raise ValueError("packed must come from pack_codes()")
    isa = packed.isa if isa is None else isa
    if isa != "scalar" and BLOCK.get(isa) != packed.block:
        raise ValueError(f"codes packed for {packed.isa} (blocks of {packed.block}) cannot run on {isa}")
    return isa


def quantize_compiled(lut: np.ndarray, isa: str | None = None) -> tuple[np.ndarray, float, float]:
    """The extension's table quantization (as used inside ``linear_lut_u8``): same result as ``quantize_tables``."""
    if _lut_simd is None:
        raise ImportError("qcnn_lite.kernels.simd._lut_simd is not built (no C++ compiler at install time)")
    isa = default_isa() if isa is None else isa
    lut = np.ascontiguousarray(lut, np.float32)
    if lut.ndim != 2 or lut.size == 0:
        raise ValueError(f"lut must be a non-empty (M, K) array, got shape {lut.shape}")
    q = np.empty(lut.shape, np.uint8)
    scale, off = _lut_simd.quantize(isa, lut, lut.shape[0], lut.shape[1], q)
    return q, scale, off


def accumulate(q: np.ndarray, packed: PackedCodes, isa: str | None = None) -> np.ndarray:
    """The kernel's integer sums: q uint8 (M, K), packed codes -> (out,) int32 (for tests)."""
    isa = _run_isa(packed, isa)
    q = np.ascontiguousarray(q, np.uint8)
    if q.shape != (packed.n_subspaces, packed.K):
        raise ValueError(f"q must have shape {(packed.n_subspaces, packed.K)}, got {q.shape}")
    out = np.empty(packed.n_out, np.int32)
    _lut_simd.accumulate(isa, q, packed.n_subspaces, packed.K, packed.data, packed.n_out, packed.block, out)
    return out


def linear_lut_u8(
    x: np.ndarray, codebooks: np.ndarray, packed: PackedCodes, bias: np.ndarray, isa: str | None = None
) -> np.ndarray:
    """Quantized fc layer with 8-bit tables: x (n, M*d) f32, codebooks (M, K, d) f32, bias (out,) f32 -> (n, out).

    Per input row the extension builds the float table, quantizes it and sums
    with shuffles; ``isa`` defaults to the one the codes were packed for.
    """
    isa = _run_isa(packed, isa)
    for name, a, nd in (("x", x, 2), ("codebooks", codebooks, 3), ("bias", bias, 1)):
        if not isinstance(a, np.ndarray) or a.ndim != nd or a.dtype != np.float32 or not a.flags.c_contiguous:
            raise ValueError(f"{name} must be a C-contiguous {nd}-D float32 array")
    M, K, d = codebooks.shape
    if (M, K) != (packed.n_subspaces, packed.K):
        raise ValueError(f"codebooks (M={M}, K={K}) do not match the codes (M={packed.n_subspaces}, K={packed.K})")
    if x.shape[1] != M * d:
        raise ValueError(f"x has {x.shape[1]} features, the codebooks cover {M}x{d}={M * d}")
    if bias.shape[0] != packed.n_out:
        raise ValueError(f"bias has {bias.shape[0]} entries for {packed.n_out} outputs")
    y = np.empty((x.shape[0], packed.n_out), np.float32)
    _lut_simd.linear(isa, x, x.shape[0], codebooks, M, K, d, packed.data, packed.n_out, packed.block, bias, y)
    return y
