"""Shared test helpers: seeded data, relative error, small networks and layer cases, one torch thread."""
import os

import numpy as np
import pytest

os.environ.setdefault("QCNN_PROGRESS", "0")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def rel_err(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def conv_case(rng, C, H, W, Ct, k, stride, padding, groups, d, K, n=1, code_dtype=None):
    """A random quantized conv layer and its input: (x, codebooks, codes, bias, stride, padding, groups),
    the arguments of ``kernels.conv2d_lut``; x (n, C, H, W), codes (Ct, k, k, M) with M = C/groups/d."""
    M = C // groups // d
    x = rng.standard_normal((n, C, H, W), dtype=np.float32)
    books = rng.standard_normal((M, K, d), dtype=np.float32)
    dt = code_dtype or (np.uint8 if K <= 256 else np.uint16)
    codes = rng.integers(0, K, (Ct, k, k, M)).astype(dt)
    bias = rng.standard_normal(Ct, dtype=np.float32)
    return x, books, codes, bias, stride, padding, groups


def tiny_net(seed=0):
    """A dense conv-pool-conv-fc-fc network on 2x8x8 inputs, seeded: small enough to quantize in a test."""
    from qcnn_lite.nn.engine import Network, build_layer
    from qcnn_lite.nn.spec import output_shapes

    spec = [
        {"type": "conv", "name": "c1", "out": 8, "kernel": 3, "stride": 1, "padding": 1, "groups": 1}, {"type": "relu"},
        {"type": "maxpool", "kernel": 2, "stride": 2},
        {"type": "conv", "name": "c2", "out": 12, "kernel": 3, "stride": 1, "padding": 1, "groups": 2}, {"type": "relu"},
        {"type": "flatten"}, {"type": "fc", "name": "f1", "out": 16}, {"type": "relu"},
        {"type": "fc", "name": "f2", "out": 4}, {"type": "softmax"},
    ]
    shape = (2, 8, 8)
    rng = np.random.default_rng(seed)
    shapes = [shape] + output_shapes(spec, shape)
    params = {L["name"]: build_layer(L, shapes[i], rng) for i, L in enumerate(spec) if L["type"] in ("conv", "fc")}
    return Network("tiny", shape, spec, params)


@pytest.fixture
def one_torch_thread():
    """One torch thread: on a 2-core machine shared with other work, more threads run far slower."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
