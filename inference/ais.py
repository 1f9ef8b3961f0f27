"""Annealed importance sampling (AIS) for log p(x) of decoder-based models, and the BDMC sandwich.

AIS (Neal, 2001, "Annealed importance sampling", Statistics and Computing 11) estimates the
marginal likelihood ``p(x) = ∫ p(z) p(x|z) dz`` of a latent-variable model by moving
samples from a tractable start distribution to the posterior ``p(z|x)`` through a sequence of
intermediate distributions, with a Markov transition that leaves each one invariant, and
accumulating importance weights on the way. Wu, Burda, Salakhutdinov and Grosse (2017),
"On the quantitative analysis of decoder-based generative models", use it with Hamiltonian
Monte Carlo (HMC) transitions to put VAE decoders and GAN generators (the latter with a
Gaussian observation model of width ``sigma``) on the same footing; this module follows them.

The path
--------
The chains start from ``q0 = N(0, I)`` and follow the geometric path

    log f_beta(z) = log q0(z) + beta * [log p(z) + log p(x|z) - log q0(z)],  0 = beta_0 < ... < beta_T = 1,

which, for the usual standard normal prior, is exactly Wu et al.'s ``p(z) p(x|z)^beta``; for
any other prior with a density on R^d it is a geometric bridge from ``N(0, I)`` to the
posterior and stays valid (``Z_0 = 1``, ``Z_T = p(x)``). The schedule of ``beta`` is the
sigmoid schedule of Wu et al. (and of Grosse et al.'s BDMC code) or a linear one; its length
``n_steps`` is the number of transitions (``n_steps + 1`` values of ``beta``). Each HMC
transition jitters its step size by a random factor in ``[1 - jitter, 1 + jitter]`` (Neal,
2011): without it the log weights on a Gaussian posterior spread about 1.5 times as wide
(0.27-0.40 against 0.19-0.25 nats at 800 steps, measured), from near-periodic trajectories.

Estimates and their error
-------------------------
With ``C`` independent chains per example, the forward estimate is
``log p_hat(x) = logsumexp_c(log w_c) - log C``: ``p_hat`` is unbiased for ``p(x)``, so its log
is a *stochastic lower bound* (``E[log p_hat] <= log p(x)``, Jensen). The standard error
reported per example is the delta-method one, ``se(log mean w) ~= sd(w) / (sqrt(C) mean(w))``,
computed in log space as ``sqrt((r - 1) / (C - 1))`` with ``r = mean(w^2) / mean(w)^2``.
It understates the error when the weights are heavy-tailed; check the Pareto k-hat of the
returned ``log_weights`` (:func:`probgen.eval.diagnostics.pareto_khat`).

Bidirectional Monte Carlo (BDMC; Grosse, Ghahramani and Adams, 2015, "Sandwiching the
marginal likelihood using bidirectional Monte Carlo"): on data simulated from the model, the
latent ``z`` that produced ``x`` is an exact posterior sample. Running the same chain in
reverse from it (``beta`` from 1 to 0) gives an unbiased estimate of ``1 / p(x)``, hence a
*stochastic upper bound*; the forward and reverse estimates sandwich ``log p(x)`` and their
gap bounds the error of the forward one on such data.

HMC step sizes are adapted per chain toward an acceptance rate of 0.65 with Wu et al.'s rule
(multiplied by 1.02 when a running average of the acceptance probability is above the target,
by 0.98 otherwise). Adapting during the estimate makes each chain's step size depend on its
own past, which voids the unbiasedness argument of AIS and, measured, biases the estimate
upward; by default the adaptation therefore runs in a pilot pass (at 5% a step) and the
estimate uses its step sizes frozen per ``beta`` (``adapt="pilot"``; ``"online"`` is Wu et
al.'s cheaper way).

The model protocol used here: ``latent_dim``, ``prior_log_prob(z)`` (``(..., d) -> (...)``),
and either ``log_likelihood(x, z)`` (``x (N, *shape)``, ``z (S, N, d) -> (S, N)``) or
``decode(z)`` wrapped by :func:`gaussian_observation`; or ``latent_dim`` and
``log_joint(x, z)`` = log p(z) + log p(x|z) in one call (``z (S, N, d) -> (S, N)``; what
:func:`probgen.inference.program_bounds.program_ais` gives a Pyro program). Gradients with respect to ``z`` are
taken with :func:`torch.autograd.grad` (parameters get no ``.grad``); everything else runs
under :func:`torch.no_grad`. Models must score chains independently (no batch-norm in
training mode: call ``model.eval()`` first). Computation runs in ``x``'s dtype and device;
log weights are accumulated in float64.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from probgen.errors import ConfigError, suggest
from probgen.inference.bounds import DEFAULT_MAX_ELEMENTS
from probgen.progress import bar as progress_bar

__all__ = [
    "AISResult",
    "BDMCResult",
    "GaussianObservation",
    "SCHEDULES",
    "SigmaSelection",
    "ais",
    "bdmc",
    "gaussian_observation",
    "linear_schedule",
    "reverse_ais",
    "select_sigma",
    "sigmoid_schedule",
]

_LOG_2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------------------- schedules
def sigmoid_schedule(n_steps: int, radius: float = 4.0) -> torch.Tensor:
    """Sigmoid annealing schedule of Wu et al. (2017) / Grosse et al. (2015).

    ``beta_t = (s_t - s_0) / (s_T - s_0)`` with ``s = sigmoid(linspace(-radius, radius, T + 1))``:
    small steps near both ends, where the log weights change fastest.

    Returns
    -------
    Tensor, shape (n_steps + 1,), float64, from exactly 0 to exactly 1.
    """
    _check_positive_int("n_steps", n_steps)
    s = torch.sigmoid(torch.linspace(-radius, radius, n_steps + 1, dtype=torch.float64))
    return (s - s[0]) / (s[-1] - s[0])


def linear_schedule(n_steps: int) -> torch.Tensor:
    """Evenly spaced ``beta`` from 0 to 1; shape (n_steps + 1,), float64."""
    _check_positive_int("n_steps", n_steps)
    return torch.linspace(0.0, 1.0, n_steps + 1, dtype=torch.float64)


SCHEDULES: dict[str, Callable[[int], torch.Tensor]] = {
    "sigmoid": sigmoid_schedule,
    "linear": linear_schedule,
}


# ----------------------------------------------------------------------------- records
@dataclass
class AISResult:
    """What one AIS run returns.

    Attributes
    ----------
    log_px : Tensor (N,)
        Per-example estimate of log p(x), nats: a stochastic lower bound for
        ``direction="forward"``, a stochastic upper bound for ``direction="reverse"``.
    stderr : Tensor (N,)
        Delta-method Monte Carlo standard error of ``log_px`` over chains (NaN with one chain).
    log_weights : Tensor (C, N), float64
        Log importance weights per chain and example (for the reverse direction, the log of
        the weights whose mean estimates ``1 / p(x)``).
    acceptance : Tensor (C, N)
        Mean HMC acceptance probability of each chain over the schedule.
    step_size : Tensor (n_steps + 1, N)
        Leapfrog step size used at each ``beta`` (rows in increasing ``beta``), geometric mean
        over chains, before the random jitter.
    n_steps, n_chains, n_leapfrog : int
    schedule : str
    direction : {"forward", "reverse"}
    adapt : {"pilot", "online", "none"}
    sigma : float or None
        Width of the Gaussian observation model, when one wrapped ``decode``.
    """

    log_px: torch.Tensor
    stderr: torch.Tensor
    log_weights: torch.Tensor
    acceptance: torch.Tensor
    step_size: torch.Tensor
    n_steps: int
    n_chains: int
    n_leapfrog: int
    schedule: str
    direction: str
    adapt: str
    sigma: float | None = None


@dataclass
class BDMCResult:
    """The bidirectional Monte Carlo sandwich (Grosse et al., 2015).

    Attributes
    ----------
    lower : AISResult
        Forward AIS from the prior: stochastic lower bound on log p(x).
    upper : AISResult
        Reverse AIS from an exact posterior sample: stochastic upper bound on log p(x).
    gap : Tensor (N,)
        ``upper.log_px - lower.log_px`` per example; it shrinks to 0 as ``n_steps`` grows.
    """

    lower: AISResult
    upper: AISResult
    gap: torch.Tensor


@dataclass
class SigmaSelection:
    """The observation width chosen on validation data by :func:`select_sigma`.

    Attributes
    ----------
    sigma : float
        The width with the highest mean AIS estimate.
    sigmas : tuple of float
        The grid searched.
    scores, stderrs : list of float
        Mean AIS log p(x) on the validation data for each width, with its standard error over
        examples.
    """

    sigma: float
    sigmas: tuple[float, ...]
    scores: list[float]
    stderrs: list[float]


# ----------------------------------------------------------------------------- observation model
class GaussianObservation:
    """A decoder (e.g. a GAN generator) with a Gaussian observation model of width ``sigma``.

    ``p(x | z) = N(x; decode(z), sigma^2 I)`` (Wu et al., 2017), which gives a model without
    its own likelihood the ``log_likelihood`` AIS needs. Everything else is the wrapped model's.
    """

    def __init__(self, model, sigma: float):
        _require(model, ("latent_dim", "prior_log_prob", "decode"), "a Gaussian observation model")
        sigma = float(sigma)
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ConfigError(
                f"sigma (the width of the Gaussian observation model) must be a positive finite "
                f"number; got {sigma!r}. Choose it on validation data with select_sigma().")
        self.model = model
        self.sigma = sigma

    @property
    def latent_dim(self) -> int:
        return int(self.model.latent_dim)

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.prior_log_prob(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log N(x; decode(z), sigma^2 I)`` summed over data dims; x (N, *shape), z (S, N, d) -> (S, N)."""
        mean = self.model.decode(z)  # (S, N, *shape)
        if mean.shape[-x.dim():] != x.shape:
            raise ConfigError(
                f"decode(z) for z of shape {tuple(z.shape)} returned shape {tuple(mean.shape)}, "
                f"which does not end in the data shape {tuple(x.shape)}; decode must map "
                f"(..., latent_dim) to (..., *data_shape).")
        r = ((x - mean) / self.sigma).flatten(start_dim=z.dim() - 1)  # (S, N, D)
        d = r.shape[-1]
        return -0.5 * r.pow(2).sum(-1) - d * (math.log(self.sigma) + 0.5 * _LOG_2PI)


