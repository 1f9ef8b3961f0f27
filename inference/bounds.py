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
from probgen.progress import bar as progress_bar

__all__ = ["ELBORecord", "IWAERecord", "elbo", "iwae_bound", "chunk_plan", "DEFAULT_MAX_ELEMENTS",
           "LatentBounds"]

# Largest number of data-space values (samples x examples x data values) one chunk holds:
# 2**23 float32 values = 32 MiB per tensor of decoder output. A chunk makes several such
# tensors (the decoder's output and the temporaries of the per-value log-likelihood), so the
# working memory of elbo() and iwae_bound() is a fixed multiple of this whatever N and k are:
# about 8x for the Bernoulli MNIST VAE, 235-257 MiB above the process's floor for IWAE-5000
# on 500 or 2,000 test images (benchmarks/eval_memory.py).
DEFAULT_MAX_ELEMENTS = 2**23


@dataclass
class ELBORecord:
    """The ELBO per example and its two terms, nats.

    Attributes
    ----------
    total : Tensor (N,)
        ``reconstruction - kl``.
    reconstruction : Tensor (N,) or None
        E_q[log p(x|z)], Monte Carlo. None where the model does not split so
        (:func:`probgen.inference.program_bounds.program_elbo` of a program with several
        observed sites or an enumerated latent).
    kl : Tensor (N,) or None
        KL(q(z|x) || p(z)): analytic where available, else Monte Carlo; None as above.
    mc_stderr : Tensor (N,) or None
        Monte Carlo standard error of ``total`` (None with one sample).
    """

    total: torch.Tensor
    reconstruction: torch.Tensor | None
    kl: torch.Tensor | None
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


