"""Speed and memory benchmarks: one thread, one image, look-up tables against dense baselines.

Two measurements, the ``bench-layers`` and ``bench`` subcommands of :mod:`qcnn_lite.cli.main`:

* :func:`bench_layers` -- every conv/fc layer of full-size AlexNet
  and CNN-S, quantized at the released-AlexNet settings;
* :func:`bench_networks` -- whole networks, plus model file size and peak memory.

Baselines timed in the same run: our dense numpy engine (BLAS), the dense
network without BLAS (``dense-noblas``: compiled loops, the paper's condition,
:mod:`qcnn_lite.bench.noblas`) when those kernels are built, torch fp32 and torch
dynamic int8 (``quantize_dynamic`` on the fc layers) when torch is installed; ONNX Runtime
fp32 and static int8 (:mod:`qcnn_lite.bench.ort`) when onnx and onnxruntime are installed; for
the fc layers, faiss fast-scan (K=16, :func:`qcnn_lite.bench.faiss_peer.faiss_fastscan`) when faiss
is installed ("n/a" without, as the ORT columns). Everything runs on one thread (threadpoolctl for
numpy's BLAS, ``torch.set_num_threads(1)``, one-thread ORT sessions).

The engines are timed interleaved (:func:`qcnn_lite.bench.timing.interleaved`): each of ``repeat``
rounds runs every engine once, the first engine rotating, after warm-up. A figure is the median of
the rounds, with min and max; a speed-up is given both as the ratio of medians (``speedup``,
``speedup_cpu``) and as the median of the per-round ratios with their quartiles and extremes
(``round_speedup``, ``round_speedup_cpu``), which a slow episode of a shared machine moves far less.
The numpy fallback of the Q-CNN kernels (``qcnn-numpy``, when the compiled ones run) is timed on
its own after the rounds: switching backends inside a round would repack the fc codes.
Quantized layers get random codebooks and codes of the right shapes: weights do not change the time.
"""
from __future__ import annotations

import contextlib
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from qcnn_lite import kernels
from qcnn_lite.nn import models
from qcnn_lite.bench.memory import baseline_rss, run_model
from qcnn_lite.bench.faiss_peer import faiss_fastscan
from qcnn_lite.bench.machine import machine
from qcnn_lite.bench.synthetic import quantized_layer, quantized_network
from qcnn_lite.bench import ort
from qcnn_lite.bench.timing import interleaved, round_ratios, single_thread, spread, summary, time_call
from qcnn_lite.paper.constants import RELEASED_ALEXNET, table2_paper
from qcnn_lite.nn import table_policy
from qcnn_lite.nn.layers import QConv2d, QLinear
from qcnn_lite.bench.noblas import LABEL as NOBLAS_LABEL
from qcnn_lite.bench.noblas import direct_layer, noblas_network

__all__ = ["bench_layers", "bench_networks", "render_layers", "render_networks"]

NETWORKS = ("alexnet", "cnns")


def _torch():
    """torch and the bridge's converters, or (None, None, None) without torch."""
    try:
        import torch

        from qcnn_lite.reference.bridge import network_to_torch, torch_layer
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
# how the figures were taken, recorded in the results
_TIMING = ("interleaved: each round runs every engine once, the first engine rotating; times are medians of the "
           "rounds; round_speedup(_cpu): baseline time / Q-CNN time within each round, median, 25-75% and min-max")


