"""Table 2 on a real device: run the benchmark, write a result file, validate, load, tabulate and plot it.

A *result file* (``device/results/<device>-<date>.json``, format in
``device/results/SCHEMA.md``) holds one benchmark session on one device:

* ``device`` -- model, Android version, kernel, CPU, cores, max frequency per core;
* ``environment`` -- load average before/after, CPU affinity (``taskset``), cool-down;
* ``build`` -- kernel backend, compiler and flags (:func:`qcnn_lite.buildinfo.collect`);
* ``runs`` -- AlexNet and CNN-S, dense (``cnn``) and quantized (``qcnn``): every timed
  forward pass in seconds, median/min/max, threads, model file size and peak RSS.

Each run is one fresh Python process that loads a model file and times a single
image on one thread, so its peak RSS is the memory Table 2 reports: runtime, model
and activations. The Q-CNN models use the released-AlexNet settings (conv C's=8,
K=128; fc C's=4, K=32; fc8 C's=1, K=16) with random codebooks and codes: weights do
not change the time, and these settings land on Table 2's storage column (12.6 and
20.1 MiB). "MB" in Table 2 and here means 2**20 bytes.

Command line (``python -m qcnn_lite.device_results ...``, also ``device/run-benchmark.sh``)::

    run [--quick] [--name NAME] [--kind phone|x86-ci-reference|other] [--out-dir DIR]
    validate FILE...      table FILE|DIR...      plot FILE|DIR... --out PNG

Only numpy is needed to run and validate; :func:`plot_table2` imports matplotlib lazily.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = [
    "SCHEMA_VERSION", "KINDS", "VARIANTS", "NETWORK_LABELS", "ResultFormatError",
    "device_facts", "run_benchmark", "validate", "load_result", "load_results",
    "table2_rows", "render_rows", "plot_table2", "add_parser", "main",
]

SCHEMA_VERSION = 1
KINDS = ("phone", "x86-ci-reference", "other")
VARIANTS = ("cnn", "qcnn")
NETWORK_LABELS = {"alexnet": "AlexNet", "cnns": "CNN-S"}
MIB = 2**20
_QUICK = {"repeat": 3, "warmup": 1}
_FULL = {"repeat": 10, "warmup": 2}


class ResultFormatError(ValueError):
    """A result file that does not follow device/results/SCHEMA.md; the message names the file."""


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


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")[:60] or "device"


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


def _default_name(dev: dict[str, Any], kind: str) -> str:
    if kind == "x86-ci-reference" or (dev["android_version"] is None and dev["arch"] in ("x86_64", "AMD64")):
        return _slug(f"{dev['arch']}-{dev['cpu']}")
    return _slug(" ".join(filter(None, [dev.get("manufacturer"), dev["model"]])))


def _uptime() -> str | None:
    exe = shutil.which("uptime")
    if exe is None:
        return None
    try:
        return subprocess.run([exe], capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _environment() -> dict[str, Any]:
    aff = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "uptime": _uptime(),
        "cpu_affinity": aff,
        "termux": bool(os.environ.get("TERMUX_VERSION")) or "com.termux" in os.environ.get("PREFIX", ""),
    }


# --------------------------------------------------------------------------- runner
# One configuration in a fresh process: load the model file, time one image on one
# thread, report peak RSS. Printed as the last line of stdout, as JSON.
_WORKER = r"""
import json, os, sys, time
t0 = time.perf_counter()
import numpy as np
from qcnn_lite import kernels, modelfile
from qcnn_lite.bench import single_thread
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
hwm = None
with open("/proc/self/status") as f:
    for line in f:
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
import resource
maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"times_s": times, "backend": kernels.backend(), "blas_threads": blas_threads,
                  "import_s": t1 - t0, "load_s": t2 - t1, "peak_rss_mib": (hwm or maxrss) / 1024,
                  "torch_imported": "torch" in sys.modules}))
