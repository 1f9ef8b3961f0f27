"""The VAE on real-valued vectors of any scale: a Gaussian likelihood in the training data's
standard units (per-feature mean m and standard deviation s), whose bounds stay densities of
x itself. On raw features of scales 1 to 1000 (sklearn's wine data) the VAE without it reached
an ELBO of -297,788 nats with a KL term of 308,868; with it, -59."""

import copy
import math

import pytest
import torch

import probgen
from probgen.errors import ConfigError
from probgen.models.vae import VAE
from probgen.training import load_run


def _standardised_vae(x, seed=0):
    torch.manual_seed(seed)
    vae = VAE((x.shape[1],), 3, (16,), likelihood="gaussian")
    vae.standardize_by(x)
    return vae


def test_the_likelihood_is_the_standardised_density_times_the_jacobian():
    torch.manual_seed(0)
    x = torch.randn(50, 4) * torch.tensor([1.0, 10.0, 100.0, 0.01]) + torch.tensor([0.0, 5.0, -300.0, 2.0])
    vae = _standardised_vae(x)
    m, s = x.double().mean(0).float(), x.double().std(0).float()
    z = torch.randn(7, 50, 3)
    raw = vae.decoder(z)
    sigma = vae.likelihood.scale
    expected = (torch.distributions.Normal(raw, sigma).log_prob((x - m) / s).sum(-1)
                - s.log().sum())
    torch.testing.assert_close(vae.log_likelihood(x, z), expected, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(vae.decode(z[0]), m + s * raw[0])


def test_bounds_move_by_the_log_jacobian_only():
    """A standardised VAE on x scores exactly what the same networks score, unstandardised, on
    (x - m) / s, less sum(log s): the networks see the same numbers."""
    torch.manual_seed(1)
    x = torch.randn(40, 5) * torch.tensor([1.0, 3.0, 50.0, 0.1, 1000.0]) + 7.0
    vae = _standardised_vae(x)
    plain = copy.deepcopy(vae)
    plain.likelihood.shift = plain.likelihood.unit = None
    m, s = vae.likelihood.shift, vae.likelihood.unit
    u = (x - m) / s
    for bound in (lambda model, data: model.iwae_bound(data, 20).total,
                  lambda model, data: model.elbo(data, num_samples=5).total):
        torch.manual_seed(3)
        a = bound(vae, x)
        torch.manual_seed(3)
        b = bound(plain, u)
        torch.testing.assert_close(a, b - s.log().sum(), rtol=1e-5, atol=1e-3)


def test_state_dict_round_trip_and_runs_without_it_load_as_before():
    x = torch.randn(30, 3) * 20 + 4
    vae = _standardised_vae(x)
    fresh = VAE((3,), 3, (16,), likelihood="gaussian")
    fresh.load_state_dict(vae.state_dict())
    assert fresh.likelihood.standardized
    torch.testing.assert_close(fresh.likelihood.unit, vae.likelihood.unit)
    plain = VAE((3,), 3, (16,), likelihood="gaussian")
    assert "likelihood.shift" not in plain.state_dict()  # a run without one: the old keys
    VAE((3,), 3, (16,), likelihood="gaussian").load_state_dict(plain.state_dict())


def test_standardising_needs_the_gaussian_likelihood():
    with pytest.raises(ConfigError, match="likelihood='gaussian' only"):
        VAE((4,), 2, (8,), likelihood="bernoulli").standardize_by(torch.rand(10, 4))


def test_train_vae_standardises_vectors_by_default_and_trains(wide_scales, tmp_path):
    common = dict(epochs=30, batch_size=50, device="cpu", progress=False, figures=False)
    std = probgen.train("vae", wide_scales, tmp_path / "std", **common)
    raw = probgen.train("vae", wide_scales, tmp_path / "raw", preprocess="none", **common)
    assert std.run.config["preprocess"] == "standardize"
    assert raw.run.config["preprocess"] == "none"
    scores = {}
    for name in ("std", "raw"):
        _, data, model = load_run(tmp_path / name, device="cpu")
        torch.manual_seed(0)
        scores[name] = float(model.iwae_bound(data.test, 50).total.mean())
    assert load_run(tmp_path / "std", device="cpu")[2].likelihood.standardized
    # a density of the same x in nats either way; standardised it is far higher
    assert math.isfinite(scores["std"]) and scores["std"] > scores["raw"] + 100, scores


def test_train_vae_resumes_a_standardised_run_bit_for_bit(wide_scales, tmp_path):
    common = dict(batch_size=50, device="cpu", progress=False, figures=False)
    probgen.train("vae", wide_scales, tmp_path / "whole", epochs=2, **common)
    probgen.train("vae", wide_scales, tmp_path / "cut", epochs=1, **common)
    probgen.train("vae", wide_scales, tmp_path / "cut", epochs=2, resume=True, **common)
    a = torch.load(tmp_path / "whole" / "checkpoints" / "latest.pt", weights_only=True)["state"]["model"]
    b = torch.load(tmp_path / "cut" / "checkpoints" / "latest.pt", weights_only=True)["state"]["model"]
    assert a.keys() == b.keys() and "likelihood.shift" in a
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_preprocess_standardize_is_refused_where_it_does_not_apply(tmp_path):
    with pytest.raises(ConfigError, match="is for vectors"):
        probgen.train("vae", "digits", tmp_path / "a", epochs=1, likelihood="gaussian",
                      preprocess="standardize", limit=100, device="cpu", progress=False)
    with pytest.raises(ConfigError, match="works inside the gaussian likelihood"):
        probgen.train("vae", "ring8", tmp_path / "b", epochs=1, likelihood="continuous-bernoulli",
                      preprocess="standardize", limit=100, device="cpu", progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
