"""Sample metrics in the space of a feature network (see :mod:`probgen.eval.features`).

* Frechet distance between Gaussians fitted to the two feature sets (Heusel et al., "GANs
  trained by a two time-scale update rule converge to a local Nash equilibrium", 2017):
  ``||mu_r - mu_g||^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2))``. The trace of the matrix square
  root is computed as the sum of the square roots of the eigenvalues of the symmetric matrix
  ``S_r^(1/2) S_g S_r^(1/2)`` (same eigenvalues as ``S_r S_g``), in float64.
* Kernel distance: the unbiased MMD^2 with the cubic polynomial kernel
  ``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets (Binkowski et al., "Demystifying
  MMD GANs", 2018 -- KID); its ``stderr`` is the standard deviation over the subsets, as KID
  reports it.
* Improved precision and recall (Kynkaanniemi et al., "Improved precision and recall metric
  for assessing generative models", 2019), k = 3: each point's manifold ball has the radius of
  its k-th nearest neighbour in its own set. **precision** = fraction of GENERATED samples
  inside the union of REAL balls; **recall** = fraction of REAL samples inside the union of
  generated balls.
* Density and coverage (Naeem et al., "Reliable fidelity and diversity metrics for generative
  models", 2020), k = 5, on real balls only: density = (1 / kM) sum_j #{real balls holding
  generated sample j}; coverage = fraction of real balls holding at least one generated sample.
* Class histogram: the feature network's classifier applied to the samples.

Every function takes features (N, d) already computed; :func:`image_sample_metrics` ties
them to a model and a data set.

For vector data (toy sets, a user's arrays) :func:`vector_sample_metrics` compares samples
with test points in the data space itself: energy distance, Gaussian-kernel MMD (each with a
standard error and a permutation reference from the pooled points) and the true log-density
of the samples where the data set has one (see the comment above :func:`median_bandwidth`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from probgen.errors import DataError
from probgen.eval.metrics import Metric, unavailable

__all__ = [
    "frechet_distance",
    "frechet_distance_stderr",
    "gaussian_frechet_distance",
    "kernel_distance",
    "knn_radii",
    "precision_recall",
    "density_coverage",
    "class_histogram",
    "image_sample_metrics",
    "standardized_manifold_metrics",
    "energy_distance",
    "mmd2",
    "median_bandwidth",
    "two_sample_statistic",
    "vector_sample_metrics",
    "PR_K",
    "DC_K",
]

PR_K = 3  # Kynkaanniemi et al.
DC_K = 5  # Naeem et al.


def _as64(f: torch.Tensor, what: str) -> torch.Tensor:
    f = torch.as_tensor(f).detach().double().cpu()
    if f.dim() != 2:
        raise DataError(f"{what} must be a (N, d) matrix of features; got shape {tuple(f.shape)}.")
    if not torch.isfinite(f).all():
        raise DataError(f"{what} holds non-finite values: the samples diverged (NaN or inf).")
    return f


def gaussian_frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Frechet (2-Wasserstein squared) distance between N(mu1, cov1) and N(mu2, cov2)."""
    mu1, mu2 = torch.as_tensor(mu1).double(), torch.as_tensor(mu2).double()
    c1, c2 = torch.as_tensor(cov1).double(), torch.as_tensor(cov2).double()
    c1, c2 = 0.5 * (c1 + c1.T), 0.5 * (c2 + c2.T)
    w, v = torch.linalg.eigh(c1)
    s1 = (v * w.clamp_min(0).sqrt()) @ v.T  # S1^(1/2)
    m = s1 @ c2 @ s1
    tr_sqrt = torch.linalg.eigvalsh(0.5 * (m + m.T)).clamp_min(0).sqrt().sum()
    d = (mu1 - mu2).pow(2).sum() + torch.trace(c1) + torch.trace(c2) - 2 * tr_sqrt
    return float(d.clamp_min(0))


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to ``real`` (N, d) and ``fake`` (M, d)."""
    r, f = _as64(real, "real features"), _as64(fake, "generated features")
    if r.shape[0] < 2 or f.shape[0] < 2:
        raise DataError(f"the Frechet distance needs at least 2 points per set; got {r.shape[0]} and {f.shape[0]}.")
    return gaussian_frechet_distance(r.mean(0), torch.cov(r.T), f.mean(0), torch.cov(f.T))


def frechet_distance_stderr(real: torch.Tensor, fake: torch.Tensor, *, resamples: int = 50,
                            seed: int = 0) -> float:
    """Bootstrap standard error of :func:`frechet_distance`: the standard deviation of the
    distance over ``resamples`` redraws, with replacement, of both sets. The distance of a few
    hundred points moves by about as much as the gaps between models, and its bias (real data
    against real data is not zero) is of the same size: the reference row shows the bias, this
    the noise, so that two models within it are called a tie, not ranked."""
    r, f = _as64(real, "real features"), _as64(fake, "generated features")
    g = torch.Generator().manual_seed(seed)
    values = [frechet_distance(r[torch.randint(r.shape[0], (r.shape[0],), generator=g)],
                               f[torch.randint(f.shape[0], (f.shape[0],), generator=g)])
              for _ in range(resamples)]
    return float(torch.tensor(values).std())


def _mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    m, n = x.shape[0], y.shape[0]
    return ((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
            + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
            - 2 * kxy.mean())


def kernel_distance(real: torch.Tensor, fake: torch.Tensor, *, subsets: int = 100,
                    subset_size: int | None = None, seed: int = 0) -> tuple[float, float]:
    """Unbiased polynomial-kernel MMD^2 (KID): (mean, std) over ``subsets`` random subsets of
    ``subset_size`` points of each set.

    ``subset_size`` defaults to KID's 1,000, or to half the smaller set when that is smaller
    (subsets as large as a whole set would all be the same set, and their spread zero); an
    explicit value is capped at the smaller set's size.
    """
    r, f = _as64(real, "real features"), _as64(fake, "generated features")
    small = min(r.shape[0], f.shape[0])
    s = min(1000, small // 2) if subset_size is None else min(subset_size, small)
    if s < 2:
        raise DataError(f"the kernel distance needs at least 2 points per set; got {r.shape[0]} and {f.shape[0]}.")
    g = torch.Generator().manual_seed(seed)
    vals = torch.stack([
        _mmd2_unbiased(r[torch.randperm(r.shape[0], generator=g)[:s]],
                       f[torch.randperm(f.shape[0], generator=g)[:s]])
        for _ in range(subsets)
    ])
    return float(vals.mean()), float(vals.std()) if subsets > 1 else 0.0


def _chunked_cdist(a: torch.Tensor, b: torch.Tensor, fn, chunk: int = 1024):
    """Apply ``fn(rows_of_distance_matrix, start)`` over row chunks of cdist(a, b)."""
    for start in range(0, a.shape[0], chunk):
        fn(torch.cdist(a[start:start + chunk], b), start)


def knn_radii(f: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point of ``f`` (N, d) to its k-th nearest OTHER point: (N,)."""
    f = _as64(f, "features")
    if f.shape[0] <= k:
        raise DataError(f"k-nearest-neighbour radii with k={k} need more than {k} points; got {f.shape[0]}.")
    out = torch.empty(f.shape[0], dtype=torch.float64)

    def take(d, start):
        # the k+1 smallest include the point itself (distance 0)
        out[start:start + d.shape[0]] = d.topk(k + 1, dim=1, largest=False).values[:, k]

    _chunked_cdist(f, f, take)
    return out


