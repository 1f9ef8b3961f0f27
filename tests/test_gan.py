"""The GAN: losses against closed forms, training steps, the model protocol, inversion, the recipe."""

import math

import pytest
import torch
from torch import nn

from probgen.errors import ConfigError, DataError, DivergedError
from probgen.inference.adversarial import LOSSES, GANTrainer, fit_gan, get_loss
from probgen.models.gan import GAN
from probgen.models.nets import DCGANDiscriminator, DCGANGenerator, gan_networks


# ----------------------------------------------------------------------------- losses
def test_losses_at_zero_logits_match_closed_forms():
    z = torch.zeros(7)
    log2 = math.log(2)
    assert float(LOSSES["ns"].d_loss(z, z)) == pytest.approx(2 * log2)
    assert float(LOSSES["ns"].g_loss(z)) == pytest.approx(log2)       # -log(1/2)
    assert float(LOSSES["minimax"].g_loss(z)) == pytest.approx(-log2)  # log(1 - 1/2)
    assert float(LOSSES["hinge"].d_loss(z, z)) == pytest.approx(2.0)
    assert float(LOSSES["hinge"].g_loss(z)) == pytest.approx(0.0)
    real, fake = torch.tensor([2.0, 4.0]), torch.tensor([-1.0, 0.0])
    assert float(LOSSES["wgan-gp"].d_loss(real, fake)) == pytest.approx(-0.5 - 3.0)


def test_minimax_generator_gradient_saturates_where_non_saturating_does_not():
    # Goodfellow et al. 2014, section 3: when D confidently rejects G(z) (logit -> -inf) the
    # gradient of log(1 - D) vanishes while that of -log D stays near -1.
    logit = torch.tensor([-10.0], requires_grad=True)
    (g_mm,) = torch.autograd.grad(LOSSES["minimax"].g_loss(logit), logit)
    (g_ns,) = torch.autograd.grad(LOSSES["ns"].g_loss(logit), logit)
    assert abs(float(g_mm)) < 1e-4
    assert float(g_ns) == pytest.approx(-1.0, abs=1e-4)


def test_unknown_loss_names_the_choices():
    with pytest.raises(ConfigError, match="loss must be one of ns, minimax, hinge, wgan-gp; got 'hindge'.*'hinge'"):
        get_loss("hindge")


# ----------------------------------------------------------------------------- training steps
def _toy_trainer(loss="ns", pack=1, norm="none", **kw):
    g, d = gan_networks((2,), 2, pack=pack, norm=norm, width=16, depth=2)
    return GANTrainer(g, d, latent_dim=2, loss=loss, lr=1e-3, **kw)


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_one_step_changes_both_networks(loss):
    tr = _toy_trainer(loss, pack=2)
    before_g = [p.detach().clone() for p in tr.G.parameters()]
    before_d = [p.detach().clone() for p in tr.D.parameters()]
    rec = tr.step(torch.randn(8, 2))
    assert set(rec) == {"loss_d", "loss_g", "d_real", "d_fake"}
    assert all(torch.isfinite(v) for v in rec.values())
    # every weight matrix moves (an output bias may not: with hinge or Wasserstein losses its
    # gradient is the difference of two equal means at initialisation)
    assert all(not torch.equal(a, b) for a, b in zip(before_g, tr.G.parameters()) if a.dim() == 2)
    assert all(not torch.equal(a, b) for a, b in zip(before_d, tr.D.parameters()) if a.dim() == 2)
    assert all(p.requires_grad for p in tr.D.parameters())


def test_dcgan_step_on_28x28_with_batchnorm_changes_weights_and_runs_d_once_per_step():
    g = DCGANGenerator(8, (1, 28, 28), width=8, value_range=(-1, 1))
    d = DCGANDiscriminator((1, 28, 28), width=8, norm="batch")
    tr = GANTrainer(g, d, latent_dim=8, loss="ns")
    calls = []
    d.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    before = [p.detach().clone() for p in g.parameters()]
    tr.d_step(torch.rand(6, 1, 28, 28) * 2 - 1)
    assert calls == [12]  # ONE pass over 6 real + 6 generated images
    tr.g_step(torch.rand(6, 1, 28, 28) * 2 - 1)
    assert calls == [12, 12]  # BatchNorm in D: the generator is judged beside real data
    assert any(not torch.equal(a, b) for a, b in zip(before, g.parameters()))


