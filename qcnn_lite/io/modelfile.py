"""The qcnn-lite model file: one pickle-free, checksummed file per network.

Layout (all integers little-endian)::

    offset 0   8 bytes   magic b"QCNNLITE"
           8   uint32    format version (2 with quantized layers, whose entries carry their
                         table precision; 1 without; version 1 files load with the default precisions)
          12   uint32    header length H (JSON + space padding; 16 + H is a multiple of 64)
          16   H bytes   UTF-8 JSON manifest (:mod:`qcnn_lite.io.manifest`), sorted keys, padded with spaces
      16 + H   payload   the arrays, each at a 64-byte aligned offset, zero padding between
         end   32 bytes  SHA-256 of every byte before it

Floats are raw float32; codes are bit-packed at ``max(1, ceil(log2 K))`` bits,
MSB-first in one continuous stream, with zero bits padding the last byte.

:func:`load` checks everything (magic, version, checksum, every manifest
field, layout, shapes against the spec, codes < K, finite floats) before it
builds a layer, and reports any problem as :class:`ModelFormatError`. It streams
the file rather than reading it whole, so loading needs little memory beyond the
decoded arrays (see :func:`_validate`); the codes of an fc layer with 8-bit tables go
straight into the byte-shuffle kernels' packed layout as they are read, so their unpacked
copy never exists whole (:func:`_read_payload`).
"""
from __future__ import annotations

import json
import math
import os
import stat
import struct
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from qcnn_lite import kernels
from qcnn_lite.nn.engine import Network
from qcnn_lite.nn.layers import Conv2d, Linear, QConv2d, QLinear
from qcnn_lite.nn import precision
from qcnn_lite.io.bitpack import pack_codes, unpack_codes
from qcnn_lite.io.manifest import (ALIGN, FORMAT_VERSION, KIND, ROLES, TABLES_SINCE, Fail, ModelFormatError,
                                   check_json, check_layout, check_manifest, code_bits, dumps, expected_shapes,
                                   loads, table_dtypes_of)
from qcnn_lite.io.paths import create_temp_beside, move_if_absent
from qcnn_lite.nn.layers import code_dtype

try:  # CPython's builtin SHA-256: hashlib would load OpenSSL's libcrypto (~3.5 MiB resident) just for this
    from _sha2 import sha256 as _sha256  # Python 3.12+
except ImportError:
    try:
        from _sha256 import sha256 as _sha256  # Python 3.11
    except ImportError:  # a build without it
        from hashlib import sha256 as _sha256

__all__ = ["ModelFormatError", "save", "load", "load_with_manifest", "read_manifest", "FORMAT_VERSION", "MAGIC", "code_bits"]

MAGIC = b"QCNNLITE"
_PREAMBLE = struct.Struct("<8sII")  # magic, format version, header length
_DIGEST = 32  # SHA-256 trailer
_MAX_HEADER = 64 << 20  # a manifest is a few kB; refuse absurd lengths before decoding
_IO_CHUNK = 1 << 20  # bytes per read when hashing, skipping or unpacking codes: bounds the memory of a load
_CHANGED = "the file changed while it was being read"
_CLASSES = {"Linear": Linear, "Conv2d": Conv2d, "QLinear": QLinear, "QConv2d": QConv2d}


