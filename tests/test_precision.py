"""Table precision: the accuracy guard keeps fast tables where they cost no top-1, and falls back where they do."""
import numpy as np
import pytest

from qcnn_lite import Conv2d, Linear, Network, QConv2d, QLinear, load, quantize_network, save
from qcnn_lite.nn import precision
from qcnn_lite.quant import guard
from qcnn_lite.nn.layers import _conv_dense


def _net(rng):
    spec = [
        {"type": "conv", "name": "c1", "out": 8, "kernel": 3, "stride": 1, "padding": 1, "groups": 1},
        {"type": "relu"},
        {"type": "flatten"},
        {"type": "fc", "name": "f1", "out": 32},
        {"type": "relu"},
        {"type": "fc", "name": "f2", "out": 10},
    ]
    params = {
        "c1": Conv2d(rng.standard_normal((8, 4, 3, 3)).astype(np.float32) * 0.4, rng.standard_normal(8) * 0.1, 1, 1),
        "f1": Linear(rng.standard_normal((32, 8 * 36)).astype(np.float32) * 0.1),
        "f2": Linear(rng.standard_normal((10, 32)).astype(np.float32) * 0.3),
    }
    return Network("p", (4, 6, 6), spec, params)


def _images(rng, n):
    base = rng.standard_normal((n, 1, 6, 6))
    return (base + 0.3 * rng.standard_normal((n, 4, 6, 6))).astype(np.float32)


@pytest.fixture
def sabotage(monkeypatch):
    """QLinear layers marked ``_sabotaged`` return noise from their 8-bit tables (a layer made to lose accuracy)."""
    real = QLinear.__call__

    def call(self, x):
        y = real(self, x)
        if self.__dict__.get("_sabotaged") and self.table_dtype == "uint8":
            y = y + np.random.default_rng(0).standard_normal(y.shape).astype(np.float32) * 10 * (np.abs(y).max() + 1)
        return y

    monkeypatch.setattr(QLinear, "__call__", call)


def _top1(net, x, labels=None):
    out = np.argmax(net.forward(x), axis=1)
    return out if labels is None else out == labels


def test_bad_layer_falls_back_fine_layer_keeps_its_fast_tables(rng, sabotage):
    net = _net(rng)
    q = quantize_network(net, _images(rng, 400), {"conv": (2, 8), "fc": (4, 16), "f2": (2, 8)}, show_progress=False,
                         table_guard=None)
    assert q.params["f1"].table_dtype == q.params["f2"].table_dtype == "uint8"  # untested defaults
    q.params["f2"]._sabotaged = True
    x = _images(rng, 300)
    # random small nets have small top-1 margins: real 8-bit tables flip 0-2% of them, so the
    # threshold sits between that and the sabotaged layer's loss; the ladder test below uses 0.2
    rep = guard.guard_tables(q, x, threshold=3.0, batch_size=64)
    assert q.params["f2"].table_dtype == "float32" and rep["layers"]["f2"]["table_dtype"] == "float32"
    assert rep["layers"]["f2"]["tried"]["uint8"] > 10  # noise flips most predictions
    assert q.params["f1"].table_dtype == "uint8" and rep["layers"]["f1"]["tried"]["uint8"] <= 3.0
    assert rep["layers"]["c1"]["table_dtype"] in precision.table_dtypes(q.params["c1"])
    # the reported change is that of the layer switched alone, the rest float: an independent full forward
    ref = precision.with_table_dtypes(q, "float32")
    one = precision.with_table_dtypes(ref, {"f1": "uint8"})
    flips = 100.0 * float((_top1(ref, x) != _top1(one, x)).mean())
    assert rep["layers"]["f1"]["tried"]["uint8"] == pytest.approx(flips, abs=1e-3)


def test_guard_with_labels_measures_the_accuracy_change(rng, sabotage):
    net = _net(rng)
    q = quantize_network(net, None, {"conv": (2, 8), "fc": (4, 16), "f2": (2, 8)}, error_correction=False, show_progress=False,
                         table_guard=None)
    q.params["f1"]._sabotaged = True
    x = _images(rng, 200)
    labels = _top1(net, x)  # any labels: the dense network's
    rep = guard.guard_tables(q, x, labels, threshold=1.0)
    ref = precision.with_table_dtypes(q, "float32")
    low = precision.with_table_dtypes(ref, {"f1": "uint8"})
    want = 100.0 * float(_top1(ref, x, labels).mean() - _top1(low, x, labels).mean())
    assert rep["layers"]["f1"]["tried"]["uint8"] == pytest.approx(want, abs=1e-3) and want > 1.0
    assert q.params["f1"].table_dtype == "float32"
    assert rep["labels"] is True and rep["float_top1_err"] == pytest.approx(100 * (1 - _top1(ref, x, labels).mean()), abs=1e-3)


