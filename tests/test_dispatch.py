"""CPU targets: the /proc/cpuinfo parser on canned CPUs, the choice of a target, QCNN_LITE_TARGET's errors,
and every built target this CPU runs against the numpy kernels.

The canned flag lines are real (trimmed of flags that play no part): an Intel Xeon
with AVX-512 (Sapphire Rapids), an AMD Zen 4, an AVX2-only Haswell, a pre-AVX2
Sandy Bridge, a Cortex-A76 with dotprod, a Cortex-A53 without.
"""
import importlib
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import rel_err
from qcnn_lite import kernels
from qcnn_lite.kernels import _numpy, _targets
from qcnn_lite.kernels import cpu as _cpu

INTEL_SPR = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss ht \
syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid tsc_known_freq pni pclmulqdq ssse3 \
fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor lahf_lm abm \
3dnowprefetch fsgsbase tsc_adjust bmi1 hle avx2 smep bmi2 erms invpcid rtm avx512f avx512dq rdseed adx smap \
avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx_vnni avx512_bf16 \
arat avx512vbmi umip avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq amx_tile amx_int8

processor\t: 1
flags\t\t: fpu sse sse2
"""
ZEN4 = """model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht \
syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid extd_apicid \
aperfmperf tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c \
rdrand hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch topoext perfctr_core \
invpcid_single ssbd ibrs ibpb stibp vmmcall fsgsbase bmi1 avx2 smep bmi2 invpcid avx512f avx512dq rdseed adx smap \
avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx512_bf16 clzero \
xsaveerptr rdpru wbnoinvd arat avx512vbmi pku ospke avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg \
avx512_vpopcntdq rdpid fsrm
"""
HASWELL = """model name\t: Intel(R) Core(TM) i7-4770 CPU @ 3.40GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr sse \
sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc arch_perfmon pebs bts rep_good nopl xtopology \
nonstop_tsc cpuid aperfmperf pni pclmulqdq dtes64 monitor ds_cpl vmx est tm2 ssse3 sdbg fma cx16 xtpr pdcm pcid \
sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand lahf_lm abm cpuid_fault epb \
invpcid_single pti fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid xsaveopt
"""
SANDY_BRIDGE = """model name\t: Intel(R) Core(TM) i7-2600 CPU @ 3.40GHz
flags\t\t: fpu sse sse2 ssse3 cx16 sse4_1 sse4_2 popcnt pni lahf_lm xsave avx
"""
A76 = """processor\t: 0
BogoMIPS\t: 38.40
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1
"""
A53 = """processor\t: 0
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid
CPU implementer\t: 0x41
CPU part\t: 0xd03
Hardware\t: Qualcomm Technologies, Inc SDM450
"""

CANNED = {
    # name: (text, machine, targets it runs)
    "intel-avx512": (INTEL_SPR, "x86_64", {"baseline", "v3", "v4"}),
    "zen4": (ZEN4, "x86_64", {"baseline", "v3", "v4"}),
    "avx2-only": (HASWELL, "x86_64", {"baseline", "v3"}),
    "avx-no-avx2": (SANDY_BRIDGE, "x86_64", {"baseline"}),
    "aarch64-dotprod": (A76, "aarch64", {"baseline", "dotprod"}),
    "aarch64-no-dotprod": (A53, "aarch64", {"baseline"}),
    "empty": ("", "x86_64", {"baseline"}),
}


@pytest.mark.parametrize("name", CANNED)
def test_parser_and_runnable_targets(name):
    text, machine, want = CANNED[name]
    cpu = _cpu.parse_cpuinfo(text, machine)
    got = {t for t in ("baseline", "v3", "v4", "dotprod") if _cpu.runnable(t, cpu)}
    assert got == want
    assert cpu.arch == machine


def test_parser_fields():
    cpu = _cpu.parse_cpuinfo(INTEL_SPR, "x86_64")
    assert cpu.model.startswith("Intel(R) Xeon(R) Platinum 8481C")
    assert "avx512vl" in cpu.flags and "amx_int8" in cpu.flags
    assert "sse" in cpu.flags and len(cpu.flags) > 50  # the first processor's line, not the second one
    assert _cpu.parse_cpuinfo(A53, "aarch64").model == "Qualcomm Technologies, Inc SDM450"
    assert _cpu.parse_cpuinfo(A76, "aarch64").model == "implementer 0x41 part 0xd0b"
    assert _cpu.parse_cpuinfo("", "arm64").arch == "aarch64"  # platform.machine() on macOS / some Androids


def test_missing_features_are_named():
    cpu = _cpu.parse_cpuinfo(HASWELL, "x86_64")
    assert _cpu.missing("v4", cpu) == ["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"]
    assert _cpu.missing("dotprod", cpu) == ["an aarch64 CPU (this is x86_64)"]
    assert _cpu.missing("v3", _cpu.parse_cpuinfo(A76, "aarch64")) == ["an x86_64 CPU (this is aarch64)"]
    assert _cpu.missing("dotprod", _cpu.parse_cpuinfo(A53, "aarch64")) == ["asimddp", "asimdrdm", "atomics"]


def test_another_architectures_cpuinfo_means_baseline():
    """qemu-user: an aarch64 process reads the x86 host's /proc/cpuinfo; its flags say nothing about aarch64."""
    cpu = _cpu.parse_cpuinfo(INTEL_SPR, "aarch64")
    assert cpu.flags == frozenset() and "qemu" in cpu.source
    assert _cpu.best(["baseline", "dotprod"], cpu) == "baseline"


