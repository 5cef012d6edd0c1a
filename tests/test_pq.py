import numpy as np
import pytest

from qcnn_lite import ProductQuantizer
from qcnn_lite.quant.pq import kmeans


def clustered(rng, n=3000, d=8, centers=20):
    c = rng.standard_normal((centers, d)) * 3
    return (c[rng.integers(centers, size=n)] + rng.standard_normal((n, d))).astype(np.float32)


def test_kmeans_matches_sklearn_distortion(rng):
    sklearn = pytest.importorskip("sklearn.cluster")
    X = clustered(rng)
    # single k-means runs land in different local minima: compare the mean over seeds
    for k in (8, 32):
        ours, theirs = [], []
        for seed in range(6):
            centers, labels = kmeans(X, k, n_iter=100, seed=seed)
            ours.append(((X - centers[labels]) ** 2).sum(1).mean())
            ref = sklearn.KMeans(k, n_init=1, random_state=seed, max_iter=100).fit(X)
            theirs.append(ref.inertia_ / len(X))
        assert np.mean(ours) <= np.mean(theirs) * 1.02, (k, ours, theirs)


def test_distortion_falls_as_K_grows(rng):
    X = clustered(rng, d=16)
    d = [ProductQuantizer(4, K, seed=0).fit(X).distortion(X) for K in (2, 4, 16, 64, 256)]
    assert all(a > b for a, b in zip(d, d[1:])), d


def test_encode_decode_and_lookup_table(rng):
    X = clustered(rng, d=12)
    pq = ProductQuantizer(3, 16).fit(X)
    assert pq.codebooks_.shape == (4, 16, 3) and pq.codebooks_.dtype == np.float32
    codes = pq.encode(X)
    assert codes.shape == (len(X), 4) and codes.dtype == np.uint8
    Xh = pq.decode(codes)
    # every sub-vector is replaced by its nearest codeword
    for m in range(4):
        d = ((X[:, 3 * m : 3 * m + 3, None] - pq.codebooks_[m].T[None]) ** 2).sum(1)
        np.testing.assert_array_equal(d.argmin(1), codes[:, m])
    q = rng.standard_normal(12).astype(np.float32)
    lut = pq.lookup_table(q)
    assert lut.shape == (4, 16)
    approx = lut[np.arange(4), codes[:5]].sum(1)
    np.testing.assert_allclose(approx, Xh[:5] @ q, rtol=1e-5, atol=1e-5)


def test_empty_clusters_are_reseeded():
    # 5 distinct points, many duplicates: k-means with k=5 must use all 5, never NaN
    X = np.repeat(np.eye(5, dtype=np.float32), 50, axis=0)
    centers, labels = kmeans(X, 5, seed=3)
    assert np.isfinite(centers).all()
    assert len(np.unique(labels)) == 5
    # more clusters than distinct points: still finite
    centers, _ = kmeans(np.ones((10, 2)), 4)
    assert np.isfinite(centers).all()


def test_uint16_codes_beyond_256(rng):
    X = rng.standard_normal((600, 2)).astype(np.float32)
    pq = ProductQuantizer(2, 300, n_iter=3).fit(X)
    assert pq.encode(X).dtype == np.uint16


@pytest.mark.parametrize(
    "make, msg",
    [
        (lambda: ProductQuantizer(0, 4), "sub_dim"),
        (lambda: ProductQuantizer(2, 0), "n_codewords"),
        (lambda: ProductQuantizer(3, 4).fit(np.zeros((10, 4))), "divisible"),
        (lambda: ProductQuantizer(2, 64).fit(np.zeros((10, 4))), "larger than"),
        (lambda: ProductQuantizer(2, 2).fit(np.full((10, 4), np.nan)), "NaN"),
        (lambda: ProductQuantizer(2, 2).fit(np.zeros((0, 4))), "empty"),
        (lambda: ProductQuantizer(2, 2).encode(np.zeros((3, 4))), "not fitted"),
    ],
)
def test_bad_arguments(make, msg):
    with pytest.raises((ValueError, RuntimeError), match=msg):
        make()


def test_decode_rejects_bad_codes(rng):
    pq = ProductQuantizer(2, 4).fit(rng.standard_normal((20, 4)))
    with pytest.raises(ValueError, match="lie in"):
        pq.decode(np.full((1, 2), 4))
