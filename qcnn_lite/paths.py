"""Where the project's files live: the source checkout when running from one, else the current folder.

Notebooks run with ``notebooks/`` as their working folder and the CLI from
anywhere, so relative paths would point to different places; every default
location (results, models, data, figures) is resolved here instead.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["project_root", "results_dir", "models_dir", "model_dirs", "model_file"]


def project_root() -> Path:
    """The repository this package is installed from (editable install), else the current folder."""
    repo = Path(__file__).resolve().parents[1]
    return repo if (repo / "pyproject.toml").is_file() else Path.cwd()


def results_dir() -> Path:
    """``<project>/results``: what ``make reproduce`` writes and the notebooks read."""
    return project_root() / "results"


def models_dir() -> Path:
    """``<project>/data/models``: the committed reference networks."""
    return project_root() / "data" / "models"


def model_dirs() -> list[Path]:
    """Where reference models are looked for: ``$QCNN_MODELS``, then ``<project>/data/models``."""
    env = os.environ.get("QCNN_MODELS")
    return ([Path(env)] if env else []) + [models_dir()]


def model_file(arch: str) -> Path:
    """The model file ``<arch>.qcnn`` from :func:`model_dirs`; FileNotFoundError says how to make it."""
    for d in model_dirs():
        p = d / f"{arch}.qcnn"
        if p.is_file():
            return p
    raise FileNotFoundError(f"{arch}.qcnn not found in {', '.join(map(str, model_dirs()))}: run `make models` "
                            f"(python -m qcnn_lite.train --arch {arch})")
