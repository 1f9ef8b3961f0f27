"""Adversarial training: alternating discriminator and generator steps.

Goodfellow et al., "Generative adversarial nets" (2014) for the minimax and the
non-saturating losses; Lim and Ye, "Geometric GAN" (2017) and Miyato et al., "Spectral
normalization for generative adversarial networks" (2018) for the hinge loss; Gulrajani et
al., "Improved training of Wasserstein GANs" (2017) for WGAN-GP; Mescheder, Geiger and
Nowozin, "Which training methods for GANs do actually converge?" (2018) for the R1 penalty.

One training step is a discriminator step on a minibatch of real data and a minibatch of
generated data, then a generator step. When the discriminator holds BatchNorm the generator
step judges the same generated minibatch, the one whose statistics the discriminator step
normalised (as pytorch/examples' DCGAN: the generator runs once per step); otherwise it
judges fresh samples, not those the discriminator has just been fitted to (on the toy
mixtures reusing them also made two-process and one-process runs drift apart, the
trajectories being sensitive to rounding). The discriminator step runs ONE forward pass over
real and generated data concatenated (and, for WGAN-GP, the interpolates too): with
BatchNorm in the discriminator this keeps the pass that is differentiated in one place (the
known DistributedDataParallel + BatchNorm in-place error of two passes does not arise).
BatchNorm layers that can take their statistics per group (those built by
:mod:`probgen.models.nets`) do so in that pass (:func:`batch_groups`): the real and the generated half are each
normalised by their own mean and variance, exactly as in two separate passes (pytorch/examples'
DCGAN; "construct different mini-batches for real and fake", ganhacks), so the generator step
judges the generated batch alone and gets the same normalisation the discriminator step gave
it. A discriminator with BatchNorm layers of its own (plain ``nn.BatchNorm*d``) normalises
the two halves jointly instead; the generator step then judges its samples beside the real
batch, so that the discriminator normalises the way it did in its own step.

>>> trainer = GANTrainer(G, D, latent_dim=2, loss="ns", lr=2e-4)
>>> for step in range(1000):
...     record = trainer.step(next_real_batch())
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from probgen.errors import ConfigError, DivergedError, suggest
from probgen.inference.loop import SINGLE_PROCESS, ProcessGroup, adam

__all__ = ["GANLoss", "LOSSES", "get_loss", "GANTrainer", "fit_gan", "GANFitResult",
           "LR_SCHEDULES", "linear_decay", "ema_decay", "batch_groups", "has_grouped_batch_norm",
           "gan_uses_batch_statistics"]


# ----------------------------------------------------------------------------- losses
def _bce_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    # -log D(x) - log(1 - D(G(z))) with D = sigmoid(logit): softplus(-l_real) + softplus(l_fake)
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def _minimax_g(fake: torch.Tensor) -> torch.Tensor:
    # minimise log(1 - D(G(z))) = -softplus(l_fake)
    return -F.softplus(fake).mean()


def _ns_g(fake: torch.Tensor) -> torch.Tensor:
    # minimise -log D(G(z)) = softplus(-l_fake)
    return F.softplus(-fake).mean()


def _hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def _critic_g(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def _wasserstein_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return fake.mean() - real.mean()


@dataclass(frozen=True)
class GANLoss:
    """One GAN objective.

    Attributes
    ----------
    d_loss : callable (real_logits (M,), fake_logits (M,)) -> scalar
    g_loss : callable (fake_logits (M,)) -> scalar
    probabilistic : bool
        The discriminator outputs logits of P(real); the log then shows D(x) = sigmoid(logit).
        Otherwise it is a critic and the log shows its raw mean output.
    gradient_penalty : float
        Weight of the WGAN-GP penalty (E[(||grad D(x_hat)|| - 1)^2], x_hat between a real and a
        generated sample); 0 for none.
    description : str
    """

    d_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    g_loss: Callable[[torch.Tensor], torch.Tensor]
    probabilistic: bool
    gradient_penalty: float = 0.0
    description: str = ""


LOSSES: dict[str, GANLoss] = {
    "ns": GANLoss(_bce_d, _ns_g, True, description="non-saturating: G minimises -log D(G(z))"),
    "minimax": GANLoss(_bce_d, _minimax_g, True,
                       description="minimax: G minimises log(1 - D(G(z))) (saturates early)"),
    "hinge": GANLoss(_hinge_d, _critic_g, False,
                     description="hinge: D minimises relu(1 - D(x)) + relu(1 + D(G(z)))"),
    "wgan-gp": GANLoss(_wasserstein_d, _critic_g, False, gradient_penalty=10.0,
                       description="Wasserstein critic with gradient penalty 10"),
}


def get_loss(name: str) -> GANLoss:
    """The loss called ``name``; an unknown name gets the list of known ones."""
    if name not in LOSSES:
        raise ConfigError(
            f"loss must be one of {', '.join(LOSSES)}; got {name!r}.{suggest(name, LOSSES)}"
        )
    return LOSSES[name]


# ----------------------------------------------------------------------------- batch statistics
def _batch_norms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def gan_uses_batch_statistics(module: nn.Module) -> bool:
    """True when ``module`` holds a BatchNorm layer (its output depends on the whole batch)."""
    return bool(_batch_norms(module))


def _groupable(m: nn.Module) -> bool:
    # a BatchNorm layer that takes its statistics per block of examples while its ``groups``
    # attribute is k (probgen.models.nets.GroupedBatchNorm1d/2d)
    return isinstance(getattr(m, "groups", None), int)


def has_grouped_batch_norm(module: nn.Module) -> bool:
    """True when every BatchNorm layer of ``module`` can take per-group statistics."""
    bns = _batch_norms(module)
    return bool(bns) and all(_groupable(m) for m in bns)


class batch_groups:  # noqa: N801 - used as a function-like context manager
    """``with batch_groups(module, k):`` every BatchNorm layer of ``module`` that can
    (:class:`probgen.models.nets.GroupedBatchNorm1d`/``2d``) takes its batch statistics per
    block of B / k consecutive examples."""

    def __init__(self, module: nn.Module, groups: int):
        self.layers = [m for m in _batch_norms(module) if _groupable(m)]
        self.groups = int(groups)

    def __enter__(self):
        self.before = [m.groups for m in self.layers]
        for m in self.layers:
            m.groups = self.groups
        return self

    def __exit__(self, *exc):
        for m, g in zip(self.layers, self.before):
            m.groups = g
        return False


# ----------------------------------------------------------------------------- trainer
def _set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


class GANTrainer:
    """The generator, the discriminator, their optimizers and the loss, stepped together.

    Parameters
    ----------
    generator : nn.Module
        z (B, latent_dim) -> x (B, *shape).
    discriminator : nn.Module
        x (B, *shape) -> logits (B / pack,), with attribute ``pack`` (default 1).
    latent_dim : int
    loss : str
        A key of :data:`LOSSES`.
    lr, lr_d : float
        Adam learning rates of the generator and the discriminator (``lr_d`` defaults to ``lr``).
    betas : (float, float)
        Adam betas of both optimizers (DCGAN: (0.5, 0.999)).
    amp : bool
        bfloat16 autocast of the networks' passes, on the networks' device (meant for CUDA;
        it runs on the CPU too). The losses are computed in float32.
    processes : ProcessGroup
        Across processes (:func:`probgen.distributed.process_group`): the networks are wrapped
        by its ``wrap_module`` (``DistributedDataParallel``) and each process draws its slice
        of the global batch's noise. Default: one process.
    r1 : float
        Weight gamma of the R1 penalty ``gamma / 2 * E ||grad_x D(x)||^2`` on real data (per
        packed group; Mescheder et al. 2018), added to the discriminator loss; 0 for none.
    ema : float
        Decay of an exponential moving average of the generator's parameters (Yazici et al.,
        "The unusual effectiveness of averaging in GAN training", 2019; Karras et al. 2018),
        kept in :attr:`G_ema` for sampling; 0 for none. After generator step t (counted from
        1) every parameter moves ``p_ema <- d p_ema + (1 - d) p`` with
        ``d = min(ema, (1 + t) / (10 + t))`` (:func:`ema_decay`: a short memory while the
        networks move fast), and the buffers (BatchNorm's running statistics) are copied.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, *, latent_dim: int,
                 loss: str = "ns", lr: float = 2e-4, lr_d: float | None = None,
                 betas=(0.5, 0.999), amp: bool = False,
                 processes: ProcessGroup = SINGLE_PROCESS, r1: float = 0.0, ema: float = 0.0):
        self.G, self.D = generator, discriminator
        self.r1 = float(r1)
        if not self.r1 >= 0:
            raise ConfigError(f"r1 (the R1 penalty's weight) must be >= 0; got {r1!r}.")
        self.ema = float(ema)
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"ema (the decay of the generator's moving average) must be in [0, 1) "
                              f"(0: none; 0.999 is usual); got {ema!r}.")
        # the averaged generator, for sampling: a copy that no optimizer sees
        self.G_ema = None
        if self.ema:
            self.G_ema = copy.deepcopy(generator)
            self.G_ema.requires_grad_(False)
            self.G_ema.eval()
        self.latent_dim = int(latent_dim)
        self.loss_name = loss
        self.loss = get_loss(loss)
        if (self.loss.gradient_penalty or self.r1) and gan_uses_batch_statistics(discriminator):
            what = f"loss {loss!r}" if self.loss.gradient_penalty else "the R1 penalty"
            raise ConfigError(
                f"{what} penalises the gradient of D at each example on its own, "
                "which BatchNorm in the discriminator breaks (its output depends on the batch). "
                "Build the discriminator with norm='none' or 'spectral'."
            )
        self.pack = int(getattr(discriminator, "pack", 1))
        self.batch_stats = gan_uses_batch_statistics(discriminator)
        # BatchNorm with per-group statistics: real and generated halves normalised apart, and
        # the generator's samples judged alone; plain BatchNorm: both jointly, and the samples
        # judged beside real data
        self._grouped = batch_groups(discriminator, 2) if has_grouped_batch_norm(discriminator) else None
        self._beside_real = self.batch_stats and self._grouped is None
        self.opt_g = adam(generator.parameters(), lr=lr, betas=tuple(betas))
        self.opt_d = adam(discriminator.parameters(), lr=lr_d or lr, betas=tuple(betas))
        self.amp = bool(amp)
        self.step_count = 0
        # Across processes (torchrun): DistributedDataParallel wrappers average the gradients
        # of the passes that update a network -- D in the discriminator step, G in the
        # generator step; the other network runs unwrapped there (no gradient to share).
        # broadcast_buffers=False: each process keeps its BatchNorm running statistics, and the
        # two D passes of a step do not trip DDP's in-place buffer broadcast.
        self.processes = processes
        self._G_sync = processes.wrap_module(generator, self.device)
        self._D_sync = processes.wrap_module(discriminator, self.device)

    @property
    def device(self) -> torch.device:
        return next(self.G.parameters()).device

    def _autocast(self):
        if self.amp:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _noise(self, n: int) -> torch.Tensor:
        """``n`` latent draws. Across processes every process draws the noise of the whole
        global batch (their RNGs agree) and keeps its slice, so that a step in N processes
        is the step of one process with the global batch."""
        d = self.processes
        z = torch.randn(n * d.world_size, self.latent_dim, device=self.device)
        return z[d.rank * n:(d.rank + 1) * n] if d.distributed else z

    def _uniform(self, n: int, *shape) -> torch.Tensor:
        d = self.processes
        u = torch.rand(n * d.world_size, *shape, device=self.device)
        return u[d.rank * n:(d.rank + 1) * n] if d.distributed else u

    def _check_batch(self, real: torch.Tensor) -> None:
        if real.shape[0] % self.pack:
            raise ConfigError(
                f"batch size must be a multiple of pack={self.pack} (the discriminator judges "
                f"groups of {self.pack} samples); got a batch of {real.shape[0]}. Choose "
                f"--batch-size as a multiple of {self.pack}."
            )

    @staticmethod
    def _finite(value: torch.Tensor, what: str, step: int) -> None:
        if not torch.isfinite(value):
            raise DivergedError(
                f"the {what} loss became {float(value)} at step {step}; the parameters were not "
                "updated with it. Lower --lr, use --loss hinge or wgan-gp, or resume from the "
                "last checkpoint."
            )

    def d_step(self, real: torch.Tensor, fake: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One discriminator update on ``real`` (B, *shape) and B generated samples (``fake``,
        or fresh ones drawn here).

        Returns detached scalars ``loss_d``, ``d_real``, ``d_fake`` (mean D(x) and D(G(z)):
        probabilities for the sigmoid losses, raw critic values otherwise).
        """
        self._check_batch(real)
        b = real.shape[0]
        if fake is None:
            with torch.no_grad(), self._autocast():
                fake = self.G(self._noise(b))
        parts = [real.detach().requires_grad_(True) if self.r1 else real, fake.detach().to(real.dtype)]
        if self.loss.gradient_penalty:
            eps = self._uniform(b // self.pack, *([1] * (real.dim() - 1))).to(real.device)
            eps = eps.repeat_interleave(self.pack, dim=0)  # one mixing weight per packed group
            parts.append((eps * real + (1 - eps) * parts[1]).requires_grad_(True))
        x = torch.cat(parts)  # (2B or 3B, *shape)
        with self._autocast(), (self._grouped or contextlib.nullcontext()):
            logits = self._D_sync(x).float()
        m = b // self.pack
        real_l, fake_l = logits[:m], logits[m:2 * m]
        loss = self.loss.d_loss(real_l, fake_l)
        if self.loss.gradient_penalty:
            (grad,) = torch.autograd.grad(logits[2 * m:].sum(), parts[2], create_graph=True)
            norms = grad.reshape(m, -1).norm(dim=1)  # (B, *shape) -> (B / pack, pack * D)
            loss = loss + self.loss.gradient_penalty * ((norms - 1) ** 2).mean()
        if self.r1:
            (grad,) = torch.autograd.grad(real_l.sum(), parts[0], create_graph=True)
            loss = loss + 0.5 * self.r1 * grad.reshape(m, -1).pow(2).sum(1).mean()
        self._finite(loss.detach(), "discriminator", self.step_count)
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        return {"loss_d": loss.detach(), "d_real": self._readout(real_l), "d_fake": self._readout(fake_l)}

    def g_step(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        """One generator update with B fresh samples, judged beside ``real`` when the
        discriminator holds BatchNorm (in their own group with per-group statistics, so the
        samples' logits are those of the samples alone). Returns ``loss_g``."""
        with self._autocast():
            fake = self._G_sync(self._noise(real.shape[0]))
        return self._g_update(fake, real if self.batch_stats else None)

    def _g_update(self, fake: torch.Tensor, beside: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The generator update on ``fake`` (generated with gradient), judged alone or after
        the real batch ``beside``."""
        _set_requires_grad(self.D, False)
        try:
            with self._autocast():
                if beside is not None:
                    with self._grouped or contextlib.nullcontext():
                        logits = self.D(torch.cat([beside, fake.to(beside.dtype)]))[beside.shape[0] // self.pack:]
                else:
                    logits = self.D(fake)
            loss = self.loss.g_loss(logits.float())
            self._finite(loss.detach(), "generator", self.step_count)
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_g.step()
        finally:
            _set_requires_grad(self.D, True)
        self._update_ema()
        return {"loss_g": loss.detach()}

    @torch.no_grad()
    def _update_ema(self) -> None:
        """Move :attr:`G_ema` towards the generator after generator step ``step_count + 1``."""
        if self.G_ema is None:
            return
        d = ema_decay(self.step_count + 1, self.ema)
        for pe, p in zip(self.G_ema.parameters(), self.G.parameters()):
            pe.lerp_(p.detach(), 1.0 - d)
        for be, b in zip(self.G_ema.buffers(), self.G.buffers()):
            be.copy_(b)

    @property
    def sampler(self) -> nn.Module:
        """The generator to sample from: :attr:`G_ema` when an average is kept, else G."""
        return self.G if self.G_ema is None else self.G_ema

    def step(self, real: torch.Tensor, *, d_steps_reals: list[torch.Tensor] | None = None) -> dict:
        """A discriminator step (or several, one per batch in ``d_steps_reals``) then a
        generator step: on the samples of the last discriminator step when the
        discriminator holds BatchNorm, on fresh samples otherwise. Returns the step's record
        of detached scalars."""
        self.G.train()
        self.D.train()
        reals = d_steps_reals or [real]
        if not self.batch_stats:
            # no batch statistics: the generator step judges fresh samples, not those the
            # discriminator has just been fitted to
            for r in reals:
                rec = self.d_step(r)
            rec.update(self.g_step(real))
            self.step_count += 1
            return rec
        for r in reals[:-1]:
            self.d_step(r)
        last = reals[-1]
        self._check_batch(last)
        with self._autocast():
            fake = self._G_sync(self._noise(last.shape[0]))  # with gradient: the G step reuses it
        rec = self.d_step(last, fake)
        rec.update(self._g_update(fake, real if self._beside_real else None))
        self.step_count += 1
        return rec

    def set_lr_factor(self, factor: float) -> None:
        """Scale both learning rates to ``factor`` times their initial values."""
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group.setdefault("initial_lr", group["lr"])
                group["lr"] = group["initial_lr"] * float(factor)

    def _readout(self, logits: torch.Tensor) -> torch.Tensor:
        v = torch.sigmoid(logits) if self.loss.probabilistic else logits
        return v.detach().mean()

    # -- checkpoints: tensors and plain containers only
    def state_dict(self) -> dict:
        state = {
            "generator": self.G.state_dict(), "discriminator": self.D.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "step": self.step_count,
        }
        if self.G_ema is not None:
            state["generator_ema"] = self.G_ema.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        if (self.G_ema is not None) != ("generator_ema" in state):
            raise KeyError("generator_ema: the checkpoint was saved "
                           + ("without" if self.G_ema is not None else "with")
                           + " a moving average of the generator (ema)")
        self.G.load_state_dict(state["generator"])
        if self.G_ema is not None:
            self.G_ema.load_state_dict(state["generator_ema"])
        self.D.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step_count = int(state["step"])


# ----------------------------------------------------------------------------- the loop
@dataclass
class GANFitResult:
    """What :func:`fit_gan` returns: the trainer (fitted networks inside) and the log."""

    trainer: GANTrainer
    history: list[dict]
    seconds: float


def linear_decay(step: int, steps: int, *, start: float = 0.5,
                 fraction: float | None = None) -> float:
    """Learning-rate factor: 1 for the first ``start`` fraction of the steps, then linearly
    down to 0 at ``steps`` (as in CycleGAN, Zhu et al. 2017). A function of the step alone,
    so a resumed run follows the same schedule. ``fraction``, where given, is how far along
    its schedule the run is instead of ``step / steps`` (a run whose time budget, not its
    steps, sets its length)."""
    if fraction is not None:
        f = min(1.0, max(0.0, float(fraction)))
        return 1.0 if f < start else max(0.0, (1.0 - f) / (1.0 - start))
    begin = start * steps
    if step < begin:
        return 1.0
    return max(0.0, (steps - step) / max(steps - begin, 1.0))


LR_SCHEDULES = {"none": None, "linear": linear_decay}


def ema_decay(step: int, ema: float) -> float:
    """The decay of the generator's moving average at generator step ``step`` (from 1):
    ``min(ema, (1 + step) / (10 + step))``, so that the first steps, far from where training
    ends, are soon forgotten (the warm-up of TensorFlow's ExponentialMovingAverage with
    ``num_updates``)."""
    return min(float(ema), (1.0 + step) / (10.0 + step))


def fit_gan(trainer: GANTrainer, data, steps: int, *, batch_size: int, seed: int = 0,
            d_steps: int = 1, log_every: int = 100,
            callback: Callable[[int, dict], None] | None = None,
            should_stop: Callable[[], bool] | None = None,
            lr_schedule: str = "none", on_step: Callable[[int], None] | None = None,
            schedule_fraction: Callable[[int], float] | None = None,
            progress: bool = False) -> GANFitResult:
    """Train from ``trainer.step_count`` up to ``steps`` steps.

    ``data`` is a :class:`probgen.data.Dataset` (its train split, through its training
    transform) or a tensor (N, *shape). Real batches of ``batch_size`` (per process, across
    the trainer's processes) come from :func:`probgen.data.batching.batch_stream`: batch k of
    the run is a function of ``(seed, k)``, so a run resumed at any step sees the batches an
    uninterrupted one would; incomplete batches are dropped. Each step draws ``d_steps`` real
    batches for as many discriminator steps, then takes a generator step. Every ``log_every``
    steps (and at the last) the record ``{"step", "loss_d", "loss_g", "d_real", "d_fake"}``
    (means since the previous record, over all processes) goes to the history and to
    ``callback(step, record)``. ``on_step(step)`` runs after every step (after the callback;
    checkpoints go there). ``should_stop()`` is asked after every step, and when it is true
    on any process the loop returns early (``trainer.step_count < steps``). ``lr_schedule``
    names a key of :data:`LR_SCHEDULES` (``"linear"``: constant, then linear decay to 0 over
    the second half). ``schedule_fraction(step)``, where given, says how far along that
    schedule the run is after ``step`` steps (by default ``step / steps``; a run with a time
    budget passes the larger of that and the share of its budget spent, so that its rates
    have decayed when the budget stops it). ``progress`` shows a bar over the steps with the
    last record's losses, the rate and the time left (:mod:`probgen.progress`: on a terminal
    only).
    """
    if lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}; got {lr_schedule!r}.")
    schedule = LR_SCHEDULES[lr_schedule]
    import time

    from probgen.data.batching import batch_stream
    from probgen.progress import bar as progress_bar

    group = trainer.processes
    start = trainer.step_count * d_steps
    where = dict(seed=seed, start=start, rank=group.rank, world_size=group.world_size)
    if hasattr(data, "stream"):
        reals = data.stream(batch_size, **where)
    else:
        reals = (b[0] for b in batch_stream((data,), batch_size, **where))
    t0 = time.perf_counter()
    bar = progress_bar(steps, initial=trainer.step_count, desc="GAN", unit="step", progress=progress)
    history: list[dict] = []
    acc: dict[str, torch.Tensor] = {}
    count = 0
    while trainer.step_count < steps:
        if schedule is not None:
            frac = None if schedule_fraction is None else schedule_fraction(trainer.step_count)
            trainer.set_lr_factor(schedule(trainer.step_count, steps, fraction=frac))
        batches = [next(reals) for _ in range(d_steps)]
        rec = trainer.step(batches[-1], d_steps_reals=batches)
        for key, v in rec.items():
            acc[key] = acc.get(key, 0.0) + v
        count += 1
        bar.update(1)
        if trainer.step_count % log_every == 0 or trainer.step_count == steps:
            means = torch.stack([torch.as_tensor(v, dtype=torch.float64).cpu() for v in acc.values()]) / count
            means = group.all_reduce_mean(means)  # over processes too
            out = {"step": trainer.step_count, **{k2: float(v) for k2, v in zip(acc, means)}}
            history.append(out)
            acc, count = {}, 0
            bar.set_postfix(loss_d=f"{out.get('loss_d', float('nan')):.3f}",
                            loss_g=f"{out.get('loss_g', float('nan')):.3f}", refresh=False)
            if callback is not None:
                callback(trainer.step_count, out)
        if on_step is not None:
            on_step(trainer.step_count)
        if should_stop is not None and group.any_true(bool(should_stop())):
            break
    bar.close()
    return GANFitResult(trainer, history, time.perf_counter() - t0)

