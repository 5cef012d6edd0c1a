"""Table 1's accuracy pipeline: top-k errors, caching, and the ImageNet path on made-up data."""
import numpy as np
import pytest

from qcnn_lite.nn.accuracy import evaluate_network, topk_errors
from qcnn_lite.paper.constants import MINI_OF, MINI_SETTINGS
from qcnn_lite.repro import accuracy as evaluate
from qcnn_lite.nn import models
from qcnn_lite.nn.layers import QLinear
from qcnn_lite.io.modelfile import save


def test_topk_errors_against_a_direct_count(rng):
    scores = rng.standard_normal((500, 10))
    labels = rng.integers(0, 10, 500)
    err = topk_errors(scores, labels)
    top1 = 100 * np.mean(scores.argmax(1) != labels)
    top5 = 100 * np.mean([labels[i] not in np.argsort(-scores[i])[:5] for i in range(500)])
    assert err[1] == pytest.approx(top1) and err[5] == pytest.approx(top5)
    assert topk_errors(np.eye(3), np.arange(3)) == {1: 0.0, 5: 0.0}


def test_mini_settings_fit_their_networks():
    """Every mini setting fits its network (counted from the weights it would quantize) and keeps the
    paper's fc settings: the C's of TABLE1_SETTINGS, K at most the paper's and the sub-vectors a layer has."""
    from qcnn_lite.paper import constants as paper
    from qcnn_lite.quant.quantize import layer_settings

    for arch, settings in MINI_SETTINGS.items():
        net = models.synthetic(arch)
        for st, ref in zip(settings, paper.TABLE1_SETTINGS[MINI_OF[arch]]):
            plan = layer_settings(net, st)
            assert set(plan) == set(net.params)
            for name, (d, k) in plan.items():
                w = net.params[name].weight
                vectors = w.shape[0] * (w.shape[2] * w.shape[3] if w.ndim == 4 else 1)
                assert w.shape[1] % d == 0 and 1 <= k <= vectors, (arch, name, d, k)
                if w.ndim == 2 and name in ref:  # the paper's own choice for this fc layer
                    assert d == ref[name][0] and k <= min(ref[name][1], vectors), (arch, name)
                elif w.ndim == 2:
                    assert (d, k) == tuple(ref["fc"]), (arch, name)
                else:
                    assert d == min(4, w.shape[1]), (arch, name)


@pytest.fixture
def fashion():
    from qcnn_lite.io import datasets as data

    try:
        data.find_fashion_mnist()
    except (data.DataError, FileNotFoundError) as e:
        pytest.skip(f"Fashion-MNIST is not available: {e}")


