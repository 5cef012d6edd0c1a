"""The webcam demo without widgets: find the models, quantize and cache them, classify a photo.

* :func:`load_models` -- the quantized network (and the dense one beside it):
  a committed ``<arch>-q.qcnn`` if it was made from the current dense file,
  else the dense file quantized once by :func:`quantize_for_demo` and cached
  in ``results/cache/models/`` under the dense file's hash.
* :func:`classify` -- photo bytes -> :class:`Result` (top-5, the input the
  network saw, the Q-CNN's and the dense network's times).

Classification runs through the numpy engine (``Network.forward``) with
whichever kernel backend is active. Paths come from :mod:`qcnn_lite.io.paths`,
resolved at each call. :mod:`qcnn_lite.apps.webcam_ui` draws this in JupyterLab.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qcnn_lite import kernels
from qcnn_lite.io import paths
from qcnn_lite.io.cache import sha256_file
from qcnn_lite.nn.engine import Network
from qcnn_lite.io.preprocess import prepare

__all__ = ["classify", "Result", "far_from_training", "full_size_speedup", "UNIFORM_STD", "MIN_TOP1", "TIMING_RUNS",
           "load_models", "default_model_paths", "quantize_for_demo", "quantize_file",
           "demo_settings", "class_names", "DEFAULT_ARCH"]

DEFAULT_ARCH = "mini-alexnet"


# --------------------------------------------------------------------------- models
def _model_dirs() -> list[Path]:
    dirs = paths.model_dirs() + [Path.cwd() / "data" / "models", Path.cwd().parent / "data" / "models"]
    out: list[Path] = []
    for d in dirs:
        if d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def _cache_path(dense_file: Path, digest: str, dense: Network) -> Path:
    """Where the demo's quantization of ``dense_file`` is cached.

    Named by a hash of the dense file's SHA-256 and of the quantization recipe
    (settings, calibration size, seed), so a cached file is never stale.
    """
    recipe = json.dumps([digest, sorted(demo_settings(dense).items()), _N_CALIB, _N_ITER, _SEED, 1], default=list)
    key = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    return paths.results_dir() / "cache" / "models" / f"{Path(dense_file).stem}-q-{key}.qcnn"


def default_model_paths(arch: str = DEFAULT_ARCH) -> tuple[Path | None, Path | None]:
    """(quantized, dense) model files for ``arch``, each None when not found.

    The quantized one is ``<arch>-q.qcnn``, the dense one ``<arch>.qcnn``, in
    ``$QCNN_MODELS``, then ``data/models`` of the repository or of the working
    directory (or its parent, for notebooks/).
    """
    q = d = None
    for folder in _model_dirs():
        if q is None and (folder / f"{arch}-q.qcnn").is_file():
            q = folder / f"{arch}-q.qcnn"
        if d is None and (folder / f"{arch}.qcnn").is_file():
            d = folder / f"{arch}.qcnn"
    return q, d


def demo_settings(net: Network) -> dict[str, tuple[int, int]]:
    """(C's, K) per layer: the paper's AlexNet setting scaled to the mini networks
    (:data:`qcnn_lite.paper.constants.MINI_SETTINGS`, second setting) when ``net`` is one of
    them, else the released AlexNet's conv C's=8, K=128 and fc C's=4, K=32, K capped at each
    layer's sub-vectors."""
    from qcnn_lite.paper.constants import MINI_SETTINGS, RELEASED_ALEXNET
    from qcnn_lite.nn.spec import n_vectors

    if net.name in MINI_SETTINGS:
        return MINI_SETTINGS[net.name][min(1, len(MINI_SETTINGS[net.name]) - 1)]
    settings = {}
    for _, L in net.param_layers():
        d, k = RELEASED_ALEXNET[L["type"]]
        settings[L["name"]] = (d, min(k, n_vectors(L)))
    return settings


# The calibration recipe of notebook 04 (section 1b): 2,500 training images, 2 sweeps per layer.
_N_CALIB, _N_ITER, _SEED = 2500, 2, 0


def quantize_for_demo(dense: Network, n_calib: int = _N_CALIB, seed: int = _SEED, error_correction: bool = True,
                      source: str | os.PathLike | None = None) -> Network:
    """Quantize a dense Fashion-MNIST network with :func:`demo_settings`.

    Error correction (the paper's, with compensation) uses ``n_calib`` training
    images when Fashion-MNIST is available -- the fc layers need more images
    than inputs (576, 768) -- and plain product quantization otherwise, which
    loses far more accuracy. ``source``: the dense model file, whose SHA-256 is
    recorded in ``meta["quantized_from"]`` so a stale file can be recognised.
    """
    from qcnn_lite.io import datasets
    from qcnn_lite.quant.quantize import quantize_network

    calib = None
    if error_correction:
        try:
            images, _ = datasets.load_fashion_mnist("train")
            idx = np.sort(np.random.default_rng(seed).choice(len(images), min(n_calib, len(images)), replace=False))
            calib = datasets.to_input(images[idx], *datasets.normalisation(dense.meta))
        except (datasets.DataError, OSError):
            pass  # no data here: plain product quantization
    net = quantize_network(dense, calib, demo_settings(dense), error_correction=calib is not None, seed=seed,
                           n_iter=_N_ITER, show_progress=False)
    if source is not None:
        net.meta["quantized_from"] = {"file": Path(source).name, "sha256": sha256_file(Path(source))}
    return net


def quantize_file(dense_path: str | os.PathLike, out_path: str | os.PathLike | None = None,
                  overwrite: bool = False) -> Path:
    """Write the demo's quantized network for a dense model file (default ``<dense>-q.qcnn`` beside it)."""
    from qcnn_lite.io import modelfile

    dense_path = Path(dense_path)
    out = Path(out_path) if out_path is not None else dense_path.with_name(f"{dense_path.stem}-q.qcnn")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (--force) to replace it")
    net = quantize_for_demo(modelfile.load(dense_path), source=dense_path)
    if not net.meta["quantization"]["error_correction"]:
        raise ValueError("Fashion-MNIST is needed for error correction (make data); refusing to save a plain-PQ model")
    return modelfile.save(net, out, overwrite=overwrite)


def _demo_network(seed: int = 0) -> Network:
    """An untrained (random-weight) mini-alexnet: keeps the app usable before any model is trained."""
    from qcnn_lite.io.datasets import CLASSES
    from qcnn_lite.nn.models import synthetic

    net = synthetic(DEFAULT_ARCH, seed)
    net.meta["classes"] = list(CLASSES)
    net.meta["weights"] = "random (untrained): train one with `python -m qcnn_lite train --arch mini-alexnet`"
    return net


def load_models(model_path: str | os.PathLike | None = None, dense_path: str | os.PathLike | None = None,
                cache: bool = True) -> tuple[Network, Network | None, list[str]]:
    """(quantized network, dense network or None, notes for the user).

    With no paths, in order: ``<arch>-q.qcnn`` (see :func:`default_model_paths`)
    if it was made from the dense file found beside it (same SHA-256); else
    the dense ``mini-alexnet.qcnn`` quantized by :func:`quantize_for_demo` --
    once: the result is cached in ``results/cache/models/`` under the dense
    file's hash; else an untrained network, said so in the notes. A dense
    network passed as ``model_path`` is quantized the same way.
    """
    from qcnn_lite.io import modelfile

    notes: list[str] = []
    dense = modelfile.load(dense_path) if dense_path is not None else None
    if model_path is not None:
        net = modelfile.load(model_path)
        if not net.is_quantized:
            dense = dense or net
            net = quantize_for_demo(net, source=model_path)
            notes.append(f"{Path(model_path).name} is a dense network: quantized it for this demo")
        return net, dense, notes
    q_path, d_path = default_model_paths()
    digest = sha256_file(d_path) if d_path is not None else None
    if dense is None and d_path is not None:
        dense = modelfile.load(d_path)
    if q_path is not None:
        net = modelfile.load(q_path)
        made_from = net.meta.get("quantized_from", {}).get("sha256") if isinstance(net.meta.get("quantized_from"), dict) else None
        if digest is None or made_from in (None, digest):
            return net, dense, notes
        notes.append(f"{q_path.name} was made from another {d_path.name}: quantizing the current one instead")
    if dense is not None:
        cached = _cache_path(d_path, digest, dense) if d_path is not None and dense_path is None else None
        if cached is not None and cached.is_file():
            return modelfile.load(cached), dense, notes
        net = quantize_for_demo(dense, source=d_path if dense_path is None else dense_path)
        ec = "with" if net.meta["quantization"]["error_correction"] else "WITHOUT (no Fashion-MNIST)"
        notes.append(f"quantized {dense.name} on first use, {ec} error correction")
        if cache and cached is not None:
            try:
                cached.parent.mkdir(parents=True, exist_ok=True)
                modelfile.save(net, cached)  # refuses to overwrite: another process may have just written it
            except OSError:  # FileExistsError included; a read-only checkout just does not cache
                pass
        return net, dense, notes
    dense = _demo_network()
    net = quantize_for_demo(dense, error_correction=False)  # random weights: nothing worth correcting
    notes.append(f"no trained {DEFAULT_ARCH} found (data/models/{DEFAULT_ARCH}.qcnn): "
                 "this network has RANDOM weights, its answers mean nothing")
    return net, dense, notes


def class_names(net: Network) -> list[str]:
    """The network's class names (``meta["classes"]``), else "class 0", "class 1", ..."""
    n = int(net.shapes()[-1][0])
    names = net.meta.get("classes")
    if isinstance(names, (list, tuple)) and len(names) == n:
        return [str(c) for c in names]
    return [f"class {i}" for i in range(n)]


# --------------------------------------------------------------------------- classification
@dataclass
class Result:
    """One photo's classification.

    probs : (classes,) float32; top : [(name, probability)] best first (5);
    picture : the input the network saw, uint8 (H, W) or (H, W, 3);
    seconds : the Q-CNN's forward time; dense_top / dense_seconds : the same for the dense network.
    """

    probs: np.ndarray
    top: list[tuple[str, float]]
    picture: np.ndarray
    seconds: float
    backend: str
    dense_top: list[tuple[str, float]] | None = None
    dense_seconds: float | None = None
    notes: list[str] = field(default_factory=list)
    runs: int = 1
    far_notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.top[0][0]


def warm_up(*nets: Network | None) -> None:
    """One forward pass of each network, so the first time shown is not a cold start
    (decoded weights, packed codes, caches are made on the first call)."""
    from qcnn_lite.bench.timing import single_thread

    with single_thread(warn=False):
        for n in nets:
            if n is not None:
                n.forward(np.zeros((1,) + n.input_shape, np.float32))


def _probabilities(net: Network, x: np.ndarray, repeat: int = 1) -> tuple[np.ndarray, float]:
    """Class probabilities (classes,) and the median wall time of ``repeat`` forward passes, in seconds.

    One BLAS thread while timed: on one 28x28 image, BLAS threads only add their
    start-up and hand-over, tens of times the forward pass itself.
    """
    from qcnn_lite.bench.timing import single_thread

    times = []
    with single_thread(warn=False):
        if repeat > 1:
            net.forward(x)  # one untimed pass: the median is over warm runs only
        for _ in range(max(1, repeat)):
            t0 = time.perf_counter()
            out = net.forward(x)[0]
            times.append(time.perf_counter() - t0)
    seconds = float(np.median(times))
    if net.spec[-1]["type"] != "softmax":
        out = np.exp(out - out.max())
        out = out / out.sum()
    return out.astype(np.float32), seconds


def _top(probs: np.ndarray, names: list[str], k: int = 5) -> list[tuple[str, float]]:
    order = np.argsort(-probs, kind="stable")[:k]
    return [(names[i], float(probs[i])) for i in order]


def classify(net: Network, data: bytes | str | os.PathLike | Any, dense: Network | None = None,
             repeat: int = 1) -> Result:
    """Photo (file bytes, path or PIL image) -> :class:`Result`. Raises :class:`~qcnn_lite.io.preprocess.ImageError` for a bad file.

    ``seconds`` (and ``dense_seconds``) are the median of ``repeat`` forward passes (after one
    untimed pass when ``repeat`` > 1). ``far_notes`` says when the photo is far from the training
    data (:func:`far_from_training`).
    """
    prep = prepare(data, net.input_shape, net.meta)
    probs, seconds = _probabilities(net, prep.x, repeat)
    names = class_names(net)
    res = Result(probs, _top(probs, names), prep.display, seconds, kernels.backend(), notes=list(prep.notes),
                 runs=max(1, repeat), far_notes=far_from_training(prep.display, probs))
    if dense is not None:
        dprobs, res.dense_seconds = _probabilities(dense, prep.x, repeat)
        res.dense_top = _top(dprobs, class_names(dense))
    return res


# A network input whose grey levels vary less than this (standard deviation, 0-255) is nearly uniform:
# the least varied of the first 2,000 Fashion-MNIST test images has about 22 (notebook 07 prints it).
UNIFORM_STD = 8.0
# Below this top-1 probability the answer is flagged as unsure (notebook 07 shows how many test images fall below).
MIN_TOP1 = 0.5
# Forward passes timed per photo in the app; the median is shown.
TIMING_RUNS = 15


def far_from_training(picture: np.ndarray, probs: np.ndarray) -> list[str]:
    """Notes for a photo unlike the training images: a nearly uniform input, or an unsure top class.

    A closed-set classifier always answers with one of its classes; these notes say when that answer
    means little. They catch only the obvious cases (a softmax can be confident on anything).
    """
    notes = []
    if float(np.asarray(picture, np.float32).std()) < UNIFORM_STD:
        notes.append("This photo is nearly uniform: there is no object in it, nothing like the training images. "
                     "The classes below are a forced guess, not an answer.")
    elif float(np.max(probs)) < MIN_TOP1:
        notes.append(f"Unsure: the top class has less than {100 * MIN_TOP1:.0f} % probability; the photo is probably "
                     "unlike the training images (or not one of the ten classes).")
    return notes


def full_size_speedup(network: str = "alexnet") -> dict[str, Any] | None:
    """Q-CNN's speed-up over the dense engine at full size from ``results/table2`` (with the machine
    that measured it), or None when the file is missing."""
    from qcnn_lite.io.results import load_table

    rows = load_table("table2")
    if not rows:
        return None
    row = next((r for r in rows if r.get("network") == network and r.get("model") == "Q-CNN"), None)
    if row is None or row.get("speedup_vs_dense") is None:
        return None
    machine = {}
    bench = paths.results_dir() / "table2_bench.json"
    if bench.exists():
        machine = json.loads(bench.read_text()).get("machine", {})
    return {"network": network, "speedup": float(row["speedup_vs_dense"]), "cpu": machine.get("cpu", "not recorded"),
            "date": str(machine.get("time_utc", "not recorded"))[:10]}
