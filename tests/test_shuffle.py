"""The byte-shuffle fc kernels: every instruction set against the numpy emulation.

References: ``emulate_sums`` (exact integer sums, q[m, code] added in numpy),
``quantize_tables`` (the 8-bit scheme in numpy) and the float kernel
``kernels._numpy.linear_lut`` (the bound M * scale / 2 per output).
``QCNN_LITE_SIMD_SO=path/to/_lut_simd*.so`` runs these tests on another build
(an AddressSanitizer one, say). The NEON cases of these tests also run on x86-64 hosts,
cross-built and under qemu-user: tests/test_neon_qemu.py.
"""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("QCNN_LITE_SIMD_SO"):  # before _shuffle is imported
    _spec = importlib.util.spec_from_file_location("_lut_simd", os.environ["QCNN_LITE_SIMD_SO"])
    _mod = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_mod)
    sys.modules["qcnn_lite.kernels.simd._lut_simd"] = _mod

from qcnn_lite.kernels import _numpy
from qcnn_lite.kernels import _shuffle as sh

SIMD_DIR = Path(sh.__file__).parent / "simd"
HAVE = sh.available_isas()
pytestmark = pytest.mark.skipif(not HAVE, reason="the _lut_simd extension is not built")


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def _isa_param(isa):
    return pytest.param(isa, marks=pytest.mark.skipif(isa not in HAVE, reason=f"this CPU/build has no {isa}"))


ISA_PARAMS = [_isa_param(i) for i in sh.ISAS]


def _case(rng, M, K, n_out, full=False):
    q = np.full((M, K), 255, np.uint8) if full else rng.integers(0, 256, (M, K), dtype=np.uint8)
    codes = rng.integers(0, K, (n_out, M)).astype(np.uint8 if K <= 256 else np.uint16)
    return q, codes


def test_isas_match_the_cpu():
    flags = _cpu_flags()
    assert "scalar" in HAVE
    if "avx2" in flags and "fma" in flags:
        assert "avx2" in HAVE
    assert ("avx512vbmi" in HAVE) == ({"avx512f", "avx512bw", "avx512vbmi"} <= flags)
    if os.uname().machine == "aarch64":
        assert "neon" in HAVE


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("K", [2, 5, 16, 17, 32, 33, 64, 100, 128, 129, 256])
@pytest.mark.parametrize("M,n_out", [(1, 1), (3, 33), (257, 70), (513, 65)])
def test_sums_exact(isa, K, M, n_out):
    rng = np.random.default_rng(K * 1000 + M)
    q, codes = _case(rng, M, K, n_out)
    packed = sh.pack_codes(codes, K, isa)
    np.testing.assert_array_equal(sh.accumulate(q, packed), sh.emulate_sums(q, codes))
    if isa != "scalar":  # the scalar path runs any packing: the reference inside the extension
        np.testing.assert_array_equal(sh.accumulate(q, packed, "scalar"), sh.emulate_sums(q, codes))


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("K", [16, 32, 256])
@pytest.mark.parametrize("M", [257, 600, 1000, 70000])
def test_overflow_adversarial(isa, K, M):
    """Every entry 255: the 16-bit partial sums must be flushed before they wrap."""
    rng = np.random.default_rng(M)
    q, codes = _case(rng, M, K, 33, full=True)
    got = sh.accumulate(q, sh.pack_codes(codes, K, isa))
    np.testing.assert_array_equal(got, np.full(33, 255 * M))


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("K", [16, 17, 32, 64])
def test_compiled_quantize_matches_numpy(isa, K):
    rng = np.random.default_rng(K)
    for lut in (
        rng.standard_normal((37, K), dtype=np.float32) * 3,
        np.round(rng.standard_normal((20, K)) * 4).astype(np.float32),  # many exact half steps
        np.full((5, K), 2.5, np.float32),  # zero range: scale 1, q = 0
    ):
        q, scale, off = sh.quantize_tables(lut)
        q2, scale2, off2 = sh.quantize_compiled(lut, isa)
        np.testing.assert_array_equal(q2, q)
        assert np.float32(scale2) == np.float32(scale)
        assert off2 == pytest.approx(off, rel=1e-12, abs=1e-9)


