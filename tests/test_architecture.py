"""The package's layers: every import goes down, and no private name crosses a subpackage.

The subpackages of ``qcnn_lite`` are layers, lowest first (see ``docs/architecture.md``).
A module may import from its own layer or any layer below it, never above; and it may use
another subpackage's public names only (no ``_name`` from another subpackage).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import qcnn_lite

PKG = Path(qcnn_lite.__file__).parent
# Lowest first; the top-level modules (__init__, __main__) sit above everything.
LAYERS = ("kernels", "nn", "paper", "io", "reference", "quant", "bench", "repro", "apps", "cli")


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if p.name != "_pythran.py" and p.name != "_noblas_kernels.py")


def _dotted(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(absolute module, imported names, line) for every import in the file, lazy ones included."""
    return _imports_of(path.read_text(), _dotted(path), path.name == "__init__.py")


def _imports_of(source: str, here: str, is_package: bool = False) -> list[tuple[str, list[str], int]]:
    """The imports of ``source``, the module ``here`` (a package's ``__init__`` when ``is_package``)."""
    package = here if is_package else here.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((mod, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            out.extend((a.name, [], node.lineno) for a in node.names)
    return out


def _layer(dotted: str) -> int | None:
    parts = dotted.split(".")
    if parts[0] != "qcnn_lite":
        return None
    if len(parts) == 1 or parts[1] not in LAYERS:
        return len(LAYERS)  # the package root and __main__
    return LAYERS.index(parts[1])


def test_every_module_has_a_layer():
    """A new subpackage must be placed in LAYERS (and in docs/architecture.md)."""
    for p in _modules():
        parts = p.relative_to(PKG).parts
        assert len(parts) == 1 or parts[0] in LAYERS, f"{p}: subpackage {parts[0]!r} is not in LAYERS"


def _upward(here: str, imports: list[tuple[str, list[str], int]]) -> list[str]:
    """The imports of module ``here`` that reach a higher layer."""
    names = LAYERS + ("the package root",)
    mine, bad = _layer(here), []
    for mod, imported, line in imports:
        theirs = _layer(mod)
        if theirs is None:
            continue
        if theirs == len(LAYERS) and mod == "qcnn_lite" and here != "qcnn_lite.__main__":
            # `from qcnn_lite import kernels` names a subpackage: judge it by that subpackage
            bad += [f"{here}:{line} imports {n!r} from the package root (import it from its subpackage)"
                    for n in imported if n not in LAYERS or LAYERS.index(n) > mine]
        elif theirs > mine:
            bad.append(f"{here}:{line} imports {mod} from a higher layer ({names[theirs]} > {names[mine]})")
    return bad


def _private(here: str, imports: list[tuple[str, list[str], int]]) -> list[str]:
    """The imports of module ``here`` that take a private name of another subpackage."""
    parts_here = here.split(".")
    my_sub = parts_here[1] if len(parts_here) > 1 else None
    bad = []
    for mod, imported, line in imports:
        parts = mod.split(".")
        if parts[0] != "qcnn_lite" or len(parts) < 2 or parts[1] == my_sub:
            continue
        private = [p for p in parts[2:] if p.startswith("_")] + [n for n in imported if n.startswith("_")]
        if private:
            bad.append(f"{here}:{line} uses private {private} of qcnn_lite.{parts[1]}")
    return bad


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_only_go_down(path):
    assert not _upward(_dotted(path), _imports(path))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_no_private_names_across_subpackages(path):
    assert not _private(_dotted(path), _imports(path))


def test_the_checkers_catch_what_they_must():
    """Not vacuous: an nn module importing the CLI, or a private kernels module, is refused; its own
    subpackage's private names and lower layers' public names are fine."""
    here = "qcnn_lite.nn.fake"
    bad = _imports_of("from qcnn_lite.cli.main import main\nfrom ..kernels._convq import qmax_of\n"
                      "from qcnn_lite import apps\n", here)
    assert len(_upward(here, bad)) == 2 and len(_private(here, bad)) == 1
    good = _imports_of("from qcnn_lite.kernels import geometry\nfrom ._helpers import x\nimport numpy\n", here)
    assert not _upward(here, good) and not _private(here, good)
