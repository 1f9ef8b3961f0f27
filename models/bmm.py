"""The mixture of Bernoullis, fitted by EM: the maximum-likelihood baseline for binary images.

``p(x) = sum_k w_k prod_d mu_kd^x_d (1 - mu_kd)^(1 - x_d)`` for ``x`` in {0, 1}^D
(Bishop, "Pattern Recognition and Machine Learning", 2006, section 9.3.3; McLachlan and
Peel, "Finite Mixture Models", 2000). :class:`BernoulliMixture` has the estimator API of
:class:`~probgen.models.gmm.GaussianMixture` -- ``fit``, ``fit_predict``, ``score``,
``score_samples``, ``predict``, ``predict_proba``, ``sample``, ``log_prob``, ``bic``/``aic``,
``n_init``, ``tol``, ``max_iter``, ``init_params``, ``random_state``, ``state_dict`` -- and
runs through the same EM loop (:mod:`probgen.inference.em`, the ``"bernoulli"`` family):
sufficient statistics summed block by block in log space, the same data-parallel reduction.

The M-step is a MAP estimate: each probability has a Beta(1 + alpha, 1 + alpha) prior, so
``mu_kd = (sum_i r_ik x_id + alpha) / (N_k + 2 alpha)`` stays inside (0, 1) and a test image
with a pixel that no training image of a component had on still gets a finite probability.
What EM never decreases is then the penalised objective, and that is what ``lower_bounds_``
holds: ``(sum_i log p(x_i) + alpha * sum_kd log(mu_kd (1 - mu_kd))) / N``. ``score`` and
``log_prob`` are the plain log-likelihood. ``alpha=0`` is maximum likelihood.

The data must be 0/1: grey values are refused with a message that says to binarise them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from probgen.errors import ConfigError, DataError
from probgen.inference.em import MixtureParams, m_step, stats_from_responsibilities
from probgen.models.gmm import (
    INITIALISERS,
    GaussianMixture,
    choice_param,
    float_param,
    int_param,
    resolve_dtype,
)

__all__ = ["BernoulliMixture"]

_NAME = "BernoulliMixture"


class BernoulliMixture(GaussianMixture):
    """Mixture of independent Bernoullis fitted by EM (MAP with a Beta prior).

    Parameters
    ----------
    n_components : int, default 1
    alpha : float, default 0.1
        Smoothing: a Beta(1 + alpha, 1 + alpha) prior on every probability, whose MAP
        estimate is ``(sum_i r_ik x_id + alpha) / (N_k + 2 alpha)``; ``1`` is Laplace's rule,
        ``0`` maximum likelihood (probabilities of exactly 0 or 1 are then clamped to
        ``[eps, 1 - eps]`` of the dtype when scoring). EM never decreases the penalised
        objective (``lower_bounds_``); with ``alpha > 0`` the plain log-likelihood can dip.
    tol : float, default 1e-3
        EM stops when the objective per point changes by less than ``tol``.
    max_iter : int, default 100
        EM iterations per initialisation (0: only initialise).
    n_init : int, default 1
        Initialisations; the one with the best final objective is kept.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default "kmeans"
        Starting responsibilities, as :class:`~probgen.models.gmm.GaussianMixture`.
    weights_init : array-like, shape (n_components,), optional
    means_init : array-like, shape (n_components, n_features), optional
        Initial probabilities in [0, 1]; with both given no initialisation runs.
    random_state : None, int or torch.Generator
    device : str or torch.device, optional
    dtype : torch.float64 (default) or torch.float32

    Attributes
    ----------
    weights_ : Tensor, shape (n_components,)
    means_ : Tensor, shape (n_components, n_features)
        The probability of a 1 in each feature, per component.
    converged_, n_iter_, lower_bound_, lower_bounds_, n_features_in_
        As :class:`~probgen.models.gmm.GaussianMixture`; the bounds are the penalised
        objective per point (module docstring).
    """

    covariance_type = "bernoulli"

    def __init__(self, n_components: int = 1, *, alpha: float = 0.1, tol: float = 1e-3,
                 max_iter: int = 100, n_init: int = 1, init_params: str = "kmeans",
                 weights_init=None, means_init=None, random_state=None, device=None,
                 dtype: torch.dtype = torch.float64):
        self.n_components = n_components
        self.alpha = alpha
        self.tol = tol
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self._validate_params()

    def __repr__(self) -> str:
        return f"BernoulliMixture(n_components={self.n_components}, alpha={self.alpha:g}, dtype={self.dtype})"

    def _validate_params(self) -> None:
        int_param("n_components", self.n_components, 1, _NAME)
        float_param("alpha", self.alpha, 0.0, _NAME)
        float_param("tol", self.tol, 0.0, _NAME)
        int_param("max_iter", self.max_iter, 0, _NAME)
        int_param("n_init", self.n_init, 1, _NAME)
        choice_param("init_params", self.init_params, tuple(INITIALISERS), _NAME)
        resolve_dtype(self.dtype, _NAME)
        if not math.isfinite(self.alpha) or not math.isfinite(self.tol):
            raise ConfigError(f"alpha and tol of {_NAME} must be finite; got alpha="
                              f"{self.alpha!r}, tol={self.tol!r}.")

    def _regularisation(self) -> float:
        return float(self.alpha)

    def _check_values(self, x: Tensor) -> None:
        """0/1 data only: anything else is a :class:`DataError` that says to binarise."""
        bad = (x != 0) & (x != 1)
        if bool(bad.any()):
            rows = bad.any(1)
            first = int(rows.nonzero()[0, 0])
            value = float(x[first][bad[first]][0])
            raise DataError(
                f"{_NAME} models binary data, but X holds {int(bad.sum())} value(s) other than "
                f"0 and 1 in {int(rows.sum())} row(s) (the first in row {first}: {value:.4g}). "
                "Binarise the data first: on the command line --binarize fixed (the default of "
                "`probgen train bmm`), in Python (X > 0.5) or torch.bernoulli(X) once.")

    def _check_inits(self, d: int, dev, dtype) -> dict:
        k = self.n_components
        out = {}
        for name, shape in (("weights_init", (k,)), ("means_init", (k, d))):
            value = getattr(self, name)
            if value is None:
                continue
            t = torch.as_tensor(value.detach().cpu().numpy() if isinstance(value, Tensor)
                                else value).to(device=dev, dtype=dtype)
            if tuple(t.shape) != shape:
                raise ConfigError(f"{name} must have shape {shape} (n_components={k}, "
                                  f"n_features={d}); got {tuple(t.shape)}.")
            if not bool(torch.isfinite(t).all()):
                raise ConfigError(f"{name} holds NaN or infinite values.")
            if bool((t < 0).any()) or bool((t > 1).any()):
                raise ConfigError(f"{name} must lie in [0, 1]; got values from "
                                  f"{float(t.min()):.5g} to {float(t.max()):.5g}.")
            out[name] = t
        w = out.get("weights_init")
        if w is not None:
            atol = 1e-6 if dtype == torch.float32 else 1e-8
            if abs(float(w.sum()) - 1.0) > atol:
                raise ConfigError(f"weights_init must sum to 1; got sum {float(w.sum()):.8g}. "
                                  "Divide it by its sum.")
        return out

    def _initial_params(self, x: Tensor, inits: dict, gen: torch.Generator) -> MixtureParams:
        if len(inits) < 2:
            resp = INITIALISERS[self.init_params](x, self.n_components, gen)
            stats = stats_from_responsibilities(x, resp, "bernoulli")
            p = m_step(stats, "bernoulli", float(self.alpha), dtype=x.dtype)
        else:
            p = MixtureParams(None, None, None, None, "bernoulli")
        if "weights_init" in inits:
            p.weights = inits["weights_init"]
        if "means_init" in inits:
            p.means = inits["means_init"]
        return p

    def _set_params(self, p: MixtureParams) -> None:
        self.weights_ = p.weights
        self.means_ = p.means

    @property
    def params_(self) -> MixtureParams:
        """The fitted parameters as one :class:`~probgen.inference.em.MixtureParams` record."""
        self._check_fitted("params_")
        return MixtureParams(self.weights_, self.means_, None, None, "bernoulli")

    def _n_parameters(self) -> int:
        k, d = self.means_.shape
        return int(k * d + k - 1)

    def score_samples(self, X):
        """Log probability ``log p(x)`` of each 0/1 row of ``X``, (n_samples,), nats."""
        return super().score_samples(X)

    def sample(self, n_samples: int = 1, *, generator: torch.Generator | None = None
               ) -> tuple[Tensor, Tensor]:
        """0/1 draws from the fitted mixture, grouped by component.

        Returns ``X`` (n_samples, n_features) in the mixture's dtype and ``y`` (n_samples,),
        the component of each draw, non-decreasing (scikit-learn's convention).
        """
        self._check_fitted("sample")
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ConfigError(f"n_samples must be a positive int; got {n_samples!r}.")
        labels = torch.multinomial(self.weights_.double().cpu(), n_samples, replacement=True,
                                   generator=generator)
        y = labels.sort().values
        probs = self.means_.detach().cpu()[y]                     # (n, D)
        x = torch.bernoulli(probs, generator=generator)
        return x.to(self.means_.device), y.to(self.means_.device)

    def state_dict(self) -> dict[str, Tensor]:
        """The fitted state as tensors only (checkpoints load with ``weights_only=True``)."""
        self._check_fitted("state_dict")
        return {
            "weights": self.weights_, "means": self.means_,
            "lower_bounds": torch.tensor(self.lower_bounds_, dtype=torch.float64),
            "converged": torch.tensor(self.converged_), "n_iter": torch.tensor(self.n_iter_),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> BernoulliMixture:
        """Restore a fitted state written by :meth:`state_dict`; returns ``self``."""
        k, d = state["means"].shape
        if k != self.n_components or tuple(state["weights"].shape) != (k,):
            raise ConfigError(
                f"the saved mixture has means {tuple(state['means'].shape)} and weights "
                f"{tuple(state['weights'].shape)}, which do not fit n_components="
                f"{self.n_components}.")
        dev = self._device(state["means"]) if self.device is not None else state["means"].device
        dtype = resolve_dtype(self.dtype, _NAME)
        self._set_params(MixtureParams(state["weights"], state["means"], None, None,
                                       "bernoulli").to(dev, dtype))
        self.lower_bounds_ = [float(v) for v in state["lower_bounds"]]
        self.lower_bound_ = self.lower_bounds_[-1] if self.lower_bounds_ else -math.inf
        self.converged_ = bool(state["converged"])
        self.n_iter_ = int(state["n_iter"])
        self.n_features_in_ = d
        return self
