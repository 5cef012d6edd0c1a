"""``make reproduce``: rebuild the paper's tables into ``results/`` and print them beside the paper.

* Table 1, speed-up and compression: computed at full size (``cost``).
* Table 1, accuracy: measured on the Fashion-MNIST stand-in (``evaluate``, cached).
* Table 2, time, storage and memory: measured here at full size (``bench``).

Notebooks 05 and 06 read the files written here through :func:`load`, so they
show exactly what this printed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from qcnn_lite.io import paths
from qcnn_lite.paper.constants import MINI_SETTINGS
from qcnn_lite.io.results import render, write_table
from qcnn_lite.repro import rows as tables

__all__ = ["reproduce", "plot_tables"]


def _section(title: str, rows: list[dict], out_dir: Path, stem: str) -> None:
    print(f"\n## {title}\n")
    print(render(rows, "markdown"), end="")
    paths = write_table(rows, out_dir, stem)
    print(f"(wrote {', '.join(str(p) for p in paths)})")
    sys.stdout.flush()


def reproduce(out_dir: Path | None = None, fast: bool = False, models_dir: Path | None = None, clock: str = "wall") -> int:
    """Rebuild Tables 1 and 2 into ``out_dir`` (default ``results/``) and print them beside the paper's; 0 on success.
    Table 2's times by ``clock`` (``wall``, or ``cpu``: thread CPU time)."""
    out_dir = Path(out_dir or paths.results_dir())
    models_dir = Path(models_dir or paths.models_dir())
    _section("Table 1 -- speed-up and compression at full size (computed) beside the paper's",
             tables.table1_rows(), out_dir, "table1")

    from qcnn_lite.repro import accuracy as evaluate

    missing = [a for a in MINI_SETTINGS if not (models_dir / f"{a}.qcnn").exists()]
    if missing:
        print(f"\n(Table 1 accuracy skipped: {', '.join(missing)} not in {models_dir}; "
              "train with `python -m qcnn_lite train --arch NAME`)")
    else:
        rows = evaluate.table1_accuracy(models_dir=models_dir, cache_dir=out_dir / "cache",
                                        n_test=2000 if fast else None)
        _section("Table 1 -- accuracy on the Fashion-MNIST stand-in (top-1/top-5 error %, change vs dense)",
                 rows, out_dir, "table1_accuracy_fast" if fast else "table1_accuracy")
        if not fast:  # from results/cache in seconds; a cold cache takes about an hour per network
            from qcnn_lite.repro.searched import table1_searched

            rows = table1_searched(out_dir=out_dir, cache_dir=out_dir / "cache")
            _section("Table 1 -- searched per-layer settings on the mini networks (held-out choice, test once)",
                     rows, out_dir, "table1_searched")

    from qcnn_lite.bench import benchmarks as bench

    res = bench.bench_networks(repeat=3 if fast else 10)
    stem = "table2_fast" if fast else "table2"
    (out_dir / f"{stem}_bench.json").write_text(json.dumps(res, indent=2) + "\n")
    print("\n" + bench.render_networks(res, clock == "cpu"), end="")
    t2 = tables.table2_rows(res, clock)
    _section("Table 2 -- full-size AlexNet and CNN-S, one image, one thread, measured here, beside the paper's phone",
             t2, out_dir, stem)
    try:
        for p in plot_tables(tables.table1_rows(), t2):
            print(f"(wrote {p})")
    except ImportError:
        print("(figures skipped: matplotlib is not installed)")
    return 0


def plot_tables(table1: list[dict], table2: list[dict] | None, out_dir: Path | None = None) -> list[Path]:
    """Figures of Table 1 (speed-up and compression, ours beside the paper's) and Table 2
    (time ratio, storage and memory), saved as PNG under ``figures/reproduce/``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qcnn_lite.repro import figures

    saved = []
    labels = [f"{r['network']}\nsetting {r['setting']}" for r in table1]
    x = np.arange(len(table1))
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for ax, key, title in ((axes[0], "speedup", "speed-up (x)"), (axes[1], "compression", "compression (x)")):
        ax.bar(x - 0.2, [r[key] for r in table1], 0.4, label="qcnn-lite (computed)")
        ax.bar(x + 0.2, [r[f"paper_{key}"] for r in table1], 0.4, label="paper")
        ax.set(xticks=x, xticklabels=labels, title=f"Table 1: {title}")
        ax.legend(loc="lower right")
    fig.tight_layout()
    saved.append(figures.savefig(fig, "reproduce", "table1"))
    plt.close(fig)
    if table2:
        nets = sorted({r["network"] for r in table2}, key=[r["network"] for r in table2].index)
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        xs = np.arange(len(nets))
        q = {r["network"]: r for r in table2 if r["model"] == "Q-CNN"}
        c = {r["network"]: r for r in table2 if r["model"] == "CNN"}
        axes[0].bar(xs - 0.27, [q[n]["speedup_vs_dense"] for n in nets], 0.27, label="here: vs dense numpy (BLAS)")
        axes[0].bar(xs, [q[n].get("speedup_vs_dense_noblas") or 0 for n in nets], 0.27,
                    label="here: vs dense, no BLAS (paper's condition)")
        axes[0].bar(xs + 0.27, [q[n]["paper_speedup"] for n in nets], 0.27, label="paper: Mate 7, own dense code")
        axes[0].set(title="Q-CNN speed-up over the CNN (x)")
        for ax, key, pkey, title in ((axes[1], "storage_mib", "paper_storage_mb", "storage (MiB, log)"),
                                     (axes[2], "memory_mib", "paper_memory_mb", "peak memory (MiB, log)")):
            w = 0.2
            for j, (rows, name) in enumerate(((c, "CNN"), (q, "Q-CNN"))):
                ax.bar(xs + (2 * j - 1.5) * w, [rows[n][key] for n in nets], w, label=f"{name} here")
                ax.bar(xs + (2 * j - 0.5) * w, [rows[n][pkey] for n in nets], w, label=f"{name} paper", alpha=0.5)
            ax.set(yscale="log", title=title)
        for ax in axes:
            ax.set(xticks=xs, xticklabels=nets)
            ax.legend(fontsize=7)
        fig.tight_layout()
        saved.append(figures.savefig(fig, "reproduce", "table2"))
        plt.close(fig)
    return saved
