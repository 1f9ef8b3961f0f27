"""The registry of named data sets.

Each loader module registers its names with :func:`register`; :func:`load_dataset` looks a
name up (or treats it as a path to the user's own data), loads raw tensors, applies the
shared transforms (splits, value range, binarisation) and moves the result to the device.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from probgen.data.base import BINARIZE_MODES, Dataset, DatasetInfo
from probgen.errors import DataError, suggest

__all__ = ["register", "load_dataset", "list_datasets", "default_data_root"]

# name -> (info, loader). A loader takes keyword options (root, seed, value_range,
# binarize, download, limit) and returns a Dataset on the CPU.
_REGISTRY: dict[str, tuple[DatasetInfo, Callable[..., Dataset]]] = {}
_LOADER_MODULES = (
    "probgen.data.toy",
    "probgen.data.bundled",
    "probgen.data.images",
)


def register(info: DatasetInfo) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    """Decorator: register ``loader`` under ``info.name``."""

    def deco(loader):
        _REGISTRY[info.name] = (info, loader)
        return loader

    return deco


def _ensure_loaded() -> None:
    import importlib

    for mod in _LOADER_MODULES:
        importlib.import_module(mod)


def list_datasets() -> list[DatasetInfo]:
    """Every registered data set, in registration order."""
    _ensure_loaded()
    return [info for info, _ in _REGISTRY.values()]


def default_data_root() -> Path | None:
    """``$PROBGEN_DATA_ROOT`` if set, else ``None``."""
    root = os.environ.get("PROBGEN_DATA_ROOT")
    return Path(root) if root else None


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    device="cpu",
    seed: int = 0,
    value_range: tuple[float, float] | None = None,
    binarize: str = "none",
    download: bool = False,
    limit: int | None = None,
    dequantize: str = "none",
    bin_width: float | None = None,
) -> Dataset:
    """Load a named data set, or the user's data at a path, as tensors on ``device``.

    Parameters
    ----------
    name : str
        A registered name (see :func:`list_datasets`) or a path to an ``.npy``/``.npz``/
        ``.pt`` file or an ``ImageFolder``-style folder.
    root : path, optional
        Folder holding the files of torchvision sets (default ``$PROBGEN_DATA_ROOT``).
    seed : int
        Seeds the train/validation split and the fixed binarisation.
    value_range : (0, 1) or (-1, 1), optional
        Range of image pixels (default (0, 1)); ignored for toy and vector data.
    binarize : {"none", "fixed", "dynamic"}
        Image pixels as grey values, binarised once, or resampled on every training batch.
    download : bool
        Let torchvision download a missing image set (needs a network).
    limit : int, optional
        Keep at most this many training examples (quick runs and tests).
    dequantize : {"none", "auto", "on"}
        Uniform dequantization (:mod:`probgen.data.dequantize`): ``"auto"`` for images and
        data of known levels, ``"on"`` for any data (refused where the bin width is unknown).
    bin_width : float, optional
        The spacing of the values of data that are not 8-bit (a float array), which
        dequantization needs.
    """
    if binarize not in BINARIZE_MODES:
        raise DataError(
            f"binarize must be one of {', '.join(BINARIZE_MODES)}; got {binarize!r}."
        )
    if value_range is not None and tuple(value_range) not in ((0.0, 1.0), (-1.0, 1.0)):
        raise DataError(f"value_range must be (0, 1) or (-1, 1); got {tuple(value_range)!r}.")
    _ensure_loaded()
    opts = dict(
        root=root if root is not None else default_data_root(),
        seed=seed,
        value_range=tuple(value_range) if value_range is not None else None,
        binarize=binarize,
        download=download,
        limit=limit,
    )
    if name in _REGISTRY:
        ds = _REGISTRY[name][1](**opts)
    elif _looks_like_path(name):
        from probgen.data.user import load_user_data

        ds = load_user_data(name, **opts)
    else:
        raise DataError(
            f"unknown data set {name!r}.{suggest(name, _REGISTRY)} Known names: "
            f"{', '.join(_REGISTRY)}; or give a path to a .npy/.npz/.pt file or an image folder."
        )
    return _dequantize(ds, dequantize, bin_width).to(device)


def _dequantize(ds: Dataset, mode: str, bin_width: float | None) -> Dataset:
    from probgen.data.dequantize import dequantize

    if mode == "none" and bin_width is None:
        return ds
    return dequantize(ds, "on" if mode == "none" else mode, bin_width)


def _looks_like_path(name: str) -> bool:
    return os.sep in name or name.startswith(".") or Path(name).suffix in (".npy", ".npz", ".pt") or Path(name).exists()
