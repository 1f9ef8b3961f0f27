"""GaussianMixture against scikit-learn and scipy, its invariants, errors and the recipe."""

import json
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from probgen.errors import ConfigError, DataError, NotFittedError
from probgen.inference import em
from probgen.inference.em import ConvergenceWarning, CovarianceError
from probgen.models.gmm import GaussianMixture, MixtureDensity

COV_TYPES = ["full", "tied", "diag", "spherical"]


def blobs(n=300, seed=0):
    """Three overlapping 3-D clusters of different shapes, (n, 3) float64."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n // 3, 3)) * 0.6 + [2.0, 0.0, 1.0]
    b = rng.normal(size=(n // 3, 3)) @ np.array([[1.0, 0.4, 0.0], [0.0, 0.5, 0.2], [0.0, 0.0, 0.3]])
    c = rng.normal(size=(n - 2 * (n // 3), 3)) * [0.3, 1.2, 0.5] + [-1.5, 1.0, -1.0]
    return np.concatenate([a, b, c])


def full_covariances(gm):
    """Covariances of every component as (K, D, D), whatever the covariance type."""
    k, d = gm.means_.shape
    c = gm.covariances_
    return {
        "full": lambda: c,
        "tied": lambda: c.expand(k, d, d),
        "diag": lambda: torch.diag_embed(c),
        "spherical": lambda: c[:, None, None] * torch.eye(d, dtype=c.dtype),
    }[gm.covariance_type]().numpy()


def start_point(x, covariance_type, k=3, seed=1):
    """Uniform weights, k data points as means, the data's precision: shaped for sklearn."""
    rng = np.random.default_rng(seed)
    means = x[rng.choice(len(x), size=k, replace=False)] + 0.1
    d = x.shape[1]
    prec = np.linalg.inv(np.cov(x.T))
    shaped = {"full": np.repeat(prec[None], k, 0), "tied": prec,
              "diag": np.repeat(np.diag(prec)[None], k, 0),
              "spherical": np.full(k, np.diag(prec).mean())}[covariance_type]
    assert shaped.shape == em.COVARIANCE_TYPES[covariance_type].shape(k, d)
    return {"weights_init": np.full(k, 1.0 / k), "means_init": means, "precisions_init": shaped}


# ============================================================================ oracles
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_lower_bound_path_matches_sklearn_from_the_same_start(covariance_type):
    from sklearn.exceptions import ConvergenceWarning as SKConvergenceWarning
    from sklearn.mixture import GaussianMixture as SKGaussianMixture

    x = blobs()
    init = start_point(x, covariance_type)
    sk = SKGaussianMixture(3, covariance_type=covariance_type, tol=0.0, max_iter=15, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SKConvergenceWarning)
        sk.fit(x)
    with pytest.warns(ConvergenceWarning):
        gm = GaussianMixture(3, covariance_type=covariance_type, tol=0.0, max_iter=15,
                             **init).fit(x)
    assert len(gm.lower_bounds_) == len(sk.lower_bounds_) == 15
    np.testing.assert_allclose(gm.lower_bounds_, sk.lower_bounds_, rtol=0, atol=1e-8)
    assert gm.lower_bound_ == pytest.approx(sk.lower_bound_, abs=1e-8)
    np.testing.assert_allclose(gm.weights_.numpy(), sk.weights_, atol=1e-8)
    np.testing.assert_allclose(gm.means_.numpy(), sk.means_, atol=1e-8)
    np.testing.assert_allclose(gm.covariances_.numpy(), sk.covariances_, atol=1e-8)
    np.testing.assert_allclose(gm.precisions_cholesky_.numpy(), sk.precisions_cholesky_,
                               atol=1e-6)
    np.testing.assert_allclose(gm.score_samples(x), sk.score_samples(x), atol=1e-8)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_score_samples_matches_a_scipy_mixture(covariance_type):
    x = blobs()
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(x)
    covs = full_covariances(gm)
    w, mu = gm.weights_.numpy(), gm.means_.numpy()
    expected = logsumexp(np.stack([np.log(w[k]) + multivariate_normal(mu[k], covs[k]).logpdf(x)
                                   for k in range(3)], 1), axis=1)
    np.testing.assert_allclose(gm.score_samples(x), expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gm.covariances_.numpy(),
                               em.COVARIANCE_TYPES[covariance_type].covariances(
                                   gm.precisions_cholesky_).numpy(), rtol=1e-8, atol=1e-10)


