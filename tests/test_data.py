"""Fashion-MNIST loading (hash checks, corrupt files), normalisation, ImageNet val reading."""
from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from qcnn_lite.io import datasets as data
from qcnn_lite.cli.main import main as cli_main


def _official_dir() -> Path:
    try:
        return data.find_fashion_mnist()
    except data.DataError as e:
        pytest.skip(f"Fashion-MNIST not installed ({e.args[0].splitlines()[0]}); run `make data`")


@pytest.fixture
def fm_copy(tmp_path, monkeypatch):
    """A copy of the four official .gz files in tmp_path, with QCNN_DATA pointing at it."""
    src = _official_dir()
    for pair in data.FILES.values():
        for name in pair:
            p = data._file_in(src, name)
            shutil.copy(p, tmp_path / p.name)
    monkeypatch.setenv("QCNN_DATA", str(tmp_path))
    return tmp_path


def _rewrite(path: Path, fn) -> None:
    """Replace the payload of a (gzipped or raw) IDX file by fn(payload)."""
    raw = path.read_bytes()
    gz = raw[:2] == b"\x1f\x8b"
    payload = fn(gzip.decompress(raw) if gz else raw)
    path.write_bytes(gzip.compress(payload) if gz else payload)


def test_official_files_load_with_expected_contents():
    _official_dir()
    x, y = data.load_fashion_mnist("train")
    xt, yt = data.load_fashion_mnist("test")
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert xt.shape == (10000, 28, 28) and yt.shape == (10000,)
    # balanced classes: 6,000 per class in train, 1,000 in test (Zalando's README)
    assert np.bincount(y, minlength=10).tolist() == [6000] * 10
    assert np.bincount(yt, minlength=10).tolist() == [1000] * 10
    assert len(data.CLASSES) == 10
    # the hard-coded normalisation is the training set's pixel statistics
    f = x.astype(np.float64) / 255
    assert abs(f.mean() - data.MEAN) < 1e-9 and abs(f.std() - data.STD) < 1e-9


def test_sha256_constants_match_the_published_raw_md5():
    """The payloads we pin by SHA-256 are Zalando's raw files (their published MD5s)."""
    d = _official_dir()
    for name in data.SHA256:
        raw = data._file_in(d, name).read_bytes()
        raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        assert hashlib.md5(raw).hexdigest() == data.RAW_MD5[name]
        assert hashlib.sha256(raw).hexdigest() == data.SHA256[name]


def test_qcnn_data_is_searched_first(fm_copy):
    assert data.find_fashion_mnist() == fm_copy
    x, y = data.load_fashion_mnist("test")
    assert x.shape == (10000, 28, 28)


def test_uncompressed_files_are_accepted(fm_copy):
    p = fm_copy / "t10k-labels-idx1-ubyte.gz"
    (fm_copy / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress(p.read_bytes()))
    p.unlink()
    _, y = data.load_fashion_mnist("test")
    assert y.shape == (10000,)


def test_wrong_hash_is_rejected_and_names_the_file(fm_copy):
    def flip_a_label(b: bytes) -> bytes:
        b = bytearray(b)
        b[100] = (b[100] + 1) % 10  # still a valid IDX label file
        return bytes(b)

    _rewrite(fm_copy / "t10k-labels-idx1-ubyte.gz", flip_a_label)
    with pytest.raises(data.DataError, match=r"t10k-labels-idx1-ubyte\.gz.*SHA-256"):
        data.load_fashion_mnist("test")


def test_truncated_gzip_is_rejected(fm_copy):
    p = fm_copy / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[: 100_000])
    with pytest.raises(data.DataError, match=r"t10k-images-idx3-ubyte\.gz.*(truncated|corrupt)"):
        data.load_fashion_mnist("test")
    assert issubclass(data.DataError, ValueError)


def test_truncated_payload_is_rejected(fm_copy):
    _rewrite(fm_copy / "t10k-images-idx3-ubyte.gz", lambda b: b[:-28])
    with pytest.raises(data.DataError, match=r"t10k-images-idx3-ubyte\.gz.*truncated"):
        data.load_fashion_mnist("test")


def test_wrong_magic_is_rejected(fm_copy):
    _rewrite(fm_copy / "t10k-labels-idx1-ubyte.gz", lambda b: b"\x00\x00\x0d\x01" + b[4:])  # float32 type code
    with pytest.raises(data.DataError, match=r"t10k-labels-idx1-ubyte\.gz.*magic"):
        data.load_fashion_mnist("test")


def test_missing_files_give_instructions(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "search_dirs", lambda: [tmp_path])
    with pytest.raises(data.DataError, match="make data"):
        data.find_fashion_mnist()
    with pytest.raises(ValueError, match="split"):
        data.load_fashion_mnist("val")


def test_read_idx_parses_a_handmade_file(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / "x-idx3-ubyte"
    p.write_bytes(b"\x00\x00\x08\x03" + np.array([2, 3, 4], ">u4").tobytes() + arr.tobytes())
    np.testing.assert_array_equal(data.read_idx(p), arr)
    with pytest.raises(data.DataError, match="SHA-256"):
        data.read_idx(p, "0" * 64)


def test_to_input_normalises_and_reshapes():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    x = data.to_input(imgs)
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0], (imgs / 255.0 - data.MEAN) / data.STD, rtol=1e-5, atol=1e-5)
    assert data.to_input(imgs[0]).shape == (1, 1, 28, 28)
    np.testing.assert_array_equal(data.to_input(imgs[:, None]), x)
    x2 = data.to_input(imgs, *data.normalisation({"input_mean": 0.5, "input_std": 0.25}))
    np.testing.assert_allclose(x2[:, 0], (imgs / 255.0 - 0.5) / 0.25, rtol=1e-5, atol=1e-5)
    assert data.normalisation(None) == (data.MEAN, data.STD)
    with pytest.raises(ValueError, match="shape"):
        data.to_input(np.zeros((2, 3, 28, 28)))


