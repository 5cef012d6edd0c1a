// Direct float convolution for layers with few input channels and a large stride (conv1 of
// AlexNet: 3x227x227, 11x11, stride 4, 96 outputs; CNN-S: 3x224x224, 7x7, stride 2), the
// layers whose look-up tables cannot pay off, run from their decoded weight.
//
// Layout: the input of one image and group is zero-padded and split into its stride*stride
// phases (phase_split of conv_kernels.h: xp[c][a*s + b][y*Wq + x], planes of Hq x Wq at a
// channel pitch PP). Output pixel t = oy*Wq + ox (0 <= t < L = OH*Wq; columns ox >= OW are
// scratch, never stored) reads, for item q = (c, i, j), xp[start(q) + t] with
// start(q) = c*PP + ((i%s)*s + j%s)*Hq*Wq + (i/s)*Wq + j/s: for a fixed item, consecutive
// output pixels read consecutive inputs, whatever the stride. So the kernel vectorizes over
// output pixels (contiguous loads, no gather) and broadcasts the weights.
//
// Weight: packed once by the caller as wp[group][oc block][item q][OCB] (items in (c, i, j)
// order, output channels past Ct zero), so the OCB weights of one item are one contiguous read.
//
// Loop order and why: per output-channel block (OCB weights of every item: AlexNet 12 x 363
// floats = 17 KB, in L1 while the block runs), over the pixels in blocks of NV vectors, over all
// items: NV input loads, OCB broadcasts, OCB*NV fused multiply-adds into OCB*NV accumulators
// held in registers for the whole sum (AVX-512: 12 x 2 = 24 of 32 zmm; AVX2: 6 x 2 = 12 of 16
// ymm). The accumulators leave once, as s y = acc + bias (optional ReLU), stored with lane masks
// that drop the scratch columns and shift each output row to its pitch OW. The sums are
// float32 with FMA in item order: within float tolerance of im2col + BLAS, not bit-identical.
//
// Trade-offs measured (AlexNet conv1, AVX-512; figures in the commit that added this file):
//   * register blocks of 12 channels x 2 vectors and 8 x 3 ran alike; 6 x 4 and 24 x 1 slower
//     (more broadcasts or more input loads per multiply-add);
//   * pixel blocks outer and channel blocks inner (the input block in L1, the 139 KB weight from
//     L2) was slower than channel blocks outer (the block's weight in L1, the input from L2);
//   * the scratch columns (Wq - OW of every Wq, 3.5% on AlexNet conv1) are computed and dropped:
//     removing them needs a blend per row crossing or a 3x larger pre-shifted input.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "conv_kernels.h"

