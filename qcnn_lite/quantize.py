"""Quantize a whole network, layer by layer, as the paper does.

Each layer's inputs come from the already-quantized prefix and its targets
from the original network, so later layers compensate the error made by
earlier ones ("accumulated error"). ``compensate=False`` quantizes every layer
against its own original inputs instead, for comparison.
"""
from __future__ import annotations

import contextlib
from typing import Any, Mapping

import numpy as np

from . import progress
from .engine import Network
from .layers import Conv2d, Linear, QConv2d, QLinear

__all__ = ["quantize_network", "layer_settings"]


def _pair(v: Any, where: str) -> tuple[int, int]:
    if isinstance(v, Mapping):
        v = (v.get("sub_dim"), v.get("n_codewords"))
    try:
        d, k = v
        if isinstance(d, bool) or isinstance(k, bool) or int(d) != d or int(k) != k or d < 1 or k < 1:
            raise TypeError
    except (TypeError, ValueError):
        raise ValueError(f"setting {where!r} must be (sub_dim, n_codewords) with positive integers, got {v!r}") from None
    return int(d), int(k)


def layer_settings(net: Network, settings: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """(C's, K) for every conv/fc layer.

    ``settings`` maps a layer name, or ``"conv"`` / ``"fc"`` for the defaults, to
    (sub_dim, n_codewords). A sub_dim wider than a layer's input channels per group
    is narrowed to them (AlexNet's conv1 has M=1 over its 3 channels). Raises
    ``ValueError`` before any work if a setting does not fit its layer.
    """
    if not isinstance(settings, Mapping):
        raise ValueError("settings must be a mapping: {'conv': (C's, K), 'fc': (C's, K), 'fc8': (C's, K), ...}")
    names = {L["name"] for _, L in net.param_layers()}
    unknown = set(settings) - names - {"conv", "fc"}
    if unknown:
        raise ValueError(f"settings name layers that {net.name} does not have: {', '.join(sorted(unknown))}")
    dims = net.input_dims()
    out = {}
    for _, L in net.param_layers():
        name = L["name"]
        key = name if name in settings else L["type"]
        if key not in settings:
            raise ValueError(f"no setting for layer {name!r}: give {name!r} or a default for {L['type']!r}")
        d, k = _pair(settings[key], key)
        channels = dims[name][0] // L.get("groups", 1) if L["type"] == "conv" else int(np.prod(dims[name]))
        d = min(d, channels)
        if channels % d:
            raise ValueError(f"layer {name}: C's={d} does not divide its {channels} input channels")
        n_vectors = L["out"] * (L["kernel"] ** 2 if L["type"] == "conv" else 1)
        if k > n_vectors:
            raise ValueError(f"layer {name}: K={k} is larger than its {n_vectors} sub-vectors per sub-space")
        out[name] = (d, k)
    return out


def quantize_network(
    net: Network,
    calib_images: np.ndarray | None,
    settings: Mapping[str, Any],
    error_correction: bool = True,
    compensate: bool = True,
    n_iter: int = 4,
    seed: int = 0,
    max_samples: int | None = 50_000,
    batch_size: int = 256,
    show_progress: bool = True,
) -> Network:
    """Quantize every conv and fc layer of a dense network.

    Parameters
    ----------
    net : a dense Network
    calib_images : (n, C, H, W) unlabelled images; needed for error correction
    settings : see :func:`layer_settings`
    error_correction : fit the layer responses (True) or only k-means the weights (False)
    compensate : inputs from the quantized prefix (True) or from the original network (False)
    n_iter : error-correction sweeps per layer
    max_samples : cap on conv output positions used per layer (a few hundred images' worth,
        as the paper used 250-500 images per conv layer)

    Returns a new Network whose params are QConv2d/QLinear; ``net`` is untouched.
    """
    plan = layer_settings(net, settings)
    for name, p in net.params.items():
        if not isinstance(p, (Conv2d, Linear)):
            raise ValueError(f"layer {name!r} is already quantized: quantize the dense network")
        if not np.isfinite(p.weight).all() or not np.isfinite(p.bias).all():
            raise ValueError(f"layer {name!r} has NaN or Inf weights")
    if error_correction:
        if calib_images is None or len(calib_images) == 0:
            raise ValueError("error correction needs calibration images: the calibration set is empty")
        calib_images = np.asarray(calib_images, dtype=np.float32)
        if calib_images.shape[1:] != net.input_shape:
            raise ValueError(f"calibration images must be (n, {', '.join(map(str, net.input_shape))}), got {calib_images.shape}")
        if not np.isfinite(calib_images).all():
            raise ValueError("calibration images contain NaN or Inf")

    qnet = net.copy()
    qnet.meta["quantization"] = {
        "settings": {k: list(v) for k, v in plan.items()},
        "error_correction": bool(error_correction),
        "compensate": bool(compensate),
        "n_iter": int(n_iter),
        "seed": int(seed),
        "n_calib": 0 if calib_images is None else int(len(calib_images)),
    }
    orig = quant = calib_images if error_correction else None
    total = sum(1 for _ in net.param_layers())
    with _one_blas_thread(), progress.bar(total=total, desc=f"quantizing {net.name}", enabled=show_progress) as pbar:
        for i, L in enumerate(net.spec):
            if L["type"] not in ("conv", "fc"):
                if orig is not None:
                    nxt = _run(net, i, orig, batch_size)
                    quant = _run(net, i, quant, batch_size) if compensate else nxt
                    orig = nxt
                continue
            name = L["name"]
            d, k = plan[name]
            dense = net.params[name]
            kw: dict[str, Any] = dict(sub_dim=d, n_codewords=k, n_iter=n_iter, seed=seed + i)
            if orig is not None:
                target = _run(net, i, orig, batch_size)
                inputs = quant if compensate else orig
                if L["type"] == "fc":
                    inputs = inputs.reshape(len(inputs), -1)
                kw.update(calib=inputs, targets=target)
            if L["type"] == "conv":
                q = QConv2d.from_dense(dense.weight, dense.bias, dense.stride, dense.padding, dense.groups,
                                       max_samples=max_samples, **kw)
            else:
                q = QLinear.from_dense(dense.weight, dense.bias, **kw)
            qnet.params[name] = q
            if orig is not None:
                quant = _run(qnet, i, quant, batch_size) if compensate else target
                orig = target
            pbar.update(1)
            pbar.set_postfix_str(name)
    return qnet


def _run(net: Network, i: int, x: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([net.run_layer(i, x[j : j + batch_size].copy()) for j in range(0, len(x), batch_size)])


def _one_blas_thread():
    """Error correction makes many small matrix products: one BLAS thread is faster for them,
    and many times faster on a busy machine. Uses threadpoolctl when it is installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")
