"""Every number in a notebook's prose is a constant of the lesson or formatted from an output.

The convention is documented in ``notebooks/_src/nbbuild.py``: measured numbers reach the
prose only through ``report`` cells (``display(Markdown(rf"..."))`` with ``{...}``
fields); static Markdown and the literal text of those templates may quote only constants
of the lesson (numeric literals of the notebook's code, integers 0-10, and the constants
declared in ``metadata.qcnn.constants`` with their sources).

Also: no figure in ``figures/`` without a notebook (or package module, or test) that writes it.
These tests read the committed .ipynb JSON and sources only; nothing is executed.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))

# a number: 10,000 / 3.5 / 18 -- not part of an identifier (fc7, int8, x86) or a dotted name,
# but the second factor of 8x8 counts
_NUMBER = re.compile(r"(?:(?<![\w.])|(?<=\d[x×]))(\d{1,3}(?:,\d{3})+(?!\d)|\d+(?:\.\d+)?)")
_CODE_LITERAL = re.compile(r"(?<![\w.])(\d+(?:_\d+)*(?:\.\d*)?(?:e-?\d+)?)")
_FENCED = re.compile(r"```.*?```", re.S)
_INLINE = re.compile(r"`[^`\n]*`")
_URL = re.compile(r"\]\([^)]*\)|https?://\S+|<img[^>]*>")
_FIELD = re.compile(r"\{[^{}]*\}")
SMALL = {float(i) for i in range(11)}


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _src(cell: dict) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def numbers_in_prose(text: str) -> list[str]:
    """The numbers a reader sees in Markdown ``text`` (outside code, URLs and image tags)."""
    for pattern in (_FENCED, _INLINE, _URL):
        text = pattern.sub(" ", text)
    return [m.group(1) for m in _NUMBER.finditer(text)]


def _value(number: str) -> float:
    return float(number.replace(",", "").replace("_", ""))


def lesson_constants(nb: dict) -> set[float]:
    """Integers 0-10, the numeric literals of the code cells, and the declared constants."""
    values = set(SMALL)
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and "report" not in cell.get("metadata", {}).get("tags", []):
            code = _INLINE.sub(" ", _src(cell))
            for lit in _CODE_LITERAL.findall(code):
                try:
                    v = float(lit.replace("_", ""))
                except ValueError:
                    continue
                values.update({v, abs(v)})
    declared = nb.get("metadata", {}).get("qcnn", {}).get("constants", {})
    values.update(_value(k) for k in declared)
    return values


def report_template(source: str) -> str:
    """The literal text of a report cell's f-string, its ``{...}`` fields removed."""
    m = re.search(r'Markdown\(rf?"""(.*)"""\)', source, re.S)
    assert m, "a report cell must be display(Markdown(rf\"\"\"...\"\"\"))"
    text = m.group(1).replace("{{", "\0").replace("}}", "\1")
    while _FIELD.search(text):
        text = _FIELD.sub(" ", text)
    return text.replace("\0", "{").replace("\1", "}")


def _close(v: float, allowed: set[float]) -> bool:
    return any(abs(v - a) <= 1e-9 * max(1.0, abs(a)) for a in allowed)


def stray_numbers(nb: dict) -> list[tuple[int, str, list[str]]]:
    """(cell index, first line, numbers) for every prose cell quoting a number that is no constant."""
    allowed = lesson_constants(nb)
    bad = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "markdown":
            text = _src(cell)
        elif "report" in cell.get("metadata", {}).get("tags", []):
            text = report_template(_src(cell))
        else:
            continue
        stray = [n for n in numbers_in_prose(text) if not _close(_value(n), allowed)]
        if stray:
            bad.append((i, text.strip().splitlines()[0][:70] if text.strip() else "", stray))
    return bad


# --- the checker itself, on small synthetic notebooks ------------------------------------

def _nb(cells: list[dict], constants: dict | None = None) -> dict:
    return {"cells": cells, "metadata": {"qcnn": {"constants": constants or {}}}}


