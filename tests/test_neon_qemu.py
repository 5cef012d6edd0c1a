"""The aarch64 kernels on an x86-64 host: NEON fc shuffles and conv run-adds under qemu-user.

``simd/neon_driver.cpp`` (the kernel headers the extension uses, nothing else) is cross-compiled
once per session with aarch64-linux-gnu-g++ -O2 -march=armv8-a and run ONCE under
qemu-aarch64-static on every case below (one qemu start-up, not one per case); each case is then
checked here against its numpy reference. On an aarch64 host the driver is built and run natively.

The fc cases are test_shuffle.py's NEON cases, read from its parametrize marks (a case added
there runs here too): exact sums (NEON, and the scalar path on NEON-packed codes), the
all-255 overflow cases, the table quantization, the whole layer. The conv cases: the
run-adds on test_conv8.py's shapes (1x1 maps, stride > kernel, odd sizes, groups, one output
channel, ...), K = 2..256, and tables at the overflow bound, against the exact numpy sums; and
the whole integer conv layer against its numpy emulation.

No aarch64 tools (apt-get install g++-aarch64-linux-gnu qemu-user-static, or
scripts/system-deps.sh): a skip, but a failure under CI=true.
"""
import itertools
import os
import platform
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import test_conv8 as tc
import test_shuffle as ts
from conftest import rel_err
from qcnn_lite.kernels import _convq, _numpy, geometry
from qcnn_lite.kernels import _shuffle as sh

DRIVER = Path(__file__).resolve().parents[1] / "qcnn_lite" / "kernels" / "simd" / "neon_driver.cpp"  # not installed
MACHINE = platform.machine()
pytestmark = pytest.mark.skipif(not (sys.platform.startswith("linux") and MACHINE in ("x86_64", "aarch64")),
                                reason="the aarch64 driver runs on Linux x86_64 (under qemu-user) or aarch64 hosts")
NEON = 3  # lut_kernels.h's Isa numbers
SCALAR = 0
# -ffp-contract=off as the extension's meson.build: aarch64 g++ would otherwise fuse the
# table builds' products into FMAs and round differently from the numpy emulation.
CXXFLAGS = ["-O2", "-march=armv8-a", "-std=c++17", "-ffp-contract=off", "-fno-math-errno"]


def _tools():
    """(compiler, runner prefix) for this host, or None."""
    if MACHINE == "aarch64":
        cxx = shutil.which("g++") or shutil.which("c++")
        return (cxx, []) if cxx else None
    cxx = next((c for c in ("aarch64-linux-gnu-g++", "aarch64-linux-gnu-g++-12") if shutil.which(c)), None)
    qemu = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    return (cxx, [qemu, "-L", "/usr/aarch64-linux-gnu"]) if cxx and qemu else None


# ------------------------------------------------------------------ the cases ----
# A case: (id, make) with make() -> (record: list of arrays, outputs: list of (dtype, count), check(outputs)).
CASES = []


def case(id_):
    def add(make):
        CASES.append((id_, make))
        return make
    return add


def _i32(*v):
    return np.array(v, np.int32)


def _grid(fn):
    """The parameter combinations of a per-ISA test of test_shuffle.py (its parametrize marks, isa left out)."""
    axes, names_seen = [], set()
    for mark in fn.pytestmark:
        if mark.name != "parametrize":
            continue
        names = [n.strip() for n in mark.args[0].split(",")]
        names_seen.update(names)
        if names == ["isa"]:
            continue
        values = [v.values if hasattr(v, "values") else v for v in mark.args[1]]
        axes.append([dict(zip(names, v if len(names) > 1 else (v,))) for v in values])
    assert "isa" in names_seen, f"{fn.__name__} is not a per-ISA test"
    return [{k: v for d in combo for k, v in d.items()} for combo in itertools.product(*axes)]


def _fc_sums_record(isa, q, packed):
    M, K = q.shape
    return [_i32(1, isa, M, K, packed.n_out, packed.block), np.ascontiguousarray(q, np.uint8), packed.data]


