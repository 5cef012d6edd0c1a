"""Error correction: fit codebooks and assignments to a layer's *response*, not its weights.

The paper minimises, over codebooks D(m) and one-hot assignments B(m),

    E = sum_n || T_n - W S_n ||^2,      W = the weights rebuilt from (D, B),

with T_n the original network's response and S_n the layer input. Both fc and
conv layers fit one shape here: the weight of output ``o`` is a row of
``n_taps * M`` blocks of ``d`` numbers (an fc layer has one tap; a conv layer
has kh*kw taps that share sub-space m's codebook). Block (t, m) of row o is
codeword ``codes[o, t, m]`` of codebook m.

E is a quadratic in W, so it only needs the input Gram matrix and the
input-target cross products (``ResponseStats``), whatever the number of
samples. Block coordinate descent then alternates, per sub-space:

* D(m) by least squares with the assignments fixed (a ridge towards the old
  codebook keeps unused codewords in place and makes every step a descent);
* B(m) by exhaustive search over the K codewords for every output and tap.

Every step solves its sub-problem exactly, so E never rises above the plain
product-quantization starting point.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ResponseStats", "refine", "response_error"]


@dataclass
class ResponseStats:
    """Centred second moments of a layer's inputs S (n, D) and targets T (n, O).

    ``G = Sc^T Sc`` (D, D), ``P = Sc^T Tc`` (D, O), ``tt = ||Tc||^2`` and the means,
    accumulated in float64 over any number of chunks (Chan's parallel update).
    """

    dim_in: int
    dim_out: int
    n: int = 0
    s_mean: np.ndarray = field(init=False)
    t_mean: np.ndarray = field(init=False)
    G: np.ndarray = field(init=False)
    P: np.ndarray = field(init=False)
    tt: float = 0.0

    def __post_init__(self) -> None:
        self.s_mean = np.zeros(self.dim_in)
        self.t_mean = np.zeros(self.dim_out)
        self.G = np.zeros((self.dim_in, self.dim_in))
        self.P = np.zeros((self.dim_in, self.dim_out))

    def update(self, S: np.ndarray, T: np.ndarray) -> "ResponseStats":
        S = np.asarray(S, dtype=np.float64)
        T = np.asarray(T, dtype=np.float64)
        if S.shape[0] != T.shape[0] or S.shape[1] != self.dim_in or T.shape[1] != self.dim_out:
            raise ValueError(f"inputs {S.shape} and targets {T.shape} do not match ({self.dim_in}, {self.dim_out})")
        m = S.shape[0]
        if m == 0:
            return self
        sm, tm = S.mean(0), T.mean(0)
        Sc, Tc = S - sm, T - tm
        n = self.n
        w = n * m / (n + m)
        ds, dt = sm - self.s_mean, tm - self.t_mean
        # float32 products, float64 sums: half the time, and a chunk's rounding error is ~1e-7
        Sc32, Tc32 = Sc.astype(np.float32), Tc.astype(np.float32)
        self.G += (Sc32.T @ Sc32).astype(np.float64) + w * np.outer(ds, ds)
        self.P += (Sc32.T @ Tc32).astype(np.float64) + w * np.outer(ds, dt)
        self.tt += float((Tc * Tc).sum() + w * (dt * dt).sum())
        self.s_mean += ds * m / (n + m)
        self.t_mean += dt * m / (n + m)
        self.n = n + m
        return self


def response_error(W: np.ndarray, stats: ResponseStats) -> float:
    """Relative response error ``||Tc - Sc W^T||^2 / ||Tc||^2`` for W (O, D); 0 is perfect."""
    E = np.einsum("od,de,oe->", W, stats.G, W) - 2.0 * np.einsum("od,do->", W, stats.P) + stats.tt
    return float(max(E, 0.0) / max(stats.tt, 1e-300))


def _rebuild(codebooks: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """codebooks (M, K, d), codes (O, T, M) -> W (O, T*M*d) in (tap, m, c) order."""
    M = codebooks.shape[0]
    return codebooks[np.arange(M), codes].reshape(codes.shape[0], -1).astype(np.float64)


class _Responses:
    """The layer's current weight W (O, T*M*d) and, per group g, G_g @ W_g.T: what every step of
    :func:`refine` reads, kept up to date as codebooks and codes change."""

    def __init__(self, D: np.ndarray, codes: np.ndarray, stats: list[ResponseStats]):
        self.stats = stats
        self.og = codes.shape[0] // len(stats)
        self.W = _rebuild(D, codes)  # (O, T*M*d)
        self.GW = [s.G @ self.W[self.rows(g)].T for g, s in enumerate(stats)]  # (Din, og) each
        self.total_tt = sum(s.tt for s in stats)

    def rows(self, g: int) -> slice:
        return slice(g * self.og, (g + 1) * self.og)

    def error(self) -> float:
        """The relative response error of W."""
        E = sum(
            np.einsum("od,do->", self.W[self.rows(g)], self.GW[g]) - 2 * np.einsum("od,do->", self.W[self.rows(g)], s.P)
            + s.tt
            for g, s in enumerate(self.stats)
        )
        return float(max(E, 0.0) / max(self.total_tt, 1e-300))

    def set_block(self, g: int, J: np.ndarray, new: np.ndarray) -> None:
        """W[rows of group g, J] = new, and G @ W.T with it."""
        rows = self.rows(g)
        delta = new - self.W[rows, J]  # (og, len(J))
        if np.any(delta):
            self.GW[g] += self.stats[g].G[:, J] @ delta.T
            self.W[rows, J] = new


def _codebook_system(r: _Responses, codes: np.ndarray, m: int, Jm: np.ndarray, K: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """The normal equations of codebook m with the assignments fixed: H (K*d, K*d) and h (K*d,)."""
    T = codes.shape[1]
    H = np.zeros((K * d, K * d))
    h = np.zeros(K * d)
    for g, s in enumerate(r.stats):
        rows = r.rows(g)
        a = codes[rows, :, m].astype(np.intp)  # (og, T)
        Gmm = s.G[np.ix_(Jm, Jm)]  # (T*d, T*d)
        # quadratic term: H[a_t, a_u] += G[block t, block u] for every output and tap pair
        key = (a[:, :, None] * K + a[:, None, :]).reshape(-1)
        Gtu = Gmm.reshape(T, d, T, d).transpose(0, 2, 1, 3).reshape(T * T, d * d)
        H4 = np.stack([np.bincount(key, np.tile(Gtu[:, c], r.og), K * K) for c in range(d * d)], 1)
        H += H4.reshape(K, K, d, d).transpose(0, 2, 1, 3).reshape(K * d, K * d)
        # linear term: gradient w.r.t. block (t, m) with sub-space m's own part removed
        Q = r.GW[g][Jm] - Gmm @ r.W[rows][:, Jm].T - s.P[Jm]  # (T*d, og)
        Qt = Q.reshape(T, d, r.og).transpose(2, 0, 1).reshape(r.og * T, d)
        hk = np.zeros((K, d))
        np.add.at(hk, a.reshape(-1), Qt)
        h += hk.reshape(-1)
    return H, h


def _solve_codebook(H: np.ndarray, h: np.ndarray, old: np.ndarray, T: int, ridge: float) -> np.ndarray:
    """Codebook (K, d) minimising the response error plus a small pull towards ``old`` (K, d)."""
    K, d = old.shape
    lam = ridge * max(np.trace(H) / (K * d), 1e-12)
    rhs = lam * old.reshape(-1) - h
    if T == 1:  # fc layer: H is block-diagonal, K independent d x d systems
        blocks = H.reshape(K, d, K, d)[np.arange(K), :, np.arange(K), :] + lam * np.eye(d)
        return np.linalg.solve(blocks, rhs.reshape(K, d, 1))[..., 0]
    return np.linalg.solve(H + lam * np.eye(K * d), rhs).reshape(K, d)


def _assign(r: _Responses, codes: np.ndarray, Dm: np.ndarray, J: np.ndarray, t: int, m: int) -> None:
    """Codes of block (t, m), IN PLACE: for every output the codeword of Dm (K, d) that lowers the error most."""
    for g, s in enumerate(r.stats):
        rows = r.rows(g)
        Gjj = s.G[np.ix_(J, J)]
        grad = r.GW[g][J] - Gjj @ r.W[rows, J].T - s.P[J]  # (d, og)
        quad = np.einsum("kc,ce,ke->k", Dm, Gjj, Dm)
        cost = quad[None, :] + 2.0 * (grad.T @ Dm.T)  # (og, K)
        codes[rows, t, m] = cost.argmin(1)
        r.set_block(g, J, Dm[codes[rows, t, m]])


def refine(
    codebooks: np.ndarray,
    codes: np.ndarray,
    stats: list[ResponseStats],
    n_iter: int = 4,
    ridge: float = 1e-6,
    progress=None,
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Block coordinate descent on the response error.

    Parameters
    ----------
    codebooks : (M, K, d) starting codebooks (shared by taps and groups)
    codes : (O, T, M) starting assignments; output rows split evenly over ``len(stats)`` groups
    stats : one ResponseStats per group, with D = T*M*d inputs and O/groups outputs
    n_iter : sweeps over all sub-spaces
    ridge : relative weight of the pull towards the previous codebook

    Returns
    -------
    codebooks (M, K, d) float32, codes (O, T, M) and the relative response error
    after 0, 1, ..., n_iter sweeps.
    """
    D = codebooks.astype(np.float64)
    codes = codes.copy()
    M, K, d = D.shape
    T = codes.shape[1]
    r = _Responses(D, codes, stats)
    # cols[t, m] = the d input indices of block (t, m)
    cols = (np.arange(T)[:, None, None] * (M * d) + np.arange(M)[None, :, None] * d + np.arange(d)).astype(np.intp)
    history = [r.error()]
    for _ in range(n_iter):
        for m in range(M):
            Jm = cols[:, m].reshape(-1)  # (T*d,) in (t, c) order
            H, h = _codebook_system(r, codes, m, Jm, K, d)  # codebook m by least squares, assignments fixed
            D[m] = Dm = _solve_codebook(H, h, D[m], T, ridge)
            for g in range(len(stats)):
                r.set_block(g, Jm, Dm[codes[r.rows(g), :, m]].reshape(r.og, T * d))
            for t in range(T):  # then the assignments of sub-space m, tap by tap, by exhaustive search
                _assign(r, codes, Dm, cols[t, m], t, m)
            if progress is not None:
                progress()
        history.append(r.error())
    return D.astype(np.float32), codes, history
