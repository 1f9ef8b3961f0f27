"""The importance-weighted objectives (IWAE, DReG), the two-layer VAE and the IWAE-paper preset.

Truths used: Pyro's ``Trace_ELBO`` (IWAE with one particle must have its loss and gradient);
the plain IWAE estimator averaged over many draws (DReG must estimate the same gradient,
Tucker et al. 2019, within Monte Carlo error); the bound ordering ELBO <= IWAE-k; and the
two-layer VAE's Pyro program against its evaluation protocol on the same draws.
"""

from __future__ import annotations

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from probgen.cli import main
from probgen.errors import ConfigError
from probgen.inference.objectives import IWAE, DReG, importance_log_weights, make_objective
from probgen.inference.svi import fit_svi
from probgen.models.two_layer_vae import TwoLayerVAE
from probgen.models.vae import VAE
from probgen.runs import load_checkpoint_file


def _grads(objective, model, guide, params, *args, seed=1, **kwargs):
    torch.manual_seed(seed)
    for p in params:
        p.grad = None
    loss = objective.differentiable_loss(model, guide, *args, **kwargs)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in params]


@pytest.mark.parametrize("layers", [1, 2])
def test_iwae_with_one_particle_is_trace_elbo_loss_and_gradient(layers):
    torch.manual_seed(0)
    m = VAE((1, 8, 8), 3, (16,)) if layers == 1 else TwoLayerVAE((1, 8, 8), (4, 2), ((16,), (8,)))
    x = torch.bernoulli(torch.rand(7, 1, 8, 8))
    params = list(m.parameters())
    l_ref, g_ref = _grads(Trace_ELBO(), m.model, m.guide, params, x, num_data=70)
    l_iw, g_iw = _grads(IWAE(1), m.model, m.guide, params, x, num_data=70)
    assert torch.allclose(l_iw, l_ref, rtol=1e-6)
    for a, b in zip(g_iw, g_ref, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    # and the value is the minibatch bound scaled to the data set: 10 x the batch's sum
    log_w, scale = importance_log_weights(m.model, m.guide, x, particles=1, num_data=70)
    assert scale == pytest.approx(10.0) and log_w.shape == (1, 7)


def test_iwae_value_is_the_per_example_bound_and_tightens_with_particles():
    torch.manual_seed(0)
    m = VAE((1, 8, 8), 3, (16,))
    x = torch.bernoulli(torch.rand(5, 1, 8, 8))
    with torch.no_grad():
        torch.manual_seed(3)
        log_w, _ = importance_log_weights(m.model, m.guide, x, particles=50)
        # the same numbers from the evaluation protocol (log p(x|z) + log p(z) - log q(z|x))
        q = m.encoder_distribution(x)
        z = q.sample((50,))
        ref = m.log_likelihood(x, z) + m.prior_log_prob(z) - q.log_prob(z)
    assert log_w.shape == (50, 5)
    # different draws, same distribution: compare the means per example
    assert torch.allclose(log_w.mean(0), ref.mean(0), atol=4 * float(ref.std(0).max()) / math.sqrt(50) * 1.5)
    elbo = -Trace_ELBO(num_particles=2000, vectorize_particles=True).loss(m.model, m.guide, x)
    iwae = -IWAE(50).loss(m.model, m.guide, x)
    assert iwae > elbo


class _LinearGaussian:
    """z ~ N(0, I_2), x | z ~ N(W z + b, 0.5^2 I_3), q(z|x) = N(A x + c, diag(s^2)): a guide far
    from the exact (Gaussian) posterior, so that the encoder's gradient is far from zero."""

    def __init__(self):
        g = torch.Generator().manual_seed(5)
        self.W = torch.randn(3, 2, generator=g).requires_grad_()
        self.b = torch.randn(3, generator=g).requires_grad_()
        self.A = (0.3 * torch.randn(2, 3, generator=g)).requires_grad_()
        self.c = (0.5 * torch.randn(2, generator=g)).requires_grad_()
        self.log_s = torch.full((2,), -0.3).requires_grad_()

    @property
    def params(self):
        return [self.W, self.b, self.A, self.c, self.log_s]

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, 0.5).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ self.A.T + self.c, self.log_s.exp()).to_event(1))


