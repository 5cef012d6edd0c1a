"""Command line: ``python -m qcnn_lite <command>``; ``--help`` lists the commands."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence


def _table1(args: argparse.Namespace) -> int:
    from . import tables

    print(tables.render(tables.table1_rows(), args.format), end="")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from . import reproduce

    return reproduce.main(out_dir=Path(args.out), fast=args.fast)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qcnn_lite", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = sub.add_parser("table1", help="Table 1's speed-up and compression columns beside the paper's")
    p.add_argument("--format", choices=["markdown", "json", "csv"], default="markdown")
    p.set_defaults(func=_table1)

    p = sub.add_parser("reproduce", help="rebuild the paper's tables into results/ and print them")
    p.add_argument("--out", default="results", help="output folder (default: results)")
    p.add_argument("--fast", action="store_true", help="smaller runs, for CI")
    p.set_defaults(func=_reproduce)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