def _inside_fraction(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """(M,) bool: point j lies in at least one ball B(centres_i, radii_i)."""
    inside = torch.empty(points.shape[0], dtype=torch.bool)

    def take(d, start):
        inside[start:start + d.shape[0]] = (d <= radii.unsqueeze(0)).any(1)

    _chunked_cdist(points, centres, take)
    return inside


def precision_recall(real: torch.Tensor, fake: torch.Tensor, *, k: int = PR_K) -> dict[str, float]:
    """Improved precision and recall.

    Returns ``{"precision", "recall"}``: precision is the fraction of ``fake`` inside the real
    manifold, recall the fraction of ``real`` inside the generated manifold. The order of the
    arguments is (real, generated), the reverse of torch-fidelity's.
    """
    r, f = _as64(real, "real features"), _as64(fake, "generated features")
    precision = _inside_fraction(f, r, knn_radii(r, k)).double().mean()
    recall = _inside_fraction(r, f, knn_radii(f, k)).double().mean()
    return {"precision": float(precision), "recall": float(recall)}


def density_coverage(real: torch.Tensor, fake: torch.Tensor, *, k: int = DC_K) -> dict[str, float]:
    """Density (can exceed 1) and coverage (in [0, 1]) of ``fake`` against ``real`` balls."""
    r, f = _as64(real, "real features"), _as64(fake, "generated features")
    radii = knn_radii(r, k)
    counts = torch.zeros(f.shape[0], dtype=torch.float64)
    covered = torch.zeros(r.shape[0], dtype=torch.bool)

    def take(d, start):  # d: (chunk of fake, N real)
        inside = d <= radii.unsqueeze(0)
        counts[start:start + d.shape[0]] = inside.sum(1).double()
        covered.logical_or_(inside.any(0))

    _chunked_cdist(f, r, take)
    return {"density": float(counts.sum() / (k * f.shape[0])), "coverage": float(covered.double().mean())}


def class_histogram(pred: torch.Tensor, num_classes: int, *, reference: torch.Tensor | None = None,
                    min_fraction: float = 0.2) -> dict:
    """How the samples spread over classes.

    Parameters
    ----------
    pred : LongTensor (n,)
        Predicted class of each sample.
    reference : LongTensor, optional
        Labels of real data; their frequencies are the expected shares (uniform otherwise).
    min_fraction : float
        A class counts as generated when it gets at least this fraction of its expected count.

    Returns
    -------
    dict with ``counts`` (list), ``normalized_entropy`` (H(p) / log K: 1 = perfectly even),
    ``classes_generated``, ``kl_to_reference`` (KL(p_samples || p_reference), nats).
    """
    pred = pred.detach().long().cpu()
    n = pred.numel()
    counts = torch.bincount(pred, minlength=num_classes)[:num_classes].double()
    p = counts / max(n, 1)
    if reference is not None:
        q = torch.bincount(reference.detach().long().cpu(), minlength=num_classes)[:num_classes].double()
        q = q / q.sum()
    else:
        q = torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float64)
    nz = p > 0
    entropy = max(0.0, float(-(p[nz] * p[nz].log()).sum()))
    kl = float((p[nz] * (p[nz].log() - q[nz].clamp_min(1e-300).log())).sum())
    generated = int((counts >= torch.clamp(torch.ceil(min_fraction * n * q), min=1)).sum())
    return {
        "counts": [int(c) for c in counts],
        "normalized_entropy": entropy / math.log(num_classes) if num_classes > 1 else 1.0,
        "classes_generated": generated,
        "kl_to_reference": kl,
        "min_fraction": min_fraction,
    }


