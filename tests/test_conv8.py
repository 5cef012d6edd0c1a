"""Integer conv tables: C++ kernels and Pythran kernels against the exact numpy emulation,
every precision against the float reference, overflow and validation.

``QCNN_LITE_SIMD_SO`` / ``QCNN_LITE_KERNELS_SO`` run these tests on other builds of the
extensions (``make test-asan`` uses them for AddressSanitizer builds); ``kernels._targets``
loads the Pythran one itself.
"""
import importlib.util
import os
import sys

import numpy as np
import pytest

for _env, _name in (("QCNN_LITE_SIMD_SO", "qcnn_lite.kernels.simd._lut_simd"),):
    if os.environ.get(_env):  # before qcnn_lite.kernels is imported
        _spec = importlib.util.spec_from_file_location(_name.rsplit(".", 1)[1], os.environ[_env])
        _mod = importlib.util.module_from_spec(_spec)
        _spec.loader.exec_module(_mod)
        sys.modules[_name] = _mod

from conftest import conv_case, rel_err
from qcnn_lite import kernels
from qcnn_lite.kernels import _convq, _numpy, geometry
from qcnn_lite.nn.layers import QConv2d

ISAS = _convq.conv_isas()
needs_simd = pytest.mark.skipif(not ISAS, reason="the simd extension (integer conv kernels) is not built")
HAVE_PYTHRAN = "pythran" in kernels.available_backends()
needs_pythran = pytest.mark.skipif(not HAVE_PYTHRAN, reason="Pythran kernels not built")
BITS = {"int8": 8, "int16": 16}

# (C, H, W, Ct, k, stride, padding, groups, d, K)
SHAPES = {
    "alexnet-conv2": (96, 27, 27, 12, 5, 1, 2, 2, 8, 128),
    "alexnet-conv3": (256, 13, 13, 6, 3, 1, 1, 1, 8, 128),
    "mini-conv": (32, 11, 11, 8, 3, 1, 1, 1, 4, 64),
    "1x1-map": (16, 1, 1, 5, 1, 1, 0, 1, 4, 16),
    "1x1-map-3x3-pad1": (16, 1, 1, 5, 3, 1, 1, 1, 4, 16),
    "stride>kernel": (8, 11, 13, 3, 2, 3, 0, 1, 2, 16),
    "stride>kernel-padded": (8, 10, 9, 3, 2, 5, 1, 1, 4, 16),
    "odd-sizes": (12, 7, 10, 6, 3, 2, 1, 3, 2, 16),
    "one-output": (8, 9, 9, 1, 3, 1, 1, 1, 4, 16),
    "groups=2": (16, 8, 9, 6, 3, 1, 1, 2, 4, 16),
    "d=3-stride4": (3, 23, 23, 4, 11, 4, 0, 1, 3, 16),
    "d=5-generic": (10, 9, 8, 3, 3, 1, 1, 1, 5, 16),
    "K=2": (8, 9, 9, 4, 3, 1, 1, 1, 4, 2),
    "K=16": (16, 9, 9, 4, 3, 1, 1, 1, 4, 16),
    "K=256": (16, 9, 9, 4, 3, 1, 1, 2, 4, 256),
    "K=512-uint16": (16, 9, 9, 4, 3, 2, 1, 1, 8, 512),
}


def _case(rng, *shape, n=2, code_dtype=None):
    return conv_case(rng, *shape, n=n, code_dtype=code_dtype)


def _scales(x, books, codes, stride, padding, groups, bits, mode):
    """(n, groups) table scales from the emulation."""
    _, kh, kw, _ = codes.shape
    cg = x.shape[1] // groups
    return np.array([[_convq.quantized_table(xi[g * cg:(g + 1) * cg], books, kh, kw, stride, padding, bits, mode)[1]
                      for g in range(groups)] for xi in x], np.float32)


# -- the integer tables: compiled == emulation, within the stated tolerance -----------------
# The generic kernels multiply and add as the emulation does: bit for bit. The AVX2/AVX-512 ones
# sum the products with FMA: a product may differ in its last bits, so an entry whose t/s lies
# that close to a half-integer rounds the other way (off by one), the max (exact scale) by float
# rounding; the sums of given entries stay exact (test_adversarial_tables_sum_exactly).
FLIP_RATE = 1e-3  # largest share of entries off by one tolerated (seen: about 1e-5)


