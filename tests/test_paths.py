"""Default locations resolve to the project, whatever the working folder (notebooks run in notebooks/)."""
import pytest

from qcnn_lite.io import paths
from qcnn_lite.io.results import load_table


def test_defaults_do_not_depend_on_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("QCNN_MODELS", raising=False)
    before = (paths.results_dir(), paths.models_dir())
    monkeypatch.chdir(tmp_path)
    assert (paths.results_dir(), paths.models_dir()) == before
    assert (paths.project_root() / "pyproject.toml").is_file()


def test_model_file_prefers_qcnn_models_and_explains_a_missing_model(tmp_path, monkeypatch):
    monkeypatch.setenv("QCNN_MODELS", str(tmp_path))
    (tmp_path / "mini-x.qcnn").write_bytes(b"")
    assert paths.model_file("mini-x") == tmp_path / "mini-x.qcnn"
    with pytest.raises(FileNotFoundError, match="make models"):
        paths.model_file("mini-missing")


def test_reproduce_load_reads_the_project_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = load_table("table1")
    if rows is None:
        pytest.skip("results/table1.json has not been written (make reproduce)")
    assert {r["network"] for r in rows} == {"alexnet", "cnns", "vgg16"}
    assert load_table("no-such-table") is None