def _binomial_se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n > 0 else float("nan")


IMAGE_METRIC_NAMES = ("frechet_distance", "kernel_distance", "precision", "recall", "density",
                      "coverage", "class_histogram")


def _as_values(data, samples: torch.Tensor) -> torch.Tensor:
    """:meth:`probgen.data.base.Dataset.as_values` where ``data`` has it (a stand-in for a
    Dataset that does not is taken to hold the values as the model draws them)."""
    as_values = getattr(data, "as_values", None)
    return as_values(samples) if callable(as_values) else samples


def image_sample_metrics(model, data, split: str = "test", *, n_samples: int | None = None,
                         feature_net=None, samples: torch.Tensor | None = None,
                         seed: int = 0) -> dict[str, Metric]:
    """Every feature-network metric of ``model.sample`` against ``data[split]``.

    Draws ``n`` samples (``n_samples``, default the size of the split, at most 10,000) and
    compares them with the first ``n`` examples of the split. Pass ``samples`` to score given
    samples instead of drawing them.
    """
    from probgen.eval.features import feature_network

    fn = feature_net or feature_network(data)
    real = data.split(split)
    n = min(int(n_samples or 10_000), real.shape[0])
    real = real[:n]
    if samples is None:
        with torch.no_grad():
            samples = model.sample(n)
    # on dequantized data, each sample as the value of its bin, as the test images hold them
    # (a continuous draw sits half a level above its image: 3 % of the range on 17-level digits)
    samples = _as_values(data, samples.reshape(-1, *data.shape))
    bad = int((~torch.isfinite(samples.reshape(samples.shape[0], -1)).all(1)).sum())
    if bad:  # the row says its sampler failed; the other rows of a comparison go on
        reason = (f"{bad} of {samples.shape[0]} samples are not finite (NaN or inf): the model "
                  "diverged when sampling. Retrain it (a lower learning rate, more epochs) "
                  "before scoring its samples")
        return {name: unavailable(reason) for name in IMAGE_METRIC_NAMES}
    fr, ff = fn.features(real), fn.features(samples)
    m = ff.shape[0]
    extra = {"feature_network": fn.name, "n_real": int(n), "n_generated": int(m)}
    out: dict[str, Metric] = {
        "feature_net_accuracy": Metric(fn.accuracy, None, "fraction",
                                       extra={"feature_network": fn.name, "split": "test"}),
        "frechet_distance": Metric(frechet_distance(fr, ff), frechet_distance_stderr(fr, ff, seed=seed), "",
                                   extra={**extra, "stderr": "bootstrap std over 50 resamples"}),
    }
    kd, kd_std = kernel_distance(fr, ff, seed=seed)
    out["kernel_distance"] = Metric(kd, kd_std, "", extra={**extra, "stderr": "std over 100 subsets"})
    pr = precision_recall(fr, ff)
    out["precision"] = Metric(pr["precision"], _binomial_se(pr["precision"], m), "fraction",
                              extra={**extra, "k": PR_K})
    out["recall"] = Metric(pr["recall"], _binomial_se(pr["recall"], n), "fraction",
                           extra={**extra, "k": PR_K})
    dc = density_coverage(fr, ff)
    out["density"] = Metric(dc["density"], None, "", extra={**extra, "k": DC_K})
    out["coverage"] = Metric(dc["coverage"], _binomial_se(dc["coverage"], n), "fraction",
                             extra={**extra, "k": DC_K})
    labels = data.labels(split)
    hist = class_histogram(fn.classify(samples), fn.net.num_classes,
                           reference=labels if labels is not None else None)
    out["class_histogram"] = Metric(
        hist["normalized_entropy"], None, "normalized entropy",
        extra={**extra, "counts": hist["counts"], "classes_generated": hist["classes_generated"],
               "kl_to_data_classes": hist["kl_to_reference"],
               "rule": f"a class is generated with >= {hist['min_fraction']:g} x its expected count"},
    )
    return out


