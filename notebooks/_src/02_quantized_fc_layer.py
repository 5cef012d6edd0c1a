from nbbuild import build, code, exercise, md, report, setup

NB = "02_quantized_fc_layer"
cells = [
    md(r"""
    # 02 · A quantized fully-connected layer, with error correction

    **What you will learn**
    - how Q-CNN product-quantizes an fc layer's weight matrix (sub-spaces over the **input** dimension);
    - why minimising the weight error is the wrong goal, and how the paper's **error correction** minimises the
      error of the layer's **response** on real inputs instead: the objective, the least-squares codebook
      update, the exhaustive assignment update and the block coordinate descent that alternates them;
    - how to tell a real accuracy difference from test-set noise (a **paired bootstrap** interval), and where error
      correction makes a large, real difference (several layers, high compression);
    - how fast look-up-table inference is, against named baselines.

    **What you need**
    - notebook 01 (product quantization and the look-up-table trick);
    - the trained reference model `data/models/mini-alexnet.qcnn` (`make models`) and Fashion-MNIST (`make data`);
    - a few minutes in full mode (the full test set), about a minute with `QCNN_FAST=1` (2,000 test images).
    """),
    setup(NB, "import time\nfrom pathlib import Path\nimport pandas as pd\nfrom tqdm.auto import tqdm\nimport qcnn_lite\nfrom qcnn_lite.io import datasets as data, modelfile, paths\nfrom qcnn_lite import kernels\nfrom qcnn_lite.quant.correction import ResponseStats, response_error\nfrom qcnn_lite.nn.layers import Linear, QLinear\nfrom qcnn_lite.quant.quantize import quantize_linear", one_blas_thread=True),
    md(r"""
    ## 1. A trained network and one of its fc layers

    The mini AlexNet (`qcnn_lite.nn.models.mini_alexnet`) keeps AlexNet's traits at Fashion-MNIST size: five conv
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


    def correct(layer):
        # per test image: is the network with fc6 replaced by `layer` right? (the layers after fc6 run unchanged)
        scores = net.forward(layer(S_test), start=i_fc6 + 1)
        return scores.argmax(1) == test_y[:n_test]


    def top1(layer):
        return 100.0 * float(correct(layer).mean())


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
    `quantize_linear(weight, bias, sub_dim, n_codewords)` without calibration data does exactly this.
    With float32 tables the table-based forward pass equals a dense product with the reconstructed weight.
    (By default `qcnn_lite` stores the tables in 8 bits, one scale per table, for speed; that rounds each
    output slightly, as the second cell shows.)
    """),
    code(r"""
    # NBVAL_CHECK_OUTPUT
    q_pq = quantize_linear(fc6.weight, fc6.bias, sub_dim=4, n_codewords=32, seed=0)
    print("codebooks", q_pq.codebooks.shape, "codes", q_pq.codes.shape, q_pq.codes.dtype)
    dense_out = S_val @ q_pq.dense_weight().T + q_pq.bias  # Linear with the reconstructed weight
    q_pq.table_dtype = "float32"  # float32 tables: exact up to float rounding
    lut_out = q_pq(S_val)
    print("LUT forward (float32 tables) == dense product with reconstructed weight:",
          bool(np.abs(lut_out - dense_out).max() <= 1e-5 * np.abs(dense_out).max()))
    q_pq.table_dtype = q_pq.default_table_dtype(q_pq.n_codewords)  # back to the package's default
    """),
    code(r"""
    # the package's default tables are 8-bit (one scale per table, K <= 256): a small, bounded rounding error
    u8_dev = np.abs(q_pq(S_val) - dense_out).max() / np.abs(dense_out).max()
    print(f"default table precision: {q_pq.table_dtype}; max deviation from the dense product: {u8_dev:.2e} of the largest output")
    """),
    code(r"""
    # the one weight-error metric of the suite: squared Frobenius error relative to ||W||^2 (also in 03)
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

    (`qcnn_lite.quant.correction.ResponseStats` accumulates $G$ and $P$; the bias is refitted at the end as
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
    solution above. `quantize_linear(..., calib=S)` runs it; `history_` records the relative response
    error after each sweep.
    """),
    code(r"""
    n_iter = 4 if FAST else 8
    M = fc6.in_features // 4
    with tqdm(total=n_iter * M, desc="error correction, fc6 C's=4 K=32") as bar:
        q_ec = quantize_linear(fc6.weight, fc6.bias, sub_dim=4, n_codewords=32, seed=0,
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
    print("the corrected layer still runs through the LUT kernel exactly (float32 tables):",
          bool(np.allclose(q_ec(S_val), S_val @ q_ec.dense_weight().T + q_ec.bias, rtol=1e-4, atol=1e-4)))
    q_ec.table_dtype = q_ec.default_table_dtype(q_ec.n_codewords)
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
    ## 4. Accuracy against compression, and when a difference is real

    Now several settings: $K = 32$ codewords (the paper's fc choice) and a growing sub-space dimension
    $C'_s$, i.e. fewer bits per weight ($\log_2 K / C'_s$). For each we compare plain PQ and error correction.

    Top-1 on $n$ test images moves in steps of $100/n$ %, and two methods tested on the *same* images differ
    only on the images where exactly one of them is right. So we report, for error correction minus plain PQ,
    a **paired bootstrap** 95 % interval: resample the $n$ test images with replacement many times and take the
    2.5 % and 97.5 % quantiles of the resampled difference. Only the images where the two methods disagree
    matter, so each resample is just a multinomial draw of how many "EC right, PQ wrong" and
    "PQ right, EC wrong" images it contains. An interval that contains $0$ means: noise.
    """),
    code(r"""
    def paired_bootstrap(right_a, right_b, n_boot=10000, seed=0):
        # 95 % interval of top-1(a) - top-1(b) in points, resampling the test images (paired: same images)
        n = len(right_a)
        p_win, p_loss = np.mean(right_a & ~right_b), np.mean(right_b & ~right_a)
        draws = np.random.default_rng(seed).multinomial(n, [p_win, p_loss, 1 - p_win - p_loss], size=n_boot)
        diffs = 100.0 * (draws[:, 0] - draws[:, 1]) / n
        return 100.0 * (p_win - p_loss), *np.percentile(diffs, [2.5, 97.5])


    def storage_speedup(layer, d, K):
        M_ = layer.in_features // d
        dense_bytes = 4 * (layer.weight.size + layer.out_features)
        q_bytes = 4 * M_ * d * K + layer.out_features * M_ * np.log2(K) / 8 + 4 * layer.out_features
        return dense_bytes / q_bytes, layer.in_features * layer.out_features / (layer.in_features * K + layer.out_features * M_)


    settings = [(4, 32), (16, 32)] if FAST else [(3, 32), (4, 32), (8, 32), (16, 32)]
    rows = []
    for d, K in tqdm(settings, desc="settings"):
        layers = {"plain PQ": quantize_linear(fc6.weight, fc6.bias, sub_dim=d, n_codewords=K, seed=0),
                  "error correction": quantize_linear(fc6.weight, fc6.bias, sub_dim=d, n_codewords=K, seed=0,
                                                         calib=S, n_iter=n_iter)}
        right = {m: correct(ql) for m, ql in layers.items()}
        diff, lo, hi = paired_bootstrap(right["error correction"], right["plain PQ"])
        comp, speed = storage_speedup(fc6, d, K)
        rows.append({"C's": d, "K": K, "bits/weight": np.log2(K) / d, "compression": comp, "speed-up": speed,
                     "resp. err PQ": response_error(layers["plain PQ"].dense_weight(), stats_val),
                     "resp. err EC": response_error(layers["error correction"].dense_weight(), stats_val),
                     "top-1 PQ %": 100 * right["plain PQ"].mean(), "top-1 EC %": 100 * right["error correction"].mean(),
                     "EC - PQ (points)": diff, "95% low": lo, "95% high": hi,
                     "images EC only": int((right["error correction"] & ~right["plain PQ"]).sum()),
                     "images PQ only": int((right["plain PQ"] & ~right["error correction"]).sum())})
    res = pd.DataFrame(rows)
    res.round(3)
    """),
    code(r"""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    axes[0].plot(res["compression"], res["resp. err PQ"], "o-", label="plain PQ")
    axes[0].plot(res["compression"], res["resp. err EC"], "o-", label="error correction")
    axes[1].errorbar(res["compression"], res["EC - PQ (points)"],
                     yerr=[res["EC - PQ (points)"] - res["95% low"], res["95% high"] - res["EC - PQ (points)"]],
                     fmt="o", capsize=4, label="EC - PQ, paired bootstrap 95 %")
    axes[1].axhline(0, color="k", lw=0.8)
    axes[0].set(xlabel="fc6 compression (x)", ylabel="relative response error", yscale="log",
                title="Response error (held-out inputs)")
    axes[1].set(xlabel="fc6 compression (x)", ylabel="top-1 difference (points)",
                title=f"fc6 alone: accuracy difference ({n_test} test images)")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    show(fig, "accuracy_vs_compression")
    """),
    code(r"""
    noise = res[(res["95% low"] <= 0) & (res["95% high"] >= 0)]
    real = res[(res["95% low"] > 0) | (res["95% high"] < 0)]
    r0 = res.iloc[0]
    # settings whose interval excludes 0: named in the prose below
    real_rows = [{"cs": r["C's"], "lo": r["95% low"], "hi": r["95% high"], "diff": r["EC - PQ (points)"]}
                 for _, r in real.iterrows()]
    """),
    report(r"""
    Error correction {claim((res['resp. err EC'] < res['resp. err PQ']).all(), 'lowers the held-out response error at every setting')}
    (from {r0['resp. err PQ']:.3f} to {r0['resp. err EC']:.3f} at $C'_s = {r0["C's"]:.0f}$). The accuracy
    of this 10-class network barely follows when only fc6 is quantized: at $C'_s = {r0["C's"]:.0f}$ error correction
    gets {r0['images EC only']:.0f} test images right that plain PQ gets wrong, and plain PQ {r0['images PQ only']:.0f}
    the other way round, a difference of {r0['EC - PQ (points)']:+.2f} points with a 95 % interval of
    [{r0['95% low']:+.2f}, {r0['95% high']:+.2f}]: {verdict(r0['95% low'], r0['95% high'], 'a real gain', 'a real loss', '**noise**')}.
    {len(noise)} of the {len(res)} settings have an interval that contains 0: **noise**, whichever sign the
    difference has.
    {' '.join(f"At $C'_s = {r['cs']:.0f}$ the interval [{r['lo']:+.2f}, {r['hi']:+.2f}] excludes 0: {verdict(r['lo'], r['hi'], 'a real gain', 'a real loss')} of {r['diff']:+.2f} points." for r in real_rows)}
    With fc6 alone the later layers absorb most of the response error; to see error correction matter, quantize
    more and harder.
    """),
    md(r"""
    ### Several layers at high compression: a real difference

    Quantize **fc6 and fc7** together, as a whole network would. Each layer is corrected on inputs that come from
    the already-quantized layers before it, against the dense network's responses (the "accumulated error"
    compensation of notebook 04, in a few lines here). At $C'_s = 32$, $K = 32$ each weight gets $5/32$ of a bit.
    (fc8 has only 10 outputs, fewer than $K = 32$ codewords, so it stays dense.)
    """),
    code(r"""
    i_fc7 = next(i for i, L in net.param_layers() if L["name"] == "fc7")


    def quantize_fc6_fc7(d, K, corrected):
        q = net.copy()
        xq = xd = S  # inputs of fc6 on the calibration images: through the quantized / the dense prefix
        for name, i, nxt in (("fc6", i_fc6, i_fc7), ("fc7", i_fc7, None)):
            dense_layer = net.params[name]
            kw = dict(calib=xq, targets=dense_layer(xd), n_iter=n_iter) if corrected else {}
            q.params[name] = quantize_linear(dense_layer.weight, dense_layer.bias, sub_dim=d, n_codewords=K, seed=0, **kw)
            if nxt is not None:
                xq, xd = q.forward(xq, start=i, stop=nxt), net.forward(xd, start=i, stop=nxt)
        return q.forward(S_test, start=i_fc6).argmax(1) == test_y[:n_test]


    rows = []
    for d, K in tqdm([(4, 32), (32, 32)] if FAST else [(4, 32), (16, 32), (32, 32)], desc="fc6 + fc7"):
        pq_right, ec_right = quantize_fc6_fc7(d, K, False), quantize_fc6_fc7(d, K, True)
        diff, lo, hi = paired_bootstrap(ec_right, pq_right)
        rows.append({"C's": d, "K": K, "bits/weight": np.log2(K) / d, "top-1 PQ %": 100 * pq_right.mean(),
                     "top-1 EC %": 100 * ec_right.mean(), "EC - PQ (points)": diff, "95% low": lo, "95% high": hi})
    two = pd.DataFrame(rows)
    big, small = two.iloc[-1], two.iloc[0]
    two.round(2)
    """),
    report(r"""
    At $C'_s = {big["C's"]:.0f}$, $K = {big['K']:.0f}$ on fc6 and fc7, plain PQ drops to {big['top-1 PQ %']:.2f} %
    top-1 while error correction keeps {big['top-1 EC %']:.2f} % (dense: {dense_acc:.2f} %): a difference of
    {big['EC - PQ (points)']:+.1f} points, 95 % interval [{big['95% low']:+.1f}, {big['95% high']:+.1f}]:
    {verdict(big['95% low'], big['95% high'], 'a real gain', 'a real loss', 'noise')}. At the mild setting
    $C'_s = {small["C's"]:.0f}$ the difference is {small['EC - PQ (points)']:+.2f} points, interval
    [{small['95% low']:+.2f}, {small['95% high']:+.2f}]:
    {verdict(small['95% low'], small['95% high'], 'a real gain, if a small one', '**a real loss**, if a small one: error correction fits the response on the calibration images, and fewer right answers on the test set can follow', 'noise')}.
    **What the intervals show:** error correction lowers the response error, which pays off in accuracy when
    that error is large enough to flip many decisions (high compression, several layers:
    {claim(big['95% low'] > 0, 'the large gain above')}). At mild settings the accuracy moves by
    {claim(abs(small['EC - PQ (points)']) < 1, 'less than a point')}, {claim(small['95% low'] > 0, 'here in its favour', 'and not always in its favour: a lower response error is not a promise of more right answers')}.
    """),
    md(r"""
    ## 5. Look-up-table inference, timed

    A `QLinear` forward pass builds the $M \times K$ table for each input and then gathers and adds $M$ entries per
    output (`qcnn_lite.kernels.linear_lut`, on the numpy or the compiled Pythran backend). We time it, one thread
    each, for a single input and a batch of 256, against named baselines:

    - **dense fp32, numpy + BLAS**: `Linear`, one optimised matrix product (OpenBLAS);
    - **dense fp32, no BLAS**: the same product as plain loops, the paper's condition (its phone code used no BLAS);
    - **torch fp32**: `torch.nn.Linear` (oneDNN/MKL), and **torch int8**: its dynamic 8-bit quantization.

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


    baselines = {}
    try:  # torch is an optional extra: the baselines it provides are skipped without it
        import torch
        torch.set_num_threads(1)
        t_fc6 = torch.nn.Linear(fc6.in_features, fc6.out_features)
        with torch.no_grad():
            t_fc6.weight.copy_(torch.from_numpy(fc6.weight)); t_fc6.bias.copy_(torch.from_numpy(fc6.bias))
        baselines["torch fp32"] = lambda xb: t_fc6(torch.from_numpy(xb))
        try:
            t_int8 = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(t_fc6), {torch.nn.Linear}, dtype=torch.qint8)
            baselines["torch int8 (dynamic)"] = lambda xb: t_int8(torch.from_numpy(xb))
        except Exception as e:  # no quantized engine on this CPU/build
            print("torch int8 baseline unavailable:", type(e).__name__)
    except ImportError:
        print("torch not installed: torch baselines skipped")
    if kernels.direct_available():  # the paper's condition: its own dense code, no tuned BLAS
        from qcnn_lite.bench.noblas import LABEL as NOBLAS_LABEL, direct_layer
        fc6_noblas = direct_layer(fc6, "fc6")
        baselines[f"fp32 {NOBLAS_LABEL}"] = fc6_noblas

    backend_before = kernels.backend()
    rows = []
    with threadpool_limits(1) if threadpool_limits is not None else contextlib.nullcontext():
        for batch in (1, 256):
            xb = np.ascontiguousarray(S_test[:batch])
            rows.append({"batch": batch, "path": "dense fp32, numpy + BLAS", "ms": median_ms(lambda: fc6(xb))})
            for label, fn in baselines.items():
                rows.append({"batch": batch, "path": label, "ms": median_ms(lambda: fn(xb))})
            for name in kernels.available_backends():
                kernels.set_backend(name)
                for tables in ("float32", "uint8"):
                    q_ec.table_dtype = tables
                    rows.append({"batch": batch, "path": f"Q-CNN LUT, {tables} tables, {name}", "ms": median_ms(lambda: q_ec(xb))})
                q_ec.table_dtype = q_ec.default_table_dtype(q_ec.n_codewords)
            kernels.set_backend(backend_before)
    timing = pd.DataFrame(rows).pivot(index="path", columns="batch", values="ms")
    model_speedup = fc6.in_features * fc6.out_features / (fc6.in_features * 32 + fc6.out_features * M)
    lut_best = timing[[i.startswith("Q-CNN") for i in timing.index]].min()  # the fastest table path per batch
    r1, r256 = (timing.loc["dense fp32, numpy + BLAS", b] / lut_best[b] for b in (1, 256))
    batch_text = ("A batch helps BLAS more than the tables (a matrix-matrix product reuses each weight across inputs, "
                  "the tables are rebuilt for every input)." if r256 < r1 else
                  "On this run the batch did not help BLAS more than the tables.")
    print(f"cost model for fc6 at C's=4, K=32: {model_speedup:.2f}x fewer multiply-adds")
    timing.round(3)
    """),
    code(r"""
    fig, ax = plt.subplots(figsize=(7, 3))
    timing.plot.barh(ax=ax, logx=True)
    ax.set(xlabel="ms per forward pass (median, 1 thread)", ylabel="", title="fc6: dense vs look-up table")
    ax.legend(title="batch")
    show(fig, "timing")
    """),
    report(r"""
    Measured here (medians, one thread): for one input the fastest look-up-table path takes {lut_best[1]:.3f} ms
    against {timing.loc['dense fp32, numpy + BLAS', 1]:.3f} ms for BLAS, {timing.loc['dense fp32, numpy + BLAS', 1] / lut_best[1]:.2f}x
    {"faster" if lut_best[1] < timing.loc['dense fp32, numpy + BLAS', 1] else "the speed of BLAS"};
    for a batch of 256, {lut_best[256]:.2f} ms against {timing.loc['dense fp32, numpy + BLAS', 256]:.2f} ms
    ({timing.loc['dense fp32, numpy + BLAS', 256] / lut_best[256]:.2f}x). The cost model promised {model_speedup:.2f}x.
    The work is of a different kind: the table costs $C_s K$ multiply-adds (a small dense product), the rest is
    gathers and additions of table entries, limited by memory access rather than arithmetic; the 8-bit tables
    let the compiled kernel do 16 or 32 of those look-ups per instruction (byte shuffles), which float32 tables
    cannot. {batch_text} The paper compared both methods **without BLAS**, where
    the operation count decides (the no-BLAS row; notebook 06).
    """),
    report(r"""
    ## Summary

    - An fc layer is quantized over its **input** dimension: $M = C_s/C'_s$ codebooks of $K$ codewords,
      one $\log_2 K$-bit index per output and sub-space (`QLinear`); with float32 tables its LUT forward pass is
      exact for the reconstructed weights, the default 8-bit tables deviate by {u8_dev:.1e} of the largest output.
    - Plain PQ minimises the weight error; **error correction** minimises the response error
      $\sum_n \lVert T_n - \hat W S_n\rVert^2$, which needs only $G = \sum S S^\top$ and $P = \sum S T^\top$.
      Block coordinate descent alternates an exact least-squares codebook update and an exact exhaustive
      assignment search; the error never increases (`history_`).
    - On held-out inputs error correction lowers fc6's response error from {val_pq:.4f} to {val_ec:.4f}
      ($C'_s = 4$, $K = 32$).
    - **Accuracy**: with fc6 alone, {len(noise)} of {len(res)} paired bootstrap intervals contain 0 (noise){''.join(f"; at $C'_s = {r['cs']:.0f}$ the difference is {verdict(r['lo'], r['hi'], 'a real gain', 'a real loss')} ({r['diff']:+.2f} points, [{r['lo']:+.2f}, {r['hi']:+.2f}])" for r in real_rows)}.
      With fc6 and fc7 at $C'_s = {big["C's"]:.0f}$ error correction keeps
      {big['top-1 EC %']:.2f} % against {big['top-1 PQ %']:.2f} % for plain PQ, interval
      [{big['95% low']:+.1f}, {big['95% high']:+.1f}] points: {verdict(big['95% low'], big['95% high'], 'a real gain', 'a real loss', 'noise')};
      at $C'_s = {small["C's"]:.0f}$ {small['EC - PQ (points)']:+.2f} points, [{small['95% low']:+.2f}, {small['95% high']:+.2f}]:
      {verdict(small['95% low'], small['95% high'], 'a small real gain', 'a small real loss', 'noise')}.
    - Speed: for one input the fastest table path ran {r1:.2f}x faster than BLAS dense on this machine (cost model
      {model_speedup:.2f}x), {r256:.2f}x for a batch of 256. The no-BLAS comparison (the paper's) is in notebook 06.

    ## Exercises
    """),
    exercise(1, r"""
    Quantize `fc7` alone instead of fc6. Is error correction more or less useful there? Relate your answer to
    the statistics of the inputs (e.g. the fraction of zeros).
    """, r"""
    fc7's inputs are `net.forward(x, stop=i_fc7)` on the calibration images; compare `(S7 == 0).mean()` with
    `(S == 0).mean()` and the held-out response errors of plain PQ and error correction.
    """, r"""
    Error correction lowers fc7's held-out response error too. The sparser and more anisotropic the inputs
    (ReLU zeros), the more a weight-space error differs from the response error; the cell below prints both
    layers' fractions of zero inputs and how much error correction divides each layer's response error by.
    """, check=r"""
    S7 = net.forward(S, start=i_fc6, stop=i_fc7); S7_val = net.forward(S_val, start=i_fc6, stop=i_fc7)
    fc7 = net.params["fc7"]; st7 = ResponseStats(fc7.in_features, fc7.out_features).update(S7_val, fc7(S7_val))
    err7 = {}
    for label, kw in (("plain PQ", {}), ("error correction", dict(calib=S7, n_iter=n_iter))):
        q7 = quantize_linear(fc7.weight, fc7.bias, sub_dim=4, n_codewords=32, seed=0, **kw)
        err7[label] = response_error(q7.dense_weight(), st7)
    print(f"fc7 held-out response error: plain PQ {err7['plain PQ']:.4f}, error correction {err7['error correction']:.4f}"
          f" ({err7['plain PQ'] / err7['error correction']:.1f}x lower; fc6: {val_pq / val_ec:.1f}x)")
    print(f"zero inputs: fc6 {(S == 0).mean():.2f}, fc7 {(S7 == 0).mean():.2f}")
    assert err7["error correction"] < err7["plain PQ"]
    """),
    exercise(2, r"""
    Vary the number of calibration images (100, 500, 2000; fast mode has only 1000 calibration inputs and stops
    at 500) and plot the held-out response error.
    When does the correction over-fit the calibration set?
    """, r"""
    Compare `q.history_[-1]` (calibration error) with `response_error(q.dense_weight(), stats_val)` (held-out).
    Over-fitting shows as a gap that grows when the number of images is small compared with $C_s$.
    """, r"""
    With fewer images than fc6's 576 inputs, $G$ is singular and the codebooks fit the calibration set's noise:
    with 100 images the calibration error is far below the held-out error, and the held-out error is higher
    than with more images. Notebook 04 draws this curve and fixes the recipe.
    """, check=r"""
    calib_curve = {}
    for n in [n for n in (100, 500, 2000) if n <= len(S)]:
        q_n = quantize_linear(fc6.weight, fc6.bias, sub_dim=4, n_codewords=32, seed=0, calib=S[:n], n_iter=n_iter)
        calib_curve[n] = (q_n.history_[-1], response_error(q_n.dense_weight(), stats_val))
        print(f"{n:5d} images: calibration error {calib_curve[n][0]:.4f}, held-out {calib_curve[n][1]:.4f}")
    n_lo, n_hi = min(calib_curve), max(calib_curve)
    assert calib_curve[n_lo][0] < calib_curve[n_lo][1] and calib_curve[n_lo][1] > calib_curve[n_hi][1]
    assert calib_curve[n_lo][1] - calib_curve[n_lo][0] > calib_curve[n_hi][1] - calib_curve[n_hi][0]  # the gap shrinks
    """),
    exercise(3, r"""
    Show that $\hat W = W$ gives $E = 0$, and that `response_error` equals a direct computation on `S_val`.
    """, r"""
    The relative response error is $\sum_n \lVert T_n - \hat W S_n - \hat b\rVert^2 / \sum_n \lVert T_n - \bar T\rVert^2$,
    with the bias refitted; check the definition in `qcnn_lite.quant.correction.response_error`.
    """, r"""
    With $\hat W = W$ every residual $T_n - W S_n - b$ is zero; the direct computation centres $S$ and $T$
    (the refitted bias absorbs the means) and agrees with `response_error`.
    """, check=r"""
    zero_err = response_error(fc6.weight, stats_val)
    Wq = q_ec.dense_weight(); T_ex = fc6(S_val); Sc, Tc = S_val - S_val.mean(0), T_ex - T_ex.mean(0)
    direct = float(((Tc - Sc @ Wq.T) ** 2).sum() / (Tc ** 2).sum())
    print(f"E(W) = {zero_err:.1e}; direct {direct:.6f}, response_error {response_error(Wq, stats_val):.6f}")
    assert abs(zero_err) < 1e-4 and np.isclose(direct, response_error(Wq, stats_val), rtol=1e-3)
    """),
    exercise(4, r"""
    Replace the exhaustive assignment search by "nearest codeword in weight space" (as in k-means) and show that
    the response error can then *increase* during the sweeps.
    """, r"""
    Notebook 03 writes one sweep of the block coordinate descent in numpy; change its assignment step to
    `argmin_k ||W_o^(m) - D_k||^2` and record $E$ after each sweep.
    """, r"""
    The codebook step still lowers $E$, but the nearest-codeword assignment minimises a different objective
    (weight error), so after it $E$ can rise: the descent is no longer monotone, and the final response error is
    higher than with the exhaustive search in the $G_{mm}$ metric. The cell below shows it on small random layers
    with anisotropic inputs: the least-squares codebook step lowers $E$, the nearest-codeword assignment after it
    raises $E$ again on some of them.
    """, check=r"""
    ex_rng = np.random.default_rng(4)
    steps = []
    for trial in range(8):
        D_, O_, d_, K_ = 16, 8, 2, 4
        M_ = D_ // d_
        S_t = ex_rng.standard_normal((400, D_)) * np.logspace(0, -2, D_)  # anisotropic inputs
        W_t = ex_rng.standard_normal((O_, D_))
        G_t = S_t.T @ S_t
        E_t = lambda Wq: float(np.trace((Wq - W_t) @ G_t @ (Wq - W_t).T) / np.trace(W_t @ G_t @ W_t.T))
        sub = W_t.reshape(O_, M_, d_)
        C_t = np.stack([sub[ex_rng.choice(O_, K_, replace=False), m] for m in range(M_)])  # (M, K, d)
        nearest = lambda C: ((sub[:, :, None, :] - C[None]) ** 2).sum(-1).argmin(-1)  # (O, M), weight space
        rebuild = lambda C, B: C[np.arange(M_), B].reshape(O_, D_)
        B_t = nearest(C_t)
        E0 = E_t(rebuild(C_t, B_t))
        P_t = np.zeros((O_ * D_, M_ * K_ * d_))  # W = P vec(C): one-hot selection of codeword entries
        for o in range(O_):
            for m in range(M_):
                for j in range(d_):
                    P_t[o * D_ + m * d_ + j, (m * K_ + B_t[o, m]) * d_ + j] = 1.0
        Gbig = np.kron(np.eye(O_), G_t)
        H = P_t.T @ Gbig @ P_t + 1e-9 * np.eye(P_t.shape[1])
        C_ls = np.linalg.solve(H, P_t.T @ Gbig @ W_t.ravel()).reshape(M_, K_, d_)  # codebook step, G metric
        E1 = E_t(rebuild(C_ls, B_t))
        E2 = E_t(rebuild(C_ls, nearest(C_ls)))  # nearest-codeword assignment instead of the exhaustive search
        steps.append((E0, E1, E2))
    for E0, E1, E2 in steps:
        print(f"E: k-means {E0:.4f} -> codebook step {E1:.4f} -> nearest-codeword assignment {E2:.4f}")
    assert all(E1 <= E0 + 1e-12 for E0, E1, _ in steps)  # the codebook step never raises E
    assert any(E2 > E1 for _, E1, E2 in steps)  # the weight-space assignment can raise it
    """),
]

if __name__ == "__main__":
    build(NB, cells)
