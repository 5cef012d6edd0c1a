"""The paper's tables rebuilt: rows as plain dicts, and Markdown/CSV/JSON renderings.

``make reproduce``, the CLI and notebooks 05/06 all go through these
functions, so they can never disagree.
"""
from __future__ import annotations

import csv
import io
import json
from typing import Any, Sequence

from . import models, paper
from .cost import network_cost

__all__ = ["table1_rows", "render"]


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


def render(rows: Sequence[dict[str, Any]], fmt: str = "markdown") -> str:
    """Rows as ``markdown``, ``csv`` or ``json`` text."""
    if fmt == "json":
        return json.dumps(list(rows), indent=2)
    if not rows:
        return ""
    cols = list(rows[0])
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, cols, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()
    if fmt == "markdown":
        def cell(v: Any) -> str:
            return f"{v:.2f}" if isinstance(v, float) else str(v)
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(cell(r[c]) for c in cols) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    raise ValueError(f"unknown format {fmt!r}: choose markdown, csv or json")
