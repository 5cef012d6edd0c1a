"""The classify app, driven as the browser would drive it, without a browser.

The network is a quantized nearest-template classifier whose answer is known
by construction: class "tall bar", "wide bar", "square" or "disc", for a photo
of that shape. The camera is simulated by sending the widget the custom
message its ES module sends (``{"type": "frame"}`` plus one JPEG buffer).
"""
from __future__ import annotations

import html
import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("anywidget")
Image = pytest.importorskip("PIL.Image")
from PIL import ImageDraw  # noqa: E402

from qcnn_lite.io import datasets  # noqa: E402
from qcnn_lite.apps import demo, webcam_ui as widgets  # noqa: E402
from qcnn_lite.io import paths
from qcnn_lite.cli.main import main as cli_main  # noqa: E402
from qcnn_lite.nn.engine import Network  # noqa: E402
from qcnn_lite.nn.layers import Conv2d, Linear, QConv2d, QLinear  # noqa: E402
from qcnn_lite.quant.quantize import quantize_network  # noqa: E402

CLASSES = ["tall bar", "wide bar", "square", "disc"]
REPO = Path(__file__).resolve().parents[1]


def templates() -> np.ndarray:
    """(4, 28, 28) in [0, 1]: each shape as the Fashion-MNIST pipeline should show it (filling the frame)."""
    t = np.zeros((4, 28, 28), np.float32)
    t[0, :, 10:18] = 1  # a 1:3.5 upright bar, centred
    t[1, 10:18, :] = 1
    t[2] = 1
    yy, xx = np.mgrid[0:28, 0:28]
    t[3] = ((yy - 13.5) ** 2 + (xx - 13.5) ** 2 <= 14 ** 2).astype(np.float32)
    return t


def template_network(quantized: bool = True) -> Network:
    """conv 1x1 (identity) -> fc nearest-template scores -> softmax; quantized without error correction.

    Score_c = <x, t_c> - |t_c|^2 / 2 is largest for the template nearest to x,
    everything in the network's normalised input space.
    """
    mean, std = datasets.MEAN, datasets.STD
    t = ((templates() - mean) / std).reshape(4, -1)
    spec = [
        {"type": "conv", "name": "conv1", "out": 1, "kernel": 1},
        {"type": "relu"},  # harmless: a shifted identity keeps every value positive
        {"type": "flatten"},
        {"type": "fc", "name": "fc1", "out": 4},
        {"type": "softmax"},
    ]
    shift = 10.0  # conv output x + shift > 0, and the fc bias takes the shift back out
    w = t / 20.0
    b = (-0.5 * (t * t).sum(1) - shift * t.sum(1)) / 20.0
    params = {"conv1": Conv2d(np.ones((1, 1, 1, 1), np.float32), np.array([shift], np.float32)), "fc1": Linear(w, b)}
    meta = {"classes": CLASSES, "input_mean": mean, "input_std": std}
    dense = Network("templates", (1, 28, 28), spec, params, meta)
    if not quantized:
        return dense
    # K equal to the number of rows: every sub-vector gets its own codeword
    return quantize_network(dense, None, {"conv": (1, 1), "fc": (4, 4)}, error_correction=False, show_progress=False)


