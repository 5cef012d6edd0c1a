// The integer conv layer driver: scratch, tiles of sub-spaces, the whole layer.
//
// Included by _lut_simd.cpp; builds on the per-ISA pieces of conv_kernels.h (layout,
// scales, loop orders and measured trade-offs are documented there). Per image and group:
// phase split and scale (table_scale), then the table rows and the run-adds, either for the
// whole table or, past TILE_BYTES, for tiles of sub-spaces (group_sums); then the output
// s * acc + bias (optional ReLU) while each accumulator is still in cache.
#pragma once

#include <chrono>

#include "conv_build.h"

namespace qlconv {

// Per-thread scratch, kept between calls (fresh allocations of this size are
// fresh mmaps with their page faults on every call).
struct ConvScratch {
    std::vector<float> xp, norms, bounds, cb_scaled;
    std::vector<int8_t> tab8;
    std::vector<int16_t> tab16, acc16;
    std::vector<int32_t> acc32;
    std::vector<int64_t> start, offs;
    std::vector<int64_t> colmap;
};
inline ConvScratch& conv_scratch() {
    thread_local ConvScratch s;
    return s;
}
template <class T>
T* grow(std::vector<T>& v, size_t n) {
    if (v.size() < n) v.resize(n);
    return v.data();
}
template <typename Q>
Q* table_buffer(ConvScratch& s, size_t n);
template <>
inline int8_t* table_buffer<int8_t>(ConvScratch& s, size_t n) { return grow(s.tab8, n); }
template <>
inline int16_t* table_buffer<int16_t>(ConvScratch& s, size_t n) { return grow(s.tab16, n); }
template <typename A>
A* acc_buffer(ConvScratch& s, size_t n);
template <>
inline int16_t* acc_buffer<int16_t>(ConvScratch& s, size_t n) { return grow(s.acc16, n); }
template <>
inline int32_t* acc_buffer<int32_t>(ConvScratch& s, size_t n) { return grow(s.acc32, n); }

// The layer geometry of qcnn_lite.kernels._numpy.conv_geometry, for sizes the caller has
// checked (positive, C = M*d, the kernel fits the padded input).
inline Geometry geometry_of(int C, int H, int W, int M, int K, int d, int Ct, int kh, int kw, int stride,
                            int padding) {
    Geometry g;
    const int s = stride;
    g.C = C; g.H = H; g.W = W; g.M = M; g.K = K; g.d = d; g.Ct = Ct; g.kh = kh; g.kw = kw;
    g.stride = s; g.padding = padding;
    g.OH = (H + 2 * padding - kh) / s + 1;
    g.OW = (W + 2 * padding - kw) / s + 1;
    g.Hq = std::max((H + 2 * padding + s - 1) / s, g.OH + (kh - 1) / s) + 1;
    g.Wq = std::max((W + 2 * padding + s - 1) / s, g.OW + (kw - 1) / s);
    g.SP = (size_t)s * s * g.Hq * g.Wq;
    g.PP = (g.SP + BLK - 1) / BLK * BLK;
    g.L = (size_t)g.OH * g.Wq;
    return g;
}

inline size_t table_size(const Geometry& g) { return (size_t)g.M * g.K * g.PP + 64; }  // slack: runs read up to 31 values past their end

// Where item q = (i, j, m) starts inside its codeword's row: phase of tap (i, j) and its shift.
inline void item_starts(const Geometry& g, int64_t* start) {
    const int s = g.stride;
    const int64_t P = (int64_t)g.Hq * g.Wq;
    for (int i = 0; i < g.kh; i++)
        for (int j = 0; j < g.kw; j++)
            for (int m = 0; m < g.M; m++)
                start[(i * g.kw + j) * g.M + m] =
                    (int64_t)m * g.K * g.PP + ((i % s) * s + j % s) * P + (i / s) * g.Wq + j / s;
}

// The scale of one image and group's table; xp receives its phase-split input.
inline float table_scale(ConvIsa isa, const float* x, const float* cb, const Geometry& g, int bits, bool exact,
                         ConvScratch& sc, float* xp) {
    phase_split(x, g, xp, sc.colmap);
    const int qmax = qmax_of(bits, g.kh * g.kw * g.M);
    const float bound = exact ? table_max(isa, xp, cb, g, grow(sc.bounds, (size_t)g.M * (g.PP / BLK)))
                              : cs_bound(xp, cb, g, grow(sc.norms, g.PP));
    return scale_of(bound, qmax);
}

// Rows of sub-spaces m0 <= m < m1 of the quantized table into tab (rows (m - m0)*K + k, pitch PP).
template <typename Q>
void table_rows(ConvIsa isa, const float* xp, const float* cb, const Geometry& g, int bits, float s, int m0, int m1,
                Q* tab) {
    Geometry gb = g;
    gb.M = m1 - m0;
    const int qmax = qmax_of(bits, g.kh * g.kw * g.M);
    const float* c = cb + (size_t)m0 * g.K * g.d;
    float inv = 1.0f / s;
    if (isa != C_GENERIC) {  // the FMA builds: codewords scaled by 1/s, products in units of s (no multiply)
        const size_t n = (size_t)gb.M * g.K * g.d;
        float* cs = grow(conv_scratch().cb_scaled, n);
        for (size_t i = 0; i < n; i++) cs[i] = c[i] * inv;
        c = cs;
        inv = 1.0f;
    }
    build<Q, B_WRITE>(isa, xp + (size_t)m0 * g.d * g.PP, c, gb, inv, (float)qmax, tab);
    std::memset(tab + (size_t)gb.M * g.K * g.PP, 0, 64 * sizeof(Q));
}

// The whole quantized table of one image and group into tab (M*K rows of pitch PP); returns the scale.
template <typename Q>
float quantized_table(ConvIsa isa, const float* x, const float* cb, const Geometry& g, int bits, bool exact,
                      ConvScratch& sc, Q* tab) {
    float* xp = grow(sc.xp, (size_t)g.C * g.PP);
    const float s = table_scale(isa, x, cb, g, bits, exact, sc, xp);
    table_rows<Q>(isa, xp, cb, g, bits, s, 0, g.M, tab);
    return s;
}

// Sub-spaces per tile: a whole table up to TILE_BYTES; else blocks of sub-spaces whose rows fit it.
// Measured: CNN-S conv4 (3.3 MB of int8 table a group, past this Xeon's 2 MB L2) ran its run-adds
// at 21 adds/ns against 46 for AlexNet conv2 (0.73 MB); in tiles the whole layer took
// 5.72 ms untiled, 4.53 at 2 MiB, 3.89 at 1 MiB, 3.88 at 512 KiB, 4.01 at 256 KiB (more passes
// over the Ct accumulators). AlexNet's tables (<= 0.94 MB) run untiled.
constexpr size_t TILE_BYTES = 1 << 20;
inline int tile_subspaces(const Geometry& g, size_t entry_bytes, size_t tile_bytes) {
    const size_t per_m = (size_t)g.K * g.PP * entry_bytes;
    return (int)std::max<size_t>(1, std::min<size_t>(g.M, tile_bytes / per_m));
}

// Integer sums of one group's output channels; emit(oc, acc) gets each channel's accumulator
// (OH*Wq values at pitch Wq). rows(m0, m1) returns the table rows of sub-spaces [m0, m1) (row
// (m - m0)*K + k). With mb >= M: one table, one accumulator in L1 per channel in turn. Else the
// sub-spaces go in tiles of mb whose table rows stay in L2 while every channel adds its runs of
// the tile into its own accumulator (Ct*Lv values, also L2): the sums are exact in any order.
template <typename Q, typename A, typename C, typename Rows, typename Emit>
void group_sums(ConvIsa isa, const C* codes, const Geometry& g, int mb, ConvScratch& sc, Rows rows, Emit emit) {
    const int n_items = g.kh * g.kw * g.M, taps = g.kh * g.kw;
    const size_t Lv = (g.L + 31) / 32 * 32;
    int64_t* start = grow(sc.start, (size_t)n_items);
    int64_t* offs = grow(sc.offs, (size_t)n_items);
    item_starts(g, start);  // includes m*K*PP
    if (mb >= g.M) {
        const Q* tab = rows(0, g.M);
        A* acc = acc_buffer<A>(sc, Lv);
        for (int oc = 0; oc < g.Ct; oc++) {
            const C* c = codes + (size_t)oc * n_items;
            for (int q = 0; q < n_items; q++) offs[q] = start[q] + (int64_t)c[q] * g.PP;
            std::memset(acc, 0, Lv * sizeof(A));
            accumulate(isa, tab, offs, n_items, g.L, acc);
            emit(oc, acc);
        }
        return;
    }
    A* acc = acc_buffer<A>(sc, (size_t)g.Ct * Lv);
    std::memset(acc, 0, (size_t)g.Ct * Lv * sizeof(A));
    for (int m0 = 0; m0 < g.M; m0 += mb) {
        const int m1 = std::min(g.M, m0 + mb);
        const Q* tab = rows(m0, m1);
        const int64_t shift = (int64_t)m0 * g.K * g.PP;
        for (int oc = 0; oc < g.Ct; oc++) {
            const C* c = codes + (size_t)oc * n_items;
            int nb = 0;
            for (int t = 0; t < taps; t++)
                for (int m = m0; m < m1; m++) {
                    const int q = t * g.M + m;
                    offs[nb++] = start[q] - shift + (int64_t)c[q] * g.PP;
                }
            accumulate(isa, tab, offs, nb, g.L, acc + (size_t)oc * Lv);
        }
    }
    for (int oc = 0; oc < g.Ct; oc++) emit(oc, acc + (size_t)oc * Lv);
}

// Integer sums of one group from a given table src (M*K rows of SP entries, any |q| <= qmax):
// out (Ct, L) int32, columns >= OW scratch; mb sub-spaces a tile. The tests' entry to the run-adds.
template <typename Q, typename A, typename C>
void sums_of_table(ConvIsa isa, const Q* src, const C* codes, const Geometry& g, int mb, int32_t* out) {
    ConvScratch& sc = conv_scratch();
    Q* t = table_buffer<Q>(sc, table_size(g));
    std::memset(t, 0, table_size(g) * sizeof(Q));
    const size_t rows = (size_t)g.M * g.K;
    for (size_t r = 0; r < rows; r++) std::memcpy(t + r * g.PP, src + r * g.SP, g.SP * sizeof(Q));
    auto tile = [&](int m0, int) -> const Q* { return t + (size_t)m0 * g.K * g.PP; };
    group_sums<Q, A, C>(isa, codes, g, std::max(1, mb), sc, tile, [&](int oc, const A* acc) {
        for (size_t i = 0; i < g.L; i++) out[(size_t)oc * g.L + i] = acc[i];
    });
}

// One output plane from its accumulator (pitch Wq): y = s * acc + bias, optional ReLU. The sums
// are exact integers; s * acc + bias rounds once more on the FMA builds (the generic one
// multiplies and adds, as the emulation).
template <typename A>
inline void emit_generic(const A* acc, const Geometry& g, float s, float bias, bool relu, float* y) {
    for (int r = 0; r < g.OH; r++)
        for (int col = 0; col < g.OW; col++) {
            float v = s * (float)acc[(size_t)r * g.Wq + col] + bias;
            y[(size_t)r * g.OW + col] = relu ? std::max(v, 0.0f) : v;
        }
}
#ifdef QC_X86
// int16 accumulators, 16 columns a vector (masked at the row's end): the scalar loop above took
// a third of a 13x13 layer's run-add time.
QC_TARGET_AVX512 inline void emit_avx512(const int16_t* acc, const Geometry& g, float s, float bias, bool relu,
                                         float* y) {
    const __m512 vs = _mm512_set1_ps(s), vb = _mm512_set1_ps(bias), zero = _mm512_setzero_ps();
    for (int r = 0; r < g.OH; r++) {
        const int16_t* a = acc + (size_t)r * g.Wq;
        float* yr = y + (size_t)r * g.OW;
        for (int col = 0; col < g.OW; col += 16) {
            const __mmask16 m = (__mmask16)(g.OW - col >= 16 ? 0xFFFF : (1u << (g.OW - col)) - 1);
            const __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm512_castsi512_si256(_mm512_maskz_loadu_epi16((__mmask32)m, a + col))));
            __m512 o = _mm512_fmadd_ps(vs, v, vb);
            if (relu) o = _mm512_max_ps(o, zero);
            _mm512_mask_storeu_ps(yr + col, m, o);
        }
    }
}
#endif
template <typename A>
inline void emit_plane(ConvIsa isa, const A* acc, const Geometry& g, float s, float bias, bool relu, float* y) {
#ifdef QC_X86
    if constexpr (sizeof(A) == 2)
        if (isa == C_AVX512) return emit_avx512(acc, g, s, bias, relu, y);
#endif
    emit_generic(acc, g, s, bias, relu, y);
}

