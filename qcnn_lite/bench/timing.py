"""How speed and memory are measured, once for the benchmarks and the device results.

* :func:`single_thread` -- numpy's BLAS, torch and faiss on one thread;
* :func:`faiss_fastscan` -- faiss's 4-bit product-quantization fast-scan over a layer's weight rows,
  the field's peer for the fc look-up kernels (``bench-layers`` and ``scripts/bench_fc.py``);
* :func:`time_call` -- median/min/max wall time and median thread CPU time of repeated calls;
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


__all__ = ["single_thread", "time_call"]


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


