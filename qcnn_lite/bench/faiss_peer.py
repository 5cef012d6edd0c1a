"""faiss fast-scan as a measured peer of the fc layers (``IndexPQFastScan``, 4-bit codes)."""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["FaissFastScan", "faiss_fastscan"]


class FaissFastScan:
    """faiss ``IndexPQFastScan`` over the rows of a weight (out, in): M sub-spaces of 4 bits (K=16).

    It stores the weight rows as the database, so a search with x as the query computes
    the table sum of every output, x . w_o, as our fc kernels do (then a top-k selection,
    which ours do not need). faiss fast-scan supports only K=16; it trains its own codebooks
    on the rows. ``all_outputs`` (k = out, every sum) is the peer of a layer; ``top1`` its
    cheapest use.
    """

    def __init__(self, faiss: Any, weight: np.ndarray, n_subspaces: int) -> None:
        w = np.ascontiguousarray(weight, dtype=np.float32)
        self.n_out, n_in = w.shape
        if n_in % n_subspaces:
            raise ValueError(f"{n_subspaces} sub-spaces do not divide {n_in} inputs")
        self.index = faiss.IndexPQFastScan(n_in, n_subspaces, 4, faiss.METRIC_INNER_PRODUCT)  # outputs: x . w_o
        old = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # OpenMP's spinning threads make training 30x slower on a busy 2-core machine
        try:
            # 1024 rows train 16 centroids per sub-space well (faiss asks >= 39 points each); the codebook
            # values do not change the search time, and every row is added
            self.index.train(w[np.random.default_rng(0).permutation(self.n_out)[:1024]] if self.n_out > 1024 else w)
            self.index.add(w)
        finally:
            faiss.omp_set_num_threads(old)

    def all_outputs(self, x: np.ndarray) -> Any:
        """x (n, in) -> faiss's (scores, ids) of every output."""
        return self.index.search(x, self.n_out)

    def top1(self, x: np.ndarray) -> Any:
        return self.index.search(x, 1)


def faiss_fastscan(weight: np.ndarray, n_subspaces: int) -> FaissFastScan | None:
    """A :class:`FaissFastScan` of the weight, or None (an "n/a" column) when faiss is not installed
    (``bench`` extra) or the layer has fewer outputs than the K=16 centroids faiss must train."""
    try:
        import faiss
    except ImportError:
        return None
    if np.shape(weight)[0] < 16:
        return None
    return FaissFastScan(faiss, weight, n_subspaces)
