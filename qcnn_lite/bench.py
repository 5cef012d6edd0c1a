"""Speed and memory benchmarks: one thread, one image, look-up tables against dense baselines.

Two entry points, wired as CLI subcommands:

* ``bench-layers`` (:func:`main_layers`) -- every conv/fc layer of full-size AlexNet
  and CNN-S, quantized at the released-AlexNet settings;
* ``bench`` (:func:`main`) -- whole networks, plus model file size and peak memory.

Baselines timed in the same run: our dense numpy engine (im2col + BLAS),
torch fp32 and torch dynamic int8 (``quantize_dynamic`` on the fc layers) when
torch is installed. Everything runs on one thread (threadpoolctl for numpy's
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
from .engine import Network, output_shapes
from .layers import Conv2d, Linear, QConv2d, QLinear

__all__ = [
    "RELEASED_ALEXNET", "quantized_layer", "quantized_network", "time_call",
    "bench_layers", "bench_networks", "peak_rss", "main", "main_layers", "add_parsers",
]

# Released AlexNet (authors' repository): (C's, K) per layer kind, fc8 its own.
RELEASED_ALEXNET: dict[str, tuple[int, int]] = {"conv": (8, 128), "fc": (4, 32), "fc8": (1, 16)}
NETWORKS = ("alexnet", "cnns")


# --------------------------------------------------------------------------- set-up
@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """numpy's BLAS and torch on one thread for the duration."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the figures would be multi-threaded: say so instead of lying
        print("warning: threadpoolctl not installed; BLAS may use several threads "
              "(set OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1)", file=sys.stderr)
        limits = contextlib.nullcontext()
    else:
        limits = threadpool_limits(1)
    torch = sys.modules.get("torch")
    old = torch.get_num_threads() if torch else None
    with limits:
        if torch:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            if torch:
                torch.set_num_threads(old)


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _setting(L: dict, settings: dict[str, tuple[int, int]]) -> tuple[int, int]:
    return settings.get(L["name"], settings[L["type"]])


def quantized_layer(L: dict, in_shape: tuple[int, ...], settings: dict[str, tuple[int, int]],
                    rng: np.random.Generator) -> QConv2d | QLinear:
    """A QConv2d/QLinear for spec entry L with random codebooks and codes.

    C's is capped at the channels per group (AlexNet's conv1: one 3-D sub-space).
    """
    d, K = _setting(L, settings)
    if L["type"] == "conv":
        g = L.get("groups", 1)
        cg = in_shape[0] // g
        d = min(d, cg)
        if cg % d:
            raise ValueError(f"layer {L['name']}: C's={d} does not divide its {cg} input channels")
        M, k = cg // d, L["kernel"]
        books = rng.standard_normal((M, K, d), dtype=np.float32) * 0.1
        codes = rng.integers(0, K, (L["out"], k, k, M))
        return QConv2d(books, codes, np.zeros(L["out"], np.float32), L.get("stride", 1), L.get("padding", 0), g)
    n_in = int(np.prod(in_shape))
    if n_in % d:
        raise ValueError(f"layer {L['name']}: C's={d} does not divide its {n_in} inputs")
    books = rng.standard_normal((n_in // d, K, d), dtype=np.float32) * 0.1
    codes = rng.integers(0, K, (L["out"], n_in // d))
    return QLinear(books, codes, np.zeros(L["out"], np.float32))


def quantized_network(name: str, settings: dict[str, tuple[int, int]] = RELEASED_ALEXNET, seed: int = 0) -> Network:
    """A full-size network whose conv/fc layers are all quantized, with random codebooks and codes."""
    input_shape, spec = models.spec(name)
    shapes = [input_shape] + output_shapes(spec, input_shape)
    rng = np.random.default_rng(seed)
    params = {L["name"]: quantized_layer(L, shapes[i], settings, rng) for i, L in enumerate(spec) if L["type"] in ("conv", "fc")}
    return Network(name, input_shape, spec, params, {"weights": f"synthetic quantized, seed {seed}", "settings": {k: list(v) for k, v in settings.items()}})


def _torch_layer(torch, layer):
    nn = torch.nn
    if isinstance(layer, Conv2d):
        m = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding, groups=layer.groups)
    else:
        m = nn.Linear(layer.in_features, layer.out_features)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(layer.weight))
        m.bias.copy_(torch.from_numpy(layer.bias))
    return m.eval()


def torch_model(net: Network):
    """The dense network as a torch.nn.Sequential (fp32), same spec and weights."""
    torch = _torch()
    nn = torch.nn
    mods = []
    for L in net.spec:
        t = L["type"]
        if t in ("conv", "fc"):
            mods.append(_torch_layer(torch, net.params[L["name"]]))
        elif t == "relu":
            mods.append(nn.ReLU(inplace=True))
        elif t == "lrn":
            mods.append(nn.LocalResponseNorm(L.get("size", 5), L.get("alpha", 1e-4), L.get("beta", 0.75), L.get("k", 1.0)))
        elif t == "maxpool":
            mods.append(nn.MaxPool2d(L["kernel"], L["stride"], ceil_mode=L.get("ceil", False)))
        elif t == "flatten":
            mods.append(nn.Flatten())
        elif t == "softmax":
            mods.append(nn.Softmax(dim=1))
    return nn.Sequential(*mods).eval()


def _torch_int8(model):
    """Dynamic int8 quantization of the fc layers, or None where this torch cannot do it."""
    torch = _torch()
    try:
        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():  # torch 2.x deprecates its quantized tensors; still the baseline asked for
            warnings.simplefilter("ignore")
            return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    except Exception:  # noqa: BLE001  (no quantized engine on this build/CPU)
        return None


# --------------------------------------------------------------------------- timing
def time_call(fn: Callable[[], Any], repeat: int = 10, warmup: int = 2) -> dict[str, float]:
    """Median, min and max wall time in ms of ``repeat`` calls after ``warmup`` calls.

    Also the median thread CPU time (``cpu_median_ms``): on a shared machine it
    leaves out the time other processes held the core (single-threaded code only).
    """
    for _ in range(warmup):
        fn()
    ts, cpu = [], []
    for _ in range(repeat):
        c0, t0 = time.thread_time(), time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.thread_time() - c0) * 1e3)
    return {"median_ms": float(np.median(ts)), "min_ms": float(min(ts)), "max_ms": float(max(ts)),
            "cpu_median_ms": float(np.median(cpu)), "runs": repeat}