# ----------------------------------------------------------------------------- vector data
# Two-sample distances in the data space, for vector data without feature networks (toy sets,
# a user's .npy): the samples against test points. Both are MMD^2 (Gretton et al., "A kernel
# two-sample test", JMLR 2012) with a kernel k:
#   MMD^2 = E k(X, X') + E k(Y, Y') - 2 E k(X, Y),
# estimated by the unbiased U-statistic (pairs of distinct points within a set), which is zero
# in expectation when X and Y have one distribution.
# * energy distance (Szekely and Rizzo, 2004/2013): k(x, y) = -||x - y||, so the statistic is
#   D^2 = 2 E||X - Y|| - E||X - X'|| - E||Y - Y'|| (scipy.stats.energy_distance returns the
#   square root of the plug-in estimate, pairs i = i' included, in 1-D).
# * MMD with the Gaussian kernel k(x, y) = exp(-||x - y||^2 / (2 h^2)), h the median distance
#   between distinct points of the two sets pooled (the median heuristic), fixed before any
#   permutation.
# Each carries a standard error (the first-order, non-degenerate variance of the two-sample
# U-statistic, Var ~= Var(psi_x) / m + Var(psi_y) / n with psi the influence of one point)
# and a reference from the data themselves: the same statistic after random permutations of
# the pooled points' labels (the permutation test's null distribution: its 95th percentile and
# the p-value of the observed value). Near zero the U-statistic is degenerate and the standard
# error understates its spread; read the permutation reference there.

