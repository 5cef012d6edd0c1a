"""The careless user: every subcommand, every option, fed bad values.

The subcommands and their options are read from the parser, so a new one is covered (or this
test fails asking for it). Each bad input must end in an exit code other than 0, one line on
stderr without a traceback, within a few seconds, with no file changed outside a temporary
folder. The tests after the table check one promise each: plot suffixes, sizes, result bounds, outputs first,
photos, FIFOs, --dense, validate, empty names, QCNN_DATA, the kernel environment, help and messages.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qcnn_lite.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "device" / "results" / "x86-64-amd-epyc-2026-11-29.json"
DENSE = ROOT / "data" / "models" / "mini-alexnet.qcnn"
QUANTIZED = ROOT / "data" / "models" / "mini-alexnet-q.qcnn"
OTHER_ARCH = ROOT / "data" / "models" / "mini-cnns.qcnn"
SECONDS = 5.0  # a bad input is found before any work: well under this

# Options whose value is free text: anything is a valid name or note.
FREE_TEXT = {("device", "run", "--name"), ("device", "run", "--notes")}
# Numeric options for which 0 is a meaningful value.
ZERO_OK = {("search", "--seed"), ("train", "--seed"), ("device", "run", "--warmup"), ("device", "run", "--cooldown")}


# --------------------------------------------------------------------------- the parser's commands
def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every runnable command path (("device", "run"), ...) and its parser, read from the parser itself."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {prefix: parser}
    found = {}
    for name, p in subs[0].choices.items():
        found.update(_commands(p, prefix + (name,)))
    return found


COMMANDS = _commands(build_parser())


def _valid_argv(tmp: Path) -> dict[tuple[str, ...], list[str]]:
    """A minimal valid command line per command: what reaches the environment and output checks."""
    result, model, photo = _fixtures(tmp)
    return {
        ("table1",): [], ("reproduce",): ["--out", str(tmp / "res")], ("evaluate",): [],
        ("search",): ["--arch", "mini-cnns", "--target", "compression=15"],
        ("model-info",): [str(model)], ("classify",): [str(photo)], ("info",): [],
        ("bench-layers",): [], ("bench",): [], ("device", "run"): ["--out-dir", str(tmp / "dev")],
        ("device", "validate"): [str(result)], ("device", "table"): [str(result)],
        ("device", "plot"): [str(result), "--out", str(tmp / "t2.png")],
        ("train",): ["--arch", "mini-cnns", "--out", str(tmp / "models")], ("data",): ["check"],
    }


def _fixtures(tmp: Path) -> tuple[Path, Path, Path]:
    result = tmp / "result.json"
    if not result.exists():
        shutil.copy(RESULT, result)
        shutil.copy(QUANTIZED, tmp / "model.qcnn")
        from PIL import Image

        Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp / "photo.png")
    return result, tmp / "model.qcnn", tmp / "photo.png"


def _snapshot() -> dict[str, tuple[int, int]]:
    """Size and modification time of every file of the checkout (its outputs included)."""
    snap = {}
    for d, dirs, files in os.walk(ROOT):
        dirs[:] = [x for x in dirs if x not in (".git", ".venv", "__pycache__", ".pytest_cache")]
        for f in files:
            st = os.lstat(os.path.join(d, f))
            snap[os.path.join(d, f)] = (st.st_size, st.st_mtime_ns)
    return snap


class _Hang(BaseException):
    """Raised by the alarm: not an Exception, so no handler of the command line can swallow it."""


@pytest.fixture
def careless(tmp_path, monkeypatch, capsys):
    """run(argv) -> (exit code, stderr), asserting the careless-user rules; cwd is a temporary folder."""
    monkeypatch.chdir(tmp_path)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "file.txt").write_text("some text\n")
    (tmp_path / "dir").mkdir()
    before = _snapshot()

    def on_alarm(signum, frame):
        raise _Hang()

    old = signal.signal(signal.SIGALRM, on_alarm)

    def run(argv: list[str]) -> tuple[int, str]:
        capsys.readouterr()
        start = time.monotonic()
        signal.alarm(int(SECONDS) + 5)
        try:
            code = main(argv)
        except SystemExit as e:  # only --help may exit; it is never fed here
            code = f"SystemExit({e.code})"
        except _Hang:
            pytest.fail(f"{argv} hung")
        finally:
            signal.alarm(0)
        took = time.monotonic() - start
        err = capsys.readouterr().err
        assert code not in (0, "SystemExit(0)"), (argv, err)
        assert isinstance(code, int), (argv, code, err)
        assert err.count("\n") == 1 and err.startswith("error: "), (argv, err)
        assert "Traceback" not in err, (argv, err)
        assert took < SECONDS, (argv, took)
        return code, err

    yield run
    signal.signal(signal.SIGALRM, old)
    assert _snapshot() == before, "a file of the checkout changed"


def _bad_values(cmd: tuple[str, ...], action: argparse.Action, tmp: Path) -> list[str]:
    """Values that the option must refuse, by the kind of value it takes."""
    kind = getattr(action.type, "__name__", None)
    missing, fifo, folder, empty = str(tmp / "missing"), str(tmp / "fifo"), str(tmp / "dir"), str(tmp / "empty.txt")
    if action.choices is not None and action.type is None:
        return ["bogus", ""]
    if kind in ("int", "float"):
        zero = [] if cmd + (action.option_strings[0],) in ZERO_OK else ["0"]
        return ["", "-5", "abc", "9" * 30, "nan", "inf", "1e999", *zero]
    if kind == "names":
        return ["", ",", " , ", "bogus", "9" * 30]
    if kind == "file":
        return ["", missing, folder, fifo, empty, "/dev/zero"]
    if kind == "input_file_or_dir":
        return ["", missing, fifo, empty, "/dev/zero"]
    if kind == "input_dir":
        return ["", missing, fifo, str(tmp / "file.txt")]
    if kind == "output file":
        return ["", folder, str(tmp / "nodir" / "sub" / "out.json"), fifo]
    if kind == "output_dir":
        return ["", str(tmp / "file.txt"), str(tmp / "file.txt" / "sub")]
    if kind == "_target":
        return ["", "bogus", "compression=-3", "speedup=abc"]
    raise AssertionError(f"{' '.join(cmd)} {action.dest}: a value of unknown kind; add it to this test")


def _argv(cmd: tuple[str, ...], action: argparse.Action, value: str) -> list[str]:
    return [*cmd, action.option_strings[0], value] if action.option_strings else [*cmd, value]


def _value_actions(parser: argparse.ArgumentParser):
    return [a for a in parser._actions
            if a.nargs != 0 and not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


@pytest.mark.parametrize("cmd", sorted(COMMANDS), ids=" ".join)
def test_every_option_refuses_bad_values(cmd, careless, tmp_path):
    """Each option of each subcommand, each bad value of its kind: refused at once, in one line."""
    n = 0
    for action in _value_actions(COMMANDS[cmd]):
        if cmd + (action.option_strings[0] if action.option_strings else action.dest,) in FREE_TEXT:
            continue
        for value in _bad_values(cmd, action, tmp_path):
            code, err = careless(_argv(cmd, action, value))
            assert code == 2, (cmd, action.dest, value, err)
            n += 1
    for argv in ([*cmd, "--bogus-option"], [*cmd, "--bogus-option=1"]):
        careless(argv)
    assert n or not _value_actions(COMMANDS[cmd]) or cmd in {c[:2] for c in FREE_TEXT}


@pytest.mark.parametrize("cmd", sorted(COMMANDS), ids=" ".join)
def test_bad_environment_stops_every_command(cmd, careless, tmp_path, monkeypatch):
    """A bad QCNN_LITE_BACKEND (recorded by the package at import) stops every command before any work."""
    from qcnn_lite.kernels import dispatch

    argv = _valid_argv(tmp_path)
    assert cmd in argv, f"{' '.join(cmd)}: add a minimal valid command line to _valid_argv"
    monkeypatch.setattr(dispatch, "ENV_ERROR", "QCNN_LITE_BACKEND='foo' is not a backend: use one of numpy, pythran, auto")
    code, err = careless([*cmd, *argv[cmd]])
    assert code == 2 and "QCNN_LITE_BACKEND" in err


@pytest.mark.parametrize("cmd, opt", [(("search",), "--out"), (("classify",), "--out"), (("bench",), "--out"),
                                      (("bench-layers",), "--out"), (("device", "plot"), "--out")])
def test_existing_output_is_refused(cmd, opt, careless, tmp_path):
    """An output that exists is never replaced without --force, and with --force only if it is a file."""
    argv = _valid_argv(tmp_path).get(cmd, [])
    if cmd == ("classify",):
        shutil.copy(DENSE, tmp_path / "dense.qcnn")
        argv = ["--quantize", str(tmp_path / "dense.qcnn")]
    elif cmd == ("device", "plot"):
        argv = argv[:1]
    target = tmp_path / ("mine.png" if cmd == ("device", "plot") else "mine.json")
    target.write_text("mine")
    code, err = careless([*cmd, *argv, opt, str(target)])
    assert code == 2 and "already exists" in err and target.read_text() == "mine"
    if "--force" in {o for a in COMMANDS[cmd]._actions for o in a.option_strings}:
        fifo = tmp_path / f"fifo{target.suffix}"
        os.mkfifo(fifo)
        code, err = careless([*cmd, *argv, opt, str(fifo), "--force"])
        assert "not a regular file" in err


def test_every_option_has_help_for_users():
    """Every option has a help text, with no markup or developer notes."""
    parser = build_parser()
    texts = [parser.description]
    for cmd, p in COMMANDS.items():
        texts.append(p.description or "")
        for a in p._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            assert a.help, f"{' '.join(cmd)} {a.option_strings or a.dest} has no help"
            texts.append(a.help)
        texts.append(p.format_help())
    for t in texts:
        for bad in ("``", ":mod:", ":func:", "issue", "2-core", "TODO", "Traceback"):
            assert bad not in (t or ""), (bad, t)


# --------------------------------------------------------------------------- one promise each
def test_plot_adds_the_suffix_before_checking(careless, tmp_path, capsys):
    (tmp_path / "report.png").write_text("precious data")
    code, err = careless(["device", "plot", str(RESULT), "--out", str(tmp_path / "report")])
    assert "report.png already exists" in err and (tmp_path / "report.png").read_text() == "precious data"
    code, err = careless(["device", "plot", str(RESULT), "--out", str(tmp_path / "dir"), "--force"])
    assert "is a folder" in err and not (tmp_path / "dir.png").exists()
    pytest.importorskip("matplotlib")
    assert main(["device", "plot", str(RESULT), "--out", str(tmp_path / "new")]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(tmp_path / "new.png") and Path(printed).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv", [["--limit", "0"], ["--limit", "-9990"], ["--n-calib", "0"], ["--n-calib", "-5"]])
def test_evaluate_refuses_empty_and_negative_sizes(argv, careless):
    code, err = careless(["evaluate", *argv])
    assert code == 2 and argv[0] in err


def _result(tmp: Path, name: str, mutate) -> Path:
    obj = json.loads(RESULT.read_text())
    mutate(obj)
    path = tmp / name
    path.write_text(json.dumps(obj))
    return path


BAD_RESULTS = {
    "zero-times": lambda o: [r.update(times_s=[0.0] * r["repeat"], median_s=0.0, min_s=0.0, max_s=0.0)
                             for r in o["runs"] if r["variant"] == "qcnn"],
    "huge-storage": lambda o: o["runs"][0].update(storage_bytes=10**400),
    "huge-load": lambda o: o["environment"].update(load_average=[1e300, 0.5, 0.5]),
    "1e300-ms": lambda o: o["runs"][0].update(times_s=[1e297] * o["runs"][0]["repeat"], median_s=1e297,
                                              min_s=1e297, max_s=1e297),
}


@pytest.mark.parametrize("case", BAD_RESULTS)
def test_table_and_validate_agree(case, careless, tmp_path):
    path = _result(tmp_path, f"{case}.json", BAD_RESULTS[case])
    code, err = careless(["device", "validate", str(path)])
    assert code == 1 and f"{case}.json" in err
    for action in (["table"], ["plot", "--out", str(tmp_path / "t.png")]):
        code, err = careless(["device", action[0], str(path), *action[1:]])
        assert code == 2 and f"{case}.json" in err


def test_load_average_of_1e999(careless, tmp_path):
    text = RESULT.read_text()
    obj = json.loads(text)
    old = json.dumps(obj["environment"]["load_average"])
    path = tmp_path / "inf-load.json"
    path.write_text(json.dumps(obj).replace(f'"load_average": {old}', '"load_average": [1e999, 0, 0]', 1))
    code, err = careless(["device", "validate", str(path)])
    assert code == 1 and "load_average" in err


def test_outputs_are_checked_before_the_work(careless, tmp_path):
    code, err = careless(["classify", "--quantize", str(DENSE), "--out", str(tmp_path / "nodir" / "sub" / "out.qcnn")])
    assert code == 2 and "nodir/sub does not exist" in err and ".tmp" not in err
    code, err = careless(["bench", "--out", str(tmp_path / "nodir" / "b.json")])
    assert code == 2 and "--out" in err
    code, err = careless(["device", "run", "--backends", "foo", "--out-dir", str(tmp_path / "new")])
    assert code == 2 and "unknown backend 'foo'" in err and not (tmp_path / "new").exists()


def test_a_failing_child_gives_one_line(tmp_path):
    """device run's children: their traceback stays with them, the parent reports its last line."""
    from qcnn_lite.bench import memory

    with pytest.raises(RuntimeError) as e:
        memory.run_model(tmp_path / "missing.qcnn", "numpy", 1, 0)
    assert "\n" not in str(e.value) and "Traceback" not in str(e.value)


