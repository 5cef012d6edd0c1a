"""The one accuracy loop: top-k error of a network on labelled images."""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from qcnn_lite.nn.engine import Network

__all__ = ["topk_hits", "topk_errors", "network_errors", "evaluate_network"]


def topk_hits(scores: np.ndarray, labels: np.ndarray, ks: Iterable[int]) -> dict[int, int]:
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise ValueError(f"scores (n, classes) and labels (n,) do not match: {scores.shape}, {labels.shape}")
    order = np.argsort(-scores, axis=1, kind="stable")
    return {k: int((order[:, :k] == labels[:, None]).any(1).sum()) for k in ks}


def topk_errors(scores: np.ndarray, labels: np.ndarray, ks: Iterable[int] = (1, 5)) -> dict[int, float]:
    """Top-k error in percent for scores (n, classes) and integer labels (n,)."""
    hits = topk_hits(scores, labels, ks)
    return {k: float(100.0 * (1.0 - h / len(labels))) for k, h in hits.items()}


def network_errors(net: Network, images: np.ndarray, labels: np.ndarray, batch_size: int = 500,
                   transform: Callable[[np.ndarray], np.ndarray] | None = None, ks: Iterable[int] = (1, 5),
                   on_batch: Callable[[int], object] | None = None) -> dict[int, float]:
    """Top-k error in percent of ``net`` on images, batch by batch: the one accuracy loop
    (Table 1, the ImageNet path and training use it). ``transform`` maps a batch of raw
    images to network input (n, C, H, W), e.g. uint8 Fashion-MNIST to normalised floats.
    ``on_batch(n)`` is called after each batch of n images (a progress bar's ``update``)."""
    ks = tuple(ks)
    labels = np.asarray(labels).astype(np.int64)
    hits = dict.fromkeys(ks, 0)
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size]
        for k, h in topk_hits(net.forward(x if transform is None else transform(x)), labels[i : i + batch_size], ks).items():
            hits[k] += h
        if on_batch is not None:
            on_batch(len(x))
    n = max(len(images), 1)
    return {k: float(100.0 * (1.0 - h / n)) for k, h in hits.items()}


def evaluate_network(net: Network, images: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> dict[str, float]:
    """Top-1 and top-5 error (percent, 2 decimals) of ``net`` on images (n, C, H, W)."""
    err = network_errors(net, images, labels, batch_size)
    return {"top1_err": round(err[1], 2), "top5_err": round(err[5], 2)}
