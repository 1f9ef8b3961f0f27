"""The bounds of probgen.inference.bounds against the truth on probabilistic PCA.

PPCA has closed forms for everything: log p(x) = log N(x; mu, W W^T + s^2 I), the posterior
p(z|x), and so KL(q(z|x) || p(z|x)) and the ELBO itself. The oracles here are scipy and
formulas written out in the test, not the code under test.
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from probgen.errors import ConfigError, DataError
from probgen.inference.bounds import DEFAULT_MAX_ELEMENTS, chunk_plan, elbo, iwae_bound
from probgen.models.ppca import PPCA

D, L = 8, 3




def _synthetic(n=3000, seed=0, noise=0.6):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(D, L, generator=g, dtype=torch.float64)
    mu = torch.randn(D, generator=g, dtype=torch.float64)
    z = torch.randn(n, L, generator=g, dtype=torch.float64)
    x = z @ w.T + mu + noise * torch.randn(n, D, generator=g, dtype=torch.float64)
    return x, w, mu, noise


def _rotation(seed=1):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(L, L, generator=g, dtype=torch.float64))
    return q


@pytest.fixture(scope="module")
def fitted():
    """A diagonal-guide PPCA fitted in closed form with a rotated W: q(z|x) != p(z|x)."""
    x, w, mu, noise = _synthetic()
    model = PPCA(D, L, guide="diagonal").double().fit(x, rotation=_rotation())
    return model, x, (w, mu, noise)


def test_closed_form_fit_recovers_the_truth(fitted):
    model, x, (w, mu, noise) = fitted
    # W is identified up to a rotation: compare W W^T, and the noise and mean
    assert model.noise_std.item() == pytest.approx(noise, rel=0.05)
    assert torch.allclose(model.mean, x.mean(0))
    ww = model.weight @ model.weight.T
    assert torch.linalg.norm(ww - w @ w.T) / torch.linalg.norm(w @ w.T) < 0.1


def test_log_prob_matches_scipy(fitted):
    model, x, _ = fitted
    cov = (model.weight @ model.weight.T + model.noise_std ** 2 * torch.eye(D, dtype=torch.float64))
    ref = stats.multivariate_normal(model.mean.detach().numpy(), cov.detach().numpy()).logpdf(x[:50].numpy())
    np.testing.assert_allclose(model.log_prob(x[:50]).detach().numpy(), ref, rtol=1e-10, atol=1e-9)


def test_closed_form_is_the_maximum_likelihood(fitted):
    model, x, _ = fitted
    best = model.log_prob(x).mean()
    with torch.no_grad():
        model_w = model.generative.weight.clone()
        model.generative.weight.mul_(1.05)
        worse = model.log_prob(x).mean()
        model.generative.weight.copy_(model_w)
    assert worse < best


def test_posterior_matches_bayes_rule_for_gaussians(fitted):
    """p(z|x) from the joint Gaussian of (z, x): mean S_zx S_xx^-1 (x - mu), cov I - S_zx S_xx^-1 S_xz."""
    model, x, _ = fitted
    w, s2 = model.weight.detach(), model.noise_std.detach() ** 2
    sxx = w @ w.T + s2 * torch.eye(D, dtype=torch.float64)
    szx = w.T
    post = model.posterior(x[:5])
    mean = (x[:5] - model.mean.detach()) @ torch.linalg.solve(sxx, szx.T)
    cov = torch.eye(L, dtype=torch.float64) - szx @ torch.linalg.solve(sxx, szx.T)
    assert torch.allclose(post.mean, mean, atol=1e-9)
    assert torch.allclose(post.covariance_matrix[0], cov, atol=1e-9)


def _analytic_elbo(model, x):
    """E_q[log p(x|z)] + E_q[log p(z)] + H[q], each in closed form for Gaussian q."""
    q = model.encoder_distribution(x)
    m, S = q.mean, torch.diag_embed(q.variance)  # (N, L), (N, L, L)
    w, mu, s2 = model.weight, model.mean, model.noise_std ** 2
    resid = x - m @ w.T - mu
    tr_wsw = torch.einsum("dl,nlk,dk->n", w, S, w)
    e_loglik = -0.5 * D * math.log(2 * math.pi * s2) - 0.5 * (resid.pow(2).sum(1) + tr_wsw) / s2
    e_logprior = -0.5 * L * math.log(2 * math.pi) - 0.5 * (m.pow(2).sum(1) + S.diagonal(dim1=1, dim2=2).sum(1))
    entropy = 0.5 * L * math.log(2 * math.pi * math.e) + 0.5 * torch.logdet(S)
    return e_loglik + e_logprior + entropy


def test_elbo_gap_is_the_kl_to_the_exact_posterior(fitted):
    model, x, _ = fitted
    xs = x[:200]
    with torch.no_grad():
        analytic = _analytic_elbo(model, xs)
        kl = model.kl_to_posterior(xs)
        lp = model.log_prob(xs)
    assert (kl > 1e-3).all(), "the rotated W should make the mean-field guide inexact"
    torch.testing.assert_close(analytic - lp, -kl, atol=1e-8, rtol=1e-8)
    # the Monte Carlo ELBO of bounds.elbo agrees with the closed form within its standard error
    rec = elbo(model, xs, num_samples=200)
    diff = (rec.total - analytic).mean()
    se = rec.mc_stderr.pow(2).mean().sqrt() / math.sqrt(xs.shape[0])
    assert abs(float(diff)) < 4 * float(se) + 1e-6


def test_bounds_are_ordered_and_iwae_increases_with_k(fitted):
    model, x, _ = fitted
    xs = x[:300]
    with torch.no_grad():
        lp = model.log_prob(xs).mean()
        e = elbo(model, xs, num_samples=50).total.mean()
        iw = {k: iwae_bound(model, xs, k).total.mean() for k in (1, 5, 50, 500)}
    # E[IWAE_k] increases with k (Burda et al. Thm 1); averages over 300 examples
    assert e < iw[5] < iw[50] < iw[500] <= lp + 0.01
    assert abs(float(iw[1] - e)) < 0.1  # IWAE_1 is a one-sample ELBO


def test_iwae_5000_is_within_005_nats_of_the_exact_log_likelihood(fitted):
    model, x, _ = fitted
    xs = x[:100]
    with torch.no_grad():
        rec = iwae_bound(model, xs, 5000, chunk_size=700)  # chunks that do not divide k
        lp = model.log_prob(xs)
    assert abs(float((rec.total - lp).mean())) < 0.05
    assert (rec.total - lp < 4 * rec.mc_stderr + 1e-3).all()


def test_iwae_chunking_does_not_change_the_estimate(fitted):
    model, x, _ = fitted
    xs = x[:20]
    torch.manual_seed(3)
    a = iwae_bound(model, xs, 300, chunk_size=300).total
    torch.manual_seed(3)
    b = iwae_bound(model, xs, 300, chunk_size=300).total
    torch.manual_seed(3)
    c = iwae_bound(model, xs, 300, chunk_size=7).total
    assert torch.equal(a, b)
    # different chunking draws the same samples in another order of calls: same distribution
    assert abs(float((a - c).mean())) < 0.05


class _Recorder:
    """Delegates to a model and records the (samples, examples) of every log_likelihood call."""

    def __init__(self, model):
        self.model = model
        self.calls = []

    def encoder_distribution(self, x):
        return self.model.encoder_distribution(x)

    def prior(self, x):
        return self.model.prior(x)

    def prior_log_prob(self, z):
        return self.model.prior_log_prob(z)

    def log_likelihood(self, x, z):
        self.calls.append(tuple(z.shape[:2]))
        return self.model.log_likelihood(x, z)


@pytest.mark.parametrize("max_elements", [D, 7 * D, 60 * D, 10**6])
def test_every_chunk_holds_at_most_max_elements(fitted, max_elements):
    """Samples x examples x data values per chunk stay under the bound, for any N and k, and
    every (example, sample) pair is scored exactly once."""
    model, x, _ = fitted
    xs = x[:23]
    for fn in (lambda m: iwae_bound(m, xs, 37, max_elements=max_elements),
               lambda m: elbo(m, xs, num_samples=37, max_elements=max_elements)):
        rec = _Recorder(model)
        fn(rec)
        assert all(s * b * D <= max_elements for s, b in rec.calls)
        assert sum(s * b for s, b in rec.calls) == 37 * 23


def test_chunk_size_follows_the_bound():
    # whole data set in one block, samples filling the rest of the bound
    assert chunk_plan(10, 784, 784 * 100) == (10, 10)
    # more examples than fit: blocks of as many examples as fit, one sample at a time
    assert chunk_plan(100_000, 784, DEFAULT_MAX_ELEMENTS) == (DEFAULT_MAX_ELEMENTS // 784, 1)
    # a fixed chunk of samples takes the examples that fit beside it
    assert chunk_plan(10_000, 784, 784 * 1000, chunk_size=100) == (10, 100)
    # one example larger than the bound still makes a chunk of one
    assert chunk_plan(5, 10**6, 1000) == (1, 1)
    blocks = [chunk_plan(10_000, 784, m) for m in (784, 784 * 10, 784 * 1000, 784 * 10**5)]
    assert [b * s for b, s in blocks] == [1, 10, 1000, 10**5]


def test_blocked_bounds_equal_the_unchunked_ones_with_the_exact_posterior():
    """With q(z|x) = p(z|x) every importance weight is p(x): the bounds are exact for every
    sample, so any error in putting blocks and chunks back together would show."""
    x, *_ = _synthetic(n=400)
    model = PPCA(D, L, guide="full").double().fit(x, rotation=_rotation())
    xs = x[:57]
    with torch.no_grad():
        exact = model.log_prob(xs)
        whole = iwae_bound(model, xs, 40, max_elements=10**9)
        tiny = iwae_bound(model, xs, 40, max_elements=3 * D)
        e_tiny = elbo(model, xs, num_samples=5, analytic_kl=False, max_elements=2 * D)
    torch.testing.assert_close(whole.total, exact)
    torch.testing.assert_close(tiny.total, whole.total)
    torch.testing.assert_close(e_tiny.total, exact)


def test_blocked_iwae_has_the_same_distribution(fitted):
    model, x, _ = fitted
    xs = x[:200]
    torch.manual_seed(5)
    a = iwae_bound(model, xs, 200).total
    b = iwae_bound(model, xs, 200, max_elements=5 * D).total
    # same estimator, other random draws: the mean over 200 examples agrees closely
    assert abs(float((a - b).mean())) < 0.02


def test_full_guide_fit_is_exact():
    x, *_ = _synthetic(n=1000)
    model = PPCA(D, L, guide="full").double().fit(x, rotation=_rotation())
    xs = x[:50]
    with torch.no_grad():
        assert model.kl_to_posterior(xs).abs().max() < 1e-8
        torch.testing.assert_close(iwae_bound(model, xs, 10).total, model.log_prob(xs))


def test_svi_fit_approaches_the_maximum_likelihood():
    from probgen.inference.svi import fit_svi

    x, *_ = _synthetic(n=500, noise=0.5)
    x = x.float()
    ml = PPCA(D, L).fit(x).log_prob(x).mean()
    model = PPCA(D, L)
    with torch.no_grad():
        model.generative.mean.copy_(x.mean(0))
    res = fit_svi(model.model, model.guide, x, steps=400, lr=0.05, num_particles=4)
    with torch.no_grad():
        got = model.log_prob(x).mean()
        kl = model.kl_to_posterior(x[:100]).mean()
    assert res.steps == 400 and not res.skipped
    assert got > ml - 0.1
    assert kl < 0.3


def test_errors_name_the_argument():
    with pytest.raises(ConfigError, match="latent_dim must be an integer in"):
        PPCA(4, 4)
    with pytest.raises(ConfigError, match="guide must be one of"):
        PPCA(4, 2, guide="lowrank")
    with pytest.raises(DataError, match=r"x must have shape \(N, 4\)"):
        PPCA(4, 2).log_prob(torch.zeros(3, 5))
    with pytest.raises(ConfigError, match="k .importance samples. must be a positive integer"):
        iwae_bound(PPCA(4, 2), torch.zeros(3, 4), 0)
    with pytest.raises(ConfigError, match="max_elements .data values held at once. must be a positive integer"):
        iwae_bound(PPCA(4, 2), torch.zeros(3, 4), 5, max_elements=0)
    with pytest.raises(ConfigError, match="chunk_size .samples per chunk. must be a positive integer"):
        iwae_bound(PPCA(4, 2), torch.zeros(3, 4), 5, chunk_size=-1)


def test_float32_log_prob_is_exact_on_features_of_very_different_scales():
    """sklearn's wine features span 0.1 to 1,000: a float32 PPCA fitted there scored log p(x)
    up to 3 nats per example away from the same parameters in float64 (the low-rank algebra
    of the marginal in float32); log_prob now runs in float64."""
    from sklearn.datasets import load_wine

    x = torch.tensor(load_wine().data, dtype=torch.float32)
    model = PPCA(13, 10).fit(x)
    cov = (model.weight.double() @ model.weight.double().T
           + model.noise_std.double() ** 2 * torch.eye(13, dtype=torch.float64))
    ref = stats.multivariate_normal(model.mean.double().detach().numpy(),
                                    cov.detach().numpy()).logpdf(x.double().numpy())
    got = model.log_prob(x)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.detach().double().numpy(), ref, rtol=0, atol=1e-3)


def test_ppca_by_svi_on_dequantized_images_logs_its_elbo_on_the_validation_scale(tmp_path):
    """On sklearn's digits (17 grey levels, dequantized) the validation log p(x) is a bound on
    log P of the discrete values; the logged training ELBO is the same kind of number, below
    the closed form's training log-likelihood (it logged +11.5 beside a validation -168.6, the
    density of the noisy values without the bin width). A default SVI fit on these 1,258
    images runs the default 3,000 steps and comes near the closed form."""
    import json

    import probgen

    common = dict(device="cpu", progress=False, figures=False, latent_dim=5)
    probgen.train("ppca", "digits", tmp_path / "cf", **common)
    probgen.train("ppca", "digits", tmp_path / "svi", fit="svi", **common)
    cf = json.loads((tmp_path / "cf" / "metrics.jsonl").read_text().splitlines()[-1])
    lines = [json.loads(s) for s in (tmp_path / "svi" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] >= 3000
    last = lines[-1]
    assert last["train_elbo"] <= cf["train_log_likelihood"] + 1.0
    assert abs(last["train_elbo"] - last["val_log_likelihood"]) < 5.0
    assert last["val_log_likelihood"] == pytest.approx(cf["val_log_likelihood"], abs=1.0)
