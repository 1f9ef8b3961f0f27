"""Probabilistic PCA (Tipping & Bishop, "Probabilistic principal component analysis", JRSS B
61(3), 1999): the linear-Gaussian latent-variable model whose every quantity has a closed form,
so it is the exact oracle for the bounds of :mod:`probgen.inference.bounds`.

The model::

    z ~ N(0, I_L),    x | z ~ N(W z + mu, s^2 I_D)      =>      x ~ N(mu, W W^T + s^2 I_D)

written as a Pyro ``model(x)`` / ``guide(x)`` pair like the VAE, with a linear-Gaussian
guide ``q(z|x) = N(A x + b, C)`` (``C`` full, ``guide="full"``, or diagonal,
``guide="diagonal"``). The exact posterior is (Tipping & Bishop, eq. 6 and appendix)::

    p(z|x) = N(M^{-1} W^T (x - mu), s^2 M^{-1}),      M = W^T W + s^2 I_L

so a full guide can be exact; a diagonal one cannot when M is not diagonal, and then
KL(q(z|x) || p(z|x)) > 0 is known in closed form.

Fit it in closed form (:meth:`PPCA.fit`, the maximum-likelihood solution of eq. 7-8 from
the eigen-decomposition of the sample covariance) or by SVI on ``model``/``guide``
(:func:`probgen.inference.svi.fit_svi`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from probgen.errors import ConfigError, DataError, NotFittedError
from probgen.inference.bounds import LatentBounds

__all__ = ["PPCA", "GUIDES"]

GUIDES = ("full", "diagonal")
_MIN_NOISE = 1e-6  # floor on s^2


def _inv_softplus(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


class _Generative(nn.Module):
    """W (D, L), mu (D,), s = softplus(raw) + floor."""

    def __init__(self, dim: int, latent_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dim, latent_dim) / math.sqrt(dim))
        self.mean = nn.Parameter(torch.zeros(dim))
        self.raw_noise = nn.Parameter(_inv_softplus(torch.tensor(1.0)))

    @property
    def noise_std(self) -> torch.Tensor:
        return F.softplus(self.raw_noise) + math.sqrt(_MIN_NOISE)


class _LinearGaussianEncoder(nn.Module):
    """q(z|x) = N(A x + b, C): A (L, D), b (L,), C = L L^T (full) or diag(c^2)."""

    def __init__(self, dim: int, latent_dim: int, guide: str):
        super().__init__()
        self.guide = guide
        self.weight = nn.Parameter(torch.zeros(latent_dim, dim))
        self.bias = nn.Parameter(torch.zeros(latent_dim))
        # unconstrained: the strict lower triangle as is, the diagonal through softplus
        self.raw_scale = nn.Parameter(
            torch.zeros(latent_dim, latent_dim) if guide == "full" else torch.zeros(latent_dim))

    def loc(self, xf: torch.Tensor) -> torch.Tensor:
        return xf @ self.weight.T + self.bias  # (N, D) -> (N, L)

    def scale(self) -> torch.Tensor:
        """(L, L) lower-triangular Cholesky factor (full) or (L,) standard deviations."""
        if self.guide == "full":
            diag = F.softplus(self.raw_scale.diagonal()) + 1e-6
            return self.raw_scale.tril(-1) + torch.diag_embed(diag)
        return F.softplus(self.raw_scale) + 1e-6

    def set_scale(self, scale: torch.Tensor) -> None:
        with torch.no_grad():
            if self.guide == "full":
                d = scale.diagonal().clamp_min(2e-6) - 1e-6
                self.raw_scale.copy_(scale.tril(-1) + torch.diag_embed(_inv_softplus(d)))
            else:
                self.raw_scale.copy_(_inv_softplus(scale.clamp_min(2e-6) - 1e-6))

    def distribution(self, xf: torch.Tensor, module=torch.distributions):
        loc = self.loc(xf)
        scale = self.scale()
        if self.guide == "full":
            return module.MultivariateNormal(loc, scale_tril=scale.expand(loc.shape[0], -1, -1))
        return module.Independent(module.Normal(loc, scale.expand_as(loc)), 1)


class PPCA(LatentBounds, nn.Module):
    """Probabilistic PCA with a linear-Gaussian guide.

    Parameters
    ----------
    data_shape : int or tuple of int
        D, or the shape of one example (flattened to D values).
    latent_dim : int
        L < D.
    guide : {"full", "diagonal"}
        Covariance of q(z|x): full (can equal the exact posterior) or diagonal (mean field).

    Attributes
    ----------
    weight : Tensor (D, L)
        W. ``mean`` (D,) is mu and ``noise_std`` is s.
    """

    def __init__(self, data_shape: int | Sequence[int], latent_dim: int, *, guide: str = "full"):
        super().__init__()
        self.data_shape = (int(data_shape),) if isinstance(data_shape, int) else tuple(data_shape)
        self.dim = math.prod(self.data_shape)
        if not isinstance(latent_dim, int) or not 1 <= latent_dim < self.dim:
            raise ConfigError(f"latent_dim must be an integer in [1, {self.dim - 1}] (below the data "
                              f"dimension {self.dim}); got {latent_dim!r}.")
        if guide not in GUIDES:
            raise ConfigError(f"guide must be one of {', '.join(GUIDES)}; got {guide!r}.")
        self.latent_dim = latent_dim
        self.generative = _Generative(self.dim, latent_dim)
        self.recognition = _LinearGaussianEncoder(self.dim, latent_dim, guide)
        self.fitted_ = False

    # -- parameters
    @property
    def weight(self) -> torch.Tensor:
        return self.generative.weight

    @property
    def mean(self) -> torch.Tensor:
        return self.generative.mean

    @property
    def noise_std(self) -> torch.Tensor:
        return self.generative.noise_std

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.data_shape and tuple(x.shape[1:]) != (self.dim,):
            shape = ", ".join(map(str, self.data_shape))
            raise DataError(f"x must have shape (N, {shape}) or (N, {self.dim}), the data shape this "
                            f"PPCA was built for; got {tuple(x.shape)}. Reshape x, or build the model "
                            "with the data's own shape.")
        return x.reshape(x.shape[0], self.dim)  # (N, D)

    @classmethod
    @torch.no_grad()
    def from_parameters(cls, weight: torch.Tensor, mean: torch.Tensor, noise_std: float, *,
                        guide: str = "full") -> PPCA:
        """The model with W = ``weight`` (D, L), mu = ``mean`` (D,) and s = ``noise_std``, in
        ``weight``'s dtype, with the guide set to the posterior (:meth:`set_guide_to_posterior`):
        a known linear-Gaussian model, e.g. to simulate data from or to check an estimator
        against its exact ``log_prob``."""
        weight, mean = torch.as_tensor(weight), torch.as_tensor(mean)
        if weight.dim() != 2 or mean.shape != weight.shape[:1]:
            raise ConfigError(f"weight must be (D, L) and mean (D,); got {tuple(weight.shape)} and "
                              f"{tuple(mean.shape)}.")
        floor = math.sqrt(_MIN_NOISE)
        if not float(noise_std) > floor:
            raise ConfigError(f"noise_std must be above {floor}; got {noise_std!r}.")
        model = cls(weight.shape[0], weight.shape[1], guide=guide).to(weight.dtype)
        g = model.generative
        g.weight.copy_(weight)
        g.mean.copy_(mean)
        g.raw_noise.copy_(_inv_softplus(torch.tensor(float(noise_std) - floor, dtype=weight.dtype)))
        model.set_guide_to_posterior()
        model.fitted_ = True
        return model

    # -- closed-form maximum likelihood
    @torch.no_grad()
    def fit(self, x: torch.Tensor, *, rotation: torch.Tensor | None = None) -> PPCA:
        """Maximum-likelihood W, mu, s^2 (Tipping & Bishop eq. 7-8), and the best guide.

        mu is the sample mean; with S = U diag(lambda) U^T the sample covariance (1/N),
        s^2 is the mean of the D - L smallest eigenvalues and W = U_L (Lambda_L - s^2 I)^{1/2} R.

        Parameters
        ----------
        x : Tensor (N, *data_shape)
        rotation : Tensor (L, L), optional
            The arbitrary orthogonal R of the solution (default I). With R = I, W^T W is
            diagonal and so is the posterior covariance; another R correlates the latents.

        The guide is set to the best member of its family: the exact posterior (full), or
        the exact posterior mean with the mean-field variances s^2 / M_ii (diagonal).
        Returns ``self``.
        """
        xf = self._flat(x).double()
        n = xf.shape[0]
        if n < 2:
            raise DataError(f"fit needs at least 2 examples; got {n}.")
        mu = xf.mean(0)
        xc = xf - mu
        cov = xc.T @ xc / n  # (D, D)
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
        L = self.latent_dim
        s2 = max(float(evals[L:].mean()), _MIN_NOISE)
        w = evecs[:, :L] * (evals[:L] - s2).clamp_min(0).sqrt()  # (D, L)
        if rotation is not None:
            r = rotation.double()
            if r.shape != (L, L) or not torch.allclose(r @ r.T, torch.eye(L, dtype=r.dtype), atol=1e-6):
                raise ConfigError(f"rotation must be an orthogonal ({L}, {L}) matrix.")
            w = w @ r
        g = self.generative
        dtype = g.weight.dtype
        g.weight.copy_(w.to(dtype))
        g.mean.copy_(mu.to(dtype))
        g.raw_noise.copy_(_inv_softplus(torch.tensor(math.sqrt(s2) - math.sqrt(_MIN_NOISE)).clamp_min(1e-12)))
        self.set_guide_to_posterior()
        self.fitted_ = True
        return self

    @torch.no_grad()
    def set_guide_to_posterior(self) -> None:
        """Set q(z|x) to the exact posterior (full) or its best mean-field approximation."""
        w, mu, s2 = self.weight.double(), self.mean.double(), self.noise_std.double() ** 2
        m = w.T @ w + s2 * torch.eye(self.latent_dim, dtype=w.dtype)  # (L, L)
        m_inv = torch.linalg.inv(m)
        a = m_inv @ w.T  # (L, D)
        rec = self.recognition
        dtype = rec.weight.dtype
        rec.weight.copy_(a.to(dtype))
        rec.bias.copy_((-(a @ mu)).to(dtype))
        if rec.guide == "full":
            rec.set_scale(torch.linalg.cholesky(s2 * m_inv).to(dtype))
        else:
            rec.set_scale((s2 / m.diagonal()).sqrt().to(dtype))

    # -- the Pyro program
    def _plate(self, n: int, num_data: int | None, device):
        if num_data is None or num_data == n:
            return pyro.plate("data", n)
        return pyro.plate("data", num_data, subsample=torch.arange(n, device=device))

    def model(self, x: torch.Tensor, num_data: int | None = None) -> None:
        """z ~ N(0, I); x ~ N(W z + mu, s^2 I), over a batch x (N, *data_shape)."""
        xf = self._flat(x)
        pyro.module("ppca", self.generative)
        n = xf.shape[0]
        prior = dist.Normal(xf.new_zeros(()), xf.new_ones(())).expand((n, self.latent_dim))
        with self._plate(n, num_data, x.device):
            z = pyro.sample("z", prior.to_event(1))
            loc = z @ self.weight.T + self.mean  # (N, D)
            pyro.sample("x", dist.Normal(loc, self.noise_std).to_event(1), obs=xf)

    def guide(self, x: torch.Tensor, num_data: int | None = None) -> None:
        """q(z|x) = N(A x + b, C), the same signature and site names as :meth:`model`."""
        xf = self._flat(x)
        pyro.module("ppca_guide", self.recognition)
        with self._plate(xf.shape[0], num_data, x.device):
            pyro.sample("z", self.recognition.distribution(xf, module=dist))

    # -- exact quantities
    def marginal(self) -> torch.distributions.LowRankMultivariateNormal:
        """p(x) = N(mu, W W^T + s^2 I) over flattened x (D,)."""
        d = self.dim
        return torch.distributions.LowRankMultivariateNormal(
            self.mean, self.weight, (self.noise_std ** 2).expand(d))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) per example: (N, *data_shape) -> (N,), computed in float64 (returned
        in x's dtype): on features whose scales differ by 1e4 (sklearn's wine) float32's
        low-rank algebra was off by up to 3 nats per example."""
        d = self.dim
        marginal = torch.distributions.LowRankMultivariateNormal(
            self.mean.double(), self.weight.double(), (self.noise_std.double() ** 2).expand(d))
        return marginal.log_prob(self._flat(x).double()).to(x.dtype)

    def posterior(self, x: torch.Tensor) -> torch.distributions.MultivariateNormal:
        """Exact p(z|x) = N(M^{-1} W^T (x - mu), s^2 M^{-1}), batch (N,), event (L,)."""
        xf = self._flat(x)
        w, s2 = self.weight, self.noise_std ** 2
        m = w.T @ w + s2 * torch.eye(self.latent_dim, dtype=w.dtype, device=w.device)  # (L, L)
        m_inv = torch.linalg.inv(m)
        loc = (xf - self.mean) @ w @ m_inv  # (N, D) -> (N, L); M is symmetric
        cov = s2 * m_inv
        return torch.distributions.MultivariateNormal(loc, covariance_matrix=cov.expand(xf.shape[0], -1, -1))

    def kl_to_posterior(self, x: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) || p(z|x)) per example, in closed form: (N,)."""
        q = self.encoder_distribution(x)
        if not isinstance(q, torch.distributions.MultivariateNormal):
            q = torch.distributions.MultivariateNormal(q.mean, scale_tril=torch.diag_embed(q.stddev))
        return torch.distributions.kl_divergence(q, self.posterior(x))

    # -- the latent-variable protocol
    def encoder_distribution(self, x: torch.Tensor):
        """The guide q(z|x): batch (N,), event (L,)."""
        return self.recognition.distribution(self._flat(x))

    def prior(self, x: torch.Tensor):
        """p(z) with batch (N,), of the same family as the guide (for analytic KL)."""
        n, L = x.shape[0], self.latent_dim
        zeros = self.mean.new_zeros((n, L))
        if self.recognition.guide == "full":
            eye = torch.eye(L, dtype=zeros.dtype, device=zeros.device)
            return torch.distributions.MultivariateNormal(zeros, scale_tril=eye.expand(n, L, L))
        return torch.distributions.Independent(torch.distributions.Normal(zeros, torch.ones_like(zeros)), 1)

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, I): (..., L) -> (...)."""
        return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * math.log(2 * math.pi))

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log N(x; W z + mu, s^2 I): x (N, *data_shape), z (S, N, L) -> (S, N)."""
        xf = self._flat(x)
        s2 = self.noise_std ** 2
        resid = xf - (z @ self.weight.T + self.mean)  # (S, N, D)
        return -0.5 * (resid.pow(2).sum(-1) / s2 + self.dim * torch.log(2 * math.pi * s2))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z] = W z + mu: (..., L) -> (..., *data_shape)."""
        out = z @ self.weight.T + self.mean
        return out.reshape(*z.shape[:-1], *self.data_shape)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Exact posterior mean E[z|x]: (N, *data_shape) -> (N, L)."""
        return self.posterior(x).mean

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """W E[z|x] + mu: the projection of x onto the principal subspace, (N, *data_shape)."""
        return self.decode(self.encode(x))

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = False) -> torch.Tensor:
        """n draws from p(x), or with ``mean=True`` the means W z + mu of z ~ p(z): (n, *data_shape)."""
        if mean:
            return self.decode(torch.randn(n, self.latent_dim, dtype=self.mean.dtype, device=self.mean.device))
        return self.marginal().sample((n,)).reshape(n, *self.data_shape)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def check_fitted(self) -> None:
        if not self.fitted_:
            raise NotFittedError("this PPCA is not fitted yet: call fit(x) or train it with fit_svi.")