class _TwoStepConv(QConv2d):
    """A conv layer with a fake precision ladder: "bad" tables add noise, "good" ones a little."""

    TABLE_DTYPES = ("bad", "good", "float32")

    @staticmethod
    def default_table_dtype(kh, kw, M):
        return "bad"

    @property
    def table_dtype(self):
        return self.__dict__.get("_td", "bad")

    @table_dtype.setter
    def table_dtype(self, v):
        if v not in self.TABLE_DTYPES:
            raise ValueError(f"table_dtype {v!r}")
        self._td = v

    def __call__(self, x, relu=False):
        Ct, kh, kw, M = self.codes.shape
        w = self.codebooks[np.arange(M), self.codes].reshape(Ct, -1)
        y = _conv_dense(np.asarray(x, np.float32), w, self.bias, kh, kw, self.stride, self.padding, self.groups)
        noise = {"bad": 5.0, "good": 1e-6, "float32": 0.0}[self.table_dtype]
        y = y + noise * np.random.default_rng(1).standard_normal(y.shape).astype(np.float32) * (np.abs(y).max() + 1)
        return np.maximum(y, 0) if relu else y


def test_fallback_walks_down_the_precisions(rng):
    net = _net(rng)
    q = quantize_network(net, None, {"conv": (2, 8), "fc": (4, 16), "f2": (2, 8)}, error_correction=False, show_progress=False,
                         table_guard=None)
    c = q.params["c1"]
    q.params["c1"] = _TwoStepConv(c.codebooks, c.codes, c.bias, c.stride, c.padding, c.groups)
    assert precision.table_dtypes(q.params["c1"]) == ("bad", "good", "float32")
    rep = guard.guard_tables(q, _images(rng, 200))
    assert rep["layers"]["c1"]["table_dtype"] == "good" == q.params["c1"].table_dtype
    assert list(rep["layers"]["c1"]["tried"]) == ["bad", "good"] and rep["layers"]["c1"]["tried"]["bad"] > 10


def test_quantize_network_guards_and_the_model_file_keeps_the_choice(rng, sabotage, tmp_path, monkeypatch):
    net = _net(rng)
    marked = {"f2"}
    real_init = QLinear.__init__

    def init(self, *a, **kw):  # mark f2 (10 outputs) as it is built, inside quantize_network
        real_init(self, *a, **kw)
        if self.out_features == 10 and marked:
            self._sabotaged = True

    monkeypatch.setattr(QLinear, "__init__", init)
    q = quantize_network(net, _images(rng, 400), {"conv": (2, 8), "fc": (4, 16), "f2": (2, 8)}, show_progress=False,
                         table_guard=3.0)
    guard = q.meta["quantization"]["table_guard"]
    assert guard["threshold"] == 3.0 and guard["n_images"] == 400 and guard["labels"] is False
    assert q.params["f2"].table_dtype == "float32" and q.params["f1"].table_dtype == "uint8"
    back = load(save(q, tmp_path / "q.qcnn"))
    assert back.params["f2"].table_dtype == "float32" and back.params["f1"].table_dtype == "uint8"
    assert back.meta["quantization"]["table_guard"] == guard


def test_guard_is_skipped_without_images_and_checks_its_arguments(rng):
    net = _net(rng)
    q = quantize_network(net, None, {"conv": (2, 8), "fc": (4, 16), "f2": (2, 8)}, error_correction=False, show_progress=False)
    assert q.meta["quantization"]["table_guard"] is None and q.params["f1"].table_dtype == "uint8"
    with pytest.raises(ValueError, match="threshold"):
        guard.guard_tables(q, _images(rng, 5), threshold=-1)
    with pytest.raises(ValueError, match="guard images"):
        guard.guard_tables(q, np.zeros((5, 3, 6, 6), np.float32))
    with pytest.raises(ValueError, match="guard labels"):
        guard.guard_tables(q, _images(rng, 5), np.zeros(4))
    with pytest.raises(ValueError, match="table_dtype must be one of"):
        precision.set_table_dtype(q.params["f1"], "int4")
    with pytest.raises(ValueError, match="float32 tables only"):
        precision.set_table_dtype(type("Plain", (), {"codebooks": None})(), "int8")
