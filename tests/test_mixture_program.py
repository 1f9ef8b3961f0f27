"""The mixture as a Pyro program: its likelihood against EM's, exactly and after fitting."""

import numpy as np
import pyro
import pytest
import torch

from probgen.errors import ConfigError, DivergedError
from probgen.inference.em import COVARIANCE_TYPES, MixtureParams
from probgen.models import mixture_program as mp
from probgen.models.gmm import GaussianMixture

COV_TYPES = ["full", "tied", "diag", "spherical"]


def three_clusters(seed=0):
    """300 points in 2-D from three clusters of different shapes, float64."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.concatenate([
        rng.normal(size=(100, 2)) * 0.5 + [3.0, 0.0],
        rng.normal(size=(120, 2)) @ np.array([[1.0, 0.5], [0.0, 0.5]]) + [-2.0, 1.0],
        rng.normal(size=(80, 2)) * 0.7 + [0.0, -3.0],
    ]))


def poor_start(x, covariance_type):
    """Uniform weights, unit covariances, means near three data points: far from the optimum."""
    d = x.shape[1]
    cov = {"full": torch.eye(d, dtype=x.dtype).expand(3, d, d).clone(),
           "tied": torch.eye(d, dtype=x.dtype), "diag": torch.ones(3, d, dtype=x.dtype),
           "spherical": torch.ones(3, dtype=x.dtype)}[covariance_type]
    prec_chol = COVARIANCE_TYPES[covariance_type].precision_cholesky(cov)
    return MixtureParams(torch.full((3,), 1 / 3, dtype=x.dtype), x[[5, 150, 260]] + 0.5, cov,
                         prec_chol, covariance_type)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_program_likelihood_at_em_parameters_equals_em_score(covariance_type):
    x = three_clusters()
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(x)
    mp.set_params(gm.params_)
    assert mp.log_likelihood(x, 3, covariance_type) == pytest.approx(gm.score(x), abs=1e-10)
    back = mp.get_params(covariance_type)                       # store -> parameters, unchanged
    torch.testing.assert_close(back.covariances, gm.covariances_)
    torch.testing.assert_close(back.means, gm.means_)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_svi_fit_agrees_with_em_from_the_same_start(covariance_type):
    x = three_clusters()
    start = poor_start(x, covariance_type)
    gm = GaussianMixture(3, covariance_type=covariance_type, tol=1e-9, max_iter=1000,
                         weights_init=start.weights, means_init=start.means,
                         precisions_init=start.precisions).fit(x)
    fit = mp.fit_mixture_program(x, 3, covariance_type=covariance_type, steps=150, lr=0.1,
                                 init=start)
    assert fit.log_likelihoods[0] < gm.score(x) - 1.0            # it had work to do
    mp.set_params(fit.params)
    assert abs(mp.log_likelihood(x, 3, covariance_type) - gm.score(x)) < 1e-3
    order = torch.cdist(gm.means_, fit.params.means).argmin(1)
    torch.testing.assert_close(fit.params.means[order], gm.means_, atol=1e-2, rtol=0)


def test_default_start_is_kmeans_and_fit_improves():
    x = three_clusters(seed=1)
    fit = mp.fit_mixture_program(x, 3, steps=30, random_state=0)
    assert fit.log_likelihoods[-1] >= fit.log_likelihoods[0]
    assert isinstance(fit.params, MixtureParams) and fit.params.covariance_type == "full"


def test_model_trace_enumerates_the_assignment():
    x = three_clusters()
    mp.set_params(poor_start(x, "full"))
    elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
    model_trace, _ = next(elbo._get_traces(mp.mixture_model, mp.mixture_guide, (x, 3, "full"), {}))
    site = model_trace.nodes["assignment"]
    assert site["infer"].get("enumerate") == "parallel"
    assert site["value"].shape == (3, 1)                          # all K values at once


def test_errors():
    x = three_clusters()
    with pytest.raises(ConfigError, match="parameters are not set: pass init="):
        mp.log_likelihood(x, 3)
    with pytest.raises(ConfigError, match="covariance_type must be one of .* got 'ful'. Did you mean 'full'"):
        mp.fit_mixture_program(x, 3, covariance_type="ful")
    # variances so small that every point is infinitely unlikely: the loss is infinite
    bad = poor_start(x, "diag")
    bad.covariances = torch.full_like(bad.covariances, 1e-320)
    with pytest.raises(DivergedError, match="not finite at step 0"):
        mp.fit_mixture_program(x, 3, covariance_type="diag", steps=5, init=bad)
    assert torch.equal(pyro.param("locs").detach(), bad.means), "no update after a bad step"
