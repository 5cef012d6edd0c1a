// Standalone check of the NEON kernels of lut_kernels.h against its scalar
// path, for a cross build run under qemu-user (tests/test_shuffle.py):
//   aarch64-linux-gnu-g++ -O2 -static -std=c++17 neon_check.cpp -o neon_check
//   qemu-aarch64-static ./neon_check   -> "ok <cases>" and exit 0, or the first mismatch.
// On x86 it checks AVX2 the same way (a sanity check of the driver itself).
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "lut_kernels.h"

using namespace qlsimd;

// The layout of qcnn_lite.kernels._shuffle.pack_codes (see lut_kernels.h).
static std::vector<uint8_t> pack(const std::vector<uint8_t>& codes, int n_out, int M, int K, int B) {
    const int nb = (n_out + B - 1) / B, Mp = mp_of(M, K);
    std::vector<uint8_t> out(packed_size(n_out, M, K, B), 0);
    auto code = [&](int o, int m) -> uint8_t { return o < n_out && m < M ? codes[(size_t)o * M + m] : 0; };
    for (int ob = 0; ob < nb; ob++)
        for (int i = 0; i < B; i++) {
            const int o = ob * B + i;
            if (K <= 16)
                for (int p = 0; p < Mp / 2; p++)
                    out[((size_t)ob * (Mp / 2) + p) * B + i] = (uint8_t)(code(o, 2 * p) | code(o, 2 * p + 1) << 4);
            else
                for (int m = 0; m < M; m++) out[((size_t)ob * M + m) * B + i] = code(o, m);
        }
    return out;
}

int main() {
#if defined(QL_NEON)
    const Isa isa = NEON;
#elif defined(QL_X86)
    const Isa isa = AVX2;
    if (!isa_supported(isa)) {
        std::printf("skip: no avx2\n");
        return 0;
    }
#else
    std::printf("skip: no SIMD path on this architecture\n");
    return 0;
#endif
    std::mt19937 rng(1234);
    const int Ks[] = {2, 5, 16, 17, 32, 33, 64, 100, 128, 129, 256};
    const int Ms[] = {1, 3, 256, 257, 513, 1000};
    const int outs[] = {1, 15, 16, 17, 50};
    int cases = 0;
    for (int K : Ks)
        for (int M : Ms)
            for (int n_out : outs)
                for (int adversarial = 0; adversarial < 2; adversarial++) {
                    const int B = block_of(isa), Kp = kp_of(K, isa), nb = (n_out + B - 1) / B;
                    std::vector<uint8_t> q((size_t)mp_of(M, K) * Kp, 0), codes((size_t)n_out * M);
                    for (int m = 0; m < M; m++)
                        for (int k = 0; k < K; k++) q[(size_t)m * Kp + k] = adversarial ? 255 : (uint8_t)(rng() & 255);
                    for (auto& c : codes) c = (uint8_t)(rng() % K);
                    const std::vector<uint8_t> packed = pack(codes, n_out, M, K, B);
                    std::vector<uint32_t> ref((size_t)nb * B), got((size_t)nb * B);
                    accumulate(SCALAR, q.data(), M, K, packed.data(), nb, ref.data(), B);
                    accumulate(isa, q.data(), M, K, packed.data(), nb, got.data(), B);
                    for (int o = 0; o < n_out; o++) {
                        uint32_t direct = 0;
                        for (int m = 0; m < M; m++) direct += q[(size_t)m * Kp + codes[(size_t)o * M + m]];
                        if (got[o] != ref[o] || ref[o] != direct) {
                            std::printf("MISMATCH K=%d M=%d n_out=%d adversarial=%d o=%d: simd %u scalar %u direct %u\n",
                                        K, M, n_out, adversarial, o, got[o], ref[o], direct);
                            return 1;
                        }
                    }
                    cases++;
                }
    std::printf("ok %d cases (%s)\n", cases, isa == SCALAR ? "scalar" : block_of(isa) == 16 ? "neon" : "avx2");
    return 0;
}
