"""Image data sets read from their standard files: ``mnist``, ``fashion-mnist``, ``cifar10``.

Where the files are looked for
------------------------------
In the data root (``root=``, ``--data-root DIR`` or ``$PROBGEN_DATA_ROOT``) or, without one,
in the download cache (``$PROBGEN_CACHE/data``, default ``~/.cache/probgen/data``). Under that
folder, in this order:

* MNIST: ``MNIST/raw/`` (torchvision's layout), ``MNIST/``, ``mnist/``, then the folder itself;
* Fashion-MNIST: ``FashionMNIST/raw/``, ``FashionMNIST/``, ``fashion-mnist/``,
  ``fashion_mnist/``, then the folder itself;
* CIFAR-10: ``cifar-10-batches-py/`` or ``cifar-10-batches-bin/`` (in the folder or under
  ``CIFAR10/``), or the archives ``cifar-10-python.tar.gz`` / ``cifar-10-binary.tar.gz``,
  read without unpacking them.

MNIST and Fashion-MNIST use the four IDX files ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each
gzip-compressed (``.gz``) or not. Nothing is unpacked or written: the bytes are parsed in
memory (about a second for MNIST). Since both sets use the same file names, the canonical
MNIST label files are recognised by their checksum, so asking for ``fashion-mnist`` in a
folder of MNIST files is an error rather than a silent mix-up.

Splits
------
The official test split is the test split. The validation split is 5,000 training images
(10% of the training set when it has fewer than 50,000) drawn with the seed; the rest, in
seeded order, is the training split (so ``limit`` keeps a seeded random subset). MNIST:
55,000 / 5,000 / 10,000; CIFAR-10: 45,000 / 5,000 / 10,000.

With ``download=True`` a missing set is fetched by torchvision into the data root (or the
cache), where the next load finds it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from probgen.data.base import DatasetInfo
from probgen.data.formats import (
    read_bytes,
    read_cifar_binary,
    read_cifar_pickle,
    read_idx,
    read_tar_members,
)
from probgen.data.registry import register
from probgen.data.transforms import check_seed, holdout, make_dataset, pixels_to_unit
from probgen.errors import DataError, DataNotFoundError

__all__ = ["cache_dir", "find_idx_files", "load_idx_set", "load_cifar10", "val_size"]

_IDX_FILES = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}
# MD5 of the uncompressed canonical MNIST label files (train, test).
_MNIST_LABEL_MD5 = {"a25bea736e30d166cdddb491f175f624", "27ae3e4e09519cfbb04c329615203637"}
_CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def cache_dir() -> Path:
    """Where downloads go without a data root: ``$PROBGEN_CACHE/data`` or ``~/.cache/probgen/data``."""
    base = os.environ.get("PROBGEN_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "probgen") / "data"


def val_size(n_train: int) -> int:
    """Validation images taken from an official training set of ``n_train`` images."""
    return 5_000 if n_train >= 50_000 else max(1, n_train // 10)


@dataclass(frozen=True)
class _IdxSet:
    name: str                   # registry name
    title: str                  # for messages
    torchvision_class: str      # torchvision.datasets class that downloads it
    subdirs: tuple[str, ...]    # folders under the root, tried in order ("" = the root itself)
    classes: tuple[str, ...]
    source: str


_MNIST = _IdxSet(
    "mnist", "MNIST", "MNIST", ("MNIST/raw", "MNIST", "mnist", ""),
    tuple(str(i) for i in range(10)),
    "MNIST IDX files from the data root (LeCun et al., 1998)",
)
_FASHION = _IdxSet(
    "fashion-mnist", "Fashion-MNIST", "FashionMNIST",
    ("FashionMNIST/raw", "FashionMNIST", "fashion-mnist", "fashion_mnist", ""),
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
     "Ankle boot"),
    "Fashion-MNIST IDX files from the data root (Xiao et al., 2017)",
)


# ----------------------------------------------------------------------------- finding files
def _roots(root, download: bool = False) -> list[Path]:
    if root is not None:
        root = Path(root).expanduser()
        if not root.is_dir() and not download:
            raise DataNotFoundError(
                f"the data root {root} does not exist or is not a folder. Give the folder that "
                "holds the data set's files with --data-root DIR or PROBGEN_DATA_ROOT."
            )
        return [root]
    return [cache_dir()]


def _find_one(folder: Path, stems: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for name in (stem, stem + ".gz"):
            p = folder / name
            if p.is_file():
                return p
    return None


def find_idx_files(spec: _IdxSet, root, download: bool = False) -> dict[str, Path] | tuple[Path, list[str]]:
    """The four IDX files of ``spec`` under ``root``: a dict, or ``(best folder, missing)``."""
    best: tuple[Path, list[str]] | None = None
    for r in _roots(root, download):
        for sub in spec.subdirs:
            folder = r / sub if sub else r
            if not folder.is_dir():
                continue
            found = {k: _find_one(folder, stems) for k, stems in _IDX_FILES.items()}
            missing = [stems[0] for k, stems in _IDX_FILES.items() if found[k] is None]
            if not missing:
                return found
            if best is None or len(missing) < len(best[1]):
                best = (folder, missing)
    return best if best is not None else (_roots(root, download)[0], [s[0] for s in _IDX_FILES.values()])


def _not_found(title: str, name: str, where: list[Path], expected: list[str], partial: Path | None,
               missing: list[str]) -> DataNotFoundError:
    places = ", ".join(str(p) for p in where)
    if partial is not None and len(missing) < len(expected):
        head = f"{title} is incomplete in {partial}: missing {', '.join(missing)} (each may end in .gz)."
    else:
        head = (f"{title} files not found. Looked for {', '.join(expected)} (each may end in .gz) "
                f"in: {places}.")
    return DataNotFoundError(
        f"{head} Put the files in a folder and pass it with --data-root DIR (or set "
        f"PROBGEN_DATA_ROOT, or root= in Python), or fetch them where a network exists with "
        f"load_dataset({name!r}, download=True)."
    )


def _download(spec_class: str, root, title: str) -> None:
    """Let torchvision fetch a data set into ``root`` (or the cache); errors become ours."""
    import torchvision.datasets as tvd

    target = Path(root).expanduser() if root is not None else cache_dir()
    try:
        target.mkdir(parents=True, exist_ok=True)
        getattr(tvd, spec_class)(root=str(target), train=True, download=True)
    except Exception as e:  # network, disk and checksum errors all mean: not available
        raise DataNotFoundError(
            f"downloading {title} into {target} failed ({type(e).__name__}: {e}). Without a "
            "network, copy the files into a folder and pass it with --data-root DIR or "
            "PROBGEN_DATA_ROOT."
        ) from e


# ----------------------------------------------------------------------------- MNIST-like sets
def _read_idx_pair(images: Path, labels: Path, n_classes: int, title: str,
                   forbid_mnist_labels: bool) -> tuple[np.ndarray, np.ndarray]:
    label_bytes = read_bytes(labels)
    if forbid_mnist_labels and hashlib.md5(label_bytes).hexdigest() in _MNIST_LABEL_MD5:
        raise DataError(
            f"{labels} is the label file of MNIST, not of {title}: the folder holds MNIST. "
            f"Put the {title} files in their own folder (e.g. <root>/FashionMNIST/raw)."
        )
    y = read_idx(labels, ndim=1, data=label_bytes)
    x = read_idx(images, ndim=3)
    if x.dtype != np.uint8 or y.dtype != np.uint8:
        raise DataError(f"{images} and {labels} must hold unsigned bytes; got {x.dtype} and {y.dtype}.")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{images} holds {x.shape[0]:,} images but {labels} holds {y.shape[0]:,} labels.")
    if x.shape[1:] != (28, 28):
        raise DataError(f"{images} holds images of size {x.shape[1:]}; {title} images are 28 x 28.")
    if y.size and int(y.max()) >= n_classes:
        raise DataError(f"{labels} holds label {int(y.max())}; {title} labels are 0..{n_classes - 1}.")
    return x, y


def load_idx_set(spec: _IdxSet, *, root=None, seed=0, value_range=None, binarize="none",
                 download=False, limit=None):
    """Load an MNIST-like data set from its four IDX files (see the module docstring)."""
    seed = check_seed(seed)
    found = find_idx_files(spec, root, download)
    if not isinstance(found, dict) and download:
        _download(spec.torchvision_class, root, spec.title)
        found = find_idx_files(spec, root)
    if not isinstance(found, dict):
        folder, missing = found
        expected = [s[0] for s in _IDX_FILES.values()]
        where = [r / s if s else r for r in _roots(root) for s in spec.subdirs]
        raise _not_found(spec.title, spec.name, where, expected, folder, missing)

    forbid = spec is not _MNIST
    xtr, ytr = _read_idx_pair(found["train_images"], found["train_labels"], len(spec.classes),
                              spec.title, forbid)
    xte, yte = _read_idx_pair(found["test_images"], found["test_labels"], len(spec.classes),
                              spec.title, forbid)
    return _finish_official(spec.name, xtr, ytr, xte, yte, seed=seed, value_range=value_range,
                            binarize=binarize, limit=limit, classes=spec.classes,
                            source=f"{spec.title} IDX files in {found['train_images'].parent}",
                            files=[str(p) for p in found.values()])


def _finish_official(name, xtr, ytr, xte, yte, *, seed, value_range, binarize, limit, classes,
                     source, files):
    """Seeded validation split from the official training set; uint8 -> float in [0, 1]."""
    if xtr.shape[0] < 2:
        raise DataError(f"the training files of {name!r} hold {xtr.shape[0]} image(s); at least 2 are needed.")
    if xtr.ndim == 3:
        xtr, xte = xtr[:, None], xte[:, None]  # (N, H, W) -> (N, 1, H, W)
    train_idx, val_idx = (i.numpy() for i in holdout(xtr.shape[0], val_size(xtr.shape[0]), seed, "val-split"))
    labels = lambda y: torch.from_numpy(np.asarray(y, dtype=np.int64))  # noqa: E731
    return make_dataset(
        name,
        train=pixels_to_unit(xtr[train_idx]), val=pixels_to_unit(xtr[val_idx]),
        test=pixels_to_unit(xte),
        train_labels=labels(ytr[train_idx]), val_labels=labels(ytr[val_idx]), test_labels=labels(yte),
        kind="image", pixels=True, seed=seed, value_range=value_range, binarize=binarize,
        limit=limit, num_classes=len(classes), source=source, levels=256,
        extra={"classes": list(classes), "files": files},
    )


# ----------------------------------------------------------------------------- CIFAR-10
_CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                  "truck")


def _find_cifar(root, download: bool = False):
    """``("py"|"bin", folder or archive)`` for the first CIFAR-10 copy found, else ``None``."""
    for r in _roots(root, download):
        for base in (r, r / "CIFAR10", r / "cifar10", r / "cifar-10"):
            for kind, folder, archive in (("py", "cifar-10-batches-py", "cifar-10-python.tar.gz"),
                                          ("bin", "cifar-10-batches-bin", "cifar-10-binary.tar.gz")):
                if (base / folder).is_dir():
                    return kind, base / folder
                if (base / archive).is_file():
                    return kind, base / archive
    return None


def load_cifar10(*, root=None, seed=0, value_range=None, binarize="none", download=False, limit=None):
    """Load CIFAR-10 from its Python or binary batches (see the module docstring)."""
    seed = check_seed(seed)
    found = _find_cifar(root, download)
    if found is None and download:
        _download("CIFAR10", root, "CIFAR-10")
        found = _find_cifar(root)
    if found is None:
        where = ", ".join(str(r) for r in _roots(root))
        raise DataNotFoundError(
            f"CIFAR-10 files not found: looked for cifar-10-batches-py/, cifar-10-batches-bin/, "
            f"cifar-10-python.tar.gz or cifar-10-binary.tar.gz in {where} (and its CIFAR10/ "
            "folder). Pass the folder that holds one of them with --data-root DIR (or set "
            "PROBGEN_DATA_ROOT), or fetch it where a network exists with "
            "load_dataset('cifar10', download=True)."
        )
    kind, where = found
    names = _CIFAR_BATCHES if kind == "py" else [f"{b}.bin" for b in _CIFAR_BATCHES]
    read = read_cifar_pickle if kind == "py" else read_cifar_binary
    if where.is_dir():
        missing = [n for n in names if not (where / n).is_file()]
        if missing:
            raise DataNotFoundError(f"CIFAR-10 is incomplete in {where}: missing {', '.join(missing)}.")
        parts = [read(where / n) for n in names]
    else:
        blobs = read_tar_members(where, names)
        parts = [read(where / n, data=blobs[n]) for n in names]
    for (_, y), n in zip(parts, names):
        if y.size and (int(y.min()) < 0 or int(y.max()) > 9):
            raise DataError(f"{where / n} holds label {int(y.max())}; CIFAR-10 labels are 0..9.")
    xtr = np.concatenate([p[0] for p in parts[:-1]])  # (50000, 3, 32, 32)
    ytr = np.concatenate([p[1] for p in parts[:-1]])
    xte, yte = parts[-1]
    return _finish_official("cifar10", xtr, ytr, xte, yte, seed=seed, value_range=value_range,
                            binarize=binarize, limit=limit, classes=_CIFAR_CLASSES,
                            source=f"CIFAR-10 batches in {where}", files=[str(where)])


# ----------------------------------------------------------------------------- registry
register(DatasetInfo(
    name="mnist", shape=(1, 28, 28), size="55,000 + 5,000 + 10,000",
    source="MNIST IDX files: --data-root, PROBGEN_DATA_ROOT or download", kind="image",
    description="handwritten digits 0-9, 28 x 28 grey (LeCun et al., 1998)",
))(lambda **opts: load_idx_set(_MNIST, **opts))

register(DatasetInfo(
    name="fashion-mnist", shape=(1, 28, 28), size="55,000 + 5,000 + 10,000",
    source="Fashion-MNIST IDX files: --data-root, PROBGEN_DATA_ROOT or download", kind="image",
    description="Zalando clothing images in 10 classes, 28 x 28 grey (Xiao et al., 2017)",
))(lambda **opts: load_idx_set(_FASHION, **opts))

register(DatasetInfo(
    name="cifar10", shape=(3, 32, 32), size="45,000 + 5,000 + 10,000",
    source="CIFAR-10 batches: --data-root, PROBGEN_DATA_ROOT or download", kind="image",
    description="natural images in 10 classes, 32 x 32 colour (Krizhevsky, 2009)",
))(load_cifar10)
