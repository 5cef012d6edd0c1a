"""Datasets: Fashion-MNIST (parsed from its IDX files, hash-checked) and ILSVRC-12 val.

Fashion-MNIST is searched for in ``$QCNN_DATA``, then ``<repo>/data/fashion-mnist``,
then ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
Each of the four files may be gzipped (``*.gz``) or not. The SHA-256 is checked on
the *decompressed* IDX bytes: Debian re-gzipped the official files without their
file names, so the ``.gz`` wrappers differ from Zalando's, while the IDX payloads are
byte-identical (their MD5s equal the published raw-file MD5s, see ``RAW_MD5``).

:func:`to_input` is the one normalisation used by training, evaluation and demos;
the training mean/std travel with each model in ``Network.meta``.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from qcnn_lite.io.paths import project_root

__all__ = [
    "DataError", "CLASSES", "FILES", "MEAN", "STD", "find_fashion_mnist", "env_data_note", "load_fashion_mnist",
    "read_idx", "to_input", "normalisation", "search_dirs",
    "CAFFE", "TORCHVISION", "imagenet_val", "imagenet_preprocess", "fetch", "verify",
]

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# split -> (images file, labels file), without the .gz suffix
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# SHA-256 of the decompressed IDX files (computed from the Debian package, whose
# payload MD5s equal the official RAW_MD5 below).
SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
# Published MD5s: of the raw IDX files, and of Zalando's .gz downloads (used by scripts/fetch_data.py).
RAW_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
GZ_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

# Pixel mean and std of the 60,000 training images, on the [0, 1] scale
# (tests/test_data.py recomputes them from the data).
MEAN = 0.2860405969887955
STD = 0.35302424451492254


class DataError(ValueError):
    """A dataset file is missing, truncated, corrupt or not the official one."""


# -- Fashion-MNIST ---------------------------------------------------------------
def search_dirs() -> list[Path]:
    """Directories searched for Fashion-MNIST, in order."""
    dirs = []
    env = os.environ.get("QCNN_DATA")
    if env:
        dirs += [Path(env), Path(env) / "fashion-mnist"]
    dirs += [project_root() / "data" / "fashion-mnist", Path.cwd() / "data" / "fashion-mnist", SYSTEM_DIR]
    return list(dict.fromkeys(dirs))  # in order, each once


def _file_in(d: Path, name: str) -> Path | None:
    for cand in (d / (name + ".gz"), d / name):
        if cand.is_file():
            return cand
    return None


def env_data_note() -> str | None:
    """When ``$QCNN_DATA`` is set but does not hold Fashion-MNIST: what is missing there and which
    folder is used instead (None when it holds the data, is unset, or no folder does)."""
    env = os.environ.get("QCNN_DATA")
    if not env:
        return None
    names = [n for pair in FILES.values() for n in pair]
    own = [Path(env), Path(env) / "fashion-mnist"]
    if any(all(_file_in(d, n) for n in names) for d in own):
        return None
    try:
        used = find_fashion_mnist()
    except DataError:
        return None  # the DataError itself lists every folder looked in
    if not Path(env).is_dir():
        why = "is not a folder"
    else:
        missing = [n for n in names if not any(_file_in(d, n) for d in own)]
        why = f"lacks {', '.join(missing)}" if missing else "does not hold all four files in one folder"
    return f"QCNN_DATA={env} {why}; using the Fashion-MNIST files in {used}"


def find_fashion_mnist() -> Path:
    """The first search directory that holds all four Fashion-MNIST files."""
    names = [n for pair in FILES.values() for n in pair]
    for d in search_dirs():
        if all(_file_in(d, n) for n in names):
            return d
    where = "\n  ".join(str(d) for d in search_dirs())
    raise DataError(
        "Fashion-MNIST not found. Looked for the four IDX files (.gz or raw) in:\n  " + where +
        "\nRun `make data` (downloads them or installs the Debian package dataset-fashion-mnist), "
        "or set QCNN_DATA to a folder holding them."
    )


def read_idx(path: str | os.PathLike, expect_sha256: str | None = None) -> np.ndarray:
    """Parse an IDX file (gzipped or raw) of unsigned bytes into a uint8 array of its shape.

    Raises DataError naming the file if it is truncated, not IDX/ubyte, or its
    decompressed SHA-256 is not ``expect_sha256``.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read or decompress ({e}); the file is truncated or corrupt") from None
    if len(raw) < 4:
        raise DataError(f"{path}: only {len(raw)} bytes, not an IDX file")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or not 1 <= ndim <= 4:
        raise DataError(f"{path}: bad IDX magic {raw[:4].hex()} (want 0000080N: unsigned bytes, N dimensions)")
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:head])
    size = int(np.prod(shape))
    if len(raw) != head + size:
        raise DataError(f"{path}: IDX header says shape {shape} ({size} bytes) but the file has {len(raw) - head}; truncated or corrupt")
    if expect_sha256 is not None:
        got = hashlib.sha256(raw).hexdigest()
        if got != expect_sha256:
            raise DataError(f"{path}: SHA-256 {got} of the decompressed data is not the official {expect_sha256}")
    return np.frombuffer(raw, np.uint8, size, head).reshape(shape)


