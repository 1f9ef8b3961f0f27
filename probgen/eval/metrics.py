"""One results schema for every model.

A metric is ``{"value", "stderr", "unit"}`` (and ``"reason"`` when it cannot be had, with
``value`` ``None``). Per-example quantities are summarised as their mean with the standard
error of the mean over examples.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

__all__ = ["Metric", "summarize", "unavailable"]


@dataclass
class Metric:
    value: float | None
    stderr: float | None = None
    unit: str = ""
    reason: str | None = None
    extra: dict | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["reason"] is None:
            d.pop("reason")
        if d["extra"] is None:
            d.pop("extra")
        return d


def summarize(per_example: torch.Tensor, unit: str = "nats", *, extra_var: torch.Tensor | None = None) -> Metric:
    """Mean of ``per_example`` with its standard error over examples.

    ``extra_var`` (per example, optional) is the Monte Carlo variance of each example's own
    estimate; it is already contained in the spread over examples, so it is reported in
    ``extra`` rather than added twice.
    """
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
