"""``results/table1_searched``: searched settings for the mini networks, measured once on the test set.

For each mini network and each target in :data:`TARGETS` the search
(:mod:`qcnn_lite.quant.search_run`) picks settings on the held-out split of the
training set; only then is the chosen network evaluated on the test set, with
error correction (``ec``) and with fine-tuned codebooks (``ec+ft``,
:mod:`qcnn_lite.quant.finetune`). Every step is cached in ``results/cache/``, so
:func:`table1_searched` rebuilds the table from the cache in seconds. The
Pareto figure (:func:`plot_pareto`) puts the rows beside the paper's two
settings (``results/table1_accuracy.json``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from qcnn_lite.io import datasets as data, paths, progress
from qcnn_lite.paper.constants import MINI_SETTINGS
from qcnn_lite.io.cache import cached, sha256_array
from qcnn_lite.nn.accuracy import evaluate_network
from qcnn_lite.quant.search_run import Problem, float_tables, problem_for_arch, quantized, search

__all__ = ["TARGETS", "table1_searched", "plot_pareto", "settings_text"]

SPEED_FLOOR = 1.5
TARGETS = (f"compression=15,speedup={SPEED_FLOOR}", f"compression=20,speedup={SPEED_FLOOR}",
           f"compression=30,speedup={SPEED_FLOOR}", f"max-loss=1.0,speedup={SPEED_FLOOR}", "max-loss=1.0")
FT = {"epochs": 1, "lr": 2e-4, "batch_size": 128}
# ec+ft is measured where the target asks for it (30x); fine-tuning costs minutes per setting
FT_TARGETS = (f"compression=30,speedup={SPEED_FLOOR}",)


def settings_text(settings: dict[str, list[int]]) -> str:
    """``conv1 1x16 conv2 2x8 ...``: C's x K per layer."""
    return " ".join(f"{k} {d}x{K}" for k, (d, K) in settings.items())


def _test_split(pb: Problem) -> tuple[np.ndarray, np.ndarray, str]:
    x, y = data.load_fashion_mnist("test")
    mean, std = data.normalisation(pb.net.meta)
    return data.to_input(x, mean, std), np.asarray(y, np.int64), sha256_array(x) + sha256_array(y)


def finetuned(pb: Problem, settings: dict[str, list[int]], show_progress: bool = True):
    """The ``ec+ft`` network of ``settings``: cached as a model file in ``cache/models/``."""
    from qcnn_lite.quant import finetune
    from qcnn_lite.io import modelfile
    from qcnn_lite.quant.search_run import COUNTS, settings_key

    path = pb.cache_dir / "models" / f"search-ft-{settings_key(settings)}{pb.model_key[:8]}{pb.split_key[:8]}{pb.seed}.qcnn"
    if path.exists():
        try:
            return float_tables(modelfile.load(path)), None
        except ValueError:
            pass
    COUNTS["finetune"] += 1
    train_x, train_y = data.load_fashion_mnist("train")
    mean, std = data.normalisation(pb.net.meta)
    idx = pb.train_idx
    q = quantized(pb, settings, show_progress)
    ft, hist = finetune.finetune(q, data.to_input(train_x[idx], mean, std), train_y[idx], seed=pb.seed,
                                 show_progress=show_progress, **FT)
    path.parent.mkdir(parents=True, exist_ok=True)
    modelfile.save(ft, path, overwrite=True)
    return float_tables(ft), hist["seconds"]


def _search_record(pb: Problem, target: str, show_progress: bool) -> dict[str, Any]:
    """The search's record, or ``{"unreachable": reason}`` when no setting meets the target
    (a max-loss target that no compression on the ladder meets on the held-out split)."""
    try:
        return search(pb, target, show_progress=show_progress)
    except ValueError as e:
        return {"unreachable": str(e)}