def gaussian_observation(model, sigma: float) -> GaussianObservation:
    """Wrap ``model.decode`` in ``N(x; decode(z), sigma^2 I)`` (Wu et al., 2017); see
    :class:`GaussianObservation`."""
    return GaussianObservation(model, sigma)


# ----------------------------------------------------------------------------- public API
_COMMON_PARAMS = """n_steps : int
        Number of transitions in the schedule (``n_steps + 1`` values of ``beta``).
    n_chains : int
        Independent chains per example (``C``).
    schedule : {"sigmoid", "linear"}
    n_leapfrog : int
        Leapfrog steps per HMC transition.
    step_size : float
        Initial leapfrog step size.
    adapt : {"pilot", "online", "none"}
        ``"pilot"`` (default): a first pass of ``min(n_chains, 8)`` chains adapts the step size
        per chain (Wu et al.'s rule, at 5% a step instead of 2% so that short schedules reach
        the target acceptance too); its per-example step size at each ``beta`` (geometric
        mean over the pilot's chains) is then frozen for a second, independent pass that gives
        the estimate, which is therefore an exact AIS estimate (at most twice the cost).
        ``"online"``: Wu et al.'s per-chain adaptation during the estimate itself (one pass,
        but the step size then depends on the chain's own past, which biases the estimate
        upward: +0.012 and +0.018 nats, 2.4 and 3.5 standard errors, in two runs of 256 chains
        at 1600 steps on the 2-d linear-Gaussian model of the tests, where the pilot gave
        +0.001). ``"none"``: ``step_size`` throughout.
    target_accept : float
        Acceptance rate the adaptation aims at (0.65, as Wu et al.).
    jitter : float
        Each transition scales its step size by ``Uniform(1 - jitter, 1 + jitter)`` (Neal, 2011,
        sec. 5.4.2.2): it breaks the near-periodic trajectories that make HMC mix slowly on
        Gaussian-like posteriors (it narrowed the spread of the log weights by about a third
        in the tests). 0 turns it off.
    sigma : float, optional
        Width of a Gaussian observation model around ``decode(z)``; required when the model
        has no ``log_likelihood``, ignored otherwise (a model's own likelihood is kept).
    batch_size : int, optional
        Examples per pass (each pass holds ``C * batch_size`` chains); default: as many as keep
        ``C * batch_size * data values`` within 2**23
        (:data:`probgen.inference.bounds.DEFAULT_MAX_ELEMENTS`), so that the memory of a pass
        does not grow with N (668 MNIST images with 16 chains; the HMC gradients make a pass
        hold about 11 tensors of that size: 435-440 MiB above the process's floor for the
        MNIST VAE at N = 2,000 and 5,000, benchmarks/eval_memory.py).
    generator : torch.Generator, optional
        Source of randomness (on ``x``'s device), for repeatable estimates.
    progress : bool
        Show a bar over the annealing steps of every pass (pilot included) with the rate and
        time left (:mod:`probgen.progress`: on a terminal only). It draws no random numbers."""