def test_quantize_scheme():
    rng = np.random.default_rng(0)
    lut = rng.standard_normal((50, 32), dtype=np.float32)
    q, scale, off = sh.quantize_tables(lut)
    mn = lut.min(1)
    assert q.dtype == np.uint8 and q.min() == 0 and q.max() == 255
    assert (q.min(1) == 0).all()  # each sub-space's minimum is its offset
    assert off == pytest.approx(float(mn.astype(np.float64).sum()))
    err = q * np.float32(scale) + mn[:, None] - lut
    assert np.abs(err).max() <= scale / 2 * (1 + 1e-5) + 1e-6


def _layer(rng, M, K, d, n_out, n=2):
    x = rng.standard_normal((n, M * d), dtype=np.float32)
    books = rng.standard_normal((M, K, d), dtype=np.float32)
    codes = rng.integers(0, K, (n_out, M)).astype(np.uint8)
    bias = rng.standard_normal(n_out, dtype=np.float32)
    return x, books, codes, bias


def _bound(x, books):
    """M * scale / 2 per input row (+ float32 rounding of the sums), from numpy's tables."""
    M, K, _ = books.shape
    luts = _numpy.linear_tables(x, books).reshape(x.shape[0], M, K)
    out = []
    for lut in luts:
        _, scale, _ = sh.quantize_tables(lut)
        out.append(M * scale / 2 * (1 + 1e-4) + 1e-5 * (np.abs(lut).max(1).sum() + 1))
    return np.array(out)[:, None]


@pytest.mark.parametrize("M,K,d,n_out", [(1, 2, 3, 1), (64, 16, 4, 100), (37, 32, 2, 33), (20, 256, 1, 5), (9, 17, 5, 7)])
def test_emulation_within_bound_of_float_tables(M, K, d, n_out):
    rng = np.random.default_rng(M + K)
    x, books, codes, bias = _layer(rng, M, K, d, n_out)
    ref = _numpy.linear_lut(x, books, codes, bias)
    assert (np.abs(sh.emulate_linear(x, books, codes, bias) - ref) <= _bound(x, books)).all()


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("M,K,d,n_out", [(1, 2, 3, 1), (64, 16, 4, 100), (37, 32, 2, 33), (20, 256, 1, 5),
                                         (9, 17, 5, 7), (300, 16, 1, 65), (48, 128, 4, 31)])
def test_linear_lut_u8(isa, M, K, d, n_out):
    rng = np.random.default_rng(M * K + d)
    x, books, codes, bias = _layer(rng, M, K, d, n_out, n=3)
    packed = sh.pack_codes(codes, K, isa)
    y = sh.linear_lut_u8(x, books, packed, bias)
    assert y.shape == (3, n_out) and y.dtype == np.float32
    ref = _numpy.linear_lut(x, books, codes, bias)
    assert (np.abs(y - ref) <= _bound(x, books)).all()
    # the C++ table may round an entry to the other side of a half step: at most a few steps of `scale` off
    emu = sh.emulate_linear(x, books, codes, bias)
    steps = np.abs(y - emu) / np.array([sh.quantize_tables(t)[1] for t in
                                         _numpy.linear_tables(x, books).reshape(3, M, K)])[:, None]
    assert steps.max() <= max(2.0, 0.02 * M)
    np.testing.assert_array_equal(y[1:2], sh.linear_lut_u8(x[1:2], books, packed, bias))  # rows are independent


@pytest.mark.parametrize("isa", sh.ISAS)
@pytest.mark.parametrize("K", [2, 16, 17, 256])
@pytest.mark.parametrize("M,n_out", [(1, 1), (3, 33), (257, 70)])
def test_unpack_inverts_pack(isa, K, M, n_out):
    """Packing is pure layout (no kernel needed), and unpack_codes gives the codes back exactly."""
    codes = np.random.default_rng(K + M).integers(0, K, (n_out, M)).astype(np.uint8)
    back = sh.unpack_codes(sh.pack_codes(codes, K, isa))
    assert back.dtype == np.uint8 and not back.flags.writeable
    np.testing.assert_array_equal(back, codes)


