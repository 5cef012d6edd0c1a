// Table build of the integer conv kernels: the products t[m*K + k][p] = <codeword k of
// sub-space m, input sub-vector m at pixel p>, summed over the d coordinates with FMA
// (t = c0*x0, then t = fma(cj, xj, t) for j = 1..d-1; the generic build, for CPUs without FMA,
// multiplies and adds), and what a pass does with them (BuildMode): write
// q = clamp(rint(t * inv), -qmax, qmax) (round half to even), and/or return max |t|.
//
// The exact scale s = max |t| / qmax needs every product before the first entry can be
// quantized: a first pass takes the max (B_MAX: multiply-adds, abs and max, no stores), the
// second writes the entries (B_WRITE) from the same FMA products, so the largest maps to qmax.
// Measured against one pass (int16 entries at the Cauchy-Schwarz scale while taking the max,
// then requantized in place to int8 with the exact scale): the int16 stores and the requantizing
// pass cost more than the max pass they save, by a third on AlexNet's tables (figures in the
// commit that made the build FMA).
//
// Loop order (AVX-512): sub-space m, then pixels in groups of NB blocks of 16 (NB = 2 for
// d <= 8), then all K codewords: the group's NB*d input values stay in registers while the
// codewords (broadcast from memory) pass over them; NB independent FMA chains per codeword
// hide the FMA latency; a group whose inputs are all zero (the padding rows) stores zero entries
// without computing them. The write pass of the FMA builds gets the codewords scaled by 1/s
// (table_rows), so t is already in units of s: no multiply; on AVX-512 the 32 int8 entries of
// two blocks are rounded and packed with saturating packs and one permute, one 32-byte store
// per codeword (vpmovdb per block took a third more shuffle-port work; figures in the commit).
// The generic/AVX2 loop: m, k, then pixel blocks (the d input planes of sub-space m in L1).
#pragma once

#include "conv_kernels.h"

namespace qlconv {

enum BuildMode { B_WRITE = 1, B_MAX = 2 };  // bit flags

template <typename Q, int MODE, bool FMA>
static inline __attribute__((always_inline)) float build_body(const float* xp, const float* cb, const Geometry& g,
                                                              float inv, float qmax, Q* tab) {
    float amax_l[BLK] = {0};  // per-lane maxima: max is exact in any order, so the loop vectorizes
    const int d = g.d;
    for (int m = 0; m < g.M; m++) {
        const float* xm = xp + (size_t)m * d * g.PP;
        for (int k = 0; k < g.K; k++) {
            const float* c = cb + ((size_t)m * g.K + k) * d;
            Q* row = (MODE & B_WRITE) ? tab + ((size_t)m * g.K + k) * g.PP : nullptr;
            for (size_t p0 = 0; p0 < g.PP; p0 += BLK) {
                float t[BLK];
                const float c0 = c[0];
                for (int i = 0; i < BLK; i++) t[i] = c0 * xm[p0 + i];
                for (int j = 1; j < d; j++) {
                    const float cj = c[j];
                    const float* xj = xm + (size_t)j * g.PP + p0;
                    for (int i = 0; i < BLK; i++) t[i] = FMA ? __builtin_fmaf(cj, xj[i], t[i]) : t[i] + cj * xj[i];
                }
                if (MODE & B_MAX)
                    for (int i = 0; i < BLK; i++) amax_l[i] = std::max(amax_l[i], std::fabs(t[i]));
                if (MODE & B_WRITE)
                    for (int i = 0; i < BLK; i++) {
                        float v = __builtin_rintf(t[i] * inv);  // round half to even (default rounding mode)
                        v = std::min(std::max(v, -qmax), qmax);
                        row[p0 + i] = (Q)(int)v;
                    }
            }
        }
    }
    float amax = 0;
    for (int i = 0; i < BLK; i++) amax = std::max(amax, amax_l[i]);
    return amax;
}

#ifdef QC_X86
// NB blocks of 16 pixels from p, all K codewords of one sub-space.
template <typename Q, int MODE, int D, int NB>
QC_TARGET_AVX512 static inline __attribute__((always_inline)) void build_group_avx512(
    const float* xm, const float* cm, Q* tm, size_t PP, int K, size_t p, __m512 vinv, __m512 lo, __m512 hi,
    __m512& amax) {
    __m512 xv[NB][D];
    __m512i any = _mm512_setzero_si512();
    for (int b = 0; b < NB; b++)
        for (int j = 0; j < D; j++) {
            xv[b][j] = _mm512_loadu_ps(xm + (size_t)j * PP + p + 16 * b);
            any = _mm512_or_si512(any, _mm512_castps_si512(xv[b][j]));
        }
    if (_mm512_test_epi32_mask(any, any) == 0) {  // all inputs +0 (padding): every product and entry is 0
        if (MODE & B_WRITE)
            for (int k = 0; k < K; k++) std::memset(tm + (size_t)k * PP + p, 0, sizeof(Q) * 16 * NB);
        return;
    }
    // The packed int8 path, for products already in units of s (table_rows folds 1/s into the
    // codewords: inv = 1, no multiply), and its clamp.
    const bool packed = sizeof(Q) == 1 && NB == 2 && _mm512_cvtss_f32(vinv) == 1.0f;
    const int qm = (int)_mm512_cvtss_f32(hi);
    const __m256i qhi8 = _mm256_set1_epi8((char)qm), qlo8 = _mm256_set1_epi8((char)-qm);
    for (int k = 0; k < K; k++) {
        const float* c = cm + (size_t)k * D;
        __m512 t[NB];
        for (int b = 0; b < NB; b++) t[b] = _mm512_mul_ps(_mm512_set1_ps(c[0]), xv[b][0]);
        for (int j = 1; j < D; j++) {
            const __m512 cj = _mm512_set1_ps(c[j]);
            for (int b = 0; b < NB; b++) t[b] = _mm512_fmadd_ps(cj, xv[b][j], t[b]);
        }
        if ((MODE & B_WRITE) && packed) {
            // 32 int8 entries: round half to even (cvtps2dq), two saturating packs (32 -> 16 -> 8
            // bits, within each 128-bit lane), a dword permute into order, then the clamp; fewer
            // shuffle-port instructions than two vpmovdb. Saturating first, clamping after, gives
            // clamp(rint(v)): the bounds are integers within int8.
            const __m512i w = _mm512_packs_epi32(_mm512_cvtps_epi32(t[0]), _mm512_cvtps_epi32(t[1 % NB]));
            const __m512i b8 = _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0),
                                                        _mm512_packs_epi16(w, w));
            const __m256i q = _mm256_min_epi8(_mm256_max_epi8(_mm512_castsi512_si256(b8), qlo8), qhi8);
            _mm256_storeu_si256((__m256i*)(tm + (size_t)k * PP + p), q);
        }
        for (int b = 0; b < NB; b++) {
            if (MODE & B_MAX) amax = _mm512_max_ps(amax, _mm512_abs_ps(t[b]));
            if ((MODE & B_WRITE) && !packed) {
                // clamp, then round half to even (cvtps2dq, default MXCSR): the same as
                // clamp(rint(v)) since the bounds are integers
                const __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(t[b], vinv), lo), hi);
                const __m512i i = _mm512_cvtps_epi32(v);
                Q* dst = tm + (size_t)k * PP + p + 16 * b;
                if (sizeof(Q) == 1)
                    _mm_storeu_si128((__m128i*)dst, _mm512_cvtepi32_epi8(i));
                else
                    _mm256_storeu_si256((__m256i*)dst, _mm512_cvtepi32_epi16(i));
            }
        }
    }
}

