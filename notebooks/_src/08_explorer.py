from nbbuild import build, code, exercise, md, report, setup

NB = "08_explorer"
cells = [
    md(r"""
    # 08 · Explorer: drag the settings, watch size, speed and accuracy move

    **What you will learn**
    - how the two knobs of Q-CNN, the sub-space dimension $C'_s$ and the codebook size $K$, trade storage,
      operations, measured time and accuracy **on a whole network at once**;
    - why a search over settings (notebook 05's "searched" rows) finds points that hand-picked settings miss;
    - what error correction buys at the setting you chose (the button).

    **What you need**
    - notebooks 01-04; the trained `mini-alexnet` (`make models`; without it random weights are used, and top-1
      is then meaningless) and Fashion-MNIST (`make data`);
    - a live kernel for the sliders (on a static page the table below shows a few settings);
    - a few seconds per slider move (each new $(C'_s, K)$ of a layer is quantized once, then cached).

    **How it works.** The layers are grouped: all conv layers, the hidden fc layers (fc6, fc7), and the
    classifier fc8. Each group has a $C'_s$ slider and a $K$ slider. When a slider moves, every layer of its
    group is product-quantized at the new setting **without** error correction (k-means only: fast enough to
    drag), the quantized layers are cached by (layer, $C'_s$, $K$), and the readout shows:

    - **storage** and the **cost-model speed-up** from `qcnn_lite.paper.cost` (exactly the formulas of notebook 00);
    - the **measured time per image** (median of a few forward passes, batch of 8), against the dense network;
    - **top-1** on a fixed subset of 1,000 test images.

    The **error correction** button re-quantizes the current setting with error correction, each layer on
    the dense network's inputs to it (layer-wise, so corrected layers can be cached alone too; notebook 04's
    accumulated-error compensation does slightly better). The logic lives in `qcnn_lite.apps.explorer`, the widgets
    in `qcnn_lite.apps.explorer_ui`; `tests/test_explorer.py` drives the sliders from code and checks that the
    displayed size and speed-up are the cost model's.
    """),
    setup(NB, "import pandas as pd\nimport ipywidgets as widgets\nfrom IPython.display import display\nfrom qcnn_lite.io import datasets as data, modelfile, paths\nfrom qcnn_lite.nn import models\nfrom qcnn_lite.apps.explorer import Explorer, pareto_points\nfrom qcnn_lite.apps.explorer_ui import ExplorerUI", one_blas_thread=True),
    code(r"""
    try:
        net = modelfile.load(paths.model_file("mini-alexnet"))
        trained = True
    except (FileNotFoundError, OSError, ValueError):
        net = models.synthetic("mini-alexnet", seed=0)
        trained = False
        print("reference model not found (run `make models`): random weights, top-1 is meaningless")
    mean, std = data.normalisation(net.meta)
    test_x, test_y = data.load_fashion_mnist("test")
    train_x, _ = data.load_fashion_mnist("train")
    subset = np.random.default_rng(0).choice(len(test_x), 1000, replace=False)  # the fixed top-1 subset
    calib = data.to_input(train_x[np.random.default_rng(1).choice(len(train_x), 100 if FAST else 300, replace=False)], mean, std)
    ex = Explorer(net, data.to_input(test_x[subset], mean, std), test_y[subset], calib=calib, n_iter=2)
    print("layer groups:", ex.groups)
    """),
    md(r"""
    ## The explorer

    Move a slider and release it. The figure shows the settings search's Pareto front (`results/table1_searched.json`,
    written by `make reproduce` / `python -m qcnn_lite search`) when it is there, with your current point.
    The search's errors are on the full test set, yours on the 1,000-image subset: read the comparison
    to within a few tenths of a point.
    """),
    code(r"""
    front = pareto_points(net.name, paths.project_root() / "results")
    plot_out = widgets.Output()


    def draw(readout):
        with plot_out:
            plot_out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(6, 3.6))
            if front:
                ax.scatter([r["compression"] for r in front], [r["top1_err"] for r in front], c="tab:grey",
                           label="settings search (full test set)")
            ax.scatter([readout.compression], [100 - readout.top1], c="tab:red", s=80, marker="*",
                       label="your setting (1,000 images)")
            ax.axhline(100 - readout.dense_top1, color="k", ls=":", lw=1, label="dense")
            ax.set(xscale="log", xlabel="compression (x)", ylabel="top-1 error (%)", title=net.name)
            ax.legend(fontsize=8)
            plt.show()


    ui = ExplorerUI(ex, initial={"conv": (8, 64), "fc": (4, 32), "classifier": (4, 8)}, on_update=draw)
    draw(ui.readout)
    display(widgets.VBox([ui.widget, plot_out]))
    """),
    md(r"""
    ## A few settings, for the static page

    The same readout (plain product quantization) for a few settings, from mild to harsh, and, for one of them,
    with error correction. This is what the sliders show when set to these values.
    """),
    code(r"""
    grid = [
        {"conv": (4, 128), "fc": (2, 64), "classifier": (2, 8)},
        {"conv": (8, 64), "fc": (4, 32), "classifier": (4, 8)},
        {"conv": (8, 32), "fc": (8, 16), "classifier": (8, 4)},
        {"conv": (16, 16), "fc": (16, 8), "classifier": (16, 4)},
    ]
    if FAST:
        grid = grid[1:3]
    rows = []
    for st in grid:
        r = ex.readout(st)
        rows.append({"conv": f"{st['conv'][0]}x{st['conv'][1]}", "fc": f"{st['fc'][0]}x{st['fc'][1]}",
                     "classifier": f"{st['classifier'][0]}x{st['classifier'][1]}", "error correction": False,
                     "MiB": r.storage_mib, "compression": r.compression, "speed-up (model)": r.speedup,
                     "ms / image": r.ms_per_image, "top-1 %": r.top1})
    ec_setting = grid[-1]
    r_ec = ex.readout(ec_setting, corrected=True)
    rows.append({**{k: rows[-1][k] for k in ("conv", "fc", "classifier")}, "error correction": True,
                 "MiB": r_ec.storage_mib, "compression": r_ec.compression, "speed-up (model)": r_ec.speedup,
                 "ms / image": r_ec.ms_per_image, "top-1 %": r_ec.top1})
    static = pd.DataFrame(rows)
    harsh_plain, harsh_ec = static.iloc[-2], static.iloc[-1]
    print(f"dense: {r_ec.dense_mib:.3f} MiB, {r_ec.dense_ms_per_image:.3f} ms / image, top-1 {r_ec.dense_top1:.2f} %;"
          f" {ex.cached} quantized layers cached")
    static.round(3)
    """),
    code(r"""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    if front:
        ax.scatter([r["compression"] for r in front], [r["top1_err"] for r in front], c="tab:grey",
                   label="settings search (full test set)")
    plain = static[~static["error correction"]]
    ax.plot(plain["compression"], 100 - plain["top-1 %"], "o-", label="hand-picked grid, plain PQ")
    ax.scatter([harsh_ec["compression"]], [100 - harsh_ec["top-1 %"]], marker="*", s=100, c="tab:green",
               label="last setting, error correction", zorder=3)
    ax.axhline(100 - r_ec.dense_top1, color="k", ls=":", lw=1, label="dense")
    ax.set(xscale="log", xlabel="compression (x)", ylabel="top-1 error (%)", title=f"{net.name}: settings against the search")
    ax.legend(fontsize=8)
    show(fig, "settings_vs_search")
    """),
    report(r"""
    ## Summary

    - Storage and the cost-model speed-up follow from the settings alone (`qcnn_lite.paper.cost`); the explorer shows
      them exactly. From the mildest to the harshest setting above, compression goes from
      {static['compression'].iloc[0]:.1f}x to {harsh_plain['compression']:.1f}x and the model speed-up from
      {static['speed-up (model)'].iloc[0]:.2f}x to {harsh_plain['speed-up (model)']:.2f}x.
    - Accuracy does not: at the harshest setting plain product quantization keeps {harsh_plain['top-1 %']:.2f} %
      top-1 on the 1,000-image subset (dense {r_ec.dense_top1:.2f} %), error correction
      {harsh_ec['top-1 %']:.2f} % at the same size.
    - Measured time per image ({harsh_plain['ms / image']:.3f} ms against {r_ec.dense_ms_per_image:.3f} ms dense at
      that setting, on this machine) follows the cost model only roughly: the engine's path choice, table sizes
      and caches decide (notebook 03).
    - {"The settings search's points (" + str(len(front)) + " rows) show what a search over per-layer settings finds." if front else "Run the settings search (`make reproduce`) to see its Pareto front here."}

    ## Exercises
    """),
    exercise(1, r"""
    With the sliders, find the largest compression that keeps top-1 within one point of dense using plain PQ
    only. Then press "error correction": how much further can you go?
    """, r"""
    Move the fc sliders first: fc6 and fc7 hold most of the bytes (notebook 00), the conv layers most of the
    operations.
    """, r"""
    Compression is dominated by the fc group: raising its $C'_s$ (fewer sub-spaces, fewer codes) buys most.
    Plain PQ typically loses accuracy quickly past $C'_s = 8$ for fc; error correction keeps much more at
    the same size (notebook 02's fc6+fc7 experiment), so the corrected frontier lies further right.
    """),
    exercise(2, r"""
    Why does the measured time per image not follow the cost-model speed-up?
    """, r"""
    Look at `QConv2d.uses_tables` and at notebook 03's measured add/MAC constant.
    """, r"""
    The cost model counts one table addition as one multiply-add. On a real CPU an addition read from a table
    costs more (more still when the table falls out of cache), the small mini-network layers run partly from
    decoded weights, and the non-quantized parts (pooling, LRN, activations) take the same time in both.
    """),
    exercise(3, r"""
    Use `ex.readout(settings)` in a loop to trace your own Pareto front over a grid of settings, and plot it
    with the search's points.
    """, r"""
    `itertools.product` over a few $C'_s$ and $K$ per group; keep the points no other point beats on both
    compression and top-1.
    """, r"""
    ```python
    import itertools
    pts = []
    for c, f in itertools.product([(8, 32), (8, 64)], [(4, 16), (8, 16), (8, 32)]):
        r = ex.readout({"conv": c, "fc": f, "classifier": (4, 8)})
        pts.append((r.compression, r.top1))
    front_mine = [p for p in pts if not any(q[0] >= p[0] and q[1] > p[1] for q in pts)]
    ```
    Hand grids with one setting per group rarely reach the search's per-layer front.
    """),
]

if __name__ == "__main__":
    build(NB, cells)
