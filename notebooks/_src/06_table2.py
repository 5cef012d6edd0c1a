from nbbuild import build, code, exercise, md, report, setup

NB = "06_table2"
cells = [
    md(r"""
    # 06 · Table 2 rebuilt: time, storage and memory of a whole network

    **What you will learn**
    - how fast, how small and how lean a quantized AlexNet and CNN-S are on *this* machine, measured rather than counted;
    - how they compare with a dense numpy engine, torch fp32 and torch's dynamic int8 quantization, all timed in the same run;
    - how the paper's phone figures (Huawei Mate 7) relate to ours, and how to add your own phone with the `device/` kit.

    **What you need**
    - the compiled Pythran kernels for the fast Q-CNN times (`python -m qcnn_lite info` says whether they were built;
      without them the numpy path runs and is slower than dense);
    - `make reproduce` has written `results/table2.json`; if it has not, this notebook measures (about 2 minutes, fewer
      repeats in fast mode).
    """),
    setup(NB, "import json\nfrom pathlib import Path\nimport pandas as pd\nfrom qcnn_lite.bench import benchmarks as bench, device as device_results\nfrom qcnn_lite import kernels\nfrom qcnn_lite.paper import constants as paper\nfrom qcnn_lite.io import paths\nfrom qcnn_lite.repro import reproduce, rows as tables\nfrom qcnn_lite.io.results import load_table, render\nfrom qcnn_lite.repro.device_plot import plot_table2"),
    md(r"""
    ## 1. What is measured

    Table 2 of the paper times **one image** through the whole network on a phone, and reports the model's **storage**
    and the app's peak **memory**. We do the same with the full-size networks. Weights do not change time or size, so they
    are synthetic (seeded); the quantized network uses the released-AlexNet settings (conv $C'_s=8, K=128$; fc6/fc7
    $C'_s=4, K=32$; fc8 $C'_s=1, K=16$) for both networks, as the paper's Table 2 does.

    - **time**: median of at least 10 runs after warm-up, one thread, batch 1. The baselines, each named for what it is:
      **dense fp32, numpy im2col + BLAS** (our dense engine, OpenBLAS); **dense fp32, no BLAS** (plain loops: the
      paper's condition, where both methods ran on the authors' own code without BLAS); **torch fp32** (oneDNN/MKL);
      **torch int8** (dynamic quantization, fc layers only). The Q-CNN is our look-up-table engine with the best
      kernels built;
    - **storage**: the model file on disk (`qcnn_lite.save`);
    - **memory**: peak resident memory (VmHWM) of a fresh process that loads the file and classifies one image with the
      numpy engine; torch is never imported there.

    Shared machines are noisy, so speeds are reported as **ratios** against baselines measured in the same run.
    """),
    code(r"""
    rows = load_table("table2")
    if rows is None:  # not reproduced yet: measure now, through the same functions as make reproduce
        res = bench.bench_networks(repeat=3 if FAST else 10)
        rows = tables.table2_rows(res)
    print("kernels available:", kernels.available_backends())
    t2 = pd.DataFrame(rows)
    t2[["network", "model", "engine", "time_ms", "time_min_max_ms", "storage_mib", "memory_mib",
        "paper_time_s", "paper_storage_mb", "paper_memory_mb"]]
    """),
    code(r"""
    cols = [c for c in ("speedup_vs_dense", "speedup_vs_dense_noblas", "speedup_vs_torch_fp32", "speedup_vs_torch_int8",
                        "paper_speedup") if c in t2.columns]
    ratios = t2[t2.model == "Q-CNN"][["network", *cols]].rename(columns={
        "speedup_vs_dense": "vs dense fp32 (numpy + BLAS)", "speedup_vs_dense_noblas": "vs dense fp32, no BLAS (paper's condition)",
        "speedup_vs_torch_fp32": "vs torch fp32", "speedup_vs_torch_int8": "vs torch int8 (dynamic)",
        "paper_speedup": "paper: Mate 7, no BLAS"}).set_index("network")
    has_noblas = "speedup_vs_dense_noblas" in t2.columns
    pa = paper.table2_paper("alexnet")
    alex_q, alex_d = t2[(t2.network == "alexnet") & (t2.model == "Q-CNN")].iloc[0], t2[(t2.network == "alexnet") & (t2.model == "CNN")].iloc[0]
    ratios
    """),
    report(r"""
    **Reading it.** The paper's phone ran AlexNet {pa['cnn']['time_s'] / pa['qcnn']['time_s']:.2f}x faster quantized
    ({pa['cnn']['time_s']:.2f} s to {pa['qcnn']['time_s']:.2f} s), both methods on the authors' code **without BLAS**.
    Here the quantized AlexNet runs {alex_q['speedup_vs_dense']:.2f}x faster than our dense engine **with** BLAS,
    {alex_q['speedup_vs_torch_fp32']:.2f}x faster than torch fp32 and {alex_q['speedup_vs_torch_int8']:.2f}x faster than
    torch int8. {"The no-BLAS column is the paper's condition." if has_noblas else "The no-BLAS dense baseline (the paper's condition) is not in this results file yet; each of the columns above answers a different question, and none of them is the paper's."}
    Storage is reproduced almost exactly ({alex_q['storage_mib']:.2f} MiB against the paper's {pa['qcnn']['storage_mb']:.2f} MB;
    the file format adds a manifest and a checksum to the paper's formula), and memory falls from
    {alex_d['memory_mib']:.1f} to {alex_q['memory_mib']:.1f} MiB because the quantized weights are
    {alex_d['storage_mib'] / alex_q['storage_mib']:.1f}x smaller; what remains is Python, numpy and the activations.
    """),
    md(r"""
    ## 2. Phones, and this machine, beside the paper

    The `device/` kit runs the same benchmark on an Android phone under Termux and writes a JSON result to
    `device/results/`. Every file there is validated when loaded (a truncated or malformed file is rejected with its
    name) and plotted beside the paper's Mate 7 figures; the cell below imports whatever result files are there
    (none is invented). Run `device/run-benchmark.sh` on your phone and add the file.
    """),
    code(r"""
    result_dir = paths.project_root() / "device" / "results"
    results = device_results.load_results(result_dir)  # every result file there (not the arm64 build check)
    print(f"{len(results)} result file(s) in device/results/" + ("" if results else ": the plot shows the paper's figures only"))
    for r in results:
        d = r["device"]
        print(f"{r['kind']:18s} {r['name']}: {d['model']}, {d['arch']}, {d['cores']} cores")
    fig = plot_table2(results)
    show(fig, "table2_devices")
    """),
    code(r"""
    dev = pd.DataFrame(tables.table2_device_rows(results))
    own = dev[~dev["source"].str.startswith("paper")]
    own_ratio = {}
    for (src, net_), g in own.groupby(["source", "network"]):
        v = g.set_index("variant")["time_s"]
        own_ratio[src, net_] = float(v["cnn"] / v["qcnn"])
    dev
    """),
    report(r"""
    {"Each result file is a separate run: " + "; ".join(f"{src}, {n}: {r:.2f}x" for (src, n), r in own_ratio.items()) + f", against {alex_q['speedup_vs_dense']:.2f}x for AlexNet in the results table above (another run). The differences are run-to-run noise of a shared machine: compare ratios within one run, never times across runs." if own_ratio else "No result files yet: only the paper's rows are shown."}
    """),
    code(r"""
    q_rows = t2[t2.model == "Q-CNN"].set_index("network")
    d_rows = t2[t2.model == "CNN"].set_index("network")
    smaller = d_rows["storage_mib"] / q_rows["storage_mib"]
    """),
    report(r"""
    ## Summary

    - On this machine, for one image on one thread, the quantized AlexNet and CNN-S run
      {q_rows['speedup_vs_dense'].min():.2f}-{q_rows['speedup_vs_dense'].max():.2f}x faster than the dense numpy + BLAS engine
      and {q_rows['speedup_vs_torch_fp32'].min():.2f}-{q_rows['speedup_vs_torch_fp32'].max():.2f}x faster than torch fp32,
      from model files {smaller.min():.1f}-{smaller.max():.1f}x smaller.
    - Storage matches the paper's Table 2 within a fraction of a percent: it is the cost model's formula made real.
    - The paper's {pa['cnn']['time_s'] / pa['qcnn']['time_s']:.2f}x is a no-BLAS comparison on a phone; BLAS and torch
      baselines answer other questions and are labelled as such.
    - Phones are where the paper measured; the `device/` kit lets anyone add theirs ({len(results)} result file(s) here).

    ## Exercises
    """),
    exercise(1, r"""
    Run `python -m qcnn_lite bench-layers` and find the layer with the smallest speed-up. Does the cost model
    (`qcnn_lite.paper.cost.layer_costs`) predict it?
    """, r"""
    Compare each layer's measured ratio with `cnn_flops / qcnn_flops`; remember notebook 03's add/MAC constant.
    """, r"""
    conv1 (3 input channels, $M = 1$) has the smallest theoretical speed-up and runs from its decoded weight; the cost
    model ranks the layers roughly right but overestimates every ratio, because a table addition costs more than a
    multiply-add.
    """),
    exercise(2, r"""
    Set `QCNN_LITE_BACKEND=numpy` before starting Python and re-run the benchmark: how much of the speed-up is the
    compiled kernels, and how much the algorithm?
    """, r"""
    `QCNN_LITE_BACKEND=numpy python -m qcnn_lite bench --clock cpu`, then compare the Q-CNN rows.
    """, r"""
    Without the compiled kernels the table gathers run in numpy with large temporaries and the Q-CNN is slower than
    dense: the operation count only turns into time with a kernel that does the gathers in registers.
    """),
    exercise(3, r"""
    Compare torch's dynamic int8 (8 bits per weight, fc layers only) with Q-CNN (1.25 bits per fc weight at
    $C'_s = 4$, $K = 32$): which wins on time, which on storage, and why?
    """, r"""
    Storage: bits per weight. Time: int8 uses the same number of multiply-adds as fp32, in narrower registers.
    """, r"""
    Q-CNN wins storage by far ($\log_2 32 / 4$ = 1.25 bits against 8); on time int8 is competitive because its
    multiply-adds are 4x narrower and well vectorised, while Q-CNN saves operations but pays for table look-ups.
    """),
]

if __name__ == "__main__":
    build(NB, cells, constants={"1.25": "log2(32)/4: bits per fc weight at C's=4, K=32", "128": "released AlexNet conv K",
                                  "32": "released AlexNet fc K", "16": "released AlexNet fc8 K"})
