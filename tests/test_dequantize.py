"""Dequantized images: the bound on log P(k), bits/dim, the noise, and the data's levels.

Truths that do not depend on probgen: on a discrete distribution over 8-bit values with known
probabilities, Jensen's inequality puts E_u[log p((k + u) / 256)] - D log 256 below log P(k),
with equality for a density that is constant on each bin (the histogram density
p(x) = 256 P(floor(256 x))).
"""

import math

import numpy as np
import pytest
import torch

from probgen.data import load_dataset
from probgen.data.base import Dataset
from probgen.data.dequantize import bits_per_dim, dequantize
from probgen.errors import DataError
from probgen.eval.evaluate import evaluate, likelihood_metrics


def _discrete(n=400, d=2, seed=0):
    """8-bit data (n, d) drawn from known per-value probabilities, independent values."""
    g = np.random.default_rng(seed)
    probs = g.dirichlet(np.full(256, 0.3), size=d)                 # (d, 256)
    k = np.stack([g.choice(256, size=n, p=probs[j]) for j in range(d)], 1)
    return k, probs


def _dataset(k):
    x = torch.tensor(k / 255.0, dtype=torch.float32)
    ds = Dataset(name="eight-bit", train=x, val=x, test=x, shape=(x.shape[1],), kind="image",
                 levels=256)
    return dequantize(ds)


class _Histogram:
    """p(x) = 256 P(bin of x) per value: constant on each bin (the bound is tight)."""

    def __init__(self, probs):
        self.logp = torch.tensor(np.log(probs))

    def log_prob(self, x):
        k = (x * 256).floor().long().clamp(0, 255)
        return sum(self.logp[j, k[:, j]] + math.log(256) for j in range(x.shape[1]))


class _Smooth:
    """A density that is not constant on the bins: p(x) = 256 P(bin) * (1 + 0.9 sin(2 pi (256 x))),
    which still integrates to P(bin) over each bin."""

    def __init__(self, probs):
        self.h = _Histogram(probs)

    def log_prob(self, x):
        u = x * 256 - (x * 256).floor()
        return self.h.log_prob(x) + torch.log1p(0.9 * torch.sin(2 * math.pi * u)).sum(1)


def _exact(k, probs):
    return torch.tensor(sum(np.log(probs[j, k[:, j]]) for j in range(k.shape[1])))


def test_bound_equals_log_p_for_a_density_constant_on_each_bin():
    k, probs = _discrete()
    data = _dataset(k)
    store = {}
    m = likelihood_metrics(_Histogram(probs), data, per_example=store, dequant_draws=3)
    exact = _exact(k, probs)
    torch.testing.assert_close(store["log_likelihood"], exact, atol=1e-4, rtol=0)
    assert m["log_likelihood"].estimator == "dequantization bound"
    assert m["log_likelihood"].inner_estimator == "exact"
    assert m["log_likelihood"].representation == "dequantized-8bit"


def test_bound_is_below_log_p_for_a_density_that_varies_within_bins():
    k, probs = _discrete()
    data = _dataset(k)
    store = {}
    likelihood_metrics(_Smooth(probs), data, per_example=store, dequant_draws=64)
    exact = _exact(k, probs)
    gap = exact - store["log_likelihood"]
    # Jensen: E log(1 + 0.9 sin) = log((1 + sqrt(1 - 0.81)) / 2) per value, about -0.277
    jensen = -2 * math.log((1 + math.sqrt(1 - 0.81)) / 2)
    assert float(gap.mean()) == pytest.approx(jensen, abs=0.03)
    assert float(gap.mean()) > 0


def test_bits_per_dim_and_record():
    assert bits_per_dim(-784 * math.log(2), 784) == pytest.approx(1.0)
    k, probs = _discrete(d=3)
    m = likelihood_metrics(_Histogram(probs), _dataset(k), dequant_draws=2)["log_likelihood"]
    assert m.bits_per_dim == pytest.approx(-m.value / (3 * math.log(2)))
    assert m.bits_per_dim_stderr == pytest.approx(m.stderr / (3 * math.log(2)))
    d = m.to_dict()
    assert d["unit"] == "nats" and d["representation"] == "dequantized-8bit"
    assert "mean_mc_stderr_per_example" in d["extra"]