def _engines(dense_fn, q_fn, torch_fn, torch_int8_fn, repeat: int, float_tables_fn=None,
             faiss_fn=None, noblas_fn=None, ort_fns: dict | None = None,
             ) -> tuple[dict[str, dict[str, float] | None], dict[str, dict[str, dict[str, float]]]]:
    """Time every engine available, interleaved; returns (times, per-round speed-ups).

    times: {engine: :func:`~qcnn_lite.bench.timing.summary`, or None for a peer that applies but
    whose library is not installed}. Per-round speed-ups: {"wall" | "cpu": {baseline:
    :func:`~qcnn_lite.bench.timing.spread` of baseline time / Q-CNN time, round by round}}.
    ``q_fn`` runs in the rounds under the compiled backend (numpy if not built), and alone under the
    numpy fallback afterwards. ``noblas_fn``: the dense layer or network run without BLAS (the paper's
    baseline). ``float_tables_fn``: the same layer with float tables, beside the default table precision.
    ``faiss_fn``: faiss fast-scan, or "n/a". ``ort_fns``: :func:`qcnn_lite.bench.ort.network_fns` or
    ``layer_fns`` (callables or "n/a").
    """
    fns: dict[str, Any] = {"numpy-dense": dense_fn}
    if noblas_fn is not None:
        fns["dense-noblas"] = noblas_fn
    if faiss_fn is not None:
        fns[_FAISS] = faiss_fn
    if float_tables_fn is not None and "pythran" in kernels.available_backends():
        fns["float-tables"] = float_tables_fn
    if torch_fn is not None:
        fns["torch-fp32"] = torch_fn
    if torch_int8_fn is not None:
        fns["torch-int8-dynamic"] = torch_int8_fn
    fns.update(ort_fns or {})
    na = [k for k, f in fns.items() if isinstance(f, str)]  # "n/a": applies, but its library is not installed
    best = "pythran" if "pythran" in kernels.available_backends() else "numpy"
    q = f"qcnn-{best}"
    fns = {k: f for k, f in fns.items() if k not in na}
    fns[q] = q_fn
    with _backend(best):
        rounds = interleaved(fns, repeat)
    t: dict[str, dict[str, float] | None] = {k: summary(v) for k, v in rounds.items()}
    t.update({k: None for k in na})
    for b in kernels.available_backends():
        if b != best:
            with _backend(b):
                t[f"qcnn-{b}"] = time_call(q_fn, repeat)
    per_round = {clock: {k: spread(round_ratios(v[clock], rounds[q][clock])) for k, v in rounds.items() if k != q}
                 for clock in ("wall", "cpu")}
    return t, per_round


def _conv_isa() -> str | None:
    """The instruction set of the integer conv kernels (None: Pythran's portable kernels run)."""
    return kernels.simd_isas()["conv"]


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
                # ORT on the same dense layer; int8 in whichever format runs it faster here
                ort_fns = ort.layer_fns(layer, x, fmt="fastest", seed=seed)
                with (torch.inference_mode() if torch else contextlib.nullcontext()):
                    times, per_round = _engines(lambda: layer(x), lambda: q(x), torch_fn, int8_fn, repeat,
                                                None if qf is None else (lambda: qf(x)),
                                                fs if L["type"] == "fc" else None,
                                                None if nb is None else (lambda: nb(x)), ort_fns)
                d, K = q.sub_dim, q.n_codewords
                tables = L["type"] == "fc" or q.uses_tables(*in_shape[1:])
                rows.append({
                    "network": name, "layer": L["name"], "type": L["type"], "input": list(in_shape),
                    "output": list(layer(x).shape[1:]), "sub_dim": d, "codewords": K,
                    "path": "tables" if tables else "decoded weight",
                    "table_dtype": getattr(q, "table_dtype", "float32"),
                    "conv_isa": _conv_isa() if L["type"] == "conv" and tables and q.table_dtype != "float32" else None,
                    "times": times, "speedup": _speedups(times), "speedup_cpu": _speedups(times, "cpu_median_ms"),
                    "round_speedup": per_round["wall"], "round_speedup_cpu": per_round["cpu"],
                    "ort": _ort_facts(ort_fns),
                })
                if profile and L["type"] == "conv":
                    rows[-1]["profile_ms"] = kernels.profile_conv(q, x, max(repeat, 20), table_policy.CONV_SCALE_MODE)
                del ort_fns
    return {"machine": machine(), "settings": {k: list(v) for k, v in settings.items()}, "timing": _TIMING,
            "layers": rows}


def _ort_facts(fns: dict) -> dict[str, Any] | None:
    """How the ORT columns were made (None without onnxruntime): the int8 format that ran (and both
    formats' times when it was picked as the faster), the LRN form, the versions."""
    i8 = fns[ort.ORT_INT8]
    if isinstance(i8, str):
        return None
    return {"int8_format": i8.fmt, "int8_format_times": i8.format_times, "lrn": getattr(i8, "lrn", None),
            "versions": ort.versions()}


