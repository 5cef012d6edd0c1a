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
from typing import Any

from . import paths, tables

__all__ = ["main", "write_table", "load"]


def write_table(rows: list[dict], out_dir: Path, stem: str) -> list[Path]:
    """Write rows as ``<stem>.md``, ``.csv`` and ``.json`` in out_dir (regenerated results, never user files)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt, ext in (("markdown", "md"), ("csv", "csv"), ("json", "json")):
        p = out_dir / f"{stem}.{ext}"
        p.write_text(tables.render(rows, fmt))
        paths.append(p)
    return paths


def load(stem: str, out_dir: Path | None = None) -> list[dict[str, Any]] | None:
    """Rows written by ``make reproduce`` (``table1``, ``table1_accuracy``, ``table2``), or None if absent."""
    p = Path(out_dir or paths.results_dir()) / f"{stem}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _section(title: str, rows: list[dict], out_dir: Path, stem: str) -> None:
    print(f"\n## {title}\n")
    print(tables.render(rows, "markdown"), end="")
    paths = write_table(rows, out_dir, stem)
    print(f"(wrote {', '.join(str(p) for p in paths)})")
    sys.stdout.flush()


def main(out_dir: Path | None = None, fast: bool = False, models_dir: Path | None = None) -> int:
    out_dir = Path(out_dir or paths.results_dir())
    models_dir = Path(models_dir or paths.models_dir())
    _section("Table 1 -- speed-up and compression at full size (computed) beside the paper's",
             tables.table1_rows(), out_dir, "table1")

    from . import evaluate

    missing = [a for a in evaluate.MINI_SETTINGS if not (models_dir / f"{a}.qcnn").exists()]
    if missing:
        print(f"\n(Table 1 accuracy skipped: {', '.join(missing)} not in {models_dir}; "
              "train with `python -m qcnn_lite.train --arch NAME`)")
    else:
        rows = evaluate.table1_accuracy(models_dir=models_dir, cache_dir=out_dir / "cache",
                                        n_test=2000 if fast else None)
        _section("Table 1 -- accuracy on the Fashion-MNIST stand-in (top-1/top-5 error %, change vs dense)",
                 rows, out_dir, "table1_accuracy_fast" if fast else "table1_accuracy")

    from . import bench

    res = bench.bench_networks(repeat=3 if fast else 10)
    stem = "table2_fast" if fast else "table2"
    (out_dir / f"{stem}_bench.json").write_text(json.dumps(res, indent=2) + "\n")
    print("\n" + bench.render_networks(res), end="")
    _section("Table 2 -- full-size AlexNet and CNN-S, one image, one thread, measured here, beside the paper's phone",
             tables.table2_rows(res), out_dir, stem)
    return 0
