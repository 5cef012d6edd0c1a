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
    setup(NB, "import json\nfrom pathlib import Path\nimport pandas as pd\nfrom qcnn_lite.bench import benchmarks as bench, device as device_results\nfrom qcnn_lite import kernels\nfrom qcnn_lite.paper import constants as paper\nfrom qcnn_lite.io import paths\nfrom qcnn_lite.repro import reproduce, rows as tables\nfrom qcnn_lite.io.results import load_table, render\nfrom qcnn_lite.repro.device_plot import plot_table2\nfrom qcnn_lite.paper import cost\nfrom qcnn_lite.nn import models"),
    md(r"""
    ## 1. What is measured

    Table 2 of the paper times **one image** through the whole network on a phone, and reports the model's **storage**
    and the app's peak **memory**. We do the same with the full-size networks. Weights do not change time or size, so they
    are synthetic (seeded); the quantized network uses the released-AlexNet settings (conv $C'_s=8, K=128$; fc6/fc7
    $C'_s=4, K=32$; fc8 $C'_s=1, K=16$) for both networks, as the paper's Table 2 does.

    - **time**: median of several runs after warm-up (the number per baseline is printed below), one thread, batch 1. The baselines, each named for what it is:
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
    bench_file = paths.results_dir() / "table2_bench.json"
    bench_raw = json.loads(bench_file.read_text()) if rows is not None and bench_file.exists() else res
    mach = bench_raw.get("machine", {})
    runs = {(n["network"], eng): t["runs"] for n in bench_raw["networks"] for eng, t in n["times"].items()}
    lo, hi = min(runs.values()), max(runs.values())
    runs_text = (f"{lo}" if lo == hi else
                 f"{lo} to {hi} (the no-BLAS loops, the slowest, had {runs.get(('alexnet', 'dense-noblas'), '-')})")
    print(f"results file measured on: {mach.get('cpu', 'not recorded')}, {mach.get('cores', '?')} cores, "
          f"{mach.get('time_utc', 'date not recorded')}, kernel build target {mach.get('kernel_target', 'not recorded')} "
          f"(built: {', '.join(mach.get('kernel_targets_built', [])) or 'not recorded'}); compiler: {mach.get('compiler', 'not recorded in the file')}")
    print("runs per median:", ", ".join(f"{e} {r}" for (n_, e), r in runs.items() if n_ == "alexnet"))
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
    Each time is a median of {runs_text} runs.
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
        d, b = r["device"], r.get("build", {})
        kb = b.get("build", {})
        print(f"{r['kind']:18s} {r['name']}: {d['model']}, {d['arch']}, {d['cores']} cores; measured {r['created_utc']}; "
              f"compiler {kb.get('cxx_version', 'not recorded')}; kernels {b.get('backend', '?')}"
              f" (native={kb.get('native', '?')}, CPU-specific targets: {kb.get('targets', 'none recorded')})")
    fig = plot_table2(results)
    show(fig, "table2_devices")
    """),
    code(r"""
    dev = pd.DataFrame(tables.table2_device_rows(results))
    own = dev[~dev["source"].str.startswith("paper")]
    own_files = [r for r in results if r["kind"] != "paper"]
    dev_cpus = ", ".join(sorted({r["device"]["cpu"] or r["device"]["model"] for r in own_files})) or "-"
    dev_dates = ", ".join(sorted({r["created_utc"][:10] for r in own_files})) or "-"
    dev_native = ", ".join(sorted({str(r.get("build", {}).get("build", {}).get("native", "not recorded")) for r in own_files})) or "-"
    dev_cxx = ", ".join(sorted({r.get("build", {}).get("build", {}).get("cxx_version", "not recorded") for r in own_files})) or "-"
    # across machines when the CPU, the date or the kernel build differs from the results table's
    across_machines = any((r["device"]["cpu"] or "") not in (mach.get("cpu") or "") or r["created_utc"][:10] != (mach.get("time_utc") or "")[:10]
                          for r in own_files)
    print("result files:", dev_cpus, "|", dev_dates, "| compiler", dev_cxx, "| results table:", mach.get("cpu"), mach.get("time_utc"))
    own_ratio = {}
    for (src, net_), g in own.groupby(["source", "network"]):
        v = g.set_index("variant")["time_s"]
        own_ratio[src, net_] = float(v["cnn"] / v["qcnn"])
    dev
    """),
    report(r"""
    {"Each result file is a separate run: " + "; ".join(f"{src}, {n}: {r:.2f}x" for (src, n), r in own_ratio.items()) + f", against {alex_q['speedup_vs_dense']:.2f}x for AlexNet in the results table above. " + claim(across_machines, f"That comparison is **across machines**, not run-to-run noise: the result file was measured on {dev_cpus} ({dev_dates}, compiler {dev_cxx}, kernels built with native={dev_native} and no per-CPU targets recorded), the table on {mach.get('cpu')} ({mach.get('time_utc')}, kernel target {mach.get('kernel_target')}). Another CPU, compiler and kernel build change the ratio; compare ratios within one file only.", "The result file and the table come from the same machine and build; their difference is run-to-run noise.") if own_ratio else "No result files yet: only the paper's rows are shown."}
    """),
    code(r"""
    q_rows = t2[t2.model == "Q-CNN"].set_index("network")
    d_rows = t2[t2.model == "CNN"].set_index("network")
    smaller = d_rows["storage_mib"] / q_rows["storage_mib"]
    """),
    report(r"""
    ## Summary

    - On the machine of the results file ({mach.get('cpu', 'not recorded')}, {mach.get('time_utc', 'date not recorded')}), for one image on one thread, the quantized AlexNet and CNN-S run
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
    In the cost model fc8 ($C'_s = 1$: a table entry per input, no saving) and conv1 (3 input channels, $M = 1$; it
    runs from its decoded weight) have the smallest speed-ups. The cost model is no bound in either direction: the
    whole AlexNet measured faster than it predicts against the no-BLAS loops and slower against BLAS, and
    notebook 02 measured fc6 above it (8-bit table look-ups run many per instruction), so which layer is slowest
    must be measured. The cell checks this on the results table.
    """, check=r"""
    shape_a, spec_a = models.spec("alexnet")
    lc = {c.name: c.cnn_flops / c.qcnn_flops for c in cost.layer_costs(spec=spec_a, input_shape=shape_a, settings=paper.RELEASED_ALEXNET)}
    model_alex = cost.network_cost(spec=spec_a, input_shape=shape_a, settings=paper.RELEASED_ALEXNET)["speedup"]
    print("cost-model speed-up per layer:", {k: round(v, 2) for k, v in lc.items()})
    print(f"AlexNet: cost model {model_alex:.2f}x; measured {alex_q['speedup_vs_dense']:.2f}x vs BLAS, "
          f"{alex_q.get('speedup_vs_dense_noblas', float('nan')):.2f}x vs no BLAS")
    assert sorted(lc, key=lc.get)[:2] == ["fc8", "conv1"]
    if has_noblas:
        assert alex_q["speedup_vs_dense"] < model_alex < alex_q["speedup_vs_dense_noblas"]  # on both sides of it
    """),
    exercise(2, r"""
    Set `QCNN_LITE_BACKEND=numpy` before starting Python and re-run the benchmark: how much of the speed-up is the
    compiled kernels, and how much the algorithm?
    """, r"""
    `QCNN_LITE_BACKEND=numpy python -m qcnn_lite bench --clock cpu`, then compare the Q-CNN rows.
    """, r"""
    Without the compiled kernels the table gathers run in numpy with large temporaries and the Q-CNN is slower than
    dense: the operation count only turns into time with a kernel that does the gathers in registers. The results
    file times both engines (`qcnn-numpy`, `qcnn-pythran`); the cell compares them with the dense engine.
    """, check=r"""
    for n in bench_raw["networks"]:
        t_ = {e: v["median_ms"] for e, v in n["times"].items()}
        print(f"{n['network']}: dense {t_['numpy-dense']:.1f} ms, Q-CNN numpy kernels {t_['qcnn-numpy']:.1f} ms, "
              f"compiled kernels {t_['qcnn-pythran']:.1f} ms")
        assert t_["qcnn-numpy"] > t_["numpy-dense"] > t_["qcnn-pythran"]
    """),
    exercise(3, r"""
    Compare torch's dynamic int8 (8 bits per weight, fc layers only) with Q-CNN (1.25 bits per fc weight at
    $C'_s = 4$, $K = 32$): which wins on time, which on storage, and why?
    """, r"""
    Storage: bits per weight. Time: int8 uses the same number of multiply-adds as fp32, in narrower registers.
    """, r"""
    Q-CNN wins storage by far ($\log_2 32 / 4$ = 1.25 bits against 8). On time, int8 saves no operations, it only
    makes them narrower (and only in the fc layers), while Q-CNN saves operations in every layer: in the results
    table Q-CNN is faster than torch int8 on both networks (the cell checks it).
    """, check=r"""
    print(q_rows["speedup_vs_torch_int8"].round(2).to_dict())
    assert np.log2(32) / 4 < 8 and (q_rows["speedup_vs_torch_int8"] > 1).all()
    """),
]

if __name__ == "__main__":
    build(NB, cells, constants={"1.25": "log2(32)/4: bits per fc weight at C's=4, K=32", "128": "released AlexNet conv K",
                                  "32": "released AlexNet fc K", "16": "released AlexNet fc8 K"})
