"""Turn a photo (file bytes) into the input array a network expects.

Two pipelines:

* ImageNet-style networks (input (3, H, W), H about 224/227): the paper's
  Caffe pipeline, :func:`qcnn_lite.io.datasets.imagenet_preprocess` -- shorter side
  to 256, centre crop, BGR, mean pixel subtracted.
* Fashion-MNIST-style networks (input (1, 28, 28)): make a real photo look
  like the training data -- grayscale, a dark background (inverted when the
  photo's border is light), the object's bounding box cropped, centred and
  padded square, resized so the object fills the frame, then the network's
  normalisation from ``Network.meta`` (:func:`qcnn_lite.io.datasets.to_input`, the
  transform used in training).

Every way a file can be unusable (empty, not an image, truncated, far too
large) raises :class:`ImageError`, a ``ValueError`` whose message can be shown
to a user as it is. Pillow is imported lazily: the numpy core does not need it.
"""
from __future__ import annotations

import io
import os
import re
import stat
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ImageError",
    "Prepared",
    "MAX_IMAGE_PIXELS",
    "MAX_FILE_BYTES",
    "load_image",
    "to_gray",
    "to_rgb",
    "fashion_image",
    "prepare",
]

#: Largest image accepted, in pixels (a 48-megapixel phone photo fits; a decompression bomb does not).
MAX_IMAGE_PIXELS = 64_000_000
#: Largest image file read: an uncompressed image of MAX_IMAGE_PIXELS RGBA pixels, with room for metadata.
MAX_FILE_BYTES = 4 * MAX_IMAGE_PIXELS + 2**20
#: Longest side images are reduced to before the Fashion-MNIST pipeline: 28x28 needs no more.
WORK_SIDE = 512


class ImageError(ValueError):
    """A file that cannot be classified; the message says why, for the user."""


@dataclass
class Prepared:
    """A network input made from a photo.

    x : (1, C, H, W) float32, what the network sees
    display : (H, W) or (H, W, 3) uint8, the same input as a viewable picture
    notes : remarks for the user (tiny image, ...)
    """

    x: np.ndarray
    display: np.ndarray
    notes: list[str] = field(default_factory=list)


def _pil():
    try:
        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError:  # pragma: no cover - pillow is in the notebooks extra
        raise ImportError("reading photos needs Pillow: pip install 'qcnn-lite[notebooks]'") from None
    return Image, ImageOps, UnidentifiedImageError