def test_recovers_known_parameters_on_well_separated_data():
    gen = torch.Generator().manual_seed(3)
    means = torch.tensor([[0.0, 0.0], [6.0, 1.0], [-3.0, 7.0]], dtype=torch.float64)
    tril = torch.tensor([[[1.0, 0.0], [0.5, 0.4]], [[0.3, 0.0], [0.0, 0.8]],
                         [[0.7, 0.0], [-0.4, 0.5]]], dtype=torch.float64)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    z = torch.multinomial(weights, 6000, replacement=True, generator=gen)
    eps = torch.randn(6000, 2, generator=gen, dtype=torch.float64)
    x = means[z] + (tril[z] @ eps.unsqueeze(-1)).squeeze(-1)
    gm = GaussianMixture(3, random_state=0).fit(x)
    order = torch.cdist(means, gm.means_).argmin(1)             # fitted component of each truth
    assert sorted(order.tolist()) == [0, 1, 2]
    torch.testing.assert_close(gm.means_[order], means, atol=0.06, rtol=0)
    torch.testing.assert_close(gm.weights_[order], weights, atol=0.03, rtol=0)
    torch.testing.assert_close(gm.covariances_[order], tril @ tril.mT, atol=0.08, rtol=0)
    assert (gm.predict(x) == order[z]).float().mean() > 0.995


# ============================================================================ invariants
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_invariants(covariance_type):
    from sklearn.mixture import GaussianMixture as SKGaussianMixture

    x = blobs()
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(x)
    proba = gm.predict_proba(x)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-12)
    assert (gm.predict(x) == proba.argmax(1)).all()
    assert gm.score(x) == pytest.approx(gm.score_samples(x).mean(), abs=1e-12)
    # EM never lowers the likelihood
    assert all(b >= a - 1e-10 for a, b in zip(gm.lower_bounds_, gm.lower_bounds_[1:]))
    assert gm.score(x) >= gm.lower_bound_ - 1e-12
    # bic / aic: scikit-learn's formulas on the same parameters
    sk = SKGaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(x)
    sk.weights_, sk.means_ = gm.weights_.numpy(), gm.means_.numpy()
    sk.covariances_, sk.precisions_cholesky_ = (gm.covariances_.numpy(),
                                                gm.precisions_cholesky_.numpy())
    assert gm.bic(x) == pytest.approx(sk.bic(x), rel=1e-12)
    assert gm.aic(x) == pytest.approx(sk.aic(x), rel=1e-12)
    p = {"full": 3 * 6, "tied": 6, "diag": 3 * 3, "spherical": 3}[covariance_type] + 9 + 2
    assert gm.aic(x) == pytest.approx(-2 * gm.score(x) * len(x) + 2 * p, rel=1e-12)
    assert gm.bic(x) == pytest.approx(-2 * gm.score(x) * len(x) + p * math.log(len(x)), rel=1e-12)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_sample_is_grouped_with_counts_near_the_weights(covariance_type):
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(blobs())
    n = 20_000
    xs, ys = gm.sample(n, generator=torch.Generator().manual_seed(0))
    assert xs.shape == (n, 3) and ys.shape == (n,)
    assert bool((ys[1:] >= ys[:-1]).all()), "labels must be grouped by component"
    counts = torch.bincount(ys, minlength=3).double()
    w = gm.weights_
    assert bool(((counts - n * w).abs() <= 5 * (n * w * (1 - w)).sqrt()).all())
    for k in range(3):  # each group has its component's mean and covariance
        grp = xs[ys == k]
        torch.testing.assert_close(grp.mean(0), gm.means_[k], atol=0.1, rtol=0)
        torch.testing.assert_close(torch.cov(grp.T), torch.from_numpy(full_covariances(gm)[k]),
                                   atol=0.1, rtol=0.1)