def test_unreadable_cpuinfo_means_baseline(tmp_path):
    cpu = _cpu.detect(tmp_path / "no-such-file", "x86_64")
    assert cpu.flags == frozenset() and "unreadable" in cpu.source
    assert _cpu.best(["baseline", "v3", "v4"], cpu) == "baseline"


@pytest.mark.parametrize("name,built,want", [
    ("intel-avx512", ["baseline", "v3", "v4"], "v4"),
    ("zen4", ["baseline", "v3"], "v3"),        # v4 not built (-Dkernel_targets=baseline,v3)
    ("avx2-only", ["baseline", "v3", "v4"], "v3"),
    ("avx-no-avx2", ["baseline", "v3", "v4"], "baseline"),
    ("empty", ["baseline", "v3", "v4"], "baseline"),
    ("aarch64-dotprod", ["baseline", "dotprod"], "dotprod"),
    ("aarch64-no-dotprod", ["baseline", "dotprod"], "baseline"),
    ("avx2-only", ["v4"], None),               # a build for another machine: nothing runs
    ("empty", ["native"], "native"),           # -Dnative=true: trusted, it was built here
])
def test_best_target(name, built, want):
    text, machine, _ = CANNED[name]
    assert _cpu.best(built, _cpu.parse_cpuinfo(text, machine)) == want


@pytest.mark.parametrize("spelling,want", [("baseline", "baseline"), ("V3", "v3"), ("x86-64-v4", "v4"),
                                           ("v1", "baseline"), ("generic", "baseline"), (" dotprod ", "dotprod"),
                                           ("avx2", "v3"), ("scalar", "baseline")])  # _shuffle's ISA names
def test_target_names(spelling, want):
    assert _cpu.canonical(spelling) == want


def test_unknown_target_name():
    with pytest.raises(ValueError, match="unknown target 'avx9'.*baseline, v3, v4, dotprod, native"):
        _cpu.canonical("avx9")


# -- dispatch over the built set (fake CPUs, fake builds) -------------------------------------------
@pytest.fixture
def fake(monkeypatch):
    """Pretend the build holds ``built`` targets and the CPU is a canned one: fake(name, built)."""
    def set_(name, built):
        text, machine, _ = CANNED[name]
        monkeypatch.setattr(_targets, "_cpu_info", _cpu.parse_cpuinfo(text, machine))
        monkeypatch.setattr(_targets, "_paths", {t: f"/nowhere/_pythran_{t}.so" for t in built})
    return set_


def test_choose_picks_the_best_and_says_why(fake):
    fake("avx2-only", ["baseline", "v3", "v4"])
    t, why = _targets._choose(None)
    assert t == "v3"
    assert "best built target" in why and "i7-4770" in why and "v4 (lacks avx512f" in why


def test_forced_target_not_built(fake):
    fake("intel-avx512", ["baseline"])
    with pytest.raises(ValueError, match=r"QCNN_LITE_TARGET='v4': the v4 kernels are not built \(built: baseline\)"):
        _targets._choose("v4")
    with pytest.raises(ValueError, match="native kernels are not built.*-Dnative=true"):
        _targets._choose("native")


def test_forced_target_not_runnable(fake):
    fake("avx2-only", ["baseline", "v3", "v4"])
    with pytest.raises(ValueError, match=r"cannot run the v4 kernels \(lacks avx512f.*runnable here: baseline, v3"):
        _targets._choose("v4")
    fake("intel-avx512", ["baseline", "dotprod"])  # an aarch64 build copied to x86
    with pytest.raises(ValueError, match="cannot run the dotprod kernels.*an aarch64 CPU"):
        _targets._choose("dotprod")


def test_forced_target_of_another_architecture(fake):
    fake("zen4", ["baseline", "v3", "v4"])
    with pytest.raises(ValueError, match=r"'dotprod': the dotprod kernels are for an aarch64 CPU \(this is x86_64\); "
                                         "built here: baseline, v3, v4"):
        _targets._choose("dotprod")


def test_forced_unknown_target(fake):
    fake("intel-avx512", ["baseline"])
    with pytest.raises(ValueError, match="unknown target 'fastest'"):
        _targets._choose("fastest")


