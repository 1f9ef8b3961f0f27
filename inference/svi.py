"""Stochastic variational inference for any Pyro model/guide pair.

:func:`fit_svi` maximises the evidence lower bound of a user's ``model(*batch)`` /
``guide(*batch)`` pair with Pyro's ``Trace_ELBO`` (by way of
:class:`probgen.inference.elbo.Trace_ELBO`: the same estimate, on a short path for
reparametrised guides) or ``TraceMeanField_ELBO`` (which uses analytic KL terms where they
exist), Hoffman et al., "Stochastic variational inference" (JMLR 2013); Kingma & Welling, "Auto-encoding variational Bayes" (ICLR 2014).

It differs from ``pyro.infer.SVI`` in two ways:

* The parameters are updated by a plain ``torch.optim`` optimiser on the surrogate loss
  of ``ELBO.differentiable_loss``. The parameters are found once, by tracing the first step
  (the pattern Pyro documents for PyTorch optimisers); there is no per-step param-store
  bookkeeping. All parameters must therefore appear in the first step's trace.
* The loss is checked *before* the update: a NaN or infinite loss (or gradient) never
  reaches the parameters. The batch is skipped (``on_nan="skip"``) or training stops with a
  :class:`~probgen.errors.DivergedError` that names the step (``on_nan="stop"``). Pyro's
  ``SVI.step`` updates first and returns the loss afterwards, so one bad batch turns every
  parameter into NaN.

Both run on the loop of :mod:`probgen.inference.loop` and take its options
(:class:`~probgen.inference.loop.LoopOptions`), as an object or as keywords.
:func:`fit_loss` fits any differentiable loss (the autoencoders use it), finding Pyro's
parameters the same way when it is given none.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import torch

from probgen.errors import ConfigError
from probgen.inference.loop import FitResult, FitState, LoopOptions, train_loop

__all__ = ["FitResult", "FitState", "LoopOptions", "fit_svi", "fit_loss", "elbo_loss",
           "ELBO_LOSSES", "VALIDATE"]

VALIDATE = ("first", "always")
ELBO_LOSSES = ("trace", "mean-field", "enum")  # the names elbo_loss knows, without importing pyro


def elbo_loss(name: str, **kwargs):
    """Pyro's ELBO estimator called ``name`` (one of :data:`ELBO_LOSSES`), built with ``kwargs``."""
    from pyro.infer import TraceEnum_ELBO, TraceMeanField_ELBO

    from probgen.inference.elbo import Trace_ELBO

    losses = {"trace": Trace_ELBO, "mean-field": TraceMeanField_ELBO, "enum": TraceEnum_ELBO}
    if name not in losses:
        raise ConfigError(f"loss must be one of {', '.join(losses)}; got {name!r}.")
    return losses[name](**kwargs)


