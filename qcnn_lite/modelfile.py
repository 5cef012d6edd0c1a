"""The qcnn-lite model file: one pickle-free, checksummed file per network.

Layout (all integers little-endian)::

    offset 0   8 bytes   magic b"QCNNLITE"
           8   uint32    format version (1)
          12   uint32    header length H (JSON + space padding; 16 + H is a multiple of 64)
          16   H bytes   UTF-8 JSON manifest, sorted keys, padded with spaces
      16 + H   payload   the arrays, each at a 64-byte aligned offset, zero padding between
         end   32 bytes  SHA-256 of every byte before it

The manifest holds the network (name, input_shape, spec, meta), one entry per
conv/fc layer (class, stride/padding/groups) and one per array (layer, role,
dtype, shape, bits, offset, nbytes; offsets count from the payload start).
Floats are raw float32; codes are bit-packed at ``max(1, ceil(log2 K))`` bits,
MSB-first in one continuous stream, with zero bits padding the last byte.

:func:`load` checks everything (magic, version, checksum, every manifest
field, layout, shapes against the spec, codes < K, finite floats) before it
builds a layer, and reports any problem as :class:`ModelFormatError`. It streams
the file rather than reading it whole, so loading needs little memory beyond the
decoded arrays (see :func:`_validate`).
"""
from __future__ import annotations

import json
import math
import os
import stat
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from .engine import LAYER_TYPES, PARAM_TYPES, Network, output_shapes
from .layers import Conv2d, Linear, QConv2d, QLinear
from .pq import code_dtype

if TYPE_CHECKING:
    import argparse

try:  # CPython's builtin SHA-256: hashlib would load OpenSSL's libcrypto (~3.5 MiB resident) just for this
    from _sha2 import sha256 as _sha256  # Python 3.12+
except ImportError:
    try:
        from _sha256 import sha256 as _sha256  # Python 3.11
    except ImportError:  # a build without it
        from hashlib import sha256 as _sha256

__all__ = ["ModelFormatError", "save", "load", "read_manifest", "describe", "add_parser", "FORMAT_VERSION", "MAGIC", "code_bits"]

MAGIC = b"QCNNLITE"
FORMAT_VERSION = 1
ALIGN = 64  # payload and array alignment, so arrays could be memory-mapped
_PREAMBLE = struct.Struct("<8sII")  # magic, format version, header length
_DIGEST = 32  # SHA-256 trailer
_MAX_HEADER = 64 << 20  # a manifest is a few kB; refuse absurd lengths before decoding
_MAX_DIM = 1 << 31  # any single dimension or spec integer
_CHUNK = 1 << 14  # codes packed/unpacked per step (a multiple of 8 keeps chunks byte-aligned; small temporaries)
_IO_CHUNK = 1 << 20  # bytes per read when hashing, skipping or unpacking codes: bounds the memory of a load
_CHANGED = "the file changed while it was being read"

_CLASSES = {"Linear": Linear, "Conv2d": Conv2d, "QLinear": QLinear, "QConv2d": QConv2d}
_KIND = {"Linear": "fc", "QLinear": "fc", "Conv2d": "conv", "QConv2d": "conv"}
_ROLES = {
    "Linear": ("weight", "bias"),
    "Conv2d": ("weight", "bias"),
    "QLinear": ("codebooks", "codes", "bias"),
    "QConv2d": ("codebooks", "codes", "bias"),
}


class ModelFormatError(ValueError):
    """A file that is not a valid qcnn-lite model: wrong type, corrupt, truncated or inconsistent."""


def code_bits(n_codewords: int) -> int:
    """Bits per stored code: ``ceil(log2 K)``, and 1 for K = 1 so every code takes space."""
    return max(1, (int(n_codewords) - 1).bit_length())


# --------------------------------------------------------------------------- bit packing
def _pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Codes (any shape, < 2**bits) -> MSB-first bit stream, C order, last byte zero-padded."""
    flat = np.ascontiguousarray(codes).reshape(-1).astype(">u2")
    out = []
    for i in range(0, flat.size, _CHUNK):
        b = np.unpackbits(flat[i : i + _CHUNK].view(np.uint8).reshape(-1, 2), axis=1)  # (n, 16), MSB first
        out.append(np.packbits(b[:, 16 - bits :].reshape(-1)).tobytes())
    return b"".join(out)


def _unpack_codes(buf: memoryview | bytes, bits: int, out: np.ndarray) -> None:
    """Inverse of :func:`_pack_codes`: the first ``len(out)`` codes of ``bits`` bits in buf -> out.

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


