"""Expectation-maximisation for Gaussian and Bernoulli mixtures, in log space.

The algorithm is the classic one (Dempster, Laird and Rubin, "Maximum likelihood from
incomplete data via the EM algorithm", JRSS B 1977; Bishop, "Pattern Recognition and Machine
Learning", 2006, section 9.2.2), with scikit-learn's parametrisation and numerical
conventions so that the two agree to rounding:

* each component is stored by its mean and the Cholesky factor ``W`` of its *precision*
  (``precision = W @ W.T``, ``W`` upper triangular), so the log density is
  ``-0.5 * (D log 2 pi + ||(x - mu) @ W||^2) + sum(log diag W)``;
* responsibilities and the log-likelihood are computed with ``logsumexp``;
* the M-step adds ``10 * eps`` to each component's mass and ``reg_covar`` to the diagonal
  of each covariance.

The E-step and the M-step meet only through :class:`SufficientStats` -- component masses
``N_k``, first moments ``sum_i r_ik (x_i - c_k)`` and second moments
``sum_i r_ik (x_i - c_k)(x_i - c_k)^T`` about a shift ``c_k`` -- which are plain sums over
data points. A data-parallel EM therefore only has to all-reduce them (with the same
shift on every worker) between :func:`e_step` and :func:`m_step`.

The shift is what keeps the second moments accurate: for full and tied covariances the
E-step whitens each point with the current parameters, ``y = (x - mu_k) @ W_k``, and
accumulates ``sum r y y^T`` in those coordinates, so the moments come out centred at the
current means (no ``E[x x^T] - mu mu^T`` cancellation, which matters in float32 for tight,
far-apart clusters). Diagonal and spherical covariances use raw moments (shift 0) and two
small matrix products, exactly as scikit-learn does; in float32 these lose accuracy when
clusters are much narrower than their distance from the origin.

The same loop fits a mixture of Bernoullis (binary data): each component family -- the four
covariance types of a Gaussian and ``"bernoulli"`` -- is one object in :data:`FAMILIES` that
gives the E-step its log-density terms and the M-step its parameters, and the statistics are
the same sums (``sum_x = sum_i r_ik x_i``, no second moments). Its M-step is the MAP estimate
under a Beta(1 + alpha, 1 + alpha) prior on every probability (``reg_covar`` carries
``alpha``), and :func:`run_em`'s lower bound is then the penalised objective
``(log p(X) + alpha * sum_kd log(mu_kd (1 - mu_kd))) / N``, the quantity that MAP-EM never
decreases.

Everything is written in torch, batched over components (no Python loop over ``K``), and
processes the data in blocks of rows so that the ``(K, D, block)`` intermediates stay in
cache; it runs unchanged on a CUDA device.

Shapes: ``N`` points, ``D`` features, ``K`` components. Covariance parameters by type::

    full       (K, D, D)      tied  (D, D)      diag  (K, D)      spherical  (K,)

A Bernoulli mixture has no covariance: ``means`` (K, D) are the probabilities of a 1.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from probgen.errors import ProbgenError
from probgen.inference.kmeans import KMeans, kmeans_plusplus
from probgen.progress import bar as progress_bar

__all__ = [
    "COVARIANCE_TYPES",
    "FAMILIES",
    "CovarianceError",
    "ConvergenceWarning",
    "MixtureParams",
    "SufficientStats",
    "EMResult",
    "estimate_log_prob",
    "weighted_log_prob",
    "e_step",
    "m_step",
    "stats_from_responsibilities",
    "compute_precision_cholesky",
    "precision_cholesky_from_precisions",
    "run_em",
    "best_of_em",
    "start_from_responsibilities",
    "INITIALISERS",
    "warn_not_converged",
]

_LOG_2PI = math.log(2.0 * math.pi)


class CovarianceError(ProbgenError, ValueError):
    """A covariance that is not positive definite: a component collapsed onto few points."""


class ConvergenceWarning(UserWarning):
    """EM stopped at ``max_iter`` before the lower bound changed by less than ``tol``."""


def _covariance_error(dtype: torch.dtype, which: str) -> CovarianceError:
    msg = (
        f"Fitting the mixture failed because the covariance of component(s) {which} is not "
        "positive definite (a component collapsed onto a single point or a few identical "
        "points). Try fewer components (n_components), a larger reg_covar, or scaled input "
        "data."
    )
    if dtype != torch.float64:
        msg += " float64 data (dtype=torch.float64) also improves the numerical accuracy."
    return CovarianceError(msg)


# ============================================================================ records
@dataclass
class MixtureParams:
    """The parameters of a Gaussian mixture (shapes in the module docstring).

    Attributes
    ----------
    weights : Tensor, shape (K,)
    means : Tensor, shape (K, D)
    covariances : Tensor or None
        ``None`` only when the mixture was built from precisions and not yet refitted.
    precisions_cholesky : Tensor
        Upper-triangular ``W`` with ``precision = W @ W.T`` (full, tied), or
        ``1 / sqrt(variance)`` (diag, spherical).
    covariance_type : str
    """

    weights: Tensor
    means: Tensor
    covariances: Tensor | None
    precisions_cholesky: Tensor
    covariance_type: str

    @property
    def precisions(self) -> Tensor:
        return FAMILIES[self.covariance_type].precisions(self.precisions_cholesky)

    def to(self, device=None, dtype=None) -> MixtureParams:
        mv = lambda t: None if t is None else t.to(device=device, dtype=dtype)  # noqa: E731
        return MixtureParams(mv(self.weights), mv(self.means), mv(self.covariances),
                             mv(self.precisions_cholesky), self.covariance_type)


@dataclass
class SufficientStats:
    """Sums over data points that the M-step needs; add two of them to pool data shards.

    Attributes
    ----------
    nk : Tensor, shape (K,)
        ``sum_i r_ik``.
    sum_x : Tensor, shape (K, D)
        ``sum_i r_ik (x_i - shift_k)``.
    sum_xx : Tensor
        Second moments about ``shift``: full ``(K, D, D)``, tied ``(D, D)`` (summed over
        components), diag and spherical ``(K, D)`` (the diagonal only).
    shift : Tensor, shape (K, D)
        The point ``c_k`` the moments are taken about (the E-step's current means for full
        and tied covariances, zero for diag and spherical).
    log_likelihood : Tensor, scalar
        ``sum_i log p(x_i)`` under the parameters the E-step used.
    n : int
        Number of points summed.
    """

    nk: Tensor
    sum_x: Tensor
    sum_xx: Tensor
    shift: Tensor
    log_likelihood: Tensor
    n: int

    def __add__(self, other: SufficientStats) -> SufficientStats:
        if not torch.equal(self.shift, other.shift):
            raise ValueError("sufficient statistics about different shifts cannot be added; "
                             "compute both with the same parameters.")
        return SufficientStats(self.nk + other.nk, self.sum_x + other.sum_x,
                               self.sum_xx + other.sum_xx, self.shift,
                               self.log_likelihood + other.log_likelihood, self.n + other.n)

    def pooled(self, all_reduce_sum: Callable[[Tensor], Tensor]) -> SufficientStats:
        """The statistics of all data shards: every sum over points (``nk``, ``sum_x``,
        ``sum_xx``, ``log_likelihood``, ``n``) summed by ``all_reduce_sum`` (a tensor -> its
        sum over processes, e.g. ``ProcessGroup.all_reduce_sum``) in one call; ``shift`` is
        the same on every shard and is kept."""
        sums = (self.nk, self.sum_x, self.sum_xx)
        dtype, device = self.nk.dtype, self.nk.device
        flat = torch.cat([*(t.reshape(-1) for t in sums),
                          self.log_likelihood.reshape(1).to(dtype),
                          torch.tensor([float(self.n)], dtype=dtype, device=device)])
        flat = all_reduce_sum(flat)
        parts = flat.split([*(t.numel() for t in sums), 1, 1])
        nk, sx, sxx = (p.view_as(t) for p, t in zip(parts, sums))
        return SufficientStats(nk, sx, sxx, self.shift,
                               parts[3].reshape(()).to(self.log_likelihood.dtype),
                               int(round(float(parts[4]))))


@dataclass
class EMResult:
    """What one EM run returns.

    Attributes
    ----------
    params : MixtureParams
        Parameters after the last M-step.
    lower_bounds : list of float
        Mean log-likelihood per point at the start of each iteration (the parameters the
        E-step of that iteration used), as scikit-learn's ``lower_bounds_``.
    converged : bool
    n_iter : int
    """

    params: MixtureParams
    lower_bounds: list[float] = field(default_factory=list)
    converged: bool = False
    n_iter: int = 0


# ============================================================================ blocks
def _blocks(n: int, size: int):
    """Slices of ``range(n)`` of at most ``size`` rows."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _block_size(covariance_type: str, k: int, d: int) -> int:
    """Rows per block of the E-step (see the covariance types' ``rows_per_block``)."""
    return max(256, FAMILIES[covariance_type].rows_per_block(k, d))


