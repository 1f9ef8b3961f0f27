"""Transforms shared by every loader: seeded splits, pixel scaling, value range, binarisation.

Seeds
-----
Everything random in the data layer draws from its own stream, derived from a seed and a
purpose with :func:`stream` (NumPy's ``SeedSequence``), so that changing the validation split
never changes a binarisation and the other way round. Two kinds of stream exist:

* streams of the user's ``seed``: which training examples become the validation split, the
  order of the training split (so that ``limit`` keeps a seeded random subset), the fixed
  binarisation of the training split, and the draws of toy training and validation data;
* streams of :data:`FIXED_SEED`, which never change: the test split of data sets that have
  no official one, toy test data, and the one binarisation of the validation and test
  splits. Scores on the test split are therefore comparable across seeds and runs.

Binarisation
------------
``"fixed"`` draws one Bernoulli(pixel) sample per pixel once; ``"dynamic"`` keeps the grey
values of the training split and draws afresh on every training batch
(:meth:`probgen.data.Dataset.batches`). Both follow the stochastic binarisation of
Salakhutdinov and Murray, "On the quantitative analysis of deep belief networks" (ICML
2008), used by Burda et al. (2015) for the IWAE results on MNIST.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from probgen.data.base import BINARIZE_MODES, Dataset
from probgen.errors import DataError

__all__ = [
    "FIXED_SEED",
    "VALUE_RANGES",
    "stream",
    "check_seed",
    "holdout",
    "fixed_test_split",
    "split_sizes",
    "pixels_to_unit",
    "to_value_range",
    "binarize_once",
    "check_finite",
    "check_limit",
    "make_dataset",
]

FIXED_SEED = 20_151_019
"""Seed of the streams that must not depend on the user's seed (see the module docstring)."""

VALUE_RANGES = ((0.0, 1.0), (-1.0, 1.0))

# purpose -> a distinct integer mixed into the seed, one per use of randomness
_PURPOSES = {
    "val-split": 1,
    "test-split": 2,
    "binarize-train": 3,
    "binarize-val": 4,
    "binarize-test": 5,
    "toy-train": 6,
    "toy-val": 7,
    "toy-test": 8,
}


def check_seed(seed) -> int:
    """Return ``seed`` as a Python int, or raise :class:`DataError` for a non-integer."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise DataError(f"seed must be an integer; got {seed!r} ({type(seed).__name__}).")
    return int(seed)


def stream(seed: int, purpose: str) -> torch.Generator:
    """A CPU ``torch.Generator`` for one ``purpose``, seeded from ``seed``.

    Different purposes give independent streams for the same seed (``SeedSequence`` mixes
    the pair), and the same pair always gives the same stream.
    """
    seed = check_seed(seed) % 2**64
    words = np.random.SeedSequence([seed, _PURPOSES[purpose]]).generate_state(2, np.uint32)
    g = torch.Generator()
    g.manual_seed(int(words[0]) | (int(words[1]) << 32))
    return g


def split_sizes(n: int, *, val_fraction: float = 0.1, test_fraction: float = 0.2) -> tuple[int, int, int]:
    """Train/validation/test sizes for data with no official split (each at least 1).

    Parameters
    ----------
    n : int
        Number of examples.
    val_fraction, test_fraction : float
        Fractions of ``n`` for the validation and test splits, rounded, at least one each.

    Returns
    -------
    (n_train, n_val, n_test) : tuple of int
    """
    n_test = max(1, round(test_fraction * n))
    n_val = max(1, round(val_fraction * n))
    return n - n_val - n_test, n_val, n_test


def holdout(n: int, n_out: int, seed: int, purpose: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n)`` into ``(keep, out)`` index tensors, ``len(out) == n_out``.

    Both come in the order of one seeded permutation, so ``keep[:k]`` is a random subset.
    """
    perm = torch.randperm(n, generator=stream(seed, purpose))
    return perm[n_out:], perm[:n_out]


def fixed_test_split(n: int, *, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0,
                     what: str = "the data") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices ``(train, val, test)`` for data with no official split.

    The test indices depend only on ``n`` (a stream of :data:`FIXED_SEED`); the validation
    indices are drawn from the rest with ``seed``.
    """
    if n < 3:
        raise DataError(
            f"{what} has {n} example(s); at least 3 are needed so that the train, validation "
            "and test splits are each non-empty."
        )
    _, n_val, n_test = split_sizes(n, val_fraction=val_fraction, test_fraction=test_fraction)
    rest, test = holdout(n, n_test, FIXED_SEED, "test-split")
    keep, val = holdout(rest.numel(), n_val, seed, "val-split")
    return rest[keep], rest[val], test


def pixels_to_unit(x) -> torch.Tensor:
    """Integer pixels in 0..255 (NumPy or torch) -> float32 tensor in [0, 1]."""
    if isinstance(x, np.ndarray):
        x = np.ascontiguousarray(x)
        # arrays read from file bytes are read-only; torch wants memory it may write to
        t = torch.from_numpy(x if x.flags.writeable else x.copy())
    else:
        t = x
    return t.to(torch.float32).div_(255.0)


def to_value_range(x: torch.Tensor, value_range) -> torch.Tensor:
    """Map values in [0, 1] to ``value_range``: (0, 1) unchanged, (-1, 1) as ``2 x - 1``."""
    value_range = tuple(float(v) for v in value_range)
    if value_range == (0.0, 1.0):
        return x
    if value_range == (-1.0, 1.0):
        return x.mul(2.0).sub_(1.0)
    raise DataError(f"value_range must be (0, 1) or (-1, 1); got {value_range!r}.")


def binarize_once(x: torch.Tensor, seed: int, purpose: str) -> torch.Tensor:
    """One Bernoulli(x) draw per value of ``x`` (values in [0, 1]), from a seeded stream."""
    return torch.bernoulli(x, generator=stream(seed, purpose))


def check_finite(x: torch.Tensor, what: str) -> None:
    """Raise :class:`DataError` naming ``what`` if ``x`` holds NaN or infinite values."""
    if not x.is_floating_point():
        return
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(bad.sum()) - n_nan
        first = int(bad.reshape(bad.shape[0], -1).any(dim=1).nonzero()[0, 0]) if x.dim() > 0 else 0
        raise DataError(
            f"{what} holds {n_nan} NaN and {n_inf} infinite value(s) (first in example {first}). "
            "Remove or impute those examples before loading."
        )


def check_limit(limit) -> int | None:
    """``None`` or a positive int; anything else is a :class:`DataError`."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1:
        raise DataError(f"limit must be a positive number of training examples or None; got {limit!r}. "
                        "Give --limit N with N >= 1, or leave --limit out to use every example.")
    return int(limit)