VECTOR_SAMPLES = 1000       # samples and test points compared, by default
PERMUTATIONS = 200          # label permutations for the reference distribution


def median_bandwidth(x: torch.Tensor, y: torch.Tensor, *, distances: torch.Tensor | None = None) -> float:
    """The median heuristic: the median Euclidean distance between distinct points of ``x``
    (m, d) and ``y`` (n, d) pooled (``distances``: their pooled distance matrix, if at hand)."""
    if distances is None:
        z = torch.cat([_as64(x, "first sample"), _as64(y, "second sample")])
        distances = torch.cdist(z, z)
    h = _median_off_diagonal(distances)
    return h if h > 0 else 1.0


def _median_off_diagonal(d: torch.Tensor) -> float:
    """The median of the M = N (N - 1) / 2 distances between distinct points, from the
    symmetric (N, N) matrix ``d`` with its zero diagonal, without listing the pairs: sorted,
    the matrix's entries are the N diagonal zeros and then every pair's distance twice, so the
    middle pair values (the M/2-th and (M/2 + 1)-th, or the (M + 1)/2-th twice) are the
    (N + M)-th and (N + M + 1)-th smallest entries (numpy's median: the mean of the two)."""
    n = d.shape[0]
    k = n + n * (n - 1) // 2  # 1-based rank of the lower middle value
    # one selection for both ranks (numpy; torch's kthvalue, called twice, took 3 times as long)
    part = np.partition(d.detach().cpu().numpy().reshape(-1), [k - 1, k])
    return (float(part[k - 1]) + float(part[k])) / 2


def _kernel_of(d: torch.Tensor, kind: str, bandwidth: float | None) -> tuple[torch.Tensor, float]:
    """``(matrix, sign)``: the kernel matrix of the pooled distances ``d`` is ``sign * matrix``.
    The energy distance's kernel -d is ``d`` itself with sign -1, not a copy; the Gaussian
    kernel is computed in place in one new matrix (each fresh N x N matrix costs a pass of
    page faults as well as its arithmetic)."""
    if kind == "energy":
        return d, -1.0
    k = d.pow(2)
    k.mul_(-0.5 / bandwidth**2).exp_()
    return k, 1.0


def _mmd2_from_kernel(k: torch.Tensor, labels: torch.Tensor, m: int, n: int) -> torch.Tensor:
    """Unbiased MMD^2 for each column of ``labels`` (N, P) in {0, 1} (1: first sample), from
    the pooled kernel matrix ``k`` (N, N): (P,). One product ``k @ a``: with b = 1 - a and the
    row sums r = k 1, ``a'kb = r'a - a'ka`` and ``b'kb = 1'k1 - 2 r'a + a'ka``."""
    a = labels.double()
    diag = k.diagonal().unsqueeze(1)  # (N, 1)
    rows = k.sum(1, keepdim=True)     # (N, 1)
    aka = (a * (k @ a)).sum(0)        # (P,)
    ra = (rows * a).sum(0)
    da, total, trace = (diag * a).sum(0), rows.sum(), diag.sum()
    xx = (aka - da) / (m * (m - 1))
    yy = (total - 2 * ra + aka - (trace - da)) / (n * (n - 1))
    xy = (ra - aka) / (m * n)
    return xx + yy - 2 * xy


