"""Forward and reverse KL fits, the KL estimators, and the demo that compares them.

Oracles: moment matching (the forward Gaussian fit), torch's closed-form Gaussian KL,
scipy's adaptive quadrature, scikit-learn's GaussianMixture (the forward mixture fit), and
a gradient of the exact KL by quadrature (the stratified mixture ELBO).
"""

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import kl_divergence

from probgen.errors import ConfigError, DataError
from probgen.inference.kl import (
    StratifiedMixtureELBO,
    fit_forward_kl,
    fit_reverse_kl,
    gaussian_mixture,
    kl_monte_carlo,
    kl_quadrature_1d,
    target_model,
)
from probgen.kl_demo import PROBLEMS, run_kl_demo


def _mvn(loc, cov, dtype=torch.float32):
    loc, cov = torch.tensor(loc, dtype=dtype), torch.tensor(cov, dtype=dtype)
    return dist.MultivariateNormal(loc, covariance_matrix=cov)


def _mixture_1d(locs, sds, weights, dtype=torch.float32):
    locs = torch.tensor(locs, dtype=dtype)[:, None]  # (K, 1)
    trils = torch.tensor(sds, dtype=dtype)[:, None, None]  # (K, 1, 1)
    return gaussian_mixture(locs, trils, torch.tensor(weights, dtype=dtype))


# ----------------------------------------------------------------------------- estimators
def test_monte_carlo_kl_matches_closed_form():
    a = _mvn([0.5, -1.0], [[1.0, 0.6], [0.6, 2.0]], torch.float64)
    b = _mvn([0.0, 0.0], [[2.0, -0.3], [-0.3, 1.0]], torch.float64)
    exact = float(kl_divergence(a, b))
    value, se = kl_monte_carlo(a, b, 50_000, seed=1)
    assert 0 < se < 0.05
    assert abs(value - exact) < 4 * se
    # the standard error is the spread of independent estimates
    reps = torch.tensor([kl_monte_carlo(a, b, 2_000, seed=s)[0] for s in range(40)])
    se_small = kl_monte_carlo(a, b, 2_000, seed=99)[1]
    assert 0.6 < float(reps.std()) / se_small < 1.5


def test_quadrature_kl_matches_closed_form_and_scipy():
    from scipy.integrate import quad

    a = _mvn([0.3], [[0.25]], torch.float64)
    b = _mvn([-1.0], [[4.0]], torch.float64)
    assert kl_quadrature_1d(a, b, lo=-20, hi=20) == pytest.approx(float(kl_divergence(a, b)), abs=1e-9)
    # a mixture against a Gaussian: no closed form; scipy's adaptive quadrature is the oracle
    m = _mixture_1d([-2.0, 1.0], [0.4, 0.8], [0.3, 0.7], torch.float64)

    def f(x):
        t = torch.tensor([[x]], dtype=torch.float64)
        la, lb = float(m.log_prob(t)), float(b.log_prob(t))
        return math.exp(la) * (la - lb)

    expected = quad(f, -20, 20, points=[-2.0, 1.0], limit=200)[0]
    assert kl_quadrature_1d(m, b, lo=-20, hi=20) == pytest.approx(expected, abs=1e-8)


