"""Product quantization: k-means per sub-space, codes, and look-up tables.

Naming follows nanopq/faiss: ``fit``, ``encode``, ``decode``, ``lookup_table``.
A vector of dimension ``D = M * sub_dim`` is cut into ``M`` sub-vectors; each
sub-space has its own codebook of ``K = n_codewords`` codewords.
"""
from __future__ import annotations

import numpy as np

from qcnn_lite.nn.layers import code_dtype

__all__ = ["kmeans", "ProductQuantizer", "code_dtype"]


def _sq_dists(X: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances, (n, d) x (k, d) -> (n, k), clipped at 0."""
    d = (X * X).sum(1)[:, None] - 2.0 * (X @ C.T) + (C * C).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _kmeans_pp(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) with greedy trials, as scikit-learn."""
    n = X.shape[0]
    n_trials = 2 + int(np.log(k))
    centers = np.empty((k, X.shape[1]), dtype=X.dtype)
    centers[0] = X[rng.integers(n)]
    closest = _sq_dists(X, centers[:1])[:, 0]
    for i in range(1, k):
        total = closest.sum()
        if total <= 0:  # fewer distinct points than k: any point will do
            cand = rng.integers(n, size=n_trials)
        else:
            cand = np.searchsorted(np.cumsum(closest), rng.random(n_trials) * total)
            cand = np.minimum(cand, n - 1)
        d_cand = np.minimum(closest[None, :], _sq_dists(X, X[cand]).T)
        best = int(np.argmin(d_cand.sum(1)))
        centers[i] = X[cand[best]]
        closest = d_cand[best]
    return centers


def kmeans(
    X: np.ndarray, k: int, n_iter: int = 25, seed: int | np.random.Generator = 0, tol: float = 1e-7
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding.

    Parameters
    ----------
    X : (n, d) array
    k : number of clusters, ``1 <= k <= n``

    Returns
    -------
    centers : (k, d) float array
    labels : (n,) int64 array

    Empty clusters are re-seeded with the points farthest from their centre,
    so no centre is ever NaN.
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= n_samples, got k={k}, n_samples={n}")
    rng = np.random.default_rng(seed)
    centers = _kmeans_pp(X, k, rng)
    prev = np.inf
    for _ in range(max(n_iter, 1)):
        d = _sq_dists(X, centers)
        labels = d.argmin(1)
        inertia = d[np.arange(n), labels].sum()
        counts = np.bincount(labels, minlength=k)
        sums = np.zeros_like(centers)
        np.add.at(sums, labels, X)
        nonempty = counts > 0
        centers[nonempty] = sums[nonempty] / counts[nonempty, None]
        empty = np.flatnonzero(~nonempty)
        if empty.size:
            # Re-seed with the worst-served points: the standard fix, and it keeps k codewords useful.
            worst = np.argsort(d[np.arange(n), labels])[::-1][: empty.size]
            centers[empty] = X[worst]
        if np.isfinite(prev) and prev - inertia <= tol * prev and not empty.size:
            break
        prev = inertia
    labels = _sq_dists(X, centers).argmin(1)
    return centers, labels


class ProductQuantizer:
    """Product quantizer with ``M = dim / sub_dim`` sub-spaces of ``n_codewords`` codewords.

    Parameters
    ----------
    sub_dim : dimension of each sub-space (the paper's C's)
    n_codewords : codewords per sub-space codebook (the paper's K)
    n_iter : Lloyd iterations per sub-space
    seed : seed of the k-means++ initialisation

    Attributes
    ----------
    codebooks_ : (M, K, sub_dim) float32 array, set by :meth:`fit`
    labels_ : (n, M) uint8/uint16 codes of the training vectors, k-means' final assignment
    """

    def __init__(self, sub_dim: int, n_codewords: int, n_iter: int = 25, seed: int = 0):
        if int(sub_dim) != sub_dim or sub_dim < 1:
            raise ValueError(f"sub_dim must be a positive integer, got {sub_dim!r}")
        if int(n_codewords) != n_codewords or not 1 <= n_codewords <= 65536:
            raise ValueError(f"n_codewords must be an integer in [1, 65536], got {n_codewords!r}")
        if int(n_iter) != n_iter or n_iter < 1:
            raise ValueError(f"n_iter must be a positive integer, got {n_iter!r}")
        self.sub_dim = int(sub_dim)
        self.n_codewords = int(n_codewords)
        self.n_iter = int(n_iter)
        self.seed = seed

    # -- helpers -----------------------------------------------------------
    def _check_X(self, X: np.ndarray, fitting: bool = False) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-D array (n_samples, dim), got shape {X.shape}")
        if X.shape[0] == 0:
            raise ValueError("X is empty: product quantization needs at least one vector")
        if X.shape[1] % self.sub_dim:
            raise ValueError(f"dim={X.shape[1]} is not divisible by sub_dim={self.sub_dim}")
        if not np.isfinite(X).all():
            raise ValueError("X contains NaN or Inf")
        if not fitting:
            self._check_fitted()
            if X.shape[1] != self.codebooks_.shape[0] * self.sub_dim:
                raise ValueError(
                    f"X has dim {X.shape[1]}, the quantizer was fitted on dim "
                    f"{self.codebooks_.shape[0] * self.sub_dim}"
                )
        return X

    def _check_fitted(self) -> None:
        if not hasattr(self, "codebooks_"):
            raise RuntimeError("this ProductQuantizer is not fitted yet: call fit(X) first")

    @property
    def n_subspaces(self) -> int:
        self._check_fitted()
        return self.codebooks_.shape[0]

    # -- estimator API -----------------------------------------------------
    def fit(self, X: np.ndarray) -> "ProductQuantizer":
        """Learn one k-means codebook per sub-space from X (n, dim)."""
        X = self._check_X(X, fitting=True)
        n, dim = X.shape
        if self.n_codewords > n:
            raise ValueError(f"n_codewords={self.n_codewords} is larger than the number of vectors n={n}")
        M = dim // self.sub_dim
        rng = np.random.default_rng(self.seed)
        books = np.empty((M, self.n_codewords, self.sub_dim), dtype=np.float32)
        labels = np.empty((n, M), dtype=code_dtype(self.n_codewords))
        for m in range(M):  # one generator through all sub-spaces: a seed fixes the whole quantizer
            sub = X[:, m * self.sub_dim : (m + 1) * self.sub_dim]
            books[m], labels[:, m] = kmeans(sub, self.n_codewords, self.n_iter, rng)
        self.codebooks_ = books
        self.labels_ = labels
        return self

    def encode(self, X: np.ndarray) -> np.ndarray:
        """Nearest codeword per sub-space: X (n, dim) -> codes (n, M), uint8 or uint16."""
        X = self._check_X(X)
        M = self.n_subspaces
        Xs = X.reshape(X.shape[0], M, self.sub_dim).astype(np.float64)
        codes = np.empty((X.shape[0], M), dtype=code_dtype(self.n_codewords))
        for m in range(M):
            codes[:, m] = _sq_dists(Xs[:, m], self.codebooks_[m].astype(np.float64)).argmin(1)
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Reconstruct vectors: codes (n, M) -> (n, dim) float32."""
        self._check_fitted()
        codes = np.asarray(codes)
        M = self.n_subspaces
        if codes.ndim != 2 or codes.shape[1] != M:
            raise ValueError(f"codes must have shape (n, {M}), got {codes.shape}")
        if not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"codes must be integers, got dtype {codes.dtype}")
        if codes.size and (codes.min() < 0 or codes.max() >= self.n_codewords):
            raise ValueError(f"codes must lie in [0, {self.n_codewords}), got [{codes.min()}, {codes.max()}]")
        out = self.codebooks_[np.arange(M)[None, :], codes]  # (n, M, sub_dim)
        return out.reshape(codes.shape[0], M * self.sub_dim)

    def lookup_table(self, q: np.ndarray) -> np.ndarray:
        """Inner products of a query with every codeword: q (dim,) -> (M, K); q (n, dim) -> (n, M, K).

        ``<q, decode(c)> == lookup_table(q)[arange(M), c].sum()`` -- the Q-CNN trick.
        """
        self._check_fitted()
        q = np.asarray(q, dtype=np.float32)
        single = q.ndim == 1
        Q = self._check_X(q[None, :] if single else q)
        M = self.n_subspaces
        lut = np.einsum("nmd,mkd->nmk", Q.reshape(Q.shape[0], M, self.sub_dim), self.codebooks_)
        return lut[0] if single else lut

    def distortion(self, X: np.ndarray) -> float:
        """Mean squared reconstruction error per vector, ``mean ||x - decode(encode(x))||^2``."""
        X = self._check_X(X)
        return float(((X - self.decode(self.encode(X))) ** 2).sum(1).mean())