def _doc(f):
    f.__doc__ = f.__doc__.replace("{common}", _COMMON_PARAMS)
    return f


@_doc
@torch.no_grad()
def ais(model, x: torch.Tensor, *, n_steps: int = 500, n_chains: int = 16,
        schedule: str = "sigmoid", n_leapfrog: int = 10, step_size: float = 0.05,
        adapt: str = "pilot", target_accept: float = 0.65, jitter: float = 0.5,
        sigma: float | None = None, batch_size: int | None = None,
        generator: torch.Generator | None = None, progress: bool = False) -> AISResult:
    """Forward AIS estimate of log p(x) per example: a stochastic lower bound.

    Parameters
    ----------
    model
        Has ``latent_dim``, ``prior_log_prob(z)`` and ``log_likelihood(x, z)``; or, with
        ``sigma`` given, ``decode(z)`` (wrapped by :func:`gaussian_observation`).
    x : Tensor, shape (N, *data_shape)
    {common}

    Returns
    -------
    AISResult
        ``direction="forward"``.
    """
    target, used_sigma = _as_target(model, sigma)
    betas = _schedule(schedule, n_steps)
    opts = _Options.check(x, n_chains, n_leapfrog, step_size, adapt, target_accept, jitter, batch_size)
    with _bar(x, betas, opts, 1, progress) as bar:
        eps_table = _pilot(target, x, betas, opts, generator, bar) if opts.adapt == "pilot" else None
        return _run(target, x, betas, _prior_init(target, opts, generator), "forward", schedule,
                    used_sigma, opts, eps_table, generator, bar=bar)