template <typename Q, int MODE, int D>
QC_TARGET_AVX512 float build_avx512_d(const float* xp, const float* cb, const Geometry& g, float inv, float qmax,
                                      Q* tab) {
    constexpr int NB = D <= 8 ? 2 : 1;  // NB*D inputs + NB sums + a broadcast within the 32 registers
    const __m512 vinv = _mm512_set1_ps(inv), hi = _mm512_set1_ps(qmax), lo = _mm512_set1_ps(-qmax);
    __m512 amax = _mm512_setzero_ps();
    for (int m = 0; m < g.M; m++) {
        const float* xm = xp + (size_t)m * D * g.PP;
        const float* cm = cb + (size_t)m * g.K * D;
        Q* tm = (MODE & B_WRITE) ? tab + (size_t)m * g.K * g.PP : nullptr;
        size_t p = 0;
        for (; p + 16 * NB <= g.PP; p += 16 * NB)
            build_group_avx512<Q, MODE, D, NB>(xm, cm, tm, g.PP, g.K, p, vinv, lo, hi, amax);
        for (; p < g.PP; p += 16) build_group_avx512<Q, MODE, D, 1>(xm, cm, tm, g.PP, g.K, p, vinv, lo, hi, amax);
    }
    return _mm512_reduce_max_ps(amax);
}
#endif

