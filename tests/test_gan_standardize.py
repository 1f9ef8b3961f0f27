"""The GAN's MLPs on real-valued vectors of any scale: they work in the training data's
standard units (--preprocess standardize, the default for the user's vectors). On raw
features of scales 0.1 to 1000 the samples' means once sat up to 10 standard deviations away
from the data's."""

import json

import pytest
import torch

import probgen
from probgen.errors import ConfigError
from probgen.models.nets import MLPDiscriminator, MLPGenerator, standardization
from probgen.training import load_run


def test_standardization_keeps_constant_features_unscaled():
    x = torch.tensor([[1.0, 5.0, 100.0], [3.0, 5.0, 300.0], [5.0, 5.0, 200.0]])
    shift, unit = standardization(x)
    torch.testing.assert_close(shift, torch.tensor([3.0, 5.0, 200.0]))
    torch.testing.assert_close(unit, torch.tensor([2.0, 1.0, 100.0]))


def test_standardised_mlps_work_in_standard_units():
    torch.manual_seed(0)
    x = torch.randn(100, 3) * torch.tensor([1.0, 50.0, 0.01]) + torch.tensor([0.0, 300.0, 1.0])
    g, d = MLPGenerator(4, 3, (8,)), MLPDiscriminator(3, (8,))
    z = torch.randn(5, 4)
    raw_g, raw_d = g(z), d(x[:5])
    g.standardize_by(x)
    d.standardize_by(x)
    torch.testing.assert_close(g(z), g.shift + g.unit * raw_g)
    u = (x[:5] - d.shift) / d.unit
    d_plain = MLPDiscriminator(3, (8,))
    d_plain.load_state_dict({k: v for k, v in d.state_dict().items() if k not in ("shift", "unit")})
    torch.testing.assert_close(d(x[:5]), d_plain(u))
    assert not torch.equal(d(x[:5]), raw_d)
    fresh = MLPGenerator(4, 3, (8,))
    fresh.load_state_dict(g.state_dict())
    torch.testing.assert_close(fresh(z), g(z))
    assert "shift" not in MLPGenerator(4, 3, (8,)).state_dict()  # old checkpoints' keys


def _mean_gap(run_dir) -> float:
    """The largest distance of a sample mean from the data's, in the data's standard deviations."""
    _, data, model = load_run(run_dir, device="cpu")
    torch.manual_seed(0)
    s, t = model.sample(400), data.train
    return float(((s.mean(0) - t.mean(0)) / t.std(0)).abs().max())


def test_train_gan_standardises_vectors_by_default(wide_scales, tmp_path):
    common = dict(steps=200, batch_size=50, device="cpu", progress=False, figures=False)
    probgen.train("gan", wide_scales, tmp_path / "std", **common)
    probgen.train("gan", wide_scales, tmp_path / "raw", preprocess="none", **common)
    assert json.loads((tmp_path / "std" / "config.json").read_text())["preprocess"] == "standardize"
    std, raw = _mean_gap(tmp_path / "std"), _mean_gap(tmp_path / "raw")
    assert std < 2.5 and raw > 2 * std, (std, raw)
    # toy data and images keep their settings
    probgen.train("gan", "ring8", tmp_path / "toy", steps=2, limit=256, batch_size=64,
                  device="cpu", progress=False, figures=False)
    assert json.loads((tmp_path / "toy" / "config.json").read_text())["preprocess"] == "none"


def test_a_run_from_before_preprocess_loads_and_resumes(wide_scales, tmp_path):
    common = dict(batch_size=50, device="cpu", progress=False, figures=False)
    out = tmp_path / "old"
    probgen.train("gan", wide_scales, out, steps=4, preprocess="none", checkpoint_every=2,
                  **common)
    cfg = json.loads((out / "config.json").read_text())
    del cfg["preprocess"]  # as a run written before the option existed
    (out / "config.json").write_text(json.dumps(cfg))
    load_run(out, device="cpu")
    probgen.train("gan", wide_scales, out, steps=6, resume=True, **common)
    assert json.loads((out / "config.json").read_text())["preprocess"] == "none"


def test_preprocess_standardize_is_refused_on_images(tmp_path):
    with pytest.raises(ConfigError, match="is for vectors"):
        probgen.train("gan", "digits", tmp_path / "img", steps=2, preprocess="standardize",
                      limit=100, device="cpu", progress=False)
    assert not (tmp_path / "img").exists()


def test_options_that_do_not_fit_are_refused_before_the_run_folder_is_written(tmp_path):
    with pytest.raises(ConfigError, match="multiple of --pack=2"):
        probgen.train("gan", "ring8", tmp_path / "pack", steps=2, batch_size=63, pack=2,
                      limit=256, device="cpu", progress=False)
    assert not (tmp_path / "pack").exists()


def test_the_default_gan_on_8x8_digits_draws_every_digit(tmp_path):
    """The defaults for data other than 28x28/32x32 images and toy sets (the toy recipe:
    minimax, R1, linear decay) spread the samples over the ten digits where the DCGAN-style
    settings collapsed onto one. Oracle: scikit-learn's nearest-neighbour classifier fitted
    on the training digits names the class of each sample."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.neighbors import KNeighborsClassifier

    from probgen.cli import main

    out = tmp_path / "gan"
    assert main(["train", "gan", "--data", "digits", "--steps", "1500", "--log-every", "500",
                 "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    _, data, model = load_run(out, device="cpu")
    digits = load_digits()
    knn = KNeighborsClassifier(5).fit(digits.data / 16.0, digits.target)
    torch.manual_seed(0)
    with torch.no_grad():
        x = model.sample(1000).reshape(1000, -1)
    lo, hi = data.value_range
    pred = knn.predict(((x - lo) / (hi - lo)).clamp(0, 1).numpy())
    p = np.bincount(pred, minlength=10) / len(pred)
    entropy = -(p[p > 0] * np.log(p[p > 0])).sum() / np.log(10)
    assert entropy > 0.9, np.bincount(pred, minlength=10)
