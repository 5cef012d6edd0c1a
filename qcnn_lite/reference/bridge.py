"""The bridge to PyTorch: a torch module for any spec, and weights back into the numpy engine.

This is the only module (beside training) that imports torch, and it does so
lazily inside each function, so ``import qcnn_lite`` never needs torch.

* :func:`to_torch` -- an ``nn.Module`` computing exactly what ``Network`` computes.
* :func:`to_network` -- copy a module's weights into a dense ``Network`` (float32).
* :func:`from_torchvision` -- read a local torchvision ``alexnet``/``vgg16`` state
  dict (``torch.load(weights_only=True)``, never pickle) into a ``Network``.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from qcnn_lite.nn.engine import Network
from qcnn_lite.nn.spec import PARAM_TYPES, output_shapes
from qcnn_lite.nn.layers import Conv2d, Linear
from qcnn_lite.nn import models

__all__ = ["to_torch", "to_network", "torch_layer", "network_to_torch", "from_torchvision", "TORCHVISION_KEYS"]


def to_torch(spec: list[dict], input_shape: tuple[int, int, int], dropout: float = 0.5):
    """An ``nn.Sequential`` for the spec; conv/fc submodules are named after their layers.

    The final softmax is applied only in eval mode, so training can use
    ``cross_entropy`` on the logits. Weights are He-initialised (seeded by torch's global RNG).
    """
    import torch
    from torch import nn

    class _EvalSoftmax(nn.Module):
        def forward(self, x):
            return x if self.training else torch.softmax(x, dim=-1)

    shapes = [tuple(input_shape)] + output_shapes(spec, input_shape)
    mods = nn.Sequential()
    for i, L in enumerate(spec):
        t, ins = L["type"], shapes[i]
        if t == "conv":
            m = nn.Conv2d(ins[0], L["out"], L["kernel"], L.get("stride", 1), L.get("padding", 0), groups=L.get("groups", 1))
            name = L["name"]
        elif t == "fc":
            m = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(ins)), L["out"])) if len(ins) > 1 else nn.Linear(ins[0], L["out"])
            name = L["name"]
        else:
            name = f"{i}_{t}"
            if t == "relu":
                m = nn.ReLU(inplace=True)
            elif t == "lrn":
                m = nn.LocalResponseNorm(L.get("size", 5), L.get("alpha", 1e-4), L.get("beta", 0.75), L.get("k", 1.0))
            elif t == "maxpool":
                m = nn.MaxPool2d(L["kernel"], L["stride"], ceil_mode=L.get("ceil", False))
            elif t == "flatten":
                m = nn.Flatten()
            elif t == "dropout":
                m = nn.Dropout(L.get("p", dropout))
            elif t == "softmax":
                m = _EvalSoftmax()
            else:  # pragma: no cover - specs are validated by Network
                raise ValueError(f"layer {i}: unknown type {t!r}")
        if t in PARAM_TYPES:  # He initialisation: deep plain stacks (mini-vgg16) train from it
            lin = _linear_of(m)
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
            nn.init.zeros_(lin.bias)
        mods.add_module(name, m)
    return mods


def torch_layer(layer: Conv2d | Linear):
    """A dense layer as an ``nn.Conv2d``/``nn.Linear`` with the same weights, in eval mode."""
    import torch
    from torch import nn

    if isinstance(layer, Conv2d):
        m = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding, groups=layer.groups)
    else:
        m = nn.Linear(layer.in_features, layer.out_features)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(layer.weight))
        m.bias.copy_(torch.from_numpy(layer.bias))
    return m.eval()


def network_to_torch(net: Network):
    """A dense Network as the module of :func:`to_torch` carrying its weights, in eval mode (the inverse of
    :func:`to_network`)."""
    import torch

    module = to_torch(net.spec, net.input_shape)
    with torch.no_grad():
        for L in net.spec:
            if L["type"] in PARAM_TYPES:
                src, dst = net.params[L["name"]], _linear_of(getattr(module, L["name"]))
                dst.weight.copy_(torch.from_numpy(src.weight))
                dst.bias.copy_(torch.from_numpy(src.bias))
    return module.eval()


def _linear_of(m):
    from torch import nn

    return m[1] if isinstance(m, nn.Sequential) else m


def _f32(t) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)


def to_network(module, name: str, spec: list[dict], input_shape: tuple[int, int, int], meta: dict[str, Any] | None = None) -> Network:
    """A dense ``Network`` with the weights of a module made by :func:`to_torch`."""
    params = {}
    for L in spec:
        if L["type"] not in PARAM_TYPES:
            continue
        m = getattr(module, L["name"])
        if L["type"] == "conv":
            params[L["name"]] = Conv2d(_f32(m.weight), _f32(m.bias), L.get("stride", 1), L.get("padding", 0), L.get("groups", 1))
        else:
            lin = _linear_of(m)
            params[L["name"]] = Linear(_f32(lin.weight), _f32(lin.bias))
    return Network(name, input_shape, spec, params, dict(meta or {}))


# torchvision state-dict prefixes of each conv/fc layer, in spec order
TORCHVISION_KEYS = {
    "alexnet": ["features.0", "features.3", "features.6", "features.8", "features.10",
                "classifier.1", "classifier.4", "classifier.6"],
    "vgg16": ["features.%d" % i for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)]
             + ["classifier.0", "classifier.3", "classifier.6"],
}
_SPEC_OF = {"alexnet": "alexnet-tv", "vgg16": "vgg16"}


def from_torchvision(path: str | os.PathLike, arch: str) -> Network:
    """A dense ``Network`` from a torchvision ``alexnet`` or ``vgg16`` state dict on disk.

    The file is read with ``torch.load(weights_only=True)`` (no pickled code runs).
    torchvision's ``alexnet`` is the 64/192/384/256/256 variant (spec
    ``alexnet-tv``); its ``vgg16`` is the paper's. Inputs are RGB, 224x224,
    normalised with ``data.TORCHVISION``.
    """
    import torch

    if arch not in TORCHVISION_KEYS:
        raise ValueError(f"arch must be one of {', '.join(TORCHVISION_KEYS)}, got {arch!r}")
    state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}")
    input_shape, spec = models.spec(_SPEC_OF[arch])
    prefixes = TORCHVISION_KEYS[arch]
    layers = [L for L in spec if L["type"] in PARAM_TYPES]
    # the class count comes from the file; the spec's fc8 follows it
    last_w = state.get(prefixes[-1] + ".weight")
    if last_w is not None and tuple(last_w.shape)[0] != layers[-1]["out"]:
        input_shape, spec = models.SPECS[_SPEC_OF[arch]](int(last_w.shape[0]))
        layers = [L for L in spec if L["type"] in PARAM_TYPES]
    shapes = [tuple(input_shape)] + output_shapes(spec, input_shape)
    in_shapes = {L["name"]: shapes[i] for i, L in enumerate(spec) if L["type"] in PARAM_TYPES}
    params = {}
    for L, pre in zip(layers, prefixes):
        wk, bk = pre + ".weight", pre + ".bias"
        if wk not in state or bk not in state:
            raise ValueError(f"{path}: no {wk!r}/{bk!r}; is this a torchvision {arch} state dict?")
        w, b = _f32(state[wk]), _f32(state[bk])
        ins = in_shapes[L["name"]]
        if L["type"] == "conv":
            want = (L["out"], ins[0] // L.get("groups", 1), L["kernel"], L["kernel"])
        else:
            want = (L["out"], int(np.prod(ins)))
        if w.shape != want or b.shape != (L["out"],):
            raise ValueError(f"{path}: {wk} has shape {w.shape}, {arch} layer {L['name']} needs {want}")
        if L["type"] == "conv":
            params[L["name"]] = Conv2d(w, b, L.get("stride", 1), L.get("padding", 0), L.get("groups", 1))
        else:
            params[L["name"]] = Linear(w, b)
    extra = sorted(k for k in state if not any(k.startswith(p + ".") for p in prefixes))
    if extra:
        raise ValueError(f"{path}: unexpected keys {extra[:3]} for torchvision {arch}")
    meta = {"weights": f"torchvision {arch} ({os.path.basename(os.fspath(path))})", "preprocess": "torchvision"}
    return Network(_SPEC_OF[arch], input_shape, spec, params, meta)