"""

# Peak RSS of the same process without a model: what Python + numpy + qcnn_lite cost on their own.
_BASELINE = r"""
import json
import numpy as np
from qcnn_lite import kernels, modelfile
from qcnn_lite.bench import single_thread
hwm = None
with open("/proc/self/status") as f:
    for line in f:
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
print(json.dumps({"peak_rss_mib": hwm / 1024 if hwm else None}))
"""


def _child_env(backend: str) -> dict[str, str]:
    return {**os.environ, "QCNN_LITE_BACKEND": backend, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "QCNN_PROGRESS": "0"}


def _child(code: str, args: Sequence[str], backend: str) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-c", code, *args], env=_child_env(backend), capture_output=True,
                       text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed ({' '.join(args)}): {r.stderr.strip()[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _make_models(network: str, tmp: Path, seed: int) -> dict[str, Path]:
    """Dense and quantized model files for a full-size network (random weights of the right shapes)."""
    from . import bench, modelfile, models

    dense = models.synthetic(network, seed)
    paths = {"cnn": modelfile.save(dense, tmp / f"{network}-cnn.qcnn")}
    del dense
    qnet = bench.quantized_network(network, bench.RELEASED_ALEXNET, seed)
    paths["qcnn"] = modelfile.save(qnet, tmp / f"{network}-qcnn.qcnn")
    return paths


def _unique_path(out_dir: Path, stem: str) -> Path:
    """out_dir/stem.json, or stem-2.json, stem-3.json ... : an existing result is never overwritten."""
    path, i = out_dir / f"{stem}.json", 2
    while path.exists():
        path, i = out_dir / f"{stem}-{i}.json", i + 1
    return path


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_benchmark(out_dir: str | os.PathLike = "device/results", networks: Sequence[str] = ("alexnet", "cnns"),
                  quick: bool = False, repeat: int | None = None, warmup: int | None = None,
                  name: str | None = None, kind: str | None = None, cooldown: float = 0.0,
                  backends: Sequence[str] = ("auto",), seed: int = 0, notes: str = "") -> Path:
    """Benchmark every (network, variant) in a fresh process and write a new result file; returns its path.

    ``backends`` are the kernel backends the Q-CNN runs use (``auto`` = what
    ``python -m qcnn_lite info`` reports); the dense CNN always runs on numpy + BLAS.
    ``cooldown`` seconds of sleep go before every run after the first (thermal throttling).
    """
    from . import buildinfo, models

    mode = _QUICK if quick else _FULL
    repeat = mode["repeat"] if repeat is None else repeat
    warmup = mode["warmup"] if warmup is None else warmup
    if repeat < 1 or warmup < 0:
        raise ValueError("repeat must be >= 1 and warmup >= 0")
    for n in networks:
        models.spec(n)  # ValueError for unknown names
    dev = device_facts()
    kind = kind or ("phone" if dev["android_version"] else "other")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    name = _slug(name) if name else _default_name(dev, kind)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now(_dt.timezone.utc)
    env_before = _environment()
    build = buildinfo.collect()
    _log(f"device {name} ({dev['model']}, {dev['cores']} cores); backend {build['backend']}; "
         f"{'quick' if quick else 'full'} mode: {repeat} timed runs after {warmup} warm-up")
    baseline = _child(_BASELINE, [], "numpy")["peak_rss_mib"]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="qcnn-device-") as tmp:
        for net in networks:
            _log(f"[{net}] writing the dense and quantized model files")
            paths = _make_models(net, Path(tmp), seed)
            configs = [("cnn", "numpy")] + [("qcnn", b) for b in backends]
            for variant, backend in configs:
                if runs and cooldown > 0:
                    _log(f"  cooling down {cooldown:g} s")
                    time.sleep(cooldown)
                _log(f"[{net}] {variant} ({'numpy + BLAS' if variant == 'cnn' else 'kernels: ' + backend}) ...")
                w = _child(_WORKER, [str(paths[variant]), backend, str(repeat), str(warmup)], backend)
                t = w["times_s"]
                run = {
                    "network": net, "variant": variant,
                    "engine": "numpy-dense" if variant == "cnn" else f"qcnn-{w['backend']}",
                    "backend": w["backend"], "threads": 1, "blas_threads": w["blas_threads"],
                    "repeat": repeat, "warmup": warmup, "times_s": t,
                    "median_s": statistics.median(t), "min_s": min(t), "max_s": max(t),
                    "load_s": w["load_s"], "storage_bytes": paths[variant].stat().st_size,
                    "peak_rss_mib": w["peak_rss_mib"], "fresh_process": True,
                }
                _log(f"    median {run['median_s']:.3f} s [{run['min_s']:.3f}-{run['max_s']:.3f}], "
                     f"file {run['storage_bytes'] / MIB:.2f} MiB, peak RSS {run['peak_rss_mib']:.1f} MiB")
                runs.append(run)
            for p in paths.values():
                p.unlink()
    env = {**env_before, "load_average_after": _environment()["load_average"], "uptime_after": _uptime(),
           "cooldown_s": cooldown, "rss_no_model_mib": baseline}
    result = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "name": name,
        "created_utc": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": "quick" if quick else "full",
        "notes": notes,
        "device": dev,
        "environment": env,
        "build": build,
        "software": {"python": platform.python_version(), "numpy": _numpy_version(), "qcnn_lite": _version(),
                     "settings": {"conv": [8, 128], "fc": [4, 32], "fc8": [1, 16]}, "seed": seed},
        "runs": runs,
    }
    validate(json.loads(json.dumps(result)), "the new result")  # never write a file the loader would reject
    path = _unique_path(out_dir, f"{name}-{started.strftime('%Y-%m-%d')}")
    with open(path, "x") as f:  # "x": refuse to overwrite, even if a file appeared meanwhile
        f.write(json.dumps(result, indent=2) + "\n")
    _log(f"wrote {path}")
    return path


def _numpy_version() -> str:
    import numpy

    return numpy.__version__


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("qcnn-lite")
    except Exception:  # noqa: BLE001  (not installed as a distribution: a source checkout)
        return "unknown"


# --------------------------------------------------------------------------- validation
def _fail(where: str, msg: str) -> ResultFormatError:
    return ResultFormatError(f"{where}: {msg}")


def _typed(obj: dict, key: str, types: tuple[type, ...], where: str, nullable: bool = False) -> Any:
    if key not in obj:
        raise _fail(where, f"missing field {key!r}")
    v = obj[key]
    if v is None and nullable:
        return v
    # bool is an int in Python; a JSON true is never a count or a time
    if isinstance(v, bool) and bool not in types or not isinstance(v, types):
        want = " or ".join(t.__name__ for t in types) + (" or null" if nullable else "")
        raise _fail(where, f"field {key!r} must be {want}, got {type(v).__name__}")
    return v


def _number(obj: dict, key: str, where: str, nullable: bool = False, positive: bool = False) -> float | None:
    v = _typed(obj, key, (int, float), where, nullable)
    if v is None:
        return None
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise _fail(where, f"field {key!r} must be a {'positive' if positive else 'non-negative'} finite number, got {v}")
    return float(v)


def _check_run(run: Any, where: str) -> None:
    if not isinstance(run, dict):
        raise _fail(where, "must be an object")
    net = _typed(run, "network", (str,), where)
    if not net:
        raise _fail(where, "field 'network' is empty")
    if _typed(run, "variant", (str,), where) not in VARIANTS:
        raise _fail(where, f"field 'variant' must be one of {', '.join(VARIANTS)}, got {run['variant']!r}")
    for key in ("engine", "backend"):
        _typed(run, key, (str,), where)
    if _typed(run, "threads", (int,), where) < 1:
        raise _fail(where, "field 'threads' must be >= 1")
    repeat = _typed(run, "repeat", (int,), where)
    if repeat < 1:
        raise _fail(where, "field 'repeat' must be >= 1")
    times = _typed(run, "times_s", (list,), where)
    if len(times) != repeat:
        raise _fail(where, f"'times_s' has {len(times)} entries but 'repeat' is {repeat}")
    for i, t in enumerate(times):
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise _fail(where, f"times_s[{i}] must be a non-negative finite number of seconds, got {t!r}")
    med, lo, hi = (_number(run, k, where) for k in ("median_s", "min_s", "max_s"))
    tol = 1e-9 * max(1.0, hi)
    if abs(lo - min(times)) > tol or abs(hi - max(times)) > tol or abs(med - statistics.median(times)) > tol:
        raise _fail(where, "median_s/min_s/max_s do not match times_s")
    st = _typed(run, "storage_bytes", (int,), where)
    if st <= 0:
        raise _fail(where, f"field 'storage_bytes' must be positive, got {st}")
    _number(run, "peak_rss_mib", where, positive=True)


def validate(obj: Any, where: str = "result") -> dict[str, Any]:
    """Check a parsed result against SCHEMA.md (version 1); returns it, else raises ResultFormatError naming ``where``."""
    if not isinstance(obj, dict):
        raise _fail(where, f"top level must be a JSON object, got {type(obj).__name__}")
    if "schema_version" not in obj:
        raise _fail(where, "missing field 'schema_version' (not a qcnn-lite device result?)")
    ver = obj["schema_version"]
    if isinstance(ver, bool) or not isinstance(ver, int) or ver != SCHEMA_VERSION:
        raise _fail(where, f"unknown schema_version {ver!r}: this qcnn-lite reads version {SCHEMA_VERSION}")
    if _typed(obj, "kind", (str,), where) not in KINDS:
        raise _fail(where, f"field 'kind' must be one of {', '.join(KINDS)}, got {obj['kind']!r}")
    name = _typed(obj, "name", (str,), where)
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
        raise _fail(where, f"field 'name' must be lower-case letters, digits and '-', got {name!r}")
    created = _typed(obj, "created_utc", (str,), where)
    try:
        _dt.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise _fail(where, f"field 'created_utc' must look like 2026-01-31T12:00:00Z, got {created!r}") from None
    if _typed(obj, "mode", (str,), where) not in ("full", "quick"):
        raise _fail(where, f"field 'mode' must be 'full' or 'quick', got {obj['mode']!r}")

    dev = _typed(obj, "device", (dict,), where)
    w = f"{where}: device"
    for key in ("model", "os", "kernel", "arch", "cpu"):
        _typed(dev, key, (str,), w)
    _typed(dev, "android_version", (str,), w, nullable=True)
    cores = _typed(dev, "cores", (int,), w)
    if cores < 1:
        raise _fail(w, "field 'cores' must be >= 1")
    freqs = _typed(dev, "max_freq_khz", (list,), w)
    if len(freqs) != cores or any(f is not None and (isinstance(f, bool) or not isinstance(f, int) or f <= 0) for f in freqs):
        raise _fail(w, f"'max_freq_khz' must hold one positive integer (or null) per core ({cores})")

    env = _typed(obj, "environment", (dict,), where)
    la = _typed(env, "load_average", (list,), f"{where}: environment", nullable=True)
    if la is not None and (len(la) != 3 or any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in la)):
        raise _fail(f"{where}: environment", "'load_average' must be three non-negative numbers")

    build = _typed(obj, "build", (dict,), where)
    _typed(build, "backend", (str,), f"{where}: build")
    _typed(build, "build", (dict,), f"{where}: build")

    runs = _typed(obj, "runs", (list,), where)
    if not runs:
        raise _fail(where, "'runs' is empty")
    seen = set()
    for i, run in enumerate(runs):
        _check_run(run, f"{where}: runs[{i}]")
        key = (run["network"], run["variant"], run["engine"])
        if key in seen:
            raise _fail(where, f"runs[{i}] repeats {key}")
        seen.add(key)
    return obj


def _reject_constant(s: str) -> float:
    raise ValueError(f"{s} is not allowed (JSON has no NaN or Infinity)")


def load_result(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate one result file; ResultFormatError (naming the file) if it is bad."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _fail(str(path), "not UTF-8 text") from None
    except OSError as e:
        raise _fail(str(path), f"cannot read: {e.strerror or e}") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        end = text.rstrip()
        hint = " (truncated?)" if e.pos >= len(end) or not end.endswith(("}", "]")) else ""
        raise _fail(str(path), f"not valid JSON{hint}: {e.msg} (line {e.lineno}, column {e.colno})") from None
    except ValueError as e:
        raise _fail(str(path), str(e)) from None
    res = validate(obj, str(path))
    res["_path"] = str(path)
    return res


def load_results(paths_or_dir: str | os.PathLike | Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Load and validate result files: a directory (its ``*.json`` but ``arm64-check*.json``), a file, or a list of both."""
    if isinstance(paths_or_dir, (str, os.PathLike)):
        paths_or_dir = [paths_or_dir]
    files: list[Path] = []
    for p in map(Path, paths_or_dir):
        if p.is_dir():
            files += sorted(q for q in p.glob("*.json") if not q.name.startswith(_NOT_RESULTS))
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return [load_result(f) for f in files]


