"""The tables that drive evaluation: estimators (with their options) and metrics.

A new estimator is registered once and appears everywhere: as a flag of ``probgen eval`` and
``probgen compare``, as a column of compare's table, with its blank reason in the report.
"""

import pytest
import torch

from probgen.errors import ConfigError
from probgen.eval import registry


@pytest.fixture
def mean_estimator():
    """A test estimator: the mean of x times --scale-by, registered for one test only."""
    from probgen.eval.metrics import summarize

    def compute(ctx):
        v = ctx.x.reshape(ctx.x.shape[0], -1).mean(1) * ctx.options["scale_by"]
        ctx.store["test_mean"] = v
        return {"test_mean": summarize(v, "units")}

    registry.register_metric(registry.MetricInfo(
        "test_mean", "test mean", "units", "higher", "mean of the example's values",
        "the test estimator is off (--test-mean)"))
    est = registry.register_estimator(registry.Estimator(
        "test_mean", "a test estimator", ("test_mean",), compute, switch="test_mean",
        options=(registry.Option("test_mean", bool, False, "add the test mean"),
                 registry.Option("scale_by", float, 1.0, "scale of the test mean",
                                 compare_default=2.0))))
    yield est
    registry.unregister_estimator("test_mean")


def _gmm_and_data():
    from probgen.data import load_dataset
    from probgen.models.gmm import GaussianMixture, MixtureDensity

    data = load_dataset("ring8", limit=400)
    gmm = GaussianMixture(8, random_state=0).fit(data.train)
    return MixtureDensity(gmm), data


def test_a_registered_estimator_gets_flags_a_column_a_blank_reason_and_runs(mean_estimator):
    from probgen.cli import build_parser
    from probgen.comparison import COLUMNS
    from probgen.eval import evaluate
    from probgen.report import table_rows

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    for command, scale in (("eval", 1.0), ("compare", 2.0)):
        p = sub[command]
        flags = {s for a in p._actions for s in a.option_strings}
        assert {"--test-mean", "--scale-by", "--k", "--ais"} <= flags
        required = ["RUN"] if command == "eval" else ["--data", "d", "--models", "m", "--out", "o"]
        args = p.parse_args(required + ["--test-mean"])
        assert registry.options_from_args(args)["scale_by"] == scale  # each command's default
        assert registry.options_from_args(args)["test_mean"] is True
    assert ("test_mean", "test mean", "higher") in COLUMNS

    gmm, data = _gmm_and_data()
    store = {}
    off = evaluate(gmm, data, limit=50)
    assert "test_mean" not in off["metrics"]  # switched off by default
    on = evaluate(gmm, data, limit=50, test_mean=True, scale_by=3.0, per_example=store)
    x = data.test[:50]
    assert on["metrics"]["test_mean"]["value"] == pytest.approx(float(x.mean() * 3.0), rel=1e-6)
    assert store["test_mean"].shape == (50,)
    assert on["options"]["scale_by"] == 3.0

    results = {"models": {"a": on, "b": off}}
    header, rows, notes = table_rows(results, COLUMNS)
    assert "test mean" in header
    assert "b / test mean: the test estimator is off (--test-mean)" in notes


def test_unknown_or_bad_options_are_clear_errors():
    gmm, data = _gmm_and_data()
    from probgen.eval import evaluate

    with pytest.raises(ConfigError, match=r"unknown evaluation option\(s\) 'ais_step'.*Did you mean 'ais_steps'"):
        evaluate(gmm, data, limit=10, ais_step=10)
    with pytest.raises(ConfigError, match=r"--k \(k\) must be at least 1; got 0"):
        evaluate(gmm, data, limit=10, k=0)
    with pytest.raises(ConfigError, match=r"--ais \(ais\) is a switch"):
        registry.resolve_options({"ais": "yes"})
    with pytest.raises(ConfigError, match="already registered"):
        registry.register_metric(registry.MetricInfo("iwae", "other", "nats", "higher", "x"))


def test_iwae_has_one_key_with_k_beside_the_value():
    from probgen.data import load_dataset
    from probgen.eval import likelihood_metrics
    from probgen.models.vae import VAE

    torch.manual_seed(0)
    data = load_dataset("banana", limit=200)
    vae = VAE(data.shape, 2, (16,), likelihood="gaussian")
    m = likelihood_metrics(vae, data, limit=30, k=7)
    assert "iwae" in m and not any(k.startswith("iwae_") for k in m)
    assert m["iwae"].extra["k"] == 7 and m["iwae"].estimator == "iwae-7"
    assert m["elbo"].value <= m["iwae"].value + 0.5
    # compare's "likelihood available" and preference read the same keys
    assert registry.likelihood_preference()[:4] == ["log_likelihood", "ais", "iwae", "elbo"]
    assert registry.likelihood_preference()[-1] == "parzen"


def test_likelihoods_keep_the_most_trusted_estimate_per_representation():
    from probgen.comparison import likelihoods

    def lik(v, rep, est, inner=None, **kw):
        return {"value": v, "stderr": 0.1, "unit": "nats", "representation": rep, "estimator": est,
                **({"inner_estimator": inner} if inner else {}), "bits_per_dim": 1.0,
                "bits_per_dim_stderr": 0.01, "extra": {"n": 10, **kw}}

    metrics = {"elbo": lik(-90.0, "binary", "elbo"), "iwae": lik(-88.0, "binary", "iwae-100"),
               "ais": lik(-700.0, "dequantized-8bit", "dequantization bound", "ais",
                                  caveat="c", bdmc={"gap": 1.0}),
               "parzen": lik(-600.0, "dequantized-8bit", "dequantization bound", "parzen"),
               "train_time": {"value": 3.0, "unit": "s"}}
    out = likelihoods(metrics)
    assert set(out) == {"binary", "dequantized-8bit"}
    assert out["binary"] == {"metric": "iwae", "value": -88.0, "stderr": 0.1, "unit": "nats",
                             "bits_per_dim": 1.0, "bits_per_dim_stderr": 0.01,
                             "estimator": "iwae-100", "n": 10}
    deq = out["dequantized-8bit"]
    assert deq["metric"] == "ais" and deq["estimator"] == "ais"
    assert deq["bound"] == "dequantization bound" and deq["bdmc"] == {"gap": 1.0}
    # Parzen only when nothing else is there, and marked
    only = likelihoods({"parzen": metrics["parzen"]})["dequantized-8bit"]
    assert only["metric"] == "parzen" and only["last_resort"] is True