namespace qlconv {

// Output channels per block (one broadcast weight each) and pixel vectors per block, per ISA.
constexpr int direct_ocb(ConvIsa isa) { return isa == C_AVX512 ? 12 : isa == C_AVX2 ? 6 : 8; }
template <int VL>
constexpr int direct_nv() { return 2; }

// start(q) for items q = (c, i, j) of one group, into xp (channel pitch PP).
inline void direct_starts(const Geometry& g, int64_t* start) {
    const int s = g.stride;
    const int64_t P = (int64_t)g.Hq * g.Wq;
    for (int c = 0; c < g.C; c++)
        for (int i = 0; i < g.kh; i++)
            for (int j = 0; j < g.kw; j++)
                start[((size_t)c * g.kh + i) * g.kw + j] =
                    (int64_t)c * g.PP + ((i % s) * s + j % s) * P + (i / s) * g.Wq + j / s;
}

// Generic block: OCB channels x (VL*NV) pixels from t0; lanes t >= L or ox >= OW are not stored.
template <int OCB, int VL>
void direct_block_generic(const float* xp, const int64_t* start, int n_items, const float* w, const float* bias,
                          int oc0, int n_oc, size_t t0, const Geometry& g, bool relu, float* out) {
    constexpr int T = VL * direct_nv<VL>();
    float acc[OCB][T] = {};
    for (int q = 0; q < n_items; q++) {
        const float* x = xp + start[q] + t0;
        const float* wq = w + (size_t)q * OCB;
        for (int o = 0; o < OCB; o++)
            for (int l = 0; l < T; l++) acc[o][l] += wq[o] * x[l];
    }
    const size_t plane = (size_t)g.OH * g.OW;
    for (int l = 0; l < T; l++) {
        const size_t t = t0 + l;
        if (t >= g.L || (int)(t % g.Wq) >= g.OW) continue;
        const size_t dst = t / g.Wq * g.OW + t % g.Wq;
        for (int o = 0; o < n_oc; o++) {
            const float v = acc[o][l] + bias[oc0 + o];
            out[(size_t)(oc0 + o) * plane + dst] = relu ? std::max(v, 0.0f) : v;
        }
    }
}

#ifdef QC_X86
// The rows a vector of 16 (8) output pixels from t touches: per row, the lanes that are real
// outputs and the shift from t to their place in the output plane (out index = t + l - shift).
struct RowPiece {
    uint32_t mask;
    int64_t shift;
};
inline int row_pieces(size_t t, int lanes, const Geometry& g, RowPiece* pc) {
    int n = 0;
    for (size_t r = t / g.Wq; r < (size_t)g.OH && r * g.Wq < t + lanes; r++) {
        const int64_t lo = std::max<int64_t>(0, (int64_t)(r * g.Wq) - (int64_t)t);
        const int64_t hi = std::min<int64_t>(lanes, (int64_t)(r * g.Wq + g.OW) - (int64_t)t);
        if (hi <= lo) continue;
        pc[n++] = {(uint32_t)(((1ull << hi) - 1) & ~((1ull << lo) - 1)), (int64_t)r * (g.Wq - g.OW)};
    }
    return n;
}

template <int OCB, int VL = 16>
QC_TARGET_AVX512 void direct_block_avx512(const float* xp, const int64_t* start, int n_items, const float* w,
                                          const float* bias, int oc0, int n_oc, size_t t0, const Geometry& g,
                                          bool relu, float* out) {
    __m512 acc[OCB][direct_nv<VL>()];
    for (int o = 0; o < OCB; o++)
        for (int v = 0; v < direct_nv<VL>(); v++) acc[o][v] = _mm512_setzero_ps();
    for (int q = 0; q < n_items; q++) {
        const float* x = xp + start[q] + t0;
        __m512 xv[direct_nv<VL>()];
        for (int v = 0; v < direct_nv<VL>(); v++) xv[v] = _mm512_loadu_ps(x + 16 * v);
        const float* wq = w + (size_t)q * OCB;
        for (int o = 0; o < OCB; o++) {
            const __m512 wo = _mm512_set1_ps(wq[o]);
            for (int v = 0; v < direct_nv<VL>(); v++) acc[o][v] = _mm512_fmadd_ps(wo, xv[v], acc[o][v]);
        }
    }
    const size_t plane = (size_t)g.OH * g.OW;
    const __m512 zero = _mm512_setzero_ps();
    for (int v = 0; v < direct_nv<VL>(); v++) {
        RowPiece pc[17];
        const size_t t = t0 + 16 * v;
        const int np = row_pieces(t, 16, g, pc);
        for (int o = 0; o < n_oc; o++) {
            __m512 y = _mm512_add_ps(acc[o][v], _mm512_set1_ps(bias[oc0 + o]));
            if (relu) y = _mm512_max_ps(y, zero);
            float* base = out + (size_t)(oc0 + o) * plane + t;
            for (int k = 0; k < np; k++) _mm512_mask_storeu_ps(base - pc[k].shift, (__mmask16)pc[k].mask, y);
        }
    }
}

template <int OCB, int VL = 8>
QC_TARGET_AVX2 void direct_block_avx2(const float* xp, const int64_t* start, int n_items, const float* w,
                                      const float* bias, int oc0, int n_oc, size_t t0, const Geometry& g, bool relu,
                                      float* out) {
    __m256 acc[OCB][direct_nv<VL>()];
    for (int o = 0; o < OCB; o++)
        for (int v = 0; v < direct_nv<VL>(); v++) acc[o][v] = _mm256_setzero_ps();
    for (int q = 0; q < n_items; q++) {
        const float* x = xp + start[q] + t0;
        __m256 xv[direct_nv<VL>()];
        for (int v = 0; v < direct_nv<VL>(); v++) xv[v] = _mm256_loadu_ps(x + 8 * v);
        const float* wq = w + (size_t)q * OCB;
        for (int o = 0; o < OCB; o++) {
            const __m256 wo = _mm256_broadcast_ss(wq + o);
            for (int v = 0; v < direct_nv<VL>(); v++) acc[o][v] = _mm256_fmadd_ps(wo, xv[v], acc[o][v]);
        }
    }
    const size_t plane = (size_t)g.OH * g.OW;
    const __m256 zero = _mm256_setzero_ps();
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int v = 0; v < direct_nv<VL>(); v++) {
        RowPiece pc[9];
        const size_t t = t0 + 8 * v;
        const int np = row_pieces(t, 8, g, pc);
        __m256i masks[9];
        for (int k = 0; k < np; k++) {
            const __m256i bit = _mm256_sllv_epi32(_mm256_set1_epi32(1), lane);
            masks[k] = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)pc[k].mask), bit), bit);
        }
        for (int o = 0; o < n_oc; o++) {
            __m256 y = _mm256_add_ps(acc[o][v], _mm256_set1_ps(bias[oc0 + o]));
            if (relu) y = _mm256_max_ps(y, zero);
            float* base = out + (size_t)(oc0 + o) * plane + t;
            for (int k = 0; k < np; k++) _mm256_maskstore_ps(base - pc[k].shift, masks[k], y);
        }
    }
}
#endif

