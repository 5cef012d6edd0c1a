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
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from . import kernels, models
from .engine import Network
from .layers import QConv2d, QLinear
from .paper import RELEASED_ALEXNET
from .spec import PARAM_TYPES, output_shapes, param_shapes, split_dim

__all__ = ["single_thread", "time_call", "faiss_fastscan", "FaissFastScan", "machine", "device_facts", "environment", "uptime", "quantized_layer", "quantized_network", "model_files",
           "run_model", "baseline_rss"]


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


class FaissFastScan:
    """faiss ``IndexPQFastScan`` over the rows of a weight (out, in): M sub-spaces of 4 bits (K=16).

    It stores the weight rows as the database, so a search with x as the query computes
    the table sum of every output, x . w_o, as our fc kernels do (then a top-k selection,
    which ours do not need). faiss fast-scan supports only K=16; it trains its own codebooks
    on the rows. ``all_outputs`` (k = out, every sum) is the peer of a layer; ``top1`` its
    cheapest use.
    """

    def __init__(self, faiss: Any, weight: np.ndarray, n_subspaces: int) -> None:
        w = np.ascontiguousarray(weight, dtype=np.float32)
        self.n_out, n_in = w.shape
        if n_in % n_subspaces:
            raise ValueError(f"{n_subspaces} sub-spaces do not divide {n_in} inputs")
        self.index = faiss.IndexPQFastScan(n_in, n_subspaces, 4, faiss.METRIC_INNER_PRODUCT)  # outputs: x . w_o
        old = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # OpenMP's spinning threads make training 30x slower on a busy 2-core machine
        try:
            # 1024 rows train 16 centroids per sub-space well (faiss asks >= 39 points each); the codebook
            # values do not change the search time, and every row is added
            self.index.train(w[np.random.default_rng(0).permutation(self.n_out)[:1024]] if self.n_out > 1024 else w)
            self.index.add(w)
        finally:
            faiss.omp_set_num_threads(old)

    def all_outputs(self, x: np.ndarray) -> Any:
        """x (n, in) -> faiss's (scores, ids) of every output."""
        return self.index.search(x, self.n_out)

    def top1(self, x: np.ndarray) -> Any:
        return self.index.search(x, 1)


def faiss_fastscan(weight: np.ndarray, n_subspaces: int) -> FaissFastScan | None:
    """A :class:`FaissFastScan` of the weight, or None when faiss is not installed (``bench`` extra)."""
    try:
        import faiss
    except ImportError:
        return None
    return FaissFastScan(faiss, weight, n_subspaces)