def _rows_for(arch: str, targets: Iterable[str], methods: Iterable[str], cache_dir: Path | None,
              show_progress: bool, ft_targets: Iterable[str] = FT_TARGETS) -> list[dict[str, Any]]:
    pb = problem_for_arch(arch, cache_dir=cache_dir)
    tx, ty, tkey = _test_split(pb)
    dense = cached(pb.cache_dir, pb.key(step="dense-test", test=tkey), lambda: evaluate_network(pb.net, tx, ty))
    rows = [{"network": arch, "target": "dense", "method": "dense", "compression": 1.0, "speedup": 1.0,
             "heldout_top1_change": 0.0, **dense, "top1_change": 0.0, "top5_change": 0.0, "search_s": 0.0,
             "finetune_s": 0.0, "settings": ""}]
    for target in targets:
        rec = cached(pb.cache_dir, pb.key(step="search", target=target), lambda t=target: _search_record(pb, t, show_progress))
        if "unreachable" in rec:
            rows.append({"network": arch, "target": target, "method": "ec", "compression": None, "speedup": None,
                         "heldout_top1_change": None, "top1_err": None, "top5_err": None, "top1_change": None,
                         "top5_change": None, "search_s": None, "finetune_s": None,
                         "settings": f"unreachable: {rec['unreachable']}"})
            continue
        st = rec["settings"]
        for method in (m for m in methods if m == "ec" or target in ft_targets):
            def work(method=method):
                t0 = time.perf_counter()
                net = quantized(pb, st, show_progress) if method == "ec" else finetuned(pb, st, show_progress)[0]
                ft_s = time.perf_counter() - t0 if method == "ec+ft" else 0.0
                return {**evaluate_network(net, tx, ty), "finetune_s": round(ft_s, 1)}

            key = pb.key(step="test", method=method, settings=st, test=tkey, **({"ft": FT} if method == "ec+ft" else {}))
            r = cached(pb.cache_dir, key, work)
            rows.append({"network": arch, "target": target, "method": method,
                         "compression": round(rec["predicted"]["compression"], 2),
                         "speedup": round(rec["predicted"]["speedup"], 2),
                         "heldout_top1_change": rec["measured"]["top1_change"] if method == "ec" else None,
                         "top1_err": r["top1_err"], "top5_err": r["top5_err"],
                         "top1_change": round(r["top1_err"] - dense["top1_err"], 2),
                         "top5_change": round(r["top5_err"] - dense["top5_err"], 2),
                         "search_s": rec["seconds"], "finetune_s": r["finetune_s"], "settings": settings_text(st)})
    return rows


def table1_searched(archs: Iterable[str] = tuple(MINI_SETTINGS), targets: Iterable[str] = TARGETS,
                    methods: Iterable[str] = ("ec", "ec+ft"), out_dir: str | Path | None = None,
                    cache_dir: str | Path | None = None, plot: bool = True, show_progress: bool = True) -> list[dict[str, Any]]:
    """Rows of (network, target, method): compression and speed-up (cost model), held-out and
    test top-1/top-5 change against dense; written to ``<out_dir>/table1_searched.{md,csv,json}``
    (default ``results/``) and, with ``plot``, ``figures/search/pareto.png``. ``make reproduce``
    calls this: from a full cache it takes seconds."""
    from qcnn_lite.io.results import write_table

    archs, targets, methods = list(archs), list(targets), list(methods)
    for m in methods:
        if m not in ("ec", "ec+ft"):
            raise ValueError(f"method must be 'ec' or 'ec+ft', got {m!r}")
    out_dir = Path(out_dir or paths.results_dir())
    rows: list[dict[str, Any]] = []
    with progress.bar(total=len(archs), desc="Table 1, searched", enabled=show_progress, leave=True) as bar:
        for arch in archs:
            rows += _rows_for(arch, targets, methods, None if cache_dir is None else Path(cache_dir), show_progress)
            bar.update(1)
    write_table(rows, out_dir, "table1_searched")
    if plot:
        try:
            plot_pareto(rows, out_dir)
        except ImportError:
            pass  # matplotlib is optional
    return rows


def plot_pareto(rows: list[dict[str, Any]], results_dir: str | Path | None = None) -> Path:
    """top-1 change (test) against compression and against cost-model speed-up, per mini network:
    the paper's two settings (``table1_accuracy.json``, ec) as points, the searched rows as curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qcnn_lite.repro import figures
    from qcnn_lite.io.results import load_table as load

    paper = [r for r in (load("table1_accuracy", Path(results_dir) if results_dir else None) or []) if r["method"] == "ec"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    colors = dict(zip(MINI_SETTINGS, ("C0", "C1", "C2")))
    for arch, color in colors.items():
        for method, style in (("ec", "-o"), ("ec+ft", "--^")):
            pts = sorted((r for r in rows if r["network"] == arch and r["method"] == method
                          and r["compression"] is not None), key=lambda r: r["compression"])
            if not pts:
                continue
            for ax, key in zip(axes, ("compression", "speedup")):
                ax.plot([r[key] for r in pts], [r["top1_change"] for r in pts], style, color=color, ms=4,
                        label=f"{arch} searched, {method}", alpha=1.0 if method == "ec" else 0.6)
        pp = [r for r in paper if r["network"] == arch]
        for ax, key in zip(axes, ("compression", "speedup")):
            ax.scatter([r[key] for r in pp], [r["top1_change"] for r in pp], marker="s", s=60, color=color,
                       edgecolor="k", zorder=5, label=f"{arch} paper's settings (ec)")
    for ax, key in zip(axes, ("compression (x, cost model)", "speed-up (x, cost model)")):
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.set(xlabel=key, title=f"top-1 change on the test set vs {key.split(' ')[0]}")
        ax.grid(alpha=0.3)
    axes[0].axvline(20, color="grey", lw=0.8, ls=":")
    axes[1].axvline(SPEED_FLOOR, color="grey", lw=0.8, ls=":")
    axes[0].set_ylabel("top-1 error change (points)")
    axes[1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = figures.savefig(fig, "search", "pareto")
    plt.close(fig)
    return path
