"""Choosing K for a mixture: BIC against scikit-learn, PSIS-LOO on NUTS posteriors, and the
readers that make the ArviZ 0.x and 1.x results look the same."""

import dataclasses
import types

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from probgen.errors import ConfigError, DataError
from probgen.model_choice import (
    Reliability,
    choose_n_components,
    fit_em,
    inference_data,
    read_compare,
    read_diagnostics,
    read_elpd,
)
from probgen.models.bayes_mixture import (
    MixturePrior,
    MixtureSamples,
    fit_nuts,
    pointwise_log_likelihood,
    sort_components,
)


def mixture_data(n, means, sd, weights=None, seed=0):
    """n points from an equal-width mixture; means (K,) for 1-D or (K, D)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.as_tensor(means, dtype=torch.float32)
    if means.dim() == 1:
        means = means[:, None]                                  # (K,) -> (K, 1)
    k = means.shape[0]
    w = torch.full((k,), 1.0 / k) if weights is None else torch.as_tensor(weights)
    comp = torch.multinomial(w, n, replacement=True, generator=g)
    return means[comp] + sd * torch.randn(n, means.shape[1], generator=g)


# ----------------------------------------------------------------------------- BIC
@pytest.mark.parametrize(
    "means, true_k",
    [([-4.0, 0.0, 4.0], 3), ([[-3.0, -3.0], [3.0, -3.0], [0.0, 3.0], [0.0, -8.0]], 4)],
    ids=["1d-3", "2d-4"],
)
def test_bic_picks_the_true_k_on_separated_data(means, true_k):
    x = mixture_data(300, means, 0.7)
    choice = choose_n_components(x, 5, loo=False, n_init=3)
    assert choice.chosen_bic == true_k
    assert choice.chosen_loo is None and [s.n_components for s in choice.scores] == [1, 2, 3, 4, 5]
    assert all(s.elpd_loo is None for s in choice.scores)


@pytest.mark.parametrize("k", [1, 2])
def test_em_bic_and_likelihood_match_scikit_learn(k):
    x = mixture_data(200, [[-2.0, 0.0], [2.0, 1.0]], 0.8, seed=3)
    fit = fit_em(x, k, n_init=3)
    ref = SkGaussianMixture(k, covariance_type="diag", n_init=3, random_state=0).fit(
        x.double().numpy())
    xn = x.double().numpy()
    assert fit.bic == pytest.approx(ref.bic(xn), rel=1e-6)
    assert fit.aic == pytest.approx(ref.aic(xn), rel=1e-6)
    assert fit.log_likelihood == pytest.approx(ref.score(xn) * 200, rel=1e-6)


# ----------------------------------------------------------------------------- the model
def test_pointwise_log_likelihood_matches_scikit_learn_and_ignores_labels():
    x = mixture_data(100, [[-2.0, 0.0], [2.0, 1.0], [0.0, 4.0]], 0.8, seed=1)
    sk = SkGaussianMixture(3, covariance_type="diag", random_state=0).fit(x.double().numpy())
    w = torch.as_tensor(sk.weights_)
    mu = torch.as_tensor(sk.means_)
    sd = torch.as_tensor(sk.covariances_).sqrt()
    ll = pointwise_log_likelihood(x.double(), w, mu, sd)
    np.testing.assert_allclose(ll.numpy(), sk.score_samples(x.double().numpy()), rtol=1e-10)
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(pointwise_log_likelihood(x.double(), w[perm], mu[perm], sd[perm]), ll)
    ws, mus, sds = sort_components(w[perm], mu[perm], sd[perm])
    assert torch.all(mus[1:, 0] >= mus[:-1, 0])
    torch.testing.assert_close(pointwise_log_likelihood(x.double(), ws, mus, sds), ll)


def test_nuts_runs_on_2d_data_with_the_documented_shapes():
    x = mixture_data(60, [[-2.0, 0.0], [2.0, 1.0]], 0.5, seed=2)
    em = fit_em(x, 2, n_init=1)
    s = fit_nuts(x, 2, num_warmup=10, num_samples=8, num_chains=1, init=[em.init_values()])
    assert s.weights.shape == (1, 8, 2) and s.locs.shape == (1, 8, 2, 2)
    assert s.scales.shape == (1, 8, 2, 2) and bool((s.scales > 0).all())
    assert s.log_likelihood(x).shape == (1, 8, 60)
    torch.testing.assert_close(s.weights.sum(-1), torch.ones(1, 8))


# ----------------------------------------------------------------------------- LOO with NUTS
# Chains of 60 draws cannot reach the default checks (bulk ESS >= 100 per chain); these
# looser ones let the short run below choose, and the checks themselves are tested apart.
SHORT_RUN_CHECKS = Reliability(max_r_hat=1.05, min_ess_per_chain=25, max_pareto_k=0.7)


@pytest.fixture(scope="module")
def two_bumps():
    x = mixture_data(200, [-3.0, 3.0], 0.7, seed=0)
    choice = choose_n_components(x, 2, n_init=3, num_warmup=60, num_samples=60, num_chains=2,
                                 reliability=SHORT_RUN_CHECKS)
    return x, choice


def test_loo_ranks_the_true_k_first(two_bumps):
    _, choice = two_bumps
    one, two = choice.scores
    assert choice.chosen_loo == 2 and choice.chosen_loo_within_2se == 2
    assert two.loo_rank == 0 and one.loo_rank == 1
    assert two.elpd_loo - one.elpd_loo > 4 * one.elpd_diff_se
    assert one.elpd_diff == pytest.approx(two.elpd_loo - one.elpd_loo, rel=1e-6)
    assert choice.chosen_bic == 2


def test_posterior_mean_likelihood_is_close_to_the_em_maximum(two_bumps):
    _, choice = two_bumps
    for s in choice.scores:
        # EM maximises the likelihood: the posterior mean cannot do better, and with
        # 200 points and weak priors it should lose little.
        assert s.posterior_mean_log_likelihood <= s.em_log_likelihood + 0.5
        assert s.posterior_mean_log_likelihood >= s.em_log_likelihood - 3.0


def test_diagnostics_are_reported(two_bumps):
    _, choice = two_bumps
    for s in choice.scores:
        assert s.r_hat_max < 1.1 and s.ess_bulk_min > 20
        assert 0 < s.p_loo < 3 * (3 * s.n_components) and s.max_pareto_k < 1.0
        assert s.divergences == 0 and s.seconds_nuts > 0
    assert "chosen K: BIC 2" in choice.table()


# ----------------------------------------------------------------------------- ArviZ 0.x and 1.x
def test_readers_give_the_same_record_for_both_arviz_spellings():
    names = ["K=2", "K=1"]
    old = pd.DataFrame({"rank": [0, 1], "elpd_loo": [-370.0, -512.0], "p_loo": [5.1, 1.2],
                        "elpd_diff": [0.0, 142.0], "weight": [1.0, 0.0], "se": [10.9, 3.4],
                        "dse": [0.0, 9.0], "warning": [False, True], "scale": ["log", "log"]},
                       index=names)
    new = old.rename(columns={"elpd_loo": "elpd", "p_loo": "p"}).drop(columns="scale")
    assert read_compare(old) == read_compare(new)
    assert read_compare(new)["K=1"] == {"rank": 1, "elpd": -512.0, "p": 1.2, "elpd_diff": 142.0,
                                        "weight": 0.0, "se": 3.4, "dse": 9.0}
    with pytest.raises(KeyError, match=r"none of the columns \['elpd_loo', 'elpd'\]"):
        read_compare(new.drop(columns="elpd"))


def test_read_elpd_takes_a_series_or_a_record():
    k = np.array([0.1, 0.8, 0.3])
    series = pd.Series({"elpd_loo": -10.0, "se": 1.5, "p_loo": 2.0, "pareto_k": k, "good_k": 0.6})

    @dataclasses.dataclass
    class ELPDData:  # the 1.x shape: attributes, not items
        elpd: float
        se: float
        p: float
        pareto_k: object
        good_k: float

    for result in (series, ELPDData(-10.0, 1.5, 2.0, k, 0.6)):
        r = read_elpd(result)
        assert (r["elpd"], r["se"], r["p"], r["good_k"]) == (-10.0, 1.5, 2.0, 0.6)
        np.testing.assert_array_equal(r["pareto_k"], k)


def test_inference_data_uses_the_groups_argument_on_arviz_1():
    seen = {}

    def from_dict(data, *, name=None, sample_dims=None):
        seen["data"] = data
        return "tree"

    fake = types.SimpleNamespace(from_dict=from_dict)
    post, ll, obs = {"a": np.zeros((2, 3))}, {"obs": np.zeros((2, 3, 4))}, {"obs": np.zeros(4)}
    assert inference_data(post, ll, obs, az=fake) == "tree"
    assert seen["data"] == {"posterior": post, "log_likelihood": ll, "observed_data": obs}


def test_inference_data_and_summary_on_the_installed_arviz():
    rng = np.random.default_rng(0)
    post = {"mu": rng.normal(size=(2, 50))}
    idata = inference_data(post, {"obs": rng.normal(size=(2, 50, 7))}, {"obs": np.zeros(7)})
    import arviz as az

    diag = read_diagnostics(az.summary(idata, var_names=["mu"], kind="diagnostics"))
    assert 0.9 < diag["r_hat_max"] < 1.1 and diag["ess_bulk_min"] > 30


def test_read_diagnostics_ignores_undefined_rows():
    table = pd.DataFrame({"r_hat": [1.01, np.nan, 1.2], "ess_bulk": [300.0, np.nan, 40.0]})
    assert read_diagnostics(table) == {"r_hat_max": 1.2, "ess_bulk_min": 40.0}


# ----------------------------------------------------------------------------- errors
def test_errors_name_the_argument():
    x = mixture_data(20, [0.0, 3.0], 0.5)
    with pytest.raises(ConfigError, match="max_components must be a positive integer; got 0"):
        choose_n_components(x, 0, loo=False)
    with pytest.raises(ConfigError, match=r"at most the number of points \(20\); got 25"):
        choose_n_components(x, 25, loo=False)
    with pytest.raises(DataError, match=r"shape \(N,\) or \(N, D\).*got shape \(20, 1, 1\)"):
        choose_n_components(x[:, :, None], 2, loo=False)
    with pytest.raises(ConfigError, match=r"init\['locs'\] must have shape \(2, 1\); got \(3, 1\)"):
        fit_nuts(x, 2, init=[{"weights": torch.ones(2) / 2, "locs": torch.zeros(3, 1),
                              "scales": torch.ones(2, 1)}])


def test_prior_is_scaled_to_the_data():
    x = torch.tensor([[0.0, 10.0], [2.0, 30.0], [4.0, 50.0]])
    p = MixturePrior.from_data(x)
    torch.testing.assert_close(p.center, torch.tensor([2.0, 30.0]))
    torch.testing.assert_close(p.spread, torch.tensor([2.0, 20.0]))


def test_one_component_posterior_matches_the_normal_approximation(two_bumps):
    """K = 1 with weak priors: mu | x is close to N(mean(x), sd(x)^2 / N) and sigma's
    posterior mean close to sd(x) (Bernstein-von Mises; the prior is 2 data spreads wide)."""
    x, choice = two_bumps
    s = choice.samples[1]
    mu = s.locs[..., 0, 0].flatten()                 # (C * S,)
    sigma = s.scales[..., 0, 0].flatten()
    n, sd = x.shape[0], float(x.std())
    post_sd = sd / n**0.5
    assert abs(float(mu.mean()) - float(x.mean())) < 0.5 * post_sd
    assert float(mu.std()) == pytest.approx(post_sd, rel=0.35)
    # sd of the posterior of sigma is about sd / sqrt(2N); allow three of them.
    assert abs(float(sigma.mean()) - sd) < 3 * sd / (2 * n) ** 0.5


def test_model_choice_to_dict_is_json_ready(two_bumps):
    import json

    _, choice = two_bumps
    d = choice.to_dict()
    assert "samples" not in d and d["chosen_loo"] == 2
    assert json.loads(json.dumps(d))["scores"][1]["n_components"] == 2


# ----------------------------------------------------------------------------- only reliable chains
def _draws(fit, n_chains, n_draws, sd, shift=0.0, seed=0):
    """Draws scattered iid (sd) around an EM solution; chain c's means moved by c * shift."""
    g = torch.Generator().manual_seed(seed)
    k, d = fit.locs.shape
    locs = fit.locs + sd * torch.randn(n_chains, n_draws, k, d, generator=g)
    locs = locs + shift * torch.arange(n_chains, dtype=locs.dtype).view(-1, 1, 1, 1)
    scales = fit.scales * torch.exp(sd * torch.randn(n_chains, n_draws, k, d, generator=g))
    weights = fit.weights.expand(n_chains, n_draws, k).clone()
    return MixtureSamples(weights=weights, locs=locs, scales=scales,
                          divergences=[0] * n_chains, seconds=0.0)


