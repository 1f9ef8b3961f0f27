"""On a CUDA device: the training steps compute what they compute on the CPU, bfloat16
autocast trains, and a run written on the GPU is read back on the CPU.

Every test here is marked ``cuda`` and skips without a CUDA device; benchmarks/gpu_check.sh
runs them (``pytest -m cuda tests/test_cuda.py``). ``PROBGEN_CUDA_TESTS_DEVICE=cpu`` runs the
same code on the CPU instead (a check of the tests themselves, not of CUDA). The tests that
train on MNIST need its files under ``$PROBGEN_DATA_ROOT`` and skip without them.
"""

import copy
import json
import math
import os
from pathlib import Path

import pytest
import torch

from probgen.cli import main

DEVICE = os.environ.get("PROBGEN_CUDA_TESTS_DEVICE", "cuda")

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                       reason="needs a CUDA device"),
]


def _mnist_root():
    root = os.environ.get("PROBGEN_DATA_ROOT")
    if not root or not any(Path(root).glob("t10k-images*")):
        pytest.skip("needs the MNIST files under $PROBGEN_DATA_ROOT")
    return root


@pytest.fixture
def fp32_matmul():
    """Full float32 matrix products for the comparisons with the CPU (no TF32)."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)


# ----------------------------------------------------------------------------- the VAE
def _vae_loss(vae, x, eps):
    """Single-sample negative ELBO with the noise given: the reparametrised training loss."""
    q = vae.encoder_distribution(x)
    z = q.mean + q.stddev * eps  # (N, L)
    log_w = vae.log_likelihood(x, z.unsqueeze(0))[0] + vae.prior_log_prob(z) - q.log_prob(z)
    return -log_w.mean()


def test_vae_loss_and_gradients_on_the_device_match_the_cpu(fp32_matmul):
    from probgen.models.vae import VAE

    torch.manual_seed(0)
    cpu = VAE((1, 28, 28), 50, (400,))
    dev = copy.deepcopy(cpu).to(DEVICE)
    x = torch.bernoulli(torch.rand(64, 1, 28, 28) * 0.5)
    eps = torch.randn(64, 50)
    loss_c = _vae_loss(cpu, x, eps)
    loss_d = _vae_loss(dev, x.to(DEVICE), eps.to(DEVICE))
    loss_c.backward()
    loss_d.backward()
    assert loss_d.device.type == torch.device(DEVICE).type
    torch.testing.assert_close(loss_d.cpu(), loss_c, rtol=1e-5, atol=1e-4)
    for (name, pc), pd in zip(cpu.named_parameters(), dev.parameters()):
        torch.testing.assert_close(pd.grad.cpu(), pc.grad, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
def test_vae_trains_on_the_device_to_finite_parameters_and_a_lower_loss(amp):
    import pyro

    from probgen.inference.svi import fit_svi
    from probgen.models.vae import VAE

    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = VAE((1, 28, 28), 20, (200,)).to(DEVICE)
    vae.autocast_dtype = torch.bfloat16 if amp else None
    protos = torch.rand(4, 1, 28, 28) < 0.3  # four binary "digits" and noisy copies
    x = (protos[torch.arange(2000) % 4] ^ (torch.rand(2000, 1, 28, 28) < 0.05)).float().to(DEVICE)
    res = fit_svi(vae.model, vae.guide, x, epochs=8, batch_size=100, seed=0,
                  model_kwargs={"num_data": x.shape[0]})
    losses = torch.tensor(res.losses)
    assert torch.isfinite(losses).all() and not res.skipped
    assert losses[-20:].mean() < 0.5 * losses[:20].mean()
    assert all(torch.isfinite(p).all() and p.device.type == torch.device(DEVICE).type
               for p in vae.parameters())
    vae.autocast_dtype = None
    with torch.no_grad():
        bound = vae.iwae_bound(x[:50], 100).total
    assert bound.dtype == torch.float32 and torch.isfinite(bound).all()


# ----------------------------------------------------------------------------- the GAN
def test_gan_step_on_the_device_matches_the_cpu(fp32_matmul):
    from probgen.inference.adversarial import GANTrainer
    from probgen.models.nets import gan_networks

    torch.manual_seed(0)
    g, d = gan_networks((2,), 2, width=32, depth=2)
    real, noise = torch.randn(64, 2), [torch.randn(64, 2), torch.randn(64, 2)]
    recs = {}
    for where in ("cpu", DEVICE):
        gw, dw = copy.deepcopy(g).to(where), copy.deepcopy(d).to(where)
        tr = GANTrainer(gw, dw, latent_dim=2, loss="ns", lr=1e-3)
        draws = iter(noise)
        tr._noise = lambda n, _w=where, _d=draws: next(_d).to(_w)  # the same z on both
        recs[where] = {k: float(v) for k, v in tr.step(real.to(where)).items()}
        recs[where]["g_out"] = gw(noise[0].to(where)).detach().cpu()
    cpu, dev = recs["cpu"], recs[DEVICE]
    for key in ("loss_d", "d_real", "d_fake"):  # before any update: the same networks
        assert math.isclose(dev[key], cpu[key], rel_tol=1e-5, abs_tol=1e-6), key
    # after one Adam step of D (steps of about lr each way) the G loss agrees closely
    assert math.isclose(dev["loss_g"], cpu["loss_g"], rel_tol=1e-3, abs_tol=1e-4)
    torch.testing.assert_close(dev["g_out"], cpu["g_out"], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
def test_dcgan_steps_with_batchnorm_stay_finite_on_the_device(amp):
    from probgen.inference.adversarial import GANTrainer
    from probgen.models.nets import gan_networks

    torch.manual_seed(0)
    g, d = gan_networks((1, 28, 28), 64, value_range=(-1, 1), width=32)
    tr = GANTrainer(g.to(DEVICE), d.to(DEVICE), latent_dim=64, loss="ns", lr=2e-4, amp=amp)
    real = torch.rand(64, 1, 28, 28, device=DEVICE) * 2 - 1
    for _ in range(5):
        rec = tr.step(real)
    assert all(math.isfinite(float(v)) for v in rec.values())
    assert all(torch.isfinite(p).all() for p in [*g.parameters(), *d.parameters()])
    with torch.no_grad():
        assert g(torch.randn(8, 64, device=DEVICE)).dtype == torch.float32


# ----------------------------------------------------------------------------- runs
def test_a_gan_run_trained_on_the_device_loads_and_scores_on_the_cpu(tmp_path):
    from probgen.cli import load_run_data
    from probgen.recipes import get_recipe
    from probgen.runs import Run

    run_dir = tmp_path / "gan"
    assert main(["train", "gan", "--data", "ring8", "--out", str(run_dir), "--device", DEVICE,
                 "--steps", "60", "--log-every", "20", "--amp", "--no-figures", "--quiet"]) == 0
    assert json.loads((run_dir / "train.json").read_text())["device"].startswith(DEVICE)
    run = Run.open(run_dir)
    data = load_run_data(run.config, device="cpu")
    on_cpu = get_recipe("gan").load(run, data, torch.device("cpu"))
    on_dev = get_recipe("gan").load(run, load_run_data(run.config, device=DEVICE), torch.device(DEVICE))
    z = torch.randn(16, 2)
    with torch.no_grad():
        torch.testing.assert_close(on_dev.decode(z.to(DEVICE)).cpu(), on_cpu.decode(z),
                                   rtol=1e-4, atol=1e-5)
    assert main(["eval", str(run_dir), "--device", "cpu", "--limit", "200", "--n-samples", "200",
                 "--quiet"]) == 0
    ev = json.loads((run_dir / "eval.json").read_text())
    assert math.isfinite(ev["metrics"]["reverse_kl"]["value"])


def test_a_vae_run_trained_with_amp_on_the_device_scores_on_the_cpu(tmp_path):
    root = _mnist_root()
    run_dir = tmp_path / "vae"
    assert main(["train", "vae", "--data", "mnist", "--data-root", root, "--limit", "2000",
                 "--epochs", "2", "--amp", "--device", DEVICE, "--out", str(run_dir),
                 "--no-figures", "--quiet"]) == 0
    assert main(["eval", str(run_dir), "--device", "cpu", "--data-root", root, "--limit", "100",
                 "--k", "50", "--n-samples", "100", "--quiet"]) == 0
    metrics = json.loads((run_dir / "eval.json").read_text())["metrics"]
    iwae, elbo = metrics["iwae"]["value"], metrics["elbo"]["value"]
    assert -400 < elbo <= iwae + 1.0 < 0, (elbo, iwae)