def make_dataset(
    name: str,
    *,
    train: torch.Tensor,
    val: torch.Tensor,
    test: torch.Tensor,
    train_labels: torch.Tensor | None = None,
    val_labels: torch.Tensor | None = None,
    test_labels: torch.Tensor | None = None,
    kind: str,
    pixels: bool,
    seed: int,
    value_range=None,
    binarize: str = "none",
    limit: int | None = None,
    num_classes: int | None = None,
    density=None,
    source: str = "",
    extra: dict | None = None,
    levels: int | None = None,
) -> Dataset:
    """Apply the shared options and build the :class:`~probgen.data.Dataset` (on the CPU).

    Parameters
    ----------
    train, val, test : Tensor, shape (N, *shape), float32
        With ``pixels=True``: grey values in [0, 1]. Otherwise the data as they are.
    pixels : bool
        Whether ``value_range`` and ``binarize`` apply. For other data ``value_range`` is
        ignored (the record holds the data's own range) and ``binarize`` is refused unless
        every value lies in [0, 1].
    limit : int, optional
        Keep the first ``limit`` training examples (the loaders put them in seeded order).
    levels : int, optional
        With ``pixels=True``: the pixels are ``k / (levels - 1)`` for integers ``k`` (256 for
        8-bit images); what dequantization needs (:mod:`probgen.data.dequantize`).
    """
    if binarize not in BINARIZE_MODES:
        raise DataError(f"binarize must be one of {', '.join(BINARIZE_MODES)}; got {binarize!r}.")
    limit = check_limit(limit)
    for split, x in (("train", train), ("val", val), ("test", test)):
        if x.shape[0] == 0:
            raise DataError(
                f"the {split} split of {name!r} is empty. Give more examples (at least 3 when the "
                "data set has no split of its own) or a non-empty array for that split."
            )
    if limit is not None:
        train = train[:limit]
        train_labels = None if train_labels is None else train_labels[:limit]

    if pixels:
        value_range = (0.0, 1.0) if value_range is None else tuple(float(v) for v in value_range)
        if binarize != "none" and value_range != (0.0, 1.0):
            raise DataError(
                f"binarize={binarize!r} gives 0/1 pixels, which do not fit value_range="
                f"{value_range!r}. Use value_range (0, 1) with binarisation, or binarize='none'."
            )
    elif binarize != "none":
        lo = min(float(t.min()) for t in (train, val, test))
        hi = max(float(t.max()) for t in (train, val, test))
        if lo < 0.0 or hi > 1.0:
            whole = all(torch.equal(t, t.round()) for t in (train, val, test))
            pixels_hint = (" If they are 0..255 pixels, divide them by 255 (or save them as uint8, "
                           "which is read as pixels) and keep the binarisation."
                           if lo >= 0 and hi <= 255 and whole else "")
            counts_hint = (", and --bin-width 1 to score log P of these integer values (counts)"
                           if whole else "")
            raise DataError(
                f"binarize={binarize!r} (--binarize) draws Bernoulli(value) and needs values in "
                f"[0, 1], but {name!r} ({kind} data) holds values in [{lo:.4g}, {hi:.4g}].{pixels_hint} "
                "Otherwise use binarize='none' (--binarize none) with a model for real values "
                f"(e.g. a Gaussian likelihood){counts_hint}."
            )

    if binarize == "fixed":
        train = binarize_once(train, seed, "binarize-train")
    if binarize in ("fixed", "dynamic"):
        val = binarize_once(val, FIXED_SEED, "binarize-val")
        test = binarize_once(test, FIXED_SEED, "binarize-test")

    if pixels:
        # 0/1 pixels stay 0/1 (value_range is (0, 1) whenever binarize != "none")
        train, val, test = (to_value_range(t, value_range) for t in (train, val, test))
    else:
        value_range = (float(train.min()), float(train.max()))

    return Dataset(
        name=name,
        train=train.contiguous(),
        val=val.contiguous(),
        test=test.contiguous(),
        shape=tuple(train.shape[1:]),
        kind=kind,
        value_range=value_range,
        binarize=binarize,
        train_labels=train_labels,
        val_labels=val_labels,
        test_labels=test_labels,
        num_classes=num_classes,
        density=density,
        source=source,
        extra=dict(extra or {}),
        levels=levels if pixels and binarize == "none" else None,
    )
