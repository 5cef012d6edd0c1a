"""qcnn-lite: Quantized CNN (Wu et al. 2016) in numpy, with look-up-table kernels.

The subpackages are the layers of the package, and imports only go down:

* ``kernels``   -- the look-up-table and dense kernels, their validation and CPU dispatch;
* ``nn``        -- network specs, layers (dense and quantized), the engine, the accuracy loop;
* ``paper``     -- the paper's settings and numbers, and its cost model;
* ``io``        -- the model file, datasets, photos, paths, the results cache;
* ``reference`` -- torch: the reference networks, their training, the bridge to numpy;
* ``quant``     -- product quantization, error correction, the quantizer, the settings search;
* ``bench``     -- timing, memory, the baselines and the phone benchmark;
* ``repro``     -- the paper's tables and figures, rebuilt;
* ``apps``      -- the webcam demo and the explorer (notebook widgets);
* ``cli``       -- ``python -m qcnn_lite``.

Everything up to ``quant`` runs on numpy alone.
"""
import importlib

from qcnn_lite.io.modelfile import ModelFormatError, load, save
from qcnn_lite.nn.engine import Network
from qcnn_lite.nn.layers import Conv2d, Linear, QConv2d, QLinear
from qcnn_lite.quant.pq import ProductQuantizer
from qcnn_lite.quant.quantize import quantize_conv2d, quantize_linear, quantize_network

__version__ = "0.1.0"

__all__ = [
    "ProductQuantizer", "QLinear", "QConv2d", "Linear", "Conv2d", "Network", "quantize_network", "quantize_linear",
    "quantize_conv2d", "save", "load", "ModelFormatError", "__version__",
]

SUBPACKAGES = ("kernels", "nn", "paper", "io", "reference", "quant", "bench", "repro", "apps", "cli")


def __getattr__(name: str):
    """``qcnn_lite.nn`` and the other subpackages on first use, so ``import qcnn_lite as q; q.nn.models`` works."""
    if name in SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
