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
    paths = net.layer_paths()
    for e in man["layers"]:
        arrays = [a for a in man["arrays"] if a["layer"] == e["name"]]
        nbytes = sum(a["nbytes"] for a in arrays)
        shapes = ", ".join(f"{a['role']} {'x'.join(map(str, a['shape']))}" for a in arrays)
        codes = next((a for a in arrays if a["role"] == "codes"), None)
        q = f"; K={arrays[0]['shape'][1]} at {codes['bits']} bits" if codes else ""
        if codes:  # version 1 files carry no precision: the layer's default, which the loaded layer holds
            from .precision import table_dtype

            stored = "" if "table_dtype" in e else " (default)"
            q += f", tables {table_dtype(net.params[e['name']])}{stored}"
        path = f"; runs by {paths[e['name']]}" if e["name"] in paths else ""
        rows.append(f"  {e['name']:<10} {e['class']:<8} {_size(nbytes):>10}  {shapes}{q}{path}")
    if net.meta:
        rows.append(f"  meta: {json.dumps(net.meta, sort_keys=True, ensure_ascii=False)[:200]}")
    return "\n".join(rows) + "\n"


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 2**20 else f"{n / 2**20:.2f} MiB"


def _names(text: str) -> list[str]:
    """``"a, b,"`` -> ["a", "b"]: a comma-separated option."""
    return [n.strip() for n in text.split(",") if n.strip()]


def _model_info(args: argparse.Namespace) -> int:
    print(describe(args.path), end="")
    return 0


def _table1(args: argparse.Namespace) -> int:
    from . import tables

    print(tables.render(tables.table1_rows(), args.format), end="")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from . import reproduce

    return reproduce.reproduce(out_dir=Path(args.out) if args.out else None, fast=args.fast, clock=args.clock)


def _evaluate(args: argparse.Namespace) -> int:
    from . import evaluate, tables

    if args.imagenet or args.weights:
        if not (args.imagenet and args.weights and args.arch):
            raise ValueError("the ImageNet path needs --imagenet DIR, --weights FILE and --arch alexnet|vgg16")
        rows = evaluate.imagenet_accuracy(args.imagenet, args.weights, args.arch, n_calib=args.n_calib or 500,
                                          limit=args.limit, calib_dir=args.calib_dir, ground_truth=args.ground_truth)
    else:
        archs = [args.arch] if args.arch else list(evaluate.MINI_SETTINGS)
        rows = evaluate.table1_accuracy(archs, n_calib=args.n_calib or 5000, n_test=args.limit,
                                        settings=[int(v) for v in args.setting.split(",")], methods=args.method.split(","))
    print(tables.render(rows, args.format), end="")
    return 0


# --------------------------------------------------------------------------- device
def _device_parser(subparsers: argparse._SubParsersAction) -> None:
    from . import device_results as dr

    _QUICK, _FULL, KINDS = dr._QUICK, dr._FULL, dr.KINDS
    p = subparsers.add_parser("device", help="Table 2 on a device: run the benchmark, validate/tabulate/plot result files")
    sub = p.add_subparsers(dest="action", required=True, metavar="action")
    r = sub.add_parser("run", help="benchmark AlexNet and CNN-S, dense and Q-CNN, and write a result file")
    r.add_argument("--quick", action="store_true", help=f"{_QUICK['repeat']} timed runs after {_QUICK['warmup']} warm-up (tests)")
    r.add_argument("--repeat", type=int, help=f"timed runs per configuration (default {_FULL['repeat']}; quick {_QUICK['repeat']})")
    r.add_argument("--warmup", type=int, help="untimed runs first (default 2; quick 1)")
    r.add_argument("--networks", default="alexnet,cnns", help="comma-separated (default alexnet,cnns)")
    r.add_argument("--name", help="device name used in the file name (default: from the phone model or CPU)")
    r.add_argument("--kind", choices=KINDS, help="phone (default on Android), x86-ci-reference, other")
    r.add_argument("--out-dir", default="device/results", help="where the result goes (default device/results)")
    r.add_argument("--cooldown", type=float, default=0.0, help="seconds of sleep between configurations (phones: 60)")
    r.add_argument("--backends", default="auto", help="kernel backends for the Q-CNN runs, e.g. pythran,numpy (default auto)")
    r.add_argument("--notes", default="", help="free text stored in the result (pinning, charger, temperature ...)")
    v = sub.add_parser("validate", help="check result files against the schema")
    v.add_argument("paths", nargs="+")
    t = sub.add_parser("table", help="Table 2 rows from result files (or folders) beside the paper's")
    t.add_argument("paths", nargs="+")
    t.add_argument("--format", choices=["markdown", "json"], default="markdown")
    g = sub.add_parser("plot", help="draw Table 2 from result files into a PNG")
    g.add_argument("paths", nargs="+")
    g.add_argument("--out", required=True, help="PNG to write (refuses to overwrite unless --force)")
    g.add_argument("--force", action="store_true")
    p.set_defaults(func=_device)


