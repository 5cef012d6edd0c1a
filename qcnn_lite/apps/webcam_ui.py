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

from qcnn_lite.apps.demo import Result, classify, load_models, warm_up
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
