"""Paired differences of per-example scores: scipy's t-tests as oracles, and the figure."""

import math
import types

import numpy as np
import pytest
import torch
from scipy import stats

from probgen.errors import DataError
from probgen.eval.paired import paired_difference, plot_per_example


def test_matches_scipy_paired_and_welch_t_tests():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(50, generator=g, dtype=torch.float64)
    a = z + 0.3 * torch.randn(50, generator=g, dtype=torch.float64) + 0.2
    b = z + 0.3 * torch.randn(50, generator=g, dtype=torch.float64)
    m = paired_difference(a, b)
    # t = mean / SE for both tests, so SE = mean difference / t.
    t_rel = stats.ttest_rel(a.numpy(), b.numpy()).statistic
    t_welch = stats.ttest_ind(a.numpy(), b.numpy(), equal_var=False).statistic
    diff = float((a - b).mean())
    assert m.value == pytest.approx(diff)
    assert m.stderr == pytest.approx(diff / t_rel, rel=1e-10)
    assert m.extra["unpaired_stderr"] == pytest.approx(diff / t_welch, rel=1e-10)
    assert m.extra["correlation"] == pytest.approx(np.corrcoef(a.numpy(), b.numpy())[0, 1])


def test_closed_form_small_case():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    b = torch.tensor([0.0, 2.0, 2.0, 5.0, 3.0])
    # d = (1, 0, 1, -1, 2): mean 0.6, sample variance 5.2 / 4 = 1.3, SE = sqrt(1.3 / 5).
    m = paired_difference(a, b)
    assert m.value == pytest.approx(0.6)
    assert m.stderr == pytest.approx(math.sqrt(0.26))
    assert m.unit == "nats" and m.extra["n"] == 5


def test_paired_se_smaller_than_unpaired_when_correlated():
    g = torch.Generator().manual_seed(0)
    shared = 5.0 * torch.randn(400, generator=g)  # the per-point difficulty both models see
    a = shared + torch.randn(400, generator=g)
    b = shared + torch.randn(400, generator=g) - 0.5
    m = paired_difference(a, b)
    assert m.extra["correlation"] > 0.9
    assert m.stderr < 0.3 * m.extra["unpaired_stderr"]
    # var(a - b) = 1 + 1 for independent unit noises: SE close to sqrt(2 / 400).
    assert m.stderr == pytest.approx(math.sqrt(2 / 400), rel=0.15)


def test_constant_shift_has_zero_paired_se():
    a = torch.randn(30, dtype=torch.float64)
    m = paired_difference(a + 2.5, a)
    assert m.value == pytest.approx(2.5)
    assert m.stderr == pytest.approx(0.0, abs=1e-12)
    assert m.extra["unpaired_stderr"] > 0.1


def test_non_finite_values_are_reported_not_averaged():
    a = torch.tensor([0.0, float("-inf"), 1.0])
    m = paired_difference(a, torch.zeros(3))
    assert math.isnan(m.value) and "1 of 3 pairs" in m.reason


@pytest.mark.parametrize(
    "a, b, match",
    [
        (torch.zeros(4), torch.zeros(5), "same points: got 4 and 5"),
        (torch.zeros(4, 2), torch.zeros(4, 2), r"shape \(N,\); got shape \(4, 2\)"),
        (torch.zeros(1), torch.zeros(1), "at least 2 paired values; got 1"),
    ],
)
def test_errors_name_the_problem(a, b, match):
    with pytest.raises(DataError, match=match):
        paired_difference(a, b)


def test_plot_per_example_writes_png(tmp_path):
    g = torch.Generator().manual_seed(0)
    vals = {"gmm": torch.randn(200, generator=g) - 1.0, "vae": torch.randn(200, generator=g)}
    path = plot_per_example(vals, tmp_path / "sub" / "per_example.png")
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_per_example_refuses_different_sizes(tmp_path):
    with pytest.raises(DataError, match="same points"):
        plot_per_example({"a": torch.zeros(3), "b": torch.zeros(4)}, tmp_path / "x.png")


def test_plot_per_example_arviz_1_path(tmp_path):
    """ArviZ 1.x takes a DataTree built by from_dict({"posterior": ...}) and returns a
    collection that saves itself; a stand-in module with those signatures checks the call."""
    seen = {}

    def from_dict(data, *, name=None):
        seen["groups"] = data
        return "tree"

    class Collection:
        def savefig(self, path):
            from pathlib import Path

            Path(path).write_bytes(b"\x89PNG\r\n\x1a\n")

    def plot_dist(dt, var_names=None, backend=None):
        seen["dt"], seen["backend"] = dt, backend
        return Collection()

    fake = types.SimpleNamespace(from_dict=from_dict, plot_dist=plot_dist)
    path = plot_per_example({"a": torch.zeros(5), "b": torch.ones(5)}, tmp_path / "p.png", az=fake)
    assert path.exists() and seen["dt"] == "tree" and seen["backend"] == "matplotlib"
    post = seen["groups"]["posterior"]
    assert set(post) == {"a", "b", "a - b"}
    assert post["a - b"].shape == (1, 5) and np.allclose(post["a - b"], -1.0)
