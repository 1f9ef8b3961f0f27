"""BIC on EM fits beside PSIS-LOO on NUTS posteriors: the per-K scores and the choices."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields

import torch

from probgen.checks import check_positive_int
from probgen.errors import ConfigError
from probgen.model_choice.bic import em_scores
from probgen.model_choice.loo import Reliability, loo_scores
from probgen.models.bayes_mixture import MixturePrior, MixtureSamples, as_points
from probgen.progress import bar as progress_bar

__all__ = ["ComponentScore", "ModelChoice", "choose_n_components"]


@dataclass
class ComponentScore:
    """Every criterion for one K. Log-likelihoods and elpd in nats (totals over the data).

    ``elpd_diff`` and ``elpd_diff_se`` are the best K's ``elpd_loo`` minus this one's and the
    standard error of that paired difference (0 for the best), over every K sampled.
    ``r_hat_max`` and ``ess_bulk_min`` run over the relabelled weights, means and scales and
    the total log-likelihood. ``posterior_mean_log_likelihood`` is the likelihood at the
    posterior mean of the relabelled parameters: close to the EM maximum when every component
    is needed, well below it when a component is redundant (its mean wanders and averages
    out). ``problems`` lists the checks of :class:`~probgen.model_choice.loo.Reliability`
    this K fails (empty: it may be chosen; None: LOO did not run for it).
    """

    n_components: int
    em_log_likelihood: float
    bic: float
    aic: float
    em_converged: bool
    elpd_loo: float | None = None
    elpd_loo_se: float | None = None
    p_loo: float | None = None
    max_pareto_k: float | None = None
    n_high_pareto_k: int | None = None  # above ArviZ's sample-size dependent threshold
    pareto_k_threshold: float | None = None
    elpd_diff: float | None = None
    elpd_diff_se: float | None = None
    loo_rank: int | None = None
    stacking_weight: float | None = None
    r_hat_max: float | None = None
    ess_bulk_min: float | None = None
    divergences: int | None = None
    posterior_mean_log_likelihood: float | None = None
    problems: list[str] | None = None
    seconds_em: float = 0.0
    seconds_nuts: float = 0.0


@dataclass
class ModelChoice:
    """K chosen by each criterion, with the per-K scores behind the choices.

    Attributes
    ----------
    scores : list of ComponentScore
        One per K, in increasing K.
    chosen_bic, chosen_aic : int
        K with the smallest BIC / AIC.
    chosen_loo : int or None
        Among the K that pass the checks, the one ranked first by ``arviz.compare`` (largest
        ``elpd_loo``); None without LOO or without a reliable choice.
    chosen_loo_within_2se : int or None
        Among the K that pass, the smallest whose ``elpd_loo`` is within two standard errors
        of the paired difference of ``chosen_loo``'s.
    loo_candidates : list of int
        The K whose chains and estimate pass the checks.
    loo_reason : str or None
        Why LOO made no choice (not run, too few K passing, out of time), with the
        diagnostics that failed.
    reliability : Reliability
        The checks.
    n, dim : int
        Number of points and their dimension.
    warnings : list of str
        What ArviZ and the samplers warned about, for the reader to judge.
    samples : dict of int to MixtureSamples
        The NUTS draws for each K (empty without LOO); left out of :meth:`to_dict`.
    """

    scores: list[ComponentScore]
    chosen_bic: int
    chosen_aic: int
    chosen_loo: int | None
    chosen_loo_within_2se: int | None
    n: int
    dim: int
    loo_candidates: list[int] = field(default_factory=list)
    loo_reason: str | None = None
    reliability: Reliability = field(default_factory=Reliability)
    warnings: list[str] = field(default_factory=list)
    samples: dict[int, MixtureSamples] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        """Everything but the draws, as plain JSON-ready values."""
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name not in ("scores", "samples", "warnings", "reliability", "loo_candidates")}
        out["scores"] = [asdict(s) for s in self.scores]
        out["loo_candidates"] = list(self.loo_candidates)
        out["reliability"] = asdict(self.reliability)
        out["warnings"] = list(self.warnings)
        return out

    def table(self) -> str:
        """The per-K scores as fixed-width text."""
        head = (f"{'K':>2} {'logL (EM)':>10} {'BIC':>9} {'AIC':>9} {'elpd_loo':>9} {'SE':>6} "
                f"{'p_loo':>6} {'max k':>6} {'R-hat':>6} {'ESS':>6} {'div':>4} {'rank':>4} checks")
        lines = [head]
        for s in self.scores:
            checks = "-" if s.problems is None else ("pass" if not s.problems else "; ".join(s.problems))
            lines.append(
                f"{s.n_components:>2} {s.em_log_likelihood:>10.2f} {s.bic:>9.2f} {s.aic:>9.2f} "
                f"{_fmt(s.elpd_loo, 9, 2)} {_fmt(s.elpd_loo_se, 6, 2)} {_fmt(s.p_loo, 6, 2)} "
                f"{_fmt(s.max_pareto_k, 6, 2)} {_fmt(s.r_hat_max, 6, 3)} "
                f"{_fmt(s.ess_bulk_min, 6, 0)} {_fmt(s.divergences, 4, 0)} "
                f"{_fmt(s.loo_rank, 4, 0)} {checks}")
        lines.append(f"chosen K: BIC {self.chosen_bic}, AIC {self.chosen_aic}, "
                     f"LOO {self.chosen_loo}, LOO within 2 SE {self.chosen_loo_within_2se}")
        if self.loo_reason:
            lines.append(f"LOO: {self.loo_reason}")
        return "\n".join(lines)


def _fmt(v, width: int, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return f"{'-':>{width}}"
    return f"{v:>{width}.{digits}f}"


def choose_n_components(x: torch.Tensor, max_components: int = 4, *, n_init: int = 5,
                        loo: bool = True, prior: MixturePrior | None = None,
                        num_warmup: int = 200, num_samples: int = 200, num_chains: int = 2,
                        seed: int = 0, jit_compile: bool = False,
                        reliability: Reliability | None = None,
                        time_limit: float | None = None, progress: bool = False) -> ModelChoice:
    """Choose K in ``1..max_components`` by BIC (EM) and by PSIS-LOO (NUTS), side by side.

    Parameters
    ----------
    x : Tensor (N,) or (N, D)
        The data; a few hundred points keep NUTS to seconds per K.
    max_components : int
    n_init : int
        EM restarts per K.
    loo : bool
        False: BIC and AIC only (no sampling).
    prior : MixturePrior, optional
        Default: :meth:`MixturePrior.from_data`.
    num_warmup, num_samples, num_chains : int
        NUTS settings per K; chains run one after another.
    seed : int
    jit_compile : bool
        See :func:`~probgen.models.bayes_mixture.fit_nuts`.
    reliability : Reliability, optional
        The checks a K must pass for LOO to choose it (default ``Reliability()``).
    time_limit : float, optional
        Seconds for the whole choice. EM always completes; NUTS gets what EM leaves and stops
        (within one iteration) when that runs out, and LOO then makes no choice.
    progress : bool
        Show a bar over the EM fits and the NUTS iterations (:mod:`probgen.progress`).

    Returns
    -------
    ModelChoice
    """
    x = as_points(x)
    check_positive_int("max_components", max_components)
    if max_components > x.shape[0]:
        raise ConfigError(f"max_components must be at most the number of points "
                          f"({x.shape[0]}); got {max_components}. Use fewer components or "
                          "more data.")
    rel = reliability or Reliability()
    start = time.monotonic()
    ks = list(range(1, max_components + 1))
    total = len(ks) * (1 + (num_chains * (num_warmup + num_samples) if loo else 0))
    with progress_bar(total, desc="model choice: EM", unit="step", progress=progress) as bar:
        em = {}
        for k in ks:
            em.update(em_scores(x, [k], n_init=n_init, seed=seed))
            bar.update(1)
        scores = [ComponentScore(n_components=k, em_log_likelihood=f.log_likelihood, bic=f.bic,
                                 aic=f.aic, em_converged=f.converged, seconds_em=f.seconds)
                  for k, f in em.items()]
        notes = [f"K={k}: EM did not converge" for k, f in em.items() if not f.converged]
        chosen_loo = chosen_2se = None
        candidates: list[int] = []
        reason = "not run (loo=False)" if not loo else None
        samples: dict[int, MixtureSamples] = {}
        if loo:
            res = loo_scores(x, ks, em=em, prior=prior, num_warmup=num_warmup,
                             num_samples=num_samples, num_chains=num_chains, n_init=n_init,
                             seed=seed, jit_compile=jit_compile, reliability=rel,
                             time_limit=None if time_limit is None
                             else max(0.0, time_limit - (time.monotonic() - start)), bar=bar)
            notes += res["warnings"]
            samples = res["samples"]
            for s in scores:
                for key, value in res["per_k"].get(s.n_components, {}).items():
                    setattr(s, key, value)
                row = res["compare"].get(f"K={s.n_components}")
                if row is not None:
                    s.elpd_diff, s.elpd_diff_se = row["elpd_diff"], row["dse"]
                    s.loo_rank, s.stacking_weight = row["rank"], row["weight"]
            choice = res["choice"]
            chosen_loo, chosen_2se = choice["best"], choice["within_2se"]
            candidates, reason = choice["candidates"], choice["reason"]
    return ModelChoice(
        scores=scores,
        chosen_bic=min(scores, key=lambda s: s.bic).n_components,
        chosen_aic=min(scores, key=lambda s: s.aic).n_components,
        chosen_loo=chosen_loo,
        chosen_loo_within_2se=chosen_2se,
        n=int(x.shape[0]),
        dim=int(x.shape[1]),
        loo_candidates=candidates,
        loo_reason=reason,
        reliability=rel,
        warnings=notes,
        samples=samples,
    )
