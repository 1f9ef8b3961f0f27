"""Uniform dequantization: a continuous density scored as a probability of discrete values.

An 8-bit image holds integers ``k`` in 0..255. A density ``p`` on real numbers gives no
probability to such a point, and a density of the grey values ``k / 255`` is unbounded (a
pixel that is always 0 can get any density). Dequantization (Theis, van den Oord & Bethge
2016, "A note on the evaluation of generative models"; Uria et al. 2013) lets the model see
``x = (k + u) / 256`` with ``u ~ U[0, 1)^D``, fresh noise on every training batch. Then
``P(k) = ∫ p((k + u) / 256) / 256^D du``, and by Jensen's inequality

    log P(k) >= E_u[log p((k + u) / 256)] - D log 256,

the *dequantization bound*, equal when ``p`` is constant on each bin. It is reported per
image in nats and as bits per dimension, ``-log P(k) / (D ln 2)``.

In general a value ``v`` that lies on a grid of spacing ``w`` (the *bin width*) is stored as
the lower edge of its bin and the model sees ``v + u w``: ``log P(v) >= E log p - D log(1/w)``
i.e. ``E log p + D log w``. 8-bit pixels have ``w = 1/256``; data with ``L`` levels
``k / (L - 1)`` have ``w = 1 / L``; a user's real-valued data may state its own ``w``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from probgen.data.base import DEQUANTIZE_MODES, Dataset
from probgen.errors import DataError

__all__ = ["dequantize", "bits_per_dim", "DEQUANTIZE_MODES"]

_HOW = ("Give its bin width (the spacing of its values) with --bin-width W (load_dataset(..., "
        "bin_width=W)), save the images as uint8 0..255, or pass --dequantize none to model the raw "
        "values (a density, which is not a likelihood of discrete data).")


def bits_per_dim(log_prob_nats: float, dim: int) -> float:
    """``-log P / (D ln 2)``: a log-probability in nats per example as bits per dimension."""
    return -log_prob_nats / (dim * math.log(2.0))


def dequantize(ds: Dataset, mode: str = "on", bin_width: float | None = None) -> Dataset:
    """``ds`` with its values stored as bin lower edges and ``bin_width`` set.

    Parameters
    ----------
    mode : {"none", "auto", "on"}
        ``"none"`` returns ``ds`` unchanged. ``"auto"`` dequantizes images and any data whose
        levels are known (8-bit pixels) or whose ``bin_width`` is given, and leaves other
        real-valued data (toy densities, float vectors) as they are; images of unknown
        levels are refused. ``"on"`` dequantizes or refuses.
    bin_width : float, optional
        Spacing of the values; each value is taken as the lower edge of its bin. Without
        it, data with known ``levels`` use ``1 / levels`` (pixels ``k / (levels - 1)`` become
        ``k / levels``).
    """
    if mode not in DEQUANTIZE_MODES:
        raise DataError(f"dequantize must be one of {', '.join(DEQUANTIZE_MODES)}; got {mode!r}.")
    if bin_width is not None and not (isinstance(bin_width, (int, float)) and math.isfinite(bin_width)
                                      and bin_width > 0):
        raise DataError(f"bin_width must be a positive number (the spacing of the data's values); "
                        f"got {bin_width!r}.")
    if mode == "none":
        if bin_width is not None:
            raise DataError("a bin width was given with dequantize='none'; drop --bin-width, or "
                            "dequantize the data (--dequantize on).")
        return ds
    if ds.bin_width is not None:
        return ds
    if ds.binarize != "none":
        if mode == "auto" and bin_width is None:
            return ds  # binary data: a probability already
        raise DataError(f"{ds.name!r} is binarised (binarize={ds.binarize!r}); binary and "
                        "dequantized data are two representations: choose one (--binarize none to "
                        "dequantize, or --dequantize none to binarise).")
    if mode == "auto" and bin_width is None and ds.levels is None and ds.kind != "image":
        return ds  # real-valued data: a density is the likelihood
    if bin_width is not None and ds.levels is not None:
        if abs(bin_width * ds.levels - 1.0) > 1e-9:
            raise DataError(f"{ds.name!r} holds {ds.levels}-level pixels, whose bin width is "
                            f"1/{ds.levels}; got bin width {bin_width}. Leave --bin-width out for "
                            "such data.")
        bin_width = None  # the levels say the same, and map k / (L - 1) to the bin edges
    if bin_width is None and ds.levels is None:
        raise DataError(f"{ds.name!r} holds values whose quantisation is unknown (not 8-bit pixels), "
                        f"so the probability of its discrete values cannot be bounded. {_HOW}")
    if tuple(ds.value_range) != (0.0, 1.0) and bin_width is None:
        raise DataError(f"dequantized pixels lie in [0, 1], but {ds.name!r} was asked for value_range "
                        f"{tuple(ds.value_range)}. Use value range 0,1 with dequantization, or "
                        "--dequantize none.")

    if bin_width is None:
        levels = int(ds.levels)
        width = 1.0 / levels

        def edge(x: torch.Tensor) -> torch.Tensor:  # k / (L - 1) -> k / L
            return (x * (levels - 1)).round_().div_(levels)
    else:
        width = float(bin_width)
        edge = lambda x: x  # noqa: E731 - the values are the lower edges
        levels = None
    return replace(ds, train=edge(ds.train).contiguous(), val=edge(ds.val).contiguous(),
                   test=edge(ds.test).contiguous(), bin_width=width, levels=levels,
                   value_range=(0.0, 1.0) if bin_width is None else ds.value_range)
