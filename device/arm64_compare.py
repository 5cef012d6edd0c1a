"""Compare compiled kernels with the numpy kernels on small layers; run by arm64-check.sh inside the arm64 root.

    python3 arm64_compare.py KERNELS.so BUILDINFO.json    (with the sources on PYTHONPATH)

Prints one JSON line: machine, ELF machine of the .so, numpy, build info, and the
worst relative error over conv (uint8 and uint16 codes, groups, stride, padding)
and fc layers.
"""
import importlib.util
import json
import platform
import struct
import sys

import numpy as np

so, buildinfo = sys.argv[1], sys.argv[2]
with open(so, "rb") as f:
    head = f.read(20)
elf_machine = {183: "AArch64", 62: "x86-64", 40: "ARM"}.get(struct.unpack_from("<H", head, 18)[0], "other")

# The extension as qcnn_lite.kernels._pythran, before qcnn_lite.kernels looks for it.
spec = importlib.util.spec_from_file_location("qcnn_lite.kernels._pythran", so)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
sys.modules["qcnn_lite.kernels._pythran"] = mod
from qcnn_lite import kernels  # noqa: E402
from qcnn_lite.kernels import _compiled, _numpy  # noqa: E402

rng = np.random.default_rng(0)
cases = []
# (C, H, Ct, k, stride, pad, groups, C's, K): AlexNet conv2-like, conv1-like, uint16 codes
for C, H, Ct, k, s, p, g, d, K in [(96, 13, 8, 5, 1, 2, 2, 8, 128), (3, 23, 4, 11, 4, 0, 1, 3, 16),
                                   (8, 9, 3, 3, 2, 1, 1, 4, 512), (16, 7, 5, 3, 1, 1, 1, 8, 32)]:
    M = C // g // d
    x = rng.standard_normal((2, C, H, H), dtype=np.float32)
    books = rng.standard_normal((M, K, d), dtype=np.float32)
    codes = rng.integers(0, K, (Ct, k, k, M)).astype(np.uint8 if K <= 256 else np.uint16)
    b = rng.standard_normal(Ct, dtype=np.float32)
    want = _numpy.conv2d_lut(x, books, codes, b, s, p, g)
    got = _compiled.conv2d_lut(x, books, codes, b, s, p, g)
    cases.append({"layer": f"conv C={C} H={H} Ct={Ct} k={k} s={s} p={p} g={g} C's={d} K={K}",
                  "rel_error": float(np.abs(got - want).max() / np.abs(want).max())})
for n_in, n_out, d, K in [(256, 37, 4, 32), (4096, 100, 4, 32), (64, 10, 1, 16)]:
    x = rng.standard_normal((2, n_in), dtype=np.float32)
    books = rng.standard_normal((n_in // d, K, d), dtype=np.float32)
    codes = rng.integers(0, K, (n_out, n_in // d)).astype(np.uint8)
    b = rng.standard_normal(n_out, dtype=np.float32)
    want = _numpy.linear_lut(x, books, codes, b)
    got = _compiled.linear_lut(x, books, codes, b)
    cases.append({"layer": f"fc {n_in}->{n_out} C's={d} K={K}",
                  "rel_error": float(np.abs(got - want).max() / np.abs(want).max())})
with open(buildinfo) as f:
    build = json.load(f)
print(json.dumps({"machine": platform.machine(), "elf_machine": elf_machine, "python": platform.python_version(),
                  "numpy": np.__version__, "backend": kernels.backend(), "build": build, "cases": cases,
                  "max_rel_error": max(c["rel_error"] for c in cases)}))
