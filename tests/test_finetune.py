"""Codebook fine-tuning (ec+ft): lowers the training loss, codes untouched, a normal model file."""
import numpy as np
import pytest

from qcnn_lite.io import modelfile
from qcnn_lite.nn.layers import QConv2d, QLinear
from qcnn_lite.quant.quantize import quantize_network

pytest.importorskip("torch")
from qcnn_lite.quant import finetune  # noqa: E402

from conftest import tiny_net  # noqa: E402


def test_torch_forward_matches_the_engine():
    import torch

    net = tiny_net()
    q = quantize_network(net, None, {"conv": (2, 4), "c1": (1, 4), "fc": (4, 4)}, error_correction=False, show_progress=False)
    model = finetune._torch_model(torch, q)
    model.eval()
    x = np.random.default_rng(0).standard_normal((10, 2, 8, 8)).astype(np.float32)
    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    for layer in q.params.values():  # torch mirrors the float tables; 8-bit tables are tested in test_layers
        if hasattr(layer, "table_dtype"):
            layer.table_dtype = "float32"
    np.testing.assert_allclose(got, q.predict(x), rtol=1e-4, atol=1e-6)


def test_finetune_lowers_the_loss_and_keeps_the_codes(tmp_path):
    net = tiny_net()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((256, 2, 8, 8)).astype(np.float32)
    y = net.predict(x).argmax(1)
    q = quantize_network(net, None, {"conv": (2, 4), "c1": (1, 4), "fc": (4, 4)}, error_correction=False, show_progress=False)
    before = finetune.training_loss(q, x, y)
    ft, hist = finetune.finetune(q, x, y, epochs=4, lr=3e-3, batch_size=32, show_progress=False)
    after = finetune.training_loss(ft, x, y)
    assert after < 0.9 * before, (before, after)
    changed = 0
    for name, p in q.params.items():
        f = ft.params[name]
        assert type(f) is type(p) and isinstance(f, (QConv2d, QLinear))
        assert f.codes.dtype == p.codes.dtype and f.codes.tobytes() == p.codes.tobytes()  # byte for byte
        changed += not np.array_equal(f.codebooks, p.codebooks)
    assert changed == len(q.params)
    assert all(np.array_equal(q.params[k].codebooks, p.codebooks) for k, p in quantize_network(
        net, None, {"conv": (2, 4), "c1": (1, 4), "fc": (4, 4)}, error_correction=False, show_progress=False).params.items())
    back = modelfile.load(modelfile.save(ft, tmp_path / "ft.qcnn"))
    np.testing.assert_allclose(back.predict(x[:8]), ft.predict(x[:8]), rtol=1e-5, atol=1e-6)


def test_finetune_rejects_a_dense_network():
    net = tiny_net()
    x = np.zeros((4, 2, 8, 8), np.float32)
    with pytest.raises(ValueError, match="quantized"):
        finetune.finetune(net, x, np.zeros(4, int))
