"""Command line: ``python -m qcnn_lite <command>``; ``--help`` lists the commands.

Every entry point of the package is a subcommand here; each handler imports
what it runs when it runs, so ``--help`` stays fast and needs no torch.
Every argument is checked by its parser's type function (:mod:`qcnn_lite.cli.checks`)
before a handler starts, and every error ends as one line on stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from qcnn_lite.cli import checks, device


# --------------------------------------------------------------------------- model-info
def describe(path: str | os.PathLike) -> str:
    """A text summary of a model file, after full validation: layers, K, bits and bytes per layer."""
    from qcnn_lite.io import modelfile

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
            from qcnn_lite.nn.precision import table_dtype

            stored = "" if "table_dtype" in e else " (default)"
            q += f", tables {table_dtype(net.params[e['name']])}{stored}"
        path = f"; runs by {paths[e['name']]}" if e["name"] in paths else ""
        rows.append(f"  {e['name']:<10} {e['class']:<8} {_size(nbytes):>10}  {shapes}{q}{path}")
    if net.meta:
        rows.append(f"  meta: {json.dumps(net.meta, sort_keys=True, ensure_ascii=False)[:200]}")
    return "\n".join(rows) + "\n"


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 2**20 else f"{n / 2**20:.2f} MiB"


def _model_info(args: argparse.Namespace) -> int:
    print(describe(args.path), end="")
    return 0


def _table1(args: argparse.Namespace) -> int:
    from qcnn_lite.io.results import render
    from qcnn_lite.repro import rows as tables

    print(render(tables.table1_rows(), args.format), end="")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from qcnn_lite.repro import reproduce

    return reproduce.reproduce(out_dir=Path(args.out) if args.out else None, fast=args.fast, clock=args.clock)


def _evaluate(args: argparse.Namespace) -> int:
    from qcnn_lite.io.results import render
    from qcnn_lite.paper.constants import MINI_SETTINGS
    from qcnn_lite.repro import accuracy as evaluate

    if args.imagenet or args.weights:
        if not (args.imagenet and args.weights and args.arch and len(args.arch) == 1):
            raise checks.UsageError("the ImageNet path needs --imagenet DIR, --weights FILE and --arch alexnet|vgg16")
        rows = evaluate.imagenet_accuracy(args.imagenet, args.weights, args.arch[0], n_calib=args.n_calib or 500,
                                          limit=args.limit, calib_dir=args.calib_dir, ground_truth=args.ground_truth)
    else:
        archs = args.arch or list(MINI_SETTINGS)
        unknown = [a for a in archs if a not in MINI_SETTINGS]
        if unknown:
            raise checks.UsageError(f"--arch: {unknown[0]} needs --imagenet; without it use {', '.join(MINI_SETTINGS)}")
        rows = evaluate.table1_accuracy(archs, n_calib=args.n_calib or 5000, n_test=args.limit,
                                        settings=[int(v) for v in args.setting], methods=args.method)
    print(render(rows, args.format), end="")
    return 0


def _search(args: argparse.Namespace) -> int:
    from qcnn_lite.io.paths import write_file
    from qcnn_lite.quant import search_run

    rec = search_run.search_arch(args.arch, args.target, n_heldout=args.n_heldout, n_calib=args.n_calib, seed=args.seed)
    text = json.dumps(rec, indent=1) + "\n"
    if not args.out:
        print(text, end="")
        return 0
    write_file(args.out, text.encode(), overwrite=args.force)
    m = rec["measured"]
    print(f"{rec['network']} {rec['target']}: compression {rec['predicted']['compression']}x, speed-up "
          f"{rec['predicted']['speedup']}x (cost model), held-out top-1 change {m['top1_change']:+.2f} pt; wrote {args.out}")
    return 0


def _classify(args: argparse.Namespace) -> int:
    from qcnn_lite.apps.demo import class_names, classify, load_models, quantize_file, warm_up
    from qcnn_lite.io.preprocess import ImageError

    if args.quantize is not None:
        dense = Path(args.quantize)
        out = args.out or checks.output_file()(str(dense.with_name(f"{dense.stem}-q.qcnn")))
        checks.check_outputs(argparse.Namespace(out=out, force=args.force))
        _data_note()
        print(f"wrote {quantize_file(args.quantize, out, overwrite=args.force)}")
        return 0
    if not args.photos:
        raise checks.UsageError("give photo files to classify (or --quantize DENSE)")
    _check_dense(args.dense, args.model)
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
                print(f"{photo}: error: {e}", file=sys.stderr)
            status = 2
            continue
        probs = sorted(zip(res.probs.tolist(), names), reverse=True)[: args.top]
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


def _check_dense(dense_path: str | None, model_path: str | None) -> None:
    """--dense must be a dense network of the same architecture as --model (default mini-alexnet)."""
    if dense_path is None:
        return
    from qcnn_lite.apps.demo import DEFAULT_ARCH
    from qcnn_lite.io import modelfile

    dense = modelfile.load(dense_path)
    if dense.is_quantized:
        raise checks.UsageError(f"--dense: {dense_path} is a quantized model: give the dense model file")
    arch = modelfile.load(model_path).name if model_path is not None else DEFAULT_ARCH
    if dense.name != arch:
        raise checks.UsageError(f"--dense: {dense_path} is a {dense.name}, the model is a {arch}: "
                                "give the dense file of the same network")


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
    from qcnn_lite.kernels import buildinfo

    info = buildinfo.collect()
    print(json.dumps(info, indent=2) if args.json else buildinfo.render(info), end="\n" if args.json else "")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from qcnn_lite.bench import benchmarks as bench
    from qcnn_lite.io.paths import write_file

    names = args.networks
    run, render = ((bench.bench_layers, bench.render_layers) if args.command == "bench-layers"
                   else (bench.bench_networks, bench.render_networks))
    res = run(names, repeat=args.repeat, **({"profile": True} if getattr(args, "profile", False) else {}))
    text = json.dumps(res, indent=2)
    if args.out:
        write_file(args.out, (text + "\n").encode())
    print(text if args.json else render(res, args.clock == "cpu"), end="\n" if args.json else "")
    return 0


def _train(args: argparse.Namespace) -> int:
    from qcnn_lite.reference import train

    train.train_to_files(args.arch, args.out, args.epochs, args.seed, args.batch_size, args.lr, args.augment,
                         args.threads, args.force)
    return 0


def _data(args: argparse.Namespace) -> int:
    from qcnn_lite.io import datasets as data

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


_DESCRIPTION = """\
Quantized CNN (Wu et al. 2016) in numpy: rebuild the paper's tables, quantize and run networks,
classify photos, and benchmark on a computer or a phone. Each command's --help lists its options.

