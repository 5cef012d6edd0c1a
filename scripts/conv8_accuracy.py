"""Top-1 of the mini networks with every conv layer on look-up tables, per table precision.

Quantizes each reference network at Table 1 setting 1 (error correction, as ``evaluate``), then
evaluates the full Fashion-MNIST test set with float, int16 and int8 conv tables (Cauchy-Schwarz
"bound" and "exact" scales). Prints a markdown table. Usage: python scripts/conv8_accuracy.py [n_test]
"""
import sys
import time

import numpy as np

from qcnn_lite.io import datasets as data, modelfile, paths
from qcnn_lite.nn import layers, table_policy
from qcnn_lite.nn.accuracy import evaluate_network
from qcnn_lite.paper.constants import MINI_SETTINGS
from qcnn_lite.quant.quantize import quantize_network

n_test = int(sys.argv[1]) if len(sys.argv) > 1 else None
settings = [int(s) for s in sys.argv[2].split(",")] if len(sys.argv) > 2 else [1]
train_x, _ = data.load_fashion_mnist("train")
test_x, test_y = data.load_fashion_mnist("test")
if n_test:
    test_x, test_y = test_x[:n_test], test_y[:n_test]
calib_idx = np.sort(np.random.default_rng(0).choice(len(train_x), 5000, replace=False))
layers.QConv2d.uses_tables = lambda self, h, w: True  # every conv layer on tables
VARIANTS = [("float32", "bound"), ("int16", "bound"), ("int8", "bound"), ("int8", "exact")]
print(f"| network | setting | {' | '.join(f'{d}-{m}' if d != 'float32' else 'float' for d, m in VARIANTS)} | "
      f"int8-bound change | int8-exact change |", flush=True)
print("|---|---|" + "---|" * (len(VARIANTS) + 2), flush=True)
for arch in MINI_SETTINGS:
    net = modelfile.load(paths.models_dir() / f"{arch}.qcnn")
    mean, std = data.normalisation(net.meta)
    xt = data.to_input(test_x, mean, std)
    calib = data.to_input(train_x[calib_idx], mean, std)
    for setting in settings:
        q = quantize_network(net, calib, MINI_SETTINGS[arch][setting - 1], error_correction=True, n_iter=4, seed=0)
        top1 = {}
        for dt, mode in VARIANTS:
            table_policy.CONV_SCALE_MODE = mode
            for _, L in q.param_layers():
                p = q.params[L["name"]]
                if isinstance(p, layers.QConv2d):
                    p.table_dtype = dt
            t0 = time.perf_counter()
            top1[(dt, mode)] = 100 - evaluate_network(q, xt, test_y)["top1_err"]
        f = top1[("float32", "bound")]
        cells = " | ".join(f"{top1[v]:.2f}" for v in VARIANTS)
        print(f"| {arch} | {setting} | {cells} | {top1[('int8', 'bound')] - f:+.2f} | {top1[('int8', 'exact')] - f:+.2f} |",
              flush=True)
