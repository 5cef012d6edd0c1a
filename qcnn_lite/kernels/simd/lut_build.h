// The fc layer's per-input table: build it, quantize it to 8 bits, and run a whole layer
// (the accumulation kernels are in lut_kernels.h, which includes this file at its end).
#pragma once

#include "lut_kernels.h"

namespace qlsimd {

// ------------------------------------------------ table build + quantize ----
// lut[m, k] = <x[m*d : m*d+d], codebooks[m, k]>, then 8 bits per entry:
//   mn[m] = min_k lut[m, k];  range = max_{m,k} (lut[m, k] - mn[m])   (float32)
//   scale = range / 255 (1 if range is 0);  inv = 1 / scale            (float32)
//   q[m, k] = rint(clamp((lut[m, k] - mn[m]) * inv, 0, 255))
//   offset = sum_m mn[m] in double.
// qcnn_lite.kernels._shuffle.quantize_tables is the same arithmetic in numpy
// (same float32 operations, round half to even), so both give the same q.
// max_k(lut - mn) = max_k(lut) - mn exactly (rounding is monotonic): one pass.
// Scalar rint is (v + 1.5*2^23) - 1.5*2^23, exact for 0 <= v < 2^22.
//
// The table build and quantization are the layer's fixed cost per input: the
// plain loops below took 0.55 ms of fc6's 0.91 ms (K=32, d=4; AMD EPYC, g++ 12),
// more than the shuffle sums. The AVX2 versions (d=4 with hadd, d=1 a
// broadcast multiply; 16 entries a vector for the rounding) bring it to ~0.05 ms.
template <int D>
QL_INLINE void table_row(const float* xm, const float* cb, int K, int d, float* out) {
    const int dd = D > 0 ? D : d;
    for (int k = 0; k < K; k++) {
        float s = 0.f;
        for (int j = 0; j < dd; j++) s += xm[j] * cb[k * dd + j];
        out[k] = s;
    }
}

QL_INLINE void build_table(const float* x, const float* codebooks, int M, int K, int d, float* lut) {
    for (int m = 0; m < M; m++) {
        const float* cb = codebooks + (size_t)m * K * d;
        float* out = lut + (size_t)m * K;
        const float* xm = x + (size_t)m * d;
        switch (d) {
            case 1: table_row<1>(xm, cb, K, d, out); break;
            case 2: table_row<2>(xm, cb, K, d, out); break;
            case 4: table_row<4>(xm, cb, K, d, out); break;
            default: table_row<0>(xm, cb, K, d, out); break;
        }
    }
}

QL_INLINE uint8_t quantize_one(float v, float lo, float inv) {
    float t = (v - lo) * inv;
    t = t < 255.f ? t : 255.f;  // clamped before rounding: same q, and NaN -> 255, a valid entry
    t = t > 0.f ? t : 0.f;
    const float magic = 12582912.f;  // 1.5 * 2^23
    return (uint8_t)(int)((t + magic) - magic);
}

// Row minima into mn, returns the range (max over rows of rowmax - rowmin).
QL_INLINE float row_extrema(const float* lut, int M, int K, float* mn, double* offset) {
    float range = 0.f;
    double off = 0.0;
    for (int m = 0; m < M; m++) {
        const float* row = lut + (size_t)m * K;
        float lo = row[0], hi = row[0];
        for (int k = 1; k < K; k++) {
            lo = row[k] < lo ? row[k] : lo;
            hi = row[k] > hi ? row[k] : hi;
        }
        const float r = hi - lo;
        range = r > range ? r : range;
        mn[m] = lo;
        off += (double)lo;
    }
    *offset = off;
    return range;
}

// lut (M x K) -> q (rows of Kp bytes; entries >= K untouched); returns scale,
// writes offset. mn: scratch of M floats.
QL_INLINE float quantize_table(const float* lut, int M, int K, int Kp, uint8_t* q, float* mn, double* offset) {
    const float range = row_extrema(lut, M, K, mn, offset);
    const float scale = range > 0.f ? range / 255.f : 1.f;
    const float inv = 1.f / scale;
    for (int m = 0; m < M; m++) {
        const float* row = lut + (size_t)m * K;
        uint8_t* qr = q + (size_t)m * Kp;
        for (int k = 0; k < K; k++) qr[k] = quantize_one(row[k], mn[m], inv);
    }
    return scale;
}

// The whole fc layer, n input rows: per row the float table and its 8-bit form (prep: the
// build + quantize of one ISA, returns the scale and writes the offset), the shuffle sums,
// y[r, o] = scale * isum[o] + (offset + bias[o]). Scratch: qp (Mp x Kp, zeroed by the caller:
// the padding entries the shuffles read must be 0), lut (M*K), mn (M), isum (nb*block).
template <class Prep>
inline void linear_layer(Isa isa, Prep prep, const float* x, int n, const float* cb, int M, int K, int d,
                         const uint8_t* codes, int n_out, int block, const float* bias, float* y, uint8_t* qp,
                         float* lut, float* mn, uint32_t* isum) {
    const int Kp = kp_of(K, isa), nb = (n_out + block - 1) / block;
    for (int r = 0; r < n; r++) {
        double off;
        const float scale = prep(x + (size_t)r * M * d, cb, M, K, d, Kp, lut, mn, qp, &off);
        accumulate(isa, qp, M, K, codes, nb, isum, block);
        const float offf = (float)off;
        float* yr = y + (size_t)r * n_out;
        for (int o = 0; o < n_out; o++) yr[o] = scale * (float)isum[o] + (offf + bias[o]);
    }
}

// The plain table build + quantization as a prep of linear_layer.
inline float prep_generic(const float* x, const float* cb, int M, int K, int d, int Kp, float* lut, float* mn,
                          uint8_t* q, double* off) {
    build_table(x, cb, M, K, d, lut);
    return quantize_table(lut, M, K, Kp, q, mn, off);
}

#ifdef QL_X86
QL_TARGET_AVX2 QL_INLINE float hmin8(__m256 v) {
    __m128 a = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_min_ps(a, _mm_movehl_ps(a, a));
    a = _mm_min_ss(a, _mm_shuffle_ps(a, a, 1));
    return _mm_cvtss_f32(a);
}
QL_TARGET_AVX2 QL_INLINE float hmax8(__m256 v) {
    __m128 a = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_max_ps(a, _mm_movehl_ps(a, a));
    a = _mm_max_ss(a, _mm_shuffle_ps(a, a, 1));
    return _mm_cvtss_f32(a);
}

// d = 4: eight codewords (32 floats) per step; products summed (x0c0 + x1c1) + (x2c2 + x3c3)
// by two hadd levels, which leave the order k0 k2 k4 k6 | k1 k3 k5 k7, undone by one permute.
QL_TARGET_AVX2 inline void build_table_avx2(const float* x, const float* codebooks, int M, int K, int d,
                                            float* lut) {
    if ((d != 4 && d != 1) || K % 8) {
        build_table(x, codebooks, M, K, d, lut);
        return;
    }
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int m = 0; m < M; m++) {
        const float* cb = codebooks + (size_t)m * K * d;
        float* out = lut + (size_t)m * K;
        if (d == 1) {
            const __m256 xx = _mm256_set1_ps(x[m]);
            for (int k = 0; k < K; k += 8) _mm256_storeu_ps(out + k, _mm256_mul_ps(xx, _mm256_loadu_ps(cb + k)));
            continue;
        }
        const __m256 xx = _mm256_broadcast_ps((const __m128*)(x + (size_t)m * 4));
        for (int k = 0; k < K; k += 8) {
            const float* c = cb + 4 * k;
            const __m256 p0 = _mm256_mul_ps(_mm256_loadu_ps(c), xx), p1 = _mm256_mul_ps(_mm256_loadu_ps(c + 8), xx);
            const __m256 p2 = _mm256_mul_ps(_mm256_loadu_ps(c + 16), xx), p3 = _mm256_mul_ps(_mm256_loadu_ps(c + 24), xx);
            const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(p0, p1), _mm256_hadd_ps(p2, p3));
            _mm256_storeu_ps(out + k, _mm256_permutevar8x32_ps(h, order));
        }
    }
}

