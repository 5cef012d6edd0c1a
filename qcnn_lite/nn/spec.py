"""The network schema: what a spec layer holds, and the shapes that follow from it.

A spec is a list of plain layer dicts (JSON-able, stored as is in the model file)::

    {"type": "conv", "name": "conv1", "out": 96, "kernel": 11, "stride": 4, "padding": 0, "groups": 1}
    {"type": "relu"}
    {"type": "lrn", "size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0}
    {"type": "maxpool", "kernel": 3, "stride": 2, "ceil": False}
    {"type": "flatten"}
    {"type": "fc", "name": "fc6", "out": 4096}
    {"type": "softmax"}

``conv`` and ``fc`` layers carry parameters; everything else is parameter-free.
This module is the one place that knows the fields (:data:`FIELDS`), the output
shape of every layer (:func:`output_shapes`) and the array shapes of a parameter
layer, dense or quantized (:func:`param_shapes`). The engine, the quantizer, the
model file, the cost model and the benchmarks all ask it.
"""
from __future__ import annotations

import math
from typing import Any, Callable

__all__ = ["LAYER_TYPES", "PARAM_TYPES", "FIELDS", "check_fields", "validate_spec", "pool_size", "output_shapes",
           "split_dim", "n_vectors", "param_shapes", "is_int"]

LAYER_TYPES = ("conv", "fc", "relu", "lrn", "maxpool", "flatten", "softmax", "dropout")
PARAM_TYPES = ("conv", "fc")
_MAX_DIM = 1 << 31  # any single dimension or spec integer


def is_int(v: Any, lo: int = 0, hi: int = _MAX_DIM) -> bool:
    """v is an int (not a bool) in [lo, hi]: a dimension or spec integer as JSON holds it."""
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_NAME = (True, lambda v: isinstance(v, str) and v != "", "a non-empty string")
_POS, _NONNEG = (lambda v: is_int(v, 1), "a positive integer"), (lambda v: is_int(v, 0), "a non-negative integer")
_NUM = (lambda v: _is_num(v), "a number")

# What the engine reads from each layer type: key -> (required, check, description); absent keys take
# the defaults of :data:`DEFAULTS`.
FIELDS: dict[str, dict[str, tuple[bool, Callable[[Any], bool], str]]] = {
    "conv": {"name": _NAME, "out": (True, *_POS), "kernel": (True, *_POS), "stride": (False, *_POS),
             "padding": (False, *_NONNEG), "groups": (False, *_POS)},
    "fc": {"name": _NAME, "out": (True, *_POS)},
    "maxpool": {"kernel": (True, *_POS), "stride": (True, *_POS),
                "ceil": (False, lambda v: isinstance(v, bool), "true or false")},
    "lrn": {"size": (False, *_POS), "alpha": (False, *_NUM), "beta": (False, *_NUM), "k": (False, *_NUM)},
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "conv": {"stride": 1, "padding": 0, "groups": 1},
    "maxpool": {"ceil": False},
    "lrn": {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0},
}


def check_fields(L: Any, i: int) -> None:
    """Raise ValueError unless spec layer i has a known type and well-typed fields."""
    if not isinstance(L, dict):
        raise ValueError(f"spec layer {i} must be an object, got {type(L).__name__}")
    t = L.get("type")
    if t not in LAYER_TYPES:
        raise ValueError(f"spec layer {i}: unknown layer type {t!r} (known: {', '.join(LAYER_TYPES)})")
    for key, (required, ok, desc) in FIELDS.get(t, {}).items():
        if key not in L:
            if required:
                raise ValueError(f"spec layer {i} ({t}) lacks {key!r}")
        elif not ok(L[key]):
            raise ValueError(f"spec layer {i} ({t}): {key} must be {desc}, got {L[key]!r}")


