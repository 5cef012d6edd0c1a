"""Packaging: environment.yml, pyproject.toml and the constraints file tell the same story."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower()


def pyproject_packages() -> set[str]:
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(proj["dependencies"])
    for extra in proj["optional-dependencies"].values():
        reqs += extra
    return {_name(r) for r in reqs}


def environment_packages() -> set[str]:
    names, in_pip = set(), False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        s = line.split("#")[0].rstrip()
        if s.strip() == "- pip:":
            in_pip = True
            continue
        m = re.match(r"^(\s*)- (\S+)", s)
        if not m or s.strip().startswith("- conda-forge"):
            continue
        if in_pip and len(m.group(1)) < 6:
            in_pip = False
        name = _name(m.group(2))
        if name in ("python", "pip"):
            continue
        names.add(CONDA_NAMES.get(name, name))
    return names


def test_environment_yml_lists_the_pyproject_packages():
    assert environment_packages() == pyproject_packages()


def test_core_needs_only_numpy():
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert [_name(r) for r in proj["dependencies"]] == ["numpy"]


def test_constraints_pin_every_package_and_the_cpu_torch():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    assert pins["torch"] == "2.13.0"
    assert pins["pythran"].startswith("0.18.")
    missing = {p for p in pyproject_packages() if p.replace("_", "-") not in pins}
    assert not missing, f"constraints.txt lacks exact versions for {sorted(missing)}"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make reproduce" in readme