def test_dreg_is_unbiased_for_the_iwae_gradient_on_a_linear_gaussian_model():
    lg = _LinearGaussian()
    x1 = torch.tensor([[0.7, -1.2, 2.0]])
    copies, repeats, k = 400, 60, 5
    x = x1.expand(copies, 3)  # each copy is an independent draw of the one example's estimator
    draws = {"iwae": [], "dreg": []}
    for name, obj in (("iwae", IWAE(k)), ("dreg", DReG(k))):
        for r in range(repeats):
            _, g = _grads(obj, lg.model, lg.guide, lg.params, x, seed=100 + r)
            draws[name].append(torch.cat([v.reshape(-1) for v in g]) / copies)
    iw, dr = torch.stack(draws["iwae"]), torch.stack(draws["dreg"])  # (repeats, P)
    diff = iw.mean(0) - dr.mean(0)
    se = (iw.var(0) / repeats + dr.var(0) / repeats).sqrt()
    z = diff.abs() / se
    assert float(z.max()) < 4.5, f"DReG and IWAE disagree: z-scores {z}"
    # the test has power: the encoder's gradient (A, c, log_s: the last 10 entries) is far
    # larger than the tolerance, and DReG's variance there is smaller (Tucker et al., fig. 1)
    enc = slice(9, None)
    assert float((iw.mean(0)[enc].abs() / se[enc]).max()) > 20
    assert float(dr.var(0)[enc].sum()) < float(iw.var(0)[enc].sum())
    # the model's (decoder's) gradient is IWAE's draw for draw
    _, g_iw = _grads(IWAE(k), lg.model, lg.guide, lg.params, x, seed=7)
    _, g_dr = _grads(DReG(k), lg.model, lg.guide, lg.params, x, seed=7)
    for a, b in zip(g_iw[:2], g_dr[:2], strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_dreg_gradient_matches_iwae_for_the_two_layer_guide_in_expectation():
    # two guide sites, q(z2|z1) depending on z1: the generic path (guide re-run on the draws)
    torch.manual_seed(0)
    m = TwoLayerVAE((1, 2, 2), (2, 1), ((6,), (4,)))
    x1 = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    x = x1.expand(300, 1, 2, 2)
    params = list(m.parameters())
    draws = {"iwae": [], "dreg": []}
    for name, obj in (("iwae", IWAE(4)), ("dreg", DReG(4))):
        for r in range(40):
            _, g = _grads(obj, m.model, m.guide, params, x, seed=200 + r)
            draws[name].append(torch.cat([v.reshape(-1) for v in g]) / 300)
    iw, dr = torch.stack(draws["iwae"]), torch.stack(draws["dreg"])
    se = (iw.var(0) / 40 + dr.var(0) / 40).sqrt().clamp_min(1e-8)
    z = (iw.mean(0) - dr.mean(0)).abs() / se
    assert float(z.max()) < 5.0, f"DReG and IWAE disagree: max z-score {float(z.max()):.2f}"


def test_objective_errors_name_the_problem():
    with pytest.raises(ConfigError, match="objective must be one of"):
        make_objective("iwea")
    with pytest.raises(ConfigError, match="particles"):
        IWAE(0)

    def model(x):
        c = pyro.sample("c", dist.Bernoulli(0.5))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(c, 1.0), obs=x)

    def guide(x):
        pyro.sample("c", dist.Bernoulli(pyro.param("p", torch.tensor(0.5))))

    with pytest.raises(ConfigError, match="cannot be reparametrised"):
        IWAE(2).differentiable_loss(model, guide, torch.zeros(3))

    def model2(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide2(x):
        pyro.sample("mu", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))

    with pytest.raises(ConfigError, match="inside the plate 'data'"):
        DReG(2).differentiable_loss(model2, guide2, torch.zeros(3))
    with pytest.raises(ConfigError, match="objective must be one of"):
        fit_svi(model2, guide2, torch.zeros(3), steps=1, objective="renyi")
    with pytest.raises(ConfigError, match="estimator of the ELBO"):
        fit_svi(model2, guide2, torch.zeros(3), steps=1, objective="iwae", loss="mean-field")