def test_fresh_noise_per_epoch_and_fixed_noise_at_evaluation():
    k, _ = _discrete(n=50)
    data = _dataset(k)
    edges = torch.tensor(k / 256.0, dtype=torch.float32)
    a = next(data.batches("train", 50, shuffle=False))
    b = next(data.batches("train", 50, shuffle=False))
    assert not torch.equal(a, b)                              # fresh noise every pass
    for x in (a, b):                                          # inside each value's bin
        assert bool((x >= edges).all()) and bool((x < edges + 1 / 256).all())
    e0 = next(data.batches("train", 50, seed=3, epoch=0))
    e0b = next(data.batches("train", 50, seed=3, epoch=0))
    e1 = next(data.batches("train", 50, seed=3, epoch=1))
    assert torch.equal(e0, e0b) and not torch.equal(e0.sort(0).values, e1.sort(0).values)
    assert torch.equal(next(data.batches("test", 50, shuffle=False)), data.test)  # edges as stored

    class Recorder:
        def __init__(self):
            self.seen = []

        def log_prob(self, x):
            self.seen.append(x.clone())
            return x.sum(1)

    r1, r2 = Recorder(), Recorder()
    likelihood_metrics(r1, data, dequant_draws=2, noise_seed=5)
    likelihood_metrics(r2, data, dequant_draws=2, noise_seed=5)
    assert all(torch.equal(u, v) for u, v in zip(r1.seen, r2.seen))
    assert not torch.equal(r1.seen[0], r1.seen[1])            # two different draws


def test_named_images_know_their_levels():
    ds = load_dataset("digits", dequantize="auto")
    assert ds.levels == 17 and ds.bin_width == pytest.approx(1 / 17)
    assert ds.representation == "dequantized-17-level"
    k = ds.test * 17
    torch.testing.assert_close(k, k.round())                  # stored as lower edges k / 17
    assert load_dataset("ring8", dequantize="auto").bin_width is None     # a density already
    assert load_dataset("digits", binarize="fixed").representation == "binary"
    assert load_dataset("digits").representation == "raw-pixels"
    # log P(bins) >= E log p(values in the bin) + D log w: 64 pixels of width 1/17
    assert ds.bound_offset == pytest.approx(-64 * math.log(17))
    assert load_dataset("digits").bound_offset == 0.0
    with pytest.raises(DataError, match="two representations"):
        load_dataset("digits", binarize="fixed", dequantize="on")