@pytest.fixture
def drawn_posteriors(monkeypatch):
    """``fit_nuts`` replaced by draws made here: chains that agree, unless told to disagree
    for some K (their means half a data unit apart: R-hat far above 1.01)."""
    import probgen.model_choice.loo as loo_module

    disagree: set[int] = set()

    def fake_fit_nuts(x, k, *, num_chains, num_samples, seed, init, **_):
        fit = fit_em(x, k, n_init=3)
        return _draws(fit, num_chains, num_samples, 0.02, shift=0.5 if k in disagree else 0.0,
                      seed=k)

    monkeypatch.setattr(loo_module, "fit_nuts", fake_fit_nuts)
    return disagree


def test_chains_that_pass_the_checks_give_a_choice(drawn_posteriors):
    x = mixture_data(200, [-3.0, 3.0], 0.7, seed=0)
    choice = choose_n_components(x, 3, n_init=3, num_samples=300, num_chains=2)
    assert [s.problems for s in choice.scores] == [[], [], []]
    assert all(s.r_hat_max < 1.01 and s.ess_bulk_min >= 200 for s in choice.scores)
    assert choice.loo_candidates == [1, 2, 3] and choice.loo_reason is None
    assert choice.chosen_loo_within_2se == 2  # K = 3 adds nothing the data need


