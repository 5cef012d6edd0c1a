"""The settings explorer's model: per-group (C's, K) in, storage, speed-up, time and top-1 out.

Notebook ``08_explorer`` wires sliders to :class:`Explorer` (see :mod:`qcnn_lite.apps.explorer_ui`).
Layers are grouped (by default: the conv layers, the hidden fc layers, the classifier), and every
group gets one setting. Each quantized layer is cached by ``(layer, C's, K, corrected)``, so
moving a slider back and forth quantizes nothing twice.

Quantization here is **layer-wise**: each layer is quantized on its own, plain product
quantization by default (fast enough to drag a slider), or with error correction on the
*dense* network's inputs to that layer (``compensate=False`` in :func:`qcnn_lite.quantize_network`
terms), so that a corrected layer does not depend on the settings of the layers before it
and can be cached alone. Storage and speed-up come from :mod:`qcnn_lite.paper.cost`, exactly.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from qcnn_lite.paper import cost
from qcnn_lite.nn.accuracy import network_errors
from qcnn_lite.nn.engine import Network
from qcnn_lite.nn.layers import Conv2d, Linear
from qcnn_lite.quant.quantize import layer_settings
from qcnn_lite.quant.quantize import quantize_conv2d, quantize_linear

__all__ = ["Explorer", "Readout", "default_groups", "pareto_front", "pareto_points", "searched_rows", "parse_settings"]

CONV_SUB_DIMS = (1, 2, 4, 8, 16)
FC_SUB_DIMS = (1, 2, 4, 8, 16, 32)
CODEWORDS = (4, 8, 16, 32, 64, 128, 256)


def default_groups(net: Network) -> dict[str, list[str]]:
    """``{"conv": [...], "fc": [hidden fc layers], "classifier": [last fc]}``, empty groups dropped."""
    conv = [L["name"] for _, L in net.param_layers() if L["type"] == "conv"]
    fc = [L["name"] for _, L in net.param_layers() if L["type"] == "fc"]
    groups = {"conv": conv, "fc": fc[:-1], "classifier": fc[-1:]}
    return {g: names for g, names in groups.items() if names}


@dataclass(frozen=True)
class Readout:
    """What the explorer shows for one choice of settings."""

    settings: dict[str, tuple[int, int]]  # per layer, as quantized (C's narrowed to fit, see layer_settings)
    storage_mib: float  # cost model, Q-CNN
    dense_mib: float
    compression: float
    speedup: float  # cost model: dense multiply-adds / Q-CNN operations
    ms_per_image: float  # measured, median
    dense_ms_per_image: float
    top1: float  # percent, on the explorer's fixed test subset
    dense_top1: float
    corrected: bool


class Explorer:
    """Quantize ``net`` by layer group and measure the result.

    Parameters
    ----------
    net : a dense mini network
    images, labels : (n, C, H, W) float32 preprocessed test images and (n,) labels: the fixed top-1 subset
    calib : (m, C, H, W) calibration images, needed only for error correction
    groups : group name -> layer names (default :func:`default_groups`)
    n_iter : error-correction sweeps per layer
    time_batch, time_repeats : images per timed forward pass, and passes (the median is shown)
    """

    def __init__(self, net: Network, images: np.ndarray, labels: np.ndarray, calib: np.ndarray | None = None,
                 groups: Mapping[str, Sequence[str]] | None = None, n_iter: int = 2, seed: int = 0,
                 time_batch: int = 8, time_repeats: int = 3):
        for p in net.params.values():
            if not isinstance(p, (Conv2d, Linear)):
                raise ValueError("the explorer quantizes a dense network: this one is already quantized")
        self.net = net
        self.images = np.ascontiguousarray(images, dtype=np.float32)
        self.labels = np.asarray(labels)
        if len(self.images) != len(self.labels) or len(self.images) == 0:
            raise ValueError(f"images and labels must be non-empty and match, got {len(self.images)} and {len(self.labels)}")
        self.calib = None if calib is None else np.ascontiguousarray(calib, dtype=np.float32)
        self.groups = {g: list(v) for g, v in (groups or default_groups(net)).items()}
        known = {L["name"] for _, L in net.param_layers()}
        for g, names in self.groups.items():
            if not set(names) <= known:
                raise ValueError(f"group {g!r} names layers {sorted(set(names) - known)} that {net.name} does not have")
        self.n_iter, self.seed = int(n_iter), int(seed)
        self.time_batch, self.time_repeats = int(time_batch), int(time_repeats)
        self._cache: dict[tuple[str, int, int, bool], object] = {}
        self._calib_io: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        self._dense_top1 = self._top1(net)
        self._dense_ms = self._time(net)

    # -- settings ----------------------------------------------------------
    def layer_plan(self, group_settings: Mapping[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        """Group settings -> per-layer (C's, K), validated and narrowed as the quantizer does."""
        unknown = set(group_settings) - set(self.groups)
        if unknown:
            raise ValueError(f"unknown layer groups {sorted(unknown)}; groups are {sorted(self.groups)}")
        missing = set(self.groups) - set(group_settings)
        if missing:
            raise ValueError(f"no setting for layer groups {sorted(missing)}")
        per_layer = {name: tuple(group_settings[g]) for g, names in self.groups.items() for name in names}
        # ungrouped layers stay dense: give them a placeholder that always fits, then drop them
        plan = layer_settings(self.net, {"conv": (1, 1), "fc": (1, 1), **per_layer})
        return {name: plan[name] for name in per_layer}

    def cost(self, group_settings: Mapping[str, tuple[int, int]]) -> dict[str, float]:
        """The cost model's totals for these settings, ungrouped layers counted dense.

        With every layer grouped (the default) this is :func:`qcnn_lite.paper.cost.network_cost` of the plan.
        """
        plan = self.layer_plan(group_settings)
        layers = cost.layer_costs(self.net.input_shape, self.net.spec, {"conv": (1, 1), "fc": (1, 1), **plan})
        cf = sum(c.cnn_flops for c in layers)
        qf = sum(c.qcnn_flops if c.name in plan else c.cnn_flops for c in layers)
        cb = sum(c.cnn_bytes for c in layers)
        qb = sum(c.qcnn_bytes if c.name in plan else c.cnn_bytes for c in layers)
        return {"cnn_flops": cf, "qcnn_flops": qf, "cnn_mib": cb / cost.MiB, "qcnn_mib": qb / cost.MiB,
                "speedup": cf / qf, "compression": cb / qb}

    # -- quantization, cached ----------------------------------------------
    def _io(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each layer's dense inputs and outputs on the calibration images (computed once)."""
        if self._calib_io is None:
            if self.calib is None or len(self.calib) == 0:
                raise ValueError("error correction needs calibration images: pass calib=")
            io, x = {}, self.calib
            for i, L in enumerate(self.net.spec):
                y = self.net.forward(x, start=i, stop=i + 1)
                if L["type"] in ("conv", "fc"):
                    io[L["name"]] = (x.reshape(len(x), -1) if L["type"] == "fc" else x, y)
                x = y
            self._calib_io = io
        return self._calib_io

    def layer(self, name: str, sub_dim: int, n_codewords: int, corrected: bool = False):
        """The quantized layer ``name`` at (C's, K), plain or error-corrected, from the cache if it is there."""
        key = (name, int(sub_dim), int(n_codewords), bool(corrected))
        if key not in self._cache:
            dense = self.net.params[name]
            kw: dict = dict(sub_dim=int(sub_dim), n_codewords=int(n_codewords), seed=self.seed)
            if corrected:
                S, T = self._io()[name]
                kw.update(calib=S, targets=T, n_iter=self.n_iter)
            if isinstance(dense, Conv2d):
                self._cache[key] = quantize_conv2d(dense.weight, dense.bias, dense.stride, dense.padding,
                                                      dense.groups, **kw)
            else:
                self._cache[key] = quantize_linear(dense.weight, dense.bias, **kw)
        return self._cache[key]

    @property
    def cached(self) -> int:
        """Number of quantized layers in the cache."""
        return len(self._cache)

    def network(self, group_settings: Mapping[str, tuple[int, int]], corrected: bool = False) -> Network:
        """A copy of the network with every grouped layer quantized (others stay dense)."""
        q = self.net.copy()
        for name, (d, k) in self.layer_plan(group_settings).items():
            q.params[name] = self.layer(name, d, k, corrected)
        return q

    # -- measurements --------------------------------------------------------
    def _top1(self, net: Network, batch: int = 500) -> float:
        """Top-1 accuracy in percent on the explorer's test subset (the one accuracy loop)."""
        return 100.0 - network_errors(net, self.images, self.labels, batch, ks=(1,))[1]

    def _time(self, net: Network) -> float:
        x = self.images[: self.time_batch]
        net.forward(x)  # warm-up: packs codes, decodes weights
        times = []
        for _ in range(max(1, self.time_repeats)):
            t0 = time.perf_counter()
            net.forward(x)
            times.append(time.perf_counter() - t0)
        return 1e3 * float(np.median(times)) / len(x)

    def readout(self, group_settings: Mapping[str, tuple[int, int]], corrected: bool = False) -> Readout:
        """Quantize (from the cache where possible), then measure: everything the explorer displays."""
        plan = self.layer_plan(group_settings)
        c = self.cost(group_settings)
        q = self.network(group_settings, corrected)
        return Readout(settings=plan, storage_mib=c["qcnn_mib"], dense_mib=c["cnn_mib"], compression=c["compression"],
                       speedup=c["speedup"], ms_per_image=self._time(q), dense_ms_per_image=self._dense_ms,
                       top1=self._top1(q), dense_top1=self._dense_top1, corrected=bool(corrected))


def pareto_front(rows: Sequence[dict], maximize: str = "compression", minimize: str = "top1_err") -> list[dict]:
    """The rows no other row beats: none has ``maximize`` >= and ``minimize`` <=, one of them strictly.

    Rows missing either value (None) are left out; the front comes sorted by ``maximize``. Equal
    points are all kept.
    """
    pts = [r for r in rows if r.get(maximize) is not None and r.get(minimize) is not None]
    ordered = sorted(pts, key=lambda r: (-float(r[maximize]), float(r[minimize])))
    front, best = [], float("inf")
    for r in ordered:  # by falling `maximize`: a row is on the front iff its `minimize` beats all rows before
        m = float(r[minimize])
        if m < best or (front and m == float(front[-1][minimize]) and float(r[maximize]) == float(front[-1][maximize])):
            front.append(r)
            best = min(best, m)
    return sorted(front, key=lambda r: float(r[maximize]))


def searched_rows(network: str, results_dir: str | Path) -> list[dict]:
    """Rows of ``results/table1_searched.json`` for ``network`` with compression, speed-up and top-1
    error (unreachable targets and the dense row left out); ``[]`` when the search has not been run."""
    path = Path(results_dir) / "table1_searched.json"
    if not path.is_file():
        return []
    rows = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a list of rows")
    return [r for r in rows if isinstance(r, dict) and r.get("network") == network and r.get("method") != "dense"
            and all(r.get(k) is not None for k in ("compression", "speedup", "top1_err"))]


def pareto_points(network: str, results_dir: str | Path) -> list[dict]:
    """The Pareto front (compression up, top-1 error down) of the settings search for ``network``
    (``results/table1_searched.json``), sorted by compression; ``[]`` when the search has not been run."""
    return pareto_front(searched_rows(network, results_dir))


def parse_settings(text: str) -> dict[str, tuple[int, int]]:
    """``"conv1 1x64 conv2 2x64"`` (a searched row's ``settings``) -> ``{"conv1": (1, 64), "conv2": (2, 64)}``."""
    parts = text.split()
    if len(parts) % 2:
        raise ValueError(f"settings must be pairs of layer and C'sxK: {text!r}")
    out = {}
    for name, dk in zip(parts[::2], parts[1::2]):
        d, k = dk.split("x")
        out[name] = (int(d), int(k))
    return out