# --------------------------------------------------------------------------- layer <-> arrays
def _layer_entry(name: str, layer: Any) -> tuple[dict, list[tuple[str, np.ndarray | bytes, dict]]]:
    """Manifest entry and (role, data, array-entry) list of one parameter layer."""
    cls = type(layer).__name__
    if type(layer) not in (Linear, Conv2d, QLinear, QConv2d):
        raise ValueError(f"layer {name!r}: cannot save a {cls}; expected Linear, Conv2d, QLinear or QConv2d")
    entry: dict[str, Any] = {"name": name, "class": cls}
    if _KIND[cls] == "conv":
        entry.update(stride=int(layer.stride), padding=int(layer.padding), groups=int(layer.groups))
    arrays = []
    for role in _ROLES[cls]:
        a = np.asarray(getattr(layer, role))
        if role == "codes":
            K = layer.codebooks.shape[1]
            bits = code_bits(K)
            if a.size and (int(a.min()) < 0 or int(a.max()) >= K):
                raise ValueError(f"layer {name!r}: codes must lie in [0, {K})")
            data: np.ndarray | bytes = _pack_codes(a, bits)
            dtype = code_dtype(K).name
        else:
            if not np.isfinite(a).all():
                raise ValueError(f"layer {name!r}: {role} contains NaN or Inf")
            data = np.ascontiguousarray(a, dtype="<f4")
            bits, dtype = 32, "float32"
        arrays.append((role, data, {"layer": name, "role": role, "dtype": dtype, "shape": list(a.shape), "bits": bits}))
    return entry, arrays


