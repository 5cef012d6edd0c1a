#!/usr/bin/env bash
# aarch64 build check: compile the Pythran kernels with clang for arm64 (as Termux
# does on a phone) and compare them with the numpy kernels, then install the package
# as device/termux-setup.sh does and run its kernel tests and a quick benchmark, under qemu-user.
#
#   sudo bash device/arm64-check.sh            # or: make device-check-arm64
#   sudo bash device/arm64-check.sh --force    # replace an existing record
#
# Needs root, an x86_64 Debian/Ubuntu host and network access to the Debian
# mirror and PyPI. Steps:
#   1. apt-get install qemu-user-static binfmt-support debootstrap (if missing);
#      register qemu-aarch64 with binfmt_misc (mounted if needed);
#   2. debootstrap an arm64 Debian root (once; re-used later) with python3,
#      python3-numpy, clang and ninja; pip installs meson, meson-python, pythran;
#   3. copy the committed sources (git archive HEAD) into the root and build the
#      kernels there with CXX=clang++ -Dpythran=enabled (no BLAS, like the phone):
#      the default -Dkernel_targets, i.e. baseline and dotprod (armv8.2-a+dotprod);
#   4. run each target's compiled kernels against the numpy kernels on small conv/fc layers;
#   5. pip install the package as device/termux-setup.sh does (meson-python, no build
#      isolation, CXX=clang++: the Pythran kernels and the simd extension, NEON);
#   6. run tests/test_shuffle.py and tests/test_conv8.py against that installed package;
#   7. the Termux benchmark in quick mode (device/run-benchmark.sh --quick): emulated
#      timings, kept only as a record that it runs (qemu timings are not phone timings).
# The outcome (pass/fail/error, with the reason and timings) goes to
# device/results/arm64-check.json (or $OUT). Slow under emulation: a manual
# target, not part of `make test`.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
ROOT_DIR=${QCNN_ARM64_ROOT:-/var/tmp/qcnn-lite-arm64/root}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=${DEBIAN_SUITE:-bookworm}
OUT=${OUT:-$repo/device/results/arm64-check.json}
LOG=${LOG:-$(dirname "$ROOT_DIR")/arm64-check.log}
force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "arm64-check: unknown option '$arg'" >&2; exit 2 ;;
    esac
done
if [ -e "$OUT" ] && [ "$force" -eq 0 ]; then
    echo "arm64-check: $OUT exists; pass --force to replace it" >&2
    exit 1
fi

mkdir -p "$(dirname "$ROOT_DIR")"
: > "$LOG"
t_start=$(date +%s)
stage="start"
mounted=()

step() {
    stage=$1
    printf '\n==> %s  (%s s)\n' "$1" "$(( $(date +%s) - t_start ))" | tee -a "$LOG"
}

record() {  # record STATUS REASON [EXTRA_JSON_OBJECT]
    status=$1 reason=$2 extra=${3:-"{}"}
    python3 - "$OUT" "$status" "$reason" "$extra" "$stage" "$(( $(date +%s) - t_start ))" "$SUITE" "$MIRROR" \
        "$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)" <<'EOF'
import json, platform, subprocess, sys, time
out, status, reason, extra, stage, secs, suite, mirror, commit = sys.argv[1:]
def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.splitlines()[0].strip()
    except Exception:
        return None
rec = {
    "check": "aarch64 build of the kernels with clang under qemu-user: Pythran kernels vs numpy; the installed package's kernel tests; a quick benchmark run",
    "status": status, "reason": reason, "stage": stage, "wall_s": int(secs),
    "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": commit,
    "host": {"machine": platform.machine(), "kernel": platform.release(),
             "qemu": version(["qemu-aarch64-static", "--version"])},
    "guest": {"debian": suite, "mirror": mirror},
    "tolerance": 1e-5,
}
rec.update(json.loads(extra))
with open(out, "w") as f:
    f.write(json.dumps(rec, indent=2) + "\n")
print(json.dumps(rec, indent=2))
EOF
}

