"""Speed and memory benchmarks: one thread, one image, look-up tables against dense baselines.

Two entry points, wired as CLI subcommands:

* ``bench-layers`` (:func:`main_layers`) -- every conv/fc layer of full-size AlexNet
  and CNN-S, quantized at the released-AlexNet settings;
* ``bench`` (:func:`main`) -- whole networks, plus model file size and peak memory.

Baselines timed in the same run: our dense numpy engine (BLAS), the dense
network without BLAS (``dense-noblas``: compiled loops, the paper's condition,
:mod:`qcnn_lite.noblas`) when those kernels are built, torch fp32 and torch
dynamic int8 (``quantize_dynamic`` on the fc layers) when torch is installed. Everything runs on one thread (threadpoolctl for numpy's
BLAS, ``torch.set_num_threads(1)``). Each figure is the median of ``repeat``
runs after warm-up, with min and max. Quantized layers get random codebooks
and codes of the right shapes: weights do not change the time.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from . import kernels, models
from .measure import baseline_rss, machine, quantized_layer, quantized_network, run_model, single_thread, time_call
from .paper import RELEASED_ALEXNET, table2_paper
from .layers import QLinear
from .noblas import LABEL as NOBLAS_LABEL
from .noblas import direct_layer, noblas_network

__all__ = ["bench_layers", "bench_networks", "render_layers", "render_networks", "add_parsers"]

NETWORKS = ("alexnet", "cnns")


def _torch():
    """torch and the bridge's converters, or (None, None, None) without torch."""
    try:
        import torch

        from .torch_bridge import network_to_torch, torch_layer
    except ImportError:
        return None, None, None
    return torch, torch_layer, network_to_torch


def _torch_int8(model):
    """Dynamic int8 quantization of the fc layers, or None where this torch cannot do it."""
    import torch

    try:
        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():  # torch 2.x deprecates its quantized tensors; still the baseline asked for
            warnings.simplefilter("ignore")
            return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    except Exception:  # noqa: BLE001  (no quantized engine on this build/CPU)
        return None


@contextlib.contextmanager
def _backend(name: str) -> Iterator[None]:
    old = kernels.backend()
    kernels.set_backend(name)
    try:
        yield
    finally:
        kernels.set_backend(old)


