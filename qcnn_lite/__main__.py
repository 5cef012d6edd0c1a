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


def _search(args: argparse.Namespace) -> int:
    # issue 15: settings search (the lead moves this into the CLI module)
    import json

    from . import search, search_run

    target = search.parse_target(args.target)  # bad input fails before any work
    if args.out and Path(args.out).exists() and not args.force:
        raise FileExistsError(f"{args.out} exists; pass --force to overwrite it")
    rec = search_run.search_arch(args.arch, target, n_heldout=args.n_heldout, n_calib=args.n_calib, seed=args.seed)
    text = json.dumps(rec, indent=1) + "\n"
    if not args.out:
        print(text, end="")
        return 0
    Path(args.out).write_text(text)
    m = rec["measured"]
    print(f"{rec['network']} {rec['target']}: compression {rec['predicted']['compression']}x, speed-up "
          f"{rec['predicted']['speedup']}x (cost model), held-out top-1 change {m['top1_change']:+.2f} pt; wrote {args.out}")
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

    p = sub.add_parser("search", help="choose per-layer (C's, K) for a compression, speed-up or accuracy target (issue 15)")
    p.add_argument("--arch", required=True, help="mini-alexnet|mini-cnns|mini-vgg16")
    p.add_argument("--target", required=True, help="compression=15, speedup=4, max-loss=1.0, or several: compression=20,speedup=1.5")
    p.add_argument("--n-heldout", type=int, default=2000, help="held-out training images that rank settings (default 2000)")
    p.add_argument("--n-calib", type=int, default=5000, help="calibration images for error correction (default 5000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="FILE", help="write the result (settings, predicted and measured figures) as JSON")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.set_defaults(func=_search)

    from . import bench, buildinfo, device_results, modelfile, train, widgets

    modelfile.add_parser(sub)
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


if __name__ == "__main__":
    sys.exit(main())
