"""The numpy inference engine: a network is a spec (plain data, :mod:`qcnn_lite.nn.spec`) plus its parameter layers.

``conv`` and ``fc`` layers take their weights from ``Network.params[name]``,
which holds a dense (``Conv2d``/``Linear``) or quantized (``QConv2d``/``QLinear``)
layer. Everything else is parameter-free and runs here.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from qcnn_lite import kernels
from qcnn_lite.nn.layers import Conv2d, Linear, QConv2d, QLinear
from qcnn_lite.nn.spec import LAYER_TYPES, PARAM_TYPES, output_shapes, param_shapes, pool_size, validate_spec

__all__ = ["Network", "relu", "lrn", "maxpool", "softmax", "LAYER_TYPES", "output_shapes"]


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0, out=x if x.flags.writeable else None)


def lrn(x: np.ndarray, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> np.ndarray:
    """Caffe's cross-channel LRN on x (n, C, H, W); the kernels' dispatch point picks numpy or Pythran."""
    return kernels.lrn(np.ascontiguousarray(x, dtype=np.float32), size, alpha, beta, k)


def maxpool(x: np.ndarray, kernel: int, stride: int, ceil: bool = False) -> np.ndarray:
    """Max-pooling without padding; ``ceil`` keeps a last partial window, as Caffe does.

    Separable: the maximum over each window's rows (whole rows, contiguous), then over its
    columns, 2*(kernel-1) passes instead of kernel^2 - 1, and a partial last window just
    takes fewer rows or columns (no padded copy): about 1.4-1.7x faster than window by
    window (docs/measurements.md).
    """
    n, C, H, W = x.shape
    OH, OW = pool_size(H, kernel, stride, ceil), pool_size(W, kernel, stride, ceil)
    r = np.array(x[:, :, 0:(OH - 1) * stride + 1:stride])  # every window starts inside the map
    for i in range(1, min(kernel, H)):
        v = x[:, :, i::stride][:, :, :OH]  # fewer rows where the last window is partial
        np.maximum(r[:, :, :v.shape[2]], v, out=r[:, :, :v.shape[2]])
    out = np.array(r[..., 0:(OW - 1) * stride + 1:stride])
    for j in range(1, min(kernel, W)):
        v = r[..., j::stride][..., :OW]
        np.maximum(out[..., :v.shape[3]], v, out=out[..., :v.shape[3]])
    return out


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


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
        validate_spec(self.spec)
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

    def layer_paths(self) -> dict[str, str]:
        """How each conv/fc layer runs on this network's input: ``tables`` (look-up tables, with their
        precision for fc), ``decoded weight`` (a quantized layer whose tables cannot pay off,
        :meth:`QConv2d.uses_tables`) or ``dense``."""
        out = {}
        dims = self.input_dims()
        for name, p in self.params.items():
            if isinstance(p, QConv2d):
                out[name] = "tables" if p.uses_tables(*dims[name][1:]) else "decoded weight"
            elif isinstance(p, QLinear):
                out[name] = f"tables ({p.table_dtype})"
            else:
                out[name] = "dense"
        return out

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
        stop = len(self.spec) if stop is None else stop
        i = start
        while i < stop:
            L = self.spec[i]
            if L["type"] == "conv" and i + 1 < stop and self.spec[i + 1]["type"] == "relu" and L["name"] in self.params:
                # conv + ReLU in one call: the ReLU runs on each output block while it is in cache
                x = self.params[L["name"]](x, relu=True)
                i += 2
                continue
            x = self.run_layer(i, x)
            i += 1
        return x

    __call__ = forward

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class scores for x (n, C, H, W), computed in batches; (n, classes)."""
        outs = [self.forward(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0,) + self.shapes()[-1], np.float32)


def build_layer(L: dict, in_shape: tuple[int, ...], rng: np.random.Generator) -> Conv2d | Linear:
    """A dense layer for spec entry L with He-initialised random weights (seeded)."""
    shape = param_shapes(L, in_shape)["weight"]
    fan_in = math.prod(shape[1:])
    w = rng.standard_normal(shape, dtype=np.float32) * math.sqrt(2.0 / fan_in)
    if L["type"] == "conv":
        return Conv2d(w, np.zeros(L["out"], np.float32), L.get("stride", 1), L.get("padding", 0), L.get("groups", 1))
    return Linear(w, np.zeros(L["out"], np.float32))
