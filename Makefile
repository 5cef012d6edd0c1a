# qcnn-lite: `make reproduce` and `make test` are all a fresh machine needs; both set themselves up.
SHELL   := /bin/bash
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PY      := $(BIN)/python
STAMP   := $(VENV)/.setup-done
# meson-python's editable install rebuilds on import and needs meson/ninja on PATH
export PATH := $(abspath $(BIN)):$(PATH)
PYTEST  := $(PY) -m pytest -p no:cacheprovider
# The kernels' compiler: clang++ when found (it compiled the kernel loops 1.5-2.7x faster than g++).
# meson reads $$CXX only when it sets a build up: `make clean setup` after changing it. CI keeps a g++
# build: test-asan (and tests/test_build.py) build with g++.
# Looked up when the recipe runs, after system-deps has installed clang on a fresh machine.
KERNELS_CXX ?= $$(command -v clang++ >/dev/null 2>&1 && echo clang++ || echo c++)

.PHONY: help setup system-deps data test test-notebooks test-asan bench bench-layers models reproduce lab device-check-arm64 clean

help:
	@echo "make reproduce  - set up, then rebuild the paper's tables into results/ and print them"
	@echo "make test       - set up, then run the whole test suite (as CI does)"
	@echo "make lab        - open JupyterLab on the notebooks"
	@echo "make setup      - create $(VENV)/ and install qcnn-lite with every extra"
	@echo "make data       - get Fashion-MNIST if it is missing"
	@echo "make models     - retrain the three Fashion-MNIST reference networks"
	@echo "make device-check-arm64 - build, install and test the package for aarch64 under qemu (root; slow: 16+ min first time)"

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt meson.build meson.options | system-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# build requirements first: the editable install builds without isolation (as SciPy's dev docs do)
	$(PY) -m pip install -q -c constraints.txt "torch==2.13.0" meson-python meson ninja numpy pythran
	CXX="$(KERNELS_CXX)" $(PY) -m pip install -q -c constraints.txt --no-build-isolation -e ".[torch,notebooks,dev,bench]"
	@touch $@

system-deps:
	@scripts/system-deps.sh

data: setup system-deps
	$(PY) -m qcnn_lite data fetch

reproduce: setup data
	$(PY) -m qcnn_lite reproduce

test: setup system-deps data
	$(PYTEST) tests
	QCNN_LITE_BACKEND=numpy $(PYTEST) -q tests/test_layers.py tests/test_engine.py tests/test_quantize.py tests/test_kernels.py
	QCNN_LITE_TARGET=baseline $(PYTEST) -q tests/test_kernels.py tests/test_dispatch.py tests/test_shuffle.py tests/test_conv8.py
	$(MAKE) test-asan
	$(MAKE) test-notebooks

# The compiled kernels under AddressSanitizer (about a minute): every kernel test, clean (Pythran, byte-shuffle, integer conv).
# Built with g++ (the CI's g++ build; setup uses clang++ when found), baseline target only: one _pythran_*.so.
test-asan: setup
	rm -rf build/asan
	CXX=g++ $(BIN)/meson setup build/asan -Db_sanitize=address -Dbuildtype=debugoptimized -Dpythran=enabled \
	  -Dkernel_targets=baseline >/dev/null
	$(BIN)/ninja -C build/asan >/dev/null
	QCNN_LITE_KERNELS_SO=$$(ls build/asan/qcnn_lite/kernels/_pythran_baseline*.so) \
	LD_PRELOAD=$$(g++ -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \
	$(PYTEST) -q tests/test_kernels.py tests/test_dispatch.py tests/test_conv8.py
	QCNN_LITE_SIMD_SO=$$(ls build/asan/qcnn_lite/kernels/simd/_lut_simd*.so) \
	LD_PRELOAD=$$(g++ -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \
	$(PYTEST) -q tests/test_shuffle.py tests/test_conv8.py

bench-layers: setup
	$(PY) -m qcnn_lite bench-layers --clock cpu

bench: setup
	$(PY) -m qcnn_lite bench --clock cpu

test-notebooks: setup
	QCNN_FAST=1 QCNN_PROGRESS=0 $(PYTEST) --nbval-lax --nbval-current-env notebooks/

# Retrain the committed reference networks (about 9 CPU-minutes each; add --force to replace them)
models: setup data
	$(PY) -m qcnn_lite train --arch mini-alexnet --out data/models
	$(PY) -m qcnn_lite classify --quantize data/models/mini-alexnet.qcnn --force
	$(PY) -m qcnn_lite train --arch mini-cnns --out data/models
	$(PY) -m qcnn_lite train --arch mini-vgg16 --out data/models

# Manual target, not in `make test`: debootstrap + an emulated clang build are too slow for CI.
device-check-arm64:
	bash device/arm64-check.sh --force

lab: setup data
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf build/ .pytest_cache/
