"""How many mixture components? BIC on EM fits against PSIS-LOO on NUTS posteriors.

Two ways to choose K for a Gaussian mixture with diagonal covariances, on the same data:

* **BIC** (Schwarz, 1978): for each K, EM with several restarts finds the maximum
  likelihood; ``BIC = -2 log L + p log N`` with ``p = K D`` means ``+ K D`` variances
  ``+ K - 1`` weights. The smallest BIC wins. AIC (``-2 log L + 2 p``) is reported beside it.
* **PSIS-LOO** (Vehtari, Gelman and Gabry, 2017): for each K, NUTS samples the posterior of
  the Bayesian mixture of :mod:`probgen.models.bayes_mixture` (the assignments summed out);
  the per-observation log-likelihood of every draw goes to ArviZ's ``loo``, and ``compare``
  ranks the K by their expected log predictive density ``elpd_loo``. The best rank wins.
  Because ``elpd_loo`` differences between nested mixtures that fit equally well are noise,
  the record also gives the smallest K within two standard errors of the paired difference
  of the best (``chosen_loo_within_2se``).

Label switching does not touch LOO: the per-observation likelihood sums over the
components and is the same under any relabelling. R-hat and the bulk effective sample size
are computed on label-invariant quantities: the total log-likelihood of each draw, and the
weights, means and scales after each draw's components are sorted on their first mean
coordinate (see :func:`probgen.models.bayes_mixture.sort_components`). Chains start at EM
solutions (chain 0 at the best of the BIC restarts, the others at single EM runs with their
own seeds), so a chain that finds a worse local mode shows up in R-hat.

ArviZ: only ``from_dict``, ``loo``, ``compare`` and ``summary`` are used, and every
difference between ArviZ 0.x (``elpd_loo``/``p_loo`` fields and columns, ``from_dict(posterior=...)``)
and 1.x (``elpd``/``p``, ``from_dict({"posterior": ...})``) goes through the small readers
below. Warnings that ArviZ raises about the estimates (a Pareto k above its threshold, one
chain only) are kept in the record rather than dropped.

References
----------
Schwarz, G. (1978). Estimating the dimension of a model. Annals of Statistics 6(2).
Vehtari, A., Gelman, A. and Gabry, J. (2017). Practical Bayesian model evaluation using
leave-one-out cross-validation and WAIC. Statistics and Computing 27(5).
Vehtari, A., Simpson, D., Gelman, A., Yao, Y. and Gabry, J. (2024). Pareto smoothed
importance sampling. JMLR 25(72).
"""

from __future__ import annotations

import inspect
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch

from probgen.errors import ConfigError
from probgen.models.bayes_mixture import (
    MixturePrior,
    MixtureSamples,
    _as_points,
    fit_nuts,
)

__all__ = [
    "EMFit",
    "ComponentScore",
    "ModelChoice",
    "fit_em",
    "em_scores",
    "loo_scores",
    "choose_n_components",
    "inference_data",
    "read_elpd",
    "read_compare",
    "read_diagnostics",
]


# ============================================================================ EM and BIC
@dataclass
class EMFit:
    """The maximum-likelihood mixture for one K.

    Attributes
    ----------
    n_components : int
    log_likelihood : float
        Total log-likelihood of the data at the EM solution, nats.
    bic, aic : float
    weights : Tensor (K,)
    locs, scales : Tensor (K, D)
        Means and standard deviations (diagonal covariances).
    converged : bool
    seconds : float
    """

    n_components: int
    log_likelihood: float
    bic: float
    aic: float
    weights: torch.Tensor
    locs: torch.Tensor
    scales: torch.Tensor
    converged: bool
    seconds: float

    def init_values(self) -> dict[str, torch.Tensor]:
        """A starting point for :func:`~probgen.models.bayes_mixture.fit_nuts`."""
        return {"weights": self.weights, "locs": self.locs, "scales": self.scales}


def _gaussian_mixture(n_components: int, *, n_init: int, seed: int):
    """The EM estimator (scikit-learn's semantics, diagonal covariances)."""
    from probgen.models.gmm import GaussianMixture

    return GaussianMixture(n_components=n_components, covariance_type="diag", n_init=n_init,
                           random_state=seed)


