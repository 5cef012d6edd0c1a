"""The model file: exact round trips, determinism, size, and rejection of every kind of bad file."""
from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import struct

import numpy as np
import pytest

from qcnn_lite import kernels
from qcnn_lite.paper import cost, constants as paper
from qcnn_lite.nn import models, precision
from qcnn_lite.nn.engine import Network, build_layer, output_shapes
from qcnn_lite.nn.layers import Conv2d, Linear, QConv2d, QLinear
from qcnn_lite.cli.main import describe
from qcnn_lite.cli.main import main as cli_main
from qcnn_lite.io import bitpack
from qcnn_lite.io.modelfile import ModelFormatError, load, read_manifest, save
from qcnn_lite.quant.quantize import quantize_network

MAGIC = b"QCNNLITE"

SPEC = [
    {"type": "conv", "name": "c1", "out": 6, "kernel": 3, "stride": 1, "padding": 1, "groups": 2},
    {"type": "relu"},
    {"type": "lrn", "size": 3, "alpha": 1e-4, "beta": 0.75, "k": 1.0},
    {"type": "maxpool", "kernel": 2, "stride": 2, "ceil": False},
    {"type": "conv", "name": "c2", "out": 4, "kernel": 3, "stride": 2, "padding": 0, "groups": 1},
    {"type": "relu"},
    {"type": "flatten"},
    {"type": "fc", "name": "f1", "out": 5},
    {"type": "relu"},
    {"type": "dropout"},
    {"type": "fc", "name": "f2", "out": 3},
    {"type": "softmax"},
]
INPUT = (4, 10, 10)
META = {"classes": ["ä", "b", "c"], "mean": [0.5, -1.25e-7, 3.0], "nested": {"x": None, "ok": True, "n": 7}}


def _random_q(L: dict, in_shape, K: int, d: int, rng) -> QConv2d | QLinear:
    """A quantized layer with random codebooks and codes of the right shapes."""
    dt = np.uint8 if K <= 256 else np.uint16
    if L["type"] == "conv":
        g, k = L["groups"], L["kernel"]
        M = in_shape[0] // g // d
        return QConv2d(rng.standard_normal((M, K, d), dtype=np.float32), rng.integers(0, K, (L["out"], k, k, M)).astype(dt),
                       rng.standard_normal(L["out"], dtype=np.float32), L["stride"], L["padding"], g)
    M = math.prod(in_shape) // d
    return QLinear(rng.standard_normal((M, K, d), dtype=np.float32), rng.integers(0, K, (L["out"], M)).astype(dt),
                   rng.standard_normal(L["out"], dtype=np.float32))


def tiny_net(quantized: dict[str, int] | None = None, seed: int = 0) -> Network:
    """The small test network; ``quantized`` maps layer names to K for random quantized layers."""
    rng = np.random.default_rng(seed)
    shapes = [INPUT] + output_shapes(SPEC, INPUT)
    params = {}
    for i, L in enumerate(SPEC):
        if L["type"] not in ("conv", "fc"):
            continue
        if quantized and L["name"] in quantized:
            params[L["name"]] = _random_q(L, shapes[i], quantized[L["name"]], 1, rng)
        else:
            p = build_layer(L, shapes[i], rng)
            p.bias = rng.standard_normal(p.bias.shape, dtype=np.float32)
            params[L["name"]] = p
    return Network("tiny", INPUT, [dict(L) for L in SPEC], params, json.loads(json.dumps(META)))


def assert_same(a: Network, b: Network) -> None:
    assert (a.name, a.input_shape, a.spec, a.meta) == (b.name, b.input_shape, b.spec, b.meta)
    assert a.params.keys() == b.params.keys()
    for name, p in a.params.items():
        q = b.params[name]
        assert type(p) is type(q)
        roles = ("weight", "bias") if isinstance(p, (Linear, Conv2d)) else ("codebooks", "codes", "bias")
        for r in roles:
            x, y = getattr(p, r), getattr(q, r)
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), (name, r)
        for attr in ("stride", "padding", "groups"):
            assert getattr(p, attr, None) == getattr(q, attr, None)
        assert precision.table_dtype(p) == precision.table_dtype(q), name
    x = np.random.default_rng(1).standard_normal((2,) + a.input_shape, dtype=np.float32)
    assert np.array_equal(a(x), b(x))


# --------------------------------------------------------------------------- helpers to craft files
def split(data: bytes) -> tuple[int, dict, bytes]:
    """(version, manifest, payload) of a file written by save()."""
    assert data[:8] == MAGIC
    version, hlen = struct.unpack("<II", data[8:16])
    return version, json.loads(data[16 : 16 + hlen]), data[16 + hlen : -32]


def fix(body: bytes) -> bytes:
    """Append a valid SHA-256 trailer, so only the structural checks can catch the damage."""
    return body + hashlib.sha256(body).digest()


