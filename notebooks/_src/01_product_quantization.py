from nbbuild import build, code, md, setup

NB = "01_product_quantization"
cells = [
    md(r"""
    # 01 · Product quantization and the look-up-table trick

    **What you will learn**
    - vector quantization: how k-means turns a cloud of vectors into $K$ codewords, and what it costs;
    - product quantization (PQ): split each vector into $M$ sub-vectors and quantize each sub-space separately,
      getting $K^M$ reproduction values from only $M K$ stored codewords;
    - how the distortion depends on the codebook size $K$ and on the sub-space dimension $C'_s$, at equal bit budget;
    - the look-up-table trick that makes inner products with quantized vectors cheap: the heart of Q-CNN.

    **What you need**
    - notebook 00 for the motivation (optional); the Fashion-MNIST data set (`make data`);
    - about a minute in full mode, a few seconds with `QCNN_FAST=1`.

    Everything here calls `qcnn_lite.pq` (`kmeans`, `ProductQuantizer`); no cell re-implements it.
    """),
    setup(NB, "import pandas as pd\nfrom tqdm.auto import tqdm\nfrom qcnn_lite import data\nfrom qcnn_lite.pq import ProductQuantizer, kmeans"),
    md(r"""
    ## 1. Vector quantization with k-means

    A vector quantizer maps every $x \in \mathbb{R}^D$ to the nearest of $K$ **codewords**
    $c_1, \dots, c_K$ (the **codebook**). Storing $x$ then takes only its index, $\log_2 K$ bits.
    k-means chooses the codebook that minimises the mean squared **distortion**

    $$
    E = \frac{1}{n}\sum_{i=1}^{n} \min_{k} \lVert x_i - c_k \rVert^2 .
    $$

    Lloyd's algorithm alternates two steps that each lower $E$: assign every point to its nearest codeword,
    then move every codeword to the mean of its points. `qcnn_lite.pq.kmeans` seeds it with k-means++ and
    re-seeds empty clusters. A 2-D toy example with correlated data:
    """),
    code(r"""
    # correlated 2-D toy data: a tilted Gaussian plus a second, smaller blob
    toy = np.concatenate([
        rng.multivariate_normal([0, 0], [[1.0, 0.8], [0.8, 1.0]], 1500),
        rng.multivariate_normal([2.5, -1.5], [[0.15, 0], [0, 0.15]], 500),
    ])
    centers, labels = kmeans(toy, 16, seed=0)
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
    for ax in axes:
        ax.set_aspect("equal")
    fig.tight_layout()
    show(fig, "vq_vs_pq_toy")
    """),
    md(r"""
    Both quantizers spend 4 bits per point and have 16 reproduction values. k-means places its 16 where the
    data is; the product quantizer is stuck with a $4 \times 4$ grid (half of its cells lie where there is
    no data) and distorts more. In exchange it stores 8 numbers instead of 32, and it scales: with $M$
    sub-spaces it has $K^M$ reproduction values for the price of $MK$ codewords, where plain k-means with
    $K^M$ codewords would be hopeless to train or store.

    ## 2. Product quantization

    Cut $x \in \mathbb{R}^D$ into $M = D / C'_s$ sub-vectors $x^{(1)}, \dots, x^{(M)}$ of dimension $C'_s$,
    and give each sub-space its own codebook $D^{(m)} \in \mathbb{R}^{C'_s \times K}$, learned by k-means
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

    pq = ProductQuantizer(sub_dim=4, n_codewords=16, seed=0).fit(P_train)
    codes = pq.encode(P_test)
    print("codebooks_:", pq.codebooks_.shape, " codes:", codes.shape, codes.dtype)
    recon = pq.decode(codes)

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
    ### Distortion against $K$ and $C'_s$

    We fit a product quantizer for every pair of $C'_s \in \{1, 2, 4, 8, 16\}$ and
    $K \in \{4, 16, 64, 256\}$ and measure the **relative distortion** on held-out patches,
    $\;\overline{\lVert x - \hat x\rVert^2} \,/\, \overline{\lVert x - \bar x\rVert^2}$
    (0 is perfect, 1 is as bad as replacing every patch by the mean patch).
    """),
    code(r"""
    sub_dims = [1, 2, 4, 8, 16]
    Ks = [4, 16, 64] if FAST else [4, 16, 64, 256]
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
    luts = q8.lookup_table(Q)  # (50, M, K)
    M = q8.n_subspaces
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
    both terms small.

    ## Summary

    - k-means (`qcnn_lite.pq.kmeans`) learns $K$ codewords minimising mean squared distortion; a vector is then one index.
    - Product quantization (`ProductQuantizer`) quantizes $M$ sub-spaces independently: $K^M$ reproduction
      values from $MK$ codewords, $\log_2 K / C'_s$ bits per dimension.
    - At equal bits, longer sub-vectors distort less on correlated data; larger $K$ always helps distortion
      but costs table work and codebook storage.
    - Inner products with PQ vectors are sums of $M$ look-up-table entries: the table is built once per
      input ($DK$ multiply-adds) and shared by every output. Notebooks 02 and 03 build layers on this.

    ## Exercises

    1. Replace the Fashion-MNIST patches by i.i.d. Gaussian vectors of the same shape. Does the advantage of
       long sub-vectors at equal bits survive? Why (or why not)?
    2. Plain PQ minimises the distortion of the *vectors*, but a layer only needs accurate *inner products*
       with its inputs. Using the LUT scatter above, compute the relative error of the inner products and
       compare it with the relative distortion. Which one does notebook 02's error correction target?
    3. Count the multiply-adds of `lookup_table` for one query and check the formula $DK$.
       For which $K$ does building the table cost as much as a dense fc layer with $C_t$ outputs?
    """),
]

if __name__ == "__main__":
    build(NB, cells)
