"""How speed and memory are measured, once for the benchmarks and the device results.

* :func:`single_thread` -- numpy's BLAS, torch and faiss on one thread;
* :func:`faiss_fastscan` -- faiss's 4-bit product-quantization fast-scan over a layer's weight rows,
  the field's peer for the fc look-up kernels (``bench-layers`` and ``scripts/bench_fc.py``);
* :func:`time_call` -- median/min/max wall time and median thread CPU time of repeated calls;
* :func:`interleaved` -- several engines timed round-robin, one call each per round, the first engine
  rotating; :func:`round_ratios` the per-round ratios of their times and :func:`spread` their median,
  quartiles and extremes (a slow episode of a shared machine then lands on every engine of a round);
* :func:`machine` -- CPU, load and library versions recorded beside every figure; :func:`device_facts`
  and :func:`environment` the fuller record of a device result (model, Android, cores, frequencies, load);
* :func:`quantized_network` -- a full-size network at given settings with random codebooks and
  codes (weights do not change the time), and :func:`model_files` writing it and its dense twin;
* :func:`run_model` -- the fresh-process worker: load a model file, time one image on one thread,
  report the process's peak RSS (``VmHWM``); :func:`baseline_rss` is the same process without a model.

Peak RSS is that of a fresh process, so it is what Table 2's memory column reports:
runtime, model and activations. "MB" means 2**20 bytes, as in the paper.
"""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, Callable, Iterator

import numpy as np


__all__ = ["single_thread", "time_call", "interleaved", "summary", "round_ratios", "spread"]


@contextlib.contextmanager
def single_thread(warn: bool = True) -> Iterator[None]:
    """numpy's BLAS and torch on one thread for the duration (``warn``: say so when threadpoolctl is missing)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the figures would be multi-threaded: say so instead of lying
        if warn:
            print("warning: threadpoolctl not installed; BLAS may use several threads "
                  "(set OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1)", file=sys.stderr)
        limits = contextlib.nullcontext()
    else:
        limits = threadpool_limits(1)
    torch = sys.modules.get("torch")
    old = torch.get_num_threads() if torch else None
    faiss = sys.modules.get("faiss")
    old_omp = faiss.omp_get_max_threads() if faiss else None
    with limits:
        if torch:
            torch.set_num_threads(1)
        if faiss:
            faiss.omp_set_num_threads(1)
        try:
            yield
        finally:
            if torch:
                torch.set_num_threads(old)
            if faiss:
                faiss.omp_set_num_threads(old_omp)


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


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int = 10, warmup: int = 2,
                clock: Callable[[], tuple[float, float]] | None = None) -> dict[str, dict[str, list[float]]]:
    """Time every engine round-robin: {name: {"wall": [ms per round], "cpu": [ms per round]}}.

    Each of the ``rounds`` rounds calls every engine once; round r starts at engine r mod n and
    goes on in order (rotating the start, so that no engine always runs first, after the same
    neighbour). Round r of every engine is timed within the same few moments, so a slow episode of a
    shared machine falls on all of them and cancels in :func:`round_ratios`. ``warmup`` calls of each
    engine come first. ``clock`` () -> (wall s, thread CPU s), for tests; default perf_counter and
    thread_time.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    clock = clock or (lambda: (time.perf_counter(), time.thread_time()))
    names = list(fns)
    for n in names:
        for _ in range(warmup):
            fns[n]()
    out: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in names}
    for r in range(rounds):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            t0, c0 = clock()
            fns[n]()
            t1, c1 = clock()
            out[n]["wall"].append((t1 - t0) * 1e3)
            out[n]["cpu"].append((c1 - c0) * 1e3)
    return out


def summary(t: dict[str, list[float]]) -> dict[str, float]:
    """The figures of :func:`time_call` from the per-round times of one engine of :func:`interleaved`."""
    return {"median_ms": float(np.median(t["wall"])), "min_ms": float(min(t["wall"])), "max_ms": float(max(t["wall"])),
            "cpu_median_ms": float(np.median(t["cpu"])), "runs": len(t["wall"])}


def round_ratios(num: list[float], den: list[float]) -> list[float]:
    """num[r] / den[r] for each round r: e.g. a baseline's time over Q-CNN's, the speed-up in that round."""
    if len(num) != len(den):
        raise ValueError(f"{len(num)} and {len(den)} rounds")
    return [a / b for a, b in zip(num, den)]


def spread(values: list[float]) -> dict[str, float]:
    """Median, 25th and 75th percentiles (linear interpolation), min and max of values, and their count."""
    v = np.asarray(values, np.float64)
    p25, med, p75 = np.percentile(v, [25, 50, 75])
    return {"median": float(med), "p25": float(p25), "p75": float(p75), "min": float(v.min()), "max": float(v.max()),
            "rounds": int(v.size)}