def verify(d: Path) -> str | None:
    """None if both splits in d load and pass their hash checks, else the problem."""
    try:
        for split in FILES:
            load_fashion_mnist(split, d)
    except DataError as e:
        return str(e)
    return None


def _download(name: str, dest: Path, timeout: float) -> None:
    """Download URL/name.gz into dest, checking Zalando's MD5 and our payload SHA-256 first."""
    import urllib.request

    with urllib.request.urlopen(URL + name + ".gz", timeout=timeout) as r:
        blob = r.read()
    if hashlib.md5(blob, usedforsecurity=False).hexdigest() != GZ_MD5[name + ".gz"]:
        raise DataError(f"{URL}{name}.gz: MD5 differs from the official file")
    if hashlib.sha256(gzip.decompress(blob)).hexdigest() != SHA256[name]:
        raise DataError(f"{URL}{name}.gz: SHA-256 of the content differs from the official file")
    dest.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
    target = dest / (name + ".gz")
    try:
        os.link(tmp, target)  # never replaces a file that appeared meanwhile
    finally:
        os.unlink(tmp)


def fetch(dest: str | os.PathLike | None = None, timeout: float = 10.0, apt: bool = True) -> Path | None:
    """Make Fashion-MNIST available; returns its directory, or None after printing what to do.

    Order: already present (and verified) -> download the missing files from
    Zalando's server into ``dest`` (default ``<repo>/data/fashion-mnist``) ->
    as root with apt-get, install the Debian package ``dataset-fashion-mnist``.
    Existing files are never overwritten.
    """
    try:
        found = find_fashion_mnist()
    except DataError:
        found = None
    if found is not None:
        problem = verify(found)
        if problem is None:
            print(f"Fashion-MNIST: {found} (hashes verified)")
            return found
        print(f"Fashion-MNIST in {found} is damaged: {problem}\nRemove the bad file and run this again.", file=sys.stderr)
        return None
    dest = Path(dest) if dest is not None else project_root() / "data" / "fashion-mnist"
    names = [n for pair in FILES.values() for n in pair]
    try:
        for name in names:
            if _file_in(dest, name) is None:
                print(f"downloading {URL}{name}.gz ...")
                _download(name, dest, timeout)
        if verify(dest) is None:
            print(f"Fashion-MNIST: downloaded to {dest} (hashes verified)")
            return dest
    except (OSError, DataError) as e:
        print(f"download failed: {e}", file=sys.stderr)
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if apt and is_root and shutil.which("apt-get"):
        print("installing the Debian package dataset-fashion-mnist ...")
        cmd = ["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"]
        if subprocess.run(cmd).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"])
            subprocess.run(cmd)
        if all(_file_in(SYSTEM_DIR, n) for n in names) and verify(SYSTEM_DIR) is None:
            print(f"Fashion-MNIST: {SYSTEM_DIR} (hashes verified)")
            return SYSTEM_DIR
    print(
        "Fashion-MNIST is missing. Either\n"
        "  sudo apt-get install dataset-fashion-mnist        (Debian/Ubuntu; files go to /usr/share/datasets/fashion-mnist)\n"
        f"  or download the four files {', '.join(n + '.gz' for n in names)}\n"
        f"     from {URL} (or https://github.com/zalandoresearch/fashion-mnist) into {dest}\n"
        "  or set QCNN_DATA to a folder that holds them.",
        file=sys.stderr,
    )
    return None