def _md(s: str) -> dict:
    return {"cell_type": "markdown", "source": s, "metadata": {}}


def _code(s: str, report: bool = False) -> dict:
    return {"cell_type": "code", "source": s, "metadata": {"tags": ["report"]} if report else {}, "outputs": []}


def test_numbers_in_prose_skips_code_identifiers_and_links():
    text = "fc7 has 4,096 inputs; `n_calib=500` and int8; see [Table 2](http://x.org/1512.06473); 8x8 and 18.46x"
    assert numbers_in_prose(text) == ["4,096", "2", "8", "8", "18.46"]


def test_checker_flags_a_typed_measurement():
    nb = _nb([_code("K = 32\nn = 2000"), _md("With K = 32 and 2,000 images top-1 is 91.11 %.")])
    assert stray_numbers(nb) == [(1, "With K = 32 and 2,000 images top-1 is 91.11 %.", ["91.11"])]


def test_checker_accepts_declared_constants_and_report_fields():
    nb = _nb([_code("acc = 91.1"), _md("The paper: 232.56 ms."),
              _code('display(Markdown(rf"""top-1 {acc:.2f} %, $\\frac{{1}}{{2}}$ of {n_test:,d}"""))', report=True)],
             constants={"232.56": "paper Table 2"})
    assert stray_numbers(nb) == []


def test_checker_flags_numbers_typed_into_a_report_template():
    nb = _nb([_code('display(Markdown(rf"""top-1 {acc:.2f} %, against 91.30 % before"""))', report=True)])
    assert stray_numbers(nb)[0][2] == ["91.30"]


# --- the committed notebooks ----------------------------------------------------------