# ============================================================================ covariance types
# One class per covariance type; the functions below dispatch through COVARIANCE_TYPES.
# Every method is batched over components.


class _Gaussian:
    """What the Gaussian covariance types share: the log-density terms and the M-step."""

    def terms(self, means: Tensor, prec_chol: Tensor):
        """``(const, prep)``: ``log N(x | k) = const_k - 0.5 * whiten(x, prep)[0][k]``."""
        d = means.shape[1]
        return -0.5 * d * _LOG_2PI + self.log_det(prec_chol, d), self.prepare(means, prec_chol)

    def maximise(self, stats: SufficientStats, nk: Tensor, reg: float):
        """Means, covariances and precision Cholesky factors from the statistics."""
        delta = stats.sum_x / nk[:, None]                       # new mean - shift, (K, D)
        means = stats.shift + delta
        cov = self.covariance(stats.sum_xx, delta, nk, reg)
        return means, cov, self.precision_cholesky(cov)

    def log_prior(self, params: MixtureParams, reg: float) -> float:
        """The M-step's log prior, added to the lower bound (maximum likelihood: none)."""
        return 0.0


class _Full(_Gaussian):
    """One full covariance matrix per component: parameters (K, D, D)."""

    name = "full"

    def shape(self, k: int, d: int) -> tuple[int, ...]:
        return (k, d, d)

    def moments_shape(self, k: int, d: int) -> tuple[int, ...]:
        """Shape of ``SufficientStats.sum_xx``."""
        return (k, d, d)

    def rows_per_block(self, k: int, d: int) -> int:
        """Rows per E-step block: the whitened points (K, D+1, rows) hold about 2**18
        numbers (2 MiB in float64): big enough for efficient products, small enough to
        stay in cache (fastest of 2**16 to 2**20, measured on 2 CPU cores)."""
        return (1 << 18) // (k * (d + 1))

    def n_parameters(self, k: int, d: int) -> float:
        return k * d * (d + 1) / 2.0

    def log_det(self, prec_chol: Tensor, d: int) -> Tensor:
        """``log det W_k``, (K,)."""
        return prec_chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)

    def precisions(self, prec_chol: Tensor) -> Tensor:
        return prec_chol @ prec_chol.mT

    def precision_cholesky(self, cov: Tensor) -> Tensor:
        """Upper-triangular ``W = L^-T`` where ``cov = L L^T``."""
        chol, info = torch.linalg.cholesky_ex(cov)
        if bool((info > 0).any()):
            raise _covariance_error(cov.dtype, _which(info > 0))
        eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device).expand_as(cov)
        return torch.linalg.solve_triangular(chol, eye, upper=False).mT

    def from_precisions(self, prec: Tensor) -> Tensor:
        """Upper-triangular ``U`` with ``prec = U U^T``.

        The lower Cholesky factor of the precision with rows and columns reversed, reversed
        back (scikit-learn does the same).
        """
        flip = lambda a: a.flip(-1).flip(-2)  # noqa: E731
        chol, info = torch.linalg.cholesky_ex(flip(prec))
        if bool((info > 0).any()):
            raise _covariance_error(prec.dtype, "given in precisions_init")
        return flip(chol)

    def covariances(self, prec_chol: Tensor) -> Tensor:
        """``(W W^T)^-1 = W^-T W^-1``."""
        inv = self._inverse(prec_chol)
        return inv.mT @ inv

    def _inverse(self, prec_chol: Tensor) -> Tensor:
        eye = torch.eye(prec_chol.shape[-1], dtype=prec_chol.dtype,
                        device=prec_chol.device).expand_as(prec_chol)
        return torch.linalg.solve_triangular(prec_chol, eye, upper=True)

    def prepare(self, means: Tensor, prec_chol: Tensor) -> Tensor:
        """The stacked affine maps ``[x, 1] -> [W_k^T (x - mu_k), 1]``, (K*(D+1), D+1).

        Per component the (D+1, D+1) block ``[[W_k^T, -W_k^T mu_k], [0, 1]]``: one matrix
        product then whitens a block of points for all components and appends a row of ones,
        through which the M-step's product also yields ``sum r y`` and ``sum r``.
        """
        k, d, _ = prec_chol.shape
        a = torch.zeros(k, d + 1, d + 1, dtype=prec_chol.dtype, device=prec_chol.device)
        a[:, :d, :d] = prec_chol.mT
        a[:, :d, d] = -(means.unsqueeze(1) @ prec_chol).squeeze(1)
        a[:, d, d] = 1.0
        return a.reshape(k * (d + 1), d + 1)

    def whiten(self, x: Tensor, prep: Tensor) -> tuple[Tensor, Tensor]:
        """Squared Mahalanobis distances (K, B) and the whitened points (K, D+1, B).

        Row ``d < D`` of component ``k`` is ``(W_k^T (x - mu_k))_d``; row ``D`` is all ones.
        """
        d1 = prep.shape[1]
        ones = torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
        y = (prep @ torch.cat([x, ones], 1).T).view(-1, d1, x.shape[0])   # (K, D+1, B)
        return (y * y).sum(1).sub_(1.0), y                       # the ones row adds exactly 1

    def init_acc(self, k: int, d: int, **kw) -> dict:
        return {"t": torch.zeros(k, d + 1, d + 1, **kw)}

    def accumulate(self, acc: dict, x: Tensor, r: Tensor, y: Tensor) -> None:
        """Add ``sum_b r_kb [y; 1][y; 1]^T`` (whitened coordinates); r (K, B)."""
        acc["t"] += torch.bmm(y * r.unsqueeze(1), y.mT).to(acc["t"].dtype)  # (K, D+1, D+1)

    def finish(self, acc: dict, means: Tensor, prec_chol: Tensor):
        """Back to data coordinates about the means: ``W^-T sum r y`` and ``W^-T T W^-1``."""
        d = prec_chol.shape[-1]
        t = acc["t"]
        w = prec_chol.to(t.dtype)
        sum_x = torch.linalg.solve_triangular(w.mT, t[:, :d, d:], upper=False)  # (K, D, 1)
        a = torch.linalg.solve_triangular(w.mT, t[:, :d, :d], upper=False)
        sum_xx = torch.linalg.solve_triangular(w, a, upper=True, left=False)
        return sum_x.squeeze(-1), 0.5 * (sum_xx + sum_xx.mT), means.to(w.dtype)

    def centered_moments(self, diff: Tensor, r: Tensor) -> Tensor:
        """``sum_i r_ki diff_ki diff_ki^T`` from diff (K, B, D) and r (K, B)."""
        return torch.bmm((diff * r.unsqueeze(-1)).mT, diff)

    def covariance(self, sum_xx: Tensor, delta: Tensor, nk: Tensor, reg_covar: float) -> Tensor:
        """From moments about the shift; ``delta`` (K, D) = new mean - shift."""
        cov = sum_xx / nk[:, None, None] - delta.unsqueeze(-1) * delta.unsqueeze(-2)
        cov.diagonal(dim1=-2, dim2=-1).add_(reg_covar)
        return cov

    def scale(self, prec_chol: Tensor, k: int) -> Tensor:
        """``A_k`` with ``A_k A_k^T = cov_k``, applied as ``z @ A_k^T`` (here ``W_k^-1``)."""
        return self._inverse(prec_chol)

    def transform(self, z: Tensor, scale: Tensor, k: int) -> Tensor:
        return z @ scale[k]

    def check_precisions(self, prec: Tensor) -> str | None:
        return _check_spd(prec)