def test_photos_are_not_read_whole_before_they_are_checked(careless, tmp_path):
    from qcnn_lite.io.preprocess import ImageError, load_image

    code, err = careless(["classify", "/dev/zero"])
    assert code == 2 and "not a regular file" in err
    for path in ("/dev/zero", tmp_path / "fifo"):
        with pytest.raises(ImageError, match="not a regular file"):
            load_image(path)


@pytest.mark.parametrize("argv", [["model-info", "{fifo}"], ["classify", "{fifo}"], ["classify", "{photo}", "--model", "{fifo}"],
                                  ["device", "validate", "{fifo}"], ["device", "table", "{fifo}"]])
def test_a_fifo_is_refused_not_opened(argv, careless, tmp_path):
    _, _, photo = _fixtures(tmp_path)
    code, err = careless([a.format(fifo=tmp_path / "fifo", photo=photo) for a in argv])
    assert code == 2 and "not a regular file" in err


def test_a_fifo_in_a_results_folder_is_reported(tmp_path, capsys):
    folder = tmp_path / "results"
    folder.mkdir()
    shutil.copy(RESULT, folder / "a.json")
    os.mkfifo(folder / "b.json")
    assert main(["device", "validate", str(folder)]) == 1
    cap = capsys.readouterr()
    assert "ok: " in cap.out and "b.json: not a regular file" in cap.err