def chunk_plan(n: int, data_size: int, max_elements: int = DEFAULT_MAX_ELEMENTS,
               chunk_size: int | None = None) -> tuple[int, int]:
    """How :func:`elbo` and :func:`iwae_bound` split their work to bound its memory.

    The examples are taken in blocks and, within a block, the samples of z in chunks, so that
    one chunk holds at most ``max_elements`` data values (samples x examples x data values),
    whatever ``n`` and the number of samples are. A single example's data values that exceed
    ``max_elements`` on their own still make a chunk of one sample and one example.

    Parameters
    ----------
    n : int
        Number of examples.
    data_size : int
        Values per example (784 for a 28 x 28 image).
    max_elements : int
        The bound on data values per chunk.
    chunk_size : int, optional
        Samples per chunk, fixed; the examples per block then follow from ``max_elements``.

    Returns
    -------
    (examples_per_block, samples_per_chunk) : tuple of int
    """
    if isinstance(max_elements, bool) or not isinstance(max_elements, int) or max_elements < 1:
        raise ConfigError(f"max_elements (data values held at once) must be a positive integer; "
                          f"got {max_elements!r}. The default is {DEFAULT_MAX_ELEMENTS} (32 MiB "
                          f"of float32 per tensor).")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        raise ConfigError(f"chunk_size (samples per chunk) must be a positive integer or None; "
                          f"got {chunk_size!r}.")
    d = max(1, int(data_size))
    per_sample = max(1, chunk_size or 1)
    block = max(1, min(max(n, 1), max_elements // (d * per_sample)))
    samples = chunk_size or max(1, max_elements // (d * block))
    return block, samples


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
         max_elements: int = DEFAULT_MAX_ELEMENTS, progress: bool = False) -> ELBORecord:
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
        Bound on samples x examples x data values held at once (see :func:`chunk_plan`);
        the default, 2**23, is 32 MiB of float32 per tensor of decoder output.
    progress : bool
        Show a bar over samples x examples (:mod:`probgen.progress`: on a terminal only).

    Returns
    -------
    ELBORecord
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigError(f"num_samples must be a positive integer; got {num_samples!r}.")
    n = x.shape[0]
    block, chunk = chunk_plan(n, _data_size(x), max_elements)
    totals, recs, kls, ses = [], [], [], []
    bar = progress_bar(n * num_samples, desc="ELBO", unit="sample", unit_scale=True,
                       progress=progress)
    for b0 in range(0, n, block):
        xb = x[b0:b0 + block]  # (B, *data_shape)
        q = model.encoder_distribution(xb)
        kl_exact = _analytic_kl(model, q, xb) if analytic_kl else None
        rec_parts, total_parts = [], []
        for start in range(0, num_samples, chunk):
            s = min(chunk, num_samples - start)
            z = q.sample((s,))  # (s, B, L)
            rec = model.log_likelihood(xb, z)  # (s, B)
            if kl_exact is None:
                kl_s = q.log_prob(z) - model.prior_log_prob(z)  # (s, B)
            else:
                kl_s = kl_exact.expand_as(rec)
            rec_parts.append(rec)
            total_parts.append(rec - kl_s)
            bar.update(s * xb.shape[0])
        rec = torch.cat(rec_parts)  # (S, B)
        total = torch.cat(total_parts)  # (S, B)
        mean_total, mean_rec = total.mean(0), rec.mean(0)
        totals.append(mean_total)
        recs.append(mean_rec)
        kls.append(kl_exact if kl_exact is not None else mean_rec - mean_total)
        if num_samples > 1:
            ses.append(total.std(0, unbiased=True) / math.sqrt(num_samples))
    bar.close()
    return ELBORecord(total=torch.cat(totals), reconstruction=torch.cat(recs), kl=torch.cat(kls),
                      mc_stderr=torch.cat(ses) if ses else None)


@torch.no_grad()
def iwae_bound(model, x: torch.Tensor, k: int, *, chunk_size: int | None = None,
               max_elements: int = DEFAULT_MAX_ELEMENTS, progress: bool = False) -> IWAERecord:
    """The importance-weighted lower bound log (1/k) sum_i w_i, w_i = p(x, z_i) / q(z_i|x).

    The examples are taken in blocks and, for each block, the k samples are drawn in chunks
    folded into a running log-sum-exp (:func:`chunk_plan`), so that k = 5000 on the whole MNIST
    test set needs the memory of one chunk of at most ``max_elements`` data values.

    Parameters
    ----------
    model : latent-variable model (see the module docstring)
    x : Tensor (N, *data_shape)
    k : int
        Importance samples per example; k = 1 is an unbiased single-sample ELBO estimate.
    chunk_size : int, optional
        Samples per chunk; default: as many as fit in ``max_elements`` data values.
    max_elements : int
        Bound on samples x examples x data values held at once; the default, 2**23, is 32 MiB
        of float32 per tensor of decoder output.
    progress : bool
        Show a bar over samples x examples (k x N in all) with the rate and time left
        (:mod:`probgen.progress`: on a terminal only).

    Returns
    -------
    IWAERecord
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k (importance samples) must be a positive integer; got {k!r}.")
    n = x.shape[0]
    block, chunk = chunk_plan(n, _data_size(x), max_elements, chunk_size)
    lse1 = torch.full((n,), -math.inf, dtype=torch.float64, device=x.device)  # log sum w
    lse2 = torch.full((n,), -math.inf, dtype=torch.float64, device=x.device)  # log sum w^2
    bar = progress_bar(n * k, desc=f"IWAE-{k}", unit="sample", unit_scale=True, progress=progress)
    for b0 in range(0, n, block):
        sl = slice(b0, min(b0 + block, n))
        xb = x[sl]  # (B, *data_shape)
        q = model.encoder_distribution(xb)
        for start in range(0, k, chunk):
            s = min(chunk, k - start)
            z = q.sample((s,))  # (s, B, L)
            log_w = (model.log_likelihood(xb, z) + model.prior_log_prob(z) - q.log_prob(z)).double()
            lse1[sl] = torch.logaddexp(lse1[sl], torch.logsumexp(log_w, 0))  # (B,)
            lse2[sl] = torch.logaddexp(lse2[sl], torch.logsumexp(2 * log_w, 0))
            bar.update(s * xb.shape[0])
    bar.close()
    total = lse1 - math.log(k)
    se = None
    if k > 1:
        # Var[w] / E[w]^2 = k * sum w^2 / (sum w)^2 - 1, with the k-sample moments
        rel_var = (k * torch.exp(lse2 - 2 * lse1) - 1).clamp_min(0)
        se = (rel_var / k).sqrt().to(x.dtype)
    return IWAERecord(total=total.to(x.dtype), mc_stderr=se, k=k)


def _data_size(x: torch.Tensor) -> int:
    """Values per example: prod(x.shape[1:])."""
    return max(1, math.prod(x.shape[1:]))


class LatentBounds:
    """The bound methods of the evaluation protocol, ``elbo(x)`` and ``iwae_bound(x, k)``, for
    a latent-variable model with ``encoder_distribution(x)``, ``prior_log_prob(z)`` and
    ``log_likelihood(x, z)`` (the VAEs, PPCA): a base class, so that each model states them
    once."""

    def elbo(self, x: torch.Tensor, num_samples: int = 10) -> ELBORecord:
        """Per-example ELBO record (total, reconstruction, kl, mc_stderr), nats (:func:`elbo`)."""
        return elbo(self, x, num_samples=num_samples)

    def iwae_bound(self, x: torch.Tensor, k: int = 100) -> IWAERecord:
        """Per-example importance-weighted bound with k samples (record: total, mc_stderr;
        :func:`iwae_bound`)."""
        return iwae_bound(self, x, k)
