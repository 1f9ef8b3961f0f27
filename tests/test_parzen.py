"""The Parzen-window estimate against scikit-learn's KernelDensity and a closed form."""

import numpy as np
import pytest
import torch
from scipy import special, stats
from sklearn.neighbors import KernelDensity

from probgen.errors import ConfigError
from probgen.inference.parzen import PARZEN_WARNING, parzen, parzen_log_prob, select_bandwidth

MEAN = np.array([1.0, -2.0])
COV = np.array([[1.0, 0.4], [0.4, 0.5]])




def _gaussian(n, seed):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.multivariate_normal(MEAN, COV, size=n))


def test_matches_sklearn_kernel_density_in_small_blocks():
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(57, 3))
    x = rng.normal(size=(23, 3)) * 1.5
    for h in (0.3, 1.0):
        ref = KernelDensity(kernel="gaussian", bandwidth=h).fit(samples).score_samples(x)
        lp, se = parzen_log_prob(torch.from_numpy(x), torch.from_numpy(samples), h,
                                 batch_size=7, sample_batch_size=13)
        np.testing.assert_allclose(lp.numpy(), ref, rtol=1e-10, atol=1e-10)
        assert torch.all(se > 0)
    # image-shaped inputs are flattened; float32 inputs are computed in float64
    lp_img, _ = parzen_log_prob(torch.from_numpy(x).float().reshape(23, 1, 3, 1),
                                torch.from_numpy(samples).float().reshape(57, 1, 3, 1), 1.0)
    np.testing.assert_allclose(lp_img.numpy(), ref, rtol=1e-5)


def test_standard_error_is_the_delta_method_over_kernel_values():
    rng = np.random.default_rng(1)
    samples, x, h = rng.normal(size=(40, 2)), rng.normal(size=(5, 2)), 0.7
    _, se = parzen_log_prob(torch.from_numpy(x), torch.from_numpy(samples), h)
    k = np.exp(-0.5 * ((x[:, None, :] - samples[None]) ** 2).sum(-1) / h**2)  # (5, 40)
    np.testing.assert_allclose(se.numpy(), k.std(1, ddof=1) / (np.sqrt(40) * k.mean(1)), rtol=1e-8)


def test_converges_to_the_smoothed_and_the_true_density_with_many_samples():
    x_val, x = _gaussian(200, 1), _gaussian(200, 2)
    true = stats.multivariate_normal(MEAN, COV).logpdf(x.numpy())
    # E[kernel density] = N(mean, cov + h^2 I) exactly: the estimate converges to it
    samples = _gaussian(20_000, 0)
    h = 0.3
    lp, se = parzen_log_prob(x, samples, h)
    smoothed = stats.multivariate_normal(MEAN, COV + h**2 * np.eye(2)).logpdf(x.numpy())
    assert np.all(np.abs(lp.numpy() - smoothed) < 5 * se.numpy() + 0.01)
    # with the bandwidth chosen on validation data it approaches the true log density
    grid = (0.05, 0.07, 0.1, 0.14, 0.2, 0.28, 0.4, 0.56, 0.8)
    errors = {}
    for m in (300, 20_000):
        res = parzen(samples[:m], x, x_val, bandwidths=grid)
        errors[m] = abs(float(res.log_px.mean()) - true.mean())
    assert errors[20_000] < 0.06
    assert errors[20_000] < 0.5 * errors[300]
    assert res.bandwidth < 0.3 and res.n_samples == 20_000
    assert res.warning == PARZEN_WARNING


def test_bandwidth_selection_picks_the_best_of_the_grid_on_validation_data():
    samples, x_val = _gaussian(2000, 3), _gaussian(200, 4)
    grid = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
    h, got_grid, scores = select_bandwidth(samples, x_val, grid)
    # brute force in log space (scikit-learn sums kernels in linear space: it underflows at 0.02)
    d2 = ((x_val.numpy()[:, None, :] - samples.numpy()[None]) ** 2).sum(-1)  # (200, 2000)
    ref = [(special.logsumexp(-0.5 * d2 / b**2, axis=1) - np.log(2000) - np.log(2 * np.pi * b**2)).mean()
           for b in grid]
    np.testing.assert_allclose(scores, ref, rtol=1e-10)
    assert h == grid[int(np.argmax(ref))] and got_grid == grid
    kde = [KernelDensity(bandwidth=b).fit(samples.numpy()).score_samples(x_val.numpy()).mean() for b in grid]
    assert h == grid[int(np.argmax(kde))]
    assert 0 < grid.index(h) < len(grid) - 1
    with pytest.warns(UserWarning, match="at the upper end of the grid"):
        h, _, _ = select_bandwidth(samples, x_val, (0.001, 0.005))
    assert h == 0.005


def test_warning_names_theis_et_al_and_k_means():
    assert "Theis" in PARZEN_WARNING and "k-means" in PARZEN_WARNING


def test_errors_name_the_argument():
    x = torch.zeros(4, 2)
    with pytest.raises(ConfigError, match="bandwidth must be a positive finite number; got 0"):
        parzen_log_prob(x, x, 0)
    with pytest.raises(ConfigError, match=r"same per-example shape; got \(4, 2\) and \(4, 3\)"):
        parzen_log_prob(x, torch.zeros(4, 3), 1.0)
    with pytest.raises(ConfigError, match="needs x_val .* or an explicit bandwidth"):
        parzen(x, x)
    with pytest.raises(ConfigError, match="samples is empty"):
        parzen_log_prob(x, torch.zeros(0, 2), 1.0)
