"""Table 1's accuracy column: quantize a reference network and measure what it costs in error.

On the Fashion-MNIST stand-in, every mini network is quantized at the paper's
two settings (scaled to its channels), three ways:

* ``ec``    -- error correction with accumulated-error compensation (the paper's Q-CNN);
* ``plain`` -- k-means on the weights only (plain product quantization);
* ``dense`` -- no quantization.

Each quantized network is measured twice: with its layers at the table precision
the accuracy guard chose (:func:`qcnn_lite.quant.guard.guard_tables`: 8-bit fc tables,
and conv tables where the layer class offers them, unless they cost top-1 on the
calibration set), and with float32 tables everywhere (``*_float`` columns).

Results are cached in ``results/cache/`` under a key made of the hashes of
every input (model file, test set, settings, calibration, table precisions and
guard), so ``make reproduce`` reuses them and recomputes only what changed.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from qcnn_lite.io import datasets as data, modelfile, paths, progress
from qcnn_lite.paper import constants as paper
from qcnn_lite.nn import precision
from qcnn_lite.quant import guard
from qcnn_lite.paper.constants import IMAGENET_SETTINGS, MINI_OF, MINI_SETTINGS
from qcnn_lite.paper.cost import network_cost
from qcnn_lite.io.cache import cached, sha256_array, sha256_file
from qcnn_lite.nn.accuracy import evaluate_network
from qcnn_lite.nn.engine import Network
from qcnn_lite.nn.layers import QConv2d, QLinear
from qcnn_lite.quant.quantize import quantize_network

__all__ = ["table1_accuracy", "imagenet_accuracy"]

# Bump when the quantizer changes in a way that changes results: it is part of every cache key.
ALGORITHM_VERSION = 1


def _tables_key(threshold: float, n_guard: int) -> dict[str, Any]:
    """What decides the table precision of a quantized network, for the cache key: the precisions
    each layer class offers (fastest first) and the guard's settings."""
    return {"offered": {c.__name__: list(precision.class_table_dtypes(c)) for c in (QConv2d, QLinear)},
            "guard": threshold, "n_guard": n_guard}


