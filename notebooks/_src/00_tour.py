from nbbuild import build, code, exercise, md, report, setup

NB = "00_tour"
cells = [
    md(r"""
    # 00 · A tour of qcnn-lite: why quantize a CNN?

    **What you will learn**
    - where a convolutional network spends its arithmetic and its memory, layer by layer (AlexNet as the example);
    - what Quantized CNN (Q-CNN, Wu et al. 2016) promises: about 4x fewer multiply-adds and about 18x less storage;
    - how this suite of notebooks is organised, and how to run it (fast mode, kernel backends, where figures go).

    **What you need**
    - nothing beyond the installed `qcnn_lite` package: this notebook only uses the *cost model*
      (`qcnn_lite.paper.cost`), which works on architecture specifications and never touches weights;
    - it runs in a few seconds.
    """),
    setup(NB, "import pandas as pd\nfrom qcnn_lite.paper import cost, constants as paper\nfrom qcnn_lite import kernels\nfrom qcnn_lite.nn import models"),
    md(r"""
    ## 1. The problem: a CNN's cost, layer by layer

    The paper counts one **FLOP** as one multiply-add. For a convolution with $C_s$ input channels,
    $C_t$ output channels, a $d_k \times d_k$ kernel, $g$ groups and a $d_t \times d_t$ output map,
    and for a fully-connected (fc) layer with $C_s$ inputs and $C_t$ outputs:

    $$
    \text{FLOPs}_\text{conv} = d_t^2\, C_t\, d_k^2\, \frac{C_s}{g},
    \qquad
    \text{FLOPs}_\text{fc} = C_s\, C_t .
    $$

    Storage is 4 bytes (float32) per weight plus the biases. A convolution reuses each weight at every
    one of its $d_t^2$ output positions; an fc layer uses each weight exactly once. So we should expect the
    **conv layers to dominate the arithmetic** and the **fc layers to dominate the memory**.
    `qcnn_lite.paper.cost.layer_costs` evaluates these formulas on the exact BVLC AlexNet specification
    (`qcnn_lite.nn.models.spec("alexnet")`).
    """),
    code(r"""
    input_shape, spec = models.spec("alexnet")
    layers = cost.layer_costs(spec=spec, input_shape=input_shape)
    df = pd.DataFrame([c.as_dict() for c in layers]).set_index("name")
    df["MFLOPs"] = df["cnn_flops"] / 1e6
    df["MiB"] = df["cnn_bytes"] / cost.MiB
    df[["type", "cs", "ct", "kernel", "groups", "ds", "dt", "params", "MFLOPs", "MiB"]].round(2)
    """),
    code(r"""
    # NBVAL_CHECK_OUTPUT
    total = cost.network_cost(spec=spec, input_shape=input_shape)
    conv_flops = df.loc[df.type == "conv", "cnn_flops"].sum() / total["cnn_flops"]
    fc_bytes = df.loc[df.type == "fc", "cnn_bytes"].sum() / df["cnn_bytes"].sum()
    print(f"AlexNet: {total['params']:,} parameters = {total['cnn_mib']:.2f} MiB, "
          f"{total['cnn_flops'] / 1e6:.1f} M FLOPs per image")
    print(f"conv layers: {100 * conv_flops:.1f}% of the FLOPs; fc layers: {100 * fc_bytes:.1f}% of the storage")
    """),
    code(r"""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    colors = ["tab:blue" if t == "conv" else "tab:orange" for t in df.type]
    axes[0].bar(df.index, df.MFLOPs, color=colors)
    axes[0].set(title="Arithmetic per layer", ylabel="million multiply-adds")
    axes[1].bar(df.index, df.MiB, color=colors)
    axes[1].set(title="Storage per layer", ylabel="MiB (float32)")
    for ax in axes:
        ax.tick_params(axis="x", rotation=45)
    axes[0].legend(handles=[plt.Rectangle((0, 0), 1, 1, color="tab:blue"), plt.Rectangle((0, 0), 1, 1, color="tab:orange")],
                   labels=["conv", "fc"])
    fig.suptitle("BVLC AlexNet, one 227x227 image")
    fig.tight_layout()
    show(fig, "alexnet_cost_per_layer")
    """),
    md(r"""
    Two different problems, then: to run faster we must shrink the **conv** arithmetic; to fit on a phone
    we must shrink the **fc** weights. Q-CNN attacks both with one idea.

    ## 2. What Q-CNN promises

    Q-CNN replaces each layer's weights by **product quantization**
    (notebook 01): the input dimension is cut into $M = C_s / C'_s$ sub-spaces of $C'_s$ channels; in each
    sub-space every weight sub-vector is replaced by one of $K$ learned codewords. At test time the layer
    first computes the inner products of its input with all codewords (a **look-up table**), and every
    output is then a sum of $M$ table entries per kernel tap instead of $C_s$ multiply-adds:

    $$
    \text{FLOPs}^{Q}_\text{fc} = C_s K + C_t M,
    \qquad
    \text{FLOPs}^{Q}_\text{conv} = d_s^2\, C_s K + d_t^2\, d_k^2\, M\, C_t .
    $$

    Storage becomes $K$ codewords of $C'_s$ floats per sub-space plus one $\log_2 K$-bit index per
    sub-vector:

    $$
    \text{bytes}^{Q} = 4 M C'_s K + \frac{C_t\, d_k^2\, M \log_2 K}{8} + 4 C_t .
    $$

    The authors released one quantized AlexNet with $C'_s=8, K=128$ for the conv layers, $C'_s=4, K=32$ for
    fc6/fc7 and $C'_s=1, K=16$ for fc8 (`qcnn_lite.paper.constants.RELEASED_ALEXNET`), the second AlexNet setting
    of their Table 1, which gives its theoretical speed-up; their Table 2 gives its storage. The paper's numbers
    are read from the package's copy of its tables (`qcnn_lite/paper/paper_tables.json`), never retyped. The
    cost model reproduces them:
    """),
    code(r"""
    # NBVAL_CHECK_OUTPUT
    print("settings (C's, K):", paper.RELEASED_ALEXNET)
    assert paper.TABLE1_SETTINGS["alexnet"][1] == paper.RELEASED_ALEXNET  # the released model is setting 2
    p_speedup = paper.table1_paper("alexnet", 2)["speedup"]
    p_mib = {v: paper.table2_paper("alexnet")[v]["storage_mb"] for v in ("cnn", "qcnn")}
    q = cost.network_cost(spec=spec, input_shape=input_shape, settings=paper.RELEASED_ALEXNET)
    print(f"FLOPs   : {q['cnn_flops'] / 1e6:.0f} M -> {q['qcnn_flops'] / 1e6:.0f} M   speed-up {q['speedup']:.2f}x  (paper, Table 1: {p_speedup:.2f}x)")
    print(f"storage : {q['cnn_mib']:.2f} MiB -> {q['qcnn_mib']:.2f} MiB   compression {q['compression']:.1f}x  "
          f"(paper, Table 2: {p_mib['cnn']:.2f} -> {p_mib['qcnn']:.2f} MiB)")
    """),
    report(r"""
    The cost model gives {q['speedup']:.2f}x against the paper's {p_speedup:.2f}x
    ({claim(abs(q['speedup'] - p_speedup) <= 0.01 * p_speedup, 'within 1 %')}), and {q['qcnn_mib']:.2f} MiB,
    {abs(q['qcnn_mib'] - p_mib['qcnn']):.2f} MiB from the paper's {p_mib['qcnn']:.2f} MiB
    ({claim(abs(q['qcnn_mib'] - p_mib['qcnn']) <= 0.02 * p_mib['qcnn'], 'within 2 %')}): rounding in their storage accounting. Layer by layer, on a log scale:
    """),
    code(r"""
    qlayers = cost.layer_costs(spec=spec, input_shape=input_shape, settings=paper.RELEASED_ALEXNET)
    names = [c.name for c in qlayers]
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, (a, b, unit, scale) in zip(axes, [("cnn_flops", "qcnn_flops", "million multiply-adds", 1e6),
                                             ("cnn_bytes", "qcnn_bytes", "MiB", cost.MiB)]):
        ax.bar(x - 0.2, [getattr(c, a) / scale for c in qlayers], 0.4, label="CNN")
        ax.bar(x + 0.2, [getattr(c, b) / scale for c in qlayers], 0.4, label="Q-CNN")
        ax.set_xticks(x, names, rotation=45)
        ax.set_yscale("log")
        ax.set_ylabel(unit)
        ax.legend()
    axes[0].set_title(f"Arithmetic: {q['speedup']:.1f}x fewer multiply-adds in all")
    axes[1].set_title(f"Storage: {q['compression']:.1f}x smaller in all")
    fig.tight_layout()
    show(fig, "alexnet_cnn_vs_qcnn")
    """),
    md(r"""
    Note fc8: with $C'_s=1$ every weight gets its own 4-bit index, so its arithmetic barely changes
    ($C_s K + C_t M = 4096\cdot16 + 1000\cdot4096 > C_s C_t$) but its storage shrinks 7x.

    These are *theoretical* numbers: the notebooks that follow show how the codebooks are learned
    (01–04), check that the look-up-table kernels compute exactly what the reconstructed weights would
    (02, 03), and measure the accuracy that quantization costs on small networks trained on
    Fashion-MNIST (02, 04).

    **FLOPs are not time.** The cost model counts one table addition like one multiply-add. On a real CPU
    they cost different amounts: a table addition is a memory read (slower still when the table outgrows the
    cache), a multiply-add in an optimised BLAS comes from registers, several per instruction. So a 4x
    reduction in operations is not a 4x reduction in time. Notebook 02 times an fc layer, notebook 03 measures
    the add/multiply-add cost ratio on your machine, and notebook 06 compares times with named baselines
    (with and without BLAS, as the paper did).

    ## 3. A map of the suite

    | notebook | what it covers |
    |---|---|
    | [00_tour](00_tour.ipynb) | this page: where a CNN spends FLOPs and bytes; what Q-CNN promises; how to run |
    | [01_product_quantization](01_product_quantization.ipynb) | k-means, product quantization, distortion vs $K$ and $C'_s$, the look-up-table trick |
    | [02_quantized_fc_layer](02_quantized_fc_layer.ipynb) | one fc layer: weight-space PQ, then error correction on real activations; LUT inference timed |
    | [03_quantized_conv_layer](03_quantized_conv_layer.ipynb) | one conv layer: shared codebooks across taps, the LUT planes, padding and groups, exactness and speed |
    | [04_whole_network](04_whole_network.ipynb) | a whole network layer by layer: accumulated-error compensation, accuracy vs compression, the model file |
    | [05_table1](05_table1.ipynb) | the paper's Table 1 rebuilt beside the original: speed-up, compression, accuracy |
    | [06_table2](06_table2.ipynb) | the paper's Table 2: time, storage and memory, measured here and on phones |
    | [07_webcam_demo](07_webcam_demo.ipynb) | classify photos from your webcam or a file with a quantized network |
    | [08_explorer](08_explorer.ipynb) | sliders for $C'_s$ and $K$ per layer group: storage, speed-up, time and top-1, live |

    The cell below lists the notebooks actually present next to this one, with their titles:
    """),
    code(r"""
    import json
    from pathlib import Path
    import qcnn_lite

    nb_dir = Path(qcnn_lite.__file__).resolve().parents[1] / "notebooks"
    for path in sorted(nb_dir.glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        title = next((c["source"] if isinstance(c["source"], str) else "".join(c["source"])
                      for c in cells if c["cell_type"] == "markdown"), "").splitlines()[0].lstrip("# ")
        print(f"{path.name:38s} {title}")
    """),
    md(r"""
    ## 4. How to run the notebooks

    - **Full mode** (default) reproduces the committed outputs: full test sets, more calibration images,
      more iterations. Every notebook runs in a few minutes on a laptop.
    - **Fast mode**: `QCNN_FAST=1` shrinks data sets and iteration counts so that the whole suite runs in CI:
      `QCNN_FAST=1 pytest --nbval-lax --nbval-current-env notebooks/`. Cells whose printed results must stay
      true are marked `# NBVAL_CHECK_OUTPUT`; they print the same text in both modes.
    - **Kernel backend**: the look-up-table kernels have a pure-numpy reference and optional compiled Pythran
      kernels. `QCNN_LITE_BACKEND=numpy|pythran|auto` picks one at import (default `auto`: Pythran when built);
      `qcnn_lite.kernels.set_backend(...)` switches at run time.
    - **Figures** are saved as PNG under `figures/<notebook>/` before they are shown (`qcnn_lite.repro.figures.savefig`).
      Fast-mode runs save theirs to a temporary folder instead, so they never overwrite the committed full-mode
      figures; set `QCNN_FIGURES` to choose the folder yourself.
    """),
    code(r"""
    print("fast mode        :", figures.fast_mode())
    print("kernel backend   :", kernels.backend())
    print("available        :", kernels.available_backends())
    folder = figures.figures_root() / NOTEBOOK
    print("figures go to    :", folder.relative_to(folder.parents[1]) if len(folder.parents) > 1 else folder)
    """),
    report(r"""
    ## Summary

    - In AlexNet the five conv layers do {100 * conv_flops:.1f} % of the arithmetic while the three fc layers hold
      {100 * fc_bytes:.1f} % of the weights.
    - Q-CNN quantizes both kinds of layer with product quantization and evaluates them through look-up tables:
      the cost model gives {q['speedup']:.2f}x fewer FLOPs and {q['compression']:.1f}x less storage for the
      authors' released AlexNet, {claim(abs(q['speedup'] - p_speedup) <= 0.01 * p_speedup and abs(q['qcnn_mib'] - p_mib['qcnn']) <= 0.02 * p_mib['qcnn'], 'matching', 'against')}
      the paper's {p_speedup:.2f}x and {p_mib['cnn']:.2f} → {p_mib['qcnn']:.2f} MiB.
    - These are operation counts, not times; the next notebooks learn real codebooks and measure.

    ## Exercises
    """),
    exercise(1, r"""
    Compute the same per-layer bar plots for VGG-16 (`models.spec("vgg16")`). Which layer dominates its FLOPs,
    and which its storage?
    """, r"""
    Replace `models.spec("alexnet")` by `models.spec("vgg16")` in the first code cell and sort `df` by `cnn_flops`.
    """, r"""
    The FLOPs spread evenly over the 3x3 conv layers: every layer after the first of each block keeps
    $d_t^2 C_s C_t$ constant, because each pooling halves the side (a quarter of the pixels) while the channels
    double (four times the weights per pixel), so six layers, from `conv1_2` at 224 pixels to `conv4_3` at 28,
    tie for the largest count, and `idxmax` just returns the first of them. The storage is dominated by fc6
    (a 25088 → 4096 matrix).
    """, check=r"""
    shape16, spec16 = models.spec("vgg16")
    d16 = pd.DataFrame([c.as_dict() for c in cost.layer_costs(spec=spec16, input_shape=shape16)]).set_index("name")
    top16 = d16["cnn_flops"][d16["cnn_flops"] == d16["cnn_flops"].max()]
    print(f"largest FLOPs ({top16.iloc[0] / 1e6:,.1f} M each):", list(top16.index))
    print("largest storage:", d16["cnn_bytes"].idxmax())
    assert len(top16) == 6 and d16["cnn_flops"].idxmax() == "conv1_2" and d16["cnn_bytes"].idxmax() == "fc6"
    """),
    exercise(2, r"""
    Using `cost.network_cost`, find the fc setting $(C'_s, K)$ for AlexNet's fc6/fc7 that reaches 30x compression
    with the conv setting unchanged. What happens to the speed-up?
    """, r"""
    Start from `dict(paper.RELEASED_ALEXNET)` and loop over `fc6`/`fc7` settings with larger $C'_s$ or smaller $K$.
    """, r"""
    $C'_s = 8$, $K = 16$ is the mildest setting past 30x. Larger $C'_s$ in fc6/fc7 raises the compression
    quickly; the speed-up rises by a few per cent only (less than a tenth of the compression's rise), because the
    conv layers do almost all the arithmetic.
    """, check=r"""
    ex2_rows = []
    for d in (4, 8, 16):
        for K in (8, 16, 32):
            st = dict(paper.RELEASED_ALEXNET); st["fc6"] = st["fc7"] = (d, K)
            c = cost.network_cost(spec=spec, input_shape=input_shape, settings=st)
            ex2_rows.append({"C's": d, "K": K, "compression": c["compression"], "speed-up": c["speedup"]})
    ex2 = pd.DataFrame(ex2_rows)
    print(ex2.round(2).to_string(index=False))
    past30 = ex2[ex2["compression"] >= 30].sort_values("compression").iloc[0]
    print("mildest setting past 30x:", past30.to_dict())
    assert (past30["C's"], past30["K"]) == (8, 16)
    speed_rise, comp_rise = past30["speed-up"] / q["speedup"] - 1, past30["compression"] / q["compression"] - 1
    print(f"against the released model: compression +{100 * comp_rise:.0f} %, speed-up +{100 * speed_rise:.1f} %")
    assert speed_rise < 0.1 * comp_rise and speed_rise < 0.1  # the speed-up rises by a few per cent only
    """),
    exercise(3, r"""
    From the formula $C_s K + C_t M$, derive the largest $K$ for which a quantized fc layer with $C'_s = 4$ still
    needs fewer FLOPs than the dense one. Check your answer against `cost.layer_costs`.
    """, r"""
    Write $M = C_s / 4$ and solve $C_s K + C_t C_s / 4 < C_s C_t$ for $K$.
    """, r"""
    $K < C_t (1 - 1/4) = 3 C_t / 4$: for fc7 ($C_t = 4096$) any practical $K$ qualifies; for fc8 ($C_t = 1000$),
    $K < 750$. The check below uses `cost.layer_costs(..., settings={**paper.RELEASED_ALEXNET, "fc8": (4, K)})`.
    """, check=r"""
    def fc8_flops(K):
        row = [c for c in cost.layer_costs(spec=spec, input_shape=input_shape,
                                           settings={**paper.RELEASED_ALEXNET, "fc8": (4, K)}) if c.name == "fc8"][0]
        return row.qcnn_flops, row.cnn_flops
    q749, dense8 = fc8_flops(749)
    q750, _ = fc8_flops(750)
    print(f"fc8: dense {dense8:,} FLOPs; K=749: {q749:,}; K=750: {q750:,}")
    assert q749 < dense8 <= q750
    """),
]

if __name__ == "__main__":
    build(NB, cells, constants={
        "2016": "the paper: Wu et al., CVPR 2016",
        "16": "released AlexNet fc8 K; the 16 of VGG-16",
        "32": "released AlexNet fc6/fc7 K",
        "30": "exercise 2: the compression target",
        "18": "the paper's abstract: about 18x less storage",
        "128": "paper: released AlexNet conv setting K",
        "4096": "AlexNet fc6/fc7 width",
        "1000": "ImageNet classes (AlexNet fc8 outputs)",
        "25088": "VGG-16 fc6 inputs (512 x 7 x 7)",
        "224": "VGG-16 input side",
        "28": "VGG-16 map side after the third pooling",
        "749": "exercise 3: the largest K below 750",
        "750": "exercise 3: 3/4 of fc8's 1000 outputs",
    })
