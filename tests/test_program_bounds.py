"""Bounds of any Pyro program from its traces (probgen.inference.program_bounds), against
closed forms (PPCA, a Gaussian mixture, a Student t), the protocol path of
probgen.inference.bounds / ais on the same models, and Pyro's RenyiELBO."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import RenyiELBO, config_enumerate

from probgen.errors import ConfigError
from probgen.inference import program_bounds as pb
from probgen.inference.ais import ais
from probgen.inference.bounds import elbo, iwae_bound
from probgen.models.ppca import PPCA
from probgen.models.vae import VAE


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _ppca(guide="full"):
    torch.manual_seed(1)
    w = torch.randn(5, 2)
    x = torch.randn(300, 2) @ w.T + 0.5 * torch.randn(300, 5)
    m = PPCA(5, 2, guide=guide).fit(x, rotation=torch.tensor([[0.6, -0.8], [0.8, 0.6]]))
    return m, x[:12]


def _vae():
    torch.manual_seed(2)
    v = VAE((1, 6, 6), latent_dim=3, hidden=(24,)).eval()
    x = (torch.rand(10, 1, 6, 6) < 0.3).float()
    return v, x


def _within(a, b, se, n_se=4.0, slack=0.0):
    """|a - b| <= n_se standard errors (+ slack), elementwise."""
    return bool(((a - b).abs() <= n_se * se + slack).all())


# ----------------------------------------------------------------------------- PPCA: exact
def test_ppca_with_the_exact_posterior_as_guide_gives_log_px_exactly():
    m, x = _ppca("full")
    exact = m.log_prob(x).detach()
    prog = (m.model, m.guide)
    e = pb.program_elbo(prog, x, num_samples=3)
    iw = pb.program_iwae_bound(prog, x, 30)
    # every weight p(x, z) / q(z|x) equals p(x) when q is the posterior
    torch.testing.assert_close(e.total, exact, atol=2e-4, rtol=0)
    torch.testing.assert_close(iw.total, exact, atol=2e-4, rtol=0)
    # and the split: reconstruction - kl is the total, KL >= 0
    torch.testing.assert_close(e.reconstruction - e.kl, e.total, atol=1e-4, rtol=0)
    assert bool((e.kl > 0).all())
    # the protocol path says the same (with its KL on the same particles: the analytic KL
    # leaves the reconstruction term's Monte Carlo error alone)
    torch.testing.assert_close(elbo(m, x, num_samples=3, analytic_kl=False).total, exact,
                               atol=2e-4, rtol=0)


def test_ppca_mean_field_elbo_is_log_px_minus_the_closed_form_kl_and_iwae_ais_approach_log_px():
    m, x = _ppca("diagonal")
    x = x[:6]
    with torch.no_grad():
        exact = m.log_prob(x)
        truth_elbo = exact - m.kl_to_posterior(x)
    assert bool((m.kl_to_posterior(x) > 1e-3).all())  # the rotation makes the mean field inexact
    prog = (m.model, m.guide)
    e = pb.program_elbo(prog, x, num_samples=400)
    assert _within(e.total, truth_elbo, e.mc_stderr)
    assert bool((e.total <= exact + 4 * e.mc_stderr).all())
    iw = pb.program_iwae_bound(prog, x, 2000)
    assert bool((iw.total > e.total).all())
    assert _within(iw.total, exact, iw.mc_stderr, slack=0.01)
    a = pb.program_ais(prog, x, n_steps=100, n_chains=16, n_leapfrog=5,
                       generator=torch.Generator().manual_seed(0))
    assert a.log_px.shape == (6,) and a.sites == ("z",)
    assert _within(a.log_px, exact, a.stderr, slack=0.05)
    se_mean = float(a.stderr.pow(2).mean().sqrt()) / math.sqrt(6)
    assert abs(float((a.log_px - exact).mean())) < 3 * se_mean + 0.05


# ----------------------------------------------------------------------------- VAE: both paths
def test_vae_trace_bounds_draw_the_protocol_paths_particles_and_agree_to_rounding():
    v, x = _vae()
    prog = pb.as_program((v.model, v.guide))
    prog.structure(x)  # the probe draws random numbers: run it before seeding
    # with the same seed both paths draw the same z: the same numbers, not just close ones
    pyro.set_rng_seed(5)
    i_trace = pb.program_iwae_bound(prog, x, 300)
    pyro.set_rng_seed(5)
    i_proto = iwae_bound(v, x, 300)
    torch.testing.assert_close(i_trace.total, i_proto.total, atol=1e-4, rtol=0)
    torch.testing.assert_close(i_trace.mc_stderr, i_proto.mc_stderr, atol=1e-4, rtol=1e-3)
    assert i_trace.khat.shape == (10,) and bool(torch.isfinite(i_trace.khat).all())
    pyro.set_rng_seed(6)
    e_trace = pb.program_elbo(prog, x, num_samples=20)
    pyro.set_rng_seed(6)
    e_proto = elbo(v, x, num_samples=20, analytic_kl=False)
    for name in ("total", "reconstruction", "kl", "mc_stderr"):
        torch.testing.assert_close(getattr(e_trace, name), getattr(e_proto, name), atol=1e-4, rtol=0)


def test_vae_trace_elbo_agrees_with_the_analytic_kl_of_the_protocol_path():
    v, x = _vae()
    prog = (v.model, v.guide)
    e_trace = pb.program_elbo(prog, x, num_samples=1000)
    e_proto = elbo(v, x, num_samples=1000)  # analytic KL: another estimator of the same ELBO
    se = (e_trace.mc_stderr ** 2 + e_proto.mc_stderr ** 2).sqrt()
    assert _within(e_trace.total, e_proto.total, se)
    torch.testing.assert_close(e_trace.kl, e_proto.kl, atol=0.1, rtol=0)


def test_vae_trace_ais_agrees_with_the_protocol_ais():
    v, x = _vae()
    x = x[:5]
    opts = dict(n_steps=100, n_chains=16, n_leapfrog=5)
    a_trace = pb.program_ais((v.model, v.guide), x, generator=torch.Generator().manual_seed(0), **opts)
    a_proto = ais(v, x, generator=torch.Generator().manual_seed(1), **opts)
    se = (a_trace.stderr ** 2 + a_proto.stderr ** 2).sqrt()
    assert _within(a_trace.log_px, a_proto.log_px, se, slack=0.05)
    assert a_trace.log_weights.shape == (16, 5) and a_trace.khat.shape == (5,)
    assert a_trace.n_steps == 100 and a_trace.direction == "forward"


def test_trace_iwae_is_pyro_renyi_elbo_alpha_0_on_the_same_particles():
    v, x = _vae()
    prog = pb.as_program((v.model, v.guide))
    prog.structure(x)  # the probe draws random numbers: run it before seeding
    k = 7
    pyro.set_rng_seed(11)
    lw = pb.program_log_weights(prog, x, k)  # (k, N)
    ours = float((lw.logsumexp(0) - math.log(k)).sum())
    pyro.set_rng_seed(11)
    loss = RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True,
                     max_plate_nesting=1).loss(v.model, v.guide, x)
    assert ours == pytest.approx(-loss, abs=1e-3)
    # and the per-example IWAE sums to it
    pyro.set_rng_seed(11)
    iw = pb.program_iwae_bound(prog, x, k, khat=False)
    assert float(iw.total.sum()) == pytest.approx(ours, abs=1e-3)


def test_chunking_does_not_change_the_weights():
    m, x = _ppca("diagonal")
    prog = pb.as_program((m.model, m.guide))
    prog.structure(x)
    pyro.set_rng_seed(3)
    whole = pb.program_iwae_bound(prog, x, 40, khat=False)
    pyro.set_rng_seed(3)
    # 5 values per example: a chunk of 2 examples x 4 particles; different draws, same bound
    small = pb.program_iwae_bound(prog, x, 40, max_elements=40, khat=True)
    assert _within(small.total, whole.total, (small.mc_stderr ** 2 + whole.mc_stderr ** 2).sqrt())
    assert small.khat.shape == (12,)


# ----------------------------------------------------------------------------- enumeration
_W = torch.tensor([0.3, 0.7])
_MU = torch.tensor([-2.0, 1.5])
_A, _S = 0.8, 0.5


@config_enumerate
def _mixture_model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        c = pyro.sample("c", dist.Categorical(_W))
        pyro.sample("x", dist.Normal(_MU[c] + _A * z, _S), obs=x)


def _mixture_guide(x):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(0.3 * x, 0.9))


def _mixture_exact(x):
    comp = dist.Normal(_MU, math.sqrt(_A ** 2 + _S ** 2))
    return (comp.log_prob(x.unsqueeze(-1)) + _W.log()).logsumexp(-1)


def test_enumerated_discrete_latent_is_summed_out_per_example():
    x = torch.tensor([-2.5, -1.0, 0.2, 1.4, 3.0])
    exact = _mixture_exact(x)
    prog = (_mixture_model, _mixture_guide)
    st = pb.check_program(prog, x)
    assert st.enumerated == ("c",) and st.latent == ("z",) and not st.has_terms
    e = pb.program_elbo(prog, x, num_samples=200)
    assert e.reconstruction is None and e.kl is None
    assert bool((e.total <= exact + 4 * e.mc_stderr).all())
    iw = pb.program_iwae_bound(prog, x, 3000)
    assert _within(iw.total, exact, iw.mc_stderr, slack=0.01)
    a = pb.program_ais(prog, x, n_steps=100, n_chains=16, n_leapfrog=5,
                       generator=torch.Generator().manual_seed(0))
    assert _within(a.log_px, exact, a.stderr, slack=0.05)

    # with no continuous latent left, the enumerated ELBO is log p(x) itself
    @config_enumerate
    def model(x):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Categorical(_W))
            pyro.sample("x", dist.Normal(_MU[c], math.sqrt(_A ** 2 + _S ** 2)), obs=x)

    torch.testing.assert_close(pb.program_elbo((model, lambda x: None), x).total, exact)


def test_a_discrete_latent_sampled_by_the_guide_from_its_exact_posterior_gives_log_px():
    x = torch.tensor([-2.5, -1.0, 0.2, 1.4, 3.0])
    exact = _mixture_exact(x)
    sd = math.sqrt(_A ** 2 + _S ** 2)

    def model(x):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Categorical(_W))
            pyro.sample("x", dist.Normal(_MU[c], sd), obs=x)

    def guide(x):
        logits = dist.Normal(_MU, sd).log_prob(x.unsqueeze(-1)) + _W.log()  # (N, 2)
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Categorical(logits=logits))

    e = pb.program_elbo((model, guide), x, num_samples=8)
    torch.testing.assert_close(e.total, exact)
    torch.testing.assert_close(e.mc_stderr, torch.zeros(5), atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match=r"no continuous local latent"):
        pb.program_ais((_enumerated_only, lambda x: None), x, n_steps=2)


@config_enumerate
def _enumerated_only(x):
    with pyro.plate("data", len(x)):
        c = pyro.sample("c", dist.Categorical(_W))
        pyro.sample("x", dist.Normal(_MU[c], 1.0), obs=x)


def test_a_program_whose_every_latent_is_summed_out_is_scored_by_its_exact_log_likelihood():
    """A mixture whose component is enumerated and whose guide samples nothing: its traces
    give log p(x) itself, which the evaluation reports as the exact log-likelihood (and pairs
    as such), not as a bound; a program with a sampled latent has none."""
    from probgen.data import Dataset
    from probgen.eval import evaluate

    locs = torch.tensor([[-2.0, 0.0], [0.0, 2.0], [3.0, -1.0]])
    scales = torch.tensor([[0.5, 1.0], [1.0, 0.3], [0.8, 0.8]])
    weights = torch.tensor([0.2, 0.5, 0.3])

    @config_enumerate
    def model(x):
        with pyro.plate("data", len(x)):
            k = pyro.sample("k", dist.Categorical(weights))
            pyro.sample("x", dist.Normal(locs[k], scales[k]).to_event(1), obs=x)

    def guide(x):
        pass

    torch.manual_seed(0)
    x = 2.0 * torch.randn(30, 2)
    exact = (dist.Normal(locs, scales).to_event(1).log_prob(x.unsqueeze(1)) + weights.log()).logsumexp(-1)
    prog = pb.as_program((model, guide))
    assert prog.exact_density(x)
    torch.testing.assert_close(prog.exact_log_prob(x), exact)
    data = Dataset(name="mixture", train=x, val=x, test=x, shape=(2,), kind="vector",
                   value_range=(-10.0, 10.0))
    store = {}
    met = evaluate((model, guide), data, k=5, per_example=store)["metrics"]
    assert met["log_likelihood"]["estimator"] == "exact"
    assert met["log_likelihood"]["value"] == pytest.approx(float(exact.mean()), abs=1e-5)
    torch.testing.assert_close(store["log_likelihood"].float(), exact)
    # with a continuous latent the guide draws, the traces give bounds only
    mixture = pb.as_program((_mixture_model, _mixture_guide))
    assert not mixture.exact_density(torch.zeros(3))
    with pytest.raises(ConfigError, match=r"guide samples 'z'.*bounds on log p\(x\)"):
        mixture.exact_log_prob(torch.zeros(3))


# ----------------------------------------------------------------------------- constrained latents
def _student_model(x):
    with pyro.plate("data", len(x)):
        tau = pyro.sample("tau", dist.Gamma(1.5, 1.5))  # nu = 3
        pyro.sample("x", dist.Normal(0.0, tau.rsqrt()), obs=x)


def _student_guide(x):
    with pyro.plate("data", len(x)):
        pyro.sample("tau", dist.LogNormal(-0.2 * x.abs(), 0.6))


def test_positive_latent_moves_in_unconstrained_space_with_its_jacobian():
    # x | tau ~ N(0, 1/tau), tau ~ Gamma(nu/2, nu/2)  =>  x ~ Student t with nu = 3
    x = torch.tensor([-3.0, -0.5, 0.0, 1.0, 4.0])
    exact = dist.StudentT(3.0).log_prob(x)
    prog = (_student_model, _student_guide)
    iw = pb.program_iwae_bound(prog, x, 3000)
    assert _within(iw.total, exact, iw.mc_stderr, slack=0.01)
    a = pb.program_ais(prog, x, n_steps=150, n_chains=16, n_leapfrog=5,
                       generator=torch.Generator().manual_seed(0))
    assert _within(a.log_px, exact, a.stderr, slack=0.05)


# ----------------------------------------------------------------------------- global latents
def _readme_model(x):
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(x)):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=x)


def _readme_guide(x):
    m = pyro.param("m", torch.tensor(0.7))
    s = pyro.param("s", torch.tensor(0.2), constraint=dist.constraints.positive)
    pyro.sample("loc", dist.Normal(m, s))


def test_global_latent_is_refused_by_name_or_conditioned_on_the_guide_mean():
    x = torch.tensor([0.1, 1.2, -0.4])
    with pytest.raises(ConfigError, match=r"'loc' lies outside the data plate 'data'.*global_latents='condition'"):
        pb.program_elbo((_readme_model, _readme_guide), x)
    prog = pb.as_program((_readme_model, _readme_guide), global_latents="condition")
    st = prog.structure(x)
    assert set(st.conditioned) == {"loc"} and float(st.conditioned["loc"]) == pytest.approx(0.7)
    exact = dist.Normal(0.7, 1.0).log_prob(x)  # log p(x_n | loc = 0.7): no latent left
    torch.testing.assert_close(pb.program_elbo(prog, x).total, exact)
    torch.testing.assert_close(pb.program_iwae_bound(prog, x, 5).total, exact)


def test_conditioned_global_latent_leaves_local_latents_to_the_bounds_and_ais():
    # mu ~ N(0, 10); z_n ~ N(mu, 1); x_n ~ N(z_n, 1). Given mu = m: x_n ~ N(m, 2).
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(mu, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        mu = pyro.sample("mu", dist.Normal(torch.tensor(0.4), 0.1))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal((mu + x) / 2, math.sqrt(0.5)))  # exact given mu

    x = torch.tensor([-1.0, 0.3, 2.2])
    exact = dist.Normal(0.4, math.sqrt(2.0)).log_prob(x)
    prog = pb.as_program((model, guide), global_latents="condition")
    torch.testing.assert_close(pb.program_elbo(prog, x, num_samples=4).total, exact)
    a = pb.program_ais(prog, x, n_steps=100, n_chains=16, n_leapfrog=5,
                       generator=torch.Generator().manual_seed(0))
    assert a.sites == ("z",) and _within(a.log_px, exact, a.stderr, slack=0.05)


# ----------------------------------------------------------------------------- errors
def _plate_obs(x, **kw):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def _plate_guide(x):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(0.0, 1.0))


def test_errors_name_the_site_and_the_fix():
    x = torch.randn(4)

    def no_plate(x):
        z = pyro.sample("z", dist.Normal(torch.zeros(len(x)), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def no_plate_guide(x):
        pyro.sample("z", dist.Normal(torch.zeros(len(x)), 1.0).to_event(1))

    with pytest.raises(ConfigError, match=r"cannot find the data plate.*'x'.*pyro.plate\('data', len\(x\)\)"):
        pb.program_elbo((no_plate, no_plate_guide), x)

    def unobserved(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ConfigError, match=r"no observed site.*obs=x"):
        pb.program_elbo((unobserved, _plate_guide), x)

    with pytest.raises(ConfigError, match=r"misses the model's continuous latent site 'z'.*add `pyro.sample\('z'"):
        pb.program_iwae_bound((_plate_obs, lambda x: None), x, 5)

    def discrete(x):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(c, 1.0), obs=x)

    with pytest.raises(ConfigError, match=r"discrete latent site 'c'.*config_enumerate"):
        pb.program_elbo((discrete, lambda x: None), x)

    def extra_guide(x):
        _plate_guide(x)
        pyro.sample("w", dist.Normal(0.0, 1.0))

    with pytest.raises(ConfigError, match=r"guide samples site 'w', which the model does not have"):
        pb.program_elbo((_plate_obs, extra_guide), x)

    with pytest.raises(ConfigError, match=r"data_plate='rows' is not a plate of the model.*'data'"):
        pb.program_elbo((_plate_obs, _plate_guide), x, data_plate="rows")

    with pytest.raises(ConfigError, match=r"global_latents must be one of"):
        pb.as_program((_plate_obs, _plate_guide), global_latents="ignore")

    with pytest.raises(ConfigError, match=r"not a program.*model\(x\) and guide\(x\)"):
        pb.as_program(object())

    def guided_discrete(x):
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Bernoulli(0.5))

    with pytest.raises(ConfigError, match=r"site 'c' is discrete.*config_enumerate"):
        pb.program_ais((discrete, guided_discrete), x, n_steps=2)


def test_grey_values_fed_to_a_bernoulli_site_get_an_error_that_says_so():
    from probgen.errors import DataError

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            logits = z.sum(-1, keepdim=True).expand(*z.shape[:-1], 3)
            pyro.sample("pixels", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    x = torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.4, 1.0]])
    with pytest.raises(DataError, match=r"observed site 'pixels'.*Bernoulli.*1 of 6 values, e.g. 0.4.*[Bb]inarise"):
        pb.check_program((model, guide), x)
    assert pb.check_program((model, guide), x.round()).observed == ("pixels",)


def test_data_plate_is_found_among_nested_plates_or_named():
    x = torch.randn(3, 4)

    def model(x):
        with pyro.plate("rows", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            with pyro.plate("cols", x.shape[1], dim=-1):
                pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("rows", x.shape[0], dim=-2):
            pyro.sample("z", dist.Normal(x.mean(-1, keepdim=True), 0.5))

    st = pb.check_program((model, guide), x)
    assert (st.data_plate, st.data_dim, st.max_plate_nesting) == ("rows", -2, 2)
    # log p(x_n) in closed form: x_n ~ N(0, I + 1 1^T)
    cov = torch.eye(4) + torch.ones(4, 4)
    exact = dist.MultivariateNormal(torch.zeros(4), cov).log_prob(x)
    iw = pb.program_iwae_bound((model, guide), x, 2000)
    assert _within(iw.total, exact, iw.mc_stderr, slack=0.01)

    x4 = torch.randn(4, 4)  # rows and cols both of size 4: the name must say which
    with pytest.raises(ConfigError, match=r"several plates of size 4.*data_plate="):
        pb.check_program((model, guide), x4)
    assert pb.check_program((model, guide), x4, data_plate="rows").data_dim == -2


# ----------------------------------------------------------------------------- evaluate()
def _dataset(m, n_test=20):
    from probgen.data import Dataset

    torch.manual_seed(4)
    draw = lambda n: m.sample(n).detach()  # noqa: E731
    return Dataset(name="ppca-data", train=draw(200), val=draw(50), test=draw(n_test), shape=(5,),
                   kind="vector", value_range=(-10.0, 10.0))


def test_evaluate_scores_a_program_and_stores_per_example_values():
    from probgen.eval import evaluate

    m, _ = _ppca("full")
    data = _dataset(m)
    store = {}
    out = evaluate((m.model, m.guide), data, k=20, per_example=store)
    met = out["metrics"]
    exact = float(m.log_prob(data.test).detach().mean())
    assert out["model"] == "PPCA" and out["n"] == 20
    assert met["elbo"]["value"] == pytest.approx(exact, abs=1e-3)
    assert met["iwae"]["value"] == pytest.approx(exact, abs=1e-3)
    assert {"elbo_reconstruction", "elbo_kl"} <= set(met)
    assert "khat_threshold" in met["iwae"]["extra"] and met["iwae"]["extra"]["k"] == 20
    assert "see its bounds (ELBO, IWAE)" in met["log_likelihood"]["reason"]
    assert "sample(n)" in met["samples"]["reason"]
    assert store["elbo"].shape == (20,) and store["iwae"].shape == (20,)


def test_evaluate_runs_ais_on_a_program_and_takes_its_sample():
    from probgen.eval import evaluate

    m, _ = _ppca("diagonal")
    data = _dataset(m, n_test=4)

    class Program:
        def model(self, x):
            return m.model(x)

        def guide(self, x):
            return m.guide(x)

        def sample(self, n):
            return m.sample(n)

    store = {}
    out = evaluate(Program(), data, k=10, ais=True, ais_steps=30, per_example=store, n_samples=50)
    assert out["model"] == "Program"
    assert out["metrics"]["ais"]["extra"]["n_steps"] == 30 and store["ais"].shape == (4,)
    assert "samples" not in out["metrics"]


def test_evaluate_says_what_it_needs_for_something_it_cannot_score():
    from probgen.eval import evaluate

    m, _ = _ppca("full")
    with pytest.raises(ConfigError, match=r"cannot evaluate object.*\(model, guide\) pair"):
        evaluate(object(), _dataset(m, n_test=2))


# ----------------------------------------------------------------------------- particles
# A linear-Gaussian model, x = W z + b + noise, with the exact posterior as its guide: every
# importance weight is log p(x) itself, so each bound must give the closed form to rounding.
# Written three ways: broadcasting over a leading particle dimension; flattening it away
# (`.reshape(-1, L)`, which fails in a plate of particles); and flattening then cutting to
# len(x), which runs in a plate of particles but scores every particle with the first one's
# decoder output.
_LW = torch.tensor([[1.0, -0.5], [0.3, 0.8], [-0.7, 0.2], [0.5, 0.5]])
_LB = torch.tensor([0.2, -0.1, 0.0, 0.4])
_LSIGMA = 0.6


def _linear_program(flatten: str):
    cov = torch.linalg.inv(torch.eye(2) + _LW.T @ _LW / _LSIGMA ** 2)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            if flatten == "none":
                loc = z @ _LW.T + _LB
            else:
                loc = z.reshape(-1, 2) @ _LW.T + _LB
                if flatten == "cut":
                    loc = loc[: x.shape[0]]
            pyro.sample("x", dist.Normal(loc, _LSIGMA).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            mean = (x - _LB) @ _LW @ cov / _LSIGMA ** 2
            pyro.sample("z", dist.MultivariateNormal(mean, covariance_matrix=cov))

    return model, guide


def _linear_exact(x):
    return dist.MultivariateNormal(_LB, _LW @ _LW.T + _LSIGMA ** 2 * torch.eye(4)).log_prob(x)


@pytest.mark.parametrize("flatten, why", [("none", None), ("reshape", "Shape mismatch"),
                                          ("cut", "differs when the program runs it alone")])
def test_a_program_that_does_not_broadcast_over_particles_is_scored_one_particle_at_a_time(flatten, why):
    torch.manual_seed(3)
    x = torch.randn(20, 2) @ _LW.T + _LB + _LSIGMA * torch.randn(20, 4)
    exact = _linear_exact(x)
    prog = _linear_program(flatten)
    st = pb.check_program(prog, x)
    assert st.vectorized is (why is None)
    if why is not None:
        assert why in st.unvectorized_why and "\n" not in st.unvectorized_why
    torch.testing.assert_close(pb.program_elbo(prog, x, num_samples=5).total, exact, atol=2e-4, rtol=0)
    iw = pb.program_iwae_bound(prog, x, 40)  # with k-hat: the weights of a block are kept
    torch.testing.assert_close(iw.total, exact, atol=2e-4, rtol=0)
    w = pb.program_log_weights(prog, x, 7)
    assert w.shape == (7, 20)
    torch.testing.assert_close(w, exact.double().expand(7, 20), atol=2e-4, rtol=0)
    a = pb.program_ais(prog, x[:5], n_steps=60, n_chains=6, n_leapfrog=4,
                       generator=torch.Generator().manual_seed(0))
    assert a.log_px.shape == (5,) and _within(a.log_px, exact[:5], a.stderr, slack=0.05)


def test_a_program_that_does_not_broadcast_trains_on_several_particles_drawn_in_turn():
    from probgen.inference.svi import fit_svi

    x = torch.randn(200, 4) @ torch.diag(torch.tensor([2.0, 1.0, 1.0, 0.5])) + 1.0

    def model(x):
        b = pyro.param("b", torch.zeros(4))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            loc = z.reshape(-1, 2) @ _LW.T + b  # (particles x examples, 4): ties it to one draw
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    pyro.clear_param_store()
    res = fit_svi(model, guide, x, num_particles=3, vectorize_particles=False, epochs=30,
                  batch_size=50, lr=0.05, progress=False)
    assert res.losses[-1] < res.losses[0]
    torch.testing.assert_close(pyro.param("b").detach(), x.mean(0), atol=0.35, rtol=0)
    with pytest.raises(ConfigError, match="vectorize_particles=False is offered for the ELBO only"):
        fit_svi(model, guide, x, objective="iwae", num_particles=3, vectorize_particles=False,
                epochs=1, progress=False)
