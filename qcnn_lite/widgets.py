"""Classify a webcam photo, or an uploaded file, with a quantized network in JupyterLab.

* :class:`CameraWidget` -- an anywidget (ES module ``camera.js`` beside this
  file): live camera video and a "Capture" button that sends one JPEG frame
  to Python as a binary buffer. When there is no camera, permission is refused
  or the page is not a secure context, it says so and ``status`` starts with
  ``"unavailable"``.
* :func:`classify_app` -- the whole demo in one ``VBox``: camera and file
  upload, the pre-processed input the network sees, a top-5 bar list, the
  Q-CNN's time and, beside it, the dense network's answer and time.
* :func:`classify` -- the same path without widgets: photo bytes -> :class:`Result`.

Classification runs through the numpy engine (``Network.forward``) with
whichever kernel backend is active. Every bad input (empty, not an image,
truncated, too large) is answered with a message, never a traceback.
"""
from __future__ import annotations

import hashlib
import html
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import kernels
from .paths import project_root
from .engine import Network
from .preprocess import ImageError, prepare

__all__ = ["CameraWidget", "classify_app", "classify", "Result", "load_models", "default_model_paths", "top5_html"]

REPO = project_root()
DEFAULT_ARCH = "mini-alexnet"


# --------------------------------------------------------------------------- models
def _model_dirs() -> list[Path]:
    dirs = [Path(os.environ["QCNN_MODELS"])] if os.environ.get("QCNN_MODELS") else []
    dirs += [REPO / "data" / "models", Path.cwd() / "data" / "models", Path.cwd().parent / "data" / "models"]
    out: list[Path] = []
    for d in dirs:
        if d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _cache_path(dense_file: Path, digest: str, dense: Network) -> Path:
    """Where the demo's quantization of ``dense_file`` is cached.

    Named by a hash of the dense file's SHA-256 and of the quantization recipe
    (settings, calibration size, seed), so a cached file is never stale.
    """
    recipe = json.dumps([digest, sorted(demo_settings(dense).items()), _N_CALIB, _SEED, 1], default=list)
    key = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    return REPO / "results" / "cache" / "models" / f"{Path(dense_file).stem}-q-{key}.qcnn"


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
    (:data:`qcnn_lite.paper.MINI_SETTINGS`, second setting) when ``net`` is one of
    them, else the released AlexNet's conv C's=8, K=128 and fc C's=4, K=32, K capped at each
    layer's sub-vectors."""
    from .paper import MINI_SETTINGS, RELEASED_ALEXNET
    from .spec import n_vectors

    if net.name in MINI_SETTINGS:
        return MINI_SETTINGS[net.name][min(1, len(MINI_SETTINGS[net.name]) - 1)]
    settings = {}
    for _, L in net.param_layers():
        d, k = RELEASED_ALEXNET[L["type"]]
        settings[L["name"]] = (d, min(k, n_vectors(L)))
    return settings


_N_CALIB, _SEED = 1000, 0


def quantize_for_demo(dense: Network, n_calib: int = _N_CALIB, seed: int = _SEED, error_correction: bool = True,
                      source: str | os.PathLike | None = None) -> Network:
    """Quantize a dense Fashion-MNIST network with :func:`demo_settings`.

    Error correction (the paper's, with compensation) uses ``n_calib`` training
    images when Fashion-MNIST is available -- the fc layers need more images
    than inputs (576, 768) -- and plain product quantization otherwise, which
    loses far more accuracy. ``source``: the dense model file, whose SHA-256 is
    recorded in ``meta["quantized_from"]`` so a stale file can be recognised.
    """
    from . import data as datasets
    from .quantize import quantize_network

    calib = None
    if error_correction:
        try:
            images, _ = datasets.load_fashion_mnist("train")
            idx = np.sort(np.random.default_rng(seed).choice(len(images), min(n_calib, len(images)), replace=False))
            calib = datasets.to_input(images[idx], *datasets.normalisation(dense.meta))
        except (datasets.DataError, OSError):
            pass  # no data here: plain product quantization
    net = quantize_network(dense, calib, demo_settings(dense), error_correction=calib is not None, seed=seed,
                           show_progress=False)
    if source is not None:
        net.meta["quantized_from"] = {"file": Path(source).name, "sha256": _sha256(Path(source))}
    return net


def quantize_file(dense_path: str | os.PathLike, out_path: str | os.PathLike | None = None,
                  overwrite: bool = False) -> Path:
    """Write the demo's quantized network for a dense model file (default ``<dense>-q.qcnn`` beside it)."""
    from . import modelfile

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
    from .data import CLASSES
    from .models import synthetic

    net = synthetic(DEFAULT_ARCH, seed)
    net.meta["classes"] = list(CLASSES)
    net.meta["weights"] = "random (untrained): train one with `python -m qcnn_lite.train --arch mini-alexnet`"
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
    from . import modelfile

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
    digest = _sha256(d_path) if d_path is not None else None
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


