"""The numpy inference engine: a network is a spec (plain data) plus its parameter layers.

A spec is a list of layer dicts, e.g.::

    {"type": "conv", "name": "conv1", "out": 96, "kernel": 11, "stride": 4, "padding": 0, "groups": 1}
    {"type": "relu"}
    {"type": "lrn", "size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0}
    {"type": "maxpool", "kernel": 3, "stride": 2, "ceil": False}
    {"type": "flatten"}
    {"type": "fc", "name": "fc6", "out": 4096}
    {"type": "softmax"}

``conv`` and ``fc`` layers take their weights from ``Network.params[name]``,
which holds a dense (``Conv2d``/``Linear``) or quantized (``QConv2d``/``QLinear``)
layer. Everything else is parameter-free.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from . import kernels
from .layers import Conv2d, Linear, QConv2d, QLinear

__all__ = ["Network", "relu", "lrn", "maxpool", "softmax", "LAYER_TYPES", "output_shapes"]

LAYER_TYPES = ("conv", "fc", "relu", "lrn", "maxpool", "flatten", "softmax", "dropout")
PARAM_TYPES = ("conv", "fc")


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0, out=x if x.flags.writeable else None)


def lrn(x: np.ndarray, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> np.ndarray:
    """Caffe's cross-channel LRN on x (n, C, H, W); the kernels' dispatch point picks numpy or Pythran."""
    return kernels.lrn(np.ascontiguousarray(x, dtype=np.float32), size, alpha, beta, k)


def _pool_size(size: int, kernel: int, stride: int, ceil: bool) -> int:
    v = (size - kernel) / stride
    out = (math.ceil(v) if ceil else math.floor(v)) + 1
    if ceil and (out - 1) * stride >= size:  # Caffe/torch: the last window must start inside the map
        out -= 1
    return max(out, 1)


def maxpool(x: np.ndarray, kernel: int, stride: int, ceil: bool = False) -> np.ndarray:
    """Max-pooling without padding; ``ceil`` keeps a last partial window, as Caffe does."""
    n, C, H, W = x.shape
    OH, OW = _pool_size(H, kernel, stride, ceil), _pool_size(W, kernel, stride, ceil)
    need_h, need_w = (OH - 1) * stride + kernel, (OW - 1) * stride + kernel
    if need_h > H or need_w > W:
        xp = np.full((n, C, max(need_h, H), max(need_w, W)), -np.inf, dtype=x.dtype)
        xp[:, :, :H, :W] = x
        x = xp
    out = None
    for i in range(kernel):
        for j in range(kernel):
            v = x[:, :, i : i + (OH - 1) * stride + 1 : stride, j : j + (OW - 1) * stride + 1 : stride]
            out = v.copy() if out is None else np.maximum(out, v, out=out)
    return out


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def output_shapes(spec: list[dict], input_shape: tuple[int, int, int]) -> list[tuple[int, ...]]:
    """The output shape (without the batch axis) of every layer of a spec."""
    shape: tuple[int, ...] = tuple(input_shape)
    out = []
    for L in spec:
        t = L["type"]
        if t == "conv":
            C, H, W = shape
            k, s, p = L["kernel"], L.get("stride", 1), L.get("padding", 0)
            shape = (L["out"], (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1)
            if min(shape[1:]) < 1:
                raise ValueError(f"layer {L['name']}: a {k}x{k} kernel does not fit a {H}x{W} map")
        elif t == "maxpool":
            C, H, W = shape
            shape = (C, _pool_size(H, L["kernel"], L["stride"], L.get("ceil", False)),
                     _pool_size(W, L["kernel"], L["stride"], L.get("ceil", False)))
        elif t == "flatten":
            shape = (int(np.prod(shape)),)
        elif t == "fc":
            shape = (L["out"],)
        out.append(shape)
    return out


def _validate_spec(spec: list[dict]) -> None:
    names = set()
    for i, L in enumerate(spec):
        if not isinstance(L, dict) or L.get("type") not in LAYER_TYPES:
            raise ValueError(f"layer {i}: unknown layer type {L.get('type') if isinstance(L, dict) else L!r}")
        if L["type"] in PARAM_TYPES:
            name = L.get("name")
            if not isinstance(name, str) or not name or name in names:
                raise ValueError(f"layer {i}: conv/fc layers need a unique name, got {name!r}")
            names.add(name)


@dataclass
class Network:
    """A network: ``spec`` (list of layer dicts), ``input_shape`` (C, H, W) and ``params``.

    ``params`` maps each conv/fc layer name to a ``Conv2d``, ``Linear``, ``QConv2d``
    or ``QLinear``. ``meta`` holds JSON-able extras: class names, input mean, ...
    """

    name: str
    input_shape: tuple[int, int, int]
    spec: list[dict]
    params: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(v) for v in self.input_shape)
        _validate_spec(self.spec)
        output_shapes(self.spec, self.input_shape)
        for name, layer in self.params.items():
            self.check_param(name, layer)

    def check_param(self, name: str, layer: Any) -> None:
        """Raise ValueError unless ``layer`` fits spec layer ``name`` (type, shape, stride, padding, groups)."""
        specs = {L["name"]: (i, L) for i, L in self.param_layers()}
        if name not in specs:
            raise ValueError(f"params hold {name!r}, which is not a conv/fc layer of the spec")
        i, L = specs[name]
        in_shape = ([self.input_shape] + self.shapes())[i]
        if L["type"] == "conv":
            if not isinstance(layer, (Conv2d, QConv2d)):
                raise ValueError(f"layer {name!r} is a conv layer, got {type(layer).__name__}")
            got = (layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding, layer.groups)
            want = (in_shape[0], L["out"], (L["kernel"],) * 2, L.get("stride", 1), L.get("padding", 0), L.get("groups", 1))
            fields = "in_channels, out_channels, kernel, stride, padding, groups"
        else:
            if not isinstance(layer, (Linear, QLinear)):
                raise ValueError(f"layer {name!r} is an fc layer, got {type(layer).__name__}")
            got, want = (layer.in_features, layer.out_features), (int(np.prod(in_shape)), L["out"])
            fields = "in_features, out_features"
        if tuple(got) != tuple(want):
            raise ValueError(f"layer {name!r} does not fit the spec: ({fields}) = {got}, the spec needs {want}")

    # -- structure ---------------------------------------------------------
    def param_layers(self) -> Iterator[tuple[int, dict]]:
        """(index, spec) of every conv/fc layer, in order."""
        for i, L in enumerate(self.spec):
            if L["type"] in PARAM_TYPES:
                yield i, L

    def shapes(self) -> list[tuple[int, ...]]:
        return output_shapes(self.spec, self.input_shape)

    def input_dims(self) -> dict[str, tuple[int, ...]]:
        """The input shape of each conv/fc layer."""
        shapes = [self.input_shape] + self.shapes()
        return {L["name"]: shapes[i] for i, L in self.param_layers()}

    @property
    def is_quantized(self) -> bool:
        return any(isinstance(p, (QConv2d, QLinear)) for p in self.params.values())

    def copy(self) -> "Network":
        """A copy with its own spec, params dict and meta (layer objects are shared, never mutated)."""
        return Network(self.name, self.input_shape, copy.deepcopy(self.spec), dict(self.params), copy.deepcopy(self.meta))

    # -- inference ---------------------------------------------------------
    def run_layer(self, i: int, x: np.ndarray) -> np.ndarray:
        """Apply layer i of the spec to x."""
        L = self.spec[i]
        t = L["type"]
        if t in PARAM_TYPES:
            if L["name"] not in self.params:
                raise ValueError(f"network {self.name!r} has no parameters for layer {L['name']!r}")
            if t == "fc" and x.ndim != 2:
                x = x.reshape(x.shape[0], -1)
            return self.params[L["name"]](x)
        if t == "relu":
            return relu(x)
        if t == "lrn":
            return lrn(x, L.get("size", 5), L.get("alpha", 1e-4), L.get("beta", 0.75), L.get("k", 1.0))
        if t == "maxpool":
            return maxpool(x, L["kernel"], L["stride"], L.get("ceil", False))
        if t == "flatten":
            return x.reshape(x.shape[0], -1)  # C*H*W order, as Caffe and torch
        if t == "softmax":
            return softmax(x)
        return x  # dropout: identity at test time

    def forward(self, x: np.ndarray, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Run layers ``start .. stop-1`` on x; x is (n, C, H, W) for the whole network."""
        x = np.asarray(x, dtype=np.float32)
        if start == 0 and x.shape[1:] != self.input_shape:
            raise ValueError(f"{self.name} expects input (n, {', '.join(map(str, self.input_shape))}), got {x.shape}")
        x = np.array(x, dtype=np.float32, copy=True)  # relu works in place: never touch the caller's array
        for i in range(start, len(self.spec) if stop is None else stop):
            x = self.run_layer(i, x)
        return x

    __call__ = forward

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class scores for x (n, C, H, W), computed in batches; (n, classes)."""
        outs = [self.forward(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0,) + self.shapes()[-1], np.float32)


def build_layer(L: dict, in_shape: tuple[int, ...], rng: np.random.Generator) -> Conv2d | Linear:
    """A dense layer for spec entry L with He-initialised random weights (seeded)."""
    if L["type"] == "conv":
        g, k = L.get("groups", 1), L["kernel"]
        cin = in_shape[0] // g
        std = math.sqrt(2.0 / (cin * k * k))
        w = (rng.standard_normal((L["out"], cin, k, k), dtype=np.float32) * std)
        return Conv2d(w, np.zeros(L["out"], np.float32), L.get("stride", 1), L.get("padding", 0), g)
    fan_in = int(np.prod(in_shape))
    w = rng.standard_normal((L["out"], fan_in), dtype=np.float32) * math.sqrt(2.0 / fan_in)
    return Linear(w, np.zeros(L["out"], np.float32))
