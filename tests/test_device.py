"""device/: the Termux kit for Table 2 on a phone -- scripts, benchmark entry point, result files.

Nothing here installs anything: the setup script runs with a faked Termux PREFIX
and stub ``pkg``/``python`` commands that only log their arguments.
"""
import copy
import datetime as dt
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from qcnn_lite.bench import device as dr
from qcnn_lite.repro.device_plot import plot_table2
from qcnn_lite.repro import rows as tables
from qcnn_lite.cli.main import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
DEVICE = ROOT / "device"
SCRIPTS = sorted(DEVICE.glob("*.sh"))
TERMUX_PREFIX = "/data/data/com.termux/files/usr"


# --------------------------------------------------------------------------- shell scripts
def test_scripts_exist():
    names = {p.name for p in SCRIPTS}
    assert {"termux-setup.sh", "run-benchmark.sh", "arm64-check.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script):
    exe = shutil.which("shellcheck")
    if exe is None:
        pytest.skip("SHELLCHECK NOT INSTALLED: device/*.sh not linted (apt-get install shellcheck)")
    r = subprocess.run([exe, "-x", str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def _stubs(tmp_path: Path) -> tuple[Path, Path]:
    """A bin/ folder with `pkg` and `python` that log their arguments (and CXX) to calls.log."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir(parents=True)
    for name in ("pkg", "python"):
        stub = bin_dir / name
        # `python -c ...` (the backend query) answers "pythran"; everything else only logs.
        stub.write_text(
            "#!/bin/sh\n"
            f'echo "{name} $* [CXX=${{CXX:-}}]" >> "{log}"\n'
            f'if [ "{name}" = python ] && [ "$1" = -c ]; then echo pythran; fi\n'
        )
        stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    return bin_dir, log


def _setup(tmp_path: Path, *args: str, prefix: str | None = TERMUX_PREFIX, termux_version: str | None = None):
    bin_dir, log = _stubs(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PREFIX", "TERMUX_VERSION", "PKG", "PYTHON", "CXX")}
    env["PATH"] = f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"
    env["TMPDIR"] = str(tmp_path)
    if prefix is not None:
        env["PREFIX"] = prefix
    if termux_version is not None:
        env["TERMUX_VERSION"] = termux_version
    r = subprocess.run(["bash", str(DEVICE / "termux-setup.sh"), *args], env=env, capture_output=True,
                       text=True, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return r, calls


def test_setup_in_termux_runs_every_step_through_path(tmp_path):
    r, calls = _setup(tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Termux detected" in r.stdout
    pkg = [c for c in calls if c.startswith("pkg ")]
    assert pkg[0].startswith("pkg update -y")
    installed = pkg[1].split(" [")[0].split()
    assert installed[:3] == ["pkg", "install", "-y"]
    assert {"python", "python-numpy", "clang", "ninja", "patchelf"} <= set(installed[3:])
    assert "numpy" not in " ".join(c for c in calls if "pip install" in c)  # numpy comes from pkg, not pip
    pip = [c for c in calls if c.startswith("python -m pip install")]
    assert {"meson>=1.2", "meson-python>=0.15", "pythran==0.18.*"} <= set(pip[0].split(" [")[0].split()[4:])
    assert pip[1] == f"python -m pip install --no-build-isolation {ROOT} [CXX=clang++]"
    assert calls.index(pip[0]) < calls.index(pip[1])  # build tools before the package
    assert any(c.startswith("python -m qcnn_lite info") for c in calls)  # prints which kernels were built
    assert "kernel backend in use: pythran" in r.stdout
    for n in range(1, 5):
        assert f"==> {n}/4" in r.stdout


def test_setup_is_rerunnable(tmp_path):
    r1, calls1 = _setup(tmp_path / "a", prefix=None, termux_version="0.118.1")
    r2, calls2 = _setup(tmp_path / "b", prefix=None, termux_version="0.118.1")
    assert r1.returncode == r2.returncode == 0, r1.stderr + r2.stderr
    assert calls1 == calls2 and calls1  # TERMUX_VERSION alone is enough to detect Termux


def test_setup_refuses_outside_termux(tmp_path):
    r, calls = _setup(tmp_path, prefix="/usr")
    assert r.returncode == 1
    assert "does not look like Termux" in r.stderr and "--force" in r.stderr
    assert calls == []  # nothing ran


def test_setup_force_outside_termux_and_no_pkg(tmp_path):
    r, calls = _setup(tmp_path, "--force", "--no-pkg", prefix="/usr")
    assert r.returncode == 0, r.stderr
    assert "--force" in r.stderr
    assert not [c for c in calls if c.startswith("pkg ")]
    assert any("--no-build-isolation" in c for c in calls)


def test_setup_rejects_unknown_option(tmp_path):
    r, calls = _setup(tmp_path, "--frobnicate")
    assert r.returncode == 2 and "unknown option" in r.stderr and calls == []


def _fake_sysfs(tmp_path: Path, freqs: list[int | None]) -> Path:
    for i, f in enumerate(freqs):
        d = tmp_path / f"cpu{i}" / "cpufreq"
        d.mkdir(parents=True)
        if f is not None:
            (d / "cpuinfo_max_freq").write_text(f"{f}\n")
    return tmp_path


@pytest.mark.parametrize("freqs, want", [
    ([1800000] * 4 + [2400000] * 4, "4,5,6,7"),             # big.LITTLE
    ([1800000] * 4 + [2400000] * 3 + [3000000], "7"),       # one prime core
    ([2000000] * 10 + [2500000, 2500000], "10,11"),          # two-digit CPU numbers
    ([None, None], ""),                                       # no cpufreq (VMs): no pinning
])
def test_big_core_detection(tmp_path, freqs, want):
    sysfs = _fake_sysfs(tmp_path, freqs)
    r = subprocess.run(["bash", str(DEVICE / "run-benchmark.sh"), "--big-cores"], capture_output=True, text=True,
                       env={**os.environ, "CPU_SYSFS": str(sysfs)}, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == want


# --------------------------------------------------------------------------- benchmark end to end
def test_run_benchmark_end_to_end_quick(tmp_path):
    """The shell entry point, quick mode, a small network: writes a new, valid result beside an existing one."""
    out = tmp_path / "results"
    out.mkdir()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHON": sys.executable}
    env.pop("PREFIX", None), env.pop("TERMUX_VERSION", None)
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    existing = out / f"ci-test-{today}.json"
    existing.write_text("not mine\n")
    r = subprocess.run(["bash", str(DEVICE / "run-benchmark.sh"), "--quick", "--networks", "mini-alexnet",
                        "--name", "ci-test", "--kind", "other", "--pin", "none", "--out-dir", str(out)],
                       env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert existing.read_text() == "not mine\n"  # never overwritten
    written = out / f"ci-test-{today}-2.json"
    assert written.exists(), list(out.iterdir())
    res = dr.load_result(written)
    assert res["mode"] == "quick" and res["kind"] == "other" and res["schema_version"] == dr.SCHEMA_VERSION
    assert {(u["network"], u["variant"]) for u in res["runs"]} == {("mini-alexnet", "cnn"), ("mini-alexnet", "qcnn")}
    for u in res["runs"]:
        assert len(u["times_s"]) == u["repeat"] == 3 and u["threads"] == 1
        assert u["peak_rss_mib"] > res["environment"]["rss_no_model_mib"] > 0
    runs = {u["variant"]: u for u in res["runs"]}
    assert runs["qcnn"]["storage_bytes"] < runs["cnn"]["storage_bytes"]
    assert runs["qcnn"]["backend"] == res["build"]["backend"]
    assert res["device"]["cores"] == os.cpu_count()
    assert "mini-alexnet" in r.stdout  # the table is printed


# --------------------------------------------------------------------------- validation
def _valid() -> dict:
    times = [0.5, 0.25, 0.75]
    run = {"network": "alexnet", "variant": "cnn", "engine": "numpy-dense", "backend": "numpy", "threads": 1,
           "repeat": 3, "warmup": 1, "times_s": times, "median_s": 0.5, "min_s": 0.25, "max_s": 0.75,
           "storage_bytes": 243864416, "peak_rss_mib": 500.0}
    qrun = {**run, "variant": "qcnn", "engine": "qcnn-pythran", "backend": "pythran", "times_s": [0.2, 0.1, 0.3],
            "median_s": 0.2, "min_s": 0.1, "max_s": 0.3, "storage_bytes": 13_200_000, "peak_rss_mib": 120.0}
    return {
        "schema_version": 1, "kind": "other", "name": "test-device", "created_utc": "2026-01-31T12:00:00Z",
        "mode": "quick",
        "device": {"model": "Test", "android_version": None, "os": "Linux", "kernel": "Linux 6", "arch": "x86_64",
                   "cpu": "CPU", "cores": 2, "max_freq_khz": [None, 2000000]},
        "environment": {"load_average": [0.5, 0.4, 0.3]},
        "build": {"backend": "pythran", "build": {"pythran_kernels": "built"}},
        "runs": [run, qrun],
    }


def _write(tmp_path: Path, obj, name="r.json") -> Path:
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_valid_result_loads(tmp_path):
    res = dr.load_result(_write(tmp_path, _valid()))
    assert res["runs"][0]["median_s"] == 0.5


def _mutate(path: str, value=None, delete: bool = False) -> dict:
    obj = _valid()
    *keys, last = path.split(".")
    node = obj
    for k in keys:
        node = node[int(k)] if isinstance(node, list) else node[k]
    if delete:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return obj


BAD = {
    "missing schema_version": (_mutate("schema_version", delete=True), "missing field 'schema_version'"),
    "unknown schema version": (_mutate("schema_version", 2), "unknown schema_version 2"),
    "schema version as string": (_mutate("schema_version", "1"), "unknown schema_version '1'"),
    "missing runs": (_mutate("runs", delete=True), "missing field 'runs'"),
    "empty runs": (_mutate("runs", []), "'runs' is empty"),
    "missing device model": (_mutate("device.model", delete=True), "device: missing field 'model'"),
    "missing run times": (_mutate("runs.1.times_s", delete=True), "runs[1]: missing field 'times_s'"),
    "missing storage": (_mutate("runs.0.storage_bytes", delete=True), "missing field 'storage_bytes'"),
    "negative time": (_mutate("runs.0.times_s.1", -0.25), "times_s[1] must be a number of seconds above 0"),
    "negative median": (_mutate("runs.0.median_s", -0.5), "'median_s' must be a positive"),
    "time as string": (_mutate("runs.0.times_s.0", "0.5"), "times_s[0] must be a number of seconds above 0"),
    # what the tables divide by or format must be a usable number: zero, absurd or unbounded values are refused
    "zero time": (_mutate("runs.0.times_s.1", 0), "times_s[1] must be a number of seconds above 0"),
    "1e300 s time": (_mutate("runs.0.times_s.1", 1e300), "at most 3600"),
    "zero median": (_mutate("runs.0.median_s", 0), "'median_s' must be a positive"),
    "storage 10**400": (_mutate("runs.0.storage_bytes", 10**400), "'storage_bytes' must be above 0 and at most"),
    "huge memory": (_mutate("runs.0.peak_rss_mib", 1e300), "'peak_rss_mib' must be a positive finite number at most"),
    "huge load average": (_mutate("environment.load_average", [1e300, 0, 0]), "'load_average' must be three numbers"),
    "stats do not match": (_mutate("runs.0.median_s", 0.3), "do not match times_s"),
    "times vs repeat": (_mutate("runs.0.repeat", 4), "has 3 entries but 'repeat' is 4"),
    "zero memory": (_mutate("runs.0.peak_rss_mib", 0), "'peak_rss_mib' must be a positive"),
    "unknown variant": (_mutate("runs.0.variant", "fp16"), "'variant' must be one of"),
    "unknown kind": (_mutate("kind", "tablet"), "'kind' must be one of"),
    "bad date": (_mutate("created_utc", "yesterday"), "'created_utc'"),
    "freqs per core": (_mutate("device.max_freq_khz", [2000000]), "one positive integer (or null) per core"),
    "bool as int": (_mutate("device.cores", True), "'cores' must be int"),
    "duplicate run": (_mutate("runs.1", _valid()["runs"][0]), "repeats"),
    "not an object": ([1, 2], "top level must be a JSON object"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_result_rejected(tmp_path, case):
    obj, msg = BAD[case]
    path = _write(tmp_path, copy.deepcopy(obj), "bad-result.json")
    with pytest.raises(dr.ResultFormatError) as e:
        dr.load_result(path)
    assert str(path) in str(e.value) and msg in str(e.value)


def test_truncated_and_non_json_rejected(tmp_path):
    text = json.dumps(_valid(), indent=2)
    path = _write(tmp_path, text[: len(text) // 2], "truncated.json")
    with pytest.raises(dr.ResultFormatError, match=r"truncated\.json: not valid JSON \(truncated\?\)"):
        dr.load_result(path)
    path = _write(tmp_path, text.replace("0.75", "NaN", 1), "nan.json")
    with pytest.raises(dr.ResultFormatError, match=r"nan\.json: NaN is not allowed"):
        dr.load_result(path)
    path = tmp_path / "binary.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(dr.ResultFormatError, match="binary.json: not UTF-8"):
        dr.load_result(path)


def test_load_results_folder_and_cli(tmp_path, capsys):
    _write(tmp_path, _valid(), "a.json")
    _write(tmp_path, {**_valid(), "name": "other-device"}, "b.json")
    _write(tmp_path, {"status": "pass"}, "arm64-check.json")  # not a result: skipped
    (tmp_path / "SCHEMA.md").write_text("# docs\n")
    assert [r["name"] for r in dr.load_results(tmp_path)] == ["test-device", "other-device"]
    assert cli_main(["device", "validate", str(tmp_path)]) == 0
    bad = _write(tmp_path / "..", "{", "broken.json")
    assert cli_main(["device", "validate", str(tmp_path), str(bad)]) == 1
    assert "broken.json: not valid JSON" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        dr.load_results(tmp_path / "nope")


def test_committed_results_validate():
    results = dr.load_results(DEVICE / "results")
    assert results, "device/results/ should hold at least the x86 reference result"
    for res in results:
        if res["kind"] == "phone":
            assert res["device"]["android_version"], f"{res['_path']}: a phone result without Android facts"
    assert any(r["kind"] == "x86-ci-reference" for r in results)


# --------------------------------------------------------------------------- table and plot
def test_table2_rows():
    res = _valid()
    rows = tables.table2_device_rows([res])
    paper_rows = [r for r in rows if r["source"].startswith("paper")]
    # Table 2 of the paper as printed (Huawei Mate 7): time s, storage MB, memory MB
    printed = {("alexnet", "cnn"): (2.93, 232.56, 264.74), ("alexnet", "qcnn"): (0.95, 12.60, 74.65),
               ("cnns", "cnn"): (10.58, 392.57, 468.90), ("cnns", "qcnn"): (2.61, 20.13, 129.49)}
    assert {(r["network"], r["variant"]): (r["time_s"], r["storage_mb"], r["memory_mb"]) for r in paper_rows} == printed
    mine = [r for r in rows if not r["source"].startswith("paper")]
    assert [(r["variant"], r["time_s"], r["memory_mb"]) for r in mine] == [("cnn", 0.5, 500.0), ("qcnn", 0.2, 120.0)]
    assert mine[0]["storage_mb"] == pytest.approx(243864416 / 2**20)
    assert set(rows[0]) >= {"network", "variant", "time_s", "storage_mb", "memory_mb", "source"}
    text = tables.render_device_rows(rows)
    assert "2.50x faster" in text  # 0.5 s / 0.2 s
    assert "3.08x faster" in text  # the paper's AlexNet: 2.93 s / 0.95 s


def test_plot_table2():
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    other = copy.deepcopy(_valid())
    other["name"] = "second"
    fig = plot_table2([_valid(), other])
    axes = fig.axes
    assert len(axes) == 3 and all(ax.get_yscale() == "log" for ax in axes)
    # paper: 4 bars (2 networks x 2 variants); each result has AlexNet only: 2 bars each
    assert len(axes[0].patches) == 4 + 2 + 2
    heights = sorted(p.get_height() for p in axes[0].patches)
    assert heights == sorted([2.93, 0.95, 10.58, 2.61, 0.5, 0.2, 0.5, 0.2])
    plt.close(fig)


# --------------------------------------------------------------------------- device facts
def test_device_facts_on_android(tmp_path, monkeypatch):
    """A stub `getprop` stands in for Android: the model and versions come from its properties."""
    props = {"ro.product.model": "SM-S911B", "ro.product.manufacturer": "samsung",
             "ro.build.version.release": "14", "ro.build.version.sdk": "34", "ro.soc.model": "SM8550"}
    stub = tmp_path / "getprop"
    stub.write_text("#!/bin/sh\ncase \"$1\" in\n" + "".join(f"  {k}) echo {v} ;;\n" for k, v in props.items())
                    + "esac\n")
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    dev = dr.device_facts()
    assert (dev["model"], dev["manufacturer"], dev["android_version"], dev["android_sdk"], dev["os"]) == \
        ("SM-S911B", "samsung", "14", "34", "Android 14")
    assert len(dev["max_freq_khz"]) == dev["cores"] == os.cpu_count()
    assert dr._default_name(dev, "phone") == "samsung-sm-s911b"


def test_device_facts_off_android(monkeypatch):
    """Without getprop nothing Android is reported, and the facts are this machine's, read independently."""
    import platform

    asked = []
    monkeypatch.setattr(shutil, "which", lambda name: asked.append(name))  # no getprop, no uptime
    dev = dr.device_facts()
    assert "getprop" in asked
    assert dev["android_version"] is None and dev["android_sdk"] is None and dev["manufacturer"] is None
    assert dev["os"] == platform.system() and dev["arch"] == platform.machine()
    assert dev["cores"] == os.cpu_count() == len(dev["max_freq_khz"])
    info = Path("/proc/cpuinfo")
    if info.exists():
        names = [line.split(":", 1)[1].strip() for line in info.read_text().splitlines() if line.startswith("model name")]
        if names:
            assert dev["cpu"] == names[0]
    mem = Path("/proc/meminfo")
    if mem.exists():
        kib = int(next(line.split()[1] for line in mem.read_text().splitlines() if line.startswith("MemTotal:")))
        assert dev["mem_total_mib"] == kib / 1024


def test_run_benchmark_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown"):
        dr.run_benchmark(tmp_path, networks=["resnet-9000"], quick=True)
    with pytest.raises(ValueError, match="kind must be one of"):
        dr.run_benchmark(tmp_path, networks=["mini-alexnet"], quick=True, kind="tablet")
    with pytest.raises(ValueError, match="repeat"):
        dr.run_benchmark(tmp_path, networks=["mini-alexnet"], repeat=0)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_plot_cli_refuses_to_overwrite(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    src = _write(tmp_path, _valid(), "a.json")
    png = tmp_path / "t2.png"
    png.write_bytes(b"mine")
    assert cli_main(["device", "plot", str(src), "--out", str(png)]) == 2
    assert "exists" in capsys.readouterr().err and png.read_bytes() == b"mine"
    assert cli_main(["device", "plot", str(src), "--out", str(png), "--force"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
