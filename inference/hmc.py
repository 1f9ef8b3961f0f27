"""Hamiltonian Monte Carlo on a tempered posterior, and its step-size adaptation.

The transition kernel of annealed importance sampling (:mod:`probgen.inference.ais`). For a
latent-variable model with prior ``p(z)`` and likelihood ``p(x|z)``, and the start
distribution ``q0 = N(0, I)``, the tempered target at inverse temperature ``beta`` is

    log f_beta(z) = log q0(z) + beta * h(z),    h(z) = log p(z) + log p(x|z) - log q0(z),

``f_0 = q0`` and ``f_1 ∝ p(z|x)``. :func:`hmc_transition` leaves ``f_beta`` invariant
(Neal, 2011, "MCMC using Hamiltonian dynamics"): leapfrog with a step size jittered per chain
by a random factor in ``[1 - jitter, 1 + jitter]`` (Neal, 2011, sec. 5.4.2.2), then a
Metropolis correction; proposals where the model's log density is not finite are rejected.
:func:`adapt_step_size` is Wu, Burda, Salakhutdinov and Grosse's (2017) rule: the step
size is multiplied by ``1 + rate`` when a running average of the acceptance probability is
above the target, by ``1 - rate`` otherwise.

Every tensor holds chains ``C`` and examples ``N`` in its first two dimensions: ``z`` is
(C, N, d), ``h`` (C, N). Gradients in ``z`` are taken with :func:`torch.autograd.grad`
(model parameters get no ``.grad``).

The model protocol: ``prior_log_prob(z)`` (``(..., d) -> (...)``) and
``log_likelihood(x, z)`` (``x (N, *shape)``, ``z (C, N, d) -> (C, N)``); or ``log_joint(x, z)``
= log p(z) + log p(x|z) in one call.
"""

from __future__ import annotations

import math

import torch

from probgen.errors import ConfigError

__all__ = [
    "MAX_STEP_SIZE",
    "MIN_STEP_SIZE",
    "adapt_step_size",
    "hmc_transition",
    "std_normal_log_prob",
    "tempered_log_ratio",
]

_LOG_2PI = math.log(2.0 * math.pi)
MIN_STEP_SIZE, MAX_STEP_SIZE = 1e-4, 1.0  # the adaptation keeps the step size in this range


def std_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)``: (..., d) -> (...)."""
    return -0.5 * z.pow(2).sum(-1) - 0.5 * z.shape[-1] * _LOG_2PI


def tempered_log_ratio(model, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``h(z) = log p(z) + log p(x|z) - log N(z; 0, I)`` (C, N) and its gradient in z (C, N, d).

    Points where the value or the gradient is not finite get ``h = -inf`` (so HMC rejects
    them) and a zero gradient.
    """
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        if callable(getattr(model, "log_joint", None)):
            parts = (("log_joint(x, z)", model.log_joint(x, z)),)
        else:
            parts = (("prior_log_prob(z)", model.prior_log_prob(z)),
                     ("log_likelihood(x, z)", model.log_likelihood(x, z)))
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
    h = lp.detach() - std_normal_log_prob(z)
    grad_h = g + z
    ok = torch.isfinite(h) & torch.isfinite(grad_h).all(-1)
    h = torch.where(ok, h, torch.full_like(h, -math.inf))
    grad_h = torch.where(ok.unsqueeze(-1), grad_h, torch.zeros_like(grad_h))
    return h, grad_h


def hmc_transition(model, x: torch.Tensor, z: torch.Tensor, h: torch.Tensor,
                   grad_h: torch.Tensor, beta: float, step_size: torch.Tensor, *,
                   n_leapfrog: int, jitter: float, generator: torch.Generator | None = None):
    """One HMC transition that leaves ``f_beta`` invariant.

    Parameters
    ----------
    model
        The protocol of this module.
    x : Tensor (N, *shape)
    z, h, grad_h : Tensor (C, N, d), (C, N), (C, N, d)
        The current state and :func:`tempered_log_ratio` at it.
    beta : float
    step_size : Tensor (C, N, 1)
        Leapfrog step size per chain, before the jitter.
    n_leapfrog : int
    jitter : float
        In ``[0, 1)``; 0 uses ``step_size`` as it is.
    generator : torch.Generator, optional

    Returns
    -------
    z, h, grad_h, accept_prob
        The new state and the acceptance probability of the proposal (C, N).
    """
    def log_f(z_, h_):
        return std_normal_log_prob(z_) + beta * h_

    def grad_log_f(z_, g_):
        return -z_ + beta * g_

    eps = step_size
    p0 = torch.randn(z.shape, dtype=z.dtype, device=z.device, generator=generator)
    if jitter > 0:
        u = torch.rand(eps.shape, dtype=z.dtype, device=z.device, generator=generator)
        eps = eps * (1.0 + jitter * (2.0 * u - 1.0))
    zn, hn, gn = z, h, grad_h
    p = p0 + 0.5 * eps * grad_log_f(zn, gn)
    for step in range(n_leapfrog):
        zn = zn + eps * p
        hn, gn = tempered_log_ratio(model, x, zn)
        if step < n_leapfrog - 1:
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


def adapt_step_size(step_size: torch.Tensor, avg_accept: torch.Tensor, accept_prob: torch.Tensor,
                    *, target_accept: float, rate: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Wu et al.'s (2017) update after one transition.

    The running average ``avg_accept`` (C, N) takes the new acceptance probability with
    weight 0.1; the step size (C, N, 1) is multiplied by ``1 + rate`` where that average is
    above ``target_accept`` and by ``1 - rate`` elsewhere, and kept within
    ``[MIN_STEP_SIZE, MAX_STEP_SIZE]``. Returns the new step size and average.
    """
    avg_accept = 0.9 * avg_accept + 0.1 * accept_prob
    up = (avg_accept > target_accept).unsqueeze(-1)
    step_size = torch.where(up, step_size * (1.0 + rate), step_size * (1.0 - rate))
    return step_size.clamp_(MIN_STEP_SIZE, MAX_STEP_SIZE), avg_accept
