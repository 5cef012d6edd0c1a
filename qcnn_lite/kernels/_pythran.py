"""Look-up-table accumulation kernels, compiled by Pythran into ``qcnn_lite.kernels._pythran``.

This file is Pythran source: plain Python over numpy arrays, typed by the
``#pythran export`` lines. It is never imported as Python (it would be very
slow); :mod:`qcnn_lite.kernels._compiled` calls the extension built from it.

The split of the work follows the paper:

1. The look-up table -- inner products of input sub-vectors with every
   codeword -- is a small dense matrix product. numpy builds it outside these
   kernels (one BLAS call per sub-space).
2. The kernels below do the rest: sums of table entries picked by the codes.
   That part has no multiplications at all, and it is where Q-CNN saves time.

No BLAS here (the extension is built with ``-DPYTHRAN_BLAS_NONE``): only loops.

Integer tables: ``conv_table_int`` builds and quantizes a conv table
in one pass (int8 or int16 entries, one scale) and ``conv_int_accumulate``
sums its runs in int16/int32: the portable path of
:mod:`qcnn_lite.kernels._convq`, whose numpy emulation they match exactly.

Convolution layout. The table of one image is ``lut[g, m*K + k, ph, y*Wq + x]``
(``_compiled`` builds it one group at a time, so g = 0 there): group g, sub-space m, codeword k, then
the zero-padded input map split into its ``stride*stride`` phases
(``ph = (row % stride) * stride + col % stride``), each phase a flat plane
of Hq x Wq pixels. The inner products are only those of the real pixels; the
padding holds zeros, and a zero pixel has a zero table entry, so a tap in the
padding adds exactly 0 -- the same result as skipping it.

For one output channel, one kernel tap and one sub-space the codeword is
fixed, so the tap's contribution to the whole output plane is one shifted
table plane. The phase split makes that shift contiguous for every stride:
tap (i, j) reads phase ``(i % s, j % s)`` at offset ``(i // s, j // s)``.
Keeping the output plane at the table's row pitch Wq (a few scratch columns
per row, dropped at the end) turns every shifted plane into ONE contiguous
run: the hot loop adds whole runs, no gathers, and the compiler vectorizes it.

Measured trade-offs (AlexNet, one thread; see the bench module): summing
eight runs per pass over the accumulator (four did as well); tiling the output rows to
keep the table in L2 lost to the extra per-run work, and so did a
plane-major order (each table plane read once, added into every output
channel that uses it). For fc, pair tables (one look-up per two sub-spaces),
blocking the sub-spaces to keep the table in L1, and reading eight codes per
64-bit load all lost or gained nothing: the random table reads themselves are
the limit (about one per cycle).
"""
import numpy as np


#pythran export linear_accumulate(float32[:, :, :], uint8[:, :], float32[:])
#pythran export linear_accumulate(float32[:, :, :], uint16[:, :], float32[:])
def linear_accumulate(lut, codes, bias):
    """y[b, o] = bias[o] + sum_m lut[b, m, codes[o, m]].

    lut (n, M, K) float32, codes (out, M), bias (out,) -> (n, out) float32.
    For one input this is a gather: M table reads per output. Four outputs are
    summed at once so four independent add chains hide the add latency; each
    chain keeps the sub-space order m = 0, 1, ... of the reference.
    ``table[m][code]`` with an unsigned code compiles to two instructions per
    read (load the code, add the table entry): no negative-index checks.
    """
    n = lut.shape[0]
    n_out, M = codes.shape
    y = np.empty((n, n_out), np.float32)
    n4 = n_out - n_out % 4
    for b in range(n):
        table = lut[b]
        #omp parallel for schedule(static)
        for o in range(0, n4, 4):
            c0, c1, c2, c3 = codes[o], codes[o + 1], codes[o + 2], codes[o + 3]
            s0 = np.float32(0)
            s1 = np.float32(0)
            s2 = np.float32(0)
            s3 = np.float32(0)
            for m in range(M):
                row = table[m]
                s0 += row[c0[m]]
                s1 += row[c1[m]]
                s2 += row[c2[m]]
                s3 += row[c3[m]]
            y[b, o] = s0 + bias[o]
            y[b, o + 1] = s1 + bias[o + 1]
            y[b, o + 2] = s2 + bias[o + 2]
            y[b, o + 3] = s3 + bias[o + 3]
        for o in range(n4, n_out):
            c0 = codes[o]
            s = np.float32(0)
            for m in range(M):
                s += table[m][c0[m]]
            y[b, o] = s + bias[o]
    return y


