"""The dense baseline without BLAS (the paper's condition): compiled loops against torch and numpy."""
import numpy as np
import pytest

from conftest import rel_err
from qcnn_lite import kernels
from qcnn_lite.nn import models
from qcnn_lite.nn.layers import Conv2d, Linear

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not kernels.direct_available(), reason="no-BLAS kernels (_noblas_kernels) not built")

# (C, H, W, Ct, k, stride, padding, groups): real layer shapes with reduced maps, and awkward ones
SHAPES = [
    (3, 47, 47, 8, 11, 4, 0, 1),   # AlexNet conv1
    (3, 31, 29, 5, 7, 2, 0, 1),    # CNN-S conv1, odd sizes
    (12, 27, 27, 6, 5, 1, 2, 2),   # AlexNet conv2, grouped
    (16, 13, 13, 8, 3, 1, 1, 1),   # conv3-5
    (4, 1, 1, 3, 1, 1, 0, 1),      # 1x1 map
    (4, 9, 9, 1, 2, 3, 0, 1),      # stride larger than the kernel, one output channel
    (6, 8, 7, 6, 3, 2, 1, 3),      # stride 2 with padding and groups
    (1, 28, 28, 32, 5, 1, 2, 1),   # mini-alexnet conv1
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_conv2d_direct_matches_torch(shape, rng):
    C, H, W, Ct, k, s, p, g = shape
    x = rng.standard_normal((2, C, H, W), dtype=np.float32)
    w = rng.standard_normal((Ct, C // g, k, k), dtype=np.float32)
    b = rng.standard_normal(Ct, dtype=np.float32)
    got = kernels.conv2d_direct(x, w, b, s, p, g)
    ref = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                     torch.from_numpy(b).double(), stride=s, padding=p, groups=g).numpy()
    assert got.shape == ref.shape
    assert rel_err(got, ref) < 1e-5


@pytest.mark.parametrize("n_in,n_out", [(9216, 64), (37, 5), (4, 1), (3, 4096)])
def test_linear_direct_matches_numpy(n_in, n_out, rng):
    x = rng.standard_normal((3, n_in), dtype=np.float32)
    w = rng.standard_normal((n_out, n_in), dtype=np.float32)
    b = rng.standard_normal(n_out, dtype=np.float32)
    got = kernels.linear_direct(x, np.ascontiguousarray(w.T), b)
    ref = x.astype(np.float64) @ w.T.astype(np.float64) + b
    assert rel_err(got, ref) < 1e-5


def test_noblas_network_matches_dense(rng):
    from qcnn_lite.bench.noblas import DirectConv2d, DirectLinear, noblas_network

    dense = models.synthetic("mini-alexnet", 0)
    nb = noblas_network(dense)
    assert all(isinstance(p, (DirectConv2d, DirectLinear)) for p in nb.params.values())
    assert all(type(p) in (Conv2d, Linear) for p in dense.params.values())  # the original is untouched
    x = rng.standard_normal((2,) + dense.input_shape, dtype=np.float32)
    assert rel_err(nb.forward(x), dense.forward(x)) < 1e-4


def test_noblas_refuses_quantized_network():
    from qcnn_lite.bench.synthetic import quantized_network
    from qcnn_lite.bench.noblas import noblas_network
    from qcnn_lite.paper.constants import MINI_SETTINGS

    q = quantized_network("mini-alexnet", MINI_SETTINGS["mini-alexnet"][0])
    with pytest.raises(ValueError, match="dense networks only"):
        noblas_network(q)


def test_direct_kernels_validate(rng):
    x = rng.standard_normal((1, 4, 8, 8), dtype=np.float32)
    w = rng.standard_normal((2, 4, 3, 3), dtype=np.float32)
    b = np.zeros(2, np.float32)
    with pytest.raises(ValueError, match="channels"):
        kernels.conv2d_direct(x, w[:, :3].copy(), b)
    with pytest.raises(ValueError, match="does not fit"):
        kernels.conv2d_direct(x, rng.standard_normal((2, 4, 9, 9), dtype=np.float32), b)
    with pytest.raises(ValueError, match="dtype"):
        kernels.conv2d_direct(x.astype(np.float64), w, b)
    with pytest.raises(ValueError, match="stride"):
        kernels.conv2d_direct(x, w, b, stride=0)
    with pytest.raises(ValueError, match="features"):
        kernels.linear_direct(x.reshape(1, -1), np.zeros((5, 2), np.float32), b)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("backend", ["numpy", "pythran"])
def test_conv_epilogue_matches_numpy(relu, backend, rng):
    acc = rng.standard_normal((5, 3 * 9 + 2), dtype=np.float32)  # 3 rows at pitch 9, a few spare values
    bias = rng.standard_normal(5, dtype=np.float32)
    ref = acc[:, :27].reshape(5, 3, 9)[:, :, :6] + bias[:, None, None]
    ref = np.maximum(ref, 0) if relu else ref
    old = kernels.backend()
    kernels.set_backend(backend)
    try:
        out = np.full((5, 7, 6), 42, np.float32)
        kernels.conv_epilogue(acc, bias, out, 2, 9, relu)  # rows 2..4 of 7
        np.testing.assert_array_equal(out[:, 2:5], ref)
        assert (out[:, :2] == 42).all() and (out[:, 5:] == 42).all()  # nothing else written
        kernels.conv_epilogue(acc, bias, out, 5, 9, relu)  # rows past OH are ignored
        np.testing.assert_array_equal(out[:, 5:7], ref[:, :2])
    finally:
        kernels.set_backend(old)
    with pytest.raises(ValueError, match="do not fit"):
        kernels.conv_epilogue(acc, bias, out, 7, 9, relu)
