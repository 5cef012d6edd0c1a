"""The command line, ``python -m qcnn_lite``: one subcommand per entry point of the package."""
from qcnn_lite.cli.main import main

__all__ = ["main"]