class _Tied(_Full):
    """One full covariance matrix shared by all components: parameters (D, D)."""

    name = "tied"

    def shape(self, k, d):
        return (d, d)

    def moments_shape(self, k, d):
        return (d, d)

    def n_parameters(self, k, d):
        return d * (d + 1) / 2.0

    def log_det(self, prec_chol, d):
        return prec_chol.diagonal().log().sum()

    def prepare(self, means, prec_chol):
        return prec_chol, (means @ prec_chol).unsqueeze(1)      # W (D, D), mu_k W (K, 1, D)

    def whiten(self, x, prep):
        """Squared distances (K, B) and whitened points (K, B, D): ``x W - mu_k W``."""
        w, mw = prep
        y = (x @ w).unsqueeze(0) - mw                           # (K, B, D)
        return (y * y).sum(-1), y

    def init_acc(self, k, d, **kw):
        return {"sy": torch.zeros(k, d, **kw), "syy": torch.zeros(d, d, **kw)}

    def accumulate(self, acc, x, r, y):
        d = y.shape[-1]
        ry = y * r.unsqueeze(-1)                                # (K, B, D)
        acc["sy"] += ry.sum(1, dtype=acc["sy"].dtype)
        acc["syy"] += (ry.reshape(-1, d).T @ y.reshape(-1, d)).to(acc["syy"].dtype)  # (D, D)

    def finish(self, acc, means, prec_chol):
        w = prec_chol.to(acc["syy"].dtype)
        sum_x = torch.linalg.solve_triangular(w.mT, acc["sy"].T, upper=False).T
        a = torch.linalg.solve_triangular(w.mT, acc["syy"], upper=False)
        sum_xx = torch.linalg.solve_triangular(w, a, upper=True, left=False)
        return sum_x, 0.5 * (sum_xx + sum_xx.mT), means.to(w.dtype)

    def centered_moments(self, diff, r):
        d = diff.shape[-1]
        return (diff * r.unsqueeze(-1)).reshape(-1, d).T @ diff.reshape(-1, d)

    def covariance(self, sum_xx, delta, nk, reg_covar):
        cov = (sum_xx - (nk[:, None] * delta).T @ delta) / nk.sum()
        cov.diagonal().add_(reg_covar)
        return cov

    def transform(self, z, scale, k):
        return z @ scale