def _assert_table_close(got, want, gs, ws, isa):
    if isa == "generic":
        assert np.float32(gs) == ws
        np.testing.assert_array_equal(got, want)
        return
    assert abs(np.float32(gs) - ws) <= 1e-5 * ws
    diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
    assert diff.max() <= 1 and diff.mean() <= FLIP_RATE


def _assert_conv_close(got, want, scales, out_per_group, isa):
    """Outputs: at most a few entries of each sum off by one, i.e. within 3 s of the emulation."""
    if isa == "generic":
        np.testing.assert_array_equal(got, want)
        return
    s = np.repeat(scales, out_per_group, axis=1)[:, :, None, None]
    assert (np.abs(got - want) <= 3 * s + 1e-5 * np.abs(want).max()).all()


@needs_simd
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("mode", _convq.SCALE_MODES)
@pytest.mark.parametrize("name", ["alexnet-conv2", "stride>kernel-padded", "odd-sizes", "d=3-stride4", "d=5-generic",
                                  "K=256"])
def test_compiled_table_is_the_emulation(isa, bits, mode, name, rng):
    x, books, codes, _, s, p, g = _case(rng, *SHAPES[name], n=1)
    _, kh, kw, _ = codes.shape
    xg = x[0, : x.shape[1] // g]
    want, ws = _convq.quantized_table(xg, books, kh, kw, s, p, bits, mode)
    got, gs = _convq.compiled_table(xg, books, kh, kw, s, p, bits, mode, isa)
    _assert_table_close(got, want, gs, ws, isa)
    qmax = _convq.qmax_of(bits, kh * kw * books.shape[0])
    assert np.abs(want).max() <= qmax and np.abs(got).max() <= qmax
    if mode == "exact":
        assert np.abs(want).max() == qmax and np.abs(got).max() == qmax  # the largest entry maps to qmax


@pytest.mark.skipif(not {"avx2", "avx512bw"} <= set(ISAS), reason="needs the AVX2 and AVX-512 kernels")
@pytest.mark.parametrize("name", ["alexnet-conv2", "alexnet-conv3", "mini-conv", "K=256", "d=5-generic"])
def test_pruned_max_is_the_full_max(name, rng):
    """The AVX-512 exact scale skips pixel blocks by their Cauchy-Schwarz bound; the AVX2 one computes
    every product, the same FMA sequence: the same scale and table, bit for bit."""
    x, books, codes, _, s, p, g = _case(rng, *SHAPES[name], n=1)
    _, kh, kw, _ = codes.shape
    for xg in (x[0, : x.shape[1] // g], np.maximum(x[0, : x.shape[1] // g], 0) ** 3):  # also sparse, heavy-tailed
        a, sa = _convq.compiled_table(xg, books, kh, kw, s, p, 8, "exact", "avx2")
        b, sb = _convq.compiled_table(xg, books, kh, kw, s, p, 8, "exact", "avx512bw")
        assert sa == sb
        np.testing.assert_array_equal(a, b)


@needs_simd
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("table_dtype", ["int8", "int16"])
@pytest.mark.parametrize("name", list(SHAPES))
def test_compiled_conv_is_the_emulation(isa, table_dtype, name, rng):
    args = _case(rng, *SHAPES[name])
    bits = BITS[table_dtype]
    want = _convq.conv2d_int(*args, bits=bits)
    scales = np.empty((args[0].shape[0], args[6]), np.float32)
    got = _convq.conv2d_compiled(*args, bits=bits, isa=isa, scales=scales)
    assert got.shape == want.shape and got.dtype == np.float32
    want_scales = _scales(*args[:3], *args[4:], bits, _convq.DEFAULT_SCALE_MODE)
    if isa == "generic":
        np.testing.assert_array_equal(scales, want_scales)
    else:  # the exact scale's max is taken over FMA products: float rounding apart
        np.testing.assert_allclose(scales, want_scales, rtol=1e-5)
    _assert_conv_close(got, want, scales, args[2].shape[0] // args[6], isa)


@needs_simd
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("tile_bytes", [1, 3000, 1 << 30])
@pytest.mark.parametrize("name", ["alexnet-conv3", "odd-sizes", "K=512-uint16", "d=5-generic"])
def test_tiled_sub_spaces_are_the_emulation(isa, tile_bytes, name, rng):
    """Tables past tile_bytes run in tiles of sub-spaces (1: one sub-space a tile): the same outputs
    as the whole table, bit for bit, and those of the emulation within tolerance."""
    args = _case(rng, *SHAPES[name])
    for bits in (8, 16):
        want = _convq.conv2d_int(*args, bits=bits, scale_mode="exact")
        scales = np.empty((args[0].shape[0], args[6]), np.float32)
        whole = _convq.conv2d_compiled(*args, bits=bits, scale_mode="exact", isa=isa, scales=scales)
        got = _convq.conv2d_compiled(*args, bits=bits, scale_mode="exact", isa=isa, tile_bytes=tile_bytes)
        np.testing.assert_array_equal(got, whole)
        _assert_conv_close(got, want, scales, args[2].shape[0] // args[6], isa)


@needs_pythran
@pytest.mark.parametrize("table_dtype", ["int8", "int16"])
@pytest.mark.parametrize("mode", _convq.SCALE_MODES)
@pytest.mark.parametrize("name", ["alexnet-conv2", "1x1-map-3x3-pad1", "stride>kernel", "odd-sizes", "K=2",
                                  "K=512-uint16"])
def test_pythran_conv_is_the_emulation(table_dtype, mode, name, rng):
    from qcnn_lite.kernels import _compiled

    x, books, codes, bias, s, p, g = _case(rng, *SHAPES[name])
    # Dyadic inputs (few mantissa bits): every product and partial sum is exact in float32,
    # so the tables agree bit for bit even where the C++ compiler contracts the products
    # into FMAs (the -march=x86-64-v3/v4 builds of the Pythran module may).
    x = (rng.integers(-8, 9, x.shape) / 4).astype(np.float32)
    books = (rng.integers(-8, 9, books.shape) / 8).astype(np.float32)
    bits = BITS[table_dtype]
    want = _convq.conv2d_int(x, books, codes, bias, s, p, g, bits=bits, scale_mode=mode)
    got = _compiled.conv2d_int_pythran(x, books, codes, bias, s, p, g, bits=bits, scale_mode=mode)
    assert rel_err(got, want) < 1e-5


# -- every precision against the float reference ---------------------------------------
@pytest.mark.parametrize("backend", ["numpy", pytest.param("pythran", marks=needs_pythran)])
@pytest.mark.parametrize("table_dtype", QConv2d.TABLE_DTYPES)
@pytest.mark.parametrize("name", list(SHAPES))
def test_precision_against_float_reference(backend, table_dtype, name, rng):
    args = _case(rng, *SHAPES[name])
    x, books, codes, bias, s, p, g = args
    ref = _numpy.conv2d_lut(*args)
    previous = kernels.backend()
    try:
        kernels.set_backend(backend)
        got = kernels.conv2d_lut(*args, table_dtype=table_dtype)
    finally:
        kernels.set_backend(previous)
    assert got.shape == ref.shape and got.dtype == np.float32
    if table_dtype == "float32":
        assert rel_err(got, ref) < 1e-5
    elif table_dtype == "int16":
        assert rel_err(got, ref) < 1e-3
    else:
        # each entry is off by at most s/2, an output by at most n_items * s/2 (plus float rounding)
        n_items = codes.shape[1] * codes.shape[2] * codes.shape[3]
        sc = _scales(x, books, codes, s, p, g, 8, "bound")  # (n, groups)
        bound = np.repeat(sc, codes.shape[0] // g, axis=1)[:, :, None, None] * (n_items / 2)
        err = np.abs(got - ref)
        assert (err <= bound * 1.0001 + 1e-4 * np.abs(ref).max()).all()


@pytest.mark.parametrize("backend", ["numpy", pytest.param("pythran", marks=needs_pythran)])
@pytest.mark.parametrize("table_dtype", QConv2d.TABLE_DTYPES)
def test_relu_and_uint16_codes(backend, table_dtype, rng):
    x, books, codes, bias, s, p, g = _case(rng, *SHAPES["groups=2"], n=3)
    previous = kernels.backend()
    try:
        kernels.set_backend(backend)
        y = kernels.conv2d_lut(x, books, codes, bias, s, p, g, table_dtype=table_dtype)
        r = kernels.conv2d_lut(x, books, codes, bias, s, p, g, table_dtype=table_dtype, relu=True)
        u = kernels.conv2d_lut(x, books, codes.astype(np.uint16), bias, s, p, g, table_dtype=table_dtype)
    finally:
        kernels.set_backend(previous)
    np.testing.assert_array_equal(r, np.maximum(y, 0))
    np.testing.assert_array_equal(u, y)


def test_scale_modes(rng):
    """exact scales are never larger than the Cauchy-Schwarz bound, and both keep |q| <= qmax."""
    x, books, codes, _, s, p, g = _case(rng, *SHAPES["alexnet-conv2"], n=1)
    xg = x[0, :48]
    qb, sb = _convq.quantized_table(xg, books, 5, 5, s, p, 8, "bound")
    qe, se = _convq.quantized_table(xg, books, 5, 5, s, p, 8, "exact")
    assert se <= sb and np.abs(qb).max() <= 127 and np.abs(qe).max() == 127
    zero, sz = _convq.quantized_table(np.zeros_like(xg), books, 5, 5, s, p, 8, "bound")
    assert sz == 1 and not zero.any()  # an all-zero image: no division by zero


# -- overflow: the sums are exact at the bound ----------------------------------------------
def _adversarial(rng, bits, kh, kw, M, K, C, H, W, stride, padding, Ct=3):
    d = C // M
    OH, OW, Hq, Wq = geometry.conv_geometry(H, W, kh, kw, stride, padding)
    qmax = _convq.qmax_of(bits, kh * kw * M)
    SP = stride * stride * Hq * Wq
    sign = np.where(rng.random((M * K, SP)) < 0.5, -1, 1)
    q = (sign * qmax).astype(np.int8 if bits == 8 else np.int16)
    q[0::2] = qmax   # codeword 0 (even rows at K = 2): all +qmax
    q[1::2] = -qmax  # codeword 1: all -qmax
    codes = np.zeros((Ct, kh, kw, M), np.uint8)
    codes[1] = 1
    codes[2] = rng.integers(0, K, codes[2].shape)
    return q, codes, d, qmax


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("geom", [(1, 2, 129, 2, 129, 4, 5, 1, 0), (3, 3, 12, 2, 24, 6, 7, 2, 1),
                                  (5, 5, 6, 2, 48, 9, 9, 1, 2)])
def test_adversarial_tables_sum_exactly(bits, geom, rng):
    kh, kw, M, K, C, H, W, stride, padding = geom
    q, codes, d, qmax = _adversarial(rng, bits, kh, kw, M, K, C, H, W, stride, padding)
    n_items = kh * kw * M
    want = _convq.table_sums(q, codes, H, W, stride, padding)
    assert (want[0] == n_items * qmax).all() and (want[1] == -n_items * qmax).all()
    assert n_items * qmax <= (32767 if bits == 8 else 2**31 - 1)
    for isa in ISAS:
        for mb in (None, 1, 5):  # whole table, tiles of 1 and 5 sub-spaces
            got = _convq.compiled_sums(q, codes, C, H, W, d, stride, padding, bits, isa, mb)
            np.testing.assert_array_equal(got, want, err_msg=f"{isa} tiles of {mb}")
    if HAVE_PYTHRAN:
        from qcnn_lite.kernels import _pythran

        OH, OW, Hq, Wq = geometry.conv_geometry(H, W, kh, kw, stride, padding)
        out = np.empty((codes.shape[0], OH, OW), np.float32)
        acc = np.empty(OH * Wq, np.int16 if bits == 8 else np.int32)
        _pythran.conv_int_accumulate(q, codes, np.zeros(codes.shape[0], np.float32), np.float32(1), stride, OH, OW,
                                     Wq, acc, out)
        np.testing.assert_array_equal(out, want.reshape(-1, OH, Wq)[:, :, :OW].astype(np.float32))


# -- validation and the layer API --------------------------------------------------------------
@pytest.mark.parametrize("table_dtype", ["int8", "int16"])
@pytest.mark.parametrize("backend", ["numpy", pytest.param("pythran", marks=needs_pythran)])
def test_out_of_range_codes_stop_before_any_kernel(table_dtype, backend, rng, monkeypatch):
    x, books, codes, bias, s, p, g = _case(rng, *SHAPES["groups=2"])
    codes[1, 2, 0, 1] = 16  # K = 16

    def reached(*a, **k):
        raise AssertionError("a kernel ran on invalid input")

    previous = kernels.backend()
    kernels.set_backend(backend)
    try:
        monkeypatch.setattr(kernels.dispatch.impl(), "conv2d_lut", reached)
        monkeypatch.setattr(_convq, "conv2d_compiled", reached)
        monkeypatch.setattr(_convq, "conv2d_int", reached)
        with pytest.raises(ValueError, match="codes must be < K"):
            kernels.conv2d_lut(x, books, codes, bias, s, p, g, table_dtype=table_dtype)
        with pytest.raises(ValueError, match="table_dtype"):
            kernels.conv2d_lut(x, books, codes % 16, bias, s, p, g, table_dtype="int4")
        with pytest.raises(ValueError, match="scale_mode"):
            kernels.conv2d_lut(x, books, codes % 16, bias, s, p, g, table_dtype=table_dtype, scale_mode="max")
    finally:
        kernels.set_backend(previous)


@needs_simd
def test_compiled_entries_check_shapes_and_codes(rng):
    q, codes, d, _ = _adversarial(rng, 8, 3, 3, 12, 2, 24, 6, 7, 2, 1)
    bad = codes.copy()
    bad[0, 0, 0, 0] = 2
    with pytest.raises(ValueError, match="K=2"):
        _convq.compiled_sums(q, bad, 24, 6, 7, d, 2, 1, 8)
    with pytest.raises(ValueError, match="bytes"):
        _convq.compiled_sums(q[:-1], codes, 24, 6, 7, d, 2, 1, 8)
    with pytest.raises(ValueError, match="instruction set"):
        _convq.compiled_sums(q, codes, 24, 6, 7, d, 2, 1, 8, isa="sse9")


def test_qconv_table_dtype_default_and_setter(rng):
    books = rng.standard_normal((6, 16, 8), dtype=np.float32)
    q = QConv2d(books, rng.integers(0, 16, (4, 5, 5, 6)), None, 1, 2)
    assert q.table_dtype == "int8" and QConv2d.TABLE_DTYPES[0] == "int8"  # qmax = min(127, 32767 // 150)
    for dt in QConv2d.TABLE_DTYPES:
        q.table_dtype = dt
        assert q.table_dtype == dt
    with pytest.raises(ValueError, match="table_dtype"):
        q.table_dtype = "uint8"
    big = QConv2d(rng.standard_normal((120, 4, 1), dtype=np.float32), rng.integers(0, 4, (2, 3, 3, 120)), None)
    assert big.table_dtype == "int16"  # 32767 // 1080 = 30 < INT8_MIN_QMAX: too coarse for int8
    assert QConv2d(books, q.codes, None, 1, 2, table_dtype="float32").table_dtype == "float32"


def test_qconv_runs_its_table_dtype(rng):
    from qcnn_lite.nn import table_policy

    x, books, codes, bias, s, p, g = _case(rng, *SHAPES["mini-conv"])
    layer = QConv2d(books, codes, bias, s, p, g)
    for dt in ("int8", "int16"):
        layer.table_dtype = dt
        assert layer.uses_tables(*x.shape[2:])
        want = kernels.conv2d_lut(x, books, codes, bias, s, p, g, table_dtype=dt, scale_mode=table_policy.CONV_SCALE_MODE)
        np.testing.assert_array_equal(layer(x), want)


def test_profile_conv_splits_a_call_into_its_phases(rng):
    """bench-layers --profile: a layer on integer tables reports each phase; the others only the call."""
    x, books, codes, bias, s, p, g = conv_case(rng, 16, 13, 13, 8, 3, 1, 1, 1, 4, 32, n=1)
    q = QConv2d(books, codes, bias, s, p, g, table_dtype="int8")
    prof = kernels.profile_conv(q, x, repeat=3)
    assert prof["call"] > 0
    if _convq.conv_isas() and q.uses_tables(13, 13):
        assert set(prof) == {"call", "other", *_convq.PHASES}
        assert all(prof[k] >= 0 for k in _convq.PHASES)
    q.table_dtype = "float32"
    assert set(kernels.profile_conv(q, x, repeat=3)) == {"call"}