@pytest.mark.parametrize("momentum", [0.1, None])
def test_grouped_batch_norm_is_batch_norm_run_on_each_group_in_turn(momentum):
    from probgen.inference.adversarial import batch_groups
    from probgen.models.nets import GroupedBatchNorm2d

    torch.manual_seed(0)
    grouped = GroupedBatchNorm2d(3, momentum=momentum)
    plain = nn.BatchNorm2d(3, momentum=momentum)  # the oracle: torch's BatchNorm, one pass per group
    with torch.no_grad():
        grouped.weight.uniform_(0.5, 2)
        grouped.bias.normal_()
    plain.load_state_dict(grouped.state_dict())
    x = (torch.randn(10, 3, 4, 4) * torch.tensor([1.0, 3.0])[torch.arange(10) // 5].reshape(10, 1, 1, 1)).requires_grad_(True)
    w = torch.randn(10, 3, 4, 4)
    with batch_groups(grouped, 2):
        y = grouped(x)
    x2 = x.detach().clone().requires_grad_(True)
    y2 = torch.cat([plain(x2[:5]), plain(x2[5:])])
    torch.testing.assert_close(y, y2)
    (y * w).sum().backward()
    (y2 * w).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(grouped.weight.grad, plain.weight.grad)
    torch.testing.assert_close(grouped.bias.grad, plain.bias.grad)
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(grouped.state_dict()[k], v)
    assert grouped.groups == 1  # restored on exit
    torch.testing.assert_close(grouped(x.detach()), plain(x.detach()))  # one group: plain BatchNorm
    grouped.eval(), plain.eval()
    with batch_groups(grouped, 2):
        torch.testing.assert_close(grouped(x.detach()), plain(x.detach()))  # eval: running statistics


def _reference_dcgan_step(g, d, opt_g, opt_d, real, nz):
    """pytorch/examples dcgan/main.py, one iteration: D on the real batch and on the fake batch
    in two passes, then G on the same fake batch (BCE on D's probabilities)."""
    bce = nn.BCEWithLogitsLoss()
    b = real.shape[0]
    d.zero_grad()
    err_real = bce(d(real), torch.ones(b))
    err_real.backward()
    fake = g(torch.randn(b, nz))
    err_fake = bce(d(fake.detach()), torch.zeros(b))
    err_fake.backward()
    opt_d.step()
    g.zero_grad()
    bce(d(fake), torch.ones(b)).backward()
    opt_g.step()


def test_dcgan_step_with_batchnorm_is_the_pytorch_examples_step():
    torch.manual_seed(0)
    g = DCGANGenerator(8, (1, 28, 28), width=8, value_range=(-1, 1))
    d = DCGANDiscriminator((1, 28, 28), width=8, norm="batch")
    g_ref = DCGANGenerator(8, (1, 28, 28), width=8, value_range=(-1, 1))
    d_ref = DCGANDiscriminator((1, 28, 28), width=8, norm="batch")
    # the oracle's discriminator holds torch's own BatchNorm2d
    d_ref.conv = nn.Sequential(*[nn.BatchNorm2d(m.num_features) if isinstance(m, nn.BatchNorm2d) else m
                                 for m in d_ref.conv])
    g_ref.load_state_dict(g.state_dict())
    d_ref.load_state_dict(d.state_dict())
    tr = GANTrainer(g, d, latent_dim=8, loss="ns", lr=2e-4)
    opt_g = torch.optim.Adam(g_ref.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d_ref.parameters(), lr=2e-4, betas=(0.5, 0.999))
    reals = torch.rand(3, 6, 1, 28, 28) * 2 - 1
    for i, real in enumerate(reals):
        torch.manual_seed(100 + i)
        tr.step(real)
        torch.manual_seed(100 + i)
        _reference_dcgan_step(g_ref, d_ref, opt_g, opt_d, real, 8)
    # weights, and BatchNorm running statistics (three updates of D's per step, one of G's)
    for ours, ref in ((g, g_ref), (d, d_ref)):
        for (k, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)


def test_gradient_penalty_refuses_batchnorm_and_batches_must_fit_the_pack():
    with pytest.raises(ConfigError, match="BatchNorm in the discriminator breaks"):
        _toy_trainer("wgan-gp", norm="batch")
    tr = _toy_trainer(pack=4)
    with pytest.raises(ConfigError, match="batch size must be a multiple of pack=4.*got a batch of 6"):
        tr.step(torch.randn(6, 2))


class _LinearCritic(nn.Module):
    """D(x) = w . x + b on packed groups: grad_x D = w for every real example."""

    def __init__(self, dim, pack=1):
        super().__init__()
        self.lin, self.pack = nn.Linear(dim * pack, 1), pack

    def forward(self, x):
        return self.lin(x.reshape(x.shape[0] // self.pack, -1)).squeeze(1)


@pytest.mark.parametrize("loss,pack", [("ns", 1), ("minimax", 2), ("wgan-gp", 1)])
def test_r1_penalty_is_half_gamma_squared_gradient_norm(loss, pack):
    # Mescheder et al. 2018: R1 = gamma / 2 E ||grad_x D(x)||^2 on real data; for a linear D
    # the gradient is w, so the loss grows by gamma / 2 ||w||^2 and its gradient by gamma w
    gamma, real = 3.0, torch.randn(8, 2)
    recs, grads = [], []
    for r1 in (0.0, gamma):
        torch.manual_seed(0)
        g, d = nn.Linear(2, 2), _LinearCritic(2, pack)
        w0 = d.lin.weight.detach().clone()  # the weights before the step
        tr = GANTrainer(g, d, latent_dim=2, loss=loss, r1=r1)
        torch.manual_seed(1)
        recs.append(tr.d_step(real))
        grads.append(d.lin.weight.grad.clone())
    assert float(recs[1]["loss_d"] - recs[0]["loss_d"]) == pytest.approx(0.5 * gamma * float(w0.pow(2).sum()), rel=1e-5)
    torch.testing.assert_close(grads[1] - grads[0], gamma * w0, rtol=1e-5, atol=1e-6)


def test_r1_refuses_batchnorm_and_negative_weights():
    with pytest.raises(ConfigError, match="the R1 penalty penalises the gradient of D at each example"):
        _toy_trainer("ns", norm="batch", r1=1.0)
    with pytest.raises(ConfigError, match="r1 .* must be >= 0; got -1"):
        _toy_trainer("ns", r1=-1.0)


def test_a_nan_loss_raises_and_leaves_the_parameters_alone():
    tr = _toy_trainer()
    before = [p.detach().clone() for p in tr.D.parameters()]
    with pytest.raises(DivergedError, match="discriminator loss became nan at step 0"):
        tr.d_step(torch.full((4, 2), float("nan")))
    assert all(torch.equal(a, b) for a, b in zip(before, tr.D.parameters()))


def test_packed_discriminator_judges_groups():
    d = gan_networks((2,), 2, pack=3, width=8, depth=1)[1]
    assert d(torch.randn(9, 2)).shape == (3,)
    x = torch.randn(6, 2)
    # group i holds samples 3i..3i+2: its output depends on them and no other
    assert torch.allclose(d(x)[:1], d(x[:3]))


def test_the_gan_batch_stream_is_a_function_of_seed_and_index():
    from itertools import islice

    from probgen.data.batching import batch_stream

    x = torch.arange(20.0).reshape(10, 2)

    def stream(start=0):
        return (b for (b,) in batch_stream((x,), 3, seed=5, start=start))

    seq = list(islice(stream(), 7))
    assert torch.equal(next(stream(start=4)), seq[4])  # random access, no iterator state
    epoch0 = torch.cat(seq[:3])[:, 0].tolist()
    assert len(set(epoch0)) == 9  # an epoch draws without replacement (last one dropped)
    with pytest.raises(ConfigError, match="batch size must be between 1 and the 10 training examples; got 11"):
        next(batch_stream((x,), 11, seed=5))


def test_a_short_run_with_the_toy_defaults_moves_samples_onto_the_ring():
    from probgen.data import load_dataset
    from probgen.eval.modes import mode_statistics
    from probgen.recipes.gan import DEFAULTS

    data = load_dataset("ring8")
    o = DEFAULTS["toy"]
    torch.manual_seed(0)
    g, d = gan_networks((2,), o["latent_dim"], pack=o["pack"], width=o["width"], depth=o["depth"])
    tr = GANTrainer(g, d, latent_dim=2, loss=o["loss"], lr=o["lr"], betas=(o["beta1"], o["beta2"]),
                    r1=o["r1"])
    gan = GAN(g, d, latent_dim=2, data_shape=(2,))
    z = torch.randn(2000, 2)

    @torch.no_grad()
    def radius_error():  # median | |x| - 1 |: distance to the ring of means
        return float((gan.decode(z).norm(dim=1) - 1).abs().median())

    before = radius_error()
    res = fit_gan(tr, data, 300, batch_size=o["batch_size"], seed=0, log_every=100,
                  lr_schedule=o["lr_decay"])
    assert [h["step"] for h in res.history] == [100, 200, 300]
    assert radius_error() < 0.5 * before
    with torch.no_grad():
        s = mode_statistics(gan.decode(z), data.density.means, data.density.sigma)
    assert s["reverse_kl_nearest"] < math.log(8)  # not all in one mode's cell


def test_linear_decay_schedule():
    from probgen.inference.adversarial import linear_decay

    assert [linear_decay(s, 100) for s in (0, 49, 50, 75, 100)] == [1.0, 1.0, 1.0, 0.5, 0.0]
    tr = _toy_trainer()
    tr.set_lr_factor(0.25)
    assert tr.opt_g.param_groups[0]["lr"] == pytest.approx(2.5e-4)
    tr.set_lr_factor(1.0)
    assert tr.opt_d.param_groups[0]["lr"] == pytest.approx(1e-3)
    # how far along the schedule, where a time budget rather than the steps ends the run
    assert [linear_decay(0, 100, fraction=f) for f in (0, 0.5, 0.75, 1, 2)] == [1.0, 1.0, 0.5, 0.0, 0.0]


def test_the_linear_decay_ends_with_a_time_budget_that_stops_the_run_first(tmp_path, monkeypatch):
    """A run stopped by its time budget long before its steps (a compare's share) has decayed
    its learning rates by then, as one that runs its steps has."""
    from probgen.cli import main

    factors = []
    set_factor = GANTrainer.set_lr_factor
    monkeypatch.setattr(GANTrainer, "set_lr_factor",
                        lambda self, f: (factors.append(f), set_factor(self, f)))
    assert main(["train", "gan", "--data", "ring8", "--limit", "512", "--steps", "1000000",
                 "--time-budget", "3", "--width", "16", "--depth", "2", "--log-every", "100000",
                 "--checkpoint-every", "100000", "--device", "cpu", "--quiet",
                 "--out", str(tmp_path / "gan")]) == 0
    assert len(factors) > 20 and all(f == 1.0 for f in factors[:5])  # constant at first
    assert factors[-1] < 0.1  # the budget, not step 500,000 of 1,000,000, ended the decay
    assert all(a >= b for a, b in zip(factors, factors[1:]))


# ----------------------------------------------------------------------------- the model protocol
class _Linear(nn.Module):
    """G(z) = A z + b: invertible by least squares, the oracle for inversion."""

    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = nn.Parameter(a), nn.Parameter(b)

    def forward(self, z):
        return z @ self.a.T + self.b


def test_protocol_shapes_and_prior():
    g = DCGANGenerator(5, (1, 28, 28), width=4)
    gan = GAN(g, latent_dim=5, data_shape=(1, 28, 28))
    z = torch.randn(3, 2, 5)
    assert gan.decode(z).shape == (3, 2, 1, 28, 28)
    assert gan.sample(7).shape == (7, 1, 28, 28)
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(gan.prior_log_prob(z), ref)
    assert g.training  # decode switches to eval mode and back
    with pytest.raises(DataError, match="z must have latent_dim=5.*got shape \\(3, 4\\)"):
        gan.decode(torch.randn(3, 4))
    with pytest.raises(DataError, match="n must be a positive number of samples; got 0"):
        gan.sample(0)


def test_inversion_recovers_the_code_of_a_linear_generator():
    torch.manual_seed(0)
    a, b = torch.randn(6, 3), torch.randn(6)
    gan = GAN(_Linear(a, b), latent_dim=3, data_shape=(6,))
    z_true = torch.randn(10, 3)
    x = z_true @ a.T + b
    z = gan.encode(x, restarts=3, steps=400, lr=0.05)
    oracle = torch.linalg.lstsq(a, (x - b).T).solution.T  # least squares = the true z here
    torch.testing.assert_close(z, oracle, atol=1e-3, rtol=0)
    assert gan.last_inversion.error.max() < 1e-6
    assert gan.last_inversion.restart_errors.shape == (3, 10)
    assert all(p.requires_grad for p in gan.generator.parameters())
    with pytest.raises(DataError, match=r"x must have shape \(N, 6\) to be inverted; got \(2, 5\)"):
        gan.encode(torch.zeros(2, 5))


# ----------------------------------------------------------------------------- the recipe
def _config(**kw):
    cfg = {"model": "gan", "data": "ring8", "seed": 0, "steps": 20, "log_every": 5,
           "checkpoint_every": 10, "loss": None, "batch_size": 64, "lr": None, "lr_d": None,
           "beta1": None, "beta2": None, "latent_dim": None, "pack": None, "width": 16,
           "depth": 2, "norm": None, "d_steps": None, "amp": False,
           # a schedule that decays to 0 at --steps would differ between a 10-step run
           # extended to 20 and a 20-step run; "none" keeps them comparable
           "lr_decay": "none"}
    cfg.update(kw)
    return cfg


def test_recipe_checks_its_options():
    from probgen.data import load_dataset
    from probgen.recipes import gan as recipe

    data = load_dataset("ring8")
    with pytest.raises(ConfigError, match="--batch-size must be a multiple of --pack=4; got 66. Try --batch-size 64"):
        recipe.resolve_config(_config(batch_size=66, pack=4), data)
    with pytest.raises(ConfigError, match="--loss wgan-gp needs a discriminator without BatchNorm"):
        recipe.resolve_config(_config(loss="wgan-gp", norm="batch"), data)
    assert recipe.resolve_config(_config(), data)["pack"] == recipe.DEFAULTS["toy"]["pack"]
    with pytest.raises(ConfigError, match="--r1 must be >= 0"):
        recipe.resolve_config(_config(r1=-0.5), data)
    with pytest.raises(ConfigError, match="--r1 penalises the gradient of D at each real example"):
        recipe.resolve_config(_config(r1=1.0, norm="batch"), data)
    # the toy default reaches the trainer
    cfg = recipe.resolve_config(_config(), data)
    assert recipe.build(cfg, data, "cpu")[1].r1 == recipe.DEFAULTS["toy"]["r1"] == cfg["r1"]


def test_recipe_loss_names_match_the_loss_table():
    from probgen.inference.adversarial import LOSSES
    from probgen.recipes.gan import LOSS_NAMES

    assert set(LOSS_NAMES) == set(LOSSES)


def test_recipe_arch_mlp_on_images_and_dcgan_only_on_images():
    from probgen.data import load_dataset
    from probgen.models.nets import DCGANDiscriminator, MLPDiscriminator
    from probgen.recipes import gan as recipe

    digits = load_dataset("mnist-5k", limit=64, value_range=[-1.0, 1.0], binarize="none")
    cfg = recipe.resolve_config(_config(data="mnist-5k", width=None, depth=None, arch="mlp"), digits)
    assert (cfg["arch"], cfg["norm"]) == ("mlp", "none")  # the MLP defaults, not the DCGAN's BatchNorm
    model, _ = recipe.build(cfg, digits, "cpu")
    assert isinstance(model.discriminator.net, MLPDiscriminator)
    x = model.sample(3)
    assert x.shape == (3, 1, 28, 28) and x.abs().max() <= 1  # tanh: the data's [-1, 1]
    dc = recipe.resolve_config(_config(data="mnist-5k", width=8, arch=None), digits)
    assert dc["arch"] == "dcgan"
    assert isinstance(recipe.build(dc, digits, "cpu")[0].discriminator, DCGANDiscriminator)
    with pytest.raises(ConfigError, match=r"--arch dcgan needs 28x28 or 32x32 images; ring8 has shape \(2,\). Use --arch mlp"):
        recipe.resolve_config(_config(arch="dcgan"), load_dataset("ring8"))


# ----------------------------------------------------------------------------- moving average of G
def test_ema_of_the_generator_is_the_hand_computed_average():
    # after generator step t (from 1): e_t = d_t e_{t-1} + (1 - d_t) p_t, d_t = min(ema, (1+t)/(10+t)),
    # e_0 = the initial weights; written out here in float64 from the weights after each step
    ema = 0.5
    torch.manual_seed(0)
    tr = _toy_trainer("minimax", ema=ema)
    assert tr.sampler is tr.G_ema and not any(p.requires_grad for p in tr.G_ema.parameters())
    avg = [p.detach().double().clone() for p in tr.G.parameters()]
    for t in range(1, 13):
        tr.step(torch.randn(16, 2))
        d = min(ema, (1 + t) / (10 + t))
        avg = [d * e + (1 - d) * p.detach().double() for e, p in zip(avg, tr.G.parameters())]
    assert min(ema, 12 / 21) == ema  # the cap was reached: both parts of the rule were used
    for e, p, q in zip(avg, tr.G_ema.parameters(), tr.G.parameters()):
        torch.testing.assert_close(p.double(), e, rtol=1e-6, atol=1e-7)
        assert not torch.equal(p, q)
    # without an average the generator itself is the sampler and the checkpoint has no copy
    plain = _toy_trainer("minimax")
    assert plain.G_ema is None and plain.sampler is plain.G
    assert "generator_ema" in tr.state_dict() and "generator_ema" not in plain.state_dict()


def test_ema_copies_batchnorm_statistics_and_checks_its_decay():
    g, d = gan_networks((1, 28, 28), 8, value_range=(-1.0, 1.0), width=4, arch="dcgan", norm="batch")
    tr = GANTrainer(g, d, latent_dim=8, ema=0.9)
    tr.step(torch.rand(4, 1, 28, 28) * 2 - 1)
    bufs = list(tr.G.buffers())
    assert bufs and all(torch.equal(a, b) for a, b in zip(tr.G_ema.buffers(), bufs))
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ConfigError, match="ema .* must be in \\[0, 1\\)"):
            _toy_trainer(ema=bad)
    # a checkpoint with an average does not load into a trainer without one, nor the reverse
    with pytest.raises(KeyError, match="generator_ema"):
        _toy_trainer().load_state_dict(_toy_trainer(ema=0.9).state_dict())
    with pytest.raises(KeyError, match="generator_ema"):
        _toy_trainer(ema=0.9).load_state_dict(_toy_trainer().state_dict())


def test_recipe_ema_samples_from_the_average_and_resumes_bit_identically(tmp_path):
    import probgen
    from probgen.data import load_dataset
    from probgen.recipes import gan as recipe

    with pytest.raises(ConfigError, match="--ema must be in \\[0, 1\\)"):
        recipe.resolve_config(_config(ema=1.5), load_dataset("ring8"))
    opts = dict(limit=256, steps=6, batch_size=64, width=16, depth=2, log_every=1,
                checkpoint_every=2, lr_decay="none", ema=0.9, device="cpu", progress=False,
                figures=False)
    full = probgen.train("gan", "ring8", tmp_path / "full", **opts)
    assert full.model.generator is not None and full.run.config["ema"] == 0.9
    # stopped after one step, then resumed: the same weights and average, bit for bit
    probgen.train("gan", "ring8", tmp_path / "part", time_budget=1e-9, **opts)
    probgen.train("gan", "ring8", tmp_path / "part", resume=True, **opts)
    a, b = (torch.load(p / "checkpoints" / "latest.pt", weights_only=True)["state"]
            for p in (tmp_path / "full", tmp_path / "part"))
    assert a["step"] == b["step"] == 6 and set(a) == set(b) and "generator_ema" in a
    for key in ("generator", "generator_ema", "discriminator"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    # the model samples from the average: G_ema's weights, not G's
    ema_w = {k: v for k, v in a["generator_ema"].items()}
    assert all(torch.equal(v, ema_w[k]) for k, v in full.model.generator.state_dict().items())
    assert any(not torch.equal(a["generator"][k], ema_w[k]) for k in ema_w)
