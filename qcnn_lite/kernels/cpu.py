"""CPU targets: the names of the builds of the compiled kernels, and which of them this CPU runs.

One definition for every compiled extension (the Pythran kernels and the
byte-shuffle kernels of ``_shuffle``). A target is a set of instruction-set
extensions the compiler may use everywhere in a build:

========  =====================================  ========================================
target    compiler flag                          CPU features it needs (/proc/cpuinfo)
========  =====================================  ========================================
baseline  none (x86-64 / armv8-a)                none
v3        ``-march=x86-64-v3`` (psABI level 3)   AVX, AVX2, BMI1/2, F16C, FMA, LZCNT, MOVBE, XSAVE + level 2
v4        ``-march=x86-64-v4`` (psABI level 4)   AVX512F, BW, CD, DQ, VL + level 3
dotprod   ``-march=armv8.2-a+dotprod``           asimddp (SDOT/UDOT) + the v8.1 atomics, asimdrdm, crc32
native    ``-march=native`` (``-Dnative=true``)  those of the build machine (not checked)
========  =====================================  ========================================

Features come from the ``flags`` (x86) or ``Features`` (aarch64) line of
/proc/cpuinfo, which lists only what the CPU *and* the kernel support (AVX-512
disappears there when the OS does not save its registers). Where /proc/cpuinfo
cannot be read (sandboxes, some Android builds), no feature is assumed: only
``baseline`` is runnable. Pure Python, no dependencies.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "TARGETS", "ALIASES", "MARCH", "REQUIRES", "CpuInfo", "parse_cpuinfo", "detect", "arch_targets",
    "canonical", "runnable", "missing", "best",
]

# psABI levels, as /proc/cpuinfo spells the flags (pni = SSE3, abm = LZCNT, lahf_lm = LAHF/SAHF).
_X86_V2 = ("cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3")
_X86_V3 = _X86_V2 + ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave")
_X86_V4 = _X86_V3 + ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")
# armv8.2-a lets the compiler use the v8.1 LSE atomics, RDM and CRC32 too, not only the dot product.
_ARM_DOTPROD = ("asimd", "asimddp", "asimdrdm", "atomics", "crc32")

TARGETS: tuple[str, ...] = ("baseline", "v3", "v4", "dotprod", "native")
REQUIRES: dict[str, tuple[str, ...]] = {"baseline": (), "v3": _X86_V3, "v4": _X86_V4, "dotprod": _ARM_DOTPROD,
                                        "native": ()}
MARCH: dict[str, str | None] = {"baseline": None, "v3": "x86-64-v3", "v4": "x86-64-v4",
                                "dotprod": "armv8.2-a+dotprod", "native": "native"}
# Other spellings accepted in QCNN_LITE_TARGET: the psABI names, the levels below v3 (baseline), and the
# byte-shuffle ISA names of _shuffle (which runs exactly that ISA; the Pythran kernels the target that has it).
ALIASES: dict[str, str] = {
    "generic": "baseline", "portable": "baseline", "v1": "baseline", "v2": "baseline", "x86-64": "baseline",
    "x86-64-v2": "baseline", "x86-64-v3": "v3", "x86-64-v4": "v4", "armv8.2-a+dotprod": "dotprod",
    "scalar": "baseline", "neon": "baseline", "avx2": "v3", "avx512vbmi": "v4",
}
_ARCH_TARGETS = {"x86_64": ("baseline", "v3", "v4"), "aarch64": ("baseline", "dotprod")}
_MACHINE = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8l": "aarch64"}


@dataclass(frozen=True)
class CpuInfo:
    """What the dispatch knows about a CPU: its architecture, model name and feature flags.

    ``source`` says where the flags came from ("/proc/cpuinfo", "canned", or why none were read).
    """

    arch: str
    model: str
    flags: frozenset[str]
    source: str
    hardware: str | None = None  # ARM's "Hardware" line (the SoC), when the kernel lists one
    parts: tuple[str, ...] = ()  # ARM's distinct "CPU part"s: a big.LITTLE SoC lists several


def _arch(machine: str | None = None) -> str:
    m = (machine or platform.machine() or "unknown").lower()
    return _MACHINE.get(m, m)


def parse_cpuinfo(text: str, machine: str | None = None, source: str = "canned") -> CpuInfo:
    """CpuInfo from the text of /proc/cpuinfo (first processor's flags; an empty text gives no flags).

    x86 lists ``flags : ...`` and ``model name``; aarch64 lists ``Features : ...`` and, per
    core, ``CPU implementer``/``CPU part`` (model from ``Hardware`` or ``Model`` when present).
    Cores of a big.LITTLE SoC share an ISA, so the first feature line speaks for all.
    """
    fields: dict[str, str] = {}
    parts: set[str] = set()
    for line in text.splitlines():
        if ":" in line:
            k, v = (s.strip() for s in line.split(":", 1))
            fields.setdefault(k.lower(), v)
            if k.lower() == "cpu part":
                parts.add(v)
    arch = _arch(machine)
    # x86 names its features "flags", aarch64 "Features". The other one is another CPU's: under
    # qemu-user an aarch64 process reads the x86 host's /proc/cpuinfo. Then nothing is assumed.
    key = {"x86_64": "flags", "aarch64": "features"}.get(arch)
    flags = fields.get(key, "") if key else fields.get("flags") or fields.get("features") or ""
    if key and not flags and ("flags" in fields or "features" in fields):
        source += f" (no {key!r} line: another architecture's, e.g. under qemu-user; no features assumed)"
    model = fields.get("model name") or fields.get("hardware") or fields.get("model") or ""
    if not model and "cpu part" in fields:
        model = f"implementer {fields.get('cpu implementer', '?')} part {fields['cpu part']}"
    return CpuInfo(arch, model or platform.processor() or "unknown", frozenset(flags.lower().split()), source,
                   fields.get("hardware"), tuple(sorted(parts)))


def detect(path: str | Path = "/proc/cpuinfo", machine: str | None = None) -> CpuInfo:
    """This machine's CpuInfo; no flags (so only ``baseline`` runs) when ``path`` cannot be read."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as e:
        return CpuInfo(_arch(machine), platform.processor() or "unknown", frozenset(),
                       f"{path} unreadable ({e.strerror or e}): no features assumed")
    return parse_cpuinfo(text, machine, str(path))


def arch_targets(arch: str | None = None) -> tuple[str, ...]:
    """The targets meson builds by default for an architecture, worst first (baseline elsewhere)."""
    return _ARCH_TARGETS.get(_arch(arch), ("baseline",))


def canonical(name: str) -> str:
    """A target name from QCNN_LITE_TARGET's spelling (case, aliases); ValueError for unknown names."""
    n = name.strip().lower()
    n = ALIASES.get(n, n)
    if n not in TARGETS:
        raise ValueError(f"unknown target {name!r}: choose one of {', '.join(TARGETS)}")
    return n


def missing(target: str, cpu: CpuInfo) -> list[str]:
    """The features ``target`` needs that ``cpu`` lacks (all of them on the wrong architecture)."""
    target = canonical(target)
    if target in ("baseline", "native"):
        return []
    if target not in arch_targets(cpu.arch):
        return [f"an {'aarch64' if target == 'dotprod' else 'x86_64'} CPU (this is {cpu.arch})"]
    return [f for f in REQUIRES[target] if f not in cpu.flags]


def runnable(target: str, cpu: CpuInfo) -> bool:
    """Whether ``cpu`` runs code built for ``target`` (``native`` is trusted: built on this machine)."""
    return not missing(target, cpu)


def best(targets: list[str] | tuple[str, ...], cpu: CpuInfo) -> str | None:
    """The preferred target among ``targets`` that ``cpu`` runs: native, then the widest ISA; None if none."""
    order = ("native", "v4", "v3", "dotprod", "baseline")
    return next((t for t in order if t in targets and runnable(t, cpu)), None)
