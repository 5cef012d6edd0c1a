"""Peak memory (and time) of one forward pass, each in a fresh process: ``resource.getrusage``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Sequence

__all__ = ["run_model", "baseline_rss"]


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
from qcnn_lite import kernels
from qcnn_lite.io import modelfile
from qcnn_lite.bench.timing import single_thread
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
from qcnn_lite import kernels
from qcnn_lite.io import modelfile
from qcnn_lite.bench.timing import single_thread
{peak}
print(json.dumps({"peak_rss_mib": hwm / 1024 if hwm else None}))
""".replace("{peak}", _PEAK)


def _child(code: str, args: Sequence[str], backend: str, timeout: float = 3600) -> dict[str, Any]:
    env = {**os.environ, "QCNN_LITE_BACKEND": backend, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "QCNN_PROGRESS": "0"}
    r = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        # The child's last line is its error; its traceback is for a debugger, not for the user.
        last = (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1]
        raise RuntimeError(f"benchmark subprocess failed ({' '.join(args)}): {last}")
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
