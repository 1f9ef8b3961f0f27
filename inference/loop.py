"""The training loop under every gradient fit: steps, the NaN policy, stopping, progress,
callbacks and checkpoints.

:func:`train_loop` minimises ``loss_fn(*batch)`` over the minibatches of
:func:`probgen.data.batching.training_batches` with a torch optimiser. It knows nothing of
Pyro (:mod:`probgen.inference.svi` builds ELBO losses on it), of run folders (a
``checkpoint`` hook writes them) or of processes: what a run across processes needs
(averaging gradients, agreeing to skip a step or to stop, pooling the epoch's loss) comes in
as a :class:`ProcessGroup` of hooks from the layer that owns the processes
(:func:`probgen.distributed.process_group`).

The loss is checked *before* the update: a NaN or infinite loss (or gradient) never reaches
the parameters. The batch is skipped (``on_nan="skip"``) or training stops with a
:class:`~probgen.errors.DivergedError` that names the step (``on_nan="stop"``).

>>> result = train_loop(loss_fn, params, x, LoopOptions(epochs=10, batch_size=100, seed=0))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from probgen.errors import ConfigError, DivergedError

__all__ = ["LoopOptions", "ProcessGroup", "SINGLE_PROCESS", "FitResult", "FitState", "ON_NAN",
           "train_loop", "make_optimizer"]

ON_NAN = ("skip", "stop")


# ----------------------------------------------------------------------------- hooks
def _same(x, *args):
    return x


def _no_sync(params) -> None:
    return None


@dataclass(frozen=True)
class ProcessGroup:
    """What a training loop needs from the processes it runs in, as hooks.

    The default is one process, where every hook does nothing. The layer that starts the
    processes builds the real one (:func:`probgen.distributed.process_group`).

    Attributes
    ----------
    rank, world_size : int
        This process and the number of processes.
    all_reduce_sum : callable (Tensor) -> Tensor
        Sum a tensor over processes, in place, and return it.
    any_true : callable (bool) -> bool
        True on every process when true on any: decisions that end or skip a step are taken
        by all processes together.
    sync_gradients : callable (sequence of Tensor) -> None
        Average the ``.grad`` of these parameters over processes.
    wrap_module : callable (nn.Module, torch.device) -> nn.Module
        A module whose backward pass averages its gradients over processes
        (``DistributedDataParallel``), for code that calls a network directly.
    """

    rank: int = 0
    world_size: int = 1
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] = _same
    any_true: Callable[[bool], bool] = bool
    sync_gradients: Callable[[Sequence[torch.Tensor]], None] = _no_sync
    wrap_module: Callable[..., torch.nn.Module] = _same

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        """Average ``t`` over processes, in place, and return it."""
        if self.distributed:
            self.all_reduce_sum(t).div_(self.world_size)
        return t


SINGLE_PROCESS = ProcessGroup()


# ----------------------------------------------------------------------------- options
@dataclass
class LoopOptions:
    """How :func:`train_loop` (and :func:`~probgen.inference.svi.fit_svi`, which takes the
    same fields as keywords) runs.

    Attributes
    ----------
    epochs, steps : int, optional
        Stop after this many epochs in total, or this many steps in total (both counted from
        the start of the run, so a resumed run passes the same values); at least one. When
        ``steps`` ends a pass early, the partial pass counts as an epoch.
    batch_size : int, optional
        Examples per step (per process across processes); ``None`` takes the whole data set.
    seed : int, optional
        Make every epoch a function of ``(seed, epoch)``: the batch order, a Dataset's dynamic
        binarisation or dequantization noise, and, reseeded at the start of each epoch, torch's
        global RNG (a model's samples; the reseed includes the process's rank). A run resumed
        at an epoch boundary then continues exactly, with no RNG state to restore. Needed
        across processes. ``None``: torch's global RNG shuffles.
    optim : callable, optional
        ``params -> torch.optim.Optimizer``, e.g. ``functools.partial(torch.optim.Adam,
        lr=1e-3)``. Default ``torch.optim.Adam(params, lr=lr, fused=True)`` (unfused where the
        parameters do not allow the fused kernel).
    lr : float
        Learning rate of the default optimiser.
    on_nan : {"skip", "stop"}
        What a non-finite loss or gradient does: skip the batch (the parameters are not
        touched; after ``max_consecutive_skips`` in a row training stops), or stop at once.
        Either way the error is a :class:`~probgen.errors.DivergedError` naming the step.
    check_grads : bool
        Also check the gradients before the update (one reduction per parameter tensor).
    callbacks : sequence of callables
        Called with a :class:`FitState` after every epoch; one returning ``True`` stops.
    step_callback : callable, optional
        ``step_callback(step, loss)`` after every step.
    checkpoint : callable, optional
        Called with a :class:`FitState` every ``checkpoint_every`` epochs and after the last;
        it is where a caller writes its checkpoint. It runs after ``callbacks``.
    should_stop : callable, optional
        ``should_stop() -> bool`` after every epoch (a signal, a time budget); true on any
        process stops every process after that epoch's checkpoint.
    start_epoch, start_step, optim_state : optional
        Continue a run: epochs and steps already done, and the optimiser's state dict.
    progress : bool
        Show a bar over epochs with the rate and time left, where
        :func:`probgen.progress.enabled` allows it (a terminal, not CI).
    processes : ProcessGroup
        The hooks of a run across processes (default: one process).
    """

    epochs: int | None = None
    steps: int | None = None
    batch_size: int | None = None
    seed: int | None = None
    optim: Callable[[list[torch.Tensor]], torch.optim.Optimizer] | None = None
    lr: float = 1e-3
    on_nan: str = "skip"
    max_consecutive_skips: int = 20
    check_grads: bool = True
    callbacks: Sequence[Callable[[FitState], bool | None]] = ()
    step_callback: Callable[[int, float], None] | None = None
    checkpoint: Callable[[FitState], None] | None = None
    checkpoint_every: int = 1
    should_stop: Callable[[], bool] | None = None
    start_epoch: int = 0
    start_step: int = 0
    optim_state: dict | None = None
    progress: bool = False
    processes: ProcessGroup = SINGLE_PROCESS

    @classmethod
    def of(cls, options: LoopOptions | None = None, **fields) -> LoopOptions:
        """``options`` (or the defaults) with ``fields`` replaced; an unknown name is a
        :class:`~probgen.errors.ConfigError` that lists the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            from probgen.errors import suggest

            raise ConfigError(f"unknown training option(s) {', '.join(map(repr, unknown))}."
                              f"{suggest(unknown[0], known)} Known: {', '.join(sorted(known))}.")
        return dataclasses.replace(options or cls(), **fields)

    def check(self) -> None:
        """Raise :class:`~probgen.errors.ConfigError` naming the first bad field."""
        if self.on_nan not in ON_NAN:
            raise ConfigError(f"on_nan must be one of {', '.join(ON_NAN)}; got {self.on_nan!r}.")
        if self.epochs is None and self.steps is None:
            raise ConfigError("give epochs (passes over the data) or steps (optimiser steps), or both.")
        for name in ("epochs", "steps", "batch_size", "checkpoint_every", "max_consecutive_skips"):
            v = getattr(self, name)
            low = 0 if name in ("epochs", "steps") else 1
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < low):
                raise ConfigError(f"{name} must be a {'non-negative' if low == 0 else 'positive'} "
                                  f"integer; got {v!r}.")
        if self.optim is None and not (isinstance(self.lr, int | float) and math.isfinite(self.lr)
                                       and self.lr > 0):
            raise ConfigError(f"lr (--lr) must be a positive finite number; got {self.lr!r}.")
        if self.processes.distributed and self.seed is None:
            raise ConfigError("training across processes needs seed= (the batches of every "
                              "process are cut from one seeded order).")


