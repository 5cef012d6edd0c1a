from nbbuild import build, code, md, setup

NB = "03_quantized_conv_layer"
cells = [
    md(r"""
    # 03 · A quantized convolutional layer

    **What you will learn**
    - how Q-CNN quantizes a convolution: sub-spaces split the **input channels**, and one codebook per
      sub-space is **shared by every kernel tap and every output channel** (and every group);
    - what the look-up table of a conv layer looks like: $M K$ planes the size of the input map;
    - why one output map is a **sum of shifted table planes**, and how padding and groups fit in;
    - that the look-up-table convolution is exact for the reconstructed weights (against numpy and torch),
      and how fast the numpy and compiled (Pythran) kernels are.

    **What you need**
    - notebook 01 (product quantization, the look-up-table trick); notebook 02 covers error correction;
    - the reference model `data/models/mini-alexnet.qcnn` (`make models`) and Fashion-MNIST (`make data`);
      without the model the notebook falls back to random weights (the pictures are then less telling);
    - torch is optional (one more exactness check and timing);
    - about a minute.
    """),
    setup(NB, "import time\nfrom pathlib import Path\nimport qcnn_lite\nfrom qcnn_lite import data, kernels, models\nfrom qcnn_lite.layers import Conv2d, QConv2d\nfrom qcnn_lite.kernels import _numpy as numpy_kernels", one_blas_thread=True),
    md(r"""
    ## 1. The maths

    A convolution with $C_s$ input channels, $C_t$ outputs and a $d_k \times d_k$ kernel holds
    $W \in \mathbb{R}^{C_t \times C_s \times d_k \times d_k}$. Seen from one output channel $c_t$ and one kernel
    tap $(i, j)$, the weights form a vector $W_{c_t, :, i, j} \in \mathbb{R}^{C_s}$ that multiplies the
    input pixel's channel vector. Q-CNN cuts the channels into $M = C_s / C'_s$ sub-spaces and replaces each
    sub-vector by a codeword:

    $$
    W^{(m)}_{c_t, :, i, j} \;\approx\; D^{(m)}_{b(c_t, i, j, m)}, \qquad D^{(m)} \in \mathbb{R}^{K \times C'_s}.
    $$

    One codebook serves all $C_t\, d_k^2$ sub-vectors of sub-space $m$, so k-means sees plenty of data and
    the table below is shared too. For input $x$ ($C_s \times d_s \times d_s$), define the **look-up table**
    at every input pixel $p$

    $$
    \mathrm{LUT}[p, m, k] = \big\langle x^{(m)}_p,\; D^{(m)}_k \big\rangle \qquad (d_s^2 \cdot M \cdot K \text{ entries, } d_s^2 C_s K \text{ multiply-adds}).
    $$

    The output at position $o$ (stride $s$, padding $P$) is then

    $$
    y[c_t, o] = \text{bias}[c_t] + \sum_{(i,j)\,:\; p = s\,o + (i,j) - P \;\in\; \text{image}} \;\sum_{m=1}^{M}
    \mathrm{LUT}\big[p,\, m,\, b(c_t, i, j, m)\big],
    $$

    $d_t^2\, d_k^2\, M\, C_t$ additions. Taps that fall into the zero padding would add
    $\langle 0, D^{(m)}_k\rangle = 0$, so they are skipped and the table is only built on the unpadded map.
    With **groups**, output channel $c_t$ only sees its group's channels: $M$ counts the sub-spaces of
    $C_s / g$ channels, every group builds its own table from its own channels, and the codebooks are the
    same for all groups. In `qcnn_lite`: `QConv2d` holds `codebooks (M, K, C's)`, `codes (Ct, dk, dk, M)`
    and `bias`.
    """),
    md(r"""
    ## 2. Quantize a real conv layer

    We take `conv2` of the mini AlexNet trained on Fashion-MNIST: 32 input channels in 2 groups
    (16 channels each), 64 outputs, a padded kernel, on a $13 \times 13$ map. With the paper's conv setting
    $C'_s = 8$, $K = 128$: $M = 16 / 8 = 2$ sub-spaces, shared by both groups. Here we use plain product quantization
    of the weights (notebooks 02 and 04 add error correction).
    """),
    code(r"""
    import os
    from qcnn_lite import modelfile

    REPO = Path(qcnn_lite.__file__).resolve().parents[1]
    # $QCNN_MODELS first (as the demos do), then the repository's data/models
    dirs = ([Path(os.environ["QCNN_MODELS"])] if os.environ.get("QCNN_MODELS") else []) + [REPO / "data" / "models"]
    found = [d / "mini-alexnet.qcnn" for d in dirs if (d / "mini-alexnet.qcnn").is_file()]
    if found:
        net = modelfile.load(found[0])
        print(f"loaded {found[0].relative_to(REPO) if found[0].is_relative_to(REPO) else found[0]}"
              f" (test top-1 recorded at training: {net.meta.get('test_top1', '?')} %)")
    else:
        net = models.synthetic("mini-alexnet", seed=0)
        print("reference model not found (run `make models`): using random weights")

    i_conv2 = next(i for i, L in net.param_layers() if L["name"] == "conv2")
    dense = net.params["conv2"]
    print("conv2 weight", dense.weight.shape, "stride", dense.stride, "padding", dense.padding, "groups", dense.groups)

    q = QConv2d.from_dense(dense.weight, dense.bias, dense.stride, dense.padding, dense.groups,
                           sub_dim=8, n_codewords=128, seed=0)
    print("codebooks", q.codebooks.shape, " codes", q.codes.shape, q.codes.dtype, " bias", q.bias.shape)
    rel = np.linalg.norm(q.dense_weight() - dense.weight) / np.linalg.norm(dense.weight)
    print(f"relative weight error of plain PQ: {rel:.3f}")
    """),
    md(r"""
    ## 3. The look-up table, as pictures

    Feed one test image through the network up to `conv2` (`Network.forward(x, stop=i)`), then build
    the table with the reference kernel's helper `conv_lut_tables`: shape `(n, groups, M*K, H, W)`:
    one $13\times13$ plane per group, sub-space and codeword. Each plane is the input map "seen through"
    one codeword.
    """),
    code(r"""
    test_images, test_labels = data.load_fashion_mnist("test")
    mean, std = data.normalisation(net.meta)
    img = data.to_input(test_images[:1], mean, std)
    x = net.forward(img, stop=i_conv2)  # the input of conv2: (1, 32, 13, 13)
    lut = numpy_kernels.conv_lut_tables(x, q.codebooks, q.groups)
    M, K, d = q.codebooks.shape
    print("input", x.shape, "-> table", lut.shape, "= (n, groups, M*K, H, W)")

    # the codewords used most often in group 0, sub-space 0
    used = np.bincount(q.codes[: q.out_channels // q.groups, :, :, 0].ravel(), minlength=K)
    top = np.argsort(used)[::-1][:10]
    fig, axes = plt.subplots(1, 11, figsize=(13, 1.9))
    axes[0].imshow(test_images[0], cmap="gray")
    axes[0].set_title(data.CLASSES[test_labels[0]], fontsize=8)
    for ax, k in zip(axes[1:], top):
        plane = lut[0, 0, 0 * K + k]
        v = float(np.abs(plane).max()) or 1.0  # each plane on its own scale, white = 0
        ax.imshow(plane, cmap="RdBu_r", vmin=-v, vmax=v)
        ax.set_title(f"m=0, k={k}\nused {used[k]}x", fontsize=8)
    for ax in axes:
        ax.set_xticks([]); ax.set_yticks([]); ax.grid(False)
    fig.suptitle("LUT planes of conv2, group 0, sub-space 0: <x_p, D_k> at every pixel p", y=1.08)
    show(fig, "lut_planes")
    """),
    md(r"""
    ### One output map is a sum of shifted planes

    For output channel $c_t$ and tap $(i, j)$ the codes pick one plane per sub-space; the plane is shifted
    by $(i - P, j - P)$ (with zeros where the tap falls into the padding) and all $d_k^2 M$ shifted planes are
    added. The cell below does exactly that for one output channel, with plain numpy slicing, as an
    illustration, and compares it with `QConv2d.__call__`, which dispatches to the kernels.
    """),
    code(r"""
    ct = 3  # an output channel of group 0
    g = ct // (q.out_channels // q.groups)
    kh, kw = q.kernel_size
    P = q.padding
    padded = np.pad(lut[0, g], ((0, 0), (P, P), (P, P)))  # zeros around every plane: padding adds nothing
    H = x.shape[2]
    shifted = np.array([[padded[m * K + q.codes[ct, i, j, m], i:i + H, j:j + H]  # stride 1: OH = H here
                         for m in range(M)] for i in range(kh) for j in range(kw)])  # (kh*kw, M, H, W)
    by_hand = q.bias[ct] + shifted.sum((0, 1))
    by_kernel = q(x)[0, ct]
    print("max |by hand - QConv2d|:", float(np.abs(by_hand - by_kernel).max()))

    def signed(ax, img):
        # white = 0, so the zero padding shows as white
        v = float(np.abs(img).max()) or 1.0
        ax.imshow(img, cmap="RdBu_r", vmin=-v, vmax=v)

    fig, axes = plt.subplots(2, 7, figsize=(13, 4.6))
    taps = np.linspace(0, kh * kw - 1, 7).round().astype(int)  # 7 taps spread over the kernel
    for t, ax in zip(taps, axes[0]):
        i, j = divmod(int(t), kw)
        signed(ax, shifted[t, 0])
        ax.set_title(f"tap ({i},{j}), m=0\ncode {q.codes[ct, i, j, 0]}", fontsize=8)
    partial = np.cumsum(shifted.sum(1), 0)
    for ax, t in zip(axes[1][:5], np.linspace(0, kh * kw - 1, 5).round().astype(int)):
        signed(ax, partial[t])
        ax.set_title(f"sum of first {t + 1} taps", fontsize=8)
    signed(axes[1][5], by_kernel)
    axes[1][5].set_title("+ bias = QConv2d output", fontsize=8)
    signed(axes[1][6], dense(x)[0, ct])
    axes[1][6].set_title("dense conv2 (unquantized)", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([]); ax.set_yticks([]); ax.grid(False)
    fig.suptitle(f"output channel {ct}: shifted table planes (top), their running sum (bottom)")
    fig.tight_layout()
    show(fig, "sum_of_shifted_planes")
    """),
    md(r"""
    ## 4. Exactness against dense convolutions

    Quantization changes the weights; the look-up-table evaluation must not change anything else. So the
    check is: `QConv2d(x)` against a dense convolution with the *reconstructed* weight
    `q.dense_weight()` (`Conv2d`, im2col + BLAS) and against `torch.nn.functional.conv2d` when torch is installed,
    for a range of strides, paddings and groups, on every available kernel backend.
    Differences are float32 rounding (sums in a different order); we print whether the largest relative
    difference stays below $10^{-5}$.
    """),
    code(r"""
    # NBVAL_CHECK_OUTPUT
    try:
        import torch
    except ImportError:
        torch = None
    check_rng = np.random.default_rng(1)
    cases = [  # (Cs, Ct, kernel, stride, padding, groups, C's, K, input side)
        (16, 24, 3, 1, 1, 1, 8, 32, 9),
        (16, 24, 3, 2, 0, 1, 4, 16, 10),
        (32, 64, 5, 1, 2, 2, 8, 128, 13),
        (24, 12, 3, 2, 2, 4, 2, 8, 7),
        (3, 8, 11, 4, 0, 1, 3, 64, 35),
    ]
    backend_before = kernels.backend()
    worst = {}  # (backend, reference) -> largest relative difference over all cases
    for name in kernels.available_backends():
        kernels.set_backend(name)
        for cs, ctn, k, s, p, grp, sd, kk, side in cases:
            w = check_rng.standard_normal((ctn, cs // grp, k, k)).astype(np.float32)
            b = check_rng.standard_normal(ctn).astype(np.float32)
            ql = QConv2d.from_dense(w, b, s, p, grp, sub_dim=sd, n_codewords=kk, seed=0)
            xin = check_rng.standard_normal((2, cs, side, side)).astype(np.float32)
            y = ql(xin)
            refs = {"Conv2d": Conv2d(ql.dense_weight(), ql.bias, s, p, grp)(xin)}
            if torch is not None:
                refs["torch"] = torch.nn.functional.conv2d(
                    torch.from_numpy(xin), torch.from_numpy(ql.dense_weight()), torch.from_numpy(ql.bias),
                    stride=s, padding=p, groups=grp).numpy()
            for ref_name, ref in refs.items():
                err = float(np.abs(y - ref).max() / np.abs(ref).max())
                worst[name, ref_name] = max(worst.get((name, ref_name), 0.0), err)
    kernels.set_backend(backend_before)
    # the printed lines do not depend on which backends or whether torch are installed
    print(f"{len(cases)} layer shapes, numpy kernel == dense Conv2d:", worst["numpy", "Conv2d"] < 1e-5)
    print("every available backend == dense Conv2d:", all(v < 1e-5 for (b_, r), v in worst.items() if r == "Conv2d"))
    print("== torch conv2d (when torch is installed):", all(v < 1e-5 for (b_, r), v in worst.items() if r == "torch"))
    """),
    code(r"""
    for (b_, r), v in sorted(worst.items()):
        print(f"backend {b_:8s} vs {r:7s}: largest relative difference {v:.1e}")
    """),
    md(r"""
    ## 5. Speed

    The cost model counts multiply-adds; wall-clock time depends on how well each path uses the machine.
    We time one forward pass (batch of 1, as on a phone, and a batch of 16) of two layers:
    the mini AlexNet's `conv2` and a layer shaped like AlexNet's `conv3` ($256 \to 384$, $3 \times 3$,
    $13 \times 13$ map, random weights: timing does not depend on the weights). Paths:
    the dense `Conv2d` (im2col + BLAS), `torch.nn.functional.conv2d`, and `QConv2d` on each kernel backend.
    Torch and BLAS get one thread here so that all paths compare at equal footing. Times are medians and vary
    from machine to machine; this cell is not checked.
    """),
    code(r"""
    import contextlib
    from tqdm.auto import tqdm

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if torch is not None:
        torch.set_num_threads(1)


    def median_time(fn, repeats):
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return float(np.median(times))


    # an AlexNet-conv3-shaped layer; random weights are fine for timing
    w3 = (np.random.default_rng(3).standard_normal((384, 256, 3, 3)) * 0.03).astype(np.float32)
    d3 = Conv2d(w3, np.zeros(384, np.float32), stride=1, padding=1)
    q3 = QConv2d.from_dense(d3.weight, d3.bias, 1, 1, 1, sub_dim=8, n_codewords=128, seed=0,
                            kmeans_iter=5 if FAST else 25)
    x2 = net.forward(data.to_input(test_images[:64], mean, std), stop=i_conv2)
    x3 = np.random.default_rng(4).standard_normal((64, 256, 13, 13)).astype(np.float32)
    layers = {"mini-AlexNet conv2": (dense, q, x2), "AlexNet conv3 shape": (d3, q3, x3)}

    repeats = 3 if FAST else 10
    rows = []
    one_thread = threadpool_limits(1) if threadpool_limits is not None else contextlib.nullcontext()
    with one_thread:
        for lname, (dl, ql, xs) in tqdm(layers.items(), desc="timing"):
            for batch in (1, 16):
                xb = np.ascontiguousarray(xs[:batch])
                rows.append({"layer": lname, "batch": batch, "path": "dense numpy (im2col+BLAS)",
                             "ms": 1e3 * median_time(lambda: dl(xb), repeats)})
                if torch is not None:
                    # torch wants writable arrays; loaded model weights are read-only, so copy them
                    xt, wt, bt = (torch.from_numpy(np.array(a)) for a in (xb, dl.weight, dl.bias))
                    rows.append({"layer": lname, "batch": batch, "path": "dense torch",
                                 "ms": 1e3 * median_time(lambda: torch.nn.functional.conv2d(
                                     xt, wt, bt, stride=dl.stride, padding=dl.padding, groups=dl.groups), repeats)})
                for name in kernels.available_backends():
                    kernels.set_backend(name)
                    # the kernels themselves: QConv2d may choose its decoded weight instead (section 6)
                    rows.append({"layer": lname, "batch": batch, "path": f"Q-CNN LUT, {name}",
                                 "ms": 1e3 * median_time(lambda: kernels.conv2d_lut(
                                     xb, ql.codebooks, ql.codes, ql.bias, ql.stride, ql.padding, ql.groups), repeats)})
                kernels.set_backend(backend_before)
    import pandas as pd
    timing = pd.DataFrame(rows)
    for (lname, batch), g in timing.groupby(["layer", "batch"], sort=False):
        t = dict(zip(g["path"], g["ms"]))
        best_q = min(v for k, v in t.items() if k.startswith("Q-CNN"))
        print(f"{lname}, batch {batch:2d}: fastest LUT path {t['dense numpy (im2col+BLAS)'] / best_q:.2f}x the speed of dense numpy")
    timing.pivot_table(index=["layer", "batch"], columns="path", values="ms").round(2)
    """),
    code(r"""
    from qcnn_lite import cost
    for lname, (dl, ql, xs) in layers.items():
        spec = [{"type": "conv", "name": "c", "out": dl.out_channels, "kernel": dl.kernel_size[0],
                 "stride": dl.stride, "padding": dl.padding, "groups": dl.groups}]
        c = cost.network_cost(spec=spec, input_shape=(dl.in_channels, xs.shape[2], xs.shape[3]),
                              settings={"conv": (ql.sub_dim, ql.n_codewords)})
        print(f"{lname}: cost-model speed-up {c['speedup']:.2f}x ({c['cnn_flops'] / 1e6:.1f} M -> {c['qcnn_flops'] / 1e6:.1f} M multiply-adds)")

    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for ax, (lname, g) in zip(axes, timing.groupby("layer", sort=False)):
        piv = g.pivot_table(index="batch", columns="path", values="ms")
        piv.T.plot.barh(ax=ax)
        ax.set(xscale="log", xlabel="ms per forward pass (median, 1 thread)", ylabel="", title=lname)
        ax.legend(title="batch", fontsize=8)
    fig.tight_layout()
    show(fig, "timing")
    """),
    md(r"""
    How to read this: the dense paths call optimised matrix-product code (BLAS, or torch's own kernels), which
    is hard to beat at equal work. The Q-CNN path does fewer multiply-adds, but most of its work is gathers of
    table entries, which are limited by memory access rather than arithmetic. The pure-numpy path also pays for
    the temporaries that fancy indexing creates, so it is the slowest; the compiled Pythran kernels avoid them,
    and that is where the lower operation count can show. Compare your rows with the cost-model speed-ups
    printed above. The paper's phone measurements (notebook 06) compared both methods *without* BLAS, where
    the operation count decides.

    ## 6. When the tables cannot pay off

    A table addition is a memory read; a BLAS multiply-add comes from registers. On the machine this suite was
    developed on, one table addition costs about as much as 3.5 multiply-adds. So a layer whose theoretical
    speed-up (the cost model's ratio, `QConv2d.lut_speedup`) is small runs *slower* from tables than from its
    weight. That happens when the sub-spaces are narrow: AlexNet's `conv1` has 3 input channels, so $M = 1$ and
    $C'_s = 3$, and its table is 43 times the size of its input (26 MB for one image) for a 1.9x theoretical saving.

    `QConv2d.__call__` therefore decides per input size (`QConv2d.uses_tables`): below a theoretical speed-up of
    `LUT_MIN_SPEEDUP` = 3, and when the decoded weight is smaller than the tables, it decodes its weight
    ($W = D[\text{codes}]$, a few hundred kB at most) and runs the dense convolution. The model file stores the
    codes either way, so storage is unchanged.
    """),
    code(r"""
    from qcnn_lite.layers import LUT_MIN_SPEEDUP

    alex = models.synthetic("alexnet")
    alex_dims = alex.input_dims()
    shown = dict(layers)
    for lname in ("conv1", "conv3"):
        dl = alex.params[lname]
        sd = min(8, dl.in_channels // dl.groups)
        # random codes: the decision depends only on the shapes
        ql = QConv2d(np.zeros((dl.in_channels // dl.groups // sd, 128, sd), np.float32),
                     np.zeros((dl.out_channels, *dl.kernel_size, dl.in_channels // dl.groups // sd), np.uint8),
                     dl.bias, dl.stride, dl.padding, dl.groups)
        shown[f"AlexNet {lname}"] = (dl, ql, np.zeros((1,) + alex_dims[lname], np.float32))
    for lname, (dl, ql, xs) in shown.items():
        H, W = xs.shape[2:]
        way = "look-up tables" if ql.uses_tables(H, W) else "its decoded weight"
        print(f"{lname:22s} C's={ql.sub_dim} M={ql.n_subspaces:2d}: theoretical speed-up {ql.lut_speedup(H, W):5.2f}x "
              f"-> QConv2d runs {way}")
    print("threshold LUT_MIN_SPEEDUP =", LUT_MIN_SPEEDUP)
    """),
    md(r"""
    The mini network's layers are small: their tables are not much cheaper than the dense product, and the engine
    runs most of them from decoded weights. The full-size networks' conv2-conv5 are where tables win (notebook 06).

    ## Summary

    - A Q-CNN conv layer splits the **input channels** into $M$ sub-spaces; one codebook per sub-space is
      shared by all $d_k^2$ taps, all output channels and all groups: `codebooks (M, K, C's)`, `codes (Ct, dk, dk, M)`.
    - The look-up table holds $\langle x^{(m)}_p, D^{(m)}_k\rangle$ for every **unpadded** input pixel: $M K$
      planes the size of the input map. Each output map is the bias plus a sum of $d_k^2 M$ shifted planes;
      taps in the padding contribute nothing.
    - The LUT convolution reproduces a dense convolution with the reconstructed weights to float32 rounding,
      on every backend, for any stride, padding and grouping.
    - Tables pay off only when they save enough work: a layer with a theoretical speed-up below 3 runs from its
      decoded weight instead (`QConv2d.uses_tables`).

    ## Exercises

    1. Quantize `conv2` with $C'_s \in \{2, 4, 8, 16\}$ and $K \in \{16, 64, 128\}$ and plot the relative weight
       error against the cost-model speed-up. Which settings would you pick?
    2. Count the table entries that are never read: for stride 2 (e.g. `QConv2d` with `stride=2`), which input
       pixels does no tap visit? (Hint: look at `_tap_range` in `qcnn_lite/kernels/_numpy.py`.)
    3. Repeat the timing with `batch` 1 and more threads (drop the `threadpool_limits`). Which path gains most?
    """),
]

if __name__ == "__main__":
    build(NB, cells)
