"""The meson build: the kernels compile with g++ and clang++, and the package still configures without them.

Each build goes into a temporary directory; the installed package is not touched.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MESON = shutil.which("meson", path=str(BIN)) or shutil.which("meson")
needs_meson = pytest.mark.skipif(MESON is None or shutil.which("pythran", path=str(BIN)) is None,
                                 reason="meson and pythran are needed to build the kernels")

# Runs one kernels .so (QCNN_LITE_KERNELS_SO: kernels._targets loads it) against numpy on small layers.
CHECK = r"""
import os, sys
os.environ["QCNN_LITE_KERNELS_SO"] = sys.argv[1]
import numpy as np
from qcnn_lite.kernels import _compiled, _numpy, _targets
assert os.path.samefile(_compiled._pythran.__file__, sys.argv[1]), _compiled._pythran.__file__
rng = np.random.default_rng(0)
worst = 0.0
for C, H, Ct, k, s, p, g, d, K in [(96, 13, 8, 5, 1, 2, 2, 8, 128), (3, 23, 4, 11, 4, 0, 1, 3, 16), (8, 9, 3, 3, 2, 1, 1, 4, 512)]:
    M = C // g // d
    x = rng.standard_normal((2, C, H, H), dtype=np.float32)
    books = rng.standard_normal((M, K, d), dtype=np.float32)
    codes = rng.integers(0, K, (Ct, k, k, M)).astype(np.uint8 if K <= 256 else np.uint16)
    b = rng.standard_normal(Ct, dtype=np.float32)
    want = _numpy.conv2d_lut(x, books, codes, b, s, p, g)
    got = _compiled.conv2d_lut(x, books, codes, b, s, p, g)
    worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
x = rng.standard_normal((2, 256), dtype=np.float32)
books = rng.standard_normal((64, 32, 4), dtype=np.float32)
codes = rng.integers(0, 32, (37, 64)).astype(np.uint8)
b = rng.standard_normal(37, dtype=np.float32)
want = _numpy.linear_lut(x, books, codes, b)
worst = max(worst, float(np.abs(_compiled.linear_lut(x, books, codes, b) - want).max() / np.abs(want).max()))
print(worst)
"""


def _meson(build: Path, *options: str, env: dict | None = None, compile: bool = True) -> Path:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
    run = lambda *cmd: subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    r = run(MESON, "setup", str(build), *options)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    if compile:
        r = run(MESON, "compile", "-C", str(build))
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return build / "qcnn_lite" / "kernels"


def _agreement(so: Path, env: dict | None = None) -> float:
    r = subprocess.run([sys.executable, "-c", CHECK, str(so)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, **(env or {})})
    assert r.returncode == 0, r.stderr[-3000:]
    return float(r.stdout.strip().splitlines()[-1])


@needs_meson
@pytest.mark.slow
@pytest.mark.parametrize("cxx", ["g++", "clang++"])
def test_kernels_build_with_compiler(cxx, tmp_path):
    if shutil.which(cxx) is None:
        pytest.skip(f"{cxx} is not installed")
    out = _meson(tmp_path / "build", "-Dpythran=enabled", env={"CXX": cxx})
    info = json.loads((out / "_buildinfo.json").read_text())
    assert info["pythran_kernels"] == "built"
    assert ("clang" if cxx == "clang++" else "gcc") in info["cxx_version"]
    assert "-DPYTHRAN_BLAS_NONE" in info["cpp_args"] and "-march=native" not in info["cpp_args"]
    want = {"x86_64": ["baseline", "v3", "v4"], "aarch64": ["baseline", "dotprod"]}.get(os.uname().machine, ["baseline"])
    assert info["kernel_targets"] == want  # every target of the host architecture by default
    sos = {so.name.split(".")[0]: so for so in out.glob("_pythran_*.so")}
    assert sorted(sos) == sorted(f"_pythran_{t}" for t in want)
    from qcnn_lite.kernels import cpu as _cpu

    here = _cpu.detect()
    for t in want:  # each target this CPU runs, against numpy
        if _cpu.runnable(t, here):
            assert _agreement(sos[f"_pythran_{t}"]) < 1e-5, t


@needs_meson
def test_kernel_targets_option(tmp_path):
    """-Dkernel_targets=baseline (CI, ASan, device builds) configures one target; a foreign target is an error."""
    out = _meson(tmp_path / "build", "-Dpythran=enabled", "-Dkernel_targets=baseline", compile=False)
    info = json.loads((out / "_buildinfo.json").read_text())
    assert info["kernel_targets"] == ["baseline"] and info["kernel_target_flags"] == {"baseline": ""}
    foreign = "dotprod" if os.uname().machine == "x86_64" else "v4"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    r = subprocess.run([MESON, "setup", str(tmp_path / "b2"), "-Dpythran=enabled", f"-Dkernel_targets={foreign}"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and f"-Dkernel_targets={foreign}" in r.stdout + r.stderr


@needs_meson
@pytest.mark.slow
def test_native_openmp_build(tmp_path):
    """The opt-in options: -march=native and OpenMP threads; results unchanged with two threads."""
    out = _meson(tmp_path / "build", "-Dpythran=enabled", "-Dnative=true", "-Dopenmp=true")
    info = json.loads((out / "_buildinfo.json").read_text())
    assert info["native"] == "true" and info["openmp"] == "true" and "-march=native" in info["cpp_args"]
    assert info["kernel_targets"] == ["native"]  # one build, for this machine
    (so,) = out.glob("_pythran*.so")
    assert so.name.startswith("_pythran_native.")
    assert _agreement(so, {"OMP_NUM_THREADS": "2"}) < 1e-5


@needs_meson
def test_configures_without_compiler(tmp_path):
    """No C++ compiler: -Dpythran=auto still configures; the package is pure Python (numpy kernels)."""
    out = _meson(tmp_path / "build", "-Dpythran=auto", env={"CXX": str(tmp_path / "no-such-compiler")})
    assert not list(out.glob("_pythran*"))
    info = json.loads((out / "_buildinfo.json").read_text())
    assert info["pythran_kernels"].startswith("not built")


@needs_meson
def test_pythran_disabled(tmp_path):
    out = _meson(tmp_path / "build", "-Dpythran=disabled")
    assert not list(out.glob("_pythran*"))
    assert json.loads((out / "_buildinfo.json").read_text())["pythran_kernels"] == "not built (-Dpythran=disabled)"


@needs_meson
def test_enabled_without_compiler_fails_loudly(tmp_path):
    """-Dpythran=enabled is a promise: without a compiler the configure step must fail, not fall back."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "CXX": str(tmp_path / "nope")}
    r = subprocess.run([MESON, "setup", str(tmp_path / "b"), "-Dpythran=enabled"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
