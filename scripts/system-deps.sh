#!/usr/bin/env bash
# Install the Debian packages the tests and notebooks use, when we can (root + apt-get).
# Without them the suite still runs: the tests that need them skip with a reason
# (except tests/test_neon_qemu.py under CI=true, which fails without the aarch64 tools).
# g++-aarch64-linux-gnu + qemu-user-static: the NEON kernels cross-built and run under qemu-user.
set -eu

want=(clang shellcheck chromium dataset-fashion-mnist g++-aarch64-linux-gnu qemu-user-static)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "system-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || true
  for p in "${missing[@]}"; do
    apt-get install -y -qq --no-install-recommends "$p" >/dev/null || echo "system-deps: could not install $p (tests that need it will skip)"
  done
else
  echo "system-deps: missing Debian packages: ${missing[*]}"
  echo "  install them with: sudo apt-get install ${missing[*]}"
  echo "  (the tests that need them will skip)"
fi
