from nbbuild import build, code, exercise, md, report, setup

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
      and how fast the numpy and compiled (Pythran) kernels are, against named baselines;
    - how much a table addition costs against a multiply-add **on this machine** (measured), and a rule built
      on that constant that picks the faster path per layer;
    - one sweep of the error-correction block coordinate descent written from scratch and checked against the
      package, then error correction on a **conv** layer.

    **What you need**
    - notebook 01 (product quantization, the look-up-table trick); notebook 02 covers error correction;
    - the reference model `data/models/mini-alexnet.qcnn` (`make models`) and Fashion-MNIST (`make data`);
      without the model the notebook falls back to random weights (the pictures are then less telling);
    - torch is optional (one more exactness check and timing);
    - about two minutes in full mode, about one with `QCNN_FAST=1`.
    """),
    setup(NB, "import time\nfrom pathlib import Path\nimport qcnn_lite\nfrom qcnn_lite.io import datasets as data\nfrom qcnn_lite import kernels\nfrom qcnn_lite.nn import models\nfrom qcnn_lite.nn.layers import Conv2d, QConv2d\nfrom qcnn_lite.kernels import _numpy as numpy_kernels\nfrom qcnn_lite.quant.quantize import quantize_conv2d, quantize_linear", one_blas_thread=True),
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
    from qcnn_lite.io import modelfile

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

    q = quantize_conv2d(dense.weight, dense.bias, dense.stride, dense.padding, dense.groups,
                           sub_dim=8, n_codewords=128, seed=0)
    print("codebooks", q.codebooks.shape, " codes", q.codes.shape, q.codes.dtype, " bias", q.bias.shape)
    # the suite's one weight-error metric (as in 02): ||W - W_hat||^2 / ||W||^2
    rel = np.linalg.norm(q.dense_weight() - dense.weight) ** 2 / np.linalg.norm(dense.weight) ** 2
    print(f"relative weight error of plain PQ, ||W - W_hat||^2 / ||W||^2: {rel:.3f}")
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
    The check uses **float32 tables**: then the only differences are float32 rounding (sums in a different
    order), and we print whether the largest relative difference stays below $10^{-5}$. The package's default
    8-bit tables round every table entry on purpose; their error is measured separately, against its bound,
    right after.
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
    worst = {}  # (backend, reference) -> largest relative difference over all cases (float32 tables)
    int_cases = []  # (default table precision, layer, input, float-table output)
    for name in kernels.available_backends():
        kernels.set_backend(name)
        for cs, ctn, k, s, p, grp, sd, kk, side in cases:
            w = check_rng.standard_normal((ctn, cs // grp, k, k)).astype(np.float32)
            b = check_rng.standard_normal(ctn).astype(np.float32)
            ql = quantize_conv2d(w, b, s, p, grp, sub_dim=sd, n_codewords=kk, seed=0)
            xin = check_rng.standard_normal((2, cs, side, side)).astype(np.float32)
            default_td = ql.table_dtype
            ql.table_dtype = "float32"  # float tables: exact up to float rounding
            y = ql(xin)
            ql.table_dtype = default_td
            if name == "numpy":  # the default integer tables, once per case: their error and its bound
                int_cases.append((default_td, ql, xin, y))
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
        print(f"backend {b_:8s} vs {r:7s}: largest relative difference {v:.1e} (float32 tables)")
    exact = all(v < 1e-5 for v in worst.values())
    """),
    md(r"""
    The package's default tables are integers (`int8` here: one scale per image, $\Delta = \max|T|/q_{max}$ with
    $q_{max} = \min(127, \lfloor 32767/n \rfloor)$ so that the sum of the $n = k_h k_w M$ entries of an output
    cannot overflow). Each entry is rounded by at most $\Delta/2$, so an output moves by at most
    $n\,\Delta/2$, and by Cauchy-Schwarz $\max|T| \le \max_k\lVert c_k\rVert \cdot \max\lVert x_{sub}\rVert$.
    We measure the deviation of the default tables from the float tables against that bound.
    """),
    code(r"""
    int_rows = []
    for td, ql, xin, y_float in int_cases:
        kh_, kw_ = ql.kernel_size
        n_terms = kh_ * kw_ * ql.n_subspaces
        qmax = min(127, 32767 // n_terms) if td == "int8" else 32767
        xs = xin.reshape(xin.shape[0], ql.groups, ql.n_subspaces, ql.sub_dim, *xin.shape[2:])
        t_max = float(np.linalg.norm(ql.codebooks, axis=-1).max() * np.sqrt((xs ** 2).sum(3)).max())
        bound = n_terms * t_max / (2 * qmax)  # |y_int - y_float| <= n * Delta / 2
        dev = float(np.abs(ql(xin) - y_float).max())
        int_rows.append((td, dev / np.abs(y_float).max(), bound / np.abs(y_float).max(), dev <= bound))
        print(f"{td:7s} tables: largest deviation {dev / np.abs(y_float).max():.1e} of the largest output, "
              f"bound {bound / np.abs(y_float).max():.1e}")
    int_worst = max(r[1] for r in int_rows)
    int_within = all(r[3] for r in int_rows)
    """),
    report(r"""
    With float32 tables the layer {claim(exact, 'reproduces every dense reference to float32 rounding (largest relative difference ' + f'{max(worst.values()):.1e}' + ')', 'does **not** reproduce the dense references to float32 rounding')}.
    The default integer tables move the outputs by up to {int_worst:.1e} of the largest output,
    {claim(int_within, 'within the rounding bound in every case', 'beyond the rounding bound in some case')}:
    the price of their speed, which section 5 measures.
    """),
    md(r"""
    ## 5. Speed

    The cost model counts multiply-adds; wall-clock time depends on how well each path uses the machine.
    We time one forward pass (batch of 1, as on a phone, and a batch of 16) of two layers:
    the mini AlexNet's `conv2` and a layer shaped like AlexNet's `conv3` ($256 \to 384$, $3 \times 3$,
    $13 \times 13$ map, random weights: timing does not depend on the weights). Paths:
    **dense fp32, numpy im2col + BLAS** (`Conv2d`), **torch fp32** (`torch.nn.functional.conv2d`, oneDNN), and the
    table kernel `kernels.conv2d_lut` on each backend. (The paper's condition, **dense without BLAS**, is the row
    the bench adds; torch's dynamic int8 quantization has no convolutions.)
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
    q3 = quantize_conv2d(d3.weight, d3.bias, 1, 1, 1, sub_dim=8, n_codewords=128, seed=0,
                            kmeans_iter=5 if FAST else 25)
    x2 = net.forward(data.to_input(test_images[:64], mean, std), stop=i_conv2)
    x3 = np.random.default_rng(4).standard_normal((64, 256, 13, 13)).astype(np.float32)
    layers = {"mini-AlexNet conv2": (dense, q, x2), "AlexNet conv3 shape": (d3, q3, x3)}

    repeats = 3 if FAST else 10
    DENSE = "dense fp32, numpy im2col + BLAS"
    NOBLAS = None
    if kernels.direct_available():  # the paper's condition: its own dense code, no tuned BLAS
        from qcnn_lite.bench.noblas import LABEL as NOBLAS_LABEL, direct_layer
        NOBLAS = f"fp32 {NOBLAS_LABEL}"
    rows = []
    one_thread = threadpool_limits(1) if threadpool_limits is not None else contextlib.nullcontext()
    with one_thread:
        for lname, (dl, ql, xs) in tqdm(layers.items(), desc="timing"):
            for batch in (1, 16):
                xb = np.ascontiguousarray(xs[:batch])
                rows.append({"layer": lname, "batch": batch, "path": DENSE,
                             "ms": 1e3 * median_time(lambda: dl(xb), repeats)})
                if NOBLAS is not None:
                    dnb = direct_layer(dl, lname)
                    rows.append({"layer": lname, "batch": batch, "path": NOBLAS,
                                 "ms": 1e3 * median_time(lambda: dnb(xb), repeats)})
                if torch is not None:
                    # torch wants writable arrays; loaded model weights are read-only, so copy them
                    xt, wt, bt = (torch.from_numpy(np.array(a)) for a in (xb, dl.weight, dl.bias))
                    rows.append({"layer": lname, "batch": batch, "path": "torch fp32",
                                 "ms": 1e3 * median_time(lambda: torch.nn.functional.conv2d(
                                     xt, wt, bt, stride=dl.stride, padding=dl.padding, groups=dl.groups), repeats)})
                for name in kernels.available_backends():
                    kernels.set_backend(name)
                    # the kernels themselves: QConv2d may choose its decoded weight instead (section 6)
                    for td in dict.fromkeys(("float32", ql.table_dtype)):  # float, then the layer's default (int8)
                        rows.append({"layer": lname, "batch": batch, "path": f"Q-CNN LUT, {td} tables, {name}",
                                     "ms": 1e3 * median_time(lambda: kernels.conv2d_lut(
                                         xb, ql.codebooks, ql.codes, ql.bias, ql.stride, ql.padding, ql.groups, td),
                                         repeats)})
                kernels.set_backend(backend_before)
    import pandas as pd
    timing = pd.DataFrame(rows)
    for (lname, batch), g in timing.groupby(["layer", "batch"], sort=False):
        t = dict(zip(g["path"], g["ms"]))
        best_q = min(v for k, v in t.items() if k.startswith("Q-CNN"))
        print(f"{lname}, batch {batch:2d}: fastest LUT path {t[DENSE] / best_q:.2f}x the speed of dense numpy + BLAS")
    timing.pivot_table(index=["layer", "batch"], columns="path", values="ms").round(2)
    """),
    code(r"""
    from qcnn_lite.paper import cost
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
    is hard to beat at equal work. The Q-CNN path does fewer multiply-adds, but most of its work is additions of
    table entries. With float tables these are limited by memory: a float table of a whole layer does not fit in
    the cache. The int8 rows quantize the table as it is built (one scale per image, chosen so that no sum can
    overflow 16 bits): the table is four times smaller, stays in L2, and the additions become 16-bit vector adds,
    32 or 64 at a time. The pure-numpy path pays for the temporaries that fancy indexing creates, so it is the
    slowest. Compare your rows with the cost-model speed-ups printed above. The paper's phone measurements
    (notebook 06) compared both methods *without* BLAS (the "no BLAS" row), where the operation count decides.
    """),
    md(r"""
    ## 6. When the tables cannot pay off: a measured cost constant

    A table addition is a memory read; a BLAS multiply-add comes from registers. Write $a$ for the time of one
    dense multiply-add and $c\,a$ for the time of one table addition. The table path of a layer costs
    $F_{\text{table}}$ multiply-adds (building the table, $g M K C'_s d_s^2$) plus $A$ additions
    ($C_t d_k^2 M d_t^2$), the dense path $F_{\text{dense}} = C_t d_k^2 C_s d_t^2$ multiply-adds, so

    $$
    \frac{t_{\text{dense}}}{t_{\text{table}}} \;\approx\; \frac{F_{\text{dense}}}{F_{\text{table}} + c\,A},
    \qquad\text{tables are faster} \iff F_{\text{table}} + c\,A < F_{\text{dense}} .
    $$

    $c = 1$ is the cost model (`QConv2d.lut_speedup`). We **measure** $c$ from the timings above: $a$ from the
    dense path, then $c = (t_{\text{table}}/a - F_{\text{table}}) / A$, for each layer at batch 1.
    """),
    code(r"""
    def counts(ql, H, W):
        # (F_table, A, F_dense) of a QConv2d on an H x W input, as in QConv2d.lut_speedup
        Ct, kh, kw, M = ql.codes.shape
        OH = (H + 2 * ql.padding - kh) // ql.stride + 1
        OW = (W + 2 * ql.padding - kw) // ql.stride + 1
        return (ql.groups * M * ql.n_codewords * ql.sub_dim * H * W, Ct * kh * kw * M * OH * OW,
                Ct * kh * kw * M * ql.sub_dim * OH * OW)


    c_rows = []
    for lname, (dl, ql, xs) in layers.items():
        g = timing[(timing["layer"] == lname) & (timing["batch"] == 1)]
        t = dict(zip(g["path"], g["ms"]))
        # c is the price of a FLOAT table addition (the integer tables have their own cost model, below)
        t_dense, t_lut = t[DENSE], min(v for k, v in t.items() if k.startswith("Q-CNN LUT, float32"))
        F_table, A, F_dense = counts(ql, *xs.shape[2:])
        a = t_dense / F_dense  # ms per dense multiply-add
        table_mb = 4 * ql.groups * ql.n_subspaces * ql.n_codewords * xs.shape[2] * xs.shape[3] / 1e6
        c_rows.append({"layer": lname, "table MB": table_mb, "cost-model speed-up": F_dense / (F_table + A),
                       "measured speed-up": t_dense / t_lut, "c = add / MAC": (t_lut / a - F_table) / A})
    c_table = pd.DataFrame(c_rows).set_index("layer")
    c_lo, c_hi = c_table["c = add / MAC"].min(), c_table["c = add / MAC"].max()
    c_table.round(2)
    """),
    md(r"""
    $c$ is not one constant: it grows with the size of the table, because a table that no longer fits in the
    cache turns every addition into a slower memory read. So the rule prices additions with the $c$ measured
    at the nearest table size: use the tables when $F_{\text{dense}} / (F_{\text{table}} + c A) > 1$, i.e. when
    the cost-model speed-up, corrected for the real price of an addition, exceeds one. (On a timed layer this
    reproduces the measurement by construction; its use is for layers of similar size that were not timed. An
    engine can also simply time both paths once per layer shape when it loads a model.) The package's engine uses
    a fixed threshold instead (`LUT_MIN_SPEEDUP`, below which a layer whose decoded weight is smaller than its
    tables runs from that weight, `QConv2d.uses_tables`). Below, both rules on the two timed layers and on
    AlexNet's conv1 and conv3, against what was measured where we measured it. AlexNet's layers are built with
    all-zero codebooks and codes: the decision depends only on the shapes.
    """),
    code(r"""
    from qcnn_lite.nn.table_policy import LUT_MIN_SPEEDUP


    def c_for(ql, H, W):
        # the c measured on the timed layer whose table size is nearest (in log scale)
        mb = 4 * ql.groups * ql.n_subspaces * ql.n_codewords * H * W / 1e6
        return float(c_table["c = add / MAC"].iloc[np.argmin(np.abs(np.log(c_table["table MB"] / mb)))])


    def measured_rule(ql, H, W):
        F_table, A, F_dense = counts(ql, H, W)
        return F_dense / (F_table + c_for(ql, H, W) * A) > 1.0


    alex = models.synthetic("alexnet")
    alex_dims = alex.input_dims()
    shown = dict(layers)
    for lname in ("conv1", "conv3"):
        dl = alex.params[lname]
        sd = min(8, dl.in_channels // dl.groups)
        M_ = dl.in_channels // dl.groups // sd
        ql = QConv2d(np.zeros((M_, 128, sd), np.float32),  # all-zero codebooks and codes: only shapes matter here
                     np.zeros((dl.out_channels, *dl.kernel_size, M_), np.uint8), dl.bias, dl.stride, dl.padding, dl.groups)
        shown[f"AlexNet {lname}"] = (dl, ql, np.zeros((1,) + alex_dims[lname], np.float32))
    rule_rows = []
    for lname, (dl, ql, xs) in shown.items():
        H, W = xs.shape[2:]
        default_td = ql.table_dtype
        ql.table_dtype = "float32"  # the rule for float tables, which section 5's c was measured on
        pkg_float = ql.uses_tables(H, W)
        ql.table_dtype = default_td
        row = {"layer": lname, "C's": ql.sub_dim, "M": ql.n_subspaces, "cost-model speed-up": ql.lut_speedup(H, W),
               "package rule": "tables" if pkg_float else "decoded weight",
               f"package rule, {default_td} tables": "tables" if ql.uses_tables(H, W) else "decoded weight",
               "c used": c_for(ql, H, W), "measured rule": "tables" if measured_rule(ql, H, W) else "decoded weight"}
        if lname in c_table.index:
            row["measured faster"] = "tables" if c_table.loc[lname, "measured speed-up"] > 1 else "decoded weight"
        rule_rows.append(row)
    rules = pd.DataFrame(rule_rows).set_index("layer").fillna("(not timed)").round(2)
    conv1 = shown["AlexNet conv1"][1]
    conv1_table_bytes = 4 * conv1.groups * conv1.n_subspaces * conv1.n_codewords * np.prod(alex_dims["conv1"][1:])
    conv1_ratio = conv1_table_bytes / (4 * np.prod(alex_dims["conv1"]))
    timed = rules[rules["measured faster"] != "(not timed)"]
    agree = int((timed["measured rule"] == timed["measured faster"]).sum())
    pkg_wrong = [n for n in timed.index if timed.loc[n, "package rule"] != timed.loc[n, "measured faster"]]
    pkg_text = ("it picks the slower path for " + ", ".join(pkg_wrong)) if pkg_wrong else "it picks the faster path on both"
    sm, lg = c_table["table MB"].idxmin(), c_table["table MB"].idxmax()
    agree_pkg = int((timed["package rule"] == timed["measured faster"]).sum())
    print("package threshold LUT_MIN_SPEEDUP =", LUT_MIN_SPEEDUP)
    rules
    """),
    report(r"""
    On this machine one table addition costs $c$ = {c_table.loc[sm, 'c = add / MAC']:.2f} multiply-adds with the
    {c_table.loc[sm, 'table MB']:.2f} MB table of {sm}, and {c_table.loc[lg, 'c = add / MAC']:.2f} with the
    {c_table.loc[lg, 'table MB']:.2f} MB table of {lg}. The package's fixed threshold (`LUT_MIN_SPEEDUP` = 3,
    from a constant of about 3.5 measured on another machine) agrees with the measurement on {agree_pkg} of the
    {len(timed)} timed layers: {pkg_text}. The size-aware rule agrees on {agree}, but by construction, not as
evidence: its $c$ was measured on these same layers, so it cannot disagree with them
({claim(agree == len(timed), 'as expected')}). Narrow sub-spaces are where
    tables cannot pay off at all: AlexNet's `conv1` has 3 input channels, so $M = 1$, $C'_s = 3$, and its table is
    {conv1_ratio:.0f} times the size of its input ({conv1_table_bytes / 1e6:.1f} MB for one image) for a
    {shown['AlexNet conv1'][1].lut_speedup(*alex_dims['conv1'][1:]):.2f}x
    theoretical saving. The model file stores the codes either way, so the choice of path never changes storage.
    For the integer tables the layers use by default, `QConv2d.uses_tables` does price additions by measurement:
    a cost model fitted per table precision (`INT_TABLE_COSTS`, from `scripts/conv8_costs.py`) and a cap on the
    table's size (`INT_TABLE_MAX_BYTES`); the last column of the table above shows its choice.
    """),
    md(r"""
    ## 7. One sweep of block coordinate descent, from scratch

    Notebook 02 derived error correction: minimise $E(\hat W) = \operatorname{tr}(\hat W G \hat W^\top) -
    2\operatorname{tr}(\hat W P) + \text{const}$ one sub-space at a time, with the residual
    $r_o^{(m)} = P_{m,o} - \sum_{m' \neq m} G_{mm'} \hat W_o^{(m')}$. Here is one sweep in numpy, for an fc layer
    (one tap; a conv layer couples the $d_k^2$ taps that share a codebook into one $K C'_s \times K C'_s$
    system, which the package solves the same way). The package adds a tiny ridge
    $\lambda \lVert D^{(m)}_k - D^{(m),\text{old}}_k \rVert^2$ with $\lambda = 10^{-6} \cdot C_t \operatorname{tr}(G_{mm}) / (K C'_s)$,
    which keeps unused codewords in place; we do the same so that the results can be compared exactly:

    1. codebook: $D^{(m)}_k = \big(|O_k|\, G_{mm} + \lambda I\big)^{-1} \big(\lambda D^{(m),\text{old}}_k + \sum_{o \in O_k} r_o^{(m)}\big)$;
    2. assignment: $b_o^{(m)} = \arg\min_k D^{(m)\top}_k G_{mm} D^{(m)}_k - 2\, D^{(m)\top}_k r_o^{(m)}$.

    The layer is the mini AlexNet's `fc6` ($C'_s = 8$, $K = 32$), calibrated on training images.
    """),
    code(r"""
    from qcnn_lite.quant.correction import ResponseStats, refine, response_error
    from qcnn_lite.nn.layers import QLinear

    train_images, _ = data.load_fashion_mnist("train")
    n_calib = 300 if FAST else 1000
    calib_idx = rng.choice(len(train_images), 2 * n_calib, replace=False)
    i_fc6 = next(i for i, L in net.param_layers() if L["name"] == "fc6")
    fc6 = net.params["fc6"]
    S6 = net.forward(data.to_input(train_images[calib_idx[:n_calib]], mean, std), stop=i_fc6).reshape(n_calib, -1)
    stats6 = ResponseStats(fc6.in_features, fc6.out_features).update(S6, fc6(S6))
    start = quantize_linear(fc6.weight, fc6.bias, sub_dim=8, n_codewords=32, seed=0)  # plain PQ: the start


    def bcd_sweep(books, codes, G, P, ridge=1e-6):
        # one sweep over the sub-spaces: books (M, K, d), codes (O, M) -> new books, new codes
        D, b = books.astype(np.float64).copy(), codes.astype(np.intp).copy()
        M, K, d = D.shape
        O = b.shape[0]
        W_hat = D[np.arange(M), b].reshape(O, -1)  # (O, Cs)
        for m in range(M):
            J = slice(m * d, (m + 1) * d)
            Gmm = G[J, J]
            R = P[J].T - W_hat @ G[:, J] + W_hat[:, J] @ Gmm  # r_o for every output o: (O, d)
            # 1. codebook by least squares, assignments fixed
            lam = ridge * O * np.trace(Gmm) / (K * d)
            n_k = np.bincount(b[:, m], minlength=K)
            for k in range(K):
                D[m, k] = np.linalg.solve(n_k[k] * Gmm + lam * np.eye(d), lam * D[m, k] + R[b[:, m] == k].sum(0))
            # 2. assignment by exhaustive search over the K codewords (r_o does not depend on sub-space m)
            cost = np.einsum("kc,ce,ke->k", D[m], Gmm, D[m])[None, :] - 2.0 * R @ D[m].T  # (O, K)
            b[:, m] = cost.argmin(1)
            W_hat[:, J] = D[m][b[:, m]]
        return D, b


    my_books, my_codes = bcd_sweep(start.codebooks, start.codes, stats6.G, stats6.P)
    pkg_books, pkg_codes, pkg_hist = refine(start.codebooks, start.codes[:, None, :], [stats6], n_iter=1)
    same_codes = float((my_codes == pkg_codes[:, 0, :]).mean())
    assert np.allclose(my_books, pkg_books, rtol=1e-3, atol=1e-4 * np.abs(pkg_books).max())
    assert same_codes > 0.999  # identical but for float-rounding ties
    my_err = response_error(my_books[np.arange(my_books.shape[0]), my_codes].reshape(fc6.out_features, -1), stats6)
    print(f"numpy sweep == qcnn_lite.quant.correction.refine: codebooks equal, {100 * same_codes:.2f} % of codes equal")
    print(f"relative response error (calibration): plain PQ {pkg_hist[0]:.4f} -> one sweep {my_err:.4f} "
          f"(package {pkg_hist[1]:.4f})")
    """),
    md(r"""
    ## 8. Error correction on a conv layer

    `quantize_conv2d(..., calib=X)` runs the same descent on a conv layer: its calibration samples are the
    input patches at (a random subset of) output positions, and its codebook step solves the coupled system of
    the taps. We correct `conv2` at two settings and compare with plain PQ on held-out inputs and on the test set,
    with the rest of the network dense.
    """),
    code(r"""
    X2 = net.forward(data.to_input(train_images[calib_idx], mean, std), stop=i_conv2)
    X2_cal, X2_val = X2[:n_calib], X2[n_calib:]
    T2_val = dense(X2_val)
    n_test = 2000 if FAST else len(test_images)
    X2_test = np.concatenate([net.forward(data.to_input(test_images[j:j + 500], mean, std), stop=i_conv2)
                              for j in range(0, n_test, 500)])


    def conv_response_error(ql):
        T_c = T2_val - T2_val.mean((0, 2, 3), keepdims=True)
        return float(((T2_val - ql(X2_val)) ** 2).sum() / (T_c ** 2).sum())


    def top1_with(ql):
        qnet = net.copy()
        qnet.params["conv2"] = ql
        return 100.0 * float((qnet.forward(X2_test, start=i_conv2).argmax(1) == test_labels[:n_test]).mean())


    ec_rows = []
    for d, K in tqdm([(8, 128), (16, 32)], desc="conv2 error correction"):
        for method, kw in (("plain PQ", {}), ("error correction", dict(calib=X2_cal, n_iter=2 if FAST else 4))):
            ql = quantize_conv2d(dense.weight, dense.bias, dense.stride, dense.padding, dense.groups,
                                    sub_dim=d, n_codewords=K, seed=0, **kw)
            ec_rows.append({"C's": d, "K": K, "method": method, "held-out resp. err": conv_response_error(ql),
                            "top-1 %": top1_with(ql)})
    conv_ec = pd.DataFrame(ec_rows).pivot_table(index=["C's", "K"], columns="method", values=["held-out resp. err", "top-1 %"])
    dense_top1 = top1_with(dense)
    e8, e16 = conv_ec.loc[(8, 128)], conv_ec.loc[(16, 32)]
    print(f"dense network: {dense_top1:.2f} % on {n_test} test images")
    se_top1 = 100 * np.sqrt(dense_top1 / 100 * (1 - dense_top1 / 100) / n_test)  # binomial standard error, points
    min_gain = min(e['top-1 %', 'error correction'] - e['top-1 %', 'plain PQ'] for e in (e8, e16))
    conv_ec.round(3)
    """),
    report(r"""
    On conv2 the correction matters at once, even with one layer quantized: at the paper's conv setting
    ($C'_s = 8$, $K = 128$) the held-out response error falls from {e8['held-out resp. err', 'plain PQ']:.3f} to
    {e8['held-out resp. err', 'error correction']:.3f} and top-1 goes from {e8['top-1 %', 'plain PQ']:.2f} % to
    {e8['top-1 %', 'error correction']:.2f} % (dense {dense_top1:.2f} %); at $C'_s = 16$, $K = 32$ from
    {e16['top-1 %', 'plain PQ']:.2f} % to {e16['top-1 %', 'error correction']:.2f} %. The standard error of one
    top-1 on {n_test} images is about {se_top1:.2f} points, so these differences
    {claim(min_gain > 3 * se_top1, 'are far outside test-set noise (more than three standard errors)', 'are not all clear of test-set noise (some are within three standard errors)')}
    (compare notebook 02's paired bootstrap intervals).

    ## Summary

    - A Q-CNN conv layer splits the **input channels** into $M$ sub-spaces; one codebook per sub-space is
      shared by all $d_k^2$ taps, all output channels and all groups: `codebooks (M, K, C's)`, `codes (Ct, dk, dk, M)`.
    - The look-up table holds $\langle x^{{(m)}}_p, D^{{(m)}}_k\rangle$ for every **unpadded** input pixel: $M K$
      planes the size of the input map. Each output map is the bias plus a sum of $d_k^2 M$ shifted planes;
      taps in the padding contribute nothing. With float32 tables the LUT convolution
      {claim(exact, 'reproduces a dense convolution with the reconstructed weights to float32 rounding, on every backend, for every stride, padding and grouping tried')};
      the default integer tables add a rounding error of up to {int_worst:.1e} of the largest output,
      {claim(int_within, 'within its bound')}.
    - A table addition costs {c_lo:.2f} to {c_hi:.2f} multiply-adds here, more as the table outgrows the cache; the
      rule $F_{{\text{{dense}}}} > F_{{\text{{table}}}} + c A$ prices $c$ at the table's size (on the timed layers it
      matches the measurement by construction); the fixed threshold picks the faster path on {agree_pkg} of
      {len(timed)} timed layers.
    - One sweep of block coordinate descent in numpy equals `qcnn_lite.quant.correction.refine`; on conv2 error
      correction lifts top-1 from {e8['top-1 %', 'plain PQ']:.2f} % to {e8['top-1 %', 'error correction']:.2f} % at
      $C'_s = 8$, $K = 128$.

    ## Exercises
    """),
    exercise(1, r"""
    Quantize `conv2` with $C'_s \in \{2, 4, 8, 16\}$ and $K \in \{16, 64, 128\}$ and plot the relative weight
    error against the cost-model speed-up. Which settings would you pick?
    """, r"""
    Loop over the settings with `quantize_conv2d(...)`, compute `np.linalg.norm(ql.dense_weight() - dense.weight) ** 2 / np.linalg.norm(dense.weight) ** 2`
    and `ql.lut_speedup(13, 13)`.
    """, r"""
    Keep the settings on the lower-right front (largest speed-up for a given error); on this small map the table
    term $g M K C'_s d_s^2$ is large, so small $K$ and large $C'_s$ give the largest speed-ups, and the largest
    errors. The cell computes the grid (fast mode: $K \in \{16, 64\}$) and checks both trends.
    """, check=r"""
    pts = []
    for d in (2, 4, 8, 16):
        for K in ((16, 64) if FAST else (16, 64, 128)):
            ql_ex = quantize_conv2d(dense.weight, dense.bias, dense.stride, dense.padding, dense.groups, sub_dim=d, n_codewords=K, seed=0)
            pts.append({"C's": d, "K": K, "speed-up": ql_ex.lut_speedup(13, 13),
                        "weight error": float(np.linalg.norm(ql_ex.dense_weight() - dense.weight) ** 2 / np.linalg.norm(dense.weight) ** 2)})
    grid_ex = pd.DataFrame(pts)
    print(grid_ex.sort_values("speed-up").round(3).to_string(index=False))
    best = grid_ex.loc[grid_ex["speed-up"].idxmax()]
    assert (best["C's"], best["K"]) == (16, 16)  # the largest speed-up: largest C's, smallest K
    assert grid_ex.loc[grid_ex["weight error"].idxmax(), "C's"] == 16  # and the largest errors
    """),
    exercise(2, r"""
    Count the table entries that are never read: for stride 2, which input pixels does no tap visit?
    """, r"""
    Look at `_tap_range` in `qcnn_lite/kernels/_numpy.py`: for each tap it gives the output rows that read a
    given input row.
    """, r"""
    With kernel $d_k$, stride $s$ and padding $P$, input row $p$ is read by output row $o$ through tap $i$ when
    $p = s o + i - P$. For $d_k \geq s$ every row is read by some tap; for $d_k < s$ (e.g. a $1 \times 1$ conv with
    stride 2) the rows between the strided positions are never read, and their table entries are wasted work.
    The cell counts, for a few kernels and strides, the input rows no tap reads.
    """, check=r"""
    def unread_rows(H, k, s, P):
        out_rows = (H + 2 * P - k) // s + 1
        read = {s * o + i - P for o in range(out_rows) for i in range(k)}
        return [p for p in range(H) if p not in read]

    for k_, s_, P_ in [(3, 1, 1), (3, 2, 1), (5, 2, 2), (1, 2, 0), (1, 1, 0)]:
        print(f"kernel {k_}, stride {s_}, padding {P_}: unread input rows of 13: {unread_rows(13, k_, s_, P_)}")
    assert all(not unread_rows(13, k_, s_, P_) for k_, s_, P_ in [(3, 1, 1), (3, 2, 1), (5, 2, 2), (1, 1, 0)])
    assert unread_rows(13, 1, 2, 0) == [1, 3, 5, 7, 9, 11]
    """),
    exercise(3, r"""
    Measure $c$ with more threads (drop the `threadpool_limits`) and with batch 16. Does the rule's decision change?
    """, r"""
    Re-run the timing cell without `one_thread`, then the $c$ cell with `timing["batch"] == 16`.
    """, r"""
    It depends on the machine, so measure it. A matrix-matrix product reuses each weight across the batch and BLAS
    spreads over threads, while the tables are rebuilt for every image; so one expects $a$ to fall faster than the
    price of an addition, $c$ to rise and fewer layers to pass the rule. But on one thread and a batch of 16 a
    small layer may not gain at all from batching. The cell reads the batch half off the timings above: how much
    batching speeds up each path per image, and which way that moves $c$. A deployment should measure $c$ for the
    thread count and batch it will run with.
    """, check=r"""
    per_image = timing.assign(ms_per_image=timing["ms"] / timing["batch"])
    gain = {}
    for path_name in (DENSE, "Q-CNN LUT, float32"):
        g = per_image[per_image["path"].str.startswith(path_name)]
        gain[path_name] = float(g[g["batch"] == 1]["ms_per_image"].min() / g[g["batch"] == g["batch"].max()]["ms_per_image"].min())
    print("per-image speed-up from batching:", {k: round(v, 2) for k, v in gain.items()})
    print("so with batch 16, c", "rises (fewer layers pass the rule)" if gain[DENSE] > gain["Q-CNN LUT, float32"]
          else "falls (the rule leans towards the tables) on this machine")
    assert all(np.isfinite(v) and v > 0 for v in gain.values())
    """),
]

if __name__ == "__main__":
    build(NB, cells, constants={"3.5": "QConv2d.uses_tables docstring: add/MAC cost measured on x86"})
