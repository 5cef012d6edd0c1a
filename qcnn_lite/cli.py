"""Command line: ``python -m qcnn_lite <command>``; ``--help`` lists the commands.

Every entry point of the package is a subcommand here; each handler imports
what it runs when it runs, so ``--help`` stays fast and needs no torch.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence


# --------------------------------------------------------------------------- model-info
def describe(path: str | os.PathLike) -> str:
    """A text summary of a model file, after full validation: layers, K, bits and bytes per layer."""
    from . import modelfile

    path = Path(path)
    man, net = modelfile.load_with_manifest(path)  # validates everything, payload included
    rows = [f"{path}: {net.name}, input {'x'.join(map(str, net.input_shape))}, format version {man['format_version']}, "
            f"{_size(path.stat().st_size)}"]
    for e in man["layers"]:
        arrays = [a for a in man["arrays"] if a["layer"] == e["name"]]
        nbytes = sum(a["nbytes"] for a in arrays)
        shapes = ", ".join(f"{a['role']} {'x'.join(map(str, a['shape']))}" for a in arrays)
        codes = next((a for a in arrays if a["role"] == "codes"), None)
        q = f"; K={arrays[0]['shape'][1]} at {codes['bits']} bits" if codes else ""
        rows.append(f"  {e['name']:<10} {e['class']:<8} {_size(nbytes):>10}  {shapes}{q}")
    if net.meta:
        rows.append(f"  meta: {json.dumps(net.meta, sort_keys=True, ensure_ascii=False)[:200]}")
    return "\n".join(rows) + "\n"


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 2**20 else f"{n / 2**20:.2f} MiB"


def _model_info(args: argparse.Namespace) -> int:
    print(describe(args.path), end="")
    return 0


def _table1(args: argparse.Namespace) -> int:
    from . import tables

    print(tables.render(tables.table1_rows(), args.format), end="")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from . import reproduce

    return reproduce.main(out_dir=Path(args.out) if args.out else None, fast=args.fast)


def _evaluate(args: argparse.Namespace) -> int:
    from . import evaluate, tables

    if args.imagenet or args.weights:
        if not (args.imagenet and args.weights and args.arch):
            raise ValueError("the ImageNet path needs --imagenet DIR, --weights FILE and --arch alexnet|vgg16")
        rows = evaluate.imagenet_accuracy(args.imagenet, args.weights, args.arch, n_calib=args.n_calib or 500,
                                          limit=args.limit, calib_dir=args.calib_dir, ground_truth=args.ground_truth)
    else:
        archs = [args.arch] if args.arch else list(evaluate.MINI_SETTINGS)
        rows = evaluate.table1_accuracy(archs, n_calib=args.n_calib or 5000, n_test=args.limit)
    print(tables.render(rows, args.format), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qcnn_lite", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = sub.add_parser("table1", help="Table 1's speed-up and compression columns beside the paper's")
    p.add_argument("--format", choices=["markdown", "json", "csv"], default="markdown")
    p.set_defaults(func=_table1)

    p = sub.add_parser("reproduce", help="rebuild the paper's tables into results/ and print them")
    p.add_argument("--out", default=None, help="output folder (default: the project's results/)")
    p.add_argument("--fast", action="store_true", help="smaller runs, for CI")
    p.set_defaults(func=_reproduce)

    p = sub.add_parser("evaluate", help="Table 1's accuracy column: quantize reference networks and measure their error")
    p.add_argument("--arch", help="mini-alexnet|mini-cnns|mini-vgg16 (default: all), or alexnet|vgg16 with --imagenet")
    p.add_argument("--n-calib", type=int, help="calibration images (default 5000; ImageNet 500)")
    p.add_argument("--limit", type=int, help="evaluate on the first N test images only")
    p.add_argument("--imagenet", metavar="DIR", help="ILSVRC-12 val folder (class folders, or flat with --ground-truth)")
    p.add_argument("--weights", metavar="FILE", help="a torchvision alexnet/vgg16 state dict (.pth)")
    p.add_argument("--calib-dir", metavar="DIR", help="calibration images for the ImageNet path (default: the first val images)")
    p.add_argument("--ground-truth", metavar="FILE", help="ground-truth file for a flat val folder")
    p.add_argument("--format", choices=["markdown", "json", "csv"], default="markdown")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("model-info", help="check a .qcnn model file and list its layers and sizes")
    p.add_argument("path", help="model file written by qcnn_lite.modelfile.save")
    p.set_defaults(func=_model_info)

    from . import bench, buildinfo, device_results, train, widgets

    buildinfo.add_parser(sub)
    bench.add_parsers(sub)
    device_results.add_parser(sub)
    widgets.add_parser(sub)
    train.add_parser(sub)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
