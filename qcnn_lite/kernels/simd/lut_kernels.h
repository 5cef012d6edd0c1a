// Byte-shuffle look-up accumulation for quantized fc layers.
//
// Included by the CPython extension _lut_simd.cpp and by the standalone
// NEON test driver neon_check.cpp; no Python here.
//
// The problem: isum[o] = sum_m q[m, code[o, m]], q an 8-bit table (M x K),
// for every output o of a layer. A byte shuffle (x86 vpshufb / vpermb /
// vpermi2b, arm tbl) reads one table entry per byte lane: 32 or 64 reads per
// instruction instead of one scalar load each.
//
// Table layout (what the kernels read): Mp rows of Kp bytes, row m = the 8-bit
// entries q[m, 0..K-1] then zeros. Kp = 16 for K <= 16, else the next power of
// two >= K, at least 32 (64 for AVX-512, whose vpermb reads 64 bytes). Mp = M
// rounded up to even for the 4-bit layout; the padding row is zero.
//
// Code layouts (built once at layer-build time by qcnn_lite.kernels._shuffle):
// outputs are cut into blocks of B (32 AVX2 and scalar, 64 AVX-512, 16 NEON),
// the last block padded with code 0 (its sums are computed and dropped).
//   nibble (K <= 16): codes[(ob * Mp/2 + p) * B + i] =
//                     code[ob*B + i, 2p] | code[ob*B + i, 2p+1] << 4
//   byte   (K > 16):  codes[(ob * M + m) * B + i] = code[ob*B + i, m]
// Byte i of a code vector always belongs to output i of the block, so every
// ISA uses the same layout and differs only in B. The two sub-spaces of a
// nibble byte are looked up in two tables broadcast to every 16-byte lane.
//
// Loop order: output block outer, sub-space inner. A block's codes are one
// contiguous stream read once; the table (M*Kp bytes: 36 KiB for fc6 at K=16,
// 72 KiB at K=32) is re-read per block from L1/L2, one 16-byte load per lane
// table per sub-space, shared by two blocks in flight (BB = 2). The codes,
// not the table, are the memory traffic: 4.7 MB (fc6, K=16) or 9.4 MB (K=32)
// per input.
//
// Accumulation: shuffle results are bytes; they are summed in 16 bits and
// flushed to 32 bits every FLUSH sub-spaces. x86 uses faiss's trick: add the
// result as 16-bit words (even byte + 256 * odd byte) into A and the odd bytes
// alone (word >> 8) into B; at the flush, even = A - (B << 8) mod 2^16 and
// odd = B. Both are exact while each byte lane has summed at most 257 entries
// of 255 (255 * 257 = 65535), hence FLUSH = 256. NEON widens with uaddw.
//
// Every path is memory safe whatever the code bytes are: shuffles cannot leave
// their table register and the scalar path masks the index with Kp - 1. The
// codes are still validated (< K) in Python: an out-of-range code gives a
// different (wrong) sum on each ISA.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <algorithm>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#define QL_X86 1
#include <immintrin.h>
#define QL_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define QL_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vbmi")))
#endif
#if defined(__aarch64__)
#define QL_NEON 1
#include <arm_neon.h>
#endif

#define QL_INLINE static inline __attribute__((always_inline))

