"""The quantizer: dense layers and networks in, QLinear/QConv2d out, as the paper does.

One layer (:func:`quantize_linear`, :func:`quantize_conv2d`): plain product
quantization of the weight (:class:`~qcnn_lite.quant.pq.ProductQuantizer`, one k-means
per sub-space over every output and tap), then, given calibration inputs, the
paper's error correction on the layer's responses (:mod:`qcnn_lite.quant.correction`)
and a bias refit to the new weights.

A network (:func:`quantize_network`): layer by layer. Each layer's inputs come
from the already-quantized prefix and its targets from the original network, so
later layers compensate the error made by earlier ones ("accumulated error").
``compensate=False`` quantizes every layer against its own original inputs
instead, for comparison.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Mapping

import numpy as np

from qcnn_lite.quant import guard
from qcnn_lite.io import progress
from qcnn_lite.quant.correction import ResponseStats, refine
from qcnn_lite.nn.engine import Network
from qcnn_lite.kernels.geometry import conv_output_size
from qcnn_lite.nn.layers import Conv2d, Linear, QConv2d, QLinear, im2col
from qcnn_lite.nn.checks import as_bias, as_f32, positive_int
from qcnn_lite.quant.pq import ProductQuantizer, code_dtype
from qcnn_lite.nn.spec import n_vectors, split_dim

__all__ = ["quantize_network", "layer_settings", "quantize_layer", "quantize_linear", "quantize_conv2d"]


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
        channels = split_dim(L, dims[name])
        d = min(d, channels)
        if channels % d:
            raise ValueError(f"layer {name}: C's={d} does not divide its {channels} input channels")
        if k > n_vectors(L):
            raise ValueError(f"layer {name}: K={k} is larger than its {n_vectors(L)} sub-vectors per sub-space")
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
    table_guard: float | None = guard.DEFAULT_THRESHOLD,
    guard_images: np.ndarray | None = None,
    guard_labels: np.ndarray | None = None,
    n_guard: int = guard.DEFAULT_IMAGES,
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
    table_guard : the accuracy guard (:func:`qcnn_lite.quant.guard.guard_tables`): top-1 points a
        layer may lose to its low-precision tables before it falls back to the next precision;
        None keeps every layer at its fastest precision untested
    guard_images, guard_labels : images (and labels, if known) the guard measures on; by default
        the first ``n_guard`` calibration images, against the float network's own top-1.
        Without either, the guard is skipped (the meta says so)

    Returns a new Network whose params are QConv2d/QLinear; ``net`` is untouched.
    """
    plan = layer_settings(net, settings)
    calib_images = _checked_inputs(net, calib_images, error_correction)

    qnet = net.copy()
    qnet.meta["quantization"] = {
        "settings": {k: list(v) for k, v in plan.items()},
        "error_correction": bool(error_correction),
        "compensate": bool(compensate),
        "n_iter": int(n_iter),
        "seed": int(seed),
        "n_calib": 0 if calib_images is None else int(len(calib_images)),
    }
    with _one_blas_thread(), progress.bar(total=sum(1 for _ in net.param_layers()), desc=f"quantizing {net.name}",
                                          enabled=show_progress) as pbar:
        _quantize_layers(net, qnet, plan, calib_images if error_correction else None, compensate, n_iter, seed,
                         max_samples, batch_size, pbar)
    if table_guard is not None:
        qnet.meta["quantization"]["table_guard"] = _guard(qnet, calib_images, guard_images, guard_labels,
                                                          table_guard, n_guard, batch_size)
    return qnet


