"""Table 2 from device result files, as a figure."""
from __future__ import annotations

import math
from typing import Any, Sequence

from qcnn_lite.paper.constants import MODEL_LABELS, NETWORK_LABELS, VARIANTS
from qcnn_lite.repro.rows import table2_device_rows

__all__ = ["plot_table2"]


# --------------------------------------------------------------------------- Table 2
def plot_table2(results: Sequence[dict[str, Any]], fig: Any = None, paper: bool = True) -> Any:
    """Table 2 as three bar charts (time, storage, memory), log scale, one bar colour per source.

    Groups: AlexNet CNN / Q-CNN, CNN-S CNN / Q-CNN. The paper's Mate 7 figures come
    first (``paper=True``); every result adds one bar per group (its default Q-CNN
    engine: the first qcnn run of each network). ``fig``: a matplotlib Figure to draw
    into (cleared), else a new one. Returns the figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    rows = table2_device_rows(results, paper)
    seen: dict[tuple, dict] = {}
    for r in rows:  # first row per (source, network, variant): one bar each
        seen.setdefault((r["source"], r["network"], r["variant"]), r)
    sources = list(dict.fromkeys(k[0] for k in seen))
    groups = [(n, v) for n in NETWORK_LABELS for v in VARIANTS]
    if fig is None:
        fig = plt.figure(figsize=(13, 4.2))
    else:
        fig.clf()
    axes = fig.subplots(1, 3)
    width = 0.8 / max(1, len(sources))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, title) in zip(axes, [("time_s", "Time per image (s)"), ("storage_mb", "Storage (MB)"),
                                       ("memory_mb", "Peak memory (MB)")]):
        for j, src in enumerate(sources):
            xs, ys = [], []
            for g, (net, var) in enumerate(groups):
                r = seen.get((src, net, var))
                if r is not None:
                    xs.append(g + (j - (len(sources) - 1) / 2) * width)
                    ys.append(r[key])
            bars = ax.bar(xs, ys, width, label=src, color=colors[j % len(colors)])
            ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=1)
        ax.set_yscale("log")
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi * 2)  # room for the bar labels
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([f"{NETWORK_LABELS[n]}\n{MODEL_LABELS[v]}" for n, v in groups])
        ax.set_title(title)
        ax.grid(axis="y", which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(sources), 3), fontsize=9, frameon=False)
    fig.suptitle("Table 2: single image, one thread -- paper (Huawei Mate 7) vs measured devices")
    rows_of_legend = math.ceil(len(sources) / 3)
    fig.tight_layout(rect=(0, 0.05 + 0.04 * rows_of_legend, 1, 1))
    return fig
