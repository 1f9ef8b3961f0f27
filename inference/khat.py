"""How far to trust an importance-sampling estimate: the Pareto k-hat of its weights.

Pareto k-hat (Vehtari, Simpson, Gelman, Yao and Gabry, 2024, "Pareto smoothed importance
sampling", JMLR 25(72)): fit a generalized Pareto distribution to the largest importance
weights of each example; its shape ``k`` says how many moments the weights have. With
``k < 0.5`` the variance is finite and the estimate converges fast; with ``0.5 <= k < 0.7`` it
converges, slowly; with ``k >= 0.7`` (:data:`KHAT_THRESHOLD`) the estimate of ``log p(x)`` from
these weights (IWAE or AIS) is not to be trusted, whatever its standard error says.

The fit is ArviZ's (``arviz.psislw``, ArviZ 0.x). Where that API is missing (ArviZ 1.x moved
it), the same estimator runs here: the empirical-Bayes fit of Zhang and Stephens (2009,
"A new and efficient estimation method for the generalized Pareto distribution",
Technometrics 51(3)) with the weakly informative prior on ``k`` of Vehtari et al., on the
``min(S / 5, 3 sqrt(S))`` largest weights; the tests check that both agree. The estimators of
this package (IWAE of programs, AIS) and the evaluation layer both use it.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from probgen.errors import ConfigError

__all__ = ["KHAT_THRESHOLD", "pareto_khat", "khat_summary"]

KHAT_THRESHOLD = 0.7


def pareto_khat(log_weights, dim: int = 0, *, use_arviz: bool = True) -> torch.Tensor:
    """Pareto k-hat of the importance weights of each example.

    Parameters
    ----------
    log_weights : Tensor or array, shape (S, N) for ``dim=0``
        Log importance weights: ``S`` weights (IWAE samples or AIS chains) per example.
    dim : int
        The dimension that holds the weights of one example.
    use_arviz : bool
        Use ``arviz.psislw`` when it exists (ArviZ 0.x); else, or with ``False``, the same
        estimator implemented here.

    Returns
    -------
    Tensor (N,), float64
        ``k`` per example; NaN where fewer than 5 weights fall in the tail (``S < 25`` or so):
        too few to fit. Values above :data:`KHAT_THRESHOLD` flag estimates not to be trusted.
    """
    lw = log_weights.detach().double().cpu().numpy() if isinstance(log_weights, torch.Tensor) \
        else np.asarray(log_weights, dtype=np.float64)
    if lw.ndim == 1:
        lw = lw[:, None]
        dim = 0
    if lw.ndim != 2:
        raise ConfigError(f"log_weights must have shape (S, N) (or (S,)); got {lw.shape}.")
    lw = np.moveaxis(lw, dim, -1)  # (N, S): weights of one example along the last axis
    if np.isnan(lw).any() or np.isposinf(lw).any():
        raise ConfigError("log_weights contain NaN or +inf; k-hat needs finite weights (-inf, a "
                          "zero weight, is allowed).")
    khat = None
    if use_arviz:
        khat = _arviz_khat(lw)
    if khat is None:
        khat = np.array([_khat_one(row) for row in lw], dtype=np.float64)
    khat = np.where(np.isfinite(khat), khat, np.nan)
    return torch.from_numpy(np.asarray(khat, dtype=np.float64).reshape(lw.shape[0]))


def khat_summary(khat: torch.Tensor) -> dict:
    """Fraction of examples with ``k > 0.7`` (among those where k could be fitted), and more."""
    k = khat.double().flatten()
    known = k[~torch.isnan(k)]
    return {
        "khat_threshold": KHAT_THRESHOLD,
        "fraction_khat_above_threshold": float((known > KHAT_THRESHOLD).double().mean()) if known.numel() else None,
        "max_khat": float(known.max()) if known.numel() else None,
        "n_khat_unknown": int(k.numel() - known.numel()),
    }


# ----------------------------------------------------------------------------- the fit
def _arviz_khat(lw: np.ndarray) -> np.ndarray | None:
    """k-hat from ``arviz.psislw`` (ArviZ 0.x); None where that API is not there."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # 0.x announces its 1.x refactor
            import arviz
        psislw = arviz.psislw
    except (ImportError, AttributeError):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, k = psislw(lw.copy(), reff=1.0)
    except TypeError:  # a different signature: not the 0.x API
        return None
    return np.asarray(k, dtype=np.float64)


def _khat_one(lw: np.ndarray) -> float:
    """k-hat of one example's log weights (S,), as ``arviz.psislw`` computes it."""
    s = lw.shape[0]
    tail_len = int(math.ceil(min(s / 5.0, 3.0 * math.sqrt(s))))
    x = lw - lw.max()
    order = np.sort(x)
    cutoff = max(order[-tail_len - 1] if tail_len < s else -np.inf, np.log(np.finfo(float).tiny))
    tail = np.sort(x[x > cutoff])
    if tail.shape[0] <= 4:
        return math.nan
    k, _ = _gpd_fit(np.exp(tail) - np.exp(cutoff))
    return float(k)


def _gpd_fit(x: np.ndarray) -> tuple[float, float]:
    """Generalized Pareto fit of Zhang and Stephens (2009), with Vehtari et al.'s prior on k.

    x: sorted exceedances (n,), all > 0. Returns the shape ``k`` and scale ``sigma``.
    """
    n = x.shape[0]
    m = 30 + int(math.sqrt(n))
    # candidate values of theta = -k / sigma, from the quantile-based prior of Zhang & Stephens
    theta = 1.0 - np.sqrt(m / (np.arange(1, m + 1, dtype=np.float64) - 0.5))
    theta = theta / (3.0 * x[int(n / 4 + 0.5) - 1]) + 1.0 / x[-1]
    k_of = np.log1p(-theta[:, None] * x).mean(axis=1)  # (m,)
    profile = n * (np.log(-theta / k_of) - k_of - 1.0)
    w = 1.0 / np.exp(profile - profile[:, None]).sum(axis=1)  # posterior weights of the candidates
    keep = w >= 10 * np.finfo(float).eps
    w, theta = w[keep], theta[keep]
    w = w / w.sum()
    theta_hat = float((theta * w).sum())
    k = float(np.log1p(-theta_hat * x).mean())
    sigma = -k / theta_hat
    k = (n * k + 10 * 0.5) / (n + 10)  # weakly informative prior: k shrunk toward 0.5
    return k, sigma


# ----------------------------------------------------------------------------- metrics
