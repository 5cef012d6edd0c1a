#!/usr/bin/env bash
# Table 2 on this device: AlexNet and CNN-S, dense and Q-CNN, each in a fresh process.
#
#   bash device/run-benchmark.sh                 # full run (10 timed passes each)
#   bash device/run-benchmark.sh --quick         # 3 timed passes: a quick check
#   bash device/run-benchmark.sh --pin big       # pin to the fastest cores (default on Android)
#   bash device/run-benchmark.sh --pin none      # no pinning;  --pin 4-7  an explicit CPU list
#   bash device/run-benchmark.sh --name my-phone --notes "charger off, 24 C room"
#
# Other options go to `python -m qcnn_lite device run` (--help lists them).
# The result is written to device/results/<device>-<date>.json (never overwritten).
# On Termux it holds a wake lock while it runs and cools down 60 s between runs.
set -eu

PYTHON=${PYTHON:-python}
CPU_SYSFS=${CPU_SYSFS:-/sys/devices/system/cpu}
here=$(cd "$(dirname "$0")" && pwd)

is_termux() {
    case "${PREFIX:-}" in
        *com.termux*) return 0 ;;
    esac
    [ -n "${TERMUX_VERSION:-}" ]
}

# The CPUs whose cpuinfo_max_freq is the highest (the "big" or "prime" cores), as "4,5,6,7".
big_cores() {
    best=0
    for f in "$CPU_SYSFS"/cpu[0-9]*/cpufreq/cpuinfo_max_freq; do
        [ -r "$f" ] || continue
        v=$(cat "$f")
        if [ "$v" -gt "$best" ]; then best=$v; fi
    done
    [ "$best" -gt 0 ] || return 0
    list=""
    for f in "$CPU_SYSFS"/cpu[0-9]*/cpufreq/cpuinfo_max_freq; do
        [ -r "$f" ] || continue
        if [ "$(cat "$f")" -eq "$best" ]; then
            cpu=${f#"$CPU_SYSFS"/cpu}
            cpu=${cpu%%/*}
            list="${list:+$list,}$cpu"
        fi
    done
    echo "$list"
}

pin=""
out_dir="$here/results"
cooldown_given=0
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --pin) [ $# -ge 2 ] || { echo "run-benchmark: --pin needs big, none or a CPU list" >&2; exit 2; }
               pin=$2; shift 2 ;;
        --pin=*) pin=${1#--pin=}; shift ;;
        --big-cores) big_cores; exit 0 ;;
        --out-dir) [ $# -ge 2 ] || { echo "run-benchmark: --out-dir needs a folder" >&2; exit 2; }
                   out_dir=$2; shift 2 ;;
        --out-dir=*) out_dir=${1#--out-dir=}; shift ;;
        --cooldown|--cooldown=*) cooldown_given=1; args+=("$1"); shift ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) args+=("$1"); shift ;;
    esac
done
if [ -z "$pin" ]; then
    if is_termux; then pin=big; else pin=none; fi
fi

mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)

if is_termux && [ "$cooldown_given" -eq 0 ]; then
    args+=(--cooldown 60)
fi

prefix=()
case "$pin" in
    none) ;;
    big)
        cpus=$(big_cores)
        if [ -z "$cpus" ]; then
            echo "run-benchmark: no cpufreq information; running unpinned" >&2
        elif ! command -v taskset >/dev/null 2>&1; then
            echo "run-benchmark: taskset not found (pkg install util-linux); running unpinned" >&2
        else
            echo "run-benchmark: pinning to the fastest cores: $cpus"
            prefix=(taskset -c "$cpus")
        fi ;;
    *)
        command -v taskset >/dev/null 2>&1 || { echo "run-benchmark: taskset not found (pkg install util-linux)" >&2; exit 1; }
        echo "run-benchmark: pinning to CPUs $pin"
        prefix=(taskset -c "$pin") ;;
esac

if is_termux && command -v termux-wake-lock >/dev/null 2>&1; then
    echo "run-benchmark: holding a wake lock (termux-wake-lock) until the run ends"
    termux-wake-lock
    trap 'termux-wake-unlock' EXIT
fi

# Run outside the checkout: `python -m` would otherwise import the sources in the
# current folder (no compiled kernels) instead of the installed package.
cd "${TMPDIR:-/tmp}"
"${prefix[@]+"${prefix[@]}"}" "$PYTHON" -m qcnn_lite device run --out-dir "$out_dir" "${args[@]+"${args[@]}"}"
