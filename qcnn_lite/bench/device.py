"""Table 2 on a real device: run the benchmark, write a result file, validate, load, tabulate and plot it.

A *result file* (``device/results/<device>-<date>.json``, format in
``device/results/SCHEMA.md``) holds one benchmark session on one device:

* ``device`` -- model, Android version, kernel, CPU, cores, max frequency per core;
* ``environment`` -- load average before/after, CPU affinity (``taskset``), cool-down;
* ``build`` -- kernel backend, compiler and flags (:func:`qcnn_lite.kernels.buildinfo.collect`);
* ``runs`` -- AlexNet and CNN-S, dense (``cnn``) and quantized (``qcnn``): every timed
  forward pass in seconds, median/min/max, threads, model file size and peak RSS.

Each run is one fresh Python process that loads a model file and times a single
image on one thread, so its peak RSS is the memory Table 2 reports: runtime, model
and activations. The Q-CNN models use the released-AlexNet settings (conv C's=8,
K=128; fc C's=4, K=32; fc8 C's=1, K=16) with random codebooks and codes: weights do
not change the time, and these settings land on Table 2's storage column (12.6 and
20.1 MiB). "MB" in Table 2 and here means 2**20 bytes.

``python -m qcnn_lite device run|validate|table|plot`` (:mod:`qcnn_lite.cli.main`, also
``device/run-benchmark.sh``) calls these; the measuring is :mod:`qcnn_lite.bench.timing`'s, the
rows :mod:`qcnn_lite.repro.rows`'. Only numpy is needed to run and validate; :func:`plot_table2` imports matplotlib lazily.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import stat
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from qcnn_lite.bench.machine import device_facts, environment, uptime
from qcnn_lite.io.paths import write_file
from qcnn_lite.paper.constants import RELEASED_ALEXNET
from qcnn_lite.paper.constants import MIB, VARIANTS

__all__ = [
    "SCHEMA_VERSION", "KINDS", "ResultFormatError",
    "device_facts", "run_benchmark", "validate", "load_result", "load_results", "result_files", "QUICK", "FULL",
]

SCHEMA_VERSION = 1
KINDS = ("phone", "x86-ci-reference", "other")
QUICK = {"repeat": 3, "warmup": 1}
FULL = {"repeat": 10, "warmup": 2}
_QUICK, _FULL = QUICK, FULL
# What a result may hold: larger values are typing or unit mistakes, and would overflow the tables.
MAX_SECONDS = 3600.0  # one forward pass of one image
MAX_BYTES = 2**40  # a model file
MAX_MIB = 2.0**20  # peak memory
MAX_LOAD = 1e4  # a load average
MAX_FILE_BYTES = 64 * 2**20  # a result file is a few kB


class ResultFormatError(ValueError):
    """A result file that does not follow device/results/SCHEMA.md; the message names the file."""


# --------------------------------------------------------------------------- file names
def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")[:60] or "device"


def _default_name(dev: dict[str, Any], kind: str) -> str:
    if kind == "x86-ci-reference" or (dev["android_version"] is None and dev["arch"] in ("x86_64", "AMD64")):
        return _slug(f"{dev['arch']}-{dev['cpu']}")
    return _slug(" ".join(filter(None, [dev.get("manufacturer"), dev["model"]])))


# --------------------------------------------------------------------------- runner
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
    from qcnn_lite.kernels import buildinfo
    from qcnn_lite.bench import memory

    mode = QUICK if quick else FULL
    repeat = mode["repeat"] if repeat is None else repeat
    warmup = mode["warmup"] if warmup is None else warmup
    dev = device_facts()
    kind = kind or ("phone" if dev["android_version"] else "other")
    _check_arguments(networks, repeat, warmup, kind, cooldown, backends)  # before any folder or file is made
    name = _slug(name) if name else _default_name(dev, kind)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now(_dt.timezone.utc)
    env_before = environment()
    build = buildinfo.collect()
    _log(f"device {name} ({dev['model']}, {dev['cores']} cores); backend {build['backend']}; "
         f"{'quick' if quick else 'full'} mode: {repeat} timed runs after {warmup} warm-up")
    baseline = memory.baseline_rss("numpy")
    runs = _run_all(networks, backends, repeat, warmup, cooldown, seed)
    env = {**env_before, "load_average_after": environment()["load_average"], "uptime_after": uptime(),
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
                     "settings": {k: list(v) for k, v in RELEASED_ALEXNET.items()}, "seed": seed},
        "runs": runs,
    }
    validate(json.loads(json.dumps(result)), "the new result")  # never write a file the loader would reject
    path = _unique_path(out_dir, f"{name}-{started.strftime('%Y-%m-%d')}")
    # atomic, and never replacing a file that appeared meanwhile
    write_file(path, (json.dumps(result, indent=2) + "\n").encode())
    _log(f"wrote {path}")
    return path


def _check_arguments(networks: Sequence[str], repeat: int, warmup: int, kind: str, cooldown: float,
                     backends: Sequence[str]) -> None:
    """ValueError for any argument the runs could not use: found before the first run, not after it."""
    from qcnn_lite.kernels import dispatch
    from qcnn_lite.nn import models

    if repeat < 1 or warmup < 0:
        raise ValueError("repeat must be >= 1 and warmup >= 0")
    if not networks:
        raise ValueError("no networks to run: name at least one")
    for n in networks:
        models.spec(n)  # ValueError for unknown names
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not (math.isfinite(cooldown) and cooldown >= 0):
        raise ValueError(f"cooldown must be a non-negative number of seconds, got {cooldown}")
    usable = ["auto", *dispatch.available_backends()]
    for b in backends or ["?"]:
        if b not in usable:
            raise ValueError(f"backend {b!r} cannot run here: use {', '.join(usable)}")


def _run_all(networks: Sequence[str], backends: Sequence[str], repeat: int, warmup: int, cooldown: float,
             seed: int) -> list[dict[str, Any]]:
    """Every (network, variant, backend) run, each in a fresh process on model files made for it."""
    from qcnn_lite.bench import synthetic

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="qcnn-device-") as tmp:
        for net in networks:
            _log(f"[{net}] writing the dense and quantized model files")
            paths = synthetic.model_files(net, Path(tmp), seed, RELEASED_ALEXNET)
            for variant, backend in [("cnn", "numpy")] + [("qcnn", b) for b in backends]:
                if runs and cooldown > 0:
                    _log(f"  cooling down {cooldown:g} s")
                    time.sleep(cooldown)
                _log(f"[{net}] {variant} ({'numpy + BLAS' if variant == 'cnn' else 'kernels: ' + backend}) ...")
                runs.append(_one_run(net, variant, backend, paths[variant], repeat, warmup))
            for p in paths.values():
                p.unlink()
    return runs


def _one_run(net: str, variant: str, backend: str, path: Path, repeat: int, warmup: int) -> dict[str, Any]:
    """One configuration timed in a fresh process, as a result's run record."""
    from qcnn_lite.bench import memory

    w = memory.run_model(path, backend, repeat, warmup)
    t = w["times_s"]
    run = {
        "network": net, "variant": variant,
        "engine": "numpy-dense" if variant == "cnn" else f"qcnn-{w['backend']}",
        "backend": w["backend"], "threads": 1, "blas_threads": w["blas_threads"],
        "repeat": repeat, "warmup": warmup, "times_s": t,
        "median_s": statistics.median(t), "min_s": min(t), "max_s": max(t),
        "load_s": w["load_s"], "storage_bytes": path.stat().st_size,
        "peak_rss_mib": w["peak_rss_mib"], "fresh_process": True,
    }
    _log(f"    median {run['median_s']:.3f} s [{run['min_s']:.3f}-{run['max_s']:.3f}], "
         f"file {run['storage_bytes'] / MIB:.2f} MiB, peak RSS {run['peak_rss_mib']:.1f} MiB")
    return run


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


