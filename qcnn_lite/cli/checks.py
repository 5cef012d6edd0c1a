"""The command line's checks of arguments, paths and environment, made before any work starts.

Every option of ``python -m qcnn_lite`` is parsed by one of the type functions here, so a bad
value stops the command at once with a one-line message naming the option, and a long run never
ends on a mistake that was visible at the start. Paths are looked at with ``os.stat`` only: a FIFO
or a device is refused without being opened (opening a FIFO blocks until a writer appears).
"""
from __future__ import annotations

import argparse
import math
import os
import re
import stat
from pathlib import Path
from typing import Any, Callable, Iterable

__all__ = [
    "UsageError", "Parser", "int_in", "float_in", "names", "choice_list", "input_file", "input_dir",
    "input_file_or_dir", "output_file", "output_dir", "OutputPath", "check_outputs", "env_problem",
    "MAX_INPUT_BYTES",
]

#: Largest input file read (model, photo, results file): far above any real one, far below a disk image.
MAX_INPUT_BYTES = 2 * 2**30


class UsageError(Exception):
    """A wrong argument, path or environment: the command did no work; exit code 2."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``error: --opt: what is wrong``), raised, not printed."""

    def error(self, message: str) -> None:  # type: ignore[override]
        m = re.fullmatch(r"argument ([^:]+): (.*)", message, re.S)
        if m:
            opt, msg = m.group(1).split("/")[0], m.group(2)
            # A positional's message from this module already names the file; an option's gets its name.
            if not opt.startswith("-") and _NAMES_FILE.match(msg) and not msg.startswith("is "):
                message = msg
            else:
                message = f"{opt} {msg}" if msg.startswith("must") else f"{opt}: {msg}"
        raise UsageError(" ".join(message.split()))


_NAMES_FILE = re.compile(r"\S+(:| is| does| cannot| has)\s")  # "x.json: ...", "x.json is a folder ..."


