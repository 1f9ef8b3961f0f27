"""Properties that must hold for any input: the importance-weighted bound's log-mean-exp,
mixture densities against scipy, and the data transforms' contracts.

Hypothesis draws the sizes and a seed; NumPy draws the values from that seed, so every
failing case is reproducible from the numbers hypothesis prints. Oracles come from outside
probgen: NumPy's float64 arithmetic and ``scipy.stats``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.special import logsumexp

from probgen.data.base import Dataset
from probgen.data.toy import GaussianMixture as ToyMixture
from probgen.data.transforms import (
    FIXED_SEED,
    binarize_once,
    fixed_test_split,
    holdout,
    pixels_to_unit,
    split_sizes,
    stream,
    to_value_range,
)
from probgen.errors import DataError
from probgen.inference.bounds import iwae_bound
from probgen.models.gmm import GaussianMixture

FAST = settings(max_examples=25, deadline=None, derandomize=True)
seeds = st.integers(0, 2**31 - 1)


# ----------------------------------------------------------------------------- IWAE log-mean-exp
class _FixedWeights:
    """q(z|x) whose draws are given log-weights, handed out in order: with
    ``log_likelihood(x, z) = z`` and ``prior_log_prob = q.log_prob = 0`` the importance
    weights of :func:`iwae_bound` are exactly ``exp(log_w)``."""

    def __init__(self, log_w: torch.Tensor):  # (k, B)
        self.log_w, self.pos = log_w, 0

    def sample(self, shape):
        (s,) = shape
        out = self.log_w[self.pos:self.pos + s].unsqueeze(-1)  # (s, B) -> (s, B, 1)
        self.pos += s
        return out

    def log_prob(self, z):
        return torch.zeros(z.shape[:-1], dtype=z.dtype)


class _WeightModel:
    """``x`` holds example indices (N, 1), so that any blocking of the examples by
    :func:`iwae_bound` gets the log-weights of its own examples."""

    def __init__(self, log_w):
        self.log_w = log_w  # (k, N)

    def encoder_distribution(self, x):
        return _FixedWeights(self.log_w[:, x[:, 0].long()])

    def log_likelihood(self, x, z):
        return z[..., 0]

    def prior_log_prob(self, z):
        return torch.zeros(z.shape[:-1], dtype=z.dtype)


def _iwae(log_w: np.ndarray, chunk: int):
    log_w = torch.as_tensor(log_w, dtype=torch.float64)
    x = torch.arange(log_w.shape[1], dtype=torch.float64).unsqueeze(1)  # (N, 1) example ids
    return iwae_bound(_WeightModel(log_w), x, log_w.shape[0], chunk_size=chunk)


@FAST
@given(seed=seeds, k=st.integers(1, 40), n=st.integers(1, 5), chunk=st.integers(1, 50),
       scale=st.sampled_from([1e-3, 1.0, 30.0, 300.0]))
def test_iwae_is_a_log_mean_exp_between_min_and_max(seed, k, n, chunk, scale):
    log_w = np.random.default_rng(seed).normal(size=(k, n)) * scale
    rec = _iwae(log_w, chunk)
    got = rec.total.numpy()
    lo, hi = log_w.min(0), log_w.max(0)
    tol = 1e-9 * (1 + np.abs(log_w).max())
    assert np.all(got >= lo - tol) and np.all(got <= hi + tol)
    # logsumexp bounds: max <= lse <= max + log k, i.e. max - log k <= lme <= max
    assert np.all(got >= hi - math.log(k) - tol)
    np.testing.assert_allclose(got, logsumexp(log_w, axis=0) - math.log(k), rtol=1e-12, atol=tol)
    # the chunking is invisible
    np.testing.assert_allclose(_iwae(log_w, k).total.numpy(), got, rtol=1e-12, atol=tol)


@FAST
@given(seed=seeds, k=st.integers(2, 30), n=st.integers(1, 4),
       shift=st.floats(-500.0, 500.0, allow_nan=False))
def test_iwae_shifts_with_a_constant_and_its_error_does_not(seed, k, n, shift):
    log_w = np.random.default_rng(seed).normal(size=(k, n))
    a, b = _iwae(log_w, 7), _iwae(log_w + shift, 7)
    np.testing.assert_allclose(b.total.numpy(), a.total.numpy() + shift, rtol=0, atol=1e-9 * (1 + abs(shift)))
    np.testing.assert_allclose(b.mc_stderr.numpy(), a.mc_stderr.numpy(), rtol=1e-8, atol=1e-12)


@FAST
@given(seed=seeds, k=st.integers(1, 30), n=st.integers(1, 4))
def test_iwae_of_small_weights_is_the_log_of_their_mean_with_delta_method_error(seed, k, n):
    w = np.random.default_rng(seed).uniform(0.05, 3.0, size=(k, n))
    rec = _iwae(np.log(w), 4)
    np.testing.assert_allclose(rec.total.numpy(), np.log(w.mean(0)), rtol=1e-12, atol=1e-12)
    if k == 1:
        assert rec.mc_stderr is None
    else:  # standard error of log(mean w): std(w) / (sqrt(k) mean w), population std
        np.testing.assert_allclose(rec.mc_stderr.numpy(), w.std(0) / (math.sqrt(k) * w.mean(0)),
                                   rtol=1e-8, atol=1e-12)


def test_iwae_of_equal_weights_has_no_error():
    rec = _iwae(np.full((6, 3), -2.5), 4)
    np.testing.assert_allclose(rec.total.numpy(), -2.5, rtol=0, atol=1e-12)
    np.testing.assert_allclose(rec.mc_stderr.numpy(), 0.0, atol=1e-7)


# ----------------------------------------------------------------------------- mixtures vs scipy
def _random_mixture(rng, k, d, covariance_type):
    """Well-conditioned random parameters and the per-component covariances, shaped for
    ``precisions_init`` as scikit-learn does."""
    weights = rng.dirichlet(np.full(k, 2.0))
    means = rng.normal(scale=3.0, size=(k, d))
    if covariance_type == "full":
        a = rng.normal(size=(k, d, d))
        covs = a @ a.transpose(0, 2, 1) / d + 0.5 * np.eye(d)
        prec = np.linalg.inv(covs)
    elif covariance_type == "tied":
        a = rng.normal(size=(d, d))
        cov = a @ a.T / d + 0.5 * np.eye(d)
        covs, prec = np.broadcast_to(cov, (k, d, d)), np.linalg.inv(cov)
    elif covariance_type == "diag":
        var = rng.uniform(0.3, 3.0, size=(k, d))
        covs, prec = np.stack([np.diag(v) for v in var]), 1.0 / var
    else:
        var = rng.uniform(0.3, 3.0, size=k)
        covs, prec = np.stack([v * np.eye(d) for v in var]), 1.0 / var
    return weights, means, covs, prec


@FAST
@given(seed=seeds, k=st.integers(1, 4), d=st.integers(1, 4),
       covariance_type=st.sampled_from(["full", "tied", "diag", "spherical"]))
def test_gmm_score_samples_matches_scipy(seed, k, d, covariance_type):
    rng = np.random.default_rng(seed)
    weights, means, covs, prec = _random_mixture(rng, k, d, covariance_type)
    x = rng.normal(scale=4.0, size=(30, d))
    gm = GaussianMixture(k, covariance_type=covariance_type, max_iter=0, weights_init=weights,
                         means_init=means, precisions_init=prec).fit(x)  # max_iter=0: keep them
    comp = np.stack([stats.multivariate_normal(means[j], covs[j]).logpdf(x).reshape(-1)
                     for j in range(k)], axis=1)  # (N, K)
    expected = logsumexp(comp + np.log(weights), axis=1)
    got = gm.score_samples(x)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    assert gm.score(x) == pytest.approx(expected.mean(), rel=1e-9, abs=1e-9)
    # responsibilities are the normalised weighted component densities
    resp = np.exp(comp + np.log(weights) - expected[:, None])
    np.testing.assert_allclose(gm.predict_proba(x), resp, rtol=1e-7, atol=1e-10)


@FAST
@given(seed=seeds, k=st.integers(1, 5), d=st.integers(1, 3),
       sigma=st.floats(0.05, 3.0), equal=st.booleans())
def test_toy_mixture_density_matches_scipy(seed, k, d, sigma, equal):
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=2.0, size=(k, d))
    weights = None if equal else rng.uniform(0.1, 1.0, size=k)
    density = ToyMixture(means, sigma, weights)
    w = np.full(k, 1.0 / k) if equal else weights / weights.sum()
    x = means[rng.integers(0, k, size=40)] + rng.normal(scale=2 * sigma, size=(40, d))
    comp = np.stack([stats.multivariate_normal(means[j], sigma**2 * np.eye(d)).logpdf(x).reshape(-1)
                     for j in range(k)], axis=1)
    expected = logsumexp(comp + np.log(w), axis=1)
    got = density.log_prob(torch.as_tensor(x, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    assert density.weights.sum().item() == pytest.approx(1.0, abs=1e-6)


# ----------------------------------------------------------------------------- data transforms
image_shapes = st.sampled_from([(5,), (1, 3, 4), (3, 2, 2), (2, 7)])


@FAST
@given(seed=seeds, n=st.integers(1, 20), shape=image_shapes)
def test_pixels_to_unit_maps_0_255_onto_0_1_and_back(seed, n, shape):
    a = np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)
    a.setflags(write=False)  # arrays read from file bytes are read-only
    x = pixels_to_unit(a)
    assert x.dtype == torch.float32 and tuple(x.shape) == a.shape
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert np.array_equal((x * 255).round().to(torch.uint8).numpy(), a)
    np.testing.assert_array_equal(pixels_to_unit(np.array([0, 255], np.uint8)).numpy(), [0.0, 1.0])


@FAST
@given(seed=seeds, n=st.integers(1, 20), shape=image_shapes,
       value_range=st.sampled_from([(0, 1), (-1, 1), (0.0, 1.0), (-1.0, 1.0)]))
def test_value_range_is_an_affine_map_with_an_inverse(seed, n, shape, value_range):
    x = torch.from_numpy(np.random.default_rng(seed).random((n, *shape), dtype=np.float32))
    y = to_value_range(x, value_range)
    lo, hi = (float(v) for v in value_range)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= lo and float(y.max()) <= hi
    torch.testing.assert_close((y - lo) / (hi - lo), x, rtol=0, atol=2e-7)  # the inverse
    ends = to_value_range(torch.tensor([0.0, 1.0]), value_range)
    assert ends.tolist() == [lo, hi]  # 0/1 pixels land exactly on the ends
    assert torch.equal(x, x.clone()), "to_value_range must not change its input"


@pytest.mark.parametrize("value_range", [(0, 2), (-1, 0), (-0.5, 0.5)])
def test_other_value_ranges_are_refused(value_range):
    with pytest.raises(DataError, match=r"value_range must be \(0, 1\) or \(-1, 1\)"):
        to_value_range(torch.rand(3), value_range)


@FAST
@given(seed=seeds, n=st.integers(1, 30), shape=image_shapes)
def test_binarisation_gives_0_1_keeps_shape_and_repeats_with_the_seed(seed, n, shape):
    x = torch.from_numpy(np.random.default_rng(seed).random((n, *shape), dtype=np.float32))
    x[0].view(-1)[0] = 0.0
    if x[0].numel() > 1:
        x[0].view(-1)[1] = 1.0
    b = binarize_once(x, seed, "binarize-train")
    assert b.shape == x.shape and b.dtype == x.dtype
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    assert b[0].view(-1)[0] == 0.0 and (x[0].numel() == 1 or b[0].view(-1)[1] == 1.0)
    assert torch.equal(b, binarize_once(x, seed, "binarize-train"))


def test_binarisation_is_unbiased():
    p = torch.linspace(0.05, 0.95, 19).repeat(4000, 1)  # (4000, 19)
    freq = binarize_once(p, 7, "binarize-train").mean(0)
    se = (p[0] * (1 - p[0]) / 4000).sqrt()
    assert ((freq - p[0]).abs() < 5 * se).all()


@FAST
@given(seed=seeds, n=st.integers(1, 50), batch=st.integers(1, 60), shuffle=st.booleans(),
       drop_last=st.booleans())
def test_dynamic_batches_are_0_1_and_cover_the_split_once(seed, n, batch, shuffle, drop_last):
    if drop_last and n < batch:
        batch = n  # no full batch at all is an error (test_bad_input)
    grey = torch.from_numpy(np.random.default_rng(seed).random((n, 1, 2, 2), dtype=np.float32))
    ids = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2)
    ds = Dataset("t", train=grey, val=grey[:1], test=grey[:1], shape=(1, 2, 2), kind="image",
                 binarize="dynamic")
    got = list(ds.batches("train", batch, shuffle=shuffle, generator=torch.Generator().manual_seed(seed),
                          drop_last=drop_last))
    sizes = [b.shape[0] for b in got]
    assert all(s == batch for s in sizes[:-1]) and all(b.shape[1:] == (1, 2, 2) for b in got)
    assert sum(sizes) == (n - n % batch if drop_last else n)
    for b in got:
        assert set(b.unique().tolist()) <= {0.0, 1.0}
    # the same batches of a record whose values are the example ids: each example at most once,
    # every example when no batch is dropped
    plain = Dataset("t", train=ids.contiguous(), val=ids[:1], test=ids[:1], shape=(1, 2, 2))
    order = torch.cat(list(plain.batches("train", batch, shuffle=shuffle,
                                         generator=torch.Generator().manual_seed(seed),
                                         drop_last=drop_last)))[:, 0, 0, 0].long()
    assert len(set(order.tolist())) == order.numel()
    if not drop_last:
        assert sorted(order.tolist()) == list(range(n))


@FAST
@given(n=st.integers(3, 500), seed=seeds)
def test_splits_partition_the_examples(n, seed):
    n_train, n_val, n_test = split_sizes(n)
    assert n_train + n_val + n_test == n and min(n_train, n_val, n_test) >= 1
    train, val, test = fixed_test_split(n, seed=seed)
    assert (train.numel(), val.numel(), test.numel()) == (n_train, n_val, n_test)
    assert sorted(torch.cat([train, val, test]).tolist()) == list(range(n))
    # the test split does not depend on the seed
    assert torch.equal(test, fixed_test_split(n, seed=seed + 1)[2])
    keep, out = holdout(n, n_val, seed, "val-split")
    assert out.numel() == n_val and sorted(torch.cat([keep, out]).tolist()) == list(range(n))


def test_streams_differ_by_purpose_and_repeat_by_seed():
    draws = {p: torch.rand(8, generator=stream(5, p)) for p in ("val-split", "binarize-train", "toy-train")}
    assert len({tuple(v.tolist()) for v in draws.values()}) == 3
    assert torch.equal(draws["val-split"], torch.rand(8, generator=stream(5, "val-split")))
    assert not torch.equal(torch.rand(8, generator=stream(FIXED_SEED, "val-split")), draws["val-split"])