def assemble(man: dict, payload: bytes, version: int | None = None, canonical: bool = True) -> bytes:
    """A file around ``man``; the preamble's version is the manifest's unless given."""
    version = man.get("format_version", 1) if version is None else version
    text = json.dumps(man, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() if canonical \
        else json.dumps(man, indent=1).encode()
    text += b" " * (-(16 + len(text)) % 64)
    return fix(MAGIC + struct.pack("<II", version, len(text)) + text + payload)


def rewrite(data: bytes, edit) -> bytes:
    version, man, payload = split(data)
    edit(man)
    return assemble(man, payload, version)


def array_entry(man: dict, layer: str, role: str) -> dict:
    return next(a for a in man["arrays"] if a["layer"] == layer and a["role"] == role)


def expect_error(tmp_path, data: bytes, match: str) -> ModelFormatError:
    p = tmp_path / "bad.qcnn"
    p.write_bytes(data)
    with pytest.raises(ModelFormatError, match=match) as info:
        load(p)
    assert str(p) in str(info.value)  # the message names the file
    return info.value


@pytest.fixture(scope="module")
def qfile(tmp_path_factory) -> tuple[Network, bytes]:
    """A mixed network: K=100 conv codes (7 bits, so 100..127 are representable), dense conv, K=16 fc, dense fc."""
    net = tiny_net({"c1": 100, "f1": 16})
    p = save(net, tmp_path_factory.mktemp("q") / "q.qcnn")
    return net, p.read_bytes()


# --------------------------------------------------------------------------- round trips
def test_round_trip_dense(tmp_path):
    net = tiny_net()
    p = save(net, tmp_path / "dense.qcnn")
    assert p == tmp_path / "dense.qcnn"
    assert_same(net, load(p))
    assert load(str(p)).input_shape == INPUT


@pytest.mark.parametrize("K", [1, 2, 16, 100, 128, 256, 1024])
def test_round_trip_quantized(tmp_path, K):
    net = tiny_net({"c1": K, "c2": K, "f1": K, "f2": K}, seed=K)
    p = save(net, tmp_path / "q.qcnn")
    back = load(p)
    assert_same(net, back)
    assert back.params["f1"].codes.dtype == (np.uint16 if K > 256 else np.uint8)
    bits = max(1, math.ceil(math.log2(K)))
    codes = [a for a in read_manifest(p)["arrays"] if a["role"] == "codes"]
    assert [a["bits"] for a in codes] == [bits] * 4
    assert all(a["nbytes"] == math.ceil(math.prod(a["shape"]) * bits / 8) for a in codes)


def test_round_trip_mixed_and_meta_types(tmp_path, qfile):
    net, data = qfile
    back = load_bytes(tmp_path, data)
    assert_same(net, back)
    net2 = net.copy()
    net2.meta["pair"] = (1, 2)  # tuples are stored as JSON lists
    assert load(save(net2, tmp_path / "t.qcnn")).meta["pair"] == [1, 2]


def test_round_trip_quantize_network(tmp_path):
    """A network from quantize_network (k-means codebooks, its meta) comes back bit-identical."""
    qnet = quantize_network(tiny_net(seed=2), None, {"conv": (2, 8), "fc": (2, 4), "f2": (1, 2)},
                            error_correction=False, show_progress=False)
    assert isinstance(qnet.params["f2"], QLinear) and qnet.params["f2"].n_codewords == 2
    back = load(save(qnet, tmp_path / "q.qcnn"))
    assert_same(qnet, back)
    assert back.meta["quantization"]["settings"]["f2"] == [1, 2]


def test_describe_and_cli(tmp_path, qfile, capsys):
    p = tmp_path / "m.qcnn"
    p.write_bytes(qfile[1])
    text = describe(p)
    assert "tiny" in text and "QConv2d" in text and "K=100 at 7 bits" in text and "K=16 at 4 bits" in text
    assert cli_main(["model-info", str(p)]) == 0
    assert capsys.readouterr().out == text


def load_bytes(tmp_path, data: bytes) -> Network:
    p = tmp_path / "x.qcnn"
    p.write_bytes(data)
    return load(p)


def _pack_reference(codes: np.ndarray, bits: int) -> bytes:
    """MSB-first bit stream written out as a string of '0'/'1' characters: an independent packer."""
    s = "".join(format(int(c), f"0{bits}b") for c in codes.reshape(-1))
    s += "0" * (-len(s) % 8)
    return bytes(int(s[i : i + 8], 2) for i in range(0, len(s), 8))


@pytest.mark.parametrize("K", [2, 3, 16, 100, 1024])
def test_codes_are_packed_msb_first(tmp_path, K):
    net = tiny_net({"c1": K, "f1": K}, seed=3)
    data = save(net, tmp_path / "q.qcnn").read_bytes()
    _, man, payload = split(data)
    for name in ("c1", "f1"):
        a = array_entry(man, name, "codes")
        got = payload[a["offset"] : a["offset"] + a["nbytes"]]
        assert got == _pack_reference(net.params[name].codes, a["bits"])


@pytest.mark.parametrize("K", [3, 100, 1024])
def test_packing_in_small_chunks(tmp_path, monkeypatch, K):
    """Packing and unpacking work in chunks of codes; chunk edges must not shift the stream."""


    net = tiny_net({"c1": K, "f1": K}, seed=4)
    whole = save(net, tmp_path / "a.qcnn").read_bytes()
    monkeypatch.setattr(bitpack, "_CHUNK", 8)
    assert save(net, tmp_path / "b.qcnn").read_bytes() == whole
    assert_same(net, load(tmp_path / "a.qcnn"))


def test_known_bit_pattern(tmp_path):
    # codes 5, 3 at K=8 (3 bits): 101 011 -> 1010 1100 = 0xAC
    L = {"type": "fc", "name": "f", "out": 2}
    net = Network("p", (1, 1, 1), [{"type": "flatten"}, L],
                  {"f": QLinear(np.zeros((1, 8, 1), np.float32), np.array([[5], [3]], np.uint8), np.zeros(2, np.float32))})
    _, man, payload = split(save(net, tmp_path / "p.qcnn").read_bytes())
    a = array_entry(man, "f", "codes")
    assert payload[a["offset"] : a["offset"] + a["nbytes"]] == b"\xac"


# --------------------------------------------------------------------------- determinism, overwrite
def test_same_network_same_bytes(tmp_path):
    a = save(tiny_net({"c1": 100, "f1": 16}, seed=5), tmp_path / "a.qcnn").read_bytes()
    b = save(tiny_net({"c1": 100, "f1": 16}, seed=5), tmp_path / "b.qcnn").read_bytes()
    c = save(load(tmp_path / "a.qcnn"), tmp_path / "c.qcnn").read_bytes()
    assert a == b == c
    d = save(tiny_net({"c1": 100, "f1": 16}, seed=6), tmp_path / "d.qcnn").read_bytes()
    assert d != a


def test_refuses_to_overwrite(tmp_path):
    p = tmp_path / "m.qcnn"
    p.write_bytes(b"precious user data")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save(tiny_net(), p)
    assert p.read_bytes() == b"precious user data"
    save(tiny_net(), p, overwrite=True)
    assert_same(tiny_net(), load(p))
    assert sorted(os.listdir(tmp_path)) == ["m.qcnn"]  # no temporary files left behind
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(p).st_mode & 0o777 == 0o666 & ~umask


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    import qcnn_lite.io.modelfile as mf

    p = tmp_path / "m.qcnn"
    save(tiny_net(), p)
    before = p.read_bytes()

    def disk_full(f, header, arrays, version):
        f.write(header[:100])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mf, "_write", disk_full)
    with pytest.raises(OSError, match="No space"):
        save(tiny_net(seed=1), p, overwrite=True)
    assert p.read_bytes() == before  # the old model is intact
    assert os.listdir(tmp_path) == ["m.qcnn"]