def machine() -> dict[str, Any]:
    """CPU, load and library versions, recorded with every result."""
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    torch = sys.modules.get("torch")
    target = kernels.describe()
    try:
        from .kernels import _shuffle

        fc_isa = _shuffle.default_isa()  # the byte-shuffle ISA the 8-bit fc layers pack for
    except ImportError:
        fc_isa = None
    return {
        "cpu": cpu, "cores": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "numpy": np.__version__, "torch": getattr(torch, "__version__", None),
        "kernel_backends": kernels.available_backends(),
        # the CPU target of the compiled kernels (None: not built) and why it was picked
        "kernel_target": target["target"], "kernel_target_reason": target["reason"],
        "kernel_targets_built": kernels.built_targets(), "cpu_features": target["cpu"]["features"],
        "fc_shuffle_isa": fc_isa,
        "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


# --------------------------------------------------------------------------- device facts
def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip()
    except OSError:
        return None


def _getprop(key: str) -> str | None:
    """An Android system property, or None off Android (no ``getprop``) or when it is empty."""
    exe = shutil.which("getprop")
    if exe is None:
        return None
    try:
        r = subprocess.run([exe, key], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None


def _cpuinfo() -> dict[str, Any]:
    """CPU description from /proc/cpuinfo: x86 'model name', ARM 'Hardware' and the distinct 'CPU part's."""
    text = _read("/proc/cpuinfo") or ""
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = (s.strip() for s in line.split(":", 1))
            fields.setdefault(k, []).append(v)
    model = (fields.get("model name") or fields.get("Model") or [None])[0]
    parts = sorted(set(fields.get("CPU part", [])))
    return {"model_name": model, "hardware": (fields.get("Hardware") or [None])[0], "cpu_parts": parts}


def _max_freqs_khz(n: int) -> list[int | None]:
    """cpuinfo_max_freq of every core in kHz (None where cpufreq is not exposed, e.g. most VMs)."""
    out: list[int | None] = []
    for i in range(n):
        v = _read(f"/sys/devices/system/cpu/cpu{i}/cpufreq/cpuinfo_max_freq")
        out.append(int(v) if v and v.isdigit() else None)
    return out


def _dmi_model() -> str | None:
    vendor, product = _read("/sys/devices/virtual/dmi/id/sys_vendor"), _read("/sys/devices/virtual/dmi/id/product_name")
    return " ".join(s for s in (vendor, product) if s) or None


def device_facts() -> dict[str, Any]:
    """What the result file records about the device (``device`` section of the schema)."""
    android = _getprop("ro.build.version.release")
    cpu = _cpuinfo()
    cores = os.cpu_count() or 1
    model = _getprop("ro.product.model") if android else None
    maker = _getprop("ro.product.manufacturer") if android else None
    if model is None:
        model = _dmi_model() or cpu["hardware"] or cpu["model_name"] or platform.machine()
    cpu_desc = cpu["model_name"] or ", ".join(filter(None, [cpu["hardware"], _getprop("ro.soc.model"),
                                                           _getprop("ro.board.platform")])) or platform.processor()
    mem = re.search(r"MemTotal:\s+(\d+) kB", _read("/proc/meminfo") or "")
    return {
        "model": model,
        "manufacturer": maker,
        "android_version": android,
        "android_sdk": _getprop("ro.build.version.sdk") if android else None,
        "os": f"Android {android}" if android else platform.system(),
        "kernel": f"{platform.system()} {platform.release()} {platform.version()}",
        "arch": platform.machine(),
        "cpu": cpu_desc or "unknown",
        "cpu_parts": cpu["cpu_parts"],
        "cores": cores,
        "max_freq_khz": _max_freqs_khz(cores),
        "mem_total_mib": int(mem.group(1)) / 1024 if mem else None,
    }


def uptime() -> str | None:
    exe = shutil.which("uptime")
    if exe is None:
        return None
    try:
        return subprocess.run([exe], capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict[str, Any]:
    aff = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "uptime": uptime(),
        "cpu_affinity": aff,
        "termux": bool(os.environ.get("TERMUX_VERSION")) or "com.termux" in os.environ.get("PREFIX", ""),
    }


# --------------------------------------------------------------------------- synthetic quantized networks
def quantized_layer(L: dict, in_shape: tuple[int, ...], settings: dict[str, tuple[int, int]],
                    rng: np.random.Generator) -> QConv2d | QLinear:
    """A QConv2d/QLinear for spec entry L with random codebooks and codes.

    C's is capped at the channels per group (AlexNet's conv1: one 3-D sub-space).
    """
    d, K = settings.get(L["name"], settings[L["type"]])
    if L["type"] == "conv":
        d = min(d, split_dim(L, in_shape))
    try:
        shapes = param_shapes(L, in_shape, d, K)
    except ValueError:
        what = "input channels" if L["type"] == "conv" else "inputs"
        raise ValueError(f"layer {L['name']}: C's={d} does not divide its {split_dim(L, in_shape)} {what}") from None
    books = rng.standard_normal(shapes["codebooks"], dtype=np.float32) * 0.1
    codes = rng.integers(0, K, shapes["codes"])
    bias = np.zeros(L["out"], np.float32)
    if L["type"] == "conv":
        return QConv2d(books, codes, bias, L.get("stride", 1), L.get("padding", 0), L.get("groups", 1))
    return QLinear(books, codes, bias)


def quantized_network(name: str, settings: dict[str, tuple[int, int]] = RELEASED_ALEXNET, seed: int = 0) -> Network:
    """A full-size network whose conv/fc layers are all quantized, with random codebooks and codes."""
    input_shape, spec = models.spec(name)
    shapes = [input_shape] + output_shapes(spec, input_shape)
    rng = np.random.default_rng(seed)
    params = {L["name"]: quantized_layer(L, shapes[i], settings, rng) for i, L in enumerate(spec) if L["type"] in PARAM_TYPES}
    return Network(name, input_shape, spec, params, {"weights": f"synthetic quantized, seed {seed}", "settings": {k: list(v) for k, v in settings.items()}})


def model_files(network: str, folder: Path, seed: int = 0,
                settings: dict[str, tuple[int, int]] = RELEASED_ALEXNET) -> dict[str, Path]:
    """Dense (``cnn``) and quantized (``qcnn``) model files of a full-size network with random weights."""
    from . import modelfile

    dense = models.synthetic(network, seed)
    paths = {"cnn": modelfile.save(dense, folder / f"{network}-cnn.qcnn")}
    del dense
    paths["qcnn"] = modelfile.save(quantized_network(network, settings, seed), folder / f"{network}-qcnn.qcnn")
    return paths


# --------------------------------------------------------------------------- fresh-process worker
# The process's peak resident memory in kB (None where there is no /proc).
_PEAK = r"""
hwm = None
with open("/proc/self/status") as f:
    for line in f:
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
""".strip()
# One configuration in a fresh process: load the model file, time one image on one
# thread, report peak RSS. Printed as the last line of stdout, as JSON.
_WORKER = r"""
import json, os, sys, time
t0 = time.perf_counter()
import numpy as np
from qcnn_lite import kernels, modelfile
from qcnn_lite.measure import single_thread
path, backend, repeat, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
kernels.set_backend(backend)
t1 = time.perf_counter()
net = modelfile.load(path)
t2 = time.perf_counter()
# A fixed input made without numpy.random: importing the RNG alone adds ~5 MiB of resident memory.
x = np.sin(np.arange(np.prod(net.input_shape), dtype=np.float32)).reshape((1,) + net.input_shape)
blas_threads = None
with single_thread():
    try:
        from threadpoolctl import threadpool_info
        blas_threads = max((d["num_threads"] for d in threadpool_info() if d.get("user_api") == "blas"), default=None)
    except ImportError:
        pass
    for _ in range(warmup):
        net.forward(x)
    times = []
    for _ in range(repeat):
        s = time.perf_counter()
        net.forward(x)
        times.append(time.perf_counter() - s)
{peak}
import resource
maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"times_s": times, "backend": kernels.backend(), "blas_threads": blas_threads,
                  "import_s": t1 - t0, "load_s": t2 - t1, "peak_rss_mib": (hwm or maxrss) / 1024,
                  "torch_imported": "torch" in sys.modules}))
""".replace("{peak}", _PEAK)

# Peak RSS of the same process without a model: what Python + numpy + qcnn_lite cost on their own.
_BASELINE = r"""
import json
import numpy as np
from qcnn_lite import kernels, modelfile
from qcnn_lite.measure import single_thread
{peak}
print(json.dumps({"peak_rss_mib": hwm / 1024 if hwm else None}))
""".replace("{peak}", _PEAK)


def _child(code: str, args: Sequence[str], backend: str, timeout: float = 3600) -> dict[str, Any]:
    env = {**os.environ, "QCNN_LITE_BACKEND": backend, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "QCNN_PROGRESS": "0"}
    r = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed ({' '.join(args)}): {r.stderr.strip()[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_model(model_path: str | os.PathLike, backend: str = "auto", repeat: int = 1, warmup: int = 0) -> dict[str, Any]:
    """Load a model file in a fresh process and time ``repeat`` single-image forward passes after
    ``warmup`` (numpy engine, one thread, no torch). Returns times_s, backend, blas_threads,
    import_s, load_s, peak_rss_mib (the process's VmHWM) and torch_imported."""
    out = _child(_WORKER, [str(model_path), backend, str(repeat), str(warmup)], backend)
    if out["torch_imported"]:
        raise RuntimeError("torch was imported by the numpy engine")
    return out


def baseline_rss(backend: str = "numpy") -> float:
    """Peak RSS (MiB) of the worker's process without a model: Python + numpy + qcnn_lite."""
    v = _child(_BASELINE, [], backend, timeout=300)["peak_rss_mib"]
    return float("nan") if v is None else v
