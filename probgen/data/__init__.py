"""Named data sets -> tensors on a device.

>>> from probgen.data import load_dataset, list_datasets
>>> ds = load_dataset("grid25", seed=0)
>>> ds.train.shape, ds.density.log_prob(ds.test).mean()

Names: see :func:`list_datasets` (``probgen datasets`` prints the same table). A path to
an array file (``.npy``, ``.npz``, ``.pt``) or to a folder of images in torchvision's
``ImageFolder`` layout loads the user's own data.
"""

from probgen.data.base import BINARIZE_MODES, DEQUANTIZE_MODES, SPLITS, Dataset, DatasetInfo
from probgen.data.fingerprint import data_fingerprint, fingerprint_changes
from probgen.data.registry import list_datasets, load_dataset, register

__all__ = [
    "Dataset",
    "DatasetInfo",
    "SPLITS",
    "BINARIZE_MODES",
    "DEQUANTIZE_MODES",
    "load_dataset",
    "list_datasets",
    "register",
    "data_fingerprint",
    "fingerprint_changes",
]
