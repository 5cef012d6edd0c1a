// Test driver of the aarch64 kernels: cross-built (aarch64-linux-gnu-g++ -O2 -march=armv8-a
// -ffp-contract=off) and run under qemu-user by tests/test_neon_qemu.py, which writes the
// cases, runs this once on all of them and checks every result against its numpy reference.
//
//   neon_driver CASES OUT   -> prints "fc=<isa> conv=<run-add>"; OUT gets the results
//
// It calls the same header functions as the extension _lut_simd.cpp (accumulate,
// quantize_table, linear_layer, sums_of_table, conv2d), with the same padding and scratch.
// CASES is a stream of records in native byte order (little-endian on both ends): an int32
// op, its int32 parameters, then its arrays, tightly packed. OUT gets each record's arrays
// in the same order:
//   1 fc sums    isa M K n_out block | q u8 (M, K), codes u8 (packed)   -> u32 (n_out)
//   2 quantize   M K | lut f32 (M, K)                                    -> u8 (M, K), f32 scale, f64 offset
//   3 fc layer   isa n M K d n_out block | x f32 (n, M*d), codebooks f32 (M, K, d), codes u8 (packed),
//                bias f32 (n_out)                                         -> f32 (n, n_out)
//   4 conv sums  bits code_bytes C H W M K d Ct kh kw stride padding mb | tab int8/int16 (M*K, SP),
//                codes u8/u16 (Ct, kh, kw, M)                             -> i32 (Ct, OH*Wq)
//   5 conv layer bits code_bytes exact relu n groups C H W M K d Ct kh kw stride padding |
//                x f32 (n, groups*C, H, W), codebooks f32 (M, K, d), codes (groups*Ct, kh, kw, M),
//                bias f32 (groups*Ct)                                     -> f32 (n, groups*Ct, OH, OW),
//                                                                            f32 scales (n, groups)
// isa is lut_kernels.h's Isa number (0 scalar, 3 neon). C, Ct: one group's channels.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "conv_driver.h"
#include "lut_kernels.h"

namespace {

FILE* in_f;
FILE* out_f;
long n_records = 0;

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "neon_driver: record %ld: %s\n", n_records, what);
    std::exit(2);
}

template <class T>
std::vector<T> read(size_t n) {
    std::vector<T> v(n);
    if (n && std::fread(v.data(), sizeof(T), n, in_f) != n) fail("truncated input");
    return v;
}

int arg() { return read<int32_t>(1)[0]; }

template <class T>
void write(const T* p, size_t n) {
    if (n && std::fwrite(p, sizeof(T), n, out_f) != n) fail("cannot write the output");
}

void fc_sums() {
    const int isa = arg(), M = arg(), K = arg(), n_out = arg(), block = arg();
    const qlsimd::Isa is = (qlsimd::Isa)isa;
    if (!qlsimd::isa_supported(is) || (is != qlsimd::SCALAR && block != qlsimd::block_of(is))) fail("bad isa/block");
    const std::vector<uint8_t> q = read<uint8_t>((size_t)M * K);
    const std::vector<uint8_t> codes = read<uint8_t>(qlsimd::packed_size(n_out, M, K, block));
    const int Kp = qlsimd::kp_of(K, is), Mp = qlsimd::mp_of(M, K), nb = (n_out + block - 1) / block;
    std::vector<uint8_t> qp((size_t)Mp * Kp, 0);  // as the extension pads q: rows of Kp, zero padding
    for (int m = 0; m < M; m++) std::copy(&q[(size_t)m * K], &q[(size_t)m * K] + K, &qp[(size_t)m * Kp]);
    std::vector<uint32_t> isum((size_t)nb * block);
    qlsimd::accumulate(is, qp.data(), M, K, codes.data(), nb, isum.data(), block);
    write(isum.data(), (size_t)n_out);
}

void fc_quantize() {
    const int M = arg(), K = arg();
    const std::vector<float> lut = read<float>((size_t)M * K);
    std::vector<uint8_t> q((size_t)M * K, 0);
    std::vector<float> mn(M);
    double off = 0;
    const float scale = qlsimd::quantize_table(lut.data(), M, K, K, q.data(), mn.data(), &off);
    write(q.data(), q.size());
    write(&scale, 1);
    write(&off, 1);
}

void fc_layer() {
    const int isa = arg(), n = arg(), M = arg(), K = arg(), d = arg(), n_out = arg(), block = arg();
    const qlsimd::Isa is = (qlsimd::Isa)isa;
    if (!qlsimd::isa_supported(is) || (is != qlsimd::SCALAR && block != qlsimd::block_of(is))) fail("bad isa/block");
    const std::vector<float> x = read<float>((size_t)n * M * d), cb = read<float>((size_t)M * K * d);
    const std::vector<uint8_t> codes = read<uint8_t>(qlsimd::packed_size(n_out, M, K, block));
    const std::vector<float> bias = read<float>((size_t)n_out);
    const int Kp = qlsimd::kp_of(K, is), Mp = qlsimd::mp_of(M, K), nb = (n_out + block - 1) / block;
    std::vector<uint8_t> qp((size_t)Mp * Kp, 0);
    std::vector<float> lut((size_t)M * K), mn(M), y((size_t)n * n_out);
    std::vector<uint32_t> isum((size_t)nb * block);
    qlsimd::linear_layer(is, qlsimd::prep_generic, x.data(), n, cb.data(), M, K, d, codes.data(), n_out, block,
                         bias.data(), y.data(), qp.data(), lut.data(), mn.data(), isum.data());
    write(y.data(), y.size());
}