def _checked_inputs(net: Network, calib_images, error_correction: bool) -> np.ndarray | None:
    """ValueError unless ``net`` is dense and finite and, for error correction, the calibration
    images are (n, *net.input_shape) and finite; returns them as float32."""
    for name, p in net.params.items():
        if not isinstance(p, (Conv2d, Linear)):
            raise ValueError(f"layer {name!r} is already quantized: quantize the dense network")
        if not np.isfinite(p.weight).all() or not np.isfinite(p.bias).all():
            raise ValueError(f"layer {name!r} has NaN or Inf weights")
    if not error_correction:
        return calib_images
    if calib_images is None or len(calib_images) == 0:
        raise ValueError("error correction needs calibration images: the calibration set is empty")
    calib_images = np.asarray(calib_images, dtype=np.float32)
    if calib_images.shape[1:] != net.input_shape:
        raise ValueError(f"calibration images must be (n, {', '.join(map(str, net.input_shape))}), got {calib_images.shape}")
    if not np.isfinite(calib_images).all():
        raise ValueError("calibration images contain NaN or Inf")
    return calib_images


def _quantize_layers(net: Network, qnet: Network, plan: Mapping[str, tuple[int, int]], calib: np.ndarray | None,
                     compensate: bool, n_iter: int, seed: int, max_samples: int | None, batch_size: int, pbar) -> None:
    """Quantize net's conv and fc layers in order into qnet.params. With calibration images, each layer
    fits the dense layer's response (``targets``) from the inputs the quantized prefix gives it
    (``compensate``) or from the dense network's own inputs."""
    orig = quant = calib
    for i, L in enumerate(net.spec):
        if L["type"] not in ("conv", "fc"):
            if orig is not None:
                nxt = _run(net, i, orig, batch_size)
                quant = _run(net, i, quant, batch_size) if compensate else nxt
                orig = nxt
            continue
        name = L["name"]
        d, k = plan[name]
        kw: dict[str, Any] = dict(sub_dim=d, n_codewords=k, n_iter=n_iter, seed=seed + i)
        if orig is not None:
            target = _run(net, i, orig, batch_size)
            inputs = quant if compensate else orig
            if L["type"] == "fc":
                inputs = inputs.reshape(len(inputs), -1)
            kw.update(calib=inputs, targets=target)
        qnet.params[name] = quantize_layer(net.params[name], max_samples=max_samples, **kw)
        if orig is not None:
            quant = _run(qnet, i, quant, batch_size) if compensate else target
            orig = target
        pbar.update(1)
        pbar.set_postfix_str(name)


def _guard(qnet: Network, calib, images, labels, threshold: float, n_guard: int, batch_size: int) -> dict | None:
    """Run the accuracy guard on the guard images, or the first calibration images; None without either."""
    n_guard = positive_int("n_guard", n_guard)
    if images is None:
        if calib is None:
            return None
        images, labels = calib, None
    images = np.asarray(images, dtype=np.float32)[:n_guard]
    if labels is not None:
        labels = np.asarray(labels).astype(np.int64)[:n_guard]
    with _one_blas_thread():
        return guard.guard_tables(qnet, images, labels, threshold, batch_size)


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


# --------------------------------------------------------------------------- one layer
def quantize_layer(dense: Conv2d | Linear, max_samples: int | None = None, **kw: Any) -> QConv2d | QLinear:
    """:func:`quantize_conv2d` or :func:`quantize_linear` of a dense layer, as its type says;
    ``kw`` are their settings (sub_dim, n_codewords, calib, ...); ``max_samples`` is for convolutions."""
    if isinstance(dense, Conv2d):
        return quantize_conv2d(dense.weight, dense.bias, dense.stride, dense.padding, dense.groups,
                               max_samples=max_samples, **kw)
    return quantize_linear(dense.weight, dense.bias, **kw)


