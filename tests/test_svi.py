"""fit_svi on user-written model/guide pairs: analytic posteriors, NaN safety, hooks, resume."""

import functools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints

from probgen.errors import ConfigError, DivergedError
from probgen.inference.svi import fit_loss, fit_svi

# A conjugate Normal-Normal model: mu ~ N(m0, s0^2), x_i | mu ~ N(mu, s^2).
M0, S0, S = 1.0, 2.0, 0.7


def model(x):
    mu = pyro.sample("mu", dist.Normal(x.new_tensor(M0), x.new_tensor(S0)))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(mu, S), obs=x)


def guide(x):
    loc = pyro.param("loc_q", x.new_tensor(0.0))
    scale = pyro.param("scale_q", x.new_tensor(1.0), constraint=constraints.positive)
    pyro.sample("mu", dist.Normal(loc, scale))


def _posterior(x):
    prec = 1 / S0**2 + x.numel() / S**2
    mean = (M0 / S0**2 + x.sum() / S**2) / prec
    return float(mean), math.sqrt(1 / prec)


def test_recovers_the_analytic_posterior_of_a_user_model():
    x = 0.3 + S * torch.randn(20)
    mean, sd = _posterior(x)
    res = fit_svi(model, guide, x, steps=1500, lr=0.02, num_particles=8)
    assert res.steps == 1500 and not res.skipped and len(res.losses) == 1500
    assert pyro.param("loc_q").item() == pytest.approx(mean, abs=0.03)
    assert pyro.param("scale_q").item() == pytest.approx(sd, rel=0.1)
    # the constrained param was optimised through its unconstrained leaf
    assert any(p.shape == () and p is pyro.param("scale_q").unconstrained() for p in res.params)


def test_mean_field_loss_and_torch_optimiser_option():
    x = -0.5 + S * torch.randn(30)
    mean, sd = _posterior(x)
    res = fit_svi(model, guide, x, loss="mean-field", steps=1500, num_particles=8,
                  optim=functools.partial(torch.optim.SGD, lr=0.002, momentum=0.9))
    assert isinstance(res.optimizer, torch.optim.SGD)
    assert pyro.param("loc_q").item() == pytest.approx(mean, abs=0.03)
    assert pyro.param("scale_q").item() == pytest.approx(sd, rel=0.1)


def _nan_model_at(bad_step):
    calls = {"n": 0}

    def nan_model(x):
        calls["n"] += 1
        mu = pyro.sample("mu", dist.Normal(x.new_tensor(0.0), x.new_tensor(1.0)))
        # from call bad_step on, the likelihood says NaN
        shift = x.new_tensor(math.nan) if calls["n"] - 1 >= bad_step else x.new_tensor(0.0)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu + shift, 1.0), obs=x)

    return nan_model


def test_nan_loss_stops_with_the_step_and_leaves_parameters_untouched():
    x = torch.randn(10)
    with pytest.raises(DivergedError, match=r"step 5 \(epoch 6\): the loss was not finite"):
        fit_svi(_nan_model_at(5), guide, x, steps=20, on_nan="stop")
    # parameters hold the values after step 4 (finite), not NaN
    assert torch.isfinite(pyro.param("loc_q")) and torch.isfinite(pyro.param("scale_q"))


def test_nan_loss_is_skipped_without_touching_the_parameters():
    x = torch.randn(10)
    seen = {}

    def record(state):
        seen[state.step] = pyro.param("loc_q").detach().clone()

    with pytest.raises(DivergedError, match="steps in a row"):
        fit_svi(_nan_model_at(3), guide, x, steps=50, on_nan="skip", callbacks=[record])
    # after the first NaN step no update happened
    assert torch.equal(seen[3], seen[4]) and torch.equal(seen[3], seen[10])
    assert torch.isfinite(seen[10])