class _Diag(_Gaussian):
    """A diagonal covariance per component: parameters (K, D), the variances."""

    name = "diag"

    def shape(self, k, d):
        return (k, d)

    def moments_shape(self, k, d):
        return (k, d)

    def rows_per_block(self, k, d):
        # log-densities (K, rows) and features [x, x*x] (rows, 2D): about 2**19 numbers;
        # blocks this large cost nothing on one core and mean fewer thread hand-offs.
        return (1 << 19) // (k + 2 * d)

    def n_parameters(self, k, d):
        return k * d

    def log_det(self, prec_chol, d):
        return prec_chol.log().sum(-1)

    def precisions(self, prec_chol):
        return prec_chol ** 2

    def precision_cholesky(self, cov):
        bad = cov <= 0
        if bool(bad.any()):
            raise _covariance_error(cov.dtype, _which(bad.reshape(bad.shape[0], -1).any(-1)))
        return cov.rsqrt()

    def from_precisions(self, prec):
        return prec.sqrt()

    def covariances(self, prec_chol):
        return prec_chol.pow(-2)

    def _per_feature(self, prec_chol, d):
        return prec_chol                                        # (K, D)

    def prepare(self, means, prec_chol):
        p = self._per_feature(prec_chol, means.shape[1]) ** 2   # precisions (K, D)
        mp = means * p
        # ||x - mu||^2_P = [x, x*x] . [-2 mu P, P] + mu P mu  (scikit-learn's expansion)
        return torch.cat([-2.0 * mp, p], 1), (means * mp).sum(1, keepdim=True)  # (K, 2D), (K, 1)

    def whiten(self, x, prep):
        """Squared distances (K, B) and the features ``[x, x*x]`` (B, 2D) they came from."""
        w, c = prep
        feats = torch.cat([x, x * x], 1)                        # (B, 2D)
        return torch.addmm(c, w, feats.T), feats

    def init_acc(self, k, d, **kw):
        return {"s": torch.zeros(k, 2 * d, **kw)}

    def accumulate(self, acc, x, r, feats):
        acc["s"] += (r @ feats).to(acc["s"].dtype)             # [sum r x, sum r x*x], (K, 2D)

    def finish(self, acc, means, prec_chol):
        d = means.shape[1]
        sx, sxx = acc["s"][:, :d], acc["s"][:, d:]
        return sx, sxx, torch.zeros_like(sx)

    def centered_moments(self, diff, r):
        return torch.bmm(r.unsqueeze(1), diff * diff).squeeze(1)  # (K, D)

    def covariance(self, sum_xx, delta, nk, reg_covar):
        return sum_xx / nk[:, None] - delta ** 2 + reg_covar

    def scale(self, prec_chol, k):
        return 1.0 / prec_chol

    def transform(self, z, scale, k):
        return z * scale[k]

    def check_precisions(self, prec):
        return None if bool((prec > 0).all()) else "positive"


