from nbbuild import build, code, md, setup

NB = "02_quantized_fc_layer"
cells = [
    md(r"""
    # 02 · A quantized fully-connected layer, with error correction

    **What you will learn**
    - how Q-CNN product-quantizes an fc layer's weight matrix (sub-spaces over the **input** dimension);
    - why minimising the weight error is the wrong goal, and how the paper's **error correction** minimises the
      error of the layer's **response** on real inputs instead: the objective, the least-squares codebook
      update, the exhaustive assignment update and the block coordinate descent that alternates them;
    - how much accuracy that buys on a trained network, and how fast look-up-table inference is.

    **What you need**
    - notebook 01 (product quantization and the look-up-table trick);
    - the trained reference model `data/models/mini-alexnet.qcnn` (`make models`) and Fashion-MNIST (`make data`);
    - about 2 minutes in full mode (the full 10,000-image test set), well under a minute with `QCNN_FAST=1`
      (2,000 test images, fewer calibration images).
    """),
    setup(NB, "import time\nfrom pathlib import Path\nimport pandas as pd\nfrom tqdm.auto import tqdm\nimport qcnn_lite\nfrom qcnn_lite import data, kernels, modelfile, paths\nfrom qcnn_lite.correction import ResponseStats, response_error\nfrom qcnn_lite.layers import Linear, QLinear", one_blas_thread=True),
    md(r"""
    ## 1. A trained network and one of its fc layers

    The mini AlexNet (`qcnn_lite.models.mini_alexnet`) keeps AlexNet's traits at Fashion-MNIST size: five conv
    layers with LRN, overlapping pooling and grouped convolutions, then three fc layers that hold most of the
    parameters. We quantize its first fc layer, `fc6`, and leave everything else dense.
    """),
    code(r"""
    REPO = paths.project_root()
    path = paths.model_file("mini-alexnet")  # $QCNN_MODELS first, then the repository's data/models
    net = modelfile.load(path)
    print(f"loaded {path.relative_to(REPO) if path.is_relative_to(REPO) else path}"
          f" (test top-1 recorded at training: {net.meta.get('test_top1', '?')} %)")
    mean, std = data.normalisation(net.meta)
    for i, L in net.param_layers():
        p = net.params[L["name"]]
        print(f"{L['name']:6s} {type(p).__name__:7s} weight {str(p.weight.shape):18s} {p.weight.size:8,d} weights")
    """),
    code(r"""
    train_x, _ = data.load_fashion_mnist("train")
    test_x, test_y = data.load_fashion_mnist("test")
    n_test = 2000 if FAST else len(test_x)
    n_calib = 1000 if FAST else 3000  # fc6 has 576 inputs: use (many) more images than that
    calib_idx = rng.choice(len(train_x), n_calib + 1000, replace=False)  # + 1000 held-out training images

    i_fc6 = next(i for i, L in net.param_layers() if L["name"] == "fc6")
    fc6 = net.params["fc6"]


    def fc6_inputs(images):
        # the input S of fc6: run the network up to (not including) fc6, then flatten
        x = net.forward(data.to_input(images, mean, std), stop=i_fc6)
        return x.reshape(len(x), -1)


    S_all = np.concatenate([fc6_inputs(train_x[calib_idx[j:j + 500]]) for j in range(0, len(calib_idx), 500)])
    S, S_val = S_all[:n_calib], S_all[n_calib:]
    S_test = np.concatenate([fc6_inputs(test_x[j:j + 500]) for j in range(0, n_test, 500)])
    print("fc6:", fc6.in_features, "->", fc6.out_features, f"| calibration inputs {S.shape}, held-out {S_val.shape}, test {S_test.shape}")


    def top1(layer):
        # accuracy of the network with fc6 replaced by `layer`; the layers after fc6 run unchanged
        y = layer(S_test)
        scores = net.forward(y, start=i_fc6 + 1)
        return 100.0 * float((scores.argmax(1) == test_y[:n_test]).mean())


    dense_acc = top1(fc6)
    print(f"dense network, top-1 on {n_test} test images: {dense_acc:.2f} %")
    """),
    md(r"""
    ## 2. Weight-space product quantization

    The layer computes $y = W x + b$ with $W \in \mathbb{R}^{C_t \times C_s}$. Q-CNN splits the **input**
    dimension into $M = C_s / C'_s$ blocks, so output $o$'s weights $W_o$ become $M$ sub-vectors
    $W_o^{(m)} \in \mathbb{R}^{C'_s}$. Sub-space $m$ has a codebook $D^{(m)} \in \mathbb{R}^{K \times C'_s}$
    and every output $o$ an index $b_o^{(m)}$:

    $$
    W_o^{(m)} \approx D^{(m)}_{b_o^{(m)}}, \qquad
    \min_{D^{(m)},\, b^{(m)}} \sum_{o=1}^{C_t} \big\lVert W_o^{(m)} - D^{(m)}_{b_o^{(m)}} \big\rVert^2
    \quad \text{(k-means on the } C_t \text{ sub-vectors of sub-space } m\text{).}
    $$

    At test time (notebook 01): $\mathrm{LUT}[m, k] = \langle x^{(m)}, D^{(m)}_k\rangle$ and
    $y_o = b_o + \sum_m \mathrm{LUT}[m, b_o^{(m)}]$: $C_s K + C_t M$ operations instead of $C_s C_t$.
    `QLinear.from_dense(weight, bias, sub_dim, n_codewords)` without calibration data does exactly this.
    The table-based forward pass must equal a dense product with the reconstructed weight:
    """),
    code(r"""
    # NBVAL_CHECK_OUTPUT
    q_pq = QLinear.from_dense(fc6.weight, fc6.bias, sub_dim=4, n_codewords=32, seed=0)
    print("codebooks", q_pq.codebooks.shape, "codes", q_pq.codes.shape, q_pq.codes.dtype)
    lut_out = q_pq(S_val)
    dense_out = S_val @ q_pq.dense_weight().T + q_pq.bias  # Linear with the reconstructed weight
    print("default table precision:", q_pq.table_dtype)
    # float tables: the sums are exact, up to float32 rounding
    q_pq.table_dtype = "float32"
    print("float tables: LUT forward == dense product with reconstructed weight:",
          bool(np.abs(q_pq(S_val) - dense_out).max() <= 1e-5 * np.abs(dense_out).max()))
    # 8-bit tables (the default, summed by byte shuffles): each entry is rounded to 1/255 of its range
    q_pq.table_dtype = "uint8"
    rel_u8 = np.linalg.norm(lut_out - dense_out) / np.linalg.norm(dense_out)
    print("8-bit tables: relative error of the outputs below 2%:", bool(rel_u8 < 0.02))
    """),
    code(r"""
    print(f"8-bit tables: relative error of the outputs = {rel_u8:.1e}")
    """),
    code(r"""
    w_err = np.linalg.norm(q_pq.dense_weight() - fc6.weight) ** 2 / np.linalg.norm(fc6.weight) ** 2
    stats_val = ResponseStats(fc6.in_features, fc6.out_features).update(S_val, fc6(S_val))
    print(f"relative weight error   ||W - W_hat||^2 / ||W||^2      = {w_err:.3f}")
    print(f"relative response error on held-out inputs             = {response_error(q_pq.dense_weight(), stats_val):.3f}")
    print(f"top-1 with plain PQ fc6: {top1(q_pq):.2f} %  (dense {dense_acc:.2f} %)")
    """),
    md(r"""
    ## 3. Error correction: fit the response, not the weights

    k-means treats every weight alike, but the inputs are far from isotropic (after ReLU, many input
    features are often zero, others large and correlated), so some weight errors matter much more than
    others. The paper minimises the error of the layer's **response** on $N$ real inputs $S_n$ instead,
    against the original layer's outputs $T_n = W S_n + b$:

    $$
    E(D, B) \;=\; \sum_{n=1}^{N} \Big\lVert T_n - \sum_{m=1}^{M} \big(D^{(m)} B^{(m)}\big)^{\!\top} S_n^{(m)} \Big\rVert^2 ,
    $$

    where $B^{(m)} \in \{0,1\}^{K \times C_t}$ is the one-hot assignment of each output to a codeword. With
    centred inputs and targets, $E$ is a quadratic in $\hat W$ that needs only two statistics, whatever $N$:

    $$
    E(\hat W) = \operatorname{tr}\!\big(\hat W G \hat W^\top\big) - 2 \operatorname{tr}\!\big(\hat W P\big) + \lVert T\rVert^2,
    \qquad G = \sum_n S_n S_n^\top \;(C_s \times C_s), \quad P = \sum_n S_n T_n^\top \;(C_s \times C_t).
    $$

    (`qcnn_lite.correction.ResponseStats` accumulates $G$ and $P$; the bias is refitted at the end as
    $\bar T - \hat W \bar S$.) Because $G$ is shared, $E$ splits over outputs $o$. Write $G_{mm'}$ for the
    $C'_s \times C'_s$ blocks of $G$, $P_{m,o}$ for the $m$-th block of column $o$ of $P$, and hold every
    sub-space but $m$ fixed. Then the part of $E$ that depends on sub-space $m$ is

    $$
    E^{(m)} = \sum_{o=1}^{C_t} \Big( \hat W_o^{(m)\top} G_{mm}\, \hat W_o^{(m)} - 2\, \hat W_o^{(m)\top} r_o^{(m)} \Big),
    \qquad r_o^{(m)} = P_{m,o} - \sum_{m' \neq m} G_{m m'}\, \hat W_o^{(m')} ,
    $$

    with $\hat W_o^{(m)} = D^{(m)}_{b_o^{(m)}}$: the residual $r_o^{(m)}$ carries everything the other sub-spaces
    already explain. **Block coordinate descent** minimises $E$ one sub-space at a time:

    1. **Codebook update** (assignments fixed): least squares. Setting the gradient with respect to codeword $k$
       to zero gives, for the outputs $O_k = \{o : b_o^{(m)} = k\}$ assigned to it,

       $$
       D^{(m)}_k = G_{mm}^{-1}\; \frac{1}{|O_k|} \sum_{o \in O_k} r_o^{(m)} .
       $$

       (For conv layers the taps of one output share codebook $m$ and couple the codewords: the solve becomes
       one $K C'_s \times K C'_s$ system. In both cases `qcnn_lite` adds a tiny ridge towards the old codebook, which keeps
       unused codewords in place and the system solvable when $G_{mm}$ is singular, e.g. for inputs that are always zero.)
    2. **Assignment update** (codebook fixed): exhaustive search over the $K$ codewords, for every output:

       $$
       b_o^{(m)} = \arg\min_{k} \; D^{(m)\top}_k G_{mm} D^{(m)}_k - 2\, D^{(m)\top}_k r_o^{(m)} .
       $$

       Note this is *not* the nearest codeword to $W_o^{(m)}$: the metric is $G_{mm}$, and the target
       $r_o^{(m)}$ includes the errors left by the other sub-spaces.
    3. Sweep over $m = 1..M$, and repeat for a few iterations.

    Each step solves its sub-problem exactly, so $E$ never increases, and it starts from the plain PQ
    solution above. `QLinear.from_dense(..., calib=S)` runs it; `history_` records the relative response
    error after each sweep.
    """),
    code(r"""
    n_iter = 4 if FAST else 8
    M = fc6.in_features // 4
    with tqdm(total=n_iter * M, desc="error correction, fc6 C's=4 K=32") as bar:
        q_ec = QLinear.from_dense(fc6.weight, fc6.bias, sub_dim=4, n_codewords=32, seed=0,
                                  calib=S, n_iter=n_iter, progress=lambda: bar.update(1))
    hist = np.array(q_ec.history_)
    val_pq = response_error(q_pq.dense_weight(), stats_val)
    val_ec = response_error(q_ec.dense_weight(), stats_val)
    print("relative response error on the calibration set, per sweep:", np.round(hist, 4))
    print(f"held-out response error: plain PQ {val_pq:.4f} -> error correction {val_ec:.4f}")
    print(f"top-1: dense {dense_acc:.2f} %, plain PQ {top1(q_pq):.2f} %, error correction {top1(q_ec):.2f} %")
    """),
    code(r"""
    # NBVAL_CHECK_OUTPUT
    print("response error never increases across sweeps:", bool(np.all(np.diff(hist) <= 1e-12)))
    print("error correction beats plain PQ on held-out inputs:", bool(val_ec < val_pq))
    q_ec.table_dtype = "float32"
    print("the corrected layer still runs through the LUT kernel exactly (float tables):",
          bool(np.allclose(q_ec(S_val), S_val @ q_ec.dense_weight().T + q_ec.bias, rtol=1e-4, atol=1e-4)))
    q_ec.table_dtype = "uint8"
    """),
    code(r"""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(np.arange(len(hist)), hist, "o-", label="calibration inputs (fitted)")
    ax.axhline(val_pq, color="tab:red", ls="--", lw=1, label="plain PQ, held-out inputs")
    ax.axhline(val_ec, color="tab:green", ls="--", lw=1, label="after correction, held-out inputs")
    ax.set(xlabel="sweep (0 = plain product quantization)", ylabel="relative response error",
           title="fc6, C's=4, K=32: block coordinate descent", yscale="log")
    ax.legend(fontsize=8)
    show(fig, "response_error_vs_iterations")
    """),
    md(r"""
    ## 4. Accuracy against compression

    Now several settings: $K = 32$ codewords (the paper's fc choice) and a growing sub-space dimension
    $C'_s$, i.e. fewer bits per weight ($\log_2 K / C'_s$). For each we compare plain PQ and error correction.
    """),
    code(r"""
    settings = [(4, 32), (8, 32)] if FAST else [(3, 32), (4, 32), (8, 32), (16, 32)]
    rows = []
    for d, K in tqdm(settings, desc="settings"):
        for method in ("plain PQ", "error correction"):
            kw = dict(calib=S, n_iter=n_iter) if method == "error correction" else {}
            ql = QLinear.from_dense(fc6.weight, fc6.bias, sub_dim=d, n_codewords=K, seed=0, **kw)
            M_ = fc6.in_features // d
            dense_bytes = 4 * (fc6.weight.size + fc6.out_features)
            q_bytes = 4 * M_ * d * K + fc6.out_features * M_ * np.log2(K) / 8 + 4 * fc6.out_features
            rows.append({"C's": d, "K": K, "method": method, "bits/weight": np.log2(K) / d,
                         "compression": dense_bytes / q_bytes,
                         "speed-up": fc6.in_features * fc6.out_features / (fc6.in_features * K + fc6.out_features * M_),
                         "held-out resp. err": response_error(ql.dense_weight(), stats_val),
                         "top-1 %": top1(ql)})
    res = pd.DataFrame(rows)
    res.round(3)
    """),
    code(r"""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for method, g in res.groupby("method"):
        axes[0].plot(g["compression"], g["held-out resp. err"], "o-", label=method)
        axes[1].plot(g["compression"], g["top-1 %"], "o-", label=method)
    axes[1].axhline(dense_acc, color="k", ls=":", label="dense")
    axes[0].set(xlabel="fc6 compression (x)", ylabel="relative response error", yscale="log",
                title="Response error (held-out inputs)")
    axes[1].set(xlabel="fc6 compression (x)", ylabel="top-1 accuracy (%)", title=f"Accuracy ({n_test} test images)")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    show(fig, "accuracy_vs_compression")
    """),
    md(r"""
    Error correction lowers the response error at every setting, and the gap widens as compression grows:
    with few bits per weight, *where* the error goes matters most. For this one layer of a 10-class network the
    accuracy barely moves either way (0.1 points is 10 of 10,000 test images): the later layers absorb a 10%
    response error. Notebook 04 quantizes every layer, where errors add up and the difference becomes large.

    ## 5. Look-up-table inference, timed

    A `QLinear` forward pass builds the $M \times K$ table for each input and then gathers and adds $M$ entries per
    output (`qcnn_lite.kernels.linear_lut`, on the numpy or the compiled Pythran backend). We time it against the
    dense `Linear` (one BLAS matrix product), one thread each, for a single input and a batch of 256.
    Times are medians; they depend on the machine and are not checked.
    """),
    code(r"""
    import contextlib
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None


    def median_ms(fn, repeats=30 if not FAST else 10):
        fn()
        t = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
        return 1e3 * float(np.median(t))


    backend_before = kernels.backend()
    rows = []
    with threadpool_limits(1) if threadpool_limits is not None else contextlib.nullcontext():
        for batch in (1, 256):
            xb = np.ascontiguousarray(S_test[:batch])
            rows.append({"batch": batch, "path": "dense Linear (BLAS)", "ms": median_ms(lambda: fc6(xb))})
            for name in kernels.available_backends():
                kernels.set_backend(name)
                rows.append({"batch": batch, "path": f"QLinear LUT, {name}", "ms": median_ms(lambda: q_ec(xb))})
            kernels.set_backend(backend_before)
    timing = pd.DataFrame(rows).pivot(index="path", columns="batch", values="ms")
    print(f"cost model for fc6 at C's=4, K=32: {fc6.in_features * fc6.out_features / (fc6.in_features * 32 + fc6.out_features * M):.2f}x fewer multiply-adds")
    timing.round(3)
    """),
    code(r"""
    fig, ax = plt.subplots(figsize=(7, 3))
    timing.plot.barh(ax=ax, logx=True)
    ax.set(xlabel="ms per forward pass (median, 1 thread)", ylabel="", title="fc6: dense vs look-up table")
    ax.legend(title="batch")
    show(fig, "timing")
    """),
    md(r"""
    On a desktop CPU an optimised BLAS is hard to beat at equal work, and Q-CNN's work is of a different kind: the
    table costs $C_s K$ multiply-adds (a small dense product), the rest is gathers and additions of table entries,
    which are limited by memory access rather than arithmetic. For a single input the compiled kernel stays within
    a small factor of BLAS while reading an order of magnitude fewer weight bytes; for large batches BLAS's matrix-matrix product
    pulls far ahead, because the table must be rebuilt for every input. The paper's phone measurements compared
    both methods without BLAS, where the operation count decides (notebook 06).

    ## Summary

    - An fc layer is quantized over its **input** dimension: $M = C_s/C'_s$ codebooks of $K$ codewords,
      one $\log_2 K$-bit index per output and sub-space (`QLinear`).
    - Plain PQ minimises the weight error; **error correction** minimises the response error
      $\sum_n \lVert T_n - \hat W S_n\rVert^2$, which needs only $G = \sum S S^\top$ and $P = \sum S T^\top$.
    - Block coordinate descent alternates an exact least-squares codebook update and an exact exhaustive
      assignment search, sub-space by sub-space; the error never increases (`history_`).
    - The corrected layer generalises to held-out inputs and keeps more accuracy at high compression;
      its LUT forward pass is exact for the reconstructed weights.

    ## Exercises

    1. Quantize `fc7` instead (its inputs: `net.forward(x, stop=i_fc7)`). Is error correction more or less
       useful there than on `fc6`? Relate your answer to the statistics of the inputs (e.g. the fraction of zeros).
    2. Vary the number of calibration images (100, 500, 2000) and plot the held-out response error. When does the
       correction over-fit the calibration set?
    3. Compute $G$ with `ResponseStats` and show that $\hat W = W$ gives $E = 0$, and that for any $\hat W$ the
       relative response error from `response_error` equals a direct computation on `S_val`.
    4. Replace the exhaustive assignment search by "nearest codeword in weight space" (as in k-means) and show
       that the response error can then *increase* during the sweeps.
    """),
]

if __name__ == "__main__":
    build(NB, cells)