def _engines(dense_fn, q_fn, torch_fn, torch_int8_fn, repeat: int, float_tables_fn=None,
             noblas_fn=None) -> dict[str, dict[str, float]]:
    """Time every engine available; q_fn runs under each kernel backend.

    ``noblas_fn``: the dense layer or network run without BLAS (the paper's baseline).
    ``float_tables_fn``: the same layer with float tables on the compiled backend, timed
    beside the default table precision (8-bit where it applies).
    """
    t: dict[str, dict[str, float]] = {"numpy-dense": time_call(dense_fn, repeat)}
    if noblas_fn is not None:
        t["dense-noblas"] = time_call(noblas_fn, max(3, repeat // 2))  # 3-4x slower than the rest: fewer runs
    if float_tables_fn is not None and "pythran" in kernels.available_backends():
        with _backend("pythran"):
            t["float-tables"] = time_call(float_tables_fn, repeat)
    if torch_fn is not None:
        t["torch-fp32"] = time_call(torch_fn, repeat)
    if torch_int8_fn is not None:
        t["torch-int8-dynamic"] = time_call(torch_int8_fn, repeat)
    for b in kernels.available_backends():
        with _backend(b):
            t[f"qcnn-{b}"] = time_call(q_fn, repeat)
    return t


def _speedups(times: dict[str, dict[str, float]], key: str = "median_ms") -> dict[str, float]:
    """Speed-up of the compiled Q-CNN backend (numpy if not built) over every baseline: ratios of medians."""
    best = "qcnn-pythran" if "qcnn-pythran" in times else "qcnn-numpy"
    q = times[best][key]
    return {k: v[key] / q for k, v in times.items() if not k.startswith("qcnn-")}


# --------------------------------------------------------------------------- layers
def bench_layers(names: Sequence[str] = NETWORKS, settings: dict[str, tuple[int, int]] = RELEASED_ALEXNET,
                 repeat: int = 10, seed: int = 0) -> dict[str, Any]:
    """Time every conv/fc layer of the full-size networks at batch 1, one thread."""
    torch, torch_layer, _ = _torch()
    rows = []
    with single_thread():
        for name in names:
            dense = models.synthetic(name, seed)
            dims = dense.input_dims()
            rng = np.random.default_rng(seed)
            for i, L in dense.param_layers():
                in_shape = dims[L["name"]]
                layer = dense.params[L["name"]]
                q = quantized_layer(L, in_shape, settings, rng)
                x = rng.standard_normal((1,) + tuple(in_shape), dtype=np.float32)
                if L["type"] == "fc":
                    x = x.reshape(1, -1)
                torch_fn = int8_fn = None
                if torch is not None:
                    tm = torch_layer(layer)
                    xt = torch.from_numpy(x)
                    torch_fn = lambda tm=tm, xt=xt: tm(xt)
                    if L["type"] == "fc":
                        qm = _torch_int8(torch.nn.Sequential(tm))
                        int8_fn = None if qm is None else (lambda qm=qm, xt=xt: qm(xt))
                qf = None
                if L["type"] == "fc" and q.table_dtype != "float32":
                    qf = QLinear(q.codebooks, q.codes, q.bias, table_dtype="float32")
                nb = direct_layer(layer, L["name"]) if kernels.direct_available() else None
                with (torch.inference_mode() if torch else contextlib.nullcontext()):
                    times = _engines(lambda: layer(x), lambda: q(x), torch_fn, int8_fn, repeat,
                                     None if qf is None else (lambda: qf(x)), None if nb is None else (lambda: nb(x)))
                d, K = q.sub_dim, q.n_codewords
                tables = L["type"] == "fc" or q.uses_tables(*in_shape[1:])
                rows.append({
                    "network": name, "layer": L["name"], "type": L["type"], "input": list(in_shape),
                    "output": list(layer(x).shape[1:]), "sub_dim": d, "codewords": K,
                    "path": "tables" if tables else "decoded weight",
                    "table_dtype": getattr(q, "table_dtype", "float32"),
                    "times": times, "speedup": _speedups(times), "speedup_cpu": _speedups(times, "cpu_median_ms"),
                })
    return {"machine": machine(), "settings": {k: list(v) for k, v in settings.items()}, "layers": rows}


# --------------------------------------------------------------------------- networks
def bench_networks(names: Sequence[str] = NETWORKS, settings: dict[str, tuple[int, int]] = RELEASED_ALEXNET,
                   repeat: int = 10, seed: int = 0, memory: bool = True) -> dict[str, Any]:
    """Whole networks, one image, one thread; plus model file sizes and peak memory."""
    from . import modelfile

    torch, _, network_to_torch = _torch()
    results = []
    for name in names:
        dense = models.synthetic(name, seed)
        qnet = quantized_network(name, settings, seed)
        x = np.random.default_rng(seed).standard_normal((1,) + dense.input_shape, dtype=np.float32)
        torch_fn = int8_fn = None
        if torch is not None:
            tm = network_to_torch(dense)
            xt = torch.from_numpy(x)
            torch_fn = lambda tm=tm, xt=xt: tm(xt)
            qm = _torch_int8(tm)
            int8_fn = None if qm is None else (lambda qm=qm, xt=xt: qm(xt))
        nb = noblas_network(dense) if kernels.direct_available() else None
        with single_thread(), (torch.inference_mode() if torch else contextlib.nullcontext()):
            times = _engines(lambda: dense.forward(x), lambda: qnet.forward(x), torch_fn, int8_fn, repeat,
                             noblas_fn=None if nb is None else (lambda: nb.forward(x)))
        entry: dict[str, Any] = {"network": name, "times": times, "speedup": _speedups(times),
                                 "speedup_cpu": _speedups(times, "cpu_median_ms"),
                                 "paper_speedup_vs_own_dense": paper_speedup(name)}
        if memory:
            with tempfile.TemporaryDirectory() as tmp:
                sizes, rss = {}, {}
                for label, net in (("dense", dense), ("qcnn", qnet)):
                    path = modelfile.save(net, Path(tmp) / f"{name}-{label}.qcnn")
                    sizes[label] = path.stat().st_size
                    backends = ["numpy"] if label == "dense" else kernels.available_backends()
                    for b in backends:
                        rss[f"{label}-{b}"] = run_model(path, b)["peak_rss_mib"]
                    path.unlink()
                rss["no-model-baseline"] = baseline_rss("numpy")
            entry["file_bytes"] = sizes
            entry["file_mib"] = {k: v / 2**20 for k, v in sizes.items()}
            entry["compression"] = sizes["dense"] / sizes["qcnn"]
            entry["peak_rss_mib"] = rss
        results.append(entry)
        del dense, qnet, nb
    return {"machine": machine(), "settings": {k: list(v) for k, v in settings.items()}, "networks": results}


def paper_speedup(name: str) -> float | None:
    """The paper's Table 2 speed-up of Q-CNN over its own dense code (Huawei Mate 7), or None."""
    try:
        p = table2_paper(name)
    except (KeyError, ValueError):
        return None
    return p["cnn"]["time_s"] / p["qcnn"]["time_s"]


# --------------------------------------------------------------------------- output
_LEGEND = (f"numpy-dense: our dense engine (BLAS); dense-noblas: {NOBLAS_LABEL}, compiled loops; "
           "torch-fp32 / torch-int8-dynamic: the modern baselines")
_ORDER = ["numpy-dense", "dense-noblas", "torch-fp32", "torch-int8-dynamic", "float-tables", "qcnn-numpy", "qcnn-pythran"]


def _time_table(rows: list[tuple[str, dict, dict]], cpu: bool = False) -> str:
    engines = [e for e in _ORDER if any(e in t for _, t, _ in rows)]
    base = [e for e in engines if not e.startswith("qcnn-")]
    head = ["", *[f"{e} ms" for e in engines], *[f"x vs {e}" for e in base]]
    lines = [head]
    for label, t, s in rows:
        cells = [label]
        for e in engines:
            v = t.get(e)
            if v is None:
                cells.append("-")
            else:
                cells.append(f"{v['cpu_median_ms']:.2f}" if cpu else f"{v['median_ms']:.2f} [{v['min_ms']:.2f}-{v['max_ms']:.2f}]")
        cells += ["-" if e not in s else f"{s[e]:.2f}" for e in base]
        lines.append(cells)
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    out = ["  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))) for r in lines]
    out.insert(1, "-" * len(out[0]))
    return "\n".join(out)


def _header(m: dict, cpu: bool = False) -> str:
    load = ", ".join(f"{v:.2f}" for v in m["load_average"]) if m.get("load_average") else "?"
    what = "median thread CPU time" if cpu else "median [min-max] wall time"
    return (f"{m['cpu']} ({m['cores']} cores), load average {load}; numpy {m['numpy']}, torch {m['torch']}; "
            f"one thread, batch 1, {what} of the runs")


def render_layers(res: dict, cpu: bool = False) -> str:
    sp = "speedup_cpu" if cpu else "speedup"
    rows = [(f"{r['network']}/{r['layer']} {'x'.join(map(str, r['input']))} C's={r['sub_dim']} K={r['codewords']}"
             + ("" if r.get("path", "tables") == "tables" else " *"), r["times"], r[sp]) for r in res["layers"]]
    note = ("\n* runs from its decoded weight: its tables cannot pay off (QConv2d.uses_tables)"
            if any(r.get("path", "tables") != "tables" for r in res["layers"]) else "")
    return (_header(res["machine"], cpu) + "\n" + _time_table(rows, cpu) + "\n" + _LEGEND
            + "\n(x vs B: speed-up of the Q-CNN layers, compiled LUT kernels at their default table precision"
            " -- 8-bit for fc -- over baseline B; float-tables: the same layer with float tables)" + note + "\n")


def render_networks(res: dict, cpu: bool = False) -> str:
    sp = "speedup_cpu" if cpu else "speedup"
    out = [_header(res["machine"], cpu), _time_table([(r["network"], r["times"], r[sp]) for r in res["networks"]], cpu),
           _LEGEND]
    for r in res["networks"]:
        if "dense-noblas" in r[sp] and r.get("paper_speedup_vs_own_dense"):
            out.append(f"{r['network']}: Q-CNN {r[sp]['dense-noblas']:.2f}x faster than the {NOBLAS_LABEL}; "
                       f"the paper: {r['paper_speedup_vs_own_dense']:.2f}x (Huawei Mate 7)")
    for r in res["networks"]:
        if "file_mib" in r:
            f, p = r["file_mib"], r["peak_rss_mib"]
            out.append(f"{r['network']}: model file {f['dense']:.2f} MiB dense -> {f['qcnn']:.2f} MiB quantized "
                       f"({r['compression']:.1f}x); peak RSS of one forward pass (fresh process, no torch): "
                       + ", ".join(f"{k} {v:.1f} MiB" for k, v in p.items()))
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- CLI
def _parser(prog: str, doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=doc)
    _add_common(p)
    return p


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    p.add_argument("--repeat", type=int, default=10, help="timed runs per figure (default 10, at least 10 for the record)")
    p.add_argument("--networks", default=",".join(NETWORKS), help="comma-separated: alexnet,cnns")
    p.add_argument("--out", help="also write the JSON to this file (refuses to overwrite)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="what the tables show: wall time (default) or thread CPU time (steadier on a busy machine)")


def _run(args: argparse.Namespace, fn, render) -> int:
    names = [n.strip() for n in args.networks.split(",") if n.strip()]
    for n in names:
        models.spec(n)  # ValueError for unknown names
    if args.repeat < 1:
        raise ValueError("--repeat must be >= 1")
    if args.out and Path(args.out).exists():
        raise FileExistsError(f"{args.out} already exists")
    res = fn(names, repeat=args.repeat)
    text = json.dumps(res, indent=2)
    if args.out:
        with open(args.out, "x") as f:
            f.write(text + "\n")
    print(text if args.json else render(res, args.clock == "cpu"), end="\n" if args.json else "")
    return 0


def main_layers(argv: Sequence[str] | None = None) -> int:
    """``bench-layers``: per-layer times and speed-ups."""
    return _run(_parser("python -m qcnn_lite bench-layers", bench_layers.__doc__).parse_args(argv), bench_layers, render_layers)


def main(argv: Sequence[str] | None = None) -> int:
    """``bench``: whole networks, model file size and peak memory."""
    return _run(_parser("python -m qcnn_lite bench", bench_networks.__doc__).parse_args(argv), bench_networks, render_networks)


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Register ``bench-layers`` and ``bench`` on a CLI's subparsers; the handler is ``args.func(args)``."""
    p = subparsers.add_parser("bench-layers", help="time each conv/fc layer: LUT kernels vs dense numpy and torch")
    _add_common(p)
    p.set_defaults(func=lambda a: _run(a, bench_layers, render_layers))
    p = subparsers.add_parser("bench", help="time whole networks; model size and peak memory")
    _add_common(p)
    p.set_defaults(func=lambda a: _run(a, bench_networks, render_networks))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
