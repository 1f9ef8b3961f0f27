"""A Bayesian Gaussian mixture with diagonal covariances, written as a Pyro program for NUTS.

The model, for data ``x`` (N, D) and K components::

    w                 ~ Dirichlet(alpha, ..., alpha)                      weights (K,)
    mu_k[d]           ~ Normal(c[d], loc_scale * s[d])                    means (K, D)
    sigma_k[d]        ~ LogNormal(log(scale_median * s[d]), scale_log_sd) scales (K, D)
    x_n | w, mu, sigma ~ sum_k w_k prod_d Normal(x_n[d]; mu_k[d], sigma_k[d])

The discrete assignment of each point to a component is summed out exactly
(:class:`~pyro.distributions.MixtureSameFamily` computes a ``logsumexp`` over components), so
the posterior is over continuous parameters only and NUTS can sample it.

The priors are weakly informative and scaled to the data, in the manner of Richardson and
Green (1997): ``c`` and ``s`` are the data's per-dimension mean and standard deviation,
fixed once before sampling (:meth:`MixturePrior.from_data`). With the defaults
(``alpha = 1``, ``loc_scale = 2``, ``scale_median = 0.5``, ``scale_log_sd = 1``) the weights
are uniform on the simplex, the means can sit anywhere within about four data standard
deviations of the centre, and a component's width has prior median half the data's spread
and a 95% interval from about 0.07 to 3.5 data spreads. A LogNormal rather than a
HalfCauchy keeps the density of the scales at zero for ``sigma -> 0``, which keeps the
sampler away from the degenerate spikes of a mixture likelihood on one point.

Label switching: the likelihood is invariant to permuting the components, so the posterior
has K! symmetric modes. Quantities that do not depend on the labels (the per-observation
log-likelihood, hence PSIS-LOO) are unaffected. Per-component summaries are reported after
relabelling each draw by sorting the components on their first mean coordinate
(:func:`sort_components`), an identifiability constraint imposed after sampling; it is exact
when the components are well separated along that coordinate and a convention otherwise
(Stephens, 2000, discusses its limits).

References
----------
Richardson, S. and Green, P. J. (1997). On Bayesian analysis of mixtures with an unknown
number of components. JRSS B 59(4).
Hoffman, M. D. and Gelman, A. (2014). The No-U-Turn Sampler. JMLR 15.
Stephens, M. (2000). Dealing with label switching in mixture models. JRSS B 62(4).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from probgen.checks import check_int_at_least
from probgen.errors import ConfigError, DataError

__all__ = [
    "MixturePrior",
    "as_points",
    "MixtureSamples",
    "mixture_model",
    "pointwise_log_likelihood",
    "sort_components",
    "fit_nuts",
    "SITES",
]

SITES = ("weights", "locs", "scales")
"""The sample sites of :func:`mixture_model`, in the order they are drawn."""


@dataclass(frozen=True)
class MixturePrior:
    """Hyperparameters of :func:`mixture_model`.

    Attributes
    ----------
    center : Tensor (D,)
        Prior mean of every component mean (the data mean, from :meth:`from_data`).
    spread : Tensor (D,)
        The data's standard deviation per dimension; sets the prior widths.
    concentration : float
        Dirichlet concentration ``alpha`` of the weights (1: uniform on the simplex).
    loc_scale : float
        Prior standard deviation of the means, in units of ``spread``.
    scale_median : float
        Prior median of the component scales, in units of ``spread``.
    scale_log_sd : float
        Standard deviation of ``log sigma`` under the prior.
    """

    center: torch.Tensor
    spread: torch.Tensor
    concentration: float = 1.0
    loc_scale: float = 2.0
    scale_median: float = 0.5
    scale_log_sd: float = 1.0

    @classmethod
    def from_data(cls, x: torch.Tensor, **hyper) -> MixturePrior:
        """The data-scaled prior for ``x`` (N, D); ``hyper`` overrides the defaults."""
        x = as_points(x)
        spread = x.std(dim=0, unbiased=True) if x.shape[0] > 1 else torch.ones(x.shape[1])
        spread = torch.where(spread > 0, spread, torch.ones_like(spread))
        return cls(center=x.mean(dim=0), spread=spread, **hyper)


def as_points(x) -> torch.Tensor:
    """(N,) or (N, D) -> float (N, D); refuse anything else with a message that says why."""
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    if x.dim() == 1:
        x = x.unsqueeze(-1)  # (N,) -> (N, 1)
    if x.dim() != 2 or x.shape[0] == 0:
        raise DataError(
            f"x must be points of shape (N,) or (N, D) with N >= 1; got shape {tuple(x.shape)}. "
            "Flatten each example to a vector first.")
    if not torch.isfinite(x).all():
        raise DataError(f"x holds {int((~torch.isfinite(x)).sum())} non-finite values; "
                        "drop or impute them before fitting a mixture.")
    return x


def mixture_model(x: torch.Tensor, n_components: int, prior: MixturePrior) -> None:
    """The Pyro program: priors on weights, means and scales; the assignment summed out.

    Parameters
    ----------
    x : Tensor (N, D)
        Observations.
    n_components : int
        K, the number of components.
    prior : MixturePrior
        Hyperparameters (see the module docstring).
    """
    import pyro
    import pyro.distributions as dist

    K = n_components
    D = x.shape[-1]
    dtype, device = x.dtype, x.device
    center = prior.center.to(dtype=dtype, device=device).expand(D)
    spread = prior.spread.to(dtype=dtype, device=device).expand(D)
    alpha = torch.full((K,), float(prior.concentration), dtype=dtype, device=device)
    weights = pyro.sample("weights", dist.Dirichlet(alpha))  # (K,)
    with pyro.plate("components", K):
        locs = pyro.sample(  # (K, D)
            "locs", dist.Normal(center, prior.loc_scale * spread).to_event(1))
        scales = pyro.sample(  # (K, D)
            "scales",
            dist.LogNormal(torch.log(prior.scale_median * spread),
                           torch.full_like(spread, prior.scale_log_sd)).to_event(1))
    mixture = dist.MixtureSameFamily(
        dist.Categorical(probs=weights), dist.Normal(locs, scales).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("obs", mixture, obs=x)


def pointwise_log_likelihood(x: torch.Tensor, weights: torch.Tensor, locs: torch.Tensor,
                             scales: torch.Tensor) -> torch.Tensor:
    """``log p(x_n | w, mu, sigma)`` for every draw and every point, the labels summed out.

    Parameters
    ----------
    x : Tensor (N, D)
    weights : Tensor (..., K)
    locs, scales : Tensor (..., K, D)

    Returns
    -------
    Tensor (..., N)
        Invariant to permutations of the K components.
    """
    x = as_points(x).to(locs.dtype)
    xb = x[:, None, :]                                              # (N, 1, D)
    mu = locs.unsqueeze(-3)                                         # (..., 1, K, D)
    sd = scales.unsqueeze(-3)                                       # (..., 1, K, D)
    comp = torch.distributions.Normal(mu, sd).log_prob(xb).sum(-1)  # (..., N, K)
    log_w = torch.log(weights).unsqueeze(-2)                        # (..., 1, K)
    return torch.logsumexp(log_w + comp, dim=-1)                    # (..., N)


def sort_components(weights: torch.Tensor, locs: torch.Tensor, scales: torch.Tensor):
    """Relabel every draw so that the means increase along the first coordinate.

    Parameters
    ----------
    weights : Tensor (..., K)
    locs, scales : Tensor (..., K, D)

    Returns
    -------
    (weights, locs, scales)
        The same draws with the components permuted, draw by draw.
    """
    order = torch.argsort(locs[..., 0], dim=-1)                      # (..., K)
    idx = order.unsqueeze(-1).expand_as(locs)                        # (..., K, D)
    return weights.gather(-1, order), locs.gather(-2, idx), scales.gather(-2, idx)


@dataclass
class MixtureSamples:
    """Posterior draws of :func:`mixture_model`, chains kept apart.

    Attributes
    ----------
    weights : Tensor (C, S, K)
    locs, scales : Tensor (C, S, K, D)
        C chains of S draws each, as sampled (labels not sorted).
    divergences : list of int
        Divergent transitions after warm-up, per chain.
    seconds : float
        Wall-clock time of warm-up and sampling, all chains.
    """

    weights: torch.Tensor
    locs: torch.Tensor
    scales: torch.Tensor
    divergences: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n_components(self) -> int:
        return self.weights.shape[-1]

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """(C, S, N) per-observation log-likelihood of every draw."""
        return pointwise_log_likelihood(x, self.weights, self.locs, self.scales)

    def sorted(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The draws relabelled by :func:`sort_components`."""
        return sort_components(self.weights, self.locs, self.scales)


