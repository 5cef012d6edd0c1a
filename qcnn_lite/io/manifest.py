"""The model file's manifest: the JSON header that says what a file holds and where.

The manifest holds the network (name, input_shape, spec, meta), one entry per
conv/fc layer (class, stride/padding/groups) and one per array (layer, role,
dtype, shape, bits, offset, nbytes; offsets count from the payload start). Its
JSON is canonical (sorted keys, no spaces), so one network gives one byte string.

:func:`check_manifest` checks every field's type and value, :func:`check_layout`
the layers against the spec (:mod:`qcnn_lite.nn.spec` gives the shapes) and the
arrays against the payload; both raise :class:`ModelFormatError`.
:mod:`qcnn_lite.io.modelfile` reads and writes the bytes around it.
"""
from __future__ import annotations

import json
import math
from typing import Any

from qcnn_lite.nn import precision
from qcnn_lite.nn.layers import QConv2d, QLinear
from qcnn_lite.nn.layers import code_dtype
from qcnn_lite.nn.spec import PARAM_TYPES, check_fields, is_int, output_shapes, param_shapes, split_dim

__all__ = ["ModelFormatError", "FORMAT_VERSION", "TABLES_SINCE", "table_dtypes_of", "ALIGN", "code_bits", "check_json", "dumps", "loads",
           "check_manifest", "check_layout", "expected_shapes"]

# Version 2 added "table_dtype" to every quantized layer's entry; a file without quantized
# layers is still written as version 1, which it then is in every respect (dense files keep their bytes).
FORMAT_VERSION = 2
TABLES_SINCE = 2
ALIGN = 64  # payload and array alignment, so arrays could be memory-mapped

KIND = {"Linear": "fc", "QLinear": "fc", "Conv2d": "conv", "QConv2d": "conv"}
ROLES = {
    "Linear": ("weight", "bias"),
    "Conv2d": ("weight", "bias"),
    "QLinear": ("codebooks", "codes", "bias"),
    "QConv2d": ("codebooks", "codes", "bias"),
}


def table_dtypes_of(cls: str) -> tuple[str, ...]:
    """The table precisions a stored layer class may name (empty for dense classes)."""
    return precision.class_table_dtypes({"QLinear": QLinear, "QConv2d": QConv2d}[cls]) if cls in ("QLinear", "QConv2d") else ()


class ModelFormatError(ValueError):
    """A file that is not a valid qcnn-lite model: wrong type, corrupt, truncated or inconsistent."""


def code_bits(n_codewords: int) -> int:
    """Bits per stored code: ``ceil(log2 K)``, and 1 for K = 1 so every code takes space."""
    return max(1, (int(n_codewords) - 1).bit_length())


class Fail:
    """Raises ModelFormatError prefixed with the file name."""

    def __init__(self, where: str):
        self.where = where

    def __call__(self, msg: str) -> ModelFormatError:
        return ModelFormatError(f"{self.where}: {msg}")


# --------------------------------------------------------------------------- JSON
def check_json(obj: Any, where: str) -> None:
    """Raise ValueError unless obj is plain JSON data (tuples allowed: they come back as lists)."""
    if obj is None or isinstance(obj, (str, bool, int)):
        return
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"{where} is {obj}: JSON has no NaN or Inf")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_json(v, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ValueError(f"{where} has a non-string key {k!r}: JSON keys are strings")
            check_json(v, f"{where}[{k!r}]")
        return
    raise ValueError(f"{where} is a {type(obj).__name__}, which JSON cannot hold exactly; use int/float/str/list/dict")


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def loads(text: str) -> Any:
    """Parse manifest JSON strictly: no duplicate keys, no NaN/Infinity, no float out of range."""
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_float=_finite_float)


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


def _check_keys(obj: Any, required: set[str], optional: set[str], what: str, fail: Fail) -> None:
    if not isinstance(obj, dict):
        raise fail(f"{what} must be an object, got {type(obj).__name__}")
    missing = required - obj.keys()
    if missing:
        raise fail(f"{what} lacks {', '.join(sorted(missing))}")
    unknown = obj.keys() - required - optional
    if unknown:
        raise fail(f"{what} has unknown fields {', '.join(sorted(unknown))}")


