"""Annealed importance sampling and the BDMC sandwich, checked against closed forms.

The oracle is the linear-Gaussian latent-variable model of :mod:`probgen.models.ppca` with
known parameters: z ~ N(0, I_d), x | z ~ N(W z + mu, s^2 I_D), whose exact log p(x) is the
log-density of N(mu, W W^T + s^2 I); PPCA's ``log_prob`` is itself checked against torch's
MultivariateNormal below.
"""


import numpy as np
import pytest
import torch

from probgen.errors import ConfigError
from probgen.inference.ais import (
    AISOptions,
    ais,
    bdmc,
    gaussian_observation,
    linear_schedule,
    log_mean_exp_with_stderr,
    reverse_ais,
    select_sigma,
    sigmoid_schedule,
)
from probgen.models.ppca import PPCA


def linear_gaussian(d=2, D=4, s=0.5, scale=0.7, dtype=torch.float64, seed=0, cls=PPCA):
    """PPCA with W ~ scale * N(0, 1) (D, d), mu ~ 0.3 * N(0, 1) (D,) and noise s."""
    g = torch.Generator().manual_seed(seed)
    w = scale * torch.randn(D, d, generator=g, dtype=dtype)
    mu = 0.3 * torch.randn(D, generator=g, dtype=dtype)
    return cls.from_parameters(w, mu, s)


@torch.no_grad()
def sample_joint(model, n, seed=1):
    """(x, z): n codes z ~ N(0, I) and the data x | z they generate."""
    g = torch.Generator().manual_seed(seed)
    dtype = model.weight.dtype
    z = torch.randn(n, model.latent_dim, generator=g, dtype=dtype)
    x = model.decode(z) + model.noise_std * torch.randn(n, model.dim, generator=g, dtype=dtype)
    return x, z


@torch.no_grad()
def test_the_oracle_is_the_linear_gaussian_marginal():
    model = linear_gaussian()
    x, _ = sample_joint(model, 5)
    cov = model.weight @ model.weight.T + 0.25 * torch.eye(4, dtype=torch.float64)
    exact = torch.distributions.MultivariateNormal(model.mean, cov).log_prob(x)
    torch.testing.assert_close(model.log_prob(x), exact)
    assert float(model.noise_std) == pytest.approx(0.5, rel=1e-12)


class GeneratorOnly:
    """A GAN-like model: a decoder and a prior, no likelihood of its own."""

    def __init__(self, model):
        self.latent_dim = model.latent_dim
        self.prior_log_prob = model.prior_log_prob
        self.decode = model.decode


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- against the truth
def test_bdmc_sandwiches_exact_log_prob_and_gap_shrinks():
    """Forward AIS <= exact <= reverse AIS (within MC error); at 500 steps both are within
    0.05 nats of the exact value on average; the gap shrinks from 20 to 500 steps."""
    model = linear_gaussian()
    x, z = sample_joint(model, 4)
    with torch.no_grad():
        exact = model.log_prob(x)
    opts = dict(n_chains=256, n_leapfrog=5, step_size=0.3, generator=_gen())
    short = bdmc(model, x, z, n_steps=20, **opts)
    long = bdmc(model, x, z, n_steps=500, **opts)
    for res in (short, long):
        se_lower = res.lower.stderr.pow(2).sum().sqrt() / 4
        se_upper = res.upper.stderr.pow(2).sum().sqrt() / 4
        assert (res.lower.log_px - exact).mean() <= 3 * se_lower
        assert (res.upper.log_px - exact).mean() >= -3 * se_upper
    assert abs(float((long.lower.log_px - exact).mean())) < 0.05
    assert abs(float((long.upper.log_px - exact).mean())) < 0.05
    assert float(long.gap.mean()) < 0.25 * float(short.gap.mean())
    assert short.gap.mean() > 0.1  # a short schedule leaves a visible gap
    # the record: shapes, acceptance near the target, step sizes along increasing beta
    assert long.lower.log_weights.shape == (256, 4)
    assert long.lower.step_size.shape == (501, 4)
    assert 0.5 < float(long.lower.acceptance.mean()) < 0.9
    torch.testing.assert_close(long.upper.step_size, long.lower.step_size)


