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
    tree = ast.parse(path.read_text(), str(path))
    here = _dotted(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
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


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_only_go_down(path):
    here = _dotted(path)
    mine = _layer(here)
    for mod, names, line in _imports(path):
        theirs = _layer(mod)
        if theirs is None:
            continue
        if theirs == len(LAYERS) and mod == "qcnn_lite" and here != "qcnn_lite.__main__":
            # `from qcnn_lite import kernels` names a subpackage: judge it by that subpackage
            for n in names:
                assert n in LAYERS and LAYERS.index(n) <= mine, \
                    f"{here}:{line} imports {n!r} from the package root (import it from its subpackage)"
            continue
        name = (LAYERS + ("the package root",))
        assert theirs <= mine, f"{here}:{line} imports {mod} from a higher layer ({name[theirs]} > {name[mine]})"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_no_private_names_across_subpackages(path):
    here = _dotted(path).split(".")
    my_sub = here[1] if len(here) > 1 else None
    for mod, names, line in _imports(path):
        parts = mod.split(".")
        if parts[0] != "qcnn_lite" or len(parts) < 2 or parts[1] == my_sub:
            continue
        private = [p for p in parts[2:] if p.startswith("_")] + [n for n in names if n.startswith("_")]
        assert not private, f"{'.'.join(here)}:{line} uses private {private} of qcnn_lite.{parts[1]}"


def test_the_checker_catches_an_upward_import(tmp_path):
    """The rules above are not vacuous: a fake nn module importing the CLI is refused."""
    fake = PKG / "nn" / "_fake_upward.py"
    assert _layer("qcnn_lite.cli.main") > _layer("qcnn_lite.nn.layers")
    tree_mod = "from qcnn_lite.cli.main import main\nfrom qcnn_lite.kernels._convq import qmax_of\n"
    p = tmp_path / "m.py"
    p.write_text(tree_mod)
    imported = [m for m, _, _ in ast_imports_of(tree_mod, "qcnn_lite.nn")]
    assert any(_layer(m) > _layer("qcnn_lite.nn") for m in imported)
    assert any(any(x.startswith("_") for x in m.split(".")[2:]) for m in imported)
    assert not fake.exists()


def ast_imports_of(source: str, package: str) -> list[tuple[str, list[str], int]]:
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and not node.level:
            out.append((node.module, [a.name for a in node.names], node.lineno))
    return out
