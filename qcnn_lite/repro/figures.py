"""Where the notebooks' figures go, and whether the notebooks run in fast mode.

Every notebook figure is saved as ``<repo>/figures/<notebook>/<name>.png``
before it is shown, so the pictures exist outside the notebooks too.
``QCNN_FAST=1`` asks the notebooks for their small (CI) settings; fast-mode
figures go to ``<tmp>/qcnn-lite-figures`` instead, so a fast run never
overwrites the committed full-mode figures. ``QCNN_FIGURES`` overrides both.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from qcnn_lite.io.paths import project_root

__all__ = ["fast_mode", "figures_root", "figure_path", "savefig"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def fast_mode() -> bool:
    """True when ``QCNN_FAST`` is ``1`` (also ``true``/``yes``/``on``): small runs, for CI."""
    return os.environ.get("QCNN_FAST", "0").strip().lower() in ("1", "true", "yes", "on")


def figures_root() -> Path:
    """``$QCNN_FIGURES``; else, in fast mode, ``<tmp>/qcnn-lite-figures``; else ``figures/``
    of the source checkout, or ``./figures`` for an installed package."""
    env = os.environ.get("QCNN_FIGURES")
    if env:
        return Path(env)
    if fast_mode():
        return Path(tempfile.gettempdir()) / "qcnn-lite-figures"
    return project_root() / "figures"


def _check(what: str, value: str) -> str:
    # one plain path component: a figure can never be written outside its folder
    if not isinstance(value, str) or not _NAME.match(value) or value in (".", ".."):
        raise ValueError(f"{what} must be a plain file name (letters, digits, '_', '-', '.'), got {value!r}")
    return value


def figure_path(notebook: str, name: str) -> Path:
    """``<root>/<notebook>/<name>.png`` (``.png`` is added when missing); the folder is created."""
    _check("notebook", notebook)
    _check("name", name)
    if not name.lower().endswith(".png"):
        name += ".png"
    folder = figures_root() / notebook
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def savefig(fig: Any, notebook: str, name: str, dpi: int = 100) -> Path:
    """Save a matplotlib figure as PNG under ``figures/<notebook>/`` and return the path.

    Overwrites the notebook's own earlier figure of the same name (that is the
    point of re-running a notebook). The figure stays open, so it still shows.
    """
    path = figure_path(notebook, name)
    # no version/date metadata: re-running an unchanged notebook leaves the PNG bytes alone
    fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return path