Exit codes: 0 done; 1 the work failed or found problems (a benchmark, a download, device validate);
2 an argument, input file or environment variable is wrong (nothing was done)."""

_SEED = checks.int_in(0, 2**32 - 1)  # numpy's seeds
_IMAGES = checks.int_in(1, 60_000)  # Fashion-MNIST has 60,000 training images


def _paper_parsers(sub: argparse._SubParsersAction) -> None:
    """table1, reproduce, evaluate, search: the paper's tables."""
    from qcnn_lite.nn import models
    from qcnn_lite.paper.constants import MINI_SETTINGS

    p = sub.add_parser("table1", help="Table 1's speed-up and compression columns beside the paper's")
    p.add_argument("--format", choices=["markdown", "json", "csv"], default="markdown", help="output format (default markdown)")
    p.set_defaults(func=_table1)

    p = sub.add_parser("reproduce", help="rebuild the paper's tables into results/ and print them")
    p.add_argument("--out", type=checks.output_dir, default=None, help="output folder (default: the project's results/)")
    p.add_argument("--fast", action="store_true", help="smaller runs, for CI")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="Table 2's times: wall time (default) or thread CPU time (steadier on a busy machine)")
    p.set_defaults(func=_reproduce, uses_data=True)

    n_settings = min(len(v) for v in MINI_SETTINGS.values())
    p = sub.add_parser("evaluate", help="Table 1's accuracy column: quantize reference networks and measure their error")
    p.add_argument("--arch", type=checks.names(models.spec, "network", "mini-alexnet"),
                   help="mini-alexnet|mini-cnns|mini-vgg16 (default: all), or alexnet|vgg16 with --imagenet")
    p.add_argument("--n-calib", type=_IMAGES, help="calibration images, 1 to 60000 (default 5000; ImageNet 500)")
    p.add_argument("--limit", type=checks.int_in(1, 50_000), help="evaluate on the first N test images only")
    p.add_argument("--imagenet", metavar="DIR", type=checks.input_dir,
                   help="ILSVRC-12 val folder (class folders, or flat with --ground-truth)")
    p.add_argument("--weights", metavar="FILE", type=checks.input_file(), help="a torchvision alexnet/vgg16 state dict (.pth)")
    p.add_argument("--calib-dir", metavar="DIR", type=checks.input_dir,
                   help="calibration images for the ImageNet path (default: the first val images)")
    p.add_argument("--ground-truth", metavar="FILE", type=checks.input_file(), help="ground-truth file for a flat val folder")
    p.add_argument("--setting", type=checks.choice_list([str(i) for i in range(1, n_settings + 1)], "setting"),
                   default=["1", "2"], help="Table 1 settings to run (default 1,2)")
    p.add_argument("--method", type=checks.choice_list(["ec", "plain"], "method"), default=["ec", "plain"],
                   help="ec, plain or both (default ec,plain)")
    p.add_argument("--format", choices=["markdown", "json", "csv"], default="markdown", help="output format (default markdown)")
    p.set_defaults(func=_evaluate, uses_data=True)

    p = sub.add_parser("search", help="choose per-layer (C's, K) for a compression, speed-up or accuracy target")
    p.add_argument("--arch", required=True, choices=sorted(MINI_SETTINGS), help="mini-alexnet|mini-cnns|mini-vgg16")
    p.add_argument("--target", required=True, type=_target,
                   help="compression=15, speedup=4, max-loss=1.0, or several: compression=20,speedup=1.5")
    p.add_argument("--n-heldout", type=_IMAGES, default=2000, help="held-out training images that rank settings (default 2000)")
    p.add_argument("--n-calib", type=_IMAGES, default=5000, help="calibration images for error correction (default 5000)")
    p.add_argument("--seed", type=_SEED, default=0, help="random seed of the quantizer (default 0)")
    p.add_argument("--out", metavar="FILE", type=checks.output_file(),
                   help="write the result (settings, predicted and measured figures) as JSON")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_search, uses_data=True)