# ----------------------------------------------------------------------------- records
@dataclass
class FitResult:
    """What a fit returns.

    Attributes
    ----------
    losses : list of float
        The loss of every step, in order (``nan``/``inf`` for the skipped ones). For
        :func:`~probgen.inference.svi.fit_svi` this is the negative ELBO estimate of the step
        (scaled to the full data set when the model's plate says so).
    epoch_losses : list of float
        Mean finite loss of each epoch run by this call (over all processes).
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
    epoch_examples: int = 0       # examples in the steps of that mean (all processes)
    epoch_loss_sum: float = 0.0   # the sum of those steps' losses

    @property
    def loss_per_example(self) -> float:
        """The epoch's summed loss over its examples: the mean loss per example where each
        step's loss sums over its batch (a Pyro program's ELBO without a subsample scale);
        batches of unequal size (the last one of an epoch) count by their sizes."""
        return self.epoch_loss_sum / self.epoch_examples if self.epoch_examples else math.nan

    @property
    def optimizer(self):
        return self.result.optimizer


# ----------------------------------------------------------------------------- optimiser
def adam(params, **kwargs) -> torch.optim.Adam:
    """``torch.optim.Adam(params, **kwargs)`` on the fused kernel where every parameter allows
    it (floating point, on the CPU or CUDA): one kernel for all tensors instead of a dozen
    operations per tensor, about 4x faster on the CPU, the same update up to rounding."""
    params = list(params)
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    try:
        return torch.optim.Adam(params, fused=fused or None, **kwargs)
    except (RuntimeError, TypeError):  # a build without the fused kernel
        return torch.optim.Adam(params, **kwargs)


def make_optimizer(optim, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """``optim(params)``, or the default Adam at ``lr`` when ``optim`` is None."""
    if optim is None:
        return adam(params, lr=lr)
    if isinstance(optim, torch.optim.Optimizer):
        raise ConfigError(
            "optim must be a callable that builds an optimiser from a list of parameters (e.g. "
            "torch.optim.Adam or functools.partial(torch.optim.Adam, lr=1e-3)), not an optimiser "
            "instance: the parameters are only known after the first step."
        )
    if not callable(optim):
        raise ConfigError(f"optim must be callable (params -> torch.optim.Optimizer); got {optim!r}.")
    return optim(params)


def _examples(batch: tuple) -> int:
    """Examples in a batch: the length of its first tensor (0 for a step without data)."""
    first = batch[0] if batch else None
    return int(first.shape[0]) if isinstance(first, torch.Tensor) and first.dim() else 0


def _grads_finite(params: Sequence[torch.Tensor]) -> bool:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True
    # one scalar per tensor, then one sync; a sum is NaN/inf whenever any entry is
    total = torch.stack([g.sum() for g in grads]).sum()
    return bool(torch.isfinite(total))


def _diverged(step: int, epoch: int, what: str, value: float, on_nan: str, consecutive: int):
    advice = ("or pass on_nan='skip' to skip such batches" if on_nan == "stop"
              else "or look for the batch that starts the run of failures")
    return DivergedError(
        f"step {step} (epoch {epoch + 1}): {what} was not finite (loss = "
        f"{value}){'' if on_nan == 'stop' else f', {consecutive} steps in a row'}"
        ". The parameters were not updated with it and keep their last finite "
        "values (so does the last checkpoint). Lower the learning rate, check "
        f"the data for NaN/inf or out-of-range values, {advice}."
    )


# ----------------------------------------------------------------------------- the loop
class _Stepper:
    """One optimiser step at a time: the optimiser built at the first step, the NaN policy."""

    def __init__(self, loss_fn, params, discover, o: LoopOptions, result: FitResult):
        self.loss_fn, self.discover, self.o, self.result = loss_fn, discover, o, result
        self.params = list(params) if params is not None else None
        self.opt = None
        self.consecutive = 0
        if self.params is not None:
            self._make_optimizer()

    def _make_optimizer(self) -> None:
        self.opt = make_optimizer(self.o.optim, self.params, self.o.lr)
        if self.o.optim_state is not None:
            self.opt.load_state_dict(self.o.optim_state)
        self.result.optimizer, self.result.params = self.opt, self.params

    def __call__(self, batch: tuple, step: int, epoch: int) -> tuple[float, bool]:
        """Loss of ``batch`` and whether the parameters were updated with it."""
        o, group = self.o, self.o.processes
        if self.opt is None:
            loss, self.params = self.discover(batch)
            if not self.params:
                raise ConfigError("the loss touches no parameters (for a Pyro model and guide: "
                                  "no pyro.param or pyro.module sites were traced in the first "
                                  "step): nothing to fit.")
            self._make_optimizer()
        else:
            loss = self.loss_fn(*batch)
        value = float(loss.detach())
        bad = group.any_true(not math.isfinite(value))
        what = "the loss"
        if not bad:
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            group.sync_gradients(self.params)
            if step == o.start_step and all(p.grad is None for p in self.params):
                raise ConfigError(
                    "no parameter received a gradient from the loss. With Pyro this "
                    "happens when the param store holds stale tensors under the same "
                    "names (from an earlier model): call pyro.clear_param_store() first."
                )
            bad = o.check_grads and not _grads_finite(self.params)
            what = "a gradient"
        self.result.losses.append(value)
        if bad:
            self.opt.zero_grad(set_to_none=True)
            self.result.skipped.append(step)
            self.consecutive += 1
            if o.on_nan == "stop" or self.consecutive >= o.max_consecutive_skips:
                raise _diverged(step, epoch, what, value, o.on_nan, self.consecutive)
            return value, False
        self.consecutive = 0
        self.opt.step()
        return value, True


def train_loop(
    loss_fn: Callable[..., torch.Tensor],
    params: Iterable[torch.Tensor] | None,
    data,
    options: LoopOptions,
    *,
    discover: Callable[[tuple], tuple[torch.Tensor, list[torch.Tensor]]] | None = None,
) -> FitResult:
    """Minimise ``loss_fn(*batch)`` over minibatches of ``data`` with a torch optimiser.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(*batch) -> scalar tensor``; ``batch`` is ``(x,)`` for a tensor or a Dataset,
        a tuple of tensors for a tuple, and ``()`` when ``data`` is None (one step per epoch).
    params : iterable of Tensor, or None
        The leaf tensors to optimise; ``None`` asks ``discover``.
    data : Tensor, tuple of Tensors, probgen Dataset, or None
        Cut by :func:`probgen.data.batching.training_batches`.
    options : LoopOptions
    discover : callable, optional
        ``discover(batch) -> (loss, params)``: the first step's loss and the parameters it
        touched, for losses whose parameters are only known once they run (Pyro's).

    Returns
    -------
    FitResult
    """
    from probgen.data.batching import epoch_seed, training_batches

    o = options
    o.check()
    if params is None and discover is None:
        raise ConfigError("give the parameters to fit (params), or a discover function.")
    group = o.processes
    result = FitResult(steps=o.start_step, epochs=o.start_epoch)
    t0 = time.perf_counter()
    stepper = _Stepper(loss_fn, params, discover, o, result)
    total_epochs = o.epochs if o.epochs is not None else math.inf
    total_steps = o.steps if o.steps is not None else math.inf
    bar = None
    if math.isfinite(total_epochs):
        from probgen.progress import bar as progress_bar

        bar = progress_bar(int(total_epochs), initial=o.start_epoch, unit="epoch", progress=o.progress)
    step, epoch = o.start_step, o.start_epoch
    try:
        while epoch < total_epochs and step < total_steps:
            ep_sum, ep_n, ep_examples = 0.0, 0, 0
            if o.seed is not None:
                torch.manual_seed(epoch_seed(o.seed, epoch, group.rank))
            for batch in training_batches(data, o.batch_size, seed=o.seed, epoch=epoch,
                                          rank=group.rank, world_size=group.world_size):
                if step >= total_steps:
                    break
                value, updated = stepper(batch, step, epoch)
                if updated:
                    ep_sum += value
                    ep_n += 1
                    ep_examples += _examples(batch)
                step += 1
                if o.step_callback is not None:
                    o.step_callback(step, value)
            epoch += 1
            result.steps, result.epochs = step, epoch
            if group.distributed:  # the epoch's mean loss over all processes
                t = group.all_reduce_sum(torch.tensor([ep_sum, float(ep_n), float(ep_examples)],
                                                      dtype=torch.float64))
                ep_sum, ep_n, ep_examples = float(t[0]), int(t[1]), int(t[2])
            state = FitState(epoch=epoch, step=step,
                             epoch_loss=ep_sum / ep_n if ep_n else math.nan, result=result,
                             epoch_examples=ep_examples, epoch_loss_sum=ep_sum)
            result.epoch_losses.append(state.epoch_loss)
            stop = any([bool(cb(state)) for cb in o.callbacks])  # every callback runs
            if o.should_stop is not None:
                stop = group.any_true(bool(o.should_stop())) or stop
            done = stop or epoch >= total_epochs or step >= total_steps
            if o.checkpoint is not None and (done or (epoch - o.start_epoch) % o.checkpoint_every == 0):
                o.checkpoint(state)
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
