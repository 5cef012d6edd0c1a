"""Train a reference network on Fashion-MNIST with torch, then hand it to the numpy engine.

    python -m qcnn_lite train --arch mini-alexnet [--epochs N] [--seed S] [--out data/models/]

writes ``<out>/<arch>.qcnn`` (the dense network, via :mod:`qcnn_lite.io.modelfile`)
and ``<out>/<arch>.json`` (a record: settings, train time, test top-1/top-5
measured by the numpy engine, versions, normalisation). Existing files are never
overwritten without ``--force``. torch is imported only when training runs.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from qcnn_lite.io import datasets as data, progress
from qcnn_lite.nn import models
from qcnn_lite.nn.engine import Network

__all__ = ["train", "train_to_files", "evaluate", "seed_torch", "cosine_adam", "optimizer_step", "augment_batch", "DEFAULTS"]

# Per-architecture settings (about 8-11 minutes of one core each).
DEFAULTS: dict[str, dict[str, Any]] = {
    "mini-alexnet": {"epochs": 8, "lr": 1e-3, "augment": "flip"},
    "mini-cnns": {"epochs": 10, "lr": 1e-3, "augment": "flip"},
    "mini-vgg16": {"epochs": 10, "lr": 1e-3, "augment": "flip"},
}
AUGMENT = ("none", "flip", "shift")


def evaluate(net: Network, images: np.ndarray, labels: np.ndarray, batch_size: int = 500,
             show_progress: bool = True) -> tuple[float, float]:
    """(top-1, top-5) accuracy in percent of ``net`` (numpy engine) on uint8 images (n, 28, 28)."""
    from qcnn_lite.nn.accuracy import network_errors

    mean, std = data.normalisation(net.meta)
    with progress.bar(len(images), desc=f"eval {net.name}", enabled=show_progress) as bar:
        err = network_errors(net, images, labels, batch_size, lambda x: data.to_input(x, mean, std),
                             on_batch=bar.update)
    return 100.0 - err[1], 100.0 - err[5]


def seed_torch(torch: Any, seed: int, threads: int | None) -> tuple[Any, np.random.Generator]:
    """Set torch's threads and seed; (torch generator for augmentation, numpy generator for the batch order)."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed), np.random.default_rng(seed)


def cosine_adam(torch: Any, params: Any, lr: float, steps: int) -> tuple[Any, Any]:
    """Adam with a cosine decay of the learning rate to 0 over ``steps``: (optimizer, scheduler)."""
    opt = torch.optim.Adam(params, lr=lr)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))


