"""Classify a webcam photo, or an uploaded file, with a quantized network in JupyterLab.

* :class:`CameraWidget` -- an anywidget (ES module ``camera.js`` beside this
  file): live camera video and a "Capture" button that sends one JPEG frame
  to Python as a binary buffer. When there is no camera, permission is refused
  or the page is not a secure context, it says so and ``status`` starts with
  ``"unavailable"``.
* :func:`classify_app` -- the whole demo in one ``VBox``: camera and file
  upload, the pre-processed input the network sees, a top-5 bar list, the
  Q-CNN's time and, beside it, the dense network's answer and time.

This module only draws and wires widgets; finding the models and classifying
a photo is :mod:`qcnn_lite.apps.demo`. Every bad input (empty, not an image,
truncated, too large) is answered with a message, never a traceback.
"""
from __future__ import annotations

import html
import io
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from qcnn_lite.apps.demo import TIMING_RUNS, Result, classify, full_size_speedup, load_models, warm_up
from qcnn_lite.nn.engine import Network
from qcnn_lite.io.preprocess import ImageError

__all__ = ["CameraWidget", "classify_app", "top5_html"]


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


def _widgets(net: Network, notes: list[str], camera: bool) -> Any:
    """The app's widgets, in a namespace; the input picture stays hidden until the first photo."""
    import types

    import ipywidgets as W

    what = f"{net.name}, {'quantized' if net.is_quantized else 'dense'}"
    ui = types.SimpleNamespace()
    ui.header = W.HTML(_CSS + f"<b>Network:</b> {html.escape(what)}, input {'x'.join(map(str, net.input_shape))}"
                       + "".join(f'<div class="qcnn-note">{html.escape(n)}</div>' for n in notes))
    ui.upload = W.FileUpload(accept="image/*", multiple=False, description="Upload photo")
    ui.message = W.HTML("")
    ui.picture = W.Image(format="png", width=140, height=140, layout=W.Layout(border="1px solid #ccc"))
    # no empty image (a broken-image icon) before the first photo: the whole input column is hidden
    ui.picture_box = W.VBox([W.HTML("<b>Network input</b>"), ui.picture], layout=W.Layout(display="none"))
    ui.result = W.HTML('<div class="qcnn-idle">Capture a frame or upload a photo.</div>')
    ui.timing = W.HTML("")
    # one "camera unavailable" message: the camera widget's own status line says it, with the reason
    ui.camera = _camera_class()() if camera else None
    return ui


def _timing_html(res: Result, source: str, full: dict[str, Any] | None) -> str:
    """The timing line: medians of several warm runs, and the full-size speed-up from results/table2."""
    t = f"Q-CNN: {1000 * res.seconds:.2f} ms ({res.backend} kernels)"
    if res.dense_seconds is not None:
        t += f" &nbsp;|&nbsp; dense CNN: {1000 * res.dense_seconds:.2f} ms"
    t += f" &nbsp;(median of {res.runs} warm runs each, one thread; source: {html.escape(source)})"
    if full is not None and res.dense_seconds is not None:
        t += (f'<div class="qcnn-fullsize">Here, at {"x".join(map(str, res.picture.shape[:2]))}, dense/Q-CNN = '
              f"{res.dense_seconds / res.seconds:.2f}x. At full {full['network']} size Q-CNN ran "
              f"{full['speedup']:.2f}x faster than the dense engine (results/table2, {html.escape(full['cpu'])}, "
              f"{html.escape(full['date'])}): the tables pay off on large layers, a 28x28 network is mostly overhead.</div>")
    return f'<div class="qcnn-time" data-source="{html.escape(source)}" data-runs="{res.runs}">{t}</div>'


def _show_result(ui: Any, res: Result, source: str, net: Network, full: dict[str, Any] | None) -> None:
    ui.picture.value = _png(res.picture, max(1, 140 // max(res.picture.shape[:2])))
    ui.picture_box.layout.display = "flex"
    ui.message.value = ("".join(f'<div class="qcnn-note qcnn-far">{html.escape(n)}</div>' for n in res.far_notes)
                        + "".join(f'<div class="qcnn-note">{html.escape(n)}</div>' for n in res.notes))
    html_q = top5_html(res.top, f"Q-CNN ({net.name}): top-5")
    if res.dense_top is not None:
        html_q = (f'<div style="display:flex; flex-wrap:wrap; gap:1.5em">{html_q}'
                  f'{top5_html(res.dense_top, "dense CNN: top-5")}</div>')
    ui.result.value = html_q
    ui.timing.value = _timing_html(res, source, full)


def _show_error(ui: Any, text: str) -> None:
    ui.message.value = f'<div class="qcnn-error">{html.escape(text)}</div>'
    ui.result.value = '<div class="qcnn-idle">No answer for this input.</div>'
    ui.timing.value = ""


def classify_app(model_path: str | os.PathLike | None = None, dense_path: str | os.PathLike | None = None,
                 net: Network | None = None, dense: Network | None = None, camera: bool = True) -> Any:
    """The demo: one ``ipywidgets.VBox`` with camera, upload, input picture, top-5 and timings.

    Networks come from ``net``/``dense`` when given, else from
    :func:`load_models` (``model_path``/``dense_path``, default the quantized
    mini-alexnet). The returned box has ``.camera``, ``.upload``, ``.picture``,
    ``.result``, ``.message``, ``.timing`` and ``.classify_bytes(data)``, which the camera
    and upload call. Times are medians of :data:`~qcnn_lite.apps.demo.TIMING_RUNS` warm runs.
    """
    import ipywidgets as W

    notes: list[str] = []
    if net is None:
        net, loaded_dense, notes = load_models(model_path, dense_path)
        dense = dense if dense is not None else loaded_dense
    warm_up(net, dense)
    ui = _widgets(net, notes, camera)
    full = full_size_speedup() if net.input_shape[-1] < 64 else None  # the lesson of a small network

    def classify_bytes(data: bytes, source: str = "upload") -> Result | None:
        try:
            res = classify(net, data, dense, repeat=TIMING_RUNS)
        except ImageError as e:
            _show_error(ui, str(e))
            return None
        except Exception as e:  # the demo must answer, not print a traceback into the output area
            _show_error(ui, f"could not classify this {source}: {type(e).__name__}: {e}")
            return None
        _show_result(ui, res, source, net, full)
        return res

    def on_upload(change: dict) -> None:
        if change["new"]:
            f = change["new"][0]
            classify_bytes(bytes(f.get("content", b"")), f"upload {f.get('name', '')}".strip())

    ui.upload.observe(on_upload, names="value")
    inputs = [ui.camera] if ui.camera is not None else []
    if ui.camera is not None:
        ui.camera.on_frame(lambda data: classify_bytes(data, "camera"))
    inputs.append(W.VBox([W.HTML("<small>or a file (always available):</small>"), ui.upload]))
    box = W.VBox([ui.header, W.HBox(inputs, layout=W.Layout(align_items="flex-start", grid_gap="1.5em")), ui.message,
                  W.HBox([ui.picture_box, W.VBox([ui.result, ui.timing])], layout=W.Layout(grid_gap="1.5em"))])
    box.add_class("qcnn-classify-app")
    for name in ("camera", "upload", "picture", "result", "message", "timing"):
        setattr(box, name, getattr(ui, name))
    box.net, box.dense, box.classify_bytes = net, dense, classify_bytes
    return box