namespace qlsimd {

constexpr int FLUSH = 256;  // sub-spaces summed in 16 bits between flushes (<= 257)

enum Isa { SCALAR = 0, AVX2 = 1, AVX512VBMI = 2, NEON = 3 };

inline int block_of(Isa isa) { return isa == AVX512VBMI ? 64 : isa == NEON ? 16 : 32; }

inline int kp_of(int K, Isa isa) {
    if (K <= 16) return 16;
    int kp = 32;
    while (kp < K) kp *= 2;
    if (isa == AVX512VBMI && kp < 64) kp = 64;
    return kp;
}

inline int mp_of(int M, int K) { return K <= 16 ? M + (M & 1) : M; }

// Code bytes per block: B codes per sub-space (bytes) or per sub-space pair (nibbles).
inline size_t packed_size(int n_out, int M, int K, int B) {
    size_t nb = (size_t)(n_out + B - 1) / B;
    size_t steps = K <= 16 ? (size_t)mp_of(M, K) / 2 : (size_t)M;
    return nb * steps * (size_t)B;
}

// ---------------------------------------------------------------- scalar ----
// The reference: one table read per code, summed in 32 bits, any block size.
inline void acc_scalar(const uint8_t* q, int M, int K, int Kp, const uint8_t* codes, int nb, int B,
                       uint32_t* isum) {
    const int mask = Kp - 1;
    if (K <= 16) {
        const int P = mp_of(M, K) / 2;
        for (int ob = 0; ob < nb; ob++) {
            uint32_t* s = isum + (size_t)ob * B;
            for (int i = 0; i < B; i++) s[i] = 0;
            for (int p = 0; p < P; p++) {
                const uint8_t* c = codes + ((size_t)ob * P + p) * B;
                const uint8_t* t0 = q + (size_t)(2 * p) * Kp;
                const uint8_t* t1 = t0 + Kp;
                for (int i = 0; i < B; i++) s[i] += t0[c[i] & 15] + t1[c[i] >> 4];
            }
        }
        return;
    }
    for (int ob = 0; ob < nb; ob++) {
        uint32_t* s = isum + (size_t)ob * B;
        for (int i = 0; i < B; i++) s[i] = 0;
        for (int m = 0; m < M; m++) {
            const uint8_t* c = codes + ((size_t)ob * M + m) * B;
            const uint8_t* t = q + (size_t)m * Kp;
            for (int i = 0; i < B; i++) s[i] += t[c[i] & mask];
        }
    }
}

// Flush of the x86 16-bit pair (A, B) of one block of W bytes into 32-bit sums.
QL_INLINE void flush_pairs(const uint16_t* a, const uint16_t* b, int words, uint32_t* s) {
    for (int j = 0; j < words; j++) {
        s[2 * j] += (uint16_t)(a[j] - (uint16_t)(b[j] << 8));
        s[2 * j + 1] += b[j];
    }
}

#ifdef QL_X86
// ------------------------------------------------------------------ AVX2 ----
// NT = Kp/16 lane tables. K=32 (NT=2): two vpshufb and one vpblendvb on bit 4
// of the code (moved to bit 7 by a 16-bit shift by 3: bit 7 of each byte then
// comes from bit 4 of the same byte). Larger K: a blend tree on bits 4..7.
template <int NT>
QL_TARGET_AVX2 QL_INLINE __m256i avx2_lookup(const __m256i* t, __m256i c) {
    const __m256i idx = NT > 8 ? _mm256_and_si256(c, _mm256_set1_epi8(15)) : c;  // bit 7 zeroes
    __m256i r[NT];
    for (int j = 0; j < NT; j++) r[j] = _mm256_shuffle_epi8(t[j], idx);
    int n = NT;
    for (int bit = 4; n > 1; bit++) {
        const __m256i sel = bit == 7 ? c : _mm256_slli_epi16(c, 7 - bit);
        for (int j = 0; j < n / 2; j++) r[j] = _mm256_blendv_epi8(r[2 * j], r[2 * j + 1], sel);
        n /= 2;
    }
    return r[0];
}

// BB blocks at once share each table load.
template <int NT, int BB>
QL_TARGET_AVX2 static void avx2_bytes_blocks(const uint8_t* q, int M, const uint8_t* codes, int ob,
                                             uint32_t* isum) {
    constexpr int B = 32, Kp = NT * 16;
    uint32_t* s = isum + (size_t)ob * B;
    std::fill(s, s + BB * B, 0u);
    alignas(32) uint16_t a[BB][16], b[BB][16];
    for (int m0 = 0; m0 < M; m0 += FLUSH) {
        const int m1 = std::min(M, m0 + FLUSH);
        __m256i A[BB], Bw[BB];
        for (int k = 0; k < BB; k++) A[k] = Bw[k] = _mm256_setzero_si256();
        for (int m = m0; m < m1; m++) {
            __m256i t[NT];
            for (int j = 0; j < NT; j++)
                t[j] = _mm256_broadcastsi128_si256(
                    _mm_loadu_si128((const __m128i*)(q + (size_t)m * Kp + 16 * j)));
            for (int k = 0; k < BB; k++) {
                const __m256i c =
                    _mm256_loadu_si256((const __m256i*)(codes + ((size_t)(ob + k) * M + m) * B));
                const __m256i r = avx2_lookup<NT>(t, c);
                A[k] = _mm256_add_epi16(A[k], r);
                Bw[k] = _mm256_add_epi16(Bw[k], _mm256_srli_epi16(r, 8));
            }
        }
        for (int k = 0; k < BB; k++) {
            _mm256_store_si256((__m256i*)a[k], A[k]);
            _mm256_store_si256((__m256i*)b[k], Bw[k]);
            flush_pairs(a[k], b[k], 16, s + k * B);
        }
    }
}

template <int BB>
QL_TARGET_AVX2 static void avx2_nibble_blocks(const uint8_t* q, int P, const uint8_t* codes, int ob,
                                              uint32_t* isum) {
    constexpr int B = 32;
    uint32_t* s = isum + (size_t)ob * B;
    std::fill(s, s + BB * B, 0u);
    alignas(32) uint16_t a[BB][16], b[BB][16];
    const __m256i m15 = _mm256_set1_epi8(15);
    for (int p0 = 0; p0 < P; p0 += FLUSH / 2) {  // a pair step adds two entries per byte lane
        const int p1 = std::min(P, p0 + FLUSH / 2);
        __m256i A[BB], Bw[BB];
        for (int k = 0; k < BB; k++) A[k] = Bw[k] = _mm256_setzero_si256();
        for (int p = p0; p < p1; p++) {
            const __m256i t0 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(q + 32 * (size_t)p)));
            const __m256i t1 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(q + 32 * (size_t)p + 16)));
            for (int k = 0; k < BB; k++) {
                const __m256i c =
                    _mm256_loadu_si256((const __m256i*)(codes + ((size_t)(ob + k) * P + p) * B));
                const __m256i r0 = _mm256_shuffle_epi8(t0, _mm256_and_si256(c, m15));
                const __m256i r1 = _mm256_shuffle_epi8(t1, _mm256_and_si256(_mm256_srli_epi16(c, 4), m15));
                A[k] = _mm256_add_epi16(A[k], _mm256_add_epi16(r0, r1));
                Bw[k] = _mm256_add_epi16(Bw[k], _mm256_add_epi16(_mm256_srli_epi16(r0, 8), _mm256_srli_epi16(r1, 8)));
            }
        }
        for (int k = 0; k < BB; k++) {
            _mm256_store_si256((__m256i*)a[k], A[k]);
            _mm256_store_si256((__m256i*)b[k], Bw[k]);
            flush_pairs(a[k], b[k], 16, s + k * B);
        }
    }
}

