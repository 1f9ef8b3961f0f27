"""Importance-weighted training objectives for Pyro model/guide pairs: IWAE and DReG.

Both work on per-example importance weights ``log w_kn = log p(x_n, z_kn) - log q(z_kn|x_n)``
for K particles ``z_kn ~ q(z|x_n)`` drawn at once (a particle plate outside the model's
plates), with the example index taken from the plate named ``"data"`` (the convention of
:mod:`probgen.models.vae`). A minibatch plate that subsamples N examples scales the sum
over the batch by N / n, as Pyro's ELBOs do.

:class:`IWAE`
    The importance-weighted bound of Burda, Grosse & Salakhutdinov, "Importance weighted
    autoencoders" (ICLR 2016): ``sum_n log (1/K) sum_k w_kn``, differentiated by the
    reparametrisation trick. With K = 1 it is the single-sample ELBO, and its gradient is
    that of Pyro's ``Trace_ELBO``. Unlike Pyro's ``RenyiELBO(alpha=0)``, which weighs whole
    traces (all examples of a minibatch at once), the weights here are per example: the
    bound is the per-example IWAE-K bound that ``probgen eval --k K`` reports.
:class:`DReG`
    The doubly-reparametrised gradient estimator of Tucker, Lawson, Gu & Maddison, "Doubly
    reparameterized gradient estimators for Monte Carlo objectives" (ICLR 2019), for the same
    bound: the model's (decoder's) gradient is IWAE's, ``sum_k w~_k grad log w_k``, with
    normalised weights ``w~``; the guide's (encoder's) is ``sum_k w~_k^2 (d log w_k / d z_k)
    (d z_k / d phi)``, where ``log q`` inside ``log w`` has its parameters held fixed (the
    score term, zero in expectation, is dropped). Its signal-to-noise ratio for the guide
    does not decay with K as IWAE's does (Rainforth et al., ICML 2018).

Both need reparametrised guide sites (continuous latent variables) and every sample site
inside the ``"data"`` plate; anything else is refused with a :class:`ConfigError` that says
to use the ELBO. The objects follow Pyro's ELBO interface, ``differentiable_loss(model,
guide, *args, **kwargs) -> scalar``, whose value is the negative bound (scaled to the data
set) and whose gradient is the estimator's, so :func:`probgen.inference.svi.fit_svi` takes
them through its ``objective`` option.
"""

from __future__ import annotations

import math

import torch

from probgen.errors import ConfigError

__all__ = ["IWAE", "DReG", "OBJECTIVES", "make_objective", "importance_log_weights"]

OBJECTIVES = ("elbo", "iwae", "dreg")
_PARTICLE_PLATE = "_objective_particles"


def _check_particles(particles) -> int:
    if isinstance(particles, bool) or not isinstance(particles, int) or particles < 1:
        raise ConfigError(f"particles (--particles) must be a positive integer; got {particles!r}.")
    return particles


def _max_plate_nesting(model, guide, args, kwargs) -> int:
    """The deepest plate dimension used by the model or the guide (one trace of each, on a
    forked random state: finding it draws nothing from the run's random streams)."""
    from pyro import poutine

    cuda = sorted({a.device.index or 0 for a in (*args, *kwargs.values())
                   if isinstance(a, torch.Tensor) and a.is_cuda})
    with torch.random.fork_rng(devices=cuda), poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    deepest = 0
    for trace in (guide_trace, model_trace):
        for site in trace.nodes.values():
            if site["type"] == "sample" and site["cond_indep_stack"]:
                for frame in site["cond_indep_stack"]:
                    if frame.vectorized and frame.dim is not None:
                        deepest = max(deepest, -frame.dim)
    return deepest


def _particle_plated(fn, particles: int, dim: int):
    import pyro

    def wrapped(*args, **kwargs):
        with pyro.plate(_PARTICLE_PLATE, particles, dim=dim):
            return fn(*args, **kwargs)

    return wrapped


def _sample_sites(trace):
    from pyro.poutine.util import site_is_subsample

    return [(name, site) for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site)]


def _data_frame(name: str, site, data_plate: str):
    for frame in site["cond_indep_stack"]:
        if frame.name == data_plate:
            return frame
    raise ConfigError(
        f"the importance-weighted objectives need every sample site inside the plate "
        f"{data_plate!r} (one importance weight per example), but site {name!r} is not. Put "
        f"the per-example sites in pyro.plate({data_plate!r}, ...), or train with the ELBO "
        "(--objective elbo)."
    )


