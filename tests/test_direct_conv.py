"""The direct float conv kernels (simd/direct_conv.h) for few input channels: against torch's conv2d
(or the im2col + BLAS path without torch), every ISA, and QConv2d's decoded-weight path on them."""
import numpy as np
import pytest

from conftest import rel_err
from qcnn_lite import kernels
from qcnn_lite.kernels import direct_conv
from qcnn_lite.nn.layers import QConv2d, _conv_dense

needs_direct = pytest.mark.skipif(not direct_conv.available(), reason="the simd extension is not built")
ISAS = direct_conv.conv_isas()
TOL = 1e-5  # float32 sums in another order (FMA), relative to the largest output

# (n, C, H, W, out, k, stride, padding, groups)
SHAPES = {
    "alexnet-conv1": (1, 3, 227, 227, 96, 11, 4, 0, 1),
    "cnns-conv1": (1, 3, 224, 224, 96, 7, 2, 0, 1),
    "odd-channels": (2, 4, 23, 26, 13, 5, 3, 2, 1),
    "groups-pad": (2, 6, 17, 9, 10, 3, 1, 1, 2),
    "1x1-map": (1, 2, 1, 1, 5, 3, 1, 1, 1),
    "narrow-rows": (1, 1, 9, 3, 7, 2, 1, 0, 1),  # Wq < 16: a vector spans many output rows
    "stride2-pad1": (1, 3, 40, 70, 9, 5, 2, 1, 1),  # rows of 32 columns and a tail, phases shifted by padding
    "stride4-pad2": (2, 2, 37, 101, 5, 11, 4, 2, 1),
}


def _reference(x, w, b, stride, padding, groups, relu=False):
    try:
        import torch
    except ImportError:
        out = x.shape[0], w.shape[0]
        y = _conv_dense(x, w.reshape(w.shape[0], -1), b, w.shape[2], w.shape[3], stride, padding, groups)
        assert y.shape[:2] == out
    else:
        y = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride,
                                       padding, groups=groups).numpy()
    return np.maximum(y, 0) if relu else y


@needs_direct
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", list(SHAPES))
def test_direct_conv_is_conv2d(isa, name, rng):
    n, C, H, W, out, k, s, p, g = SHAPES[name]
    x = rng.standard_normal((n, C, H, W), dtype=np.float32)
    w = rng.standard_normal((out, C // g, k, k), dtype=np.float32)
    b = rng.standard_normal(out, dtype=np.float32)
    wp = direct_conv.pack_weight(w, g, isa)
    for relu in (False, True):
        got = direct_conv.direct_conv2d(x, wp, b, out, k, k, s, p, g, relu, isa)
        assert rel_err(got, _reference(x, w, b, s, p, g, relu)) < TOL
        # a second call reuses the scratch input of the same geometry: same result
        np.testing.assert_array_equal(direct_conv.direct_conv2d(x, wp, b, out, k, k, s, p, g, relu, isa), got)


@needs_direct
def test_direct_conv_checks_lengths(rng):
    x = rng.standard_normal((1, 3, 20, 20), dtype=np.float32)
    w = rng.standard_normal((8, 3, 5, 5), dtype=np.float32)
    b = np.zeros(8, np.float32)
    wp = direct_conv.pack_weight(w, 1)
    with pytest.raises(ValueError):
        direct_conv.direct_conv2d(x, wp[..., :-1].copy(), b, 8, 5, 5, 2, 0, 1)
    with pytest.raises(ValueError):
        direct_conv.direct_conv2d(x, wp, b[:-1].copy(), 8, 5, 5, 2, 0, 1)
    with pytest.raises(ValueError):
        direct_conv.direct_conv2d(x, wp, b, 8, 25, 25, 2, 0, 1)  # kernel larger than the input
    with pytest.raises(ValueError):
        direct_conv.direct_conv2d(x, wp, b, 8, 5, 5, 2, 0, 1, isa="sse9")


@needs_direct
@pytest.mark.skipif("pythran" not in kernels.available_backends(), reason="Pythran kernels not built")
def test_qconv_decoded_weight_runs_direct(rng):
    """A conv1-like QConv2d (3 channels, one sub-space): direct kernel (compiled backend) = im2col + BLAS."""
    M, K, d, out, k = 1, 128, 3, 20, 7
    q = QConv2d(rng.standard_normal((M, K, d), dtype=np.float32), rng.integers(0, K, (out, k, k, M), dtype=np.uint8),
                rng.standard_normal(out, dtype=np.float32), stride=2, padding=1, table_dtype="float32")
    x = rng.standard_normal((2, 3, 41, 37), dtype=np.float32)
    assert not q.uses_tables(41, 37)
    old = kernels.backend()
    try:
        kernels.set_backend("numpy")  # the portable path: im2col + BLAS
        want = q(x, relu=True)
        kernels.set_backend("pythran")
        got = q(x, relu=True)
    finally:
        kernels.set_backend(old)
    assert rel_err(got, want) < TOL
    assert hasattr(q, "_direct_w")