template <typename Q, typename A, typename C>
void conv_sums_of(const qlconv::Geometry& g, int mb) {
    const std::vector<Q> tab = read<Q>((size_t)g.M * g.K * g.SP);
    const std::vector<C> codes = read<C>((size_t)g.Ct * g.kh * g.kw * g.M);
    for (C c : codes)
        if ((int)c >= g.K) fail("code >= K");
    std::vector<int32_t> out((size_t)g.Ct * g.L);
    qlconv::sums_of_table<Q, A, C>(qlconv::C_GENERIC, tab.data(), codes.data(), g, mb, out.data());
    write(out.data(), out.size());
}

void conv_sums() {
    const int bits = arg(), code_bytes = arg();
    int v[11];
    for (int& a : v) a = arg();
    const int mb = arg();
    const qlconv::Geometry g = qlconv::geometry_of(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10]);
    if (bits == 8 && code_bytes == 1) conv_sums_of<int8_t, int16_t, uint8_t>(g, mb);
    else if (bits == 8 && code_bytes == 2) conv_sums_of<int8_t, int16_t, uint16_t>(g, mb);
    else if (bits == 16 && code_bytes == 1) conv_sums_of<int16_t, int32_t, uint8_t>(g, mb);
    else if (bits == 16 && code_bytes == 2) conv_sums_of<int16_t, int32_t, uint16_t>(g, mb);
    else fail("bits 8|16, code_bytes 1|2");
}

template <typename Q, typename A, typename C>
void conv_layer_of(const qlconv::Geometry& g, int bits, int exact, int relu, int n, int groups) {
    const std::vector<float> x = read<float>((size_t)n * groups * g.C * g.H * g.W);
    const std::vector<float> cb = read<float>((size_t)g.M * g.K * g.d);
    const std::vector<C> codes = read<C>((size_t)groups * g.Ct * g.kh * g.kw * g.M);
    const std::vector<float> bias = read<float>((size_t)groups * g.Ct);
    for (C c : codes)
        if ((int)c >= g.K) fail("code >= K");
    std::vector<float> out((size_t)n * groups * g.Ct * g.OH * g.OW), scales((size_t)n * groups);
    qlconv::conv2d<Q, A, C>(qlconv::C_GENERIC, x.data(), n, groups, cb.data(), codes.data(), bias.data(), g, bits,
                            exact != 0, relu != 0, out.data(), scales.data());
    write(out.data(), out.size());
    write(scales.data(), scales.size());
}

void conv_layer() {
    const int bits = arg(), code_bytes = arg(), exact = arg(), relu = arg(), n = arg(), groups = arg();
    int v[11];
    for (int& a : v) a = arg();
    const qlconv::Geometry g = qlconv::geometry_of(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10]);
    if (bits == 8 && code_bytes == 1) conv_layer_of<int8_t, int16_t, uint8_t>(g, 8, exact, relu, n, groups);
    else if (bits == 8 && code_bytes == 2) conv_layer_of<int8_t, int16_t, uint16_t>(g, 8, exact, relu, n, groups);
    else if (bits == 16 && code_bytes == 1) conv_layer_of<int16_t, int32_t, uint8_t>(g, 16, exact, relu, n, groups);
    else if (bits == 16 && code_bytes == 2) conv_layer_of<int16_t, int32_t, uint16_t>(g, 16, exact, relu, n, groups);
    else fail("bits 8|16, code_bytes 1|2");
}

}  // namespace

int main(int argc, char** argv) {
#ifdef QL_NEON
    const char* fc = "neon";
#else
    const char* fc = "none";
#endif
    std::printf("fc=%s conv=%s\n", fc, qlconv::run_add_name(qlconv::C_GENERIC));
    if (argc != 3) {
        std::fprintf(stderr, "usage: neon_driver CASES OUT\n");
        return 2;
    }
    in_f = std::fopen(argv[1], "rb");
    out_f = std::fopen(argv[2], "wb");
    if (!in_f || !out_f) {
        std::fprintf(stderr, "neon_driver: cannot open %s or %s\n", argv[1], argv[2]);
        return 2;
    }
    int32_t op;
    while (std::fread(&op, sizeof op, 1, in_f) == 1) {
        switch (op) {
            case 1: fc_sums(); break;
            case 2: fc_quantize(); break;
            case 3: fc_layer(); break;
            case 4: conv_sums(); break;
            case 5: conv_layer(); break;
            default: fail("unknown op");
        }
        n_records++;
    }
    if (std::fclose(out_f) != 0) fail("cannot write the output");
    std::printf("records=%ld\n", n_records);
    return 0;
}