def _expected_shapes(L: dict, in_shape: tuple[int, ...], entry: dict, shapes: dict[str, list[int]]) -> dict[str, list[int]]:
    """The array shapes a layer must have given its spec and input; raises ValueError on mismatch of settings."""
    cls, name, out = entry["class"], L["name"], L["out"]
    if L["type"] == "conv":
        for key, default in (("stride", 1), ("padding", 0), ("groups", 1)):
            if entry[key] != L.get(key, default):
                raise ValueError(f"layer {name!r}: {key}={entry[key]} but the spec says {L.get(key, default)}")
        g, k = L.get("groups", 1), L["kernel"]
        cin = in_shape[0]
        if cin % g or out % g:
            raise ValueError(f"layer {name!r}: groups={g} does not divide {cin} input and {out} output channels")
        if cls == "Conv2d":
            return {"weight": [out, cin // g, k, k], "bias": [out]}
        M, K, d = _book_shape(shapes, name)
        if M * d * g != cin:
            raise ValueError(f"layer {name!r}: codebooks (M={M}, d={d}) x groups={g} do not cover {cin} input channels")
        return {"codebooks": [M, K, d], "codes": [out, k, k, M], "bias": [out]}
    n_in = math.prod(in_shape)
    if cls == "Linear":
        return {"weight": [out, n_in], "bias": [out]}
    M, K, d = _book_shape(shapes, name)
    if M * d != n_in:
        raise ValueError(f"layer {name!r}: codebooks (M={M}, d={d}) do not cover {n_in} input features")
    return {"codebooks": [M, K, d], "codes": [out, M], "bias": [out]}


def _book_shape(shapes: dict[str, list[int]], name: str) -> tuple[int, int, int]:
    s = shapes.get("codebooks")
    if not isinstance(s, list) or len(s) != 3 or min(s) < 1:
        raise ValueError(f"layer {name!r}: codebooks must have shape (M, K, d) with positive sizes, got {s}")
    if s[1] > 65536:
        raise ValueError(f"layer {name!r}: K={s[1]} codewords is above the 65536 that uint16 codes hold")
    return s[0], s[1], s[2]


# --------------------------------------------------------------------------- JSON
def _check_json(obj: Any, where: str) -> None:
    """Raise ValueError unless obj is plain JSON data (tuples allowed: they come back as lists)."""
    if obj is None or isinstance(obj, (str, bool, int)):
        return
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"{where} is {obj}: JSON has no NaN or Inf")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_json(v, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ValueError(f"{where} has a non-string key {k!r}: JSON keys are strings")
            _check_json(v, f"{where}[{k!r}]")
        return
    raise ValueError(f"{where} is a {type(obj).__name__}, which JSON cannot hold exactly; use int/float/str/list/dict")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


# --------------------------------------------------------------------------- save
def save(net: Network, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``net`` to one model file at ``path``; returns the path.

    Refuses to replace an existing file unless ``overwrite=True`` (FileExistsError).
    The file is written to a temporary file in the same directory and moved into
    place, so a crash never leaves a half-written model behind. The same network
    always gives the same bytes. Raises ValueError if the network cannot be
    stored exactly (non-JSON meta, NaN weights, params that do not fit the spec).
    """
    if not isinstance(net, Network):
        raise ValueError(f"save() takes a Network, got {type(net).__name__}")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give a file name such as {path / (net.name + '.qcnn')}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    header, arrays = _manifest(net)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            _write(f, header, arrays)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _create_exclusive(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _create_temp(path: Path) -> tuple[int, str]:
    """A new file beside path; mode 0666 minus the umask, as a plain open() would give (mkstemp gives 0600)."""
    import secrets  # here, not at the top: only save needs it, and importing it loads OpenSSL (via hmac)

    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


def _create_exclusive(tmp: str, path: Path) -> None:
    """Move tmp to path only if path does not exist (a hard link is atomic and never replaces)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it") from None
    except OSError:  # filesystems without hard links: check, then replace
        if path.exists():
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def _manifest(net: Network) -> tuple[bytes, list[np.ndarray | bytes]]:
    """The padded header bytes and the payload arrays, in file order."""
    _check_json(net.name, "network name")
    _check_json(net.spec, "spec")
    _check_json(net.meta, "meta")
    if not isinstance(net.meta, dict):
        raise ValueError(f"meta must be a dict, got {type(net.meta).__name__}")
    spec_names = [L["name"] for _, L in net.param_layers()]
    extra = sorted(set(net.params) - set(spec_names))
    if extra:
        raise ValueError(f"params has layers the spec does not mention: {', '.join(extra)}")
    missing = [n for n in spec_names if n not in net.params]
    if missing:
        raise ValueError(f"network {net.name!r} has no parameters for {', '.join(missing)}; nothing to save for them")
    dims = net.input_dims()
    layers, entries, data = [], [], []
    offset = 0
    for _, L in net.param_layers():
        entry, arrays = _layer_entry(L["name"], net.params[L["name"]])
        if _KIND[entry["class"]] != L["type"]:
            raise ValueError(f"layer {L['name']!r} is {L['type']} in the spec but holds a {entry['class']}")
        want = _expected_shapes(L, dims[L["name"]], entry, {r: e["shape"] for r, _, e in arrays})
        for role, a, e in arrays:
            if e["shape"] != want[role]:
                raise ValueError(f"layer {L['name']!r}: {role} has shape {tuple(e['shape'])}, the spec needs {tuple(want[role])}")
            nbytes = len(a) if isinstance(a, bytes) else a.nbytes
            e.update(offset=offset, nbytes=nbytes)
            offset += -(-nbytes // ALIGN) * ALIGN
            entries.append(e)
            data.append(a)
        layers.append(entry)
    manifest = {
        "format": "qcnn-lite model",
        "format_version": FORMAT_VERSION,
        "network": {"name": net.name, "input_shape": list(net.input_shape), "spec": net.spec, "meta": net.meta},
        "layers": layers,
        "arrays": entries,
        "payload_nbytes": offset,
    }
    text = _dumps(manifest)
    try:  # whatever save writes, load must accept: e.g. a spec stride of 1.0 would not load
        _check_manifest(json.loads(text), _Fail(f"cannot save network {net.name!r}"))
    except ModelFormatError as e:
        raise ValueError(str(e)) from None
    pad = -(_PREAMBLE.size + len(text)) % ALIGN
    return text + b" " * pad, data


def _write(f: BinaryIO, header: bytes, arrays: list[np.ndarray | bytes]) -> None:
    h = _sha256()

    def put(b: bytes | memoryview) -> None:
        h.update(b)
        f.write(b)

    put(_PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(header)))
    put(header)
    for a in arrays:
        b = a if isinstance(a, bytes) else memoryview(a).cast("B")
        put(b)
        put(b"\0" * (-len(b) % ALIGN))
    f.write(h.digest())


# --------------------------------------------------------------------------- load
def load(path: str | os.PathLike) -> Network:
    """Read a model file written by :func:`save`.

    Every field is checked before any layer is built; a file that is not a
    qcnn-lite model, or is corrupt, truncated or inconsistent, raises
    :class:`ModelFormatError` naming the file and the problem.
    FileNotFoundError is raised as usual for a missing file.
    """
    man, arrays = _read(path)
    return _guarded(lambda: _build(man, arrays, str(path)), str(path))


def read_manifest(path: str | os.PathLike) -> dict:
    """The JSON manifest of a model file (network, layers, arrays), after the same checks as :func:`load`."""
    return _read(path)[0]


def _read(path: str | os.PathLike) -> tuple[dict, dict[tuple[str, str], np.ndarray]]:
    """The validated manifest and decoded arrays of a model file."""
    path = Path(path)
    if path.is_dir():
        raise ModelFormatError(f"{path}: is a directory, not a model file")
    try:
        # Unbuffered: pass 2 must read the file again, not bytes pass 1 left in a buffer; our
        # reads are either large or a handful of tiny ones, so a buffer would only add a copy.
        f = open(path, "rb", buffering=0)
    except IsADirectoryError:
        raise ModelFormatError(f"{path}: is a directory, not a model file") from None
    with f:
        return _guarded(lambda: _validate(f, str(path)), str(path))


def _guarded(fn, where: str):
    """Run a parsing step; any unexpected exception becomes a ModelFormatError (the cause stays chained)."""
    try:
        return fn()
    except (ModelFormatError, OSError):  # an I/O error is no verdict on the file's contents
        raise
    except Exception as e:  # a malformed file must never escape as IndexError, KeyError, ...
        raise ModelFormatError(f"{where}: not a valid qcnn-lite model ({type(e).__name__}: {e})") from e


class _Fail:
    """Raises ModelFormatError prefixed with the file name."""

    def __init__(self, where: str):
        self.where = where

    def __call__(self, msg: str) -> ModelFormatError:
        return ModelFormatError(f"{self.where}: {msg}")


class _Reader:
    """Reads an open model file front to back, hashing every byte it hands out.

    ``size`` is what os.fstat said before reading, and every check is made against it, so a
    read that comes up short can only mean the file shrank meanwhile: that is reported as a
    truncated file, never as an EOFError or a numpy error further on.
    """

    def __init__(self, f: BinaryIO, size: int, fail: _Fail) -> None:
        self.f, self.size, self.fail = f, size, fail
        self.sha = _sha256()
        self.pos = 0  # bytes read and hashed so far
        self.truncated = False

    def read(self, n: int) -> bytearray:
        """The next n bytes, in a buffer of their own."""
        buf = bytearray(n)
        self.readinto(memoryview(buf))
        return buf

    def scan(self, n: int) -> bool:
        """Hash the next n bytes a bounded chunk at a time, keeping none; True if all were zero."""
        chunk = memoryview(bytearray(min(n, _IO_CHUNK)))
        zero = True
        while n:
            part = chunk[: min(n, len(chunk))]
            self.readinto(part)
            zero = zero and not np.frombuffer(part, dtype=np.uint8).any()
            n -= len(part)
        return zero

    def matches(self, digest: bytes, end: int) -> bool:
        """Whether the bytes up to ``end`` hash to ``digest``, reading whatever is left of them."""
        try:
            self.f.seek(self.pos)  # a failed read may have moved the file past what was hashed
            self.scan(end - self.pos)
        except ModelFormatError:
            return False
        return self.sha.digest() == digest

    def readinto(self, view: memoryview) -> None:
        """Fill view (bytes) with the next len(view) bytes of the file."""
        got = 0
        while got < len(view):  # a read may return less than asked without being at the end
            k = self.f.readinto(view[got:])
            if not k:
                self.truncated = True
                raise self.fail(f"truncated while being read: the file ended at byte {self.pos + got}, "
                                f"but it had {self.size} bytes when it was opened ({_CHANGED})")
            got += k
        self.sha.update(view)
        self.pos += got


def _validate(f: BinaryIO, where: str) -> tuple[dict, dict[tuple[str, str], np.ndarray]]:
    """Check the whole file; returns the manifest and the decoded arrays keyed by (layer, role).

    The file is streamed, never held whole (on a phone the peak memory of a load matters):
    pass 1 hashes it in bounded chunks, so that a corrupt file is reported as such before
    anything in its header is believed; pass 2 parses the header and decodes the arrays one
    at a time, and hashes again, to be sure that it read the bytes pass 1 vouched for.
    """
    fail = _Fail(where)
    st = os.fstat(f.fileno())
    if not stat.S_ISREG(st.st_mode):  # a pipe or device has no size to check the layout against
        raise fail("not a regular file")
    n = st.st_size
    preamble, trailer = _check_checksum(_Reader(f, n, fail), n, fail)
    f.seek(0)
    r = _Reader(f, n, fail)
    try:
        man, arrays = _parse(r, preamble, n - _DIGEST, fail)
    except ModelFormatError:
        # pass 1 found the checksum right, so a failed check here is either a crafted file
        # or a file written to since: finish hashing to report which one happened
        if r.truncated or r.matches(trailer, n - _DIGEST):
            raise
        raise fail(_CHANGED) from None
    if r.sha.digest() != trailer:
        raise fail(_CHANGED)
    return man, arrays


def _check_checksum(r: _Reader, n: int, fail: _Fail) -> tuple[bytes, bytes]:
    """Pass 1: what the file is, then its SHA-256 against the trailer; returns the preamble and trailer."""
    pre = bytes(r.read(min(n, _PREAMBLE.size)))
    head = pre[: len(MAGIC)]
    if n == 0:
        raise fail("the file is empty")
    if head != MAGIC:
        if head[:1] == b"\x80":
            raise fail("this looks like a Python pickle; qcnn-lite model files are never pickles and pickles are never loaded")
        if head.startswith(b"\x93NUMPY") or head.startswith(b"PK"):
            raise fail("this is a numpy .npy/.npz file, not a qcnn-lite model file")
        if n < len(MAGIC) and MAGIC.startswith(head):
            raise fail(f"truncated: {n} bytes, shorter than the file preamble")
        raise fail(f"not a qcnn-lite model file (starts with {head!r}, expected {MAGIC!r})")
    if n < _PREAMBLE.size:
        raise fail(f"truncated: {n} bytes, shorter than the {_PREAMBLE.size}-byte preamble")
    _, version, _ = _PREAMBLE.unpack(pre)
    if version > FORMAT_VERSION:
        raise fail(f"format version {version}: written by a newer qcnn-lite (this one reads up to version {FORMAT_VERSION}); upgrade qcnn-lite")
    if version < 1:
        raise fail(f"invalid format version {version}")
    if n < _PREAMBLE.size + _DIGEST:
        raise fail(f"truncated: {n} bytes, too short to hold a header and checksum")
    r.scan(n - _DIGEST - _PREAMBLE.size)
    digest = r.sha.digest()
    trailer = bytes(r.read(_DIGEST))
    if digest != trailer:
        raise fail("checksum mismatch: the file is corrupt or truncated")
    return pre, trailer


def _parse(r: _Reader, preamble: bytes, body: int, fail: _Fail) -> tuple[dict, dict[tuple[str, str], np.ndarray]]:
    """Pass 2: header and payload, read in file order; ``body`` is where the checksummed bytes end."""
    if bytes(r.read(_PREAMBLE.size)) != preamble:  # pass 1 checked this one; the header length must be its
        raise fail(_CHANGED)
    _, version, hlen = _PREAMBLE.unpack(preamble)
    start = _PREAMBLE.size + hlen  # payload start
    if hlen > _MAX_HEADER or start > body:
        raise fail(f"header length {hlen} runs past the end of the file ({body + _DIGEST} bytes)")
    if start % ALIGN:
        raise fail(f"header length {hlen} leaves the payload unaligned")
    try:
        text = r.read(hlen).decode("utf-8")
    except UnicodeDecodeError as e:
        raise fail(f"the header is not valid UTF-8 ({e})") from None
    stripped = text.rstrip(" ")
    try:
        man = json.loads(stripped, object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as e:
        raise fail(f"the header is not valid JSON ({e})") from None
    _check_manifest(man, fail)
    if man["format_version"] != version:
        raise fail(f"the header says format version {man['format_version']} but the preamble says {version}")
    book_K = _check_layout(man, start, body, fail)
    arrays = _read_payload(r, man, book_K, start, body, fail)
    if _dumps(man) != stripped.encode("utf-8"):  # one network, one byte string: edits show up here
        raise fail("the header is not in canonical form (sorted keys, no spaces); it has been edited")
    return man, arrays


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise ValueError(f"duplicate keys in an object: {sorted(k for k, _ in pairs)}")
    return d


def _no_constant(s: str) -> float:
    raise ValueError(f"{s} is not allowed")


def _finite_float(s: str) -> float:
    v = float(s)
    if not math.isfinite(v):
        raise ValueError(f"number {s} is out of range")
    return v


def _is_int(v: Any, lo: int = 0, hi: int = _MAX_DIM) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _check_keys(obj: Any, required: set[str], optional: set[str], what: str, fail: _Fail) -> None:
    if not isinstance(obj, dict):
        raise fail(f"{what} must be an object, got {type(obj).__name__}")
    missing = required - obj.keys()
    if missing:
        raise fail(f"{what} lacks {', '.join(sorted(missing))}")
    unknown = obj.keys() - required - optional
    if unknown:
        raise fail(f"{what} has unknown fields {', '.join(sorted(unknown))}")


# what the engine reads from each spec layer type: key -> (required, check, description)
_SPEC_FIELDS: dict[str, dict[str, tuple[bool, Any, str]]] = {
    "conv": {
        "name": (True, lambda v: isinstance(v, str) and v != "", "a non-empty string"),
        "out": (True, lambda v: _is_int(v, 1), "a positive integer"),
        "kernel": (True, lambda v: _is_int(v, 1), "a positive integer"),
        "stride": (False, lambda v: _is_int(v, 1), "a positive integer"),
        "padding": (False, lambda v: _is_int(v, 0), "a non-negative integer"),
        "groups": (False, lambda v: _is_int(v, 1), "a positive integer"),
    },
    "fc": {
        "name": (True, lambda v: isinstance(v, str) and v != "", "a non-empty string"),
        "out": (True, lambda v: _is_int(v, 1), "a positive integer"),
    },
    "maxpool": {
        "kernel": (True, lambda v: _is_int(v, 1), "a positive integer"),
        "stride": (True, lambda v: _is_int(v, 1), "a positive integer"),
        "ceil": (False, lambda v: isinstance(v, bool), "true or false"),
    },
    "lrn": {
        "size": (False, lambda v: _is_int(v, 1), "a positive integer"),
        "alpha": (False, lambda v: _is_num(v), "a number"),
        "beta": (False, lambda v: _is_num(v), "a number"),
        "k": (False, lambda v: _is_num(v), "a number"),
    },
}


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_manifest(man: Any, fail: _Fail) -> None:
    """Types and values of every manifest field (not yet the payload layout)."""
    _check_keys(man, {"format", "format_version", "network", "layers", "arrays", "payload_nbytes"}, set(), "the header", fail)
    if man["format"] != "qcnn-lite model":
        raise fail(f"the header's format is {man['format']!r}, expected 'qcnn-lite model'")
    if not _is_int(man["format_version"], 1):
        raise fail(f"format_version must be a positive integer, got {man['format_version']!r}")
    if man["format_version"] > FORMAT_VERSION:
        raise fail(f"format version {man['format_version']}: written by a newer qcnn-lite; upgrade qcnn-lite")
    if not _is_int(man["payload_nbytes"], 0, 1 << 62):
        raise fail(f"payload_nbytes must be a non-negative integer, got {man['payload_nbytes']!r}")
    net = man["network"]
    _check_keys(net, {"name", "input_shape", "spec", "meta"}, set(), "network", fail)
    if not isinstance(net["name"], str):
        raise fail(f"network name must be a string, got {net['name']!r}")
    shp = net["input_shape"]
    if not (isinstance(shp, list) and len(shp) == 3 and all(_is_int(v, 1) for v in shp)):
        raise fail(f"input_shape must be 3 positive integers (C, H, W), got {shp!r}")
    if not isinstance(net["meta"], dict):
        raise fail(f"meta must be an object, got {type(net['meta']).__name__}")
    spec = net["spec"]
    if not isinstance(spec, list):
        raise fail(f"spec must be a list of layers, got {type(spec).__name__}")
    for i, L in enumerate(spec):
        if not isinstance(L, dict):
            raise fail(f"spec layer {i} must be an object, got {type(L).__name__}")
        t = L.get("type")
        if t not in LAYER_TYPES:
            raise fail(f"spec layer {i}: unknown layer type {t!r} (known: {', '.join(LAYER_TYPES)})")
        for key, (required, ok, desc) in _SPEC_FIELDS.get(t, {}).items():
            if key not in L:
                if required:
                    raise fail(f"spec layer {i} ({t}) lacks {key!r}")
            elif not ok(L[key]):
                raise fail(f"spec layer {i} ({t}): {key} must be {desc}, got {L[key]!r}")
    layers = man["layers"]
    if not isinstance(layers, list):
        raise fail("layers must be a list")
    for j, e in enumerate(layers):
        if not isinstance(e, dict):
            raise fail(f"layers[{j}] must be an object")
        cls = e.get("class")
        if cls not in _CLASSES:
            raise fail(f"layers[{j}]: unknown layer type {cls!r} (known: {', '.join(_CLASSES)})")
        conv = {"stride", "padding", "groups"} if _KIND[cls] == "conv" else set()
        _check_keys(e, {"name", "class"} | conv, set(), f"layers[{j}]", fail)
        if not isinstance(e["name"], str):
            raise fail(f"layers[{j}]: name must be a string")
        for key in sorted(conv):
            if not _is_int(e[key], 0 if key == "padding" else 1):
                raise fail(f"layer {e['name']!r}: {key} must be a {'non-negative' if key == 'padding' else 'positive'} integer, got {e[key]!r}")
    arrays = man["arrays"]
    if not isinstance(arrays, list):
        raise fail("arrays must be a list")
    for j, a in enumerate(arrays):
        _check_keys(a, {"layer", "role", "dtype", "shape", "bits", "offset", "nbytes"}, set(), f"arrays[{j}]", fail)
        if not isinstance(a["layer"], str) or a["role"] not in ("weight", "bias", "codebooks", "codes"):
            raise fail(f"arrays[{j}]: unknown layer/role {a['layer']!r}/{a['role']!r}")
        if a["dtype"] not in ("float32", "uint8", "uint16"):
            raise fail(f"arrays[{j}] ({a['layer']}.{a['role']}): dtype {a['dtype']!r} is not one of float32, uint8, uint16")
        if not (isinstance(a["shape"], list) and len(a["shape"]) <= 4 and all(_is_int(v) for v in a["shape"])):
            raise fail(f"arrays[{j}] ({a['layer']}.{a['role']}): shape must be a list of up to 4 non-negative integers, got {a['shape']!r}")
        if not _is_int(a["bits"], 1, 32):
            raise fail(f"arrays[{j}] ({a['layer']}.{a['role']}): bits must be an integer in 1..32, got {a['bits']!r}")
        for key in ("offset", "nbytes"):
            if not _is_int(a[key], 0, 1 << 62):
                raise fail(f"arrays[{j}] ({a['layer']}.{a['role']}): {key} must be a non-negative integer, got {a[key]!r}")


def _check_layout(man: dict, start: int, body: int, fail: _Fail) -> dict[str, int]:
    """Layers against the spec, arrays against their layers and the payload; returns K per layer (0 if dense).

    Only the manifest is looked at: the padding and the array contents are checked as
    :func:`_read_payload` reads them.
    """
    net = man["network"]
    spec, input_shape = net["spec"], tuple(net["input_shape"])
    names = [L["name"] for L in spec if L["type"] in PARAM_TYPES]
    if len(set(names)) != len(names):
        raise fail("spec has conv/fc layers with the same name")
    try:
        shapes = [input_shape] + output_shapes(spec, input_shape)
    except ValueError as e:
        raise fail(f"the spec does not fit its input shape: {e}") from None
    in_dims = {L["name"]: shapes[i] for i, L in enumerate(spec) if L["type"] in PARAM_TYPES}
    by_name = {L["name"]: L for L in spec if L["type"] in PARAM_TYPES}

    entries = {}
    for e in man["layers"]:
        if e["name"] not in by_name:
            raise fail(f"layer {e['name']!r} is not a conv/fc layer of the spec")
        if e["name"] in entries:
            raise fail(f"layer {e['name']!r} appears twice")
        entries[e["name"]] = e
    for name in names:
        if name not in entries:
            raise fail(f"missing parameters for {by_name[name]['type']} layer {name!r}")
    if [e["name"] for e in man["layers"]] != names:
        raise fail("layers are not in spec order")

    arrays: dict[tuple[str, str], dict] = {}
    for a in man["arrays"]:
        key = (a["layer"], a["role"])
        if a["layer"] not in entries:
            raise fail(f"array {a['layer']}.{a['role']} belongs to no layer")
        if key in arrays:
            raise fail(f"array {a['layer']}.{a['role']} appears twice")
        arrays[key] = a

    # Each layer: the right class for its spec type, all its arrays, shapes from the spec, dtype, bits, size.
    book_K: dict[str, int] = {}
    for name in names:
        L, e = by_name[name], entries[name]
        cls = e["class"]
        if _KIND[cls] != L["type"]:
            raise fail(f"layer {name!r} is {L['type']} in the spec but the file stores a {cls}")
        roles = _ROLES[cls]
        have = sorted(r for (n, r) in arrays if n == name)
        if have != sorted(roles):
            raise fail(f"layer {name!r} ({cls}) needs arrays {', '.join(roles)}, the file has {', '.join(have) or 'none'}")
        try:
            want = _expected_shapes(L, in_dims[name], e, {r: arrays[name, r]["shape"] for r in roles})
        except ValueError as err:
            raise fail(str(err)) from None
        K = want["codebooks"][1] if "codebooks" in want else 0
        for role in roles:
            a = arrays[name, role]
            what = f"layer {name!r} {role}"
            if a["shape"] != want[role]:
                raise fail(f"{what}: shape {tuple(a['shape'])} does not match the spec, which needs {tuple(want[role])}")
            count = math.prod(a["shape"])
            if role == "codes":
                bits, dtype = code_bits(K), code_dtype(K)
                if a["dtype"] != dtype.name or a["bits"] != bits:
                    raise fail(f"{what}: K={K} codes are {dtype.name} at {bits} bits, the file says {a['dtype']} at {a['bits']} bits")
                size = (count * bits + 7) // 8
            else:
                if a["dtype"] != "float32" or a["bits"] != 32:
                    raise fail(f"{what}: must be float32 at 32 bits, the file says {a['dtype']} at {a['bits']} bits")
                size = 4 * count
            if a["nbytes"] != size:
                raise fail(f"{what}: {count} values at {a['bits']} bits take {size} bytes, the file says {a['nbytes']}")
        book_K[name] = K
    order = [(n, r) for n in names for r in _ROLES[entries[n]["class"]]]
    if [(a["layer"], a["role"]) for a in man["arrays"]] != order:
        raise fail("arrays are not listed in spec order (layer by layer, in role order)")

    # Layout: in manifest order, aligned, in bounds, non-overlapping.
    payload = body - start
    if man["payload_nbytes"] != payload:
        raise fail(f"the payload is {payload} bytes, the header says {man['payload_nbytes']} (truncated or padded file)")
    pos = 0
    for a in man["arrays"]:
        what = f"array {a['layer']}.{a['role']}"
        if a["offset"] % ALIGN:
            raise fail(f"{what}: offset {a['offset']} is not {ALIGN}-byte aligned")
        if a["offset"] < pos:
            raise fail(f"{what}: offset {a['offset']} overlaps the previous array (which ends at {pos}), or arrays are out of order")
        if a["offset"] + a["nbytes"] > payload:
            raise fail(f"{what}: bytes {a['offset']}..{a['offset'] + a['nbytes']} run past the payload end {payload}")
        pos = a["offset"] + a["nbytes"]
    if -(-pos // ALIGN) * ALIGN != payload:
        raise fail(f"{payload - pos} unexplained bytes after the last array")
    return book_K


def _read_payload(r: _Reader, man: dict, book_K: dict[str, int], start: int, body: int,
                  fail: _Fail) -> dict[tuple[str, str], np.ndarray]:
    """The arrays, read and decoded one at a time in file order, checking that every gap is zero padding.

    The layout has been checked, so the reads stay within the checksummed bytes.
    """
    out: dict[tuple[str, str], np.ndarray] = {}
    for a in man["arrays"]:
        if not r.scan(start + a["offset"] - r.pos):
            raise fail(f"non-zero padding before array {a['layer']}.{a['role']}")
        out[a["layer"], a["role"]] = _read_array(r, a, book_K[a["layer"]], fail)
    if not r.scan(body - r.pos):
        raise fail("non-zero padding after the last array")
    return out


def _read_array(r: _Reader, a: dict, K: int, fail: _Fail) -> np.ndarray:
    """One array, read from the file into its own memory: codes must be < K, floats finite.

    Besides the arrays returned, a load holds at most about _IO_CHUNK bytes of the file at a
    time: floats are read straight into the final array, codes a bounded slice at a time.
    """
    what = f"layer {a['layer']!r} {a['role']}"
    count = math.prod(a["shape"])
    if a["role"] == "codes":
        return _read_codes(r, count, a["bits"], K, what, fail).reshape(a["shape"])
    arr = np.empty(count, dtype="<f4")
    r.readinto(memoryview(arr.view(np.uint8)))
    arr = arr.astype(np.float32, copy=False).reshape(a["shape"])  # copies only where '<f4' is not the native float32
    # min and max propagate NaN, so they find NaN and Inf without np.isfinite's array of booleans
    # (as large as a quarter of the array: 37 MB for a dense AlexNet fc6).
    if count and not (math.isfinite(arr.min()) and math.isfinite(arr.max())):
        raise fail(f"{what}: contains NaN or Inf")
    return arr


def _read_codes(r: _Reader, count: int, bits: int, K: int, what: str, fail: _Fail) -> np.ndarray:
    """``count`` packed codes from the file, unpacked slice by slice into a (count,) array.

    A slice is a multiple of 8 codes (8 codes take exactly ``bits`` bytes), so every slice
    starts on a byte boundary and is unpacked on its own from at most _IO_CHUNK bytes (or
    ``bits`` bytes, if _IO_CHUNK is smaller).
    """
    codes = np.empty(count, dtype=code_dtype(K))
    step = 8 * max(1, _IO_CHUNK // bits)  # codes per slice
    buf = memoryview(bytearray(min((count * bits + 7) // 8, step // 8 * bits)))
    check_K = K < 1 << bits  # else every code that fits in the bits is < K
    for i in range(0, count, step):
        j = min(count, i + step)
        part = buf[: ((j - i) * bits + 7) // 8]
        r.readinto(part)
        used = (j - i) * bits % 8  # bits of the last byte used by codes; nonzero only in the last slice
        if used and part[-1] & ((1 << (8 - used)) - 1):
            raise fail(f"{what}: non-zero padding bits after the last code")
        out = codes[i:j]
        _unpack_codes(part, bits, out)
        if check_K and int(out.max()) >= K:
            bad = int(np.argmax(out >= K))
            raise fail(f"{what}: code {int(out[bad])} at index {i + bad} is >= K={K} codewords")
    return codes


def _build(man: dict, arrays: dict[tuple[str, str], np.ndarray], where: str) -> Network:
    """Layer objects and the Network, from a validated manifest."""
    fail = _Fail(where)
    params = {}
    for e in man["layers"]:
        name, cls = e["name"], e["class"]
        args = [arrays[name, r] for r in _ROLES[cls]]
        kw = {k: e[k] for k in ("stride", "padding", "groups") if k in e}
        try:
            params[name] = _CLASSES[cls](*args, **kw)
        except ValueError as err:
            raise fail(f"layer {name!r}: {err}") from None
    net = man["network"]
    try:
        return Network(net["name"], tuple(net["input_shape"]), net["spec"], params, net["meta"])
    except ValueError as err:
        raise fail(f"invalid network: {err}") from None


# --------------------------------------------------------------------------- command line
def describe(path: str | os.PathLike) -> str:
    """A text summary of a model file, after full validation: layers, K, bits and bytes per layer."""
    path = Path(path)
    man, arrays = _read(path)  # validates everything, payload included
    net = _guarded(lambda: _build(man, arrays, str(path)), str(path))
    rows = [f"{path}: {net.name}, input {'x'.join(map(str, net.input_shape))}, format version {man['format_version']}, "
            f"{_size(path.stat().st_size)}"]
    for e in man["layers"]:
        arrays = [a for a in man["arrays"] if a["layer"] == e["name"]]
        nbytes = sum(a["nbytes"] for a in arrays)
        shapes = ", ".join(f"{a['role']} {'x'.join(map(str, a['shape']))}" for a in arrays)
        codes = next((a for a in arrays if a["role"] == "codes"), None)
        q = f"; K={arrays[0]['shape'][1]} at {codes['bits']} bits" if codes else ""
        rows.append(f"  {e['name']:<10} {e['class']:<8} {_size(nbytes):>10}  {shapes}{q}")
    if net.meta:
        rows.append(f"  meta: {json.dumps(net.meta, sort_keys=True, ensure_ascii=False)[:200]}")
    return "\n".join(rows) + "\n"


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 2**20 else f"{n / 2**20:.2f} MiB"


def add_parser(subparsers: "argparse._SubParsersAction") -> None:
    """Register ``model-info PATH``: validate a model file and print its layers."""
    p = subparsers.add_parser("model-info", help="check a .qcnn model file and list its layers and sizes")
    p.add_argument("path", help="model file written by qcnn_lite.modelfile.save")
    p.set_defaults(func=lambda args: print(describe(args.path), end="") or 0)
