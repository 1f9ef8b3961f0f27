"""Sample metrics against closed forms, scipy, scikit-learn and torchmetrics as oracles."""

import math

import numpy as np
import pytest
import torch

from probgen.errors import DataError
from probgen.eval import samples as S
from probgen.eval.metrics import Metric


def _gauss(n, mean, cov, seed):
    g = np.random.default_rng(seed)
    return torch.from_numpy(g.multivariate_normal(mean, cov, size=n))


# ----------------------------------------------------------------------------- Frechet
def test_gaussian_frechet_distance_closed_form_diagonal():
    # commuting (diagonal) covariances: ||dmu||^2 + sum (sqrt a - sqrt b)^2
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 1.0, 0.0])
    a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    expected = float((mu1 - mu2).pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum())
    got = S.gaussian_frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b))
    assert got == pytest.approx(expected, rel=1e-10)


def test_gaussian_frechet_distance_matches_scipy_sqrtm():
    from scipy.linalg import sqrtm

    g = np.random.default_rng(1)
    for d in (2, 5, 20):
        a, b = g.normal(size=(d, d)), g.normal(size=(d, d))
        c1, c2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
        m1, m2 = g.normal(size=d), g.normal(size=d)
        oracle = ((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * np.real(sqrtm(c1 @ c2)))
        assert S.gaussian_frechet_distance(m1, c1, m2, c2) == pytest.approx(oracle, rel=1e-8)


def test_frechet_distance_of_samples_approaches_the_gaussian_value():
    m1, m2 = np.zeros(3), np.array([1.0, 0.0, 0.5])
    c1, c2 = np.diag([1.0, 2.0, 0.5]), np.diag([2.0, 2.0, 1.0])
    exact = S.gaussian_frechet_distance(m1, c1, m2, c2)
    got = S.frechet_distance(_gauss(20000, m1, c1, 0), _gauss(20000, m2, c2, 1))
    assert got == pytest.approx(exact, abs=0.05)


def test_frechet_and_kernel_distance_match_torchmetrics():
    from torch import nn
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    class Identity(nn.Module):
        num_features = 6

        def forward(self, x):
            return x

    a = _gauss(400, np.zeros(6), np.eye(6), 0)
    b = _gauss(300, np.full(6, 0.3), 1.5 * np.eye(6), 1)
    fid = FrechetInceptionDistance(feature=Identity())
    fid.update(a, real=True)
    fid.update(b, real=False)
    assert S.frechet_distance(a, b) == pytest.approx(float(fid.compute()), rel=1e-6)
    # a subset as large as the smaller set holds all of it: the subsets agree exactly
    with pytest.warns(UserWarning, match="save all extracted features"):
        kid = KernelInceptionDistance(feature=Identity(), subsets=2, subset_size=300)
    kid.update(a[:300], real=True)
    kid.update(b, real=False)
    mean, _ = kid.compute()
    ours, std = S.kernel_distance(a[:300], b, subsets=2, subset_size=300)
    assert ours == pytest.approx(float(mean), rel=1e-6)
    assert std == pytest.approx(0.0, abs=1e-9)


def test_kernel_distance_matches_a_naive_unbiased_mmd():
    x = _gauss(30, np.zeros(4), np.eye(4), 2)
    y = _gauss(25, np.ones(4), np.eye(4), 3)

    def k(u, v):
        return (float(u @ v) / 4 + 1) ** 3

    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    got, _ = S.kernel_distance(x[:25], y, subsets=2, subset_size=25)
    x25 = x[:25]
    kxx25 = sum(k(x25[i], x25[j]) for i in range(25) for j in range(25) if i != j) / (25 * 24)
    assert got == pytest.approx(kxx25 + kyy - 2 * sum(k(x25[i], y[j]) for i in range(25) for j in range(25)) / 625, rel=1e-9)
    assert kxx + kyy - 2 * kxy > 0  # the sets differ


def test_same_distribution_gives_near_zero_distances():
    a = _gauss(3000, np.zeros(5), np.eye(5), 4)
    b = _gauss(3000, np.zeros(5), np.eye(5), 5)
    assert S.frechet_distance(a, b) < 0.02
    mean, std = S.kernel_distance(a, b, subsets=20, subset_size=1000)
    assert abs(mean) < 3 * std + 1e-3


# ----------------------------------------------------------------------------- precision / recall
def test_knn_radii_match_scikit_learn():
    from sklearn.neighbors import NearestNeighbors

    x = _gauss(300, np.zeros(3), np.eye(3), 6)
    nn = NearestNeighbors(n_neighbors=4).fit(x.numpy())
    dist, _ = nn.kneighbors(x.numpy())  # column 0 is the point itself
    np.testing.assert_allclose(S.knn_radii(x, 3).numpy(), dist[:, 3], rtol=1e-10)


def test_precision_recall_one_sided_case_and_argument_order():
    # generated samples all sit in the middle of the real cloud: perfect precision, poor recall
    real = _gauss(2000, np.zeros(2), np.eye(2), 7)
    fake = _gauss(2000, np.zeros(2), 0.01 * np.eye(2), 8)
    pr = S.precision_recall(real, fake)
    assert pr["precision"] > 0.99
    assert pr["recall"] < 0.3
    swapped = S.precision_recall(fake, real)  # the pitfall: arguments swapped flips the meaning
    assert swapped["recall"] > 0.99 and swapped["precision"] < 0.3


def test_precision_recall_density_coverage_match_naive_definitions():
    from sklearn.neighbors import NearestNeighbors

    real = _gauss(200, np.zeros(2), np.eye(2), 9)
    fake = _gauss(150, np.array([0.5, 0.0]), np.eye(2), 10)

    def radii(x, k):
        return NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)[0][:, k]

    r, f = real.numpy(), fake.numpy()
    d_fr = np.linalg.norm(f[:, None] - r[None], axis=2)  # (M, N)
    rr3, rf3, rr5 = radii(r, 3), radii(f, 3), radii(r, 5)
    precision = np.mean([(d_fr[j] <= rr3).any() for j in range(len(f))])
    recall = np.mean([(d_fr[:, i] <= rf3).any() for i in range(len(r))])
    density = (d_fr <= rr5[None]).sum() / (5 * len(f))
    coverage = np.mean([(d_fr[:, i] <= rr5[i]).any() for i in range(len(r))])
    pr = S.precision_recall(real, fake)
    dc = S.density_coverage(real, fake)
    assert pr["precision"] == pytest.approx(precision)
    assert pr["recall"] == pytest.approx(recall)
    assert dc["density"] == pytest.approx(density)
    assert dc["coverage"] == pytest.approx(coverage)


