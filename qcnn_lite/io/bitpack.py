"""Codes as a bit stream: K codewords take ceil(log2 K) bits each in the model file, MSB first."""
from __future__ import annotations

import numpy as np

__all__ = ["pack_codes", "unpack_codes"]

_CHUNK = 1 << 14  # codes packed/unpacked per step (a multiple of 8 keeps chunks byte-aligned; small temporaries)


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Codes (any shape, < 2**bits) -> MSB-first bit stream, C order, last byte zero-padded."""
    flat = np.ascontiguousarray(codes).reshape(-1).astype(">u2")
    out = []
    for i in range(0, flat.size, _CHUNK):
        b = np.unpackbits(flat[i : i + _CHUNK].view(np.uint8).reshape(-1, 2), axis=1)  # (n, 16), MSB first
        out.append(np.packbits(b[:, 16 - bits :].reshape(-1)).tobytes())
    return b"".join(out)


def unpack_codes(buf: memoryview | bytes, bits: int, out: np.ndarray) -> None:
    """Inverse of :func:`pack_codes`: the first ``len(out)`` codes of ``bits`` bits in buf -> out.

    A code of at most 16 bits starting anywhere in a byte lies within 3 bytes, so
    each one is cut out of a 24-bit big-endian window. Works chunk by chunk, so the
    temporaries stay small next to the codes (peak memory matters on a phone).
    """
    src = np.frombuffer(buf, dtype=np.uint8)
    n = len(out)
    mask = np.uint32((1 << bits) - 1)
    for i in range(0, n, _CHUNK):
        j = min(n, i + _CHUNK)
        b0, b1 = (i * bits) >> 3, min(len(src), ((j * bits) >> 3) + 3)
        raw = np.zeros(b1 - b0 + 2, dtype=np.uint32)  # two zero bytes so every window is in bounds
        raw[: b1 - b0] = src[b0:b1]
        pos = np.arange(i, j, dtype=np.int64) * bits  # bit offset of each code
        idx = (pos >> 3) - b0
        window = (raw[idx] << 16) | (raw[idx + 1] << 8) | raw[idx + 2]
        out[i:j] = (window >> (24 - bits - (pos & 7)).astype(np.uint32)) & mask
