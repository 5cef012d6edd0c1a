"""One command line: every entry point is a subcommand of ``python -m qcnn_lite``, with a message for a user's mistake."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from qcnn_lite.kernels import buildinfo
from qcnn_lite.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["table1", "reproduce", "evaluate", "search", "model-info", "classify", "info", "bench-layers", "bench",
            "device", "train", "data"]


def test_every_command_is_a_subcommand(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for c in COMMANDS:
        assert f"\n    {c}" in out, c


def test_no_module_has_its_own_entry_point():
    """cli.py is the one argparse user; no other module runs as a script."""
    for f in sorted((ROOT / "qcnn_lite").glob("*.py")):
        if f.name in ("cli.py", "__main__.py"):
            continue
        tree = ast.parse(f.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "argparse" not in imported, f.name
        assert not any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body), f.name
        assert "__main__" not in f.read_text(), f.name


def test_help_needs_no_torch():
    code = "import sys; from qcnn_lite.cli.main import main\ntry: main(['--help'])\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "False"


def test_info_json_is_the_build_report(capsys):
    assert main(["info", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = buildinfo.collect()
    assert set(got) == set(want) and got["backend"] == want["backend"] and got["numpy"] == want["numpy"]
    assert main(["info"]) == 0
    assert f"{want['numpy']}" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["bench", "--networks", "resnet"], "unknown network 'resnet'"),
    (["bench-layers", "--repeat", "0"], "--repeat must be >= 1"),
    (["classify"], "give photo files"),
    (["classify", "--quantize", "/no/such/dense.qcnn"], "No such file"),
    (["model-info", "/no/such/model.qcnn"], "No such file"),
])
def test_user_mistakes_are_messages(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_bench_refuses_to_overwrite_its_output(tmp_path, capsys):
    out = tmp_path / "bench.json"
    out.write_text("mine")
    assert main(["bench", "--networks", "alexnet", "--out", str(out)]) == 2  # refused before any timing
    assert "already exists" in capsys.readouterr().err and out.read_text() == "mine"


def test_python_dash_m_runs_the_cli():
    r = subprocess.run([sys.executable, "-m", "qcnn_lite", "bench", "--networks", "nope"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "unknown network 'nope'" in r.stderr