def _add8(acc, a, b, c, d, e, f, g, h):
    """acc += the sum of eight 1-D table runs: one load and store of acc per eight runs."""
    for t in range(acc.shape[0]):
        acc[t] += ((a[t] + b[t]) + (c[t] + d[t])) + ((e[t] + f[t]) + (g[t] + h[t]))


def _add1(acc, a):
    for t in range(acc.shape[0]):
        acc[t] += a[t]


def _run_offsets(kh, kw, M, K, stride, plane, P, Wq):
    """Where the table run of item q = (i, j, m) starts, whatever the output channel:
    item_base[q] (sub-space m: m*K planes of ``plane`` entries) + codeword * plane
    + item_start[q] (phase of tap (i, j), P entries each, and its shift inside the phase)."""
    n_items = kh * kw * M
    item_base = np.empty(n_items, np.int64)
    item_start = np.empty(n_items, np.int64)
    for i in range(kh):
        for j in range(kw):
            for m in range(M):
                q = (i * kw + j) * M + m
                item_base[q] = m * K * plane
                item_start[q] = ((i % stride) * stride + j % stride) * P + (i // stride) * Wq + j // stride
    return item_base, item_start


def _run(flat_lut, plane0, row, item_base, item_start, q, L):
    """The table run item q adds: a 1-D slice of length L of the flattened table.

    Its plane is codeword row[q] of the item's sub-space; item_start[q] holds the
    phase and shift, plane0 the group. Plain offsets into one 1-D array keep the
    per-run cost to a few integer operations.
    """
    start = (plane0 + item_base[q] + row[q]) + item_start[q]
    return flat_lut[start:start + L]


#pythran export conv_accumulate(float32[:, :, :, :], uint8[:, :, :, :], float32[:], int, int, int, int)
#pythran export conv_accumulate(float32[:, :, :, :], uint16[:, :, :, :], float32[:], int, int, int, int)
def conv_accumulate(lut, codes, bias, stride, OH, OW, Wq):
    """One image's convolution output from its table: a sum of shifted table planes.

    lut (groups, M*K, stride*stride, Hq*Wq) float32 -- the layout described at the
    top of this file; codes (Ct, kh, kw, M); bias (Ct,) -> (Ct, OH, OW) float32.

    Every output channel accumulates kh*kw*M shifted planes into ``acc``, an
    (OH, Wq) plane kept flat so that each shifted plane is ONE contiguous run
    of OH*Wq values: the columns ow >= OW are scratch, computed and dropped.
    Runs are added eight at a time.
    """
    G, MK = lut.shape[0], lut.shape[1]
    Ct, kh, kw, M = codes.shape
    K = MK // M
    ctg = Ct // G
    L = OH * Wq
    n_items = kh * kw * M  # (tap, sub-space) pairs, each one table run
    # Where item q = (i, j, m) reads in the flattened table, whatever the output
    # channel: plane0(group) + item_base[q] (sub-space m) + codeword * plane
    # + item_start[q] (phase of tap (i, j) and its shift inside the phase).
    # Tabulated once, so the hot loop does no integer division.
    SS, P = lut.shape[2], lut.shape[3]
    plane = SS * P
    item_base, item_start = _run_offsets(kh, kw, M, K, stride, plane, P, Wq)
    flat = codes.reshape((Ct, n_items))  # codes[oc, i, j, m] = flat[oc, q]
    flat_lut = lut.reshape(-1)
    out = np.empty((Ct, OH, OW), np.float32)
    #omp parallel for schedule(static)
    for oc in range(Ct):  # output channels are independent (threads only with -Dopenmp=true)
        plane0 = (oc // ctg) * MK * plane
        acc = np.full(L, bias[oc], np.float32)
        row = flat[oc].astype(np.int64) * plane  # codeword -> offset of its plane
        q = 0
        while q + 8 <= n_items:
            _add8(acc, _run(flat_lut, plane0, row, item_base, item_start, q, L),
                  _run(flat_lut, plane0, row, item_base, item_start, q + 1, L),
                  _run(flat_lut, plane0, row, item_base, item_start, q + 2, L),
                  _run(flat_lut, plane0, row, item_base, item_start, q + 3, L),
                  _run(flat_lut, plane0, row, item_base, item_start, q + 4, L),
                  _run(flat_lut, plane0, row, item_base, item_start, q + 5, L),
                  _run(flat_lut, plane0, row, item_base, item_start, q + 6, L),
                  _run(flat_lut, plane0, row, item_base, item_start, q + 7, L))
            q += 8
        while q < n_items:
            _add1(acc, _run(flat_lut, plane0, row, item_base, item_start, q, L))
            q += 1
        for oh in range(OH):
            out[oc, oh] = acc[oh * Wq:oh * Wq + OW]
    return out


# -- integer tables: the portable path of qcnn_lite.kernels._convq -----------
#pythran export conv_table_int(float32[:, :], float32[:, :, :], int, bool, int8[:, :])
#pythran export conv_table_int(float32[:, :], float32[:, :, :], int, bool, int16[:, :])
def conv_table_int(xp, codebooks, qmax, exact, q):
    """One image and group's quantized table, built and quantized in one pass; returns the scale.

    xp (M*d, SP) float32: the zero-padded phase-split input (``geometry.phase_planes``);
    codebooks (M, K, d); q (M*K, SP) int8/int16, written. Entry t = sum_j c[j] * x[j]
    summed left to right; q = clip(rint(t / s), -qmax, qmax) with s = bound / qmax, the
    bound Cauchy-Schwarz (max codeword norm * max pixel norm, known before the table) or,
    with ``exact``, max |t| from a first pass that stores nothing. Loop order: codeword
    rows outer, pixels inner (contiguous, the compiler vectorizes them); one row of
    float products in ``t`` (SP floats, L1) instead of a float table in memory.
    Bit-exact with ``_convq.quantized_table`` when compiled without FMA contraction.
    """
    M, K, d = codebooks.shape
    SP = xp.shape[1]
    t = np.empty(SP, np.float32)
    bound = np.float32(0)
    if exact:
        for m in range(M):
            for k in range(K):
                c = codebooks[m, k]
                t[:] = c[0] * xp[m * d]
                for j in range(1, d):
                    t[:] = t + c[j] * xp[m * d + j]
                bound = max(bound, np.abs(t).max())
    else:
        for m in range(M):
            cmax = np.float32(0)
            for k in range(K):
                c = codebooks[m, k]
                ss = c[0] * c[0]
                for j in range(1, d):
                    ss = ss + c[j] * c[j]
                cmax = max(cmax, np.sqrt(ss))
            t[:] = xp[m * d] * xp[m * d]
            for j in range(1, d):
                t[:] = t + xp[m * d + j] * xp[m * d + j]
            bound = max(bound, cmax * np.sqrt(t.max()))
    s = np.float32(bound / np.float32(qmax))
    if not s >= np.float32(1.17549435e-38):
        s = np.float32(1)
    inv = np.float32(1) / s
    lo = np.float32(-qmax)
    hi = np.float32(qmax)
    for m in range(M):
        for k in range(K):
            c = codebooks[m, k]
            t[:] = c[0] * xp[m * d]
            for j in range(1, d):
                t[:] = t + c[j] * xp[m * d + j]
            q[m * K + k] = np.minimum(np.maximum(np.rint(t * inv), lo), hi)
    return s


def _addi8(acc, a, b, c, e, f, g, h, i):
    """acc += eight integer runs, summed in a variable of acc's type (int8 + int8 would wrap in int8)."""
    for t in range(acc.shape[0]):
        v = acc[t]
        v += a[t]
        v += b[t]
        v += c[t]
        v += e[t]
        v += f[t]
        v += g[t]
        v += h[t]
        v += i[t]
        acc[t] = v


def _addi1(acc, a):
    for t in range(acc.shape[0]):
        v = acc[t]
        v += a[t]
        acc[t] = v


#pythran export conv_int_accumulate(int8[:, :], uint8[:, :, :, :], float32[:], float32, int, int, int, int, int16[:], float32[:, :, :])
#pythran export conv_int_accumulate(int8[:, :], uint16[:, :, :, :], float32[:], float32, int, int, int, int, int16[:], float32[:, :, :])
#pythran export conv_int_accumulate(int16[:, :], uint8[:, :, :, :], float32[:], float32, int, int, int, int, int32[:], float32[:, :, :])
#pythran export conv_int_accumulate(int16[:, :], uint16[:, :, :, :], float32[:], float32, int, int, int, int, int32[:], float32[:, :, :])
def conv_int_accumulate(q, codes, bias, scale, stride, OH, OW, Wq, acc, out):
    """One group's output from its integer table: out[oc] = scale * (sum of runs) + bias[oc].

    q (M*K, SP) int8/int16 from ``conv_table_int``; codes (Ct, kh, kw, M); bias (Ct,);
    acc (OH*Wq,) int16 (int8 tables) or int32 (int16 tables): the accumulator, whose
    type the sums are kept in; out (Ct, OH, OW) float32, written. Same run-add design
    as ``conv_accumulate`` (one contiguous run per tap and sub-space, eight per pass),
    on integers: no sum can overflow since |q| <= qmax and kh*kw*M*qmax fits acc.
    """
    Ct, kh, kw, M = codes.shape
    K = q.shape[0] // M
    SP = q.shape[1]
    P = SP // (stride * stride)
    L = OH * Wq
    n_items = kh * kw * M
    item_base, item_start = _run_offsets(kh, kw, M, K, stride, SP, P, Wq)
    flat = codes.reshape((Ct, n_items))
    flat_q = q.reshape(-1)
    for oc in range(Ct):
        acc[:] = 0
        row = flat[oc].astype(np.int64) * SP
        qi = 0
        while qi + 8 <= n_items:
            _addi8(acc, _run(flat_q, 0, row, item_base, item_start, qi, L),
                   _run(flat_q, 0, row, item_base, item_start, qi + 1, L),
                   _run(flat_q, 0, row, item_base, item_start, qi + 2, L),
                   _run(flat_q, 0, row, item_base, item_start, qi + 3, L),
                   _run(flat_q, 0, row, item_base, item_start, qi + 4, L),
                   _run(flat_q, 0, row, item_base, item_start, qi + 5, L),
                   _run(flat_q, 0, row, item_base, item_start, qi + 6, L),
                   _run(flat_q, 0, row, item_base, item_start, qi + 7, L))
            qi += 8
        while qi < n_items:
            _addi1(acc, _run(flat_q, 0, row, item_base, item_start, qi, L))
            qi += 1
        b = bias[oc]
        for oh in range(OH):
            for ow in range(OW):
                out[oc, oh, ow] = scale * np.float32(acc[oh * Wq + ow]) + b


#pythran export lrn(float32[:, :, :, :], int, float, float, float)
def lrn(x, size, alpha, beta, k):
    """Caffe's cross-channel LRN: x / (k + alpha/size * sum of x^2 over ``size`` channels)^beta.

    x (n, C, H, W) float32 -> same shape. Not a look-up table: the dense helper
    the AlexNet and CNN-S engines spend the most time in after conv and fc.
    Channel c sums channels c - size//2 .. c - size//2 + size - 1 (those that exist).
    The window sum slides over the channels (one square added, one taken away per
    channel) instead of being re-summed: 2 passes per channel instead of ``size``, and
    no (C, H*W) array of squares. CNN-S's LRN (96x109x109) went from 6.5 to 1.3 ms, AlexNet's
    (96x55x55) from 1.2 to 0.33 ms (busy 2-core Xeon, portable build). The sliding sum's
    rounding is ~1e-7 of the largest square it held, far below the output's 1e-5 tolerance once
    scaled by alpha/size and added to k (k >= 1 in every network here); clipped at 0, so d >= k.
    beta = 0.75 (every network here) avoids pow: d^-0.75 = 1 / (sqrt(d) * sqrt(sqrt(d))).
    """
    n, C, H, W = x.shape
    HW = H * W
    xs = x.reshape((n, C, HW))
    out = np.empty((n, C, HW), np.float32)
    scale = np.float32(alpha / size)
    kk = np.float32(k)
    zero = np.float32(0)
    half = size // 2
    win = np.empty(HW, np.float32)
    for b in range(n):
        xb = xs[b]
        win[:] = 0
        for j in range(0, min(C, size - half)):  # the window of channel 0
            win += xb[j] * xb[j]
        for c in range(C):
            if c > 0:
                add = c - half + size - 1
                sub = c - half - 1
                if add < C:
                    win += xb[add] * xb[add]
                if sub >= 0:
                    win -= xb[sub] * xb[sub]
            d = kk + scale * np.maximum(win, zero)
            if beta == 0.75:
                out[b, c] = xb[c] / (np.sqrt(d) * np.sqrt(np.sqrt(d)))
            else:
                out[b, c] = xb[c] * d ** np.float32(-beta)
    return out.reshape((n, C, H, W))