@_doc
@torch.no_grad()
def reverse_ais(model, x: torch.Tensor, z_posterior: torch.Tensor, *, n_steps: int = 500,
                n_chains: int = 16, schedule: str = "sigmoid", n_leapfrog: int = 10,
                step_size: float = 0.05, adapt: str = "pilot", target_accept: float = 0.65,
                jitter: float = 0.5, sigma: float | None = None, batch_size: int | None = None,
                generator: torch.Generator | None = None, progress: bool = False) -> AISResult:
    """Reverse AIS from exact posterior samples: a stochastic upper bound on log p(x).

    The chain runs the schedule backwards (``beta`` from 1 to 0) from ``z ~ p(z | x)``; the mean
    of its weights is unbiased for ``1 / p(x)`` (Grosse et al., 2015), so ``-log`` of it is a
    stochastic upper bound. Exact posterior samples are at hand for data simulated from the
    model: the ``z`` that generated each ``x``. With ``adapt="pilot"`` the step sizes are tuned
    by a forward pilot from the prior, so they do not depend on ``z_posterior``.

    Parameters
    ----------
    model, x
        As for :func:`ais`.
    z_posterior : Tensor, shape (N, latent_dim) or (C, N, latent_dim)
        Exact posterior samples; with shape (N, d) every chain of an example starts from the
        same one (still unbiased, only more correlated).
    {common}

    Returns
    -------
    AISResult
        ``direction="reverse"``; ``log_px`` is the upper estimate.
    """
    target, used_sigma = _as_target(model, sigma)
    betas = _schedule(schedule, n_steps)
    opts = _Options.check(x, n_chains, n_leapfrog, step_size, adapt, target_accept, jitter, batch_size)
    init = _posterior_init(target, x, z_posterior, opts)
    with _bar(x, betas, opts, 1, progress) as bar:
        eps_table = _pilot(target, x, betas, opts, generator, bar) if opts.adapt == "pilot" else None
        return _run(target, x, betas.flip(0), init, "reverse", schedule, used_sigma, opts,
                    None if eps_table is None else eps_table.flip(0), generator, bar=bar)


@torch.no_grad()
def bdmc(model, x: torch.Tensor, z: torch.Tensor, *, n_steps: int = 500, n_chains: int = 16,
         schedule: str = "sigmoid", n_leapfrog: int = 10, step_size: float = 0.05,
         adapt: str = "pilot", target_accept: float = 0.65, jitter: float = 0.5,
         sigma: float | None = None, batch_size: int | None = None,
         generator: torch.Generator | None = None, progress: bool = False) -> BDMCResult:
    """Bidirectional Monte Carlo (Grosse et al., 2015) on data simulated from the model.

    Forward AIS from the prior (lower) and reverse AIS from ``z`` (upper), with the same
    transitions: with ``adapt="pilot"`` one forward pilot tunes the step size at each ``beta``
    and both directions use it. For ``x`` simulated jointly with ``z``,
    ``lower <= log p(x) <= upper`` up to Monte Carlo error, and the gap shrinks as ``n_steps``
    grows. Parameters are those of :func:`reverse_ais` (``z`` is its ``z_posterior``).
    """
    target, used_sigma = _as_target(model, sigma)
    betas = _schedule(schedule, n_steps)
    opts = _Options.check(x, n_chains, n_leapfrog, step_size, adapt, target_accept, jitter, batch_size)
    rev_init = _posterior_init(target, x, z, opts)
    with _bar(x, betas, opts, 2, progress) as bar:
        eps_table = _pilot(target, x, betas, opts, generator, bar) if opts.adapt == "pilot" else None
        lower = _run(target, x, betas, _prior_init(target, opts, generator), "forward", schedule,
                     used_sigma, opts, eps_table, generator, bar=bar)
        upper = _run(target, x, betas.flip(0), rev_init, "reverse", schedule, used_sigma, opts,
                     None if eps_table is None else eps_table.flip(0), generator, bar=bar)
    return BDMCResult(lower=lower, upper=upper, gap=upper.log_px - lower.log_px)