def test_density_and_coverage_of_identical_distributions():
    a = _gauss(2000, np.zeros(2), np.eye(2), 11)
    b = _gauss(2000, np.zeros(2), np.eye(2), 12)
    dc = S.density_coverage(a, b)
    assert dc["density"] == pytest.approx(1.0, abs=0.1)   # Naeem et al.: E[density] = 1
    assert dc["coverage"] > 0.9                            # about 1 - 2^-k = 0.97 for k = 5


# ----------------------------------------------------------------------------- class histogram
def test_class_histogram_counts_entropy_and_classes_generated():
    pred = torch.tensor([0] * 50 + [1] * 50 + [2] * 5)
    h = S.class_histogram(pred, 4)
    assert h["counts"] == [50, 50, 5, 0]
    p = np.array([50, 50, 5]) / 105
    assert h["normalized_entropy"] == pytest.approx(-(p * np.log(p)).sum() / math.log(4))
    # expected count 105 / 4 = 26.25; a class is generated with >= 0.2 x that = 6 samples
    assert h["classes_generated"] == 2
    even = S.class_histogram(torch.arange(40) % 4, 4)
    assert even["normalized_entropy"] == pytest.approx(1.0)
    assert even["kl_to_reference"] == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------------------- errors
def test_errors_name_the_problem():
    with pytest.raises(DataError, match="non-finite"):
        S.frechet_distance(torch.tensor([[0.0], [float("nan")]]), torch.zeros(3, 1))
    with pytest.raises(DataError, match=r"\(N, d\) matrix"):
        S.precision_recall(torch.zeros(5), torch.zeros(5, 2))
    with pytest.raises(DataError, match="need more than 3 points"):
        S.knn_radii(torch.zeros(3, 2), 3)


