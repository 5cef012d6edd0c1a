"""``python -m qcnn_lite device ...``: run the phone benchmark, validate, tabulate and plot its result files."""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

from qcnn_lite.cli import checks


# --------------------------------------------------------------------------- device
def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from qcnn_lite.bench import device as dr
    from qcnn_lite.nn import models

    quick, full = dr.QUICK, dr.FULL
    p = subparsers.add_parser("device", help="Table 2 on a device: run the benchmark, validate/tabulate/plot result files",
                              description="Table 2 on a device: run the benchmark, then check, tabulate or plot "
                                          "its result files.")
    sub = p.add_subparsers(dest="action", required=True, metavar="action")
    r = sub.add_parser("run", help="benchmark AlexNet and CNN-S, dense and Q-CNN, and write a result file")
    r.add_argument("--quick", action="store_true", help=f"{quick['repeat']} timed runs after {quick['warmup']} warm-up (tests)")
    r.add_argument("--repeat", type=checks.int_in(1, 10_000),
                   help=f"timed runs per configuration (default {full['repeat']}; quick {quick['repeat']})")
    r.add_argument("--warmup", type=checks.int_in(0, 1_000),
                   help=f"untimed runs first (default {full['warmup']}; quick {quick['warmup']})")
    r.add_argument("--networks", type=checks.names(models.spec, "network", "alexnet,cnns"),
                   default=["alexnet", "cnns"], help="comma-separated (default alexnet,cnns)")
    r.add_argument("--name", help="device name used in the file name (default: from the phone model or CPU)")
    r.add_argument("--kind", choices=dr.KINDS, help="phone (default on Android), x86-ci-reference, other")
    r.add_argument("--out-dir", type=checks.output_dir, default=Path("device/results"),
                   help="where the result goes (default device/results)")
    r.add_argument("--cooldown", type=checks.float_in(0, 3600), default=0.0,
                   help="seconds of sleep between configurations, 0 to 3600 (phones: 60)")
    r.add_argument("--backends", type=checks.names(_backend, "backend", "auto"),
                   default=["auto"], help="kernel backends for the Q-CNN runs, e.g. pythran,numpy (default auto)")
    r.add_argument("--notes", default="", help="free text stored in the result (pinning, charger, temperature ...)")
    v = sub.add_parser("validate", help="check result files against the schema")
    v.add_argument("paths", nargs="+", type=checks.input_file_or_dir, help="result files, or folders of *.json files")
    t = sub.add_parser("table", help="Table 2 rows from result files (or folders) beside the paper's")
    t.add_argument("paths", nargs="+", type=checks.input_file_or_dir, help="result files, or folders of *.json files")
    t.add_argument("--format", choices=["markdown", "json"], default="markdown", help="output format (default markdown)")
    g = sub.add_parser("plot", help="draw Table 2 from result files into a PNG")
    g.add_argument("paths", nargs="+", type=checks.input_file_or_dir, help="result files, or folders of *.json files")
    g.add_argument("--out", required=True, type=checks.output_file(".png"),
                   help="PNG file to write; .png is added when missing (refuses to overwrite unless --force)")
    g.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=run)


def _backend(name: str) -> None:
    """--backends: a backend that runs here (looked up only when the option is given: it may load a compiled module)."""
    from qcnn_lite.kernels import dispatch

    try:
        usable = ["auto", *dispatch.available_backends()]
    except (ValueError, ImportError):  # a bad QCNN_LITE_TARGET: reported by the environment check
        usable = ["auto", "numpy"]
    if name not in usable:
        raise ValueError(f"unknown backend {name!r}: use {', '.join(usable)}")


def run(args: argparse.Namespace) -> int:
    from qcnn_lite.bench.device import ResultFormatError, load_result, load_results, run_benchmark
    from qcnn_lite.repro.rows import render_device_rows, table2_device_rows

    if args.action == "run":
        path = run_benchmark(args.out_dir, args.networks, args.quick, args.repeat, args.warmup, args.name,
                             args.kind, args.cooldown, args.backends, notes=args.notes)
        print(render_device_rows(table2_device_rows([load_result(path)])), end="")
        print(path)
        return 0
    if args.action == "validate":
        return _device_validate(args.paths)
    try:
        results = load_results(args.paths)
    except ResultFormatError as e:
        raise checks.UsageError(f"{e} (python -m qcnn_lite device validate shows every problem)") from None
    if args.action == "table":
        rows = table2_device_rows(results)
        print(json.dumps(rows, indent=2) if args.format == "json" else render_device_rows(rows), end="\n" if args.format == "json" else "")
        return 0
    return _device_plot(results, args.out, args.force)


def _device_validate(paths: list[str]) -> int:
    """Check every file given (each folder's *.json), report each, and fail if any is bad or there is none."""
    from qcnn_lite.bench.device import ResultFormatError, load_result, result_files

    bad, seen, files = 0, {}, {}
    for p in paths:  # one path at a time: an empty folder is reported, and the others are still checked
        try:
            found = result_files(p)
        except ResultFormatError as e:
            print(f"error: {e}", file=sys.stderr)
            bad, found = bad + 1, []
        for f in found:
            if f.resolve() in files:
                print(f"error: {f}: named more than once: name each result file once", file=sys.stderr)
                bad += 1
            files.setdefault(f.resolve(), f)
    for f in files.values():
        try:
            res = load_result(f)
            key = (res["name"], res["created_utc"])
            if key in seen:
                raise ResultFormatError(f"{f}: the same result as {seen[key]} (name and created_utc): remove one")
            seen[key] = f
            print(f"ok: {f}")
        except ResultFormatError as e:
            print(f"error: {e}", file=sys.stderr)
            bad += 1
    return 1 if bad else 0


def _device_plot(results: list[dict], out: Path, force: bool) -> int:
    import matplotlib

    from qcnn_lite.io.paths import write_file
    from qcnn_lite.repro.device_plot import plot_table2

    matplotlib.use("Agg")
    buf = io.BytesIO()
    plot_table2(results).savefig(buf, format="png", dpi=120)
    print(write_file(out, buf.getvalue(), overwrite=force))
    return 0
