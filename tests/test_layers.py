"""Look-up-table forward passes against torch's dense conv2d/linear on the reconstructed weights."""
import itertools

import numpy as np
import pytest

from qcnn_lite import Conv2d, Linear, QConv2d, QLinear, kernels
from qcnn_lite.nn import models
from qcnn_lite.paper.cost import layer_costs
from qcnn_lite.nn.table_policy import LUT_MIN_SPEEDUP
from qcnn_lite.quant.quantize import quantize_conv2d, quantize_linear
from conftest import rel_err

torch = pytest.importorskip("torch")
F = torch.nn.functional


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def test_qlinear_matches_torch_linear(rng):
    w = rng.standard_normal((50, 36)).astype(np.float32)
    b = rng.standard_normal(50).astype(np.float32)
    for d, K in [(1, 4), (3, 16), (4, 32), (12, 8)]:
        q = quantize_linear(w, b, d, K, seed=1)
        assert q.codes.shape == (50, 36 // d) and q.codebooks.shape == (36 // d, K, d)
        x = rng.standard_normal((7, 36)).astype(np.float32)
        ref = F.linear(t(x), t(q.dense_weight()), t(q.bias)).numpy()
        assert q.table_dtype == "uint8"  # the default where K <= 256
        # 8-bit tables: each entry is off by at most scale/2, scale = the table's range / 255
        lut = np.einsum("nmd,mkd->nmk", x.reshape(7, -1, d), q.codebooks)
        rng_ = (lut - lut.min(2, keepdims=True)).max((1, 2))
        bound = q.n_subspaces * rng_ / 255 / 2 * (1 + 1e-4) + 1e-5 * np.abs(ref).max()
        err = np.abs(q(x) - ref).max(1)
        assert (err <= bound).all() and err.max() > 0
        q.table_dtype = "float32"
        assert rel_err(q(x), ref) < 1e-4


def test_qlinear_table_dtype_checked(rng):
    q = QLinear(rng.standard_normal((2, 300, 1)).astype(np.float32), np.zeros((3, 2), np.uint16), None)
    assert q.table_dtype == "float32"  # K > 256: no 8-bit tables
    with pytest.raises(ValueError, match="K <= 256"):
        q.table_dtype = "uint8"
    with pytest.raises(ValueError, match="table_dtype"):
        q.table_dtype = "int4"


def _conv_case(rng, cin, cout, k, stride, padding, groups, H, W, d=2, K=8):
    w = rng.standard_normal((cout, cin // groups, k, k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    q = quantize_conv2d(w, b, stride, padding, groups, sub_dim=d, n_codewords=K, kmeans_iter=5)
    q.table_dtype = "float32"  # exact tables here; the integer ones are tested in test_conv8
    x = rng.standard_normal((2, cin, H, W)).astype(np.float32)
    ref = F.conv2d(t(x), t(q.dense_weight()), t(q.bias), stride, padding, 1, groups).numpy()
    out = q(x)
    assert out.shape == ref.shape
    assert rel_err(out, ref) < 1e-4, (cin, cout, k, stride, padding, groups, H, W)
    # both paths, whichever q(x) chose: the tables and the decoded weight
    lut = kernels.conv2d_lut(x, q.codebooks, q.codes, q.bias, stride, padding, groups)
    assert rel_err(lut, ref) < 1e-4
    # the dense reference layer agrees too
    dense = Conv2d(q.dense_weight(), q.bias, stride, padding, groups)
    assert rel_err(dense(x), ref) < 1e-4


@pytest.mark.parametrize("stride,padding,groups", list(itertools.product([1, 2, 4], [0, 1, 2], [1, 2])))
def test_qconv_matches_torch_strides_padding_groups(rng, stride, padding, groups):
    _conv_case(rng, 8, 6, 3, stride, padding, groups, 13, 10)


@pytest.mark.parametrize("k", [1, 3, 5, 7, 11])
def test_qconv_kernel_sizes_nonsquare(rng, k):
    _conv_case(rng, 4, 5, k, 1 + k // 5, k // 2, 1, k + 6, k + 3, K=4)


def test_qconv_one_by_one_input(rng):
    _conv_case(rng, 4, 3, 3, 1, 1, 1, 1, 1, K=4)  # only the centre tap is inside the image
    _conv_case(rng, 4, 2, 1, 1, 0, 2, 1, 1, K=2)


def test_qconv_alexnet_like_conv1(rng):
    # 3 input channels, one sub-space of width 3 (M=1), 11x11 stride 4
    _conv_case(rng, 3, 8, 11, 4, 0, 1, 35, 35, d=3, K=16)


def test_dense_layers_match_torch(rng):
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    x = rng.standard_normal((2, 8, 9, 7)).astype(np.float32)
    ref = F.conv2d(t(x), t(w), None, 2, 1, 1, 2).numpy()
    assert rel_err(Conv2d(w, None, 2, 1, 2)(x), ref) < 1e-5
    w2 = rng.standard_normal((5, 8)).astype(np.float32)
    x2 = rng.standard_normal((3, 8)).astype(np.float32)
    assert rel_err(Linear(w2)(x2), F.linear(t(x2), t(w2)).numpy()) < 1e-5


def test_zero_padding_contributes_nothing(rng):
    # a padded LUT conv equals the dense conv on an explicitly zero-padded input
    w = rng.standard_normal((4, 4, 5, 5)).astype(np.float32)
    q = quantize_conv2d(w, None, 1, 2, 1, sub_dim=2, n_codewords=4)
    x = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
    xp = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    q0 = QConv2d(q.codebooks, q.codes, q.bias, 1, 0, 1, table_dtype="float32")
    q.table_dtype = "float32"
    assert rel_err(q(x), q0(xp)) < 1e-5


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        (dict(sub_dim=3), "does not divide"),
        (dict(n_codewords=10_000), "larger than"),
        (dict(calib=np.zeros((0, 8, 5, 5), np.float32)), "empty"),
        (dict(calib=np.zeros((2, 6, 5, 5), np.float32)), "channels"),
        (dict(stride=0), "stride"),
    ],
)
def test_qconv_bad_settings(rng, kwargs, msg):
    w = rng.standard_normal((4, 8, 3, 3)).astype(np.float32)
    args = dict(sub_dim=4, n_codewords=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=msg):
        quantize_conv2d(w, None, **args)


def test_nan_weights_rejected(rng):
    w = rng.standard_normal((4, 8)).astype(np.float32)
    w[1, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantize_linear(w, None, 2, 2)


def test_wrong_input_shape_is_a_clear_error(rng):
    q = quantize_linear(rng.standard_normal((4, 8)), None, 2, 2)
    with pytest.raises(ValueError, match=r"expects input of shape \(n, 8\)"):
        q(np.zeros((1, 9), np.float32))


def test_lut_speedup_is_the_cost_models_ratio():
    # the paper's FLOP formulas (qcnn_lite.paper.cost) are the independent reference
    net = models.synthetic("alexnet")
    settings = {"conv": (8, 128), "fc": (4, 32), "fc8": (1, 16)}
    dims = net.input_dims()
    rng = np.random.default_rng(0)
    costs = {c.name: c for c in layer_costs(net.input_shape, net.spec, settings)}
    for _, L in net.param_layers():
        if L["type"] != "conv":
            continue
        cg = dims[L["name"]][0] // L.get("groups", 1)
        d = min(8, cg)
        q = QConv2d(np.zeros((cg // d, 128, d), np.float32), rng.integers(0, 128, (L["out"], L["kernel"], L["kernel"], cg // d)),
                    np.zeros(L["out"], np.float32), L.get("stride", 1), L.get("padding", 0), L.get("groups", 1))
        c = costs[L["name"]]
        H, W = dims[L["name"]][1:]
        assert q.lut_speedup(H, W) == pytest.approx(c.cnn_flops / c.qcnn_flops, rel=1e-12)
        # conv1 (one 3-D sub-space, 1.9x in theory, tables 190x its weight) runs dense; conv2-5 on tables
        assert q.uses_tables(H, W) == (L["name"] != "conv1"), L["name"]
        assert (q.lut_speedup(H, W) >= LUT_MIN_SPEEDUP) == (L["name"] != "conv1")


def test_dense_path_refuses_corrupted_codes(rng):
    w = rng.standard_normal((8, 3, 11, 11)).astype(np.float32)
    q = quantize_conv2d(w, None, 4, 0, 1, sub_dim=3, n_codewords=16, kmeans_iter=3)
    q.table_dtype = "float32"
    x = rng.standard_normal((1, 3, 35, 35)).astype(np.float32)
    assert not q.uses_tables(35, 35)
    q.codes[0, 0, 0, 0] = 200  # changed in place, after the constructor's checks
    with pytest.raises(ValueError, match="codes must be < K=16"):
        q(x)


@pytest.mark.parametrize("budget", [1, 2000, 17280, 1 << 20, None])  # one row, a few rows, uneven blocks, images, all
def test_dense_conv_blocks_match_torch(rng, budget):
    from qcnn_lite.nn.layers import _conv_dense

    for stride, padding, groups in [(1, 1, 1), (2, 0, 2), (4, 2, 1), (3, 1, 2)]:
        w = rng.standard_normal((6, 8 // groups, 3, 3)).astype(np.float32)
        b = rng.standard_normal(6).astype(np.float32)
        x = rng.standard_normal((3, 8, 13, 10)).astype(np.float32)
        ref = F.conv2d(t(x), t(w), t(b), stride, padding, 1, groups).numpy()
        out = _conv_dense(x, w.reshape(6, -1), b, 3, 3, stride, padding, groups, budget)
        assert rel_err(out, ref) < 1e-5, (budget, stride, padding, groups)
        fused = _conv_dense(x, w.reshape(6, -1), b, 3, 3, stride, padding, groups, budget, relu=True)
        np.testing.assert_array_equal(fused, np.maximum(out, 0))  # fused ReLU == ReLU after


def test_small_maps_keep_their_tables():
    # below the threshold, but the decoded weight (147 KB) would be larger than the tables (16 KB)
    q = QConv2d(np.zeros((8, 128, 8), np.float32), np.zeros((64, 3, 3, 8), np.uint8), np.zeros(64, np.float32), 1, 1,
                table_dtype="float32")
    assert q.lut_speedup(2, 2) < LUT_MIN_SPEEDUP
    assert q.uses_tables(2, 2)
    # on a 28x28 map the float tables (3.2 MB) outgrow the weight: decoded
    assert q.lut_speedup(28, 28) < LUT_MIN_SPEEDUP and not q.uses_tables(28, 28)
    # int8 tables (0.98 MB, 16-bit adds) pay off there (the measured cost model)
    q.table_dtype = "int8"
    assert q.uses_tables(2, 2) and q.uses_tables(28, 28)
