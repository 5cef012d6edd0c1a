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
greedily): the changes are small and nearly additive (issue 13's emulation), and one
pass over the images tests every layer at once, from activations of the float
prefix computed once per batch.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

if TYPE_CHECKING:  # duck-typed at run time: the model file's checks import this module, not the engine
    from .engine import Network

__all__ = ["FLOAT", "class_table_dtypes", "table_dtypes", "table_dtype", "set_table_dtype", "with_table_dtypes", "guard_tables"]

FLOAT = "float32"
DEFAULT_THRESHOLD = 0.2  # top-1 points a layer may lose to its low-precision tables
DEFAULT_IMAGES = 1000  # the mini nets take ~1 ms/image; 0.2 pt is then 2 images


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


# --------------------------------------------------------------------------- the guard
def _hits(scores: np.ndarray, labels: np.ndarray) -> int:
    return int((np.argmax(scores.reshape(len(scores), -1), axis=1) == labels).sum())


def _switched(net: "Network", name: str, dtype: str) -> "Network":
    return with_table_dtypes(net, {name: dtype})


def _pass(ref: "Network", trials: dict[str, str], images: np.ndarray, labels: np.ndarray | None,
          batch_size: int) -> tuple[int, dict[str, int], int]:
    """Correct top-1 counts of ``ref`` and of ref with each layer of ``trials`` switched alone.

    Without ``labels`` the float network's own predictions are the labels: the count
    then measures how many predictions a switch flips (never less than the accuracy it costs).
    """
    index = {L["name"]: i for i, L in ref.param_layers()}
    nets = {name: _switched(ref, name, d) for name, d in trials.items()}
    starts = sorted({index[n] for n in trials})
    base, hits, n = 0, dict.fromkeys(trials, 0), 0
    for j in range(0, len(images), batch_size):
        x = np.array(images[j : j + batch_size], dtype=np.float32)
        acts: dict[int, np.ndarray] = {}
        h = x
        prev = 0
        for s in starts:  # the float prefix once, keeping each trial layer's input
            h = ref.forward(h, prev, s) if s > prev else h
            acts[s], prev = h, s
        out = ref.forward(h, prev) if prev else ref.forward(x)
        y = np.argmax(out.reshape(len(out), -1), axis=1) if labels is None else np.asarray(labels[j : j + batch_size])
        base += _hits(out, y)
        for name, qn in nets.items():
            i = index[name]
            hits[name] += _hits(qn.forward(acts[i], i) if i else qn.forward(x), y)
        n += len(x)
    return base, hits, n


def guard_tables(net: "Network", images: np.ndarray, labels: np.ndarray | None = None,
                 threshold: float = DEFAULT_THRESHOLD, batch_size: int = 250,
                 layers: Iterable[str] | None = None) -> dict[str, Any]:
    """Choose each quantized layer's table precision from its measured top-1 cost; sets it in place.

    images (n, C, H, W) network input; labels (n,) or None (then: changes against the
    float network's own top-1). Each layer starts at its fastest precision; one that
    loses more than ``threshold`` top-1 points (switched alone, the others on float32)
    tries the next, down to float32, which needs no test. Returns a JSON-able report:
    threshold, images, per layer the chosen precision and the change (pt, positive = worse)
    of every precision tried, and the top-1 error of float tables and of the choice.
    """
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"the accuracy threshold must be a non-negative number of points, got {threshold!r}")
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != net.input_shape or len(images) == 0:
        raise ValueError(f"guard images must be (n>0, {', '.join(map(str, net.input_shape))}), got {images.shape}")
    if labels is not None and np.shape(labels) != (len(images),):
        raise ValueError(f"guard labels must be ({len(images)},), got {np.shape(labels)}")
    names = [L["name"] for _, L in net.param_layers()]
    wanted = names if layers is None else list(layers)
    unknown = set(wanted) - set(names)
    if unknown:
        raise ValueError(f"{net.name} has no layers {', '.join(sorted(unknown))}")
    options = {n: table_dtypes(net.params[n]) for n in wanted}
    options = {n: o for n, o in options.items() if o}  # dense layers have no tables
    ref = with_table_dtypes(net, FLOAT)
    report: dict[str, dict[str, Any]] = {n: {"tried": {}} for n in options}
    chosen = {n: FLOAT for n in options}
    pending = {n: list(o[:-1]) for n, o in options.items()}  # precisions still to try, fastest first
    base_err = None
    while any(pending.values()):
        trials = {n: p.pop(0) for n, p in pending.items() if p}
        base, hits, n_img = _pass(ref, trials, images, labels, batch_size)
        base_err = 100.0 * (1 - base / n_img)
        for name, d in trials.items():
            change = 100.0 * (base - hits[name]) / n_img
            report[name]["tried"][d] = round(change, 3)
            if change <= threshold:
                chosen[name] = d
                pending[name] = []
    for name, d in chosen.items():
        set_table_dtype(net.params[name], d)
        report[name]["table_dtype"] = d
    result: dict[str, Any] = {"threshold": float(threshold), "n_images": int(len(images)), "labels": labels is not None,
                              "layers": report}
    if base_err is not None:
        result["float_top1_err"] = round(base_err, 3)
    return result
