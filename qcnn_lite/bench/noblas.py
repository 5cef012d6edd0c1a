"""The paper's dense baseline: a dense network run by compiled loops, without BLAS.

The paper's 3.08x (AlexNet) and 4.05x (CNN-S) compare Q-CNN with its authors'
own dense code on a phone, not with a tuned BLAS. :func:`noblas_network` gives
that condition here: the same network, its conv and fc layers run by the
``_noblas_kernels`` kernels (direct convolution, matrix-vector loops; see
:mod:`qcnn_lite.kernels._noblas_kernels`). Everything else (ReLU, LRN, pooling)
is the engine's, as for every other variant. torch fp32 and int8 stay the
modern baselines beside it.
"""
from __future__ import annotations

import numpy as np

from qcnn_lite import kernels
from qcnn_lite.nn.engine import Network
from qcnn_lite.nn.layers import Conv2d, Linear
from qcnn_lite.nn.checks import check_input
from qcnn_lite.paper.constants import NOBLAS_LABEL

__all__ = ["DirectConv2d", "DirectLinear", "direct_layer", "noblas_network", "LABEL"]

# How tables and benchmarks name this baseline.
LABEL = NOBLAS_LABEL  # the name of this baseline in every table


class DirectConv2d(Conv2d):
    """A :class:`Conv2d` whose forward pass is ``kernels.conv2d_direct`` (compiled loops, no BLAS)."""

    def __call__(self, x: np.ndarray, relu: bool = False) -> np.ndarray:
        """x (n, C, H, W) -> (n, out, OH, OW); ``relu`` applies a ReLU to the output."""
        x = check_input(x, 4, self.in_channels, "DirectConv2d")
        out = kernels.conv2d_direct(x, self.weight, self.bias, self.stride, self.padding, self.groups)
        return np.maximum(out, 0, out=out) if relu else out


class DirectLinear(Linear):
    """A :class:`Linear` whose forward pass is ``kernels.linear_direct`` over its transposed weight."""

    def __init__(self, weight, bias=None):
        super().__init__(weight, bias)
        self._wt = np.ascontiguousarray(self.weight.T)  # (in, out): the layout the loops stream

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x (n, in) -> (n, out)."""
        x = check_input(x, 2, self.in_features, "DirectLinear")
        return kernels.linear_direct(x, self._wt, self.bias)


def direct_layer(layer: Conv2d | Linear, name: str = "layer") -> DirectConv2d | DirectLinear:
    """The no-BLAS twin of a dense layer (same weight arrays); ValueError for a quantized one."""
    if isinstance(layer, Conv2d):
        return DirectConv2d(layer.weight, layer.bias, layer.stride, layer.padding, layer.groups)
    if isinstance(layer, Linear):
        return DirectLinear(layer.weight, layer.bias)
    raise ValueError(f"layer {name!r} is {type(layer).__name__}: the no-BLAS baseline runs dense networks only")


def noblas_network(net: Network) -> Network:
    """A copy of the dense network ``net`` whose conv and fc layers run without BLAS.

    Raises ValueError for a quantized network (the baseline is the dense one) and
    ImportError when the no-BLAS kernels were not built.
    """
    if not kernels.direct_available():
        raise ImportError("the no-BLAS dense kernels (_noblas_kernels) are not built")
    params = {name: direct_layer(p, name) for name, p in net.params.items()}
    out = net.copy()
    out.params = params
    return out