def test_numpy_in_numpy_out_tensor_in_tensor_out():
    x = blobs()
    gm = GaussianMixture(3, random_state=0).fit(torch.from_numpy(x))
    assert isinstance(gm.score_samples(x), np.ndarray)
    assert isinstance(gm.predict_proba(x), np.ndarray)
    t = torch.from_numpy(x).float()
    out = gm.score_samples(t)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    torch.testing.assert_close(gm.log_prob(t), out)
    assert isinstance(gm.fit_predict(x), np.ndarray)


def test_n_init_keeps_the_best_lower_bound():
    x = blobs(seed=5)
    one = GaussianMixture(3, init_params="random_from_data", random_state=7).fit(x)
    many = GaussianMixture(3, init_params="random_from_data", n_init=6, random_state=7).fit(x)
    # the first of the six starts is the start of the single run (same random_state)
    assert many.lower_bound_ >= one.lower_bound_ - 1e-12


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_every_initialisation_reaches_a_finite_fit(init_params):
    x = blobs()
    gm = GaussianMixture(3, init_params=init_params, random_state=0, max_iter=500).fit(x)
    assert gm.converged_ and math.isfinite(gm.lower_bound_)
    again = GaussianMixture(3, init_params=init_params, random_state=0, max_iter=500).fit(x)
    assert again.lower_bounds_ == gm.lower_bounds_, "random_state must make fits repeatable"


def test_float32_agrees_with_float64():
    x = blobs(n=3000)
    init = start_point(x, "full")
    g64 = GaussianMixture(3, max_iter=20, tol=0.0, **init)
    g32 = GaussianMixture(3, max_iter=20, tol=0.0, dtype=torch.float32, **init)
    with pytest.warns(ConvergenceWarning):
        g64.fit(x)
    with pytest.warns(ConvergenceWarning):
        g32.fit(x)
    assert g32.means_.dtype == torch.float32
    np.testing.assert_allclose(g32.lower_bounds_, g64.lower_bounds_, rtol=1e-5)
    assert g32.score(x) == pytest.approx(g64.score(x), rel=1e-5)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_sufficient_statistics_add_up_over_shards(covariance_type):
    x = torch.from_numpy(blobs())
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0, max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(x)
    p = gm.params_
    whole = em.e_step(x, p)
    pooled = em.e_step(x[:120], p) + em.e_step(x[120:], p, block_size=7)
    assert pooled.n == whole.n
    torch.testing.assert_close(pooled.log_likelihood, whole.log_likelihood)
    a = em.m_step(whole, covariance_type, 1e-6)
    b = em.m_step(pooled, covariance_type, 1e-6)
    for name in ("weights", "means", "covariances", "precisions_cholesky"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-10, atol=1e-12)
    assert float(whole.log_likelihood) / len(x) == pytest.approx(gm.score(x), abs=1e-12)


def test_state_dict_round_trip_loads_with_weights_only(tmp_path):
    x = blobs()
    gm = GaussianMixture(3, covariance_type="diag", random_state=0).fit(x)
    torch.save(gm.state_dict(), tmp_path / "gm.pt")
    state = torch.load(tmp_path / "gm.pt", weights_only=True)
    back = GaussianMixture(3, covariance_type="diag").load_state_dict(state)
    np.testing.assert_array_equal(back.score_samples(x), gm.score_samples(x))
    assert back.lower_bounds_ == gm.lower_bounds_ and back.n_iter_ == gm.n_iter_
    with pytest.raises(ConfigError, match="do not fit n_components=4"):
        GaussianMixture(4, covariance_type="diag").load_state_dict(state)


