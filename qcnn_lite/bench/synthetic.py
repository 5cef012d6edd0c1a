"""Synthetic quantized networks at full size: random codebooks and codes, the paper's settings.

Speed and memory depend on the architecture and settings only, never on the weights.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from qcnn_lite.nn import models
from qcnn_lite.nn.engine import Network
from qcnn_lite.nn.layers import QConv2d, QLinear
from qcnn_lite.nn.spec import PARAM_TYPES, output_shapes, param_shapes, split_dim
from qcnn_lite.paper.constants import RELEASED_ALEXNET

__all__ = ["quantized_layer", "quantized_network", "model_files"]


# --------------------------------------------------------------------------- synthetic quantized networks
def quantized_layer(L: dict, in_shape: tuple[int, ...], settings: dict[str, tuple[int, int]],
                    rng: np.random.Generator) -> QConv2d | QLinear:
    """A QConv2d/QLinear for spec entry L with random codebooks and codes.

    C's is capped at the channels per group (AlexNet's conv1: one 3-D sub-space).
    """
    d, K = settings.get(L["name"], settings[L["type"]])
    if L["type"] == "conv":
        d = min(d, split_dim(L, in_shape))
    try:
        shapes = param_shapes(L, in_shape, d, K)
    except ValueError:
        what = "input channels" if L["type"] == "conv" else "inputs"
        raise ValueError(f"layer {L['name']}: C's={d} does not divide its {split_dim(L, in_shape)} {what}") from None
    books = rng.standard_normal(shapes["codebooks"], dtype=np.float32) * 0.1
    codes = rng.integers(0, K, shapes["codes"])
    bias = np.zeros(L["out"], np.float32)
    if L["type"] == "conv":
        return QConv2d(books, codes, bias, L.get("stride", 1), L.get("padding", 0), L.get("groups", 1))
    return QLinear(books, codes, bias)


def quantized_network(name: str, settings: dict[str, tuple[int, int]] = RELEASED_ALEXNET, seed: int = 0) -> Network:
    """A full-size network whose conv/fc layers are all quantized, with random codebooks and codes."""
    input_shape, spec = models.spec(name)
    shapes = [input_shape] + output_shapes(spec, input_shape)
    rng = np.random.default_rng(seed)
    params = {L["name"]: quantized_layer(L, shapes[i], settings, rng) for i, L in enumerate(spec) if L["type"] in PARAM_TYPES}
    return Network(name, input_shape, spec, params, {"weights": f"synthetic quantized, seed {seed}", "settings": {k: list(v) for k, v in settings.items()}})


def model_files(network: str, folder: Path, seed: int = 0,
                settings: dict[str, tuple[int, int]] = RELEASED_ALEXNET) -> dict[str, Path]:
    """Dense (``cnn``) and quantized (``qcnn``) model files of a full-size network with random weights."""
    from qcnn_lite.io import modelfile

    dense = models.synthetic(network, seed)
    paths = {"cnn": modelfile.save(dense, folder / f"{network}-cnn.qcnn")}
    del dense
    paths["qcnn"] = modelfile.save(quantized_network(network, settings, seed), folder / f"{network}-qcnn.qcnn")
    return paths