_NOT_RESULTS = ("arm64-check", "schema")  # other JSON files that live in device/results/


# --------------------------------------------------------------------------- Table 2
def _label(res: dict[str, Any]) -> str:
    d = res["device"]
    return f"{res['name']} ({res['kind']})" if res["kind"] != "phone" else f"{d['model']} ({res['name']})"


def table2_rows(results: Sequence[dict[str, Any]], paper: bool = True) -> list[dict[str, Any]]:
    """One row per (source, network, variant, engine): network, variant, time_s, storage_mb, memory_mb, source, engine.

    ``paper=True`` starts with the paper's Huawei Mate 7 rows (``paper.table2_paper``).
    time_s is the median single-image time; storage_mb the model file; memory_mb the
    peak RSS of the benchmark process (MB = 2**20 bytes, as in the paper).
    """
    from . import paper as _paper

    rows: list[dict[str, Any]] = []
    if paper:
        for net in NETWORK_LABELS:
            t2 = _paper.table2_paper(net)
            for variant in VARIANTS:
                r = t2[variant]
                rows.append({"network": net, "variant": variant, "time_s": r["time_s"], "storage_mb": r["storage_mb"],
                             "memory_mb": r["memory_mb"], "source": "paper: Huawei Mate 7", "engine": "authors' C++, no BLAS"})
    for res in results:
        for run in res["runs"]:
            rows.append({"network": run["network"], "variant": run["variant"], "time_s": run["median_s"],
                         "storage_mb": run["storage_bytes"] / MIB, "memory_mb": run["peak_rss_mib"],
                         "source": _label(res), "engine": run["engine"]})
    return rows