def _target(text: str):
    """--target, parsed by the search's own parser so both accept the same texts."""
    from qcnn_lite.quant import search

    try:
        return search.parse_target(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _model_parsers(sub: argparse._SubParsersAction) -> None:
    """model-info, classify, info, bench-layers, bench: models and their speed."""
    from qcnn_lite.io.preprocess import MAX_FILE_BYTES
    from qcnn_lite.nn import models

    p = sub.add_parser("model-info", help="check a .qcnn model file and list its layers and sizes")
    p.add_argument("path", type=checks.input_file(), help="model file (.qcnn)")
    p.set_defaults(func=_model_info)

    p = sub.add_parser("classify", help="classify photos with the quantized Fashion-MNIST network "
                                        "(or --quantize one for the webcam demo)",
                       description="Classify photo files through the webcam demo's code path "
                                   "(pre-processing, Q-CNN, optionally the dense network).")
    p.add_argument("photos", nargs="*", type=checks.input_file(MAX_FILE_BYTES), help="image files (JPEG, PNG, ...)")
    p.add_argument("--model", type=checks.input_file(), default=None, help="model file (default: the quantized mini-alexnet)")
    p.add_argument("--dense", type=checks.input_file(), default=None,
                   help="dense model file of the same network to compare with (default: mini-alexnet's)")
    p.add_argument("--top", type=checks.int_in(1, 1000), default=5, help="classes to list (default 5)")
    p.add_argument("--quantize", metavar="DENSE", type=checks.input_file(), default=None,
                   help="instead: write the demo's quantized network for this dense model file "
                        "(to --out, default <DENSE>-q.qcnn beside it)")
    p.add_argument("--out", type=checks.output_file(), default=None, help="output file for --quantize")
    p.add_argument("--force", action="store_true", help="let --quantize replace an existing file")
    p.add_argument("--json", action="store_true", help="print the answers and times as JSON")
    p.add_argument("--repeat", type=checks.int_in(1, 10_000), default=10,
                   help="timed forward passes per photo and network; the median is shown (default 10)")
    p.set_defaults(func=_classify)

    p = sub.add_parser("info", help="kernel backend, build options, compiler, numpy/BLAS")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_info)

    for name, help in [("bench-layers", "time each conv/fc layer: LUT kernels vs dense numpy, torch and ONNX Runtime"),
                       ("bench", "time whole networks; model size and peak memory")]:
        p = sub.add_parser(name, help=help)
        p.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
        p.add_argument("--repeat", type=checks.int_in(1, 10_000), default=10,
                       help="timed rounds, each engine once a round, interleaved (default 10, at least 10 for the record)")
        p.add_argument("--networks", type=checks.names(models.spec, "network", "alexnet,cnns"),
                       default=["alexnet", "cnns"], help="comma-separated: alexnet,cnns")
        p.add_argument("--out", type=checks.output_file(), help="also write the JSON to this file (refuses to overwrite)")
        p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                       help="what the tables show: wall time (default) or thread CPU time (steadier on a busy machine)")
        if name == "bench-layers":
            p.add_argument("--profile", action="store_true",
                           help="also split each conv layer's time into phases: scale, table build, run-adds, epilogue")
        p.set_defaults(func=_bench)