@pytest.mark.parametrize("dense, message", [(QUANTIZED, "is a quantized model"), (OTHER_ARCH, "is a mini-cnns")])
def test_dense_must_be_dense_and_the_same_network(dense, message, careless, tmp_path):
    _, _, photo = _fixtures(tmp_path)
    code, err = careless(["classify", str(photo), "--dense", str(dense)])
    assert code == 2 and "--dense" in err and message in err


def test_validate_means_it(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["device", "validate", str(empty)]) == 1
    assert "no result files" in capsys.readouterr().err
    upper = tmp_path / "upper"
    upper.mkdir()
    shutil.copy(RESULT, upper / "result.JSON")
    assert main(["device", "validate", str(upper)]) == 1
    assert "no result files" in capsys.readouterr().err
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 100_000 + "]" * 100_000)
    good = tmp_path / "good.json"
    shutil.copy(RESULT, good)
    assert main(["device", "validate", str(nested), str(good)]) == 1
    cap = capsys.readouterr()
    assert "nested.json: JSON nested too deeply" in cap.err and f"ok: {good}" in cap.out
    assert main(["device", "validate", str(good), str(good)]) == 1
    assert "more than once" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["bench", "--networks", ""], ["device", "run", "--networks", ""],
                                  ["train", "--arch", "mini-cnns", "--threads", "0"], ["device", "run", "--cooldown", "-5"],
                                  ["classify", "x.png", "--top", "0"], ["device", "table", "{r}", "{r}", "{r}"]])
