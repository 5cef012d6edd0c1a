"""The cost model: FLOPs and bytes of a CNN and of its Q-CNN, layer by layer.

A FLOP is one multiply-add. For a layer with ``Cs`` input channels (per group
``Cs/g``), ``Ct`` outputs, kernel ``dk``, input side ``ds``, output side ``dt``,
sub-space dimension ``C's`` and ``K`` codewords, ``M = ceil((Cs/g) / C's)``:

==========  ===========================  ===================================
layer       CNN                          Q-CNN
==========  ===========================  ===================================
fc FLOPs    Cs*Ct                        Cs*K + Ct*M
conv FLOPs  dt^2 * Ct * dk^2 * Cs/g      ds^2 * Cs * K + dt^2 * dk^2 * M * Ct
bytes       4 * (weights + Ct)           4*M*C's*K + Ct*dk^2*M*log2(K)/8 + 4*Ct
==========  ===========================  ===================================

``M`` rounds up: the paper's VGG-16 figures use C's=6 on 64..512 channels, and
only fit if the last sub-space of a layer is padded to full width. The
quantizer itself (``layer_settings``) demands that C's divides the channels.
Costs are computed from the specs alone, so full-size networks cost nothing to
analyse.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from qcnn_lite.nn.spec import output_shapes

__all__ = ["LayerCost", "layer_costs", "network_cost", "MiB"]

MiB = float(2**20)


@dataclass(frozen=True)
class LayerCost:
    """Cost of one conv/fc layer: FLOPs (multiply-adds) and bytes, CNN against Q-CNN."""

    name: str
    type: str
    cs: int
    ct: int
    kernel: int
    groups: int
    ds: int
    dt: int
    sub_dim: int
    n_codewords: int
    n_subspaces: int
    cnn_flops: int
    qcnn_flops: int
    cnn_bytes: int
    qcnn_bytes: float
    params: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _setting(settings: Mapping[str, Any] | None, name: str, kind: str) -> tuple[int, int] | None:
    if settings is None:
        return None
    v = settings.get(name, settings.get(kind))
    if v is None:
        raise ValueError(f"no setting for layer {name!r}")
    d, k = (v["sub_dim"], v["n_codewords"]) if isinstance(v, Mapping) else v
    return int(d), int(k)


def layer_costs(input_shape: tuple[int, int, int], spec: list[dict], settings: Mapping[str, Any] | None = None) -> list[LayerCost]:
    """Per-layer costs of a spec; ``settings`` as in :func:`qcnn_lite.quant.quantize.layer_settings`.

    Without settings only the CNN columns are meaningful (the Q-CNN columns repeat them).
    """
    shapes = [tuple(input_shape)] + output_shapes(spec, input_shape)
    out = []
    for i, L in enumerate(spec):
        if L["type"] not in ("conv", "fc"):
            continue
        name, ins, outs = L["name"], shapes[i], shapes[i + 1]
        if L["type"] == "conv":
            cs, ds, ct, dt, k, g = ins[0], ins[1], outs[0], outs[1], L["kernel"], L.get("groups", 1)
            assert ins[1] == ins[2] and outs[1] == outs[2], "the cost model assumes square maps"
        else:
            cs, ds, ct, dt, k, g = math.prod(ins), 1, outs[0], 1, 1, 1
        params = ct * (cs // g) * k * k + ct
        cnn_flops = dt * dt * ct * k * k * (cs // g)
        cnn_bytes = 4 * params
        st = _setting(settings, name, L["type"])
        if st is None:
            d, K, M, q_flops, q_bytes = 0, 0, 0, cnn_flops, float(cnn_bytes)
        else:
            d, K = st
            d = min(d, cs // g)
            M = math.ceil((cs // g) / d)
            q_flops = ds * ds * cs * K + dt * dt * k * k * M * ct
            q_bytes = 4 * M * d * K + ct * k * k * M * math.log2(K) / 8 + 4 * ct
        out.append(LayerCost(name, L["type"], cs, ct, k, g, ds, dt, d, K, M, cnn_flops, q_flops, cnn_bytes, q_bytes, params))
    return out


def network_cost(input_shape: tuple[int, int, int], spec: list[dict], settings: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Totals: FLOPs, MiB, speed-up and compression of the Q-CNN against the CNN."""
    layers = layer_costs(input_shape, spec, settings)
    cf = sum(c.cnn_flops for c in layers)
    qf = sum(c.qcnn_flops for c in layers)
    cb = sum(c.cnn_bytes for c in layers)
    qb = sum(c.qcnn_bytes for c in layers)
    return {
        "cnn_flops": cf,
        "qcnn_flops": qf,
        "cnn_mib": cb / MiB,
        "qcnn_mib": qb / MiB,
        "speedup": cf / qf,
        "compression": cb / qb,
        "params": sum(c.params for c in layers),
    }
