"""k-means++ and Lloyd's iterations against scikit-learn, their invariants and errors."""

import numpy as np
import pytest
import torch

from probgen.errors import ConfigError, DataError, NotFittedError
from probgen.inference.kmeans import KMeans, kmeans_plusplus, lloyd, squared_distances


def blobs(n_per=100, k=4, d=3, spread=0.5, seed=0):
    """``k`` Gaussian blobs far apart, (k * n_per, d) float64, and their labels."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=gen, dtype=torch.float64) * 10
    labels = torch.arange(k).repeat_interleave(n_per)
    x = centres[labels] + spread * torch.randn(k * n_per, d, generator=gen, dtype=torch.float64)
    return x, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lloyd_matches_sklearn_from_the_same_start(seed):
    from sklearn.cluster import KMeans as SKKMeans

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(500, 4, generator=gen, dtype=torch.float64)   # no cluster structure
    start = x[torch.randperm(500, generator=gen)[:6]]
    ours = KMeans(6, init=start).fit(x)
    theirs = SKKMeans(6, init=start.numpy(), n_init=1, algorithm="lloyd").fit(x.numpy())
    assert ours.inertia_ == pytest.approx(theirs.inertia_, rel=1e-10)
    np.testing.assert_allclose(ours.cluster_centers_.numpy(), theirs.cluster_centers_, atol=1e-10)
    assert (ours.labels_.numpy() == theirs.labels_).all()


def test_kmeans_plus_plus_picks_distinct_points_even_among_duplicates():
    distinct = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 5.0], [3.0, 3.0], [9.0, 1.0]],
                            dtype=torch.float64)
    x = distinct.repeat(100, 1)                                   # 500 rows, 5 distinct values
    for seed in range(5):
        gen = torch.Generator().manual_seed(seed)
        centres, idx = kmeans_plusplus(x, 5, generator=gen)
        assert len(set(idx.tolist())) == 5
        assert len({tuple(c.tolist()) for c in centres}) == 5, "a duplicate point was chosen"
        torch.testing.assert_close(centres, x[idx])
        # more centres than distinct values: the rows are still distinct
        _, idx7 = kmeans_plusplus(x, 7, generator=gen)
        assert len(set(idx7.tolist())) == 7


def test_kmeans_plus_plus_seeds_one_centre_per_separated_blob():
    x, labels = blobs(k=8)
    for seed in range(5):
        _, idx = kmeans_plusplus(x, 8, generator=torch.Generator().manual_seed(seed))
        assert sorted(labels[idx].tolist()) == list(range(8))
    with pytest.raises(DataError, match="1 <= n_clusters <= n_samples; got n_clusters=9"):
        kmeans_plusplus(x[:8], 9)


def test_estimator_invariants():
    x, labels = blobs()
    km = KMeans(4, n_init=3, random_state=0).fit(x)
    assert (km.predict(x) == km.labels_).all()
    d = km.transform(x)
    torch.testing.assert_close(d, torch.cdist(x, km.cluster_centers_), atol=1e-9, rtol=0)
    assert (d.argmin(1) == km.labels_).all()
    assert km.score(x) == pytest.approx(-km.inertia_, rel=1e-12)
    inertia = ((x - km.cluster_centers_[km.labels_]) ** 2).sum().item()
    assert km.inertia_ == pytest.approx(inertia, rel=1e-12)
    # well-separated blobs are recovered exactly (up to renaming)
    for k in range(4):
        assert km.labels_[labels == k].unique().numel() == 1
    again = KMeans(4, n_init=3, random_state=0).fit(x)
    assert torch.equal(again.labels_, km.labels_)


def test_more_restarts_never_increase_inertia():
    x = torch.randn(400, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    one = KMeans(7, random_state=3).fit(x)
    many = KMeans(7, n_init=5, random_state=3).fit(x)
    assert many.inertia_ <= one.inertia_ + 1e-9


def test_empty_cluster_is_relocated():
    x, _ = blobs(k=3)
    start = torch.cat([x[[0, 150]], torch.full((1, 3), 1e4, dtype=torch.float64)])
    res = lloyd(x, start)
    assert torch.isfinite(res.centers).all()
    assert torch.bincount(res.labels, minlength=3).min() > 0


def test_squared_distances_are_exact_and_non_negative():
    x = torch.randn(50, 5, dtype=torch.float64)
    c = torch.cat([x[:3], torch.randn(2, 5, dtype=torch.float64)])
    d = squared_distances(x, c)
    torch.testing.assert_close(d, torch.cdist(x, c) ** 2, atol=1e-10, rtol=0)
    assert (d >= 0).all() and (d[[0, 1, 2], [0, 1, 2]] < 1e-12).all()


def test_errors():
    x, _ = blobs()
    with pytest.raises(NotFittedError, match="not fitted yet: call fit"):
        KMeans(3).predict(x)
    with pytest.raises(ConfigError, match=r"The 'n_clusters' parameter of KMeans must be an int "
                                          r"in the range \[1, inf\)\. Got 0 instead"):
        KMeans(0)
    with pytest.raises(ConfigError, match=r"'init' .* Got 'kmeans\+' instead\. Did you mean "
                                          r"'k-means\+\+'"):
        KMeans(3, init="kmeans+")
    with pytest.raises(ConfigError, match=r"shape \(n_clusters, n_features\) = \(3, 3\); got \(2, 3\)"):
        KMeans(3, init=x[:2]).fit(x)
    with pytest.raises(DataError, match="n_samples >= n_clusters; got n_clusters=5 for n_samples=4"):
        KMeans(5).fit(x[:4])
    km = KMeans(3, random_state=0).fit(x)
    with pytest.raises(DataError, match="X has 2 features, but KMeans was fitted with 3"):
        km.predict(x[:, :2])