def _site_log_prob(name: str, site, particle_dim: int, data_plate: str) -> tuple[torch.Tensor, float]:
    """log prob of one site summed over every dimension but (particle, example): (K|1, n|1)."""
    from pyro.distributions.util import scale_and_mask

    frame = _data_frame(name, site, data_plate)
    lp = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
    lp = scale_and_mask(lp, 1.0, site["mask"])
    width = -particle_dim
    if lp.dim() < width:
        lp = lp.reshape((1,) * (width - lp.dim()) + tuple(lp.shape))
    keep = (0, width + frame.dim)  # particle dim, example dim (of the width leading dims)
    other = [d for d in range(lp.dim()) if d not in keep]
    if other:
        lp = lp.sum(other)
    scale = site["scale"]
    return lp, float(scale) if not isinstance(scale, torch.Tensor) else float(scale.reshape(-1)[0])


def importance_log_weights(model, guide, *args, particles: int = 1, data_plate: str = "data",
                           max_plate_nesting: int | None = None, **kwargs) -> tuple[torch.Tensor, float]:
    """Per-example log importance weights of ``particles`` draws from the guide.

    Returns ``(log_w, scale)``: ``log_w`` (K, n) is ``log p(x_n, z_kn) - log q(z_kn | x_n)``
    with the graph to the model's and the guide's parameters (reparametrised draws), and
    ``scale`` the minibatch scale (N / n) of the ``data_plate`` sites.
    """
    particles = _check_particles(particles)
    if max_plate_nesting is None:
        max_plate_nesting = _max_plate_nesting(model, guide, args, kwargs)
    terms = _weight_terms(model, guide, args, kwargs, particles, data_plate, max_plate_nesting)
    return terms["log_w"], terms["scale"]


def _weight_terms(model, guide, args, kwargs, particles, data_plate, max_plate_nesting,
                  *, hooked: bool = False) -> dict:
    """Trace the guide with K particles and the model on its draws; the log weights.

    ``hooked``: the model and ``log q`` see the draws through a view each (``"views"``), on
    which a gradient hook can be put, and ``"log_q_fixed"`` holds ``log q_phi(z.detach())``
    (K, n), whose parameter gradient cancels the score term of ``log q`` for DReG.
    """
    from pyro import poutine

    dim = -(max_plate_nesting + 1)
    guide_p = _particle_plated(guide, particles, dim)
    model_p = _particle_plated(model, particles, dim)
    guide_trace = poutine.trace(guide_p).get_trace(*args, **kwargs)
    latents = {}
    for name, site in _sample_sites(guide_trace):
        if site["is_observed"]:
            continue
        if not site["fn"].has_rsample or site["infer"].get("enumerate"):
            raise ConfigError(
                f"the importance-weighted objectives (iwae, dreg) differentiate through the "
                f"guide's draws, but guide site {name!r} ({type(site['fn']).__name__}) cannot be "
                "reparametrised. Train this model with --objective elbo."
            )
        latents[name] = site
    out: dict = {}
    if hooked:
        views = {name: site["value"].view(site["value"].shape) for name, site in latents.items()}
        model_trace = poutine.trace(poutine.condition(model_p, data=views)).get_trace(*args, **kwargs)
        if len(latents) == 1:
            # q(z|x) depends on no other latent: its distribution object serves both terms
            (name, site), = latents.items()
            q_view = {name: {**site, "value": views[name]}}
            q_fixed = {name: {**site, "value": site["value"].detach()}}
        else:
            detached = {name: site["value"].detach() for name, site in latents.items()}
            q_view = dict(_sample_sites(
                poutine.trace(poutine.condition(guide_p, data=views)).get_trace(*args, **kwargs)))
            q_fixed = dict(_sample_sites(
                poutine.trace(poutine.condition(guide_p, data=detached)).get_trace(*args, **kwargs)))
        out["views"] = views
        out["latent_sites"] = latents
        out["log_q_fixed"] = sum(_site_log_prob(n, q_fixed[n], dim, data_plate)[0] for n in latents)
        q_sites = {n: q_view[n] for n in latents}
    else:
        model_trace = poutine.trace(poutine.replay(model_p, trace=guide_trace)).get_trace(*args, **kwargs)
        q_sites = latents
    log_w, scales = 0.0, set()
    for name, site in _sample_sites(model_trace):
        lp, s = _site_log_prob(name, site, dim, data_plate)
        log_w = log_w + lp
        scales.add(s)
    for name, site in q_sites.items():
        lp, s = _site_log_prob(name, site, dim, data_plate)
        log_w = log_w - lp
        scales.add(s)
    if not isinstance(log_w, torch.Tensor):
        raise ConfigError("the model has no sample sites: there is no bound to optimise.")
    if len({round(s, 9) for s in scales}) > 1:
        raise ConfigError(f"the sample sites of the {data_plate!r} plate carry different scales "
                          f"({sorted(scales)}): the importance weights need one minibatch scale.")
    out["log_w"] = log_w.expand(particles, log_w.shape[-1]) if log_w.shape[0] == 1 else log_w
    out["scale"] = scales.pop()
    out["particle_dim"] = dim
    return out


