"""``python -m qcnn_lite <command>``: the command line lives in :mod:`qcnn_lite.cli.main`."""
import sys

from qcnn_lite.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