# --------------------------------------------------------------------------- layer <-> arrays
def _layer_entry(name: str, layer: Any) -> tuple[dict, list[tuple[str, np.ndarray | bytes, dict]]]:
    """Manifest entry and (role, data, array-entry) list of one parameter layer."""
    cls = type(layer).__name__
    if type(layer) not in (Linear, Conv2d, QLinear, QConv2d):
        raise ValueError(f"layer {name!r}: cannot save a {cls}; expected Linear, Conv2d, QLinear or QConv2d")
    entry: dict[str, Any] = {"name": name, "class": cls}
    if KIND[cls] == "conv":
        entry.update(stride=int(layer.stride), padding=int(layer.padding), groups=int(layer.groups))
    if table_dtypes_of(cls):
        entry["table_dtype"] = precision.table_dtype(layer)
    arrays = []
    for role in ROLES[cls]:
        a = np.asarray(getattr(layer, role))
        if role == "codes":
            K = layer.codebooks.shape[1]
            bits = code_bits(K)
            if a.size and (int(a.min()) < 0 or int(a.max()) >= K):
                raise ValueError(f"layer {name!r}: codes must lie in [0, {K})")
            data: np.ndarray | bytes = pack_codes(a, bits)
            dtype = code_dtype(K).name
        else:
            if not np.isfinite(a).all():
                raise ValueError(f"layer {name!r}: {role} contains NaN or Inf")
            data = np.ascontiguousarray(a, dtype="<f4")
            bits, dtype = 32, "float32"
        arrays.append((role, data, {"layer": name, "role": role, "dtype": dtype, "shape": list(a.shape), "bits": bits}))
    return entry, arrays


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
    header, arrays, version = _manifest(net)
    fd, tmp = create_temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            _write(f, header, arrays, version)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            move_if_absent(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _manifest(net: Network) -> tuple[bytes, list[np.ndarray | bytes], int]:
    """The padded header bytes, the payload arrays in file order, and the format version."""
    check_json(net.name, "network name")
    check_json(net.spec, "spec")
    check_json(net.meta, "meta")
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
        if KIND[entry["class"]] != L["type"]:
            raise ValueError(f"layer {L['name']!r} is {L['type']} in the spec but holds a {entry['class']}")
        want = expected_shapes(L, dims[L["name"]], entry, {r: e["shape"] for r, _, e in arrays})
        for role, a, e in arrays:
            if e["shape"] != want[role]:
                raise ValueError(f"layer {L['name']!r}: {role} has shape {tuple(e['shape'])}, the spec needs {tuple(want[role])}")
            nbytes = len(a) if isinstance(a, bytes) else a.nbytes
            e.update(offset=offset, nbytes=nbytes)
            offset += -(-nbytes // ALIGN) * ALIGN
            entries.append(e)
            data.append(a)
        layers.append(entry)
    version = TABLES_SINCE if any("table_dtype" in e for e in layers) else 1
    manifest = {
        "format": "qcnn-lite model",
        "format_version": version,
        "network": {"name": net.name, "input_shape": list(net.input_shape), "spec": net.spec, "meta": net.meta},
        "layers": layers,
        "arrays": entries,
        "payload_nbytes": offset,
    }
    text = dumps(manifest)
    try:  # whatever save writes, load must accept: e.g. a spec stride of 1.0 would not load
        check_manifest(json.loads(text), Fail(f"cannot save network {net.name!r}"))
    except ModelFormatError as e:
        raise ValueError(str(e)) from None
    pad = -(_PREAMBLE.size + len(text)) % ALIGN
    return text + b" " * pad, data, version


def _write(f: BinaryIO, header: bytes, arrays: list[np.ndarray | bytes], version: int) -> None:
    h = _sha256()

    def put(b: bytes | memoryview) -> None:
        h.update(b)
        f.write(b)

    put(_PREAMBLE.pack(MAGIC, version, len(header)))
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
    return load_with_manifest(path)[1]


def load_with_manifest(path: str | os.PathLike) -> tuple[dict, Network]:
    """The manifest and the network of a model file, from one read (as :func:`load`)."""
    man, arrays = _read(path)
    return man, _guarded(lambda: _build(man, arrays, str(path)), str(path))


def read_manifest(path: str | os.PathLike) -> dict:
    """The JSON manifest of a model file (network, layers, arrays), after the same checks as :func:`load`."""
    return _read(path)[0]


def _read(path: str | os.PathLike) -> tuple[dict, dict[tuple[str, str], Any]]:
    """The validated manifest and decoded arrays of a model file (fc codes packed where :func:`_packer` says)."""
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


class _Reader:
    """Reads an open model file front to back, hashing every byte it hands out.

    ``size`` is what os.fstat said before reading, and every check is made against it, so a
    read that comes up short can only mean the file shrank meanwhile: that is reported as a
    truncated file, never as an EOFError or a numpy error further on.
    """

    def __init__(self, f: BinaryIO, size: int, fail: Fail) -> None:
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


def _validate(f: BinaryIO, where: str) -> tuple[dict, dict[tuple[str, str], Any]]:
    """Check the whole file; returns the manifest and the decoded arrays keyed by (layer, role).

    The file is streamed, never held whole (on a phone the peak memory of a load matters):
    pass 1 hashes it in bounded chunks, so that a corrupt file is reported as such before
    anything in its header is believed; pass 2 parses the header and decodes the arrays one
    at a time, and hashes again, to be sure that it read the bytes pass 1 vouched for.
    """
    fail = Fail(where)
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


def _check_checksum(r: _Reader, n: int, fail: Fail) -> tuple[bytes, bytes]:
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


def _parse(r: _Reader, preamble: bytes, body: int, fail: Fail) -> tuple[dict, dict[tuple[str, str], Any]]:
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
        man = loads(stripped)
    except (ValueError, RecursionError) as e:
        raise fail(f"the header is not valid JSON ({e})") from None
    check_manifest(man, fail)
    if man["format_version"] != version:
        raise fail(f"the header says format version {man['format_version']} but the preamble says {version}")
    book_K = check_layout(man, start, body, fail)
    arrays = _read_payload(r, man, book_K, start, body, fail)
    if dumps(man) != stripped.encode("utf-8"):  # one network, one byte string: edits show up here
        raise fail("the header is not in canonical form (sorted keys, no spaces); it has been edited")
    return man, arrays


def _read_payload(r: _Reader, man: dict, book_K: dict[str, int], start: int, body: int,
                  fail: Fail) -> dict[tuple[str, str], Any]:
    """The arrays, read and decoded one at a time in file order, checking that every gap is zero padding.

    The layout has been checked, so the reads stay within the checksummed bytes. The codes of an fc
    layer with 8-bit tables come back packed for the byte-shuffle kernels where those run
    (:func:`_packer`): packing as they are read keeps their unpacked copy from ever existing whole.
    """
    out: dict[tuple[str, str], Any] = {}
    packs = {e["name"] for e in man["layers"] if e["class"] == "QLinear"
             and e.get("table_dtype", QLinear.default_table_dtype(book_K[e["name"]])) == "uint8"}
    for a in man["arrays"]:
        if not r.scan(start + a["offset"] - r.pos):
            raise fail(f"non-zero padding before array {a['layer']}.{a['role']}")
        K = book_K[a["layer"]]
        packer = _packer(a, K) if a["layer"] in packs and a["role"] == "codes" else None
        out[a["layer"], a["role"]] = _read_array(r, a, K, fail, packer)
    if not r.scan(body - r.pos):
        raise fail("non-zero padding after the last array")
    return out


def _packer(a: dict, K: int) -> Any:
    """A kernels code packer for fc codes (out, M) of 2..256 codewords, or None (numpy backend, no extension)."""
    if len(a["shape"]) != 2 or not 1 < K <= 256 or 0 in a["shape"]:
        return None
    return kernels.linear_codes_packer(a["shape"][0], a["shape"][1], K)


def _read_array(r: _Reader, a: dict, K: int, fail: Fail, packer: Any = None) -> Any:
    """One array, read from the file into its own memory: codes must be < K, floats finite.

    Besides the arrays returned, a load holds at most about _IO_CHUNK bytes of the file at a
    time: floats are read straight into the final array, codes a bounded slice at a time.
    With a ``packer`` (:func:`_packer`), codes go slice by slice into it, and the packed codes are returned.
    """
    what = f"layer {a['layer']!r} {a['role']}"
    count = math.prod(a["shape"])
    if a["role"] == "codes":
        if packer is not None:
            _read_codes(r, count, a["bits"], K, what, fail, a["shape"][1], packer.add)
            return packer.finish()
        return _read_codes(r, count, a["bits"], K, what, fail).reshape(a["shape"])
    arr = np.empty(count, dtype="<f4")
    r.readinto(memoryview(arr.view(np.uint8)))
    arr = arr.astype(np.float32, copy=False).reshape(a["shape"])  # copies only where '<f4' is not the native float32
    # min and max propagate NaN, so they find NaN and Inf without np.isfinite's array of booleans
    # (as large as a quarter of the array: 37 MB for a dense AlexNet fc6).
    if count and not (math.isfinite(arr.min()) and math.isfinite(arr.max())):
        raise fail(f"{what}: contains NaN or Inf")
    return arr


def _read_codes(r: _Reader, count: int, bits: int, K: int, what: str, fail: Fail, row: int = 1,
                sink: Callable[[np.ndarray], None] | None = None) -> np.ndarray | None:
    """``count`` packed codes from the file, unpacked slice by slice into a (count,) array.

    A slice is a multiple of 8 codes (8 codes take exactly ``bits`` bytes), so every slice
    starts on a byte boundary and is unpacked on its own from at most _IO_CHUNK bytes (or
    ``bits`` bytes, if _IO_CHUNK is smaller). With ``sink``, slices are also whole rows of ``row``
    codes: each is checked (codes < K), then handed to ``sink`` as (rows, row), and None is returned.
    """
    unit = 8 * row // math.gcd(8, row)  # codes per slice: a multiple of 8 (and of row)
    step = unit * max(1, 8 * max(1, _IO_CHUNK // bits) // unit)
    if sink is not None:  # the slice is then a buffer of its own, not a view of the result: keep it small
        step = min(step, unit * max(1, _IO_CHUNK // 4 // unit))
    codes = np.empty(count if sink is None else min(count, step), dtype=code_dtype(K))
    buf = memoryview(bytearray(min((count * bits + 7) // 8, step // 8 * bits)))
    check_K = K < 1 << bits  # else every code that fits in the bits is < K
    for i in range(0, count, step):
        j = min(count, i + step)
        part = buf[: ((j - i) * bits + 7) // 8]
        r.readinto(part)
        used = (j - i) * bits % 8  # bits of the last byte used by codes; nonzero only in the last slice
        if used and part[-1] & ((1 << (8 - used)) - 1):
            raise fail(f"{what}: non-zero padding bits after the last code")
        out = codes[i:j] if sink is None else codes[: j - i]
        unpack_codes(part, bits, out)
        if check_K and int(out.max()) >= K:
            bad = int(np.argmax(out >= K))
            raise fail(f"{what}: code {int(out[bad])} at index {i + bad} is >= K={K} codewords")
        if sink is not None:  # only codes checked above reach the packer
            sink(out.reshape(-1, row))
    return codes if sink is None else None


def _build(man: dict, arrays: dict[tuple[str, str], np.ndarray], where: str) -> Network:
    """Layer objects and the Network, from a validated manifest."""
    fail = Fail(where)
    params = {}
    for e in man["layers"]:
        name, cls = e["name"], e["class"]
        args = [arrays[name, r] for r in ROLES[cls]]
        kw = {k: e[k] for k in ("stride", "padding", "groups") if k in e}
        try:
            if cls == "QLinear" and not isinstance(arrays[name, "codes"], np.ndarray):  # packed as read
                params[name] = QLinear.from_packed(*args)
            else:
                params[name] = _CLASSES[cls](*args, **kw)
            if "table_dtype" in e:  # version 1 files: the class's default precision
                precision.set_table_dtype(params[name], e["table_dtype"])
        except ValueError as err:
            raise fail(f"layer {name!r}: {err}") from None
    net = man["network"]
    try:
        return Network(net["name"], tuple(net["input_shape"]), net["spec"], params, net["meta"])
    except ValueError as err:
        raise fail(f"invalid network: {err}") from None


