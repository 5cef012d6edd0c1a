"""Build a notebook from a list of Markdown/code cell sources (nbformat v4, kernel python3).

Each ``notebooks/_src/NN_name.py`` calls :func:`build` with its cells; running it
writes ``notebooks/NN_name.ipynb`` without outputs. Execute it afterwards:

    jupyter nbconvert --to notebook --execute --inplace notebooks/NN_name.ipynb
"""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
NOTEBOOKS = HERE.parent


def md(text: str):
    return new_markdown_cell(textwrap.dedent(text).strip("\n"))


def code(text: str):
    return new_code_cell(textwrap.dedent(text).strip("\n"))


def build(name: str, cells: list) -> Path:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.validate(nb)
    path = NOTEBOOKS / f"{name}.ipynb"
    nbformat.write(nb, path)
    print(f"wrote {path}", file=sys.stderr)
    return path


def setup(notebook: str, imports: str = "", one_blas_thread: bool = False) -> object:
    """The first code cell of every notebook: imports, fast mode, seeds and the figure helper."""
    blas = ""
    if one_blas_thread:
        blas = '''
try:  # the quantizer makes many small matrix products: one BLAS thread is faster, and steady on a busy machine
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)
except ImportError:
    pass
'''
    return code(
        f'''
%matplotlib inline
import numpy as np
import matplotlib.pyplot as plt
from qcnn_lite import figures
{imports.strip()}

NOTEBOOK = "{notebook}"
FAST = figures.fast_mode()  # QCNN_FAST=1: the small CI settings
rng = np.random.default_rng(0)  # every random choice below derives from fixed seeds
plt.rcParams.update({{"figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3}})
{blas}

def show(fig, name):
    """Save the figure to figures/<notebook>/<name>.png, then show it."""
    figures.savefig(fig, NOTEBOOK, name)
    plt.show()


print("fast mode" if FAST else "full mode")
'''
    )
