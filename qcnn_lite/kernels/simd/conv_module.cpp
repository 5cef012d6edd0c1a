// The integer look-up-table conv kernels (conv_driver.h) as functions of the _lut_simd module;
// the module's method table is in _lut_simd.cpp. Every size reaching a kernel is checked here.
#include "conv_module.h"

#include <cstring>
#include <type_traits>

#include "conv_driver.h"
#include "direct_conv.h"
#include "py_common.h"

using namespace qlpy;

namespace qlconv_py {

namespace {
const char* const CONV_ISA_NAMES[] = {"generic", "avx2", "avx512bw"};

bool parse_conv_isa(const char* name, qlconv::ConvIsa* isa) {
    for (int i = 0; i < 3; i++)
        if (std::strcmp(name, CONV_ISA_NAMES[i]) == 0) {
            *isa = (qlconv::ConvIsa)i;
            if (!qlconv::conv_isa_supported(*isa)) {
                PyErr_Format(PyExc_ValueError, "instruction set %s is not available on this CPU/build", name);
                return false;
            }
            return true;
        }
    PyErr_Format(PyExc_ValueError, "unknown conv instruction set %s (generic, avx2, avx512bw)", name);
    return false;
}

// The geometry of qcnn_lite.kernels.geometry.conv_geometry, recomputed here so that no
// size from Python can make a run leave its table. Ct is the output channels of one group.
bool conv_geometry(int C, int H, int W, int M, int K, int d, int Ct, int kh, int kw, int stride, int padding,
                   qlconv::Geometry* g) {
    const long long lim = 1 << 20;
    if (M < 1 || K < 1 || K > 65536 || d < 1 || (long long)M * d != C || Ct < 1 || kh < 1 || kw < 1 || stride < 1 ||
        padding < 0 || H < 1 || W < 1 || H > lim || W > lim || kh > lim || kw > lim || stride > lim || padding > lim) {
        PyErr_SetString(PyExc_ValueError, "conv: inconsistent shapes (need C = M*d, K <= 65536, positive sizes)");
        return false;
    }
    const int OH = (H + 2 * padding - kh) / stride + 1, OW = (W + 2 * padding - kw) / stride + 1;
    if (H + 2 * padding < kh || W + 2 * padding < kw || OH < 1 || OW < 1) {
        PyErr_SetString(PyExc_ValueError, "conv: the kernel does not fit the padded input");
        return false;
    }
    *g = qlconv::geometry_of(C, H, W, M, K, d, Ct, kh, kw, stride, padding);
    if ((double)M * K * g->PP > 1e10 || qlconv::qmax_of(8, kh * kw * M) < 1) {
        PyErr_SetString(PyExc_ValueError, "conv: table too large, or kh*kw*M > 32767 (an int16 sum could overflow)");
        return false;
    }
    return true;
}

}  // namespace

PyObject* py_conv_isas(PyObject*, PyObject*) {
    return supported_names(CONV_ISA_NAMES, 3, [](int i) { return qlconv::conv_isa_supported((qlconv::ConvIsa)i); });
}

extern const char DOC_CONV2D[] =
    "conv2d(isa, x, n, groups, C, H, W, codebooks, M, K, d, codes, code_bytes, Ct, kh, kw, bias, stride,\n"
    "       padding, bits, exact, relu, out, scales[, tile_bytes[, times]])\n\n"
    "The whole integer-table conv layer (see conv_kernels.h). C, Ct: channels of ONE group;\n"
    "x float32 (n, groups*C, H, W); codebooks float32 (M, K, d); codes uint8/uint16\n"
    "(code_bytes 1/2) (groups*Ct, kh, kw, M), validated < K by the caller; bias float32\n"
    "(groups*Ct,); bits 8 (int16 sums) or 16 (int32 sums); exact 0 = Cauchy-Schwarz scale,\n"
    "1 = max |entry|; relu 0/1. Writes out float32 (n, groups*Ct, OH, OW), scales float32 (n, groups).\n"
    "Tables over tile_bytes (<= 0: the default, 1 MiB) are built and summed in tiles of sub-spaces.\n"
    "times float64 (4,), if given, receives the seconds spent in the phases scale, build, adds, epilogue.";

PyObject* py_conv2d(PyObject*, PyObject* args) {
    const char* isa_name;
    Py_buffer x, cb, codes, bias, out, scales, times;
    times.buf = nullptr;
    int n, groups, C, H, W, M, K, d, code_bytes, Ct, kh, kw, stride, padding, bits, exact, relu;
    Py_ssize_t tile = 0;
    if (!PyArg_ParseTuple(args, "sy*iiiiiy*iiiy*iiiiy*iiiiiw*w*|nw*", &isa_name, &x, &n, &groups, &C, &H, &W, &cb, &M,
                          &K, &d, &codes, &code_bytes, &Ct, &kh, &kw, &bias, &stride, &padding, &bits, &exact, &relu,
                          &out, &scales, &tile, &times))
        return nullptr;
    Buffers hold;
    hold.held = {&x, &cb, &codes, &bias, &out, &scales};
    if (times.buf) hold.held.push_back(&times);
    if (times.buf && !check_len("times", times, qlconv::N_PHASES, sizeof(double))) return nullptr;
    qlconv::ConvIsa isa;
    qlconv::Geometry g;
    if (!parse_conv_isa(isa_name, &isa) || !conv_geometry(C, H, W, M, K, d, Ct, kh, kw, stride, padding, &g))
        return nullptr;
    if (n < 0 || groups < 1 || (bits != 8 && bits != 16) || (code_bytes != 1 && code_bytes != 2) ||
        (code_bytes == 1 && K > 256)) {
        PyErr_SetString(PyExc_ValueError, "conv2d: need n >= 0, groups >= 1, bits 8|16, code_bytes 1|2 (2 for K > 256)");
        return nullptr;
    }
    const size_t tile_bytes = tile < 1 ? qlconv::TILE_BYTES : (size_t)tile;
    double* ts = (double*)times.buf;
    const size_t G = (size_t)groups;
    if (!check_len("x", x, n * G * C * H * W, 4) || !check_len("codebooks", cb, (size_t)M * K * d, 4) ||
        !check_len("codes", codes, G * Ct * kh * kw * M, code_bytes) || !check_len("bias", bias, G * Ct, 4) ||
        !check_len("out", out, n * G * Ct * g.OH * g.OW, 4) || !check_len("scales", scales, n * G, 4))
        return nullptr;
    const float* xs = (const float*)x.buf;
    const float* cbs = (const float*)cb.buf;
    const float* bs = (const float*)bias.buf;
    float* os = (float*)out.buf;
    float* ss = (float*)scales.buf;
    Py_BEGIN_ALLOW_THREADS
    if (bits == 8) {
        if (code_bytes == 1)
            qlconv::conv2d<int8_t, int16_t, uint8_t>(isa, xs, n, groups, cbs, (const uint8_t*)codes.buf, bs, g, 8, exact, relu, os, ss, tile_bytes, ts);
        else
            qlconv::conv2d<int8_t, int16_t, uint16_t>(isa, xs, n, groups, cbs, (const uint16_t*)codes.buf, bs, g, 8, exact, relu, os, ss, tile_bytes, ts);
    } else {
        if (code_bytes == 1)
            qlconv::conv2d<int16_t, int32_t, uint8_t>(isa, xs, n, groups, cbs, (const uint8_t*)codes.buf, bs, g, 16, exact, relu, os, ss, tile_bytes, ts);
        else
            qlconv::conv2d<int16_t, int32_t, uint16_t>(isa, xs, n, groups, cbs, (const uint16_t*)codes.buf, bs, g, 16, exact, relu, os, ss, tile_bytes, ts);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

extern const char DOC_CONV_TABLE[] =
    "conv_table(isa, x, C, H, W, codebooks, M, K, d, kh, kw, stride, padding, bits, exact, tab) -> scale\n\n"
    "The quantized table of ONE image and group, x float32 (C, H, W), into tab int8/int16\n"
    "(M*K, SP), SP = stride*stride*Hq*Wq: the integer core, for tests.";

PyObject* py_conv_table(PyObject*, PyObject* args) {
    const char* isa_name;
    Py_buffer x, cb, tab;
    int C, H, W, M, K, d, kh, kw, stride, padding, bits, exact;
    if (!PyArg_ParseTuple(args, "sy*iiiy*iiiiiiiiiw*", &isa_name, &x, &C, &H, &W, &cb, &M, &K, &d, &kh, &kw, &stride,
                          &padding, &bits, &exact, &tab))
        return nullptr;
    Buffers hold;
    hold.held = {&x, &cb, &tab};
    qlconv::ConvIsa isa;
    qlconv::Geometry g;
    if (!parse_conv_isa(isa_name, &isa) || !conv_geometry(C, H, W, M, K, d, 1, kh, kw, stride, padding, &g))
        return nullptr;
    if (bits != 8 && bits != 16) {
        PyErr_SetString(PyExc_ValueError, "conv_table: bits must be 8 or 16");
        return nullptr;
    }
    const size_t qb = bits / 8, rows = (size_t)M * K;
    if (!check_len("x", x, (size_t)C * H * W, 4) || !check_len("codebooks", cb, rows * d, 4) ||
        !check_len("tab", tab, rows * g.SP, qb))
        return nullptr;
    float s;
    Py_BEGIN_ALLOW_THREADS
    qlconv::ConvScratch& sc = qlconv::conv_scratch();
    if (bits == 8) {
        int8_t* t = qlconv::table_buffer<int8_t>(sc, qlconv::table_size(g));
        s = qlconv::quantized_table<int8_t>(isa, (const float*)x.buf, (const float*)cb.buf, g, 8, exact, sc, t);
        for (size_t r = 0; r < rows; r++) std::memcpy((int8_t*)tab.buf + r * g.SP, t + r * g.PP, g.SP);
    } else {
        int16_t* t = qlconv::table_buffer<int16_t>(sc, qlconv::table_size(g));
        s = qlconv::quantized_table<int16_t>(isa, (const float*)x.buf, (const float*)cb.buf, g, 16, exact, sc, t);
        for (size_t r = 0; r < rows; r++) std::memcpy((int16_t*)tab.buf + r * g.SP, t + r * g.PP, 2 * g.SP);
    }
    Py_END_ALLOW_THREADS
    return PyFloat_FromDouble(s);
}

extern const char DOC_CONV_SUMS[] =
    "conv_sums(isa, tab, C, H, W, M, K, d, codes, code_bytes, Ct, kh, kw, stride, padding, bits, out[, mb])\n\n"
    "Integer sums of one group from a given table tab int8/int16 (M*K, SP) (any entries with\n"
    "|q| <= qmax): out int32 (Ct, OH*Wq), columns >= OW scratch; mb: sub-spaces per tile. For tests.";

PyObject* py_conv_sums(PyObject*, PyObject* args) {
    const char* isa_name;
    Py_buffer tab, codes, out;
    int C, H, W, M, K, d, code_bytes, Ct, kh, kw, stride, padding, bits, mb = 1 << 30;
    if (!PyArg_ParseTuple(args, "sy*iiiiiiy*iiiiiiiw*|i", &isa_name, &tab, &C, &H, &W, &M, &K, &d, &codes, &code_bytes,
                          &Ct, &kh, &kw, &stride, &padding, &bits, &out, &mb))
        return nullptr;
    Buffers hold;
    hold.held = {&tab, &codes, &out};
    qlconv::ConvIsa isa;
    qlconv::Geometry g;
    if (!parse_conv_isa(isa_name, &isa) || !conv_geometry(C, H, W, M, K, d, Ct, kh, kw, stride, padding, &g))
        return nullptr;
    if ((bits != 8 && bits != 16) || (code_bytes != 1 && code_bytes != 2)) {
        PyErr_SetString(PyExc_ValueError, "conv_sums: bits 8|16, code_bytes 1|2");
        return nullptr;
    }
    const size_t qb = bits / 8, rows = (size_t)M * K;
    if (!check_len("tab", tab, rows * g.SP, qb) || !check_len("codes", codes, (size_t)Ct * kh * kw * M, code_bytes) ||
        !check_len("out", out, (size_t)Ct * g.L, 4))
        return nullptr;
    // The caller validated codes < K; check again here, cheaply, since this entry takes any table.
    for (size_t i = 0, e = (size_t)Ct * kh * kw * M; i < e; i++) {
        const int c = code_bytes == 1 ? ((const uint8_t*)codes.buf)[i] : ((const uint16_t*)codes.buf)[i];
        if (c >= K) {
            PyErr_Format(PyExc_ValueError, "conv_sums: code %d >= K=%d", c, K);
            return nullptr;
        }
    }
    int32_t* o = (int32_t*)out.buf;
    Py_BEGIN_ALLOW_THREADS
    if (bits == 8) {
        if (code_bytes == 1)
            qlconv::sums_of_table<int8_t, int16_t>(isa, (const int8_t*)tab.buf, (const uint8_t*)codes.buf, g, mb, o);
        else
            qlconv::sums_of_table<int8_t, int16_t>(isa, (const int8_t*)tab.buf, (const uint16_t*)codes.buf, g, mb, o);
    } else {
        if (code_bytes == 1)
            qlconv::sums_of_table<int16_t, int32_t>(isa, (const int16_t*)tab.buf, (const uint8_t*)codes.buf, g, mb, o);
        else
            qlconv::sums_of_table<int16_t, int32_t>(isa, (const int16_t*)tab.buf, (const uint16_t*)codes.buf, g, mb, o);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

extern const char DOC_DIRECT_CONV2D[] =
    "direct_conv2d(isa, x, n, groups, C, H, W, wp, Ct, kh, kw, bias, stride, padding, relu, out)\n\n"
    "Direct float convolution (see direct_conv.h). C, Ct: channels of ONE group; x float32\n"
    "(n, groups*C, H, W); wp float32 (groups, ceil(Ct/B), C*kh*kw, B), B = direct_block(isa), the\n"
    "weight packed in (c, i, j) item order; bias float32 (groups*Ct,); writes out float32\n"
    "(n, groups*Ct, OH, OW).";

PyObject* py_direct_block(PyObject*, PyObject* args) {
    const char* isa_name;
    qlconv::ConvIsa isa;
    if (!PyArg_ParseTuple(args, "s", &isa_name) || !parse_conv_isa(isa_name, &isa)) return nullptr;
    return PyLong_FromLong(qlconv::direct_ocb(isa));
}

PyObject* py_direct_conv2d(PyObject*, PyObject* args) {
    const char* isa_name;
    Py_buffer x, wp, bias, out;
    int n, groups, C, H, W, Ct, kh, kw, stride, padding, relu;
    if (!PyArg_ParseTuple(args, "sy*iiiiiy*iiiy*iiiw*", &isa_name, &x, &n, &groups, &C, &H, &W, &wp, &Ct, &kh, &kw,
                          &bias, &stride, &padding, &relu, &out))
        return nullptr;
    Buffers hold;
    hold.held = {&x, &wp, &bias, &out};
    qlconv::ConvIsa isa;
    qlconv::Geometry g;
    // one sub-space of all C channels, one codeword: the table geometry, of which only the
    // phase-split input is used
    if (!parse_conv_isa(isa_name, &isa) || !conv_geometry(C, H, W, 1, 1, C, Ct, kh, kw, stride, padding, &g))
        return nullptr;
    if (n < 0 || groups < 1 || (double)C * kh * kw > 1e8) {
        PyErr_SetString(PyExc_ValueError, "direct_conv2d: need n >= 0, groups >= 1, C*kh*kw <= 1e8");
        return nullptr;
    }
    const size_t G = (size_t)groups, ocb = (size_t)qlconv::direct_ocb(isa);
    const size_t wp_items = G * ((size_t)(Ct + ocb - 1) / ocb) * C * kh * kw * ocb;
    if (!check_len("x", x, n * G * C * H * W, 4) || !check_len("wp", wp, wp_items, 4) ||
        !check_len("bias", bias, G * Ct, 4) || !check_len("out", out, n * G * Ct * g.OH * g.OW, 4))
        return nullptr;
    Py_BEGIN_ALLOW_THREADS
    qlconv::direct_conv2d(isa, (const float*)x.buf, n, groups, (const float*)wp.buf, (const float*)bias.buf, g,
                          relu != 0, (float*)out.buf);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

}  // namespace qlconv_py
