"""Mode coverage on toy mixtures: counts, thresholds and reverse KL against hand-computed values."""

import math

import pytest
import torch

from probgen.errors import DataError
from probgen.eval.metrics import Metric
from probgen.eval.modes import COVERAGE_FRACTION, HQ_RADIUS, mode_metrics, mode_statistics


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
    # reverse KL of a multinomial histogram: about (K - 1) / (2n) for large n
    assert s["reverse_kl"] < 0.005


def test_collapse_onto_one_mode_and_onto_half_of_them():
    means, sigma = _grid_means(), 0.05
    one = means[7].expand(1000, 2).clone()
    s = mode_statistics(one, means, sigma)
    assert s["modes_covered"] == 1
    assert s["high_quality_fraction"] == 1.0
    assert s["reverse_kl"] == pytest.approx(math.log(25), rel=1e-12)
    two = torch.cat([means[:2].repeat(500, 1)])  # modes 0 and 1, equally
    assert mode_statistics(two, means, sigma)["reverse_kl"] == pytest.approx(math.log(25 / 2), rel=1e-12)


def test_far_samples_are_low_quality_but_still_binned_for_reverse_kl():
    means = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    x = torch.tensor([[0.0, 0.5], [10.0, 0.5]]).repeat(50, 1)  # 10 sigma away, evenly split
    s = mode_statistics(x, means, 0.05)
    assert s["high_quality_fraction"] == 0.0
    assert s["modes_covered"] == 0
    assert s["reverse_kl"] == pytest.approx(0.0, abs=1e-12)


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
    assert s["reverse_kl"] == pytest.approx(expected, rel=1e-12)


def test_mode_metrics_on_a_toy_dataset_with_a_sampling_model():
    from probgen.data import load_dataset

    data = load_dataset("ring8")

    class Exact:
        def sample(self, n):
            return data.density.sample(n, generator=torch.Generator().manual_seed(1))

    out = mode_metrics(Exact(), data, n_samples=2500)
    assert set(out) == {"modes_covered", "high_quality_fraction", "reverse_kl"}
    assert all(isinstance(m, Metric) for m in out.values())
    assert out["modes_covered"].value == 8
    assert out["high_quality_fraction"].value > 0.97
    assert out["reverse_kl"].value < 0.01 and out["reverse_kl"].stderr > 0
    assert sum(out["reverse_kl"].extra["counts"]) == 2500


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