def test_nothing_runnable_is_an_import_error(fake):
    fake("avx2-only", ["v4"])
    with pytest.raises(ImportError, match="none of the built kernel targets"):
        _targets._choose(None)


# -- the real build ------------------------------------------------------------------------------
needs_pythran = pytest.mark.skipif(not kernels.built_targets(), reason="Pythran kernels not built")


@needs_pythran
def test_api_reports_the_target_in_use():
    assert kernels.target() in kernels.runnable_targets()
    assert set(kernels.runnable_targets()) <= set(kernels.built_targets())
    d = kernels.describe()
    assert d["target"] == kernels.target() and d["reason"] and d["cpu"]["model"]
    assert set(d["built"]) == set(kernels.built_targets())
    assert d["summary"].startswith(kernels.target())


@needs_pythran
@pytest.mark.parametrize("var", ["QCNN_LITE_TARGET", "QCNN_LITE_BACKEND"])
def test_env_error_is_clear(var):
    """A forced target this build lacks, or an unknown backend: the import still works (so ``--help``
    does), warns once with the reason, runs the numpy kernels and records the error for the CLI."""
    bad = next((t for t in ("dotprod", "v3", "native") if t not in kernels.runnable_targets()), None)
    env = {**os.environ, var: bad if var == "QCNN_LITE_TARGET" else "foo"}
    code = ("import numpy as np; from qcnn_lite.kernels import dispatch, lrn; import sys\n"
            "print(dispatch.backend()); print(dispatch.ENV_ERROR); sys.stdout.flush(); print('import done', file=sys.stderr)\n"
            "x = np.ones((1, 4, 2, 2), np.float32); lrn(x); lrn(x)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    backend, error = r.stdout.strip().splitlines()
    assert backend == "numpy" and error.startswith(var if var == "QCNN_LITE_BACKEND" else f"{var}={bad!r}")
    before, after = r.stderr.split("import done")
    assert before.strip() == ""  # quiet at import: the command line reports it in one line
    assert after.count("RuntimeWarning") == 1 and error in after  # a library caller hears it once, at the first call


def _conv(rng):
    C, H, Ct, k, s, p, g, d, K = 12, 11, 6, 3, 2, 1, 2, 3, 16
    M = C // g // d
    return (rng.standard_normal((2, C, H, H), dtype=np.float32), rng.standard_normal((M, K, d), dtype=np.float32),
            rng.integers(0, K, (Ct, k, k, M)).astype(np.uint8), rng.standard_normal(Ct, dtype=np.float32), s, p, g)


def _fc(rng):
    x = rng.standard_normal((3, 96), dtype=np.float32)
    books = rng.standard_normal((24, 256, 4), dtype=np.float32)
    return x, books, rng.integers(0, 256, (37, 24)).astype(np.uint8), rng.standard_normal(37, dtype=np.float32)


@needs_pythran
@pytest.mark.parametrize("target", kernels.runnable_targets())
def test_every_runnable_target_matches_numpy(target, rng):
    old_backend, old = kernels.backend(), kernels.target()
    try:
        kernels.set_backend("pythran")
        assert kernels.set_target(target) == target
        conv, fc = _conv(rng), _fc(rng)
        assert rel_err(kernels.conv2d_lut(*conv), _numpy.conv2d_lut(*conv)) < 1e-5
        assert rel_err(kernels.linear_lut(*fc), _numpy.linear_lut(*fc)) < 1e-5
        mod = importlib.import_module("qcnn_lite.kernels._pythran")
        assert mod.__file__ == kernels.describe()["built"][target]["path"]
    finally:
        kernels.set_target(old)
        kernels.set_backend(old_backend)


def test_info_and_bench_report_the_target():
    """`python -m qcnn_lite info` names the target and every built one; bench results carry it and the CPU model."""
    from qcnn_lite.kernels import buildinfo
    from qcnn_lite.bench import machine

    info = buildinfo.collect()
    text = buildinfo.render(info)
    assert info["target"]["target"] == kernels.target()
    assert f"kernel target       : {kernels.target() or '-'}" in text
    for t in kernels.built_targets():
        assert f"built {t:<12}:" in text
    m = machine.machine()
    assert m["kernel_target"] == kernels.target() and m["cpu"] and m["kernel_targets_built"] == kernels.built_targets()


def test_set_target_without_kernels_is_an_import_error(monkeypatch):
    monkeypatch.setattr(kernels.dispatch, "_load_pythran", lambda: None)
    with pytest.raises(ImportError, match="not built"):
        kernels.set_target("baseline")
    assert kernels.target() is None


def test_set_target_errors_name_the_call(fake):
    fake("avx2-only", ["baseline", "v3", "v4"])
    with pytest.raises(ValueError, match=r"^set_target\('v4'\): this x86_64 CPU .* cannot run the v4 kernels"):
        _targets.select("v4")
