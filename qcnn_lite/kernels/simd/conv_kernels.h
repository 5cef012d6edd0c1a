// Integer look-up-table convolution: 8-bit tables summed in 16-bit
// accumulators (or 16-bit tables in 32-bit accumulators).
//
// Included by conv_build.h (the table build) and conv_driver.h (the layer driver); no Python
// here. qcnn_lite.kernels._convq holds the numpy emulation of every step: the same float32
// operations in the same order, the same round-half-even. The generic kernels match it bit for
// bit (the extension is built with -ffp-contract=off); the AVX2/AVX-512 table builds sum the
// products with FMA, so an entry whose t/s lies within float rounding of a half-integer may be
// off by one (about one in 10^5 on AlexNet's tables), the exact scale by float rounding.
//
// Layout (as the float kernel, qcnn_lite/kernels/_pythran.py): per image and
// group, the zero-padded input map is split into its stride*stride phases,
// each a flat Hq x Wq plane; SP = stride*stride*Hq*Wq pixels in all. The table
// is tab[m*K + k][p] (p < SP, row pitch PP = SP rounded up to 16, plus 64 entries
// of slack at the end): the quantized inner product of sub-space m of pixel p
// with codeword k. Tap (i, j) of sub-space m with codeword c adds the ONE
// contiguous run tab[m*K + c][start(i, j) .. start + L), L = OH*Wq, to the
// output plane kept at the table's row pitch Wq (columns >= OW are scratch).
//
// Scale: one per image and group, s = bound / qmax, qmax = min(127, 32767 /
// (kh*kw*M)) for 8 bits (min(32767, (2^31-1) / (kh*kw*M)) for 16): |q| <= qmax,
// so a sum of kh*kw*M entries cannot overflow the accumulator. bound is
//   "bound": max_m (max_k ||codeword_mk||) * (max_p ||x_m(p)||)  (Cauchy-Schwarz,
//            known before the table is built: build and quantize are one pass,
//            no float table is ever written);
//   "exact": max |entry|, from a first pass over the products that stores
//            nothing (the products are computed twice: cheaper than writing a
//            4-byte table of 3 MB and reading it back).
// q = clamp(rint(t * (1/s)), -qmax, qmax); y = s * sum + bias (float32).
//
// Loop order and why (AlexNet conv2, group of 48 channels, 27x27, K=128, M=6):
//   * table build: see conv_build.h.
//   * accumulation: output channel outer; its kh*kw*M runs added EIGHT per pass
//     over the int16 accumulator (L = 837 values, 1.7 KB: L1), so each pass
//     loads and stores the accumulator once for eight runs. The int8 table
//     (M*K*PP = 0.76 MB) is read from L2; the float table (3 MB) did not fit
//     and streamed from L3: the float kernel's limit.
//   * the run-add is int8 -> int16 sign extension (vpmovsxbw) + vpaddw: 32
//     (AVX-512) or 16 (AVX2) sums per instruction pair; intrinsics, because the
//     compilers widened the plain loop's C++ int promotion to 32 bits.
//     aarch64: saddl sign-extends and adds two runs in one instruction (the NEON loops).
//   * output: s * acc + bias (and an optional ReLU) while the accumulator is in L1.
//
// Measured trade-offs (accumulation alone, one group, best of 30, this Xeon with
// AVX-512; conv2: 128 channels x 150 runs x 837 values, conv3: 384 x 288 x 195):
//   runs per pass      4: 52.7 / 40.7 adds/ns   8: 64.8 / 49.5   16: 66.7 / 53.9
//   all runs in L1 (same 8 rows, an upper bound): 79.7 / 66.7 adds/ns, i.e. ~30 adds
//     a cycle: the one-vpmovsxbw-a-cycle limit (port 5) of 32; the table in L2
//     costs 15-25% on top. The int16 add throughput (2 vpaddw of 32 a cycle) is
//     twice that: sign extension, not the adds, is the compute limit.
//   software prefetch of the next pass's runs: 5-10% slower (the L2 streamer does it).
//   64 outputs held in registers across all runs (no accumulator traffic) with
//     offset-binary entries summed as 16-bit words (faiss's even/odd trick, no
//     sign extension): 45 / 36 adds/ns, slower: 150-288 scattered rows per block
//     miss L1 every load, where eight sequential runs stream.
//   The table build (AlexNet conv2: 12.2 M products a pass; conv_build.h) is the other half.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define QC_X86 1
#define QC_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define QC_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx2,fma")))
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#define QC_NEON 1
#endif

