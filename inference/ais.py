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

The HMC transition and Wu et al.'s step-size rule live in :mod:`probgen.inference.hmc`; the
step size is adapted per chain toward an acceptance rate of 0.65. Adapting during the estimate makes each chain's step size depend on its
own past, which voids the unbiasedness argument of AIS and, measured, biases the estimate
upward; by default the adaptation therefore runs in a pilot pass (at 5% a step) and the
estimate uses its step sizes frozen per ``beta`` (``adapt="pilot"``; ``"online"`` is Wu et
al.'s cheaper way).

Settings
--------
Every setting of a run is a field of one :class:`AISOptions`, which :func:`ais`,
:func:`reverse_ais`, :func:`bdmc` and :func:`select_sigma` all take; each of them also
takes the fields as keywords (``ais(model, x, n_steps=200)`` is
``ais(model, x, AISOptions(n_steps=200))``), which change the options given.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch

from probgen.checks import check_one_of, check_positive_float, check_positive_int, check_probability
from probgen.errors import ConfigError, suggest
from probgen.inference.bounds import DEFAULT_MAX_ELEMENTS
from probgen.inference.grid import best_on_grid
from probgen.inference.hmc import adapt_step_size, hmc_transition, tempered_log_ratio
from probgen.progress import NullBar
from probgen.progress import bar as progress_bar

__all__ = [
    "AISOptions",
    "AISResult",
    "BDMCResult",
    "GaussianObservation",
    "SCHEDULES",
    "SELECT_SIGMA_OPTIONS",
    "SigmaSelection",
    "ais",
    "bdmc",
    "gaussian_observation",
    "linear_schedule",
    "log_mean_exp_with_stderr",
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
    check_positive_int("n_steps", n_steps)
    s = torch.sigmoid(torch.linspace(-radius, radius, n_steps + 1, dtype=torch.float64))
    return (s - s[0]) / (s[-1] - s[0])


def linear_schedule(n_steps: int) -> torch.Tensor:
    """Evenly spaced ``beta`` from 0 to 1; shape (n_steps + 1,), float64."""
    check_positive_int("n_steps", n_steps)
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


# ----------------------------------------------------------------------------- options
ADAPT_MODES = ("pilot", "online", "none")
PILOT_CHAINS = 8  # chains per example in the step-size pilot
WU_RATE = 0.02  # online adaptation: step size times 1.02 or 0.98 per transition (Wu et al.)
PILOT_RATE = 0.05  # the pilot only tunes, so it may move faster: short schedules reach the target


@dataclass(frozen=True)
class AISOptions:
    """The settings of one AIS run, shared by :func:`ais`, :func:`reverse_ais`, :func:`bdmc`
    and :func:`select_sigma`; checked when made.

    Attributes
    ----------
    n_steps : int
        Transitions in the schedule (``n_steps + 1`` values of ``beta``).
    n_chains : int
        Independent chains per example (``C``).
    schedule : {"sigmoid", "linear"}
        The spacing of ``beta`` (:data:`SCHEDULES`).
    n_leapfrog : int
        Leapfrog steps per HMC transition.
    step_size : float
        Initial leapfrog step size.
    adapt : {"pilot", "online", "none"}
        How the step size is tuned toward ``target_accept``.

        - ``"pilot"`` (default): a first pass of ``min(n_chains, 8)`` chains adapts the step
          size per chain (Wu et al.'s rule, at 5% a step instead of 2% so that short
          schedules reach the target too); its per-example step size at each ``beta``
          (geometric mean over the pilot's chains) is then frozen for a second, independent
          pass that gives the estimate, which is therefore an exact AIS estimate (at most
          twice the cost).
        - ``"online"``: Wu et al.'s per-chain adaptation during the estimate itself. One
          pass, but the step size then depends on the chain's own past, which biases the
          estimate upward: +0.012 and +0.018 nats (2.4 and 3.5 standard errors) in two runs
          of 256 chains at 1600 steps on a 2-d linear-Gaussian model, where the pilot gave
          +0.001.
        - ``"none"``: ``step_size`` throughout.
    target_accept : float
        Acceptance rate the adaptation aims at, in (0, 1) (0.65, as Wu et al.).
    jitter : float
        In [0, 1): each transition scales its step size by ``Uniform(1 - jitter, 1 + jitter)``
        (Neal, 2011, sec. 5.4.2.2), which breaks the near-periodic trajectories that make HMC
        mix slowly on Gaussian-like posteriors (it narrowed the spread of the log weights by
        about a third in the tests). 0 turns it off.
    sigma : float, optional
        Width of a Gaussian observation model around ``decode(z)``; required when the model
        has no ``log_likelihood``, ignored otherwise (a model's own likelihood is kept).
    batch_size : int, optional
        Examples per pass (each pass holds ``C * batch_size`` chains). Default: as many as
        keep ``C * batch_size * data values`` within 2**23
        (:data:`probgen.inference.bounds.DEFAULT_MAX_ELEMENTS`), so that the memory of a pass
        does not grow with N (668 MNIST images with 16 chains; the HMC gradients make a pass
        hold about 11 tensors of that size: 435-440 MiB above the process's floor for the
        MNIST VAE at N = 2,000 and 5,000, benchmarks/eval_memory.py).
    progress : bool
        Show a bar over the annealing steps of every pass (pilot included) with the rate and
        time left (:mod:`probgen.progress`: on a terminal only). It draws no random numbers.
    """

    n_steps: int = 500
    n_chains: int = 16
    schedule: str = "sigmoid"
    n_leapfrog: int = 10
    step_size: float = 0.05
    adapt: str = "pilot"
    target_accept: float = 0.65
    jitter: float = 0.5
    sigma: float | None = None
    batch_size: int | None = None
    progress: bool = False

    def __post_init__(self):
        check_one_of("schedule", self.schedule, sorted(SCHEDULES))
        check_positive_int("n_steps", self.n_steps)
        check_positive_int("n_chains", self.n_chains)
        check_positive_int("n_leapfrog", self.n_leapfrog)
        if self.batch_size is not None:
            check_positive_int("batch_size", self.batch_size)
        object.__setattr__(self, "step_size", check_positive_float("step_size", self.step_size))
        check_one_of("adapt", self.adapt, ADAPT_MODES)
        object.__setattr__(self, "target_accept", check_probability("target_accept", self.target_accept))
        object.__setattr__(self, "jitter", check_probability("jitter", self.jitter, low_open=False))

    @classmethod
    def of(cls, options: AISOptions | None = None, **changes) -> AISOptions:
        """``options`` (default: the defaults) with the fields named in ``changes`` replaced;
        an unknown name is an error that lists the fields."""
        base = cls() if options is None else options
        if not isinstance(base, cls):
            raise ConfigError(f"options must be an AISOptions; got {type(base).__name__}.")
        unknown = [k for k in changes if k not in cls.__dataclass_fields__]
        if unknown:
            names = list(cls.__dataclass_fields__)
            raise ConfigError(
                f"unknown AIS option(s) {', '.join(map(repr, unknown))}."
                f"{suggest(unknown[0], names)} The options are: {', '.join(names)}.")
        return replace(base, **changes) if changes else base


# ----------------------------------------------------------------------------- public API
@torch.no_grad()
def ais(model, x: torch.Tensor, options: AISOptions | None = None, *,
        generator: torch.Generator | None = None, **changes) -> AISResult:
    """Forward AIS estimate of log p(x) per example: a stochastic lower bound.

    Parameters
    ----------
    model
        Has ``latent_dim``, ``prior_log_prob(z)`` and ``log_likelihood(x, z)``; or
        ``latent_dim`` and ``log_joint(x, z)``; or, with ``sigma`` given, ``decode(z)``
        (wrapped by :func:`gaussian_observation`).
    x : Tensor, shape (N, *data_shape)
    options : AISOptions, optional
        The settings (default: ``AISOptions()``).
    generator : torch.Generator, optional
        Source of randomness (on ``x``'s device), for repeatable estimates.
    **changes
        Fields of :class:`AISOptions` to change, e.g. ``n_steps=200, n_chains=64``.

    Returns
    -------
    AISResult
        ``direction="forward"``.
    """
    run = _Annealer.make(model, x, AISOptions.of(options, **changes), generator)
    with run.progress_bar(passes=1):
        eps = run.pilot()
        return run.run("forward", run.prior_start(), eps)


@torch.no_grad()
def reverse_ais(model, x: torch.Tensor, z_posterior: torch.Tensor,
                options: AISOptions | None = None, *, generator: torch.Generator | None = None,
                **changes) -> AISResult:
    """Reverse AIS from exact posterior samples: a stochastic upper bound on log p(x).

    The chain runs the schedule backwards (``beta`` from 1 to 0) from ``z ~ p(z | x)``; the mean
    of its weights is unbiased for ``1 / p(x)`` (Grosse et al., 2015), so ``-log`` of it is a
    stochastic upper bound. Exact posterior samples are at hand for data simulated from the
    model: the ``z`` that generated each ``x``. With ``adapt="pilot"`` the step sizes are tuned
    by a forward pilot from the prior, so they do not depend on ``z_posterior``.

    Parameters
    ----------
    model, x, options, generator, **changes
        As for :func:`ais`.
    z_posterior : Tensor, shape (N, latent_dim) or (C, N, latent_dim)
        Exact posterior samples; with shape (N, d) every chain of an example starts from the
        same one (still unbiased, only more correlated).

    Returns
    -------
    AISResult
        ``direction="reverse"``; ``log_px`` is the upper estimate.
    """
    run = _Annealer.make(model, x, AISOptions.of(options, **changes), generator)
    start = run.posterior_start(z_posterior)
    with run.progress_bar(passes=1):
        eps = run.pilot()
        return run.run("reverse", start, eps)


@torch.no_grad()
def bdmc(model, x: torch.Tensor, z: torch.Tensor, options: AISOptions | None = None, *,
         generator: torch.Generator | None = None, **changes) -> BDMCResult:
    """Bidirectional Monte Carlo (Grosse et al., 2015) on data simulated from the model.

    Forward AIS from the prior (lower) and reverse AIS from ``z`` (upper), with the same
    transitions: with ``adapt="pilot"`` one forward pilot tunes the step size at each ``beta``
    and both directions use it. For ``x`` simulated jointly with ``z``,
    ``lower <= log p(x) <= upper`` up to Monte Carlo error, and the gap shrinks as ``n_steps``
    grows. Arguments as for :func:`reverse_ais` (``z`` is its ``z_posterior``).
    """
    run = _Annealer.make(model, x, AISOptions.of(options, **changes), generator)
    rev_start = run.posterior_start(z)
    with run.progress_bar(passes=2):
        eps = run.pilot()
        lower = run.run("forward", run.prior_start(), eps)
        upper = run.run("reverse", rev_start, eps)
    return BDMCResult(lower=lower, upper=upper, gap=upper.log_px - lower.log_px)


SELECT_SIGMA_OPTIONS = AISOptions(n_steps=100, n_chains=4)
"""The short runs :func:`select_sigma` makes for each width unless told otherwise."""


@torch.no_grad()
def select_sigma(model, x_val: torch.Tensor, sigmas: Sequence[float] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
                 options: AISOptions | None = None, *, generator: torch.Generator | None = None,
                 **changes) -> SigmaSelection:
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
        The grid, in the data's units, in increasing order.
    options : AISOptions, optional
        The AIS settings of each run (default :data:`SELECT_SIGMA_OPTIONS`: 100 steps, 4
        chains); its ``sigma`` is replaced by each width in turn.
    generator, **changes
        As for :func:`ais`.
    """
    opts = AISOptions.of(SELECT_SIGMA_OPTIONS if options is None else options, **changes)
    sigmas = tuple(float(s) for s in sigmas)
    if not sigmas:
        raise ConfigError("sigmas must hold at least one width; got an empty grid.")
    scores, stderrs = [], []
    for s in sigmas:
        res = ais(gaussian_observation(model, s), x_val, opts, generator=generator)
        v = res.log_px.double()
        scores.append(float(v.mean()))
        stderrs.append(float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else float("nan"))
    best = best_on_grid(sigmas, scores, "observation width sigma", stacklevel=2)
    return SigmaSelection(sigma=sigmas[best], sigmas=sigmas, scores=scores, stderrs=stderrs)


# ----------------------------------------------------------------------------- the sampler
@dataclass
class _Annealer:
    """One estimate's model, data, schedule and settings; runs the passes over batches."""

    target: object
    x: torch.Tensor
    betas: torch.Tensor  # (T + 1,) increasing
    options: AISOptions
    sigma: float | None  # of the Gaussian observation model, when one wraps decode
    batch_size: int
    generator: torch.Generator | None
    bar: object = field(default_factory=NullBar)

    @classmethod
    def make(cls, model, x, options: AISOptions, generator) -> _Annealer:
        target, sigma = _as_target(model, options.sigma)
        betas = SCHEDULES[options.schedule](options.n_steps)
        if not isinstance(x, torch.Tensor) or x.dim() < 2 or not x.is_floating_point():
            raise ConfigError(
                f"x must be a floating-point tensor of shape (N, *data_shape); got "
                f"{type(x).__name__} of shape {tuple(getattr(x, 'shape', ()))}.")
        batch_size = options.batch_size
        if batch_size is None:
            per_example = max(1, math.prod(x.shape[1:])) * options.n_chains
            batch_size = max(1, DEFAULT_MAX_ELEMENTS // per_example)
        return cls(target, x, betas, options, sigma, batch_size, generator)

    @property
    def latent_dim(self) -> int:
        d = int(self.target.latent_dim)
        if d < 1:
            raise ConfigError(f"latent_dim must be a positive int; the model has "
                              f"{self.target.latent_dim!r}.")
        return d

    def batches(self):
        n = self.x.shape[0]
        for start in range(0, n, self.batch_size):
            yield slice(start, min(start + self.batch_size, n))

    def progress_bar(self, passes: int):
        """One bar over the annealing steps of ``passes`` estimate passes and the pilot, if any."""
        n = self.x.shape[0]
        per_pass = -(-n // self.batch_size) * (len(self.betas) - 1)  # batches x steps
        passes += self.options.adapt == "pilot"
        self.bar = progress_bar(passes * per_pass, desc="AIS", unit="step",
                                progress=self.options.progress)
        return self.bar

    def prior_start(self, n_chains: int | None = None):
        """Chains from ``N(0, I)``: a function of (batch of x, its slice) -> z (C, B, d)."""
        c, d = n_chains or self.options.n_chains, self.latent_dim

        def start(xb, _sl):
            return torch.randn((c, xb.shape[0], d), dtype=xb.dtype, device=xb.device,
                               generator=self.generator)
        return start

    def posterior_start(self, z_posterior):
        """Chains from the given exact posterior samples, (N, d) or (C, N, d)."""
        d, n, c = self.latent_dim, self.x.shape[0], self.options.n_chains
        z_posterior = torch.as_tensor(z_posterior)
        if z_posterior.shape == (n, d):
            z_posterior = z_posterior.unsqueeze(0).expand(c, n, d)
        elif z_posterior.shape != (c, n, d):
            raise ConfigError(
                f"z_posterior must have shape (N, latent_dim) = {(n, d)} or (n_chains, N, "
                f"latent_dim) = {(c, n, d)}; got {tuple(z_posterior.shape)}. Pass the latent "
                f"codes that generated x.")
        z_posterior = z_posterior.to(dtype=self.x.dtype, device=self.x.device)

        def start(_xb, sl):
            return z_posterior[:, sl].clone()
        return start

    def pilot(self) -> torch.Tensor | None:
        """With ``adapt="pilot"``: the step size per ``beta`` and example (T + 1, N), tuned by a
        forward pass of ``min(n_chains, PILOT_CHAINS)`` chains with online adaptation (the
        geometric mean over its chains of the step size each transition used; rows 0 and T,
        where no transition runs, repeat their neighbours). None otherwise."""
        if self.options.adapt != "pilot":
            return None
        self.bar.set_description("AIS step-size pilot")
        start = self.prior_start(min(self.options.n_chains, PILOT_CHAINS))
        tables = [self.anneal(self.x[sl], start(self.x[sl], sl), self.betas, None,
                              rate=PILOT_RATE)[2] for sl in self.batches()]
        return torch.cat(tables, dim=1)

    def run(self, direction: str, start, eps_table: torch.Tensor | None) -> AISResult:
        """The estimate pass over every batch, ``"forward"`` (beta from 0 to 1) or
        ``"reverse"``, with the step sizes of ``eps_table`` (in increasing beta) if given."""
        reverse = direction == "reverse"
        betas = self.betas.flip(0) if reverse else self.betas
        if eps_table is not None and reverse:
            eps_table = eps_table.flip(0)
        self.bar.set_description(f"AIS {direction}")
        parts = []
        for sl in self.batches():
            xb = self.x[sl]
            table = None if eps_table is None else eps_table[:, sl]
            parts.append(self.anneal(xb, start(xb, sl), betas, table))
        log_w = torch.cat([p[0] for p in parts], dim=1)  # (C, N)
        acc = torch.cat([p[1] for p in parts], dim=1)
        eps = torch.cat([p[2] for p in parts], dim=1)
        if reverse:
            eps = eps.flip(0)  # rows follow increasing beta in every record
        est, se = log_mean_exp_with_stderr(log_w)
        if reverse:
            est = -est
        o = self.options
        return AISResult(log_px=est.to(self.x.dtype), stderr=se.to(self.x.dtype),
                         log_weights=log_w, acceptance=acc, step_size=eps,
                         n_steps=len(betas) - 1, n_chains=log_w.shape[0],
                         n_leapfrog=o.n_leapfrog, schedule=o.schedule, direction=direction,
                         adapt=o.adapt, sigma=self.sigma)

    def anneal(self, x, z, betas, eps_table, rate=WU_RATE):
        """One pass of AIS along ``betas`` (increasing: forward; decreasing: reverse) for a
        batch ``x`` (B, *shape) from the chains ``z`` (C, B, d).

        For i = 1..T: ``log w += (beta_i - beta_{i-1}) * h(z)`` (see
        :func:`probgen.inference.hmc.tempered_log_ratio`), then (except after the last) one
        HMC transition that leaves ``f_{beta_i}`` invariant. With ``eps_table`` (T + 1, B) the
        step size of transition i is ``eps_table[i]``; without it, it adapts per chain at
        ``rate`` unless ``adapt == "none"``.

        Returns log weights (C, B) float64, mean acceptance probability (C, B), and the step
        size used at each beta (T + 1, B) (geometric mean over chains).
        """
        o = self.options
        c, n, _ = z.shape
        T = len(betas) - 1
        b = betas.tolist()
        online = eps_table is None and o.adapt != "none"
        eps = torch.full((c, n, 1), o.step_size, dtype=x.dtype, device=x.device)
        avg_acc = torch.full((c, n), o.target_accept, dtype=x.dtype, device=x.device)
        acc_sum = torch.zeros((c, n), dtype=torch.float64, device=x.device)
        log_w = torch.zeros((c, n), dtype=torch.float64, device=x.device)
        used = torch.empty((T + 1, n), dtype=x.dtype, device=x.device)
        h, grad_h = tempered_log_ratio(self.target, x, z)
        if not torch.isfinite(h).all():
            bad = int((~torch.isfinite(h)).sum())
            raise ConfigError(
                f"log p(z) + log p(x|z) (or its gradient) is not finite at {bad} of {h.numel()} "
                f"starting points; the model must give a finite log density wherever the chains "
                f"start (for the reverse direction: at the given posterior samples).")
        for i in range(1, T + 1):
            log_w += (b[i] - b[i - 1]) * h.double()
            self.bar.update(1)
            if i == T:
                break
            if eps_table is not None:
                eps = eps_table[i].to(x.dtype).view(1, n, 1).expand(c, n, 1)
            used[i] = eps.log().mean(0).squeeze(-1).exp()
            z, h, grad_h, a = hmc_transition(self.target, x, z, h, grad_h, b[i], eps,
                                             n_leapfrog=o.n_leapfrog, jitter=o.jitter,
                                             generator=self.generator)
            acc_sum += a.double()
            if online:
                eps, avg_acc = adapt_step_size(eps, avg_acc, a, target_accept=o.target_accept,
                                               rate=rate)
        if T >= 2:
            used[0], used[T] = used[1], used[T - 1]
        else:
            used[:] = o.step_size
        acceptance = acc_sum / max(T - 1, 1)
        return log_w, acceptance.to(x.dtype), used


def log_mean_exp_with_stderr(log_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``log mean_c exp(log_w)`` over dim 0 and its delta-method standard error.

    ``se = sd(w) / (sqrt(C) mean(w)) = sqrt((r - 1) / (C - 1))``, ``r = mean(w^2) / mean(w)^2``.
    log_w: (C, N) -> two tensors (N,), float64; the error is NaN with one chain.
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
    around decode; and the width of that observation model (None for the model itself)."""
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