def test_user_arrays(tmp_path):
    u8 = np.random.default_rng(0).integers(0, 256, size=(30, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "u8.npy", u8)
    ds = load_dataset(str(tmp_path / "u8.npy"), dequantize="auto")
    assert ds.representation == "dequantized-8bit"
    np.save(tmp_path / "f255.npy", (u8 / 255.0).astype(np.float32))   # floats on the 8-bit grid
    assert load_dataset(str(tmp_path / "f255.npy"), dequantize="auto").levels == 256

    floats = np.random.default_rng(0).random((30, 4, 4)).astype(np.float32)
    np.save(tmp_path / "f.npy", floats)
    with pytest.raises(DataError, match="--bin-width"):
        load_dataset(str(tmp_path / "f.npy"), dequantize="auto")
    np.save(tmp_path / "v.npy", floats.reshape(30, 16))
    with pytest.raises(DataError, match="--bin-width"):
        load_dataset(str(tmp_path / "v.npy"), dequantize="on")
    ds = load_dataset(str(tmp_path / "v.npy"), bin_width=0.01)
    assert ds.bin_width == 0.01 and ds.representation == "dequantized"
    with pytest.raises(DataError, match="positive"):
        load_dataset(str(tmp_path / "v.npy"), bin_width=-1.0)


def test_gmm_on_dequantized_digits_gives_a_likelihood_of_images(tmp_path):
    from probgen.cli import main

    out = tmp_path / "gmm"
    assert main(["train", "gmm", "--data", "digits", "--out", str(out), "--device", "cpu",
                 "--no-figures", "--quiet", "--components", "5", "--n-init", "1",
                 "--max-iter", "30"]) == 0
    assert main(["eval", str(out), "--device", "cpu", "--quiet", "--limit", "200"]) == 0
    import json

    res = json.loads((out / "eval.json").read_text())
    ll = res["metrics"]["log_likelihood"]
    assert res["representation"] == "dequantized-17-level"
    assert ll["estimator"] == "dequantization bound" and ll["unit"] == "nats"
    # a probability of 64 values with 17 levels each: between 0 and the uniform's 64 log 17
    assert -64 * math.log(17) < ll["value"] < 0
    assert 0 < ll["bits_per_dim"] < math.log2(17)


def test_evaluate_labels_every_likelihood():
    ds = load_dataset("ring8")
    from probgen.models.gmm import GaussianMixture

    gm = GaussianMixture(8, random_state=0).fit(ds.train[:2000].double())
    res = evaluate(gm.as_density(event_shape=ds.shape), ds, limit=300, n_samples=300)
    for name in ("log_likelihood", "true_log_likelihood"):
        m = res["metrics"][name]
        assert m["representation"] == "continuous" and m["estimator"] == "exact"
        assert "bits_per_dim" not in m
    assert res["representation"] == "continuous"


def test_data_options_choose_one_representation(tmp_path, capsys):
    import json
    from argparse import Namespace

    from probgen.cli import main
    from probgen.recipes import vae

    assert vae.data_options(Namespace(likelihood="gaussian"))["dequantize"] == "auto"
    assert vae.data_options(Namespace(likelihood="bernoulli"))["binarize"] == "dynamic"
    out = tmp_path / "bin"
    assert main(["train", "gmm", "--data", "digits", "--binarize", "fixed", "--out", str(out),
                 "--device", "cpu", "--no-figures", "--quiet", "--components", "2", "--n-init", "1",
                 "--max-iter", "5", "--limit", "200"]) == 0
    assert json.loads((out / "config.json").read_text())["data_options"]["dequantize"] == "none"
    floats = np.random.default_rng(0).random((40, 4, 4)).astype(np.float32)
    np.save(tmp_path / "f.npy", floats)
    assert main(["train", "gmm", "--data", str(tmp_path / "f.npy"), "--out", str(tmp_path / "f"),
                 "--device", "cpu", "--no-figures", "--quiet"]) != 0
    assert "--bin-width W" in capsys.readouterr().err
    assert main(["train", "gmm", "--data", str(tmp_path / "f.npy"), "--bin-width", "0.001",
                 "--out", str(tmp_path / "g"), "--device", "cpu", "--no-figures", "--quiet",
                 "--components", "2", "--n-init", "1", "--max-iter", "5"]) == 0


def test_samples_of_dequantized_values_are_scored_as_the_values_of_their_bins(tmp_path):
    """A sampler of the true dequantized distribution (a count plus U[0, 1) noise) is, as
    discrete values, the data's own distribution: its sample metrics must not see the half
    bin the noise adds on average (an energy distance of 0 up to noise)."""
    from probgen.eval.samples import vector_sample_metrics

    g = np.random.default_rng(0)
    np.save(tmp_path / "counts.npy", g.poisson([4.0, 9.0], size=(3000, 2)))
    ds = load_dataset(str(tmp_path / "counts.npy"), bin_width=1.0)
    assert ds.representation == "dequantized"
    x = torch.tensor([[3.99, -0.5], [7.2, 2.0]])  # (within a thousandth of a bin: an edge)
    torch.testing.assert_close(ds.as_values(x), torch.tensor([[3.0, -1.0], [7.0, 2.0]]))
    assert ds.as_values(x) is not x and load_dataset(str(tmp_path / "counts.npy")).as_values(x) is x

    class TrueDequantized:
        def sample(self, n):
            gen = torch.Generator().manual_seed(1)
            k = ds.train[torch.randint(0, ds.train.shape[0], (n,), generator=gen)]
            return k + torch.rand(k.shape, generator=gen)

    m = vector_sample_metrics(TrueDequantized(), ds, n_samples=400)
    assert m["energy_distance"].extra["p_value"] > 0.05
    # the same samples left continuous sit half a bin above the data: plainly apart
    shifted = TrueDequantized().sample(400)
    raw = vector_sample_metrics(None, load_dataset(str(tmp_path / "counts.npy")), samples=shifted,
                                n_samples=400)
    assert raw["energy_distance"].extra["p_value"] < 0.05

    # the data's own values stay where they are, also on a grid float32 cannot hold exactly
    np.save(tmp_path / "tenths.npy", (g.integers(0, 50_000, size=(500, 3)) * 0.1).astype(np.float32))
    tenths = load_dataset(str(tmp_path / "tenths.npy"), bin_width=0.1)
    torch.testing.assert_close(tenths.as_values(tenths.train), tenths.train, rtol=0, atol=1e-3)
    for name in ("digits", "mnist-5k"):
        pixels = load_dataset(name, dequantize="auto")
        assert torch.equal(pixels.as_values(pixels.train), pixels.train)

    # 8-bit pixels: k / 256 edges, clamped to the 256 levels
    eight = _dataset(np.array([[0, 255], [17, 128]]))
    torch.testing.assert_close(eight.as_values(torch.tensor([[0.5 / 256, 1.2], [-0.1, 17.7 / 256]])),
                               torch.tensor([[0.0, 255 / 256], [0.0, 17 / 256]]))
    out = eight.as_values(torch.tensor([float("inf"), float("nan"), 0.5]))
    assert out[0] == float("inf") and out[1].isnan() and out[2] == 128 / 256  # divergence shows