def test_density_view_speaks_the_evaluation_protocol():
    x = torch.from_numpy(blobs()).float()
    gm = GaussianMixture(3, random_state=0).fit(x)
    dens = gm.as_density()
    assert isinstance(dens, MixtureDensity)
    s = dens.sample(500, generator=torch.Generator().manual_seed(1))
    assert s.shape == (500, 3) and s.dtype == torch.float32
    torch.testing.assert_close(dens.log_prob(x), gm.log_prob(x))
    img = GaussianMixture(2, covariance_type="diag", random_state=0).fit(
        torch.rand(50, 4, dtype=torch.float64))
    view = img.as_density(event_shape=(1, 2, 2))
    assert view.sample(3).shape == (3, 1, 2, 2)
    assert view.log_prob(torch.rand(5, 1, 2, 2)).shape == (5,)


# ============================================================================ errors, warnings
def test_methods_before_fit_raise_not_fitted():
    gm = GaussianMixture(2)
    for call in (lambda: gm.score_samples(blobs()), lambda: gm.predict(blobs()),
                 lambda: gm.sample(3), lambda: gm.as_density()):
        with pytest.raises(NotFittedError, match="not fitted yet: call fit"):
            call()


def test_parameter_errors_name_the_argument_and_the_value():
    with pytest.raises(ConfigError, match=r"The 'n_components' parameter of GaussianMixture "
                                          r"must be an int in the range \[1, inf\)\. Got 0 instead"):
        GaussianMixture(n_components=0)
    with pytest.raises(ConfigError, match=r"'covariance_type' .* among \{'full', 'tied', 'diag', "
                                          r"'spherical'\}\. Got 'fulll' instead\. Did you mean 'full'"):
        GaussianMixture(2, covariance_type="fulll")
    with pytest.raises(ConfigError, match=r"'init_params' .* Got 'kmean' instead"):
        GaussianMixture(2, init_params="kmean")
    with pytest.raises(ConfigError, match=r"'reg_covar' .* range \[0, inf\)\. Got -1"):
        GaussianMixture(2, reg_covar=-1)
    with pytest.raises(ConfigError, match=r"'n_init' .* Got 0 instead"):
        GaussianMixture(2, n_init=0)
    with pytest.raises(ConfigError, match=r"'dtype' .* Got torch.float16 instead"):
        GaussianMixture(2, dtype=torch.float16)


def test_initial_value_errors():
    x = blobs()
    with pytest.raises(ConfigError, match=r"weights_init must sum to 1; got sum 0.9"):
        GaussianMixture(3, weights_init=[0.3, 0.3, 0.3]).fit(x)
    with pytest.raises(ConfigError, match=r"means_init must have shape \(3, 3\) .* got \(2, 3\)"):
        GaussianMixture(3, means_init=np.zeros((2, 3))).fit(x)
    with pytest.raises(ConfigError, match=r"precisions_init must have shape \(3,\) .*'spherical'; got \(3, 3\)"):
        GaussianMixture(3, covariance_type="spherical", precisions_init=np.ones((3, 3))).fit(x)
    with pytest.raises(ConfigError, match="must be positive definite"):
        GaussianMixture(3, precisions_init=np.repeat(-np.eye(3)[None], 3, 0)).fit(x)


def test_data_errors():
    with pytest.raises(DataError, match=r"must be 2-D.*got shape \(10,\).*reshape\(-1, 1\)"):
        GaussianMixture(2).fit(np.arange(10.0))
    bad = blobs()
    bad[4, 1] = np.nan
    with pytest.raises(DataError, match="NaN or infinite values in 1 row"):
        GaussianMixture(2).fit(bad)
    with pytest.raises(DataError, match="n_samples >= max\\(2, n_components\\); got n_samples=3"):
        GaussianMixture(5).fit(blobs()[:3])
    gm = GaussianMixture(2, random_state=0).fit(blobs())
    with pytest.raises(DataError, match="X has 2 features, but this GaussianMixture was fitted "
                                        "with 3"):
        gm.score(np.zeros((4, 2)))


