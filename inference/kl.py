"""Fitting a simple q to a target p by forward KL and by reverse KL, and estimating both.

Two directions, two behaviours (Bishop, *Pattern Recognition and Machine Learning*, 2006,
sec. 10.1.2; Minka, "Divergence measures and message passing", 2005):

* **Forward** ``KL(p || q) = E_p[log p - log q]``. Only samples of ``p`` are needed:
  minimising it over ``q`` is maximum likelihood of ``q`` on those samples. The penalty is
  large wherever ``p`` has mass and ``q`` has none, so ``q`` *covers* every mode. For a
  single Gaussian the optimum is moment matching (the mean and covariance of ``p``).
  :func:`fit_forward_kl` maximises the likelihood by EM. (Gradient ascent on the same
  likelihood, tried first, sat for hundreds of steps on plateaus of the mixture likelihood
  that EM leaves in a few iterations.)
* **Reverse** ``KL(q || p) = E_q[log q - log p]``. Only an unnormalised ``log p`` is needed:
  ``-KL(q || p) + log Z`` is the ELBO of a Pyro model whose latent site ``z`` has an
  improper flat prior (:class:`pyro.distributions.ImproperUniform`) plus
  ``pyro.factor("log_p", log_p(z))``, with ``q`` as the guide. The penalty is large wherever
  ``q`` has mass and ``p`` has none, so ``q`` *seeks* one mode. :func:`fit_reverse_kl` uses
  :class:`pyro.infer.Trace_ELBO` (reparameterised) for a Gaussian ``q`` and
  :class:`StratifiedMixtureELBO` for a mixture ``q``.

Why a separate estimator for a mixture guide: a sample of a mixture is not a differentiable
function of the mixture weights (the component is a discrete choice), so ``Trace_ELBO`` would
fall back on score-function (REINFORCE) gradients, unbiased but noisy. Instead the
expectation over the component is written out (Morningstar et al., "Automatic
differentiation variational inference with mixtures", AISTATS 2021)::

    ELBO = sum_k w_k E_{eps}[ log p~(mu_k + L_k eps) - log q(mu_k + L_k eps) ]

Every term is reparameterised, the weights enter exactly, and ``log q`` is the density of the
whole mixture, so the estimate is unbiased for the ELBO of the mixture ``q`` and so are its
gradients.

Both divergences are then estimated honestly with :func:`kl_monte_carlo` (a mean with its
standard error) and, in 1-D, with :func:`kl_quadrature_1d`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.util import zero_grads
from pyro.optim import ClippedAdam
from torch.distributions import constraints

from probgen.errors import ConfigError, DataError, DivergedError

__all__ = [
    "KLFit",
    "StratifiedMixtureELBO",
    "fit_forward_kl",
    "fit_reverse_kl",
    "gaussian_mixture",
    "kl_monte_carlo",
    "kl_quadrature_1d",
    "target_model",
]


# ----------------------------------------------------------------------------- the family q
def gaussian_mixture(locs: torch.Tensor, scale_trils: torch.Tensor,
                     weights: torch.Tensor | None = None, *, logits: torch.Tensor | None = None):
    """The q family: a mixture of K full-covariance Gaussians in D dimensions.

    Parameters
    ----------
    locs : Tensor, shape (K, D)
    scale_trils : Tensor, shape (K, D, D)
        Lower Cholesky factors of the covariances.
    weights, logits : Tensor, shape (K,), optional
        Mixture weights, or their logits; ignored when K = 1.

    Returns
    -------
    pyro.distributions.MultivariateNormal when K = 1 (a plain Gaussian, reparameterisable),
    else pyro.distributions.MixtureSameFamily over MultivariateNormal components.
    Either has event shape (D,).
    """
    if locs.shape[0] == 1:
        return dist.MultivariateNormal(locs[0], scale_tril=scale_trils[0])
    mix = dist.Categorical(probs=weights) if logits is None else dist.Categorical(logits=logits)
    return dist.MixtureSameFamily(mix, dist.MultivariateNormal(locs, scale_tril=scale_trils))


@dataclass
class KLFit:
    """A fitted q: a mixture of K Gaussians in D dimensions, and how it was fitted.

    Attributes
    ----------
    direction : str
        ``"forward"`` (minimised KL(p||q)) or ``"reverse"`` (minimised KL(q||p)).
    locs : Tensor, shape (K, D)
    scale_trils : Tensor, shape (K, D, D)
    weights : Tensor, shape (K,)
    losses : list of float
        The objective at every step: the mean negative log-likelihood per sample after each
        EM iteration (forward), or the negative ELBO estimate, KL(q||p) - log Z (reverse).
    """

    direction: str
    locs: torch.Tensor
    scale_trils: torch.Tensor
    weights: torch.Tensor
    losses: list[float] = field(default_factory=list, repr=False)
    # reverse fits from several starts: KL(q||p) - log Z of each start's q, estimated alike;
    # the fit is the start with the lowest
    start_objectives: list[float] = field(default_factory=list, repr=False)

    @property
    def covariances(self) -> torch.Tensor:
        """Shape (K, D, D)."""
        return self.scale_trils @ self.scale_trils.transpose(-1, -2)

    def distribution(self, dtype: torch.dtype | None = None):
        """q as a distribution with event shape (D,), optionally cast to ``dtype``."""
        cast = (lambda t: t.to(dtype)) if dtype is not None else (lambda t: t)
        return gaussian_mixture(cast(self.locs), cast(self.scale_trils), cast(self.weights))

    def to_dict(self) -> dict:
        """Plain lists, for JSON."""
        return {
            "locs": self.locs.tolist(),
            "covariances": self.covariances.tolist(),
            "weights": self.weights.tolist(),
        }


# ----------------------------------------------------------------------------- checks
def _check_n_components(n_components) -> int:
    if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
        raise ConfigError(
            f"n_components must be an int >= 1 (the number of Gaussians in q); got "
            f"{n_components!r}. Use 1 for a single Gaussian.")
    return n_components


def _check_positive(name: str, value, kind=int):
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) \
            or not value > 0:
        raise ConfigError(f"{name} must be a positive {kind.__name__}; got {value!r}.")
    return value


# ----------------------------------------------------------------------------- optimisation
def _optimise(model, guide, loss, optim, steps: int, *args) -> list[float]:
    """SVI steps (as :meth:`pyro.infer.SVI.step`), but a non-finite loss stops before updating."""
    losses = []
    for step in range(steps):
        with poutine.trace(param_only=True) as capture:
            value = loss.loss_and_grads(model, guide, *args)
        params = {site["value"].unconstrained() for site in capture.trace.nodes.values()}
        if not math.isfinite(value):
            zero_grads(params)
            raise DivergedError(
                f"the KL objective was {value} at step {step}; the parameters were not updated "
                f"with it. Lower lr, or start q nearer to where p has mass.")
        optim(params)
        zero_grads(params)
        losses.append(float(value))
    return losses


def _decaying_adam(lr: float, steps: int) -> ClippedAdam:
    """Adam whose step size falls tenfold over the run, so the noisy reverse fit settles."""
    return ClippedAdam({"lr": lr, "lrd": 0.1 ** (1.0 / max(steps, 1)), "clip_norm": 10.0})


def _q_params(init_locs, init_scale_trils, n_components):
    locs = pyro.param("locs", init_locs)
    trils = pyro.param("scale_trils", init_scale_trils, constraint=constraints.lower_cholesky)
    logits = pyro.param("logits", torch.zeros(n_components, dtype=init_locs.dtype)) \
        if n_components > 1 else None
    return locs, trils, logits


def _fit_record(direction, losses) -> KLFit:
    store = pyro.get_param_store()
    locs = store["locs"].detach().clone()
    trils = store["scale_trils"].detach().clone()
    k = locs.shape[0]
    weights = torch.softmax(store["logits"].detach(), -1) if k > 1 else torch.ones(1, dtype=locs.dtype)
    return KLFit(direction, locs, trils, weights, losses)


# ----------------------------------------------------------------------------- forward KL
@torch.no_grad()
def fit_forward_kl(samples: torch.Tensor, n_components: int = 1, *, n_init: int = 1,
                   init_locs: torch.Tensor | None = None, max_iter: int = 500, tol: float = 1e-6,
                   reg_covar: float = 1e-6, seed: int = 0) -> KLFit:
    """Minimise KL(p || q) over mixtures q of ``n_components`` Gaussians, given samples of p.

    ``KL(p||q) = -H(p) - E_p[log q]``, and ``H(p)`` does not depend on q, so this is maximum
    likelihood of q on the samples, by EM with full covariances (:mod:`probgen.inference.em`,
    as :class:`probgen.models.gmm.GaussianMixture` fits). For a single Gaussian the
    optimum is moment matching, which the first M-step computes exactly. For a mixture the
    likelihood has local optima: each of the ``n_init`` starts is k-means++ seeded, and the
    start that ends with the highest likelihood is kept.

    Parameters
    ----------
    samples : Tensor, shape (N, D)
        Samples of p.
    n_components : int
        K, the number of Gaussians in q.
    n_init : int
        Starts; the best is kept.
    init_locs : Tensor, shape (K, D), optional
        The one start's centres, instead of k-means++ (then ``n_init`` must be 1), as
        scikit-learn's ``means_init``.
    max_iter, tol : int, float
        EM stops when the mean log-likelihood changes by less than ``tol`` (nats per sample).
    reg_covar : float
        Added to the diagonal of every covariance, so that none is singular.
    seed : int
        Seeds the starts (the global RNG is not used).

    Returns
    -------
    KLFit with ``direction="forward"``; ``losses`` holds the mean negative log-likelihood
    at every EM iteration of the kept start, the last one at the fitted parameters.
    """
    k = _check_n_components(n_components)
    _check_positive("n_init", n_init)
    _check_positive("max_iter", max_iter)
    x = torch.as_tensor(samples)
    if x.dim() != 2 or x.shape[0] <= k:
        raise DataError(f"samples must have shape (N, D) with N > n_components={k}; got shape "
                        f"{tuple(x.shape)}. Reshape 1-D samples with x[:, None].")
    if not torch.isfinite(x).all():
        raise DataError("samples hold NaN or infinite values; drop them before fitting.")
    x = x.detach()
    if init_locs is not None:
        init_locs = torch.as_tensor(init_locs, dtype=x.dtype)
        if init_locs.shape != (k, x.shape[1]) or n_init != 1:
            raise ConfigError(f"init_locs must have shape (n_components, D) = ({k}, {x.shape[1]}) "
                              f"and come with n_init=1; got shape {tuple(init_locs.shape)} and "
                              f"n_init={n_init}.")
    from probgen.inference.em import (
        INITIALISERS,
        best_of_em,
        start_from_responsibilities,
        warn_not_converged,
        weighted_log_prob,
    )
    from probgen.inference.kmeans import make_generator

    gen = make_generator(seed)

    def start():  # k-means++ seeded; the given centres replace its means (scikit-learn's means_init)
        p = start_from_responsibilities(x, INITIALISERS["k-means++"](x, k, gen), "full", reg_covar)
        if init_locs is not None:
            p.means = init_locs
        return p

    res = best_of_em(x, start, n_init, tol=tol, max_iter=max_iter, reg_covar=reg_covar)
    if not res.converged and max_iter > 0:
        warn_not_converged(n_init, max_iter, tol, stacklevel=3)  # the caller, past no_grad
    p = res.params
    locs = p.means.to(x.dtype)
    trils = torch.linalg.cholesky(p.covariances.to(x.dtype))
    weights = p.weights.to(x.dtype)
    score = float(torch.logsumexp(weighted_log_prob(x, p), 1).mean(dtype=torch.float64))
    history = list(res.lower_bounds) + [score]
    return KLFit("forward", locs, trils, weights, [-v for v in history])


# ----------------------------------------------------------------------------- reverse KL
def target_model(log_p: Callable[[torch.Tensor], torch.Tensor], dim: int, *, dtype=None):
    """A Pyro model whose joint density over the latent site ``z`` is ``exp(log_p(z))``.

    ``z`` has an improper flat prior (log density 0, never sampled: the guide supplies it)
    and ``pyro.factor`` adds ``log_p(z)``. Its ELBO with guide q is ``log Z - KL(q || p)``.

    Parameters
    ----------
    log_p : callable, (..., D) -> (...)
        Log density of p, up to an additive constant; must broadcast over leading dims.
    dim : int
        D.
    """
    def model():
        z = pyro.sample("z", dist.ImproperUniform(constraints.real_vector, (), (dim,)))
        pyro.factor("log_p", log_p(z))

    return model


class StratifiedMixtureELBO:
    """The ELBO of a guide whose one latent site is a mixture, with the component summed out.

    ``ELBO = sum_k w_k E_{z ~ q_k}[log p(z) - log q(z)]``, with ``num_particles``
    reparameterised draws from *each* component q_k and ``log q`` the density of the whole
    mixture. Unbiased, with pathwise gradients for every parameter, the weights included
    (Morningstar et al., "Automatic differentiation variational inference with mixtures",
    AISTATS 2021). For a non-mixture guide site it is the ordinary reparameterised ELBO.

    The guide must have exactly one latent sample site, and the model's log densities must
    broadcast over leading batch dims of that site's value (as :func:`target_model` does).
    An instance is a callable loss for :class:`pyro.infer.SVI`:
    ``SVI(model, guide, optim, loss=StratifiedMixtureELBO(8))``.
    """

    def __init__(self, num_particles: int = 8):
        self.num_particles = _check_positive("num_particles", num_particles)

    def __call__(self, model, guide, *args, **kwargs) -> torch.Tensor:
        return self.differentiable_loss(model, guide, *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        guide_tr = poutine.trace(guide).get_trace(*args, **kwargs)
        latent = [name for name, s in guide_tr.nodes.items()
                  if s["type"] == "sample" and not s["is_observed"]]
        if len(latent) != 1:
            raise ConfigError(f"StratifiedMixtureELBO needs a guide with exactly one latent "
                              f"sample site; this one has {latent}.")
        name = latent[0]
        q = guide_tr.nodes[name]["fn"]
        s = self.num_particles
        if isinstance(q, torch.distributions.MixtureSameFamily):
            z = q.component_distribution.rsample((s,))  # (S, K, D): S draws from each component
            w = q.mixture_distribution.probs  # (K,)
        else:
            z = q.rsample((s,)).unsqueeze(1)  # (S, 1, D)
            w = torch.ones(1, dtype=z.dtype)
        model_tr = poutine.trace(poutine.condition(model, data={name: z})).get_trace(*args, **kwargs)
        model_tr.compute_log_prob()
        batch = z.shape[:2]
        log_joint = torch.zeros(batch, dtype=z.dtype)
        for site_name, site in model_tr.nodes.items():
            if site["type"] != "sample":
                continue
            lp = site["log_prob"]
            try:
                log_joint = log_joint + lp.expand(batch)
            except RuntimeError:
                raise ConfigError(
                    f"StratifiedMixtureELBO: the log density of model site {site_name!r} has "
                    f"shape {tuple(lp.shape)}, which does not broadcast to the draws' batch "
                    f"shape {tuple(batch)}. Write the model to broadcast over leading dims of "
                    f"{name!r}.") from None
        elbo_per_component = (log_joint - q.log_prob(z)).mean(0)  # (K,)
        return -(w * elbo_per_component).sum()

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return float(loss.detach())


def fit_reverse_kl(log_p: Callable[[torch.Tensor], torch.Tensor], dim: int,
                   n_components: int = 1, *, init_locs: torch.Tensor | None = None,
                   init_scale: float = 0.1, steps: int = 500, lr: float = 0.1,
                   num_particles: int = 16, seed: int = 0, n_init: int = 1,
                   n_score: int = 8192) -> KLFit:
    """Minimise KL(q || p) over mixtures q of ``n_components`` Gaussians, given log p up to a
    constant.

    Pyro SVI on :func:`target_model` with q as the guide. A Gaussian q uses
    :class:`~pyro.infer.Trace_ELBO` (reparameterised, ``num_particles`` vectorised draws);
    a mixture uses :class:`StratifiedMixtureELBO` (``num_particles`` draws per component).
    Adam, step size falling tenfold over the run. The objective is not convex: q ends on
    whichever mode(s) it is drawn to from its start, which is the point.

    Parameters
    ----------
    log_p : callable, (..., D) -> (...)
        Log density of p, up to an additive constant, broadcasting over leading dims.
    dim : int
        D.
    n_components : int
        K, the number of Gaussians in q.
    init_locs : Tensor, shape (K, D) or (n_init, K, D), optional
        Where q's components start (each start's). Default: drawn from N(0, I) with ``seed``.
    init_scale : float
        Every component starts as N(loc, init_scale^2 I). Narrow, as Pyro's ``AutoNormal``
        starts (0.1): a narrow q first climbs log p like gradient ascent, to the nearest mode.
        A broad start can settle instead on a wide q spanning several modes, another local
        optimum of KL(q||p).
    steps, lr, num_particles : int, float, int
        Optimiser steps, initial step size, Monte Carlo draws per step (per component).
    seed : int
        Seeds the start and the draws (the global RNG is left as it was).
    n_init, n_score : int
        Starts, and draws of q that score each start's end: ``E_q[log q - log p]`` =
        KL(q||p) - log Z by Monte Carlo, with the same seed for every start. The start with
        the lowest is returned, as EM keeps its best start (the forward fit's ``n_init``):
        one start may end on a local optimum (two components on one mode, or one spread
        between two), which is the seed's doing, not the objective's.

    Returns
    -------
    KLFit with ``direction="reverse"``; ``losses`` holds the negative ELBO estimates of the
    kept start, ``start_objectives`` the score of every start (with ``n_init`` > 1).
    """
    k = _check_n_components(n_components)
    d = _check_positive("dim", dim)
    _check_positive("steps", steps)
    _check_positive("lr", lr, float)
    _check_positive("num_particles", num_particles)
    _check_positive("init_scale", init_scale, float)
    if not callable(log_p):
        raise ConfigError(f"log_p must be a callable (..., D) -> (...); got {type(log_p).__name__}.")
    n_init = _check_positive("n_init", n_init)
    n_score = _check_positive("n_score", n_score)
    gen = torch.Generator().manual_seed(seed)
    if init_locs is None:
        init_locs = torch.randn(n_init, k, d, generator=gen)
    init_locs = torch.as_tensor(init_locs, dtype=torch.get_default_dtype()).detach().clone()
    if init_locs.shape == (k, d) and n_init == 1:
        init_locs = init_locs.unsqueeze(0)
    if init_locs.shape != (n_init, k, d):
        want = f"(n_components, dim) = ({k}, {d}) or " if n_init == 1 else ""
        raise ConfigError(f"init_locs must have shape {want}(n_init, n_components, dim) = "
                          f"({n_init}, {k}, {d}); got {tuple(init_locs.shape)}.")
    if n_init == 1:
        return _fit_reverse_once(log_p, d, k, init_locs[0], init_scale, steps, lr, num_particles, seed)
    fits, scores = [], []
    for i in range(n_init):
        fit = _fit_reverse_once(log_p, d, k, init_locs[i], init_scale, steps, lr, num_particles,
                                seed + 7919 * i)
        fits.append(fit)
        scores.append(_reverse_objective(fit, log_p, n_score, seed))
    best = min(range(n_init), key=lambda i: scores[i])
    fits[best].start_objectives = scores
    return fits[best]


@torch.no_grad()
def _reverse_objective(fit: KLFit, log_p, n: int, seed: int) -> float:
    """``E_q[log q(x) - log p(x)]`` over ``n`` draws of ``fit``'s q (seeded): KL(q||p) - log Z."""
    q = fit.distribution(torch.float64)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        x = q.sample((n,))
    value = (q.log_prob(x) - log_p(x.to(torch.get_default_dtype())).double()).mean()
    return float(value) if torch.isfinite(value) else float("inf")


def _fit_reverse_once(log_p, d: int, k: int, init_locs: torch.Tensor, init_scale: float,
                      steps: int, lr: float, num_particles: int, seed: int) -> KLFit:
    """One start of :func:`fit_reverse_kl`."""
    init_trils = init_scale * torch.eye(d).expand(k, d, d).clone()
    model = target_model(log_p, d)

    def guide():
        locs, trils, logits = _q_params(init_locs, init_trils, k)
        pyro.sample("z", gaussian_mixture(locs, trils, logits=logits))

    if k == 1:
        loss = Trace_ELBO(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=0)
    else:
        loss = StratifiedMixtureELBO(num_particles=num_particles)
    with pyro.get_param_store().scope(), torch.random.fork_rng():
        torch.manual_seed(seed)
        losses = _optimise(model, guide, loss, _decaying_adam(lr, steps), steps)
        return _fit_record("reverse", losses)


# ----------------------------------------------------------------------------- estimates
@torch.no_grad()
def kl_monte_carlo(a, b, n: int = 100_000, *, seed: int | None = None) -> tuple[float, float]:
    """``KL(a || b) = E_a[log a(x) - log b(x)]`` by Monte Carlo over ``n`` samples of ``a``.

    Parameters
    ----------
    a, b : distributions with ``sample`` and ``log_prob`` (normalised), event shape (D,)
        Cast them to float64 for large divergences: ``log b`` far in ``b``'s tail is large.
    n : int
        Samples of ``a``.
    seed : int, optional
        Seeds the draws without touching the global RNG.

    Returns
    -------
    (estimate, standard error): the sample mean and its standard error std / sqrt(n).
    """
    _check_positive("n", n)
    if n < 2:
        raise ConfigError(f"n must be at least 2 to have a standard error; got {n}.")
    with torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        x = a.sample((n,))  # (n, D)
    diff = a.log_prob(x) - b.log_prob(x)  # (n,)
    if not torch.isfinite(diff).all():
        return float("inf"), float("nan")
    return float(diff.mean()), float(diff.std() / math.sqrt(n))


@torch.no_grad()
def kl_quadrature_1d(a, b, *, lo: float, hi: float, n_panels: int = 2000, order: int = 16) -> float:
    """``KL(a || b) = int a(x) (log a(x) - log b(x)) dx`` in 1-D by composite Gauss-Legendre
    quadrature on ``[lo, hi]``, in float64.

    ``n_panels`` equal panels, each with an ``order``-point Gauss-Legendre rule, all nodes
    evaluated in one call. Exact for polynomials of degree ``2 * order - 1`` on each panel;
    for Gaussian-like integrands whose scale is much wider than a panel the error is at
    round-off level. ``a`` and ``b`` have event shape (1,); choose ``[lo, hi]`` so that
    ``a`` has no mass outside it.
    """
    import numpy as np

    _check_positive("n_panels", n_panels)
    _check_positive("order", order)
    if not hi > lo:
        raise ConfigError(f"hi must be greater than lo; got lo={lo}, hi={hi}.")
    nodes, weights = np.polynomial.legendre.leggauss(order)  # on [-1, 1]
    edges = torch.linspace(lo, hi, n_panels + 1, dtype=torch.float64)
    half = (edges[1:] - edges[:-1]) / 2  # (P,)
    mid = (edges[1:] + edges[:-1]) / 2  # (P,)
    x = mid[:, None] + half[:, None] * torch.from_numpy(nodes)[None, :]  # (P, order)
    w = half[:, None] * torch.from_numpy(weights)[None, :]  # (P, order)
    t = x.reshape(-1, 1)  # (P * order, 1)
    la = a.log_prob(t).to(torch.float64)
    lb = b.log_prob(t).to(torch.float64)
    integrand = torch.where(la > -700, la.exp() * (la - lb), torch.zeros_like(la))
    return float((w.reshape(-1) * integrand).sum())
