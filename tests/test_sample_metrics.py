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


def test_a_feature_network_asked_for_twice_at_once_is_trained_once(digits, tmp_path, monkeypatch):
    """Two callers at the same time (two threads here; two processes take the same file lock):
    the second waits for the first's network and loads it."""
    import threading
    import time

    from probgen.eval import features as F

    monkeypatch.setenv("PROBGEN_CACHE", str(tmp_path))
    calls, real_train = [], F._train

    def slow_train(*args, **kwargs):
        calls.append(1)
        time.sleep(0.5)  # the other caller arrives while this one trains
        return real_train(*args, **kwargs)

    monkeypatch.setattr(F, "_train", slow_train)
    got = []
    threads = [threading.Thread(target=lambda: got.append(F.feature_network(digits, epochs=3)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(got) == 2
    assert got[0].path == got[1].path and got[0].accuracy == got[1].accuracy
    torch.testing.assert_close(got[0].features(digits.test[:50]), got[1].features(digits.test[:50]))


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
    """Grey [0, 1], grey [-1, 1], binarised and dequantized runs of one data set share one
    network, trained on the same grey training pixels, with one test accuracy; the same images
    score the same in [0, 1] and [-1, 1]."""
    from probgen.data import load_dataset
    from probgen.eval.features import feature_network

    monkeypatch.setenv("PROBGEN_CACHE", str(tmp_path))
    grey = load_dataset("digits")
    pm = load_dataset("digits", value_range=(-1.0, 1.0))
    dyn = load_dataset("digits", binarize="dynamic")
    deq = load_dataset("digits", dequantize="auto")
    assert deq.bin_width and not torch.equal(deq.train, grey.train)  # k / L against k / (L - 1)
    nets = [feature_network(d, epochs=30) for d in (grey, pm, dyn, deq)]
    assert nets[0].path == nets[1].path == nets[2].path == nets[3].path
    assert len({n.accuracy for n in nets}) == 1
    assert len(list((tmp_path / "features").glob("*.pt"))) == 1
    torch.testing.assert_close(nets[1].features(pm.test), nets[0].features(grey.test), rtol=0, atol=1e-5)
    # the test split of the dynamic run is binarised (0/1), and scored as such
    assert set(dyn.test.unique().tolist()) <= {0.0, 1.0}
    unit = S.image_sample_metrics(_Replay(grey.val), grey, feature_net=nets[0])
    signed = S.image_sample_metrics(_Replay(pm.val), pm, feature_net=nets[1])
    for name in ("frechet_distance", "kernel_distance", "precision", "recall", "coverage"):
        assert signed[name].value == pytest.approx(unit[name].value, rel=1e-6, abs=1e-9)
    assert unit["frechet_distance"].value > 0  # held-out real data: small, not zero


# ----------------------------------------------------------------------------- vector data
def _naive_mmd2(x, y, k):
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(a, b) for a in x for b in y) / (m * n)
    return xx + yy - 2 * xy


def test_energy_distance_matches_scipy_in_one_dimension():
    from scipy.stats import energy_distance

    g = np.random.default_rng(0)
    for m, n in ((30, 45), (200, 100)):
        a, b = g.normal(size=m), g.normal(0.5, 2.0, size=n)
        got = S.energy_distance(torch.from_numpy(a)[:, None], torch.from_numpy(b)[:, None], unbiased=False)
        assert math.sqrt(got) == pytest.approx(energy_distance(a, b), rel=1e-10)


def test_pooled_statistics_equal_the_naive_u_statistics():
    x, y = _gauss(12, [0, 0], np.eye(2), 1), _gauss(9, [1, 0], np.eye(2), 2)
    h = 0.7
    gauss = lambda a, b: math.exp(-float(((a - b) ** 2).sum()) / (2 * h * h))  # noqa: E731
    assert S.mmd2(x, y, bandwidth=h) == pytest.approx(_naive_mmd2(x, y, gauss), rel=1e-10)
    neg_dist = lambda a, b: -float((a - b).norm())  # noqa: E731
    energy = S.two_sample_statistic(x, y, "energy", permutations=0)["value"]
    assert energy == pytest.approx(_naive_mmd2(x, y, neg_dist), rel=1e-10)
    assert S.energy_distance(x, y) == pytest.approx(energy, rel=1e-10)
    # the median heuristic: the median of the distinct pooled pairwise distances
    z = torch.cat([x, y])
    d = [float((z[i] - z[j]).norm()) for i in range(len(z)) for j in range(i + 1, len(z))]
    assert S.median_bandwidth(x, y) == pytest.approx(float(np.median(d)), rel=1e-12)
    # every permutation's statistic (one product for all of them) is the naive U-statistic of
    # that split of the pooled points
    g = torch.Generator().manual_seed(0)
    perms = torch.stack([torch.randperm(len(z), generator=g) for _ in range(3)], 1)
    k = torch.exp(-torch.cdist(z, z).pow(2) / (2 * h * h))
    null = S._mmd2_from_kernel(k, (perms < len(x)).double(), len(x), len(y))
    for i in range(3):
        xs, ys = z[perms[:, i] < len(x)], z[perms[:, i] >= len(x)]
        assert float(null[i]) == pytest.approx(_naive_mmd2(xs, ys, gauss), rel=1e-9, abs=1e-12)


def test_a_shared_distance_matrix_gives_the_same_statistics_and_a_wrong_one_is_refused():
    x, y = _gauss(40, [0, 0], np.eye(2), 1), _gauss(30, [1, 0], np.eye(2), 2)
    z = torch.cat([x, y])
    d = torch.cdist(z, z)
    for kind in ("energy", "mmd"):
        assert S.two_sample_statistic(x, y, kind, distances=d) == S.two_sample_statistic(x, y, kind)
    with pytest.raises(DataError, match=r"distances must be the \(70, 70\) distance matrix"):
        S.two_sample_statistic(x, y, "mmd", distances=d[:69, :69])


def test_energy_distance_and_mmd_against_gaussian_closed_forms():
    from scipy.stats import norm

    delta, s = 1.0, 1.0
    # 1-D energy distance between N(0, 1) and N(delta, 1): X - Y ~ N(-delta, 2)
    sd = math.sqrt(2) * s
    e_xy = sd * math.sqrt(2 / math.pi) * math.exp(-delta**2 / (2 * sd**2)) + delta * (1 - 2 * norm.cdf(-delta / sd))
    e_xx = 2 * s / math.sqrt(math.pi)
    truth = 2 * e_xy - 2 * e_xx
    x, y = _gauss(3000, [0], [[1]], 3), _gauss(3000, [delta], [[1]], 4)
    st = S.two_sample_statistic(x, y, "energy", permutations=0)
    assert abs(st["value"] - truth) < 4 * st["stderr"]
    # 2-D Gaussian-kernel MMD^2 between N(a, s^2 I) and N(b, s^2 I), bandwidth h:
    # E k(X, Y) = (h^2 / (h^2 + 2 s^2))^(D/2) exp(-||a - b||^2 / (2 (h^2 + 2 s^2)))
    h, dim = 1.5, 2
    c = (h**2 / (h**2 + 2 * s**2)) ** (dim / 2)
    truth = 2 * c * (1 - math.exp(-delta**2 / (2 * (h**2 + 2 * s**2))))
    x, y = _gauss(2000, [0, 0], np.eye(2), 5), _gauss(2000, [delta, 0], np.eye(2), 6)
    st = S.two_sample_statistic(x, y, "mmd", bandwidth=h, permutations=0)
    assert st["bandwidth"] == h
    assert abs(st["value"] - truth) < 4 * st["stderr"]


def test_same_distribution_is_zero_in_expectation_and_shifted_is_positive():
    reps = [S.two_sample_statistic(_gauss(40, [0, 0], np.eye(2), 2 * r),
                                   _gauss(40, [0, 0], np.eye(2), 2 * r + 1), kind, permutations=0)["value"]
            for r in range(150) for kind in ("energy", "mmd")]
    for vals in (np.array(reps[0::2]), np.array(reps[1::2])):
        assert abs(vals.mean()) < 3 * vals.std() / math.sqrt(len(vals))
    # shifted: positive, beyond the permutation reference, and the standard error matches
    # the spread over replicates (the statistic is not degenerate there)
    for kind in ("energy", "mmd"):
        st = S.two_sample_statistic(_gauss(300, [0, 0], np.eye(2), 7), _gauss(300, [0.5, 0], np.eye(2), 8),
                                    kind, bandwidth=1.0 if kind == "mmd" else None, permutations=200)
        assert st["value"] > st["null_q95"] > 0 and st["p_value"] == pytest.approx(1 / 201)
        spread = np.std([S.two_sample_statistic(_gauss(300, [0, 0], np.eye(2), 100 + 2 * r),
                                                _gauss(300, [0.5, 0], np.eye(2), 101 + 2 * r), kind,
                                                bandwidth=1.0 if kind == "mmd" else None,
                                                permutations=0)["value"] for r in range(40)])
        assert 0.6 < st["stderr"] / spread < 1.6


def test_vector_sample_metrics_on_banana_exact_and_shifted_samplers():
    from probgen.data import load_dataset

    data = load_dataset("banana")

    class Sampler:
        def __init__(self, shift):
            self.shift = shift

        def sample(self, n):
            x = data.density.sample(n, generator=torch.Generator().manual_seed(11))
            return x + torch.tensor([self.shift, 0.0])

    exact = S.vector_sample_metrics(Sampler(0.0), data, n_samples=500)
    shifted = S.vector_sample_metrics(Sampler(0.5), data, n_samples=500)
    assert set(exact) == {"energy_distance", "mmd", "sample_log_density"}
    for name in ("energy_distance", "mmd"):
        assert exact[name].value < exact[name].extra["null_q95"] and exact[name].extra["p_value"] > 0.01
        assert shifted[name].value > shifted[name].extra["null_q95"] > 0
        assert shifted[name].extra["p_value"] < 0.01
    assert exact["mmd"].extra["bandwidth"] > 0
    ld, ref = exact["sample_log_density"], exact["sample_log_density"].extra["reference"]
    assert abs(ld.value - ref) < 4 * math.hypot(ld.stderr, exact["sample_log_density"].extra["reference_stderr"])
    assert shifted["sample_log_density"].value < ref - 0.1
    # the true entropy of the banana is that of two independent Gaussians: 1 + log(2 pi s)
    assert ref == pytest.approx(-(1 + math.log(2 * math.pi * data.density.s)), abs=0.15)


def test_evaluate_gives_vector_metrics_and_counts_samples_off_the_support():
    from probgen.data import load_dataset
    from probgen.eval.evaluate import evaluate

    data = load_dataset("checkerboard")

    class HalfOff:  # half the samples on the light squares, where the density is 0
        def sample(self, n):
            x = data.density.sample(n, generator=torch.Generator().manual_seed(2))
            x[: n // 2, 0] += 1.0
            return ((x + 2) % 4) - 2

    res = evaluate(HalfOff(), data, n_samples=400)["metrics"]
    assert res["sample_log_density"]["extra"]["outside_support"] == pytest.approx(0.5, abs=0.03)
    assert res["sample_log_density"]["value"] == pytest.approx(-math.log(8), rel=1e-9)
    # the table's cell says the share off the support, the value itself being the same for
    # every sample on it
    from probgen.report import format_metric

    share = 100 * res["sample_log_density"]["extra"]["outside_support"]
    assert format_metric(res["sample_log_density"]).endswith(f"({share:.3g}% of samples outside the support)")
    for name in ("energy_distance", "mmd"):
        assert res[name]["extra"]["n_generated"] == 400 and res[name]["extra"]["permutations"] == 200


def test_vector_metric_errors_name_the_problem():
    with pytest.raises(DataError, match="kind must be 'energy' or 'mmd'"):
        S.two_sample_statistic(torch.zeros(3, 1), torch.zeros(3, 1), "wasserstein")
    with pytest.raises(DataError, match="at least 2 points per set"):
        S.two_sample_statistic(torch.zeros(1, 2), torch.zeros(5, 2))
    with pytest.raises(DataError, match="3 and 2 dimensions"):
        S.two_sample_statistic(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(DataError, match="bandwidth must be positive"):
        S.two_sample_statistic(torch.zeros(4, 2), torch.ones(4, 2), "mmd", bandwidth=0.0)

    class Diverged:
        def sample(self, n):
            return torch.full((n, 2), float("nan"))

    from probgen.data import load_dataset

    with pytest.raises(DataError, match="not finite"):
        S.vector_sample_metrics(Diverged(), load_dataset("banana"), n_samples=10)


def test_a_sampler_that_diverged_blanks_its_image_metrics_with_the_reason():
    """Non-finite samples do not stop a comparison: every feature-network metric of the row
    is blank, saying how many samples were not finite and what to do."""
    from types import SimpleNamespace

    from probgen.eval.samples import IMAGE_METRIC_NAMES, image_sample_metrics

    data = SimpleNamespace(shape=(1, 4, 4), split=lambda s: torch.zeros(10, 1, 4, 4))
    x = torch.rand(10, 1, 4, 4)
    x[3, 0, 1, 1] = float("nan")
    x[7, 0, 0, 0] = float("inf")
    out = image_sample_metrics(None, data, samples=x, feature_net=object())
    assert set(out) == set(IMAGE_METRIC_NAMES)
    for m in out.values():
        assert m.value is None and m.reason.startswith("2 of 10 samples are not finite")


def test_frechet_stderr_is_the_spread_of_the_distance_over_fresh_draws():
    # the bootstrap's standard error against the standard deviation of the distance over
    # independent draws of both sets from the same two Gaussians
    m1, m2 = np.zeros(4), np.full(4, 0.3)
    c1, c2 = np.eye(4), np.diag([1.0, 1.5, 0.7, 1.2])
    fresh = torch.tensor([S.frechet_distance(_gauss(300, m1, c1, 2 * i), _gauss(300, m2, c2, 2 * i + 1))
                          for i in range(60)])
    boot = S.frechet_distance_stderr(_gauss(300, m1, c1, 500), _gauss(300, m2, c2, 501), seed=0)
    assert 0.6 * float(fresh.std()) < boot < 1.6 * float(fresh.std())
    assert S.frechet_distance_stderr(_gauss(300, m1, c1, 500), _gauss(300, m2, c2, 501), seed=0) == boot


def test_manifold_metrics_on_your_vectors_are_in_standard_units(wide_scales):
    """On a user's vectors precision, recall, density and coverage are those of the
    standardised points (the training split's mean and standard deviation): rescaling a
    feature leaves them as they are, and they equal the image metrics' functions applied to
    points standardised by hand. A sampler stuck in one region is far below the real data's."""
    import numpy as np

    from probgen.data import load_dataset

    data = load_dataset(wide_scales)
    assert data.kind == "vector"
    train, test, val = data.train.double(), data.split("test").double(), data.split("val").double()

    class Fixed:  # returns given points as its samples
        def __init__(self, x):
            self.x = x

        def sample(self, n):
            return self.x[:n].float()

    n = min(test.shape[0], val.shape[0])
    good = S.vector_sample_metrics(Fixed(val), data, n_samples=n, permutations=0)
    assert {"precision", "recall", "density", "coverage"} <= set(good)
    assert good["precision"].extra["space"] == "the training data's standard units"
    mean, std = train.mean(0), train.std(0)
    z = lambda x: (x - mean) / std  # noqa: E731
    pr, dc = S.precision_recall(z(test[:n]), z(val[:n])), S.density_coverage(z(test[:n]), z(val[:n]))
    assert good["precision"].value == pytest.approx(pr["precision"])
    assert good["recall"].value == pytest.approx(pr["recall"])
    assert good["coverage"].value == pytest.approx(dc["coverage"])
    assert good["density"].value == pytest.approx(dc["density"])
    # in raw units the 1000-wide feature would decide every ball; standardised, it does not
    raw = S.precision_recall(test[:n], val[:n])
    assert raw != pr
    # rescale the widest feature of everything by 1e-3: the same metrics
    scale = torch.ones(train.shape[1], dtype=torch.float64)
    scale[int(np.argmax(std.numpy()))] = 1e-3
    small = S.standardized_manifold_metrics(test[:n] * scale, val[:n] * scale, train * scale)
    for k in ("precision", "recall", "density", "coverage"):
        assert small[k].value == pytest.approx(good[k].value)
    # every sample near one test point: precise, but covers almost nothing
    stuck = S.vector_sample_metrics(Fixed(test[:1].repeat(n, 1) + 0.01 * std), data,
                                    n_samples=n, permutations=0)
    assert stuck["coverage"].value < 0.5 * good["coverage"].value
    assert stuck["recall"].value < 0.5 * good["recall"].value
    # too few points for 5-NN balls: blank, saying why, instead of failing the evaluation
    tiny = S.standardized_manifold_metrics(test[:4], val[:4], train)
    assert tiny["coverage"].value is None and "more than 5 test points" in tiny["coverage"].reason


def test_toy_sets_keep_their_mode_metrics_without_manifold_metrics():
    from probgen.data import load_dataset

    data = load_dataset("ring8")

    class Exact:
        def sample(self, n):
            return data.density.sample(n, generator=torch.Generator().manual_seed(0))

    assert "coverage" not in S.vector_sample_metrics(Exact(), data, n_samples=200, permutations=0)