def fit_em(x: torch.Tensor, n_components: int, *, n_init: int = 5, seed: int = 0) -> EMFit:
    """Fit a diagonal-covariance mixture by EM with ``n_init`` restarts; keep the best.

    Parameters
    ----------
    x : Tensor (N,) or (N, D)
    n_components : int
    n_init : int
        Restarts (k-means initialisations); the best lower bound is kept.
    seed : int

    Returns
    -------
    EMFit
    """
    x = _as_points(x)
    _check_int("n_components", n_components, 1)
    _check_int("n_init", n_init, 1)
    if n_components > x.shape[0]:
        raise ConfigError(f"n_components must be at most the number of points ({x.shape[0]}); "
                          f"got {n_components}.")
    xn = x.detach().cpu().double()
    start = time.perf_counter()
    gm = _gaussian_mixture(n_components, n_init=n_init, seed=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gm.fit(xn)
    for w in caught:  # re-raise anything but EM's own convergence warning, which is recorded
        if "converge" not in str(w.message).lower():
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    seconds = time.perf_counter() - start
    dtype = torch.get_default_dtype()
    return EMFit(
        n_components=n_components,
        log_likelihood=float(gm.score(xn) * xn.shape[0]),
        bic=float(gm.bic(xn)),
        aic=float(gm.aic(xn)),
        weights=torch.as_tensor(gm.weights_).to(dtype),
        locs=torch.as_tensor(gm.means_).to(dtype),
        scales=torch.as_tensor(gm.covariances_).sqrt().to(dtype),  # (K, D) variances -> sds
        converged=bool(gm.converged_),
        seconds=seconds,
    )


def em_scores(x: torch.Tensor, components, *, n_init: int = 5, seed: int = 0) -> dict[int, EMFit]:
    """:func:`fit_em` for every K in ``components``."""
    return {int(k): fit_em(x, int(k), n_init=n_init, seed=seed) for k in components}


# ============================================================================ ArviZ, 0.x and 1.x
def _arviz():
    import arviz

    return arviz


def _from_dict_takes_groups(az) -> bool:
    """ArviZ 1.x: ``from_dict({"posterior": {...}, ...})``; 0.x: ``from_dict(posterior=...)``."""
    try:
        params = list(inspect.signature(az.from_dict).parameters)
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0] != "posterior"


def inference_data(posterior: dict[str, np.ndarray], log_likelihood: dict[str, np.ndarray],
                   observed_data: dict[str, np.ndarray], *, az=None):
    """ArviZ data with three groups, on either ArviZ API.

    Parameters
    ----------
    posterior : dict of str to array (C, S, ...)
    log_likelihood : dict of str to array (C, S, N)
        Per-observation log-likelihood of every draw.
    observed_data : dict of str to array (N, ...)
    az : module, optional
        The ArviZ module (default: ``import arviz``).
    """
    az = az or _arviz()
    groups = {"posterior": posterior, "log_likelihood": log_likelihood,
              "observed_data": observed_data}
    if _from_dict_takes_groups(az):
        return az.from_dict(groups)
    return az.from_dict(**groups)


def _field(obj, names: tuple[str, ...]):
    """The first of ``names`` that ``obj`` has, as an item (0.x Series) or attribute (1.x)."""
    for name in names:
        try:
            return obj[name]
        except (KeyError, TypeError, IndexError, AttributeError):
            pass
        if not isinstance(obj, dict) and hasattr(obj, name):
            return getattr(obj, name)
    have = list(getattr(obj, "index", [])) or [a for a in dir(obj) if not a.startswith("_")]
    raise KeyError(f"none of {list(names)} found in the ArviZ result; it has {have}")


def read_elpd(result) -> dict[str, Any]:
    """``elpd``, ``se``, ``p``, ``pareto_k`` (array or None), ``good_k`` from ``arviz.loo``.

    ArviZ 0.x returns a pandas Series with ``elpd_loo``, ``se``, ``p_loo``, ``pareto_k``;
    1.x a record with attributes ``elpd``, ``se``, ``p``, ``pareto_k``.
    """
    try:
        k = _field(result, ("pareto_k",))
        k = None if k is None else np.asarray(getattr(k, "values", k), dtype=float).ravel()
    except KeyError:
        k = None
    try:  # the sample-size dependent threshold min(1 - 1/log10(S), 0.7) of Vehtari et al.
        good_k = float(_field(result, ("good_k",)))
    except (KeyError, TypeError):
        good_k = 0.7
    return {
        "elpd": float(_field(result, ("elpd_loo", "elpd"))),
        "se": float(_field(result, ("se", "elpd_loo_se"))),
        "p": float(_field(result, ("p_loo", "p"))),
        "pareto_k": k,
        "good_k": good_k,
    }