def two_sample_statistic(x: torch.Tensor, y: torch.Tensor, kind: str = "energy", *,
                         bandwidth: float | None = None, permutations: int = PERMUTATIONS,
                         seed: int = 0, distances: torch.Tensor | None = None) -> dict:
    """The unbiased energy distance (``kind="energy"``) or Gaussian-kernel MMD^2
    (``kind="mmd"``) between ``x`` (m, d) and ``y`` (n, d), with its standard error and a
    permutation reference (see the comment above).

    Returns ``{"value", "stderr", "null_mean", "null_q95", "p_value", "permutations",
    "bandwidth"}`` (``bandwidth``: h of the Gaussian kernel, the median heuristic unless
    given; None for the energy distance). ``p_value`` is ``(1 + #{null >= value}) / (1 + P)``.
    ``distances``: the Euclidean distance matrix of ``x`` and ``y`` stacked, where the caller
    has it already (both statistics of :func:`vector_sample_metrics` share one).
    """
    if kind not in ("energy", "mmd"):
        raise DataError(f"kind must be 'energy' or 'mmd'; got {kind!r}.")
    x, y = _as64(x, "first sample"), _as64(y, "second sample")
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise DataError(f"a two-sample statistic needs at least 2 points per set; got {m} and {n}.")
    if x.shape[1] != y.shape[1]:
        raise DataError(f"the two samples have {x.shape[1]} and {y.shape[1]} dimensions; they must agree.")
    if distances is None:
        z = torch.cat([x, y])
        distances = torch.cdist(z, z)  # (m + n, m + n)
    elif tuple(distances.shape) != (m + n, m + n):
        raise DataError(f"distances must be the ({m + n}, {m + n}) distance matrix of the {m} + {n} "
                        f"points stacked (x, then y); got shape {tuple(distances.shape)}. Leave it "
                        "out to have it computed.")
    h = None
    if kind == "mmd":
        h = float(bandwidth) if bandwidth is not None else median_bandwidth(x, y, distances=distances)
        if not h > 0:
            raise DataError(f"the kernel bandwidth must be positive; got {bandwidth}.")
    k, sign = _kernel_of(distances, kind, h)  # the kernel matrix is sign * k, (m + n, m + n)
    lab = torch.cat([torch.ones(m), torch.zeros(n)]).unsqueeze(1)  # (N, 1)
    value = sign * float(_mmd2_from_kernel(k, lab, m, n)[0])
    # first-order variance: psi_x(i) = 2 (mean_{i' != i} k(x_i, x_i') - mean_j k(x_i, y_j))
    # (the sign does not change a variance)
    kxx, kyy, kxy = k[:m, :m], k[m:, m:], k[:m, m:]
    psi_x = 2 * ((kxx.sum(1) - kxx.diagonal()) / (m - 1) - kxy.mean(1))
    psi_y = 2 * ((kyy.sum(1) - kyy.diagonal()) / (n - 1) - kxy.mean(0))
    stderr = math.sqrt(float(psi_x.var()) / m + float(psi_y.var()) / n)
    out = {"value": value, "stderr": stderr, "bandwidth": h, "permutations": int(permutations),
           "null_mean": None, "null_q95": None, "p_value": None}
    if permutations > 0:
        g = torch.Generator().manual_seed(seed)
        perms = torch.stack([torch.randperm(m + n, generator=g) for _ in range(permutations)], 1)
        labels = (perms < m).double()  # (N, P): a random split into m and n points
        # one product for all P splits: on 10,000 points one (N, 200) product took 2.2 s, four
        # of (N, 50) 5 s
        null = sign * _mmd2_from_kernel(k, labels, m, n)
        out.update(null_mean=float(null.mean()), null_q95=float(null.quantile(0.95)),
                   p_value=(1 + int((null >= value).sum())) / (1 + permutations))
    return out


