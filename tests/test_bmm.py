"""BernoulliMixture against an EM written in numpy/scipy, its invariants, errors and the recipe."""

import json
import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.special import logsumexp
from scipy.stats import bernoulli

from probgen.cli import load_run_data
from probgen.errors import ConfigError, DataError, NotFittedError
from probgen.inference.em import ConvergenceWarning, MixtureParams, e_step
from probgen.models.bmm import BernoulliMixture


def planted(n=2000, d=30, k=3, seed=0):
    """0/1 data from a known mixture: probabilities (k, d), weights (k,), labels (n,)."""
    rng = np.random.default_rng(seed)
    probs = np.where(rng.random((k, d)) < 0.5, 0.1, 0.85) + rng.uniform(-0.05, 0.05, (k, d))
    weights = np.array([0.5, 0.3, 0.2])[:k] / np.array([0.5, 0.3, 0.2])[:k].sum()
    z = rng.choice(k, size=n, p=weights)
    x = (rng.random((n, d)) < probs[z]).astype(np.float64)
    return x, probs, weights, z


def log_pmf(x, weights, probs):
    """``log sum_k w_k prod_d Bernoulli(x_d | mu_kd)`` per row, with scipy."""
    comp = bernoulli.logpmf(x[:, None, :], probs[None]).sum(-1)      # (N, K)
    return logsumexp(comp + np.log(weights), axis=1)


def reference_em(x, weights, probs, alpha, n_iter):
    """MAP-EM in plain numpy: Beta(1 + alpha, 1 + alpha) prior on each probability.

    Returns the final weights and probabilities and the penalised objective per point at
    the start of each iteration.
    """
    n = x.shape[0]
    bounds = []
    for _ in range(n_iter):
        comp = x @ np.log(probs).T + (1.0 - x) @ np.log1p(-probs).T + np.log(weights)
        ll = logsumexp(comp, axis=1)
        resp = np.exp(comp - ll[:, None])
        bounds.append((ll.sum() + alpha * (np.log(probs) + np.log1p(-probs)).sum()) / n)
        nk = resp.sum(0)
        probs = (resp.T @ x + alpha) / (nk[:, None] + 2.0 * alpha)
        weights = nk / n
    return weights, probs, bounds