def _show(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


# --------------------------------------------------------------------------- numbers
def int_in(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: a whole number from lo to hi (hi keeps a typo from running for days)."""
    def parse(text: str) -> int:
        try:
            v = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {_show(text)}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        if v > hi:
            raise argparse.ArgumentTypeError(f"must be <= {hi}, got {v}")
        return v
    parse.__name__ = "int"
    return parse


def float_in(lo: float, hi: float, lo_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number from lo (excluded when lo_open) to hi."""
    def parse(text: str) -> float:
        try:
            v = float(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {_show(text)}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {_show(text)}")
        if v < lo or (lo_open and v == lo):
            raise argparse.ArgumentTypeError(f"must be {'>' if lo_open else '>='} {lo:g}, got {v:g}")
        if v > hi:
            raise argparse.ArgumentTypeError(f"must be <= {hi:g}, got {v:g}")
        return v
    parse.__name__ = "float"
    return parse


# --------------------------------------------------------------------------- names
def names(check: Callable[[str], Any], what: str, example: str) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated list of at least one name, each accepted by ``check``
    (which raises ValueError for an unknown name); repeats are dropped."""
    def parse(text: str) -> list[str]:
        got = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
        if not got:
            raise argparse.ArgumentTypeError(f"must name at least one {what}, e.g. {example}")
        for n in got:
            try:
                check(n)
            except ValueError as e:
                raise argparse.ArgumentTypeError(str(e).split("\n")[0]) from None
        return got
    parse.__name__ = "names"
    return parse


def choice_list(known: Iterable[str], what: str) -> Callable[[str], list[str]]:
    """:func:`names` for a fixed set of names."""
    known = tuple(known)

    def check(n: str) -> None:
        if n not in known:
            raise ValueError(f"unknown {what} {_show(n)}: use {', '.join(known)}")
    return names(check, what, ",".join(known[:2]))


# --------------------------------------------------------------------------- input paths
def _stat(text: str) -> tuple[Path, os.stat_result]:
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a path")
    p = Path(text)
    try:
        return p, os.stat(p)
    except FileNotFoundError:
        raise argparse.ArgumentTypeError(f"{p}: No such file or directory") from None
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{p} cannot be read: {e.strerror or e}") from None


def _regular(p: Path, st: os.stat_result, max_bytes: int) -> Path:
    if stat.S_ISDIR(st.st_mode):
        raise argparse.ArgumentTypeError(f"{p} is a folder: give a file")
    if not stat.S_ISREG(st.st_mode):
        raise argparse.ArgumentTypeError(f"{p} is not a regular file (a FIFO, device or socket): give a file")
    if st.st_size == 0:
        raise argparse.ArgumentTypeError(f"{p} is empty: give a file with data in it")
    if st.st_size > max_bytes:
        raise argparse.ArgumentTypeError(f"{p} is {st.st_size:,} bytes, more than the {max_bytes:,} read here")
    if not os.access(p, os.R_OK):
        raise argparse.ArgumentTypeError(f"{p} cannot be read: permission denied")
    return p


# The input types return the text as given, so that messages and answers show the user's own spelling.
def input_file(max_bytes: int = MAX_INPUT_BYTES) -> Callable[[str], str]:
    """An argparse type: an existing, readable, non-empty regular file of at most max_bytes."""
    def parse(text: str) -> str:
        _regular(*_stat(text), max_bytes)
        return text
    parse.__name__ = "file"
    return parse


def _folder(p: Path, st: os.stat_result) -> Path:
    if not stat.S_ISDIR(st.st_mode):
        raise argparse.ArgumentTypeError(f"{p} is not a folder: give a folder")
    if not os.access(p, os.R_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{p} cannot be read: permission denied")
    return p


def input_dir(text: str) -> str:
    """An argparse type: an existing, readable folder."""
    _folder(*_stat(text))
    return text


def input_file_or_dir(text: str) -> str:
    """An argparse type: an input file (as :func:`input_file`) or a readable folder."""
    p, st = _stat(text)
    _folder(p, st) if stat.S_ISDIR(st.st_mode) else _regular(p, st, MAX_INPUT_BYTES)
    return text


# --------------------------------------------------------------------------- output paths
class OutputPath(type(Path())):  # type: ignore[misc]
    """A checked output file; :func:`check_outputs` refuses it if it exists and --force was not given."""


def _writable_folder(d: Path) -> None:
    if not d.is_dir():
        raise argparse.ArgumentTypeError(f"{d} does not exist: create the folder first or choose another")
    if not os.access(d, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{d} is not writable: choose another folder")


def output_file(suffix: str | None = None) -> Callable[[str], OutputPath]:
    """An argparse type: a new file in an existing, writable folder.

    ``suffix`` (``".png"``) is added when the name lacks it, before any check, because the writer
    would add it anyway: the file checked is the file written.
    """
    def parse(text: str) -> OutputPath:
        if not text.strip():
            raise argparse.ArgumentTypeError("is empty: give a file name")
        p = Path(text)
        if p.is_dir() or text.endswith(os.sep):
            raise argparse.ArgumentTypeError(f"{p} is a folder: give a file name, e.g. {p / ('out' + (suffix or ''))}")
        if suffix and p.suffix.lower() != suffix:
            p = p.with_name(p.name + suffix)
        if p.is_dir():
            raise argparse.ArgumentTypeError(f"{p} is a folder: give another file name")
        _writable_folder(p.parent)
        return OutputPath(p)
    parse.__name__ = "output file"
    return parse


def output_dir(text: str) -> Path:
    """An argparse type: a folder to write into; it may not exist yet if its nearest existing parent is writable."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a folder")
    p = Path(text)
    d = p
    while not d.exists():
        if d.is_symlink() or d.parent == d:
            raise argparse.ArgumentTypeError(f"{p} cannot be created: choose another folder")
        d = d.parent
    if not d.is_dir():
        raise argparse.ArgumentTypeError(f"{d} is not a folder: choose another output folder")
    if not os.access(d, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{d} is not writable: choose another folder")
    return p


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse every output file that exists, unless the command has --force and it was given."""
    force = bool(getattr(args, "force", False))
    for key, value in vars(args).items():
        if not isinstance(value, OutputPath) or not os.path.lexists(value):
            continue
        if not value.is_file():
            raise UsageError(f"--{key.replace('_', '-')}: {value} exists and is not a regular file: choose another name")
        if not force:
            hint = "pass --force to replace it" if hasattr(args, "force") else "remove it first"
            raise UsageError(f"--{key.replace('_', '-')}: {value} already exists: choose another name or {hint}")


# --------------------------------------------------------------------------- environment
def env_problem() -> str | None:
    """What is wrong with QCNN_LITE_BACKEND / QCNN_LITE_TARGET (recorded when the package was imported), or None."""
    from qcnn_lite.kernels import dispatch

    problem = dispatch.ENV_ERROR
    if problem and dispatch.ENV_BACKEND not in problem:  # a bad target: its message names the value only
        problem = f"QCNN_LITE_TARGET={os.environ.get('QCNN_LITE_TARGET', '')!r}: {problem}"
    return problem
