"""Error correction: the response error falls below plain product quantization and never above it."""
import numpy as np
import pytest

from qcnn_lite.quant.correction import ResponseStats, response_error
from qcnn_lite.quant.quantize import quantize_conv2d, quantize_linear


def correlated(rng, n, dim, rank=6, noise=0.05):
    z = rng.standard_normal((n, rank))
    return (z @ rng.standard_normal((rank, dim)) + noise * rng.standard_normal((n, dim))).astype(np.float32)


def rel_response_error(layer, X, T):
    Y = layer(X)
    return float(((Y - T) ** 2).sum() / ((T - T.mean(0)) ** 2).sum())


def test_linear_error_correction_beats_plain_pq(rng):
    X = correlated(rng, 3000, 64)
    w = rng.standard_normal((48, 64)).astype(np.float32)
    b = rng.standard_normal(48).astype(np.float32)
    T = X @ w.T + b
    plain = quantize_linear(w, b, 4, 16)
    ec = quantize_linear(w, b, 4, 16, calib=X, n_iter=6)
    e_plain, e_ec = rel_response_error(plain, X, T), rel_response_error(ec, X, T)
    assert e_ec < 0.25 * e_plain, (e_plain, e_ec)
    # the recorded history starts at plain PQ and never rises
    h = ec.history_
    assert h[0] == pytest.approx(e_plain, rel=1e-3)
    assert all(b <= a + 1e-9 for a, b in zip(h, h[1:])), h


def _conv_reference(x, w, padding, groups):
    """Direct grouped convolution, stride 1: a sum over taps of shifted maps, nothing shared with im2col."""
    n, C, H, W = x.shape
    Ct, cg, kh, kw = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    OH, OW = H + 2 * padding - kh + 1, W + 2 * padding - kw + 1
    out = np.zeros((n, Ct, OH, OW))
    og = Ct // groups
    for g in range(groups):
        xs = xp[:, g * cg : (g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                out[:, g * og : (g + 1) * og] += np.einsum("nchw,oc->nohw", xs[:, :, i : i + OH, j : j + OW],
                                                           w[g * og : (g + 1) * og, :, i, j])
    return out


def test_conv_error_correction_never_worse(rng):
    x = np.cumsum(rng.standard_normal((12, 8, 10, 10)), axis=1).astype(np.float32)  # correlated channels
    w = rng.standard_normal((12, 4, 3, 3)).astype(np.float32)
    plain = quantize_conv2d(w, None, 1, 1, 2, sub_dim=2, n_codewords=8)
    ec = quantize_conv2d(w, None, 1, 1, 2, sub_dim=2, n_codewords=8, calib=x, n_iter=3)
    ref = _conv_reference(x, w, 1, 2)
    e = lambda q: float(((q(x) - ref) ** 2).sum() / (ref**2).sum())  # noqa: E731
    assert e(ec) < 0.7 * e(plain), (e(plain), e(ec))
    assert ec.history_[0] == pytest.approx(e(plain), rel=1e-3)  # the history starts at plain PQ ...
    assert all(b <= a + 1e-9 for a, b in zip(ec.history_, ec.history_[1:]))  # ... and never rises


def test_error_correction_with_external_targets(rng):
    # targets from a *different* layer: the quantized layer should move towards them
    X = correlated(rng, 2000, 32)
    w = rng.standard_normal((16, 32)).astype(np.float32)
    w2 = w + 0.3 * rng.standard_normal(w.shape).astype(np.float32)
    T = X @ w2.T
    q_own = quantize_linear(w, None, 4, 8, calib=X, n_iter=4)
    q_tgt = quantize_linear(w, None, 4, 8, calib=X, targets=T, n_iter=4)
    assert rel_response_error(q_tgt, X, T) < rel_response_error(q_own, X, T)


def test_response_stats_chunked_equals_whole(rng):
    S = rng.standard_normal((500, 6))
    T = rng.standard_normal((500, 3))
    a = ResponseStats(6, 3).update(S, T)
    b = ResponseStats(6, 3)
    for i in range(0, 500, 77):
        b.update(S[i : i + 77], T[i : i + 77])
    np.testing.assert_allclose(a.G, b.G, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(a.P, b.P, rtol=1e-5, atol=1e-4)
    assert a.tt == pytest.approx(b.tt)
    W = rng.standard_normal((3, 6))
    direct = (((T - T.mean(0)) - (S - S.mean(0)) @ W.T) ** 2).sum() / ((T - T.mean(0)) ** 2).sum()
    assert response_error(W, a) == pytest.approx(direct, rel=1e-5)