// Optional per-phase times (seconds, added to times[phase]) for profiling; without a
// buffer it reads no clock. The adds phase is whatever lies between the other laps.
enum Phase { PH_SCALE = 0, PH_BUILD = 1, PH_ADDS = 2, PH_EPILOGUE = 3, N_PHASES = 4 };
struct PhaseClock {
    double* times;
    std::chrono::steady_clock::time_point t0;
    explicit PhaseClock(double* t) : times(t) {}
    void start() {
        if (times) t0 = std::chrono::steady_clock::now();
    }
    void lap(Phase p) {
        if (!times) return;
        const auto t1 = std::chrono::steady_clock::now();
        times[p] += std::chrono::duration<double>(t1 - t0).count();
        t0 = t1;
    }
};

// The whole layer: x (n, groups*C, H, W), codes (groups*Ct, kh, kw, M), bias (groups*Ct,)
// -> out (n, groups*Ct, OH, OW); scales (n, groups) receives each table's scale. Tables larger
// than tile_bytes are built and summed in tiles of sub-spaces (group_sums).
template <typename Q, typename A, typename C>
void conv2d(ConvIsa isa, const float* x, int n, int groups, const float* cb, const C* codes, const float* bias,
            const Geometry& g, int bits, bool exact, bool relu, float* out, float* scales,
            size_t tile_bytes = TILE_BYTES, double* times = nullptr) {
    ConvScratch& sc = conv_scratch();
    PhaseClock clock(times);
    const int mb = tile_subspaces(g, sizeof(Q), tile_bytes);
    Q* tab = table_buffer<Q>(sc, (size_t)mb * g.K * g.PP + 64);
    float* xp = grow(sc.xp, (size_t)g.C * g.PP);
    const size_t in_group = (size_t)g.C * g.H * g.W, out_plane = (size_t)g.OH * g.OW;
    const size_t codes_group = (size_t)g.Ct * g.kh * g.kw * g.M;
    for (int i = 0; i < n; i++)
        for (int gi = 0; gi < groups; gi++) {
            clock.start();
            const float s = table_scale(isa, x + ((size_t)i * groups + gi) * in_group, cb, g, bits, exact, sc, xp);
            clock.lap(PH_SCALE);
            scales[(size_t)i * groups + gi] = s;
            float* o = out + ((size_t)i * groups + gi) * g.Ct * out_plane;
            const float* b = bias + (size_t)gi * g.Ct;
            auto rows = [&](int m0, int m1) -> const Q* {
                clock.lap(PH_ADDS);
                table_rows<Q>(isa, xp, cb, g, bits, s, m0, m1, tab);
                clock.lap(PH_BUILD);
                return (const Q*)tab;
            };
            group_sums<Q, A, C>(isa, codes + gi * codes_group, g, mb, sc, rows, [&](int oc, const A* acc) {
                clock.lap(PH_ADDS);
                emit_plane(isa, acc, g, s, b[oc], relu, o + (size_t)oc * out_plane);
                clock.lap(PH_EPILOGUE);
            });
            clock.lap(PH_ADDS);
        }
}

}  // namespace qlconv
