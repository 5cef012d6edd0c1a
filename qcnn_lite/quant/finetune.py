"""Codebook fine-tuning (``ec+ft``): train the codebooks and biases of a Q-CNN, codes fixed.

Beyond the paper, as "And the bit goes down" (Stock et al. 2020) and PQF do:
after error correction, every weight is still a codeword, ``W[o, t, m] =
codebooks[m, codes[o, t, m]]``. With the codes frozen the network is a
differentiable function of its codebooks (M x K x C's numbers per layer) and
biases, so a few epochs of Adam on the training split recover part of the
accuracy the quantization lost -- the whole network is trained end to end,
where error correction fits one layer at a time.

torch does the training (imported here only); the result is an ordinary
:class:`~qcnn_lite.nn.engine.Network` of ``QConv2d``/``QLinear`` with the same codes,
byte for byte, so it saves to the same model file and runs on numpy alone.
Dense (not quantized) layers stay frozen.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from qcnn_lite.io import progress
from qcnn_lite.nn.engine import Network
from qcnn_lite.nn.layers import QConv2d, QLinear
from qcnn_lite.reference.train import augment_batch, cosine_adam, optimizer_step, seed_torch

__all__ = ["finetune", "training_loss"]


def _modules(torch):
    """The torch modules: a conv and an fc layer whose weight is decoded from (codebooks, fixed codes)."""
    from torch import nn
    import torch.nn.functional as F

    class _Decoded(nn.Module):
        def __init__(self, q):
            super().__init__()
            self.codebooks = nn.Parameter(torch.from_numpy(np.array(q.codebooks, np.float32)))
            self.bias = nn.Parameter(torch.from_numpy(np.array(q.bias, np.float32)))
            self.register_buffer("codes", torch.from_numpy(np.asarray(q.codes).astype(np.int64)))
            self.register_buffer("sub", torch.arange(q.codebooks.shape[0]))

        def weight(self):
            return self.codebooks[self.sub, self.codes]  # (..., M, d): codeword codes[..., m] of codebook m

    class QConv(_Decoded):
        def __init__(self, q: QConv2d):
            super().__init__(q)
            self.stride, self.padding, self.groups = q.stride, q.padding, q.groups

        def forward(self, x):
            Ct, kh, kw, M = self.codes.shape
            w = self.weight().reshape(Ct, kh, kw, -1).permute(0, 3, 1, 2)
            return F.conv2d(x, w, self.bias, self.stride, self.padding, 1, self.groups)

    class QFc(_Decoded):
        def forward(self, x):
            return F.linear(x.flatten(1), self.weight().reshape(self.codes.shape[0], -1), self.bias)

    return QConv, QFc


def _torch_model(torch, qnet: Network):
    from qcnn_lite.reference.bridge import to_torch

    QConv, QFc = _modules(torch)
    model = to_torch(qnet.spec, qnet.input_shape)
    for _, L in qnet.param_layers():
        p = qnet.params[L["name"]]
        if isinstance(p, QConv2d):
            setattr(model, L["name"], QConv(p))
        elif isinstance(p, QLinear):
            setattr(model, L["name"], QFc(p))
        else:  # a dense layer: copy it in and freeze it
            m = getattr(model, L["name"])
            lin = m[1] if isinstance(m, torch.nn.Sequential) else m
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.array(p.weight)))
                lin.bias.copy_(torch.from_numpy(np.array(p.bias)))
            for t in lin.parameters():
                t.requires_grad_(False)
    return model


def _mode(model, torch) -> None:
    """Training mode (logits out, not softmax) without dropout: only a few numbers per layer train."""
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.eval()


def training_loss(qnet: Network, images: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> float:
    """Mean cross-entropy (nats) of ``qnet`` on normalised images (n, C, H, W), by the numpy engine."""
    labels = np.asarray(labels, np.int64)
    total = 0.0
    for i in range(0, len(images), batch_size):
        p = np.clip(qnet.forward(images[i : i + batch_size]).astype(np.float64), 1e-12, 1.0)
        total += float(-np.log(p[np.arange(len(p)), labels[i : i + batch_size]]).sum())
    return total / max(len(images), 1)


def finetune(
    qnet: Network,
    images: np.ndarray,
    labels: np.ndarray,
    epochs: int = 1,
    lr: float = 2e-4,
    batch_size: int = 128,
    seed: int = 0,
    threads: int | None = 1,
    show_progress: bool = True,
) -> tuple[Network, dict[str, Any]]:
    """Train ``qnet``'s codebooks and biases on normalised images (n, C, H, W) and labels (n,).

    Adam, cosine decay from ``lr``, cross-entropy, random horizontal flips (as the
    reference networks were trained), seeded. Returns (a new Network with the same
    codes and the trained codebooks/biases, history {"loss": per-step, "seconds"}).
    """
    import torch
    import torch.nn.functional as F

    if not qnet.is_quantized:
        raise ValueError("finetune needs a quantized network (quantize_network first)")
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels, np.int64)
    if images.ndim != 4 or images.shape[1:] != qnet.input_shape or labels.shape != (len(images),):
        raise ValueError(f"images must be (n, {', '.join(map(str, qnet.input_shape))}) with labels (n,), "
                         f"got {images.shape}, {labels.shape}")
    if len(images) == 0 or epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"need images, epochs >= 1, batch_size >= 1 and lr > 0; got {len(images)}, {epochs}, {batch_size}, {lr}")
    gen, rng = seed_torch(torch, seed, threads)
    model = _torch_model(torch, qnet)
    steps = epochs * math.ceil(len(images) / batch_size)
    opt, sched = cosine_adam(torch, [p for p in model.parameters() if p.requires_grad], lr, steps)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    _mode(model, torch)
    losses: list[float] = []
    t0 = time.perf_counter()
    with progress.bar(steps, desc=f"fine-tune {qnet.name}", enabled=show_progress) as bar:
        for _ in range(epochs):
            order = torch.from_numpy(rng.permutation(len(images)))
            for i in range(0, len(order), batch_size):
                idx = order[i : i + batch_size]
                x = augment_batch(torch, x_all[idx], gen, shift=False)
                losses.append(optimizer_step(F.cross_entropy(model(x), y_all[idx]), opt, sched))
                bar.update(1)
    out = qnet.copy()
    for _, L in qnet.param_layers():
        p = qnet.params[L["name"]]
        m = getattr(model, L["name"])
        if isinstance(p, QConv2d):
            out.params[L["name"]] = QConv2d(m.codebooks.detach().numpy().copy(), p.codes, m.bias.detach().numpy().copy(),
                                            p.stride, p.padding, p.groups, p.table_dtype)
        elif isinstance(p, QLinear):
            out.params[L["name"]] = QLinear(m.codebooks.detach().numpy().copy(), p.codes, m.bias.detach().numpy().copy(), p.table_dtype)
    out.meta["finetune"] = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed, "n_images": len(images),
                            "steps": steps}
    return out, {"loss": losses, "seconds": time.perf_counter() - t0}
