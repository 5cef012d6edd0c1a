"""The numpy engine against torch: LRN, max-pooling, and whole networks."""
import numpy as np
import pytest

from qcnn_lite import Network
from qcnn_lite.nn import models
from qcnn_lite.nn.engine import lrn, maxpool, output_shapes, softmax
from conftest import rel_err

torch = pytest.importorskip("torch")
nn = torch.nn


def test_lrn_matches_torch_local_response_norm(rng):
    x = rng.standard_normal((2, 9, 5, 4)).astype(np.float32) * 3
    for size, alpha, beta, k in [(5, 1e-4, 0.75, 1.0), (5, 5e-4, 0.75, 2.0), (3, 0.1, 0.5, 1.5)]:
        ref = nn.LocalResponseNorm(size, alpha, beta, k)(torch.from_numpy(x)).numpy()
        assert rel_err(lrn(x, size, alpha, beta, k), ref) < 1e-5


@pytest.mark.parametrize("ceil", [False, True])
@pytest.mark.parametrize("kernel,stride,H,W", [(3, 2, 13, 13), (3, 3, 20, 17), (2, 2, 7, 9), (3, 2, 6, 6), (3, 3, 1, 4)])
def test_maxpool_matches_torch(rng, ceil, kernel, stride, H, W):
    if kernel > min(H, W):
        pytest.skip("kernel larger than the map")
    x = rng.standard_normal((2, 3, H, W)).astype(np.float32)
    ref = nn.functional.max_pool2d(torch.from_numpy(x), kernel, stride, ceil_mode=ceil).numpy()
    np.testing.assert_array_equal(maxpool(x, kernel, stride, ceil), ref)


def test_softmax_rows_sum_to_one(rng):
    p = softmax(rng.standard_normal((4, 10)).astype(np.float32) * 50)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-6)


def _torch_model(net: Network) -> "nn.Module":
    mods = []
    for L in net.spec:
        t = L["type"]
        if t == "conv":
            p = net.params[L["name"]]
            m = nn.Conv2d(p.in_channels, p.out_channels, L["kernel"], L["stride"], L["padding"], groups=L["groups"])
            m.weight.data = torch.from_numpy(p.weight.copy())
            m.bias.data = torch.from_numpy(p.bias.copy())
        elif t == "fc":
            p = net.params[L["name"]]
            m = nn.Linear(p.in_features, p.out_features)
            m.weight.data = torch.from_numpy(p.weight.copy())
            m.bias.data = torch.from_numpy(p.bias.copy())
        elif t == "relu":
            m = nn.ReLU()
        elif t == "lrn":
            m = nn.LocalResponseNorm(L["size"], L["alpha"], L["beta"], L["k"])
        elif t == "maxpool":
            m = nn.MaxPool2d(L["kernel"], L["stride"], ceil_mode=L["ceil"])
        elif t == "flatten":
            m = nn.Flatten()
        elif t == "softmax":
            m = nn.Softmax(-1)
        else:
            m = nn.Identity()
        mods.append(m)
    return nn.Sequential(*mods).eval()


@pytest.mark.parametrize("name", ["alexnet", "cnns"])
def test_full_size_forward_matches_torch(name, rng):
    net = models.synthetic(name, seed=3)
    x = rng.standard_normal((1,) + net.input_shape).astype(np.float32)
    ours = net.forward(x, stop=len(net.spec) - 1)  # logits: compare before the softmax
    with torch.no_grad():
        ref = _torch_model(net)[:-1](torch.from_numpy(x)).numpy()
    assert rel_err(ours, ref) < 1e-4


def test_shapes_of_full_size_specs():
    for name, final in [("alexnet", (256, 6, 6)), ("cnns", (512, 6, 6)), ("vgg16", (512, 7, 7))]:
        input_shape, spec = models.spec(name)
        shapes = output_shapes(spec, input_shape)
        flat = [i for i, L in enumerate(spec) if L["type"] == "flatten"][0]
        assert shapes[flat - 1] == final
        assert shapes[-1] == (1000,)


def test_forward_does_not_modify_its_input(rng):
    net = models.synthetic("alexnet")
    x = rng.standard_normal((1, 3, 227, 227)).astype(np.float32)
    x0 = x.copy()
    net.forward(x, stop=3)
    np.testing.assert_array_equal(x, x0)


def test_bad_spec_and_input_are_clear_errors():
    with pytest.raises(ValueError, match="unknown layer type"):
        Network("x", (1, 4, 4), [{"type": "warp"}])
    with pytest.raises(ValueError, match="unique name"):
        Network("x", (1, 4, 4), [{"type": "fc", "out": 2}])
    with pytest.raises(ValueError, match="does not fit"):
        Network("x", (1, 4, 4), [{"type": "conv", "name": "c", "out": 2, "kernel": 7}])
    net = models.synthetic("alexnet")
    with pytest.raises(ValueError, match="expects input"):
        net.forward(np.zeros((1, 3, 224, 224), np.float32))


@pytest.mark.parametrize("quantized", [False, True])
def test_fused_conv_relu_equals_unfused(quantized, rng):
    """forward() fuses conv + ReLU; layer by layer (run_layer) they run apart: the same numbers."""
    from qcnn_lite.bench.synthetic import quantized_network
    from qcnn_lite.paper.constants import MINI_SETTINGS

    net = quantized_network("mini-cnns", MINI_SETTINGS["mini-cnns"][0]) if quantized else models.synthetic("mini-cnns", 0)
    x = rng.standard_normal((2,) + net.input_shape, dtype=np.float32)
    y = x.copy()
    for i in range(len(net.spec)):
        y = net.run_layer(i, y)
    np.testing.assert_array_equal(net.forward(x), y)
