"""Run a settings search on a network: sensitivity, allocation, whole-network checks, cached.

    python -m qcnn_lite search --arch mini-alexnet --target compression=20,speedup=1.5
    python -m qcnn_lite search --arch mini-cnns --target max-loss=1.0

Splits (all from the Fashion-MNIST *training* set, seeded; the test set is never
looked at while choosing): ``heldout`` (default 2000 images) ranks candidates
and checks whole networks; ``calib`` (5000 others) feeds error correction; the
rest trains the codebooks in ``ec+ft`` (:mod:`qcnn_lite.quant.finetune`).

A check quantizes the whole network with error correction (as Table 1 does) and
measures top-1 on the held-out split. Everything is cached in ``results/cache/``
under a key of the model file's hash, the settings, the split and the seed, so a
second run only re-does the cheap parts (the allocation itself, < 1 s).
``COUNTS`` counts the work that did run (the tests read it).
"""
from __future__ import annotations

import collections
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from qcnn_lite.io import datasets as data, modelfile, paths, progress
from qcnn_lite.nn import models
from qcnn_lite.paper.cost import network_cost
from qcnn_lite.nn.engine import Network
from qcnn_lite.io.cache import cached, sha256_array, sha256_file
from qcnn_lite.nn.accuracy import evaluate_network
from qcnn_lite.quant.quantize import _one_blas_thread, layer_settings, quantize_network
from qcnn_lite.quant.search import (K_GRID, MAX_SUB_DIM, Target, allocate_two, candidate_costs, candidate_grid,
                                    check_reachable, layer_sensitivity, parse_target, prune_grid)

__all__ = ["Problem", "problem_for_arch", "search", "search_arch", "quantized", "COUNTS", "SEARCH_VERSION"]

SEARCH_VERSION = 1  # part of every cache key: bump when the search changes its results
COUNTS: collections.Counter = collections.Counter()
# Candidates are pruned to those that fit a network of this compression (or the target's, if lower):
# on the mini networks this drops fc6/fc7 at K=256 (a 4-byte x 768 x K codebook alone), whose k-means
# takes 5-23 s per candidate, and it cannot change any allocation at >= 8x.
MIN_COMPRESSION = 8.0
N_SENSITIVITY = 500  # held-out images that rank candidates (the first of the split); checks use all
# max-loss targets step along this ladder of compressions (binary search), so their checks are
# shared with the compression=15/20/30 rows of the table
LADDER = (4, 5, 6, 8, 10, 12, 15, 17.5, 20, 22.5, 25, 27.5, 30, 33, 36, 40, 45, 50, 55, 60, 70, 80)


@dataclass
class Problem:
    """A network and its splits: heldout (n, C, H, W) + labels, calib (n, C, H, W), and cache keys."""

    net: Network
    heldout_x: np.ndarray
    heldout_y: np.ndarray
    calib_x: np.ndarray
    model_key: str
    split_key: str
    cache_dir: Path
    seed: int = 0
    train_idx: np.ndarray | None = None  # the training images left for fine-tuning

    def key(self, **extra: Any) -> dict[str, Any]:
        return {"model": self.model_key, "split": self.split_key, "seed": self.seed, "version": SEARCH_VERSION, **extra}


