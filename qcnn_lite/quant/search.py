"""Settings search: choose (C's, K) per layer for a storage or speed budget.

The paper chose its settings by hand, one (C's, K) for every conv layer and one
for the fc layers. This module chooses per layer, in four steps:

1. **Grid** (:func:`candidate_grid`): for each conv/fc layer every C's in
   1..``max_sub_dim`` that divides its input channels (per group), with K a
   power of two from 4 to 256 (at most the sub-vectors a sub-space has).
2. **Cost** (:func:`candidate_costs`): each candidate's bytes and FLOPs from
   :mod:`qcnn_lite.paper.cost`, for free. With K a power of two the bytes are a
   whole number of bits, so budgets are checked exactly.
3. **Sensitivity** (:func:`layer_sensitivity`): on a held-out split of the
   training set, quantize only that layer with plain k-means and measure the
   mean KL divergence of the network's class probabilities from the dense
   network's. The error propagates through the real network, so a conv layer's
   error counts as much as it hurts the output (a layer's own response error
   under-rated conv layers 3-10x). Plain k-means costs ~0.1-1 s per
   candidate; error correction is then measured once per layer, at one
   reference candidate, and scales that layer's curve (``ec_ratio``), because
   error correction helps some layers far more than others.
4. **Allocation** (:func:`allocate`): the choice per layer that minimises the
   summed sensitivity under the budget -- an exact multiple-choice knapsack
   (dynamic programming over the budget in integer units, every cost rounded
   *up*, so the budget holds exactly); a second budget (FLOPs beside bytes) is
   met by a Lagrange multiplier on it, found by bisection.

:mod:`qcnn_lite.quant.search_run` checks the whole network (error correction, top-1
on the held-out split) and drives the search for a target.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from qcnn_lite.paper.cost import layer_costs
from qcnn_lite.nn.engine import Network
from qcnn_lite.nn.layers import Conv2d, Linear, QConv2d, QLinear
from qcnn_lite.quant.quantize import quantize_layer

__all__ = ["Target", "parse_target", "candidate_grid", "candidate_costs", "allocate", "allocate_two",
           "layer_sensitivity", "kl_divergence", "prune_grid", "K_GRID", "MAX_SUB_DIM", "check_reachable"]

K_GRID = (4, 8, 16, 32, 64, 128, 256)
MAX_SUB_DIM = 16
# DP states over the budget: enough for 1/200k resolution, ~0.3 s per layer and candidate set
MAX_STATES = 200_000


# -- targets ------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """A search target: storage (``compression``), speed (``speedup``) and/or accuracy (``max_loss``).

    * compression (and/or speedup) alone: the least sensitive settings within those budgets;
    * max_loss: the highest compression whose measured held-out top-1 loss (points) is at
      most max_loss, with ``speedup`` (if given) as a floor.
    """

    compression: float | None = None
    speedup: float | None = None
    max_loss: float | None = None

    def slug(self) -> str:
        parts = [f"{k.replace('_', '-')}={v:g}" for k, v in
                 (("compression", self.compression), ("speedup", self.speedup), ("max_loss", self.max_loss)) if v is not None]
        return ",".join(parts)


_KEYS = {"compression": "compression", "speedup": "speedup", "speed-up": "speedup", "max-loss": "max_loss",
         "max_loss": "max_loss"}


def parse_target(text: str | Target) -> Target:
    """``"compression=15"``, ``"speedup=4"``, ``"max-loss=1.0"`` or a comma-separated mix
    (``"compression=20,speedup=1.5"``). Raises ValueError on anything else."""
    if isinstance(text, Target):
        return text
    if not isinstance(text, str) or not text.strip():
        raise ValueError("target must be a string such as 'compression=15', 'speedup=4' or 'max-loss=1.0'")
    vals: dict[str, float] = {}
    for part in text.split(","):
        m = re.fullmatch(r"\s*([A-Za-z_-]+)\s*=\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*", part)
        if not m or m.group(1).lower() not in _KEYS:
            raise ValueError(f"target {part.strip()!r} does not parse: use compression=X, speedup=X or max-loss=X "
                             "(several joined by commas)")
        key = _KEYS[m.group(1).lower()]
        if key in vals:
            raise ValueError(f"target {text!r} gives {key} twice")
        vals[key] = float(m.group(2))
    for key in ("compression", "speedup"):
        if key in vals and not vals[key] > 1.0:
            raise ValueError(f"{key}={vals[key]:g}: a target must be above 1x")
    if "max_loss" in vals and not vals["max_loss"] >= 0:
        raise ValueError("max-loss must be >= 0 points of top-1")
    return Target(**vals)


# -- grid and costs -----------------------------------------------------------------
def _layer_dims(net: Network) -> dict[str, tuple[int, int]]:
    """(input channels per group, sub-vectors per sub-space) of each conv/fc layer."""
    dims = net.input_dims()
    out = {}
    for _, L in net.param_layers():
        if L["type"] == "conv":
            out[L["name"]] = (dims[L["name"]][0] // L.get("groups", 1), L["out"] * L["kernel"] ** 2)
        else:
            out[L["name"]] = (int(np.prod(dims[L["name"]])), L["out"])
    return out


def candidate_grid(net: Network, k_grid: Sequence[int] = K_GRID, max_sub_dim: int = MAX_SUB_DIM,
                   all_divisors: bool = False) -> dict[str, list[tuple[int, int]]]:
    """Per conv/fc layer, the (C's, K) candidates: C's divides its input channels (per group),
    C's <= max_sub_dim, K in ``k_grid`` and K <= the sub-vectors each sub-space has.

    C's takes the powers of two that divide (1, 2, 4, 8, 16), or with ``all_divisors`` every
    divisor (3, 6, 12 too: 1.6x the candidates, and the sensitivity time with them).
    """
    if any(int(k) != k or k < 2 or k & (k - 1) for k in k_grid):
        raise ValueError(f"k_grid must hold powers of two >= 2 (exact bit counts), got {list(k_grid)}")
    grid = {}
    for name, (channels, n_vectors) in _layer_dims(net).items():
        subs = [d for d in range(1, min(max_sub_dim, channels) + 1)
                if channels % d == 0 and (all_divisors or d & (d - 1) == 0)]
        grid[name] = [(d, int(k)) for d in subs for k in sorted(k_grid) if k <= n_vectors]
        if not grid[name]:
            raise ValueError(f"layer {name}: no candidate fits ({n_vectors} sub-vectors, K grid {list(k_grid)})")
    return grid


def prune_grid(grid: Mapping[str, Sequence[tuple[int, int]]], costs: Mapping[str, Mapping[str, Any]],
               max_bits: int) -> tuple[dict[str, list[tuple[int, int]]], dict[str, dict[str, Any]]]:
    """Drop the candidates whose own storage exceeds ``max_bits`` (the whole network's budget):
    no allocation within that budget can use them, so the optimum is unchanged. Each layer keeps
    at least its smallest candidate. Returns the pruned grid and costs."""
    g, c = {}, {}
    for k, cands in grid.items():
        keep = np.flatnonzero(costs[k]["bits"] <= max_bits)
        if keep.size == 0:
            keep = np.array([int(np.argmin(costs[k]["bits"]))])
        g[k] = [tuple(cands[j]) for j in keep]
        c[k] = {**costs[k], "bits": costs[k]["bits"][keep], "flops": costs[k]["flops"][keep]}
    return g, c


def candidate_costs(net: Network, grid: Mapping[str, Sequence[tuple[int, int]]]) -> dict[str, dict[str, np.ndarray]]:
    """Per layer, ``bits`` (int64, 8 x the cost model's bytes) and ``flops`` (int64) of every candidate,
    plus the layer's dense ``cnn_bits`` and ``cnn_flops``."""
    names = [L["name"] for _, L in net.param_layers()]
    n = max(len(v) for v in grid.values())
    bits = {k: np.zeros(len(grid[k]), np.int64) for k in names}
    flops = {k: np.zeros(len(grid[k]), np.int64) for k in names}
    dense = {}
    for j in range(n):  # one cost-model call sets candidate j of every layer at once
        st = {k: grid[k][min(j, len(grid[k]) - 1)] for k in names}
        for c in layer_costs(net.input_shape, net.spec, st):
            if j < len(grid[c.name]):
                b8 = c.qcnn_bytes * 8
                if abs(b8 - round(b8)) > 1e-6:
                    raise ValueError(f"layer {c.name}: {grid[c.name][j]} is not a whole number of bits")
                bits[c.name][j], flops[c.name][j] = round(b8), c.qcnn_flops
            dense[c.name] = (8 * c.cnn_bytes, c.cnn_flops)
    return {k: {"bits": bits[k], "flops": flops[k], "cnn_bits": dense[k][0], "cnn_flops": dense[k][1]} for k in names}


def check_reachable(costs: Mapping[str, Mapping[str, Any]], target: Target) -> None:
    """ValueError, before any work, if no candidate choice meets the target's budgets;
    the message names the layer whose smallest setting takes the largest share."""
    for key, res, word in (("compression", "bits", "storage"), ("speedup", "flops", "FLOPs")):
        want = getattr(target, key)
        if want is None:
            continue
        dense = sum(int(c["cnn_" + res]) for c in costs.values())
        least = {k: int(c[res].min()) for k, c in costs.items()}
        best = dense / sum(least.values())
        if best < want:
            block = max(least, key=least.get)
            raise ValueError(
                f"{key}={want:g} is out of reach: the smallest setting of every layer gives {best:.1f}x; "
                f"layer {block} blocks it (its smallest setting still takes {100 * least[block] / sum(least.values()):.0f}% "
                f"of the {word}, {least[block] / (8 if res == 'bits' else 1):.0f} {'bytes' if res == 'bits' else 'FLOPs'})")


# -- allocation ---------------------------------------------------------------------
def allocate(sens: Sequence[np.ndarray], cost: Sequence[np.ndarray], budget: int,
             max_states: int = MAX_STATES) -> list[int] | None:
    """Exact multiple-choice knapsack: one candidate index per layer minimising ``sum sens``
    subject to ``sum cost <= budget``; None if nothing fits.

    Costs are integers; they are counted in units of ``ceil(budget / max_states)``,
    each rounded up, so the result always meets ``budget`` exactly (and is the exact
    optimum when the unit is 1). O(layers x candidates x states) time, vectorised.
    """
    budget = int(budget)
    if budget < 0:
        return None
    unit = max(1, -(-budget // max_states))
    B = budget // unit
    f = np.zeros(B + 1)  # f[b]: least summed sensitivity with cost <= b*unit
    choice = []
    for s, c in zip(sens, cost):
        cu = -(-np.asarray(c, np.int64) // unit)
        new = np.full(B + 1, np.inf)
        arg = np.zeros(B + 1, np.int16)
        for j in np.argsort(cu, kind="stable"):
            if cu[j] > B:
                continue
            v = np.full(B + 1, np.inf)
            v[cu[j]:] = f[: B + 1 - cu[j]] + float(s[j])
            better = v < new
            new[better] = v[better]
            arg[better] = j
        f = new
        choice.append(arg)
    if not np.isfinite(f[B]):
        return None
    out, b = [], B
    for layer in range(len(choice) - 1, -1, -1):
        j = int(choice[layer][b])
        out.append(j)
        b -= int(-(-int(cost[layer][j]) // unit))
    return out[::-1]


def allocate_two(sens: Sequence[np.ndarray], bits: Sequence[np.ndarray], flops: Sequence[np.ndarray],
                 bit_budget: int | None, flop_budget: int | None, max_states: int = MAX_STATES) -> list[int] | None:
    """Least summed sensitivity under a storage and/or a FLOP budget (None: no such budget).

    One budget: :func:`allocate` on it. Both: exact knapsack on storage, with the FLOPs
    priced by a Lagrange multiplier mu (``sens + mu * flops / flop_budget``), the
    smallest mu that meets the FLOP budget found by bisection (30 steps). Both budgets
    then hold exactly; the summed sensitivity is within the Lagrangian duality gap of
    the optimum. None if no multiplier meets both.
    """
    if bit_budget is None and flop_budget is None:
        raise ValueError("give a storage or a FLOP budget")
    if flop_budget is None:
        return allocate(sens, bits, bit_budget, max_states)
    if bit_budget is None:
        return allocate(sens, flops, flop_budget, max_states)
    # feasibility first: the least FLOPs within the storage budget
    fl = [np.asarray(f, np.float64) for f in flops]
    fastest = allocate(fl, bits, bit_budget, max_states)
    if fastest is None or sum(int(flops[i][j]) for i, j in enumerate(fastest)) > flop_budget:
        return None

    def solve(mu: float) -> tuple[list[int] | None, bool]:
        priced = [np.asarray(s, np.float64) + mu * f / flop_budget for s, f in zip(sens, fl)]
        ch = allocate(priced, bits, bit_budget, max_states)
        ok = ch is not None and sum(int(flops[i][j]) for i, j in enumerate(ch)) <= flop_budget
        return ch, ok

    ch, ok = solve(0.0)
    if ok:
        return ch
    scale = max(float(np.max(s)) for s in sens) + 1e-12
    hi = scale
    best = None
    for _ in range(40):  # grow mu until the FLOP budget holds
        best, ok = solve(hi)
        if ok:
            break
        hi *= 4
    if not ok:
        return fastest
    lo = 0.0
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        ch, ok = solve(mid)
        if ok:
            hi, best = mid, ch
        else:
            lo = mid
    return best


# -- sensitivity --------------------------------------------------------------------
def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Mean KL(p || q) in nats of class probabilities (n, classes)."""
    p = np.clip(np.asarray(p, np.float64), 1e-12, 1.0)
    q = np.clip(np.asarray(q, np.float64), 1e-12, 1.0)
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))


def _quantize_layer(dense: Conv2d | Linear, d: int, k: int, seed: int, calib: np.ndarray | None = None,
                    max_samples: int = 50_000) -> QConv2d | QLinear:
    """One layer, plain k-means (calib None) or error-corrected on its own dense response."""
    kw: dict[str, Any] = dict(sub_dim=d, n_codewords=k, seed=seed)
    if calib is not None:
        kw.update(calib=calib, n_iter=4)
    return quantize_layer(dense, max_samples=max_samples, **kw)


def _as_dense(q: QConv2d | QLinear) -> Conv2d | Linear:
    """The decoded layer: the same function as ``q``, run by BLAS (faster for the many trial runs)."""
    if isinstance(q, QConv2d):
        return Conv2d(q.dense_weight(), q.bias, q.stride, q.padding, q.groups)
    return Linear(q.dense_weight(), q.bias)


def _batched(net: Network, x: np.ndarray, start: int, stop: int | None = None, batch: int = 500) -> np.ndarray:
    return np.concatenate([net.forward(x[i : i + batch], start=start, stop=stop) for i in range(0, len(x), batch)])


def ec_reference(cands: Sequence[tuple[int, int]]) -> int:
    """The candidate at which error correction is measured: C's nearest 4, then K nearest 16."""
    return min(range(len(cands)), key=lambda j: (abs(math.log2(cands[j][0] / 4)), abs(math.log2(cands[j][1] / 16))))


def layer_sensitivity(
    net: Network,
    images: np.ndarray,
    grid: Mapping[str, Sequence[tuple[int, int]]],
    seed: int = 0,
    layers: Sequence[str] | None = None,
    ec_images: int = 500,
    on_candidate: Callable[[], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per layer: ``plain`` (KL per candidate, k-means on that layer only), ``top1_agree``
    (percent of held-out images whose top-1 class is unchanged), and ``ec_ratio`` = KL with
    error correction / KL plain at the :func:`ec_reference` candidate (clipped to [0.02, 1]).

    images (n, C, H, W): the held-out split, normalised. Only the suffix after the layer
    runs per candidate: the dense prefix is computed once per layer.
    """
    x = np.asarray(images, np.float32)
    p_dense = _batched(net, x, 0)
    top_dense = p_dense.argmax(1)
    want = set(layers) if layers is not None else None
    out: dict[str, dict[str, Any]] = {}
    act, pos = x, 0
    for i, L in net.param_layers():
        name = L["name"]
        if want is not None and name not in want:
            continue
        act = _batched(net, act, pos, i) if i > pos else act  # dense input of layer i
        pos = i
        trial = net.copy()
        dense = net.params[name]
        kl, agree = [], []
        for j, (d, k) in enumerate(grid[name]):
            trial.params[name] = _as_dense(_quantize_layer(dense, d, k, seed + i))
            p = _batched(trial, act, i)
            kl.append(kl_divergence(p_dense, p))
            agree.append(float(100.0 * np.mean(p.argmax(1) == top_dense)))
            if on_candidate is not None:
                on_candidate()
        ref = ec_reference(grid[name])
        d, k = grid[name][ref]
        calib = act[:ec_images] if L["type"] == "conv" else act[:ec_images].reshape(min(ec_images, len(act)), -1)
        trial.params[name] = _as_dense(_quantize_layer(dense, d, k, seed + i, calib=calib))
        kl_ec = kl_divergence(p_dense, _batched(trial, act, i))
        ratio = float(np.clip(kl_ec / max(kl[ref], 1e-12), 0.02, 1.0))
        out[name] = {"plain": kl, "top1_agree": agree, "ec_ratio": ratio, "ec_reference": [d, k], "kl_ec": kl_ec}
        if on_candidate is not None:
            on_candidate()
    return out