# --------------------------------------------------------------------------- checks
def expected_shapes(L: dict, in_shape: tuple[int, ...], entry: dict, shapes: dict[str, list[int]]) -> dict[str, list[int]]:
    """The array shapes a layer must have given its spec and input; raises ValueError on mismatch of settings."""
    cls, name = entry["class"], L["name"]
    if L["type"] == "conv":
        for key, default in (("stride", 1), ("padding", 0), ("groups", 1)):
            if entry[key] != L.get(key, default):
                raise ValueError(f"layer {name!r}: {key}={entry[key]} but the spec says {L.get(key, default)}")
    dense = param_shapes(L, in_shape)  # checks that the groups divide the channels
    if cls in ("Linear", "Conv2d"):
        return {k: list(v) for k, v in dense.items()}
    M, K, d = _book_shape(shapes, name)
    g, n = L.get("groups", 1), split_dim(L, in_shape)
    if M * d != n:
        if L["type"] == "conv":
            raise ValueError(f"layer {name!r}: codebooks (M={M}, d={d}) x groups={g} do not cover {in_shape[0]} input channels")
        raise ValueError(f"layer {name!r}: codebooks (M={M}, d={d}) do not cover {n} input features")
    return {k: list(v) for k, v in param_shapes(L, in_shape, d, K).items()}


def _book_shape(shapes: dict[str, list[int]], name: str) -> tuple[int, int, int]:
    s = shapes.get("codebooks")
    if not isinstance(s, list) or len(s) != 3 or min(s) < 1:
        raise ValueError(f"layer {name!r}: codebooks must have shape (M, K, d) with positive sizes, got {s}")
    if s[1] > 65536:
        raise ValueError(f"layer {name!r}: K={s[1]} codewords is above the 65536 that uint16 codes hold")
    return s[0], s[1], s[2]


def check_manifest(man: Any, fail: Fail) -> None:
    """Types and values of every manifest field (not yet the payload layout)."""
    _check_keys(man, {"format", "format_version", "network", "layers", "arrays", "payload_nbytes"}, set(), "the header", fail)
    _check_header(man, fail)
    _check_network(man["network"], fail)
    _check_layer_entries(man["layers"], man["format_version"], fail)
    _check_array_entries(man["arrays"], fail)


def _check_header(man: dict, fail: Fail) -> None:
    if man["format"] != "qcnn-lite model":
        raise fail(f"the header's format is {man['format']!r}, expected 'qcnn-lite model'")
    if not is_int(man["format_version"], 1):
        raise fail(f"format_version must be a positive integer, got {man['format_version']!r}")
    if man["format_version"] > FORMAT_VERSION:
        raise fail(f"format version {man['format_version']}: written by a newer qcnn-lite; upgrade qcnn-lite")
    if not is_int(man["payload_nbytes"], 0, 1 << 62):
        raise fail(f"payload_nbytes must be a non-negative integer, got {man['payload_nbytes']!r}")


def _check_network(net: Any, fail: Fail) -> None:
    _check_keys(net, {"name", "input_shape", "spec", "meta"}, set(), "network", fail)
    if not isinstance(net["name"], str):
        raise fail(f"network name must be a string, got {net['name']!r}")
    shp = net["input_shape"]
    if not (isinstance(shp, list) and len(shp) == 3 and all(is_int(v, 1) for v in shp)):
        raise fail(f"input_shape must be 3 positive integers (C, H, W), got {shp!r}")
    if not isinstance(net["meta"], dict):
        raise fail(f"meta must be an object, got {type(net['meta']).__name__}")
    spec = net["spec"]
    if not isinstance(spec, list):
        raise fail(f"spec must be a list of layers, got {type(spec).__name__}")
    for i, L in enumerate(spec):
        try:
            check_fields(L, i)
        except ValueError as e:
            raise fail(str(e)) from None


