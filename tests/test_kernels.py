"""The look-up-table kernels: compiled (Pythran) against the numpy reference and torch, and input validation.

``QCNN_LITE_KERNELS_SO=path/to/_pythran_<target>*.so`` runs these tests on another build
of the kernels (``make test-asan`` uses it for an AddressSanitizer build; ``kernels._targets``
loads that file instead of the installed ones). ``QCNN_LITE_TARGET=baseline`` runs them on
the portable build (``make test`` does once).
"""
import numpy as np
import pytest

from conftest import conv_case, rel_err
from qcnn_lite import kernels
from qcnn_lite.kernels import _numpy

HAVE_PYTHRAN = "pythran" in kernels.available_backends()
needs_pythran = pytest.mark.skipif(
    not HAVE_PYTHRAN, reason="Pythran kernels not built (reinstall with pythran and a C++ compiler)"
)
BACKENDS = ["numpy", pytest.param("pythran", marks=needs_pythran)]
TOL = 1e-5


def _compiled():
    from qcnn_lite.kernels import _compiled

    return _compiled


_conv_case = conv_case


def _fc_case(rng, n_in, n_out, d, K, n=1, code_dtype=None):
    M = n_in // d
    x = rng.standard_normal((n, n_in), dtype=np.float32)
    books = rng.standard_normal((M, K, d), dtype=np.float32)
    dt = code_dtype or (np.uint8 if K <= 256 else np.uint16)
    codes = rng.integers(0, K, (n_out, M)).astype(dt)
    return x, books, codes, rng.standard_normal(n_out, dtype=np.float32)


# (C, H, W, Ct, k, stride, padding, groups, d, K): real layer shapes, reduced maps / output channels.
CONV_SHAPES = {
    "alexnet-conv1": (3, 47, 47, 8, 11, 4, 0, 1, 3, 128),
    "alexnet-conv2": (96, 27, 27, 12, 5, 1, 2, 2, 8, 128),
    "alexnet-conv3": (256, 13, 13, 8, 3, 1, 1, 1, 8, 128),
    "alexnet-conv4": (384, 13, 13, 8, 3, 1, 1, 2, 8, 128),
    "alexnet-conv5": (384, 13, 13, 6, 3, 1, 1, 2, 8, 128),
    "cnns-conv1": (3, 35, 35, 8, 7, 2, 0, 1, 3, 128),
    "cnns-conv2": (96, 17, 17, 8, 5, 1, 1, 1, 8, 128),
    "cnns-conv5": (512, 13, 13, 4, 3, 1, 1, 1, 8, 128),
    "vgg16-conv1_1": (3, 20, 20, 8, 3, 1, 1, 1, 3, 128),
    "vgg16-conv2_1": (64, 14, 14, 8, 3, 1, 1, 1, 8, 128),
    "vgg16-conv5_3": (512, 14, 14, 4, 3, 1, 1, 1, 8, 128),
    # awkward ones
    "1x1-map": (16, 1, 1, 5, 1, 1, 0, 1, 4, 16),
    "1x1-map-3x3-pad1": (16, 1, 1, 5, 3, 1, 1, 1, 4, 16),
    "stride>kernel": (8, 11, 13, 3, 2, 3, 0, 1, 2, 16),
    "stride>kernel-padded": (8, 10, 9, 3, 2, 5, 1, 1, 4, 16),
    "odd-sizes": (12, 7, 10, 6, 3, 2, 1, 3, 2, 16),
    "one-output": (8, 9, 9, 1, 3, 1, 1, 1, 4, 16),
    "pad>tap": (4, 5, 6, 3, 3, 1, 3, 1, 2, 16),
    "K=2": (8, 9, 9, 4, 3, 1, 1, 1, 4, 2),
    "K=256": (16, 9, 9, 4, 3, 1, 1, 2, 4, 256),
    "K=512-uint16": (16, 9, 9, 4, 3, 2, 1, 1, 8, 512),
}

FC_SHAPES = {
    "alexnet-fc6": (9216, 16, 4, 32),
    "alexnet-fc7": (4096, 19, 4, 32),
    "alexnet-fc8": (4096, 10, 1, 16),
    "cnns-fc6": (18432, 8, 3, 32),
    "vgg16-fc6": (25088, 5, 4, 32),
    "one-output": (32, 1, 4, 16),
    "K=2": (40, 7, 5, 2),
    "K=256": (64, 9, 4, 256),
    "K=512-uint16": (64, 6, 8, 512),
}


@needs_pythran
@pytest.mark.parametrize("name", list(CONV_SHAPES))
def test_conv_pythran_matches_numpy(name, rng):
    args = _conv_case(rng, *CONV_SHAPES[name])
    got = _compiled().conv2d_lut(*args)
    want = _numpy.conv2d_lut(*args)
    assert got.shape == want.shape and got.dtype == np.float32
    assert rel_err(got, want) < TOL


