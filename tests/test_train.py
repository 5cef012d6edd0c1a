"""Training (short runs), augmentation, the CLI's safety, and the committed reference models."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qcnn_lite.io import datasets as data
from qcnn_lite.nn import models
from qcnn_lite.cli.main import main as cli_main

torch = pytest.importorskip("torch")
from qcnn_lite.reference import train  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "data" / "models"
MINI = ["mini-alexnet", "mini-cnns", "mini-vgg16"]


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def _need_data():
    try:
        data.find_fashion_mnist()
    except data.DataError as e:
        pytest.skip(f"Fashion-MNIST not installed: run `make data` ({e.args[0].splitlines()[0]})")


def test_short_training_lowers_the_loss():
    _need_data()
    net, hist = train.train("mini-cnns", epochs=2, seed=0, batch_size=32, limit=2000, max_steps=120, show_progress=False)
    loss = np.asarray(hist["loss"])
    assert len(loss) == 120 and np.isfinite(loss).all()
    assert loss[:10].mean() > 2.0  # about ln(10) at the start
    assert loss[-30:].mean() < 0.6 * loss[:10].mean()
    # the exported network classifies training images better than chance, through the numpy engine
    x, y = data.load_fashion_mnist("train")
    top1, top5 = train.evaluate(net, x[:500], y[:500], show_progress=False)
    assert top1 > 50 and top5 >= top1
    assert net.meta["classes"] == list(data.CLASSES)
    assert (net.meta["input_mean"], net.meta["input_std"]) == (data.MEAN, data.STD)


def test_training_is_seeded():
    _need_data()
    a = train.train("mini-alexnet", epochs=1, seed=3, limit=256, max_steps=4, show_progress=False)[1]["loss"]
    b = train.train("mini-alexnet", epochs=1, seed=3, limit=256, max_steps=4, show_progress=False)[1]["loss"]
    c = train.train("mini-alexnet", epochs=1, seed=4, limit=256, max_steps=4, show_progress=False)[1]["loss"]
    assert a == b and a != c


def test_augment_is_a_flip_and_shift_of_each_sample():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1, 10, 12)
    y = train.augment_batch(torch, x, gen).numpy()
    bg = np.float32(-data.MEAN / data.STD)
    for xi, yi in zip(x.numpy(), y):
        cands = []
        for img in (xi, xi[..., ::-1]):
            padded = np.pad(img, ((0, 0), (2, 2), (2, 2)), constant_values=bg)
            cands += [padded[:, dy : dy + 10, dx : dx + 12] for dy in range(5) for dx in range(5)]
        assert any(np.array_equal(c, yi) for c in cands)


def test_cli_never_overwrites(tmp_path, capsys):
    (tmp_path / "mini-cnns.qcnn").write_bytes(b"user's file")
    assert cli_main(["train", "--arch", "mini-cnns", "--out", str(tmp_path)]) == 2
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "mini-cnns.qcnn").read_bytes() == b"user's file"


@pytest.mark.parametrize("arch", MINI)
def test_mini_specs_fit_the_paper_settings(arch):
    """Channel counts divide by C's = 8 (after conv1), fc inputs by 3 and 4; most weights sit in fc."""
    net = models.synthetic(arch)
    dims = net.input_dims()
    n_conv = n_fc = 0
    for _, L in net.param_layers():
        w = net.params[L["name"]].dense_weight()
        if L["type"] == "conv":
            n_conv += w.size
            cin = dims[L["name"]][0] // L.get("groups", 1)
            assert cin == 1 or cin % 8 == 0, (L["name"], cin)
        else:
            n_fc += w.size
            assert int(np.prod(dims[L["name"]])) % 12 == 0, L["name"]
    assert n_fc > 2 * n_conv
    assert net.input_shape == (1, 28, 28) and net.shapes()[-1] == (10,)


@pytest.mark.parametrize("arch", MINI)
def test_committed_model_reproduces_its_record(arch):
    model, record = MODELS / f"{arch}.qcnn", MODELS / f"{arch}.json"
    if not model.exists() or not record.exists():
        pytest.skip(f"{model} or its record is missing: train it with `python -m qcnn_lite train --arch {arch}`")
    _need_data()
    from qcnn_lite.io import modelfile

    net = modelfile.load(model)
    rec = json.loads(record.read_text())
    assert rec["arch"] == arch and net.name == arch
    assert net.meta["classes"] == list(data.CLASSES)
    assert (net.meta["input_mean"], net.meta["input_std"]) == (rec["input_mean"], rec["input_std"])
    x, y = data.load_fashion_mnist("test")
    top1, top5 = train.evaluate(net, x, y, batch_size=1000, show_progress=False)
    assert abs(top1 - rec["test_top1"]) <= 0.05
    assert abs(top5 - rec["test_top5"]) <= 0.05
    assert rec["test_top1"] >= 91.0