template <int NT>
QL_TARGET_AVX2 static void avx2_bytes(const uint8_t* q, int M, const uint8_t* codes, int nb, uint32_t* isum) {
    int ob = 0;
    for (; ob + 2 <= nb; ob += 2) avx2_bytes_blocks<NT, 2>(q, M, codes, ob, isum);
    if (ob < nb) avx2_bytes_blocks<NT, 1>(q, M, codes, ob, isum);
}

QL_TARGET_AVX2 inline void acc_avx2(const uint8_t* q, int M, int K, int Kp, const uint8_t* codes, int nb,
                                    uint32_t* isum) {
    if (K <= 16) {
        const int P = mp_of(M, K) / 2;
        int ob = 0;
        for (; ob + 2 <= nb; ob += 2) avx2_nibble_blocks<2>(q, P, codes, ob, isum);
        if (ob < nb) avx2_nibble_blocks<1>(q, P, codes, ob, isum);
        return;
    }
    switch (Kp) {
        case 32: avx2_bytes<2>(q, M, codes, nb, isum); break;
        case 64: avx2_bytes<4>(q, M, codes, nb, isum); break;
        case 128: avx2_bytes<8>(q, M, codes, nb, isum); break;
        default: avx2_bytes<16>(q, M, codes, nb, isum); break;
    }
}

