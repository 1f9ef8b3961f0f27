"""The tables that drive evaluation: estimators (with their options) and metrics.

A new estimator is registered once and appears everywhere: as a flag of ``probgen eval`` and
``probgen compare``, as a column of compare's table, with its blank reason in the report. The
AIS of a decoder (the GAN's likelihood) is checked against the closed-form marginal of a
linear decoder, and labelled as a dequantization bound on images.
"""

import math

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


class _LinearDecoder:
    """x = W z + b, z ~ N(0, I): with N(x; decode(z), sigma^2 I) the marginal is
    N(b, W W^T + sigma^2 I), known in closed form."""

    def __init__(self, W, b):
        self.W, self.b, self.latent_dim = W, b, W.shape[1]

    def prior_log_prob(self, z):
        return torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)

    def decode(self, z):
        return z @ self.W.T + self.b


def test_decoder_ais_matches_the_closed_form_marginal_and_its_bdmc_gap_is_small():
    from probgen.eval.diagnostics import decoder_ais_metric

    g = torch.Generator().manual_seed(0)
    W = torch.randn(3, 2, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    sigma = 0.5
    dec = _LinearDecoder(W, b)
    truth = torch.distributions.MultivariateNormal(b, W @ W.T + sigma**2 * torch.eye(3))
    x = truth.sample((40,))
    store = {}
    m = decoder_ais_metric(dec, x, x_val=truth.sample((20,)), sigmas=(sigma,), n_steps=150,
                           n_chains=8, n_bdmc=8, per_example=store)
    exact = truth.log_prob(x)
    # a stochastic lower bound: within its Monte Carlo error of the exact value on average
    # (each example's own estimate, from 8 chains, is off by about 0.25 nats either way)
    mc_se = m.extra["mean_mc_stderr_per_example"] / math.sqrt(x.shape[0])
    assert abs(float((store["decoder_ais"] - exact).mean())) < 3 * mc_se + 0.01
    assert m.value == pytest.approx(float(store["decoder_ais"].mean()))
    assert m.extra["sigma"] == sigma
    bd = m.extra["bdmc"]  # the sandwich on simulated data: upper - lower, small and not below 0
    assert bd["n"] == 8 and -3 * bd["gap_stderr"] < bd["gap"] < 0.5
    cost = m.extra["cost"]
    assert cost["n_images"] == 40 and cost["n_steps"] == 150 and cost["n_chains"] == 8
    assert cost["seconds"] >= cost["ais_seconds"] > 0


def test_decoder_ais_of_a_gan_on_images_is_a_labelled_dequantization_bound():
    """An (untrained) MLP GAN on digits, pixels in [-1, 1]: scored on the dequantized images,
    its outputs mapped to [0, 1], with D log(1/17) added; a model with a density is skipped."""
    from probgen.data import load_dataset
    from probgen.eval import evaluate
    from probgen.eval.evaluate import scored_data
    from probgen.models.gan import GAN
    from probgen.models.nets import gan_networks

    torch.manual_seed(0)
    data = load_dataset("digits", value_range=(-1.0, 1.0), limit=200)
    assert data.representation == "raw-pixels"
    g, d = gan_networks(data.shape, 4, value_range=data.value_range, width=16, depth=1, arch="mlp")
    gan = GAN(g, d, latent_dim=4, data_shape=data.shape)
    store = {}
    ev = evaluate(gan, data, limit=20, decoder_ais=True, decoder_ais_images=6,
                  decoder_ais_steps=8, decoder_ais_chains=2, bdmc_images=2, per_example=store,
                  n_samples=50)
    m = ev["metrics"]["decoder_ais"]
    assert m["representation"] == "dequantized-17-level"
    assert m["estimator"] == "dequantization bound" and m["inner_estimator"] == "ais"
    assert m["bits_per_dim"] == pytest.approx(-m["value"] / (64 * math.log(2)))
    assert m["extra"]["decoder_output_map"] == {"from": [-1.0, 1.0], "to": [0.0, 1.0]}
    assert {"gap", "lower", "upper"} <= set(m["extra"]["bdmc"])
    assert m["extra"]["cost"]["n_images"] == 6 and store["decoder_ais"].shape == (6,)
    # the bound on log P(k) of 17-level pixels is at most 0 (a probability)
    assert m["value"] < 0 and (store["decoder_ais"] < 0).all()
    # the dequantized test values are those a density model of the dequantized data scores
    deq = load_dataset("digits", limit=200, dequantize="on")
    assert m["extra"]["scored"]["sha256"] == scored_data(deq, "test")["sha256"]
    # off by default in eval; and a model with a density does not get it
    assert "decoder_ais" not in evaluate(gan, data, limit=5, n_samples=20)["metrics"]
    gmm, ring = _gmm_and_data()
    assert "decoder_ais" not in evaluate(gmm, ring, limit=5, decoder_ais=True)["metrics"]


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


def test_a_torch_distribution_is_scored_as_it_is_exact_likelihood_and_samples():
    import pyro.distributions as pdist

    from probgen.data import load_dataset
    from probgen.eval import evaluate

    data = load_dataset("banana", limit=400)
    x = data.train
    for d in (torch.distributions.MultivariateNormal(x.mean(0), torch.cov(x.T)),
              pdist.Normal(x.mean(0), x.std(0)).to_event(1)):
        res = evaluate(d, data, n_samples=200)
        ll = res["metrics"]["log_likelihood"]
        assert ll["estimator"] == "exact" and res["model"] == type(d).__name__
        assert ll["value"] == pytest.approx(float(d.log_prob(data.test).double().mean()), abs=1e-4)
        assert res["metrics"]["energy_distance"]["value"] is not None
