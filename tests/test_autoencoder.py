"""Plain and denoising autoencoders: losses, corruption, training, codes, the ae/dae recipe."""

import json

import pytest
import torch
from torch.nn import functional as F

import probgen
from probgen.errors import ConfigError, NotFittedError
from probgen.inference.svi import fit_loss
from probgen.models.autoencoder import Autoencoder

SHAPE = (1, 8, 8)




def _clusters(n=300, seed=0):
    """Three prototype grey images plus noise; labels are the prototype."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(3, *SHAPE, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    x = (protos[y] + 0.05 * torch.randn(n, *SHAPE, generator=g)).clamp(0, 1)
    return x, y


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_shapes_and_loss_values(arch):
    ae = Autoencoder(SHAPE, 2, (16,), arch=arch, loss="bce")
    x, _ = _clusters(5)
    z = ae.encode(x)
    assert z.shape == (5, 2)
    assert ae.decode(z).shape == (5, *SHAPE) and ae.decode(torch.randn(4, 5, 2)).shape == (4, 5, *SHAPE)
    ae.eval()
    # the loss is the summed cross-entropy per example, averaged: compare with torch's own
    logits = ae.decoder(ae.encoder(x))
    ref = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / 5
    torch.testing.assert_close(ae.loss(x), ref)
    mse = Autoencoder(SHAPE, 2, (16,), arch=arch, loss="mse").eval()
    torch.testing.assert_close(mse.loss(x), F.mse_loss(mse.reconstruct(x), x, reduction="sum") / 5)


def test_corruption_only_in_training():
    x = torch.ones(200, *SHAPE)
    mask = Autoencoder(SHAPE, 2, (8,), noise="masking", noise_level=0.25)
    kept = mask.corrupt(x).mean().item()
    assert kept == pytest.approx(0.75, abs=0.02)
    gauss = Autoencoder(SHAPE, 2, (8,), noise="gaussian", noise_level=0.5)
    assert (gauss.corrupt(x) - x).std().item() == pytest.approx(0.5, rel=0.05)
    plain = Autoencoder(SHAPE, 2, (8,))
    assert torch.equal(plain.corrupt(x), x)
    # in eval mode the loss sees the clean input: it is deterministic
    mask.eval()
    assert torch.equal(mask.loss(x), mask.loss(x))


def test_one_step_changes_the_weights_and_training_separates_clusters():
    x, y = _clusters()
    ae = Autoencoder(SHAPE, 2, (32,), activation="relu")
    before = {k: v.clone() for k, v in ae.state_dict().items() if "code" not in k}
    fit_loss(ae.loss, list(ae.parameters()), x, steps=1, batch_size=50)
    assert all(not torch.equal(ae.state_dict()[k], v) for k, v in before.items())
    start = ae.reconstruction_error(x).mean().item()
    fit_loss(ae.loss, list(ae.parameters()), x, epochs=60, batch_size=50, lr=3e-3)
    ae.eval()
    with torch.no_grad():
        end = ae.reconstruction_error(x).mean().item()
        z = ae.encode(x)
    assert end < start - 1.0
    # the three clusters get distinct codes: nearest class centroid classifies the codes
    cent = torch.stack([z[y == c].mean(0) for c in range(3)])
    pred = torch.cdist(z, cent).argmin(1)
    assert (pred == y).float().mean() > 0.95


def test_denoising_autoencoder_removes_masking_noise():
    x, _ = _clusters()
    dae = Autoencoder(SHAPE, 2, (32,), noise="masking", noise_level=0.3)
    fit_loss(dae.loss, list(dae.parameters()), x, epochs=60, batch_size=50, lr=3e-3)
    dae.eval()
    noisy = x * (torch.rand_like(x) > 0.3)
    with torch.no_grad():
        cleaned = dae.reconstruct(noisy)
    assert (cleaned - x).pow(2).mean() < 0.5 * (noisy - x).pow(2).mean()


def test_sampling_needs_the_code_distribution():
    x, _ = _clusters(50)
    ae = Autoencoder(SHAPE, 2, (8,))
    with pytest.raises(NotFittedError, match="fit_code_distribution"):
        ae.sample(3)
    ae.fit_code_distribution(x)
    with torch.no_grad():
        z = ae.encode(x)
    torch.testing.assert_close(ae.code_mean, z.mean(0), atol=1e-5, rtol=1e-5)
    assert ae.sample(4).shape == (4, *SHAPE)


def test_options_are_checked():
    with pytest.raises(ConfigError, match="noise must be one of none, gaussian, masking; got 'salt'"):
        Autoencoder(SHAPE, 2, noise="salt")
    with pytest.raises(ConfigError, match=r"masking probability .* in \[0, 1\); got 1.5"):
        Autoencoder(SHAPE, 2, noise="masking", noise_level=1.5)
    with pytest.raises(ConfigError, match="loss must be one of bce, mse"):
        Autoencoder(SHAPE, 2, loss="l1")
    with pytest.raises(ConfigError, match="arch must be one of mlp, conv"):
        Autoencoder(SHAPE, 2, arch="transformer")
    with pytest.raises(ConfigError, match=r"arch='conv' needs images of shape \(C, H, W\) with H and W divisible by 4"):
        Autoencoder((1, 6, 6), 2, arch="conv")



# ----------------------------------------------------------------------------- vectors of any scale
def _worst_feature_rmse(run_dir) -> float:
    """The largest per-feature reconstruction RMSE on the test split, in the data's standard
    deviations (1: no better than predicting the mean)."""
    from probgen.training import load_run

    _, data, model = load_run(run_dir, device="cpu")
    with torch.no_grad():
        rec = model.reconstruct(data.test)
    return float(((rec - data.test) ** 2).mean(0).sqrt().div(data.train.std(0)).max())


def test_ae_standardises_vectors_so_every_feature_counts(wide_scales, tmp_path):
    """On raw features of scales 0.1 to 1000 the squared error is all the largest feature's:
    on sklearn's wine 11 of 13 features once came back worse than their mean (1.2 to 3.9
    standard deviations off), all but the two largest; in standard units every feature is
    reconstructed."""
    data = wide_scales
    common = dict(epochs=60, batch_size=50, device="cpu", progress=False, figures=False)
    probgen.train("ae", data, tmp_path / "std", **common)
    probgen.train("ae", data, tmp_path / "raw", preprocess="none", **common)
    assert json.loads((tmp_path / "std" / "config.json").read_text())["preprocess"] == "standardize"
    std, raw = _worst_feature_rmse(tmp_path / "std"), _worst_feature_rmse(tmp_path / "raw")
    assert std < 0.5 and raw > 0.9, (std, raw)


def test_ae_standardisation_round_trips_and_needs_squared_error():
    x = torch.randn(50, 3) * torch.tensor([1.0, 100.0, 0.01])
    ae = Autoencoder((3,), 2, (8,), loss="mse")
    ae.standardize_by(x)
    fresh = Autoencoder((3,), 2, (8,), loss="mse")
    fresh.load_state_dict(ae.state_dict())
    torch.testing.assert_close(fresh.reconstruct(x), ae.reconstruct(x))
    assert "shift" not in Autoencoder((3,), 2, (8,), loss="mse").state_dict()
    with pytest.raises(ConfigError, match="loss='mse' only"):
        Autoencoder((3,), 2, (8,), loss="bce").standardize_by(x.abs().clamp(max=1))


def test_ae_refuses_bce_on_values_outside_the_unit_interval_before_writing_anything(wide_scales, tmp_path):
    with pytest.raises(ConfigError, match=r"--loss bce takes values in \[0, 1\]"):
        probgen.train("ae", wide_scales, tmp_path / "bce", epochs=1, loss="bce", device="cpu", progress=False)
    assert not (tmp_path / "bce").exists()