# ----------------------------------------------------------------------------- feature network
@pytest.fixture
def digits():
    from probgen.data import load_dataset

    return load_dataset("digits")


class _Replay:
    """A 'model' that samples given data: the oracle of a perfect and of a broken model."""

    def __init__(self, x):
        self.x = x

    def sample(self, n):
        return self.x[:n]


def test_feature_network_is_trained_cached_and_reloaded(digits, tmp_path, monkeypatch):
    from probgen.eval import features as F

    monkeypatch.setenv("PROBGEN_CACHE", str(tmp_path))
    fn = F.feature_network(digits, epochs=30)
    assert fn.accuracy > 0.9
    assert fn.name == "probgen-mlp-digits"
    assert fn.path.exists() and fn.path.parent == tmp_path / "features"
    again = F.feature_network(digits, epochs=30)
    assert again.accuracy == fn.accuracy
    torch.testing.assert_close(again.features(digits.test), fn.features(digits.test))
    payload = torch.load(fn.path, weights_only=True)
    assert set(payload) >= {"state_dict", "accuracy"}


def test_image_sample_metrics_separate_real_data_from_noise(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("PROBGEN_CACHE", str(tmp_path))
    from probgen.eval.features import feature_network

    fn = feature_network(digits, epochs=30)
    good = S.image_sample_metrics(_Replay(digits.train), digits, feature_net=fn)
    noise = S.image_sample_metrics(_Replay(torch.rand_like(digits.train)), digits, feature_net=fn)
    assert all(isinstance(m, Metric) for m in good.values())
    assert set(good) == {"feature_net_accuracy", "frechet_distance", "kernel_distance", "precision",
                         "recall", "density", "coverage", "class_histogram"}
    assert good["frechet_distance"].extra["feature_network"] == "probgen-mlp-digits"
    assert good["frechet_distance"].value < 0.2 * noise["frechet_distance"].value
    assert good["kernel_distance"].value < 0.2 * noise["kernel_distance"].value
    assert good["precision"].value > 0.8 and noise["precision"].value < good["precision"].value - 0.4
    assert good["recall"].value > 0.8
    assert good["class_histogram"].extra["classes_generated"] == 10
    assert good["class_histogram"].value > 0.95
    assert sum(good["class_histogram"].extra["counts"]) == good["precision"].extra["n_generated"]


def test_one_feature_network_and_one_scale_for_every_representation(tmp_path, monkeypatch):
    """Grey [0, 1], grey [-1, 1] and binarised runs of one data set share one network, trained
    on the same grey training pixels; the same images score the same in [0, 1] and [-1, 1]."""
    from probgen.data import load_dataset
    from probgen.eval.features import feature_network

    monkeypatch.setenv("PROBGEN_CACHE", str(tmp_path))
    grey = load_dataset("digits")
    pm = load_dataset("digits", value_range=(-1.0, 1.0))
    dyn = load_dataset("digits", binarize="dynamic")
    nets = [feature_network(d, epochs=30) for d in (grey, pm, dyn)]
    assert nets[0].path == nets[1].path == nets[2].path
    assert len(list((tmp_path / "features").iterdir())) == 1
    torch.testing.assert_close(nets[1].features(pm.test), nets[0].features(grey.test), rtol=0, atol=1e-5)
    # the test split of the dynamic run is binarised (0/1), and scored as such
    assert set(dyn.test.unique().tolist()) <= {0.0, 1.0}
    unit = S.image_sample_metrics(_Replay(grey.val), grey, feature_net=nets[0])
    signed = S.image_sample_metrics(_Replay(pm.val), pm, feature_net=nets[1])
    for name in ("frechet_distance", "kernel_distance", "precision", "recall", "coverage"):
        assert signed[name].value == pytest.approx(unit[name].value, rel=1e-6, abs=1e-9)
    assert unit["frechet_distance"].value > 0  # held-out real data: small, not zero