def quantize_linear(
    weight,
    bias,
    sub_dim: int,
    n_codewords: int,
    calib=None,
    targets=None,
    n_iter: int = 4,
    seed: int = 0,
    kmeans_iter: int = 25,
    progress: Callable[[], None] | None = None,
) -> QLinear:
    """Quantize a dense fully-connected layer.

    weight (out, in), bias (out,) or None. Without ``calib`` this is plain
    product quantization of the weight rows (k-means per sub-space). With
    ``calib`` (n, in) inputs, ``n_iter`` sweeps of error correction fit the
    response ``targets`` (n, out); by default those are this layer's own
    dense outputs on ``calib``. Pass the original network's responses
    with inputs from the quantized prefix to compensate accumulated error.
    """
    w = as_f32("weight", weight, 2)
    b = as_bias(bias, w.shape[0])
    out_f, in_f = w.shape
    sub_dim, K, n_iter = _check_settings(sub_dim, n_codewords, n_iter, in_f, out_f, "QLinear")
    M = in_f // sub_dim
    stats = None
    if calib is not None:
        S, T = _responses(calib, targets, 2, in_f, "features", lambda S: S @ w.T + b, lambda S: (S.shape[0], out_f))
        stats = [ResponseStats(in_f, out_f).update(S, T)]
    books, codes = _init_pq(w, sub_dim, K, kmeans_iter, seed)  # codes (out, M)
    history: list[float] = []
    if stats is not None and n_iter > 0:
        books, codes, history = _correct(books, codes[:, None], stats, n_iter, progress)
    layer = QLinear(books, codes.reshape(out_f, M), b)
    if stats is not None and n_iter > 0:
        layer.bias = _refit_bias(layer.dense_weight(), stats)
    layer.history_ = history
    return layer


def quantize_conv2d(
    weight,
    bias,
    stride: int = 1,
    padding: int = 0,
    groups: int = 1,
    sub_dim: int = 8,
    n_codewords: int = 128,
    calib=None,
    targets=None,
    n_iter: int = 4,
    seed: int = 0,
    kmeans_iter: int = 25,
    max_samples: int | None = None,
    progress: Callable[[], None] | None = None,
) -> QConv2d:
    """Quantize a dense convolution.

    weight (out, in/groups, kh, kw). Sub-spaces split the input channels of a
    group; each codebook serves every tap and every group. With ``calib``
    (n, in, H, W), error correction fits the response ``targets``
    (n, out, OH, OW), every output position counting as a sample; by default
    the targets are this layer's dense outputs. ``max_samples`` caps the
    positions used (a seeded random subset).
    """
    w = as_f32("weight", weight, 4)
    stride = positive_int("stride", stride)
    padding = positive_int("padding", padding, 0)
    groups = positive_int("groups", groups)
    b = as_bias(bias, w.shape[0])
    Ct, cg, kh, kw = w.shape
    if Ct % groups:
        raise ValueError(f"{Ct} output channels are not divisible by groups={groups}")
    sub_dim, K, n_iter = _check_settings(sub_dim, n_codewords, n_iter, cg, Ct * kh * kw, "QConv2d")
    M = cg // sub_dim
    stats = None
    if calib is not None:
        S, T = _responses(calib, targets, 4, cg * groups, "channels", Conv2d(w, b, stride, padding, groups),
                          lambda S: (S.shape[0], Ct, conv_output_size(S.shape[2], kh, stride, padding),
                                     conv_output_size(S.shape[3], kw, stride, padding)))
        stats = _conv_stats(S, T, kh, kw, stride, padding, groups, max_samples, seed)
    # one vector per (output, tap), in (kh, kw, c) order: a codebook serves every tap
    books, codes = _init_pq(w.transpose(0, 2, 3, 1).reshape(Ct * kh * kw, cg), sub_dim, K, kmeans_iter, seed)
    codes = codes.reshape(Ct, kh * kw, M)
    history: list[float] = []
    if stats is not None and n_iter > 0:
        books, codes, history = _correct(books, codes, stats, n_iter, progress)
    layer = QConv2d(books, codes.reshape(Ct, kh, kw, M), b, stride, padding, groups)
    if stats is not None and n_iter > 0:
        w_flat = layer.dense_weight().transpose(0, 2, 3, 1).reshape(Ct, -1)
        layer.bias = _refit_bias(w_flat, stats)
    layer.history_ = history
    return layer


def _responses(calib, targets, ndim: int, n_in: int, unit: str, dense: Callable, shape: Callable) -> tuple:
    """Checked (calib, targets) float32 arrays; the targets default to ``dense(calib)``, the layer's own outputs."""
    S = as_f32("calib", calib, ndim)
    if S.shape[0] == 0:
        raise ValueError("the calibration set is empty")
    if S.shape[1] != n_in:
        raise ValueError(f"calib has {S.shape[1]} {unit}, the layer takes {n_in}")
    T = dense(S) if targets is None else as_f32("targets", targets, ndim)
    if T.shape != shape(S):
        raise ValueError(f"targets must have shape {shape(S)}, got {T.shape}")
    return S, T


