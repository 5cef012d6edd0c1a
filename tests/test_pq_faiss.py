"""faiss's ProductQuantizer as an independent check of qcnn_lite.quant.pq.ProductQuantizer.

Same data (the weight rows of the mini AlexNet's fc layers), same M, K and 25
Lloyd iterations: our reconstruction error must be no worse than faiss's (1%
slack). Ours is usually a little better: it seeds each sub-space with
k-means++ (greedy trials, as scikit-learn), faiss with a random sample of the
points; both then run the same Lloyd iterations. Measured (one thread, AMD
EPYC): fc6 K=16 0.8361 vs faiss 0.8378, fc6 K=32 0.5760 vs 0.5802, fc7 K=32
0.6200 vs 0.6275 (mean squared error per row); our fit took 3-4x longer
(0.8-1.4 s vs 0.2-0.4 s): numpy k-means per sub-space against faiss's C++.
"""
from pathlib import Path

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from qcnn_lite.io import modelfile  # noqa: E402
from qcnn_lite.quant.pq import ProductQuantizer  # noqa: E402

MODEL = Path(__file__).resolve().parents[1] / "data" / "models" / "mini-alexnet.qcnn"


@pytest.mark.slow
@pytest.mark.skipif(not MODEL.exists(), reason=f"{MODEL} is missing")
@pytest.mark.parametrize("layer,sub_dim,K", [("fc6", 4, 16), ("fc6", 4, 32), ("fc7", 4, 32)])
def test_reconstruction_no_worse_than_faiss(layer, sub_dim, K):
    w = np.ascontiguousarray(modelfile.load(MODEL).params[layer].weight, np.float32)
    n, dim = w.shape
    M = dim // sub_dim
    ours = ProductQuantizer(sub_dim, K, n_iter=25, seed=0).fit(w)
    err_ours = ours.distortion(w)

    pq = faiss.ProductQuantizer(dim, M, int(np.log2(K)))
    pq.cp.niter = 25
    pq.cp.seed = 0
    pq.cp.min_points_per_centroid = 1  # silences its 'provide more points' warning; no effect on the result
    pq.train(w)
    rec = pq.decode(pq.compute_codes(w))
    err_faiss = float(((w - rec) ** 2).sum(1).mean())

    assert err_ours <= err_faiss * 1.01, (err_ours, err_faiss)


def test_fastscan_peer_computes_the_layer_sums(rng):
    """The bench peer (bench.faiss_peer.faiss_fastscan) is a layer: every output's x . w_o, approximated at K=16."""
    from qcnn_lite.bench.faiss_peer import faiss_fastscan

    w = rng.standard_normal((300, 64)).astype(np.float32)
    x = rng.standard_normal((1, 64)).astype(np.float32)
    peer = faiss_fastscan(w, 16)
    scores, ids = peer.all_outputs(x)
    assert ids.shape == (1, 300) and sorted(ids[0]) == list(range(300))  # every output
    exact = (w @ x[0])[ids[0]]
    assert np.corrcoef(scores[0], exact)[0, 1] > 0.75  # 4-bit PQ of random 4-D sub-vectors: about 0.84
    assert peer.top1(x)[1].shape == (1, 1)


def test_bench_table_says_n_a_without_faiss():
    from qcnn_lite.bench import benchmarks as bench

    t = {"numpy-dense": {"cpu_median_ms": 2.0, "median_ms": 2.0, "min_ms": 2.0, "max_ms": 2.0},
         bench._FAISS: None, "qcnn-pythran": {"cpu_median_ms": 1.0, "median_ms": 1.0, "min_ms": 1.0, "max_ms": 1.0}}
    conv = {k: v for k, v in t.items() if k != bench._FAISS}
    out = bench._time_table([("fc", t, bench._speedups(t)), ("conv", conv, bench._speedups(conv))], cpu=True)
    fc_row, conv_row = out.splitlines()[2], out.splitlines()[3]
    assert bench._FAISS in out and "n/a" in fc_row and "n/a" not in conv_row


def test_fastscan_peer_is_na_below_16_outputs():
    """faiss cannot train 16 centroids on fewer rows: the peer is absent ("n/a"), not an error (mini fc8 has 10)."""
    from qcnn_lite.bench.faiss_peer import faiss_fastscan

    w = np.random.default_rng(0).standard_normal((10, 64)).astype(np.float32)
    assert faiss_fastscan(w, 16) is None
    assert faiss_fastscan(np.vstack([w, w]), 16) is not None