class _Spherical(_Diag):
    """One variance per component: parameters (K,)."""

    name = "spherical"

    def shape(self, k, d):
        return (k,)

    def n_parameters(self, k, d):
        return k

    def log_det(self, prec_chol, d):
        return d * prec_chol.log()

    def _per_feature(self, prec_chol, d):
        return prec_chol.unsqueeze(1).expand(-1, d)

    def covariance(self, sum_xx, delta, nk, reg_covar):
        return (sum_xx / nk[:, None] - delta ** 2 + reg_covar).mean(1)


COVARIANCE_TYPES = {
    "full": _Full(),
    "tied": _Tied(),
    "diag": _Diag(),
    "spherical": _Spherical(),
}


class _Bernoulli:
    """Independent Bernoulli pixels per component: ``means`` (K, D) are the probabilities.

    ``log p(x | k) = sum_d x_d logit(mu_kd) + sum_d log(1 - mu_kd)``: one matrix product per
    block. The M-step is the MAP estimate under a Beta(1 + alpha, 1 + alpha) prior on each
    probability, ``mu = (sum_i r_ik x_i + alpha) / (N_k + 2 alpha)``, which keeps every
    probability in (0, 1) for ``alpha > 0``; with ``alpha = 0`` (maximum likelihood)
    probabilities of exactly 0 or 1 are clamped to ``[eps, 1 - eps]`` of the dtype when
    scoring, so that a pixel never seen on costs about 36 nats (float64) instead of infinity.
    """

    name = "bernoulli"

    def shape(self, k, d):
        return (k, d)

    def moments_shape(self, k, d):
        return (k, 0)                                           # no second moments

    def rows_per_block(self, k, d):
        return (1 << 19) // (k + d)

    def n_parameters(self, k, d):
        return 0                                                # the means are all there is

    def precisions(self, prec_chol):
        return None

    def terms(self, means, prec_chol):
        eps = torch.finfo(means.dtype).eps
        mu = means.clamp(eps, 1.0 - eps)
        log1m = torch.log1p(-mu)
        return log1m.sum(1), mu.log() - log1m                   # (K,), logits (K, D)

    def whiten(self, x, logits):
        """``-2 sum_d x_d logit_kd`` (K, B), so that the E-step's ``const - 0.5 *`` it is the
        log-pmf, and the points themselves for the statistics."""
        return (logits @ x.T).mul_(-2.0), x

    def init_acc(self, k, d, **kw):
        return {"s": torch.zeros(k, d, **kw)}

    def accumulate(self, acc, x, r, y):
        acc["s"] += (r @ x).to(acc["s"].dtype)                 # sum r x, (K, D)

    def finish(self, acc, means, prec_chol):
        s = acc["s"]
        return s, s.new_zeros(s.shape[0], 0), torch.zeros_like(s)

    def centered_moments(self, diff, r):
        return diff.new_zeros(diff.shape[0], 0)

    def maximise(self, stats, nk, alpha):
        ones = stats.shift * stats.nk[:, None] + stats.sum_x    # sum_i r_ik x_i, (K, D)
        means = ((ones + alpha) / (nk[:, None] + 2.0 * alpha)).clamp_(0.0, 1.0)
        return means, None, None

    def log_prior(self, params, alpha):
        """``alpha * sum_kd log(mu_kd (1 - mu_kd))``: the Beta prior's log density, less its
        normalising constant."""
        if alpha == 0:
            return 0.0
        mu = params.means.double()
        return alpha * float((mu.log() + torch.log1p(-mu)).sum())