// ------------------------------------------------------- AVX-512 VBMI -------
// B = 64 outputs a vector. Nibbles: vpshufb (AVX512BW) on tables broadcast to
// the four lanes. Bytes: vpermb reads a 64-entry table from one register
// (K <= 64), vpermi2b a 128-entry table from two (K <= 128), and K <= 256 is
// two vpermi2b blended on bit 7 of the code (vpmovb2m).
template <int KP>
QL_TARGET_AVX512 QL_INLINE __m512i avx512_lookup(const uint8_t* t, __m512i c) {
    if (KP == 64) return _mm512_permutexvar_epi8(c, _mm512_loadu_si512(t));
    const __m512i lo = _mm512_permutex2var_epi8(_mm512_loadu_si512(t), c, _mm512_loadu_si512(t + 64));
    if (KP == 128) return lo;
    const __m512i hi = _mm512_permutex2var_epi8(_mm512_loadu_si512(t + 128), c, _mm512_loadu_si512(t + 192));
    return _mm512_mask_blend_epi8(_mm512_movepi8_mask(c), lo, hi);
}

template <int KP, int BB>
QL_TARGET_AVX512 static void avx512_bytes_blocks(const uint8_t* q, int M, const uint8_t* codes, int ob,
                                                 uint32_t* isum) {
    constexpr int B = 64;
    uint32_t* s = isum + (size_t)ob * B;
    std::fill(s, s + BB * B, 0u);
    alignas(64) uint16_t a[BB][32], b[BB][32];
    for (int m0 = 0; m0 < M; m0 += FLUSH) {
        const int m1 = std::min(M, m0 + FLUSH);
        __m512i A[BB], Bw[BB];
        for (int k = 0; k < BB; k++) A[k] = Bw[k] = _mm512_setzero_si512();
        for (int m = m0; m < m1; m++) {
            for (int k = 0; k < BB; k++) {
                const __m512i c = _mm512_loadu_si512(codes + ((size_t)(ob + k) * M + m) * B);
                const __m512i r = avx512_lookup<KP>(q + (size_t)m * KP, c);
                A[k] = _mm512_add_epi16(A[k], r);
                Bw[k] = _mm512_add_epi16(Bw[k], _mm512_srli_epi16(r, 8));
            }
        }
        for (int k = 0; k < BB; k++) {
            _mm512_store_si512(a[k], A[k]);
            _mm512_store_si512(b[k], Bw[k]);
            flush_pairs(a[k], b[k], 32, s + k * B);
        }
    }
}

template <int BB>
QL_TARGET_AVX512 static void avx512_nibble_blocks(const uint8_t* q, int P, const uint8_t* codes, int ob,
                                                  uint32_t* isum) {
    constexpr int B = 64;
    uint32_t* s = isum + (size_t)ob * B;
    std::fill(s, s + BB * B, 0u);
    alignas(64) uint16_t a[BB][32], b[BB][32];
    const __m512i m15 = _mm512_set1_epi8(15);
    for (int p0 = 0; p0 < P; p0 += FLUSH / 2) {
        const int p1 = std::min(P, p0 + FLUSH / 2);
        __m512i A[BB], Bw[BB];
        for (int k = 0; k < BB; k++) A[k] = Bw[k] = _mm512_setzero_si512();
        for (int p = p0; p < p1; p++) {
            const __m512i t0 = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i*)(q + 32 * (size_t)p)));
            const __m512i t1 = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i*)(q + 32 * (size_t)p + 16)));
            for (int k = 0; k < BB; k++) {
                const __m512i c = _mm512_loadu_si512(codes + ((size_t)(ob + k) * P + p) * B);
                const __m512i r0 = _mm512_shuffle_epi8(t0, _mm512_and_si512(c, m15));
                const __m512i r1 = _mm512_shuffle_epi8(t1, _mm512_and_si512(_mm512_srli_epi16(c, 4), m15));
                A[k] = _mm512_add_epi16(A[k], _mm512_add_epi16(r0, r1));
                Bw[k] = _mm512_add_epi16(Bw[k], _mm512_add_epi16(_mm512_srli_epi16(r0, 8), _mm512_srli_epi16(r1, 8)));
            }
        }
        for (int k = 0; k < BB; k++) {
            _mm512_store_si512(a[k], A[k]);
            _mm512_store_si512(b[k], Bw[k]);
            flush_pairs(a[k], b[k], 32, s + k * B);
        }
    }
}