def _short(v: Any) -> str:
    """A number as a message shows it: 10**400 is not printed in full."""
    text = repr(v)
    return text if len(text) <= 24 else f"{text[:12]}... ({len(text)} digits)"


def _number(obj: dict, key: str, where: str, nullable: bool = False, positive: bool = False,
            most: float = math.inf) -> float | None:
    v = _typed(obj, key, (int, float), where, nullable)
    if v is None:
        return None
    if isinstance(v, int) and abs(v) > 2**64 or not math.isfinite(v) or v < 0 or (positive and v == 0) or v > most:
        bound = "" if most == math.inf else f" at most {most:g}"
        raise _fail(where, f"field {key!r} must be a {'positive' if positive else 'non-negative'} finite number"
                           f"{bound}, got {_short(v)}")
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
    for i, t in enumerate(times):  # the tables divide by these times: zero is as wrong as infinity
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not 0 < t <= MAX_SECONDS:
            raise _fail(where, f"times_s[{i}] must be a number of seconds above 0 and at most {MAX_SECONDS:g}, got {t!r}")
    med, lo, hi = (_number(run, k, where, positive=True, most=MAX_SECONDS) for k in ("median_s", "min_s", "max_s"))
    tol = 1e-9 * max(1.0, hi)
    if abs(lo - min(times)) > tol or abs(hi - max(times)) > tol or abs(med - statistics.median(times)) > tol:
        raise _fail(where, "median_s/min_s/max_s do not match times_s")
    st = _typed(run, "storage_bytes", (int,), where)
    if not 0 < st <= MAX_BYTES:
        raise _fail(where, f"field 'storage_bytes' must be above 0 and at most {MAX_BYTES}, got {_short(st)}")
    _number(run, "peak_rss_mib", where, positive=True, most=MAX_MIB)


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
    if la is not None and (len(la) != 3 or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                               or not 0 <= v <= MAX_LOAD for v in la)):
        raise _fail(f"{where}: environment", f"'load_average' must be three numbers from 0 to {MAX_LOAD:g}")

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
    try:  # looked at before it is opened: opening a FIFO would wait for a writer forever
        st = os.stat(path)
    except OSError as e:
        raise _fail(str(path), f"cannot read: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _fail(str(path), "not a regular file (a folder, FIFO or device)")
    if st.st_size > MAX_FILE_BYTES:
        raise _fail(str(path), f"{st.st_size:,} bytes is too large for a result file")
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
    except RecursionError:
        raise _fail(str(path), "JSON nested too deeply to be a result file") from None
    res = validate(obj, str(path))
    res["_path"] = str(path)
    return res


def result_files(paths_or_dir: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """The result files named: each file, and each directory's ``*.json`` but ``arm64-check*.json``.

    ResultFormatError for a missing path, a directory without result files, or a file named twice.
    """
    if isinstance(paths_or_dir, (str, os.PathLike)):
        paths_or_dir = [paths_or_dir]
    files: list[Path] = []
    for p in map(Path, paths_or_dir):
        if p.is_dir():
            found = sorted(q for q in p.glob("*.json") if not q.name.startswith(_NOT_RESULTS))
            if not found:
                raise _fail(str(p), "no result files (*.json) in this folder")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    seen: dict[Path, Path] = {}
    for f in files:
        key = f.resolve()
        if key in seen:
            raise _fail(str(f), "named more than once: name each result file once")
        seen[key] = f
    return files


def load_results(paths_or_dir: str | os.PathLike | Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Load and validate result files: a directory (its ``*.json`` but ``arm64-check*.json``), a file, or a list of both."""
    return [load_result(f) for f in result_files(paths_or_dir)]


_NOT_RESULTS = ("arm64-check", "schema")  # other JSON files that live in device/results/


