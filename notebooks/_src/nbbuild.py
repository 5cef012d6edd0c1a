"""Build a notebook from a list of Markdown/code cell sources (nbformat v4, kernel python3).

Each ``notebooks/_src/NN_name.py`` calls :func:`build` with its cells; running it
writes ``notebooks/NN_name.ipynb`` without outputs. Execute it afterwards:

    jupyter nbconvert --to notebook --execute --inplace notebooks/NN_name.ipynb

Numbers in the prose (checked by ``tests/test_notebook_numbers.py``)
--------------------------------------------------------------------
A number in the prose is either a *constant of the lesson* or *quoted from an output*:

* **Quoted from an output** -- a measured accuracy, error, ratio or time. Such a number
  is never typed: write the sentence with :func:`report`, a hidden code cell
  ``display(Markdown(rf"..."))`` whose numbers are formatted from the variables that
  hold them (``{top1_ec:.2f} %``). The reader sees rendered Markdown; re-executing the
  notebook updates the prose with the outputs.
* **A constant of the lesson** -- a setting or a fact the lesson fixes: the numeric
  literals of the notebook's own code cells (``K = 32``, ``n_test = 2000``), integers
  0-10 (counting, headings, notebook numbers), and the values declared with
  ``build(..., constants={"232.56": "paper Table 2, AlexNet CPU time (ms)"})`` --
  paper figures, data set sizes, hardware facts -- each with its source.

The test extracts every number from every static Markdown cell (outside code spans,
fenced code and link targets) and from the literal text of every ``report`` f-string
(outside its ``{...}`` fields), and fails on any that is not a constant of the lesson.
So a measured number can only reach the prose through a variable, and it is the
output's number by construction. It also checks that every ``report`` cell was executed
and shows its Markdown.

Exercises: :func:`exercise` gives each one a hint and a solution, both collapsed
(``<details>``), so the page reads as a problem first.
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


def report(template: str):
    """A hidden code cell rendering ``template`` as Markdown, its ``{...}`` fields formatted from variables.

    Use it for every sentence that quotes a measured number (see the module docstring).
    The template becomes a raw f-string: LaTeX backslashes stay as typed, but literal braces
    must be doubled (``\\frac{{a}}{{b}}``); it must not contain triple double quotes.
    """
    body = textwrap.dedent(template).strip("\n")
    if '"""' in body:
        raise ValueError("report(): the template must not contain triple double quotes")
    cell = new_code_cell(
        "# report: every number below is formatted from a variable, every claim from a condition\n"
        "# (tests/test_notebook_numbers.py); a claim its output contradicts fails the assert\n"
        "from IPython.display import Markdown, display\n"
        "import qcnn_lite.repro.claims as _claims\n"
        "from qcnn_lite.repro.claims import claim, verdict\n"
        "_claims.start()\n"
        f'display(Markdown(rf"""\n{body}\n"""), metadata={{"qcnn_claims": _claims.rows()}})\n'
        'assert not _claims.failed(), f"the prose claims what the output does not show: {_claims.failed()}"'
    )
    cell.metadata["tags"] = ["report"]
    cell.metadata["jupyter"] = {"source_hidden": True}
    return cell


def exercise(number: int, task: str, hint: str, solution: str, check: str | None = None):
    """One exercise as Markdown: the task, then a collapsed hint and a collapsed solution.

    ``check`` is the solution's code: it becomes a code cell right after the exercise (tagged
    ``solution``, its source collapsed), which computes the answer and ``assert``s the claim the
    solution's prose makes -- so nbval runs every solution. It must contain an ``assert`` and must
    not overwrite the notebook's variables (use names of its own).
    """
    task, hint, solution = (textwrap.dedent(t).strip("\n") for t in (task, hint, solution))
    text = md(
        f"**Exercise {number}.** {task}\n\n"
        f"<details><summary>Hint</summary>\n\n{hint}\n\n</details>\n\n"
        f"<details><summary>Solution</summary>\n\n{solution}\n\n"
        + ("The code cell below (collapsed) computes it and asserts the answer.\n\n" if check else "")
        + "</details>"
    )
    if check is None:
        return text
    body = textwrap.dedent(check).strip("\n")
    if "assert" not in body:
        raise ValueError(f"exercise {number}: the solution code must assert its answer")
    cell = new_code_cell(f"# Solution to exercise {number}: computes the answer and asserts it\n{body}")
    cell.metadata["tags"] = ["solution"]
    cell.metadata["jupyter"] = {"source_hidden": True}
    return [text, cell]


def build(name: str, cells: list, constants: dict[str, str] | None = None) -> Path:
    """Write ``notebooks/<name>.ipynb``; ``constants`` maps each declared lesson constant to its source."""
    cells = [c for item in cells for c in (item if isinstance(item, list) else [item])]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for value, source in (constants or {}).items():
        float(value.replace(",", ""))  # a ValueError here names a constant that is not a number
        if not source.strip():
            raise ValueError(f"constant {value} needs its source")
    nb.metadata["qcnn"] = {"constants": dict(constants or {})}
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
from qcnn_lite.repro import figures
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
