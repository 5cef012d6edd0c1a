"""Where the project's files live (the source checkout when running from one, else the current folder),
and how a new file is put there without ever replacing one silently.

Notebooks run with ``notebooks/`` as their working folder and the CLI from
anywhere, so relative paths would point to different places; every default
location (results, models, data, figures) is resolved here instead.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["project_root", "results_dir", "models_dir", "model_dirs", "model_file", "create_temp_beside", "move_if_absent",
           "write_file"]


def project_root() -> Path:
    """The repository this package is installed from (editable install), else the current folder."""
    repo = Path(__file__).resolve().parents[2]  # qcnn_lite/io/paths.py -> the repository
    return repo if (repo / "pyproject.toml").is_file() else Path.cwd()


def results_dir() -> Path:
    """``<project>/results``: what ``make reproduce`` writes and the notebooks read."""
    return project_root() / "results"


def models_dir() -> Path:
    """``<project>/data/models``: the committed reference networks."""
    return project_root() / "data" / "models"


def model_dirs() -> list[Path]:
    """Where reference models are looked for: ``$QCNN_MODELS``, then ``<project>/data/models``."""
    env = os.environ.get("QCNN_MODELS")
    return ([Path(env)] if env else []) + [models_dir()]


def model_file(arch: str) -> Path:
    """The model file ``<arch>.qcnn`` from :func:`model_dirs`; FileNotFoundError says how to make it."""
    for d in model_dirs():
        p = d / f"{arch}.qcnn"
        if p.is_file():
            return p
    raise FileNotFoundError(f"{arch}.qcnn not found in {', '.join(map(str, model_dirs()))}: run `make models` "
                            f"(python -m qcnn_lite train --arch {arch})")


def create_temp_beside(path: Path) -> tuple[int, str]:
    """A new file beside path; mode 0666 minus the umask, as a plain open() would give (mkstemp gives 0600)."""
    import secrets  # here, not at the top: only save needs it, and importing it loads OpenSSL (via hmac)

    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


def move_if_absent(tmp: str, path: Path) -> None:
    """Move tmp to path only if path does not exist (a hard link is atomic and never replaces)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it") from None
    except OSError:  # filesystems without hard links: check, then replace
        if path.exists():
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def write_file(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> Path:
    """Write data to path atomically: readers see the old file or the whole new one, never a part.

    Without ``overwrite`` an existing path is never replaced (FileExistsError), even one that
    appeared while the data was being made. Returns the path written.
    """
    path = Path(path)
    fd, tmp = create_temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if overwrite:
            os.replace(tmp, path)
        else:
            move_if_absent(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