// One group of one image: xp phase-split (with >= 64 floats of zeroed slack past C*PP), wp this
// group's packed weight, out this group's Ct output planes.
template <int OCB, int VL, typename Block>
void direct_group(const float* xp, const int64_t* start, const float* wp, const float* bias, const Geometry& g,
                  bool relu, float* out, Block block) {
    const int n_items = g.C * g.kh * g.kw;
    const size_t step = (size_t)direct_nv<VL>() * VL;  // pixels per block
    for (int oc0 = 0, b = 0; oc0 < g.Ct; oc0 += OCB, b++) {
        const float* w = wp + (size_t)b * n_items * OCB;
        for (size_t t0 = 0; t0 < g.L; t0 += step)
            block(xp, start, n_items, w, bias, oc0, std::min(OCB, g.Ct - oc0), t0, g, relu, out);
    }
}

// Per-thread scratch: the phase-split input keeps its zeros between calls of the same geometry
// (zeroing 0.6 MB of it cost AlexNet's conv1 2% of its time), so only the first call clears it.
struct DirectScratch {
    std::vector<float> xp;
    std::vector<int64_t> start, colmap;
    int key[6] = {0, 0, 0, 0, 0, 0};  // C, H, W, stride, padding, kh*kw of the geometry in xp
};
inline DirectScratch& direct_scratch() {
    thread_local DirectScratch s;
    return s;
}

// The layer: x (n, groups*C, H, W), wp (groups, ceil(Ct/OCB), C*kh*kw, OCB), bias (groups*Ct)
// -> out (n, groups*Ct, OH, OW).
inline void direct_conv2d(ConvIsa isa, const float* x, int n, int groups, const float* wp, const float* bias,
                          const Geometry& g, bool relu, float* out) {
    DirectScratch& sc = direct_scratch();
    const int ocb = direct_ocb(isa), n_items = g.C * g.kh * g.kw;
    const size_t nb = (size_t)(g.Ct + ocb - 1) / ocb;
    const int key[6] = {g.C, g.H, g.W, g.stride, g.padding, g.kh * 65536 + g.kw};
    bool same = std::equal(key, key + 6, sc.key);
    if (!same) {
        sc.xp.assign((size_t)g.C * g.PP + 64, 0.0f);  // 64 zeros of slack: blocks read past L
        std::copy(key, key + 6, sc.key);
    }
    if (sc.start.size() < (size_t)n_items) sc.start.resize(n_items);
    float* xp = sc.xp.data();
    direct_starts(g, sc.start.data());
    std::vector<int64_t>& colmap = sc.colmap;
    std::vector<int64_t>& start_buf = sc.start;
    const size_t in_group = (size_t)g.C * g.H * g.W, out_group = (size_t)g.Ct * g.OH * g.OW;
    for (int i = 0; i < n; i++)
        for (int gi = 0; gi < groups; gi++) {
            const size_t ig = (size_t)i * groups + gi;
            phase_split(x + ig * in_group, g, xp, colmap, !same, isa == C_AVX512);
            same = true;
            const float* w = wp + (size_t)gi * nb * n_items * ocb;
            const float* b = bias + (size_t)gi * g.Ct;
            float* o = out + ig * out_group;
#ifdef QC_X86
            if (isa == C_AVX512) {
                direct_group<direct_ocb(C_AVX512), 16>(xp, start_buf.data(), w, b, g, relu, o,
                                                   direct_block_avx512<direct_ocb(C_AVX512)>);
                continue;
            }
            if (isa == C_AVX2) {
                direct_group<direct_ocb(C_AVX2), 8>(xp, start_buf.data(), w, b, g, relu, o,
                                                 direct_block_avx2<direct_ocb(C_AVX2)>);
                continue;
            }
#endif
            direct_group<direct_ocb(C_GENERIC), 4>(xp, start_buf.data(), w, b, g, relu, o,
                                                direct_block_generic<direct_ocb(C_GENERIC), 4>);
        }
}

}  // namespace qlconv