@needs_pythran
@pytest.mark.parametrize("name", list(FC_SHAPES))
def test_linear_pythran_matches_numpy(name, rng):
    args = _fc_case(rng, *FC_SHAPES[name], n=3)
    got = _compiled().linear_lut(*args)
    want = _numpy.linear_lut(*args)
    assert got.shape == want.shape and got.dtype == np.float32
    assert rel_err(got, want) < TOL


@needs_pythran
def test_batch_and_uint16_codes_with_small_K(rng):
    """A batch of images, and uint16 codes where uint8 would do: both export variants agree."""
    x, books, codes, bias, s, p, g = _conv_case(rng, 16, 8, 9, 6, 3, 1, 1, 2, 4, 16, n=3)
    a = _compiled().conv2d_lut(x, books, codes, bias, s, p, g)
    b = _compiled().conv2d_lut(x, books, codes.astype(np.uint16), bias, s, p, g)
    np.testing.assert_array_equal(a, b)
    assert rel_err(a, _numpy.conv2d_lut(x, books, codes, bias, s, p, g)) < TOL


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["alexnet-conv2", "stride>kernel-padded", "odd-sizes", "K=512-uint16"])
def test_conv_matches_torch_dense(backend, name, rng):
    """The LUT convolution equals torch's conv2d of the reconstructed dense weight."""
    torch = pytest.importorskip("torch")
    from qcnn_lite.nn.layers import QConv2d

    x, books, codes, bias, s, p, g = _conv_case(rng, *CONV_SHAPES[name], n=2)
    layer = QConv2d(books, codes, bias, s, p, g, table_dtype="float32")  # integer tables: test_conv8
    want = torch.nn.functional.conv2d(
        torch.from_numpy(x), torch.from_numpy(layer.dense_weight()), torch.from_numpy(bias), s, p, 1, g
    ).numpy()
    previous = kernels.backend()
    try:
        kernels.set_backend(backend)
        got = layer(x)
    finally:
        kernels.set_backend(previous)
    assert rel_err(got, want) < TOL


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_matches_torch_dense(backend, rng):
    torch = pytest.importorskip("torch")
    from qcnn_lite.nn.layers import QLinear

    x, books, codes, bias = _fc_case(rng, 9216, 37, 4, 32, n=2)
    layer = QLinear(books, codes, bias, table_dtype="float32")
    want = torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(layer.dense_weight()), torch.from_numpy(bias))
    previous = kernels.backend()
    try:
        kernels.set_backend(backend)
        got = layer(x)
        layer.table_dtype = "uint8"
        got8 = layer(x)  # the byte-shuffle kernel (pythran backend) or its numpy emulation
    finally:
        kernels.set_backend(previous)
    assert rel_err(got, want.numpy()) < TOL
    # 8-bit tables: an output is off by at most M * scale / 2, scale = the table's range / 255
    M = books.shape[0]
    lut = np.einsum("nmd,mkd->nmk", x.reshape(2, M, -1), books)
    bound = M * (lut - lut.min(2, keepdims=True)).max((1, 2)) / 255 / 2
    err = np.abs(got8 - want.numpy()).max(1)
    assert (err <= bound * 1.001 + 1e-4).all()
    assert err.max() > 1e-3 * bound.max()  # it really ran the 8-bit path


# -- validation: bad input stops in the wrapper, before any kernel ----------
@pytest.fixture(params=BACKENDS)
def guarded(request, monkeypatch):
    """Select a backend whose kernels fail the test if they are ever reached."""
    previous = kernels.backend()
    kernels.set_backend(request.param)

    def reached(*a, **k):
        raise AssertionError("a kernel ran on invalid input")

    monkeypatch.setattr(kernels.dispatch.impl(), "conv2d_lut", reached)
    monkeypatch.setattr(kernels.dispatch.impl(), "linear_lut", reached)
    yield request.param
    kernels.set_backend(previous)


def _bad_conv_inputs(rng):
    x, books, codes, bias, s, p, g = _conv_case(rng, 16, 8, 8, 4, 3, 1, 1, 2, 4, 16)
    over = codes.copy()
    over[1, 2, 0, 1] = 16  # K = 16
    wide = np.zeros((1, 16, 8, 16), np.float32)
    yield "code out of range", (x, books, over, bias, s, p, g)
    yield "code beyond uint8 for K=512", (x, np.zeros((2, 512, 4), np.float32), codes, bias, s, p, g)
    yield "non-contiguous x", (wide[:, :, :, ::2], books, codes, bias, s, p, g)
    yield "non-contiguous codes", (x, books, np.asfortranarray(codes), bias, s, p, g)
    yield "float64 x", (x.astype(np.float64), books, codes, bias, s, p, g)
    yield "int32 codes", (x, books, codes.astype(np.int32), bias, s, p, g)
    yield "float64 codebooks", (x, books.astype(np.float64), codes, bias, s, p, g)
    yield "channels", (x[:, :12].copy(), books, codes, bias, s, p, g)
    yield "bias length", (x, books, codes, bias[:3].copy(), s, p, g)
    yield "sub-spaces", (x, books[:1].copy(), codes, bias, s, p, g)
    yield "groups", (x, books, codes, bias, s, p, 3)
    yield "kernel larger than map", (x[:, :, :2, :2].copy(), books, codes, bias, s, 0, g)
    yield "stride 0", (x, books, codes, bias, 0, p, g)
    yield "3-D x", (x[0], books, codes, bias, s, p, g)


