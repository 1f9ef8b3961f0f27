"""Parzen-window (Gaussian kernel density) log-likelihood estimates from model samples.

The estimate of Breuleux, Bengio and Vincent (2011, "Quickly generating representative samples
from an RBM-derived process") used by Goodfellow et al. (2014, "Generative adversarial nets",
Table 1) for models whose only capability is ``sample``: fit an isotropic Gaussian kernel
density to ``M`` model samples and score test points,

    log p_hat(x) = logsumexp_j [ -||x - s_j||^2 / (2 h^2) ] - log M - (D / 2) log(2 pi h^2),

with the bandwidth ``h`` chosen on validation data from a grid. Read it with
:data:`PARZEN_WARNING`: in high dimension it is a poor estimate of log-likelihood and can
rank a k-means model above the real data (Theis, van den Oord and Bethge, 2016).

The per-example standard error is the delta-method one over the ``M`` kernel values
``k_j(x)`` (the estimate is the log of their mean): ``sd(k) / (sqrt(M) mean(k))``, computed in
log space. It measures the Monte Carlo noise of the sample set only, not the (usually much
larger) bias of the kernel estimate. Everything is batched over test points and samples, so
memory stays at ``batch_size * sample_batch_size`` distances.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from probgen.checks import check_positive_float
from probgen.errors import ConfigError
from probgen.inference.grid import best_on_grid

__all__ = ["PARZEN_WARNING", "ParzenResult", "parzen", "parzen_log_prob", "select_bandwidth"]

PARZEN_WARNING = (
    "Parzen-window estimates are not a reliable measure of log-likelihood: in high dimension "
    "they are far from the true value even with many samples, and they can rank a k-means "
    "model above the real data (Theis, van den Oord and Bethge, 2016, 'A note on the "
    "evaluation of generative models'). Compare models with them only alongside other metrics."
)


@dataclass
class ParzenResult:
    """A Parzen-window estimate.

    Attributes
    ----------
    log_px : Tensor (N,)
        Per-example log density of the kernel estimate, nats.
    stderr : Tensor (N,)
        Delta-method Monte Carlo standard error over the model samples.
    bandwidth : float
    bandwidths : tuple of float
        The grid the bandwidth was chosen from (empty when it was given).
    val_scores : list of float
        Mean validation log density for each grid bandwidth.
    n_samples : int
    warning : str
        :data:`PARZEN_WARNING`.
    """

    log_px: torch.Tensor
    stderr: torch.Tensor
    bandwidth: float
    bandwidths: tuple[float, ...]
    val_scores: list[float]
    n_samples: int
    warning: str = PARZEN_WARNING


@torch.no_grad()
def parzen_log_prob(x: torch.Tensor, samples: torch.Tensor, bandwidth: float, *,
                    batch_size: int = 1000, sample_batch_size: int = 10_000
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian kernel density of ``samples`` at ``x``, per example, with its standard error.

    Parameters
    ----------
    x : Tensor, shape (N, *shape)
    samples : Tensor, shape (M, *shape)
    bandwidth : float
        Kernel standard deviation ``h``, in the data's units.
    batch_size, sample_batch_size : int
        Test points and samples per block of distances.

    Returns
    -------
    log_px, stderr : Tensor (N,), float64
    """
    h = check_positive_float("bandwidth", bandwidth)
    x2, s2 = _flat_pair(x, samples)
    n, d = x2.shape
    m = s2.shape[0]
    s_sq = s2.pow(2).sum(-1)  # (M,)
    out, ses = [], []
    for i in range(0, n, batch_size):
        xb = x2[i:i + batch_size]  # (B, D)
        xb_sq = xb.pow(2).sum(-1, keepdim=True)
        lse1 = torch.full((xb.shape[0],), -math.inf, dtype=torch.float64, device=x2.device)
        lse2 = lse1.clone()
        for j in range(0, m, sample_batch_size):
            sb = s2[j:j + sample_batch_size]
            # squared distances (B, Mb), clamped: the expansion can go slightly negative
            d2 = (xb_sq - 2.0 * xb @ sb.T + s_sq[j:j + sample_batch_size]).clamp_min(0.0)
            logk = -0.5 * d2 / h**2
            lse1 = torch.logaddexp(lse1, torch.logsumexp(logk, 1))
            lse2 = torch.logaddexp(lse2, torch.logsumexp(2.0 * logk, 1))
        lme = lse1 - math.log(m)
        out.append(lme - 0.5 * d * math.log(2.0 * math.pi * h**2))
        if m > 1:
            r_minus_1 = torch.expm1(lse2 - math.log(m) - 2.0 * lme).clamp_min(0.0)
            ses.append((r_minus_1 / (m - 1)).sqrt())
        else:
            ses.append(torch.full_like(lme, float("nan")))
    return torch.cat(out), torch.cat(ses)


