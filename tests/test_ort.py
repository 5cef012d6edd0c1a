"""ONNX Runtime peer engine: graphs built from specs compute what the engine and torch compute,
static int8 keeps the top-1, single-layer graphs match the dense layers."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from qcnn_lite.bench import ort
from qcnn_lite.nn import models
from qcnn_lite.nn.engine import Network, lrn
from qcnn_lite.nn.layers import Conv2d, Linear, QLinear


def _torch_bridge():
    pytest.importorskip("torch")
    from qcnn_lite.reference.bridge import network_to_torch

    return network_to_torch


def _logits(net: Network) -> Network:
    """The network without its final softmax: softmax outputs near 0 or 1 would hide logit errors."""
    out = net.copy()
    if out.spec[-1]["type"] == "softmax":
        out.spec = out.spec[:-1]
    return out


@pytest.fixture(scope="module")
def mini() -> Network:
    # conv + ReLU, overlapping max-pool, LRN, grouped and padded convs, dropout, three fc layers, softmax
    return models.synthetic("mini-alexnet", seed=3)


def _images(net: Network, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *net.input_shape), dtype=np.float32)


def test_available_and_versions():
    assert ort.available()
    v = ort.versions()
    assert v["onnx"] and v["onnxruntime"]


@pytest.mark.parametrize("impl", ["native", "ops"])
@pytest.mark.parametrize("name", ["mini-alexnet", "mini-cnns"])
def test_fp32_matches_torch_and_engine(name, impl):
    """Strided 7x7 conv, ceil-mode pools and CNN-S's LRN (k=2) as well as mini-alexnet's layers."""
    network_to_torch = _torch_bridge()
    import torch

    net = _logits(models.synthetic(name, seed=1))
    x = _images(net, 8)
    y = ort.run(ort.session(ort.to_onnx(net, lrn=impl)), x)
    with torch.no_grad():
        yt = network_to_torch(net)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, yt, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(y, net.forward(x), rtol=1e-4, atol=1e-4)


def test_softmax_output_and_fixed_batch(mini):
    x = _images(mini, 3, seed=1)
    want = mini.forward(x)
    got = np.concatenate([ort.run(ort.session(ort.to_onnx(mini, batch=1)), x[i:i + 1]) for i in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ort.run(ort.session(ort.to_onnx(mini)), x), want, rtol=1e-4, atol=1e-5)


def test_graph_uses_native_lrn(mini):
    ops = [n.op_type for n in ort.to_onnx(mini).graph.node]
    assert ops.count("LRN") == 2 and "Dropout" not in ops and ops.count("Gemm") == 3


@pytest.mark.parametrize("impl", ["native", "ops"])
@pytest.mark.parametrize("beta", [0.6, 0.75])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6])
def test_lrn_parameters(size, beta, impl):
    """alpha is large here, so a wrong alpha/size scaling or a shifted window would show.

    ONNX's LRN divides alpha by size as the engine does; even sizes (other window, rejected by
    ORT's kernel) are built from elementary ops; beta = 0.75 takes two square roots instead of Pow.
    """
    L = {"type": "lrn", "size": size, "alpha": 2.0, "beta": beta, "k": 1.5}
    net = Network("lrn", (7, 5, 4), [L])
    x = np.random.default_rng(size).standard_normal((2, 7, 5, 4), dtype=np.float32) * 3
    model = ort.to_onnx(net, lrn=impl)
    np.testing.assert_allclose(ort.run(ort.session(model), x), lrn(x, size, 2.0, beta, 1.5), rtol=1e-5, atol=1e-6)
    ops = [n.op_type for n in model.graph.node]
    assert ("LRN" in ops) == (size % 2 == 1 and impl == "native")
    with pytest.raises(ValueError, match="lrn"):
        ort.to_onnx(net, lrn="fast")


def test_rejects_quantized_network():
    rng = np.random.default_rng(0)
    q = QLinear(rng.standard_normal((2, 4, 4), dtype=np.float32), rng.integers(0, 4, (3, 2)), np.zeros(3, np.float32))
    net = Network("q", (1, 2, 4), [{"type": "fc", "name": "fc", "out": 3}], {"fc": q})
    with pytest.raises(ValueError, match="dense"):
        ort.to_onnx(net)


def _temp_leftovers() -> set[str]:
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("qcnn-ort-")}


@pytest.mark.parametrize("impl", ["native", "ops"])
@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_int8_static_keeps_top1(mini, fmt, impl):
    before = _temp_leftovers()
    fp32 = ort.to_onnx(mini, lrn=impl)
    q = ort.quantize_static_int8(fp32, _images(mini, 8, seed=5), fmt)
    assert _temp_leftovers() == before  # the intermediate files went with their temporary directory
    ops = {n.op_type for n in q.graph.node}
    assert ("QLinearConv" in ops) == (fmt == "QOperator")
    assert "QuantizeLinear" in ops and "Softmax" in ops  # the softmax stays float
    assert not {"QLinearMul", "QLinearAdd", "QLinearAveragePool", "QLinearSoftmax"} & ops  # and so does the LRN
    init = {i.name: i for i in q.graph.initializer}
    # per-channel int8 weights: one scale per output channel of conv1
    import onnx

    w = next(v for k, v in init.items() if k.startswith("conv1.weight") and v.data_type == onnx.TensorProto.INT8)
    scales = next(v for k, v in init.items() if k.startswith("conv1.weight") and "scale" in k)
    assert tuple(scales.dims) == (w.dims[0],)
    x = _images(mini, 64, seed=7)
    y, yq = ort.run(ort.session(fp32), x), ort.run(ort.session(q), x)
    assert (y.argmax(1) == yq.argmax(1)).mean() >= 0.9
    assert np.abs(y - yq).max() < 0.2


def test_fastest_int8(mini):
    fmt, model, times = ort.fastest_int8(ort.to_onnx(mini, batch=1), _images(mini, 4), repeat=3)
    assert fmt in ort.FORMATS and set(times) == set(ort.FORMATS)
    assert times[fmt]["cpu_median_ms"] == min(t["cpu_median_ms"] for t in times.values())
    assert ort.run(ort.session(model), _images(mini, 1)).shape == (1, 10)


def test_calibration_images_checked(mini):
    with pytest.raises(ValueError, match="calibration"):
        ort.quantize_static_int8(ort.to_onnx(mini), np.zeros((2, 3, 28, 28), np.float32))


def _layers():
    rng = np.random.default_rng(0)
    conv = Conv2d(rng.standard_normal((12, 3, 5, 5), dtype=np.float32) * 0.2, rng.standard_normal(12, dtype=np.float32),
                  stride=2, padding=2, groups=2)
    fc = Linear(rng.standard_normal((10, 6 * 4 * 4), dtype=np.float32) * 0.1, rng.standard_normal(10, dtype=np.float32))
    return conv, fc


@pytest.mark.parametrize("relu", [False, True])
def test_layer_graphs_match_dense(relu):
    conv, fc = _layers()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 6, 11, 9), dtype=np.float32)
    got = ort.run(ort.session(ort.layer_onnx(conv, x.shape[1:], relu)), x)
    np.testing.assert_allclose(got, conv(x, relu=relu), rtol=1e-4, atol=1e-5)
    for shape in [(6, 4, 4), (96,)]:  # an fc layer on a map (flattened first) or on a vector
        xf = rng.standard_normal((1, *shape), dtype=np.float32)
        want = fc(xf.reshape(1, -1))
        want = np.maximum(want, 0) if relu else want
        got = ort.run(ort.session(ort.layer_onnx(fc, shape, relu)), xf)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError):
        ort.layer_onnx(conv, (5, 11, 9))
    with pytest.raises(TypeError):
        ort.layer_onnx(object(), (6, 11, 9))


def test_layer_int8_close_to_dense():
    conv, fc = _layers()
    rng = np.random.default_rng(2)
    for layer, shape, relu in [(conv, (6, 11, 9), True), (fc, (96,), False)]:
        calib = rng.standard_normal((8, *shape), dtype=np.float32)
        x = calib[:1]  # MinMax ranges clip whatever the calibration images did not reach: stay inside them
        fns = ort.layer_fns(layer, x, relu, calib_images=calib)
        assert set(fns) == {ort.ORT_FP32, ort.ORT_INT8} and fns[ort.ORT_INT8].fmt == "QDQ"
        y = fns[ort.ORT_FP32]()[0]
        yq = fns[ort.ORT_INT8]()[0]
        assert np.abs(yq - y).max() <= 0.05 * np.abs(y).max()


def test_network_fns_and_na(mini, monkeypatch):
    x = _images(mini, 1)
    fns = ort.network_fns(mini, x, fmt="QOperator")
    np.testing.assert_allclose(fns[ort.ORT_FP32]()[0], mini.forward(x), rtol=1e-4, atol=1e-5)
    assert fns[ort.ORT_INT8].fmt == "QOperator" and fns[ort.ORT_INT8]()[0].shape == (1, 10)
    # the benchmark's form: LRN as elementary ops (ORT's faster form), recorded on both callables
    assert fns[ort.ORT_FP32].lrn == fns[ort.ORT_INT8].lrn == "ops"
    with pytest.raises(ValueError, match="fmt"):
        ort.network_fns(mini, x, fmt="QInt4")
    monkeypatch.setattr(ort, "available", lambda: False)  # as without onnx/onnxruntime: columns say n/a
    na = {ort.ORT_FP32: "n/a", ort.ORT_INT8: "n/a"}
    assert ort.network_fns(mini, x) == na
    assert ort.layer_fns(mini.params["fc8"], np.zeros((1, 768), np.float32)) == na
