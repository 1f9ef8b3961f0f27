"""The Gaussian mixture written as a Pyro program, fitted by maximum likelihood with SVI.

The model draws a component for every point and then the point from that component::

    z_i ~ Categorical(w)                       i = 1..N   (enumerated out, never sampled)
    x_i | z_i ~ Normal(mu_{z_i}, L_{z_i} L_{z_i}^T)

Its parameters are ``pyro.param`` sites with no prior (flat priors: maximum likelihood, the
same objective as EM). The discrete ``z`` is marked for parallel enumeration
(``config_enumerate``), so ``TraceEnum_ELBO`` with the empty guide sums it out exactly: the
ELBO *is* the log-likelihood ``sum_i log sum_k w_k N(x_i | mu_k, Sigma_k)``, and gradient
steps on it are gradient ascent on the likelihood. The program is therefore a second,
independent computation of what :class:`probgen.models.gmm.GaussianMixture` maximises with
EM: at EM's parameters :func:`log_likelihood` equals ``GaussianMixture.score`` to rounding,
and after :func:`fit_mixture_program` the two fits agree closely.

References: Pyro's "Gaussian Mixture Model" tutorial (enumeration of discrete sites);
Obermeyer et al., "Tensor variable elimination for plated factor graphs" (ICML 2019).

Shapes: ``N`` points, ``D`` features, ``K`` components.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.infer import TraceEnum_ELBO, config_enumerate
from torch import Tensor

from probgen.errors import ConfigError, DivergedError, suggest
from probgen.inference.em import (
    COVARIANCE_TYPES,
    MixtureParams,
    m_step,
    stats_from_responsibilities,
)
from probgen.inference.kmeans import KMeans, as_2d_tensor

__all__ = [
    "mixture_model",
    "mixture_guide",
    "log_likelihood",
    "set_params",
    "get_params",
    "fit_mixture_program",
    "MixtureProgramFit",
    "SCALE_PARAMS",
]


# ============================================================================ scales by type
# covariance_type -> (param name, constraint, covariance -> param, param -> scale_tril (K, D, D))
def _eye(d, like):
    return torch.eye(d, dtype=like.dtype, device=like.device)


SCALE_PARAMS = {
    "full": ("scale_tril", constraints.lower_cholesky,
             lambda cov: torch.linalg.cholesky(cov),
             lambda p, k, d: p),
    "tied": ("scale_tril", constraints.lower_cholesky,
             lambda cov: torch.linalg.cholesky(cov),
             lambda p, k, d: p.expand(k, d, d)),
    "diag": ("scales", constraints.positive,
             lambda cov: cov.sqrt(),
             lambda p, k, d: torch.diag_embed(p)),
    "spherical": ("scale", constraints.positive,
                  lambda cov: cov.sqrt(),
                  lambda p, k, d: p[:, None, None] * _eye(d, p)),
}


def _check_type(covariance_type: str) -> None:
    if covariance_type not in SCALE_PARAMS:
        raise ConfigError(f"covariance_type must be one of {', '.join(SCALE_PARAMS)}; got "
                          f"{covariance_type!r}.{suggest(str(covariance_type), SCALE_PARAMS)}")


# ============================================================================ the program
@config_enumerate
def mixture_model(x: Tensor, n_components: int, covariance_type: str = "full",
                  init: MixtureParams | None = None) -> None:
    """The mixture as a generative program over ``x`` (N, D).

    Parameters
    ----------
    x : Tensor, shape (N, D)
        Observed points.
    n_components : int
    covariance_type : {"full", "tied", "diag", "spherical"}
    init : MixtureParams, optional
        Initial values of the ``pyro.param`` sites (used only when a site is created; see
        :func:`set_params`). Required the first time.
    """
    k, d = n_components, x.shape[1]
    name, constraint, _, to_tril = SCALE_PARAMS[covariance_type]
    store = pyro.get_param_store()
    if init is None and "weights" not in store:
        raise ConfigError("the mixture program's parameters are not set: pass init= (a "
                          "MixtureParams) or call set_params() first.")
    start = _param_values(init) if init is not None else {}
    weights = pyro.param("weights", lambda: start["weights"], constraint=constraints.simplex)
    locs = pyro.param("locs", lambda: start["locs"])                        # (K, D)
    scale = pyro.param(name, lambda: start[name], constraint=constraint)
    scale_tril = to_tril(scale, k, d)                                       # (K, D, D)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("assignment", dist.Categorical(weights))            # (N,) or (K, 1)
        pyro.sample("obs", dist.MultivariateNormal(locs[z], scale_tril=scale_tril[z]), obs=x)


def mixture_guide(x: Tensor, n_components: int, covariance_type: str = "full",
                  init: MixtureParams | None = None) -> None:
    """The empty guide: the only latent site is enumerated in the model."""


def _param_values(p: MixtureParams) -> dict[str, Tensor]:
    """Initial values of the param sites from mixture parameters."""
    name, _, from_cov, _ = SCALE_PARAMS[p.covariance_type]
    cov = p.covariances
    if cov is None:
        cov = COVARIANCE_TYPES[p.covariance_type].covariances(p.precisions_cholesky)
    return {"weights": p.weights.detach().clone(), "locs": p.means.detach().clone(),
            name: from_cov(cov.detach()).clone()}


def set_params(params: MixtureParams) -> None:
    """Put ``params`` into Pyro's parameter store (replacing what is there)."""
    _check_type(params.covariance_type)
    store = pyro.get_param_store()
    for key, value in _param_values(params).items():
        if key in store:
            del store[key]
        name, constraint, _, _ = SCALE_PARAMS[params.covariance_type]
        pyro.param(key, value, constraint=constraints.simplex if key == "weights"
                   else constraint if key == name else constraints.real)


