"""The number of mixture components in ``probgen compare``: one record, one statement.

:func:`compare_section` chooses K for the training data of a comparison on 1-D and 2-D data
(BIC always; PSIS-LOO when the K to try are few enough to sample within the step's share of
the budget) and returns the record that ``results.json`` holds under ``model_choice``;
:func:`markdown` renders the report's section from that record alone. The sentence that
states the choice is the record's ``statement``, so that the report and ``results.json``
say the same thing.
"""

from __future__ import annotations

import time

from probgen.model_choice.choice import ModelChoice, choose_n_components

__all__ = ["LOO_MAX_COMPONENTS", "compare_section", "markdown", "record", "skipped"]

LOO_MAX_COMPONENTS = 5
"""PSIS-LOO runs when the largest K tried is at most this (one NUTS fit per K)."""


def skipped(reason: str) -> dict:
    """The record of a comparison without the model-choice step."""
    return {"reason": reason, "statement": f"Model choice was not run: {reason}."}


def record(mc: ModelChoice, *, true_k: int | None = None, settings: dict | None = None,
           loo_reason: str | None = None, seconds: float | None = None) -> dict:
    """``results.json``'s ``model_choice`` from a :class:`ModelChoice`.

    ``loo_choice`` is PSIS-LOO's choice (the smallest K within two standard errors of the
    best, among the K whose chains pass the checks), ``loo_best`` the best of those K;
    ``loo_reason`` (given, or the choice's own) says why there is none.
    """
    rel = mc.reliability
    chains = (settings or {}).get("num_chains", 2)
    reason = loo_reason or mc.loo_reason
    rec = {
        "bic_choice": mc.chosen_bic, "aic_choice": mc.chosen_aic,
        "loo_choice": mc.chosen_loo_within_2se, "loo_best": mc.chosen_loo,
        "loo_candidates": list(mc.loo_candidates), "loo_reason": reason,
        "checks": {"max_r_hat": rel.max_r_hat, "min_ess_bulk": rel.min_ess_per_chain * chains,
                   "max_pareto_k": rel.max_pareto_k, "text": rel.describe(chains)},
        "true_k": true_k, "n": mc.n, **(settings or {}),
        "per_k": [{"k": s.n_components, "bic": s.bic, "elpd_loo": s.elpd_loo,
                   "elpd_loo_se": s.elpd_loo_se, "pareto_k_max": s.max_pareto_k,
                   "r_hat_max": s.r_hat_max, "ess_min": s.ess_bulk_min,
                   "passes": None if s.problems is None else not s.problems,
                   "problems": s.problems} for s in mc.scores],
        "table": mc.table(), "warnings": mc.warnings,
    }
    if seconds is not None:
        rec["seconds"] = seconds
    rec["statement"] = _statement(rec)
    return rec


def _statement(rec: dict) -> str:
    truth = f" (true K = {rec['true_k']})" if rec.get("true_k") else ""
    if rec["loo_choice"] is not None:
        cands = ", ".join(str(k) for k in rec["loo_candidates"])
        loo = (f"PSIS-LOO chooses K = {rec['loo_choice']}, the smallest K within two standard "
               f"errors of the best (K = {rec['loo_best']}), among the K whose chains pass the "
               f"checks ({rec['checks']['text']}): K = {cands}")
    else:
        loo = f"PSIS-LOO: {rec['loo_reason']}"
    return f"BIC chooses K = {rec['bic_choice']}{truth}; {loo}."


def compare_section(data, *, seed: int = 0, smoke: bool = False, time_limit: float | None = None,
                    progress: bool = False) -> dict:
    """Choose K on up to 300 training points of ``data`` (a :class:`probgen.data.Dataset`).

    K runs from 1 to the true number of components plus 2 (3 + 2 when the data do not know
    it); PSIS-LOO runs when that is at most :data:`LOO_MAX_COMPONENTS`, with 2 chains of
    150 warm-up and 150 kept draws (20 and 20 with ``smoke``), within ``time_limit`` seconds.
    """
    if data.dim > 2:
        return skipped(f"model choice runs on 1-D and 2-D data only (this data set has "
                       f"{data.dim} dimensions per example)")
    true_k = getattr(data.density, "n_components", None)
    k_max = (true_k or 3) + 2
    with_loo = k_max <= LOO_MAX_COMPONENTS
    settings = {"num_chains": 2, "num_warmup": 20 if smoke else 150,
                "num_samples": 20 if smoke else 150, "n_init": 2 if smoke else 4,
                "time_limit_s": time_limit}
    t0 = time.perf_counter()
    mc = choose_n_components(
        data.train[:300].cpu(), k_max, loo=with_loo, n_init=settings["n_init"],
        num_warmup=settings["num_warmup"], num_samples=settings["num_samples"],
        num_chains=settings["num_chains"], seed=seed, time_limit=time_limit, progress=progress)
    reason = None
    if not with_loo:
        reason = (f"not run, because it needs a NUTS fit per K, and K up to {k_max} is beyond this "
                  f"comparison's budget (it runs for K up to {LOO_MAX_COMPONENTS}); see "
                  "examples/mixture_model_choice.py for both criteria on a smaller K")
    return record(mc, true_k=true_k, settings=settings, loo_reason=reason,
                  seconds=time.perf_counter() - t0)


def _num(v, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def markdown(rec: dict | None) -> list[str]:
    """The report's section "Number of mixture components" from the record (none for None)."""
    if not rec:
        return []
    lines = ["", "## Number of mixture components", "", rec["statement"]]
    if "per_k" not in rec:
        return lines
    if rec.get("seconds") is not None and rec.get("time_limit_s") is not None:
        lines += ["", f"This step took {rec['seconds']:.1f} s of its {rec['time_limit_s']:.0f} s "
                      f"share of the budget ({rec['num_chains']} NUTS chains of "
                      f"{rec['num_warmup']} warm-up and {rec['num_samples']} kept draws per K "
                      f"when PSIS-LOO runs)."]
    lines += ["", "| K | BIC | elpd_loo | max Pareto k | max R-hat | min bulk ESS | checks |",
              "|---|---|---|---|---|---|---|"]
    for row in rec["per_k"]:
        se = f" ± {row['elpd_loo_se']:.1f}" if row.get("elpd_loo_se") is not None else ""
        checks = ("—" if row.get("problems") is None
                  else "pass" if not row["problems"] else "; ".join(row["problems"]))
        lines.append(f"| {row['k']} | {row['bic']:.1f} | {_num(row.get('elpd_loo'), '.1f')}{se} | "
                     f"{_num(row.get('pareto_k_max'), '.2f')} | {_num(row.get('r_hat_max'), '.3f')} | "
                     f"{_num(row.get('ess_min'), '.0f')} | {checks} |")
    return lines
