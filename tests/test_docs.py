"""The docs stay true: every Python code block of the README and docs/ runs.

Each block runs in a fresh namespace, in a temporary working folder (a block may write files),
in the order it appears in its file; blocks of one file share nothing.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def _blocks() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        for i, m in enumerate(BLOCK.finditer(doc.read_text())):
            out.append((f"{doc.relative_to(ROOT)}#{i + 1}", m.group(1)))
    return out


def test_there_are_blocks_to_run():
    assert any(name.startswith("README.md") for name, _ in _blocks())


@pytest.mark.parametrize("name,code", _blocks(), ids=[n for n, _ in _blocks()])
def test_code_block_runs(name, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QCNN_PROGRESS", "0")
    exec(compile(code, name, "exec"), {"__name__": "__docs__"})