@torch.no_grad()
def select_sigma(model, x_val: torch.Tensor, sigmas: Sequence[float] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
                 *, n_steps: int = 100, n_chains: int = 4, **ais_options) -> SigmaSelection:
    """Choose the Gaussian observation width on validation data (Wu et al., 2017).

    Runs a short AIS for each width in ``sigmas`` on ``x_val`` and keeps the one with the
    highest mean estimate of log p(x). Warns when the best width is at an end of the grid.

    Parameters
    ----------
    model
        Has ``latent_dim``, ``prior_log_prob`` and ``decode``.
    x_val : Tensor, shape (N, *data_shape)
        Validation data (not the data the estimate will be reported on).
    sigmas : sequence of float
        The grid, in the data's units.
    n_steps, n_chains, **ais_options
        Passed to :func:`ais` (every keyword of it but ``sigma``).
    """
    sigmas = tuple(float(s) for s in sigmas)
    if not sigmas:
        raise ConfigError("sigmas must hold at least one width; got an empty grid.")
    scores, stderrs = [], []
    for s in sigmas:
        res = ais(gaussian_observation(model, s), x_val, n_steps=n_steps, n_chains=n_chains,
                  **ais_options)
        v = res.log_px.double()
        scores.append(float(v.mean()))
        stderrs.append(float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else float("nan"))
    best = max(range(len(sigmas)), key=lambda i: scores[i] if math.isfinite(scores[i]) else -math.inf)
    if len(sigmas) > 1 and best in (0, len(sigmas) - 1):
        warnings.warn(
            f"the best observation width sigma={sigmas[best]} is at the "
            f"{'lower' if best == 0 else 'upper'} end of the grid {sigmas}; extend the grid in "
            f"that direction.", UserWarning, stacklevel=2)
    return SigmaSelection(sigma=sigmas[best], sigmas=sigmas, scores=scores, stderrs=stderrs)


