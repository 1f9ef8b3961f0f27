"""The generative adversarial network as an implicit model.

Goodfellow et al., "Generative adversarial nets" (2014). A GAN defines a distribution only
through its sampler ``x = G(z)``, ``z ~ N(0, I)``: it has no density, no likelihood and no
bound, so the evaluation layer gives it every sample-based metric and none of the others.
It still exposes the latent-variable protocol: ``latent_dim``, ``prior_log_prob(z)``,
``decode(z) = G(z)``, ``sample(n)``, and ``encode(x)`` by inversion -- gradient descent on
``||G(z) - x||^2`` from several random starts (Creswell and Bharath, "Inverting the generator
of a generative adversarial network", 2018; Lipton and Tripathi, "Precise recovery of latent
vectors from generative adversarial networks", 2017).

Training lives in :mod:`probgen.inference.adversarial`; this object holds the fitted networks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from probgen.errors import DataError

__all__ = ["GAN", "InversionResult"]


@dataclass
class InversionResult:
    """What :meth:`GAN.invert` returns.

    Attributes
    ----------
    z : Tensor (N, latent_dim)
        The best code found for each example (over the restarts).
    error : Tensor (N,)
        Mean squared error per data dimension ``||G(z) - x||^2 / D`` reached at ``z``.
    restart_errors : Tensor (restarts, N)
        The error each restart reached.
    reconstruction : Tensor (N, *data_shape)
        ``G(z)``.
    """

    z: torch.Tensor
    error: torch.Tensor
    restart_errors: torch.Tensor
    reconstruction: torch.Tensor


class GAN(nn.Module):
    """A generator (and the discriminator it was trained against) behind the model protocol.

    Parameters
    ----------
    generator : nn.Module
        z (B, latent_dim) -> x (B, *data_shape).
    discriminator : nn.Module, optional
        Kept for checkpoints and further training; sampling does not use it.
    latent_dim : int
    data_shape : tuple of int
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module | None = None, *,
                 latent_dim: int, data_shape):
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = int(latent_dim)
        self.data_shape = tuple(int(s) for s in data_shape)
        self.last_inversion: InversionResult | None = None

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    # -- the protocol
    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, I) summed over the last dimension: (..., latent_dim) -> (...)."""
        self._check_z(z)
        return -0.5 * (z.pow(2).sum(-1) + self.latent_dim * math.log(2 * math.pi))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """G(z): (..., latent_dim) -> (..., *data_shape), with the generator in eval mode."""
        self._check_z(z)
        lead = z.shape[:-1]
        was = self.generator.training
        self.generator.eval()
        try:
            x = self.generator(z.reshape(-1, self.latent_dim))  # (..., L) -> (M, L)
        finally:
            self.generator.train(was)
        return x.reshape(*lead, *self.data_shape)  # (M, *shape) -> (..., *shape)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(z)

    @torch.no_grad()
    def sample(self, n: int, *, batch_size: int = 4096) -> torch.Tensor:
        """``n`` draws of G(z), z ~ N(0, I): (n, *data_shape)."""
        if int(n) < 1:
            raise DataError(f"n must be a positive number of samples; got {n}.")
        out = [self.decode(torch.randn(min(batch_size, n - i), self.latent_dim, device=self.device))
               for i in range(0, int(n), batch_size)]
        return torch.cat(out)

    def encode(self, x: torch.Tensor, **options) -> torch.Tensor:
        """Codes of ``x`` (N, *data_shape) -> (N, latent_dim) by inversion (see :meth:`invert`).

        The reconstruction error reached is kept in ``self.last_inversion``.
        """
        self.last_inversion = self.invert(x, **options)
        return self.last_inversion.z

    def invert(self, x: torch.Tensor, *, restarts: int = 4, steps: int = 300, lr: float = 0.05,
               seed: int | None = 0) -> InversionResult:
        """Find z with G(z) close to x: Adam on the per-example ``||G(z) - x||^2`` from
        ``restarts`` random starts z0 ~ N(0, I), keeping the best per example.

        All restarts of all examples are optimised at once, as one batch of N * restarts
        codes; the generator's weights are not changed.
        """
        x = x.to(self.device)
        if tuple(x.shape[1:]) != self.data_shape:
            raise DataError(
                f"x must have shape (N, {', '.join(map(str, self.data_shape))}) to be inverted; "
                f"got {tuple(x.shape)}."
            )
        if restarts < 1 or steps < 0:
            raise DataError(f"restarts must be >= 1 and steps >= 0; got restarts={restarts}, steps={steps}.")
        n = x.shape[0]
        g = None if seed is None else torch.Generator(device="cpu").manual_seed(seed)
        z = torch.randn(restarts * n, self.latent_dim, generator=g).to(self.device).requires_grad_(True)
        target = x.unsqueeze(0).expand(restarts, *x.shape).reshape(restarts * n, -1)  # (R*N, D)
        opt = torch.optim.Adam([z], lr=lr)
        was = [p.requires_grad for p in self.generator.parameters()]
        for p in self.generator.parameters():
            p.requires_grad_(False)
        try:
            for _ in range(steps):
                err = (self.decode(z).reshape(restarts * n, -1) - target).pow(2).mean(1)  # (R*N,)
                opt.zero_grad(set_to_none=True)
                err.sum().backward()
                opt.step()
            with torch.no_grad():
                err = (self.decode(z).reshape(restarts * n, -1) - target).pow(2).mean(1)
        finally:
            for p, w in zip(self.generator.parameters(), was):
                p.requires_grad_(w)
        errs = err.detach().reshape(restarts, n)  # (R*N,) -> (R, N)
        best = errs.argmin(0)  # (N,)
        zb = z.detach().reshape(restarts, n, self.latent_dim)[best, torch.arange(n, device=z.device)]
        with torch.no_grad():
            rec = self.decode(zb)
        return InversionResult(zb, errs[best, torch.arange(n, device=errs.device)], errs, rec)

    def _check_z(self, z: torch.Tensor) -> None:
        if z.shape[-1] != self.latent_dim:
            raise DataError(
                f"z must have latent_dim={self.latent_dim} values in its last dimension; got "
                f"shape {tuple(z.shape)}."
            )