def test_chains_with_a_bad_r_hat_give_no_reliable_choice(drawn_posteriors):
    from probgen.model_choice.record import markdown, record

    x = mixture_data(200, [-3.0, 3.0], 0.7, seed=0)
    drawn_posteriors.add(2)
    choice = choose_n_components(x, 2, n_init=3, num_samples=300, num_chains=2)
    one, two = choice.scores
    assert one.problems == [] and two.r_hat_max > 1.5
    assert two.problems[0].startswith("R-hat") and "> 1.01" in two.problems[0]
    # the better elpd of K = 2 is not trusted: no choice, and the reason names the diagnostics
    assert two.loo_rank == 0
    assert choice.chosen_loo is None and choice.chosen_loo_within_2se is None
    assert choice.loo_reason.startswith("no reliable choice, because only K=1 of 2 passes")
    assert "K=2: R-hat" in choice.loo_reason
    rec = record(choice, settings={"num_chains": 2})
    assert rec["loo_choice"] is None and rec["per_k"][1]["passes"] is False
    assert "PSIS-LOO: no reliable choice, because only K=1" in rec["statement"]
    lines = markdown(rec)
    assert rec["statement"] in lines and any("R-hat" in line and "| 2 |" in line for line in lines)


def test_a_failing_k_is_left_out_of_the_choice_among_the_others(drawn_posteriors):
    x = mixture_data(200, [-3.0, 3.0], 0.7, seed=0)
    drawn_posteriors.add(3)
    choice = choose_n_components(x, 3, n_init=3, num_samples=300, num_chains=2)
    assert choice.loo_candidates == [1, 2] and choice.chosen_loo == 2


