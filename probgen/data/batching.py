"""Minibatches: the one place that orders, slices and binarises training batches.

Every training loop (SVI, the autoencoders, the GAN, one process or many) takes its batches
from :func:`batches` (through :meth:`probgen.data.Dataset.batches` for a data set), so that
they all shuffle, cut and resample pixels the same way and resume the same way.

With a ``seed``, epoch ``e`` is a function of ``(seed, e)`` alone: its order is
``randperm(n)`` from a generator seeded by :func:`derive_seed` of ``(seed, e)``, and the fresh
0/1 pixels (dynamic binarisation) or uniform noise (dequantized data) of its batch ``j`` come
from a generator seeded by ``(seed, e, j)``. A run resumed at any batch therefore sees what an
uninterrupted one would, without saving iterator or generator state.

Across ``world_size`` processes each batch of ``batch_size`` is one process's part of a
global batch of ``batch_size * world_size``: every process draws the same order, cuts the
same global batches, draws their noise whole, and keeps slice ``rank``. One step of ``N``
processes with ``B`` examples each then sees exactly the examples (and pixels) that one
process with ``N * B`` would.

Without a seed the order comes from ``generator`` (or torch's global RNG) and the noise of
successive batches from the same generator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from probgen.errors import ConfigError, DataError

__all__ = ["batches", "batch_stream", "bernoulli_pixels", "derive_seed", "epoch_seed",
           "training_batches"]

# streams of random numbers derived from one run seed (the last key of derive_seed)
_ORDER, _NOISE, _PROCESS = 1, 2, 3


_MASK = 0xFFFF_FFFF_FFFF_FFFF


def _splitmix64(z: int) -> int:
    # the finaliser of SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number
    # generators", OOPSLA 2014): a bijection of 64-bit words that mixes every input bit
    z = (z + 0x9E37_79B9_7F4A_7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D0_49BB_1331_11EB) & _MASK
    return z ^ (z >> 31)


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that is a function of the integer ``keys`` alone: each key is folded into
    the state by SplitMix64's mixing function, so that nearby keys give unrelated seeds (about
    a microsecond, cheap enough for one per batch)."""
    z = len(keys)
    for k in keys:
        z = _splitmix64(z ^ (int(k) & _MASK))
    return z >> 1


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one process's own draws in one epoch (a model's noise, Pyro's samples):
    a function of ``(seed, epoch, rank)`` alone, so that a run resumed at an epoch boundary
    draws what an uninterrupted one would."""
    return derive_seed(seed, epoch, _PROCESS, rank)


def bernoulli_pixels(p: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One Bernoulli(p) draw per value of ``p`` (values in [0, 1]) as 0/1 in ``p``'s dtype.

    ``u < p`` with ``u ~ Uniform[0, 1)``: exactly Bernoulli(p) (0 where p = 0, 1 where p = 1),
    and the same draws as ``torch.bernoulli(p, generator=generator)`` on the CPU, at a cost
    that does not depend on the values (``torch.bernoulli`` is about 3x slower on grey values
    in (0, 1); on MNIST, mostly 0 or 1, about 1.3x). ``generator`` must be on ``p``'s device.
    """
    return torch.rand(p.shape, generator=generator, dtype=p.dtype, device=p.device).lt_(p)


def _order(n: int, *, seed, epoch, generator, shuffle, device) -> torch.Tensor:
    if not shuffle:
        return torch.arange(n, device=device)
    if seed is not None:
        g = torch.Generator().manual_seed(derive_seed(seed, epoch, _ORDER))
        return torch.randperm(n, generator=g).to(device)
    gen_device = generator.device if generator is not None else "cpu"
    return torch.randperm(n, generator=generator, device=gen_device).to(device)