// Same arithmetic as quantize_table; cvtps rounds half to even (the default MXCSR mode).
QL_TARGET_AVX2 inline float quantize_table_avx2(const float* lut, int M, int K, int Kp, uint8_t* q, float* mn,
                                                double* offset) {
    if (K % 16) return quantize_table(lut, M, K, Kp, q, mn, offset);
    float range = 0.f;
    double off = 0.0;
    for (int m = 0; m < M; m++) {
        const float* row = lut + (size_t)m * K;
        __m256 lo = _mm256_loadu_ps(row), hi = lo;
        for (int k = 8; k < K; k += 8) {
            const __m256 v = _mm256_loadu_ps(row + k);
            lo = _mm256_min_ps(lo, v);
            hi = _mm256_max_ps(hi, v);
        }
        const float l = hmin8(lo), r = hmax8(hi) - l;
        range = r > range ? r : range;
        mn[m] = l;
        off += (double)l;
    }
    *offset = off;
    const float scale = range > 0.f ? range / 255.f : 1.f;
    const __m256 inv = _mm256_set1_ps(1.f / scale), zero = _mm256_setzero_ps(), top = _mm256_set1_ps(255.f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int m = 0; m < M; m++) {
        const float* row = lut + (size_t)m * K;
        const __m256 lo = _mm256_set1_ps(mn[m]);
        for (int k = 0; k < K; k += 16) {
            // min(v, 255) first (min_ps gives 255 for a NaN, as the scalar path), then max(., 0)
            __m256 a = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(row + k), lo), inv);
            __m256 b = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(row + k + 8), lo), inv);
            a = _mm256_max_ps(_mm256_min_ps(a, top), zero);
            b = _mm256_max_ps(_mm256_min_ps(b, top), zero);
            const __m256i w = _mm256_packs_epi32(_mm256_cvtps_epi32(a), _mm256_cvtps_epi32(b));
            const __m256i by = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(w, w), order);
            _mm_storeu_si128((__m128i*)(q + (size_t)m * Kp + k), _mm256_castsi256_si128(by));
        }
    }
    return scale;
}
#endif  // QL_X86

}  // namespace qlsimd
