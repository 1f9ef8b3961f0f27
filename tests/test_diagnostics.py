"""Pareto k-hat of importance weights, against known tails and against ArviZ."""

import numpy as np
import pytest
import torch

from probgen.errors import ConfigError
from probgen.eval.diagnostics import KHAT_THRESHOLD, khat_summary, pareto_khat


def _lognormal_log_weights(sigma, s=1000, n=8, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(s, n)) * sigma)


def _pareto_log_weights(shape, s=1000, n=8, seed=0):
    """Weights with survival function w^-shape: a generalized Pareto tail with k = 1 / shape."""
    u = np.random.default_rng(seed).uniform(size=(s, n))
    return torch.from_numpy(-np.log(u) / shape)  # log of u^(-1/shape)


@pytest.mark.parametrize("use_arviz", [True, False])
def test_light_tails_are_trusted_and_heavy_tails_flagged(use_arviz):
    light = pareto_khat(_lognormal_log_weights(0.3), use_arviz=use_arviz)
    heavy = pareto_khat(_pareto_log_weights(1.0, s=20_000), use_arviz=use_arviz)
    assert light.shape == (8,) and heavy.shape == (8,)
    assert torch.all(light < 0.5)
    assert torch.all(heavy > KHAT_THRESHOLD)
    summary = khat_summary(torch.cat([light, heavy]))
    assert summary["fraction_khat_above_threshold"] == 0.5


def test_own_fit_matches_arviz_psislw():
    az = pytest.importorskip("arviz")
    if not hasattr(az, "psislw"):
        pytest.skip("this ArviZ has no psislw (1.x): nothing to compare with")
    for lw in (_lognormal_log_weights(1.0, s=400, n=6, seed=1), _pareto_log_weights(1.7, s=97, n=6, seed=2)):
        ours = pareto_khat(lw, use_arviz=False)
        _, theirs = az.psislw(lw.numpy().T.copy())
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-10)


def test_dim_and_shapes_and_too_few_weights():
    lw = _lognormal_log_weights(0.5, s=200, n=3)
    torch.testing.assert_close(pareto_khat(lw), pareto_khat(lw.T, dim=1))
    assert pareto_khat(lw[:, 0]).shape == (1,)
    k = pareto_khat(lw[:20])  # 20 weights: a tail of 4, too few to fit
    assert torch.isnan(k).all()
    assert khat_summary(k)["n_khat_unknown"] == 3 and khat_summary(k)["fraction_khat_above_threshold"] is None
    with pytest.raises(ConfigError, match="log_weights contain NaN"):
        pareto_khat(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ConfigError, match=r"shape \(S, N\).*got \(2, 2, 2\)"):
        pareto_khat(torch.zeros(2, 2, 2))