@pytest.mark.parametrize("isa", sh.ISAS)
@pytest.mark.parametrize("K", [2, 16, 17, 256])
@pytest.mark.parametrize("M,n_out", [(1, 1), (3, 33), (257, 70)])
def test_packer_in_slices_equals_pack_codes(isa, K, M, n_out):
    """Rows given a few at a time, slice edges anywhere in a block, pack to the very bytes of pack_codes."""
    rng = np.random.default_rng(K * M + n_out)
    codes = rng.integers(0, K, (n_out, M)).astype(np.uint8)
    whole = sh.pack_codes(codes, K, isa)
    for cuts in ([], [1], sorted(rng.integers(0, n_out + 1, 5).tolist())):
        packer = sh.CodePacker(n_out, M, K, isa)
        for a, b in zip([0, *cuts], [*cuts, n_out]):
            packer.add(codes[a:b])  # empty slices too
        got = packer.finish()
        np.testing.assert_array_equal(got.data, whole.data)
        assert (got.n_out, got.n_subspaces, got.K, got.isa, got.block) == (n_out, M, K, isa, whole.block)
        assert not got.data.flags.writeable


def test_packer_checks_what_it_is_given():
    packer = sh.CodePacker(10, 4, 16, "scalar")
    with pytest.raises(ValueError, match="codes must be < K=16"):
        packer.add(np.full((2, 4), 16, np.uint8))
    with pytest.raises(ValueError, match="sub-spaces"):
        packer.add(np.zeros((2, 5), np.uint8))
    packer.add(np.zeros((6, 4), np.uint8))
    with pytest.raises(ValueError, match="packed of 10"):
        packer.finish()
    with pytest.raises(ValueError, match="12 code rows for 10 outputs"):
        packer.add(np.zeros((6, 4), np.uint8))


def test_qlinear_from_packed_codes(rng=np.random.default_rng(3)):
    """A layer built on packed codes (as a model file loads it) computes what the layer on the codes does."""
    from qcnn_lite import kernels
    from qcnn_lite.nn.layers import QLinear

    codes = rng.integers(0, 32, (70, 12)).astype(np.uint8)
    books, bias = rng.standard_normal((12, 32, 4)).astype(np.float32), rng.standard_normal(70).astype(np.float32)
    packed = kernels.pack_linear_codes(codes, 32)
    if packed is None:
        pytest.skip("the numpy backend runs: nothing is packed")
    q = QLinear.from_packed(books, packed, bias)
    assert q.out_features == 70 and q.in_features == 48 and q._codes is None
    x = rng.standard_normal((2, 48)).astype(np.float32)
    np.testing.assert_array_equal(q(x), QLinear(books, codes, bias)(x))
    assert q._codes is None  # the forward pass used the packed codes as they were
    np.testing.assert_array_equal(q.codes, codes)
    with pytest.raises(ValueError, match="sub-spaces"):
        QLinear.from_packed(books[:6], packed, bias)
    with pytest.raises(ValueError, match="bias"):
        QLinear.from_packed(books, packed, bias[:5])


def test_qlinear_keeps_only_the_packed_codes(rng=np.random.default_rng(0)):
    """After the first compiled forward pass QLinear drops its unpacked codes; reading them unpacks."""
    from qcnn_lite import kernels
    from qcnn_lite.nn.layers import QLinear

    codes = rng.integers(0, 32, (70, 12)).astype(np.uint8)
    q = QLinear(rng.standard_normal((12, 32, 4)).astype(np.float32), codes, np.zeros(70, np.float32))
    x = rng.standard_normal((2, 48)).astype(np.float32)
    y = q(x)
    if kernels.backend() != "numpy" and sh.available_isas():
        assert q._codes is None
    np.testing.assert_array_equal(q.codes, codes)  # unpacked on demand
    np.testing.assert_array_equal(q(x), y)
    q.table_dtype = "float32"
    assert np.allclose(q(x), x @ q.dense_weight().T, rtol=1e-4, atol=1e-4)