def test_table1_accuracy_rows_and_cache(tmp_path, fashion, monkeypatch):
    net = models.synthetic("mini-cnns", seed=1)
    save(net, tmp_path / "mini-cnns.qcnn")
    kw = dict(models_dir=tmp_path, cache_dir=tmp_path / "cache", n_calib=300, n_test=400, n_iter=1, show_progress=False)
    rows = evaluate.table1_accuracy(["mini-cnns"], **kw)
    assert [(r["setting"], r["method"]) for r in rows] == [(0, "dense"), (1, "ec"), (1, "plain"), (2, "ec"), (2, "plain")]
    for r in rows:
        assert 0 <= r["top5_err"] <= r["top1_err"] <= 100
        if r["method"] != "dense":
            assert r["compression"] > 1 and r["speedup"] > 1
            assert r["top1_change"] == pytest.approx(r["top1_err"] - rows[0]["top1_err"], abs=0.011)
        assert r["top1_tables_change"] == pytest.approx(r["top1_err"] - r["top1_err_float"], abs=0.011)
    ec = rows[3]
    listed = sorted(n for part in ec["tables"].split("; ") for n in part.split(": ")[1].split(","))
    assert ec["method"] == "ec" and listed == sorted(net.params)  # every layer's precision, once
    files = sorted((tmp_path / "cache").glob("*.json"))
    assert len(files) == 5
    stamps = [f.stat().st_mtime_ns for f in files]
    calls = []
    real = evaluate.quantize_network
    monkeypatch.setattr(evaluate, "quantize_network", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = evaluate.table1_accuracy(["mini-cnns"], **kw)
    assert again == rows
    assert calls == [] and [f.stat().st_mtime_ns for f in files] == stamps  # served from the cache, nothing rewritten
    # a different model file is a different key
    save(models.synthetic("mini-cnns", seed=2), tmp_path / "mini-cnns.qcnn", overwrite=True)
    evaluate.table1_accuracy(["mini-cnns"], **dict(kw, n_iter=1))
    assert len(list((tmp_path / "cache").glob("*.json"))) == 10 and len(calls) == 4  # 2 settings x (ec, plain)
    # so is another table precision: a figure computed with float fc tables is not reused for 8-bit ones
    monkeypatch.setattr(QLinear, "TABLE_DTYPES", ("float32",), raising=False)
    monkeypatch.setattr(QLinear, "default_table_dtype", staticmethod(lambda K: "float32"))
    evaluate.table1_accuracy(["mini-cnns"], **dict(kw, n_iter=1))
    assert len(calls) == 8
    monkeypatch.undo()
    monkeypatch.setattr(evaluate, "quantize_network", lambda *a, **k: calls.append(1) or real(*a, **k))
    evaluate.table1_accuracy(["mini-cnns"], **dict(kw, n_iter=1, table_guard=1.0))
    assert len(calls) == 12


def test_unknown_arch_and_missing_model(tmp_path, fashion):
    with pytest.raises(ValueError, match="no Table 1 settings"):
        evaluate.table1_accuracy(["resnet"], models_dir=tmp_path, show_progress=False)
    with pytest.raises(FileNotFoundError, match="train it"):
        evaluate.table1_accuracy(["mini-vgg16"], models_dir=tmp_path, cache_dir=tmp_path, show_progress=False)
    with pytest.raises(ValueError, match="settings must be among 1, 2"):
        evaluate.table1_accuracy(["mini-vgg16"], models_dir=tmp_path, settings=(3,), show_progress=False)
    with pytest.raises(ValueError, match="methods must be among ec, plain"):
        evaluate.table1_accuracy(["mini-vgg16"], models_dir=tmp_path, methods=("dense",), show_progress=False)


def _imagenet_folder(root, n_classes=3, per_class=2, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    wnids = [f"n{1000 + i:08d}" for i in range(n_classes)]
    for w in wnids:
        (root / w).mkdir(parents=True)
        for j in range(per_class):
            a = rng.integers(0, 255, (rng.integers(240, 300), rng.integers(240, 300), 3), dtype=np.uint8)
            Image.fromarray(a).save(root / w / f"ILSVRC2012_val_{j:08d}.JPEG", quality=85)
    return wnids


def test_imagenet_path_plumbing(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("PIL")
    from qcnn_lite.io import datasets as data
    from qcnn_lite.nn.engine import output_shapes
    from qcnn_lite.reference.bridge import TORCHVISION_KEYS

    _imagenet_folder(tmp_path / "val")
    # a randomly initialised torchvision-format AlexNet state dict
    input_shape, spec = models.spec("alexnet-tv")
    shapes = [input_shape] + output_shapes(spec, input_shape)
    g = torch.Generator().manual_seed(0)
    state, layers = {}, [(i, L) for i, L in enumerate(spec) if L["type"] in ("conv", "fc")]
    for (i, L), pre in zip(layers, TORCHVISION_KEYS["alexnet"]):
        if L["type"] == "conv":
            shape = (L["out"], shapes[i][0], L["kernel"], L["kernel"])
        else:
            shape = (L["out"], int(np.prod(shapes[i])))
        state[pre + ".weight"] = torch.randn(shape, generator=g) * (2 / np.prod(shape[1:])) ** 0.5
        state[pre + ".bias"] = torch.zeros(L["out"])
    torch.save(state, tmp_path / "alexnet.pth")
    # tiny codebooks keep k-means fast; the plumbing is what is under test
    monkeypatch.setitem(evaluate.IMAGENET_SETTINGS, "alexnet", [{"conv": (8, 2), "fc": (4, 2), "fc8": (1, 2)}])
    rows = evaluate.imagenet_accuracy(tmp_path / "val", tmp_path / "alexnet.pth", "alexnet", settings=(1,),
                                      n_calib=2, methods=("plain",), show_progress=False)
    assert [(r["setting"], r["method"]) for r in rows] == [(0, "dense"), (1, "plain")]
    assert all(r["n_images"] == 4 for r in rows)  # 6 images, the first 2 went to calibration
    # the dense row agrees with a direct evaluation of the same images and labels
    x, y = zip(*data.imagenet_val(tmp_path / "val", preset=data.TORCHVISION))
    x, y = np.concatenate(x)[2:], np.concatenate(y)[2:]
    # class folders in sorted order give labels 0, 0, 1, 1, 2, 2; the first two images calibrated
    assert y.tolist() == [1, 1, 2, 2]
    from qcnn_lite.reference.bridge import from_torchvision

    direct = evaluate_network(from_torchvision(tmp_path / "alexnet.pth", "alexnet"), x, y)
    assert rows[0]["top1_err"] == direct["top1_err"] and rows[0]["top5_err"] == direct["top5_err"]
