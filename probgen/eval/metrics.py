"""One results schema for every model.

A metric is ``{"value", "stderr", "unit"}`` (and ``"reason"`` when it cannot be had, with
``value`` ``None``). Per-example quantities are summarised as their mean with the standard
error of the mean over examples.

Every likelihood also says what it is a likelihood of and how it was estimated, so that
numbers on different scales never share a column or a paired difference:

``representation``
    ``"binary"`` (0/1 pixels: a probability), ``"dequantized-8bit"`` (or
    ``"dequantized-L-level"``, ``"dequantized"``: a lower bound on the probability of the
    discrete values, see :mod:`probgen.data.dequantize`), ``"raw-pixels"`` (a density of
    grey values: not a likelihood of images) or ``"continuous"`` (a density of real-valued
    data, e.g. toy sets).
``estimator``
    ``"exact"``, ``"elbo"``, ``"iwae-K"``, ``"ais"``, ``"parzen"``; on dequantized data
    ``"dequantization bound"``, with the estimate of ``log p`` it averages over the noise in
    ``inner_estimator``.
``bits_per_dim``, ``bits_per_dim_stderr``
    ``-value / (D ln 2)`` and its standard error, for the discrete representations (binary
    and dequantized): the unit the field uses for images.
``unit``
    ``"nats"`` for every likelihood, per example.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: the command line imports this package
    import torch

__all__ = ["Metric", "summarize", "unavailable"]


@dataclass
class Metric:
    value: float | None
    stderr: float | None = None
    unit: str = ""
    reason: str | None = None
    extra: dict | None = None
    representation: str | None = None
    estimator: str | None = None
    inner_estimator: str | None = None
    bits_per_dim: float | None = None
    bits_per_dim_stderr: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("reason", "extra", "representation", "estimator", "inner_estimator",
                    "bits_per_dim", "bits_per_dim_stderr"):
            if d[key] is None:
                d.pop(key)
        return d

    def describe(self, representation: str, estimator: str, dim: int | None = None, *,
                 inner_estimator: str | None = None) -> Metric:
        """Label this likelihood with its representation and estimator; with ``dim`` (values
        per example) on a discrete representation, add bits per dimension. Returns self."""
        self.representation = representation
        self.estimator = estimator
        self.inner_estimator = inner_estimator
        if dim and self.value is not None and math.isfinite(self.value) and (
                representation == "binary" or representation.startswith("dequantized")):
            scale = 1.0 / (dim * math.log(2.0))
            self.bits_per_dim = -self.value * scale
            self.bits_per_dim_stderr = None if self.stderr is None else self.stderr * scale
        return self


def summarize(per_example: torch.Tensor, unit: str = "nats", *, extra_var: torch.Tensor | None = None) -> Metric:
    """Mean of ``per_example`` with its standard error over examples.

    ``extra_var`` (per example, optional) is the Monte Carlo variance of each example's own
    estimate; it is already contained in the spread over examples, so it is reported in
    ``extra`` rather than added twice.
    """
    import torch

    v = per_example.detach().double().flatten().cpu()
    n = v.numel()
    if n == 0:
        return unavailable("no examples to evaluate", unit)
    if not torch.isfinite(v).all():
        bad = int((~torch.isfinite(v)).sum())
        return Metric(value=float("nan"), stderr=None, unit=unit,
                      reason=f"{bad} of {n} per-example values are not finite")
    mean = float(v.mean())
    se = float(v.std(unbiased=True) / math.sqrt(n)) if n > 1 else None
    extra = {"n": n}
    if extra_var is not None:
        extra["mean_mc_stderr_per_example"] = float(extra_var.detach().double().clamp_min(0).sqrt().mean())
    return Metric(value=mean, stderr=se, unit=unit, extra=extra)


def unavailable(reason: str, unit: str = "") -> Metric:
    return Metric(value=None, stderr=None, unit=unit, reason=reason)