def _check_layer_entries(layers: Any, version: int, fail: Fail) -> None:
    if not isinstance(layers, list):
        raise fail("layers must be a list")
    for j, e in enumerate(layers):
        if not isinstance(e, dict):
            raise fail(f"layers[{j}] must be an object")
        cls = e.get("class")
        if cls not in KIND:
            raise fail(f"layers[{j}]: unknown layer type {cls!r} (known: {', '.join(KIND)})")
        conv = {"stride", "padding", "groups"} if KIND[cls] == "conv" else set()
        tables = {"table_dtype"} if version >= TABLES_SINCE and table_dtypes_of(cls) else set()
        _check_keys(e, {"name", "class"} | conv | tables, set(), f"layers[{j}]", fail)
        if not isinstance(e["name"], str):
            raise fail(f"layers[{j}]: name must be a string")
        if tables and e["table_dtype"] not in table_dtypes_of(cls):
            raise fail(f"layer {e['name']!r}: table_dtype {e['table_dtype']!r} is not one this qcnn-lite knows for "
                       f"{cls} ({', '.join(table_dtypes_of(cls))})")
        for key in sorted(conv):
            if not is_int(e[key], 0 if key == "padding" else 1):
                raise fail(f"layer {e['name']!r}: {key} must be a {'non-negative' if key == 'padding' else 'positive'} integer, got {e[key]!r}")
    if version >= TABLES_SINCE and not any(table_dtypes_of(e["class"]) for e in layers):
        # save writes a file without quantized layers as version 1: one network, one byte string
        raise fail(f"format version {version} holds quantized layers, this file has none")


def _check_array_entries(arrays: Any, fail: Fail) -> None:
    if not isinstance(arrays, list):
        raise fail("arrays must be a list")
    for j, a in enumerate(arrays):
        _check_keys(a, {"layer", "role", "dtype", "shape", "bits", "offset", "nbytes"}, set(), f"arrays[{j}]", fail)
        if not isinstance(a["layer"], str) or a["role"] not in ("weight", "bias", "codebooks", "codes"):
            raise fail(f"arrays[{j}]: unknown layer/role {a['layer']!r}/{a['role']!r}")
        if a["dtype"] not in ("float32", "uint8", "uint16"):
            raise fail(f"arrays[{j}] ({a['layer']}.{a['role']}): dtype {a['dtype']!r} is not one of float32, uint8, uint16")
        if not (isinstance(a["shape"], list) and len(a["shape"]) <= 4 and all(is_int(v) for v in a["shape"])):
            raise fail(f"arrays[{j}] ({a['layer']}.{a['role']}): shape must be a list of up to 4 non-negative integers, got {a['shape']!r}")
        if not is_int(a["bits"], 1, 32):
            raise fail(f"arrays[{j}] ({a['layer']}.{a['role']}): bits must be an integer in 1..32, got {a['bits']!r}")
        for key in ("offset", "nbytes"):
            if not is_int(a[key], 0, 1 << 62):
                raise fail(f"arrays[{j}] ({a['layer']}.{a['role']}): {key} must be a non-negative integer, got {a[key]!r}")


def check_layout(man: dict, start: int, body: int, fail: Fail) -> dict[str, int]:
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
    entries, arrays = _index_entries(man, names, by_name, fail)
    # Each layer: the right class for its spec type, all its arrays, shapes from the spec, dtype, bits, size.
    book_K = {name: _check_layer_arrays(by_name[name], in_dims[name], entries[name], arrays, fail) for name in names}
    order = [(n, r) for n in names for r in ROLES[entries[n]["class"]]]
    if [(a["layer"], a["role"]) for a in man["arrays"]] != order:
        raise fail("arrays are not listed in spec order (layer by layer, in role order)")
    _check_offsets(man, body - start, fail)
    return book_K


def _index_entries(man: dict, names: list[str], by_name: dict[str, dict], fail: Fail) -> tuple[dict, dict]:
    """The layer entries by name and the array entries by (layer, role): each once, each of a layer of the spec."""
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
    return entries, arrays


def _check_layer_arrays(L: dict, in_dim: tuple, e: dict, arrays: dict, fail: Fail) -> int:
    """One layer's arrays against its spec entry L; returns its K (0 if dense)."""
    name, cls = L["name"], e["class"]
    if KIND[cls] != L["type"]:
        raise fail(f"layer {name!r} is {L['type']} in the spec but the file stores a {cls}")
    roles = ROLES[cls]
    have = sorted(r for (n, r) in arrays if n == name)
    if have != sorted(roles):
        raise fail(f"layer {name!r} ({cls}) needs arrays {', '.join(roles)}, the file has {', '.join(have) or 'none'}")
    try:
        want = expected_shapes(L, in_dim, e, {r: arrays[name, r]["shape"] for r in roles})
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
    return K


def _check_offsets(man: dict, payload: int, fail: Fail) -> None:
    """The arrays in manifest order: aligned, in bounds, non-overlapping, filling the payload."""
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