def test_two_layer_vae_program_and_protocol_agree_and_elbo_below_iwae():
    torch.manual_seed(0)
    m = TwoLayerVAE((1, 8, 8), (6, 3), ((24,), (12,)))
    x = torch.bernoulli(torch.rand(20, 1, 8, 8))
    fit_svi(m.model, m.guide, x, steps=60, lr=3e-3)
    with torch.no_grad():
        q = m.encoder_distribution(x)
        z = q.sample((3,))  # (3, 20, 9)
        proto = m.log_likelihood(x, z) + m.prior_log_prob(z) - q.log_prob(z)  # (3, 20)
        values = {"z1": z[..., :6], "z2": z[..., 6:]}
        gt = pyro.poutine.trace(pyro.poutine.condition(m.guide, data=values)).get_trace(x)
        mt = pyro.poutine.trace(pyro.poutine.condition(m.model, data=values)).get_trace(x)
        gt.compute_log_prob()
        mt.compute_log_prob()
        program = sum(mt.nodes[s]["log_prob"] for s in ("z1", "z2", "x")) - sum(
            gt.nodes[s]["log_prob"] for s in ("z1", "z2"))
        assert torch.allclose(program, proto, rtol=1e-5, atol=1e-4)
        torch.manual_seed(1)
        elbo = m.elbo(x, num_samples=500).total.mean()
        iwae = m.iwae_bound(x, 200).total.mean()
    assert float(elbo) < float(iwae)


# ----------------------------------------------------------------------------- the recipe
TINY = ["--data", "mnist-5k", "--limit", "96", "--batch-size", "32", "--hidden", "16",
        "--latent-dim", "3", "--no-figures", "--device", "cpu"]


def _train(out, *extra):
    argv = ["train", "vae", *TINY, "--out", str(out), *extra]
    assert main(argv) == 0, f"probgen {' '.join(argv)} failed"
    return load_checkpoint_file(out / "checkpoints" / "latest.pt", expected_model="vae")


@pytest.mark.parametrize("extra", [["--stochastic-layers", "2", "--objective", "dreg", "--particles", "3"],
                                   ["--objective", "iwae", "--particles", "4"]])
def test_objectives_and_two_layers_train_and_resume_bit_for_bit(tmp_path, extra):
    straight = _train(tmp_path / "a", "--epochs", "2", *extra)
    _train(tmp_path / "b", "--epochs", "1", *extra)
    resumed = _train(tmp_path / "b", "--epochs", "2", "--resume", *extra)
    for key, value in straight["state"]["model"].items():
        assert torch.equal(value, resumed["state"]["model"][key]), key
    first = load_checkpoint_file(tmp_path / "a" / "checkpoints" / "latest.pt")
    assert first["step"] == 6  # 2 epochs of 3 batches
    metrics = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    key = "train_iwae" if "--objective" in extra and "elbo" not in extra else "train_elbo"
    assert all(math.isfinite(r[key]) for r in metrics)


def test_iwae_paper_preset_and_schedule(tmp_path):
    from probgen.recipes.vae import PRESETS, iwae_schedule_lr

    # stage i: 3^i epochs at 1e-3 * 10^(-i/7), 3280 epochs in all
    assert PRESETS["iwae-paper"]["epochs"] == 3280
    assert iwae_schedule_lr(0) == pytest.approx(1e-3)
    assert [iwae_schedule_lr(e) for e in (1, 3)] == pytest.approx([1e-3 * 10 ** (-1 / 7)] * 2)
    assert iwae_schedule_lr(4) == pytest.approx(1e-3 * 10 ** (-2 / 7))
    assert iwae_schedule_lr(3279) == pytest.approx(1e-3 * 10 ** (-7 / 7))
    assert iwae_schedule_lr(1092) == pytest.approx(1e-3 * 10 ** (-6 / 7))  # 3^7 stage starts at 1093
    assert iwae_schedule_lr(1093) == pytest.approx(1e-4)
    # the preset fills the options; an option after it wins; the schedule reaches the optimiser
    out = tmp_path / "p"
    argv = ["train", "vae", "--data", "mnist-5k", "--limit", "96", "--latent-dim", "3",
            "--preset", "iwae-paper", "--epochs", "2", "--hidden", "16", "--out", str(out),
            "--no-figures", "--device", "cpu"]
    assert main(argv) == 0
    ckpt = load_checkpoint_file(out / "checkpoints" / "latest.pt")
    cfg = json.loads((tmp_path / "p" / "config.json").read_text())
    assert cfg["batch_size"] == 20 and cfg["activation"] == "tanh" and cfg["adam_eps"] == 1e-4
    assert cfg["epochs"] == 2 and cfg["hidden"] == [16] and cfg["lr_schedule"] == "iwae"
    assert cfg["latent_dim"] == 3  # given before --preset, and not the default: kept
    group = ckpt["state"]["optimizer"]["param_groups"][0]
    assert group["lr"] == pytest.approx(1e-3 * 10 ** (-1 / 7)) and group["eps"] == 1e-4