def _train_parsers(sub: argparse._SubParsersAction) -> None:
    """train, data: the reference networks and their data."""
    from qcnn_lite.nn import models
    from qcnn_lite.reference import train

    p = sub.add_parser("train", help="train a mini reference network on Fashion-MNIST (needs torch)",
                       description="Train a mini reference network on Fashion-MNIST with torch. Writes <out>/<arch>.qcnn "
                                   "(the dense network) and <out>/<arch>.json (settings, training time, test top-1 and "
                                   "top-5 accuracy); existing files are replaced only with --force.")
    p.add_argument("--arch", required=True, choices=[n for n in models.SPECS if n.startswith("mini-")],
                   help="the network to train")
    p.add_argument("--epochs", type=checks.int_in(1, 1000), default=None, help="default: per architecture (%s)" %
                   ", ".join(f"{k} {v['epochs']}" for k, v in train.DEFAULTS.items()))
    p.add_argument("--seed", type=_SEED, default=0, help="random seed of weights and batches (default 0)")
    p.add_argument("--batch-size", type=_IMAGES, default=64, help="training images per step (default 64)")
    p.add_argument("--lr", type=checks.float_in(0, 10, lo_open=True), default=None,
                   help="learning rate of Adam (default: per architecture, 0.001)")
    p.add_argument("--augment", choices=train.AUGMENT, default=None, help="none, flip (random horizontal flips) or shift "
                   "(flips and 2-pixel shifts; needs more epochs); default: per architecture")
    p.add_argument("--threads", type=checks.int_in(1, 256), default=1,
                   help="torch threads (default 1: on a busy machine more threads can run slower)")
    p.add_argument("--out", type=checks.output_dir, default="data/models", help="output folder (default data/models)")
    p.add_argument("--force", action="store_true", help="overwrite existing model and record")
    p.set_defaults(func=_train, uses_data=True)

    p = sub.add_parser("data", help="Fashion-MNIST: fetch it if missing (make data), or check it")
    p.add_argument("action", choices=["fetch", "check"], help="fetch: get it if missing; check: locate and verify")
    p.add_argument("--dest", type=checks.output_dir, default=None,
                   help="download folder (default <repo>/data/fashion-mnist)")
    p.add_argument("--timeout", type=checks.float_in(0, 3600, lo_open=True), default=10.0,
                   help="download timeout per file, seconds (default 10)")
    p.set_defaults(func=_data, uses_data=True)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; each option's type function checks its value (:mod:`qcnn_lite.cli.checks`)."""
    parser = checks.Parser(prog="python -m qcnn_lite", description=_DESCRIPTION,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    _paper_parsers(sub)
    _model_parsers(sub)
    device.add_parser(sub)
    _train_parsers(sub)
    return parser


def _data_note() -> None:
    """Say where Fashion-MNIST comes from when QCNN_DATA names a folder that does not hold it."""
    from qcnn_lite.io import datasets

    note = datasets.env_data_note()
    if note:
        print(f"note: {note}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command: check its arguments, paths and environment, then work; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)  # --help exits here, before the environment is checked
        problem = checks.env_problem()
        if problem:
            raise checks.UsageError(f"{problem}; unset it or fix it")
        checks.check_outputs(args)
        if getattr(args, "uses_data", False):
            _data_note()
        return args.func(args)
    except checks.UsageError as e:
        return _fail(str(e), 2)
    except (ValueError, OSError, ImportError) as e:  # a bad input found while reading it: what to fix is in e
        return _fail(str(e), 2)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as e:  # noqa: BLE001  the work failed: one line, never a traceback
        return _fail(f"{type(e).__name__}: {e}" if not isinstance(e, RuntimeError) else str(e), 1)


def _fail(message: str, code: int) -> int:
    lines = [line for line in message.strip().splitlines() if line.strip()] or ["failed"]
    print(f"error: {lines[0] if len(lines) == 1 else ' '.join(l.strip() for l in lines)}", file=sys.stderr)
    return code
