"""K by PSIS-LOO on NUTS posteriors, made only from chains that pass their checks.

For each K, NUTS samples the posterior of the Bayesian mixture of
:mod:`probgen.models.bayes_mixture` (the assignments summed out); the per-observation
log-likelihood of every draw goes to ArviZ's ``loo`` (Vehtari, Gelman and Gabry, 2017), and
``compare`` ranks the K by their expected log predictive density ``elpd_loo``. Because
``elpd_loo`` differences between nested mixtures that fit equally well are noise, the choice
reported is the smallest K within two standard errors of the paired difference of the best.

A choice is made only among the K whose chains and estimate pass :class:`Reliability`:
R-hat at most 1.01 and bulk ESS at least 100 per chain (Vehtari, Gelman, Simpson, Carpenter
and Bürkner, 2021), and every Pareto k at most ArviZ's sample-size dependent threshold
``min(1 - 1/log10(S), 0.7)`` (Vehtari et al., 2024). With fewer than two such K there is no
reliable choice, and the record says which checks failed for which K.

Label switching does not touch LOO: the per-observation likelihood sums over the
components and is the same under any relabelling. R-hat and the bulk effective sample size
are computed on label-invariant quantities: the total log-likelihood of each draw, and the
weights, means and scales after each draw's components are sorted on their first mean
coordinate (:func:`probgen.models.bayes_mixture.sort_components`). Chains start at EM
solutions (chain 0 at the best of the EM restarts, the others at single EM runs with their
own seeds), so that a chain that finds a worse local mode shows up in R-hat.

References
----------
Vehtari, A., Gelman, A. and Gabry, J. (2017). Practical Bayesian model evaluation using
leave-one-out cross-validation and WAIC. Statistics and Computing 27(5).
Vehtari, A., Gelman, A., Simpson, D., Carpenter, B. and Bürkner, P.-C. (2021).
Rank-normalization, folding, and localization: an improved R-hat. Bayesian Analysis 16(2).
Vehtari, A., Simpson, D., Gelman, A., Yao, Y. and Gabry, J. (2024). Pareto smoothed
importance sampling. JMLR 25(72).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from probgen.model_choice.arviz_compat import (
    arviz,
    inference_data,
    read_compare,
    read_diagnostics,
    read_elpd,
    summary,
    warning_notes,
)
from probgen.model_choice.bic import EMFit, fit_em
from probgen.models.bayes_mixture import (
    MixturePrior,
    MixtureSamples,
    as_points,
    fit_nuts,
    pointwise_log_likelihood,
)
from probgen.progress import NullBar

__all__ = ["Reliability", "loo_scores"]


@dataclass(frozen=True)
class Reliability:
    """What a K's chains and LOO estimate must meet for PSIS-LOO to choose among them.

    Attributes
    ----------
    max_r_hat : float
        Largest rank-normalised R-hat allowed over the label-invariant quantities (1.01,
        Vehtari et al., 2021).
    min_ess_per_chain : float
        Smallest bulk effective sample size allowed, per chain (100: 200 with two chains).
    max_pareto_k : float, optional
        Largest Pareto k allowed at any observation; default ArviZ's sample-size dependent
        ``good_k``, ``min(1 - 1/log10(S), 0.7)``.
    """

    max_r_hat: float = 1.01
    min_ess_per_chain: float = 100.0
    max_pareto_k: float | None = None

    def describe(self, num_chains: int) -> str:
        k = "ArviZ's threshold" if self.max_pareto_k is None else f"{self.max_pareto_k:g}"
        return (f"R-hat <= {self.max_r_hat:g}, bulk ESS >= {self.min_ess_per_chain * num_chains:g} "
                f"({self.min_ess_per_chain:g} per chain), Pareto k <= {k}")

    def problems(self, row: dict, num_chains: int) -> list[str]:
        """What ``row`` (one K of :func:`loo_scores`'s ``per_k``) fails; empty when it passes."""
        out = []
        r_hat, ess = row.get("r_hat_max"), row.get("ess_bulk_min")
        if r_hat is None or not math.isfinite(r_hat):
            out.append("R-hat undefined (run at least two chains)")
        elif r_hat > self.max_r_hat:
            out.append(f"R-hat {r_hat:.3g} > {self.max_r_hat:g}")
        need = self.min_ess_per_chain * num_chains
        if ess is None or not math.isfinite(ess) or ess < need:
            out.append(f"bulk ESS {_num(ess, '.0f')} < {need:g}")
        limit = self.max_pareto_k if self.max_pareto_k is not None else row.get("pareto_k_threshold", 0.7)
        k = row.get("max_pareto_k")
        if k is None or not k <= limit:
            n = row.get("n_high_pareto_k")
            where = f" at {n} points" if n else ""
            out.append(f"Pareto k {_num(k, '.2f')} > {limit:.2f}{where}")
        return out


def _num(v, fmt: str) -> str:
    if v is None:
        return "n/a"
    return format(v, fmt) if math.isfinite(v) else str(v)


class _OutOfTime(Exception):
    pass


def _loo_inputs(x: torch.Tensor, samples: MixtureSamples):
    """Posterior (relabelled, label-invariant) and per-observation log-likelihood, as numpy."""
    ll = samples.log_likelihood(x).double()            # (C, S, N)
    w, mu, sd = samples.sorted()                       # (C, S, K), (C, S, K, D) x2
    posterior = {
        "weights": w.double().numpy(),
        "locs": mu.double().numpy(),
        "scales": sd.double().numpy(),
        "log_lik_total": ll.sum(-1).numpy(),           # (C, S)
    }
    return posterior, {"obs": ll.numpy()}


def _posterior_mean_log_likelihood(x, samples: MixtureSamples) -> float:
    """Total log-likelihood at the posterior mean of the relabelled draws."""
    w, mu, sd = samples.sorted()
    w_bar = w.mean(dim=(0, 1))
    return float(pointwise_log_likelihood(x, w_bar / w_bar.sum(), mu.mean(dim=(0, 1)),
                                          sd.mean(dim=(0, 1))).sum())


def _choose(table: dict[str, dict[str, float]]) -> tuple[int, int]:
    """(K ranked first, smallest K within two standard errors of it) of a compare table."""
    k_of = {name: int(name.split("=")[1]) for name in table}
    best = next(k_of[n] for n, row in table.items() if row["rank"] == 0)
    within = min(k_of[n] for n, row in table.items()
                 if row["rank"] == 0 or row["elpd_diff"] <= 2.0 * row["dse"])
    return best, within


def loo_scores(x: torch.Tensor, components, *, em: dict[int, EMFit] | None = None,
               prior: MixturePrior | None = None, num_warmup: int = 200,
               num_samples: int = 200, num_chains: int = 2, n_init: int = 5, seed: int = 0,
               jit_compile: bool = False, reliability: Reliability | None = None,
               time_limit: float | None = None, bar=None, az=None) -> dict:
    """NUTS for every K, ``arviz.loo`` per K, the checks, and ``arviz.compare`` across them.

    Parameters
    ----------
    x : Tensor (N,) or (N, D)
    components : iterable of int
        The K to compare.
    em : dict of int to EMFit, optional
        EM solutions to start chain 0 from; fitted here for any K missing.
    prior, num_warmup, num_samples, num_chains, n_init, seed, jit_compile
        As in :func:`probgen.model_choice.choose_n_components`.
    reliability : Reliability, optional
        The checks a K must pass to be chosen (default ``Reliability()``).
    time_limit : float, optional
        Seconds for the sampling; when they run out, sampling stops (within one NUTS
        iteration), the K not sampled are left out and no choice is made.
    bar : progress bar, optional
        Advanced by one at every NUTS iteration (:mod:`probgen.progress`).
    az : module, optional
        The ArviZ module (default: ``import arviz``).

    Returns
    -------
    dict
        ``per_k`` ({K: loo fields, diagnostics, ``problems``}), ``compare`` (ArviZ's table
        over every K sampled), ``samples`` ({K: MixtureSamples}), ``warnings``, and
        ``choice``: ``best`` (ranked first among the K that pass), ``within_2se`` (the
        smallest K within two standard errors of it), ``candidates`` (the K that pass) and
        ``reason`` (why no choice was made, or None).
    """
    az = az or arviz()
    x = as_points(x)
    rel = reliability or Reliability()
    bar = bar or NullBar()
    components = [int(k) for k in components]
    prior = MixturePrior.from_data(x) if prior is None else prior
    em = dict(em or {})
    observed = {"obs": x.detach().cpu().double().numpy()}
    per_k: dict[int, dict] = {}
    datasets: dict[str, Any] = {}
    all_samples: dict[int, MixtureSamples] = {}
    notes: list[str] = []
    stopped = None
    deadline = None if time_limit is None else time.monotonic() + float(time_limit)

    def tick():
        bar.update(1)
        if deadline is not None and time.monotonic() > deadline:
            raise _OutOfTime

    if num_chains < 2:
        notes.append("R-hat is undefined with one chain: use num_chains >= 2 to check mixing")
    for k in components:
        bar.set_description(f"model choice: NUTS for K={k}")
        try:
            if k not in em:
                em[k] = fit_em(x, k, n_init=n_init, seed=seed)
            inits = [em[k].init_values()]
            inits += [fit_em(x, k, n_init=1, seed=seed + c).init_values()
                      for c in range(1, num_chains)]
            samples = fit_nuts(x, k, prior=prior, num_warmup=num_warmup, num_samples=num_samples,
                               num_chains=num_chains, init=inits, seed=seed,
                               jit_compile=jit_compile, callback=tick)
        except _OutOfTime:
            done = ", ".join(str(j) for j in per_k) or "none"
            stopped = (f"the {float(time_limit):.0f} s left to model choice ran out while "
                       f"sampling K={k} (K sampled: {done})")
            notes.append(stopped)
            break
        all_samples[k] = samples
        posterior, log_lik = _loo_inputs(x, samples)
        name = f"K={k}"
        datasets[name] = inference_data(posterior, log_lik, observed, az=az)
        # K = 1 has one weight, always 1: no chain diagnostic is defined for a constant.
        diag_vars = [v for v in posterior if not (k == 1 and v == "weights")]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            elpd = read_elpd(az.loo(datasets[name], pointwise=True))
            diag = read_diagnostics(summary(datasets[name], diag_vars, az=az))
        notes += warning_notes(name, caught)
        pk = elpd["pareto_k"]
        row = {
            "elpd_loo": elpd["elpd"], "elpd_loo_se": elpd["se"], "p_loo": elpd["p"],
            "max_pareto_k": float(np.max(pk)) if pk is not None else None,
            "n_high_pareto_k": int(np.sum(pk > elpd["good_k"])) if pk is not None else None,
            "pareto_k_threshold": elpd["good_k"],
            **diag,
            "divergences": int(sum(samples.divergences)),
            "posterior_mean_log_likelihood": _posterior_mean_log_likelihood(x, samples),
            "seconds_nuts": samples.seconds,
        }
        row["problems"] = rel.problems(row, num_chains)
        per_k[k] = row
    table: dict[str, dict[str, float]] = {}
    if len(datasets) >= 2:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            table = read_compare(az.compare(datasets))
        notes += warning_notes("compare", caught)
    candidates = [k for k, row in per_k.items() if not row["problems"]]
    choice = {"best": None, "within_2se": None, "candidates": candidates, "reason": None}
    if stopped is not None:
        choice["reason"] = f"no reliable choice, because {stopped}"
    elif len(candidates) < 2:
        which = "no K" if not candidates else f"only K={candidates[0]}"
        failed = "; ".join(f"K={k}: {', '.join(row['problems'])}" for k, row in per_k.items()
                           if row["problems"])
        choice["reason"] = (f"no reliable choice, because {which} of {len(per_k)} passes the checks "
                            f"({rel.describe(num_chains)}); {failed}")
    else:
        if len(candidates) == len(per_k):
            sub = table
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the full comparison above reported them
                sub = read_compare(az.compare({f"K={k}": datasets[f"K={k}"] for k in candidates}))
        choice["best"], choice["within_2se"] = _choose(sub)
    return {"per_k": per_k, "compare": table, "samples": all_samples, "warnings": notes,
            "choice": choice}
