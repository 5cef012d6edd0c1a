// qcnn_lite.kernels.simd._lut_simd: the byte-shuffle fc kernels of
// lut_kernels.h as a CPython extension (plain C API + buffer protocol).
//
// One shared object serves every x86-64 CPU: the AVX2 and AVX-512 VBMI
// kernels are compiled with __attribute__((target)) and picked at run time
// (__builtin_cpu_supports); on aarch64 NEON is baseline. Every function takes
// the instruction set by name so Python can force one (QCNN_LITE_TARGET).
//
// Arrays arrive as C-contiguous buffers with their shapes as ints; the
// lengths are checked here against the shapes. The Python wrapper
// (qcnn_lite.kernels._shuffle) allocates the outputs and validates the codes.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstring>
#include <vector>

#include "lut_kernels.h"
#include "conv_driver.h"

using namespace qlsimd;

namespace {

const char* const ISA_NAMES[] = {"scalar", "avx2", "avx512vbmi", "neon"};

bool parse_isa(const char* name, Isa* isa) {
    for (int i = 0; i < 4; i++)
        if (std::strcmp(name, ISA_NAMES[i]) == 0) {
            *isa = (Isa)i;
            if (!isa_supported(*isa)) {
                PyErr_Format(PyExc_ValueError, "instruction set %s is not available on this CPU/build", name);
                return false;
            }
            return true;
        }
    PyErr_Format(PyExc_ValueError, "unknown instruction set %s (scalar, avx2, avx512vbmi, neon)", name);
    return false;
}

// RAII for the Py_buffers of one call.
struct Buffers {
    std::vector<Py_buffer*> held;
    ~Buffers() {
        for (Py_buffer* b : held) PyBuffer_Release(b);
    }
};

bool check_len(const char* name, const Py_buffer& b, size_t items, size_t itemsize) {
    if ((size_t)b.len != items * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s has %zd bytes, expected %zu", name, b.len, items * itemsize);
        return false;
    }
    return true;
}

// 32-bit sums stay exact while 255 * M < 2^32.
constexpr int MAX_M = 16843009;

bool check_shape(int M, int K, int n_out) {
    if (M < 1 || M > MAX_M || K < 1 || K > 256 || n_out < 1) {
        PyErr_Format(PyExc_ValueError,
                     "need 1 <= M <= %d, 1 <= K <= 256, n_out >= 1 (got M=%d K=%d n_out=%d)", MAX_M, M, K, n_out);
        return false;
    }
    return true;
}

bool check_codes(const Py_buffer& codes, Isa isa, int M, int K, int n_out, int block) {
    if (block < 1 || block > 1024 || (isa != SCALAR && block != block_of(isa))) {
        PyErr_Format(PyExc_ValueError, "codes packed in blocks of %d cannot run on %s (needs %d)", block,
                     ISA_NAMES[isa], block_of(isa));
        return false;
    }
    return check_len("codes", codes, packed_size(n_out, M, K, block), 1);
}

// Per-thread scratch, kept between calls: fc6's float table is 288 KiB, and a
// fresh std::vector of that size is a fresh mmap with its page faults each call
// (that cost 0.05-0.1 ms a layer, as much as the shuffle sums of fc8).
struct Scratch {
    std::vector<uint8_t> q;
    std::vector<float> lut, mn;
    std::vector<uint32_t> isum;
};

Scratch& scratch() {
    thread_local Scratch s;
    return s;
}

template <class T>
T* grow(std::vector<T>& v, size_t n) {
    if (v.size() < n) v.resize(n);
    return v.data();
}

// The float table and its 8-bit form; per ISA so the loops vectorize with its width
// (prep_generic, the plain loops, is in lut_kernels.h).
#ifdef QL_X86
QL_TARGET_AVX2 float prep_avx2(const float* x, const float* cb, int M, int K, int d, int Kp, float* lut, float* mn,
                               uint8_t* q, double* off) {
    build_table_avx2(x, cb, M, K, d, lut);
    return quantize_table_avx2(lut, M, K, Kp, q, mn, off);
}
QL_TARGET_AVX2 float quantize_avx2(const float* lut, int M, int K, uint8_t* q, float* mn, double* off) {
    return quantize_table_avx2(lut, M, K, K, q, mn, off);
}
#endif

// The names[i] whose supported(i) holds, as a Python list (new reference; nullptr on error).
template <typename Supported>
PyObject* supported_names(const char* const* names, int n, Supported supported) {
    PyObject* out = PyList_New(0);
    if (!out) return nullptr;
    for (int i = 0; i < n; i++)
        if (supported(i)) {
            PyObject* s = PyUnicode_FromString(names[i]);
            if (!s || PyList_Append(out, s) < 0) {
                Py_XDECREF(s);
                Py_DECREF(out);
                return nullptr;
            }
            Py_DECREF(s);
        }
    return out;
}

PyObject* py_isas(PyObject*, PyObject*) {
    return supported_names(ISA_NAMES, 4, [](int i) { return isa_supported((Isa)i); });
}

const char DOC_ACCUMULATE[] =
    "accumulate(isa, q, M, K, codes, n_out, block, out)\n\n"
    "out[o] = sum_m q[m, code[o, m]] (int32, n_out): q uint8 (M, K), codes packed by\n"
    "_shuffle.pack_codes in blocks of `block` outputs. The integer core, for tests.";

PyObject* py_accumulate(PyObject*, PyObject* args) {
    const char* isa_name;
    Py_buffer q, codes, out;
    int M, K, n_out, block;
    if (!PyArg_ParseTuple(args, "sy*iiy*iiw*", &isa_name, &q, &M, &K, &codes, &n_out, &block, &out)) return nullptr;
    Buffers hold;
    hold.held = {&q, &codes, &out};
    Isa isa;
    if (!parse_isa(isa_name, &isa) || !check_shape(M, K, n_out) || !check_len("q", q, (size_t)M * K, 1) ||
        !check_codes(codes, isa, M, K, n_out, block) || !check_len("out", out, (size_t)n_out, 4))
        return nullptr;
    const int Kp = kp_of(K, isa), Mp = mp_of(M, K), nb = (n_out + block - 1) / block;
    Scratch& sc = scratch();
    uint8_t* qp = grow(sc.q, (size_t)Mp * Kp);
    uint32_t* isum = grow(sc.isum, (size_t)nb * block);
    Py_BEGIN_ALLOW_THREADS
    std::memset(qp, 0, (size_t)Mp * Kp);
    for (int m = 0; m < M; m++) std::memcpy(qp + (size_t)m * Kp, (const uint8_t*)q.buf + (size_t)m * K, K);
    accumulate(isa, qp, M, K, (const uint8_t*)codes.buf, nb, isum, block);
    std::memcpy(out.buf, isum, (size_t)n_out * 4);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

const char DOC_QUANTIZE[] =
    "quantize(isa, lut, M, K, q) -> (scale, offset_sum)\n\n"
    "The 8-bit table of lut float32 (M, K) into q uint8 (M, K); see lut_kernels.h.";

PyObject* py_quantize(PyObject*, PyObject* args) {
    const char* isa_name;
    Py_buffer lut, q;
    int M, K;
    if (!PyArg_ParseTuple(args, "sy*iiw*", &isa_name, &lut, &M, &K, &q)) return nullptr;
    Buffers hold;
    hold.held = {&lut, &q};
    Isa isa;
    if (!parse_isa(isa_name, &isa) || !check_shape(M, K, 1) || !check_len("lut", lut, (size_t)M * K, 4) || !check_len("q", q, (size_t)M * K, 1))
        return nullptr;
    float* mn = grow(scratch().mn, (size_t)M);
    double off = 0;
    float scale;
    Py_BEGIN_ALLOW_THREADS
    std::memset(q.buf, 0, (size_t)M * K);
#ifdef QL_X86
    if (isa != SCALAR)
        scale = quantize_avx2((const float*)lut.buf, M, K, (uint8_t*)q.buf, mn, &off);
    else
#endif
        scale = quantize_table((const float*)lut.buf, M, K, K, (uint8_t*)q.buf, mn, &off);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(dd)", (double)scale, off);
}

const char DOC_LINEAR[] =
    "linear(isa, x, n, codebooks, M, K, d, codes, n_out, block, bias, y)\n\n"
    "The whole fc layer per input row: float table <x block, codeword>, its 8-bit\n"
    "form, the shuffle sums, y[r, o] = scale * isum[o] + (offset_sum + bias[o]).\n"
    "x float32 (n, M*d), codebooks float32 (M, K, d), bias float32 (n_out,),\n"
    "y float32 (n, n_out) written in place.";

PyObject* py_linear(PyObject*, PyObject* args) {
    const char* isa_name;
    Py_buffer x, cb, codes, bias, y;
    int n, M, K, d, n_out, block;
    if (!PyArg_ParseTuple(args, "sy*iy*iiiy*iiy*w*", &isa_name, &x, &n, &cb, &M, &K, &d, &codes, &n_out, &block,
                          &bias, &y))
        return nullptr;
    Buffers hold;
    hold.held = {&x, &cb, &codes, &bias, &y};
    Isa isa;
    if (!parse_isa(isa_name, &isa) || !check_shape(M, K, n_out)) return nullptr;
    if (n < 0 || d < 1) {
        PyErr_Format(PyExc_ValueError, "need n >= 0 and d >= 1 (got n=%d d=%d)", n, d);
        return nullptr;
    }
    if (!check_len("x", x, (size_t)n * M * d, 4) || !check_len("codebooks", cb, (size_t)M * K * d, 4) ||
        !check_codes(codes, isa, M, K, n_out, block) || !check_len("bias", bias, (size_t)n_out, 4) ||
        !check_len("y", y, (size_t)n * n_out, 4))
        return nullptr;
    const int Kp = kp_of(K, isa), Mp = mp_of(M, K), nb = (n_out + block - 1) / block;
    Scratch& sc = scratch();
    uint8_t* qp = grow(sc.q, (size_t)Mp * Kp);
    float* lut = grow(sc.lut, (size_t)M * K);
    float* mn = grow(sc.mn, (size_t)M);
    uint32_t* isum = grow(sc.isum, (size_t)nb * block);
    const float* xs = (const float*)x.buf;
    const float* b = (const float*)bias.buf;
    float* ys = (float*)y.buf;
    const uint8_t* cs = (const uint8_t*)codes.buf;
    const float* cbs = (const float*)cb.buf;
    Py_BEGIN_ALLOW_THREADS
    std::memset(qp, 0, (size_t)Mp * Kp);  // the padding entries the shuffles read must be 0
#ifdef QL_X86
    if (isa != SCALAR)
        linear_layer(isa, prep_avx2, xs, n, cbs, M, K, d, cs, n_out, block, b, ys, qp, lut, mn, isum);
    else
#endif
        linear_layer(isa, prep_generic, xs, n, cbs, M, K, d, cs, n_out, block, b, ys, qp, lut, mn, isum);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

// ---------------------------------------------------------------- integer conv ----
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

PyObject* py_conv_isas(PyObject*, PyObject*) {
    return supported_names(CONV_ISA_NAMES, 3, [](int i) { return qlconv::conv_isa_supported((qlconv::ConvIsa)i); });
}

// The geometry of qcnn_lite.kernels._compiled.conv_geometry, recomputed here so that no
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

const char DOC_CONV2D[] =
    "conv2d(isa, x, n, groups, C, H, W, codebooks, M, K, d, codes, code_bytes, Ct, kh, kw, bias, stride,\n"
    "       padding, bits, exact, relu, out, scales[, tile_bytes])\n\n"
    "The whole integer-table conv layer (see conv_kernels.h). C, Ct: channels of ONE group;\n"
    "x float32 (n, groups*C, H, W); codebooks float32 (M, K, d); codes uint8/uint16\n"
    "(code_bytes 1/2) (groups*Ct, kh, kw, M), validated < K by the caller; bias float32\n"
    "(groups*Ct,); bits 8 (int16 sums) or 16 (int32 sums); exact 0 = Cauchy-Schwarz scale,\n"
    "1 = max |entry|; relu 0/1. Writes out float32 (n, groups*Ct, OH, OW), scales float32 (n, groups).\n"
    "Tables over tile_bytes (default 1 MiB) are built and summed in tiles of sub-spaces.";

PyObject* py_conv2d(PyObject*, PyObject* args) {
    const char* isa_name;
    Py_buffer x, cb, codes, bias, out, scales;
    int n, groups, C, H, W, M, K, d, code_bytes, Ct, kh, kw, stride, padding, bits, exact, relu;
    Py_ssize_t tile = (Py_ssize_t)qlconv::TILE_BYTES;
    if (!PyArg_ParseTuple(args, "sy*iiiiiy*iiiy*iiiiy*iiiiiw*w*|n", &isa_name, &x, &n, &groups, &C, &H, &W, &cb, &M, &K,
                          &d, &codes, &code_bytes, &Ct, &kh, &kw, &bias, &stride, &padding, &bits, &exact, &relu, &out,
                          &scales, &tile))
        return nullptr;
    Buffers hold;
    hold.held = {&x, &cb, &codes, &bias, &out, &scales};
    qlconv::ConvIsa isa;
    qlconv::Geometry g;
    if (!parse_conv_isa(isa_name, &isa) || !conv_geometry(C, H, W, M, K, d, Ct, kh, kw, stride, padding, &g))
        return nullptr;
    if (n < 0 || groups < 1 || (bits != 8 && bits != 16) || (code_bytes != 1 && code_bytes != 2) ||
        (code_bytes == 1 && K > 256)) {
        PyErr_SetString(PyExc_ValueError, "conv2d: need n >= 0, groups >= 1, bits 8|16, code_bytes 1|2 (2 for K > 256)");
        return nullptr;
    }
    const size_t tile_bytes = tile < 1 ? 1 : (size_t)tile;
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
            qlconv::conv2d<int8_t, int16_t, uint8_t>(isa, xs, n, groups, cbs, (const uint8_t*)codes.buf, bs, g, 8, exact, relu, os, ss, tile_bytes);
        else
            qlconv::conv2d<int8_t, int16_t, uint16_t>(isa, xs, n, groups, cbs, (const uint16_t*)codes.buf, bs, g, 8, exact, relu, os, ss, tile_bytes);
    } else {
        if (code_bytes == 1)
            qlconv::conv2d<int16_t, int32_t, uint8_t>(isa, xs, n, groups, cbs, (const uint8_t*)codes.buf, bs, g, 16, exact, relu, os, ss, tile_bytes);
        else
            qlconv::conv2d<int16_t, int32_t, uint16_t>(isa, xs, n, groups, cbs, (const uint16_t*)codes.buf, bs, g, 16, exact, relu, os, ss, tile_bytes);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

const char DOC_CONV_TABLE[] =
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

const char DOC_CONV_SUMS[] =
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

PyMethodDef METHODS[] = {
    {"isas", py_isas, METH_NOARGS, "isas() -> list of the instruction sets this CPU and build can run."},
    {"accumulate", py_accumulate, METH_VARARGS, DOC_ACCUMULATE},
    {"quantize", py_quantize, METH_VARARGS, DOC_QUANTIZE},
    {"linear", py_linear, METH_VARARGS, DOC_LINEAR},
    {"conv_isas", py_conv_isas, METH_NOARGS, "conv_isas() -> instruction sets of the integer conv kernels here."},
    {"conv2d", py_conv2d, METH_VARARGS, DOC_CONV2D},
    {"conv_table", py_conv_table, METH_VARARGS, DOC_CONV_TABLE},
    {"conv_sums", py_conv_sums, METH_VARARGS, DOC_CONV_SUMS},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "_lut_simd",
                      "Byte-shuffle look-up kernels for quantized fc layers (see lut_kernels.h).", -1, METHODS,
                      nullptr, nullptr, nullptr, nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__lut_simd(void) {
#ifdef QL_X86
    __builtin_cpu_init();
#endif
    return PyModule_Create(&MODULE);
}