#ifdef QC_X86
// The exact scale's max |t| (AVX-512), skipping the pixel blocks that cannot hold it: by
// Cauchy-Schwarz no product of block b of sub-space m exceeds
//   bound(m, b) = max_k ||codeword_mk|| * max_{p in b} ||x_m(p)||,
// so once the running max reaches it, the block's K*16 products need not be computed. Each
// sub-space's block of largest bound goes first (a high running max early), then every block
// whose bound still exceeds the running max. The bounds carry a margin of 2^-10 for float
// rounding (products and norms are off by a few ulps), so the max is that of the full pass.
template <int D>
QC_TARGET_AVX512 float max_pruned_avx512_d(const float* xp, const float* cb, const Geometry& g, float* bounds) {
    const size_t nb = g.PP / 16;
    const __m512 zero = _mm512_setzero_ps();
    for (int m = 0; m < g.M; m++) {
        const float* cm = cb + (size_t)m * g.K * D;
        float c2 = 0;
        for (int k = 0; k < g.K; k++) {
            float ss = 0;
            for (int j = 0; j < D; j++) ss = std::fma(cm[(size_t)k * D + j], cm[(size_t)k * D + j], ss);
            c2 = std::max(c2, ss);
        }
        const float cn = std::sqrt(c2) * (1.0f + 1.0f / 1024);
        const float* xm = xp + (size_t)m * D * g.PP;
        for (size_t b = 0; b < nb; b++) {
            __m512 ss = zero;
            for (int j = 0; j < D; j++) {
                const __m512 v = _mm512_loadu_ps(xm + (size_t)j * g.PP + 16 * b);
                ss = _mm512_fmadd_ps(v, v, ss);
            }
            bounds[(size_t)m * nb + b] = cn * std::sqrt(_mm512_reduce_max_ps(ss)) * (1.0f + 1.0f / 1024);
        }
    }
    __m512 amax = zero;
    for (int m = 0; m < g.M; m++) {
        float* bm = bounds + (size_t)m * nb;
        const size_t b = (size_t)(std::max_element(bm, bm + nb) - bm);
        build_group_avx512<int8_t, B_MAX, D, 1>(xp + (size_t)m * D * g.PP, cb + (size_t)m * g.K * D, nullptr, g.PP,
                                                g.K, 16 * b, zero, zero, zero, amax);
        bm[b] = -1;  // done
    }
    float am = _mm512_reduce_max_ps(amax);
    for (int m = 0; m < g.M; m++)
        for (size_t b = 0; b < nb; b++)
            if (bounds[(size_t)m * nb + b] > am) {
                build_group_avx512<int8_t, B_MAX, D, 1>(xp + (size_t)m * D * g.PP, cb + (size_t)m * g.K * D, nullptr,
                                                        g.PP, g.K, 16 * b, zero, zero, zero, amax);
                am = _mm512_reduce_max_ps(amax);
            }
    return am;
}
#endif

// max |t| over the whole table (the exact scale's first pass); bounds: M * PP/16 floats of scratch.
inline float table_max(ConvIsa isa, const float* xp, const float* cb, const Geometry& g, float* bounds);

template <typename Q, int MODE>
float build_generic(const float* xp, const float* cb, const Geometry& g, float inv, float qmax, Q* tab) {
    return build_body<Q, MODE, false>(xp, cb, g, inv, qmax, tab);
}
#ifdef QC_X86
template <typename Q, int MODE>
QC_TARGET_AVX2 float build_avx2(const float* xp, const float* cb, const Geometry& g, float inv, float qmax, Q* tab) {
    return build_body<Q, MODE, true>(xp, cb, g, inv, qmax, tab);
}
template <typename Q, int MODE>
QC_TARGET_AVX512 float build_avx512(const float* xp, const float* cb, const Geometry& g, float inv, float qmax, Q* tab) {
    switch (g.d) {  // the sub-vector lengths of the networks here; others take the generic loop
        case 1: return build_avx512_d<Q, MODE, 1>(xp, cb, g, inv, qmax, tab);
        case 2: return build_avx512_d<Q, MODE, 2>(xp, cb, g, inv, qmax, tab);
        case 3: return build_avx512_d<Q, MODE, 3>(xp, cb, g, inv, qmax, tab);
        case 4: return build_avx512_d<Q, MODE, 4>(xp, cb, g, inv, qmax, tab);
        case 6: return build_avx512_d<Q, MODE, 6>(xp, cb, g, inv, qmax, tab);
        case 8: return build_avx512_d<Q, MODE, 8>(xp, cb, g, inv, qmax, tab);
        case 16: return build_avx512_d<Q, MODE, 16>(xp, cb, g, inv, qmax, tab);
        default: return build_body<Q, MODE, true>(xp, cb, g, inv, qmax, tab);
    }
}
#endif

template <typename Q, int MODE>
float build(ConvIsa isa, const float* xp, const float* cb, const Geometry& g, float inv, float qmax, Q* tab) {
#ifdef QC_X86
    if (isa == C_AVX512) return build_avx512<Q, MODE>(xp, cb, g, inv, qmax, tab);
    if (isa == C_AVX2) return build_avx2<Q, MODE>(xp, cb, g, inv, qmax, tab);
#endif
    return build_generic<Q, MODE>(xp, cb, g, inv, qmax, tab);
}

inline float table_max(ConvIsa isa, const float* xp, const float* cb, const Geometry& g, float* bounds) {
#ifdef QC_X86
    if (isa == C_AVX512) switch (g.d) {
            case 4: return max_pruned_avx512_d<4>(xp, cb, g, bounds);
            case 8: return max_pruned_avx512_d<8>(xp, cb, g, bounds);
            case 16: return max_pruned_avx512_d<16>(xp, cb, g, bounds);
            default: break;
        }
#endif
    return build<int8_t, B_MAX>(isa, xp, cb, g, 1.0f, 0.0f, (int8_t*)nullptr);
}

}  // namespace qlconv
