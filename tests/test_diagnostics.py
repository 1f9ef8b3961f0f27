"""Pareto k-hat of importance weights, against known tails and against ArviZ."""

import math

import numpy as np
import pytest
import torch

from probgen.errors import ConfigError
from probgen.eval.diagnostics import KHAT_THRESHOLD, khat_summary, pareto_khat


def _lognormal_log_weights(sigma, s=1000, n=8, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(s, n)) * sigma)


def _pareto_log_weights(shape, s=1000, n=8, seed=0):
    """Weights with survival function w^-shape: a generalized Pareto tail with k = 1 / shape."""
    u = np.random.default_rng(seed).uniform(size=(s, n))
    return torch.from_numpy(-np.log(u) / shape)  # log of u^(-1/shape)


@pytest.mark.parametrize("use_arviz", [True, False])
def test_light_tails_are_trusted_and_heavy_tails_flagged(use_arviz):
    light = pareto_khat(_lognormal_log_weights(0.3), use_arviz=use_arviz)
    heavy = pareto_khat(_pareto_log_weights(1.0, s=20_000), use_arviz=use_arviz)
    assert light.shape == (8,) and heavy.shape == (8,)
    assert torch.all(light < 0.5)
    assert torch.all(heavy > KHAT_THRESHOLD)
    summary = khat_summary(torch.cat([light, heavy]))
    assert summary["fraction_khat_above_threshold"] == 0.5


def test_own_fit_matches_arviz_psislw():
    az = pytest.importorskip("arviz")
    if not hasattr(az, "psislw"):
        pytest.skip("this ArviZ has no psislw (1.x): nothing to compare with")
    for lw in (_lognormal_log_weights(1.0, s=400, n=6, seed=1), _pareto_log_weights(1.7, s=97, n=6, seed=2)):
        ours = pareto_khat(lw, use_arviz=False)
        _, theirs = az.psislw(lw.numpy().T.copy())
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-10)


def test_dim_and_shapes_and_too_few_weights():
    lw = _lognormal_log_weights(0.5, s=200, n=3)
    torch.testing.assert_close(pareto_khat(lw), pareto_khat(lw.T, dim=1))
    assert pareto_khat(lw[:, 0]).shape == (1,)
    k = pareto_khat(lw[:20])  # 20 weights: a tail of 4, too few to fit
    assert torch.isnan(k).all()
    assert khat_summary(k)["n_khat_unknown"] == 3 and khat_summary(k)["fraction_khat_above_threshold"] is None
    with pytest.raises(ConfigError, match="log_weights contain NaN"):
        pareto_khat(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ConfigError, match=r"shape \(S, N\).*got \(2, 2, 2\)"):
        pareto_khat(torch.zeros(2, 2, 2))


# ----------------------------------------------------------------------------- metrics and evaluate()
class _TinyLinearGaussian:
    """z ~ N(0, 1); x | z ~ N(w z, s^2 I_3): exact log p(x), samples, and a likelihood."""

    latent_dim = 1

    def __init__(self, s=0.5):
        self.w = torch.tensor([[1.0], [-0.5], [0.8]], dtype=torch.float64)
        self.s = s

    def prior_log_prob(self, z):
        return -0.5 * z.pow(2).sum(-1) - 0.5 * math.log(2 * math.pi)

    def decode(self, z):
        return z @ self.w.T

    def log_likelihood(self, x, z):
        r = (x - self.decode(z)) / self.s
        return -0.5 * r.pow(2).sum(-1) - 3 * (math.log(self.s) + 0.5 * math.log(2 * math.pi))

    def log_prob(self, x):
        cov = self.w @ self.w.T + self.s**2 * torch.eye(3, dtype=torch.float64)
        return torch.distributions.MultivariateNormal(torch.zeros(3, dtype=torch.float64), cov).log_prob(x)

    def sample(self, n):
        z = torch.randn(n, 1, dtype=torch.float64)
        return self.decode(z) + self.s * torch.randn(n, 3, dtype=torch.float64)


class _DecoderOnly:
    latent_dim = 1

    def __init__(self, inner):
        self.prior_log_prob, self.decode, self.sample = inner.prior_log_prob, inner.decode, inner.sample


def _dataset():
    from probgen.data.base import Dataset

    m = _TinyLinearGaussian()
    torch.manual_seed(3)
    return m, Dataset(name="tiny-lg", train=m.sample(500), val=m.sample(200), test=m.sample(50),
                      shape=(3,), kind="vector", value_range=(-4.0, 4.0))


@pytest.fixture
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_evaluate_wires_in_ais_and_parzen(_one_thread):
    from probgen.eval import evaluate

    model, data = _dataset()
    store = {}
    out = evaluate(model, data, limit=6, ais=True, ais_steps=100, parzen=True, per_example=store)
    m = out["metrics"]
    exact = m["log_likelihood"]
    assert set(m["ais"]) >= {"value", "stderr", "unit", "extra"}
    assert abs(m["ais"]["value"] - exact["value"]) < 0.1  # accuracy itself: tests/test_ais.py
    extra = m["ais"]["extra"]
    assert extra["n_steps"] == 100 and extra["n_chains"] == 32 and extra["sigma"] is None
    assert 0.0 <= extra["fraction_khat_above_threshold"] <= 1.0
    assert store["ais"].shape == (6,) and store["parzen"].shape == (6,)
    assert "Theis" in m["parzen"]["extra"]["warning"] and m["parzen"]["extra"]["bandwidth"] > 0
    assert abs(m["parzen"]["value"] - exact["value"]) < 1.0  # three dimensions: roughly right
    assert "ais" not in evaluate(model, data, limit=2)["metrics"]


def test_ais_metric_chooses_sigma_for_a_decoder_and_explains_what_is_missing(_one_thread):
    from probgen.eval.diagnostics import ais_metric, parzen_metric

    model, data = _dataset()
    dec = _DecoderOnly(model)
    met = ais_metric(dec, data.test[:5], x_val=data.val, n_steps=50, n_chains=8,
                     sigmas=(0.25, 0.5, 1.0))
    assert met.extra["sigma"] == 0.5 and met.extra["sigma_grid"] == [0.25, 0.5, 1.0]
    assert abs(met.value - float(model.log_prob(data.test[:5]).mean())) < 0.3
    no_val = ais_metric(dec, data.test[:5], x_val=None)
    assert no_val.value is None and "validation data" in no_val.reason
    bare = ais_metric(object(), data.test[:5])
    assert bare.value is None and "lacks latent_dim, prior_log_prob, log_likelihood or decode" in bare.reason
    p = parzen_metric(object(), data.test, data.val)
    assert p.value is None and "no sample" in p.reason and "Theis" in p.extra["warning"]