def _add_fc_sums(M, K, n_out):
    def make(isa):
        rng = np.random.default_rng(K * 1000 + M)  # test_sums_exact's case
        q, codes = ts._case(rng, M, K, n_out)
        packed = sh.pack_codes(codes, K, "neon")

        def check(out):
            np.testing.assert_array_equal(out[0], sh.emulate_sums(q, codes))
        return _fc_sums_record(isa, q, packed), [(np.uint32, n_out)], check

    case(f"fc-sums-neon-K{K}-M{M}-out{n_out}")(lambda: make(NEON))
    # the scalar path on NEON-packed codes (test_sums_exact runs it too: the reference inside the extension)
    case(f"fc-sums-scalar16-K{K}-M{M}-out{n_out}")(lambda: make(SCALAR))


for p in _grid(ts.test_sums_exact):
    _add_fc_sums(p["M"], p["K"], p["n_out"])


def _add_fc_overflow(M, K):
    @case(f"fc-overflow-neon-K{K}-M{M}")
    def make():
        q, codes = ts._case(np.random.default_rng(M), M, K, 33, full=True)

        def check(out):
            want = sh.emulate_sums(q, codes)
            assert (want == 255 * M).all()
            np.testing.assert_array_equal(out[0], want)
        return _fc_sums_record(NEON, q, sh.pack_codes(codes, K, "neon")), [(np.uint32, 33)], check


for p in _grid(ts.test_overflow_adversarial):
    _add_fc_overflow(p["M"], p["K"])


def _quantize_luts(K):
    """test_compiled_quantize_matches_numpy's tables."""
    rng = np.random.default_rng(K)
    return [rng.standard_normal((37, K), dtype=np.float32) * 3,
            np.round(rng.standard_normal((20, K)) * 4).astype(np.float32),  # many exact half steps
            np.full((5, K), 2.5, np.float32)]  # zero range: scale 1, q = 0


def _add_fc_quantize(K, i):
    @case(f"fc-quantize-K{K}-table{i}")
    def make():
        lut = _quantize_luts(K)[i]
        M = lut.shape[0]

        def check(out):
            q, scale, off = sh.quantize_tables(lut)
            np.testing.assert_array_equal(out[0].reshape(M, K), q)
            assert out[1][0] == np.float32(scale)
            assert float(out[2][0]) == pytest.approx(off, rel=1e-12, abs=1e-9)
        return [_i32(2, M, K), lut], [(np.uint8, M * K), (np.float32, 1), (np.float64, 1)], check


for p in _grid(ts.test_compiled_quantize_matches_numpy):
    for i in range(3):
        _add_fc_quantize(p["K"], i)


def _add_fc_layer(M, K, d, n_out, rows):
    @case(f"fc-layer-neon-M{M}-K{K}-d{d}-out{n_out}" + ("-row1" if rows == "row1" else ""))
    def make():
        rng = np.random.default_rng(M * K + d)  # test_linear_lut_u8's case
        x, books, codes, bias = ts._layer(rng, M, K, d, n_out, n=3)
        packed = sh.pack_codes(codes, K, "neon")
        xs = x[1:2] if rows == "row1" else x
        n = xs.shape[0]

        def check(out):
            y = out[0].reshape(n, n_out)
            ref = _numpy.linear_lut(xs, books, codes, bias)
            assert (np.abs(y - ref) <= ts._bound(xs, books)).all()
            emu = sh.emulate_linear(xs, books, codes, bias)
            scales = np.array([sh.quantize_tables(t)[1] for t in _numpy.linear_tables(xs, books).reshape(n, M, K)])
            assert (np.abs(y - emu) / scales[:, None]).max() <= max(2.0, 0.02 * M)
        record = [_i32(3, NEON, n, M, K, d, n_out, packed.block), xs, books, packed.data, bias]
        return record, [(np.float32, n * n_out)], check


for p in _grid(ts.test_linear_lut_u8):
    for rows in ("all", "row1"):  # rows are independent: row 1 alone as a case of its own
        _add_fc_layer(p["M"], p["K"], p["d"], p["n_out"], rows)
N_FC = len(CASES)