#: Every component family: the Gaussian covariance types and the Bernoulli.
FAMILIES = {**COVARIANCE_TYPES, "bernoulli": _Bernoulli()}


def _which(bad: Tensor) -> str:
    return ", ".join(str(i) for i in torch.nonzero(bad.reshape(-1)).flatten().tolist())


def _check_spd(prec: Tensor) -> str | None:
    """``None`` if every matrix in ``prec`` (..., D, D) is symmetric positive definite."""
    if not torch.allclose(prec, prec.mT, rtol=1e-5, atol=1e-8):
        return "symmetric"
    if bool((torch.linalg.eigvalsh(prec) <= 0).any()):
        return "positive definite"
    return None


# ============================================================================ E and M steps
def estimate_log_prob(x: Tensor, means: Tensor, precisions_cholesky: Tensor,
                      covariance_type: str) -> Tensor:
    """Log density of each point under each component, (N, K).

    Parameters
    ----------
    x : Tensor, shape (N, D)
    means : Tensor, shape (K, D)
    precisions_cholesky : Tensor
        Shape by covariance type (module docstring).
    covariance_type : {"full", "tied", "diag", "spherical", "bernoulli"}
    """
    ct = FAMILIES[covariance_type]
    k, d = means.shape
    const, prep = ct.terms(means, precisions_cholesky)                 # (K,) or scalar
    out = torch.empty(x.shape[0], k, dtype=x.dtype, device=x.device)
    for sl in _blocks(x.shape[0], _block_size(covariance_type, k, d)):
        maha, _ = ct.whiten(x[sl], prep)                                # (K, B)
        out[sl] = (const - 0.5 * maha.T)
    return out


def weighted_log_prob(x: Tensor, params: MixtureParams) -> Tensor:
    """``log w_k + log p(x | k)``, (N, K); logsumexp over K gives log p(x)."""
    return estimate_log_prob(x, params.means, params.precisions_cholesky,
                             params.covariance_type) + params.weights.log()


def e_step(x: Tensor, params: MixtureParams, *, block_size: int | None = None,
           accumulate_dtype: torch.dtype | None = None) -> SufficientStats:
    """Responsibilities under ``params``, summed into sufficient statistics, block by block.

    Parameters
    ----------
    x : Tensor, shape (N, D)
    params : MixtureParams
    block_size : int, optional
        Rows per block (default: about 2 MiB of intermediates per block).
    accumulate_dtype : torch.dtype, optional
        Dtype of the running sums (default float64: float32 data is summed in float64).

    Returns
    -------
    SufficientStats
        Moments about the current means (full, tied) or about zero (diag, spherical,
        bernoulli), and the data log-likelihood ``sum_i log p(x_i)`` under ``params``.
    """
    ct = FAMILIES[params.covariance_type]
    k, d = params.means.shape
    acc_dtype = accumulate_dtype or torch.float64
    kw = {"dtype": acc_dtype, "device": x.device}
    acc = {"ll": torch.zeros((), **kw), "nk": torch.zeros(k, **kw), **ct.init_acc(k, d, **kw)}
    means, prec_chol = params.means, params.precisions_cholesky
    const, prep = ct.terms(means, prec_chol)
    const = params.weights.log() + const                        # (K,)
    for sl in _blocks(x.shape[0], block_size or _block_size(params.covariance_type, k, d)):
        xb = x[sl]
        maha, y = ct.whiten(xb, prep)                           # (K, B), type-specific
        lp = torch.add(const.unsqueeze(1), maha, alpha=-0.5)    # (K, B) log w_k p(x_b | k)
        top = lp.amax(0)                                        # (B,)
        r = lp.sub_(top).exp_()                                 # unnormalised, in place
        total = r.sum(0)                                        # (B,)
        r.div_(total)                                           # responsibilities (K, B)
        acc["ll"] += (total.log_() + top).sum(dtype=acc_dtype)  # sum_b log p(x_b)
        acc["nk"] += r.sum(1, dtype=acc_dtype)
        ct.accumulate(acc, xb, r, y)
    sum_x, sum_xx, shift = ct.finish(acc, means, prec_chol)
    return SufficientStats(acc["nk"], sum_x, sum_xx, shift, acc["ll"], int(x.shape[0]))