template <int KP>
QL_TARGET_AVX512 static void avx512_bytes(const uint8_t* q, int M, const uint8_t* codes, int nb, uint32_t* isum) {
    int ob = 0;
    for (; ob + 2 <= nb; ob += 2) avx512_bytes_blocks<KP, 2>(q, M, codes, ob, isum);
    if (ob < nb) avx512_bytes_blocks<KP, 1>(q, M, codes, ob, isum);
}

QL_TARGET_AVX512 inline void acc_avx512(const uint8_t* q, int M, int K, int Kp, const uint8_t* codes, int nb,
                                        uint32_t* isum) {
    if (K <= 16) {
        const int P = mp_of(M, K) / 2;
        int ob = 0;
        for (; ob + 2 <= nb; ob += 2) avx512_nibble_blocks<2>(q, P, codes, ob, isum);
        if (ob < nb) avx512_nibble_blocks<1>(q, P, codes, ob, isum);
        return;
    }
    switch (Kp) {
        case 64: avx512_bytes<64>(q, M, codes, nb, isum); break;
        case 128: avx512_bytes<128>(q, M, codes, nb, isum); break;
        default: avx512_bytes<256>(q, M, codes, nb, isum); break;
    }
}
#endif  // QL_X86

#ifdef QL_NEON
// ------------------------------------------------------------------ NEON ----
// B = 16 outputs a vector. tbl reads 16 (vqtbl1q), 32 (vqtbl2q) or 64
// (vqtbl4q) entries; K <= 128 / 256 chain tbx4 on code - 64, -128, -192 (tbx
// keeps the lane for an index out of 0..63, which the wrapped subtraction
// gives for every code of another quarter). Widening: uaddw into two u16x8.
template <int KP>
QL_INLINE uint8x16_t neon_lookup(const uint8_t* t, uint8x16_t c) {
    if (KP == 32) {
        uint8x16x2_t tt = {{vld1q_u8(t), vld1q_u8(t + 16)}};
        return vqtbl2q_u8(tt, c);
    }
    uint8x16x4_t t0 = {{vld1q_u8(t), vld1q_u8(t + 16), vld1q_u8(t + 32), vld1q_u8(t + 48)}};
    uint8x16_t r = vqtbl4q_u8(t0, c);
    for (int j = 1; j < KP / 64; j++) {
        const uint8_t* u = t + 64 * j;
        uint8x16x4_t tj = {{vld1q_u8(u), vld1q_u8(u + 16), vld1q_u8(u + 32), vld1q_u8(u + 48)}};
        r = vqtbx4q_u8(r, tj, vsubq_u8(c, vdupq_n_u8((uint8_t)(64 * j))));
    }
    return r;
}

QL_INLINE void neon_flush(uint16x8_t lo, uint16x8_t hi, uint32_t* s) {
    uint32_t tmp[16];
    vst1q_u32(tmp, vmovl_u16(vget_low_u16(lo)));
    vst1q_u32(tmp + 4, vmovl_high_u16(lo));
    vst1q_u32(tmp + 8, vmovl_u16(vget_low_u16(hi)));
    vst1q_u32(tmp + 12, vmovl_high_u16(hi));
    for (int i = 0; i < 16; i++) s[i] += tmp[i];
}