def optimizer_step(loss: Any, opt: Any, sched: Any) -> float:
    """One optimisation step on ``loss``; returns its value."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return loss.item()


def augment_batch(torch: Any, x: Any, gen: Any, shift: bool = True) -> Any:
    """Random horizontal flips and (if ``shift``) shifts of up to 2 pixels, per sample; x (n, C, H, W).

    Shifted-in pixels take the background value (the normalised 0).
    """
    n, c, H, W = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if not shift:
        return x
    p = 2
    xp = torch.nn.functional.pad(x, (p, p, p, p), value=float(-data.MEAN / data.STD))
    dy = torch.randint(0, 2 * p + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * p + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(H))[:, None, :, None].expand(n, c, H, W + 2 * p)
    cols = (dx[:, None] + torch.arange(W))[:, None, None, :].expand(n, c, H, W)
    return xp.gather(2, rows).gather(3, cols)


def train(
    arch: str,
    epochs: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    lr: float | None = None,
    augment: str | None = None,
    limit: int | None = None,
    max_steps: int | None = None,
    threads: int | None = 1,
    show_progress: bool = True,
) -> tuple[Network, dict[str, Any]]:
    """Train ``arch`` on the Fashion-MNIST training set; returns (dense Network, history).

    Adam with a cosine learning-rate decay, cross-entropy, dropout 0.5 in fc6/fc7,
    ``augment``: "none", "flip" (random horizontal flips) or "shift" (flips and
    2-pixel shifts); None takes the architecture's default. Seeded: the same seed gives the same run on
    the same machine. ``limit`` uses the first n training images, ``max_steps``
    stops early (for tests). history: {"loss": per-step losses, "seconds": ...}.
    """
    import torch
    import torch.nn.functional as F

    from qcnn_lite.reference.bridge import to_network, to_torch

    epochs, lr, augment = _recipe(arch, epochs, batch_size, lr, augment)
    gen, rng = seed_torch(torch, seed, threads)
    images, labels = data.load_fashion_mnist("train")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x_all = torch.from_numpy(data.to_input(images))
    y_all = torch.from_numpy(labels.astype(np.int64))

    input_shape, spec = models.spec(arch)
    model = to_torch(spec, input_shape)
    steps_per_epoch = math.ceil(len(x_all) / batch_size)
    total = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    opt, sched = cosine_adam(torch, model.parameters(), lr, total)

    losses: list[float] = []
    t0, c0 = time.perf_counter(), time.process_time()
    model.train()
    with progress.bar(total, desc=f"train {arch}", enabled=show_progress) as bar:
        for epoch in range(epochs):
            order = torch.from_numpy(rng.permutation(len(x_all)))
            for i in range(0, len(order), batch_size):
                if len(losses) >= total:
                    break
                idx = order[i : i + batch_size]
                x, y = x_all[idx], y_all[idx]
                if augment != "none":
                    x = augment_batch(torch, x, gen, shift=augment == "shift")
                losses.append(optimizer_step(F.cross_entropy(model(x), y), opt, sched))
                bar.update(1)
                if len(losses) % 20 == 0:
                    bar.set_postfix_str(f"epoch {epoch + 1}/{epochs} loss {np.mean(losses[-50:]):.3f}")
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    n_steps = len(losses)
    model.eval()

    net = to_network(model, arch, spec, input_shape, _meta(epochs, seed))
    return net, {"loss": losses, "seconds": seconds, "cpu_seconds": cpu_seconds, "epochs": epochs, "lr": lr,
                 "steps": n_steps, "augment": augment, "torch": torch.__version__}


def _recipe(arch: str, epochs: int | None, batch_size: int, lr: float | None, augment: str | None) -> tuple[int, float, str]:
    """(epochs, lr, augment) of ``arch``, its defaults filled in; ValueError before any work on a bad one."""
    if arch not in models.SPECS:
        raise ValueError(f"unknown network {arch!r}: choose one of {', '.join(models.SPECS)}")
    cfg = DEFAULTS.get(arch, {"epochs": 10, "lr": 1e-3, "augment": "none"})
    epochs = cfg["epochs"] if epochs is None else epochs
    lr = cfg["lr"] if lr is None else lr
    augment = cfg["augment"] if augment is None else augment
    if augment not in AUGMENT:
        raise ValueError(f"augment must be one of {', '.join(AUGMENT)}, got {augment!r}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    return epochs, lr, augment


def _meta(epochs: int, seed: int) -> dict[str, Any]:
    """What a trained Fashion-MNIST network's model file says about its input and weights."""
    return {
        "classes": list(data.CLASSES),
        "input_mean": data.MEAN,
        "input_std": data.STD,
        "input": "Fashion-MNIST grey 28x28, (x/255 - input_mean)/input_std (qcnn_lite.io.datasets.to_input)",
        "weights": f"trained by qcnn_lite.reference.train: {epochs} epochs, seed {seed}",
    }


def train_to_files(arch: str, out: str | os.PathLike = "data/models", epochs: int | None = None, seed: int = 0,
                   batch_size: int = 64, lr: float | None = None, augment: str | None = None, threads: int = 1,
                   force: bool = False) -> tuple[Path, Path]:
    """Train ``arch``, then write ``<out>/<arch>.qcnn`` and its record ``<out>/<arch>.json``; returns both paths.

    FileExistsError (before any work) when either exists and not ``force``; DataError without Fashion-MNIST.
    """
    from qcnn_lite.io import modelfile

    out = Path(out)
    model_path, record_path = out / f"{arch}.qcnn", out / f"{arch}.json"
    for p in (model_path, record_path):
        if p.exists() and not force:
            raise FileExistsError(f"{p} exists; pass --force to overwrite it")
    data.find_fashion_mnist()
    net, hist = train(arch, epochs, seed, batch_size, lr, augment, threads=threads)
    test_x, test_y = data.load_fashion_mnist("test")
    top1, top5 = evaluate(net, test_x, test_y)
    record = {
        "arch": arch,
        "epochs": hist["epochs"],
        "seed": seed,
        "batch_size": batch_size,
        "lr": hist["lr"],
        "optimizer": "Adam, cosine decay",
        "augment": hist["augment"],
        "steps": hist["steps"],
        "train_seconds": round(hist["seconds"], 1),
        "train_cpu_seconds": round(hist["cpu_seconds"], 1),
        "load_average_at_end": round(os.getloadavg()[0], 2),
        "final_loss": round(float(np.mean(hist["loss"][-100:])), 4),
        "test_top1": round(top1, 2),
        "test_top5": round(top5, 2),
        "evaluated_with": "qcnn_lite numpy engine, Fashion-MNIST test set (10,000 images)",
        "input_mean": data.MEAN,
        "input_std": data.STD,
        "torch": hist["torch"],
        "numpy": np.__version__,
        "python": platform.python_version(),
        "threads": threads,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    net.meta.update({"test_top1": record["test_top1"], "test_top5": record["test_top5"]})
    out.mkdir(parents=True, exist_ok=True)
    modelfile.save(net, model_path, overwrite=force)
    tmp = record_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, record_path)
    print(f"{arch}: test top-1 {top1:.2f} %, top-5 {top5:.2f} % (numpy engine); "
          f"trained {hist['seconds']:.0f} s; wrote {model_path} and {record_path}")
    return model_path, record_path
