"""Networks and layers: the spec, the reference architectures, dense and quantized layers, the engine.

Layers only run; :mod:`qcnn_lite.quant` builds the quantized ones.
"""
