"""Figures of models trained on vectors that are neither 2-D points nor flat images: the
GAN's figures on 1-, 4- and 13-dimensional data (a 13-D array once stopped `compare` after
training, in the latent-interpolation figure, which took every vector for a square image)."""

import numpy as np
import pytest
import torch

import probgen
from probgen import plots


def test_flat_image_side():
    assert plots.flat_image_side(784) == 28
    assert plots.flat_image_side(64) == 8
    for dim in (1, 2, 4, 9, 13, 16, 49, 785):  # features, not images
        assert plots.flat_image_side(dim) == 0


def test_image_grid_refuses_vectors_that_are_not_square_images(tmp_path):
    with pytest.raises(ValueError, match="13 values per example are not a square image"):
        plots.image_grid(torch.rand(4, 13), tmp_path / "grid.png")


@pytest.mark.parametrize("dim", [1, 4, 13])
def test_gan_figures_on_vectors(tmp_path, dim):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, dim)) * np.linspace(1, 50, dim) + np.linspace(0, 100, dim)
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    result = probgen.train("gan", str(tmp_path / "x.npy"), tmp_path / "run", steps=30,
                           batch_size=50, device="cpu", progress=False)
    names = {p.name for p in result.figures}
    assert {"samples.png", "samples_over_training.png", "latent_interpolation.png"} <= names
    for p in result.figures:
        assert p.stat().st_size > 1000


@pytest.mark.parametrize("dim", [1, 13])
def test_flow_draws_samples_on_vectors_that_are_not_points_in_the_plane(tmp_path, dim):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", (rng.normal(size=(300, dim)) * 5 + 2).astype(np.float32))
    result = probgen.train("flow", str(tmp_path / "x.npy"), tmp_path / "run", epochs=1,
                           device="cpu", progress=False)
    assert "samples.png" in {p.name for p in result.figures}


def test_a_histogram_of_values_on_a_grid_has_one_bar_per_value():
    """Counts (bin width 1): edges at the values, each bar one value; 80 bins otherwise."""
    histogram_bins = plots.histogram_bins
    real, drawn = torch.tensor([3.0, 5.0, 9.0]), torch.tensor([2.0, 5.0])
    assert histogram_bins(real, drawn, 1.0) == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert histogram_bins(real * 0.1, drawn * 0.1, 0.1) == pytest.approx(
        [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert histogram_bins(real, drawn, None) == 80
    assert histogram_bins(real, drawn * 1000, 1.0) == 80                  # 5,000 bars: too many
    assert histogram_bins(real, torch.tensor([float("nan")]), 1.0) == 80  # a diverged sampler