_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def load_fashion_mnist(split: str = "train", directory: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST ``split`` ("train" or "test"): images uint8 (n, 28, 28), labels uint8 (n,).

    n is 60,000 (train) or 10,000 (test). Files are hash-checked; results are cached
    per file identity, and returned read-only.
    """
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    d = Path(directory) if directory is not None else find_fashion_mnist()
    paths = []
    for name in FILES[split]:
        p = _file_in(d, name)
        if p is None:
            raise DataError(f"{d / name}(.gz): missing")
        paths.append(p)
    key = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
    if key not in _CACHE:
        images = read_idx(paths[0], SHA256[FILES[split][0]])
        labels = read_idx(paths[1], SHA256[FILES[split][1]])
        if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (images.shape[0],):
            raise DataError(f"{paths[0]} / {paths[1]}: shapes {images.shape} and {labels.shape} do not fit Fashion-MNIST")
        _CACHE[key] = (images, labels)
    return _CACHE[key]


def normalisation(meta: Mapping[str, Any] | None = None) -> tuple[float, float]:
    """(mean, std) on the [0, 1] scale: from a model's ``meta`` when given, else the training-set values."""
    if meta and "input_mean" in meta:
        return float(meta["input_mean"]), float(meta["input_std"])
    return MEAN, STD


def to_input(images, mean: float = MEAN, std: float = STD) -> np.ndarray:
    """Grey images on the 0..255 scale, (n, 28, 28), (28, 28) or (n, 1, H, W) -> float32 (n, 1, H, W).

    Each pixel becomes (x / 255 - mean) / std: the same transform at training,
    evaluation and demo time. Pass a model's ``normalisation(net.meta)``.
    """
    x = np.asarray(images)
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"images must be numeric, got dtype {x.dtype}")
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x[:, None]
    elif x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"images must be (H, W), (n, H, W) or (n, 1, H, W), got shape {x.shape}")
    if not std > 0:
        raise ValueError(f"std must be positive, got {std}")
    return ((x.astype(np.float32) * np.float32(1 / 255) - np.float32(mean)) / np.float32(std)).astype(np.float32)


# -- ILSVRC-12 validation set ----------------------------------------------------
# Presets: channel order, per-channel mean and std on the 0..255 scale.
CAFFE = {"order": "BGR", "mean": (104.0, 117.0, 123.0), "std": (1.0, 1.0, 1.0)}  # BVLC models, Caffe mean pixel
TORCHVISION = {"order": "RGB", "mean": (123.675, 116.28, 103.53), "std": (58.395, 57.12, 57.375)}

_IMAGE_EXT = (".jpeg", ".jpg", ".png")