def test_online_and_fixed_step_sizes_also_estimate_log_prob():
    model = linear_gaussian(d=1, D=3, s=0.8, seed=3)
    x, _ = sample_joint(model, 3, seed=4)
    with torch.no_grad():
        exact = model.log_prob(x)
    for adapt in ("online", "none"):
        res = ais(model, x, n_steps=200, n_chains=128, n_leapfrog=5, adapt=adapt, step_size=0.3,
                  generator=_gen(1))
        assert torch.all((res.log_px - exact).abs() < 4 * res.stderr + 0.02), adapt


def test_float32_follows_the_data():
    model = linear_gaussian(dtype=torch.float32)
    x, _ = sample_joint(model, 3)
    with torch.no_grad():
        exact = model.log_prob(x)
    res = ais(model, x, n_steps=200, n_chains=64, n_leapfrog=5, generator=_gen())
    assert res.log_px.dtype == torch.float32 and res.log_weights.dtype == torch.float64
    assert torch.all((res.log_px - exact).abs() < 4 * res.stderr + 0.02)


def test_gaussian_observation_recovers_the_linear_gaussian_model():
    """A decoder with a Gaussian observation of width s is the linear-Gaussian model with noise s."""
    model = linear_gaussian(s=0.6)
    gen_only = GeneratorOnly(model)
    x, _ = sample_joint(model, 3)
    with torch.no_grad():
        exact = model.log_prob(x)
    with pytest.raises(ConfigError, match="no log_likelihood.*pass sigma"):
        ais(gen_only, x, n_steps=5)
    res = ais(gen_only, x, n_steps=200, n_chains=64, n_leapfrog=5, sigma=0.6, generator=_gen())
    assert res.sigma == 0.6
    assert torch.all((res.log_px - exact).abs() < 4 * res.stderr + 0.02)


def test_gaussian_observation_log_likelihood_matches_torch_normal():
    decoder_w = torch.randn(3, 4, dtype=torch.float64)

    class ImageGenerator:
        latent_dim = 3

        def prior_log_prob(self, z):
            return torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)

        def decode(self, z):  # (..., 3) -> (..., 1, 2, 2)
            return torch.tanh(z @ decoder_w).reshape(*z.shape[:-1], 1, 2, 2)

    obs = gaussian_observation(ImageGenerator(), 0.2)
    x = torch.rand(5, 1, 2, 2, dtype=torch.float64)
    z = torch.randn(7, 5, 3, dtype=torch.float64)
    expected = torch.distributions.Normal(obs.decode(z), 0.2).log_prob(x).sum((-3, -2, -1))
    torch.testing.assert_close(obs.log_likelihood(x, z), expected)
    with pytest.raises(ConfigError, match="sigma .* must be a positive finite number; got -1.0"):
        gaussian_observation(ImageGenerator(), -1)


def test_select_sigma_finds_the_true_noise_level_and_warns_at_the_grid_edge():
    model = linear_gaussian(s=0.5)
    x, _ = sample_joint(model, 40, seed=5)
    sel = select_sigma(GeneratorOnly(model), x, sigmas=(0.25, 0.5, 1.0), n_steps=100, n_chains=8,
                       n_leapfrog=5, generator=_gen())
    assert sel.sigma == 0.5
    assert sel.scores[1] > max(sel.scores[0], sel.scores[2])
    with pytest.warns(UserWarning, match="upper end of the grid"):
        sel = select_sigma(GeneratorOnly(model), x, sigmas=(0.1, 0.2), n_steps=10, n_chains=2,
                           n_leapfrog=2, generator=_gen())
    assert sel.sigma == 0.2


# ----------------------------------------------------------------------------- mechanics
def test_schedules_run_from_zero_to_one():
    for sched in (sigmoid_schedule(100), linear_schedule(100)):
        assert sched.shape == (101,)
        assert sched[0] == 0 and sched[-1] == 1
        assert torch.all(sched.diff() > 0)
    s = sigmoid_schedule(100)
    assert s.diff()[0] < s.diff()[50]  # small steps at the ends, large in the middle


