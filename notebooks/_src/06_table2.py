from nbbuild import build, code, md, setup

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
    setup(NB, "import json\nfrom pathlib import Path\nimport pandas as pd\nfrom qcnn_lite import bench, device_results, kernels, paper, reproduce, tables"),
    md(r"""
    ## 1. What is measured

    Table 2 of the paper times **one image** through the whole network on a phone, and reports the model's **storage**
    and the app's peak **memory**. We do the same with the full-size networks. Weights do not change time or size, so they
    are synthetic (seeded); the quantized network uses the released-AlexNet settings (conv $C'_s=8, K=128$; fc6/fc7
    $C'_s=4, K=32$; fc8 $C'_s=1, K=16$) for both networks, as the paper's Table 2 does.

    - **time**: median of at least 10 runs after warm-up, one thread, batch 1; the CNN is our dense numpy engine
      (BLAS) and, in a row of its own, the same network run **without BLAS** by compiled loops (direct convolution,
      matrix-vector loops: `qcnn_lite.noblas`), which is the paper's condition: the authors timed Q-CNN against their own
      dense code on the phone, not against a tuned BLAS. The Q-CNN is our look-up-table engine with the best kernels
      built. torch fp32 and torch dynamic int8, measured in the same run, are the honest modern baselines;
    - **storage**: the model file on disk (`qcnn_lite.save`);
    - **memory**: peak resident memory (VmHWM) of a fresh process that loads the file and classifies one image with the
      numpy engine; torch is never imported there.

    Shared machines are noisy, so speeds are reported as **ratios** against baselines measured in the same run.
    """),
    code(r"""
    rows = reproduce.load("table2")
    if rows is None:  # not reproduced yet: measure now, through the same functions as make reproduce
        res = bench.bench_networks(repeat=3 if FAST else 10)
        rows = tables.table2_rows(res)
    print("kernels available:", kernels.available_backends())
    t2 = pd.DataFrame(rows)
    t2[["network", "model", "engine", "time_ms", "time_min_max_ms", "storage_mib", "memory_mib",
        "paper_time_s", "paper_storage_mb", "paper_memory_mb"]]
    """),
    code(r"""
    cols = ["network", "speedup_vs_dense", "speedup_vs_dense_noblas", "speedup_vs_torch_fp32",
            "speedup_vs_torch_int8", "paper_speedup"]
    ratios = t2[t2.model == "Q-CNN"][[c for c in cols if c in t2.columns]]
    ratios
    """),
    md(r"""
    **Reading it.** The paper's phone ran AlexNet 3.08x faster quantized (2.93 s to 0.95 s), CNN-S 4.05x. The
    comparable figure here is `speedup_vs_dense_noblas`: the same condition (dense code without a tuned BLAS, one
    thread, same machine, same run). `speedup_vs_dense` (BLAS) and the torch columns say how Q-CNN fares against
    tuned dense code, which the paper did not measure. Storage is
    reproduced almost exactly (the file format adds a manifest and a checksum to the paper's formula), and memory falls
    because the quantized weights are 18x smaller; what remains is Python, numpy and the activations.

    ## 2. Phones, and this machine, beside the paper

    The `device/` kit runs the same benchmark on an Android phone under Termux and writes a JSON result to
    `device/results/`. Every file there is validated when loaded (a truncated or malformed file is rejected with its
    name) and plotted beside the paper's Mate 7 figures. The repository ships only a result from this x86 machine,
    labelled as such: no phone result is invented. Run `device/run-benchmark.sh` on your phone and send the file.
    """),
    code(r"""
    results = device_results.load_results(Path("..") / "device" / "results")
    for r in results:
        d = r["device"]
        print(f"{r['kind']:18s} {r['name']}: {d['model']}, {d['arch']}, {d['cores']} cores")
    fig = device_results.plot_table2(results)
    show(fig, "table2_devices")
    """),
    code(r"""
    pd.DataFrame(device_results.table2_rows(results))
    """),
    md(r"""
    ## Summary

    - On this machine the quantized AlexNet and CNN-S run faster than the dense engine and than torch fp32 for one
      image on one thread, from a model file 18-20x smaller, in a fraction of the memory.
    - Storage matches the paper's Table 2 within a fraction of a percent: it is the cost model's formula made real.
    - Phones are where the paper measured; the `device/` kit lets anyone add theirs, and this notebook plots it.

    ## Exercises

    1. Run `python -m qcnn_lite bench-layers` and find the layer with the smallest speed-up. Does the cost model
       (`qcnn_lite.cost.layer_costs`) predict it?
    2. Set `QCNN_LITE_BACKEND=numpy` before starting Python and re-run the benchmark: how much of the speed-up is the
       compiled kernels, and how much the algorithm?
    3. Compare torch's dynamic int8 (8 bits per weight, fc layers only) with Q-CNN (about 1.25 bits per fc weight):
       which wins on time, which on storage, and why?
    """),
]

if __name__ == "__main__":
    build(NB, cells)
