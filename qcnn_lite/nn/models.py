"""Network specifications as plain data, and networks with synthetic (seeded) weights.

Full size, as the paper used them (Caffe models, 1000 classes):

* ``alexnet`` -- BVLC AlexNet: 227x227 input, LRN, grouped conv2/4/5;
* ``cnns`` -- CNN-S of Chatfield et al. 2014: strided 7x7 conv1, LRN, ceil pooling;
* ``vgg16`` -- VGG-16: thirteen 3x3 convs.

Weights do not change time or size, so :func:`synthetic` networks serve the
cost, storage and speed work.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from qcnn_lite.nn.engine import Network, build_layer
from qcnn_lite.nn.spec import output_shapes

__all__ = ["SPECS", "spec", "synthetic", "names"]


def _conv(name, out, kernel, stride=1, padding=0, groups=1):
    return {"type": "conv", "name": name, "out": out, "kernel": kernel, "stride": stride, "padding": padding, "groups": groups}


def _fc(name, out):
    return {"type": "fc", "name": name, "out": out}


def _pool(kernel, stride, ceil=False):
    return {"type": "maxpool", "kernel": kernel, "stride": stride, "ceil": ceil}


RELU = {"type": "relu"}
FLATTEN = {"type": "flatten"}
DROPOUT = {"type": "dropout"}
SOFTMAX = {"type": "softmax"}


def _lrn(size=5, alpha=1e-4, beta=0.75, k=1.0):
    return {"type": "lrn", "size": size, "alpha": alpha, "beta": beta, "k": k}


def _classifier(classes: int, hidden: int = 4096) -> list[dict]:
    return [FLATTEN, _fc("fc6", hidden), RELU, DROPOUT, _fc("fc7", hidden), RELU, DROPOUT, _fc("fc8", classes), SOFTMAX]


def alexnet(classes: int = 1000) -> tuple[tuple[int, int, int], list[dict]]:
    """BVLC AlexNet (Caffe's bvlc_alexnet deploy.prototxt)."""
    return (3, 227, 227), [
        _conv("conv1", 96, 11, stride=4), RELU, _lrn(), _pool(3, 2),
        _conv("conv2", 256, 5, padding=2, groups=2), RELU, _lrn(), _pool(3, 2),
        _conv("conv3", 384, 3, padding=1), RELU,
        _conv("conv4", 384, 3, padding=1, groups=2), RELU,
        _conv("conv5", 256, 3, padding=1, groups=2), RELU, _pool(3, 2),
    ] + _classifier(classes)


def cnns(classes: int = 1000) -> tuple[tuple[int, int, int], list[dict]]:
    """CNN-S (Chatfield et al. 2014, 'Return of the devil in the details')."""
    return (3, 224, 224), [
        _conv("conv1", 96, 7, stride=2), RELU, _lrn(5, 5e-4, 0.75, 2.0), _pool(3, 3, ceil=True),
        _conv("conv2", 256, 5, padding=1), RELU, _pool(2, 2, ceil=True),
        _conv("conv3", 512, 3, padding=1), RELU,
        _conv("conv4", 512, 3, padding=1), RELU,
        _conv("conv5", 512, 3, padding=1), RELU, _pool(3, 3, ceil=True),
    ] + _classifier(classes)


def vgg16(classes: int = 1000) -> tuple[tuple[int, int, int], list[dict]]:
    """VGG-16 (configuration D of Simonyan & Zisserman 2015)."""
    layers: list[dict] = []
    for b, (width, reps) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], start=1):
        for r in range(1, reps + 1):
            layers += [_conv(f"conv{b}_{r}", width, 3, padding=1), RELU]
        layers.append(_pool(2, 2))
    return (3, 224, 224), layers + _classifier(classes)


def alexnet_tv(classes: int = 1000) -> tuple[tuple[int, int, int], list[dict]]:
    """torchvision's AlexNet (64/192/384/256/256 filters, no LRN, no groups), 224x224 input.

    Its adaptive average pool is the identity at 224x224 (pool5 is already 6x6), so
    it is left out; dropout sits after the ReLUs, which changes nothing at test time.
    """
    return (3, 224, 224), [
        _conv("conv1", 64, 11, stride=4, padding=2), RELU, _pool(3, 2),
        _conv("conv2", 192, 5, padding=2), RELU, _pool(3, 2),
        _conv("conv3", 384, 3, padding=1), RELU,
        _conv("conv4", 256, 3, padding=1), RELU,
        _conv("conv5", 256, 3, padding=1), RELU, _pool(3, 2),
    ] + _classifier(classes)