def _device(args: argparse.Namespace) -> int:
    from .device_results import ResultFormatError, load_result, load_results, plot_table2, run_benchmark
    from .tables import render_device_rows, table2_device_rows

    if args.action == "run":
        path = run_benchmark(args.out_dir, _names(args.networks), args.quick, args.repeat, args.warmup, args.name,
                             args.kind, args.cooldown, _names(args.backends), notes=args.notes)
        print(render_device_rows(table2_device_rows([load_result(path)])), end="")
        print(path)
        return 0
    if args.action == "validate":
        bad = 0
        for p in args.paths:
            try:
                load_results(p)
                print(f"ok: {p}")
            except (ResultFormatError, FileNotFoundError) as e:
                print(f"error: {e}", file=sys.stderr)
                bad += 1
        return 1 if bad else 0
    results = load_results(args.paths)
    if args.action == "table":
        rows = table2_device_rows(results)
        print(json.dumps(rows, indent=2) if args.format == "json" else render_device_rows(rows), end="\n" if args.format == "json" else "")
        return 0
    out = Path(args.out)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists (use --force to replace it)")
    import matplotlib

    matplotlib.use("Agg")
    fig = plot_table2(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(out)
    return 0


def _search(args: argparse.Namespace) -> int:
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


def _classify(args: argparse.Namespace) -> int:
    from .demo import class_names, classify, load_models, quantize_file, warm_up
    from .preprocess import ImageError

    if args.quantize is not None:
        print(f"wrote {quantize_file(args.quantize, args.out, overwrite=args.force)}")
        return 0
    if not args.photos:
        raise ValueError("give photo files to classify (or --quantize DENSE)")
    if args.repeat < 1:
        raise ValueError("--repeat must be >= 1")
    net, dense, notes = load_models(args.model, args.dense)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    warm_up(net, dense)  # the first pass decodes weights and packs codes: not what a frame costs
    names = class_names(net)
    status, records = 0, []
    for photo in args.photos:
        try:
            res = classify(net, photo, dense, repeat=args.repeat)
        except ImageError as e:
            records.append({"photo": str(photo), "error": str(e)})
            if not args.json:
                print(f"{photo}: error: {e}")
            status = 2
            continue
        probs = sorted(zip(res.probs.tolist(), names), reverse=True)[: max(1, args.top)]
        records.append(_classify_record(photo, net, res, probs, args.repeat))
        if args.json:
            continue
        line = ", ".join(f"{name} {p:.1%}" for p, name in probs)
        print(f"{photo}: {line}  [Q-CNN {1000 * res.seconds:.2f} ms, {res.backend}]")
        if res.dense_top is not None:
            print(f"{'':{len(str(photo))}}  dense: {res.dense_top[0][0]} {res.dense_top[0][1]:.1%}"
                  f"  [{1000 * res.dense_seconds:.2f} ms; Q-CNN {res.dense_seconds / res.seconds:.2f}x]")
        for n in res.notes:
            print(f"{'':{len(str(photo))}}  note: {n}")
    if args.json:
        print(json.dumps({"network": net.name, "notes": notes, "results": records}, indent=2))
    return status


def _classify_record(photo, net, res, probs: list, repeat: int) -> dict:
    """One photo's answer for ``classify --json``: top classes, times (median of ``repeat``), each layer's path."""
    rec = {"photo": str(photo), "top": [{"class": c, "p": round(p, 6)} for p, c in probs], "backend": res.backend,
           "qcnn_ms": round(1000 * res.seconds, 4), "repeat": repeat, "notes": res.notes,
           "layer_paths": net.layer_paths()}
    if res.dense_top is not None:
        rec.update({"dense_top": {"class": res.dense_top[0][0], "p": round(res.dense_top[0][1], 6)},
                    "dense_ms": round(1000 * res.dense_seconds, 4),
                    "speedup_vs_dense": round(res.dense_seconds / res.seconds, 3)})
    return rec


def _info(args: argparse.Namespace) -> int:
    from . import buildinfo

    info = buildinfo.collect()
    print(json.dumps(info, indent=2) if args.json else buildinfo.render(info), end="\n" if args.json else "")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from . import bench, models

    names = _names(args.networks)
    for n in names:
        models.spec(n)  # ValueError for unknown names
    if args.repeat < 1:
        raise ValueError("--repeat must be >= 1")
    if args.out and Path(args.out).exists():
        raise FileExistsError(f"{args.out} already exists")
    run, render = ((bench.bench_layers, bench.render_layers) if args.command == "bench-layers"
                   else (bench.bench_networks, bench.render_networks))
    res = run(names, repeat=args.repeat, **({"profile": True} if getattr(args, "profile", False) else {}))
    text = json.dumps(res, indent=2)
    if args.out:
        with open(args.out, "x") as f:
            f.write(text + "\n")
    print(text if args.json else render(res, args.clock == "cpu"), end="\n" if args.json else "")
    return 0


def _train(args: argparse.Namespace) -> int:
    from . import train

    train.train_to_files(args.arch, args.out, args.epochs, args.seed, args.batch_size, args.lr, args.augment,
                         args.threads, args.force)
    return 0


def _data(args: argparse.Namespace) -> int:
    from . import data

    if args.action == "fetch":
        return 0 if data.fetch(args.dest, args.timeout) is not None else 1
    try:
        d = data.find_fashion_mnist()
    except data.DataError as e:
        print(e, file=sys.stderr)
        return 1
    problem = data.verify(d)
    print(f"Fashion-MNIST: {d}: " + ("OK" if problem is None else problem))
    return 0 if problem is None else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qcnn_lite", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = sub.add_parser("table1", help="Table 1's speed-up and compression columns beside the paper's")
    p.add_argument("--format", choices=["markdown", "json", "csv"], default="markdown")
    p.set_defaults(func=_table1)

    p = sub.add_parser("reproduce", help="rebuild the paper's tables into results/ and print them")
    p.add_argument("--out", default=None, help="output folder (default: the project's results/)")
    p.add_argument("--fast", action="store_true", help="smaller runs, for CI")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="Table 2's times: wall time (default) or thread CPU time (steadier on a busy machine)")
    p.set_defaults(func=_reproduce)

    p = sub.add_parser("evaluate", help="Table 1's accuracy column: quantize reference networks and measure their error")
    p.add_argument("--arch", help="mini-alexnet|mini-cnns|mini-vgg16 (default: all), or alexnet|vgg16 with --imagenet")
    p.add_argument("--n-calib", type=int, help="calibration images (default 5000; ImageNet 500)")
    p.add_argument("--limit", type=int, help="evaluate on the first N test images only")
    p.add_argument("--imagenet", metavar="DIR", help="ILSVRC-12 val folder (class folders, or flat with --ground-truth)")
    p.add_argument("--weights", metavar="FILE", help="a torchvision alexnet/vgg16 state dict (.pth)")
    p.add_argument("--calib-dir", metavar="DIR", help="calibration images for the ImageNet path (default: the first val images)")
    p.add_argument("--ground-truth", metavar="FILE", help="ground-truth file for a flat val folder")
    p.add_argument("--setting", default="1,2", help="Table 1 settings to run (default 1,2)")
    p.add_argument("--method", default="ec,plain", help="ec, plain or both (default ec,plain)")
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

    p = sub.add_parser("model-info", help="check a .qcnn model file and list its layers and sizes")
    p.add_argument("path", help="model file written by qcnn_lite.modelfile.save")
    p.set_defaults(func=_model_info)

    p = sub.add_parser("classify", help="classify photos with the quantized Fashion-MNIST network "
                                        "(or --quantize one for the webcam demo)",
                       description="Classify photo files through the webcam demo's code path "
                                   "(pre-processing, Q-CNN, optionally the dense network).")
    p.add_argument("photos", nargs="*", help="image files (JPEG, PNG, ...)")
    p.add_argument("--model", default=None, help="model file (default: the quantized mini-alexnet)")
    p.add_argument("--dense", default=None, help="dense model file to compare with (default: mini-alexnet's)")
    p.add_argument("--top", type=int, default=5, help="classes to list (default 5)")
    p.add_argument("--quantize", metavar="DENSE", default=None,
                   help="instead: write the demo's quantized network for this dense model file "
                        "(to --out, default <DENSE>-q.qcnn beside it)")
    p.add_argument("--out", default=None, help="output file for --quantize")
    p.add_argument("--force", action="store_true", help="let --quantize replace an existing file")
    p.add_argument("--json", action="store_true", help="print the answers and times as JSON")
    p.add_argument("--repeat", type=int, default=10,
                   help="timed forward passes per photo and network; the median is shown (default 10)")
    p.set_defaults(func=_classify)

    p = sub.add_parser("info", help="kernel backend, build options, compiler, numpy/BLAS")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_info)

    for name, help in [("bench-layers", "time each conv/fc layer: LUT kernels vs dense numpy and torch"),
                       ("bench", "time whole networks; model size and peak memory")]:
        p = sub.add_parser(name, help=help)
        p.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
        p.add_argument("--repeat", type=int, default=10, help="timed runs per figure (default 10, at least 10 for the record)")
        p.add_argument("--networks", default="alexnet,cnns", help="comma-separated: alexnet,cnns")
        p.add_argument("--out", help="also write the JSON to this file (refuses to overwrite)")
        p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                       help="what the tables show: wall time (default) or thread CPU time (steadier on a busy machine)")
        if name == "bench-layers":
            p.add_argument("--profile", action="store_true",
                           help="also split each conv layer's time into phases: scale, table build, run-adds, epilogue")
        p.set_defaults(func=_bench)

    _device_parser(sub)

    from . import models, train

    p = sub.add_parser("train", help="train a mini reference network on Fashion-MNIST (needs torch)",
                       description=train.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", required=True, choices=[n for n in models.SPECS if n.startswith("mini-")])
    p.add_argument("--epochs", type=int, default=None, help="default: per architecture (%s)" %
                   ", ".join(f"{k} {v['epochs']}" for k, v in train.DEFAULTS.items()))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--augment", choices=train.AUGMENT, default=None, help="none, flip (random horizontal flips) or shift "
                   "(flips and 2-pixel shifts; needs more epochs); default: per architecture")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: on a shared 2-core machine more threads run far slower)")
    p.add_argument("--out", default="data/models", help="output folder (default data/models)")
    p.add_argument("--force", action="store_true", help="overwrite existing model and record")
    p.set_defaults(func=_train)

    p = sub.add_parser("data", help="Fashion-MNIST: fetch it if missing (make data), or check it")
    p.add_argument("action", choices=["fetch", "check"], help="fetch: get it if missing; check: locate and verify")
    p.add_argument("--dest", default=None, help="download folder (default <repo>/data/fashion-mnist)")
    p.add_argument("--timeout", type=float, default=10.0, help="download timeout per file, seconds")
    p.set_defaults(func=_data)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, ImportError, RuntimeError) as e:  # a user's mistake: a message, not a traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
