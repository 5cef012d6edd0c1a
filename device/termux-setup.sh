#!/usr/bin/env bash
# Set up qcnn-lite inside Termux on an Android phone (see device/README.md).
#
#   bash device/termux-setup.sh            # from the repository checkout
#   bash device/termux-setup.sh --no-pkg   # skip `pkg install` (packages already there)
#   bash device/termux-setup.sh --force    # run outside Termux anyway (you know what you do)
#
# Safe to re-run: pkg and pip skip what is already installed; qcnn-lite is
# rebuilt and reinstalled from this checkout.
#
# numpy comes from Termux's own package (pip cannot build it on a phone);
# meson, meson-python and pythran come from pip. `pkg` and `python` are looked
# up on PATH (override with PKG=... PYTHON=...), so the script can be tested
# with stubs that only log their arguments.
set -eu

usage() {
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
}

force=0
do_pkg=1
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        --no-pkg) do_pkg=0 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "termux-setup: unknown option '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

PKG=${PKG:-pkg}
PYTHON=${PYTHON:-python}
# Termux packages: the interpreter, numpy (with OpenBLAS), the C++ compiler and the build tools.
PKG_PACKAGES="python python-pip python-numpy clang ninja patchelf binutils git"
# From PyPI (pure Python wheels); pythran is pinned like pyproject.toml's build requirements.
PIP_PACKAGES="meson>=1.2 meson-python>=0.15 pythran==0.18.*"

step() {
    printf '\n==> %s\n' "$*"
}

is_termux() {
    case "${PREFIX:-}" in
        *com.termux*) return 0 ;;
    esac
    [ -n "${TERMUX_VERSION:-}" ]
}

if is_termux; then
    echo "termux-setup: Termux detected (PREFIX=${PREFIX:-unset}, TERMUX_VERSION=${TERMUX_VERSION:-unset})"
elif [ "$force" -eq 1 ]; then
    echo "termux-setup: not Termux (PREFIX=${PREFIX:-unset}); going on because of --force" >&2
else
    cat >&2 <<EOF
termux-setup: this does not look like Termux (PREFIX=${PREFIX:-unset}, TERMUX_VERSION unset).
This script installs packages with Termux's 'pkg' and is meant for an Android phone.
On a desktop use 'make setup' instead; pass --force to run it here anyway.
EOF
    exit 1
fi

# The repository root: the parent of this script's folder.
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
if [ ! -f "$repo/pyproject.toml" ] || [ ! -f "$repo/meson.build" ]; then
    echo "termux-setup: $repo is not a qcnn-lite checkout (no pyproject.toml/meson.build)" >&2
    exit 1
fi

if [ "$do_pkg" -eq 1 ]; then
    step "1/4 Termux packages: $PKG_PACKAGES"
    "$PKG" update -y
    # shellcheck disable=SC2086  # word splitting of the package list is intended
    "$PKG" install -y $PKG_PACKAGES
else
    step "1/4 Termux packages: skipped (--no-pkg)"
fi

step "2/4 build tools from PyPI: $PIP_PACKAGES"
# shellcheck disable=SC2086
"$PYTHON" -m pip install $PIP_PACKAGES

step "3/4 qcnn-lite from $repo (kernels compiled with clang++, no BLAS)"
# No build isolation: build with Termux's numpy and the tools above instead of
# letting pip fetch (and try to compile) its own numpy.
CXX=${CXX:-clang++} "$PYTHON" -m pip install --no-build-isolation "$repo"

step "4/4 which kernels were built"
# Run outside the checkout, so Python imports the installed package, not the sources.
(cd "${TMPDIR:-/tmp}" && "$PYTHON" -m qcnn_lite info)
backend=$(cd "${TMPDIR:-/tmp}" && "$PYTHON" -c 'from qcnn_lite import kernels; print(kernels.backend())')
echo
echo "termux-setup: done; kernel backend in use: $backend"
if [ "$backend" != "pythran" ]; then
    echo "termux-setup: warning: the compiled kernels are missing, Q-CNN will run on numpy only" >&2
    echo "termux-setup: check that clang and pythran are installed and re-run this script" >&2
fi
echo "Next: bash device/run-benchmark.sh   (see device/README.md)"