def _discover_params(loss_fn, args) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run ``loss_fn(*args)`` once and return the loss and every Pyro param it touched."""
    from pyro import poutine

    with poutine.trace(param_only=True) as capture:
        loss = loss_fn(*args)
    params, seen = [], set()
    for site in capture.trace.nodes.values():
        value = site["value"]
        unconstrained = getattr(value, "unconstrained", None)
        p = unconstrained() if callable(unconstrained) else value
        if id(p) not in seen and p.requires_grad:
            seen.add(id(p))
            params.append(p)
    if not params:
        raise ConfigError(
            "the model and guide declare no parameters (no pyro.param or "
            "pyro.module sites were traced in the first step): nothing to fit."
        )
    return loss, params


def _pyro_loss(loss_fn, validate: str):
    """``loss_fn`` with Pyro's validation on for its first call only (``validate="first"``)
    or every call (``"always"``), and Pyro's NaN warning left to the loop's check."""
    if validate not in VALIDATE:
        raise ConfigError(f"validate must be one of {', '.join(VALIDATE)}; got {validate!r}.")
    from pyro import validation_enabled

    calls = [0]

    def wrapped(*batch):
        with warnings.catch_warnings():
            # Pyro warns "Encountered NaN: loss"; the loop turns a non-finite loss into an error
            warnings.filterwarnings("ignore", message=r"Encountered (NaN|\+/-Inf)")
            calls[0] += 1
            if validate == "always" or calls[0] == 1:
                return loss_fn(*batch)
            with validation_enabled(False):
                return loss_fn(*batch)

    return wrapped


def fit_loss(
    loss_fn: Callable[..., torch.Tensor],
    params: Iterable[torch.Tensor] | None = None,
    data=None,
    options: LoopOptions | None = None,
    *,
    validate: str = "first",
    **fields,
) -> FitResult:
    """Minimise ``loss_fn(*batch)`` over minibatches of ``data`` with a torch optimiser.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(*batch) -> scalar tensor``; ``batch`` is ``(x,)`` for a tensor or a
        Dataset, a tuple of tensors for a tuple, and ``()`` when ``data`` is None.
    params : iterable of Tensor, or None
        The leaf tensors to optimise. ``None``: the Pyro params (``pyro.param`` and
        ``pyro.module``) that the first call of ``loss_fn`` touches.
    data : Tensor, tuple of Tensors, probgen Dataset, or None
        Cut into batches by :func:`probgen.data.batching.training_batches` (a Dataset
        resamples binarised pixels where it says so); ``None`` calls ``loss_fn()`` with no
        data, one step per epoch.
    options : LoopOptions, optional
        How the loop runs (epochs or steps, batch size, seed, optimiser, NaN policy, hooks,
        resume state, processes); ``**fields`` sets or replaces any of its fields by name
        (``epochs=10, lr=3e-3``).
    validate : {"first", "always"}
        ``"first"``: the first step of the call runs with Pyro's validation as the user set
        it (on by default: model/guide site match, shapes, distribution arguments and
        supports); later steps run with it off, as Pyro's docs suggest for speed. The
        structure those checks look at does not change between steps, numerical trouble
        is caught by the finite-loss check, and models check their own data (the VAE
        refuses grey pixels under a Bernoulli on every batch, whatever this says).
        ``"always"``: validate every step.

    Returns
    -------
    FitResult
    """
    o = LoopOptions.of(options, **fields)
    o.check()
    wrapped = _pyro_loss(loss_fn, validate)
    return train_loop(wrapped, params, data, o,
                      discover=None if params is not None else
                      (lambda batch: _discover_params(wrapped, batch)))


# ----------------------------------------------------------------------------- SVI
def fit_svi(
    model: Callable,
    guide: Callable,
    data=None,
    options: LoopOptions | None = None,
    *,
    loss: str = "trace",
    num_particles: int = 1,
    objective: str = "elbo",
    vectorize_particles: bool = True,
    model_kwargs: dict | None = None,
    validate: str = "first",
    **fields,
) -> FitResult:
    """Fit ``guide`` to the posterior of ``model`` by maximising the ELBO.

    ``model`` and ``guide`` are any Pyro pair with the same signature; each step calls
    them with one minibatch plus ``**model_kwargs``. ``data``, ``options`` (or its fields as
    keywords: ``epochs``, ``steps``, ``batch_size``, ``seed``, ``lr``, ``on_nan``, the hooks,
    the resume state, ``processes``) and ``validate`` are those of :func:`fit_loss`.
    A model whose likelihood sits in ``pyro.plate("data", size=N, subsample=...)`` gets
    a minibatch ELBO scaled to the full data set; pass ``N`` through ``model_kwargs``
    (e.g. ``{"num_data": N}`` for :class:`probgen.models.vae.VAE`).

    Parameters
    ----------
    loss : {"trace", "mean-field", "enum"}
        ``Trace_ELBO``, ``TraceMeanField_ELBO`` (analytic KL where registered; needs a
        guide with no dependencies between latent sites beyond the model's), or
        ``TraceEnum_ELBO``, which sums out the discrete sites the model marks with
        ``infer={"enumerate": "parallel"}`` and the guide leaves out.
    num_particles : int
        Samples per ELBO estimate (vectorised); the K of the importance-weighted objectives.
    objective : {"elbo", "iwae", "dreg"}
        ``"elbo"`` (default): Pyro's ELBO named by ``loss``. ``"iwae"``: the importance-weighted
        bound with ``num_particles`` samples per example (Burda et al. 2016); ``"dreg"``: the
        same bound with the doubly-reparametrised gradient (Tucker et al. 2019). Both need a
        reparametrised guide and per-example sites in ``pyro.plate("data")``
        (:mod:`probgen.inference.objectives`).
    vectorize_particles : bool
        With ``num_particles > 1`` and the ELBO: draw the particles at once in an outer plate
        (default; the program must broadcast over a leading dimension, as programs written
        with plates and ``.to_event`` do), or one run of the program after another (any
        program, slower). The importance-weighted objectives always vectorise.

    Returns
    -------
    FitResult
        ``losses`` are negative ELBO (or IWAE-K) estimates.

    Examples
    --------
    >>> result = fit_svi(model, guide, x, steps=2000, lr=0.01)  # doctest: +SKIP
    >>> pyro.param("loc_q")  # doctest: +SKIP
    """
    o = LoopOptions.of(options, **fields)
    o.check()
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ConfigError(f"num_particles must be a positive integer; got {num_particles!r}.")
    if objective == "elbo":
        elbo = elbo_loss(loss, num_particles=num_particles,
                         vectorize_particles=num_particles > 1 and bool(vectorize_particles))
    else:
        elbo_loss(loss)  # an unknown name is refused first
        if not vectorize_particles and num_particles > 1:
            raise ConfigError(f"objective {objective!r} draws its {num_particles} particles at once "
                              "in an outer plate; vectorize_particles=False is offered for the ELBO "
                              "only. Write the program to broadcast over a leading dimension, or "
                              "use objective='elbo'.")
        if loss != "trace":
            raise ConfigError(f"loss={loss!r} (--loss) picks an estimator of the ELBO; objective "
                              f"{objective!r} estimates its own bound: leave loss at 'trace', or "
                              "use objective='elbo'.")
        from probgen.inference.objectives import make_objective

        elbo = make_objective(objective, num_particles)
    kwargs = dict(model_kwargs or {})

    def loss_fn(*batch):
        return elbo.differentiable_loss(model, guide, *batch, **kwargs)

    return fit_loss(loss_fn, None, data, o, validate=validate)
