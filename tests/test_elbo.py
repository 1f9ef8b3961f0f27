"""probgen's Trace_ELBO against Pyro's: the same value and gradient on every kind of program,
the short path where it applies and Pyro's where it does not."""

import pyro
import pyro.distributions as dist
import pyro.infer
import pytest
import torch
from pyro import poutine
from pyro.distributions import constraints

from probgen.inference.elbo import Trace_ELBO
from probgen.models.vae import VAE


def _loss_and_grads(elbo, model, guide, params, *args, seed=0, validate=False, **kwargs):
    torch.manual_seed(seed)
    with pyro.validation_enabled(validate):
        loss = elbo.differentiable_loss(model, guide, *args, **kwargs)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return loss.detach(), grads


def _assert_same_as_pyro(model, guide, params, *args, **kwargs):
    """Value and gradients of a step of ours, after a first step (Pyro's) of the same pair."""
    ours = Trace_ELBO()
    _loss_and_grads(ours, model, guide, params, *args, **kwargs)
    ours, our_grads = _loss_and_grads(ours, model, guide, params, *args, **kwargs)
    ref, ref_grads = _loss_and_grads(pyro.infer.Trace_ELBO(), model, guide, params, *args, **kwargs)
    assert torch.equal(ours, ref), (float(ours), float(ref))  # to the last bit, as resuming needs
    for g, h in zip(our_grads, ref_grads, strict=True):
        if h is None:
            assert g is None or torch.count_nonzero(g) == 0
        else:
            assert torch.allclose(g, h, rtol=1e-5, atol=1e-6)


class _Spy:
    """Counts the steps that went to Pyro's Trace_ELBO instead of the short path."""

    def __init__(self, monkeypatch):
        self.pyro_calls = 0
        original = pyro.infer.Trace_ELBO.differentiable_loss

        def counted(elbo, *args, **kwargs):
            self.pyro_calls += 1
            return original(elbo, *args, **kwargs)

        monkeypatch.setattr(pyro.infer.Trace_ELBO, "differentiable_loss", counted)


def test_the_vae_gets_pyros_value_and_gradient_on_the_short_path(monkeypatch):
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = VAE((1, 6, 6), latent_dim=3, hidden=(8,))
    x = (torch.rand(10, 1, 6, 6) < 0.4).float()
    _assert_same_as_pyro(vae.model, vae.guide, list(vae.parameters()), x, num_data=1000)
    spy = _Spy(monkeypatch)
    ours = Trace_ELBO()
    for seed in range(3):  # the first step is Pyro's, the next two take the short path
        value, _ = _loss_and_grads(ours, vae.model, vae.guide, list(vae.parameters()), x,
                                   num_data=1000, seed=seed)
    assert spy.pyro_calls == 1
    ref, _ = _loss_and_grads(pyro.infer.Trace_ELBO(), vae.model, vae.guide,
                             list(vae.parameters()), x, num_data=1000, seed=2)
    assert torch.equal(value, ref)
    # the minibatch scale N/n is applied: the estimate is of the whole data set's ELBO
    full, _ = _loss_and_grads(ours, vae.model, vae.guide, list(vae.parameters()), x, seed=2)
    assert float(value) == pytest.approx(100 * float(full), rel=1e-5)


def _user_program():
    """Two latents (one depending on the other), nested plates, poutine.scale and a mask."""
    w = torch.nn.Parameter(torch.tensor([0.3, -0.2]))

    def model(x, mask):
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        with pyro.plate("groups", 2, dim=-2):
            b = pyro.sample("b", dist.Normal(a.expand(2, 1), 2.0))
            with pyro.plate("data", x.shape[-1], dim=-1), poutine.scale(scale=3.0):
                pyro.sample("x", dist.Normal(b, 0.5).mask(mask), obs=x)

    def guide(x, mask):
        pyro.module("w", torch.nn.ParameterDict({"w": w}))
        loc = pyro.param("a_loc", torch.tensor(0.1))
        scale = pyro.param("a_scale", torch.tensor(0.8), constraint=constraints.positive)
        a = pyro.sample("a", dist.Normal(loc, scale))
        with pyro.plate("groups", 2, dim=-2):
            pyro.sample("b", dist.Normal(a + w.reshape(2, 1), 0.7))

    return model, guide, w


def test_a_user_program_with_plates_scales_masks_and_dependent_latents(monkeypatch):
    pyro.clear_param_store()
    model, guide, w = _user_program()
    x = torch.randn(2, 5)
    mask = torch.tensor([True, True, False, True, True])
    with pyro.validation_enabled(False):
        guide(x, mask)  # puts the params in the store
    params = [w, pyro.param("a_loc").unconstrained(), pyro.param("a_scale").unconstrained()]
    spy = _Spy(monkeypatch)
    ours = Trace_ELBO()
    for _ in range(3):
        _loss_and_grads(ours, model, guide, params, x, mask)
    assert spy.pyro_calls == 1
    _assert_same_as_pyro(model, guide, params, x, mask)