def stats_from_responsibilities(x: Tensor, resp: Tensor, covariance_type: str, *,
                                block_size: int | None = None) -> SufficientStats:
    """Sufficient statistics of given responsibilities (initialisation), centred.

    Two passes: the weighted means first, then second moments about them.

    Parameters
    ----------
    x : Tensor, shape (N, D)
    resp : Tensor, shape (N, K)
        Non-negative, rows summing to one (e.g. one-hot k-means labels).
    """
    ct = FAMILIES[covariance_type]
    n, d = x.shape
    k = resp.shape[1]
    acc_dtype = torch.float64
    nk = resp.sum(0, dtype=acc_dtype)
    shift = ((resp.T @ x).to(acc_dtype) / (nk + 10 * torch.finfo(acc_dtype).eps)[:, None])
    c = shift.to(x.dtype)
    sum_x = torch.zeros(k, d, dtype=acc_dtype, device=x.device)
    sum_xx = torch.zeros(ct.moments_shape(k, d), dtype=acc_dtype, device=x.device)
    for sl in _blocks(n, block_size or _block_size("full", k, d)):
        diff = x[sl].unsqueeze(0) - c.unsqueeze(1)              # (K, B, D)
        r = resp[sl].T                                          # (K, B)
        sum_x += torch.bmm(r.unsqueeze(1), diff).squeeze(1).to(acc_dtype)
        sum_xx += ct.centered_moments(diff, r).to(acc_dtype)
    return SufficientStats(nk, sum_x, sum_xx, shift,
                           torch.tensor(float("nan"), dtype=acc_dtype), n)


def m_step(stats: SufficientStats, covariance_type: str, reg_covar: float, *,
           dtype: torch.dtype | None = None) -> MixtureParams:
    """Maximum-likelihood parameters from sufficient statistics (Bernoulli: MAP, with
    ``reg_covar`` the prior's ``alpha``).

    Computed in the statistics' dtype (float64) and returned in ``dtype`` (default: the
    same). Raises :class:`CovarianceError` when a covariance is not positive definite.
    """
    ct = FAMILIES[covariance_type]
    nk = stats.nk + 10 * torch.finfo(stats.nk.dtype).eps       # as scikit-learn
    means, cov, prec_chol = ct.maximise(stats, nk, reg_covar)
    weights = nk / nk.sum()
    params = MixtureParams(weights, means, cov, prec_chol, covariance_type)
    return params.to(dtype=dtype) if dtype is not None else params


def compute_precision_cholesky(covariances: Tensor, covariance_type: str) -> Tensor:
    """Cholesky factors of the precisions from covariances (shapes: module docstring)."""
    return COVARIANCE_TYPES[covariance_type].precision_cholesky(covariances)


def precision_cholesky_from_precisions(precisions: Tensor, covariance_type: str) -> Tensor:
    """Cholesky factors of given precision matrices (``precisions_init``)."""
    return COVARIANCE_TYPES[covariance_type].from_precisions(precisions)


def run_em(x: Tensor, params: MixtureParams, *, tol: float = 1e-3, max_iter: int = 100,
           reg_covar: float = 1e-6, block_size: int | None = None,
           callback: Callable[[int, float], None] | None = None,
           reduce: Callable[[SufficientStats], SufficientStats] | None = None,
           progress: bool = False, desc: str = "EM") -> EMResult:
    """EM from ``params`` until the mean log-likelihood changes by less than ``tol``.

    Each iteration is one :func:`e_step` (whose log-likelihood, divided by ``N``, is the
    lower bound of that iteration: the likelihood of the parameters it started from) and
    one :func:`m_step`, the same bookkeeping as scikit-learn's ``GaussianMixture``. For a
    Bernoulli mixture the lower bound adds the Beta prior's log density (``alpha * sum
    log(mu (1 - mu))``, divided by ``N``): the MAP objective, which every iteration increases.

    Parameters
    ----------
    x : Tensor, shape (N, D)
    params : MixtureParams
        Starting point, in the dtype and on the device of ``x``.
    tol, max_iter, reg_covar : as :class:`probgen.models.gmm.GaussianMixture`
        (Bernoulli: ``reg_covar`` is ``alpha`` of :class:`probgen.models.bmm.BernoulliMixture`)
    callback : callable(iteration, lower_bound), optional
    reduce : callable(SufficientStats) -> SufficientStats, optional
        Pools the statistics of the data shards before the M-step: with ``x`` one process's
        rows and :meth:`SufficientStats.pooled` over the processes, EM across processes, where
        every process then takes the same M-step and the same stopping decision.
    progress : bool
        Show a bar over the iterations (up to ``max_iter``) with the mean log-likelihood, the
        rate and the time left (:mod:`probgen.progress`: on a terminal only); ``desc`` labels it.

    Returns
    -------
    EMResult
    """
    result = EMResult(params=params)
    family = FAMILIES[params.covariance_type]
    lower_bound = -math.inf
    bar = progress_bar(max_iter, desc=desc, unit="iter", progress=progress)
    for it in range(1, max_iter + 1):
        prev = lower_bound
        stats = e_step(x, result.params, block_size=block_size)
        if reduce is not None:
            stats = reduce(stats)
        lower_bound = (float(stats.log_likelihood)
                       + family.log_prior(result.params, reg_covar)) / stats.n
        if not math.isfinite(lower_bound):
            bar.close()
            raise CovarianceError(
                f"EM's mean log-likelihood is {lower_bound} at iteration {it}: some points "
                "have zero density under every component (a component's covariance is "
                "nearly singular or the data hold extreme values). Increase reg_covar, scale "
                "the data, or use float64.")
        result.params = m_step(stats, params.covariance_type, reg_covar, dtype=x.dtype)
        result.lower_bounds.append(lower_bound)
        result.n_iter = it
        bar.update(1)
        bar.set_postfix(loglik=f"{lower_bound:.6g}", refresh=False)
        if callback is not None:
            callback(it, lower_bound)
        if abs(lower_bound - prev) < tol:
            result.converged = True
            break
    bar.close()
    return result


