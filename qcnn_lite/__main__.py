"""``python -m qcnn_lite <command>``: the command line lives in :mod:`qcnn_lite.cli`."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