def get_params(covariance_type: str = "full") -> MixtureParams:
    """The store's parameters as :class:`~probgen.inference.em.MixtureParams`."""
    name, _, _, to_tril = SCALE_PARAMS[covariance_type]
    w = pyro.param("weights").detach()
    mu = pyro.param("locs").detach()
    scale = pyro.param(name).detach()
    k, d = mu.shape
    tril = to_tril(scale, k, d)
    cov_full = tril @ tril.mT
    cov = {"full": cov_full, "tied": cov_full[0], "diag": scale ** 2,
           "spherical": scale ** 2}[covariance_type]
    prec_chol = COVARIANCE_TYPES[covariance_type].precision_cholesky(cov)
    return MixtureParams(w, mu, cov, prec_chol, covariance_type)


def log_likelihood(x: Tensor, n_components: int, covariance_type: str = "full") -> float:
    """Mean ``log p(x_i)`` per point under the store's parameters (exact: ``-loss / N``)."""
    with torch.no_grad():
        loss = TraceEnum_ELBO(max_plate_nesting=1).loss(
            mixture_model, mixture_guide, x, n_components, covariance_type)
    return -loss / x.shape[0]


# ============================================================================ fitting
@dataclass
class MixtureProgramFit:
    """The result of :func:`fit_mixture_program`.

    Attributes
    ----------
    params : MixtureParams
        Fitted parameters.
    log_likelihoods : list of float
        Mean log-likelihood per point at every step (before that step's update).
    """

    params: MixtureParams
    log_likelihoods: list[float] = field(default_factory=list)


def _kmeans_start(x: Tensor, k: int, covariance_type: str, reg_covar: float,
                  random_state) -> MixtureParams:
    labels = KMeans(k, random_state=random_state, dtype=x.dtype, device=x.device).fit(x).labels_
    resp = torch.nn.functional.one_hot(labels, k).to(x.dtype)
    return m_step(stats_from_responsibilities(x, resp, covariance_type), covariance_type,
                  reg_covar, dtype=x.dtype)


def fit_mixture_program(X, n_components: int, *, covariance_type: str = "full",
                        steps: int = 1000, lr: float = 0.05, init: MixtureParams | None = None,
                        reg_covar: float = 1e-6, random_state=None,
                        dtype: torch.dtype = torch.float64) -> MixtureProgramFit:
    """Maximum likelihood for :func:`mixture_model` by full-batch gradient ascent (Adam).

    The loss is ``TraceEnum_ELBO``'s differentiable loss, which with the empty guide is
    exactly minus the log-likelihood. A step whose loss or gradient is not finite raises
    :class:`~probgen.errors.DivergedError` before any parameter changes.

    Parameters
    ----------
    X : array-like or Tensor, shape (N, D)
    n_components : int
    covariance_type : {"full", "tied", "diag", "spherical"}
    steps : int
        Adam steps; the learning rate decays tenfold over them.
    lr : float
        Initial Adam learning rate (on the unconstrained parameters).
    init : MixtureParams, optional
        Starting point (default: one k-means run, as EM's default initialisation).
    reg_covar : float
        Only used for the k-means starting point.
    random_state : None, int or torch.Generator
        Seeds the k-means start.
    dtype : torch.dtype
    """
    _check_type(covariance_type)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be a positive int; got {steps!r}.")
    x = as_2d_tensor(X, dtype=dtype, device=X.device if isinstance(X, Tensor) else "cpu",
                     estimator="fit_mixture_program")
    start = init if init is not None else _kmeans_start(x, n_components, covariance_type,
                                                        reg_covar, random_state)
    set_params(start.to(x.device, dtype))
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    store = pyro.get_param_store()
    params = [p for _, p in store.named_parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    decay = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.1 ** (1.0 / steps))
    n = x.shape[0]
    history = []
    for step in range(steps):
        loss = elbo.differentiable_loss(mixture_model, mixture_guide, x, n_components,
                                        covariance_type) / n
        opt.zero_grad()
        loss.backward()
        value = float(loss.detach())
        if not math.isfinite(value) or not all(
                p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params):
            raise DivergedError(f"the mixture program's loss or gradient is not finite at step "
                                f"{step} (loss {value}); the parameters are those of the "
                                "step before. Lower lr, or start from EM's parameters.")
        history.append(-value)
        opt.step()
        decay.step()
    return MixtureProgramFit(get_params(covariance_type), history)