def energy_distance(x: torch.Tensor, y: torch.Tensor, *, unbiased: bool = True) -> float:
    """Squared energy distance ``2 E||X - Y|| - E||X - X'|| - E||Y - Y'||`` between ``x``
    (m, d) and ``y`` (n, d): the unbiased U-statistic, or with ``unbiased=False`` the plug-in
    (V-statistic) value, whose square root is ``scipy.stats.energy_distance`` in 1-D."""
    x, y = _as64(x, "first sample"), _as64(y, "second sample")
    m, n = x.shape[0], y.shape[0]
    cxy = torch.cdist(x, y).mean()
    if unbiased:
        if m < 2 or n < 2:
            raise DataError(f"the unbiased energy distance needs at least 2 points per set; got {m} and {n}.")
        cxx = torch.cdist(x, x).sum() / (m * (m - 1))
        cyy = torch.cdist(y, y).sum() / (n * (n - 1))
    else:
        cxx, cyy = torch.cdist(x, x).mean(), torch.cdist(y, y).mean()
    return float(2 * cxy - cxx - cyy)


def mmd2(x: torch.Tensor, y: torch.Tensor, *, bandwidth: float | None = None) -> float:
    """Unbiased MMD^2 with the Gaussian kernel of ``bandwidth`` h (the median heuristic,
    :func:`median_bandwidth`, unless given) between ``x`` (m, d) and ``y`` (n, d)."""
    return two_sample_statistic(x, y, "mmd", bandwidth=bandwidth, permutations=0)["value"]


MANIFOLD_METRIC_NAMES = ("precision", "recall", "density", "coverage")


def standardized_manifold_metrics(real: torch.Tensor, fake: torch.Tensor, train: torch.Tensor,
                                  extra: dict | None = None) -> dict[str, Metric]:
    """Precision, recall (k = :data:`PR_K`), density and coverage (k = :data:`DC_K`) of
    ``fake`` against ``real`` (each (n, D)), both in the standard units of ``train`` (N, ...):
    (x - mean) / std per feature, a feature constant in training keeping a unit of 1."""
    t = _as64(train.reshape(train.shape[0], -1), "training data")
    std = t.std(0) if t.shape[0] > 1 else torch.zeros_like(t[0])
    mean, unit = t.mean(0), torch.where(std > 1e-6, std, torch.ones_like(std))
    r = (_as64(real, "test points") - mean) / unit
    f = (_as64(fake, "samples") - mean) / unit
    m, n = f.shape[0], r.shape[0]
    k = max(PR_K, DC_K)
    if min(m, n) <= k:
        reason = (f"needs more than {k} test points and samples for its {k}-nearest-neighbour "
                  f"balls; got {n} test points and {m} samples")
        return {name: unavailable(reason) for name in MANIFOLD_METRIC_NAMES}
    extra = {**(extra or {}), "space": "the training data's standard units"}
    pr, dc = precision_recall(r, f), density_coverage(r, f)
    return {
        "precision": Metric(pr["precision"], _binomial_se(pr["precision"], m), "fraction",
                            extra={**extra, "k": PR_K}),
        "recall": Metric(pr["recall"], _binomial_se(pr["recall"], n), "fraction",
                         extra={**extra, "k": PR_K}),
        "density": Metric(dc["density"], None, "", extra={**extra, "k": DC_K}),
        "coverage": Metric(dc["coverage"], _binomial_se(dc["coverage"], n), "fraction",
                           extra={**extra, "k": DC_K}),
    }


