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
#include "conv_module.h"
#include "py_common.h"

using namespace qlsimd;
using namespace qlpy;
using namespace qlconv_py;

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

PyMethodDef METHODS[] = {
    {"isas", py_isas, METH_NOARGS, "isas() -> list of the instruction sets this CPU and build can run."},
    {"accumulate", py_accumulate, METH_VARARGS, DOC_ACCUMULATE},
    {"quantize", py_quantize, METH_VARARGS, DOC_QUANTIZE},
    {"linear", py_linear, METH_VARARGS, DOC_LINEAR},
    {"conv_isas", py_conv_isas, METH_NOARGS, "conv_isas() -> instruction sets of the integer conv kernels here."},
    {"conv2d", py_conv2d, METH_VARARGS, DOC_CONV2D},
    {"conv_table", py_conv_table, METH_VARARGS, DOC_CONV_TABLE},
    {"conv_sums", py_conv_sums, METH_VARARGS, DOC_CONV_SUMS},
    {"direct_block", py_direct_block, METH_VARARGS, "direct_block(isa) -> output channels per block of direct_conv2d's packed weight."},
    {"direct_conv2d", py_direct_conv2d, METH_VARARGS, DOC_DIRECT_CONV2D},
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
