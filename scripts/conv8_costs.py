"""Measure the conv table costs behind QConv2d.uses_tables: per layer of the full-size and
mini networks, thread CPU time of int8 tables, float tables and the decoded weight (one image, one
thread), beside the layer's operation counts. Prints one row per layer and the fitted cost per
table multiply-add (build) and per table addition, in units of a decoded-weight multiply-add.
Usage: python scripts/conv8_costs.py [networks]
"""
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from qcnn_lite.nn import models
from qcnn_lite.bench.synthetic import quantized_layer
from qcnn_lite.paper.constants import MINI_SETTINGS, RELEASED_ALEXNET


def t(f, r=21):
    f()
    ts = []
    for _ in range(r):
        a = time.thread_time()
        f()
        ts.append(time.thread_time() - a)
    return float(np.median(ts)) * 1e3


names = sys.argv[1].split(",") if len(sys.argv) > 1 else ["alexnet", "mini-alexnet", "mini-cnns", "mini-vgg16"]
rows = []
with threadpool_limits(1):
    for name in names:
        net = models.synthetic(name, 0)
        dims = net.input_dims()
        st = RELEASED_ALEXNET if name in ("alexnet", "cnns") else MINI_SETTINGS[name][0]
        rng = np.random.default_rng(0)
        for _, L in net.param_layers():
            if L["type"] != "conv":
                continue
            shp = dims[L["name"]]
            q = quantized_layer(L, shp, st, rng)
            x = rng.standard_normal((1,) + tuple(shp), dtype=np.float32)
            H, W = shp[1:]
            Ct, kh, kw, M = q.codes.shape
            K, d = q.n_codewords, q.sub_dim
            OH = (H + 2 * q.padding - kh) // q.stride + 1
            OW = (W + 2 * q.padding - kw) // q.stride + 1
            dense = Ct * kh * kw * M * d * OH * OW
            build, adds = q.table_work(H, W)  # what the kernels really compute: padded phase planes
            times = {}
            for dt in ("int8", "float32"):
                q.table_dtype = dt
                q.uses_tables = lambda h, w: True
                times[dt] = t(lambda: q(x))
            q.uses_tables = lambda h, w: False
            times["decoded"] = t(lambda: q(x))
            rows.append((name, L["name"], dense, build, adds, times))
            print(f"{name:13s} {L['name']:8s} {'x'.join(map(str, shp)):10s} dense {dense / 1e6:7.2f}M build {build / 1e6:6.2f}M "
                  f"adds {adds / 1e6:6.2f}M | int8 {times['int8']:.3f} ms  float {times['float32']:.3f}  decoded "
                  f"{times['decoded']:.3f}  -> int8/decoded {times['decoded'] / times['int8']:.2f}x", flush=True)
# least squares on relative errors (rows weighted by 1/t: small and large layers count alike):
# t = a*build + b*adds + c per table precision, t = e*dense + f for the decoded weight
def fit(X, y):
    return np.linalg.lstsq(X / y[:, None], np.ones_like(y), rcond=None)[0]


D = np.array([[r[2], 1.0] for r in rows])
e, f = fit(D, np.array([r[5]["decoded"] for r in rows]))
print(f"decoded weight: {e * 1e9:.1f} ps per multiply-add + {f * 1e3:.1f} us per call")
A = np.array([[r[3], r[4], 1.0] for r in rows])
for dt in ("int8", "float32"):
    a, b, c = fit(A, np.array([r[5][dt] for r in rows]))
    print(f"{dt} tables: {a * 1e9:.1f} ps per build multiply-add ({a / e:.2f} decoded multiply-adds), {b * 1e9:.1f} ps "
          f"per addition ({b / e:.2f}), {c * 1e3:.1f} us per call ({(c - f) / e / 1e6:+.2f} M decoded multiply-adds)")