@pytest.mark.parametrize("case", [c for c, _ in _bad_conv_inputs(np.random.default_rng(0))])
def test_conv_rejects_bad_input(case, guarded, rng):
    args = dict(_bad_conv_inputs(rng))[case]
    with pytest.raises(ValueError):
        kernels.conv2d_lut(*args)


def _bad_fc_inputs(rng):
    x, books, codes, bias = _fc_case(rng, 32, 6, 4, 16)
    over = codes.copy()
    over[5, 7] = 200
    yield "code out of range", (x, books, over, bias)
    yield "non-contiguous x", (np.zeros((2, 64), np.float32)[:, ::2], books, codes, bias)
    yield "non-contiguous codes", (x, books, np.asfortranarray(codes), bias)
    yield "float16 x", (x.astype(np.float16), books, codes, bias)
    yield "signed codes", (x, books, codes.astype(np.int8), bias)
    yield "features", (x[:, :28].copy(), books, codes, bias)
    yield "bias length", (x, books, codes, np.zeros(7, np.float32))
    yield "codes 3-D", (x, books, codes[None], bias)
    yield "list input", (x.tolist(), books, codes, bias)


@pytest.mark.parametrize("case", [c for c, _ in _bad_fc_inputs(np.random.default_rng(0))])
def test_linear_rejects_bad_input(case, guarded, rng):
    args = dict(_bad_fc_inputs(rng))[case]
    with pytest.raises(ValueError):
        kernels.linear_lut(*args)


def test_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match="unknown backend"):
        kernels.set_backend("fortran")


@needs_pythran
def test_compiled_module_is_the_extension():
    """The backend runs the compiled extension, never the Pythran source as Python."""
    import importlib.machinery

    from qcnn_lite.kernels import _pythran

    assert _pythran.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape,args", [
    ((1, 96, 13, 11), (5, 1e-4, 0.75, 1.0)),   # AlexNet
    ((2, 7, 5, 3), (5, 5e-4, 0.75, 2.0)),       # CNN-S parameters, fewer channels than the window
    ((1, 9, 4, 4), (3, 1e-2, 0.6, 1.5)),        # beta != 0.75: the pow path
    ((1, 1, 1, 1), (4, 1e-3, 0.75, 1.0)),       # even window, one channel
])
def test_lrn_matches_torch(backend, shape, args, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(shape, dtype=np.float32) * 10
    want = torch.nn.functional.local_response_norm(torch.from_numpy(x), *args).numpy()
    previous = kernels.backend()
    try:
        kernels.set_backend(backend)
        got = kernels.lrn(x, *args)
    finally:
        kernels.set_backend(previous)
    assert got.shape == x.shape and got.dtype == np.float32
    assert rel_err(got, want) < TOL


@pytest.mark.parametrize("backend", BACKENDS)
def test_lrn_rejects_bad_input(backend, rng):
    previous = kernels.backend()
    try:
        kernels.set_backend(backend)
        x = rng.standard_normal((1, 4, 3, 3), dtype=np.float32)
        for bad in (x.astype(np.float64), x[0], x[:, :, :, ::2]):
            with pytest.raises(ValueError):
                kernels.lrn(bad)
        with pytest.raises(ValueError):
            kernels.lrn(x, size=0)
        with pytest.raises(ValueError):
            kernels.lrn(x, beta=float("nan"))
    finally:
        kernels.set_backend(previous)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lrn_sliding_window_on_adversarial_channels(backend, rng):
    """Huge channels next to tiny ones: the compiled LRN's sliding window sum takes the huge
    squares away again; the result must still match torch's, which re-sums every window."""
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((1, 12, 6, 5), dtype=np.float32) * 1e-3
    x[0, ::4] *= 1e6  # channels 0, 4, 8 around 1e3, the rest around 1e-3
    previous = kernels.backend()
    try:
        kernels.set_backend(backend)
        for args in ((5, 1e-4, 0.75, 1.0), (5, 5e-4, 0.75, 2.0), (3, 1e-2, 0.5, 1.0)):
            want = torch.nn.functional.local_response_norm(torch.from_numpy(x).double(), *args).numpy()
            got = kernels.lrn(x, *args)
            # per element, relative to each value: the small channels are checked too
            assert np.max(np.abs(got - want) / np.abs(want)) < 1e-5, args
    finally:
        kernels.set_backend(previous)
