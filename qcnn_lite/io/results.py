"""Results files: rows of a table written as Markdown, CSV and JSON, and read back."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Sequence

from qcnn_lite.io import paths

__all__ = ["render", "write_table", "load_table"]


def write_table(rows: list[dict], out_dir: Path, stem: str) -> list[Path]:
    """Write rows as ``<stem>.md``, ``.csv`` and ``.json`` in out_dir (regenerated results, never user files)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt, ext in (("markdown", "md"), ("csv", "csv"), ("json", "json")):
        p = out_dir / f"{stem}.{ext}"
        p.write_text(render(rows, fmt))
        paths.append(p)
    return paths


def load_table(stem: str, out_dir: Path | None = None) -> list[dict[str, Any]] | None:
    """Rows written by ``make reproduce`` (``table1``, ``table1_accuracy``, ``table2``), or None if absent."""
    p = Path(out_dir or paths.results_dir()) / f"{stem}.json"
    return json.loads(p.read_text()) if p.exists() else None


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
            return "" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(cell(r[c]) for c in cols) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    raise ValueError(f"unknown format {fmt!r}: choose markdown, csv or json")
