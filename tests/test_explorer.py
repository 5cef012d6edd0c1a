"""The settings explorer (notebook 08), driven headless: sliders set from code, readout checked.

The displayed storage and speed-up must be the cost model's (:func:`qcnn_lite.paper.cost.network_cost`
on the layer plan), the quantized network must be what the sliders say, and the cache must
make a slider moved back quantize nothing.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

pytest.importorskip("ipywidgets")

from qcnn_lite.paper import cost  # noqa: E402
from qcnn_lite.nn import models
from qcnn_lite.apps.explorer import Explorer, default_groups, pareto_front, pareto_points, parse_settings  # noqa: E402
from qcnn_lite.apps.explorer_ui import ExplorerUI, readout_html  # noqa: E402
from qcnn_lite.nn.layers import Conv2d, QLinear  # noqa: E402
from qcnn_lite.quant.quantize import quantize_conv2d


@pytest.fixture(scope="module")
def explorer():
    net = models.synthetic("mini-alexnet", seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, *net.input_shape)).astype(np.float32)
    y = rng.integers(0, 10, len(x))
    # conv layers stay dense here: the fc groups keep the test quick, error correction included
    return Explorer(net, x, y, calib=x[:16], groups={"fc": ["fc6", "fc7"], "classifier": ["fc8"]},
                    n_iter=1, time_batch=4, time_repeats=1)


def _shown(ui) -> dict[str, str]:
    return dict(re.findall(r"<td><b>(.*?)</b></td><td>(.*?)</td>", ui.output.value))


def test_sliders_drive_the_readout_and_it_equals_the_cost_model(explorer):
    ui = ExplorerUI(explorer, initial={"fc": (4, 16), "classifier": (4, 4)})
    ui.sliders["fc"]["K"].value = 8
    ui.sliders["fc"]["C's"].value = 8
    ui.sliders["classifier"]["K"].value = 2
    assert ui.settings() == {"fc": (8, 8), "classifier": (4, 2)}
    plan = {"fc6": (8, 8), "fc7": (8, 8), "fc8": (4, 2)}
    assert ui.readout.settings == plan
    net = explorer.net
    # the cost model, layer by layer: quantized fc layers at their settings, the dense conv layers as they are
    layers = cost.layer_costs(net.input_shape, net.spec, {"conv": (1, 1), **plan})
    cnn_flops = sum(c.cnn_flops for c in layers)
    q_flops = sum(c.qcnn_flops if c.type == "fc" else c.cnn_flops for c in layers)
    q_bytes = sum(c.qcnn_bytes if c.type == "fc" else c.cnn_bytes for c in layers)
    assert ui.readout.storage_mib == pytest.approx(q_bytes / cost.MiB)
    assert ui.readout.speedup == pytest.approx(cnn_flops / q_flops)
    assert ui.readout.compression == pytest.approx(sum(c.cnn_bytes for c in layers) / q_bytes)
    shown = _shown(ui)
    assert shown["storage"].startswith(f"{q_bytes / cost.MiB:.4f} MiB")
    assert f"{ui.readout.compression:.2f}x smaller" in shown["storage"]
    assert shown["speed-up (cost model)"] == f"{cnn_flops / q_flops:.2f}x fewer operations"


def test_every_layer_grouped_is_network_cost(explorer):
    net = explorer.net
    ex = Explorer.__new__(Explorer)  # the cost needs no measurement: skip the constructor's timing
    ex.net, ex.groups = net, default_groups(net)
    settings = {"conv": (4, 32), "fc": (8, 16), "classifier": (4, 4)}
    plan = ex.layer_plan(settings)
    assert plan["conv1"] == (1, 32)  # narrowed to conv1's single input channel, as the quantizer does
    expected = cost.network_cost(net.input_shape, net.spec, plan)
    got = ex.cost(settings)
    for key in ("qcnn_mib", "cnn_mib", "speedup", "compression"):
        assert got[key] == pytest.approx(expected[key])


def test_the_readout_is_the_network_the_sliders_describe(explorer):
    ui = ExplorerUI(explorer, initial={"fc": (4, 8), "classifier": (2, 4)})
    q = explorer.network(ui.settings())
    assert isinstance(q.params["conv1"], Conv2d)  # ungrouped layers stay dense
    assert isinstance(q.params["fc6"], QLinear) and q.params["fc6"].sub_dim == 4 and q.params["fc6"].n_codewords == 8
    assert q.params["fc8"].sub_dim == 2 and q.params["fc8"].n_codewords == 4
    # top-1 is recomputed from the network's own predictions
    hits = (q.forward(explorer.images).argmax(1) == explorer.labels).mean() * 100
    assert ui.readout.top1 == pytest.approx(hits)
    assert _shown(ui)["top-1 on the test subset"].startswith(f"{hits:.2f} %")


def test_cache_quantizes_each_setting_once(explorer):
    ui = ExplorerUI(explorer, initial={"fc": (4, 16), "classifier": (4, 4)})
    n = explorer.cached
    ui.sliders["fc"]["K"].value = 32
    grown = explorer.cached
    assert grown == n + 2  # fc6 and fc7 at the new K
    ui.sliders["fc"]["K"].value = 16
    assert explorer.cached == grown  # moved back: nothing quantized again


def test_error_correction_button(explorer):
    ui = ExplorerUI(explorer, initial={"fc": (4, 8), "classifier": (4, 4)})
    plain = ui.readout
    ui.button.click()
    assert ui.readout.corrected and not plain.corrected
    assert "error correction" in _shown(ui)["quantization"]
    assert ui.readout.storage_mib == pytest.approx(plain.storage_mib)  # same settings, same storage
    ui.sliders["fc"]["K"].value = 16  # dragging again: back to plain PQ
    assert not ui.readout.corrected


def test_default_groups_and_errors(explorer):
    net = explorer.net
    assert default_groups(net) == {"conv": ["conv1", "conv2", "conv3", "conv4", "conv5"], "fc": ["fc6", "fc7"],
                                   "classifier": ["fc8"]}
    with pytest.raises(ValueError, match="unknown layer groups"):
        explorer.layer_plan({"fc": (4, 8), "classifier": (4, 4), "nope": (1, 2)})
    with pytest.raises(ValueError, match="no setting"):
        explorer.layer_plan({"fc": (4, 8)})
    with pytest.raises(ValueError, match="larger than"):
        explorer.layer_plan({"fc": (4, 8), "classifier": (4, 64)})  # fc8 has 10 outputs
    with pytest.raises(ValueError, match="already quantized"):
        q = net.copy()
        q.params["conv1"] = quantize_conv2d(net.params["conv1"].weight, net.params["conv1"].bias, 1, 2, 1,
                                               sub_dim=1, n_codewords=4)
        Explorer(q, explorer.images, explorer.labels)


def test_pareto_points(tmp_path):
    assert pareto_points("mini-alexnet", tmp_path) == []
    rows = [{"network": "mini-alexnet", "compression": 15.0, "speedup": 1.6, "top1_err": 9.1},
            {"network": "mini-alexnet", "compression": 14.0, "speedup": 1.7, "top1_err": 9.5},  # dominated
            {"network": "mini-alexnet", "compression": 30.0, "speedup": 1.9, "top1_err": 9.7},
            {"network": "mini-alexnet", "method": "dense", "compression": 1.0, "speedup": 1.0, "top1_err": 8.7},
            {"network": "mini-alexnet", "compression": None, "speedup": None, "top1_err": None},  # unreachable
            {"network": "mini-vgg16", "compression": 20.0, "speedup": 2.0, "top1_err": 7.0},
            {"network": "mini-alexnet", "target": "broken row"}]
    (tmp_path / "table1_searched.json").write_text(json.dumps(rows))
    assert pareto_points("mini-alexnet", tmp_path) == [rows[0], rows[2]]


def _brute_front(pts):
    def beaten(p):
        return any(q["c"] >= p["c"] and q["e"] <= p["e"] and (q["c"] > p["c"] or q["e"] < p["e"]) for q in pts)
    return sorted((p for p in pts if not beaten(p)), key=lambda p: (p["c"], p["e"]))


@pytest.mark.parametrize("seed", range(30))
def test_pareto_front_matches_brute_force(seed):
    r = np.random.default_rng(seed)
    n = int(r.integers(1, 40))
    # coarse values: ties in either coordinate, and duplicate points, are common
    pts = [{"c": float(r.integers(1, 8)), "e": float(r.integers(1, 8)), "i": i} for i in range(n)]
    got = pareto_front(pts, maximize="c", minimize="e")
    want = _brute_front(pts)
    assert sorted(p["i"] for p in got) == sorted(p["i"] for p in want)
    assert [p["c"] for p in got] == sorted(p["c"] for p in got)


def test_parse_settings():
    assert parse_settings("conv1 1x64 fc8 2x4") == {"conv1": (1, 64), "fc8": (2, 4)}
    with pytest.raises(ValueError):
        parse_settings("conv1 1x64 fc8")


def test_readout_html_escapes():
    from qcnn_lite.apps.explorer import Readout

    r = Readout({"a<b": (1, 2)}, 1.0, 2.0, 2.0, 1.5, 0.1, 0.2, 50.0, 60.0, False)
    assert "a&lt;b 1x2" in readout_html(r)
