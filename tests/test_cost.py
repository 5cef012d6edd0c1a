"""The cost model against the paper's published figures and an independent count."""
import numpy as np
import pytest

from qcnn_lite.nn import models
from qcnn_lite.paper import constants as paper
from qcnn_lite.io.results import render
from qcnn_lite.repro import rows as tables
from qcnn_lite.paper.cost import layer_costs, network_cost


def test_cnn_storage_matches_paper():
    for name, mib in [("alexnet", 232.56), ("cnns", 392.57)]:
        c = network_cost(*models.spec(name))
        assert c["cnn_mib"] == pytest.approx(mib, rel=1e-3)


def test_params_match_the_synthetic_weights():
    # an independent count: the arrays the engine actually allocates
    net = models.synthetic("alexnet")
    n = sum(p.weight.size + p.bias.size for p in net.params.values())
    assert network_cost(*models.spec("alexnet"))["params"] == n == 60_965_224


def test_released_alexnet():
    c = network_cost(*models.spec("alexnet"), paper.RELEASED_ALEXNET)
    assert c["qcnn_mib"] == pytest.approx(12.60, rel=0.01)
    assert c["speedup"] == pytest.approx(4.16, rel=0.01)
    assert c["cnn_flops"] == pytest.approx(724e6, rel=0.001)
    assert c["qcnn_flops"] == pytest.approx(174e6, rel=0.005)


def test_table2_qcnn_storage():
    c = network_cost(*models.spec("cnns"), paper.RELEASED_ALEXNET)
    assert c["qcnn_mib"] == pytest.approx(paper.table2_paper("cnns")["qcnn"]["storage_mb"], rel=0.002)


def test_table1_every_row_within_1_5_percent():
    rows = tables.table1_rows()
    assert [(r["network"], r["setting"]) for r in rows] == [(n, s) for n in ("alexnet", "cnns", "vgg16") for s in (1, 2)]
    for r in rows:
        assert abs(r["speedup"] / r["paper_speedup"] - 1) <= 0.015, r
        assert abs(r["compression"] / r["paper_compression"] - 1) <= 0.015, r


def test_one_layer_against_a_count_on_real_layers(rng):
    """Costs of one conv and one fc layer against what running and storing real layers takes:
    CNN multiply-adds = outputs x taps each; Q-CNN = table entries (input positions x codewords x
    sub-vector length, per sub-space) + one look-up per (output, tap, sub-space); bytes = the arrays."""
    from qcnn_lite.nn.layers import Conv2d, Linear
    from qcnn_lite.quant.quantize import quantize_conv2d, quantize_linear

    spec = [{"type": "conv", "name": "c", "out": 16, "kernel": 3, "stride": 1, "padding": 1, "groups": 2},
            {"type": "flatten"}, {"type": "fc", "name": "f", "out": 10}]
    c, f = layer_costs((8, 5, 5), spec, {"conv": (2, 4), "fc": (4, 8)})
    x = rng.standard_normal((1, 8, 5, 5)).astype(np.float32)
    wc = rng.standard_normal((16, 4, 3, 3)).astype(np.float32)
    conv, qconv = Conv2d(wc, None, 1, 1, 2), quantize_conv2d(wc, None, 1, 1, 2, sub_dim=2, n_codewords=4)
    y = conv(x)
    assert c.cnn_flops == y.size * wc[0].size  # every output: one multiply-add per weight of its filter
    M, K, d = qconv.codebooks.shape
    tables = qconv.groups * M * K * d * x.shape[2] * x.shape[3]  # each group's tables over the input map
    assert c.qcnn_flops == tables + y.size * 9 * M
    bits = (K - 1).bit_length()
    assert c.qcnn_bytes == qconv.codebooks.nbytes + qconv.codes.size * bits / 8 + qconv.bias.nbytes
    wf = rng.standard_normal((10, y.size)).astype(np.float32)
    fc, qfc = Linear(wf), quantize_linear(wf, None, 4, 8)
    assert f.cnn_flops == wf.size and f.cnn_bytes == wf.nbytes + fc.bias.nbytes
    M, K, d = qfc.codebooks.shape
    assert f.qcnn_flops == M * K * d + qfc.codes.size
    assert f.qcnn_bytes == qfc.codebooks.nbytes + qfc.codes.size * (K - 1).bit_length() / 8 + qfc.bias.nbytes