def fit_nuts(x: torch.Tensor, n_components: int, *, prior: MixturePrior | None = None,
             num_warmup: int = 200, num_samples: int = 200, num_chains: int = 2,
             init: Sequence[dict[str, torch.Tensor]] | None = None, seed: int = 0,
             target_accept_prob: float = 0.8, max_tree_depth: int = 8,
             jit_compile: bool = False,
             callback: Callable[[], None] | None = None) -> MixtureSamples:
    """Sample the posterior of :func:`mixture_model` with NUTS, one chain after another.

    Chains run sequentially in this process (Pyro's parallel chains spawn processes, which
    costs more than it saves for a model this small on a CPU). While sampling, torch runs on
    one intra-op thread: the tensors are tiny, and on a busy machine extra threads made each
    gradient about five times slower here (the previous setting is restored afterwards).

    Parameters
    ----------
    x : Tensor (N,) or (N, D)
    n_components : int
    prior : MixturePrior, optional
        Defaults to :meth:`MixturePrior.from_data` on ``x``.
    num_warmup, num_samples, num_chains : int
    init : sequence of dict, optional
        One starting point per chain, ``{"weights": (K,), "locs": (K, D), "scales": (K, D)}``
        (e.g. EM solutions); chains without one start from the prior median.
    seed : int
        Chain ``c`` uses seed ``seed + c``.
    target_accept_prob, max_tree_depth, jit_compile
        Passed to :class:`pyro.infer.NUTS`. ``jit_compile=True`` traces the potential with
        ``torch.jit`` (about 1.5 times faster here, but that torch API is deprecated).
    callback : callable, optional
        Called with no arguments after every iteration (warm-up included) of every chain,
        e.g. to advance a progress bar; an exception it raises stops sampling and propagates.

    Returns
    -------
    MixtureSamples
    """
    import pyro
    from pyro.infer import MCMC, NUTS
    from pyro.infer.autoguide.initialization import init_to_median, init_to_value

    x = as_points(x)
    K = check_int_at_least("n_components", n_components, 1)
    check_int_at_least("num_warmup", num_warmup, 0)
    check_int_at_least("num_samples", num_samples, 1)
    check_int_at_least("num_chains", num_chains, 1)
    prior = MixturePrior.from_data(x) if prior is None else prior
    init = list(init or [])
    draws: dict[str, list[torch.Tensor]] = {s: [] for s in SITES}
    inits = [_check_init(v, K, x.shape[1]) for v in init]
    divergences: list[int] = []
    threads = torch.get_num_threads()
    start = time.perf_counter()
    try:
        torch.set_num_threads(1)
        for chain in range(num_chains):
            pyro.set_rng_seed(seed + chain)
            strategy = init_to_value(values=inits[chain]) if chain < len(inits) else init_to_median
            kernel = NUTS(mixture_model, target_accept_prob=target_accept_prob,
                          max_tree_depth=max_tree_depth, init_strategy=strategy,
                          jit_compile=jit_compile, ignore_jit_warnings=jit_compile)
            hook = None if callback is None else (lambda *_: callback())
            mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=num_warmup,
                        num_chains=1, disable_progbar=True, hook_fn=hook)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace.*deprecated",
                                        category=FutureWarning)
                mcmc.run(x, K, prior)
            samples = mcmc.get_samples()  # site -> (S, ...)
            for s in SITES:
                draws[s].append(samples[s].detach())
            divergences.append(len(mcmc.diagnostics()["divergences"]["chain 0"]))
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - start
    return MixtureSamples(
        weights=torch.stack(draws["weights"]),  # (C, S, K)
        locs=torch.stack(draws["locs"]),        # (C, S, K, D)
        scales=torch.stack(draws["scales"]),    # (C, S, K, D)
        divergences=divergences,
        seconds=seconds,
    )


def _check_init(values: dict, K: int, D: int) -> dict[str, torch.Tensor]:
    expected = {"weights": (K,), "locs": (K, D), "scales": (K, D)}
    out = {}
    for name, shape in expected.items():
        if name not in values:
            raise ConfigError(f"init is missing {name!r}; give {sorted(expected)} for each chain.")
        v = torch.as_tensor(values[name], dtype=torch.get_default_dtype())
        if tuple(v.shape) != shape:
            raise ConfigError(f"init[{name!r}] must have shape {shape}; got {tuple(v.shape)}.")
        out[name] = v
    w = out["weights"].clamp_min(1e-6)
    out["weights"] = w / w.sum()
    out["scales"] = out["scales"].clamp_min(1e-6)
    if not math.isfinite(float(out["locs"].sum())):
        raise ConfigError("init['locs'] holds non-finite values.")
    return out
