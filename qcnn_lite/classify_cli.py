"""``python -m qcnn_lite classify``: photo files through the webcam demo's code path (:mod:`qcnn_lite.widgets`).

Pre-processing, the Q-CNN and optionally the dense network, each warmed up and
timed on one BLAS thread (median of ``--repeat`` forward passes); ``--json``
prints the answers and times as JSON, so the two can be compared by a script.
"""
from __future__ import annotations

import json
import sys
from typing import Any

from . import widgets
from .preprocess import ImageError

__all__ = ["add_parser", "main"]


def add_parser(subparsers: Any) -> Any:
    """Register ``classify`` (photo files -> top-5 of the quantized network) on argparse subparsers."""
    p = subparsers.add_parser("classify", help="classify photos with the quantized Fashion-MNIST network "
                                               "(or --quantize one for the webcam demo)",
                              description="Classify photo files through the webcam demo's code path "
                                          "(pre-processing, Q-CNN, optionally the dense network).")
    _arguments(p)
    p.set_defaults(func=_run)
    return p


def _arguments(p: Any) -> None:
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


def _run(args: Any) -> int:
    if args.quantize is not None:
        try:
            path = widgets.quantize_file(args.quantize, args.out, overwrite=args.force)
        except (ValueError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"wrote {path}")
        return 0
    if not args.photos:
        print("error: give photo files to classify (or --quantize DENSE)", file=sys.stderr)
        return 2
    if args.repeat < 1:
        print("error: --repeat must be >= 1", file=sys.stderr)
        return 2
    try:
        net, dense, notes = widgets.load_models(args.model, args.dense)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    widgets.warm_up(net, dense)  # the first pass decodes weights and packs codes: not what a frame costs
    names = widgets.class_names(net)
    status, records = 0, []
    for photo in args.photos:
        try:
            res = widgets.classify(net, photo, dense, repeat=args.repeat)
        except ImageError as e:
            records.append({"photo": str(photo), "error": str(e)})
            if not args.json:
                print(f"{photo}: error: {e}")
            status = 2
            continue
        probs = sorted(zip(res.probs.tolist(), names), reverse=True)[: max(1, args.top)]
        records.append(_record(photo, net, dense, res, probs, args.repeat))
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


def _record(photo: Any, net: Any, dense: Any, res: Any, probs: list, repeat: int) -> dict[str, Any]:
    """One photo's answer for ``--json``: top classes, times (median of ``repeat``) and which path each layer took."""
    rec: dict[str, Any] = {
        "photo": str(photo), "top": [{"class": c, "p": round(p, 6)} for p, c in probs], "backend": res.backend,
        "qcnn_ms": round(1000 * res.seconds, 4), "repeat": repeat, "notes": res.notes,
        "layer_paths": net.layer_paths(),
    }
    if res.dense_top is not None:
        rec.update({"dense_top": {"class": res.dense_top[0][0], "p": round(res.dense_top[0][1], 6)},
                    "dense_ms": round(1000 * res.dense_seconds, 4),
                    "speedup_vs_dense": round(res.dense_seconds / res.seconds, 3)})
    return rec


def main(argv: list[str] | None = None) -> int:
    """``python -m qcnn_lite.widgets PHOTO ...``: the ``classify`` subcommand on its own."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m qcnn_lite.widgets", description="Classify photo files.")
    _arguments(p)
    return _run(p.parse_args(argv))
