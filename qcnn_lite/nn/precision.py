"""Table precision of the quantized layers, and the accuracy guard that chooses it.

A quantized layer's look-up tables can be float32 or narrower (``QLinear``: 8-bit
tables for the byte-shuffle kernels; ``QConv2d``: int16/int8 where the layer class
offers them). Each class lists its precisions fastest first in ``TABLE_DTYPES``; a
class without that list is treated as float32-only unless it has a ``table_dtype``
attribute (today's ``QLinear``: uint8, then float32).

:func:`guard_tables` is the accuracy guard: on calibration images it switches one
layer at a time from float32 tables to its fastest precision, all other layers on
float32, and measures the top-1 change. A layer that loses more than the threshold
falls back to its next precision, and so on down to float32. Layer by layer (not
greedily): the changes are small and nearly additive (the numpy emulation), and one
pass over the images tests every layer at once, from activations of the float
prefix computed once per batch.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # duck-typed at run time: the model file's checks import this module, not the engine
    from qcnn_lite.nn.engine import Network

__all__ = ["FLOAT", "class_table_dtypes", "table_dtypes", "table_dtype", "set_table_dtype", "with_table_dtypes"]

FLOAT = "float32"


def class_table_dtypes(cls: type) -> tuple[str, ...]:
    """The table precisions a quantized layer class offers, fastest first; ("float32",) if it has no choice."""
    declared = getattr(cls, "TABLE_DTYPES", None)
    if declared is not None:
        return tuple(declared)
    if hasattr(cls, "table_dtype"):  # QLinear before TABLE_DTYPES: 8-bit byte-shuffle tables or float
        return ("uint8", FLOAT)
    return (FLOAT,)


def _declared(layer: Any) -> tuple[str, ...]:
    return class_table_dtypes(type(layer))


def table_dtypes(layer: Any) -> tuple[str, ...]:
    """The table precisions this layer accepts, fastest first (float32 always last).

    A precision the class offers but this layer cannot take (8-bit fc tables at K > 256)
    is left out: the layer's own setter decides.
    """
    if not hasattr(layer, "codebooks"):
        return ()  # a dense layer has no tables
    out = []
    for d in _declared(layer):
        if d == FLOAT:
            continue
        try:
            set_table_dtype(copy.copy(layer), d)
        except ValueError:
            continue
        out.append(d)
    return (*out, FLOAT)


def table_dtype(layer: Any) -> str | None:
    """The layer's table precision; None for a dense layer."""
    if not hasattr(layer, "codebooks"):
        return None
    return getattr(layer, "table_dtype", FLOAT)


def set_table_dtype(layer: Any, dtype: str) -> None:
    """Set the table precision in place; ValueError (naming the precisions) if the layer cannot take it."""
    if not isinstance(dtype, str):
        raise ValueError(f"table precision must be a string, got {dtype!r}")
    if hasattr(layer, "table_dtype"):
        known = _declared(layer)
        if dtype not in known:
            raise ValueError(f"{type(layer).__name__} table_dtype must be one of {', '.join(known)}, got {dtype!r}")
        layer.table_dtype = dtype  # the layer's setter checks what depends on its shape (K)
    elif dtype != FLOAT:
        raise ValueError(f"{type(layer).__name__} has float32 tables only, got table_dtype {dtype!r}")


def with_table_dtypes(net: "Network", choice: str | dict[str, str]) -> "Network":
    """A copy of ``net`` whose quantized layers use the given table precision.

    ``choice``: one precision for every quantized layer (``"float32"``, or ``"default"``
    for each layer's fastest), or a dict layer name -> precision (other layers unchanged).
    Layers are shallow copies: codebooks and codes stay shared, ``net`` is untouched.
    """
    out = net.copy()
    for name, layer in net.params.items():
        if not hasattr(layer, "codebooks"):
            continue
        want = choice.get(name) if isinstance(choice, dict) else choice
        if want is None:
            continue
        if want == "default":
            want = table_dtypes(layer)[0]
        c = copy.copy(layer)
        set_table_dtype(c, want)
        out.params[name] = c
    return out