def shape_photo(kind: str, size=(640, 480), seed=0) -> Image.Image:
    """A dark shape on a light, noisy background, somewhere off-centre."""
    im = Image.new("RGB", size, (225, 222, 215))
    d = ImageDraw.Draw(im)
    ink = (35, 30, 45)
    if kind == "tall bar":
        d.rectangle((400, 50, 480, 330), fill=ink)
    elif kind == "wide bar":
        d.rectangle((60, 300, 400, 397), fill=ink)
    elif kind == "square":
        d.rectangle((150, 120, 350, 320), fill=ink)
    else:
        d.ellipse((300, 150, 560, 410), fill=ink)
    a = np.asarray(im, np.float32) + np.random.default_rng(seed).normal(0, 5, (size[1], size[0], 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def jpeg(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def shown_top5(app) -> list[tuple[str, float]]:
    """The (class, probability) rows of the first top-5 list shown in the app."""
    first = app.result.value.split("</ol>")[0]
    return [(html.unescape(n), float(p)) for n, p in re.findall(r'<li data-class="([^"]*)" data-p="([0-9.]+)"', first)]


@pytest.fixture(scope="module")
def qnet():
    return template_network()


@pytest.fixture
def app(qnet):
    return widgets.classify_app(net=qnet, dense=template_network(quantized=False))


def test_template_network_is_quantized_and_exact(qnet):
    assert qnet.is_quantized and isinstance(qnet.params["conv1"], QConv2d) and isinstance(qnet.params["fc1"], QLinear)
    dense = template_network(quantized=False)
    x = datasets.to_input(templates() * 255)
    np.testing.assert_allclose(qnet.forward(x), dense.forward(x), atol=1e-4)
    assert list(qnet.forward(x).argmax(1)) == [0, 1, 2, 3]


@pytest.mark.parametrize("kind", CLASSES)
def test_camera_frame_is_classified(app, kind):
    """Send the camera's custom message with a JPEG buffer; the app shows the right class first."""
    assert app.camera is not None and app.camera.frames == 0
    app.camera._handle_custom_msg({"type": "frame", "width": 640, "height": 480, "mime": "image/jpeg"},
                                  [memoryview(jpeg(shape_photo(kind)))])
    assert app.camera.frames == 1
    top = shown_top5(app)
    assert len(top) == 4  # four classes: the "top-5" holds them all
    assert top[0][0] == kind, top
    assert abs(sum(p for _, p in top) - 1) < 1e-3
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
    assert "qcnn-error" not in app.message.value
    assert 'data-source="camera"' in app.timing.value and "Q-CNN:" in app.timing.value and "dense CNN:" in app.timing.value
    # the dense network's list is shown beside it, with the same answer
    dense_first = re.findall(r'<li data-class="([^"]*)"', app.result.value.split("</ol>")[1])[0]
    assert dense_first == kind
    # the picture shown is the network's 28x28 input, upscaled
    shown = Image.open(io.BytesIO(app.picture.value))
    assert shown.size[0] == shown.size[1] and shown.size[0] % 28 == 0


def test_message_of_another_type_is_ignored(app):
    app.camera._handle_custom_msg({"type": "something else"}, [memoryview(jpeg(shape_photo("disc")))])
    assert app.camera.frames == 0 and "qcnn-top5" not in app.result.value


def test_upload_is_classified(app):
    data = jpeg(shape_photo("wide bar", seed=3))
    # the state update the front end sends: the file's bytes arrive as a binary buffer
    app.upload.set_state({"value": [{"name": "bar.jpg", "type": "image/jpeg", "size": len(data),
                                     "content": memoryview(data), "last_modified": 1_700_000_000_000}]})
    assert shown_top5(app)[0][0] == "wide bar"
    assert "upload bar.jpg" in app.timing.value
    empty = {"name": "empty.png", "type": "image/png", "size": 0, "content": memoryview(b""), "last_modified": 0}
    app.upload.set_state({"value": [empty]})
    assert "qcnn-error" in app.message.value and "empty" in app.message.value


def _png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header for a width x height grey image, with a single zero row of data."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1))) + chunk(b"IEND", b"")


def _bad_files() -> dict[str, bytes]:
    good = jpeg(shape_photo("square"))
    return {"empty": b"", "text": b"not an image at all\n", "truncated": good[: len(good) // 3],
            "huge": _png_claiming(20000, 20000)}


@pytest.mark.parametrize("what, message", [
    ("empty", "empty"), ("text", "not an image"), ("truncated", "truncated or corrupt"), ("huge", "image too large"),
])
def test_bad_input_is_answered_in_the_widget(app, what, message):
    app.classify_bytes(jpeg(shape_photo("disc")), "camera")
    assert "qcnn-top5" in app.result.value
    data = _bad_files()[what]
    app.camera._handle_custom_msg({"type": "frame"}, [memoryview(data)])  # must not raise
    assert "qcnn-error" in app.message.value and message in app.message.value
    assert "qcnn-top5" not in app.result.value  # the old answer is not left standing
    assert app.timing.value == ""


def test_odd_image_modes_are_classified(app):
    base = shape_photo("tall bar")
    for im, fmt in [(base.convert("RGBA"), "PNG"), (base.convert("P"), "PNG"), (base.convert("L"), "PNG"),
                    (base.convert("CMYK"), "JPEG"), (Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 200), "PNG")]:
        buf = io.BytesIO()
        im.save(buf, format=fmt)
        app.classify_bytes(buf.getvalue(), "upload")
        assert shown_top5(app)[0][0] == "tall bar", im.mode
    tiny = io.BytesIO()
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tiny, format="PNG")
    assert app.classify_bytes(tiny.getvalue(), "upload") is not None
    assert "1x1" in app.message.value and "qcnn-top5" in app.result.value


def test_camera_unavailable_is_said_once_and_points_to_the_upload(app):
    # the camera widget's status line says it (camera.js), with the reason; the app adds no second message
    app.camera.status = "unavailable: camera permission was refused"
    assert "unavailable" not in app.message.value.lower() and "no camera" not in app.message.value.lower()
    js = (REPO / "qcnn_lite" / "apps" / "camera.js").read_text()
    assert js.count("Camera unavailable") == 1 and "Use the file upload instead" in js


def test_no_input_picture_before_the_first_photo(app):
    import ipywidgets as W

    box = next(c for c in app.children if isinstance(c, W.HBox) and app.picture in getattr(c.children[0], "children", ()))
    assert box.children[0].layout.display == "none"


def test_timing_is_a_median_of_warm_runs_and_a_uniform_photo_is_flagged(app):
    grey = io.BytesIO()
    Image.new("RGB", (320, 240), (128, 128, 128)).save(grey, format="JPEG")
    res = app.classify_bytes(grey.getvalue(), "camera")
    assert res is not None and res.runs == demo.TIMING_RUNS > 1
    assert f"median of {demo.TIMING_RUNS} warm runs" in app.timing.value
    assert "qcnn-far" in app.message.value and "nearly uniform" in app.message.value
    assert app.picture.layout is not None and app.children[-1].children[0].layout.display != "none"


def test_far_from_training_notes():
    flat = np.zeros((28, 28), np.uint8)
    assert "nearly uniform" in demo.far_from_training(flat, np.full(10, 0.1))[0]
    varied = (np.arange(784).reshape(28, 28) % 255).astype(np.uint8)
    assert demo.far_from_training(varied, np.eye(10)[3]) == []
    assert "Unsure" in demo.far_from_training(varied, np.full(10, 0.1))[0]


def test_real_photo_sample_goes_through(qnet):
    photos = sorted((REPO / "data" / "samples").glob("*.jpg"))
    if not photos:
        pytest.skip("no photo in data/samples")
    res = demo.classify(qnet, photos[0].read_bytes())
    assert res.picture.shape == (28, 28) and res.picture.max() > 200
    assert res.label in CLASSES and abs(res.probs.sum() - 1) < 1e-4


def test_load_models_quantizes_a_dense_file(tmp_path, monkeypatch):
    from qcnn_lite.io import modelfile

    dense = template_network(quantized=False)
    path = modelfile.save(dense, tmp_path / "templates.qcnn")
    net, dense_back, notes = demo.load_models(path, cache=False)
    assert net.is_quantized and dense_back is not None and not dense_back.is_quantized
    assert any("dense network" in n for n in notes)
    res = demo.classify(net, jpeg(shape_photo("disc")), dense_back)
    assert res.label == "disc" and res.dense_top[0][0] == "disc"


def test_default_model_search(tmp_path, monkeypatch):
    from qcnn_lite.io import modelfile

    monkeypatch.setenv("QCNN_MODELS", str(tmp_path))
    q = template_network()
    modelfile.save(q, tmp_path / f"{demo.DEFAULT_ARCH}-q.qcnn")
    qpath, _ = demo.default_model_paths()
    assert qpath == tmp_path / f"{demo.DEFAULT_ARCH}-q.qcnn"
    net, _, notes = demo.load_models()
    assert net.is_quantized and net.meta["classes"] == CLASSES and notes == []


def test_command_line(tmp_path, capsys):
    from qcnn_lite.io import modelfile

    model = modelfile.save(template_network(), tmp_path / "templates-q.qcnn")
    good, bad = tmp_path / "disc.jpg", tmp_path / "notes.txt"
    good.write_bytes(jpeg(shape_photo("disc")))
    bad.write_text("not a photo")
    assert cli_main(["classify", str(good), "--model", str(model), "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{good}: disc ") and out.count("%") == 2
    assert cli_main(["classify", str(good), str(bad), "--model", str(model)]) == 2
    cap = capsys.readouterr()  # answers on stdout, a photo's error on stderr
    assert f"{bad}: error: this file is not an image" in cap.err and "disc" in cap.out


def test_dense_default_is_quantized_once_and_cached_by_hash(tmp_path, monkeypatch):
    from qcnn_lite.io import modelfile

    monkeypatch.setattr(paths, "project_root", lambda: tmp_path)  # cache under tmp_path/results/cache/models
    monkeypatch.setenv("QCNN_MODELS", str(tmp_path / "models"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    dense_file = modelfile.save(template_network(quantized=False), tmp_path / "models" / f"{demo.DEFAULT_ARCH}.qcnn")
    net, dense, notes = demo.load_models()
    assert net.is_quantized and any("on first use" in n for n in notes)
    cached = list((tmp_path / "results" / "cache" / "models").glob("*.qcnn"))
    assert len(cached) == 1 and cached[0].name.startswith(f"{demo.DEFAULT_ARCH}-q-")
    net2, _, notes2 = demo.load_models()
    assert notes2 == []  # loaded from the cache
    photo = jpeg(shape_photo("square"))
    np.testing.assert_array_equal(demo.classify(net, photo).probs, demo.classify(net2, photo).probs)
    # a retrained dense model gets its own cache entry; the old one is left alone
    other = template_network(quantized=False)
    other.params["fc1"] = Linear(other.params["fc1"].weight * 2, other.params["fc1"].bias * 2)
    modelfile.save(other, dense_file, overwrite=True)
    _, _, notes3 = demo.load_models()
    assert any("on first use" in n for n in notes3)
    assert len(list((tmp_path / "results" / "cache" / "models").glob("*.qcnn"))) == 2


def test_quantize_file_and_stale_detection(tmp_path, monkeypatch):
    from qcnn_lite.io import modelfile

    try:
        datasets.find_fashion_mnist()
    except datasets.DataError as e:
        pytest.skip(f"error correction needs Fashion-MNIST: {e}")
    monkeypatch.setattr(paths, "project_root", lambda: tmp_path)
    monkeypatch.setenv("QCNN_MODELS", str(tmp_path / "models"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    dense_file = modelfile.save(template_network(quantized=False), tmp_path / "models" / f"{demo.DEFAULT_ARCH}.qcnn")
    assert cli_main(["classify", "--quantize", str(dense_file)]) == 0
    q_file = tmp_path / "models" / f"{demo.DEFAULT_ARCH}-q.qcnn"
    made = modelfile.load(q_file)
    assert made.meta["quantization"]["error_correction"] and made.meta["quantized_from"]["file"] == dense_file.name
    assert cli_main(["classify", "--quantize", str(dense_file)]) == 2  # never replaced without --force
    net, _, notes = demo.load_models()
    assert notes == [] and net.meta["quantized_from"] == made.meta["quantized_from"]
    assert demo.classify(net, jpeg(shape_photo("wide bar"))).label == "wide bar"
    # the dense model is retrained: the old quantized file is not used
    other = template_network(quantized=False)
    other.params["fc1"] = Linear(other.params["fc1"].weight * 2, other.params["fc1"].bias * 2)
    modelfile.save(other, dense_file, overwrite=True)
    net2, _, notes2 = demo.load_models()
    assert any("was made from another" in n for n in notes2) and any("on first use" in n for n in notes2)
    assert net2.meta["quantized_from"]["sha256"] != made.meta["quantized_from"]["sha256"]


def test_command_line_json(tmp_path, capsys):
    import json

    from qcnn_lite.io import modelfile

    model = modelfile.save(template_network(), tmp_path / "templates-q.qcnn")
    dense = modelfile.save(template_network(quantized=False), tmp_path / "templates.qcnn")
    good = tmp_path / "disc.jpg"
    good.write_bytes(jpeg(shape_photo("disc")))
    from qcnn_lite.cli.main import main

    assert main(["classify", str(good), "--model", str(model), "--dense", str(dense), "--json", "--repeat", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    (rec,) = out["results"]
    assert rec["top"][0]["class"] == "disc" and rec["repeat"] == 3
    assert rec["qcnn_ms"] > 0 and rec["dense_ms"] > 0 and rec["speedup_vs_dense"] > 0
    assert set(rec["layer_paths"]) == set(modelfile.load(model).params)
    assert main(["classify", str(good), "--model", str(model), "--repeat", "0"]) == 2