def test_model_choice_stops_when_its_time_runs_out():
    x = mixture_data(100, [-3.0, 3.0], 0.7, seed=0)
    choice = choose_n_components(x, 2, n_init=1, num_warmup=50, num_samples=50, time_limit=0.0)
    assert choice.chosen_bic == 2  # EM always completes
    assert choice.chosen_loo is None and "ran out while sampling K=1" in choice.loo_reason
    assert all(s.elpd_loo is None for s in choice.scores)


def test_reliability_checks_read_every_diagnostic():
    rel = Reliability()
    good = {"r_hat_max": 1.004, "ess_bulk_min": 350.0, "max_pareto_k": 0.3,
            "pareto_k_threshold": 0.6, "n_high_pareto_k": 0}
    assert rel.problems(good, 2) == []
    bad = {"r_hat_max": 2.87, "ess_bulk_min": 4.0, "max_pareto_k": float("inf"),
           "pareto_k_threshold": 0.6, "n_high_pareto_k": 3}
    assert rel.problems(bad, 2) == ["R-hat 2.87 > 1.01", "bulk ESS 4 < 200",
                                    "Pareto k inf > 0.60 at 3 points"]
    assert rel.problems({**good, "r_hat_max": float("nan")}, 1)[0].startswith("R-hat undefined")
