"""The VAE as a Pyro program: structure, likelihood checks, bounds, training, checkpoints, recipe."""

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO

from probgen.data.base import Dataset
from probgen.errors import ConfigError, DataError
from probgen.inference.svi import fit_svi
from probgen.models.vae import VAE
from probgen.runs import Run

SHAPE = (1, 8, 8)




def _binary(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    # two prototype images with flipped pixels: structure a VAE can learn quickly
    protos = (torch.rand(2, *SHAPE, generator=g) > 0.5).float()
    idx = torch.randint(0, 2, (n,), generator=g)
    flip = (torch.rand(n, *SHAPE, generator=g) < 0.05).float()
    return (protos[idx] - flip).abs(), idx


def _dataset(n=200):
    x, y = _binary(n)
    return Dataset(name="toy-binary", train=x[:150], val=x[150:180], test=x[180:], shape=SHAPE,
                   kind="image", binarize="fixed", train_labels=y[:150], val_labels=y[150:180],
                   test_labels=y[180:], num_classes=2)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous-bernoulli", "gaussian"])
def test_model_and_guide_share_sites_and_shapes(arch, likelihood):
    vae = VAE(SHAPE, 3, (16,), arch=arch, likelihood=likelihood)
    x, _ = _binary(5)
    guide_tr = poutine.trace(vae.guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x)
    assert guide_tr.nodes["z"]["fn"].event_shape == (3,)
    assert model_tr.nodes["z"]["fn"].batch_shape == (5,)
    assert model_tr.nodes["x"]["fn"].event_shape == SHAPE
    assert torch.equal(model_tr.nodes["z"]["value"], guide_tr.nodes["z"]["value"])
    # the protocol
    z = torch.randn(4, 5, 3)
    assert vae.decode(z).shape == (4, 5, *SHAPE)
    assert vae.log_likelihood(x, z).shape == (4, 5)
    assert vae.prior_log_prob(z).shape == (4, 5)
    assert vae.encode(x).shape == (5, 3)
    assert vae.sample(7).shape == (7, *SHAPE)
    rec = vae.elbo(x, num_samples=3)
    assert rec.total.shape == rec.kl.shape == rec.reconstruction.shape == rec.mc_stderr.shape == (5,)
    assert vae.iwae_bound(x, 6).total.shape == (5,)


def test_prior_log_prob_matches_torch():
    vae = VAE(SHAPE, 4, (8,))
    z = torch.randn(3, 4)
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(vae.prior_log_prob(z), ref)


def test_the_plate_scales_a_minibatch_to_the_data_set():
    vae = VAE(SHAPE, 2, (8,))
    x, _ = _binary(10)
    guide_tr = poutine.trace(vae.guide).get_trace(x, num_data=1000)
    model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x, num_data=1000)
    unscaled = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x)
    model_tr.compute_log_prob()
    unscaled.compute_log_prob()
    ratio = model_tr.nodes["x"]["log_prob_sum"] / unscaled.nodes["x"]["log_prob_sum"]
    assert ratio.item() == pytest.approx(100.0)
    with pytest.raises(ConfigError, match="num_data .* must be >= the batch size 10; got 5"):
        vae.model(x, num_data=5)


def test_bernoulli_refuses_grey_and_out_of_range_pixels():
    vae = VAE(SHAPE, 2, (8,))
    grey = torch.rand(4, *SHAPE)
    with pytest.raises(DataError, match="expects 0/1 pixels, but x holds grey values .* Binarise the data"):
        vae.model(grey)
    with pytest.raises(DataError, match=r"values in \[0, 1\]\), but x has values in \[.*, 25\d\]. .*divide 0..255"):
        vae.model(torch.round(grey * 255))
    with pytest.raises(DataError, match="with NaN/inf"):
        vae.model(torch.full((2, *SHAPE), math.nan))
    with pytest.raises(DataError, match="x must have shape"):
        vae.model(torch.zeros(2, 64))
    cb = VAE(SHAPE, 2, (8,), likelihood="continuous-bernoulli")
    cb.model(grey)  # grey values are fine for the continuous Bernoulli
    with pytest.raises(DataError, match=r"'continuous-bernoulli' expects values in \[0, 1\]"):
        cb.model(grey * 255)
    with pytest.raises(ConfigError, match="likelihood must be one of .* Did you mean 'bernoulli'"):
        VAE(SHAPE, 2, likelihood="bernouli")


