"""quantize_network: settings, accumulated-error compensation, clear errors before any work."""
import numpy as np
import pytest

from qcnn_lite import Conv2d, Linear, Network, QConv2d, QLinear, quantize_network
from qcnn_lite.quant.quantize import layer_settings
from qcnn_lite.quant.quantize import quantize_conv2d, quantize_linear


def small_net(rng, channels=8):
    spec = [
        {"type": "conv", "name": "conv1", "out": channels, "kernel": 3, "stride": 1, "padding": 1, "groups": 1},
        {"type": "relu"},
        {"type": "conv", "name": "conv2", "out": channels, "kernel": 3, "stride": 1, "padding": 1, "groups": 2},
        {"type": "relu"},
        {"type": "maxpool", "kernel": 2, "stride": 2, "ceil": False},
        {"type": "flatten"},
        {"type": "fc", "name": "fc3", "out": 10},
    ]
    c = channels
    params = {
        "conv1": Conv2d(rng.standard_normal((c, 4, 3, 3)).astype(np.float32) * 0.4, rng.standard_normal(c) * 0.1, 1, 1),
        "conv2": Conv2d(rng.standard_normal((c, c // 2, 3, 3)).astype(np.float32) * 0.3, None, 1, 1, 2),
        "fc3": Linear(rng.standard_normal((10, c * 16)).astype(np.float32) * 0.1),
    }
    return Network("small", (4, 8, 8), spec, params)


def images(rng, n):
    # correlated channels, smooth-ish images: a stand-in for natural inputs
    base = rng.standard_normal((n, 1, 8, 8))
    return (base + 0.3 * rng.standard_normal((n, 4, 8, 8))).astype(np.float32)


def out_err(q, net, x):
    y, yq = net.forward(x), q.forward(x)
    return float(((yq - y) ** 2).sum() / (y**2).sum())


def test_sequential_beats_independent_and_plain(rng):
    net = small_net(rng)
    calib, test = images(rng, 2000), images(rng, 500)  # compensation needs samples >> fc inputs
    st = {"conv": (2, 8), "fc": (4, 8)}
    seq = quantize_network(net, calib, st, compensate=True, n_iter=4, show_progress=False)
    ind = quantize_network(net, calib, st, compensate=False, n_iter=4, show_progress=False)
    plain = quantize_network(net, None, st, error_correction=False, show_progress=False)
    e_seq, e_ind, e_plain = out_err(seq, net, test), out_err(ind, net, test), out_err(plain, net, test)
    assert e_seq < e_ind < e_plain, (e_seq, e_ind, e_plain)
    assert isinstance(seq.params["conv1"], QConv2d) and isinstance(seq.params["fc3"], QLinear)
    assert seq.params["conv2"].groups == 2
    # the original network is untouched
    assert isinstance(net.params["conv1"], Conv2d)
    assert seq.meta["quantization"]["settings"]["fc3"] == [4, 8]


def test_network_rejects_params_that_do_not_fit_the_spec(rng):
    net = small_net(rng)
    with pytest.raises(ValueError, match="does not fit the spec"):
        Network("small", (4, 8, 8), net.spec, dict(net.params, conv1=Conv2d(net.params["conv1"].weight, None, 1, 0)))
    with pytest.raises(ValueError, match="is an fc layer"):
        Network("small", (4, 8, 8), net.spec, dict(net.params, fc3=net.params["conv1"]))


def test_layer_settings_defaults_overrides_and_narrowing(rng):
    net = small_net(rng)
    plan = layer_settings(net, {"conv": (8, 4), "fc": (4, 8), "fc3": (2, 4)})
    # conv1 has 4 input channels: C's narrows to 4; conv2 has 4 per group
    assert plan == {"conv1": (4, 4), "conv2": (4, 4), "fc3": (2, 4)}


@pytest.mark.parametrize(
    "settings, msg",
    [
        ({"conv": (3, 4), "fc": (4, 8)}, "does not divide"),
        ({"conv": (2, 4), "fc": (4, 100)}, "larger than"),
        ({"conv": (2, 4)}, "no setting"),
        ({"conv": (2, 4), "fc": (4, 8), "fc9": (1, 2)}, "does not have"),
        ({"conv": (2, "x"), "fc": (4, 8)}, "positive integers"),
        ([1, 2], "mapping"),
    ],
)
def test_bad_settings_fail_before_any_work(rng, settings, msg):
    with pytest.raises(ValueError, match=msg):
        quantize_network(small_net(rng), images(rng, 4), settings, show_progress=False)


def test_empty_calibration_and_bad_weights(rng):
    net = small_net(rng)
    st = {"conv": (2, 4), "fc": (4, 8)}
    with pytest.raises(ValueError, match="empty"):
        quantize_network(net, np.zeros((0, 4, 8, 8), np.float32), st, show_progress=False)
    with pytest.raises(ValueError, match="empty"):
        quantize_network(net, None, st, show_progress=False)
    bad = net.copy()
    w = bad.params["fc3"].weight.copy()
    w[0, 0] = np.nan
    bad.params["fc3"] = Linear.__new__(Linear)
    bad.params["fc3"].weight, bad.params["fc3"].bias = w, net.params["fc3"].bias
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantize_network(bad, images(rng, 4), st, show_progress=False)
    with pytest.raises(ValueError, match="calibration images must be"):
        quantize_network(net, np.zeros((3, 3, 8, 8), np.float32), st, show_progress=False)


def test_deterministic_for_a_seed(rng):
    net = small_net(rng)
    x = images(rng, 50)
    a = quantize_network(net, x, {"conv": (2, 4), "fc": (4, 8)}, seed=5, show_progress=False)
    b = quantize_network(net, x, {"conv": (2, 4), "fc": (4, 8)}, seed=5, show_progress=False)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k].codes, b.params[k].codes)
        np.testing.assert_array_equal(a.params[k].codebooks, b.params[k].codebooks)


def _layerwise_pq_before_v2(blocks, K, kmeans_iter, seed):
    """The quantizer's k-means initialisation as layers.py had it before Architecture v2,
    kept as the reference: blocks (O, T, M, d), one k-means per sub-space m over all outputs and taps."""
    from qcnn_lite.quant.pq import code_dtype, kmeans

    O, T, M, d = blocks.shape
    gen = np.random.default_rng(seed)
    books = np.empty((M, K, d), dtype=np.float32)
    codes = np.empty((O, T, M), dtype=code_dtype(K))
    for m in range(M):
        centers, labels = kmeans(blocks[:, :, m].reshape(O * T, d), K, kmeans_iter, gen)
        books[m] = centers
        codes[:, :, m] = labels.reshape(O, T)
    return books, codes


@pytest.mark.parametrize("K", [8, 300])  # uint8 and uint16 codes
def test_pq_initialisation_is_the_old_one_bit_for_bit(rng, K):
    """ProductQuantizer.fit + labels_ replaced layers._init_pq: model files must stay byte-identical."""

    w = rng.standard_normal((40, 8, 3, 3)).astype(np.float32)
    q = quantize_conv2d(w, None, 1, 1, 2, sub_dim=2, n_codewords=K, seed=7, kmeans_iter=4)
    books, codes = _layerwise_pq_before_v2(w.transpose(0, 2, 3, 1).reshape(40, 9, 4, 2), K, 4, 7)
    assert q.codebooks.tobytes() == books.tobytes()
    assert q.codes.dtype == codes.dtype and q.codes.tobytes() == codes.reshape(40, 3, 3, 4).tobytes()
    wl = rng.standard_normal((K + 5, 12)).astype(np.float32)
    ql = quantize_linear(wl, None, 3, K, seed=2, kmeans_iter=3)
    books, codes = _layerwise_pq_before_v2(wl.reshape(K + 5, 1, 4, 3), K, 3, 2)
    assert ql.codebooks.tobytes() == books.tobytes() and ql.codes.tobytes() == codes.reshape(K + 5, 4).tobytes()
    assert quantize_conv2d(w, None, 1, 1, 2, sub_dim=2, n_codewords=K, seed=7, kmeans_iter=4).codes.tobytes() \
        == q.codes.tobytes()  # the layer's shortcut delegates to the quantizer


def test_layers_do_not_import_the_quantizer():
    """nn.layers runs layers; the quantizer (quantize, correction, k-means) builds them."""
    import ast
    import inspect

    import qcnn_lite.nn.layers as layers

    tree = ast.parse(inspect.getsource(layers))
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {(getattr(n, "module", None) or "") + ":" + a.name for n in top for a in n.names}
    assert not any("correction" in s or "kmeans" in s or "quantize" in s for s in names), names