@contextlib.contextmanager
def _backend(name: str) -> Iterator[None]:
    old = kernels.backend()
    kernels.set_backend(name)
    try:
        yield
    finally:
        kernels.set_backend(old)


def _engines(dense_fn, q_fn, torch_fn, torch_int8_fn, repeat: int) -> dict[str, dict[str, float]]:
    """Time every engine available; q_fn runs under each kernel backend."""
    t: dict[str, dict[str, float]] = {"numpy-dense": time_call(dense_fn, repeat)}
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


def machine() -> dict[str, Any]:
    """CPU, load and library versions, recorded with every result."""
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    torch = sys.modules.get("torch")
    return {
        "cpu": cpu, "cores": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "numpy": np.__version__, "torch": getattr(torch, "__version__", None),
        "kernel_backends": kernels.available_backends(),
        "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


# --------------------------------------------------------------------------- layers
def bench_layers(names: Sequence[str] = NETWORKS, settings: dict[str, tuple[int, int]] = RELEASED_ALEXNET,
                 repeat: int = 10, seed: int = 0) -> dict[str, Any]:
    """Time every conv/fc layer of the full-size networks at batch 1, one thread."""
    torch = _torch()
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
                    tm = _torch_layer(torch, layer)
                    xt = torch.from_numpy(x)
                    torch_fn = lambda tm=tm, xt=xt: tm(xt)
                    if L["type"] == "fc":
                        qm = _torch_int8(torch.nn.Sequential(tm))
                        int8_fn = None if qm is None else (lambda qm=qm, xt=xt: qm(xt))
                with (torch.inference_mode() if torch else contextlib.nullcontext()):
                    times = _engines(lambda: layer(x), lambda: q(x), torch_fn, int8_fn, repeat)
                d, K = q.sub_dim, q.n_codewords
                tables = L["type"] == "fc" or q.uses_tables(*in_shape[1:])
                rows.append({
                    "network": name, "layer": L["name"], "type": L["type"], "input": list(in_shape),
                    "output": list(layer(x).shape[1:]), "sub_dim": d, "codewords": K,
                    "path": "tables" if tables else "decoded weight",
                    "times": times, "speedup": _speedups(times), "speedup_cpu": _speedups(times, "cpu_median_ms"),
                })
    return {"machine": machine(), "settings": {k: list(v) for k, v in settings.items()}, "layers": rows}


# --------------------------------------------------------------------------- networks
_RSS_SCRIPT = r"""
import json, resource, sys
import numpy as np
from qcnn_lite import kernels, modelfile
net = modelfile.load(sys.argv[1])
# A fixed input made without numpy.random: importing the RNG alone adds ~5 MiB of resident memory.
x = np.sin(np.arange(np.prod(net.input_shape), dtype=np.float32)).reshape((1,) + net.input_shape)
net.forward(x)
assert "torch" not in sys.modules, "torch was imported by the numpy engine"
hwm = None
with open("/proc/self/status") as f:
    for line in f:
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
print(json.dumps({"ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "vmhwm_kib": hwm,
                  "backend": kernels.backend()}))
"""


def peak_rss(model_path: str | os.PathLike, backend: str = "auto") -> dict[str, Any]:
    """Peak resident memory of a fresh process that loads a model file and runs one image (numpy engine, no torch)."""
    env = {**os.environ, "QCNN_LITE_BACKEND": backend, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "QCNN_PROGRESS": "0"}
    r = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(model_path)], env=env, capture_output=True,
                       text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"peak-memory subprocess failed: {r.stderr.strip()[-2000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    # VmHWM (Linux) is this process's own peak; ru_maxrss survives exec and may be the parent's.
    out["peak_mib"] = (out["vmhwm_kib"] or out["ru_maxrss_kib"]) / 1024
    return out