def load_image(data: bytes | bytearray | memoryview | str | os.PathLike, draft_side: int | None = None) -> Any:
    """Decode an image file (bytes or a path) into a PIL image, EXIF orientation applied.

    ``draft_side`` lets JPEG decoding scale down (by 1/2 .. 1/8) while keeping
    at least that many pixels on each side: fast for camera photos.
    Raises :class:`ImageError` for an empty, unreadable, truncated or oversized file.
    """
    Image, ImageOps, UnidentifiedImageError = _pil()
    if isinstance(data, (str, os.PathLike)):
        try:
            _check_file(data)
            with open(data, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ImageError(f"cannot read {os.fspath(data)!r}: {e.strerror or e}") from None
    data = bytes(data)
    if not data:
        raise ImageError("the file is empty: choose or capture an image")
    with warnings.catch_warnings():
        # Pillow warns above its own limit and raises above twice it; we refuse above ours.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
            w, h = im.size  # only the header has been read so far
            if w * h > MAX_IMAGE_PIXELS:
                raise ImageError(_too_large(w, h))
            if draft_side and im.format == "JPEG":
                im.draft(im.mode, (draft_side, draft_side))
            im.load()
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:  # raised by Image.open itself
            m = re.search(r"\((\d+) pixels\)", str(e))  # Pillow's message quotes its own limit, not ours
            raise ImageError(_too_large_pixels(int(m.group(1))) if m else _too_large_pixels(None)) from None
        except UnidentifiedImageError:
            raise ImageError("this file is not an image that Pillow can read (JPEG, PNG, GIF, BMP, TIFF, WebP, ...)") from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated data, bad chunks, broken headers
            raise ImageError(f"the image is truncated or corrupt ({e})") from None
    if im.size[0] < 1 or im.size[1] < 1:
        raise ImageError(f"the image has no pixels ({im.size[0]}x{im.size[1]})")
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # a malformed EXIF block should not lose an otherwise good photo
        pass
    return im


def _too_large(w: int, h: int) -> str:
    return f"image too large: {w}x{h} pixels is above the {MAX_IMAGE_PIXELS:,} this demo accepts; resize it first"


def _too_large_pixels(n: int | None) -> str:
    size = f"{n:,} pixels is" if n else "it is"
    return f"image too large: {size} above the {MAX_IMAGE_PIXELS:,} pixels this demo accepts; resize it first"


def _check_file(path: str | os.PathLike) -> None:
    """Before a photo is opened: a regular file of at most MAX_FILE_BYTES (a FIFO would block, /dev/zero never ends)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise ImageError(f"cannot read {os.fspath(path)!r}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"{os.fspath(path)!r} is not a regular file (a folder, FIFO or device): choose an image file")
    if st.st_size > MAX_FILE_BYTES:
        raise ImageError(f"{os.fspath(path)!r} is {st.st_size:,} bytes, more than the {MAX_FILE_BYTES:,} of any "
                         "image this demo accepts")


def _to_8bit(im: Any) -> Any:
    """Modes with more than 8 bits (I;16, I, F) scaled to 8-bit L by their own range."""
    Image, _, _ = _pil()
    a = np.asarray(im, dtype=np.float64)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def _flatten_alpha(im: Any, background: tuple[int, int, int]) -> Any:
    """Composite a transparent image on a plain background (product photos are often cut out)."""
    Image, _, _ = _pil()
    im = im.convert("RGBA")
    bg = Image.new("RGBA", im.size, background + (255,))
    return Image.alpha_composite(bg, im).convert("RGB")


def to_rgb(im: Any, background: tuple[int, int, int] = (255, 255, 255)) -> Any:
    """Any PIL mode (RGBA, P, LA, CMYK, I;16, 1, ...) -> 8-bit RGB."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        im = _to_8bit(im)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        return _flatten_alpha(im, background)
    return im if im.mode == "RGB" else im.convert("RGB")


def to_gray(im: Any) -> np.ndarray:
    """Any PIL mode -> (H, W) float32 luminance in [0, 1]."""
    if im.mode not in ("L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        im = to_rgb(im).convert("L")
    elif im.mode != "L":
        im = _to_8bit(im)
    return np.asarray(im, dtype=np.float32) / 255.0


def _border(g: np.ndarray, frac: float = 0.05) -> np.ndarray:
    """The pixels of a band around the image, ``frac`` of each side wide (at least 1)."""
    H, W = g.shape
    bh, bw = max(1, int(round(H * frac))), max(1, int(round(W * frac)))
    mask = np.zeros_like(g, dtype=bool)
    mask[:bh], mask[-bh:], mask[:, :bw], mask[:, -bw:] = True, True, True, True
    return g[mask]


def fashion_image(im: Any, size: int = 28, threshold: float = 0.1) -> np.ndarray:
    """A photo as a Fashion-MNIST-style picture: (size, size) float32 in [0, 1].

    Grayscale; inverted when the border is lighter than mid-grey, so the
    background is dark and the object light; the background level (median of
    the border) subtracted; cropped to the bounding box of the pixels above
    ``threshold`` of the brightest; padded square around its centre and
    resized so the object's longer side fills the frame, as Fashion-MNIST's
    product pictures do.
    """
    Image, _, _ = _pil()
    if max(im.size) > WORK_SIDE:  # 28x28 is the goal: reduce first, with antialiasing
        im = im.copy()
        im.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
    g = to_gray(im)
    if float(np.median(_border(g))) > 0.5:
        g = 1.0 - g
    g = np.clip(g - float(np.median(_border(g))), 0.0, None)
    peak = float(g.max())
    if peak <= 1e-3:  # a flat picture: nothing stands out from the background
        return np.zeros((size, size), np.float32)
    g /= peak
    rows, cols = np.nonzero(g > threshold)
    g = g[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = g.shape
    side = max(h, w)
    sq = np.zeros((side, side), np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    sq[top : top + h, left : left + w] = g
    out = Image.fromarray(sq, "F").resize((size, size), Image.Resampling.LANCZOS if side > size else Image.Resampling.BILINEAR)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def prepare(data: bytes | str | os.PathLike | Any, input_shape: tuple[int, int, int], meta: dict | None = None) -> Prepared:
    """Photo (file bytes, a path or a PIL image) -> the input of a network with ``input_shape``.

    (1, n, n) inputs take the Fashion-MNIST pipeline with the model's own
    normalisation (``meta["input_mean"]``/``["input_std"]``, else the training
    set's); (3, n, n) inputs the ImageNet one, with ``meta["preprocess"]`` (a
    :data:`qcnn_lite.io.datasets.CAFFE`-style preset) or Caffe's. Returns a
    :class:`Prepared` with x (1, C, n, n).
    """
    from qcnn_lite.io import datasets  # the one place that defines normalisations

    meta = meta or {}
    C, H, W = (int(v) for v in input_shape)
    if C not in (1, 3) or H != W:
        raise ValueError(f"no photo pipeline for input shape {tuple(input_shape)}: expected (1, n, n) or (3, n, n)")
    im = data if hasattr(data, "mode") and hasattr(data, "size") else load_image(data, draft_side=max(H, 256))
    notes = []
    if min(im.size) < 8:
        notes.append(f"the image is only {im.size[0]}x{im.size[1]} pixels: the answer means little")
    if C == 1:
        pic = np.rint(fashion_image(im, H) * 255.0)  # the 0..255 scale the training images had
        x = datasets.to_input(pic, *datasets.normalisation(meta))
        return Prepared(x, pic.astype(np.uint8), notes)
    preset = meta.get("preprocess") if isinstance(meta.get("preprocess"), dict) else datasets.CAFFE
    resize = 256 if H <= 256 else H
    x = datasets.imagenet_preprocess(to_rgb(im), crop=H, resize=resize, preset=preset)
    # undo the normalisation for display: what the network sees, as RGB
    shown = x.transpose(1, 2, 0) * np.asarray(preset["std"], np.float32) + np.asarray(preset["mean"], np.float32)
    if preset.get("order", "RGB") == "BGR":
        shown = shown[..., ::-1]
    return Prepared(x[None], np.clip(np.rint(shown), 0, 255).astype(np.uint8), notes)