def _column(table, names: tuple[str, ...]):
    for name in names:
        if name in table.columns:
            return table[name]
    raise KeyError(f"none of the columns {list(names)} in the compare table; it has "
                   f"{list(table.columns)}")


_COMPARE_COLUMNS = {
    "rank": ("rank",),
    "elpd": ("elpd_loo", "elpd"),
    "p": ("p_loo", "p"),
    "elpd_diff": ("elpd_diff", "d_loo"),
    "weight": ("weight",),
    "se": ("se", "SE"),
    "dse": ("dse", "dSE"),
}


def read_compare(table) -> dict[str, dict[str, float]]:
    """``arviz.compare``'s table as ``{model name: {rank, elpd, p, elpd_diff, weight, se, dse}}``.

    Reads both spellings of the columns (0.x ``elpd_loo``/``p_loo``, 1.x ``elpd``/``p``).
    ``elpd_diff`` is made non-negative (best minus this model) whatever the sign convention.
    """
    cols = {key: _column(table, names) for key, names in _COMPARE_COLUMNS.items()}
    out: dict[str, dict[str, float]] = {}
    for name in table.index:
        row = {key: float(col[name]) for key, col in cols.items()}
        row["rank"] = int(row["rank"])
        row["elpd_diff"] = abs(row["elpd_diff"])
        out[str(name)] = row
    return out


def _summary(az, idata, var_names: list[str]):
    """``arviz.summary`` of the diagnostics, unrounded where the API allows it."""
    attempts = ({"kind": "diagnostics", "round_to": "none"}, {"kind": "diagnostics"}, {})
    last: Exception | None = None
    for kwargs in attempts:
        try:
            return az.summary(idata, var_names=var_names, **kwargs)
        except (TypeError, ValueError) as err:
            last = err
    raise RuntimeError(f"arviz.summary failed with every argument set tried: {last}") from last


def read_diagnostics(table) -> dict[str, float]:
    """Largest R-hat and smallest bulk ESS over the rows of an ``arviz.summary`` table."""
    r_hat = np.asarray(_column(table, ("r_hat", "rhat", "R_hat")), dtype=float)
    ess = np.asarray(_column(table, ("ess_bulk", "ess_mean", "ess")), dtype=float)

    def agg(fn, v):
        v = v[np.isfinite(v)]
        return float(fn(v)) if v.size else float("nan")

    return {"r_hat_max": agg(np.max, r_hat), "ess_bulk_min": agg(np.min, ess)}