def start_from_responsibilities(x: Tensor, resp: Tensor, covariance_type: str,
                                reg_covar: float) -> MixtureParams:
    """The M-step of responsibilities ``resp`` (N, K) of ``x`` (N, D): EM's starting point, with
    scikit-learn's initial weights (the masses divided by n_samples, not by their sum)."""
    stats = stats_from_responsibilities(x, resp, covariance_type)
    p = m_step(stats, covariance_type, reg_covar, dtype=x.dtype)
    p.weights = (stats.nk + 10 * torch.finfo(stats.nk.dtype).eps).to(x.dtype) / x.shape[0]
    return p


def best_of_em(x: Tensor, start: Callable[[], MixtureParams], n_init: int, *, tol: float,
               max_iter: int, reg_covar: float,
               reduce: Callable[[SufficientStats], SufficientStats] | None = None,
               progress: bool = False) -> EMResult:
    """:func:`run_em` from ``n_init`` starts (``start()`` gives each), keeping the run whose
    last lower bound is the highest (the first among equals)."""
    best = None
    for i in range(n_init):
        res = run_em(x, start(), tol=tol, max_iter=max_iter, reg_covar=reg_covar, reduce=reduce,
                     progress=progress, desc=f"EM {i + 1}/{n_init}" if n_init > 1 else "EM")
        lb = res.lower_bounds[-1] if res.lower_bounds else -math.inf
        if best is None or lb > best[0]:
            best = (lb, res)
    return best[1]


# ----------------------------------------------------------------------------- starts
# init_params -> function (x (N, D), K, generator) -> responsibilities (N, K)
def _init_kmeans(x: Tensor, k: int, gen: torch.Generator) -> Tensor:
    labels = KMeans(k, n_init=1, random_state=gen, dtype=x.dtype, device=x.device).fit(x).labels_
    return torch.nn.functional.one_hot(labels, k).to(x.dtype)


def _init_kmeans_pp(x: Tensor, k: int, gen: torch.Generator) -> Tensor:
    _, idx = kmeans_plusplus(x, k, generator=gen)
    resp = torch.zeros(x.shape[0], k, dtype=x.dtype, device=x.device)
    resp[idx, torch.arange(k, device=x.device)] = 1.0
    return resp


def _init_random(x: Tensor, k: int, gen: torch.Generator) -> Tensor:
    resp = torch.rand(x.shape[0], k, generator=gen, dtype=x.dtype).to(x.device)
    return resp / resp.sum(1, keepdim=True)


def _init_random_from_data(x: Tensor, k: int, gen: torch.Generator) -> Tensor:
    idx = torch.randperm(x.shape[0], generator=gen)[:k].to(x.device)
    resp = torch.zeros(x.shape[0], k, dtype=x.dtype, device=x.device)
    resp[idx, torch.arange(k, device=x.device)] = 1.0
    return resp


INITIALISERS: dict[str, Callable[[Tensor, int, torch.Generator], Tensor]] = {
    "kmeans": _init_kmeans,              # hard labels of one k-means run (k-means++ seeded)
    "k-means++": _init_kmeans_pp,        # one point per component, chosen by k-means++
    "random": _init_random,              # uniform random responsibilities
    "random_from_data": _init_random_from_data,  # one random point per component
}


def warn_not_converged(n_init: int, max_iter: int, tol: float, stacklevel: int) -> None:
    """The :class:`ConvergenceWarning`, with what to change."""
    warnings.warn(
        f"EM did not converge: the best of {n_init} initialisation(s) was still changing "
        f"its mean log-likelihood by more than tol={tol:g} after max_iter={max_iter} "
        "iterations. Increase max_iter, loosen tol, try other initialisations (n_init, "
        "init_params), or check the data for duplicated or degenerate points.",
        ConvergenceWarning, stacklevel=stacklevel + 1,
    )