def test_cosine_schedule_reaches_the_optimiser_and_resumes_bit_for_bit(tmp_path):
    from probgen.recipes import cosine_lr

    assert cosine_lr(1e-3, 0.0) == pytest.approx(1e-3) and cosine_lr(1e-3, 1.0) == pytest.approx(1e-5)
    assert cosine_lr(1e-3, 0.5) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))
    cos = ["--lr-schedule", "cosine", "--lr", "1e-3"]
    straight = _train(tmp_path / "a", "--epochs", "2", *cos)
    # the rate saved for the next epoch is the schedule's end: lr / 100 after 2 of 2 epochs
    assert straight["state"]["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-5)
    # a run stopped after 1 epoch and resumed with --epochs 2 follows the 2-epoch cosine
    _train(tmp_path / "b", "--epochs", "1", *cos)
    resumed = _train(tmp_path / "b", "--epochs", "2", "--resume", *cos)
    for key, value in straight["state"]["model"].items():
        assert torch.equal(value, resumed["state"]["model"][key]), key


def test_a_time_budget_without_a_length_fills_the_budget(tmp_path):
    # no --epochs: the VAE trains until the budget stops it, not for the default 20 epochs
    argv = ["train", "vae", *TINY, "--time-budget", "1", "--out", str(tmp_path / "a")]
    assert main(argv) == 0
    assert json.loads((tmp_path / "a" / "config.json").read_text())["epochs"] == 1_000_000
    progress = json.loads((tmp_path / "a" / "progress.json").read_text())
    assert progress["epochs_run"] > 0 and "time budget" in progress["stopped_by"]
    # the default cosine schedule ran over the budget, the run's length: the rate has fallen
    state = load_checkpoint_file(tmp_path / "a" / "checkpoints" / "latest.pt", expected_model="vae")
    assert state["state"]["optimizer"]["param_groups"][0]["lr"] < 2e-3
    # a length on the command line is kept
    argv = ["train", "vae", *TINY, "--time-budget", "60", "--epochs=1", "--out", str(tmp_path / "b")]
    assert main(argv) == 0
    assert json.loads((tmp_path / "b" / "progress.json").read_text())["finished"]


@pytest.mark.parametrize("model,extra", [
    ("vae", ["--hidden", "16", "--latent-dim", "3", "--batch-size", "32"]),
    ("ae", ["--hidden", "16", "--latent-dim", "3", "--batch-size", "32"]),
    ("ppca", ["--latent-dim", "3", "--fit", "svi", "--batch-size", "32"]),
])
def test_a_run_records_the_epochs_it_really_ran(tmp_path, model, extra):
    out = tmp_path / model
    argv = ["train", model, "--data", "mnist-5k", "--limit", "96", *extra, "--epochs", "1000000",
            "--time-budget", "0.5", "--out", str(out), "--no-figures", "--device", "cpu"]
    assert main(argv) == 0
    progress = json.loads((out / "progress.json").read_text())
    ckpt = load_checkpoint_file(out / "checkpoints" / "latest.pt")
    assert progress["epochs_requested"] == 1_000_000 and not progress["finished"]
    assert 1 <= progress["epochs_run"] == ckpt["state"]["epoch"] < 1_000_000
    assert progress["steps_run"] == ckpt["step"] == 3 * progress["epochs_run"]
    assert "time budget" in progress["stopped_by"]
    # a run that finishes says so
    argv = ["train", model, "--data", "mnist-5k", "--limit", "96", *extra, "--epochs", "1",
            "--out", str(tmp_path / "done"), "--no-figures", "--device", "cpu"]
    assert main(argv) == 0
    progress = json.loads((tmp_path / "done" / "progress.json").read_text())
    assert progress == {"epochs_run": 1, "steps_run": 3, "epochs_requested": 1, "finished": True,
                        "stopped_by": None}


def test_two_stochastic_layers_on_real_valued_vectors_are_refused_before_the_run_folder(
        tmp_path, capsys, wide_scales):
    out = tmp_path / "r"
    assert main(["train", "vae", "--data", wide_scales, "--stochastic-layers", "2", "--epochs", "1",
                 "--device", "cpu", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--stochastic-layers 2 models binary pixels" in err and "--stochastic-layers 1" in err
    assert not out.exists()
    assert main(["train", "vae", *TINY, "--stochastic-layers", "2", "--arch", "conv",
                 "--out", str(out)]) == 2
    assert "use --arch mlp and --likelihood bernoulli (the defaults on images)" in capsys.readouterr().err
    assert not out.exists()