# ============================================================================ LOO per K
@dataclass
class ComponentScore:
    """Every criterion for one K. Log-likelihoods and elpd in nats (totals over the data).

    ``elpd_diff`` and ``elpd_diff_se`` are the best K's ``elpd_loo`` minus this one's and the
    standard error of that paired difference (0 for the best). ``r_hat_max`` and
    ``ess_bulk_min`` run over the relabelled weights, means and scales and the total
    log-likelihood. ``posterior_mean_log_likelihood`` is the likelihood at the posterior mean
    of the relabelled parameters: close to the EM maximum when every component is needed,
    well below it when a component is redundant (its mean wanders and averages out).
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
    elpd_diff: float | None = None
    elpd_diff_se: float | None = None
    loo_rank: int | None = None
    stacking_weight: float | None = None
    r_hat_max: float | None = None
    ess_bulk_min: float | None = None
    divergences: int | None = None
    posterior_mean_log_likelihood: float | None = None
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
        K ranked first by ``arviz.compare`` (largest ``elpd_loo``); None without LOO.
    chosen_loo_within_2se : int or None
        Smallest K whose ``elpd_loo`` is within two standard errors of the paired
        difference of the best one.
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
    warnings: list[str] = field(default_factory=list)
    samples: dict[int, MixtureSamples] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        """Everything but the draws, as plain JSON-ready values."""
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name not in ("scores", "samples", "warnings")}
        out["scores"] = [asdict(s) for s in self.scores]
        out["warnings"] = list(self.warnings)
        return out

    def table(self) -> str:
        """The per-K scores as fixed-width text."""
        head = (f"{'K':>2} {'logL (EM)':>10} {'BIC':>9} {'AIC':>9} {'elpd_loo':>9} {'SE':>6} "
                f"{'p_loo':>6} {'max k':>6} {'R-hat':>6} {'ESS':>6} {'div':>4} {'rank':>4}")
        lines = [head]
        for s in self.scores:
            lines.append(
                f"{s.n_components:>2} {s.em_log_likelihood:>10.2f} {s.bic:>9.2f} {s.aic:>9.2f} "
                f"{_fmt(s.elpd_loo, 9, 2)} {_fmt(s.elpd_loo_se, 6, 2)} {_fmt(s.p_loo, 6, 2)} "
                f"{_fmt(s.max_pareto_k, 6, 2)} {_fmt(s.r_hat_max, 6, 3)} "
                f"{_fmt(s.ess_bulk_min, 6, 0)} {_fmt(s.divergences, 4, 0)} "
                f"{_fmt(s.loo_rank, 4, 0)}")
        lines.append(f"chosen K: BIC {self.chosen_bic}, AIC {self.chosen_aic}, "
                     f"LOO {self.chosen_loo}, LOO within 2 SE {self.chosen_loo_within_2se}")
        return "\n".join(lines)


def _fmt(v, width: int, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return f"{'-':>{width}}"
    return f"{v:>{width}.{digits}f}"


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}; got {value!r}.")
    return value


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


def loo_scores(x: torch.Tensor, components, *, em: dict[int, EMFit] | None = None,
               prior: MixturePrior | None = None, num_warmup: int = 200,
               num_samples: int = 200, num_chains: int = 2, n_init: int = 5, seed: int = 0,
               jit_compile: bool = False, az=None) -> dict:
    """NUTS for every K, then ``arviz.loo`` per K and ``arviz.compare`` across them.

    Parameters
    ----------
    x : Tensor (N,) or (N, D)
    components : iterable of int
        The K to compare.
    em : dict of int to EMFit, optional
        EM solutions to start chain 0 from; fitted here for any K missing.
    prior, num_warmup, num_samples, num_chains, n_init, seed, jit_compile
        As in :func:`choose_n_components`.
    az : module, optional
        The ArviZ module (default: ``import arviz``).

    Returns
    -------
    dict
        ``{"per_k": {K: {...loo fields, diagnostics, divergences, seconds}},
        "compare": {name: row}, "samples": {K: MixtureSamples}, "warnings": [...]}``.
    """
    az = az or _arviz()
    x = _as_points(x)
    prior = MixturePrior.from_data(x) if prior is None else prior
    em = dict(em or {})
    for k in components:  # EM for any K not given
        if int(k) not in em:
            em[int(k)] = fit_em(x, int(k), n_init=n_init, seed=seed)
    observed = {"obs": x.detach().cpu().double().numpy()}
    per_k: dict[int, dict] = {}
    datasets: dict[str, Any] = {}
    all_samples: dict[int, MixtureSamples] = {}
    notes: list[str] = []
    if num_chains < 2:
        notes.append("R-hat is undefined with one chain: use num_chains >= 2 to check mixing")
    for k in components:
        k = int(k)
        inits = [em[k].init_values()]
        inits += [fit_em(x, k, n_init=1, seed=seed + c).init_values()
                  for c in range(1, num_chains)]
        samples = fit_nuts(x, k, prior=prior, num_warmup=num_warmup, num_samples=num_samples,
                           num_chains=num_chains, init=inits, seed=seed, jit_compile=jit_compile)
        all_samples[k] = samples
        posterior, log_lik = _loo_inputs(x, samples)
        idata = inference_data(posterior, log_lik, observed, az=az)
        name = f"K={k}"
        datasets[name] = idata
        # K = 1 has one weight, always 1: no chain diagnostic is defined for a constant.
        diag_vars = [v for v in posterior if not (k == 1 and v == "weights")]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            elpd = read_elpd(az.loo(idata, pointwise=True))
            diag = read_diagnostics(_summary(az, idata, diag_vars))
        notes += _notes(name, caught)
        w, mu, sd = samples.sorted()
        mean_ll = float(_pointwise(x, w, mu, sd).sum())
        pk = elpd["pareto_k"]
        per_k[k] = {
            "elpd_loo": elpd["elpd"], "elpd_loo_se": elpd["se"], "p_loo": elpd["p"],
            "max_pareto_k": float(np.max(pk)) if pk is not None else None,
            "n_high_pareto_k": int(np.sum(pk > elpd["good_k"])) if pk is not None else None,
            **diag,
            "divergences": int(sum(samples.divergences)),
            "posterior_mean_log_likelihood": mean_ll,
            "seconds_nuts": samples.seconds,
        }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = read_compare(az.compare(datasets))
    notes += _notes("compare", caught)
    return {"per_k": per_k, "compare": table, "samples": all_samples, "warnings": notes}


def _notes(prefix: str, caught) -> list[str]:
    """What ArviZ warned about the estimates (Pareto k, chains), each message once.

    Deprecation notices from inside ArviZ and pandas are about their code, not about the
    estimates, and a user cannot act on them: they are left out.
    """
    skip = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
    seen: list[str] = []
    for w in caught:
        if issubclass(w.category, skip):
            continue
        msg = f"{prefix}: {str(w.message).splitlines()[0]}"
        if msg not in seen:
            seen.append(msg)
    return seen


def _pointwise(x, w, mu, sd) -> torch.Tensor:
    """(N,) log-likelihood at the posterior mean of the relabelled draws."""
    from probgen.models.bayes_mixture import pointwise_log_likelihood

    w_bar = w.mean(dim=(0, 1))
    return pointwise_log_likelihood(x, w_bar / w_bar.sum(), mu.mean(dim=(0, 1)),
                                    sd.mean(dim=(0, 1)))


def choose_n_components(x: torch.Tensor, max_components: int = 4, *, n_init: int = 5,
                        loo: bool = True, prior: MixturePrior | None = None,
                        num_warmup: int = 200, num_samples: int = 200, num_chains: int = 2,
                        seed: int = 0, jit_compile: bool = False) -> ModelChoice:
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

    Returns
    -------
    ModelChoice
    """
    x = _as_points(x)
    _check_int("max_components", max_components, 1)
    if max_components > x.shape[0]:
        raise ConfigError(f"max_components must be at most the number of points "
                          f"({x.shape[0]}); got {max_components}. Use fewer components or "
                          "more data.")
    ks = list(range(1, max_components + 1))
    em = em_scores(x, ks, n_init=n_init, seed=seed)
    scores = [ComponentScore(n_components=k, em_log_likelihood=f.log_likelihood, bic=f.bic,
                             aic=f.aic, em_converged=f.converged, seconds_em=f.seconds)
              for k, f in em.items()]
    notes = [f"K={k}: EM did not converge" for k, f in em.items() if not f.converged]
    chosen_loo = chosen_2se = None
    samples: dict[int, MixtureSamples] = {}
    if loo:
        res = loo_scores(x, ks, em=em, prior=prior, num_warmup=num_warmup,
                         num_samples=num_samples, num_chains=num_chains, n_init=n_init,
                         seed=seed, jit_compile=jit_compile)
        notes += res["warnings"]
        samples = res["samples"]
        for s in scores:
            row = res["compare"][f"K={s.n_components}"]
            for key, value in res["per_k"][s.n_components].items():
                setattr(s, key, value)
            s.elpd_diff, s.elpd_diff_se = row["elpd_diff"], row["dse"]
            s.loo_rank, s.stacking_weight = row["rank"], row["weight"]
        chosen_loo = min(scores, key=lambda s: s.loo_rank).n_components
        chosen_2se = min(s.n_components for s in scores
                         if s.elpd_diff <= 2.0 * s.elpd_diff_se or s.loo_rank == 0)
    return ModelChoice(
        scores=scores,
        chosen_bic=min(scores, key=lambda s: s.bic).n_components,
        chosen_aic=min(scores, key=lambda s: s.aic).n_components,
        chosen_loo=chosen_loo,
        chosen_loo_within_2se=chosen_2se,
        n=int(x.shape[0]),
        dim=int(x.shape[1]),
        warnings=notes,
        samples=samples,
    )