def validate_spec(spec: list[dict]) -> None:
    """Known layer types and unique names for the conv/fc layers (the engine's minimum)."""
    names = set()
    for i, L in enumerate(spec):
        if not isinstance(L, dict) or L.get("type") not in LAYER_TYPES:
            raise ValueError(f"layer {i}: unknown layer type {L.get('type') if isinstance(L, dict) else L!r}")
        if L["type"] in PARAM_TYPES:
            name = L.get("name")
            if not isinstance(name, str) or not name or name in names:
                raise ValueError(f"layer {i}: conv/fc layers need a unique name, got {name!r}")
            names.add(name)


def _get(L: dict, key: str) -> Any:
    return L.get(key, DEFAULTS[L["type"]][key])


def pool_size(size: int, kernel: int, stride: int, ceil: bool) -> int:
    """Output length of a max-pool without padding; ``ceil`` keeps a last partial window (Caffe)."""
    v = (size - kernel) / stride
    out = (math.ceil(v) if ceil else math.floor(v)) + 1
    if ceil and (out - 1) * stride >= size:  # Caffe/torch: the last window must start inside the map
        out -= 1
    return max(out, 1)


def output_shapes(spec: list[dict], input_shape: tuple[int, int, int]) -> list[tuple[int, ...]]:
    """The output shape (without the batch axis) of every layer of a spec."""
    shape: tuple[int, ...] = tuple(input_shape)
    out = []
    for L in spec:
        t = L["type"]
        if t == "conv":
            C, H, W = shape
            k, s, p = L["kernel"], _get(L, "stride"), _get(L, "padding")
            shape = (L["out"], (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1)
            if min(shape[1:]) < 1:
                raise ValueError(f"layer {L['name']}: a {k}x{k} kernel does not fit a {H}x{W} map")
        elif t == "maxpool":
            C, H, W = shape
            ceil = _get(L, "ceil")
            shape = (C, pool_size(H, L["kernel"], L["stride"], ceil), pool_size(W, L["kernel"], L["stride"], ceil))
        elif t == "flatten":
            shape = (math.prod(shape),)
        elif t == "fc":
            shape = (L["out"],)
        out.append(shape)
    return out


def split_dim(L: dict, in_shape: tuple[int, ...]) -> int:
    """Length of the vectors a conv/fc layer's sub-spaces split: input channels per group, or input features."""
    return in_shape[0] // _get(L, "groups") if L["type"] == "conv" else math.prod(in_shape)


def n_vectors(L: dict) -> int:
    """Sub-vectors per sub-space that k-means clusters: one per output (and per tap, for a conv)."""
    return L["out"] * (L["kernel"] ** 2 if L["type"] == "conv" else 1)


def param_shapes(L: dict, in_shape: tuple[int, ...], sub_dim: int | None = None,
                 n_codewords: int | None = None) -> dict[str, tuple[int, ...]]:
    """Array shapes of conv/fc layer L on input ``in_shape``: dense (weight, bias), or quantized
    (codebooks (M, K, d), codes, bias) given ``sub_dim`` d and ``n_codewords`` K.

    Raises ValueError where the layer cannot have such arrays (groups that do not divide
    the channels, a d that does not divide its vectors).
    """
    out = L["out"]
    if L["type"] == "conv":
        g, k = _get(L, "groups"), L["kernel"]
        if in_shape[0] % g or out % g:
            raise ValueError(f"layer {L['name']!r}: groups={g} does not divide {in_shape[0]} input and {out} output channels")
    n = split_dim(L, in_shape)
    if sub_dim is None:
        weight = (out, n, k, k) if L["type"] == "conv" else (out, n)
        return {"weight": weight, "bias": (out,)}
    if n % sub_dim:
        what = "input channels per group" if L["type"] == "conv" else "input features"
        raise ValueError(f"layer {L['name']!r}: codebooks of d={sub_dim} do not cover its {n} {what}")
    M = n // sub_dim
    codes = (out, k, k, M) if L["type"] == "conv" else (out, M)
    return {"codebooks": (M, n_codewords, sub_dim), "codes": codes, "bias": (out,)}
