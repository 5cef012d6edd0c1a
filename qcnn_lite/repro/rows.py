"""The paper's tables rebuilt: rows as plain dicts, and Markdown/CSV/JSON renderings.

``make reproduce``, the CLI and notebooks 05/06 all go through these
functions, so they can never disagree.
"""
from __future__ import annotations

from typing import Any, Sequence

from qcnn_lite.nn import models
from qcnn_lite.paper import constants as paper
from qcnn_lite.paper.constants import MIB, MODEL_LABELS, NETWORK_LABELS, VARIANTS
from qcnn_lite.paper.cost import network_cost

__all__ = ["table1_rows", "table2_rows", "table2_device_rows", "render_device_rows"]


def table1_rows() -> list[dict[str, Any]]:
    """Table 1's speed-up and compression columns, computed at full size, beside the paper's."""
    rows = []
    for net, settings in paper.TABLE1_SETTINGS.items():
        input_shape, spec = models.spec(net)
        for i, st in enumerate(settings, start=1):
            c = network_cost(input_shape, spec, st)
            p = paper.table1_paper(net, i)
            rows.append({
                "network": net,
                "setting": i,
                "conv": "C's={}, K={}".format(*st["conv"]),
                "fc": "C's={}, K={}; fc8 C's={}, K={}".format(*st["fc"], *st["fc8"]),
                "speedup": round(c["speedup"], 3),
                "paper_speedup": p["speedup"],
                "speedup_diff_pct": round(100 * (c["speedup"] / p["speedup"] - 1), 2),
                "compression": round(c["compression"], 3),
                "paper_compression": p["compression"],
                "compression_diff_pct": round(100 * (c["compression"] / p["compression"] - 1), 2),
                "cnn_mib": round(c["cnn_mib"], 2),
                "qcnn_mib": round(c["qcnn_mib"], 2),
            })
    return rows


def table2_rows(bench: dict[str, Any], clock: str = "wall") -> list[dict[str, Any]]:
    """Table 2 from a :func:`qcnn_lite.bench.benchmarks.bench_networks` result, beside the paper's Mate 7 figures.

    Time is one image on one thread: the CNN is our dense numpy engine (BLAS) and, in a
    row of its own, the same network without BLAS (compiled loops: the paper's condition,
    whose speed-up ``speedup_vs_dense_noblas`` stands beside ``paper_speedup``); the Q-CNN
    is our look-up-table engine with the best kernels built. Storage is the model
    file on disk; memory the peak RSS of a fresh process running one image. torch fp32
    and dynamic int8 times are measured in the same run. ``clock="cpu"`` takes the
    median thread CPU time instead of wall time (steadier on a shared machine; no min-max).
    """
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    key, sp_key = ("median_ms", "speedup") if clock == "wall" else ("cpu_median_ms", "speedup_cpu")
    rows = []
    for r in bench["networks"]:
        net, t = r["network"], r["times"]
        q_engine = "qcnn-pythran" if "qcnn-pythran" in t else "qcnn-numpy"
        p = paper.table2_paper(net)
        rss = r.get("peak_rss_mib", {})
        q_rss = rss.get(f"qcnn-{q_engine.split('-')[1]}", rss.get("qcnn-numpy"))
        variants = [("cnn", "numpy-dense", "dense", rss.get("dense-numpy"))]
        if "dense-noblas" in t:  # the paper's own baseline; its memory is not measured (no fresh-process run)
            variants.append(("cnn-noblas", "dense-noblas", "dense", None))
        variants.append(("qcnn", q_engine, "qcnn", q_rss))
        for variant, engine, size_key, mem in variants:
            pp = p["qcnn" if variant == "qcnn" else "cnn"]
            rows.append({
                "network": net,
                "model": MODEL_LABELS[variant],
                "engine": engine,
                "clock": clock,
                "time_ms": round(t[engine][key], 2),
                "time_min_max_ms": f"{t[engine]['min_ms']:.2f}-{t[engine]['max_ms']:.2f}" if clock == "wall" else None,
                "storage_mib": round(r["file_mib"][size_key], 2) if "file_mib" in r else None,
                "memory_mib": round(mem, 1) if mem is not None else None,
                "paper_time_s": pp["time_s"],
                "paper_storage_mb": pp["storage_mb"],
                "paper_memory_mb": pp["memory_mb"],
            })
        speed = {k: round(v, 2) for k, v in r[sp_key].items()}
        rows[-1]["speedup_vs_dense"] = speed.get("numpy-dense")
        rows[-1]["speedup_vs_dense_noblas"] = speed.get("dense-noblas")
        rows[-1]["speedup_vs_torch_fp32"] = speed.get("torch-fp32")
        rows[-1]["speedup_vs_torch_int8"] = speed.get("torch-int8-dynamic")
        rows[-1]["paper_speedup"] = round(p["cnn"]["time_s"] / p["qcnn"]["time_s"], 2)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return [{k: r.get(k) for k in keys} for r in rows]