def render_rows(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of :func:`table2_rows` as a Markdown table in Table 2's layout (speed-up and ratios per source)."""
    head = "| Source | Network | Model | Time (s) | Storage (MB) | Memory (MB) | Engine |"
    out = [head, "|" + "---|" * 7]
    for r in rows:
        out.append(f"| {r['source']} | {NETWORK_LABELS.get(r['network'], r['network'])} | "
                   f"{'Q-CNN' if r['variant'] == 'qcnn' else 'CNN'} | {r['time_s']:.3f} | {r['storage_mb']:.2f} | "
                   f"{r['memory_mb']:.2f} | {r['engine']} |")
    ratios = []
    by = {(r["source"], r["network"], r["variant"]): r for r in rows}
    for (src, net, var), r in by.items():
        d = by.get((src, net, "cnn"))
        if var == "qcnn" and d is not None:
            ratios.append(f"{src}, {NETWORK_LABELS.get(net, net)}: {d['time_s'] / r['time_s']:.2f}x faster, "
                          f"{d['storage_mb'] / r['storage_mb']:.1f}x smaller, {d['memory_mb'] / r['memory_mb']:.2f}x less memory")
    return "\n".join(out + [""] + ratios) + "\n"


def plot_table2(results: Sequence[dict[str, Any]], fig: Any = None, paper: bool = True) -> Any:
    """Table 2 as three bar charts (time, storage, memory), log scale, one bar colour per source.

    Groups: AlexNet CNN / Q-CNN, CNN-S CNN / Q-CNN. The paper's Mate 7 figures come
    first (``paper=True``); every result adds one bar per group (its default Q-CNN
    engine: the first qcnn run of each network). ``fig``: a matplotlib Figure to draw
    into (cleared), else a new one. Returns the figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    rows = table2_rows(results, paper)
    seen: dict[tuple, dict] = {}
    for r in rows:  # first row per (source, network, variant): one bar each
        seen.setdefault((r["source"], r["network"], r["variant"]), r)
    sources = list(dict.fromkeys(k[0] for k in seen))
    groups = [(n, v) for n in NETWORK_LABELS for v in VARIANTS]
    if fig is None:
        fig = plt.figure(figsize=(13, 4.2))
    else:
        fig.clf()
    axes = fig.subplots(1, 3)
    width = 0.8 / max(1, len(sources))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, title) in zip(axes, [("time_s", "Time per image (s)"), ("storage_mb", "Storage (MB)"),
                                       ("memory_mb", "Peak memory (MB)")]):
        for j, src in enumerate(sources):
            xs, ys = [], []
            for g, (net, var) in enumerate(groups):
                r = seen.get((src, net, var))
                if r is not None:
                    xs.append(g + (j - (len(sources) - 1) / 2) * width)
                    ys.append(r[key])
            bars = ax.bar(xs, ys, width, label=src, color=colors[j % len(colors)])
            ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=1)
        ax.set_yscale("log")
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi * 2)  # room for the bar labels
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([f"{NETWORK_LABELS[n]}\n{'Q-CNN' if v == 'qcnn' else 'CNN'}" for n, v in groups])
        ax.set_title(title)
        ax.grid(axis="y", which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(sources), 3), fontsize=9, frameon=False)
    fig.suptitle("Table 2: single image, one thread -- paper (Huawei Mate 7) vs measured devices")
    rows_of_legend = math.ceil(len(sources) / 3)
    fig.tight_layout(rect=(0, 0.05 + 0.04 * rows_of_legend, 1, 1))
    return fig


# --------------------------------------------------------------------------- CLI
def _fill(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="action")
    r = sub.add_parser("run", help="benchmark AlexNet and CNN-S, dense and Q-CNN, and write a result file")
    r.add_argument("--quick", action="store_true", help=f"{_QUICK['repeat']} timed runs after {_QUICK['warmup']} warm-up (tests)")
    r.add_argument("--repeat", type=int, help=f"timed runs per configuration (default {_FULL['repeat']}; quick {_QUICK['repeat']})")
    r.add_argument("--warmup", type=int, help="untimed runs first (default 2; quick 1)")
    r.add_argument("--networks", default="alexnet,cnns", help="comma-separated (default alexnet,cnns)")
    r.add_argument("--name", help="device name used in the file name (default: from the phone model or CPU)")
    r.add_argument("--kind", choices=KINDS, help="phone (default on Android), x86-ci-reference, other")
    r.add_argument("--out-dir", default="device/results", help="where the result goes (default device/results)")
    r.add_argument("--cooldown", type=float, default=0.0, help="seconds of sleep between configurations (phones: 60)")
    r.add_argument("--backends", default="auto", help="kernel backends for the Q-CNN runs, e.g. pythran,numpy (default auto)")
    r.add_argument("--notes", default="", help="free text stored in the result (pinning, charger, temperature ...)")
    v = sub.add_parser("validate", help="check result files against the schema")
    v.add_argument("paths", nargs="+")
    t = sub.add_parser("table", help="Table 2 rows from result files (or folders) beside the paper's")
    t.add_argument("paths", nargs="+")
    t.add_argument("--format", choices=["markdown", "json"], default="markdown")
    g = sub.add_parser("plot", help="draw Table 2 from result files into a PNG")
    g.add_argument("paths", nargs="+")
    g.add_argument("--out", required=True, help="PNG to write (refuses to overwrite unless --force)")
    g.add_argument("--force", action="store_true")
    p.set_defaults(func=_dispatch)


def _dispatch(args: argparse.Namespace) -> int:
    if args.action == "run":
        path = run_benchmark(args.out_dir, [n.strip() for n in args.networks.split(",") if n.strip()], args.quick,
                             args.repeat, args.warmup, args.name, args.kind, args.cooldown,
                             [b.strip() for b in args.backends.split(",") if b.strip()], notes=args.notes)
        print(render_rows(table2_rows([load_result(path)])), end="")
        print(path)
        return 0
    if args.action == "validate":
        bad = 0
        for p in args.paths:
            try:
                load_results(p)
                print(f"ok: {p}")
            except (ResultFormatError, FileNotFoundError) as e:
                print(f"error: {e}", file=sys.stderr)
                bad += 1
        return 1 if bad else 0
    results = load_results(args.paths)
    if args.action == "table":
        rows = table2_rows(results)
        print(json.dumps(rows, indent=2) if args.format == "json" else render_rows(rows), end="\n" if args.format == "json" else "")
        return 0
    out = Path(args.out)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists (use --force to replace it)")
    import matplotlib

    matplotlib.use("Agg")
    fig = plot_table2(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(out)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``device`` (run | validate | table | plot) on a CLI's subparsers; the handler is ``args.func(args)``."""
    p = subparsers.add_parser("device", help="Table 2 on a device: run the benchmark, validate/tabulate/plot result files")
    _fill(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m qcnn_lite.device_results run|validate|table|plot ...``"""
    p = argparse.ArgumentParser(prog="python -m qcnn_lite.device_results", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _fill(p)
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
