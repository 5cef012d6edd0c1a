"""Speed and memory benchmarks: one thread, one image, look-up tables against dense baselines.

Two measurements, the ``bench-layers`` and ``bench`` subcommands of :mod:`qcnn_lite.cli`:

* :func:`bench_layers` -- every conv/fc layer of full-size AlexNet
  and CNN-S, quantized at the released-AlexNet settings;
* :func:`bench_networks` -- whole networks, plus model file size and peak memory.

Baselines timed in the same run: our dense numpy engine (BLAS), the dense
network without BLAS (``dense-noblas``: compiled loops, the paper's condition,
:mod:`qcnn_lite.noblas`) when those kernels are built, torch fp32 and torch
dynamic int8 (``quantize_dynamic`` on the fc layers) when torch is installed; for the fc layers,
faiss fast-scan (K=16, :func:`qcnn_lite.measure.faiss_fastscan`) when faiss is installed
("n/a" without). Everything runs on one thread (threadpoolctl for numpy's
BLAS, ``torch.set_num_threads(1)``). Each figure is the median of ``repeat``
runs after warm-up, with min and max. Quantized layers get random codebooks
and codes of the right shapes: weights do not change the time.
"""
from __future__ import annotations

import contextlib
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from . import kernels, models
from .measure import (baseline_rss, faiss_fastscan, machine, quantized_layer, quantized_network, run_model,
                      single_thread, time_call)
from .paper import RELEASED_ALEXNET, table2_paper
from .layers import QConv2d, QLinear
from .noblas import LABEL as NOBLAS_LABEL
from .noblas import direct_layer, noblas_network

__all__ = ["bench_layers", "bench_networks", "render_layers", "render_networks"]

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


_FAISS = "faiss-fastscan-k16"