namespace qlconv {

enum ConvIsa { C_GENERIC = 0, C_AVX2 = 1, C_AVX512 = 2 };

constexpr int BLK = 16;  // pixels per block of the table build (one AVX-512 register); the row pitch is a multiple
// (64 cost small maps dearly: a 6x6 map with padding 1 has 72 pixels, 128 at a pitch of 64)

inline bool conv_isa_supported(ConvIsa isa) {
    switch (isa) {
        case C_GENERIC: return true;
#ifdef QC_X86
        case C_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        case C_AVX512: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
#endif
        default: return false;
    }
}

struct Geometry {
    int C, H, W;       // one group's input
    int M, K, d;       // C = M*d
    int Ct, kh, kw;    // Ct: this group's output channels
    int stride, padding;
    int OH, OW, Hq, Wq;
    size_t SP, PP, L;  // pixels of all phases, row pitch of the table, run length
};

inline int qmax_of(int bits, int n_items) {
    if (bits == 8) return std::min(127, 32767 / n_items);
    return (int)std::min<long long>(32767, 2147483647LL / n_items);
}

// Zero-padded, phase-split input of one group: xp[c][a*s + b][y*Wq + x] = x[c][y*s + a - pad][x*s + b - pad].
// The column map is tabulated once (a division per pixel cost as much as the whole
// accumulation of a small layer); stride 1 is one contiguous copy per row.
#ifdef QC_X86
// Columns [0, 32*J) of one input row (stride s = 2 or 4) into its s phase rows, 32 columns at a
// time: per phase one two-source permute picks its 32/s columns. d[b] is phase b's row at its
// first column c0[b] (< s). Returns the columns done, 32*J (the caller does the rest).
QC_TARGET_AVX512 inline int split_row_avx512(const float* src, int W, int s, const int* c0, float* const* d) {
    const int n = 32 / s;
    int col = 0;
    for (; col + 32 <= W; col += 32) {
        const __m512 a = _mm512_loadu_ps(src + col), b = _mm512_loadu_ps(src + col + 16);
        for (int ph = 0; ph < s; ph++) {
            const __m512i idx = _mm512_add_epi32(_mm512_set1_epi32(c0[ph]),
                                                 _mm512_mullo_epi32(_mm512_set1_epi32(s), _mm512_setr_epi32(
                                                     0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)));
            const __m512 v = _mm512_permutex2var_ps(a, idx, b);  // lanes >= n: indices past 31 wrap, unused
            float* out = d[ph] + col / s;
            if (n == 16)
                _mm512_storeu_ps(out, v);
            else
                _mm256_storeu_ps(out, _mm512_castps512_ps256(v));
        }
    }
    return col;
}
#endif

// zero = false: xp already holds zeros wherever this geometry writes nothing (the caller's
// last split had the same geometry). vec: AVX-512 may be used (strides 2 and 4).
inline void phase_split(const float* x, const Geometry& g, float* xp, std::vector<int64_t>& colmap,
                        bool zero = true, bool vec = false) {
    const int s = g.stride;
    const size_t P = (size_t)g.Hq * g.Wq;
    if (zero) std::memset(xp, 0, sizeof(float) * (size_t)g.C * g.PP);
    if (colmap.size() < (size_t)g.W) colmap.resize(g.W);
    for (int col = 0; col < g.W; col++) {
        const int cp = col + g.padding;
        colmap[col] = (int64_t)((size_t)(cp % s) * P + cp / s);
    }
    int c0[4];  // first column of each phase (strides up to 4 vectorized)
    for (int b = 0; b < s && b < 4; b++) c0[b] = ((b - g.padding) % s + s) % s;
    vec = vec && (s == 2 || s == 4) && g.W >= 32 + s;
    for (int r = 0; r < g.H; r++) {
        const int rp = r + g.padding;
        const size_t row_off = (size_t)((rp % s) * s) * P + (size_t)(rp / s) * g.Wq;
        for (int c = 0; c < g.C; c++) {
            const float* src = x + ((size_t)c * g.H + r) * g.W;
            float* dst = xp + (size_t)c * g.PP + row_off;
            if (s == 1) {
                std::memcpy(dst + g.padding, src, sizeof(float) * g.W);
                continue;
            }
            // phase by phase: a strided read, a contiguous write (the rest of the row after the
            // AVX-512 chunks; the whole row otherwise)
            int done = 0;
#ifdef QC_X86
            if (vec) {
                float* d[4];
                for (int b = 0; b < s; b++) d[b] = dst + colmap[c0[b]];
                done = split_row_avx512(src, g.W, s, c0, d);
            }
#endif
            for (int b = 0; b < s; b++) {
                const int first = done + ((b - g.padding - done) % s + s) % s;  // first column >= done of phase b
                if (first >= g.W) continue;
                float* d = dst + colmap[first];
                const float* sc = src + first;
                const int cnt = (g.W - first + s - 1) / s;
                for (int k = 0; k < cnt; k++) d[k] = sc[(size_t)k * s];
            }
        }
    }
}

// The Cauchy-Schwarz bound: max_m max_k ||cb[m,k]|| * max_p ||xp[m, :, p]||.
// Squares summed left to right over d, sqrt in float32 (the emulation does the same).
inline float cs_bound(const float* xp, const float* cb, const Geometry& g, float* norms) {
    float bound = 0;
    for (int m = 0; m < g.M; m++) {
        float cmax = 0;
        for (int k = 0; k < g.K; k++) {
            const float* c = cb + ((size_t)m * g.K + k) * g.d;
            float ss = c[0] * c[0];
            for (int j = 1; j < g.d; j++) ss = ss + c[j] * c[j];
            cmax = std::max(cmax, std::sqrt(ss));
        }
        const float* xm = xp + (size_t)m * g.d * g.PP;
        for (size_t p = 0; p < g.SP; p++) norms[p] = xm[p] * xm[p];
        for (int j = 1; j < g.d; j++) {
            const float* xj = xm + (size_t)j * g.PP;
            for (size_t p = 0; p < g.SP; p++) norms[p] = norms[p] + xj[p] * xj[p];
        }
        float xmax = 0;
        for (size_t p = 0; p < g.SP; p++) xmax = std::max(xmax, norms[p]);
        bound = std::max(bound, cmax * std::sqrt(xmax));
    }
    return bound;
}

// Scale from a bound; s = 1 for an all-zero (or denormal) table.
inline float scale_of(float bound, int qmax) {
    float s = bound / (float)qmax;
    return s >= 1.17549435e-38f ? s : 1.0f;
}

// Accumulation body: acc[t] += the runs of one output channel, eight runs a pass (the caller zeroes acc).
// Generic loop version (the vector ISAs use the intrinsic versions below).
template <typename Q, typename A>
static inline __attribute__((always_inline)) void accumulate_generic(const Q* tab, const int64_t* offs, int n_items, size_t L, A* acc) {
    int q = 0;
    for (; q + 8 <= n_items; q += 8) {
        const Q *r0 = tab + offs[q], *r1 = tab + offs[q + 1], *r2 = tab + offs[q + 2], *r3 = tab + offs[q + 3];
        const Q *r4 = tab + offs[q + 4], *r5 = tab + offs[q + 5], *r6 = tab + offs[q + 6], *r7 = tab + offs[q + 7];
        for (size_t t = 0; t < L; t++)
            acc[t] = (A)(acc[t] + (A)((A)(r0[t] + r1[t]) + (A)(r2[t] + r3[t])) + (A)((A)(r4[t] + r5[t]) + (A)(r6[t] + r7[t])));
    }
    for (; q < n_items; q++) {
        const Q* r = tab + offs[q];
        for (size_t t = 0; t < L; t++) acc[t] = (A)(acc[t] + r[t]);
    }
}

#ifdef QC_X86
// int8 runs -> int16 accumulator, 32 lanes. Runs may be read up to 31 values past L
// (the table has slack); those lanes land in acc's own padding and are dropped.
QC_TARGET_AVX512 static inline void accumulate_avx512_i8(const int8_t* tab, const int64_t* offs, int n_items,
                                                         size_t L, int16_t* acc) {
    const size_t Lv = (L + 31) / 32 * 32, L32 = (L + 15) / 32 * 32;  // L32: 32-lane part; a 16-lane tail if L16 > L32
    const bool tail = (L + 15) / 16 * 16 > L32;
    int q = 0;
#define LD(r) _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i*)((r) + t)))
#define LDH(r) _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)((r) + L32)))
    for (; q + 8 <= n_items; q += 8) {
        const int8_t *r0 = tab + offs[q], *r1 = tab + offs[q + 1], *r2 = tab + offs[q + 2], *r3 = tab + offs[q + 3];
        const int8_t *r4 = tab + offs[q + 4], *r5 = tab + offs[q + 5], *r6 = tab + offs[q + 6], *r7 = tab + offs[q + 7];
        for (size_t t = 0; t < L32; t += 32) {
            __m512i a = _mm512_add_epi16(_mm512_add_epi16(LD(r0), LD(r1)), _mm512_add_epi16(LD(r2), LD(r3)));
            __m512i b = _mm512_add_epi16(_mm512_add_epi16(LD(r4), LD(r5)), _mm512_add_epi16(LD(r6), LD(r7)));
            __m512i* p = (__m512i*)(acc + t);
            _mm512_storeu_si512(p, _mm512_add_epi16(_mm512_loadu_si512(p), _mm512_add_epi16(a, b)));
        }
        if (tail) {  // the last 16 lanes: half the table bytes of a full vector
            __m256i a = _mm256_add_epi16(_mm256_add_epi16(LDH(r0), LDH(r1)), _mm256_add_epi16(LDH(r2), LDH(r3)));
            __m256i b = _mm256_add_epi16(_mm256_add_epi16(LDH(r4), LDH(r5)), _mm256_add_epi16(LDH(r6), LDH(r7)));
            __m256i* p = (__m256i*)(acc + L32);
            _mm256_storeu_si256(p, _mm256_add_epi16(_mm256_loadu_si256(p), _mm256_add_epi16(a, b)));
        }
    }
#undef LDH
    for (; q < n_items; q++) {
        const int8_t* r0 = tab + offs[q];
        for (size_t t = 0; t < Lv; t += 32) {
            __m512i* p = (__m512i*)(acc + t);
            _mm512_storeu_si512(p, _mm512_add_epi16(_mm512_loadu_si512(p), LD(r0)));
        }
    }
#undef LD
}

QC_TARGET_AVX2 static inline void accumulate_avx2_i8(const int8_t* tab, const int64_t* offs, int n_items, size_t L,
                                                     int16_t* acc) {
    const size_t Lv = (L + 31) / 32 * 32;
    int q = 0;
#define LD(r) _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)((r) + t)))
    for (; q + 8 <= n_items; q += 8) {
        const int8_t *r0 = tab + offs[q], *r1 = tab + offs[q + 1], *r2 = tab + offs[q + 2], *r3 = tab + offs[q + 3];
        const int8_t *r4 = tab + offs[q + 4], *r5 = tab + offs[q + 5], *r6 = tab + offs[q + 6], *r7 = tab + offs[q + 7];
        for (size_t t = 0; t < Lv; t += 16) {
            __m256i a = _mm256_add_epi16(_mm256_add_epi16(LD(r0), LD(r1)), _mm256_add_epi16(LD(r2), LD(r3)));
            __m256i b = _mm256_add_epi16(_mm256_add_epi16(LD(r4), LD(r5)), _mm256_add_epi16(LD(r6), LD(r7)));
            __m256i* p = (__m256i*)(acc + t);
            _mm256_storeu_si256(p, _mm256_add_epi16(_mm256_loadu_si256(p), _mm256_add_epi16(a, b)));
        }
    }
    for (; q < n_items; q++) {
        const int8_t* r0 = tab + offs[q];
        for (size_t t = 0; t < Lv; t += 16) {
            __m256i* p = (__m256i*)(acc + t);
            _mm256_storeu_si256(p, _mm256_add_epi16(_mm256_loadu_si256(p), LD(r0)));
        }
    }
#undef LD
}
#endif

#ifdef QC_NEON
// ------------------------------------------------------------------ NEON ----
// The aarch64 run-adds. Same contract as the AVX2 loops: runs of one output channel
// added into its accumulator (zeroed by the caller), eight runs a pass, the accumulator
// loaded and stored once per pass.
//
// int8 runs -> int16 accumulator, 16 values a step: saddl / saddl2 (vaddl_s8,
// vaddl_high_s8) sign-extend two runs' bytes and add them in one instruction, i.e.
// vmovl_s8 + vaddq_s16 fused; a tree of vaddq_s16 then sums the four pairs and the
// accumulator. Per 16 values and eight runs: 8 loads, 8 widening adds, 8 plain adds (tree
// and accumulator), against 16 sign extensions + 16 adds with vmovl_s8. Exact: every
// partial sum is a sum of a subset of the channel's entries, |.| <= kh*kw*M*qmax <= 32767.
// tbl is not used: a run is contiguous (a plain load), and the alternative with tables
// in registers (outputs held across all runs, rows gathered) lost on x86 (see above).
// Why intrinsics (static instruction counts of the inner loop, 16 values x 8 runs, from the
// disassembly; no phone timings here): this loop is 30 instructions with g++ 12 -O3 and 31
// with clang 14 -O2 (the Termux compiler). The plain loop is 42 with clang -O2 (8 values a
// step, a serial chain of saddw), 30 with g++ -O3 but behind a run-time overlap check per
// pass and a scalar tail for L % 16, and not vectorized at all by g++ -O2.
// Runs are read up to 15 values past L: the table's 64 entries of slack; those lanes land
// in acc's padding (Lv >= L rounded up to 16) and are dropped.
static inline void accumulate_neon_i8(const int8_t* tab, const int64_t* offs, int n_items, size_t L, int16_t* acc) {
    const size_t Lv = (L + 15) / 16 * 16;
    int q = 0;
    for (; q + 8 <= n_items; q += 8) {
        const int8_t* r[8];
        for (int i = 0; i < 8; i++) r[i] = tab + offs[q + i];
        for (size_t t = 0; t < Lv; t += 16) {
            int8x16_t v[8];
            for (int i = 0; i < 8; i++) v[i] = vld1q_s8(r[i] + t);
            int16x8_t lo = vaddq_s16(vaddq_s16(vaddl_s8(vget_low_s8(v[0]), vget_low_s8(v[1])),
                                               vaddl_s8(vget_low_s8(v[2]), vget_low_s8(v[3]))),
                                     vaddq_s16(vaddl_s8(vget_low_s8(v[4]), vget_low_s8(v[5])),
                                               vaddl_s8(vget_low_s8(v[6]), vget_low_s8(v[7]))));
            int16x8_t hi = vaddq_s16(vaddq_s16(vaddl_high_s8(v[0], v[1]), vaddl_high_s8(v[2], v[3])),
                                     vaddq_s16(vaddl_high_s8(v[4], v[5]), vaddl_high_s8(v[6], v[7])));
            vst1q_s16(acc + t, vaddq_s16(vld1q_s16(acc + t), lo));
            vst1q_s16(acc + t + 8, vaddq_s16(vld1q_s16(acc + t + 8), hi));
        }
    }
    for (; q < n_items; q++) {  // the last n_items % 8 runs, one a pass
        const int8_t* r0 = tab + offs[q];
        for (size_t t = 0; t < Lv; t += 16) {
            const int8x16_t v = vld1q_s8(r0 + t);
            vst1q_s16(acc + t, vaddw_s8(vld1q_s16(acc + t), vget_low_s8(v)));
            vst1q_s16(acc + t + 8, vaddw_high_s8(vld1q_s16(acc + t + 8), v));
        }
    }
}

// int16 runs -> int32 accumulator, 8 values a step: the same loop one width up
// (saddl on halfwords; |partial sums| <= kh*kw*M*qmax <= 2^31 - 1).
static inline void accumulate_neon_i16(const int16_t* tab, const int64_t* offs, int n_items, size_t L, int32_t* acc) {
    const size_t Lv = (L + 7) / 8 * 8;
    int q = 0;
    for (; q + 8 <= n_items; q += 8) {
        const int16_t* r[8];
        for (int i = 0; i < 8; i++) r[i] = tab + offs[q + i];
        for (size_t t = 0; t < Lv; t += 8) {
            int16x8_t v[8];
            for (int i = 0; i < 8; i++) v[i] = vld1q_s16(r[i] + t);
            int32x4_t lo = vaddq_s32(vaddq_s32(vaddl_s16(vget_low_s16(v[0]), vget_low_s16(v[1])),
                                               vaddl_s16(vget_low_s16(v[2]), vget_low_s16(v[3]))),
                                     vaddq_s32(vaddl_s16(vget_low_s16(v[4]), vget_low_s16(v[5])),
                                               vaddl_s16(vget_low_s16(v[6]), vget_low_s16(v[7]))));
            int32x4_t hi = vaddq_s32(vaddq_s32(vaddl_high_s16(v[0], v[1]), vaddl_high_s16(v[2], v[3])),
                                     vaddq_s32(vaddl_high_s16(v[4], v[5]), vaddl_high_s16(v[6], v[7])));
            vst1q_s32(acc + t, vaddq_s32(vld1q_s32(acc + t), lo));
            vst1q_s32(acc + t + 4, vaddq_s32(vld1q_s32(acc + t + 4), hi));
        }
    }
    for (; q < n_items; q++) {
        const int16_t* r0 = tab + offs[q];
        for (size_t t = 0; t < Lv; t += 8) {
            const int16x8_t v = vld1q_s16(r0 + t);
            vst1q_s32(acc + t, vaddw_s16(vld1q_s32(acc + t), vget_low_s16(v)));
            vst1q_s32(acc + t + 4, vaddw_high_s16(vld1q_s32(acc + t + 4), v));
        }
    }
}
#endif  // QC_NEON

// ------------------------------------------------------------- per-ISA pieces ----
template <typename Q, typename A>
void acc_generic(const Q* tab, const int64_t* offs, int n, size_t L, A* acc) {
    accumulate_generic<Q, A>(tab, offs, n, L, acc);
}
#ifdef QC_X86
QC_TARGET_AVX2 inline void acc16_avx2(const int16_t* tab, const int64_t* offs, int n, size_t L, int32_t* acc) {
    accumulate_generic<int16_t, int32_t>(tab, offs, n, L, acc);
}
QC_TARGET_AVX512 inline void acc16_avx512(const int16_t* tab, const int64_t* offs, int n, size_t L, int32_t* acc) {
    accumulate_generic<int16_t, int32_t>(tab, offs, n, L, acc);
}
#endif

// The run-adds. On aarch64 NEON is baseline, so C_GENERIC (the only conv ISA there) takes
// the NEON loops; acc_generic stays the portable loop of other architectures.
inline void accumulate(ConvIsa isa, const int8_t* tab, const int64_t* offs, int n, size_t L, int16_t* acc) {
#ifdef QC_X86
    if (isa == C_AVX512) return accumulate_avx512_i8(tab, offs, n, L, acc);
    if (isa == C_AVX2) return accumulate_avx2_i8(tab, offs, n, L, acc);
#endif
#ifdef QC_NEON
    (void)isa;
    return accumulate_neon_i8(tab, offs, n, L, acc);
#endif
    acc_generic<int8_t, int16_t>(tab, offs, n, L, acc);
}
inline void accumulate(ConvIsa isa, const int16_t* tab, const int64_t* offs, int n, size_t L, int32_t* acc) {
#ifdef QC_X86
    if (isa == C_AVX512) return acc16_avx512(tab, offs, n, L, acc);
    if (isa == C_AVX2) return acc16_avx2(tab, offs, n, L, acc);
#endif
#ifdef QC_NEON
    (void)isa;
    return accumulate_neon_i16(tab, offs, n, L, acc);
#endif
    acc_generic<int16_t, int32_t>(tab, offs, n, L, acc);
}

// Which run-add accumulate() runs for isa (reported by the cross-built test driver).
inline const char* run_add_name(ConvIsa isa) {
#ifdef QC_NEON
    (void)isa;
    return "neon";
#else
    return isa == C_AVX512 ? "avx512bw" : isa == C_AVX2 ? "avx2" : "generic";
#endif
}

}  // namespace qlconv