def _splits(n_train: int, n_heldout: int, n_calib: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not 100 <= n_heldout <= n_train // 4 or not 1 <= n_calib <= n_train // 4:
        raise ValueError(f"n_heldout must be in [100, {n_train // 4}] and n_calib in [1, {n_train // 4}], "
                         f"got {n_heldout}, {n_calib}")
    perm = np.random.default_rng(seed + 15).permutation(n_train)
    return np.sort(perm[:n_heldout]), np.sort(perm[n_heldout : n_heldout + n_calib]), np.sort(perm[n_heldout:])


def problem_for_arch(arch: str, n_heldout: int = 2000, n_calib: int = 5000, seed: int = 0,
                     cache_dir: str | Path | None = None) -> Problem:
    """The committed reference model of ``arch`` with seeded splits of the Fashion-MNIST training set."""
    if arch not in models.SPECS:
        raise ValueError(f"unknown architecture {arch!r}: choose one of {', '.join(n for n in models.SPECS if n.startswith('mini-'))}")
    path = paths.model_file(arch)
    net = modelfile.load(path)
    if net.is_quantized:
        raise ValueError(f"{path} is already quantized: the search needs the dense network")
    train_x, train_y = data.load_fashion_mnist("train")
    held, calib, rest = _splits(len(train_x), n_heldout, n_calib, seed)
    mean, std = data.normalisation(net.meta)
    return Problem(net, data.to_input(train_x[held], mean, std), np.asarray(train_y[held], np.int64),
                   data.to_input(train_x[calib], mean, std), sha256_file(path),
                   hashlib.sha256((sha256_array(held) + sha256_array(calib)).encode()).hexdigest()[:32],
                   Path(cache_dir or paths.results_dir() / "cache"), seed, rest)


# -- cached steps -------------------------------------------------------------------
def sensitivities(pb: Problem, grid: Mapping[str, list], show_progress: bool = True) -> dict[str, dict[str, Any]]:
    """:func:`qcnn_lite.quant.search.layer_sensitivity` per layer, each cached on its own."""
    out = {}
    total = sum(len(v) + 1 for v in grid.values())
    with progress.bar(total=total, desc=f"sensitivity {pb.net.name}", enabled=show_progress) as bar:
        for _, L in pb.net.param_layers():
            name = L["name"]

            def work(name=name):
                COUNTS["sensitivity"] += 1
                with _one_blas_thread():
                    return layer_sensitivity(pb.net, pb.heldout_x[:N_SENSITIVITY], grid, pb.seed, [name],
                                             on_candidate=bar.update)[name]

            out[name] = cached(pb.cache_dir, pb.key(step="sensitivity", layer=name, n=N_SENSITIVITY,
                                                     grid=[list(c) for c in grid[name]]), work)
            bar.n = sum(len(grid[k]) + 1 for k in out)
            bar.set_postfix_str(name)
    return out


def dense_heldout(pb: Problem) -> dict[str, float]:
    return cached(pb.cache_dir, pb.key(step="dense"), lambda: evaluate_network(pb.net, pb.heldout_x, pb.heldout_y))


_NETS: dict[str, Network] = {}


def settings_key(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps({k: list(v) for k, v in sorted(settings.items())}).encode()).hexdigest()[:24]


def float_tables(net: Network) -> Network:
    """``net`` with float look-up tables in every quantized layer, in place.

    The search compares (C's, K) settings, so it scores them with exact tables, as its
    cached results (SEARCH_VERSION 1) were: the 8-bit table precision is a later,
    separate choice (the accuracy guard of ``quantize``), within 0.2 pt of these.
    """
    for layer in net.params.values():
        if hasattr(layer, "table_dtype"):
            layer.table_dtype = "float32"
    return net


def quantized(pb: Problem, settings: Mapping[str, Any], show_progress: bool = True) -> Network:
    """The error-corrected network for ``settings`` (memory, then ``cache/models/``, then quantized and saved),
    with float tables (:func:`float_tables`)."""
    key = settings_key(settings) + pb.model_key[:8] + pb.split_key[:8] + str(pb.seed)
    if key in _NETS:
        return _NETS[key]
    path = pb.cache_dir / "models" / f"search-{key}.qcnn"
    if path.exists():
        try:
            _NETS[key] = float_tables(modelfile.load(path))
            return _NETS[key]
        except ValueError:
            pass  # a damaged cached model is rebuilt
    COUNTS["quantize"] += 1
    q = quantize_network(pb.net, pb.calib_x, settings, error_correction=True, seed=pb.seed, show_progress=show_progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    modelfile.save(q, path, overwrite=True)  # our own cache file
    _NETS[key] = float_tables(q)
    return q


def check(pb: Problem, settings: Mapping[str, Any], show_progress: bool = True) -> dict[str, Any]:
    """Whole-network check on the held-out split: top-1/top-5 error and change against dense."""
    settings = {k: list(v) for k, v in settings.items()}

    def work():
        COUNTS["check"] += 1
        t0 = time.perf_counter()
        q = quantized(pb, settings, show_progress)
        r = evaluate_network(q, pb.heldout_x, pb.heldout_y)
        return {**r, "seconds": round(time.perf_counter() - t0, 1)}

    r = cached(pb.cache_dir, pb.key(step="check", settings=settings), work)
    dense = dense_heldout(pb)
    return {**r, "top1_change": round(r["top1_err"] - dense["top1_err"], 2),
            "top5_change": round(r["top5_err"] - dense["top5_err"], 2)}


# -- the search ---------------------------------------------------------------------
def _choose(pb: Problem, grid, costs, curves, compression: float | None, speedup: float | None) -> dict[str, tuple[int, int]] | None:
    names = list(grid)
    bits_total = sum(int(c["cnn_bits"]) for c in costs.values())
    flops_total = sum(int(c["cnn_flops"]) for c in costs.values())
    ch = allocate_two([curves[k] for k in names], [costs[k]["bits"] for k in names], [costs[k]["flops"] for k in names],
                      None if compression is None else math.floor(bits_total / compression),
                      None if speedup is None else math.floor(flops_total / speedup))
    return None if ch is None else {k: tuple(grid[k][j]) for k, j in zip(names, ch)}


def search(pb: Problem, target: str | Target, k_grid=K_GRID, max_sub_dim: int = MAX_SUB_DIM, max_checks: int = 5,
           margin: float = 0.2, show_progress: bool = True) -> dict[str, Any]:
    """Search settings for ``target`` (see :class:`qcnn_lite.quant.search.Target`); returns a JSON-able record:
    ``settings`` (quantize_network accepts it), ``predicted`` (cost model, summed sensitivity),
    ``measured`` (held-out top-1/top-5, model-file compression) and the ``checks`` made.

    A max-loss target accepts a check whose held-out loss is at most ``max_loss - margin``:
    the held-out images are training images, which the reference network has seen.
    """
    target = parse_target(target)
    t0 = time.perf_counter()
    grid = candidate_grid(pb.net, k_grid, max_sub_dim)
    costs = candidate_costs(pb.net, grid)
    check_reachable(costs, target)  # before any work
    if target.compression is not None and target.speedup is not None:
        if _choose(pb, grid, costs, {k: c["flops"].astype(float) for k, c in costs.items()}, target.compression, target.speedup) is None:
            raise ValueError(f"compression={target.compression:g} and speedup={target.speedup:g} are not reachable together")
    dense_bits = sum(int(c["cnn_bits"]) for c in costs.values())
    grid, costs = prune_grid(grid, costs, math.floor(dense_bits / min(MIN_COMPRESSION, target.compression or MIN_COMPRESSION)))
    sens = sensitivities(pb, grid, show_progress)
    curves = {k: np.asarray(s["plain"]) * s["ec_ratio"] for k, s in sens.items()}
    checks: list[dict[str, Any]] = []

    def trial(compression: float | None) -> dict[str, Any] | None:
        st = _choose(pb, grid, costs, curves, compression, target.speedup)
        if st is None:
            return None
        c = network_cost(pb.net.input_shape, pb.net.spec, st)
        r = check(pb, st, show_progress)
        rec = {"settings": st, "compression": round(c["compression"], 2), "speedup": round(c["speedup"], 2),
               "heldout": r, "asked_compression": compression}
        checks.append(rec)
        return rec

    best = trial(target.compression) if target.max_loss is None else _ladder(target, trial, costs, dense_bits,
                                                                              max_checks, margin, checks)
    st = best["settings"]
    layer_settings(pb.net, st)  # the settings must load through quantize
    cost = network_cost(pb.net.input_shape, pb.net.spec, st)
    q = quantized(pb, st, show_progress)
    pred = sum(float(curves[k][grid[k].index(tuple(v))]) for k, v in st.items())
    return {
        "network": pb.net.name, "target": target.slug(),
        "settings": {k: list(v) for k, v in st.items()},
        "predicted": {"compression": round(cost["compression"], 3), "speedup": round(cost["speedup"], 3),
                      "kl_sum": round(pred, 5), "qcnn_mib": round(cost["qcnn_mib"], 4)},
        "measured": {"compression_file": round(_file_bytes(pb, pb.net) / _file_bytes(pb, q), 3),
                     "heldout_dense_top1_err": dense_heldout(pb)["top1_err"], **best["heldout"]},
        "checks": [{k: v for k, v in c.items() if k != "settings"} for c in checks],
        "sensitivity": {k: {"ec_ratio": round(s["ec_ratio"], 4), "ec_reference": s["ec_reference"]} for k, s in sens.items()},
        "splits": {"heldout": len(pb.heldout_x), "calib": len(pb.calib_x), "seed": pb.seed},
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _ladder(target: Target, trial, costs: dict, dense_bits: int, max_checks: int, margin: float,
            checks: list) -> dict[str, Any]:
    """A max-loss target: bisect the compression ladder for the highest compression whose held-out
    loss stays within ``max_loss - margin``; ``trial(compression)`` measures one (and logs it in ``checks``)."""
    most = dense_bits / sum(int(c["bits"].min()) for c in costs.values())
    ladder = [c for c in LADDER if c >= (target.compression or 0) and c <= most]
    ok = lambda r: r is not None and r["heldout"]["top1_change"] <= target.max_loss - margin  # noqa: E731
    lo, hi, best = -1, len(ladder), None
    for _ in range(max_checks):
        if hi - lo <= 1:
            break
        mid = (lo + hi) // 2 if lo >= 0 else min(len(ladder) - 1, max(0, ladder.index(20) if 20 in ladder else (hi - 1) // 2))
        r = trial(ladder[mid])
        if ok(r):
            lo, best = mid, r
        else:
            hi = mid
    if best is None:
        raise ValueError(f"max-loss={target.max_loss:g}: no compression on the ladder from {ladder[0] if ladder else '?'}x "
                         f"stays within it on the held-out split ({len(checks)} checks)")
    return best


def _file_bytes(pb: Problem, net: Network) -> int:
    """Bytes of ``net``'s model file (written to the cache's scratch folder)."""
    path = pb.cache_dir / "models" / f"size-{net.name}.qcnn"
    path.parent.mkdir(parents=True, exist_ok=True)
    modelfile.save(net, path, overwrite=True)
    size = path.stat().st_size
    path.unlink()
    return size


def search_arch(arch: str, target: str | Target, n_heldout: int = 2000, n_calib: int = 5000, seed: int = 0,
                cache_dir: str | Path | None = None, show_progress: bool = True, **kw: Any) -> dict[str, Any]:
    """:func:`search` on the committed reference model of ``arch``; the target is parsed first."""
    target = parse_target(target)
    pb = problem_for_arch(arch, n_heldout, n_calib, seed, cache_dir)
    return search(pb, target, show_progress=show_progress, **kw)