def _both_precisions(q: Network, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Errors at the network's own table precisions and with float32 tables everywhere."""
    r = evaluate_network(q, x, y)
    f = evaluate_network(precision.with_table_dtypes(q, precision.FLOAT), x, y)
    chosen = {name: precision.table_dtype(p) for name, p in q.params.items() if precision.table_dtype(p)}
    return {**r, "top1_err_float": f["top1_err"], "top5_err_float": f["top5_err"], "table_dtypes": chosen}


def _model_path(arch: str, models_dir: Path) -> Path:
    p = models_dir / f"{arch}.qcnn"
    if not p.exists():
        raise FileNotFoundError(f"{p} is missing: train it with `python -m qcnn_lite train --arch {arch}`")
    return p


def table1_accuracy(
    archs: Iterable[str] = tuple(MINI_SETTINGS),
    models_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    n_calib: int = 5000,
    n_test: int | None = None,
    n_iter: int = 4,
    seed: int = 0,
    save_models: str | Path | None = None,
    show_progress: bool = True,
    table_guard: float = guard.DEFAULT_THRESHOLD,
    n_guard: int = guard.DEFAULT_IMAGES,
    settings: Iterable[int] = (1, 2),
    methods: Iterable[str] = ("ec", "plain"),
) -> list[dict[str, Any]]:
    """Rows of (network, setting, method) with top-1/top-5 error, change against dense,
    compression and theoretical speed-up (cost model at the mini size), and the paper's
    top-5 increase beside them.

    Top-1/top-5 are at the table precision the accuracy guard chose (``table_guard`` top-1
    points on the first ``n_guard`` calibration images and their labels); ``top1_err_float``
    beside them with float32 tables, and ``tables`` says which precisions the layers took.
    ``settings`` and ``methods`` select rows (the dense row always comes first).

    ``n_test`` limits the test set (None: all 10,000). ``save_models``: a folder to write
    the quantized networks to (e.g. for the webcam demo); existing files there are replaced.
    """
    models_dir = Path(models_dir or paths.models_dir())
    cache_dir = Path(cache_dir or paths.results_dir() / "cache")
    train_x, train_y = data.load_fashion_mnist("train")
    test_x, test_y = data.load_fashion_mnist("test")
    if n_test is not None:
        test_x, test_y = test_x[:n_test], test_y[:n_test]
    if not 1 <= n_calib <= len(train_x):
        raise ValueError(f"n_calib must be in [1, {len(train_x)}], got {n_calib}")
    calib_idx = np.sort(np.random.default_rng(seed).choice(len(train_x), n_calib, replace=False))
    test_key = sha256_array(test_x) + sha256_array(test_y)
    rows: list[dict[str, Any]] = []
    archs, settings, methods = _selection(archs, settings, methods)
    jobs = [(a, s, m) for a in archs for s in settings for m in methods]
    with progress.bar(total=len(jobs) + len(archs), desc="Table 1 accuracy", enabled=show_progress, leave=True) as bar:
        for arch in archs:
            path = _model_path(arch, models_dir)
            model_key = sha256_file(path)
            net = modelfile.load(path)
            mean, std = data.normalisation(net.meta)
            xt = data.to_input(test_x, mean, std)
            dense = cached(cache_dir, {"arch": arch, "method": "dense", "model": model_key, "test": test_key},
                           lambda: evaluate_network(net, xt, test_y))
            bar.update(1)
            base = {"network": arch, "reference": MINI_OF[arch]}
            recipe = {"n_calib": n_calib, "n_iter": n_iter, "seed": seed}  # the calibration, recorded in every row
            rows.append({**_dense_row(base, dense), "n_calib": 0, "n_iter": 0, "seed": seed})
            calib = data.to_input(train_x[calib_idx], mean, std)
            calib_y = train_y[calib_idx]
            for setting, st in enumerate(MINI_SETTINGS[arch], start=1):
                if setting not in settings:
                    continue
                cost = network_cost(net.input_shape, net.spec, st)
                for method in methods:
                    key = {"arch": arch, "method": method, "setting": {k: list(v) for k, v in st.items()},
                           "model": model_key, "test": test_key, "n_calib": n_calib, "calib": sha256_array(calib_idx),
                           "n_iter": n_iter, "seed": seed, "algorithm": ALGORITHM_VERSION,
                           "tables": _tables_key(table_guard, n_guard)}

                    def work(st=st, method=method, setting=setting):
                        t0 = time.perf_counter()
                        q = quantize_network(net, calib if method == "ec" else None, st, error_correction=method == "ec",
                                             n_iter=n_iter, seed=seed, show_progress=show_progress,
                                             table_guard=table_guard, guard_images=calib, guard_labels=calib_y,
                                             n_guard=n_guard)
                        secs = time.perf_counter() - t0
                        if save_models is not None:
                            _save(q, Path(save_models) / f"{arch}-s{setting}-{method}.qcnn")
                        return {**_both_precisions(q, xt, test_y), "quantize_s": round(secs, 1)}

                    rows.append({**_row(base, setting, method, cached(cache_dir, key, work), dense, cost),
                                 **(recipe if method == "ec" else {"n_calib": 0, "n_iter": 0, "seed": seed})})
                    bar.update(1)
    return rows


def _selection(archs: Iterable[str], settings: Iterable[int], methods: Iterable[str]) -> tuple[list, tuple, tuple]:
    """The networks, settings and methods asked for, checked before any work."""
    archs, settings, methods = list(archs), tuple(settings), tuple(methods)
    for arch in archs:
        if arch not in MINI_SETTINGS:
            raise ValueError(f"no Table 1 settings for {arch!r}: choose from {', '.join(MINI_SETTINGS)}")
    if not set(settings) <= {1, 2} or not settings:
        raise ValueError(f"settings must be among 1, 2; got {settings}")
    if not set(methods) <= {"ec", "plain"} or not methods:
        raise ValueError(f"methods must be among ec, plain; got {methods}")
    return archs, settings, methods


def _save(q: Network, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    modelfile.save(q, path, overwrite=True)


def _dense_row(base: dict, dense: dict) -> dict[str, Any]:
    return {**base, "setting": 0, "method": "dense", **dense, "top1_change": 0.0, "top5_change": 0.0,
            "top1_err_float": dense["top1_err"], "top1_tables_change": 0.0, "tables": "",
            "compression": 1.0, "speedup": 1.0, "quantize_s": 0.0, "paper_top5_increase": None}


def _row(base: dict, setting: int, method: str, r: dict, dense: dict, cost: dict) -> dict[str, Any]:
    """One quantized row of Table 1: errors, their change against the dense row, precision and cost."""
    return {
        **base, "setting": setting, "method": method, "top1_err": r["top1_err"], "top5_err": r["top5_err"],
        "top1_change": round(r["top1_err"] - dense["top1_err"], 2),
        "top5_change": round(r["top5_err"] - dense["top5_err"], 2),
        "top1_err_float": r["top1_err_float"],
        "top1_tables_change": round(r["top1_err"] - r["top1_err_float"], 2),
        "tables": _tables_summary(r["table_dtypes"]),
        "compression": round(cost["compression"], 2), "speedup": round(cost["speedup"], 2),
        "quantize_s": r["quantize_s"],
        "paper_top5_increase": paper.table1_paper(base["reference"], setting)["top5_err_increase"],
    }


def _tables_summary(chosen: Mapping[str, str]) -> str:
    """'conv1-conv5 float32, fc6 uint8, ...' -> shortest form: each precision with the layers that took it."""
    by: dict[str, list[str]] = {}
    for name, d in chosen.items():
        by.setdefault(d, []).append(name)
    return "; ".join(f"{d}: {','.join(names)}" for d, names in by.items())


# -- ILSVRC-12, for users who have it ------------------------------------------------
def imagenet_accuracy(
    imagenet_dir: str | Path,
    weights: str | Path,
    arch: str,
    settings: Iterable[int] = (1, 2),
    n_calib: int = 500,
    limit: int | None = None,
    calib_dir: str | Path | None = None,
    ground_truth: str | Path | None = None,
    n_iter: int = 4,
    seed: int = 0,
    methods: Iterable[str] = ("ec", "plain"),
    show_progress: bool = True,
) -> list[dict[str, Any]]:
    """Table 1's accuracy column for real: a torchvision ``alexnet`` or ``vgg16`` on ILSVRC-12 val.

    Calibration images come from ``calib_dir`` (same layout as the val folder; the
    paper used training images) or, without it, from the first ``n_calib`` val
    images, which are then left out of the evaluation. Labels follow the val
    folder's layout (see :func:`qcnn_lite.io.datasets.imagenet_val`).
    """
    from qcnn_lite.reference.bridge import from_torchvision

    if arch not in IMAGENET_SETTINGS:
        raise ValueError(f"arch must be one of {', '.join(IMAGENET_SETTINGS)}, got {arch!r}")
    net = from_torchvision(weights, arch)
    crop = net.input_shape[1]

    def batches(root, lim):
        return data.imagenet_val(root, crop=crop, preset=data.TORCHVISION, limit=lim, ground_truth=ground_truth)

    if calib_dir is not None:
        calib = np.concatenate([x for x, _ in batches(calib_dir, n_calib)])
        skip = 0
    else:
        calib = np.concatenate([x for x, _ in batches(imagenet_dir, n_calib)])
        skip = len(calib)
    xs, ys = [], []
    for x, y in batches(imagenet_dir, None if limit is None else limit + skip):
        xs.append(x)
        ys.append(y)
    x_all, y_all = np.concatenate(xs)[skip:], np.concatenate(ys)[skip:]
    if len(x_all) == 0:
        raise ValueError(f"{imagenet_dir}: no images left to evaluate after {skip} calibration images")
    dense = evaluate_network(net, x_all, y_all, batch_size=16)
    rows = [{"network": arch, "setting": 0, "method": "dense", **dense, "n_images": len(x_all)}]
    for s in settings:
        st = IMAGENET_SETTINGS[arch][s - 1]
        cost = network_cost(net.input_shape, net.spec, st)
        for method in methods:
            q = quantize_network(net, calib if method == "ec" else None, st, error_correction=method == "ec",
                                 n_iter=n_iter, seed=seed, show_progress=show_progress)
            r = evaluate_network(q, x_all, y_all, batch_size=16)
            rows.append({"network": arch, "setting": s, "method": method, **r,
                         "top5_change": round(r["top5_err"] - dense["top5_err"], 2),
                         "compression": round(cost["compression"], 2), "speedup": round(cost["speedup"], 2),
                         "n_images": len(x_all)})
    return rows
