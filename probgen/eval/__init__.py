"""The evaluation layer: likelihoods and bounds with standard errors, sample metrics, one schema."""

from probgen.eval.evaluate import evaluate, likelihood_metrics
from probgen.eval.metrics import Metric, summarize, unavailable

__all__ = ["evaluate", "likelihood_metrics", "Metric", "summarize", "unavailable"]