# ----------------------------------------------------------------------------- forward KL
def test_forward_gaussian_fit_is_moment_matching():
    x = PROBLEMS["2d"].p().sample((2_000,))  # (N, 2), bimodal and correlated
    fit = fit_forward_kl(x, 1, seed=3)
    assert fit.direction == "forward"
    assert fit.locs.shape == (1, 2) and fit.scale_trils.shape == (1, 2, 2)
    torch.testing.assert_close(fit.locs[0], x.mean(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(fit.covariances[0], torch.cov(x.T, correction=0), atol=1e-4, rtol=1e-5)


def test_forward_mixture_fit_matches_sklearn_em():
    """From the same centres, our EM and scikit-learn's reach the same likelihood and means."""
    from sklearn.mixture import GaussianMixture

    x = PROBLEMS["2d_mixture"].p(torch.float64).sample((2_000,))
    centres = x[torch.tensor([0, 1])]  # (2, 2), two samples
    fit = fit_forward_kl(x, 2, init_locs=centres, tol=1e-10)
    ref = GaussianMixture(2, covariance_type="full", means_init=centres.numpy(), tol=1e-10,
                          max_iter=1000, reg_covar=1e-6).fit(x.numpy())
    assert -fit.losses[-1] == pytest.approx(ref.score(x.numpy()), abs=1e-6)
    order = torch.tensor(ref.means_[:, 0]).argsort()
    mine = fit.locs[:, 0].argsort()
    torch.testing.assert_close(fit.locs[mine], torch.tensor(ref.means_)[order], atol=1e-4, rtol=0)
    torch.testing.assert_close(fit.weights[mine], torch.tensor(ref.weights_)[order], atol=1e-4, rtol=0)
    torch.testing.assert_close(float(fit.distribution().log_prob(x).mean()), -fit.losses[-1])
    for a, b in zip(fit.losses, fit.losses[1:]):  # EM never lowers the likelihood
        assert b <= a + 1e-12


def test_forward_fit_keeps_the_best_start():
    x = PROBLEMS["2d_mixture"].p().sample((2_000,))
    # the first of the five starts is the single start of the same seed
    assert fit_forward_kl(x, 2, n_init=5, seed=1).losses[-1] <= \
        fit_forward_kl(x, 2, n_init=1, seed=1).losses[-1] + 1e-7


# ----------------------------------------------------------------------------- reverse KL
def test_reverse_gaussian_fit_recovers_gaussian_p():
    p = _mvn([1.0, -0.5], [[0.8, 0.5], [0.5, 1.2]])
    fit = fit_reverse_kl(lambda z: p.log_prob(z) + 3.0, 2, 1, steps=300, seed=0)  # unnormalised
    assert fit.direction == "reverse"
    assert float(kl_divergence(fit.distribution(), p)) < 0.02


def test_reverse_mixture_fit_recovers_unequal_weights():
    p = _mixture_1d([-2.0, 2.0], [0.5, 0.5], [0.3, 0.7])
    fit = fit_reverse_kl(p.log_prob, 1, 2, init_locs=torch.tensor([[-0.5], [0.5]]), steps=400,
                         seed=0)
    q64 = fit.distribution(torch.float64)
    p64 = _mixture_1d([-2.0, 2.0], [0.5, 0.5], [0.3, 0.7], torch.float64)
    assert kl_quadrature_1d(q64, p64, lo=-15, hi=15) < 0.02
    order = fit.locs[:, 0].argsort()
    torch.testing.assert_close(fit.weights[order], torch.tensor([0.3, 0.7]), atol=0.05, rtol=0)


def test_reverse_fit_from_several_starts_keeps_the_lowest_objective():
    """Two components on three equal modes: a start with both on one mode ends at
    KL(q||p) = log 3, one on two different modes at log 1.5; from both starts the fit keeps
    the second, and its score of each start is KL(q||p) - log Z (log Z = 0 here)."""
    p = _mixture_1d([-3.0, 0.0, 3.0], [0.5, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3])
    starts = torch.tensor([[[-3.0], [-2.9]], [[-3.0], [3.0]]])
    fit = fit_reverse_kl(p.log_prob, 1, 2, init_locs=starts, n_init=2, steps=300, seed=0)
    assert len(fit.start_objectives) == 2
    assert fit.start_objectives[0] == pytest.approx(math.log(3), abs=0.03)
    assert fit.start_objectives[1] == pytest.approx(math.log(1.5), abs=0.03)
    p64 = _mixture_1d([-3.0, 0.0, 3.0], [0.5, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3], torch.float64)
    assert kl_quadrature_1d(fit.distribution(torch.float64), p64, lo=-15, hi=15) == pytest.approx(
        math.log(1.5), abs=0.02)
    assert sorted(round(float(v)) for v in fit.locs[:, 0]) == [-3, 3]
    # one start, as before: the same fit as without n_init
    one = fit_reverse_kl(p.log_prob, 1, 2, init_locs=starts[1], steps=50, seed=0)
    same = fit_reverse_kl(p.log_prob, 1, 2, init_locs=starts[1:], n_init=1, steps=50, seed=0)
    assert torch.equal(one.locs, same.locs) and one.start_objectives == []


def test_stratified_elbo_is_unbiased_with_exact_gradients():
    """Its value and gradient match those of -KL(q||p) computed by quadrature."""
    p = _mixture_1d([-2.0, 2.0], [0.5, 0.5], [0.5, 0.5])
    locs0 = torch.tensor([[-1.0], [0.7]])
    trils0 = torch.tensor([[[0.6]], [[0.9]]])
    logits0 = torch.tensor([0.3, -0.2])

    def guide():
        locs = pyro.param("locs", locs0.clone())
        trils = pyro.param("trils", trils0.clone())
        logits = pyro.param("logits", logits0.clone())
        pyro.sample("z", gaussian_mixture(locs, trils, logits=logits))

    torch.manual_seed(0)
    loss = StratifiedMixtureELBO(num_particles=40_000).differentiable_loss(target_model(p.log_prob, 1), guide)
    loss.backward()
    store = pyro.get_param_store()
    grads = {k: store[k].grad.clone() for k in ("locs", "trils", "logits")}

    # the exact KL(q||p) on a fine grid, differentiated by autograd (float64)
    params = {"locs": locs0.double().requires_grad_(), "trils": trils0.double().requires_grad_(),
              "logits": logits0.double().requires_grad_()}
    q = gaussian_mixture(params["locs"], params["trils"], logits=params["logits"])
    g = torch.linspace(-15, 15, 60_001, dtype=torch.float64)[:, None]  # (G, 1)
    lq, lp = q.log_prob(g), p.log_prob(g.float()).double()
    exact = torch.trapezoid(lq.exp() * (lq - lp), g[:, 0])
    exact.backward()
    assert float(loss.detach()) == pytest.approx(float(exact.detach()), abs=0.02)
    for k in grads:
        torch.testing.assert_close(grads[k].double(), params[k].grad, atol=0.03, rtol=0.05)


def test_stratified_elbo_works_as_a_loss_for_pyro_svi():
    p = _mixture_1d([-2.0, 2.0], [0.5, 0.5], [0.5, 0.5])

    def guide():
        locs = pyro.param("locs", torch.tensor([[-1.0], [1.0]]))
        trils = pyro.param("trils", torch.ones(2, 1, 1), constraint=dist.constraints.lower_cholesky)
        pyro.sample("z", gaussian_mixture(locs, trils, logits=torch.zeros(2)))

    svi = pyro.infer.SVI(target_model(p.log_prob, 1), guide, pyro.optim.Adam({"lr": 0.1}),
                         loss=StratifiedMixtureELBO(16))
    losses = [svi.step() for _ in range(20)]
    assert all(math.isfinite(v) for v in losses)
    assert not torch.equal(pyro.param("locs").detach(), torch.tensor([[-1.0], [1.0]]))


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_n_components(bad):
    x = torch.randn(100, 2)
    with pytest.raises(ConfigError, match=r"n_components must be an int >= 1.*got"):
        fit_forward_kl(x, bad)
    with pytest.raises(ConfigError, match=r"n_components must be an int >= 1"):
        fit_reverse_kl(lambda z: -(z**2).sum(-1), 2, bad)


def test_bad_inputs():
    with pytest.raises(DataError, match=r"samples must have shape \(N, D\).*got shape \(100,\)"):
        fit_forward_kl(torch.randn(100), 1)
    with pytest.raises(DataError, match="NaN or infinite"):
        fit_forward_kl(torch.tensor([[0.0], [float("nan")], [1.0]]), 1)
    with pytest.raises(ConfigError, match=r"init_locs must have shape \(n_components, dim\) = \(2, 1\)"):
        fit_reverse_kl(lambda z: -(z**2).sum(-1), 1, 2, init_locs=torch.zeros(2))
    with pytest.raises(ConfigError, match=r"init_locs must have shape \(n_init, n_components, dim\) = \(3, 2, 1\)"):
        fit_reverse_kl(lambda z: -(z**2).sum(-1), 1, 2, init_locs=torch.zeros(2, 1), n_init=3)
    with pytest.raises(ConfigError, match="steps must be a positive int; got 0"):
        fit_reverse_kl(lambda z: -(z**2).sum(-1), 1, steps=0)
    with pytest.raises(ConfigError, match=r"unknown KL-demo problem '2D'.*Did you mean '2d'"):
        run_kl_demo("/nonexistent", problems=["2D"])

    def two_sites():
        pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("b", dist.Normal(0.0, 1.0))

    with pytest.raises(ConfigError, match=r"exactly one latent sample site; this one has \['a', 'b'\]"):
        StratifiedMixtureELBO(2).differentiable_loss(lambda: None, two_sites)


# ----------------------------------------------------------------------------- the demo
@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("kl")
    n = torch.get_num_threads()
    result = run_kl_demo(out, seed=0, smoke=True)
    assert torch.get_num_threads() == n  # restored
    return out, result


def test_demo_json_schema(smoke_run):
    out, result = smoke_run
    assert json.loads((out / "kl.json").read_text()) == json.loads(json.dumps(result))
    assert set(result["problems"]) == set(PROBLEMS)
    for name, entry in result["problems"].items():
        k, d = PROBLEMS[name].n_components, PROBLEMS[name].dim
        assert (out / entry["figure"]).stat().st_size > 0
        for which in ("forward", "reverse"):
            f = entry[which]
            assert torch.tensor(f["locs"]).shape == (k, d)
            assert torch.tensor(f["covariances"]).shape == (k, d, d)
            assert len(f["weights"]) == k and sum(f["weights"]) == pytest.approx(1.0)
            for key in ("kl_p_q", "kl_q_p", "kl_p_q_stderr", "kl_q_p_stderr"):
                assert isinstance(f[key], float) and math.isfinite(f[key]) and f[key] >= 0
            if d == 1:  # Monte Carlo agrees with quadrature
                for key in ("kl_p_q", "kl_q_p"):
                    assert abs(f[key] - f[key + "_quadrature"]) < 5 * f[key + "_stderr"] + 1e-3


def _check_mode_seeking(result, seed):
    for name in ("1d", "2d"):
        fits = result["problems"][name]
        fwd, rev = fits["forward"], fits["reverse"]
        assert fwd["kl_p_q"] < rev["kl_p_q"], (name, seed)
        assert rev["kl_q_p"] < fwd["kl_q_p"], (name, seed)
        # the reverse fit sits on one mode: that mode's mean and covariance, KL(q||p) = log 2
        loc = torch.tensor(rev["locs"][0])
        dist_to_modes = (torch.tensor(PROBLEMS[name].means) - loc).norm(dim=-1)
        assert float(dist_to_modes.min()) < 0.25, (name, seed, rev["locs"])
        d = PROBLEMS[name].dim
        torch.testing.assert_close(torch.tensor(rev["covariances"][0]), 0.25 * torch.eye(d),
                                   atol=0.08, rtol=0)
        assert rev["kl_q_p"] == pytest.approx(math.log(2), abs=0.05)


def test_demo_forward_covers_reverse_seeks(smoke_run):
    _check_mode_seeking(smoke_run[1], 0)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_demo_reverse_fit_seeks_a_mode_for_any_seed(seed, tmp_path):
    result = run_kl_demo(tmp_path, seed=seed, smoke=True, problems=["1d", "2d"])
    _check_mode_seeking(result, seed)


def test_cli_prints_the_result(smoke_run, monkeypatch, capsys):
    import probgen.kl_demo
    from probgen.cli import main

    out, result = smoke_run
    monkeypatch.setattr(probgen.kl_demo, "run_kl_demo", lambda *a, **k: result)
    assert main(["kl-demo", "--out", str(out), "--smoke"]) == 0
    text = capsys.readouterr().out
    f = result["problems"]["1d"]["reverse"]
    assert f"1d         reverse  KL(p||q)={f['kl_p_q']:.4f} ± {f['kl_p_q_stderr']:.4f}" in text
    assert "kl.json" in text


def test_an_infinite_objective_stops_the_fit_before_the_update():
    from probgen.errors import DivergedError

    def log_p(z):  # p has no mass where q starts
        return torch.full(z.shape[:-1], -math.inf)

    with pytest.raises(DivergedError, match=r"KL objective was inf at step 0.*Lower lr"):
        fit_reverse_kl(log_p, 1, steps=5)