def vector_sample_metrics(model, data, split: str = "test", *, n_samples: int | None = None,
                          samples: torch.Tensor | None = None, seed: int = 0,
                          permutations: int = PERMUTATIONS) -> dict[str, Metric]:
    """Sample metrics for vector data (toy sets, a user's arrays) in the data space.

    ``n`` samples of ``model.sample`` (``n_samples``, default :data:`VECTOR_SAMPLES`, at most
    the size of the split; or the given ``samples``) against the first ``n`` points of
    ``data[split]``:

    * ``energy_distance`` and ``mmd``: see :func:`two_sample_statistic`; each metric's
      ``extra`` holds the permutation reference (``null_q95``, ``p_value``) and, for the MMD,
      the bandwidth;
    * ``precision``, ``recall``, ``density`` and ``coverage`` on the user's own vectors
      (``data.kind == "vector"``; toy sets have the mode metrics instead): the k-NN
      manifold metrics of the images' feature space (:func:`precision_recall`,
      :func:`density_coverage`), here on the vectors in the training split's standard units
      (per-feature mean and standard deviation), so that no feature's scale decides them and
      the thresholds that flag a model on images (against the reference row) apply as they
      are;
    * ``sample_log_density``, where the data set has a density (``data.density``): the mean
      true log-density of the samples (nats), with its standard error, beside the mean over
      the test points themselves (``extra["reference"]``, an estimate of minus the entropy). A
      sampler concentrated on the densest regions can exceed the reference; one off the
      support falls below it. Samples where the density is 0 are counted in
      ``extra["outside_support"]`` and left out of the mean.
    """
    real = data.split(split).detach()
    n = min(int(n_samples or VECTOR_SAMPLES), real.shape[0])
    real = real[:n].reshape(n, -1)
    if samples is None:
        with torch.no_grad():
            samples = model.sample(n)
    # on dequantized data, each sample as the discrete value of its bin, as the data hold it
    fake = _as_values(data, samples.detach()).reshape(samples.shape[0], -1)
    if not torch.isfinite(fake).all():
        raise DataError(
            f"{int((~torch.isfinite(fake).all(1)).sum())} of {fake.shape[0]} samples are not "
            "finite: the model diverged. Retrain it (lower the learning rate) before scoring it."
        )
    extra = {"n_real": int(n), "n_generated": int(fake.shape[0]), "split": split}
    out: dict[str, Metric] = {}
    pooled = torch.cat([_as64(fake, "samples"), _as64(real, "test points")])
    distances = torch.cdist(pooled, pooled)  # one matrix for both statistics
    for name, kind, rule in (
            ("energy_distance", "energy", "unbiased 2E|X-Y| - E|X-X'| - E|Y-Y'|, Euclidean"),
            ("mmd", "mmd", "unbiased MMD^2, Gaussian kernel, bandwidth = median pooled distance")):
        s = two_sample_statistic(fake, real, kind, permutations=permutations, seed=seed,
                                 distances=distances)
        ref = {"null_mean": s["null_mean"], "null_q95": s["null_q95"], "p_value": s["p_value"],
               "permutations": s["permutations"]}
        if s["bandwidth"] is not None:
            ref["bandwidth"] = s["bandwidth"]
        out[name] = Metric(s["value"], s["stderr"], "", extra={**extra, **ref, "definition": rule})
    if data.kind == "vector":
        out.update(standardized_manifold_metrics(real, fake, data.train, extra))
    dens = data.density
    if dens is not None and callable(getattr(dens, "log_prob", None)):
        lp = dens.log_prob(fake.double().cpu().reshape(-1, *data.shape)).double()
        ref_lp = dens.log_prob(real.double().cpu().reshape(-1, *data.shape)).double()
        finite = torch.isfinite(lp)
        vals = lp[finite]
        if vals.numel() > 0:
            se = float(vals.std() / math.sqrt(vals.numel())) if vals.numel() > 1 else None
            rf = ref_lp[torch.isfinite(ref_lp)]
            out["sample_log_density"] = Metric(
                float(vals.mean()), se, "nats",
                extra={**extra, "reference": float(rf.mean()),
                       "reference_stderr": float(rf.std() / math.sqrt(rf.numel())) if rf.numel() > 1 else None,
                       "outside_support": float((~finite).double().mean()),
                       "definition": "mean true log-density of the samples (reference: of the test points)"})
        else:
            out["sample_log_density"] = Metric(
                None, None, "nats", reason="every sample lies where the data's density is 0",
                extra={**extra, "outside_support": 1.0})
    return out