def _check_settings(sub_dim, n_codewords, n_iter, channels: int, n_vectors: int, what: str) -> tuple[int, int, int]:
    sub_dim = positive_int("sub_dim", sub_dim)
    n_codewords = positive_int("n_codewords", n_codewords)
    n_iter = positive_int("n_iter", n_iter, 0)
    if channels % sub_dim:
        raise ValueError(f"{what}: sub_dim={sub_dim} (C's) does not divide the {channels} input channels")
    if n_codewords > 65536:
        raise ValueError(f"n_codewords={n_codewords} is above the 65536 that uint16 codes hold")
    if n_codewords > n_vectors:
        raise ValueError(
            f"{what}: n_codewords={n_codewords} (K) is larger than the {n_vectors} sub-vectors to quantize"
        )
    return sub_dim, n_codewords, n_iter


def _init_pq(X: np.ndarray, sub_dim: int, K: int, kmeans_iter: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Plain product quantization of the weight vectors X (n, M*d): codebooks (M, K, d) and codes (n, M)."""
    pq = ProductQuantizer(sub_dim, K, n_iter=max(int(kmeans_iter), 1), seed=seed).fit(X)  # k-means runs >= 1 sweep
    return pq.codebooks_, pq.labels_


def _correct(books, codes, stats, n_iter, progress):
    """Error correction (:func:`qcnn_lite.quant.correction.refine`) of codes (O, T, M); codes come back in their dtype."""
    books, codes, history = refine(books, codes, stats, n_iter=n_iter, progress=progress)
    return books, codes.astype(code_dtype(books.shape[1])), history


def _refit_bias(w_flat: np.ndarray, stats: list[ResponseStats]) -> np.ndarray:
    """The bias that is optimal with the new weights: mean target - W mean input, per group."""
    og = w_flat.shape[0] // len(stats)
    return np.concatenate(
        [s.t_mean - w_flat[g * og : (g + 1) * og].astype(np.float64) @ s.s_mean for g, s in enumerate(stats)]
    ).astype(np.float32)


def _conv_stats(S, T, kh, kw, stride, padding, groups, max_samples, seed, chunk: int = 16) -> list[ResponseStats]:
    """Per-group response statistics of a conv layer, output positions as samples."""
    n, Ct = T.shape[:2]
    ctg = Ct // groups
    dim = kh * kw * S.shape[1] // groups
    stats = [ResponseStats(dim, ctg) for _ in range(groups)]
    positions = T.shape[2] * T.shape[3]
    keep = None
    if max_samples is not None and n * positions > max_samples:
        keep = np.sort(np.random.default_rng(seed).choice(n * positions, max_samples, replace=False))
    pending: list[tuple[np.ndarray, np.ndarray]] = []

    def flush() -> None:
        # one update per ~8k rows: large products are much cheaper than many small ones
        cols, t = np.concatenate([c for c, _ in pending], 1), np.concatenate([t for _, t in pending])
        for g in range(groups):
            stats[g].update(cols[g], t[:, g * ctg : (g + 1) * ctg])
        pending.clear()

    for i in range(0, n, chunk):
        cols = im2col(S[i : i + chunk], kh, kw, stride, padding, groups)  # (g, m*P, dim)
        t = T[i : i + chunk].transpose(0, 2, 3, 1).reshape(-1, Ct)  # (m*P, Ct)
        if keep is not None:
            lo, hi = i * positions, min(n, i + chunk) * positions
            sel = keep[(keep >= lo) & (keep < hi)] - lo
            cols, t = cols[:, sel], t[sel]
        pending.append((cols, t))
        if sum(len(t) for _, t in pending) >= 8192:
            flush()
    if pending:
        flush()
    return stats
