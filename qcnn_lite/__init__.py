"""qcnn-lite: Quantized CNN (Wu et al. 2016) in numpy, with look-up-table kernels.

Data flows one way: data -> reference model -> quantizer -> model file ->
engine -> results. Everything here runs on numpy alone.
"""
from .engine import Network
from .layers import Conv2d, Linear, QConv2d, QLinear
from .modelfile import ModelFormatError, load, save
from .pq import ProductQuantizer
from .quantize import quantize_network

__version__ = "0.1.0"

__all__ = [
    "ProductQuantizer", "QLinear", "QConv2d", "Linear", "Conv2d", "Network", "quantize_network",
    "save", "load", "ModelFormatError", "__version__",
]