template <int KP>
static void neon_bytes(const uint8_t* q, int M, const uint8_t* codes, int nb, uint32_t* isum) {
    constexpr int B = 16;
    for (int ob = 0; ob < nb; ob++) {
        uint32_t* s = isum + (size_t)ob * B;
        std::fill(s, s + B, 0u);
        for (int m0 = 0; m0 < M; m0 += FLUSH) {
            const int m1 = std::min(M, m0 + FLUSH);
            uint16x8_t lo = vdupq_n_u16(0), hi = vdupq_n_u16(0);
            for (int m = m0; m < m1; m++) {
                const uint8x16_t r = neon_lookup<KP>(q + (size_t)m * KP, vld1q_u8(codes + ((size_t)ob * M + m) * B));
                lo = vaddw_u8(lo, vget_low_u8(r));
                hi = vaddw_high_u8(hi, r);
            }
            neon_flush(lo, hi, s);
        }
    }
}

inline void acc_neon(const uint8_t* q, int M, int K, int Kp, const uint8_t* codes, int nb, uint32_t* isum) {
    constexpr int B = 16;
    if (K <= 16) {
        const int P = mp_of(M, K) / 2;
        const uint8x16_t m15 = vdupq_n_u8(15);
        for (int ob = 0; ob < nb; ob++) {
            uint32_t* s = isum + (size_t)ob * B;
            std::fill(s, s + B, 0u);
            for (int p0 = 0; p0 < P; p0 += FLUSH / 2) {
                const int p1 = std::min(P, p0 + FLUSH / 2);
                uint16x8_t lo = vdupq_n_u16(0), hi = vdupq_n_u16(0);
                for (int p = p0; p < p1; p++) {
                    const uint8x16_t c = vld1q_u8(codes + ((size_t)ob * P + p) * B);
                    const uint8x16_t r0 = vqtbl1q_u8(vld1q_u8(q + 32 * (size_t)p), vandq_u8(c, m15));
                    const uint8x16_t r1 = vqtbl1q_u8(vld1q_u8(q + 32 * (size_t)p + 16), vshrq_n_u8(c, 4));
                    lo = vaddq_u16(lo, vaddl_u8(vget_low_u8(r0), vget_low_u8(r1)));
                    hi = vaddq_u16(hi, vaddl_high_u8(r0, r1));
                }
                neon_flush(lo, hi, s);
            }
        }
        return;
    }
    switch (Kp) {
        case 32: neon_bytes<32>(q, M, codes, nb, isum); break;
        case 64: neon_bytes<64>(q, M, codes, nb, isum); break;
        case 128: neon_bytes<128>(q, M, codes, nb, isum); break;
        default: neon_bytes<256>(q, M, codes, nb, isum); break;
    }
}
#endif  // QL_NEON

// What this CPU (and this build) can run.
inline bool isa_supported(Isa isa) {
    switch (isa) {
        case SCALAR: return true;
#ifdef QL_X86
        case AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        case AVX512VBMI:
            return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vbmi");
#endif
#ifdef QL_NEON
        case NEON: return true;
#endif
        default: return false;
    }
}

// isum (nb*B) from a padded table (Mp x Kp) and codes packed for `isa`.
inline void accumulate(Isa isa, const uint8_t* q, int M, int K, const uint8_t* codes, int nb, uint32_t* isum,
                       int scalar_block = 32) {
    const int Kp = kp_of(K, isa);
    switch (isa) {
#ifdef QL_X86
        case AVX2: acc_avx2(q, M, K, Kp, codes, nb, isum); return;
        case AVX512VBMI: acc_avx512(q, M, K, Kp, codes, nb, isum); return;
#endif
#ifdef QL_NEON
        case NEON: acc_neon(q, M, K, Kp, codes, nb, isum); return;
#endif
        default: acc_scalar(q, M, K, Kp, codes, nb, scalar_block, isum); return;
    }
}

}  // namespace qlsimd

#include "lut_build.h"  // the per-input table build and its 8-bit quantization