def imagenet_preprocess(img, crop: int = 224, resize: int = 256, preset: Mapping[str, Any] = CAFFE) -> np.ndarray:
    """One PIL image -> float32 (3, crop, crop): shorter side to ``resize``, centre crop, mean/std.

    This is the paper's test-time pipeline (one centre crop; 227 for AlexNet, 224 for
    CNN-S and VGG-16).
    """
    from PIL import Image  # lazily: Pillow is only needed for ImageNet

    if crop > resize:
        raise ValueError(f"crop {crop} is larger than the resized side {resize}")
    img = img.convert("RGB")
    w, h = img.size
    s = resize / min(w, h)
    nw, nh = max(resize, round(w * s)), max(resize, round(h * s))
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - crop) // 2, (nh - crop) // 2
    img = img.crop((left, top, left + crop, top + crop))
    x = np.asarray(img, dtype=np.float32)  # (crop, crop, 3) RGB
    if preset["order"] == "BGR":
        x = x[..., ::-1]
    x = (x - np.asarray(preset["mean"], np.float32)) / np.asarray(preset["std"], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def _imagenet_listing(root: Path, ground_truth: Path | None, wnids: Sequence[str] | None) -> list[tuple[Path, int]]:
    subdirs = sorted(d for d in root.iterdir() if d.is_dir())
    if subdirs and ground_truth is None:
        # class-folder layout: label = index of the folder in sorted (wnid) order, as Caffe and torchvision
        items = []
        for label, d in enumerate(subdirs):
            items += [(f, label) for f in sorted(d.iterdir()) if f.suffix.lower() in _IMAGE_EXT]
        return items
    files = sorted(f for f in root.iterdir() if f.is_file() and f.suffix.lower() in _IMAGE_EXT)
    if ground_truth is None:
        cands = [root / "val.txt", root / "ILSVRC2012_validation_ground_truth.txt"]
        ground_truth = next((c for c in cands if c.is_file()), None)
        if ground_truth is None:
            raise ValueError(f"{root}: flat layout needs a ground-truth file (Caffe val.txt or the devkit's "
                             "ILSVRC2012_validation_ground_truth.txt); pass ground_truth=")
    lines = [ln.split() for ln in Path(ground_truth).read_text().splitlines() if ln.strip()]
    if all(len(p) == 2 for p in lines):  # Caffe val.txt: "<file> <0-based label in sorted-wnid order>"
        labels = {name: int(lab) for name, lab in lines}
        missing = [f.name for f in files if f.name not in labels]
        if missing:
            raise ValueError(f"{ground_truth}: no label for {missing[0]} (and {len(missing) - 1} more)")
        return [(f, labels[f.name]) for f in files]
    if all(len(p) == 1 for p in lines):  # devkit: line i = 1-based ILSVRC2012_ID of the i-th val image
        ids = [int(p[0]) for p in lines]
        if len(ids) < len(files):
            raise ValueError(f"{ground_truth}: {len(ids)} labels for {len(files)} images")
        if wnids is not None:  # wnids[i] = wnid of ILSVRC2012_ID i+1 -> sorted-wnid order
            order = {w: i for i, w in enumerate(sorted(wnids))}
            ids = [order[wnids[i - 1]] + 1 for i in ids]
        # the i-th line belongs to ILSVRC2012_val_<i>.JPEG
        out = []
        for f in files:
            digits = "".join(ch for ch in f.stem.rsplit("_", 1)[-1] if ch.isdigit())
            if not digits or not 1 <= int(digits) <= len(ids):
                raise ValueError(f"{f}: cannot tell its index from the name (want ILSVRC2012_val_NNNNNNNN.JPEG)")
            out.append((f, ids[int(digits) - 1] - 1))
        return out
    raise ValueError(f"{ground_truth}: lines must be '<file> <label>' or '<label>'")


def imagenet_val(
    root: str | os.PathLike,
    crop: int = 224,
    resize: int = 256,
    preset: Mapping[str, Any] = CAFFE,
    limit: int | None = None,
    ground_truth: str | os.PathLike | None = None,
    wnids: Sequence[str] | None = None,
    batch_size: int = 32,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Batches (images float32 (b, 3, crop, crop), labels int64 (b,)) of ILSVRC-12 val.

    Layouts: ``root/<wnid>/*.JPEG`` (label = sorted folder index), or flat
    ``root/ILSVRC2012_val_*.JPEG`` with a ground-truth file: Caffe's ``val.txt``
    (``file label``, 0-based) or the devkit's one-label-per-line file (1-based
    ILSVRC2012 IDs; give ``wnids`` in ID order to map them to sorted-wnid order,
    else labels are ID-1). Images are read lazily, ``limit`` of them at most.
    """
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"ImageNet val folder {root} does not exist")
    items = _imagenet_listing(root, Path(ground_truth) if ground_truth else None, wnids)
    if not items:
        raise ValueError(f"{root}: no images found")
    items = items[:limit] if limit is not None else items
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        xs = []
        for f, _ in chunk:
            try:
                with Image.open(f) as im:
                    xs.append(imagenet_preprocess(im, crop, resize, preset))
            except OSError as e:
                raise DataError(f"{f}: cannot decode image ({e})") from None
        yield np.stack(xs), np.array([lab for _, lab in chunk], np.int64)
