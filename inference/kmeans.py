"""k-means: k-means++ seeding and Lloyd's iterations, in torch, and a ``KMeans`` estimator.

* Seeding: greedy k-means++ (Arthur and Vassilvitskii, "k-means++: the advantages of careful
  seeding", SODA 2007): each new centre is the best of ``2 + log K`` candidates drawn with
  probability proportional to the squared distance to the nearest chosen centre, as
  scikit-learn does.
* Iterations: Lloyd's algorithm (Lloyd, "Least squares quantization in PCM", IEEE Trans.
  Inf. Theory 1982), stopping when the labels no longer change or the centres move by less
  than ``tol`` times the mean feature variance (scikit-learn's rule).

Squared distances come from one matrix product per block of rows,
``||x||^2 - 2 x c^T + ||c||^2``; nothing loops over clusters. ``KMeans`` follows
scikit-learn's estimator habits (``fit`` returns ``self``, fitted attributes end in ``_``)
and is the clustering baseline next to the Gaussian mixture.

Shapes: ``N`` points, ``D`` features, ``K`` clusters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from probgen.errors import ConfigError, DataError, NotFittedError, suggest

__all__ = ["kmeans_plusplus", "lloyd", "LloydResult", "KMeans", "squared_distances",
           "make_generator", "as_2d_tensor"]


# ============================================================================ helpers
def make_generator(random_state, device="cpu") -> torch.Generator:
    """A ``torch.Generator`` from ``None`` (fresh entropy), an int seed, or a generator."""
    if isinstance(random_state, torch.Generator):
        return random_state
    g = torch.Generator(device=device)
    if random_state is None:
        g.seed()
    else:
        g.manual_seed(int(random_state))
    return g


def as_2d_tensor(x, *, dtype: torch.dtype, device, name: str = "X",
                 estimator: str = "the estimator") -> Tensor:
    """``x`` (array-like or tensor, shape (N, D)) as a finite tensor of ``dtype`` on ``device``."""
    if isinstance(x, Tensor):
        t = x.detach()
    else:
        import numpy as np

        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as e:
            raise DataError(f"{name} must be an array of numbers of shape (n_samples, "
                            f"n_features); got {type(x).__name__} ({e}).") from e
    if t.dim() != 2:
        hint = (" Reshape it with X.reshape(-1, 1) if it holds one feature, or "
                "X.reshape(1, -1) if it is one sample.") if t.dim() == 1 else ""
        raise DataError(f"{name} must be 2-D, (n_samples, n_features); got shape "
                        f"{tuple(t.shape)}.{hint}")
    if t.is_complex() or t.dtype == torch.bool:
        raise DataError(f"{name} must hold real numbers; got dtype {t.dtype}.")
    t = t.to(device=device, dtype=dtype)
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).any(1).sum())
        raise DataError(f"{name} holds NaN or infinite values in {bad} row(s); {estimator} "
                        "needs finite data. Drop or impute those rows first.")
    return t


def squared_distances(x: Tensor, centers: Tensor, *, x_sq: Tensor | None = None) -> Tensor:
    """``||x_i - c_k||^2``, (N, K), clamped at zero.

    Parameters
    ----------
    x : Tensor, shape (N, D)
    centers : Tensor, shape (K, D)
    x_sq : Tensor, shape (N,), optional
        Precomputed ``||x_i||^2``.
    """
    if x_sq is None:
        x_sq = (x * x).sum(1)
    d = torch.addmm((centers * centers).sum(1).unsqueeze(0), x, centers.T, alpha=-2.0)
    return d.add_(x_sq.unsqueeze(1)).clamp_min_(0.0)


def _blocks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _rows_per_block(k: int) -> int:
    return max(1024, (1 << 20) // max(1, k))


# ============================================================================ seeding
def kmeans_plusplus(x: Tensor, n_clusters: int, *, generator: torch.Generator | None = None,
                    n_local_trials: int | None = None) -> tuple[Tensor, Tensor]:
    """Greedy k-means++ seeding.

    Parameters
    ----------
    x : Tensor, shape (N, D)
    n_clusters : int
        ``K``, at most ``N``.
    generator : torch.Generator, optional
        Random source (a CPU generator; default: torch's global one).
    n_local_trials : int, optional
        Candidates per new centre (default ``2 + int(log K)``; 1 is plain k-means++).

    Returns
    -------
    centers : Tensor, shape (K, D)
        Rows of ``x``.
    indices : LongTensor, shape (K,)
        Their row numbers: all distinct. A new centre is drawn with probability
        proportional to its squared distance to the chosen ones, so a point that coincides
        with a chosen centre is never drawn while points elsewhere remain; when fewer than
        ``K`` distinct points exist the rest are drawn uniformly from the unchosen rows.
    """
    n = x.shape[0]
    if not 1 <= n_clusters <= n:
        raise DataError(f"k-means++ needs 1 <= n_clusters <= n_samples; got n_clusters="
                        f"{n_clusters} for {n} samples.")
    trials = n_local_trials or 2 + int(math.log(n_clusters))
    dev = x.device
    gdev = generator.device if generator is not None else torch.device("cpu")
    x_sq = (x * x).sum(1)
    chosen = torch.zeros(n, dtype=torch.bool, device=dev)
    idx = torch.empty(n_clusters, dtype=torch.long, device=dev)
    first = int(torch.randint(n, (1,), generator=generator, device=gdev))
    idx[0] = first
    chosen[first] = True
    closest = squared_distances(x, x[first:first + 1], x_sq=x_sq).squeeze(1)  # (N,)
    closest[first] = 0.0
    for c in range(1, n_clusters):
        cum = torch.cumsum(closest.double(), 0)                 # (N,)
        total = float(cum[-1])
        if total <= 0.0:  # every remaining point coincides with a centre
            free = torch.nonzero(~chosen).flatten()
            pick = free[torch.randint(free.numel(), (1,), generator=generator, device=gdev).to(dev)]
            best = int(pick)
            closest = torch.minimum(closest, squared_distances(
                x, x[best:best + 1], x_sq=x_sq).squeeze(1))
        else:
            # u in (0, 1]: the target is > 0, so searchsorted lands on a point of positive mass
            u = 1.0 - torch.rand(trials, generator=generator, device=gdev, dtype=torch.float64)
            cand = torch.searchsorted(cum, u.to(dev) * total).clamp_max_(n - 1)  # (T,)
            dist = squared_distances(x, x[cand], x_sq=x_sq)     # (N, T)
            dist = torch.minimum(dist, closest.unsqueeze(1))
            pot = dist.sum(0, dtype=torch.float64)              # (T,)
            j = int(torch.argmin(pot))
            best = int(cand[j])
            closest = dist[:, j]
        closest[best] = 0.0
        chosen[best] = True
        idx[c] = best
    return x[idx].clone(), idx


# ============================================================================ Lloyd
@dataclass
class LloydResult:
    """One run of Lloyd's algorithm.

    Attributes
    ----------
    centers : Tensor, shape (K, D)
    labels : LongTensor, shape (N,)
        Nearest centre of each point (for the returned centres).
    inertia : float
        Sum of squared distances of the points to their centre.
    n_iter : int
    converged : bool
    """

    centers: Tensor
    labels: Tensor
    inertia: float
    n_iter: int
    converged: bool


def _assign(x: Tensor, centers: Tensor, x_sq: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest centre (N,) and the squared distance to it (N,)."""
    labels = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dmin = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for sl in _blocks(x.shape[0], _rows_per_block(centers.shape[0])):
        dmin[sl], labels[sl] = squared_distances(x[sl], centers, x_sq=x_sq[sl]).min(1)
    return labels, dmin


def _update(x: Tensor, labels: Tensor, centers: Tensor, dmin: Tensor) -> Tensor:
    """Means of the clusters; an empty cluster takes the point farthest from its centre."""
    k, d = centers.shape
    counts = torch.bincount(labels, minlength=k)
    sums = torch.zeros(k, d, dtype=torch.float64, device=x.device).index_add_(
        0, labels, x.to(torch.float64))
    new = (sums / counts.clamp_min(1).unsqueeze(1)).to(x.dtype)
    empty = torch.nonzero(counts == 0).flatten()
    if empty.numel():
        far = torch.argsort(dmin, descending=True)[: empty.numel()]
        new[empty] = x[far]
    return new


def lloyd(x: Tensor, centers: Tensor, *, max_iter: int = 300, tol: float = 1e-4) -> LloydResult:
    """Lloyd's iterations from ``centers``.

    Parameters
    ----------
    x : Tensor, shape (N, D)
    centers : Tensor, shape (K, D)
    max_iter : int
    tol : float
        Stop when the summed squared movement of the centres is at most
        ``tol * mean(var(x, axis=0))`` (relative, as scikit-learn).
    """
    x_sq = (x * x).sum(1)
    abs_tol = tol * float(x.var(0, unbiased=False).mean()) if x.shape[0] > 1 else 0.0
    centers = centers.to(x.dtype).clone()
    labels_old = None
    converged = False
    n_iter = 0
    labels, dmin = _assign(x, centers, x_sq)
    for it in range(1, max_iter + 1):
        n_iter = it
        new = _update(x, labels, centers, dmin)
        shift = float(((new - centers) ** 2).sum())
        centers = new
        labels_old = labels
        labels, dmin = _assign(x, centers, x_sq)
        if torch.equal(labels, labels_old) or shift <= abs_tol:
            converged = True
            break
    inertia = float(((x - centers[labels]) ** 2).sum(dtype=torch.float64))
    return LloydResult(centers, labels, inertia, n_iter, converged)


# ============================================================================ estimator
def _check_int(name: str, value, low: int, cls: str = "KMeans") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"The {name!r} parameter of {cls} must be an int in the range "
                          f"[{low}, inf). Got {value!r} instead.")


