"""``make reproduce``: rebuild the paper's tables into ``results/`` and print them beside the paper."""
from __future__ import annotations

from pathlib import Path

from . import tables

__all__ = ["main", "write_table"]


def write_table(rows: list[dict], out_dir: Path, stem: str) -> list[Path]:
    """Write rows as ``<stem>.md``, ``.csv`` and ``.json`` in out_dir (results are regenerated, never user files)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt, ext in (("markdown", "md"), ("csv", "csv"), ("json", "json")):
        p = out_dir / f"{stem}.{ext}"
        p.write_text(tables.render(rows, fmt))
        paths.append(p)
    return paths


def main(out_dir: Path = Path("results"), fast: bool = False) -> int:
    rows = tables.table1_rows()
    print("Table 1 -- speed-up and compression at full size (computed) beside the paper's")
    print(tables.render(rows, "markdown"))
    for p in write_table(rows, out_dir, "table1"):
        print(f"wrote {p}")
    return 0
