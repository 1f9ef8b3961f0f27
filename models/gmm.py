"""The Gaussian mixture, fitted by maximum likelihood with EM: scikit-learn's estimator, in torch.

:class:`GaussianMixture` means what ``sklearn.mixture.GaussianMixture`` means -- the same
parameters, the same fitted attributes, the same ``score``/``score_samples``/``sample``/
``bic``/``aic``, the same lower bound per iteration from the same starting point -- but it
computes in torch (float64 by default, float32 on request, on the CPU or a CUDA device) and
its E-step is a handful of batched matrix products instead of a loop over components (see
:mod:`probgen.inference.em`).

Arrays in, arrays out: methods that take ``X`` return NumPy arrays for NumPy input and
tensors (on the estimator's device) for tensor input. Fitted attributes are tensors.

Two ``sample`` conventions meet here. scikit-learn's ``sample(n)`` returns ``(X, y)``,
grouped by component, and :meth:`GaussianMixture.sample` keeps that. The evaluation layer's
protocol wants ``sample(n) -> Tensor`` and ``log_prob(x) -> Tensor``; :meth:`GaussianMixture.
as_density` returns a :class:`MixtureDensity` view that speaks the protocol (shuffled draws,
optionally reshaped to the data's per-example shape). The recipe hands that view to the
evaluation layer.

Reference: Bishop, "Pattern Recognition and Machine Learning" (2006), section 9.2;
McLachlan and Peel, "Finite Mixture Models" (2000).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from probgen.errors import ConfigError, DataError, NotFittedError, suggest
from probgen.inference.em import (
    COVARIANCE_TYPES,
    INITIALISERS,
    MixtureParams,
    best_of_em,
    start_from_responsibilities,
    warn_not_converged,
    weighted_log_prob,
)
from probgen.inference.kmeans import as_2d_tensor, make_generator

__all__ = ["GaussianMixture", "MixtureDensity", "INITIALISERS"]


_DTYPES = {"float32": torch.float32, "float64": torch.float64}


# ============================================================================ validation
def int_param(name, value, low, estimator="GaussianMixture"):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"The {name!r} parameter of {estimator} must be an int in the "
                          f"range [{low}, inf). Got {value!r} instead.")


def float_param(name, value, low, estimator="GaussianMixture"):
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= low:
        raise ConfigError(f"The {name!r} parameter of {estimator} must be a float in the "
                          f"range [{low:g}, inf). Got {value!r} instead.")


def choice_param(name, value, choices, estimator="GaussianMixture"):
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(
            f"The {name!r} parameter of {estimator} must be a str among "
            f"{{{', '.join(repr(c) for c in choices)}}}. Got {value!r} instead."
            f"{suggest(value, choices) if isinstance(value, str) else ''}")


def resolve_dtype(dtype, estimator="GaussianMixture") -> torch.dtype:
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    if dtype in (torch.float32, torch.float64):
        return dtype
    raise ConfigError(f"The 'dtype' parameter of {estimator} must be torch.float64 or "
                      f"torch.float32 (or 'float64'/'float32'). Got {dtype!r} instead.")


# ============================================================================ estimator
class GaussianMixture:
    """Gaussian mixture fitted by EM, with scikit-learn's semantics.

    Parameters
    ----------
    n_components : int, default 1
    covariance_type : {"full", "tied", "diag", "spherical"}, default "full"
        One full matrix per component, one shared full matrix, a diagonal per component,
        or one variance per component.
    tol : float, default 1e-3
        EM stops when the mean log-likelihood per point changes by less than ``tol``.
    reg_covar : float, default 1e-6
        Added to the diagonal of every covariance (keeps them positive definite).
    max_iter : int, default 100
        EM iterations per initialisation (0: only initialise).
    n_init : int, default 1
        Initialisations; the one with the best final lower bound is kept.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default "kmeans"
        Starting responsibilities: hard labels from one k-means run, one k-means++ point per
        component, random soft responsibilities, or one random point per component.
    weights_init : array-like, shape (n_components,), optional
    means_init : array-like, shape (n_components, n_features), optional
    precisions_init : array-like, optional
        Inverse covariances, shaped by ``covariance_type`` as in scikit-learn:
        full (K, D, D), tied (D, D), diag (K, D), spherical (K,). Given initial values
        replace those computed from ``init_params``; with all three given no
        initialisation runs.
    random_state : None, int or torch.Generator
        Seeds the initialisation.
    device : str or torch.device, optional
        Where to compute (default: the device of a tensor ``X``, else the CPU).
    dtype : torch.float64 (default) or torch.float32
        float64 agrees with scikit-learn to rounding; float32 is faster, especially on a
        GPU, and its sums are still accumulated in float64 (its diag/spherical E-step can
        lose accuracy for clusters much narrower than their distance from the origin).

    Attributes
    ----------
    weights_ : Tensor, shape (n_components,)
    means_ : Tensor, shape (n_components, n_features)
    covariances_, precisions_, precisions_cholesky_ : Tensor
        Shaped by ``covariance_type``; ``precisions_cholesky_`` is upper triangular.
    converged_ : bool
    n_iter_ : int
        EM iterations of the kept initialisation.
    lower_bound_ : float
        Mean log-likelihood per point at the start of the last iteration of the kept
        initialisation (as scikit-learn: the parameters before the final M-step).
    lower_bounds_ : list of float
        That value at every iteration of the kept initialisation.
    n_features_in_ : int

    Examples
    --------
    >>> gm = GaussianMixture(3, covariance_type="diag", random_state=0).fit(X)  # doctest: +SKIP
    >>> gm.score(X), gm.bic(X)                                                 # doctest: +SKIP
    >>> evaluate(gm.as_density(), data)                                        # doctest: +SKIP
    """

    def __init__(self, n_components: int = 1, *, covariance_type: str = "full",
                 tol: float = 1e-3, reg_covar: float = 1e-6, max_iter: int = 100,
                 n_init: int = 1, init_params: str = "kmeans", weights_init=None,
                 means_init=None, precisions_init=None, random_state=None, device=None,
                 dtype: torch.dtype = torch.float64):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self._validate_params()

    def __repr__(self) -> str:
        return (f"GaussianMixture(n_components={self.n_components}, covariance_type="
                f"{self.covariance_type!r}, dtype={self.dtype})")

    # ------------------------------------------------------------------ validation
    def _validate_params(self) -> None:
        int_param("n_components", self.n_components, 1)
        choice_param("covariance_type", self.covariance_type, tuple(COVARIANCE_TYPES))
        float_param("tol", self.tol, 0.0)
        float_param("reg_covar", self.reg_covar, 0.0)
        int_param("max_iter", self.max_iter, 0)
        int_param("n_init", self.n_init, 1)
        choice_param("init_params", self.init_params, tuple(INITIALISERS))
        resolve_dtype(self.dtype)

    def _device(self, X) -> torch.device:
        if self.device is not None:
            from probgen.devices import resolve_device

            return resolve_device(str(self.device))
        return X.device if isinstance(X, Tensor) else torch.device("cpu")

    def _check_inits(self, d: int, dev, dtype) -> dict:
        """The user's initial values as tensors, checked against (K, D)."""
        k = self.n_components
        ct = COVARIANCE_TYPES[self.covariance_type]
        out = {}
        specs = (("weights_init", (k,)), ("means_init", (k, d)),
                 ("precisions_init", ct.shape(k, d)))
        for name, shape in specs:
            value = getattr(self, name)
            if value is None:
                continue
            t = torch.as_tensor(value.detach().cpu().numpy() if isinstance(value, Tensor)
                                else value).to(device=dev, dtype=dtype)
            if tuple(t.shape) != tuple(shape):
                what = "" if name != "precisions_init" else f" for covariance_type={self.covariance_type!r}"
                raise ConfigError(f"{name} must have shape {tuple(shape)} (n_components={k}, "
                                  f"n_features={d}){what}; got {tuple(t.shape)}.")
            if not bool(torch.isfinite(t).all()):
                raise ConfigError(f"{name} holds NaN or infinite values.")
            out[name] = t
        w = out.get("weights_init")
        if w is not None:
            if bool((w < 0).any()) or bool((w > 1).any()):
                raise ConfigError(f"weights_init must lie in [0, 1]; got values from "
                                  f"{float(w.min()):.5g} to {float(w.max()):.5g}.")
            atol = 1e-6 if dtype == torch.float32 else 1e-8
            if abs(float(w.sum()) - 1.0) > atol:
                raise ConfigError(f"weights_init must sum to 1; got sum {float(w.sum()):.8g}. "
                                  "Divide it by its sum.")
        p = out.get("precisions_init")
        if p is not None:
            problem = ct.check_precisions(p)
            if problem is not None:
                raise ConfigError(f"precisions_init for covariance_type="
                                  f"{self.covariance_type!r} must be {problem}.")
        return out

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None, *, processes=None, progress: bool = False) -> GaussianMixture:
        """Fit by EM, ``n_init`` times, keeping the best lower bound; returns ``self``.

        Parameters
        ----------
        X : array-like or Tensor, shape (n_samples, n_features)
        y : ignored
        processes : probgen.inference.loop.ProcessGroup, optional
            Across processes (``torchrun``; :func:`probgen.distributed.process_group` gives
            the hooks): every process passes the same full ``X``; the initialisation is
            computed from it (the same on all), and each E-step runs on this process's share
            of the rows, with the sufficient statistics summed over processes. The fit is
            that of one process, to rounding. ``None`` or one process: all rows here.
        progress : bool
            Show a bar over the EM iterations of each initialisation (on a terminal only;
            :mod:`probgen.progress`).
        """
        self._fit(X, stacklevel=3, processes=processes, progress=progress)
        return self

    def fit_predict(self, X, y=None):
        """Fit, then the most probable component of each row of ``X``, (n_samples,)."""
        self._fit(X, stacklevel=3)
        return self.predict(X)

    def _fit(self, X, *, stacklevel: int, processes=None, progress: bool = False) -> None:
        self._validate_params()
        dtype = resolve_dtype(self.dtype)
        dev = self._device(X)
        x = as_2d_tensor(X, dtype=dtype, device=dev, estimator=type(self).__name__)
        self._check_values(x)
        n, d = x.shape
        if n < max(2, self.n_components):
            raise DataError(f"{type(self).__name__} needs n_samples >= max(2, n_components); got "
                            f"n_samples={n} with n_components={self.n_components}. Use more "
                            "data or fewer components.")
        inits = self._check_inits(d, dev, dtype)
        gen = make_generator(self.random_state)
        x_em, reduce = x, None
        if processes is not None and processes.distributed:
            x_em = x.tensor_split(processes.world_size)[processes.rank]  # (about N / world, D)

            def reduce(stats):
                return stats.pooled(processes.all_reduce_sum)
        res = best_of_em(x_em, lambda: self._initial_params(x, inits, gen), self.n_init,
                         tol=self.tol, max_iter=self.max_iter, reg_covar=self._regularisation(),
                         reduce=reduce, progress=progress)
        lb = res.lower_bounds[-1] if res.lower_bounds else -math.inf
        self._set_params(res.params)
        self.converged_ = bool(res.converged)
        self.n_iter_ = int(res.n_iter)
        self.lower_bound_ = float(lb)
        self.lower_bounds_ = list(res.lower_bounds)
        self.n_features_in_ = d
        if not self.converged_ and self.max_iter > 0:
            warn_not_converged(self.n_init, self.max_iter, self.tol, stacklevel=stacklevel)

    def _check_values(self, x: Tensor) -> None:
        """Hook for a family's own check of the data values (any finite value fits here)."""

    def _regularisation(self) -> float:
        """What :func:`~probgen.inference.em.run_em` gets as ``reg_covar``."""
        return self.reg_covar

    def _initial_params(self, x: Tensor, inits: dict, gen: torch.Generator) -> MixtureParams:
        ct = COVARIANCE_TYPES[self.covariance_type]
        if len(inits) < 3:
            resp = INITIALISERS[self.init_params](x, self.n_components, gen)
            p = start_from_responsibilities(x, resp, self.covariance_type, self.reg_covar)
        else:
            p = MixtureParams(None, None, None, None, self.covariance_type)
        if "weights_init" in inits:
            p.weights = inits["weights_init"]
        if "means_init" in inits:
            p.means = inits["means_init"]
        if "precisions_init" in inits:
            p.precisions_cholesky = ct.from_precisions(inits["precisions_init"])
            p.covariances = ct.covariances(p.precisions_cholesky)
        return p

    def _set_params(self, p: MixtureParams) -> None:
        self.weights_ = p.weights
        self.means_ = p.means
        self.covariances_ = p.covariances
        self.precisions_cholesky_ = p.precisions_cholesky
        self.precisions_ = p.precisions

    @property
    def params_(self) -> MixtureParams:
        """The fitted parameters as one :class:`~probgen.inference.em.MixtureParams` record."""
        self._check_fitted("params_")
        return MixtureParams(self.weights_, self.means_, self.covariances_,
                             self.precisions_cholesky_, self.covariance_type)

    # ------------------------------------------------------------------ scoring
    def _check_fitted(self, what: str) -> None:
        if not hasattr(self, "means_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet: call "
                                 f"fit(X) before {what}.")

    def _input(self, X, what: str) -> Tensor:
        self._check_fitted(what)
        x = as_2d_tensor(X, dtype=self.means_.dtype, device=self.means_.device,
                         estimator=type(self).__name__)
        if x.shape[1] != self.n_features_in_:
            raise DataError(f"X has {x.shape[1]} features, but this {type(self).__name__} was "
                            f"fitted with {self.n_features_in_}.")
        self._check_values(x)
        return x

    @staticmethod
    def _out(t: Tensor, like):
        return t if isinstance(like, Tensor) else t.detach().cpu().numpy()

    def _weighted(self, X, what: str) -> Tensor:
        return weighted_log_prob(self._input(X, what), self.params_)

    def score_samples(self, X):
        """Log density ``log p(x)`` of each row of ``X``, (n_samples,), nats."""
        return self._out(torch.logsumexp(self._weighted(X, "score_samples"), 1), X)

    def score(self, X, y=None) -> float:
        """Mean log density per row of ``X`` (nats)."""
        return float(torch.logsumexp(self._weighted(X, "score"), 1).mean(dtype=torch.float64))

    def predict(self, X):
        """Most probable component of each row, (n_samples,)."""
        return self._out(self._weighted(X, "predict").argmax(1), X)

    def predict_proba(self, X):
        """Posterior probability of each component, (n_samples, n_components); rows sum to 1."""
        return self._out(torch.softmax(self._weighted(X, "predict_proba"), 1), X)

    def log_prob(self, x: Tensor) -> Tensor:
        """Evaluation protocol: ``log p(x)`` per example (N,), nats, as a tensor."""
        return torch.logsumexp(self._weighted(x, "log_prob"), 1)

    def _n_parameters(self) -> int:
        k, d = self.means_.shape
        cov = COVARIANCE_TYPES[self.covariance_type].n_parameters(k, d)
        return int(cov + k * d + k - 1)

    def bic(self, X) -> float:
        """Bayesian information criterion ``-2 N score(X) + p ln N`` (lower is better)."""
        n = len(X)
        return -2.0 * self.score(X) * n + self._n_parameters() * math.log(n)

    def aic(self, X) -> float:
        """Akaike information criterion ``-2 N score(X) + 2 p`` (lower is better)."""
        return -2.0 * self.score(X) * len(X) + 2.0 * self._n_parameters()

    # ------------------------------------------------------------------ sampling
    def sample(self, n_samples: int = 1, *, generator: torch.Generator | None = None
               ) -> tuple[Tensor, Tensor]:
        """Draw from the fitted mixture, grouped by component (scikit-learn's convention).

        Parameters
        ----------
        n_samples : int
        generator : torch.Generator, optional
            A CPU generator (default: torch's global random state; scikit-learn instead
            reseeds from ``random_state`` on every call).

        Returns
        -------
        X : Tensor, shape (n_samples, n_features)
        y : LongTensor, shape (n_samples,)
            Component of each draw, non-decreasing; component ``k`` appears about
            ``n_samples * weights_[k]`` times.
        """
        self._check_fitted("sample")
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ConfigError(f"n_samples must be a positive int; got {n_samples!r}.")
        ct = COVARIANCE_TYPES[self.covariance_type]
        k, d = self.means_.shape
        dev, dtype = self.means_.device, self.means_.dtype
        labels = torch.multinomial(self.weights_.double().cpu(), n_samples, replacement=True,
                                   generator=generator)
        counts = torch.bincount(labels, minlength=k).tolist()
        y = torch.repeat_interleave(torch.arange(k), torch.tensor(counts)).to(dev)
        z = torch.randn(n_samples, d, generator=generator, dtype=dtype).to(dev)
        scale = ct.scale(self.precisions_cholesky_, k)
        x = torch.empty_like(z)
        start = 0
        for j, c in enumerate(counts):  # K contiguous groups
            if c:
                x[start:start + c] = self.means_[j] + ct.transform(z[start:start + c], scale, j)
                start += c
        return x, y

    def as_density(self, event_shape: tuple[int, ...] | None = None,
                   sample_dtype: torch.dtype = torch.float32) -> MixtureDensity:
        """The evaluation-protocol view: ``log_prob(x)`` and ``sample(n) -> Tensor``."""
        self._check_fitted("as_density")
        return MixtureDensity(self, event_shape=event_shape, sample_dtype=sample_dtype)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Tensor]:
        """The fitted state as tensors only (checkpoints load with ``weights_only=True``)."""
        self._check_fitted("state_dict")
        return {
            "weights": self.weights_, "means": self.means_,
            "covariances": self.covariances_, "precisions_cholesky": self.precisions_cholesky_,
            "lower_bounds": torch.tensor(self.lower_bounds_, dtype=torch.float64),
            "converged": torch.tensor(self.converged_), "n_iter": torch.tensor(self.n_iter_),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> GaussianMixture:
        """Restore a fitted state written by :meth:`state_dict`; returns ``self``."""
        k, d = state["means"].shape
        ct = COVARIANCE_TYPES[self.covariance_type]
        expected = ct.shape(self.n_components, d)
        if k != self.n_components or tuple(state["covariances"].shape) != tuple(expected):
            raise ConfigError(
                f"the saved mixture has means {tuple(state['means'].shape)} and covariances "
                f"{tuple(state['covariances'].shape)}, which do not fit n_components="
                f"{self.n_components}, covariance_type={self.covariance_type!r}.")
        dev = self._device(state["means"]) if self.device is not None else state["means"].device
        dtype = resolve_dtype(self.dtype)
        p = MixtureParams(state["weights"], state["means"], state["covariances"],
                          state["precisions_cholesky"], self.covariance_type).to(dev, dtype)
        self._set_params(p)
        self.lower_bounds_ = [float(v) for v in state["lower_bounds"]]
        self.lower_bound_ = self.lower_bounds_[-1] if self.lower_bounds_ else -math.inf
        self.converged_ = bool(state["converged"])
        self.n_iter_ = int(state["n_iter"])
        self.n_features_in_ = d
        return self


class MixtureDensity:
    """A fitted :class:`GaussianMixture` (or
    :class:`~probgen.models.bmm.BernoulliMixture`) seen through the evaluation protocol.

    Parameters
    ----------
    mixture : GaussianMixture or BernoulliMixture
        Fitted.
    event_shape : tuple of int, optional
        Per-example shape of the data (e.g. ``(1, 28, 28)``): ``log_prob`` flattens its
        input from ``(N, *event_shape)`` and ``sample`` returns that shape. Default
        ``(n_features,)``.
    sample_dtype : torch.dtype
        Dtype of the draws (default float32, the data sets' dtype).
    """

    def __init__(self, mixture: GaussianMixture, *, event_shape=None,
                 sample_dtype: torch.dtype = torch.float32):
        self.mixture = mixture
        self.event_shape = tuple(event_shape) if event_shape else (mixture.n_features_in_,)
        self.sample_dtype = sample_dtype

    @property
    def n_components(self) -> int:
        return self.mixture.n_components

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` per example, (N,), nats; x (N, *event_shape)."""
        return self.mixture.log_prob(x.reshape(x.shape[0], -1))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws in random order, (n, *event_shape)."""
        x, _ = self.mixture.sample(n, generator=generator)
        order = torch.randperm(n, generator=generator).to(x.device)
        return x[order].to(self.sample_dtype).reshape(n, *self.event_shape)