def test_nothing_is_accepted_silently(argv, careless, tmp_path):
    code, err = careless([a.format(r=RESULT) for a in argv])
    assert code == 2
    assert not (tmp_path / "device").exists()  # device run's default folder was not made


@pytest.mark.parametrize("layout", ["missing", "empty", "partial"])
def test_qcnn_data_that_does_not_hold_the_data_is_said(layout, tmp_path, monkeypatch, capsys):
    from qcnn_lite.io import datasets

    monkeypatch.delenv("QCNN_DATA", raising=False)
    try:
        used = datasets.find_fashion_mnist()
    except datasets.DataError:
        pytest.skip("Fashion-MNIST is not installed")
    env = tmp_path / "data"
    if layout != "missing":
        env.mkdir()
    if layout == "partial":
        shutil.copy(next(used.glob("t10k-labels*")), env)
    monkeypatch.setenv("QCNN_DATA", str(env))
    note = datasets.env_data_note()
    assert note and f"QCNN_DATA={env}" in note and str(used) in note
    assert main(["data", "check"]) == 0
    err = capsys.readouterr().err
    assert f"note: QCNN_DATA={env}" in err and str(used) in err


@pytest.mark.parametrize("var, value", [("QCNN_LITE_BACKEND", "foo"), ("QCNN_LITE_TARGET", "bogus")])
def test_bad_kernel_environment(var, value):
    env = {**os.environ, var: value}
    r = subprocess.run([sys.executable, "-m", "qcnn_lite", "info"], capture_output=True, text=True, env=env,
                       timeout=60, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and var in last
    r = subprocess.run([sys.executable, "-m", "qcnn_lite", "info", "--help"], capture_output=True, text=True, env=env,
                       timeout=60, cwd=ROOT)
    assert r.returncode == 0 and "usage:" in r.stdout


def test_photo_errors_go_to_stderr_and_quote_our_limit(tmp_path, capsys):
    from qcnn_lite.io import preprocess

    _, _, photo = _fixtures(tmp_path)
    (tmp_path / "file.txt").write_text("not a photo")
    assert main(["classify", str(photo), str(tmp_path / "file.txt"), "--repeat", "1"]) == 2
    cap = capsys.readouterr()
    assert "file.txt: error:" in cap.err and "file.txt" not in cap.out and str(photo) in cap.out
    from PIL import Image

    big = tmp_path / "bomb.png"
    Image.new("1", (20_000, 20_000)).save(big)  # 400 megapixels, a few kB: Pillow's own bomb error
    with pytest.raises(preprocess.ImageError) as e:
        preprocess.load_image(big)
    assert f"{preprocess.MAX_IMAGE_PIXELS:,}" in str(e.value) and "400,000,000" in str(e.value)


@pytest.mark.parametrize("cmd", sorted(COMMANDS), ids=" ".join)
def test_help_works_with_a_bad_environment(cmd, monkeypatch, capsys):
    from qcnn_lite.kernels import dispatch

    monkeypatch.setenv("QCNN_LITE_TARGET", "bogus")
    monkeypatch.setattr(dispatch, "ENV_ERROR", "unknown target 'bogus'")
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0 and "usage:" in capsys.readouterr().out