def warm_up(*nets: Network | None) -> None:
    """One forward pass of each network, so the first time shown is not a cold start
    (decoded weights, packed codes, caches are made on the first call)."""
    from .measure import single_thread

    with single_thread(warn=False):
        for n in nets:
            if n is not None:
                n.forward(np.zeros((1,) + n.input_shape, np.float32))


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

    @property
    def label(self) -> str:
        return self.top[0][0]


def _probabilities(net: Network, x: np.ndarray, repeat: int = 1) -> tuple[np.ndarray, float]:
    """Class probabilities (classes,) and the median wall time of ``repeat`` forward passes, in seconds.

    One BLAS thread while timed: on one 28x28 image, BLAS threads only add their
    start-up and hand-over (it measured 20-50 ms with two busy cores, 0.7 ms on one).
    """
    from .measure import single_thread

    times = []
    with single_thread(warn=False):
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
    """Photo (file bytes, path or PIL image) -> :class:`Result`. Raises :class:`ImageError` for a bad file.

    ``seconds`` (and ``dense_seconds``) are the median of ``repeat`` forward passes.
    """
    prep = prepare(data, net.input_shape, net.meta)
    probs, seconds = _probabilities(net, prep.x, repeat)
    names = class_names(net)
    res = Result(probs, _top(probs, names), prep.display, seconds, kernels.backend(), notes=list(prep.notes))
    if dense is not None:
        dprobs, res.dense_seconds = _probabilities(dense, prep.x, repeat)
        res.dense_top = _top(dprobs, class_names(dense))
    return res


# --------------------------------------------------------------------------- HTML pieces
_CSS = """
<style>
.qcnn-top5 { list-style: none; padding: 0; margin: 0.3em 0; font-family: sans-serif; font-size: 13px; }
.qcnn-top5 li { display: grid; grid-template-columns: 7.5em 8em 3.5em; align-items: center; gap: 0.4em; margin: 2px 0; }
.qcnn-top5 .qcnn-bar { background: #eee; height: 0.9em; }
.qcnn-top5 .qcnn-fill { background: #3b7dd8; height: 100%; }
.qcnn-top5 li:first-child .qcnn-fill { background: #d8663b; }
.qcnn-top5 .qcnn-p { text-align: right; font-variant-numeric: tabular-nums; }
.qcnn-error { color: #b00020; font-family: sans-serif; font-weight: bold; }
.qcnn-note { color: #8a5a00; font-family: sans-serif; font-size: 12px; }
.qcnn-time { font-family: sans-serif; font-size: 13px; }
</style>
"""


def top5_html(top: list[tuple[str, float]], title: str) -> str:
    """An HTML bar list (``<ol class="qcnn-top5">``) of (name, probability) pairs."""
    rows = "".join(
        f'<li data-class="{html.escape(n)}" data-p="{p:.6f}"><span class="qcnn-name">{html.escape(n)}</span>'
        f'<span class="qcnn-bar"><div class="qcnn-fill" style="width: {100 * p:.1f}%"></div></span>'
        f'<span class="qcnn-p">{100 * p:.1f}%</span></li>'
        for n, p in top
    )
    return f'<div><b>{html.escape(title)}</b><ol class="qcnn-top5">{rows}</ol></div>'


def _png(picture: np.ndarray, scale: int) -> bytes:
    from PIL import Image

    im = Image.fromarray(picture)
    im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- widgets
def _camera_class() -> type:
    """Build :class:`CameraWidget` on first use: anywidget and ipywidgets load only when a widget is wanted."""
    global _CAMERA
    if _CAMERA is not None:
        return _CAMERA
    import anywidget
    import traitlets

    class CameraWidget(anywidget.AnyWidget):
        """Live camera with a Capture button (JupyterLab 4 / ipywidgets 8, via anywidget).

        The front end sends each captured frame as a custom message
        ``{"type": "frame", "width", "height", "mime"}`` with the JPEG bytes as its
        one binary buffer; :meth:`on_frame` registers a callback(bytes).
        ``status`` is "starting", "live" or "unavailable: <reason>".
        """

        _esm = Path(__file__).with_name("camera.js")
        _css = """
        .qcnn-camera { display: flex; flex-direction: column; gap: 4px; align-items: flex-start; font-family: sans-serif; }
        .qcnn-camera-video { background: #222; max-width: 100%; }
        .qcnn-camera-status { font-size: 12px; color: #555; }
        .qcnn-camera-status[data-state="unavailable"] { color: #b00020; }
        """
        status = traitlets.Unicode("starting").tag(sync=True)
        width = traitlets.Int(320).tag(sync=True)
        frames = traitlets.Int(0)  # frames received; Python side only

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._callbacks: list[Callable[[bytes], None]] = []
            self.on_msg(self._handle_frame)

        def on_frame(self, callback: Callable[[bytes], None]) -> None:
            """Call ``callback(jpeg_bytes)`` for every captured frame."""
            self._callbacks.append(callback)

        def _handle_frame(self, _widget: Any, content: Any, buffers: list) -> None:
            if not isinstance(content, dict) or content.get("type") != "frame":
                return
            data = bytes(buffers[0]) if buffers else b""
            self.frames += 1
            for cb in self._callbacks:
                cb(data)

    _CAMERA = CameraWidget
    return _CAMERA


