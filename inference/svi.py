"""Stochastic variational inference for any Pyro model/guide pair, and the minibatch loop under it.

:func:`fit_svi` maximises the evidence lower bound of a user's ``model(*batch)`` /
``guide(*batch)`` pair with Pyro's ``Trace_ELBO`` (or ``TraceMeanField_ELBO``, which uses
analytic KL terms where they exist), Hoffman et al., "Stochastic variational inference"
(JMLR 2013); Kingma & Welling, "Auto-encoding variational Bayes" (ICLR 2014).

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

:func:`fit_loss` is the loop itself, for any differentiable loss (the autoencoders use it).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from probgen.errors import ConfigError, DivergedError

__all__ = ["FitResult", "FitState", "fit_svi", "fit_loss", "ELBO_LOSSES", "ON_NAN", "VALIDATE"]

ON_NAN = ("skip", "stop")
VALIDATE = ("first", "always")


def _elbo_losses() -> dict[str, type]:
    from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO

    return {"trace": Trace_ELBO, "mean-field": TraceMeanField_ELBO, "enum": TraceEnum_ELBO}


ELBO_LOSSES = ("trace", "mean-field", "enum")  # keys of _elbo_losses(), known without importing pyro


@dataclass
class FitResult:
    """What a fit returns.

    Attributes
    ----------
    losses : list of float
        The loss of every step, in order (``nan``/``inf`` for the skipped ones). For
        :func:`fit_svi` this is the negative ELBO estimate of the step (scaled to the full
        data set when the model's plate says so).
    epoch_losses : list of float
        Mean finite loss of each epoch run by this call.
    steps : int
        Steps (batches) processed in total, counting those of a resumed run.
    epochs : int
        Epochs completed in total, counting those of a resumed run.
    skipped : list of int
        Steps whose loss or gradients were not finite; the parameters were not updated.
    time_s : float
        Wall time of this call, seconds.
    optimizer : torch.optim.Optimizer
        The optimiser (its ``state_dict()`` goes into checkpoints).
    params : list of Tensor
        The tensors that were optimised (leaf tensors, unconstrained).
    """

    losses: list[float] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    steps: int = 0
    epochs: int = 0
    skipped: list[int] = field(default_factory=list)
    time_s: float = 0.0
    optimizer: Any = None
    params: list = field(default_factory=list)


@dataclass
class FitState:
    """What callbacks and the checkpoint hook see at the end of an epoch."""

    epoch: int            # epochs completed so far (1 after the first)
    step: int             # steps processed so far
    epoch_loss: float     # mean finite loss of the epoch just finished
    result: FitResult     # the record so far (losses, skipped steps, optimizer, params)

    @property
    def optimizer(self):
        return self.result.optimizer


# ----------------------------------------------------------------------------- data
def _num_examples(data) -> int | None:
    if data is None:
        return None
    if hasattr(data, "batches"):
        return int(data.train.shape[0])
    if isinstance(data, torch.Tensor):
        return int(data.shape[0])
    return int(data[0].shape[0])


def _epoch_batches(data, batch_size: int | None, *, seed: int | None = None,
                   epoch: int = 0) -> Iterator[tuple]:
    """One pass over ``data`` as tuples of positional arguments.

    With ``seed``, the order (and a Dataset's dynamic binarisation) is a function of
    ``(seed, epoch)`` and each process takes its slice of every global batch
    (:mod:`probgen.distributed`); without it, torch's global RNG shuffles.
    """
    if data is None:
        yield ()
        return
    if seed is not None:
        from probgen import distributed as pdist

        if hasattr(data, "batches"):
            for xb in pdist.dataset_batches(data, batch_size or int(data.train.shape[0]),
                                            seed=seed, epoch=epoch):
                yield (xb,)
            return
        tensors = (data,) if isinstance(data, torch.Tensor) else tuple(data)
        n = tensors[0].shape[0]
        for idx in pdist.global_batches(n, batch_size or n, seed=seed, epoch=epoch,
                                        drop_last=pdist.info().distributed):
            idx = idx.to(tensors[0].device)
            yield tuple(t[idx] for t in tensors)
        return
    if hasattr(data, "batches"):  # a probgen Dataset: fresh binarisation per batch where asked
        n = data.train.shape[0]
        for xb in data.batches("train", batch_size or n, shuffle=True):
            yield (xb,)
        return
    tensors = (data,) if isinstance(data, torch.Tensor) else tuple(data)
    n = tensors[0].shape[0]
    if batch_size is None or batch_size >= n:
        yield tensors
        return
    order = torch.randperm(n, device=tensors[0].device)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield tuple(t[idx] for t in tensors)


def _check_options(epochs, steps, batch_size, on_nan, validate) -> None:
    if on_nan not in ON_NAN:
        raise ConfigError(f"on_nan must be one of {', '.join(ON_NAN)}; got {on_nan!r}.")
    if validate not in VALIDATE:
        raise ConfigError(f"validate must be one of {', '.join(VALIDATE)}; got {validate!r}.")
    if epochs is None and steps is None:
        raise ConfigError("give epochs (passes over the data) or steps (optimiser steps), or both.")
    for name, v in (("epochs", epochs), ("steps", steps), ("batch_size", batch_size)):
        if v is not None and (not isinstance(v, int) or v < (0 if name != "batch_size" else 1)):
            raise ConfigError(f"{name} must be a {'positive' if name == 'batch_size' else 'non-negative'} "
                              f"integer; got {v!r}.")


# ----------------------------------------------------------------------------- the loop
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
    return loss, params


def _default_adam(params, lr):
    """Adam; the fused kernel where every parameter allows it (about 4x faster on CPU)."""
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=fused or None)
    except (RuntimeError, TypeError):  # a build without the fused kernel
        return torch.optim.Adam(params, lr=lr)


def _make_optimizer(optim, params, lr):
    if optim is None:
        return _default_adam(params, lr)
    if isinstance(optim, torch.optim.Optimizer):
        raise ConfigError(
            "optim must be a callable that builds an optimiser from a list of parameters (e.g. "
            "torch.optim.Adam or functools.partial(torch.optim.Adam, lr=1e-3)), not an optimiser "
            "instance: the parameters are only known after the first step."
        )
    if not callable(optim):
        raise ConfigError(f"optim must be callable (params -> torch.optim.Optimizer); got {optim!r}.")
    return optim(params)


def _grads_finite(params: Sequence[torch.Tensor]) -> bool:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True
    # one scalar per tensor, then one sync; a sum is NaN/inf whenever any entry is
    total = torch.stack([g.sum() for g in grads]).sum()
    return bool(torch.isfinite(total))


def fit_loss(
    loss_fn: Callable[..., torch.Tensor],
    params: Iterable[torch.Tensor] | None,
    data=None,
    *,
    epochs: int | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    optim: Callable[[list[torch.Tensor]], torch.optim.Optimizer] | None = None,
    lr: float = 1e-3,
    on_nan: str = "skip",
    max_consecutive_skips: int = 20,
    check_grads: bool = True,
    validate: str = "first",
    callbacks: Sequence[Callable[[FitState], bool | None]] = (),
    step_callback: Callable[[int, float], None] | None = None,
    checkpoint: Callable[[FitState], None] | None = None,
    checkpoint_every: int = 1,
    start_epoch: int = 0,
    start_step: int = 0,
    optim_state: dict | None = None,
    progress: bool = False,
    seed: int | None = None,
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
        Tensors are shuffled along their first dimension each epoch (with torch's global
        RNG); a Dataset yields ``data.batches("train", batch_size)`` (resampling
        binarised pixels where the Dataset says so); ``None`` calls ``loss_fn()`` with no
        data, one step per epoch.
    epochs, steps : int, optional
        Stop after this many epochs in total, or this many steps in total (both counted
        from the start of the run, so a resumed run passes the same values); at least one.
        When ``steps`` ends a pass early, the partial pass counts as an epoch.
    batch_size : int, optional
        Examples per step; ``None`` takes the whole data set each step.
    optim : callable, optional
        ``params -> torch.optim.Optimizer``, e.g. ``functools.partial(torch.optim.Adam,
        lr=1e-3)``. Default ``torch.optim.Adam(params, lr=lr, fused=True)`` (unfused
        where the parameters do not allow the fused kernel).
    on_nan : {"skip", "stop"}
        What a non-finite loss or gradient does: skip the batch (the parameters are not
        touched; after ``max_consecutive_skips`` in a row training stops), or stop at once.
        Either way the error is a :class:`~probgen.errors.DivergedError` naming the step.
    check_grads : bool
        Also check the gradients before the update (one reduction per parameter tensor).
    validate : {"first", "always"}
        ``"first"``: the first step of the call runs with Pyro's validation as the user set
        it (on by default: model/guide site match, shapes, distribution arguments and
        supports); later steps run with it off, as Pyro's docs suggest for speed. The
        structure those checks look at does not change between steps, numerical trouble
        is caught by the finite-loss check, and models check their own data (the VAE
        refuses grey pixels under a Bernoulli on every batch, whatever this says).
        ``"always"``: validate every step.
    callbacks : sequence of callables
        Called with a :class:`FitState` after every epoch; one returning ``True`` stops.
    step_callback : callable, optional
        ``step_callback(step, loss)`` after every step.
    checkpoint : callable, optional
        Called with a :class:`FitState` every ``checkpoint_every`` epochs and after the last;
        it is where a caller writes its checkpoint. It runs after ``callbacks``.
    start_epoch, start_step, optim_state : optional
        Continue a run: epochs and steps already done, and the optimiser's state dict.
    progress : bool
        Show a bar over epochs with the rate and time left, where
        :func:`probgen.progress.enabled` allows it (a terminal, not CI).
    seed : int, optional
        Make every epoch a function of ``(seed, epoch)``: the batch order, a Dataset's dynamic
        binarisation and, reseeded at the start of each epoch, torch's global RNG (Pyro's
        samples). A run resumed at an epoch boundary then continues exactly, with no RNG
        state to restore. Needed across processes (``torchrun``; :mod:`probgen.distributed`):
        there ``batch_size`` is per process, each process takes its slice of every global
        batch, draws its own noise (the reseed includes its rank), and the gradients are
        averaged over processes before every update, so the update is that of one process
        with the global batch. A non-finite loss or gradient on any process skips the step
        on all of them.

    Returns
    -------
    FitResult
    """
    _check_options(epochs, steps, batch_size, on_nan, validate)
    if optim is None and not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"lr (--lr) must be a positive finite number; got {lr!r}.")
    from pyro import validation_enabled
    result = FitResult(steps=start_step, epochs=start_epoch)
    t0 = time.perf_counter()
    opt = None
    param_list = list(params) if params is not None else None
    if param_list is not None:
        opt = _make_optimizer(optim, param_list, lr)
        if optim_state is not None:
            opt.load_state_dict(optim_state)
        result.optimizer, result.params = opt, param_list

    total_epochs = epochs if epochs is not None else math.inf
    total_steps = steps if steps is not None else math.inf
    bar = None
    if math.isfinite(total_epochs):
        from probgen.progress import bar as progress_bar

        bar = progress_bar(int(total_epochs), initial=start_epoch, unit="epoch", progress=progress)
    from probgen import distributed as pdist

    dist = pdist.info()
    if dist.distributed and seed is None:
        raise ConfigError("training across processes needs seed= (the batches of every process "
                          "are cut from one seeded order).")
    consecutive = 0
    step = start_step
    epoch = start_epoch
    try:
        while epoch < total_epochs and step < total_steps:
            ep_sum, ep_n = 0.0, 0
            if seed is not None:
                torch.manual_seed(pdist.epoch_seed(seed, epoch, dist.rank))
            for batch in _epoch_batches(data, batch_size, seed=seed, epoch=epoch):
                if step >= total_steps:
                    break
                with warnings.catch_warnings():
                    # Pyro warns "Encountered NaN: loss"; the check below turns it into an error
                    warnings.filterwarnings("ignore", message=r"Encountered (NaN|\+/-Inf)")
                    if opt is None:
                        loss, param_list = _discover_params(loss_fn, batch)
                        if not param_list:
                            raise ConfigError(
                                "the model and guide declare no parameters (no pyro.param or "
                                "pyro.module sites were traced in the first step): nothing to fit."
                            )
                        opt = _make_optimizer(optim, param_list, lr)
                        if optim_state is not None:
                            opt.load_state_dict(optim_state)
                        result.optimizer, result.params = opt, param_list
                    elif validate == "always" or step == start_step:
                        loss = loss_fn(*batch)
                    else:
                        with validation_enabled(False):
                            loss = loss_fn(*batch)
                value = float(loss.detach())
                bad = pdist.any_true(not math.isfinite(value))
                if not bad:
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    pdist.sync_gradients(param_list)
                    if step == start_step and all(p.grad is None for p in param_list):
                        raise ConfigError(
                            "no parameter received a gradient from the loss. With Pyro this "
                            "happens when the param store holds stale tensors under the same "
                            "names (from an earlier model): call pyro.clear_param_store() first."
                        )
                    bad = check_grads and not _grads_finite(param_list)
                    what = "a gradient"
                else:
                    what = "the loss"
                result.losses.append(value)
                if bad:
                    opt.zero_grad(set_to_none=True)
                    result.skipped.append(step)
                    consecutive += 1
                    if on_nan == "stop" or consecutive >= max_consecutive_skips:
                        advice = ("or pass on_nan='skip' to skip such batches" if on_nan == "stop"
                                  else "or look for the batch that starts the run of failures")
                        raise DivergedError(
                            f"step {step} (epoch {epoch + 1}): {what} was not finite (loss = "
                            f"{value}){'' if on_nan == 'stop' else f', {consecutive} steps in a row'}"
                            ". The parameters were not updated with it and keep their last finite "
                            "values (so does the last checkpoint). Lower the learning rate, check "
                            f"the data for NaN/inf or out-of-range values, {advice}."
                        )
                else:
                    consecutive = 0
                    opt.step()
                    ep_sum += value
                    ep_n += 1
                step += 1
                if step_callback is not None:
                    step_callback(step, value)
            epoch += 1
            result.steps, result.epochs = step, epoch
            if dist.distributed:  # the epoch's mean loss over all processes
                t = pdist.all_reduce_sum(torch.tensor([ep_sum, float(ep_n)], dtype=torch.float64))
                ep_sum, ep_n = float(t[0]), int(t[1])
            state = FitState(epoch=epoch, step=step,
                             epoch_loss=ep_sum / ep_n if ep_n else math.nan, result=result)
            result.epoch_losses.append(state.epoch_loss)
            stop = any([bool(cb(state)) for cb in callbacks])  # every callback runs
            done = stop or epoch >= total_epochs or step >= total_steps
            if checkpoint is not None and (done or (epoch - start_epoch) % checkpoint_every == 0):
                checkpoint(state)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{state.epoch_loss:.4g}")
            if stop:
                break
    finally:
        if bar is not None:
            bar.close()
    result.time_s = time.perf_counter() - t0
    return result


# ----------------------------------------------------------------------------- SVI
def fit_svi(
    model: Callable,
    guide: Callable,
    data=None,
    *,
    loss: str = "trace",
    num_particles: int = 1,
    objective: str = "elbo",
    model_kwargs: dict | None = None,
    epochs: int | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    optim: Callable[[list[torch.Tensor]], torch.optim.Optimizer] | None = None,
    lr: float = 1e-3,
    on_nan: str = "skip",
    validate: str = "first",
    callbacks: Sequence[Callable[[FitState], bool | None]] = (),
    step_callback: Callable[[int, float], None] | None = None,
    checkpoint: Callable[[FitState], None] | None = None,
    checkpoint_every: int = 1,
    start_epoch: int = 0,
    start_step: int = 0,
    optim_state: dict | None = None,
    progress: bool = False,
    seed: int | None = None,
) -> FitResult:
    """Fit ``guide`` to the posterior of ``model`` by maximising the ELBO.

    ``model`` and ``guide`` are any Pyro pair with the same signature; each step calls
    them with one minibatch (see :func:`fit_loss` for ``data``, ``epochs``, ``steps``,
    ``batch_size``, ``optim``, ``on_nan``, ``validate``, ``seed`` -- which also trains across
    processes -- and the hooks) plus ``**model_kwargs``.
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

    Returns
    -------
    FitResult
        ``losses`` are negative ELBO (or IWAE-K) estimates.

    Examples
    --------
    >>> result = fit_svi(model, guide, x, steps=2000, lr=0.01)  # doctest: +SKIP
    >>> pyro.param("loc_q")  # doctest: +SKIP
    """
    losses = _elbo_losses()
    if loss not in losses:
        raise ConfigError(f"loss must be one of {', '.join(losses)}; got {loss!r}.")
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ConfigError(f"num_particles must be a positive integer; got {num_particles!r}.")
    if objective == "elbo":
        elbo = losses[loss](num_particles=num_particles, vectorize_particles=num_particles > 1)
    else:
        if loss != "trace":
            raise ConfigError(f"loss={loss!r} (--loss) picks an estimator of the ELBO; objective "
                              f"{objective!r} estimates its own bound: leave loss at 'trace', or "
                              "use objective='elbo'.")
        from probgen.inference.objectives import make_objective

        elbo = make_objective(objective, num_particles)
    kwargs = dict(model_kwargs or {})

    def loss_fn(*batch):
        return elbo.differentiable_loss(model, guide, *batch, **kwargs)

    return fit_loss(
        loss_fn, None, data, epochs=epochs, steps=steps, batch_size=batch_size, optim=optim,
        lr=lr, on_nan=on_nan, validate=validate, callbacks=callbacks, step_callback=step_callback,
        checkpoint=checkpoint, checkpoint_every=checkpoint_every, start_epoch=start_epoch,
        start_step=start_step, optim_state=optim_state, progress=progress, seed=seed,
    )
