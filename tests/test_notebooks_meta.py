"""The notebooks as committed: listed in the README, executed without errors, python3 kernels.

Also covers :mod:`qcnn_lite.repro.figures`, the notebooks' figure/fast-mode helper.
These tests read the .ipynb JSON only; running the notebooks is CI's
``pytest --nbval-lax notebooks/`` job.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from qcnn_lite.repro import figures

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_listed_in_readme_toc(path: Path):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert path.name in readme, f"{path.name} is missing from README.md's table of contents"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_kernelspec_python3(path: Path):
    nb = _load(path)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_have_no_errors(path: Path):
    nb = _load(path)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    errors = [
        (i, o.get("ename"))
        for i, c in enumerate(code)
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, f"{path.name}: error outputs in code cells {errors}"
    # stderr streams carrying a traceback count as errors too (a caught-and-printed failure)
    tracebacks = [
        i for i, c in enumerate(code) for o in c.get("outputs", [])
        if o.get("output_type") == "stream" and "Traceback (most recent call last)" in "".join(o.get("text", ""))
    ]
    assert not tracebacks, f"{path.name}: tracebacks printed in code cells {tracebacks}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_executed_in_order(path: Path):
    """Committed outputs come from one top-to-bottom run (no stale cells from an earlier session)."""
    nb = _load(path)
    counts = [c["execution_count"] for c in nb["cells"] if c["cell_type"] == "code" and c.get("execution_count")]
    assert counts == sorted(counts), f"{path.name} was not executed top to bottom: {counts}"


def test_figures_fast_mode(monkeypatch):
    monkeypatch.setenv("QCNN_FAST", "1")
    assert figures.fast_mode()
    monkeypatch.setenv("QCNN_FAST", "0")
    assert not figures.fast_mode()
    monkeypatch.delenv("QCNN_FAST")
    assert not figures.fast_mode()


def test_figures_savefig(monkeypatch, tmp_path):
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setenv("QCNN_FIGURES", str(tmp_path))
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = figures.savefig(fig, "99_test", "line")
    plt.close(fig)
    assert path == tmp_path / "99_test" / "line.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fast_mode_never_writes_the_committed_figures(monkeypatch):
    monkeypatch.delenv("QCNN_FIGURES", raising=False)
    monkeypatch.setenv("QCNN_FAST", "1")
    assert REPO / "figures" not in figures.figures_root().parents and figures.figures_root() != REPO / "figures"
    monkeypatch.setenv("QCNN_FAST", "0")
    assert figures.figures_root() == REPO / "figures"


@pytest.mark.parametrize("notebook,name", [("../x", "a"), ("nb", "../a"), ("nb", "a/b"), ("", "a"), ("nb", "..")])
def test_figures_reject_paths(notebook, name, monkeypatch, tmp_path):
    monkeypatch.setenv("QCNN_FIGURES", str(tmp_path))
    with pytest.raises(ValueError):
        figures.figure_path(notebook, name)
