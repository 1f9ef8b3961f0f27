"""Mode coverage on toy mixtures: modes covered, high-quality samples, reverse KL over modes.

The definitions follow VEEGAN (Srivastava et al., "VEEGAN: reducing mode collapse in GANs
using implicit variational learning", 2017) and PacGAN (Lin et al., "PacGAN: the power of two
samples in generative adversarial networks", 2018), on mixtures of isotropic Gaussians with
means ``mu_k`` and a common standard deviation ``sigma``:

* each sample is assigned to its nearest mean (Euclidean distance);
* a sample is **high quality** when that distance is at most ``3 * sigma`` (in 2-D a true
  sample is high quality with probability 1 - exp(-4.5) = 0.989; in 1-D 0.997);
* a mode is **covered** when it receives at least ``min_count`` high-quality samples, with
  ``min_count = max(1, ceil(0.2 * n * w_k))``: a fifth of the count the true mixture weight
  ``w_k`` would give it. With PacGAN's 2,500 samples on the 25-mode grid that is PacGAN's
  threshold of 20 samples per mode; it scales with ``n`` so that the count does not drift
  with the number of samples drawn;
* **reverse KL** is ``KL(p_model || p_true) = sum_k p_k log(p_k / w_k)`` between the histogram
  of ALL samples over their nearest modes (PacGAN's histogram; empty bins contribute 0) and the
  true weights. Its standard error is the spread over a multinomial bootstrap of the counts.
"""

from __future__ import annotations

import math

import torch

from probgen.errors import DataError
from probgen.eval.metrics import Metric

__all__ = ["mode_statistics", "mode_metrics", "COVERAGE_FRACTION", "HQ_RADIUS"]

HQ_RADIUS = 3.0          # high quality: within this many sigma of the nearest mode
COVERAGE_FRACTION = 0.2  # covered: at least this fraction of the mode's expected sample count


def mode_statistics(samples: torch.Tensor, means: torch.Tensor, sigma: float,
                    weights: torch.Tensor | None = None, *, n_bootstrap: int = 200,
                    seed: int = 0) -> dict:
    """Mode statistics of ``samples`` (n, D) against a mixture with ``means`` (K, D).

    Returns a dict with ``counts`` (K,) of all samples per nearest mode, ``hq_counts`` (K,)
    of high-quality ones, ``covered`` (K,) bool, ``min_count``, ``modes_covered``,
    ``high_quality_fraction``, ``reverse_kl`` and ``reverse_kl_stderr``.
    """
    x = samples.detach().double().reshape(samples.shape[0], -1).cpu()
    mu = means.detach().double().reshape(means.shape[0], -1).cpu()
    if x.shape[1] != mu.shape[1]:
        raise DataError(
            f"samples have {x.shape[1]} dimensions but the mixture means have {mu.shape[1]}: "
            "score samples of the data set the mixture describes."
        )
    n, k = x.shape[0], mu.shape[0]
    if n == 0:
        raise DataError("mode statistics need at least one sample; got 0.")
    w = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else weights.detach().double().cpu()
    w = w / w.sum()
    if not torch.isfinite(x).all():
        raise DataError(
            f"{int((~torch.isfinite(x).any(1)).sum())} of {n} samples are not finite; "
            "the model diverged. Retrain it (lower the learning rate) before scoring its modes."
        )
    dist = torch.cdist(x, mu)  # (n, K)
    d_min, nearest = dist.min(dim=1)
    hq = d_min <= HQ_RADIUS * float(sigma)
    counts = torch.bincount(nearest, minlength=k)
    hq_counts = torch.bincount(nearest[hq], minlength=k)
    min_count = torch.clamp(torch.ceil(COVERAGE_FRACTION * n * w), min=1).long()
    covered = hq_counts >= min_count

    def rkl(c: torch.Tensor) -> torch.Tensor:  # c (..., K) counts -> (...)
        p = c.double() / c.sum(-1, keepdim=True)
        terms = torch.where(p > 0, p * (p.clamp_min(1e-300).log() - w.log()), torch.zeros_like(p))
        return terms.sum(-1)

    g = torch.Generator().manual_seed(seed)
    boot = torch.multinomial(counts.double() / n, n * n_bootstrap, replacement=True, generator=g)
    boot_counts = torch.nn.functional.one_hot(boot.reshape(n_bootstrap, n), k).sum(1)  # (B, K)
    return {
        "counts": counts,
        "hq_counts": hq_counts,
        "covered": covered,
        "min_count": min_count,
        "modes_covered": int(covered.sum()),
        "n_modes": k,
        "high_quality_fraction": float(hq.double().mean()),
        "high_quality_stderr": float(math.sqrt(max(float(hq.double().mean()) * (1 - float(hq.double().mean())), 0.0) / n)),
        "reverse_kl": float(rkl(counts)),
        "reverse_kl_stderr": float(rkl(boot_counts).std()) if n_bootstrap > 1 else None,
        "n": n,
    }


def mode_metrics(model, data, n_samples: int = 2500, *, seed: int = 0) -> dict[str, Metric]:
    """``modes_covered``, ``high_quality_fraction`` and ``reverse_kl`` of ``model.sample``.

    Parameters
    ----------
    model : object with ``sample(n) -> (n, D)``
    data : Dataset
        Its ``density`` must carry ``means`` (K, D) and ``sigma`` (and optionally ``weights``).
    n_samples : int
        Samples drawn (PacGAN: 2,500).
    """
    dens = data.density
    means = getattr(dens, "means", None)
    sigma = getattr(dens, "sigma", None)
    if means is None or sigma is None:
        raise DataError(
            f"mode metrics need a mixture with known means and sigma; data set {data.name!r} "
            "has none. Use a toy mixture such as ring8 or grid25."
        )
    weights = getattr(dens, "weights", None)
    with torch.no_grad():
        x = model.sample(int(n_samples))
    s = mode_statistics(x, torch.as_tensor(means), float(sigma),
                        None if weights is None else torch.as_tensor(weights), seed=seed)
    extra = {"n_samples": s["n"], "n_modes": s["n_modes"]}
    return {
        "modes_covered": Metric(
            float(s["modes_covered"]), None, "modes",
            extra={**extra, "hq_counts": s["hq_counts"].tolist(),
                   "min_count": s["min_count"].tolist(),
                   "rule": f">= {COVERAGE_FRACTION:g} x expected count of samples within "
                           f"{HQ_RADIUS:g} sigma"},
        ),
        "high_quality_fraction": Metric(
            s["high_quality_fraction"], s["high_quality_stderr"], "fraction",
            extra={**extra, "radius": f"{HQ_RADIUS:g} sigma of the nearest mode"},
        ),
        "reverse_kl": Metric(
            s["reverse_kl"], s["reverse_kl_stderr"], "nats",
            extra={**extra, "counts": s["counts"].tolist(),
                   "definition": "KL(model histogram over nearest modes || true weights)"},
        ),
    }