cleanup() {
    rc=$?
    for ((i=${#mounted[@]}-1; i>=0; i--)); do
        umount "${mounted[$i]}" 2>/dev/null || umount -l "${mounted[$i]}" 2>/dev/null || true
    done
    if [ "$rc" -ne 0 ] && [ ! -e "$OUT.done" ]; then
        record error "failed at stage '$stage' (exit $rc); last lines of the log: $(tail -n 5 "$LOG" | tr '\n' ' ' | cut -c1-600)" || true
    fi
    rm -f "$OUT.done"
    exit "$rc"
}
trap cleanup EXIT

step "host checks"
if [ "$(id -u)" -ne 0 ]; then
    echo "arm64-check: needs root (debootstrap, chroot, binfmt_misc)" >&2
    exit 1
fi
if [ "$(uname -m)" = aarch64 ]; then
    echo "arm64-check: this host is aarch64 already; build natively with 'make setup' instead" >&2
    exit 1
fi

step "1/7 qemu-user-static, binfmt-support, debootstrap"
need=()
command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
command -v update-binfmts >/dev/null 2>&1 || need+=(binfmt-support)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
    apt-get install -y "${need[@]}" >>"$LOG" 2>&1
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc >>"$LOG" 2>&1 || {
        record error "cannot mount binfmt_misc (a container without that privilege?): arm64 binaries cannot run here"
        touch "$OUT.done"; exit 1; }
fi
update-binfmts --enable qemu-aarch64 >>"$LOG" 2>&1 || true
if ! grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null; then
    record error "qemu-aarch64 is not registered with binfmt_misc (update-binfmts --enable qemu-aarch64 failed)"
    touch "$OUT.done"; exit 1
fi

step "2/7 arm64 Debian root in $ROOT_DIR"
if [ ! -e "$ROOT_DIR/.qcnn-bootstrap-done" ]; then
    t_boot=$(date +%s)
    debootstrap --arch=arm64 --variant=minbase \
        --include=python3,python3-dev,python3-numpy,python3-pip,python3-venv,clang,ninja-build,ca-certificates \
        "$SUITE" "$ROOT_DIR" "$MIRROR" >>"$LOG" 2>&1
    # the stamp holds how long debootstrap took, for the record
    echo "$(( $(date +%s) - t_boot ))" > "$ROOT_DIR/.qcnn-bootstrap-done"
else
    echo "re-using the existing root" | tee -a "$LOG"
fi
for m in proc dev; do
    if ! mountpoint -q "$ROOT_DIR/$m"; then
        if [ "$m" = proc ]; then mount -t proc proc "$ROOT_DIR/proc"; else mount --bind /dev "$ROOT_DIR/dev"; fi
        mounted+=("$ROOT_DIR/$m")
    fi
done
cp -L /etc/resolv.conf "$ROOT_DIR/etc/resolv.conf" 2>/dev/null || true
in_root() {
    chroot "$ROOT_DIR" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 "$@"
}
[ "$(in_root uname -m)" = aarch64 ] || { record error "the chroot does not run as aarch64"; touch "$OUT.done"; exit 1; }
# pip inside the root trusts what the host trusts (a host behind a TLS proxy has its CA there).
host_ca=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
pip_env=()
if [ -r "$host_ca" ]; then
    cp "$host_ca" "$ROOT_DIR/etc/ssl/certs/host-ca-bundle.crt"
    pip_env=(PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt)
fi
if [ ! -e "$ROOT_DIR/.qcnn-pip-done" ]; then
    in_root "${pip_env[@]+"${pip_env[@]}"}" python3 -m pip install --break-system-packages -q \
        "meson>=1.2" "meson-python>=0.15" "pythran==0.18.*" >>"$LOG" 2>&1
    touch "$ROOT_DIR/.qcnn-pip-done"
fi
if [ ! -e "$ROOT_DIR/.qcnn-pytest-done" ]; then  # a stamp of its own: roots made before step 6 existed
    in_root "${pip_env[@]+"${pip_env[@]}"}" python3 -m pip install --break-system-packages -q \
        "pytest==$(sed -n 's/^pytest==//p' "$repo/constraints.txt")" >>"$LOG" 2>&1
    touch "$ROOT_DIR/.qcnn-pytest-done"
fi

step "3/7 build the kernels with clang++ inside the arm64 root"
rm -rf "$ROOT_DIR/src/qcnn-lite" "$ROOT_DIR/build/arm64"
mkdir -p "$ROOT_DIR/src/qcnn-lite" "$ROOT_DIR/build"
git -C "$repo" archive HEAD | tar -x -C "$ROOT_DIR/src/qcnn-lite"
t_build=$(date +%s)
in_root sh -c 'cd /src/qcnn-lite && CXX=clang++ meson setup /build/arm64 -Dpythran=enabled' >>"$LOG" 2>&1
in_root sh -c 'cd /src/qcnn-lite && meson compile -C /build/arm64' >>"$LOG" 2>&1
build_s=$(( $(date +%s) - t_build ))
# one extension per CPU target: _pythran_baseline, _pythran_dotprod
sos=""
for f in "$ROOT_DIR"/build/arm64/qcnn_lite/kernels/_pythran_*.so; do
    [ -e "$f" ] && sos="$sos ${f#"$ROOT_DIR"}"
done
echo "built $sos in $build_s s" | tee -a "$LOG"

step "4/7 compiled kernels vs numpy kernels on small layers (aarch64)"
cp "$here/arm64_compare.py" "$ROOT_DIR/src/arm64_compare.py"
t_check=$(date +%s)
result=$(in_root sh -c "cd /src/qcnn-lite && PYTHONPATH=/src/qcnn-lite python3 /src/arm64_compare.py /build/arm64/qcnn_lite/kernels/_buildinfo.json $sos" 2>>"$LOG" | tail -n 1)
check_s=$(( $(date +%s) - t_check ))
echo "$result" | tee -a "$LOG"
boot_s=$(cat "$ROOT_DIR/.qcnn-bootstrap-done")
extra=$(python3 -c '
import json, sys
d = json.loads(sys.argv[1])
boot = sys.argv[4].strip()
d["timings_s"] = {"debootstrap_once": int(boot) if boot.isdigit() else None, "build": int(sys.argv[2]), "compare": int(sys.argv[3])}
print(json.dumps(d))' "$result" "$build_s" "$check_s" "$boot_s")
compare_ok=0
python3 -c 'import json, sys; d = json.loads(sys.argv[1]); sys.exit(0 if d["max_rel_error"] < 1e-5 and d["machine"] == "aarch64" and d["elf_machine"] == "AArch64" and sorted(d["targets"]) == ["baseline", "dotprod"] else 1)' "$result" || compare_ok=$?

step "5/7 install the package as device/termux-setup.sh does (pip, meson-python, clang++)"
# termux-setup.sh: pip install --no-build-isolation with CXX=clang++ (its step 3; the build tools of
# its step 2 are the ones installed in the root above). Debian's python3 also needs --break-system-packages.
t_install=$(date +%s)
in_root sh -c 'CXX=clang++ python3 -m pip install --break-system-packages --no-build-isolation /src/qcnn-lite' >>"$LOG" 2>&1
install_s=$(( $(date +%s) - t_install ))
# from /tmp: the installed package, not the sources; its kernel instruction sets, one JSON line
installed=$(in_root sh -c 'cd /tmp && python3 -c "
import json, qcnn_lite
from qcnn_lite import kernels
from qcnn_lite.kernels import _convq, _shuffle
print(json.dumps({\"path\": qcnn_lite.__file__, \"backend\": kernels.backend(), \"fc_isas\": _shuffle.available_isas(),
                  \"conv_isas\": _convq.conv_isas()}))"' 2>>"$LOG" | tail -n 1)
echo "$installed" | tee -a "$LOG"
in_root sh -c 'cd /tmp && python3 -m qcnn_lite info' >>"$LOG" 2>&1 || true

step "6/7 tests/test_shuffle.py and tests/test_conv8.py on the installed package (aarch64)"
# Run from /tmp so that qcnn_lite is the installed package. test_isas_match_the_cpu is left out:
# under qemu-user /proc/cpuinfo is the x86 host's, so it would look for AVX2 in an aarch64 build.
t_tests=$(date +%s)
tests_rc=0
in_root sh -c 'cd /tmp && python3 -m pytest -q -p no:cacheprovider --rootdir /src/qcnn-lite -c /src/qcnn-lite/pyproject.toml \
    --deselect tests/test_shuffle.py::test_isas_match_the_cpu \
    /src/qcnn-lite/tests/test_shuffle.py /src/qcnn-lite/tests/test_conv8.py' >"$ROOT_DIR/build/tests.log" 2>&1 || tests_rc=$?
cat "$ROOT_DIR/build/tests.log" >>"$LOG"
tests_summary=$(grep -E '(passed|failed|error)' "$ROOT_DIR/build/tests.log" | tail -n 1)
tests_s=$(( $(date +%s) - t_tests ))
echo "tests: exit $tests_rc: $tests_summary" | tee -a "$LOG"

step "7/7 the Termux benchmark, quick mode (emulated: not phone timings)"
t_bench=$(date +%s)
bench_rc=0
rm -rf "$ROOT_DIR/build/bench"
in_root sh -c 'cd /src/qcnn-lite && PYTHON=python3 bash device/run-benchmark.sh --quick --pin none --out-dir /build/bench \
    --kind other --name qemu-aarch64-emulated --notes "qemu-user on an x86-64 host: emulated, not phone timings"' \
    >>"$LOG" 2>&1 || bench_rc=$?
bench_file=""
for f in "$ROOT_DIR"/build/bench/*.json; do
    [ -e "$f" ] && bench_file=${f#"$ROOT_DIR"}
done
bench_s=$(( $(date +%s) - t_bench ))
echo "benchmark: exit $bench_rc ${bench_file:+($bench_file)}" | tee -a "$LOG"

extra=$(python3 -c '
import json, sys
d = json.loads(sys.argv[1])
inst = json.loads(sys.argv[2]) if sys.argv[2].strip().startswith("{") else {"error": sys.argv[2]}
d["installed_package"] = inst
d["package_tests"] = {"files": ["tests/test_shuffle.py", "tests/test_conv8.py"],
                      "deselected": ["tests/test_shuffle.py::test_isas_match_the_cpu (qemu-user shows the host cpuinfo)"],
                      "exit_code": int(sys.argv[3]), "summary": sys.argv[4]}
d["benchmark_quick"] = {"exit_code": int(sys.argv[5]), "result_file": sys.argv[6] or None,
                        "note": "emulated under qemu-user: the timings say nothing about a phone"}
d["timings_s"].update({"install": int(sys.argv[7]), "package_tests": int(sys.argv[8]), "benchmark_quick": int(sys.argv[9])})
print(json.dumps(d))' "$extra" "$installed" "$tests_rc" "$tests_summary" "$bench_rc" "$bench_file" "$install_s" "$tests_s" "$bench_s")
neon_ok=$(python3 -c 'import json, sys; d = json.loads(sys.argv[1]); print(int("neon" in d.get("fc_isas", [])))' "$installed" 2>/dev/null || echo 0)
if [ "$compare_ok" -ne 0 ]; then
    record fail "the aarch64 kernels disagree with numpy (or did not build for aarch64, or a target is missing)" "$extra"
elif [ "$neon_ok" != 1 ]; then
    record fail "the installed package has no NEON byte-shuffle kernels (simd extension not built?)" "$extra"
elif [ "$tests_rc" -ne 0 ]; then
    record fail "tests/test_shuffle.py or tests/test_conv8.py failed on the installed aarch64 package: $tests_summary" "$extra"
elif [ "$bench_rc" -ne 0 ]; then
    record fail "the quick benchmark (device/run-benchmark.sh --quick) failed on aarch64" "$extra"
else
    record pass "the clang-built aarch64 kernels (baseline and dotprod) match the numpy kernels; the installed package passes its kernel tests and runs the quick benchmark" "$extra"
fi
touch "$OUT.done"
echo "arm64-check: wrote $OUT (log: $LOG)"