@torch.no_grad()
def select_bandwidth(samples: torch.Tensor, x_val: torch.Tensor,
                     bandwidths: Sequence[float] | None = None, *, batch_size: int = 1000,
                     sample_batch_size: int = 10_000) -> tuple[float, tuple[float, ...], list[float]]:
    """Pick the bandwidth with the highest mean log density on validation data.

    Parameters
    ----------
    samples : Tensor, shape (M, *shape)
    x_val : Tensor, shape (N, *shape)
    bandwidths : sequence of float, optional
        Default: 20 values log-spaced over ``[0.01, 2] * s``, where ``s`` is the samples'
        root-mean-square per-coordinate standard deviation, so that the grid scales with the
        data (Goodfellow et al. chose the width on validation data too).

    Returns
    -------
    bandwidth, grid, scores
        Warns when the best bandwidth is at an end of the grid.
    """
    if bandwidths is None:
        _, s2 = _flat_pair(x_val, samples)
        s = float(s2.var(0).mean().sqrt()) if s2.shape[0] > 1 else 1.0
        s = s if s > 0 else 1.0
        grid = tuple(float(v) for v in torch.logspace(math.log10(0.01 * s), math.log10(2.0 * s), 20,
                                                       dtype=torch.float64))
    else:
        grid = tuple(float(v) for v in bandwidths)
    if not grid:
        raise ConfigError("bandwidths must hold at least one value; got an empty grid.")
    scores = []
    for h in grid:
        lp, _ = parzen_log_prob(x_val, samples, h, batch_size=batch_size,
                                sample_batch_size=sample_batch_size)
        scores.append(float(lp.mean()))
    best = best_on_grid(grid, scores, "Parzen bandwidth", stacklevel=2)
    return grid[best], grid, scores


@torch.no_grad()
def parzen(samples: torch.Tensor, x: torch.Tensor, x_val: torch.Tensor | None = None, *,
           bandwidth: float | None = None, bandwidths: Sequence[float] | None = None,
           batch_size: int = 1000, sample_batch_size: int = 10_000) -> ParzenResult:
    """Parzen-window log-likelihood of ``x`` under model ``samples`` (Goodfellow et al., 2014).

    Read the result with :data:`PARZEN_WARNING`.

    Parameters
    ----------
    samples : Tensor, shape (M, *shape)
        Draws from the model.
    x : Tensor, shape (N, *shape)
        Points to score (the test data).
    x_val : Tensor, shape (N_val, *shape), optional
        Validation data to choose the bandwidth on; required unless ``bandwidth`` is given.
    bandwidth : float, optional
        Use this bandwidth instead of choosing one.
    bandwidths : sequence of float, optional
        The grid for :func:`select_bandwidth`.
    """
    if bandwidth is None:
        if x_val is None:
            raise ConfigError(
                "parzen needs x_val (validation data to choose the bandwidth on) or an explicit "
                "bandwidth=...; got neither. Never choose the bandwidth on the test data.")
        bandwidth, grid, scores = select_bandwidth(samples, x_val, bandwidths, batch_size=batch_size,
                                                   sample_batch_size=sample_batch_size)
    else:
        grid, scores = (), []
    lp, se = parzen_log_prob(x, samples, bandwidth, batch_size=batch_size,
                             sample_batch_size=sample_batch_size)
    return ParzenResult(log_px=lp, stderr=se, bandwidth=float(bandwidth), bandwidths=grid,
                        val_scores=scores, n_samples=int(samples.shape[0]))


def _flat_pair(x, samples):
    """Flatten to (N, D) and (M, D) float64 on one device, checking they agree."""
    if not isinstance(x, torch.Tensor) or not isinstance(samples, torch.Tensor):
        raise ConfigError(f"x and samples must be tensors; got {type(x).__name__} and "
                          f"{type(samples).__name__}.")
    if x.dim() < 2 or samples.dim() < 2 or x.shape[1:] != samples.shape[1:]:
        raise ConfigError(
            f"x and samples must have shapes (N, *shape) and (M, *shape) with the same per-example "
            f"shape; got {tuple(x.shape)} and {tuple(samples.shape)}.")
    if samples.shape[0] == 0:
        raise ConfigError("samples is empty: draw at least one sample from the model.")
    return x.flatten(1).double(), samples.flatten(1).double().to(x.device)
