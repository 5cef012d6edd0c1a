import os

import numpy as np
import pytest

os.environ.setdefault("QCNN_PROGRESS", "0")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def rel_err(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
