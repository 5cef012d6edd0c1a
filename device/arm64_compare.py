"""Compare compiled kernels with the numpy kernels on small layers; run by arm64-check.sh inside the arm64 root.

    python3 arm64_compare.py BUILDINFO.json KERNELS_<target>.so [...]    (with the sources on PYTHONPATH)

Every .so is one CPU target of the build (``_pythran_baseline``, ``_pythran_dotprod``). Each is
loaded and run directly, whatever the dispatch would pick: under qemu-user /proc/cpuinfo is
the host's, so the dispatch sees no aarch64 feature and would only run baseline, while
qemu's default CPU (max) executes the dot-product instructions.

Prints one JSON line: machine, ELF machine of the .so files, numpy, build info, the worst
relative error per target over conv (uint8 and uint16 codes, groups, stride, padding) and fc
layers, the worst over all, and the target the dispatch picks here (with its reason).
"""
import importlib.util
import json
import os
import platform
import struct
import sys
from pathlib import Path

import numpy as np

buildinfo, sos = sys.argv[1], sys.argv[2:]
elf = {183: "AArch64", 62: "x86-64", 40: "ARM"}


def elf_machine(path):
    with open(path, "rb") as f:
        head = f.read(20)
    return elf.get(struct.unpack_from("<H", head, 18)[0], "other")


def target_of(path):
    return Path(path).name.split(".", 1)[0].removeprefix("_pythran_")


# The dispatch imports the baseline build (runnable everywhere); each target is then swapped in.
os.environ["QCNN_LITE_KERNELS_SO"] = next(so for so in sos if target_of(so) == "baseline")
from qcnn_lite import kernels  # noqa: E402
from qcnn_lite.kernels import _compiled, _numpy  # noqa: E402


def load(path):
    spec = importlib.util.spec_from_file_location(f"qcnn_lite.kernels._pythran_{target_of(path)}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def compare(seed=0):
    rng = np.random.default_rng(seed)
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
    return cases


per_target = {}
all_cases = {}
for so in sos:
    _compiled.use(load(so))
    all_cases[target_of(so)] = compare()
    per_target[target_of(so)] = max(c["rel_error"] for c in all_cases[target_of(so)])
with open(buildinfo) as f:
    build = json.load(f)
d = kernels.describe()
print(json.dumps({"machine": platform.machine(), "elf_machine": ",".join(sorted({elf_machine(so) for so in sos})),
                  "python": platform.python_version(), "numpy": np.__version__, "backend": kernels.backend(),
                  "build": build, "targets": per_target, "cases": all_cases,
                  "dispatch": {"target": d["target"], "reason": d["reason"], "cpu": d["cpu"]},
                  "max_rel_error": max(per_target.values())}))