def test_save_rejects_what_it_cannot_store_exactly(tmp_path):
    net = tiny_net()
    for meta, match in [({"x": float("nan")}, "NaN"), ({"x": np.float32(1)}, "float32"), ({1: 2}, "non-string key")]:
        bad = net.copy()
        bad.meta = meta
        with pytest.raises(ValueError, match=match):
            save(bad, tmp_path / "m.qcnn")
    bad = net.copy()
    w = net.params["c1"]
    bad.params["c1"] = Conv2d(w.weight, w.bias, stride=2, padding=1, groups=2)  # disagrees with the spec
    with pytest.raises(ValueError, match="stride=2 but the spec says 1"):
        save(bad, tmp_path / "m.qcnn")
    del bad.params["c1"]
    with pytest.raises(ValueError, match="no parameters for c1"):
        save(bad, tmp_path / "m.qcnn")
    bad = tiny_net()
    bad.params["f1"].weight[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        save(bad, tmp_path / "m.qcnn")
    bad = tiny_net()
    bad.spec[3]["ceil"] = 0  # the loader wants a boolean: save must not write what load refuses
    with pytest.raises(ValueError, match="ceil must be true or false"):
        save(bad, tmp_path / "m.qcnn")
    assert not os.listdir(tmp_path)
    with pytest.raises(IsADirectoryError):
        save(net, tmp_path)


def test_alexnet_size_matches_cost_model(tmp_path):
    """A quantized AlexNet at the released settings: the file is the paper's 12.60 MiB (Table 2) within 1%,
    and only a few kB more than its arrays with ceil(log2 K)-bit codes."""
    input_shape, spec = models.spec("alexnet")
    settings = {"conv": (8, 128), "fc": (4, 32), "fc8": (1, 16)}
    shapes = [input_shape] + output_shapes(spec, input_shape)
    rng = np.random.default_rng(0)
    params, nbytes = {}, 0.0
    for i, L in enumerate(spec):
        if L["type"] not in ("conv", "fc"):
            continue
        d, K = settings.get(L["name"], settings[L["type"]])
        cin = shapes[i][0] // L["groups"] if L["type"] == "conv" else math.prod(shapes[i])
        d = min(d, cin)
        layer = _random_q(L, shapes[i], K, d, rng)
        params[L["name"]] = layer
        nbytes += layer.codebooks.nbytes + -(-layer.codes.size * (K - 1).bit_length() // 8) + layer.bias.nbytes
    net = Network("alexnet", input_shape, spec, params)
    size = os.path.getsize(save(net, tmp_path / "alexnet.qcnn"))
    paper_mib = paper.table2_paper("alexnet")["qcnn"]["storage_mb"]  # the released model: 12.60 MiB
    assert abs(size / 2**20 / paper_mib - 1) < 0.01, size / 2**20
    assert 0 < size - nbytes < 8192, (size, nbytes)  # the arrays, bit-packed, plus a few kB of header, padding, checksum
    assert abs(size / 2**20 / cost.network_cost(input_shape, spec, settings)["qcnn_mib"] - 1) < 0.01
    back = read_manifest(tmp_path / "alexnet.qcnn")
    assert [a["bits"] for a in back["arrays"] if a["role"] == "codes"] == [7] * 5 + [5, 5, 4]


# --------------------------------------------------------------------------- named corruptions
def test_empty_file(tmp_path):
    expect_error(tmp_path, b"", "empty")


def test_directory(tmp_path):
    with pytest.raises(ModelFormatError, match="directory"):
        load(tmp_path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope.qcnn")


def test_pickle_is_refused_not_loaded(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("load() must never unpickle")

    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "Unpickler", boom)
    data = pickle.dumps({"name": "alexnet", "params": {"w": [1.0, 2.0]}}, protocol=pickle.HIGHEST_PROTOCOL)
    expect_error(tmp_path, data, "pickle")
    expect_error(tmp_path, pickle.dumps({"a": 1}, protocol=0), "not a qcnn-lite model")


def test_npy_and_other_files(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(3))
    expect_error(tmp_path, (tmp_path / "a.npy").read_bytes(), "numpy")
    expect_error(tmp_path, b"hello world, this is text\n" * 10, "not a qcnn-lite model")


def test_truncated_everywhere(tmp_path, qfile):
    _, data = qfile
    _, man, _ = split(data)
    hlen = struct.unpack("<I", data[12:16])[0]
    cuts = set(range(0, 80)) | {16 + hlen + a["offset"] + k for a in man["arrays"] for k in (0, 1)}
    cuts |= set(np.random.default_rng(0).integers(0, len(data), 60).tolist()) | {len(data) - 1, len(data) - 32}
    for cut in sorted(cuts):
        p = tmp_path / "cut.qcnn"
        p.write_bytes(data[:cut])
        with pytest.raises(ModelFormatError, match="empty|truncated|checksum"):
            load(p)


def test_bit_flip_detected_by_checksum(tmp_path, qfile):
    _, data = qfile
    for pos in (20, len(data) // 2, len(data) - 40, len(data) - 1):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        expect_error(tmp_path, bytes(bad), "checksum")


# --------------------------------------------------------------------------- table precision (version 2)
def test_table_precision_is_stored_and_read_back(tmp_path):
    net = tiny_net({"c1": 16, "f1": 16, "f2": 300})
    net.params["f1"].table_dtype = "float32"  # not its default: the file must say so
    p = save(net, tmp_path / "t.qcnn")
    version, man, _ = split(p.read_bytes())
    assert version == man["format_version"] == 2
    stored = {e["name"]: e.get("table_dtype") for e in man["layers"]}
    assert stored == {"c1": precision.table_dtype(net.params["c1"]), "c2": None, "f1": "float32", "f2": "float32"}
    got = load(p)
    assert got.params["f1"].table_dtype == "float32" and got.params["f2"].table_dtype == "float32"
    assert_same(net, got)
    assert "tables float32" in describe(p) and "format version 2" in describe(p)


def test_dense_files_stay_version_1(tmp_path):
    data = save(tiny_net(), tmp_path / "d.qcnn").read_bytes()
    version, man, _ = split(data)
    assert version == man["format_version"] == 1
    assert not any("table_dtype" in e for e in man["layers"])


def test_version_1_quantized_file_loads_with_default_precision(tmp_path):
    """Files from before version 2 (no table_dtype) load with each class's default, as they did."""
    net = tiny_net({"c1": 16, "f1": 16})
    _, man, payload = split(save(net, tmp_path / "v2.qcnn").read_bytes())
    for e in man["layers"]:
        e.pop("table_dtype", None)
    man["format_version"] = 1
    p = tmp_path / "v1.qcnn"
    p.write_bytes(assemble(man, payload))
    got = load(p)
    assert got.params["f1"].table_dtype == QLinear.default_table_dtype(16)
    assert_same(net, got)


def test_committed_model_files_still_load():
    from qcnn_lite.io import paths

    for f in sorted(paths.models_dir().glob("*.qcnn")):
        net = load(f)
        assert read_manifest(f)["format_version"] in (1, 2), f
        for p in net.params.values():
            if isinstance(p, QLinear):
                assert p.table_dtype == QLinear.default_table_dtype(p.n_codewords)


@pytest.mark.parametrize("edit,match", [
    (lambda e: e.update(table_dtype="int4"), "table_dtype 'int4' is not one this qcnn-lite knows for QLinear"),
    (lambda e: e.update(table_dtype=8), "table_dtype 8 is not one"),
    (lambda e: e.pop("table_dtype"), "lacks table_dtype"),
])
def test_bad_table_precision_is_a_clear_error(tmp_path, qfile, edit, match):
    _, data = qfile
    expect_error(tmp_path, rewrite(data, lambda m: edit(next(e for e in m["layers"] if e["name"] == "f1"))), match)


def test_table_precision_the_layer_cannot_take(tmp_path):
    """uint8 is a QLinear precision, but not for K > 256: the layer's own check, reported for the file."""
    _, man, payload = split(save(tiny_net({"f1": 300}), tmp_path / "k.qcnn").read_bytes())
    next(e for e in man["layers"] if e["name"] == "f1")["table_dtype"] = "uint8"
    expect_error(tmp_path, assemble(man, payload), "layer 'f1': 8-bit tables take K <= 256")


def test_version_mismatches_of_the_table_field(tmp_path, qfile):
    _, data = qfile
    _, man, payload = split(data)
    man["format_version"] = 1  # version 1 has no table_dtype field
    expect_error(tmp_path, assemble(man, payload), "unknown fields table_dtype")
    _, man, payload = split(save(tiny_net(), tmp_path / "d.qcnn").read_bytes())
    man["format_version"] = 2  # a dense network is written as version 1
    expect_error(tmp_path, assemble(man, payload), "holds quantized layers, this file has none")


def test_newer_format_version(tmp_path, qfile):
    from qcnn_lite.io.manifest import FORMAT_VERSION

    _, data = qfile
    _, man, payload = split(data)
    newer = FORMAT_VERSION + 1
    expect_error(tmp_path, assemble(man, payload, version=newer), "written by a newer qcnn-lite")
    bad = bytearray(data)
    bad[8:12] = struct.pack("<I", 7)  # even without a valid checksum, the version is reported
    expect_error(tmp_path, bytes(bad), "written by a newer qcnn-lite")
    man["format_version"] = newer
    expect_error(tmp_path, assemble(man, payload), "written by a newer qcnn-lite")


@pytest.mark.parametrize("layer,role,dtype,match", [
    ("c2", "weight", "float64", "dtype 'float64' is not one of"),
    ("c2", "weight", "object", "dtype 'object' is not one of"),
    ("c1", "codes", "uint16", "K=100 codes are uint8 at 7 bits"),
    ("f1", "codes", "float32", "K=16 codes are uint8 at 4 bits"),
    ("f1", "bias", "uint8", "must be float32"),
])
def test_wrong_dtype_in_manifest(tmp_path, qfile, layer, role, dtype, match):
    def edit(man):
        array_entry(man, layer, role)["dtype"] = dtype
    expect_error(tmp_path, rewrite(qfile[1], edit), match)


@pytest.mark.parametrize("layer,role,shape,match", [
    ("c2", "weight", [4, 6, 3, 2], "does not match the spec"),
    ("c2", "weight", [4, 54], "does not match the spec"),
    ("f2", "weight", [5, 3], "does not match the spec"),
    ("f2", "bias", [4], "does not match the spec"),
    ("c1", "codes", [6, 3, 3, 1], "does not match the spec"),
    ("c1", "codebooks", [1, 100, 2], "codes: shape"),
    ("c1", "codebooks", [2, 100, 2], "do not cover 4 input channels"),
    ("f1", "codebooks", [8, 16, 2], "codes: shape"),
    ("f1", "codebooks", [0, 16, 1], "positive sizes"),
    ("f1", "codes", [5, -1], "non-negative integers"),
    ("f1", "codes", [5, 72.0], "non-negative integers"),
])
def test_wrong_shape_in_manifest(tmp_path, qfile, layer, role, shape, match):
    def edit(man):
        array_entry(man, layer, role)["shape"] = shape
    expect_error(tmp_path, rewrite(qfile[1], edit), match)


@pytest.mark.parametrize("io_chunk", [None, 16])
def test_code_at_or_above_K(tmp_path, qfile, monkeypatch, io_chunk):
    """Codes >= K and non-zero padding bits are refused; the index is the code's place in the whole array
    even when the codes are read in slices (io_chunk=16: slices of 16 codes, 14 bytes)."""
    import qcnn_lite.io.modelfile as mf

    if io_chunk:
        monkeypatch.setattr(mf, "_IO_CHUNK", io_chunk)
    _, data = qfile
    version, man, payload = split(data)
    a = array_entry(man, "c1", "codes")
    assert a["bits"] == 7 and math.prod(a["shape"]) == 108  # 756 bits: the last byte has 4 padding bits
    span = slice(a["offset"], a["offset"] + a["nbytes"])
    for code, index in ((127, 0), (100, 1), (101, 50), (120, 107)):
        pl = bytearray(payload)
        bits = "".join(format(b, "08b") for b in pl[span])
        bits = bits[: 7 * index] + format(code, "07b") + bits[7 * index + 7 :]
        pl[span] = bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8))
        expect_error(tmp_path, assemble(man, bytes(pl), version), f"code {code} at index {index} is >= K=100")
    pl = bytearray(payload)
    pl[span.stop - 1] |= 0b0001
    expect_error(tmp_path, assemble(man, bytes(pl), version), "non-zero padding bits after the last code")


@pytest.mark.parametrize("io_chunk", [1, 5, 16, 100])
def test_codes_read_in_slices(tmp_path, monkeypatch, io_chunk):
    """Codes are read and unpacked a slice of about _IO_CHUNK bytes at a time (at least 8 codes, always
    whole bytes); slice edges must not shift the stream, whatever the bits per code."""
    import qcnn_lite.io.modelfile as mf

    files = {K: save(tiny_net({"c1": K, "c2": K, "f1": K, "f2": K}, seed=K), tmp_path / f"{K}.qcnn") for K in (1, 3, 100, 1024)}
    monkeypatch.setattr(mf, "_IO_CHUNK", io_chunk)
    for K, p in files.items():
        assert_same(tiny_net({"c1": K, "c2": K, "f1": K, "f2": K}, seed=K), load(p))


def test_non_finite_floats(tmp_path, qfile):
    _, data = qfile
    version, man, payload = split(data)
    for role, layer, value in (("bias", "f2", np.nan), ("weight", "c2", np.inf), ("codebooks", "c1", -np.inf)):
        a = array_entry(man, layer, role)
        pl = bytearray(payload)
        pl[a["offset"] + 4 : a["offset"] + 8] = np.float32(value).tobytes()
        expect_error(tmp_path, assemble(man, bytes(pl), version), f"layer '{layer}' {role}: contains NaN or Inf")


def test_unknown_layer_types(tmp_path, qfile):
    def spec_edit(man):
        man["network"]["spec"][1]["type"] = "attention"
    expect_error(tmp_path, rewrite(qfile[1], spec_edit), "unknown layer type 'attention'")

    def class_edit(man):
        man["layers"][0]["class"] = "QDepthwise"
    expect_error(tmp_path, rewrite(qfile[1], class_edit), "unknown layer type 'QDepthwise'")

    def kind_edit(man):  # a fully-connected class for a conv layer
        e = man["layers"][1]
        e["class"] = "Linear"
        del e["stride"], e["padding"], e["groups"]
    expect_error(tmp_path, rewrite(qfile[1], kind_edit), "conv in the spec but the file stores a Linear")


def test_missing_parameters(tmp_path, qfile):
    def drop_layer(man):
        man["layers"] = [e for e in man["layers"] if e["name"] != "c2"]
        man["arrays"] = [a for a in man["arrays"] if a["layer"] != "c2"]
    expect_error(tmp_path, rewrite(qfile[1], drop_layer), "missing parameters for conv layer 'c2'")

    def drop_array(man):
        man["arrays"] = [a for a in man["arrays"] if (a["layer"], a["role"]) != ("f1", "codebooks")]
    expect_error(tmp_path, rewrite(qfile[1], drop_array), "needs arrays codebooks, codes, bias")


def test_layout_errors(tmp_path, qfile):
    data = qfile[1]
    cases = [
        (lambda m: array_entry(m, "c2", "weight").update(offset=array_entry(m, "c2", "weight")["offset"] + 1), "not 64-byte aligned"),
        (lambda m: array_entry(m, "f2", "bias").update(offset=1 << 40), "run past the payload end"),
        (lambda m: array_entry(m, "f2", "bias").update(nbytes=1 << 30), "take 12 bytes, the file says 1073741824"),
        (lambda m: array_entry(m, "c1", "bias").update(offset=array_entry(m, "c1", "codes")["offset"]), "overlaps"),
        (lambda m: array_entry(m, "f2", "bias").update(nbytes=array_entry(m, "f2", "bias")["nbytes"] - 4), "take 12 bytes, the file says 8"),
        (lambda m: m.update(payload_nbytes=m["payload_nbytes"] + 64), "truncated or padded"),
        (lambda m: m.update(extra=1), "unknown fields extra"),
        (lambda m: m["network"].update(input_shape=[4, 10]), "input_shape"),
        (lambda m: m["network"]["spec"][0].update(kernel=30), "does not fit"),
        (lambda m: m["network"]["spec"][0].update(groups=True), "groups must be a positive integer"),
        (lambda m: m["layers"][0].update(stride=2), "stride=2 but the spec says 1"),
        (lambda m: m["network"].update(meta=[1]), "meta must be an object"),
        (lambda m: m.update(format_version="1"), "format_version"),
        (lambda m: array_entry(m, "f1", "codes").update(bits=5), "at 5 bits"),
        (lambda m: m["layers"].append(dict(m["layers"][0])), "appears twice"),
    ]
    for edit, match in cases:
        expect_error(tmp_path, rewrite(data, edit), match)


def test_header_bytes_errors(tmp_path, qfile):
    data = qfile[1]
    version, man, payload = split(data)
    hlen = struct.unpack("<I", data[12:16])[0]
    body = data[:-32]
    expect_error(tmp_path, fix(body[:12] + struct.pack("<I", hlen + 10**6) + body[16:]), "runs past the end")
    expect_error(tmp_path, fix(body[:12] + struct.pack("<I", hlen - 8) + body[16:]), "unaligned")
    bad = bytearray(body)
    bad[17] = 0xFF
    expect_error(tmp_path, fix(bytes(bad)), "not valid UTF-8")
    bad[17] = ord("#")
    expect_error(tmp_path, fix(bytes(bad)), "not valid JSON")
    expect_error(tmp_path, assemble(man, payload, version, canonical=False), "canonical")
    text = b'{"a":1,"a":2}'
    text += b" " * (-(16 + len(text)) % 64)
    expect_error(tmp_path, fix(MAGIC + struct.pack("<II", 1, len(text)) + text), "duplicate keys")
    text = b"[" * 100000 + b"]" * 100000
    text += b" " * (-(16 + len(text)) % 64)
    expect_error(tmp_path, fix(MAGIC + struct.pack("<II", 1, len(text)) + text), "not valid JSON")
    text = b'{"x":1e999}' + b" " * 37
    expect_error(tmp_path, fix(MAGIC + struct.pack("<II", 1, len(text)) + text), "out of range")
    bad = bytearray(payload)
    bad[-1] = 1  # padding after the last array must be zero
    a = man["arrays"][-1]
    assert a["offset"] + a["nbytes"] < len(payload)
    expect_error(tmp_path, assemble(man, bytes(bad), version), "non-zero padding")


# --------------------------------------------------------------------------- fuzzing
def _leaves(obj, path=()):
    """Every (path, value) in a JSON tree, containers included."""
    yield path, obj
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        yield from _leaves(v, path + (k,))


_ODD_VALUES = [-1, 0, 1, 2, 3, 7, 64, 2**31, 2**62, 10**30, 1.5, -0.0, "", "x", "float64", "uint16", "QConv2d",
               "Linear", "conv", None, True, False, [], {}, [1, 2], [0, 0, 0], {"type": "relu"}]


def _mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    kind = int(rng.integers(8))
    n = len(data)
    hend = 16 + struct.unpack("<I", data[12:16])[0]
    if kind == 0:  # random bit flips anywhere
        b = bytearray(data)
        for pos in rng.integers(0, n, int(rng.integers(1, 9))):
            b[pos] ^= 1 << int(rng.integers(8))
        return "bit flips", bytes(b)
    if kind == 1:  # truncation
        return "truncation", data[: int(rng.integers(0, n))]
    if kind == 2:  # swap two equal payload regions, checksum fixed up half the time
        size = int(rng.integers(1, 65))
        i, j = sorted(rng.integers(hend, n - 32 - size, 2))
        b = bytearray(data[:-32])
        b[i : i + size], b[j : j + size] = data[j : j + size], data[i : i + size]
        return "swap", fix(bytes(b)) if rng.random() < 0.5 else bytes(b) + data[-32:]
    if kind == 3:  # byte insertions / deletions, checksum fixed up half the time
        pos = int(rng.integers(0, n - 32))
        body = data[:-32]
        if rng.random() < 0.5:
            body = body[:pos] + rng.bytes(int(rng.integers(1, 70))) + body[pos:]
        else:
            body = body[:pos] + body[pos + int(rng.integers(1, 70)) :]
        return "insert/delete", fix(body) if rng.random() < 0.5 else body + data[-32:]
    if kind == 4:  # random bytes in the header, checksum fixed
        b = bytearray(data[:-32])
        for pos in rng.integers(0, hend, int(rng.integers(1, 4))):
            b[pos] = int(rng.integers(256))
        return "header bytes", fix(bytes(b))
    if kind == 5:  # random bytes in the payload, checksum fixed (floats, codes >= K, padding)
        b = bytearray(data[:-32])
        for pos in rng.integers(hend, n - 32, int(rng.integers(1, 4))):
            b[pos] = int(rng.integers(256))
        return "payload bytes", fix(bytes(b))
    # kinds 6, 7: a structured manifest edit, checksum fixed
    version, man, payload = split(data)
    nodes = list(_leaves(man))[1:]
    path, _ = nodes[int(rng.integers(len(nodes)))]
    parent = man
    for k in path[:-1]:
        parent = parent[k]
    if kind == 6 and isinstance(parent, dict) and rng.random() < 0.3:
        del parent[path[-1]]
        what = f"delete {path}"
    else:
        parent[path[-1]] = _ODD_VALUES[int(rng.integers(len(_ODD_VALUES)))]
        what = f"set {path}"
    return what, assemble(man, payload, version, canonical=bool(rng.random() < 0.9))


@pytest.mark.parametrize("which", ["K=100,16", "K=1024,1"])
def test_fuzz_only_model_format_errors(tmp_path, qfile, which):
    """Mutated files either load to a network that saves back to the same bytes, or raise ModelFormatError."""
    if which == "K=100,16":
        net, data = qfile
    else:  # uint16 codes at 10 bits and 1-bit codes of K=1
        net = tiny_net({"c2": 1024, "f1": 1, "f2": 1024}, seed=9)
        data = save(net, tmp_path / "base.qcnn").read_bytes()
    rng = np.random.default_rng(20160627 + len(which))
    p, out = tmp_path / "fuzz.qcnn", tmp_path / "resaved.qcnn"
    loaded = errors = 0
    for i in range(300):
        what, bad = _mutate(data, rng)
        p.write_bytes(bad)
        try:
            got = load(p)
        except ModelFormatError:
            errors += 1
            continue
        except Exception as e:  # pragma: no cover - this is the failure the test looks for
            pytest.fail(f"mutation {i} ({what}) raised {type(e).__name__}: {e}")
        loaded += 1
        assert isinstance(got, Network)
        if bad == data:
            assert_same(net, got)
        # A file that loads is canonical: saving what was read gives the same bytes.
        assert save(got, out, overwrite=True).read_bytes() == bad, what
    assert errors > 2 * loaded, (errors, loaded)  # most mutations must be caught, not merely survived


# --------------------------------------------------------------------------- streaming
def test_load_streams_the_file(tmp_path, monkeypatch):
    """Beyond the arrays it returns, load holds about _IO_CHUNK (1 MiB) of the file at a time: never the whole
    file, nor a whole array's packed codes (floats are read straight into their array)."""
    import tracemalloc


    # Four fc layers whose 4-bit codes take 2 MiB each in the file, 4 MiB each decoded.
    n, rng = 2048, np.random.default_rng(11)
    spec = [{"type": "flatten"}] + [{"type": "fc", "name": f"f{i}", "out": n} for i in range(4)]
    params = {L["name"]: QLinear(rng.standard_normal((n, 16, 1), dtype=np.float32), rng.integers(0, 16, (n, n), dtype=np.uint8),
                                 rng.standard_normal(n, dtype=np.float32)) for L in spec[1:]}
    net = Network("big", (n, 1, 1), spec, params)
    p = save(net, tmp_path / "big.qcnn")
    size = os.path.getsize(p)
    largest = max(a["nbytes"] for a in read_manifest(p)["arrays"])
    monkeypatch.setattr(bitpack, "_CHUNK", 4096)  # smaller unpack temporaries, so the file reading is what is measured
    tracemalloc.start()
    try:
        back = load(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    kept = sum(q.codebooks.nbytes + q.bias.nbytes + _codes_held(q) for q in params.values())
    transient = peak - kept
    assert size > 4 * largest and largest == 2 << 20  # else holding the whole file or an array would not stand out
    assert transient < 1.5 * 2**20, (transient / 2**20, largest / 2**20, size / 2**20)
    for name, q in back.params.items():  # each array has a buffer of its own: C-contiguous, writable, exact
        packed = kernels.pack_linear_codes(params[name].codes, 16) is not None
        for r in ("codebooks", "codes", "bias"):
            a, b = getattr(q, r), getattr(params[name], r)
            # codes packed as read come back unpacked on demand, read-only (as after a forward pass)
            writeable = not (packed and r == "codes")
            assert a.flags.c_contiguous and a.flags.writeable == writeable and a.dtype == b.dtype and np.array_equal(a, b)


def _codes_held(q: QLinear) -> int:
    """Bytes a loaded layer holds for its codes: the packed copy where the kernels pack them as read."""
    packed = kernels.pack_linear_codes(q.codes, q.n_codewords)
    return q.codes.nbytes if packed is None else packed.data.nbytes


@pytest.mark.parametrize("K, out", [(32, 2048), (16, 2047), (256, 33)])
def test_load_packs_fc_codes_as_read(tmp_path, monkeypatch, K, out):
    """An fc layer's codes go from the file into their packed form a slice at a time: the unpacked codes
    never exist whole beside the packed ones (fc6 of AlexNet: 9.4 MB each), the layer computes what the
    saved one computes, and saving it again gives the same bytes. Odd output counts end inside a block."""
    import tracemalloc


    rng = np.random.default_rng(K)
    M = 2048
    q = QLinear(rng.standard_normal((M, K, 1), dtype=np.float32), rng.integers(0, K, (out, M), dtype=np.uint8),
                rng.standard_normal(out, dtype=np.float32))
    if kernels.pack_linear_codes(q.codes, K) is None:
        pytest.skip("the byte-shuffle kernels are not built or the numpy backend runs: nothing is packed")
    net = Network("fc", (M, 1, 1), [{"type": "flatten"}, {"type": "fc", "name": "f", "out": out}], {"f": q})
    p = save(net, tmp_path / "fc.qcnn")
    monkeypatch.setattr(bitpack, "_CHUNK", 4096)
    tracemalloc.start()
    try:
        back = load(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    transient = peak - (q.codebooks.nbytes + q.bias.nbytes + _codes_held(q))
    # about _IO_CHUNK (1 MiB) of the file at a time, as for any load; not the unpacked codes (4 MiB for 2048 outputs)
    assert transient < 1.5 * 2**20, (transient, q.codes.nbytes)
    x = rng.standard_normal((2, M, 1, 1), dtype=np.float32)
    assert np.array_equal(back(x), net(x))
    assert save(back, tmp_path / "again.qcnn").read_bytes() == p.read_bytes()
    assert np.array_equal(back.params["f"].codes, q.codes)


@pytest.mark.parametrize("io_chunk", [None, 16])
def test_fc_code_at_or_above_K_before_packing(tmp_path, monkeypatch, io_chunk):
    """A code >= K in an fc layer whose codes are packed as read is refused by name and index, as in any layer."""
    import qcnn_lite.io.modelfile as mf

    if io_chunk:
        monkeypatch.setattr(mf, "_IO_CHUNK", io_chunk)
    net = tiny_net({"f1": 12})  # 4 bits: 12..15 are representable
    version, man, payload = split(save(net, tmp_path / "f.qcnn").read_bytes())
    a = array_entry(man, "f1", "codes")
    n = math.prod(a["shape"])
    for index in (0, n // 2 + 1, n - 1):
        pl = bytearray(payload)
        byte, hi = a["offset"] + index // 2, index % 2 == 0
        pl[byte] = (pl[byte] & 0x0F) | 0xD0 if hi else (pl[byte] & 0xF0) | 0x0D
        expect_error(tmp_path, assemble(man, bytes(pl), version), f"code 13 at index {index} is >= K=12")


def _change_after_pass_1(monkeypatch, path, change) -> None:
    """Make load's checksum pass succeed on the file as it is, then apply ``change`` to it in place."""
    import qcnn_lite.io.modelfile as mf

    real = mf._check_checksum

    def pass_1_then_change(*args):
        result = real(*args)
        change(path)
        return result

    monkeypatch.setattr(mf, "_check_checksum", pass_1_then_change)


def _overwrite(pos: int, data: bytes):
    def change(path):
        with open(path, "r+b") as f:  # in place: the loader's open file sees it
            f.seek(pos)
            f.write(data)
    return change


def test_file_changed_between_passes(tmp_path, qfile, monkeypatch):
    """Pass 2 must decode the bytes pass 1 checksummed; a file written to in between is refused."""
    net, data = qfile
    _, man, _ = split(data)
    start = 16 + struct.unpack("<I", data[12:16])[0]
    bias = array_entry(man, "f2", "bias")
    last = man["arrays"][-1]
    pad = start + last["offset"] + last["nbytes"]
    assert data[pad] == 0
    cases = [
        (_overwrite(start + bias["offset"], np.float32(0.5).tobytes()), "changed while it was being read"),  # still a valid file
        (_overwrite(pad, b"\x01"), "changed while it was being read"),  # pass 2 would call it bad padding
        (_overwrite(8, struct.pack("<I", 7)), "changed while it was being read"),  # the preamble pass 1 checked
        (_overwrite(17, b"#"), "changed while it was being read"),  # the header no longer parses
        (lambda path: os.truncate(path, len(data) // 2), "truncated while being read"),
        (lambda path: os.truncate(path, 0), "truncated while being read"),
    ]
    p = tmp_path / "m.qcnn"
    for change, match in cases:
        p.write_bytes(data)
        with monkeypatch.context() as m:
            _change_after_pass_1(m, p, change)
            with pytest.raises(ModelFormatError, match=match) as info:
                load(p)
        assert str(p) in str(info.value)
    p.write_bytes(data)
    with monkeypatch.context() as m:
        _change_after_pass_1(m, p, lambda path: path.write_bytes(data))  # same bytes: loads
        assert_same(net, load(p))
    bad = bytearray(data[:-32])
    bad[pad] = 1
    p.write_bytes(fix(bytes(bad)))  # checksummed but bad padding, and nothing changes: the real reason is given
    with monkeypatch.context() as m:
        _change_after_pass_1(m, p, lambda path: None)
        with pytest.raises(ModelFormatError, match="non-zero padding after the last array"):
            load(p)


def test_builtin_sha256_matches_hashlib():
    """The checksum uses CPython's builtin SHA-256 where there is one; it must be SHA-256 exactly."""
    import qcnn_lite.io.modelfile as mf

    rng = np.random.default_rng(5)
    for n in (0, 1, 55, 56, 63, 64, 65, 127, 1000, 100_003):
        data = rng.bytes(n)
        assert mf._sha256(data).digest() == hashlib.sha256(data).digest(), n
        h, view, i = mf._sha256(), memoryview(data), 0
        while i < n:  # fed in uneven pieces, as load does
            k = int(rng.integers(1, 200))
            h.update(view[i : i + k])
            i += k
        assert h.digest() == hashlib.sha256(data).digest(), n


def test_import_does_not_load_openssl():
    """hashlib's import loads OpenSSL's libcrypto (~3.5 MiB resident); loading a model must not need it."""
    import importlib.util
    import subprocess
    import sys

    if not any(importlib.util.find_spec(m) for m in ("_sha2", "_sha256")):
        pytest.skip("this Python has no builtin SHA-256 module; hashlib is the fallback")
    code = ("import sys, numpy, qcnn_lite.io.modelfile\n"
            "print(sorted(m for m in ('_hashlib', 'hashlib', 'secrets') if m in sys.modules))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_io_errors_and_special_files(tmp_path, qfile, monkeypatch):
    """An I/O error while reading is an OSError, not a verdict on the file; a device is not a model file."""
    import qcnn_lite.io.modelfile as mf

    p = tmp_path / "m.qcnn"
    p.write_bytes(qfile[1])

    def eio(*args):
        raise OSError(5, "Input/output error")

    with monkeypatch.context() as m:
        m.setattr(mf, "_check_checksum", eio)
        with pytest.raises(OSError, match="Input/output") as info:
            load(p)
        assert not isinstance(info.value, ModelFormatError)
    if os.path.exists("/dev/null"):
        with pytest.raises(ModelFormatError, match="not a regular file"):
            load("/dev/null")
