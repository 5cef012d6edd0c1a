"""The settings search on a tiny synthetic network: grid, costs, allocation, errors, cache."""
import itertools
import math

import numpy as np
import pytest

from qcnn_lite.paper import cost
from qcnn_lite.io import modelfile
from qcnn_lite.quant import search, search_run
from qcnn_lite.quant.quantize import layer_settings, quantize_network

from conftest import tiny_net

K_SMALL = (4, 8, 16)




def tiny_problem(tmp_path, n=240, seed=0):
    net = tiny_net(seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((n, 2, 8, 8)).astype(np.float32)
    y = net.predict(x).argmax(1)  # the dense network is right on every image
    return search_run.Problem(net, x[: n // 2], y[: n // 2], x[n // 2 :], "tinymodel", "tinysplit", tmp_path / "cache")


def test_grid_only_holds_dividing_settings():
    net = tiny_net()
    grid = search.candidate_grid(net)
    dims = net.input_dims()
    for _, L in net.param_layers():
        name = L["name"]
        channels = dims[name][0] // L.get("groups", 1) if L["type"] == "conv" else math.prod(dims[name])
        n_vec = L["out"] * L["kernel"] ** 2 if L["type"] == "conv" else L["out"]
        assert grid[name], name
        for d, k in grid[name]:
            assert channels % d == 0 and d <= search.MAX_SUB_DIM
            assert k in search.K_GRID and k <= n_vec
            layer_settings(net, {name: (d, k), "conv": (1, 4), "fc": (1, 4)})  # quantize accepts it
        # and nothing that divides is missing
        want = {(d, k) for d in range(1, min(channels, search.MAX_SUB_DIM) + 1) if channels % d == 0
                for k in search.K_GRID if k <= n_vec}
        assert set(grid[name]) == {(d, k) for d, k in want if d & (d - 1) == 0}
        assert set(search.candidate_grid(net, all_divisors=True)[name]) == want
    # c2 has 4 channels per group (groups=2): C's=8 would not divide them; f1's 192 inputs take 3, 6 and 12 too
    assert {d for d, _ in grid["c2"]} == {1, 2, 4}
    assert {d for d, _ in search.candidate_grid(net, all_divisors=True)["f1"]} == {1, 2, 3, 4, 6, 8, 12, 16}
    with pytest.raises(ValueError, match="powers of two"):
        search.candidate_grid(net, k_grid=(4, 12))


def test_candidate_costs_equal_the_cost_model():
    net = tiny_net()
    grid = search.candidate_grid(net)
    costs = search.candidate_costs(net, grid)
    rng = np.random.default_rng(0)
    for _ in range(5):
        pick = {k: int(rng.integers(len(v))) for k, v in grid.items()}
        st = {k: grid[k][j] for k, j in pick.items()}
        ref = cost.network_cost(net.input_shape, net.spec, st)
        bits = sum(int(costs[k]["bits"][j]) for k, j in pick.items())
        flops = sum(int(costs[k]["flops"][j]) for k, j in pick.items())
        assert bits / 8 == pytest.approx(ref["qcnn_mib"] * cost.MiB, abs=1e-9)
        assert flops == ref["qcnn_flops"]
        assert sum(int(c["cnn_bits"]) for c in costs.values()) / 8 == pytest.approx(ref["cnn_mib"] * cost.MiB)


def brute(sens, costs, budget, flops=None, flop_budget=None):
    best, arg = math.inf, None
    for ch in itertools.product(*[range(len(s)) for s in sens]):
        if sum(c[j] for c, j in zip(costs, ch)) > budget:
            continue
        if flops is not None and sum(f[j] for f, j in zip(flops, ch)) > flop_budget:
            continue
        v = sum(s[j] for s, j in zip(sens, ch))
        if v < best:
            best, arg = v, ch
    return best, arg


def test_allocation_is_the_brute_force_optimum_and_meets_the_budget():
    rng = np.random.default_rng(3)
    for trial in range(30):
        n_layers = int(rng.integers(2, 5))
        sens = [rng.random(int(rng.integers(2, 6))) for _ in range(n_layers)]
        costs = [rng.integers(1, 60, len(s)) for s in sens]
        budget = int(rng.integers(0, 150))
        best, _ = brute(sens, costs, budget)
        ch = search.allocate(sens, costs, budget)
        if not np.isfinite(best):
            assert ch is None
            continue
        assert sum(c[j] for c, j in zip(costs, ch)) <= budget
        assert sum(s[j] for s, j in zip(sens, ch)) == pytest.approx(best)
        # a coarse unit (few states) still honours the budget, at a sensitivity no better than the optimum
        coarse = search.allocate(sens, costs, budget, max_states=7)
        if coarse is not None:
            assert sum(c[j] for c, j in zip(costs, coarse)) <= budget
            assert sum(s[j] for s, j in zip(sens, coarse)) >= best - 1e-12


def test_allocation_on_the_tiny_network_with_both_budgets():
    net = tiny_net()
    grid = search.candidate_grid(net, K_SMALL)
    costs = search.candidate_costs(net, grid)
    names = list(grid)
    rng = np.random.default_rng(5)
    # sensitivity falls with storage, as real curves do, plus noise
    sens = [1.0 / costs[k]["bits"] * 1e4 + 0.01 * rng.random(len(grid[k])) for k in names]
    bits = [costs[k]["bits"] for k in names]
    flops = [costs[k]["flops"] for k in names]
    dense_bits = sum(int(costs[k]["cnn_bits"]) for k in names)
    dense_flops = sum(int(costs[k]["cnn_flops"]) for k in names)
    for comp, sp in ((4, None), (6, None), (6, 1.2), (8, 1.5)):
        bb, fb = dense_bits // comp, None if sp is None else int(dense_flops / sp)
        ch = search.allocate_two(sens, bits, flops, bb, fb)
        best, _ = brute(sens, bits, bb, flops if fb else None, fb)
        if not np.isfinite(best):
            assert ch is None
            continue
        assert ch is not None
        st = {k: grid[k][j] for k, j in zip(names, ch)}
        c = cost.network_cost(net.input_shape, net.spec, st)
        assert c["compression"] >= comp  # exactly under the cost model
        if sp is not None:
            assert c["speedup"] >= sp
        got = sum(s[j] for s, j in zip(sens, ch))
        assert got >= best - 1e-12
        if sp is None:
            assert got == pytest.approx(best)  # one budget: the exact optimum


@pytest.mark.parametrize("text, match", [
    ("", "string"), ("compression", "does not parse"), ("compression=abc", "does not parse"),
    ("speed=3", "does not parse"), ("compression=0.5", "above 1x"), ("max-loss=-1", "does not parse"),
    ("compression=2,compression=3", "twice"),
])
def test_bad_targets_raise(text, match):
    with pytest.raises(ValueError, match=match):
        search.parse_target(text)


def test_targets_parse():
    assert search.parse_target("compression=15") == search.Target(compression=15.0)
    assert search.parse_target("speedup=4") == search.Target(speedup=4.0)
    assert search.parse_target(" max-loss = 1.0 ") == search.Target(max_loss=1.0)
    t = search.parse_target("compression=20,speedup=1.5")
    assert (t.compression, t.speedup, t.slug()) == (20.0, 1.5, "compression=20,speedup=1.5")


def test_unknown_arch_raises_before_loading():
    with pytest.raises(ValueError, match="unknown architecture"):
        search_run.search_arch("mini-resnet", "compression=15")
    with pytest.raises(ValueError, match="does not parse"):
        search_run.search_arch("mini-alexnet", "compresion=15")


def test_unreachable_budget_names_the_blocking_layer(tmp_path):
    pb = tiny_problem(tmp_path)
    before = dict(search_run.COUNTS)
    with pytest.raises(ValueError, match=r"out of reach.*layer \w+ blocks it"):
        search_run.search(pb, "compression=1000", show_progress=False)
    # c1 has one input channel per sub-space at best: it cannot speed up, and it blocks
    with pytest.raises(ValueError, match="layer c1 blocks it"):
        search_run.search(pb, "speedup=50", show_progress=False)
    assert dict(search_run.COUNTS) == before  # failed before any work


def test_search_meets_target_loads_and_caches(tmp_path):
    pb = tiny_problem(tmp_path)
    before = search_run.COUNTS.copy()
    rec = search_run.search(pb, "compression=3,speedup=1.1", k_grid=K_SMALL, show_progress=False)
    ran = search_run.COUNTS - before
    assert ran["sensitivity"] == 4 and ran["check"] == 1
    assert rec["predicted"]["compression"] >= 3 and rec["predicted"]["speedup"] >= 1.1
    st = rec["settings"]
    c = cost.network_cost(pb.net.input_shape, pb.net.spec, st)
    assert rec["predicted"]["compression"] == pytest.approx(c["compression"], abs=1e-3)
    # the settings load through quantize and the model file; the file's arrays are the cost model's bytes
    q = quantize_network(pb.net, pb.calib_x, st, show_progress=False)
    path = modelfile.save(q, tmp_path / "q.qcnn")
    man = modelfile.read_manifest(path)
    payload = sum(a["nbytes"] for a in man["arrays"])
    assert abs(payload - c["qcnn_mib"] * cost.MiB) < len(st)  # each layer's packed codes round up to a byte
    back = modelfile.load(path)
    x = pb.heldout_x[:20]
    np.testing.assert_allclose(back.predict(x), q.predict(x), rtol=1e-5, atol=1e-6)
    # a second run is served from the cache: no sensitivity, quantization or check runs again
    again = search_run.COUNTS.copy()
    search_run._NETS.clear()
    rec2 = search_run.search(pb, "compression=3,speedup=1.1", k_grid=K_SMALL, show_progress=False)
    assert search_run.COUNTS == again
    assert rec2["settings"] == rec["settings"] and rec2["measured"] == rec["measured"]


def test_sensitivity_ranks_a_damaged_layer_first():
    net = tiny_net()
    x = np.random.default_rng(2).standard_normal((100, 2, 8, 8)).astype(np.float32)
    grid = search.candidate_grid(net, K_SMALL)
    s = search.layer_sensitivity(net, x, grid, layers=["c2", "f1"])
    for name in ("c2", "f1"):
        kl = np.asarray(s[name]["plain"])
        assert (kl >= 0).all()
        # more codewords at the same C's never hurt much: K=16 beats K=4 at C's=1
        assert kl[grid[name].index((1, 16))] <= kl[grid[name].index((1, 4))] + 1e-9
        assert 0.02 <= s[name]["ec_ratio"] <= 1.0
