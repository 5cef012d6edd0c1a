"""Benchmark of the fc layers, batch 1, one thread: byte-shuffle kernels against torch, Pythran and faiss.

    python scripts/bench_fc.py [--runs 7] [--min-time 0.05] [--layers fc6,fc6k16,fc7,fc8]

Per layer, in one process and one thread (torch.set_num_threads(1),
faiss.omp_set_num_threads(1)), thread CPU time (time.thread_time), the median
of ``--runs`` runs of a loop of at least ``--min-time`` seconds:
  torch fp32 ``nn.Linear``; torch int8 (``quantize_dynamic``); the float
  look-up kernel ``qcnn_lite.kernels.linear_lut`` (Pythran); the 8-bit shuffle
  kernel per instruction set, table build + quantization included (the layer's
  real cost per input), and its sums alone; faiss ``IndexPQFastScan`` (K=16,
  4-bit codes over the weight rows, the same M, inner product:
  :func:`qcnn_lite.bench.faiss_peer.faiss_fastscan`) searching k=1 and k=all outputs. Ratios are against ours on the best instruction set.
Same random weights for every column (timings do not depend on the values;
faiss trains its codebooks on the weight rows, ours are random).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings

import numpy as np

LAYERS = {  # name: (in, out, d = C's, K)
    "fc6": (9216, 4096, 4, 32),
    "fc6k16": (9216, 4096, 4, 16),
    "fc7": (4096, 4096, 4, 32),
    "fc8": (4096, 1000, 1, 16),
}


def timeit(f, runs: int, min_time: float) -> float:
    """Median thread CPU seconds of one call, over `runs` loops of >= min_time."""
    f()
    reps, t = 1, 0.0
    while True:  # calibrate the loop length
        t0 = time.thread_time()
        for _ in range(reps):
            f()
        t = time.thread_time() - t0
        if t >= min_time:
            break
        reps = max(reps * 2, int(reps * min_time / max(t, 1e-6) * 1.2))
    times = []
    for _ in range(runs):
        t0 = time.thread_time()
        for _ in range(reps):
            f()
        times.append((time.thread_time() - t0) / reps)
    return statistics.median(times)


def cpu_info() -> str:
    model, flags = platform.processor(), set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and model in ("", platform.machine()):
                model = line.split(":", 1)[1].strip()
            if line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    simd = sorted(f for f in flags if f.startswith(("avx", "sse4", "fma", "bmi", "asimd", "sve", "neon")))
    return f"{model or platform.machine()}; {' '.join(simd)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.05)
    ap.add_argument("--layers", default=",".join(LAYERS))
    ap.add_argument("--no-faiss", action="store_true")
    args = ap.parse_args()
    names = [n.strip() for n in args.layers.split(",") if n.strip()]
    bad = [n for n in names if n not in LAYERS]
    if bad:
        ap.error(f"unknown layers {bad}: choose from {', '.join(LAYERS)}")

    warnings.filterwarnings("ignore", category=UserWarning)  # torch's deprecation notes on quantize_dynamic
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import torch
    from qcnn_lite import kernels
    from qcnn_lite.kernels import _shuffle as sh
    from qcnn_lite.bench.faiss_peer import (faiss_fastscan)  # the one definition of the faiss peer (bench-layers uses it too)

    torch.set_num_threads(1)
    faiss = None
    if not args.no_faiss:
        try:
            import faiss

            faiss.omp_set_num_threads(1)
        except ImportError:
            print("faiss not installed: no faiss column (pip install faiss-cpu)")
    isas = sh.available_isas()
    print(f"CPU: {cpu_info()}")
    print(f"torch {torch.__version__}, kernels backend {kernels.backend()}, shuffle ISAs {isas}, "
          f"faiss {getattr(faiss, '__version__', '-')}; one thread, batch 1, median of {args.runs}, ms")
    env_target = os.environ.get("QCNN_LITE_TARGET")
    if env_target:
        print(f"QCNN_LITE_TARGET={env_target} -> default ISA {sh.default_isa()}")

    faiss_index = {}  # (in, out) -> index: fc6 at K=32 and K=16 share the weights and the index
    ms = lambda f: timeit(f, args.runs, args.min_time) * 1e3  # noqa: E731
    rows = []
    for name in names:
        n_in, n_out, d, K = LAYERS[name]
        M = n_in // d
        rng = np.random.default_rng(n_in * 100003 + n_out)  # the same weights for a shape, whatever K
        w = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)
        b = (rng.standard_normal(n_out) * 0.1).astype(np.float32)
        x = rng.standard_normal((1, n_in), dtype=np.float32)
        books = (rng.standard_normal((M, K, d)) / np.sqrt(n_in)).astype(np.float32)
        codes = rng.integers(0, K, (n_out, M)).astype(np.uint8)
        r = {"layer": f"{name} {n_in}->{n_out} d={d} K={K}"}
        print(f"{r['layer']}: torch...", end="", flush=True)
        lin = torch.nn.Linear(n_in, n_out)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        xt = torch.from_numpy(x)
        q8 = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear}, dtype=torch.qint8)
        with torch.inference_mode():
            r["torch fp32"] = ms(lambda: lin(xt))
            r["torch int8"] = ms(lambda: q8(xt))
        print(" float LUT...", end="", flush=True)
        r["float LUT"] = ms(lambda: kernels.linear_lut(x, books, codes, b))
        for isa in isas:
            print(f" {isa}...", end="", flush=True)
            packed = sh.pack_codes(codes, K, isa)
            r[f"u8 {isa}"] = ms(lambda: sh.linear_lut_u8(x, books, packed, b))
            q = rng.integers(0, 256, (M, K), dtype=np.uint8)
            r[f"sums {isa}"] = ms(lambda: sh.accumulate(q, packed))
        if faiss is not None:
            if (n_in, n_out) not in faiss_index:
                print(" faiss train...", end="", flush=True)
                faiss_index[n_in, n_out] = faiss_fastscan(w, M)
            index = faiss_index[n_in, n_out]
            r["faiss k=1"] = ms(lambda: index.top1(x))
            r["faiss k=all"] = ms(lambda: index.all_outputs(x))
        print(" done", flush=True)
        rows.append(r)

    best = next((i for i in ("avx512vbmi", "avx2", "neon", "scalar") if i in isas), None)
    cols = [c for c in rows[0] if c != "layer"]
    print()
    print("| layer | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for r in rows:
        print(f"| {r['layer']} | " + " | ".join(f"{r.get(c, float('nan')):.3f}" for c in cols) + " |")
    if best is None:
        return
    ours = f"u8 {best}"
    print(f"\nRatios: time of the other / time of ours ({ours}, table build + quantization included)")
    other = ["torch fp32", "torch int8", "float LUT"] + [c for c in ("faiss k=1", "faiss k=all") if c in cols]
    if best != "avx2" and "avx2" in isas:
        other.append("u8 avx2")
    print("| layer | " + " | ".join(f"{c} / ours" for c in other) + " |")
    print("|---" * (len(other) + 1) + "|")
    for r in rows:
        print(f"| {r['layer']} | " + " | ".join(f"{r[c] / r[ours]:.2f}" for c in other) + " |")
    if "avx2" in isas:
        print("\nAVX2 (what QCNN_LITE_TARGET=v3 forces): torch fp32 / u8 avx2 = "
              + ", ".join(f"{r['layer'].split()[0]} {r['torch fp32'] / r['u8 avx2']:.2f}x" for r in rows))


if __name__ == "__main__":
    main()