def test_log_mean_exp_stderr_is_the_delta_method():
    rng = np.random.default_rng(0)
    lw = rng.normal(size=(50, 3)) * 0.7 - 100.0  # far from 0: must stay stable in log space
    est, se = log_mean_exp_with_stderr(torch.from_numpy(lw))
    w = np.exp(lw + 100.0)
    np.testing.assert_allclose(est.numpy(), np.log(w.mean(0)) - 100.0, rtol=1e-12)
    np.testing.assert_allclose(se.numpy(), w.std(0, ddof=1) / (np.sqrt(50) * w.mean(0)), rtol=1e-10)


def test_no_gradients_reach_the_parameters_and_generator_repeats():
    model = linear_gaussian()
    x, z = sample_joint(model, 2)
    a = ais(model, x, n_steps=10, n_chains=4, generator=_gen(7))
    b = ais(model, x, n_steps=10, n_chains=4, generator=_gen(7))
    torch.testing.assert_close(a.log_weights, b.log_weights)
    assert model.weight.grad is None and model.mean.grad is None
    assert not a.log_px.requires_grad
    # batching over examples gives the same per-example estimates as one pass, up to MC error
    c = ais(model, x, n_steps=10, n_chains=4, batch_size=1, generator=_gen(7))
    assert c.log_px.shape == (2,)


def test_default_batch_keeps_each_pass_under_the_memory_bound(monkeypatch):
    """Without batch_size, a pass holds at most DEFAULT_MAX_ELEMENTS chain x data values, and the
    estimate is the one an explicit batch of that size gives."""
    import probgen.inference.ais as ais_module

    model = linear_gaussian()  # D = 4 data values
    x, _ = sample_joint(model, 7)
    monkeypatch.setattr(ais_module, "DEFAULT_MAX_ELEMENTS", 4 * 4 * 3)  # 4 chains x 3 examples
    seen = []

    class Recorder(PPCA):
        def log_likelihood(self, x, z):
            seen.append(tuple(z.shape[:2]))
            return super().log_likelihood(x, z)

    a = ais(linear_gaussian(cls=Recorder), x, n_steps=5, n_chains=4, generator=_gen(3))
    b = ais(model, x, n_steps=5, n_chains=4, batch_size=3, generator=_gen(3))
    assert max(n for _, n in seen) == 3 and all(c * n * 4 <= 48 for c, n in seen)
    torch.testing.assert_close(a.log_weights, b.log_weights)


def test_an_options_object_gives_what_its_keywords_give():
    model = linear_gaussian()
    x, z = sample_joint(model, 3)
    opts = AISOptions(n_steps=12, n_chains=5, n_leapfrog=3, jitter=0.2)
    a = bdmc(model, x, z, opts, generator=_gen(2))
    b = bdmc(model, x, z, n_steps=12, n_chains=5, n_leapfrog=3, jitter=0.2, generator=_gen(2))
    torch.testing.assert_close(a.lower.log_weights, b.lower.log_weights, rtol=0, atol=0)
    torch.testing.assert_close(a.upper.log_weights, b.upper.log_weights, rtol=0, atol=0)
    # keywords change the options given
    c = ais(model, x, opts, n_steps=7, generator=_gen(2))
    assert c.n_steps == 7 and c.n_chains == 5 and c.n_leapfrog == 3


def test_reverse_accepts_one_code_per_chain():
    model = linear_gaussian()
    x, z = sample_joint(model, 2)
    zc = z.unsqueeze(0).expand(3, 2, 2).clone()
    res = reverse_ais(model, x, zc, n_steps=5, n_chains=3, generator=_gen())
    assert res.direction == "reverse" and res.log_px.shape == (2,)


