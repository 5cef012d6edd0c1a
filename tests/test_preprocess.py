"""Photo pre-processing: the Fashion-MNIST pipeline on real-photo-like inputs, and every bad input."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest

Image = pytest.importorskip("PIL.Image")
from PIL import ImageDraw, ImageOps  # noqa: E402

from qcnn_lite.io import datasets  # noqa: E402
from qcnn_lite.io.preprocess import MAX_IMAGE_PIXELS, ImageError, fashion_image, load_image, prepare  # noqa: E402


def photo(size=(640, 480), box=(280, 60, 360, 420), bg=(228, 225, 220), fg=(40, 35, 50), seed=0):
    """A product-photo-like RGB image: a dark object (rectangle) on a light, slightly noisy background."""
    rng = np.random.default_rng(seed)
    a = np.empty((size[1], size[0], 3), np.float32)
    a[:] = bg
    x0, y0, x1, y1 = box
    a[y0:y1, x0:x1] = fg
    a += rng.normal(0, 4, a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def encode(im, fmt="JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def bbox(pic: np.ndarray, level: float = 0.5) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(pic > level * pic.max())
    return rows.min(), rows.max(), cols.min(), cols.max()


# --------------------------------------------------------------------------- the Fashion-MNIST pipeline
def test_dark_object_on_light_background_becomes_light_on_dark_and_fills_the_frame():
    pic = fashion_image(photo())  # the bar is 80 x 360 pixels
    assert pic.shape == (28, 28) and pic.dtype == np.float32
    assert pic[:, :5].max() < 0.05 and pic[:, -5:].max() < 0.05  # background dark
    r0, r1, c0, c1 = bbox(pic)
    assert (r0, r1) == (0, 27)  # the longer side fills the frame
    width = c1 - c0 + 1
    assert abs(width - 28 * 80 / 360) <= 2  # aspect ratio kept
    assert abs((c0 + c1) / 2 - 13.5) <= 1  # centred
    assert pic[5:23, 12:16].min() > 0.8


def test_position_scale_and_polarity_do_not_matter():
    ref = fashion_image(photo())
    moved = fashion_image(photo(size=(800, 600), box=(40, 100, 140, 550)))  # other place, other size
    inverted = fashion_image(ImageOps.invert(photo()))  # light object on a dark background
    assert np.abs(moved - ref).mean() < 0.03
    assert np.abs(inverted - ref).mean() < 0.03


def test_a_fashion_mnist_image_photographed_on_white_is_recovered():
    """An upscaled, inverted Fashion-MNIST picture pasted off-centre on a white page comes back as itself."""
    try:
        images, _ = datasets.load_fashion_mnist("test")
    except datasets.DataError as e:
        pytest.skip(f"Fashion-MNIST not available: {e}")
    corr = []
    for i in range(20):
        orig = images[i].astype(np.float32) / 255
        big = Image.fromarray(255 - images[i]).resize((224, 224), Image.Resampling.BICUBIC)
        page = Image.new("L", (500, 400), 255)
        page.paste(big, (230 - 7 * i, 120 + 3 * i))
        got = fashion_image(page)
        corr.append(np.corrcoef(got.ravel(), orig.ravel())[0, 1])
    # resampling up and down blurs a little; a misplaced or mis-scaled object would score far lower
    assert np.mean(corr) > 0.9 and min(corr) > 0.75, corr


def test_prepare_normalises_as_training_did():
    meta = {"input_mean": 0.25, "input_std": 0.5}
    p = prepare(encode(photo()), (1, 28, 28), meta)
    assert p.x.shape == (1, 1, 28, 28) and p.x.dtype == np.float32
    np.testing.assert_allclose(p.x[0, 0], (p.display / 255.0 - 0.25) / 0.5, atol=1e-5)
    # no meta: the Fashion-MNIST training-set mean/std
    q = prepare(encode(photo()), (1, 28, 28))
    np.testing.assert_allclose(q.x[0, 0], (q.display / 255.0 - datasets.MEAN) / datasets.STD, atol=1e-5)


def test_imagenet_pipeline_shape_and_mean_pixel():
    red = Image.new("RGB", (400, 300), (255, 0, 0))
    p = prepare(encode(red, "PNG"), (3, 227, 227))
    assert p.x.shape == (1, 3, 227, 227) and p.display.shape == (227, 227, 3)
    b, g, r = datasets.CAFFE["mean"]  # Caffe: BGR order, mean pixel subtracted
    np.testing.assert_allclose(p.x[0, :, 100, 100], [0 - b, 0 - g, 255 - r], atol=1e-4)
    assert tuple(p.display[5, 5]) == (255, 0, 0)


def test_prepare_rejects_shapes_without_a_pipeline():
    with pytest.raises(ValueError, match="no photo pipeline"):
        prepare(encode(photo()), (2, 28, 28))


# --------------------------------------------------------------------------- image modes and odd files
def _modes() -> dict[str, bytes]:
    rgb = photo()
    gray = rgb.convert("L")
    rgba = Image.new("RGBA", rgb.size, (0, 0, 0, 0))  # cut-out product photo: transparent background
    ImageDraw.Draw(rgba).rectangle((280, 60, 359, 419), fill=(40, 35, 50, 255))
    i16 = Image.fromarray((np.asarray(gray, np.uint16) * 257).astype(np.uint16))
    assert i16.mode.startswith("I;16")
    return {
        "RGB": encode(rgb),
        "L": encode(gray),
        "RGBA": encode(rgba, "PNG"),
        "P": encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG"),
        "I;16": encode(i16, "PNG"),
        "CMYK": encode(rgb.convert("CMYK"), "JPEG"),
        "LA": encode(gray.convert("LA"), "PNG"),
        "1": encode(gray.point(lambda v: 255 if v > 128 else 0).convert("1"), "PNG"),
    }


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK", "LA", "1"])
def test_every_image_mode_gives_the_same_picture(mode):
    files = _modes()
    assert Image.open(io.BytesIO(files[mode])).mode.startswith(mode.split(";")[0])
    ref = prepare(files["RGB"], (1, 28, 28)).display.astype(np.float32)
    got = prepare(files[mode], (1, 28, 28))
    assert np.isfinite(got.x).all()
    assert np.abs(got.display.astype(np.float32) - ref).mean() < 12, mode  # out of 255
    # and the ImageNet pipeline takes it too
    assert prepare(files[mode], (3, 227, 227)).x.shape == (1, 3, 227, 227)


def test_exif_rotation_is_applied():
    upright = photo()  # a vertical bar
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the camera sensor wrote: a horizontal bar
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    data = encode(stored, exif=exif.tobytes())
    im = load_image(data)
    assert im.size == upright.size
    assert np.abs(np.asarray(im, np.float32) - np.asarray(upright, np.float32)).mean() < 6
    ref = prepare(encode(upright), (1, 28, 28)).display
    got = prepare(data, (1, 28, 28)).display
    assert np.abs(got.astype(float) - ref).mean() < 6
    r0, r1, c0, c1 = bbox(got.astype(np.float32))
    assert r1 - r0 > 2 * (c1 - c0)  # tall, as displayed, not wide as stored


def test_one_pixel_image_is_classified_with_a_note():
    p = prepare(encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"), (1, 28, 28))
    assert p.x.shape == (1, 1, 28, 28) and np.isfinite(p.x).all()
    assert any("1x1" in n for n in p.notes)
    assert prepare(encode(Image.new("L", (1, 1), 3), "PNG"), (3, 227, 227)).x.shape == (1, 3, 227, 227)


def _png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header for a width x height grey image whose pixel data is a single zero row."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1))) + chunk(b"IEND", b"")


def test_huge_image_is_refused_before_decoding():
    data = _png_claiming(20000, 20000)
    assert len(data) < 1000 and struct.unpack(">II", data[16:24]) == (20000, 20000)
    with pytest.raises(ImageError, match="image too large") as e:
        prepare(data, (1, 28, 28))
    assert "400000000" in str(e.value).replace(",", "")
    # just above our limit, below Pillow's own bomb error: still refused by our check
    side = int(MAX_IMAGE_PIXELS ** 0.5) + 1
    with pytest.raises(ImageError, match="image too large"):
        load_image(_png_claiming(side, side))


def test_truncated_jpeg():
    data = encode(photo())
    with pytest.raises(ImageError, match="truncated or corrupt"):
        prepare(data[: len(data) // 2], (1, 28, 28))


@pytest.mark.parametrize("data, match", [
    (b"", "empty"),
    (b"this is a text file, not a picture\n" * 10, "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "not an image|truncated or corrupt"),
])
def test_bad_files(data, match):
    with pytest.raises(ImageError, match=match):
        prepare(data, (1, 28, 28))


def test_missing_path(tmp_path):
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "nope.jpg")
    p = tmp_path / "photo.jpg"
    p.write_bytes(encode(photo()))
    assert load_image(p).size == (640, 480)


def test_image_error_is_a_value_error():
    assert issubclass(ImageError, ValueError)
