"""The torch bridge: spec -> nn.Module -> Network agree; torchvision state dicts load exactly."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from qcnn_lite.nn import models  # noqa: E402
from qcnn_lite.reference.bridge import from_torchvision, to_network, to_torch  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


@pytest.mark.parametrize("arch", ["mini-alexnet", "mini-cnns", "mini-vgg16"])
def test_engine_matches_torch_module(arch):
    torch.manual_seed(0)
    input_shape, spec = models.spec(arch)
    m = to_torch(spec, input_shape).eval()
    net = to_network(m, arch, spec, input_shape, {"note": "x"})
    x = torch.randn(6, *input_shape) * 3
    with torch.no_grad():
        ref = m(x).numpy()
        pre = m[:-1](x).numpy()  # logits: the softmax comes last
    out = net.forward(x.numpy())
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.forward(x.numpy(), stop=len(spec) - 1), pre, rtol=1e-4, atol=1e-4)
    assert net.meta == {"note": "x"}


def test_softmax_only_at_eval():
    input_shape, spec = models.spec("mini-cnns")
    m = to_torch(spec, input_shape)
    x = torch.randn(3, *input_shape)
    m.train()
    assert not torch.allclose(m(x).sum(1), torch.ones(3))  # logits while training
    m.eval()
    torch.testing.assert_close(m(x).sum(1), torch.ones(3))


def _tv_alexnet(classes: int) -> nn.Module:
    """torchvision.models.AlexNet, written out (same module names, so the same state-dict keys)."""
    class AlexNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
                nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
                nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
            self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
            self.classifier = nn.Sequential(
                nn.Dropout(0.5), nn.Linear(256 * 36, 4096), nn.ReLU(inplace=True),
                nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, classes))

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    return AlexNet()


def test_from_torchvision_alexnet_matches_torch(tmp_path):
    torch.manual_seed(1)
    ref = _tv_alexnet(classes=20).eval()
    # random biases too, so a missed bias would show
    with torch.no_grad():
        for p in ref.parameters():
            if p.ndim == 1:
                p.normal_(0, 0.1)
    path = tmp_path / "alexnet.pth"
    torch.save(ref.state_dict(), path)
    net = from_torchvision(path, "alexnet")
    assert net.name == "alexnet-tv" and net.input_shape == (3, 224, 224)
    assert net.params["fc8"].out_features == 20  # the class count comes from the file
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        want = torch.softmax(ref(x), 1).numpy()
        logits = ref(x).numpy()
    np.testing.assert_allclose(net.forward(x.numpy(), stop=len(net.spec) - 1), logits, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(net.forward(x.numpy()), want, rtol=1e-3, atol=1e-5)


def test_from_torchvision_rejects_wrong_files(tmp_path):
    # a cheap stand-in: the checks run before any shape is used, except the one for conv2
    torch.manual_seed(0)
    state = {k: torch.zeros(v.shape) for k, v in _tv_alexnet(classes=10).state_dict().items()}
    p = tmp_path / "bad.pth"
    bad = dict(state)
    del bad["features.3.bias"]
    torch.save(bad, p)
    with pytest.raises(ValueError, match="features.3"):
        from_torchvision(p, "alexnet")
    bad = dict(state)
    bad["features.3.weight"] = torch.zeros(192, 64, 3, 3)
    torch.save(bad, p)
    with pytest.raises(ValueError, match="conv2"):
        from_torchvision(p, "alexnet")
    torch.save(state, p)
    with pytest.raises(ValueError, match="arch"):
        from_torchvision(p, "resnet50")

    class Evil:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    torch.save({"x": Evil()}, p)  # weights_only=True must refuse arbitrary objects
    with pytest.raises(Exception):
        from_torchvision(p, "alexnet")


@pytest.mark.slow
def test_from_torchvision_vgg16_matches_torch(tmp_path):
    torch.manual_seed(2)
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    feats, c = [], 3
    for v in cfg:
        if v == "M":
            feats.append(nn.MaxPool2d(2, 2))
        else:
            feats += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
            c = v
    ref = nn.Module()
    ref.features = nn.Sequential(*feats)
    ref.classifier = nn.Sequential(nn.Linear(25088, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, 4096),
                                   nn.ReLU(True), nn.Dropout(), nn.Linear(4096, 10))
    ref.eval()
    path = tmp_path / "vgg16.pth"
    torch.save(ref.state_dict(), path)
    net = from_torchvision(path, "vgg16")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        logits = ref.classifier(torch.flatten(ref.features(x), 1)).numpy()
    np.testing.assert_allclose(net.forward(x.numpy(), stop=len(net.spec) - 1), logits, rtol=1e-3, atol=1e-4)