# --------------------------------------------------------------------------- networks
def bench_networks(names: Sequence[str] = NETWORKS, settings: dict[str, tuple[int, int]] = RELEASED_ALEXNET,
                   repeat: int = 10, seed: int = 0, memory: bool = True) -> dict[str, Any]:
    """Whole networks, one image, one thread; plus model file sizes and peak memory."""
    from qcnn_lite.io import modelfile

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
        # ORT on the same dense network: LRN as elementary ops (ORT's faster form), int8 in its faster format
        ort_fns = ort.network_fns(dense, x, fmt="fastest", seed=seed, lrn="ops")
        with single_thread(), (torch.inference_mode() if torch else contextlib.nullcontext()):
            times, per_round = _engines(lambda: dense.forward(x), lambda: qnet.forward(x), torch_fn, int8_fn, repeat,
                                        noblas_fn=None if nb is None else (lambda: nb.forward(x)), ort_fns=ort_fns)
        entry: dict[str, Any] = {"network": name, "times": times, "speedup": _speedups(times),
                                 "speedup_cpu": _speedups(times, "cpu_median_ms"),
                                 "round_speedup": per_round["wall"], "round_speedup_cpu": per_round["cpu"],
                                 "ort": _ort_facts(ort_fns),
                                 "paper_speedup_vs_own_dense": paper_speedup(name)}
        del ort_fns
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
    return {"machine": machine(), "settings": {k: list(v) for k, v in settings.items()}, "timing": _TIMING,
            "networks": results}


def paper_speedup(name: str) -> float | None:
    """The paper's Table 2 speed-up of Q-CNN over its own dense code (Huawei Mate 7), or None."""
    try:
        p = table2_paper(name)
    except (KeyError, ValueError):
        return None
    return p["cnn"]["time_s"] / p["qcnn"]["time_s"]


# --------------------------------------------------------------------------- output
_LEGEND = (f"numpy-dense: our dense engine (BLAS); dense-noblas: {NOBLAS_LABEL}, compiled loops; "
           "torch-fp32 / torch-int8-dynamic: the modern baselines; ort-fp32 / ort-int8-static: ONNX Runtime on one "
           "thread, all graph optimizations, static int8 with per-channel weights in its faster format (QDQ or "
           "QOperator, named below), LRN as elementary ops (ORT's own LRN op is slower)")
_ORDER = ["numpy-dense", "dense-noblas", "torch-fp32", "torch-int8-dynamic", ort.ORT_FP32, ort.ORT_INT8, _FAISS,
          "float-tables", "qcnn-numpy", "qcnn-pythran"]


def _rows_ratio(r: dict, cpu: bool) -> dict[str, Any]:
    """A result row's speed-ups: per-round spreads when the row has them, else ratios of medians."""
    return r.get("round_speedup_cpu" if cpu else "round_speedup") or r["speedup_cpu" if cpu else "speedup"]


def _ratio(v: Any) -> float:
    return v["median"] if isinstance(v, dict) else v


def _time_table(rows: list[tuple[str, dict, dict]], cpu: bool = False) -> str:
    """Times and speed-ups; rows: (label, times, {baseline: speed-up or :func:`spread` of per-round speed-ups})."""
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
        cells += ["-" if e not in s else f"{_ratio(s[e]):.2f}" for e in base]
        lines.append(cells)
    return _grid(lines)


def _spread_table(rows: list[tuple[str, dict, dict]]) -> str:
    """The spread of the per-round speed-ups: 25-75% (min-max) per row and baseline; "" without any."""
    base = [e for e in _ORDER if not e.startswith("qcnn-") and any(isinstance(s.get(e), dict) for _, _, s in rows)]
    if not base:
        return ""
    lines = [["", *[f"x vs {e}" for e in base]]]
    for label, _, s in rows:
        lines.append([label, *[f"{s[e]['p25']:.2f}-{s[e]['p75']:.2f} ({s[e]['min']:.2f}-{s[e]['max']:.2f})"
                               if isinstance(s.get(e), dict) else "-" for e in base]])
    return _grid(lines)


