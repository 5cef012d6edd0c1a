from nbbuild import build, code, exercise, md, report, setup

NB = "08_explorer"
cells = [
    md(r"""
    # 08 · Explorer: drag the settings, watch size, speed and accuracy move

    **What you will learn**
    - how the two knobs of Q-CNN, the sub-space dimension $C'_s$ and the codebook size $K$, trade storage,
      operations, measured time and accuracy **on a whole network at once**;
    - why a search over per-layer settings (`results/table1_searched`, written by `python -m qcnn_lite search` or
      `make reproduce`) finds points that one setting per group of layers misses;
    - what error correction buys at the setting you chose (the button).

    **What you need**
    - notebooks 01-04; the trained `mini-alexnet` (`make models`; without it random weights are used, and top-1
      is then meaningless) and Fashion-MNIST (`make data`);
    - a live kernel for the sliders (on a static page the table below shows a few settings);
    - a few seconds per slider move (each new $(C'_s, K)$ of a layer is quantized once, then cached).

    **How it works.** Every layer has a $C'_s$ slider and a $K$ slider (a group of one layer: the settings
    search chose a setting per layer, and the explorer opens on the search's 20x setting of the network). When a
    slider moves, its layer is product-quantized at the new setting **without** error correction (k-means only: fast enough to
    drag), the quantized layers are cached by (layer, $C'_s$, $K$), and the readout shows:

    - **storage** and the **cost-model speed-up** from `qcnn_lite.paper.cost` (exactly the formulas of notebook 00);
    - the **measured time per image** (median of a few forward passes, batch of 8), against the dense network;
    - **top-1** on a fixed subset of 1,000 test images, with its 95 % interval (a couple of points wide on each
      side: 1,000 images measure top-1 only that well).

    The **error correction** button re-quantizes the current setting with error correction, each layer on
    the dense network's inputs to it (layer-wise, so corrected layers can be cached alone too; notebook 04 compares
    this with its accumulated-error compensation, with a paired interval). The logic lives in `qcnn_lite.apps.explorer`, the widgets
    in `qcnn_lite.apps.explorer_ui`; `tests/test_explorer.py` drives the sliders from code and checks that the
    displayed size and speed-up are the cost model's.
    """),
    setup(NB, "import pandas as pd\nimport ipywidgets as widgets\nfrom IPython.display import display\nfrom qcnn_lite.io import datasets as data, modelfile, paths\nfrom qcnn_lite.nn import models\nfrom qcnn_lite.apps.explorer import Explorer, pareto_front, pareto_points, parse_settings, searched_rows\nfrom qcnn_lite.apps.explorer_ui import ExplorerUI", one_blas_thread=True),
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
    layer_names = [L["name"] for _, L in net.param_layers()]
    ex = Explorer(net, data.to_input(test_x[subset], mean, std), test_y[subset], calib=calib, n_iter=2,
                  groups={name: [name] for name in layer_names})  # one group per layer: per-layer settings
    searched = {r["target"]: r for r in searched_rows(net.name, paths.project_root() / "results") if r["method"] == "ec"}
    start = next((r for t, r in searched.items() if t.startswith("compression=20")), None)
    initial = parse_settings(start["settings"]) if start else {"conv": (4, 128), "fc": (4, 32), "classifier": (1, 8)}
    if start is None:  # no search results: the notebook-04 setting, the same for every layer of a kind
        initial = {n: initial["conv"] if n.startswith("conv") else initial["fc"] for n in layer_names[:-1]} | {layer_names[-1]: initial["classifier"]}
    print("opening on:", start["target"] if start else "(no search results) notebook 04's setting 2", initial)


    def interval95(top1, n=len(subset)):
        # normal approximation of a binomial proportion, in points: top-1 on n images is known only this well
        h = 196 * np.sqrt(top1 / 100 * (1 - top1 / 100) / n)
        return top1 - h, top1 + h
    """),
    md(r"""
    ## The explorer

    Move a slider and release it; "error correction" re-quantizes the current setting with it. The explorer opens on
    the search's 20x setting **with error correction**, as the search measured it. The figure shows the Pareto front of
    the settings search (`results/table1_searched.json`: the settings no other searched setting beats on both
    compression and top-1 error) when it is there, with your current point and its 95 % interval. The search's errors
    are on the full test set (10,000 images), yours on the 1,000-image subset:
    """),
    code(r"""
    front = pareto_points(net.name, paths.project_root() / "results")
    plot_out = widgets.Output()
    YLIM, XLIM = (5, 100), (1, 100)  # fixed axes: dragging moves the point, never the scale


    def draw_front(ax):
        if front:
            ax.plot([r["compression"] for r in front], [r["top1_err"] for r in front], "o-", c="tab:grey",
                    label="settings search: Pareto front (10,000 images)")


    def draw(readout):
        with plot_out:
            plot_out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(6.4, 3.8))
            draw_front(ax)
            lo, hi = interval95(readout.top1)
            ax.errorbar([readout.compression], [100 - readout.top1], yerr=[[readout.top1 - lo], [hi - readout.top1]],
                        fmt="*", c="tab:red", ms=12, capsize=4, label="your setting, 95 % interval (1,000 images)")
            ax.axhline(100 - readout.dense_top1, color="k", ls=":", lw=1, label="dense")
            ax.set(xscale="log", yscale="log", xlim=XLIM, ylim=YLIM, xlabel="compression (x)", ylabel="top-1 error (%)",
                   title=f"{net.name} ({'error correction' if readout.corrected else 'plain PQ'})")
            ax.legend(fontsize=8, loc="upper left")
            fig.tight_layout()  # no label cut off
            plt.show()


    ui = ExplorerUI(ex, initial=initial, on_update=draw)
    opened = ui.update(corrected=True)  # as the search measured it: with error correction
    open_lo, open_hi = interval95(opened.top1)
    display(widgets.VBox([ui.widget, plot_out]))
    """),
    report(r"""
    At the opening setting ({start['target'] if start else 'notebook 04 setting 2'}, {opened.compression:.1f}x) the
    explorer measures {opened.top1:.2f} % top-1 on its 1,000 images, 95 % interval [{open_lo:.1f}, {open_hi:.1f}] %
    (dense {opened.dense_top1:.2f} %). {f"The search measured {100 - start['top1_err']:.2f} % on all 10,000 test images (with the paper's accumulated-error compensation; the explorer corrects layer by layer), " + claim(open_lo <= 100 - start['top1_err'] <= open_hi, 'inside that interval: the two agree as far as 1,000 images can tell.', 'outside that interval: a real difference between the two ways of correcting, not subset noise.') if start else ''}
    Differences between settings smaller than about {open_hi - opened.top1:.1f} points cannot be read from the explorer.
    """),
    md(r"""
    ## A few settings, for the static page

    The same readout for the search's settings of this network (per layer, from `results/table1_searched`), each with
    plain product quantization and with error correction. This is what the sliders show when set to these values.
    """),
    code(r"""
    grid = {t: parse_settings(r["settings"]) for t, r in searched.items() if t.startswith("compression=")} or {"notebook 04 setting 2": initial}
    if FAST:
        grid = dict(list(grid.items())[:2])
    rows = []
    for target, st in grid.items():
        for corrected in (False, True):
            r = ex.readout(st, corrected=corrected)
            lo, hi = interval95(r.top1)
            rows.append({"search target": target, "error correction": corrected, "MiB": r.storage_mib,
                         "compression": r.compression, "speed-up (model)": r.speedup, "ms / image": r.ms_per_image,
                         "top-1 %": r.top1, "95 % low": lo, "95 % high": hi})
    static = pd.DataFrame(rows)
    plain_rows, ec_rows = static[~static["error correction"]], static[static["error correction"]]
    harsh_plain, harsh_ec = plain_rows.iloc[-1], ec_rows.iloc[-1]
    r_ec = r
    print(f"dense: {r_ec.dense_mib:.3f} MiB, {r_ec.dense_ms_per_image:.3f} ms / image, top-1 {r_ec.dense_top1:.2f} %;"
          f" {ex.cached} quantized layers cached")
    static.round(3)
    """),
    code(r"""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    draw_front(ax)
    for g, style, label in ((plain_rows, "s", "plain PQ (1,000 images)"), (ec_rows, "*", "error correction, layer-wise (1,000 images)")):
        ax.errorbar(g["compression"], 100 - g["top-1 %"], yerr=[g["top-1 %"] - g["95 % low"], g["95 % high"] - g["top-1 %"]],
                    fmt=style, ms=9, capsize=3, label=label)
    ax.axhline(100 - r_ec.dense_top1, color="k", ls=":", lw=1, label="dense")
    ax.set(xscale="log", yscale="log", xlim=XLIM, ylim=YLIM, xlabel="compression (x)", ylabel="top-1 error (%)",
           title=f"{net.name}: the search's settings, re-measured")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    show(fig, "settings_vs_search")
    ec_gain = (ec_rows["top-1 %"].values - plain_rows["top-1 %"].values)
    """),
    report(r"""
    ## Summary

    - Storage and the cost-model speed-up follow from the settings alone (`qcnn_lite.paper.cost`); the explorer shows
      them exactly. Over the search's settings above, compression goes from
      {static['compression'].iloc[0]:.1f}x to {harsh_plain['compression']:.1f}x and the model speed-up from
      {static['speed-up (model)'].iloc[0]:.2f}x to {harsh_plain['speed-up (model)']:.2f}x.
    - Accuracy does not: at {harsh_plain['compression']:.1f}x plain product quantization keeps {harsh_plain['top-1 %']:.2f} %
      top-1 on the 1,000-image subset (95 % interval [{harsh_plain['95 % low']:.1f}, {harsh_plain['95 % high']:.1f}]; dense
      {r_ec.dense_top1:.2f} %), error correction {harsh_ec['top-1 %']:.2f} % at the same size:
      {claim(harsh_ec['95 % low'] > harsh_plain['95 % high'], 'a gain well outside both intervals', 'the intervals overlap, so 1,000 images cannot separate them')}.
    - Measured time per image: {harsh_plain['ms / image']:.3f} ms against {r_ec.dense_ms_per_image:.3f} ms dense at
      that setting, on this machine: the quantized network is
      {claim(harsh_plain['ms / image'] < r_ec.dense_ms_per_image, 'faster', '**slower** here')}
      ({r_ec.dense_ms_per_image / harsh_plain['ms / image']:.2f}x dense/Q-CNN time, against the cost model's
      {harsh_plain['speed-up (model)']:.2f}x; single timings on a shared machine vary, exercise 2 repeats one). On a 28x28 network the per-layer overhead dominates; the engine's path
      choice, table sizes and caches decide (notebook 03), and the tables pay off at full size (notebook 06).
    - {"The settings search's Pareto front (" + str(len(front)) + " of its rows for this network) shows what a search over per-layer settings finds." if front else "Run the settings search (`make reproduce`) to see its Pareto front here."}

    ## Exercises
    """),
    exercise(1, r"""
    With the sliders, find the largest compression that keeps top-1 within one point of dense using plain PQ
    only. Then press "error correction": how much further can you go?
    """, r"""
    Move the fc sliders first: fc6 and fc7 hold most of the bytes (notebook 00), the conv layers most of the
    operations.
    """, r"""
    Compression is dominated by the fc layers: raising their $C'_s$ (fewer sub-spaces, fewer codes) buys most.
    Error correction keeps more accuracy at the same size (notebook 02's fc6+fc7 experiment), so the corrected
    frontier lies at least as far right. The cell tries a few fc settings on top of the opening conv setting, with
    and without error correction.
    """, check=r"""
    def with_fc(fc):
        return {n: (fc if n in ("fc6", "fc7") else d_k) for n, d_k in initial.items()}

    reach = {}
    for corrected in (False, True):
        ok = [ex.readout(with_fc(fc), corrected=corrected) for fc in ([(2, 8), (8, 4)] if FAST else [(2, 8), (4, 8), (8, 4), (16, 4)])]
        within = [r.compression for r in ok if r.top1 >= r.dense_top1 - 1]
        reach[corrected] = max(within, default=1.0)
    print(f"largest compression within one point of dense: plain PQ {reach[False]:.1f}x, error correction {reach[True]:.1f}x")
    assert reach[True] >= reach[False]
    """),
    exercise(2, r"""
    Why does the measured time per image not follow the cost-model speed-up?
    """, r"""
    Look at `QConv2d.uses_tables` and at notebook 03's measured add/MAC constant.
    """, r"""
    The cost model counts one table addition as one multiply-add. On a real CPU an addition read from a table
    costs more (more still when the table falls out of cache), the small mini-network layers run partly from
    decoded weights, and the non-quantized parts (pooling, LRN, activations) take the same time in both. So the
    measured ratio has no reason to equal the cost model's, and on a shared machine it varies from run to run: the
    cell prints both at the opening setting, and times each path again to show the spread.
    """, check=r"""
    measured = [opened.dense_ms_per_image / opened.ms_per_image]
    for _ in range(2):
        again = ex.readout(initial, corrected=True)  # cached layers: only the timing is repeated
        measured.append(again.dense_ms_per_image / again.ms_per_image)
    print(f"cost model {opened.speedup:.2f}x fewer operations; measured dense/Q-CNN time: "
          + ", ".join(f"{m:.2f}x" for m in measured))
    assert opened.speedup > 1 and all(m > 0 for m in measured)
    """),
    exercise(3, r"""
    Use `ex.readout(settings)` in a loop to trace your own Pareto front over a grid of settings, and plot it
    with the search's points.
    """, r"""
    `itertools.product` over a few $C'_s$ and $K$ per group; keep the points no other point beats on both
    compression and top-1.
    """, r"""
    `pareto_front` keeps the points no other point beats; a grid with one setting per kind of layer rarely reaches
    the search's per-layer front (the cell counts how many of its points the search's front beats).
    """, check=r"""
    import itertools
    mine = []
    convs = [n for n in layer_names if n.startswith("conv")]
    for c, f in itertools.product([(2, 64), (4, 64)], [(4, 8)] if FAST else [(2, 8), (4, 8), (8, 4)]):
        st = {n: (c if n in convs[1:] else initial[n]) if n.startswith("conv") else (f if n in ("fc6", "fc7") else initial[n]) for n in layer_names}
        r = ex.readout(st)
        mine.append({"compression": r.compression, "top1_err": 100 - r.top1})
    front_mine = pareto_front(mine)
    beaten_by_search = [p for p in mine if any(q["compression"] >= p["compression"] and q["top1_err"] < p["top1_err"] for q in front)]
    print(f"my grid: {len(mine)} points, {len(front_mine)} on its own front; the search's front beats {len(beaten_by_search)} of them")
    assert all(not any(q["compression"] >= p["compression"] and q["top1_err"] < p["top1_err"] for q in mine) for p in front_mine)
    """),
]

if __name__ == "__main__":
    build(NB, cells, constants={"10,000": "Fashion-MNIST test set size", "20": "the settings search's 20x compression target",
                                  "1,000": "the explorer's fixed test subset", "28": "Fashion-MNIST image side"})