def test_bad_codes_rejected():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 16, (10, 8)).astype(np.uint8)
    codes[3, 5] = 16
    with pytest.raises(ValueError, match="codes must be < K=16"):
        sh.pack_codes(codes, 16, "scalar")
    with pytest.raises(ValueError, match="K must be"):
        sh.pack_codes(codes, 300, "scalar")
    with pytest.raises(ValueError, match="uint8/uint16"):
        sh.pack_codes(codes.astype(np.int64), 32, "scalar")
    with pytest.raises(ValueError, match="unknown instruction set"):
        sh.pack_codes(codes, 32, "sse9")
    packed = sh.pack_codes(codes, 32, "scalar")
    assert not packed.data.flags.writeable
    with pytest.raises(ValueError, match="cannot run on"):
        sh.accumulate(np.zeros((8, 32), np.uint8), sh.pack_codes(codes, 32, "avx512vbmi"), "neon")
    with pytest.raises(ValueError, match="pack_codes"):
        sh.accumulate(np.zeros((8, 32), np.uint8), codes)
    with pytest.raises(ValueError, match="q must have shape"):
        sh.accumulate(np.zeros((8, 16), np.uint8), packed)
    x = np.zeros((1, 8 * 4), np.float32)
    with pytest.raises(ValueError, match="do not match"):
        sh.linear_lut_u8(x, np.zeros((8, 16, 4), np.float32), packed, np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="features"):
        sh.linear_lut_u8(x[:, :-1], np.zeros((8, 32, 4), np.float32), packed, np.zeros(10, np.float32))


def test_extension_checks_lengths():
    """The extension trusts no shape: wrong buffer lengths and absurd M are ValueErrors, not reads."""
    ext = sh._lut_simd
    out = np.empty(4, np.int32)
    q = np.zeros((3, 32), np.uint8)
    with pytest.raises(ValueError, match="codes has"):
        ext.accumulate("scalar", q, 3, 32, np.zeros(10, np.uint8), 4, 32, out)
    with pytest.raises(ValueError, match="M <="):
        ext.accumulate("scalar", q, 16843010, 32, np.zeros(10, np.uint8), 4, 32, out)
    with pytest.raises(ValueError, match="blocks of"):
        ext.accumulate("avx2" if "avx2" in HAVE else "neon", q, 3, 32, np.zeros(3 * 7, np.uint8), 4, 7, out)
    with pytest.raises(ValueError, match="not available|unknown"):
        ext.accumulate("avx512vbmi" if "avx512vbmi" not in HAVE else "nope", q, 3, 32, np.zeros(96, np.uint8), 4, 32, out)


def test_target_env(monkeypatch):
    monkeypatch.setenv("QCNN_LITE_TARGET", "v1")  # the baseline alias: NEON is part of the aarch64 baseline
    assert sh.default_isa() == ("neon" if "neon" in HAVE else "scalar")
    monkeypatch.setenv("QCNN_LITE_TARGET", "bogus")
    with pytest.raises(ValueError, match="QCNN_LITE_TARGET"):
        sh.default_isa()
    if "avx2" in HAVE:
        monkeypatch.setenv("QCNN_LITE_TARGET", "v3")
        assert sh.default_isa() == "avx2"
        assert sh.pack_codes(np.zeros((3, 4), np.uint8), 32).block == 32
        monkeypatch.setenv("QCNN_LITE_TARGET", "v4")
        assert sh.default_isa() == ("avx512vbmi" if "avx512vbmi" in HAVE else "avx2")
    monkeypatch.delenv("QCNN_LITE_TARGET")
    assert sh.default_isa() == next(i for i in ("avx512vbmi", "avx2", "neon", "scalar") if i in HAVE)


def _cross_tools():
    for cxx in ("aarch64-linux-gnu-g++", "aarch64-linux-gnu-g++-12"):
        if shutil.which(cxx) and shutil.which("qemu-aarch64-static"):
            return cxx
    return None


@pytest.mark.slow
@pytest.mark.skipif(_cross_tools() is None, reason="needs aarch64-linux-gnu-g++ and qemu-aarch64-static "
                    "(apt-get install g++-aarch64-linux-gnu qemu-user-static)")
def test_neon_under_qemu(tmp_path):
    """The same kernel header, cross-compiled for aarch64: NEON sums == scalar sums == direct sums."""
    exe = tmp_path / "neon_check"
    subprocess.run([_cross_tools(), "-O2", "-static", "-std=c++17", str(SIMD_DIR / "neon_check.cpp"), "-o", str(exe)],
                   check=True, capture_output=True, timeout=300)
    run = subprocess.run(["qemu-aarch64-static", str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("ok ") and "(neon)" in run.stdout