def _baseline_rss(backend: str) -> float:
    """Peak RSS (MiB) of the same subprocess without a model: Python + numpy + qcnn_lite."""
    # VmHWM, not ru_maxrss: ru_maxrss survives exec and may report the parent's peak.
    code = ("import numpy, qcnn_lite.kernels, qcnn_lite.modelfile; "
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')][0])")
    env = {**os.environ, "QCNN_LITE_BACKEND": backend}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    return int(r.stdout.strip().splitlines()[-1]) / 1024 if r.returncode == 0 else float("nan")


def bench_networks(names: Sequence[str] = NETWORKS, settings: dict[str, tuple[int, int]] = RELEASED_ALEXNET,
                   repeat: int = 10, seed: int = 0, memory: bool = True) -> dict[str, Any]:
    """Whole networks, one image, one thread; plus model file sizes and peak memory."""
    from . import modelfile

    torch = _torch()
    results = []
    for name in names:
        dense = models.synthetic(name, seed)
        qnet = quantized_network(name, settings, seed)
        x = np.random.default_rng(seed).standard_normal((1,) + dense.input_shape, dtype=np.float32)
        torch_fn = int8_fn = None
        if torch is not None:
            tm = torch_model(dense)
            xt = torch.from_numpy(x)
            torch_fn = lambda tm=tm, xt=xt: tm(xt)
            qm = _torch_int8(tm)
            int8_fn = None if qm is None else (lambda qm=qm, xt=xt: qm(xt))
        with single_thread(), (torch.inference_mode() if torch else contextlib.nullcontext()):
            times = _engines(lambda: dense.forward(x), lambda: qnet.forward(x), torch_fn, int8_fn, repeat)
        entry: dict[str, Any] = {"network": name, "times": times, "speedup": _speedups(times),
                                 "speedup_cpu": _speedups(times, "cpu_median_ms")}
        if memory:
            with tempfile.TemporaryDirectory() as tmp:
                sizes, rss = {}, {}
                for label, net in (("dense", dense), ("qcnn", qnet)):
                    path = modelfile.save(net, Path(tmp) / f"{name}-{label}.qcnn")
                    sizes[label] = path.stat().st_size
                    backends = ["numpy"] if label == "dense" else kernels.available_backends()
                    for b in backends:
                        rss[f"{label}-{b}"] = peak_rss(path, b)["peak_mib"]
                    path.unlink()
                rss["no-model-baseline"] = _baseline_rss("numpy")
            entry["file_bytes"] = sizes
            entry["file_mib"] = {k: v / 2**20 for k, v in sizes.items()}
            entry["compression"] = sizes["dense"] / sizes["qcnn"]
            entry["peak_rss_mib"] = rss
        results.append(entry)
        del dense, qnet
    return {"machine": machine(), "settings": {k: list(v) for k, v in settings.items()}, "networks": results}


# --------------------------------------------------------------------------- output
_ORDER = ["numpy-dense", "torch-fp32", "torch-int8-dynamic", "qcnn-numpy", "qcnn-pythran"]


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
    return (_header(res["machine"], cpu) + "\n" + _time_table(rows, cpu)
            + "\n(x vs B: speed-up of the Q-CNN layers, compiled LUT kernels, over baseline B)" + note + "\n")


def render_networks(res: dict, cpu: bool = False) -> str:
    sp = "speedup_cpu" if cpu else "speedup"
    out = [_header(res["machine"], cpu), _time_table([(r["network"], r["times"], r[sp]) for r in res["networks"]], cpu)]
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
