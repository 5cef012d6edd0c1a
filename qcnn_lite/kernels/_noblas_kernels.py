"""The dense baseline without BLAS (the paper's condition), compiled by Pythran into ``_noblas_kernels``.

The paper times Q-CNN against its authors' own dense code on a phone, not
against a tuned BLAS. These kernels are that baseline: plain loops, no BLAS,
no ``@`` (the extension is built with ``-DPYTHRAN_BLAS_NONE``, as ``_pythran``).
Pythran source; :mod:`qcnn_lite.kernels` calls the extension built from it.

Convolution (``conv2d_direct``) is the dense twin of ``_pythran.conv_accumulate``:
the same zero-padded, phase-split input (``ph = (row % s) * s + col % s``, each
phase a flat Hq x Wq plane), the same output plane kept at pitch Wq so that one
tap of one input channel is ONE contiguous run, and the same loop order
(output channel, then runs). Where Q-CNN adds kh*kw*M table runs per output
channel, the dense code multiply-adds kh*kw*C/groups input runs: the ratio of
the two is the paper's arithmetic argument, measured with one loop design.
Four runs per pass over the accumulator (eight measured no faster).

fc (``linear_direct``) is a matrix-vector product over the TRANSPOSED weight
(in, out): ``y += x[i] * wt[i]`` for every input i, an axpy over the outputs
that vectorizes without re-associating any sum (a dot-product loop would not,
without -ffast-math). It streams the weight once, as BLAS's gemv does; four
rows per pass over y.
"""
import numpy as np


def _madd4(acc, w0, a, w1, b, w2, c, w3, d):
    """acc += w0*a + w1*b + w2*c + w3*d over four 1-D runs: one load and store of acc per four runs."""
    for t in range(acc.shape[0]):
        acc[t] += (w0 * a[t] + w1 * b[t]) + (w2 * c[t] + w3 * d[t])


def _madd1(acc, w0, a):
    for t in range(acc.shape[0]):
        acc[t] += w0 * a[t]


#pythran export conv2d_direct(float32[:, :, :], float32[:, :], float32[:], int, int, int, int, int, int, int, int)
def conv2d_direct(xq, w, bias, kh, kw, stride, groups, OH, OW, Hq, Wq):
    """One image's dense convolution by direct loops.

    xq (C, stride*stride, Hq*Wq) float32: the zero-padded input, split into its
    phases (built by :func:`qcnn_lite.kernels.conv2d_direct`); w (Ct, C/groups*kh*kw)
    float32 in (c, i, j) order, i.e. torch's (Ct, C/groups, kh, kw) flattened;
    bias (Ct,) -> (Ct, OH, OW) float32.
    Output channel oc, input channel c, tap (i, j) adds w * the run of phase
    (i % s, j % s) starting at (i // s) * Wq + j // s, of length OH * Wq.
    """
    C, SS, P = xq.shape
    Ct = w.shape[0]
    s = stride
    cg = C // groups
    ctg = Ct // groups
    L = OH * Wq
    n_items = cg * kh * kw
    item_start = np.empty(n_items, np.int64)  # offset of item q = (c, i, j) within the group's input
    for c in range(cg):
        for i in range(kh):
            for j in range(kw):
                item_start[(c * kh + i) * kw + j] = c * SS * P + ((i % s) * s + j % s) * P + (i // s) * Wq + j // s
    flat = xq.reshape(-1)
    out = np.empty((Ct, OH, OW), np.float32)
    for oc in range(Ct):
        base = (oc // ctg) * cg * SS * P
        wr = w[oc]
        acc = np.full(L, bias[oc], np.float32)
        q = 0
        while q + 4 <= n_items:
            s0 = base + item_start[q]
            s1 = base + item_start[q + 1]
            s2 = base + item_start[q + 2]
            s3 = base + item_start[q + 3]
            _madd4(acc, wr[q], flat[s0:s0 + L], wr[q + 1], flat[s1:s1 + L],
                   wr[q + 2], flat[s2:s2 + L], wr[q + 3], flat[s3:s3 + L])
            q += 4
        while q < n_items:
            s0 = base + item_start[q]
            _madd1(acc, wr[q], flat[s0:s0 + L])
            q += 1
        for oh in range(OH):
            out[oc, oh] = acc[oh * Wq:oh * Wq + OW]
    return out


#pythran export linear_direct(float32[:, :], float32[:, :], float32[:])
def linear_direct(x, wt, bias):
    """y = x W^T + bias by loops: x (n, in), wt (in, out) = W transposed, bias (out,) -> (n, out) float32.

    For every image, y starts at the bias and gets x[i] * wt[i] added for each
    input i, four inputs per pass over y (y stays in L1 for out <= 4096).
    """
    n, n_in = x.shape
    n_out = wt.shape[1]
    y = np.empty((n, n_out), np.float32)
    n4 = n_in - n_in % 4
    for b in range(n):
        acc = bias.copy()
        xb = x[b]
        for i in range(0, n4, 4):
            a0, a1, a2, a3 = xb[i], xb[i + 1], xb[i + 2], xb[i + 3]
            r0, r1, r2, r3 = wt[i], wt[i + 1], wt[i + 2], wt[i + 3]
            for o in range(n_out):
                acc[o] += (a0 * r0[o] + a1 * r1[o]) + (a2 * r2[o] + a3 * r3[o])
        for i in range(n4, n_in):
            a0 = xb[i]
            r0 = wt[i]
            for o in range(n_out):
                acc[o] += a0 * r0[o]
        y[b] = acc
    return y


#pythran export conv_epilogue(float32[:, :], float32[:], float32[:, :, :], int, int, bool)
def conv_epilogue(acc, bias, out, r0, Wq, relu):
    """out[c, r0 + r, ow] = acc[c, r*Wq + ow] + bias[c], then max(., 0) if ``relu``; IN PLACE.

    acc (Ct, rows*Wq) float32: output rows r0 .. r0+rows-1 at the row pitch Wq of the run
    layout (a block of the BLAS path's product); out (Ct, OH, OW) float32, written in those
    rows only (rows = min(acc.shape[1] // Wq, OH - r0)). One pass per output row that also
    drops the scratch columns. Called on each row block right after its product, while the
    block is in L2: on CNN-S's conv1 output (96x109x109) a pass over the whole 4.7 MB
    product took 0.79 ms (memory-bound); on AlexNet's conv1 it took 0.09 ms, numpy's two
    passes 0.23 ms, and a per-element ``v if v > 0 else 0`` did not vectorize (1.7 ms).
    """
    Ct, OH, OW = out.shape
    rows = min(acc.shape[1] // Wq, OH - r0)
    zero = np.float32(0)
    for c in range(Ct):
        b = bias[c]
        for r in range(rows):
            base = r * Wq
            if relu:
                out[c, r0 + r] = np.maximum(acc[c, base:base + OW] + b, zero)
            else:
                out[c, r0 + r] = acc[c, base:base + OW] + b