@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_prose_quotes_only_constants_or_outputs(path: Path):
    bad = stray_numbers(_load(path))
    assert not bad, (
        f"{path.name}: numbers in the prose that are neither constants of the lesson nor formatted from "
        "an output (use nbbuild.report, or declare the constant with its source in build(constants=...)):\n"
        + "\n".join(f"  cell {i} ({first!r}): {nums}" for i, first, nums in bad)
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_report_cells_were_executed(path: Path):
    nb = _load(path)
    for i, cell in enumerate(nb["cells"]):
        if "report" in cell.get("metadata", {}).get("tags", []):
            shown = [o for o in cell.get("outputs", []) if "text/markdown" in o.get("data", {})]
            assert shown, f"{path.name}: report cell {i} has no Markdown output (execute the notebook)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_declared_constants_have_sources(path: Path):
    declared = _load(path).get("metadata", {}).get("qcnn", {}).get("constants", {})
    assert all(isinstance(s, str) and s.strip() for s in declared.values())


# --- figures/ -------------------------------------------------------------------------

def _sources() -> dict[Path, str]:
    files = [*(REPO / "notebooks" / "_src").glob("*.py"), *(REPO / "qcnn_lite").rglob("*.py"),
             *(REPO / "tests").glob("*.py"), *(REPO / "scripts").glob("*.py")]
    return {f: f.read_text(encoding="utf-8") for f in files}


FIGURES = sorted((REPO / "figures").glob("*/*.png"))


@pytest.mark.parametrize("png", FIGURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_figure_has_a_writer(png: Path):
    """A notebook's show(fig, "name"), or a savefig/figure_path call naming the folder and the name."""
    folder, name = png.parent.name, png.stem
    sources = _sources()
    nb_src = REPO / "notebooks" / "_src" / f"{folder}.py"
    if nb_src in sources and re.search(rf'show\(\s*fig\w*\s*,\s*"{re.escape(name)}"', sources[nb_src]):
        return
    pair = re.compile(rf'"{re.escape(folder)}"\s*,\s*"{re.escape(name)}"')
    assert any(pair.search(s) for s in sources.values()), (
        f"figures/{folder}/{name}.png is written by no notebook or module: a stale figure (delete it)"
    )


# --- claims: every qualitative word that rests on a result comes from a condition that holds ---------------

def _claim_rows(cell: dict) -> list[dict] | None:
    for o in cell.get("outputs", []):
        if "text/markdown" in o.get("data", {}) and "qcnn_claims" in o.get("metadata", {}):
            return o["metadata"]["qcnn_claims"]
    return None


def false_claims(nb: dict) -> list[tuple[int, str]]:
    """(cell index, claim) for every required claim whose recorded condition is false, or a claim cell
    whose output recorded no claims (not executed with the claims helper)."""
    bad = []
    for i, cell in enumerate(nb["cells"]):
        if "report" not in cell.get("metadata", {}).get("tags", []):
            continue
        src = _src(cell)
        if not re.search(r"\b(claim|verdict)\(", report_template_raw(src)):
            continue
        rows = _claim_rows(cell)
        if not rows:
            bad.append((i, "no recorded claims in the output: execute the notebook"))
            continue
        bad.extend((i, r["text"]) for r in rows if r.get("required") and not r.get("condition"))
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            bad.append((i, "the claim cell raised"))
    return bad


def report_template_raw(source: str) -> str:
    m = re.search(r'Markdown\(rf?"""(.*)"""\)', source, re.S)
    return m.group(1) if m else ""


def test_claims_checker_flags_a_false_required_claim():
    src = 'display(Markdown(rf"""the layer is {claim(exact, \'exact\')}"""), metadata={})'
    ok = {"data": {"text/markdown": "x"}, "metadata": {"qcnn_claims": [{"text": "exact", "condition": True, "required": True}]}}
    no = {"data": {"text/markdown": "x"}, "metadata": {"qcnn_claims": [{"text": "exact", "condition": False, "required": True}]}}
    alt = {"data": {"text/markdown": "x"}, "metadata": {"qcnn_claims": [{"text": "not exact", "condition": False, "required": False}]}}
    cell = _code(src, report=True)
    assert false_claims(_nb([{**cell, "outputs": [ok]}])) == []
    assert false_claims(_nb([{**cell, "outputs": [no]}])) == [(0, "exact")]
    assert false_claims(_nb([{**cell, "outputs": [alt]}])) == []  # the alternative text was chosen: true
    assert false_claims(_nb([cell]))[0][1].startswith("no recorded claims")


def test_claims_helper_records_and_fails():
    from qcnn_lite.repro import claims
    claims.start()
    assert claims.claim(2 > 1, "faster", "slower") == "faster"
    assert claims.claim(1 > 2, "faster", "slower") == "slower"
    assert claims.verdict(0.1, 0.5) == "a gain" and claims.verdict(-0.5, -0.1) == "a loss"
    assert claims.verdict(-0.1, 0.2) == "within the noise"
    assert claims.failed() == []
    claims.claim(1 > 2, "exact")
    assert claims.failed() == ["exact"] and len(claims.rows()) == 6


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_claims_hold_in_the_executed_notebook(path: Path):
    bad = false_claims(_load(path))
    assert not bad, f"{path.name}: claims its output contradicts:\n" + "\n".join(f"  cell {i}: {t}" for i, t in bad)


# --- exercises: every solution is a code cell that asserts its answer --------------------------------------

def unchecked_exercises(nb: dict) -> list[str]:
    bad = []
    cells = nb["cells"]
    for i, cell in enumerate(cells):
        text = _src(cell)
        m = re.match(r"\*\*Exercise (\d+)\.\*\*", text) if cell["cell_type"] == "markdown" else None
        if not m:
            continue
        nxt = cells[i + 1] if i + 1 < len(cells) else None
        if not (nxt and nxt["cell_type"] == "code" and "solution" in nxt.get("metadata", {}).get("tags", [])
                and re.search(r"^\s*assert\b", _src(nxt), re.M)):
            bad.append(f"exercise {m.group(1)}")
    return bad


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_exercise_solution_asserts_its_answer(path: Path):
    bad = unchecked_exercises(_load(path))
    assert not bad, f"{path.name}: exercises without a solution cell that asserts its answer: {bad}"