def test_paper_tables_copy_is_faithful():
    import json
    from pathlib import Path

    shared = Path(__file__).resolve().parents[2] / "shared" / "paper" / "tables.json"
    if not shared.exists():
        pytest.skip("../shared/paper/tables.json is not beside this checkout")
    assert json.loads(shared.read_text()) == paper.TABLES


def test_table2_rows_from_a_bench_result():
    # a bench result shaped like bench.bench_networks' output, with round numbers
    t = lambda m: {"median_ms": m, "min_ms": m - 1, "max_ms": m + 1}  # noqa: E731
    res = {"networks": [{
        "network": "alexnet",
        "times": {"numpy-dense": t(100.0), "torch-fp32": t(80.0), "qcnn-numpy": t(300.0), "qcnn-pythran": t(20.0)},
        "speedup": {"numpy-dense": 5.0, "torch-fp32": 4.0},
        "file_mib": {"dense": 232.57, "qcnn": 12.58},
        "peak_rss_mib": {"dense-numpy": 500.0, "qcnn-numpy": 250.0, "qcnn-pythran": 60.0},
    }]}
    cnn, q = tables.table2_rows(res)
    assert (cnn["model"], cnn["time_ms"], cnn["storage_mib"], cnn["memory_mib"]) == ("CNN", 100.0, 232.57, 500.0)
    assert (q["model"], q["engine"], q["time_ms"], q["memory_mib"]) == ("Q-CNN", "qcnn-pythran", 20.0, 60.0)
    assert q["speedup_vs_dense"] == 5.0 and q["speedup_vs_torch_int8"] is None
    assert q["paper_speedup"] == pytest.approx(2.93 / 0.95, abs=0.01)
    assert "| alexnet | Q-CNN |" in render([cnn, q])


def test_table2_rows_with_the_noblas_baseline():
    # the paper's condition gets a row of its own, labelled for what it is, and a ratio beside the paper's
    t = lambda m: {"median_ms": m, "min_ms": m - 1, "max_ms": m + 1}  # noqa: E731
    res = {"networks": [{
        "network": "cnns",
        "times": {"numpy-dense": t(100.0), "dense-noblas": t(400.0), "qcnn-pythran": t(50.0)},
        "speedup": {"numpy-dense": 2.0, "dense-noblas": 8.0},
        "file_mib": {"dense": 392.57, "qcnn": 20.13},
        "peak_rss_mib": {"dense-numpy": 500.0, "qcnn-pythran": 100.0},
    }]}
    cnn, nb, q = tables.table2_rows(res)
    assert (nb["model"], nb["engine"], nb["time_ms"]) == ("CNN, dense, no BLAS (paper's condition)", "dense-noblas", 400.0)
    assert nb["storage_mib"] == 392.57 and nb["memory_mib"] is None  # same file; its memory is not measured
    assert q["speedup_vs_dense_noblas"] == 8.0 and q["speedup_vs_dense"] == 2.0
    assert q["paper_speedup"] == pytest.approx(10.58 / 2.61, abs=0.01)


def test_table2_rows_on_the_cpu_clock():
    t = lambda m, c: {"median_ms": m, "min_ms": m - 1, "max_ms": m + 1, "cpu_median_ms": c}  # noqa: E731
    res = {"networks": [{
        "network": "alexnet",
        "times": {"numpy-dense": t(300.0, 100.0), "qcnn-pythran": t(90.0, 20.0)},
        "speedup": {"numpy-dense": 3.33}, "speedup_cpu": {"numpy-dense": 5.0},
    }]}
    cnn, q = tables.table2_rows(res, clock="cpu")
    assert (cnn["clock"], cnn["time_ms"], cnn["time_min_max_ms"]) == ("cpu", 100.0, None)
    assert q["time_ms"] == 20.0 and q["speedup_vs_dense"] == 5.0
    with pytest.raises(ValueError, match="clock"):
        tables.table2_rows(res, clock="gpu")