def test_elbo_of_the_bounds_module_matches_pyros_trace_elbo():
    """Two independent estimators of the same ELBO: probgen's analytic-KL one and Pyro's loss."""
    vae = VAE(SHAPE, 3, (16,))
    x, _ = _binary(20)
    with torch.no_grad():
        ours = vae.elbo(x, num_samples=400)
        pyro_loss = torch.tensor([Trace_ELBO().loss(vae.model, vae.guide, x) for _ in range(200)])
    mean_pyro = -pyro_loss.mean() / x.shape[0]
    se = pyro_loss.std() / math.sqrt(200) / x.shape[0] + ours.mc_stderr.mean() / math.sqrt(x.shape[0])
    assert abs(float(ours.total.mean() - mean_pyro)) < 4 * float(se)
    # and the analytic KL equals its Monte Carlo estimate
    mc = __import__("probgen.inference.bounds", fromlist=["elbo"]).elbo(vae, x, num_samples=2000, analytic_kl=False)
    assert torch.allclose(mc.kl, ours.kl, atol=0.15)


def test_one_training_step_changes_every_network():
    vae = VAE(SHAPE, 2, (8,), likelihood="gaussian")
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    x, _ = _binary(16)
    res = fit_svi(vae.model, vae.guide, x, steps=1)
    assert res.steps == 1
    changed = {k for k, v in vae.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == set(before), f"unchanged: {set(before) - changed}"
    # the learned Gaussian scale went through the param store
    assert "likelihood$$$raw_scale" in pyro.get_param_store().keys()


def test_training_improves_the_bound_and_iwae_is_tighter():
    vae = VAE(SHAPE, 2, (32,))
    x, _ = _binary(256)
    with torch.no_grad():
        start = vae.elbo(x[:64], num_samples=5).total.mean()
    fit_svi(vae.model, vae.guide, x, epochs=40, batch_size=64, lr=3e-3,
            model_kwargs={"num_data": x.shape[0]})
    with torch.no_grad():
        end = vae.elbo(x[:64], num_samples=20).total.mean()
        iw = vae.iwae_bound(x[:64], 200).total.mean()
    assert end > start + 10
    assert iw > end


def test_state_dict_round_trip_through_a_run_checkpoint(tmp_path):
    vae = VAE(SHAPE, 3, (16,), likelihood="gaussian")
    fit_svi(vae.model, vae.guide, _binary(32)[0], steps=3)
    run = Run.create(tmp_path / "run", {"model": "vae", "data": "toy"})
    run.save_checkpoint({"model": vae.state_dict(), "epoch": 1}, step=3)
    again = VAE(SHAPE, 3, (16,), likelihood="gaussian")
    payload = Run.open(tmp_path / "run").load_checkpoint(required=True)
    again.load_state_dict(payload["state"]["model"])
    x = _binary(4, seed=5)[0]
    torch.testing.assert_close(again.encode(x), vae.encode(x))
    torch.testing.assert_close(again.decode(torch.ones(2, 3)), vae.decode(torch.ones(2, 3)))
    assert payload["step"] == 3


def test_evaluate_reports_the_bounds():
    from probgen.eval import likelihood_metrics

    data = _dataset()
    vae = VAE(SHAPE, 2, (16,))
    m = likelihood_metrics(vae, data, "test", k=50)
    assert m["elbo"].value <= m["iwae"].value + 1.0
    assert m["log_likelihood"].value is None
    assert m["elbo_kl"].value > 0


def test_reparam_normal_scores_its_draw_like_pyros_normal():
    """The guide's Normal draws what Pyro's Normal draws and scores its own draw from the
    noise: same value and the same gradient (the pathwise terms cancel), the usual formula
    for any other tensor."""
    import pyro.distributions as pdist

    from probgen.models.vae import ReparamNormal

    def grads(cls, seed):
        loc = torch.randn(5, 3, generator=torch.Generator().manual_seed(1)).requires_grad_()
        scale = torch.rand(5, 3, generator=torch.Generator().manual_seed(2)).add(0.2).requires_grad_()
        q = cls(loc, scale).to_event(1)
        torch.manual_seed(seed)
        z = q.rsample()
        lp = q.log_prob(z)
        # an ELBO-like objective: a model term through z, minus log q(z)
        (z.pow(3).sum() - lp.sum()).backward()
        return z.detach(), lp.detach(), loc.grad, scale.grad

    z0, lp0, gl0, gs0 = grads(pdist.Normal, 7)
    z1, lp1, gl1, gs1 = grads(ReparamNormal, 7)
    assert torch.equal(z0, z1)  # the same random numbers
    torch.testing.assert_close(lp1, lp0)
    torch.testing.assert_close(gl1, gl0)
    torch.testing.assert_close(gs1, gs0)
    # any other value, a detached copy or a view of the draw, takes the usual formula
    q = ReparamNormal(torch.zeros(4), torch.ones(4) * 2)
    z = q.rsample()
    for other in (z.detach(), z.view(z.shape), torch.ones(4)):
        torch.testing.assert_close(q.log_prob(other), pdist.Normal(torch.zeros(4), torch.ones(4) * 2).log_prob(other))


def test_standard_normal_prior_scores_like_pyros_normal():
    """The prior's short log-density equals Normal(0, 1)'s for its own shape, for draws with
    particle dimensions in front, after expand, and (by the general formula) for values that
    broadcast; its draws are Normal(0, 1)'s."""
    import pyro.distributions as pdist

    from probgen.models.vae import StandardNormal

    like = torch.zeros((), dtype=torch.float64)
    p = StandardNormal((6, 3), like=like)
    ref = pdist.Normal(torch.zeros(6, 3, dtype=torch.float64), torch.ones(6, 3, dtype=torch.float64))
    assert p.batch_shape == (6, 3) and p.loc.dtype == torch.float64
    for value in (torch.randn(6, 3, dtype=torch.float64), torch.randn(4, 6, 3, dtype=torch.float64),
                  torch.randn(3, dtype=torch.float64), torch.randn(1, 3, dtype=torch.float64)):
        torch.testing.assert_close(p.log_prob(value), ref.log_prob(value))
    wider = p.expand((2, 6, 3))
    assert isinstance(wider, StandardNormal) and wider.batch_shape == (2, 6, 3)
    v = torch.randn(2, 6, 3, dtype=torch.float64)
    torch.testing.assert_close(wider.to_event(1).log_prob(v), ref.expand((2, 6, 3)).to_event(1).log_prob(v))
    torch.manual_seed(0)
    a = p.sample((2,))
    torch.manual_seed(0)
    torch.testing.assert_close(a, ref.sample((2,)))


@pytest.mark.parametrize("shape,event_dims", [((7, 1, 28, 28), 3), ((3, 5, 1, 8, 8), 3), ((4, 10), 1)])
def test_bernoulli_image_is_pyros_bernoulli_to_event_to_the_last_bit(shape, event_dims):
    """The model's p(x|z) for 0/1 pixels saves a pass by negating the summed cross-entropy;
    value and gradient equal those of Bernoulli(logits).to_event(...) exactly."""
    import pyro.distributions as dist

    from probgen.models.vae import BernoulliImage

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(shape, generator=g)
    x = torch.bernoulli(torch.rand(shape, generator=g))
    a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ref = dist.Bernoulli(logits=a).to_event(event_dims)
    ours = BernoulliImage(b, event_dims)
    assert (ours.batch_shape, ours.event_shape) == (ref.batch_shape, ref.event_shape)
    lp_ref, lp = ref.log_prob(x), ours.log_prob(x)
    assert torch.equal(lp, lp_ref)
    lp_ref.sum().backward()
    lp.sum().backward()
    assert torch.equal(a.grad, b.grad)
    # another shape (broadcast) takes the general formula
    wide = x.expand(2, *shape)
    assert torch.equal(ours.log_prob(wide), ref.log_prob(wide))
