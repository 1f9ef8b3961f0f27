"""K by maximum likelihood: EM fits of a diagonal-covariance Gaussian mixture, BIC and AIC.

For each K, EM with several restarts finds the maximum likelihood
(:class:`probgen.models.gmm.GaussianMixture`, scikit-learn's semantics);
``BIC = -2 log L + p log N`` (Schwarz, 1978) with ``p = K D`` means ``+ K D`` variances
``+ K - 1`` weights, and ``AIC = -2 log L + 2 p``. The smallest wins.

References
----------
Schwarz, G. (1978). Estimating the dimension of a model. Annals of Statistics 6(2).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import torch

from probgen.checks import check_positive_int
from probgen.errors import ConfigError
from probgen.models.bayes_mixture import as_points

__all__ = ["EMFit", "em_scores", "fit_em"]


@dataclass
class EMFit:
    """The maximum-likelihood mixture for one K.

    Attributes
    ----------
    n_components : int
    log_likelihood : float
        Total log-likelihood of the data at the EM solution, nats.
    bic, aic : float
    weights : Tensor (K,)
    locs, scales : Tensor (K, D)
        Means and standard deviations (diagonal covariances).
    converged : bool
    seconds : float
    """

    n_components: int
    log_likelihood: float
    bic: float
    aic: float
    weights: torch.Tensor
    locs: torch.Tensor
    scales: torch.Tensor
    converged: bool
    seconds: float

    def init_values(self) -> dict[str, torch.Tensor]:
        """A starting point for :func:`~probgen.models.bayes_mixture.fit_nuts`."""
        return {"weights": self.weights, "locs": self.locs, "scales": self.scales}


def fit_em(x: torch.Tensor, n_components: int, *, n_init: int = 5, seed: int = 0) -> EMFit:
    """Fit a diagonal-covariance mixture by EM with ``n_init`` restarts; keep the best.

    Parameters
    ----------
    x : Tensor (N,) or (N, D)
    n_components : int
    n_init : int
        Restarts (k-means initialisations); the best lower bound is kept.
    seed : int

    Returns
    -------
    EMFit
    """
    from probgen.models.gmm import GaussianMixture

    x = as_points(x)
    check_positive_int("n_components", n_components)
    check_positive_int("n_init", n_init)
    if n_components > x.shape[0]:
        raise ConfigError(f"n_components must be at most the number of points ({x.shape[0]}); "
                          f"got {n_components}.")
    xn = x.detach().cpu().double()
    start = time.perf_counter()
    gm = GaussianMixture(n_components=n_components, covariance_type="diag", n_init=n_init,
                         random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gm.fit(xn)
    for w in caught:  # re-raise anything but EM's own convergence warning, which is recorded
        if "converge" not in str(w.message).lower():
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    seconds = time.perf_counter() - start
    dtype = torch.get_default_dtype()
    return EMFit(
        n_components=n_components,
        log_likelihood=float(gm.score(xn) * xn.shape[0]),
        bic=float(gm.bic(xn)),
        aic=float(gm.aic(xn)),
        weights=torch.as_tensor(gm.weights_).to(dtype),
        locs=torch.as_tensor(gm.means_).to(dtype),
        scales=torch.as_tensor(gm.covariances_).sqrt().to(dtype),  # (K, D) variances -> sds
        converged=bool(gm.converged_),
        seconds=seconds,
    )


def em_scores(x: torch.Tensor, components, *, n_init: int = 5, seed: int = 0) -> dict[int, EMFit]:
    """:func:`fit_em` for every K in ``components``."""
    return {int(k): fit_em(x, int(k), n_init=n_init, seed=seed) for k in components}