# ============================================================================ the fit
@pytest.mark.parametrize("alpha", [0.0, 0.01, 1.0])
def test_em_equals_a_numpy_reference_from_the_same_start(alpha):
    x, _, _, _ = planted(600, 20, seed=1)
    rng = np.random.default_rng(5)
    w0 = np.array([0.2, 0.3, 0.5])
    mu0 = rng.uniform(0.2, 0.8, (3, 20))
    bm = BernoulliMixture(3, alpha=alpha, tol=0.0, max_iter=25, weights_init=w0, means_init=mu0)
    with pytest.warns(ConvergenceWarning):
        bm.fit(x)
    w, mu, bounds = reference_em(x, w0, mu0, alpha, 25)
    np.testing.assert_allclose(bm.lower_bounds_, bounds, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bm.weights_.numpy(), w, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bm.means_.numpy(), mu, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("alpha,init", [(0.0, "random"), (0.01, "random"), (1.0, "kmeans"),
                                        (0.01, "random_from_data")])
def test_em_bound_never_decreases(alpha, init):
    x, _, _, _ = planted(1500, 40, seed=2)
    for seed in range(3):
        bm = BernoulliMixture(5, alpha=alpha, init_params=init, tol=0.0, max_iter=60,
                              random_state=seed)
        with pytest.warns(ConvergenceWarning):                  # tol=0: all 60 iterations
            bm.fit(x)
        lb = np.array(bm.lower_bounds_)
        assert len(lb) == 60
        # the penalised objective (MAP-EM's) never decreases, up to rounding
        assert np.diff(lb).min() >= -1e-12 * np.abs(lb).max()
        # and it is log p(X) + alpha * sum log(mu (1 - mu)), per point, at the start of the
        # last iteration; after that iteration's M-step it is at least as large
        mu, w = bm.means_.numpy(), bm.weights_.numpy()
        final = (log_pmf(x, w, mu).sum()
                 + alpha * (np.log(mu) + np.log1p(-mu)).sum()) / len(x)
        assert final >= lb[-1] - 1e-12 * abs(lb[-1])


def test_plain_likelihood_is_monotone_without_smoothing():
    # with alpha = 0 the bound is the log-likelihood itself: score after each step grows
    x, _, _, _ = planted(800, 25, seed=3)
    bm = BernoulliMixture(4, alpha=0.0, init_params="random", tol=0.0, max_iter=30,
                          random_state=0)
    with pytest.warns(ConvergenceWarning):
        bm.fit(x)
    scores = []
    for it in range(1, 31):
        b = BernoulliMixture(4, alpha=0.0, init_params="random", tol=0.0, max_iter=it,
                             random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            scores.append(b.fit(x).score(x))
    assert np.diff(scores).min() >= -1e-12 * abs(scores[-1])
    np.testing.assert_allclose(scores[:-1], bm.lower_bounds_[1:], rtol=1e-12)


def test_log_prob_equals_scipy():
    x, _, _, _ = planted(500, 20, seed=4)
    bm = BernoulliMixture(3, random_state=0).fit(x)
    w, mu = bm.weights_.numpy(), bm.means_.numpy()
    ref = log_pmf(x, w, mu)
    np.testing.assert_allclose(bm.score_samples(x), ref, rtol=1e-12)
    assert bm.score(x) == pytest.approx(ref.mean(), rel=1e-12)
    # the protocol view on image-shaped input, and the probabilities sum to one
    dens = bm.as_density(event_shape=(1, 4, 5))
    lp = dens.log_prob(torch.from_numpy(x[:50]).reshape(50, 1, 4, 5))
    np.testing.assert_allclose(lp.numpy(), ref[:50], rtol=1e-12)
    small = BernoulliMixture(2, random_state=0).fit(x[:, :8])
    grid = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(float)   # all 2**8 images
    assert np.exp(small.score_samples(grid)).sum() == pytest.approx(1.0, abs=1e-12)
    # posterior: softmax of the joint, rows summing to one
    comp = bernoulli.logpmf(x[:, None, :], mu[None]).sum(-1) + np.log(w)
    np.testing.assert_allclose(bm.predict_proba(x), np.exp(comp - ref[:, None]), atol=1e-12)
    np.testing.assert_array_equal(bm.predict(x), comp.argmax(1))


def test_recovers_planted_components():
    x, probs, weights, z = planted(3000, 30, seed=6)
    bm = BernoulliMixture(3, alpha=0.01, random_state=0, n_init=2).fit(x)
    assert bm.converged_
    cost = np.abs(bm.means_.numpy()[:, None, :] - probs[None]).mean(-1)
    rows, cols = linear_sum_assignment(cost)
    assert np.abs(bm.means_.numpy()[rows] - probs[cols]).max() < 0.06
    np.testing.assert_allclose(bm.weights_.numpy()[rows], weights[cols], atol=0.03)
    relabel = dict(zip(rows, cols))
    assert np.mean([relabel[p] == t for p, t in zip(bm.fit_predict(x), z)]) > 0.99


def test_samples_have_the_mixtures_frequencies():
    d = 12
    rng = np.random.default_rng(7)
    mu = rng.uniform(0.05, 0.95, (3, d))
    w = np.array([0.6, 0.3, 0.1])
    bm = BernoulliMixture(3).load_state_dict({
        "weights": torch.tensor(w), "means": torch.tensor(mu),
        "lower_bounds": torch.tensor([0.0]), "converged": torch.tensor(True),
        "n_iter": torch.tensor(1)})
    n = 40000
    xs, y = bm.sample(n, generator=torch.Generator().manual_seed(0))
    xs, y = xs.numpy(), y.numpy()
    assert set(np.unique(xs)) <= {0.0, 1.0}
    assert (np.diff(y) >= 0).all()                            # grouped by component
    freq = np.bincount(y, minlength=3) / n
    assert np.abs(freq - w).max() < 4 * np.sqrt(0.25 / n)
    marg = xs.mean(0)
    assert np.abs(marg - w @ mu).max() < 4 * np.sqrt(0.25 / n)
    for k in range(3):
        nk = (y == k).sum()
        assert np.abs(xs[y == k].mean(0) - mu[k]).max() < 4.5 * np.sqrt(0.25 / nk)
    draws = bm.as_density(event_shape=(3, 4)).sample(100)
    assert draws.shape == (100, 3, 4) and draws.dtype == torch.float32


def test_bic_aic_and_n_init():
    x, _, _, _ = planted(400, 10, seed=8)
    bm = BernoulliMixture(3, random_state=0).fit(x)
    ll = log_pmf(x, bm.weights_.numpy(), bm.means_.numpy()).sum()
    p = 3 * 10 + 2
    assert bm.bic(x) == pytest.approx(-2 * ll + p * np.log(400), rel=1e-12)
    assert bm.aic(x) == pytest.approx(-2 * ll + 2 * p, rel=1e-12)
    best = BernoulliMixture(3, init_params="random", n_init=4, random_state=1).fit(x)
    singles = []
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        singles.append(BernoulliMixture(3, init_params="random", random_state=gen).fit(x)
                       .lower_bound_)
    assert best.lower_bound_ == pytest.approx(max(singles), rel=1e-12)


def test_sufficient_statistics_add_up_over_shards():
    x = torch.from_numpy(planted(300, 15, seed=9)[0])
    bm = BernoulliMixture(3, random_state=0).fit(x)
    p = bm.params_
    whole = e_step(x, p)
    halves = e_step(x[:130], p) + e_step(x[130:], p)
    for name in ("nk", "sum_x", "log_likelihood"):
        torch.testing.assert_close(getattr(halves, name), getattr(whole, name),
                                   rtol=1e-12, atol=1e-10)
    assert halves.n == whole.n == 300
    assert isinstance(p, MixtureParams) and p.covariance_type == "bernoulli"


def test_state_dict_round_trip_float32_and_numpy_in_numpy_out(tmp_path):
    x, _, _, _ = planted(400, 10, seed=10)
    bm = BernoulliMixture(3, random_state=0).fit(x)
    torch.save(bm.state_dict(), tmp_path / "s.pt")
    back = BernoulliMixture(3).load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    np.testing.assert_array_equal(back.score_samples(x), bm.score_samples(x))
    assert back.lower_bounds_ == bm.lower_bounds_ and back.n_iter_ == bm.n_iter_
    assert isinstance(bm.predict(x), np.ndarray)
    assert isinstance(bm.predict(torch.from_numpy(x)), torch.Tensor)
    f32 = BernoulliMixture(3, random_state=0, dtype=torch.float32).fit(x.astype(np.float32))
    assert f32.score(x) == pytest.approx(bm.score(x), abs=1e-4)
    with pytest.raises(ConfigError, match="do not fit n_components=4"):
        BernoulliMixture(4).load_state_dict(bm.state_dict())


# ============================================================================ errors
def test_methods_before_fit_raise_not_fitted():
    bm = BernoulliMixture(2)
    for call in (lambda: bm.score(np.zeros((2, 3))), lambda: bm.predict(np.zeros((2, 3))),
                 lambda: bm.sample(3), bm.state_dict, lambda: bm.as_density()):
        with pytest.raises(NotFittedError, match="This BernoulliMixture instance is not fitted"):
            call()


def test_parameter_errors_name_the_argument_and_the_value():
    with pytest.raises(ConfigError, match=r"The 'n_components' parameter of BernoulliMixture "
                                          r"must be an int in the range \[1, inf\). Got 0"):
        BernoulliMixture(0)
    with pytest.raises(ConfigError, match="'n_components'.*Got 2.5"):
        BernoulliMixture(2.5)
    with pytest.raises(ConfigError, match="'alpha' parameter of BernoulliMixture.*Got -1"):
        BernoulliMixture(2, alpha=-1)
    with pytest.raises(ConfigError, match="'init_params'.*Did you mean 'kmeans'"):
        BernoulliMixture(2, init_params="kmean")
    with pytest.raises(ConfigError, match="'max_iter'"):
        BernoulliMixture(2, max_iter=-1)
    x, _, _, _ = planted(100, 5, seed=11)
    with pytest.raises(ConfigError, match=r"means_init must lie in \[0, 1\]"):
        BernoulliMixture(3, means_init=np.full((3, 5), 1.5)).fit(x)
    with pytest.raises(ConfigError, match=r"means_init must have shape \(3, 5\)"):
        BernoulliMixture(3, means_init=np.full((3, 4), 0.5)).fit(x)
    with pytest.raises(ConfigError, match="weights_init must sum to 1"):
        BernoulliMixture(3, weights_init=[0.5, 0.5, 0.5]).fit(x)


def test_non_binary_data_are_refused_with_advice():
    x, _, _, _ = planted(100, 5, seed=12)
    grey = x * 0.7
    with pytest.raises(DataError, match=r"binary data.*--binarize fixed"):
        BernoulliMixture(2).fit(grey)
    bm = BernoulliMixture(2, random_state=0).fit(x)
    with pytest.raises(DataError, match="other than 0 and 1 in 1 row"):
        bm.score_samples(np.vstack([x[:3], [[0, 1, 2, 0, 1]]]))
    with pytest.raises(DataError, match="4 features, but this BernoulliMixture was fitted with 5"):
        bm.score(x[:, :4])
    with pytest.raises(DataError, match="NaN|finite"):
        BernoulliMixture(2).fit(np.full((4, 3), np.nan))


def test_non_convergence_warns_at_the_callers_line():
    x, _, _, _ = planted(300, 10, seed=13)
    with pytest.warns(ConvergenceWarning, match="Increase max_iter") as rec:
        BernoulliMixture(3, init_params="random", max_iter=1, random_state=0).fit(x)
    assert rec[0].filename == __file__


# ============================================================================ the recipe
def _cli(*args) -> int:
    from probgen.cli import main

    return main([*args, "--device", "cpu"])


def test_recipe_trains_reloads_and_evaluates(tmp_path):
    out = tmp_path / "run"
    common = ["--data", "digits", "--limit", "400", "--components", "4"]
    assert _cli("train", "bmm", *common, "--out", str(out)) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data_options"]["binarize"] == "fixed" and cfg["components"] == 4
    for fig in ("means.png", "samples.png", "lower_bound.png"):
        assert (out / "figures" / fig).exists()
    # (a fit from the same seed, and --resume of it, give the same state: tests/test_recipes_contract.py)
    state = torch.load(out / "checkpoints" / "latest.pt", weights_only=True)["state"]
    # eval scores the exact log-likelihood of the 0/1 test images: check it with scipy
    assert _cli("eval", str(out), "--n-samples", "100", "--quiet") == 0
    m = json.loads((out / "eval.json").read_text())["metrics"]
    data = load_run_data(cfg)
    test = data.test.reshape(data.test.shape[0], -1).double().numpy()
    assert set(np.unique(test)) <= {0.0, 1.0}
    ref = log_pmf(test, state["weights"].numpy(), state["means"].numpy()).mean()
    assert m["log_likelihood"]["value"] == pytest.approx(ref, rel=1e-5)
    assert _cli("sample", str(out), "-n", "6") == 0
    s = torch.load(out / "samples.pt", weights_only=True)
    assert s.shape == (6, 1, 8, 8) and set(s.unique().tolist()) <= {0.0, 1.0}


def test_recipe_refuses_dynamic_binarisation_and_grey_values(tmp_path, capsys):
    base = ["train", "bmm", "--data", "digits", "--limit", "100", "--no-figures"]
    assert _cli(*base, "--out", str(tmp_path / "a"), "--binarize", "dynamic") == 2
    assert "cannot use --binarize dynamic" in capsys.readouterr().err
    assert _cli(*base, "--out", str(tmp_path / "b"), "--binarize", "none") != 0
    err = capsys.readouterr().err
    assert "binary data" in err and "--binarize fixed" in err
    assert _cli(*base, "--out", str(tmp_path / "c"), "--components", "0") == 2
    assert "--components must be a positive integer; got 0" in capsys.readouterr().err


def test_recipe_on_binary_user_arrays_with_the_default_k(tmp_path):
    x, _, _, _ = planted(600, 16, seed=14)
    path = tmp_path / "bits.npy"
    np.save(path, x.astype(np.float32))
    out = tmp_path / "u"
    assert _cli("train", "bmm", "--data", str(path), "--out", str(out), "--no-figures") == 0
    cfg = json.loads((out / "config.json").read_text())
    n_train = len(load_run_data(cfg).train)
    assert cfg["components"] == n_train // 30
    state = torch.load(out / "checkpoints" / "latest.pt", weights_only=True)["state"]
    assert state["means"].shape == (n_train // 30, 16)
    # 0/1 data pass through the fixed binarisation unchanged
    assert set(load_run_data(cfg).train.unique().tolist()) == {0.0, 1.0}


@pytest.mark.slow  # two gloo processes (about 20 s); the gmm twin in test_distributed runs by default
def test_em_across_two_processes_gives_the_one_process_fit(tmp_path):
    common = ["--data", "digits", "--limit", "400", "--components", "4", "--tol", "1e-8",
              "--no-figures"]
    assert _cli("train", "bmm", *common, "--nproc", "2", "--out", str(tmp_path / "two")) == 0
    assert _cli("train", "bmm", *common, "--out", str(tmp_path / "one")) == 0
    one, two = (torch.load(tmp_path / r / "checkpoints" / "latest.pt", weights_only=True)["state"]
                for r in ("one", "two"))
    for k in ("weights", "means", "lower_bounds"):
        torch.testing.assert_close(two[k], one[k], rtol=1e-9, atol=1e-12)


def test_fixed_and_dynamic_binarisation_share_the_test_images():
    # what makes bmm (fixed) and the Bernoulli VAE (dynamic) likelihoods comparable
    from probgen.data import load_dataset

    fixed = load_dataset("digits", binarize="fixed", seed=3)
    dynamic = load_dataset("digits", binarize="dynamic", seed=3)
    assert torch.equal(fixed.test, dynamic.test) and torch.equal(fixed.val, dynamic.val)
    assert set(fixed.test.unique().tolist()) == {0.0, 1.0}
    assert set(fixed.train.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(fixed.train, dynamic.train)        # dynamic keeps grey values