# conv: one group's run-adds from a given table, against _convq.table_sums (exact int64 sums)
def _conv_sums_case(id_, gen, bits, mb):
    """gen(rng, bits) -> (q (M*K, SP), codes (Ct, kh, kw, M), C, H, W, d, stride, padding, at_bound)."""
    @case(id_)
    def make():
        q, codes, C, H, W, d, stride, padding, at_bound = gen(np.random.default_rng(zlib.crc32(id_.encode())), bits)
        Ct, kh, kw, M = codes.shape
        K = q.shape[0] // M
        OH, _, _, Wq = geometry.conv_geometry(H, W, kh, kw, stride, padding)
        L = OH * Wq

        def check(out):
            want = _convq.table_sums(q, codes, H, W, stride, padding)
            if at_bound:  # channels 0 and 1 sum +qmax and -qmax in every run: the accumulator's limit
                n_items, qmax = kh * kw * M, _convq.qmax_of(bits, kh * kw * M)
                assert (want[0] == n_items * qmax).all() and (want[1] == -n_items * qmax).all()
            np.testing.assert_array_equal(out[0].reshape(Ct, L), want)
        record = [_i32(4, bits, codes.itemsize, C, H, W, M, K, d, Ct, kh, kw, stride, padding, mb),
                  q, np.ascontiguousarray(codes)]
        return record, [(np.int32, Ct * L)], check


WHOLE = 1 << 30  # sub-spaces per tile: the whole table at once


def _bound_gen(kh, kw, M, K, C, H, W, stride, padding, Ct):
    """Tables of +-qmax entries; channel 0 picks the all +qmax rows, channel 1 the all -qmax rows, the rest random."""
    def gen(rng, bits):
        _, _, Hq, Wq = geometry.conv_geometry(H, W, kh, kw, stride, padding)
        qmax = _convq.qmax_of(bits, kh * kw * M)
        SP = stride * stride * Hq * Wq
        q = np.where(rng.random((M * K, SP)) < 0.5, -qmax, qmax).astype(np.int8 if bits == 8 else np.int16)
        q.reshape(M, K, SP)[:, 0] = qmax
        q.reshape(M, K, SP)[:, 1] = -qmax
        codes = rng.integers(0, K, (Ct, kh, kw, M)).astype(np.uint8)
        codes[0], codes[1] = 0, 1
        return q, codes, C, H, W, C // M, stride, padding, True
    return gen


ADVERSARIAL = next(m.args[1] for m in tc.test_adversarial_tables_sum_exactly.pytestmark
                   if m.name == "parametrize" and m.args[0] == "geom")  # (kh, kw, M, K, C, H, W, stride, padding)
for bits in (8, 16):
    for geom in ADVERSARIAL:  # test_conv8's adversarial geometries: whole table, tiles of 1 and 5 sub-spaces
        for mb in (WHOLE, 1, 5):
            _conv_sums_case(f"conv-sums-bound-int{bits}-{'x'.join(map(str, geom))}-tiles{mb if mb < WHOLE else 'all'}",
                            _bound_gen(*geom, Ct=4), bits, mb)
    for K in (2, 3, 5, 16, 17, 31, 32, 33, 64, 100, 128, 129, 255, 256):  # 3x3 taps, stride 2, a 7x10 map, d = 2
        _conv_sums_case(f"conv-sums-bound-int{bits}-K{K}", _bound_gen(3, 3, 3, K, 6, 7, 10, 2, 1, Ct=5), bits, WHOLE)


def _shape_table(name):
    def gen(rng, bits):
        C, H, W, Ct, k, stride, padding, groups, d, K = tc.SHAPES[name]
        Cg, Ctg = C // groups, Ct // groups  # the run-adds see one group
        M = Cg // d
        OH, OW, Hq, Wq = geometry.conv_geometry(H, W, k, k, stride, padding)
        qmax = _convq.qmax_of(bits, k * k * M)
        q = rng.integers(-qmax, qmax + 1, (M * K, stride * stride * Hq * Wq)).astype(np.int8 if bits == 8 else np.int16)
        codes = rng.integers(0, K, (Ctg, k, k, M)).astype(np.uint8 if K <= 256 else np.uint16)
        return q, codes, Cg, H, W, d, stride, padding, False
    return gen


for bits in (8, 16):
    for name in tc.SHAPES:  # random tables in [-qmax, qmax] on every conv shape of test_conv8.py
        for mb in (WHOLE, 1):
            tiles = "all" if mb == WHOLE else mb
            _conv_sums_case(f"conv-sums-int{bits}-{name}-tiles{tiles}", _shape_table(name), bits, mb)