def _check_float(name: str, value, low: float, cls: str = "KMeans") -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= low:
        raise ConfigError(f"The {name!r} parameter of {cls} must be a float in the range "
                          f"[{low:g}, inf). Got {value!r} instead.")


class KMeans:
    """k-means clustering: greedy k-means++ seeding, Lloyd's iterations, best of ``n_init``.

    Parameters
    ----------
    n_clusters : int, default 8
    init : {"k-means++", "random"} or array-like of shape (n_clusters, n_features)
        Seeding: greedy k-means++, ``n_clusters`` distinct random rows, or given centres
        (then one run, whatever ``n_init``).
    n_init : int, default 1
        Runs from different seeds; the one with the lowest inertia is kept.
    max_iter : int, default 300
    tol : float, default 1e-4
        Relative to the mean feature variance (see :func:`lloyd`).
    random_state : None, int or torch.Generator
    device : str or torch.device, optional
        Where to compute (default: the device of a tensor ``X``, else CPU).
    dtype : torch.dtype, default torch.float64

    Attributes
    ----------
    cluster_centers_ : Tensor, shape (n_clusters, n_features)
    labels_ : LongTensor, shape (n_samples,)
    inertia_ : float
        Sum of squared distances to the nearest centre.
    n_iter_ : int

    Examples
    --------
    >>> km = KMeans(n_clusters=3, random_state=0).fit(X)   # doctest: +SKIP
    >>> km.predict(X[:5])                                  # doctest: +SKIP
    """

    _INITS = ("k-means++", "random")

    def __init__(self, n_clusters: int = 8, *, init="k-means++", n_init: int = 1,
                 max_iter: int = 300, tol: float = 1e-4, random_state=None, device=None,
                 dtype: torch.dtype = torch.float64):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self._validate()

    def _validate(self) -> None:
        _check_int("n_clusters", self.n_clusters, 1)
        _check_int("n_init", self.n_init, 1)
        _check_int("max_iter", self.max_iter, 1)
        _check_float("tol", self.tol, 0.0)
        if isinstance(self.init, str) and self.init not in self._INITS:
            raise ConfigError(
                f"The 'init' parameter of KMeans must be a str among {set(self._INITS)} or "
                f"an array of shape (n_clusters, n_features). Got {self.init!r} instead."
                f"{suggest(self.init, self._INITS)}")

    def _device(self, x):
        if self.device is not None:
            from probgen.devices import resolve_device

            return resolve_device(str(self.device))
        return x.device if isinstance(x, Tensor) else torch.device("cpu")

    def fit(self, X, y=None) -> KMeans:
        """Cluster ``X`` (N, D); returns ``self``."""
        self._validate()
        dev = self._device(X)
        x = as_2d_tensor(X, dtype=self.dtype, device=dev, estimator="KMeans")
        n = x.shape[0]
        if n < self.n_clusters:
            raise DataError(f"KMeans needs n_samples >= n_clusters; got n_clusters="
                            f"{self.n_clusters} for n_samples={n}. Use fewer clusters.")
        gen = make_generator(self.random_state)
        if not isinstance(self.init, str):
            seeds = [as_2d_tensor(self.init, dtype=self.dtype, device=dev, name="init")]
            if tuple(seeds[0].shape) != (self.n_clusters, x.shape[1]):
                raise ConfigError(f"The 'init' centres must have shape (n_clusters, n_features)"
                                  f" = {(self.n_clusters, x.shape[1])}; got "
                                  f"{tuple(seeds[0].shape)}.")
        else:
            seeds = None
        best = None
        for _ in range(1 if seeds is not None else self.n_init):
            centers = seeds[0] if seeds is not None else self._seed(x, gen)
            res = lloyd(x, centers, max_iter=self.max_iter, tol=self.tol)
            if best is None or res.inertia < best.inertia:
                best = res
        self.cluster_centers_ = best.centers
        self.labels_ = best.labels
        self.inertia_ = best.inertia
        self.n_iter_ = best.n_iter
        self.n_features_in_ = x.shape[1]
        return self

    def _seed(self, x: Tensor, gen: torch.Generator) -> Tensor:
        if self.init == "random":
            idx = torch.randperm(x.shape[0], generator=gen)[: self.n_clusters].to(x.device)
            return x[idx].clone()
        return kmeans_plusplus(x, self.n_clusters, generator=gen)[0]

    def _check_fitted(self, what: str) -> None:
        if not hasattr(self, "cluster_centers_"):
            raise NotFittedError(f"This KMeans instance is not fitted yet: call fit(X) before "
                                 f"{what}.")

    def _input(self, X) -> Tensor:
        x = as_2d_tensor(X, dtype=self.dtype, device=self.cluster_centers_.device,
                         estimator="KMeans")
        if x.shape[1] != self.n_features_in_:
            raise DataError(f"X has {x.shape[1]} features, but KMeans was fitted with "
                            f"{self.n_features_in_}.")
        return x

    def predict(self, X) -> Tensor:
        """Index of the nearest centre, (N,)."""
        self._check_fitted("predict")
        x = self._input(X)
        return _assign(x, self.cluster_centers_, (x * x).sum(1))[0]

    def fit_predict(self, X, y=None) -> Tensor:
        return self.fit(X).labels_

    def transform(self, X) -> Tensor:
        """Euclidean distances to every centre, (N, K)."""
        self._check_fitted("transform")
        x = self._input(X)
        return squared_distances(x, self.cluster_centers_).sqrt_()

    def score(self, X, y=None) -> float:
        """Minus the inertia of ``X`` under the fitted centres."""
        self._check_fitted("score")
        x = self._input(X)
        return -float(_assign(x, self.cluster_centers_, (x * x).sum(1))[1].sum(dtype=torch.float64))
