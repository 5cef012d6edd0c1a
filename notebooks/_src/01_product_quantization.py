from nbbuild import build, code, exercise, md, report, setup

NB = "01_product_quantization"
cells = [
    md(r"""
    # 01 · Product quantization and the look-up-table trick

    **What you will learn**
    - product quantization (PQ) and the look-up-table (LUT) inner product, first **by hand** on an $8 \times 4$ matrix;
    - vector quantization: how Lloyd's k-means turns a cloud of vectors into $K$ codewords;
    - product quantization: split each vector into $M$ sub-vectors and quantize each sub-space separately,
      getting $K^M$ reproduction values from only $M K$ stored codewords;
    - how the distortion depends on the codebook size $K$ and on the sub-space dimension $C'_s$, at equal bit budget;
    - what the codewords look like and how evenly they are used.

    **What you need**
    - notebook 00 for the motivation (optional); the Fashion-MNIST data set (`make data`);
    - about a minute in full mode, a few seconds with `QCNN_FAST=1`.

    **From scratch, then the package.** Each algorithm is first written in a few lines of numpy in this
    notebook, then `assert`ed equal to `qcnn_lite.quant.pq` (`kmeans`, `ProductQuantizer`) on the same seed.

    **Notation** (used in every notebook): sub-space $m$ has a codebook $D^{(m)} \in \mathbb{R}^{K \times C'_s}$
    whose **rows** $D^{(m)}_k$ are the codewords, stored as `codebooks_[m]`, shape `(K, C's)`.
    """),
    setup(NB, "from IPython.display import Markdown, display\nimport pandas as pd\nfrom tqdm.auto import tqdm\nfrom qcnn_lite.io import datasets as data\nfrom qcnn_lite.quant import pq as pq_module\nfrom qcnn_lite.quant.pq import ProductQuantizer, kmeans"),
    md(r"""
    ## 0. A worked example by hand

    Take a weight matrix $W$ with $8$ rows (weight vectors, e.g. the 8 outputs of a tiny fc layer) of
    dimension $D = 4$. With $C'_s = 2$ we cut every row into $M = D / C'_s = 2$ sub-vectors: columns 1-2 form
    sub-space 1, columns 3-4 sub-space 2. Each sub-space gets $K = 2$ codewords. The numbers are chosen so that
    each sub-space has two clear groups of four points; k-means puts a codeword at the mean of each group
    (the code below prints each codeword beside its group and asserts that it is the mean).
    """),
    code(r"""
    W = np.array([  # sub-space 1 | sub-space 2
        [ 1.5,  2.5,   0.5,  1.5],
        [ 1.5,  3.5,  -2.5, -0.5],
        [ 2.5,  2.5,   1.5,  1.5],
        [ 2.5,  3.5,  -2.5, -1.5],
        [-1.5, -1.5,   0.5,  2.5],
        [-1.5, -2.5,  -1.5, -0.5],
        [-0.5, -1.5,   1.5,  2.5],
        [-0.5, -2.5,  -1.5, -1.5],
    ], dtype=float)
    pq_hand = ProductQuantizer(sub_dim=2, n_codewords=2, seed=0).fit(W)
    D_hand = pq_hand.codebooks_  # (M=2, K=2, C's=2)
    b_hand = pq_hand.encode(W)  # (8, M): one code per row and sub-space
    for m in range(2):
        sub = W[:, 2 * m:2 * m + 2]
        for k in range(2):
            members = sub[b_hand[:, m] == k]
            print(f"sub-space {m + 1}, codeword {k}: D[{m + 1}]_{k} = {D_hand[m, k]}  "
                  f"= mean of {members.tolist()}")
            assert np.allclose(D_hand[m, k], members.mean(0))  # the codeword is the mean of its group
    print("\ncodes b (row o -> [b_o1, b_o2]):", b_hand.tolist())
    print("reconstruction W_hat = [D1[b_o1], D2[b_o2]]:\n", pq_hand.decode(b_hand))
    """),
    md(r"""
    Storing $W$ now takes the $2 \times 2 \times 2 = 8$ codebook numbers and $8 \times 2$ one-bit codes,
    instead of $32$ numbers. Now multiply by an input $q \in \mathbb{R}^4$. The **look-up table** holds the
    inner product of each sub-vector of $q$ with each codeword, $\mathrm{LUT}[m, k] = \langle q^{(m)}, D^{(m)}_k\rangle$:
    $M K = 4$ entries, computed once for the input. Each output is then a sum of $M = 2$ table entries,
    $\hat y_o = \mathrm{LUT}[1, b_{o1}] + \mathrm{LUT}[2, b_{o2}]$, with no multiplication at all.
    """),
    code(r"""
    q_hand = np.array([1.0, 0.0, -1.0, 2.0])
    LUT = np.zeros((2, 2))
    for m in range(2):
        for k in range(2):
            qm, d = q_hand[2 * m:2 * m + 2], D_hand[m, k]
            LUT[m, k] = qm @ d
            print(f"LUT[{m + 1}, {k}] = <({qm[0]:g}, {qm[1]:g}), ({d[0]:g}, {d[1]:g})> "
                  f"= {qm[0]:g}*{d[0]:g} + {qm[1]:g}*{d[1]:g} = {LUT[m, k]:g}")
    y_lut = LUT[0, b_hand[:, 0]] + LUT[1, b_hand[:, 1]]
    y_hat = pq_hand.decode(b_hand) @ q_hand  # the same numbers, with the reconstructed matrix
    y_exact = W @ q_hand
    print()
    print(pd.DataFrame({"b_o1": b_hand[:, 0], "b_o2": b_hand[:, 1], "LUT sum": y_lut,
                        "W_hat q": y_hat, "exact W q": y_exact}, index=[f"o={o + 1}" for o in range(8)]))
    assert np.allclose(y_lut, y_hat)  # the LUT trick is exact for the quantized matrix
    assert np.allclose(LUT, pq_hand.lookup_table(q_hand))  # ... and it is what the package computes
    """),
    md(r"""
    The table sums equal $\hat W q$ exactly; they differ from $W q$ only by the quantization error of $W$.
    Dense: $8 \times 4 = 32$ multiply-adds. Quantized: $4$ table entries of $C'_s = 2$ multiply-adds each
    ($8$) plus $8 \times 2$ additions. With real sizes ($C_t$ outputs in the thousands) the table is shared
    by all outputs and the saving approaches $C'_s$ (notebook 00). The rest of this notebook builds the
    pieces on real data: k-means, PQ, and the table.
    """),
    md(r"""
    ## 1. Vector quantization with k-means

    A vector quantizer maps every $x \in \mathbb{R}^D$ to the nearest of $K$ **codewords**
    $c_1, \dots, c_K$ (the **codebook**). Storing $x$ then takes only its index, $\log_2 K$ bits.
    k-means chooses the codebook that minimises the mean squared **distortion**

    $$
    E = \frac{1}{n}\sum_{i=1}^{n} \min_{k} \lVert x_i - c_k \rVert^2 .
    $$

    **Lloyd's algorithm** alternates two steps that each lower $E$: assign every point to its nearest codeword,
    then move every codeword to the mean of its points. It stops when $E$ no longer falls (relative change
    below $10^{-7}$) or after `n_iter` steps, whichever comes first. An empty codeword restarts at the worst-served point. Here it is in numpy; the starting
    codebook comes from the package's k-means++ seeding (spread-out points, chosen at random with a fixed seed),
    so that our result and `qcnn_lite.quant.pq.kmeans` can be compared exactly. A 2-D toy example with correlated data:
    """),
    code(r"""
    def lloyd(X, init, n_iter=25, tol=1e-7):
        # Lloyd's k-means from an initial codebook init (K, d): returns codebook (K, d), labels (n,), E per step
        C = init.astype(np.float64).copy()
        prev, history = np.inf, []
        for _ in range(n_iter):
            d = ((X[:, None, :] - C[None, :, :]) ** 2).sum(-1)  # (n, K) squared distances
            labels = d.argmin(1)  # step 1: nearest codeword
            inertia = d[np.arange(len(X)), labels].sum()
            history.append(inertia / len(X))
            counts = np.bincount(labels, minlength=len(C))
            for k in np.flatnonzero(counts):  # step 2: codeword = mean of its points
                C[k] = X[labels == k].mean(0)
            empty = np.flatnonzero(counts == 0)
            if empty.size:  # restart empty codewords at the worst-served points
                C[empty] = X[np.argsort(d[np.arange(len(X)), labels])[::-1][:empty.size]]
            if np.isfinite(prev) and prev - inertia <= tol * prev and not empty.size:
                break
            prev = inertia
        return C, ((X[:, None, :] - C[None]) ** 2).sum(-1).argmin(1), history


    # correlated 2-D toy data: a tilted Gaussian plus a second, smaller blob
    toy = np.concatenate([
        rng.multivariate_normal([0, 0], [[1.0, 0.8], [0.8, 1.0]], 1500),
        rng.multivariate_normal([2.5, -1.5], [[0.15, 0], [0, 0.15]], 500),
    ])
    init = pq_module._kmeans_pp(toy, 16, np.random.default_rng(0))  # the package's k-means++ seeding, seed 0
    my_centers, my_labels, E_history = lloyd(toy, init)
    centers, labels = kmeans(toy, 16, seed=0)
    assert np.allclose(my_centers, centers) and (my_labels == labels).all()  # from scratch == package
    print(f"Lloyd's k-means, K=16: {len(E_history)} steps, distortion E per step:", np.round(E_history, 4))
    print("numpy version == qcnn_lite.quant.pq.kmeans (same codebook, same labels)")
    converged = len(E_history) < 25  # n_iter=25: fewer steps means the tolerance stopped it
    last_drop = (E_history[-2] - E_history[-1]) / E_history[-2]
    """),
    report(r"""
    Here Lloyd's algorithm {claim(converged, f'stopped after {len(E_history)} steps, when $E$ no longer fell', f'reached the cap of {len(E_history)} steps with $E$ still falling (by {last_drop:.1e} of its value in the last step)')}:
    {claim(converged, 'this codebook is a local minimum', 'so this codebook is not yet a local minimum (the package stops at the same cap)')}.
    """),
    code(r"""
    vq_err = ((toy - centers[labels]) ** 2).sum(1).mean()

    # product quantization of the same data: M = 2 sub-spaces of dimension 1, K = 4 codewords each
    pq2 = ProductQuantizer(sub_dim=1, n_codewords=4, seed=0).fit(toy)
    rec = pq2.decode(pq2.encode(toy))
    pq_err = ((toy - rec) ** 2).sum(1).mean()
    grid = np.array([[a, b] for a in pq2.codebooks_[0, :, 0] for b in pq2.codebooks_[1, :, 0]])

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), sharex=True, sharey=True)
    axes[0].scatter(*toy.T, c=labels, s=4, cmap="tab20")
    axes[0].scatter(*centers.T, c="k", marker="x", s=60)
    axes[0].set_title(f"k-means, K=16: 32 stored numbers\nmean distortion {vq_err:.3f}")
    codes2 = pq2.encode(toy)
    axes[1].scatter(*toy.T, c=codes2[:, 0] * 4 + codes2[:, 1], s=4, cmap="tab20")
    axes[1].scatter(*grid.T, c="k", marker="x", s=60)
    for v in pq2.codebooks_[0, :, 0]:
        axes[1].axvline(v, color="grey", lw=0.5)
    for v in pq2.codebooks_[1, :, 0]:
        axes[1].axhline(v, color="grey", lw=0.5)
    axes[1].set_title(f"product quantizer, M=2 x K=4: 8 stored numbers\nmean distortion {pq_err:.3f}")
    cell_share = np.bincount(codes2[:, 0] * 4 + codes2[:, 1], minlength=16) / len(toy)
    n_empty, n_sparse = int((cell_share == 0).sum()), int((cell_share < 0.01).sum())
    for ax in axes:
        ax.set_aspect("equal")
    fig.tight_layout()
    show(fig, "vq_vs_pq_toy")
    """),
    report(r"""
    Both quantizers spend 4 bits per point and have 16 reproduction values. k-means places its 16 where the
    data is; the product quantizer is stuck with a $4 \times 4$ grid (fewer than 1 % of the points fall in {n_sparse}
    of its 16 cells, none at all in {n_empty}) and
    {claim(pq_err > vq_err, f'distorts more ({pq_err:.3f} against {vq_err:.3f})')}.
    """),
    md(r"""
    In exchange it stores 8 numbers instead of 32, and it scales: with $M$
    sub-spaces it has $K^M$ reproduction values for the price of $MK$ codewords, where plain k-means with
    $K^M$ codewords would be hopeless to train or store.

    ## 2. Product quantization

    Cut $x \in \mathbb{R}^D$ into $M = D / C'_s$ sub-vectors $x^{(1)}, \dots, x^{(M)}$ of dimension $C'_s$,
    and give each sub-space its own codebook $D^{(m)} \in \mathbb{R}^{K \times C'_s}$ (rows = codewords), learned by k-means
    on that sub-space only:

    $$
    x \;\approx\; \hat x = \big[\, D^{(1)}_{b_1};\; D^{(2)}_{b_2};\; \dots;\; D^{(M)}_{b_M} \big],
    \qquad b_m = \arg\min_k \lVert x^{(m)} - D^{(m)}_k \rVert^2 .
    $$

    A vector is stored as $M$ indices: $M \log_2 K$ bits, i.e. $\log_2 K / C'_s$ **bits per dimension**.
    `ProductQuantizer(sub_dim, n_codewords)` follows the nanopq/faiss naming: `fit`, `encode`, `decode`,
    `lookup_table`.

    Real data: $8\times8$ patches of Fashion-MNIST training images ($D = 64$), normalised as the models see them.
    """),
    code(r"""
    images, _ = data.load_fashion_mnist("train")
    n_train, n_test = (1500, 500) if FAST else (3000, 1000)
    idx = rng.choice(len(images), n_train + n_test, replace=False)
    x = data.to_input(images[idx])[:, 0]  # (n, 28, 28) float32
    corner = rng.integers(0, 28 - 8 + 1, size=(len(x), 2))
    patches = np.stack([x[i, a:a + 8, b:b + 8].ravel() for i, (a, b) in enumerate(corner)])
    P_train, P_test = patches[:n_train], patches[n_train:]
    print("patches:", P_train.shape, "for training,", P_test.shape, "held out")

    # PQ from scratch: Lloyd's k-means in each sub-space (one generator through all sub-spaces, as the package)
    d_, K_ = 4, 16
    M_ = P_train.shape[1] // d_
    gen = np.random.default_rng(0)
    Xtr = P_train.astype(np.float64)
    my_books = np.stack([lloyd(Xtr[:, m * d_:(m + 1) * d_],
                               pq_module._kmeans_pp(Xtr[:, m * d_:(m + 1) * d_], K_, gen))[0] for m in range(M_)])
    # ... and encoding: the nearest codeword in each sub-space
    Xs = P_test.astype(np.float64).reshape(len(P_test), M_, d_)
    my_codes = np.stack([((Xs[:, m, None, :] - my_books[m][None]) ** 2).sum(-1).argmin(1) for m in range(M_)], 1)

    pq = ProductQuantizer(sub_dim=d_, n_codewords=K_, seed=0).fit(P_train)
    codes = pq.encode(P_test)
    assert np.allclose(my_books, pq.codebooks_, atol=1e-5) and (my_codes == codes).all()
    print("codebooks_:", pq.codebooks_.shape, " codes:", codes.shape, codes.dtype,
          "| numpy PQ == ProductQuantizer (codebooks and codes)")
    recon = pq.decode(codes)
    my_recon = my_books[np.arange(M_)[None, :], my_codes].reshape(len(P_test), -1)  # decoding = a gather
    assert np.allclose(my_recon, recon, atol=1e-5)

    fig, axes = plt.subplots(2, 8, figsize=(10, 2.8))
    for j in range(8):
        axes[0, j].imshow(P_test[j].reshape(8, 8), cmap="gray")
        axes[1, j].imshow(recon[j].reshape(8, 8), cmap="gray")
    for ax in axes.ravel():
        ax.set_xticks([]); ax.set_yticks([]); ax.grid(False)
    axes[0, 0].set_ylabel("original")
    axes[1, 0].set_ylabel("PQ")
    fig.suptitle("8x8 patches, C's=4 (M=16 sub-spaces of 4 pixels, i.e. one patch row = 2 sub-spaces), K=16: 1 bit per pixel")
    fig.tight_layout()
    show(fig, "patch_reconstructions")
    """),
    md(r"""
    ### What the codewords look like, and how often each is used

    With $C'_s = 16$ a sub-space is two rows of a patch ($2 \times 8$ pixels), so its codewords can be drawn
    as little images. Below: the $K = 16$ codewords of the first four sub-spaces (rows 1-2, 3-4, 5-6, 7-8 of
    the patch), then how often each codeword is chosen for the held-out patches, for $K = 16$ and $K = 128$.
    A code of $\log_2 K$ bits carries at most $\log_2 K$ bits of information; its **entropy**
    $H = -\sum_k p_k \log_2 p_k$ (with $p_k$ the share of vectors coded $k$) says how much it actually carries.
    """),
    code(r"""
    pq_img = ProductQuantizer(sub_dim=16, n_codewords=16, seed=0).fit(P_train)
    fig, axes = plt.subplots(4, 16, figsize=(12, 2.6))
    for m in range(4):
        order = np.argsort(-np.bincount(pq_img.encode(P_test)[:, m], minlength=16))  # most used first
        for j, k in enumerate(order):
            axes[m, j].imshow(pq_img.codebooks_[m, k].reshape(2, 8), cmap="gray", vmin=P_train.min(), vmax=P_train.max())
            axes[m, j].set_xticks([]); axes[m, j].set_yticks([]); axes[m, j].grid(False)
        axes[m, 0].set_ylabel(f"rows {2 * m + 1}-{2 * m + 2}", rotation=0, ha="right", fontsize=8)
    fig.suptitle("codewords of 4 sub-spaces (C's=16: 2x8 pixels, K=16), most used first")
    show(fig, "codeword_images")

    usage = {}
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
    for ax, K in zip(axes, (16, 128)):
        qk = ProductQuantizer(sub_dim=8, n_codewords=K, seed=0).fit(P_train)
        ck = qk.encode(P_test)
        p = np.stack([np.bincount(ck[:, m], minlength=K) for m in range(qk.n_subspaces)]) / len(ck)
        H = -(np.where(p > 0, p * np.log2(np.where(p > 0, p, 1)), 0)).sum(1)  # entropy per sub-space
        usage[K] = {"H": H.mean(), "unused": (p == 0).sum(1).mean(), "top10": np.sort(p, 1)[:, ::-1][:, :max(1, K // 10)].sum(1).mean()}
        ax.bar(np.arange(K), np.sort(p, 1)[:, ::-1].mean(0), width=1.0)
        ax.set(xlabel="codeword rank (most used first)", ylabel="share of held-out sub-vectors",
               title=f"C's=8, K={K}: entropy {H.mean():.2f} of {np.log2(K):.0f} bits")
    fig.tight_layout()
    show(fig, "codeword_usage")
    """),
    report(r"""
    The most used codewords are flat strips at a few brightness levels (background, plain cloth), then strips
    with a vertical edge at some position, and a few with a horizontal edge between the two rows: the typical
    content of two rows of clothing images. Their use is very uneven. With $K = 128$ the most used tenth of the codewords codes
    {100 * usage[128]['top10']:.0f} % of the sub-vectors, {usage[128]['unused']:.1f} codewords per sub-space
    are never chosen for the held-out patches, and the codes carry {usage[128]['H']:.2f} bits of the 7 allotted
    ({usage[16]['H']:.2f} of 4 for $K = 16$). Q-CNN stores fixed-length codes anyway: fixed length is what lets
    the table look-up run without decoding.
    """),
    md(r"""
    ### Distortion against $K$ and $C'_s$

    We fit a product quantizer for every pair of $C'_s \in \{1, 2, 4, 8, 16\}$ and
    $K \in \{4, 16, 32, 64, 128, 256\}$ (fast mode: without 64 and 256) and measure the **relative distortion** on held-out patches,
    $\;\overline{\lVert x - \hat x\rVert^2} \,/\, \overline{\lVert x - \bar x\rVert^2}$
    (0 is perfect, 1 is as bad as replacing every patch by the mean patch).
    """),
    code(r"""
    sub_dims = [1, 2, 4, 8, 16]
    Ks = [4, 16, 32, 128] if FAST else [4, 16, 32, 64, 128, 256]
    variance = ((P_test - P_train.mean(0)) ** 2).sum(1).mean()
    rows = []
    for d in tqdm(sub_dims, desc="C's"):
        for K in Ks:
            q = ProductQuantizer(sub_dim=d, n_codewords=K, seed=0).fit(P_train)
            rows.append({"C's": d, "K": K, "M": 64 // d, "bits/dim": np.log2(K) / d,
                         "rel. distortion": q.distortion(P_test) / variance})
    grid_df = pd.DataFrame(rows)
    grid_df.pivot(index="C's", columns="K", values="rel. distortion").round(3)
    """),
    code(r"""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for d, g in grid_df.groupby("C's"):
        axes[0].plot(g["K"], g["rel. distortion"], "o-", label=f"C's={d}")
        axes[1].plot(g["bits/dim"], g["rel. distortion"], "o-", label=f"C's={d}")
    axes[0].set(xscale="log", yscale="log", xlabel="K (codewords per sub-space)", ylabel="relative distortion",
                title="More codewords, less distortion")
    axes[0].set_xticks(Ks, [str(k) for k in Ks])
    axes[1].set(xscale="log", yscale="log", xlabel="bits per dimension = log2(K) / C's",
                title="At equal bits, longer sub-vectors win")
    bit_ticks = [0.125, 0.25, 0.5, 1, 2, 4, 8]
    axes[1].set_xticks(bit_ticks, [f"{b:g}" for b in bit_ticks])
    axes[1].minorticks_off()
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    show(fig, "distortion_vs_K_and_subdim")
    """),
    md(r"""
    Two lessons. For a fixed $C'_s$, distortion falls steadily with $K$ (each doubling of $K$ adds one bit per
    sub-vector). At a fixed **bit budget**, longer sub-vectors ($C'_s = 8, 16$) distort less than short ones,
    because k-means in a higher-dimensional sub-space can exploit the correlation between neighbouring
    pixels. Q-CNN's choices ($C'_s = 8$, $K = 128$ for conv layers: under 1 bit per weight) sit in that regime.
    The price of long sub-vectors is elsewhere: the codebook has $K C'_s$ floats per sub-space, and, as we
    see next, the look-up table has $K$ entries per sub-space. (The curve for $C'_s=1$, $K=256$ drops to
    almost zero because the images have only 256 grey levels: a scalar quantizer with 256 levels is lossless.)

    ## 3. The look-up-table trick

    A layer computes inner products $\langle q, w\rangle$ between its input $q$ and many weight vectors $w$.
    If $w$ is product-quantized with codes $b_1..b_M$,

    $$
    \langle q, \hat w \rangle \;=\; \sum_{m=1}^{M} \big\langle q^{(m)}, D^{(m)}_{b_m} \big\rangle
    \;=\; \sum_{m=1}^{M} \mathrm{LUT}[m, b_m],
    \qquad \mathrm{LUT}[m, k] = \big\langle q^{(m)}, D^{(m)}_k \big\rangle .
    $$

    The table costs $M K C'_s = D K$ multiply-adds, once per query. After that, **each** weight vector costs
    only $M$ additions instead of $D$ multiply-adds. With $C_t$ weight vectors (the outputs of an fc layer):
    $D K + C_t M$ instead of $D\, C_t$. `ProductQuantizer.lookup_table(q)` returns the $(M, K)$ table.
    """),
    code(r"""
    # NBVAL_CHECK_OUTPUT
    # the identity <q, decode(c)> == sum_m LUT[m, c_m] holds exactly, up to float32 rounding
    q8 = ProductQuantizer(sub_dim=8, n_codewords=16, seed=0).fit(P_train)
    Q = P_test[:50]
    db_codes = q8.encode(P_test[50:])
    M = q8.n_subspaces
    # the table from scratch: LUT[n, m, k] = <Q_n^(m), D^(m)_k>
    my_luts = np.einsum("nmd,mkd->nmk", Q.reshape(len(Q), M, 8).astype(np.float64), q8.codebooks_.astype(np.float64))
    luts = q8.lookup_table(Q)  # (50, M, K)
    assert np.allclose(my_luts, luts, rtol=1e-5, atol=1e-5)  # numpy table == ProductQuantizer.lookup_table
    approx = luts[:, np.arange(M), db_codes].sum(-1)  # (50 queries, n database) by table look-ups
    via_decode = Q @ q8.decode(db_codes).T  # the same inner products with reconstructed vectors
    rel = np.abs(approx - via_decode).max() / np.abs(via_decode).max()
    print("LUT shape per query:", luts.shape[1:], " max relative difference below 1e-5:", bool(rel < 1e-5))
    """),
    code(r"""
    exact = Q @ P_test[50:].T  # what the unquantized vectors would give
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, (d, K) in zip(axes, [(8, 16), (4, 64)]):
        qz = ProductQuantizer(sub_dim=d, n_codewords=K, seed=0).fit(P_train)
        lut = qz.lookup_table(Q)
        est = lut[:, np.arange(qz.n_subspaces), qz.encode(P_test[50:])].sum(-1)
        r = np.corrcoef(exact.ravel(), est.ravel())[0, 1]
        ax.scatter(exact.ravel()[::7], est.ravel()[::7], s=2, alpha=0.4)
        lim = [exact.min(), exact.max()]
        ax.plot(lim, lim, "k--", lw=1)
        ax.set(xlabel="exact <q, x>", ylabel="LUT estimate <q, x_hat>",
               title=f"C's={d}, K={K} ({np.log2(K) / d:.2f} bits/dim): r = {r:.4f}")
    fig.tight_layout()
    show(fig, "lut_inner_products")
    """),
    md(r"""
    ## 4. Explore the trade-off

    The slider below picks $C'_s$ and $K$ and reports, for the patches, the measured distortion and bits per
    value, and, for a layer the size of AlexNet's fc7 ($4096 \to 4096$), the multiply-adds and storage the
    cost formulas of notebook 00 give. (In a live notebook the widget updates; the table after it shows every
    setting for readers of the static page.)
    """),
    code(r"""
    import ipywidgets as widgets

    CS, CT = 4096, 4096  # an fc7-sized layer


    def fc_costs(d, K):
        M = CS // d
        flops_q = CS * K + CT * M
        bytes_q = 4 * M * d * K + CT * M * np.log2(K) / 8 + 4 * CT
        return flops_q, bytes_q


    def explore(sub_dim=4, K=16):
        row = grid_df[(grid_df["C's"] == sub_dim) & (grid_df["K"] == K)].iloc[0]
        flops_q, bytes_q = fc_costs(sub_dim, K)
        dense_flops, dense_bytes = CS * CT, 4 * (CS * CT + CT)
        print(f"C's = {sub_dim:2d}, K = {K:3d}:  M = {CS // sub_dim} sub-spaces on fc7")
        print(f"  bits per weight     : {np.log2(K) / sub_dim:.3f}  (float32: 32)")
        print(f"  patch distortion    : {row['rel. distortion']:.3f} (relative)")
        print(f"  fc7 multiply-adds   : {flops_q / 1e6:.2f} M vs {dense_flops / 1e6:.2f} M dense -> {dense_flops / flops_q:.1f}x fewer")
        print(f"  fc7 storage         : {bytes_q / 2**20:.2f} MiB vs {dense_bytes / 2**20:.2f} MiB -> {dense_bytes / bytes_q:.1f}x smaller")


    widgets.interact(explore, sub_dim=widgets.SelectionSlider(options=sub_dims, value=4, description="C's"),
                     K=widgets.SelectionSlider(options=Ks, value=16, description="K"));
    """),
    code(r"""
    table = grid_df.copy()
    costs = [fc_costs(d, K) for d, K in zip(table["C's"], table["K"])]
    table["fc7 speed-up"] = [CS * CT / f for f, _ in costs]
    table["fc7 compression"] = [4 * (CS * CT + CT) / b for _, b in costs]
    table.round(3).set_index(["C's", "K"])
    """),
    md(r"""
    Notice the tension: large $K$ lowers distortion but the table term $C_s K$ eats the speed-up (at $K=256$,
    $C'_s=1$ the "quantized" fc7 needs *more* work than the dense one). Q-CNN's fc setting $C'_s=4$, $K=32$ keeps
    both terms small. The speed-up here is a count of multiply-adds, not a time: notebooks 02 and 03 measure
    the time.
    """),
    code(r"""
    def rel(d, K):
        return float(grid_df[(grid_df["C's"] == d) & (grid_df["K"] == K)]["rel. distortion"].iloc[0])
    """),
    report(r"""
    ## Summary

    - **By hand** ($8 \times 4$ matrix, $C'_s = 2$, $K = 2$): each codeword is the mean of its group, the table has
      $M K = 4$ entries, and every output is a sum of $M = 2$ of them, exactly $\hat W q$.
    - **Lloyd's k-means** in a dozen lines of numpy gives the same codebook and labels as `qcnn_lite.quant.pq.kmeans`
      from the same seeding ({len(E_history)} steps on the toy data); PQ training, encoding and the LUT inner
      product likewise match `ProductQuantizer` exactly.
    - Product quantization quantizes $M$ sub-spaces independently: $K^M$ reproduction values from $MK$ codewords,
      $\log_2 K / C'_s$ bits per dimension. On the held-out patches, relative distortion falls from
      {rel(8, 4):.3f} ($K = 4$) to {rel(8, 128):.3f} ($K = 128$) at $C'_s = 8$. At equal bits longer sub-vectors
      win: at one bit per dimension $C'_s = 4, K = 16$ gives {rel(4, 16):.3f} against {rel(2, 4):.3f} for
      $C'_s = 2, K = 4$; at half a bit, $C'_s = 8, K = 16$ gives {rel(8, 16):.3f} against {rel(4, 4):.3f}.
    - Codeword use is uneven: with $K = 128$ the codes carry {usage[128]['H']:.2f} of 7 bits.
    - Inner products with PQ vectors are sums of $M$ look-up-table entries; the table is built once per input
      ($DK$ multiply-adds) and shared by every output. Notebooks 02 and 03 build layers on this.

    ## Exercises
    """),
    exercise(1, r"""
    Replace the Fashion-MNIST patches by i.i.d. Gaussian vectors of the same shape and redo the distortion grid.
    Does the advantage of long sub-vectors at equal bits survive?
    """, r"""
    Keep the notebook's data: draw new arrays under new names, `G_train = rng.standard_normal(P_train.shape)`
    (and `G_test` likewise), and run the grid loop on them. What correlation between neighbouring dimensions is
    there left for k-means to exploit?
    """, r"""
    With independent Gaussian coordinates the long sub-vectors keep much less of their advantage (what is left
    is the "space-filling" gain of vector quantization) than on the patches: most of the patch advantage came
    from the correlation between neighbouring pixels, which i.i.d. data does not have.
    """, check=r"""
    ex_rng = np.random.default_rng(1)
    G_train, G_test = ex_rng.standard_normal(P_train.shape), ex_rng.standard_normal(P_test.shape)
    gain_db = {}
    for label, (tr, te) in {"Gaussian": (G_train, G_test), "patches": (P_train, P_test)}.items():
        rel = {}
        for d, K in [(1, 2), (4, 16), (8, 256)]:  # all one bit per dimension
            qg = ProductQuantizer(sub_dim=d, n_codewords=K, seed=0).fit(tr)
            rel[d] = qg.distortion(te) / ((te - tr.mean(0)) ** 2).sum(1).mean()
        gain_db[label] = 10 * np.log10(rel[1] / rel[8])  # C's=8 against C's=1, at equal bits
        print(f"{label:8s}: relative distortion {[round(float(v), 3) for v in rel.values()]}, C's=8 gains {gain_db[label]:.2f} dB")
    assert gain_db["Gaussian"] < gain_db["patches"]  # the advantage shrinks without correlation
    """),
    exercise(2, r"""
    Plain PQ minimises the distortion of the *vectors*, but a layer only needs accurate *inner products*.
    Using the LUT scatter above, compute the relative error of the inner products and compare it with the
    relative distortion. Which one does notebook 02's error correction target?
    """, r"""
    The relative inner-product error is $\sum (\langle q, x\rangle - \langle q, \hat x\rangle)^2 / \sum \langle q, x\rangle^2$,
    with `exact` and `est` from the scatter cell.
    """, r"""
    The two differ because the inputs $q$ are not isotropic: errors along directions the inputs rarely take cost
    nothing. Error correction (notebook 02) minimises the inner-product (response) error on real inputs.
    """, check=r"""
    qz_ex = ProductQuantizer(sub_dim=8, n_codewords=16, seed=0).fit(P_train)
    est_ex = qz_ex.lookup_table(Q)[:, np.arange(qz_ex.n_subspaces), qz_ex.encode(P_test[50:])].sum(-1)
    ip_err = float(((exact - est_ex) ** 2).sum() / (exact ** 2).sum())
    vec_err = float(qz_ex.distortion(P_test) / variance)
    print(f"relative inner-product error {ip_err:.3f}, relative distortion {vec_err:.3f}")
    assert abs(ip_err - vec_err) > 0.05 * vec_err  # the two errors differ
    """),
    exercise(3, r"""
    Count the multiply-adds of `lookup_table` for one query and check the formula $DK$.
    For which $K$ does building the table cost as much as a dense fc layer with $C_t$ outputs?
    """, r"""
    The table has $M K$ entries and each is an inner product of length $C'_s$.
    """, r"""
    $M K C'_s = D K$ multiply-adds. The dense layer costs $D C_t$, so the table alone costs as much when
    $K = C_t$: $K$ must stay well below the number of outputs (for fc7, $K = 32 \ll 4096$).
    """, check=r"""
    qz3 = ProductQuantizer(sub_dim=8, n_codewords=16, seed=0).fit(P_train)
    D_ = P_train.shape[1]
    macs = qz3.n_subspaces * qz3.n_codewords * qz3.sub_dim  # M K inner products of length C's
    print("table multiply-adds:", macs, "= D K =", D_ * qz3.n_codewords)
    assert macs == D_ * qz3.n_codewords and qz3.lookup_table(P_test[:1]).size == qz3.n_subspaces * qz3.n_codewords
    """),
]

if __name__ == "__main__":
    build(NB, cells)