def test_collapsed_component_raises_with_advice():
    x = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0]]), 20, axis=0)   # two distinct points
    with pytest.raises(CovarianceError, match="increase|larger reg_covar"):
        GaussianMixture(2, reg_covar=0.0, random_state=0).fit(x)
    # with regularisation the same data fit
    assert GaussianMixture(2, random_state=0).fit(x).converged_


def test_non_convergence_warns_at_the_callers_line():
    with pytest.warns(ConvergenceWarning, match="Increase max_iter") as rec:
        GaussianMixture(3, max_iter=1, random_state=0).fit(blobs())
    assert rec[0].filename == __file__
    with pytest.warns(ConvergenceWarning) as rec:
        GaussianMixture(3, max_iter=1, random_state=0).fit_predict(blobs())
    assert rec[0].filename == __file__


# ============================================================================ the recipe
def _train_and_eval(tmp_path, data, *extra):
    from probgen.cli import main

    out = tmp_path / f"run-{data}"
    assert main(["train", "gmm", "--data", data, "--out", str(out), "--device", "cpu",
                 *extra]) == 0
    assert main(["eval", str(out), "--device", "cpu"]) == 0
    return out, json.loads((out / "eval.json").read_text())


@pytest.mark.parametrize("data,seed", [
    ("grid25", 0), ("ring8", 0),
    pytest.param("grid25", 1, marks=pytest.mark.slow), pytest.param("grid25", 2, marks=pytest.mark.slow),
    pytest.param("ring8", 1, marks=pytest.mark.slow),
])
def test_recipe_reaches_the_true_log_likelihood(tmp_path, data, seed):
    out, ev = _train_and_eval(tmp_path, data, "--seed", str(seed))
    m = ev["metrics"]
    assert abs(m["log_likelihood"]["value"] - m["true_log_likelihood"]["value"]) < 0.05
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["components"] == {"grid25": 25, "ring8": 8}[data]
    assert (out / "figures" / "density.png").exists()
    assert (out / "figures" / "lower_bound.png").exists()
    logged = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
              if "lower_bound" in r]
    assert len(logged) >= 1
    assert m["modes_covered"]["value"] == cfg["components"]


def test_recipe_on_1d_and_image_data(tmp_path):
    from probgen.cli import main

    out, ev = _train_and_eval(tmp_path, "bimodal1d", "--limit", "2000")
    assert abs(ev["metrics"]["log_likelihood"]["value"]
               - ev["metrics"]["true_log_likelihood"]["value"]) < 0.05
    assert (out / "figures" / "density.png").exists()
    # (--resume of a finished fit reloads it instead of refitting: tests/test_recipes_contract.py)
    img = tmp_path / "img"
    assert main(["train", "gmm", "--data", "digits", "--out", str(img), "--device", "cpu",
                 "--components", "4", "--limit", "300"]) == 0
    cfg = json.loads((img / "config.json").read_text())
    # images are dequantized by default, where the noise bounds each pixel's density
    assert cfg["covariance_type"] == "diag" and cfg["reg_covar"] == 1e-5
    assert cfg["data_options"]["dequantize"] == "auto"
    assert (img / "figures" / "means.png").exists()
    assert main(["sample", str(img), "-n", "8", "--device", "cpu"]) == 0
    assert torch.load(img / "samples.pt", weights_only=True).shape == (8, 1, 8, 8)


def test_recipe_rejects_bad_options(tmp_path, capsys):
    from probgen.cli import main

    rc = main(["train", "gmm", "--data", "ring8", "--out", str(tmp_path / "r"), "--device",
               "cpu", "--components", "0"])
    assert rc == 2
    assert "--components must be a positive integer; got 0" in capsys.readouterr().err