# -- Mini reference networks for Fashion-MNIST (1x28x28, 10 classes) -------------
# Small enough to train on two CPU cores in minutes, but with each original's
# traits. Channel counts are multiples of 8 and the fc widths multiples of 12,
# so the paper's sub-space sizes (C's = 8 for conv, 3 or 4 for fc) divide them.
# As in the originals, the three fc layers hold most of the parameters.

def mini_alexnet(classes: int = 10) -> tuple[tuple[int, int, int], list[dict]]:
    """AlexNet in miniature: 5x5 conv1, LRN, overlapping 3/2 pooling, grouped conv2/4/5.

    LRN follows the pooling here (as in GoogLeNet), where it costs a quarter as much.
    """
    return (1, 28, 28), [
        _conv("conv1", 32, 5, padding=2), RELU, _pool(3, 2), _lrn(),                 # 32x13x13
        _conv("conv2", 64, 3, padding=1, groups=2), RELU, _pool(3, 2), _lrn(),       # 64x6x6
        _conv("conv3", 96, 3, padding=1), RELU,
        _conv("conv4", 96, 3, padding=1, groups=2), RELU,
        _conv("conv5", 64, 3, padding=1, groups=2), RELU, _pool(2, 2),              # 64x3x3 = 576
    ] + _classifier(classes, 768)


def mini_cnns(classes: int = 10) -> tuple[tuple[int, int, int], list[dict]]:
    """CNN-S in miniature: strided 7x7 conv1 with CNN-S's LRN, 5x5 conv2, ceil-mode pooling, three 3x3 convs."""
    return (1, 28, 28), [
        _conv("conv1", 32, 7, stride=2, padding=3), RELU, _lrn(5, 5e-4, 0.75, 2.0), _pool(2, 2, ceil=True),  # 32x7x7
        _conv("conv2", 64, 5, padding=2), RELU, _pool(2, 2, ceil=True),              # 64x4x4
        _conv("conv3", 96, 3, padding=1), RELU,
        _conv("conv4", 96, 3, padding=1), RELU,
        _conv("conv5", 96, 3, padding=1), RELU, _pool(2, 2, ceil=True),              # 96x2x2 = 384
    ] + _classifier(classes, 768)


def mini_vgg16(classes: int = 10) -> tuple[tuple[int, int, int], list[dict]]:
    """VGG-16 in miniature: thirteen 3x3 convs in five blocks (8, 32, 48, 48, 48 channels).

    A 28x28 image allows three 2x2 pools, so blocks 4 and 5 run on the 3x3 map.
    """
    layers: list[dict] = []
    for b, (width, reps) in enumerate([(8, 2), (32, 2), (48, 3), (48, 3), (48, 3)], start=1):
        for r in range(1, reps + 1):
            layers += [_conv(f"conv{b}_{r}", width, 3, padding=1), RELU]
        if b <= 3:
            layers.append(_pool(2, 2))                                                # 28 -> 14 -> 7 -> 3
    return (1, 28, 28), layers + _classifier(classes, 768)                           # 48x3x3 = 432


SPECS: dict[str, Callable[..., tuple[tuple[int, int, int], list[dict]]]] = {
    "alexnet": alexnet,
    "cnns": cnns,
    "vgg16": vgg16,
    "alexnet-tv": alexnet_tv,
    "mini-alexnet": mini_alexnet,
    "mini-cnns": mini_cnns,
    "mini-vgg16": mini_vgg16,
}


def names() -> list[str]:
    return list(SPECS)


def spec(name: str) -> tuple[tuple[int, int, int], list[dict]]:
    """(input_shape, layer list) of a named architecture."""
    if name not in SPECS:
        raise ValueError(f"unknown network {name!r}: choose one of {', '.join(SPECS)}")
    return SPECS[name]()


def synthetic(name: str, seed: int = 0) -> Network:
    """A dense network of the named architecture with seeded He-initialised weights."""
    input_shape, layers = spec(name)
    rng = np.random.default_rng(seed)
    shapes = [input_shape] + output_shapes(layers, input_shape)
    params = {L["name"]: build_layer(L, shapes[i], rng) for i, L in enumerate(layers) if L["type"] in ("conv", "fc")}
    return Network(name, input_shape, layers, params, {"weights": f"synthetic, seed {seed}"})