def test_errors_name_the_argument():
    model = linear_gaussian()
    x, z = sample_joint(model, 2)
    with pytest.raises(ConfigError, match="schedule must be one of linear, sigmoid; got 'sigmod'.*'sigmoid'"):
        ais(model, x, schedule="sigmod")
    with pytest.raises(ConfigError, match="adapt must be one of pilot, online, none; got 'auto'"):
        ais(model, x, adapt="auto")
    with pytest.raises(ConfigError, match="n_steps must be a positive integer; got 0"):
        ais(model, x, n_steps=0)
    with pytest.raises(ConfigError, match=r"z_posterior must have shape \(N, latent_dim\) = \(2, 2\).*got \(2, 3\)"):
        reverse_ais(model, x, torch.zeros(2, 3, dtype=torch.float64), n_steps=3)
    with pytest.raises(ConfigError, match="lacks prior_log_prob"):
        ais(type("M", (), {"latent_dim": 2})(), x)
    with pytest.raises(ConfigError, match="x must be a floating-point tensor"):
        ais(model, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ConfigError, match="unknown AIS option.*'n_step'.*Did you mean 'n_steps'"):
        ais(model, x, n_step=3)
    with pytest.raises(ConfigError, match=r"jitter must lie in \[0, 1\); got 1.5"):
        AISOptions(jitter=1.5)

    class BadShape(PPCA):
        def log_likelihood(self, x, z):
            return super().log_likelihood(x, z).sum(0)  # (N,): would broadcast silently

    with pytest.raises(ConfigError, match=r"log_likelihood\(x, z\) has shape \(2,\).*expected \(16, 2\)"):
        ais(linear_gaussian(cls=BadShape), x, n_steps=3, adapt="none")


def test_ais_and_bdmc_on_probgen_ppca():
    """The library's PPCA: AIS from the prior and reverse AIS from its exact posterior bracket
    its exact log p(x)."""
    ppca_module = pytest.importorskip("probgen.models.ppca")
    truth = linear_gaussian(d=2, D=5, s=0.5, scale=1.0, seed=4)
    x_train, _ = sample_joint(truth, 500, seed=5)
    rotation = torch.tensor([[0.6, -0.8], [0.8, 0.6]])
    model = ppca_module.PPCA(5, 2).fit(x_train.float(), rotation=rotation)
    x, _ = sample_joint(truth, 4, seed=6)
    x = x.float()
    with torch.no_grad():
        exact = model.log_prob(x)
        z_post = model.posterior(x).sample((64,))  # (64, 4, 2) exact posterior draws
    res = bdmc(model, x, z_post, n_steps=200, n_chains=64, n_leapfrog=5, generator=_gen())
    se_lo = res.lower.stderr.pow(2).sum().sqrt() / 4
    se_up = res.upper.stderr.pow(2).sum().sqrt() / 4
    assert (res.lower.log_px - exact).mean() <= 3 * se_lo
    assert (res.upper.log_px - exact).mean() >= -3 * se_up
    assert torch.all((res.lower.log_px - exact).abs() < 4 * res.lower.stderr + 0.05)


def test_evaluation_layer_reports_ais_and_parzen_under_their_names():
    """likelihood_metrics(..., ais=True, parzen=True), as ``probgen eval --ais --parzen`` calls
    it, stores the estimates as ``ais`` and ``parzen``; AIS on PPCA stays below its exact
    log-likelihood (a stochastic lower bound) and close to it."""
    from probgen.data import load_dataset
    from probgen.eval.evaluate import likelihood_metrics
    from probgen.models.ppca import PPCA

    data = load_dataset("digits")
    model = PPCA(data.shape, 2).fit(data.train)
    per_example = {}
    out = likelihood_metrics(model, data, limit=6, ais=True, ais_steps=100, parzen=True,
                             per_example=per_example)
    assert {"log_likelihood", "ais", "parzen"} <= set(out) and {"ais", "parzen"} <= set(per_example)
    exact, est = per_example["log_likelihood"], per_example["ais"]
    assert est.shape == exact.shape == (6,)
    assert float((est - exact).mean()) < 0.1  # measured: -0.04, per example within 0.14
    assert float((est - exact).abs().max()) < 0.5
    assert out["ais"].extra["n_steps"] == 100 and "warning" in out["parzen"].extra