class _ImportanceObjective:
    """Shared parts: the particle count, the data plate and the plate nesting (found once)."""

    name = ""

    def __init__(self, particles: int = 1, *, data_plate: str = "data",
                 max_plate_nesting: int | None = None):
        self.particles = _check_particles(particles)
        self.data_plate = str(data_plate)
        self.max_plate_nesting = max_plate_nesting

    def _nesting(self, model, guide, args, kwargs) -> int:
        if self.max_plate_nesting is None:
            self.max_plate_nesting = _max_plate_nesting(model, guide, args, kwargs)
        return self.max_plate_nesting

    def bound(self, log_w: torch.Tensor) -> torch.Tensor:
        """Per-example bound log (1/K) sum_k w_k: (K, n) -> (n,)."""
        return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(particles={self.particles})"


class IWAE(_ImportanceObjective):
    """The IWAE-K bound as a loss: ``-(N/n) sum_n log (1/K) sum_k w_kn`` (module docstring)."""

    name = "iwae"

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        nesting = self._nesting(model, guide, args, kwargs)
        t = _weight_terms(model, guide, args, kwargs, self.particles, self.data_plate, nesting)
        return -t["scale"] * self.bound(t["log_w"]).sum()

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))


class DReG(_ImportanceObjective):
    """The IWAE-K bound with the doubly-reparametrised gradient (module docstring).

    The returned loss has the value of :class:`IWAE`'s and the DReG gradient: the model's
    parameters get ``-(N/n) sum_n sum_k w~_kn grad log w_kn``; the guide's get the same with
    ``w~^2`` on the pathwise derivative through the draws and no score term. The
    normalised weights are computed once, without gradient; the pathwise factor is put on by
    a gradient hook on each draw as the model and ``log q`` see it.
    """

    name = "dreg"

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        nesting = self._nesting(model, guide, args, kwargs)
        t = _weight_terms(model, guide, args, kwargs, self.particles, self.data_plate, nesting,
                          hooked=True)
        log_w, scale = t["log_w"], t["scale"]
        weights = torch.softmax(log_w.detach(), 0)  # (K, n) normalised, no gradient
        # sum_k w~ (log w + log q_phi(z.detach())): the model's gradient is IWAE's; the guide's
        # explicit (score) dependence cancels between the two terms; the pathwise one is
        # multiplied by w~ once more at the views
        surrogate = (weights * (log_w + t["log_q_fixed"])).sum()
        for name, view in t["views"].items():
            if view.requires_grad:
                view.register_hook(_weight_hook(weights, t["latent_sites"][name], t["particle_dim"],
                                                self.data_plate))
        value = -scale * self.bound(log_w.detach()).sum()
        return value + (-scale) * (surrogate - surrogate.detach())

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            nesting = self._nesting(model, guide, args, kwargs)
            t = _weight_terms(model, guide, args, kwargs, self.particles, self.data_plate, nesting)
            return float(-t["scale"] * self.bound(t["log_w"]).sum())


def _weight_hook(weights: torch.Tensor, site, particle_dim: int, data_plate: str):
    """A hook multiplying the gradient of one draw (K, ..., n, ..., *event) by w~ (K, n)."""
    fn = site["fn"]
    batch_dims = len(fn.batch_shape)
    shape = [1] * (batch_dims + len(fn.event_shape))
    frame = _data_frame("", site, data_plate)
    shape[batch_dims + particle_dim] = weights.shape[0]
    shape[batch_dims + frame.dim] = weights.shape[1]
    w = weights.reshape(shape)

    def hook(grad: torch.Tensor) -> torch.Tensor:
        return grad * w

    return hook


def make_objective(name: str, particles: int = 1, *, loss: str = "trace"):
    """The objective object for ``name`` in :data:`OBJECTIVES` with ``particles`` particles.

    ``"elbo"`` is Pyro's ``Trace_ELBO`` (or ``TraceMeanField_ELBO`` with
    ``loss="mean-field"``) averaged over the particles; ``"iwae"`` and ``"dreg"`` the classes
    above.
    """
    from probgen.errors import suggest

    particles = _check_particles(particles)
    if name == "elbo":
        from pyro.infer import TraceMeanField_ELBO

        from probgen.inference.elbo import Trace_ELBO

        losses = {"trace": Trace_ELBO, "mean-field": TraceMeanField_ELBO}
        if loss not in losses:
            raise ConfigError(f"loss must be one of {', '.join(losses)}; got {loss!r}.")
        return losses[loss](num_particles=particles, vectorize_particles=particles > 1)
    if name == "iwae":
        return IWAE(particles)
    if name == "dreg":
        return DReG(particles)
    raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}; got {name!r}."
                      f"{suggest(name, OBJECTIVES)}")