def test_a_subsampling_plate_scales_like_pyros():
    pyro.clear_param_store()
    loc = torch.nn.Parameter(torch.zeros(()))

    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 3.0))
        with pyro.plate("data", 50, subsample_size=7) as idx:
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x[idx])

    def guide(x):
        pyro.sample("mu", dist.Normal(loc, 0.5))

    x = torch.randn(50) + 1.0
    # the subsample is drawn inside the program: same seed, same indices on both paths
    _assert_same_as_pyro(model, guide, [loc], x)


def test_what_the_short_path_cannot_do_goes_to_pyro(monkeypatch):
    pyro.clear_param_store()
    probs = torch.nn.Parameter(torch.tensor(0.3))
    loc = torch.nn.Parameter(torch.tensor(0.0))

    def model(x):
        c = pyro.sample("c", dist.Bernoulli(0.5))
        m = pyro.sample("m", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(m + c, 1.0), obs=x)

    def guide(x):
        pyro.sample("c", dist.Bernoulli(probs.clamp(0.01, 0.99)))  # discrete: score function
        pyro.sample("m", dist.Normal(loc, 1.0))

    x = torch.randn(4)
    spy = _Spy(monkeypatch)
    _assert_same_as_pyro(model, guide, [probs, loc], x)
    assert spy.pyro_calls == 3  # both steps of ours, and the reference

    # a guide whose later steps draw a discrete site: that step and the rest go to Pyro
    calls = []

    def changing_guide(x):
        calls.append(1)
        if len(calls) > 2:
            pyro.sample("c", dist.Bernoulli(probs.clamp(0.01, 0.99)))
        pyro.sample("m", dist.Normal(loc, 1.0))

    def changing_model(x):
        if len(calls) > 2:
            pyro.sample("c", dist.Bernoulli(0.5))
        m = pyro.sample("m", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(m, 1.0), obs=x)

    ours, spy.pyro_calls = Trace_ELBO(), 0
    for _ in range(4):
        _loss_and_grads(ours, changing_model, changing_guide, [probs, loc], x)
    # steps 1 (first) 3 (the discrete draw appears; its guide ran twice) and 4 are Pyro's
    assert spy.pyro_calls == 3 and len(calls) == 5

    def continuous_model(x):
        m = pyro.sample("m", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(m, 1.0), obs=x)

    def continuous_guide(x):
        pyro.sample("m", dist.Normal(loc, 1.0))

    # several particles, and validation on, are Pyro's on every step
    for elbo, validate, pyro_steps in ((Trace_ELBO(num_particles=3), False, 3),
                                       (Trace_ELBO(), True, 3), (Trace_ELBO(), False, 1)):
        spy.pyro_calls = 0
        for _ in range(3):
            with pyro.validation_enabled(validate):
                elbo.differentiable_loss(continuous_model, continuous_guide, x)
        assert spy.pyro_calls == pyro_steps


def test_validation_on_keeps_pyros_checks():
    """With validation on, a guide that misses a model site is reported as Pyro reports it."""
    def model(x):
        pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("b", dist.Normal(0.0, 1.0))

    def guide(x):
        pyro.sample("a", dist.Normal(0.0, 1.0))

    with pyro.validation_enabled(True), pytest.warns(UserWarning, match="not guide"):
        Trace_ELBO().differentiable_loss(model, guide, torch.zeros(1))


def test_fit_svi_trains_the_vae_on_the_short_path_to_pyros_parameters():
    """A whole fit: the default loss (ours) and Pyro's Trace_ELBO end at the same parameters."""
    from probgen.inference.svi import fit_loss

    torch.manual_seed(0)
    x = (torch.rand(40, 1, 4, 4) < 0.5).float()
    finals = []
    for elbo in (Trace_ELBO(), pyro.infer.Trace_ELBO()):
        pyro.clear_param_store()
        torch.manual_seed(1)
        vae = VAE((1, 4, 4), latent_dim=2, hidden=(6,))
        fit_loss(lambda xb, elbo=elbo, vae=vae: elbo.differentiable_loss(
                     vae.model, vae.guide, xb, num_data=40),
                 list(vae.parameters()), x, epochs=3, batch_size=10, seed=0)
        finals.append(torch.cat([p.detach().reshape(-1) for p in vae.parameters()]))
    assert torch.allclose(finals[0], finals[1], rtol=1e-4, atol=1e-6)

