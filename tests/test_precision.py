"""Mixed precision (``--amp``: bfloat16 autocast while training) and ``--deterministic``.

bfloat16 autocast is meant for CUDA; torch runs it on the CPU too, which is what these tests
use. What they pin: the networks' passes run in bfloat16 while training, every distribution
and loss sees float32, and likelihood evaluation never autocasts.
"""

import pyro
import torch
from pyro.infer import Trace_ELBO

from probgen.cli import main
from probgen.inference.adversarial import GANTrainer
from probgen.models.nets import gan_networks
from probgen.models.vae import VAE


def _output_dtypes(module):
    seen = []
    module.register_forward_hook(lambda m, i, o: seen.append(o[0].dtype if isinstance(o, tuple) else o.dtype))
    return seen


def test_vae_training_program_autocasts_its_networks_but_not_its_distributions():
    torch.manual_seed(0)
    vae = VAE((1, 8, 8), 4, [32], likelihood="gaussian")
    x = torch.rand(16, 1, 8, 8)
    dec, enc = _output_dtypes(vae.decoder), _output_dtypes(vae.encoder)
    pyro.set_rng_seed(1)
    full = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
    vae.autocast_dtype = torch.bfloat16
    pyro.set_rng_seed(1)
    guide_tr = pyro.poutine.trace(vae.guide).get_trace(x)
    model_tr = pyro.poutine.trace(pyro.poutine.replay(vae.model, trace=guide_tr)).get_trace(x)
    assert dec[-1] == torch.bfloat16 and enc[-1] == torch.bfloat16
    assert guide_tr.nodes["z"]["value"].dtype == torch.float32
    assert model_tr.nodes["x"]["fn"].log_prob(x).dtype == torch.float32
    pyro.set_rng_seed(1)
    half = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, full, rtol=2e-2, atol=0.0)  # same noise, bf16 networks


def test_vae_likelihood_evaluation_never_autocasts():
    torch.manual_seed(0)
    vae = VAE((1, 8, 8), 4, [32], likelihood="gaussian")
    x = torch.rand(8, 1, 8, 8)
    torch.manual_seed(2)
    want = vae.iwae_bound(x, 16).total
    vae.autocast_dtype = torch.bfloat16
    torch.manual_seed(2)
    got = vae.iwae_bound(x, 16).total
    assert got.dtype == torch.float32 and torch.equal(got, want)


def test_gan_amp_runs_the_networks_in_bfloat16_and_the_losses_in_float32():
    torch.manual_seed(0)
    g, d = gan_networks((2,), 2, width=16, depth=2, norm="none")
    seen_g = _output_dtypes(g)
    trainer = GANTrainer(g, d, latent_dim=2, loss="ns", lr=1e-3, amp=True)
    rec = trainer.step(torch.randn(32, 2))
    assert torch.bfloat16 in seen_g
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in rec.values())
    assert all(p.dtype == torch.float32 for p in g.parameters())  # the weights stay float32


def test_amp_and_deterministic_through_the_command_line(tmp_path, capsys):
    tiny = ["--no-figures", "--device", "cpu", "--seed", "1"]
    assert main(["train", "vae", "--data", "digits", "--limit", "128", "--epochs", "1", "--hidden", "16",
                 "--latent-dim", "2", "--likelihood", "gaussian", "--amp", "--out", str(tmp_path / "v"), *tiny]) == 0
    assert main(["train", "gan", "--data", "ring8", "--steps", "5", "--batch-size", "32", "--amp",
                 "--out", str(tmp_path / "g"), *tiny]) == 0
    runs = []
    for name in ("d1", "d2"):
        assert main(["train", "vae", "--data", "digits", "--limit", "128", "--epochs", "1", "--hidden", "16",
                     "--latent-dim", "2", "--likelihood", "gaussian", "--deterministic",
                     "--out", str(tmp_path / name), *tiny]) == 0
        runs.append(torch.load(tmp_path / name / "checkpoints" / "latest.pt", weights_only=True)["state"]["model"])
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not torch.are_deterministic_algorithms_enabled()  # restored after the run
