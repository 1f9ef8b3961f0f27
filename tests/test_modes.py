"""Mode coverage on toy mixtures: counts, thresholds and reverse KL against hand-computed values."""

import math

import pytest
import torch

from probgen.errors import DataError
from probgen.eval.metrics import Metric
from probgen.eval.modes import (
    COVERAGE_FRACTION,
    HQ_RADIUS,
    mode_metrics,
    mode_statistics,
    off_mode_probability,
)

EPS2 = math.exp(-4.5)  # P(chi^2_2 > 9): a true 2-D sample beyond 3 sigma of its mode


def _binary_kl(p, q):
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def _grid_means():
    g = torch.arange(-4.0, 5.0, 2.0)
    return torch.cartesian_prod(g, g)  # (25, 2)


def test_exact_samples_cover_every_mode_with_the_expected_quality():
    means, sigma = _grid_means(), 0.05
    gen = torch.Generator().manual_seed(0)
    k = torch.randint(25, (20000,), generator=gen)
    x = means[k] + sigma * torch.randn(20000, 2, generator=gen)
    s = mode_statistics(x, means, sigma)
    assert s["modes_covered"] == 25
    # in 2-D, P(|x - mu| <= 3 sigma) = 1 - exp(-9 / 2)
    assert s["high_quality_fraction"] == pytest.approx(1 - math.exp(-4.5), abs=0.003)
    # reverse KL of a multinomial histogram: about (bins - 1) / (2n) for large n
    assert s["reverse_kl"] < 0.005
    assert s["reverse_kl_nearest"] < 0.005
    assert s["off_mode_probability"] == pytest.approx(EPS2, rel=1e-12)


def test_collapse_onto_one_mode_and_onto_half_of_them():
    means, sigma = _grid_means(), 0.05
    one = means[7].expand(1000, 2).clone()
    s = mode_statistics(one, means, sigma)
    assert s["modes_covered"] == 1
    assert s["high_quality_fraction"] == 1.0
    assert s["reverse_kl_nearest"] == pytest.approx(math.log(25), rel=1e-12)
    # with the off-mode bin the truth puts (1 - eps) / 25 on each mode
    assert s["reverse_kl"] == pytest.approx(math.log(25 / (1 - EPS2)), rel=1e-12)
    two = torch.cat([means[:2].repeat(500, 1)])  # modes 0 and 1, equally
    s2 = mode_statistics(two, means, sigma)
    assert s2["reverse_kl_nearest"] == pytest.approx(math.log(25 / 2), rel=1e-12)
    assert s2["reverse_kl"] == pytest.approx(math.log(25 / 2 / (1 - EPS2)), rel=1e-12)


def test_far_samples_are_low_quality_and_binned_off_the_modes():
    means = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    x = torch.tensor([[0.0, 0.5], [10.0, 0.5]]).repeat(50, 1)  # 10 sigma away, evenly split
    s = mode_statistics(x, means, 0.05)
    assert s["high_quality_fraction"] == 0.0
    assert s["modes_covered"] == 0
    # PacGAN's nearest-mode histogram cannot see that they are far: a perfect score
    assert s["reverse_kl_nearest"] == pytest.approx(0.0, abs=1e-12)
    # with the off-mode bin every sample sits in a bin of true mass eps: KL = log(1 / eps)
    assert s["off_mode"] == 100
    assert s["reverse_kl"] == pytest.approx(4.5, rel=1e-12)