def _label(res: dict[str, Any]) -> str:
    d = res["device"]
    return f"{res['name']} ({res['kind']})" if res["kind"] != "phone" else f"{d['model']} ({res['name']})"


def table2_device_rows(results: Sequence[dict[str, Any]], paper: bool = True) -> list[dict[str, Any]]:
    """One row per (source, network, variant, engine): network, variant, time_s, storage_mb, memory_mb, source, engine.

    ``results``: device result files as :func:`qcnn_lite.bench.device.load_results` returns them.
    ``paper=True`` starts with the paper's Huawei Mate 7 rows (``paper.table2_paper``).
    time_s is the median single-image time; storage_mb the model file; memory_mb the
    peak RSS of the benchmark process (MB = 2**20 bytes, as in the paper).
    """
    from qcnn_lite.paper import constants as _paper  # the argument shadows the module

    rows: list[dict[str, Any]] = []
    if paper:
        for net in NETWORK_LABELS:
            t2 = _paper.table2_paper(net)
            for variant in VARIANTS:
                r = t2[variant]
                rows.append({"network": net, "variant": variant, "time_s": r["time_s"], "storage_mb": r["storage_mb"],
                             "memory_mb": r["memory_mb"], "source": "paper: Huawei Mate 7", "engine": "authors' C++, no BLAS"})
    for res in results:
        for run in res["runs"]:
            rows.append({"network": run["network"], "variant": run["variant"], "time_s": run["median_s"],
                         "storage_mb": run["storage_bytes"] / MIB, "memory_mb": run["peak_rss_mib"],
                         "source": _label(res), "engine": run["engine"]})
    return rows


def render_device_rows(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of :func:`table2_device_rows` as a Markdown table in Table 2's layout (speed-up and ratios per source)."""
    head = "| Source | Network | Model | Time (s) | Storage (MB) | Memory (MB) | Engine |"
    out = [head, "|" + "---|" * 7]
    for r in rows:
        out.append(f"| {r['source']} | {NETWORK_LABELS.get(r['network'], r['network'])} | "
                   f"{MODEL_LABELS[r['variant']]} | {r['time_s']:.3f} | {r['storage_mb']:.2f} | "
                   f"{r['memory_mb']:.2f} | {r['engine']} |")
    ratios = []
    by = {(r["source"], r["network"], r["variant"]): r for r in rows}
    for (src, net, var), r in by.items():
        d = by.get((src, net, "cnn"))
        if var == "qcnn" and d is not None:
            ratios.append(f"{src}, {NETWORK_LABELS.get(net, net)}: {d['time_s'] / r['time_s']:.2f}x faster, "
                          f"{d['storage_mb'] / r['storage_mb']:.1f}x smaller, {d['memory_mb'] / r['memory_mb']:.2f}x less memory")
    return "\n".join(out + [""] + ratios) + "\n"