_CAMERA: type | None = None


def __getattr__(name: str) -> Any:
    if name == "CameraWidget":
        return _camera_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def classify_app(model_path: str | os.PathLike | None = None, dense_path: str | os.PathLike | None = None,
                 net: Network | None = None, dense: Network | None = None, camera: bool = True) -> Any:
    """The demo: one ``ipywidgets.VBox`` with camera, upload, input picture, top-5 and timings.

    Networks come from ``net``/``dense`` when given, else from
    :func:`load_models` (``model_path``/``dense_path``, default the quantized
    mini-alexnet). The returned box has ``.camera``, ``.upload``, ``.picture``,
    ``.result``, ``.message`` and ``.classify_bytes(data)``, which the camera
    and upload call.
    """
    import ipywidgets as W

    notes: list[str] = []
    if net is None:
        net, loaded_dense, notes = load_models(model_path, dense_path)
        dense = dense if dense is not None else loaded_dense
    what = f"{net.name}, {'quantized' if net.is_quantized else 'dense'}"
    warm_up(net, dense)

    header = W.HTML(_CSS + f"<b>Network:</b> {html.escape(what)}, input {'x'.join(map(str, net.input_shape))}"
                    + "".join(f'<div class="qcnn-note">{html.escape(n)}</div>' for n in notes))
    upload = W.FileUpload(accept="image/*", multiple=False, description="Upload photo")
    message = W.HTML("")
    picture = W.Image(format="png", width=140, height=140, layout=W.Layout(border="1px solid #ccc"))
    result = W.HTML('<div class="qcnn-idle">Capture a frame or upload a photo.</div>')
    timing = W.HTML("")
    inputs: list[Any] = []
    cam = None
    if camera:
        cam = _camera_class()()
        inputs.append(cam)
    inputs.append(W.VBox([W.HTML("<small>or a file (always available):</small>"), upload]))

    def show_error(text: str) -> None:
        message.value = f'<div class="qcnn-error">{html.escape(text)}</div>'
        result.value = '<div class="qcnn-idle">No answer for this input.</div>'
        timing.value = ""

    def classify_bytes(data: bytes, source: str = "upload") -> Result | None:
        try:
            res = classify(net, data, dense)
        except ImageError as e:
            show_error(str(e))
            return None
        except Exception as e:  # the demo must answer, not print a traceback into the output area
            show_error(f"could not classify this {source}: {type(e).__name__}: {e}")
            return None
        scale = max(1, 140 // max(res.picture.shape[:2]))
        picture.value = _png(res.picture, scale)
        message.value = "".join(f'<div class="qcnn-note">{html.escape(n)}</div>' for n in res.notes)
        html_q = top5_html(res.top, f"Q-CNN ({net.name}): top-5")
        t = f"Q-CNN: {1000 * res.seconds:.2f} ms ({res.backend} kernels)"
        if res.dense_top is not None:
            html_q = (f'<div style="display:flex; flex-wrap:wrap; gap:1.5em">{html_q}'
                      f'{top5_html(res.dense_top, "dense CNN: top-5")}</div>')
            t += f" &nbsp;|&nbsp; dense CNN: {1000 * res.dense_seconds:.2f} ms"
        result.value = html_q
        timing.value = f'<div class="qcnn-time" data-source="{html.escape(source)}">{t} &nbsp;(source: {html.escape(source)})</div>'
        return res

    def on_upload(change: dict) -> None:
        files = change["new"]
        if not files:
            return
        f = files[0]
        classify_bytes(bytes(f.get("content", b"")), f"upload {f.get('name', '')}".strip())

    upload.observe(on_upload, names="value")
    if cam is not None:
        cam.on_frame(lambda data: classify_bytes(data, "camera"))

        def on_status(change: dict) -> None:
            if str(change["new"]).startswith("unavailable"):
                message.value = ('<div class="qcnn-note">No camera here: use "Upload photo" '
                                 f'({html.escape(change["new"][len("unavailable: "):])}).</div>')

        cam.observe(on_status, names="status")

    box = W.VBox([
        header,
        W.HBox(inputs, layout=W.Layout(align_items="flex-start", grid_gap="1.5em")),
        message,
        W.HBox([W.VBox([W.HTML("<b>Network input</b>"), picture]), W.VBox([result, timing])],
               layout=W.Layout(grid_gap="1.5em")),
    ])
    box.add_class("qcnn-classify-app")
    box.camera, box.upload, box.picture, box.result, box.message, box.timing = cam, upload, picture, result, message, timing
    box.net, box.dense = net, dense
    box.classify_bytes = classify_bytes
    return box


def main(argv: list[str] | None = None) -> int:
    """``python -m qcnn_lite.widgets PHOTO ...``: the ``classify`` subcommand on its own (:mod:`qcnn_lite.classify_cli`)."""
    from .classify_cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