def test_one_nan_batch_is_skipped_and_training_goes_on():
    calls = {"n": 0}

    def loss_fn(x):
        calls["n"] += 1
        w = pyro.param("w", torch.tensor(2.0))
        loss = (w - 1.0) ** 2 * x.sum()
        return loss * math.nan if calls["n"] == 3 else loss

    # with pyro.param sites, params=None discovers them
    res = fit_loss(loss_fn, None, torch.ones(4, 1), steps=200, lr=0.05)
    assert res.skipped == [2]
    assert math.isnan(res.losses[2])
    assert pyro.param("w").item() == pytest.approx(1.0, abs=0.05)


def test_nan_gradient_with_finite_loss_is_caught():
    p = torch.nn.Parameter(torch.tensor(0.0))

    def loss_fn():
        return torch.sqrt(p)  # finite loss 0, gradient inf at 0

    with pytest.raises(DivergedError, match="step 0 .*a gradient was not finite"):
        fit_loss(loss_fn, [p], None, steps=3, on_nan="stop")
    assert p.item() == 0.0


def test_hooks_epochs_and_resume_give_the_same_result():
    x = torch.randn(64)

    def run(epochs, start_epoch=0, start_step=0, optim_state=None, checkpoints=None):
        return fit_svi(model, guide, x, epochs=epochs, batch_size=16, lr=0.05,
                       start_epoch=start_epoch, start_step=start_step, optim_state=optim_state,
                       checkpoint=checkpoints.append if checkpoints is not None else None)

    pyro.set_rng_seed(1)
    full = run(4)
    loc_full = pyro.param("loc_q").item()
    assert full.epochs == 4 and full.steps == 16 and len(full.epoch_losses) == 4

    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    cps = []
    first = run(2, checkpoints=cps)
    assert [c.epoch for c in cps] == [1, 2]
    saved = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    opt_state = first.optimizer.state_dict()
    rng = torch.get_rng_state()
    # a fresh process would rebuild the params from the checkpoint
    pyro.clear_param_store()
    for k, v in saved.items():
        pyro.param(k, v.clone(), constraint=constraints.positive if k == "scale_q" else constraints.real)
    torch.set_rng_state(rng)
    second = run(4, start_epoch=2, start_step=first.steps, optim_state=opt_state)
    assert second.epochs == 4 and second.steps == 16
    assert pyro.param("loc_q").item() == pytest.approx(loc_full, abs=1e-6)


def test_callback_returning_true_stops():
    res = fit_svi(model, guide, torch.randn(8), epochs=10, callbacks=[lambda st: st.epoch >= 3])
    assert res.epochs == 3


def test_stale_param_store_is_reported():
    from probgen.models.vae import VAE

    x = torch.bernoulli(torch.full((8, 1, 4, 4), 0.5))
    VAE((1, 4, 4), 2, (8,)).model(x)  # registers "decoder$$$..." for one set of tensors
    VAE((1, 4, 4), 2, (8,)).guide(x)
    v = VAE((1, 4, 4), 2, (8,))
    with pytest.raises(ConfigError, match="clear_param_store"):
        fit_svi(v.model, v.guide, x, steps=1)


def test_options_are_checked():
    with pytest.raises(ConfigError, match="give epochs .* or steps"):
        fit_svi(model, guide, torch.randn(4))
    with pytest.raises(ConfigError, match="loss must be one of trace, mean-field, enum; got 'trace_elbo'"):
        fit_svi(model, guide, torch.randn(4), steps=1, loss="trace_elbo")
    with pytest.raises(ConfigError, match="on_nan must be one of skip, stop; got 'ignore'"):
        fit_svi(model, guide, torch.randn(4), steps=1, on_nan="ignore")
    with pytest.raises(ConfigError, match="batch_size must be a positive integer; got 0"):
        fit_svi(model, guide, torch.randn(4), steps=1, batch_size=0)
    with pytest.raises(ConfigError, match="not an optimiser instance"):
        fit_svi(model, guide, torch.randn(4), steps=1,
                optim=torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))]))
