import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# The full MNIST files, laid beside the repository (see README: data).
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"


# One intra-op thread: the tests use small tensors, for which a second thread costs more than
# it gives (and on a busy machine, far more).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _reset_global_state():
    """Fresh Pyro parameter store and seeds before every test."""
    import pyro

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture
def mnist_root():
    """Folder with the four MNIST files; tests that need it skip where it is absent."""
    root = Path(os.environ.get("PROBGEN_TEST_MNIST", SHARED_MNIST))
    if not (root / "train-images-idx3-ubyte.gz").exists() and not (root / "train-images-idx3-ubyte").exists():
        pytest.skip(f"MNIST files not found in {root}")
    return root


@pytest.fixture
def wide_scales(tmp_path):
    """An .npy of 400 real-valued 6-D vectors on a 2-D subspace whose features have scales
    from 0.1 to 1000 and offsets up to 700 (as raw tabular features do); returns its path."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, 2))
    x = z @ rng.normal(size=(2, 6)) + 0.1 * rng.normal(size=(400, 6))
    x = x * np.array([1, 10, 100, 1000, 0.1, 5]) + np.array([0, 50, -200, 700, 1, 3])
    path = tmp_path / "wide.npy"
    np.save(path, x.astype(np.float32))
    return str(path)