def _add_conv_layer(name, bits, mode, relu):
    @case(f"conv-layer-int{bits}-{mode}{'-relu' if relu else ''}-{name}")
    def make():
        rng = np.random.default_rng(zlib.crc32(name.encode()) + bits)
        x, books, codes, bias, s, p, g = tc._case(rng, *tc.SHAPES[name], n=1)
        n, C, H, W = x.shape
        Ct, kh, kw, M = codes.shape
        K, d = books.shape[1:]
        OH, OW, _, _ = geometry.conv_geometry(H, W, kh, kw, s, p)

        def check(out):
            want = _convq.conv2d_int(x, books, codes, bias, s, p, g, bits=bits, scale_mode=mode, relu=relu)
            got = out[0].reshape(want.shape)
            assert rel_err(got, want) < 1e-5
            if mode == "exact":  # no Cauchy-Schwarz sqrt on the way: the same integer sums, the same floats
                np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(out[1].reshape(n, g), tc._scales(x, books, codes, s, p, g, bits, mode))
        record = [_i32(5, bits, codes.itemsize, int(mode == "exact"), int(relu), n, g, C // g, H, W, M, K, d, Ct // g,
                       kh, kw, s, p), x, books, codes, bias]
        return record, [(np.float32, n * Ct * OH * OW), (np.float32, n * g)], check


for name in tc.SHAPES:  # the whole layer on aarch64: phase split, table build and rounding, NEON run-adds
    for bits in (8, 16):
        _add_conv_layer(name, bits, "bound", relu=False)
for name in ("odd-sizes", "groups=2", "K=512-uint16"):
    _add_conv_layer(name, 8, "exact", relu=True)


# ------------------------------------------------------------- the driver run ----
@pytest.fixture(scope="session")
def neon_run(tmp_path_factory):
    """Build the driver, run it once on every case: (its first stdout line, {case id: (outputs, check)})."""
    tools = _tools()
    if tools is None:
        msg = ("AARCH64 TOOLS NOT INSTALLED: the NEON kernels are not tested (apt-get install "
               "g++-aarch64-linux-gnu qemu-user-static, or scripts/system-deps.sh)")
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {msg}")
        pytest.skip(msg)
    cxx, runner = tools
    tmp = tmp_path_factory.mktemp("neon")
    exe = tmp / "neon_driver"
    build = subprocess.run(["nice", "-n", "10", cxx, *CXXFLAGS, "-static", str(DRIVER), "-o", str(exe)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-4000:]
    made = [(id_, *make()) for id_, make in CASES]
    cases_bin = tmp / "cases.bin"
    with open(cases_bin, "wb") as f:
        for _, record, _, _ in made:
            for a in record:
                f.write(np.ascontiguousarray(a).tobytes())
    out_bin = tmp / "out.bin"
    run = subprocess.run([*runner, str(exe), str(cases_bin), str(out_bin)], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[-1] == f"records={len(made)}", run.stdout
    data = out_bin.read_bytes()
    pos, results = 0, {}
    for id_, _, outputs, check in made:
        got = []
        for dtype, count in outputs:
            got.append(np.frombuffer(data, dtype, count, pos))
            pos += np.dtype(dtype).itemsize * count
        results[id_] = (got, check)
    assert pos == len(data), "the driver wrote more than the cases read"
    return lines[0], results


def test_driver_runs_the_neon_paths(neon_run):
    """The aarch64 build takes NEON for the fc shuffles and for the conv run-adds (the generic entry point)."""
    assert neon_run[0] == "fc=neon conv=neon"


def test_every_neon_case_of_test_shuffle_is_here():
    """test_shuffle's kernel tests per ISA (those that skip without the ISA) are all enumerated here:
    a new one needs a case builder above. (test_unpack_inverts_pack, pure Python, runs on any host.)"""
    per_isa = {name for name, fn in vars(ts).items() if name.startswith("test_") and
               any(m.name == "parametrize" and m.args[1] is ts.ISA_PARAMS for m in getattr(fn, "pytestmark", []))}
    assert per_isa == {"test_sums_exact", "test_overflow_adversarial", "test_compiled_quantize_matches_numpy",
                       "test_linear_lut_u8"}
    assert N_FC == (2 * len(_grid(ts.test_sums_exact)) + len(_grid(ts.test_overflow_adversarial))
                    + 3 * len(_grid(ts.test_compiled_quantize_matches_numpy)) + 2 * len(_grid(ts.test_linear_lut_u8)))


@pytest.mark.parametrize("case_id", [c[0] for c in CASES])
def test_case(neon_run, case_id):
    got, check = neon_run[1][case_id]
    check(got)