def _grid(lines: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in lines) for i in range(len(lines[0]))]
    out = ["  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))) for r in lines]
    out.insert(1, "-" * len(out[0]))
    return "\n".join(out)


def _header(m: dict, cpu: bool = False, rounds: int | None = None) -> str:
    load = ", ".join(f"{v:.2f}" for v in m["load_average"]) if m.get("load_average") else "?"
    what = "median thread CPU time" if cpu else "median [min-max] wall time"
    runs = f"of {rounds} interleaved rounds (each engine once a round, the first rotating)" if rounds else "of the runs"
    target = f"; kernels built for {m['kernel_target']}" if m.get("kernel_target") else ""
    ort_v = f", onnxruntime {m['onnxruntime']}" if m.get("onnxruntime") else ""
    return (f"{m['cpu']} ({m['cores']} cores), load average {load}; numpy {m['numpy']}, torch {m['torch']}{ort_v}{target}; "
            f"one thread, batch 1, {what} {runs}")


def _rounds(rows: list[dict]) -> int | None:
    for r in rows:
        for v in (r.get("round_speedup") or {}).values():
            return v["rounds"]
    return None


_SPREAD_NOTE = ("x vs B: median over the rounds of B's time / Q-CNN's time in the same round; "
                "below, their 25-75% range (min-max)")


def _ort_note(label: str, facts: dict | None, cpu: bool) -> str | None:
    """Which int8 format ran for one row, and both formats' times when it was picked as the faster."""
    if not facts:
        return None
    ft = facts.get("int8_format_times")
    key = "cpu_median_ms" if cpu else "median_ms"
    times = f" ({', '.join(f'{f} {v[key]:.2f} ms' for f, v in ft.items())})" if ft else ""
    lrn = f", LRN as {'elementary ops' if facts['lrn'] == 'ops' else 'ONNX LRN op'}" if facts.get("lrn") else ""
    return f"{label}: {facts['int8_format']}{times}{lrn}"


def render_layers(res: dict, cpu: bool = False) -> str:
    rows = [(f"{r['network']}/{r['layer']} {'x'.join(map(str, r['input']))} C's={r['sub_dim']} K={r['codewords']}"
             + (f" {r.get('table_dtype', 'float32')}" if r.get("path", "tables") == "tables" else " *"), r["times"],
             _rows_ratio(r, cpu)) for r in res["layers"]]
    note = ("\n* runs from its decoded weight: its tables cannot pay off (QConv2d.uses_tables)"
            if any(r.get("path", "tables") != "tables" for r in res["layers"]) else "")
    spread_t = _spread_table(rows)
    fmts = [n for r in res["layers"] if (n := _ort_note(f"{r['network']}/{r['layer']}", r.get("ort"), cpu))]
    return (_header(res["machine"], cpu, _rounds(res["layers"])) + "\n" + _time_table(rows, cpu) + "\n" + _LEGEND
            + _profile_table(res["layers"])
            + "\n(x vs B: speed-up of the Q-CNN layers, compiled LUT kernels at their default table precision"
            " -- shown after K: uint8 fc tables, int8 conv tables (int16 sums) -- over baseline B;"
            f" float-tables: the same layer with float tables; {_FAISS}: faiss IndexPQFastScan over the weight rows,"
            " same M, K=16, every output)" + note + "\n"
            + (f"{_SPREAD_NOTE}\n{spread_t}\n" if spread_t else "")
            + ("ort-int8-static format per layer, the faster of both here:\n  " + "\n  ".join(fmts) + "\n" if fmts else ""))


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
    rows = [(r["network"], r["times"], _rows_ratio(r, cpu)) for r in res["networks"]]
    out = [_header(res["machine"], cpu, _rounds(res["networks"])), _time_table(rows, cpu), _LEGEND]
    spread_t = _spread_table(rows)
    if spread_t:
        out += [_SPREAD_NOTE, spread_t]
    sp = "speedup_cpu" if cpu else "speedup"
    for r in res["networks"]:
        if "dense-noblas" in r[sp] and r.get("paper_speedup_vs_own_dense"):
            out.append(f"{r['network']}: Q-CNN {_ratio(_rows_ratio(r, cpu)['dense-noblas']):.2f}x faster than the "
                       f"{NOBLAS_LABEL}; the paper: {r['paper_speedup_vs_own_dense']:.2f}x (Huawei Mate 7)")
    for r in res["networks"]:
        if n := _ort_note(f"{r['network']}: ort-int8-static format, the faster of both here", r.get("ort"), cpu):
            out.append(n)
    for r in res["networks"]:
        if "file_mib" in r:
            f, p = r["file_mib"], r["peak_rss_mib"]
            out.append(f"{r['network']}: model file {f['dense']:.2f} MiB dense -> {f['qcnn']:.2f} MiB quantized "
                       f"({r['compression']:.1f}x); peak RSS of one forward pass (fresh process, no torch): "
                       + ", ".join(f"{k} {v:.1f} MiB" for k, v in p.items()))
    return "\n".join(out) + "\n"