def batches(
    tensors: Sequence[torch.Tensor],
    batch_size: int,
    *,
    seed: int | None = None,
    epoch: int = 0,
    generator: torch.Generator | None = None,
    shuffle: bool = True,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
    start: int = 0,
    transform: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor] | None = None,
    name: str = "the data",
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Yield one epoch of minibatches of ``tensors``, cut along their first dimension.

    Parameters
    ----------
    tensors : sequence of Tensor, each (N, ...)
        Cut together: batch ``b`` is ``tuple(t[idx_b] for t in tensors)``.
    batch_size : int
        Examples per batch of this process; the global batch is ``batch_size * world_size``.
    seed, epoch : int
        With ``seed``, the order and the noise are functions of ``(seed, epoch)`` (and of
        the batch index). ``None``: the order from ``generator`` or torch's global RNG.
    generator : torch.Generator, optional
        Without ``seed``: the source of the order and of ``transform``'s noise.
    shuffle : bool
        ``False``: the stored order. A batch that holds the whole data set also comes in
        the stored order (shuffling it would change nothing but the rounding).
    rank, world_size : int
        This process's slice of each global batch.
    drop_last : bool
        Drop an incomplete last global batch (across processes every process then takes the
        same number of steps with as many examples as the others).
    start : int
        Begin at global batch ``start`` of the epoch (a run resumed mid-epoch).
    transform : callable, optional
        ``transform(x, generator) -> x`` on the first tensor of every global batch before it
        is sliced (fresh binarisation, dequantization noise); ``generator`` is seeded per
        batch with ``seed``, else the ``generator`` argument.
    name : str
        What the data are called in error messages.

    Yields
    ------
    tuple of Tensor
        This process's part of each global batch (never empty).
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer; got {batch_size!r}.")
    x = tensors[0]
    n = int(x.shape[0])
    if n == 0:
        raise DataError(f"{name} is empty: nothing to iterate over.")
    gb = batch_size * world_size
    if world_size > 1 and n < gb:
        raise ConfigError(f"{n} training examples are fewer than one global batch of {gb} "
                          f"({world_size} processes x --batch-size {batch_size}): lower "
                          "--batch-size or use fewer processes.")
    if drop_last and n < gb:
        # no full batch: iterating would silently do nothing (an epoch without a step)
        raise DataError(
            f"{name} has {n} example(s), fewer than one batch of {gb}, and drop_last=True "
            f"drops that partial batch. Use batch_size <= {n}, drop_last=False, or more data."
        )
    whole = gb >= n
    order = None if whole else _order(n, seed=seed, epoch=epoch, generator=generator,
                                      shuffle=shuffle, device=x.device)
    stop = n - (n % gb) if drop_last else n
    for j, begin in enumerate(range(start * gb, stop, gb), start=start):
        if order is None:
            part = tuple(tensors)  # the whole data set, as stored
        else:
            idx = order[begin:begin + gb]
            part = tuple(t[idx] for t in tensors)  # (<= gb, ...) the global batch
        if transform is not None:
            g = generator
            if seed is not None:
                g = torch.Generator(device=x.device).manual_seed(derive_seed(seed, epoch, _NOISE, j))
            part = (transform(part[0], g), *part[1:])
        if world_size > 1:
            part = tuple(t.tensor_split(world_size)[rank] for t in part)
        if part[0].shape[0]:
            yield part


def batch_stream(
    tensors: Sequence[torch.Tensor],
    batch_size: int,
    *,
    seed: int,
    start: int = 0,
    rank: int = 0,
    world_size: int = 1,
    transform: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor] | None = None,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Batches without end, epoch after epoch of :func:`batches` with ``drop_last=True``,
    beginning at batch ``start`` of the run. Batch ``k`` is a function of ``(seed, k)`` alone
    (epoch ``k // per_epoch``, position ``k % per_epoch``), so a run resumed at step ``k``
    continues with the batches an uninterrupted one would see (the GAN's steps)."""
    n = int(tensors[0].shape[0])
    gb = int(batch_size) * int(world_size)
    if batch_size < 1 or gb > n:
        across = f" ({world_size} processes x {batch_size})" if world_size > 1 else ""
        raise ConfigError(
            f"batch size{across} must be between 1 and the {n} training examples; got {gb}. "
            "Lower --batch-size."
        )
    per_epoch = n // gb
    epoch, pos = divmod(int(start), per_epoch)
    while True:
        yield from batches(tensors, batch_size, seed=seed, epoch=epoch, rank=rank,
                           world_size=world_size, drop_last=True, start=pos, transform=transform)
        epoch, pos = epoch + 1, 0


def training_batches(data, batch_size: int | None, *, seed: int | None = None, epoch: int = 0,
                     rank: int = 0, world_size: int = 1) -> Iterator[tuple]:
    """One pass over what a training loop was given, as tuples of positional arguments.

    ``data``: a :class:`~probgen.data.Dataset` (its train split, with its binarisation or
    dequantization noise), a tensor, a tuple of tensors cut together, or ``None`` (one empty
    tuple: a loss without data). ``batch_size=None`` takes everything at once. Across
    processes (``world_size > 1``) an incomplete last global batch is dropped.
    """
    if data is None:
        yield ()
        return
    drop_last = world_size > 1
    if hasattr(data, "batches"):
        n = int(data.train.shape[0])
        for xb in data.batches("train", batch_size or n, seed=seed, epoch=epoch, rank=rank,
                               world_size=world_size, drop_last=drop_last):
            yield (xb,)
        return
    tensors = (data,) if isinstance(data, torch.Tensor) else tuple(data)
    n = int(tensors[0].shape[0])
    yield from batches(tensors, batch_size or n, seed=seed, epoch=epoch, rank=rank,
                       world_size=world_size, drop_last=drop_last, name="the training data")
