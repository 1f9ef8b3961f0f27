"""Bounds on log p(x) for latent-variable models, per example, with Monte Carlo standard errors.

Every function here works from the latent-variable protocol only, so the same code scores a
VAE and probabilistic PCA (where the exact log p(x) is known and the bounds can be checked):

* ``encoder_distribution(x)`` -> q(z|x), a torch Distribution with batch shape (N,) and
  event shape (latent_dim,)
* ``prior_log_prob(z)``: z (..., latent_dim) -> (...)
* ``log_likelihood(x, z)``: x (N, *data_shape), z (S, N, latent_dim) -> (S, N)
* optionally ``prior(x)`` -> p(z) as a Distribution with batch shape (N,): then the KL term
  of the ELBO is analytic where torch has the formula.

References: Kingma & Welling, "Auto-encoding variational Bayes" (ICLR 2014) for the ELBO;
Burda, Grosse & Salakhutdinov, "Importance weighted autoencoders" (ICLR 2016) for the
importance-weighted bound, which increases with k towards log p(x).

Everything runs under ``torch.no_grad()``: these are evaluation functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from probgen.errors import ConfigError

__all__ = ["ELBORecord", "IWAERecord", "elbo", "iwae_bound", "DEFAULT_MAX_ELEMENTS"]

# Largest number of data-space values (samples x examples x pixels) one chunk holds:
# 2**23 float32 values = 32 MiB per tensor of decoder output.
DEFAULT_MAX_ELEMENTS = 2**23


@dataclass
class ELBORecord:
    """The ELBO per example and its two terms, nats.

    Attributes
    ----------
    total : Tensor (N,)
        ``reconstruction - kl``.
    reconstruction : Tensor (N,)
        E_q[log p(x|z)], Monte Carlo.
    kl : Tensor (N,)
        KL(q(z|x) || p(z)): analytic where available, else Monte Carlo.
    mc_stderr : Tensor (N,) or None
        Monte Carlo standard error of ``total`` (None with one sample).
    """

    total: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    mc_stderr: torch.Tensor | None = None


@dataclass
class IWAERecord:
    """The importance-weighted bound per example, nats.

    Attributes
    ----------
    total : Tensor (N,)
        log (1/k) sum_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x).
    mc_stderr : Tensor (N,) or None
        Delta-method standard error, sqrt(Var[w] / (k E[w]^2)) with the moments estimated
        from the same k weights (None for k = 1). It understates the error when the
        weights are heavy-tailed.
    k : int
    """

    total: torch.Tensor
    mc_stderr: torch.Tensor | None
    k: int


def _data_elements(x: torch.Tensor) -> int:
    return max(1, math.prod(x.shape))


def _chunk(max_elements: int, x: torch.Tensor) -> int:
    return max(1, int(max_elements) // _data_elements(x))


def _analytic_kl(model, q, x):
    prior = getattr(model, "prior", None)
    if not callable(prior):
        return None
    try:
        return torch.distributions.kl_divergence(q, prior(x))  # (N,)
    except NotImplementedError:
        return None


@torch.no_grad()
def elbo(model, x: torch.Tensor, *, num_samples: int = 1, analytic_kl: bool = True,
         max_elements: int = DEFAULT_MAX_ELEMENTS) -> ELBORecord:
    """The evidence lower bound per example, E_q[log p(x|z)] - KL(q(z|x) || p(z)).

    Parameters
    ----------
    model : latent-variable model (see the module docstring)
    x : Tensor (N, *data_shape)
    num_samples : int
        Samples of z per example; the standard error needs at least 2.
    analytic_kl : bool
        Use the closed-form KL when the model has ``prior(x)`` and torch knows the pair.
    max_elements : int
        Bound on samples x examples x data values held at once.

    Returns
    -------
    ELBORecord
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigError(f"num_samples must be a positive integer; got {num_samples!r}.")
    q = model.encoder_distribution(x)
    kl_exact = _analytic_kl(model, q, x) if analytic_kl else None
    per_sample_rec, per_sample_total = [], []
    chunk = _chunk(max_elements, x)
    for start in range(0, num_samples, chunk):
        s = min(chunk, num_samples - start)
        z = q.sample((s,))  # (s, N, L)
        rec = model.log_likelihood(x, z)  # (s, N)
        if kl_exact is None:
            kl_s = q.log_prob(z) - model.prior_log_prob(z)  # (s, N)
        else:
            kl_s = kl_exact.expand_as(rec)
        per_sample_rec.append(rec)
        per_sample_total.append(rec - kl_s)
    rec = torch.cat(per_sample_rec)  # (S, N)
    total = torch.cat(per_sample_total)  # (S, N)
    mean_total = total.mean(0)
    mean_rec = rec.mean(0)
    kl = kl_exact if kl_exact is not None else mean_rec - mean_total
    se = total.std(0, unbiased=True) / math.sqrt(num_samples) if num_samples > 1 else None
    return ELBORecord(total=mean_total, reconstruction=mean_rec, kl=kl, mc_stderr=se)


@torch.no_grad()
def iwae_bound(model, x: torch.Tensor, k: int, *, chunk_size: int | None = None,
               max_elements: int = DEFAULT_MAX_ELEMENTS) -> IWAERecord:
    """The importance-weighted lower bound log (1/k) sum_i w_i, w_i = p(x, z_i) / q(z_i|x).

    All examples of ``x`` are scored together; the k samples are drawn in chunks and folded
    into a running log-sum-exp, so k = 5000 needs the memory of one chunk only.

    Parameters
    ----------
    model : latent-variable model (see the module docstring)
    x : Tensor (N, *data_shape)
    k : int
        Importance samples per example; k = 1 is an unbiased single-sample ELBO estimate.
    chunk_size : int, optional
        Samples per chunk; default: as many as fit in ``max_elements`` data values.

    Returns
    -------
    IWAERecord
    """
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"k (importance samples) must be a positive integer; got {k!r}.")
    q = model.encoder_distribution(x)
    n = x.shape[0]
    chunk = chunk_size or _chunk(max_elements, x)
    lse1 = torch.full((n,), -math.inf, dtype=torch.float64, device=x.device)  # log sum w
    lse2 = torch.full((n,), -math.inf, dtype=torch.float64, device=x.device)  # log sum w^2
    for start in range(0, k, chunk):
        s = min(chunk, k - start)
        z = q.sample((s,))  # (s, N, L)
        log_w = (model.log_likelihood(x, z) + model.prior_log_prob(z) - q.log_prob(z)).double()
        lse1 = torch.logaddexp(lse1, torch.logsumexp(log_w, 0))  # (N,)
        lse2 = torch.logaddexp(lse2, torch.logsumexp(2 * log_w, 0))
    total = lse1 - math.log(k)
    se = None
    if k > 1:
        # Var[w] / E[w]^2 = k * sum w^2 / (sum w)^2 - 1, with the k-sample moments
        rel_var = (k * torch.exp(lse2 - 2 * lse1) - 1).clamp_min(0)
        se = (rel_var / k).sqrt().to(x.dtype)
    return IWAERecord(total=total.to(x.dtype), mc_stderr=se, k=k)
