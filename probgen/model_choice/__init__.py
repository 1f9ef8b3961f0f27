"""How many mixture components? BIC on EM fits beside PSIS-LOO on NUTS posteriors.

Two ways to choose K for a Gaussian mixture with diagonal covariances, on the same data:

* :mod:`~probgen.model_choice.bic`: EM with restarts for each K, then BIC and AIC;
* :mod:`~probgen.model_choice.loo`: NUTS on the Bayesian mixture of
  :mod:`probgen.models.bayes_mixture` for each K, then PSIS-LOO; a choice is made only among
  the K whose chains pass R-hat, bulk ESS and Pareto k checks (:class:`Reliability`).

:func:`choose_n_components` runs both side by side; :mod:`~probgen.model_choice.record`
is what ``probgen compare`` writes and reports; :mod:`~probgen.model_choice.arviz_compat`
reads ArviZ 0.x and 1.x alike.
"""

from probgen.model_choice.arviz_compat import (
    inference_data,
    read_compare,
    read_diagnostics,
    read_elpd,
)
from probgen.model_choice.bic import EMFit, em_scores, fit_em
from probgen.model_choice.choice import ComponentScore, ModelChoice, choose_n_components
from probgen.model_choice.loo import Reliability, loo_scores

__all__ = [
    "ComponentScore",
    "EMFit",
    "ModelChoice",
    "Reliability",
    "choose_n_components",
    "em_scores",
    "fit_em",
    "inference_data",
    "loo_scores",
    "read_compare",
    "read_diagnostics",
    "read_elpd",
]
