"""The VAE's discretized logistic likelihood: a probability over the L levels (sums to 1, the
logistic's mass in each bin by scipy), a density constant on each bin of the dequantized
values (so the dequantization bound is exact), and a VAE that trains on it and is scored in
bits/dim on the dequantized representation."""

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from probgen.cli import main
from probgen.errors import ConfigError
from probgen.models.vae import VAE, DiscretizedLogistic


def _params(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    loc = torch.rand(n, 1, generator=g, dtype=torch.float64) * 1.6 - 0.3   # some outside [0, 1]
    log_scale = torch.rand(n, 1, generator=g, dtype=torch.float64) * 8 - 8  # scales e^-8 .. 1
    return loc, log_scale


@pytest.mark.parametrize("levels", [256, 17, 2])
def test_probabilities_over_the_levels_sum_to_one(levels):
    loc, log_scale = _params()
    d = DiscretizedLogistic(loc, log_scale, levels)
    k = torch.arange(levels, dtype=torch.float64)
    logp = d.log_prob_levels(k.expand(loc.shape[0], levels))  # (n, L)
    assert bool(torch.isfinite(logp).all())
    torch.testing.assert_close(logp.exp().sum(1), torch.ones(loc.shape[0], dtype=torch.float64),
                               rtol=0, atol=1e-10)


def test_probabilities_are_the_logistic_mass_of_each_bin():
    loc, log_scale = _params(seed=1)
    levels = 256
    d = DiscretizedLogistic(loc, log_scale, levels)
    k = np.arange(levels)
    cdf = lambda v: stats.logistic.cdf(v, loc=loc.numpy(), scale=np.exp(log_scale.numpy()))  # noqa: E731
    upper = np.where(k == levels - 1, 1.0, cdf((k + 1) / levels))
    lower = np.where(k == 0, 0.0, cdf(k / levels))
    want = upper - lower  # (n, L)
    got = d.log_prob_levels(torch.arange(levels).expand(loc.shape[0], levels)).exp().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-12)


def test_density_is_constant_on_each_bin_so_the_dequantization_bound_is_exact():
    levels = 256
    d = DiscretizedLogistic(torch.tensor([0.3, 0.0, 0.97]), torch.tensor([-3.0, -6.0, -4.0]), levels)
    k = torch.tensor([[80.0, 0.0, 255.0], [77.0, 3.0, 250.0]])  # (2, 3) levels
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        x = (k + torch.rand(k.shape, generator=g)) / levels  # dequantized values in their bins
        bound = d.log_prob(x) - math.log(levels)             # log p(x) + log w, w = 1/256
        torch.testing.assert_close(bound, d.log_prob_levels(k))
    # and it integrates to 1 over [0, 1): a sum over the bins of (density x width)
    grid = (torch.arange(levels, dtype=torch.float32) + 0.5) / levels
    mass = d.expand((levels, 3)).log_prob(grid.unsqueeze(1).expand(levels, 3)).exp().sum(0) / levels
    torch.testing.assert_close(mass, torch.ones(3), rtol=0, atol=1e-5)


def test_samples_follow_the_probabilities():
    levels = 17
    d = DiscretizedLogistic(torch.tensor(0.4), torch.tensor(-2.0), levels)
    torch.manual_seed(0)
    x = d.sample((200_000,))
    assert x.shape == (200_000,) and bool(((x >= 0) & (x < 1)).all())
    freq = torch.bincount((x * levels).floor().long(), minlength=levels).double() / x.numel()
    p = d.log_prob_levels(torch.arange(levels)).exp().double()
    # within 5 binomial standard errors on every level
    assert bool(((freq - p).abs() <= 5 * (p * (1 - p) / x.numel()).sqrt() + 1e-4).all())


def test_vae_bound_is_a_bound_on_the_discrete_levels():
    torch.manual_seed(0)
    vae = VAE((1, 4, 4), latent_dim=2, hidden=(8,), likelihood="discretized-logistic", levels=17)
    k = torch.randint(0, 17, (6, 1, 4, 4)).double()
    x1, x2 = (k + 0.1) / 17, (k + 0.9) / 17  # two dequantizations of the same images
    z = torch.randn(3, 6, 2)
    with torch.no_grad():
        a, b = vae.log_likelihood(x1.float(), z), vae.log_likelihood(x2.float(), z)
    torch.testing.assert_close(a, b)  # p(x|z) depends only on the levels
    assert bool((a - 16 * math.log(17) <= 1e-5).all())  # log P(k|z) <= 0: a probability
    with pytest.raises(ConfigError, match="number of levels"):
        VAE((1, 4, 4), likelihood="discretized-logistic")


def test_cli_scores_it_in_bits_per_dim_on_dequantized_images(tmp_path, capsys):
    out = tmp_path / "vae"
    assert main(["train", "vae", "--data", "digits", "--likelihood", "discretized-logistic",
                 "--epochs", "2", "--latent-dim", "4", "--hidden", "32", "--out", str(out),
                 "--device", "cpu", "--no-figures", "--quiet", "--limit", "300"]) == 0
    assert main(["eval", str(out), "--device", "cpu", "--quiet", "--limit", "50", "--k", "5",
                 "--n-samples", "20"]) == 0
    m = json.loads((out / "eval.json").read_text())["metrics"]
    for name in ("elbo", "iwae"):
        rec = m[name]
        assert rec["representation"] == "dequantized-17-level"
        assert rec["estimator"] == "dequantization bound"
        assert rec["bits_per_dim"] == pytest.approx(-rec["value"] / (64 * math.log(2)))
        assert rec["bits_per_dim"] > 0  # a probability of the levels: log P(k) < 0
    assert m["iwae"]["value"] >= m["elbo"]["value"] - 3 * m["elbo"]["stderr"]
    assert main(["train", "vae", "--data", "digits", "--likelihood", "discretized-logistic",
                 "--dequantize", "none", "--out", str(tmp_path / "raw"), "--device", "cpu",
                 "--quiet"]) != 0
    assert "needs pixels of known levels, dequantized" in capsys.readouterr().err