def test_off_mode_probability_is_the_chi_square_tail():
    assert off_mode_probability(2) == pytest.approx(EPS2, rel=1e-12)
    assert off_mode_probability(1) == pytest.approx(math.erfc(3 / math.sqrt(2)), rel=1e-12)
    # and it is what true samples show, in 3-D too (Monte Carlo, 200k draws)
    z = torch.randn(200_000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert float((z.norm(dim=1) > 3).double().mean()) == pytest.approx(off_mode_probability(3), abs=0.0006)


def test_a_model_with_fewer_modes_never_ranks_above_the_truth_by_spreading_between_them():
    """The failure the off-mode bin removes: on ring8, samples spread between the modes (a
    blurred ring: 0 modes covered) got a lower nearest-mode "reverse KL" than a mixture's
    exact samples covering all 8."""
    from probgen.data import load_dataset

    data = load_dataset("ring8")
    means, sigma = data.density.means, data.density.sigma
    gen = torch.Generator().manual_seed(3)
    truth = data.density.sample(2500, generator=gen)
    # a ring of radius 1 with samples at every angle, 0.1 (10 sigma) thick
    angle = torch.rand(2500, generator=gen) * 2 * math.pi
    radius = 1 + 0.1 * torch.randn(2500, generator=gen)
    blur = torch.stack([radius * angle.cos(), radius * angle.sin()], 1)
    s_true, s_blur = mode_statistics(truth, means, sigma), mode_statistics(blur, means, sigma)
    assert s_true["modes_covered"] == 8 and s_blur["modes_covered"] == 0
    assert s_blur["reverse_kl_nearest"] < 0.01  # the misleading number, kept for comparison
    assert s_blur["reverse_kl"] > 3.0 > 0.01 > s_true["reverse_kl"]
    # off-mode floor: the binary KL of the on/off split
    f = s_blur["off_mode"] / 2500
    assert s_blur["reverse_kl"] >= _binary_kl(f, EPS2) - 1e-12
    # missing-mode floor: drop one mode of the truth's samples (fewer than a fifth of its
    # expected count left) -> at least kl(0.2 W || W (1 - eps)) with W = 1/8
    nearest = torch.cdist(truth.double(), means.double()).argmin(1)
    dropped = torch.cat([truth[nearest != 0], truth[nearest == 0][:10]])
    s_drop = mode_statistics(dropped, means, sigma)
    assert s_drop["modes_covered"] == 7
    assert s_drop["reverse_kl"] >= _binary_kl(0.2 / 8, (1 - EPS2) / 8) > 0.06
    assert s_drop["reverse_kl"] > s_true["reverse_kl"]


def test_reverse_kl_differs_from_pacgans_by_a_constant_when_every_sample_is_on_a_mode():
    means = _grid_means()
    gen = torch.Generator().manual_seed(1)
    k = torch.randint(25, (3000,), generator=gen)
    x = means[k] + 0.05 * torch.randn(3000, 2, generator=gen).clamp(-2, 2)  # every sample within 3 sigma
    s = mode_statistics(x, means, 0.05)
    assert s["off_mode"] == 0
    assert s["reverse_kl"] - s["reverse_kl_nearest"] == pytest.approx(-math.log(1 - EPS2), rel=1e-9)


def test_coverage_threshold_is_a_fifth_of_the_expected_count():
    means, sigma = torch.tensor([[0.0], [5.0]]), 0.1  # 1-D, two modes
    n = 100  # expected 50 per mode -> covered with >= ceil(0.2 * 50) = 10 HQ samples
    assert COVERAGE_FRACTION == 0.2 and HQ_RADIUS == 3.0
    for hq_at_second, covered in ((10, 2), (9, 1)):
        x = torch.cat([torch.zeros(n - hq_at_second, 1), torch.full((hq_at_second, 1), 5.0)])
        s = mode_statistics(x, means, sigma)
        assert s["min_count"].tolist() == [10, 10]
        assert s["modes_covered"] == covered
    # the HQ radius is inclusive: a sample exactly 3 sigma away counts
    edge = mode_statistics(torch.tensor([[0.75]]), means, 0.25)  # exact in binary
    assert edge["high_quality_fraction"] == 1.0


def test_weights_enter_the_reverse_kl():
    means = torch.tensor([[0.0], [5.0]])
    w = torch.tensor([0.25, 0.75])
    x = torch.cat([torch.zeros(50, 1), torch.full((50, 1), 5.0)])  # a 50/50 histogram
    s = mode_statistics(x, means, 0.1, w)
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert s["reverse_kl_nearest"] == pytest.approx(expected, rel=1e-12)
    eps1 = math.erfc(3 / math.sqrt(2))  # 1-D: P(|z| > 3)
    assert s["reverse_kl"] == pytest.approx(expected - math.log(1 - eps1), rel=1e-12)


def test_mode_metrics_on_a_toy_dataset_with_a_sampling_model():
    from probgen.data import load_dataset

    data = load_dataset("ring8")

    class Exact:
        def sample(self, n):
            return data.density.sample(n, generator=torch.Generator().manual_seed(1))

    out = mode_metrics(Exact(), data, n_samples=2500)
    assert set(out) == {"modes_covered", "high_quality_fraction", "reverse_kl", "reverse_kl_nearest"}
    assert all(isinstance(m, Metric) for m in out.values())
    assert out["modes_covered"].value == 8
    assert out["high_quality_fraction"].value > 0.97
    assert out["reverse_kl"].value < 0.01 and out["reverse_kl"].stderr > 0
    assert out["reverse_kl_nearest"].value < 0.01 and out["reverse_kl_nearest"].stderr > 0
    assert sum(out["reverse_kl_nearest"].extra["counts"]) == 2500
    assert sum(out["reverse_kl"].extra["hq_counts"]) + out["reverse_kl"].extra["off_mode"] == 2500


def test_errors_name_the_problem():
    means = _grid_means()
    with pytest.raises(DataError, match="samples have 3 dimensions but the mixture means have 2"):
        mode_statistics(torch.zeros(5, 3), means, 0.05)
    with pytest.raises(DataError, match="not finite"):
        mode_statistics(torch.tensor([[float("nan"), 0.0]]), means, 0.05)

    class NoMixture:
        name, density = "banana", object()

    with pytest.raises(DataError, match="need a mixture with known means and sigma"):
        mode_metrics(None, NoMixture(), n_samples=10)