# -- ImageNet val -----------------------------------------------------------------
PIL = pytest.importorskip("PIL.Image")


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.fromarray(arr).save(path)


def test_imagenet_preprocess_resizes_crops_and_subtracts_mean():
    # 256 x 512 (shorter side already 256): left half black, right half (R, G, B) = (200, 100, 50)
    a = np.zeros((256, 512, 3), np.uint8)
    a[:, 256:] = (200, 100, 50)
    x = data.imagenet_preprocess(PIL.fromarray(a), crop=224, resize=256, preset=data.CAFFE)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    # centre crop starts at column (512 - 224) // 2 = 144, so the edge is at crop column 112
    mean_bgr = np.array(data.CAFFE["mean"], np.float32)[:, None, None]
    np.testing.assert_allclose(x[:, :, :112], np.broadcast_to(-mean_bgr, (3, 224, 112)))
    np.testing.assert_allclose(x[:, :, 112:], np.broadcast_to(np.array([50, 100, 200], np.float32)[:, None, None] - mean_bgr, (3, 224, 112)))
    # a smaller image is scaled up so its shorter side is 256 before the crop
    y = data.imagenet_preprocess(PIL.fromarray(np.full((100, 150, 3), 128, np.uint8)), crop=227, preset=data.TORCHVISION)
    assert y.shape == (3, 227, 227)
    np.testing.assert_allclose(y[0], (128 - 123.675) / 58.395, rtol=1e-5)
    with pytest.raises(ValueError, match="crop"):
        data.imagenet_preprocess(PIL.fromarray(a), crop=300, resize=256)


def test_imagenet_val_class_folders(tmp_path):
    rng = np.random.default_rng(0)
    wnids = ["n01440764", "n01443537", "n01484850"]
    for i, w in enumerate(wnids):
        for j in range(2):
            _save(tmp_path / w / f"ILSVRC2012_val_{i * 2 + j + 1:08d}.JPEG",
                  rng.integers(0, 256, (int(rng.integers(200, 400)), int(rng.integers(200, 400)), 3), dtype=np.uint8))
    batches = list(data.imagenet_val(tmp_path, crop=227, batch_size=4))
    assert [b[0].shape for b in batches] == [(4, 3, 227, 227), (2, 3, 227, 227)]
    labels = np.concatenate([b[1] for b in batches])
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert sum(len(b[1]) for b in data.imagenet_val(tmp_path, limit=3)) == 3


def test_imagenet_val_flat_with_caffe_and_devkit_labels(tmp_path):
    for i in range(1, 4):
        _save(tmp_path / f"ILSVRC2012_val_{i:08d}.JPEG", np.full((260, 300, 3), 10 * i, np.uint8))
    # Caffe val.txt: file name and 0-based label
    (tmp_path / "val.txt").write_text("ILSVRC2012_val_00000001.JPEG 7\nILSVRC2012_val_00000002.JPEG 0\nILSVRC2012_val_00000003.JPEG 999\n")
    (_, labels), = data.imagenet_val(tmp_path)
    assert labels.tolist() == [7, 0, 999]
    # devkit: one 1-based ILSVRC2012_ID per line; with wnids (in ID order) they map to sorted-wnid order
    gt = tmp_path / "gt.txt"
    gt.write_text("3\n1\n2\n")
    (_, labels), = data.imagenet_val(tmp_path, ground_truth=gt)
    assert labels.tolist() == [2, 0, 1]
    (_, labels), = data.imagenet_val(tmp_path, ground_truth=gt, wnids=["n03", "n01", "n02"])
    assert labels.tolist() == [1, 2, 0]  # ID 3 is n02 (sorted index 1), ID 1 is n03 (2), ID 2 is n01 (0)
    (tmp_path / "val.txt").unlink()
    with pytest.raises(ValueError, match="ground-truth"):
        next(data.imagenet_val(tmp_path))


# -- make data ----------------------------------------------------------------------
def test_fetch_finds_installed_data(capsys):
    d = _official_dir()
    assert data.fetch(apt=False) == d
    assert "verified" in capsys.readouterr().out


def test_fetch_offline_prints_instructions_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data, "search_dirs", lambda: [tmp_path / "nowhere"])

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    assert data.fetch(tmp_path / "dest", timeout=0.1, apt=False) is None
    err = capsys.readouterr().err
    assert "download failed" in err and "apt-get install dataset-fashion-mnist" in err
    assert not (tmp_path / "dest").exists() or not any((tmp_path / "dest").iterdir())


def test_fetch_rejects_a_download_with_the_wrong_checksum(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data, "search_dirs", lambda: [tmp_path / "nowhere"])

    class Response:  # serves the right bytes with a wrong gzip wrapper: the MD5 check must refuse them
        def __init__(self, url, timeout):
            self.blob = gzip.compress(b"not the data")

        def read(self):
            return self.blob

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr("urllib.request.urlopen", Response)
    assert data.fetch(tmp_path / "dest", apt=False) is None
    assert "MD5" in capsys.readouterr().err
    assert not list((tmp_path / "dest").glob("*.gz")) if (tmp_path / "dest").exists() else True


def test_check_command(fm_copy, capsys):
    assert cli_main(["data", "check"]) == 0
    _rewrite(fm_copy / "t10k-labels-idx1-ubyte.gz", lambda b: b[:-1] + bytes([(b[-1] + 1) % 10]))
    assert cli_main(["data", "check"]) == 1
    assert "SHA-256" in capsys.readouterr().out