def _engines(dense_fn, q_fn, torch_fn, torch_int8_fn, repeat: int, float_tables_fn=None,
             faiss_fn=None, noblas_fn=None) -> dict[str, dict[str, float] | None]:
    """Time every engine available; q_fn runs under each kernel backend.

    ``noblas_fn``: the dense layer or network run without BLAS (the paper's baseline).
    ``float_tables_fn``: the same layer with float tables on the compiled backend, timed
    beside the default table precision (8-bit where it applies). ``faiss_fn``: faiss
    fast-scan, or "n/a" for an fc layer without faiss (recorded as None).
    """
    t: dict[str, dict[str, float] | None] = {"numpy-dense": time_call(dense_fn, repeat)}
    if noblas_fn is not None:
        t["dense-noblas"] = time_call(noblas_fn, max(3, repeat // 2))  # 3-4x slower than the rest: fewer runs
    if faiss_fn == "n/a":
        t[_FAISS] = None
    elif faiss_fn is not None:
        t[_FAISS] = time_call(faiss_fn, repeat)
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


def _conv_isa() -> str | None:
    """The instruction set of the integer conv kernels (None: Pythran's portable kernels run)."""
    from .kernels import _convq

    return _convq.default_conv_isa() if _convq.conv_isas() else None


def _speedups(times: dict[str, dict[str, float]], key: str = "median_ms") -> dict[str, float]:
    """Speed-up of the compiled Q-CNN backend (numpy if not built) over every baseline: ratios of medians."""
    best = "qcnn-pythran" if "qcnn-pythran" in times else "qcnn-numpy"
    q = times[best][key]
    return {k: v[key] / q for k, v in times.items() if not k.startswith("qcnn-") and v is not None}


# --------------------------------------------------------------------------- layers
def bench_layers(names: Sequence[str] = NETWORKS, settings: dict[str, tuple[int, int]] = RELEASED_ALEXNET,
                 repeat: int = 10, seed: int = 0, profile: bool = False) -> dict[str, Any]:
    """Time every conv/fc layer of the full-size networks at batch 1, one thread.

    ``profile``: also split each conv layer's time into its phases (:func:`kernels._convq.profile_conv`).
    """
    torch, torch_layer, _ = _torch()
    with contextlib.suppress(ImportError):
        import faiss  # noqa: F401  (imported first, so that single_thread puts its OpenMP on one thread too)
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
                elif L["type"] == "conv" and q.table_dtype != "float32" and q.uses_tables(*in_shape[1:]):
                    qf = QConv2d(q.codebooks, q.codes, q.bias, q.stride, q.padding, q.groups, table_dtype="float32")
                fs = "n/a"  # faiss fast-scan over the same weight rows, at K=16 (all it supports) and our M
                if L["type"] == "fc":
                    fs = faiss_fastscan(layer.weight, q.n_subspaces) or "n/a"
                    fs = fs if fs == "n/a" else (lambda fs=fs: fs.all_outputs(x))
                nb = direct_layer(layer, L["name"]) if kernels.direct_available() else None
                with (torch.inference_mode() if torch else contextlib.nullcontext()):
                    times = _engines(lambda: layer(x), lambda: q(x), torch_fn, int8_fn, repeat,
                                     None if qf is None else (lambda: qf(x)), fs if L["type"] == "fc" else None,
                                     None if nb is None else (lambda: nb(x)))
                d, K = q.sub_dim, q.n_codewords
                tables = L["type"] == "fc" or q.uses_tables(*in_shape[1:])
                rows.append({
                    "network": name, "layer": L["name"], "type": L["type"], "input": list(in_shape),
                    "output": list(layer(x).shape[1:]), "sub_dim": d, "codewords": K,
                    "path": "tables" if tables else "decoded weight",
                    "table_dtype": getattr(q, "table_dtype", "float32"),
                    "conv_isa": _conv_isa() if L["type"] == "conv" and tables and q.table_dtype != "float32" else None,
                    "times": times, "speedup": _speedups(times), "speedup_cpu": _speedups(times, "cpu_median_ms"),
                })
                if profile and L["type"] == "conv":
                    from .kernels import _convq

                    rows[-1]["profile_ms"] = _convq.profile_conv(q, x, max(repeat, 20))
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
_ORDER = ["numpy-dense", "dense-noblas", "torch-fp32", "torch-int8-dynamic", _FAISS, "float-tables", "qcnn-numpy",
          "qcnn-pythran"]


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
                cells.append("n/a" if e in t else "-")  # n/a: applies, but its library is not installed
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
    target = f"; kernels built for {m['kernel_target']}" if m.get("kernel_target") else ""
    return (f"{m['cpu']} ({m['cores']} cores), load average {load}; numpy {m['numpy']}, torch {m['torch']}{target}; "
            f"one thread, batch 1, {what} of the runs")


def render_layers(res: dict, cpu: bool = False) -> str:
    sp = "speedup_cpu" if cpu else "speedup"
    rows = [(f"{r['network']}/{r['layer']} {'x'.join(map(str, r['input']))} C's={r['sub_dim']} K={r['codewords']}"
             + (f" {r.get('table_dtype', 'float32')}" if r.get("path", "tables") == "tables" else " *"), r["times"], r[sp])
            for r in res["layers"]]
    note = ("\n* runs from its decoded weight: its tables cannot pay off (QConv2d.uses_tables)"
            if any(r.get("path", "tables") != "tables" for r in res["layers"]) else "")
    return (_header(res["machine"], cpu) + "\n" + _time_table(rows, cpu) + "\n" + _LEGEND
            + _profile_table(res["layers"]) + "\n(x vs B: speed-up of the Q-CNN layers, compiled LUT kernels at their default table precision"
            " -- shown after K: uint8 fc tables, int8 conv tables (int16 sums) -- over baseline B;"
            f" float-tables: the same layer with float tables; {_FAISS}: faiss IndexPQFastScan over the weight rows,"
            " same M, K=16, every output)" + note + "\n")


def _profile_table(layers: list[dict]) -> str:
    """Per-phase thread CPU time of the conv layers profiled (``bench-layers --profile``), or ''."""
    rows = [r for r in layers if "profile_ms" in r]
    if not rows:
        return ""
    cols = ["call", "scale", "build", "adds", "epilogue", "other"]
    lines = ["\nconv layers, ms per phase (the least disturbed of the runs; call: thread CPU time of the whole"
             " call; scale: phase split + table scale; other: call minus the phases -- Python, validation, allocation;"
             " '-': not on integer tables; x torch: the table above's thread-time speed-up over torch-fp32)",
             f"{'layer':16s}" + "".join(f"{c:>9s}" for c in cols) + f"{'x torch':>9s}"]
    for r in rows:
        p, x = r["profile_ms"], r.get("speedup_cpu", {}).get("torch-fp32")
        lines.append(f"{r['network'] + '/' + r['layer']:16s}" + "".join(f"{p[c]:9.3f}" if c in p else f"{'-':>9s}" for c in cols)
                     + ("" if x is None else f"{x:9.2f}"))
    return "\n".join(lines) + "\n"


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