# ----------------------------------------------------------------------------- the sampler
@dataclass(frozen=True)
class _Options:
    n_chains: int
    n_leapfrog: int
    step_size: float
    adapt: str
    target_accept: float
    jitter: float
    batch_size: int | None

    @classmethod
    def check(cls, x, n_chains, n_leapfrog, step_size, adapt, target_accept, jitter, batch_size):
        if not isinstance(x, torch.Tensor) or x.dim() < 2 or not x.is_floating_point():
            raise ConfigError(
                f"x must be a floating-point tensor of shape (N, *data_shape); got "
                f"{type(x).__name__} of shape {tuple(getattr(x, 'shape', ()))}.")
        _check_positive_int("n_chains", n_chains)
        _check_positive_int("n_leapfrog", n_leapfrog)
        if batch_size is not None:
            _check_positive_int("batch_size", batch_size)
        else:
            per_example = max(1, math.prod(x.shape[1:])) * n_chains
            batch_size = max(1, DEFAULT_MAX_ELEMENTS // per_example)
        if not (float(step_size) > 0 and math.isfinite(float(step_size))):
            raise ConfigError(f"step_size must be a positive finite number; got {step_size!r}.")
        if adapt not in ADAPT_MODES:
            raise ConfigError(f"adapt must be one of {', '.join(ADAPT_MODES)}; got {adapt!r}."
                              + suggest(str(adapt), ADAPT_MODES))
        if not 0.0 < float(target_accept) < 1.0:
            raise ConfigError(f"target_accept must lie in (0, 1); got {target_accept!r}.")
        if not 0.0 <= float(jitter) < 1.0:
            raise ConfigError(f"jitter must lie in [0, 1); got {jitter!r}.")
        return cls(n_chains, n_leapfrog, float(step_size), adapt, float(target_accept),
                   float(jitter), batch_size)


ADAPT_MODES = ("pilot", "online", "none")
PILOT_CHAINS = 8  # chains per example in the step-size pilot
WU_RATE = 0.02  # online adaptation: step size times 1.02 or 0.98 per transition (Wu et al.)
PILOT_RATE = 0.05  # the pilot only tunes, so it may move faster: short schedules reach the target


def _prior_init(target, opts, generator):
    d = _latent_dim(target)

    def init(xb, _sl):
        return torch.randn((opts.n_chains, xb.shape[0], d), dtype=xb.dtype, device=xb.device,
                           generator=generator)
    return init


def _posterior_init(target, x, z_posterior, opts):
    d = _latent_dim(target)
    n, c = x.shape[0], opts.n_chains
    z_posterior = torch.as_tensor(z_posterior)
    if z_posterior.shape == (n, d):
        z_posterior = z_posterior.unsqueeze(0).expand(c, n, d)
    elif z_posterior.shape != (c, n, d):
        raise ConfigError(
            f"z_posterior must have shape (N, latent_dim) = {(n, d)} or (n_chains, N, latent_dim) "
            f"= {(c, n, d)}; got {tuple(z_posterior.shape)}. Pass the latent codes that "
            f"generated x.")
    z_posterior = z_posterior.to(dtype=x.dtype, device=x.device)

    def init(_xb, sl):
        return z_posterior[:, sl].clone()
    return init


def _bar(x, betas, opts, passes: int, progress: bool):
    """One bar over the annealing steps of ``passes`` estimate passes and the pilot, if any."""
    n = x.shape[0]
    bs = opts.batch_size or max(n, 1)
    per_pass = -(-n // bs) * (len(betas) - 1)  # batches x steps
    passes += opts.adapt == "pilot"
    return progress_bar(passes * per_pass, desc="AIS", unit="step", progress=progress)


def _pilot(target, x, betas, opts, generator, bar=None) -> torch.Tensor:
    """Step size per ``beta`` and example, tuned by a forward pass with online adaptation.

    The pilot runs ``min(n_chains, PILOT_CHAINS)`` chains per example. Returns a table
    (T + 1, N): the geometric mean over the pilot's chains of the step size
    each transition used; rows 0 and T (no transition there) repeat their neighbours.
    """
    tables = []
    n = x.shape[0]
    bs = opts.batch_size or max(n, 1)
    opts = replace(opts, n_chains=min(opts.n_chains, PILOT_CHAINS))
    init = _prior_init(target, opts, generator)
    if bar is not None:
        bar.set_description("AIS step-size pilot")
    for start in range(0, n, bs):
        sl = slice(start, min(start + bs, n))
        xb = x[sl]
        tables.append(_anneal(target, xb, init(xb, sl), betas, opts, None, generator,
                              rate=PILOT_RATE, bar=bar)[2])
    return torch.cat(tables, dim=1)


def _run(target, x, betas, init, direction, schedule, sigma, opts, eps_table, generator, *,
         bar=None) -> AISResult:
    """Run the annealing loop over batches of examples and assemble the record."""
    n = x.shape[0]
    bs = opts.batch_size or max(n, 1)
    parts = []
    if bar is not None:
        bar.set_description(f"AIS {direction}")
    for start in range(0, n, bs):
        sl = slice(start, min(start + bs, n))
        xb = x[sl]
        table = None if eps_table is None else eps_table[:, sl]
        parts.append(_anneal(target, xb, init(xb, sl), betas, opts, table, generator, bar=bar))
    log_w = torch.cat([p[0] for p in parts], dim=1)  # (C, N)
    acc = torch.cat([p[1] for p in parts], dim=1)
    eps = torch.cat([p[2] for p in parts], dim=1)
    if direction == "reverse":
        eps = eps.flip(0)  # rows follow increasing beta in every record
    est, se = _log_mean_exp_with_stderr(log_w)
    if direction == "reverse":
        est = -est
    return AISResult(log_px=est.to(x.dtype), stderr=se.to(x.dtype), log_weights=log_w,
                     acceptance=acc, step_size=eps, n_steps=len(betas) - 1,
                     n_chains=log_w.shape[0], n_leapfrog=opts.n_leapfrog, schedule=schedule,
                     direction=direction, adapt=opts.adapt, sigma=sigma)


def _anneal(target, x, z, betas, opts, eps_table, generator, rate=WU_RATE, bar=None):
    """One pass of AIS along ``betas`` (increasing: forward; decreasing: reverse).

    For i = 1..T: ``log w += (beta_i - beta_{i-1}) * h(z)`` with
    ``h = log p(z) + log p(x|z) - log q0(z)``, then (except after the last) one HMC transition
    that leaves ``f_{beta_i}`` invariant. z: (C, N, d). With ``eps_table`` (T + 1, N) the step
    size of transition i is ``eps_table[i]``; without it, it adapts per chain unless
    ``opts.adapt == "none"``, multiplied by ``1 + rate`` or ``1 - rate`` each step.

    ``bar``, when given, advances by one at every ``beta``.

    Returns log weights (C, N) float64, mean acceptance probability (C, N), and the step size
    used at each beta (T + 1, N) (geometric mean over chains).
    """
    c, n, _ = z.shape
    T = len(betas) - 1
    b = betas.tolist()
    online = eps_table is None and opts.adapt != "none"
    eps = torch.full((c, n, 1), opts.step_size, dtype=x.dtype, device=x.device)
    avg_acc = torch.full((c, n), opts.target_accept, dtype=x.dtype, device=x.device)
    acc_sum = torch.zeros((c, n), dtype=torch.float64, device=x.device)
    log_w = torch.zeros((c, n), dtype=torch.float64, device=x.device)
    used = torch.empty((T + 1, n), dtype=x.dtype, device=x.device)
    h, grad_h = _h_and_grad(target, x, z)
    if not torch.isfinite(h).all():
        bad = int((~torch.isfinite(h)).sum())
        raise ConfigError(
            f"log p(z) + log p(x|z) (or its gradient) is not finite at {bad} of {h.numel()} "
            f"starting points; the model must give a finite log density wherever the chains "
            f"start (for the reverse direction: at the given posterior samples).")
    for i in range(1, T + 1):
        log_w += (b[i] - b[i - 1]) * h.double()
        if bar is not None:
            bar.update(1)
        if i == T:
            break
        if eps_table is not None:
            eps = eps_table[i].to(x.dtype).view(1, n, 1).expand(c, n, 1)
        used[i] = eps.log().mean(0).squeeze(-1).exp()
        z, h, grad_h, a = _hmc(target, x, z, h, grad_h, b[i], eps, opts, generator)
        acc_sum += a.double()
        if online:
            avg_acc = 0.9 * avg_acc + 0.1 * a
            up = (avg_acc > opts.target_accept).unsqueeze(-1)
            eps = torch.where(up, eps * (1.0 + rate), eps * (1.0 - rate)).clamp_(1e-4, 1.0)
    if T >= 2:
        used[0], used[T] = used[1], used[T - 1]
    else:
        used[:] = opts.step_size
    acceptance = acc_sum / max(T - 1, 1)
    return log_w, acceptance.to(x.dtype), used


def _hmc(target, x, z, h, grad_h, beta, eps, opts, generator):
    """One HMC transition (Neal, 2011, "MCMC using Hamiltonian dynamics") leaving f_beta invariant.

    ``log f_beta(z) = log q0(z) + beta * h(z)`` with ``q0 = N(0, I)`` (gradient ``-z``).
    ``eps`` (C, N, 1) is scaled by a random factor in ``[1 - jitter, 1 + jitter]`` per chain.
    Proposals where the model's log density is not finite are rejected.
    Returns the new state (z, h, grad_h) and the acceptance probability (C, N).
    """
    def log_f(z_, h_):
        return _std_normal_log_prob(z_) + beta * h_

    def grad_log_f(z_, g_):
        return -z_ + beta * g_

    p0 = torch.randn(z.shape, dtype=z.dtype, device=z.device, generator=generator)
    if opts.jitter > 0:
        u = torch.rand(eps.shape, dtype=z.dtype, device=z.device, generator=generator)
        eps = eps * (1.0 + opts.jitter * (2.0 * u - 1.0))
    zn, hn, gn = z, h, grad_h
    p = p0 + 0.5 * eps * grad_log_f(zn, gn)
    for step in range(opts.n_leapfrog):
        zn = zn + eps * p
        hn, gn = _h_and_grad(target, x, zn)
        if step < opts.n_leapfrog - 1:
            p = p + eps * grad_log_f(zn, gn)
    p = p + 0.5 * eps * grad_log_f(zn, gn)
    log_ratio = (log_f(zn, hn) - 0.5 * p.pow(2).sum(-1)) - (log_f(z, h) - 0.5 * p0.pow(2).sum(-1))
    log_ratio = torch.where(torch.isfinite(log_ratio), log_ratio,
                            torch.full_like(log_ratio, -math.inf))
    accept_prob = log_ratio.clamp(max=0.0).exp()
    u = torch.rand(accept_prob.shape, dtype=z.dtype, device=z.device, generator=generator)
    accept = u < accept_prob
    z = torch.where(accept.unsqueeze(-1), zn, z)
    h = torch.where(accept, hn, h)
    grad_h = torch.where(accept.unsqueeze(-1), gn, grad_h)
    return z, h, grad_h, accept_prob


def _h_and_grad(target, x, z):
    """``h(z) = log p(z) + log p(x|z) - log N(z; 0, I)`` (C, N) and its gradient in z (C, N, d).

    Points where the value or the gradient is not finite get ``h = -inf`` (so HMC rejects them)
    and a zero gradient.
    """
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        if callable(getattr(target, "log_joint", None)):
            parts = (("log_joint(x, z)", target.log_joint(x, z)),)
        else:
            parts = (("prior_log_prob(z)", target.prior_log_prob(z)),
                     ("log_likelihood(x, z)", target.log_likelihood(x, z)))
        for name, v in parts:
            if v.shape != z.shape[:-1]:
                raise ConfigError(
                    f"{name} has shape {tuple(v.shape)} for x of shape {tuple(x.shape)} and z of "
                    f"shape {tuple(z.shape)}; expected {tuple(z.shape[:-1])} (one value per chain "
                    f"and example): prior_log_prob maps (..., d) to (...), log_likelihood and "
                    f"log_joint map x (N, ...) and z (S, N, d) to (S, N).")
        lp = parts[0][1] if len(parts) == 1 else parts[0][1] + parts[1][1]
        (g,) = torch.autograd.grad(lp.sum(), z)
    z = z.detach()
    h = lp.detach() - _std_normal_log_prob(z)
    grad_h = g + z
    ok = torch.isfinite(h) & torch.isfinite(grad_h).all(-1)
    h = torch.where(ok, h, torch.full_like(h, -math.inf))
    grad_h = torch.where(ok.unsqueeze(-1), grad_h, torch.zeros_like(grad_h))
    return h, grad_h


def _std_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * z.pow(2).sum(-1) - 0.5 * z.shape[-1] * _LOG_2PI


def _log_mean_exp_with_stderr(log_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``log mean_c exp(log_w)`` over dim 0 and its delta-method standard error.

    ``se = sd(w) / (sqrt(C) mean(w)) = sqrt((r - 1) / (C - 1))``, ``r = mean(w^2) / mean(w)^2``.
    log_w: (C, N) -> two tensors (N,), float64.
    """
    log_w = log_w.double()
    c = log_w.shape[0]
    lme = torch.logsumexp(log_w, 0) - math.log(c)
    if c < 2:
        return lme, torch.full_like(lme, float("nan"))
    lme2 = torch.logsumexp(2 * log_w, 0) - math.log(c)
    r_minus_1 = torch.expm1(lme2 - 2 * lme).clamp_min(0.0)
    return lme, (r_minus_1 / (c - 1)).sqrt()


# ----------------------------------------------------------------------------- checks
def _require(model, names, purpose):
    missing = [a for a in names if not hasattr(model, a)]
    if missing:
        raise ConfigError(
            f"{type(model).__name__} lacks {', '.join(missing)}, which {purpose} needs (the "
            f"latent-variable protocol: latent_dim, prior_log_prob(z), and log_likelihood(x, z) "
            f"or decode(z)).")


def _as_target(model, sigma):
    """The model itself when it has log_likelihood (or log_joint), else a Gaussian observation
    around decode."""
    if callable(getattr(model, "log_joint", None)) and hasattr(model, "latent_dim"):
        return model, None
    _require(model, ("latent_dim", "prior_log_prob"), "annealed importance sampling")
    if callable(getattr(model, "log_likelihood", None)):
        return model, None
    if not callable(getattr(model, "decode", None)):
        _require(model, ("log_likelihood",), "annealed importance sampling")
    if sigma is None:
        raise ConfigError(
            f"{type(model).__name__} has decode(z) but no log_likelihood(x, z); pass sigma=... "
            f"(the width of a Gaussian observation model, Wu et al. 2017), chosen on validation "
            f"data with select_sigma().")
    obs = GaussianObservation(model, sigma)
    return obs, obs.sigma


def _latent_dim(target) -> int:
    d = int(target.latent_dim)
    if d < 1:
        raise ConfigError(f"latent_dim must be a positive int; the model has {target.latent_dim!r}.")
    return d


def _schedule(name: str, n_steps: int) -> torch.Tensor:
    if name not in SCHEDULES:
        raise ConfigError(
            f"schedule must be one of {', '.join(sorted(SCHEDULES))}; got {name!r}."
            + suggest(name, SCHEDULES))
    return SCHEDULES[name](n_steps)


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an int >= 1; got {value!r}.")
