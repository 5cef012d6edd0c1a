"""The conv and fc layers of AlexNet and CNN-S under every CPU target of the compiled kernels, in one process.

    python scripts/bench_targets.py [--networks alexnet,cnns] [--repeat 10] [--json FILE]

Per layer (batch 1, one thread, thread CPU time, median of ``--repeat`` runs after
warm-up): torch fp32, then the Q-CNN layer at its default table precision (float
tables for conv, 8-bit tables for fc) under each built target this CPU runs
(``kernels.set_target``; the fc codes are re-packed for the target's shuffle ISA),
and for fc the float-table layer too. torch is timed again after the targets, and
each ratio uses the mean of its two medians, so a drift in the machine's load shows
up as a gap between them (printed) instead of as a target's speed-up.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from qcnn_lite import kernels
from qcnn_lite.nn import models
from qcnn_lite.nn.layers import QLinear
from qcnn_lite.bench.machine import machine
from qcnn_lite.bench.synthetic import quantized_layer
from qcnn_lite.bench.timing import single_thread, time_call
from qcnn_lite.paper.constants import RELEASED_ALEXNET


def _layer_rows(name: str, repeat: int, seed: int = 0) -> list[dict]:
    import torch

    from qcnn_lite.reference.bridge import torch_layer

    assert torch.get_num_threads() == 1, "import torch before single_thread() so that it is limited too"

    dense = models.synthetic(name, seed)
    dims = dense.input_dims()
    rng = np.random.default_rng(seed)
    rows = []
    for _, L in dense.param_layers():
        in_shape = dims[L["name"]]
        q = quantized_layer(L, in_shape, RELEASED_ALEXNET, rng)
        x = rng.standard_normal((1,) + tuple(in_shape), dtype=np.float32)
        if L["type"] == "fc":
            x = x.reshape(1, -1)
        tm, xt = torch_layer(dense.params[L["name"]]), torch.from_numpy(x)
        row = {"network": name, "layer": L["name"], "type": L["type"],
               "path": "tables" if L["type"] == "fc" or q.uses_tables(*in_shape[1:]) else "decoded weight",
               "torch_fp32_ms": [], "qcnn_ms": {}, "float_tables_ms": {}}
        with torch.inference_mode():
            row["torch_fp32_ms"].append(time_call(lambda: tm(xt), repeat)["cpu_median_ms"])
            for t in kernels.runnable_targets():
                os.environ["QCNN_LITE_TARGET"] = t  # the shuffle ISA is chosen when the codes are packed
                kernels.set_target(t)
                if L["type"] == "fc":
                    q = QLinear(q.codebooks, q.codes, q.bias)  # packs its codes for this target
                    qf = QLinear(q.codebooks, q.codes, q.bias, table_dtype="float32")
                    row["float_tables_ms"][t] = time_call(lambda: qf(x), repeat)["cpu_median_ms"]
                row["qcnn_ms"][t] = time_call(lambda: q(x), repeat)["cpu_median_ms"]
            row["torch_fp32_ms"].append(time_call(lambda: tm(xt), repeat)["cpu_median_ms"])
        rows.append(row)
    return rows


def render(res: dict) -> str:
    m, targets = res["machine"], res["targets"]
    out = [f"{m['cpu']} ({m['cores']} cores), load average {', '.join(f'{v:.2f}' for v in m['load_average'])}; "
           f"torch {m['torch']}; one thread, batch 1, median thread CPU time; "
           f"x = torch fp32 / Q-CNN (torch timed before and after the targets: the mean of the two)",
           "| layer | torch fp32 ms (before/after) | " + " | ".join(f"{t} ms (x)" for t in targets)
           + " | " + " | ".join(f"fc float tables {t} ms (x)" for t in targets) + " |",
           "|---|---|" + "---|" * (2 * len(targets))]
    for r in res["layers"]:
        ref = sum(r["torch_fp32_ms"]) / 2
        cells = [f"{r['network']}/{r['layer']}" + (" *" if r["path"] != "tables" else ""),
                 "/".join(f"{v:.2f}" for v in r["torch_fp32_ms"])]
        cells += [f"{r['qcnn_ms'][t]:.2f} ({ref / r['qcnn_ms'][t]:.2f}x)" for t in targets]
        cells += [f"{r['float_tables_ms'][t]:.2f} ({ref / r['float_tables_ms'][t]:.2f}x)" if t in r["float_tables_ms"]
                  else "-" for t in targets]
        out.append("| " + " | ".join(cells) + " |")
    out.append("(* runs from its decoded weight; conv columns: float tables; fc columns: 8-bit tables, "
               "byte shuffles of the target's ISA)")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--networks", default="alexnet,cnns")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    if kernels.backend() != "pythran":
        print("the Pythran kernels are not built: nothing to compare", file=sys.stderr)
        return 2
    import torch  # noqa: F401  (imported first: single_thread() limits torch only when it is loaded)

    with single_thread():
        rows = [r for n in args.networks.split(",") if n.strip() for r in _layer_rows(n.strip(), args.repeat)]
    res = {"machine": machine(), "targets": kernels.runnable_targets(), "cpu": kernels.describe()["cpu"],
           "layers": rows}
    if args.json:
        with open(args.json, "x") as f:
            json.dump(res, f, indent=1)
    print(render(res), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
