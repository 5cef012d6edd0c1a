"""The accuracy guard: each layer takes its fastest table precision unless that costs top-1.

On calibration images it switches one layer at a time to its fastest precision and
falls back past a threshold of top-1 points (labels given) or of agreement with the
float tables (no labels).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from qcnn_lite.nn.accuracy import topk_hits
from qcnn_lite.nn.precision import FLOAT, set_table_dtype, table_dtypes, with_table_dtypes

if TYPE_CHECKING:
    from qcnn_lite.nn.engine import Network


DEFAULT_THRESHOLD = 0.2  # top-1 points a layer may lose to its low-precision tables


DEFAULT_IMAGES = 1000  # the mini nets take ~1 ms/image; 0.2 pt is then 2 images


# --------------------------------------------------------------------------- the guard
def _hits(scores: np.ndarray, labels: np.ndarray) -> int:
    return topk_hits(scores.reshape(len(scores), -1), labels, (1,))[1]


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
